//! `writ serve`: the decision service brokers call.
//!
//! An HTTP/1.1 server (hyper under axum's router, on tokio) that answers
//! contract.md's requests (`POST /v1/decide`, `POST /v1/decide/batch`) and
//! the OpenID AuthZEN 1.0 Access Evaluation API (`POST /access/v1/evaluation`,
//! `POST /access/v1/evaluations`), reports its policy set (`GET /v1/policy`),
//! liveness and readiness (`GET /health`, `GET /ready`) and Prometheus
//! metrics (`GET /metrics`).
//!
//! The policy set is reloaded on `SIGHUP` and when a policy or data file
//! changes (checked every second); a set that does not compile is refused
//! and the last good one keeps serving. Every decision can be written to a
//! decision log, one JSON line each, by a writer thread; by default a
//! decision is answered only once its line is written. `SIGTERM` and
//! `SIGINT` stop accepting connections, let the requests in flight finish,
//! flush the log and exit. See `docs/server.md`.

mod authzen;
mod http;
mod ids;
mod log;
mod metrics;
mod pin;
mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use log::{DecisionLog, LogMode, Redaction};
use metrics::Metrics;
use state::{Current, Fingerprint, PolicySource};

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
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    /// After `SIGTERM`, how long to keep serving with `/ready` answering
    /// 503, so that a load balancer stops sending first.
    pub drain_delay: Duration,
    /// Runtime worker threads; none for one per CPU the process may use.
    pub workers: Option<usize>,
    /// Pin each worker thread to a CPU of its own.
    pub pin_workers: bool,
}

impl Config {
    /// The defaults: embedded pack, `127.0.0.1:8181`, no log (required and
    /// not synced when one is given), a backlog of 1024, 1 MiB bodies,
    /// 10 s request timeout, 1 s watch, 30 s shutdown grace, no drain delay,
    /// one worker per CPU, not pinned.
    pub fn new() -> Config {
        Config {
            policies: Vec::new(),
            data: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 8181)),
            decision_log: None,
            decision_log_required: true,
            decision_log_sync: false,
            backlog: 1024,
            redact: Vec::new(),
            max_body: crate::request::MAX_REQUEST_BYTES,
            request_timeout: Duration::from_secs(10),
            watch_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            drain_delay: Duration::ZERO,
            workers: None,
            pin_workers: false,
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
    source: PolicySource,
    /// The files as the last reload (or the start) saw them; one reload at
    /// a time.
    fingerprint: tokio::sync::Mutex<Fingerprint>,
}

/// Runs the server until `SIGTERM` or `SIGINT`. Errors are for stderr: a
/// policy set that does not compile, an address that cannot be bound, a
/// decision log that cannot be opened.
pub fn run(config: Config) -> Result<(), String> {
    let redaction = Redaction::new(&config.redact)?;
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
    if config.workers == Some(0) {
        return Err("`--workers` must be at least 1".to_owned());
    }
    let cpus = if config.pin_workers {
        Some(pin::Cpus::allowed()?)
    } else {
        None
    };
    let source = PolicySource {
        policies: config.policies.clone(),
        data: config.data.clone(),
    };
    let fingerprint = source.fingerprint();
    let loaded = source.load()?;
    let metrics = Arc::new(Metrics::default());
    let log = match &config.decision_log {
        Some(target) => {
            let mode = LogMode {
                required: config.decision_log_required,
                sync: config.decision_log_sync,
            };
            let log = DecisionLog::open(target, mode, metrics.clone())?;
            let shown = if target == "-" {
                "on stdout".to_owned()
            } else {
                format!("`{target}`")
            };
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
        None => None,
    };
    eprintln!(
        "writ: serving {} rule(s) from {} file(s), {}",
        loaded.engine.policy().rules.len(),
        loaded.files.len(),
        loaded.engine.digest()
    );
    let app = Arc::new(App {
        current: state::current(loaded),
        metrics,
        log,
        redaction,
        max_body: config.max_body,
        request_timeout: config.request_timeout,
        draining: AtomicBool::new(false),
        source,
        fingerprint: tokio::sync::Mutex::new(fingerprint),
    });
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
    if !config.watch_interval.is_zero() {
        spawn_watcher(app.clone(), config.watch_interval);
    }

    let router = http::router(app.clone());
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.request_timeout)
        .max_buf_size(http::HYPER_MAX_HEAD)
        .max_headers(http::HYPER_MAX_HEADERS)
        .keep_alive(true);

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
                let service = TowerToHyperService::new(router.clone());
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                let watched = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = watched.await;
                });
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
            reload(&app, "SIGHUP").await;
        }
    });
    Ok(())
}

#[cfg(not(unix))]
fn spawn_reload_on_hangup(_app: Arc<App>) -> Result<(), String> {
    Ok(())
}

fn spawn_watcher(app: Arc<App>, every: Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let source = app.source.clone();
            let now = match tokio::task::spawn_blocking(move || source.fingerprint()).await {
                Ok(now) => now,
                Err(_) => continue,
            };
            let changed = *app.fingerprint.lock().await != now;
            if changed {
                // Let an editor or a deploy finish writing before reading.
                tokio::time::sleep(Duration::from_millis(100)).await;
                reload(&app, "a policy file changed").await;
            }
        }
    });
}

/// Compiles the files aside and swaps the new set in; on failure keeps the
/// old set, prints the diagnostics and counts the failure.
async fn reload(app: &Arc<App>, why: &str) {
    let mut fingerprint = app.fingerprint.lock().await;
    let source = app.source.clone();
    let result = tokio::task::spawn_blocking(move || {
        let seen = source.fingerprint();
        (seen, source.load())
    })
    .await;
    let (seen, loaded) = match result {
        Ok(pair) => pair,
        Err(error) => {
            app.metrics.reload(false);
            eprintln!("writ: reload ({why}) failed: {error}");
            return;
        }
    };
    *fingerprint = seen;
    match loaded {
        Ok(loaded) => {
            let previous = app.current.load().engine.digest().to_owned();
            eprintln!(
                "writ: reloaded ({why}): {} rule(s) from {} file(s), {} (was {previous})",
                loaded.engine.policy().rules.len(),
                loaded.files.len(),
                loaded.engine.digest()
            );
            app.current.store(Arc::new(loaded));
            app.metrics.reload(true);
        }
        Err(message) => {
            app.metrics.reload(false);
            eprintln!(
                "writ: reload ({why}) failed; still serving {}\n{message}",
                app.current.load().engine.digest()
            );
        }
    }
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
