//! Binary operators: comparisons, membership, `matches` and `+`, with the
//! type rules of each.

use super::{CheckError, Checker};
use crate::ast::{self, BinOp};
use crate::ir::{Expr, ExprKind as I, Glob, Lit, Ty};
use crate::instant::parse_time;
use crate::sensitivity::Sensitivity;
use crate::source::Span;

/// The text of a string literal.
fn string_lit(e: &Expr) -> Option<&str> {
    match &e.kind {
        I::Lit(Lit::Str(s)) => Some(s),
        _ => None,
    }
}

/// A string literal that reads as a timestamp.
fn is_time_lit(e: &Expr) -> bool {
    string_lit(e).is_some_and(|s| parse_time(s).is_some())
}

/// How `text`, written as a string, reads as a level: the keyword when it
/// names one (in any case), else the text as written, quoted.
fn as_level(text: &str) -> String {
    match Sensitivity::from_name(&text.to_ascii_lowercase()) {
        Some(level) => level.as_str().to_owned(),
        None => format!("\"{text}\""),
    }
}

/// The help for a level compared with a string: the same test written with
/// keywords, from the strings written (`sensitivity == "internal"` becomes
/// `sensitivity == internal`, `sensitivity in ["internal", "public"]`
/// becomes `sensitivity in [internal, public]`).
fn level_help(op: BinOp, other: &Expr) -> String {
    const LEVELS: &str = "the levels are `public`, `internal`, `confidential` and `restricted`";
    match &other.kind {
        I::Lit(Lit::Str(text)) => match Sensitivity::from_name(&text.to_ascii_lowercase()) {
            Some(level) => format!(
                "write the level as a keyword: `sensitivity {} {}`",
                op.symbol(),
                level.as_str()
            ),
            None => format!("`{text}` is not a level; {LEVELS}"),
        },
        I::Lit(Lit::List(items)) => {
            let levels: Vec<String> = items
                .iter()
                .map(|item| match item {
                    Lit::Str(text) => as_level(text),
                    _ => String::new(),
                })
                .collect();
            format!(
                "write the levels as keywords: `sensitivity {} [{}]`",
                op.symbol(),
                levels.join(", ")
            )
        }
        _ => format!("compare it with a level keyword; {LEVELS}"),
    }
}

impl Checker<'_> {
    pub(super) fn binary(
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
        let is_level = |e: &ast::Expr| matches!(&e.kind, ast::ExprKind::Name(n) if &**n == "sensitivity");
        let levels = matches!(
            op,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::In | BinOp::NotIn
        );
        let outer = self.expect_level;
        self.expect_level = levels && is_level(right);
        let l = self.expr(left);
        self.expect_level = levels && is_level(left);
        let r = self.expr(right);
        self.expect_level = outer;
        let (l, r) = (l?, r?);
        let ty = match op {
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                self.compare(op, &l, &r, span)?
            }
            BinOp::In | BinOp::NotIn => self.membership(op, &l, &r, right.span, span)?,
            BinOp::Matches => {
                let glob = self.pattern(&l, &r, right.span, span)?;
                return Some(Expr {
                    kind: I::Matches(Box::new(l), Box::new(glob)),
                    ty: Ty::Bool,
                    span,
                });
            }
            BinOp::Add => self.add(&l, &r, span)?,
            BinOp::Mul => self.multiply(&l, &r, span)?,
            BinOp::And | BinOp::Or => Ty::Bool,
        };
        Some(Expr {
            kind: I::Binary(op, Box::new(l), Box::new(r)),
            ty,
            span,
        })
    }

    /// Reports `l op r` as comparing types that do not compare.
    fn mismatch(&mut self, op: BinOp, l: &Expr, r: &Expr, span: Span, help: Option<String>) {
        self.error(
            span,
            CheckError::TypeMismatch {
                left: l.ty.name(),
                right: r.ty.name(),
                op: op.symbol(),
                span: span.source_span(),
                help,
            },
        );
    }

    /// Reports a level compared with a string, `other` being the string.
    fn level_as_string(&mut self, op: BinOp, other: &Expr, span: Span) {
        self.error(
            span,
            CheckError::LevelAsString {
                span: span.source_span(),
                help: level_help(op, other),
            },
        );
    }

    /// `==`, `!=`, `<`, `<=`, `>`, `>=`.
    fn compare(&mut self, op: BinOp, l: &Expr, r: &Expr, span: Span) -> Option<Ty> {
        for (a, b) in [(l, r), (r, l)] {
            if a.ty == Ty::Level && b.ty == Ty::Str {
                self.level_as_string(op, b, span);
                return None;
            }
        }
        let compatible = l.ty == r.ty
            || l.ty == Ty::Any
            || r.ty == Ty::Any
            || (l.ty == Ty::Time && is_time_lit(r))
            || (r.ty == Ty::Time && is_time_lit(l))
            || (matches!(l.ty, Ty::List | Ty::StrList) && matches!(r.ty, Ty::List | Ty::StrList));
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
            self.mismatch(op, l, r, span, help);
            return None;
        }
        if !matches!(op, BinOp::Eq | BinOp::Ne) {
            let ordered = |t: Ty| matches!(t, Ty::Num | Ty::Dur | Ty::Level | Ty::Time | Ty::Any);
            let time_pair = is_time_lit(l) || is_time_lit(r);
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
        Some(Ty::Bool)
    }

    /// `in`, `not in`.
    fn membership(&mut self, op: BinOp, l: &Expr, r: &Expr, right: Span, span: Span) -> Option<Ty> {
        if !matches!(r.ty, Ty::List | Ty::StrList | Ty::Any) {
            self.error(
                right,
                CheckError::BadOperand {
                    message: format!(
                        "`{}` needs a list on its right, not a {}",
                        op.symbol(),
                        r.ty.name()
                    ),
                    span: right.source_span(),
                    help: Some("for a substring test use `contains(text, part)`".to_owned()),
                },
            );
            return None;
        }
        if l.ty == Ty::Level && r.ty == Ty::StrList {
            self.level_as_string(op, r, span);
            return None;
        }
        if r.ty == Ty::StrList && !matches!(l.ty, Ty::Str | Ty::Any) {
            self.mismatch(op, l, r, span, None);
            return None;
        }
        Some(Ty::Bool)
    }

    /// `matches`: the pattern must be a constant string.
    fn pattern(&mut self, l: &Expr, r: &Expr, right: Span, span: Span) -> Option<Glob> {
        let Some(pattern) = string_lit(r) else {
            self.error(
                right,
                CheckError::NotConstant {
                    what: "a `matches` pattern",
                    expected: "string",
                    span: right.source_span(),
                },
            );
            return None;
        };
        if !matches!(l.ty, Ty::Str | Ty::Any) {
            self.mismatch(BinOp::Matches, l, r, span, None);
            return None;
        }
        Some(Glob::new(pattern))
    }

    /// `*`: a duration scaled by a number (either way round), or two
    /// numbers.
    fn multiply(&mut self, l: &Expr, r: &Expr, span: Span) -> Option<Ty> {
        let negative = |e: &Expr| matches!(e.kind, I::Lit(Lit::Num(n)) if n < 0.0 || n.is_nan());
        if (l.ty == Ty::Dur && negative(r)) || (r.ty == Ty::Dur && negative(l)) {
            self.error(
                span,
                CheckError::BadOperand {
                    message: "a duration cannot be scaled by a negative number".to_owned(),
                    span: span.source_span(),
                    help: Some("a duration is never below zero; scale by a number of at least 0".to_owned()),
                },
            );
            return None;
        }
        match (l.ty, r.ty) {
            (Ty::Dur, Ty::Num | Ty::Any) | (Ty::Num | Ty::Any, Ty::Dur) => Some(Ty::Dur),
            (Ty::Num, Ty::Num) => Some(Ty::Num),
            (Ty::Num | Ty::Any, Ty::Num | Ty::Any) => Some(Ty::Any),
            _ => {
                self.error(
                    span,
                    CheckError::BadOperand {
                        message: format!("cannot multiply a {} by a {}", l.ty.name(), r.ty.name()),
                        span: span.source_span(),
                        help: Some(
                            "`*` scales a duration by a number (`1d * exception_max_days`), or multiplies two numbers"
                                .to_owned(),
                        ),
                    },
                );
                None
            }
        }
    }

    /// `+`: a duration added to a timestamp or a duration, or two numbers.
    fn add(&mut self, l: &Expr, r: &Expr, span: Span) -> Option<Ty> {
        match (l.ty, r.ty) {
            (Ty::Time | Ty::Any | Ty::Str, Ty::Dur) if l.ty != Ty::Str || is_time_lit(l) => {
                Some(Ty::Time)
            }
            (Ty::Dur, Ty::Dur) => Some(Ty::Dur),
            (Ty::Num, Ty::Num) => Some(Ty::Num),
            _ => {
                self.error(
                    span,
                    CheckError::BadOperand {
                        message: format!("cannot add a {} and a {}", l.ty.name(), r.ty.name()),
                        span: span.source_span(),
                        help: Some(
                            "`+` adds a duration to a timestamp or to a duration, or two numbers"
                                .to_owned(),
                        ),
                    },
                );
                None
            }
        }
    }
}
