//! The revocation webhook on the real binary (docs/lifecycle.md, "The
//! revocation webhook"): every revocation on the ledger's feed is pushed to
//! a receiver as a Security Event Token, retried while the receiver is
//! down or failing, resumed by the next process from the ledger's cursor,
//! and passed over only when the receiver rejects it with 400.

mod common;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::grants::*;
use common::server::*;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;

const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
    /// The status it was answered with.
    status: u16,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A webhook receiver on a local port: answers each request with the next
/// scripted status (202 once the script is used up) and records it.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    fn start(script: &[u16]) -> Receiver {
        Receiver::start_on(TcpListener::bind("127.0.0.1:0").expect("bind"), script)
    }

    fn start_on(listener: TcpListener, script: &[u16]) -> Receiver {
        let port = listener.local_addr().expect("addr").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let (g, s) = (got.clone(), script.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some((path, headers, body)) = read_request(&mut stream) else {
                    continue;
                };
                let status = s.lock().expect("script").pop_front().unwrap_or(202);
                let answer = if status == 400 {
                    r#"{"err":"invalid_request","description":"test rejects it"}"#
                } else {
                    ""
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                g.lock().expect("got").push(Received {
                    path,
                    headers,
                    body,
                    status,
                });
            }
        });
        Receiver { port, got, script }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/caep", self.port)
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().expect("got").clone()
    }

    /// The bodies it acknowledged (2xx), in order.
    fn acknowledged(&self) -> Vec<Received> {
        self.got()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    fn then(&self, statuses: &[u16]) {
        self.script.lock().expect("script").extend(statuses);
    }
}

/// A request's path, headers and body.
type Parts = (String, Vec<(String, String)>, String);

fn read_request(stream: &mut std::net::TcpStream) -> Option<Parts> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().ok()?;
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((path, headers, String::from_utf8(body).ok()?))
}

/// Issues a grant and revokes it (`DELETE`: not minted); its id.
fn issue_and_revoke(server: &Server, name: &str) -> String {
    let reply = server.post("/v1/grants", &deploy_for(&unique_subject(name)).to_string());
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.json()["grant_id"]
        .as_str()
        .expect("grant_id")
        .to_owned();
    let revoked = request(
        server.port,
        "DELETE",
        &format!("/v1/grants/{id}"),
        None,
        &[],
    );
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    id
}

fn claims(set: &str) -> Value {
    // The raw Ed25519 key is the last 32 bytes of the SPKI the PEM holds.
    use base64::Engine as _;
    let pem =
        std::fs::read_to_string(format!("{ROOT}/tests/webhook/set-ed25519.pub.pem")).expect("key");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("base64");
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&der[der.len() - 32..]);
    let key = DecodingKey::from_ed_components(&x).expect("public key");
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    validation.validate_aud = false;
    decode::<Value>(set, &key, &validation)
        .unwrap_or_else(|e| panic!("the SET does not verify: {e}: {set}"))
        .claims
}

fn grant_of(claims: &Value) -> &str {
    claims["events"][SESSION_REVOKED]["writ"]["grant_id"]
        .as_str()
        .unwrap_or("")
}

/// A revocation reaches the receiver as one signed SET, after the
/// receiver's two failures, with what a broker needs to act on it.
#[test]
fn a_revocation_is_pushed_as_a_signed_set_and_retried_until_taken() {
    let scratch = Arc::new(TempDir::new("webhook-push"));
    let receiver = Receiver::start(&[503, 503]);
    let db = scratch.file("writ.db");
    let url = receiver.url();
    let server = Server::start_with_env(
        &[
            "--ledger",
            db.to_str().expect("path"),
            "--revocation-webhook",
            &url,
            "--webhook-key",
            "tests/webhook/set-ed25519.pem",
            "--webhook-issuer",
            "https://writ.test",
            "--webhook-max-backoff",
            "400ms",
        ],
        &[("WRIT_WEBHOOK_TOKEN", "s3cret")],
        &scratch,
    );
    let id = issue_and_revoke(&server, "push");
    wait_until("the SET acknowledged", Duration::from_secs(20), || {
        !receiver.acknowledged().is_empty()
    });
    let got = receiver.got();
    assert_eq!(
        got.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![503, 503, 202],
        "tried until taken, and not again after"
    );
    // Every try carried the same SET.
    assert!(got.iter().all(|r| r.body == got[2].body));
    let taken = &got[2];
    assert_eq!(taken.path, "/caep");
    assert_eq!(
        taken.header("content-type"),
        Some("application/secevent+jwt")
    );
    assert_eq!(taken.header("authorization"), Some("Bearer s3cret"));
    let header = decode_header(&taken.body).expect("a JWS");
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.typ.as_deref(), Some("secevent+jwt"));
    let claims = claims(&taken.body);
    assert_eq!(claims["iss"], "https://writ.test");
    assert_eq!(claims["aud"], url.as_str());
    assert_eq!(grant_of(&claims), id);
    let event = &claims["events"][SESSION_REVOKED];
    assert_eq!(event["writ"]["by"], "broker");
    assert_eq!(event["reason_admin"]["en"], "not_minted");
    let cursor = event["writ"]["cursor"].as_str().expect("cursor");
    assert_eq!(claims["jti"], format!("{id}.{cursor}").as_str());

    assert_eq!(
        server.metric("writ_webhook_deliveries_total{outcome=\"delivered\"}"),
        1.0
    );
    assert_eq!(server.metric("writ_webhook_retries_total"), 2.0);
    server.wait_metric("writ_webhook_pending", 0.0, Duration::from_secs(5));
}

/// Revocations made while the receiver is down are delivered, in feed
/// order, by the next process on the same ledger (the cursor is the
/// ledger's); a SET the receiver rejects with 400 is passed over, the next
/// one is still delivered.
#[test]
fn delivery_resumes_after_a_restart_and_passes_over_only_a_400() {
    let scratch = Arc::new(TempDir::new("webhook-resume"));
    let db = scratch.file("writ.db");
    // A port with nothing listening yet: the receiver is down.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let url = format!("http://127.0.0.1:{port}/caep");
    let args = [
        "--ledger",
        db.to_str().expect("path"),
        "--revocation-webhook",
        &url,
        "--webhook-key",
        "tests/webhook/set-ed25519.pem",
        "--webhook-max-backoff",
        "300ms",
    ];
    let first = Server::start(&args, &scratch);
    // The webhook starts at the feed's head: a revocation from before it
    // was configured is on the feed, not pushed. Here there is none.
    let a = issue_and_revoke(&first, "resume-a");
    let b = issue_and_revoke(&first, "resume-b");
    wait_until("a failed delivery", Duration::from_secs(10), || {
        first.metric("writ_webhook_retries_total") >= 2.0
    });
    assert_eq!(first.metric("writ_webhook_pending"), 2.0);
    first.signal("KILL");

    let receiver = Receiver::start_on(
        TcpListener::bind(("127.0.0.1", port)).expect("bind the receiver's port"),
        &[],
    );
    let second = Server::start(&args, &scratch);
    wait_until("both delivered", Duration::from_secs(20), || {
        receiver.acknowledged().len() >= 2
    });
    let grants: Vec<String> = receiver
        .acknowledged()
        .iter()
        .map(|r| grant_of(&claims(&r.body)).to_owned())
        .collect();
    assert_eq!(
        grants,
        vec![a.clone(), b.clone()],
        "in feed order, once each"
    );

    // The receiver refuses the next SET for good, then takes the one after.
    receiver.then(&[400]);
    let c = issue_and_revoke(&second, "resume-c");
    let d = issue_and_revoke(&second, "resume-d");
    wait_until(
        "the one after the rejected one",
        Duration::from_secs(20),
        || receiver.acknowledged().len() >= 3,
    );
    let got = receiver.got();
    let statuses: Vec<(String, u16)> = got
        .iter()
        .map(|r| (grant_of(&claims(&r.body)).to_owned(), r.status))
        .collect();
    assert_eq!(
        statuses,
        vec![(a, 202), (b, 202), (c, 400), (d, 202)],
        "the rejected SET is not retried"
    );
    assert_eq!(
        second.metric("writ_webhook_deliveries_total{outcome=\"rejected\"}"),
        1.0
    );
    assert!(
        second.stderr().contains("rejected the SET"),
        "{}",
        second.stderr()
    );
}

/// Flags that cannot work are refused at start, naming the flag.
#[test]
fn a_webhook_without_a_ledger_or_with_a_bad_key_is_refused() {
    let (code, stderr) = start_refused(&["--revocation-webhook", "http://127.0.0.1:9/caep"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--ledger"), "{stderr}");

    let scratch = TempDir::new("webhook-refused");
    let db = scratch.file("writ.db");
    let db = db.to_str().expect("path");
    let (code, stderr) = start_refused(&[
        "--ledger",
        db,
        "--revocation-webhook",
        "ftp://example.test/caep",
    ]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("not an http:// or https:// URL"),
        "{stderr}"
    );

    let bad = scratch.file("bad.pem");
    std::fs::write(
        &bad,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let (code, stderr) = start_refused(&[
        "--ledger",
        db,
        "--revocation-webhook",
        "http://127.0.0.1:9/caep",
        "--webhook-key",
        bad.to_str().expect("path"),
    ]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("--webhook-key"), "{stderr}");
    // The RSA key of the identity tests is not one a SET is signed with here.
    let (code, stderr) = start_refused(&[
        "--ledger",
        db,
        "--revocation-webhook",
        "http://127.0.0.1:9/caep",
        "--webhook-key",
        "tests/identity/rsa1.pub.pem",
    ]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("--webhook-key"), "{stderr}");
}
