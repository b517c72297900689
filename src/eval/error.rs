//! Why an expression could not be evaluated: one variant a failure, each
//! with the span of the expression (or template) that failed. The text
//! each renders to is the `message` of the decision's `errors` and the
//! trace's `error`; it is part of the decision contract, so changing a
//! message changes the decision JSON.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::scope::ScopeError;
use crate::source::Span;

/// A value that did not fit an operation: its type's name and its value as
/// the trace shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// `string`, `number`, `list`, ...
    pub ty: &'static str,
    /// The value, as JSON.
    pub value: Value,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.ty, self.value)
    }
}

/// What went wrong evaluating an expression. Every evaluation error fails
/// closed: a permit that errs does not match, any other rule that errs
/// applies.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalError {
    /// A request or data value is `null`.
    Null {
        /// The expression that read it.
        span: Span,
    },
    /// A request attribute is absent.
    Missing {
        /// The attribute's path, or its dimension when `name` is given:
        /// `subject.owner`, `context`. The message ("`context.ticket` is
        /// missing") is written only when the error is shown: most such
        /// errors are of permits that do not match, and are dropped.
        path: &'static str,
        /// A free attribute's name below `path` (the policy's own string,
        /// shared, not copied).
        name: Option<Arc<str>>,
        /// The expression that read it.
        span: Span,
    },
    /// A quantifier's bound name read outside its quantifier (the checker
    /// prevents it).
    Unbound {
        /// The name.
        span: Span,
    },
    /// A key of the data file is absent.
    DataMissing {
        /// The key.
        key: Box<str>,
        /// The expression that read it.
        span: Span,
    },
    /// `x.field` on an object without the field.
    FieldMissing {
        /// The field.
        field: Box<str>,
        /// The field access.
        span: Span,
    },
    /// `x.field` on a value that is not an object.
    NoFields {
        /// The type of `x`.
        ty: &'static str,
        /// The field.
        field: Box<str>,
        /// The field access.
        span: Span,
    },
    /// `x["key"]` on an object without the key.
    KeyMissing {
        /// The key.
        key: String,
        /// The index expression.
        span: Span,
    },
    /// `x[0]` on a value that is not a list.
    NotIndexable {
        /// The type of `x`.
        ty: &'static str,
        /// The index expression.
        span: Span,
    },
    /// `x[n]` past the end.
    OutOfRange {
        /// The index.
        index: f64,
        /// The index expression.
        span: Span,
    },
    /// `x[i]` with an index of the wrong kind for `x`.
    BadIndex {
        /// The type of `x`.
        ty: &'static str,
        /// The index.
        index: Found,
        /// The index expression.
        span: Span,
    },
    /// An operator given an operand of the wrong type, with the operand:
    /// "`not` needs a bool, found ...".
    Operand {
        /// The operator, as written: `not`, `matches`, `in`.
        op: &'static str,
        /// What it needs: `a bool`, `a string`, `a list`.
        needs: &'static str,
        /// What it got.
        found: Found,
        /// The expression.
        span: Span,
    },
    /// A quantifier or builtin given an operand of the wrong type, by type
    /// only: "`len` needs a list or a string, found number".
    OperandType {
        /// The quantifier or builtin: `all`, `any`, `len`.
        op: &'static str,
        /// What it needs.
        needs: &'static str,
        /// The type it got.
        ty: &'static str,
        /// The expression.
        span: Span,
    },
    /// A condition that is not a bool.
    NotBool {
        /// What it was.
        found: Found,
        /// The condition.
        span: Span,
    },
    /// A builtin's argument that is not a string.
    NotString {
        /// What it was.
        found: Found,
        /// The call.
        span: Span,
    },
    /// `==`, `!=` or `in` between values of types that do not compare.
    Compare {
        /// The left side.
        left: Found,
        /// The right side.
        right: Found,
        /// The comparison.
        span: Span,
    },
    /// `<` and kin between values that have no order.
    Order {
        /// The left side.
        left: Found,
        /// The right side.
        right: Found,
        /// The comparison.
        span: Span,
    },
    /// An operator in a place the evaluator does not take it (the checker
    /// prevents it).
    Unsupported {
        /// The expression.
        span: Span,
    },
    /// A sum of durations past `u64` seconds.
    DurationOverflow {
        /// The sum.
        span: Span,
    },
    /// A duration added to something that is not an instant.
    AddDuration {
        /// The other operand.
        to: Found,
        /// The sum.
        span: Span,
    },
    /// `+` between types that do not add.
    Add {
        /// The left side's type.
        left: &'static str,
        /// The right side's type.
        right: &'static str,
        /// The sum.
        span: Span,
    },
    /// `*` between types that do not multiply.
    Multiply {
        /// The left side's type.
        left: &'static str,
        /// The right side's type.
        right: &'static str,
        /// The product.
        span: Span,
    },
    /// A template hole whose value has no text form (a list, an object).
    HoleType {
        /// The value's type.
        ty: &'static str,
        /// The template as written.
        template: Box<str>,
        /// The template.
        span: Span,
    },
    /// A template hole whose value would widen or break what the template
    /// builds (a `*` in a scope item, a blank audience).
    Widens {
        /// The hole's value.
        value: String,
        /// What the template builds: `scope item`, `audience`.
        what: &'static str,
        /// The template as written.
        template: Box<str>,
        /// The template.
        span: Span,
    },
    /// An obligation's whole value that says "any" or "nothing".
    BlankObligation {
        /// The obligation kind.
        kind: &'static str,
        /// The value.
        value: String,
        /// The template as written.
        template: Box<str>,
        /// The template.
        span: Span,
    },
    /// A filled grant or `limit scope` pattern that is not a scope item.
    ScopeItem {
        /// Why.
        error: ScopeError,
        /// The template.
        span: Span,
    },
    /// `until x` where `x` is not an instant: a string that is not RFC
    /// 3339, a number, ...
    NotTime {
        /// What it was.
        found: Found,
        /// The `until` expression.
        span: Span,
    },
    /// A value read where a duration is needed (a TTL cap, an argument of
    /// `min`) that is not one: a negative or fractional number, a string
    /// that is not a duration, a bool, ...
    NotDuration {
        /// What it was.
        found: Found,
        /// The expression that read it.
        span: Span,
    },
    /// Expressions nested deeper than the evaluator follows.
    TooDeep {
        /// The depth limit.
        limit: usize,
        /// The expression at the limit.
        span: Span,
    },
}

impl EvalError {
    /// Where the failing expression or template is written.
    pub fn span(&self) -> Span {
        match self {
            EvalError::Null { span }
            | EvalError::Missing { span, .. }
            | EvalError::Unbound { span }
            | EvalError::DataMissing { span, .. }
            | EvalError::FieldMissing { span, .. }
            | EvalError::NoFields { span, .. }
            | EvalError::KeyMissing { span, .. }
            | EvalError::NotIndexable { span, .. }
            | EvalError::OutOfRange { span, .. }
            | EvalError::BadIndex { span, .. }
            | EvalError::Operand { span, .. }
            | EvalError::OperandType { span, .. }
            | EvalError::NotBool { span, .. }
            | EvalError::NotString { span, .. }
            | EvalError::Compare { span, .. }
            | EvalError::Order { span, .. }
            | EvalError::Unsupported { span }
            | EvalError::DurationOverflow { span }
            | EvalError::AddDuration { span, .. }
            | EvalError::Add { span, .. }
            | EvalError::Multiply { span, .. }
            | EvalError::HoleType { span, .. }
            | EvalError::Widens { span, .. }
            | EvalError::BlankObligation { span, .. }
            | EvalError::ScopeItem { span, .. }
            | EvalError::NotTime { span, .. }
            | EvalError::NotDuration { span, .. }
            | EvalError::TooDeep { span, .. } => *span,
        }
    }
}

impl EvalError {
    /// The error for a missing attribute, its path the dimension and the
    /// name (`("context", Some(ticket))`) or a whole path (`("action",
    /// None)`).
    pub fn missing(path: &'static str, name: Option<Arc<str>>, span: Span) -> Box<EvalError> {
        Box::new(EvalError::Missing { path, name, span })
    }
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalError::Null { .. } => f.write_str("value is null"),
            EvalError::Missing { path, name, .. } => match name {
                Some(name) => write!(f, "`{path}.{name}` is missing"),
                None => write!(f, "`{path}` is missing"),
            },
            EvalError::Unbound { .. } => f.write_str("unbound name"),
            EvalError::DataMissing { key, .. } => write!(f, "data `{key}` is missing"),
            EvalError::FieldMissing { field, .. } => write!(f, "field `{field}` is missing"),
            EvalError::NoFields { ty, field, .. } => write!(f, "{ty} has no field `{field}`"),
            EvalError::KeyMissing { key, .. } => write!(f, "key `{key}` is missing"),
            EvalError::NotIndexable { ty, .. } => write!(f, "a {ty} cannot be indexed"),
            EvalError::OutOfRange { index, .. } => write!(f, "index {index} is out of range"),
            EvalError::BadIndex { ty, index, .. } => write!(f, "cannot index {ty} with {index}"),
            EvalError::Operand {
                op, needs, found, ..
            } => write!(f, "`{op}` needs {needs}, found {found}"),
            EvalError::OperandType { op, needs, ty, .. } => {
                write!(f, "`{op}` needs {needs}, found {ty}")
            }
            EvalError::NotBool { found, .. } => write!(f, "expected true or false, found {found}"),
            EvalError::NotString { found, .. } => write!(f, "expected a string, found {found}"),
            EvalError::Compare { left, right, .. } => {
                write!(f, "cannot compare {left} with {right}")
            }
            EvalError::Order { left, right, .. } => write!(f, "cannot order {left} and {right}"),
            EvalError::Unsupported { .. } => f.write_str("operator not supported here"),
            EvalError::DurationOverflow { .. } => f.write_str("duration overflow"),
            EvalError::AddDuration { to, .. } => write!(f, "cannot add a duration to {to}"),
            EvalError::Add { left, right, .. } => write!(f, "cannot add {left} and {right}"),
            EvalError::Multiply { left, right, .. } => {
                write!(f, "cannot multiply {left} by {right}")
            }
            EvalError::HoleType { ty, template, .. } => {
                write!(f, "cannot put a {ty} into `{template}`")
            }
            EvalError::Widens {
                value,
                what,
                template,
                ..
            } => write!(
                f,
                "value {} would widen or break the {what} `{template}`",
                Value::String(value.clone())
            ),
            EvalError::BlankObligation {
                kind,
                value,
                template,
                ..
            } => write!(
                f,
                "{kind} {} from `{template}` is empty, blank or a wildcard",
                Value::String(value.clone())
            ),
            EvalError::ScopeItem { error, .. } => fmt::Display::fmt(error, f),
            EvalError::NotTime { found, .. } => {
                write!(f, "`until` needs an RFC 3339 timestamp, found {found}")
            }
            EvalError::NotDuration { found, .. } => write!(
                f,
                "expected a duration (whole seconds, or text like \"15m\"), found {found}"
            ),
            EvalError::TooDeep { limit, .. } => write!(
                f,
                "the expression is nested more than {limit} levels deep; \
                 the evaluator stops there (fails closed)"
            ),
        }
    }
}

impl std::error::Error for EvalError {}
