//! One test per limit: an oversized or over-deep input is refused with a
//! clear error, and nothing panics, overflows the stack or hangs.
//!
//! Refusals must not recurse: the library-level tests run the refused input
//! in a thread with a 256 KiB stack, far less than the input would need if
//! any phase recursed over it. Each test also bounds its time: generous
//! (a loaded two-core CI machine, a debug build), but far below what a
//! quadratic or recursive pass over the input would take.
//!
//! The CLI tests run the `writ` binary as a child process, kill it if it
//! overruns, and check its exit code and message.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use miette::Diagnostic;
use writ::engine::limits::{MAX_FILE_BYTES, MAX_RULES};
use writ::parser::limits::{MAX_NESTING, MAX_OPERATORS, MAX_STRING};
use writ::request::{JsonError, RequestError, MAX_JSON_DEPTH};
use writ::{Engine, Request};

mod common;

use common::{assert_refused, run, stderr, Run};

/// The stack refusals must fit in.
const SMALL_STACK: usize = 256 * 1024;

/// The stack the deepest *accepted* expressions are compiled in here: the
/// phases after parsing recurse over expressions, and in a debug build 511
/// nested `not`s need between 4 and 8 MiB (0.5 to 1 MiB in release; see
/// "Stack use within the limits" in docs/security.md).
const ROOMY_STACK: usize = 16 * 1024 * 1024;

/// Runs `work` in a thread with a small stack, and fails if it takes longer
/// than `limit`.
fn small_stack<T: Send + 'static>(limit: Duration, work: impl FnOnce() -> T + Send + 'static) -> T {
    with_stack(SMALL_STACK, limit, work)
}

/// Runs `work` on an input the limits accept, in a thread with a roomy
/// stack, and fails if it takes longer than `limit`.
fn roomy<T: Send + 'static>(limit: Duration, work: impl FnOnce() -> T + Send + 'static) -> T {
    with_stack(ROOMY_STACK, limit, work)
}

fn with_stack<T: Send + 'static>(
    stack: usize,
    limit: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let started = Instant::now();
    let handle = std::thread::Builder::new()
        .stack_size(stack)
        .spawn(work)
        .expect("spawn a thread");
    let value = handle.join().expect("the work panicked");
    let took = started.elapsed();
    assert!(took < limit, "took {took:?}, more than {limit:?}");
    value
}

/// Compiles one file and returns the diagnostic codes (empty when it
/// compiles).
fn codes(text: String) -> Vec<String> {
    match Engine::compile([("limits.writ", text)], None) {
        Ok(_) => Vec::new(),
        Err(diagnostics) => diagnostics.codes(),
    }
}

fn rendered(text: String) -> String {
    match Engine::compile([("limits.writ", text)], None) {
        Ok(_) => String::new(),
        Err(diagnostics) => diagnostics.render(false),
    }
}

// ---------------------------------------------------------------------------
// Policy text

#[test]
fn a_policy_file_over_the_size_limit_is_refused() {
    // One byte over, made of text that would otherwise compile.
    let mut text = "permit;\n".to_owned();
    text.push_str(&" ".repeat(MAX_FILE_BYTES + 1 - text.len()));
    assert_eq!(text.len(), MAX_FILE_BYTES + 1);
    let message = small_stack(Duration::from_secs(10), move || rendered(text));
    assert!(
        message.contains("writ::limits::file_too_large"),
        "{message}"
    );
    assert!(
        message.contains("`limits.writ` is larger than 4194304 bytes"),
        "{message}"
    );

    // At the limit, the same file compiles.
    let mut text = "permit;\n".to_owned();
    while text.len() + 64 <= MAX_FILE_BYTES {
        text.push_str("// a comment that fills the file up to its size limit ........\n");
    }
    text.push_str(&" ".repeat(MAX_FILE_BYTES - text.len()));
    assert_eq!(text.len(), MAX_FILE_BYTES);
    assert_eq!(
        small_stack(Duration::from_secs(20), move || codes(text)),
        Vec::<String>::new()
    );
}

#[test]
fn deep_parentheses_are_refused() {
    let nest = |depth: usize| {
        format!(
            "permit if {}action == \"read\"{};",
            "(".repeat(depth),
            ")".repeat(depth)
        )
    };
    // At the limit it compiles and decides.
    let at_limit = nest(MAX_NESTING);
    small_stack(Duration::from_secs(10), move || {
        let engine = Engine::compile([("limits.writ", at_limit)], None).expect("compiles");
        let request = Request::from_json(r#"{"action": "read"}"#).expect("valid");
        assert!(engine.decide(&request).is_allow());
    });
    let over = nest(MAX_NESTING + 1);
    let message = small_stack(Duration::from_secs(10), move || rendered(over));
    assert!(
        message.contains("writ::limits::nesting_too_deep"),
        "{message}"
    );
    assert!(
        message.contains("expression nests deeper than 64 levels"),
        "{message}"
    );
    // Far over: refused as quickly, without recursing.
    let far = nest(200_000);
    assert_eq!(
        small_stack(Duration::from_secs(10), move || codes(far)),
        ["writ::limits::nesting_too_deep"]
    );
}

#[test]
fn deep_list_literals_are_refused() {
    let nest = |depth: usize| {
        format!(
            "const deep = {}\"x\"{};\npermit if action in deep;",
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    assert_eq!(
        small_stack(Duration::from_secs(10), move || codes(nest(
            MAX_NESTING + 1
        ))),
        ["writ::limits::nesting_too_deep"]
    );
    assert_eq!(
        small_stack(Duration::from_secs(10), move || codes(nest(200_000))),
        ["writ::limits::nesting_too_deep"]
    );
}

#[test]
fn long_not_chains_are_refused() {
    let chain = |nots: usize| format!("permit if {}action == \"read\";", "not ".repeat(nots));
    // `==` is one operator, so MAX_OPERATORS `not`s make one too many.
    let over = chain(MAX_OPERATORS);
    let message = small_stack(Duration::from_secs(10), move || rendered(over));
    assert!(
        message.contains("writ::limits::expression_too_long"),
        "{message}"
    );
    assert!(
        message.contains("item has more than 512 operators"),
        "{message}"
    );
    assert_eq!(
        roomy(Duration::from_secs(10), move || codes(chain(
            MAX_OPERATORS - 1
        ))),
        Vec::<String>::new()
    );
    let far = chain(250_000);
    assert_eq!(
        small_stack(Duration::from_secs(10), move || codes(far)),
        ["writ::limits::expression_too_long"]
    );
}

#[test]
fn long_and_and_or_chains_are_refused() {
    // Each test is two operators (`==` and the connective), less one.
    let chain = |op: &str, tests: usize| {
        format!(
            "permit if {};",
            vec!["action == \"read\""; tests].join(&format!(" {op} "))
        )
    };
    for op in ["and", "or"] {
        let within = chain(op, MAX_OPERATORS / 2);
        assert_eq!(
            roomy(Duration::from_secs(10), move || codes(within)),
            Vec::<String>::new(),
            "{op} at the limit"
        );
        let over = chain(op, MAX_OPERATORS / 2 + 1);
        assert_eq!(
            small_stack(Duration::from_secs(10), move || codes(over)),
            ["writ::limits::expression_too_long"],
            "{op} over the limit"
        );
        let far = chain(op, 100_000);
        assert_eq!(
            small_stack(Duration::from_secs(10), move || codes(far)),
            ["writ::limits::expression_too_long"],
            "{op} far over the limit"
        );
    }
    // The limit is per item: many rules of 500 operators each are fine.
    let rule = chain("and", 250);
    let many: String = (0..20).map(|i| format!("@id(\"r{i}\") {rule}\n")).collect();
    assert_eq!(
        roomy(Duration::from_secs(20), move || codes(many)),
        Vec::<String>::new()
    );
}

#[test]
fn long_index_chains_are_refused() {
    // `x[0][0]...` nests like `not not ...`: each `[` is an operator (it
    // was not, see `tests/regressions.rs`).
    let chain = |indexes: usize| format!("permit if context.a{} == 1;", "[0]".repeat(indexes));
    // `.` and `==` are the other two operators.
    let within = chain(MAX_OPERATORS - 2);
    assert_eq!(
        roomy(Duration::from_secs(10), move || codes(within)),
        Vec::<String>::new()
    );
    let over = chain(MAX_OPERATORS - 1);
    assert_eq!(
        small_stack(Duration::from_secs(10), move || codes(over)),
        ["writ::limits::expression_too_long"]
    );
    let far = chain(200_000);
    assert_eq!(
        small_stack(Duration::from_secs(10), move || codes(far)),
        ["writ::limits::expression_too_long"]
    );
}

#[test]
fn template_holes_are_held_to_the_same_limits() {
    // A hole is an expression of its own inside a string literal.
    let nots = format!(
        "forbid because \"{{{}true}}\";",
        "not ".repeat(MAX_OPERATORS + 1)
    );
    let message = small_stack(Duration::from_secs(10), move || rendered(nots));
    assert!(
        message.contains("writ::limits::expression_too_long"),
        "{message}"
    );
    let parens = format!(
        "permit grant [\"read:{{{}resource.id{}}}\"];",
        "(".repeat(MAX_NESTING + 1),
        ")".repeat(MAX_NESTING + 1)
    );
    assert_eq!(
        small_stack(Duration::from_secs(10), move || codes(parens)),
        ["writ::limits::nesting_too_deep"]
    );
    // A plain path is built without the parser, under the same limit.
    let dots = |fields: usize| format!("forbid because \"{{context{}}}\";", ".a".repeat(fields));
    let over = dots(MAX_OPERATORS + 1);
    assert_eq!(
        small_stack(Duration::from_secs(10), move || codes(over)),
        ["writ::limits::expression_too_long"]
    );
    let far = dots(7_000);
    assert_eq!(
        small_stack(Duration::from_secs(10), move || codes(far)),
        ["writ::limits::expression_too_long"]
    );
    let at_limit = dots(MAX_OPERATORS);
    assert_eq!(
        roomy(Duration::from_secs(10), move || codes(at_limit)),
        Vec::<String>::new()
    );
    let within = format!(
        "forbid because \"{{{}subject.id{}}}\";",
        "(".repeat(MAX_NESTING),
        ")".repeat(MAX_NESTING)
    );
    assert_eq!(
        roomy(Duration::from_secs(10), move || codes(within)),
        Vec::<String>::new()
    );
}

#[test]
fn long_string_literals_are_refused() {
    let literal = |len: usize| format!("forbid because \"{}\";", "x".repeat(len));
    assert_eq!(
        small_stack(Duration::from_secs(10), move || codes(literal(MAX_STRING))),
        Vec::<String>::new()
    );
    let over = literal(MAX_STRING + 1);
    let message = small_stack(Duration::from_secs(10), move || rendered(over));
    assert!(
        message.contains("writ::limits::string_too_long"),
        "{message}"
    );
    assert!(
        message.contains("string literal is longer than 16384 bytes"),
        "{message}"
    );
    // A string as long as a file may be is refused as quickly.
    let far = literal(MAX_FILE_BYTES - 100);
    assert_eq!(
        small_stack(Duration::from_secs(10), move || codes(far)),
        ["writ::limits::string_too_long"]
    );
    // An unterminated string is an error of its own, found as quickly.
    let unterminated = format!("forbid because \"{}\n", "x".repeat(1 << 20));
    let codes = small_stack(Duration::from_secs(10), move || codes(unterminated));
    assert!(
        codes.contains(&"writ::lex::unterminated_string".to_owned()),
        "{codes:?}"
    );
}

#[test]
fn too_many_rules_are_refused() {
    // MAX_RULES + 1 of the smallest rule there is, in one file.
    let text = "permit;\n".repeat(MAX_RULES + 1);
    let message = small_stack(Duration::from_secs(30), move || rendered(text));
    assert!(
        message.contains("writ::limits::too_many_rules"),
        "{message}"
    );
    assert!(
        message.contains("the policy set has 100001 rules, more than the limit of 100000"),
        "{message}"
    );
    // The limit is on the set, not the file.
    let half = "permit;\n".repeat(MAX_RULES / 2 + 1);
    let codes = small_stack(Duration::from_secs(30), move || {
        match Engine::compile([("a.writ", half.clone()), ("b.writ", half)], None) {
            Ok(_) => Vec::new(),
            Err(d) => d.codes(),
        }
    });
    assert_eq!(codes, ["writ::limits::too_many_rules"]);
}

// ---------------------------------------------------------------------------
// Requests

fn nested_context(depth: usize) -> String {
    // The root object and `context` are two levels.
    format!(
        "{{\"context\": {{\"deep\": {}1{}}}}}",
        "[".repeat(depth - 2),
        "]".repeat(depth - 2)
    )
}

#[test]
fn deep_request_json_is_refused() {
    // 10,000 nested arrays: refused before any recursive parser sees them.
    let hostile = nested_context(10_002);
    let error = small_stack(Duration::from_secs(10), move || {
        Request::from_json(&hostile).expect_err("too deep")
    });
    assert!(
        matches!(
            &error,
            RequestError::Json(JsonError::TooDeep { limit: 64, path }) if path.starts_with("context.deep[0]")
        ),
        "{error:?}"
    );
    assert_eq!(
        error.code().map(|c| c.to_string()).as_deref(),
        Some("writ::json::too_deep")
    );
    assert!(
        error
            .to_string()
            .starts_with("nests deeper than 64 levels at `context.deep"),
        "{error}"
    );

    // One level over the limit is refused; at the limit it is decided on
    // the default pack.
    let over = nested_context(MAX_JSON_DEPTH + 1);
    assert!(matches!(
        Request::from_json(&over),
        Err(RequestError::Json(JsonError::TooDeep { .. }))
    ));
    // (Decoding it recurses in serde_json: 64 levels fit in 128 KiB in a
    // release build, but need up to 512 KiB in a debug one.)
    let at_limit = nested_context(MAX_JSON_DEPTH);
    roomy(Duration::from_secs(10), move || {
        let request = Request::from_json(&at_limit).expect("at the limit");
        let engine = Engine::default_pack(None).expect("the pack compiles");
        assert!(!engine.decide(&request).is_allow());
    });

    // Brackets inside strings are text, not nesting.
    let text = format!("{{\"context\": {{\"s\": \"{}\"}}}}", "[{".repeat(100_000));
    assert!(Request::from_json(&text).is_ok());
}

#[test]
fn long_scope_items_are_refused() {
    let item = |len: usize| format!("read:db://{}", "x".repeat(len - "read:db://".len()));
    let ok = format!(
        "{{\"requested\": {{\"scope\": [\"{}\"]}}}}",
        item(writ::scope::MAX_LEN)
    );
    assert!(Request::from_json(&ok).is_ok());
    let long = format!(
        "{{\"requested\": {{\"scope\": [\"{}\"]}}}}",
        item(writ::scope::MAX_LEN + 1)
    );
    let error = Request::from_json(&long).expect_err("too long");
    assert!(
        matches!(error, RequestError::BadScope { index: 0, .. }),
        "{error}"
    );
}

/// A request the default pack allows, made huge: a 1 MiB `subject.id`, an
/// 8 MiB string and a million-element array in `context`, and ten thousand
/// requested scope items of which one is covered. Deciding it must stay
/// linear in its size.
#[test]
fn huge_request_values_are_decided_quickly() {
    let mut scope: Vec<String> = (0..10_000)
        .map(|i| format!("read:db://payments/archive/t{i}"))
        .collect();
    scope.push("read:db://payments/orders".to_owned());
    let body = serde_json::json!({
        "subject": {
            "id": format!("spiffe://acme/{}", "a".repeat(1 << 20)),
            "kind": "service", "auth": "spiffe", "attested": true, "owner": "payments",
            "environment": "prod"
        },
        "action": "read",
        "resource": {"id": "db://payments/orders", "kind": "database", "owner": "payments"},
        "environment": {"name": "prod", "broker": "vault", "time": "2026-11-22T10:00:00Z"},
        "sensitivity": "internal",
        "requested": {"scope": scope, "ttl": 600},
        "context": {
            "notes": "n".repeat(8 << 20),
            "history": (0..1_000_000).collect::<Vec<u32>>(),
            "recent_issuances": 1
        }
    })
    .to_string();
    let engine = Engine::default_pack(None).expect("the pack compiles");
    let started = Instant::now();
    let request = Request::from_json(&body).expect("valid");
    let decision = engine.decide(&request);
    let took = started.elapsed();
    assert!(decision.is_allow(), "{:?}", decision.reasons);
    assert_eq!(decision.scope, ["read:db://payments/orders"]);
    assert_eq!(decision.dropped_scope.len(), 10_000);
    assert_eq!(decision.ttl, 600);
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

// ---------------------------------------------------------------------------
// The CLI: request body and data file

/// A fresh scratch directory.
fn scratch(name: &str) -> PathBuf {
    common::scratch("limits", name)
}

/// Runs `writ` with `args` (and `stdin`, if any), killing it after
/// `limit`; fails on a timeout or a signal.
fn writ(args: &[&str], stdin: Option<Vec<u8>>, limit: Duration) -> Output {
    run(Run {
        stdin,
        ..Run::new(args, limit)
    })
}

/// A JSON object of exactly `size` bytes: `{"context":{"pad":"xxx..."}}`.
fn padded_request(size: usize) -> Vec<u8> {
    let head = br#"{"context":{"pad":""#;
    let tail = br#""}}"#;
    let mut bytes = head.to_vec();
    bytes.resize(size - tail.len(), b'x');
    bytes.extend_from_slice(tail);
    bytes
}

const BODY_LIMIT: usize = 16 * 1024 * 1024;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write a scratch file");
    path.to_string_lossy().into_owned()
}

#[test]
fn a_request_body_over_1_mib_is_refused() {
    // The CLI holds a request to the server's default `--max-body`.
    let limit = writ::request::MAX_REQUEST_BYTES;
    let dir = scratch("body");
    // At the limit: read and decided (deny: it asks for nothing).
    let at_limit = write(&dir, "at-limit.json", &padded_request(limit));
    let output = writ(
        &["eval", "--request", &at_limit],
        None,
        Duration::from_secs(60),
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    // One byte over: refused, exit 2, from a file and from stdin.
    let over = padded_request(limit + 1);
    let path = write(&dir, "over.json", &over);
    let output = writ(&["eval", "--request", &path], None, Duration::from_secs(60));
    assert_refused(&output, 2, "is larger than 1048576 bytes");
    assert!(output.stdout.is_empty(), "no decision is printed");
    let output = writ(
        &["eval", "--request", "-"],
        Some(padded_request(4 * limit)),
        Duration::from_secs(60),
    );
    assert_refused(&output, 2, "`-` is larger than 1048576 bytes");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_deep_request_body_is_refused_by_the_cli() {
    let dir = scratch("deep-body");
    let path = write(&dir, "deep.json", nested_context(10_002).as_bytes());
    let output = writ(&["eval", "--request", &path], None, Duration::from_secs(30));
    assert_refused(&output, 2, "nests deeper than 64 levels");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_data_file_over_16_mib_is_refused() {
    let dir = scratch("data-size");
    let request = write(&dir, "request.json", b"{}");
    let data = write(&dir, "data.json", &padded_request(BODY_LIMIT + 1));
    let output = writ(
        &["eval", "--request", &request, "--data", &data],
        None,
        Duration::from_secs(60),
    );
    assert_refused(&output, 2, "is larger than 16777216 bytes");
    let output = writ(
        &["check", "default", "--data", &data],
        None,
        Duration::from_secs(60),
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    // The server reads its data file under the same limit: it does not
    // start.
    let output = writ(
        &["serve", "--addr", "127.0.0.1:0", "--data", &data],
        None,
        Duration::from_secs(60),
    );
    assert_ne!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("is larger than 16777216 bytes"),
        "{}",
        stderr(&output)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_deep_data_file_is_refused() {
    let dir = scratch("data-depth");
    let request = write(&dir, "request.json", b"{}");
    // serde_json refuses documents nested deeper than 128 levels before it
    // recurses further; the JSON reader reports that as invalid data.
    let deep = format!(
        "{{\"teams\": {}1{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let data = write(&dir, "data.json", deep.as_bytes());
    let output = writ(
        &["eval", "--request", &request, "--data", &data],
        None,
        Duration::from_secs(30),
    );
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("data file `"), "{message}");
    assert!(message.contains("not valid JSON"), "{message}");
    assert!(message.contains("recursion limit exceeded"), "{message}");
    // Data nested 100 deep (within serde's limit) compiles and decides.
    let fine = format!("{{\"teams\": {}1{}}}", "[".repeat(99), "]".repeat(99));
    let data = write(&dir, "fine.json", fine.as_bytes());
    let output = writ(
        &["eval", "--request", &request, "--data", &data],
        None,
        Duration::from_secs(30),
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let _ = std::fs::remove_dir_all(dir);
}
