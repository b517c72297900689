//! Lint opt-outs and levels (issue 19, item 7): a file's `// writ:
//! allow(...) because "..."` directive, and `writ lint --level CODE=LEVEL`.

use std::process::{Command, Output};

const TODO: &str =
    "@id(\"todo.read\")\npermit if action == \"can_read_todos\" grant [\"read:todos\"] for 15m;\n";

fn lint(text: &str, args: &[&str]) -> Output {
    let dir = std::env::temp_dir().join(format!(
        "writ-lint-config-{}-{}",
        std::process::id(),
        text.len() + args.len()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("todo.writ");
    std::fs::write(&file, text).expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_writ"))
        .arg("lint")
        .arg(&file)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run writ");
    let _ = std::fs::remove_dir_all(&dir);
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_file_directive_with_a_reason_silences_a_lint() {
    let bare = lint(TODO, &[]);
    assert_eq!(bare.status.code(), Some(1));
    assert!(
        stderr(&bare).contains("writ::lint::no_workload_identity"),
        "{}",
        stderr(&bare)
    );

    let directed =
        format!("// writ: allow(no_workload_identity) because \"the subjects are people\"\n{TODO}");
    let quiet = lint(&directed, &[]);
    assert_eq!(quiet.status.code(), Some(0), "{}", stderr(&quiet));

    // Without a reason it silences nothing and says so.
    let unexplained = format!("// writ: allow(no_workload_identity)\n{TODO}");
    let loud = lint(&unexplained, &[]);
    assert_eq!(loud.status.code(), Some(1));
    let text = stderr(&loud);
    assert!(text.contains("writ::lint::bad_allow"), "{text}");
    assert!(text.contains("writ::lint::no_workload_identity"), "{text}");
}

#[test]
fn levels_hide_warn_or_deny() {
    let warned = lint(TODO, &["--level", "no_workload_identity=warn"]);
    assert_eq!(warned.status.code(), Some(0));
    assert!(stderr(&warned).contains("no_workload_identity"));

    let allowed = lint(TODO, &["--level", "writ::lint::no_workload_identity=allow"]);
    assert_eq!(allowed.status.code(), Some(0));
    assert!(
        !stderr(&allowed).contains("no_workload_identity"),
        "{}",
        stderr(&allowed)
    );

    let denied = lint(
        TODO,
        &[
            "--level",
            "no_workload_identity=warn",
            "--level",
            "no_workload_identity=deny",
        ],
    );
    assert_eq!(denied.status.code(), Some(1));

    let typo = lint(TODO, &["--level", "no_workload_identiy=warn"]);
    assert_eq!(typo.status.code(), Some(2));
    assert!(
        stderr(&typo).contains("did you mean `no_workload_identity`?"),
        "{}",
        stderr(&typo)
    );
    let bad_level = lint(TODO, &["--level", "dead_permit=loud"]);
    assert_eq!(bad_level.status.code(), Some(2));
}
