//! Runs the fixture corpus: `tests/core` (the semantics of brief.md and the
//! scope rules of contract.md, on small policies of their own) and
//! `tests/pack` (the default pack), through the library runner and through
//! `writ test`.
//!
//! The fixture format (docs/testing.md, whose examples run here too) cannot
//! say everything: which permits the trace names as closest on a default
//! deny, or what a trace entry's failed condition saw. Those are checked
//! here, on the decisions of named cases of the corpus. The runner's own
//! behaviour (diffs, malformed files, coverage) is checked on scratch
//! fixtures through the binary, with snapshots of what it prints.

use std::path::Path;
use std::process::Command;

use writ::decision::{Decision, Outcome};
use writ::fixture::{self, Report};

const CORE: &str = "tests/core";
const PACK: &str = "tests/pack";

/// Fewest cases `tests/core` must hold.
const MIN_CORE_CASES: usize = 40;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The runner on `tests/core` and `tests/pack`, by full path (the tests
/// run in parallel in one process, so none may change its directory).
fn run_corpus() -> Report {
    let core = root().join(CORE);
    let files = fixture::discover(&[core.clone(), root().join(PACK)])
        .unwrap_or_else(|e| panic!("cannot walk the corpus: {e}"));
    assert!(
        files.iter().any(|f| f.starts_with(&core)),
        "no fixture files under {CORE}"
    );
    fixture::run(&files)
}

fn core_cases(report: &Report) -> usize {
    report
        .cases
        .iter()
        .filter(|c| Path::new(&c.name).starts_with(root().join(CORE)))
        .count()
}

/// The decision of the case `name` in the fixture file `file` (relative
/// to `tests/core`).
fn decision<'r>(report: &'r Report, file: &str, name: &str) -> &'r Decision {
    let full = format!("{}: {name}", root().join(CORE).join(file).display());
    let case = report
        .cases
        .iter()
        .find(|c| c.name == full)
        .unwrap_or_else(|| panic!("no case `{full}` in the corpus"));
    case.decision
        .as_ref()
        .unwrap_or_else(|| panic!("case `{full}` has no decision"))
}

#[test]
fn corpus_passes() {
    let report = run_corpus();
    let text = fixture::render(&report, false);
    println!("{text}");
    assert_eq!(report.failed(), 0, "fixture failures:\n{text}");
    let core = core_cases(&report);
    assert!(
        core >= MIN_CORE_CASES,
        "only {core} cases ran from {CORE}, expected at least {MIN_CORE_CASES}"
    );
}

#[test]
fn writ_test_runs_the_same_corpus() {
    let report = run_corpus();
    let expected = core_cases(&report);
    let output = Command::new(env!("CARGO_BIN_EXE_writ"))
        .args(["test", CORE])
        .current_dir(root())
        .output()
        .expect("cannot run `writ test`");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "`writ test {CORE}` failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!("{expected} passed, 0 failed"),
        "stdout:\n{stdout}"
    );
}

#[test]
fn running_the_corpus_twice_gives_the_same_bytes() {
    let first = run_corpus();
    let second = run_corpus();
    assert_eq!(first.cases.len(), second.cases.len());
    for (a, b) in first.cases.iter().zip(&second.cases) {
        assert_eq!(a.name, b.name);
        let a_json = a.decision.as_ref().map(Decision::to_json);
        let b_json = b.decision.as_ref().map(Decision::to_json);
        assert_eq!(a_json, b_json, "`{}` decided differently", a.name);
    }
}

/// `Decision::to_json` writes JSON by hand for speed: it must be the text
/// serde_json writes from the derived `Serialize`, on every decision of the
/// corpus (allows, denies, errors, every kind of trace entry).
#[test]
fn hand_written_json_is_serde_json() {
    let report = run_corpus();
    let mut compared = 0;
    for case in &report.cases {
        let Some(decision) = &case.decision else {
            continue;
        };
        let by_serde = serde_json::to_string(decision).expect("serialise");
        assert_eq!(decision.to_json(), by_serde, "`{}`", case.name);
        let mut with_id = Vec::new();
        decision.write_json(&mut with_id, Some("id-\"1\""));
        let mut expected = serde_json::to_value(decision).expect("to value");
        expected["decision_id"] = "id-\"1\"".into();
        assert_eq!(
            String::from_utf8(with_id).expect("utf-8"),
            serde_json::to_string(&expected).expect("serialise"),
            "`{}`",
            case.name
        );
        compared += 1;
    }
    assert!(compared > 200, "only {compared} decisions compared");
}

#[test]
fn default_deny_names_the_closest_permit() {
    let report = run_corpus();
    let d = decision(
        &report,
        "basics.json",
        "another team's database: default deny, nothing granted",
    );
    assert!(
        d.reasons.is_empty(),
        "default deny has reasons {:?}",
        d.reasons
    );
    assert!(d.errors.is_empty(), "unexpected errors {:?}", d.errors);
    let entry = d
        .trace
        .iter()
        .find(|e| e.rule == "basics.owner-read")
        .expect("the owner permit is in the trace");
    assert!(entry.closest, "the owner permit is not marked closest");
    assert_eq!(entry.outcome, Outcome::NotMatched);
    let failed = entry.failed.as_ref().expect("the failed condition");
    assert_eq!(failed.condition, "subject.owner == resource.owner");
    assert_eq!(failed.saw, serde_json::json!("team-payments"));
    // Forbids that did not match are not "closest": only permits are.
    assert!(d
        .trace
        .iter()
        .filter(|e| e.closest)
        .all(|e| e.kind == "permit"));
}

#[test]
fn a_forbid_that_matched_is_named_in_the_trace() {
    let report = run_corpus();
    let d = decision(
        &report,
        "basics.json",
        "shared identity: the forbid denies although the owner permit matches",
    );
    assert_eq!(d.reasons, ["basics.no-shared"]);
    let forbid = d
        .trace
        .iter()
        .find(|e| e.rule == "basics.no-shared")
        .expect("the forbid is in the trace");
    assert_eq!(forbid.outcome, Outcome::Matched);
    assert!(forbid.effect.contains(&writ::decision::Step::Denied));
    // Its `because` template is filled in from the request.
    assert_eq!(
        forbid.because.as_deref(),
        Some("`spiffe://acme.io/ns/payments/sa/reader` is shared")
    );
}

#[test]
fn errors_are_in_the_trace_too() {
    let report = run_corpus();
    let d = decision(
        &report,
        "fail_closed.json",
        "vault read without a risk score: the forbid errs and denies",
    );
    let entry = d
        .trace
        .iter()
        .find(|e| e.rule == "fc.risk")
        .expect("the erring forbid is in the trace");
    assert!(
        entry.error.is_some(),
        "no error on the trace entry: {entry:?}"
    );
    let d = decision(
        &report,
        "fail_closed.json",
        "tier given as a string: the tier permit errs and does not match, the other still allows",
    );
    let entry = d
        .trace
        .iter()
        .find(|e| e.rule == "fc.read-tier")
        .expect("the erring permit is in the trace");
    assert_eq!(entry.outcome, Outcome::Error);
    assert!(entry.error.is_some());
}

#[test]
fn short_circuits_over_errors_report_no_error() {
    let report = run_corpus();
    for (file, name) in [
        // `action == "write" and context.freeze...`: false whatever the freeze.
        (
            "fail_closed.json",
            "database read with every attribute known: both permits grant, no forbid errs on the missing freeze",
        ),
        // `context.paged == true or context.break_glass == true`: true.
        (
            "fail_closed.json",
            "admin paged, break-glass unknown: `or` holds, allow",
        ),
        (
            "fail_closed.json",
            "admin with break-glass only: `or` holds on its right side, allow",
        ),
        // `subject has shared and ...`: `has` never errs.
        (
            "basics.json",
            "no shared attribute: `has` keeps the forbid from applying, allow",
        ),
    ] {
        let d = decision(&report, file, name);
        assert!(d.errors.is_empty(), "`{name}` reported {:?}", d.errors);
    }
}

#[test]
fn obligations_are_deduplicated() {
    let report = run_corpus();
    let d = decision(
        &report,
        "obligations.json",
        "deploy to prod without approval: the grant's and the requires' obligations together",
    );
    // The permit and `ob.revoke` both ask for revoke on task_end; the permit
    // and `ob.audience` both bind the audience to the cluster.
    let kinds: Vec<(&str, Option<&str>, Option<&str>)> = d
        .obligations
        .iter()
        .map(|o| (o.kind.as_str(), o.event.as_deref(), o.value.as_deref()))
        .collect();
    let count = |kind: &str| kinds.iter().filter(|k| k.0 == kind).count();
    assert_eq!(count("revoke_on"), 1, "{kinds:?}");
    assert_eq!(count("audience"), 1, "{kinds:?}");
    assert_eq!(count("approval"), 1, "{kinds:?}");
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    assert!(kinds.contains(&("revoke_on", Some("task_end"), None)));
    assert!(kinds.contains(&("audience", None, Some("k8s://prod-eu/payments"))));

    // Different events are different obligations.
    let d = decision(
        &report,
        "obligations.json",
        "agent read: two revoke events, both kept",
    );
    let mut events: Vec<&str> = d
        .obligations
        .iter()
        .filter(|o| o.kind == "revoke_on")
        .filter_map(|o| o.event.as_deref())
        .collect();
    events.sort_unstable();
    assert_eq!(events, ["objective_change", "task_end"]);
    assert_eq!(d.obligations.len(), 2, "{:?}", d.obligations);
}

#[test]
fn decisions_carry_the_policy_digest() {
    let report = run_corpus();
    for case in &report.cases {
        let Some(d) = &case.decision else { continue };
        assert!(
            d.policy.digest.starts_with("sha256:") && d.policy.digest.len() == 7 + 64,
            "`{}` has digest {:?}",
            case.name,
            d.policy.digest
        );
    }
}

/// A scratch directory holding `sub/a.writ`, a fixture and a data file,
/// with `sub/up -> ..`: a symlink loop.
#[cfg(unix)]
fn looped_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("writ-loop-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).expect("temp dir");
    std::fs::write(dir.join("sub/a.writ"), "@id(\"p\")\npermit;\n").expect("write");
    std::fs::write(
        dir.join("sub/case.json"),
        r#"{"policies": ["."], "cases": []}"#,
    )
    .expect("write");
    std::os::unix::fs::symlink("..", dir.join("sub/up")).expect("symlink");
    dir
}

#[cfg(unix)]
fn writ_in(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_writ"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("writ runs")
}

/// `writ check`, `fmt`, `test`, `lint`, `manifest` and `serve` refuse a
/// directory with a symlink loop, naming the link, instead of reading the
/// same file again at every level (and reporting each rule as a duplicate).
#[cfg(unix)]
#[test]
fn a_symlink_loop_is_refused_by_every_command() {
    let dir = looped_dir("commands");
    let commands: [&[&str]; 6] = [
        &["check", "."],
        &["fmt", "--check", "."],
        &["test", "."],
        &["lint", "."],
        &["manifest", "."],
        &["serve", "--addr", "127.0.0.1:0", "--policy", "."],
    ];
    for args in commands {
        let output = writ_in(&dir, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "writ {args:?}: {stderr}");
        assert!(
            stderr.contains("is a symbolic link loop") && stderr.contains("sub/up"),
            "writ {args:?}: {stderr}"
        );
        assert!(!stderr.contains("duplicate"), "writ {args:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Directories are walked alike everywhere: entries whose name starts with
/// `.` are skipped by `writ test` as by `writ check` and the server.
#[test]
fn dot_entries_are_skipped_by_the_test_runner() {
    let dir = std::env::temp_dir().join(format!("writ-dot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("..data")).expect("temp dir");
    let fixture = r#"{"cases": [{"name": "x", "request": {}, "expect": {"decision": "deny"}}]}"#;
    std::fs::write(dir.join("a.json"), fixture).expect("write");
    std::fs::write(dir.join("..data/a.json"), fixture).expect("write");
    let files = fixture::discover(std::slice::from_ref(&dir)).expect("walks");
    assert_eq!(files, [dir.join("a.json")]);
    let _ = std::fs::remove_dir_all(dir);
}

/// A data file is read by the JSON reader everywhere: a duplicate key is
/// refused by `writ check`, `writ eval` and `writ serve`, not resolved to
/// its last value.
#[test]
fn a_duplicate_key_in_a_data_file_is_refused() {
    let dir = std::env::temp_dir().join(format!("writ-dupdata-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let data = dir.join("data.json");
    std::fs::write(
        &data,
        r#"{"max_recent_issuances": 3, "max_recent_issuances": 9}"#,
    )
    .expect("write");
    std::fs::write(dir.join("request.json"), "{}").expect("write");
    let data = data.display().to_string();
    let request = dir.join("request.json").display().to_string();
    let commands: [&[&str]; 3] = [
        &["check", "default", "--data", &data],
        &["eval", "--request", &request, "--data", &data],
        &["serve", "--addr", "127.0.0.1:0", "--data", &data],
    ];
    for args in commands {
        let output = Command::new(env!("CARGO_BIN_EXE_writ"))
            .args(args)
            .output()
            .expect("writ runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "writ {args:?}: {stderr}");
        assert!(
            stderr.contains("duplicate key at `max_recent_issuances`"),
            "writ {args:?}: {stderr}"
        );
    }
    // A byte order mark before the object is skipped.
    std::fs::write(
        dir.join("bom.json"),
        "\u{feff}{\"max_recent_issuances\": 3}",
    )
    .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_writ"))
        .args(["check", "default", "--data"])
        .arg(dir.join("bom.json"))
        .output()
        .expect("writ runs");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A scratch directory for one test, emptied first.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("writ-fixtures-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `writ test ARGS` in `dir`: the exit code and stdout.
fn writ_test(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_writ"))
        .arg("test")
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("writ test runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// One fenced block of docs/testing.md: its line, info string and text.
struct Block {
    line: usize,
    info: String,
    text: String,
}

fn fenced_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in markdown.lines().enumerate() {
        match open.take() {
            None => {
                if let Some(info) = line.strip_prefix("```") {
                    open = Some(Block {
                        line: index + 1,
                        info: info.trim().to_owned(),
                        text: String::new(),
                    });
                }
            }
            Some(mut block) => {
                if line.trim_end() == "```" {
                    blocks.push(block);
                } else {
                    block.text.push_str(line);
                    block.text.push('\n');
                    open = Some(block);
                }
            }
        }
    }
    assert!(open.is_none(), "an unclosed fence in the markdown");
    blocks
}

/// Every example of docs/testing.md runs as it says (the convention is
/// at the top of that file): files are written to one scratch directory,
/// each fixture block is run with `writ test` and must pass or fail as
/// tagged, and an output block is exactly what `writ test` printed.
#[test]
fn docs_testing_examples_run() {
    let markdown =
        std::fs::read_to_string(root().join("docs/testing.md")).expect("docs/testing.md");
    let dir = scratch("docs");
    let mut problems = Vec::new();
    let mut last_output: Option<(usize, String)> = None;
    let (mut fixtures, mut outputs) = (0, 0);
    for block in fenced_blocks(&markdown) {
        let tags: Vec<&str> = block.info.split(',').map(str::trim).collect();
        let value = |key: &str| {
            tags.iter()
                .find_map(|t| t.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        };
        match tags.first().copied() {
            Some("writ" | "json") if value("file").is_some() => {
                let name = value("file").unwrap_or_default();
                std::fs::write(dir.join(name), &block.text).expect("write a docs file");
            }
            Some("json") if value("fixture").is_some() => {
                let name = value("fixture").unwrap_or_default();
                std::fs::write(dir.join(name), &block.text).expect("write a docs fixture");
                let mut args = vec![name];
                if let Some(extra) = value("args") {
                    args.extend(extra.split_whitespace());
                }
                let (code, stdout) = writ_test(&dir, &args);
                let want = if tags.contains(&"fails") { 1 } else { 0 };
                if code != Some(want) {
                    problems.push(format!(
                        "docs/testing.md:{}: `writ test {}` exited {code:?}, expected {want}:\n{stdout}",
                        block.line,
                        args.join(" ")
                    ));
                }
                last_output = Some((block.line, stdout));
                fixtures += 1;
            }
            Some("text") if tags.contains(&"output") => {
                match last_output.take() {
                    Some((_, stdout)) if stdout == block.text => {}
                    Some((line, stdout)) => problems.push(format!(
                        "docs/testing.md:{}: the output of the fixture at line {line} differs:\n--- documented\n{}--- printed\n{stdout}",
                        block.line, block.text
                    )),
                    None => problems.push(format!(
                        "docs/testing.md:{}: an output block follows no fixture",
                        block.line
                    )),
                }
                outputs += 1;
            }
            _ => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    assert!(
        fixtures >= 6 && outputs >= 6,
        "{fixtures} fixtures, {outputs} outputs"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The policy of the failure snapshots: a permit, a forbid that fails
/// closed on a missing attribute, and a forbid with a `because`.
const SNAPSHOT_POLICY: &str = r#"/// Owners read their own things.
@id("t.owner")
permit if subject.owner == resource.owner
  grant ["read:{resource.id}"] for 1h
  revoke on task_end;

/// Risky sessions are refused; without a score, it fails closed.
@id("t.risk")
forbid if context.risk_score > 50;

/// Shared identities are refused.
@id("t.shared")
forbid if subject has shared and subject.shared == true
  because "`{subject.id}` is shared";
"#;

fn snapshot_dir(name: &str, fixtures: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = scratch(name);
    std::fs::write(dir.join("t.writ"), SNAPSHOT_POLICY).expect("write the policy");
    for (file, text) in fixtures {
        std::fs::write(dir.join(file), text).expect("write a fixture");
    }
    dir
}

/// The fixture of issue 19: `"reasons": []` and `"errors": []` on a deny
/// that has reasons and errors used to pass; it fails, with a diff and the
/// trace lines behind it.
#[test]
fn empty_reasons_and_errors_fail_on_a_decision_that_has_them() {
    let fixture = r#"{
  "policies": ["t.writ"],
  "cases": [
    {
      "name": "a shared identity without a risk score",
      "request": {"subject": {"id": "ci-shared", "owner": "a", "shared": true},
                  "action": "read", "resource": {"id": "r1", "owner": "a"}},
      "expect": {"decision": "deny", "reasons": [], "errors": []}
    }
  ]
}"#;
    let dir = snapshot_dir("empty-lists", &[("cases.json", fixture)]);
    let (code, stdout) = writ_test(&dir, &["cases.json"]);
    assert_eq!(code, Some(1), "{stdout}");
    insta::assert_snapshot!("empty_reasons_and_errors_fail", stdout);
    let _ = std::fs::remove_dir_all(dir);
}

/// Every kind of difference, each as a diff: the decision, scope, TTL,
/// a `contains` list, obligations, `revoke_on` events and `because` texts.
#[test]
fn failures_are_diffs_with_the_trace_lines_that_explain_them() {
    let fixture = r#"{
  "policies": ["t.writ"],
  "cases": [
    {
      "name": "an owner's read, expected wrongly",
      "request": {"subject": {"id": "ci", "owner": "a"}, "action": "read",
                  "resource": {"id": "r1", "owner": "a"}, "context": {"risk_score": 10}},
      "expect": {"decision": "allow", "scope": ["read:r2"], "ttl": 900, "ttl_max": 600,
                 "reasons": {"contains": ["t.risk"]},
                 "obligations": ["revoke_on:task_end", "log"],
                 "revoke_on": ["objective_change"],
                 "because": {"t.owner": "owners read"}}
    },
    {
      "name": "someone else's read: default deny",
      "request": {"subject": {"id": "ci", "owner": "b"}, "action": "read",
                  "resource": {"id": "r1", "owner": "a"}, "context": {"risk_score": 10}},
      "expect": {"decision": "allow", "because": {"t.shared": "`ci` is shared"}}
    },
    {
      "name": "a misspelt rule id is pointed out",
      "request": {"subject": {"id": "ci", "owner": "a"}, "action": "read",
                  "resource": {"id": "r1", "owner": "a"}, "context": {"risk_score": 10}},
      "expect": {"decision": "allow", "reasons": ["t.ownr"], "errors": []}
    }
  ]
}"#;
    let dir = snapshot_dir("diffs", &[("cases.json", fixture)]);
    let (code, stdout) = writ_test(&dir, &["cases.json"]);
    assert_eq!(code, Some(1), "{stdout}");
    insta::assert_snapshot!("failures_are_diffs", stdout);
    let _ = std::fs::remove_dir_all(dir);
}

/// Malformed fixture files are errors naming the file, the case and the
/// key, never skipped: a directory run with one bad file fails, while a
/// request file kept beside the fixtures is left alone.
#[test]
fn malformed_fixture_files_are_errors_never_skipped() {
    let good = r#"{"policies": ["t.writ"], "cases": [
      {"name": "ok", "request": {"subject": {"owner": "a"}, "action": "read", "resource": {"id": "r", "owner": "a"}, "context": {"risk_score": 1}},
       "expect": {"decision": "allow", "reasons": ["t.owner"], "errors": []}}]}"#;
    let files = [
        ("a-good.json", good),
        ("b-case.json", r#"{"policies": ["t.writ"], "case": []}"#),
        ("c-array.json", "[]"),
        (
            "d-no-expect.json",
            r#"{"policies": ["t.writ"], "cases": [{"name": "lost", "request": {}}]}"#,
        ),
        (
            "e-expect-key.json",
            r#"{"policies": ["t.writ"], "cases": [{"name": "typo", "request": {}, "expect": {"decision": "deny", "reason": ["t.risk"]}}]}"#,
        ),
        (
            "f-contains.json",
            r#"{"policies": ["t.writ"], "cases": [{"name": "typo", "request": {}, "expect": {"decision": "deny", "errors": {"contain": []}}}]}"#,
        ),
        (
            "g-no-decision.json",
            r#"{"policies": ["t.writ"], "cases": [{"name": "half", "request": {}, "expect": {"reasons": []}}]}"#,
        ),
        (
            "h-data.json",
            r#"{"policies": ["t.writ"], "cases": [{"name": "gone", "data": "missing.json", "request": {}, "expect": {"decision": "deny"}}]}"#,
        ),
        (
            "i-ttl.json",
            r#"{"policies": ["t.writ"], "cases": [{"name": "t", "request": {}, "expect": {"decision": "deny", "ttl": "1h"}}]}"#,
        ),
        (
            "request.json",
            r#"{"subject": {"id": "x"}, "action": "read"}"#,
        ),
    ];
    let dir = snapshot_dir("malformed", &files);
    let (code, stdout) = writ_test(&dir, &["."]);
    assert_eq!(code, Some(1), "{stdout}");
    insta::assert_snapshot!("malformed_fixture_files", stdout);
    // The good file alone passes; the request file is not a fixture.
    let found = fixture::discover(std::slice::from_ref(&dir)).expect("walks");
    assert!(!found.contains(&dir.join("request.json")), "{found:?}");
    assert_eq!(found.len(), files.len() - 1, "{found:?}");
    let (code, stdout) = writ_test(&dir, &["a-good.json"]);
    assert_eq!((code, stdout.as_str()), (Some(0), "1 passed, 0 failed\n"));
    let _ = std::fs::remove_dir_all(dir);
}

/// A rule that "matched" only by failing closed on an error is not
/// exercised; `--threshold` fails the run below the share asked for.
#[test]
fn coverage_counts_only_real_matches_and_takes_a_threshold() {
    let fixture = r#"{"policies": ["t.writ"], "cases": [
      {"name": "no risk score: t.risk fails closed",
       "request": {"subject": {"id": "s", "owner": "a"}, "action": "read", "resource": {"id": "r", "owner": "a"}},
       "expect": {"decision": "deny", "reasons": ["t.risk"], "errors": ["t.risk"]}},
      {"name": "an owner's read",
       "request": {"subject": {"id": "s", "owner": "a"}, "action": "read", "resource": {"id": "r", "owner": "a"}, "context": {"risk_score": 1}},
       "expect": {"decision": "allow", "reasons": ["t.owner"], "errors": [], "obligations": ["revoke_on:task_end"]}}]}"#;
    let dir = snapshot_dir("coverage", &[("cases.json", fixture)]);
    let report = fixture::run(&[dir.join("cases.json")]);
    assert_eq!(report.failed(), 0, "{}", fixture::render(&report, false));
    assert_eq!(report.coverage.get("t.risk"), Some(&0));
    assert_eq!(report.failed_closed.get("t.risk"), Some(&1));
    assert_eq!(report.coverage.get("t.owner"), Some(&2));
    assert_eq!(report.unexercised(), ["t.risk", "t.shared"]);
    let (code, stdout) = writ_test(&dir, &["cases.json", "--coverage"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("     0  t.risk  (and 1 failed closed)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("coverage: 1 of 3 rules (33.3%)\n"),
        "{stdout}"
    );
    let (code, stdout) = writ_test(&dir, &["cases.json", "--threshold", "30"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("meets the threshold of 30%"), "{stdout}");
    let (code, stdout) = writ_test(&dir, &["cases.json", "--threshold", "34%"]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("below the threshold of 34%"), "{stdout}");
    let (code, _) = writ_test(&dir, &["cases.json", "--threshold", "101"]);
    assert_eq!(code, Some(2));
    let _ = std::fs::remove_dir_all(dir);
}

/// Failures name files as a person would write them: `f/c.json`, not
/// `./f/c.json`, and a policy reached through `..` as `org/t.writ`, not
/// `f/../org/t.writ`.
#[test]
fn failures_name_tidy_paths() {
    let dir = scratch("tidy");
    std::fs::create_dir_all(dir.join("f")).expect("dir");
    std::fs::create_dir_all(dir.join("org")).expect("dir");
    std::fs::write(dir.join("org/t.writ"), SNAPSHOT_POLICY).expect("write");
    std::fs::write(
        dir.join("f/c.json"),
        r#"{"policies": ["../org"], "cases": [{"name": "n",
             "request": {"subject": {"owner": "a"}, "action": "read", "resource": {"id": "r", "owner": "a"}, "context": {"risk_score": 1}},
             "expect": {"decision": "deny"}}]}"#,
    )
    .expect("write");
    let (code, stdout) = writ_test(&dir, &["./f/"]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.starts_with("FAIL f/c.json: n\n"), "{stdout}");
    assert!(
        stdout.contains("matched: permit t.owner  org/t.writ:3  granted read:r"),
        "{stdout}"
    );
    assert!(!stdout.contains(".."), "{stdout}");
    let _ = std::fs::remove_dir_all(dir);
}
