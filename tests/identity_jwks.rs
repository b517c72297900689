//! Keys over HTTP (docs/identity.md, "JWKS URLs"): a tiny HTTP server in
//! the test serves the JWKS of `tests/identity/`, and then rotates it,
//! goes down, turns slow or answers garbage. The last good keys are kept,
//! an unknown `kid` refetches at most once per interval, an issuer that
//! never had keys verifies nothing, and no token a key server did not
//! vouch for is ever allowed. The server's own behaviour (startup without
//! keys, `/metrics`) is tested on the real `writ serve`.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::server::{ci_deploy, free_port, Server, TempDir};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use writ::identity::Trust;
use writ::{Engine, Request};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/identity");
const ISSUER: &str = "https://issuer.test";
/// The least `jwks_refetch_interval`; the tests wait a little more.
const INTERVAL: Duration = Duration::from_millis(1100);

/// What the key server answers.
#[derive(Clone)]
enum Mode {
    /// 200 with this body.
    Serve(String),
    /// Close the connection without answering.
    Down,
    /// Wait this long before answering with the body.
    Slow(Duration, String),
    /// This status and body.
    Status(u16, String),
}

/// A JWKS server on a loopback port, one connection at a time.
struct KeyServer {
    port: u16,
    mode: Arc<Mutex<Mode>>,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl KeyServer {
    fn start(mode: Mode) -> KeyServer {
        KeyServer::on(TcpListener::bind("127.0.0.1:0").expect("bind"), mode)
    }

    fn on(listener: TcpListener, mode: Mode) -> KeyServer {
        let port = listener.local_addr().expect("addr").port();
        let mode = Arc::new(Mutex::new(mode));
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, h, s) = (mode.clone(), hits.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                h.fetch_add(1, Ordering::SeqCst);
                let mode = m.lock().expect("mode").clone();
                answer(stream, mode);
            }
        });
        KeyServer {
            port,
            mode,
            hits,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/jwks", self.port)
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn answer(mut stream: TcpStream, mode: Mode) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let (status, body) = match mode {
        Mode::Down => return,
        Mode::Serve(body) => (200, body),
        Mode::Slow(wait, body) => {
            std::thread::sleep(wait);
            (200, body)
        }
        Mode::Status(status, body) => (status, body),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn jwks(file: &str) -> String {
    std::fs::read_to_string(Path::new(DIR).join(file)).expect("jwks file")
}

fn trust_file(url: &str) -> Value {
    json!({
        "issuers": [{
            "issuer": ISSUER,
            "jwks_url": url,
            "jwks_timeout": "400ms",
            "jwks_refetch_interval": "1s",
            "algorithms": ["RS256", "ES256", "EdDSA"],
            "audiences": ["writ"],
            "kind": "ci",
            "auth": "oidc",
            "claims": {"repository": "repository"}
        }]
    })
}

fn trust(url: &str) -> Trust {
    Trust::from_json("trust.json", &trust_file(url).to_string(), Path::new(DIR))
        .expect("valid trust file")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn token(kid: &str, der: &str, at: i64) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let key = std::fs::read(Path::new(DIR).join(der)).expect("key");
    let claims = json!({
        "iss": ISSUER,
        "sub": "repo:acme/payments:ref:refs/heads/main",
        "aud": "writ",
        "iat": at - 10,
        "exp": at + 290,
        "repository": "acme/payments",
    });
    encode(&header, &claims, &EncodingKey::from_rsa_der(&key)).expect("sign")
}

fn old_token(at: i64) -> String {
    token("rsa-1", "rsa1.der", at)
}

fn new_token(at: i64) -> String {
    token("rsa-2", "rsa2.der", at)
}

fn request(token: &str) -> Request {
    let mut value = ci_deploy();
    value["subject"]["token"] = json!(token);
    Request::from_json(&value.to_string()).expect("request")
}

/// `Ok(())` when the token verifies, else the failure code; and that a
/// failure denies through `identity.attested` with the default pack.
fn check(trust: &Trust, token: &str, at: i64) -> Result<(), &'static str> {
    let mut req = request(token);
    let attestation = trust.apply(&mut req, at);
    let engine = Engine::default_pack(None).expect("pack");
    let decision = trust.decide(&engine, &request(token), at);
    match attestation.failure {
        None => {
            assert!(decision.is_allow(), "{:?}", decision.errors);
            Ok(())
        }
        Some(failure) => {
            assert!(!decision.is_allow(), "a refused token was allowed");
            assert!(decision.reasons.iter().any(|r| r == "identity.attested"));
            Err(failure.code())
        }
    }
}

#[test]
fn rotation_is_followed_and_the_old_key_is_dropped() {
    let server = KeyServer::start(Mode::Serve(jwks("jwks.json")));
    let trust = trust(&server.url());
    assert_eq!(server.hits(), 1, "fetched once when loaded");
    assert!(trust.key_problems().is_empty());
    let at = now();
    assert_eq!(check(&trust, &old_token(at), at), Ok(()));
    // The issuer rotates: rsa-1 gone, rsa-2 there.
    server.set(Mode::Serve(jwks("jwks-rotated.json")));
    std::thread::sleep(INTERVAL);
    assert_eq!(check(&trust, &new_token(at), at), Ok(()));
    assert_eq!(server.hits(), 2, "the unknown kid fetched again, once");
    // The old key is gone: its token fails, even though it was cached.
    assert_eq!(check(&trust, &old_token(at), at), Err("unknown_key"));
    let counts = trust.counts();
    assert_eq!(counts.jwks, vec![(ISSUER.to_owned(), 2, 0, 3)]);
}

#[test]
fn an_unknown_kid_refetches_at_most_once_per_interval() {
    let server = KeyServer::start(Mode::Serve(jwks("jwks.json")));
    let trust = trust(&server.url());
    let at = now();
    // Within the interval of the first fetch: no fetch at all.
    for _ in 0..5 {
        assert_eq!(check(&trust, &new_token(at), at), Err("unknown_key"));
    }
    assert_eq!(server.hits(), 1);
    std::thread::sleep(INTERVAL);
    for _ in 0..5 {
        assert_eq!(check(&trust, &new_token(at), at), Err("unknown_key"));
    }
    assert_eq!(server.hits(), 2, "one refetch for ten unknown kids");
}

#[test]
fn a_server_that_goes_down_leaves_the_last_keys() {
    let server = KeyServer::start(Mode::Serve(jwks("jwks.json")));
    let trust = trust(&server.url());
    let at = now();
    server.set(Mode::Down);
    std::thread::sleep(INTERVAL);
    // The refetch the unknown kid asks for fails; the known key still works.
    assert_eq!(check(&trust, &new_token(at), at), Err("unknown_key"));
    assert_eq!(server.hits(), 2);
    assert_eq!(check(&trust, &old_token(at), at), Ok(()));
    let counts = trust.counts();
    assert_eq!(counts.jwks[0].2, 1, "one failed fetch");
    assert_eq!(counts.jwks[0].3, 3, "the three keys kept");
}

#[test]
fn a_slow_server_times_out_and_leaves_the_last_keys() {
    let server = KeyServer::start(Mode::Serve(jwks("jwks.json")));
    let trust = trust(&server.url());
    let at = now();
    server.set(Mode::Slow(
        Duration::from_secs(3),
        jwks("jwks-rotated.json"),
    ));
    std::thread::sleep(INTERVAL);
    let started = Instant::now();
    assert_eq!(check(&trust, &new_token(at), at), Err("unknown_key"));
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "the 400ms timeout was not kept: {:?}",
        started.elapsed()
    );
    assert_eq!(check(&trust, &old_token(at), at), Ok(()));
    assert_eq!(trust.counts().jwks[0].2, 1);
}

#[test]
fn garbage_leaves_the_last_keys() {
    let server = KeyServer::start(Mode::Serve(jwks("jwks.json")));
    let trust = trust(&server.url());
    let at = now();
    let garbage = [
        Mode::Serve("<html>not a jwks</html>".to_owned()),
        Mode::Serve(r#"{"keys": []}"#.to_owned()),
        Mode::Serve(r#"{"keys": [{"kty": "oct", "kid": "rsa-2", "k": "c2VjcmV0"}]}"#.to_owned()),
        Mode::Status(500, jwks("jwks-rotated.json")),
        Mode::Serve("x".repeat(600 * 1024)),
    ];
    let count = garbage.len();
    for mode in garbage {
        server.set(mode);
        std::thread::sleep(INTERVAL);
        assert_eq!(check(&trust, &new_token(at), at), Err("unknown_key"));
        assert_eq!(check(&trust, &old_token(at), at), Ok(()));
    }
    assert_eq!(server.hits(), 1 + count);
    let counts = trust.counts();
    assert_eq!(counts.jwks[0].2 as usize, count);
    assert_eq!(counts.jwks[0].3, 3);
}

#[test]
fn first_start_without_keys_verifies_nothing_until_a_fetch_succeeds() {
    // Nothing listens on the port yet.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/jwks");
    let trust = trust(&url);
    let problems = trust.key_problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains(ISSUER), "{problems:?}");
    let at = now();
    for token in [old_token(at), new_token(at)] {
        assert_eq!(check(&trust, &token, at), Err("keys_unavailable"));
    }
    // The key server comes up on that port: after the interval, the next
    // token fetches and verifies.
    let server = KeyServer::on(
        TcpListener::bind(("127.0.0.1", port)).expect("bind the same port"),
        Mode::Serve(jwks("jwks.json")),
    );
    std::thread::sleep(INTERVAL);
    assert_eq!(check(&trust, &old_token(at), at), Ok(()));
    assert_eq!(server.hits(), 1);
    assert!(trust.key_problems().is_empty());
}

#[test]
fn key_locations_in_the_token_are_never_fetched() {
    // An attacker's key server holds rsa2 as `rsa-1`; the token points at it.
    let attacker = KeyServer::start(Mode::Serve(
        jwks("jwks-rotated.json").replace("rsa-2", "rsa-1"),
    ));
    let server = KeyServer::start(Mode::Serve(jwks("jwks.json")));
    let trust = trust(&server.url());
    let at = now();
    let claims = json!({"iss": ISSUER, "sub": "x", "aud": "writ", "iat": at, "exp": at + 60});
    let key =
        EncodingKey::from_rsa_der(&std::fs::read(Path::new(DIR).join("rsa2.der")).expect("key"));
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".to_owned());
    header.jku = Some(attacker.url());
    header.x5u = Some(attacker.url());
    let forged = encode(&header, &claims, &key).expect("sign");
    assert_eq!(check(&trust, &forged, at), Err("bad_signature"));
    // Without a kid the issuer's keys are ambiguous; the jku still is not read.
    header.kid = None;
    let forged = encode(&header, &claims, &key).expect("sign");
    assert_eq!(check(&trust, &forged, at), Err("unknown_key"));
    assert_eq!(
        attacker.hits(),
        0,
        "a key location in the token was fetched"
    );
}

#[test]
fn a_crit_header_is_refused() {
    let server = KeyServer::start(Mode::Serve(jwks("jwks.json")));
    let trust = trust(&server.url());
    let at = now();
    // Signed by the issuer's own key, with an extension writ does not know.
    let header = json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp-ext"], "exp-ext": 1});
    let claims = json!({"iss": ISSUER, "sub": "x", "aud": "writ", "iat": at, "exp": at + 60});
    let b64 = |v: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let input = format!("{}.{}", b64(&header), b64(&claims));
    let key =
        EncodingKey::from_rsa_der(&std::fs::read(Path::new(DIR).join("rsa1.der")).expect("key"));
    let signature =
        jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::RS256).expect("sign");
    let token = format!("{input}.{signature}");
    assert_eq!(check(&trust, &token, at), Err("malformed"));
    let mut req = request(&token);
    let failure = trust.apply(&mut req, at).failure.expect("refused");
    assert!(failure.detail().contains("crit"), "{failure}");
    // The same token without `crit` verifies: the key and signing are right.
    let plain = json!({"alg": "RS256", "kid": "rsa-1"});
    let input = format!("{}.{}", b64(&plain), b64(&claims));
    let signature =
        jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::RS256).expect("sign");
    assert_eq!(check(&trust, &format!("{input}.{signature}"), at), Ok(()));
}

#[test]
fn jwks_url_options_are_checked() {
    let cases = [
        (
            json!("http://issuer.example.com/jwks"),
            json!({}),
            "https://",
        ),
        (
            json!("http://127.0.0.1.evil.test/jwks"),
            json!({}),
            "https://",
        ),
        (
            json!("https://issuer.test/jwks"),
            json!({"jwks_timeout": "10ms"}),
            "jwks_timeout",
        ),
        (
            json!("https://issuer.test/jwks"),
            json!({"jwks_refetch_interval": "0s"}),
            "jwks_refetch_interval",
        ),
        (
            json!("https://issuer.test/jwks"),
            json!({"jwks_refresh": "soon"}),
            "jwks_refresh",
        ),
        (
            json!("https://issuer.test/jwks"),
            json!({"jwks_file": "jwks.json"}),
            "both",
        ),
    ];
    for (url, extra, needle) in cases {
        let mut file = trust_file("https://placeholder");
        file["issuers"][0]["jwks_url"] = url;
        for (k, v) in extra.as_object().expect("object") {
            file["issuers"][0][k] = v.clone();
        }
        // Options on a file source are refused too.
        let error =
            Trust::from_json("t.json", &file.to_string(), Path::new(DIR)).expect_err("refused");
        assert!(error.to_string().contains(needle), "{error} lacks {needle}");
    }
    let mut file = trust_file("https://placeholder");
    file["issuers"][0]
        .as_object_mut()
        .expect("object")
        .remove("jwks_url");
    file["issuers"][0]["jwks_file"] = json!("jwks.json");
    let error = Trust::from_json("t.json", &file.to_string(), Path::new(DIR)).expect_err("refused");
    assert!(error.to_string().contains("jwks_timeout"), "{error}");
}

/// The request of examples/ci-deploy.json with a token, as a body.
fn body(token: &str) -> String {
    let mut value = ci_deploy();
    value["subject"]["token"] = json!(token);
    value["environment"]
        .as_object_mut()
        .expect("environment")
        .remove("time");
    value.to_string()
}

fn write_trust(dir: &TempDir, url: &str) -> String {
    let path = dir.file("trust.json");
    std::fs::write(&path, trust_file(url).to_string()).expect("write trust file");
    path.display().to_string()
}

#[test]
fn serve_without_keys_denies_and_says_so() {
    let dir = Arc::new(TempDir::new("jwks-down"));
    let port = free_port();
    let trust = write_trust(&dir, &format!("http://127.0.0.1:{port}/jwks"));
    let server = Server::start(&["--trust", &trust], &dir);
    assert!(
        server.stderr().contains("has no keys yet"),
        "{}",
        server.stderr()
    );
    let at = now();
    for token in [old_token(at), new_token(at)] {
        let reply = server.post("/v1/decide", &body(&token));
        assert_eq!(reply.status, 200, "{}", reply.body);
        let decision = reply.json();
        assert_eq!(decision["decision"], "deny", "{decision}");
        assert!(decision["reasons"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("identity.attested"))));
        assert!(decision["errors"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("subject.token keys_unavailable")))));
    }
    let issuer = format!("issuer=\"{ISSUER}\"");
    assert_eq!(
        server.metric(&format!("writ_identity_jwks_keys{{{issuer}}}")),
        0.0
    );
    assert_eq!(
        server.metric(&format!(
            "writ_identity_verifications_total{{use=\"subject\",{issuer},outcome=\"keys_unavailable\"}}"
        )),
        2.0
    );
    assert!(
        server.metric(&format!(
            "writ_identity_jwks_fetch_failures_total{{{issuer}}}"
        )) >= 1.0
    );
}

#[test]
fn serve_follows_rotation_and_counts_it() {
    let dir = Arc::new(TempDir::new("jwks-rotate"));
    let keys = KeyServer::start(Mode::Serve(jwks("jwks.json")));
    let trust = write_trust(&dir, &keys.url());
    let server = Server::start(&["--trust", &trust], &dir);
    let at = now();
    let old = old_token(at);
    for _ in 0..3 {
        assert_eq!(
            server.post("/v1/decide", &body(&old)).json()["decision"],
            "allow"
        );
    }
    keys.set(Mode::Serve(jwks("jwks-rotated.json")));
    std::thread::sleep(INTERVAL);
    let reply = server.post("/v1/decide", &body(&new_token(at))).json();
    assert_eq!(reply["decision"], "allow", "{reply}");
    let reply = server.post("/v1/decide", &body(&old)).json();
    assert_eq!(reply["decision"], "deny", "{reply}");
    assert!(reply["errors"][0]["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("subject.token unknown_key")));
    let issuer = format!("issuer=\"{ISSUER}\"");
    let metric = |outcome: &str| {
        server.metric(&format!(
            "writ_identity_verifications_total{{use=\"subject\",{issuer},outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(metric("verified"), 4.0);
    assert_eq!(metric("unknown_key"), 1.0);
    assert_eq!(server.metric("writ_identity_token_cache_hits_total"), 2.0);
    assert_eq!(
        server.metric(&format!("writ_identity_jwks_fetches_total{{{issuer}}}")),
        2.0
    );
    assert_eq!(
        server.metric(&format!(
            "writ_identity_jwks_fetch_failures_total{{{issuer}}}"
        )),
        0.0
    );
    assert_eq!(
        server.metric(&format!("writ_identity_jwks_keys{{{issuer}}}")),
        3.0
    );
}

#[test]
fn an_algorithm_must_fit_the_kind_of_key_the_kid_names() {
    let server = KeyServer::start(Mode::Serve(jwks("jwks.json")));
    let trust = trust(&server.url());
    let at = now();
    let claims = json!({"iss": ISSUER, "sub": "x", "aud": "writ", "iat": at, "exp": at + 60});
    let key = |file: &str| std::fs::read(Path::new(DIR).join(file)).expect("key");
    let sign = |alg: Algorithm, kid: &str, encoding: &EncodingKey| {
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_owned());
        encode(&header, &claims, encoding).expect("sign")
    };
    let rsa = EncodingKey::from_rsa_der(&key("rsa1.der"));
    let ec = EncodingKey::from_ec_der(&key("ec.der"));
    let ed = EncodingKey::from_ed_der(&key("ed.der"));
    // An RSA signature under the EC key's kid, an ECDSA one under the
    // Ed25519 key's, an EdDSA one under the EC key's: refused, never tried.
    for token in [
        sign(Algorithm::RS256, "ec-1", &rsa),
        sign(Algorithm::ES256, "ed-1", &ec),
        sign(Algorithm::EdDSA, "ec-1", &ed),
    ] {
        assert_eq!(check(&trust, &token, at), Err("disallowed_algorithm"));
    }
    // Each under its own kid verifies.
    for token in [
        sign(Algorithm::ES256, "ec-1", &ec),
        sign(Algorithm::EdDSA, "ed-1", &ed),
    ] {
        assert_eq!(check(&trust, &token, at), Ok(()));
    }
}
