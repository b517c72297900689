//! `writ serve`, end to end: the real binary on a loopback port, spoken to
//! over hand-written HTTP/1.1 so that broken requests can be sent as they
//! are.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::server::*;
use serde_json::{json, Value};

const RICK: &str = "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";
const MORTY: &str = "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";
const BETH: &str = "CiRmZDM2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";

fn todo_server(dir: &Arc<TempDir>) -> Server {
    Server::start(
        &[
            "--policy",
            "examples/authzen/todo.writ",
            "--data",
            "examples/authzen/pip_users.json",
        ],
        dir,
    )
}

// ------------------------------------------------------------------ tests

/// `POST /v1/decide` is answered without the router (src/server/http.rs,
/// `Service`); its answers keep the router's headers, in the router's
/// order (hyper adds `connection: close` after them when the request asked
/// for it and the answer did not say so), and anything else near it is
/// still the router's.
#[test]
fn the_direct_decide_path_answers_as_the_router_did() {
    let dir = Arc::new(TempDir::new("direct"));
    let server = Server::start(&[], &dir);
    let body = ci_deploy().to_string();

    let post = |headers: &str| {
        let raw = format!(
            "POST /v1/decide HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        exchange(server.port, raw.as_bytes()).expect("an answer")
    };
    for (headers, names) in [
        (
            "Content-Type: application/json\r\n",
            &[
                "content-type",
                "x-writ-decision-id",
                "content-length",
                "connection",
                "date",
            ][..],
        ),
        (
            "Content-Type: application/json\r\nX-Request-ID: req-7\r\n",
            &[
                "content-type",
                "x-writ-decision-id",
                "x-request-id",
                "content-length",
                "connection",
                "date",
            ][..],
        ),
        (
            "Content-Type: text/plain\r\n",
            &["content-type", "connection", "content-length", "date"][..],
        ),
    ] {
        let reply = post(headers);
        let got: Vec<&str> = reply.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(got, names, "{reply:?}");
        assert_eq!(
            reply.header("content-length"),
            Some(reply.body.len().to_string().as_str()),
            "{reply:?}"
        );
    }

    // The query is not part of the path: still a decision.
    let reply = request(
        server.port,
        "POST",
        "/v1/decide?trace=1",
        Some(body.as_bytes()),
        &[],
    );
    assert_eq!(reply.json()["decision"], "allow", "{reply:?}");
    // Over 100 headers: the head limit comes first, with JSON.
    let names: Vec<String> = (0..150).map(|i| format!("X-H{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    request(
        server.port,
        "POST",
        "/v1/decide",
        Some(body.as_bytes()),
        &many,
    )
    .assert_error(431, "headers_too_large");
    // Other methods and spellings are the router's.
    server
        .post("/v1/decide/", &body)
        .assert_error(404, "not_found");
    request(server.port, "PUT", "/v1/decide", Some(body.as_bytes()), &[])
        .assert_error(405, "method_not_allowed");
    // The two JSON posts of the loop and the one with a query.
    assert_eq!(
        server.metric("writ_decisions_total{outcome=\"allow\"}"),
        3.0
    );
}

#[test]
fn decide_batch_policy_health_ready_and_metrics() {
    let dir = Arc::new(TempDir::new("endpoints"));
    let server = Server::start(&[], &dir);

    // One decision, as the CLI would make it.
    let reply = request(
        server.port,
        "POST",
        "/v1/decide",
        Some(ci_deploy().to_string().as_bytes()),
        &[("X-Request-ID", "req-42")],
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("x-request-id"), Some("req-42"));
    let decision = reply.json();
    assert_eq!(decision["decision"], "allow");
    assert_eq!(decision["scope"], json!(["deploy:k8s://prod-eu/payments"]));
    assert_eq!(decision["ttl"], 900);
    assert_eq!(decision["reasons"], json!(["baseline.owner-change"]));
    let kinds: Vec<&str> = decision["obligations"]
        .as_array()
        .expect("obligations")
        .iter()
        .filter_map(|o| o["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"revoke_on") && kinds.contains(&"audience"),
        "{kinds:?}"
    );
    assert!(decision["trace"].as_array().is_some_and(|t| !t.is_empty()));
    let decision_id = decision["decision_id"].as_str().expect("decision id");
    assert_eq!(reply.header("x-writ-decision-id"), Some(decision_id));

    // The same through the CLI gives the same decision.
    let request_file = dir.file("ci.json");
    std::fs::write(&request_file, ci_deploy().to_string()).expect("write");
    let cli = Command::new(BIN)
        .args(["eval", "-r"])
        .arg(&request_file)
        .current_dir(ROOT)
        .output()
        .expect("writ eval");
    let cli: Value = serde_json::from_slice(&cli.stdout).expect("CLI JSON");
    assert_eq!(cli["scope"], decision["scope"]);
    assert_eq!(cli["policy"]["digest"], decision["policy"]["digest"]);

    // A batch: array in, array out, in order.
    let mut denied = ci_deploy();
    denied["subject"]["attested"] = json!(false);
    let batch = json!([ci_deploy(), denied, {}]).to_string();
    let reply = server.post("/v1/decide/batch", &batch);
    assert_eq!(reply.status, 200, "{reply:?}");
    let out = reply.json();
    let out = out.as_array().expect("array");
    assert_eq!(out.len(), 3);
    assert_eq!(out[0]["decision"], "allow");
    assert_eq!(out[1]["decision"], "deny");
    assert!(out[1]["reasons"]
        .as_array()
        .expect("reasons")
        .contains(&json!("identity.attested")));
    assert_eq!(out[2]["decision"], "deny");
    let empty = server.post("/v1/decide/batch", "[]");
    assert_eq!(empty.status, 200);
    assert_eq!(empty.json(), json!([]));

    // The policy set.
    let policy = server.get("/v1/policy").json();
    assert_eq!(policy["digest"], decision["policy"]["digest"]);
    let rules = policy["rules"].as_array().expect("rules");
    assert!(rules.contains(&json!("identity.attested")));
    assert!(rules.contains(&json!("baseline.owner-change")));
    assert!(policy["files"]
        .as_array()
        .expect("files")
        .iter()
        .any(|f| f.as_str().is_some_and(|f| f.ends_with("identity.writ"))));

    let health = server.get("/health");
    assert_eq!(
        (health.status, health.json()["status"].clone()),
        (200, json!("ok"))
    );
    let ready = server.get("/ready");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["digest"], policy["digest"]);

    // The metrics count what happened above.
    let metrics = server.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
    assert_eq!(
        server.metric("writ_decisions_total{outcome=\"allow\"}"),
        2.0
    );
    assert_eq!(server.metric("writ_decisions_total{outcome=\"deny\"}"), 2.0);
    assert_eq!(
        server.metric("writ_request_duration_seconds_count{endpoint=\"/v1/decide\"}"),
        1.0
    );
    assert_eq!(
        server.metric(
            "writ_request_duration_seconds_bucket{endpoint=\"/v1/decide/batch\",le=\"+Inf\"}"
        ),
        2.0
    );
    assert_eq!(server.metric("writ_policy_reloads_total"), 0.0);
    assert_eq!(server.metric("writ_policy_reload_failures_total"), 0.0);
    // `{}` had no time: the server filled it in.
    assert_eq!(server.metric("writ_time_filled_total"), 1.0);
    let _ = server.get("/nowhere");
    assert_eq!(
        server.metric("writ_request_errors_total{code=\"not_found\"}"),
        1.0
    );
}

#[test]
fn authzen_evaluation_and_evaluations() {
    let dir = Arc::new(TempDir::new("authzen"));
    let server = todo_server(&dir);
    let eval = |subject: &str, action: &str, owner: &str| {
        json!({
            "subject": {"type": "user", "id": subject},
            "action": {"name": action},
            "resource": {"type": "todo", "id": "t-1", "properties": {"ownerID": owner}}
        })
    };

    let reply = request(
        server.port,
        "POST",
        "/access/v1/evaluation",
        Some(
            eval(MORTY, "can_update_todo", "morty@the-citadel.com")
                .to_string()
                .as_bytes(),
        ),
        &[("X-Request-ID", "bfe9eb29")],
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("x-request-id"), Some("bfe9eb29"));
    let out = reply.json();
    assert_eq!(out["decision"], true);
    assert_eq!(out["context"]["reasons"], json!(["todo.change-own"]));
    assert_eq!(out["context"]["ttl"], 3600);
    assert_eq!(out["context"]["scope"], json!([]));
    assert!(out["context"]["obligations"].is_array());

    // A viewer owning the todo still may not change it; an unknown subject
    // may do nothing.
    let beth = server.post(
        "/access/v1/evaluation",
        &eval(BETH, "can_update_todo", "beth@the-smiths.com").to_string(),
    );
    assert_eq!(beth.json()["decision"], false);
    assert_eq!(beth.json()["context"]["ttl"], 0);
    let stranger = server.post(
        "/access/v1/evaluation",
        &eval("nobody", "can_read_todos", "x").to_string(),
    );
    assert_eq!(stranger.json()["decision"], false);

    // Defaults with per-item overrides, answered in order.
    let batch = json!({
        "subject": {"type": "user", "id": MORTY},
        "action": {"name": "can_update_todo"},
        "evaluations": [
            {"resource": {"type": "todo", "id": "1", "properties": {"ownerID": "rick@the-citadel.com"}}},
            {"resource": {"type": "todo", "id": "2", "properties": {"ownerID": "morty@the-citadel.com"}}},
            {"subject": {"type": "user", "id": RICK},
             "resource": {"type": "todo", "id": "3", "properties": {"ownerID": "morty@the-citadel.com"}}},
            {"action": {"name": "can_read_user"}, "resource": {"type": "user", "id": "beth@the-smiths.com"}},
            {"resource": {"type": "todo"}}
        ]
    });
    let reply = server.post("/access/v1/evaluations", &batch.to_string());
    assert_eq!(reply.status, 200, "{reply:?}");
    let results = reply.json()["evaluations"]
        .as_array()
        .expect("evaluations")
        .clone();
    let decisions: Vec<&Value> = results.iter().map(|r| &r["decision"]).collect();
    assert_eq!(
        decisions,
        [
            &json!(false),
            &json!(true),
            &json!(true),
            &json!(true),
            &json!(false)
        ]
    );
    // The item without a resource id is denied with its error; the others
    // were still decided.
    assert_eq!(results[4]["context"]["error"]["status"], 400);
    assert!(results[4]["context"]["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("evaluations[4].resource.id")));

    // Short-circuit semantics.
    let mut deny_first = batch.clone();
    deny_first["options"] = json!({"evaluations_semantic": "deny_on_first_deny"});
    let out = server
        .post("/access/v1/evaluations", &deny_first.to_string())
        .json();
    assert_eq!(out["evaluations"].as_array().map(Vec::len), Some(1));
    assert_eq!(out["evaluations"][0]["decision"], false);
    let mut permit_first = batch.clone();
    permit_first["options"] = json!({"evaluations_semantic": "permit_on_first_permit"});
    let out = server
        .post("/access/v1/evaluations", &permit_first.to_string())
        .json();
    assert_eq!(out["evaluations"].as_array().map(Vec::len), Some(2));
    assert_eq!(out["evaluations"][1]["decision"], true);
    let mut unknown = batch.clone();
    unknown["options"] = json!({"evaluations_semantic": "most"});
    server
        .post("/access/v1/evaluations", &unknown.to_string())
        .assert_error(400, "invalid_request");

    // Without `evaluations`, the batch endpoint answers one evaluation.
    let single = server.post(
        "/access/v1/evaluations",
        &eval(RICK, "can_delete_todo", "morty@the-citadel.com").to_string(),
    );
    assert_eq!(single.json()["decision"], true);
    assert_eq!(
        single.json()["context"]["reasons"],
        json!(["todo.delete-any"])
    );
}

#[test]
fn authzen_context_reaches_the_default_pack() {
    let dir = Arc::new(TempDir::new("authzen-pack"));
    let server = Server::start(&[], &dir);
    let body = authzen_deploy();
    let out = server
        .post("/access/v1/evaluation", &body.to_string())
        .json();
    assert_eq!(out["decision"], true, "{out}");
    assert_eq!(
        out["context"]["scope"],
        json!(["deploy:k8s://prod-eu/payments"])
    );
    assert_eq!(out["context"]["ttl"], 900);
    // The same request through the contract endpoint decides the same.
    let contract = server.post("/v1/decide", &ci_deploy().to_string()).json();
    assert_eq!(out["context"]["scope"], contract["scope"]);
    assert_eq!(out["context"]["reasons"], contract["reasons"]);

    let mut broken = body.clone();
    broken["context"]["sensitivity"] = json!("secret");
    let message = server
        .post("/access/v1/evaluation", &broken.to_string())
        .assert_error(400, "invalid_request");
    assert!(message.contains("context.sensitivity"), "{message}");
}

#[test]
fn bad_input_gets_a_json_error_and_never_an_allow() {
    let dir = Arc::new(TempDir::new("bad-input"));
    let server = Server::start(&["--max-body", "4096", "--request-timeout", "1s"], &dir);
    let port = server.port;

    // Not JSON, empty, not UTF-8, trailing garbage.
    for body in [
        &b"{\"subject\":"[..],
        b"",
        b"\xff\xfe{}",
        b"{} {}",
        b"allow",
    ] {
        request(port, "POST", "/v1/decide", Some(body), &[]).assert_error(400, "malformed_json");
    }
    // Wrong types and values name the field.
    for (body, field) in [
        (r#"{"subject":{"attested":"yes"}}"#, "subject.attested"),
        (r#"{"requested":{"ttl":-5}}"#, "requested.ttl"),
        (r#"{"sensitivity":"secret"}"#, "sensitivity"),
        (r#"{"action":["read"]}"#, "action"),
        (
            r#"{"environment":{"time":"yesterday"}}"#,
            "environment.time",
        ),
        (
            r#"{"requested":{"scope":["read:a//b"]}}"#,
            "requested.scope",
        ),
        (r#"{"sensitivty":"public"}"#, "sensitivty"),
        // Arrays in place of objects are not read by position.
        (r#"[{"id":"spiffe://x","attested":true},"read"]"#, "`.`"),
        (r#"{"requested":[["read:db://x"],60]}"#, "`requested`"),
        (r#"{"subject":null}"#, "subject"),
    ] {
        let message = server
            .post("/v1/decide", body)
            .assert_error(400, "invalid_request");
        assert!(message.contains(field), "{body}: {message}");
    }
    server
        .post("/v1/decide", "[]")
        .assert_error(400, "invalid_request");
    server
        .post("/v1/decide", "\"allow\"")
        .assert_error(400, "invalid_request");
    let message = server
        .post("/v1/decide/batch", r#"[{}, {"subject": {"shared": 1}}]"#)
        .assert_error(400, "invalid_request");
    assert!(message.contains("[1].subject.shared"), "{message}");
    server
        .post("/v1/decide/batch", "{}")
        .assert_error(400, "invalid_request");
    let many = format!("[{}]", vec!["{}"; 1001].join(","));
    server
        .post("/v1/decide/batch", &many)
        .assert_error(400, "batch_too_large");

    // Missing required AuthZEN fields.
    for (body, field) in [
        (
            json!({"action": {"name": "a"}, "resource": {"type": "r", "id": "1"}}),
            "`subject`",
        ),
        (
            json!({"subject": {"type": "user"}, "action": {"name": "a"}, "resource": {"type": "r", "id": "1"}}),
            "subject.id",
        ),
        (
            json!({"subject": {"type": "user", "id": "u"}, "action": {}, "resource": {"type": "r", "id": "1"}}),
            "action.name",
        ),
        (
            json!({"subject": {"type": "user", "id": "u"}, "action": {"name": "a"}}),
            "`resource`",
        ),
        (
            json!({"subject": {"type": "user", "id": 5}, "action": {"name": "a"}, "resource": {"type": "r", "id": "1"}}),
            "subject.id",
        ),
        (
            json!({"subject": {"type": "user", "id": "u", "properties": {"attested": "yes"}}, "action": {"name": "a"}, "resource": {"type": "r", "id": "1"}}),
            "subject.properties.attested",
        ),
    ] {
        let message = server
            .post("/access/v1/evaluation", &body.to_string())
            .assert_error(400, "invalid_request");
        assert!(message.contains(field), "{body}: {message}");
    }
    server
        .post("/access/v1/evaluations", r#"{"evaluations": 3}"#)
        .assert_error(400, "invalid_request");

    // Too deep.
    let deep = format!(
        "{{\"context\":{{\"x\":{}1{}}}}}",
        "[".repeat(100),
        "]".repeat(100)
    );
    server
        .post("/v1/decide", &deep)
        .assert_error(400, "invalid_request");

    // Over the body limit: announced, and sent chunked without a length.
    let large = format!("{{\"context\":{{\"pad\":\"{}\"}}}}", "x".repeat(5000));
    server
        .post("/v1/decide", &large)
        .assert_error(413, "body_too_large");
    let mut chunked = b"POST /v1/decide HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..5 {
        chunked.extend_from_slice(format!("400\r\n{}\r\n", " ".repeat(1024)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    exchange(port, &chunked)
        .expect("an answer")
        .assert_error(413, "body_too_large");

    // A client that stops halfway through its body gets a timeout.
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .write_all(
            b"POST /v1/decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"subject\":",
        )
        .expect("write");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let reply = parse_reply(&raw).expect("a 408 reply");
    reply.assert_error(408, "timeout");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // A client that never finishes its headers is disconnected.
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .write_all(b"POST /v1/decide HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(!String::from_utf8_lossy(&raw).contains("allow"));

    // Unknown routes and methods.
    server.get("/v1/nothing").assert_error(404, "not_found");
    server
        .get("/v1/decide")
        .assert_error(405, "method_not_allowed");
    server
        .post("/health", "{}")
        .assert_error(405, "method_not_allowed");

    // Still alive, nothing was allowed, and every refusal was counted.
    assert_eq!(server.get("/health").status, 200);
    assert_eq!(
        server.metric("writ_decisions_total{outcome=\"allow\"}"),
        0.0
    );
    assert_eq!(
        server.metric("writ_request_errors_total{code=\"malformed_json\"}"),
        5.0
    );
    assert_eq!(
        server.metric("writ_request_errors_total{code=\"body_too_large\"}"),
        2.0
    );
    assert_eq!(
        server.metric("writ_request_errors_total{code=\"timeout\"}"),
        1.0
    );
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
}

fn write_policy(path: &Path, text: &str) {
    // Write aside and rename, as a deploy would, so no reader sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write policy");
    std::fs::rename(&tmp, path).expect("rename policy");
}

#[test]
fn reload_on_sighup_good_then_broken_then_good() {
    let dir = Arc::new(TempDir::new("reload"));
    let policies = dir.file("policies");
    std::fs::create_dir_all(&policies).expect("mkdir");
    let file = policies.join("main.writ");
    write_policy(&file, "@id(\"v1\") permit if action == \"read\";\n");
    let policy_arg = policies.display().to_string();
    let server = Server::start(&["--policy", &policy_arg, "--watch-interval", "0s"], &dir);
    let read = r#"{"action":"read"}"#;
    let write = r#"{"action":"write"}"#;
    assert_eq!(
        server.post("/v1/decide", read).json()["reasons"],
        json!(["v1"])
    );
    let first = server.policy_digest();

    // A good reload: the new set answers.
    write_policy(&file, "@id(\"v2\") permit if action == \"write\";\n");
    server.signal("HUP");
    wait_until("the reload", Duration::from_secs(10), || {
        server.policy_digest() != first
    });
    let second = server.policy_digest();
    assert_eq!(server.post("/v1/decide", read).json()["decision"], "deny");
    assert_eq!(
        server.post("/v1/decide", write).json()["reasons"],
        json!(["v2"])
    );
    assert_eq!(server.get("/v1/policy").json()["rules"], json!(["v2"]));
    assert_eq!(server.metric("writ_policy_reloads_total"), 1.0);

    // A broken reload: the last good set keeps serving; the failure is
    // counted and its diagnostics are on stderr.
    write_policy(&file, "@id(\"v3\") permit if action = \"write\";\n");
    server.signal("HUP");
    wait_until("the failed reload", Duration::from_secs(10), || {
        server.metric("writ_policy_reload_failures_total") == 1.0
    });
    assert_eq!(server.policy_digest(), second);
    assert_eq!(
        server.post("/v1/decide", write).json()["reasons"],
        json!(["v2"])
    );
    assert_eq!(server.metric("writ_policy_reloads_total"), 1.0);
    let stderr = server.stderr();
    assert!(stderr.contains("reload (SIGHUP) failed"), "{stderr}");
    assert!(
        stderr.contains("writ::check::wrong_operator") || stderr.contains("wrong_operator"),
        "{stderr}"
    );

    // A file that vanished is a failed reload too.
    let moved = dir.file("main.writ.moved");
    std::fs::rename(&file, &moved).expect("move");
    server.signal("HUP");
    wait_until("the second failed reload", Duration::from_secs(10), || {
        server.metric("writ_policy_reload_failures_total") == 2.0
    });
    assert_eq!(server.policy_digest(), second);

    // Fixed: serving again from the new text.
    std::fs::rename(&moved, &file).expect("move back");
    write_policy(&file, "@id(\"v4\") permit if action == \"read\";\n");
    server.signal("HUP");
    wait_until("the fixed reload", Duration::from_secs(10), || {
        server.metric("writ_policy_reloads_total") == 2.0
    });
    assert_eq!(
        server.post("/v1/decide", read).json()["reasons"],
        json!(["v4"])
    );
}

#[test]
fn reload_when_a_policy_or_data_file_changes() {
    let dir = Arc::new(TempDir::new("watch"));
    let policies = dir.file("policies");
    std::fs::create_dir_all(&policies).expect("mkdir");
    write_policy(
        &policies.join("a.writ"),
        "const allowed = [\"read\"];\n@id(\"a\") permit if action in allowed;\n",
    );
    let data = dir.file("data.json");
    std::fs::write(&data, r#"{"allowed": ["read"]}"#).expect("write data");
    let policy_arg = policies.display().to_string();
    let data_arg = data.display().to_string();
    let server = Server::start(&["--policy", &policy_arg, "--data", &data_arg], &dir);
    assert_eq!(
        server.post("/v1/decide", r#"{"action":"write"}"#).json()["decision"],
        "deny"
    );

    // The data file changes: its constants take effect without a signal.
    std::fs::write(&data, r#"{"allowed": ["read", "write"]}"#).expect("write data");
    wait_until("the data reload", Duration::from_secs(10), || {
        server.post("/v1/decide", r#"{"action":"write"}"#).json()["decision"] == "allow"
    });

    // A new file in the directory is picked up too.
    let before = server.policy_digest();
    write_policy(
        &policies.join("b.writ"),
        "@id(\"b\") permit if action == \"deploy\";\n",
    );
    wait_until("the new file", Duration::from_secs(10), || {
        server.policy_digest() != before
    });
    assert_eq!(
        server.post("/v1/decide", r#"{"action":"deploy"}"#).json()["reasons"],
        json!(["b"])
    );
    assert!(server.metric("writ_policy_reloads_total") >= 2.0);
    assert_eq!(server.metric("writ_policy_reload_failures_total"), 0.0);
}

#[test]
fn decision_log_lines_time_fill_and_redaction() {
    let dir = Arc::new(TempDir::new("log"));
    let log = dir.file("decisions.jsonl");
    let log_arg = log.display().to_string();
    let mut server = Server::start(
        &[
            "--decision-log",
            &log_arg,
            "--redact",
            "subject.id",
            "--redact",
            "context.approval.by",
        ],
        &dir,
    );
    let mut with_time = ci_deploy();
    with_time["context"]["approval"] = json!({"by": "oncall@acme.io", "ticket": "CHG-1"});
    let mut without_time = ci_deploy();
    without_time["environment"]
        .as_object_mut()
        .expect("environment")
        .remove("time");
    let first = server.post("/v1/decide", &with_time.to_string()).json();
    let second = server.post("/v1/decide", &without_time.to_string()).json();
    let refused = server.post("/v1/decide", r#"{"subject":{"attested":"yes"}}"#);
    assert_eq!(refused.status, 400);
    let az = server.post(
        "/access/v1/evaluation",
        &json!({"subject": {"type": "workload", "id": "w"}, "action": {"name": "read"},
                "resource": {"type": "db", "id": "db://x"}})
        .to_string(),
    );
    assert_eq!(az.json()["decision"], false);
    let digest = server.policy_digest();

    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(20)), "clean exit");
    let lines = read_log(&log);
    assert_eq!(
        lines.len(),
        3,
        "one line per decision, none for the refused request"
    );

    let line = &lines[0];
    assert_eq!(line["decision_id"], first["decision_id"]);
    assert_eq!(line["endpoint"], "/v1/decide");
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["scope"], first["scope"]);
    assert_eq!(line["ttl"], first["ttl"]);
    assert_eq!(line["reasons"], first["reasons"]);
    assert_eq!(line["policy_digest"], json!(digest));
    assert_eq!(line["time_filled"], false);
    assert_eq!(
        line["request"]["environment"]["time"],
        "2026-11-22T10:00:00Z"
    );
    assert!(line["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    let request_digest = line["request_digest"].as_str().expect("request digest");
    assert!(request_digest.starts_with("sha256:") && request_digest.len() == 7 + 64);
    // Redacted fields are gone; the others are kept.
    assert_eq!(line["request"]["subject"]["id"], "[redacted]");
    assert_eq!(line["request"]["context"]["approval"]["by"], "[redacted]");
    assert_eq!(line["request"]["context"]["approval"]["ticket"], "CHG-1");
    assert_eq!(line["request"]["subject"]["owner"], "payments");
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!text.contains("spiffe://prod.acme.io/ns/payments/sa/deployer"));
    assert!(!text.contains("oncall@acme.io"));

    // The request without a time was timed by the server, and says so.
    let line = &lines[1];
    assert_eq!(line["decision_id"], second["decision_id"]);
    assert_eq!(line["time_filled"], true);
    assert_eq!(line["request"]["environment"]["time"], line["time"]);
    assert_ne!(line["request_digest"], lines[0]["request_digest"]);

    assert_eq!(lines[2]["endpoint"], "/access/v1/evaluation");
    assert_eq!(lines[2]["decision_id"], az.json()["context"]["decision_id"]);
    assert_eq!(lines[2]["decision"], "deny");
}

#[test]
fn sigterm_finishes_requests_in_flight_and_loses_no_log_line() {
    let dir = Arc::new(TempDir::new("sigterm"));
    let log = dir.file("decisions.jsonl");
    let log_arg = log.display().to_string();
    let mut server = Server::start(&["--decision-log", &log_arg], &dir);
    let port = server.port;
    let body = ci_deploy().to_string();

    // Requests caught halfway: headers and half the body sent before SIGTERM.
    let mut halfway = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let raw = request_bytes("POST", "/v1/decide", Some(body.as_bytes()), &[]);
        let cut = raw.len() - body.len() / 2;
        stream.write_all(&raw[..cut]).expect("first half");
        halfway.push((stream, raw[cut..].to_vec()));
    }

    // Clients hammering away while the signal lands.
    let answered = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let answered = answered.clone();
        let stop = stop.clone();
        let body = body.clone();
        clients.push(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match try_request(port, "POST", "/v1/decide", Some(body.as_bytes()), &[]) {
                    Ok(reply) if reply.status == 200 => {
                        let id = reply.json()["decision_id"]
                            .as_str()
                            .expect("decision id")
                            .to_owned();
                        answered.lock().expect("lock").push(id);
                    }
                    Ok(reply) => panic!("unexpected reply {reply:?}"),
                    // Refused or reset once the listener is gone.
                    Err(_) => break,
                }
            }
        }));
    }
    wait_until("some answers", Duration::from_secs(20), || {
        answered.lock().expect("lock").len() >= 20
    });
    server.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));

    // The requests in flight still get their answers.
    for (mut stream, rest) in halfway {
        stream.write_all(&rest).expect("second half");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read the answer");
        let reply = parse_reply(&raw).expect("an answer");
        assert_eq!(reply.status, 200, "{reply:?}");
        let id = reply.json()["decision_id"].as_str().expect("id").to_owned();
        answered.lock().expect("lock").push(id);
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().expect("client thread");
    }
    assert!(
        server.wait_exit(Duration::from_secs(30)),
        "clean exit after SIGTERM"
    );

    let logged: std::collections::HashSet<String> = read_log(&log)
        .iter()
        .map(|l| l["decision_id"].as_str().expect("decision id").to_owned())
        .collect();
    let answered = answered.lock().expect("lock");
    assert!(answered.len() >= 23);
    let missing: Vec<&String> = answered.iter().filter(|id| !logged.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} answered decisions have no log line: {missing:?}",
        missing.len()
    );
    let stderr = server.stderr();
    assert!(stderr.contains("writ: stopped"), "{stderr}");
}

#[test]
fn drain_delay_turns_ready_off_but_keeps_answering() {
    let dir = Arc::new(TempDir::new("drain"));
    let mut server = Server::start(&["--drain-delay", "2s"], &dir);
    assert_eq!(server.get("/ready").status, 200);
    server.signal("TERM");
    wait_until("/ready to go 503", Duration::from_secs(5), || {
        try_request(server.port, "GET", "/ready", None, &[]).is_ok_and(|r| r.status == 503)
    });
    assert_eq!(server.get("/ready").json()["status"], "shutting_down");
    assert_eq!(server.get("/health").status, 200);
    assert_eq!(
        server.post("/v1/decide", &ci_deploy().to_string()).json()["decision"],
        "allow"
    );
    assert!(server.wait_exit(Duration::from_secs(20)));
}

/// `0-1,4` -> [0, 1, 4], as /proc prints `Cpus_allowed_list`.
#[cfg(target_os = "linux")]
fn cpu_list(text: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (from, to) = part.split_once('-').unwrap_or((part, part));
        let (from, to): (usize, usize) = (
            from.parse().expect("a CPU number"),
            to.parse().expect("a CPU number"),
        );
        cpus.extend(from..=to);
    }
    cpus
}

/// The CPUs a thread (`/proc/PID/task/TID`) or process may run on; none
/// if it has just exited.
#[cfg(target_os = "linux")]
fn allowed_cpus(proc_dir: &Path) -> Option<Vec<usize>> {
    let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list");
    Some(cpu_list(list))
}

#[cfg(target_os = "linux")]
#[test]
fn pin_workers_puts_each_worker_on_a_cpu_of_its_own() {
    let dir = Arc::new(TempDir::new("pin"));
    let server = Server::start(&["--workers", "2", "--pin-workers"], &dir);
    let reply = server.post("/v1/decide", &ci_deploy().to_string());
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["decision"], "allow");
    assert!(
        server.stderr().contains("pinning the workers"),
        "{}",
        server.stderr()
    );

    let process = PathBuf::from(format!("/proc/{}", server.pid()));
    let allowed = allowed_cpus(&process).expect("the server runs");
    assert!(!allowed.is_empty());
    // Each worker pins itself when it first goes idle, before serving.
    let pinned_threads = || {
        let mut pinned = Vec::new();
        let mut runtime_threads = 0;
        for task in std::fs::read_dir(process.join("task")).expect("list threads") {
            let task = task.expect("a thread").path();
            let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            if name.trim() != "writ-serve" {
                continue;
            }
            let Some(cpus) = allowed_cpus(&task) else {
                continue;
            };
            runtime_threads += 1;
            if cpus != allowed {
                pinned.push(cpus);
            }
        }
        pinned.sort();
        (runtime_threads, pinned)
    };
    if allowed.len() >= 2 {
        let expected = [vec![allowed[0]], vec![allowed[1]]];
        wait_until("two pinned workers", Duration::from_secs(5), || {
            pinned_threads().1 == expected
        });
    }
    assert!(pinned_threads().0 >= 2, "two workers at least");

    // Without the flag, no runtime thread is pinned.
    let server = Server::start(&["--workers", "2"], &dir);
    assert_eq!(
        server.post("/v1/decide", &ci_deploy().to_string()).status,
        200
    );
    let process = PathBuf::from(format!("/proc/{}", server.pid()));
    for task in std::fs::read_dir(process.join("task")).expect("list threads") {
        if let Some(cpus) = allowed_cpus(&task.expect("a thread").path()) {
            assert_eq!(cpus, allowed);
        }
    }
}

#[test]
fn startup_errors_exit_2_with_a_message() {
    let dir = TempDir::new("startup");
    let broken = dir.file("broken.writ");
    std::fs::write(&broken, "permit if action = \"read\";").expect("write");
    let output = Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0", "--policy"])
        .arg(&broken)
        .output()
        .expect("writ serve");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("do not compile"));

    let output = Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0", "--redact", "nobody.id"])
        .output()
        .expect("writ serve");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--redact nobody.id"));

    for workers in ["0", "1025", "many"] {
        let output = Command::new(BIN)
            .args(["serve", "--addr", "127.0.0.1:0", "--workers", workers])
            .output()
            .expect("writ serve");
        assert_eq!(output.status.code(), Some(2), "--workers {workers}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("--workers"),
            "--workers {workers}"
        );
    }

    // A port already taken.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let output = Command::new(BIN)
        .args(["serve", "--addr", &addr])
        .current_dir(dir.path())
        .output()
        .expect("writ serve");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot listen"));
}

// ------------------------------------------------- one JSON reader, HTTP layer

/// An allowed body for each decision endpoint, compact, with its
/// `"attested":true` written once.
fn allowed_bodies() -> Vec<(&'static str, String)> {
    let deploy = ci_deploy().to_string();
    let evaluations = json!({
        "action": authzen_deploy()["action"],
        "resource": authzen_deploy()["resource"],
        "context": authzen_deploy()["context"],
        "evaluations": [{"subject": authzen_deploy()["subject"]}]
    });
    vec![
        ("/v1/decide", deploy.clone()),
        ("/v1/decide/batch", format!("[{deploy}]")),
        ("/access/v1/evaluation", authzen_deploy().to_string()),
        ("/access/v1/evaluations", evaluations.to_string()),
    ]
}

/// Whether an answer of any of the four endpoints allows.
fn allows(reply: &Reply) -> bool {
    let body = reply.json();
    let first = match &body {
        Value::Array(items) => items[0].clone(),
        Value::Object(map) if map.contains_key("evaluations") => body["evaluations"][0].clone(),
        _ => body.clone(),
    };
    first["decision"] == json!("allow") || first["decision"] == json!(true)
}

#[test]
fn duplicate_keys_are_refused_on_every_endpoint() {
    let dir = Arc::new(TempDir::new("duplicates"));
    let server = Server::start(&[], &dir);
    let paths = [
        "subject.attested",
        "[0].subject.attested",
        "subject.properties.attested",
        "evaluations[0].subject.properties.attested",
    ];
    for ((endpoint, body), path) in allowed_bodies().into_iter().zip(paths) {
        assert_eq!(body.matches("\"attested\":true").count(), 1, "{body}");
        assert!(allows(&server.post(endpoint, &body)), "{endpoint} allows");
        // With `attested` false the pack denies: last-wins would allow.
        let denied = body.replace("\"attested\":true", "\"attested\":false");
        assert!(
            !allows(&server.post(endpoint, &denied)),
            "{endpoint} denies"
        );
        let twice = body.replace("\"attested\":true", "\"attested\":false,\"attested\":true");
        let message = server
            .post(endpoint, &twice)
            .assert_error(400, "invalid_request");
        assert!(
            message.contains(&format!("duplicate key at `{path}`")),
            "{endpoint}: {message}"
        );
        // Deep inside free-form context too.
        let nested = body.replacen(
            "\"intent\":{",
            "\"intent\":{\"x\":{\"k\":[{\"a\":1,\"a\":1}]},",
            1,
        );
        assert_ne!(nested, body, "{endpoint}");
        let message = server
            .post(endpoint, &nested)
            .assert_error(400, "invalid_request");
        assert!(message.contains(".x.k[0].a`"), "{endpoint}: {message}");
    }
    // The CLI reads requests the same way.
    let twice = ci_deploy()
        .to_string()
        .replace("\"attested\":true", "\"attested\":false,\"attested\":true");
    let file = dir.file("twice.json");
    std::fs::write(&file, twice).expect("write");
    let output = Command::new(BIN)
        .args(["eval", "--request"])
        .arg(&file)
        .output()
        .expect("writ eval");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("duplicate key at `subject.attested`"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        server.metric("writ_decisions_total{outcome=\"allow\"}"),
        4.0
    );
}

/// An answer with its (always fresh) decision ids taken out.
fn without_ids(mut value: Value) -> Value {
    match &mut value {
        Value::Object(map) => {
            map.remove("decision_id");
            for (_, item) in map.iter_mut() {
                *item = without_ids(item.take());
            }
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                *item = without_ids(item.take());
            }
        }
        _ => {}
    }
    value
}

#[test]
fn a_leading_byte_order_mark_is_skipped_on_every_endpoint() {
    let dir = Arc::new(TempDir::new("bom"));
    let server = Server::start(&[], &dir);
    for (endpoint, body) in allowed_bodies() {
        let plain = server.post(endpoint, &body);
        let with_bom = server.post(endpoint, &format!("\u{feff}{body}"));
        assert_eq!(with_bom.status, 200, "{endpoint}: {with_bom:?}");
        assert!(allows(&with_bom), "{endpoint}");
        assert_eq!(
            without_ids(plain.json()),
            without_ids(with_bom.json()),
            "{endpoint}: the same answer"
        );
        // A mark anywhere else is not JSON.
        server
            .post(endpoint, &format!("{body}\u{feff}"))
            .assert_error(400, "malformed_json");
        server
            .post(endpoint, &format!("\u{feff}\u{feff}{body}"))
            .assert_error(400, "malformed_json");
    }
    // UTF-16, with its mark, is not UTF-8.
    let utf16: Vec<u8> = "\u{feff}{}"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let message = request(server.port, "POST", "/v1/decide", Some(&utf16), &[])
        .assert_error(400, "malformed_json");
    assert!(message.contains("not UTF-8"), "{message}");
    // And the CLI.
    let file = dir.file("bom.json");
    std::fs::write(&file, format!("\u{feff}{}", ci_deploy())).expect("write");
    let output = Command::new(BIN)
        .args(["eval", "--request"])
        .arg(&file)
        .current_dir(ROOT)
        .output()
        .expect("writ eval");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn decision_endpoints_want_a_json_content_type() {
    let dir = Arc::new(TempDir::new("content-type"));
    let server = Server::start(&[], &dir);
    for (endpoint, body) in allowed_bodies() {
        for refused in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonx"),
            Some("application/json; charset=utf-16"),
            Some("text/json"),
            None,
        ] {
            let reply = server.post_typed(endpoint, body.as_bytes(), refused);
            let message = reply.assert_error(415, "unsupported_media_type");
            assert!(
                message.contains("application/json"),
                "{endpoint} {refused:?}: {message}"
            );
        }
        for accepted in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
            "application/vnd.acme.request+json",
        ] {
            let reply = server.post_typed(endpoint, body.as_bytes(), Some(accepted));
            assert_eq!(reply.status, 200, "{endpoint} {accepted}: {reply:?}");
        }
    }
    // The other routes take no body and do not care.
    assert_eq!(server.get("/ready").status, 200);
    assert_eq!(
        server.metric("writ_request_errors_total{code=\"unsupported_media_type\"}"),
        4.0 * 7.0
    );
    assert_eq!(
        server.metric("writ_decisions_total{outcome=\"allow\"}"),
        4.0 * 5.0
    );
}

#[test]
fn oversized_request_heads_get_json_errors() {
    let dir = Arc::new(TempDir::new("heads"));
    let server = Server::start(&[], &dir);
    let body = ci_deploy().to_string();

    // A target over 8 KiB: 414 with a JSON body.
    let long = format!("/v1/decide?{}", "q".repeat(10 * 1024));
    let reply = request(server.port, "POST", &long, Some(body.as_bytes()), &[]);
    let message = reply.assert_error(414, "uri_too_long");
    assert!(message.contains("8192"), "{message}");
    let reply = request(
        server.port,
        "GET",
        &format!("/health?{}", "q".repeat(9000)),
        None,
        &[],
    );
    reply.assert_error(414, "uri_too_long");

    // Header bytes over 32 KiB, or more than 100 headers: 431 with JSON.
    let big = "v".repeat(40 * 1024);
    let reply = request(
        server.port,
        "POST",
        "/v1/decide",
        Some(body.as_bytes()),
        &[("X-Big", big.as_str())],
    );
    let message = reply.assert_error(431, "headers_too_large");
    assert!(message.contains("32768"), "{message}");
    let names: Vec<String> = (0..150).map(|i| format!("X-H{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    request(server.port, "GET", "/ready", None, &many).assert_error(431, "headers_too_large");

    // Beyond what hyper parses at all, hyper answers itself, with no body:
    // a target over 65,534 bytes (414), a head its 256 KiB read buffer
    // cannot hold, or over 200 headers (431), a request line that is not
    // HTTP (400). These are the cases docs/server.md lists as bodiless.
    let huge = format!("/v1/decide?{}", "q".repeat(70_000));
    let reply = request(server.port, "GET", &huge, None, &[]);
    assert_eq!((reply.status, reply.body.as_str()), (414, ""), "{reply:?}");
    let giant = "v".repeat(1024 * 1024);
    let reply = request(
        server.port,
        "GET",
        "/ready",
        None,
        &[("X-Giant", giant.as_str())],
    );
    assert_eq!((reply.status, reply.body.as_str()), (431, ""), "{reply:?}");
    let reply = exchange(server.port, b"NOT HTTP AT ALL\r\n\r\n").expect("an answer");
    assert_eq!((reply.status, reply.body.as_str()), (400, ""), "{reply:?}");

    assert_eq!(server.get("/health").status, 200);
    assert_eq!(
        server.metric("writ_decisions_total{outcome=\"allow\"}"),
        0.0
    );
}

#[test]
fn wrong_types_on_named_fields_name_the_field_and_what_it_takes() {
    let dir = Arc::new(TempDir::new("types"));
    let server = Server::start(&[], &dir);
    let levels = ["`public`", "`internal`", "`confidential`", "`restricted`"];
    let mut deploy = ci_deploy();
    deploy["sensitivity"] = json!(5);
    let mut authzen = authzen_deploy();
    authzen["context"]["sensitivity"] = json!(5);
    let evaluations = json!({"evaluations": [authzen.clone()]});
    for (endpoint, body, path) in [
        ("/v1/decide", deploy.to_string(), "`sensitivity`"),
        (
            "/v1/decide/batch",
            format!("[{deploy}]"),
            "`[0].sensitivity`",
        ),
        (
            "/access/v1/evaluation",
            authzen.to_string(),
            "`context.sensitivity`",
        ),
    ] {
        let message = server
            .post(endpoint, &body)
            .assert_error(400, "invalid_request");
        assert!(message.contains(path), "{endpoint}: {message}");
        assert!(message.contains("integer `5`"), "{endpoint}: {message}");
        for level in levels {
            assert!(message.contains(level), "{endpoint}: {message}");
        }
        assert!(!message.contains("line 1 column"), "{endpoint}: {message}");
    }
    // In `evaluations` the item is denied with the same message.
    let out = server
        .post("/access/v1/evaluations", &evaluations.to_string())
        .json();
    let message = out["evaluations"][0]["context"]["error"]["message"]
        .as_str()
        .expect("an item error")
        .to_owned();
    assert!(
        message.contains("evaluations[0].context.sensitivity"),
        "{message}"
    );
    assert!(message.contains("`restricted`"), "{message}");
    // Other named fields say what they take.
    for (body, needle) in [
        (r#"{"subject":{"attested":"yes"}}"#, "expected a boolean"),
        (r#"{"requested":{"ttl":"1h"}}"#, "expected u64"),
        (r#"{"action":5}"#, "expected a string"),
    ] {
        let message = server
            .post("/v1/decide", body)
            .assert_error(400, "invalid_request");
        assert!(message.contains(needle), "{body}: {message}");
    }
}

#[test]
fn the_listen_backlog_is_configurable() {
    let dir = Arc::new(TempDir::new("backlog"));
    let listening = |port: u16| -> Option<u32> {
        // For a listening socket, `ss` shows the backlog as Send-Q.
        let output = Command::new("ss")
            .args(["-ltnH", &format!("sport = :{port}")])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.split_whitespace().nth(2)?.parse().ok()
    };
    let server = Server::start(&[], &dir);
    let Some(default) = listening(server.port) else {
        eprintln!("skipped: `ss` is not available");
        return;
    };
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(4096);
    assert_eq!(default, 1024.min(somaxconn));
    let server = Server::start(&["--backlog", "77"], &dir);
    assert_eq!(listening(server.port), Some(77));
    let (code, stderr) = start_refused(&["--backlog", "0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--backlog"), "{stderr}");
}

#[test]
fn redaction_reaches_every_string_of_the_line() {
    let dir = Arc::new(TempDir::new("redact-all"));
    let log = dir.file("decisions.jsonl");
    let log_arg = log.display().to_string();
    let mut server = Server::start(
        &[
            "--decision-log",
            &log_arg,
            "--redact",
            "resource.id",
            "--redact",
            "subject.id",
            "--redact",
            "intent.id",
        ],
        &dir,
    );
    // Values that appear nowhere else: the pack copies the resource id into
    // the scope and the audience obligation.
    let subject = "spiffe://zq9.example/ns/payments/sa/xyzzy-7341";
    let resource = "k8s://prod-eu/plugh-5520";
    let run = "run-frobozz-8812";
    let text = ci_deploy()
        .to_string()
        .replace("spiffe://prod.acme.io/ns/payments/sa/deployer", subject)
        .replace("k8s://prod-eu/payments", resource)
        .replace("run-1", run);
    let answer = server.post("/v1/decide", &text);
    let decision = answer.json();
    assert_eq!(decision["decision"], "allow", "{decision}");
    // The broker's answer is not redacted.
    assert!(answer.body.contains(resource));
    assert!(decision["obligations"].to_string().contains(resource));
    // A denied one with an error message and reasons built from the values.
    let mut denied: Value = serde_json::from_str(&text).expect("json");
    denied["subject"]["attested"] = json!(false);
    assert_eq!(
        server.post("/v1/decide", &denied.to_string()).json()["decision"],
        "deny"
    );
    let batch = format!("[{text}]");
    assert_eq!(server.post("/v1/decide/batch", &batch).status, 200);
    let mut authzen = authzen_deploy();
    authzen["subject"]["id"] = json!(subject);
    authzen["resource"]["id"] = json!(resource);
    authzen["context"]["intent"]["id"] = json!(run);
    authzen["context"]["requested"]["scope"] = json!([format!("deploy:{resource}")]);
    let out = server
        .post("/access/v1/evaluation", &authzen.to_string())
        .json();
    assert_eq!(out["decision"], true, "{out}");

    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(20)));
    let written = std::fs::read_to_string(&log).expect("log");
    assert_eq!(written.lines().count(), 4);
    for raw in [subject, resource, run, "xyzzy", "plugh", "frobozz"] {
        assert!(!written.contains(raw), "`{raw}` leaked into:\n{written}");
    }
    let first: Value = serde_json::from_str(written.lines().next().expect("a line")).expect("json");
    assert_eq!(first["scope"], json!(["deploy:[redacted]"]));
    assert!(first["obligations"].to_string().contains("[redacted]"));
    assert_eq!(first["request"]["resource"]["id"], "[redacted]");
    assert_eq!(
        first["request"]["requested"]["scope"],
        json!(["deploy:[redacted]"])
    );
    assert_eq!(first["decision_id"], decision["decision_id"]);
}
