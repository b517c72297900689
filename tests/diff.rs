//! `writ diff` on the real binary: every change it reports comes with a
//! witness request that `writ eval` decides as reported on both sides, and
//! a reformatted copy of the default pack differs in nothing, with the
//! coverage said to be complete. A property test over random pairs of
//! small policy sets checks the library's answers against the evaluator.

mod common;

use std::path::{Path, PathBuf};

use common::{review_fixture as fixture, scratch, writ_texts as writ};
use proptest::prelude::*;
use serde_json::Value;
use writ::review::diff::diff;
use writ::review::Budget;
use writ::{Engine, Request};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `writ eval` of `request` under `policy`: the decision JSON.
fn eval(policy: &str, request: &Value, dir: &Path) -> Value {
    let file = dir.join("request.json");
    std::fs::write(&file, request.to_string()).expect("write the request");
    let file = file.display().to_string();
    let (_, out, err) = writ(&["eval", "--policy", policy, "--request", &file]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("eval JSON: {e}: {out} {err}"))
}

#[test]
fn each_change_has_a_witness_that_eval_confirms() {
    let (old, new) = (fixture("small-old"), fixture("small-new"));
    let (code, out, err) = writ(&["diff", &old, &new, "--format", "json"]);
    assert_eq!(code, 1, "a widening exits 1: {out} {err}");
    let report: Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["widens"], true);
    let changes = report["changes"].as_array().expect("changes");
    let kinds: Vec<&str> = changes.iter().filter_map(|c| c["kind"].as_str()).collect();
    assert!(kinds.contains(&"deny_to_allow"), "{kinds:?}");
    assert!(kinds.contains(&"ttl_shorter"), "{kinds:?}");
    let dir = scratch("diff", "witness");
    for change in changes {
        let witness = &change["witness"];
        let before = eval(&old, witness, &dir);
        let after = eval(&new, witness, &dir);
        for (key, side) in [("before", &before), ("after", &after)] {
            assert_eq!(change[key]["decision"], side["decision"], "{change}");
            assert_eq!(change[key]["ttl"], side["ttl"], "{change}");
            assert_eq!(change[key]["scope"], side["scope"], "{change}");
        }
        assert!(
            before["decision"] != after["decision"]
                || before["ttl"] != after["ttl"]
                || before["scope"] != after["scope"]
                || before["obligations"] != after["obligations"],
            "the witness decides alike: {change}"
        );
    }
    let (code, _, _) = writ(&["diff", &old, &new, "--fail-on", "none"]);
    assert_eq!(code, 0, "--fail-on none never fails");
    // The way back allows CI longer again: that widens too.
    let (code, out, _) = writ(&["diff", &new, &old, "--format", "json"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("\"ttl_longer\""), "{out}");
}

/// Copies the pack's files with each line's indentation and the blank
/// lines changed, then formats the copy with `writ fmt`.
fn reformatted_pack(dir: &Path) -> PathBuf {
    let copy = dir.join("pack");
    std::fs::create_dir_all(&copy).expect("mkdir");
    for entry in std::fs::read_dir(Path::new(ROOT).join("policies/default")).expect("pack") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let messy: String = text
            .lines()
            .map(|l| format!("   {}\n\n", l.trim_start()))
            .collect();
        std::fs::write(copy.join(path.file_name().expect("name")), messy).expect("write");
    }
    let copy_text = copy.display().to_string();
    let (code, out, err) = writ(&["fmt", &copy_text]);
    assert_eq!(code, 0, "writ fmt: {out} {err}");
    copy
}

#[test]
fn a_reformatted_pack_differs_in_nothing_with_complete_coverage() {
    let dir = scratch("diff", "fmt");
    let copy = reformatted_pack(&dir);
    let pack = Path::new(ROOT)
        .join("policies/default")
        .display()
        .to_string();
    let copy = copy.display().to_string();
    let (code, out, err) = writ(&["diff", &pack, &copy, "--format", "json"]);
    assert_eq!(code, 0, "{out} {err}");
    let report: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["changes"], Value::Array(Vec::new()));
    let (_, text, _) = writ(&["diff", &pack, &copy]);
    assert!(text.starts_with("writ diff: no difference\n"), "{text}");
    assert!(text.contains("coverage: complete"), "{text}");
}

#[test]
fn a_set_that_does_not_compile_is_an_error_naming_the_file() {
    let dir = scratch("diff", "bad");
    let bad = dir.join("bad.writ");
    std::fs::write(&bad, "permit if action = ;\n").expect("write");
    let bad = bad.display().to_string();
    let (code, out, err) = writ(&["diff", &fixture("small-old"), &bad]);
    assert_eq!(code, 2, "{out} {err}");
    assert!(err.contains("NEW") && err.contains("bad.writ"), "{err}");
    assert!(out.is_empty(), "no report on an error: {out}");
}

#[test]
fn the_text_report_of_a_small_change() {
    let (_, out, _) = writ(&["diff", &fixture("small-old"), &fixture("small-new")]);
    insta::assert_snapshot!("diff_small_text", out);
}

// ---- the property: random pairs of small sets ----

const ACTIONS: &[&str] = &["read", "write", "deploy"];
const KINDS: &[&str] = &["agent", "ci", "service"];
const LEVELS: &[&str] = &["public", "internal", "confidential", "restricted"];

/// A small rule over a few attributes, as source text.
fn rule() -> impl Strategy<Value = String> {
    let cond = prop_oneof![
        prop::sample::select(ACTIONS).prop_map(|a| format!("action == \"{a}\"")),
        prop::sample::select(KINDS).prop_map(|k| format!("subject.kind != \"{k}\"")),
        prop::sample::select(LEVELS).prop_map(|l| format!("sensitivity >= {l}")),
        (0u32..100).prop_map(|n| format!("context.risk > {n}")),
        Just("subject has owner".to_owned()),
        Just("subject.attested == true".to_owned()),
    ];
    let conds = prop::collection::vec(cond, 0..3).prop_map(|c| {
        if c.is_empty() {
            String::new()
        } else {
            format!(" if {}", c.join(" and "))
        }
    });
    (0u8..4, conds, 1u32..5).prop_map(|(kind, cond, ttl)| match kind {
        0 | 1 => format!("permit{cond} grant [\"read:x\"] for {}m;", ttl * 10),
        2 => format!("forbid{cond};"),
        _ => format!("limit ttl {}m{cond};", ttl * 5),
    })
}

fn policy_set() -> impl Strategy<Value = String> {
    prop::collection::vec(rule(), 1..5).prop_map(|rules| {
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| format!("@id(\"r{i}\")\n{r}\n"))
            .collect()
    })
}

/// A random request over the same attributes (absent values included).
fn request() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::sample::select(ACTIONS)),
        prop::option::of(prop::sample::select(KINDS)),
        prop::option::of(prop::sample::select(LEVELS)),
        prop::option::of(-5i32..110),
        any::<bool>(),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(action, kind, level, risk, owner, attested)| {
            let mut r = serde_json::json!({
                "environment": {"time": "2026-01-01T00:00:00Z"},
                "subject": {},
                "context": {},
            });
            if let Some(a) = action {
                r["action"] = a.into();
            }
            if let Some(k) = kind {
                r["subject"]["kind"] = k.into();
            }
            if let Some(l) = level {
                r["sensitivity"] = l.into();
            }
            if let Some(n) = risk {
                r["context"]["risk"] = n.into();
            }
            if owner {
                r["subject"]["owner"] = "team".into();
            }
            if let Some(a) = attested {
                r["subject"]["attested"] = a.into();
            }
            r
        })
}

fn compile(text: &str) -> Option<Engine> {
    Engine::compile([("p.writ", text.to_owned())], None).ok()
}

fn decides_alike(old: &Engine, new: &Engine, request: &Value) -> bool {
    let Ok((request, _)) = Request::from_value(request.clone()) else {
        return true;
    };
    let (a, b) = (old.decide(&request), new.decide(&request));
    a.decision == b.decision
        && a.ttl == b.ttl
        && a.scope == b.scope
        && a.obligations == b.obligations
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn witnesses_differ_and_equal_classes_stay_equal(
        old in policy_set(),
        new in policy_set(),
        samples in prop::collection::vec(request(), 64),
    ) {
        // The checker refuses some generated sets (a condition that can
        // never hold); those are not pairs to compare.
        let (Some(a), Some(b)) = (compile(&old), compile(&new)) else {
            return Ok(());
        };
        let report = diff(&a, &b, Budget::default());
        for group in &report.groups {
            prop_assert!(
                !decides_alike(&a, &b, &group.witness.request),
                "a witness decides alike: {:?}\nold:\n{old}\nnew:\n{new}", group
            );
        }
        if report.groups.is_empty() && report.coverage.complete() {
            for request in &samples {
                prop_assert!(
                    decides_alike(&a, &b, request),
                    "diff called the sets equal, but {request} differs\nold:\n{old}\nnew:\n{new}"
                );
            }
        }
    }
}

// ---- the default pack and three changes to it ----

/// A copy of the pack with `edit` applied to the file `name`.
fn pack_copy(dir: &Path, label: &str, name: &str, edit: impl Fn(&str) -> String) -> String {
    let copy = dir.join(label);
    std::fs::create_dir_all(&copy).expect("mkdir");
    for entry in std::fs::read_dir(Path::new(ROOT).join("policies/default")).expect("pack") {
        let path = entry.expect("entry").path();
        let file = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path).expect("read");
        let text = if file == name { edit(&text) } else { text };
        std::fs::write(copy.join(&file), text).expect("write");
    }
    copy.display().to_string()
}

/// Runs `writ diff` from the pack to `new`, and checks that a change of
/// `kind` is reported with a witness that `writ eval` decides as reported.
fn pack_change_found(new: &str, kind: &str, dir: &Path) {
    let pack = Path::new(ROOT)
        .join("policies/default")
        .display()
        .to_string();
    let (code, out, err) = writ(&[
        "diff",
        &pack,
        new,
        "--format",
        "json",
        "--max-nodes",
        "20000",
    ]);
    assert_eq!(code, 1, "each of these changes widens: {out} {err}");
    let report: Value = serde_json::from_str(&out).expect("JSON");
    let change = report["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} change in {report}"));
    let before = eval(&pack, &change["witness"], dir);
    let after = eval(new, &change["witness"], dir);
    for (key, side) in [("before", &before), ("after", &after)] {
        assert_eq!(change[key]["decision"], side["decision"], "{change}");
        assert_eq!(change[key]["ttl"], side["ttl"], "{change}");
        assert_eq!(change[key]["scope"], side["scope"], "{change}");
    }
    assert_ne!(
        (&before["decision"], &before["ttl"], &before["scope"]),
        (&after["decision"], &after["ttl"], &after["scope"]),
        "{change}"
    );
}

#[test]
fn the_pack_without_identity_attested_allows_unattested_workloads() {
    let dir = scratch("diff", "attested");
    let new = pack_copy(&dir, "new", "identity.writ", |text| {
        let start = text.find("@id(\"identity.attested\")").expect("the rule");
        let end = text
            .find("@id(\"identity.shared\")")
            .expect("the next rule");
        format!("{}{}", &text[..start], &text[end..])
    });
    pack_change_found(&new, "deny_to_allow", &dir);
}

#[test]
fn the_pack_with_a_longer_restricted_ttl_issues_longer_credentials() {
    let dir = scratch("diff", "ttl");
    let new = pack_copy(&dir, "new", "ttl.writ", |text| {
        text.replace(
            "const ttl_restricted = 15m;",
            "const ttl_restricted = 3600s;",
        )
    });
    pack_change_found(&new, "ttl_longer", &dir);
}

#[test]
fn the_pack_with_a_baseline_permit_widened_to_everything_grants_more() {
    // `**` alone is not a scope item (it needs `verb:resource`): the
    // widest grant a permit can write for reads is `read:**`.
    let dir = scratch("diff", "wide");
    let new = pack_copy(&dir, "new", "baseline.writ", |text| {
        text.replace(
            "grant [\"read:{resource.id}\"] for ttl_owner_read",
            "grant [\"read:**\"] for ttl_owner_read",
        )
    });
    pack_change_found(&new, "scope_wider", &dir);
}

#[test]
fn the_text_report_of_the_longer_restricted_ttl() {
    let dir = scratch("diff", "ttl-text");
    let new = pack_copy(&dir, "new", "ttl.writ", |text| {
        text.replace(
            "const ttl_restricted = 15m;",
            "const ttl_restricted = 3600s;",
        )
    });
    let pack = Path::new(ROOT)
        .join("policies/default")
        .display()
        .to_string();
    let (_, out, _) = writ(&["diff", &pack, &new, "--max-nodes", "20000"]);
    insta::assert_snapshot!("diff_pack_ttl_text", out);
}
