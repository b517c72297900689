//! `writ serve --bundle URL` on the real binary, against a bundle server
//! the test runs on loopback (it can answer 500, be slow or be down): two
//! replicas pull the same signed bundle and report the same digest, switch
//! to a new revision together, both refuse a bundle signed with the wrong
//! key and keep serving the last good one; a replica whose source is down
//! starts from its cache.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use common::server::*;
use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey, EncodePublicKey};
use serde_json::{json, Value};

/// How the bundle server answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Serve,
    Fail,
    Slow(Duration),
}

#[derive(Default)]
struct Counts {
    full: usize,
    not_modified: usize,
    failed: usize,
}

struct Published {
    body: Vec<u8>,
    etag: String,
    mode: Mode,
    counts: Counts,
}

/// A bundle server on loopback: `GET /bundle.tar.gz` with an ETag,
/// honouring `If-None-Match`.
struct BundleServer {
    port: u16,
    state: Arc<Mutex<Published>>,
    stop: Arc<AtomicBool>,
}

impl BundleServer {
    fn start_on(port: u16) -> BundleServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the bundle server");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(Published {
            body: Vec::new(),
            etag: String::new(),
            mode: Mode::Serve,
            counts: Counts::default(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopping) = (state.clone(), stop.clone());
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let shared = shared.clone();
                        std::thread::spawn(move || answer(stream, &shared));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        BundleServer { port, state, stop }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/bundle.tar.gz", self.port)
    }

    fn publish(&self, path: &Path) {
        let body = std::fs::read(path).expect("read bundle");
        let mut state = self.state.lock().expect("lock");
        state.etag = format!(
            "\"{}\"",
            body.len() ^ body.iter().map(|b| *b as usize).sum::<usize>()
        );
        state.body = body;
    }

    fn mode(&self, mode: Mode) {
        self.state.lock().expect("lock").mode = mode;
    }

    fn counts(&self) -> (usize, usize, usize) {
        let state = self.state.lock().expect("lock");
        (
            state.counts.full,
            state.counts.not_modified,
            state.counts.failed,
        )
    }
}

impl Drop for BundleServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Let the accept loop see it and drop the listener.
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn answer(mut stream: TcpStream, shared: &Mutex<Published>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let if_none_match = head
        .lines()
        .find_map(|line| line.strip_prefix("if-none-match:"))
        .map(|v| v.trim().to_owned());
    let (mode, body, etag) = {
        let state = shared.lock().expect("lock");
        (state.mode, state.body.clone(), state.etag.clone())
    };
    if let Mode::Slow(delay) = mode {
        std::thread::sleep(delay);
    }
    let reply = {
        let mut state = shared.lock().expect("lock");
        if mode == Mode::Fail {
            state.counts.failed += 1;
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\noops"
                .to_vec()
        } else if if_none_match.as_deref() == Some(etag.to_ascii_lowercase().as_str()) {
            state.counts.not_modified += 1;
            format!("HTTP/1.1 304 Not Modified\r\netag: {etag}\r\nconnection: close\r\n\r\n")
                .into_bytes()
        } else {
            state.counts.full += 1;
            let mut reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/gzip\r\ncontent-length: {}\r\netag: {etag}\r\nconnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            reply.extend_from_slice(&body);
            reply
        }
    };
    let _ = stream.write_all(&reply);
}

fn s(path: &Path) -> String {
    path.display().to_string()
}

/// An Ed25519 key pair from a seed: (private PEM, public PEM) paths.
fn key_pair(dir: &TempDir, name: &str, seed: u8) -> (String, String) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let private = dir.file(&format!("{name}.pem"));
    let public = dir.file(&format!("{name}.pub"));
    std::fs::write(
        &private,
        key.to_pkcs8_pem(LineEnding::LF).expect("pem").as_bytes(),
    )
    .expect("write key");
    std::fs::write(
        &public,
        key.verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("pem"),
    )
    .expect("write pub");
    (s(&private), s(&public))
}

fn writ(args: &[&str]) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .output()
        .expect("run writ");
    assert!(
        out.status.success(),
        "writ {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds revision `revision` (one rule permitting `action`) signed with
/// `key`; returns the archive's path.
fn signed_bundle(dir: &TempDir, revision: &str, action: &str, key: &str) -> std::path::PathBuf {
    let policies = dir.file(&format!("src-{revision}"));
    std::fs::create_dir_all(&policies).expect("mkdir");
    std::fs::write(
        policies.join("main.writ"),
        format!("@id(\"{action}\") permit if action == \"{action}\";\n"),
    )
    .expect("write policy");
    let out = dir.file(&format!("{revision}.tar.gz"));
    writ(&[
        "bundle",
        "build",
        &s(&policies),
        "--revision",
        revision,
        "-o",
        &s(&out),
    ]);
    writ(&["bundle", "sign", &s(&out), "--key", key]);
    out
}

fn status(server: &Server) -> Value {
    server.get("/v1/status").json()
}

fn revision(server: &Server) -> String {
    status(server)["policy"]["revision"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Waits until every server reports revision `to`, checking each status
/// read on the way: the revision serving before (`before`'s) is paired
/// with its own digest until the swap, and never a new revision with the
/// old digest (the revision and the set are read from one snapshot).
fn switched(servers: &[&Server], before: &Value, to: &str) {
    let (old_revision, old_digest) = (&before["policy"]["revision"], &before["policy"]["digest"]);
    wait_until(
        &format!("every replica on {to}"),
        Duration::from_secs(3),
        || {
            servers.iter().all(|server| {
                let now = status(server);
                assert_eq!(
                    now["policy"]["revision"] == *old_revision,
                    now["policy"]["digest"] == *old_digest,
                    "a revision reported with another set's digest: {now}"
                );
                now["policy"]["revision"] == to
            })
        },
    );
}

fn replica(url: &str, public: &str, cache: &Path, scratch: &Arc<TempDir>) -> Server {
    Server::start(
        &[
            "--bundle",
            url,
            "--bundle-key",
            public,
            "--bundle-poll",
            "200ms",
            "--bundle-cache",
            &s(cache),
        ],
        scratch,
    )
}

#[test]
fn two_replicas_pull_switch_and_refuse_together() {
    let dir = Arc::new(TempDir::new("bundle-pull-two"));
    let (private, public) = key_pair(&dir, "release", 3);
    let (wrong, _) = key_pair(&dir, "intruder", 4);
    let source = BundleServer::start_on(0);
    source.publish(&signed_bundle(&dir, "r1", "ping", &private));

    let a = replica(&source.url(), &public, &dir.file("cache-a"), &dir);
    let b = replica(&source.url(), &public, &dir.file("cache-b"), &dir);
    let (sa, sb) = (status(&a), status(&b));
    assert_eq!(sa["policy"]["revision"], "r1");
    assert_eq!(sa["policy"]["digest"], sb["policy"]["digest"]);
    assert_eq!(sa["policy"]["source"]["kind"], "bundle");
    assert_eq!(sa["policy"]["source"]["url"], source.url().as_str());
    assert_eq!(sa["bundle"]["active"]["from"], "source");
    assert_eq!(
        sa["bundle"]["active"]["digest"],
        sb["bundle"]["active"]["digest"]
    );
    assert!(sa["bundle"]["active"]["signed_by"]
        .as_str()
        .is_some_and(|f| f.starts_with("sha256:")));
    let first = sa["policy"]["digest"].clone();

    // Unchanged: the source answers 304 to the replicas' ETag.
    wait_until("conditional polls", Duration::from_secs(5), || {
        source.counts().1 >= 4
    });

    // A new revision: both switch within a few poll intervals (the bound
    // is loose for a loaded test machine; the time taken is printed).
    let bundle = signed_bundle(&dir, "r2", "pong", &private);
    let published = std::time::Instant::now();
    source.publish(&bundle);
    switched(&[&a, &b], &sa, "r2");
    eprintln!(
        "both replicas serve r2 {:?} after it was published (poll 200ms)",
        published.elapsed()
    );
    let (sa, sb) = (status(&a), status(&b));
    assert_eq!(sa["policy"]["digest"], sb["policy"]["digest"]);
    assert_ne!(sa["policy"]["digest"], first);
    assert_eq!(
        sa["reloads"]["last_success"]["trigger"],
        "a new bundle was pulled"
    );
    let second = sa["policy"]["digest"].clone();

    // Re-signed with the wrong key: both refuse it, serving r2 on.
    source.publish(&signed_bundle(&dir, "r3", "pwn", &wrong));
    for server in [&a, &b] {
        wait_until("the refusal", Duration::from_secs(3), || {
            status(server)["bundle"]["refusals"] == 1
        });
        let now = status(server);
        assert_eq!(now["policy"]["revision"], "r2");
        assert_eq!(now["policy"]["digest"], second);
        let error = now["reloads"]["last_failure"]["error"]
            .as_str()
            .unwrap_or_default();
        assert!(error.contains("no trusted key"), "{error}");
        assert!(now["bundle"]["last_failure"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("bad bundle signature")));
        assert_eq!(
            server.metric("writ_bundle_activations_total{result=\"refused\"}"),
            1.0
        );
        assert_eq!(server.metric("writ_reload_failures_total"), 1.0);
    }
    // Polled again (by ETag), the refused bundle is not counted twice.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(status(&a)["bundle"]["refusals"], 1);
    assert_eq!(status(&a)["reloads"]["failed"], 1);
}

#[test]
fn a_failing_or_slow_source_keeps_the_last_good_bundle() {
    let dir = Arc::new(TempDir::new("bundle-pull-fail"));
    let (private, public) = key_pair(&dir, "release", 5);
    let source = BundleServer::start_on(0);
    source.publish(&signed_bundle(&dir, "r1", "ping", &private));
    let server = replica(&source.url(), &public, &dir.file("cache"), &dir);
    assert_eq!(revision(&server), "r1");

    source.mode(Mode::Fail);
    wait_until("failed fetches", Duration::from_secs(5), || {
        server.metric("writ_bundle_fetch_failures_total") >= 2.0
    });
    let now = status(&server);
    assert_eq!(now["policy"]["revision"], "r1");
    assert_eq!(server.metric("writ_bundle_source_up"), 0.0);
    assert!(now["bundle"]["last_fetch_error"]["error"]
        .as_str()
        .is_some_and(|e| e.contains("answered 500")));
    // Fetch failures are not activations refused.
    assert_eq!(now["bundle"]["refusals"], 0);
    // Backoff: far fewer tries than one per 200 ms.
    let failed_before = source.counts().2;
    std::thread::sleep(Duration::from_millis(1500));
    let tried = source.counts().2 - failed_before;
    assert!(tried <= 3, "{tried} tries in 1.5 s with backoff");

    // Slow, then serving a new revision: it is picked up, and the server
    // answers meanwhile.
    source.publish(&signed_bundle(&dir, "r2", "pong", &private));
    source.mode(Mode::Slow(Duration::from_millis(800)));
    assert_eq!(server.get("/health").status, 200);
    wait_until("r2 through a slow source", Duration::from_secs(15), || {
        revision(&server) == "r2"
    });
    assert_eq!(server.metric("writ_bundle_source_up"), 1.0);
}

#[test]
fn a_replica_starts_from_its_cache_when_the_source_is_down() {
    let dir = Arc::new(TempDir::new("bundle-pull-cache"));
    let (private, public) = key_pair(&dir, "release", 6);
    let cache = dir.file("cache");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/bundle.tar.gz");
    let digest = {
        let source = BundleServer::start_on(port);
        source.publish(&signed_bundle(&dir, "r1", "ping", &private));
        let first = replica(&url, &public, &cache, &dir);
        assert!(cache.join("bundle.tar.gz").is_file());
        status(&first)["policy"]["digest"].clone()
    };
    // The source is down now.
    let server = replica(&url, &public, &cache, &dir);
    let now = status(&server);
    assert_eq!(now["policy"]["revision"], "r1");
    assert_eq!(now["policy"]["digest"], digest);
    assert_eq!(now["bundle"]["active"]["from"], "cache");
    assert!(now["bundle"]["last_fetch_error"]["error"].is_string());

    // Without a cache, a replica whose source is down does not start.
    let (code, stderr) = start_refused(&["--bundle", &url, "--bundle-key", &public]);
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("no `--bundle-cache` to start from"),
        "{stderr}"
    );

    // A cache holding a bundle the keys refuse does not serve either.
    let (_, other) = key_pair(&dir, "other", 8);
    let (code, stderr) = start_refused(&[
        "--bundle",
        &url,
        "--bundle-key",
        &other,
        "--bundle-cache",
        &s(&cache),
    ]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("the cache cannot serve"), "{stderr}");

    // The source comes back with r2: the replica started from its cache
    // picks it up.
    let source = BundleServer::start_on(port);
    source.publish(&signed_bundle(&dir, "r2", "pong", &private));
    wait_until(
        "r2 once the source is back",
        Duration::from_secs(10),
        || revision(&server) == "r2",
    );
    assert_eq!(status(&server)["bundle"]["active"]["from"], "source");
}

#[test]
fn an_unsigned_bundle_is_refused_when_a_key_is_trusted() {
    let dir = Arc::new(TempDir::new("bundle-pull-unsigned"));
    let (_, public) = key_pair(&dir, "release", 9);
    let policies = dir.file("src");
    std::fs::create_dir_all(&policies).expect("mkdir");
    std::fs::write(
        policies.join("a.writ"),
        "@id(\"a\") permit if action == \"a\";\n",
    )
    .expect("write");
    let bundle = dir.file("unsigned.tar.gz");
    writ(&["bundle", "build", &s(&policies), "-o", &s(&bundle)]);
    let source = BundleServer::start_on(0);
    source.publish(&bundle);
    let (code, stderr) = start_refused(&["--bundle", &source.url(), "--bundle-key", &public]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("the bundle is not signed"), "{stderr}");
    // And `--bundle` with `--policy` is refused at once.
    let (code, stderr) = start_refused(&["--bundle", &source.url(), "--policy", "default"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--policy"), "{stderr}");
}

/// The CNCF distribution registry (Debian's `docker-registry`) on a
/// loopback port, with a temporary storage folder; stopped on drop.
struct Registry {
    child: std::process::Child,
    port: u16,
    _dir: TempDir,
}

/// The user and password of [`Registry::start_with_login`]; the bcrypt
/// hash is of this password (cost 5, made once with Python's `crypt`).
const REGISTRY_USER: &str = "ci";
const REGISTRY_PASSWORD: &str = "writ-test-pass";
const REGISTRY_PASSWORD_BCRYPT: &str =
    "$2a$05$cI9Es1IS59jNqTQCu8xUyu1nQerwtFZlnDw6zHCMgBlUK2xjbSMc.";

impl Registry {
    fn start() -> Registry {
        Registry::start_configured(false)
    }

    /// A registry that requires a login (its `htpasswd` basic auth).
    fn start_with_login() -> Registry {
        Registry::start_configured(true)
    }

    fn start_configured(login: bool) -> Registry {
        let dir = TempDir::new("oci-registry");
        let port = free_port();
        let config = dir.file("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            s(&dir.file("storage"))
        );
        if login {
            let htpasswd = dir.file("htpasswd");
            std::fs::write(
                &htpasswd,
                format!("{REGISTRY_USER}:{REGISTRY_PASSWORD_BCRYPT}\n"),
            )
            .expect("write htpasswd");
            text.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: writ-test\n    path: {}\n",
                s(&htpasswd)
            ));
        }
        std::fs::write(&config, text).expect("write the registry config");
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start docker-registry (apt-get install docker-registry)");
        let registry = Registry {
            child,
            port,
            _dir: dir,
        };
        wait_until("the registry", Duration::from_secs(20), || {
            try_request(port, "GET", "/v2/", None, &[])
                .is_ok_and(|r| r.status == 200 || (login && r.status == 401))
        });
        registry
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_replicas_pull_from_an_oci_registry_switch_and_refuse_together() {
    let dir = Arc::new(TempDir::new("bundle-oci"));
    let (private, public) = key_pair(&dir, "release", 12);
    let (wrong, _) = key_pair(&dir, "intruder", 13);
    let registry = Registry::start();
    let reference = format!("oci://127.0.0.1:{}/writ/policies:prod", registry.port);
    let push = |path: &Path| writ(&["bundle", "push", &s(path), &reference]);

    push(&signed_bundle(&dir, "r1", "ping", &private));
    let a = replica(&reference, &public, &dir.file("cache-a"), &dir);
    let b = replica(&reference, &public, &dir.file("cache-b"), &dir);
    let (sa, sb) = (status(&a), status(&b));
    assert_eq!(sa["policy"]["revision"], "r1");
    assert_eq!(sa["policy"]["digest"], sb["policy"]["digest"]);
    assert_eq!(sa["policy"]["source"]["url"], reference.as_str());
    // The ETag is the OCI manifest's digest.
    assert!(sa["bundle"]["etag"]
        .as_str()
        .is_some_and(|e| e.starts_with("sha256:")));

    push(&signed_bundle(&dir, "r2", "pong", &private));
    switched(&[&a, &b], &sa, "r2");
    let second = status(&a)["policy"]["digest"].clone();
    assert_eq!(status(&b)["policy"]["digest"], second);

    // Re-signed with the wrong key: `push` checks only what it is told
    // to (no --pub), the replicas refuse it and serve r2 on.
    push(&signed_bundle(&dir, "r3", "pwn", &wrong));
    for server in [&a, &b] {
        wait_until("the refusal", Duration::from_secs(3), || {
            status(server)["bundle"]["refusals"] == 1
        });
        let now = status(server);
        assert_eq!(now["policy"]["revision"], "r2");
        assert_eq!(now["policy"]["digest"], second);
        assert!(now["reloads"]["last_failure"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no trusted key")));
    }

    // `push --pub` refuses to publish a bundle the key did not sign.
    let out = std::process::Command::new(BIN)
        .args([
            "bundle",
            "push",
            &s(&dir.file("r3.tar.gz")),
            &reference,
            "--pub",
            &public,
        ])
        .output()
        .expect("run writ");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no trusted key"));

    // The registry goes down: both serve r2 on and report the failure.
    drop(registry);
    for server in [&a, &b] {
        wait_until("a failed fetch", Duration::from_secs(5), || {
            server.metric("writ_bundle_source_up") == 0.0
        });
        assert_eq!(revision(server), "r2");
    }
}

#[test]
fn a_reload_asked_for_polls_the_source_at_once() {
    let dir = Arc::new(TempDir::new("bundle-pull-reload"));
    let (private, public) = key_pair(&dir, "release", 14);
    let source = BundleServer::start_on(0);
    source.publish(&signed_bundle(&dir, "r1", "ping", &private));
    let server = Server::start(
        &[
            "--bundle",
            &source.url(),
            "--bundle-key",
            &public,
            "--bundle-poll",
            "1h",
        ],
        &dir,
    );
    assert_eq!(revision(&server), "r1");
    source.publish(&signed_bundle(&dir, "r2", "pong", &private));
    let reply = server.post("/v1/policy/reload", "");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["status"], "activated");
    assert_eq!(revision(&server), "r2");
    // Nothing new: activated, nothing changed.
    let reply = server.post("/v1/policy/reload", "");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["digest"], reply.json()["previous"]);
    // The source fails: refused, r2 serving on.
    source.mode(Mode::Fail);
    let reply = server.post("/v1/policy/reload", "");
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert!(reply.json()["reason"]
        .as_str()
        .is_some_and(|r| r.contains("answered 500")));
    assert_eq!(revision(&server), "r2");
}

#[test]
fn a_registry_that_requires_a_login_is_reached_with_credentials() {
    let dir = Arc::new(TempDir::new("bundle-oci-login"));
    let (private, public) = key_pair(&dir, "release", 14);
    let registry = Registry::start_with_login();
    let reference = format!("oci://127.0.0.1:{}/writ/policies:prod", registry.port);
    let bundle = signed_bundle(&dir, "r1", "ping", &private);
    // No credentials anywhere (an empty Docker config folder).
    let empty = dir.file("no-docker-config");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let push = |env: &[(&str, &str)]| {
        std::process::Command::new(BIN)
            .args(["bundle", "push", &s(&bundle), &reference])
            .env_remove("WRIT_REGISTRY_USERNAME")
            .env_remove("WRIT_REGISTRY_PASSWORD")
            .env_remove("WRIT_REGISTRY_TOKEN")
            .env("DOCKER_CONFIG", &empty)
            .envs(env.iter().copied())
            .output()
            .expect("run writ")
    };

    let anonymous = push(&[]);
    let stderr = String::from_utf8_lossy(&anonymous.stderr);
    assert_ne!(anonymous.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("not authorized") && stderr.contains("anonymous"),
        "{stderr}"
    );
    let wrong = push(&[
        ("WRIT_REGISTRY_USERNAME", REGISTRY_USER),
        ("WRIT_REGISTRY_PASSWORD", "not-the-password"),
    ]);
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert_ne!(wrong.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("user `ci`"), "{stderr}");
    let pushed = push(&[
        ("WRIT_REGISTRY_USERNAME", REGISTRY_USER),
        ("WRIT_REGISTRY_PASSWORD", REGISTRY_PASSWORD),
    ]);
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );

    // A replica reads its login from a Docker config.json.
    let docker = dir.file("docker");
    std::fs::create_dir_all(&docker).expect("mkdir");
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}"));
    std::fs::write(
        docker.join("config.json"),
        json!({"auths": {format!("127.0.0.1:{}", registry.port): {"auth": encoded}}}).to_string(),
    )
    .expect("write config.json");
    let server = Server::start_with_env(
        &[
            "--bundle",
            &reference,
            "--bundle-key",
            &public,
            "--bundle-poll",
            "200ms",
        ],
        &[("DOCKER_CONFIG", &s(&docker))],
        &dir,
    );
    assert_eq!(revision(&server), "r1");
}

/// A scratch folder, a release key pair (seeded with `seed`) and a cache
/// holding a signed bundle of revision `r1`: (folder, public key, cache).
fn seeded_cache(name: &str, seed: u8) -> (Arc<TempDir>, String, std::path::PathBuf) {
    let dir = Arc::new(TempDir::new(name));
    let (private, public) = key_pair(&dir, "release", seed);
    let cache = dir.file("cache");
    std::fs::create_dir_all(&cache).expect("mkdir");
    std::fs::copy(
        signed_bundle(&dir, "r1", "ping", &private),
        cache.join("bundle.tar.gz"),
    )
    .expect("seed the cache");
    (dir, public, cache)
}

/// The last fetch error in a `/v1/status` answer ("" when none).
fn fetch_error(status: &Value) -> String {
    status["bundle"]["last_fetch_error"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_registry_answering_500_leaves_the_cached_bundle_serving() {
    let (dir, public, cache) = seeded_cache("bundle-oci-500", 15);
    // Every request to this "registry" answers 500.
    let registry = BundleServer::start_on(0);
    registry.mode(Mode::Fail);
    let reference = format!("oci://127.0.0.1:{}/writ/policies:prod", registry.port);
    let server = replica(&reference, &public, &cache, &dir);
    let now = status(&server);
    assert_eq!(now["policy"]["revision"], "r1");
    assert_eq!(now["bundle"]["active"]["from"], "cache");
    let error = fetch_error(&now);
    assert!(
        error.contains("the manifest request") && error.contains("answered 500"),
        "{error}"
    );
    wait_until("more failed fetches", Duration::from_secs(5), || {
        server.metric("writ_bundle_fetch_failures_total") >= 2.0
    });
    assert_eq!(server.metric("writ_bundle_source_up"), 0.0);
    assert_eq!(revision(&server), "r1");
}

#[test]
fn a_registry_that_hangs_is_given_up_on_at_the_timeout() {
    let (dir, public, cache) = seeded_cache("bundle-oci-hang", 16);
    // A "registry" that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let reference = format!("oci://127.0.0.1:{port}/writ/policies:prod");
    let started = std::time::Instant::now();
    let server = Server::start(
        &[
            "--bundle",
            &reference,
            "--bundle-key",
            &public,
            "--bundle-poll",
            "200ms",
            "--bundle-timeout",
            "1s",
            "--bundle-cache",
            &s(&cache),
        ],
        &dir,
    );
    // It waited for the registry no longer than the timeout (with room
    // for a loaded machine), then started from its cache.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let now = status(&server);
    assert_eq!(now["policy"]["revision"], "r1");
    assert_eq!(now["bundle"]["active"]["from"], "cache");
    let error = fetch_error(&now);
    assert!(error.contains("did not answer within 1 s"), "{error}");
    // Decisions are answered while the polls keep timing out.
    wait_until("more failed fetches", Duration::from_secs(10), || {
        server.metric("writ_bundle_fetch_failures_total") >= 2.0
    });
    assert_eq!(server.get("/health").status, 200);
    assert_eq!(server.metric("writ_bundle_source_up"), 0.0);
    assert_eq!(revision(&server), "r1");
}
