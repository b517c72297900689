//! Runs every example of `docs/language.md` (and the policies in
//! `README.md`), so the reference cannot drift from the implementation.
//!
//! # The convention
//!
//! Fenced code blocks are told apart by their info string:
//!
//! - ` ```writ `: a policy. It must compile on its own with
//!   [`writ::Engine::compile`], as the single file `example.writ`; it may use
//!   only the constants it defines itself.
//! - ` ```writ,error(CODE, ...) `: a policy that must not compile. The codes
//!   of its diagnostics, in the order reported, must be exactly the listed
//!   ones (`writ,error(writ::check::type_mismatch)`).
//! - ` ```json,data `: a JSON object, the `--data` of the next ` ```writ `
//!   block (of either kind). A data block must be followed by one.
//! - ` ```json,request `: a request, valid JSON without comments, decided by
//!   the last ` ```writ ` block that compiled. Every request block must be
//!   followed by a decision block before the next request or policy.
//! - ` ```json,decision `: what the request before it must decide, written
//!   as a partial decision. It must name `decision`; any other field of the
//!   decision (`scope`, `ttl`, `obligations`, `reasons`, `dropped_scope`,
//!   `errors`, `trace`) is checked when present. An object matches when each
//!   of its keys matches the same key of the decision; an array matches when
//!   it has the same length and matches element by element, in order; other
//!   values must be equal. In `obligations`, a bare string stands for an
//!   obligation of that kind (`["approval"]`).
//!
//! Any other block (` ```sh `, ` ```json `, ` ```text `, ` ```rust `) is prose and
//! is not run. Each request is also decided by the naive evaluator (every
//! rule in order, no tree), which must agree with the tree on everything but
//! the trace entries of rules that did not match.
//!
//! A block that does not behave is reported with its file and line, after
//! all blocks have run; the docs must keep at least [`MIN_LANGUAGE_EXAMPLES`]
//! policy blocks, so they cannot silently lose their examples.

use std::path::Path;

use serde_json::Value;
use writ::{Engine, Request};

/// The least number of ` ```writ ` blocks `docs/language.md` may hold.
const MIN_LANGUAGE_EXAMPLES: usize = 30;

/// The name every example policy is compiled under (it shows in traces).
const EXAMPLE_FILE: &str = "example.writ";

/// One fenced block: the line of its opening fence, its tag, its text.
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    info: String,
    text: String,
}

/// The fenced blocks of a markdown document, in order.
fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match open.take() {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    open = Some(Block {
                        line: index + 1,
                        info: info.trim().to_owned(),
                        text: String::new(),
                    });
                }
            }
            Some(mut block) => {
                if trimmed.trim_end() == "```" {
                    out.push(block);
                } else {
                    block.text.push_str(line);
                    block.text.push('\n');
                    open = Some(block);
                }
            }
        }
    }
    if let Some(block) = open {
        // An unclosed fence swallows the rest of the file: report it.
        out.push(Block {
            line: block.line,
            info: "unclosed".to_owned(),
            text: block.text,
        });
    }
    out
}

/// What a block is, by its info string.
enum Tag {
    Policy { expect_codes: Option<Vec<String>> },
    Data,
    Request,
    Decision,
    Unclosed,
    Prose,
}

fn tag(info: &str) -> Result<Tag, String> {
    if info == "unclosed" {
        return Ok(Tag::Unclosed);
    }
    if info == "writ" {
        return Ok(Tag::Policy { expect_codes: None });
    }
    if let Some(rest) = info.strip_prefix("writ,error(") {
        let Some(list) = rest.strip_suffix(')') else {
            return Err(format!("malformed info string `{info}`"));
        };
        let codes: Vec<String> = list.split(',').map(|c| c.trim().to_owned()).collect();
        if codes.iter().any(String::is_empty) {
            return Err(format!("empty code in `{info}`"));
        }
        return Ok(Tag::Policy {
            expect_codes: Some(codes),
        });
    }
    Ok(match info {
        "json,data" => Tag::Data,
        "json,request" => Tag::Request,
        "json,decision" => Tag::Decision,
        other if other.starts_with("writ") => {
            return Err(format!("unknown info string `{other}`"));
        }
        _ => Tag::Prose,
    })
}

/// Compares an expected (partial) value with the actual one, pushing one
/// message per difference.
fn compare(expected: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(want), Value::Object(have)) => {
            for (key, value) in want {
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match have.get(key) {
                    Some(found) => compare(value, found, &at, out),
                    None => out.push(format!("`{at}` is absent from the decision")),
                }
            }
        }
        (Value::Array(want), Value::Array(have)) => {
            if want.len() != have.len() {
                out.push(format!(
                    "`{path}` has {} element(s), expected {}: {}",
                    have.len(),
                    want.len(),
                    Value::Array(have.clone())
                ));
                return;
            }
            for (index, (w, h)) in want.iter().zip(have).enumerate() {
                let at = format!("{path}[{index}]");
                match (path, w) {
                    ("obligations", Value::String(kind)) => {
                        if h.get("kind") != Some(&Value::String(kind.clone())) {
                            out.push(format!("`{at}` is {h}, expected kind `{kind}`"));
                        }
                    }
                    _ => compare(w, h, &at, out),
                }
            }
        }
        _ => {
            if expected != actual {
                out.push(format!("`{path}` is {actual}, expected {expected}"));
            }
        }
    }
}

/// A decision without the trace entries of rules that did not match: the
/// tree skips rules the naive evaluator lists as not matched, and nothing
/// else may differ between the two.
fn decisive(decision: &writ::Decision) -> (String, Vec<String>) {
    let mut rest = decision.clone();
    let trace = std::mem::take(&mut rest.trace)
        .into_iter()
        .filter(|entry| entry.outcome != writ::decision::Outcome::NotMatched)
        .map(|entry| format!("{entry:?}"))
        .collect();
    (rest.to_json(), trace)
}

/// What the runner learnt from one document.
struct Report {
    policies: usize,
    requests: usize,
    failures: Vec<String>,
}

/// Runs every block of `markdown`; `name` prefixes the line numbers.
fn run(name: &str, markdown: &str) -> Report {
    let mut report = Report {
        policies: 0,
        requests: 0,
        failures: Vec::new(),
    };
    let mut fail = |line: usize, message: String| {
        report.failures.push(format!("{name}:{line}: {message}"));
    };
    let mut data: Option<(usize, Value)> = None;
    // The last policy that compiled, with the line of its block.
    let mut engine: Option<(usize, Engine)> = None;
    // A request waiting for its decision block.
    let mut request: Option<(usize, Request)> = None;

    for block in blocks(markdown) {
        let line = block.line;
        let kind = match tag(&block.info) {
            Ok(kind) => kind,
            Err(message) => {
                fail(line, message);
                continue;
            }
        };
        if matches!(kind, Tag::Policy { .. } | Tag::Request | Tag::Data) {
            if let Some((at, _)) = request.take() {
                fail(
                    at,
                    "request block without a decision block after it".to_owned(),
                );
            }
        }
        match kind {
            Tag::Prose => {}
            Tag::Unclosed => fail(line, "code block is never closed".to_owned()),
            Tag::Data => {
                if let Some((at, _)) = data.take() {
                    fail(at, "data block not followed by a writ block".to_owned());
                }
                match serde_json::from_str::<Value>(&block.text) {
                    Ok(value) => data = Some((line, value)),
                    Err(error) => fail(line, format!("data is not JSON: {error}")),
                }
            }
            Tag::Policy { expect_codes } => {
                report.policies += 1;
                let given = data.take().map(|(_, value)| value);
                let result = Engine::compile([(EXAMPLE_FILE, block.text.as_str())], given.as_ref());
                engine = None;
                match (result, expect_codes) {
                    (Ok(compiled), None) => engine = Some((line, compiled)),
                    (Err(diagnostics), None) => fail(
                        line,
                        format!("policy does not compile:\n{}", diagnostics.render(false)),
                    ),
                    (Ok(_), Some(codes)) => fail(
                        line,
                        format!("policy compiles, expected {}", codes.join(", ")),
                    ),
                    (Err(diagnostics), Some(codes)) => {
                        if diagnostics.codes() != codes {
                            fail(
                                line,
                                format!(
                                    "diagnostics are {:?}, expected {codes:?}:\n{}",
                                    diagnostics.codes(),
                                    diagnostics.render(false)
                                ),
                            );
                        }
                    }
                }
            }
            Tag::Request => {
                report.requests += 1;
                if engine.is_none() {
                    fail(
                        line,
                        "request block without a compiled policy before it".to_owned(),
                    );
                    continue;
                }
                match Request::from_json(&block.text) {
                    Ok(parsed) => request = Some((line, parsed)),
                    Err(error) => fail(line, format!("request is rejected: {error}")),
                }
            }
            Tag::Decision => {
                let Some((request_line, parsed)) = request.take() else {
                    fail(
                        line,
                        "decision block without a request block before it".to_owned(),
                    );
                    continue;
                };
                let Some((_, compiled)) = &engine else {
                    continue;
                };
                let expected: Value = match serde_json::from_str(&block.text) {
                    Ok(value) => value,
                    Err(error) => {
                        fail(line, format!("decision is not JSON: {error}"));
                        continue;
                    }
                };
                if expected.get("decision").is_none() {
                    fail(line, "a decision block must name `decision`".to_owned());
                    continue;
                }
                let decision = compiled.decide(&parsed);
                let naive = compiled.decide_naive(&parsed);
                if decisive(&decision) != decisive(&naive) {
                    fail(
                        request_line,
                        format!(
                            "the tree and the naive evaluator disagree:\n{}\n{}",
                            decision.to_json(),
                            naive.to_json()
                        ),
                    );
                }
                let actual = match serde_json::to_value(&decision) {
                    Ok(value) => value,
                    Err(error) => {
                        fail(line, format!("decision does not serialise: {error}"));
                        continue;
                    }
                };
                let mut differences = Vec::new();
                compare(&expected, &actual, "", &mut differences);
                if !differences.is_empty() {
                    fail(
                        line,
                        format!(
                            "decision differs:\n  {}\nactual decision: {}",
                            differences.join("\n  "),
                            decision.to_json()
                        ),
                    );
                }
            }
        }
    }
    if let Some((at, _)) = request {
        fail(
            at,
            "request block without a decision block after it".to_owned(),
        );
    }
    if let Some((at, _)) = data {
        fail(at, "data block not followed by a writ block".to_owned());
    }
    report
}

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

fn assert_clean(report: &Report) {
    assert!(
        report.failures.is_empty(),
        "{} example(s) do not behave:\n\n{}",
        report.failures.len(),
        report.failures.join("\n\n")
    );
}

#[test]
fn language_reference_examples_run() {
    let report = run("docs/language.md", &read("docs/language.md"));
    assert_clean(&report);
    assert!(
        report.policies >= MIN_LANGUAGE_EXAMPLES,
        "docs/language.md has {} writ blocks, expected at least {MIN_LANGUAGE_EXAMPLES}",
        report.policies
    );
    assert!(report.requests > 0, "docs/language.md decides no request");
}

#[test]
fn readme_examples_run() {
    let report = run("README.md", &read("README.md"));
    assert_clean(&report);
    assert!(report.policies > 0, "README.md has no writ block");
}

#[test]
fn the_runner_catches_a_misbehaving_example() {
    let markdown = "text\n\n```writ\n@id(\"p\") permit grant [\"read:x\"] for 5m;\n```\n\n\
        ```json,request\n{}\n```\n\n```json,decision\n{\"decision\": \"allow\", \"ttl\": 60}\n```\n\n\
        ```writ,error(writ::check::unknown_name)\npermit if nobody == \"x\";\n```\n\n\
        ```writ,error(writ::check::unknown_name)\npermit;\n```\n";
    let report = run("sample.md", markdown);
    assert_eq!(report.policies, 3);
    assert_eq!(report.requests, 1);
    assert_eq!(report.failures.len(), 2, "{:?}", report.failures);
    assert!(
        report.failures[0].starts_with("sample.md:11: decision differs"),
        "{}",
        report.failures[0]
    );
    assert!(report.failures[0].contains("`ttl` is 300, expected 60"));
    assert!(
        report.failures[1].starts_with("sample.md:19: policy compiles"),
        "{}",
        report.failures[1]
    );
}

#[test]
fn partial_decisions_match_obligation_kinds_and_objects() {
    let actual = serde_json::json!({
        "decision": "allow",
        "obligations": [{"kind": "approval", "rule": "a"}, {"kind": "revoke_on", "event": "task_end", "rule": "b"}],
    });
    let mut differences = Vec::new();
    let expected = serde_json::json!({"obligations": ["approval", {"kind": "revoke_on", "event": "task_end"}]});
    compare(&expected, &actual, "", &mut differences);
    assert!(differences.is_empty(), "{differences:?}");
    let wrong = serde_json::json!({"obligations": ["log", {"event": "deploy"}], "scop": []});
    compare(&wrong, &actual, "", &mut differences);
    assert_eq!(differences.len(), 3, "{differences:?}");
}
