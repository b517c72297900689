//! Expressions: names, attribute paths, calls, quantifiers, lowered with
//! their types.

use crate::suggest::closest;
use super::{ids::collapse, is_reserved, CheckError, Checker, MAX_DEPTH};
use crate::ast::{self, ExprKind as A};
use crate::ir::{Attr, Builtin, Dim, Expr, ExprKind as I, Lit, Ty};
use crate::sensitivity::Sensitivity;
use crate::source::Span;

impl Checker<'_> {
    /// An expression that must be a condition.
    pub(super) fn condition(&mut self, expr: &ast::Expr) -> Option<Expr> {
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

    /// Lowers an expression, refusing one nested deeper than
    /// [`MAX_DEPTH`] (reported once per expression).
    pub(super) fn expr(&mut self, expr: &ast::Expr) -> Option<Expr> {
        if self.depth >= MAX_DEPTH {
            if !self.too_deep {
                self.too_deep = true;
                self.error(
                    expr.span,
                    CheckError::TooDeep {
                        limit: MAX_DEPTH,
                        span: expr.span.source_span(),
                    },
                );
            }
            return None;
        }
        self.depth += 1;
        let lowered = self.lower(expr);
        self.depth -= 1;
        if self.depth == 0 {
            self.too_deep = false;
        }
        lowered
    }

    fn lower(&mut self, expr: &ast::Expr) -> Option<Expr> {
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
            A::List(items) => self.list(items, span),
            A::Name(name) => self.name(name, span),
            A::Field(..) => self.path(expr),
            A::Index(base, index) => self.index(base, index, span),
            A::Call(call) => self.call(&call.0, &call.1, span),
            A::Not(inner) => {
                let inner = self.condition(inner)?;
                make(I::Not(Box::new(inner)), Ty::Bool)
            }
            A::Has(base, fields) => self.has(base, fields, span),
            A::Until(inner) => self.until(inner, span),
            A::Quantifier(quantifier) => self.quantifier(quantifier, span),
            A::Binary(op, operands) => self.binary(*op, &operands.0, &operands.1, span),
            A::Error => None,
        }
    }

    /// `[a, b, ...]`: a list of constants.
    fn list(&mut self, items: &[ast::Expr], span: Span) -> Option<Expr> {
        let make = |kind, ty| Some(Expr { kind, ty, span });
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

    /// `base[index]`.
    fn index(&mut self, base: &ast::Expr, index: &ast::Expr, span: Span) -> Option<Expr> {
        let make = |kind, ty| Some(Expr { kind, ty, span });
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
        if self.is_data_root(base) {
            if let A::Str(key) = &index.kind {
                return self.data_key(key, index.span, span);
            }
            let key = self.expr(index)?;
            if !matches!(key.ty, Ty::Str | Ty::Any) {
                self.error(
                    index.span,
                    CheckError::BadOperand {
                        message: format!("the data file's keys are strings, not a {}", key.ty.name()),
                        span: index.span.source_span(),
                        help: None,
                    },
                );
                return None;
            }
            return make(I::DataKey(Box::new(key)), Ty::Any);
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

    /// Whether `expr` is `data`, the data file as a whole: the name
    /// `data` when no constant, bound name or data key takes it.
    pub(super) fn is_data_root(&self, expr: &ast::Expr) -> bool {
        matches!(&expr.kind, A::Name(name) if &**name == "data")
            && !self.locals.iter().any(|(n, _)| n == "data")
            && !self.consts.contains_key("data")
            && !self.data.contains_key("data")
    }

    /// `data.key`, `data["key"]`: a key of the data file named in the
    /// policy, which must be there.
    fn data_key(&mut self, key: &str, key_span: Span, span: Span) -> Option<Expr> {
        if self.data.contains_key(key) {
            return Some(Expr {
                kind: I::Data(key.into()),
                ty: Ty::Any,
                span,
            });
        }
        let help = closest(key, self.data.keys().map(String::as_str))
            .map(|c| format!("did you mean `{c}`?"))
            .or_else(|| Some("the data file is given with `--data FILE`; its keys are read as `data.KEY` or by name".to_owned()));
        self.error(
            key_span,
            CheckError::UnknownName {
                name: key.to_owned(),
                span: key_span.source_span(),
                help,
            },
        );
        None
    }

    /// `name(args...)`: a built-in function.
    fn call(&mut self, name: &ast::Ident, args: &[ast::Expr], span: Span) -> Option<Expr> {
        let make = |kind, ty| Some(Expr { kind, ty, span });
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
        let arity_ok = if builtin.variadic() {
            args.len() >= arity
        } else {
            args.len() == arity
        };
        if !arity_ok {
            self.error(
                span,
                CheckError::WrongArity {
                    name: name.name.to_string(),
                    expected: if builtin.variadic() {
                        format!("at least {arity}")
                    } else {
                        arity.to_string()
                    },
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
        if builtin == Builtin::Min {
            let ty = self.min_type(&lowered)?;
            return make(I::Call(builtin, lowered), ty);
        }
        let stringy = |t: Ty| matches!(t, Ty::Str | Ty::Any);
        let listy = |t: Ty| matches!(t, Ty::Str | Ty::Any | Ty::List | Ty::StrList);
        let expected: &[ArgCheck] = match builtin {
            Builtin::Len | Builtin::Contains => &[(listy, "a list or a string")],
            Builtin::StartsWith | Builtin::EndsWith => {
                &[(stringy, "a string"), (stringy, "a string")]
            }
            Builtin::Lower => &[(stringy, "a string")],
            Builtin::Min => &[],
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

    /// The type of `min(args...)`: durations (a number among them is a
    /// mistake the checker names), or numbers, or "any" when every argument
    /// is known only when the request arrives.
    fn min_type(&mut self, args: &[Expr]) -> Option<Ty> {
        let durations = args.iter().any(|a| a.ty == Ty::Dur);
        for arg in args {
            let fits = match arg.ty {
                Ty::Dur | Ty::Any => true,
                Ty::Num => !durations,
                _ => false,
            };
            if fits {
                continue;
            }
            let help = match arg.ty {
                Ty::Num => Some("write durations with a unit, like `15m` or `900s`".to_owned()),
                Ty::Time => Some(
                    "for the time left until a timestamp, write `until` before it".to_owned(),
                ),
                _ => None,
            };
            self.error(
                arg.span,
                CheckError::NotADuration {
                    what: "an argument of `min`",
                    ty: arg.ty.name(),
                    span: arg.span.source_span(),
                    help,
                },
            );
            return None;
        }
        Some(if durations {
            Ty::Dur
        } else if args.iter().any(|a| a.ty == Ty::Num) {
            Ty::Num
        } else {
            Ty::Any
        })
    }

    /// `until t`: a timestamp, a value known only when the request arrives
    /// (read as RFC 3339 then), or a string literal in RFC 3339.
    fn until(&mut self, inner: &ast::Expr, span: Span) -> Option<Expr> {
        let lowered = self.expr(inner)?;
        let literal = match &lowered.kind {
            I::Lit(Lit::Str(text)) => Some(text.clone()),
            _ => None,
        };
        let fits = match (&lowered.ty, &literal) {
            (Ty::Time | Ty::Any, _) => true,
            (Ty::Str, Some(text)) => crate::instant::parse_time(text).is_some(),
            _ => false,
        };
        if fits {
            return Some(Expr {
                kind: I::Until(Box::new(lowered)),
                ty: Ty::Dur,
                span,
            });
        }
        let (found, help) = match (lowered.ty, literal) {
            (_, Some(text)) => (
                format!("the string \"{text}\""),
                "write the instant in RFC 3339, like \"2026-12-31T23:59:59Z\"".to_owned(),
            ),
            (Ty::Dur, None) => (
                "a duration".to_owned(),
                "a duration is already a length of time: write it without `until`".to_owned(),
            ),
            (ty, None) => (
                format!("a {}", ty.name()),
                "`until` reads a timestamp: `environment.time` or a sum with it, a value of `context` or of the data (read as RFC 3339 when a request is decided), or a string literal in RFC 3339".to_owned(),
            ),
        };
        self.error(
            inner.span,
            CheckError::NotATime {
                found,
                span: inner.span.source_span(),
                help: Some(help),
            },
        );
        None
    }

    /// `all x in list: body`, `any x in list: body`.
    fn quantifier(&mut self, quantifier: &ast::Quantifier, span: Span) -> Option<Expr> {
        let make = |kind, ty| Some(Expr { kind, ty, span });
        let ast::Quantifier {
            all,
            var,
            list,
            body,
        } = quantifier;
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

    pub(super) fn name(&mut self, name: &str, span: Span) -> Option<Expr> {
        let make = |kind, ty| Some(Expr { kind, ty, span });
        if let Some(depth) = self.locals.iter().rposition(|(n, _)| n == name) {
            let ty = self.locals[depth].1;
            return make(I::Local(depth), ty);
        }
        if let Some(c) = self.consts.get(name) {
            let ty = c.value.ty();
            return make(I::Lit(c.value.clone()), ty);
        }
        if let Some(attr) = Attr::root(name) {
            let ty = attr.ty();
            return make(I::Attr(attr), ty);
        }
        if let Some(dim) = Dim::from_name(name) {
            let example = dim
                .fields()
                .next()
                .map_or("approval", |def| def.field)
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
        if name == "data" {
            self.error(
                span,
                CheckError::BadOperand {
                    message: "`data` is the whole data file, not a value".to_owned(),
                    span: span.source_span(),
                    help: Some("read one of its keys: `data[subject.id]`, `data.teams`".to_owned()),
                },
            );
            return None;
        }
        let mut candidates: Vec<&str> = crate::schema::roots().collect();
        candidates.extend(Sensitivity::ALL.iter().map(|level| level.as_str()));
        candidates.extend(self.consts.keys().map(String::as_str));
        candidates.extend(self.data.keys().map(String::as_str));
        candidates.extend(self.locals.iter().map(|(n, _)| n.as_str()));
        let help = if self.expect_level {
            let levels = Sensitivity::ALL.iter().map(|level| level.as_str());
            Some(match closest(name, levels) {
                Some(level) => format!("did you mean `{level}`?"),
                None => format!(
                    "`{name}` is not a sensitivity level; the levels are `public`, `internal`, `confidential` and `restricted`, lowest to highest"
                ),
            })
        } else {
            closest(name, candidates).map(|c| format!("did you mean `{c}`?"))
        };
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

    /// `dim.field...`, `data.key`, `local.field`; a free attribute is
    /// checked against the declarations and gets its declared type.
    pub(super) fn path(&mut self, expr: &ast::Expr) -> Option<Expr> {
        let Some((dim, fields)) = self.free_chain(expr) else {
            return self.path_of(expr);
        };
        // Only the whole chain's last field is checked here: the shorter
        // chains are checked (and reported) as they are lowered, on the way.
        let shorter_fails = (1..fields.len()).any(|k| !self.declared_prefix(dim, &fields, k));
        if !shorter_fails && !self.check_declared(dim, &fields, fields.len()) {
            return None;
        }
        let mut lowered = self.path_of(expr)?;
        if let Some(ty) = self.declared_ty(dim, &fields) {
            lowered.ty = ty;
        }
        Some(lowered)
    }

    fn path_of(&mut self, expr: &ast::Expr) -> Option<Expr> {
        let A::Field(base, field) = &expr.kind else {
            return self.expr(expr);
        };
        if self.is_data_root(base) {
            return self.data_key(&field.name, field.span, expr.span);
        }
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

    pub(super) fn attr(&mut self, dim: Dim, field: &ast::Ident) -> Option<Attr> {
        let name = &*field.name;
        // The known fields (`dim.fields()`) are exactly those with an
        // attribute of their own.
        let known = Attr::of(dim, name);
        if !matches!(known, Attr::Extra(..)) {
            return Some(known);
        }
        let fields = dim.fields().map(|def| def.field);
        if dim != Dim::Context && !self.is_declared(dim, name) {
            let suggestion = closest(name, fields);
            if suggestion.is_some() || dim == Dim::Requested {
                let help = match suggestion {
                    Some(s) if another_attribute(name, s) => {
                        let dim = dim.name();
                        let read = if matches!(dim, "subject" | "resource") {
                            format!("if `{name}` is an AuthZEN property, read it as `{dim}.properties.{name}` (or `{dim}[\"{name}\"]`)")
                        } else {
                            format!("to read a field named `{name}`, write `{dim}[\"{name}\"]`")
                        };
                        format!("{read}; the attribute nearest to it is `{dim}.{s}`")
                    }
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

    pub(super) fn has(
        &mut self,
        base: &ast::Expr,
        fields: &[ast::Ident],
        span: Span,
    ) -> Option<Expr> {
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
                if dim != Dim::Requested && matches!(Attr::of(dim, &fields[0].name), Attr::Extra(..)) {
                    let all: Vec<&ast::Ident> = fields.iter().collect();
                    if !self.check_declared(dim, &all, 1) {
                        return None;
                    }
                }
                let attr = self.attr(dim, &fields[0])?;
                return make(I::Has(attr, rest(1)));
            }
        }
        if let Some((dim, mut chain)) = self.free_chain(base) {
            let from = chain.len() + 1;
            chain.extend(fields.iter());
            if !self.check_declared(dim, &chain, from) {
                return None;
            }
        }
        let lowered = self.expr(base)?;
        match lowered.kind {
            I::Attr(attr) if lowered.ty == Ty::Any => make(I::Has(attr, rest(0))),
            // A value from the data, a bound name or a field of either.
            _ if lowered.ty == Ty::Any => make(I::HasIn(Box::new(lowered), rest(0))),
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
}

/// A test on an argument's type and how the expected type is named.
type ArgCheck = (fn(Ty) -> bool, &'static str);

/// Whether `written`, one or two edits from the known field `known`, more
/// likely names another attribute than misspells `known`: it extends it
/// by a word (`owner_id`, not `idd`) or is written in camel case
/// (`ownerID`), as the properties of AuthZEN requests often are.
fn another_attribute(written: &str, known: &str) -> bool {
    (written.len() >= known.len() + 2 && written.starts_with(known))
        || written.chars().any(|c| c.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_fields_are_the_attributes_of_their_own() {
        for dim in Dim::ALL {
            for def in dim.fields() {
                assert!(!matches!(Attr::of(dim, def.field), Attr::Extra(..)));
            }
            for field in ["name", "id", "kind", "time", "scope", "task", "x"] {
                let known = dim.fields().any(|def| def.field == field);
                assert_eq!(known, !matches!(Attr::of(dim, field), Attr::Extra(..)));
            }
        }
    }
}

