//! The lints against their documentation: every bad example in
//! `docs/lints.md` raises its lint, every good one raises nothing, every
//! lint has both; and the default pack is lint-clean.

use writ::engine::DEFAULT_PACK;
use writ::lint::{self, Finding};
use writ::Engine;

/// A fenced example from docs/lints.md.
#[derive(Debug)]
struct Example {
    /// The `## ` section it is in (the lint's code, without backticks).
    section: String,
    /// The line its fence opens on.
    line: usize,
    /// `Some(code)` for ```` ```writ,lint(code) ````, `None` for `lint-clean`.
    expect: Option<String>,
    text: String,
}

fn examples() -> Vec<Example> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/lints.md");
    let doc = std::fs::read_to_string(path).expect("docs/lints.md");
    let mut found = Vec::new();
    let mut section = String::new();
    let mut open: Option<Example> = None;
    for (index, line) in doc.lines().enumerate() {
        if let Some(mut example) = open.take() {
            if line.trim_end() == "```" {
                found.push(example);
            } else {
                example.text.push_str(line);
                example.text.push('\n');
                open = Some(example);
            }
            continue;
        }
        if let Some(title) = line.strip_prefix("## ") {
            section = title.trim().trim_matches('`').to_owned();
        } else if let Some(info) = line.strip_prefix("```writ,") {
            let expect = match info.trim() {
                "lint-clean" => None,
                tag => {
                    let code = tag
                        .strip_prefix("lint(")
                        .and_then(|rest| rest.strip_suffix(')'))
                        .unwrap_or_else(|| {
                            panic!("docs/lints.md:{}: unknown tag `{tag}`", index + 1)
                        });
                    Some(code.to_owned())
                }
            };
            open = Some(Example {
                section: section.clone(),
                line: index + 1,
                expect,
                text: String::new(),
            });
        }
    }
    assert!(open.is_none(), "docs/lints.md ends inside a code block");
    found
}

fn run(example: &Example) -> (Engine, Vec<Finding>) {
    let name = format!("docs/lints.md@{}", example.line);
    let engine = Engine::compile([(name.as_str(), example.text.as_str())], None)
        .unwrap_or_else(|d| panic!("the example at {name} does not compile:\n{d}"));
    let findings = lint::lint(&engine);
    (engine, findings)
}

#[test]
fn bad_examples_raise_their_lint() {
    let mut rendered = String::new();
    for example in examples() {
        let Some(code) = &example.expect else {
            continue;
        };
        let (engine, findings) = run(&example);
        let codes: Vec<String> = findings.iter().map(|f| f.lint.code_name()).collect();
        assert!(
            codes.contains(code),
            "docs/lints.md:{}: expected `{code}`, got {codes:?}",
            example.line
        );
        rendered.push_str(&format!("--- docs/lints.md:{} ({code})\n", example.line));
        rendered.push_str(&lint::diagnostics(&engine, &findings).render(false));
    }
    insta::assert_snapshot!("bad_examples", rendered);
}

#[test]
fn good_examples_are_quiet() {
    for example in examples().iter().filter(|e| e.expect.is_none()) {
        let (engine, findings) = run(example);
        assert!(
            findings.is_empty(),
            "docs/lints.md:{}: expected no findings, got:\n{}",
            example.line,
            lint::diagnostics(&engine, &findings).render(false)
        );
    }
}

#[test]
fn every_lint_has_a_bad_and_a_good_example_in_its_section() {
    let examples = examples();
    for code in lint::CODES {
        let in_section: Vec<&Example> = examples.iter().filter(|e| e.section == code).collect();
        assert!(
            in_section.iter().any(|e| e.expect.as_deref() == Some(code)),
            "no bad example for `{code}`"
        );
        assert!(
            in_section.iter().any(|e| e.expect.is_none()),
            "no good example for `{code}`"
        );
        assert!(
            in_section
                .iter()
                .all(|e| !matches!(e.expect.as_deref(), Some(c) if c != code)),
            "an example under `{code}` is tagged with another lint"
        );
    }
    let sections: Vec<&str> = examples.iter().map(|e| e.section.as_str()).collect();
    assert!(
        sections.iter().all(|s| lint::CODES.contains(s)),
        "an example sits outside a lint's section: {sections:?}"
    );
}

#[test]
fn the_default_pack_is_lint_clean() {
    let engine = Engine::default_pack(None).expect("the pack compiles");
    let findings = lint::lint(&engine);
    let summary: Vec<String> = findings
        .iter()
        .map(|f| format!("{} on `{}`", f.lint.code_name(), f.rule))
        .collect();
    assert!(
        findings.is_empty(),
        "the default pack ({} files) has lint findings: {summary:?}\n{}",
        DEFAULT_PACK.len(),
        lint::diagnostics(&engine, &findings).render(false)
    );
}

/// Lints read where a rule's keyword, condition and grant are written from
/// the checked rules (the IR keeps the spans), not from a second parse:
/// each finding points at the part it is about, in every file of a set.
#[test]
fn findings_point_at_the_part_of_the_rule_they_are_about() {
    let first = "permit if action == \"read\" and action == \"read\" grant [\"read:x\"] for 1h;\n";
    let second = concat!(
        "forbid if action == \"write\";\n",
        "// a comment, so offsets differ from the first file\n",
        "permit if action == \"write\" and subject.attested == true\n",
        "  grant [\"write:{resource.id}\"];\n",
        "permit if action == \"x\" grant [\"read:db://x/**\"] for 1h;\n",
        "permit if subject.attested == true and subject.attested == false;\n",
    );
    let engine = match Engine::compile([("a.writ", first), ("b.writ", second)], None) {
        Ok(engine) => engine,
        Err(diagnostics) => panic!("{}", diagnostics.render(false)),
    };
    let findings: Vec<Finding> = lint::lint(&engine);
    let mut seen = Vec::new();
    for finding in &findings {
        let file = engine.sources().get(finding.span.file);
        let text = file.slice(finding.span);
        seen.push((finding.lint.code_name(), text.to_owned()));
    }
    let has = |code: &str, text: &str| {
        seen.iter()
            .any(|(c, t)| c == &format!("writ::lint::{code}") && t == text)
    };
    assert!(has("overridden_permit", "permit"), "{seen:?}");
    assert!(
        has("unbounded_ttl", "grant [\"write:{resource.id}\"]"),
        "{seen:?}"
    );
    assert!(has("broad_grant", "\"read:db://x/**\""), "{seen:?}");
    assert!(
        has(
            "dead_permit",
            "subject.attested == true and subject.attested == false"
        ),
        "{seen:?}"
    );
}
