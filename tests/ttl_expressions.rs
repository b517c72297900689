//! Properties of computed TTL caps (`limit ttl until ...`, `min(...)`,
//! caps read from the request or the data), on generated policies and
//! requests: adding a computed cap to a policy never widens what it
//! grants, lowers the TTL to exactly the smaller of the two, denies when
//! that is under one second or the cap cannot be computed, and decides the
//! same on the tree, on the naive walk and on every run.

mod common;

use std::sync::Arc;

use common::server::{Server, TempDir};
use proptest::prelude::*;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use writ::decision::{Decision, Effect};
use writ::{Engine, Request};

/// The decision time every generated request carries.
const NOW: &str = "2026-12-01T10:00:00Z";

/// A computed cap, and how to work out what it should be.
#[derive(Debug, Clone)]
enum Computed {
    /// `until context.exception.expires`
    Until,
    /// `min(Ns, until context.exception.expires)`
    MinUntil(u64),
    /// `caps[subject.kind]`, from the data.
    Data,
    /// `1s * context.n`, a number from the request.
    Scaled,
}

impl Computed {
    fn text(&self) -> String {
        match self {
            Computed::Until => "until context.exception.expires".to_owned(),
            Computed::MinUntil(seconds) => {
                format!("min({seconds}s, until context.exception.expires)")
            }
            Computed::Data => "caps[subject.kind]".to_owned(),
            Computed::Scaled => "1s * context.n".to_owned(),
        }
    }
}

/// What the request says the computed cap reads.
#[derive(Debug, Clone)]
enum Expiry {
    /// This many milliseconds after the decision time (before, when
    /// negative).
    After(i64),
    /// A string that is not a timestamp.
    Garbage,
}

/// One generated case.
#[derive(Debug, Clone)]
struct Case {
    /// The permit's `for`, in seconds.
    permit_for: Option<u64>,
    /// Constant `limit ttl` caps, each for one subject kind.
    limits: Vec<(u64, &'static str)>,
    computed: Computed,
    kind: &'static str,
    expiry: Expiry,
    /// `context.n`, for [`Computed::Scaled`]: may be negative or fractional.
    n: f64,
    requested_ttl: Option<u64>,
}

const KINDS: &[&str] = &["ci", "agent", "service", "batch"];

/// The data: a cap a kind, except `batch`, which it does not list, and
/// `service`, whose cap is not a duration.
fn data() -> Value {
    json!({"caps": {"ci": 600, "agent": "2m", "service": -30}})
}

fn case_strategy() -> impl Strategy<Value = Case> {
    let limit = (1u64..4000, prop::sample::select(KINDS));
    let computed = prop_oneof![
        Just(Computed::Until),
        (1u64..4000).prop_map(Computed::MinUntil),
        Just(Computed::Data),
        Just(Computed::Scaled),
    ];
    let expiry = prop_oneof![
        8 => (-5_000_000i64..5_000_000).prop_map(Expiry::After),
        1 => Just(Expiry::Garbage),
    ];
    let n = prop_oneof![(0u32..5000).prop_map(f64::from), -10.0f64..5000.0];
    (
        prop::option::of(1u64..8000),
        prop::collection::vec(limit, 0..3),
        computed,
        prop::sample::select(KINDS),
        expiry,
        n,
        prop::option::of(1u64..8000),
    )
        .prop_map(
            |(permit_for, limits, computed, kind, expiry, n, requested_ttl)| Case {
                permit_for,
                limits,
                computed,
                kind,
                expiry,
                n,
                requested_ttl,
            },
        )
}

/// The policy text, with or without the computed cap.
fn policy(case: &Case, with_computed: bool) -> String {
    let mut text = String::from("@id(\"read\") permit if action == \"read\" grant [\"read:x\"]");
    if let Some(seconds) = case.permit_for {
        text.push_str(&format!(" for {seconds}s"));
    }
    text.push_str(";\n");
    for (i, (seconds, kind)) in case.limits.iter().enumerate() {
        text.push_str(&format!(
            "@id(\"limit{i}\") limit ttl {seconds}s if subject.kind == \"{kind}\";\n"
        ));
    }
    if with_computed {
        text.push_str(&format!(
            "@id(\"computed\") limit ttl {} if context has exception;\n",
            case.computed.text()
        ));
    }
    text
}

fn now() -> OffsetDateTime {
    OffsetDateTime::parse(NOW, &Rfc3339).expect("the decision time parses")
}

fn request(case: &Case) -> Value {
    let expires = match case.expiry {
        Expiry::After(ms) => (now() + time::Duration::milliseconds(ms))
            .format(&Rfc3339)
            .expect("formats"),
        Expiry::Garbage => "in a while".to_owned(),
    };
    let mut request = json!({
        "subject": {"kind": case.kind},
        "action": "read",
        "environment": {"time": NOW},
        "context": {"exception": {"expires": expires}, "n": case.n},
    });
    if let Some(ttl) = case.requested_ttl {
        request["requested"] = json!({"ttl": ttl});
    }
    request
}

/// What the computed cap works out to, worked out here without the
/// engine; `None` when it cannot be computed.
fn expected_cap(case: &Case) -> Option<u64> {
    let until = || match case.expiry {
        Expiry::After(ms) => Some(u64::try_from(ms.max(0) / 1000).unwrap_or(0)),
        Expiry::Garbage => None,
    };
    match &case.computed {
        Computed::Until => until(),
        Computed::MinUntil(seconds) => until().map(|left| left.min(*seconds)),
        Computed::Data => match case.kind {
            "ci" => Some(600),
            "agent" => Some(120),
            _ => None,
        },
        Computed::Scaled => (case.n >= 0.0 && case.n.is_finite()).then(|| case.n.floor() as u64),
    }
}

fn compile(text: &str) -> Engine {
    let data = data();
    Engine::compile([("t.writ", text)], Some(&data))
        .unwrap_or_else(|d| panic!("the generated policy compiles:\n{text}\n{d}"))
}

fn decide(engine: &Engine, request: &Value) -> Decision {
    let request = Request::from_json(&request.to_string()).expect("the request is valid");
    let decision = engine.decide(&request);
    let naive = engine.decide_naive(&request);
    assert_eq!(decision.decision, naive.decision);
    assert_eq!(decision.ttl, naive.ttl);
    assert_eq!(decision.scope, naive.scope);
    assert_eq!(decision.reasons, naive.reasons);
    let again = engine.decide(&request);
    assert_eq!(
        serde_json::to_string(&decision).expect("serialises"),
        serde_json::to_string(&again).expect("serialises"),
        "the same request decides the same, byte for byte"
    );
    decision
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_computed_cap_only_ever_lowers_the_ttl(case in case_strategy()) {
        let without = decide(&compile(&policy(&case, false)), &request(&case));
        let with = decide(&compile(&policy(&case, true)), &request(&case));
        // The policy without the cap always allows: one permit, no forbid,
        // caps of at least a second.
        prop_assert_eq!(without.decision, Effect::Allow);
        match expected_cap(&case) {
            Some(cap) if cap.min(without.ttl) >= 1 => {
                prop_assert_eq!(with.decision, Effect::Allow, "{:?}", with);
                prop_assert_eq!(with.ttl, cap.min(without.ttl));
                prop_assert!(with.ttl <= without.ttl);
                prop_assert_eq!(&with.scope, &without.scope);
                prop_assert!(with.errors.is_empty(), "{:?}", with.errors);
            }
            Some(_) => {
                prop_assert_eq!(with.decision, Effect::Deny);
                prop_assert_eq!(with.ttl, 0);
                prop_assert_eq!(&with.reasons, &["computed".to_owned()]);
                prop_assert!(with.errors.iter().all(|e| e.rule == "computed"));
            }
            None => {
                // Not computable: capped at zero, denied, the error named.
                prop_assert_eq!(with.decision, Effect::Deny);
                prop_assert_eq!(with.ttl, 0);
                prop_assert_eq!(&with.reasons, &["computed".to_owned()]);
                prop_assert_eq!(with.errors.len(), 1, "{:?}", with.errors);
                prop_assert_eq!(&with.errors[0].rule, "computed");
                let entry = with.trace.iter().find(|e| e.rule.as_str() == "computed");
                prop_assert!(entry.is_some_and(|e| e.error.is_some()));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The real binary: `writ eval` on the fixture policy that tries pack v2's
// `exception.static-secret` (tests/core/policies/ttl_until.writ).

/// Runs `writ eval` from the crate's root on the fixture policy, with
/// `request` on stdin and `extra` arguments; returns the exit code and
/// stdout.
fn writ_eval(request: &Value, extra: &[&str]) -> (Option<i32>, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_writ"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "eval",
            "--policy",
            "tests/core/policies/ttl_until.writ",
            "--request",
            "-",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs writ");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.to_string().as_bytes())
        .expect("writes the request");
    let output = child.wait_with_output().expect("writ finishes");
    (
        output.status.code(),
        String::from_utf8(output.stdout).expect("utf-8"),
    )
}

fn legacy_request(expires: &str) -> Value {
    json!({
        "subject": {"id": "svc-legacy", "kind": "service", "auth": "static-secret", "owner": "team-billing"},
        "action": "read",
        "resource": {"id": "db://billing/invoices", "kind": "database", "owner": "team-billing"},
        "sensitivity": "internal",
        "environment": {"time": NOW},
        "context": {"exception": {"id": "EX-42", "owner": "team-billing", "ticket": "MIG-7", "expires": expires}},
    })
}

#[test]
fn the_binary_caps_at_the_time_the_exception_has_left_and_explains_it() {
    let (code, out) = writ_eval(&legacy_request("2026-12-01T10:05:12Z"), &[]);
    assert_eq!(code, Some(0), "{out}");
    let decision: Value = serde_json::from_str(&out).expect("a decision");
    assert_eq!(decision["decision"], "allow");
    assert_eq!(decision["ttl"], 312);
    let entry = decision["trace"]
        .as_array()
        .and_then(|t| t.iter().find(|e| e["rule"] == "exception.static-secret"))
        .expect("the limit is in the trace");
    assert_eq!(
        entry["effect"],
        json!([
            "computed cap 312 = min(900, until 2026-12-01T10:05:12Z)",
            "set ttl 312"
        ])
    );
    let (code, explained) = writ_eval(&legacy_request("2026-12-01T10:05:12Z"), &["--explain"]);
    assert_eq!(code, Some(0));
    insta::assert_snapshot!("computed_cap_explain", explained);
}

#[test]
fn the_binary_denies_when_the_cap_cannot_be_computed() {
    // Half a second left: past the forbid (the exception has not expired),
    // but under one second of TTL.
    let (code, out) = writ_eval(&legacy_request("2026-12-01T10:00:00.500Z"), &[]);
    assert_eq!(code, Some(1), "{out}");
    let decision: Value = serde_json::from_str(&out).expect("a decision");
    assert_eq!(decision["decision"], "deny");
    assert_eq!(decision["reasons"], json!(["exception.static-secret"]));
    let (code, explained) = writ_eval(&legacy_request("2026-12-01T10:00:00.500Z"), &["--explain"]);
    assert_eq!(code, Some(1));
    insta::assert_snapshot!("computed_cap_zero_explain", explained);
}

#[test]
fn the_server_counts_down_from_the_time_it_fills_in() {
    // No `environment.time`: `writ serve` fills it in from its clock, and
    // the cap counts down from there (the one place a clock is read, and
    // it is read into the request before deciding).
    let dir = Arc::new(TempDir::new("ttl-until"));
    let server = Server::start(&["--policy", "tests/core/policies/ttl_until.writ"], &dir);
    let in_five_minutes = (OffsetDateTime::now_utc() + time::Duration::seconds(300))
        .format(&Rfc3339)
        .expect("formats");
    let mut request = legacy_request(&in_five_minutes);
    request["environment"] = json!({});
    let reply = server.post("/v1/decide", &request.to_string());
    assert_eq!(reply.status, 200, "{reply:?}");
    let decision = reply.json();
    assert_eq!(decision["decision"], "allow", "{decision}");
    let ttl = decision["ttl"].as_u64().expect("a ttl");
    assert!((240..=300).contains(&ttl), "ttl {ttl}");
    // An exception that expired a second ago: denied by the forbid.
    let a_second_ago = (OffsetDateTime::now_utc() - time::Duration::seconds(1))
        .format(&Rfc3339)
        .expect("formats");
    let mut request = legacy_request(&a_second_ago);
    request["environment"] = json!({});
    let decision = server.post("/v1/decide", &request.to_string()).json();
    assert_eq!(decision["decision"], "deny", "{decision}");
    assert_eq!(decision["reasons"], json!(["identity.workload-auth"]));
}
