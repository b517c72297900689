//! A closed-loop HTTP/1.1 load generator with no dependencies, for quick
//! comparisons where wrk is not installed: C keep-alive connections, each
//! sending its next POST as soon as the previous answer is read, N requests
//! in all. Prints throughput and the p50 and p99 latency.
//!
//!     rustc --edition 2021 -O -o /tmp/closedloop scripts/closedloop.rs
//!     /tmp/closedloop PORT PATH BODY_FILE CONNECTIONS REQUESTS

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn arg<T: std::str::FromStr>(args: &[String], index: usize, name: &str) -> T {
    args.get(index)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("usage: closedloop PORT PATH BODY_FILE CONNECTIONS REQUESTS ({name})"))
}

/// Sends `request` and reads one answer with a Content-Length body;
/// returns whether it was a 200.
fn exchange(stream: &mut TcpStream, request: &[u8], buffer: &mut [u8]) -> bool {
    stream.write_all(request).expect("send");
    let mut have = 0;
    loop {
        let read = stream.read(&mut buffer[have..]).expect("receive");
        assert!(read > 0, "the server closed the connection");
        have += read;
        let Some(end) = buffer[..have].windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("a content-length");
        while have < end + 4 + length {
            let read = stream.read(&mut buffer[have..]).expect("receive");
            assert!(read > 0, "the server closed the connection");
            have += read;
        }
        return head.starts_with("http/1.1 200");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = arg(&args, 1, "PORT");
    let path: String = arg(&args, 2, "PATH");
    let body_file: String = arg(&args, 3, "BODY_FILE");
    let connections: usize = arg(&args, 4, "CONNECTIONS");
    let total: usize = arg(&args, 5, "REQUESTS");
    let body = std::fs::read(&body_file).expect("read the body file");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let each = total / connections;
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let request = request.clone();
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let mut buffer = vec![0u8; 1 << 16];
                let mut latencies = Vec::with_capacity(each);
                let mut ok = 0;
                for _ in 0..each {
                    let sent = Instant::now();
                    ok += usize::from(exchange(&mut stream, &request, &mut buffer));
                    latencies.push(sent.elapsed());
                }
                (latencies, ok)
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::new();
    let mut ok = 0;
    for worker in workers {
        let (mine, good) = worker.join().expect("a worker");
        latencies.extend(mine);
        ok += good;
    }
    let took = started.elapsed();
    latencies.sort();
    let quantile = |q: f64| {
        let index = ((latencies.len() as f64 * q) as usize).min(latencies.len() - 1);
        latencies[index].as_secs_f64() * 1e3
    };
    println!(
        "{} requests ({ok} ok) in {:.2} s: {:.0}/s, p50 {:.3} ms, p99 {:.3} ms",
        latencies.len(),
        took.as_secs_f64(),
        latencies.len() as f64 / took.as_secs_f64(),
        quantile(0.5),
        quantile(0.99)
    );
}
