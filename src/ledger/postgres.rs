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
    POSTGRES_ONLY, READ_COLUMNS, SCHEMA_VERSION,
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
                let jitter = u64::try_from(now_ms() % 7).unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(2 * (round as u64 + 1) + jitter)).await;
            }
        }
    }
    Err(unavailable(format!(
        "{what} failed {ATTEMPTS} times on conflicts; the last: {last}"
    )))
}

/// Runs a migration's PostgreSQL-only part ([`POSTGRES_ONLY`]) under a
/// savepoint: on a server that refuses it as not supported (`0A000`) or
/// not in its grammar (`42601`), as another dialect the store targets
/// (CockroachDB, YugabyteDB) may, it is rolled back to the savepoint and
/// the migration goes on without it. Any other error fails the migration.
async fn postgres_only(tx: &tokio_postgres::Transaction<'_>, sql: &str) -> Result<(), Failure> {
    tx.batch_execute("SAVEPOINT writ_postgres_only")
        .await
        .map_err(|e| classify(&e))?;
    match tx.batch_execute(sql).await {
        Ok(()) => {
            tx.batch_execute("RELEASE SAVEPOINT writ_postgres_only")
                .await
        }
        Err(error)
            if error.code() == Some(&SqlState::FEATURE_NOT_SUPPORTED)
                || error.code() == Some(&SqlState::SYNTAX_ERROR) =>
        {
            tx.batch_execute("ROLLBACK TO SAVEPOINT writ_postgres_only")
                .await
        }
        Err(error) => Err(error),
    }
    .map_err(|e| classify(&e))
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
                        for (_, own) in POSTGRES_ONLY.iter().filter(|(v, _)| *v == version) {
                            postgres_only(&tx, own).await?;
                        }
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
    /// [`FLUSHERS`] tasks at a time (one) each take the queued issuances (at most
    /// one per subject and per idempotency key, none of a group in flight:
    /// the others wait for the next group) and run them in one transaction
    /// of two round trips, a few statements each whatever the group's size
    /// (the group's rows go as arrays, `unnest`ed), pipelined and prepared
    /// once per connection. The first round trip begins, creates and locks
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
        if start {
            drop(tokio::spawn(flush(self.pool.clone(), self.queue.clone())));
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

/// The most group commits in flight at once in one process, each on a
/// connection of its own.
///
/// One: each commit costs both processes a fixed few hundred microseconds
/// of CPU (statements, messages, wake-ups, the WAL flush) whatever the
/// group's size, so the fewer and larger the groups, the less CPU a grant.
/// With one group in flight, the issuances that arrive during a commit make
/// the next group; with two, each group gathers only while the other one
/// runs, so groups are about half as large for about the same wait (each
/// task's turn is about twice as long). Measured (docs/performance.md,
/// "PostgreSQL grants at 5,000/s, p99"): about a quarter less CPU a grant
/// (writ and PostgreSQL together) than two, for as many grants a second,
/// open and closed loop. A slow commit is no bottleneck: the next group is
/// just larger (up to [`MAX_GROUP`]).
const FLUSHERS: usize = 1;

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

/// The issuances waiting for a group commit.
#[derive(Default)]
pub(crate) struct Queue {
    jobs: Vec<Job>,
    /// Tasks draining the queue (at most [`FLUSHERS`]).
    flushers: usize,
    /// The subjects of the groups in flight: an issuance for one of them
    /// waits for that group to end (it must count that group's grant).
    busy_subjects: std::collections::HashSet<String>,
    /// The idempotency keys of the groups in flight.
    busy_keys: std::collections::HashSet<String>,
}

impl Queue {
    /// Whether another task should start draining (it then counts as one).
    pub(crate) fn start_flusher(&mut self) -> bool {
        let start = self.flushers < FLUSHERS;
        if start {
            self.flushers += 1;
        }
        start
    }

    /// The group's subjects and keys are free again.
    fn release(&mut self, busy: &[(String, Option<String>)]) {
        for (subject, key) in busy {
            self.busy_subjects.remove(subject);
            if let Some(key) = key {
                self.busy_keys.remove(key);
            }
        }
    }
}

/// Commits the queued issuances, a group at a time, until none it can take
/// is left (the others wait for a group in flight, whose task takes them).
async fn flush(pool: Pool, queue: Arc<Mutex<Queue>>) {
    let mut unwinding = Unwinding {
        queue: queue.clone(),
        busy: Vec::new(),
    };
    loop {
        let group = match queue.lock() {
            Ok(mut queue) => {
                let group = take_group(&mut queue);
                if group.is_empty() {
                    queue.flushers = queue.flushers.saturating_sub(1);
                    unwinding.busy.clear();
                    return;
                }
                group
            }
            // Only a panic under the lock poisons it, and nothing that can
            // panic runs under it; should it happen, the queued callers see
            // their answer dropped.
            Err(_) => return,
        };
        unwinding.busy = group
            .iter()
            .map(|job| (job.subject.clone(), job.key.clone()))
            .collect();
        let result = retry("recording the grants", || commit_group(&pool, &group)).await;
        if let Ok(mut queue) = queue.lock() {
            queue.release(&unwinding.busy);
        }
        unwinding.busy.clear();
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
}

/// Should a flushing task panic (a `decide` that panics), its group's
/// callers see their answers dropped, its subjects and keys are released,
/// and it no longer counts as a flusher, so the next issuance starts a new
/// task rather than queueing behind one that is gone.
struct Unwinding {
    queue: Arc<Mutex<Queue>>,
    busy: Vec<(String, Option<String>)>,
}

impl Drop for Unwinding {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(mut queue) = self.queue.lock() {
                queue.release(&self.busy);
                queue.flushers = queue.flushers.saturating_sub(1);
            }
        }
    }
}

/// Takes from the queue, in arrival order, at most [`MAX_GROUP`]
/// issuances with no subject and no idempotency key twice nor in a group
/// in flight (a second one for the same subject must count the first one's
/// grant, so it waits for the next group), marks their subjects and keys
/// busy, and sorts them by subject (the order the rows are locked in).
fn take_group(queue: &mut Queue) -> Vec<Job> {
    let mut group = Vec::new();
    let mut rest = Vec::new();
    for job in queue.jobs.drain(..) {
        let fresh = group.len() < MAX_GROUP
            && !queue.busy_subjects.contains(&job.subject)
            && !job
                .key
                .as_ref()
                .is_some_and(|key| queue.busy_keys.contains(key));
        if fresh {
            queue.busy_subjects.insert(job.subject.clone());
            if let Some(key) = &job.key {
                queue.busy_keys.insert(key.clone());
            }
            group.push(job);
        } else {
            rest.push(job);
        }
    }
    queue.jobs = rest;
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
    fn push(&mut self, g: &'a Grant, verdict: &Verdict) {
        let (request, obligations) = verdict.texts(g);
        self.grant_id.push(&g.grant_id);
        self.decision_id.push(&g.decision_id);
        self.policy_digest.push(&g.policy_digest);
        self.subject_id.push(&g.subject_id);
        self.task_id.push(g.task_id.as_deref());
        self.request.push(request);
        // The same text as `Value::from(scope).to_string()`, without the copy.
        self.scope
            .push(serde_json::to_string(&g.scope).unwrap_or_else(|_| "[]".to_owned()));
        self.ttl.push(i64::try_from(g.ttl).unwrap_or(i64::MAX));
        self.issued_at.push(g.issued_at);
        self.expires_at.push(g.expires_at);
        self.obligations.push(obligations);
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

/// One attempt at a group: one transaction of two round trips, a few
/// statements each whatever the group's size (its rows passed as arrays);
/// the answers in the group's order.
async fn commit_group(pool: &Pool, group: &[Job]) -> Result<Vec<Issued>, Failure> {
    let client = pool.get().await.map_err(pool_error)?;
    // Until the transaction is over, a failure closes the connection
    // instead of returning it to the pool mid-transaction: the server then
    // rolls the transaction back.
    let mut guard = Discard(Some(client));
    let Some(client) = guard.0.as_ref() else {
        return Err(Failure::Fail(unavailable("no connection")));
    };
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

    // Round trip 1: begin; create and lock the subjects' rows; count; look
    // the keys up.
    let subjects: Vec<&str> = group.iter().map(|job| job.subject.as_str()).collect();
    let since: Vec<i64> = group.iter().map(|job| job.since).collect();
    let keys: Vec<&str> = group.iter().filter_map(|job| job.key.as_deref()).collect();
    let mut first: Vec<Pending<'_, Vec<tokio_postgres::Row>>> = vec![
        Box::pin(async { client.batch_execute("BEGIN").await.map(|()| Vec::new()) }),
        Box::pin(async {
            client
                .execute(&lock_subjects, &[&subjects])
                .await
                .map(|_| Vec::new())
        }),
        Box::pin(async { client.query(&count_grants, &[&subjects, &since]).await }),
    ];
    if !keys.is_empty() {
        first.push(Box::pin(async { client.query(&find_keys, &[&keys]).await }));
    }
    let mut results = Vec::with_capacity(first.len());
    // The first failure is the cause; the later statements of the pipeline
    // only report that the transaction is aborted.
    for result in join_all(first).await {
        results.push(result.map_err(|e| classify(&e))?);
    }
    let mut results = results.into_iter().skip(2);
    let counts = results.next().unwrap_or_default();
    let mut stored = std::collections::HashMap::new();
    for row in results.next().unwrap_or_default() {
        let key: String = row.try_get(0).map_err(|e| classify(&e))?;
        stored.insert(key, row);
    }
    if counts.len() != group.len() {
        return Err(Failure::Fail(unavailable(format!(
            "counted {} subjects of {}",
            counts.len(),
            group.len()
        ))));
    }

    // Each decision, in turn.
    let mut answers = Vec::with_capacity(group.len());
    let mut verdicts = Vec::with_capacity(group.len());
    for (job, count) in group.iter().zip(&counts) {
        if let Some(row) = job.key.as_ref().and_then(|key| stored.get(key)) {
            let first: Option<String> = row.try_get(3).map_err(|e| classify(&e))?;
            let issued = if first.is_some_and(|first| first != job.digest) {
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

    // Round trip 2: the grants, the answers under their keys, commit.
    let mut grants = GrantColumns::default();
    let mut stores = KeyColumns::default();
    for (job, verdict) in group.iter().zip(&verdicts) {
        let Some(verdict) = verdict else {
            continue;
        };
        if let Some(grant) = &verdict.grant {
            grants.push(grant, verdict);
        }
        if let Some(key) = &job.key {
            stores.key.push(key);
            stores.status.push(i32::from(verdict.status));
            stores.body.push(&verdict.body);
            stores.created_at.push(job.now);
            stores.digest.push(&job.digest);
        }
    }
    let mut second: Vec<Pending<'_, u64>> = Vec::with_capacity(3);
    if !grants.grant_id.is_empty() {
        second.push(Box::pin(async {
            client
                .execute(
                    &insert_grants,
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
        }));
    }
    if !stores.key.is_empty() {
        second.push(Box::pin(async {
            client
                .execute(
                    &store_keys,
                    &[
                        &stores.key,
                        &stores.status,
                        &stores.body,
                        &stores.created_at,
                        &stores.digest,
                    ],
                )
                .await
        }));
    }
    second.push(Box::pin(async {
        client.batch_execute("COMMIT").await.map(|()| 0)
    }));
    // A COMMIT of a transaction that failed answers ROLLBACK, not an error:
    // the statements' own errors are what tell.
    for result in join_all(second).await {
        result.map_err(|e| classify(&e))?;
    }
    guard.keep();
    Ok(answers
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
        .collect())
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
    use serde_json::json;

    use super::super::tests::postgres_url;
    use super::super::{new_grant_id, Ledger};
    use super::*;

    /// Quotes, backslashes and what would end a statement, in every text a
    /// group commit writes, are recorded and counted as they are.
    #[tokio::test]
    async fn awkward_texts_are_recorded_counted_and_replayed_as_they_are() {
        let Some(url) = postgres_url("awkward_texts_are_recorded_counted_and_replayed_as_they_are")
        else {
            return;
        };
        let ledger = Ledger::open(&url).await.expect("PostgreSQL URL opens");
        let who = format!(
            r"spiffe://test/{}/o'brien\'); DROP TABLE writ_grants; --",
            new_grant_id()
        );
        let key = format!(r"key-'{}'\", new_grant_id());
        let now = now_ms();
        let issue = |id: String, key: Option<String>| {
            let who = who.clone();
            let ledger = &ledger;
            async move {
                let owned = (id.clone(), who.clone());
                ledger
                    .issue(
                        Issue {
                            subject_id: &who,
                            window: Duration::from_secs(3600),
                            now,
                            idempotency_key: key.as_deref(),
                            request_digest: r"sha256:'\",
                            grant_id: &id,
                        },
                        move |count| Verdict {
                            grant: Some(Grant {
                                grant_id: owned.0.clone(),
                                decision_id: r"d-'\".to_owned(),
                                policy_digest: "sha256:'".to_owned(),
                                subject_id: owned.1.clone(),
                                task_id: Some(r"task 'one' \n".to_owned()),
                                request: json!({"note": "it's a \\ \"quoted\" ünï", "n": count}),
                                scope: vec![r"read:db://o'brien\x".to_owned()],
                                ttl: 300,
                                issued_at: now,
                                expires_at: now + 300_000,
                                obligations: json!([{"kind": "note", "text": "'); --"}]),
                                credential_ref: Some(r"lease-'1'\".to_owned()),
                                revoked_at: None,
                                revoked_by: None,
                                reason: None,
                                narrowed: false,
                                redecision: None,
                                redecided_at: None,
                                approval: None,
                            }),
                            status: 201,
                            body: json!({"count": count, "quote": "'\\"}).to_string(),
                            request_text: None,
                            obligations_text: None,
                        },
                    )
                    .await
                    .expect("issue")
            }
        };
        let first_id = new_grant_id();
        let first = issue(first_id.clone(), Some(key.clone())).await;
        assert_eq!(first.status, 201);
        assert_eq!(first.body, json!({"count": 0, "quote": "'\\"}).to_string());
        let again = issue(new_grant_id(), Some(key.clone())).await;
        assert!(again.replayed, "the key's first answer is replayed");
        assert_eq!(again.body, first.body);
        let second = issue(new_grant_id(), None).await;
        assert_eq!(
            second.body,
            json!({"count": 1, "quote": "'\\"}).to_string(),
            "the first grant is counted under the awkward subject"
        );
        let stored = ledger.get(&first_id).await.expect("get").expect("recorded");
        assert_eq!(stored.subject_id, who);
        assert_eq!(stored.decision_id, r"d-'\");
        assert_eq!(stored.task_id.as_deref(), Some(r"task 'one' \n"));
        assert_eq!(
            stored.request,
            json!({"note": "it's a \\ \"quoted\" ünï", "n": 0})
        );
        assert_eq!(stored.scope, vec![r"read:db://o'brien\x".to_owned()]);
        assert_eq!(
            stored.obligations,
            json!([{"kind": "note", "text": "'); --"}])
        );
        assert_eq!(stored.credential_ref.as_deref(), Some(r"lease-'1'\"));
    }
}
