//! Issue 13, items 4 and 6 to 10, on the real server: each fault is sent to
//! every endpoint that decides (`/v1/decide`, `/v1/decide/batch`,
//! `/access/v1/evaluation`, `/access/v1/evaluations`) and must get the same
//! answer there as from the engine: a refusal for an invalid request, a
//! deny with its reason for a fault found while deciding, never an allow.
//!
//! The policy is `tests/core/policies/faults.writ`, the one the core
//! fixtures (`tests/core/faults.json`) run against, plus the default pack
//! with `tests/core/policies/faults_layer.writ` for the pack's own audience.

mod common;

use std::sync::Arc;

use common::server::*;
use serde_json::{json, Map, Value};

const FAULTS: &str = "tests/core/policies/faults.writ";

/// A writ request as an AuthZEN evaluation: `subject.kind` and
/// `resource.kind` become the `type`s, the other attributes properties, and
/// the rest of the request goes in `context` (the mapping of
/// `src/server/authzen.rs`).
fn authzen(request: &Value) -> Value {
    let entity = |value: Option<&Value>, default_type: &str| {
        let mut properties = value
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let id = properties.remove("id").unwrap_or_else(|| json!("unnamed"));
        let type_ = properties
            .remove("kind")
            .unwrap_or_else(|| json!(default_type));
        json!({"type": type_, "id": id, "properties": properties})
    };
    let mut context = request
        .get("context")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for key in ["intent", "environment", "sensitivity", "requested"] {
        if let Some(value) = request.get(key) {
            context.insert(key.to_owned(), value.clone());
        }
    }
    json!({
        "subject": entity(request.get("subject"), "workload"),
        "action": {"name": request["action"]},
        "resource": entity(request.get("resource"), "thing"),
        "context": Value::Object(context),
    })
}

/// The four endpoints' replies to one request.
struct Replies {
    decide: Reply,
    batch: Reply,
    evaluation: Reply,
    evaluations: Reply,
}

fn everywhere(server: &Server, request: &Value) -> Replies {
    let evaluation = authzen(request);
    Replies {
        decide: server.post("/v1/decide", &request.to_string()),
        batch: server.post("/v1/decide/batch", &json!([request]).to_string()),
        evaluation: server.post("/access/v1/evaluation", &evaluation.to_string()),
        evaluations: server.post(
            "/access/v1/evaluations",
            &json!({"evaluations": [evaluation]}).to_string(),
        ),
    }
}

/// No reply says allow, in writ's form or AuthZEN's.
fn assert_never_allowed(replies: &Replies, what: &str) {
    for reply in [
        &replies.decide,
        &replies.batch,
        &replies.evaluation,
        &replies.evaluations,
    ] {
        assert!(!reply.body.contains("\"allow\""), "{what}: {reply:?}");
        assert!(
            !reply.body.contains("\"decision\":true"),
            "{what}: {reply:?}"
        );
    }
}

/// Every endpoint decided, and denied with `reason` among the reasons and
/// an error credited to it.
fn assert_denied_by(server: &Server, request: &Value, reason: &str) {
    let what = request.to_string();
    let replies = everywhere(server, request);
    assert_never_allowed(&replies, &what);
    assert_eq!(replies.decide.status, 200, "{what}: {:?}", replies.decide);
    let decide = replies.decide.json();
    let batch = replies.batch.json();
    for decision in [&decide, &batch[0]] {
        assert_eq!(decision["decision"], "deny", "{what}: {decision}");
        assert_eq!(decision["ttl"], 0, "{what}: {decision}");
        assert_eq!(decision["scope"], json!([]), "{what}: {decision}");
        assert!(
            decision["reasons"]
                .as_array()
                .is_some_and(|r| r.contains(&json!(reason))),
            "{what}: {decision}"
        );
        assert!(
            decision["errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["rule"] == reason)),
            "{what}: {decision}"
        );
    }
    let evaluation = replies.evaluation.json();
    let evaluations = replies.evaluations.json();
    for result in [&evaluation, &evaluations["evaluations"][0]] {
        assert_eq!(result["decision"], false, "{what}: {result}");
        assert_eq!(result["context"]["reasons"], decide["reasons"], "{what}");
        assert_eq!(result["context"]["ttl"], 0, "{what}");
    }
}

/// Every endpoint refused the request as invalid, naming `field`.
fn assert_refused(server: &Server, request: &Value, field: &str) {
    let what = request.to_string();
    let replies = everywhere(server, request);
    assert_never_allowed(&replies, &what);
    for reply in [&replies.decide, &replies.batch, &replies.evaluation] {
        let message = reply.assert_error(400, "invalid_request");
        assert!(message.contains(field), "{what}: {message}");
    }
    let item = &replies.evaluations.json()["evaluations"][0];
    assert_eq!(item["decision"], false, "{what}: {item}");
    assert_eq!(item["context"]["error"]["status"], 400, "{what}: {item}");
    assert!(
        item["context"]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(field)),
        "{what}: {item}"
    );
}

/// Every endpoint allowed; the writ decision is returned for more checks,
/// after checking that AuthZEN's answer carries the same scope and TTL.
fn assert_allowed(server: &Server, request: &Value) -> Value {
    let what = request.to_string();
    let replies = everywhere(server, request);
    let decide = replies.decide.json();
    assert_eq!(decide["decision"], "allow", "{what}: {decide}");
    let batch = replies.batch.json();
    assert_eq!(batch[0]["scope"], decide["scope"], "{what}");
    assert_eq!(batch[0]["decision"], "allow", "{what}");
    for result in [
        replies.evaluation.json(),
        replies.evaluations.json()["evaluations"][0].clone(),
    ] {
        assert_eq!(result["decision"], true, "{what}: {result}");
        assert_eq!(result["context"]["scope"], decide["scope"], "{what}");
        assert_eq!(result["context"]["ttl"], decide["ttl"], "{what}");
    }
    decide
}

fn obligation_values(decision: &Value, kind: &str) -> Vec<Value> {
    decision["obligations"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|o| o["kind"] == kind)
                .map(|o| o["value"].clone())
                .collect()
        })
        .unwrap_or_default()
}

fn faults_server(name: &str) -> Server {
    let dir = Arc::new(TempDir::new(name));
    Server::start(&["--policy", FAULTS], &dir)
}

/// Item 4: an audience built from a value the requester sends is
/// validated like a grant item; when it cannot be stated the answer is a
/// deny naming the rule.
#[test]
fn audiences_from_request_values_are_validated() {
    let server = faults_server("audience");
    for id in [
        "*",
        "**",
        "",
        "   ",
        "api://tools/*",
        "api://tools/%2e%2e",
        "a%2Fb",
    ] {
        assert_denied_by(
            &server,
            &json!({"action": "invoke", "resource": {"id": id}}),
            "ft.invoke",
        );
    }
    for host in ["", "*", " "] {
        assert_denied_by(
            &server,
            &json!({"action": "call", "resource": {"id": "x", "host": host}}),
            "ft.call",
        );
    }
    let allowed = assert_allowed(
        &server,
        &json!({"action": "invoke", "resource": {"id": "api://tools/search"}}),
    );
    assert_eq!(
        obligation_values(&allowed, "audience"),
        [json!("api://tools/search")]
    );

    // The issue's own case: a plain permit layered over the pack, whose
    // `lifecycle.audience` copies `resource.id`.
    let dir = Arc::new(TempDir::new("audience-pack"));
    let pack = Server::start(
        &[
            "--policy",
            "default",
            "--policy",
            "tests/core/policies/faults_layer.writ",
        ],
        &dir,
    );
    let request = |id: &str| {
        json!({
            "subject": {"id": "spiffe://prod.acme.io/ns/crm/sa/api", "kind": "service",
                        "auth": "spiffe", "attested": true, "owner": "crm",
                        "environment": "prod"},
            "action": "invoke",
            "resource": {"id": id, "kind": "api", "owner": "crm"},
            "environment": {"name": "prod", "broker": "vault"},
            "sensitivity": "internal"
        })
    };
    for id in ["*", "**", "", " "] {
        assert_denied_by(&pack, &request(id), "lifecycle.audience");
    }
    let allowed = assert_allowed(&pack, &request("api://crm/contacts"));
    assert_eq!(
        obligation_values(&allowed, "audience"),
        [json!("api://crm/contacts")]
    );
}

/// Item 6: a value of another type than the constants it is compared
/// with is an error: the permit that depends on it does not match, and
/// every forbid that tests it applies.
#[test]
fn comparisons_across_types_fail_closed() {
    let server = faults_server("typed");
    for value in [
        json!(42),
        json!(true),
        json!(["push"]),
        json!({"a": "push"}),
        json!(0.5),
    ] {
        let build = json!({"subject": {"event_name": value}, "action": "build",
                           "resource": {"id": "ci://acme/app"}});
        let replies = everywhere(&server, &build);
        assert_never_allowed(&replies, &build.to_string());
        let decision = replies.decide.json();
        assert_eq!(decision["decision"], "deny", "{decision}");
        assert_eq!(decision["errors"][0]["rule"], "ft.not-pr", "{decision}");
        assert_eq!(replies.batch.json()[0]["errors"], decision["errors"]);

        let test = json!({"subject": {"event_name": value}, "action": "test",
                          "resource": {"id": "ci://acme/app"}});
        for forbid in ["ft.forbid-pr", "ft.forbid-eq", "ft.forbid-ne"] {
            assert_denied_by(&server, &test, forbid);
        }
    }
    let push = json!({"subject": {"event_name": "push"}, "action": "build",
                      "resource": {"id": "ci://acme/app"}});
    assert_eq!(
        assert_allowed(&server, &push)["scope"],
        json!(["build:ci://acme/app"])
    );
}

/// Item 7: a requested TTL of 0 is refused as invalid; an allow whose TTL
/// works out to 0 is a deny naming the rule that set it.
#[test]
fn a_zero_ttl_is_never_an_allow() {
    let server = faults_server("ttl");
    assert_refused(
        &server,
        &json!({"action": "deploy", "resource": {"id": "k8s://prod/app"},
                "requested": {"ttl": 0}}),
        "requested.ttl",
    );
    assert_denied_by(
        &server,
        &json!({"action": "flash", "resource": {"id": "fw://dev/board"}}),
        "ft.zero",
    );
    let one = assert_allowed(
        &server,
        &json!({"action": "deploy", "resource": {"id": "k8s://prod/app"},
                "requested": {"ttl": 1}}),
    );
    assert_eq!(one["ttl"], 1);
}

/// Item 8: percent-encoded `.`, `/` and `%` are refused in requested scope
/// items, and a grant filled with them cannot be built.
#[test]
fn percent_encoded_separators_are_refused() {
    let server = faults_server("percent");
    for item in [
        "read:s3://logs/%2e%2e",
        "read:s3://logs/%2E",
        "read:s3://logs/.%2e",
        "read:s3://logs/%2E.",
        "read:s3://logs/a%2fb",
        "read:s3://logs/a%2Fb",
        "read:s3://logs/%252e%252e",
    ] {
        assert_refused(
            &server,
            &json!({"action": "read", "resource": {"id": "r", "kind": "logs"},
                    "requested": {"scope": [item]}}),
            "requested.scope",
        );
    }
    for name in ["%2e%2e", "a%2Fb", "%2E"] {
        assert_denied_by_error(
            &server,
            &json!({"action": "read", "resource": {"id": "r", "kind": "bucket", "name": name}}),
            "ft.bucket",
        );
    }
    let plain = json!({"action": "read", "resource": {"id": "r", "kind": "logs"},
                       "requested": {"scope": ["read:s3://logs/app"]}});
    assert_eq!(
        assert_allowed(&server, &plain)["scope"],
        json!(["read:s3://logs/app"])
    );
}

/// A deny by default (no permit matched) whose only cause is `rule`'s
/// evaluation error.
fn assert_denied_by_error(server: &Server, request: &Value, rule: &str) {
    let what = request.to_string();
    let replies = everywhere(server, request);
    assert_never_allowed(&replies, &what);
    for decision in [replies.decide.json(), replies.batch.json()[0].clone()] {
        assert_eq!(decision["decision"], "deny", "{what}: {decision}");
        assert!(
            decision["errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["rule"] == rule)),
            "{what}: {decision}"
        );
    }
    assert_eq!(replies.evaluation.json()["decision"], false);
    assert_eq!(
        replies.evaluations.json()["evaluations"][0]["decision"],
        false
    );
}

/// Item 9: `has` counts `""`, `[]`, `{}` and `false` as absent, and a
/// `null` anywhere in a request is refused, naming where.
#[test]
fn empty_values_are_absent_and_null_is_refused() {
    let server = faults_server("has");
    let deploy = |context: Value| json!({"action": "deploy", "resource": {"id": "k8s://prod/app"}, "context": context});
    let kinds = |decision: &Value| -> Vec<Value> {
        decision["obligations"]
            .as_array()
            .map(|o| o.iter().map(|o| o["kind"].clone()).collect())
            .unwrap_or_default()
    };
    for empty in [json!({}), json!([]), json!(false), json!("")] {
        let decision = assert_allowed(&server, &deploy(json!({"approval": empty})));
        assert!(kinds(&decision).contains(&json!("approval")), "{decision}");
        let evaluation = server
            .post(
                "/access/v1/evaluation",
                &authzen(&deploy(json!({"approval": empty}))).to_string(),
            )
            .json();
        assert!(
            evaluation["context"]["obligations"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o["kind"] == "approval")),
            "{evaluation}"
        );
    }
    let approved = assert_allowed(
        &server,
        &deploy(json!({"approval": {"by": "oncall@acme.io"}})),
    );
    assert!(!kinds(&approved).contains(&json!("approval")), "{approved}");

    assert_refused(&server, &deploy(json!({"approval": null})), "approval");
    assert_refused(
        &server,
        &json!({"action": "deploy", "subject": {"owner": null}, "resource": {"id": "k8s://prod/app"}}),
        "owner",
    );
    assert_refused(
        &server,
        &json!({"action": "deploy", "resource": {"id": "k8s://prod/app", "tags": ["a", null]}}),
        "tags",
    );
    // writ's own request format also refuses a null object.
    let mut null_context = Map::new();
    null_context.insert("action".to_owned(), json!("deploy"));
    null_context.insert("context".to_owned(), Value::Null);
    let body = Value::Object(null_context).to_string();
    let message = server
        .post("/v1/decide", &body)
        .assert_error(400, "invalid_request");
    assert!(message.contains("context"), "{message}");
    server
        .post("/v1/decide/batch", &format!("[{body}]"))
        .assert_error(400, "invalid_request");
    // So does AuthZEN's envelope: a null `context` or `evaluations` is not
    // read as absent.
    let evaluation = r#"{"subject": {"type": "ci", "id": "s"}, "action": {"name": "deploy"},
                         "resource": {"type": "cluster", "id": "k8s://prod/app"}, "context": null}"#;
    for path in ["/access/v1/evaluation", "/access/v1/evaluations"] {
        let message = server
            .post(path, evaluation)
            .assert_error(400, "invalid_request");
        assert!(message.contains("context"), "{path}: {message}");
    }
    let evaluations = r#"{"subject": {"type": "ci", "id": "s"}, "action": {"name": "deploy"},
                          "resource": {"type": "cluster", "id": "k8s://prod/app"}, "evaluations": null}"#;
    let message = server
        .post("/access/v1/evaluations", evaluations)
        .assert_error(400, "invalid_request");
    assert!(message.contains("evaluations"), "{message}");
}

/// Item 10: the same item asked for several times is granted once, in the
/// order it was first asked for.
#[test]
fn repeated_scope_items_are_granted_once() {
    let server = faults_server("dedup");
    let request = json!({"action": "read", "resource": {"id": "r", "kind": "logs"},
                         "requested": {"scope": ["read:s3://logs/b", "read:s3://logs/a",
                                                 "read:s3://logs/b", "read:s3://logs/b",
                                                 "write:s3://logs/a", "write:s3://logs/a"]}});
    let decision = assert_allowed(&server, &request);
    assert_eq!(
        decision["scope"],
        json!(["read:s3://logs/b", "read:s3://logs/a"])
    );
    assert_eq!(decision["dropped_scope"], json!(["write:s3://logs/a"]));
}
