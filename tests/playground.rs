//! `writ playground` in a real headless browser (Debian's Chromium): the
//! page loads with a policy that has an error and shows the diagnostic;
//! loaded with the policy fixed, it shows the decision and the tree. The
//! endpoint's bounds are checked over HTTP, and `writ serve` is shown not
//! to have it.
//!
//! Without Chromium the browser test fails when `CI=true` (`.ci/run`
//! installs it) and is reported as not run elsewhere.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::server::{exchange, free_port, raw_post, Server, TempDir, BIN};
use serde_json::json;

/// A `writ playground` child on a loopback port, killed on drop.
struct Playground {
    child: Child,
    port: u16,
}

impl Playground {
    fn start() -> Playground {
        for _attempt in 0..3 {
            let port = free_port();
            let mut child = Command::new(BIN)
                .args(["playground", "--addr", &format!("127.0.0.1:{port}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start writ playground");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Playground { child, port };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("writ playground did not start");
    }

    fn evaluate(&self, body: &serde_json::Value) -> common::server::Reply {
        let raw = raw_post(
            "/v1/playground/evaluate",
            body.to_string().as_bytes(),
            Some("application/json"),
        );
        exchange(self.port, &raw).expect("an answer")
    }

    fn url(&self, fragment: &str) -> String {
        format!("http://127.0.0.1:{}/#{fragment}", self.port)
    }
}

impl Drop for Playground {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's Chromium (or `WRIT_CHROMIUM`); `None` outside CI when there
/// is none, a failure in CI.
fn chromium() -> Option<PathBuf> {
    let candidates = std::env::var_os("WRIT_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/usr/bin/chromium", "/usr/bin/chromium-browser"].map(PathBuf::from));
    for candidate in candidates {
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !in_ci,
        "Chromium is missing: the playground's browser test needs it in CI (`apt-get install -y chromium`, as .ci/run does)"
    );
    eprintln!("playground browser test NOT RUN: no Chromium (`apt-get install -y chromium`)");
    None
}

/// The page's DOM after its scripts ran: Chromium headless with a
/// virtual-time budget, so the debounce and the fetch finish first.
fn dump_dom(chromium: &PathBuf, url: &str) -> String {
    let profile = TempDir::new("chromium-profile");
    let output = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `policy=...&request=...` with every byte but letters and digits escaped.
fn fragment(policy: &str, request: &str) -> String {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    format!("policy={}&request={}", encode(policy), encode(request))
}

const BROKEN: &str = "@id(\"reader\")\npermit if action == \"read\" and sensitivity <= internall\n  grant [\"read:{resource.id}\"] for 15m;\n";
const REQUEST: &str =
    "{\"action\": \"read\", \"resource\": {\"id\": \"db://crm\"}, \"sensitivity\": \"public\"}";

#[test]
fn the_page_shows_the_diagnostic_then_the_decision_in_a_browser() {
    let Some(chromium) = chromium() else {
        return;
    };
    let playground = Playground::start();

    // A policy with an unknown level: its diagnostic, and no decision.
    let dom = dump_dom(&chromium, &playground.url(&fragment(BROKEN, REQUEST)));
    assert!(
        dom.contains("data-state=\"done\""),
        "the page did not finish:\n{dom}"
    );
    assert!(
        dom.contains("<li class=\"diagnostic\" data-code=\"writ::check::unknown_name\">"),
        "{dom}"
    );
    assert!(dom.contains("line 2, column 47"), "{dom}");
    assert!(dom.contains("`internall`"), "{dom}");
    assert!(
        dom.contains("<div id=\"verdict\" class=\"\"></div>"),
        "{dom}"
    );
    assert!(dom.contains("the policy does not compile"), "{dom}");

    // Fixed: no diagnostics, the engine's decision, its explanation and
    // the tree.
    let fixed = BROKEN.replace("internall", "internal");
    let dom = dump_dom(&chromium, &playground.url(&fragment(&fixed, REQUEST)));
    assert!(
        dom.contains("data-state=\"done\""),
        "the page did not finish:\n{dom}"
    );
    assert!(
        dom.contains(
            "<ul id=\"diagnostics\" class=\"clean\"><li class=\"none\">no diagnostics</li></ul>"
        ),
        "{dom}"
    );
    assert!(
        dom.contains("<div id=\"verdict\" class=\"allow\">allow</div>"),
        "{dom}"
    );
    assert!(dom.contains("read:db://crm"), "{dom}");
    assert!(dom.contains("decided by"), "the explanation:\n{dom}");
    assert!(
        dom.contains("src=\"data:image/svg+xml;charset=utf-8,"),
        "the tree:\n{dom}"
    );
    // The request refused by the engine is shown as such, not as a deny.
    let dom = dump_dom(
        &chromium,
        &playground.url(&fragment(&fixed, "{\"actoin\": \"read\"}")),
    );
    assert!(dom.contains("actoin"), "{dom}");
    assert!(
        dom.contains("<div id=\"verdict\" class=\"\"></div>"),
        "{dom}"
    );
}

#[test]
fn the_endpoint_answers_with_the_engine_and_bounds_its_input() {
    let playground = Playground::start();
    let page = exchange(
        playground.port,
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .expect("the page");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>writ playground</title>"));
    assert!(page
        .header("content-security-policy")
        .is_some_and(|csp| csp.contains("default-src 'none'")));

    let reply = playground.evaluate(&json!({"policy": BROKEN, "request": REQUEST}));
    assert_eq!(reply.status, 200, "{reply:?}");
    let answer = reply.json();
    assert_eq!(
        answer["diagnostics"][0]["code"],
        "writ::check::unknown_name"
    );
    assert_eq!(answer["decision"], serde_json::Value::Null);

    let fixed = BROKEN.replace("internall", "internal");
    let answer = playground
        .evaluate(&json!({"policy": fixed, "request": REQUEST}))
        .json();
    assert_eq!(answer["decision"]["decision"], "allow", "{answer}");
    assert_eq!(answer["decision"]["scope"], json!(["read:db://crm"]));
    assert!(
        answer["tree_svg"]
            .as_str()
            .is_some_and(|svg| svg.contains("<svg")),
        "{answer}"
    );

    // Bounds: size, type, shape.
    let huge = "x".repeat(2 * 1024 * 1024);
    playground
        .evaluate(&json!({"policy": huge}))
        .assert_error(413, "body_too_large");
    let long = "x".repeat(300 * 1024);
    playground
        .evaluate(&json!({"policy": long}))
        .assert_error(400, "bad_input");
    let raw = raw_post(
        "/v1/playground/evaluate",
        b"policy=x",
        Some("application/x-www-form-urlencoded"),
    );
    exchange(playground.port, &raw)
        .expect("an answer")
        .assert_error(415, "unsupported_media_type");
    let raw = raw_post("/v1/playground/evaluate", b"{", Some("application/json"));
    exchange(playground.port, &raw)
        .expect("an answer")
        .assert_error(400, "bad_json");
    let raw = raw_post("/v1/decide", b"{}", Some("application/json"));
    exchange(playground.port, &raw)
        .expect("an answer")
        .assert_error(404, "not_found");
}

#[test]
fn writ_serve_has_no_playground() {
    let scratch = Arc::new(TempDir::new("no-playground"));
    let server = Server::start(&[], &scratch);
    let reply = server.post(
        "/v1/playground/evaluate",
        &json!({"policy": "permit;", "request": "{}"}).to_string(),
    );
    assert_eq!(reply.status, 404, "{reply:?}");
    let page = server.get("/");
    assert_eq!(page.status, 404, "{page:?}");
}
