//! `writ query` on the real binary: a witness that `writ eval` confirms,
//! "none" only with complete coverage, and "none found where it looked"
//! when the search was bounded.

mod common;

use common::{review_fixture as fixture, scratch, writ_texts as writ};
use serde_json::Value;

#[test]
fn a_witness_is_a_request_eval_decides_as_asked() {
    let policy = fixture("small-new");
    let (code, out, err) = writ(&[
        "query",
        "--policy",
        &policy,
        "--format",
        "json",
        "subject.kind == \"agent\" and allowed and ttl > 30m",
    ]);
    assert_eq!(code, 0, "{out} {err}");
    let answer: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(answer["found"], true, "{answer}");
    let request = &answer["witness"]["request"];
    assert_eq!(request["subject"]["kind"], "agent", "{answer}");
    let dir = scratch("query", "witness");
    let file = dir.join("request.json");
    std::fs::write(&file, request.to_string()).expect("write");
    let file = file.display().to_string();
    let (code, out, _) = writ(&["eval", "--policy", &policy, "--request", &file]);
    assert_eq!(code, 0, "writ eval allows the witness: {out}");
    let decision: Value = serde_json::from_str(&out).expect("decision");
    assert!(
        decision["ttl"].as_u64().is_some_and(|t| t > 1800),
        "{decision}"
    );
    // The text answer carries the trace, as `writ eval --explain` does.
    let (_, text, _) = writ(&[
        "query",
        "--policy",
        &policy,
        "subject.kind == \"agent\" and allowed",
    ]);
    assert!(text.starts_with("found: "), "{text}");
    assert!(text.contains("ALLOW"), "{text}");
}

#[test]
fn none_only_when_every_request_was_covered() {
    let (code, out, err) = writ(&[
        "query",
        "--policy",
        &fixture("small-old"),
        "subject.kind == \"agent\" and allowed",
    ]);
    assert_eq!(code, 1, "{out} {err}");
    assert!(out.starts_with("none\ncoverage: complete"), "{out}");
    // A search cut short says so, and never answers a plain "none".
    let (code, out, _) = writ(&[
        "query",
        "--max-nodes",
        "50",
        "subject.kind == \"agent\" and effect == allow and scope matches \"deploy:*\"",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("none found where it looked\n"), "{out}");
    assert!(out.contains("coverage: bounded"), "{out}");
}

#[test]
fn a_query_that_does_not_check_is_an_error() {
    let (code, out, err) = writ(&["query", "subject.kind == 3 and"]);
    assert_eq!(code, 2, "{out} {err}");
    assert!(err.contains("query"), "{err}");
    let (code, _, err) = writ(&["query", "obligation sometimes"]);
    assert_eq!(code, 2);
    assert!(err.contains("`obligation` names a kind"), "{err}");
}

#[test]
fn the_markdown_answer_quotes_the_question_and_the_text_answer() {
    let policy = fixture("small-new");
    let question = r#"allowed and subject.kind == "agent""#;
    let (code, out, err) = writ(&[
        "query", "--policy", &policy, question, "--format", "markdown",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(
            "### `writ query`\n\n`allowed and subject.kind == \"agent\"`\n\n```text\nfound: "
        ),
        "{out}"
    );
    assert!(out.contains("\ncoverage: complete"), "{out}");
    assert!(out.ends_with("```\n"), "{out}");
}
