//! Data lookups (issue 19, item 4): `has` on data values, `data[...]` for
//! the data file as a whole, and level names in the data ordering against
//! `sensitivity`.

use serde_json::{json, Value};
use writ::{Engine, Request};

fn compile(policy: &str, data: &Value) -> Engine {
    match Engine::compile([("t.writ", policy)], Some(data)) {
        Ok(engine) => engine,
        Err(diagnostics) => panic!("{diagnostics}"),
    }
}

fn decide(engine: &Engine, request: Value) -> (bool, Vec<String>) {
    let request = match Request::from_json(&request.to_string()) {
        Ok(request) => request,
        Err(error) => panic!("{error}"),
    };
    let decision = engine.decide(&request);
    let errors = decision.errors.iter().map(|e| e.message.clone()).collect();
    (decision.is_allow(), errors)
}

fn data() -> Value {
    json!({
        "users": {"alice": {"roles": ["admin"], "clearance": "confidential"}, "bob": {"roles": [], "clearance": "secret"}},
        "svc-batch": {"team": "payments"}
    })
}

#[test]
fn has_on_data_values_never_errs() {
    let engine = compile("permit if users[subject.id] has roles;", &data());
    assert_eq!(
        decide(&engine, json!({"subject": {"id": "alice"}})),
        (true, vec![])
    );
    // Empty roles say nothing; a user the data does not know is absent;
    // a missing subject id is absent too, not an error.
    assert_eq!(
        decide(&engine, json!({"subject": {"id": "bob"}})),
        (false, vec![])
    );
    assert_eq!(
        decide(&engine, json!({"subject": {"id": "carol"}})),
        (false, vec![])
    );
    assert_eq!(decide(&engine, json!({})), (false, vec![]));
    // In a forbid, `not ... has` applies to the unknown user.
    let forbid = compile(
        "permit; forbid if not users[subject.id] has roles;",
        &data(),
    );
    assert!(!decide(&forbid, json!({"subject": {"id": "carol"}})).0);
    assert!(decide(&forbid, json!({"subject": {"id": "alice"}})).0);
}

#[test]
fn data_names_the_file_as_a_whole() {
    let engine = compile(
        "permit if data[subject.id].team == \"payments\" and data.users has alice;",
        &data(),
    );
    assert_eq!(
        decide(&engine, json!({"subject": {"id": "svc-batch"}})),
        (true, vec![])
    );
    let (allowed, errors) = decide(&engine, json!({"subject": {"id": "nobody"}}));
    assert!(!allowed);
    assert_eq!(errors, ["key `nobody` is missing"]);
    // A key written in the policy must be in the file; `data` alone is no value.
    let refused = |policy: &str| match Engine::compile([("t.writ", policy)], Some(&data())) {
        Ok(_) => panic!("`{policy}` compiled"),
        Err(diagnostics) => (diagnostics.codes(), diagnostics.render(false)),
    };
    let (codes, text) = refused("permit if data.user has alice;");
    assert_eq!(codes, ["writ::check::unknown_name"]);
    assert!(text.contains("did you mean `users`?"), "{text}");
    assert_eq!(
        refused("permit if data == 1;").0,
        ["writ::check::bad_operand"]
    );
    assert_eq!(
        refused("permit if data[5] has x;").0,
        ["writ::check::bad_operand"]
    );
    // A data key called `data` keeps its meaning.
    let own = compile("permit if data.x == 1;", &json!({"data": {"x": 1}}));
    assert_eq!(decide(&own, json!({})), (true, vec![]));
}

#[test]
fn level_names_in_the_data_order_against_sensitivity() {
    let engine = compile(
        "permit if sensitivity <= users[subject.id].clearance;",
        &data(),
    );
    let ask = |who: &str, level: &str| {
        decide(
            &engine,
            json!({"subject": {"id": who}, "sensitivity": level}),
        )
    };
    assert_eq!(ask("alice", "internal"), (true, vec![]));
    assert_eq!(ask("alice", "confidential"), (true, vec![]));
    assert_eq!(ask("alice", "restricted"), (false, vec![]));
    // A string that names no level cannot be ordered: an error, so no allow.
    let (allowed, errors) = ask("bob", "public");
    assert!(!allowed);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let equal = compile(
        "permit if sensitivity == users[subject.id].clearance;",
        &data(),
    );
    assert_eq!(
        decide(
            &equal,
            json!({"subject": {"id": "alice"}, "sensitivity": "confidential"})
        ),
        (true, vec![])
    );
}
