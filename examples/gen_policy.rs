//! Writes a generated policy set (`writ::testgen`) to stdout, to measure
//! `writ check` (time and peak memory) on large sets:
//!
//! ```text
//! cargo run --release --example gen_policy -- issuance 100000 > /tmp/gen100k.writ
//! /usr/bin/time -v target/release/writ check /tmp/gen100k.writ
//! /usr/bin/time -v target/release/examples/gen_policy issuance 100000 --compile
//! ```
//!
//! With `--compile` it compiles the set instead of printing it (parse,
//! check, tree) and prints the compile's CPU-clock time and the tree's size;
//! `/usr/bin/time -v` then reports the peak memory of the whole process
//! (the generated text included).
//!
//! Shapes: `issuance`, `flags`, and those of `writ::testgen::Shape`
//! (`numeric`, `presence`, `forbids`, `absent`, `mixed`).

use std::io::Write as _;
use std::process::ExitCode;

use writ::testgen::{generate, generate_flags, generate_shape, GenConfig, Shape};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(shape), Some(rules)) = (args.first(), args.get(1)) else {
        eprintln!("usage: gen_policy SHAPE RULES");
        return ExitCode::from(2);
    };
    let Ok(rules) = rules.parse::<usize>() else {
        eprintln!("gen_policy: `{rules}` is not a number of rules");
        return ExitCode::from(2);
    };
    let config = GenConfig::issuance(rules);
    let set = match shape.as_str() {
        "issuance" => generate(config),
        "flags" => generate_flags(config),
        name => match Shape::ALL.into_iter().find(|s| s.name() == name) {
            Some(shape) => generate_shape(config, shape),
            None => {
                eprintln!("gen_policy: no shape `{name}`");
                return ExitCode::from(2);
            }
        },
    };
    if args.iter().any(|a| a == "--compile") {
        // In files of 10,000 rules: a policy file holds at most 4 MiB.
        let files: Vec<(String, String)> = set
            .rules
            .chunks(10_000)
            .enumerate()
            .map(|(i, chunk)| {
                let part = writ::testgen::GenSet {
                    rules: chunk.to_vec(),
                    ..set.clone()
                };
                (format!("gen{i}.writ"), part.writ_source())
            })
            .collect();
        drop(set);
        let bytes: usize = files.iter().map(|(_, text)| text.len()).sum();
        let start = std::time::Instant::now();
        return match writ::Engine::compile(files, None) {
            Ok(engine) => {
                println!(
                    "{rules} rules ({} KiB) compiled in {:.1} ms (wall), {} tree nodes",
                    bytes / 1024,
                    start.elapsed().as_secs_f64() * 1000.0,
                    engine.tree().nodes.len()
                );
                ExitCode::SUCCESS
            }
            Err(d) => {
                eprintln!("{}", d.render(false));
                ExitCode::FAILURE
            }
        };
    }
    match std::io::stdout().write_all(set.writ_source().as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen_policy: {e}");
            ExitCode::FAILURE
        }
    }
}
