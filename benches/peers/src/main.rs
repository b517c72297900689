//! writ against Cedar, side by side, on the same generated policy sets.
//!
//! For 10, 100, 1,000 and 10,000 rules of the issuance shape (see
//! `writ::testgen`), this prints the time of one decision in writ (with the
//! decision tree, and without it), in Cedar (`Authorizer::is_authorized`),
//! and the ratio, for a request that matches one permit and for one that
//! matches nothing; then the time to parse, check and compile each set.
//!
//! Each number is the median of several runs, and each run repeats the
//! operation enough times to last about `RUN_MS` milliseconds. writ and
//! Cedar runs alternate, so both see the same machine. Every run is timed
//! twice: by the thread's CPU clock (time actually spent on a core, which
//! other processes on a shared machine disturb less) and by the wall clock.
//!
//! ```text
//! cd benches/peers && cargo run --release            # 7 runs per number
//! cd benches/peers && cargo run --release -- --quick # 3 runs per number
//! cd benches/peers && cargo run --release -- --shapes [--quick]
//! ```
//!
//! `--shapes` measures the shapes that do not flatter writ's tree instead
//! (`writ::testgen::generate_flags` and every `writ::testgen::Shape`), at
//! 10 and 10,000 rules, for a request that matches nothing, one that one
//! permit matches and one that several permits match. Cedar must agree on
//! allow or deny; it may report errors where writ does (a permit testing
//! an attribute the request lacks errs in both).

use std::hint::black_box;
use std::str::FromStr;
use std::time::{Duration, Instant};

use cedar_policy::{Authorizer, Context, Entities, EntityUid, PolicySet};
use writ::testgen::{
    generate, generate_flags, generate_shape, GenConfig, GenRequest, GenSet, Shape,
};
use writ::Engine;

/// Both engines run on the allocator the `writ` binary ships with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sizes of the generated sets.
const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];
/// Runs per measurement; the median is reported.
const RUNS: usize = 7;
/// How long one run lasts.
const RUN_MS: u64 = 100;

type Failure = Box<dyn std::error::Error>;

/// One time, in nanoseconds, by both clocks.
#[derive(Debug, Clone, Copy)]
struct Time {
    cpu: f64,
    wall: f64,
}

/// Which clock a table shows.
#[derive(Debug, Clone, Copy)]
enum Clock {
    Cpu,
    Wall,
}

impl Time {
    fn on(self, clock: Clock) -> f64 {
        match clock {
            Clock::Cpu => self.cpu,
            Clock::Wall => self.wall,
        }
    }
}

/// Median times of one decision.
struct Row {
    writ: Time,
    naive: Time,
    cedar: Time,
    /// Entries in writ's trace for the request (the candidates the tree
    /// kept, plus any permits named as closest on a default deny).
    trace: usize,
}

fn main() -> Result<(), Failure> {
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 3 } else { RUNS };
    println!("writ vs cedar-policy 4: median of {runs} runs of ~{RUN_MS} ms each\n");
    if std::env::args().any(|a| a == "--shapes") {
        return shapes(runs);
    }
    let mut decide_rows = Vec::new();
    let mut compile_rows = Vec::new();
    for &size in &SIZES {
        let set = generate(GenConfig::issuance(size));
        let writ_text = set.writ_source();
        let cedar_text = set.cedar_source();

        let compile_runs = if size >= 10_000 { 5.min(runs) } else { runs };
        let (writ_compile, engine) = time_build(compile_runs, || {
            Engine::compile([("gen.writ", writ_text.clone())], None)
                .map_err(|d| d.render(false).into())
        })?;
        let (cedar_parse, policies) = time_build(compile_runs, || {
            PolicySet::from_str(&cedar_text).map_err(|e| format!("cedar: {e}").into())
        })?;
        compile_rows.push((size, writ_text.len(), writ_compile, cedar_parse));

        let (matching, matched_id) = set
            .matching_request()
            .ok_or("the generated set has no permit that a request can match alone")?;
        let cases = [
            ("matching", matching, Some(matched_id)),
            ("non-matching", set.non_matching_request(), None),
        ];
        for (label, request, expected) in cases {
            let row = measure(
                &set,
                &engine,
                &policies,
                &request,
                expected.as_deref(),
                runs,
            )?;
            decide_rows.push((size, label, row));
        }
        eprintln!("measured {size} rules");
    }

    for (clock, title) in [
        (Clock::Cpu, "on-CPU time (thread CPU clock)"),
        (Clock::Wall, "wall-clock time"),
    ] {
        println!("## Decision time per request, {title}\n");
        println!(
            "| rules | request | writ | writ without tree | Cedar | Cedar / writ | trace entries |"
        );
        println!("|---:|---|---:|---:|---:|---:|---:|");
        for (size, label, row) in &decide_rows {
            println!(
                "| {size} | {label} | {} | {} | {} | {:.0}x | {} |",
                show(row.writ.on(clock)),
                show(row.naive.on(clock)),
                show(row.cedar.on(clock)),
                row.cedar.on(clock) / row.writ.on(clock),
                row.trace
            );
        }
        println!();
    }

    println!("## Growth with rules (writ on-CPU time, relative to 10 rules)\n");
    println!("| rules | matching | non-matching | Cedar matching |");
    println!("|---:|---:|---:|---:|");
    let find = |size: usize, label: &str| {
        decide_rows
            .iter()
            .find(|(s, l, _)| *s == size && *l == label)
            .map(|(_, _, r)| r)
    };
    let ratio = |size: usize, label: &str, pick: fn(&Row) -> f64| -> f64 {
        match (find(size, label), find(SIZES[0], label)) {
            (Some(at), Some(base)) => pick(at) / pick(base),
            _ => f64::NAN,
        }
    };
    for &size in &SIZES {
        println!(
            "| {size} | {:.2}x | {:.2}x | {:.0}x |",
            ratio(size, "matching", |r| r.writ.cpu),
            ratio(size, "non-matching", |r| r.writ.cpu),
            ratio(size, "matching", |r| r.cedar.cpu),
        );
    }

    println!("\n## Parse + check + compile (on-CPU / wall)\n");
    println!("| rules | writ source | writ compile | Cedar parse |");
    println!("|---:|---:|---:|---:|");
    for (size, bytes, writ, cedar) in &compile_rows {
        println!(
            "| {size} | {} KiB | {} / {} | {} / {} |",
            bytes / 1024,
            show(writ.cpu),
            show(writ.wall),
            show(cedar.cpu),
            show(cedar.wall)
        );
    }
    Ok(())
}

fn measure(
    set: &GenSet,
    engine: &Engine,
    policies: &PolicySet,
    request: &GenRequest,
    expected: Option<&str>,
    runs: usize,
) -> Result<Row, Failure> {
    let writ_request = request.to_request()?;
    let decision = engine.decide(&writ_request);
    let naive = engine.decide_naive(&writ_request);
    // Both engines must decide what the generator promised.
    match expected {
        Some(id) if decision.is_allow() && decision.reasons == [id] => {}
        None if !decision.is_allow() && decision.reasons.is_empty() => {}
        _ => {
            return Err(format!(
                "writ decided {} on {} rules",
                decision.to_json(),
                set.config.rules
            )
            .into())
        }
    }
    if naive.decision != decision.decision || naive.reasons != decision.reasons {
        return Err("writ's tree and naive evaluation disagree".into());
    }

    let authorizer = Authorizer::new();
    let entities = Entities::from_json_str(&request.cedar_entities_json(), None)?;
    let cedar_request = cedar_policy::Request::new(
        EntityUid::from_str(request.cedar_principal())?,
        EntityUid::from_str(&request.cedar_action())?,
        EntityUid::from_str(request.cedar_resource())?,
        Context::from_json_str(&request.cedar_context_json(), None)?,
        None,
    )?;
    let response = authorizer.is_authorized(&cedar_request, policies, &entities);
    let cedar_allows = response.decision() == cedar_policy::Decision::Allow;
    let cedar_errors = response.diagnostics().errors().count();
    if cedar_allows != expected.is_some() || cedar_errors > 0 {
        return Err(format!(
            "cedar decided {:?} ({cedar_errors} errors) on {} rules",
            response.decision(),
            set.config.rules
        )
        .into());
    }

    let mut writ = || {
        black_box(engine.decide(black_box(&writ_request)));
    };
    let mut no_tree = || {
        black_box(engine.decide_naive(black_box(&writ_request)));
    };
    let mut cedar = || {
        black_box(authorizer.is_authorized(black_box(&cedar_request), policies, &entities));
    };
    let writ_iters = calibrate(&mut writ);
    let naive_iters = calibrate(&mut no_tree);
    let cedar_iters = calibrate(&mut cedar);
    let (mut w, mut n, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        w.push(per_op(&mut writ, writ_iters));
        n.push(per_op(&mut no_tree, naive_iters));
        c.push(per_op(&mut cedar, cedar_iters));
    }
    Ok(Row {
        writ: median(&w),
        naive: median(&n),
        cedar: median(&c),
        trace: decision.trace.len(),
    })
}

/// The shapes that do not flatter the tree, side by side with Cedar.
fn shapes(runs: usize) -> Result<(), Failure> {
    let flags: fn(usize) -> GenSet = |n| generate_flags(GenConfig::issuance(n));
    let mut shapes: Vec<(&str, fn(usize) -> GenSet)> = vec![("flags", flags)];
    for shape in Shape::ALL {
        let build: fn(usize) -> GenSet = match shape {
            Shape::Numeric => |n| generate_shape(GenConfig::issuance(n), Shape::Numeric),
            Shape::Presence => |n| generate_shape(GenConfig::issuance(n), Shape::Presence),
            Shape::Forbids => |n| generate_shape(GenConfig::issuance(n), Shape::Forbids),
            Shape::Absent => |n| generate_shape(GenConfig::issuance(n), Shape::Absent),
            Shape::Mixed => |n| generate_shape(GenConfig::issuance(n), Shape::Mixed),
        };
        shapes.push((shape.name(), build));
    }
    println!("| shape | rules | request | writ | Cedar | Cedar / writ | writ vs 10 rules |");
    println!("|---|---:|---|---:|---:|---:|---:|");
    for (name, build) in shapes {
        let mut at_ten: Vec<(&str, f64)> = Vec::new();
        for size in [10, 10_000] {
            let set = build(size);
            let engine = Engine::compile([("gen.writ", set.writ_source())], None)
                .map_err(|d| d.render(false))?;
            let policies =
                PolicySet::from_str(&set.cedar_source()).map_err(|e| format!("cedar: {e}"))?;
            let mut requests = vec![("non_matching", set.non_matching_request())];
            if let Some((one, _)) = set.matching_request() {
                requests.push(("matching_one", one));
            }
            if let Some((many, _)) = set.many_matching_request() {
                requests.push(("matching_many", many));
            }
            for (label, request) in requests {
                let (writ, cedar) = measure_pair(&engine, &policies, &request, runs)
                    .map_err(|e| format!("{name}/{label}/{size}: {e}"))?;
                if size == 10 {
                    at_ten.push((label, writ.cpu));
                }
                let growth = at_ten
                    .iter()
                    .find(|(l, _)| *l == label)
                    .map_or(String::from("–"), |(_, base)| {
                        format!("{:.2}x", writ.cpu / base)
                    });
                println!(
                    "| {name} | {size} | {label} | {} | {} | {:.0}x | {growth} |",
                    show(writ.cpu),
                    show(cedar.cpu),
                    cedar.cpu / writ.cpu
                );
            }
        }
    }
    println!("\n(on-CPU time, thread CPU clock)");
    Ok(())
}

/// Median times of one decision in writ and in Cedar, after checking that
/// both allow or both deny, and that writ's tree agrees with its naive walk.
fn measure_pair(
    engine: &Engine,
    policies: &PolicySet,
    request: &GenRequest,
    runs: usize,
) -> Result<(Time, Time), Failure> {
    let writ_request = request.to_request()?;
    let decision = engine.decide(&writ_request);
    let naive = engine.decide_naive(&writ_request);
    if naive.decision != decision.decision || naive.reasons != decision.reasons {
        return Err("writ's tree and naive evaluation disagree".into());
    }
    let authorizer = Authorizer::new();
    let entities = Entities::from_json_str(&request.cedar_entities_json(), None)?;
    let cedar_request = cedar_policy::Request::new(
        EntityUid::from_str(request.cedar_principal())?,
        EntityUid::from_str(&request.cedar_action())?,
        EntityUid::from_str(request.cedar_resource())?,
        Context::from_json_str(&request.cedar_context_json(), None)?,
        None,
    )?;
    let response = authorizer.is_authorized(&cedar_request, policies, &entities);
    let cedar_allows = response.decision() == cedar_policy::Decision::Allow;
    if cedar_allows != decision.is_allow() {
        return Err(format!(
            "writ decided {:?}, cedar {:?}",
            decision.decision,
            response.decision()
        )
        .into());
    }
    let mut writ = || {
        black_box(engine.decide(black_box(&writ_request)));
    };
    let mut cedar = || {
        black_box(authorizer.is_authorized(black_box(&cedar_request), policies, &entities));
    };
    let writ_iters = calibrate(&mut writ);
    let cedar_iters = calibrate(&mut cedar);
    let (mut w, mut c) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        w.push(per_op(&mut writ, writ_iters));
        c.push(per_op(&mut cedar, cedar_iters));
    }
    Ok((median(&w), median(&c)))
}

/// How many iterations make a run of about `RUN_MS`.
fn calibrate(f: &mut impl FnMut()) -> u64 {
    let mut iters = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        let elapsed = start.elapsed();
        if elapsed >= Duration::from_millis(RUN_MS / 4) || iters >= 1 << 30 {
            let per = elapsed.as_secs_f64() / iters as f64;
            return ((RUN_MS as f64 / 1000.0) / per).ceil().max(1.0) as u64;
        }
        iters *= 2;
    }
}

/// The calling thread's CPU time, in nanoseconds.
fn thread_cpu_nanos() -> f64 {
    let mut spec = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `spec` is a valid, writable timespec for the call's duration.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut spec) };
    if status != 0 {
        return f64::NAN;
    }
    spec.tv_sec as f64 * 1e9 + spec.tv_nsec as f64
}

/// Time per call over `iters` calls.
fn per_op(f: &mut impl FnMut(), iters: u64) -> Time {
    let cpu = thread_cpu_nanos();
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    let wall = start.elapsed().as_nanos() as f64;
    let cpu = thread_cpu_nanos() - cpu;
    Time {
        cpu: cpu / iters as f64,
        wall: wall / iters as f64,
    }
}

/// Median time of `runs` calls to a fallible builder, and its last result.
fn time_build<T>(
    runs: usize,
    mut build: impl FnMut() -> Result<T, Failure>,
) -> Result<(Time, T), Failure> {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs.max(1) {
        // Each build starts with the previous one freed, as a reload does.
        drop(last.take());
        let mut built = None;
        let mut once = || built = Some(build());
        times.push(per_op(&mut once, 1));
        last = Some(built.ok_or("the build did not run")??);
    }
    let built = last.ok_or("no run")?;
    Ok((median(&times), built))
}

/// The medians of each clock separately.
fn median(times: &[Time]) -> Time {
    let middle = |mut values: Vec<f64>| -> f64 {
        values.sort_by(|a, b| a.total_cmp(b));
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    };
    Time {
        cpu: middle(times.iter().map(|t| t.cpu).collect()),
        wall: middle(times.iter().map(|t| t.wall).collect()),
    }
}

/// A duration in nanoseconds, in the unit that suits it.
fn show(nanos: f64) -> String {
    if nanos < 1_000.0 {
        format!("{nanos:.0} ns")
    } else if nanos < 1_000_000.0 {
        format!("{:.2} µs", nanos / 1_000.0)
    } else if nanos < 1_000_000_000.0 {
        format!("{:.1} ms", nanos / 1_000_000.0)
    } else {
        format!("{:.2} s", nanos / 1_000_000_000.0)
    }
}
