//! A `writ serve` child process on a loopback port, spoken to over
//! hand-written HTTP/1.1 so that broken requests can be sent as they are.
//! Shared by the tests that run the server.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_writ");
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("writ-server-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback port: bind port 0, read it, let it go.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}

/// The server process; killed on drop if a test left it running.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub stderr: PathBuf,
    _dir: Option<Arc<TempDir>>,
}

impl Server {
    /// Starts `writ serve --addr 127.0.0.1:PORT ARGS...` and waits for
    /// `/health`.
    pub fn start(args: &[&str], scratch: &Arc<TempDir>) -> Server {
        Server::start_with_env(args, &[], scratch)
    }

    /// [`Server::start`] with these environment variables set.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)], scratch: &Arc<TempDir>) -> Server {
        for _attempt in 0..3 {
            let port = free_port();
            let stderr = scratch.file(&format!("stderr-{port}.txt"));
            let log = std::fs::File::create(&stderr).expect("stderr file");
            let addr = format!("127.0.0.1:{port}");
            let child = Command::new(BIN)
                .arg("serve")
                .args(["--addr", &addr])
                .args(args)
                .envs(env.iter().copied())
                .current_dir(ROOT)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .expect("start writ serve");
            let mut server = Server {
                child,
                port,
                stderr,
                _dir: Some(scratch.clone()),
            };
            if server.wait_healthy() {
                return server;
            }
            // The port was taken between the probe and the bind: try again.
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
        panic!("writ serve did not start");
    }

    pub fn wait_healthy(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(reply) = try_request(self.port, "GET", "/health", None, &[]) {
                if reply.status == 200 {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> Reply {
        request(self.port, "GET", path, None, &[])
    }

    pub fn post(&self, path: &str, body: &str) -> Reply {
        request(self.port, "POST", path, Some(body.as_bytes()), &[])
    }

    /// POSTs `body` with the given `Content-Type` (none at all for `None`),
    /// unlike [`Server::post`], which always declares JSON.
    pub fn post_typed(&self, path: &str, body: &[u8], content_type: Option<&str>) -> Reply {
        exchange(self.port, &raw_post(path, body, content_type))
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// A metric, waiting up to `within` for it to reach `value` (counters
    /// the decision log's writer updates after the answer).
    pub fn wait_metric(&self, name: &str, value: f64, within: Duration) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let now = self.metric(name);
            if now == value || Instant::now() >= deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn policy_digest(&self) -> String {
        self.get("/v1/policy").json()["digest"]
            .as_str()
            .expect("digest")
            .to_owned()
    }

    pub fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").body;
        text.lines()
            .find_map(|line| {
                let (key, value) = line.rsplit_once(' ')?;
                (key == name).then(|| value.parse::<f64>().ok()).flatten()
            })
            .unwrap_or_else(|| panic!("metric `{name}` not found in:\n{text}"))
    }

    /// Waits for the process to exit; returns whether it exited 0.
    pub fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("writ serve did not exit within {within:?}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A 4xx with `{"error": {"code", "message"}}` and no allow anywhere.
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{self:?}");
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{self:?}");
        let message = body["error"]["message"]
            .as_str()
            .expect("an error message")
            .to_owned();
        assert!(!message.is_empty());
        assert!(body.get("decision").is_none(), "{self:?}");
        assert!(!self.body.contains("\"allow\""), "{self:?}");
        message
    }
}

pub fn parse_reply(raw: &[u8]) -> Result<Reply, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no header end in {:?}", String::from_utf8_lossy(raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line `{status_line}`"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body)?;
    }
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

pub fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..line_end])
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )
        .map_err(|e| e.to_string())?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".to_owned());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Sends raw bytes on a new connection and reads until the server closes.
pub fn exchange(port: u16, raw: &[u8]) -> Result<Reply, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    stream.write_all(raw).map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).map_err(|e| e.to_string())?;
    parse_reply(&reply)
}

pub fn request_bytes(
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Vec<u8> {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        raw.push_str("Content-Type: application/json\r\n");
        raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    raw.push_str("\r\n");
    let mut raw = raw.into_bytes();
    if let Some(body) = body {
        raw.extend_from_slice(body);
    }
    raw
}

/// A `POST` with `body` and, if given, that `Content-Type`; nothing else
/// added.
pub fn raw_post(path: &str, body: &[u8], content_type: Option<&str>) -> Vec<u8> {
    let mut raw = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(content_type) = content_type {
        raw.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    raw.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// Runs `writ serve ARGS...` expecting it to refuse to start; returns its
/// exit code and stderr.
/// A server that starts anyway is killed after 20 s and reported as `None`.
pub fn start_refused(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .current_dir(ROOT)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run writ serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.code(),
            _ if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    (code, stderr)
}

pub fn try_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    exchange(port, &request_bytes(method, path, body, headers))
}

pub fn request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Reply {
    try_request(port, method, path, body, headers)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

pub fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// examples/ci-deploy.json: allowed by the default pack.
pub fn ci_deploy() -> Value {
    let text = std::fs::read_to_string(Path::new(ROOT).join("examples/ci-deploy.json"))
        .expect("examples/ci-deploy.json");
    serde_json::from_str(&text).expect("valid JSON")
}

pub fn read_log(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad log line ({e}): {l}")))
        .collect()
}

/// The default pack's AuthZEN twin of `examples/ci-deploy.json` (allowed).
pub fn authzen_deploy() -> Value {
    json!({
        "subject": {"type": "workload", "id": "spiffe://prod.acme.io/ns/payments/sa/deployer",
                    "properties": {"kind": "ci", "auth": "oidc", "attested": true, "owner": "payments",
                                   "environment": "prod"}},
        "action": {"name": "deploy"},
        "resource": {"type": "cluster", "id": "k8s://prod-eu/payments", "properties": {"owner": "payments"}},
        "context": {
            "intent": {"task": "deploy", "id": "run-1"},
            "environment": {"name": "prod", "broker": "ci-oidc-exchange", "time": "2026-11-22T10:00:00Z"},
            "sensitivity": "confidential",
            "requested": {"scope": ["deploy:k8s://prod-eu/payments"], "ttl": 3600},
            "recent_issuances": 0
        }
    })
}
