//! The decision tree only prunes: on generated policy sets and requests,
//! deciding through the tree gives what evaluating every rule in order
//! gives (`Engine::decide` ≡ `Engine::decide_naive`).
//!
//! The requests come from `writ::testgen`: one that matches exactly one
//! permit, one that matches nothing, and random ones in which any attribute
//! may be missing, hold a value no rule tests, or (for `context.tier`) hold
//! a number where the rules compare a string. A missing attribute must make
//! the walk visit every branch of the switches on it, so that a forbid that
//! errors on it still fails closed.
//!
//! The same runs on sets of the flags shape (`writ::testgen::generate_flags`),
//! whose rules all end in a boolean test (`== true`, `== false`, `!= true`,
//! `!= false` on `subject.attested`, `subject.shared` and the untyped
//! `context.break_glass`), with requests in which a boolean is missing,
//! flipped, or (for `context.break_glass`) a string.
//!
//! And on sets of every shape of `writ::testgen::generate_shape`: ranges on
//! `context.risk_score` and `requested.ttl`, presence below an attribute
//! (`resource.properties has pii`), complements (`!=`, `not in`), forbids
//! of a single test on any attribute and tests of an attribute the
//! requests lack, with requests in which the number is missing, moved or
//! a string, properties are missing, set, set to `""` or cleared.
//!
//! Each entry of the tree's trace, not only those that decide, is the
//! naive trace's entry for that rule (bar `closest`): the conjuncts the walk
//! proved true and skipped change neither the first false condition nor
//! what it saw.

use proptest::prelude::*;
use writ::decision::Outcome;
use writ::testgen::{
    generate, generate_flags, generate_shape, Cond, Field, FlagField, FlagValue, GenConfig,
    GenKind, GenRequest, GenSet, RiskValue, Rng, Shape,
};
use writ::Engine;

/// Compiles a generated set and compares tree and naive decisions on its
/// fixed requests and `random` random ones.
fn tree_matches_naive(
    config: GenConfig,
    request_seed: u64,
    random: usize,
) -> Result<(), TestCaseError> {
    same_on(generate(config), request_seed, random)
}

/// [`tree_matches_naive`] on a set already generated.
fn same_on(set: GenSet, request_seed: u64, random: usize) -> Result<(), TestCaseError> {
    let config = set.config;
    let engine = Engine::compile([("gen.writ", set.writ_source())], None).map_err(|d| {
        TestCaseError::fail(format!("{config:?} does not compile:\n{}", d.render(false)))
    })?;
    let mut requests: Vec<GenRequest> = vec![set.non_matching_request()];
    if let Some((request, _)) = set.matching_request() {
        requests.push(request);
    }
    let mut rng = Rng::new(request_seed);
    requests.extend((0..random).map(|_| set.random_request(&mut rng)));
    for generated in &requests {
        let json = generated.to_writ_json();
        let request = generated
            .to_request()
            .map_err(|e| TestCaseError::fail(format!("invalid request {json}: {e}")))?;
        let tree = engine.decide(&request);
        let naive = engine.decide_naive(&request);
        let at = || format!("{config:?}, request {json}");
        prop_assert_eq!(tree.decision, naive.decision, "decision: {}", at());
        prop_assert_eq!(&tree.scope, &naive.scope, "scope: {}", at());
        prop_assert_eq!(tree.ttl, naive.ttl, "ttl: {}", at());
        prop_assert_eq!(
            &tree.obligations,
            &naive.obligations,
            "obligations: {}",
            at()
        );
        prop_assert_eq!(&tree.reasons, &naive.reasons, "reasons: {}", at());
        prop_assert_eq!(
            &tree.dropped_scope,
            &naive.dropped_scope,
            "dropped_scope: {}",
            at()
        );
        prop_assert_eq!(&tree.errors, &naive.errors, "errors: {}", at());
        prop_assert_eq!(&tree.policy, &naive.policy, "policy: {}", at());
        // The tree skips only rules whose indexed tests are false, so every
        // rule that matched or erred is in both traces, with the same entry.
        let decisive = |d: &writ::Decision| -> Vec<writ::decision::TraceEntry> {
            d.trace
                .iter()
                .filter(|e| e.outcome != Outcome::NotMatched)
                .cloned()
                .collect()
        };
        prop_assert_eq!(decisive(&tree), decisive(&naive), "trace: {}", at());
        // And every rule the tree reached, matched or not, fared as it does
        // evaluated in full: the same first false condition and the value
        // it saw, though the walk skipped the conjuncts it proved true
        // (below a missing value too, what the other switches proved).
        // Only `closest` may differ: the naive walk reaches every permit.
        let reached = |d: &writ::Decision| -> Vec<writ::decision::TraceEntry> {
            d.trace
                .iter()
                .map(|e| writ::decision::TraceEntry {
                    closest: false,
                    ..e.clone()
                })
                .collect()
        };
        let in_naive = reached(&naive);
        for entry in reached(&tree) {
            let same = in_naive.iter().find(|e| e.rule == entry.rule);
            prop_assert_eq!(Some(&entry), same, "trace entry: {}", at());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn tree_equals_naive_on_small_sets(
        seed in any::<u64>(),
        rules in 1usize..=60,
        extras in any::<bool>(),
        request_seed in any::<u64>(),
    ) {
        tree_matches_naive(GenConfig { rules, seed, extras }, request_seed, 24)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn tree_equals_naive_on_medium_sets(
        seed in any::<u64>(),
        rules in 100usize..=400,
        extras in any::<bool>(),
        request_seed in any::<u64>(),
    ) {
        tree_matches_naive(GenConfig { rules, seed, extras }, request_seed, 16)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    #[test]
    fn tree_equals_naive_on_sets_up_to_a_thousand_rules(
        seed in any::<u64>(),
        rules in 600usize..=1000,
        request_seed in any::<u64>(),
    ) {
        tree_matches_naive(GenConfig { rules, seed, extras: true }, request_seed, 16)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn tree_equals_naive_on_small_sets_of_boolean_tests(
        seed in any::<u64>(),
        rules in 1usize..=60,
        extras in any::<bool>(),
        request_seed in any::<u64>(),
    ) {
        same_on(generate_flags(GenConfig { rules, seed, extras }), request_seed, 24)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn tree_equals_naive_on_larger_sets_of_boolean_tests(
        seed in any::<u64>(),
        rules in 200usize..=1000,
        extras in any::<bool>(),
        request_seed in any::<u64>(),
    ) {
        same_on(generate_flags(GenConfig { rules, seed, extras }), request_seed, 16)?;
    }
}

/// Boolean switches: a request without the boolean, or holding a string
/// where the rules compare a bool, must reach every forbid that tests it
/// (the comparison errs, so the forbid applies), as the naive walk does.
#[test]
fn tree_equals_naive_with_missing_and_mistyped_booleans() {
    let set = generate_flags(GenConfig {
        rules: 1000,
        seed: 11,
        extras: true,
    });
    let engine = match Engine::compile([("gen.writ", set.writ_source())], None) {
        Ok(engine) => engine,
        Err(d) => panic!("{}", d.render(false)),
    };
    let (matching, _) = set.matching_request().expect("a matching request");
    // For the first forbid on each boolean, a request where its environment
    // and resource kind are, so that only its boolean test keeps it from
    // applying; then that boolean missing, set, or of another type.
    let mut denied: Vec<String> = Vec::new();
    for flag in [FlagField::Shared, FlagField::BreakGlass] {
        let forbid = set
            .rules
            .iter()
            .find(|r| {
                r.kind == GenKind::Forbid
                    && r.conds
                        .iter()
                        .any(|c| matches!(c, Cond::Flag(f, ..) if *f == flag))
            })
            .expect("a forbid on each boolean");
        let mut base = GenRequest {
            attested: Some(true),
            shared: Some(false),
            break_glass: Some(FlagValue::Bool(false)),
            ..matching.clone()
        };
        for cond in &forbid.conds {
            match cond {
                Cond::Eq(Field::Environment, value) => base.environment = Some(value.clone()),
                Cond::Eq(Field::ResourceKind, value) => base.resource_kind = Some(value.clone()),
                _ => {}
            }
        }
        let mut variants: Vec<GenRequest> = Vec::new();
        let mut with = |f: &dyn Fn(&mut GenRequest)| {
            let mut request = base.clone();
            f(&mut request);
            variants.push(request);
        };
        with(&|_| {});
        with(&|r| r.shared = None);
        with(&|r| r.shared = Some(true));
        with(&|r| r.attested = None);
        with(&|r| r.attested = Some(false));
        with(&|r| r.break_glass = None);
        with(&|r| r.break_glass = Some(FlagValue::Bool(true)));
        with(&|r| r.break_glass = Some(FlagValue::Str("yes".to_owned())));
        for generated in variants {
            let json = generated.to_writ_json();
            let request = generated.to_request().expect("valid request");
            let tree = engine.decide(&request);
            let naive = engine.decide_naive(&request);
            // Forbids that the request's booleans set, or that err on them,
            // apply by the generator's model; the tree must reach each.
            let (_, forbids) = set.count_applying(&generated);
            if tree.reasons.contains(&forbid.id) {
                denied.push(json.clone());
            }
            if forbids > 0 {
                assert_eq!(tree.decision, writ::Effect::Deny, "{json}");
                assert_eq!(tree.reasons.len(), forbids, "{json}");
            }
            assert_eq!(tree.decision, naive.decision, "{json}");
            assert_eq!(tree.reasons, naive.reasons, "{json}");
            assert_eq!(tree.errors, naive.errors, "{json}");
            assert_eq!(tree.scope, naive.scope, "{json}");
            assert_eq!(tree.ttl, naive.ttl, "{json}");
        }
    }
    // `subject.shared` missing or true (2), `context.break_glass` missing,
    // true or a string (3): each denies by its forbid.
    assert_eq!(denied.len(), 5, "{denied:#?}");
}

/// Presence switches: for rules that test `has` either way, a request
/// built to satisfy each (so `not ... has` meets an absent or `false`
/// value) and the same request with the tested value flipped; the tree
/// must keep every rule the naive walk matches.
#[test]
fn tree_equals_naive_on_presence_tests() {
    let set = generate_flags(GenConfig {
        rules: 2000,
        seed: 5,
        extras: true,
    });
    let engine = match Engine::compile([("gen.writ", set.writ_source())], None) {
        Ok(engine) => engine,
        Err(d) => panic!("{}", d.render(false)),
    };
    let mut allowed = 0;
    let mut checked = 0;
    for (index, rule) in set.rules.iter().enumerate() {
        let Some(Cond::Has(field, present)) =
            rule.conds.iter().find(|c| matches!(c, Cond::Has(..)))
        else {
            continue;
        };
        let built = set.request_for(rule, index);
        let mut flipped = built.clone();
        match field {
            FlagField::Attested => flipped.attested = None,
            FlagField::Shared => flipped.shared = Some(!present),
            FlagField::BreakGlass => {
                flipped.break_glass =
                    Some(FlagValue::Str(if *present { "" } else { "yes" }.to_owned()))
            }
        }
        for generated in [built, flipped] {
            let json = generated.to_writ_json();
            let request = generated.to_request().expect("valid request");
            let tree = engine.decide(&request);
            let naive = engine.decide_naive(&request);
            assert_eq!(tree.decision, naive.decision, "{json}");
            assert_eq!(tree.reasons, naive.reasons, "{json}");
            assert_eq!(tree.errors, naive.errors, "{json}");
            allowed += usize::from(tree.is_allow());
            checked += 1;
        }
    }
    assert!(
        checked >= 100 && allowed >= 20,
        "{checked} checked, {allowed} allowed"
    );
}

/// The fixed cases the property tests start from, so a plain run always
/// covers a thousand rules and requests that miss each switched attribute.
#[test]
fn tree_equals_naive_at_a_thousand_rules_with_missing_attributes() {
    let config = GenConfig {
        rules: 1000,
        seed: 7,
        extras: true,
    };
    let set = generate(config);
    let engine = match Engine::compile([("gen.writ", set.writ_source())], None) {
        Ok(engine) => engine,
        Err(d) => panic!("{}", d.render(false)),
    };
    let (base, _) = set.matching_request().expect("a matching request");
    let mut variants: Vec<GenRequest> = Vec::new();
    let mut without = |f: fn(&mut GenRequest)| {
        let mut request = base.clone();
        f(&mut request);
        variants.push(request);
    };
    without(|r| r.action = None);
    without(|r| r.subject_kind = None);
    without(|r| r.resource_kind = None);
    without(|r| r.environment = None);
    without(|r| r.sensitivity = None);
    without(|r| r.tier = None);
    without(|r| r.tier = Some(writ::testgen::TierValue::Num(7)));
    let mut denied_by_erring_forbids = 0;
    for generated in variants {
        let json = generated.to_writ_json();
        let request = generated.to_request().expect("valid request");
        let tree = engine.decide(&request);
        let naive = engine.decide_naive(&request);
        // Forbids that test the missing attribute err and so apply; the
        // generator's model counts them, and the tree must not skip one.
        let (_, forbids) = set.count_applying(&generated);
        if forbids > 0 {
            denied_by_erring_forbids += 1;
            assert_eq!(tree.decision, writ::Effect::Deny, "{json}");
            assert_eq!(tree.reasons.len(), forbids, "{json}");
        }
        assert_eq!(tree.decision, naive.decision, "{json}");
        assert_eq!(tree.reasons, naive.reasons, "{json}");
        assert_eq!(tree.errors, naive.errors, "{json}");
        assert_eq!(tree.scope, naive.scope, "{json}");
        assert_eq!(tree.ttl, naive.ttl, "{json}");
    }
    assert!(
        denied_by_erring_forbids > 0,
        "no variant reached an erring forbid"
    );
}

fn shape_strategy() -> impl Strategy<Value = Shape> {
    prop::sample::select(Shape::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn tree_equals_naive_on_small_sets_of_every_shape(
        shape in shape_strategy(),
        seed in any::<u64>(),
        rules in 1usize..=60,
        extras in any::<bool>(),
        request_seed in any::<u64>(),
    ) {
        same_on(generate_shape(GenConfig { rules, seed, extras }, shape), request_seed, 24)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    #[test]
    fn tree_equals_naive_on_larger_sets_of_every_shape(
        shape in shape_strategy(),
        seed in any::<u64>(),
        rules in 200usize..=1000,
        extras in any::<bool>(),
        request_seed in any::<u64>(),
    ) {
        same_on(generate_shape(GenConfig { rules, seed, extras }, shape), request_seed, 16)?;
    }
}

/// Every shape at 10,000 rules, with the fixed requests and a few random
/// ones (more with `WRIT_TREE_PROPS_REQUESTS`).
#[test]
fn tree_equals_naive_on_ten_thousand_rules_of_every_shape() {
    let random = std::env::var("WRIT_TREE_PROPS_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(6);
    for shape in Shape::ALL {
        let set = generate_shape(
            GenConfig {
                rules: 10_000,
                seed: 3,
                extras: true,
            },
            shape,
        );
        if let Err(e) = same_on(set, 17, random) {
            panic!("{shape:?}: {e}");
        }
    }
}

/// Range switches: for each permit of the numeric shape with a range, the
/// request built for it and the same request with the number at, just
/// below and just above the bound, missing, or a string; the tree must
/// keep every rule the naive walk matches or errs on.
#[test]
fn tree_equals_naive_at_the_bounds_of_ranges() {
    let set = generate_shape(
        GenConfig {
            rules: 2000,
            seed: 5,
            extras: true,
        },
        Shape::Numeric,
    );
    let engine = match Engine::compile([("gen.writ", set.writ_source())], None) {
        Ok(engine) => engine,
        Err(d) => panic!("{}", d.render(false)),
    };
    let (mut checked, mut allowed, mut denied) = (0, 0, 0);
    for (index, rule) in set.rules.iter().enumerate().step_by(7) {
        let built = set.request_for(rule, index);
        let mut variants = vec![built.clone()];
        for cond in &rule.conds {
            match cond {
                Cond::Risk(_, n) => {
                    for risk in [
                        Some(RiskValue::Num(*n - 1)),
                        Some(RiskValue::Num(*n)),
                        Some(RiskValue::Num(*n + 1)),
                        None,
                        Some(RiskValue::Str("high".to_owned())),
                    ] {
                        variants.push(GenRequest {
                            risk,
                            ..built.clone()
                        });
                    }
                }
                Cond::Ttl(_, seconds) => {
                    for ttl in [*seconds - 1, *seconds, *seconds + 1] {
                        variants.push(GenRequest {
                            requested_ttl: Some(ttl),
                            ..built.clone()
                        });
                    }
                    variants.push(GenRequest {
                        requested_ttl: None,
                        ..built.clone()
                    });
                }
                _ => {}
            }
        }
        for generated in variants {
            let json = generated.to_writ_json();
            let request = generated.to_request().expect("valid request");
            let tree = engine.decide(&request);
            let naive = engine.decide_naive(&request);
            assert_eq!(tree.decision, naive.decision, "{json}");
            assert_eq!(tree.reasons, naive.reasons, "{json}");
            assert_eq!(tree.errors, naive.errors, "{json}");
            assert_eq!(tree.scope, naive.scope, "{json}");
            assert_eq!(tree.ttl, naive.ttl, "{json}");
            // The generator's model agrees on how many rules apply.
            let (permits, forbids) = set.count_applying(&generated);
            if forbids > 0 {
                assert_eq!(tree.decision, writ::Effect::Deny, "{json}");
                assert_eq!(tree.reasons.len(), forbids, "{json}");
                denied += 1;
            } else if permits > 0 {
                allowed += usize::from(tree.is_allow());
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 1000 && allowed >= 100 && denied >= 50,
        "{checked} checked, {allowed} allowed, {denied} denied"
    );
}

/// A walk remembers the value of each switched attribute it has read (the
/// first 32 distinct ones) and finds children by a hash of the value: on a
/// set that switches on 48 attributes, with requests in which each one is
/// missing, a number, a value no rule names or one a rule names, the tree
/// still decides as the naive walk.
#[test]
fn tree_equals_naive_beyond_the_attributes_a_walk_remembers() {
    let attributes = 48;
    let mut source = String::new();
    for i in 0..attributes {
        for v in 0..3 {
            source.push_str(&format!(
                "@id(\"p{i}.{v}\")\npermit if action == \"read\" and context.k{i} == \"v{v}\" and context.k{} != \"v{v}\";\n",
                (i + 1) % attributes
            ));
        }
        source.push_str(&format!(
            "@id(\"f{i}\")\nforbid if context has k{i} and context.k{i} == \"bad\";\n"
        ));
    }
    let engine = match Engine::compile([("many.writ", source)], None) {
        Ok(engine) => engine,
        Err(d) => panic!("{}", d.render(false)),
    };
    let mut rng = Rng::new(48);
    let (mut allowed, mut forbidden) = (0, 0);
    for _ in 0..400 {
        let mut context = serde_json::Map::new();
        for i in 0..attributes {
            let value = match rng.below(200) {
                0..=9 => continue,
                10 => serde_json::json!(7),
                11 | 12 => serde_json::json!("bad"),
                13..=29 => serde_json::json!("other"),
                v => serde_json::json!(format!("v{}", v % 3)),
            };
            context.insert(format!("k{i}"), value);
        }
        let json = serde_json::json!({
            "subject": {"id": "spiffe://acme.io/ci", "kind": "ci", "auth": "oidc", "attested": true},
            "action": "read",
            "resource": {"id": "db://payments/orders", "kind": "database"},
            "environment": {"name": "prod", "time": "2026-11-22T10:00:00Z"},
            "sensitivity": "internal",
            "requested": {"ttl": 900},
            "context": context,
        })
        .to_string();
        let request = writ::Request::from_json(&json).expect("a valid request");
        let tree = engine.decide(&request);
        let naive = engine.decide_naive(&request);
        assert_eq!(tree.decision, naive.decision, "{json}");
        assert_eq!(tree.reasons, naive.reasons, "{json}");
        assert_eq!(tree.errors, naive.errors, "{json}");
        allowed += usize::from(tree.is_allow());
        forbidden += usize::from(!tree.is_allow() && !tree.reasons.is_empty());
    }
    assert!(
        allowed >= 5 && forbidden >= 5,
        "{allowed} allowed, {forbidden} forbidden"
    );
}

/// The search a default deny runs below the switches a request missed, as
/// it walked the tree before the tree kept what it finds (commit
/// `3b15ae9`): the first 64 nodes below the switches' children, depth
/// first, each rule once, stopping before the node after reaching `limit`
/// rules. [`writ::compile::Tree::rules_below`] must find the same rules in
/// the same order, so that a default deny names the same closest permits.
fn rules_below_by_walking(
    tree: &writ::compile::Tree,
    switches: &[writ::compile::NodeId],
    limit: usize,
) -> Vec<u32> {
    use writ::compile::Node;
    let mut found = Vec::new();
    let mut budget = 64usize;
    for &switch in switches {
        let Node::Switch { children, .. } = tree.node(switch) else {
            continue;
        };
        let mut stack: Vec<_> = children.values().rev().copied().collect();
        while let Some(id) = stack.pop() {
            if budget == 0 || found.len() >= limit {
                return found;
            }
            budget -= 1;
            match tree.node(id) {
                Node::Leaf { rules } => {
                    for rule in rules {
                        if !found.contains(rule) {
                            found.push(*rule);
                        }
                    }
                }
                Node::Switch { children, rest, .. } => {
                    stack.push(*rest);
                    stack.extend(children.values().rev().copied());
                }
                Node::Range {
                    below, above, rest, ..
                } => {
                    stack.push(*rest);
                    stack.push(*above);
                    stack.push(*below);
                }
            }
        }
    }
    found
}

/// The default pack and every shape at `rules` rules, compiled.
fn pack_and_shapes(rules: usize) -> Vec<Engine> {
    let mut engines = vec![Engine::default_pack(None).expect("the pack compiles")];
    for shape in Shape::ALL {
        let set = generate_shape(GenConfig::issuance(rules), shape);
        engines.push(
            Engine::compile([("gen.writ", set.writ_source())], None).expect("the set compiles"),
        );
    }
    engines
}

/// The switches a walk can miss: those without an `other` child.
fn missable_switches(tree: &writ::compile::Tree) -> Vec<writ::compile::NodeId> {
    (0..tree.nodes.len() as u32)
        .map(writ::compile::NodeId)
        .filter(|&id| {
            matches!(tree.node(id), writ::compile::Node::Switch { children, .. }
                if children.other().is_none())
        })
        .collect()
}

/// The rules below missed switches, read from what the tree kept when it
/// was built, are those the walk finds, on every shape and the default
/// pack, for runs of one to six switches without an `other` child (the
/// only ones a request misses; the same switch twice included).
#[test]
fn rules_below_missed_switches_are_those_the_walk_finds() {
    let mut engines = pack_and_shapes(2_000);
    let set = generate_flags(GenConfig::issuance(2_000));
    engines.push(Engine::compile([("gen.writ", set.writ_source())], None).expect("compiles"));
    let mut rng = Rng::new(18);
    for engine in &engines {
        let tree = engine.tree();
        let switches = missable_switches(tree);
        assert!(switches.len() > 1, "a tree with switches");
        let mut compared = 0;
        for _ in 0..4_000 {
            let count = 1 + rng.below(6);
            let near: Vec<_> = (0..count).map(|_| *rng.pick(&switches)).collect();
            let walked = rules_below_by_walking(tree, &near, writ::compile::NEAR_LIMIT);
            compared += usize::from(!walked.is_empty());
            assert_eq!(tree.rules_below(&near), walked, "switches {near:?}");
        }
        assert!(compared > 100, "most runs find rules");
    }
}

/// The permits kept with a switch for a default deny that misses it first
/// (`Tree::near_permits_false`) are the permits `Tree::near_rules` gives
/// there, by rule index, each with its first conjunct false; and they are
/// kept whenever that holds of what `near_rules` gives and it stops within
/// that switch (the authorizer then skips the search and the sort), on
/// every shape and the default pack, for runs of one to three switches.
#[test]
fn permits_known_false_below_a_missed_switch_are_those_near_rules_gives() {
    let engines = pack_and_shapes(2_000);
    let mut rng = Rng::new(33);
    let mut kept = 0;
    for engine in &engines {
        let (tree, set) = (engine.tree(), engine.policy());
        let switches = missable_switches(tree);
        for _ in 0..2_000 {
            let count = 1 + rng.below(3);
            let near: Vec<_> = (0..count).map(|_| *rng.pick(&switches)).collect();
            let mut given = Vec::new();
            tree.near_rules(&near, |rule, false_first| {
                if matches!(
                    set.rules[rule as usize].kind,
                    writ::ir::RuleKind::Permit { .. }
                ) {
                    given.push((rule, false_first));
                }
            });
            let all_false = given.iter().all(|&(_, false_first)| false_first);
            let mut permits: Vec<u32> = given.iter().map(|&(rule, _)| rule).collect();
            permits.sort_unstable();
            // Alone: the first switch's own list gives all (the search
            // stops there) when `near_rules` gives the same for it alone.
            let mut alone = Vec::new();
            tree.near_rules(&near[..1], |rule, _| alone.push(rule));
            let mut whole = Vec::new();
            tree.near_rules(&near, |rule, _| whole.push(rule));
            match tree.near_permits_false(&near) {
                Some(known) => {
                    kept += 1;
                    assert!(all_false, "switches {near:?}: {given:?}");
                    assert_eq!(known, &permits[..], "switches {near:?}");
                    assert_eq!(
                        alone, whole,
                        "switches {near:?}: the search stops at the first"
                    );
                }
                None => assert!(
                    !all_false || alone != whole || whole.len() < writ::compile::NEAR_LIMIT,
                    "switches {near:?}: {given:?} not kept"
                ),
            }
        }
    }
    assert!(kept > 100, "some runs keep their permits: {kept}");
}
