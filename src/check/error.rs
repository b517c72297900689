//! The checker's diagnostics.

use miette::{Diagnostic, SourceSpan};
use thiserror::Error;

/// A checker diagnostic.
#[derive(Debug, Clone, Error, Diagnostic)]
pub enum CheckError {
    /// `permit if team == "x"` with no `team` defined
    #[error("unknown name `{name}`")]
    #[diagnostic(code(writ::check::unknown_name))]
    UnknownName {
        /// The name.
        name: String,
        /// Where it is used.
        #[label("not a constant, dimension, level or data key")]
        span: SourceSpan,
        /// A suggestion.
        #[help]
        help: Option<String>,
    },
    /// `subject.kidn`
    #[error("unknown attribute `{path}`")]
    #[diagnostic(code(writ::check::unknown_attribute))]
    UnknownAttribute {
        /// The path as written.
        path: String,
        /// Where it is used.
        #[label("no such field")]
        span: SourceSpan,
        /// A suggestion.
        #[help]
        help: Option<String>,
    },
    /// `subject.repositry` in a file that declares its attributes
    #[error("attribute `{path}` is not declared")]
    #[diagnostic(code(writ::check::undeclared_attribute))]
    UndeclaredAttribute {
        /// The path as far as it is undeclared.
        path: String,
        /// The field that is not declared.
        #[label("this file declares its attributes, and not this one")]
        span: SourceSpan,
        /// A suggestion.
        #[help]
        help: Option<String>,
    },
    /// `attribute subject.kind: string;`, `attribute context.x: text;`
    #[error("{message}")]
    #[diagnostic(code(writ::check::bad_declaration))]
    BadDeclaration {
        /// What is wrong.
        message: String,
        /// Where.
        #[label("here")]
        span: SourceSpan,
        /// A suggestion.
        #[help]
        help: Option<String>,
    },
    /// `size(x)`
    #[error("unknown function `{name}`")]
    #[diagnostic(
        code(writ::check::unknown_function),
        help("the functions are len, contains, starts_with, ends_with, lower and min")
    )]
    UnknownFunction {
        /// The name.
        name: String,
        /// Where it is called.
        #[label("not a built-in function")]
        span: SourceSpan,
    },
    /// `len(a, b)`, `min(5m)`
    #[error("`{name}` takes {expected} argument(s), not {found}")]
    #[diagnostic(code(writ::check::wrong_arity))]
    WrongArity {
        /// The function.
        name: String,
        /// How many it takes: `1`, `at least 2`.
        expected: String,
        /// How many were given.
        found: usize,
        /// The call.
        #[label("called here")]
        span: SourceSpan,
    },
    /// `action == 5m`
    #[error("cannot compare {left} with {right}")]
    #[diagnostic(code(writ::check::type_mismatch))]
    TypeMismatch {
        /// Left type.
        left: &'static str,
        /// Right type.
        right: &'static str,
        /// The comparison.
        #[label("{left} {op} {right}")]
        span: SourceSpan,
        /// The operator.
        op: &'static str,
        /// A suggestion.
        #[help]
        help: Option<String>,
    },
    /// `subject.kind < "b"`
    #[error("{ty} values have no order")]
    #[diagnostic(
        code(writ::check::no_order),
        help("`<`, `<=`, `>`, `>=` work on numbers, durations, sensitivity levels and timestamps")
    )]
    NoOrder {
        /// The type.
        ty: &'static str,
        /// The comparison.
        #[label("ordering comparison on {ty} values")]
        span: SourceSpan,
    },
    /// `sensitivity == "restricted"`
    #[error("sensitivity is a level, not a string")]
    #[diagnostic(code(writ::check::level_as_string))]
    LevelAsString {
        /// The comparison.
        #[label("compares a level with a string")]
        span: SourceSpan,
        /// The comparison written with level keywords, built from what
        /// was written (`sensitivity in [internal, public]`).
        #[help]
        help: String,
    },
    /// `permit if action`
    #[error("expected a condition, found a {ty}")]
    #[diagnostic(
        code(writ::check::not_a_condition),
        help("compare it with something, for example `== \"value\"`")
    )]
    NotACondition {
        /// The type found.
        ty: &'static str,
        /// The expression.
        #[label("this is a {ty}, not true or false")]
        span: SourceSpan,
    },
    /// `permit if subject`
    #[error("`{name}` is an object, not a value")]
    #[diagnostic(
        code(writ::check::object_as_value),
        help("use one of its attributes, like `{name}.{example}`, or `{name} has {example}`")
    )]
    ObjectAsValue {
        /// The dimension.
        name: String,
        /// An example field.
        example: String,
        /// Where.
        #[label("an object")]
        span: SourceSpan,
    },
    /// `forbid if not_bool and "x"`, `x + y` on the wrong types
    #[error("{message}")]
    #[diagnostic(code(writ::check::bad_operand))]
    BadOperand {
        /// What is wrong.
        message: String,
        /// Where.
        #[label("here")]
        span: SourceSpan,
        /// A suggestion.
        #[help]
        help: Option<String>,
    },
    /// two rules with `@id("a")`
    #[error("duplicate rule id `{id}`")]
    #[diagnostic(
        code(writ::check::duplicate_id),
        help("rule ids must be unique across the policy set; `{id}` is first used at {first_at}")
    )]
    DuplicateId {
        /// The id.
        id: String,
        /// `file:line` of the first use.
        first_at: String,
        /// The second use.
        #[label("used again here")]
        span: SourceSpan,
        /// Where it was first used.
        #[label("first used here")]
        first: Option<SourceSpan>,
    },
    /// `const action = "read";`
    #[error("`{name}` is a built-in name and cannot be redefined")]
    #[diagnostic(
        code(writ::check::reserved_name),
        help("the dimensions, `action`, `sensitivity` and the sensitivity levels keep their meaning; pick another name")
    )]
    ReservedName {
        /// The name.
        name: String,
        /// Where it is defined.
        #[label("built-in name")]
        span: SourceSpan,
    },
    /// `const a = 1; const a = 2;`
    #[error("constant `{name}` is defined twice")]
    #[diagnostic(code(writ::check::duplicate_const))]
    DuplicateConst {
        /// The name.
        name: String,
        /// The second definition.
        #[label("defined again here")]
        span: SourceSpan,
    },
    /// `const a = subject.kind;`
    #[error("{what} must be a constant {expected}")]
    #[diagnostic(code(writ::check::not_constant))]
    NotConstant {
        /// What needs to be constant.
        what: &'static str,
        /// The expected kind of value.
        expected: &'static str,
        /// Where.
        #[label("not a constant {expected}")]
        span: SourceSpan,
    },
    /// `limit ttl 900`, `limit ttl subject.owner`
    #[error("{what} must be a duration, not a {ty}")]
    #[diagnostic(code(writ::check::not_a_duration))]
    NotADuration {
        /// What needs the duration: `a TTL limit`, `min`.
        what: &'static str,
        /// The type found.
        ty: &'static str,
        /// Where.
        #[label("a {ty}")]
        span: SourceSpan,
        /// A suggestion.
        #[help]
        help: Option<String>,
    },
    /// `until "tomorrow"`, `until subject.owner`
    #[error("`until` needs a timestamp, not {found}")]
    #[diagnostic(code(writ::check::not_a_time))]
    NotATime {
        /// What was found: `a number`, `the string "tomorrow"`.
        found: String,
        /// Where.
        #[label("not a timestamp")]
        span: SourceSpan,
        /// A suggestion.
        #[help]
        help: Option<String>,
    },
    /// `action == "read" and action == "write"`
    #[error("this condition can never hold")]
    #[diagnostic(code(writ::check::never_holds))]
    NeverHolds {
        /// The attribute.
        attr: String,
        /// The condition.
        #[label("`{attr}` cannot satisfy all of these tests at once")]
        span: SourceSpan,
        /// Why.
        #[help]
        help: Option<String>,
    },
    /// `@id()`, `@id("a", "b")`
    #[error("`@{name}` {message}")]
    #[diagnostic(code(writ::check::bad_annotation))]
    BadAnnotation {
        /// The annotation.
        name: String,
        /// What is wrong.
        message: String,
        /// Where.
        #[label("here")]
        span: SourceSpan,
    },
    /// `limit scope ["read:a//b"]`
    #[error("invalid scope pattern: {reason}")]
    #[diagnostic(code(writ::check::bad_scope))]
    BadScope {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
        /// Where.
        #[label("invalid pattern")]
        span: SourceSpan,
    },
    /// `grant ["read:{resource.}"]`
    #[error("invalid template `{template}`: {reason}")]
    #[diagnostic(
        code(writ::check::bad_template),
        help("holes look like `{{resource.id}}`; write `\\{{` for a literal brace")
    )]
    BadTemplate {
        /// The template.
        template: String,
        /// Why.
        reason: String,
        /// Where.
        #[label("in this template")]
        span: SourceSpan,
    },
    /// `action = "read"`, `a && b`, `a || b`, `!a`
    #[error("`{found}` is not a writ operator")]
    #[diagnostic(code(writ::check::wrong_operator), help("write `{instead}`"))]
    WrongOperator {
        /// What was written.
        found: &'static str,
        /// What to write.
        instead: &'static str,
        /// Where.
        #[label("use `{instead}`")]
        span: SourceSpan,
    },
    /// an expression nested deeper than the checker recurses
    #[error("expression nests deeper than the checker's limit of {limit} levels")]
    #[diagnostic(
        code(writ::check::nesting_too_deep),
        help("split the expression into several rules or constants")
    )]
    TooDeep {
        /// The limit.
        limit: usize,
        /// The sub-expression at the limit.
        #[label("nested too deep here")]
        span: SourceSpan,
    },
    /// `--data` with `{"max_recent_issuances": "ten"}`
    #[error("data value `{name}` is a {found}, but the constant is a {expected}")]
    #[diagnostic(code(writ::check::bad_data))]
    BadData {
        /// The key.
        name: String,
        /// The type found.
        found: &'static str,
        /// The type of the constant.
        expected: &'static str,
    },
}
