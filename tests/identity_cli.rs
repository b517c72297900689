//! `--trust` on the real binary with the default pack: `writ eval --at`
//! on the checked-in example, `writ test --trust --at`, and `writ serve
//! --trust` with a token minted now (the server checks on its own clock).

mod common;

use std::process::Command;
use std::sync::Arc;

use common::server::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const TRUST: &str = "examples/identity/trust.json";
const AT: &str = "2026-11-22T10:00:00Z";

fn eval(request: &str, at: &str) -> (i32, Value) {
    let out = Command::new(BIN)
        .args(["eval", "--trust", TRUST, "--at", at, "-r", request])
        .current_dir(ROOT)
        .output()
        .expect("writ eval");
    let json = serde_json::from_slice(&out.stdout).expect("decision JSON");
    (out.status.code().unwrap_or(-1), json)
}

#[test]
fn eval_attests_a_verified_github_actions_token() {
    let (code, decision) = eval("examples/identity/github-actions.json", AT);
    assert_eq!(code, 0, "{decision}");
    assert_eq!(decision["decision"], "allow");
    assert_eq!(decision["errors"], json!([]));
    assert_eq!(decision["trace"][0]["rule"], "subject.token");
    assert!(decision["trace"][0]["because"]
        .as_str()
        .is_some_and(|b| b.contains("https://token.actions.githubusercontent.com")));
}

#[test]
fn eval_checks_the_token_at_the_given_time() {
    // An hour later the five-minute token has expired.
    let (code, decision) = eval(
        "examples/identity/github-actions.json",
        "2026-11-22T11:00:00Z",
    );
    assert_eq!(code, 1);
    assert!(decision["reasons"]
        .as_array()
        .is_some_and(|r| r.contains(&json!("identity.attested"))));
    assert!(decision["errors"]
        .as_array()
        .is_some_and(|e| e.iter().any(|e| e["rule"] == "subject.token"
            && e["message"].as_str().is_some_and(|m| m.contains("expired")))));
}

#[test]
fn eval_ignores_broker_attestation_without_a_token() {
    let (code, decision) = eval("examples/identity/broker-asserted.json", AT);
    assert_eq!(code, 1);
    assert_eq!(decision["reasons"], json!(["identity.attested"]));
    // Without --trust the same request is allowed on the broker's word.
    let out = Command::new(BIN)
        .args(["eval", "-r", "examples/identity/broker-asserted.json"])
        .current_dir(ROOT)
        .output()
        .expect("writ eval");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_bad_trust_file_or_time_is_an_error() {
    for args in [
        vec!["--trust", "no-such-trust.json"],
        vec!["--trust", TRUST, "--at", "yesterday"],
    ] {
        let out = Command::new(BIN)
            .arg("eval")
            .args(&args)
            .args(["-r", "examples/identity/github-actions.json"])
            .current_dir(ROOT)
            .output()
            .expect("writ eval");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

/// A GitHub Actions token for the example's trust file, valid now (the
/// server checks on its own clock).
fn github_token_now() -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = json!({
        "iss": "https://token.actions.githubusercontent.com",
        "aud": "writ",
        "sub": "repo:acme/payments:environment:prod",
        "repository": "acme/payments",
        "environment": "prod",
        "iat": now - 5,
        "exp": now + 300,
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".to_owned());
    let key = std::fs::read(format!("{ROOT}/tests/identity/rsa1.der")).expect("key");
    encode(&header, &claims, &EncodingKey::from_rsa_der(&key)).expect("sign")
}

/// A grant recorded through `/v1/grants` keeps what the token proved and
/// a digest of the token, not the token.
#[test]
fn a_grant_keeps_the_verified_claims_and_not_the_token() {
    let dir = Arc::new(TempDir::new("identity-grant"));
    let ledger = dir.file("writ.db").display().to_string();
    let server = Server::start(&["--trust", TRUST, "--ledger", &ledger], &dir);
    let token = github_token_now();
    let text = std::fs::read_to_string(format!("{ROOT}/examples/identity/github-actions.json"))
        .expect("example");
    let mut request: Value = serde_json::from_str(&text).expect("json");
    request["subject"]["token"] = json!(token);
    request["environment"]
        .as_object_mut()
        .expect("environment")
        .remove("time");
    let reply = server.post("/v1/grants", &request.to_string());
    assert_eq!(reply.status, 201, "{reply:?}");
    let grant_id = reply.json()["grant_id"]
        .as_str()
        .expect("a grant id")
        .to_owned();
    let stored = server.get(&format!("/v1/grants/{grant_id}"));
    assert_eq!(stored.status, 200, "{stored:?}");
    let signature = token.rsplit('.').next().expect("a JWS has three parts");
    assert!(!stored.body.contains(signature), "{}", stored.body);
    let grant = stored.json();
    let subject = &grant["request"]["subject"];
    assert_eq!(subject["attested"], json!(true), "{grant}");
    assert_eq!(
        subject["verified_by"],
        json!("https://token.actions.githubusercontent.com"),
        "{grant}"
    );
    // The token's place keeps a digest of it (a re-decision sees the
    // field present, as the first decision did), never the token.
    let kept = subject["token"].as_str().expect("the token's digest");
    assert!(kept.starts_with("redacted:sha256:"), "{grant}");
    assert_eq!(kept.len(), "redacted:sha256:".len() + 64, "{grant}");
}

#[test]
fn serve_attests_a_token_minted_now_and_not_the_brokers_word() {
    let dir = Arc::new(TempDir::new("identity"));
    let log = dir.file("decisions.jsonl");
    let log_arg = log.display().to_string();
    let server = Server::start(&["--trust", TRUST, "--decision-log", &log_arg], &dir);
    let token = github_token_now();
    let text = std::fs::read_to_string(format!("{ROOT}/examples/identity/github-actions.json"))
        .expect("example");
    let mut request: Value = serde_json::from_str(&text).expect("json");
    request["subject"]["token"] = json!(token);
    let reply = server.post("/v1/decide", &request.to_string());
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["decision"], "allow", "{:?}", reply.json());
    // The example's own token expired days before the server's clock.
    let reply = server.post("/v1/decide", &text);
    assert_eq!(reply.json()["decision"], "deny");
    let broker = std::fs::read_to_string(format!("{ROOT}/examples/identity/broker-asserted.json"))
        .expect("example");
    let reply = server.post("/v1/decide", &broker);
    assert_eq!(reply.json()["decision"], "deny");
    assert_eq!(reply.json()["reasons"], json!(["identity.attested"]));
    // A bearer token never reaches the decision log, redacted or not.
    let written = std::fs::read_to_string(&log).expect("the decision log");
    assert_eq!(written.lines().count(), 3, "{written}");
    let signature = token.rsplit('.').next().expect("a JWS has three parts");
    assert!(!written.contains(signature), "{written}");
    assert!(!written.contains(&token), "{written}");
}

#[test]
fn writ_test_takes_trust_and_at() {
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("test")
            .args(args)
            .arg("examples/identity/cases.json")
            .current_dir(ROOT)
            .output()
            .expect("writ test");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run(&["--trust", TRUST, "--at", AT]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("2 passed, 0 failed"), "{out}");
    // Without the trust file the broker's word counts: the deny case fails.
    let (code, out) = run(&[]);
    assert_eq!(code, Some(1), "{out}");
    // On a day the token has expired, the allow case fails.
    let (code, out) = run(&["--trust", TRUST, "--at", "2026-11-23T10:00:00Z"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("1 passed, 1 failed"), "{out}");
}

/// The default pack's valid-approval cases (examples/identity/approvals,
/// written by its mint.py): a signed approval of this action on this
/// resource removes the approval step, the same approval signed by the
/// requester does not; without the trust file, or after the tokens
/// expired, none of them is valid and the approval step stays.
#[test]
fn signed_approvals_count_only_when_verified_and_not_self_approved() {
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("test")
            .args(args)
            .arg("examples/identity/approvals")
            .current_dir(ROOT)
            .output()
            .expect("writ test");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let trust = "examples/identity/approvals/trust.json";
    let (code, out) = run(&["--trust", trust, "--at", AT]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("8 passed, 0 failed"), "{out}");
    // Without the trust file a token is a string: no approval is valid, so
    // the four cases that rely on one fail (the self-approvals still pass).
    let (code, out) = run(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("4 passed, 4 failed"), "{out}");
    // Past the tokens' expiry (30 minutes), the same.
    let (code, out) = run(&["--trust", trust, "--at", "2026-11-22T11:00:00Z"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("4 passed, 4 failed"), "{out}");
}
