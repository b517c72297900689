//! The request a broker sends: contract.md's JSON, as serde types.
//!
//! Every field is optional and every object may carry more attributes, which
//! land in the `extra` maps and stay reachable by path. Named fields have
//! fixed types; a wrong type is rejected with an error naming the field.

use miette::Diagnostic;
use serde_json::Value;
use thiserror::Error;

pub(crate) use crate::instant::parse_time;
use crate::scope::ScopeItem;

pub mod json;
pub(crate) mod typed;

pub use json::{JsonError, Limits, MAX_REQUEST_BYTES};

pub use crate::sensitivity::Sensitivity;

pub use crate::schema::{Environment, Intent, Request, Requested, Resource, Subject};


/// A request that cannot be decided.
#[derive(Debug, Clone, PartialEq, Error, Diagnostic)]
pub enum RequestError {
    /// `{"subject": {"attested": "yes"}}`, `not json`
    #[error("invalid request at `{path}`: {message}")]
    #[diagnostic(code(writ::request::invalid))]
    Invalid {
        /// Where in the document (`subject.attested`, `.` for the root).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// `{"environment": {"time": "yesterday"}}`
    #[error("`environment.time` is not an RFC 3339 timestamp: `{value}`")]
    #[diagnostic(
        code(writ::request::bad_time),
        help("write it like `2026-11-22T10:00:00Z`")
    )]
    BadTime {
        /// The value given.
        value: String,
    },
    /// `{"requested": {"scope": ["read:a//b"]}}`
    #[error("`requested.scope[{index}]` is not a valid scope item: {reason}")]
    #[diagnostic(code(writ::request::bad_scope))]
    BadScope {
        /// Which item.
        index: usize,
        /// Why.
        reason: String,
    },
    /// A document the JSON reader refuses: not JSON, a duplicate key, too
    /// deep (`{"a": 1, "a": 2}`).
    #[error(transparent)]
    #[diagnostic(transparent)]
    Json(#[from] JsonError),
}

/// How deeply a request document may nest (objects and arrays).
pub const MAX_JSON_DEPTH: usize = 64;

impl Request {
    /// Parses and validates a request from JSON text.
    pub fn from_json(text: &str) -> Result<Request, RequestError> {
        Request::parse_json(text).map(|(request, _)| request)
    }

    /// Parses and validates a request, returning what validation derived
    /// too, so that deciding it does not validate it again. The text is read
    /// by the JSON reader (`request::json::read_str`) (duplicate keys and nesting deeper than
    /// [`MAX_JSON_DEPTH`] refused, a leading byte order mark skipped); its
    /// size is the caller's to limit.
    pub fn parse_json(text: &str) -> Result<(Request, Prepared), RequestError> {
        let limits = Limits {
            max_bytes: usize::MAX,
            max_depth: MAX_JSON_DEPTH,
        };
        // The fast path: one pass from the text straight into writ's types,
        // with the reader's checks (duplicate keys, depth) made on the way
        // (`request::typed`). A request it does not take is read the
        // careful way: the checking pass, serde's typed parse, and for a
        // request that is refused, the value path, for an error that names
        // the field. `request_parses_agree` tests that the paths agree.
        let body = json::prepare(text, limits)?;
        if let Some(request) = typed::read(body, MAX_JSON_DEPTH) {
            let prepared = request.validate()?;
            return Ok((request, prepared));
        }
        let body = json::check_str(text, limits)?;
        if body.trim_start().starts_with('{') {
            if let Ok(request) = serde_json::from_str::<Request>(body) {
                let prepared = request.validate()?;
                return Ok((request, prepared));
            }
        }
        Request::from_value(json::read_str(text, limits)?)
    }

    /// Reads and validates a request from a document the JSON reader
    /// produced (or any [`Value`]): the same checks and errors as
    /// [`Request::parse_json`].
    pub fn from_value(value: Value) -> Result<(Request, Prepared), RequestError> {
        let Value::Object(map) = &value else {
            return Err(RequestError::Invalid {
                path: ".".to_owned(),
                message: format!(
                    "a request must be a JSON object, found {}",
                    json_kind(&value)
                ),
            });
        };
        // serde's derive also reads a struct from an array, by position, so
        // `{"subject": [{"id": "x"}]}` would pass; these must be objects.
        for dim in crate::schema::Dim::ALL {
            let field = dim.name();
            match map.get(field) {
                None | Some(Value::Object(_)) => {}
                Some(other) => {
                    return Err(RequestError::Invalid {
                        path: field.to_owned(),
                        message: format!("expected a JSON object, found {}", json_kind(other)),
                    })
                }
            }
        }
        if json_value_depth(&value) > MAX_JSON_DEPTH {
            return Err(JsonError::TooDeep {
                limit: MAX_JSON_DEPTH,
                path: ".".to_owned(),
            }
            .into());
        }
        let request: Request = serde_path_to_error::deserialize(value).map_err(|error| {
            let path = error.path().to_string();
            RequestError::Invalid {
                path,
                message: error.into_inner().to_string(),
            }
        })?;
        let prepared = request.validate()?;
        Ok((request, prepared))
    }

    /// Checks what serde cannot: the timestamp, the TTL and the scope
    /// items. The same item asked for twice is kept once, where it first
    /// appears.
    pub fn validate(&self) -> Result<Prepared, RequestError> {
        let others = [
            ("subject", &self.subject.extra),
            ("resource", &self.resource.extra),
            ("intent", &self.intent.extra),
            ("environment", &self.environment.extra),
            ("context", &self.context),
        ];
        for (dim, map) in others {
            for (name, value) in map {
                if !holds_null(value) {
                    continue;
                }
                if let Some(path) = null_in(value, &mut format!("{dim}.{name}")) {
                    return Err(RequestError::Invalid {
                        path,
                        message: "`null` is not a value: leave the field out when there is nothing to say".to_owned(),
                    });
                }
            }
        }
        // Named attributes that hold JSON (a list of objects, a typed key
        // of `context`): no nulls inside, and a typed key of the right type.
        // A string, a bool, a duration, a level, a timestamp or a list of
        // strings is never read as JSON (its Rust type is a `String`,
        // `bool`, `u64`, `Sensitivity` or `Vec<String>`): only the other
        // attributes, listed once, are read (the unit test
        // `only_lists_and_open_types_read_as_json` holds the table to
        // this).
        for def in json_attributes() {
            let Some(crate::schema::Field::Json(value)) = def.attr.field(self) else {
                continue;
            };
            if !def.ty.fits(value) {
                return Err(RequestError::Invalid {
                    path: def.path.to_owned(),
                    message: format!("expected a {}, found {}", def.ty.name(), json_kind(value)),
                });
            }
            if let Some(path) = null_in(value, &mut def.path.to_owned()) {
                return Err(RequestError::Invalid {
                    path,
                    message: "`null` is not a value: leave the field out when there is nothing to say".to_owned(),
                });
            }
        }
        if self.requested.ttl == Some(0) {
            return Err(RequestError::Invalid {
                path: "requested.ttl".to_owned(),
                message: "a ttl of 0 seconds is not a lifetime; ask for at least 1 second, or leave `ttl` out".to_owned(),
            });
        }
        let time = match &self.environment.time {
            Some(value) => Some(parse_time(value).ok_or_else(|| RequestError::BadTime {
                value: value.clone(),
            })?),
            None => None,
        };
        let items = self.requested.scope.as_deref().unwrap_or_default();
        let mut scope: Vec<ScopeItem> = Vec::with_capacity(items.len());
        // Repeats are found by a scan of the few items kept so far, or,
        // for a long list, by a set (only asked, never iterated, so its
        // order cannot leak into the decision).
        let mut seen = (items.len() > 16).then(std::collections::HashSet::new);
        for (index, item) in items.iter().enumerate() {
            let repeat = match &mut seen {
                Some(seen) => !seen.insert(item.as_str()),
                None => scope.iter().any(|kept| kept.as_str() == item),
            };
            if repeat {
                continue;
            }
            scope.push(
                ScopeItem::parse(item).map_err(|error| RequestError::BadScope {
                    index,
                    reason: error.to_string(),
                })?,
            );
        }
        Ok(Prepared {
            time,
            scope,
            approval: unverified_approval(self.context.get("approval")),
        })
    }
}

/// The named attributes that may be read as JSON ([`may_hold_json`]),
/// listed on first use.
fn json_attributes() -> &'static [&'static crate::schema::AttrDef] {
    static LIST: std::sync::OnceLock<Vec<&'static crate::schema::AttrDef>> =
        std::sync::OnceLock::new();
    LIST.get_or_init(|| {
        crate::schema::ATTRIBUTES
            .iter()
            .filter(|def| may_hold_json(def.ty))
            .collect()
    })
}

/// Whether a named attribute of this type may be read as JSON
/// ([`crate::schema::Field::Json`]): a list of objects or mixed values, a
/// number, or a type known only when the request arrives.
fn may_hold_json(ty: crate::schema::Ty) -> bool {
    use crate::schema::Ty;
    !matches!(
        ty,
        Ty::Str | Ty::Bool | Ty::Dur | Ty::Level | Ty::Time | Ty::StrList
    )
}

/// `context.approval` as the evaluator reads it when it is an object
/// holding `verified`: a copy with `verified` set to `false`. Only writ's
/// own verification of an approval token (the `identity` feature) makes it
/// read `true`; whatever a broker or a caller wrote there does not. An
/// object without `verified` reads as sent (`verified` absent); a string
/// (`"yes"`, an unverified token) stays a string, with no `verified` to
/// test.
fn unverified_approval(approval: Option<&Value>) -> Option<Value> {
    let Some(Value::Object(map)) = approval else {
        return None;
    };
    if !map.contains_key("verified") {
        return None;
    }
    let mut map = map.clone();
    map.insert("verified".to_owned(), Value::Bool(false));
    Some(Value::Object(map))
}

/// True when `value` is or holds a `null` (the quick test, without paths).
fn holds_null(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.iter().any(holds_null),
        Value::Object(map) => map.values().any(holds_null),
        _ => false,
    }
}

/// The path of the first `null` in `value`, which sits at `path`: a
/// request never holds one. Named fields refuse it when they are read
/// ([`present`]); this finds it among the attributes the contract does not
/// name. The recursion is bounded by [`MAX_JSON_DEPTH`], which every way of
/// reading a request enforces first.
fn null_in(value: &Value, path: &mut String) -> Option<String> {
    match value {
        Value::Null => Some(path.clone()),
        Value::Array(items) => items.iter().enumerate().find_map(|(index, item)| {
            let len = path.len();
            path.push_str(&format!("[{index}]"));
            let found = null_in(item, path);
            path.truncate(len);
            found
        }),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            let len = path.len();
            path.push('.');
            path.push_str(key);
            let found = null_in(item, path);
            path.truncate(len);
            found
        }),
        _ => None,
    }
}

/// What validation derives from a request: its time and parsed scope items.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// `environment.time` in Unix nanoseconds.
    pub time: Option<i128>,
    /// `requested.scope`, parsed.
    pub scope: Vec<ScopeItem>,
    /// What `context.approval` reads when the request holds an object
    /// there: with `verified` forced to `false` by validation, or the
    /// approval writ verified (`identity::Attestation::prepare`).
    pub approval: Option<Value>,
}

/// How a JSON value's type is named in error messages.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The nesting of a value (a scalar is 0). Values come from the reader,
/// which already bounds the recursion.
fn json_value_depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(json_value_depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(json_value_depth).max().unwrap_or(0),
        _ => 0,
    }
}


/// The deepest nesting of `{`/`[` in a JSON text (strings skipped), so that
/// hostile bodies are refused before a recursive parser sees them.
pub fn json_depth(text: &str) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for byte in text.bytes() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Validation skips the named attributes whose type never reads as
    /// JSON; with every named attribute sent, each is read, and none of
    /// the skipped types reads as JSON.
    #[test]
    fn only_lists_and_open_types_read_as_json() {
        use crate::schema::{Field, Ty, ATTRIBUTES};
        let mut request = serde_json::Map::new();
        for def in ATTRIBUTES {
            let value = match def.ty {
                Ty::Str | Ty::Any => Value::from("text"),
                Ty::Num | Ty::Dur => Value::from(60),
                Ty::Bool => Value::from(true),
                Ty::Level => Value::from("internal"),
                Ty::Time => Value::from("2026-11-22T10:00:00Z"),
                Ty::StrList => serde_json::json!(["read:db://a"]),
                Ty::List => serde_json::json!([{"sub": "a"}]),
            };
            match def.dim {
                Some(dim) => {
                    let object = request
                        .entry(dim.name())
                        .or_insert_with(|| Value::Object(serde_json::Map::new()));
                    if let Value::Object(object) = object {
                        object.insert(def.field.to_owned(), value);
                    }
                }
                None => {
                    request.insert(def.field.to_owned(), value);
                }
            }
        }
        let text = Value::Object(request).to_string();
        let (request, _) = Request::parse_json(&text).unwrap();
        let mut json = 0;
        for def in ATTRIBUTES {
            let field = def.attr.field(&request);
            assert!(field.is_some(), "{} is not read from {text}", def.path);
            if let Some(Field::Json(_)) = field {
                assert!(may_hold_json(def.ty), "{} reads as JSON", def.path);
                json += 1;
            }
        }
        assert!(json > 0, "no named attribute reads as JSON");
    }

    #[test]
    fn a_brokers_approval_never_reads_verified() {
        let prepared = |text: &str| {
            Request::parse_json(text)
                .map(|(_, prepared)| prepared.approval)
                .expect("a valid request")
        };
        assert_eq!(
            prepared(r#"{"context":{"approval":{"by":"a@acme.io","verified":true}}}"#),
            Some(serde_json::json!({"by": "a@acme.io", "verified": false}))
        );
        // Nothing to override: read as sent.
        assert_eq!(prepared(r#"{"context":{"approval":{"by":"a"}}}"#), None);
        assert_eq!(prepared(r#"{"context":{"approval":"yes"}}"#), None);
        assert_eq!(prepared(r#"{"context":{}}"#), None);
    }

    #[test]
    fn parses_the_contract_example() {
        let request = Request::from_json(
            r#"{"subject":{"id":"spiffe://x","kind":"ci","attested":true,"repository":"acme/p"},
                "action":"deploy","sensitivity":"confidential",
                "environment":{"time":"2026-11-22T10:00:00Z"},
                "requested":{"scope":["deploy:k8s://prod-eu/payments"],"ttl":900},
                "context":{"recent_issuances":2}}"#,
        )
        .expect("valid");
        assert_eq!(request.subject.kind.as_deref(), Some("ci"));
        assert_eq!(request.subject.extra["repository"], "acme/p");
        assert_eq!(request.sensitivity, Some(Sensitivity::Confidential));
        assert_eq!(request.requested.ttl, Some(900));
    }

    #[test]
    fn wrong_type_names_the_field() {
        let error = Request::from_json(r#"{"subject":{"attested":"yes"}}"#).unwrap_err();
        assert!(error.to_string().contains("subject.attested"), "{error}");
    }

    #[test]
    fn unknown_sensitivity_is_rejected() {
        let error = Request::from_json(r#"{"sensitivity":"secret"}"#).unwrap_err();
        assert!(error.to_string().contains("sensitivity"), "{error}");
    }

    #[test]
    fn bad_time_and_scope_are_rejected() {
        assert!(matches!(
            Request::from_json(r#"{"environment":{"time":"noon"}}"#),
            Err(RequestError::BadTime { .. })
        ));
        assert!(matches!(
            Request::from_json(r#"{"requested":{"scope":["read:a//b"]}}"#),
            Err(RequestError::BadScope { index: 0, .. })
        ));
    }

    #[test]
    fn negative_ttl_and_trailing_garbage_are_rejected() {
        assert!(Request::from_json(r#"{"requested":{"ttl":-1}}"#).is_err());
        assert!(Request::from_json(r#"{} x"#).is_err());
        assert!(Request::from_json(r#"{"sensitivty":"public"}"#).is_err());
    }

    #[test]
    fn arrays_are_not_read_by_position() {
        assert!(Request::from_json(r#"[{"id":"x","attested":true},"read"]"#).is_err());
        let error = Request::from_json(r#"{"requested": [["read:db://x"], 60]}"#).unwrap_err();
        assert!(error.to_string().contains("requested"), "{error}");
        assert!(Request::from_json(r#"{"requested": {"ttl": 60}}"#).is_ok());
    }

    #[test]
    fn null_is_refused_everywhere_naming_where() {
        for (text, path) in [
            (r#"{"subject":{"owner":null}}"#, "subject.owner"),
            (r#"{"subject":null}"#, "subject"),
            (r#"{"context":null}"#, "context"),
            (r#"{"action":null}"#, "action"),
            (r#"{"sensitivity":null}"#, "sensitivity"),
            (r#"{"requested":{"ttl":null}}"#, "requested.ttl"),
            (
                r#"{"requested":{"scope":["read:x",null]}}"#,
                "requested.scope",
            ),
            (r#"{"environment":{"time":null}}"#, "environment.time"),
            (r#"{"context":{"approval":null}}"#, "context.approval"),
            (
                r#"{"context":{"exception":{"id":null}}}"#,
                "context.exception.id",
            ),
            (
                r#"{"subject":{"claims":[1,{"a":null}]}}"#,
                "subject.claims[1].a",
            ),
        ] {
            match Request::from_json(text) {
                Err(RequestError::Invalid { path: at, .. }) => {
                    assert!(at.starts_with(path), "{text}: {at}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn ttl_0_is_refused_and_repeated_items_kept_once() {
        match Request::from_json(r#"{"requested":{"ttl":0}}"#) {
            Err(RequestError::Invalid { path, .. }) => assert_eq!(path, "requested.ttl"),
            other => panic!("{other:?}"),
        }
        assert!(Request::from_json(r#"{"requested":{"ttl":1}}"#).is_ok());
        let (_, prepared) = Request::parse_json(
            r#"{"requested":{"scope":["read:b","read:a","read:b","read:a","read:c"]}}"#,
        )
        .expect("valid");
        let items: Vec<&str> = prepared.scope.iter().map(|i| i.as_str()).collect();
        assert_eq!(items, ["read:b", "read:a", "read:c"]);
        // A long list takes the other path, to the same effect.
        let long: Vec<String> = (0..60)
            .map(|i| format!("read:x/{}", (i * 7) % 20))
            .collect();
        let text = serde_json::json!({"requested": {"scope": long}}).to_string();
        let (_, prepared) = Request::parse_json(&text).expect("valid");
        let items: Vec<&str> = prepared.scope.iter().map(|i| i.as_str()).collect();
        let mut expected: Vec<&str> = Vec::new();
        for item in &long {
            if !expected.contains(&item.as_str()) {
                expected.push(item);
            }
        }
        assert_eq!(items, expected);
        assert_eq!(items.len(), 20);
    }

    /// The version-2 fields (contract.md, "Additions") are typed: a value
    /// of another type is refused naming the field, on both ways of reading
    /// a request. `context` stays free-form, so `context.risk_score` of any
    /// type is read and a policy comparing it with a number errs (fails
    /// closed) instead (tests/core/fail_closed.json).
    #[test]
    fn version_2_fields_are_typed() {
        for (text, path) in [
            (r#"{"subject":{"token":5}}"#, "subject.token"),
            (r#"{"subject":{"state":true}}"#, "subject.state"),
            (r#"{"subject":{"act":"x"}}"#, "subject.act"),
            (r#"{"subject":{"act":[{"id":"a"},"b"]}}"#, "subject.act[1]"),
            (r#"{"subject":{"act":[{"id":null}]}}"#, "subject.act"),
            (r#"{"intent":{"actions":"deploy"}}"#, "intent.actions"),
            (r#"{"intent":{"actions":["read",2]}}"#, "intent.actions[1]"),
        ] {
            for result in [
                Request::from_json(text).map(|_| ()),
                Request::from_value(serde_json::from_str(text).expect("json")).map(|_| ()),
            ] {
                match result {
                    Err(RequestError::Invalid { path: at, .. }) => {
                        assert!(at.starts_with(path), "{text}: {at}")
                    }
                    other => panic!("{text}: {other:?}"),
                }
            }
        }
        let request = Request::from_json(
            r#"{"subject":{"token":"e.y.J","state":"active","act":[{"id":"a","kind":"agent"}]},
                "intent":{"actions":["read","write"]},"context":{"risk_score":"high"}}"#,
        )
        .expect("valid");
        assert_eq!(request.subject.token.as_deref(), Some("e.y.J"));
        assert_eq!(request.subject.state.as_deref(), Some("active"));
        assert_eq!(
            request.subject.act.as_ref().map(|act| act.as_value()[0]["kind"].clone()),
            Some(Value::from("agent"))
        );
        assert_eq!(
            request.intent.actions.as_deref(),
            Some(&["read".to_owned(), "write".to_owned()][..])
        );
        assert!(request.subject.extra.is_empty() && request.intent.extra.is_empty());
        assert_eq!(request.context["risk_score"], "high");
    }

    #[test]
    fn deep_json_is_refused() {
        let deep = format!("{{\"context\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(matches!(
            Request::from_json(&deep),
            Err(RequestError::Json(JsonError::TooDeep { .. }))
        ));
    }

    /// [`Request::parse_json`]'s fast path (a typed parse of the text) and
    /// [`Request::from_value`] (what the batch and AuthZEN endpoints use)
    /// accept and refuse the same requests.
    #[test]
    fn request_parses_agree() {
        for text in [
            r#"{}"#,
            r#"{"subject":{"id":"a","x":[1,{"y":2}]},"action":"read","sensitivity":"internal"}"#,
            r#"{"subject":{"attested":"yes"}}"#,
            r#"{"subject":[{"id":"x"}]}"#,
            r#"{"requested":[["read:db://x"],60]}"#,
            r#"{"requested":{"scope":["read:db://x"],"ttl":60}}"#,
            r#"{"requested":{"ttl":60,"extra":1}}"#,
            r#"{"requested":{"ttl":1.5}}"#,
            r#"{"requested":{"ttl":18446744073709551616}}"#,
            r#"{"intent":["deploy"]}"#,
            r#"{"environment":{"time":null,"name":"prod"}}"#,
            r#"{"context":{"a":{"b":[null,true]}}}"#,
            r#"{"context":[]}"#,
            r#"{"sensitivity":null}"#,
            r#"{"sensitivity":"Public"}"#,
            r#"{"action":null,"resource":{"id":null}}"#,
            r#"{"subject":{"id":"a","id2":"b"},"resource":{"kind":"db","owner":7}}"#,
            r#"{"unknown":1}"#,
            r#"[]"#,
            r#""x""#,
            r#"null"#,
        ] {
            let fast = Request::parse_json(text);
            let value: Value = serde_json::from_str(text).expect("json");
            let slow = Request::from_value(value);
            match (&fast, &slow) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{text}"),
                (Err(_), Err(_)) => {}
                _ => panic!("{text}: {fast:?} / {slow:?}"),
            }
        }
    }

    #[test]
    fn a_wrong_sensitivity_names_the_field_and_the_levels() {
        for text in [
            r#"{"sensitivity": 5}"#,
            r#"{"sensitivity": "secret"}"#,
            r#"{"sensitivity": ["public"]}"#,
        ] {
            let error = Request::from_json(text).expect_err(text).to_string();
            assert!(error.contains("`sensitivity`"), "{error}");
            for level in ["`public`", "`internal`", "`confidential`", "`restricted`"] {
                assert!(error.contains(level), "{error}");
            }
        }
        assert_eq!(
            Request::from_json(r#"{"sensitivity": "restricted"}"#)
                .expect("valid")
                .sensitivity,
            Some(Sensitivity::Restricted)
        );
        // null is refused like every other null in a request, naming the field.
        let error = Request::from_json(r#"{"sensitivity": null}"#)
            .expect_err("null is refused")
            .to_string();
        assert!(error.contains("`sensitivity`"), "{error}");
    }

    #[test]
    fn duplicate_keys_are_refused_and_a_bom_is_skipped() {
        let error = Request::from_json(r#"{"subject":{"attested":false,"attested":true}}"#)
            .expect_err("duplicate");
        assert!(
            matches!(&error, RequestError::Json(JsonError::DuplicateKey { path }) if path == "subject.attested"),
            "{error}"
        );
        assert!(Request::from_json(r#"{"context":{"a":1,"a":1}}"#).is_err());
        assert!(Request::from_json("\u{feff}{\"action\":\"read\"}").is_ok());
    }
}
