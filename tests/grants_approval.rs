//! Approvals on re-decision, on the real binary (docs/lifecycle.md,
//! "Approvals on re-decision"): a grant issued on an approval token writ
//! verified keeps counting that approval when it is decided again (a
//! recheck), from writ's attestation kept apart from the stored request;
//! a stored request that says `verified: true` without the attestation
//! gains nothing; an approval whose expiry has passed no longer counts. On
//! a SQLite file and, when `WRIT_TEST_POSTGRES_URL` is set, on a
//! PostgreSQL schema of the test's own (a recheck re-decides every live
//! grant of the ledger, so other tests' grants stay out of it).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::grants::*;
use common::server::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/identity");
const APPROVALS: &str = "https://approvals.test";
const RESOURCE: &str = "k8s://prod/app";

/// Deploys only with an approval that reads verified (the policy is shared
/// with the ledger's unit tests).
const POLICY: &str = include_str!("approvals/deploy.writ");

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An approval of a deploy to [`RESOURCE`], signed by the approval issuer,
/// expiring `seconds` from now.
fn approval(seconds: i64) -> String {
    let now = now();
    let claims = json!({
        "iss": APPROVALS, "sub": "approval-1", "aud": "writ",
        "iat": now - 5, "exp": now + seconds,
        "approver": "alice@acme.io", "action": "deploy", "resource": RESOURCE,
    });
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec-1".to_owned());
    let key = std::fs::read(Path::new(DIR).join("ec.der")).expect("test key");
    encode(&header, &claims, &EncodingKey::from_ec_der(&key)).expect("sign")
}

fn issue(server: &Server, who: &str, token: &str) -> String {
    let body = json!({
        "subject": {"id": who, "kind": "ci", "auth": "oidc"},
        "action": "deploy",
        "resource": {"id": RESOURCE},
        "requested": {"scope": [format!("deploy:{RESOURCE}")], "ttl": 600},
        "context": {"approval": token}
    });
    issue_grant(server, &body)
}

fn recheck(server: &Server) -> Value {
    let reply = server.post("/v1/grants/recheck", "");
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

/// The scenario on `ledger`; `forget` sets a grant's stored attestation to
/// NULL behind the server's back (as a grant recorded before version 6 has
/// none).
fn approvals_on_re_decision(ledger: &str, name: &str, forget: &dyn Fn(&str)) {
    let dir = Arc::new(TempDir::new(name));
    let trust = dir.file("trust.json");
    let file = json!({
        "issuers": [],
        "approval_issuers": [{
            "issuer": APPROVALS,
            "jwks_file": format!("{DIR}/jwks.json"),
            "algorithms": ["ES256"],
            "audiences": ["writ"],
            "claims": {"approver": "approver", "action": "action", "resource": "resource"}
        }]
    });
    std::fs::write(&trust, file.to_string()).expect("trust file");
    let policy = dir.file("approval.writ");
    std::fs::write(&policy, POLICY).expect("policy");
    let server = Server::start(
        &[
            "--trust",
            &trust.display().to_string(),
            "--policy",
            &policy.display().to_string(),
            "--ledger",
            ledger,
        ],
        &dir,
    );
    let who = unique_subject(name);

    // A: a ten-minute approval; B: one that ends in three seconds.
    let token_a = approval(600);
    let a = issue(&server, &who, &token_a);
    let issued_b = std::time::Instant::now();
    let b = issue(&server, &who, &approval(3));
    let shown = grant(&server, &a);
    let attestation = &shown["approval_attestation"];
    assert_eq!(attestation["issuer"], APPROVALS, "{shown}");
    assert_eq!(attestation["approval"]["verified"], true, "{shown}");
    assert!(
        attestation["token"]
            .as_str()
            .is_some_and(|t| t.starts_with("sha256:") && t.len() == 71),
        "{shown}"
    );
    let signature = token_a.rsplit('.').next().expect("a signature");
    assert!(!shown.to_string().contains(signature), "{shown}");

    // Both approvals still count: nothing changes.
    let report = recheck(&server);
    assert_eq!(report["revoked_count"], 0, "{report}");
    assert_eq!(report["narrowed_count"], 0, "{report}");
    for id in [&a, &b] {
        let g = grant(&server, id);
        assert_eq!(g["state"], "live", "{g}");
        assert_eq!(g["redecision"], Value::Null, "{g}");
    }

    // Without its attestation, A's stored request still says
    // `verified: true`, and that counts for nothing.
    forget(&a);
    let report = recheck(&server);
    assert_eq!(report["revoked_count"], 1, "{report}");
    let g = grant(&server, &a);
    assert_eq!(g["state"], "revoked", "{g}");
    assert_eq!(g["request"]["context"]["approval"]["verified"], true, "{g}");
    assert!(
        g["reason"]
            .as_str()
            .is_some_and(|r| r.contains("deploy.approved")),
        "{g}"
    );

    // Once B's approval has expired, it no longer counts either.
    let wait = Duration::from_millis(3500).saturating_sub(issued_b.elapsed());
    std::thread::sleep(wait);
    let report = recheck(&server);
    assert_eq!(report["revoked_count"], 1, "{report}");
    let g = grant(&server, &b);
    assert_eq!(g["state"], "revoked", "{g}");
    let first = &g["redecision"]["decision"]["trace"][0];
    assert_eq!(first["rule"], "context.approval", "{g}");
    assert!(
        first["because"]
            .as_str()
            .is_some_and(|t| t.contains("expired")),
        "{g}"
    );
}

#[test]
fn approvals_on_re_decision_on_sqlite() {
    let dir = Arc::new(TempDir::new("approval-sqlite-file"));
    let path = dir.file("writ.db").to_string_lossy().into_owned();
    let forget = |id: &str| {
        let conn = rusqlite::Connection::open(&path).expect("the ledger file");
        conn.busy_timeout(Duration::from_secs(5)).expect("timeout");
        let changed = conn
            .execute(
                "UPDATE writ_grants SET approval_attestation = NULL WHERE grant_id = ?1",
                [id],
            )
            .expect("update");
        assert_eq!(changed, 1);
    };
    approvals_on_re_decision(&path, "approval-sqlite", &forget);
}

#[test]
fn approvals_on_re_decision_on_postgres() {
    let Some(url) = postgres_url("approvals_on_re_decision_on_postgres") else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let connect = |url: String| {
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("PostgreSQL answers");
            tokio::spawn(connection);
            client
        })
    };
    let schema = format!(
        "writ_approval_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let client = connect(url.clone());
    runtime
        .block_on(client.batch_execute(&format!("CREATE SCHEMA {schema}")))
        .expect("a schema of its own");
    let join = if url.contains('?') { '&' } else { '?' };
    let isolated = format!("{url}{join}options=-c%20search_path%3D{schema}");
    let forget = |id: &str| {
        let changed = runtime
            .block_on(client.execute(
                &format!(
                    "UPDATE {schema}.writ_grants SET approval_attestation = NULL WHERE grant_id = $1"
                ),
                &[&id],
            ))
            .expect("update");
        assert_eq!(changed, 1);
    };
    approvals_on_re_decision(&isolated, "approval-postgres", &forget);
    runtime
        .block_on(client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")))
        .expect("the schema goes");
}
