//! The AuthZEN 1.0 Search APIs and metadata, on the real binary, with the
//! interop "Search" scenario's policy (`examples/authzen/search.writ`) and
//! data (`examples/authzen/search_data.json`).
//!
//! The expected answers are worked out here from the scenario's three rules
//! (SCENARIO.md of the interop kit: view if own, same department or
//! manager; edit if own, or manager of the record's department; delete if
//! own), independently of the policy.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use common::server::*;
use serde_json::{json, Value};

const ACTIONS: [&str; 3] = ["view", "edit", "delete"];

fn data() -> Value {
    let text = std::fs::read_to_string(Path::new(ROOT).join("examples/authzen/search_data.json"))
        .expect("search data");
    serde_json::from_str(&text).expect("JSON")
}

/// The scenario's rules, on the data.
fn allowed(data: &Value, user: &str, record: &str, action: &str) -> bool {
    let u = &data["users"][user];
    let r = &data["records"][record];
    let own = r["owner"] == user;
    let dept = r["department"] == u["department"];
    let mgr = u["role"] == "manager";
    match action {
        "view" => own || dept || mgr,
        "edit" => own || (mgr && dept),
        "delete" => own,
        _ => false,
    }
}

fn keys(value: &Value) -> Vec<String> {
    value.as_object().expect("object").keys().cloned().collect()
}

fn start(args: &[&str], name: &str) -> Server {
    let dir = Arc::new(TempDir::new(name));
    let mut all = vec![
        "--policy",
        "examples/authzen/search.writ",
        "--data",
        "examples/authzen/search_data.json",
    ];
    all.extend_from_slice(args);
    Server::start(&all, &dir)
}

/// The ids (or names) a search answered, checked for the answer's shape:
/// 200, JSON, `page.next_token` `""`, no duplicates.
fn ids(reply: &Reply, kind: &str) -> BTreeSet<String> {
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["page"]["next_token"], "", "{body}");
    let results = body["results"].as_array().expect("results");
    assert_eq!(body["page"]["count"], results.len());
    let mut out = BTreeSet::new();
    for item in results {
        let id = match kind {
            "action" => {
                assert_eq!(item.as_object().map(|o| o.len()), Some(1), "{item}");
                item["name"].as_str().expect("name")
            }
            _ => {
                assert_eq!(item.as_object().map(|o| o.len()), Some(2), "{item}");
                item["id"].as_str().expect("a string id")
            }
        };
        assert!(out.insert(id.to_owned()), "{id} twice in {body}");
    }
    out
}

#[test]
fn every_search_answers_what_the_scenario_rules_allow() {
    let server = start(&[], "search-all");
    let data = data();
    let users = keys(&data["users"]);
    let records = keys(&data["records"]);
    assert_eq!((users.len(), records.len()), (6, 20));
    let mut allowed_triples = 0;
    for record in &records {
        for action in ACTIONS {
            let reply = server.post(
                "/access/v1/search/subject",
                &json!({"subject": {"type": "user"}, "action": {"name": action},
                        "resource": {"type": "record", "id": record}})
                .to_string(),
            );
            let want: BTreeSet<String> = users
                .iter()
                .filter(|u| allowed(&data, u, record, action))
                .cloned()
                .collect();
            allowed_triples += want.len();
            assert_eq!(ids(&reply, "subject"), want, "who can {action} {record}");
            for item in reply.json()["results"].as_array().expect("results") {
                assert_eq!(item["type"], "user");
            }
        }
    }
    // The scenario's count of allowed (user, record, action) triples.
    assert_eq!(allowed_triples, 116);
    for user in &users {
        for action in ACTIONS {
            let reply = server.post(
                "/access/v1/search/resource",
                &json!({"subject": {"type": "user", "id": user}, "action": {"name": action},
                        "resource": {"type": "record"}})
                .to_string(),
            );
            let want: BTreeSet<String> = records
                .iter()
                .filter(|r| allowed(&data, user, r, action))
                .cloned()
                .collect();
            assert_eq!(ids(&reply, "resource"), want, "what can {user} {action}");
        }
        for record in &records {
            let reply = server.post(
                "/access/v1/search/action",
                &json!({"subject": {"type": "user", "id": user},
                        "resource": {"type": "record", "id": record}})
                .to_string(),
            );
            let want: BTreeSet<String> = ACTIONS
                .iter()
                .filter(|a| allowed(&data, user, record, a))
                .map(|a| (*a).to_owned())
                .collect();
            assert_eq!(
                ids(&reply, "action"),
                want,
                "what can {user} do on {record}"
            );
        }
    }
}

#[test]
fn unknown_entities_give_empty_results() {
    let server = start(&[], "search-unknown");
    for (path, body) in [
        (
            "/access/v1/search/subject",
            json!({"subject": {"type": "group"}, "action": {"name": "view"}, "resource": {"type": "record", "id": "101"}}),
        ),
        (
            "/access/v1/search/subject",
            json!({"subject": {"type": "user"}, "action": {"name": "view"}, "resource": {"type": "record", "id": "999"}}),
        ),
        (
            "/access/v1/search/subject",
            json!({"subject": {"type": "user"}, "action": {"name": "purge"}, "resource": {"type": "record", "id": "101"}}),
        ),
        (
            "/access/v1/search/resource",
            json!({"subject": {"type": "user", "id": "mallory"}, "action": {"name": "view"}, "resource": {"type": "record"}}),
        ),
        (
            "/access/v1/search/action",
            json!({"subject": {"type": "user", "id": "alice"}, "resource": {"type": "record", "id": "999"}}),
        ),
    ] {
        let reply = server.post(path, &body.to_string());
        assert_eq!(reply.status, 200, "{body}: {reply:?}");
        assert_eq!(reply.json()["results"], json!([]), "{body}");
    }
}

#[test]
fn pages_walk_the_whole_result_once() {
    let server = start(&[], "search-pages");
    let request = json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view"},
                         "resource": {"type": "record"}, "page": {"limit": 3}});
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let mut body = request.clone();
        if !token.is_empty() {
            body["page"]["token"] = Value::String(token.clone());
        }
        let reply = server.post("/access/v1/search/resource", &body.to_string());
        assert_eq!(reply.status, 200, "{reply:?}");
        let body = reply.json();
        let first_key = body.as_object().and_then(|o| o.keys().next().cloned());
        assert_eq!(first_key.as_deref(), Some("page"), "page comes first");
        let results = body["results"].as_array().expect("results").clone();
        assert!(results.len() <= 3, "{body}");
        assert_eq!(body["page"]["count"], results.len());
        seen.extend(
            results
                .iter()
                .map(|r| r["id"].as_str().expect("id").to_owned()),
        );
        pages += 1;
        token = body["page"]["next_token"]
            .as_str()
            .expect("next_token")
            .to_owned();
        if token.is_empty() {
            break;
        }
        assert!(pages < 20, "paging does not end");
        // A changed limit, or another subject, with the token: refused.
        let mut changed = request.clone();
        changed["page"] = json!({"limit": 4, "token": token});
        let message = server
            .post("/access/v1/search/resource", &changed.to_string())
            .assert_error(400, "invalid_request");
        assert!(message.contains("page.token"), "{message}");
        let mut changed = request.clone();
        changed["page"]["token"] = Value::String(token.clone());
        changed["subject"]["id"] = json!("bob");
        server
            .post("/access/v1/search/resource", &changed.to_string())
            .assert_error(400, "invalid_request");
    }
    // Alice is a manager: she may view all 20, which take 7 pages of 3.
    assert_eq!(pages, 7);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (20, 20), "{seen:?}");
    let forged = server.post(
        "/access/v1/search/resource",
        &json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view"},
                "resource": {"type": "record"}, "page": {"token": "bm90LWEtdG9rZW4"}})
        .to_string(),
    );
    let message = forged.assert_error(400, "invalid_request");
    assert!(message.contains("page.token"), "{message}");
}

#[test]
fn requests_without_the_required_fields_are_400_naming_the_field() {
    let server = start(&[], "search-bad");
    let cases = [
        (
            "subject",
            json!({"action": {"name": "view"}, "resource": {"type": "record", "id": "101"}}),
            "`subject`",
        ),
        (
            "subject",
            json!({"subject": {"id": "x"}, "action": {"name": "view"}, "resource": {"type": "record", "id": "101"}}),
            "`subject.type`",
        ),
        (
            "subject",
            json!({"subject": {"type": "user"}, "resource": {"type": "record", "id": "101"}}),
            "`action`",
        ),
        (
            "subject",
            json!({"subject": {"type": "user"}, "action": {"name": "view"}, "resource": {"type": "record"}}),
            "`resource.id`",
        ),
        (
            "resource",
            json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view"}}),
            "`resource`",
        ),
        (
            "resource",
            json!({"subject": {"type": "user"}, "action": {"name": "view"}, "resource": {"type": "record"}}),
            "`subject.id`",
        ),
        (
            "resource",
            json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": 3}, "resource": {"type": "record"}}),
            "`action.name`",
        ),
        (
            "action",
            json!({"subject": {"type": "user", "id": "alice"}}),
            "`resource`",
        ),
        (
            "action",
            json!({"subject": "alice", "resource": {"type": "record", "id": "101"}}),
            "`subject`",
        ),
        (
            "action",
            json!({"subject": {"type": "user", "id": "alice"}, "resource": {"type": "record", "id": "101"}, "page": {"limit": "ten"}}),
            "`page.limit`",
        ),
        (
            "action",
            json!({"subject": {"type": "user", "id": "alice"}, "resource": {"type": "record", "id": "101"}, "context": []}),
            "`context`",
        ),
    ];
    for (kind, body, field) in cases {
        let reply = server.post(&format!("/access/v1/search/{kind}"), &body.to_string());
        let message = reply.assert_error(400, "invalid_request");
        assert!(message.contains(field), "{kind} {body}: {message}");
    }
    for body in ["[]", "\"x\"", "{\"subject\": "] {
        let reply = server.post("/access/v1/search/action", body);
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
    }
    let reply = server.post_typed("/access/v1/search/subject", b"{}", Some("text/plain"));
    reply.assert_error(415, "unsupported_media_type");
    assert_eq!(server.get("/health").status, 200, "still serving");
}

#[test]
fn metadata_names_the_pdp_and_its_endpoints() {
    let server = start(&[], "search-meta");
    let reply = server.get("/.well-known/authzen-configuration");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let doc = reply.json();
    // The harness sends `Host: 127.0.0.1`.
    assert_eq!(doc["policy_decision_point"], "http://127.0.0.1");
    for (key, path) in [
        ("access_evaluation_endpoint", "/access/v1/evaluation"),
        ("access_evaluations_endpoint", "/access/v1/evaluations"),
        ("search_subject_endpoint", "/access/v1/search/subject"),
        ("search_resource_endpoint", "/access/v1/search/resource"),
        ("search_action_endpoint", "/access/v1/search/action"),
    ] {
        assert_eq!(doc[key], format!("http://127.0.0.1{path}"), "{key}");
    }
    assert!(doc
        .as_object()
        .expect("object")
        .values()
        .all(|v| !v.is_null()));

    let server = start(
        &["--authzen-pdp", "https://pdp.example.com/tenant1"],
        "search-meta-pdp",
    );
    let doc = server
        .get("/.well-known/authzen-configuration/tenant1")
        .json();
    assert_eq!(
        doc["policy_decision_point"],
        "https://pdp.example.com/tenant1"
    );
    assert_eq!(
        doc["search_subject_endpoint"],
        "https://pdp.example.com/tenant1/access/v1/search/subject"
    );
    server
        .get("/.well-known/authzen-configuration")
        .assert_error(404, "not_found");
    server
        .get("/.well-known/authzen-configuration/other")
        .assert_error(404, "not_found");

    for bad in [
        "pdp.example.com",
        "ftp://pdp.example.com",
        "https://pdp.example.com/?t=1",
        "https://",
    ] {
        let (code, stderr) = start_refused(&["--authzen-pdp", bad]);
        assert_eq!(code, Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("--authzen-pdp"), "{bad}: {stderr}");
    }
}

#[test]
fn every_candidate_decided_is_logged_and_the_request_id_echoed() {
    let dir = Arc::new(TempDir::new("search-log"));
    let log = dir.file("decisions.jsonl");
    let log_arg = log.display().to_string();
    let server = Server::start(
        &[
            "--policy",
            "examples/authzen/search.writ",
            "--data",
            "examples/authzen/search_data.json",
            "--decision-log",
            &log_arg,
        ],
        &dir,
    );
    let body = json!({"subject": {"type": "user"}, "action": {"name": "edit"},
                      "resource": {"type": "record", "id": "110"}});
    let reply = request(
        server.port,
        "POST",
        "/access/v1/search/subject",
        Some(body.to_string().as_bytes()),
        &[("X-Request-ID", "search-42")],
    );
    assert_eq!(reply.header("x-request-id"), Some("search-42"));
    // Alice manages Sales (110's department); Dan owns it.
    assert_eq!(
        ids(&reply, "subject"),
        BTreeSet::from(["alice".to_owned(), "dan".to_owned()])
    );
    let lines = read_log(&log);
    assert_eq!(lines.len(), 6, "one line per user decided: {lines:?}");
    for line in &lines {
        assert_eq!(line["endpoint"], "/access/v1/search/subject", "{line}");
        assert_eq!(line["request_id"], "search-42", "{line}");
    }
    let allowed: BTreeSet<&str> = lines
        .iter()
        .filter(|l| l["decision"] == "allow")
        .map(|l| l["request"]["subject"]["id"].as_str().expect("id"))
        .collect();
    assert_eq!(allowed, BTreeSet::from(["alice", "dan"]));
}

#[test]
fn action_search_on_the_default_pack_finds_what_an_evaluation_allows() {
    let dir = Arc::new(TempDir::new("search-pack"));
    let server = Server::start(&[], &dir);
    let mut body = authzen_deploy();
    let evaluation = server.post("/access/v1/evaluation", &body.to_string());
    assert_eq!(evaluation.json()["decision"], true, "{evaluation:?}");
    body.as_object_mut().expect("object").remove("action");
    let reply = server.post("/access/v1/search/action", &body.to_string());
    let names = ids(&reply, "action");
    assert!(names.contains("deploy"), "{names:?}");
    // Each name found is allowed by the evaluation API too.
    for name in &names {
        let mut one = body.clone();
        one["action"] = json!({"name": name});
        let answer = server.post("/access/v1/evaluation", &one.to_string());
        assert_eq!(answer.json()["decision"], true, "{name}: {answer:?}");
    }
    // Without the intent the pack asks for, nothing is allowed.
    body["context"]
        .as_object_mut()
        .expect("context")
        .remove("intent");
    let reply = server.post("/access/v1/search/action", &body.to_string());
    assert_eq!(reply.json()["results"], json!([]));
}

#[test]
fn a_long_listing_is_decided_a_thousand_candidates_a_request() {
    let dir = Arc::new(TempDir::new("search-long"));
    let mut users = serde_json::Map::new();
    for n in 0..2500 {
        users.insert(format!("u{n:04}"), json!({"ok": n % 3 != 0}));
    }
    let data = json!({"authzen": {"subjects": {"user": "users"}}, "users": users});
    let data_file = dir.file("data.json");
    std::fs::write(&data_file, data.to_string()).expect("write data");
    let policy_file = dir.file("p.writ");
    std::fs::write(
        &policy_file,
        "@id(\"ok-users\") permit if subject.kind == \"user\" and action == \"view\" and users[subject.id].ok == true;\n",
    )
    .expect("write policy");
    let (policy, data) = (
        policy_file.display().to_string(),
        data_file.display().to_string(),
    );
    let server = Server::start(&["--policy", &policy, "--data", &data], &dir);
    let request = json!({"subject": {"type": "user"}, "action": {"name": "view"},
                         "resource": {"type": "doc", "id": "d"}});
    let mut found = Vec::new();
    let mut counts = Vec::new();
    let mut token = String::new();
    loop {
        let mut body = request.clone();
        if !token.is_empty() {
            body["page"] = json!({"token": token});
        }
        let reply = server.post("/access/v1/search/subject", &body.to_string());
        assert_eq!(reply.status, 200, "{reply:?}");
        let body = reply.json();
        let results = body["results"].as_array().expect("results");
        counts.push(results.len());
        found.extend(
            results
                .iter()
                .map(|r| r["id"].as_str().expect("id").to_owned()),
        );
        token = body["page"]["next_token"]
            .as_str()
            .expect("token")
            .to_owned();
        if token.is_empty() {
            break;
        }
        assert!(counts.len() < 10, "paging does not end");
    }
    // 1000 candidates a request, every third denied (u0000, u0003, ...):
    // 666 of the first thousand allowed, 667 of the second, 333 of the
    // last 500.
    assert_eq!(counts, [666, 667, 333]);
    let want: Vec<String> = (0..2500)
        .filter(|n| n % 3 != 0)
        .map(|n| format!("u{n:04}"))
        .collect();
    assert_eq!(found, want);
}

#[test]
fn searches_are_timed_in_the_request_duration_histogram_by_route() {
    let server = start(&[], "search-metrics");
    let count = |route: &str| {
        server.metric(&format!(
            "writ_request_duration_seconds_count{{endpoint=\"{route}\"}}"
        ))
    };
    for route in [
        "/access/v1/search/subject",
        "/access/v1/search/resource",
        "/access/v1/search/action",
    ] {
        assert_eq!(count(route), 0.0, "{route} before any search");
    }
    let subject = json!({"subject": {"type": "user"}, "action": {"name": "view"},
                         "resource": {"type": "record", "id": "101"}});
    let resource = json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view"},
                          "resource": {"type": "record"}});
    let action = json!({"subject": {"type": "user", "id": "alice"},
                        "resource": {"type": "record", "id": "101"}});
    for _ in 0..2 {
        assert_eq!(
            server
                .post("/access/v1/search/subject", &subject.to_string())
                .status,
            200
        );
    }
    for _ in 0..3 {
        assert_eq!(
            server
                .post("/access/v1/search/resource", &resource.to_string())
                .status,
            200
        );
    }
    assert_eq!(
        server
            .post("/access/v1/search/action", &action.to_string())
            .status,
        200
    );
    // A refused search (no `action`) is counted as an error, not timed.
    let refused = server.post(
        "/access/v1/search/subject",
        r#"{"subject": {"type": "user"}}"#,
    );
    assert_eq!(refused.status, 400);

    assert_eq!(count("/access/v1/search/subject"), 2.0);
    assert_eq!(count("/access/v1/search/resource"), 3.0);
    assert_eq!(count("/access/v1/search/action"), 1.0);
    // Every search fell in some bucket, and took some time.
    let text = server.get("/metrics").body;
    assert!(text.contains(
        "writ_request_duration_seconds_bucket{endpoint=\"/access/v1/search/resource\",le=\"+Inf\"} 3"
    ));
    let sum =
        server.metric("writ_request_duration_seconds_sum{endpoint=\"/access/v1/search/resource\"}");
    assert!(sum > 0.0, "{sum}");
    // The decision endpoints' series are untouched.
    assert_eq!(count("/access/v1/evaluation"), 0.0);
}
