//! Approval tokens (docs/identity.md, "Approvals"): `context.approval` as a
//! compact JWS from an approval issuer of the trust file. Verified, it
//! reads `{verified: true, approver, action, resource, expires}`; anything
//! else reads `verified: false` (or stays a string), with or without a
//! trust file, so no broker can write its own `verified: true`.
//!
//! The policy below uses the conditions the default pack (version 2)
//! counts an approval by, with exactly its attribute names.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::server::{Server, TempDir};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use writ::identity::Trust;
use writ::{Decision, Engine, Request};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/identity");
const NOW: i64 = 1_795_000_000;
/// NOW as RFC 3339: the request's time.
const TIME: &str = "2026-11-18T11:06:40Z";
const APPROVALS: &str = "https://approvals.test";
const WORKLOADS: &str = "https://issuer.test";
const SUBJECT: &str = "repo:acme/payments:ref:refs/heads/main";

const POLICY: &str = r#"
@id("deploy")
permit if action == "deploy" grant ["deploy:{resource.id}"];

@id("deploy.approval")
require approval if action == "deploy" and not (
  context has approval.verified
  and context.approval.verified == true
  and context.approval.expires > environment.time
  and context.approval.action == action
  and context.approval.resource == resource.id
  and context.approval.approver != subject.id);
"#;

fn engine() -> Engine {
    Engine::compile([("approval.writ", POLICY)], None).expect("policy compiles")
}

fn trust_file() -> Value {
    json!({
        "issuers": [{
            "issuer": WORKLOADS,
            "jwks_file": "jwks.json",
            "algorithms": ["RS256"],
            "audiences": ["writ"],
            "kind": "ci",
            "auth": "oidc"
        }],
        "approval_issuers": [{
            "issuer": APPROVALS,
            "jwks_file": "jwks.json",
            "algorithms": ["ES256", "RS256"],
            "audiences": ["writ"],
            "max_age": "30m",
            "claims": {"approver": "approver", "action": "action", "resource": "resource"}
        }]
    })
}

fn trust() -> Trust {
    Trust::from_json("trust.json", &trust_file().to_string(), Path::new(DIR)).expect("trust file")
}

fn key(file: &str) -> Vec<u8> {
    std::fs::read(Path::new(DIR).join(file)).expect("test key")
}

fn approval_claims() -> Value {
    json!({
        "iss": APPROVALS,
        "sub": "approval-42",
        "aud": "writ",
        "iat": NOW - 60,
        "exp": NOW + 600,
        "approver": "alice@acme.io",
        "action": "deploy",
        "resource": "k8s://prod/app",
        "scope": ["deploy:k8s://prod/app"],
    })
}

fn es256(claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec-1".to_owned());
    encode(&header, claims, &EncodingKey::from_ec_der(&key("ec.der"))).expect("sign")
}

fn rs256(kid: &str, der: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    encode(&header, claims, &EncodingKey::from_rsa_der(&key(der))).expect("sign")
}

fn workload_token() -> String {
    rs256(
        "rsa-1",
        "rsa1.der",
        &json!({"iss": WORKLOADS, "sub": SUBJECT, "aud": "writ", "iat": NOW - 60, "exp": NOW + 240}),
    )
}

fn request(approval: Value) -> Value {
    json!({
        "subject": {"id": SUBJECT, "token": workload_token()},
        "action": "deploy",
        "resource": {"id": "k8s://prod/app"},
        "environment": {"time": TIME},
        "context": {"approval": approval}
    })
}

fn parse(value: &Value) -> Request {
    Request::from_json(&value.to_string()).expect("request")
}

fn needs_approval(decision: &Decision) -> bool {
    decision.obligations.iter().any(|o| o.kind == "approval")
}

/// Decides with the trust file; returns the decision and what
/// `context.approval` reads after verification.
fn decide(approval: Value) -> (Decision, Value) {
    let trust = trust();
    let req = parse(&request(approval));
    let decision = trust.decide(&engine(), &req, NOW);
    let mut rewritten = req.clone();
    let attestation = trust.apply(&mut rewritten, NOW);
    let read = attestation
        .approval
        .map(|check| check.value)
        .unwrap_or_else(|| rewritten.context["approval"].clone());
    (decision, read)
}

fn approval_error(decision: &Decision) -> Option<String> {
    decision
        .errors
        .iter()
        .find(|e| e.rule == "context.approval")
        .map(|e| e.message.clone())
}

#[test]
fn a_verified_approval_counts() {
    let (decision, read) = decide(json!(es256(&approval_claims())));
    assert!(decision.is_allow(), "{:?}", decision.errors);
    assert!(!needs_approval(&decision), "{:?}", decision.obligations);
    assert!(decision.errors.is_empty(), "{:?}", decision.errors);
    assert_eq!(read["verified"], json!(true));
    assert_eq!(read["approver"], json!("alice@acme.io"));
    assert_eq!(read["action"], json!("deploy"));
    assert_eq!(read["resource"], json!("k8s://prod/app"));
    assert_eq!(read["expires"], json!("2026-11-18T11:16:40Z"));
    assert_eq!(read["scope"], json!(["deploy:k8s://prod/app"]));
    assert_eq!(read["verified_by"], json!(APPROVALS));
    // The trace says so, after the subject's entry.
    assert_eq!(&*decision.trace[0].rule, "subject.token");
    let entry = &decision.trace[1];
    assert_eq!(&*entry.rule, "context.approval");
    let because = entry.because.as_deref().unwrap_or("");
    assert!(
        because.contains(APPROVALS) && because.contains("alice@acme.io"),
        "{because}"
    );
}

#[test]
fn an_rs256_approval_with_the_default_claim_names_counts() {
    // `sub` names the approver when the file does not say otherwise.
    let mut file = trust_file();
    file["approval_issuers"][0]
        .as_object_mut()
        .expect("object")
        .remove("claims");
    let trust = Trust::from_json("t.json", &file.to_string(), Path::new(DIR)).expect("trust");
    let mut claims = approval_claims();
    claims["sub"] = json!("bob@acme.io");
    let token = rs256("rsa-1", "rsa1.der", &claims);
    let mut req = parse(&request(json!(token)));
    let attestation = trust.apply(&mut req, NOW);
    let check = attestation.approval.expect("checked");
    assert_eq!(check.value["approver"], json!("bob@acme.io"));
    assert!(!needs_approval(&trust.decide(
        &engine(),
        &parse(&request(json!(token))),
        NOW
    )));
}

/// A failed approval: `{verified: false}`, an error naming the failure,
/// and the approval step stays.
fn refused(approval: Value) -> String {
    let (decision, read) = decide(approval);
    assert_eq!(read, json!({"verified": false}));
    assert!(needs_approval(&decision), "a refused approval counted");
    approval_error(&decision).expect("an error names the failure")
}

#[test]
fn an_expired_approval_does_not_count() {
    let mut claims = approval_claims();
    claims["iat"] = json!(NOW - 1200);
    claims["exp"] = json!(NOW - 600);
    let message = refused(json!(es256(&claims)));
    assert!(
        message.starts_with("context.approval expired:"),
        "{message}"
    );
}

#[test]
fn an_approval_from_another_issuer_does_not_count() {
    // The workload issuer is trusted for identities, not for approvals.
    let mut claims = approval_claims();
    claims["iss"] = json!(WORKLOADS);
    let message = refused(json!(rs256("rsa-1", "rsa1.der", &claims)));
    assert!(
        message.starts_with("context.approval unknown_issuer:"),
        "{message}"
    );
    // And an approval is no workload identity either.
    let trust = trust();
    let mut req = parse(&request(json!("x")));
    req.subject.token = Some(es256(&approval_claims()));
    let attestation = trust.apply(&mut req, NOW);
    assert_eq!(
        attestation.failure.map(|f| f.code()),
        Some("unknown_issuer")
    );
}

#[test]
fn an_approval_signed_with_another_key_does_not_count() {
    let message = refused(json!(rs256("rsa-1", "rsa2.der", &approval_claims())));
    assert!(
        message.starts_with("context.approval bad_signature:"),
        "{message}"
    );
}

#[test]
fn an_approval_without_its_claims_does_not_count() {
    for missing in ["approver", "action", "resource"] {
        let mut claims = approval_claims();
        claims.as_object_mut().expect("object").remove(missing);
        let message = refused(json!(es256(&claims)));
        assert!(
            message.starts_with("context.approval malformed:") && message.contains(missing),
            "{message}"
        );
    }
    let mut claims = approval_claims();
    claims["action"] = json!(7);
    assert!(refused(json!(es256(&claims))).contains("not a string"));
    let message = refused(json!("yes"));
    assert!(
        message.starts_with("context.approval malformed:"),
        "{message}"
    );
}

#[test]
fn a_self_approval_is_visible_and_does_not_count() {
    let mut claims = approval_claims();
    claims["approver"] = json!(SUBJECT);
    let (decision, read) = decide(json!(es256(&claims)));
    // Verified, but by the subject itself: the pack's test sees it.
    assert_eq!(read["verified"], json!(true));
    assert_eq!(read["approver"], json!(SUBJECT));
    assert!(decision.errors.is_empty(), "{:?}", decision.errors);
    assert!(needs_approval(&decision), "a self-approval counted");
}

#[test]
fn an_approval_for_another_action_or_resource_does_not_count() {
    for (claim, value) in [("action", "delete"), ("resource", "k8s://prod/other")] {
        let mut claims = approval_claims();
        claims[claim] = json!(value);
        let (decision, read) = decide(json!(es256(&claims)));
        assert_eq!(read["verified"], json!(true));
        assert!(
            needs_approval(&decision),
            "an approval for another {claim} counted"
        );
    }
}

/// A broker's own `verified: true`, decided by the plain engine (no trust
/// file) on every way in, and with a trust file.
#[test]
fn a_broker_cannot_write_verified_true() {
    let legacy = json!({"by": "oncall@acme.io", "verified": true, "approver": "alice@acme.io",
        "action": "deploy", "resource": "k8s://prod/app", "expires": "2030-01-01T00:00:00Z"});
    let mut value = request(legacy.clone());
    value["subject"]
        .as_object_mut()
        .expect("subject")
        .remove("token");
    let engine = engine();
    // The JSON reader (`decide_json`), a parsed request, and one built in
    // Rust with `verified: true` in it.
    let by_json = engine.decide_json(&value.to_string()).expect("request");
    let parsed = engine.decide(&parse(&value));
    let mut built = Request {
        action: Some("deploy".to_owned()),
        ..Request::default()
    };
    built.subject.id = Some(SUBJECT.to_owned());
    built.resource.id = Some("k8s://prod/app".to_owned());
    built.environment.time = Some(TIME.to_owned());
    built.context.insert("approval".to_owned(), legacy.clone());
    let by_rust = engine.decide(&built);
    for decision in [&by_json, &parsed, &by_rust] {
        assert!(
            needs_approval(decision),
            "a broker's verified: true counted"
        );
    }
    // What the rule saw: `verified` read false.
    let step = by_json
        .trace
        .iter()
        .find(|e| &*e.rule == "deploy.approval")
        .expect("the rule's trace");
    assert_eq!(step.outcome, writ::Outcome::Matched);
    // With a trust file: an object is not a token; it reads the same.
    let (decision, read) = decide(legacy);
    assert!(needs_approval(&decision));
    assert_eq!(read["verified"], json!(true), "the request is left as sent");
    assert!(approval_error(&decision).is_none());
}

#[test]
fn a_string_approval_stays_a_string_without_approval_issuers() {
    let engine = engine();
    let mut value = request(json!("yes"));
    value["subject"]
        .as_object_mut()
        .expect("subject")
        .remove("token");
    let decision = engine.decide_json(&value.to_string()).expect("request");
    assert!(needs_approval(&decision));
    // A trust file without approval issuers leaves it alone too.
    let mut file = trust_file();
    file.as_object_mut()
        .expect("object")
        .remove("approval_issuers");
    let trust = Trust::from_json("t.json", &file.to_string(), Path::new(DIR)).expect("trust");
    let mut req = parse(&request(json!("yes")));
    let attestation = trust.apply(&mut req, NOW);
    assert!(attestation.approval.is_none());
    assert_eq!(req.context["approval"], json!("yes"));
    assert!(needs_approval(&trust.decide(
        &engine,
        &parse(&request(json!("yes"))),
        NOW
    )));
}

#[test]
fn approval_issuers_are_checked() {
    let cases = [
        (
            json!({"approval_issuers": [{"issuer": WORKLOADS, "jwks_file": "jwks.json", "algorithms": ["RS256"], "audiences": ["writ"]}],
                   "issuers": [{"issuer": WORKLOADS, "jwks_file": "jwks.json", "algorithms": ["RS256"], "audiences": ["writ"], "kind": "ci", "auth": "oidc"}]}),
            "both an identity issuer and an approval issuer",
        ),
        (
            json!({"approval_issuers": [{"issuer": APPROVALS, "jwks_file": "jwks.json", "algorithms": ["HS256"], "audiences": ["writ"]}]}),
            "HS256",
        ),
        (
            json!({"approval_issuers": [{"issuer": APPROVALS, "jwks_file": "jwks.json", "algorithms": ["ES256"], "audiences": ["writ"], "kind": "ci"}]}),
            "unknown field",
        ),
        (
            json!({"approval_issuers": [{"issuer": APPROVALS, "jwks_file": "jwks.json", "algorithms": ["ES256"], "audiences": ["writ"], "claims": {"approver": ""}}]}),
            "claim name is empty",
        ),
        (json!({"issuers": [], "approval_issuers": []}), "empty"),
    ];
    for (file, needle) in cases {
        let error =
            Trust::from_json("t.json", &file.to_string(), Path::new(DIR)).expect_err("refused");
        assert!(error.to_string().contains(needle), "{error} lacks {needle}");
    }
}

#[test]
fn serve_verifies_approvals_and_ignores_a_brokers_verified() {
    let dir = Arc::new(TempDir::new("approval"));
    let trust = dir.file("trust.json");
    let mut file = trust_file();
    for list in ["issuers", "approval_issuers"] {
        file[list][0]["jwks_file"] = json!(format!("{DIR}/jwks.json"));
    }
    std::fs::write(&trust, file.to_string()).expect("trust file");
    let policy = dir.file("approval.writ");
    std::fs::write(&policy, POLICY).expect("policy");
    let server = Server::start(
        &[
            "--trust",
            &trust.display().to_string(),
            "--policy",
            &policy.display().to_string(),
        ],
        &dir,
    );
    // Tokens on the server's clock.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut claims = approval_claims();
    claims["iat"] = json!(now - 10);
    claims["exp"] = json!(now + 600);
    let mut body = request(json!(es256(&claims)));
    body["subject"]
        .as_object_mut()
        .expect("subject")
        .remove("token");
    body["environment"]
        .as_object_mut()
        .expect("environment")
        .remove("time");
    let decision = server.post("/v1/decide", &body.to_string()).json();
    assert_eq!(decision["decision"], "allow", "{decision}");
    assert_eq!(decision["obligations"], json!([]), "{decision}");
    assert_eq!(decision["trace"][0]["rule"], "context.approval");
    body["context"]["approval"] = json!({"verified": true, "approver": "alice@acme.io",
        "action": "deploy", "resource": "k8s://prod/app", "expires": "2099-01-01T00:00:00Z"});
    let decision = server.post("/v1/decide", &body.to_string()).json();
    assert_eq!(decision["obligations"][0]["kind"], "approval", "{decision}");
    let metric = format!(
        "writ_identity_verifications_total{{use=\"approval\",issuer=\"{APPROVALS}\",outcome=\"verified\"}}"
    );
    assert_eq!(server.metric(&metric), 1.0);
}
