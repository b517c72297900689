//! Values during evaluation and the operations on them: reading the
//! request, comparing, membership, the builtins and `+`. Nothing here
//! knows about rules or decisions.

use std::borrow::Cow;
use std::cmp::Ordering;

use indexmap::IndexMap;
use serde_json::{json, Value};

use super::error::{EvalError, Found};
use crate::ir::{Attr, Builtin, Dim, Lit};
use crate::schema::Field;
use crate::instant::parse_time;
use crate::request::{Prepared, Request, Sensitivity};
use crate::source::Span;

/// What an approval object reads when no validation saw it.
static UNVERIFIED: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| json!({"verified": false}));

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

pub(super) type Res<T> = Result<T, Box<EvalError>>;

/// A JSON value as a value; `None` for `null`, which reads as missing.
pub(super) fn from_json(value: &Value) -> Option<Val<'_>> {
    Some(match value {
        Value::String(s) => Val::Str(Cow::Borrowed(s)),
        Value::Number(n) => Val::Num(n.as_f64().unwrap_or(f64::NAN)),
        Value::Bool(b) => Val::Bool(*b),
        Value::Null => return None,
        other => Val::Json(other),
    })
}

/// A constant as a value; `None` for a `null` inside data.
pub(super) fn from_lit(lit: &Lit) -> Option<Val<'_>> {
    Some(match lit {
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
///
/// Inlined where it is called: a decision reads about thirty attributes
/// (the tree's switches, the conditions, the templates), and a named one
/// of the table is a field of the request, read in a few instructions
/// once the call and the copy of the value out of it are gone. The
/// others (the time, free attributes) are read by [`other_value`].
#[inline(always)]
pub fn attr_value<'a>(request: &'a Request, prepared: &'a Prepared, attr: &Attr) -> Option<Val<'a>> {
    if matches!(attr, Attr::Extra(..) | Attr::EnvironmentTime) {
        return other_value(request, prepared, attr);
    }
    field_value(attr.field(request)?)
}

/// A named attribute's value as a value.
#[inline(always)]
fn field_value(field: Field<'_>) -> Option<Val<'_>> {
    Some(match field {
        Field::Str(text) => Val::Str(Cow::Borrowed(text)),
        Field::Bool(b) => Val::Bool(b),
        Field::Dur(seconds) => Val::Dur(seconds),
        Field::Level(level) => Val::Level(level),
        Field::Strs(items) => Val::Strs(items),
        Field::Json(value) => from_json(value)?,
    })
}

/// The value of the time or of a free attribute (`Attr::Extra`): what
/// [`attr_value`] reads out of line.
#[inline(never)]
fn other_value<'a>(request: &'a Request, prepared: &'a Prepared, attr: &Attr) -> Option<Val<'a>> {
    match attr {
        // The time is parsed once, by validation.
        Attr::EnvironmentTime => prepared.time.map(Val::Time),
        // An object there reads as validation (or writ's verification of
        // an approval token) left it: never with a broker's `verified`.
        Attr::Extra(Dim::Context, name) if &**name == "approval" => {
            match (&prepared.approval, request.context.get("approval")) {
                (Some(approval), _) => from_json(approval),
                (None, Some(Value::Object(map))) if map.contains_key("verified") => {
                    Some(Val::Json(&UNVERIFIED))
                }
                (None, other) => other.and_then(from_json),
            }
        }
        Attr::Extra(dim, name) => {
            let map = match dim {
                Dim::Subject => &request.subject.extra,
                Dim::Resource => &request.resource.extra,
                Dim::Intent => &request.intent.extra,
                Dim::Environment => &request.environment.extra,
                Dim::Requested => return None,
                Dim::Context => &request.context,
            };
            extra(map, name).and_then(from_json)
        }
        // A named attribute is read by `attr_value`, which sends only the
        // two above here.
        known => field_value(known.field(request)?),
    }
}

/// How many entries of a request's map [`extra`] reads by comparing names
/// instead of hashing the one asked for.
const SCANNED: usize = 8;

/// The value of `name` in one of a request's maps of free attributes: the
/// same as `map.get(name)` (names in a map are unique), but a small map,
/// which a request's maps nearly always are, is read by comparing the
/// names (length first) instead of hashing `name` with the map's SipHash,
/// which costs more than the few comparisons.
#[inline]
fn extra<'a>(map: &'a IndexMap<String, Value>, name: &str) -> Option<&'a Value> {
    if map.len() <= SCANNED {
        map.iter()
            .find(|(key, _)| key.as_str() == name)
            .map(|(_, value)| value)
    } else {
        map.get(name)
    }
}

pub(super) fn type_name(val: &Val) -> &'static str {
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

/// A value's type and JSON, for an error.
pub(super) fn found(val: &Val) -> Found {
    Found {
        ty: type_name(val),
        value: to_json(val),
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
        Val::Dur(d) => Value::String(seconds_text(*d)),
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

/// A duration as the trace shows it, `3600s`: the digits of `seconds`
/// and an `s`, written without the formatting machinery.
fn seconds_text(seconds: u64) -> String {
    let mut buffer = [0u8; 20];
    let digits = crate::decision::digits(seconds, &mut buffer);
    let mut text = String::with_capacity(digits.len() + 1);
    text.push_str(digits);
    text.push('s');
    text
}

pub(super) fn format_time(nanos: i128) -> String {
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

/// `a == b`; an error for types that do not compare.
pub(super) fn equal(a: &Val, b: &Val, span: Span) -> Res<bool> {
    let mismatch = || {
        Box::new(EvalError::Compare {
            left: found(a),
            right: found(b),
            span,
        })
    };
    Ok(match (a, b) {
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Num(x), Val::Num(y)) => x == y,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Dur(x), Val::Dur(y)) => x == y,
        (Val::Dur(d), Val::Num(n)) | (Val::Num(n), Val::Dur(d)) => *d as f64 == *n,
        (Val::Level(x), Val::Level(y)) => x == y,
        // A level named by a string from the data or the request.
        (Val::Level(x), Val::Str(name)) | (Val::Str(name), Val::Level(x)) => {
            match Sensitivity::from_name(name) {
                Some(y) => *x == y,
                None => return Err(mismatch()),
            }
        }
        (Val::Time(x), other) | (other, Val::Time(x)) => match as_time(other) {
            Some(y) => *x == y,
            None => return Err(mismatch()),
        },
        _ => match (list_items(a), list_items(b)) {
            (Some(l), Some(r)) => {
                if l.len() != r.len() {
                    return Ok(false);
                }
                for (x, y) in l.iter().zip(r.iter()) {
                    if !equal(x, y, span)? {
                        return Ok(false);
                    }
                }
                true
            }
            _ => match (a, b) {
                (Val::Json(x @ Value::Object(_)), Val::Json(y @ Value::Object(_))) => x == y,
                _ => return Err(mismatch()),
            },
        },
    })
}

/// How `a` orders against `b`; an error for values with no order.
pub(super) fn order(a: &Val, b: &Val, span: Span) -> Res<Ordering> {
    let ord = match (a, b) {
        (Val::Num(x), Val::Num(y)) => x.partial_cmp(y),
        (Val::Dur(x), Val::Dur(y)) => Some(x.cmp(y)),
        (Val::Dur(d), Val::Num(n)) => (*d as f64).partial_cmp(n),
        (Val::Num(n), Val::Dur(d)) => n.partial_cmp(&(*d as f64)),
        (Val::Level(x), Val::Level(y)) => Some(x.cmp(y)),
        (Val::Level(x), Val::Str(name)) => Sensitivity::from_name(name).map(|y| x.cmp(&y)),
        (Val::Str(name), Val::Level(y)) => Sensitivity::from_name(name).map(|x| x.cmp(y)),
        _ => match (as_time(a), as_time(b)) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => None,
        },
    };
    ord.ok_or_else(|| {
        Box::new(EvalError::Order {
            left: found(a),
            right: found(b),
            span,
        })
    })
}

/// A list's elements; `None` for a value that is not a list or a list
/// holding a null.
pub(super) fn list_items<'a>(val: &Val<'a>) -> Option<Vec<Val<'a>>> {
    match val {
        Val::Lits(items) => items.iter().map(from_lit).collect(),
        Val::Strs(items) => Some(
            items
                .iter()
                .map(|s| Val::Str(Cow::Borrowed(s.as_str())))
                .collect(),
        ),
        Val::Json(Value::Array(items)) => items.iter().map(from_json).collect(),
        _ => None,
    }
}

/// How many items [`list_items`] would give, without collecting them:
/// `None` exactly when it gives `None` (not a list, or a list holding a
/// `null`).
pub(super) fn list_len(val: &Val<'_>) -> Option<usize> {
    match val {
        Val::Lits(items) => items
            .iter()
            .all(|item| from_lit(item).is_some())
            .then_some(items.len()),
        Val::Strs(items) => Some(items.len()),
        Val::Json(Value::Array(items)) => items
            .iter()
            .all(|item| !item.is_null())
            .then_some(items.len()),
        _ => None,
    }
}

/// The items of a list one by one, the ones [`list_items`] would collect
/// (and `None` exactly when it gives `None`), without a vector.
pub(super) fn list_iter<'a>(val: &Val<'a>) -> Option<ListIter<'a>> {
    list_len(val)?;
    Some(match *val {
        Val::Lits(items) => ListIter::Lits(items.iter()),
        Val::Strs(items) => ListIter::Strs(items.iter()),
        Val::Json(Value::Array(items)) => ListIter::Json(items.iter()),
        _ => return None,
    })
}

/// The items of a list, see [`list_iter`].
pub(super) enum ListIter<'a> {
    /// Constants.
    Lits(std::slice::Iter<'a, Lit>),
    /// Strings of the request.
    Strs(std::slice::Iter<'a, String>),
    /// A JSON array.
    Json(std::slice::Iter<'a, Value>),
}

impl<'a> Iterator for ListIter<'a> {
    type Item = Val<'a>;

    fn next(&mut self) -> Option<Val<'a>> {
        // `list_iter` checked that no item is a `null`, so `from_lit` and
        // `from_json` give a value for each.
        match self {
            ListIter::Lits(items) => items.next().and_then(from_lit),
            ListIter::Strs(items) => items.next().map(|s| Val::Str(Cow::Borrowed(s.as_str()))),
            ListIter::Json(items) => items.next().and_then(from_json),
        }
    }
}

/// Membership, typed like `==`: true when an element equals the needle;
/// otherwise an error when some element could not be compared with it (a
/// value of another type, or a null), and false only when every element
/// was compared and none was equal. So `42 not in ["push"]` is an error,
/// not true: a requester cannot slip past a list by sending another type.
pub(super) fn contains(list: &Val, needle: &Val, span: Span) -> Res<bool> {
    let mut error: Option<Box<EvalError>> = None;
    let mut check = |item: Option<Val>| match item
        .ok_or_else(|| Box::new(EvalError::Null { span }))
        .and_then(|item| equal(needle, &item, span))
    {
        Ok(found) => found,
        Err(e) => {
            error.get_or_insert(e);
            false
        }
    };
    let found = match list {
        Val::Lits(items) => items.iter().any(|l| check(from_lit(l))),
        Val::Strs(items) => match needle {
            Val::Str(n) => items.iter().any(|s| s == n),
            _ => items
                .iter()
                .any(|s| check(Some(Val::Str(Cow::Borrowed(s.as_str()))))),
        },
        Val::Json(Value::Array(items)) => items.iter().any(|v| check(from_json(v))),
        other => {
            return Err(Box::new(EvalError::Operand {
                op: "in",
                needs: "a list",
                found: found(other),
                span,
            }))
        }
    };
    match error {
        Some(e) if !found => Err(e),
        _ => Ok(found),
    }
}

/// True for a value that says nothing, which `has` counts as absent: an
/// empty string, an empty list or object, and `false`. (A null never gets
/// here: it reads as missing.)
pub(crate) fn says_nothing(value: &Val) -> bool {
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

/// A builtin applied to its (already evaluated) arguments; the checker
/// guarantees their number.
pub(super) fn call<'a>(builtin: Builtin, args: &[Val<'a>], span: Span) -> Res<Val<'a>> {
    let string = |v: &Val<'a>| match v {
        Val::Str(s) => Ok(s.clone()),
        other => Err(Box::new(EvalError::NotString {
            found: found(other),
            span,
        })),
    };
    let arg = |n: usize| {
        args.get(n)
            .ok_or_else(|| Box::new(EvalError::Unsupported { span }))
    };
    match builtin {
        Builtin::Len => match arg(0)? {
            Val::Str(s) => Ok(Val::Num(s.chars().count() as f64)),
            other => list_len(other)
                .map(|len| Val::Num(len as f64))
                .ok_or_else(|| {
                    Box::new(EvalError::OperandType {
                        op: "len",
                        needs: "a list or a string",
                        ty: type_name(other),
                        span,
                    })
                }),
        },
        Builtin::Contains => match arg(0)? {
            Val::Str(s) => Ok(Val::Bool(s.contains(&*string(arg(1)?)?))),
            list => Ok(Val::Bool(contains(list, arg(1)?, span)?)),
        },
        Builtin::StartsWith => Ok(Val::Bool(string(arg(0)?)?.starts_with(&*string(arg(1)?)?))),
        Builtin::EndsWith => Ok(Val::Bool(string(arg(0)?)?.ends_with(&*string(arg(1)?)?))),
        Builtin::Lower => Ok(Val::Str(Cow::Owned(string(arg(0)?)?.to_lowercase()))),
        Builtin::Min => min(args, span),
    }
}

/// `min(a, b, ...)`: the least number when every argument is a number,
/// else the least duration (each argument read as one).
fn min<'a>(args: &[Val<'a>], span: Span) -> Res<Val<'a>> {
    if args.iter().all(|a| matches!(a, Val::Num(_))) {
        let least = args
            .iter()
            .filter_map(|a| match a {
                Val::Num(n) => Some(*n),
                _ => None,
            })
            .fold(f64::INFINITY, f64::min);
        return Ok(Val::Num(least));
    }
    let mut least = u64::MAX;
    for arg in args {
        least = least.min(duration(arg, span)?);
    }
    Ok(Val::Dur(least))
}

/// A value read as a duration in seconds: a duration, a whole number of
/// seconds (at least 0), or a string written like a duration literal
/// (`"15m"`), as data files write them. Anything else is an error.
pub(super) fn duration(val: &Val, span: Span) -> Res<u64> {
    let seconds = match val {
        Val::Dur(d) => Some(*d),
        Val::Num(n) if n.fract() == 0.0 && *n >= 0.0 && *n <= u64::MAX as f64 => Some(*n as u64),
        Val::Str(text) => duration_text(text),
        _ => None,
    };
    seconds.ok_or_else(|| {
        Box::new(EvalError::NotDuration {
            found: found(val),
            span,
        })
    })
}

/// `"15m"`, `"1h30m"`: the text of one duration literal, in seconds.
fn duration_text(text: &str) -> Option<u64> {
    let (tokens, errors) = crate::lexer::lex(crate::source::FileId(0), text);
    match (errors.is_empty(), tokens.as_slice()) {
        (true, [one]) => match one.token {
            crate::lexer::Token::Dur(seconds) => Some(seconds),
            _ => None,
        },
        _ => None,
    }
}

/// `until t`: the whole seconds from `now` (the request's
/// `environment.time`) to the instant `t`; 0 when `t` is not after `now`.
pub(super) fn until(now: i128, target: &Val, span: Span) -> Res<u64> {
    let Some(t) = as_time(target) else {
        return Err(Box::new(EvalError::NotTime {
            found: found(target),
            span,
        }));
    };
    let seconds = (t - now).max(0) / 1_000_000_000;
    Ok(u64::try_from(seconds).unwrap_or(u64::MAX))
}

/// A value's instant, for traces: the instant in RFC 3339 when it is one.
pub(super) fn instant_text(val: &Val) -> Option<String> {
    as_time(val).map(format_time)
}

/// `a * b`: two numbers, or a duration scaled by a number of at least 0
/// (either way round), rounded down to whole seconds.
pub(super) fn multiply<'a>(a: &Val<'a>, b: &Val<'a>, span: Span) -> Res<Val<'a>> {
    let scale = |d: u64, n: f64, number: &Val| {
        if !(n.is_finite() && n >= 0.0) {
            return Err(Box::new(EvalError::Operand {
                op: "*",
                needs: "a number of at least 0 to scale a duration",
                found: found(number),
                span,
            }));
        }
        let seconds = (d as f64 * n).floor();
        if seconds >= u64::MAX as f64 {
            return Err(Box::new(EvalError::DurationOverflow { span }));
        }
        Ok(Val::Dur(seconds as u64))
    };
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => Ok(Val::Num(x * y)),
        (Val::Dur(d), number @ Val::Num(n)) | (number @ Val::Num(n), Val::Dur(d)) => {
            scale(*d, *n, number)
        }
        _ => Err(Box::new(EvalError::Multiply {
            left: type_name(a),
            right: type_name(b),
            span,
        })),
    }
}

/// `a + b`: numbers, durations, and an instant plus a duration.
pub(super) fn add<'a>(a: &Val<'a>, b: &Val<'a>, span: Span) -> Res<Val<'a>> {
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => Ok(Val::Num(x + y)),
        (Val::Dur(x), Val::Dur(y)) => x
            .checked_add(*y)
            .map(Val::Dur)
            .ok_or_else(|| Box::new(EvalError::DurationOverflow { span })),
        (t, Val::Dur(d)) => match as_time(t) {
            Some(t) => Ok(Val::Time(t + i128::from(*d) * 1_000_000_000)),
            None => Err(Box::new(EvalError::AddDuration { to: found(t), span })),
        },
        _ => Err(Box::new(EvalError::Add {
            left: type_name(a),
            right: type_name(b),
            span,
        })),
    }
}
