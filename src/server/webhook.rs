//! Pushing the revocation feed to a webhook, as Security Event Tokens
//! (RFC 8417) with CAEP event types, delivered per RFC 8935 (docs/lifecycle.md,
//! "The revocation webhook").
//!
//! One task per `writ serve` reads the feed after the target's delivery
//! cursor (kept in the ledger, so a restart or another replica resumes
//! where delivery stopped), posts each row as one SET, and moves the cursor
//! with a compare-and-set once the receiver acknowledged it. A row is never
//! skipped because the receiver is down, slow or failing: it is retried
//! with backoff until it is acknowledged. Only an answer of 400, which
//! RFC 8935 reserves for a SET the receiver will never accept, moves past a
//! row (counted as rejected). Delivery is at least once: a replica that
//! dies between the receiver's acknowledgement and the cursor's move, or
//! two replicas racing on one row, send a SET twice, with the same `jti`,
//! which the receiver uses to drop the duplicate.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::ledger::{FeedEntry, FeedKind, Ledger};

/// CAEP's event type for a revoked grant.
pub const SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
/// CAEP's event type for a narrowed grant.
pub const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";

/// How many feed rows one read takes.
const PAGE: usize = 100;
/// How often the feed is read when nothing was appended in this process
/// (rows other replicas append are only seen by reading).
const POLL: Duration = Duration::from_secs(1);
/// The first retry's delay; each failure doubles it, up to the maximum.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Where and how to push.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The receiver's URL (`http://` or `https://`).
    pub url: String,
    /// The SETs' `iss`.
    pub issuer: String,
    /// The SETs' `aud`; the URL when none.
    pub audience: Option<String>,
    /// A PKCS#8 PEM private key (Ed25519 or EC P-256) the SETs are signed
    /// with; none sends unsecured SETs (`alg: none`), for a receiver that
    /// relies on TLS and the bearer token alone.
    pub key: Option<PathBuf>,
    /// Sent as `Authorization: Bearer ...` (from `WRIT_WEBHOOK_TOKEN`).
    pub bearer: Option<String>,
    /// How long one delivery may take.
    pub timeout: Duration,
    /// The longest wait between retries.
    pub max_backoff: Duration,
}

impl WebhookConfig {
    /// A webhook to `url` with the defaults: issuer `writ`, audience the
    /// URL, unsigned, no bearer token, 5 s timeout, retries up to 30 s
    /// apart.
    pub fn new(url: &str) -> WebhookConfig {
        WebhookConfig {
            url: url.to_owned(),
            issuer: "writ".to_owned(),
            audience: None,
            key: None,
            bearer: None,
            timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// How SETs are secured.
enum Signer {
    Unsecured,
    Key(Algorithm, Box<EncodingKey>),
}

/// The delivery counters, rendered on `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct WebhookMetrics {
    delivered: AtomicU64,
    rejected: AtomicU64,
    retries: AtomicU64,
    ledger_errors: AtomicU64,
    cursor: AtomicI64,
    pending: AtomicI64,
    last_success_ms: AtomicI64,
}

impl WebhookMetrics {
    /// Appends the webhook's series to a Prometheus text page.
    pub(crate) fn render(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.push_str("# HELP writ_webhook_deliveries_total Revocation feed rows pushed to the webhook, by outcome (rejected: the receiver answered 400 and the row was passed over).\n");
        out.push_str("# TYPE writ_webhook_deliveries_total counter\n");
        let _ = writeln!(
            out,
            "writ_webhook_deliveries_total{{outcome=\"delivered\"}} {}",
            get(&self.delivered)
        );
        let _ = writeln!(
            out,
            "writ_webhook_deliveries_total{{outcome=\"rejected\"}} {}",
            get(&self.rejected)
        );
        out.push_str("# HELP writ_webhook_retries_total Deliveries that failed (down, slow, 5xx, 401...) and will be tried again.\n");
        out.push_str("# TYPE writ_webhook_retries_total counter\n");
        let _ = writeln!(out, "writ_webhook_retries_total {}", get(&self.retries));
        out.push_str("# HELP writ_webhook_ledger_errors_total Reads or cursor moves the ledger could not do.\n");
        out.push_str("# TYPE writ_webhook_ledger_errors_total counter\n");
        let _ = writeln!(
            out,
            "writ_webhook_ledger_errors_total {}",
            get(&self.ledger_errors)
        );
        out.push_str(
            "# HELP writ_webhook_cursor The feed cursor the receiver has acknowledged up to.\n",
        );
        out.push_str("# TYPE writ_webhook_cursor gauge\n");
        let _ = writeln!(
            out,
            "writ_webhook_cursor {}",
            self.cursor.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP writ_webhook_pending Feed rows not yet acknowledged, when last read.\n",
        );
        out.push_str("# TYPE writ_webhook_pending gauge\n");
        let _ = writeln!(
            out,
            "writ_webhook_pending {}",
            self.pending.load(Ordering::Relaxed)
        );
        out.push_str("# HELP writ_webhook_last_success_timestamp_seconds When the receiver last acknowledged a SET (0: never).\n");
        out.push_str("# TYPE writ_webhook_last_success_timestamp_seconds gauge\n");
        let ms = self.last_success_ms.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "writ_webhook_last_success_timestamp_seconds {}.{:03}",
            ms / 1000,
            ms % 1000
        );
    }
}

/// The pusher: its configuration, its signing key, its HTTP client.
pub(crate) struct Pusher {
    config: WebhookConfig,
    signer: Signer,
    agent: ureq::Agent,
    pub(crate) metrics: Arc<WebhookMetrics>,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher")
            .field("url", &self.config.url)
            .finish()
    }
}

/// What the receiver did with one SET.
enum Outcome {
    /// 2xx: acknowledged.
    Delivered,
    /// 400: it will never accept this SET.
    Rejected(String),
    /// Anything else: try again later.
    Retry(String),
}

impl Pusher {
    /// The receiver's URL.
    pub(crate) fn url(&self) -> &str {
        &self.config.url
    }

    /// Reads the key and checks the URL; errors name the flag at fault.
    pub(crate) fn new(config: WebhookConfig) -> Result<Pusher, String> {
        if !(config.url.starts_with("http://") || config.url.starts_with("https://")) {
            return Err(format!(
                "`--revocation-webhook {}`: not an http:// or https:// URL",
                config.url
            ));
        }
        let signer = match &config.key {
            None => Signer::Unsecured,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!("`--webhook-key {}`: cannot read it: {e}", path.display())
                })?;
                let signer = pkcs8_pem(&text).and_then(signer_for).ok_or_else(|| {
                    format!(
                        "`--webhook-key {}`: not a PKCS#8 PEM private key (`BEGIN PRIVATE KEY`) of Ed25519 or EC P-256",
                        path.display()
                    )
                })?;
                // A key that does not sign (a truncated one) is found now,
                // not at the first revocation.
                let probe = jsonwebtoken::encode(&Header::new(signer.0), &json!({}), &signer.1);
                if let Err(error) = probe {
                    return Err(format!(
                        "`--webhook-key {}`: cannot sign with it: {error}",
                        path.display()
                    ));
                }
                Signer::Key(signer.0, Box::new(signer.1))
            }
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Pusher {
            config,
            signer,
            agent,
            metrics: Arc::new(WebhookMetrics::default()),
        })
    }

    /// The SET for one feed row, as a compact JWS (or an unsecured JWT).
    pub(crate) fn encode(&self, entry: &FeedEntry) -> Result<String, String> {
        let claims = set_claims(&self.config, entry);
        match &self.signer {
            Signer::Unsecured => {
                let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                let header = json!({"alg": "none", "typ": "secevent+jwt"});
                Ok(format!(
                    "{}.{}.",
                    b64.encode(header.to_string()),
                    b64.encode(claims.to_string())
                ))
            }
            Signer::Key(alg, key) => {
                let mut header = Header::new(*alg);
                header.typ = Some("secevent+jwt".to_owned());
                jsonwebtoken::encode(&header, &claims, key)
                    .map_err(|e| format!("cannot sign the SET: {e}"))
            }
        }
    }

    /// Posts one SET (RFC 8935): 2xx is delivered, 400 rejected, anything
    /// else (no answer, a timeout, 401, 5xx) is to be tried again.
    async fn post(&self, set: String) -> Outcome {
        let agent = self.agent.clone();
        let url = self.config.url.clone();
        let bearer = self.config.bearer.clone();
        let sent = tokio::task::spawn_blocking(move || {
            let mut request = agent
                .post(&url)
                .header("Content-Type", "application/secevent+jwt")
                .header("Accept", "application/json");
            if let Some(token) = bearer {
                request = request.header("Authorization", &format!("Bearer {token}"));
            }
            match request.send(set) {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    let body = response
                        .body_mut()
                        .with_config()
                        .limit(4096)
                        .read_to_string()
                        .unwrap_or_default();
                    Ok((status, body))
                }
                Err(error) => Err(error.to_string()),
            }
        })
        .await;
        match sent {
            Ok(Ok((status, _))) if (200..300).contains(&status) => Outcome::Delivered,
            Ok(Ok((400, body))) => Outcome::Rejected(format!("400 {}", body.trim())),
            Ok(Ok((status, body))) => Outcome::Retry(format!("{status} {}", body.trim())),
            Ok(Err(error)) => Outcome::Retry(error),
            Err(error) => Outcome::Retry(error.to_string()),
        }
    }
}

/// The claims of the SET for `entry` (RFC 8417; CAEP event types). They
/// depend on the row alone (`iat` is when the row was recorded), so every
/// try, from any replica, sends the same SET.
pub(crate) fn set_claims(config: &WebhookConfig, entry: &FeedEntry) -> Value {
    let writ = json!({
        "cursor": entry.seq.to_string(),
        "grant_id": entry.grant_id,
        "subject_id": entry.subject_id,
        "task_id": entry.task_id,
        "credential_ref": entry.credential_ref,
        "by": entry.by,
        "reason": entry.reason,
    });
    let mut event = json!({
        "event_timestamp": entry.at / 1000,
        "initiating_entity": "policy",
        "reason_admin": {"en": entry.reason.clone().unwrap_or_default()},
        "writ": writ,
    });
    let event_type = match entry.kind {
        FeedKind::Revoked => SESSION_REVOKED,
        FeedKind::Narrowed => {
            if let Some(map) = event.as_object_mut() {
                map.insert("credential_type".to_owned(), json!("writ-grant"));
                map.insert("change_type".to_owned(), json!("update"));
                if let Some(writ) = map.get_mut("writ").and_then(Value::as_object_mut) {
                    writ.insert("scope".to_owned(), json!(entry.scope));
                    writ.insert(
                        "expires_at".to_owned(),
                        json!(entry.expires_at.map(crate::ledger::rfc3339)),
                    );
                }
            }
            CREDENTIAL_CHANGE
        }
    };
    json!({
        "iss": config.issuer,
        "aud": config.audience.clone().unwrap_or_else(|| config.url.clone()),
        "iat": entry.at / 1000,
        "jti": format!("{}.{}", entry.grant_id, entry.seq),
        "sub_id": {
            "format": "opaque",
            "id": entry.credential_ref.clone().unwrap_or_else(|| entry.grant_id.clone()),
        },
        "events": { event_type: event },
    })
}

/// The DER inside a `-----BEGIN PRIVATE KEY-----` block.
fn pkcs8_pem(text: &str) -> Option<Vec<u8>> {
    let body = text
        .split("-----BEGIN PRIVATE KEY-----")
        .nth(1)?
        .split("-----END PRIVATE KEY-----")
        .next()?;
    let joined: String = body.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(joined)
        .ok()
}

/// The algorithm and key for a PKCS#8 private key, told apart by the
/// algorithm identifier it carries: Ed25519 (1.3.101.112) or an EC key
/// (1.2.840.10045.2.1, P-256 being the curve ES256 takes).
fn signer_for(der: Vec<u8>) -> Option<(Algorithm, EncodingKey)> {
    const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
    const EC: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let has = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    if has(ED25519) {
        Some((Algorithm::EdDSA, EncodingKey::from_ed_der(&der)))
    } else if has(EC) {
        Some((Algorithm::ES256, EncodingKey::from_ec_der(&der)))
    } else {
        None
    }
}

/// Doubling delays, from [`FIRST_BACKOFF`] up to a maximum.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Backoff {
        Backoff {
            next: FIRST_BACKOFF.min(max),
            max,
        }
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.max);
    }

    fn reset(&mut self) {
        self.next = FIRST_BACKOFF.min(self.max);
    }
}

/// Pushes the feed to the webhook for ever (until the runtime stops).
pub(crate) async fn run(app: Arc<super::App>, pusher: Arc<Pusher>) {
    let Some(ledger) = app.ledger.as_ref() else {
        // The configuration refuses a webhook without a ledger.
        eprintln!("writ: revocation webhook: no ledger; nothing to push");
        return;
    };
    let target = pusher.config.url.clone();
    let metrics = pusher.metrics.clone();
    let mut backoff = Backoff::new(pusher.config.max_backoff);
    let mut cursor: Option<i64> = None;
    let mut reported = false;
    loop {
        let wake = ledger.appended();
        let appended = wake.notified();
        tokio::pin!(appended);
        appended.as_mut().enable();

        let read = async {
            let head = ledger.feed_head().await?;
            let from = match cursor {
                Some(from) => from,
                None => ledger.delivery_cursor(&target, head, ledger.now()).await?,
            };
            let page = ledger.feed(from, PAGE).await?;
            Ok::<_, crate::ledger::LedgerError>((head, from, page))
        };
        let (head, mut from, page) = match read.await {
            Ok(read) => read,
            Err(error) => {
                metrics.ledger_errors.fetch_add(1, Ordering::Relaxed);
                if !reported {
                    eprintln!("writ: revocation webhook: cannot read the feed: {error}; retrying");
                    reported = true;
                }
                backoff.wait().await;
                continue;
            }
        };
        cursor = Some(from);
        metrics.cursor.store(from, Ordering::Relaxed);
        metrics
            .pending
            .store((head - from).max(0), Ordering::Relaxed);
        if page.is_empty() {
            backoff.reset();
            tokio::select! {
                () = &mut appended => {}
                () = tokio::time::sleep(POLL) => {}
            }
            continue;
        }
        if let Some(first) = page.first().filter(|first| first.seq != from + 1) {
            // Retention deleted rows this target was never sent: say so
            // (the feed's readers get 410 for the same gap).
            eprintln!(
                "writ: revocation webhook: rows {} to {} of the feed were deleted by retention before `{target}` acknowledged them; they are not sent",
                from + 1,
                first.seq - 1
            );
        }
        for entry in page {
            deliver(&pusher, &entry, from, ledger, &mut backoff).await;
            match ledger
                .advance_delivery(&target, from, entry.seq, ledger.now())
                .await
            {
                Ok(true) => {
                    from = entry.seq;
                    cursor = Some(from);
                    metrics.cursor.store(from, Ordering::Relaxed);
                    metrics
                        .pending
                        .store((head - from).max(0), Ordering::Relaxed);
                    reported = false;
                }
                Ok(false) => {
                    // Another replica moved the cursor: read it again.
                    cursor = None;
                    break;
                }
                Err(error) => {
                    metrics.ledger_errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "writ: revocation webhook: delivered cursor {} but cannot record it: {error}; it will be sent again",
                        entry.seq
                    );
                    backoff.wait().await;
                    break;
                }
            }
        }
    }
}

/// Delivers one row, retrying until the receiver acknowledges or rejects
/// it.
async fn deliver(
    pusher: &Pusher,
    entry: &FeedEntry,
    from: i64,
    ledger: &Ledger,
    backoff: &mut Backoff,
) {
    let metrics = &pusher.metrics;
    let mut failures = 0u32;
    loop {
        let set = match pusher.encode(entry) {
            Ok(set) => set,
            Err(error) => {
                // Signing with a key that loaded does not fail; if it does,
                // keep the row rather than lose it.
                metrics.retries.fetch_add(1, Ordering::Relaxed);
                eprintln!("writ: revocation webhook: {error}");
                backoff.wait().await;
                continue;
            }
        };
        match pusher.post(set).await {
            Outcome::Delivered => {
                metrics.delivered.fetch_add(1, Ordering::Relaxed);
                metrics
                    .last_success_ms
                    .store(crate::ledger::now_ms(), Ordering::Relaxed);
                backoff.reset();
                return;
            }
            Outcome::Rejected(why) => {
                metrics.rejected.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "writ: revocation webhook: the receiver rejected the SET of cursor {} (grant {}): {why}; passing over it",
                    entry.seq, entry.grant_id
                );
                backoff.reset();
                return;
            }
            Outcome::Retry(why) => {
                metrics.retries.fetch_add(1, Ordering::Relaxed);
                // What piles up meanwhile is visible while it waits.
                if let Ok(head) = ledger.feed_head().await {
                    metrics
                        .pending
                        .store((head - from).max(0), Ordering::Relaxed);
                }
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    eprintln!(
                        "writ: revocation webhook: `{}` did not take cursor {} ({why}); retry {failures}",
                        pusher.config.url, entry.seq
                    );
                }
                backoff.wait().await;
            }
        }
    }
}
