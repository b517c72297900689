//! `writ serve --bundle URL`: the policy set comes from a signed bundle
//! polled from an HTTP(S) server (docs/fleet.md).
//!
//! Every `--bundle-poll` the puller asks the source with the last ETag in
//! `If-None-Match`; a `304` or the same archive bytes change nothing. A new
//! archive is checked whole ([`crate::bundle::open`]: digests, paths,
//! versions, signature against the `--bundle-key`s, compile) on a blocking
//! thread, and only a bundle that passed is swapped in, through the same
//! atomic store and report as every reload. A refused bundle leaves the
//! last good one serving and is reported in `/v1/status` and `/metrics`;
//! a source that fails (down, slow past the timeout, 5xx) is asked again
//! after an exponential backoff. The last good archive is kept in
//! `--bundle-cache` (written aside, synced, renamed), so that a replica
//! whose source is down at start serves from it.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::metrics::label;
use super::state::{Dropped, Loaded, Refusal};
use super::status::{rfc3339, unix_seconds};
use super::{App, Trigger};
use crate::bundle::{Bundle, TrustedKey};

/// The longest wait between two fetches after failures (or the poll
/// interval, if that is longer).
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The cached bundle's file name in `--bundle-cache`.
const CACHE_FILE: &str = "bundle.tar.gz";

/// What `--bundle` and its flags ask for.
#[derive(Debug, Clone)]
pub struct BundleConfig {
    /// `http://` or `https://` URL of the archive.
    pub url: String,
    /// How often to poll.
    pub poll: Duration,
    /// How long one fetch (or one registry operation) may take; also how
    /// long a replica whose source hangs waits before it starts from its
    /// cache.
    pub timeout: Duration,
    /// Where the last good bundle is kept.
    pub cache: Option<PathBuf>,
    /// Trusted Ed25519 public keys (PEM files); with any, an unsigned
    /// bundle is refused.
    pub keys: Vec<PathBuf>,
}

impl BundleConfig {
    /// `url`, polled every 30 s, fetches limited to 30 s, no cache, no
    /// key.
    pub fn new(url: &str) -> BundleConfig {
        BundleConfig {
            url: url.to_owned(),
            poll: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            cache: None,
            keys: Vec::new(),
        }
    }
}

/// The bundle serving.
#[derive(Debug, Clone)]
struct Active {
    revision: String,
    policy_digest: String,
    digest: String,
    signed_by: Option<String>,
    at: SystemTime,
    from: &'static str,
}

impl Active {
    fn of(bundle: &Bundle, from: &'static str) -> Active {
        Active {
            revision: bundle.manifest.revision.clone(),
            policy_digest: bundle.manifest.policy_digest.clone(),
            digest: bundle.archive_digest.clone(),
            signed_by: bundle.signed_by.clone(),
            at: SystemTime::now(),
            from,
        }
    }
}

/// An outcome with its time and error.
#[derive(Debug, Clone)]
struct Event {
    at: SystemTime,
    revision: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Default)]
struct PullState {
    etag: Option<String>,
    active: Option<Active>,
    /// The archive digest last refused, not checked (or counted) again.
    refused: Option<String>,
    last_failure: Option<Event>,
    last_fetch_error: Option<Event>,
    fetch_failures: u64,
    consecutive_failures: u32,
    activations: u64,
    refusals: u64,
}

impl PullState {
    /// Records the bundle now serving.
    fn activate(&mut self, active: Active) {
        self.active = Some(active);
        self.activations += 1;
    }
}

/// The puller: its settings and what it has seen.
#[derive(Debug)]
pub(crate) struct Puller {
    url: String,
    poll: Duration,
    cache: Option<PathBuf>,
    keys: Vec<TrustedKey>,
    agent: ureq::Agent,
    /// The registry client, for an `oci://` source.
    #[cfg(feature = "oci")]
    oci: Option<super::oci::Registry>,
    /// Held by every pull, so that a poll and a `SIGHUP` do not both
    /// activate the same bundle.
    pulling: tokio::sync::Mutex<()>,
    state: Mutex<PullState>,
}

/// One fetch's answer.
enum Fetched {
    NotModified,
    Body {
        bytes: Vec<u8>,
        etag: Option<String>,
    },
}

/// What one poll did.
enum Pulled {
    Unchanged,
    Done(super::Outcome),
    FetchFailed,
}

impl Puller {
    fn new(config: &BundleConfig) -> Result<Puller, String> {
        let url = config.url.trim();
        let oci = if url.starts_with("oci://") {
            Some(super::oci::Reference::parse(url).map_err(|e| format!("`--bundle`: {e}"))?)
        } else {
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            if rest.map_or(true, str::is_empty) {
                return Err(format!(
                    "`--bundle {url}` is not an http://, https:// or oci:// URL"
                ));
            }
            None
        };
        if config.poll < Duration::from_millis(100) {
            return Err("`--bundle-poll` must be at least 100ms".to_owned());
        }
        if config.timeout < Duration::from_millis(100) {
            return Err("`--bundle-timeout` must be at least 100ms".to_owned());
        }
        let keys = config
            .keys
            .iter()
            .map(|path| TrustedKey::read(path).map_err(|e| format!("`--bundle-key`: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(dir) = &config.cache {
            std::fs::create_dir_all(dir).map_err(|e| {
                format!("`--bundle-cache {}`: cannot create it: {e}", dir.display())
            })?;
        }
        #[cfg(feature = "oci")]
        let oci = oci
            .map(|reference| {
                super::oci::Registry::new(&reference, &super::oci::ProcessEnv, config.timeout)
                    .map_err(|e| format!("`--bundle {url}`: {e}"))
            })
            .transpose()?;
        #[cfg(not(feature = "oci"))]
        if oci.is_some() {
            return Err(format!(
                "`--bundle {url}`: this writ was built without the `oci` feature"
            ));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .max_redirects(3)
            .https_only(url.starts_with("https://"))
            .user_agent(concat!("writ/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Puller {
            url: url.to_owned(),
            poll: config.poll,
            cache: config.cache.clone(),
            keys,
            agent,
            #[cfg(feature = "oci")]
            oci,
            pulling: tokio::sync::Mutex::new(()),
            state: Mutex::new(PullState::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PullState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cache_file(&self) -> Option<PathBuf> {
        self.cache.as_ref().map(|dir| dir.join(CACHE_FILE))
    }

    /// One GET, blocking, with `If-None-Match` when an ETag is known.
    fn fetch(&self, etag: Option<&str>) -> Result<Fetched, String> {
        #[cfg(feature = "oci")]
        if let Some(registry) = &self.oci {
            return match registry.pull(etag)? {
                super::oci::Pulled::Unchanged => Ok(Fetched::NotModified),
                super::oci::Pulled::Bundle { bytes, manifest } => Ok(Fetched::Body {
                    bytes,
                    etag: Some(manifest),
                }),
            };
        }
        let mut request = self
            .agent
            .get(&self.url)
            .header("Accept", "application/gzip, application/octet-stream");
        if let Some(etag) = etag {
            request = request.header("If-None-Match", etag);
        }
        let mut response = request.call().map_err(|e| e.to_string())?;
        match response.status().as_u16() {
            304 => return Ok(Fetched::NotModified),
            200 => {}
            status => return Err(format!("answered {status}")),
        }
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response
            .body_mut()
            .with_config()
            .limit(crate::bundle::MAX_BUNDLE_BYTES)
            .read_to_vec()
            .map_err(|e| format!("reading the body: {e}"))?;
        Ok(Fetched::Body { bytes, etag })
    }

    fn open(&self, bytes: &[u8]) -> Result<Bundle, String> {
        crate::bundle::open(bytes, &self.keys).map_err(|e| e.to_string())
    }

    /// Writes the archive to the cache; a failure is reported, not fatal.
    fn persist(&self, bytes: &[u8]) {
        if let Some(file) = self.cache_file() {
            if let Err(error) = crate::bundle::write_atomically(&file, bytes) {
                eprintln!("writ: bundle cache: {error}");
            }
        }
    }

    /// The `bundle` object of `GET /v1/status`.
    pub(crate) fn status(&self) -> Value {
        let state = self.state();
        let active = state.active.as_ref().map(|a| {
            json!({
                "revision": a.revision,
                "policy_digest": a.policy_digest,
                "digest": a.digest,
                "signed_by": a.signed_by,
                "activated_at": rfc3339(a.at),
                "from": a.from,
            })
        });
        json!({
            "url": self.url,
            "poll_seconds": self.poll.as_secs_f64(),
            "cache": self.cache_file().map(|p| p.display().to_string()),
            "trusted_keys": self.keys.iter().map(|k| k.fingerprint.clone()).collect::<Vec<_>>(),
            "active": active,
            "etag": state.etag,
            "activations": state.activations,
            "refusals": state.refusals,
            "last_failure": event(state.last_failure.as_ref()),
            "fetch_failures": state.fetch_failures,
            "consecutive_fetch_failures": state.consecutive_failures,
            "last_fetch_error": event(state.last_fetch_error.as_ref()),
        })
    }

    /// The URL, for `policy.source`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The bundle series for `/metrics`.
    pub(crate) fn render(&self, out: &mut String) {
        let state = self.state();
        out.push_str("# HELP writ_bundle_info The bundle serving: its revision, archive digest and source.\n");
        out.push_str("# TYPE writ_bundle_info gauge\n");
        if let Some(active) = &state.active {
            let _ = writeln!(
                out,
                "writ_bundle_info{{revision=\"{}\",digest=\"{}\",url=\"{}\"}} 1",
                label(&active.revision),
                label(&active.digest),
                label(&self.url)
            );
        }
        out.push_str(
            "# HELP writ_bundle_activations_total Bundles pulled and activated, or refused.\n",
        );
        out.push_str("# TYPE writ_bundle_activations_total counter\n");
        let _ = writeln!(
            out,
            "writ_bundle_activations_total{{result=\"activated\"}} {}",
            state.activations
        );
        let _ = writeln!(
            out,
            "writ_bundle_activations_total{{result=\"refused\"}} {}",
            state.refusals
        );
        out.push_str("# HELP writ_bundle_fetch_failures_total Fetches of the bundle that failed (source down, slow or answering an error).\n");
        out.push_str("# TYPE writ_bundle_fetch_failures_total counter\n");
        let _ = writeln!(
            out,
            "writ_bundle_fetch_failures_total {}",
            state.fetch_failures
        );
        out.push_str("# HELP writ_bundle_last_failure_timestamp_seconds When a bundle was last refused (Unix time; 0: never).\n");
        out.push_str("# TYPE writ_bundle_last_failure_timestamp_seconds gauge\n");
        let _ = writeln!(
            out,
            "writ_bundle_last_failure_timestamp_seconds {}",
            state
                .last_failure
                .as_ref()
                .map_or(0.0, |e| unix_seconds(e.at))
        );
        out.push_str("# HELP writ_bundle_source_up Whether the last fetch of the bundle succeeded (1) or not (0).\n");
        out.push_str("# TYPE writ_bundle_source_up gauge\n");
        let _ = writeln!(
            out,
            "writ_bundle_source_up {}",
            u8::from(state.consecutive_failures == 0)
        );
    }
}

fn event(event: Option<&Event>) -> Value {
    match event {
        None => Value::Null,
        Some(event) => json!({
            "at": rfc3339(event.at),
            "revision": event.revision,
            "error": event.error,
        }),
    }
}

fn loaded(bundle: Bundle) -> Loaded {
    Loaded {
        revision: Some(bundle.manifest.revision),
        files: bundle.policies.into_iter().map(|(name, _)| name).collect(),
        engine: bundle.engine,
        loaded_at: super::now_rfc3339(),
        content: bundle.archive_digest,
    }
}

/// The first set, before the server starts: fetched from the source, or,
/// when the source fails or serves a bundle that is refused, read from the
/// cache. Neither: an error naming both.
pub(crate) fn start(config: &BundleConfig) -> Result<(Puller, Loaded), String> {
    let puller = Puller::new(config)?;
    if puller.keys.is_empty() {
        eprintln!(
            "writ: no `--bundle-key`: unsigned bundles from `{}` are accepted",
            puller.url
        );
    }
    let from_source = puller
        .fetch(None)
        .and_then(|fetched| match fetched {
            Fetched::Body { bytes, etag } => Ok((bytes, etag)),
            Fetched::NotModified => Err("answered 304 to a request without an ETag".to_owned()),
        })
        .and_then(|(bytes, etag)| {
            let bundle = puller.open(&bytes).map_err(|e| format!("refused: {e}"))?;
            Ok((bytes, etag, bundle))
        });
    let source_error = match from_source {
        Ok((bytes, etag, bundle)) => {
            puller.persist(&bytes);
            {
                let mut state = puller.state();
                state.activate(Active::of(&bundle, "source"));
                state.etag = etag;
            }
            eprintln!(
                "writ: bundle revision {} from `{}` ({})",
                bundle.manifest.revision, puller.url, bundle.archive_digest
            );
            return Ok((puller, loaded(bundle)));
        }
        Err(error) => error,
    };
    eprintln!("writ: bundle from `{}`: {source_error}", puller.url);
    {
        let mut state = puller.state();
        state.last_fetch_error = Some(Event {
            at: SystemTime::now(),
            revision: None,
            error: Some(source_error.clone()),
        });
        state.fetch_failures += 1;
        state.consecutive_failures = 1;
    }
    let Some(file) = puller.cache_file() else {
        return Err(format!(
            "`--bundle {}`: {source_error}; and no `--bundle-cache` to start from",
            puller.url
        ));
    };
    let cached = std::fs::read(&file)
        .map_err(|e| format!("cannot read `{}`: {e}", file.display()))
        .and_then(|bytes| puller.open(&bytes));
    match cached {
        Ok(bundle) => {
            puller.state().activate(Active::of(&bundle, "cache"));
            eprintln!(
                "writ: serving the cached bundle revision {} from `{}` until the source answers",
                bundle.manifest.revision,
                file.display()
            );
            Ok((puller, loaded(bundle)))
        }
        Err(cache_error) => Err(format!(
            "`--bundle {}`: {source_error}; and the cache cannot serve: {cache_error}",
            puller.url
        )),
    }
}

/// Polls for ever, backing off after fetch failures.
pub(crate) async fn run(app: Arc<App>, puller: Arc<Puller>) {
    let mut delay = puller.poll;
    loop {
        tokio::time::sleep(delay).await;
        delay = match pull(&app, &puller, Trigger::Bundle).await {
            Pulled::FetchFailed => {
                let failures = puller.state().consecutive_failures.min(8);
                let cap = MAX_BACKOFF.max(puller.poll);
                puller
                    .poll
                    .saturating_mul(1u32 << failures.saturating_sub(1))
                    .min(cap)
            }
            Pulled::Unchanged | Pulled::Done(_) => puller.poll,
        };
    }
}

/// A reload asked for (`SIGHUP`, `POST /v1/policy/reload`) while serving a
/// bundle: a poll now.
pub(crate) async fn reload(
    app: &Arc<App>,
    puller: &Arc<Puller>,
    trigger: Trigger,
) -> super::Outcome {
    match pull(app, puller, trigger).await {
        Pulled::Done(outcome) => outcome,
        Pulled::Unchanged => {
            let serving = app.current.load_full();
            super::Outcome {
                refusal: None,
                digest: serving.engine.digest().to_owned(),
                previous: serving.engine.digest().to_owned(),
                rules: serving.engine.policy().rules.len(),
                dropped: Dropped::default(),
            }
        }
        Pulled::FetchFailed => {
            let error = puller
                .state()
                .last_fetch_error
                .as_ref()
                .and_then(|e| e.error.clone())
                .unwrap_or_default();
            super::finish(
                app,
                trigger,
                Err(Refusal::Read(format!(
                    "the bundle source `{}` failed: {error}",
                    puller.url
                ))),
            )
        }
    }
}

async fn pull(app: &Arc<App>, puller: &Arc<Puller>, trigger: Trigger) -> Pulled {
    let _one_at_a_time = puller.pulling.lock().await;
    let etag = puller.state().etag.clone();
    let fetching = puller.clone();
    let fetched = tokio::task::spawn_blocking(move || fetching.fetch(etag.as_deref()))
        .await
        .unwrap_or_else(|e| Err(format!("the fetching thread failed: {e}")));
    let (bytes, etag) = match fetched {
        Err(error) => {
            let mut state = puller.state();
            if state.consecutive_failures == 0 {
                eprintln!(
                    "writ: bundle source `{}`: {error}; still serving the last good bundle",
                    puller.url
                );
            }
            state.fetch_failures += 1;
            state.consecutive_failures = state.consecutive_failures.saturating_add(1);
            state.last_fetch_error = Some(Event {
                at: SystemTime::now(),
                revision: None,
                error: Some(error),
            });
            return Pulled::FetchFailed;
        }
        Ok(Fetched::NotModified) => {
            puller.state().consecutive_failures = 0;
            return Pulled::Unchanged;
        }
        Ok(Fetched::Body { bytes, etag }) => (bytes, etag),
    };
    let digest = format!("sha256:{}", super::state::sha256_hex(&bytes));
    {
        let mut state = puller.state();
        state.consecutive_failures = 0;
        let active = state.active.as_ref().map(|a| a.digest.as_str());
        if active == Some(digest.as_str()) || state.refused.as_deref() == Some(digest.as_str()) {
            state.etag = etag;
            return Pulled::Unchanged;
        }
    }
    let opening = puller.clone();
    let (bytes, opened) = tokio::task::spawn_blocking(move || {
        let opened = opening.open(&bytes);
        (bytes, opened)
    })
    .await
    .unwrap_or_else(|e| (Vec::new(), Err(format!("the checking thread failed: {e}"))));
    match opened {
        Ok(bundle) => {
            // The puller's `active` follows the swap, so the status never
            // names a bundle before it serves.
            let active = Active::of(&bundle, "source");
            let candidate = loaded(bundle);
            let dropped = Dropped::between(&app.current.load_full(), &candidate);
            let outcome = super::finish(app, trigger, Ok((candidate, dropped)));
            eprintln!(
                "writ: bundle revision {} from `{}` activated ({})",
                active.revision, puller.url, active.digest
            );
            {
                let mut state = puller.state();
                state.activate(active);
                state.etag = etag;
                state.refused = None;
            }
            super::http::spawn_redecision(app.clone(), outcome.digest.clone());
            let persisting = puller.clone();
            let _ = tokio::task::spawn_blocking(move || persisting.persist(&bytes)).await;
            Pulled::Done(outcome)
        }
        Err(error) => {
            let error = format!("the bundle from `{}` was refused: {error}", puller.url);
            {
                let mut state = puller.state();
                state.etag = etag;
                state.refused = Some(digest);
                state.refusals += 1;
                state.last_failure = Some(Event {
                    at: SystemTime::now(),
                    revision: None,
                    error: Some(error.clone()),
                });
            }
            Pulled::Done(super::finish(app, trigger, Err(Refusal::Read(error))))
        }
    }
}
