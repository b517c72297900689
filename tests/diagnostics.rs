//! Snapshots of rendered diagnostics: one input file per case under
//! `tests/diagnostics/`, compiled through the library, rendered with
//! miette's graphical handler and the no-colour unicode theme.
//!
//! Each case asserts the list of codes first (so a change of meaning fails
//! with a readable message), then snapshots the rendering (so a change of
//! wording or layout shows up in review). The last tests run the `writ check`
//! binary for its JSON output and exit codes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};
use writ::{Diagnostics, Engine};

fn case_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/diagnostics")
}

fn read_case(name: &str) -> String {
    let path = case_dir().join(format!("{name}.writ"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Compiles the named cases together (file names without directories, so
/// the snapshots do not depend on where the crate is checked out) and
/// returns the diagnostics; a case that compiles is a test failure.
fn diagnose_files(names: &[&str], data: Option<&Value>) -> Diagnostics {
    let files: Vec<(String, String)> = names
        .iter()
        .map(|name| (format!("{name}.writ"), read_case(name)))
        .collect();
    match Engine::compile(files, data) {
        Ok(_) => panic!("{names:?} compiled without diagnostics"),
        Err(diagnostics) => diagnostics,
    }
}

/// Asserts the codes of one case, then snapshots its rendering under the
/// case's name.
fn assert_case(name: &str, codes: &[&str]) {
    assert_rendered(name, diagnose_files(&[name], None), codes);
}

fn assert_rendered(name: &str, diagnostics: Diagnostics, codes: &[&str]) {
    assert_eq!(diagnostics.codes(), codes, "codes of `{name}`");
    let rendered = diagnostics.render(false);
    assert!(
        !rendered.contains('\x1b'),
        "no-colour rendering has ANSI escapes:\n{rendered}"
    );
    insta::assert_snapshot!(name, rendered);
}

// ---- lexer -------------------------------------------------------------

#[test]
fn lex_unexpected_char() {
    // The `#` is skipped; the words after it are then a syntax error.
    assert_case(
        "unexpected_char",
        &[
            "writ::lex::unexpected_char",
            "writ::parse::unexpected_token",
        ],
    );
}

#[test]
fn lex_unterminated_string() {
    // The string swallows the `;`, so the next rule's `permit` is unexpected.
    assert_case(
        "unterminated_string",
        &[
            "writ::lex::unterminated_string",
            "writ::parse::unexpected_token",
        ],
    );
}

#[test]
fn lex_bad_escape() {
    assert_case("bad_escape", &["writ::lex::bad_escape"]);
}

#[test]
fn lex_duration_overflow() {
    assert_case("duration_overflow", &["writ::lex::duration_overflow"]);
}

/// A number literal too long to represent is one lexer error covering the
/// whole literal, not a valid number followed by a stray one.
#[test]
fn lex_long_number_is_one_error() {
    let diagnostics = diagnose_files(&["long_number"], None);
    assert_eq!(diagnostics.codes(), ["writ::lex::bad_number"]);
    assert!(
        diagnostics
            .render(false)
            .contains("`1234567890123456789012345678`"),
        "the diagnostic should quote the whole literal:\n{}",
        diagnostics.render(false)
    );
}

// ---- parser ------------------------------------------------------------

#[test]
fn parse_recovers_and_reports_every_syntax_error() {
    let diagnostics = diagnose_files(&["syntax_errors"], None);
    // Three broken rules, three errors; the good rule between them is kept.
    assert_rendered(
        "syntax_errors",
        diagnostics,
        &["writ::parse::unexpected_token"; 3],
    );
}

#[test]
fn parse_unexpected_eof() {
    assert_case("unexpected_eof", &["writ::parse::unexpected_eof"]);
}

#[test]
fn every_phase_reports_in_one_file() {
    // Diagnostics come in source order, whatever phase found them.
    assert_case(
        "mixed_errors",
        &[
            "writ::parse::unexpected_token",
            "writ::check::unknown_name",
            "writ::check::unknown_attribute",
            "writ::check::wrong_operator",
            "writ::check::level_as_string",
            "writ::lex::unexpected_char",
        ],
    );
}

// ---- checker -----------------------------------------------------------

#[test]
fn check_unknown_name() {
    assert_case("unknown_name", &["writ::check::unknown_name"]);
}

#[test]
fn check_unknown_attribute_did_you_mean() {
    let diagnostics = diagnose_files(&["unknown_attribute"], None);
    assert!(diagnostics
        .render(false)
        .contains("did you mean `subject.owner`?"));
    assert_rendered(
        "unknown_attribute",
        diagnostics,
        &["writ::check::unknown_attribute"],
    );
}

/// `kidn` is a transposition of `kind`: that is the suggestion, not `id`.
#[test]
fn check_misspelled_kind_suggests_kind() {
    let diagnostics = diagnose_files(&["misspelled_kind"], None);
    assert_eq!(diagnostics.codes(), ["writ::check::unknown_attribute"]);
    let rendered = diagnostics.render(false);
    assert!(
        rendered.contains("did you mean `subject.kind`?"),
        "{rendered}"
    );
}

#[test]
fn check_unknown_function() {
    assert_case("unknown_function", &["writ::check::unknown_function"]);
}

#[test]
fn check_wrong_arity() {
    assert_case("wrong_arity", &["writ::check::wrong_arity"]);
}

#[test]
fn check_type_mismatch() {
    assert_case("type_mismatch", &["writ::check::type_mismatch"]);
}

#[test]
fn check_no_order() {
    assert_case("no_order", &["writ::check::no_order"]);
}

#[test]
fn check_level_as_string() {
    let diagnostics = diagnose_files(&["level_as_string"], None);
    assert!(diagnostics
        .render(false)
        .contains("`sensitivity == restricted`"));
    assert_rendered(
        "level_as_string",
        diagnostics,
        &["writ::check::level_as_string"],
    );
}

#[test]
fn check_level_list_as_strings_suggests_the_levels_written() {
    // Fixed bug: the help used to say `sensitivity == restricted` whatever
    // the levels and the operator were.
    let diagnostics = diagnose_files(&["level_list_as_strings"], None);
    let rendered = diagnostics.render(false);
    assert!(
        rendered.contains("`sensitivity in [internal, public]`"),
        "{rendered}"
    );
    assert!(!rendered.contains("restricted"), "{rendered}");
    assert_rendered(
        "level_list_as_strings",
        diagnostics,
        &["writ::check::level_as_string"],
    );
}

#[test]
fn check_level_as_string_help_follows_what_is_written() {
    for (condition, help) in [
        (r#"sensitivity != "public""#, "`sensitivity != public`"),
        (r#""Internal" == sensitivity"#, "`sensitivity == internal`"),
        (
            r#"sensitivity < "confidential""#,
            "`sensitivity < confidential`",
        ),
        (
            r#"sensitivity not in ["public", "secret"]"#,
            r#"`sensitivity not in [public, "secret"]`"#,
        ),
        (r#"sensitivity == "secret""#, "`secret` is not a level"),
        (
            "sensitivity == resource.kind",
            "compare it with a level keyword",
        ),
    ] {
        let source = format!("forbid if {condition};");
        let Err(diagnostics) = Engine::compile([("case.writ", source.as_str())], None) else {
            panic!("`{condition}` compiled");
        };
        assert_eq!(diagnostics.codes(), ["writ::check::level_as_string"]);
        let rendered = diagnostics.render(false);
        assert!(rendered.contains(help), "`{condition}`:\n{rendered}");
    }
}

#[test]
fn check_not_a_condition() {
    assert_case("not_a_condition", &["writ::check::not_a_condition"]);
}

#[test]
fn check_object_as_value() {
    assert_case("object_as_value", &["writ::check::object_as_value"]);
}

#[test]
fn check_bad_operand() {
    assert_case("bad_operand", &["writ::check::bad_operand"]);
}

#[test]
fn check_duplicate_id() {
    assert_case("duplicate_id", &["writ::check::duplicate_id"]);
}

#[test]
fn check_duplicate_id_across_files() {
    let diagnostics = diagnose_files(&["clean", "duplicate_id_other_file"], None);
    assert_rendered(
        "duplicate_id_across_files",
        diagnostics,
        &["writ::check::duplicate_id"],
    );
}

#[test]
fn check_duplicate_const() {
    assert_case("duplicate_const", &["writ::check::duplicate_const"]);
}

#[test]
fn check_not_constant() {
    assert_case("not_constant", &["writ::check::not_constant"; 2]);
}

#[test]
fn check_not_a_duration() {
    // A number, a quoted duration, a timestamp and a number among
    // durations, each with the fix; then `min` with one argument.
    assert_case(
        "not_a_duration",
        &[
            "writ::check::not_a_duration",
            "writ::check::not_a_duration",
            "writ::check::not_a_duration",
            "writ::check::not_a_duration",
            "writ::check::wrong_arity",
        ],
    );
}

#[test]
fn check_not_a_time() {
    assert_case("not_a_time", &["writ::check::not_a_time"; 3]);
}

#[test]
fn check_never_holds() {
    assert_case("never_holds", &["writ::check::never_holds"]);
}

#[test]
fn check_bad_annotation() {
    assert_case("bad_annotation", &["writ::check::bad_annotation"; 2]);
}

#[test]
fn check_bad_scope() {
    assert_case("bad_scope", &["writ::check::bad_scope"; 2]);
}

#[test]
fn check_bad_template() {
    assert_case("bad_template", &["writ::check::bad_template"; 2]);
}

#[test]
fn check_hole_after_escapes_is_underlined_exactly() {
    // Fixed bug: holes were parsed in the checker at offsets counted in
    // the string's value, so each escape before a hole moved its spans
    // one byte left (this case underlined `our`, not `idd`). The lexer
    // now lexes holes with the offsets each byte is written at.
    let source = read_case("hole_after_escapes");
    let diagnostics = diagnose_files(&["hole_after_escapes"], None);
    let rendered = diagnostics.render(false);
    let column = source.find("idd").map(|at| at + 1);
    assert!(
        rendered.contains(&format!(
            "[hole_after_escapes.writ:1:{}]",
            column.unwrap_or(0)
        )),
        "{rendered}"
    );
    assert!(
        rendered.contains("did you mean `resource.id`?"),
        "{rendered}"
    );
    assert_rendered(
        "hole_after_escapes",
        diagnostics,
        &["writ::check::unknown_attribute"],
    );
}

#[test]
fn check_wrong_operator() {
    // `=`, `&&`, `!` and `||` each get their own diagnostic, in source order.
    let diagnostics = diagnose_files(&["wrong_operator"], None);
    let rendered = diagnostics.render(false);
    for instead in ["use `==`", "use `and`", "use `not`", "use `or`"] {
        assert!(rendered.contains(instead), "missing {instead}:\n{rendered}");
    }
    assert_rendered(
        "wrong_operator",
        diagnostics,
        &["writ::check::wrong_operator"; 4],
    );
}

#[test]
fn check_bad_data() {
    let data = json!({"max_ttl": "ten"});
    let diagnostics = diagnose_files(&["bad_data"], Some(&data));
    assert_rendered("bad_data", diagnostics, &["writ::check::bad_data"]);
}

#[test]
fn the_clean_case_compiles() {
    let engine = Engine::compile([("clean.writ", read_case("clean"))], None);
    assert!(
        engine.is_ok(),
        "{}",
        engine.err().map(|d| d.render(false)).unwrap_or_default()
    );
}

/// The corpus covers the three phases and at least fifteen distinct codes.
#[test]
fn the_corpus_covers_many_codes() {
    let mut codes = BTreeSet::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(case_dir())
        .expect("tests/diagnostics exists")
        .map(|entry| entry.expect("readable directory").path())
        .filter(|path| path.extension().is_some_and(|e| e == "writ"))
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name")
            .to_owned();
        let data = (name == "bad_data").then(|| json!({"max_ttl": "ten"}));
        match Engine::compile([(format!("{name}.writ"), read_case(&name))], data.as_ref()) {
            Ok(_) => assert!(
                name == "clean" || name == "duplicate_id_other_file",
                "`{name}.writ` compiled without diagnostics"
            ),
            Err(diagnostics) => codes.extend(diagnostics.codes()),
        }
    }
    for phase in ["writ::lex::", "writ::parse::", "writ::check::"] {
        assert!(
            codes.iter().any(|c| c.starts_with(phase)),
            "no {phase} code in {codes:?}"
        );
    }
    assert!(
        codes.len() >= 15,
        "only {} distinct codes: {codes:?}",
        codes.len()
    );
}

// ---- the `writ check` command ----------------------------------------------

fn writ_check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_writ"))
        .arg("check")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run writ")
}

#[test]
fn check_json_lists_every_diagnostic() {
    let output = writ_check(&[
        "--format",
        "json",
        "tests/diagnostics/syntax_errors.writ",
        "tests/diagnostics/unknown_attribute.writ",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8(output.stdout).expect("utf-8 stdout");
    let parsed: Value = serde_json::from_str(&stdout).expect("stdout is JSON");
    let items = parsed.as_array().expect("a JSON array");
    let codes: Vec<&str> = items
        .iter()
        .map(|d| d["code"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        codes,
        [
            "writ::parse::unexpected_token",
            "writ::parse::unexpected_token",
            "writ::parse::unexpected_token",
            "writ::check::unknown_attribute",
        ]
    );
    // Same codes as the library for the same inputs.
    let library = diagnose_files(&["syntax_errors", "unknown_attribute"], None);
    assert_eq!(codes, library.codes());
    let last = &items[3];
    assert_eq!(last["message"], "unknown attribute `subject.ownr`");
    assert_eq!(last["help"], "did you mean `subject.owner`?");
    assert!(last["filename"]
        .as_str()
        .is_some_and(|f| f.ends_with("unknown_attribute.writ")));
    assert_eq!(last["labels"][0]["label"], "no such field");
}

#[test]
fn check_exit_codes() {
    let clean = writ_check(&["tests/diagnostics/clean.writ"]);
    assert_eq!(
        clean.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );

    let clean_json = writ_check(&["--format", "json", "tests/diagnostics/clean.writ"]);
    assert_eq!(clean_json.status.code(), Some(0));
    let parsed: Value = serde_json::from_slice(&clean_json.stdout).expect("stdout is JSON");
    assert_eq!(parsed, json!([]));

    let bad = writ_check(&["tests/diagnostics/syntax_errors.writ"]);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8(bad.stderr).expect("utf-8 stderr");
    assert!(stderr.contains("3 diagnostic(s)"), "{stderr}");
    assert!(stderr.contains("writ::parse::unexpected_token"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "NO_COLOR output has ANSI escapes:\n{stderr}"
    );

    let missing = writ_check(&["tests/diagnostics/no_such_file.writ"]);
    assert_eq!(missing.status.code(), Some(2));
}
