//! `writ fmt` keeps the author's grouping of `and`/`or` chains, and
//! `writ fmt --check` prints a unified diff per file (issue 19, item 7).

use std::process::Command;

fn dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("writ-fmt-check-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn format(text: &str) -> String {
    match writ::fmt::format_source("t.writ", text) {
        Ok(out) => out,
        Err(diagnostics) => panic!("does not format: {diagnostics}"),
    }
}

#[test]
fn a_chain_the_author_broke_keeps_its_lines() {
    let grouped = "@id(\"deploy\")\npermit if subject.kind == \"ci\" and action == \"deploy\"\n  and resource.kind == \"cluster\" and environment.name == \"prod\"\n  grant [\"deploy:x\"];\n";
    assert_eq!(format(grouped), grouped);
    // Inside parentheses too.
    let nested = "@id(\"c\")\nforbid if (subject.kind == \"ci\"\n    and action == \"deploy\") or resource.kind == \"x\";\n";
    assert_eq!(format(nested), nested);
    // A chain written on one line that fits stays on one line; one that
    // does not is filled up to the width, as before.
    let flat = "@id(\"a\")\npermit if action == \"read\" and subject.kind == \"ci\";\n";
    assert_eq!(format(flat), flat);
    let long = "@id(\"b\") permit if subject.kind == \"ci\" and action == \"deploy\" and resource.kind == \"cluster\" and environment.name == \"prod\";";
    assert_eq!(
        format(long),
        "@id(\"b\")\npermit if subject.kind == \"ci\" and action == \"deploy\"\n  and resource.kind == \"cluster\" and environment.name == \"prod\";\n"
    );
    // The author's break is kept even where the line would have room.
    let broken = "permit if action == \"read\"\n  and subject.kind == \"ci\";\n";
    assert_eq!(format(broken), broken);
}

#[test]
fn check_prints_a_unified_diff_per_file() {
    let dir = dir("diff");
    let messy = "@id(\"read\") permit if action==\"read\";\n";
    std::fs::write(dir.join("a.writ"), messy).expect("write");
    std::fs::write(dir.join("b.writ"), "@id(\"ok\")\npermit;\n").expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_writ"))
        .args(["fmt", "--check"])
        .arg(&dir)
        .output()
        .expect("run writ");
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout).replace(&dir.display().to_string(), "DIR");
    assert_eq!(
        stdout,
        "--- DIR/a.writ\n+++ DIR/a.writ (formatted)\n@@ -1,1 +1,2 @@\n-@id(\"read\") permit if action==\"read\";\n+@id(\"read\")\n+permit if action == \"read\";\n"
    );
    // The file is left as it was.
    assert_eq!(
        std::fs::read_to_string(dir.join("a.writ")).expect("read"),
        messy
    );
    let _ = std::fs::remove_dir_all(&dir);
}
