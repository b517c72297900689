//! `/v1/grants` on the real binary (docs/lifecycle.md), on a SQLite file
//! and on the PostgreSQL of `WRIT_TEST_POSTGRES_URL` (`eval "$(scripts/postgres.sh
//! start)"`). Without that URL the PostgreSQL tests say they did not run,
//! and fail when `CI` is set; a URL that does not answer always fails.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::grants::*;
use common::server::*;
use serde_json::{json, Value};

fn post_grant(server: &Server, body: &Value, key: Option<&str>) -> Reply {
    let text = body.to_string();
    let mut headers = Vec::new();
    if let Some(key) = key {
        headers.push(("Idempotency-Key", key));
    }
    request(
        server.port,
        "POST",
        "/v1/grants",
        Some(text.as_bytes()),
        &headers,
    )
}

fn delete(server: &Server, path: &str) -> Reply {
    request(server.port, "DELETE", path, None, &[])
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn list(server: &Server, query: &str) -> Value {
    let reply = server.get(&format!("/v1/grants?{query}"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

/// The whole surface on one store.
fn grants_surface(ledger: &str, name: &str) {
    let dir = Arc::new(TempDir::new(name));
    let server = Server::start(&["--ledger", ledger], &dir);
    let who = unique_subject(name);
    let by_subject = format!("subject={}", encode(&who));

    // Allow: 201, recorded, with the ledger's count (the broker's ignored).
    let mut body = deploy_for(&who);
    body["context"] = json!({"recent_issuances": 99});
    body["credential_ref"] = json!("vault-lease-1");
    let reply = post_grant(&server, &body, None);
    assert_eq!(reply.status, 201, "{}", reply.body);
    let answer = reply.json();
    let id = answer["grant_id"].as_str().expect("grant_id").to_owned();
    let decision = &answer["decision"];
    assert_eq!(decision["decision"], "allow");
    assert_eq!(decision["grant_id"], id.as_str());
    assert_eq!(decision["issuance_count"]["value"], 0);
    assert_eq!(decision["issuance_count"]["source"], "ledger");
    assert_eq!(decision["issuance_count"]["ignored_from_request"], 99);
    assert_eq!(decision["issuance_count"]["window_seconds"], 3600);

    let grant = server.get(&format!("/v1/grants/{id}"));
    assert_eq!(grant.status, 200, "{}", grant.body);
    let grant = grant.json();
    assert_eq!(grant["state"], "live");
    assert_eq!(grant["subject_id"], who.as_str());
    assert_eq!(grant["task_id"], "run-1");
    assert_eq!(grant["credential_ref"], "vault-lease-1");
    assert_eq!(grant["scope"], json!(["deploy:k8s://prod-eu/payments"]));
    assert_eq!(grant["ttl"], decision["ttl"]);
    assert_eq!(grant["decision_id"], decision["decision_id"]);
    assert_eq!(grant["obligations"][0]["event"], "task_end");
    assert_eq!(grant["request"]["context"]["recent_issuances"], 0);

    // Deny: 200, the decision, nothing recorded.
    let mut denied = deploy_for(&who);
    denied["subject"]["auth"] = json!("password");
    let reply = post_grant(&server, &denied, None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["decision"], "deny");
    assert!(reply.json().get("grant_id").is_none());
    assert_eq!(
        list(&server, &by_subject)["grants"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // An idempotency key: the retry gets the first answer, one grant more.
    let key = format!("key-{}", unique_subject("k"));
    let first = post_grant(&server, &deploy_for(&who), Some(&key));
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.json()["decision"]["issuance_count"]["value"], 1);
    let again = post_grant(&server, &deploy_for(&who), Some(&key));
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        list(&server, &by_subject)["grants"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // Pages in issue order.
    let page = list(&server, &format!("{by_subject}&limit=1"));
    assert_eq!(page["grants"][0]["grant_id"], id.as_str());
    let next = page["next"].as_str().expect("a next page");
    let page = list(&server, &format!("{by_subject}&limit=1&after={next}"));
    assert_eq!(page["grants"][0]["grant_id"], first.json()["grant_id"]);
    let task = list(&server, &format!("{by_subject}&task=run-1"));
    assert_eq!(task["grants"].as_array().map(Vec::len), Some(2));

    // DELETE: the broker could not mint; revoked once, with not_minted.
    let gone = delete(&server, &format!("/v1/grants/{id}"));
    assert_eq!(gone.status, 200, "{}", gone.body);
    assert_eq!(gone.json()["revoked"], true);
    assert_eq!(gone.json()["grant"]["state"], "revoked");
    assert_eq!(gone.json()["grant"]["reason"], "not_minted");
    let twice = delete(&server, &format!("/v1/grants/{id}"));
    assert_eq!(twice.json()["revoked"], false);
    let revoked = list(&server, &format!("{by_subject}&state=revoked"));
    assert_eq!(revoked["grants"][0]["grant_id"], id.as_str());
    let live = list(&server, &format!("{by_subject}&state=live"));
    assert_eq!(live["grants"].as_array().map(Vec::len), Some(1));
    // A revoked grant still counts.
    let third = post_grant(&server, &deploy_for(&who), None);
    assert_eq!(third.json()["decision"]["issuance_count"]["value"], 2);

    // Bad input.
    server
        .get("/v1/grants/no-such-grant")
        .assert_error(404, "not_found");
    delete(&server, "/v1/grants/no-such-grant").assert_error(404, "not_found");
    server
        .get("/v1/grants?state=gone")
        .assert_error(400, "invalid_request");
    server
        .get("/v1/grants?limit=0")
        .assert_error(400, "invalid_request");
    server
        .get("/v1/grants?colour=red")
        .assert_error(400, "invalid_request");
    let mut anonymous = deploy_for(&who);
    anonymous["subject"]
        .as_object_mut()
        .expect("subject")
        .remove("id");
    let message = post_grant(&server, &anonymous, None).assert_error(400, "invalid_request");
    assert!(message.contains("subject.id"), "{message}");
    let mut bad_ref = deploy_for(&who);
    bad_ref["credential_ref"] = json!(5);
    let message = post_grant(&server, &bad_ref, None).assert_error(400, "invalid_request");
    assert!(message.contains("credential_ref"), "{message}");
    server
        .post_typed("/v1/grants", b"{}", Some("text/plain"))
        .assert_error(415, "unsupported_media_type");
    post_grant(&server, &json!([1]), None).assert_error(400, "invalid_request");
}

#[test]
fn grants_on_sqlite() {
    let dir = Arc::new(TempDir::new("grants-sqlite-file"));
    let file = dir.file("writ.db");
    grants_surface(&file.to_string_lossy(), "grants-sqlite");
}

#[test]
fn grants_on_postgres() {
    if let Some(url) = postgres_url("grants_on_postgres") {
        grants_surface(&url, "grants-postgres");
    }
}

/// With a trust file, `/v1/grants` verifies like every decision endpoint:
/// the broker's bare `attested: true` is not attestation, so the pack
/// denies and nothing is recorded.
#[test]
fn grants_verify_identity_with_a_trust_file() {
    let dir = Arc::new(TempDir::new("grants-trust"));
    let file = dir.file("writ.db");
    let ledger = file.to_string_lossy().into_owned();
    let trust = format!("{ROOT}/examples/identity/trust.json");
    let server = Server::start(&["--ledger", &ledger, "--trust", &trust], &dir);
    let subject = unique_subject("trust");
    let reply = post_grant(&server, &deploy_for(&subject), None);
    assert_eq!(reply.status, 200, "{reply:?}");
    let body = reply.json();
    assert_eq!(body["decision"], "deny", "{body}");
    assert_eq!(body["reasons"], json!(["identity.attested"]), "{body}");
    assert!(body.get("grant_id").is_none(), "{body}");
    let listed = list(&server, &format!("subject={}", encode(&subject)));
    assert_eq!(listed["grants"], json!([]), "{listed}");
}

#[test]
fn without_a_ledger_there_are_no_grants() {
    let dir = Arc::new(TempDir::new("grants-none"));
    let server = Server::start(&[], &dir);
    let message = post_grant(&server, &deploy_for("s"), None).assert_error(404, "not_found");
    assert!(message.contains("--ledger"), "{message}");
}

#[test]
fn a_ledger_that_is_down_answers_503_and_is_not_ready() {
    let dir = Arc::new(TempDir::new("grants-down"));
    // Nothing listens on this port.
    let url = format!("postgres://writ@127.0.0.1:{}/writ", free_port());
    let server = Server::start(&["--ledger", &url], &dir);
    let reply = post_grant(&server, &deploy_for(&unique_subject("down")), None);
    let message = reply.assert_error(503, "ledger_unavailable");
    assert!(
        message.contains("nothing was decided or recorded"),
        "{message}"
    );
    assert_eq!(reply.header("retry-after"), Some("1"));
    let ready = server.get("/ready");
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["status"], "ledger_unavailable");
    server
        .get("/v1/grants?limit=1")
        .assert_error(503, "ledger_unavailable");
    // Plain decisions need no ledger.
    assert_eq!(
        server.post("/v1/decide", &ci_deploy().to_string()).status,
        200
    );
    assert!(
        server.stderr().contains("is not answering"),
        "{}",
        server.stderr()
    );
}

/// A 201 means committed: SIGKILL right after, start again, read it back.
fn survives_sigkill(ledger: &str, name: &str) {
    let dir = Arc::new(TempDir::new(name));
    let mut server = Server::start(&["--ledger", ledger], &dir);
    let reply = post_grant(&server, &deploy_for(&unique_subject(name)), None);
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.json()["grant_id"]
        .as_str()
        .expect("grant_id")
        .to_owned();
    server.signal("KILL");
    server.wait_exit(Duration::from_secs(10));
    let again = Server::start(&["--ledger", ledger], &dir);
    let grant = again.get(&format!("/v1/grants/{id}"));
    assert_eq!(grant.status, 200, "{}", grant.body);
    assert_eq!(grant.json()["state"], "live");
}

#[test]
fn an_acknowledged_grant_survives_sigkill_on_sqlite() {
    let dir = Arc::new(TempDir::new("grants-kill-file"));
    let file = dir.file("writ.db");
    survives_sigkill(&file.to_string_lossy(), "grants-kill-sqlite");
}

#[test]
fn an_acknowledged_grant_survives_sigkill_on_postgres() {
    if let Some(url) = postgres_url("an_acknowledged_grant_survives_sigkill_on_postgres") {
        survives_sigkill(&url, "grants-kill-postgres");
    }
}

/// Two replicas, one database: 200 concurrent requests for one subject,
/// half to each, with `max_recent_issuances` 10. `rate.repeat` denies when
/// the count of earlier grants is greater than 10, so the counts 0 to 10
/// pass: exactly 11 allowed, 189 denied by `rate.repeat`, 11 recorded.
#[test]
fn two_replicas_on_one_postgres_count_atomically() {
    let Some(url) = postgres_url("two_replicas_on_one_postgres_count_atomically") else {
        return;
    };
    let dir = Arc::new(TempDir::new("grants-fleet"));
    let data = dir.file("data.json");
    std::fs::write(&data, r#"{"max_recent_issuances": 10}"#).expect("data file");
    let data = data.to_string_lossy().into_owned();
    let args = ["--ledger", url.as_str(), "--data", data.as_str()];
    let a = Server::start(&args, &dir);
    let b = Server::start(&args, &dir);
    let who = unique_subject("fleet");
    let body = deploy_for(&who).to_string();
    let ports = [a.port, b.port];
    let threads: Vec<_> = (0..20)
        .map(|t| {
            let body = body.clone();
            std::thread::spawn(move || {
                (0..10)
                    .map(|i| {
                        let port = ports[(t + i) % 2];
                        let reply = request(port, "POST", "/v1/grants", Some(body.as_bytes()), &[]);
                        (reply.status, reply.json())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let replies: Vec<(u16, Value)> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect();
    assert_eq!(replies.len(), 200);
    let allowed: Vec<&Value> = replies
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, v)| v)
        .collect();
    let denied: Vec<&Value> = replies
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(allowed.len(), 11, "exactly the counts 0..=10 pass");
    assert_eq!(denied.len(), 189);
    for deny in &denied {
        assert_eq!(deny["decision"], "deny");
        assert_eq!(deny["reasons"], json!(["rate.repeat"]), "{deny}");
        assert!(deny["issuance_count"]["value"].as_u64().expect("count") > 10);
    }
    let mut counts: Vec<u64> = allowed
        .iter()
        .map(|v| {
            v["decision"]["issuance_count"]["value"]
                .as_u64()
                .expect("count")
        })
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, (0..=10).collect::<Vec<u64>>());
    for server in [&a, &b] {
        let listed = list(server, &format!("subject={}&limit=1000", encode(&who)));
        assert_eq!(listed["grants"].as_array().map(Vec::len), Some(11));
    }
}

fn post_event(server: &Server, event: &Value) -> Reply {
    server.post("/v1/events", &event.to_string())
}

/// A grant issued through `a` is revoked by a `task_end` event sent to `b`
/// (the same server, or another replica on the same database).
fn events_revoke(a: &Server, b: &Server, name: &str) {
    let start = feed_end(a);
    let who = unique_subject(name);
    // Unique too: PostgreSQL keeps the grants of earlier runs.
    let task = format!("run-{who}");
    let mut deploy = deploy_for(&who);
    deploy["intent"]["id"] = json!(task);
    let id = {
        let reply = post_grant(a, &deploy, None);
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.json()["grant_id"].as_str().expect("id").to_owned()
    };
    let other = post_grant(a, &deploy_for(&who), None);
    assert_eq!(other.status, 201);

    // An event no obligation names revokes nothing.
    let reply = post_event(b, &json!({"type": "objective_change", "subject": who}));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["revoked"], json!([]));

    let reply = post_event(
        b,
        &json!({"type": "task_end", "task": task, "reason": "pipeline finished"}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let revoked = reply.json()["revoked"].clone();
    assert_eq!(revoked.as_array().map(Vec::len), Some(1), "{revoked}");
    assert_eq!(revoked[0]["grant_id"], id.as_str());
    assert!(revoked[0]["why"]
        .as_str()
        .expect("why")
        .contains("revoke_on task_end"));
    let grant = a.get(&format!("/v1/grants/{id}")).json();
    assert_eq!(grant["state"], "revoked");
    assert_eq!(grant["revoked_by"], "event:task_end");
    assert_eq!(grant["reason"], "pipeline finished");

    // identity_revoked: every live grant of the subject.
    let reply = post_event(b, &json!({"type": "identity_revoked", "subject": who}));
    assert_eq!(reply.json()["revoked"].as_array().map(Vec::len), Some(1));
    let live = list(a, &format!("subject={}&state=live", encode(&who)));
    assert_eq!(live["grants"], json!([]));

    // Bad events.
    let message = post_event(b, &json!({"type": "task_end"})).assert_error(400, "invalid_request");
    assert!(message.contains("selects no grant"), "{message}");
    post_event(b, &json!({"subject": who})).assert_error(400, "invalid_request");
    post_event(b, &json!({"type": "task_end", "subject": 5})).assert_error(400, "invalid_request");
    post_event(b, &json!({"type": "identity_revoked", "task": "t"}))
        .assert_error(400, "invalid_request");
    let message = post_event(
        b,
        &json!({"type": "risk_change", "subject": who, "context": 90}),
    )
    .assert_error(400, "invalid_request");
    assert!(message.contains("context"), "{message}");

    // Both replicas' feeds show the revocations, in the same order.
    for server in [a, b] {
        let rows = feed_since(server, &start);
        let mine: Vec<(&str, &str)> = rows
            .iter()
            .filter(|r| r["subject_id"] == who.as_str())
            .map(|r| {
                (
                    r["by"].as_str().unwrap_or(""),
                    r["kind"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            mine,
            vec![
                ("event:task_end", "revoked"),
                ("event:identity_revoked", "revoked")
            ],
            "{rows:?}"
        );
        let first = rows
            .iter()
            .find(|r| r["grant_id"] == id.as_str())
            .expect("the task_end revocation is on the feed");
        assert_eq!(first["task_id"], task.as_str());
        assert_eq!(first["reason"], "pipeline finished");
    }
}

#[test]
fn events_revoke_on_sqlite() {
    let dir = Arc::new(TempDir::new("events-sqlite"));
    let file = dir.file("writ.db");
    let server = Server::start(&["--ledger", &file.to_string_lossy()], &dir);
    events_revoke(&server, &server, "events-sqlite");
}

#[test]
fn events_sent_to_one_replica_revoke_what_another_issued() {
    let Some(url) = postgres_url("events_sent_to_one_replica_revoke_what_another_issued") else {
        return;
    };
    let dir = Arc::new(TempDir::new("events-fleet"));
    let a = Server::start(&["--ledger", &url], &dir);
    let b = Server::start(&["--ledger", &url], &dir);
    events_revoke(&a, &b, "events-fleet");
}

/// `writ grants list|show|revoke` on the ledger a running server writes.
fn grants_cli(ledger: &str, name: &str) {
    let dir = Arc::new(TempDir::new(name));
    let server = Server::start(&["--ledger", ledger], &dir);
    let who = unique_subject(name);
    let reply = post_grant(&server, &deploy_for(&who), None);
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.json()["grant_id"].as_str().expect("id").to_owned();

    let (code, shown, stderr) = writ(&["grants", "show", &id, "--ledger", ledger]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(shown["grant_id"], id.as_str());
    assert_eq!(shown["state"], "live");
    let (code, listed, stderr) = writ(&["grants", "list", "--ledger", ledger, "--subject", &who]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(listed["grants"][0]["grant_id"], id.as_str());
    let (code, revoked, stderr) = writ(&[
        "grants",
        "revoke",
        &id,
        "--ledger",
        ledger,
        "--reason",
        "operator says so",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(revoked["revoked"], true);
    // The server reads what the CLI wrote.
    let grant = server.get(&format!("/v1/grants/{id}")).json();
    assert_eq!(grant["state"], "revoked");
    assert_eq!(grant["revoked_by"], "cli");
    assert_eq!(grant["reason"], "operator says so");

    let (code, _, stderr) = writ(&["grants", "show", "no-such-grant", "--ledger", ledger]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no grant `no-such-grant`"), "{stderr}");
    let (code, _, stderr) = writ(&["grants", "list", "--ledger", ledger, "--state", "gone"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not a grant state"), "{stderr}");
}

#[test]
fn grants_cli_on_sqlite() {
    let dir = Arc::new(TempDir::new("grants-cli-file"));
    let file = dir.file("writ.db");
    grants_cli(&file.to_string_lossy(), "grants-cli-sqlite");
}

#[test]
fn grants_cli_on_postgres() {
    if let Some(url) = postgres_url("grants_cli_on_postgres") {
        grants_cli(&url, "grants-cli-postgres");
    }
}

#[test]
fn ledger_migrate_reports_the_schema_and_refuses_a_dead_database() {
    let dir = Arc::new(TempDir::new("ledger-migrate"));
    let file = dir.file("writ.db");
    let (code, _, stderr) = writ(&["ledger", "migrate", "--ledger", &file.to_string_lossy()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("schema version 7"), "{stderr}");
    let url = format!("postgres://writ@127.0.0.1:{}/writ", free_port());
    let (code, _, stderr) = writ(&["ledger", "migrate", "--ledger", &url]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("unavailable"), "{stderr}");
}

#[test]
fn a_repeat_window_under_a_second_is_refused() {
    let (code, stderr) = start_refused(&[
        "--ledger",
        "/nonexistent/never-opened.db",
        "--repeat-window",
        "0s",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--repeat-window"), "{stderr}");
}

/// The decision log lines a server wrote to `path`.
fn log_lines(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read the decision log");
    text.lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// Every `/v1/grants` decision, allow and deny, is one decision log line
/// with the answer's decision id and the endpoint; the token never reaches
/// it and `--redact` applies; a replay writes no second line.
#[test]
fn grant_decisions_are_written_to_the_decision_log() {
    let dir = Arc::new(TempDir::new("grants-log"));
    let ledger = dir.file("writ.db").to_string_lossy().into_owned();
    let log = dir.file("decisions.jsonl");
    let log_arg = log.to_string_lossy().into_owned();
    let server = Server::start(
        &[
            "--ledger",
            &ledger,
            "--decision-log",
            &log_arg,
            "--redact",
            "subject.id",
        ],
        &dir,
    );
    let who = unique_subject("grants-log");
    let mut body = deploy_for(&who);
    body["subject"]["token"] = json!("secret-token-value");
    let allowed = post_grant(&server, &body, Some("log-key-1"));
    assert_eq!(allowed.status, 201, "{}", allowed.body);
    let allowed = allowed.json();
    let allow_id = allowed["decision"]["decision_id"]
        .as_str()
        .expect("decision_id")
        .to_owned();
    let replay = post_grant(&server, &body, Some("log-key-1"));
    assert_eq!(replay.status, 201, "{}", replay.body);
    assert_eq!(replay.json(), allowed);

    let mut denied = deploy_for(&who);
    denied["subject"]["auth"] = json!("password");
    let denied = post_grant(&server, &denied, None);
    assert_eq!(denied.status, 200, "{}", denied.body);
    let denied = denied.json();
    assert_eq!(denied["decision"], "deny", "{denied}");
    let deny_id = denied["decision_id"]
        .as_str()
        .expect("decision_id")
        .to_owned();

    let text = std::fs::read_to_string(&log).expect("read the log");
    assert!(!text.contains("secret-token-value"), "{text}");
    assert!(!text.contains(&who), "subject.id is redacted: {text}");
    let lines = log_lines(&log);
    assert_eq!(
        lines.len(),
        2,
        "one line per decision, none for the replay: {text}"
    );
    assert_eq!(lines[0]["decision_id"], allow_id.as_str());
    assert_eq!(lines[0]["decision"], "allow");
    assert_eq!(lines[0]["endpoint"], "/v1/grants");
    assert_eq!(lines[0]["request"]["subject"]["id"], "[redacted]");
    assert_eq!(lines[1]["decision_id"], deny_id.as_str());
    assert_eq!(lines[1]["decision"], "deny");
    assert_eq!(lines[1]["endpoint"], "/v1/grants");
}

/// With a required log that cannot be written (`/dev/full`), a grant is
/// answered 503, never 201, and is not left live in the ledger: it is
/// revoked as `decision_log_unavailable`; its replay is 503 too.
#[test]
fn a_grant_whose_decision_cannot_be_logged_is_503_and_revoked() {
    let dir = Arc::new(TempDir::new("grants-log-full"));
    let ledger = dir.file("writ.db").to_string_lossy().into_owned();
    let link = dir.file("decisions.jsonl");
    std::os::unix::fs::symlink("/dev/full", &link).expect("symlink");
    let log_arg = link.to_string_lossy().into_owned();
    let server = Server::start(&["--ledger", &ledger, "--decision-log", &log_arg], &dir);
    let who = unique_subject("grants-log-full");
    let body = deploy_for(&who);
    let reply = post_grant(&server, &body, Some("full-key-1"));
    reply.assert_error(503, "decision_log_unavailable");
    let again = post_grant(&server, &body, Some("full-key-1"));
    again.assert_error(503, "decision_log_unavailable");
    let by_subject = format!("subject={}", encode(&who));
    let live = list(&server, &format!("{by_subject}&state=live"));
    assert_eq!(live["grants"], json!([]), "{live}");
    let all = list(&server, &by_subject);
    let grants = all["grants"].as_array().expect("grants");
    assert_eq!(grants.len(), 1, "{all}");
    assert_eq!(grants[0]["reason"], "decision_log_unavailable", "{all}");
    assert_eq!(grants[0]["state"], "revoked", "{all}");
}

/// The same `Idempotency-Key` with a different body is refused with 422
/// `idempotency_key_reused` (nothing decided or recorded); with the same
/// body it still replays the first answer.
fn idempotency_key_reuse(ledger: &str, name: &str) {
    let dir = Arc::new(TempDir::new(name));
    let server = Server::start(&["--ledger", ledger], &dir);
    let who = unique_subject(name);
    let key = format!("key-{who}");
    let body = deploy_for(&who);
    let first = post_grant(&server, &body, Some(&key));
    assert_eq!(first.status, 201, "{}", first.body);

    let mut other = body.clone();
    other["credential_ref"] = json!("another-lease");
    let message =
        post_grant(&server, &other, Some(&key)).assert_error(422, "idempotency_key_reused");
    assert!(message.contains("different request"), "{message}");
    let mut denied = body.clone();
    denied["subject"]["auth"] = json!("password");
    post_grant(&server, &denied, Some(&key)).assert_error(422, "idempotency_key_reused");

    let again = post_grant(&server, &body, Some(&key));
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(
        again.body, first.body,
        "the same body replays the first answer"
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    // The key is bound to the body as parsed: spacing, a byte order mark and
    // escapes written another way replay too (the digest an earlier writ
    // stored is the same, `the_key_digest_is_the_one_earlier_versions_stored`).
    let pretty = serde_json::to_string_pretty(&body).expect("json");
    let escaped = body.to_string().replace("\"deploy\"", "\"dep\\u006coy\"");
    assert_ne!(escaped, body.to_string());
    for text in [pretty.clone(), format!("\u{feff}  {pretty}\n"), escaped] {
        let reply = request(
            server.port,
            "POST",
            "/v1/grants",
            Some(text.as_bytes()),
            &[("Idempotency-Key", key.as_str())],
        );
        assert_eq!(reply.status, 201, "{text}: {}", reply.body);
        assert_eq!(reply.body, first.body, "{text}");
        assert_eq!(reply.header("idempotent-replayed"), Some("true"));
    }
    for bad in [
        json!(""),
        json!("x".repeat(1025)),
        json!(null),
        json!(["a"]),
    ] {
        let mut bad_ref = body.clone();
        bad_ref["credential_ref"] = bad;
        let message =
            post_grant(&server, &bad_ref, Some(&key)).assert_error(400, "invalid_request");
        assert_eq!(
            message,
            "invalid request at `credential_ref`: expected a string of 1 to 1024 bytes"
        );
    }
    let listed = list(&server, &format!("subject={}", encode(&who)));
    assert_eq!(
        listed["grants"].as_array().map(Vec::len),
        Some(1),
        "the refused requests recorded nothing: {listed}"
    );
}

#[test]
fn idempotency_key_reuse_on_sqlite() {
    let dir = Arc::new(TempDir::new("idem-reuse-sqlite-file"));
    let file = dir.file("writ.db");
    idempotency_key_reuse(&file.to_string_lossy(), "idem-reuse-sqlite");
}

#[test]
fn idempotency_key_reuse_on_postgres() {
    if let Some(url) = postgres_url("idempotency_key_reuse_on_postgres") {
        idempotency_key_reuse(&url, "idem-reuse-postgres");
    }
}
