//! The PostgreSQL store: a small connection pool (deadpool) over
//! tokio-postgres. Count and record run in one transaction that first
//! takes the subject's row in `writ_subjects` with `SELECT ... FOR UPDATE`:
//! concurrent issuances for one subject, from any replica, wait for each
//! other, and each counts the grants the previous ones committed (under
//! READ COMMITTED every statement sees what committed before it began; under
//! SERIALIZABLE, as on CockroachDB, a conflict aborts with 40001 and the
//! transaction is retried). No advisory locks, no `LOCK TABLE`, no
//! PostgreSQL-only types: the SQL is what CockroachDB and YugabyteDB run too.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

use super::{
    insert_sql, json_column, list_query, now_ms, window_ms, Action, Applied, Change, FeedEntry,
    FeedKind, Filter, Grant, Issue, Issued, LedgerError, Param, Verdict, FEED_COLUMNS, MIGRATIONS,
    READ_COLUMNS, SCHEMA_VERSION,
};

/// How many times a transaction that hit a serialization failure, a
/// deadlock or a racing insert is tried.
const ATTEMPTS: usize = 8;

pub(crate) struct Postgres {
    pub(super) pool: Pool,
    migrated: AtomicBool,
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
        })
    }

    /// Runs `attempt` until it succeeds, fails for good, or has been
    /// tried [`ATTEMPTS`] times.
    async fn retry<T, A, Fut>(&self, what: &str, mut attempt: A) -> Result<T, LedgerError>
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
                    tokio::time::sleep(Duration::from_millis(2 * (round as u64 + 1) + jitter))
                        .await;
                }
            }
        }
        Err(unavailable(format!(
            "{what} failed {ATTEMPTS} times on conflicts; the last: {last}"
        )))
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

    pub(crate) async fn issue<F>(&self, issue: Issue<'_>, decide: F) -> Result<Issued, LedgerError>
    where
        F: Fn(u64) -> Verdict + Send + Sync + 'static,
    {
        self.ready().await?;
        let since = issue.now.saturating_sub(window_ms(issue.window));
        let decide = &decide;
        let issue = &issue;
        self.retry("recording the grant", || async move {
            let mut client = self.pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(|e| classify(&e))?;
            // The subject's counter row, locked until commit: the
            // issuances of one subject are counted one at a time.
            tx.execute(
                "INSERT INTO writ_subjects (subject_id, issued) VALUES ($1, 0) ON CONFLICT (subject_id) DO NOTHING",
                &[&issue.subject_id],
            )
            .await
            .map_err(|e| classify(&e))?;
            tx.query_one(
                "SELECT issued FROM writ_subjects WHERE subject_id = $1 FOR UPDATE",
                &[&issue.subject_id],
            )
            .await
            .map_err(|e| classify(&e))?;
            if let Some(key) = issue.idempotency_key {
                let stored = tx
                    .query_opt(
                        "SELECT status, body, request_digest FROM writ_idempotency WHERE idempotency_key = $1",
                        &[&key],
                    )
                    .await
                    .map_err(|e| classify(&e))?;
                if let Some(row) = stored {
                    let first: Option<String> = row.get(2);
                    if first.is_some_and(|first| first != issue.request_digest) {
                        return Ok(Issued::key_reused());
                    }
                    let status: i32 = row.get(0);
                    return Ok(Issued {
                        status: u16::try_from(status).unwrap_or(500),
                        body: row.get(1),
                        replayed: true,
                        key_reused: false,
                    });
                }
            }
            let row = tx
                .query_one(
                    "SELECT COUNT(*) FROM writ_grants WHERE subject_id = $1 AND issued_at > $2",
                    &[&issue.subject_id, &since],
                )
                .await
                .map_err(|e| classify(&e))?;
            let count: i64 = row.get(0);
            let verdict = decide(u64::try_from(count).unwrap_or(0));
            if let Some(g) = &verdict.grant {
                let request = g.request.to_string();
                let scope = serde_json::Value::from(g.scope.clone()).to_string();
                let ttl = i64::try_from(g.ttl).unwrap_or(i64::MAX);
                let obligations = g.obligations.to_string();
                let narrowed = i32::from(g.narrowed);
                let values: [&(dyn ToSql + Sync); 16] = [
                    &g.grant_id,
                    &g.decision_id,
                    &g.policy_digest,
                    &g.subject_id,
                    &g.task_id,
                    &request,
                    &scope,
                    &ttl,
                    &g.issued_at,
                    &g.expires_at,
                    &obligations,
                    &g.credential_ref,
                    &g.revoked_at,
                    &g.revoked_by,
                    &g.reason,
                    &narrowed,
                ];
                tx.execute(&insert_sql('$'), &values)
                    .await
                    .map_err(|e| classify(&e))?;
                tx.execute(
                    "UPDATE writ_subjects SET issued = issued + 1 WHERE subject_id = $1",
                    &[&issue.subject_id],
                )
                .await
                .map_err(|e| classify(&e))?;
            }
            if let Some(key) = issue.idempotency_key {
                let status = i32::from(verdict.status);
                tx.execute(
                    "INSERT INTO writ_idempotency (idempotency_key, status, body, created_at, request_digest) VALUES ($1, $2, $3, $4, $5)",
                    &[&key, &status, &verdict.body, &issue.now, &issue.request_digest],
                )
                .await
                .map_err(|e| classify(&e))?;
            }
            tx.commit().await.map_err(|e| classify(&e))?;
            Ok(Issued {
                status: verdict.status,
                body: verdict.body,
                replayed: false,
                key_reused: false,
            })
        })
        .await
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
