//! The evaluator of expressions: a rule's conditions, with three-valued
//! logic, and the templates of grants, obligations and `because` messages.
//! It knows nothing of decisions; the authorizer (`crate::authorize`)
//! uses it, never the other way round.
//!
//! Errors are values here. `and` is false when either side is false (even if
//! the other errs) and `or` is true when either side is true; otherwise an
//! error propagates. This makes the result independent of operand order,
//! which is what lets the tree skip rules without changing any decision.

mod error;
mod value;

use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

pub use error::EvalError;
pub(crate) use value::says_nothing;
pub use value::{attr_value, to_json, Val};

use crate::ast::BinOp;
use crate::ir::{Attr, Expr, ExprKind, Lit, Rule, Template, TemplatePart};
use crate::request::{Prepared, Request};
use crate::schema::Field;
use crate::scope::ScopeItem;
use crate::source::Span;
use value::{
    add, call, contains, duration, equal, format_time, found, from_json, from_lit, instant_text,
    list_iter, multiply, order, type_name, until, Res,
};

/// How deep the evaluator follows nested expressions before it stops with
/// [`Box::new(EvalError::TooDeep)`]. The parser's limits (64 levels of brackets, 512
/// operators in a condition) keep written policies far below it; this
/// guard is for the paths around them (constants inlined into constants,
/// an IR built by hand), so that no input can overflow the stack. Measured
/// on x86-64, a level of `not` takes about 0.5 KiB of stack in a release
/// build (2.7 KiB unoptimised), so the limit fits a 2 MiB thread (tokio's
/// workers) with room to spare.
pub const MAX_DEPTH: usize = 1024;

/// An expression whose value is a bool or an error, taken apart for
/// [`Evaluator::truth`].
enum Logical<'a> {
    /// `and` or `or`, with its operands.
    Connective(BinOp, &'a Expr, &'a Expr),
    /// `not`, with its operand.
    Not(&'a Expr),
    /// `has`: the attribute and the fields below it.
    Has(&'a Attr, &'a [Box<str>]),
}

/// How a rule's condition fared.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleResult {
    /// Every conjunct held.
    True,
    /// The conjunct at this index was false (a false one wins over errors).
    False(usize),
    /// No conjunct was false and one erred: the first error.
    Error(Box<EvalError>),
}

/// What a template is filled for, which decides the hole values it
/// refuses.
#[derive(Debug, Clone, Copy)]
pub enum Fill {
    /// A `because` message: any value.
    Text,
    /// A grant or a `limit scope` pattern: no value that is empty or holds
    /// a `*` (the item is parsed afterwards, which refuses the rest).
    ScopeItem,
    /// An obligation's value, of the kind named: no value that is blank,
    /// holds a `*` or a percent-encoded `.`, `/` or `%`.
    Obligation(&'static str),
}

/// Evaluates expressions against one request and the policy's data.
pub struct Evaluator<'a> {
    request: &'a Request,
    prepared: &'a Prepared,
    data: &'a IndexMap<String, Value>,
    /// The values bound by the quantifiers being evaluated, innermost last.
    locals: Vec<Val<'a>>,
    /// How many `eval` calls are open.
    depth: usize,
}

impl<'a> Evaluator<'a> {
    /// An evaluator for `request` (validated into `prepared`) and `data`.
    pub fn new(
        request: &'a Request,
        prepared: &'a Prepared,
        data: &'a IndexMap<String, Value>,
    ) -> Evaluator<'a> {
        Evaluator {
            request,
            prepared,
            data,
            locals: Vec::new(),
            depth: 0,
        }
    }

    /// The value of an expression.
    pub fn eval(&mut self, expr: &'a Expr) -> Res<Val<'a>> {
        if self.depth >= MAX_DEPTH {
            return Err(Box::new(EvalError::TooDeep {
                limit: MAX_DEPTH,
                span: expr.span,
            }));
        }
        self.depth += 1;
        let result = self.eval_node(expr);
        self.depth -= 1;
        result
    }

    fn eval_node(&mut self, expr: &'a Expr) -> Res<Val<'a>> {
        let span = expr.span;
        match &expr.kind {
            ExprKind::Lit(lit) => from_lit(lit).ok_or_else(|| Box::new(EvalError::Null { span })),
            ExprKind::Attr(attr) => match attr_value(self.request, self.prepared, attr) {
                Some(value) => Ok(value),
                None => Err(self.missing(attr, span)),
            },
            ExprKind::Local(depth) => self
                .locals
                .get(*depth)
                .cloned()
                .ok_or_else(|| Box::new(EvalError::Unbound { span })),
            ExprKind::Data(key) => match self.data.get(&**key) {
                Some(value) => from_json(value).ok_or_else(|| Box::new(EvalError::Null { span })),
                None => Err(Box::new(EvalError::DataMissing {
                    key: key.clone(),
                    span,
                })),
            },
            ExprKind::Field(base, name) => self.field(base, name, span),
            ExprKind::Index(base, index) => self.index(base, index, span),
            // The arguments left to right, the first error first; one or
            // two (every builtin but `min`) without a vector.
            ExprKind::Call(builtin, args) => match &args[..] {
                [only] => {
                    let only = self.eval(only)?;
                    call(*builtin, std::slice::from_ref(&only), span)
                }
                [first, second] => {
                    let first = self.eval(first)?;
                    let second = self.eval(second)?;
                    call(*builtin, &[first, second], span)
                }
                _ => {
                    let mut values = Vec::with_capacity(args.len());
                    for arg in args {
                        values.push(self.eval(arg)?);
                    }
                    call(*builtin, &values, span)
                }
            },
            ExprKind::Not(inner) => self.not(inner, span).map(Val::Bool),
            ExprKind::Matches(inner, glob) => match self.eval(inner)? {
                Val::Str(s) => Ok(Val::Bool(glob.is_match(&s))),
                other => Err(Box::new(EvalError::Operand {
                    op: "matches",
                    needs: "a string",
                    found: found(&other),
                    span,
                })),
            },
            ExprKind::Has(attr, rest) => Ok(Val::Bool(self.has(attr, rest))),
            ExprKind::HasIn(base, rest) => Ok(Val::Bool(match self.eval(base) {
                Ok(value) => present(value, rest),
                Err(_) => false,
            })),
            ExprKind::DataKey(key) => match self.eval(key)? {
                Val::Str(key) => match self.data.get(&*key) {
                    Some(value) => {
                        from_json(value).ok_or_else(|| Box::new(EvalError::Null { span }))
                    }
                    None => Err(Box::new(EvalError::KeyMissing {
                        key: key.to_string(),
                        span,
                    })),
                },
                other => Err(Box::new(EvalError::BadIndex {
                    ty: "data",
                    index: found(&other),
                    span,
                })),
            },
            ExprKind::Until(target) => {
                let target = self.eval(target)?;
                Ok(Val::Dur(until(self.now(span)?, &target, span)?))
            }
            ExprKind::Quantifier { all, list, body } => self.quantifier(*all, list, body, span),
            ExprKind::Binary(op, left, right) => self.binary(*op, left, right, span),
        }
    }

    /// The error of reading `attr`, which the request lacks: its path and
    /// name, the message written only if the error is shown.
    fn missing(&self, attr: &'a Attr, span: Span) -> Box<EvalError> {
        match attr {
            Attr::Extra(dim, name) => EvalError::missing(dim.name(), Some(Arc::clone(name)), span),
            known => EvalError::missing(known.def().map_or("", |def| def.path), None, span),
        }
    }

    fn field(&mut self, base: &'a Expr, name: &'a str, span: Span) -> Res<Val<'a>> {
        match self.eval(base)? {
            Val::Json(Value::Object(map)) => match map.get(name) {
                Some(value) => from_json(value).ok_or_else(|| Box::new(EvalError::Null { span })),
                None => Err(Box::new(EvalError::FieldMissing {
                    field: name.into(),
                    span,
                })),
            },
            other => Err(Box::new(EvalError::NoFields {
                ty: type_name(&other),
                field: name.into(),
                span,
            })),
        }
    }

    fn index(&mut self, base: &'a Expr, index: &'a Expr, span: Span) -> Res<Val<'a>> {
        let base = self.eval(base)?;
        let index = self.eval(index)?;
        match (&base, &index) {
            (Val::Json(Value::Object(map)), Val::Str(key)) => match map.get(&**key) {
                Some(value) => from_json(value).ok_or_else(|| Box::new(EvalError::Null { span })),
                None => Err(Box::new(EvalError::KeyMissing {
                    key: key.to_string(),
                    span,
                })),
            },
            (_, Val::Num(n)) if n.fract() == 0.0 && *n >= 0.0 => {
                let mut items = list_iter(&base).ok_or_else(|| {
                    Box::new(EvalError::NotIndexable {
                        ty: type_name(&base),
                        span,
                    })
                })?;
                items
                    .nth(*n as usize)
                    .ok_or_else(|| Box::new(EvalError::OutOfRange { index: *n, span }))
            }
            _ => Err(Box::new(EvalError::BadIndex {
                ty: type_name(&base),
                index: found(&index),
                span,
            })),
        }
    }

    fn quantifier(
        &mut self,
        all: bool,
        list: &'a Expr,
        body: &'a Expr,
        span: Span,
    ) -> Res<Val<'a>> {
        let list = self.eval(list)?;
        let items = list_iter(&list).ok_or_else(|| {
            Box::new(EvalError::OperandType {
                op: if all { "all" } else { "any" },
                needs: "a list",
                ty: type_name(&list),
                span,
            })
        })?;
        let mut error = None;
        for item in items {
            self.locals.push(item);
            let result = self.truth(body);
            self.locals.pop();
            match result {
                Ok(b) if b != all => return Ok(Val::Bool(b)),
                Ok(_) => {}
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(Val::Bool(all)),
        }
    }

    /// The decision time, `environment.time`: never the clock, so the
    /// same request decides the same at any hour.
    fn now(&self, span: Span) -> Res<i128> {
        self.prepared
            .time
            .ok_or_else(|| EvalError::missing("environment.time", None, span))
    }

    /// A computed TTL cap (`limit ttl EXPR`): the cap in seconds and how
    /// it was worked out, for the trace (`min(900, until
    /// 2026-12-01T00:00:00Z)`). A value that is not a duration is an error.
    pub fn ttl_cap(&mut self, expr: &'a Expr) -> Res<(u64, String)> {
        let value = self.eval(expr)?;
        let seconds = duration(&value, expr.span)?;
        let mut how = String::new();
        self.describe(expr, &mut how);
        Ok((seconds, how))
    }

    /// Writes how a duration expression worked out: `min` and `until` as
    /// written, with the instant `until` read; anything else as its value
    /// in seconds. Only called once the whole expression evaluated.
    fn describe(&mut self, expr: &'a Expr, out: &mut String) {
        match &expr.kind {
            ExprKind::Call(crate::ir::Builtin::Min, args) => {
                out.push_str("min(");
                for (i, arg) in args.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    self.describe(arg, out);
                }
                out.push(')');
            }
            ExprKind::Until(target) => {
                out.push_str("until ");
                match self.eval(target).ok().as_ref().and_then(instant_text) {
                    Some(text) => out.push_str(&text),
                    None => out.push('?'),
                }
            }
            _ => match self.eval(expr) {
                Ok(value) => match duration(&value, expr.span) {
                    Ok(seconds) => out.push_str(&seconds.to_string()),
                    Err(_) => out.push_str(&to_json(&value).to_string()),
                },
                Err(_) => out.push('?'),
            },
        }
    }

    /// An expression that must be a bool.
    pub fn truth(&mut self, expr: &'a Expr) -> Res<bool> {
        // `and`, `or`, `not` and `has` are a bool or an error: decided here
        // without a value in between, behind the same depth guard as
        // `eval`, so the answer and the error are the ones `eval` gives.
        let logical = match &expr.kind {
            ExprKind::Binary(op @ (BinOp::And | BinOp::Or), left, right) => {
                Some(Logical::Connective(*op, left, right))
            }
            ExprKind::Not(inner) => Some(Logical::Not(inner)),
            ExprKind::Has(attr, rest) => Some(Logical::Has(attr, rest)),
            _ => None,
        };
        if let Some(logical) = logical {
            if self.depth >= MAX_DEPTH {
                return Err(Box::new(EvalError::TooDeep {
                    limit: MAX_DEPTH,
                    span: expr.span,
                }));
            }
            self.depth += 1;
            let result = match logical {
                Logical::Connective(op, left, right) => self.connective(op, left, right),
                Logical::Not(inner) => self.not(inner, expr.span),
                Logical::Has(attr, rest) => Ok(self.has(attr, rest)),
            };
            self.depth -= 1;
            return result;
        }
        // The quick path answers none of those four (it takes only the
        // comparisons and `in` of an attribute), so trying it second
        // changes no answer and spares the connectives the attempt.
        if let Some(answer) = self.quick_truth(expr) {
            return answer;
        }
        match self.eval(expr)? {
            Val::Bool(b) => Ok(b),
            other => Err(Box::new(EvalError::NotBool {
                found: found(&other),
                span: expr.span,
            })),
        }
    }

    /// The commonest tests, an attribute against a constant or another
    /// attribute, with no intermediate values and none of `eval`'s
    /// bookkeeping; `None` sends anything else down the general path, and
    /// so does a comparison that errs (evaluation has no side effects, so
    /// the general path gives the error the condition has). A comparison
    /// or `in` of a missing attribute with a constant is answered with the
    /// attribute's error here: the general path evaluates the left side
    /// first, so that is its error too (unless the depth guard stops it
    /// first, which is left to the general path).
    fn quick_truth(&mut self, expr: &'a Expr) -> Option<Res<bool>> {
        let ExprKind::Binary(op, left, right) = &expr.kind else {
            return None;
        };
        let comparison = matches!(
            op,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge
        );
        match (&left.kind, &right.kind) {
            (ExprKind::Attr(attr), ExprKind::Lit(constant)) => {
                if let Some(answer) = named_test(self.request, attr, *op, constant) {
                    return Some(Ok(answer));
                }
                let Some(value) = attr_value(self.request, self.prepared, attr) else {
                    let errs_first = (comparison || matches!(op, BinOp::In | BinOp::NotIn))
                        && self.depth + 1 < MAX_DEPTH;
                    return errs_first.then(|| Err(self.missing(attr, left.span)));
                };
                match (op, &value, constant) {
                    (BinOp::Eq | BinOp::Ne, Val::Str(value), Lit::Str(constant)) => {
                        Some(Ok((**value == **constant) == (*op == BinOp::Eq)))
                    }
                    (BinOp::Eq | BinOp::Ne, Val::Bool(value), Lit::Bool(constant)) => {
                        Some(Ok((*value == *constant) == (*op == BinOp::Eq)))
                    }
                    (BinOp::In | BinOp::NotIn, Val::Str(value), Lit::List(items)) => {
                        listed(value, *op, items).map(Ok)
                    }
                    _ => compared(*op, &value, &from_lit(constant)?, expr.span).map(Ok),
                }
            }
            (ExprKind::Attr(left), ExprKind::Attr(right)) if comparison => compared(
                *op,
                &attr_value(self.request, self.prepared, left)?,
                &attr_value(self.request, self.prepared, right)?,
                expr.span,
            )
            .map(Ok),
            (ExprKind::Lit(constant), ExprKind::Attr(attr)) if comparison => compared(
                *op,
                &from_lit(constant)?,
                &attr_value(self.request, self.prepared, attr)?,
                expr.span,
            )
            .map(Ok),
            _ => None,
        }
    }

    fn has(&self, attr: &Attr, rest: &'a [Box<str>]) -> bool {
        match attr_value(self.request, self.prepared, attr) {
            Some(value) => present(value, rest),
            None => false,
        }
    }

    /// `not inner`: an error unless `inner` is a bool.
    fn not(&mut self, inner: &'a Expr, span: Span) -> Res<bool> {
        // Those that are a bool or an error need no value in between.
        if let ExprKind::Binary(BinOp::And | BinOp::Or, ..) | ExprKind::Not(_) | ExprKind::Has(..) =
            &inner.kind
        {
            return self.truth(inner).map(|b| !b);
        }
        match self.eval(inner)? {
            Val::Bool(b) => Ok(!b),
            other => Err(Box::new(EvalError::Operand {
                op: "not",
                needs: "a bool",
                found: found(&other),
                span,
            })),
        }
    }

    /// `left and right` or `left or right` (`op`), in three-valued logic:
    /// the dominant answer (false for `and`, true for `or`) on either side
    /// wins over an error on the other.
    fn connective(&mut self, op: BinOp, left: &'a Expr, right: &'a Expr) -> Res<bool> {
        let dominant = op == BinOp::Or;
        let l = self.truth(left);
        if matches!(l, Ok(b) if b == dominant) {
            return Ok(dominant);
        }
        let r = self.truth(right);
        if matches!(r, Ok(b) if b == dominant) {
            return Ok(dominant);
        }
        l?;
        r?;
        Ok(!dominant)
    }

    fn binary(&mut self, op: BinOp, left: &'a Expr, right: &'a Expr, span: Span) -> Res<Val<'a>> {
        if let BinOp::And | BinOp::Or = op {
            return self.connective(op, left, right).map(Val::Bool);
        }
        let l = self.eval(left)?;
        let r = self.eval(right)?;
        Ok(match op {
            BinOp::Eq => Val::Bool(equal(&l, &r, span)?),
            BinOp::Ne => Val::Bool(!equal(&l, &r, span)?),
            BinOp::Lt => Val::Bool(order(&l, &r, span)? == Ordering::Less),
            BinOp::Le => Val::Bool(order(&l, &r, span)? != Ordering::Greater),
            BinOp::Gt => Val::Bool(order(&l, &r, span)? == Ordering::Greater),
            BinOp::Ge => Val::Bool(order(&l, &r, span)? != Ordering::Less),
            BinOp::In => Val::Bool(contains(&r, &l, span)?),
            BinOp::NotIn => Val::Bool(!contains(&r, &l, span)?),
            BinOp::Add => add(&l, &r, span)?,
            BinOp::Mul => multiply(&l, &r, span)?,
            BinOp::Matches | BinOp::And | BinOp::Or => {
                return Err(Box::new(EvalError::Unsupported { span }))
            }
        })
    }

    /// Evaluates a rule's conjuncts: the first false one wins over errors.
    pub fn rule(&mut self, rule: &'a Rule) -> RuleResult {
        self.rule_known(rule, 0)
    }

    /// As [`Evaluator::rule`], skipping the conjuncts known to be true
    /// (bit `i` of `known` for conjunct `i`, the first 32, as the decision tree's walk
    /// proves them: [`crate::compile::Tree::candidates_proven`]). A true
    /// conjunct is neither the first false one nor an error, and evaluating
    /// has no side effects, so the result is the same as
    /// [`Evaluator::rule`]'s.
    pub fn rule_known(&mut self, rule: &'a Rule, known: u32) -> RuleResult {
        let mut error = None;
        for (index, conjunct) in rule.conjuncts.iter().enumerate() {
            if index < 32 && known & (1 << index) != 0 {
                continue;
            }
            match self.truth(conjunct) {
                Ok(true) => {}
                Ok(false) => return RuleResult::False(index),
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        match error {
            Some(e) => RuleResult::Error(e),
            None => RuleResult::True,
        }
    }

    /// The value a failed conjunct saw: its attribute side (`null` when it
    /// cannot be evaluated).
    ///
    /// `conjunct` must be one that [`Evaluator::rule`] found false (what the
    /// trace asks about): then some answers are known without evaluating
    /// anything again. A conjunct that is not a comparison was the bool
    /// `false`; the operand of a false `not` was `true`; both sides of a
    /// false `or` were `false` (an error on either side would have made it
    /// an error, a `true` would have made it true). Evaluation has no side
    /// effects, so these are the values evaluating again would give.
    pub fn saw(&mut self, conjunct: &'a Expr) -> Value {
        if let Some(known) = saw_bool(conjunct) {
            return Value::Bool(known);
        }
        let Some(target) = saw_target(conjunct) else {
            return Value::Bool(false);
        };
        // An attribute, the commonest, is read directly: what `eval` gives
        // without its bookkeeping (a missing one is `null` either way).
        if let (ExprKind::Attr(attr), true) = (&target.kind, self.depth < MAX_DEPTH) {
            return match attr_value(self.request, self.prepared, attr) {
                Some(v) => to_json(&v),
                None => Value::Null,
            };
        }
        match self.eval(target) {
            Ok(v) => to_json(&v),
            Err(_) => Value::Null,
        }
    }

    /// Builds scope items from templates; the first that fails fails all.
    pub fn scope_items(&mut self, templates: &'a [Template]) -> Res<Vec<ScopeItem>> {
        // Room for the first template filled, as `template` makes.
        let room = templates.first().map_or(0, |t| t.source.len() + 48);
        self.scope_items_in(templates, &mut String::with_capacity(room))
    }

    /// [`Evaluator::scope_items`], each template filled into `text`
    /// (emptied first) instead of a string of its own: a caller that keeps
    /// `text` from one decision to the next spares an allocation a
    /// template.
    pub fn scope_items_in(
        &mut self,
        templates: &'a [Template],
        text: &mut String,
    ) -> Res<Vec<ScopeItem>> {
        let mut items = Vec::with_capacity(templates.len());
        for t in templates {
            text.clear();
            self.template_into(t, Fill::ScopeItem, text)?;
            // A grant nearly always names what was requested: an item
            // is what its text parses to, so a requested item of the
            // same text (validation parsed it) is that item.
            if let Some(item) = self.prepared.scope.iter().find(|i| i.as_str() == text.as_str()) {
                items.push(item.clone());
                continue;
            }
            let item = ScopeItem::parse(text).map_err(|error| {
                Box::new(EvalError::ScopeItem {
                    error,
                    span: t.span,
                })
            })?;
            items.push(item);
        }
        Ok(items)
    }

    /// Fills an obligation's template, refusing what a broker could read
    /// as "any" or "nothing": a hole value that is empty, blank, holds a
    /// `*` or a percent-encoded `.`, `/` or `%`, and a whole value that is
    /// empty, blank, `*` or `**`.
    pub fn obligation_value(&mut self, kind: &'static str, template: &'a Template) -> Res<String> {
        let value = self.template(template, Fill::Obligation(kind))?;
        let trimmed = value.trim();
        if trimmed.is_empty() || trimmed == "*" || trimmed == "**" {
            return Err(Box::new(EvalError::BlankObligation {
                kind,
                value,
                template: template.source.clone(),
                span: template.span,
            }));
        }
        Ok(value)
    }

    /// Fills a template's holes.
    pub fn template(&mut self, template: &'a Template, fill: Fill) -> Res<String> {
        let mut out = String::with_capacity(template.source.len() + 48);
        self.template_into(template, fill, &mut out)?;
        Ok(out)
    }

    /// Fills a template's holes, appending to `out`.
    fn template_into(&mut self, template: &'a Template, fill: Fill, out: &mut String) -> Res<()> {
        for part in &template.parts {
            match part {
                TemplatePart::Text(text) => out.push_str(text),
                TemplatePart::Hole(expr) => {
                    let value = self.eval(expr)?;
                    let text = hole_text(&value, template)?;
                    if refused(&text, fill) {
                        return Err(Box::new(EvalError::Widens {
                            value: text.into_owned(),
                            what: match fill {
                                Fill::Obligation(kind) => kind,
                                _ => "scope item",
                            },
                            template: template.source.clone(),
                            span: template.span,
                        }));
                    }
                    out.push_str(&text);
                }
            }
        }
        Ok(())
    }
}

/// The bool a false conjunct saw when it is known without evaluating
/// anything ([`Evaluator::saw`] says why): `false` for an `or` and for a
/// conjunct that is not a comparison, `in`, `matches` or `not`; `true`
/// for a `not`. `None` when the value its attribute side holds must be
/// read.
pub fn saw_bool(conjunct: &Expr) -> Option<bool> {
    match &conjunct.kind {
        ExprKind::Binary(BinOp::Or, _, _) => Some(false),
        ExprKind::Binary(..) | ExprKind::Matches(..) => None,
        ExprKind::Not(_) => Some(true),
        _ => Some(false),
    }
}

/// The side of a comparison or `matches` whose value [`Evaluator::saw`]
/// reads (the one that is not a constant); `None` for other conjuncts.
fn saw_target(conjunct: &Expr) -> Option<&Expr> {
    match &conjunct.kind {
        ExprKind::Binary(_, left, right) => Some(if matches!(left.kind, ExprKind::Lit(_)) {
            right
        } else {
            left
        }),
        ExprKind::Matches(inner, _) => Some(inner),
        _ => None,
    }
}

/// The attribute a false conjunct's [`Evaluator::saw`] reads as it is,
/// when its value must be read ([`saw_bool`] is `None`) and that side is
/// an attribute: two such conjuncts on one attribute saw the same value.
pub fn saw_attr(conjunct: &Expr) -> Option<&Attr> {
    if saw_bool(conjunct).is_some() {
        return None;
    }
    match &saw_target(conjunct)?.kind {
        ExprKind::Attr(attr) => Some(attr),
        _ => None,
    }
}

/// `left op right` for an equality or an order, as [`Evaluator::binary`]
/// works it out; `None` for another operator or when the comparison errs.
fn compared(op: BinOp, left: &Val<'_>, right: &Val<'_>, span: Span) -> Option<bool> {
    match op {
        BinOp::Eq => equal(left, right, span).ok(),
        BinOp::Ne => equal(left, right, span).ok().map(|b| !b),
        BinOp::Lt => order(left, right, span).ok().map(|o| o == Ordering::Less),
        BinOp::Le => order(left, right, span).ok().map(|o| o != Ordering::Greater),
        BinOp::Gt => order(left, right, span).ok().map(|o| o == Ordering::Greater),
        BinOp::Ge => order(left, right, span).ok().map(|o| o != Ordering::Less),
        _ => None,
    }
}

/// `value in items` (`op` `in`) or `value not in items` (`not in`) for a
/// list of string constants; `None` when an element of another type
/// would make a miss an error (the general path says which).
fn listed(value: &str, op: BinOp, items: &[Lit]) -> Option<bool> {
    let mut other_type = false;
    let found = items.iter().any(|item| match item {
        Lit::Str(s) => **s == *value,
        _ => {
            other_type = true;
            false
        }
    });
    (found || !other_type).then_some(found == (op == BinOp::In))
}

/// A string or bool attribute of the request's table (not a free one, nor
/// the time, which validation parses) tested against a constant with
/// `==`, `!=`, `in` or `not in`, read straight from the request without a
/// [`Val`] in between: the answer [`Evaluator::quick_truth`] would give
/// through [`attr_value`], which reads these the same way. `None` for
/// anything else, a missing value included.
#[inline]
fn named_test(request: &Request, attr: &Attr, op: BinOp, constant: &Lit) -> Option<bool> {
    if matches!(attr, Attr::Extra(..) | Attr::EnvironmentTime) {
        return None;
    }
    match (op, attr.field(request)?, constant) {
        (BinOp::Eq | BinOp::Ne, Field::Str(value), Lit::Str(constant)) => {
            Some((value == &**constant) == (op == BinOp::Eq))
        }
        (BinOp::Eq | BinOp::Ne, Field::Bool(value), Lit::Bool(constant)) => {
            Some((value == *constant) == (op == BinOp::Eq))
        }
        (BinOp::In | BinOp::NotIn, Field::Str(value), Lit::List(items)) => {
            listed(value, op, items)
        }
        _ => None,
    }
}

/// A hole's value as text; strings, the commonest, are borrowed.
fn hole_text<'v>(value: &'v Val<'_>, template: &Template) -> Res<Cow<'v, str>> {
    Ok(match value {
        Val::Str(s) => Cow::Borrowed(s),
        Val::Num(n) => Cow::Owned(n.to_string()),
        Val::Dur(d) => Cow::Owned(d.to_string()),
        Val::Level(l) => Cow::Borrowed(l.as_str()),
        Val::Time(t) => Cow::Owned(format_time(*t)),
        Val::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        other => {
            return Err(Box::new(EvalError::HoleType {
                ty: type_name(other),
                template: template.source.clone(),
                span: template.span,
            }))
        }
    })
}

/// True when a hole's text would widen or break what `fill` builds.
fn refused(text: &str, fill: Fill) -> bool {
    match fill {
        Fill::Text => false,
        Fill::ScopeItem => text.contains('*') || text.is_empty(),
        Fill::Obligation(_) => {
            let bytes = text.as_bytes();
            // A value that starts with printable ASCII is not blank: `trim`
            // keeps that byte.
            let blank = match bytes.first() {
                Some(b) if b.is_ascii_graphic() => false,
                _ => text.trim().is_empty(),
            };
            blank
                || bytes.contains(&b'*')
                || (bytes.contains(&b'%') && crate::scope::percent_encoded(text).is_some())
        }
    }
}

#[cfg(test)]
mod tests;

/// Whether `value` holds `rest` field by field and the last one says
/// something (`has`).
fn present(mut value: Val<'_>, rest: &[Box<str>]) -> bool {
    for field in rest {
        match value {
            Val::Json(Value::Object(map)) => match map.get(&**field).and_then(from_json) {
                Some(next) => value = next,
                None => return false,
            },
            _ => return false,
        }
    }
    !says_nothing(&value)
}
