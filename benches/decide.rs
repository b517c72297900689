//! Decision, compile and end-to-end benchmarks (`cargo bench --bench decide`).
//!
//! - `pack/*`: the default pack on four representative requests.
//! - `decide/{matching,non_matching}/N`: generated sets of the issuance
//!   shape (`writ::testgen`) of N rules, for a request that one permit
//!   matches and one that nothing matches.
//! - `flags/{non_matching,matching_one,matching_many}/N`: sets of the flags
//!   shape (`writ::testgen::generate_flags`: permits of four string tests
//!   and one boolean, a forbid every ten rules, resource kinds that do not
//!   grow with the set) of N rules, for a request that matches nothing,
//!   one that one permit matches and one that the most permits match.
//! - `shapes/SHAPE/{non_matching,matching_one,matching_many}/N`: sets of
//!   each shape of `writ::testgen::generate_shape` (`numeric`: ranges on
//!   numbers and durations; `presence`: `has` below an attribute;
//!   `forbids`: every forbid a single test on any attribute; `absent`:
//!   permits testing an attribute the request lacks, and complements;
//!   `mixed`: all of these at random) of 10 and 10,000 rules.
//! - `compile/N`: parse + check + compile of the same sets;
//!   `compile/mixed/10000`, the mixed shape; `compile_large/100000`, the
//!   issuance shape at the rule limit.
//! - `end_to_end/*`: JSON request parse + decide + decision serialise.
//! - `versus_parse/*`: the default pack deciding `examples/ci-deploy.json`
//!   (validation, decision, trace recorded) next to `serde_json` parsing
//!   the same text into a `Value`, and the decision with its JSON written,
//!   side by side in one process (issue 18's goal: decide ≤ 0.7× parse);
//!   `read` is the request read from the text and validated
//!   (`Request::parse_json`), `read_decide` read and decided
//!   (`Engine::decide_json`, what `writ eval` and `/v1/decide` do).
//!
//! Measurement times are short so that the whole run takes a few minutes;
//! the Cedar comparison lives in `benches/peers`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use writ::testgen::{generate, generate_flags, generate_shape, GenConfig, GenSet, Shape};
use writ::{Effect, Engine, Request};

/// The allocator the `writ` binary ships with (`src/main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];

/// A CI job deploying to a cluster its team owns: allowed by
/// `baseline.owner-change`.
const ALLOW: &str = r#"{"subject":{"id":"spiffe://prod.acme.io/ns/payments/sa/deployer","kind":"ci","auth":"oidc","attested":true,"owner":"payments","environment":"prod"},"action":"deploy","resource":{"id":"k8s://prod-eu/payments","kind":"cluster","owner":"payments"},"intent":{"task":"deploy","id":"run-1"},"environment":{"name":"prod","broker":"ci-oidc-exchange","time":"2026-11-22T10:00:00Z"},"sensitivity":"confidential","requested":{"scope":["deploy:k8s://prod-eu/payments"],"ttl":3600},"context":{"recent_issuances":0}}"#;

/// A static secret with no exception: denied by `identity.workload-auth`.
const FORBID: &str = r#"{"subject":{"id":"spiffe://prod.acme.io/ns/payments/sa/legacy","kind":"service","auth":"static-secret","attested":true,"owner":"payments","environment":"prod"},"action":"read","resource":{"id":"db://payments/orders","kind":"database","owner":"payments"},"intent":{"task":"report","id":"job-7"},"environment":{"name":"prod","broker":"vault","time":"2026-11-22T10:00:00Z"},"sensitivity":"confidential","requested":{"scope":["read:db://payments/orders"],"ttl":900},"context":{"recent_issuances":0}}"#;

/// Reading another team's database: no permit matches.
const DEFAULT_DENY: &str = r#"{"subject":{"id":"spiffe://prod.acme.io/ns/search/sa/indexer","kind":"workload","auth":"spiffe","attested":true,"owner":"search","environment":"prod"},"action":"read","resource":{"id":"db://payments/orders","kind":"database","owner":"payments"},"intent":{"task":"index","id":"job-9"},"environment":{"name":"prod","broker":"vault","time":"2026-11-22T10:00:00Z"},"sensitivity":"internal","requested":{"scope":["read:db://payments/orders"],"ttl":900},"context":{"recent_issuances":0}}"#;

/// An agent invoking its team's tool: allowed by `baseline.agent-tool`
/// with a short TTL and revocation obligations.
const AGENT: &str = r#"{"subject":{"id":"spiffe://prod.acme.io/ns/support/sa/assistant","kind":"agent","auth":"oidc","attested":true,"owner":"support","environment":"prod"},"action":"invoke","resource":{"id":"tool://support/refund-lookup","kind":"tool","owner":"support"},"intent":{"task":"answer-ticket","id":"ticket-4411","objective":"look up a refund","actions":["invoke"]},"environment":{"name":"prod","broker":"agent-gateway","time":"2026-11-22T10:00:00Z"},"sensitivity":"internal","requested":{"scope":["invoke:tool://support/refund-lookup"],"ttl":600},"context":{"recent_issuances":0}}"#;

/// The pack requests, with the decision and first reason each must get.
const PACK_REQUESTS: [(&str, &str, Effect, Option<&str>); 4] = [
    ("allow", ALLOW, Effect::Allow, Some("baseline.owner-change")),
    (
        "forbid_deny",
        FORBID,
        Effect::Deny,
        Some("identity.workload-auth"),
    ),
    ("default_deny", DEFAULT_DENY, Effect::Deny, None),
    ("agent", AGENT, Effect::Allow, Some("baseline.agent-tool")),
];

fn pack_engine() -> Engine {
    Engine::default_pack(None).expect("the default pack compiles")
}

fn generated_engine(text: &str) -> Engine {
    Engine::compile([("gen.writ", text.to_owned())], None).expect("the generated set compiles")
}

fn pack(c: &mut Criterion) {
    let engine = pack_engine();
    let mut group = c.benchmark_group("pack");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (name, json, effect, reason) in PACK_REQUESTS {
        let request = Request::from_json(json).expect("valid request");
        let decision = engine.decide(&request);
        assert_eq!(decision.decision, effect, "{name}: {}", decision.to_json());
        assert_eq!(
            decision.reasons.first().map(String::as_str),
            reason,
            "{name}"
        );
        group.bench_function(name, |b| b.iter(|| engine.decide(black_box(&request))));
    }
    group.finish();
}

fn decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for size in SIZES {
        let set = generate(GenConfig::issuance(size));
        let engine = generated_engine(&set.writ_source());
        let (matching, id) = set
            .matching_request()
            .expect("a request one permit matches");
        let matching = matching.to_request().expect("valid request");
        let non_matching = set
            .non_matching_request()
            .to_request()
            .expect("valid request");
        let allowed = engine.decide(&matching);
        assert!(
            allowed.is_allow() && allowed.reasons == [id],
            "{}",
            allowed.to_json()
        );
        assert!(!engine.decide(&non_matching).is_allow());
        group.bench_with_input(BenchmarkId::new("matching", size), &matching, |b, r| {
            b.iter(|| engine.decide(black_box(r)))
        });
        group.bench_with_input(
            BenchmarkId::new("non_matching", size),
            &non_matching,
            |b, r| b.iter(|| engine.decide(black_box(r))),
        );
    }
    group.finish();
}

/// The flags shape, a shape that does not flatter the tree: every forbid
/// shares the request's environment and resource kind with a tenth of the
/// others and differs from them only in a boolean test.
fn flags(c: &mut Criterion) {
    let mut group = c.benchmark_group("flags");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for size in [10, 1_000, 10_000] {
        let set = generate_flags(GenConfig::issuance(size));
        let engine = generated_engine(&set.writ_source());
        let requests = shape_requests(&set, &engine);
        for (name, request) in &requests {
            let candidates = engine.decide(request).trace.len();
            eprintln!("flags/{name}/{size}: {candidates} trace entries");
            group.bench_with_input(BenchmarkId::new(*name, size), request, |b, r| {
                b.iter(|| engine.decide(black_box(r)))
            });
        }
    }
    group.finish();
}

/// The requests of a generated set that decide as the generator's model
/// says (checked here): one that matches nothing, one that one permit
/// matches, and, when there is one, one that several permits match.
fn shape_requests(set: &GenSet, engine: &Engine) -> Vec<(&'static str, Request)> {
    let none = set
        .non_matching_request()
        .to_request()
        .expect("valid request");
    let denied = engine.decide(&none);
    assert!(
        !denied.is_allow() && denied.reasons.is_empty(),
        "{}",
        denied.to_json()
    );
    let (one, id) = set
        .matching_request()
        .expect("a request one permit matches");
    let one = one.to_request().expect("valid request");
    let allowed = engine.decide(&one);
    assert!(
        allowed.is_allow() && allowed.reasons == [id],
        "{}",
        allowed.to_json()
    );
    let mut requests = vec![("non_matching", none), ("matching_one", one)];
    if let Some((many, count)) = set.many_matching_request() {
        let many = many.to_request().expect("valid request");
        let allowed = engine.decide(&many);
        assert!(
            allowed.is_allow() && allowed.reasons.len() == count,
            "{}",
            allowed.to_json()
        );
        requests.push(("matching_many", many));
    }
    requests
}

/// Every shape of `generate_shape` at 10 and 10,000 rules.
fn shapes(c: &mut Criterion) {
    let mut group = c.benchmark_group("shapes");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for shape in Shape::ALL {
        for size in [10, 10_000] {
            let set = generate_shape(GenConfig::issuance(size), shape);
            let engine = generated_engine(&set.writ_source());
            for (name, request) in shape_requests(&set, &engine) {
                let decision = engine.decide(&request);
                let id = format!("{}/{name}", shape.name());
                eprintln!(
                    "shapes/{id}/{size}: {} trace entries, {} reasons",
                    decision.trace.len(),
                    decision.reasons.len()
                );
                group.bench_with_input(BenchmarkId::new(id, size), &request, |b, r| {
                    b.iter(|| engine.decide(black_box(r)))
                });
            }
        }
    }
    group.finish();
}

fn compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for size in SIZES {
        let text = generate(GenConfig::issuance(size)).writ_source();
        if size >= 1_000 {
            group.sample_size(10);
        }
        group.bench_with_input(BenchmarkId::from_parameter(size), &text, |b, text| {
            b.iter(|| generated_engine(black_box(text)))
        });
    }
    let text = generate_shape(GenConfig::issuance(10_000), Shape::Mixed).writ_source();
    group.bench_with_input(BenchmarkId::new("mixed", 10_000), &text, |b, text| {
        b.iter(|| generated_engine(black_box(text)))
    });
    group.finish();
}

/// The issuance shape at the rule limit, 100,000 rules.
fn compile_large(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile_large");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    // In files of 10,000 rules: a policy file holds at most 4 MiB.
    let set = generate(GenConfig::issuance(100_000));
    let files: Vec<(String, String)> = set
        .rules
        .chunks(10_000)
        .enumerate()
        .map(|(i, rules)| {
            let chunk = GenSet {
                rules: rules.to_vec(),
                ..set.clone()
            };
            (format!("gen{i}.writ"), chunk.writ_source())
        })
        .collect();
    group.bench_with_input(BenchmarkId::from_parameter(100_000), &files, |b, files| {
        b.iter(|| {
            let engine = Engine::compile(black_box(files).iter().cloned(), None)
                .expect("the generated set compiles");
            assert_eq!(engine.policy().rules.len(), 100_000);
            engine
        })
    });
    group.finish();
}

fn end_to_end(c: &mut Criterion) {
    let mut group = c.benchmark_group("end_to_end");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let engine = pack_engine();
    for (name, json) in [("pack_allow", ALLOW), ("pack_default_deny", DEFAULT_DENY)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let decision = engine.decide_json(black_box(json)).expect("valid request");
                decision.to_json()
            })
        });
    }
    let set = generate(GenConfig::issuance(1_000));
    let engine = generated_engine(&set.writ_source());
    let (matching, _) = set
        .matching_request()
        .expect("a request one permit matches");
    let json = matching.to_writ_json();
    group.bench_function("generated_1000_matching", |b| {
        b.iter(|| {
            let decision = engine.decide_json(black_box(&json)).expect("valid request");
            decision.to_json()
        })
    });
    group.finish();
}

/// Issue 18's yardstick: deciding the example request on the default pack
/// against parsing the same request text into a `serde_json::Value`.
fn versus_parse(c: &mut Criterion) {
    const CI_DEPLOY: &str = include_str!("../examples/ci-deploy.json");
    let mut group = c.benchmark_group("versus_parse");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let engine = pack_engine();
    let request = Request::from_json(CI_DEPLOY).expect("valid request");
    assert!(engine.decide(&request).is_allow());
    group.bench_function("json_value", |b| {
        b.iter(|| serde_json::from_str::<serde_json::Value>(black_box(CI_DEPLOY)))
    });
    group.bench_function("decide", |b| b.iter(|| engine.decide(black_box(&request))));
    group.bench_function("decide_to_json", |b| {
        b.iter(|| engine.decide(black_box(&request)).to_json())
    });
    // What `writ eval` and `POST /v1/decide` do with the text: read it
    // (duplicate keys and depth refused), validate and decide.
    group.bench_function("read_decide", |b| {
        b.iter(|| engine.decide_json(black_box(CI_DEPLOY)))
    });
    group.bench_function("read", |b| {
        b.iter(|| Request::parse_json(black_box(CI_DEPLOY)))
    });
    group.finish();
}

criterion_group!(
    benches,
    pack,
    decide,
    flags,
    shapes,
    compile,
    compile_large,
    end_to_end,
    versus_parse
);
criterion_main!(benches);
