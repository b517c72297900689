//! Decode arbitrary bytes as a request body, then decide it on the default
//! pack: decoding returns a request or an error (never panics), and a
//! decoded request is decided the same way by the tree and by naive
//! evaluation.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use writ::{Engine, Request};
use writ_fuzz::check_decisions;

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| match Engine::default_pack(None) {
        Ok(engine) => engine,
        Err(d) => panic!("the default pack does not compile:\n{}", d.render(false)),
    })
}

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let engine = engine();
    match Request::from_json(text) {
        Ok(request) => {
            let tree = engine.decide(&request);
            let naive = engine.decide_naive(&request);
            check_decisions("<default pack>", &request, &tree, &naive);
            let via_json = engine.decide_json(text).map(|d| d.to_json());
            assert_eq!(via_json.as_deref(), Ok(tree.to_json().as_str()));
        }
        Err(error) => {
            let _ = error.to_string();
            assert!(engine.decide_json(text).is_err());
        }
    }
});
