//! `writ serve`: the decision service brokers call.
//!
//! An HTTP/1.1 and HTTP/2 (cleartext, prior knowledge) server (hyper under
//! axum's router, on tokio) that answers
//! contract.md's requests (`POST /v1/decide`, `POST /v1/decide/batch`) and
//! the OpenID AuthZEN 1.0 Access Evaluation API (`POST /access/v1/evaluation`,
//! `POST /access/v1/evaluations`, the Search APIs and the PDP metadata),
//! reports its policy set (`GET /v1/policy`), its status (`GET /v1/status`),
//! liveness and readiness (`GET /health`, `GET /ready`) and Prometheus
//! metrics (`GET /metrics`).
//!
//! The policy set is reloaded on `SIGHUP`, on `POST /v1/policy/reload`
//! and when the policy or data files change and then stay unchanged for a
//! settle interval; a set that was read while changing, does not match its
//! manifest, has an empty file or does not compile is refused, and so is
//! an automatic reload that drops rules or files. The last good set keeps
//! serving. Every decision can be written to a decision log, one JSON line
//! each, by a writer thread; by default a decision is answered only once
//! its line is written. `SIGTERM` and
//! `SIGINT` stop accepting connections, let the requests in flight finish,
//! flush the log and exit. See `docs/server.md`.

pub(crate) mod authzen;
pub mod bundle_pull;
mod h2;
mod http;
mod ids;
pub(crate) mod log;
pub mod logship;
mod metrics;
pub(crate) mod oci;
mod pin;
mod search;
mod state;
mod status;
pub mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use log::{DecisionLog, LogMode, Redaction};
use metrics::Metrics;
use serde_json::Value;
use state::{Current, Dropped, PolicySource, Refusal};

/// How `writ serve` was asked to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Policy files or directories (`default`, or none, is the embedded pack).
    pub policies: Vec<String>,
    /// The JSON data file.
    pub data: Option<PathBuf>,
    /// Where to listen.
    pub addr: SocketAddr,
    /// Where to write the decision log (`-` for stdout); none to not log.
    pub decision_log: Option<String>,
    /// Ship the decision log to this HTTP collector too (or only).
    pub decision_log_ship: Option<logship::ShipConfig>,
    /// A decision whose log line cannot be written is answered 503, not
    /// with the decision (the default).
    pub decision_log_required: bool,
    /// Sync each group of log lines to the disk before answering.
    pub decision_log_sync: bool,
    /// The listen backlog: connections the kernel queues before `accept`.
    pub backlog: u32,
    /// Request fields to redact in the decision log (`subject.id`).
    pub redact: Vec<String>,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// How long a client may take to send a request (headers and body).
    pub request_timeout: Duration,
    /// How often to look for changed policy files; zero turns watching off.
    pub watch_interval: Duration,
    /// How long changed files must stay unchanged before the watcher
    /// reads them as a new set.
    pub reload_settle: Duration,
    /// How long the watcher waits for changing files to settle before it
    /// reports (and counts) a failed reload; it goes on waiting after.
    pub reload_max_wait: Duration,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    /// After `SIGTERM`, how long to keep serving with `/ready` answering
    /// 503, so that a load balancer stops sending first.
    pub drain_delay: Duration,
    /// Runtime worker threads; none for one per CPU the process may use.
    pub workers: Option<usize>,
    /// Pin each worker thread to a CPU of its own.
    pub pin_workers: bool,
    /// The trust file `subject.token` is verified against (docs/identity.md).
    pub trust: Option<PathBuf>,
    /// The grant ledger (a SQLite file or a `postgres://` URL); none for no
    /// `/v1/grants` (docs/lifecycle.md).
    pub ledger: Option<String>,
    /// How far back `/v1/grants` counts a subject's issuances
    /// (`context.recent_issuances`).
    pub repeat_window: Duration,
    /// How long the ledger keeps what no longer holds (grants past their
    /// expiry or revocation, stored idempotent answers, feed rows) before a
    /// sweep deletes it (docs/lifecycle.md, "Retention").
    pub retention: Duration,
    /// Push the revocation feed to this webhook as Security Event Tokens
    /// (needs a ledger).
    pub webhook: Option<webhook::WebhookConfig>,
    /// The AuthZEN PDP identifier the metadata names (`https://pdp.example.com`);
    /// none for `http://` and the request's `Host`.
    pub authzen_pdp: Option<String>,
    /// `--bundle`: the policy set is a bundle pulled from this source
    /// instead of `policies` and `data`.
    pub bundle: Option<bundle_pull::BundleConfig>,
}

impl Config {
    /// The defaults: embedded pack, `127.0.0.1:8181`, no log (required and
    /// not synced when one is given), a backlog of 1024, 1 MiB bodies,
    /// 10 s request timeout, 1 s watch, 1 s settle, 30 s longest wait for
    /// files to settle, 30 s shutdown grace, no drain delay,
    /// one worker per CPU, not pinned, a retention of 7 days.
    pub fn new() -> Config {
        Config {
            policies: Vec::new(),
            data: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 8181)),
            decision_log: None,
            decision_log_ship: None,
            decision_log_required: true,
            decision_log_sync: false,
            backlog: 1024,
            redact: Vec::new(),
            max_body: crate::request::MAX_REQUEST_BYTES,
            request_timeout: Duration::from_secs(10),
            watch_interval: Duration::from_secs(1),
            reload_settle: Duration::from_secs(1),
            reload_max_wait: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            drain_delay: Duration::ZERO,
            workers: None,
            pin_workers: false,
            trust: None,
            ledger: None,
            repeat_window: Duration::from_secs(3600),
            retention: Duration::from_secs(7 * 24 * 3600),
            webhook: None,
            authzen_pdp: None,
            bundle: None,
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config::new()
    }
}

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) current: Current,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) log: Option<DecisionLog>,
    pub(crate) redaction: Redaction,
    pub(crate) max_body: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) draining: AtomicBool,
    /// Verifies `subject.token`s, on the server's clock.
    pub(crate) trust: Option<crate::identity::Trust>,
    /// The grant ledger, when `--ledger` is given.
    pub(crate) ledger: Option<crate::ledger::Ledger>,
    pub(crate) repeat_window: Duration,
    /// The revocation webhook's pusher, when `--revocation-webhook` is given.
    pub(crate) webhook: Option<Arc<webhook::Pusher>>,
    /// `--authzen-pdp`: the PDP identifier the AuthZEN metadata names.
    pub(crate) authzen_pdp: Option<String>,
    /// The bundle puller, with `--bundle`.
    pub(crate) bundle: Option<Arc<bundle_pull::Puller>>,
    /// The last successful and failed reloads, for `GET /v1/status`.
    pub(crate) reload_history: state::ReloadHistory,
    /// When the server started, for `GET /v1/status`.
    pub(crate) started_at: String,
    /// Where decisions are logged (`--decision-log`), for `GET /v1/status`.
    pub(crate) log_target: Option<String>,
    /// What `--policy` and `--data` named, read again on every reload.
    pub(crate) source: PolicySource,
    /// What the watcher has seen of the files; held by every reload, so
    /// there is one at a time.
    watch: tokio::sync::Mutex<Watch>,
}

/// Turns off the `tracing` spans of hyper's HTTP/2 codec (the `h2` crate
/// opens them on every frame and stream), unless the process has set a
/// subscriber of its own. writ writes no `tracing` output, so with no
/// subscriber the spans are off already, but `oci-client` turns on
/// `tracing`'s `log` feature, and that hands every span to the `log`
/// crate for as long as no dispatcher has been set: about 4,600
/// instructions of every HTTP/2 decision (callgrind, docs/performance.md
/// "Server CPU, round 30"). A dispatcher that takes nothing ends both.
fn quiet_tracing() {
    if !tracing::dispatcher::has_been_set() {
        // Set by another thread in between: theirs stands.
        let _ = tracing::dispatcher::set_global_default(tracing::Dispatch::none());
    }
}

/// Runs the server until `SIGTERM` or `SIGINT`. Errors are for stderr: a
/// policy set that does not compile, an address that cannot be bound, a
/// decision log that cannot be opened.
pub fn run(config: Config) -> Result<(), String> {
    quiet_tracing();
    // A workload token is a bearer credential: it is never written to the
    // decision log, whatever `--redact` says.
    let mut redact = config.redact.clone();
    if !redact.iter().any(|path| path == "subject.token") {
        redact.push("subject.token".to_owned());
    }
    let redaction = Redaction::new(&redact)?;
    if config.max_body == 0 {
        return Err("`--max-body` must be at least 1 byte".to_owned());
    }
    if config.backlog == 0 {
        return Err("`--backlog` must be at least 1".to_owned());
    }
    if config.decision_log_sync && !config.decision_log_required {
        return Err(
            "`--decision-log-sync` syncs before answering, which only the required mode waits for; drop `--decision-log-required=false`"
                .to_owned(),
        );
    }
    if config.ledger.is_some() && config.repeat_window < Duration::from_secs(1) {
        return Err(
            "`--repeat-window` must be at least 1s: a shorter window counts no earlier grant"
                .to_owned(),
        );
    }
    if config.ledger.is_some() && config.retention < Duration::from_secs(1) {
        return Err("`--retention` must be at least 1s".to_owned());
    }
    if config.webhook.is_some() && config.ledger.is_none() {
        return Err(
            "`--revocation-webhook` pushes the ledger's revocation feed: give `--ledger` too"
                .to_owned(),
        );
    }
    let webhook = match &config.webhook {
        Some(webhook) => Some(Arc::new(webhook::Pusher::new(webhook.clone())?)),
        None => None,
    };
    if let Some(pdp) = &config.authzen_pdp {
        search::check_pdp(pdp)?;
    }
    if config.workers == Some(0) {
        return Err("`--workers` must be at least 1".to_owned());
    }
    let cpus = if config.pin_workers {
        Some(pin::Cpus::allowed()?)
    } else {
        None
    };
    let trust = match &config.trust {
        Some(path) => {
            let trust = crate::identity::Trust::load(path).map_err(|e| e.to_string())?;
            eprintln!("writ: verifying subject.token against `{}`", path.display());
            for problem in trust.key_problems() {
                eprintln!(
                    "writ: {problem}; its tokens fail (keys_unavailable) until a fetch succeeds"
                );
            }
            Some(trust)
        }
        None => None,
    };
    let source = PolicySource {
        policies: config.policies.clone(),
        data: config.data.clone(),
    };
    let (loaded, bundle) = match &config.bundle {
        Some(bundle) => {
            if source.has_files() {
                return Err(
                    "`--bundle` brings the policies and the data: drop `--policy` and `--data`"
                        .to_owned(),
                );
            }
            let (puller, loaded) = bundle_pull::start(bundle)?;
            (loaded, Some(Arc::new(puller)))
        }
        None => (source.load()?, None),
    };
    let metrics = Arc::new(Metrics::default());
    let log = match (&config.decision_log, &config.decision_log_ship) {
        (None, None) => None,
        (target, shipping) => {
            let mode = LogMode {
                required: config.decision_log_required,
                sync: config.decision_log_sync,
            };
            let log = DecisionLog::open_sinks(
                target.as_deref(),
                shipping.clone(),
                mode,
                metrics.clone(),
            )?;
            let mut shown = match target.as_deref() {
                Some("-") => "on stdout".to_owned(),
                Some(target) => format!("`{target}`"),
                None => String::new(),
            };
            if let Some(shipper) = log.shipper() {
                if !shown.is_empty() {
                    shown.push_str(" and ");
                }
                shown.push_str(&format!("shipped to `{}`", shipper.url()));
            }
            eprintln!(
                "writ: decision log {shown}: {}{}",
                if mode.required {
                    "required (a decision is answered once its line is written)"
                } else {
                    "best effort (a line that cannot be written is lost)"
                },
                if mode.sync { ", synced" } else { "" }
            );
            Some(log)
        }
    };
    eprintln!(
        "writ: serving {} rule(s) from {} file(s), {}",
        loaded.engine.policy().rules.len(),
        loaded.files.len(),
        loaded.engine.digest()
    );
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("writ-serve");
    if let Some(workers) = config.workers {
        builder.worker_threads(workers);
    }

    if let Some(cpus) = cpus {
        eprintln!(
            "writ: pinning the workers to CPU {}, one each in turn",
            cpus.ids()
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        builder
            .on_thread_start(cpus.widen_on_start())
            .on_thread_park(cpus.pin_on_first_park());
    }
    let runtime = builder
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let ledger = match &config.ledger {
        Some(target) => {
            let ledger = runtime
                .block_on(crate::ledger::Ledger::open(target))
                .map_err(|e| format!("`--ledger {target}`: {e}"))?;
            match runtime.block_on(ledger.ping()) {
                Ok(()) => eprintln!("writ: grant ledger: {} `{}`", ledger.kind(), ledger.target()),
                Err(error) => eprintln!(
                    "writ: grant ledger: {} `{}` is not answering ({error}); /v1/grants answers 503 and /ready is false until it does",
                    ledger.kind(),
                    ledger.target()
                ),
            }
            if let (Some(pusher), Ok(())) = (&webhook, runtime.block_on(ledger.ping())) {
                // A new webhook starts at the feed's head, fixed here, before
                // the first request: what is revoked from now on is pushed.
                let start = async {
                    let head = ledger.feed_head().await?;
                    ledger
                        .delivery_cursor(pusher.url(), head, ledger.now())
                        .await
                };
                if let Err(error) = runtime.block_on(start) {
                    eprintln!("writ: revocation webhook: cannot read its cursor yet ({error}); it will try again");
                }
            }
            Some(ledger)
        }
        None => None,
    };
    let app = Arc::new(App {
        current: state::current(loaded),
        metrics,
        log,
        redaction,
        max_body: config.max_body,
        request_timeout: config.request_timeout,
        draining: AtomicBool::new(false),
        trust,
        ledger,
        repeat_window: config.repeat_window,
        webhook,
        authzen_pdp: config.authzen_pdp.clone(),
        bundle,
        reload_history: state::ReloadHistory::default(),
        started_at: now_rfc3339(),
        log_target: config.decision_log.clone(),
        source,
        watch: tokio::sync::Mutex::new(Watch::default()),
    });
    runtime.block_on(serve(app, &config))
}

async fn serve(app: Arc<App>, config: &Config) -> Result<(), String> {
    let listener = listen(config.addr, config.backlog)
        .map_err(|e| format!("cannot listen on `{}`: {e}", config.addr))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    eprintln!("writ: listening on http://{local}");

    let shutdown = shutdown_signal()?;
    tokio::pin!(shutdown);
    spawn_reload_on_hangup(app.clone())?;
    if let Some(pusher) = &app.webhook {
        eprintln!(
            "writ: revocation webhook: pushing the feed to `{}`",
            pusher.url()
        );
        tokio::spawn(webhook::run(app.clone(), pusher.clone()));
    }
    if let Some(puller) = &app.bundle {
        tokio::spawn(bundle_pull::run(app.clone(), puller.clone()));
    }
    if !config.watch_interval.is_zero() && app.source.has_files() {
        spawn_watcher(app.clone(), config);
    }
    http::spawn_sweeper(app.clone(), config.retention);

    let router = http::router(app.clone());
    let graceful = GracefulShutdown::new();
    let builder = connection_builder(config);
    let mut draining_until: Option<tokio::time::Instant> = None;
    loop {
        let drained = async {
            match draining_until {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown, if draining_until.is_none() => {
                app.draining.store(true, Ordering::SeqCst);
                if config.drain_delay.is_zero() {
                    break;
                }
                eprintln!(
                    "writ: draining: /ready answers 503, serving for {:?} more",
                    config.drain_delay
                );
                draining_until = Some(tokio::time::Instant::now() + config.drain_delay);
            }
            () = drained => break,
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Out of file descriptors and the like: back off
                        // instead of spinning.
                        eprintln!("writ: accept failed: {error}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = http::Service::new(app.clone(), router.clone());
                let socket = h2::Socket::new(stream);
                let connection = builder
                    .serve_connection(TokioIo::new(socket.clone()), service)
                    .into_owned();
                let watched = graceful.watch(connection);
                tokio::spawn(h2::Connection::new(watched, socket));
            }
        }
    }

    app.draining.store(true, Ordering::SeqCst);
    drop(listener);
    eprintln!("writ: shutting down; finishing requests in flight");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(config.shutdown_grace) => {
            eprintln!(
                "writ: requests still in flight after {:?}; stopping anyway",
                config.shutdown_grace
            );
        }
    }
    if let Some(log) = &app.log {
        log.close().await;
    }
    eprintln!("writ: stopped");
    Ok(())
}

/// How connections are served: HTTP/1.1, or HTTP/2 over cleartext TCP
/// when the client opens with the HTTP/2 preface (prior knowledge, RFC
/// 9113 section 3.3), told apart by the first bytes. A broker that
/// multiplexes many decisions over one HTTP/2 connection has them read and
/// answered with fewer system calls than one request a connection at a
/// time. An HTTP/2 connection's streams run inside its own task and
/// their answers leave with one write for all that are ready
/// ([`h2`]).
fn connection_builder(
    config: &Config,
) -> hyper_util::server::conn::auto::Builder<h2::StreamExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(h2::StreamExecutor);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.request_timeout)
        .max_buf_size(http::HYPER_MAX_HEAD)
        .max_headers(http::HYPER_MAX_HEADERS)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        // The same head limit as HTTP/1.1: larger header lists get
        // hyper's bodiless refusal, smaller ones reach [`http::guard`].
        .max_header_list_size(http::HYPER_MAX_HEAD as u32);
    builder
}

/// Binds `addr` with address reuse (as `TcpListener::bind` does) and the
/// given backlog; the kernel caps it at `net.core.somaxconn`.
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

#[cfg(unix)]
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

#[cfg(unix)]
fn spawn_reload_on_hangup(app: Arc<App>) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).map_err(|e| format!("cannot watch SIGHUP: {e}"))?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            reload(&app, Trigger::Signal).await;
        }
    });
    Ok(())
}

#[cfg(not(unix))]
fn spawn_reload_on_hangup(_app: Arc<App>) -> Result<(), String> {
    Ok(())
}

/// Who asked for a reload. Only an explicit one (a signal or a request)
/// may remove rules or files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// The watcher saw the files change and then settle.
    Watcher,
    /// `SIGHUP`.
    Signal,
    /// `POST /v1/policy/reload`.
    Request,
    /// The bundle puller found a new bundle.
    Bundle,
}

impl Trigger {
    fn label(self) -> &'static str {
        match self {
            Trigger::Watcher => "a policy file changed",
            Trigger::Signal => "SIGHUP",
            Trigger::Request => "POST /v1/policy/reload",
            Trigger::Bundle => "a new bundle was pulled",
        }
    }
}

/// What the watcher remembers between looks.
#[derive(Debug, Default)]
struct Watch {
    /// The content digest at the last look, and when that content was
    /// first seen: the files have settled once it is `--reload-settle` old.
    seen: Option<(String, Instant)>,
    /// Since when the files have differed from the serving set, for the
    /// bound on waiting (reset each time the wait is reported).
    changing_since: Option<Instant>,
    /// A content digest already tried and refused: not tried (or counted)
    /// again until the files change.
    refused: Option<String>,
}

impl Watch {
    /// Remembers a refused content, and starts the bound on waiting
    /// afresh for the next change.
    fn refuse(&mut self, key: String) {
        self.refused = Some(key);
        self.changing_since = None;
    }
}

/// What one reload did, for `POST /v1/policy/reload`.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Why the new set was refused; none if it was activated.
    pub(crate) refusal: Option<Refusal>,
    /// The digest serving after the reload.
    pub(crate) digest: String,
    /// The digest serving before it.
    pub(crate) previous: String,
    /// How many rules serve after the reload.
    pub(crate) rules: usize,
    /// What an activated explicit reload removed.
    pub(crate) dropped: Dropped,
}

impl Outcome {
    /// The JSON answer of `POST /v1/policy/reload`.
    pub(crate) fn to_json(&self) -> Value {
        let mut body = serde_json::json!({
            "status": if self.refusal.is_none() { "activated" } else { "refused" },
            "digest": self.digest,
            "previous": self.previous,
            "rules": self.rules,
        });
        match &self.refusal {
            Some(refusal) => body["reason"] = Value::String(refusal.to_string()),
            None => {
                body["dropped_rules"] = serde_json::json!(self.dropped.rules);
                body["dropped_files"] = serde_json::json!(self.dropped.files);
            }
        }
        body
    }
}

/// The watcher polls (reads the set and compares content digests) rather
/// than subscribing to file events through `notify`: events are unreliable
/// on the network and overlay file systems policies are mounted from, and a
/// Kubernetes ConfigMap update is one symlink swap two directories up,
/// which inotify on the files never reports. A read a second is cheap.
fn spawn_watcher(app: Arc<App>, config: &Config) {
    let every = config.watch_interval;
    let settle = config.reload_settle;
    let max_wait = config.reload_max_wait.max(settle);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            look(&app, settle, max_wait).await;
        }
    });
}

/// Reads the whole set on a blocking thread.
async fn read_set(app: &App) -> Result<state::Snapshot, String> {
    let source = app.source.clone();
    tokio::task::spawn_blocking(move || source.read())
        .await
        .unwrap_or_else(|error| Err(format!("the reading thread failed: {error}")))
}

/// One look of the watcher. Files that differ from the serving set must
/// keep the same content for `settle` (compared by content digest, not by
/// size and time), and then read the same twice in a row, before they are
/// prepared as a new set; a set that keeps changing is reported once per
/// `max_wait`.
async fn look(app: &Arc<App>, settle: Duration, max_wait: Duration) {
    let mut watch = app.watch.lock().await;
    let read = read_set(app).await;
    let key = match &read {
        Ok(snapshot) => snapshot.content.clone(),
        Err(message) => format!("unreadable: {message}"),
    };
    let now = Instant::now();
    if key == app.current.load().content {
        *watch = Watch {
            seen: Some((key, now)),
            ..Watch::default()
        };
        return;
    }
    if watch.refused.as_deref() == Some(key.as_str()) {
        return;
    }
    let since = match &watch.seen {
        Some((seen, since)) if *seen == key => *since,
        _ => {
            watch.seen = Some((key.clone(), now));
            now
        }
    };
    let changing_since = *watch.changing_since.get_or_insert(now);
    if now.duration_since(since) < settle {
        if now.duration_since(changing_since) >= max_wait {
            watch.changing_since = Some(now);
            finish(
                app,
                Trigger::Watcher,
                Err(Refusal::NeverSettled { waited: max_wait }),
            );
        }
        return;
    }
    let first = match read {
        Ok(snapshot) => snapshot,
        Err(message) => {
            finish(app, Trigger::Watcher, Err(Refusal::Read(message)));
            watch.refuse(key);
            return;
        }
    };
    let second = match read_set(app)
        .await
        .map(|second| state::same_twice(&first, second))
    {
        Ok(Ok(second)) => second,
        // Still being written: start the settle interval again.
        _ => {
            watch.seen = None;
            return;
        }
    };
    let outcome = prepare_and_swap(app, Trigger::Watcher, second).await;
    if outcome.refusal.is_some() {
        watch.refuse(key);
    } else {
        *watch = Watch::default();
    }
}

/// An explicit reload (`SIGHUP`, `POST /v1/policy/reload`): reads the set
/// twice (trying again a few times while a writer is busy), then checks,
/// compiles and swaps it in. It may remove rules and files; it still
/// refuses an empty file, a set that does not match its manifest and one
/// that does not compile.
pub(crate) async fn reload(app: &Arc<App>, trigger: Trigger) -> Outcome {
    if let Some(puller) = &app.bundle {
        return bundle_pull::reload(app, puller, trigger).await;
    }
    let mut watch = app.watch.lock().await;
    let mut attempts = 0;
    let snapshot = loop {
        let source = app.source.clone();
        let read = tokio::task::spawn_blocking(move || source.read_stable())
            .await
            .unwrap_or_else(|error| {
                Err(Refusal::Read(format!("the reading thread failed: {error}")))
            });
        match read {
            Err(Refusal::Changing) if attempts < 5 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => break other,
        }
    };
    let outcome = match snapshot {
        Ok(snapshot) => {
            let key = snapshot.content.clone();
            let outcome = prepare_and_swap(app, trigger, snapshot).await;
            if outcome.refusal.is_some() {
                watch.refuse(key);
            }
            outcome
        }
        Err(refusal) => finish(app, trigger, Err(refusal)),
    };
    if outcome.refusal.is_none() {
        *watch = Watch::default();
    }
    outcome
}

/// Checks and compiles a stable snapshot aside, then swaps it in or
/// refuses it.
async fn prepare_and_swap(app: &Arc<App>, trigger: Trigger, snapshot: state::Snapshot) -> Outcome {
    let serving = app.current.load_full();
    let explicit = trigger != Trigger::Watcher;
    let result = tokio::task::spawn_blocking(move || state::prepare(&serving, &snapshot, explicit))
        .await
        .unwrap_or_else(|error| {
            Err(Refusal::Read(format!(
                "the compiling thread failed: {error}"
            )))
        });
    let outcome = finish(app, trigger, result);
    if outcome.refusal.is_none() {
        // The new set re-decides every live grant, in the background.
        http::spawn_redecision(app.clone(), outcome.digest.clone());
    }
    outcome
}

/// Swaps an accepted set in, or keeps the old one; either way counts it
/// and says so on stderr.
fn finish(
    app: &App,
    trigger: Trigger,
    result: Result<(state::Loaded, Dropped), Refusal>,
) -> Outcome {
    let why = trigger.label();
    let serving = app.current.load_full();
    let previous = serving.engine.digest().to_owned();
    match result {
        Ok((loaded, dropped)) => {
            let digest = loaded.engine.digest().to_owned();
            let rules = loaded.engine.policy().rules.len();
            eprintln!(
                "writ: reloaded ({why}): {rules} rule(s) from {} file(s), {digest} (was {previous})",
                loaded.files.len(),
            );
            if !dropped.is_empty() {
                eprintln!("writ: reload ({why}) removed {dropped}, as asked");
            }
            app.current.store(Arc::new(loaded));
            app.metrics.reload(true);
            app.reload_history.record(why, &digest, None);
            Outcome {
                refusal: None,
                digest,
                previous,
                rules,
                dropped,
            }
        }
        Err(refusal) => {
            app.metrics.reload(false);
            app.reload_history
                .record(why, &previous, Some(refusal.to_string()));
            match &refusal {
                Refusal::Compile(_) | Refusal::Read(_) => {
                    eprintln!("writ: reload ({why}) failed; still serving {previous}\n{refusal}")
                }
                _ => eprintln!("writ: reload ({why}) refused; still serving {previous}: {refusal}"),
            }
            Outcome {
                refusal: Some(refusal),
                digest: previous.clone(),
                previous,
                rules: serving.engine.policy().rules.len(),
                dropped: Dropped::default(),
            }
        }
    }
}

/// Writes `DIR/writ.manifest` for the `.writ` files below `dir` (aside,
/// then renamed into place) and returns its text.
pub fn write_manifest(dir: &std::path::Path) -> Result<String, String> {
    let text = state::manifest_text(dir)?;
    let target = dir.join(state::MANIFEST);
    let aside = dir.join(format!(".{}.tmp", state::MANIFEST));
    std::fs::write(&aside, &text)
        .map_err(|e| format!("cannot write `{}`: {e}", aside.display()))?;
    std::fs::rename(&aside, &target).map_err(|e| {
        format!(
            "cannot rename `{}` to `{}`: {e}",
            aside.display(),
            target.display()
        )
    })?;
    Ok(text)
}

/// The server clock, RFC 3339 in UTC.
pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_rfc3339() {
        assert!(crate::request::parse_time(&now_rfc3339()).is_some());
    }
}
