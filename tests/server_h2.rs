//! `writ serve` over HTTP/2 with prior knowledge (cleartext): the real
//! binary, spoken to with hand-written frames, answers as it does over
//! HTTP/1.1 on the same port, with several requests in flight on one
//! connection.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::server::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// An HPACK literal without indexing whose name is in the static table
/// (index under 15, or 15 and more: a 4-bit prefix), value under 127 bytes.
fn literal(out: &mut Vec<u8>, name_index: u8, value: &[u8]) {
    if name_index < 15 {
        out.push(name_index);
    } else {
        out.push(0x0f);
        out.push(name_index - 15);
    }
    assert!(value.len() < 127);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

/// `POST path` with a JSON body, as stream `id`.
fn post(out: &mut Vec<u8>, id: u32, path: &str, body: &[u8]) {
    let mut head = vec![0x83, 0x86]; // :method POST, :scheme http
    literal(&mut head, 4, path.as_bytes()); // :path
    literal(&mut head, 1, b"127.0.0.1"); // :authority
    literal(&mut head, 31, b"application/json"); // content-type
    literal(&mut head, 28, body.len().to_string().as_bytes()); // content-length
    frame(out, HEADERS, END_HEADERS, id, &head);
    frame(out, DATA, END_STREAM, id, body);
}

/// One answer: the first byte of its header block (an HPACK static index
/// for the common statuses) and its body.
#[derive(Debug, Default)]
struct Answer {
    status_byte: u8,
    body: Vec<u8>,
    ended: bool,
}

/// Sends `requests` (path, body) at once on one HTTP/2 connection, and
/// reads every answer.
fn h2_exchange(port: u16, requests: &[(&str, &[u8])]) -> Vec<Answer> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut out = PREFACE.to_vec();
    frame(&mut out, SETTINGS, 0, 0, &[]);
    for (index, (path, body)) in requests.iter().enumerate() {
        post(&mut out, 1 + 2 * index as u32, path, body);
    }
    // One write for every request: they are in flight together.
    stream.write_all(&out).expect("send");
    let mut answers: HashMap<u32, Answer> = HashMap::new();
    let mut input = Vec::new();
    let mut buffer = [0u8; 1 << 16];
    let mut acked = false;
    while answers.values().filter(|a| a.ended).count() < requests.len() {
        let read = stream.read(&mut buffer).expect("read an HTTP/2 frame");
        assert!(read > 0, "the server closed the connection: {answers:?}");
        input.extend_from_slice(&buffer[..read]);
        while input.len() >= 9 {
            let len = u32::from_be_bytes([0, input[0], input[1], input[2]]) as usize;
            if input.len() < 9 + len {
                break;
            }
            let (kind, flags) = (input[3], input[4]);
            let id = u32::from_be_bytes([input[5], input[6], input[7], input[8]]) & 0x7fff_ffff;
            let payload = input[9..9 + len].to_vec();
            input.drain(..9 + len);
            assert_ne!(kind, GOAWAY, "the server went away: {payload:?}");
            match kind {
                SETTINGS if flags & 1 == 0 && !acked => {
                    let mut ack = Vec::new();
                    frame(&mut ack, SETTINGS, 1, 0, &[]);
                    stream.write_all(&ack).expect("ack");
                    acked = true;
                }
                HEADERS => {
                    assert!(flags & 0x28 == 0, "no padding or priority expected");
                    let answer = answers.entry(id).or_default();
                    answer.status_byte = payload[0];
                    answer.ended |= flags & END_STREAM != 0;
                }
                DATA => {
                    let answer = answers.entry(id).or_default();
                    answer.body.extend_from_slice(&payload);
                    answer.ended |= flags & END_STREAM != 0;
                }
                _ => {}
            }
        }
    }
    (0..requests.len())
        .map(|index| {
            answers
                .remove(&(1 + 2 * index as u32))
                .expect("an answer on each stream")
        })
        .collect()
}

/// A decision up to its `decision_id`, which is new for every decision.
fn without_id(body: &[u8]) -> &[u8] {
    let text = std::str::from_utf8(body).expect("UTF-8");
    let at = text.rfind(",\"decision_id\":\"").expect("a decision_id");
    &body[..at]
}

#[test]
fn http2_with_prior_knowledge_answers_as_http1_does() {
    let dir = Arc::new(TempDir::new("server-h2"));
    let server = Server::start(&[], &dir);
    let allow = std::fs::read(format!(
        "{}/examples/ci-deploy.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("examples/ci-deploy.json");
    let bad = br#"{"subject":{"id":"spiffe://prod.acme.io/ns/payments/sa/deployer","kind":"ci"},"action":"deploy","resource":{"id":"k8s://prod-eu/payments","kind":"cluster"},"requested":{"scope":["deploy:k8s://prod-eu/payments"],"ttl":0}}"#;
    let over_http1 = server.post("/v1/decide", std::str::from_utf8(&allow).expect("UTF-8"));
    assert_eq!(over_http1.status, 200);
    let error_http1 = server.post("/v1/decide", std::str::from_utf8(bad).expect("UTF-8"));
    error_http1.assert_error(400, "invalid_request");

    let answers = h2_exchange(
        server.port,
        &[
            ("/v1/decide", &allow),
            ("/v1/decide", bad),
            ("/v1/decide", &allow),
            ("/health", b"{}"),
        ],
    );
    // :status 200 and 400 are HPACK static entries 8 and 12.
    assert_eq!(answers[0].status_byte, 0x88, "{answers:?}");
    assert_eq!(answers[1].status_byte, 0x8c, "{answers:?}");
    assert_eq!(answers[2].status_byte, 0x88, "{answers:?}");
    assert!(answers[0].body.starts_with(b"{\"decision\":\"allow\","));
    assert_eq!(
        without_id(&answers[0].body),
        without_id(over_http1.body.as_bytes())
    );
    assert_eq!(
        without_id(&answers[2].body),
        without_id(over_http1.body.as_bytes())
    );
    assert_ne!(
        answers[0].body, answers[2].body,
        "each decision has its own id"
    );
    assert_eq!(answers[1].body, error_http1.body.as_bytes());
    // `/health` is GET only: a POST is refused with JSON, as over HTTP/1.1.
    assert!(
        answers[3]
            .body
            .starts_with(b"{\"error\":{\"code\":\"method_not_allowed\""),
        "{:?}",
        String::from_utf8_lossy(&answers[3].body)
    );
    // The HTTP/1.1 allow and the two over HTTP/2.
    assert_eq!(
        server.metric("writ_decisions_total{outcome=\"allow\"}"),
        3.0
    );
}
