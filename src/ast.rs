//! The surface syntax: what the parser builds, with spans and no meaning.
//!
//! Names are not resolved here and types are not known; the checker does
//! both. Each variant's doc names the smallest input that produces it.

use std::borrow::Cow;

use crate::source::{FileId, Span};

/// A parsed policy file.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    /// Which file this is.
    pub file: FileId,
    /// Constants and rules, in source order.
    pub items: Vec<Item>,
    /// Common mistakes the parser accepted so the checker can explain them.
    pub mistakes: Vec<Mistake>,
}

/// A top-level item.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// `const max = 10;`
    Const(Box<ConstDecl>),
    /// `forbid if subject.shared;`
    Rule(Box<Rule>),
    /// `attribute subject.repository: string "owner/name";`
    Attribute(Box<AttributeDecl>),
}

/// `attribute subject.repository: string "the GitHub repository";`: a
/// free attribute the policy set reads, with its type and what it means.
/// `attribute` is not a keyword (a name at the start of an item); the
/// checker refuses any other name there.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeDecl {
    /// The word that starts the item, `attribute` when well written.
    pub keyword: Ident,
    /// The dimension: `subject`, `resource`, `intent`, `environment` or
    /// `context`.
    pub root: Ident,
    /// The fields below it (`repository`; `pipeline`, `protected`).
    pub path: Vec<Ident>,
    /// The type's name: `string`, `number`, `bool`, `duration`,
    /// `timestamp`, `list`, `object` or `any`.
    pub ty: Ident,
    /// What the attribute means.
    pub doc: Option<StrLit>,
    /// The whole declaration.
    pub span: Span,
}

/// A name with its span.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    /// The name: borrowed from a static table for the common names
    /// (dimensions, attributes, functions), so most cost no allocation.
    pub name: Cow<'static, str>,
    /// Where it is.
    pub span: Span,
}

/// A string literal with its span (escapes applied).
#[derive(Debug, Clone, PartialEq)]
pub struct StrLit {
    /// The text.
    pub value: String,
    /// Where it is, quotes included.
    pub span: Span,
}

/// `const name = value;`
#[derive(Debug, Clone, PartialEq)]
pub struct ConstDecl {
    /// The constant's name.
    pub name: Ident,
    /// Its value: a literal or a list of literals.
    pub value: Expr,
    /// The whole declaration.
    pub span: Span,
}

/// `@id("x")`, `@control("NHI1", "NHI5")`, `@owner("team")`
#[derive(Debug, Clone, PartialEq)]
pub struct Annotation {
    /// The annotation's name (`id`, `control`, ...).
    pub name: Ident,
    /// Its string arguments.
    pub args: Vec<StrLit>,
    /// The whole annotation.
    pub span: Span,
}

/// One rule, with its annotations and doc comment.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// `///` lines directly above the rule, joined by newlines.
    pub doc: Option<String>,
    /// `@...` annotations.
    pub annotations: Vec<Annotation>,
    /// What the rule does.
    pub kind: RuleKind,
    /// `if COND`; `None` means the rule always applies.
    pub condition: Option<Expr>,
    /// `because "template"`.
    pub because: Option<StrLit>,
    /// The keyword that starts the rule.
    pub keyword_span: Span,
    /// The whole rule, annotations included.
    pub span: Span,
}

/// The four rule kinds (two shapes of `limit`).
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// `permit if action == "read" grant ["read:{resource.id}"] for 1h revoke on task_end`
    Permit {
        /// `grant [...] for ...`.
        grant: Option<Box<Grant>>,
        /// Obligations the permit attaches when it is used.
        obligations: Vec<Obligation>,
    },
    /// `forbid if subject.shared`
    Forbid,
    /// `limit ttl 5m if sensitivity >= restricted`
    LimitTtl(Expr),
    /// `limit scope ["read:**"] if subject.kind == "agent"`
    LimitScope(Expr),
    /// `require approval if sensitivity >= restricted`
    Require(Obligation),
}

impl RuleKind {
    /// The keyword(s) that name the kind: `permit`, `limit ttl`, ...
    pub fn keyword(&self) -> &'static str {
        match self {
            RuleKind::Permit { .. } => "permit",
            RuleKind::Forbid => "forbid",
            RuleKind::LimitTtl(_) => "limit",
            RuleKind::LimitScope(_) => "limit",
            RuleKind::Require(_) => "require",
        }
    }
}

/// `grant ["read:{resource.id}"] for 15m`
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// The scope templates: a list literal or a constant.
    pub items: Expr,
    /// `for DURATION`.
    pub ttl: Option<Expr>,
    /// The whole grant clause.
    pub span: Span,
}

/// What the broker must do to honour an allow.
#[derive(Debug, Clone, PartialEq)]
pub enum Obligation {
    /// `approval`
    Approval(Span),
    /// `revoke on task_end`
    RevokeOn {
        /// The event name.
        event: Ident,
        /// The whole obligation.
        span: Span,
    },
    /// `audience resource.id`
    Audience {
        /// The value the token must be bound to.
        value: Expr,
        /// The whole obligation.
        span: Span,
    },
    /// `log`
    Log(Span),
}

impl Obligation {
    /// Where the obligation is written.
    pub fn span(&self) -> Span {
        match self {
            Obligation::Approval(span) | Obligation::Log(span) => *span,
            Obligation::RevokeOn { span, .. } | Obligation::Audience { span, .. } => *span,
        }
    }
}

/// An expression with its span.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What kind of expression.
    pub kind: ExprKind,
    /// Where it is.
    pub span: Span,
}

/// Expression forms.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// `subject`, `workload_auth`, `restricted`: resolved by the checker.
    /// Common names are borrowed from a static table.
    Name(Cow<'static, str>),
    /// `"read"`
    Str(String),
    /// `10`
    Num(f64),
    /// `15m` (seconds)
    Dur(u64),
    /// `true`
    Bool(bool),
    /// `["a", "b"]`
    List(Vec<Expr>),
    /// `subject.kind`
    Field(Box<Expr>, Ident),
    /// `teams[subject.owner]`
    Index(Box<Expr>, Box<Expr>),
    /// `len(requested.scope)`: the function and the arguments, boxed to
    /// keep every other node small.
    Call(Box<(Ident, Vec<Expr>)>),
    /// `not x`
    Not(Box<Expr>),
    /// `a == b`, `a and b`, `a + b`, ...: the operands in one box (one
    /// allocation a binary operator, not two).
    Binary(BinOp, Box<(Expr, Expr)>),
    /// `until context.exception.expires`: the time left until an
    /// instant, a duration.
    Until(Box<Expr>),
    /// `context has approval.by`
    Has(Box<Expr>, Vec<Ident>),
    /// `any(item in requested.scope: item matches "read:*")`, boxed to
    /// keep every other node small.
    Quantifier(Box<Quantifier>),
    /// What error recovery leaves where an expression could not be parsed.
    Error,
}

/// `any(item in list: body)` / `all(...)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantifier {
    /// `all` (true) or `any` (false).
    pub all: bool,
    /// The bound name.
    pub var: Ident,
    /// The list it ranges over.
    pub list: Expr,
    /// The condition.
    pub body: Expr,
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `in`
    In,
    /// `not in`
    NotIn,
    /// `matches`
    Matches,
    /// `and`
    And,
    /// `or`
    Or,
    /// `+`
    Add,
    /// `*`
    Mul,
}

impl BinOp {
    /// How the operator is written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::In => "in",
            BinOp::NotIn => "not in",
            BinOp::Matches => "matches",
            BinOp::And => "and",
            BinOp::Or => "or",
            BinOp::Add => "+",
            BinOp::Mul => "*",
        }
    }
}

/// A common mistake the grammar accepts so the checker can name the fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mistake {
    /// `action = "read"`
    Assign(Span),
    /// `a && b`
    AmpAmp(Span),
    /// `a || b`
    PipePipe(Span),
    /// `!a`
    Bang(Span),
}

impl Rule {
    /// A rule with its kind and condition; [`Rule::finish`] adds the rest.
    /// Boxed from the start, so the parser's stack holds a pointer.
    pub fn body(kind: RuleKind, keyword_span: Span, condition: Option<Expr>) -> Box<Rule> {
        Box::new(Rule {
            doc: None,
            annotations: Vec::new(),
            kind,
            condition,
            because: None,
            keyword_span,
            span: keyword_span,
        })
    }

    /// Adds the annotations, the `because` text and the whole span.
    pub fn finish(
        mut rule: Box<Rule>,
        annotations: Vec<Annotation>,
        because: Option<StrLit>,
        span: Span,
    ) -> Box<Rule> {
        rule.annotations = annotations;
        rule.because = because;
        rule.span = span;
        rule
    }
}

impl Expr {
    /// Builds an expression.
    pub fn new(kind: ExprKind, span: Span) -> Expr {
        Expr { kind, span }
    }
}
