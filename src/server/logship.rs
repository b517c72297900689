//! Shipping the decision log to an HTTP collector (`--decision-log-url`):
//! batches of JSON lines, `POST`ed as `application/x-ndjson` (what Vector's
//! `http_server` source reads with newline-delimited framing).
//!
//! Handlers hand their lines to a bounded buffer and a thread of its own
//! posts them with `ureq` (the client the JWKS fetcher and the webhook
//! use), so no decision waits on the network unless the log is required:
//!
//! - **best effort** (`--decision-log-required=false`): a line joins the
//!   buffer and the decision is answered. A batch goes when it holds
//!   `--decision-log-batch` lines or its oldest line is
//!   `--decision-log-interval` old. A batch the collector does not take
//!   (no answer, a timeout, any status but 2xx) is tried again, with
//!   backoff, until it is taken; lines keep joining the buffer meanwhile,
//!   up to `--decision-log-buffer` lines, after which new lines are
//!   dropped (and counted). Delivery is at least once: a collector that
//!   stored a batch but did not answer 2xx in time gets it again.
//! - **required** (the default with a log): a decision is answered only
//!   once the collector took its line, so a batch goes as soon as lines
//!   wait (whatever the interval). A batch the collector does not take
//!   fails its decisions (`503`), is not sent again, and `/ready` answers
//!   `503` until a batch is taken; while the last attempt failed, lines are
//!   failed at once for the backoff, and the next batch after it tests
//!   the collector again.
//!
//! `writ_decision_log_lines_total{sink="http",result}` counts lines sent,
//! retried (each line of each failed attempt that will be tried again) and
//! dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::metrics::Metrics;

/// The first retry's delay; each failure doubles it, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How long one `POST` may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// How long shutdown spends delivering what is buffered.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// Where and how to ship.
#[derive(Debug, Clone)]
pub struct ShipConfig {
    /// The collector's URL (`http://` or `https://`).
    pub url: String,
    /// Most lines in one `POST`.
    pub batch: usize,
    /// How long a line may wait for its batch to fill (best effort).
    pub interval: Duration,
    /// Most lines held (the batch being tried included); more are dropped.
    pub buffer: usize,
}

impl ShipConfig {
    /// Shipping to `url` with the defaults: batches of up to 500 lines,
    /// sent at least every second, up to 10,000 lines buffered.
    pub fn new(url: &str) -> ShipConfig {
        ShipConfig {
            url: url.to_owned(),
            batch: 500,
            interval: Duration::from_secs(1),
            buffer: 10_000,
        }
    }

    /// Checks the URL and the sizes.
    pub(crate) fn check(&self) -> Result<(), String> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!(
                "`--decision-log-url {}` is not an http:// or https:// URL",
                self.url
            ));
        }
        if self.batch == 0 {
            return Err("`--decision-log-batch` must be at least 1 line".to_owned());
        }
        if self.buffer < self.batch {
            return Err(format!(
                "`--decision-log-buffer` ({}) must hold at least one batch (`--decision-log-batch` {})",
                self.buffer, self.batch
            ));
        }
        if self.interval.is_zero() {
            return Err("`--decision-log-interval` must be more than 0s".to_owned());
        }
        Ok(())
    }
}

/// The lines of one commit, and who waits for them (required mode).
struct Group {
    lines: Vec<String>,
    ack: Option<oneshot::Sender<bool>>,
    since: Instant,
}

/// What the handlers and the thread share.
#[derive(Default)]
struct Queue {
    groups: VecDeque<Group>,
    /// Lines in `groups`.
    lines: usize,
    closing: bool,
}

/// Counts and the last outcome, for `/v1/status`.
#[derive(Debug, Default, Clone)]
struct Health {
    last_success: Option<SystemTime>,
    last_failure: Option<SystemTime>,
    last_error: Option<String>,
}

struct Shared {
    config: ShipConfig,
    required: bool,
    queue: Mutex<Queue>,
    wake: Condvar,
    /// False from a failed attempt until a batch is taken.
    healthy: AtomicBool,
    health: Mutex<Health>,
    metrics: Arc<Metrics>,
}

/// The handlers' side of the shipper.
pub(crate) struct Shipper {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper")
            .field("url", &self.shared.config.url)
            .finish()
    }
}

impl Shipper {
    /// Starts the shipping thread.
    pub(crate) fn start(
        config: ShipConfig,
        required: bool,
        metrics: Arc<Metrics>,
    ) -> Result<Shipper, String> {
        config.check()?;
        metrics.shipping_on();
        let shared = Arc::new(Shared {
            config,
            required,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            healthy: AtomicBool::new(true),
            health: Mutex::new(Health::default()),
            metrics,
        });
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("writ/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("writ-log-ship".to_owned())
            .spawn(move || run(&thread_shared, &agent))
            .map_err(|e| format!("cannot start the decision log shipper: {e}"))?;
        Ok(Shipper {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The collector's URL, as shown (a password in it replaced).
    pub(crate) fn url(&self) -> String {
        shown(&self.shared.config.url)
    }

    /// Whether the last attempt succeeded (or none was made yet).
    pub(crate) fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::SeqCst)
    }

    /// Hands `lines` over. Best effort: returns `None` at once (lines the
    /// buffer has no room for are dropped). Required: returns what will
    /// say whether the collector took them (false at once when the buffer
    /// is full; false without an attempt when they wait during the backoff
    /// after a failure).
    pub(crate) fn offer(&self, lines: Vec<String>) -> Option<oneshot::Receiver<bool>> {
        let shared = &self.shared;
        let count = lines.len();
        let (ack, heard) = if shared.required {
            let (ack, heard) = oneshot::channel();
            (Some(ack), Some(heard))
        } else {
            (None, None)
        };
        let Ok(mut queue) = shared.queue.lock() else {
            shared.metrics.shipped_dropped(count as u64);
            return shared.required.then(failed);
        };
        if queue.closing || queue.lines + count > shared.config.buffer {
            drop(queue);
            shared.metrics.shipped_dropped(count as u64);
            if let Some(ack) = ack {
                let _ = ack.send(false);
            }
            return heard;
        }
        queue.lines += count;
        queue.groups.push_back(Group {
            lines,
            ack,
            since: Instant::now(),
        });
        // The thread sleeps with nothing queued: the first group starts
        // the interval's clock; a full batch goes at once.
        let wake = shared.required || queue.groups.len() == 1 || queue.lines >= shared.config.batch;
        drop(queue);
        if wake {
            shared.wake.notify_one();
        }
        heard
    }

    /// Lines waiting to be delivered.
    pub(crate) fn buffered(&self) -> usize {
        self.shared.queue.lock().map_or(0, |q| q.lines)
    }

    /// The shipper's part of `GET /v1/status`.
    pub(crate) fn status(&self) -> Value {
        let health = self
            .shared
            .health
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default();
        let at = |t: Option<SystemTime>| {
            t.and_then(|t| {
                time::OffsetDateTime::from(t)
                    .format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
        };
        let (sent, retried, dropped) = self.shared.metrics.shipped();
        json!({
            "url": self.url(),
            "healthy": self.healthy(),
            "buffered": self.buffered(),
            "buffer": self.shared.config.buffer,
            "sent": sent,
            "retried": retried,
            "dropped": dropped,
            "last_success": at(health.last_success),
            "last_failure": at(health.last_failure),
            "last_error": health.last_error,
        })
    }

    /// Asks the thread to deliver what is buffered (for at most
    /// [`CLOSE_WITHIN`]; lines still undelivered then are counted as
    /// dropped) and stop; returns the thread, to be joined.
    pub(crate) fn close(&self) -> Option<JoinHandle<()>> {
        if let Ok(mut queue) = self.shared.queue.lock() {
            queue.closing = true;
        }
        self.shared.wake.notify_all();
        self.thread.lock().ok().and_then(|mut t| t.take())
    }
}

/// `url` with the password of its user info, if any, replaced by `***`.
fn shown(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{}", &rest[authority.len()..])
        }
        None => url.to_owned(),
    }
}

/// A receiver that already heard `false`.
fn failed() -> oneshot::Receiver<bool> {
    let (ack, heard) = oneshot::channel();
    let _ = ack.send(false);
    heard
}

/// The shipping thread: waits for a batch, posts it, retries or fails it.
fn run(shared: &Shared, agent: &ureq::Agent) {
    let mut backoff = FIRST_BACKOFF;
    let mut closing_since: Option<Instant> = None;
    loop {
        // Wait for a batch worth sending.
        let batch = {
            let Ok(mut queue) = shared.queue.lock() else {
                return;
            };
            loop {
                if queue.closing && closing_since.is_none() {
                    closing_since = Some(Instant::now());
                }
                if closing_since.is_some_and(|since| since.elapsed() >= CLOSE_WITHIN) {
                    // Shutdown's time is up: what is left is dropped.
                    fail_waiting(shared, &mut queue);
                    return;
                }
                if queue.groups.is_empty() {
                    if queue.closing {
                        return;
                    }
                    queue = match shared.wake.wait(queue) {
                        Ok(q) => q,
                        Err(_) => return,
                    };
                    continue;
                }
                let oldest = queue
                    .groups
                    .front()
                    .map_or(Duration::ZERO, |g| g.since.elapsed());
                let due = shared.required
                    || queue.closing
                    || queue.lines >= shared.config.batch
                    || oldest >= shared.config.interval;
                if due {
                    break;
                }
                let left = shared.config.interval.saturating_sub(oldest);
                queue = match shared.wake.wait_timeout(queue, left) {
                    Ok((q, _)) => q,
                    Err(_) => return,
                };
            }
            // The first groups, up to a batch of lines (at least one group).
            let mut body = String::new();
            let mut groups = 0;
            let mut lines = 0;
            for group in &queue.groups {
                if groups > 0 && lines + group.lines.len() > shared.config.batch {
                    break;
                }
                for line in &group.lines {
                    body.push_str(line);
                    body.push('\n');
                }
                groups += 1;
                lines += group.lines.len();
            }
            (body, groups, lines)
        };
        let (body, groups, lines) = batch;
        let outcome = post(agent, &shared.config.url, body);
        let Ok(mut queue) = shared.queue.lock() else {
            return;
        };
        let taken: Vec<Group> = match &outcome {
            Ok(()) => queue.groups.drain(..groups).collect(),
            // Required: the decisions fail now; their lines are not sent
            // again. Closing: no retry after the deadline.
            Err(_)
                if shared.required
                    || closing_since.is_some_and(|since| since.elapsed() >= CLOSE_WITHIN) =>
            {
                queue.groups.drain(..groups).collect()
            }
            Err(_) => Vec::new(),
        };
        queue.lines -= taken.iter().map(|g| g.lines.len()).sum::<usize>();
        drop(queue);
        let now = SystemTime::now();
        match outcome {
            Ok(()) => {
                backoff = FIRST_BACKOFF;
                shared.metrics.shipped_sent(lines as u64);
                if let Ok(mut health) = shared.health.lock() {
                    health.last_success = Some(now);
                }
                if !shared.healthy.swap(true, Ordering::SeqCst) {
                    eprintln!(
                        "writ: the decision log collector `{}` takes lines again",
                        shown(&shared.config.url)
                    );
                }
                for group in taken {
                    if let Some(ack) = group.ack {
                        let _ = ack.send(true);
                    }
                }
            }
            Err(error) => {
                if let Ok(mut health) = shared.health.lock() {
                    health.last_failure = Some(now);
                    health.last_error = Some(error.clone());
                }
                if shared.healthy.swap(false, Ordering::SeqCst) {
                    eprintln!(
                        "writ: the decision log collector `{}` did not take a batch of {lines} line(s): {error}; {}",
                        shown(&shared.config.url),
                        if shared.required {
                            "its decisions are answered 503 (the log is required)"
                        } else {
                            "it will be tried again"
                        }
                    );
                }
                if taken.is_empty() {
                    shared.metrics.shipped_retried(lines as u64);
                } else {
                    shared.metrics.shipped_dropped(lines as u64);
                    for group in taken {
                        if let Some(ack) = group.ack {
                            let _ = ack.send(false);
                        }
                    }
                }
                // Wait before the next attempt. Required: lines that wait
                // (or come) meanwhile fail at once rather than wait for it.
                let mut until = Instant::now() + backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                let Ok(mut queue) = shared.queue.lock() else {
                    return;
                };
                loop {
                    if shared.required {
                        fail_waiting(shared, &mut queue);
                    }
                    if queue.closing {
                        // Closing: no wait past the deadline.
                        let since = *closing_since.get_or_insert_with(Instant::now);
                        until = until.min(since + CLOSE_WITHIN);
                    }
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    queue = match shared.wake.wait_timeout(queue, until - now) {
                        Ok((q, _)) => q,
                        Err(_) => return,
                    };
                }
            }
        }
    }
}

/// Fails (and counts as dropped) every waiting group: required mode
/// during a backoff, and what is left when shutdown's time is up.
fn fail_waiting(shared: &Shared, queue: &mut Queue) {
    let lines = queue.lines as u64;
    if lines == 0 {
        return;
    }
    for group in queue.groups.drain(..) {
        if let Some(ack) = group.ack {
            let _ = ack.send(false);
        }
    }
    queue.lines = 0;
    shared.metrics.shipped_dropped(lines);
}

/// One `POST`: 2xx is taken; anything else is an error naming it.
fn post(agent: &ureq::Agent, url: &str, body: String) -> Result<(), String> {
    match agent
        .post(url)
        .header("Content-Type", "application/x-ndjson")
        .send(body)
    {
        Ok(mut response) => {
            let status = response.status().as_u16();
            if (200..300).contains(&status) {
                return Ok(());
            }
            let text = response
                .body_mut()
                .with_config()
                .limit(512)
                .read_to_string()
                .unwrap_or_default();
            Err(format!("HTTP {status} {}", text.trim()))
        }
        Err(error) => Err(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            shown("https://writ:s3cret@logs.example.com/in?x=1"),
            "https://writ:***@logs.example.com/in?x=1"
        );
        assert_eq!(shown("http://c:8686/"), "http://c:8686/");
    }

    #[test]
    fn configs_are_checked() {
        assert!(ShipConfig::new("http://collector:8686/").check().is_ok());
        assert!(ShipConfig::new("collector:8686").check().is_err());
        let mut config = ShipConfig::new("http://c/");
        config.batch = 0;
        assert!(config.check().is_err());
        let mut config = ShipConfig::new("http://c/");
        config.buffer = 10;
        config.batch = 20;
        assert!(config.check().is_err());
        let mut config = ShipConfig::new("http://c/");
        config.interval = Duration::ZERO;
        assert!(config.check().is_err());
    }

    #[test]
    fn a_full_buffer_drops_new_lines_and_counts_them() {
        let metrics = Arc::new(Metrics::default());
        // A port nothing listens on: every attempt fails at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a port");
        let mut config = ShipConfig::new(&format!("http://127.0.0.1:{port}/"));
        config.batch = 2;
        config.buffer = 4;
        let shipper = Shipper::start(config, false, metrics.clone()).expect("starts");
        for n in 0..10 {
            assert!(shipper.offer(vec![format!("{{\"n\":{n}}}")]).is_none());
        }
        let (sent, _, dropped) = metrics.shipped();
        assert_eq!((sent, dropped), (0, 6));
        assert_eq!(shipper.buffered(), 4);
    }
}
