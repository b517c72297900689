//! `writ playground` in a real headless browser (Debian's Chromium).
//! Driven over the Chrome DevTools Protocol (a small WebSocket client
//! below, on std alone), the test types a policy with an error into the
//! page and waits for the diagnostic, then types the fix and waits for the
//! decision, as an author would. A second test loads the page with a link
//! that fills the editors (`--dump-dom`). The endpoint's bounds are checked
//! over HTTP, and `writ serve` is shown not to have it.
//!
//! Without Chromium the browser test fails when `CI=true` (`.ci/run`
//! installs it) and is reported as not run elsewhere.

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::server::{exchange, free_port, raw_post, Server, TempDir, BIN};
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

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

/// Chromium headless, quiet (no network of its own, no first-run work), on
/// a profile folder of the test's.
fn headless(chromium: &PathBuf, profile: &TempDir) -> Command {
    let mut command = Command::new(chromium);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
    command
}

/// The page's DOM after its scripts ran: Chromium headless with a
/// virtual-time budget, so the debounce and the fetch finish first.
fn dump_dom(chromium: &PathBuf, url: &str) -> String {
    let profile = TempDir::new("chromium-profile");
    let output = headless(chromium, &profile)
        .args(["--virtual-time-budget=10000", "--dump-dom"])
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

    // Deep expressions, within the operator limit and past it: answered.
    let deep = format!("permit if {}subject.attested;", "not ".repeat(500));
    let answer = playground
        .evaluate(&json!({"policy": deep, "request": "{\"subject\": {\"attested\": true}}"}))
        .json();
    assert_eq!(answer["diagnostics"], json!([]), "{answer}");
    assert_eq!(answer["decision"]["decision"], "allow", "{answer}");
    let deeper = format!("permit if {}subject.attested;", "not ".repeat(5000));
    let answer = playground.evaluate(&json!({"policy": deeper})).json();
    assert_eq!(
        answer["diagnostics"][0]["code"], "writ::limits::expression_too_long",
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

/// A headless Chromium with the DevTools Protocol on a loopback port,
/// killed on drop.
struct Browser {
    child: Child,
    _profile: TempDir,
    page: DevTools,
}

impl Browser {
    fn open(chromium: &PathBuf, url: &str) -> Browser {
        let profile = TempDir::new("chromium-cdp");
        let mut child = headless(chromium, &profile)
            .args(["--remote-debugging-port=0", "--window-size=1280,1000"])
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes the port it chose into the profile.
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            let written = std::fs::read_to_string(profile.file("DevToolsActivePort")).ok();
            if let Some(port) = written.and_then(|t| t.lines().next()?.trim().parse::<u16>().ok()) {
                break port;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("chromium did not open its DevTools port within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let targets = devtools_targets(port);
        let socket = targets
            .as_array()
            .and_then(|all| all.iter().find(|t| t["type"] == "page"))
            .and_then(|page| page["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_owned();
        let path = socket
            .split_once("//")
            .and_then(|(_, rest)| rest.split_once('/'))
            .map(|(_, path)| format!("/{path}"))
            .expect("a ws:// URL");
        let page = DevTools::connect(port, &path);
        Browser {
            child,
            _profile: profile,
            page,
        }
    }

    /// Evaluates a JavaScript expression in the page, by value.
    fn eval(&mut self, expression: &str) -> Value {
        let reply = self.page.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        reply["result"]["result"]["value"].clone()
    }

    /// Types `text` at the caret as a keyboard would (input events and all).
    fn type_text(&mut self, text: &str) {
        self.page.call("Input.insertText", json!({"text": text}));
    }

    /// Waits up to 15 s for `expression` to be true; the page's text on
    /// failure.
    fn wait_for(&mut self, expression: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.eval(expression) == Value::Bool(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let text = self.eval("document.body.innerText");
        panic!(
            "{what}: not seen within 15 s; the page shows:\n{}",
            text.as_str().unwrap_or("")
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /json/list` on the DevTools port: the pages it can drive.
fn devtools_targets(port: u16) -> Value {
    let body = ureq::get(&format!("http://127.0.0.1:{port}/json/list"))
        .call()
        .expect("ask DevTools for its targets")
        .body_mut()
        .read_to_string()
        .expect("the target list");
    serde_json::from_str(&body).expect("a JSON target list")
}

/// A WebSocket to one DevTools target: JSON text messages, replies
/// matched by id.
struct DevTools {
    socket: WebSocket<TcpStream>,
    next_id: u64,
}

impl DevTools {
    fn connect(port: u16, path: &str) -> DevTools {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to DevTools");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let (socket, _) = tungstenite::client(format!("ws://127.0.0.1:{port}{path}"), stream)
            .expect("the DevTools WebSocket handshake");
        DevTools { socket, next_id: 0 }
    }

    fn receive(&mut self) -> String {
        loop {
            match self.socket.read().expect("a DevTools message") {
                Message::Text(text) => return text.to_string(),
                Message::Binary(bytes) => return String::from_utf8(bytes.to_vec()).expect("UTF-8"),
                Message::Close(_) => panic!("DevTools closed the connection"),
                // Pings are answered by tungstenite on the next read.
                _ => continue,
            }
        }
    }

    /// Calls a method and returns its reply (events in between are read
    /// and dropped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.socket
            .send(Message::text(
                json!({"id": id, "method": method, "params": params}).to_string(),
            ))
            .expect("send to DevTools");
        loop {
            let reply: Value = serde_json::from_str(&self.receive()).expect("JSON from DevTools");
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply;
            }
        }
    }
}

#[test]
fn an_author_types_an_error_sees_the_diagnostic_fixes_it_and_sees_the_decision() {
    let Some(chromium) = chromium() else {
        return;
    };
    let playground = Playground::start();
    let mut browser = Browser::open(&chromium, &playground.url(""));
    // The page evaluates its sample once loaded.
    browser.wait_for(
        "document.body && document.body.dataset.state === 'done'",
        "the first evaluation",
    );

    // Select the sample policy and type a new one over it, with an error.
    browser.eval("(() => { const p = document.getElementById('policy'); p.focus(); p.select(); return true; })()");
    browser.type_text(BROKEN);
    browser.eval("(() => { const r = document.getElementById('request'); r.focus(); r.select(); return true; })()");
    browser.type_text(REQUEST);
    browser.wait_for(
        "[...document.querySelectorAll('#diagnostics li.diagnostic')].some(li => li.dataset.code === 'writ::check::unknown_name' && li.textContent.includes('did you mean `internal`?'))",
        "the unknown_name diagnostic with its help",
    );
    assert_eq!(
        browser.eval("document.getElementById('verdict').textContent"),
        json!("")
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('#diagnostics li.diagnostic').length"),
        json!(1)
    );

    // Fix it: select the misspelled level and type the right one.
    let start = BROKEN.find("internall").expect("the typo") as u64;
    browser.eval(&format!(
        "(() => {{ const p = document.getElementById('policy'); p.focus(); p.setSelectionRange({start}, {}); return true; }})()",
        start + 9
    ));
    browser.type_text("internal");
    browser.wait_for(
        "document.getElementById('verdict').textContent === 'allow'",
        "the allow decision",
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('#diagnostics li.diagnostic').length"),
        json!(0)
    );
    let decision = browser.eval("JSON.parse(document.getElementById('decision').textContent)");
    assert_eq!(decision["scope"], json!(["read:db://crm"]), "{decision}");
    assert_eq!(decision["reasons"], json!(["reader"]), "{decision}");
    let explain = browser.eval("document.getElementById('explain').textContent");
    assert!(
        explain
            .as_str()
            .is_some_and(|t| t.contains("permit reader")),
        "{explain}"
    );
    browser.wait_for(
        "(() => { const img = document.querySelector('#tree img'); return !!img && img.complete && img.naturalWidth > 0; })()",
        "the drawn tree",
    );
    // The address is a link to what was typed.
    let linked = browser.eval("new URLSearchParams(location.hash.slice(1)).get('policy')");
    assert_eq!(linked, json!(BROKEN.replace("internall", "internal")));
}
