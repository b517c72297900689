//! Whether two checked rules decide alike: the same kind, grants, TTL,
//! obligations and conditions, wherever they are written and whatever
//! they are called (ids, spans, docs and `because` texts do not decide).

use crate::ir::{Expr, ExprKind, Obligation, Rule, RuleKind, Template, TemplatePart, TtlCap};

/// True when `a` and `b` decide every request alike. `data_equal` says
/// whether the two sets' data files are equal: when they are not, a rule
/// that reads data is never called the same.
pub fn same_rule(a: &Rule, b: &Rule, data_equal: bool) -> bool {
    a.conjuncts.len() == b.conjuncts.len()
        && a
            .conjuncts
            .iter()
            .zip(&b.conjuncts)
            .all(|(x, y)| same_expr(x, y, data_equal))
        && same_kind(&a.kind, &b.kind, data_equal)
}

fn same_kind(a: &RuleKind, b: &RuleKind, d: bool) -> bool {
    match (a, b) {
        (
            RuleKind::Permit {
                grant: ga,
                ttl: ta,
                obligations: oa,
            },
            RuleKind::Permit {
                grant: gb,
                ttl: tb,
                obligations: ob,
            },
        ) => {
            ta == tb
                && same_list(ga, gb, |x, y| same_template(x, y, d))
                && same_list(oa, ob, |x, y| same_obligation(x, y, d))
        }
        (RuleKind::Forbid, RuleKind::Forbid) => true,
        (RuleKind::LimitTtl(x), RuleKind::LimitTtl(y)) => match (x, y) {
            (TtlCap::Const(x), TtlCap::Const(y)) => x == y,
            (TtlCap::Computed(x), TtlCap::Computed(y)) => same_expr(x, y, d),
            _ => false,
        },
        (RuleKind::LimitScope(x), RuleKind::LimitScope(y)) => {
            same_list(x, y, |p, q| same_template(p, q, d))
        }
        (RuleKind::Require(x), RuleKind::Require(y)) => same_obligation(x, y, d),
        _ => false,
    }
}

fn same_list<T>(a: &[T], b: &[T], eq: impl Fn(&T, &T) -> bool) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| eq(x, y))
}

fn same_obligation(a: &Obligation, b: &Obligation, d: bool) -> bool {
    match (a, b) {
        (Obligation::Approval, Obligation::Approval) | (Obligation::Log, Obligation::Log) => true,
        (Obligation::RevokeOn(x), Obligation::RevokeOn(y)) => x == y,
        (Obligation::Audience(x), Obligation::Audience(y)) => same_template(x, y, d),
        _ => false,
    }
}

fn same_template(a: &Template, b: &Template, d: bool) -> bool {
    same_list(&a.parts, &b.parts, |x, y| match (x, y) {
        (TemplatePart::Text(x), TemplatePart::Text(y)) => x == y,
        (TemplatePart::Hole(x), TemplatePart::Hole(y)) => same_expr(x, y, d),
        _ => false,
    })
}

/// Structural equality of checked expressions, spans aside.
pub fn same_expr(a: &Expr, b: &Expr, d: bool) -> bool {
    if a.ty != b.ty {
        return false;
    }
    match (&a.kind, &b.kind) {
        (ExprKind::Lit(x), ExprKind::Lit(y)) => x == y,
        (ExprKind::Attr(x), ExprKind::Attr(y)) => x == y,
        (ExprKind::Local(x), ExprKind::Local(y)) => x == y,
        (ExprKind::Data(x), ExprKind::Data(y)) => d && x == y,
        (ExprKind::Field(x, f), ExprKind::Field(y, g)) => f == g && same_expr(x, y, d),
        (ExprKind::Index(x1, x2), ExprKind::Index(y1, y2)) => {
            same_expr(x1, y1, d) && same_expr(x2, y2, d)
        }
        (ExprKind::Call(f, xs), ExprKind::Call(g, ys)) => {
            f == g && same_list(xs, ys, |x, y| same_expr(x, y, d))
        }
        (ExprKind::Not(x), ExprKind::Not(y)) => same_expr(x, y, d),
        (ExprKind::Binary(o, x1, x2), ExprKind::Binary(p, y1, y2)) => {
            o == p && same_expr(x1, y1, d) && same_expr(x2, y2, d)
        }
        (ExprKind::Matches(x, g), ExprKind::Matches(y, h)) => {
            g.source == h.source && same_expr(x, y, d)
        }
        (ExprKind::Has(x, f), ExprKind::Has(y, g)) => x == y && f == g,
        (ExprKind::HasIn(x, f), ExprKind::HasIn(y, g)) => f == g && same_expr(x, y, d),
        (ExprKind::DataKey(x), ExprKind::DataKey(y)) => d && same_expr(x, y, d),
        (ExprKind::Until(x), ExprKind::Until(y)) => same_expr(x, y, d),
        (
            ExprKind::Quantifier {
                all: a1,
                list: l1,
                body: b1,
            },
            ExprKind::Quantifier {
                all: a2,
                list: l2,
                body: b2,
            },
        ) => a1 == a2 && same_expr(l1, l2, d) && same_expr(b1, b2, d),
        _ => false,
    }
}
