//! The evaluator: walks the tree, evaluates the candidates' conditions with
//! three-valued logic, and combines them into the decision.
//!
//! Errors are values here. `and` is false when either side is false (even if
//! the other errs) and `or` is true when either side is true; otherwise an
//! error propagates. This makes the result independent of operand order,
//! which is what lets the tree skip rules without changing any decision.

use std::borrow::Cow;
use std::cmp::Ordering;

use indexmap::IndexMap;
use serde_json::{json, Value};

use crate::ast::BinOp;
use crate::compile::Tree;
use crate::decision::{
    Decision, Effect, EvalError, Failed, ObligationOut, Outcome, PolicyRef, TraceEntry,
};
use crate::ir::{
    Attr, Builtin, Dim, Expr, ExprKind, Lit, Obligation, PolicySet, Rule, RuleKind, Template,
    TemplatePart,
};
use crate::request::{parse_time, Prepared, Request, Sensitivity};
use crate::scope::ScopeItem;

/// The TTL granted when no permit, limit or request bounds it.
pub const DEFAULT_TTL: u64 = 3600;

/// A value during evaluation, borrowing from the request and the policy.
#[derive(Debug, Clone)]
pub enum Val<'a> {
    /// A string.
    Str(Cow<'a, str>),
    /// A number.
    Num(f64),
    /// A bool.
    Bool(bool),
    /// A duration in seconds.
    Dur(u64),
    /// A sensitivity level.
    Level(Sensitivity),
    /// An instant, Unix nanoseconds.
    Time(i128),
    /// A list of constants.
    Lits(&'a [Lit]),
    /// A list of strings from the request.
    Strs(&'a [String]),
    /// A JSON array or object from the request or the data.
    Json(&'a Value),
}

type Res<T> = Result<T, String>;

struct Ctx<'a> {
    request: &'a Request,
    prepared: &'a Prepared,
    data: &'a IndexMap<String, Value>,
    locals: Vec<Val<'a>>,
}

fn from_json(value: &Value) -> Res<Val<'_>> {
    Ok(match value {
        Value::String(s) => Val::Str(Cow::Borrowed(s)),
        Value::Number(n) => Val::Num(n.as_f64().unwrap_or(f64::NAN)),
        Value::Bool(b) => Val::Bool(*b),
        Value::Null => return Err("value is null".to_owned()),
        other => Val::Json(other),
    })
}

fn from_lit(lit: &Lit) -> Res<Val<'_>> {
    Ok(match lit {
        Lit::Str(s) => Val::Str(Cow::Borrowed(s)),
        Lit::Num(n) => Val::Num(*n),
        Lit::Bool(b) => Val::Bool(*b),
        Lit::Dur(d) => Val::Dur(*d),
        Lit::Level(l) => Val::Level(*l),
        Lit::List(items) => Val::Lits(items),
        Lit::Json(v) => from_json(v)?,
    })
}

/// The value of a request attribute; `None` when it is absent.
pub fn attr_value<'a>(request: &'a Request, prepared: &Prepared, attr: &Attr) -> Option<Val<'a>> {
    let s = |o: &'a Option<String>| o.as_deref().map(|s| Val::Str(Cow::Borrowed(s)));
    let extra = |map: &'a IndexMap<String, Value>, name: &str| {
        map.get(name).and_then(|v| from_json(v).ok())
    };
    match attr {
        Attr::SubjectId => s(&request.subject.id),
        Attr::SubjectKind => s(&request.subject.kind),
        Attr::SubjectAuth => s(&request.subject.auth),
        Attr::SubjectAttested => request.subject.attested.map(Val::Bool),
        Attr::SubjectShared => request.subject.shared.map(Val::Bool),
        Attr::SubjectOwner => s(&request.subject.owner),
        Attr::SubjectEnvironment => s(&request.subject.environment),
        Attr::Action => s(&request.action),
        Attr::ResourceId => s(&request.resource.id),
        Attr::ResourceKind => s(&request.resource.kind),
        Attr::ResourceOwner => s(&request.resource.owner),
        Attr::IntentTask => s(&request.intent.task),
        Attr::IntentId => s(&request.intent.id),
        Attr::IntentObjective => s(&request.intent.objective),
        Attr::IntentObjectiveChanged => request.intent.objective_changed.map(Val::Bool),
        Attr::EnvironmentName => s(&request.environment.name),
        Attr::EnvironmentBroker => s(&request.environment.broker),
        Attr::EnvironmentTime => prepared.time.map(Val::Time),
        Attr::Sensitivity => request.sensitivity.map(Val::Level),
        Attr::RequestedScope => request.requested.scope.as_deref().map(Val::Strs),
        Attr::RequestedTtl => request.requested.ttl.map(Val::Dur),
        Attr::Extra(dim, name) => match dim {
            Dim::Subject => extra(&request.subject.extra, name),
            Dim::Resource => extra(&request.resource.extra, name),
            Dim::Intent => extra(&request.intent.extra, name),
            Dim::Environment => extra(&request.environment.extra, name),
            Dim::Requested => None,
            Dim::Context => extra(&request.context, name),
        },
    }
}

/// The string value of an attribute, for the tree's switches: `None` when
/// it is missing or not a string (the walk then visits every branch).
pub fn attr_key<'a>(request: &'a Request, prepared: &Prepared, attr: &Attr) -> Option<&'a str> {
    match attr_value(request, prepared, attr)? {
        Val::Str(Cow::Borrowed(text)) => Some(text),
        Val::Level(level) => Some(level.as_str()),
        _ => None,
    }
}

fn type_name(val: &Val) -> &'static str {
    match val {
        Val::Str(_) => "string",
        Val::Num(_) => "number",
        Val::Bool(_) => "bool",
        Val::Dur(_) => "duration",
        Val::Level(_) => "sensitivity level",
        Val::Time(_) => "timestamp",
        Val::Lits(_) | Val::Strs(_) => "list",
        Val::Json(Value::Array(_)) => "list",
        Val::Json(_) => "object",
    }
}

/// A value as JSON, for traces.
pub fn to_json(val: &Val) -> Value {
    match val {
        Val::Str(s) => Value::String(String::from(&**s)),
        // A whole number shows as one (`42`, not `42.0`), as the request wrote it.
        Val::Num(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => json!(*n as i64),
        Val::Num(n) => json!(n),
        Val::Bool(b) => Value::Bool(*b),
        Val::Dur(d) => json!(format!("{d}s")),
        Val::Level(l) => Value::String(l.as_str().to_owned()),
        Val::Time(t) => Value::String(format_time(*t)),
        Val::Lits(items) => Value::Array(
            items
                .iter()
                .map(|l| from_lit(l).map_or(Value::Null, |v| to_json(&v)))
                .collect(),
        ),
        Val::Strs(items) => Value::Array(items.iter().map(|s| Value::String(s.clone())).collect()),
        Val::Json(v) => (*v).clone(),
    }
}

fn format_time(nanos: i128) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| nanos.to_string())
}

fn as_time(val: &Val) -> Option<i128> {
    match val {
        Val::Time(t) => Some(*t),
        Val::Str(s) => parse_time(s),
        _ => None,
    }
}

fn equal(a: &Val, b: &Val) -> Res<bool> {
    Ok(match (a, b) {
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Num(x), Val::Num(y)) => x == y,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Dur(x), Val::Dur(y)) => x == y,
        (Val::Dur(d), Val::Num(n)) | (Val::Num(n), Val::Dur(d)) => *d as f64 == *n,
        (Val::Level(x), Val::Level(y)) => x == y,
        (Val::Time(x), other) | (other, Val::Time(x)) => match as_time(other) {
            Some(y) => *x == y,
            None => return Err(mismatch(a, b)),
        },
        _ => {
            let left = list_items(a);
            let right = list_items(b);
            match (left, right) {
                (Some(l), Some(r)) => {
                    if l.len() != r.len() {
                        return Ok(false);
                    }
                    for (x, y) in l.iter().zip(r.iter()) {
                        if !equal(x, y)? {
                            return Ok(false);
                        }
                    }
                    true
                }
                _ => match (a, b) {
                    (Val::Json(x @ Value::Object(_)), Val::Json(y @ Value::Object(_))) => x == y,
                    _ => return Err(mismatch(a, b)),
                },
            }
        }
    })
}

fn mismatch(a: &Val, b: &Val) -> String {
    format!(
        "cannot compare {} {} with {} {}",
        type_name(a),
        to_json(a),
        type_name(b),
        to_json(b)
    )
}

fn order(a: &Val, b: &Val) -> Res<Ordering> {
    let ord = match (a, b) {
        (Val::Num(x), Val::Num(y)) => x.partial_cmp(y),
        (Val::Dur(x), Val::Dur(y)) => Some(x.cmp(y)),
        (Val::Dur(d), Val::Num(n)) => (*d as f64).partial_cmp(n),
        (Val::Num(n), Val::Dur(d)) => n.partial_cmp(&(*d as f64)),
        (Val::Level(x), Val::Level(y)) => Some(x.cmp(y)),
        _ => match (as_time(a), as_time(b)) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => None,
        },
    };
    ord.ok_or_else(|| {
        format!(
            "cannot order {} {} and {} {}",
            type_name(a),
            to_json(a),
            type_name(b),
            to_json(b)
        )
    })
}

fn list_items<'a>(val: &Val<'a>) -> Option<Vec<Val<'a>>> {
    match val {
        Val::Lits(items) => items.iter().map(|l| from_lit(l).ok()).collect(),
        Val::Strs(items) => Some(
            items
                .iter()
                .map(|s| Val::Str(Cow::Borrowed(s.as_str())))
                .collect(),
        ),
        Val::Json(Value::Array(items)) => items.iter().map(|v| from_json(v).ok()).collect(),
        _ => None,
    }
}

/// Membership, typed like `==`: true when an element equals the needle;
/// otherwise an error when some element could not be compared with it (a
/// value of another type, or a null), and false only when every element
/// was compared and none was equal. So `42 not in ["push"]` is an error,
/// not true: a requester cannot slip past a list by sending another type.
fn contains(list: &Val, needle: &Val) -> Res<bool> {
    let mut error: Option<String> = None;
    let mut check = |item: Res<Val>| match item.and_then(|item| equal(needle, &item)) {
        Ok(found) => found,
        Err(message) => {
            error.get_or_insert(message);
            false
        }
    };
    let found = match list {
        Val::Lits(items) => items.iter().any(|l| check(from_lit(l))),
        Val::Strs(items) => match needle {
            Val::Str(n) => items.iter().any(|s| s == n),
            _ => items
                .iter()
                .any(|s| check(Ok(Val::Str(Cow::Borrowed(s.as_str()))))),
        },
        Val::Json(Value::Array(items)) => items.iter().any(|v| check(from_json(v))),
        other => {
            return Err(format!(
                "`in` needs a list, found {} {}",
                type_name(other),
                to_json(other)
            ))
        }
    };
    match error {
        Some(message) if !found => Err(message),
        _ => Ok(found),
    }
}

/// True for a value that says nothing, which `has` counts as absent: an
/// empty string, an empty list or object, and `false`. (A null never gets
/// here: it reads as missing.)
fn says_nothing(value: &Val) -> bool {
    match value {
        Val::Str(s) => s.is_empty(),
        Val::Bool(b) => !b,
        Val::Lits(items) => items.is_empty(),
        Val::Strs(items) => items.is_empty(),
        Val::Json(Value::Array(items)) => items.is_empty(),
        Val::Json(Value::Object(map)) => map.is_empty(),
        _ => false,
    }
}

impl<'a> Ctx<'a> {
    fn eval(&mut self, expr: &'a Expr) -> Res<Val<'a>> {
        match &expr.kind {
            ExprKind::Lit(lit) => from_lit(lit),
            ExprKind::Attr(attr) => attr_value(self.request, self.prepared, attr)
                .ok_or_else(|| format!("`{}` is missing", attr.path())),
            ExprKind::Local(depth) => self
                .locals
                .get(*depth)
                .cloned()
                .ok_or_else(|| "unbound name".to_owned()),
            ExprKind::Data(key) => self
                .data
                .get(&**key)
                .ok_or_else(|| format!("data `{key}` is missing"))
                .and_then(from_json),
            ExprKind::Field(base, name) => {
                let base = self.eval(base)?;
                match base {
                    Val::Json(Value::Object(map)) => map
                        .get(&**name)
                        .ok_or_else(|| format!("field `{name}` is missing"))
                        .and_then(from_json),
                    other => Err(format!("{} has no field `{name}`", type_name(&other))),
                }
            }
            ExprKind::Index(base, index) => {
                let base = self.eval(base)?;
                let index = self.eval(index)?;
                match (&base, &index) {
                    (Val::Json(Value::Object(map)), Val::Str(key)) => map
                        .get(&**key)
                        .ok_or_else(|| format!("key `{key}` is missing"))
                        .and_then(from_json),
                    (_, Val::Num(n)) if n.fract() == 0.0 && *n >= 0.0 => {
                        let items = list_items(&base)
                            .ok_or_else(|| format!("a {} cannot be indexed", type_name(&base)))?;
                        items
                            .into_iter()
                            .nth(*n as usize)
                            .ok_or_else(|| format!("index {n} is out of range"))
                    }
                    _ => Err(format!(
                        "cannot index {} with {} {}",
                        type_name(&base),
                        type_name(&index),
                        to_json(&index)
                    )),
                }
            }
            ExprKind::Call(builtin, args) => {
                let mut values = Vec::with_capacity(args.len());
                for arg in args {
                    values.push(self.eval(arg)?);
                }
                call(*builtin, &values)
            }
            ExprKind::Not(inner) => match self.eval(inner)? {
                Val::Bool(b) => Ok(Val::Bool(!b)),
                other => Err(format!(
                    "`not` needs a bool, found {} {}",
                    type_name(&other),
                    to_json(&other)
                )),
            },
            ExprKind::Matches(inner, glob) => match self.eval(inner)? {
                Val::Str(s) => Ok(Val::Bool(glob.is_match(&s))),
                other => Err(format!(
                    "`matches` needs a string, found {} {}",
                    type_name(&other),
                    to_json(&other)
                )),
            },
            ExprKind::Has(attr, rest) => Ok(Val::Bool(self.has(attr, rest))),
            ExprKind::Quantifier { all, list, body } => {
                let list = self.eval(list)?;
                let items = list_items(&list).ok_or_else(|| {
                    format!(
                        "`{}` needs a list, found {}",
                        if *all { "all" } else { "any" },
                        type_name(&list)
                    )
                })?;
                let mut error = None;
                for item in items {
                    self.locals.push(item);
                    let result = self.truth(body);
                    self.locals.pop();
                    match result {
                        Ok(b) if b != *all => return Ok(Val::Bool(b)),
                        Ok(_) => {}
                        Err(e) => {
                            error.get_or_insert(e);
                        }
                    }
                }
                match error {
                    Some(e) => Err(e),
                    None => Ok(Val::Bool(*all)),
                }
            }
            ExprKind::Binary(op, left, right) => self.binary(*op, left, right),
        }
    }

    fn truth(&mut self, expr: &'a Expr) -> Res<bool> {
        // The commonest test, an attribute against a string constant, with
        // no intermediate values; anything else takes the general path.
        if let ExprKind::Binary(op, left, right) = &expr.kind {
            if let (ExprKind::Attr(attr), ExprKind::Lit(constant)) = (&left.kind, &right.kind) {
                let value = attr_value(self.request, self.prepared, attr);
                match (op, value, constant) {
                    (BinOp::Eq | BinOp::Ne, Some(Val::Str(value)), Lit::Str(constant)) => {
                        return Ok((*value == **constant) == (*op == BinOp::Eq));
                    }
                    (BinOp::Eq | BinOp::Ne, Some(Val::Bool(value)), Lit::Bool(constant)) => {
                        return Ok((value == *constant) == (*op == BinOp::Eq));
                    }
                    (BinOp::In | BinOp::NotIn, Some(Val::Str(value)), Lit::List(items)) => {
                        let mut other_type = false;
                        let found = items.iter().any(|item| match item {
                            Lit::Str(s) => **s == *value,
                            _ => {
                                other_type = true;
                                false
                            }
                        });
                        // An element of another type makes a miss an
                        // error: the general path below says which.
                        if found || !other_type {
                            return Ok(found == (*op == BinOp::In));
                        }
                    }
                    _ => {}
                }
            }
        }
        match self.eval(expr)? {
            Val::Bool(b) => Ok(b),
            other => Err(format!(
                "expected true or false, found {} {}",
                type_name(&other),
                to_json(&other)
            )),
        }
    }

    fn has(&self, attr: &Attr, rest: &[Box<str>]) -> bool {
        let Some(mut value) = attr_value(self.request, self.prepared, attr) else {
            return false;
        };
        for field in rest {
            match value {
                Val::Json(Value::Object(map)) => match map.get(&**field).map(from_json) {
                    Some(Ok(next)) => value = next,
                    _ => return false,
                },
                _ => return false,
            }
        }
        !says_nothing(&value)
    }

    fn binary(&mut self, op: BinOp, left: &'a Expr, right: &'a Expr) -> Res<Val<'a>> {
        match op {
            BinOp::And | BinOp::Or => {
                let dominant = op == BinOp::Or;
                let l = self.truth(left);
                if l == Ok(dominant) {
                    return Ok(Val::Bool(dominant));
                }
                let r = self.truth(right);
                if r == Ok(dominant) {
                    return Ok(Val::Bool(dominant));
                }
                l?;
                r?;
                Ok(Val::Bool(!dominant))
            }
            _ => {
                let l = self.eval(left)?;
                let r = self.eval(right)?;
                Ok(match op {
                    BinOp::Eq => Val::Bool(equal(&l, &r)?),
                    BinOp::Ne => Val::Bool(!equal(&l, &r)?),
                    BinOp::Lt => Val::Bool(order(&l, &r)? == Ordering::Less),
                    BinOp::Le => Val::Bool(order(&l, &r)? != Ordering::Greater),
                    BinOp::Gt => Val::Bool(order(&l, &r)? == Ordering::Greater),
                    BinOp::Ge => Val::Bool(order(&l, &r)? != Ordering::Less),
                    BinOp::In => Val::Bool(contains(&r, &l)?),
                    BinOp::NotIn => Val::Bool(!contains(&r, &l)?),
                    BinOp::Add => add(&l, &r)?,
                    BinOp::Matches | BinOp::And | BinOp::Or => {
                        return Err("operator not supported here".to_owned())
                    }
                })
            }
        }
    }

    /// Evaluates a rule's conjuncts: the first false one wins over errors.
    fn rule(&mut self, rule: &'a Rule) -> RuleResult {
        let mut error = None;
        for (index, conjunct) in rule.conjuncts.iter().enumerate() {
            match self.truth(conjunct) {
                Ok(true) => {}
                Ok(false) => return RuleResult::False(index),
                Err(message) => {
                    error.get_or_insert(message);
                }
            }
        }
        match error {
            Some(message) => RuleResult::Error(message),
            None => RuleResult::True,
        }
    }

    /// The value a failed conjunct saw: its attribute side.
    fn saw(&mut self, conjunct: &'a Expr) -> Value {
        let target = match &conjunct.kind {
            ExprKind::Binary(_, left, right) => {
                if matches!(left.kind, ExprKind::Lit(_)) {
                    right
                } else {
                    left
                }
            }
            ExprKind::Not(inner) => inner,
            ExprKind::Matches(inner, _) => inner,
            _ => conjunct,
        };
        match self.eval(target) {
            Ok(v) => to_json(&v),
            Err(_) => Value::Null,
        }
    }

    /// Builds scope items from templates; the first that fails fails all.
    fn scope_items(&mut self, templates: &'a [Template]) -> Res<Vec<ScopeItem>> {
        templates
            .iter()
            .map(|t| {
                self.template(t, Fill::ScopeItem)
                    .and_then(|text| ScopeItem::parse(&text).map_err(|e| e.to_string()))
            })
            .collect()
    }

    /// Fills an obligation's template, refusing what a broker could read
    /// as "any" or "nothing": a hole value that is empty, blank, holds a
    /// `*` or a percent-encoded `.`, `/` or `%`, and a whole value that is
    /// empty, blank, `*` or `**`.
    fn obligation_value(&mut self, kind: &'static str, template: &'a Template) -> Res<String> {
        let value = self.template(template, Fill::Obligation(kind))?;
        let trimmed = value.trim();
        if trimmed.is_empty() || trimmed == "*" || trimmed == "**" {
            return Err(format!(
                "{kind} {} from `{}` is empty, blank or a wildcard",
                Value::String(value),
                template.source
            ));
        }
        Ok(value)
    }

    fn template(&mut self, template: &'a Template, fill: Fill) -> Res<String> {
        let mut out = String::with_capacity(template.source.len() + 48);
        for part in &template.parts {
            match part {
                TemplatePart::Text(text) => out.push_str(text),
                TemplatePart::Hole(expr) => {
                    let value = self.eval(expr)?;
                    // Strings, the commonest, are copied straight in.
                    let text: Cow<'_, str> = match &value {
                        Val::Str(s) => Cow::Borrowed(s),
                        Val::Num(n) => Cow::Owned(n.to_string()),
                        Val::Dur(d) => Cow::Owned(number(*d).as_str().to_owned()),
                        Val::Level(l) => Cow::Borrowed(l.as_str()),
                        Val::Time(t) => Cow::Owned(format_time(*t)),
                        Val::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
                        other => {
                            return Err(format!(
                                "cannot put a {} into `{}`",
                                type_name(other),
                                template.source
                            ))
                        }
                    };
                    let refused = match fill {
                        Fill::Text => false,
                        Fill::ScopeItem => text.contains('*') || text.is_empty(),
                        Fill::Obligation(_) => {
                            text.contains('*')
                                || text.trim().is_empty()
                                || crate::scope::percent_encoded(&text).is_some()
                        }
                    };
                    if refused {
                        let what = match fill {
                            Fill::Obligation(kind) => kind,
                            _ => "scope item",
                        };
                        return Err(format!(
                            "value {} would widen or break the {what} `{}`",
                            Value::String(text.into_owned()),
                            template.source
                        ));
                    }
                    out.push_str(&text);
                }
            }
        }
        Ok(out)
    }
}

fn call<'a>(builtin: Builtin, args: &[Val<'a>]) -> Res<Val<'a>> {
    let string = |v: &Val<'a>| match v {
        Val::Str(s) => Ok(s.clone()),
        other => Err(format!(
            "expected a string, found {} {}",
            type_name(other),
            to_json(other)
        )),
    };
    match builtin {
        Builtin::Len => match &args[0] {
            Val::Str(s) => Ok(Val::Num(s.chars().count() as f64)),
            other => list_items(other)
                .map(|items| Val::Num(items.len() as f64))
                .ok_or_else(|| {
                    format!("`len` needs a list or a string, found {}", type_name(other))
                }),
        },
        Builtin::Contains => match &args[0] {
            Val::Str(s) => Ok(Val::Bool(s.contains(&*string(&args[1])?))),
            list => Ok(Val::Bool(contains(list, &args[1])?)),
        },
        Builtin::StartsWith => Ok(Val::Bool(
            string(&args[0])?.starts_with(&*string(&args[1])?),
        )),
        Builtin::EndsWith => Ok(Val::Bool(string(&args[0])?.ends_with(&*string(&args[1])?))),
        Builtin::Lower => Ok(Val::Str(Cow::Owned(string(&args[0])?.to_lowercase()))),
    }
}

fn add<'a>(a: &Val<'a>, b: &Val<'a>) -> Res<Val<'a>> {
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => Ok(Val::Num(x + y)),
        (Val::Dur(x), Val::Dur(y)) => x
            .checked_add(*y)
            .map(Val::Dur)
            .ok_or_else(|| "duration overflow".to_owned()),
        (t, Val::Dur(d)) => match as_time(t) {
            Some(t) => Ok(Val::Time(t + i128::from(*d) * 1_000_000_000)),
            None => Err(format!(
                "cannot add a duration to {} {}",
                type_name(t),
                to_json(t)
            )),
        },
        _ => Err(format!("cannot add {} and {}", type_name(a), type_name(b))),
    }
}

/// The pieces joined, in one allocation (the trace's effect texts; cheaper
/// than `format!` on the decision path).
fn text(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        out.push_str(part);
    }
    out
}

/// A number's decimal digits, on the stack, without the formatting
/// machinery.
struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[self.start..]).unwrap_or("?")
    }
}

fn number(mut n: u64) -> Digits {
    let mut digits = Digits {
        buf: [0u8; 20],
        start: 20,
    };
    loop {
        digits.start -= 1;
        digits.buf[digits.start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return digits;
        }
    }
}

/// What a template is filled for, which decides the hole values it
/// refuses.
#[derive(Clone, Copy)]
enum Fill {
    /// A `because` message: any value.
    Text,
    /// A grant or a `limit scope` pattern: no value that is empty or holds
    /// a `*` (the item is parsed afterwards, which refuses the rest).
    ScopeItem,
    /// An obligation's value, of the kind named: no value that is blank,
    /// holds a `*` or a percent-encoded `.`, `/` or `%`.
    Obligation(&'static str),
}

enum RuleResult {
    True,
    False(usize),
    Error(String),
}

/// Everything the evaluator needs from a compiled engine.
pub struct Compiled<'e> {
    /// The checked rules.
    pub set: &'e PolicySet,
    /// Their decision tree.
    pub tree: &'e Tree,
    /// The policy digest.
    pub digest: &'e crate::decision::Name,
}

fn entry(rule: &Rule, outcome: Outcome) -> TraceEntry {
    TraceEntry {
        rule: rule.id.clone(),
        kind: rule.kind_name.clone(),
        at: rule.location.clone(),
        outcome,
        failed: None,
        error: None,
        effect: Vec::new(),
        because: None,
        closest: false,
    }
}

/// Decides a request. Never panics; any error fails closed.
pub fn decide(compiled: &Compiled, request: &Request) -> Decision {
    match request.validate() {
        Ok(prepared) => decide_prepared(compiled, request, &prepared),
        Err(error) => Decision::rejected(error.to_string(), compiled.digest.as_str()),
    }
}

/// Decides a request already validated into `prepared`.
pub fn decide_prepared(compiled: &Compiled, request: &Request, prepared: &Prepared) -> Decision {
    let mut candidates = Vec::new();
    let mut near = Vec::new();
    compiled.tree.candidates(
        |attr| attr_key(request, prepared, attr),
        &mut candidates,
        &mut near,
    );
    let set = compiled.set;
    let mut ctx = Ctx {
        request,
        prepared,
        data: &set.data,
        locals: Vec::new(),
    };

    let mut trace: Vec<TraceEntry> = Vec::with_capacity(candidates.len());
    let mut errors: Vec<EvalError> = Vec::new();
    // The rules that matched, as (trace slot, rule index), in policy order;
    // `role` picks those of one kind.
    let mut matched: Vec<(usize, u32)> = Vec::new();
    let mut missed_permits = Vec::new();

    for &index in &candidates {
        let rule = &set.rules[index as usize];
        let fails_closed = !matches!(rule.kind, RuleKind::Permit { .. });
        let mut e = match ctx.rule(rule) {
            RuleResult::True => entry(rule, Outcome::Matched),
            RuleResult::False(at) => {
                let mut e = entry(rule, Outcome::NotMatched);
                e.failed = Some(Failed {
                    condition: rule.conjunct_text[at].clone(),
                    saw: ctx.saw(&rule.conjuncts[at]),
                });
                if !fails_closed {
                    missed_permits.push((index, at));
                }
                e
            }
            RuleResult::Error(message) => {
                errors.push(EvalError {
                    rule: rule.id.as_str().to_owned(),
                    message: message.clone(),
                });
                let mut e = entry(
                    rule,
                    if fails_closed {
                        Outcome::Matched
                    } else {
                        Outcome::Error
                    },
                );
                e.error = Some(message);
                e
            }
        };
        if e.outcome == Outcome::Matched {
            // A rule that applies only by failing closed did not hold, so
            // its `because` would not be true.
            if let (Some(because), None) = (&rule.because, &e.error) {
                e.because = ctx.template(because, Fill::Text).ok();
            }
            matched.push((trace.len(), index));
        }
        trace.push(e);
    }

    let deny = |trace: Vec<TraceEntry>,
                reasons: Vec<String>,
                errors: Vec<EvalError>,
                dropped: Vec<String>| Decision {
        decision: Effect::Deny,
        scope: Vec::new(),
        ttl: 0,
        obligations: Vec::new(),
        reasons,
        dropped_scope: dropped,
        errors,
        trace,
        policy: PolicyRef {
            digest: compiled.digest.clone(),
        },
    };

    // 2. A matching forbid (or one that failed closed) denies.
    let role = |is: fn(&RuleKind) -> bool| {
        matched
            .iter()
            .copied()
            .filter(move |&(_, index)| is(&set.rules[index as usize].kind))
    };
    let forbids = role(|k| matches!(k, RuleKind::Forbid));
    if forbids.clone().next().is_some() {
        let mut reasons = Vec::new();
        for (slot, _) in forbids {
            trace[slot].effect.push("denied".to_owned());
            reasons.push(trace[slot].rule.as_str().to_owned());
        }
        return deny(trace, reasons, errors, Vec::new());
    }

    // Instantiate the matched permits' grants; a grant that cannot be built
    // makes its permit not match.
    let mut granted: Vec<(usize, u32, Vec<ScopeItem>)> = Vec::new();
    for (slot, index) in role(|k| matches!(k, RuleKind::Permit { .. })) {
        let RuleKind::Permit { grant, .. } = &set.rules[index as usize].kind else {
            continue;
        };
        match ctx.scope_items(grant) {
            Ok(items) => granted.push((slot, index, items)),
            Err(message) => {
                trace[slot].outcome = Outcome::Error;
                trace[slot].error = Some(message.clone());
                errors.push(EvalError {
                    rule: trace[slot].rule.as_str().to_owned(),
                    message,
                });
            }
        }
    }

    // 1. Deny by default, naming the permits that came closest.
    if granted.is_empty() {
        mark_closest(
            &mut ctx,
            compiled,
            &mut trace,
            &candidates,
            &missed_permits,
            &near,
        );
        // No permit matched, so no requested item is covered.
        let dropped = prepared
            .scope
            .iter()
            .map(|item| item.as_str().to_owned())
            .collect();
        return deny(trace, Vec::new(), errors, dropped);
    }

    // 4. Scope.
    // Each applicable scope limit's patterns, built for this request. A
    // pattern that cannot be built keeps nothing: the limit fails closed.
    let mut scope_limits: Vec<(usize, Vec<ScopeItem>)> = Vec::new();
    for (slot, index) in role(|k| matches!(k, RuleKind::LimitScope(_))) {
        let RuleKind::LimitScope(templates) = &set.rules[index as usize].kind else {
            continue;
        };
        let patterns = ctx.scope_items(templates).unwrap_or_else(|message| {
            trace[slot].error = Some(message.clone());
            errors.push(EvalError {
                rule: trace[slot].rule.as_str().to_owned(),
                message,
            });
            Vec::new()
        });
        scope_limits.push((slot, patterns));
    }
    let mut contributing = vec![false; granted.len()];
    let mut scope: Vec<String> = Vec::new();
    let mut dropped: Vec<String> = Vec::new();
    let requested = !prepared.scope.is_empty();
    let everything: Vec<ScopeItem>;
    let wanted: &[ScopeItem] = if requested {
        &prepared.scope
    } else {
        let mut all: Vec<ScopeItem> = granted
            .iter()
            .flat_map(|(_, _, items)| items.iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        everything = all;
        &everything
    };
    let mut limit_drops: Vec<Vec<String>> = vec![Vec::new(); scope_limits.len()];
    // The parsed form of each item in `scope`.
    let mut kept: Vec<&ScopeItem> = Vec::new();
    for item in wanted {
        let covers =
            |(_, _, items): &(usize, u32, Vec<ScopeItem>)| items.iter().any(|p| p.covers(item));
        if !granted.iter().any(covers) {
            dropped.push(item.as_str().to_owned());
            continue;
        }
        let mut survives = true;
        for (which, (_, patterns)) in scope_limits.iter().enumerate() {
            if !patterns.iter().any(|p| p.covers(item)) {
                limit_drops[which].push(item.as_str().to_owned());
                survives = false;
            }
        }
        if survives {
            for (flag, grant) in contributing.iter_mut().zip(&granted) {
                *flag |= covers(grant);
            }
            scope.push(item.as_str().to_owned());
            kept.push(item);
        } else {
            dropped.push(item.as_str().to_owned());
        }
    }
    for (which, (slot, _)) in scope_limits.iter().enumerate() {
        let effect = if limit_drops[which].is_empty() {
            "narrowed scope: nothing to drop".to_owned()
        } else {
            format!("narrowed scope: dropped {}", limit_drops[which].join(", "))
        };
        trace[*slot].effect.push(effect);
    }
    let any_grant = granted.iter().any(|(_, _, items)| !items.is_empty());
    if (requested || any_grant) && scope.is_empty() {
        for &(slot, _, ref items) in &granted {
            if !items.is_empty() || requested {
                trace[slot]
                    .effect
                    .push("covered none of the requested scope".to_owned());
            }
        }
        // A permit without a grant still allows when nothing was requested.
        let plain_allow = !requested && granted.iter().any(|(_, _, items)| items.is_empty());
        if !plain_allow {
            return deny(trace, Vec::new(), errors, dropped);
        }
    }

    // 5. TTL: requested, contributing permits, applicable limits.
    let mut ttl: Option<u64> = request.requested.ttl;
    let cap = |current: &mut Option<u64>, value: u64| -> Option<String> {
        match *current {
            Some(now) if now <= value => None,
            Some(now) => {
                *current = Some(value);
                Some(text(&[
                    "capped ttl ",
                    number(now).as_str(),
                    " -> ",
                    number(value).as_str(),
                ]))
            }
            None => {
                *current = Some(value);
                Some(text(&["set ttl ", number(value).as_str()]))
            }
        }
    };
    let mut ttl_steps: Vec<(usize, u32, u64)> = Vec::new();
    for (i, &(slot, index, _)) in granted.iter().enumerate() {
        if let RuleKind::Permit {
            ttl: Some(seconds), ..
        } = set.rules[index as usize].kind
        {
            if contributing[i] {
                ttl_steps.push((slot, index, seconds));
            }
        }
    }
    for (slot, index) in role(|k| matches!(k, RuleKind::LimitTtl(_))) {
        if let RuleKind::LimitTtl(seconds) = set.rules[index as usize].kind {
            ttl_steps.push((slot, index, seconds));
        }
    }
    ttl_steps.sort_by_key(|&(_, index, _)| index);
    for &(slot, _, seconds) in &ttl_steps {
        let effect = cap(&mut ttl, seconds).unwrap_or_else(|| {
            text(&[
                "cap ",
                number(seconds).as_str(),
                " did not lower ttl ",
                number(ttl.unwrap_or(0)).as_str(),
            ])
        });
        trace[slot].effect.push(effect);
    }
    let ttl = ttl.unwrap_or(DEFAULT_TTL);

    // Permits' effects.
    for (i, (slot, _, items)) in granted.iter().enumerate() {
        if items.is_empty() {
            trace[*slot]
                .effect
                .insert(0, "allowed (no scope of its own)".to_owned());
        } else if contributing[i] || !requested {
            let mut text = String::new();
            for (granted_text, item) in scope.iter().zip(&kept) {
                if items.iter().any(|p| p.covers(item)) {
                    text.push_str(if text.is_empty() { "granted " } else { ", " });
                    text.push_str(granted_text);
                }
            }
            if !text.is_empty() {
                trace[*slot].effect.insert(0, text);
            }
        }
    }

    if ttl == 0 {
        // A credential for zero seconds reads like a deny, and issuers
        // such as Vault take 0 for "use the default": refuse it instead.
        // A requested TTL of 0 never gets here (validation refuses it), so
        // the zero comes from the caps of 0 seconds, which are the reasons.
        let mut reasons = Vec::new();
        for &(slot, _, seconds) in &ttl_steps {
            if seconds > 0 {
                continue;
            }
            trace[slot]
                .effect
                .push("denied: ttl under one second".to_owned());
            let rule = trace[slot].rule.as_str().to_owned();
            errors.push(EvalError {
                rule: rule.clone(),
                message: "the ttl works out to 0 seconds; an allow lasts at least one second"
                    .to_owned(),
            });
            reasons.push(rule);
        }
        if reasons.is_empty() {
            // A request for 0 seconds that skipped validation.
            errors.push(EvalError {
                rule: "request".to_owned(),
                message: "`requested.ttl` is 0; ask for at least 1 second".to_owned(),
            });
        }
        return deny(trace, reasons, errors, Vec::new());
    }

    // 6. Obligations: matched permits' and applicable requires', deduplicated.
    let mut sources: Vec<(usize, u32, &Obligation)> = Vec::new();
    for &(slot, index, _) in &granted {
        if let RuleKind::Permit { obligations, .. } = &set.rules[index as usize].kind {
            sources.extend(obligations.iter().map(|o| (slot, index, o)));
        }
    }
    for (slot, index) in role(|k| matches!(k, RuleKind::Require(_))) {
        if let RuleKind::Require(obligation) = &set.rules[index as usize].kind {
            sources.push((slot, index, obligation));
        }
    }
    sources.sort_by_key(|&(_, index, _)| index);
    let mut obligations: Vec<ObligationOut> = Vec::new();
    for (slot, index, obligation) in sources {
        let rule = &set.rules[index as usize];
        let (kind, event, value) = match obligation {
            Obligation::Approval => ("approval", None, None),
            Obligation::Log => ("log", None, None),
            Obligation::RevokeOn(event) => ("revoke_on", Some(String::from(&**event)), None),
            Obligation::Audience(template) => match ctx.obligation_value("audience", template) {
                Ok(value) => ("audience", None, Some(value)),
                Err(message) => {
                    // An obligation that cannot be stated cannot be honoured.
                    trace[slot].outcome = Outcome::Error;
                    trace[slot].error = Some(message.clone());
                    trace[slot]
                        .effect
                        .push("denied: obligation could not be computed".to_owned());
                    errors.push(EvalError {
                        rule: rule.id.as_str().to_owned(),
                        message,
                    });
                    return deny(trace, vec![rule.id.as_str().to_owned()], errors, Vec::new());
                }
            },
        };
        let label = match (&event, &value) {
            (Some(e), _) => text(&["added obligation ", kind, " ", e]),
            (_, Some(v)) => text(&["added obligation ", kind, " ", v]),
            _ => text(&["added obligation ", kind]),
        };
        if obligations
            .iter()
            .any(|o| o.kind == kind && o.event == event && o.value == value)
        {
            continue;
        }
        trace[slot].effect.push(label);
        obligations.push(ObligationOut {
            kind: kind.to_owned(),
            event,
            value,
            rule: rule.id.as_str().to_owned(),
        });
    }

    let reasons = granted
        .iter()
        .map(|&(slot, _, _)| trace[slot].rule.as_str().to_owned())
        .collect();
    Decision {
        decision: Effect::Allow,
        scope,
        ttl,
        obligations,
        reasons,
        dropped_scope: dropped,
        errors,
        trace,
        policy: PolicyRef {
            digest: compiled.digest.clone(),
        },
    }
}

/// On default deny: flags up to three permits that came closest (the most
/// conditions held before the first that failed), adding permits found in
/// the sibling branches of the switches the request missed. Costs a
/// handful of rule evaluations, whatever the size of the policy.
fn mark_closest<'a>(
    ctx: &mut Ctx<'a>,
    compiled: &Compiled<'a>,
    trace: &mut Vec<TraceEntry>,
    candidates: &[u32],
    missed: &[(u32, usize)],
    near: &[crate::compile::NodeId],
) {
    let set = compiled.set;
    // (conditions held, rule index, failed conjunct), best first.
    let mut pool: Vec<(usize, u32, Option<usize>)> =
        missed.iter().map(|&(r, at)| (at, r, Some(at))).collect();
    if pool.len() < 3 {
        for rule in compiled.tree.rules_below(near, 6) {
            let is_permit = matches!(set.rules[rule as usize].kind, RuleKind::Permit { .. });
            if !is_permit || pool.iter().any(|p| p.1 == rule) {
                continue;
            }
            match ctx.rule(&set.rules[rule as usize]) {
                RuleResult::False(at) => pool.push((at, rule, Some(at))),
                _ => pool.push((0, rule, None)),
            }
        }
    }
    pool.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    pool.truncate(3);
    let mut extras: Vec<(u32, TraceEntry)> = Vec::new();
    for (_, index, at) in pool {
        let rule = &set.rules[index as usize];
        if let Ok(slot) = candidates.binary_search(&index) {
            trace[slot].closest = true;
            continue;
        }
        let mut e = entry(rule, Outcome::NotMatched);
        if let Some(at) = at {
            e.failed = Some(Failed {
                condition: rule.conjunct_text[at].clone(),
                saw: ctx.saw(&rule.conjuncts[at]),
            });
        }
        e.closest = true;
        extras.push((index, e));
    }
    if !extras.is_empty() {
        // Keep the trace in policy order: its entries so far are the
        // candidates, which are sorted by rule index.
        let mut all: Vec<(u32, TraceEntry)> = candidates
            .iter()
            .copied()
            .zip(std::mem::take(trace))
            .chain(extras)
            .collect();
        all.sort_by_key(|(index, _)| *index);
        trace.extend(all.into_iter().map(|(_, e)| e));
    }
}

/// Evaluates every rule in order without the tree; the reference the tree
/// is tested against.
pub fn decide_naive(
    set: &PolicySet,
    digest: &crate::decision::Name,
    request: &Request,
) -> Decision {
    let all: Vec<u32> = (0..set.rules.len() as u32).collect();
    let tree = Tree {
        nodes: vec![crate::compile::Node::Leaf { rules: all }],
        root: crate::compile::NodeId(0),
    };
    decide(
        &Compiled {
            set,
            tree: &tree,
            digest,
        },
        request,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_those_of_to_string() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            3600,
            86_399,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            assert_eq!(number(n).as_str(), n.to_string());
        }
        assert_eq!(
            text(&["capped ttl ", "3600", " -> ", "900"]),
            "capped ttl 3600 -> 900"
        );
    }
}
