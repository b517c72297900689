//! An open-loop HTTP/1.1 load generator with no dependencies: requests are
//! due at a fixed rate whatever the server does, and each one's latency is
//! measured from the moment it was due, not from when a connection was free
//! to send it, so a server that stalls is charged for every request that
//! waited behind the stall (no coordinated omission, as in wrk2).
//!
//! C keep-alive connections, one thread each, take the next due request in
//! turn; a request is sent at its due time or, when every connection is
//! still busy, as soon as one frees up (and its latency includes the wait).
//! The body is a template: `@SUBJECT@` is replaced by a subject id, a new
//! one for every request (SUBJECTS 0) or one of SUBJECTS in turn.
//!
//!     rustc --edition 2021 -O -o /tmp/openloop scripts/openloop.rs
//!     /tmp/openloop PORT PATH TEMPLATE RATE SECONDS CONNECTIONS SUBJECTS RUN
//!
//! TEMPLATE may instead be a mix, `FILE=EXPECT[,FILE=EXPECT...]`: request
//! *i* sends the body of the (*i* mod n)th file (its `@SUBJECT@`, if any,
//! replaced as above), and every answer is checked against its EXPECT:
//! `allow` or `deny` (status 200 and a body that starts with
//! `{"decision":"allow"` or `{"decision":"deny"` and ends with the
//! `"decision_id"` member), or a status such as `400` (that status and a
//! body that starts with `{"error":{"code":"`). Answers that differ are
//! counted as `wrong` (the first few printed on stderr), and the exit
//! status is 1 when there is any.
//!
//! Prints one line: requests sent and their answers by status, the rate
//! achieved, latency percentiles from the due time, and how many requests
//! were sent more than 1 ms after they were due (when that is large, the
//! connections or the generator, not only the server, were the limit).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: openloop PORT PATH TEMPLATE RATE SECONDS CONNECTIONS SUBJECTS RUN";

fn arg<T: std::str::FromStr>(args: &[String], index: usize, name: &str) -> T {
    match args.get(index).and_then(|a| a.parse().ok()) {
        Some(value) => value,
        None => {
            eprintln!("{USAGE} ({name} missing or not a number)");
            std::process::exit(2);
        }
    }
}

/// What an answer must be, in a mix.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    /// No check beyond the status that is counted.
    Any,
    /// 200 with a decision of this effect.
    Decision(&'static str),
    /// This status, with a JSON error body.
    Error(u16),
}

impl Expect {
    fn parse(text: &str) -> Option<Expect> {
        match text {
            "allow" => Some(Expect::Decision("allow")),
            "deny" => Some(Expect::Decision("deny")),
            code => code.parse().ok().map(Expect::Error),
        }
    }

    /// True when an answer of `status` with `body` is what was expected.
    fn holds(self, status: u16, body: &[u8]) -> bool {
        match self {
            Expect::Any => true,
            Expect::Decision(effect) => {
                let head = format!("{{\"decision\":\"{effect}\",");
                status == 200
                    && body.starts_with(head.as_bytes())
                    && body.ends_with(b"\"}")
                    && find(body, b",\"decision_id\":\"").is_some()
            }
            Expect::Error(code) => {
                status == code && body.starts_with(b"{\"error\":{\"code\":\"") && body.ends_with(b"}")
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends `request` and reads one answer with a Content-Length body;
/// returns its status (0 when the connection failed) and where its body
/// is in `buffer`.
fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buffer: &mut Vec<u8>,
) -> (u16, std::ops::Range<usize>) {
    let failed = (0, 0..0);
    if stream.write_all(request).is_err() {
        return failed;
    }
    let mut have = 0;
    loop {
        if have == buffer.len() {
            buffer.resize(buffer.len() * 2, 0);
        }
        let read = match stream.read(&mut buffer[have..]) {
            Ok(0) | Err(_) => return failed,
            Ok(read) => read,
        };
        have += read;
        let Some(end) = buffer[..have].windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buffer.len() < end + 4 + length {
            buffer.resize(end + 4 + length, 0);
        }
        while have < end + 4 + length {
            match stream.read(&mut buffer[have..]) {
                Ok(0) | Err(_) => return failed,
                Ok(read) => have += read,
            }
        }
        let status = head
            .get(9..12)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        return (status, end + 4..end + 4 + length);
    }
}

struct Sample {
    latency: Duration,
    late: bool,
    status: u16,
    /// The answer was not what the mix expected.
    wrong: bool,
}

/// The bodies to send, in turn, and what each must be answered with.
fn read_mix(spec: &str) -> Vec<(String, Expect)> {
    let read = |file: &str| {
        std::fs::read_to_string(file).unwrap_or_else(|error| {
            eprintln!("openloop: cannot read `{file}`: {error}");
            std::process::exit(2);
        })
    };
    if !spec.contains('=') {
        let text = read(spec);
        if !text.contains("@SUBJECT@") {
            eprintln!("openloop: `{spec}` has no @SUBJECT@");
            std::process::exit(2);
        }
        return vec![(text, Expect::Any)];
    }
    spec.split(',')
        .map(|part| {
            let Some((file, expect)) = part.rsplit_once('=') else {
                eprintln!("openloop: `{part}` is not FILE=EXPECT");
                std::process::exit(2);
            };
            let Some(expect) = Expect::parse(expect) else {
                eprintln!("openloop: `{expect}` is not allow, deny or a status");
                std::process::exit(2);
            };
            (read(file), expect)
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = arg(&args, 1, "PORT");
    let path: String = arg(&args, 2, "PATH");
    let template_file: String = arg(&args, 3, "TEMPLATE");
    let rate: f64 = arg(&args, 4, "RATE");
    let seconds: f64 = arg(&args, 5, "SECONDS");
    let connections: usize = arg(&args, 6, "CONNECTIONS");
    let subjects: u64 = arg(&args, 7, "SUBJECTS");
    let run: String = arg(&args, 8, "RUN");
    let mix = read_mix(&template_file);
    let total = (rate * seconds) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let next = Arc::new(AtomicU64::new(0));
    let mix = Arc::new(mix);
    let reported = Arc::new(AtomicU64::new(0));
    // Every connection opens before the clock starts.
    let streams: Vec<TcpStream> = (0..connections)
        .map(|_| {
            let stream = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|error| {
                eprintln!("openloop: cannot connect to 127.0.0.1:{port}: {error}");
                std::process::exit(1);
            });
            let _ = stream.set_nodelay(true);
            stream
        })
        .collect();
    let start = Instant::now() + Duration::from_millis(20);
    let workers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            let next = next.clone();
            let mix = mix.clone();
            let reported = reported.clone();
            let path = path.clone();
            let run = run.clone();
            std::thread::spawn(move || {
                let mut buffer = vec![0u8; 1 << 16];
                let mut samples = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let due = start + interval.mul_f64(i as f64);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let sent = Instant::now();
                    let who = if subjects == 0 {
                        format!("spiffe://load.writ/{run}/{i}")
                    } else {
                        format!("spiffe://load.writ/{run}/s{}", i % subjects)
                    };
                    let (template, expect) = &mix[(i % mix.len() as u64) as usize];
                    let body = template.replace("@SUBJECT@", &who);
                    let request = format!(
                        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let (status, answer) = exchange(&mut stream, request.as_bytes(), &mut buffer);
                    let latency = Instant::now().saturating_duration_since(due);
                    let wrong = !expect.holds(status, &buffer[answer.clone()]);
                    if wrong && reported.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!(
                            "openloop: request {i}: unexpected answer {status}: {}",
                            String::from_utf8_lossy(&buffer[answer.start..answer.end.min(answer.start + 300)])
                        );
                    }
                    samples.push(Sample {
                        latency,
                        late: sent.saturating_duration_since(due) > Duration::from_millis(1),
                        status,
                        wrong,
                    });
                    if status == 0 {
                        // The connection is gone: the rest of this
                        // connection's share is taken by the others.
                        break;
                    }
                }
                samples
            })
        })
        .collect();
    let mut samples: Vec<Sample> = Vec::new();
    for worker in workers {
        match worker.join() {
            Ok(mine) => samples.extend(mine),
            Err(_) => {
                eprintln!("openloop: a connection thread failed");
                std::process::exit(1);
            }
        }
    }
    let took = start.elapsed();
    if samples.is_empty() {
        eprintln!("openloop: no request was answered");
        std::process::exit(1);
    }
    let mut statuses: Vec<(u16, usize)> = Vec::new();
    for sample in &samples {
        match statuses.iter_mut().find(|(s, _)| *s == sample.status) {
            Some((_, n)) => *n += 1,
            None => statuses.push((sample.status, 1)),
        }
    }
    statuses.sort_unstable();
    let late = samples.iter().filter(|s| s.late).count();
    let wrong = samples.iter().filter(|s| s.wrong).count();
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    latencies.sort_unstable();
    let quantile = |q: f64| {
        let index = ((latencies.len() as f64 * q) as usize).min(latencies.len() - 1);
        latencies[index].as_secs_f64() * 1e3
    };
    let statuses: Vec<String> = statuses
        .iter()
        .map(|(s, n)| format!("{s}: {n}"))
        .collect();
    println!(
        "{} requests in {:.2} s ({:.0}/s offered {rate:.0}/s; {}; wrong: {wrong}); from due time: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms; sent >1 ms late: {late}",
        latencies.len(),
        took.as_secs_f64(),
        latencies.len() as f64 / took.as_secs_f64(),
        statuses.join(", "),
        quantile(0.5),
        quantile(0.9),
        quantile(0.99),
        quantile(0.999),
        latencies[latencies.len() - 1].as_secs_f64() * 1e3,
    );
    if wrong > 0 {
        std::process::exit(1);
    }
}
