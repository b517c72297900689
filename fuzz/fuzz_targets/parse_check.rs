//! Lex, parse and check arbitrary text: `Engine::compile` must return an
//! engine or diagnostics, never panic, and the diagnostics must render.
//! Input bytes that hold a NUL are split into two files there, so that
//! cross-file checks (duplicate ids) see fuzzed input too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use writ::{Engine, Request};

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let files: Vec<(String, String)> = match text.split_once('\0') {
        Some((a, b)) => vec![("a.writ".into(), a.into()), ("b.writ".into(), b.into())],
        None => vec![("f.writ".into(), text.into())],
    };
    match Engine::compile(files, None) {
        Ok(engine) => {
            // A policy that compiles decides the empty request, and its tree
            // renders.
            let decision = engine.decide(&Request::default());
            let _ = decision.to_json();
            let _ = engine.tree().render(engine.policy());
        }
        Err(diagnostics) => {
            assert!(!diagnostics.is_empty(), "an error without diagnostics");
            let _ = diagnostics.render(false);
            let _ = diagnostics.to_json();
        }
    }
});
