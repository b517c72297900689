//! The decision log: one JSON line per decision, written off the request
//! path.
//!
//! Handlers hand each line to a bounded channel before they answer; a
//! dedicated thread writes the lines through a buffer and flushes within
//! about a millisecond of the last line queued. A full channel makes handlers wait rather than drop
//! a line: an audit log that cannot keep up slows decisions down, it never
//! loses them. On shutdown the server stops answering first, then asks the
//! thread to flush and waits for it, so every answered request has its line.

use std::io::Write;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use super::metrics::Metrics;
use crate::decision::{Decision, Effect};
use crate::request::Request;

/// How many lines may wait for the writer before handlers wait too.
const CAPACITY: usize = 16 * 1024;

enum Message {
    Line(String),
    /// Flush, acknowledge, and stop.
    Close(std::sync::mpsc::Sender<()>),
}

/// The sending side, shared by the handlers.
#[derive(Debug)]
pub(crate) struct DecisionLog {
    tx: mpsc::Sender<Message>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Line(_) => f.write_str("Line"),
            Message::Close(_) => f.write_str("Close"),
        }
    }
}

impl DecisionLog {
    /// Opens `target` (`-` is stdout) for appending and starts the writer.
    pub(crate) fn open(target: &str, metrics: Arc<Metrics>) -> Result<DecisionLog, String> {
        let sink: Box<dyn Write + Send> = if target == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(target)
                    .map_err(|e| format!("cannot open decision log `{target}`: {e}"))?,
            )
        };
        let (tx, rx) = mpsc::channel(CAPACITY);
        let writer = std::thread::Builder::new()
            .name("writ-decision-log".to_owned())
            .spawn(move || write_lines(rx, sink, &metrics))
            .map_err(|e| format!("cannot start the decision log writer: {e}"))?;
        Ok(DecisionLog {
            tx,
            writer: std::sync::Mutex::new(Some(writer)),
        })
    }

    /// Queues a line; waits while the queue is full.
    pub(crate) async fn send(&self, line: String) {
        if self.tx.send(Message::Line(line)).await.is_err() {
            eprintln!("writ: the decision log writer has stopped; a decision line was not written");
        }
    }

    /// Writes out everything queued so far, flushes, and stops the writer.
    pub(crate) async fn close(&self) {
        let (ack_tx, ack_rx) = std::sync::mpsc::channel();
        if self.tx.send(Message::Close(ack_tx)).await.is_ok() {
            let handle = self.writer.lock().ok().and_then(|mut w| w.take());
            let _ = tokio::task::spawn_blocking(move || {
                let _ = ack_rx.recv();
                if let Some(handle) = handle {
                    let _ = handle.join();
                }
            })
            .await;
        }
    }
}

fn write_lines(mut rx: mpsc::Receiver<Message>, sink: Box<dyn Write + Send>, metrics: &Metrics) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, sink);
    let write = |out: &mut std::io::BufWriter<Box<dyn Write + Send>>, line: &str| {
        let ok = out
            .write_all(line.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .is_ok();
        if !ok {
            eprintln!("writ: cannot write to the decision log");
        }
        metrics.log_line(ok);
    };
    // While lines keep coming, poll instead of parking: a parked receiver
    // costs every sender a wake-up. Lines reach the file at most about a
    // millisecond after they were queued, or when the buffer fills.
    const FLUSH_AFTER: Duration = Duration::from_millis(1);
    const POLL: Duration = Duration::from_micros(500);
    let mut dirty = false;
    let mut last_flush = Instant::now();
    loop {
        let message = match rx.try_recv() {
            Ok(message) => message,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) if dirty => {
                if last_flush.elapsed() >= FLUSH_AFTER {
                    if out.flush().is_err() {
                        eprintln!("writ: cannot flush the decision log");
                    }
                    dirty = false;
                    last_flush = Instant::now();
                } else {
                    std::thread::sleep(POLL);
                }
                continue;
            }
            Err(TryRecvError::Empty) => match rx.blocking_recv() {
                Some(message) => message,
                None => break,
            },
        };
        match message {
            Message::Line(line) => {
                if !dirty {
                    last_flush = Instant::now();
                }
                write(&mut out, &line);
                dirty = true;
            }
            Message::Close(ack) => {
                if out.flush().is_err() {
                    eprintln!("writ: cannot flush the decision log");
                }
                let _ = ack.send(());
                return;
            }
        }
    }
    let _ = out.flush();
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
        const ROOTS: [&str; 8] = [
            "subject",
            "action",
            "resource",
            "intent",
            "environment",
            "sensitivity",
            "requested",
            "context",
        ];
        let mut out = Vec::new();
        for path in paths {
            let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
            if parts.iter().any(String::is_empty) || !ROOTS.contains(&parts[0].as_str()) {
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

    fn apply(&self, value: &mut Value) {
        for path in &self.paths {
            redact(value, path);
        }
    }
}

fn redact(value: &mut Value, path: &[String]) {
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
        *slot = Value::String(REDACTED.to_owned());
    } else {
        redact(slot, rest);
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
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in hash {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out
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
    let logged = if redaction.is_empty() {
        request_json
    } else {
        let mut value = serde_json::to_value(request).unwrap_or(Value::Null);
        redaction.apply(&mut value);
        value.to_string()
    };
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
            line.reserve(logged.len() + 12);
            line.push_str(",\"request\":");
            line.push_str(&logged);
            line.push('}');
            line
        }
        Err(e) => format!(
            "{{\"decision_id\":{},\"error\":{}}}",
            Value::String(entry.decision_id.to_owned()),
            Value::String(format!("cannot serialize the log line: {e}"))
        ),
    }
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
    fn bad_redaction_paths_are_refused() {
        assert!(Redaction::new(&["nobody.id".to_owned()]).is_err());
        assert!(Redaction::new(&["subject..id".to_owned()]).is_err());
        assert!(Redaction::new(&["subject.id".to_owned()]).is_ok());
    }

    #[test]
    fn the_writer_flushes_everything_on_close() {
        let path = std::env::temp_dir().join(format!("writ-log-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let metrics = Arc::new(Metrics::default());
        let log = DecisionLog::open(&path.display().to_string(), metrics).expect("opens");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            for i in 0..1000 {
                log.send(format!("{{\"n\":{i}}}")).await;
            }
            log.close().await;
        });
        let text = std::fs::read_to_string(&path).expect("log written");
        assert_eq!(text.lines().count(), 1000);
        assert_eq!(text.lines().last(), Some("{\"n\":999}"));
        let _ = std::fs::remove_file(&path);
    }
}
