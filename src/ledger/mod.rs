//! The grant ledger: what writ allowed, to whom, for which task, and
//! whether it still holds (docs/lifecycle.md).
//!
//! One interface, [`Ledger`], over two stores: SQLite in a file (the
//! embedded default, for one broker host, the CLI and tests) and
//! PostgreSQL (for a fleet of `writ serve` replicas sharing one database).
//! Both apply the same versioned migrations when opened and pass one test
//! suite. The central operation is [`Ledger::issue`]: in one transaction it
//! counts the subject's grants issued within the repeat window, lets the
//! caller decide with that count, and records the grant on allow, so that
//! concurrent requests for one subject, on any replica, are counted one
//! after the other.

mod deliveries;
mod postgres;
pub mod redecide;
mod retention;
mod sqlite;

pub use retention::{FeedRead, Swept};

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The versioned migrations, in order: (version, name, SQL). The SQL is
/// common to SQLite and PostgreSQL.
pub(crate) const MIGRATIONS: [(i64, &str, &str); 7] = [
    (1, "grants", include_str!("migrations/0001_grants.sql")),
    (
        2,
        "idempotency_digest",
        include_str!("migrations/0002_idempotency_digest.sql"),
    ),
    (
        3,
        "revocation_feed",
        include_str!("migrations/0003_revocation_feed.sql"),
    ),
    (
        4,
        "deliveries",
        include_str!("migrations/0004_deliveries.sql"),
    ),
    (
        5,
        "retention",
        include_str!("migrations/0005_retention.sql"),
    ),
    (
        6,
        "approval_attestation",
        include_str!("migrations/0006_approval_attestation.sql"),
    ),
    (
        7,
        "statistics",
        include_str!("migrations/0007_statistics.sql"),
    ),
];

/// What PostgreSQL runs after a version's common SQL, in the same
/// transaction: settings of its own that change no table's contents nor
/// any answer. A server that refuses it as not supported or not in its
/// grammar skips it, since none is needed to be correct.
pub(crate) const POSTGRES_ONLY: [(i64, &str); 1] =
    [(7, include_str!("migrations/0007_statistics.postgres.sql"))];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = 7;

/// Why the ledger could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerError {
    /// The database cannot be reached or written (down, unreachable, read
    /// only, disk full): nothing was recorded.
    Unavailable(String),
    /// The target is not a ledger writ can open (a bad URL, a schema newer
    /// than this build).
    Invalid(String),
}

impl std::fmt::Display for LedgerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerError::Unavailable(message) => {
                write!(f, "the grant ledger is unavailable: {message}")
            }
            LedgerError::Invalid(message) => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for LedgerError {}

/// A grant's state, derived from the record and the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantState {
    /// Neither revoked nor past `expires_at`.
    Live,
    /// Past `expires_at`, never revoked.
    Expired,
    /// Revoked (by an event, a re-decision or the broker).
    Revoked,
}

impl GrantState {
    /// `live`, `expired`, `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Live => "live",
            GrantState::Expired => "expired",
            GrantState::Revoked => "revoked",
        }
    }

    /// Reads `live`, `expired` or `revoked`.
    pub fn parse(text: &str) -> Option<GrantState> {
        match text {
            "live" => Some(GrantState::Live),
            "expired" => Some(GrantState::Expired),
            "revoked" => Some(GrantState::Revoked),
            _ => None,
        }
    }
}

/// A recorded grant. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// A UUIDv7: unique across replicas, sortable by issue time.
    pub grant_id: String,
    /// The decision that allowed it.
    pub decision_id: String,
    /// The policy set that decided it.
    pub policy_digest: String,
    /// `subject.id`.
    pub subject_id: String,
    /// `intent.id`, else `intent.task`.
    pub task_id: Option<String>,
    /// The request as decided (with the count writ used).
    pub request: Value,
    /// The granted scope.
    pub scope: Vec<String>,
    /// The granted lifetime, seconds.
    pub ttl: u64,
    /// When it was recorded.
    pub issued_at: i64,
    /// `issued_at + ttl`.
    pub expires_at: i64,
    /// The decision's obligations (`revoke_on`, `audience`, ...).
    pub obligations: Value,
    /// The broker's own handle for the credential.
    pub credential_ref: Option<String>,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
    /// Who revoked it: `broker`, an event type, `recheck`.
    pub revoked_by: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// A re-decision kept it with less scope or a shorter expiry.
    pub narrowed: bool,
    /// The last re-decision that revoked or narrowed it: the decision as
    /// JSON, trace included.
    pub redecision: Option<Value>,
    /// When that re-decision was made.
    pub redecided_at: Option<i64>,
    /// writ's own verification of the approval the grant was issued with,
    /// kept apart from `request` (which a re-decision reads with any
    /// `verified` forced to false): `None` when there was no approval that
    /// writ verified.
    pub approval: Option<ApprovalAttestation>,
}

/// What writ verified about an approval token when it issued a grant
/// (docs/lifecycle.md, "Approvals on re-decision"). Only writ writes it,
/// from its own verification ([`crate::identity`]); a re-decision hands
/// [`ApprovalAttestation::approval`] to the evaluator as a verified
/// approval until [`ApprovalAttestation::expires_at`], and never reads a
/// `verified` from the stored request.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalAttestation {
    /// What `context.approval` read: `{verified: true, approver, action,
    /// resource, expires, scope?, verified_by}`.
    pub approval: Value,
    /// The approval issuer whose key verified the token (`iss`).
    pub issuer: String,
    /// Which approval: `sha256:` and the hex SHA-256 of the token's text.
    pub token: String,
    /// When the approval stops counting, Unix milliseconds: the earlier of
    /// its expiry claim and the token's `exp`.
    pub expires_at: i64,
    /// When writ verified it, Unix milliseconds.
    pub verified_at: i64,
}

impl ApprovalAttestation {
    /// Whether it still counts at `now` (Unix milliseconds).
    pub fn counts_at(&self, now: i64) -> bool {
        now < self.expires_at && self.approval.get("verified") == Some(&Value::Bool(true))
    }

    /// As stored in the `approval_attestation` column and shown by the API.
    pub fn to_json(&self) -> Value {
        json!({
            "approval": self.approval,
            "issuer": self.issuer,
            "token": self.token,
            "expires_at": rfc3339(self.expires_at),
            "verified_at": rfc3339(self.verified_at),
        })
    }

    /// Reads the stored column; `None` when it does not read as one
    /// (then no approval counts: fail closed).
    pub fn from_json(value: &Value) -> Option<ApprovalAttestation> {
        let time = |name: &str| -> Option<i64> {
            let text = value.get(name)?.as_str()?;
            let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
            i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
        };
        let approval = value.get("approval")?;
        if !approval.is_object() {
            return None;
        }
        Some(ApprovalAttestation {
            approval: approval.clone(),
            issuer: value.get("issuer")?.as_str()?.to_owned(),
            token: value.get("token")?.as_str()?.to_owned(),
            expires_at: time("expires_at")?,
            verified_at: time("verified_at")?,
        })
    }

    /// The column's text.
    pub(crate) fn column(attestation: Option<&ApprovalAttestation>) -> Option<String> {
        attestation.map(|a| a.to_json().to_string())
    }

    /// From the column's text.
    pub(crate) fn from_column(text: Option<&str>) -> Option<ApprovalAttestation> {
        let value: Value = serde_json::from_str(text?).ok()?;
        ApprovalAttestation::from_json(&value)
    }
}

impl Grant {
    /// Its state at `now_ms`.
    pub fn state(&self, now_ms: i64) -> GrantState {
        if self.revoked_at.is_some() {
            GrantState::Revoked
        } else if self.expires_at <= now_ms {
            GrantState::Expired
        } else {
            GrantState::Live
        }
    }

    /// The grant as the HTTP API shows it, with its state at `now_ms`.
    pub fn to_json(&self, now_ms: i64) -> Value {
        json!({
            "grant_id": self.grant_id,
            "state": self.state(now_ms).as_str(),
            "subject_id": self.subject_id,
            "task_id": self.task_id,
            "scope": self.scope,
            "ttl": self.ttl,
            "issued_at": rfc3339(self.issued_at),
            "expires_at": rfc3339(self.expires_at),
            "obligations": self.obligations,
            "credential_ref": self.credential_ref,
            "decision_id": self.decision_id,
            "policy_digest": self.policy_digest,
            "revoked_at": self.revoked_at.map(rfc3339),
            "revoked_by": self.revoked_by,
            "reason": self.reason,
            "narrowed": self.narrowed,
            "redecision": self.redecision.as_ref().map(|decision| json!({
                "at": self.redecided_at.map(rfc3339),
                "decision": decision,
            })),
            "approval_attestation": self.approval.as_ref().map(ApprovalAttestation::to_json),
            "request": self.request,
        })
    }
}

/// Unix milliseconds as RFC 3339 (UTC, millisecond precision).
pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// The clock, in Unix milliseconds.
pub fn now_ms() -> i64 {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
}

/// A new grant id: a UUIDv7 (time-ordered).
pub fn new_grant_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// What the caller of [`Ledger::issue`] decided, given the count.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// On allow, the grant to record (its `grant_id` the one passed in).
    pub grant: Option<Grant>,
    /// The answer to give, and to give again for the same idempotency key:
    /// an HTTP status and a JSON body.
    pub status: u16,
    /// The answer's body.
    pub body: String,
    /// The grant's stored request as JSON text, when the caller wrote it
    /// already: stored in place of `grant.request`'s text (which is then
    /// not read). `None`: `grant.request` is written.
    pub request_text: Option<String>,
    /// The same for `grant.obligations`.
    pub obligations_text: Option<String>,
}

impl Verdict {
    /// The stored request's and obligations' texts: the caller's, else
    /// `grant`'s values written.
    pub(crate) fn texts(&self, grant: &Grant) -> (String, String) {
        let request = match &self.request_text {
            Some(text) => text.clone(),
            None => grant.request.to_string(),
        };
        let obligations = match &self.obligations_text {
            Some(text) => text.clone(),
            None => grant.obligations.to_string(),
        };
        (request, obligations)
    }
}

/// What [`Ledger::issue`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Issued {
    /// The answer's status.
    pub status: u16,
    /// The answer's body.
    pub body: String,
    /// The answer was the one stored for the idempotency key: nothing was
    /// decided or recorded this time.
    pub replayed: bool,
    /// The idempotency key was first used with a different request (another
    /// `request_digest`): nothing was decided, recorded or replayed, and
    /// `status` and `body` are empty.
    pub key_reused: bool,
}

impl Issued {
    /// The key was first used with another request.
    pub(crate) fn key_reused() -> Issued {
        Issued {
            status: 0,
            body: String::new(),
            replayed: false,
            key_reused: true,
        }
    }
}

/// What a list asks for; `after` is the last `grant_id` of the previous
/// page.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this subject's grants.
    pub subject: Option<String>,
    /// Only this task's grants.
    pub task: Option<String>,
    /// Only this grant.
    pub grant: Option<String>,
    /// Only grants in this state (at `now`).
    pub state: Option<GrantState>,
    /// Grants with a larger id than this (the next page).
    pub after: Option<String>,
    /// At most this many (1..=1000).
    pub limit: usize,
}

/// One issuance to count and maybe record.
#[derive(Debug, Clone)]
pub struct Issue<'a> {
    /// `subject.id`: whose grants are counted.
    pub subject_id: &'a str,
    /// Grants issued within this long before `now` are counted.
    pub window: Duration,
    /// The clock, Unix milliseconds.
    pub now: i64,
    /// A retry with the same key answers with the first answer.
    pub idempotency_key: Option<&'a str>,
    /// A digest of the request, stored with the idempotency key: the same key
    /// with another digest is refused ([`Issued::key_reused`]). Only read
    /// with a key (`/v1/grants` leaves it empty without one).
    pub request_digest: &'a str,
    /// The id the grant gets on allow.
    pub grant_id: &'a str,
}

enum Store {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

/// The clock a ledger reads, in Unix milliseconds ([`now_ms`] unless a
/// test injects another).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The grant ledger, on SQLite or PostgreSQL.
pub struct Ledger {
    store: Store,
    target: String,
    clock: Clock,
    /// The latest time this ledger has handed out ([`Ledger::now`]): the
    /// clock never goes back below it.
    floor: AtomicI64,
    /// Woken whenever this process appends to the revocation feed.
    appended: Arc<Notify>,
    /// One re-decision pass at a time in this process.
    redeciding: tokio::sync::Mutex<()>,
    /// How many grants a page of live grants holds ([`PAGE`]).
    page: usize,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("target", &self.target)
            .finish()
    }
}

/// Whether `target` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres(target: &str) -> bool {
    target.starts_with("postgres://") || target.starts_with("postgresql://")
}

impl Ledger {
    /// Opens the ledger at `target` (a SQLite file path, or a
    /// `postgres://` URL) and brings its schema up to date. A PostgreSQL
    /// server that does not answer is not an error here: the ledger opens,
    /// and every operation reports [`LedgerError::Unavailable`] (and tries
    /// the migrations again) until it answers.
    pub async fn open(target: &str) -> Result<Ledger, LedgerError> {
        Ledger::open_with_clock(target, Arc::new(now_ms)).await
    }

    /// [`Ledger::open`], reading time from `clock` (tests jump it). The
    /// ledger's own time starts at the latest time the ledger holds (an
    /// issue, a revocation) when that is later than the clock, so a clock
    /// set back while writ was down resurrects nothing either.
    pub async fn open_with_clock(target: &str, clock: Clock) -> Result<Ledger, LedgerError> {
        let store = if is_postgres(target) {
            Store::Postgres(postgres::Postgres::open(target)?)
        } else {
            Store::Sqlite(sqlite::Sqlite::open(target).await?)
        };
        let ledger = Ledger {
            store,
            target: redact_url(target),
            clock,
            floor: AtomicI64::new(i64::MIN),
            appended: Arc::new(Notify::new()),
            redeciding: tokio::sync::Mutex::new(()),
            page: PAGE,
        };
        match ledger.migrate().await {
            Ok(_) => {
                if let Ok(latest) = ledger.latest_time().await {
                    ledger.floor.fetch_max(latest, Ordering::SeqCst);
                }
                Ok(ledger)
            }
            Err(LedgerError::Unavailable(_)) => Ok(ledger),
            Err(error) => Err(error),
        }
    }

    /// The same ledger, reading and writing live grants `page` at a time
    /// (events, re-decisions); at least 1. Smaller pages hold less in
    /// memory and shorter transactions; larger ones make fewer round trips.
    pub fn with_page(mut self, page: usize) -> Ledger {
        self.page = page.max(1);
        self
    }

    /// The ledger's time, Unix milliseconds: the clock, but never earlier
    /// than a time it has already handed out. A clock that jumps back
    /// leaves the ledger's time standing until the clock catches up, so a
    /// grant that expired stays expired, and a window counts at least the
    /// grants it counted before (a count never drops because of the jump).
    /// A clock that jumps forward is taken as time passing.
    pub fn now(&self) -> i64 {
        let wall = (self.clock)();
        let before = self.floor.fetch_max(wall, Ordering::SeqCst);
        before.max(wall)
    }

    /// The latest issue or revocation time the ledger holds.
    async fn latest_time(&self) -> Result<i64, LedgerError> {
        match &self.store {
            Store::Sqlite(s) => s.latest_time().await,
            Store::Postgres(p) => p.latest_time().await,
        }
    }

    /// Where the ledger is (a URL's password hidden).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match &self.store {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Applies the migrations not applied yet; returns their versions.
    pub async fn migrate(&self) -> Result<Vec<i64>, LedgerError> {
        match &self.store {
            Store::Sqlite(s) => s.migrate().await,
            Store::Postgres(p) => p.migrate().await,
        }
    }

    /// Whether the database answers and its schema is current.
    pub async fn ping(&self) -> Result<(), LedgerError> {
        match &self.store {
            Store::Sqlite(s) => s.ping().await,
            Store::Postgres(p) => p.ping().await,
        }
    }

    /// Counts and records atomically. In one transaction, with the
    /// subject's counter row locked: the answer stored for
    /// `issue.idempotency_key`, if any, is returned as it was; otherwise
    /// the subject's grants issued after `now - window` (whatever their
    /// state) are counted, `decide(count)` is called, its grant (on allow)
    /// and its answer (under the key) are recorded, and the transaction
    /// commits before this returns. `decide` may be called more than once
    /// when a transaction is retried.
    pub async fn issue<F>(&self, issue: Issue<'_>, decide: F) -> Result<Issued, LedgerError>
    where
        F: Fn(u64) -> Verdict + Send + Sync + 'static,
    {
        match &self.store {
            Store::Sqlite(s) => s.issue(issue, decide).await,
            Store::Postgres(p) => p.issue(issue, decide).await,
        }
    }

    /// One grant.
    pub async fn get(&self, grant_id: &str) -> Result<Option<Grant>, LedgerError> {
        match &self.store {
            Store::Sqlite(s) => s.get(grant_id).await,
            Store::Postgres(p) => p.get(grant_id).await,
        }
    }

    /// Grants in `grant_id` order (issue order), as `filter` selects, with
    /// states at `now`.
    pub async fn list(&self, filter: &Filter, now: i64) -> Result<Vec<Grant>, LedgerError> {
        let mut filter = filter.clone();
        filter.limit = filter.limit.clamp(1, 1000);
        match &self.store {
            Store::Sqlite(s) => s.list(filter, now).await,
            Store::Postgres(p) => p.list(filter, now).await,
        }
    }

    /// Revokes every live grant `selector` selects whose `revoke_on`
    /// obligations name `event` (every one of them for `identity_revoked`),
    /// with `revoked_by` = `event:TYPE` and `reason`, a page of grants per
    /// transaction, each revocation with its feed row. Returns the grants it
    /// revoked, each with why. A grant revoked meanwhile (by another event,
    /// on another replica) is left as it is and not returned.
    pub async fn revoke_for_event(
        &self,
        selector: &Selector,
        event: &str,
        reason: &str,
        now: i64,
    ) -> Result<Vec<(Grant, String)>, LedgerError> {
        if selector.is_empty() {
            return Err(LedgerError::Invalid(
                "an event must select by subject, task or grant".to_owned(),
            ));
        }
        let by = format!("event:{event}");
        let mut revoked = Vec::new();
        let mut after = None;
        loop {
            let page = self.live_page(selector, after.as_deref(), now).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.grant_id.clone());
            let full = page.len() == self.page;
            let changes: Vec<Change> = page
                .into_iter()
                .filter_map(|grant| {
                    let why = revoked_by_event(&grant, event)?;
                    Some(Change {
                        grant,
                        action: Action::Revoke,
                        by: by.clone(),
                        reason: reason.to_owned(),
                        why,
                        decision: None,
                    })
                })
                .collect();
            for applied in self.apply(changes, now).await? {
                revoked.push((applied.grant, applied.why));
            }
            if !full {
                break;
            }
        }
        Ok(revoked)
    }

    /// Revokes a live grant: `Ok(None)` when there is no such grant, else
    /// the grant and whether this call revoked it (a grant already revoked
    /// or expired stays as it is). A revocation is written to the feed.
    pub async fn revoke(
        &self,
        grant_id: &str,
        by: &str,
        reason: &str,
        now: i64,
    ) -> Result<Option<(Grant, bool)>, LedgerError> {
        let Some(grant) = self.get(grant_id).await? else {
            return Ok(None);
        };
        if grant.state(now) != GrantState::Live {
            return Ok(Some((grant, false)));
        }
        let change = Change {
            grant: grant.clone(),
            action: Action::Revoke,
            by: by.to_owned(),
            reason: reason.to_owned(),
            why: reason.to_owned(),
            decision: None,
        };
        let changed = !self.apply(vec![change], now).await?.is_empty();
        let grant = self.get(grant_id).await?.unwrap_or(grant);
        Ok(Some((grant, changed)))
    }

    /// One page (up to [`PAGE`], or what [`Ledger::with_page`] set) of the live grants `selector` selects (all
    /// live grants for an empty selector), in `grant_id` order after
    /// `after`.
    pub async fn live_page(
        &self,
        selector: &Selector,
        after: Option<&str>,
        now: i64,
    ) -> Result<Vec<Grant>, LedgerError> {
        let mut filter = selector.filter();
        filter.after = after.map(str::to_owned);
        filter.limit = self.page;
        match &self.store {
            Store::Sqlite(s) => s.list(filter, now).await,
            Store::Postgres(p) => p.list(filter, now).await,
        }
    }

    /// Applies revocations and narrowings in one transaction, each only if
    /// the grant is still live and unchanged since it was read (its
    /// `revoked_at` still empty, its scope and expiry as read), and appends
    /// a feed row for each one applied, in the same transaction. Returns
    /// the changes applied, their grants as they are now, with feed cursors.
    pub async fn apply(&self, changes: Vec<Change>, now: i64) -> Result<Vec<Applied>, LedgerError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let applied = match &self.store {
            Store::Sqlite(s) => s.apply(changes, now).await?,
            Store::Postgres(p) => p.apply(changes, now).await?,
        };
        if !applied.is_empty() {
            self.appended.notify_waiters();
        }
        Ok(applied)
    }

    /// The feed after cursor `after` (0 for the start), in cursor order, at
    /// most `limit` (1..=1000) rows.
    pub async fn feed(&self, after: i64, limit: usize) -> Result<Vec<FeedEntry>, LedgerError> {
        let limit = i64::try_from(limit.clamp(1, 1000)).unwrap_or(1000);
        match &self.store {
            Store::Sqlite(s) => s.feed(after, limit).await,
            Store::Postgres(p) => p.feed(after, limit).await,
        }
    }

    /// Woken (`notify_waiters`) whenever this ledger appends to the feed;
    /// rows other processes append are only seen by reading the feed again.
    pub fn appended(&self) -> Arc<Notify> {
        self.appended.clone()
    }

    /// Held for one re-decision pass, so passes in one process do not
    /// overlap (they would only do the same work twice).
    pub async fn redeciding(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.redeciding.lock().await
    }
}

impl Ledger {
    /// Re-decides the live grants `selector` selects (every live grant for
    /// an empty one), a page ([`PAGE`]) at a time: `decide` turns a page
    /// into the changes to make (see [`redecide::redecide`]), which are
    /// applied in one transaction per page. So 100,000 live grants are
    /// never loaded at once, and a grant revoked meanwhile is left alone.
    /// The answer counts everything and lists the first `keep` changes.
    pub async fn redecide_live<F, Fut>(
        &self,
        selector: &Selector,
        keep: usize,
        mut decide: F,
    ) -> Result<Report, LedgerError>
    where
        F: FnMut(Vec<Grant>, i64) -> Fut,
        Fut: std::future::Future<Output = Vec<Change>>,
    {
        let mut report = Report::default();
        let mut now = self.now();
        let mut page = self.live_page(selector, None, now).await?;
        while let Some(last) = page.last() {
            let after = last.grant_id.clone();
            let full = page.len() == self.page;
            report.checked += page.len();
            // The next page is read while this one is decided (the pages do
            // not overlap: they are taken in `grant_id` order).
            let next_now = self.now();
            let (changes, next) = tokio::join!(decide(page, now), async {
                if full {
                    self.live_page(selector, Some(&after), next_now).await
                } else {
                    Ok(Vec::new())
                }
            });
            let proposed = changes.len();
            let applied = self.apply(changes, now).await?;
            report.skipped += proposed - applied.len();
            for applied in applied {
                match applied.action {
                    Action::Revoke => report.revoked += 1,
                    Action::Narrow { .. } => report.narrowed += 1,
                }
                if report.changes.len() < keep {
                    report.changes.push(applied.summary());
                } else {
                    report.truncated = true;
                }
            }
            page = next?;
            now = next_now;
        }
        Ok(report)
    }
}

/// What a re-decision pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Live grants decided again.
    pub checked: usize,
    /// Revoked.
    pub revoked: usize,
    /// Narrowed.
    pub narrowed: usize,
    /// Changes not applied because the grant changed meanwhile (revoked
    /// or narrowed by someone else first).
    pub skipped: usize,
    /// The changes made, the first ones only when there are many.
    pub changes: Vec<Value>,
    /// More changes were made than [`Report::changes`] lists.
    pub truncated: bool,
}

impl Report {
    /// Grants decided again that stay as they were.
    pub fn unchanged(&self) -> usize {
        self.checked - self.revoked - self.narrowed
    }

    /// The report as JSON: counts, and the grants revoked and narrowed,
    /// each with why.
    pub fn to_json(&self) -> Value {
        let of = |kind: &str| -> Vec<Value> {
            self.changes
                .iter()
                .filter(|c| c["kind"] == kind)
                .cloned()
                .collect()
        };
        json!({
            "checked": self.checked,
            "unchanged": self.unchanged(),
            "revoked_count": self.revoked,
            "narrowed_count": self.narrowed,
            "revoked": of("revoked"),
            "narrowed": of("narrowed"),
            "truncated": self.truncated,
        })
    }
}

impl Applied {
    /// The change as an answer lists it: the grant, what was done and why,
    /// and its feed cursor.
    pub fn summary(&self) -> Value {
        let mut value = json!({
            "grant_id": self.grant.grant_id,
            "kind": match self.action { Action::Revoke => "revoked", Action::Narrow { .. } => "narrowed" },
            "subject_id": self.grant.subject_id,
            "task_id": self.grant.task_id,
            "credential_ref": self.grant.credential_ref,
            "why": self.why,
            "cursor": self.seq.to_string(),
        });
        if let (Some(map), Action::Narrow { scope, expires_at }) =
            (value.as_object_mut(), &self.action)
        {
            map.insert("scope".to_owned(), json!(scope));
            map.insert("expires_at".to_owned(), json!(rfc3339(*expires_at)));
        }
        value
    }
}

/// How many grants a page of live grants holds: re-decisions and events
/// read, decide and write this many at a time.
pub const PAGE: usize = 5000;

/// What a change does to a grant.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Revoke it.
    Revoke,
    /// Keep it with this scope and expiry (never more than it had).
    Narrow {
        /// The new scope: a subset of the grant's.
        scope: Vec<String>,
        /// The new expiry: no later than the grant's.
        expires_at: i64,
    },
}

/// A revocation or narrowing to apply ([`Ledger::apply`]).
#[derive(Debug, Clone)]
pub struct Change {
    /// The grant as read.
    pub grant: Grant,
    /// What to do.
    pub action: Action,
    /// `revoked_by` (and the feed's `by`): `broker`, `event:TYPE`,
    /// `redecision`.
    pub by: String,
    /// The reason stored and put on the feed.
    pub reason: String,
    /// Why, in words, for the answer that lists it.
    pub why: String,
    /// The re-decision that made the change, stored with the grant.
    pub decision: Option<Value>,
}

/// A change that was applied.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The grant after the change.
    pub grant: Grant,
    /// What was done.
    pub action: Action,
    /// Why.
    pub why: String,
    /// Its feed row's cursor.
    pub seq: i64,
}

impl Change {
    /// The change as applied with feed cursor `seq` at `now`.
    pub(crate) fn applied(self, seq: i64, now: i64) -> Applied {
        let mut grant = self.grant;
        match &self.action {
            Action::Revoke => {
                grant.revoked_at = Some(now);
                grant.revoked_by = Some(self.by.clone());
                grant.reason = Some(self.reason.clone());
            }
            Action::Narrow { scope, expires_at } => {
                grant.scope = scope.clone();
                grant.expires_at = *expires_at;
                grant.narrowed = true;
            }
        }
        if self.decision.is_some() {
            grant.redecision = self.decision;
            grant.redecided_at = Some(now);
        }
        Applied {
            grant,
            action: self.action,
            why: self.why,
            seq,
        }
    }

    /// The feed row this change appends.
    pub(crate) fn feed_entry(&self, seq: i64, now: i64) -> FeedEntry {
        let (kind, scope, expires_at) = match &self.action {
            Action::Revoke => (FeedKind::Revoked, None, None),
            Action::Narrow { scope, expires_at } => {
                (FeedKind::Narrowed, Some(scope.clone()), Some(*expires_at))
            }
        };
        FeedEntry {
            seq,
            grant_id: self.grant.grant_id.clone(),
            kind,
            subject_id: self.grant.subject_id.clone(),
            task_id: self.grant.task_id.clone(),
            credential_ref: self.grant.credential_ref.clone(),
            reason: Some(self.reason.clone()),
            by: self.by.clone(),
            at: now,
            scope,
            expires_at,
        }
    }
}

/// What a feed row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedKind {
    /// The grant was revoked.
    Revoked,
    /// The grant was kept with less scope or a shorter expiry.
    Narrowed,
}

impl FeedKind {
    /// `revoked` or `narrowed`.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedKind::Revoked => "revoked",
            FeedKind::Narrowed => "narrowed",
        }
    }

    /// Reads `revoked` or `narrowed`.
    pub fn parse(text: &str) -> Option<FeedKind> {
        match text {
            "revoked" => Some(FeedKind::Revoked),
            "narrowed" => Some(FeedKind::Narrowed),
            _ => None,
        }
    }
}

/// One row of the revocation feed.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEntry {
    /// The cursor: increasing, without gaps, in commit order.
    pub seq: i64,
    /// The grant.
    pub grant_id: String,
    /// Revoked or narrowed.
    pub kind: FeedKind,
    /// Its subject.
    pub subject_id: String,
    /// Its task.
    pub task_id: Option<String>,
    /// The broker's handle for the credential.
    pub credential_ref: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// Who: `broker`, `event:TYPE`, `redecision`, `writ`.
    pub by: String,
    /// When, Unix milliseconds.
    pub at: i64,
    /// A narrowing's new scope.
    pub scope: Option<Vec<String>>,
    /// A narrowing's new expiry, Unix milliseconds.
    pub expires_at: Option<i64>,
}

impl FeedEntry {
    /// The row as `GET /v1/revocations` shows it; `cursor` is a string.
    pub fn to_json(&self) -> Value {
        let mut value = json!({
            "cursor": self.seq.to_string(),
            "kind": self.kind.as_str(),
            "grant_id": self.grant_id,
            "subject_id": self.subject_id,
            "task_id": self.task_id,
            "credential_ref": self.credential_ref,
            "reason": self.reason,
            "by": self.by,
            "at": rfc3339(self.at),
        });
        if let (Some(map), FeedKind::Narrowed) = (value.as_object_mut(), self.kind) {
            map.insert("scope".to_owned(), json!(self.scope));
            map.insert("expires_at".to_owned(), json!(self.expires_at.map(rfc3339)));
        }
        value
    }
}

/// The feed's columns, in [`FeedEntry`]'s order.
pub(crate) const FEED_COLUMNS: &str = "seq, grant_id, kind, subject_id, task_id, credential_ref, reason, revoked_by, recorded_at, scope, expires_at";

/// What an event selects: the live grants matching every selector given.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// `subject.id`.
    pub subject: Option<String>,
    /// `intent.id` or `intent.task`.
    pub task: Option<String>,
    /// One grant.
    pub grant: Option<String>,
}

impl Selector {
    /// True when nothing is selected by: an event must name at least one.
    pub fn is_empty(&self) -> bool {
        self.subject.is_none() && self.task.is_none() && self.grant.is_none()
    }

    pub(crate) fn filter(&self) -> Filter {
        Filter {
            subject: self.subject.clone(),
            task: self.task.clone(),
            grant: self.grant.clone(),
            state: Some(GrantState::Live),
            after: None,
            limit: 0,
        }
    }
}

/// The event that revokes every live grant of a subject, whatever its
/// obligations.
pub const IDENTITY_REVOKED: &str = "identity_revoked";

/// Why `event` revokes `grant`, or `None` when the grant's obligations do
/// not name it.
pub fn revoked_by_event(grant: &Grant, event: &str) -> Option<String> {
    if event == IDENTITY_REVOKED {
        return Some("identity_revoked revokes every grant of the subject".to_owned());
    }
    grant.obligations.as_array()?.iter().find_map(|o| {
        (o["kind"] == "revoke_on" && o["event"] == event).then(|| {
            format!(
                "revoke_on {event} (rule {})",
                o["rule"].as_str().unwrap_or("?")
            )
        })
    })
}

/// A URL with its password replaced by `***`, for messages.
fn redact_url(target: &str) -> String {
    let Some((scheme, rest)) = target.split_once("://") else {
        return target.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return target.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => target.to_owned(),
    }
}

/// Reads a JSON column, naming it when it is not JSON.
pub(crate) fn json_column(name: &str, text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| json!({ "unreadable_column": name }))
}

/// The list's WHERE clause and its parameters, with `$N` or `?N`
/// placeholders (both stores number them).
pub(crate) fn list_query(filter: &Filter, now: i64, placeholder: char) -> (String, Vec<Param>) {
    let mut clauses = Vec::new();
    let mut params = Vec::new();
    let next = |value: Param, params: &mut Vec<Param>| {
        params.push(value);
        format!("{placeholder}{}", params.len())
    };
    if let Some(subject) = &filter.subject {
        let p = next(Param::Text(subject.clone()), &mut params);
        clauses.push(format!("subject_id = {p}"));
    }
    if let Some(task) = &filter.task {
        let p = next(Param::Text(task.clone()), &mut params);
        clauses.push(format!("task_id = {p}"));
    }
    if let Some(grant) = &filter.grant {
        let p = next(Param::Text(grant.clone()), &mut params);
        clauses.push(format!("grant_id = {p}"));
    }
    if let Some(after) = &filter.after {
        let p = next(Param::Text(after.clone()), &mut params);
        clauses.push(format!("grant_id > {p}"));
    }
    match filter.state {
        Some(GrantState::Revoked) => clauses.push("revoked_at IS NOT NULL".to_owned()),
        Some(GrantState::Live) => {
            let p = next(Param::Int(now), &mut params);
            clauses.push(format!("revoked_at IS NULL AND expires_at > {p}"));
        }
        Some(GrantState::Expired) => {
            let p = next(Param::Int(now), &mut params);
            clauses.push(format!("revoked_at IS NULL AND expires_at <= {p}"));
        }
        None => {}
    }
    // A limit of 0 is no limit (the events' selection; lists clamp to 1).
    let limit = if filter.limit == 0 {
        String::new()
    } else {
        let p = next(
            Param::Int(i64::try_from(filter.limit).unwrap_or(i64::MAX)),
            &mut params,
        );
        format!(" LIMIT {p}")
    };
    let where_ = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    (
        format!("SELECT {READ_COLUMNS} FROM writ_grants{where_} ORDER BY grant_id{limit}"),
        params,
    )
}

/// A list query's parameter.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Text(String),
    Int(i64),
}

/// The columns a grant is read from, in [`Grant`]'s order.
pub(crate) const COLUMNS: &str = "grant_id, decision_id, policy_digest, subject_id, task_id, request, scope, ttl, issued_at, expires_at, obligations, credential_ref, revoked_at, revoked_by, revoke_reason, narrowed, approval_attestation";

/// The columns a grant is read from: [`COLUMNS`] but the attestation, its
/// last re-decision (which an issue never writes), then the attestation.
pub(crate) const READ_COLUMNS: &str = "grant_id, decision_id, policy_digest, subject_id, task_id, request, scope, ttl, issued_at, expires_at, obligations, credential_ref, revoked_at, revoked_by, revoke_reason, narrowed, redecision, redecided_at, approval_attestation";

/// The insert of a grant, `?N`/`$N` numbered like [`COLUMNS`].
pub(crate) fn insert_sql(placeholder: char) -> String {
    let values: Vec<String> = (1..=17).map(|i| format!("{placeholder}{i}")).collect();
    format!(
        "INSERT INTO writ_grants ({COLUMNS}) VALUES ({})",
        values.join(", ")
    )
}

/// The duration as whole milliseconds.
pub(crate) fn window_ms(window: Duration) -> i64 {
    i64::try_from(window.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
