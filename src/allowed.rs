//! Which values a conjunct allows: the one answer the decision tree
//! ([`crate::compile`]), the checker's contradiction search and the lints
//! all use.
//!
//! A *head test* compares one attribute with constants so that the values
//! it lets through can be listed (`action == "read"`, `resource.kind in
//! ["a", "b"]`, `sensitivity <= internal`): the tree indexes rules by them
//! and the checker reports a rule whose head tests on one attribute leave
//! no value. A *test* ([`test_of`]) also covers what cannot be listed but
//! can be reasoned about (`!= "x"`, `not in [...]`, booleans), which the
//! lints use to compare rules.

use crate::ast::BinOp;
use crate::ir::{Attr, Expr, ExprKind, Lit, Ty};
use crate::sensitivity::Sensitivity;

/// The attribute and the values one conjunct restricts it to, when the
/// conjunct is an indexable head test. Both borrow from the conjunct.
pub(crate) fn head_test(expr: &Expr) -> Option<(&Attr, Vec<&str>)> {
    let mut values = Vec::new();
    let attr = head_test_into(expr, &mut values)?;
    Some((attr, values))
}

/// [`head_test`], appending the values to `out` (left as it was when the
/// conjunct is not a head test).
pub(crate) fn head_test_into<'e>(expr: &'e Expr, out: &mut Vec<&'e str>) -> Option<&'e Attr> {
    let start = out.len();
    let attr = head_values(expr, out);
    if attr.is_none() {
        out.truncate(start);
    }
    attr
}

fn head_values<'e>(expr: &'e Expr, values: &mut Vec<&'e str>) -> Option<&'e Attr> {
    let start = values.len();
    let ExprKind::Binary(op, left, right) = &expr.kind else {
        return None;
    };
    let (attr, lit, op) = match (&left.kind, &right.kind) {
        (ExprKind::Attr(attr), ExprKind::Lit(lit)) => (attr, lit, *op),
        (ExprKind::Lit(lit), ExprKind::Attr(attr)) => (attr, lit, flip(*op)?),
        _ => return None,
    };
    if *attr == Attr::Sensitivity {
        let keep = |level: Sensitivity| -> Option<bool> {
            Some(match (op, lit) {
                (BinOp::Eq, Lit::Level(l)) => level == *l,
                (BinOp::Ne, Lit::Level(l)) => level != *l,
                (BinOp::Lt, Lit::Level(l)) => level < *l,
                (BinOp::Le, Lit::Level(l)) => level <= *l,
                (BinOp::Gt, Lit::Level(l)) => level > *l,
                (BinOp::Ge, Lit::Level(l)) => level >= *l,
                (BinOp::In, Lit::List(items)) => items.contains(&Lit::Level(level)),
                (BinOp::NotIn, Lit::List(items)) => !items.contains(&Lit::Level(level)),
                _ => return None,
            })
        };
        for level in Sensitivity::ALL {
            if keep(level)? {
                values.push(level.as_str());
            }
        }
        return Some(attr);
    }
    if !matches!(attr.ty(), Ty::Str | Ty::Any) || *attr == Attr::EnvironmentTime {
        return None;
    }
    match (op, lit) {
        (BinOp::Eq, Lit::Str(value)) => {
            values.push(&**value);
            Some(attr)
        }
        (BinOp::In, Lit::List(items)) => {
            for item in items {
                match item {
                    Lit::Str(value) => {
                        if !values[start..].contains(&&**value) {
                            values.push(&**value);
                        }
                    }
                    _ => return None,
                }
            }
            Some(attr)
        }
        _ => None,
    }
}

fn flip(op: BinOp) -> Option<BinOp> {
    Some(match op {
        BinOp::Eq => BinOp::Eq,
        BinOp::Ne => BinOp::Ne,
        BinOp::Lt => BinOp::Gt,
        BinOp::Le => BinOp::Ge,
        BinOp::Gt => BinOp::Lt,
        BinOp::Ge => BinOp::Le,
        _ => return None,
    })
}

/// The values a test lets through.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Values {
    /// Only these.
    In(Vec<String>),
    /// Anything but these.
    NotIn(Vec<String>),
}

impl Values {
    pub(crate) fn intersect(&self, other: &Values) -> Values {
        match (self, other) {
            (Values::In(a), Values::In(b)) => {
                Values::In(a.iter().filter(|v| b.contains(v)).cloned().collect())
            }
            (Values::In(a), Values::NotIn(b)) | (Values::NotIn(b), Values::In(a)) => {
                Values::In(a.iter().filter(|v| !b.contains(v)).cloned().collect())
            }
            (Values::NotIn(a), Values::NotIn(b)) => {
                let mut all = a.clone();
                all.extend(b.iter().filter(|v| !a.contains(v)).cloned());
                Values::NotIn(all)
            }
        }
    }

    /// True when every value `self` lets through, `wider` lets through too.
    pub(crate) fn within(&self, wider: &Values) -> bool {
        match (self, wider) {
            (Values::In(a), Values::In(b)) => a.iter().all(|v| b.contains(v)),
            (Values::In(a), Values::NotIn(b)) => a.iter().all(|v| !b.contains(v)),
            (Values::NotIn(a), Values::NotIn(b)) => b.iter().all(|v| a.contains(v)),
            (Values::NotIn(_), Values::In(_)) => false,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Values::In(values) if values.is_empty())
    }
}

/// The attribute and values of a test conjunct. Booleans have two values,
/// so `!= true` becomes `in [false]`; a request whose attribute is missing
/// or of another type errors, which a permit treats as not matching.
pub(crate) fn test_of(expr: &Expr) -> Option<(Attr, Values)> {
    if let Some((attr, values)) = head_test(expr) {
        let values = values.into_iter().map(str::to_owned).collect();
        return Some((attr.clone(), Values::In(values)));
    }
    let bools = |attr: &Attr, keep: &dyn Fn(bool) -> bool| {
        let values = [true, false]
            .into_iter()
            .filter(|b| keep(*b))
            .map(|b| b.to_string())
            .collect();
        Some((attr.clone(), Values::In(values)))
    };
    match &expr.kind {
        ExprKind::Attr(attr) if attr.ty() == Ty::Bool => bools(attr, &|b| b),
        ExprKind::Not(inner) => match &inner.kind {
            ExprKind::Attr(attr) if attr.ty() == Ty::Bool => bools(attr, &|b| !b),
            _ => None,
        },
        ExprKind::Binary(op, left, right) => {
            let (attr, lit) = match (&left.kind, &right.kind) {
                (ExprKind::Attr(attr), ExprKind::Lit(lit))
                | (ExprKind::Lit(lit), ExprKind::Attr(attr)) => (attr, lit),
                _ => return None,
            };
            match (op, lit) {
                (BinOp::Eq, Lit::Bool(value)) if attr.ty() == Ty::Bool => {
                    bools(attr, &|b| b == *value)
                }
                (BinOp::Ne, Lit::Bool(value)) if attr.ty() == Ty::Bool => {
                    bools(attr, &|b| b != *value)
                }
                (BinOp::Ne, Lit::Str(value)) if matches!(attr.ty(), Ty::Str | Ty::Any) => {
                    Some((attr.clone(), Values::NotIn(vec![value.to_string()])))
                }
                (BinOp::NotIn, Lit::List(items)) if matches!(attr.ty(), Ty::Str | Ty::Any) => {
                    let mut values = Vec::new();
                    for item in items {
                        let Lit::Str(value) = item else { return None };
                        values.push(value.to_string());
                    }
                    Some((attr.clone(), Values::NotIn(values)))
                }
                _ => None,
            }
        }
        _ => None,
    }
}
