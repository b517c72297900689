use super::*;
use crate::decision::Effect;
use crate::engine::Engine;
use crate::ir::Ty;

fn engine(policy: &str) -> Engine {
    match Engine::compile([("t.writ", policy)], None) {
        Ok(engine) => engine,
        Err(diagnostics) => panic!("the test policy compiles: {diagnostics:?}"),
    }
}

fn request(json: &str) -> (Request, Prepared) {
    match Request::parse_json(json) {
        Ok(parsed) => parsed,
        Err(error) => panic!("the test request is valid: {error}"),
    }
}

/// `not not ... inner`, `levels` deep.
fn nested_not(inner: Expr, levels: usize) -> Expr {
    let span = inner.span;
    let mut expr = inner;
    for _ in 0..levels {
        expr = Expr {
            kind: ExprKind::Not(Box::new(expr)),
            ty: Ty::Bool,
            span,
        };
    }
    expr
}

/// Frees a deep expression without recursing (the derived `Drop` recurses
/// once a level, which a test thread's stack cannot take this deep).
fn forget_deep(mut expr: Expr) {
    while let ExprKind::Not(inner) = expr.kind {
        expr = *inner;
    }
}

/// Runs `test` on a thread whose stack holds `MAX_DEPTH` levels of
/// unoptimised frames (about five times a release build's, which 2 MiB
/// holds).
fn with_release_sized_stack(test: impl FnOnce() + Send + 'static) {
    let thread = std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(test)
        .expect("a test thread");
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn the_depth_guard_stops_evaluation_at_the_limit_not_the_stack() {
    with_release_sized_stack(depth_guard);
}

fn depth_guard() {
    let engine = engine("permit if subject.attested;");
    let inner = engine.policy().rules[0].conjuncts[0].clone();
    let (request, prepared) = request(r#"{"subject":{"attested":true}}"#);
    let data = IndexMap::new();

    // At the limit (the innermost attribute is call number MAX_DEPTH), the
    // value comes out: an even number of `not`s keeps it.
    let deepest = nested_not(inner.clone(), MAX_DEPTH - 2);
    let mut evaluator = Evaluator::new(&request, &prepared, &data);
    assert!(matches!(evaluator.eval(&deepest), Ok(Val::Bool(true))));

    // One past it, and far past it: the error, never a stack overflow.
    for levels in [MAX_DEPTH, 8 * MAX_DEPTH] {
        let too_deep = nested_not(inner.clone(), levels);
        let mut evaluator = Evaluator::new(&request, &prepared, &data);
        match evaluator.truth(&too_deep).map_err(|e| *e) {
            Err(EvalError::TooDeep { limit, span }) => {
                assert_eq!(limit, MAX_DEPTH);
                assert_eq!(span, inner.span);
            }
            other => panic!("{levels} levels: expected TooDeep, got {other:?}"),
        }
        // The evaluator is left balanced: it evaluates the next rule.
        assert!(matches!(evaluator.truth(&inner), Ok(true)));
        forget_deep(too_deep);
    }
}

#[test]
fn an_expression_too_deep_fails_closed_in_a_decision() {
    with_release_sized_stack(too_deep_fails_closed);
}

fn too_deep_fails_closed() {
    let engine = engine(
        r#"@id("deep-permit") permit if subject.attested;
           @id("deep-forbid") forbid if subject.attested;"#,
    );
    let request_json = r#"{"subject":{"attested":true}}"#;
    let message = "the expression is nested more than 1024 levels deep; \
                   the evaluator stops there (fails closed)";

    // A permit too deep to evaluate does not match: deny, with the error.
    let mut set = engine.policy().clone();
    set.rules.truncate(1);
    let deep = || nested_not(engine.policy().rules[0].conjuncts[0].clone(), 4 * MAX_DEPTH);
    set.rules[0].conjuncts[0] = deep();
    let (request, _) = request(request_json);
    let mut set = std::sync::Arc::new(set);
    let decision = crate::render::decide_naive(&set, &"sha256:test".into(), &request);
    assert_eq!(decision.decision, Effect::Deny);
    assert_eq!(decision.errors.len(), 1);
    assert_eq!(decision.errors[0].rule, "deep-permit");
    assert_eq!(decision.errors[0].message, message);
    // The decision's trace shares the set; the deep expression is freed by
    // hand once it is the only owner.
    drop(decision);
    let owned = std::sync::Arc::get_mut(&mut set).expect("the decision is dropped");
    forget_deep(owned.rules.remove(0).conjuncts.remove(0));

    // A forbid too deep to evaluate applies: deny, naming it.
    let mut set = engine.policy().clone();
    set.rules[1].conjuncts[0] = deep();
    let mut set = std::sync::Arc::new(set);
    let decision = crate::render::decide_naive(&set, &"sha256:test".into(), &request);
    assert_eq!(decision.decision, Effect::Deny);
    assert_eq!(decision.reasons, ["deep-forbid"]);
    assert_eq!(decision.errors[0].message, message);
    drop(decision);
    let owned = std::sync::Arc::get_mut(&mut set).expect("the decision is dropped");
    forget_deep(owned.rules.remove(1).conjuncts.remove(0));
}

#[test]
fn an_error_carries_the_span_of_the_expression_that_failed() {
    let policy = "permit if action == \"read\" and subject.owner == \"x\";";
    let engine = engine(policy);
    let (request, prepared) = request(r#"{"action":"read"}"#);
    let data = IndexMap::new();
    let mut evaluator = Evaluator::new(&request, &prepared, &data);
    let rule = &engine.policy().rules[0];
    let RuleResult::Error(error) = evaluator.rule(rule) else {
        panic!("a missing owner is an error");
    };
    assert_eq!(error.to_string(), "`subject.owner` is missing");
    let span = error.span();
    assert_eq!(
        &policy[span.start as usize..span.end as usize],
        "subject.owner"
    );
}

#[test]
fn comparison_errors_read_as_before() {
    let policy = "permit if subject.level > 2h;";
    let engine = engine(policy);
    let (request, prepared) = request(r#"{"subject":{"level":"high"}}"#);
    let data = IndexMap::new();
    let mut evaluator = Evaluator::new(&request, &prepared, &data);
    let RuleResult::Error(error) = evaluator.rule(&engine.policy().rules[0]) else {
        panic!("a number against a string is an error");
    };
    assert_eq!(
        error.to_string(),
        "cannot order string \"high\" and duration \"7200s\""
    );
    assert!(matches!(*error, EvalError::Order { .. }));
    let span = error.span();
    assert_eq!(
        &policy[span.start as usize..span.end as usize],
        "subject.level > 2h"
    );
}

/// Decides `request_json` under `policy` (and `data`) and returns the
/// decision, checking that the naive evaluator agrees.
fn decide_with(policy: &str, data: Option<&serde_json::Value>, request_json: &str) -> crate::Decision {
    let engine = match Engine::compile([("t.writ", policy)], data) {
        Ok(engine) => engine,
        Err(diagnostics) => panic!("the test policy compiles: {diagnostics:?}"),
    };
    let (request, _) = request(request_json);
    let decision = engine.decide(&request);
    let naive = engine.decide_naive(&request);
    assert_eq!(decision.ttl, naive.ttl);
    assert_eq!(decision.decision, naive.decision);
    decision
}

const EXCEPTION_POLICY: &str = r#"
const ttl_exception = 15m;
@id("read") permit if action == "read" grant ["read:x"];
@id("exception") limit ttl min(ttl_exception, until context.exception.expires)
  if subject.auth == "static-secret";
"#;

fn exception_request(expires: &str) -> String {
    format!(
        r#"{{"subject":{{"auth":"static-secret"}},"action":"read",
            "environment":{{"time":"2026-12-01T10:00:00Z"}},
            "context":{{"exception":{{"expires":{expires}}}}}}}"#
    )
}

#[test]
fn until_caps_at_the_whole_seconds_left() {
    let decision = decide_with(
        EXCEPTION_POLICY,
        None,
        &exception_request(r#""2026-12-01T10:05:12.900Z""#),
    );
    assert_eq!(decision.decision, Effect::Allow);
    assert_eq!(decision.ttl, 312);
    let effects: Vec<String> = decision.trace[1].effect.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        effects,
        [
            "computed cap 312 = min(900, until 2026-12-01T10:05:12.9Z)",
            "capped ttl 3600 -> 312"
        ]
    );
    // Far away, the constant is the smaller cap.
    let decision = decide_with(
        EXCEPTION_POLICY,
        None,
        &exception_request(r#""2027-01-01T00:00:00+01:00""#),
    );
    assert_eq!(decision.ttl, 900);
}

#[test]
fn a_computed_cap_never_raises_the_ttl_above_the_default() {
    // Nothing else bounds the TTL: a far-away instant caps the default
    // hour, it does not set the TTL to decades.
    let policy = r#"
        @id("read") permit if action == "read" grant ["read:x"];
        @id("until") limit ttl until context.exception.expires;
    "#;
    let decision = decide_with(policy, None, &exception_request(r#""2099-01-01T00:00:00Z""#));
    assert_eq!((decision.decision, decision.ttl), (Effect::Allow, 3600));
    let effects: Vec<String> = decision.trace[1].effect.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        effects,
        [
            "computed cap 2274789600 = until 2099-01-01T00:00:00Z",
            "cap 2274789600 did not lower ttl 3600"
        ]
    );
    // A constant cap or a requested TTL is a bound of its own, as before.
    let policy = r#"
        @id("read") permit if action == "read" grant ["read:x"] for 2h;
        @id("until") limit ttl until context.exception.expires;
    "#;
    let decision = decide_with(policy, None, &exception_request(r#""2099-01-01T00:00:00Z""#));
    assert_eq!(decision.ttl, 7200);
}

#[test]
fn until_a_past_or_present_instant_denies_and_less_than_a_second_too() {
    for expires in [
        r#""2026-12-01T09:00:00Z""#,
        r#""2026-12-01T10:00:00Z""#,
        r#""2026-12-01T10:00:00.999Z""#,
    ] {
        let decision = decide_with(EXCEPTION_POLICY, None, &exception_request(expires));
        assert_eq!(decision.decision, Effect::Deny, "{expires}");
        assert_eq!(decision.ttl, 0);
        assert_eq!(decision.reasons, ["exception"]);
        assert_eq!(
            decision.errors[0].message,
            "the ttl works out to 0 seconds; an allow lasts at least one second"
        );
    }
}

#[test]
fn an_error_in_a_computed_cap_caps_at_zero_with_the_error() {
    let cases = [
        (
            r#""next week""#,
            "`until` needs an RFC 3339 timestamp, found string \"next week\"",
        ),
        (
            "1767225600",
            "`until` needs an RFC 3339 timestamp, found number 1767225600",
        ),
        (
            r#"{"at":"2027-01-01T00:00:00Z"}"#,
            "`until` needs an RFC 3339 timestamp, found object {\"at\":\"2027-01-01T00:00:00Z\"}",
        ),
    ];
    for (expires, message) in cases {
        let decision = decide_with(EXCEPTION_POLICY, None, &exception_request(expires));
        assert_eq!(decision.decision, Effect::Deny, "{expires}");
        assert_eq!(decision.reasons, ["exception"]);
        assert_eq!(decision.errors.len(), 1, "{:?}", decision.errors);
        assert_eq!(decision.errors[0].rule, "exception");
        assert_eq!(decision.errors[0].message, message);
        let entry = &decision.trace[1];
        assert_eq!(entry.error.as_deref(), Some(message));
        let effects: Vec<String> = entry.effect.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            effects,
            ["capped ttl 3600 -> 0", "denied: ttl under one second"]
        );
    }
    // No expiry at all.
    let decision = decide_with(
        EXCEPTION_POLICY,
        None,
        r#"{"subject":{"auth":"static-secret"},"action":"read",
            "environment":{"time":"2026-12-01T10:00:00Z"},"context":{"exception":{"id":"EX-1"}}}"#,
    );
    assert_eq!(decision.decision, Effect::Deny);
    assert_eq!(decision.errors[0].message, "field `expires` is missing");
    // No decision time: the cap cannot be computed, and the clock is
    // never read instead.
    let decision = decide_with(
        EXCEPTION_POLICY,
        None,
        r#"{"subject":{"auth":"static-secret"},"action":"read",
            "context":{"exception":{"expires":"2099-01-01T00:00:00Z"}}}"#,
    );
    assert_eq!(decision.decision, Effect::Deny);
    assert_eq!(decision.errors[0].message, "`environment.time` is missing");
}

#[test]
fn data_and_attributes_give_durations() {
    let policy = r#"
        @id("read") permit if action == "read" grant ["read:x"] for 1h;
        @id("kind") limit ttl caps[resource.kind];
    "#;
    let data = serde_json::json!({"caps": {"bucket": 600, "db": "5m", "queue": -5, "cache": "soon", "log": 1.5}});
    let ask = |kind: &str| format!(r#"{{"action":"read","resource":{{"kind":"{kind}"}}}}"#);
    let decision = decide_with(policy, Some(&data), &ask("bucket"));
    assert_eq!((decision.decision, decision.ttl), (Effect::Allow, 600));
    let decision = decide_with(policy, Some(&data), &ask("db"));
    assert_eq!((decision.decision, decision.ttl), (Effect::Allow, 300));
    for (kind, message) in [
        ("queue", "expected a duration (whole seconds, or text like \"15m\"), found number -5"),
        ("cache", "expected a duration (whole seconds, or text like \"15m\"), found string \"soon\""),
        ("log", "expected a duration (whole seconds, or text like \"15m\"), found number 1.5"),
        ("vm", "key `vm` is missing"),
    ] {
        let decision = decide_with(policy, Some(&data), &ask(kind));
        assert_eq!(decision.decision, Effect::Deny, "{kind}");
        assert_eq!(decision.errors[0].message, message, "{kind}");
        assert_eq!(decision.reasons, ["kind"]);
    }
    // A duration attribute caps too: `requested.ttl` can only lower.
    let decision = decide_with(
        "@id(\"p\") permit grant [\"read:x\"]; @id(\"l\") limit ttl min(20m, requested.ttl);",
        None,
        r#"{"requested":{"ttl":120}}"#,
    );
    assert_eq!(decision.ttl, 120);
}

#[test]
fn min_and_until_work_in_conditions_too() {
    let policy = r#"
        @id("read") permit if action == "read" and until context.expires >= 10m
          and min(context.count, 3) == 3 grant ["read:x"];
    "#;
    let ask = |expires: &str, count: u32| {
        format!(
            r#"{{"action":"read","environment":{{"time":"2026-12-01T10:00:00Z"}},
                "context":{{"expires":"{expires}","count":{count}}}}}"#
        )
    };
    assert_eq!(decide_with(policy, None, &ask("2026-12-01T10:10:00Z", 5)).decision, Effect::Allow);
    assert_eq!(decide_with(policy, None, &ask("2026-12-01T10:09:59Z", 5)).decision, Effect::Deny);
    assert_eq!(decide_with(policy, None, &ask("2026-12-01T10:10:00Z", 2)).decision, Effect::Deny);
}

/// `saw` answers some false conditions without evaluating them again
/// (`or`, `not`, conditions that are not comparisons): each answer must be
/// what evaluating the condition's tested side gives.
#[test]
fn what_a_false_condition_saw_is_what_evaluating_it_again_gives() {
    let engine = engine(
        r#"permit if subject.kind == "ci" and action == "x";
        permit if subject has shared;
        permit if not subject has owner;
        permit if (subject.kind == "agent" and action == "read") or subject.attested == false;
        permit if context.flag;
        permit if not (subject.kind == "ci");
        permit if any(item in requested.scope: contains(item, "*"));"#,
    );
    let (request, prepared) = request(
        r#"{"subject":{"id":"s","kind":"ci","attested":true,"owner":"t"},"action":"read",
        "resource":{"id":"r","kind":"db"},"requested":{"scope":["read:db://a"]},
        "context":{"flag":false}}"#,
    );
    let set = engine.policy();
    let mut evaluator = Evaluator::new(&request, &prepared, &set.data);
    let mut checked = 0;
    for rule in &set.rules {
        let at = match evaluator.rule(rule) {
            RuleResult::False(at) => at,
            other => panic!("{:?} is not false for the request: {other:?}", rule.conjunct_text),
        };
        let conjunct = &rule.conjuncts[at];
        // The side `saw` reports when it evaluates: the left of a
        // comparison, the operand of `not`, else the condition.
        let side = match &conjunct.kind {
            ExprKind::Binary(_, left, _) => left,
            ExprKind::Not(inner) => inner,
            _ => conjunct,
        };
        let again = match evaluator.eval(side) {
            Ok(value) => to_json(&value),
            Err(_) => Value::Null,
        };
        assert_eq!(evaluator.saw(conjunct), again, "rule {}", rule.id.as_str());
        checked += 1;
    }
    assert_eq!(checked, 7);
}

#[test]
fn the_quick_comparisons_answer_as_the_general_path() {
    let engine = engine(
        r#"permit if subject.owner == resource.owner;
        permit if subject.owner != resource.kind;
        permit if sensitivity >= confidential;
        permit if sensitivity < restricted;
        permit if context.n > 2;
        permit if context.n <= 2;
        permit if 3 == context.n;
        permit if 2 < context.n;
        permit if context.n == context.m;
        permit if context.n >= context.s;
        permit if context.n == "3";
        permit if context.s > 1;
        permit if context.level == sensitivity;
        permit if context.level > sensitivity;
        permit if context.missing == 1;
        permit if context.n < context.missing;
        permit if 1 != context.missing;
        permit if requested.ttl >= 1h;
        permit if requested.ttl == 1h;
        permit if context.d > 30m;
        permit if subject.attested == true;
        permit if subject.attested != context.flag;
        permit if context.list == ["a", "b"];
        permit if context.list != context.list;
        permit if context.obj == context.obj;
        permit if context.obj < context.obj;
        permit if environment.time < context.later;
        permit if environment.time == context.s;"#,
    );
    let (request, prepared) = request(
        r#"{"subject":{"id":"s","kind":"ci","attested":true,"owner":"t"},"action":"read",
        "resource":{"id":"r","kind":"db","owner":"t"},"sensitivity":"internal",
        "environment":{"time":"2026-11-22T10:00:00Z"},"requested":{"ttl":3600},
        "context":{"n":3,"m":3.0,"s":"x","level":"confidential","d":"1h","flag":false,
        "list":["a","b"],"obj":{"k":1},"later":"2026-11-23T00:00:00Z"}}"#,
    );
    let set = engine.policy();
    let mut evaluator = Evaluator::new(&request, &prepared, &set.data);
    let (mut held, mut failed, mut erred) = (0, 0, 0);
    for rule in &set.rules {
        let condition = &rule.conjuncts[0];
        // `eval` of a comparison always takes the general path.
        let general = match evaluator.eval(condition) {
            Ok(Val::Bool(b)) => Ok(b),
            Ok(other) => panic!("{:?} is not a bool: {other:?}", rule.conjunct_text),
            Err(error) => Err(error),
        };
        let quick = evaluator.truth(condition);
        assert_eq!(quick, general, "{:?}", rule.conjunct_text);
        match general {
            Ok(true) => held += 1,
            Ok(false) => failed += 1,
            Err(_) => erred += 1,
        }
    }
    // Every kind of answer is among them.
    assert!(held > 0 && failed > 0 && erred > 0, "{held} {failed} {erred}");
}

#[test]
fn a_duration_reads_as_its_seconds_and_an_s() {
    for seconds in [0, 7, 10, 3600, 86_400, u64::MAX] {
        assert_eq!(
            to_json(&Val::Dur(seconds)),
            Value::String(format!("{seconds}s"))
        );
    }
}

#[test]
fn the_rules_that_read_a_missing_attribute_name_it() {
    let engine = engine(
        r#"permit if context.ticket == "T-1";
        permit if context.ticket in ["T-2", "T-3"];
        permit if action == "read" and context.ticket != "T-4";
        permit if subject.owner == "t";
        permit if context.other == "x";
        permit if context.ticket == "T-5";"#,
    );
    let (request, prepared) = request(
        r#"{"subject":{"id":"s","kind":"ci"},"action":"read",
        "resource":{"id":"r","kind":"db"}}"#,
    );
    let set = engine.policy();
    let mut evaluator = Evaluator::new(&request, &prepared, &set.data);
    let mut errors = Vec::new();
    for rule in &set.rules {
        match evaluator.rule(rule) {
            RuleResult::Error(error) => errors.push(error),
            other => panic!("{:?} does not err: {other:?}", rule.conjunct_text),
        }
    }
    let messages: Vec<(String, Span)> = errors.iter().map(|e| (e.to_string(), e.span())).collect();
    let ticket = "`context.ticket` is missing";
    assert_eq!(messages[0].0, ticket);
    assert_eq!(messages[1].0, ticket);
    assert_eq!(messages[2].0, ticket);
    assert_eq!(messages[3].0, "`subject.owner` is missing");
    assert_eq!(messages[4].0, "`context.other` is missing");
    assert_eq!(messages[5].0, ticket);
    // Each error has the span of the attribute its own rule reads.
    for pair in messages.windows(2) {
        assert_ne!(pair[0].1, pair[1].1);
    }
    // And each is the error the general path gives.
    for (rule, error) in set.rules.iter().zip(&errors) {
        let conjunct = rule.conjuncts.last().expect("a condition");
        let general = match evaluator.eval(conjunct) {
            Err(general) => general,
            Ok(value) => panic!("{:?} evaluates: {value:?}", rule.conjunct_text),
        };
        assert_eq!(&general, error, "{:?}", rule.conjunct_text);
    }
}

/// A grant whose text a requested item has is that item (validation's
/// parse, reused); one no requested item has is parsed: both are what
/// parsing the filled text gives.
#[test]
fn grant_items_are_the_parse_of_their_text_requested_or_not() {
    let engine = engine(
        r#"@id("p") permit grant ["deploy:{resource.id}", "read:{resource.id}/logs", "read:db://{resource.kind}/**"];"#,
    );
    let (request, prepared) = request(
        r#"{"action":"deploy","resource":{"id":"k8s://prod/pay","kind":"x"},
            "requested":{"scope":["read:k8s://prod/pay/logs","deploy:k8s://prod/pay"]}}"#,
    );
    let crate::ir::RuleKind::Permit { grant, .. } = &engine.policy().rules[0].kind else {
        panic!("the rule is a permit");
    };
    let mut evaluator = Evaluator::new(&request, &prepared, &engine.policy().data);
    let items = match evaluator.scope_items(grant) {
        Ok(items) => items,
        Err(error) => panic!("the grant is built: {error}"),
    };
    let texts = [
        "deploy:k8s://prod/pay",
        "read:k8s://prod/pay/logs",
        "read:db://x/**",
    ];
    let parsed: Vec<ScopeItem> = texts
        .iter()
        .map(|text| ScopeItem::parse(text).expect("a valid item"))
        .collect();
    assert_eq!(items, parsed);
    assert!(items[2].has_wildcard() && !items[0].has_wildcard());
}
