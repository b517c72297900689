//! `writ serve` over HTTP/2 with prior knowledge (cleartext): the real
//! binary, spoken to with hand-written frames, answers as it does over
//! HTTP/1.1 on the same port, with several requests in flight on one
//! connection.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::server::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// RST_STREAM's CANCEL error code.
const CANCEL: u32 = 0x8;

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

/// The HEADERS of `POST path` with a JSON body of `length` bytes (no
/// content-length when none), as stream `id`; the body follows.
fn post_head(out: &mut Vec<u8>, id: u32, path: &str, length: Option<usize>) {
    let mut head = vec![0x83, 0x86]; // :method POST, :scheme http
    literal(&mut head, 4, path.as_bytes()); // :path
    literal(&mut head, 1, b"127.0.0.1"); // :authority
    literal(&mut head, 31, b"application/json"); // content-type
    if let Some(length) = length {
        literal(&mut head, 28, length.to_string().as_bytes()); // content-length
    }
    frame(out, HEADERS, END_HEADERS, id, &head);
}

/// `POST path` with a JSON body, as stream `id`.
fn post(out: &mut Vec<u8>, id: u32, path: &str, body: &[u8]) {
    post_head(out, id, path, Some(body.len()));
    frame(out, DATA, END_STREAM, id, body);
}

/// `GET path`, as stream `id`.
fn get(out: &mut Vec<u8>, id: u32, path: &str) {
    let mut head = vec![0x82, 0x86]; // :method GET, :scheme http
    literal(&mut head, 4, path.as_bytes()); // :path
    literal(&mut head, 1, b"127.0.0.1"); // :authority
    frame(out, HEADERS, END_HEADERS | END_STREAM, id, &head);
}

/// The `:status` a response header block starts with: an HPACK static
/// entry, or a literal with the `:status` name (index 8) whose value is
/// plain or Huffman-coded digits.
fn status(block: &[u8]) -> u16 {
    // The client allows no dynamic table ([`Client::connect`]): skip the
    // table size updates (to zero) that say so.
    let skip = block.iter().take_while(|byte| **byte == 0x20).count();
    let block = &block[skip..];
    match block.first() {
        Some(0x88) => return 200,
        Some(0x89) => return 204,
        Some(0x8a) => return 206,
        Some(0x8b) => return 304,
        Some(0x8c) => return 400,
        Some(0x8d) => return 404,
        Some(0x8e) => return 500,
        _ => {}
    }
    let first = block[0];
    assert!(
        first == 0x48 || first == 0x08 || first == 0x18,
        "a :status literal expected: {block:?}"
    );
    let length = (block[1] & 0x7f) as usize;
    let value = &block[2..2 + length];
    let digits = if block[1] & 0x80 == 0 {
        String::from_utf8(value.to_vec()).expect("ASCII digits")
    } else {
        // Huffman (RFC 7541, appendix B): '0' to '2' are the 5-bit codes
        // 0 to 2, '3' to '9' the 6-bit codes 0x19 to 0x1f.
        let bit = |at: usize| (value[at / 8] >> (7 - at % 8)) & 1;
        let mut at = 0;
        let mut digits = String::new();
        while digits.len() < 3 {
            let mut code = 0u8;
            for _ in 0..5 {
                code = code << 1 | bit(at);
                at += 1;
            }
            if code > 2 {
                code = code << 1 | bit(at);
                at += 1;
                assert!((0x19..=0x1f).contains(&code), "not a digit: {block:?}");
                code = code - 0x19 + 3;
            }
            digits.push(char::from(b'0' + code));
        }
        digits
    };
    digits.parse().expect("a three-digit status")
}

/// One answer: its status and body.
#[derive(Debug, Default)]
struct Answer {
    status: u16,
    body: Vec<u8>,
    ended: bool,
}

/// A minimal HTTP/2 client over one connection: writes frames as given,
/// reads the answers on every stream, acknowledges SETTINGS and PINGs. It
/// sets the HPACK dynamic table to zero, so every header the server sends
/// is a static entry or a literal.
struct Client {
    stream: TcpStream,
    input: Vec<u8>,
    answers: HashMap<u32, Answer>,
    /// Streams in the order their answers ended.
    ended: Vec<u32>,
    /// RST_STREAMs the server sent, by stream.
    resets: HashMap<u32, u32>,
    /// The last GOAWAY's last stream id and error code.
    goaway: Option<(u32, u32)>,
    closed: bool,
}

impl Client {
    /// Connects and opens: the preface, SETTINGS with no dynamic table
    /// (`SETTINGS_HEADER_TABLE_SIZE` 0), and 16 MiB more of connection
    /// window so that many answers can come at once.
    fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let mut client = Client {
            stream,
            input: Vec::new(),
            answers: HashMap::new(),
            ended: Vec::new(),
            resets: HashMap::new(),
            goaway: None,
            closed: false,
        };
        let mut out = PREFACE.to_vec();
        frame(&mut out, SETTINGS, 0, 0, &[0, 1, 0, 0, 0, 0]);
        frame(&mut out, WINDOW_UPDATE, 0, 0, &(16u32 << 20).to_be_bytes());
        client.send(&out);
        client
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads until `done` holds (true) or `within` passes (false).
    fn read_until(&mut self, within: Duration, done: impl Fn(&Client) -> bool) -> bool {
        let deadline = Instant::now() + within;
        let mut buffer = [0u8; 1 << 16];
        while !done(self) {
            if Instant::now() >= deadline || self.closed {
                return false;
            }
            match self.stream.read(&mut buffer) {
                Ok(0) => self.closed = true,
                Ok(read) => {
                    self.input.extend_from_slice(&buffer[..read]);
                    self.frames();
                }
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => self.closed = true,
            }
        }
        true
    }

    /// Reads until every stream of `ids` has its whole answer.
    fn answers(&mut self, ids: &[u32], within: Duration) {
        let all = self.read_until(within, |client| {
            ids.iter()
                .all(|id| client.answers.get(id).is_some_and(|answer| answer.ended))
        });
        assert!(
            all,
            "not every stream of {ids:?} was answered within {within:?}: {:?}, resets {:?}, goaway {:?}",
            self.ended, self.resets, self.goaway
        );
    }

    /// Takes in the whole frames read so far.
    fn frames(&mut self) {
        while self.input.len() >= 9 {
            let input = &self.input;
            let len = u32::from_be_bytes([0, input[0], input[1], input[2]]) as usize;
            if input.len() < 9 + len {
                break;
            }
            let (kind, flags) = (input[3], input[4]);
            let id = u32::from_be_bytes([input[5], input[6], input[7], input[8]]) & 0x7fff_ffff;
            let payload = input[9..9 + len].to_vec();
            self.input.drain(..9 + len);
            let word = |at: usize| {
                u32::from_be_bytes([
                    payload[at],
                    payload[at + 1],
                    payload[at + 2],
                    payload[at + 3],
                ])
            };
            match kind {
                SETTINGS if flags & 1 == 0 => {
                    let mut ack = Vec::new();
                    frame(&mut ack, SETTINGS, 1, 0, &[]);
                    self.send(&ack);
                }
                PING if flags & 1 == 0 => {
                    let mut ack = Vec::new();
                    frame(&mut ack, PING, 1, 0, &payload);
                    self.send(&ack);
                }
                GOAWAY => self.goaway = Some((word(0) & 0x7fff_ffff, word(4))),
                RST_STREAM => {
                    self.resets.insert(id, word(0));
                }
                HEADERS => {
                    assert!(flags & 0x28 == 0, "no padding or priority expected");
                    let answer = self.answers.entry(id).or_default();
                    answer.status = status(&payload);
                    if flags & END_STREAM != 0 {
                        answer.ended = true;
                        self.ended.push(id);
                    }
                }
                DATA => {
                    let answer = self.answers.entry(id).or_default();
                    answer.body.extend_from_slice(&payload);
                    if flags & END_STREAM != 0 {
                        answer.ended = true;
                        self.ended.push(id);
                    }
                }
                _ => {}
            }
        }
    }

    /// The answer on stream `id`.
    fn answer(&self, id: u32) -> &Answer {
        self.answers.get(&id).expect("an answer on the stream")
    }
}

/// Sends `requests` (path, body) at once on one HTTP/2 connection, and
/// reads every answer.
fn h2_exchange(port: u16, requests: &[(&str, &[u8])]) -> Vec<Answer> {
    let mut client = Client::connect(port);
    let mut out = Vec::new();
    for (index, (path, body)) in requests.iter().enumerate() {
        post(&mut out, 1 + 2 * index as u32, path, body);
    }
    // One write for every request: they are in flight together.
    client.send(&out);
    let ids: Vec<u32> = (0..requests.len())
        .map(|index| 1 + 2 * index as u32)
        .collect();
    client.answers(&ids, Duration::from_secs(10));
    assert_eq!(client.goaway, None, "the server went away");
    ids.iter()
        .map(|id| client.answers.remove(id).expect("an answer on each stream"))
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
    assert_eq!(answers[0].status, 200, "{answers:?}");
    assert_eq!(answers[1].status, 400, "{answers:?}");
    assert_eq!(answers[2].status, 200, "{answers:?}");
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

fn ci_deploy_bytes() -> Vec<u8> {
    std::fs::read(format!(
        "{}/examples/ci-deploy.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("examples/ci-deploy.json")
}

/// A request the schema refuses: `ttl` 0.
const BAD: &[u8] = br#"{"subject":{"id":"spiffe://prod.acme.io/ns/payments/sa/deployer","kind":"ci"},"action":"deploy","resource":{"id":"k8s://prod-eu/payments","kind":"cluster"},"requested":{"scope":["deploy:k8s://prod-eu/payments"],"ttl":0}}"#;

/// Whether `body` is the allow answer of `examples/ci-deploy.json`, as
/// HTTP/1.1 gave it (`expected`), up to the decision id.
fn same_decision(body: &[u8], expected: &str) -> bool {
    body.starts_with(b"{\"decision\":\"allow\",")
        && without_id(body) == without_id(expected.as_bytes())
}

/// A hundred requests in flight on one connection, allows and errors
/// interleaved, sent with one write: every stream gets its own right
/// answer, in whatever order they come.
#[test]
fn many_streams_on_one_connection_are_all_answered_right() {
    let dir = Arc::new(TempDir::new("server-h2-many"));
    let server = Server::start(&[], &dir);
    let allow = ci_deploy_bytes();
    let over_http1 = server.post("/v1/decide", std::str::from_utf8(&allow).expect("UTF-8"));
    assert_eq!(over_http1.status, 200);
    let error_http1 = server.post("/v1/decide", std::str::from_utf8(BAD).expect("UTF-8"));
    error_http1.assert_error(400, "invalid_request");

    let mut client = Client::connect(server.port);
    let ids: Vec<u32> = (0..100).map(|index| 1 + 2 * index).collect();
    let mut out = Vec::new();
    for &id in &ids {
        let body = if id % 3 == 0 { BAD } else { &allow[..] };
        post(&mut out, id, "/v1/decide", body);
    }
    client.send(&out);
    client.answers(&ids, Duration::from_secs(20));
    assert_eq!(client.goaway, None);
    assert!(client.resets.is_empty(), "{:?}", client.resets);
    let mut decision_ids = std::collections::HashSet::new();
    for &id in &ids {
        let answer = client.answer(id);
        if id % 3 == 0 {
            assert_eq!(answer.status, 400, "stream {id}");
            assert_eq!(answer.body, error_http1.body.as_bytes(), "stream {id}");
        } else {
            assert_eq!(answer.status, 200, "stream {id}");
            assert!(
                same_decision(&answer.body, &over_http1.body),
                "stream {id}: {}",
                String::from_utf8_lossy(&answer.body)
            );
            assert!(decision_ids.insert(answer.body.clone()), "stream {id}");
        }
    }
    assert_eq!(client.ended.len(), ids.len());
    // 67 allows here, one over HTTP/1.1.
    assert_eq!(
        server.metric("writ_decisions_total{outcome=\"allow\"}"),
        68.0
    );
}

/// A body over `--max-body` gets the same JSON 413 as over HTTP/1.1,
/// whether its content-length says so or only its bytes do, and the other
/// streams on the connection are answered as usual.
#[test]
fn a_body_over_the_limit_is_refused_and_the_other_streams_succeed() {
    let dir = Arc::new(TempDir::new("server-h2-limit"));
    let server = Server::start(&["--max-body", "2000"], &dir);
    let allow = ci_deploy_bytes();
    assert!(allow.len() < 2000);
    let mut large = allow.clone();
    large.pop();
    large.extend(std::iter::repeat_n(b' ', 3000));
    large.push(b'}');
    let over_http1 = server.post("/v1/decide", std::str::from_utf8(&allow).expect("UTF-8"));
    let too_large_http1 = server.post("/v1/decide", std::str::from_utf8(&large).expect("UTF-8"));
    too_large_http1.assert_error(413, "body_too_large");

    let mut client = Client::connect(server.port);
    let mut out = Vec::new();
    post(&mut out, 1, "/v1/decide", &allow);
    // Stream 3 says its length; stream 7 does not, and sends it in parts.
    post(&mut out, 3, "/v1/decide", &large);
    post(&mut out, 5, "/v1/decide", &allow);
    post_head(&mut out, 7, "/v1/decide", None);
    for (index, part) in large.chunks(1000).enumerate() {
        let last = (index + 1) * 1000 >= large.len();
        frame(&mut out, DATA, if last { END_STREAM } else { 0 }, 7, part);
    }
    post(&mut out, 9, "/v1/decide", &allow);
    client.send(&out);
    client.answers(&[1, 3, 5, 7, 9], Duration::from_secs(10));
    for id in [1, 5, 9] {
        assert_eq!(client.answer(id).status, 200, "stream {id}");
        assert!(same_decision(&client.answer(id).body, &over_http1.body));
    }
    for id in [3, 7] {
        assert_eq!(client.answer(id).status, 413, "stream {id}");
        assert_eq!(
            client.answer(id).body,
            too_large_http1.body.as_bytes(),
            "stream {id}"
        );
    }
    assert_eq!(client.goaway, None);
}

/// A long poll of the revocation feed waits on its stream while a decision
/// on the same connection is answered at once; the poll answers when its
/// wait is over.
#[test]
fn a_long_poll_does_not_hold_up_a_decision_on_the_same_connection() {
    let dir = Arc::new(TempDir::new("server-h2-poll"));
    let ledger = dir.file("writ.db");
    let server = Server::start(&["--ledger", &ledger.to_string_lossy()], &dir);
    let allow = ci_deploy_bytes();
    let mut client = Client::connect(server.port);
    let mut out = Vec::new();
    get(&mut out, 1, "/v1/revocations?after=0&wait=3s");
    client.send(&out);
    // The poll is waiting: nothing comes on its stream.
    assert!(
        !client.read_until(Duration::from_millis(500), |client| client
            .answers
            .contains_key(&1))
    );
    let asked = Instant::now();
    let mut out = Vec::new();
    post(&mut out, 3, "/v1/decide", &allow);
    client.send(&out);
    client.answers(&[3], Duration::from_secs(2));
    assert!(asked.elapsed() < Duration::from_secs(2));
    assert_eq!(client.answer(3).status, 200);
    assert!(client
        .answer(3)
        .body
        .starts_with(b"{\"decision\":\"allow\","));
    assert!(!client.answers.contains_key(&1), "the poll answered early");
    client.answers(&[1], Duration::from_secs(10));
    assert!(asked.elapsed() >= Duration::from_millis(2000));
    assert_eq!(client.answer(1).status, 200);
    assert_eq!(client.answer(1).body, br#"{"revocations":[],"next":"0"}"#);
    assert_eq!(client.ended, vec![3, 1]);
}

/// `SIGTERM` with streams in flight: the server says it is going away,
/// answers the streams it took (a long poll still waiting, a request whose
/// body is still coming), and then exits.
#[test]
fn shutdown_finishes_the_streams_in_flight() {
    let dir = Arc::new(TempDir::new("server-h2-shutdown"));
    let ledger = dir.file("writ.db");
    let mut server = Server::start(&["--ledger", &ledger.to_string_lossy()], &dir);
    let allow = ci_deploy_bytes();
    let mut client = Client::connect(server.port);
    let mut out = Vec::new();
    get(&mut out, 1, "/v1/revocations?after=0&wait=2s");
    post_head(&mut out, 3, "/v1/decide", Some(allow.len()));
    frame(&mut out, DATA, 0, 3, &allow[..100]);
    client.send(&out);
    // Both are in flight; then the signal.
    assert!(
        !client.read_until(Duration::from_millis(300), |client| !client
            .answers
            .is_empty())
    );
    server.signal("TERM");
    assert!(
        client.read_until(Duration::from_secs(5), |client| client.goaway.is_some()),
        "no GOAWAY after SIGTERM"
    );
    let mut out = Vec::new();
    frame(&mut out, DATA, END_STREAM, 3, &allow[100..]);
    client.send(&out);
    client.answers(&[1, 3], Duration::from_secs(10));
    assert_eq!(client.answer(1).status, 200);
    assert_eq!(client.answer(1).body, br#"{"revocations":[],"next":"0"}"#);
    assert_eq!(client.answer(3).status, 200);
    assert!(client
        .answer(3)
        .body
        .starts_with(b"{\"decision\":\"allow\","));
    let (last, code) = client.goaway.expect("a GOAWAY");
    assert_eq!(code, 0, "NO_ERROR");
    assert!(last >= 3, "the streams in flight were taken: {last}");
    assert!(
        client.read_until(Duration::from_secs(5), |client| client.closed),
        "the connection stays open after its streams"
    );
    assert!(
        server.wait_exit(Duration::from_secs(10)),
        "{}",
        server.stderr()
    );
    assert!(
        server.stderr().contains("writ: stopped"),
        "{}",
        server.stderr()
    );
}

/// A client that cancels a stream (RST_STREAM) in the middle of its body
/// hurts no other stream: those before and after are answered, and the
/// connection goes on serving.
#[test]
fn a_stream_reset_by_the_client_does_not_hurt_the_others() {
    let dir = Arc::new(TempDir::new("server-h2-reset"));
    let ledger = dir.file("writ.db");
    let server = Server::start(&["--ledger", &ledger.to_string_lossy()], &dir);
    let allow = ci_deploy_bytes();
    let mut client = Client::connect(server.port);
    let mut out = Vec::new();
    post_head(&mut out, 1, "/v1/decide", Some(allow.len()));
    frame(&mut out, DATA, 0, 1, &allow[..200]);
    get(&mut out, 3, "/v1/revocations?after=0&wait=30s");
    post(&mut out, 5, "/v1/decide", &allow);
    client.send(&out);
    client.answers(&[5], Duration::from_secs(5));
    let mut out = Vec::new();
    frame(&mut out, RST_STREAM, 0, 1, &CANCEL.to_be_bytes());
    frame(&mut out, RST_STREAM, 0, 3, &CANCEL.to_be_bytes());
    post(&mut out, 7, "/v1/decide", &allow);
    client.send(&out);
    client.answers(&[7], Duration::from_secs(5));
    // And later, on the same connection.
    std::thread::sleep(Duration::from_millis(200));
    let mut out = Vec::new();
    post(&mut out, 9, "/v1/decide", &allow);
    post(&mut out, 11, "/v1/decide", BAD);
    client.send(&out);
    client.answers(&[9, 11], Duration::from_secs(5));
    for id in [5, 7, 9] {
        assert_eq!(client.answer(id).status, 200, "stream {id}");
        assert!(client
            .answer(id)
            .body
            .starts_with(b"{\"decision\":\"allow\","));
    }
    assert_eq!(client.answer(11).status, 400);
    assert!(
        !client.answers.contains_key(&1),
        "a cancelled stream answered"
    );
    assert!(
        !client.answers.contains_key(&3),
        "a cancelled poll answered"
    );
    assert_eq!(client.goaway, None);
    assert_eq!(
        server.metric("writ_decisions_total{outcome=\"allow\"}"),
        3.0
    );
    // The server is still serving HTTP/1.1 too.
    assert_eq!(server.get("/health").status, 200);
}
