//! Constants, rules and their parts (grants, limits, obligations), and the
//! search for conditions that can never hold.

use std::borrow::Cow;

use indexmap::IndexMap;
use serde_json::Value;

use super::ids::{condition_text, generated_id};
use super::{flatten_and, is_reserved, CheckError, Checker, Const};
use crate::ast::{self, ExprKind as A};
use crate::ir::{
    Attr, Expr, ExprKind as I, Lit, Obligation, Rule, RuleKind, Template, TemplatePart, TtlCap,
    Ty,
};
use crate::name::Name;
use crate::sensitivity::Sensitivity;
use crate::source::Span;

impl Checker<'_> {
    pub(super) fn constant(&mut self, decl: &ast::ConstDecl) {
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

    pub(super) fn rule(&mut self, rule: &ast::Rule) -> Option<Rule> {
        let mut ok = true;
        let (id, annotations) = self.annotations(rule, &mut ok);
        let conjuncts = self.conjuncts(rule, &mut ok);
        let conjunct_text: Vec<Name> = conjuncts
            .iter()
            .map(|c: &Expr| self.condition_text(c.span))
            .collect();
        if ok {
            self.contradictions(&conjuncts, rule);
        }
        let grant_span = match &rule.kind {
            ast::RuleKind::Permit {
                grant: Some(grant), ..
            } => Some(grant.span),
            _ => None,
        };
        let kind = self.rule_kind(&rule.kind, &mut ok)?;
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
            keyword_span: rule.keyword_span,
            condition_span: rule.condition.as_ref().map(|c| c.span),
            grant_span,
            trace_json: Default::default(),
        })
    }

    /// The text a trace shows for the condition written at `span`, shared
    /// with every conjunct written the same way.
    fn condition_text(&mut self, span: Span) -> Name {
        let sources = self.sources;
        let written = sources.slice(span);
        if let Some(text) = self.condition_texts.get(written) {
            return text.clone();
        }
        let text = Name::from(&*condition_text(written));
        self.condition_texts.insert(written, text.clone());
        text
    }

    /// The rule's `@id`, if valid, and its other annotations by name.
    /// Clears `ok` on a bad `@id`.
    fn annotations(
        &mut self,
        rule: &ast::Rule,
        ok: &mut bool,
    ) -> (Option<Name>, IndexMap<String, Vec<String>>) {
        let mut id: Option<Name> = None;
        let mut annotations: IndexMap<String, Vec<String>> = IndexMap::new();
        for annotation in &rule.annotations {
            let name = &*annotation.name.name;
            let args = &annotation.args;
            if name != "id" {
                annotations
                    .entry(name.to_owned())
                    .or_default()
                    .extend(args.iter().map(|a| a.value.clone()));
                continue;
            }
            let valid = args.len() == 1
                && !args[0].value.is_empty()
                && args[0]
                    .value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c));
            if valid && id.is_none() {
                id = Some(Name::from(args[0].value.as_str()));
                continue;
            }
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
            *ok = false;
        }
        (id, annotations)
    }

    /// The condition's top-level conjuncts, lowered; clears `ok` when one
    /// does not check.
    fn conjuncts(&mut self, rule: &ast::Rule, ok: &mut bool) -> Vec<Expr> {
        let mut conjuncts = Vec::new();
        if let Some(condition) = &rule.condition {
            let mut parts = Vec::with_capacity(8);
            flatten_and(condition, &mut parts);
            conjuncts.reserve_exact(parts.len());
            for part in parts {
                match self.condition(part) {
                    Some(expr) => conjuncts.push(expr),
                    None => *ok = false,
                }
            }
        }
        conjuncts
    }

    /// Templates for a grant or a scope limit; clears `ok` on a bad one.
    fn templates(&mut self, items: Vec<(Cow<'_, str>, Span)>, ok: &mut bool) -> Vec<Template> {
        let mut templates = Vec::new();
        for (text, span) in items {
            match self.template(&text, span, true) {
                Some(t) => templates.push(t),
                None => *ok = false,
            }
        }
        templates
    }

    /// What the rule does. `None` when a limit or a required obligation
    /// does not check (the rule is dropped there, as nothing else in it
    /// can be checked usefully); other faults clear `ok`.
    fn rule_kind(&mut self, kind: &ast::RuleKind, ok: &mut bool) -> Option<RuleKind> {
        Some(match kind {
            ast::RuleKind::Permit { grant, obligations } => {
                let mut templates = Vec::new();
                let mut ttl = None;
                if let Some(grant) = grant {
                    match self.string_list(&grant.items, "a grant") {
                        Some(items) => templates = self.templates(items, ok),
                        None => *ok = false,
                    }
                    if let Some(expr) = &grant.ttl {
                        ttl = self.duration(expr, "a grant's TTL");
                        *ok &= ttl.is_some();
                    }
                }
                let mut lowered = Vec::new();
                for obligation in obligations {
                    match self.obligation(obligation) {
                        Some(o) => lowered.push(o),
                        None => *ok = false,
                    }
                }
                RuleKind::Permit {
                    grant: templates,
                    ttl,
                    obligations: lowered,
                }
            }
            ast::RuleKind::Forbid => RuleKind::Forbid,
            ast::RuleKind::LimitTtl(expr) => RuleKind::LimitTtl(self.ttl_cap(expr)?),
            ast::RuleKind::LimitScope(expr) => {
                let items = self.string_list(expr, "a scope limit")?;
                RuleKind::LimitScope(self.templates(items, ok))
            }
            ast::RuleKind::Require(obligation) => RuleKind::Require(self.obligation(obligation)?),
        })
    }

    /// The shared string for a rule kind's name.
    pub(super) fn kind_name(&mut self, name: &'static str) -> Name {
        if let Some(shared) = self.kind_names.iter().find(|n| n.as_str() == name) {
            return shared.clone();
        }
        let shared = Name::from(name);
        self.kind_names.push(shared.clone());
        shared
    }

    pub(super) fn obligation(&mut self, obligation: &ast::Obligation) -> Option<Obligation> {
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
    pub(super) fn string_list<'a>(
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

    /// A grant's `for`: a constant duration.
    pub(super) fn duration(&mut self, expr: &ast::Expr, what: &'static str) -> Option<u64> {
        let lowered = self.expr(expr)?;
        if let Some(seconds) = fold_duration(&lowered) {
            return Some(seconds);
        }
        match lowered.kind {
            _ if !matches!(lowered.ty, Ty::Dur | Ty::Any) => {
                self.not_a_duration(what, &lowered);
                None
            }
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

    /// A `limit ttl` cap: a constant duration, or an expression of type
    /// duration (or known only when the request arrives) computed for each
    /// request.
    fn ttl_cap(&mut self, expr: &ast::Expr) -> Option<TtlCap> {
        let lowered = self.expr(expr)?;
        if let Some(seconds) = fold_duration(&lowered) {
            return Some(TtlCap::Const(seconds));
        }
        match lowered.ty {
            Ty::Dur | Ty::Any => Some(TtlCap::Computed(lowered)),
            _ => {
                self.not_a_duration("a TTL limit", &lowered);
                None
            }
        }
    }

    /// Reports a value of another type where a duration is needed, with
    /// the likely fix.
    fn not_a_duration(&mut self, what: &'static str, found: &Expr) {
        let text = match &found.kind {
            I::Lit(Lit::Str(text)) => Some(&**text),
            _ => None,
        };
        let help = match (found.ty, text) {
            (Ty::Num, _) => Some("write durations with a unit, like `15m` or `900s`".to_owned()),
            (Ty::Time, _) => Some(format!(
                "for the time left until this timestamp, write `until {}`",
                collapse_ws(self.sources.slice(found.span))
            )),
            (_, Some(text)) if crate::instant::parse_time(text).is_some() => Some(format!(
                "for the time left until this instant, write `until \"{text}\"`"
            )),
            (_, Some(text)) if lit_from_json(&Value::String(text.to_owned()), &Lit::Dur(0)).is_some() => {
                Some(format!("write the duration without quotes: `{text}`"))
            }
            _ => None,
        };
        self.error(
            found.span,
            CheckError::NotADuration {
                what,
                ty: found.ty.name(),
                span: found.span.source_span(),
                help,
            },
        );
    }

    /// Reports rules whose head tests on one attribute cannot all hold.
    pub(super) fn contradictions(&mut self, conjuncts: &[Expr], rule: &ast::Rule) {
        // A rule tests few attributes: its head tests in order, their
        // values in one list (one allocation a rule, not one a test).
        let mut values: Vec<&str> = Vec::with_capacity(2 * conjuncts.len());
        let mut tests: Vec<(&Attr, std::ops::Range<usize>)> = Vec::with_capacity(conjuncts.len());
        for conjunct in conjuncts {
            let start = values.len();
            if let Some(attr) = crate::allowed::head_test_into(conjunct, &mut values) {
                tests.push((attr, start..values.len()));
            }
        }
        // The first attribute (in first-seen order) whose tests together
        // allow no value: none of its first test's values is in every
        // later test of it.
        let empty = tests.iter().enumerate().find_map(|(at, (attr, first))| {
            if tests[..at].iter().any(|(seen, _)| seen == attr) {
                return None;
            }
            let later = || tests[at + 1..].iter().filter(|(a, _)| a == attr);
            let allowed = values[first.clone()]
                .iter()
                .any(|v| later().all(|(_, range)| values[range.clone()].contains(v)));
            (!allowed).then_some(*attr)
        });
        let span = rule.condition.as_ref().map_or(rule.span, |c| c.span);
        if let Some(attr) = empty {
            self.error(
                span,
                CheckError::NeverHolds {
                    attr: attr.path(),
                    span: span.source_span(),
                    help: Some("a value cannot equal two different things; did you mean `or`, or `in [...]`?".to_owned()),
                },
            );
            return;
        }
        if let Some((attr, help)) = self.empty_duration_range(conjuncts) {
            self.error(
                span,
                CheckError::NeverHolds {
                    attr,
                    span: span.source_span(),
                    help: Some(help),
                },
            );
        }
    }

    /// The first duration (an attribute such as `requested.ttl`, or any
    /// expression of type duration, told apart by its text) that the
    /// conjuncts bound by constants from both sides with nothing in
    /// between (`requested.ttl > 2h and requested.ttl < 1h`), or below
    /// what it can be (`requested.ttl < 0s`: a duration is never below
    /// zero, and a requested TTL is at least one second), with the help.
    fn empty_duration_range(&self, conjuncts: &[Expr]) -> Option<(String, String)> {
        use crate::ast::BinOp;
        // Per duration: its text, the least and the greatest seconds it may
        // be (inclusive), and the texts of the bounds that set them.
        let mut ranges: Vec<(String, u64, u64, Vec<String>)> = Vec::new();
        for conjunct in conjuncts {
            let I::Binary(op, l, r) = &conjunct.kind else {
                continue;
            };
            // `d OP constant`, or `constant OP d` turned round.
            let (op, subject, bound) = match (fold_duration(l), fold_duration(r)) {
                (None, Some(bound)) if l.ty == Ty::Dur => (*op, l, bound),
                (Some(bound), None) if r.ty == Ty::Dur => match op {
                    BinOp::Lt => (BinOp::Gt, r, bound),
                    BinOp::Le => (BinOp::Ge, r, bound),
                    BinOp::Gt => (BinOp::Lt, r, bound),
                    BinOp::Ge => (BinOp::Le, r, bound),
                    other => (*other, r, bound),
                },
                _ => continue,
            };
            let (low, high) = match op {
                // `< 0s`: nothing at all.
                BinOp::Lt => bound.checked_sub(1).map_or((1, 0), |high| (0, high)),
                BinOp::Le => (0, bound),
                BinOp::Gt => (bound.saturating_add(1), u64::MAX),
                BinOp::Ge => (bound, u64::MAX),
                BinOp::Eq => (bound, bound),
                _ => continue,
            };
            let text = collapse_ws(self.sources.slice(subject.span));
            let floor = u64::from(matches!(subject.kind, I::Attr(crate::ir::Attr::RequestedTtl)));
            let written = collapse_ws(self.sources.slice(conjunct.span));
            match ranges.iter_mut().find(|(t, ..)| *t == text) {
                Some((_, lo, hi, bounds)) => {
                    *lo = (*lo).max(low);
                    *hi = (*hi).min(high);
                    bounds.push(written);
                }
                None => ranges.push((text, low.max(floor), high, vec![written])),
            }
        }
        ranges
            .into_iter()
            .find(|(_, lo, hi, _)| lo > hi)
            .map(|(text, _, _, bounds)| {
                let help = if bounds.len() == 1 {
                    format!("a duration is never below zero and a requested TTL is at least one second, so `{}` never holds", bounds[0])
                } else {
                    format!(
                        "no duration satisfies all of {}; did you mean `or`, or the bounds the other way round?",
                        bounds.iter().map(|b| format!("`{b}`")).collect::<Vec<_>>().join(", ")
                    )
                };
                (text, help)
            })
    }
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

/// The seconds of a duration expression made only of constants (`15m`,
/// `2 * 1h`, `min(15m, ttl_agent)`), so that it caps like a constant
/// (and lints see it); `None` for anything that reads the request, the
/// data or the time, or that would fail when evaluated.
fn fold_duration(expr: &Expr) -> Option<u64> {
    use crate::ast::BinOp;
    use crate::ir::Builtin;
    let number = |e: &Expr| match e.kind {
        I::Lit(Lit::Num(n)) if n.is_finite() && n >= 0.0 => Some(n),
        _ => None,
    };
    if expr.ty != Ty::Dur {
        return None;
    }
    match &expr.kind {
        I::Lit(Lit::Dur(seconds)) => Some(*seconds),
        I::Call(Builtin::Min, args) => args
            .iter()
            .map(fold_duration)
            .collect::<Option<Vec<u64>>>()?
            .into_iter()
            .min(),
        I::Binary(BinOp::Add, a, b) => fold_duration(a)?.checked_add(fold_duration(b)?),
        I::Binary(BinOp::Mul, a, b) => {
            let (seconds, n) = match (fold_duration(a), fold_duration(b)) {
                (Some(seconds), None) => (seconds, number(b)?),
                (None, Some(seconds)) => (seconds, number(a)?),
                _ => return None,
            };
            let scaled = (seconds as f64 * n).floor();
            (scaled < u64::MAX as f64).then_some(scaled as u64)
        }
        _ => None,
    }
}

/// `text` with every run of whitespace made one space.
fn collapse_ws(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
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
    use crate::ir::{RuleKind, TtlCap};

    /// The cap of the one rule of `policy`.
    fn cap(policy: &str) -> TtlCap {
        let engine = match crate::Engine::compile([("t.writ", policy)], None) {
            Ok(engine) => engine,
            Err(diagnostics) => panic!("compiles: {diagnostics}"),
        };
        match &engine.policy().rules[0].kind {
            RuleKind::LimitTtl(cap) => cap.clone(),
            other => panic!("not a ttl limit: {other:?}"),
        }
    }

    #[test]
    fn caps_made_of_constants_are_constants() {
        let constant = |policy: &str| cap(policy).constant();
        assert_eq!(constant("limit ttl 15m;"), Some(900));
        assert_eq!(constant("const d = 3; limit ttl 1h * d;"), Some(10_800));
        assert_eq!(constant("limit ttl 1.5 * 1m + 10s;"), Some(100));
        assert_eq!(constant("const a = 5m; limit ttl min(a, 1h, 10m);"), Some(300));
        // Anything that reads the request or the time is computed.
        assert_eq!(constant("limit ttl until context.expires;"), None);
        assert_eq!(constant("limit ttl min(15m, requested.ttl);"), None);
        assert_eq!(constant("limit ttl 1s * context.n;"), None);
        // A negative scale is refused by the checker.
        let refused = crate::Engine::compile([("t.writ", "limit ttl 1h * -1;")], None);
        assert!(
            matches!(&refused, Err(d) if d.codes() == ["writ::check::bad_operand"]),
            "{refused:?}"
        );
    }
}
