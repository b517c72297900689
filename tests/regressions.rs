//! Minimal reproductions of the crashes and hangs found while hardening
//! writ (issue 7), each with the behaviour that is correct. See
//! docs/security.md for how each was found.
//!
//! Every reproduction runs the `writ` binary as a child process, so that a
//! stack overflow (which aborts the whole process) or a hang fails only its
//! own test: the helper kills a child that overruns its time and reports a
//! child killed by a signal. Where the stack matters, the child runs under
//! `ulimit -s` with 2 MiB, the stack of a spawned Rust thread and of a tokio
//! worker, where `writ serve` decides.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

mod common;

use common::{assert_refused, run, stderr, Run};

/// A fresh scratch directory holding `files`.
fn scratch(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = common::scratch("regressions", name);
    for (file, text) in files {
        std::fs::write(dir.join(file), text).expect("write a scratch file");
    }
    dir
}

/// Runs `writ args` in `dir`, with the stack limited to `stack_kib` when
/// given; kills it after `limit`. Fails on a timeout or a signal.
fn writ(dir: &Path, stack_kib: Option<u32>, args: &[&str], limit: Duration) -> Output {
    run(Run {
        dir: Some(dir),
        stack_kib,
        ..Run::new(args, limit)
    })
}

/// Index chains (`x[0][0]...`) nest the expression as deeply as `not`
/// chains do, but the parser's limits count `.` and not `[`: a 60 KB rule
/// passed every limit and overflowed the checker's stack (a debug build
/// crashed from 1,000 indexes, a release build from about 16,000, on the
/// 8 MiB main thread). Correct: refused as an over-long expression.
#[test]
fn index_chains_count_toward_the_operator_limit() {
    let policy = format!("permit if context.a{} == 1;\n", "[0]".repeat(20_000));
    let dir = scratch("index-chain", &[("chain.writ", &policy)]);
    let output = writ(
        &dir,
        None,
        &["check", "chain.writ"],
        Duration::from_secs(60),
    );
    assert_refused(&output, 1, "writ::limits::expression_too_long");
    let _ = std::fs::remove_dir_all(dir);
}

/// Template holes (`"{...}"` in grants, audiences and `because`) are parsed
/// on their own, without the parser's limits: a 12 KB string (within the
/// 16 KiB string limit) holding 3,000 `not`s overflowed the stack (a debug
/// build from 1,000, a release build in a 2 MiB thread). Correct: the
/// limits apply inside holes too.
#[test]
fn template_holes_obey_the_expression_limits() {
    let nots = format!("forbid because \"{{{}true}}\";\n", "not ".repeat(3_000));
    let indexes = format!(
        "permit grant [\"read:{{context.a{}}}\"];\n",
        "[0]".repeat(4_000)
    );
    let dir = scratch(
        "template-holes",
        &[("nots.writ", &nots), ("indexes.writ", &indexes)],
    );
    for file in ["nots.writ", "indexes.writ"] {
        let output = writ(&dir, Some(2048), &["check", file], Duration::from_secs(60));
        assert_eq!(output.status.code(), Some(1), "{file}: {}", stderr(&output));
        assert!(
            stderr(&output).contains("writ::limits::"),
            "{file}: {}",
            stderr(&output)
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// `matches` backtracks: each `*` tries every split of the rest of the
/// text, so a pattern with k stars costs O(n^k) on a text of n bytes that
/// does not match. A policy author writes the pattern; the request (any
/// string attribute, up to the 16 MiB body) is the attacker's. With
/// `"*a*a*a*a*a*a*a*b"` a 40-byte `subject.id` took 24 s and a 60-byte one
/// over a minute (debug build); with the ordinary `"spiffe://*/ns/*/sa/*"`
/// a 16 KiB id took 11.5 s, growing quadratically. Correct: glob matching
/// linear in the text (per pattern part), as in the usual two-pointer
/// algorithm with one backtrack point.
#[test]
fn glob_matching_does_not_backtrack_exponentially() {
    let many_stars = "permit if subject.id matches \"*a*a*a*a*a*a*a*b\" grant [\"read:x\"];\n";
    let spiffe = "permit if subject.id matches \"spiffe://*/ns/*/sa/*\" grant [\"read:x\"];\n";
    let short = serde_json::json!({"subject": {"id": "a".repeat(60)}}).to_string();
    let long = serde_json::json!({
        "subject": {"id": format!("spiffe://{}", "/ns/".repeat(16_384))}
    })
    .to_string();
    let dir = scratch(
        "glob",
        &[
            ("stars.writ", many_stars),
            ("spiffe.writ", spiffe),
            ("short.json", &short),
            ("long.json", &long),
        ],
    );
    for (policy, request) in [("stars.writ", "short.json"), ("spiffe.writ", "long.json")] {
        let output = writ(
            &dir,
            None,
            &["eval", "-p", policy, "-r", request, "--format", "text"],
            Duration::from_secs(10),
        );
        // Neither id matches, so the answer is deny (exit 1).
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The glob matcher recurses once per pattern part, so a 16,000-`?`
/// pattern (within the string limit) overflowed a 2 MiB stack while
/// matching a 16,000-byte id. Correct: matching does not recurse.
#[test]
fn long_glob_patterns_do_not_overflow_the_stack() {
    let policy = format!(
        "permit if subject.id matches \"{}\" grant [\"read:x\"];\n",
        "?".repeat(16_000)
    );
    let request = serde_json::json!({"subject": {"id": "a".repeat(16_000)}}).to_string();
    let dir = scratch("glob-depth", &[("p.writ", &policy), ("r.json", &request)]);
    let output = writ(
        &dir,
        Some(2048),
        &["eval", "-p", "p.writ", "-r", "r.json", "--format", "text"],
        Duration::from_secs(30),
    );
    // 16,000 `?` match exactly 16,000 characters.
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let _ = std::fs::remove_dir_all(dir);
}

/// Holes that are plain paths (`{resource.id}`) are built without the
/// parser, and that fast path skipped the limits: a 16 KB
/// `because "{context.a.a....a}"` (8,000 fields) nested the expression
/// 8,000 deep and overflowed even the 8 MiB main thread of `writ check`.
/// Correct: refused as an over-long expression, like the same path in a
/// condition.
#[test]
fn plain_path_template_holes_obey_the_limits() {
    let policy = format!("forbid because \"{{context{}}}\";\n", ".a".repeat(8_000));
    let dir = scratch("plain-path-hole", &[("dots.writ", &policy)]);
    let output = writ(
        &dir,
        Some(2048),
        &["check", "dots.writ"],
        Duration::from_secs(60),
    );
    assert_refused(&output, 1, "writ::limits::expression_too_long");
    let _ = std::fs::remove_dir_all(dir);
}
