//! The OpenID AuthZEN 1.0 Access Evaluation API, mapped onto writ's request.
//!
//! | AuthZEN | writ |
//! |---|---|
//! | `subject.id` | `subject.id` |
//! | `subject.type` | `subject.kind` (unless a `kind` property is given) and `subject.type` |
//! | `subject.properties.P` | `subject.P`, and the object itself as `subject.properties` |
//! | `action.name` | `action` |
//! | `action.properties` | `context.action` |
//! | `resource.id`, `.type`, `.properties` | like the subject's |
//! | `context.intent`, `.environment`, `.sensitivity`, `.requested` | the top-level fields of the same names |
//! | any other `context.K` | `context.K` |
//!
//! The `properties` object is kept as well as lifted because a policy can
//! name some properties only through it: `resource.ownerID` is too close to
//! `resource.owner` for the checker, `resource.properties.ownerID` is not.

use serde_json::{Map, Value};

use crate::request::{Prepared, Request};

/// A request the mapping (or writ's own validation) refused: where and why.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MapError {
    /// The AuthZEN field (`subject.id`, `evaluations[2].resource`).
    pub(crate) path: String,
    /// What is wrong with it.
    pub(crate) message: String,
}

impl std::fmt::Display for MapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid request at `{}`: {}", self.path, self.message)
    }
}

fn err(path: impl Into<String>, message: impl Into<String>) -> MapError {
    MapError {
        path: path.into(),
        message: message.into(),
    }
}

/// The four parts of one evaluation, each as sent (or defaulted).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Parts<'a> {
    pub(crate) subject: Option<&'a Value>,
    pub(crate) action: Option<&'a Value>,
    pub(crate) resource: Option<&'a Value>,
    pub(crate) context: Option<&'a Value>,
}

impl<'a> Parts<'a> {
    /// The parts of a top-level request object.
    pub(crate) fn of(object: &'a Map<String, Value>) -> Parts<'a> {
        Parts {
            subject: object.get("subject"),
            action: object.get("action"),
            resource: object.get("resource"),
            context: object.get("context"),
        }
    }

    /// `self`, with every part `item` gives replacing the default.
    pub(crate) fn overridden_by(self, item: &'a Map<String, Value>) -> Parts<'a> {
        Parts {
            subject: item.get("subject").or(self.subject),
            action: item.get("action").or(self.action),
            resource: item.get("resource").or(self.resource),
            context: item.get("context").or(self.context),
        }
    }
}

fn object<'v>(value: Option<&'v Value>, path: &str) -> Result<&'v Map<String, Value>, MapError> {
    match value {
        None => Err(err(path, "missing field; it is required")),
        Some(Value::Object(map)) => Ok(map),
        Some(other) => Err(err(
            path,
            format!("expected an object, found {}", kind(other)),
        )),
    }
}

fn string<'v>(map: &'v Map<String, Value>, key: &str, path: &str) -> Result<&'v str, MapError> {
    let at = format!("{path}.{key}");
    match map.get(key) {
        None => Err(err(at, "missing field; it is required")),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(err(at, format!("expected a string, found {}", kind(other)))),
    }
}

fn kind(value: &Value) -> &'static str {
    crate::request::json_kind(value)
}

/// `{type, id, properties}` as a writ subject or resource object.
fn entity(value: Option<&Value>, path: &str) -> Result<Value, MapError> {
    let map = object(value, path)?;
    let type_ = string(map, "type", path)?;
    let id = string(map, "id", path)?;
    let mut out = Map::new();
    if let Some(properties) = map.get("properties") {
        let Value::Object(properties) = properties else {
            return Err(err(
                format!("{path}.properties"),
                format!("expected an object, found {}", kind(properties)),
            ));
        };
        for (key, value) in properties {
            out.insert(key.clone(), value.clone());
        }
        out.insert("properties".to_owned(), Value::Object(properties.clone()));
    }
    out.insert("id".to_owned(), Value::String(id.to_owned()));
    out.entry("kind".to_owned())
        .or_insert_with(|| Value::String(type_.to_owned()));
    out.insert("type".to_owned(), Value::String(type_.to_owned()));
    Ok(Value::Object(out))
}

/// The writ request for one evaluation. Time is not filled in here.
pub(crate) fn to_request(parts: Parts<'_>) -> Result<(Request, Prepared), MapError> {
    let subject = entity(parts.subject, "subject")?;
    let resource = entity(parts.resource, "resource")?;
    let action = object(parts.action, "action")?;
    let name = string(action, "name", "action")?;

    let mut out = Map::new();
    out.insert("subject".to_owned(), subject);
    out.insert("action".to_owned(), Value::String(name.to_owned()));
    out.insert("resource".to_owned(), resource);

    let mut context = Map::new();
    match parts.context {
        None => {}
        // One rule for null everywhere in a request: refused, naming where.
        Some(Value::Null) => {
            return Err(err(
                "context",
                "null is not a value here; leave the field out instead",
            ))
        }
        Some(Value::Object(map)) => {
            for (key, value) in map {
                match key.as_str() {
                    "intent" | "environment" | "sensitivity" | "requested" => {
                        out.insert(key.clone(), value.clone());
                    }
                    _ => {
                        context.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        Some(other) => {
            return Err(err(
                "context",
                format!("expected an object, found {}", kind(other)),
            ))
        }
    }
    if let Some(properties) = action.get("properties") {
        if !properties.is_object() {
            return Err(err(
                "action.properties",
                format!("expected an object, found {}", kind(properties)),
            ));
        }
        if context.contains_key("action") {
            return Err(err(
                "context.action",
                "`action.properties` are passed to the policy as `context.action`; send them in one place",
            ));
        }
        context.insert("action".to_owned(), properties.clone());
    }
    if !context.is_empty() {
        out.insert("context".to_owned(), Value::Object(context));
    }
    Request::from_value(Value::Object(out)).map_err(|e| match e {
        crate::request::RequestError::Invalid { path, message } => {
            err(authzen_path(&path), message)
        }
        other => err("request", other.to_string()),
    })
}

/// Where a writ path came from, for error messages.
fn authzen_path(writ_path: &str) -> String {
    for root in ["intent", "environment", "sensitivity", "requested"] {
        if writ_path == root || writ_path.starts_with(&format!("{root}.")) {
            return format!("context.{writ_path}");
        }
    }
    for root in ["subject.", "resource."] {
        if let Some(rest) = writ_path.strip_prefix(root) {
            let head = rest.split('.').next().unwrap_or(rest);
            if !matches!(head, "id" | "kind" | "type" | "properties") {
                return format!("{root}properties.{rest}");
            }
        }
    }
    writ_path.to_owned()
}

/// `options.evaluations_semantic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Semantic {
    ExecuteAll,
    DenyOnFirstDeny,
    PermitOnFirstPermit,
}

/// Reads `options.evaluations_semantic` (default `execute_all`).
pub(crate) fn semantic(request: &Map<String, Value>) -> Result<Semantic, MapError> {
    let Some(options) = request.get("options") else {
        return Ok(Semantic::ExecuteAll);
    };
    let Value::Object(options) = options else {
        return Err(err(
            "options",
            format!("expected an object, found {}", kind(options)),
        ));
    };
    match options.get("evaluations_semantic") {
        None => Ok(Semantic::ExecuteAll),
        Some(Value::String(s)) => match s.as_str() {
            "execute_all" => Ok(Semantic::ExecuteAll),
            "deny_on_first_deny" => Ok(Semantic::DenyOnFirstDeny),
            "permit_on_first_permit" => Ok(Semantic::PermitOnFirstPermit),
            other => Err(err(
                "options.evaluations_semantic",
                format!("unknown semantic `{other}`; use `execute_all`, `deny_on_first_deny` or `permit_on_first_permit`"),
            )),
        },
        Some(other) => Err(err(
            "options.evaluations_semantic",
            format!("expected a string, found {}", kind(other)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parts(value: &Value) -> Parts<'_> {
        Parts::of(value.as_object().expect("object"))
    }

    #[test]
    fn maps_the_todo_shape() {
        let body = json!({
            "subject": {"type": "user", "id": "pid-1"},
            "action": {"name": "can_update_todo"},
            "resource": {"type": "todo", "id": "t-1", "properties": {"ownerID": "a@b.c"}}
        });
        let (request, _) = to_request(parts(&body)).expect("maps");
        assert_eq!(request.subject.id.as_deref(), Some("pid-1"));
        assert_eq!(request.subject.kind.as_deref(), Some("user"));
        assert_eq!(request.action.as_deref(), Some("can_update_todo"));
        assert_eq!(request.resource.kind.as_deref(), Some("todo"));
        assert_eq!(request.resource.extra["properties"]["ownerID"], "a@b.c");
        assert_eq!(request.resource.extra["ownerID"], "a@b.c");
        assert_eq!(request.resource.extra["type"], "todo");
        assert!(request.context.is_empty());
    }

    #[test]
    fn context_feeds_the_top_level_fields() {
        let body = json!({
            "subject": {"type": "workload", "id": "spiffe://x", "properties": {"owner": "t", "kind": "ci", "attested": true}},
            "action": {"name": "deploy", "properties": {"method": "POST"}},
            "resource": {"type": "cluster", "id": "k8s://prod"},
            "context": {
                "intent": {"task": "deploy", "id": "run-1"},
                "environment": {"name": "prod", "broker": "vault"},
                "sensitivity": "confidential",
                "requested": {"ttl": 300},
                "recent_issuances": 2
            }
        });
        let (request, _) = to_request(parts(&body)).expect("maps");
        assert_eq!(
            request.subject.kind.as_deref(),
            Some("ci"),
            "a kind property wins"
        );
        assert_eq!(request.subject.attested, Some(true));
        assert_eq!(request.intent.id.as_deref(), Some("run-1"));
        assert_eq!(request.environment.name.as_deref(), Some("prod"));
        assert_eq!(request.requested.ttl, Some(300));
        assert_eq!(request.context["recent_issuances"], 2);
        assert_eq!(request.context["action"]["method"], "POST");
    }

    #[test]
    fn missing_and_wrong_fields_name_the_authzen_path() {
        let cases = [
            (
                json!({"action": {"name": "a"}, "resource": {"type": "r", "id": "1"}}),
                "subject",
            ),
            (
                json!({"subject": {"type": "u"}, "action": {"name": "a"}, "resource": {"type": "r", "id": "1"}}),
                "subject.id",
            ),
            (
                json!({"subject": {"type": "u", "id": 7}, "action": {"name": "a"}, "resource": {"type": "r", "id": "1"}}),
                "subject.id",
            ),
            (
                json!({"subject": {"type": "u", "id": "1"}, "action": {}, "resource": {"type": "r", "id": "1"}}),
                "action.name",
            ),
            (
                json!({"subject": {"type": "u", "id": "1"}, "action": {"name": "a"}, "resource": {"type": "r", "id": "1", "properties": []}}),
                "resource.properties",
            ),
            (
                json!({"subject": {"type": "u", "id": "1", "properties": {"attested": "yes"}}, "action": {"name": "a"}, "resource": {"type": "r", "id": "1"}}),
                "subject.properties.attested",
            ),
            (
                json!({"subject": {"type": "u", "id": "1"}, "action": {"name": "a"}, "resource": {"type": "r", "id": "1"}, "context": {"sensitivity": "secret"}}),
                "context.sensitivity",
            ),
            (
                json!({"subject": {"type": "u", "id": "1"}, "action": {"name": "a"}, "resource": {"type": "r", "id": "1"}, "context": 3}),
                "context",
            ),
        ];
        for (body, path) in cases {
            let error = to_request(parts(&body)).expect_err("refused");
            assert_eq!(error.path, path, "{body}: {error}");
        }
    }

    #[test]
    fn evaluation_items_override_the_defaults() {
        let body = json!({
            "subject": {"type": "user", "id": "u"},
            "action": {"name": "read"},
            "evaluations": [{"resource": {"type": "doc", "id": "1"}}, {"action": {"name": "edit"}, "resource": {"type": "doc", "id": "2"}}]
        });
        let top = body.as_object().expect("object");
        let defaults = Parts::of(top);
        let items = top["evaluations"].as_array().expect("array");
        let (first, _) = to_request(defaults.overridden_by(items[0].as_object().expect("object")))
            .expect("maps");
        let (second, _) = to_request(defaults.overridden_by(items[1].as_object().expect("object")))
            .expect("maps");
        assert_eq!(first.action.as_deref(), Some("read"));
        assert_eq!(second.action.as_deref(), Some("edit"));
        assert_eq!(second.resource.id.as_deref(), Some("2"));
    }

    #[test]
    fn semantics_are_read_and_checked() {
        assert_eq!(
            semantic(json!({}).as_object().expect("o")),
            Ok(Semantic::ExecuteAll)
        );
        assert_eq!(
            semantic(
                json!({"options": {"evaluations_semantic": "deny_on_first_deny"}})
                    .as_object()
                    .expect("o")
            ),
            Ok(Semantic::DenyOnFirstDeny)
        );
        assert!(semantic(
            json!({"options": {"evaluations_semantic": "sometimes"}})
                .as_object()
                .expect("o")
        )
        .is_err());
        assert!(semantic(json!({"options": 1}).as_object().expect("o")).is_err());
    }
}
