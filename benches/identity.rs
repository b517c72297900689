//! The cost of verifying `subject.token` in a decision
//! (`cargo bench --bench identity`; docs/performance.md, "Identity").
//!
//! The default pack on `examples/ci-deploy.json`, side by side:
//!
//! - `no_token`: the request as the broker sends it (`attested: true`,
//!   accepted by the trust file), no token;
//! - `rs256/cached`, `es256/cached`: the same request with a token whose
//!   signature was verified before (the cache by token);
//! - `rs256/cold`, `es256/cold`: the cache emptied before each decision,
//!   so the token is parsed and its signature checked every time.
//!
//! Each goes through `Trust::decide` (clone the request, verify, validate,
//! decide, annotate), so the differences are the token's cost alone.
//! `apply/{rs256,es256}/cached` against `clone/{rs256,es256}` isolates the
//! verification of a cached token (a clone of the request, then
//! `Trust::apply`, against the clone alone).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use writ::identity::Trust;
use writ::{Engine, Request};

/// The allocator the `writ` binary ships with (`src/main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/identity");
const NOW: i64 = 1_795_000_000;

fn trust() -> Trust {
    let text = std::fs::read_to_string(Path::new(DIR).join("trust.json")).expect("trust file");
    let mut value: Value = serde_json::from_str(&text).expect("json");
    value["accept_broker_attestation"] = json!(true);
    Trust::from_json("trust.json", &value.to_string(), Path::new(DIR)).expect("trust file")
}

fn token(alg: Algorithm, kid: &str, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    let claims = json!({
        "iss": "https://issuer.test",
        "sub": "spiffe://prod.acme.io/ns/payments/sa/deployer",
        "aud": "writ",
        "iat": NOW - 60,
        "exp": NOW + 240,
        "repository": "acme/payments",
    });
    encode(&header, &claims, key).expect("sign")
}

fn request(token: Option<&str>) -> Request {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/ci-deploy.json"
    ))
    .expect("example");
    let mut value: Value = serde_json::from_str(&text).expect("json");
    if let Some(token) = token {
        value["subject"]["token"] = json!(token);
    }
    Request::from_json(&value.to_string()).expect("request")
}

fn identity(c: &mut Criterion) {
    let engine = Engine::default_pack(None).expect("the default pack compiles");
    let trust = trust();
    let key = |file: &str| std::fs::read(Path::new(DIR).join(file)).expect("test key");
    let rs = token(
        Algorithm::RS256,
        "rsa-1",
        &EncodingKey::from_rsa_der(&key("rsa1.der")),
    );
    let es = token(
        Algorithm::ES256,
        "ec-1",
        &EncodingKey::from_ec_der(&key("ec.der")),
    );
    let plain = request(None);
    assert!(trust.decide(&engine, &plain, NOW).is_allow(), "no_token");
    let mut group = c.benchmark_group("identity");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("no_token", |b| {
        b.iter(|| black_box(trust.decide(&engine, black_box(&plain), NOW)))
    });
    for (alg, token) in [("rs256", &rs), ("es256", &es)] {
        let req = request(Some(token));
        let decision = trust.decide(&engine, &req, NOW);
        assert!(decision.is_allow(), "{alg}: {:?}", decision.errors);
        group.bench_function(format!("{alg}/cached"), |b| {
            b.iter(|| black_box(trust.decide(&engine, black_box(&req), NOW)))
        });
        // The verification alone: clone the request and apply the trust
        // file to it, against the clone alone (`clone/{alg}`).
        group.bench_function(format!("clone/{alg}"), |b| {
            b.iter(|| black_box(black_box(&req).clone()))
        });
        group.bench_function(format!("apply/{alg}/cached"), |b| {
            b.iter(|| {
                let mut copy = black_box(&req).clone();
                black_box(trust.apply(&mut copy, NOW));
                copy
            })
        });
        group.bench_function(format!("{alg}/cold"), |b| {
            b.iter(|| {
                trust.clear_cache();
                black_box(trust.decide(&engine, black_box(&req), NOW))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, identity);
criterion_main!(benches);
