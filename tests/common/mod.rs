//! What the tests that run the `writ` binary as a child process share: a
//! runner that cannot hang or crash the test harness, scratch directories,
//! and the usual assertion on a refusal.

// Each test crate uses its own part of this module.
#![allow(dead_code)]

pub mod grants;
pub mod server;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A fresh, empty scratch directory, unique to this process and call.
pub fn scratch(prefix: &str, name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "writ-{prefix}-{}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// How to run `writ` for [`run`].
pub struct Run<'a> {
    /// The arguments.
    pub args: &'a [&'a str],
    /// The working directory (the test's own when `None`).
    pub dir: Option<&'a Path>,
    /// `ulimit -s` for the child, in KiB.
    pub stack_kib: Option<u32>,
    /// Bytes for its stdin (none: stdin is closed).
    pub stdin: Option<Vec<u8>>,
    /// How long it may take before it is killed and the test fails.
    pub limit: Duration,
}

impl<'a> Run<'a> {
    /// `writ args`, with nothing else set, killed after `limit`.
    pub fn new(args: &'a [&'a str], limit: Duration) -> Run<'a> {
        Run {
            args,
            dir: None,
            stack_kib: None,
            stdin: None,
            limit,
        }
    }
}

/// Runs `writ`. Fails the test when it outlives `run.limit` (a hang), dies
/// of a signal, or reports a stack overflow (a crash).
pub fn run(run: Run<'_>) -> Output {
    let binary = env!("CARGO_BIN_EXE_writ");
    let mut command = match run.stack_kib {
        Some(kib) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -s {kib} && exec \"$0\" \"$@\""))
                .arg(binary);
            c
        }
        None => Command::new(binary),
    };
    if let Some(dir) = run.dir {
        command.current_dir(dir);
    }
    let args = run.args;
    let mut child = command
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(if run.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run writ");
    if let Some(bytes) = run.stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        // writ stops reading past its limit and exits; a broken pipe here is
        // expected then.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    // Drain both pipes as the child writes, so that a long diagnostic
    // cannot fill a pipe and stall it.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for writ") {
            let output = Output {
                status,
                stdout: out.join().expect("read stdout"),
                stderr: err.join().expect("read stderr"),
            };
            let text = stderr(&output);
            assert!(
                status.code().is_some() && !text.contains("has overflowed its stack"),
                "writ {args:?} crashed ({status}):\n{}",
                text.chars().take(2000).collect::<String>()
            );
            return output;
        }
        if started.elapsed() > run.limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "writ {args:?} did not finish within {:?}: it hangs",
                run.limit
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The child's stderr, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts that the child exited with `code` and said `needle` on stderr.
pub fn assert_refused(output: &Output, code: i32, needle: &str) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(code), "{text}");
    assert!(text.contains(needle), "expected `{needle}` in:\n{text}");
}

/// Runs `writ ARGS` with two minutes at most: its exit code (-1 when it
/// had none), stdout and stderr, as text.
pub fn writ_texts(args: &[&str]) -> (i32, String, String) {
    let out = run(Run::new(args, Duration::from_secs(120)));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr(&out),
    )
}

/// The path of the review fixture `name` under `tests/diff/`.
pub fn review_fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/diff")
        .join(name)
        .display()
        .to_string()
}
