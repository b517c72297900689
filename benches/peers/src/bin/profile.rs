//! A small driver to profile writ under `valgrind --tool=callgrind` or
//! `perf`: it compiles a generated set (or the default pack) and repeats
//! one operation.
//!
//! ```text
//! cargo build --release --bin profile
//! valgrind --tool=callgrind --toggle-collect='writ::render::decide*' \
//!     target/release/profile match 10 20000
//! callgrind_annotate --inclusive=yes callgrind.out.<pid> | head -60
//! ```
//!
//! Modes: `match N ITERS`, `nomatch N ITERS` (decide on a generated set of
//! N rules), `pack ITERS` (the default pack, an allowed request),
//! `e2e ITERS` (JSON parse + decide + serialise on the pack),
//! `compile N ITERS` (parse + check + compile of N generated rules),
//! `memory N` (live and peak heap after each compile phase).

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use writ::testgen::{generate, GenConfig};
use writ::{Engine, Request};

/// The allocator the `writ` binary ships with, counting live bytes for
/// the `memory` mode.
#[global_allocator]
static GLOBAL: Counting = Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: every call is passed on to mimalloc unchanged; only counters are
// updated around it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        mimalloc::MiMalloc.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        mimalloc::MiMalloc.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let live = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        PEAK.fetch_max(live, Ordering::Relaxed);
        mimalloc::MiMalloc.realloc(ptr, layout, new_size)
    }
}

/// Live and peak heap bytes, in MiB, since the last call.
fn memory(phase: &str) {
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    let live = LIVE.load(Ordering::Relaxed);
    println!(
        "{phase:<24} live {:>8.1} MiB  peak {:>8.1} MiB",
        mib(live),
        mib(PEAK.swap(live, Ordering::Relaxed))
    );
}

/// The pack's allowed CI deploy (as in `benches/decide.rs`).
const ALLOW: &str = r#"{"subject":{"id":"spiffe://prod.acme.io/ns/payments/sa/deployer","kind":"ci","auth":"oidc","attested":true,"owner":"payments","environment":"prod"},"action":"deploy","resource":{"id":"k8s://prod-eu/payments","kind":"cluster","owner":"payments"},"intent":{"task":"deploy","id":"run-1"},"environment":{"name":"prod","broker":"ci-oidc-exchange","time":"2026-11-22T10:00:00Z"},"sensitivity":"confidential","requested":{"scope":["deploy:k8s://prod-eu/payments"],"ttl":3600},"context":{"recent_issuances":0}}"#;

type Failure = Box<dyn std::error::Error>;

fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |at: usize, default: usize| -> usize {
        args.get(at).and_then(|s| s.parse().ok()).unwrap_or(default)
    };
    let compile = |text: String| -> Result<Engine, Failure> {
        Engine::compile([("gen.writ", text)], None).map_err(|d| d.render(false).into())
    };
    match args.first().map(String::as_str) {
        Some("compile") => {
            let text = generate(GenConfig::issuance(number(1, 10_000))).writ_source();
            for _ in 0..number(2, 1) {
                black_box(compile(text.clone())?);
            }
        }
        Some("memory") => {
            let text = generate(GenConfig::issuance(number(1, 10_000))).writ_source();
            let mut sources = writ::source::Sources::new();
            sources.add("gen.writ", text);
            memory("source");
            let files: Vec<_> = sources
                .files()
                .map(|(id, file)| writ::parser::parse_file(id, file).0)
                .collect();
            memory("parse");
            let (set, _) = writ::check::check(&sources, files, None);
            memory("check");
            let tree = writ::compile::compile(&set);
            memory("compile");
            drop((tree, set));
            memory("drop all");
        }
        Some(mode @ ("match" | "nomatch")) => {
            let set = generate(GenConfig::issuance(number(1, 10)));
            let engine = compile(set.writ_source())?;
            let request = if mode == "match" {
                set.matching_request().ok_or("no matching request")?.0
            } else {
                set.non_matching_request()
            };
            let request = request.to_request()?;
            for _ in 0..number(2, 10_000) {
                black_box(engine.decide(black_box(&request)));
            }
        }
        Some("pack") => {
            let engine = Engine::default_pack(None).map_err(|d| d.render(false))?;
            let request = Request::from_json(ALLOW)?;
            for _ in 0..number(1, 10_000) {
                black_box(engine.decide(black_box(&request)));
            }
        }
        Some("e2e") => {
            let engine = Engine::default_pack(None).map_err(|d| d.render(false))?;
            for _ in 0..number(1, 10_000) {
                black_box(engine.decide_json(black_box(ALLOW))?.to_json());
            }
        }
        _ => {
            return Err(
                "usage: profile match|nomatch|compile N ITERS | pack|e2e ITERS | memory N".into(),
            )
        }
    }
    Ok(())
}
