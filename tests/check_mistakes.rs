//! The mistakes a policy author made on purpose while writing an org layer
//! over the default pack (issue 19, item 5), each with the message the
//! checker gives for it now: the codes are asserted first, then the
//! rendering is snapshotted (miette's no-colour unicode theme).

use std::process::Command;

use writ::Engine;

/// Compiles `policy` as `t.writ`, asserts the diagnostics' codes and
/// snapshots their rendering under `name`.
fn assert_mistake(name: &str, policy: &str, codes: &[&str]) {
    let diagnostics = match Engine::compile([("t.writ", policy)], None) {
        Ok(_) => panic!("`{policy}` compiled without diagnostics"),
        Err(diagnostics) => diagnostics,
    };
    assert_eq!(diagnostics.codes(), codes, "codes of `{policy}`");
    insta::assert_snapshot!(name, diagnostics.render(false));
}

/// Compiles `policy`, panicking with its diagnostics when it does not.
fn compiles(policy: &str) {
    if let Err(diagnostics) = Engine::compile([("t.writ", policy)], None) {
        panic!("`{policy}` does not compile:\n{diagnostics}");
    }
}

#[test]
fn an_unknown_level_lists_the_four() {
    assert_mistake(
        "unknown_level",
        "limit ttl 5m if sensitivity >= secret;\n",
        &["writ::check::unknown_name"],
    );
    // A near miss is a typo of the level, on either side.
    let typo = Engine::compile(
        [("t.writ", "limit ttl 5m if restrcted <= sensitivity;")],
        None,
    );
    let rendered = typo.err().map(|d| d.render(false)).unwrap_or_default();
    assert!(
        rendered.contains("did you mean `restricted`?"),
        "{rendered}"
    );
}

#[test]
fn a_level_as_a_string_is_told_the_levels() {
    assert_mistake(
        "level_not_a_level",
        "limit ttl 5m if sensitivity == \"secret\";\n",
        &["writ::check::level_as_string"],
    );
    // A real level written as a string is told the keyword form, and that
    // form compiles.
    let rendered = Engine::compile(
        [("t.writ", "limit ttl 5m if sensitivity >= \"Restricted\";")],
        None,
    )
    .err()
    .map(|d| d.render(false))
    .unwrap_or_default();
    assert!(
        rendered.contains("`sensitivity >= restricted`"),
        "{rendered}"
    );
    compiles("limit ttl 5m if sensitivity >= restricted;");
}

#[test]
fn single_quotes_are_one_diagnostic() {
    assert_mistake(
        "single_quotes",
        "permit if action == 'read' and subject.kind == 'ci';\n",
        &["writ::lex::wrong_quotes", "writ::lex::wrong_quotes"],
    );
    // The suggested form compiles.
    compiles("permit if action == \"read\" and subject.kind == \"ci\";");
}

#[test]
fn curly_quotes_are_one_diagnostic() {
    assert_mistake(
        "curly_quotes",
        "permit if action == \u{201c}read\u{201d} grant [\u{2018}read:x\u{2019}];\n",
        &["writ::lex::wrong_quotes", "writ::lex::wrong_quotes"],
    );
}

#[test]
fn has_takes_a_name_not_a_string() {
    assert_mistake(
        "has_string",
        "permit if context.roles has \"admin\";\n",
        &["writ::parse::unexpected_token"],
    );
    compiles("permit if \"admin\" in context.roles;");
    compiles("permit if context.roles has admin;");
}

#[test]
fn a_camel_case_property_is_told_about_properties() {
    assert_mistake(
        "owner_id",
        "permit if resource.ownerID == subject.id;\n",
        &["writ::check::unknown_attribute"],
    );
    compiles("permit if resource.properties.ownerID == subject.id;");
    // A plain typo keeps its plain suggestion.
    let rendered = Engine::compile([("t.writ", "permit if resource.ownr == \"x\";")], None)
        .err()
        .map(|d| d.render(false))
        .unwrap_or_default();
    assert!(
        rendered.contains("did you mean `resource.owner`?"),
        "{rendered}"
    );
}

#[test]
fn contradictory_durations_never_hold() {
    assert_mistake(
        "duration_range_empty",
        "permit if requested.ttl > 2h and requested.ttl < 1h;\n",
        &["writ::check::never_holds"],
    );
    assert_mistake(
        "duration_below_zero",
        "forbid if requested.ttl < 0s;\n",
        &["writ::check::never_holds"],
    );
    // Bounds written either way round meet; a range with room passes.
    let turned = Engine::compile(
        [(
            "t.writ",
            "permit if 2h < requested.ttl and requested.ttl <= 2h;",
        )],
        None,
    );
    assert!(
        matches!(&turned, Err(d) if d.codes() == ["writ::check::never_holds"]),
        "{turned:?}"
    );
    compiles("permit if requested.ttl > 1h and requested.ttl < 2h;");
    compiles("permit if requested.ttl >= 1h and requested.ttl <= 1h;");
    compiles("permit if requested.ttl > 2h or requested.ttl < 1h;");
    compiles("permit if until context.expires > 0s;");
    let until = Engine::compile([("t.writ", "permit if until context.expires < 0s;")], None);
    assert!(
        matches!(&until, Err(d) if d.codes() == ["writ::check::never_holds"]),
        "{until:?}"
    );
}

#[test]
fn check_prints_ok_on_stdout() {
    let output = Command::new(env!("CARGO_BIN_EXE_writ"))
        .args(["check", "tests/diagnostics/clean.writ"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run writ");
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("ok: 1 file(s)"), "stdout: {stdout}");
    insta::assert_snapshot!("check_ok_stdout", stdout);
    assert!(
        output.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn check_warns_about_an_undeclared_typo_and_still_passes() {
    let dir = std::env::temp_dir().join(format!("writ-check-typo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("org.writ");
    std::fs::write(
        &file,
        "@id(\"app\")\npermit if subject.repository == \"acme/app\" and subject.attested == true;\n\
         @id(\"web\")\npermit if subject.repositry == \"acme/web\" and subject.repository != \"x\";\n",
    )
    .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_writ"))
        .arg("check")
        .arg(&file)
        .env("NO_COLOR", "1")
        .output()
        .expect("run writ");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("ok: 1 file(s), 2 rule(s)"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("writ::lint::undeclared_attribute"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`subject.repositry` is one or two edits from `subject.repository`"),
        "{stderr}"
    );
    assert!(stderr.contains("1 warning(s)"), "{stderr}");
}

#[test]
fn a_misspelt_rule_keyword_is_named_with_the_keyword_meant() {
    // `attribute` starts an item as a plain name, so any other name there
    // is reported as the mistake, not the token after it.
    assert_mistake(
        "misspelt_keyword",
        "permt if action == \"read\";\nforbd;\n",
        &[
            "writ::parse::unexpected_token",
            "writ::parse::unexpected_token",
        ],
    );
}
