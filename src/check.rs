//! The checker: resolves names, infers types, folds constants and reports
//! every mistake it can find, then lowers the AST to the [`ir`] the compiler
//! and the evaluator use.
//!
//! [`ir`]: crate::ir

use std::borrow::Cow;
use std::collections::HashMap;

use indexmap::IndexMap;
use miette::{Diagnostic, SourceSpan};
use serde_json::Value;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::ast::{self, BinOp, ExprKind as A, Mistake};
use crate::decision::Name;
use crate::diagnostics::Diagnostics;
use crate::ir::{
    Attr, Builtin, Dim, Expr, ExprKind as I, Glob, Lit, Obligation, PolicySet, Rule, RuleKind,
    Template, TemplatePart, Ty,
};
use crate::request::{parse_time, Sensitivity};
use crate::scope::ScopeItem;
use crate::source::{Sources, Span};

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
    /// `size(x)`
    #[error("unknown function `{name}`")]
    #[diagnostic(
        code(writ::check::unknown_function),
        help("the functions are len, contains, starts_with, ends_with and lower")
    )]
    UnknownFunction {
        /// The name.
        name: String,
        /// Where it is called.
        #[label("not a built-in function")]
        span: SourceSpan,
    },
    /// `len(a, b)`
    #[error("`{name}` takes {expected} argument(s), not {found}")]
    #[diagnostic(code(writ::check::wrong_arity))]
    WrongArity {
        /// The function.
        name: String,
        /// How many it takes.
        expected: usize,
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
    #[diagnostic(
        code(writ::check::level_as_string),
        help("write the level as a keyword: `sensitivity == {level}`")
    )]
    LevelAsString {
        /// The level written as a string.
        level: String,
        /// The comparison.
        #[label("compares a level with a string")]
        span: SourceSpan,
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

use crate::suggest::distance;

/// The closest of `candidates` to `name`, if it is close enough to be a typo.
pub fn closest<'c>(name: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    candidates
        .into_iter()
        .map(|c| (distance(name, c), c))
        .filter(|(d, c)| *d <= 2 && *d < c.len().max(name.len()))
        .min()
        .map(|(_, c)| c)
}

struct Const {
    value: Lit,
    used_data: bool,
}

struct Checker<'s> {
    sources: &'s Sources,
    diagnostics: Diagnostics,
    consts: IndexMap<String, Const>,
    data: IndexMap<String, Value>,
    locals: Vec<(String, Ty)>,
    current_file: crate::source::FileId,
    /// `permit`, `forbid`, ...: one shared string per rule kind.
    kind_names: Vec<Name>,
}

/// Checks parsed files (in order) against optional data, and lowers them.
/// The files are consumed: each rule's syntax tree is freed as soon as the
/// rule is lowered, so the two never take memory for a whole set at once.
pub fn check(
    sources: &Sources,
    files: Vec<ast::File>,
    data: Option<&serde_json::Map<String, Value>>,
) -> (PolicySet, Diagnostics) {
    let mut checker = Checker {
        sources,
        diagnostics: Diagnostics::default(),
        consts: IndexMap::new(),
        data: data
            .map(|d| d.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        locals: Vec::new(),
        current_file: crate::source::FileId(0),
        kind_names: Vec::new(),
    };
    for file in &files {
        checker.current_file = file.file;
        for mistake in &file.mistakes {
            let (found, instead, span) = match *mistake {
                Mistake::Assign(span) => ("=", "==", span),
                Mistake::AmpAmp(span) => ("&&", "and", span),
                Mistake::PipePipe(span) => ("||", "or", span),
                Mistake::Bang(span) => ("!", "not", span),
            };
            checker.error(
                span,
                CheckError::WrongOperator {
                    found,
                    instead,
                    span: span.source_span(),
                },
            );
        }
        for item in &file.items {
            if let ast::Item::Const(decl) = item {
                checker.constant(decl);
            }
        }
    }
    // Data keys that override constants are consumed; the rest stay data.
    let overridden: Vec<String> = checker
        .consts
        .iter()
        .filter(|(_, c)| c.used_data)
        .map(|(name, _)| name.clone())
        .collect();
    for name in overridden {
        checker.data.shift_remove(&name);
    }
    let rule_count = files
        .iter()
        .flat_map(|f| &f.items)
        .filter(|i| matches!(i, ast::Item::Rule(_)))
        .count();
    let mut rules = Vec::with_capacity(rule_count);
    let mut ids: HashMap<Name, Span> = HashMap::with_capacity(rule_count);
    for file in files {
        checker.current_file = file.file;
        for item in file.items {
            if let ast::Item::Rule(rule) = item {
                if let Some(rule) = checker.rule(&rule) {
                    if let Some(first) = ids.get(rule.id.as_str()) {
                        let first_span =
                            (first.file == rule.span.file).then(|| first.source_span());
                        checker.error(
                            rule.span,
                            CheckError::DuplicateId {
                                id: rule.id.to_string(),
                                first_at: checker.sources.location(*first),
                                span: rule.span.source_span(),
                                first: first_span,
                            },
                        );
                    } else {
                        ids.insert(rule.id.clone(), rule.span);
                    }
                    rules.push(rule);
                }
            }
        }
    }
    let data = checker.data;
    (PolicySet { rules, data }, checker.diagnostics)
}

impl Checker<'_> {
    fn error(&mut self, span: Span, error: CheckError) {
        self.diagnostics.push(error, self.sources.get(span.file));
    }

    fn constant(&mut self, decl: &ast::ConstDecl) {
        let name = decl.name.name.to_string();
        if is_reserved(&name) {
            self.error(
                decl.name.span,
                CheckError::ReservedName {
                    name,
                    span: decl.name.span.source_span(),
                },
            );
            return;
        }
        if self.consts.contains_key(&name) {
            self.error(
                decl.name.span,
                CheckError::DuplicateConst {
                    name,
                    span: decl.name.span.source_span(),
                },
            );
            return;
        }
        let Some(expr) = self.expr(&decl.value) else {
            return;
        };
        let I::Lit(value) = expr.kind else {
            self.error(
                decl.value.span,
                CheckError::NotConstant {
                    what: "a constant's value",
                    expected: "literal",
                    span: decl.value.span.source_span(),
                },
            );
            return;
        };
        let (value, used_data) = match self.data.get(&name) {
            Some(json) => match lit_from_json(json, &value) {
                Some(lit) => (lit, true),
                None => {
                    let found = json_type_name(json);
                    self.diagnostics.push_plain(CheckError::BadData {
                        name: name.clone(),
                        found,
                        expected: value.ty().name(),
                    });
                    (value, true)
                }
            },
            None => (value, false),
        };
        self.consts.insert(name, Const { value, used_data });
    }

    fn rule(&mut self, rule: &ast::Rule) -> Option<Rule> {
        let mut ok = true;
        let mut id: Option<Name> = None;
        let mut annotations: IndexMap<String, Vec<String>> = IndexMap::new();
        for annotation in &rule.annotations {
            let name = &*annotation.name.name;
            let args = &annotation.args;
            if name == "id" {
                let valid = args.len() == 1
                    && !args[0].value.is_empty()
                    && args[0]
                        .value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c));
                if !valid || id.is_some() {
                    let message = if id.is_some() {
                        "is given twice".to_owned()
                    } else {
                        "takes one id made of letters, digits and `-_.:/`".to_owned()
                    };
                    self.error(
                        annotation.span,
                        CheckError::BadAnnotation {
                            name: name.to_owned(),
                            message,
                            span: annotation.span.source_span(),
                        },
                    );
                    ok = false;
                } else {
                    id = Some(Name::from(args[0].value.as_str()));
                }
            } else {
                annotations
                    .entry(name.to_owned())
                    .or_default()
                    .extend(args.iter().map(|a| a.value.clone()));
            }
        }

        let mut conjuncts = Vec::new();
        if let Some(condition) = &rule.condition {
            let mut parts = Vec::with_capacity(8);
            flatten_and(condition, &mut parts);
            conjuncts.reserve_exact(parts.len());
            for part in parts {
                match self.condition(part) {
                    Some(expr) => conjuncts.push(expr),
                    None => ok = false,
                }
            }
        }
        let conjunct_text: Vec<Name> = conjuncts
            .iter()
            .map(|c: &Expr| Name::from(&*condition_text(self.sources.slice(c.span))))
            .collect();
        if ok {
            self.contradictions(&conjuncts, rule);
        }

        let kind = match &rule.kind {
            ast::RuleKind::Permit { grant, obligations } => {
                let mut templates = Vec::new();
                let mut ttl = None;
                if let Some(grant) = grant {
                    match self.string_list(&grant.items, "a grant") {
                        Some(items) => {
                            for (text, span) in items {
                                match self.template(&text, span, true) {
                                    Some(t) => templates.push(t),
                                    None => ok = false,
                                }
                            }
                        }
                        None => ok = false,
                    }
                    if let Some(expr) = &grant.ttl {
                        ttl = self.duration(expr, "a grant's TTL");
                        ok &= ttl.is_some();
                    }
                }
                let mut lowered = Vec::new();
                for obligation in obligations {
                    match self.obligation(obligation) {
                        Some(o) => lowered.push(o),
                        None => ok = false,
                    }
                }
                RuleKind::Permit {
                    grant: templates,
                    ttl,
                    obligations: lowered,
                }
            }
            ast::RuleKind::Forbid => RuleKind::Forbid,
            ast::RuleKind::LimitTtl(expr) => match self.duration(expr, "a TTL limit") {
                Some(seconds) => RuleKind::LimitTtl(seconds),
                None => return None,
            },
            ast::RuleKind::LimitScope(expr) => {
                let items = self.string_list(expr, "a scope limit")?;
                let mut patterns = Vec::new();
                for (text, span) in items {
                    match self.template(&text, span, true) {
                        Some(t) => patterns.push(t),
                        None => ok = false,
                    }
                }
                RuleKind::LimitScope(patterns)
            }
            ast::RuleKind::Require(obligation) => RuleKind::Require(self.obligation(obligation)?),
        };
        let because = match &rule.because {
            Some(text) => {
                let t = self.template(&text.value, text.span, false);
                ok &= t.is_some();
                t
            }
            None => None,
        };
        let text = self.sources.slice(rule.span);
        let (id, generated_id) = match id {
            Some(id) => (id, false),
            None => (generated_id(rule.kind.keyword(), text).into(), true),
        };
        let location = self.sources.location(rule.keyword_span).into();
        let kind_name = self.kind_name(kind.name());
        ok.then(|| Rule {
            kind_name,
            id,
            generated_id,
            kind,
            conjuncts,
            conjunct_text,
            because,
            doc: rule.doc.clone(),
            annotations,
            location,
            span: rule.span,
        })
    }

    /// The shared string for a rule kind's name.
    fn kind_name(&mut self, name: &'static str) -> Name {
        if let Some(shared) = self.kind_names.iter().find(|n| n.as_str() == name) {
            return shared.clone();
        }
        let shared = Name::from(name);
        self.kind_names.push(shared.clone());
        shared
    }

    fn obligation(&mut self, obligation: &ast::Obligation) -> Option<Obligation> {
        Some(match obligation {
            ast::Obligation::Approval(_) => Obligation::Approval,
            ast::Obligation::Log(_) => Obligation::Log,
            ast::Obligation::RevokeOn { event, .. } => Obligation::RevokeOn((*event.name).into()),
            ast::Obligation::Audience { value, .. } => {
                if let A::Str(text) = &value.kind {
                    let template = self.template(text, value.span, false)?;
                    if let Some(reason) = constant_audience_fault(&template) {
                        self.error(
                            value.span,
                            CheckError::BadTemplate {
                                template: text.clone(),
                                reason,
                                span: value.span.source_span(),
                            },
                        );
                        return None;
                    }
                    Obligation::Audience(template)
                } else {
                    let expr = self.expr(value)?;
                    if !matches!(expr.ty, Ty::Str | Ty::Any) {
                        self.error(
                            value.span,
                            CheckError::BadOperand {
                                message: format!(
                                    "an audience must be a string, not a {}",
                                    expr.ty.name()
                                ),
                                span: value.span.source_span(),
                                help: None,
                            },
                        );
                        return None;
                    }
                    Obligation::Audience(Template {
                        source: self.sources.slice(value.span).into(),
                        parts: vec![TemplatePart::Hole(expr)],
                        span: value.span,
                    })
                }
            }
        })
    }

    /// A list of string literals (or a constant holding one), with spans.
    fn string_list<'a>(
        &mut self,
        expr: &'a ast::Expr,
        what: &'static str,
    ) -> Option<Vec<(Cow<'a, str>, Span)>> {
        let not_constant = |checker: &mut Self| {
            checker.error(
                expr.span,
                CheckError::NotConstant {
                    what,
                    expected: "list of strings",
                    span: expr.span.source_span(),
                },
            );
            None
        };
        match &expr.kind {
            A::List(items) => {
                let mut out = Vec::new();
                for item in items {
                    match &item.kind {
                        A::Str(text) => out.push((Cow::Borrowed(text.as_str()), item.span)),
                        _ => return not_constant(self),
                    }
                }
                Some(out)
            }
            A::Name(name) => match self.consts.get(&**name).map(|c| &c.value) {
                Some(Lit::List(items)) => {
                    let mut out = Vec::new();
                    for item in items {
                        match item {
                            Lit::Str(text) => out.push((Cow::Owned(text.to_string()), expr.span)),
                            _ => return not_constant(self),
                        }
                    }
                    Some(out)
                }
                _ => not_constant(self),
            },
            _ => not_constant(self),
        }
    }

    fn duration(&mut self, expr: &ast::Expr, what: &'static str) -> Option<u64> {
        let lowered = self.expr(expr)?;
        match lowered.kind {
            I::Lit(Lit::Dur(seconds)) => Some(seconds),
            _ => {
                self.error(
                    expr.span,
                    CheckError::NotConstant {
                        what,
                        expected: "duration",
                        span: expr.span.source_span(),
                    },
                );
                None
            }
        }
    }

    /// Parses `{hole}`s in a template string written at `span`.
    fn template(&mut self, text: &str, span: Span, scope_item: bool) -> Option<Template> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        let bad = |checker: &mut Self, reason: &str| {
            checker.error(
                span,
                CheckError::BadTemplate {
                    template: text.to_owned(),
                    reason: reason.to_owned(),
                    span: span.source_span(),
                },
            );
            None
        };
        while !rest.is_empty() {
            if let Some(tail) = rest.strip_prefix("\\{") {
                literal.push('{');
                rest = tail;
            } else if let Some(tail) = rest.strip_prefix("\\}") {
                literal.push('}');
                rest = tail;
            } else if let Some(tail) = rest.strip_prefix('{') {
                let Some(close) = tail.find('}') else {
                    return bad(self, "`{` is never closed");
                };
                let hole = &tail[..close];
                // Offsets are approximate when the string holds escapes.
                let offset = span.start as usize + 1 + (text.len() - rest.len()) + 1;
                // Most holes are plain paths (`resource.id`): build those
                // directly; anything else goes through the parser.
                let parsed = match simple_path(hole, span.file, offset) {
                    Some(path) => path,
                    None => {
                        if let Some(error) = crate::parser::hole_limits(span.file, hole, offset) {
                            self.diagnostics.push(error, self.sources.get(span.file));
                            return None;
                        }
                        let Some(parsed) = crate::parser::parse_expr(span.file, hole, offset)
                        else {
                            return bad(self, &format!("`{hole}` is not an expression"));
                        };
                        parsed
                    }
                };
                let expr = self.expr(&parsed)?;
                if matches!(expr.ty, Ty::Bool | Ty::List | Ty::StrList) {
                    return bad(
                        self,
                        &format!("`{hole}` is a {}, not a string", expr.ty.name()),
                    );
                }
                if !literal.is_empty() {
                    parts.push(TemplatePart::Text(std::mem::take(&mut literal).into()));
                }
                parts.push(TemplatePart::Hole(expr));
                rest = &tail[close + 1..];
            } else if rest.starts_with('}') {
                return bad(self, "`}` without `{`");
            } else {
                // Plain text up to the next brace or backslash, at once.
                let first = rest.chars().next().map_or(1, char::len_utf8);
                let end = rest[first..]
                    .find(['{', '}', '\\'])
                    .map_or(rest.len(), |at| at + first);
                literal.push_str(&rest[..end]);
                rest = &rest[end..];
            }
        }
        if !literal.is_empty() {
            parts.push(TemplatePart::Text(literal.into()));
        }
        if scope_item && parts.iter().all(|p| matches!(p, TemplatePart::Text(_))) {
            let whole: String = parts
                .iter()
                .map(|p| match p {
                    TemplatePart::Text(t) => t.to_string(),
                    TemplatePart::Hole(_) => String::new(),
                })
                .collect();
            if let Err(error) = ScopeItem::parse(&whole) {
                self.error(
                    span,
                    CheckError::BadScope {
                        pattern: whole,
                        reason: error.to_string(),
                        span: span.source_span(),
                    },
                );
                return None;
            }
        }
        Some(Template {
            source: text.into(),
            parts,
            span,
        })
    }

    /// An expression that must be a condition.
    fn condition(&mut self, expr: &ast::Expr) -> Option<Expr> {
        let lowered = self.expr(expr)?;
        if matches!(lowered.ty, Ty::Bool | Ty::Any) {
            Some(lowered)
        } else {
            self.error(
                expr.span,
                CheckError::NotACondition {
                    ty: lowered.ty.name(),
                    span: expr.span.source_span(),
                },
            );
            None
        }
    }

    fn expr(&mut self, expr: &ast::Expr) -> Option<Expr> {
        let span = expr.span;
        let make = |kind, ty| Some(Expr { kind, ty, span });
        match &expr.kind {
            A::Str(text) => {
                let value: Box<str> = if text.contains('\\') {
                    text.replace("\\{", "{").replace("\\}", "}").into()
                } else {
                    text.as_str().into()
                };
                make(I::Lit(Lit::Str(value)), Ty::Str)
            }
            A::Num(n) => make(I::Lit(Lit::Num(*n)), Ty::Num),
            A::Dur(d) => make(I::Lit(Lit::Dur(*d)), Ty::Dur),
            A::Bool(b) => make(I::Lit(Lit::Bool(*b)), Ty::Bool),
            A::List(items) => {
                let mut lowered = Vec::new();
                for item in items {
                    lowered.push(self.expr(item)?);
                }
                // A fresh list, not one collected in place: that would keep
                // the expressions' larger buffer alive in the constant.
                let mut lits = Vec::with_capacity(lowered.len());
                for e in lowered {
                    match e.kind {
                        I::Lit(l) => lits.push(l),
                        _ => break,
                    }
                }
                let all_lit = (lits.len() == items.len()).then_some(lits);
                match all_lit {
                    Some(lits) => {
                        let lit = Lit::List(lits);
                        let ty = lit.ty();
                        make(I::Lit(lit), ty)
                    }
                    None => {
                        self.error(
                            span,
                            CheckError::NotConstant {
                                what: "a list literal",
                                expected: "list",
                                span: span.source_span(),
                            },
                        );
                        None
                    }
                }
            }
            A::Name(name) => self.name(name, span),
            A::Field(..) => self.path(expr),
            A::Index(base, index) => {
                // `resource["ownerID"]`: a dimension's attribute by exact
                // name, with no "did you mean" check.
                if let (A::Name(root), A::Str(field)) = (&base.kind, &index.kind) {
                    let shadowed = self.locals.iter().any(|(n, _)| n == root);
                    if let (Some(dim), false) = (Dim::from_name(root), shadowed) {
                        let attr = Attr::of(dim, field);
                        let ty = attr.ty();
                        return make(I::Attr(attr), ty);
                    }
                }
                let base = self.expr(base)?;
                let index = self.expr(index)?;
                if !matches!(base.ty, Ty::Any | Ty::List | Ty::StrList) {
                    self.error(
                        span,
                        CheckError::BadOperand {
                            message: format!("a {} cannot be indexed", base.ty.name()),
                            span: span.source_span(),
                            help: None,
                        },
                    );
                    return None;
                }
                let ty = if base.ty == Ty::StrList {
                    Ty::Str
                } else {
                    Ty::Any
                };
                make(I::Index(Box::new(base), Box::new(index)), ty)
            }
            A::Call(call) => {
                let (name, args) = &**call;
                let Some((_, builtin, arity)) = Builtin::ALL
                    .iter()
                    .find(|(n, _, _)| **n == *name.name)
                    .copied()
                else {
                    self.error(
                        name.span,
                        CheckError::UnknownFunction {
                            name: name.name.to_string(),
                            span: name.span.source_span(),
                        },
                    );
                    return None;
                };
                if args.len() != arity {
                    self.error(
                        span,
                        CheckError::WrongArity {
                            name: name.name.to_string(),
                            expected: arity,
                            found: args.len(),
                            span: span.source_span(),
                        },
                    );
                    return None;
                }
                let mut lowered = Vec::new();
                for arg in args {
                    lowered.push(self.expr(arg)?);
                }
                let stringy = |t: Ty| matches!(t, Ty::Str | Ty::Any);
                let listy = |t: Ty| matches!(t, Ty::Str | Ty::Any | Ty::List | Ty::StrList);
                let expected: &[ArgCheck] = match builtin {
                    Builtin::Len | Builtin::Contains => &[(listy, "a list or a string")],
                    Builtin::StartsWith | Builtin::EndsWith => {
                        &[(stringy, "a string"), (stringy, "a string")]
                    }
                    Builtin::Lower => &[(stringy, "a string")],
                };
                for ((accepts, what), arg) in expected.iter().zip(&lowered) {
                    if !accepts(arg.ty) {
                        self.error(
                            arg.span,
                            CheckError::BadOperand {
                                message: format!(
                                    "`{}` takes {what} here, not a {}",
                                    name.name,
                                    arg.ty.name()
                                ),
                                span: arg.span.source_span(),
                                help: None,
                            },
                        );
                        return None;
                    }
                }
                let ty = match builtin {
                    Builtin::Len => Ty::Num,
                    Builtin::Lower => Ty::Str,
                    _ => Ty::Bool,
                };
                make(I::Call(builtin, lowered), ty)
            }
            A::Not(inner) => {
                let inner = self.condition(inner)?;
                make(I::Not(Box::new(inner)), Ty::Bool)
            }
            A::Has(base, fields) => self.has(base, fields, span),
            A::Quantifier(quantifier) => {
                let ast::Quantifier {
                    all,
                    var,
                    list,
                    body,
                } = &**quantifier;
                let list = self.expr(list)?;
                let elem = match list.ty {
                    Ty::StrList => Ty::Str,
                    Ty::List | Ty::Any => Ty::Any,
                    other => {
                        self.error(
                            list.span,
                            CheckError::BadOperand {
                                message: format!(
                                    "`{}` ranges over a list, not a {}",
                                    if *all { "all" } else { "any" },
                                    other.name()
                                ),
                                span: list.span.source_span(),
                                help: None,
                            },
                        );
                        return None;
                    }
                };
                if is_reserved(&var.name) {
                    self.error(
                        var.span,
                        CheckError::ReservedName {
                            name: var.name.to_string(),
                            span: var.span.source_span(),
                        },
                    );
                    return None;
                }
                self.locals.push((var.name.to_string(), elem));
                let body = self.condition(body);
                self.locals.pop();
                make(
                    I::Quantifier {
                        all: *all,
                        list: Box::new(list),
                        body: Box::new(body?),
                    },
                    Ty::Bool,
                )
            }
            A::Binary(op, left, right) => self.binary(*op, left, right, span),
            A::Error => None,
        }
    }

    fn name(&mut self, name: &str, span: Span) -> Option<Expr> {
        let make = |kind, ty| Some(Expr { kind, ty, span });
        if let Some(depth) = self.locals.iter().rposition(|(n, _)| n == name) {
            let ty = self.locals[depth].1;
            return make(I::Local(depth), ty);
        }
        if let Some(c) = self.consts.get(name) {
            let ty = c.value.ty();
            return make(I::Lit(c.value.clone()), ty);
        }
        match name {
            "action" => return make(I::Attr(Attr::Action), Ty::Str),
            "sensitivity" => return make(I::Attr(Attr::Sensitivity), Ty::Level),
            _ => {}
        }
        if let Some(dim) = Dim::from_name(name) {
            let example = dim
                .fields()
                .first()
                .map_or("approval", |(f, _)| f)
                .to_owned();
            self.error(
                span,
                CheckError::ObjectAsValue {
                    name: name.to_owned(),
                    example,
                    span: span.source_span(),
                },
            );
            return None;
        }
        if let Some(level) = Sensitivity::from_name(name) {
            return make(I::Lit(Lit::Level(level)), Ty::Level);
        }
        if self.data.contains_key(name) {
            return make(I::Data(name.into()), Ty::Any);
        }
        let mut candidates: Vec<&str> = vec![
            "subject",
            "resource",
            "intent",
            "environment",
            "requested",
            "context",
            "action",
            "sensitivity",
            "public",
            "internal",
            "confidential",
            "restricted",
        ];
        candidates.extend(self.consts.keys().map(String::as_str));
        candidates.extend(self.data.keys().map(String::as_str));
        candidates.extend(self.locals.iter().map(|(n, _)| n.as_str()));
        let help = closest(name, candidates).map(|c| format!("did you mean `{c}`?"));
        self.error(
            span,
            CheckError::UnknownName {
                name: name.to_owned(),
                span: span.source_span(),
                help: help.or_else(|| {
                    Some("names are constants, the dimensions (`subject`, `resource`, ...), sensitivity levels and data keys".to_owned())
                }),
            },
        );
        None
    }

    /// `dim.field...`, `data.key`, `local.field`.
    fn path(&mut self, expr: &ast::Expr) -> Option<Expr> {
        let A::Field(base, field) = &expr.kind else {
            return self.expr(expr);
        };
        if let A::Name(root) = &base.kind {
            let shadowed =
                self.locals.iter().any(|(n, _)| n == root) || self.consts.contains_key(&**root);
            if let (Some(dim), false) = (Dim::from_name(root), shadowed) {
                let attr = self.attr(dim, field)?;
                let ty = attr.ty();
                return Some(Expr {
                    kind: I::Attr(attr),
                    ty,
                    span: expr.span,
                });
            }
        }
        let base = self.expr(base)?;
        match base.ty {
            Ty::Any => Some(Expr {
                kind: I::Field(Box::new(base), (*field.name).into()),
                ty: Ty::Any,
                span: expr.span,
            }),
            other => {
                self.error(
                    field.span,
                    CheckError::UnknownAttribute {
                        path: collapse(self.sources.slice(expr.span)),
                        span: field.span.source_span(),
                        help: Some(format!("a {} has no fields", other.name())),
                    },
                );
                None
            }
        }
    }

    fn attr(&mut self, dim: Dim, field: &ast::Ident) -> Option<Attr> {
        let name = &*field.name;
        // The known fields (`dim.fields()`) are exactly those with an
        // attribute of their own.
        let known = Attr::of(dim, name);
        if !matches!(known, Attr::Extra(..)) {
            return Some(known);
        }
        let fields = dim.fields();
        if dim != Dim::Context && !fields.iter().any(|(f, _)| *f == name) {
            let suggestion = closest(name, fields.iter().map(|(f, _)| *f));
            if suggestion.is_some() || dim == Dim::Requested {
                let help = match suggestion {
                    Some(s) => format!("did you mean `{}.{s}`?", dim.name()),
                    None => "`requested` has `scope` and `ttl`".to_owned(),
                };
                self.error(
                    field.span,
                    CheckError::UnknownAttribute {
                        path: format!("{}.{name}", dim.name()),
                        span: field.span.source_span(),
                        help: Some(help),
                    },
                );
                return None;
            }
        }
        Some(Attr::of(dim, name))
    }

    fn has(&mut self, base: &ast::Expr, fields: &[ast::Ident], span: Span) -> Option<Expr> {
        let make = |kind| {
            Some(Expr {
                kind,
                ty: Ty::Bool,
                span,
            })
        };
        let rest = |from: usize| fields[from..].iter().map(|f| (*f.name).into()).collect();
        if let A::Name(root) = &base.kind {
            if let Some(dim) = Dim::from_name(root) {
                let attr = self.attr(dim, &fields[0])?;
                return make(I::Has(attr, rest(1)));
            }
        }
        let lowered = self.expr(base)?;
        match lowered.kind {
            I::Attr(attr) if lowered.ty == Ty::Any => make(I::Has(attr, rest(0))),
            _ => {
                self.error(
                    base.span,
                    CheckError::BadOperand {
                        message:
                            "`has` needs a dimension or an attribute holding an object on its left"
                                .to_owned(),
                        span: base.span.source_span(),
                        help: Some(
                            "for example `context has approval` or `subject has owner`".to_owned(),
                        ),
                    },
                );
                None
            }
        }
    }

    fn binary(
        &mut self,
        op: BinOp,
        left: &ast::Expr,
        right: &ast::Expr,
        span: Span,
    ) -> Option<Expr> {
        if matches!(op, BinOp::And | BinOp::Or) {
            let l = self.condition(left);
            let r = self.condition(right);
            return Some(Expr {
                kind: I::Binary(op, Box::new(l?), Box::new(r?)),
                ty: Ty::Bool,
                span,
            });
        }
        let l = self.expr(left);
        let r = self.expr(right);
        let (l, r) = (l?, r?);
        let mismatch = |checker: &mut Self, help: Option<String>| {
            checker.error(
                span,
                CheckError::TypeMismatch {
                    left: l.ty.name(),
                    right: r.ty.name(),
                    op: op.symbol(),
                    span: span.source_span(),
                    help,
                },
            );
            None
        };
        let level_string = |checker: &mut Self, text: &str| {
            checker.error(
                span,
                CheckError::LevelAsString {
                    level: text.to_owned(),
                    span: span.source_span(),
                },
            );
            None
        };
        let string_lit = |e: &Expr| match &e.kind {
            I::Lit(Lit::Str(s)) => Some(s.to_string()),
            _ => None,
        };
        let is_time_lit = |e: &Expr| string_lit(e).is_some_and(|s| parse_time(&s).is_some());
        let ty = match op {
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                for (a, b) in [(&l, &r), (&r, &l)] {
                    if a.ty == Ty::Level && b.ty == Ty::Str {
                        return level_string(
                            self,
                            &string_lit(b).unwrap_or_else(|| "restricted".to_owned()),
                        );
                    }
                }
                let compatible = l.ty == r.ty
                    || l.ty == Ty::Any
                    || r.ty == Ty::Any
                    || (l.ty == Ty::Time && is_time_lit(&r))
                    || (r.ty == Ty::Time && is_time_lit(&l))
                    || (matches!(l.ty, Ty::List | Ty::StrList)
                        && matches!(r.ty, Ty::List | Ty::StrList));
                if !compatible {
                    let help = match (l.ty, r.ty) {
                        (Ty::Dur, Ty::Num) | (Ty::Num, Ty::Dur) => {
                            Some("write durations with a unit, like `15m` or `900s`".to_owned())
                        }
                        (Ty::Dur, Ty::Str) | (Ty::Str, Ty::Dur) => {
                            Some("write the duration without quotes, like `1h`".to_owned())
                        }
                        _ => None,
                    };
                    return mismatch(self, help);
                }
                if !matches!(op, BinOp::Eq | BinOp::Ne) {
                    let ordered =
                        |t: Ty| matches!(t, Ty::Num | Ty::Dur | Ty::Level | Ty::Time | Ty::Any);
                    let time_pair = is_time_lit(&l) || is_time_lit(&r);
                    if !(time_pair || ordered(l.ty) && ordered(r.ty)) {
                        let ty = if ordered(l.ty) { r.ty } else { l.ty };
                        self.error(
                            span,
                            CheckError::NoOrder {
                                ty: ty.name(),
                                span: span.source_span(),
                            },
                        );
                        return None;
                    }
                }
                Ty::Bool
            }
            BinOp::In | BinOp::NotIn => {
                if !matches!(r.ty, Ty::List | Ty::StrList | Ty::Any) {
                    self.error(
                        right.span,
                        CheckError::BadOperand {
                            message: format!(
                                "`{}` needs a list on its right, not a {}",
                                op.symbol(),
                                r.ty.name()
                            ),
                            span: right.span.source_span(),
                            help: Some(
                                "for a substring test use `contains(text, part)`".to_owned(),
                            ),
                        },
                    );
                    return None;
                }
                if l.ty == Ty::Level && r.ty == Ty::StrList {
                    return level_string(self, "restricted");
                }
                if r.ty == Ty::StrList && !matches!(l.ty, Ty::Str | Ty::Any) {
                    return mismatch(self, None);
                }
                Ty::Bool
            }
            BinOp::Matches => {
                let Some(pattern) = string_lit(&r) else {
                    self.error(
                        right.span,
                        CheckError::NotConstant {
                            what: "a `matches` pattern",
                            expected: "string",
                            span: right.span.source_span(),
                        },
                    );
                    return None;
                };
                if !matches!(l.ty, Ty::Str | Ty::Any) {
                    return mismatch(self, None);
                }
                return Some(Expr {
                    kind: I::Matches(Box::new(l), Box::new(Glob::new(&pattern))),
                    ty: Ty::Bool,
                    span,
                });
            }
            BinOp::Add => match (l.ty, r.ty) {
                (Ty::Time | Ty::Any | Ty::Str, Ty::Dur) if l.ty != Ty::Str || is_time_lit(&l) => {
                    Ty::Time
                }
                (Ty::Dur, Ty::Dur) => Ty::Dur,
                (Ty::Num, Ty::Num) => Ty::Num,
                _ => {
                    self.error(
                        span,
                        CheckError::BadOperand {
                            message: format!("cannot add a {} and a {}", l.ty.name(), r.ty.name()),
                            span: span.source_span(),
                            help: Some("`+` adds a duration to a timestamp or to a duration, or two numbers".to_owned()),
                        },
                    );
                    return None;
                }
            },
            BinOp::And | BinOp::Or => Ty::Bool,
        };
        Some(Expr {
            kind: I::Binary(op, Box::new(l), Box::new(r)),
            ty,
            span,
        })
    }

    /// Reports rules whose head tests on one attribute cannot all hold.
    fn contradictions(&mut self, conjuncts: &[Expr], rule: &ast::Rule) {
        // A rule tests few attributes: a list in first-seen order.
        let mut sets: Vec<(&Attr, Vec<&str>)> = Vec::new();
        for conjunct in conjuncts {
            let Some((attr, values)) = crate::compile::head_test(conjunct) else {
                continue;
            };
            match sets.iter_mut().find(|(a, _)| *a == attr) {
                Some((_, existing)) => existing.retain(|v| values.contains(v)),
                None => sets.push((attr, values)),
            }
        }
        if let Some((attr, _)) = sets.iter().find(|(_, values)| values.is_empty()) {
            let span = rule.condition.as_ref().map_or(rule.span, |c| c.span);
            self.error(
                span,
                CheckError::NeverHolds {
                    attr: attr.path(),
                    span: span.source_span(),
                    help: Some("a value cannot equal two different things; did you mean `or`, or `in [...]`?".to_owned()),
                },
            );
        }
    }
}

/// `name(.field)*` with plain identifiers, as the AST the parser would
/// build; `None` for anything else (keywords, spaces, operators).
fn simple_path(text: &str, file: crate::source::FileId, offset: usize) -> Option<ast::Expr> {
    // Over-long paths go through the parser, whose limits refuse them.
    if text.bytes().filter(|&b| b == b'.').count() > crate::parser::limits::MAX_OPERATORS {
        return None;
    }
    let is_ident = |part: &str| {
        let mut chars = part.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let mut parts = text.split('.');
    let first = parts.next()?;
    let is_keyword = |part: &str| {
        use logos::Logos;
        !matches!(
            crate::lexer::Token::lexer(part).next(),
            Some(Ok(crate::lexer::Token::Ident(_)))
        )
    };
    if !is_ident(first) || is_keyword(first) {
        return None;
    }
    let mut end = offset + first.len();
    let mut expr = ast::Expr::new(
        A::Name(crate::lexer::name(first)),
        Span::new(file, offset, end),
    );
    for part in parts {
        if !is_ident(part) {
            return None;
        }
        let start = end + 1;
        end = start + part.len();
        let field = ast::Ident {
            name: crate::lexer::name(part),
            span: Span::new(file, start, end),
        };
        expr = ast::Expr::new(
            A::Field(Box::new(expr), field),
            Span::new(file, offset, end),
        );
    }
    Some(expr)
}

/// A test on an argument's type and how the expected type is named.
type ArgCheck = (fn(Ty) -> bool, &'static str);

/// Names a constant or a quantifier variable may not take.
fn is_reserved(name: &str) -> bool {
    Dim::from_name(name).is_some()
        || Sensitivity::from_name(name).is_some()
        || matches!(name, "action" | "sensitivity")
}

fn flatten_and<'e>(expr: &'e ast::Expr, out: &mut Vec<&'e ast::Expr>) {
    match &expr.kind {
        A::Binary(BinOp::And, left, right) => {
            flatten_and(left, out);
            flatten_and(right, out);
        }
        _ => out.push(expr),
    }
}

/// Collapses runs of whitespace to one space.
pub fn collapse(text: &str) -> String {
    collapsed(text).into_owned()
}

/// [`collapse`], borrowing the text when it has nothing to collapse (no
/// leading, trailing or doubled space and no other whitespace), as most
/// conditions are written.
fn collapsed(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    // Branch-free scans the compiler can vectorise: control bytes (ASCII
    // whitespace other than the space among them) and non-ASCII bytes
    // (which may be Unicode whitespace) take the general path, as do
    // doubled spaces.
    let unusual = bytes
        .iter()
        .fold(false, |seen, &b| seen | !(b' '..0x80).contains(&b));
    let doubled = bytes
        .iter()
        .zip(bytes.iter().skip(1))
        .fold(false, |seen, (&a, &b)| seen | ((a == b' ') & (b == b' ')));
    let trimmed = bytes.first() != Some(&b' ') && bytes.last() != Some(&b' ');
    if !unusual && !doubled && trimmed {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    Cow::Owned(out)
}

/// The text's tokens without comments, joined by single spaces: the same
/// for any layout of the same code.
fn canonical_tokens(text: &str) -> String {
    let (tokens, _) = crate::lexer::lex(crate::source::FileId(0), text);
    tokens
        .iter()
        .filter(|t| !t.token.is_trivia())
        .filter_map(|t| text.get(t.span.start as usize..t.span.end as usize))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A condition's source text for traces: comments dropped, whitespace
/// collapsed, spacing otherwise as written.
fn condition_text(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let comment = bytes
        .iter()
        .zip(bytes.iter().skip(1))
        .fold(false, |seen, (&a, &b)| seen | ((a == b'/') & (b == b'/')));
    if !comment {
        return collapsed(text);
    }
    let (tokens, _) = crate::lexer::lex(crate::source::FileId(0), text);
    let mut out = String::with_capacity(text.len());
    let mut last = 0usize;
    for token in tokens.iter().filter(|t| t.token.is_trivia()) {
        out.push_str(text.get(last..token.span.start as usize).unwrap_or(""));
        out.push(' ');
        last = token.span.end as usize;
    }
    out.push_str(text.get(last..).unwrap_or(""));
    Cow::Owned(collapse(&out))
}

/// `{kind}.{8 hex digits}` from the rule's tokens, so reformatting a rule
/// (spacing, line breaks, comments) keeps its id.
fn generated_id(kind: &str, text: &str) -> String {
    let digest = Sha256::digest(canonical_tokens(text).as_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{kind}.{hex}")
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

/// Converts a data value to a constant of the same type as `like`.
fn lit_from_json(json: &Value, like: &Lit) -> Option<Lit> {
    Some(match (like, json) {
        (Lit::Str(_), Value::String(s)) => Lit::Str(s.as_str().into()),
        (Lit::Num(_), Value::Number(n)) => Lit::Num(n.as_f64()?),
        (Lit::Bool(_), Value::Bool(b)) => Lit::Bool(*b),
        (Lit::Dur(_), Value::Number(n)) => Lit::Dur(n.as_u64()?),
        (Lit::Dur(_), Value::String(s)) => {
            let (tokens, errors) = crate::lexer::lex(crate::source::FileId(0), s);
            match (errors.is_empty(), tokens.as_slice()) {
                (true, [one]) => match one.token {
                    crate::lexer::Token::Dur(d) => Lit::Dur(d),
                    _ => return None,
                },
                _ => return None,
            }
        }
        (Lit::Level(_), Value::String(s)) => Lit::Level(Sensitivity::from_name(s)?),
        (Lit::List(items), Value::Array(values)) => {
            let first = items.first().cloned().unwrap_or(Lit::Str("".into()));
            Lit::List(
                values
                    .iter()
                    .map(|v| lit_from_json(v, &first))
                    .collect::<Option<_>>()?,
            )
        }
        _ => return None,
    })
}

/// Why an audience written without holes could never be stated: the
/// evaluator would refuse it on every request (`audience "*"`).
fn constant_audience_fault(template: &Template) -> Option<String> {
    let mut text = String::new();
    for part in &template.parts {
        match part {
            TemplatePart::Text(literal) => text.push_str(literal),
            TemplatePart::Hole(_) => return None,
        }
    }
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed == "*" || trimmed == "**" {
        return Some("an audience cannot be empty, blank or a wildcard".to_owned());
    }
    crate::scope::percent_encoded(&text).map(|found| {
        format!("an audience cannot hold `{found}`, a percent-encoded `.`, `/` or `%`")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_and_closest() {
        assert_eq!(distance("kind", "kidn"), 1);
        assert_eq!(closest("kidn", ["id", "kind"]), Some("kind"));
        assert_eq!(closest("ownr", ["owner", "id"]), Some("owner"));
        assert_eq!(closest("zzzzzz", ["owner", "id"]), None);
    }

    #[test]
    fn generated_ids_ignore_layout() {
        assert_eq!(
            generated_id("forbid", "forbid  if\n a==\"x\"; // note"),
            generated_id("forbid", "forbid if a == \"x\";")
        );
        assert_ne!(
            generated_id("forbid", "forbid if a == \"x\";"),
            generated_id("forbid", "forbid if a == \"y\";")
        );
        assert_eq!(condition_text("a // note\n  or b"), "a or b");
        assert!(generated_id("forbid", "forbid if a;").starts_with("forbid."));
    }

    #[test]
    fn known_fields_are_the_attributes_of_their_own() {
        for dim in [
            Dim::Subject,
            Dim::Resource,
            Dim::Intent,
            Dim::Environment,
            Dim::Requested,
            Dim::Context,
        ] {
            for (field, _) in dim.fields() {
                assert!(!matches!(Attr::of(dim, field), Attr::Extra(..)));
            }
            for field in ["name", "id", "kind", "time", "scope", "task", "x"] {
                let known = dim.fields().iter().any(|(f, _)| *f == field);
                assert_eq!(known, !matches!(Attr::of(dim, field), Attr::Extra(..)));
            }
        }
    }

    #[test]
    fn collapsed_matches_split_whitespace() {
        for text in [
            "",
            " ",
            "a",
            "a b",
            " a b",
            "a b ",
            "a  b",
            "a\tb",
            "a\nb",
            "a\x0bb",
            "a\x0cb",
            "a \r\n b",
            "é b",
            "a\u{a0}b",
            "a\u{3000}b",
            "a\u{1f}b",
            "a\u{1}b",
            "\u{85}",
            "  ",
            "a ",
            "action == \"read\" and x",
        ] {
            let expected = text.split_whitespace().collect::<Vec<_>>().join(" ");
            assert_eq!(collapsed(text), expected, "{text:?}");
        }
        assert!(matches!(collapsed("a == \"b\""), Cow::Borrowed(_)));
    }
}
