//! Binary operators: comparisons, membership, `matches` and `+`, with the
//! type rules of each.

use super::{CheckError, Checker};
use crate::ast::{self, BinOp};
use crate::ir::{Expr, ExprKind as I, Glob, Lit, Ty};
use crate::request::parse_time;
use crate::source::Span;

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
}
