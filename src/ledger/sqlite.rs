//! The SQLite store: one file, one connection (SQLite writes one
//! transaction at a time anyway), used on a blocking thread. `BEGIN
//! IMMEDIATE` takes the file's write lock before counting, so count and
//! record are atomic even across processes sharing the file; the journal is
//! WAL with `synchronous = FULL`, so a committed grant survives a crash of
//! the process and of the machine. Issuances are committed in groups (one
//! WAL sync for all those that queued during the previous commit), each
//! answered only after its group committed. The WAL is copied into the
//! database file by a thread of its own (a `PASSIVE` checkpoint every
//! 500 ms on a second connection), not by the commit that happens to cross
//! SQLite's threshold: a checkpoint writes and syncs megabytes, and on the
//! commit path it held every issuance queued behind it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};

use serde_json::Value;

use super::{
    insert_sql, json_column, list_query, now_ms, window_ms, Action, Applied, Change, FeedEntry,
    FeedKind, Filter, Grant, Issue, Issued, LedgerError, Param, Verdict, FEED_COLUMNS, MIGRATIONS,
    READ_COLUMNS, SCHEMA_VERSION,
};

pub(crate) struct Sqlite {
    conn: Arc<Mutex<Connection>>,
    path: String,
    /// The file opened (device and inode): a ledger whose file was removed
    /// or replaced while serving would go on writing to a file nobody can
    /// read again, so it reports itself unavailable instead.
    file: Option<(u64, u64)>,
    /// Issuances waiting for the next group commit ([`Sqlite::issue`]).
    queue: Arc<Mutex<Queue>>,
    /// Dropped with the store, which ends the checkpoint thread.
    _checkpoints: std::sync::mpsc::Sender<()>,
}

/// How often the checkpoint thread copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// The WAL size, in pages, at which a commit checkpoints by itself after
/// all: only reached when the background checkpoints fail or fall behind.
const BACKSTOP_PAGES: i64 = 16_384;

/// The checkpoint thread: every [`CHECKPOINT_EVERY`], a `PASSIVE`
/// checkpoint on a connection of its own, which copies the committed WAL
/// frames into the database file and syncs it without taking the write
/// lock, so the group commits go on meanwhile. A commit is durable when its
/// WAL frames are synced, before any checkpoint; a failed checkpoint only
/// leaves the WAL longer. Ends when the store is dropped.
fn checkpoints(conn: &Connection, stop: &std::sync::mpsc::Receiver<()>, path: &str) {
    let mut failing = false;
    loop {
        match stop.recv_timeout(CHECKPOINT_EVERY) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            row.get::<_, i64>(0)
        }) {
            Ok(_) => failing = false,
            Err(error) => {
                if !failing {
                    eprintln!(
                        "writ: a checkpoint of the SQLite ledger `{path}` failed (retried every {} ms): {error}",
                        CHECKPOINT_EVERY.as_millis()
                    );
                }
                failing = true;
            }
        }
    }
}

/// The device and inode `path` names now.
fn identity(path: &str) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        std::fs::metadata(path).ok().map(|_| (0, 0))
    }
}

fn failed(path: &str, error: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable(format!("SQLite `{path}`: {error}"))
}

impl Sqlite {
    pub(crate) async fn open(path: &str) -> Result<Sqlite, LedgerError> {
        let owned = path.to_owned();
        let conn = tokio::task::spawn_blocking(
            move || -> Result<(Connection, Connection), LedgerError> {
                let conn = Connection::open(&owned).map_err(|e| {
                    LedgerError::Invalid(format!("cannot open the SQLite ledger `{owned}`: {e}"))
                })?;
                conn.busy_timeout(Duration::from_secs(5))
                    .map_err(|e| failed(&owned, e))?;
                conn.pragma_update(None, "journal_mode", "WAL")
                    .map_err(|e| failed(&owned, e))?;
                conn.pragma_update(None, "synchronous", "FULL")
                    .map_err(|e| failed(&owned, e))?;
                conn.pragma_update(None, "wal_autocheckpoint", BACKSTOP_PAGES)
                    .map_err(|e| failed(&owned, e))?;
                let checkpointer = Connection::open(&owned).map_err(|e| failed(&owned, e))?;
                checkpointer
                    .busy_timeout(Duration::from_secs(5))
                    .map_err(|e| failed(&owned, e))?;
                checkpointer
                    .pragma_update(None, "synchronous", "FULL")
                    .map_err(|e| failed(&owned, e))?;
                Ok((conn, checkpointer))
            },
        )
        .await
        .map_err(|e| failed(path, e))??;
        let (conn, checkpointer) = conn;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let owned = path.to_owned();
        std::thread::Builder::new()
            .name("writ-checkpoint".to_owned())
            .spawn(move || checkpoints(&checkpointer, &stopped, &owned))
            .map_err(|e| failed(path, format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Sqlite {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_owned(),
            file: identity(path),
            queue: Arc::new(Mutex::new(Queue::default())),
            _checkpoints: stop,
        })
    }

    /// Runs `work` with the connection on a blocking thread.
    pub(super) async fn with<T, W>(&self, work: W) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        W: FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let conn = self.conn.clone();
        let path = self.path.clone();
        let path2 = path.clone();
        let opened = self.file;
        tokio::task::spawn_blocking(move || {
            if opened.is_some() && identity(&path) != opened {
                return Err(failed(
                    &path,
                    "the file was removed or replaced while writ had it open; nothing is recorded until writ is restarted on a ledger file",
                ));
            }
            let mut conn = conn
                .lock()
                .map_err(|_| failed(&path, "a previous operation panicked"))?;
            work(&mut conn).map_err(|e| failed(&path, e))
        })
        .await
        .map_err(|e| failed(&path2, e))?
    }

    pub(crate) async fn migrate(&self) -> Result<Vec<i64>, LedgerError> {
        let applied = self
            .with(|conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                tx.execute_batch(
                    "CREATE TABLE IF NOT EXISTS writ_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
                )?;
                let current: i64 = tx.query_row(
                    "SELECT COALESCE(MAX(version), 0) FROM writ_migrations",
                    [],
                    |row| row.get(0),
                )?;
                let mut applied = vec![current];
                for (version, name, sql) in MIGRATIONS {
                    if version > current {
                        tx.execute_batch(sql)?;
                        tx.execute(
                            "INSERT INTO writ_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                            params![version, name, now_ms()],
                        )?;
                        applied.push(version);
                    }
                }
                tx.commit()?;
                Ok(applied)
            })
            .await?;
        if applied[0] > SCHEMA_VERSION {
            return Err(LedgerError::Invalid(format!(
                "the SQLite ledger `{}` has schema version {}, newer than this writ's {SCHEMA_VERSION}; upgrade writ",
                self.path, applied[0]
            )));
        }
        Ok(applied[1..].to_vec())
    }

    pub(crate) async fn ping(&self) -> Result<(), LedgerError> {
        self.with(|conn| {
            conn.query_row("SELECT COUNT(*) FROM writ_migrations", [], |row| {
                row.get::<_, i64>(0)
            })?;
            // Takes the write lock too: a file locked out is not ready.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.rollback()
        })
        .await
    }

    /// Counts and records, in a group commit: the issuance is queued, and
    /// one blocking task at a time takes every issuance queued so far and
    /// runs them one after the other in one `BEGIN IMMEDIATE` transaction,
    /// each inside a savepoint of its own (one that fails is rolled back
    /// alone and answered with its error), then commits once (one WAL sync
    /// for the whole group) and only then answers each. Issuances that
    /// arrive meanwhile form the next group. Within a group they run in
    /// turn on one connection, so each counts the grants the earlier ones
    /// recorded, as when each had a transaction of its own.
    pub(crate) async fn issue<F>(&self, issue: Issue<'_>, decide: F) -> Result<Issued, LedgerError>
    where
        F: Fn(u64) -> Verdict + Send + Sync + 'static,
    {
        let subject = issue.subject_id.to_owned();
        let key = issue.idempotency_key.map(str::to_owned);
        let digest = issue.request_digest.to_owned();
        let since = issue.now.saturating_sub(window_ms(issue.window));
        let now = issue.now;
        let work: Work = Box::new(move |tx| {
            issue_one(tx, &subject, key.as_deref(), &digest, since, now, &decide)
        });
        let (reply, answer) = tokio::sync::oneshot::channel();
        let flush = {
            let mut queue = self
                .queue
                .lock()
                .map_err(|_| failed(&self.path, "a previous issuance panicked"))?;
            queue.jobs.push(Job { work, reply });
            !std::mem::replace(&mut queue.flushing, true)
        };
        if flush {
            let conn = self.conn.clone();
            let queue = self.queue.clone();
            let path = self.path.clone();
            let opened = self.file;
            // Not awaited: the task runs until the queue is empty, and each
            // caller awaits its own answer.
            drop(tokio::task::spawn_blocking(move || {
                flush_queue(&conn, &queue, &path, opened)
            }));
        }
        answer
            .await
            .map_err(|_| failed(&self.path, "the issuance was dropped unanswered"))?
    }

    pub(crate) async fn get(&self, grant_id: &str) -> Result<Option<Grant>, LedgerError> {
        let id = grant_id.to_owned();
        self.with(move |conn| {
            conn.query_row(
                &format!("SELECT {READ_COLUMNS} FROM writ_grants WHERE grant_id = ?1"),
                params![id],
                read,
            )
            .optional()
        })
        .await
    }

    pub(crate) async fn list(&self, filter: Filter, now: i64) -> Result<Vec<Grant>, LedgerError> {
        self.with(move |conn| {
            let (sql, params) = list_query(&filter, now, '?');
            let values: Vec<rusqlite::types::Value> = params
                .into_iter()
                .map(|p| match p {
                    Param::Text(t) => rusqlite::types::Value::Text(t),
                    Param::Int(i) => rusqlite::types::Value::Integer(i),
                })
                .collect();
            let mut statement = conn.prepare(&sql)?;
            let rows = statement.query_map(params_from_iter(values), read)?;
            rows.collect()
        })
        .await
    }

    pub(crate) async fn latest_time(&self) -> Result<i64, LedgerError> {
        self.with(|conn| {
            conn.query_row(
                "SELECT MAX(t) FROM (SELECT MAX(issued_at) AS t FROM writ_grants UNION ALL SELECT MAX(recorded_at) AS t FROM writ_revocations) AS times",
                [],
                |row| row.get::<_, Option<i64>>(0),
            )
            .map(|t| t.unwrap_or(i64::MIN))
        })
        .await
    }

    pub(crate) async fn apply(
        &self,
        changes: Vec<Change>,
        now: i64,
    ) -> Result<Vec<Applied>, LedgerError> {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut kept = Vec::new();
            {
                let mut revoke = tx.prepare_cached(
                    "UPDATE writ_grants SET revoked_at = ?1, revoked_by = ?2, revoke_reason = ?3, redecision = COALESCE(?4, redecision), redecided_at = CASE WHEN ?4 IS NULL THEN redecided_at ELSE ?1 END WHERE grant_id = ?5 AND revoked_at IS NULL AND expires_at > ?1",
                )?;
                let mut narrow = tx.prepare_cached(
                    "UPDATE writ_grants SET scope = ?1, expires_at = ?2, narrowed = 1, redecision = ?3, redecided_at = ?4 WHERE grant_id = ?5 AND revoked_at IS NULL AND expires_at = ?6 AND scope = ?7 AND expires_at > ?4",
                )?;
                for change in changes {
                    let decision = change.decision.as_ref().map(Value::to_string);
                    let changed = match &change.action {
                        Action::Revoke => revoke.execute(params![
                            now,
                            change.by,
                            change.reason,
                            decision,
                            change.grant.grant_id
                        ])?,
                        Action::Narrow { scope, expires_at } => narrow.execute(params![
                            Value::from(scope.clone()).to_string(),
                            expires_at,
                            decision,
                            now,
                            change.grant.grant_id,
                            change.grant.expires_at,
                            Value::from(change.grant.scope.clone()).to_string(),
                        ])?,
                    };
                    if changed > 0 {
                        kept.push(change);
                    }
                }
            }
            let mut applied = Vec::with_capacity(kept.len());
            if !kept.is_empty() {
                let count = i64::try_from(kept.len()).unwrap_or(i64::MAX);
                // The feed's head row, taken last: appenders queue here for
                // the shortest time, in commit order.
                let last: i64 = tx.query_row(
                    "UPDATE writ_feed_head SET last_seq = last_seq + ?1 WHERE feed = 'revocations' RETURNING last_seq",
                    params![count],
                    |row| row.get(0),
                )?;
                let mut insert = tx.prepare_cached(&format!(
                    "INSERT INTO writ_revocations ({FEED_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                ))?;
                for (i, change) in kept.into_iter().enumerate() {
                    let seq = last - count + 1 + i64::try_from(i).unwrap_or(0);
                    let row = change.feed_entry(seq, now);
                    insert.execute(params![
                        row.seq,
                        row.grant_id,
                        row.kind.as_str(),
                        row.subject_id,
                        row.task_id,
                        row.credential_ref,
                        row.reason,
                        row.by,
                        row.at,
                        row.scope.map(|s| Value::from(s).to_string()),
                        row.expires_at,
                    ])?;
                    applied.push(change.applied(seq, now));
                }
            }
            tx.commit()?;
            Ok(applied)
        })
        .await
    }

    pub(crate) async fn feed(&self, after: i64, limit: i64) -> Result<Vec<FeedEntry>, LedgerError> {
        self.with(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {FEED_COLUMNS} FROM writ_revocations WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))?;
            let rows = statement.query_map(params![after, limit], read_feed)?;
            rows.collect()
        })
        .await
    }
}

fn insert(tx: &Connection, g: &Grant, verdict: &Verdict) -> Result<(), rusqlite::Error> {
    let (request, obligations) = verdict.texts(g);
    tx.prepare_cached(&insert_sql('?'))?.execute(params![
        g.grant_id,
        g.decision_id,
        g.policy_digest,
        g.subject_id,
        g.task_id,
        request,
        serde_json::Value::from(g.scope.clone()).to_string(),
        i64::try_from(g.ttl).unwrap_or(i64::MAX),
        g.issued_at,
        g.expires_at,
        obligations,
        g.credential_ref,
        g.revoked_at,
        g.revoked_by,
        g.reason,
        i64::from(g.narrowed),
        super::ApprovalAttestation::column(g.approval.as_ref()),
    ])?;
    Ok(())
}

fn read(row: &rusqlite::Row<'_>) -> Result<Grant, rusqlite::Error> {
    let request: String = row.get(5)?;
    let scope: String = row.get(6)?;
    let obligations: String = row.get(10)?;
    let ttl: i64 = row.get(7)?;
    let narrowed: i64 = row.get(15)?;
    let redecision: Option<String> = row.get(16)?;
    let approval: Option<String> = row.get(18)?;
    Ok(Grant {
        grant_id: row.get(0)?,
        decision_id: row.get(1)?,
        policy_digest: row.get(2)?,
        subject_id: row.get(3)?,
        task_id: row.get(4)?,
        request: json_column("request", &request),
        scope: serde_json::from_str(&scope).unwrap_or_default(),
        ttl: u64::try_from(ttl).unwrap_or(0),
        issued_at: row.get(8)?,
        expires_at: row.get(9)?,
        obligations: json_column("obligations", &obligations),
        credential_ref: row.get(11)?,
        revoked_at: row.get(12)?,
        revoked_by: row.get(13)?,
        reason: row.get(14)?,
        narrowed: narrowed != 0,
        redecision: redecision.map(|text| json_column("redecision", &text)),
        redecided_at: row.get(17)?,
        approval: super::ApprovalAttestation::from_column(approval.as_deref()),
    })
}

fn read_feed(row: &rusqlite::Row<'_>) -> Result<FeedEntry, rusqlite::Error> {
    let kind: String = row.get(2)?;
    let scope: Option<String> = row.get(9)?;
    Ok(FeedEntry {
        seq: row.get(0)?,
        grant_id: row.get(1)?,
        kind: FeedKind::parse(&kind).unwrap_or(FeedKind::Revoked),
        subject_id: row.get(3)?,
        task_id: row.get(4)?,
        credential_ref: row.get(5)?,
        reason: row.get(6)?,
        by: row.get(7)?,
        at: row.get(8)?,
        scope: scope.and_then(|text| serde_json::from_str(&text).ok()),
        expires_at: row.get(10)?,
    })
}

/// One queued issuance: run inside the group's transaction.
type Work = Box<dyn FnOnce(&Connection) -> Result<Issued, rusqlite::Error> + Send>;

/// An issuance waiting for the next group commit, and where its answer goes.
struct Job {
    work: Work,
    reply: tokio::sync::oneshot::Sender<Result<Issued, LedgerError>>,
}

/// The issuances waiting for a group commit.
#[derive(Default)]
pub(crate) struct Queue {
    jobs: Vec<Job>,
    /// A blocking task is draining the queue: a new issuance only queues.
    flushing: bool,
}

/// Commits the queued issuances, a group at a time, until none is left.
fn flush_queue(
    conn: &Mutex<Connection>,
    queue: &Mutex<Queue>,
    path: &str,
    opened: Option<(u64, u64)>,
) {
    loop {
        let jobs = match queue.lock() {
            Ok(mut queue) if queue.jobs.is_empty() => {
                queue.flushing = false;
                return;
            }
            Ok(mut queue) => std::mem::take(&mut queue.jobs),
            // Only a panic while the lock was held poisons it, and nothing
            // that can panic runs under it; should it happen, the queued
            // callers see their answer dropped.
            Err(_) => return,
        };
        if opened.is_some() && identity(path) != opened {
            // As in `Sqlite::with`: a file removed or replaced under writ
            // records nothing.
            for job in jobs {
                let _ = job.reply.send(Err(failed(
                    path,
                    "the file was removed or replaced while writ had it open; nothing is recorded until writ is restarted on a ledger file",
                )));
            }
            continue;
        }
        commit_group(conn, jobs, path);
    }
}

/// Runs `jobs` in one transaction, one savepoint each, commits, then
/// answers each: a job's answer is sent only once its grant is committed.
fn commit_group(conn: &Mutex<Connection>, jobs: Vec<Job>, path: &str) {
    let Ok(mut conn) = conn.lock() else {
        for job in jobs {
            let _ = job
                .reply
                .send(Err(failed(path, "a previous operation panicked")));
        }
        return;
    };
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(error) => {
            let message = error.to_string();
            for job in jobs {
                let _ = job.reply.send(Err(failed(path, &message)));
            }
            return;
        }
    };
    let mut answers: Vec<(tokio::sync::oneshot::Sender<_>, Result<Issued, LedgerError>)> =
        Vec::with_capacity(jobs.len());
    for job in jobs {
        let result = run_in_savepoint(&mut tx, job.work).map_err(|e| failed(path, e));
        answers.push((job.reply, result));
    }
    if let Err(error) = tx.commit() {
        // Nothing of the group was recorded: every one of them fails.
        let message = error.to_string();
        for (reply, _) in answers {
            let _ = reply.send(Err(failed(path, &message)));
        }
        return;
    }
    drop(conn);
    for (reply, result) in answers {
        // A caller that went away (its connection closed) is not an error:
        // its grant is recorded, as with any answer the broker never read.
        let _ = reply.send(result);
    }
}

/// One issuance inside its own savepoint: released when it succeeds,
/// rolled back (and nothing of it kept) when it fails or panics.
fn run_in_savepoint(tx: &mut rusqlite::Transaction<'_>, work: Work) -> Result<Issued, String> {
    let savepoint = tx.savepoint().map_err(|e| e.to_string())?;
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&savepoint)));
    match ran {
        Ok(Ok(issued)) => {
            savepoint.commit().map_err(|e| e.to_string())?;
            Ok(issued)
        }
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("recording the grant panicked; nothing of it was kept".to_owned()),
    }
}

/// Count and record one issuance inside the group's transaction (with the
/// file's write lock held).
fn issue_one(
    tx: &Connection,
    subject: &str,
    key: Option<&str>,
    digest: &str,
    since: i64,
    now: i64,
    decide: &dyn Fn(u64) -> Verdict,
) -> Result<Issued, rusqlite::Error> {
    if let Some(key) = key {
        let stored: Option<(i64, String, Option<String>)> = tx
            .prepare_cached(
                "SELECT status, body, request_digest FROM writ_idempotency WHERE idempotency_key = ?1",
            )?
            .query_row(params![key], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()?;
        if let Some((status, body, first)) = stored {
            if first.is_some_and(|first| first != digest) {
                return Ok(Issued::key_reused());
            }
            return Ok(Issued {
                status: u16::try_from(status).unwrap_or(500),
                body,
                replayed: true,
                key_reused: false,
            });
        }
    }
    tx.prepare_cached(
        "INSERT INTO writ_subjects (subject_id, issued) VALUES (?1, 0) ON CONFLICT (subject_id) DO NOTHING",
    )?
    .execute(params![subject])?;
    let count: i64 = tx
        .prepare_cached(
            "SELECT COUNT(*) FROM writ_grants WHERE subject_id = ?1 AND issued_at > ?2",
        )?
        .query_row(params![subject, since], |row| row.get(0))?;
    let verdict = decide(u64::try_from(count).unwrap_or(0));
    if let Some(grant) = &verdict.grant {
        insert(tx, grant, &verdict)?;
    }
    if let Some(key) = key {
        tx.prepare_cached(
            "INSERT INTO writ_idempotency (idempotency_key, status, body, created_at, request_digest) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![key, i64::from(verdict.status), verdict.body, now, digest])?;
    }
    Ok(Issued {
        status: verdict.status,
        body: verdict.body,
        replayed: false,
        key_reused: false,
    })
}
