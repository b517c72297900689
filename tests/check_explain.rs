//! `writ eval --explain` (issue 19, item 6): the `because` of limits and
//! requires, what a failed `not (...)` saw inside it, and an obligation
//! credited to every rule that asks for it. The explanation is asserted on
//! its lines, then snapshotted.

use writ::{explain, Engine, Request, Style};

const POLICY: &str = r#"@id("read")
permit if action == "read" grant ["read:{resource.id}"] revoke on task_end;

@id("ttl.agent")
limit ttl 5m if subject.kind == "agent" because "agents get five minutes";

@id("lifecycle.task-end")
require revoke on task_end because "every credential ends with its task";

@id("approval")
require approval if not context has approval because "a person must say yes";

@id("deploy")
permit if action == "deploy" and not (subject.kind == "agent" and context has ticket);
"#;

fn explained(request: &str) -> String {
    let engine = match Engine::compile([("t.writ", POLICY)], None) {
        Ok(engine) => engine,
        Err(diagnostics) => panic!("{diagnostics}"),
    };
    let request = match Request::from_json(request) {
        Ok(request) => request,
        Err(error) => panic!("{error}"),
    };
    explain(&engine.decide(&request), &engine, Style::new(false))
}

#[test]
fn limits_and_requires_show_their_because_and_shared_obligations_both_rules() {
    let text = explained(
        r#"{"subject": {"kind": "agent"}, "action": "read", "resource": {"id": "db://crm"}}"#,
    );
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let after = |line: &str| {
        let at = lines
            .iter()
            .position(|l| l.contains(line))
            .unwrap_or_else(|| panic!("no line with `{line}` in:\n{text}"));
        lines.get(at + 1).copied().unwrap_or("")
    };
    assert_eq!(
        after("set ttl 300").trim(),
        "because agents get five minutes"
    );
    assert!(
        after("revoke_on task_end").contains("also lifecycle.task-end t.writ:8"),
        "{text}"
    );
    assert!(
        text.contains("because every credential ends with its task"),
        "{text}"
    );
    assert!(text.contains("because a person must say yes"), "{text}");
    insta::assert_snapshot!("explain_because_and_credit", text);
}

#[test]
fn a_failed_not_says_what_held_inside_it() {
    let text = explained(
        r#"{"subject": {"kind": "agent"}, "action": "deploy", "context": {"ticket": "CHG-1"}}"#,
    );
    assert!(
        text.contains(
            "failed: not (subject.kind == \"agent\" and context has ticket)  (saw true: all of what `not` negates held)"
        ),
        "{text}"
    );
    insta::assert_snapshot!("explain_not", text);
}
