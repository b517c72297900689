//! Compile grammar-shaped policies and decide grammar-shaped requests on
//! them. Nothing may panic, and every decision must pass the oracle in
//! `writ_fuzz::check_decisions`: the tree decides as naive evaluation does,
//! a request error never allows, a deny carries nothing, an allow never
//! exceeds what was requested. Decisions must also be deterministic.
#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use writ::Engine;
use writ_fuzz::{check_decisions, Gen};

fuzz_target!(|bytes: &[u8]| {
    let mut u = Unstructured::new(bytes);
    let mut generator = Gen::new(&mut u);
    let Ok((policy, data)) = generator.policy_and_data() else {
        return;
    };
    let mut requests = Vec::new();
    for _ in 0..4 {
        match generator.request() {
            Ok(request) => requests.push(request),
            Err(_) => break,
        }
    }
    let engine = match Engine::compile([("gen.writ", policy.as_str())], data.as_ref()) {
        Ok(engine) => engine,
        Err(diagnostics) => {
            let _ = diagnostics.render(false);
            return;
        }
    };
    for request in &requests {
        let tree = engine.decide(request);
        let naive = engine.decide_naive(request);
        check_decisions(&policy, request, &tree, &naive);
        let again = engine.decide(request);
        assert_eq!(
            tree.to_json(),
            again.to_json(),
            "not deterministic\n{policy}"
        );
    }
});
