//! `subject.token` verification against a trust file (docs/identity.md):
//! tokens minted here with the test keys in `tests/identity/`, each bad
//! input from issue 16 denied through `identity.attested`.

use std::path::Path;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use writ::identity::{Failure, Trust};
use writ::{Engine, Request};

const NOW: i64 = 1_795_000_000;
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/identity");

fn key(file: &str) -> Vec<u8> {
    std::fs::read(Path::new(DIR).join(file)).expect("test key")
}

fn rsa(file: &str) -> EncodingKey {
    EncodingKey::from_rsa_der(&key(file))
}

fn trust_with(jwks: &str, accept_broker: bool) -> Trust {
    let text = std::fs::read_to_string(Path::new(DIR).join("trust.json"))
        .expect("trust file")
        .replace("jwks.json", jwks);
    let mut value: Value = serde_json::from_str(&text).expect("json");
    value["accept_broker_attestation"] = json!(accept_broker);
    Trust::from_json("trust.json", &value.to_string(), Path::new(DIR)).expect("valid trust file")
}

fn trust() -> Trust {
    trust_with("jwks.json", false)
}

fn claims() -> Value {
    json!({
        "iss": "https://issuer.test",
        "sub": "repo:acme/payments:ref:refs/heads/main",
        "aud": "writ",
        "iat": NOW - 60,
        "exp": NOW + 240,
        "repository": "acme/payments",
    })
}

fn header(alg: Algorithm, kid: &str) -> Header {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    header
}

fn rs256(claims: &Value) -> String {
    encode(&header(Algorithm::RS256, "rsa-1"), claims, &rsa("rsa1.der")).expect("sign")
}

fn request(token: Option<&str>) -> Request {
    let mut value: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/ci-deploy.json"
        ))
        .expect("example"),
    )
    .expect("json");
    if let Some(token) = token {
        value["subject"]["token"] = json!(token);
    }
    Request::from_json(&value.to_string()).expect("request")
}

/// Decides with the default pack and returns (allowed, attested, errors).
fn decide(trust: &Trust, token: Option<&str>) -> (bool, Option<bool>, Vec<String>, writ::Decision) {
    let engine = Engine::default_pack(None).expect("pack");
    let mut req = request(token);
    trust.apply(&mut req, NOW);
    let attested = req.subject.attested;
    let decision = trust.decide(&engine, &request(token), NOW);
    let errors = decision.errors.iter().map(|e| e.message.clone()).collect();
    (decision.is_allow(), attested, errors, decision)
}

/// The failure code for a token, and that it denies through `identity.attested`.
fn fails(trust: &Trust, token: &str) -> &'static str {
    let (allowed, attested, errors, decision) = decide(trust, Some(token));
    assert!(!allowed, "a bad token was allowed: {errors:?}");
    assert_eq!(attested, Some(false));
    assert!(decision.reasons.iter().any(|r| r == "identity.attested"));
    let mut req = request(Some(token));
    let failure = trust.apply(&mut req, NOW).failure.expect("a failure");
    assert!(
        errors.iter().any(|e| *e == failure.to_string()),
        "{errors:?}"
    );
    failure.code()
}

#[test]
fn rs256_token_verifies_and_overrides_the_broker() {
    let trust = trust();
    let token = rs256(&claims());
    let (allowed, attested, errors, decision) = decide(&trust, Some(&token));
    assert!(allowed, "{errors:?}");
    assert_eq!(attested, Some(true));
    assert!(errors.is_empty());
    let mut req = request(Some(&token));
    let attestation = trust.apply(&mut req, NOW);
    assert_eq!(
        attestation.verified_by.as_deref(),
        Some("https://issuer.test")
    );
    // The broker sent a SPIFFE id: the token's `sub` replaced it.
    assert_eq!(attestation.overridden, ["id"]);
    assert_eq!(
        req.subject.id.as_deref(),
        Some("repo:acme/payments:ref:refs/heads/main")
    );
    assert_eq!(req.subject.extra["repository"], json!("acme/payments"));
    assert_eq!(
        req.subject.extra["verified_by"],
        json!("https://issuer.test")
    );
    let first = &decision.trace[0];
    assert_eq!(&*first.rule, "subject.token");
    assert!(first
        .because
        .as_deref()
        .unwrap_or("")
        .contains("overrode what the broker sent for subject.id"));
}

#[test]
fn es256_and_eddsa_tokens_verify() {
    let trust = trust();
    let es = encode(
        &header(Algorithm::ES256, "ec-1"),
        &claims(),
        &EncodingKey::from_ec_der(&key("ec.der")),
    )
    .expect("sign");
    let ed = encode(
        &header(Algorithm::EdDSA, "ed-1"),
        &claims(),
        &EncodingKey::from_ed_der(&key("ed.der")),
    )
    .expect("sign");
    for token in [es, ed] {
        let (allowed, attested, errors, _) = decide(&trust, Some(&token));
        assert!(allowed, "{errors:?}");
        assert_eq!(attested, Some(true));
    }
}

#[test]
fn broker_attestation_without_a_token_is_ignored_unless_accepted() {
    let (allowed, attested, errors, decision) = decide(&trust(), None);
    assert!(!allowed);
    assert_eq!(attested, Some(false));
    assert!(errors.is_empty());
    assert!(decision.reasons.iter().any(|r| r == "identity.attested"));
    let (allowed, attested, _, _) = decide(&trust_with("jwks.json", true), None);
    assert!(allowed);
    assert_eq!(attested, Some(true));
}

#[test]
fn alg_none_is_refused() {
    let b64 = |v: Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let token = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "kid": "rsa-1"})),
        b64(claims())
    );
    assert_eq!(fails(&trust(), &token), "disallowed_algorithm");
}

#[test]
fn hmac_with_the_public_key_as_secret_is_refused() {
    let secret = key("rsa1.pub.pem");
    let token = encode(
        &header(Algorithm::HS256, "rsa-1"),
        &claims(),
        &EncodingKey::from_secret(&secret),
    )
    .expect("sign");
    assert_eq!(fails(&trust(), &token), "disallowed_algorithm");
}

#[test]
fn unknown_kid_is_refused() {
    let token = encode(
        &header(Algorithm::RS256, "rsa-9"),
        &claims(),
        &rsa("rsa1.der"),
    )
    .expect("sign");
    assert_eq!(fails(&trust(), &token), "unknown_key");
}

#[test]
fn key_locations_in_the_header_are_never_followed() {
    // Signed with a key the trust file does not hold, pointing at it.
    let mut h = header(Algorithm::RS256, "rsa-1");
    h.jku = Some("https://attacker.test/jwks.json".to_owned());
    h.x5u = Some("https://attacker.test/cert.pem".to_owned());
    let token = encode(&h, &claims(), &rsa("rsa2.der")).expect("sign");
    assert_eq!(fails(&trust(), &token), "bad_signature");
    let set: Value = serde_json::from_slice(&key("jwks-rotated.json")).expect("jwks");
    let mut h = header(Algorithm::RS256, "rsa-1");
    h.jwk = Some(serde_json::from_value(set["keys"][0].clone()).expect("jwk"));
    let token = encode(&h, &claims(), &rsa("rsa2.der")).expect("sign");
    assert_eq!(fails(&trust(), &token), "bad_signature");
}

#[test]
fn times_are_checked_on_writs_clock() {
    let trust = trust();
    let mut c = claims();
    c["exp"] = json!(NOW - 31);
    assert_eq!(fails(&trust, &rs256(&c)), "expired");
    let mut c = claims();
    c["nbf"] = json!(NOW + 120);
    assert_eq!(fails(&trust, &rs256(&c)), "not_yet_valid");
    let mut c = claims();
    c["iat"] = json!(NOW - 700);
    assert_eq!(fails(&trust, &rs256(&c)), "too_old");
    // Within the skew: still valid.
    let mut c = claims();
    c["exp"] = json!(NOW - 10);
    let (allowed, _, errors, _) = decide(&trust, Some(&rs256(&c)));
    assert!(allowed, "{errors:?}");
    // The request's own time does not matter.
    let mut c = claims();
    c["exp"] = json!(NOW - 31);
    let token = rs256(&c);
    let engine = Engine::default_pack(None).expect("pack");
    let mut req = request(Some(&token));
    req.environment.time = Some("2026-11-18T00:00:00Z".to_owned());
    assert!(!trust.decide(&engine, &req, NOW).is_allow());
}

#[test]
fn wrong_issuer_and_audience_are_refused() {
    let trust = trust();
    let mut c = claims();
    c["iss"] = json!("https://issuer.test/");
    assert_eq!(fails(&trust, &rs256(&c)), "unknown_issuer");
    let mut c = claims();
    c["aud"] = json!("someone-else");
    assert_eq!(fails(&trust, &rs256(&c)), "wrong_audience");
    let mut c = claims();
    c["aud"] = json!(["a", "b"]);
    assert_eq!(fails(&trust, &rs256(&c)), "wrong_audience");
    let mut c = claims();
    c["aud"] = json!(["a", "writ"]);
    assert!(decide(&trust, Some(&rs256(&c))).0);
}

#[test]
fn malformed_tokens_are_refused() {
    let trust = trust();
    let token = rs256(&claims());
    assert_eq!(fails(&trust, &token[..token.len() - 20]), "bad_signature");
    assert_eq!(
        fails(&trust, &token[..token.rfind('.').unwrap_or(0)]),
        "malformed"
    );
    assert_eq!(fails(&trust, "not a token"), "malformed");
    assert_eq!(fails(&trust, "a*b.c$d.e!f"), "malformed");
    let huge = format!(
        "{}.{}.{}",
        "a".repeat(500_000),
        "b".repeat(500_000),
        "c".repeat(48_576)
    );
    assert_eq!(fails(&trust, &huge), "malformed");
    let mut c = claims();
    c["repository"] = json!(42);
    assert_eq!(fails(&trust, &rs256(&c)), "malformed");
    let mut c = claims();
    c["exp"] = json!("tomorrow");
    assert_eq!(fails(&trust, &rs256(&c)), "malformed");
    // A token that is not a string is an invalid request, refused before
    // anything is decided (the request schema types `subject.token`).
    let mut value: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/ci-deploy.json"
        ))
        .expect("ex"),
    )
    .expect("json");
    value["subject"]["token"] = json!(7);
    let error = Request::from_json(&value.to_string())
        .expect_err("a numeric token is refused")
        .to_string();
    assert!(error.contains("subject.token"), "{error}");
}

#[test]
fn rotation_follows_the_keys() {
    let old = rs256(&claims());
    let new = encode(
        &header(Algorithm::RS256, "rsa-2"),
        &claims(),
        &rsa("rsa2.der"),
    )
    .expect("sign");
    let before = trust();
    assert!(decide(&before, Some(&old)).0);
    assert_eq!(fails(&before, &new), "unknown_key");
    let after = trust_with("jwks-rotated.json", false);
    assert!(decide(&after, Some(&new)).0);
    assert_eq!(fails(&after, &old), "unknown_key");
}

#[test]
fn the_github_preset_maps_its_claims() {
    let trust = trust();
    let mut c = claims();
    c["iss"] = json!("https://token.actions.githubusercontent.com");
    for (claim, value) in [
        ("ref", "refs/heads/main"),
        (
            "workflow_ref",
            "acme/payments/.github/workflows/deploy.yml@refs/heads/main",
        ),
        (
            "job_workflow_ref",
            "acme/payments/.github/workflows/deploy.yml@refs/heads/main",
        ),
        ("event_name", "push"),
        ("environment", "prod"),
        ("repository_owner", "acme"),
    ] {
        c[claim] = json!(value);
    }
    let mut req = request(Some(&rs256(&c)));
    let attestation = trust.apply(&mut req, NOW);
    assert_eq!(attestation.failure, None);
    assert_eq!(req.subject.kind.as_deref(), Some("ci"));
    assert_eq!(req.subject.auth.as_deref(), Some("oidc"));
    assert_eq!(req.subject.environment.as_deref(), Some("prod"));
    assert_eq!(req.subject.extra["event_name"], json!("push"));
    assert_eq!(req.subject.extra["repository_owner"], json!("acme"));
    assert_eq!(req.subject.attested, Some(true));
}

#[test]
fn bad_trust_files_are_refused() {
    let cases = [
        (
            json!({"issuers": [{"issuer": "x", "jwks_file": "jwks.json", "algorithms": ["HS256"], "audiences": ["writ"], "kind": "ci", "auth": "oidc"}]}),
            "HS256",
        ),
        (
            json!({"issuers": [{"issuer": "x", "jwks_file": "jwks.json", "algorithms": ["none"], "audiences": ["writ"], "kind": "ci", "auth": "oidc"}]}),
            "none",
        ),
        (
            json!({"issuers": [{"preset": "github-actions", "jwks_file": "jwks.json", "audiences": []}]}),
            "audiences",
        ),
        (
            json!({"issuers": [{"preset": "nope", "jwks_file": "jwks.json", "audiences": ["writ"]}]}),
            "unknown preset",
        ),
        (
            json!({"issuers": [{"preset": "github-actions", "jwks_file": "missing.json", "audiences": ["writ"]}]}),
            "cannot read",
        ),
        (
            json!({"issuers": [{"preset": "github-actions", "jwks_file": "jwks.json", "audiences": ["writ"], "claims": {"x": "attested"}}]}),
            "attested",
        ),
        (json!({"issuers": [], "extra": 1}), "unknown field"),
    ];
    for (file, needle) in cases {
        let error =
            Trust::from_json("t.json", &file.to_string(), Path::new(DIR)).expect_err("refused");
        assert!(error.to_string().contains(needle), "{error} lacks {needle}");
    }
}

#[test]
fn failure_codes_are_the_documented_ones() {
    let all = [
        Failure::Expired(String::new()),
        Failure::NotYetValid(String::new()),
        Failure::TooOld(String::new()),
        Failure::BadSignature(String::new()),
        Failure::UnknownIssuer(String::new()),
        Failure::UnknownKey(String::new()),
        Failure::WrongAudience(String::new()),
        Failure::DisallowedAlgorithm(String::new()),
        Failure::Malformed(String::new()),
    ];
    let codes: Vec<_> = all.iter().map(Failure::code).collect();
    assert_eq!(
        codes,
        [
            "expired",
            "not_yet_valid",
            "too_old",
            "bad_signature",
            "unknown_issuer",
            "unknown_key",
            "wrong_audience",
            "disallowed_algorithm",
            "malformed"
        ]
    );
}

#[test]
fn a_cached_token_is_still_checked_against_the_clock() {
    let trust = trust();
    let token = rs256(&claims());
    let engine = Engine::default_pack(None).expect("pack");
    let req = request(Some(&token));
    assert!(trust.decide(&engine, &req, NOW).is_allow());
    // The same token (now cached) once it has expired.
    let later = trust.decide(&engine, &req, NOW + 3600);
    assert!(!later.is_allow());
    assert!(later
        .errors
        .iter()
        .any(|e| e.message.starts_with("subject.token expired")));
    // And a token whose signature failed is not cached as verified.
    let at = token.len() - 10;
    let flipped = if &token[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{flipped}{}", &token[..at], &token[at + 1..]);
    assert!(!trust
        .decide(&engine, &request(Some(&forged)), NOW)
        .is_allow());
    assert!(trust.decide(&engine, &req, NOW).is_allow());
}

#[test]
fn the_kubernetes_preset_maps_nested_claims() {
    let text = json!({"issuers": [{
        "preset": "kubernetes",
        "issuer": "https://kubernetes.default.svc",
        "jwks_file": "jwks.json",
        "audiences": ["writ"]
    }]});
    let trust = Trust::from_json("k8s.json", &text.to_string(), Path::new(DIR)).expect("valid");
    let claims = json!({
        "iss": "https://kubernetes.default.svc",
        "sub": "system:serviceaccount:payments:deployer",
        "aud": ["writ"],
        "iat": NOW - 60,
        "exp": NOW + 3000,
        "kubernetes.io": {
            "namespace": "payments",
            "serviceaccount": {"name": "deployer", "uid": "1"},
            "pod": {"name": "deployer-7f9", "uid": "2"}
        }
    });
    let token = encode(
        &header(Algorithm::ES256, "ec-1"),
        &claims,
        &EncodingKey::from_ec_der(&key("ec.der")),
    )
    .expect("sign");
    let mut req = request(Some(&token));
    let attestation = trust.apply(&mut req, NOW);
    assert_eq!(attestation.failure, None);
    assert_eq!(req.subject.kind.as_deref(), Some("workload"));
    assert_eq!(req.subject.auth.as_deref(), Some("k8s-sa"));
    assert_eq!(req.subject.extra["namespace"], json!("payments"));
    assert_eq!(req.subject.extra["service_account"], json!("deployer"));
    assert_eq!(req.subject.extra["pod"], json!("deployer-7f9"));
    // The broker said `ci` / `oidc`: both replaced, and said so.
    assert!(attestation.overridden.contains(&"kind".to_owned()));
    assert!(attestation.overridden.contains(&"auth".to_owned()));
}
