//! The AuthZEN 1.0 Search APIs: which subjects may do an action on a
//! resource, which resources a subject may act on, which actions a subject
//! may take on a resource.
//!
//! writ answers a search by deciding candidates, one evaluation each,
//! through the same mapping and engine as `POST /access/v1/evaluation`, and
//! returning those allowed. The candidates come from:
//!
//! - **subjects and resources**: the data file. Its key `authzen` names,
//!   for each entity type, the data key that lists the ids of that type:
//!   `{"authzen": {"subjects": {"user": "users"}, "resources": {"record":
//!   "records"}}}`. The listed key holds an object (its keys are the ids)
//!   or an array (of id strings, or of objects with an `id`).
//! - **actions**: the policy. Every action name a rule tests (`action ==
//!   "view"`, `action in ["edit", "delete"]`) is a candidate; an action
//!   reachable only through data or a `matches` pattern is not found.
//!
//! Candidates are taken in a fixed order (data order, then policy order),
//! so a page token is an offset into them, bound to the request and the
//! policy digest it was issued for.

use base64::Engine as _;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::authzen::{self, MapError, Parts};
use crate::ast::BinOp;
use crate::ir::{Attr, Builtin, Expr, ExprKind, Lit, PolicySet, RuleKind, TemplatePart};
use crate::request::{Prepared, Request};

/// The data key that names, per entity type, the data key listing its ids.
pub(crate) const LISTING_KEY: &str = "authzen";

/// Results in one page when the request sets no `page.limit` (or 0); also
/// the largest limit taken.
pub(crate) const MAX_PAGE: usize = 1000;

/// Most candidates decided for one request (as many as a batch holds);
/// a search over more answers page by page.
pub(crate) const MAX_EXAMINED: usize = 1000;

/// Checks an `--authzen-pdp` identifier: an absolute `https://` (or, for
/// a PDP behind no TLS, `http://`) URL with a host and no query or
/// fragment.
pub(crate) fn check_pdp(url: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("`--authzen-pdp {url}`: {why}"));
    let Some((scheme, rest)) = url.split_once("://") else {
        return bad("not an absolute URL; write it like `https://pdp.example.com`");
    };
    if scheme != "https" && scheme != "http" {
        return bad("the scheme must be `https` (or `http`)");
    }
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return bad("the URL has no host");
    }
    if url.contains('?') || url.contains('#') {
        return bad("a PDP identifier has no query or fragment");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("the URL has white space in it");
    }
    Ok(())
}

/// What is searched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `POST /access/v1/search/subject`
    Subject,
    /// `POST /access/v1/search/resource`
    Resource,
    /// `POST /access/v1/search/action`
    Action,
}

impl Kind {
    /// The route.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Kind::Subject => "/access/v1/search/subject",
            Kind::Resource => "/access/v1/search/resource",
            Kind::Action => "/access/v1/search/action",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Subject => "subject",
            Kind::Resource => "resource",
            Kind::Action => "action",
        }
    }
}

fn err(path: impl Into<String>, message: impl Into<String>) -> MapError {
    MapError {
        path: path.into(),
        message: message.into(),
    }
}

/// A checked search request.
#[derive(Debug)]
pub(crate) struct Search<'a> {
    kind: Kind,
    object: &'a Map<String, Value>,
    /// The type searched for (subject and resource search).
    entity_type: Option<String>,
    /// Results per page.
    pub(crate) limit: usize,
    /// The first candidate to decide.
    pub(crate) offset: usize,
    fingerprint: String,
}

impl<'a> Search<'a> {
    /// Checks a search request: the fields the spec requires (a `400`
    /// naming the field when one is missing or of the wrong type), the
    /// `page`, and a token against the request and `digest`.
    pub(crate) fn parse(
        kind: Kind,
        object: &'a Map<String, Value>,
        digest: &str,
    ) -> Result<Search<'a>, MapError> {
        let entity_type = match kind {
            Kind::Subject => Some(searched_type(object.get("subject"), "subject")?),
            Kind::Resource => Some(searched_type(object.get("resource"), "resource")?),
            Kind::Action => None,
        };
        let (token, limit) = page(object.get("page"))?;
        let mut search = Search {
            kind,
            object,
            entity_type,
            limit,
            offset: 0,
            fingerprint: String::new(),
        };
        // The other fields are checked as an evaluation would check them,
        // with a stand-in for the entity searched for.
        search.request_for("")?;
        search.fingerprint = search.fingerprint(digest);
        if let Some(token) = token {
            search.offset = search.read_token(token)?;
        }
        Ok(search)
    }

    /// The writ request deciding one candidate (an id, or an action name).
    pub(crate) fn request_for(&self, candidate: &str) -> Result<(Request, Prepared), MapError> {
        let parts = Parts::of(self.object);
        let stand_in = match self.kind {
            Kind::Action => Value::Object(Map::from_iter([(
                "name".to_owned(),
                Value::String(candidate.to_owned()),
            )])),
            Kind::Subject | Kind::Resource => {
                let given = match self.kind {
                    Kind::Subject => parts.subject,
                    _ => parts.resource,
                };
                let mut entity = given
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                entity.insert("id".to_owned(), Value::String(candidate.to_owned()));
                Value::Object(entity)
            }
        };
        let parts = match self.kind {
            Kind::Subject => Parts {
                subject: Some(&stand_in),
                ..parts
            },
            Kind::Resource => Parts {
                resource: Some(&stand_in),
                ..parts
            },
            Kind::Action => Parts {
                action: Some(&stand_in),
                ..parts
            },
        };
        authzen::to_request(parts)
    }

    /// The candidates, in their fixed order, from `policy` (its data for
    /// subjects and resources, its rules for actions).
    pub(crate) fn candidates(&self, policy: &PolicySet) -> Vec<String> {
        match (self.kind, &self.entity_type) {
            (Kind::Action, _) => policy_actions(policy),
            (kind, Some(entity_type)) => listed_ids(policy, kind, entity_type),
            (_, None) => Vec::new(),
        }
    }

    /// One result: `{type, id}` or `{name}`.
    pub(crate) fn result(&self, candidate: &str) -> Value {
        let mut out = Map::new();
        match &self.entity_type {
            Some(entity_type) => {
                out.insert("type".to_owned(), Value::String(entity_type.clone()));
                out.insert("id".to_owned(), Value::String(candidate.to_owned()));
            }
            None => {
                out.insert("name".to_owned(), Value::String(candidate.to_owned()));
            }
        }
        Value::Object(out)
    }

    /// The token for the page that starts at candidate `offset`.
    pub(crate) fn token(&self, offset: usize) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{offset}.{}", self.fingerprint))
    }

    fn read_token(&self, token: &str) -> Result<usize, MapError> {
        let foreign = || {
            err(
                "page.token",
                "not a token this server issued; send the `next_token` of the previous page as it came",
            )
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| foreign())?;
        let text = String::from_utf8(bytes).map_err(|_| foreign())?;
        let (offset, fingerprint) = text.split_once('.').ok_or_else(foreign)?;
        let offset: usize = offset.parse().map_err(|_| foreign())?;
        if fingerprint != self.fingerprint {
            return Err(err(
                "page.token",
                "the token was issued for a different request or policy: while paging, send the same subject, action, resource, context and limit, and start again after the policy changes",
            ));
        }
        Ok(offset)
    }

    /// What must stay the same from page to page: the kind, the entities
    /// (without the id of the one searched for, which is ignored), the
    /// context, the limit and the policy.
    fn fingerprint(&self, digest: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.kind.name().as_bytes());
        for key in ["subject", "action", "resource", "context"] {
            hasher.update(b"\0");
            hasher.update(key.as_bytes());
            hasher.update(b"=");
            let mut value = self.object.get(key).cloned().unwrap_or(Value::Null);
            if key == self.kind.name() {
                if let Value::Object(map) = &mut value {
                    map.remove("id");
                }
            }
            if self.kind == Kind::Action && key == "action" {
                value = Value::Null;
            }
            let mut text = String::new();
            canonical(&value, &mut text);
            hasher.update(text.as_bytes());
        }
        hasher.update(format!("\0limit={}\0{digest}", self.limit).as_bytes());
        crate::hex::encode(&hasher.finalize()[..12])
    }
}

/// The `type` of the entity searched for; its `id`, if any, is ignored.
fn searched_type(value: Option<&Value>, path: &str) -> Result<String, MapError> {
    let map = match value {
        None => return Err(err(path, "missing field; it is required")),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(err(
                path,
                format!(
                    "expected an object, found {}",
                    crate::request::json_kind(other)
                ),
            ))
        }
    };
    match map.get("type") {
        None => Err(err(format!("{path}.type"), "missing field; it is required")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(err(
            format!("{path}.type"),
            format!(
                "expected a string, found {}",
                crate::request::json_kind(other)
            ),
        )),
    }
}

/// `page`: the token and the limit (0, or none, is [`MAX_PAGE`]).
fn page(value: Option<&Value>) -> Result<(Option<&str>, usize), MapError> {
    let map = match value {
        None => return Ok((None, MAX_PAGE)),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(err(
                "page",
                format!(
                    "expected an object, found {}",
                    crate::request::json_kind(other)
                ),
            ))
        }
    };
    let token = match map.get("token") {
        None => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => {
            return Err(err(
                "page.token",
                format!(
                    "expected a string, found {}",
                    crate::request::json_kind(other)
                ),
            ))
        }
    };
    let limit = match map.get("limit") {
        None => MAX_PAGE,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => MAX_PAGE,
            Some(n) => usize::try_from(n).unwrap_or(MAX_PAGE).min(MAX_PAGE),
            None => {
                return Err(err(
                    "page.limit",
                    format!("expected a non-negative whole number, found {n}"),
                ))
            }
        },
        Some(other) => {
            return Err(err(
                "page.limit",
                format!(
                    "expected a non-negative whole number, found {}",
                    crate::request::json_kind(other)
                ),
            ))
        }
    };
    if let Some(properties) = map.get("properties") {
        if !properties.is_object() {
            return Err(err(
                "page.properties",
                format!(
                    "expected an object, found {}",
                    crate::request::json_kind(properties)
                ),
            ));
        }
    }
    Ok((token, limit))
}

/// JSON with object keys sorted, at every level.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(item) = map.get(key) {
                    canonical(item, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Where the ids of `entity_type` are listed: the data key named at
/// `authzen.subjects.TYPE` (or `.resources.TYPE`), if the data has one.
pub(crate) fn listing_key<'p>(
    policy: &'p PolicySet,
    kind: Kind,
    entity_type: &str,
) -> Option<&'p str> {
    let group = match kind {
        Kind::Subject => "subjects",
        Kind::Resource => "resources",
        Kind::Action => return None,
    };
    policy
        .data
        .get(LISTING_KEY)?
        .get(group)?
        .get(entity_type)?
        .as_str()
}

/// The ids of `entity_type`, in data order, each once: the keys of an
/// object, or the strings (or objects' `id`s, strings or whole numbers)
/// of an array. Anything else lists nothing.
fn listed_ids(policy: &PolicySet, kind: Kind, entity_type: &str) -> Vec<String> {
    let Some(key) = listing_key(policy, kind, entity_type) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = match policy.data.get(key) {
        Some(Value::Object(map)) => map.keys().cloned().collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| match item {
                Value::String(id) => Some(id.clone()),
                Value::Object(map) => match map.get("id") {
                    Some(Value::String(id)) => Some(id.clone()),
                    Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Some(n.to_string()),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    ids
}

/// Every action name the rules test, in rule order, each once.
pub(crate) fn policy_actions(policy: &PolicySet) -> Vec<String> {
    let mut names = Vec::new();
    for rule in &policy.rules {
        for conjunct in &rule.conjuncts {
            action_names(conjunct, &mut names);
        }
        let templates: &[crate::ir::Template] = match &rule.kind {
            RuleKind::Permit { grant, .. } => grant,
            RuleKind::LimitScope(patterns) => patterns,
            _ => &[],
        };
        for template in templates {
            for part in &template.parts {
                if let TemplatePart::Hole(expr) = part {
                    action_names(expr, &mut names);
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|name| seen.insert(name.clone()));
    names
}

fn is_action(expr: &Expr) -> bool {
    matches!(expr.kind, ExprKind::Attr(Attr::Action))
}

fn strings(lit: &Lit, out: &mut Vec<String>) {
    match lit {
        Lit::Str(s) => out.push(s.to_string()),
        Lit::List(items) => items.iter().for_each(|item| strings(item, out)),
        _ => {}
    }
}

fn action_names(expr: &Expr, out: &mut Vec<String>) {
    match &expr.kind {
        ExprKind::Binary(op, left, right) => {
            if matches!(op, BinOp::Eq | BinOp::Ne | BinOp::In | BinOp::NotIn) {
                for (one, other) in [(left, right), (right, left)] {
                    if let (true, ExprKind::Lit(lit)) = (is_action(one), &other.kind) {
                        strings(lit, out);
                    }
                }
            }
            action_names(left, out);
            action_names(right, out);
        }
        ExprKind::Call(builtin, args) => {
            if *builtin == Builtin::Contains && args.len() == 2 && is_action(&args[1]) {
                if let ExprKind::Lit(lit) = &args[0].kind {
                    strings(lit, out);
                }
            }
            args.iter().for_each(|arg| action_names(arg, out));
        }
        ExprKind::Field(inner, _)
        | ExprKind::Not(inner)
        | ExprKind::Until(inner)
        | ExprKind::HasIn(inner, _)
        | ExprKind::DataKey(inner) => {
            action_names(inner, out);
        }
        ExprKind::Matches(inner, _) => action_names(inner, out),
        ExprKind::Index(base, index) => {
            action_names(base, out);
            action_names(index, out);
        }
        ExprKind::Quantifier { list, body, .. } => {
            action_names(list, out);
            action_names(body, out);
        }
        ExprKind::Lit(_)
        | ExprKind::Attr(_)
        | ExprKind::Local(_)
        | ExprKind::Data(_)
        | ExprKind::Has(..) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use serde_json::json;

    fn engine(policy: &str, data: Value) -> Engine {
        Engine::compile([("t.writ", policy)], Some(&data)).expect("compiles")
    }

    fn object(value: &Value) -> &Map<String, Value> {
        value.as_object().expect("object")
    }

    #[test]
    fn actions_are_the_names_the_rules_test() {
        let engine = engine(
            r#"
            permit if action == "view";
            permit if action in ["edit", "delete"] and subject.id != "x";
            forbid if "purge" == action;
            permit if not (action != "archive") and contains(["share"], action);
            "#,
            json!({}),
        );
        assert_eq!(
            policy_actions(engine.policy()),
            ["view", "edit", "delete", "purge", "archive", "share"]
        );
    }

    #[test]
    fn listed_ids_come_from_the_named_data_key() {
        let data = json!({
            "authzen": {"subjects": {"user": "users", "bot": "bots", "odd": "odd"},
                        "resources": {"record": "records"}},
            "users": {"alice": {}, "bob": {}},
            "bots": ["b1", {"id": "b2"}, {"id": 3}, {"name": "no id"}, "b1"],
            "records": [{"id": 101}, {"id": "102"}],
            "odd": 7
        });
        let engine = engine("permit if action == \"x\";", data);
        let policy = engine.policy();
        assert_eq!(listed_ids(policy, Kind::Subject, "user"), ["alice", "bob"]);
        assert_eq!(listed_ids(policy, Kind::Subject, "bot"), ["b1", "b2", "3"]);
        assert_eq!(listed_ids(policy, Kind::Resource, "record"), ["101", "102"]);
        assert!(listed_ids(policy, Kind::Subject, "odd").is_empty());
        assert!(listed_ids(policy, Kind::Subject, "group").is_empty());
        assert!(listed_ids(policy, Kind::Resource, "user").is_empty());
    }

    #[test]
    fn required_fields_are_named_when_missing() {
        let cases = [
            (
                Kind::Subject,
                json!({"action": {"name": "v"}, "resource": {"type": "r", "id": "1"}}),
                "subject",
            ),
            (
                Kind::Subject,
                json!({"subject": {}, "action": {"name": "v"}, "resource": {"type": "r", "id": "1"}}),
                "subject.type",
            ),
            (
                Kind::Subject,
                json!({"subject": {"type": "u"}, "resource": {"type": "r", "id": "1"}}),
                "action",
            ),
            (
                Kind::Subject,
                json!({"subject": {"type": "u"}, "action": {"name": "v"}, "resource": {"type": "r"}}),
                "resource.id",
            ),
            (
                Kind::Resource,
                json!({"subject": {"type": "u", "id": "a"}, "action": {"name": "v"}}),
                "resource",
            ),
            (
                Kind::Resource,
                json!({"subject": {"type": "u"}, "action": {"name": "v"}, "resource": {"type": "r"}}),
                "subject.id",
            ),
            (
                Kind::Resource,
                json!({"subject": {"type": "u", "id": "a"}, "action": {}, "resource": {"type": "r"}}),
                "action.name",
            ),
            (
                Kind::Action,
                json!({"subject": {"type": "u", "id": "a"}}),
                "resource",
            ),
            (
                Kind::Action,
                json!({"resource": {"type": "r", "id": "1"}}),
                "subject",
            ),
            (
                Kind::Action,
                json!({"subject": {"type": "u", "id": "a"}, "resource": {"type": 5, "id": "1"}}),
                "resource.type",
            ),
            (
                Kind::Action,
                json!({"subject": {"type": "u", "id": "a"}, "resource": {"type": "r", "id": "1"}, "page": 3}),
                "page",
            ),
            (
                Kind::Action,
                json!({"subject": {"type": "u", "id": "a"}, "resource": {"type": "r", "id": "1"}, "page": {"limit": -1}}),
                "page.limit",
            ),
            (
                Kind::Action,
                json!({"subject": {"type": "u", "id": "a"}, "resource": {"type": "r", "id": "1"}, "page": {"token": 1}}),
                "page.token",
            ),
            (
                Kind::Action,
                json!({"subject": {"type": "u", "id": "a"}, "resource": {"type": "r", "id": "1"}, "page": {"token": "nope"}}),
                "page.token",
            ),
        ];
        for (kind, body, path) in cases {
            let error = Search::parse(kind, object(&body), "sha256:x").expect_err("refused");
            assert_eq!(error.path, path, "{body}: {error}");
        }
    }

    #[test]
    fn a_token_holds_only_for_the_same_request_and_policy() {
        let first = json!({"subject": {"type": "u", "id": "a"}, "action": {"name": "v"}, "resource": {"type": "r"}, "page": {"limit": 2}});
        let search = Search::parse(Kind::Resource, object(&first), "sha256:a").expect("parses");
        let token = search.token(7);
        // The same request with the token (keys in another order, the
        // ignored id given) reads the offset back.
        let again = json!({"page": {"token": token, "limit": 2}, "resource": {"id": "ignored", "type": "r"}, "action": {"name": "v"}, "subject": {"id": "a", "type": "u"}});
        let next = Search::parse(Kind::Resource, object(&again), "sha256:a").expect("parses");
        assert_eq!(next.offset, 7);
        // Another subject, another limit, another policy: refused.
        let other_subject = json!({"subject": {"type": "u", "id": "b"}, "action": {"name": "v"}, "resource": {"type": "r"}, "page": {"limit": 2, "token": token}});
        let other_limit = json!({"subject": {"type": "u", "id": "a"}, "action": {"name": "v"}, "resource": {"type": "r"}, "page": {"limit": 3, "token": token}});
        for body in [&other_subject, &other_limit] {
            let error =
                Search::parse(Kind::Resource, object(body), "sha256:a").expect_err("refused");
            assert_eq!(error.path, "page.token");
        }
        assert!(Search::parse(Kind::Resource, object(&again), "sha256:b").is_err());
    }

    #[test]
    fn each_candidate_is_an_evaluation() {
        let body = json!({"subject": {"type": "user", "properties": {"dept": "x"}}, "action": {"name": "view"}, "resource": {"type": "record", "id": "1"}});
        let search = Search::parse(Kind::Subject, object(&body), "d").expect("parses");
        let (request, _) = search.request_for("alice").expect("maps");
        assert_eq!(request.subject.id.as_deref(), Some("alice"));
        assert_eq!(request.subject.extra["dept"], "x");
        assert_eq!(request.action.as_deref(), Some("view"));
        assert_eq!(
            search.result("alice"),
            json!({"type": "user", "id": "alice"})
        );
        let body = json!({"subject": {"type": "user", "id": "a"}, "resource": {"type": "record", "id": "1"}, "action": {"name": "ignored"}});
        let search = Search::parse(Kind::Action, object(&body), "d").expect("parses");
        let (request, _) = search.request_for("edit").expect("maps");
        assert_eq!(request.action.as_deref(), Some("edit"));
        assert_eq!(search.result("edit"), json!({"name": "edit"}));
    }
}
