//! Semantic 7: the same policies and request give the same decision, byte
//! for byte, trace included: twice on one engine, on two engines compiled
//! separately, from several threads, and (trace aside) with or without the
//! decision tree.

use std::path::{Path, PathBuf};

use serde_json::Value;
use writ::{Decision, Engine, Request};

const POLICY: &str = r#"
const trusted_brokers = ["vault", "sts-broker"];

@id("d.broker")
forbid if environment.broker not in trusted_brokers
  because "`{environment.broker}` is not a trusted broker";

@id("d.shared")
forbid if subject has shared and subject.shared == true;

@id("d.freeze")
forbid if action == "write" and context.freeze.active == true;

@id("d.owner-read")
permit if action == "read" and subject.owner == resource.owner
  grant ["read:{resource.id}/**"] for 1h revoke on task_end;

@id("d.owner-write")
permit if action == "write" and subject.owner == resource.owner
  grant ["write:{resource.id}/**", "read:{resource.id}/**"] for 15m
  audience "{resource.id}";

@id("d.catalogue")
permit if action == "read" and resource.kind == "catalogue"
  grant ["read:catalogue/**"];

@id("d.agent-ttl")
limit ttl 10m if subject.kind == "agent";

@id("d.agent-scope")
limit scope ["read:db://payments/orders/**"] if subject.kind == "agent";

@id("d.prod-approval")
require approval if environment.name == "prod" and not context has approval;

@id("d.log")
require log if sensitivity >= restricted;
"#;

const DATA: &str = r#"{"trusted_brokers": ["vault", "sts-broker", "ci-oidc"]}"#;

/// Named requests: allow, forbid, default deny, fail-closed error, and a
/// few more shapes (narrowed scope, several obligations, rejected input).
const REQUESTS: &[(&str, &str)] = &[
    (
        "allow",
        r#"{"subject": {"id": "spiffe://acme.io/a", "kind": "service", "owner": "pay"},
            "action": "read", "resource": {"id": "db://payments", "kind": "database", "owner": "pay"},
            "environment": {"name": "prod", "broker": "vault", "time": "2026-11-22T10:00:00Z"},
            "sensitivity": "restricted",
            "requested": {"scope": ["read:db://payments/orders/1", "read:db://payments/ledger"], "ttl": 900}}"#,
    ),
    (
        "allow-agent-narrowed",
        r#"{"subject": {"id": "spiffe://acme.io/agent", "kind": "agent", "owner": "pay"},
            "action": "read", "resource": {"id": "db://payments", "kind": "database", "owner": "pay"},
            "environment": {"name": "dev", "broker": "ci-oidc"},
            "requested": {"scope": ["read:db://payments/orders/1", "read:db://payments/ledger/2"]},
            "context": {"approval": {"by": "oncall"}}}"#,
    ),
    (
        "allow-write-two-permits-nothing-requested",
        r#"{"subject": {"kind": "service", "owner": "pay"}, "action": "write",
            "resource": {"id": "db://payments", "kind": "database", "owner": "pay"},
            "environment": {"name": "prod", "broker": "sts-broker"}, "sensitivity": "internal",
            "context": {"freeze": {"active": false}}}"#,
    ),
    (
        "forbid",
        r#"{"subject": {"kind": "service", "owner": "pay", "shared": true}, "action": "read",
            "resource": {"id": "db://payments", "kind": "database", "owner": "pay"},
            "environment": {"name": "prod", "broker": "vault"}}"#,
    ),
    (
        "default-deny",
        r#"{"subject": {"kind": "service", "owner": "search"}, "action": "read",
            "resource": {"id": "db://payments", "kind": "database", "owner": "pay"},
            "environment": {"name": "prod", "broker": "vault"}, "sensitivity": "internal",
            "requested": {"scope": ["read:db://payments/orders/1"]}}"#,
    ),
    (
        "error-forbid-fails-closed",
        r#"{"subject": {"kind": "service", "owner": "pay"}, "action": "write",
            "resource": {"id": "db://payments", "kind": "database", "owner": "pay"},
            "environment": {"name": "prod", "broker": "vault"}}"#,
    ),
    (
        "error-missing-broker",
        r#"{"subject": {"kind": "service", "owner": "pay"}, "action": "read",
            "resource": {"id": "db://payments", "kind": "catalogue", "owner": "pay"}}"#,
    ),
    (
        "error-permit-does-not-match",
        r#"{"subject": {"kind": "service"}, "action": "read",
            "resource": {"id": "db://payments", "kind": "database"},
            "environment": {"name": "dev", "broker": "vault"}}"#,
    ),
];

fn data() -> Value {
    serde_json::from_str(DATA).expect("the data is JSON")
}

fn engine() -> Engine {
    Engine::compile([("determinism.writ", POLICY)], Some(&data()))
        .unwrap_or_else(|d| panic!("the policy does not compile:\n{}", d.render(false)))
}

fn request(name: &str, text: &str) -> Request {
    Request::from_json(text).unwrap_or_else(|e| panic!("request `{name}` is invalid: {e}"))
}

/// The decision's JSON without its trace (the tree visits fewer rules than
/// the rule-by-rule evaluation, so traces differ in what they list).
fn without_trace(decision: &Decision) -> String {
    let mut copy = decision.clone();
    copy.trace.clear();
    copy.to_json()
}

#[test]
fn the_requests_cover_allow_forbid_default_deny_and_error() {
    let engine = engine();
    let decide = |name: &str| {
        let (_, text) = REQUESTS
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no request `{name}`"));
        engine.decide(&request(name, text))
    };
    let allow = decide("allow");
    assert!(allow.is_allow());
    assert_eq!(
        allow.scope,
        ["read:db://payments/orders/1", "read:db://payments/ledger"]
    );
    assert_eq!(allow.ttl, 900);
    let forbid = decide("forbid");
    assert!(!forbid.is_allow());
    assert_eq!(forbid.reasons, ["d.shared"]);
    let default = decide("default-deny");
    assert!(!default.is_allow());
    assert!(default.reasons.is_empty());
    assert!(default.errors.is_empty(), "{:?}", default.errors);
    let error = decide("error-forbid-fails-closed");
    assert!(!error.is_allow());
    assert!(error.errors.iter().any(|e| e.rule == "d.freeze"));
    let missing = decide("error-missing-broker");
    assert!(!missing.is_allow());
    assert!(missing.errors.iter().any(|e| e.rule == "d.broker"));
    let permit_error = decide("error-permit-does-not-match");
    assert!(!permit_error.is_allow());
    assert!(permit_error.errors.iter().any(|e| e.rule == "d.owner-read"));
}

#[test]
fn one_engine_decides_the_same_bytes_twice() {
    let engine = engine();
    for (name, text) in REQUESTS {
        let request = request(name, text);
        let first = engine.decide(&request).to_json();
        let second = engine.decide(&request).to_json();
        assert_eq!(
            first, second,
            "`{name}` decided differently on a second call"
        );
        let pretty_first = engine.decide(&request).to_json_pretty();
        let pretty_second = engine.decide(&request).to_json_pretty();
        assert_eq!(pretty_first, pretty_second, "`{name}`");
    }
}

#[test]
fn separately_compiled_engines_decide_the_same_bytes() {
    let a = engine();
    let b = engine();
    assert_eq!(a.digest(), b.digest());
    for (name, text) in REQUESTS {
        // Parse the request separately too.
        let from_a = a.decide(&request(name, text)).to_json();
        let from_b = b.decide(&request(name, text)).to_json();
        assert_eq!(
            from_a, from_b,
            "`{name}` decided differently by two engines"
        );
        let via_json = b
            .decide_json(text)
            .unwrap_or_else(|e| panic!("`{name}`: {e}"))
            .to_json();
        assert_eq!(
            from_a, via_json,
            "`{name}` decided differently via decide_json"
        );
    }
}

#[test]
fn the_tree_and_the_rule_by_rule_evaluation_agree() {
    let engine = engine();
    for (name, text) in REQUESTS {
        let request = request(name, text);
        let tree = engine.decide(&request);
        let naive = engine.decide_naive(&request);
        assert_eq!(
            without_trace(&tree),
            without_trace(&naive),
            "`{name}`: tree and naive evaluation disagree"
        );
        // The naive evaluation is deterministic too, trace included.
        assert_eq!(naive.to_json(), engine.decide_naive(&request).to_json());
    }
}

#[test]
fn threads_decide_the_same_bytes() {
    let engine = engine();
    let expected: Vec<String> = REQUESTS
        .iter()
        .map(|(name, text)| engine.decide(&request(name, text)).to_json())
        .collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    REQUESTS
                        .iter()
                        .rev()
                        .map(|(name, text)| engine.decide(&request(name, text)).to_json())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for handle in handles {
            let mut got = handle.join().expect("a deciding thread panicked");
            got.reverse();
            assert_eq!(got, expected);
        }
    });
}

#[test]
fn a_rejected_request_is_denied_the_same_way_every_time() {
    let a = engine();
    let b = engine();
    let bad = r#"{"requested": {"scope": ["read:db://payments/../ledger"]}}"#;
    assert!(a.decide_json(bad).is_err());
    let error = Request::from_json(bad).expect_err("the request is rejected");
    let first = Decision::rejected(error.to_string(), a.digest()).to_json();
    let error = Request::from_json(bad).expect_err("the request is rejected");
    let second = Decision::rejected(error.to_string(), b.digest()).to_json();
    assert_eq!(first, second);
}

/// Every request of the `tests/core` corpus that parses, decided by two
/// engines and by the rule-by-rule evaluation.
#[test]
fn the_core_corpus_is_deterministic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = writ::fixture::discover(&[root.join("tests/core")]).expect("walks tests/core");
    assert!(!files.is_empty(), "no fixture files in tests/core");
    let mut decided = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable fixture");
        let fixture: writ::fixture::FixtureFile =
            serde_json::from_str(&text).expect("a valid fixture file");
        let base: PathBuf = file.parent().expect("a parent directory").to_path_buf();
        let compile = || {
            let sources = writ::load::load_policies(&fixture.policies, &base)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            Engine::compile(sources, fixture.data.as_ref())
                .unwrap_or_else(|d| panic!("{}:\n{}", file.display(), d.render(false)))
        };
        let (a, b) = (compile(), compile());
        for case in &fixture.cases {
            let Ok(request) = Request::from_json(&case.request.to_string()) else {
                continue;
            };
            let first = a.decide(&request);
            let name = format!("{}: {}", file.display(), case.name);
            assert_eq!(first.to_json(), a.decide(&request).to_json(), "{name}");
            assert_eq!(first.to_json(), b.decide(&request).to_json(), "{name}");
            assert_eq!(
                without_trace(&first),
                without_trace(&a.decide_naive(&request)),
                "{name}: tree and naive evaluation disagree"
            );
            decided += 1;
        }
    }
    assert!(decided >= 40, "only {decided} corpus requests were decided");
}
