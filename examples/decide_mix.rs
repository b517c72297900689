//! The work `writ serve` does for each answer of the open-loop mix
//! (`scripts/loadtest.sh`), without HTTP: the typed parse of the body, the
//! decision, and the answer's JSON; for counting instructions (callgrind)
//! of those parts apart from hyper and tokio:
//!
//! ```text
//! cargo build --release --example decide_mix
//! valgrind --tool=callgrind target/release/examples/decide_mix 1000 FILE...
//! valgrind --tool=callgrind target/release/examples/decide_mix 2000 FILE...
//! ```
//!
//! Reads each FILE (a request body) and answers them in turn, ROUNDS times
//! over; a body that is refused is written as the server writes its error.
//! The difference of two runs' totals over the extra rounds is the cost of
//! a round, start-up left out. Prints the bytes written, so that two builds
//! can be compared for the same answers.

use std::process::ExitCode;

use writ::Engine;

/// mimalloc, as in the `writ` binary (which asks its plain entry points,
/// src/main.rs: a few instructions fewer an allocation than this).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(rounds) = args.first().and_then(|r| r.parse::<usize>().ok()) else {
        eprintln!("usage: decide_mix ROUNDS FILE...");
        return ExitCode::from(2);
    };
    let mut bodies = Vec::new();
    for path in &args[1..] {
        match std::fs::read_to_string(path) {
            Ok(text) => bodies.push(text),
            Err(error) => {
                eprintln!("decide_mix: {path}: {error}");
                return ExitCode::from(2);
            }
        }
    }
    let engine = match Engine::default_pack(None) {
        Ok(engine) => engine,
        Err(error) => {
            eprintln!("decide_mix: the default pack: {error:?}");
            return ExitCode::FAILURE;
        }
    };
    let id = "00000000-0000-7000-8000-000000000000";
    let mut written = 0usize;
    for _ in 0..rounds {
        for body in &bodies {
            written += match engine.decide_json(body) {
                Ok(decision) => decision.json_bytes(Some(id)).len(),
                Err(error) => error.to_string().len(),
            };
        }
    }
    println!("{written} bytes");
    ExitCode::SUCCESS
}
