//! Shipping the decision log to an HTTP collector (`--decision-log-url`),
//! on the real binary, against a collector this test runs on loopback that
//! can answer 500, be slow, be down (nothing listening) and come back.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::server::*;
use serde_json::Value;

const SENT: &str = "writ_decision_log_lines_total{sink=\"http\",result=\"sent\"}";
const RETRIED: &str = "writ_decision_log_lines_total{sink=\"http\",result=\"retried\"}";
const DROPPED: &str = "writ_decision_log_lines_total{sink=\"http\",result=\"dropped\"}";

/// How the collector answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Stores the lines, answers 200.
    Up,
    /// Stores nothing, answers 500.
    Failing,
    /// Stores the lines, answers 200 after this long.
    Slow(Duration),
    /// Nothing listens on the port.
    Down,
}

#[derive(Default)]
struct Seen {
    /// Every line of every batch answered 200.
    lines: Vec<Value>,
    /// Every POST, with its Content-Type.
    posts: Vec<String>,
}

/// A log collector on a loopback port: one connection at a time.
struct Collector {
    port: u16,
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
}

impl Collector {
    fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let collector = Collector {
            port,
            mode: Arc::new(Mutex::new(Mode::Up)),
            seen: Arc::new(Mutex::new(Seen::default())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (mode, seen, stop) = (
            collector.mode.clone(),
            collector.seen.clone(),
            collector.stop.clone(),
        );
        std::thread::spawn(move || {
            let mut listener = Some(listener);
            while !stop.load(Ordering::SeqCst) {
                let now = *mode.lock().expect("mode");
                if now == Mode::Down {
                    // Closing the socket: connections are refused.
                    listener = None;
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                let active = match &listener {
                    Some(l) => l,
                    None => match TcpListener::bind(("127.0.0.1", port)) {
                        Ok(l) => {
                            l.set_nonblocking(true).expect("nonblocking");
                            listener.insert(l)
                        }
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                    },
                };
                let _ = active.set_nonblocking(true);
                match active.accept() {
                    Ok((stream, _)) => serve(stream, &mode, &seen),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        collector
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/logs", self.port)
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
    }

    fn ids(&self) -> Vec<String> {
        self.seen
            .lock()
            .expect("seen")
            .lines
            .iter()
            .map(|l| l["decision_id"].as_str().expect("decision_id").to_owned())
            .collect()
    }

    fn posts(&self) -> usize {
        self.seen.lock().expect("seen").posts.len()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Reads one request and answers it as the mode says.
fn serve(mut stream: TcpStream, mode: &Mutex<Mode>, seen: &Mutex<Seen>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let (head_end, length) = loop {
        let Ok(n) = stream.read(&mut buf) else { return };
        if n == 0 {
            return;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, length);
        }
    };
    while raw.len() < head_end + length {
        let Ok(n) = stream.read(&mut buf) else { return };
        if n == 0 {
            return;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type:"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let body = String::from_utf8_lossy(&raw[head_end..head_end + length]).into_owned();
    let now = *mode.lock().expect("mode");
    seen.lock().expect("seen").posts.push(content_type);
    let status = match now {
        Mode::Failing | Mode::Down => "500 Internal Server Error",
        Mode::Up | Mode::Slow(_) => {
            let lines: Vec<Value> = body
                .lines()
                .map(|l| serde_json::from_str(l).expect("each line is JSON"))
                .collect();
            if let Mode::Slow(delay) = now {
                std::thread::sleep(delay);
            }
            seen.lock().expect("seen").lines.extend(lines);
            "200 OK"
        }
    };
    let _ = stream.write_all(
        format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
    );
}

/// One decision; returns its id, checking it was answered 200 quickly.
fn decide(server: &Server) -> String {
    let started = Instant::now();
    let reply = server.post("/v1/decide", &ci_deploy().to_string());
    let took = started.elapsed();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        took < Duration::from_secs(1),
        "a decision waited {took:?} on the collector"
    );
    reply.json()["decision_id"]
        .as_str()
        .expect("decision_id")
        .to_owned()
}

fn shipping(server: &Server) -> Value {
    server.get("/v1/status").json()["decision_log"]["shipping"].clone()
}

fn best_effort(collector: &Collector, dir: &Arc<TempDir>, extra: &[&str]) -> Server {
    let url = collector.url();
    let mut args = vec![
        "--decision-log-url",
        url.as_str(),
        "--decision-log-required=false",
    ];
    args.extend_from_slice(extra);
    Server::start(&args, dir)
}

#[test]
fn a_collector_down_fills_the_buffer_then_lines_are_dropped_and_the_rest_delivered_once() {
    let collector = Collector::start();
    let dir = Arc::new(TempDir::new("logship-down"));
    let server = best_effort(
        &collector,
        &dir,
        &[
            "--decision-log-batch",
            "5",
            "--decision-log-interval",
            "100ms",
            "--decision-log-buffer",
            "20",
        ],
    );
    let mut first: Vec<String> = (0..3).map(|_| decide(&server)).collect();
    wait_until("3 lines at the collector", Duration::from_secs(10), || {
        collector.ids().len() == 3
    });
    assert_eq!(server.wait_metric(SENT, 3.0, Duration::from_secs(5)), 3.0);
    assert!(collector
        .seen
        .lock()
        .expect("seen")
        .posts
        .iter()
        .all(|t| t == "application/x-ndjson"));

    collector.set(Mode::Down);
    // 50 decisions while nothing listens: all answered at once; 20 lines
    // fit the buffer, 30 are dropped.
    let during: Vec<String> = (0..50).map(|_| decide(&server)).collect();
    assert_eq!(
        server.wait_metric(DROPPED, 30.0, Duration::from_secs(5)),
        30.0
    );
    wait_until("a failed attempt", Duration::from_secs(10), || {
        server.metric(RETRIED) > 0.0
    });
    let status = shipping(&server);
    assert_eq!(status["healthy"], false, "{status}");
    assert_eq!(status["buffered"], 20, "{status}");
    assert!(status["last_error"].as_str().is_some(), "{status}");
    assert_eq!(server.metric("writ_decision_log_up"), 0.0);

    collector.set(Mode::Up);
    wait_until(
        "the buffered lines delivered",
        Duration::from_secs(30),
        || collector.ids().len() >= 23,
    );
    std::thread::sleep(Duration::from_millis(300));
    let ids = collector.ids();
    first.extend(during[..20].iter().cloned());
    assert_eq!(
        ids, first,
        "the first 20 lines of the outage, in order, once each"
    );
    assert_eq!(server.metric(SENT), 23.0);
    assert_eq!(server.metric(DROPPED), 30.0);
    let status = shipping(&server);
    assert_eq!(status["healthy"], true, "{status}");
    assert_eq!(status["buffered"], 0, "{status}");
    assert_eq!(server.metric("writ_decision_log_up"), 1.0);
}

#[test]
fn a_failing_or_slow_collector_never_slows_decisions_and_gets_every_line_once() {
    let collector = Collector::start();
    let dir = Arc::new(TempDir::new("logship-flaky"));
    let server = best_effort(
        &collector,
        &dir,
        &[
            "--decision-log-batch",
            "4",
            "--decision-log-interval",
            "50ms",
        ],
    );
    collector.set(Mode::Failing);
    let mut ids: Vec<String> = (0..10).map(|_| decide(&server)).collect();
    wait_until("retries against the 500s", Duration::from_secs(10), || {
        collector.posts() >= 2 && server.metric(RETRIED) >= 4.0
    });
    assert!(collector.ids().is_empty());

    // Each POST now takes 1.5 s; decisions made while one is in flight
    // do not wait for it.
    let before = collector.posts();
    collector.set(Mode::Slow(Duration::from_millis(1500)));
    wait_until(
        "a POST to the slow collector",
        Duration::from_secs(15),
        || collector.posts() > before,
    );
    for _ in 0..10 {
        ids.push(decide(&server));
        std::thread::sleep(Duration::from_millis(30));
    }
    collector.set(Mode::Up);
    wait_until("every line delivered", Duration::from_secs(30), || {
        collector.ids().len() >= 20
    });
    std::thread::sleep(Duration::from_millis(300));
    let delivered = collector.ids();
    let unique: HashSet<&String> = delivered.iter().collect();
    assert_eq!(delivered.len(), 20, "no line twice: {delivered:?}");
    assert_eq!(unique, ids.iter().collect::<HashSet<_>>());
    assert_eq!(server.metric(SENT), 20.0);
    assert_eq!(server.metric(DROPPED), 0.0);
    assert!(server.metric(RETRIED) >= 4.0);
}

#[test]
fn a_required_log_fails_decisions_closed_while_the_collector_is_down() {
    let collector = Collector::start();
    let dir = Arc::new(TempDir::new("logship-required"));
    let url = collector.url();
    let server = Server::start(&["--decision-log-url", &url], &dir);
    // Required: the line is at the collector before the answer.
    let id = decide(&server);
    assert_eq!(collector.ids(), [id]);
    assert_eq!(server.get("/ready").status, 200);

    collector.set(Mode::Down);
    let reply = server.post("/v1/decide", &ci_deploy().to_string());
    reply.assert_error(503, "decision_log_unavailable");
    assert_eq!(reply.header("retry-after"), Some("1"));
    let reply = server.post("/access/v1/evaluation", &authzen_deploy().to_string());
    reply.assert_error(503, "decision_log_unavailable");
    assert_eq!(server.get("/ready").status, 503);
    assert_eq!(shipping(&server)["healthy"], false);
    assert!(server.metric(DROPPED) >= 2.0);

    collector.set(Mode::Up);
    wait_until("decisions answered again", Duration::from_secs(30), || {
        server.post("/v1/decide", &ci_deploy().to_string()).status == 200
    });
    assert_eq!(server.get("/ready").status, 200);
    let id = decide(&server);
    assert!(collector.ids().contains(&id));
    // Only answered decisions reached the collector.
    assert_eq!(server.metric(SENT) as usize, collector.ids().len());
}

#[test]
fn the_file_and_the_collector_both_get_every_line() {
    let collector = Collector::start();
    let dir = Arc::new(TempDir::new("logship-both"));
    let log = dir.file("decisions.jsonl");
    let (url, file) = (collector.url(), log.display().to_string());
    let mut server = Server::start(
        &[
            "--decision-log",
            &file,
            "--decision-log-url",
            &url,
            "--decision-log-required=false",
            "--decision-log-interval",
            "30s",
        ],
        &dir,
    );
    let ids: Vec<String> = (0..4).map(|_| decide(&server)).collect();
    // The interval is long: the lines wait in the buffer until shutdown
    // sends them.
    std::thread::sleep(Duration::from_millis(200));
    assert!(collector.ids().is_empty());
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(20)));
    assert_eq!(collector.ids(), ids);
    let written: Vec<String> = read_log(&log)
        .iter()
        .map(|l| l["decision_id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(written, ids);
}

#[test]
fn shutdown_with_the_collector_down_gives_up_on_the_buffer_within_its_bound() {
    let collector = Collector::start();
    collector.set(Mode::Down);
    let dir = Arc::new(TempDir::new("logship-close"));
    let mut server = best_effort(&collector, &dir, &["--decision-log-interval", "50ms"]);
    for _ in 0..5 {
        decide(&server);
    }
    wait_until("a failed attempt", Duration::from_secs(10), || {
        server.metric(RETRIED) > 0.0
    });
    let started = Instant::now();
    server.signal("TERM");
    // Shutdown tries for 5 s, then drops what is left, and exits.
    assert!(server.wait_exit(Duration::from_secs(20)));
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(4), "gave up after {took:?}");
    assert!(collector.ids().is_empty());
}

#[test]
fn bad_shipping_flags_are_refused() {
    for (args, flag) in [
        (
            vec!["--decision-log-url", "collector:8686"],
            "--decision-log-url",
        ),
        (
            vec![
                "--decision-log-url",
                "http://c/",
                "--decision-log-batch",
                "0",
            ],
            "--decision-log-batch",
        ),
        (
            vec![
                "--decision-log-url",
                "http://c/",
                "--decision-log-batch",
                "100",
                "--decision-log-buffer",
                "10",
            ],
            "--decision-log-buffer",
        ),
        (
            vec!["--decision-log-url", "http://c/", "--decision-log-sync"],
            "--decision-log-sync",
        ),
    ] {
        let (code, stderr) = start_refused(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

/// The fault: a collector down for a whole minute. A best-effort
/// replica answers every decision at once, buffers lines up to its bound
/// and counts the rest as dropped; a replica whose log is required fails
/// its decisions closed (at once, not after a wait); once the collector is
/// back, the buffered lines arrive, once each and in order, and the
/// counters add up to the lines written. About 60 s of wall time; it holds
/// no lock shared with the other tests, so they run beside it.
#[test]
fn a_collector_down_for_a_minute_buffers_to_the_bound_drops_the_rest_and_delivers_after() {
    const OUTAGE: Duration = Duration::from_secs(60);
    const BUFFER: usize = 100;
    let collector = Collector::start();
    let required_collector = Collector::start();
    let dir = Arc::new(TempDir::new("logship-minute"));
    let buffer = BUFFER.to_string();
    let server = best_effort(
        &collector,
        &dir,
        &[
            "--decision-log-batch",
            "10",
            "--decision-log-interval",
            "100ms",
            "--decision-log-buffer",
            &buffer,
        ],
    );
    let required_url = required_collector.url();
    let required = Server::start(&["--decision-log-url", &required_url], &dir);

    let mut written: Vec<String> = (0..5).map(|_| decide(&server)).collect();
    wait_until("5 lines at the collector", Duration::from_secs(10), || {
        collector.ids().len() == 5
    });
    assert_eq!(server.metric(SENT), 5.0);
    let answered_before = decide(&required);
    assert_eq!(required_collector.ids(), [answered_before]);

    collector.set(Mode::Down);
    required_collector.set(Mode::Down);
    let down_at = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut required_refused = 0;
    let mut checked_full = false;
    while down_at.elapsed() < OUTAGE {
        let started = Instant::now();
        written.push(decide(&server));
        slowest = slowest.max(started.elapsed());
        let during = written.len() - 5;
        if during % 20 == 0 {
            // The required replica refuses, at once, what it cannot log.
            let started = Instant::now();
            let reply = required.post("/v1/decide", &ci_deploy().to_string());
            let took = started.elapsed();
            reply.assert_error(503, "decision_log_unavailable");
            assert!(
                took < Duration::from_secs(6),
                "a required decision took {took:?}"
            );
            required_refused += 1;
        }
        if during == BUFFER + 40 {
            // Well past the bound: the buffer is full, the rest dropped.
            let status = shipping(&server);
            assert_eq!(status["healthy"], false, "{status}");
            assert_eq!(status["buffered"], BUFFER, "{status}");
            assert!(status["last_error"].as_str().is_some(), "{status}");
            assert_eq!(
                server.wait_metric(DROPPED, 40.0, Duration::from_secs(5)),
                40.0
            );
            assert_eq!(server.metric("writ_decision_log_up"), 0.0);
            assert_eq!(server.get("/ready").status, 200, "best effort stays ready");
            assert_eq!(required.get("/ready").status, 503);
            checked_full = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let during = written.len() - 5;
    assert!(checked_full, "only {during} decisions in the outage");
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    assert!(required_refused >= 3, "{required_refused}");
    // Nothing reached either collector while it was down.
    assert_eq!(collector.ids().len(), 5);
    assert_eq!(required_collector.ids().len(), 1);
    let dropped = (during - BUFFER) as f64;
    assert_eq!(
        server.wait_metric(DROPPED, dropped, Duration::from_secs(5)),
        dropped
    );
    let retried = server.metric(RETRIED);
    assert!(retried >= 10.0, "{retried}: a minute of failed attempts");

    collector.set(Mode::Up);
    required_collector.set(Mode::Up);
    wait_until(
        "the buffered lines delivered",
        Duration::from_secs(30),
        || collector.ids().len() >= 5 + BUFFER,
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        collector.ids(),
        written[..5 + BUFFER],
        "the first {BUFFER} lines of the outage, in order, once each"
    );
    let (sent, dropped_now) = (server.metric(SENT), server.metric(DROPPED));
    assert_eq!(sent, (5 + BUFFER) as f64);
    assert_eq!(dropped_now, dropped);
    assert_eq!(
        sent + dropped_now,
        written.len() as f64,
        "every line written is sent or dropped"
    );
    // Retries count attempts, not lines: unchanged once the collector took them.
    assert!(server.metric(RETRIED) >= retried);
    let status = shipping(&server);
    assert_eq!(status["healthy"], true, "{status}");
    assert_eq!(status["buffered"], 0, "{status}");

    wait_until(
        "required decisions answered again",
        Duration::from_secs(30),
        || required.post("/v1/decide", &ci_deploy().to_string()).status == 200,
    );
    assert_eq!(required.get("/ready").status, 200);
    let id = decide(&required);
    assert!(required_collector.ids().contains(&id));
    assert_eq!(
        required.metric(SENT) as usize,
        required_collector.ids().len(),
        "only answered decisions reached the collector"
    );
}
