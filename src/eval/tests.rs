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
    let decision = crate::render::decide_naive(&set, &"sha256:test".into(), &request);
    assert_eq!(decision.decision, Effect::Deny);
    assert_eq!(decision.errors.len(), 1);
    assert_eq!(decision.errors[0].rule, "deep-permit");
    assert_eq!(decision.errors[0].message, message);
    forget_deep(set.rules.remove(0).conjuncts.remove(0));

    // A forbid too deep to evaluate applies: deny, naming it.
    let mut set = engine.policy().clone();
    set.rules[1].conjuncts[0] = deep();
    let decision = crate::render::decide_naive(&set, &"sha256:test".into(), &request);
    assert_eq!(decision.decision, Effect::Deny);
    assert_eq!(decision.reasons, ["deep-forbid"]);
    assert_eq!(decision.errors[0].message, message);
    forget_deep(set.rules.remove(1).conjuncts.remove(0));
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
