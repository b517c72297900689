//! `writ replay` on the real binary, over a decision log written by a real
//! `writ serve --decision-log` that decided the default pack's example
//! requests (the cases of `tests/pack/*.json` that use the pack alone).

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::server::*;
use common::{run, Run};
use serde_json::Value;

/// The requests of the pack's example cases, as JSON text.
fn pack_requests() -> Vec<String> {
    writ::testgen::pack_requests()
        .expect("the pack's cases")
        .iter()
        .map(Value::to_string)
        .collect()
}

/// Runs a server over the default pack with `extra` options, posts every
/// request, stops it, and returns the log's text.
fn serve_and_log(extra: &[&str], requests: &[String], scratch: &Arc<TempDir>) -> String {
    let log = scratch.file(&format!("decisions-{}.jsonl", extra.len()));
    let log_arg = log.display().to_string();
    let mut args = vec!["--policy", "default", "--decision-log", &log_arg];
    args.extend_from_slice(extra);
    let mut server = Server::start(&args, scratch);
    let mut decided = 0;
    for request in requests {
        let reply = server.post("/v1/decide", request);
        if reply.status == 200 {
            decided += 1;
        }
    }
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(20)), "server stopped");
    let text = std::fs::read_to_string(&log).expect("log written");
    assert_eq!(text.lines().count(), decided, "one line per decision");
    assert!(decided > 50, "the pack's examples were decided: {decided}");
    text
}

struct Fixture {
    scratch: Arc<TempDir>,
    log: PathBuf,
    lines: usize,
}

/// One server run, shared by the tests.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let scratch = Arc::new(TempDir::new("replay"));
        let text = serve_and_log(&[], &pack_requests(), &scratch);
        let log = scratch.file("pack.jsonl");
        std::fs::write(&log, &text).expect("write log");
        Fixture {
            scratch,
            log,
            lines: text.lines().count(),
        }
    })
}

/// A copy of the default pack with `edit` applied to one file.
fn edited_pack(name: &str, file: &str, edit: impl Fn(&str) -> String) -> PathBuf {
    let dir = fixture().scratch.file(name);
    std::fs::create_dir_all(&dir).expect("pack dir");
    for entry in std::fs::read_dir(Path::new(ROOT).join("policies/default")).expect("pack") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("pack file");
        let file_name = path.file_name().expect("name");
        let text = if file_name == file { edit(&text) } else { text };
        std::fs::write(dir.join(file_name), text).expect("copy");
    }
    dir
}

fn replay(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["replay"];
    all.extend_from_slice(args);
    let output = run(Run::new(&all, Duration::from_secs(60)));
    (
        output.status.code().expect("exit code"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn json_report(args: &[&str]) -> (i32, Value) {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--format", "json"]);
    let (code, stdout, stderr) = replay(&all);
    let value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("JSON report: {e}\n{stdout}\n{stderr}"));
    (code, value)
}

/// Decision ids and scratch paths differ per run; the rest is stable.
fn stable(text: &str) -> String {
    let ids = regex::Regex::new(r"\(([0-9a-f-]{8,})\)").expect("regex");
    ids.replace_all(text, "(<decision-id>)").into_owned()
}

fn log_arg() -> String {
    fixture().log.display().to_string()
}

#[test]
fn the_same_pack_changes_nothing() {
    let log = log_arg();
    let (code, report) = json_report(&["--log", &log, "--policy", "default"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["replayed"], fixture().lines);
    assert_eq!(report["changed"], 0);
    assert_eq!(report["changes"].as_array().map(Vec::len), Some(0));
    assert_eq!(report["malformed"].as_array().map(Vec::len), Some(0));
    // The pack as files on disk is the same set as the embedded one.
    let dir = Path::new(ROOT)
        .join("policies/default")
        .display()
        .to_string();
    let (code, report) = json_report(&["--log", &log, "--policy", &dir, "--policy-old", "default"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["baseline"], "old policy set");
    assert_eq!(report["changed"], 0);
}

#[test]
fn a_raised_restricted_cap_is_a_longer_ttl_and_widens() {
    let pack = edited_pack("raised-ttl", "ttl.writ", |text| {
        let edited = text.replace("const ttl_restricted = 15m;", "const ttl_restricted = 1h;");
        assert_ne!(edited, text, "the cap is in ttl.writ");
        edited
    });
    let pack = pack.display().to_string();
    let log = log_arg();
    let (code, report) = json_report(&["--log", &log, "--policy", &pack]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["widens"], true);
    let longer = report["counts"]["ttl_longer"].as_u64().expect("ttl_longer");
    assert!(longer >= 1, "{report}");
    let changes = report["changes"].as_array().expect("changes");
    assert!(
        changes.iter().all(|c| c["kind"] == "ttl_longer"),
        "{report}"
    );
    for change in changes {
        let after: Vec<&str> = change["rules_after"]
            .as_array()
            .expect("rules")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(after.contains(&"ttl.restricted"), "{change}");
    }
    // Not failing on widening: exit 0, same report.
    let (code, _) = json_report(&["--log", &log, "--policy", &pack, "--fail-on", "none"]);
    assert_eq!(code, 0);
    let (code, text, _) = replay(&["--log", &log, "--policy", &pack]);
    assert_eq!(code, 1);
    assert!(text.contains("ttl.restricted"), "{text}");
    insta::assert_snapshot!("raised_ttl_text", stable(&text));
    let (code, markdown, _) = replay(&["--log", &log, "--policy", &pack, "--format", "markdown"]);
    assert_eq!(code, 1);
    insta::assert_snapshot!("raised_ttl_markdown", stable(&markdown));
}

#[test]
fn a_removed_permit_flips_allows_to_denies_without_widening() {
    let pack = edited_pack("no-owner-read", "baseline.writ", |text| {
        let permit = "@id(\"baseline.owner-read\")\n@control(\"NIST-CSF PR.AC-4\", \"OWASP-NHI NHI5\")\npermit if action == \"read\" and subject.owner == resource.owner\n  grant [\"read:{resource.id}\"] for ttl_owner_read;\n";
        let edited = text.replace(permit, "");
        assert_ne!(edited, text, "the permit is in baseline.writ");
        edited.replace("const ttl_owner_read = 1h;\n", "")
    });
    let pack = pack.display().to_string();
    let log = log_arg();
    let (code, report) = json_report(&["--log", &log, "--policy", &pack]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["widens"], false);
    let flips = report["counts"]["allow_to_deny"]
        .as_u64()
        .expect("allow_to_deny");
    assert!(flips >= 10, "{report}");
    assert_eq!(report["changed"].as_u64(), Some(flips), "{report}");
    let first = &report["changes"][0];
    assert!(
        first["rules_before"]
            .as_array()
            .expect("rules")
            .iter()
            .any(|r| r == "baseline.owner-read"),
        "{first}"
    );
    let (code, _) = json_report(&["--log", &log, "--policy", &pack, "--fail-on", "change"]);
    assert_eq!(code, 1);
    let (_, markdown, _) = replay(&["--log", &log, "--policy", &pack, "--format", "markdown"]);
    insta::assert_snapshot!("removed_permit_markdown", stable(&markdown));
}

#[test]
fn redacted_lines_are_not_replayable() {
    let scratch = Arc::new(TempDir::new("replay-redact"));
    let requests: Vec<String> = pack_requests().into_iter().take(60).collect();
    let text = serve_and_log(&["--redact", "subject.id"], &requests, &scratch);
    let log = scratch.file("redacted.jsonl");
    std::fs::write(&log, &text).expect("write");
    let with_id = text
        .lines()
        .filter(|l| l.contains("\"subject\":{\"id\""))
        .count();
    assert!(with_id > 0);
    let log = log.display().to_string();
    let (code, report) = json_report(&["--log", &log, "--policy", "default"]);
    assert_eq!(code, 0, "{report}");
    let redacted = report["not_replayable"].as_array().expect("list");
    assert_eq!(redacted.len(), with_id, "{report}");
    assert!(redacted
        .iter()
        .all(|r| r["why"] == "not replayable (redacted: subject.id)"));
    assert_eq!(
        report["replayed"].as_u64().map(|n| n as usize + with_id),
        Some(text.lines().count())
    );
    let (_, text, _) = replay(&["--log", &log, "--policy", "default"]);
    assert!(
        text.contains(&format!("not replayable: {with_id} line(s)")),
        "{text}"
    );
}

#[test]
fn a_truncated_last_line_is_reported_with_its_number() {
    let fixture = fixture();
    let mut text = std::fs::read_to_string(&fixture.log).expect("log");
    let last = text.lines().next().expect("a line").to_owned();
    text.push_str("not json at all\n");
    text.push_str(&last[..last.len() / 2]);
    let log = fixture.scratch.file("truncated.jsonl");
    std::fs::write(&log, &text).expect("write");
    let log = log.display().to_string();
    let (code, report) = json_report(&["--log", &log, "--policy", "default"]);
    assert_eq!(code, 0, "{report}");
    let malformed = report["malformed"].as_array().expect("list");
    assert_eq!(malformed.len(), 2, "{report}");
    assert_eq!(malformed[0]["line"], fixture.lines + 1);
    assert_eq!(malformed[1]["line"], fixture.lines + 2);
    assert!(malformed[1]["why"]
        .as_str()
        .is_some_and(|w| w.starts_with("truncated")));
    assert_eq!(report["replayed"], fixture.lines);
    // Nothing readable at all is bad input.
    let broken = fixture.scratch.file("broken.jsonl");
    std::fs::write(&broken, "{\"half\n").expect("write");
    let (code, _, stderr) = replay(&[
        "--log",
        &broken.display().to_string(),
        "--policy",
        "default",
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no decision line"), "{stderr}");
}

/// What `writ eval` decides for `request` under `policy`: the parts replay
/// compares (decision, scope, TTL, obligations).
fn eval_outcome(policy: &str, request: &Value) -> Value {
    let args = ["eval", "--policy", policy, "--request", "-"];
    let mut run_args = Run::new(&args, Duration::from_secs(60));
    run_args.stdin = Some(request.to_string().into_bytes());
    let output = run(run_args);
    let text = String::from_utf8_lossy(&output.stdout);
    let decision: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "eval answered JSON: {e}\n{text}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let mut obligations: Vec<String> = decision["obligations"]
        .as_array()
        .map(|all| all.iter().map(Value::to_string).collect())
        .unwrap_or_default();
    obligations.sort();
    let mut scope: Vec<String> = decision["scope"]
        .as_array()
        .map(|all| all.iter().map(Value::to_string).collect())
        .unwrap_or_default();
    scope.sort();
    serde_json::json!({
        "decision": decision["decision"],
        "scope": scope,
        "ttl": decision["ttl"],
        "obligations": obligations,
    })
}

/// Every request of the log decided again by `writ eval` under the old and
/// the new pack: the lines where the two differ are exactly the lines
/// replay reports as changed, and the old pack's answer is the logged one.
#[test]
fn the_changed_lines_are_those_writ_eval_decides_differently() {
    let dir = fixture().scratch.file("eval-check");
    std::fs::create_dir_all(&dir).expect("pack dir");
    for entry in std::fs::read_dir(Path::new(ROOT).join("policies/default")).expect("pack") {
        let path = entry.expect("entry").path();
        let mut text = std::fs::read_to_string(&path).expect("pack file");
        let name = path.file_name().expect("name").to_owned();
        if name == "ttl.writ" {
            text = text.replace("const ttl_restricted = 15m;", "const ttl_restricted = 1h;");
        }
        if name == "baseline.writ" {
            // The owner-read permit gives 1 h; at 30 m every read it
            // grants gets shorter, and the pack's other caps still apply.
            text = text.replace("const ttl_owner_read = 1h;", "const ttl_owner_read = 30m;");
        }
        std::fs::write(dir.join(&name), text).expect("copy");
    }
    let new = dir.display().to_string();
    let log = log_arg();
    let (_, report) = json_report(&["--log", &log, "--policy", &new, "--fail-on", "none"]);
    assert_eq!(report["replayed"], fixture().lines, "{report}");
    let mut replayed: Vec<u64> = report["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter_map(|c| c["line"].as_u64())
        .collect();
    replayed.dedup();
    assert_eq!(report["changed"].as_u64(), Some(replayed.len() as u64));

    let text = std::fs::read_to_string(&fixture().log).expect("log");
    let mut by_eval = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let logged: Value = serde_json::from_str(line).expect("log line");
        let request = &logged["request"];
        let before = eval_outcome("default", request);
        let after = eval_outcome(&new, request);
        assert_eq!(
            before["decision"],
            logged["decision"],
            "line {}: eval of the old pack gives the logged decision",
            index + 1
        );
        if before != after {
            by_eval.push(index as u64 + 1);
        }
    }
    assert!(
        by_eval.len() >= 5,
        "the edit changes some of the pack's examples: {by_eval:?}"
    );
    assert_eq!(replayed, by_eval, "{report}");
}
