//! Fixture files and the test runner behind `writ test` (and `cargo test`).
//!
//! A fixture file (JSON) names the policies it runs against and holds cases:
//!
//! ```json
//! {
//!   "policies": ["default"],
//!   "data": {"max_recent_issuances": 3},
//!   "cases": [
//!     {"name": "ci deploys", "request": {"action": "deploy"},
//!      "expect": {"decision": "deny", "reasons": ["identity.owner"]}}
//!   ]
//! }
//! ```
//!
//! `policies` are paths relative to the fixture file (files or directories
//! of `.writ` files), or `default` for the embedded pack; it defaults to
//! the pack. `expect` takes contract.md's fields: `decision`, `scope`
//! (exact), `ttl` (exact), `ttl_max`, `obligations` (kinds that must be
//! present; `revoke_on:task_end` or `audience:VALUE` also pins the event or
//! value), `reasons` (ids that must be present), and also
//! `dropped_scope` (exact), `errors` (rule ids that must have errored) and
//! `no_obligations` (kinds that must be absent).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::decision::{Decision, Effect};
use crate::engine::Engine;
use crate::request::Request;

/// A fixture file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureFile {
    /// Policy paths relative to the file, or `default`.
    #[serde(default)]
    pub policies: Vec<String>,
    /// Data overriding constants.
    #[serde(default)]
    pub data: Option<Value>,
    /// The cases.
    pub cases: Vec<Case>,
}

/// One case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Its name.
    pub name: String,
    /// The request, as JSON (kept raw so that bad requests can be tested).
    pub request: Value,
    /// What the decision must show.
    pub expect: Expect,
}

/// Expectations on a decision.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `allow` or `deny`.
    pub decision: Effect,
    /// Exact scope.
    pub scope: Option<Vec<String>>,
    /// Exact TTL.
    pub ttl: Option<u64>,
    /// Upper bound on the TTL.
    pub ttl_max: Option<u64>,
    /// Obligation kinds that must be present.
    pub obligations: Option<Vec<String>>,
    /// Obligation kinds that must be absent.
    pub no_obligations: Option<Vec<String>>,
    /// Rule ids that must be among the reasons.
    pub reasons: Option<Vec<String>>,
    /// Exact dropped scope.
    pub dropped_scope: Option<Vec<String>>,
    /// Rule ids that must have reported an error (`request` for a rejected request).
    pub errors: Option<Vec<String>>,
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// `file: case name`.
    pub name: String,
    /// What did not hold; empty when the case passed.
    pub failures: Vec<String>,
    /// The decision (None when the request could not be parsed).
    pub decision: Option<Decision>,
}

/// A whole run.
#[derive(Debug, Default)]
pub struct Report {
    /// Every case, in file order.
    pub cases: Vec<CaseResult>,
    /// Problems loading files (counted as failures).
    pub load_errors: Vec<String>,
    /// Per rule id: how many cases matched it (for `--coverage`).
    pub coverage: BTreeMap<String, usize>,
    /// Every rule id of every policy set used, in order.
    pub rules: Vec<String>,
}

impl Report {
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.failures.is_empty()).count()
    }

    /// Cases that failed, plus files that could not be loaded.
    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed() + self.load_errors.len()
    }

    /// The closing line: `N passed, M failed`.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed(), self.failed())
    }
}

/// Finds fixture files under the paths, sorted: files named directly, and
/// the `*.json` files below directories that hold a fixture (an object with
/// `cases`); other JSON there (example requests, data) is left alone.
/// Directories are walked as [`crate::load::walk`] does: a symlink loop is
/// an error.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    for path in paths {
        if path.is_dir() {
            let below = crate::load::walk(path, "json")?;
            found.extend(
                below
                    .into_iter()
                    .map(|file| file.path)
                    .filter(|file| is_fixture(file)),
            );
        } else {
            found.push(path.clone());
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// True when the file holds a JSON object with a `cases` key.
fn is_fixture(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .is_some_and(|value| value.get("cases").is_some())
}

/// Runs every case of every file.
pub fn run(files: &[PathBuf]) -> Report {
    run_with(files, None)
}

/// Runs every case of every file, verifying `subject.token`s against a
/// trust file at a given time (`writ test --trust FILE --at TIME`).
pub fn run_with(files: &[PathBuf], trust: Option<(&crate::identity::Trust, i64)>) -> Report {
    let mut report = Report::default();
    for file in files {
        run_file(file, &mut report, trust);
    }
    report
}

/// Reads a fixture file through the request reader, so that a duplicate
/// key in a case's request is refused here as it is by `writ eval` and the
/// server (rather than silently resolved by the file's parse).
fn read_fixture_json(text: &str) -> Result<FixtureFile, String> {
    use crate::request::json::{read_str, Limits};
    // A request sits three levels down: the file, `cases`, the case.
    let limits = Limits {
        max_bytes: usize::MAX,
        max_depth: crate::request::MAX_JSON_DEPTH + 3,
    };
    let value = read_str(text, limits).map_err(|e| e.to_string())?;
    serde_json::from_value(value).map_err(|e| e.to_string())
}

fn run_file(path: &Path, report: &mut Report, trust: Option<(&crate::identity::Trust, i64)>) {
    let display = path.display().to_string();
    let fixture: FixtureFile = match std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|text| read_fixture_json(&text))
    {
        Ok(f) => f,
        Err(error) => {
            report.load_errors.push(format!("{display}: {error}"));
            return;
        }
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let engine = match crate::load::load_policies(&fixture.policies, base).and_then(|files| {
        Engine::compile(files, fixture.data.as_ref()).map_err(|d| d.render(false))
    }) {
        Ok(engine) => engine,
        Err(error) => {
            report
                .load_errors
                .push(format!("{display}: policies do not compile:\n{error}"));
            return;
        }
    };
    for rule in &engine.policy().rules {
        if !report.rules.iter().any(|r| *r == *rule.id) {
            report.rules.push(rule.id.to_string());
            report.coverage.entry(rule.id.to_string()).or_insert(0);
        }
    }
    for case in &fixture.cases {
        let name = format!("{display}: {}", case.name);
        let text = case.request.to_string();
        let decision = match Request::from_json(&text) {
            Ok(request) => match trust {
                Some((trust, now)) => trust.decide(&engine, &request, now),
                None => engine.decide(&request),
            },
            Err(error) => Decision::rejected(error.to_string(), engine.digest()),
        };
        for entry in &decision.trace {
            if entry.outcome == crate::decision::Outcome::Matched {
                *report.coverage.entry(entry.rule.to_string()).or_insert(0) += 1;
            }
        }
        let failures = check_case(&case.expect, &decision);
        report.cases.push(CaseResult {
            name,
            failures,
            decision: Some(decision),
        });
    }
}

/// What does not hold of `decision` against `expect`.
pub fn check_case(expect: &Expect, decision: &Decision) -> Vec<String> {
    let mut failures = Vec::new();
    let show = |v: &dyn std::fmt::Debug| format!("{v:?}");
    if decision.decision != expect.decision {
        failures.push(format!(
            "decision: expected {}, got {}",
            show(&expect.decision).to_lowercase(),
            show(&decision.decision).to_lowercase()
        ));
    }
    if let Some(scope) = &expect.scope {
        if &decision.scope != scope {
            failures.push(format!(
                "scope: expected {scope:?}, got {:?}",
                decision.scope
            ));
        }
    }
    if let Some(ttl) = expect.ttl {
        if decision.ttl != ttl {
            failures.push(format!("ttl: expected {ttl}, got {}", decision.ttl));
        }
    }
    if let Some(max) = expect.ttl_max {
        if decision.ttl > max {
            failures.push(format!("ttl: expected at most {max}, got {}", decision.ttl));
        }
    }
    if let Some(kinds) = &expect.obligations {
        for kind in kinds {
            if !decision
                .obligations
                .iter()
                .any(|o| obligation_matches(o, kind))
            {
                failures.push(format!(
                    "obligations: expected `{kind}`, got {:?}",
                    kinds_of(decision)
                ));
            }
        }
    }
    if let Some(kinds) = &expect.no_obligations {
        for kind in kinds {
            if decision
                .obligations
                .iter()
                .any(|o| obligation_matches(o, kind))
            {
                failures.push(format!(
                    "obligations: expected no `{kind}`, got {:?}",
                    kinds_of(decision)
                ));
            }
        }
    }
    if let Some(reasons) = &expect.reasons {
        for reason in reasons {
            if !decision.reasons.contains(reason) {
                failures.push(format!(
                    "reasons: expected `{reason}`, got {:?}",
                    decision.reasons
                ));
            }
        }
    }
    if let Some(dropped) = &expect.dropped_scope {
        if &decision.dropped_scope != dropped {
            failures.push(format!(
                "dropped_scope: expected {dropped:?}, got {:?}",
                decision.dropped_scope
            ));
        }
    }
    if let Some(errors) = &expect.errors {
        for rule in errors {
            if !decision.errors.iter().any(|e| &e.rule == rule) {
                failures.push(format!(
                    "errors: expected an error from `{rule}`, got {:?}",
                    decision.errors.iter().map(|e| &e.rule).collect::<Vec<_>>()
                ));
            }
        }
    }
    failures
}

/// `approval` matches by kind; `revoke_on:task_end` and
/// `audience:k8s://x` also match the event or value.
fn obligation_matches(obligation: &crate::decision::ObligationOut, expected: &str) -> bool {
    match expected.split_once(':') {
        None => obligation.kind == expected,
        Some((kind, payload)) => {
            obligation.kind == kind
                && (obligation.event.as_deref() == Some(payload)
                    || obligation.value.as_deref() == Some(payload))
        }
    }
}

fn kinds_of(decision: &Decision) -> Vec<&str> {
    decision
        .obligations
        .iter()
        .map(|o| o.kind.as_str())
        .collect()
}

/// The text `writ test` prints: each failure with the trace lines that
/// explain it, then the coverage table if asked, then `N passed, M failed`.
pub fn render(report: &Report, coverage: bool) -> String {
    let mut out = String::new();
    for error in &report.load_errors {
        let _ = writeln!(out, "error: {error}");
    }
    for case in &report.cases {
        if case.failures.is_empty() {
            continue;
        }
        let _ = writeln!(out, "FAIL {}", case.name);
        for failure in &case.failures {
            let _ = writeln!(out, "  {failure}");
        }
        if let Some(decision) = &case.decision {
            let _ = writeln!(out, "  trace:");
            for entry in &decision.trace {
                let detail = match (&entry.failed, &entry.error) {
                    (Some(f), _) => format!("failed {} (saw {})", f.condition, f.saw),
                    (None, Some(e)) => format!("error: {e}"),
                    _ => entry.effect_text(),
                };
                let _ = writeln!(
                    out,
                    "    {:?} {} {} ({}) {}",
                    entry.outcome, entry.kind, entry.rule, entry.at, detail
                );
            }
            for error in &decision.errors {
                let _ = writeln!(out, "    error {}: {}", error.rule, error.message);
            }
        }
    }
    if coverage {
        let _ = writeln!(out, "coverage (cases that matched each rule):");
        let mut unexercised = Vec::new();
        for rule in &report.rules {
            let count = report.coverage.get(rule).copied().unwrap_or(0);
            let _ = writeln!(out, "  {count:>4}  {rule}");
            if count == 0 {
                unexercised.push(rule.as_str());
            }
        }
        if unexercised.is_empty() {
            let _ = writeln!(out, "every rule is exercised");
        } else {
            let _ = writeln!(out, "not exercised: {}", unexercised.join(", "));
        }
    }
    let _ = writeln!(out, "{}", report.summary());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_yield_only_fixtures() {
        let dir = std::env::temp_dir().join(format!("writ-discover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let fixture = dir.join("a.json");
        let request = dir.join("b.json");
        std::fs::write(&fixture, r#"{"cases": []}"#).expect("write");
        std::fs::write(&request, r#"{"subject": {}}"#).expect("write");
        assert_eq!(
            discover(std::slice::from_ref(&dir)),
            Ok(vec![fixture.clone()])
        );
        // A file named directly is taken as a fixture, and fails to load.
        assert_eq!(
            discover(std::slice::from_ref(&request)),
            Ok(vec![request.clone()])
        );
        let report = run(&[request]);
        assert_eq!(report.failed(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_duplicate_key_in_a_fixture_is_a_load_error() {
        let text = r#"{"cases": [{"name": "x", "request": {"subject": {"attested": false, "attested": true}}, "expect": {"decision": "deny"}}]}"#;
        let error = read_fixture_json(text).expect_err("duplicate");
        assert!(
            error.contains("duplicate key at `cases[0].request.subject.attested`"),
            "{error}"
        );
    }
}
