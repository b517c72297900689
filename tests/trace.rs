//! Snapshots of decisions, explanations and the decision tree for the small
//! policy set in `tests/trace/policy.writ`, and the `writ eval` command run
//! on the same files.
//!
//! The requests: `allow.json` (an agent reading its team's database: scope
//! narrowed by a limit, TTL capped twice, two obligations), `forbid.json`
//! (a shared secret), `default_deny.json` (another team's database: no
//! permit matches) and `error.json` (a write without the `context.freeze`
//! attribute a forbid reads: fails closed).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use writ::decision::Outcome;
use writ::explain::{explain, Style};
use writ::{Decision, Engine, Request};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn trace_file(name: &str) -> PathBuf {
    root().join("tests/trace").join(name)
}

fn read(name: &str) -> String {
    let path = trace_file(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The policy compiled as `policy.writ`, so snapshots do not depend on
/// where the crate is checked out.
fn engine() -> Engine {
    Engine::compile([("policy.writ", read("policy.writ"))], None)
        .unwrap_or_else(|d| panic!("the trace policy does not compile:\n{}", d.render(false)))
}

fn request(name: &str) -> Request {
    Request::from_json(&read(&format!("{name}.json")))
        .unwrap_or_else(|e| panic!("request `{name}` is invalid: {e}"))
}

fn decide(engine: &Engine, name: &str) -> Decision {
    let request = request(name);
    let decision = engine.decide(&request);
    // The tree and the rule-by-rule evaluation agree on the outcome.
    let naive = engine.decide_naive(&request);
    assert_eq!(
        decision.decision, naive.decision,
        "tree and naive disagree on `{name}`"
    );
    assert_eq!(decision.scope, naive.scope);
    assert_eq!(decision.ttl, naive.ttl);
    assert_eq!(decision.obligations, naive.obligations);
    assert_eq!(decision.reasons, naive.reasons);
    decision
}

fn snapshot(name: &str, engine: &Engine, decision: &Decision) {
    insta::assert_snapshot!(format!("{name}_decision"), decision.to_json_pretty());
    let text = explain(decision, engine, Style::new(false));
    assert!(
        !text.contains('\x1b'),
        "uncoloured explanation has ANSI escapes:\n{text}"
    );
    insta::assert_snapshot!(format!("{name}_explain"), text);
}

fn entry<'d>(decision: &'d Decision, rule: &str) -> &'d writ::decision::TraceEntry {
    decision
        .trace
        .iter()
        .find(|e| e.rule == rule)
        .unwrap_or_else(|| panic!("no trace entry for `{rule}`"))
}

#[test]
fn allow_narrows_scope_caps_ttl_and_adds_obligations() {
    let engine = engine();
    let decision = decide(&engine, "allow");
    assert!(decision.is_allow());
    assert_eq!(decision.scope, ["read:db://payments/orders/2026"]);
    assert_eq!(decision.dropped_scope, ["read:db://payments/ledger/2026"]);
    // requested 3600, the permit's `for 30m`, then the agent cap of 15m.
    assert_eq!(decision.ttl, 900);
    let obligations: Vec<(&str, &str)> = decision
        .obligations
        .iter()
        .map(|o| (o.kind.as_str(), o.rule.as_str()))
        .collect();
    assert_eq!(
        obligations,
        [("revoke_on", "read-own"), ("log", "log-restricted")]
    );
    assert_eq!(decision.reasons, ["read-own"]);
    assert!(decision.errors.is_empty());
    assert_eq!(
        entry(&decision, "agent-no-ledger").outcome,
        Outcome::Matched
    );
    snapshot("allow", &engine, &decision);
}

#[test]
fn forbid_denies_with_its_because() {
    let engine = engine();
    let decision = decide(&engine, "forbid");
    assert!(!decision.is_allow());
    assert_eq!(decision.reasons, ["no-shared-secrets"]);
    assert!(decision.scope.is_empty());
    assert_eq!(decision.ttl, 0);
    assert!(decision.obligations.is_empty());
    assert_eq!(
        entry(&decision, "no-shared-secrets").because.as_deref(),
        Some("ci-runner-7 uses a shared secret")
    );
    snapshot("forbid", &engine, &decision);
}

#[test]
fn default_deny_names_the_closest_permits() {
    let engine = engine();
    let decision = decide(&engine, "default_deny");
    assert!(!decision.is_allow());
    assert!(decision.reasons.is_empty());
    assert!(decision.errors.is_empty());
    let read_own = entry(&decision, "read-own");
    assert!(read_own.closest);
    assert_eq!(read_own.outcome, Outcome::NotMatched);
    let failed = read_own.failed.as_ref().expect("the failed condition");
    assert_eq!(failed.condition, "subject.owner == resource.owner");
    assert_eq!(failed.saw, Value::from("analytics"));
    snapshot("default_deny", &engine, &decision);
}

#[test]
fn missing_context_attribute_fails_closed() {
    let engine = engine();
    let decision = decide(&engine, "error");
    assert!(!decision.is_allow());
    assert_eq!(decision.reasons, ["change-freeze"]);
    assert_eq!(decision.errors.len(), 1);
    assert_eq!(decision.errors[0].rule, "change-freeze");
    assert!(
        decision.errors[0].message.contains("context.freeze"),
        "{:?}",
        decision.errors
    );
    assert!(entry(&decision, "change-freeze").error.is_some());
    // The write permit matched, but an erroring forbid still denies.
    assert_eq!(entry(&decision, "write-own").outcome, Outcome::Matched);
    assert_eq!(decision.ttl, 0);
    snapshot("error", &engine, &decision);
}

#[test]
fn tree_snapshots() {
    let engine = engine();
    insta::assert_snapshot!("tree", engine.tree().render(engine.policy()));
    let dot = engine.tree().to_dot(engine.policy());
    assert!(dot.starts_with("digraph"), "{dot}");
    insta::assert_snapshot!("tree_dot", dot);
}

// ---- the `writ eval` command ------------------------------------------------

const POLICY: &str = "tests/trace/policy.writ";

fn writ_eval(request: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_writ"))
        .args(["eval", "--policy", POLICY, "--request", request])
        .args(extra)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .output()
        .expect("run writ")
}

/// The engine the CLI builds: the same loader, so the same file names and
/// therefore the same `at` locations and digest.
fn cli_engine() -> Engine {
    let files = writ::load::load_policies(&[POLICY.to_owned()], Path::new("."))
        .expect("load the trace policy");
    Engine::compile(files, None).unwrap_or_else(|d| panic!("{}", d.render(false)))
}

#[test]
fn eval_json_matches_the_library() {
    let engine = cli_engine();
    for (name, code) in [
        ("allow", 0),
        ("forbid", 1),
        ("default_deny", 1),
        ("error", 1),
    ] {
        let path = format!("tests/trace/{name}.json");
        let output = writ_eval(&path, &["--format", "json"]);
        assert_eq!(
            output.status.code(),
            Some(code),
            "exit code for `{name}`; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let printed: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
        let library: Value =
            serde_json::from_str(&engine.decide(&request(name)).to_json()).expect("library JSON");
        assert_eq!(printed, library, "CLI and library differ on `{name}`");
    }
}

#[test]
fn eval_reads_the_request_from_stdin() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_writ"))
        .args(["eval", "--policy", POLICY, "--request", "-"])
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run writ");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(read("allow.json").as_bytes())
        .expect("write the request");
    let output = child.wait_with_output().expect("wait for writ");
    assert_eq!(output.status.code(), Some(0));
    let printed: Decision = serde_json::from_slice(&output.stdout).expect("a decision");
    assert_eq!(printed, cli_engine().decide(&request("allow")));
}

#[test]
fn eval_explain_without_colour() {
    let engine = cli_engine();
    for (name, code) in [("allow", 0), ("default_deny", 1)] {
        let output = writ_eval(&format!("tests/trace/{name}.json"), &["--explain"]);
        assert_eq!(output.status.code(), Some(code));
        let stdout = String::from_utf8(output.stdout).expect("utf-8 stdout");
        assert!(
            !stdout.contains('\x1b'),
            "NO_COLOR output has ANSI escapes:\n{stdout}"
        );
        let decision = engine.decide(&request(name));
        assert_eq!(stdout, explain(&decision, &engine, Style::new(false)));
    }
}

#[test]
fn eval_rejects_a_malformed_request_naming_the_field() {
    let output = writ_eval("tests/trace/malformed.json", &["--format", "json"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        output.stdout.is_empty(),
        "no decision is printed for a bad request"
    );
    let stderr = String::from_utf8(output.stderr).expect("utf-8 stderr");
    assert!(stderr.contains("`subject.attested`"), "{stderr}");

    let missing = writ_eval("tests/trace/no_such_request.json", &[]);
    assert_eq!(missing.status.code(), Some(2));
}

/// The closest permits of a default deny that failed on one attribute
/// share the value it holds (copied from the first entry that read it);
/// one that failed on another attribute, between them in policy order,
/// says what that one holds (`Walk::mark_closest`).
#[test]
fn closest_permits_say_what_their_own_attribute_held() {
    let policy = r#"
@id("a")
permit if action == "read" and subject.kind == "ci";
@id("b")
permit if subject.owner == "nobody" and action == "read";
@id("c")
permit if action in ["write", "read"] and subject.kind == "ci";
"#;
    let engine = Engine::compile([("closest.writ", policy.to_owned())], None).expect("compiles");
    let request = Request::from_json(
        r#"{"subject":{"id":"s","kind":"ci","owner":"payments"},"action":"deploy","resource":{"id":"r","kind":"db"}}"#,
    )
    .expect("valid request");
    let decision = engine.decide(&request);
    assert!(!decision.is_allow());
    let saw = |rule: &str| {
        let entry = entry(&decision, rule);
        assert!(entry.closest, "{rule} is not marked closest");
        let failed = entry.failed.as_ref().expect("the failed condition");
        (failed.condition.to_string(), failed.saw.clone())
    };
    assert_eq!(
        saw("a"),
        ("action == \"read\"".to_owned(), Value::from("deploy"))
    );
    assert_eq!(
        saw("b"),
        (
            "subject.owner == \"nobody\"".to_owned(),
            Value::from("payments")
        )
    );
    assert_eq!(
        saw("c"),
        (
            "action in [\"write\", \"read\"]".to_owned(),
            Value::from("deploy")
        )
    );
    assert_eq!(decision.to_json(), engine.decide_naive(&request).to_json());
}
