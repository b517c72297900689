//! The default pack through the real `writ` binary: the worked examples of
//! default-pack.md decided with no `--policy`, `--data` overriding the
//! pack's tunables, `writ pack show`, org rules layered over the pack, and
//! `writ test tests/pack --coverage`. The library half checks what fixture
//! files cannot express (obligation events) and that the decision tree and
//! the naive evaluator agree on every fixture request.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use common::server::{Server, TempDir};
use serde_json::{json, Value};

/// Every rule id default-pack.md names (version 1 and version 2), in the
/// pack's file order.
const CONTRACT_IDS: [&str; 34] = [
    "identity.workload-auth",
    "exception.static-secret",
    "identity.attested",
    "identity.shared",
    "identity.owner",
    "identity.human",
    "issuance.trusted-broker",
    "env.isolation",
    "identity.state",
    "delegation.depth",
    "intent.required",
    "intent.plan",
    "intent.objective-changed",
    "rate.unknown",
    "rate.repeat",
    "risk.high",
    "scope.explicit",
    "scope.no-wildcard-privileged",
    "ttl.ceiling",
    "ttl.confidential",
    "ttl.restricted",
    "ttl.agent",
    "ttl.agent-restricted",
    "approval.prod-restricted",
    "approval.agent-privileged",
    "risk.elevated",
    "lifecycle.revoke-on-task-end",
    "lifecycle.revoke-on-objective-change",
    "lifecycle.revoke-on-state-change",
    "lifecycle.revoke-on-risk-change",
    "lifecycle.audience",
    "baseline.owner-read",
    "baseline.owner-change",
    "baseline.agent-tool",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `writ ARGS` from the crate root.
fn writ(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_writ"))
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .output()
        .expect("the writ binary runs")
}

/// `writ eval ARGS`: the exit code and the decision JSON.
fn eval(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["eval"];
    all.extend_from_slice(args);
    let out = writ(&all);
    let code = out.status.code().expect("writ exited with a code");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let decision = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "writ {all:?} printed no decision ({e}); exit {code}\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, decision)
}

/// A scratch directory for this test, emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("writ-pack-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn write_json(dir: &Path, name: &str, value: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(value).expect("json")).expect("write");
    path.to_string_lossy().into_owned()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn worked_1() -> Value {
    read_json(&root().join("examples/worked-1-ci-deploy.json"))
}

/// The obligations of the first worked example (version 2): the three
/// revocation events and the audience, in the pack's order.
fn worked_1_obligations() -> Value {
    json!([
        {"kind": "revoke_on", "event": "task_end", "rule": "lifecycle.revoke-on-task-end"},
        {"kind": "revoke_on", "event": "state_change", "rule": "lifecycle.revoke-on-state-change"},
        {"kind": "revoke_on", "event": "risk_change", "rule": "lifecycle.revoke-on-risk-change"},
        {"kind": "audience", "value": "k8s://prod-eu/payments", "rule": "lifecycle.audience"}
    ])
}

fn reasons(decision: &Value) -> Vec<&str> {
    decision["reasons"]
        .as_array()
        .expect("reasons is a list")
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

#[test]
fn worked_example_1_ci_deploy_is_allowed_for_900_seconds() {
    let (code, d) = eval(&["--request", "examples/worked-1-ci-deploy.json"]);
    assert_eq!(code, 0, "allow exits 0: {d}");
    assert_eq!(d["decision"], "allow");
    assert_eq!(d["scope"], json!(["deploy:k8s://prod-eu/payments"]));
    assert_eq!(d["ttl"], 900);
    assert_eq!(d["obligations"], json!(worked_1_obligations()));
    assert_eq!(d["reasons"], json!(["baseline.owner-change"]));
    assert_eq!(d["dropped_scope"], json!([]));
    assert_eq!(d["errors"], json!([]));
    // The 900 s comes from the permit's 15 minutes, after the confidential cap.
    let permit = d["trace"]
        .as_array()
        .expect("trace")
        .iter()
        .find(|e| e["rule"] == "baseline.owner-change")
        .expect("the permit is in the trace");
    assert_eq!(permit["outcome"], "matched");
    assert!(
        permit["effect"]
            .as_array()
            .expect("effect")
            .iter()
            .any(|e| e == "capped ttl 1800 -> 900"),
        "{permit}"
    );
}

#[test]
fn worked_example_2_static_secret_is_denied_by_workload_auth() {
    let (code, d) = eval(&["--request", "examples/worked-2-static-secret.json"]);
    assert_eq!(code, 1, "deny exits 1: {d}");
    assert_eq!(d["decision"], "deny");
    assert_eq!(d["reasons"], json!(["identity.workload-auth"]));
    assert_eq!(d["scope"], json!([]));
    assert_eq!(d["ttl"], 0);
    assert_eq!(d["obligations"], json!([]));
    let forbid = d["trace"]
        .as_array()
        .expect("trace")
        .iter()
        .find(|e| e["rule"] == "identity.workload-auth")
        .expect("the forbid is in the trace");
    assert_eq!(forbid["outcome"], "matched");
    assert_eq!(
        forbid["because"],
        "`static-secret` is knowledge of a secret, not a workload identity"
    );
}

#[test]
fn worked_example_3_restricted_needs_approval_a_legacy_object_does_not_give() {
    let approval = json!({"kind": "approval", "rule": "approval.prod-restricted"});
    let mut expected = vec![approval];
    expected.extend(
        worked_1_obligations()
            .as_array()
            .expect("list")
            .iter()
            .cloned(),
    );
    for file in [
        "examples/worked-3-restricted.json",
        // Version 2: a broker's `{"by": ..., "ticket": ...}` is not an
        // approval writ verified, so the step stays.
        "examples/worked-3-restricted-legacy-approval.json",
    ] {
        let (code, d) = eval(&["--request", file]);
        assert_eq!(code, 0, "{file}: {d}");
        assert_eq!(d["decision"], "allow", "{file}");
        assert_eq!(
            d["scope"],
            json!(["deploy:k8s://prod-eu/payments"]),
            "{file}"
        );
        assert_eq!(d["ttl"], 900, "{file}");
        assert_eq!(d["obligations"], json!(expected), "{file}");
    }
}

/// default-pack.md, "Version 2", worked examples: the first worked example
/// without its issuance count (and no ledger), quarantined, with a risk
/// score of 50, and on restricted data with `approval: "yes"`.
#[test]
fn worked_examples_of_version_2() {
    // Without `context.recent_issuances` and without a ledger: rate.unknown.
    let (code, d) = eval(&["--request", "examples/worked-4-no-count.json"]);
    assert_eq!(code, 1, "{d}");
    assert_eq!(d["reasons"], json!(["rate.unknown"]));
    assert_eq!(d["ttl"], 0);
    assert_eq!(d["obligations"], json!([]));
    let worked = worked_1();
    let mut no_count = worked.clone();
    no_count
        .as_object_mut()
        .expect("an object")
        .remove("context");
    assert_eq!(
        read_json(&root().join("examples/worked-4-no-count.json")),
        no_count
    );

    // A quarantined workload: identity.state.
    let (code, d) = eval(&["--request", "examples/worked-5-quarantined.json"]);
    assert_eq!(code, 1, "{d}");
    assert_eq!(d["reasons"], json!(["identity.state"]));
    let forbid = d["trace"]
        .as_array()
        .expect("trace")
        .iter()
        .find(|e| e["rule"] == "identity.state")
        .expect("identity.state in the trace");
    assert_eq!(forbid["because"], "the workload is `quarantined`");

    // Risk score 50: allowed, with the approval step of risk.elevated.
    let (code, d) = eval(&["--request", "examples/worked-6-risk-50.json"]);
    assert_eq!(code, 0, "{d}");
    assert_eq!(d["decision"], "allow");
    assert_eq!(d["ttl"], 900);
    assert_eq!(d["scope"], json!(["deploy:k8s://prod-eu/payments"]));
    let mut expected = vec![json!({"kind": "approval", "rule": "risk.elevated"})];
    expected.extend(
        worked_1_obligations()
            .as_array()
            .expect("list")
            .iter()
            .cloned(),
    );
    assert_eq!(d["obligations"], json!(expected));

    // Restricted, with `approval: "yes"`: the approval step stays.
    let (code, d) = eval(&["--request", "examples/worked-7-approval-yes.json"]);
    assert_eq!(code, 0, "{d}");
    assert_eq!(d["ttl"], 900);
    assert_eq!(
        d["obligations"][0],
        json!({"kind": "approval", "rule": "approval.prod-restricted"})
    );
    let request = read_json(&root().join("examples/worked-7-approval-yes.json"));
    assert_eq!(request["context"]["approval"], "yes");
    assert_eq!(request["sensitivity"], "restricted");
}

/// The v2 examples differ from the first worked example only where
/// default-pack.md says.
#[test]
fn version_2_examples_are_the_first_worked_example_changed() {
    let worked = worked_1();
    assert_eq!(worked["subject"]["environment"], "prod");
    assert_eq!(worked["context"], json!({"recent_issuances": 0}));
    let mut quarantined = worked.clone();
    quarantined["subject"]["state"] = json!("quarantined");
    assert_eq!(
        read_json(&root().join("examples/worked-5-quarantined.json")),
        quarantined
    );
    let mut risky = worked.clone();
    risky["context"]["risk_score"] = json!(50);
    assert_eq!(
        read_json(&root().join("examples/worked-6-risk-50.json")),
        risky
    );
    let mut yes = worked;
    yes["sensitivity"] = json!("restricted");
    yes["context"]["approval"] = json!("yes");
    assert_eq!(
        read_json(&root().join("examples/worked-7-approval-yes.json")),
        yes
    );
}

#[test]
fn no_policy_means_the_embedded_pack() {
    let (_, implicit) = eval(&["--request", "examples/worked-1-ci-deploy.json"]);
    let (_, explicit) = eval(&[
        "--policy",
        "default",
        "--request",
        "examples/worked-1-ci-deploy.json",
    ]);
    let (_, from_disk) = eval(&[
        "--policy",
        "policies/default",
        "--request",
        "examples/worked-1-ci-deploy.json",
    ]);
    assert_eq!(implicit["policy"], explicit["policy"]);
    let digest = implicit["policy"]["digest"].as_str().expect("digest");
    assert!(digest.starts_with("sha256:"), "{digest}");
    // The files on disk decide the same way as the embedded copy.
    for field in ["decision", "scope", "ttl", "obligations", "reasons"] {
        assert_eq!(implicit[field], from_disk[field], "{field}");
    }
}

#[test]
fn worked_example_files_are_the_fixture_requests() {
    let fixture = read_json(&root().join("tests/pack/worked-examples.json"));
    let cases = fixture["cases"].as_array().expect("cases");
    let files = [
        "worked-1-ci-deploy.json",
        "worked-2-static-secret.json",
        "worked-3-restricted.json",
        "worked-3-restricted-legacy-approval.json",
        "worked-4-no-count.json",
        "worked-5-quarantined.json",
        "worked-6-risk-50.json",
        "worked-7-approval-yes.json",
    ];
    assert_eq!(cases.len(), files.len());
    for (case, file) in cases.iter().zip(files) {
        let example = read_json(&root().join("examples").join(file));
        assert_eq!(case["request"], example, "{file} and `{}`", case["name"]);
    }
    // The original example is the first worked example.
    assert_eq!(
        read_json(&root().join("examples/ci-deploy.json")),
        worked_1()
    );
}

#[test]
fn data_overrides_trusted_brokers_and_max_recent_issuances() {
    let dir = scratch("data");
    let data = write_json(
        &dir,
        "data.json",
        &json!({"trusted_brokers": ["my-broker"], "max_recent_issuances": 2, "repeat_window": "10m"}),
    );
    let worked = write_json(&dir, "worked.json", &worked_1());
    let mut own = worked_1();
    own["environment"]["broker"] = json!("my-broker");
    own["context"] = json!({"recent_issuances": 3});
    let own_three = write_json(&dir, "own-3.json", &own);
    own["context"] = json!({"recent_issuances": 2});
    let own_two = write_json(&dir, "own-2.json", &own);

    // ci-oidc-exchange: trusted by the pack, not by the data.
    let (code, d) = eval(&["--request", &worked]);
    assert_eq!((code, d["decision"].as_str()), (0, Some("allow")));
    let (code, d) = eval(&["--data", &data, "--request", &worked]);
    assert_eq!((code, d["decision"].as_str()), (1, Some("deny")));
    assert_eq!(reasons(&d), ["issuance.trusted-broker"]);

    // my-broker with 3 recent issuances: the pack refuses the broker; the
    // data trusts the broker but allows only 2 issuances.
    let (code, d) = eval(&["--request", &own_three]);
    assert_eq!(code, 1);
    assert_eq!(reasons(&d), ["issuance.trusted-broker"]);
    let (code, d) = eval(&["--data", &data, "--request", &own_three]);
    assert_eq!(code, 1);
    assert_eq!(reasons(&d), ["rate.repeat"]);
    assert_eq!(
        d["trace"]
            .as_array()
            .expect("trace")
            .iter()
            .find(|e| e["rule"] == "rate.repeat")
            .expect("rate.repeat in the trace")["because"],
        "3 issuances in the last 600 s; the limit is 2"
    );

    // my-broker with 2: allowed under the data, as the pack allows ci-oidc-exchange.
    let (code, d) = eval(&["--data", &data, "--request", &own_two]);
    assert_eq!(code, 0, "{d}");
    assert_eq!(d["decision"], "allow");
    assert_eq!(d["ttl"], 900);

    // Data is part of the policy: the digest changes with it.
    let (_, plain) = eval(&["--request", &own_two]);
    assert_ne!(plain["policy"]["digest"], d["policy"]["digest"]);

    // A TTL cap overrides the same way, as a duration or as seconds.
    let caps = write_json(&dir, "caps.json", &json!({"ttl_confidential": "10m"}));
    let (code, d) = eval(&["--data", &caps, "--request", &worked]);
    assert_eq!((code, d["ttl"].as_u64()), (0, Some(600)));

    // A value of the wrong type is refused, not ignored.
    let bad = write_json(&dir, "bad.json", &json!({"trusted_brokers": "my-broker"}));
    let out = writ(&["eval", "--data", &bad, "--request", &worked]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("writ::check::bad_data"), "{stderr}");
    assert!(stderr.contains("trusted_brokers"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pack_show_prints_every_rule_id() {
    let out = writ(&["pack", "show"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for id in CONTRACT_IDS {
        assert!(text.contains(&format!("@id(\"{id}\")")), "`{id}` missing");
    }
    for name in [
        "trusted_brokers",
        "max_recent_issuances",
        "ttl_ceiling",
        "ttl_confidential",
        "ttl_restricted",
        "ttl_agent",
        "ttl_agent_restricted",
        "ttl_exception",
        "repeat_window",
        "require_issuance_count",
        "isolated_environments",
        "blocked_states",
        "max_risk_score",
        "approval_risk_score",
        "max_delegation_depth",
        "exception_max_days",
    ] {
        assert!(
            text.contains(&format!("const {name} =")),
            "`{name}` missing"
        );
    }
    // What is printed is what is compiled: exactly the contract's rules.
    let engine = writ::Engine::default_pack(None).expect("the pack compiles");
    let ids: Vec<&str> = engine
        .policy()
        .rules
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(ids, CONTRACT_IDS);
}

#[test]
fn org_rules_layer_over_the_pack() {
    let dir = scratch("org");
    let mut delete = worked_1();
    delete["action"] = json!("delete");
    delete["requested"]["scope"] = json!(["delete:k8s://prod-eu/payments"]);
    let delete_path = write_json(&dir, "delete.json", &delete);
    let mut secret = delete.clone();
    secret["subject"]["auth"] = json!("static-secret");
    let secret_path = write_json(&dir, "secret.json", &secret);
    let layered = ["--policy", "default", "--policy", "tests/pack/org"];

    // The pack alone has no permit for delete.
    let (code, d) = eval(&["--request", &delete_path]);
    assert_eq!(code, 1);
    assert_eq!(d["reasons"], json!([]));

    // The org's permit grants it, under the pack's caps and obligations.
    let mut args = layered.to_vec();
    args.extend(["--request", delete_path.as_str()]);
    let (code, d) = eval(&args);
    assert_eq!(code, 0, "{d}");
    assert_eq!(d["scope"], json!(["delete:k8s://prod-eu/payments"]));
    assert_eq!(d["ttl"], 300);
    assert_eq!(d["reasons"], json!(["org.owner-delete"]));
    assert_eq!(
        d["obligations"],
        json!([
            {"kind": "revoke_on", "event": "task_end", "rule": "lifecycle.revoke-on-task-end"},
            {"kind": "revoke_on", "event": "state_change", "rule": "lifecycle.revoke-on-state-change"},
            {"kind": "revoke_on", "event": "risk_change", "rule": "lifecycle.revoke-on-risk-change"},
            {"kind": "audience", "value": "k8s://prod-eu/payments", "rule": "lifecycle.audience"},
            {"kind": "approval", "rule": "org.delete-approval"}
        ])
    );

    // ... and the pack's guardrails still deny what they deny.
    let mut args = layered.to_vec();
    args.extend(["--request", secret_path.as_str()]);
    let (code, d) = eval(&args);
    assert_eq!(code, 1);
    assert_eq!(reasons(&d), ["identity.workload-auth"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn writ_test_passes_the_pack_fixtures_with_every_rule_exercised() {
    let out = writ(&["test", "tests/pack", "--coverage"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("every rule is exercised"), "{stdout}");
    let last = stdout.lines().last().expect("a summary line");
    assert!(last.ends_with(" passed, 0 failed"), "{last}");
}

#[test]
fn fixture_runner_covers_every_pack_rule() {
    let files = writ::fixture::discover(&[root().join("tests/pack")]).expect("walks tests/pack");
    assert!(files.len() >= 10, "{files:?}");
    let report = writ::fixture::run(&files);
    assert!(report.load_errors.is_empty(), "{:?}", report.load_errors);
    assert_eq!(
        report.failed(),
        0,
        "{}",
        writ::fixture::render(&report, false)
    );
    for id in CONTRACT_IDS {
        let matched = report.coverage.get(id).copied().unwrap_or(0);
        assert!(matched > 0, "no case matched `{id}`");
    }
}

/// Fixture expectations name obligation kinds only; both revoke rules add
/// `revoke_on`, so their events are checked here.
#[test]
fn agents_get_revoked_on_objective_change_and_others_do_not() {
    let engine = writ::Engine::default_pack(None).expect("the pack compiles");
    let agent = json!({
        "subject": {"id": "spiffe://prod.acme.io/ns/support/sa/triage-agent", "kind": "agent",
                    "auth": "oidc", "attested": true, "owner": "support", "environment": "prod"},
        "action": "invoke",
        "resource": {"id": "tool://support/ticket-search", "kind": "tool", "owner": "support"},
        "intent": {"task": "triage", "id": "task-7", "actions": ["invoke"]},
        "environment": {"name": "prod", "broker": "agent-gateway"},
        "sensitivity": "internal",
        "requested": {"scope": ["invoke:tool://support/ticket-search"]},
        "context": {"recent_issuances": 0}
    });
    let decision = engine
        .decide_json(&agent.to_string())
        .expect("valid request");
    let events: Vec<(Option<&str>, &str)> = decision
        .obligations
        .iter()
        .filter(|o| o.kind == "revoke_on")
        .map(|o| (o.event.as_deref(), o.rule.as_str()))
        .collect();
    assert_eq!(
        events,
        [
            (Some("task_end"), "lifecycle.revoke-on-task-end"),
            (
                Some("objective_change"),
                "lifecycle.revoke-on-objective-change"
            ),
            (Some("state_change"), "lifecycle.revoke-on-state-change"),
            (Some("risk_change"), "lifecycle.revoke-on-risk-change"),
        ]
    );
    assert_eq!(decision.ttl, 300);

    let ci = engine
        .decide_json(&worked_1().to_string())
        .expect("valid request");
    assert!(ci.is_allow());
    assert!(
        !ci.obligations
            .iter()
            .any(|o| o.event.as_deref() == Some("objective_change")),
        "{:?}",
        ci.obligations
    );
}

/// The tree and the rule-by-rule evaluator decide every fixture request
/// of the pack alike.
#[test]
fn tree_and_naive_evaluation_agree_on_the_pack_fixtures() {
    let engine = writ::Engine::default_pack(None).expect("the pack compiles");
    let files = writ::fixture::discover(&[root().join("tests/pack")]).expect("walks tests/pack");
    let mut checked = 0;
    for file in files {
        let fixture = read_json(&file);
        if fixture.get("data").is_some()
            || fixture.get("policies") == Some(&json!(["default", "org"]))
        {
            continue;
        }
        for case in fixture["cases"].as_array().expect("cases") {
            let request = match writ::Request::from_json(&case["request"].to_string()) {
                Ok(request) => request,
                // A case about a rejected request has no rules to compare.
                Err(e) => {
                    assert_eq!(
                        case["expect"]["errors"],
                        json!(["request"]),
                        "{}: {e}",
                        case["name"]
                    );
                    continue;
                }
            };
            let tree = engine.decide(&request);
            let naive = engine.decide_naive(&request);
            assert_eq!(tree.decision, naive.decision, "{}", case["name"]);
            assert_eq!(tree.scope, naive.scope, "{}", case["name"]);
            assert_eq!(tree.ttl, naive.ttl, "{}", case["name"]);
            assert_eq!(tree.obligations, naive.obligations, "{}", case["name"]);
            assert_eq!(tree.reasons, naive.reasons, "{}", case["name"]);
            assert_eq!(tree.dropped_scope, naive.dropped_scope, "{}", case["name"]);
            assert_eq!(tree.errors, naive.errors, "{}", case["name"]);
            checked += 1;
        }
    }
    assert!(checked >= 80, "only {checked} requests checked");
}

/// docs/default-pack.md has a table row for every rule and every constant
/// of the pack, so the reference cannot silently fall behind it.
#[test]
fn the_pack_documentation_lists_every_rule_and_tunable() {
    let doc = std::fs::read_to_string(root().join("docs/default-pack.md")).expect("docs");
    for id in CONTRACT_IDS {
        assert!(
            doc.contains(&format!("| `{id}` |")),
            "no table row for `{id}`"
        );
    }
    let pack: String = writ::engine::DEFAULT_PACK
        .iter()
        .map(|(_, text)| *text)
        .collect();
    let constants: Vec<&str> = pack
        .lines()
        .filter_map(|line| line.strip_prefix("const "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert!(constants.len() >= 15, "{constants:?}");
    for name in constants {
        assert!(
            doc.contains(&format!("| `{name}` |")),
            "no table row for `{name}`"
        );
    }
}

/// Version 2 with a ledger (docs/lifecycle.md): writ counts the subject's
/// grants itself, so the fourth worked example, denied by `rate.unknown`
/// when nothing counts, is allowed through `POST /v1/grants` until the
/// subject has had more than `max_recent_issuances` grants in
/// `repeat_window`; then `rate.repeat` names the count, the limit and the
/// window.
#[test]
fn with_a_ledger_the_count_is_writs_own() {
    let dir = Arc::new(TempDir::new("pack-ledger"));
    let ledger = dir.file("writ.db").display().to_string();
    let server = Server::start(&["--ledger", &ledger], &dir);
    let mut request = read_json(&root().join("examples/worked-4-no-count.json"));
    request["subject"]["id"] = json!(format!(
        "spiffe://test.writ/pack-ledger/{}",
        std::process::id()
    ));
    let body = request.to_string();

    // /v1/decide records and counts nothing: the count is unknown.
    let decided = server.post("/v1/decide", &body).json();
    assert_eq!(decided["decision"], "deny", "{decided}");
    assert_eq!(decided["reasons"], json!(["rate.unknown"]));

    // /v1/grants counts: 0 to 10 earlier grants pass.
    for earlier in 0..=10 {
        let reply = server.post("/v1/grants", &body);
        assert_eq!(reply.status, 201, "grant {earlier}: {}", reply.body);
        let decision = &reply.json()["decision"];
        assert_eq!(decision["decision"], "allow");
        assert_eq!(decision["issuance_count"]["value"], earlier);
        assert_eq!(decision["issuance_count"]["source"], "ledger");
    }
    let reply = server.post("/v1/grants", &body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let decision = reply.json();
    assert_eq!(decision["decision"], "deny", "{decision}");
    assert_eq!(decision["reasons"], json!(["rate.repeat"]));
    let forbid = decision["trace"]
        .as_array()
        .expect("trace")
        .iter()
        .find(|e| e["rule"] == "rate.repeat")
        .expect("rate.repeat in the trace");
    assert_eq!(
        forbid["because"],
        "11 issuances in the last 3600 s; the limit is 10"
    );
}

/// `writ eval --input authzen` maps an AuthZEN Access Evaluation request
/// as `writ serve` maps `/access/v1/evaluation`: the Todo example decides
/// the same through the CLI as the writ-shaped request it stands for, and a
/// missing AuthZEN field is an error naming it.
#[test]
fn eval_takes_an_authzen_request() {
    let dir = TempDir::new("eval-authzen");
    let authzen = json!({
        "subject": {"type": "user", "id": "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"},
        "action": {"name": "can_update_todo"},
        "resource": {"type": "todo", "id": "7240d0db", "properties": {"ownerID": "morty@the-citadel.com"}},
        "context": {"environment": {"time": "2026-11-22T10:00:00Z"}}
    });
    let writ_shaped = json!({
        "subject": {"type": "user", "kind": "user", "id": "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"},
        "action": "can_update_todo",
        "resource": {"type": "todo", "kind": "todo", "id": "7240d0db", "ownerID": "morty@the-citadel.com",
                     "properties": {"ownerID": "morty@the-citadel.com"}},
        "environment": {"time": "2026-11-22T10:00:00Z"}
    });
    let authzen_file = write_json(dir.path(), "authzen.json", &authzen);
    let writ_file = write_json(dir.path(), "writ.json", &writ_shaped);
    let policy = [
        "--policy",
        "examples/authzen/todo.writ",
        "--data",
        "examples/authzen/pip_users.json",
    ];
    let mut args = policy.to_vec();
    args.extend(["--input", "authzen", "--request", &authzen_file]);
    let (code, from_authzen) = eval(&args);
    assert_eq!(code, 0, "{from_authzen:#}");
    assert_eq!(reasons(&from_authzen), ["todo.change-own"]);
    let mut args = policy.to_vec();
    args.extend(["--request", &writ_file]);
    let (_, from_writ) = eval(&args);
    assert_eq!(from_authzen, from_writ);

    // The writ shape is not an AuthZEN request: `action` is no object.
    let mut args = vec!["eval"];
    args.extend(policy);
    args.extend(["--input", "authzen", "--request", &writ_file]);
    let out = writ(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid request at `action`: expected an object, found a string"),
        "{stderr}"
    );
    // Without `resource.type`.
    let mut broken = authzen.clone();
    broken["resource"]
        .as_object_mut()
        .expect("an object")
        .remove("type");
    let broken_file = write_json(dir.path(), "broken.json", &broken);
    let mut args = vec!["eval"];
    args.extend(policy);
    args.extend(["--input", "authzen", "--request", &broken_file]);
    let out = writ(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`resource.type`: missing field"),
        "{stderr}"
    );
}

/// The policy digest is taken over the files' contents and names relative
/// to the set, not over the path as spelled: `todo.writ`, `./todo.writ`
/// and the absolute path give one digest, and so does the same directory
/// named two ways. Another content gives another digest.
#[test]
fn the_policy_digest_does_not_depend_on_how_the_path_is_spelled() {
    let dir = scratch("digest");
    let text = std::fs::read_to_string(root().join("examples/authzen/todo.writ")).expect("todo");
    std::fs::create_dir_all(dir.join("p/sub")).expect("dirs");
    std::fs::write(dir.join("todo.writ"), &text).expect("write");
    std::fs::write(dir.join("p/todo.writ"), &text).expect("write");
    std::fs::write(
        dir.join("p/sub/extra.writ"),
        "@id(\"x.extra\")\npermit if action == \"x\";\n",
    )
    .expect("write");
    std::fs::write(dir.join("request.json"), r#"{"action": "can_read_user"}"#).expect("write");
    std::fs::copy(
        root().join("examples/authzen/pip_users.json"),
        dir.join("users.json"),
    )
    .expect("copy");
    let digest = |policy: &str| -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_writ"))
            .args([
                "eval",
                "--request",
                "request.json",
                "--data",
                "users.json",
                "--policy",
                policy,
            ])
            .current_dir(&dir)
            .output()
            .expect("writ eval");
        let decision: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{policy}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        decision["policy"]["digest"]
            .as_str()
            .expect("a digest")
            .to_owned()
    };
    let absolute = dir.join("todo.writ").display().to_string();
    let plain = digest("todo.writ");
    assert!(plain.starts_with("sha256:"), "{plain}");
    assert_eq!(digest("./todo.writ"), plain);
    assert_eq!(digest(&absolute), plain);
    assert_eq!(digest("p/../todo.writ"), plain);
    // A directory, named relatively, with `./`, and absolutely.
    let set = digest("p");
    assert_ne!(set, plain, "the directory holds another file");
    assert_eq!(digest("./p/"), set);
    assert_eq!(digest(&dir.join("p").display().to_string()), set);
    // The content counts.
    std::fs::write(dir.join("todo.writ"), format!("{text}\n// changed\n")).expect("write");
    assert_ne!(digest("todo.writ"), plain);
    let _ = std::fs::remove_dir_all(dir);
}
