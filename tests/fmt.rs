//! `writ fmt` over every policy file in the repository: a snapshot of the
//! formatted text, idempotence, the same tokens, and the same meaning (the
//! same checked rules, the same decision tree, the same rule ids).

use std::path::{Path, PathBuf};

use writ::engine::DEFAULT_PACK;
use writ::fmt::format_source;
use writ::lexer::{lex, Token};
use writ::source::FileId;
use writ::Engine;

/// Every `.writ` file under the repository's policy, test, example and doc
/// folders, found now rather than listed, so a new file is covered at once.
fn policy_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let roots: Vec<PathBuf> = ["policies", "tests", "examples", "docs"]
        .iter()
        .map(|dir| root.join(dir))
        .collect();
    let files = writ::load::discover(&roots, "writ").expect("walks the policy folders");
    assert!(
        files.len() >= DEFAULT_PACK.len(),
        "found only {} policy files",
        files.len()
    );
    files
}

/// An id for lexing and parsing one text on its own.
fn file_id() -> FileId {
    writ::source::Sources::new().add("t.writ", "")
}

fn relative(path: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The non-comment tokens of a text.
fn solid_tokens(text: &str) -> Vec<Token> {
    lex(file_id(), text)
        .0
        .into_iter()
        .map(|t| t.token)
        .filter(|t| !t.is_trivia())
        .collect()
}

/// The comments of a text, trailing blanks removed.
fn comments(text: &str) -> Vec<String> {
    lex(file_id(), text)
        .0
        .into_iter()
        .filter(|t| t.token.is_trivia())
        .map(|t| {
            text[t.span.start as usize..t.span.end as usize]
                .trim_end()
                .to_owned()
        })
        .collect()
}

#[test]
fn snapshots_of_every_policy_file() {
    for path in policy_files() {
        let name = relative(&path);
        let text = read(&path);
        let shown = match format_source(&name, &text) {
            Ok(formatted) => formatted,
            Err(diagnostics) => format!("not formatted: {}\n", diagnostics.codes().join(", ")),
        };
        insta::with_settings!({
            snapshot_path => "snapshots/fmt",
            prepend_module_to_snapshot => false,
            description => name.clone(),
            omit_expression => true,
        }, {
            insta::assert_snapshot!(name.replace(['/', '.'], "_"), shown);
        });
    }
}

#[test]
fn formatting_twice_changes_nothing() {
    let mut formatted_files = 0;
    for path in policy_files() {
        let name = relative(&path);
        let Ok(once) = format_source(&name, &read(&path)) else {
            continue;
        };
        formatted_files += 1;
        let twice = format_source(&name, &once).unwrap_or_else(|d| panic!("{name}: {d}"));
        assert_eq!(once, twice, "formatting `{name}` twice changed it");
    }
    assert!(formatted_files >= DEFAULT_PACK.len());
}

/// Files that do not parse are refused with the parser's own diagnostics.
#[test]
fn files_that_do_not_parse_are_refused_with_their_diagnostics() {
    for path in policy_files() {
        let name = relative(&path);
        let text = read(&path);
        let parsed = writ::parser::parse_file(
            file_id(),
            &writ::source::SourceFile::new(name.as_str(), text.as_str()),
        )
        .1;
        match format_source(&name, &text) {
            Ok(_) => assert!(
                parsed.is_empty(),
                "`{name}` does not parse but was formatted"
            ),
            Err(diagnostics) => assert_eq!(diagnostics.codes(), parsed.codes(), "`{name}`"),
        }
    }
}

/// Every request in the fixture corpus (`tests/**.json` cases): requests
/// written for the pack and for the small policies of `tests/core`.
fn corpus_requests() -> &'static [writ::Request] {
    static REQUESTS: std::sync::OnceLock<Vec<writ::Request>> = std::sync::OnceLock::new();
    REQUESTS.get_or_init(|| {
        let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
        let files = writ::fixture::discover(&[tests]).expect("walks tests/");
        let mut requests = Vec::new();
        for file in files {
            let Ok(fixture) = serde_json::from_str::<serde_json::Value>(&read(&file)) else {
                continue;
            };
            let cases = fixture["cases"].as_array().cloned().unwrap_or_default();
            for case in cases {
                if let Ok(request) = writ::Request::from_json(&case["request"].to_string()) {
                    requests.push(request);
                }
            }
        }
        assert!(requests.len() >= 100, "only {} requests", requests.len());
        requests
    })
}

/// A decision with what depends on layout blanked out: the `file:line` of
/// each trace entry, the text of a failed condition and the digest of the
/// policy text.
fn without_layout(mut decision: writ::Decision) -> writ::Decision {
    decision.policy.digest = "".into();
    for entry in &mut decision.trace {
        entry.at = "".into();
        if let Some(failed) = &mut entry.failed {
            failed.condition = "".into();
        }
    }
    decision
}

/// The same meaning: every request of the corpus gets the same decision,
/// trace included, from both sets.
fn assert_same_decisions(what: &str, before: &Engine, after: &Engine) {
    for request in corpus_requests() {
        assert_eq!(
            without_layout(before.decide(request)),
            without_layout(after.decide(request)),
            "decision of {what} on {}",
            serde_json::to_string(request).unwrap_or_default()
        );
    }
}

fn assert_same_meaning(what: &str, before: &Engine, after: &Engine) {
    let ids = |e: &Engine| {
        e.policy()
            .rules
            .iter()
            .map(|r| r.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(before), ids(after), "rule ids of {what}");
    assert_eq!(
        before.tree().render(before.policy()),
        after.tree().render(after.policy()),
        "decision tree of {what}"
    );
    assert_eq!(
        before.tree().to_dot(before.policy()),
        after.tree().to_dot(after.policy()),
        "DOT of {what}"
    );
    assert_same_decisions(what, before, after);
}

#[test]
fn the_formatted_default_pack_compiles_to_the_same_tree() {
    let formatted: Vec<(String, String)> = DEFAULT_PACK
        .iter()
        .map(|(name, text)| {
            let out = format_source(name, text).unwrap_or_else(|d| panic!("{name}: {d}"));
            (name.to_string(), out)
        })
        .collect();
    let before = Engine::default_pack(None).expect("the pack compiles");
    let after = Engine::compile(formatted, None).expect("the formatted pack compiles");
    assert_same_meaning("the default pack", &before, &after);
}

/// JSON objects next to a policy file, for policies that read data.
fn sibling_data(path: &Path) -> Vec<serde_json::Value> {
    let mut found = Vec::new();
    let Some(dir) = path.parent() else {
        return found;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for json in paths
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        if let Ok(value @ serde_json::Value::Object(_)) = serde_json::from_str(&read(json)) {
            found.push(value);
        }
    }
    found
}

#[test]
fn every_formatted_file_compiles_to_the_same_rules() {
    let mut compared = 0;
    for path in policy_files() {
        let name = relative(&path);
        let text = read(&path);
        let Ok(formatted) = format_source(&name, &text) else {
            continue;
        };
        let data = sibling_data(&path);
        let choices = std::iter::once(None).chain(data.iter().map(Some));
        let mut outcome = None;
        for data in choices {
            if let Ok(before) = Engine::compile([(name.as_str(), text.as_str())], data) {
                outcome = Some((before, data));
                break;
            }
        }
        match outcome {
            Some((before, data)) => {
                let after = Engine::compile([(name.as_str(), formatted.as_str())], data)
                    .unwrap_or_else(|d| panic!("formatted `{name}` no longer compiles:\n{d}"));
                assert_same_meaning(&format!("`{name}`"), &before, &after);
                compared += 1;
            }
            None => {
                let codes = |text: &str| match Engine::compile([(name.as_str(), text)], None) {
                    Ok(_) => Vec::new(),
                    Err(d) => d.codes(),
                };
                assert_eq!(codes(&text), codes(&formatted), "diagnostics of `{name}`");
            }
        }
    }
    assert!(compared >= DEFAULT_PACK.len());
}

/// A rule without `@id` is named after its text with whitespace collapsed,
/// "so reformatting a rule keeps its id" (src/check.rs). Formatting also
/// adds and removes spaces next to operators and brackets, so the id must
/// not depend on that either.
#[test]
fn generated_ids_survive_formatting() {
    let text = "permit if action==\"read\" and resource.kind in [ \"db\",\"bucket\" ] grant [\"read:{resource.id}\"] for 5m;\nforbid if subject.shared;";
    let formatted = format_source("t.writ", text).expect("formats");
    assert_ne!(formatted, text);
    let before = Engine::compile([("t.writ", text)], None).expect("compiles");
    let after = Engine::compile([("t.writ", formatted.as_str())], None).expect("compiles");
    let ids = |e: &Engine| {
        e.policy()
            .rules
            .iter()
            .map(|r| r.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&before), ids(&after));
}

/// A comment at any token boundary of the pack, at the end of a line or on
/// a line of its own (plain or doc, in turn), is kept, keeps the tokens, and
/// formats stably.
#[test]
fn a_comment_anywhere_is_kept_and_stable() {
    let inserts = [" // note\n", "\n// note\n", "\n/// doc note\n"];
    let mut checked = 0;
    for (name, text) in DEFAULT_PACK {
        let (tokens, _) = lex(file_id(), text);
        for (index, token) in tokens.iter().enumerate() {
            let at = token.span.end as usize;
            let insert = inserts[index % inserts.len()];
            let edited = format!("{}{insert}{}", &text[..at], &text[at..]);
            let once = format_source(name, &edited)
                .unwrap_or_else(|d| panic!("{name} with {insert:?} after token {index}: {d}"));
            let twice = format_source(name, &once).unwrap_or_else(|d| panic!("{name}: {d}"));
            assert_eq!(once, twice, "{name} with {insert:?} after token {index}");
            assert_eq!(solid_tokens(&edited), solid_tokens(&once));
            assert_eq!(comments(&edited), comments(&once));
            checked += 1;
        }
    }
    assert!(checked > 500, "only {checked} positions");
}
