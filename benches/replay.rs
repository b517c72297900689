//! `writ replay` throughput (`cargo bench --bench replay`).
//!
//! A decision log is generated from the default pack's example requests
//! (the cases of `tests/pack/{baseline,exception,identity,intent,lifecycle,scope,ttl}.json`),
//! decided by the pack and written in the line format of `writ serve
//! --decision-log`, repeated to [`LINES`] lines. Each iteration replays the
//! whole log from its bytes (parse the line, check for redaction, validate
//! the request, decide, compare), so criterion's elements per second are
//! replayed decisions per second on one core.
//!
//! - `replay/against_log`: new set = the pack, compared with the logged
//!   decisions (one decision per line).
//! - `replay/against_old`: `--policy-old` as well (two decisions per line).
//!
//! On a busy machine wall-clock throughput says little; with
//! `REPLAY_CPU=PASSES` set, the bench skips criterion, replays the log
//! `PASSES` times per case and prints the thread's CPU time per line (from
//! `/proc/thread-self/schedstat`, Linux only), which other processes on the
//! same cores do not inflate.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, Criterion, Throughput};
use serde_json::json;
use writ::replay::Replayer;
use writ::{Engine, Request};

/// The allocator the `writ` binary ships with (`src/main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LINES: usize = 20_000;

/// A log of `LINES` lines as the server writes them.
fn log(engine: &Engine) -> Vec<u8> {
    let requests = writ::testgen::pack_requests().expect("the pack's cases");
    let mut out = Vec::new();
    for i in 0..LINES {
        let value = &requests[i % requests.len()];
        let request = Request::from_json(&value.to_string()).expect("valid request");
        let decision = engine.decide(&request);
        let line = json!({
            "decision_id": format!("0190f5c2-0000-7000-8000-{i:012}"),
            "time": "2026-11-22T10:00:00Z",
            "endpoint": "/v1/decide",
            "request_digest": "sha256:00",
            "time_filled": false,
            "decision": decision.decision,
            "reasons": decision.reasons,
            "scope": decision.scope,
            "ttl": decision.ttl,
            "obligations": decision.obligations,
            "errors": decision.errors,
            "policy_digest": engine.digest(),
            "request": request,
        });
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

fn replay(c: &mut Criterion) {
    let engine = Engine::default_pack(None).expect("the default pack compiles");
    let log = log(&engine);
    let check = Replayer::new(&engine, None).replay(&log);
    assert_eq!(check.replayed, LINES, "every line replays");
    assert!(check.changes.is_empty(), "the same pack changes nothing");
    let mut group = c.benchmark_group("replay");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(LINES as u64));
    group.bench_function("against_log", |b| {
        b.iter(|| black_box(Replayer::new(&engine, None).replay(black_box(&log))))
    });
    group.bench_function("against_old", |b| {
        b.iter(|| black_box(Replayer::new(&engine, Some(&engine)).replay(black_box(&log))))
    });
    group.finish();
}

/// The thread's time on a CPU so far, in nanoseconds.
fn cpu_ns() -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("/proc/thread-self/schedstat (Linux)");
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a number of nanoseconds")
}

/// Replays the log `passes` times per case, printing CPU time per line
/// and the lines per CPU second it makes.
fn cpu_time(passes: usize) {
    let engine = Engine::default_pack(None).expect("the default pack compiles");
    let log = log(&engine);
    type Case<'a> = (&'a str, Box<dyn Fn() -> usize + 'a>);
    let cases: Vec<Case<'_>> = vec![
        (
            "against_log",
            Box::new(|| {
                Replayer::new(&engine, None)
                    .replay(black_box(&log))
                    .replayed
            }),
        ),
        (
            "against_old",
            Box::new(|| {
                Replayer::new(&engine, Some(&engine))
                    .replay(black_box(&log))
                    .replayed
            }),
        ),
    ];
    for round in 1..=3 {
        for (name, case) in &cases {
            assert_eq!(case(), LINES, "every line replays");
            let start = cpu_ns();
            for _ in 0..passes {
                black_box(case());
            }
            let ns = (cpu_ns() - start) as f64 / (passes * LINES) as f64;
            println!(
                "round {round} {name:<20} {ns:8.1} ns CPU/line  {:8.1}k lines per CPU second",
                1e6 / ns
            );
        }
    }
}

criterion_group!(benches, replay);

fn main() {
    if let Ok(passes) = std::env::var("REPLAY_CPU") {
        cpu_time(passes.parse().expect("REPLAY_CPU is a number of passes"));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
