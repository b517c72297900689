//! The SQLite store: one file, one connection (SQLite writes one
//! transaction at a time anyway), used on a blocking thread. `BEGIN
//! IMMEDIATE` takes the file's write lock before counting, so count and
//! record are atomic even across processes sharing the file; the journal is
//! WAL with `synchronous = FULL`, so a committed grant survives a crash of
//! the process and of the machine.

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
}

fn failed(path: &str, error: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable(format!("SQLite `{path}`: {error}"))
}

impl Sqlite {
    pub(crate) async fn open(path: &str) -> Result<Sqlite, LedgerError> {
        let owned = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, LedgerError> {
            let conn = Connection::open(&owned).map_err(|e| {
                LedgerError::Invalid(format!("cannot open the SQLite ledger `{owned}`: {e}"))
            })?;
            conn.busy_timeout(Duration::from_secs(5))
                .map_err(|e| failed(&owned, e))?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(|e| failed(&owned, e))?;
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(|e| failed(&owned, e))?;
            Ok(conn)
        })
        .await
        .map_err(|e| failed(path, e))??;
        Ok(Sqlite {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_owned(),
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
        tokio::task::spawn_blocking(move || {
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

    pub(crate) async fn issue<F>(&self, issue: Issue<'_>, decide: F) -> Result<Issued, LedgerError>
    where
        F: Fn(u64) -> Verdict + Send + Sync + 'static,
    {
        let subject = issue.subject_id.to_owned();
        let key = issue.idempotency_key.map(str::to_owned);
        let digest = issue.request_digest.to_owned();
        let since = issue.now.saturating_sub(window_ms(issue.window));
        let now = issue.now;
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(key) = &key {
                let stored: Option<(i64, String, Option<String>)> = tx
                    .query_row(
                        "SELECT status, body, request_digest FROM writ_idempotency WHERE idempotency_key = ?1",
                        params![key],
                        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                    )
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
            tx.execute(
                "INSERT INTO writ_subjects (subject_id, issued) VALUES (?1, 0) ON CONFLICT (subject_id) DO NOTHING",
                params![subject],
            )?;
            let count: i64 = tx.query_row(
                "SELECT COUNT(*) FROM writ_grants WHERE subject_id = ?1 AND issued_at > ?2",
                params![subject, since],
                |row| row.get(0),
            )?;
            let verdict = decide(u64::try_from(count).unwrap_or(0));
            if let Some(grant) = &verdict.grant {
                insert(&tx, grant)?;
                tx.execute(
                    "UPDATE writ_subjects SET issued = issued + 1 WHERE subject_id = ?1",
                    params![subject],
                )?;
            }
            if let Some(key) = &key {
                tx.execute(
                    "INSERT INTO writ_idempotency (idempotency_key, status, body, created_at, request_digest) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![key, i64::from(verdict.status), verdict.body, now, digest],
                )?;
            }
            tx.commit()?;
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

fn insert(tx: &rusqlite::Transaction<'_>, g: &Grant) -> Result<(), rusqlite::Error> {
    tx.execute(
        &insert_sql('?'),
        params![
            g.grant_id,
            g.decision_id,
            g.policy_digest,
            g.subject_id,
            g.task_id,
            g.request.to_string(),
            serde_json::Value::from(g.scope.clone()).to_string(),
            i64::try_from(g.ttl).unwrap_or(i64::MAX),
            g.issued_at,
            g.expires_at,
            g.obligations.to_string(),
            g.credential_ref,
            g.revoked_at,
            g.revoked_by,
            g.reason,
            i64::from(g.narrowed),
        ],
    )?;
    Ok(())
}

fn read(row: &rusqlite::Row<'_>) -> Result<Grant, rusqlite::Error> {
    let request: String = row.get(5)?;
    let scope: String = row.get(6)?;
    let obligations: String = row.get(10)?;
    let ttl: i64 = row.get(7)?;
    let narrowed: i64 = row.get(15)?;
    let redecision: Option<String> = row.get(16)?;
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
