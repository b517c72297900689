//! The checked form of a policy set: names resolved, types known, constants
//! folded. The compiler builds the decision tree over it and the evaluator
//! runs it.

use indexmap::IndexMap;
use serde_json::Value;

use crate::ast::BinOp;
use crate::sensitivity::Sensitivity;
use crate::source::Span;

pub use crate::schema::{Attr, Dim, Ty};

/// A constant value.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    /// `"read"`
    Str(Box<str>),
    /// `10`
    Num(f64),
    /// `true`
    Bool(bool),
    /// `15m`
    Dur(u64),
    /// `restricted`
    Level(Sensitivity),
    /// `["a", "b"]`
    List(Vec<Lit>),
    /// A value from the data file that is not a scalar of the above
    /// (boxed: rare, and three times the size of the other variants).
    Json(Box<Value>),
}

impl Lit {
    /// The literal's type.
    pub fn ty(&self) -> Ty {
        match self {
            Lit::Str(_) => Ty::Str,
            Lit::Num(_) => Ty::Num,
            Lit::Bool(_) => Ty::Bool,
            Lit::Dur(_) => Ty::Dur,
            Lit::Level(_) => Ty::Level,
            Lit::List(items) if items.iter().all(|i| matches!(i, Lit::Str(_))) => Ty::StrList,
            Lit::List(_) => Ty::List,
            Lit::Json(_) => Ty::Any,
        }
    }
}

/// Built-in functions, resolved by name in the checker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// `len(list_or_string)`
    Len,
    /// `contains(list_or_string, value)`
    Contains,
    /// `starts_with(string, prefix)`
    StartsWith,
    /// `ends_with(string, suffix)`
    EndsWith,
    /// `lower(string)`
    Lower,
    /// `min(a, b, ...)`: the least of two or more durations (or numbers).
    Min,
}

impl Builtin {
    /// Every built-in with its name and arity (for `min`, the least
    /// number of arguments: it takes any number from two).
    pub const ALL: [(&'static str, Builtin, usize); 6] = [
        ("len", Builtin::Len, 1),
        ("contains", Builtin::Contains, 2),
        ("starts_with", Builtin::StartsWith, 2),
        ("ends_with", Builtin::EndsWith, 2),
        ("lower", Builtin::Lower, 1),
        ("min", Builtin::Min, 2),
    ];

    /// True for a built-in that takes its arity or more arguments.
    pub fn variadic(self) -> bool {
        self == Builtin::Min
    }
}

/// A checked expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What it computes.
    pub kind: ExprKind,
    /// Its static type.
    pub ty: Ty,
    /// Where it is written.
    pub span: Span,
}

/// Checked expression forms.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// A literal or a folded constant.
    Lit(Lit),
    /// A request attribute.
    Attr(Attr),
    /// A quantifier's bound value, by depth.
    Local(usize),
    /// A top-level key of the data file.
    Data(Box<str>),
    /// `expr.field` on an object value.
    Field(Box<Expr>, Box<str>),
    /// `expr[index]`
    Index(Box<Expr>, Box<Expr>),
    /// `len(x)`
    Call(Builtin, Vec<Expr>),
    /// `not x`
    Not(Box<Expr>),
    /// `a op b`
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `x matches "glob"`, with the glob compiled (boxed, to keep every
    /// other node small).
    Matches(Box<Expr>, Box<Glob>),
    /// `subject has owner`: presence of the attribute (and of nested fields).
    Has(Attr, Vec<Box<str>>),
    /// `users[subject.id] has roles`: presence of fields in a value that
    /// is not an attribute (data, a local); false when the value itself
    /// cannot be read.
    HasIn(Box<Expr>, Vec<Box<str>>),
    /// `data[subject.id]`: the top-level key of the data file that the
    /// expression names.
    DataKey(Box<Expr>),
    /// `until t`: the whole seconds from `environment.time` to the instant
    /// `t`, 0 when `t` is not after it.
    Until(Box<Expr>),
    /// `any(x in list: cond)` / `all(...)`
    Quantifier {
        /// `all` when true.
        all: bool,
        /// The list.
        list: Box<Expr>,
        /// The condition, with the bound value as `Local(depth)`.
        body: Box<Expr>,
    },
}

/// A `matches` pattern: `*` any run of characters, `?` one character,
/// `\*` and `\?` literal.
#[derive(Debug, Clone, PartialEq)]
pub struct Glob {
    /// The pattern as written.
    pub source: Box<str>,
    /// Pieces: literal text or wildcards.
    pub parts: Vec<GlobPart>,
}

/// A piece of a glob.
#[derive(Debug, Clone, PartialEq)]
pub enum GlobPart {
    /// Literal text.
    Text(Box<str>),
    /// `*`
    Star,
    /// `?`
    One,
}

impl Glob {
    /// Compiles a pattern.
    pub fn new(source: &str) -> Glob {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(next) => text.push(next),
                    None => text.push('\\'),
                },
                '*' | '?' => {
                    if !text.is_empty() {
                        parts.push(GlobPart::Text(std::mem::take(&mut text).into()));
                    }
                    parts.push(if c == '*' {
                        GlobPart::Star
                    } else {
                        GlobPart::One
                    });
                }
                other => text.push(other),
            }
        }
        if !text.is_empty() {
            parts.push(GlobPart::Text(text.into()));
        }
        Glob {
            source: source.into(),
            parts,
        }
    }

    /// True when `text` matches the whole pattern.
    pub fn is_match(&self, text: &str) -> bool {
        glob_match(&self.parts, text)
    }
}

/// Matches without recursion and without exponential backtracking: on a
/// mismatch, only the most recent `*` is retried one character further
/// (the classic wildcard algorithm), so the cost is at most
/// pattern length × text length. Kept by hand: `glob` and `globset` match
/// paths (`/` is special) or compile to regexes, and neither promises this bound.
fn glob_match(parts: &[GlobPart], text: &str) -> bool {
    let mut part = 0usize;
    let mut pos = 0usize;
    // (part after the last `*`, text position it was tried at)
    let mut retry: Option<(usize, usize)> = None;
    loop {
        if part == parts.len() && pos == text.len() {
            return true;
        }
        let step = match parts.get(part) {
            Some(GlobPart::Star) => {
                retry = Some((part + 1, pos));
                part += 1;
                continue;
            }
            Some(GlobPart::Text(lit)) if text[pos..].starts_with(&**lit) => Some(lit.len()),
            Some(GlobPart::One) => text[pos..].chars().next().map(char::len_utf8),
            _ => None,
        };
        match step {
            Some(len) => {
                part += 1;
                pos += len;
            }
            None => match retry {
                Some((after, from)) if from < text.len() => {
                    let next = from + text[from..].chars().next().map_or(1, char::len_utf8);
                    retry = Some((after, next));
                    part = after;
                    pos = next;
                }
                _ => return false,
            },
        }
    }
}

#[cfg(test)]
mod glob_tests {
    use super::Glob;

    #[test]
    fn globs_match_like_shells() {
        assert!(Glob::new("read:*").is_match("read:db"));
        assert!(Glob::new("*").is_match(""));
        assert!(Glob::new("a*b*c").is_match("axxbyyc"));
        assert!(!Glob::new("a*b*c").is_match("axxbyy"));
        assert!(Glob::new("a?c").is_match("abc"));
        assert!(!Glob::new("a?c").is_match("ac"));
        assert!(Glob::new("*.acme.io").is_match("x.y.acme.io"));
        assert!(Glob::new("a\\*").is_match("a*"));
        assert!(!Glob::new("a\\*").is_match("ab"));
        assert!(Glob::new("é?").is_match("éü"));
    }

    #[test]
    fn hostile_globs_stay_fast() {
        let pattern = "*a".repeat(50) + "b";
        let text = "a".repeat(10_000);
        assert!(!Glob::new(&pattern).is_match(&text));
    }
}

/// A string with `{expr}` holes: grants, audiences and `because` messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// The text as written.
    pub source: Box<str>,
    /// The pieces.
    pub parts: Vec<TemplatePart>,
    /// Where it is written.
    pub span: Span,
}

/// A piece of a template.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplatePart {
    /// Literal text.
    Text(Box<str>),
    /// A value to interpolate.
    Hole(Expr),
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// Grants scope templates for at most `ttl`, with obligations.
    Permit {
        /// Scope item templates; empty for a permit without grant.
        grant: Vec<Template>,
        /// `for DURATION`.
        ttl: Option<u64>,
        /// Obligations attached when the permit matches.
        obligations: Vec<Obligation>,
    },
    /// Denies.
    Forbid,
    /// Caps the TTL.
    LimitTtl(TtlCap),
    /// Keeps only scope items these patterns cover (templates, built per
    /// request like grants).
    LimitScope(Vec<Template>),
    /// Adds an obligation.
    Require(Obligation),
}

impl RuleKind {
    /// `permit`, `forbid`, `limit`, `require`.
    pub fn name(&self) -> &'static str {
        match self {
            RuleKind::Permit { .. } => "permit",
            RuleKind::Forbid => "forbid",
            RuleKind::LimitTtl(_) | RuleKind::LimitScope(_) => "limit",
            RuleKind::Require(_) => "require",
        }
    }
}

/// The cap of a `limit ttl` rule.
#[derive(Debug, Clone, PartialEq)]
pub enum TtlCap {
    /// A duration known when the policy is checked: `limit ttl 15m`, or a
    /// constant (which data may override).
    Const(u64),
    /// A duration computed for each request from its values, of type
    /// duration or "any" (checked when it is evaluated): `limit ttl until
    /// context.exception.expires`, `limit ttl min(15m, caps[resource.kind])`.
    /// An error computing it caps at 0, which denies.
    Computed(Expr),
}

impl TtlCap {
    /// The cap, when it is the same for every request.
    pub fn constant(&self) -> Option<u64> {
        match self {
            TtlCap::Const(seconds) => Some(*seconds),
            TtlCap::Computed(_) => None,
        }
    }
}

/// A checked obligation.
#[derive(Debug, Clone, PartialEq)]
pub enum Obligation {
    /// Human approval before minting.
    Approval,
    /// Revoke the credential when this event happens.
    RevokeOn(Box<str>),
    /// Bind the token to this audience.
    Audience(Template),
    /// Log the use of the credential.
    Log,
}

/// One checked rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// `@id`, or the generated id.
    pub id: crate::name::Name,
    /// True when the id was generated.
    pub generated_id: bool,
    /// What the rule does.
    pub kind: RuleKind,
    /// The top-level conjuncts of the condition; empty means always.
    pub conjuncts: Vec<Expr>,
    /// Source text of each conjunct, shared with the traces.
    pub conjunct_text: Vec<crate::name::Name>,
    /// `because` message.
    pub because: Option<Template>,
    /// The doc comment.
    pub doc: Option<String>,
    /// Annotations other than `@id`, by name.
    pub annotations: IndexMap<String, Vec<String>>,
    /// `file:line`.
    pub location: crate::name::Name,
    /// The whole rule.
    pub span: Span,
    /// The rule's keyword (`permit`, `forbid`, ...).
    pub keyword_span: Span,
    /// The condition after `if`, when there is one.
    pub condition_span: Option<Span>,
    /// A permit's `grant [...]` list, when there is one.
    pub grant_span: Option<Span>,
    /// `permit`, `forbid`, `limit`, `require`, shared by every rule of the
    /// kind: a trace entry costs reference counts, not copies.
    pub kind_name: crate::name::Name,
    /// The fixed text of the rule's trace entries as JSON, written out the
    /// first time one of them is.
    pub(crate) trace_json: crate::decision::TraceJson,
}

/// A checked policy set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicySet {
    /// Rules in source order (files in the order given).
    pub rules: Vec<Rule>,
    /// The data file's top-level values that are not constants.
    pub data: IndexMap<String, Value>,
    /// The constants, by name, with the data file's overrides applied (the
    /// rules have them inlined; the server reads a few, e.g.
    /// `repeat_window`).
    pub consts: IndexMap<String, Lit>,
    /// The free attributes the files declare (`attribute ...;`), in
    /// source order.
    pub attributes: Vec<crate::schema::DeclaredAttr>,
}
