//! Continuous evaluation on the real binary (docs/lifecycle.md): a policy
//! reload re-decides the live grants (revoking or narrowing them, the
//! re-decision kept with the grant and put on the feed), events carrying
//! `context` re-decide what they select, `POST /v1/grants/recheck`, the
//! revocation feed's long poll and its bad input, and a SQLite ledger
//! removed while serving. On a SQLite file and, when
//! `WRIT_TEST_POSTGRES_URL` is set, on PostgreSQL.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::grants::*;
use common::server::*;
use serde_json::{json, Value};

/// The policy set the tests start from: deploys allowed for 30 minutes
/// with two scope items, revoked on `task_end`, refused over a risk of 70.
const POLICY: &str = r#"
@id("deploy.permit")
permit if action == "deploy"
  grant ["deploy:{resource.id}", "logs:{resource.id}"] for 30m;

@id("revoke.task-end")
require revoke on task_end;

@id("risk.high")
forbid if context has risk_score and context.risk_score > 70
  because "risk score {context.risk_score} is over 70";
"#;

/// Adds to [`POLICY`]: a five-minute cap for `who` (only: other tests'
/// grants share the PostgreSQL ledger, and a reload re-decides them all).
fn tighter_ttl(who: &str) -> String {
    format!("\n@id(\"ttl.tight\")\nlimit ttl 5m if subject.id == \"{who}\";\n")
}

/// Adds to [`POLICY`]: no more deploys for `who`.
fn frozen(who: &str) -> String {
    format!(
        "\n@id(\"deploy.frozen\")\nforbid if action == \"deploy\" and subject.id == \"{who}\" because \"deploys are frozen\";\n"
    )
}

/// A deploy for `subject` and `task`, asking for both scope items.
fn deploy(subject: &str, task: &str) -> Value {
    json!({
        "subject": {"id": subject, "kind": "ci", "auth": "oidc", "attested": true, "owner": "payments"},
        "action": "deploy",
        "resource": {"id": "k8s://prod-eu/payments", "kind": "cluster", "owner": "payments"},
        "intent": {"task": "deploy", "id": task},
        "environment": {"name": "prod"},
        "sensitivity": "confidential",
        "requested": {"scope": ["deploy:k8s://prod-eu/payments", "logs:k8s://prod-eu/payments"], "ttl": 3600},
        "context": {"risk_score": 10},
        "credential_ref": "lease-1"
    })
}

fn issue(server: &Server, subject: &str, task: &str) -> String {
    issue_grant(server, &deploy(subject, task))
}

/// A server on a policy directory holding [`POLICY`], with `ledger`.
fn start(dir: &Arc<TempDir>, ledger: &str) -> (Server, std::path::PathBuf) {
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).expect("policy dir");
    let file = policies.join("p.writ");
    std::fs::write(&file, POLICY).expect("policy");
    let server = Server::start(
        &["--policy", &policies.to_string_lossy(), "--ledger", ledger],
        dir,
    );
    (server, file)
}

/// Writes the policy file and asks for a reload.
fn reload(server: &Server, file: &std::path::Path, text: &str) {
    std::fs::write(file, text).expect("policy");
    let reply = server.post("/v1/policy/reload", "");
    assert_eq!(reply.status, 200, "{}", reply.body);
}

/// The feed rows after `cursor` about `grant_id`.
fn feed_rows(server: &Server, cursor: &str, grant_id: &str) -> Vec<Value> {
    feed_since(server, cursor)
        .into_iter()
        .filter(|row| row["grant_id"] == grant_id)
        .collect()
}

fn seconds_until(rfc3339: &Value) -> i64 {
    let text = rfc3339.as_str().expect("a time");
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    (at - time::OffsetDateTime::now_utc()).whole_seconds()
}

/// A reload that only lowers the TTL cap narrows a live grant; a reload
/// that forbids what it holds revokes it. Each keeps the re-decision (its
/// trace) with the grant and puts a row on the feed.
fn reload_redecides(ledger: &str, name: &str) {
    let dir = Arc::new(TempDir::new(name));
    let (server, file) = start(&dir, ledger);
    let who = unique_subject(name);
    let id = issue(&server, &who, &format!("run-{who}"));
    let issued = grant(&server, &id);
    assert_eq!(issued["ttl"], 1800);
    let start = feed_end(&server);

    reload(&server, &file, &format!("{POLICY}{}", tighter_ttl(&who)));
    wait_until("the grant narrowed", Duration::from_secs(20), || {
        grant(&server, &id)["narrowed"] == true
    });
    let narrowed = grant(&server, &id);
    assert_eq!(narrowed["state"], "live", "{narrowed}");
    assert_eq!(narrowed["scope"], issued["scope"], "the scope is kept");
    let left = seconds_until(&narrowed["expires_at"]);
    assert!(
        (200..=300).contains(&left),
        "expires in {left} s: {narrowed}"
    );
    let redecision = &narrowed["redecision"]["decision"];
    assert_eq!(redecision["decision"], "allow", "{narrowed}");
    assert!(
        redecision["trace"].to_string().contains("ttl.tight"),
        "{redecision}"
    );
    let rows = feed_rows(&server, &start, &id);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["kind"], "narrowed");
    assert_eq!(rows[0]["by"], "redecision");
    assert_eq!(rows[0]["expires_at"], narrowed["expires_at"]);
    assert_eq!(rows[0]["credential_ref"], "lease-1");
    // Counted on /metrics (at least: a shared PostgreSQL ledger holds other
    // tests' live grants too, which the pass also decides).
    wait_until("the pass counted", Duration::from_secs(10), || {
        server.metric("writ_redecision_passes_total{result=\"done\"}") >= 1.0
    });
    assert!(server.metric("writ_redecisions_total{outcome=\"narrowed\"}") >= 1.0);

    reload(
        &server,
        &file,
        &format!("{POLICY}{}{}", tighter_ttl(&who), frozen(&who)),
    );
    wait_until("the grant revoked", Duration::from_secs(20), || {
        grant(&server, &id)["state"] == "revoked"
    });
    let revoked = grant(&server, &id);
    assert_eq!(revoked["revoked_by"], "redecision", "{revoked}");
    assert!(
        revoked["reason"]
            .as_str()
            .expect("reason")
            .contains("deploy.frozen"),
        "{revoked}"
    );
    let decision = &revoked["redecision"]["decision"];
    assert_eq!(decision["decision"], "deny");
    assert!(decision["trace"].to_string().contains("deploy.frozen"));
    let rows = feed_rows(&server, &start, &id);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1]["kind"], "revoked");
    let cursor = |row: &Value| -> i64 {
        row["cursor"]
            .as_str()
            .and_then(|c| c.parse().ok())
            .expect("a numeric cursor")
    };
    assert!(cursor(&rows[0]) < cursor(&rows[1]), "{rows:?}");
    assert!(server.metric("writ_redecisions_total{outcome=\"revoked\"}") >= 1.0);
    // A new grant is refused now, and the reload said what it did.
    let reply = server.post("/v1/grants", &deploy(&who, "later").to_string());
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["decision"], "deny");
    wait_until("the log line", Duration::from_secs(5), || {
        server.stderr().contains("revoked, 0 narrowed")
    });
}

#[test]
fn a_reload_narrows_and_revokes_live_grants_on_sqlite() {
    let dir = TempDir::new("reload-sqlite-ledger");
    let file = dir.file("writ.db");
    reload_redecides(&file.to_string_lossy(), "reload-sqlite");
}

#[test]
fn a_reload_narrows_and_revokes_live_grants_on_postgres() {
    if let Some(url) = postgres_url("a_reload_narrows_and_revokes_live_grants_on_postgres") {
        reload_redecides(&url, "reload-postgres");
    }
}

/// An event with a new `risk_score` re-decides the grants it selects:
/// a low score changes nothing, a high one revokes them, each with why.
#[test]
fn an_event_with_context_re_decides_the_grants_it_selects() {
    let dir = Arc::new(TempDir::new("risk-event"));
    let file = dir.file("writ.db");
    let (server, _) = start(&dir, &file.to_string_lossy());
    let who = unique_subject("risk");
    let a = issue(&server, &who, "run-a");
    let b = issue(&server, &who, "run-b");
    let other = issue(&server, &unique_subject("bystander"), "run-c");

    let reply = server.post(
        "/v1/events",
        &json!({"type": "risk_change", "subject": who, "context": {"risk_score": 50}}).to_string(),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["redecided"], 2, "{body}");
    assert_eq!(body["revoked"], json!([]));
    assert_eq!(body["narrowed"], json!([]));

    let reply = server.post(
        "/v1/events",
        &json!({"type": "risk_change", "subject": who, "context": {"risk_score": 90}, "reason": "anomaly"})
            .to_string(),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    let revoked = body["revoked"].as_array().expect("revoked");
    let mut ids: Vec<&str> = revoked
        .iter()
        .filter_map(|r| r["grant_id"].as_str())
        .collect();
    ids.sort_unstable();
    let mut want = vec![a.as_str(), b.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want, "{body}");
    for row in revoked {
        assert!(
            row["why"].as_str().expect("why").contains("risk.high"),
            "{row}"
        );
    }
    let stored = grant(&server, &a);
    assert_eq!(stored["revoked_by"], "event:risk_change");
    assert!(stored["redecision"]["decision"]["trace"]
        .to_string()
        .contains("risk score 90 is over 70"));
    // The other subject's grant was not selected.
    assert_eq!(grant(&server, &other)["state"], "live");
    // The recorded context is not changed by the event (only merged for
    // the re-decision).
    assert_eq!(stored["request"]["context"]["risk_score"], 10);
}

/// `POST /v1/grants/recheck` re-decides every live grant and says what it
/// did; an unchanged policy changes nothing.
#[test]
fn recheck_re_decides_every_live_grant() {
    let dir = Arc::new(TempDir::new("recheck"));
    let file = dir.file("writ.db");
    let (server, _) = start(&dir, &file.to_string_lossy());
    let who = unique_subject("recheck");
    for task in ["a", "b", "c"] {
        issue(&server, &who, task);
    }
    let gone = issue(&server, &who, "d");
    assert_eq!(
        request(
            server.port,
            "DELETE",
            &format!("/v1/grants/{gone}"),
            None,
            &[]
        )
        .status,
        200
    );
    let reply = server.post("/v1/grants/recheck", "");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["checked"], 3, "{body}");
    assert_eq!(body["unchanged"], 3, "{body}");
    assert_eq!(body["revoked_count"], 0);
    assert_eq!(body["narrowed_count"], 0);
    assert_eq!(body["policy_digest"], server.policy_digest());
    assert_eq!(
        server.metric("writ_redecisions_total{outcome=\"unchanged\"}"),
        3.0
    );
    assert_eq!(
        server.metric("writ_redecisions_total{outcome=\"revoked\"}"),
        0.0
    );
    assert_eq!(
        server.metric("writ_redecision_passes_total{result=\"done\"}"),
        1.0
    );
}

/// A waiting feed read answers as soon as a revocation is appended, with
/// it; `next` resumes after it; bad cursors and waits are 400.
#[test]
fn the_feed_long_polls_and_refuses_bad_cursors() {
    let dir = Arc::new(TempDir::new("feed-poll"));
    let file = dir.file("writ.db");
    let (server, _) = start(&dir, &file.to_string_lossy());
    let id = issue(&server, &unique_subject("poll"), "run-1");
    let end = feed_end(&server);
    let port = server.port;
    let path = format!("/v1/revocations?after={end}&wait=20s");
    let started = Instant::now();
    let waiting = std::thread::spawn(move || request(port, "GET", &path, None, &[]));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        request(
            server.port,
            "DELETE",
            &format!("/v1/grants/{id}"),
            None,
            &[]
        )
        .status,
        200
    );
    let reply = waiting.join().expect("the waiting read");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the read waited for its whole `wait`"
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    let rows = body["revocations"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{body}");
    assert_eq!(rows[0]["grant_id"], id.as_str());
    assert_eq!(rows[0]["reason"], "not_minted");
    assert_eq!(body["next"], rows[0]["cursor"]);
    // Resuming from `next` with no wait: nothing new.
    let again = server.get(&format!(
        "/v1/revocations?after={}",
        rows[0]["cursor"].as_str().expect("cursor")
    ));
    assert_eq!(again.json()["revocations"], json!([]));
    assert_eq!(again.json()["next"], rows[0]["cursor"]);

    for (query, needle) in [
        ("after=abc", "not a feed cursor"),
        ("after=-5", "not a feed cursor"),
        ("wait=soon", "not a duration"),
        ("wait=10m", "longer than"),
        ("limit=0", "limit"),
        ("from=3", "unknown query parameter"),
    ] {
        let message = server
            .get(&format!("/v1/revocations?{query}"))
            .assert_error(400, "invalid_request");
        assert!(message.contains(needle), "{query}: {message}");
    }
}

/// Bad events: no selector, an unknown grant, a `context` that is not an
/// object.
#[test]
fn events_with_bad_selectors_are_refused() {
    let dir = Arc::new(TempDir::new("bad-events"));
    let file = dir.file("writ.db");
    let (server, _) = start(&dir, &file.to_string_lossy());
    let message = server
        .post(
            "/v1/events",
            &json!({"type": "task_end", "context": {"risk_score": 99}}).to_string(),
        )
        .assert_error(400, "invalid_request");
    assert!(message.contains("selects no grant"), "{message}");
    let message = server
        .post(
            "/v1/events",
            &json!({"type": "task_end", "grant": "no-such-grant"}).to_string(),
        )
        .assert_error(404, "not_found");
    assert!(message.contains("no-such-grant"), "{message}");
    let message = server
        .post(
            "/v1/events",
            &json!({"type": "risk_change", "subject": "s", "context": [1]}).to_string(),
        )
        .assert_error(400, "invalid_request");
    assert!(message.contains("`context`"), "{message}");
    server
        .get("/v1/grants/no-such-grant")
        .assert_error(404, "not_found");
}

/// A SQLite ledger file removed while serving: grants are refused with 503
/// (nothing allowed without being recorded), the feed and lists too, and
/// `/ready` is false; plain decisions go on.
#[test]
fn a_sqlite_ledger_removed_while_serving_is_unavailable() {
    let dir = Arc::new(TempDir::new("ledger-removed"));
    let file = dir.file("writ.db");
    let (server, _) = start(&dir, &file.to_string_lossy());
    let who = unique_subject("removed");
    issue(&server, &who, "run-1");
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", file.to_string_lossy());
        let _ = std::fs::remove_file(path);
    }
    let message = server
        .post("/v1/grants", &deploy(&who, "run-2").to_string())
        .assert_error(503, "ledger_unavailable");
    assert!(message.contains("removed or replaced"), "{message}");
    let ready = server.get("/ready");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.json()["status"], "ledger_unavailable");
    server
        .get("/v1/revocations")
        .assert_error(503, "ledger_unavailable");
    server
        .post("/v1/grants/recheck", "")
        .assert_error(503, "ledger_unavailable");
    let mut plain = deploy(&who, "run-3");
    plain
        .as_object_mut()
        .expect("object")
        .remove("credential_ref");
    assert_eq!(server.post("/v1/decide", &plain.to_string()).status, 200);
}

/// `writ grants recheck` re-decides the live grants of a ledger with the
/// policy set it is given, as the server does after a reload; the serving
/// replica sees the result.
#[test]
fn the_cli_rechecks_a_ledger() {
    let dir = Arc::new(TempDir::new("cli-recheck"));
    let file = dir.file("writ.db");
    let ledger = file.to_string_lossy().into_owned();
    let (server, _) = start(&dir, &ledger);
    let who = unique_subject("cli-recheck");
    let a = issue(&server, &who, "run-a");
    let b = issue(&server, &who, "run-b");
    let frozen_dir = dir.path().join("frozen");
    std::fs::create_dir_all(&frozen_dir).expect("dir");
    std::fs::write(
        frozen_dir.join("p.writ"),
        format!("{POLICY}{}", frozen(&who)),
    )
    .expect("policy");
    let same = dir.path().join("policies");

    let (code, body, stderr) = writ(&[
        "grants",
        "recheck",
        "--ledger",
        &ledger,
        "--policy",
        &same.to_string_lossy(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        (body["checked"].clone(), body["unchanged"].clone()),
        (json!(2), json!(2)),
        "{body}"
    );

    let (code, body, stderr) = writ(&[
        "grants",
        "recheck",
        "--ledger",
        &ledger,
        "--policy",
        &frozen_dir.to_string_lossy(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(body["revoked_count"], 2, "{body}");
    let revoked = body["revoked"].as_array().expect("revoked");
    assert!(revoked
        .iter()
        .all(|r| r["why"].as_str().unwrap_or("").contains("deploy.frozen")));
    for id in [&a, &b] {
        let stored = grant(&server, id);
        assert_eq!(stored["state"], "revoked", "{stored}");
        assert_eq!(stored["revoked_by"], "redecision");
    }

    let broken = dir.path().join("broken.writ");
    std::fs::write(&broken, "permit if").expect("policy");
    let (code, _, stderr) = writ(&[
        "grants",
        "recheck",
        "--ledger",
        &ledger,
        "--policy",
        &broken.to_string_lossy(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("do not compile"), "{stderr}");
}

/// The issuance count's window is the policy set's constant
/// `repeat_window` when it defines one (here 2 s), else `--repeat-window`;
/// the answer says which.
#[test]
fn the_repeat_window_comes_from_the_policy_constant() {
    let dir = Arc::new(TempDir::new("window-const"));
    let file = dir.file("writ.db");
    let (server, policy) = start(&dir, &file.to_string_lossy());
    let who = unique_subject("window");
    let count = |task: &str| -> Value {
        let reply = server.post("/v1/grants", &deploy(&who, task).to_string());
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.json()["decision"]["issuance_count"].clone()
    };
    let first = count("a");
    assert_eq!(first["window_from"], "--repeat-window", "{first}");
    assert_eq!(first["window_seconds"], 3600);

    reload(
        &server,
        &policy,
        &format!("const repeat_window = 2s;\n{POLICY}"),
    );
    let second = count("b");
    assert_eq!(second["window_from"], "policy constant repeat_window");
    assert_eq!(second["window_seconds"], 2);
    std::thread::sleep(Duration::from_millis(2500));
    // Neither earlier grant is within the last 2 s.
    let third = count("c");
    assert_eq!(third["value"], 0, "{third}");
}

/// Two replicas on one PostgreSQL: a read waiting on A's feed answers with
/// a revocation made through B (found by polling the store), well before
/// its `wait` runs out.
#[test]
fn a_waiting_feed_read_sees_another_replicas_revocation() {
    let Some(url) = postgres_url("a_waiting_feed_read_sees_another_replicas_revocation") else {
        return;
    };
    let dir = Arc::new(TempDir::new("feed-fleet"));
    let (a, _) = start(&dir, &url);
    let b = Server::start(
        &[
            "--ledger",
            &url,
            "--policy",
            &dir.path().join("policies").to_string_lossy(),
        ],
        &dir,
    );
    let id = issue(&a, &unique_subject("feed-fleet"), "run-1");
    let end = feed_end(&a);
    let port = a.port;
    let wanted = id.clone();
    let started = Instant::now();
    // Other tests share the database and may append first: read on, from
    // each `next`, until the row comes.
    let waiting = std::thread::spawn(move || {
        let mut cursor = end;
        loop {
            let path = format!("/v1/revocations?after={cursor}&wait=20s");
            let reply = request(port, "GET", &path, None, &[]);
            assert_eq!(reply.status, 200, "{}", reply.body);
            let body = reply.json();
            let rows = body["revocations"].as_array().cloned().unwrap_or_default();
            if rows.is_empty() || rows.iter().any(|r| r["grant_id"] == wanted.as_str()) {
                return rows;
            }
            cursor = body["next"].as_str().expect("next").to_owned();
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        request(b.port, "DELETE", &format!("/v1/grants/{id}"), None, &[]).status,
        200
    );
    let rows = waiting.join().expect("the waiting read");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        rows.iter().any(|r| r["grant_id"] == id.as_str()),
        "{rows:?}"
    );
}

/// A compact JWS as a workload token (header `{"alg":"RS256","typ":"JWT"}`);
/// its signature part is text no other field holds.
const WORKLOAD_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ3b3JrbG9hZCJ9.d29ya2xvYWQtc2lnbmF0dXJlLXNlY3JldA";
/// A compact JWS as an approval token no approval issuer verified.
const APPROVAL_TOKEN: &str =
    "eyJhbGciOiJFUzI1NiJ9.eyJhcHByb3ZlciI6ImFsaWNlIn0.YXBwcm92YWwtc2lnbmF0dXJlLXNlY3JldA";

/// What the PostgreSQL ledger holds about `grant_id` and `key`: the grant's
/// row and the stored answer's row, as text.
fn postgres_rows(url: &str, grant_id: &str, key: &str) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL answers");
        tokio::spawn(connection);
        let grant = client
            .query_one(
                "SELECT g::text FROM writ_grants AS g WHERE grant_id = $1",
                &[&grant_id],
            )
            .await
            .expect("the grant's row");
        let answer = client
            .query_one(
                "SELECT i::text FROM writ_idempotency AS i WHERE idempotency_key = $1",
                &[&key],
            )
            .await
            .expect("the stored answer's row");
        format!(
            "{}\n{}",
            grant.get::<_, String>(0),
            answer.get::<_, String>(0)
        )
    })
}

/// The stored request keeps no bearer token: the workload token and an
/// (unverified) approval token are kept as digests, never as text, in the
/// grant and in the answer stored under the idempotency key; a re-decision
/// of the recorded request decides as the first decision did (the policy
/// here revokes the grant when the token or the approval is missing).
fn tokens_are_not_kept(ledger: &str, name: &str, read_back: &dyn Fn(&str, &str) -> String) {
    let dir = Arc::new(TempDir::new(name));
    let who = unique_subject(name);
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).expect("policy dir");
    std::fs::write(
        policies.join("p.writ"),
        format!(
            "{POLICY}\n@id(\"token.needed\")\nforbid if subject.id == \"{who}\" and not (subject has token and context has approval) because \"no token\";\n"
        ),
    )
    .expect("policy");
    let server = Server::start(
        &["--policy", &policies.to_string_lossy(), "--ledger", ledger],
        &dir,
    );
    let mut body = deploy(&who, "run-tokens");
    body["subject"]["token"] = json!(WORKLOAD_TOKEN);
    body["context"]["approval"] = json!(APPROVAL_TOKEN);
    let key = format!("key-{who}");
    let reply = request(
        server.port,
        "POST",
        "/v1/grants",
        Some(body.to_string().as_bytes()),
        &[("Idempotency-Key", &key)],
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.json()["grant_id"]
        .as_str()
        .expect("grant_id")
        .to_owned();
    let kept = grant(&server, &id);
    let digest = |value: &Value| {
        value
            .as_str()
            .is_some_and(|text| text.starts_with("redacted:sha256:") && text.len() == 80)
    };
    assert!(digest(&kept["request"]["subject"]["token"]), "{kept}");
    assert!(digest(&kept["request"]["context"]["approval"]), "{kept}");
    let stored = read_back(&id, &key);
    for secret in [WORKLOAD_TOKEN, APPROVAL_TOKEN] {
        let signature = secret.rsplit('.').next().expect("a signature");
        assert!(!stored.contains(signature), "{name}: {secret} kept");
    }
    assert!(stored.contains("redacted:sha256:"), "{name}: {stored}");

    let reply = server.post("/v1/grants/recheck", "");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let after = grant(&server, &id);
    assert_eq!(after["state"], "live", "{after}");
    assert_eq!(after["narrowed"], false, "{after}");
    assert_eq!(after["redecision"], Value::Null, "{after}");
}

#[test]
fn tokens_are_not_kept_on_sqlite() {
    let dir = Arc::new(TempDir::new("tokens-sqlite-file"));
    let file = dir.file("writ.db");
    let path = file.to_string_lossy().into_owned();
    let read_back = |_: &str, _: &str| {
        // The whole file, its write-ahead log included.
        ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| std::fs::read(format!("{path}{suffix}")).ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    };
    tokens_are_not_kept(&path, "tokens-sqlite", &read_back);
}

#[test]
fn tokens_are_not_kept_on_postgres() {
    if let Some(url) = postgres_url("tokens_are_not_kept_on_postgres") {
        let read_back = |id: &str, key: &str| postgres_rows(&url, id, key);
        tokens_are_not_kept(&url, "tokens-postgres", &read_back);
    }
}

/// With `--retention`, the feed's rows older than it are deleted: a read
/// from before them is `410 Gone`, naming the oldest cursor kept and where
/// to resume, never the rows after the gap as if nothing was missed.
#[test]
fn a_read_from_before_the_retention_is_gone() {
    let dir = Arc::new(TempDir::new("retention"));
    let file = dir.file("writ.db");
    let ledger = file.to_string_lossy().into_owned();
    let server = Server::start(&["--ledger", &ledger, "--retention", "1s"], &dir);
    let who = unique_subject("retention");
    let reply = server.post("/v1/grants", &deploy_for(&who).to_string());
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.json()["grant_id"]
        .as_str()
        .expect("grant_id")
        .to_owned();
    let reply = request(
        server.port,
        "DELETE",
        &format!("/v1/grants/{id}"),
        None,
        &[],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(feed_since(&server, "0").len(), 1);
    // The sweep runs every second; the row is older than 1 s after it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let gone = loop {
        let reply = server.get("/v1/revocations?after=0");
        if reply.status == 410 {
            break reply.json();
        }
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(Instant::now() < deadline, "never pruned: {}", reply.body);
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(gone["error"]["code"], "feed_pruned", "{gone}");
    assert_eq!(gone["oldest"], "2", "{gone}");
    assert_eq!(gone["next"], "1", "{gone}");
    let message = gone["error"]["message"].as_str().expect("message");
    assert!(message.contains("after=1"), "{message}");
    // Resuming where it says reads on, with nothing pruned after it.
    let reply = server.get("/v1/revocations?after=1");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["revocations"], json!([]), "{}", reply.body);
    // The revoked grant is still within the repeat window (1 h): kept.
    let reply = server.get(&format!("/v1/grants/{id}"));
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[test]
fn a_retention_under_a_second_is_refused() {
    let (code, stderr) = start_refused(&[
        "--ledger",
        "/nonexistent/never-opened.db",
        "--retention",
        "0s",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--retention"), "{stderr}");
}
