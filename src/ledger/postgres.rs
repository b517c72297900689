//! The PostgreSQL store: a small connection pool (deadpool) over
//! tokio-postgres. Count and record run in one transaction that first
//! takes the subject's row in `writ_subjects` (an upsert whose no-op update
//! locks it, as `SELECT ... FOR UPDATE` would): concurrent issuances for one subject, from any replica, wait for each
//! other, and each counts the grants the previous ones committed (under
//! READ COMMITTED every statement sees what committed before it began; under
//! SERIALIZABLE, as on CockroachDB, a conflict aborts with 40001 and the
//! transaction is retried). No advisory locks, no `LOCK TABLE`, no
//! PostgreSQL-only types: the SQL is what CockroachDB and YugabyteDB run too.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

use super::{
    json_column, list_query, now_ms, window_ms, Action, Applied, Change, FeedEntry, FeedKind,
    Filter, Grant, Issue, Issued, LedgerError, Param, Verdict, FEED_COLUMNS, MIGRATIONS,
    READ_COLUMNS, SCHEMA_VERSION,
};

/// How many times a transaction that hit a serialization failure, a
/// deadlock or a racing insert is tried.
const ATTEMPTS: usize = 8;

pub(crate) struct Postgres {
    pub(super) pool: Pool,
    migrated: AtomicBool,
    /// Issuances waiting for the next group commit ([`Postgres::issue`]).
    queue: Arc<Mutex<Queue>>,
}

/// Why one attempt failed: worth another try, or not.
enum Failure {
    Retry(String),
    Fail(LedgerError),
}

fn classify(error: &tokio_postgres::Error) -> Failure {
    match error.code() {
        Some(code)
            if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::UNIQUE_VIOLATION =>
        {
            Failure::Retry(error.to_string())
        }
        _ => Failure::Fail(unavailable(error)),
    }
}

pub(super) fn unavailable(error: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable(format!("PostgreSQL: {error}"))
}

fn pool_error(error: deadpool_postgres::PoolError) -> Failure {
    Failure::Fail(unavailable(error))
}

/// Runs `attempt` until it succeeds, fails for good, or has been tried
/// [`ATTEMPTS`] times.
async fn retry<T, A, Fut>(what: &str, mut attempt: A) -> Result<T, LedgerError>
where
    A: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut last = String::new();
    for round in 0..ATTEMPTS {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(Failure::Fail(error)) => return Err(error),
            Err(Failure::Retry(message)) => {
                last = message;
                backoff(round).await;
            }
        }
    }
    Err(unavailable(format!(
        "{what} failed {ATTEMPTS} times on conflicts; the last: {last}"
    )))
}

/// The wait before another try, after `round` failed ones and one: a few
/// milliseconds more each time, with a jitter so that two replicas that
/// collided do not collide again.
async fn backoff(round: usize) {
    let jitter = u64::try_from(now_ms() % 7).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(2 * (round as u64 + 1) + jitter)).await;
}

impl Postgres {
    pub(crate) fn open(url: &str) -> Result<Postgres, LedgerError> {
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
            LedgerError::Invalid(format!("`--ledger` is not a PostgreSQL URL: {e}"))
        })?;
        config.connect_timeout(Duration::from_secs(3));
        config.application_name("writ");
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| LedgerError::Invalid(format!("cannot build the connection pool: {e}")))?;
        Ok(Postgres {
            pool,
            migrated: AtomicBool::new(false),
            queue: Arc::new(Mutex::new(Queue::default())),
        })
    }

    /// Runs `attempt` until it succeeds, fails for good, or has been
    /// tried [`ATTEMPTS`] times.
    async fn retry<T, A, Fut>(&self, what: &str, attempt: A) -> Result<T, LedgerError>
    where
        A: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        retry(what, attempt).await
    }

    pub(crate) async fn migrate(&self) -> Result<Vec<i64>, LedgerError> {
        let applied = self
            .retry("the migration", || async {
                let mut client = self.pool.get().await.map_err(pool_error)?;
                let tx = client.transaction().await.map_err(|e| classify(&e))?;
                tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS writ_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
                )
                .await
                .map_err(|e| classify(&e))?;
                let row = tx
                    .query_one("SELECT COALESCE(MAX(version), 0) FROM writ_migrations", &[])
                    .await
                    .map_err(|e| classify(&e))?;
                let current: i64 = row.get(0);
                let mut applied = vec![current];
                for (version, name, sql) in MIGRATIONS {
                    if version > current {
                        tx.batch_execute(sql).await.map_err(|e| classify(&e))?;
                        tx.execute(
                            "INSERT INTO writ_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                            &[&version, &name, &now_ms()],
                        )
                        .await
                        .map_err(|e| classify(&e))?;
                        applied.push(version);
                    }
                }
                tx.commit().await.map_err(|e| classify(&e))?;
                Ok(applied)
            })
            .await?;
        if applied[0] > SCHEMA_VERSION {
            return Err(LedgerError::Invalid(format!(
                "the PostgreSQL ledger has schema version {}, newer than this writ's {SCHEMA_VERSION}; upgrade writ",
                applied[0]
            )));
        }
        self.migrated.store(true, Ordering::SeqCst);
        Ok(applied[1..].to_vec())
    }

    /// Migrates first if the database did not answer at start.
    pub(super) async fn ready(&self) -> Result<(), LedgerError> {
        if !self.migrated.load(Ordering::SeqCst) {
            self.migrate().await?;
        }
        Ok(())
    }

    pub(crate) async fn ping(&self) -> Result<(), LedgerError> {
        self.ready().await?;
        let client = self.pool.get().await.map_err(unavailable)?;
        client
            .query_one("SELECT 1", &[])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Counts and records in a group commit. The issuance is queued; up to
    /// [`FLUSHERS`] tasks at a time each take the queued issuances (at most
    /// one per subject and per idempotency key, none held by the other
    /// task's groups in flight: the others wait for a later group) and run
    /// them in one transaction of two rounds, a few statements each
    /// whatever the group's size (the group's rows go as arrays,
    /// `unnest`ed), pipelined and prepared once per connection; a group's
    /// second round goes out with the next group's first, one round trip
    /// a group ([`flush`]). The first round begins, creates and locks
    /// the group's subjects' counter rows in sorted order (one upsert),
    /// counts each subject's grants in its window (one statement, after
    /// the locks, so under READ COMMITTED it sees every grant committed by
    /// the transactions, of this replica or another, that held a lock
    /// before) and looks the keys up; each `decide` runs; the second
    /// records the grants and the answers and commits; only then is each
    /// issuance answered. Locking in sorted order keeps two groups from
    /// deadlocking.
    pub(crate) async fn issue<F>(&self, issue: Issue<'_>, decide: F) -> Result<Issued, LedgerError>
    where
        F: Fn(u64) -> Verdict + Send + Sync + 'static,
    {
        self.ready().await?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            subject: issue.subject_id.to_owned(),
            key: issue.idempotency_key.map(str::to_owned),
            digest: issue.request_digest.to_owned(),
            since: issue.now.saturating_sub(window_ms(issue.window)),
            now: issue.now,
            decide: Box::new(decide),
            reply,
        };
        let start = {
            let mut queue = self
                .queue
                .lock()
                .map_err(|_| unavailable("a previous issuance panicked"))?;
            queue.jobs.push(job);
            queue.start_flusher()
        };
        if let Some(flusher) = start {
            drop(tokio::spawn(flush(
                self.pool.clone(),
                self.queue.clone(),
                flusher,
            )));
        }
        answer
            .await
            .map_err(|_| unavailable("the issuance was dropped unanswered"))?
    }

    pub(crate) async fn get(&self, grant_id: &str) -> Result<Option<Grant>, LedgerError> {
        self.ready().await?;
        let client = self.pool.get().await.map_err(unavailable)?;
        let row = client
            .query_opt(
                &format!("SELECT {READ_COLUMNS} FROM writ_grants WHERE grant_id = $1"),
                &[&grant_id],
            )
            .await
            .map_err(unavailable)?;
        row.map(|r| read(&r)).transpose()
    }

    pub(crate) async fn list(&self, filter: Filter, now: i64) -> Result<Vec<Grant>, LedgerError> {
        self.ready().await?;
        let (sql, params) = list_query(&filter, now, '$');
        let client = self.pool.get().await.map_err(unavailable)?;
        let values = boxed(params);
        let refs = borrowed(&values);
        let rows = client.query(&sql, &refs).await.map_err(unavailable)?;
        rows.iter().map(read).collect()
    }

    pub(crate) async fn latest_time(&self) -> Result<i64, LedgerError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let row = client
            .query_one(
                "SELECT MAX(t) FROM (SELECT MAX(issued_at) AS t FROM writ_grants UNION ALL SELECT MAX(recorded_at) AS t FROM writ_revocations) AS times",
                &[],
            )
            .await
            .map_err(unavailable)?;
        let latest: Option<i64> = row.try_get(0).map_err(unavailable)?;
        Ok(latest.unwrap_or(i64::MIN))
    }

    /// Revocations and narrowings as a few set-based statements (arrays
    /// unnested, which CockroachDB runs too), then the feed's head row
    /// taken `FOR UPDATE` (an UPDATE) and the feed rows inserted, all in one
    /// transaction.
    pub(crate) async fn apply(
        &self,
        changes: Vec<Change>,
        now: i64,
    ) -> Result<Vec<Applied>, LedgerError> {
        self.ready().await?;
        let changes = &changes;
        let kept: Vec<(usize, i64)> = self
            .retry("revoking or narrowing grants", || async move {
                let mut client = self.pool.get().await.map_err(pool_error)?;
                let tx = client.transaction().await.map_err(|e| classify(&e))?;
                let mut revoke = Columns::default();
                let mut narrow = Columns::default();
                for change in changes.iter() {
                    let columns = match &change.action {
                        Action::Revoke => &mut revoke,
                        Action::Narrow { scope, expires_at } => {
                            narrow.scope.push(serde_json::Value::from(scope.clone()).to_string());
                            narrow.expires_at.push(*expires_at);
                            &mut narrow
                        }
                    };
                    columns.id.push(change.grant.grant_id.clone());
                    columns.by.push(change.by.clone());
                    columns.reason.push(change.reason.clone());
                    columns
                        .decision
                        .push(change.decision.as_ref().map(serde_json::Value::to_string));
                    columns.old_expires_at.push(change.grant.expires_at);
                    columns
                        .old_scope
                        .push(serde_json::Value::from(change.grant.scope.clone()).to_string());
                }
                let mut changed = std::collections::HashSet::new();
                if !revoke.id.is_empty() {
                    let rows = tx
                        .query(
                            "UPDATE writ_grants AS g SET revoked_at = $1, revoked_by = v.by, revoke_reason = v.reason, redecision = COALESCE(v.decision, g.redecision), redecided_at = CASE WHEN v.decision IS NULL THEN g.redecided_at ELSE $1 END \
                             FROM unnest($2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[]) AS v(id, by, reason, decision) \
                             WHERE g.grant_id = v.id AND g.revoked_at IS NULL AND g.expires_at > $1 RETURNING g.grant_id",
                            &[&now, &revoke.id, &revoke.by, &revoke.reason, &revoke.decision],
                        )
                        .await
                        .map_err(|e| classify(&e))?;
                    changed.extend(rows.iter().filter_map(|r| r.try_get::<_, String>(0).ok()));
                }
                if !narrow.id.is_empty() {
                    let rows = tx
                        .query(
                            "UPDATE writ_grants AS g SET scope = v.scope, expires_at = v.expires_at, narrowed = 1, redecision = v.decision, redecided_at = $1 \
                             FROM unnest($2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::TEXT[], $6::BIGINT[], $7::TEXT[]) AS v(id, scope, expires_at, decision, old_expires_at, old_scope) \
                             WHERE g.grant_id = v.id AND g.revoked_at IS NULL AND g.expires_at > $1 AND g.expires_at = v.old_expires_at AND g.scope = v.old_scope RETURNING g.grant_id",
                            &[
                                &now,
                                &narrow.id,
                                &narrow.scope,
                                &narrow.expires_at,
                                &narrow.decision,
                                &narrow.old_expires_at,
                                &narrow.old_scope,
                            ],
                        )
                        .await
                        .map_err(|e| classify(&e))?;
                    changed.extend(rows.iter().filter_map(|r| r.try_get::<_, String>(0).ok()));
                }
                let kept: Vec<usize> = changes
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| changed.contains(&c.grant.grant_id))
                    .map(|(i, _)| i)
                    .collect();
                if kept.is_empty() {
                    tx.commit().await.map_err(|e| classify(&e))?;
                    return Ok(Vec::new());
                }
                let count = i64::try_from(kept.len()).unwrap_or(i64::MAX);
                // The feed's head row, locked until commit: appenders on every
                // replica take cursors one transaction at a time, in commit
                // order, so a reader never sees a later cursor before an
                // earlier one.
                let row = tx
                    .query_one(
                        "UPDATE writ_feed_head SET last_seq = last_seq + $1 WHERE feed = 'revocations' RETURNING last_seq",
                        &[&count],
                    )
                    .await
                    .map_err(|e| classify(&e))?;
                let last: i64 = row.get(0);
                let first = last - count + 1;
                let mut feed = FeedColumns::default();
                let mut seqs = Vec::with_capacity(kept.len());
                for (n, &i) in kept.iter().enumerate() {
                    let seq = first + i64::try_from(n).unwrap_or(0);
                    feed.push(changes[i].feed_entry(seq, now));
                    seqs.push((i, seq));
                }
                tx.execute(
                    &format!(
                        "INSERT INTO writ_revocations ({FEED_COLUMNS}) SELECT * FROM unnest($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::BIGINT[], $10::TEXT[], $11::BIGINT[])"
                    ),
                    &[
                        &feed.seq,
                        &feed.grant_id,
                        &feed.kind,
                        &feed.subject_id,
                        &feed.task_id,
                        &feed.credential_ref,
                        &feed.reason,
                        &feed.by,
                        &feed.at,
                        &feed.scope,
                        &feed.expires_at,
                    ],
                )
                .await
                .map_err(|e| classify(&e))?;
                tx.commit().await.map_err(|e| classify(&e))?;
                Ok(seqs)
            })
            .await?;
        let mut changes: Vec<Option<Change>> = changes.iter().cloned().map(Some).collect();
        Ok(kept
            .into_iter()
            .filter_map(|(i, seq)| changes.get_mut(i)?.take().map(|c| c.applied(seq, now)))
            .collect())
    }

    pub(crate) async fn feed(&self, after: i64, limit: i64) -> Result<Vec<FeedEntry>, LedgerError> {
        self.ready().await?;
        let client = self.pool.get().await.map_err(unavailable)?;
        let rows = client
            .query(
                &format!(
                    "SELECT {FEED_COLUMNS} FROM writ_revocations WHERE seq > $1 ORDER BY seq LIMIT $2"
                ),
                &[&after, &limit],
            )
            .await
            .map_err(unavailable)?;
        rows.iter().map(read_feed).collect()
    }
}

/// A batch of changes of one kind, as arrays (one per column).
#[derive(Default)]
struct Columns {
    id: Vec<String>,
    by: Vec<String>,
    reason: Vec<String>,
    decision: Vec<Option<String>>,
    scope: Vec<String>,
    expires_at: Vec<i64>,
    old_expires_at: Vec<i64>,
    old_scope: Vec<String>,
}

/// Feed rows, as arrays (one per column).
#[derive(Default)]
struct FeedColumns {
    seq: Vec<i64>,
    grant_id: Vec<String>,
    kind: Vec<String>,
    subject_id: Vec<String>,
    task_id: Vec<Option<String>>,
    credential_ref: Vec<Option<String>>,
    reason: Vec<Option<String>>,
    by: Vec<String>,
    at: Vec<i64>,
    scope: Vec<Option<String>>,
    expires_at: Vec<Option<i64>>,
}

impl FeedColumns {
    fn push(&mut self, row: FeedEntry) {
        self.seq.push(row.seq);
        self.grant_id.push(row.grant_id);
        self.kind.push(row.kind.as_str().to_owned());
        self.subject_id.push(row.subject_id);
        self.task_id.push(row.task_id);
        self.credential_ref.push(row.credential_ref);
        self.reason.push(row.reason);
        self.by.push(row.by);
        self.at.push(row.at);
        self.scope
            .push(row.scope.map(|s| serde_json::Value::from(s).to_string()));
        self.expires_at.push(row.expires_at);
    }
}

fn read_feed(row: &tokio_postgres::Row) -> Result<FeedEntry, LedgerError> {
    let get_err = |e: tokio_postgres::Error| {
        LedgerError::Unavailable(format!("PostgreSQL: a feed row does not read: {e}"))
    };
    let kind: String = row.try_get(2).map_err(get_err)?;
    let scope: Option<String> = row.try_get(9).map_err(get_err)?;
    Ok(FeedEntry {
        seq: row.try_get(0).map_err(get_err)?,
        grant_id: row.try_get(1).map_err(get_err)?,
        kind: FeedKind::parse(&kind).unwrap_or(FeedKind::Revoked),
        subject_id: row.try_get(3).map_err(get_err)?,
        task_id: row.try_get(4).map_err(get_err)?,
        credential_ref: row.try_get(5).map_err(get_err)?,
        reason: row.try_get(6).map_err(get_err)?,
        by: row.try_get(7).map_err(get_err)?,
        at: row.try_get(8).map_err(get_err)?,
        scope: scope.and_then(|text| serde_json::from_str(&text).ok()),
        expires_at: row.try_get(10).map_err(get_err)?,
    })
}

/// Creates the group's subjects' counter rows where missing and locks every
/// one of them until the transaction ends, in sorted order (an upsert takes
/// its rows in the order they come; the no-op update is what locks a row
/// that exists, as `SELECT ... FOR UPDATE` would). One statement per group.
const LOCK_SUBJECTS: &str = "INSERT INTO writ_subjects (subject_id, issued) SELECT s, 0 FROM unnest($1::TEXT[]) AS v(s) ORDER BY s ON CONFLICT (subject_id) DO UPDATE SET issued = writ_subjects.issued";
/// Each subject's grants issued within its window, in the arrays' order.
/// A statement of its own, after [`LOCK_SUBJECTS`]: under READ COMMITTED
/// its snapshot is taken once every lock is held, so it sees the grants of
/// every transaction that held a lock before.
const COUNT_GRANTS: &str = "SELECT (SELECT COUNT(*) FROM writ_grants AS g WHERE g.subject_id = v.s AND g.issued_at > v.since) FROM unnest($1::TEXT[], $2::BIGINT[]) WITH ORDINALITY AS v(s, since, n) ORDER BY v.n";
/// The answers stored for the group's idempotency keys.
const FIND_KEYS: &str = "SELECT idempotency_key, status, body, request_digest FROM writ_idempotency WHERE idempotency_key = ANY($1::TEXT[])";
/// Records the group's grants (not revoked, not narrowed: the defaults).
const INSERT_GRANTS: &str = "INSERT INTO writ_grants (grant_id, decision_id, policy_digest, subject_id, task_id, request, scope, ttl, issued_at, expires_at, obligations, credential_ref, approval_attestation) SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::BIGINT[], $9::BIGINT[], $10::BIGINT[], $11::TEXT[], $12::TEXT[], $13::TEXT[])";
/// Stores the group's answers under their keys.
const STORE_KEYS: &str = "INSERT INTO writ_idempotency (idempotency_key, status, body, created_at, request_digest) SELECT * FROM unnest($1::TEXT[], $2::INTEGER[], $3::TEXT[], $4::BIGINT[], $5::TEXT[])";

/// A pooled connection in the middle of a transaction: dropped without
/// [`Discard::keep`], the connection is closed rather than returned to the
/// pool, which makes the server roll the transaction back.
struct Discard(Option<deadpool_postgres::Object>);

impl Discard {
    /// The client, unless the connection was given back or closed.
    fn client(&self) -> Option<&tokio_postgres::Client> {
        self.0.as_ref().map(|object| &***object)
    }

    /// The transaction is over (committed or rolled back): the connection
    /// goes back to the pool.
    fn keep(&mut self) {
        drop(self.0.take());
    }
}

impl Drop for Discard {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

/// The most issuances one group commit takes.
const MAX_GROUP: usize = 256;

/// The most tasks committing groups at once in one process, each on a
/// connection of its own that it keeps while the queue is not empty. While
/// one task's group waits for its commit to be flushed to disk, the other's
/// is decided.
///
/// Measured (docs/performance.md): before the pipeline of [`flush`], one
/// group at a time serialized the round trips and the disk flush, and
/// three spent more PostgreSQL CPU per grant on smaller groups for no more
/// throughput than two. With the pipeline, one task made larger groups
/// and spent less CPU a grant, but fell behind on a busy machine (a group
/// waits for each wake-up of one chain).
const FLUSHERS: usize = 2;

/// One queued issuance.
struct Job {
    subject: String,
    key: Option<String>,
    digest: String,
    since: i64,
    now: i64,
    decide: Box<dyn Fn(u64) -> Verdict + Send + Sync>,
    reply: tokio::sync::oneshot::Sender<Result<Issued, LedgerError>>,
}

/// A subject or a key in flight: the task whose groups hold it, in how
/// many of them.
struct Holder {
    flusher: usize,
    groups: usize,
}

/// The issuances waiting for a group commit.
#[derive(Default)]
pub(crate) struct Queue {
    jobs: Vec<Job>,
    /// Tasks draining the queue (at most [`FLUSHERS`]).
    flushers: usize,
    /// The number the last task started was given.
    started: usize,
    /// The subjects of the groups in flight: an issuance for one of them
    /// waits for that group to end (it must count that group's grant),
    /// unless it goes on the same connection, behind that group's commit.
    busy_subjects: std::collections::HashMap<String, Holder>,
    /// The idempotency keys of the groups in flight, likewise.
    busy_keys: std::collections::HashMap<String, Holder>,
}

impl Queue {
    /// Another task to drain the queue and its number, if fewer than
    /// [`FLUSHERS`] do (it then counts as one).
    pub(crate) fn start_flusher(&mut self) -> Option<usize> {
        if self.flushers < FLUSHERS {
            self.flushers += 1;
            self.started = self.started.wrapping_add(1);
            Some(self.started)
        } else {
            None
        }
    }

    /// A group's subjects and keys are free again (of that group: the
    /// same task may hold them in its next one).
    fn release<'a>(&mut self, held: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) {
        for (subject, key) in held {
            let_go(&mut self.busy_subjects, subject);
            if let Some(key) = key {
                let_go(&mut self.busy_keys, key);
            }
        }
    }
}

/// One group fewer holds `name`.
fn let_go(held: &mut std::collections::HashMap<String, Holder>, name: &str) {
    if let Some(holder) = held.get_mut(name) {
        holder.groups = holder.groups.saturating_sub(1);
        if holder.groups == 0 {
            held.remove(name);
        }
    }
}

/// One group more of `flusher` holds `name`.
fn hold(held: &mut std::collections::HashMap<String, Holder>, name: &str, flusher: usize) {
    match held.get_mut(name) {
        Some(holder) => holder.groups += 1,
        None => {
            held.insert(name.to_owned(), Holder { flusher, groups: 1 });
        }
    }
}

/// Whether `flusher` may take `name`: no group holds it, or only its own.
fn free_for(held: &std::collections::HashMap<String, Holder>, name: &str, flusher: usize) -> bool {
    held.get(name)
        .map_or(true, |holder| holder.flusher == flusher)
}

/// What a task has taken and not yet answered, released should it panic.
fn entries(group: &[Job]) -> Vec<(String, Option<String>)> {
    group
        .iter()
        .map(|job| (job.subject.clone(), job.key.clone()))
        .collect()
}

/// The group's subjects and keys released, then its callers answered.
fn answer(queue: &Mutex<Queue>, group: Vec<Job>, result: Result<Vec<Issued>, LedgerError>) {
    if let Ok(mut queue) = queue.lock() {
        queue.release(
            group
                .iter()
                .map(|job| (job.subject.as_str(), job.key.as_deref())),
        );
    }
    match result {
        Ok(answers) => {
            for (job, answer) in group.into_iter().zip(answers) {
                // A caller that went away is not an error: its grant is
                // recorded, as with any answer the broker never read.
                let _ = job.reply.send(Ok(answer));
            }
        }
        Err(error) => {
            for job in group {
                let _ = job.reply.send(Err(error.clone()));
            }
        }
    }
}

/// A task's connection and its prepared statements.
struct Link {
    client: Discard,
    statements: Statements,
}

/// The connection's client and statements, unless it was closed.
fn parts(link: &Option<Link>) -> Option<(&tokio_postgres::Client, &Statements)> {
    let open = link.as_ref()?;
    Some((open.client.client()?, &open.statements))
}

impl Link {
    /// A connection from the pool, its statements prepared (once per
    /// connection: the pool caches them).
    async fn open(pool: &Pool) -> Result<Link, Failure> {
        let client = pool.get().await.map_err(pool_error)?;
        let statements = Statements::prepare(&client).await?;
        Ok(Link {
            client: Discard(Some(client)),
            statements,
        })
    }
}

/// A group whose first round trip is done: its transaction is open on the
/// task's connection, its subjects' rows locked, its grants counted.
struct Counted {
    group: Vec<Job>,
    first: First,
}

/// What a task holds: a group taken from the queue, or one counted.
enum Held {
    Nothing,
    Taken(Vec<Job>),
    Counted(Counted),
}

/// Commits the queued issuances, a group at a time, until none it can take
/// is left (the others wait for a group in flight, whose task takes them).
///
/// One round trip a group: a group's second round (its grants, its keys'
/// answers, `COMMIT`) goes out with the first round of the next group
/// taken from the queue (`BEGIN`, the locks, the counts, the keys looked
/// up), pipelined on the task's connection. PostgreSQL runs a
/// connection's statements in order, so the next group's locks and counts
/// come after the commit and see its grants: a subject (or key) of one
/// group may be in the next one of the same task. Should a group not
/// commit, the next one's transaction is rolled back and started again
/// once that group is settled (retried on its own in two round trips as
/// before, or answered with the error): a group counts only what was
/// recorded.
async fn flush(pool: Pool, queue: Arc<Mutex<Queue>>, flusher: usize) {
    let mut unwinding = Unwinding {
        queue: queue.clone(),
        current: Vec::new(),
        next: Vec::new(),
    };
    let mut link: Option<Link> = None;
    let mut held = Held::Nothing;
    loop {
        let current = match std::mem::replace(&mut held, Held::Nothing) {
            Held::Counted(counted) => counted,
            Held::Taken(group) => match begin(&pool, &queue, &mut link, group).await {
                Some(counted) => counted,
                None => {
                    unwinding.current.clear();
                    continue;
                }
            },
            Held::Nothing => {
                let group = match queue.lock() {
                    Ok(mut queue) => {
                        let group = take_group(&mut queue, flusher);
                        if group.is_empty() {
                            queue.flushers = queue.flushers.saturating_sub(1);
                            unwinding.current.clear();
                            drop(queue);
                            if let Some(mut link) = link.take() {
                                link.client.keep();
                            }
                            return;
                        }
                        group
                    }
                    // Only a panic under the lock poisons it, and nothing
                    // that can panic runs under it; should it happen, the
                    // queued callers see their answer dropped.
                    Err(_) => return,
                };
                unwinding.current = entries(&group);
                match begin(&pool, &queue, &mut link, group).await {
                    Some(counted) => counted,
                    None => {
                        unwinding.current.clear();
                        continue;
                    }
                }
            }
        };

        // Each decision, in turn, while the group's rows are locked.
        let decided = decide_group(&current.group, &current.first);
        let Counted { group, first } = current;
        drop(first);
        let (stored, verdicts) = match decided {
            Ok(decided) => decided,
            Err(failure) => {
                roll_back(&mut link).await;
                settle(&pool, &queue, group, failure).await;
                unwinding.current.clear();
                continue;
            }
        };
        let taken = match queue.lock() {
            Ok(mut queue) => take_group(&mut queue, flusher),
            Err(_) => Vec::new(),
        };
        unwinding.next = entries(&taken);
        let Some((client, statements)) = parts(&link) else {
            answer(&queue, group, Err(unavailable("no connection")));
            unwinding.current = std::mem::take(&mut unwinding.next);
            held = if taken.is_empty() {
                Held::Nothing
            } else {
                Held::Taken(taken)
            };
            continue;
        };

        // One round trip: this group's second round, the next one's first.
        let (committed, counted) = {
            let second = SecondColumns::of(&group, &verdicts);
            let first = FirstColumns::of(&taken);
            let mut futures = second_round(client, statements, &second);
            let split = futures.len();
            if !taken.is_empty() {
                futures.extend(first_round(client, statements, &first));
            }
            let mut outputs = join_all(futures).await;
            let firsts = outputs.split_off(split.min(outputs.len()));
            // A COMMIT of a transaction that failed answers ROLLBACK, not
            // an error: the statements' own errors are what tell.
            let committed = outputs
                .into_iter()
                .try_for_each(|result| result.map(drop).map_err(|e| classify(&e)));
            let counted = if taken.is_empty() {
                None
            } else {
                Some(read_first(taken.len(), firsts))
            };
            (committed, counted)
        };

        match committed {
            Ok(()) => {
                answer(&queue, group, Ok(finish(stored, verdicts)));
                unwinding.current = std::mem::take(&mut unwinding.next);
                held = match counted {
                    None => Held::Nothing,
                    Some(Ok(first)) => Held::Counted(Counted {
                        group: taken,
                        first,
                    }),
                    Some(Err(failure)) => {
                        roll_back(&mut link).await;
                        settle(&pool, &queue, taken, failure).await;
                        unwinding.current.clear();
                        Held::Nothing
                    }
                };
            }
            Err(failure) => {
                // Nothing of the group was recorded. The next group, if its
                // transaction opened, counted without this one's grants,
                // which is right, but this one is settled first: the next
                // is rolled back (its locks released, for the retry to
                // take) and starts again after.
                roll_back(&mut link).await;
                settle(&pool, &queue, group, failure).await;
                unwinding.current = std::mem::take(&mut unwinding.next);
                held = if taken.is_empty() {
                    Held::Nothing
                } else {
                    Held::Taken(taken)
                };
            }
        }
    }
}

/// A taken group's first round trip alone, on the task's connection
/// (opened if it has none): the group counted, or settled (retried or
/// answered) and `None`.
async fn begin(
    pool: &Pool,
    queue: &Mutex<Queue>,
    link: &mut Option<Link>,
    group: Vec<Job>,
) -> Option<Counted> {
    if link.is_none() {
        match Link::open(pool).await {
            Ok(opened) => *link = Some(opened),
            Err(failure) => {
                settle(pool, queue, group, failure).await;
                return None;
            }
        }
    }
    let result = match parts(link) {
        Some((client, statements)) => {
            let first = FirstColumns::of(&group);
            read_first(
                group.len(),
                join_all(first_round(client, statements, &first)).await,
            )
        }
        None => Err(Failure::Fail(unavailable("no connection"))),
    };
    match result {
        Ok(first) => Some(Counted { group, first }),
        Err(failure) => {
            roll_back(link).await;
            settle(pool, queue, group, failure).await;
            None
        }
    }
}

/// Ends whatever transaction the task's connection is in; a connection
/// that does not answer is closed instead (the server then rolls back).
async fn roll_back(link: &mut Option<Link>) {
    let rolled_back = match parts(link) {
        Some((client, _)) => client.batch_execute("ROLLBACK").await.is_ok(),
        None => true,
    };
    if !rolled_back {
        // Dropped without `keep`: closed.
        drop(link.take());
    }
}

/// A group that did not commit: tried again on its own (a conflict), in
/// two round trips on a connection of its own, or answered with the error.
async fn settle(pool: &Pool, queue: &Mutex<Queue>, group: Vec<Job>, failure: Failure) {
    let result = match failure {
        Failure::Retry(_) => {
            backoff(0).await;
            retry("recording the grants", || commit_group(pool, &group)).await
        }
        Failure::Fail(error) => Err(error),
    };
    answer(queue, group, result);
}

/// Should a flushing task panic (a `decide` that panics), its groups'
/// callers see their answers dropped, their subjects and keys are
/// released, and it no longer counts as a flusher, so the next issuance
/// starts a new task rather than queueing behind one that is gone.
struct Unwinding {
    queue: Arc<Mutex<Queue>>,
    /// The group being decided or committed.
    current: Vec<(String, Option<String>)>,
    /// The group whose first round goes with the current one's second.
    next: Vec<(String, Option<String>)>,
}

impl Drop for Unwinding {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(mut queue) = self.queue.lock() {
                let held = self.current.iter().chain(&self.next);
                queue.release(held.map(|(subject, key)| (subject.as_str(), key.as_deref())));
                queue.flushers = queue.flushers.saturating_sub(1);
            }
        }
    }
}

/// Takes from the queue, in arrival order, at most [`MAX_GROUP`]
/// issuances with no subject and no idempotency key twice nor held by
/// another task's group in flight (a second one for the same subject must
/// count the first one's grant, so it waits for that group's commit: the
/// next group of the same task comes after it on the same connection),
/// marks their subjects and keys busy, and sorts them by subject (the order
/// the rows are locked in).
fn take_group(queue: &mut Queue, flusher: usize) -> Vec<Job> {
    let mut group = Vec::new();
    let mut rest = Vec::new();
    let mut subjects = std::collections::HashSet::new();
    let mut keys = std::collections::HashSet::new();
    for job in queue.jobs.drain(..) {
        let fresh = group.len() < MAX_GROUP
            && !subjects.contains(job.subject.as_str())
            && free_for(&queue.busy_subjects, &job.subject, flusher)
            && job.key.as_deref().map_or(true, |key| {
                !keys.contains(key) && free_for(&queue.busy_keys, key, flusher)
            });
        if fresh {
            subjects.insert(job.subject.clone());
            if let Some(key) = &job.key {
                keys.insert(key.clone());
            }
            group.push(job);
        } else {
            rest.push(job);
        }
    }
    queue.jobs = rest;
    for job in &group {
        hold(&mut queue.busy_subjects, &job.subject, flusher);
        if let Some(key) = &job.key {
            hold(&mut queue.busy_keys, key, flusher);
        }
    }
    group.sort_by(|a, b| a.subject.cmp(&b.subject));
    group
}

/// The group's grants as arrays, one per column of [`INSERT_GRANTS`].
#[derive(Default)]
struct GrantColumns<'a> {
    grant_id: Vec<&'a str>,
    decision_id: Vec<&'a str>,
    policy_digest: Vec<&'a str>,
    subject_id: Vec<&'a str>,
    task_id: Vec<Option<&'a str>>,
    request: Vec<String>,
    scope: Vec<String>,
    ttl: Vec<i64>,
    issued_at: Vec<i64>,
    expires_at: Vec<i64>,
    obligations: Vec<String>,
    credential_ref: Vec<Option<&'a str>>,
    approval: Vec<Option<String>>,
}

impl<'a> GrantColumns<'a> {
    fn push(&mut self, g: &'a Grant) {
        self.grant_id.push(&g.grant_id);
        self.decision_id.push(&g.decision_id);
        self.policy_digest.push(&g.policy_digest);
        self.subject_id.push(&g.subject_id);
        self.task_id.push(g.task_id.as_deref());
        self.request.push(g.request.to_string());
        // The same text as `Value::from(scope).to_string()`, without the copy.
        self.scope
            .push(serde_json::to_string(&g.scope).unwrap_or_else(|_| "[]".to_owned()));
        self.ttl.push(i64::try_from(g.ttl).unwrap_or(i64::MAX));
        self.issued_at.push(g.issued_at);
        self.expires_at.push(g.expires_at);
        self.obligations.push(g.obligations.to_string());
        self.credential_ref.push(g.credential_ref.as_deref());
        self.approval
            .push(super::ApprovalAttestation::column(g.approval.as_ref()));
    }
}

/// The group's answers to store under their keys, as arrays.
#[derive(Default)]
struct KeyColumns<'a> {
    key: Vec<&'a str>,
    status: Vec<i32>,
    body: Vec<&'a str>,
    created_at: Vec<i64>,
    digest: Vec<&'a str>,
}

/// The group commit's statements, prepared once per connection.
struct Statements {
    lock_subjects: tokio_postgres::Statement,
    count_grants: tokio_postgres::Statement,
    find_keys: tokio_postgres::Statement,
    insert_grants: tokio_postgres::Statement,
    store_keys: tokio_postgres::Statement,
}

impl Statements {
    async fn prepare(client: &deadpool_postgres::Object) -> Result<Statements, Failure> {
        let prepare = |sql: &'static str| async move {
            client.prepare_cached(sql).await.map_err(|e| classify(&e))
        };
        let (lock_subjects, count_grants, find_keys, insert_grants, store_keys) = tokio::try_join!(
            prepare(LOCK_SUBJECTS),
            prepare(COUNT_GRANTS),
            prepare(FIND_KEYS),
            prepare(INSERT_GRANTS),
            prepare(STORE_KEYS),
        )?;
        Ok(Statements {
            lock_subjects,
            count_grants,
            find_keys,
            insert_grants,
            store_keys,
        })
    }
}

/// The arrays of a group's first round trip.
struct FirstColumns<'a> {
    subjects: Vec<&'a str>,
    since: Vec<i64>,
    keys: Vec<&'a str>,
}

impl<'a> FirstColumns<'a> {
    fn of(group: &'a [Job]) -> FirstColumns<'a> {
        FirstColumns {
            subjects: group.iter().map(|job| job.subject.as_str()).collect(),
            since: group.iter().map(|job| job.since).collect(),
            keys: group.iter().filter_map(|job| job.key.as_deref()).collect(),
        }
    }
}

/// What a group's first round trip read: each subject's count, in the
/// group's order, and the answers stored under its keys.
struct First {
    counts: Vec<tokio_postgres::Row>,
    stored: std::collections::HashMap<String, tokio_postgres::Row>,
}

/// A group's first round: begin; create and lock the subjects' rows;
/// count; look the keys up (when it has any).
fn first_round<'a>(
    client: &'a tokio_postgres::Client,
    statements: &'a Statements,
    columns: &'a FirstColumns<'a>,
) -> Vec<Pending<'a, Vec<tokio_postgres::Row>>> {
    let mut first: Vec<Pending<'a, Vec<tokio_postgres::Row>>> = vec![
        Box::pin(async move { client.batch_execute("BEGIN").await.map(|()| Vec::new()) }),
        Box::pin(async move {
            client
                .execute(&statements.lock_subjects, &[&columns.subjects])
                .await
                .map(|_| Vec::new())
        }),
        Box::pin(async move {
            client
                .query(
                    &statements.count_grants,
                    &[&columns.subjects, &columns.since],
                )
                .await
        }),
    ];
    if !columns.keys.is_empty() {
        first.push(Box::pin(async move {
            client.query(&statements.find_keys, &[&columns.keys]).await
        }));
    }
    first
}

/// The outputs of [`first_round`] for a group of `size`.
fn read_first(
    size: usize,
    outputs: Vec<Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>>,
) -> Result<First, Failure> {
    let mut results = Vec::with_capacity(outputs.len());
    // The first failure is the cause; the later statements of the pipeline
    // only report that the transaction is aborted.
    for result in outputs {
        results.push(result.map_err(|e| classify(&e))?);
    }
    let mut results = results.into_iter().skip(2);
    let counts = results.next().unwrap_or_default();
    let mut stored = std::collections::HashMap::new();
    for row in results.next().unwrap_or_default() {
        let key: String = row.try_get(0).map_err(|e| classify(&e))?;
        stored.insert(key, row);
    }
    if counts.len() != size {
        return Err(Failure::Fail(unavailable(format!(
            "counted {} subjects of {size}",
            counts.len()
        ))));
    }
    Ok(First { counts, stored })
}

/// Each issuance of the group answered from its key's stored answer or
/// decided on its count, in turn: the stored answers, the verdicts.
#[allow(clippy::type_complexity)]
fn decide_group(
    group: &[Job],
    first: &First,
) -> Result<(Vec<Option<Issued>>, Vec<Option<Verdict>>), Failure> {
    let mut answers = Vec::with_capacity(group.len());
    let mut verdicts = Vec::with_capacity(group.len());
    for (job, count) in group.iter().zip(&first.counts) {
        if let Some(row) = job.key.as_ref().and_then(|key| first.stored.get(key)) {
            let digest: Option<String> = row.try_get(3).map_err(|e| classify(&e))?;
            let issued = if digest.is_some_and(|digest| digest != job.digest) {
                Issued::key_reused()
            } else {
                let status: i32 = row.try_get(1).map_err(|e| classify(&e))?;
                Issued {
                    status: u16::try_from(status).unwrap_or(500),
                    body: row.try_get(2).map_err(|e| classify(&e))?,
                    replayed: true,
                    key_reused: false,
                }
            };
            answers.push(Some(issued));
            verdicts.push(None);
        } else {
            let count: i64 = count.try_get(0).map_err(|e| classify(&e))?;
            answers.push(None);
            verdicts.push(Some((job.decide)(u64::try_from(count).unwrap_or(0))));
        }
    }
    Ok((answers, verdicts))
}

/// The arrays of a group's second round trip.
#[derive(Default)]
struct SecondColumns<'a> {
    grants: GrantColumns<'a>,
    stores: KeyColumns<'a>,
}

impl<'a> SecondColumns<'a> {
    fn of(group: &'a [Job], verdicts: &'a [Option<Verdict>]) -> SecondColumns<'a> {
        let mut columns = SecondColumns::default();
        for (job, verdict) in group.iter().zip(verdicts) {
            let Some(verdict) = verdict else {
                continue;
            };
            if let Some(grant) = &verdict.grant {
                columns.grants.push(grant);
            }
            if let Some(key) = &job.key {
                columns.stores.key.push(key);
                columns.stores.status.push(i32::from(verdict.status));
                columns.stores.body.push(&verdict.body);
                columns.stores.created_at.push(job.now);
                columns.stores.digest.push(&job.digest);
            }
        }
        columns
    }
}

/// A group's second round: the grants, the answers under their keys,
/// commit.
fn second_round<'a>(
    client: &'a tokio_postgres::Client,
    statements: &'a Statements,
    columns: &'a SecondColumns<'a>,
) -> Vec<Pending<'a, Vec<tokio_postgres::Row>>> {
    let grants = &columns.grants;
    let stores = &columns.stores;
    let mut second: Vec<Pending<'a, Vec<tokio_postgres::Row>>> = Vec::with_capacity(3);
    if !grants.grant_id.is_empty() {
        second.push(Box::pin(async move {
            client
                .execute(
                    &statements.insert_grants,
                    &[
                        &grants.grant_id,
                        &grants.decision_id,
                        &grants.policy_digest,
                        &grants.subject_id,
                        &grants.task_id,
                        &grants.request,
                        &grants.scope,
                        &grants.ttl,
                        &grants.issued_at,
                        &grants.expires_at,
                        &grants.obligations,
                        &grants.credential_ref,
                        &grants.approval,
                    ],
                )
                .await
                .map(|_| Vec::new())
        }));
    }
    if !stores.key.is_empty() {
        second.push(Box::pin(async move {
            client
                .execute(
                    &statements.store_keys,
                    &[
                        &stores.key,
                        &stores.status,
                        &stores.body,
                        &stores.created_at,
                        &stores.digest,
                    ],
                )
                .await
                .map(|_| Vec::new())
        }));
    }
    second.push(Box::pin(async move {
        client.batch_execute("COMMIT").await.map(|()| Vec::new())
    }));
    second
}

/// The answers in the group's order, once its transaction committed.
fn finish(stored: Vec<Option<Issued>>, verdicts: Vec<Option<Verdict>>) -> Vec<Issued> {
    stored
        .into_iter()
        .zip(verdicts)
        .map(|(stored, verdict)| match (stored, verdict) {
            (Some(issued), _) => issued,
            (None, Some(verdict)) => Issued {
                status: verdict.status,
                body: verdict.body,
                replayed: false,
                key_reused: false,
            },
            (None, None) => Issued::key_reused(),
        })
        .collect()
}

/// One attempt at a group on a connection of its own: one transaction of
/// two round trips, a few statements each whatever the group's size (its
/// rows passed as arrays); the answers in the group's order. What a group
/// that hit a conflict in the pipeline of [`flush`] is retried with.
async fn commit_group(pool: &Pool, group: &[Job]) -> Result<Vec<Issued>, Failure> {
    let link = Link::open(pool).await?;
    // Until the transaction is over, a failure closes the connection
    // instead of returning it to the pool mid-transaction: the server then
    // rolls the transaction back.
    let opened = Some(link);
    let Some((client, statements)) = parts(&opened) else {
        return Err(Failure::Fail(unavailable("no connection")));
    };
    let first = FirstColumns::of(group);
    let first = read_first(
        group.len(),
        join_all(first_round(client, statements, &first)).await,
    )?;
    let (stored, verdicts) = decide_group(group, &first)?;
    drop(first);
    {
        let second = SecondColumns::of(group, &verdicts);
        for result in join_all(second_round(client, statements, &second)).await {
            result.map_err(|e| classify(&e))?;
        }
    }
    if let Some(mut link) = opened {
        link.client.keep();
    }
    Ok(finish(stored, verdicts))
}

/// A statement's (or a few pipelined statements') future.
type Pending<'a, T> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<T, tokio_postgres::Error>> + Send + 'a>,
>;

/// Runs `futures` together and returns their outputs in order. Each is
/// first polled in order, which is when tokio-postgres sends its
/// statements: the statements go out in this order, pipelined.
async fn join_all<T>(mut futures: Vec<Pending<'_, T>>) -> Vec<Result<T, tokio_postgres::Error>> {
    let mut outputs: Vec<Option<Result<T, tokio_postgres::Error>>> =
        futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

fn read(row: &tokio_postgres::Row) -> Result<Grant, LedgerError> {
    let get_err = |e: tokio_postgres::Error| {
        LedgerError::Unavailable(format!("PostgreSQL: a grant row does not read: {e}"))
    };
    let request: String = row.try_get(5).map_err(get_err)?;
    let scope: String = row.try_get(6).map_err(get_err)?;
    let obligations: String = row.try_get(10).map_err(get_err)?;
    let ttl: i64 = row.try_get(7).map_err(get_err)?;
    let narrowed: i32 = row.try_get(15).map_err(get_err)?;
    let redecision: Option<String> = row.try_get(16).map_err(get_err)?;
    let approval: Option<String> = row.try_get(18).map_err(get_err)?;
    Ok(Grant {
        grant_id: row.try_get(0).map_err(get_err)?,
        decision_id: row.try_get(1).map_err(get_err)?,
        policy_digest: row.try_get(2).map_err(get_err)?,
        subject_id: row.try_get(3).map_err(get_err)?,
        task_id: row.try_get(4).map_err(get_err)?,
        request: json_column("request", &request),
        scope: serde_json::from_str(&scope).unwrap_or_default(),
        ttl: u64::try_from(ttl).unwrap_or(0),
        issued_at: row.try_get(8).map_err(get_err)?,
        expires_at: row.try_get(9).map_err(get_err)?,
        obligations: json_column("obligations", &obligations),
        credential_ref: row.try_get(11).map_err(get_err)?,
        revoked_at: row.try_get(12).map_err(get_err)?,
        revoked_by: row.try_get(13).map_err(get_err)?,
        reason: row.try_get(14).map_err(get_err)?,
        narrowed: narrowed != 0,
        redecision: redecision.map(|text| json_column("redecision", &text)),
        redecided_at: row.try_get(17).map_err(get_err)?,
        approval: super::ApprovalAttestation::from_column(approval.as_deref()),
    })
}

/// A built query's parameters as the driver takes them.
fn boxed(params: Vec<Param>) -> Vec<Box<dyn ToSql + Sync + Send>> {
    params
        .into_iter()
        .map(|p| -> Box<dyn ToSql + Sync + Send> {
            match p {
                Param::Text(t) => Box::new(t),
                Param::Int(i) => Box::new(i),
            }
        })
        .collect()
}

fn borrowed(values: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    values
        .iter()
        .map(|v| v.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(subject: &str, key: Option<&str>) -> Job {
        Job {
            subject: subject.to_owned(),
            key: key.map(str::to_owned),
            digest: String::new(),
            since: 0,
            now: 0,
            decide: Box::new(|_| Verdict {
                grant: None,
                status: 200,
                body: String::new(),
            }),
            reply: tokio::sync::oneshot::channel().0,
        }
    }

    fn subjects(group: &[Job]) -> Vec<&str> {
        group.iter().map(|job| job.subject.as_str()).collect()
    }

    fn held(group: &[Job]) -> impl Iterator<Item = (&str, Option<&str>)> {
        group
            .iter()
            .map(|job| (job.subject.as_str(), job.key.as_deref()))
    }

    #[test]
    fn a_task_takes_what_its_own_groups_hold_and_not_what_anothers_do() {
        let mut queue = Queue {
            jobs: vec![
                job("b", Some("k")),
                job("a", None),
                job("a", None),
                job("c", Some("k")),
            ],
            ..Queue::default()
        };
        // One issuance per subject and per key in a group, sorted.
        let first = take_group(&mut queue, 1);
        assert_eq!(subjects(&first), ["a", "b"]);
        assert_eq!(subjects(&queue.jobs), ["a", "c"]);
        // Another task takes neither: its statements could run before the
        // first group's commit.
        assert!(take_group(&mut queue, 2).is_empty());
        // The same task takes both for its next group, which goes out
        // behind the first one's commit on its connection.
        let second = take_group(&mut queue, 1);
        assert_eq!(subjects(&second), ["a", "c"]);
        // The first group done, the second still holds "a" and "k".
        queue.release(held(&first));
        queue.jobs = vec![job("a", None), job("d", Some("k")), job("b", None)];
        assert_eq!(subjects(&take_group(&mut queue, 2)), ["b"]);
        queue.release(held(&second));
        let third = take_group(&mut queue, 2);
        assert_eq!(subjects(&third), ["a", "d"]);
        assert!(queue.jobs.is_empty());
        queue.release(held(&third));
        queue.release([("b", None)]);
        assert!(queue.busy_subjects.is_empty() && queue.busy_keys.is_empty());
    }

    #[test]
    fn at_most_flushers_tasks_drain_the_queue_each_numbered() {
        let mut queue = Queue::default();
        let started: Vec<Option<usize>> = (0..=FLUSHERS).map(|_| queue.start_flusher()).collect();
        assert_eq!(
            started[..FLUSHERS],
            (1..=FLUSHERS).map(Some).collect::<Vec<_>>()
        );
        assert_eq!(started[FLUSHERS], None);
        queue.flushers -= 1;
        assert_eq!(queue.start_flusher(), Some(FLUSHERS + 1));
    }
}
