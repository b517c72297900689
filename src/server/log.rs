//! The decision log: one JSON line per decision, written by a thread of its
//! own.
//!
//! Handlers hand their lines to a bounded channel; a full channel makes
//! them wait rather than drop a line. The writer takes everything queued at
//! once (a group), writes it with one `write`, optionally `fdatasync`s it,
//! and then tells each handler that asked whether its lines landed. Two
//! modes follow from that:
//!
//! - **required** (`--decision-log-required`, the default with a log): a
//!   handler waits for its group's result and answers 503 instead of the
//!   decision when its line was not written, and `/ready` answers 503 until
//!   a write succeeds again. An answered decision has its line in the
//!   kernel (with `--decision-log-sync`, on the disk).
//! - **best effort**: a handler queues its line and answers at once; a line
//!   that cannot be written is lost.
//!
//! In both, every line that is not written is counted in
//! `writ_decision_log_write_errors_total` and reported on stderr with the OS
//! error, at most once per [`REPORT_EVERY`]. After a failed write the file
//! is opened again by its path before the next write, so a log moved aside,
//! deleted or swapped for another file is written at the path again.
//! On shutdown the server stops answering first, then asks the writer to
//! write what is queued and waits for it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::metrics::Metrics;
use crate::decision::{Decision, Effect};
use crate::request::Request;

/// How many messages may wait for the writer before handlers wait too.
const CAPACITY: usize = 16 * 1024;

/// Most messages written in one group.
const MAX_GROUP: usize = 1024;

/// The least free space the log's filesystem must have at start-up, and
/// again before an unavailable log counts as writable.
pub(crate) const MIN_FREE_BYTES: u64 = 1024 * 1024;

/// How often write errors are reported on stderr, at most.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// How often an unavailable log file is looked at again (opened afresh, its
/// free space checked) while no decision comes to try it.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How the log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogMode {
    /// A decision whose line cannot be written is not answered.
    pub(crate) required: bool,
    /// `fdatasync` each group before answering (files only).
    pub(crate) sync: bool,
}

enum Message {
    /// Lines to write; `ack` (required mode) hears whether all landed.
    Lines {
        lines: Vec<String>,
        ack: Option<oneshot::Sender<bool>>,
    },
    /// Write what is queued, acknowledge, and stop.
    Close(oneshot::Sender<()>),
}

/// A decision whose line could not be written, in required mode.
#[derive(Debug)]
pub(crate) struct NotRecorded;

/// The sending side, shared by the handlers.
#[derive(Debug)]
pub(crate) struct DecisionLog {
    /// The file (or stdout) writer's queue; none when lines are only
    /// shipped.
    tx: Option<mpsc::Sender<Message>>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
    mode: LogMode,
    /// False from a failed write until a write (or, for a file, a probe)
    /// succeeds.
    writable: Arc<AtomicBool>,
    /// The HTTP collector's shipper (`--decision-log-url`).
    shipper: Option<super::logship::Shipper>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Lines { lines, .. } => write!(f, "Lines({})", lines.len()),
            Message::Close(_) => f.write_str("Close"),
        }
    }
}

impl DecisionLog {
    /// Opens `target` (`-` is stdout) for appending, checks that it can be
    /// written, and starts the writer (the file alone: the unit tests').
    #[cfg(test)]
    pub(crate) fn open(
        target: &str,
        mode: LogMode,
        metrics: Arc<Metrics>,
    ) -> Result<DecisionLog, String> {
        DecisionLog::open_sinks(Some(target), None, mode, metrics)
    }

    /// Opens the file (or stdout) at `target`, if given, and starts
    /// shipping to a collector, if asked: the lines go to both.
    pub(crate) fn open_sinks(
        target: Option<&str>,
        shipping: Option<super::logship::ShipConfig>,
        mode: LogMode,
        metrics: Arc<Metrics>,
    ) -> Result<DecisionLog, String> {
        let shipper = match shipping {
            Some(config) => Some(super::logship::Shipper::start(
                config,
                mode.required,
                metrics.clone(),
            )?),
            None => None,
        };
        let Some(target) = target else {
            if mode.sync {
                return Err(
                    "`--decision-log-sync` needs a decision log file; a collector cannot be synced"
                        .to_owned(),
                );
            }
            return Ok(DecisionLog {
                tx: None,
                writer: std::sync::Mutex::new(None),
                mode,
                writable: Arc::new(AtomicBool::new(true)),
                shipper,
            });
        };
        let sink = Sink::open(target)?;
        if mode.sync && sink.path.is_none() {
            return Err(
                "`--decision-log-sync` needs a decision log file; stdout cannot be synced"
                    .to_owned(),
            );
        }
        sink.check_space()
            .map_err(|e| format!("the decision log `{target}` cannot be written: {e}"))?;
        let writable = Arc::new(AtomicBool::new(true));
        let (tx, rx) = mpsc::channel(CAPACITY);
        let writer = Writer {
            sink,
            metrics,
            writable: writable.clone(),
            sync: mode.sync,
            torn: false,
            reopen: false,
            report: Report::new(target),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| format!("cannot start the decision log writer: {e}"))?;
        let handle = std::thread::Builder::new()
            .name("writ-decision-log".to_owned())
            .spawn(move || runtime.block_on(writer.run(rx)))
            .map_err(|e| format!("cannot start the decision log writer: {e}"))?;
        Ok(DecisionLog {
            tx: Some(tx),
            writer: std::sync::Mutex::new(Some(handle)),
            mode,
            writable,
            shipper,
        })
    }

    /// Whether decisions may be answered: always in best-effort mode; in
    /// required mode, while the last write succeeded.
    pub(crate) fn ready(&self) -> bool {
        !self.mode.required
            || (self.writable.load(Ordering::SeqCst)
                && self.shipper.as_ref().map_or(true, |s| s.healthy()))
    }

    /// The collector's shipper, if lines are shipped.
    pub(crate) fn shipper(&self) -> Option<&super::logship::Shipper> {
        self.shipper.as_ref()
    }

    /// Whether lines are written to a file (or stdout).
    pub(crate) fn has_file(&self) -> bool {
        self.tx.is_some()
    }

    /// Whether a decision waits for its line (`--decision-log-required`).
    pub(crate) fn required(&self) -> bool {
        self.mode.required
    }

    /// Whether the last write succeeded (or, after a failure, a probe of
    /// the file did).
    pub(crate) fn writable(&self) -> bool {
        self.writable.load(Ordering::SeqCst)
    }

    /// Hands `lines` to the writer. In required mode, waits until they are
    /// written (and synced, with `sync`) and fails if any was not; in
    /// best-effort mode, returns once they are queued.
    pub(crate) async fn commit(&self, lines: Vec<String>) -> Result<(), NotRecorded> {
        if lines.is_empty() {
            return Ok(());
        }
        // Shipped first (queued, not waited for), then written.
        let (lines, shipped) = match &self.shipper {
            None => (Some(lines), None),
            Some(shipper) if self.tx.is_some() => {
                let heard = shipper.offer(lines.clone());
                (Some(lines), heard)
            }
            Some(shipper) => (None, shipper.offer(lines)),
        };
        if let Some(lines) = lines {
            self.commit_file(lines).await?;
        }
        match shipped {
            None => Ok(()),
            Some(heard) => match heard.await {
                Ok(true) => Ok(()),
                _ => Err(NotRecorded),
            },
        }
    }

    /// [`DecisionLog::commit`] for the file (or stdout).
    async fn commit_file(&self, lines: Vec<String>) -> Result<(), NotRecorded> {
        let Some(tx) = &self.tx else {
            return Ok(());
        };
        if !self.mode.required {
            if tx.send(Message::Lines { lines, ack: None }).await.is_err() {
                eprintln!(
                    "writ: the decision log writer has stopped; a decision line was not written"
                );
            }
            return Ok(());
        }
        let (ack, heard) = oneshot::channel();
        let message = Message::Lines {
            lines,
            ack: Some(ack),
        };
        if tx.send(message).await.is_err() {
            return Err(NotRecorded);
        }
        match heard.await {
            Ok(true) => Ok(()),
            _ => Err(NotRecorded),
        }
    }

    /// Writes out everything queued so far and stops the writer.
    pub(crate) async fn close(&self) {
        if let Some(thread) = self.shipper.as_ref().and_then(|s| s.close()) {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        let Some(tx) = &self.tx else {
            return;
        };
        let (ack, heard) = oneshot::channel();
        if tx.send(Message::Close(ack)).await.is_ok() {
            let _ = heard.await;
            let handle = self.writer.lock().ok().and_then(|mut w| w.take());
            if let Some(handle) = handle {
                let _ = tokio::task::spawn_blocking(move || handle.join()).await;
            }
        }
    }
}

/// Where lines go: a file opened for appending (again by its path after a
/// failure), or the process's standard output.
struct Sink {
    /// None for stdout.
    path: Option<PathBuf>,
    file: File,
}

impl Sink {
    fn open(target: &str) -> Result<Sink, String> {
        if target == "-" {
            return Ok(Sink {
                path: None,
                file: stdout_file()
                    .map_err(|e| format!("cannot write the decision log to stdout: {e}"))?,
            });
        }
        let path = PathBuf::from(target);
        let file = open_append(&path)
            .map_err(|e| format!("cannot open the decision log `{target}`: {e}"))?;
        Ok(Sink {
            path: Some(path),
            file,
        })
    }

    fn reopen(&mut self) -> std::io::Result<()> {
        if let Some(path) = &self.path {
            self.file = open_append(path)?;
        }
        Ok(())
    }

    /// For a regular file: its filesystem has [`MIN_FREE_BYTES`] free.
    /// Devices, pipes and stdout cannot be asked; only a write tells.
    fn check_space(&self) -> std::io::Result<()> {
        let regular = self.file.metadata()?.file_type().is_file();
        if !regular {
            return Ok(());
        }
        match free_bytes(&self.file) {
            Some(free) if free < MIN_FREE_BYTES => Err(std::io::Error::other(format!(
                "its filesystem has {free} bytes free, less than the {MIN_FREE_BYTES} the log needs"
            ))),
            _ => Ok(()),
        }
    }

    fn is_regular_file(&self) -> bool {
        self.path.is_some() && self.file.metadata().is_ok_and(|m| m.file_type().is_file())
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// A handle of our own on file descriptor 1, written without Rust's line
/// buffer so that every error is seen.
#[cfg(unix)]
fn stdout_file() -> std::io::Result<File> {
    use std::os::fd::AsFd;
    Ok(File::from(std::io::stdout().as_fd().try_clone_to_owned()?))
}

#[cfg(not(unix))]
fn stdout_file() -> std::io::Result<File> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "only on Unix",
    ))
}

#[cfg(target_os = "linux")]
// The fields are `u32` on 32-bit targets.
#[allow(clippy::useless_conversion)]
fn free_bytes(file: &File) -> Option<u64> {
    let stats = nix::sys::statvfs::fstatvfs(file).ok()?;
    Some(u64::from(stats.blocks_available()).saturating_mul(u64::from(stats.fragment_size())))
}

#[cfg(not(target_os = "linux"))]
fn free_bytes(_file: &File) -> Option<u64> {
    None
}

/// Write errors on stderr, at most one message per [`REPORT_EVERY`], each
/// with the OS error and the lines lost since the previous message.
struct Report {
    target: String,
    last: Option<Instant>,
    unreported: u64,
    last_error: String,
}

impl Report {
    fn new(target: &str) -> Report {
        Report {
            target: if target == "-" {
                "stdout".to_owned()
            } else {
                format!("`{target}`")
            },
            last: None,
            unreported: 0,
            last_error: String::new(),
        }
    }

    fn failed(&mut self, lines: u64, error: &std::io::Error) {
        self.unreported += lines;
        self.last_error = error.to_string();
        if self.last.map_or(true, |at| at.elapsed() >= REPORT_EVERY) {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.unreported > 0 {
            eprintln!(
                "writ: cannot write the decision log {}: {}; {} line(s) lost since the last report",
                self.target, self.last_error, self.unreported
            );
            self.unreported = 0;
            self.last = Some(Instant::now());
        }
    }

    fn recovered(&mut self) {
        self.flush();
        eprintln!("writ: the decision log {} is written again", self.target);
    }
}

/// The writer thread's state.
struct Writer {
    sink: Sink,
    metrics: Arc<Metrics>,
    writable: Arc<AtomicBool>,
    sync: bool,
    /// The last failed write stopped inside a line: start the next one on
    /// a fresh line, so that the fragment stays a line of its own.
    torn: bool,
    /// Open the file again before the next write.
    reopen: bool,
    report: Report,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        let mut group = Vec::new();
        let mut buffer = Vec::with_capacity(64 * 1024);
        loop {
            let first = if self.writable.load(Ordering::SeqCst) {
                rx.recv().await
            } else {
                tokio::select! {
                    message = rx.recv() => message,
                    () = tokio::time::sleep(PROBE_EVERY) => {
                        self.probe();
                        continue;
                    }
                }
            };
            let Some(first) = first else { break };
            group.push(first);
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(message) => group.push(message),
                    Err(_) => break,
                }
            }
            if let Some(close) = self.write_group(&mut group, &mut buffer) {
                self.report.flush();
                let _ = close.send(());
                return;
            }
        }
        self.report.flush();
    }

    /// Writes a group and answers its acknowledgements; returns the close
    /// request if the group held one.
    fn write_group(
        &mut self,
        group: &mut Vec<Message>,
        buffer: &mut Vec<u8>,
    ) -> Option<oneshot::Sender<()>> {
        buffer.clear();
        // Per message: the end of its last line in `buffer`, and its ack.
        let mut ends = Vec::with_capacity(group.len());
        let mut line_ends = Vec::new();
        let mut close = None;
        for message in group.drain(..) {
            match message {
                Message::Lines { lines, ack } => {
                    for line in &lines {
                        buffer.extend_from_slice(line.as_bytes());
                        buffer.push(b'\n');
                        line_ends.push(buffer.len());
                    }
                    ends.push((buffer.len(), ack));
                }
                Message::Close(ack) => close = Some(ack),
            }
        }
        if !buffer.is_empty() {
            let written = self.write(buffer);
            let landed = line_ends.iter().filter(|end| **end <= written).count() as u64;
            let lost = line_ends.len() as u64 - landed;
            self.metrics.log_lines(landed, lost);
            for (end, ack) in ends {
                if let Some(ack) = ack {
                    let _ = ack.send(end <= written);
                }
            }
        }
        close
    }

    /// Writes `bytes`; returns how many reached the file (all of them only
    /// if synced too, with `sync`). Records failure and recovery.
    fn write(&mut self, bytes: &[u8]) -> usize {
        match self.try_write(bytes) {
            Ok(()) => {
                if !self.writable.swap(true, Ordering::SeqCst) {
                    self.report.recovered();
                }
                bytes.len()
            }
            Err((written, error)) => {
                self.writable.store(false, Ordering::SeqCst);
                self.reopen = true;
                let lost = bytes[written..].iter().filter(|b| **b == b'\n').count() as u64;
                self.report.failed(lost, &error);
                written
            }
        }
    }

    fn try_write(&mut self, bytes: &[u8]) -> Result<(), (usize, std::io::Error)> {
        if self.reopen {
            self.sink.reopen().map_err(|e| (0, e))?;
            self.reopen = false;
        }
        if self.torn {
            self.sink.file.write_all(b"\n").map_err(|e| (0, e))?;
            self.torn = false;
        }
        let mut written = 0;
        while written < bytes.len() {
            match self.sink.file.write(&bytes[written..]) {
                Ok(0) => {
                    self.torn = written > 0;
                    return Err((
                        written,
                        std::io::Error::new(std::io::ErrorKind::WriteZero, "nothing was written"),
                    ));
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // A partial line is torn; whole lines before it landed.
                    self.torn = written > 0 && bytes[written - 1] != b'\n';
                    return Err((written, e));
                }
            }
        }
        if self.sync {
            // Not known to be on the disk: none of the group counts.
            self.sink.file.sync_data().map_err(|e| (0, e))?;
        }
        Ok(())
    }

    /// While the log is unavailable and no decision tries it: a regular
    /// file that opens again and has room counts as writable again, so that
    /// `/ready` can return and traffic come back to test it. A device or a
    /// pipe waits for a decision's write.
    fn probe(&mut self) {
        if self.sink.path.is_none() || self.sink.reopen().is_err() {
            return;
        }
        self.reopen = false;
        if self.sink.is_regular_file() && self.sink.check_space().is_ok() {
            self.writable.store(true, Ordering::SeqCst);
            self.report.recovered();
        }
    }
}

/// Request fields to replace with `"[redacted]"` in the log, as dotted
/// paths (`subject.id`, `context.approval.by`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Redaction {
    paths: Vec<Vec<String>>,
}

/// What a redacted value becomes.
pub(crate) const REDACTED: &str = "[redacted]";

impl Redaction {
    /// Checks and keeps the paths.
    pub(crate) fn new(paths: &[String]) -> Result<Redaction, String> {
        let mut out = Vec::new();
        for path in paths {
            let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
            if parts.iter().any(String::is_empty)
                || !crate::schema::roots().any(|root| root == parts[0])
            {
                return Err(format!(
                    "`--redact {path}` is not a request path; write it like `subject.id` or `context.approval.by`"
                ));
            }
            out.push(parts);
        }
        Ok(Redaction { paths: out })
    }

    fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Replaces the named fields of `request` and returns the strings they
    /// held (every string inside an object or array), longest first.
    fn apply(&self, request: &mut Value) -> Vec<String> {
        let mut secrets = Vec::new();
        for path in &self.paths {
            redact(request, path, &mut secrets);
        }
        secrets.retain(|s| !s.is_empty() && s != REDACTED);
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        secrets
    }
}

fn redact(value: &mut Value, path: &[String], secrets: &mut Vec<String>) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(slot) = value
        .as_object_mut()
        .and_then(|o| o.get_mut(first.as_str()))
    else {
        return;
    };
    if rest.is_empty() {
        collect_strings(slot, secrets);
        *slot = Value::String(REDACTED.to_owned());
    } else {
        redact(slot, rest, secrets);
    }
}

fn collect_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(text) => out.push(text.clone()),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Replaces every occurrence of a secret inside every string of `value`
/// (keys included): a redacted `resource.id` also leaves the scope items,
/// audiences and messages built from it.
fn scrub(value: &mut Value, secrets: &[String]) {
    match value {
        Value::String(text) => scrub_text(text, secrets),
        Value::Array(items) => items.iter_mut().for_each(|v| scrub(v, secrets)),
        Value::Object(map) => {
            if map
                .keys()
                .any(|k| secrets.iter().any(|s| k.contains(s.as_str())))
            {
                let old = std::mem::take(map);
                *map = old
                    .into_iter()
                    .map(|(mut key, value)| {
                        scrub_text(&mut key, secrets);
                        (key, value)
                    })
                    .collect::<Map<String, Value>>();
            }
            map.values_mut().for_each(|v| scrub(v, secrets));
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn scrub_text(text: &mut String, secrets: &[String]) {
    for secret in secrets {
        if text.contains(secret.as_str()) {
            *text = text.replace(secret.as_str(), REDACTED);
        }
    }
}

/// Generic over the decision's list types so that it follows them.
#[derive(Serialize)]
struct Line<'a, R: Serialize, S: Serialize, O: Serialize, E: Serialize> {
    decision_id: &'a str,
    time: &'a str,
    endpoint: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    request_digest: &'a str,
    time_filled: bool,
    decision: Effect,
    reasons: &'a R,
    scope: &'a S,
    ttl: u64,
    obligations: &'a O,
    errors: &'a E,
    policy_digest: &'a str,
}

/// What a line records besides the request and the decision.
pub(crate) struct Entry<'a> {
    pub(crate) decision_id: &'a str,
    pub(crate) time: &'a str,
    pub(crate) endpoint: &'a str,
    pub(crate) request_id: Option<&'a str>,
    pub(crate) time_filled: bool,
}

fn sha256_hex(bytes: &[u8]) -> String {
    crate::hex::prefixed("sha256:", &Sha256::digest(bytes))
}

/// `sha256:` of the request as decided (after the server filled in the
/// time), serialized compactly, before redaction: what [`line`] records.
#[cfg(test)]
fn request_digest(request: &Request) -> String {
    sha256_hex(&serde_json::to_vec(request).unwrap_or_default())
}

/// The log line for one decision. The request is serialized once: its
/// digest is taken over the same bytes the line carries (unless redacted).
pub(crate) fn line(
    entry: &Entry<'_>,
    request: &Request,
    decision: &Decision,
    redaction: &Redaction,
) -> String {
    let request_json = serde_json::to_string(request).unwrap_or_else(|_| "null".to_owned());
    let digest = sha256_hex(request_json.as_bytes());
    if !redaction.is_empty() {
        return redacted_line(entry, request, decision, redaction, &digest);
    }
    let head = Line {
        decision_id: entry.decision_id,
        time: entry.time,
        endpoint: entry.endpoint,
        request_id: entry.request_id,
        request_digest: &digest,
        time_filled: entry.time_filled,
        decision: decision.decision,
        reasons: &decision.reasons,
        scope: &decision.scope,
        ttl: decision.ttl,
        obligations: &decision.obligations,
        errors: &decision.errors,
        policy_digest: &decision.policy.digest,
    };
    match serde_json::to_string(&head) {
        Ok(mut line) => {
            // `{...}` becomes `{...,"request":{...}}`.
            line.pop();
            line.reserve(request_json.len() + 12);
            line.push_str(",\"request\":");
            line.push_str(&request_json);
            line.push('}');
            line
        }
        Err(e) => unserializable(entry, &e),
    }
}

/// The line with `--redact`: the named request fields replaced, and every
/// string they held replaced wherever else it reached the line (scope,
/// obligations, reasons, errors, other request fields, the request id).
/// The ids, times and digests are the server's own and are left alone.
fn redacted_line(
    entry: &Entry<'_>,
    request: &Request,
    decision: &Decision,
    redaction: &Redaction,
    digest: &str,
) -> String {
    let mut logged = serde_json::to_value(request).unwrap_or(Value::Null);
    let secrets = redaction.apply(&mut logged);
    let mut derived = serde_json::json!({
        "request_id": entry.request_id,
        "reasons": decision.reasons,
        "scope": decision.scope,
        "obligations": decision.obligations,
        "errors": decision.errors,
    });
    if !secrets.is_empty() {
        scrub(&mut logged, &secrets);
        scrub(&mut derived, &secrets);
    }
    let take = |key: &str| derived.get(key).cloned().unwrap_or(Value::Null);
    let request_id = take("request_id");
    let head = Line {
        decision_id: entry.decision_id,
        time: entry.time,
        endpoint: entry.endpoint,
        request_id: request_id.as_str(),
        request_digest: digest,
        time_filled: entry.time_filled,
        decision: decision.decision,
        reasons: &take("reasons"),
        scope: &take("scope"),
        ttl: decision.ttl,
        obligations: &take("obligations"),
        errors: &take("errors"),
        policy_digest: &decision.policy.digest,
    };
    match serde_json::to_value(&head) {
        Ok(Value::Object(mut map)) => {
            map.insert("request".to_owned(), logged);
            Value::Object(map).to_string()
        }
        Ok(other) => other.to_string(),
        Err(e) => unserializable(entry, &e),
    }
}

fn unserializable(entry: &Entry<'_>, error: &serde_json::Error) -> String {
    format!(
        "{{\"decision_id\":{},\"error\":{}}}",
        Value::String(entry.decision_id.to_owned()),
        Value::String(format!("cannot serialize the log line: {error}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;

    #[test]
    fn digests_are_lower_case_hex() {
        // SHA-256 of "abc" (FIPS 180-2, appendix B.1).
        assert_eq!(
            sha256_hex(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn sample() -> (Request, Decision) {
        let engine = Engine::compile(
            [(
                "t.writ",
                "@id(\"p\") permit if action == \"read\" grant [\"read:{resource.id}\"];",
            )],
            None,
        )
        .expect("compiles");
        let request = Request::from_json(
            r#"{"subject":{"id":"spiffe://a/b","owner":"t","repository":"acme/x"},
                "action":"read","resource":{"id":"db://x"},
                "context":{"approval":{"by":"oncall@acme.io"}}}"#,
        )
        .expect("valid");
        let decision = engine.decide(&request);
        (request, decision)
    }

    fn entry() -> Entry<'static> {
        Entry {
            decision_id: "d-1",
            time: "2026-11-22T10:00:00Z",
            endpoint: "/v1/decide",
            request_id: Some("r-1"),
            time_filled: true,
        }
    }

    #[test]
    fn a_line_has_every_field() {
        let (request, decision) = sample();
        let text = line(&entry(), &request, &decision, &Redaction::default());
        let value: Value = serde_json::from_str(&text).expect("one JSON object");
        assert_eq!(value["decision_id"], "d-1");
        assert_eq!(value["decision"], "allow");
        assert_eq!(value["scope"][0], "read:db://x");
        assert_eq!(value["ttl"], 3600);
        assert_eq!(value["reasons"][0], "p");
        assert_eq!(value["time_filled"], true);
        assert_eq!(value["request_id"], "r-1");
        assert_eq!(value["request"]["subject"]["id"], "spiffe://a/b");
        assert!(value["policy_digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")));
        assert_eq!(value["request_digest"], request_digest(&request));
        assert!(!text.contains('\n'));
    }

    #[test]
    fn redaction_replaces_only_the_named_paths_and_keeps_the_digest() {
        let (request, decision) = sample();
        let redaction = Redaction::new(&[
            "subject.id".to_owned(),
            "context.approval.by".to_owned(),
            "subject.missing".to_owned(),
        ])
        .expect("valid paths");
        let text = line(&entry(), &request, &decision, &redaction);
        let value: Value = serde_json::from_str(&text).expect("one JSON object");
        assert_eq!(value["request"]["subject"]["id"], REDACTED);
        assert_eq!(value["request"]["context"]["approval"]["by"], REDACTED);
        assert_eq!(value["request"]["subject"]["repository"], "acme/x");
        assert!(value["request"]["subject"].get("missing").is_none());
        assert!(!text.contains("spiffe://a/b"));
        assert!(!text.contains("oncall@acme.io"));
        assert_eq!(value["request_digest"], request_digest(&request));
    }

    #[test]
    fn redacted_values_leave_every_string_of_the_line() {
        let (request, mut decision) = sample();
        // What evaluation could put there: messages and rule ids quoting
        // the values, an audience copied from the resource.
        decision.errors.push(crate::decision::ErrorOut::in_rule(
            "p".to_owned(),
            "cannot compare `db://x` with `spiffe://a/b`".to_owned(),
        ));
        decision.reasons.push("p for db://x".to_owned());
        decision.obligations.push(crate::decision::ObligationOut {
            kind: "audience".to_owned(),
            event: None,
            value: Some("db://x".to_owned()),
            rule: "p".to_owned(),
        });
        let redaction =
            Redaction::new(&["resource".to_owned(), "subject.id".to_owned()]).expect("valid paths");
        let mut entry = entry();
        entry.request_id = Some("req-for-db://x");
        let text = line(&entry, &request, &decision, &redaction);
        assert!(!text.contains("db://x"), "{text}");
        assert!(!text.contains("spiffe://a/b"), "{text}");
        let value: Value = serde_json::from_str(&text).expect("one JSON object");
        assert_eq!(value["scope"][0], "read:[redacted]");
        assert_eq!(value["obligations"][0]["value"], "[redacted]");
        assert_eq!(
            value["errors"][0]["message"],
            "cannot compare `[redacted]` with `[redacted]`"
        );
        assert_eq!(value["reasons"][1], "p for [redacted]");
        assert_eq!(value["request_id"], "req-for-[redacted]");
        assert_eq!(value["request"]["resource"], REDACTED);
        // The server's own fields are untouched, the digest is of the
        // request as decided.
        assert_eq!(value["decision_id"], "d-1");
        assert_eq!(value["request_digest"], request_digest(&request));
        assert_eq!(value["request"]["subject"]["owner"], "t");
    }

    #[test]
    fn bad_redaction_paths_are_refused() {
        assert!(Redaction::new(&["nobody.id".to_owned()]).is_err());
        assert!(Redaction::new(&["subject..id".to_owned()]).is_err());
        assert!(Redaction::new(&["subject.id".to_owned()]).is_ok());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn required_commits_hear_whether_their_lines_landed() {
        let metrics = Arc::new(Metrics::default());
        let mode = LogMode {
            required: true,
            sync: false,
        };
        let full = DecisionLog::open("/dev/full", mode, metrics.clone()).expect("opens");
        let null = DecisionLog::open("/dev/null", mode, metrics.clone()).expect("opens");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            assert!(null.commit(vec!["{}".to_owned(); 3]).await.is_ok());
            assert!(full.ready());
            for _ in 0..10 {
                let lines = vec!["{}".to_owned(), "{}".to_owned()];
                assert!(full.commit(lines).await.is_err());
            }
            assert!(!full.ready());
            assert!(null.ready());
            full.close().await;
            null.close().await;
        });
        let text = metrics.render(&crate::server::state::Loaded::for_tests());
        assert!(
            text.contains("writ_decision_log_write_errors_total 20"),
            "{text}"
        );
        assert!(text.contains("writ_decision_log_lines_total 3"), "{text}");
    }

    #[test]
    fn the_writer_flushes_everything_on_close() {
        let path = std::env::temp_dir().join(format!("writ-log-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let metrics = Arc::new(Metrics::default());
        let mode = LogMode {
            required: false,
            sync: false,
        };
        let log = DecisionLog::open(&path.display().to_string(), mode, metrics).expect("opens");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            for i in 0..1000 {
                log.commit(vec![format!("{{\"n\":{i}}}")])
                    .await
                    .expect("queued");
            }
            log.close().await;
        });
        let text = std::fs::read_to_string(&path).expect("log written");
        assert_eq!(text.lines().count(), 1000);
        assert_eq!(text.lines().last(), Some("{\"n\":999}"));
        let _ = std::fs::remove_file(&path);
    }
}
