//! Retention (docs/lifecycle.md, "Retention"): what no longer holds is
//! deleted once it is older than the retention, so the ledger does not
//! grow without bound. A sweep deletes, a batch per transaction:
//!
//! - grants expired or revoked longer ago than the retention, and issued
//!   before the repeat window (a count never loses a grant it would see);
//! - the answers stored under idempotency keys first used longer ago than
//!   the retention (a retry after that is decided afresh);
//! - the revocation feed's oldest rows, a prefix of cursors up to the
//!   newest row older than the retention, with the cursor it was pruned to
//!   recorded in the same transaction (`writ_feed_head`, row
//!   `revocations_pruned`), so a reader whose cursor is before it is told
//!   ([`FeedRead::Pruned`]) rather than silently handed the rows after the
//!   gap;
//! - the per-subject counter rows of subjects with no grant left (rows
//!   another transaction holds are skipped, so a sweep never waits for an
//!   issuance, nor makes one wait).

use std::time::Duration;

use rusqlite::{params, OptionalExtension};

use super::{postgres, window_ms, FeedEntry, Ledger, LedgerError, Store};

/// How many rows one transaction of a sweep deletes at most.
const BATCH: i64 = 5000;

/// What a sweep deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Grants expired or revoked before the cutoff.
    pub grants: u64,
    /// Answers stored under idempotency keys.
    pub keys: u64,
    /// Feed rows.
    pub feed: u64,
    /// Subjects' counter rows.
    pub subjects: u64,
    /// The feed's rows up to this cursor are gone (0: none ever were).
    pub pruned_to: i64,
}

/// A read of the feed ([`Ledger::read_feed`]).
#[derive(Debug, Clone, PartialEq)]
pub enum FeedRead {
    /// The rows after the cursor, in cursor order (none: nothing new).
    Rows(Vec<FeedEntry>),
    /// Rows after the cursor were deleted by retention: the reader has
    /// missed them. It resumes after `pruned_to`, whose next row is the
    /// oldest the feed still holds.
    Pruned {
        /// The cursor asked for.
        after: i64,
        /// Rows up to this cursor are gone.
        pruned_to: i64,
    },
}

/// The first 13 characters of a UUIDv7 made at `ms` (Unix milliseconds):
/// a UUIDv7 starts with its time in hexadecimal, so every grant id made
/// earlier sorts before this text, and every one made at `ms` or later
/// after it.
fn id_bound(ms: i64) -> String {
    let ms = u64::try_from(ms.max(0)).unwrap_or(0);
    format!("{:08x}-{:04x}", (ms >> 16) & 0xffff_ffff, ms & 0xffff)
}

/// The grants a sweep deletes, oldest first, at most `$4` of them: expired
/// or revoked at or before `$2`, issued at or before `$1` (outside the
/// repeat window), with an id before `$3` (which bounds the scan to the
/// grants old enough to be candidates).
const DELETE_GRANTS: &str = "DELETE FROM writ_grants WHERE grant_id IN (SELECT grant_id FROM writ_grants WHERE grant_id < $3 AND issued_at <= $1 AND ((revoked_at IS NOT NULL AND revoked_at <= $2) OR (revoked_at IS NULL AND expires_at <= $2)) ORDER BY grant_id LIMIT $4)";
/// The stored answers of keys first used at or before `$1`, at most `$2`.
const DELETE_KEYS: &str = "DELETE FROM writ_idempotency WHERE idempotency_key IN (SELECT idempotency_key FROM writ_idempotency WHERE created_at <= $1 ORDER BY created_at LIMIT $2)";
/// Among the feed's oldest `$2` rows, the newest one recorded at or before
/// `$1`: the feed is pruned up to it.
const PRUNE_POINT: &str = "SELECT MAX(seq) FROM (SELECT seq, recorded_at FROM writ_revocations ORDER BY seq LIMIT $2) AS oldest WHERE recorded_at <= $1";
/// Records that the feed was pruned up to `$1` (never moving back).
const MARK_PRUNED: &str = "UPDATE writ_feed_head SET last_seq = CASE WHEN last_seq < $1 THEN $1 ELSE last_seq END WHERE feed = 'revocations_pruned'";
/// Deletes the feed's rows up to `$1`.
const DELETE_FEED: &str = "DELETE FROM writ_revocations WHERE seq <= $1";
/// The cursor the feed was pruned to.
const READ_PRUNED: &str = "SELECT last_seq FROM writ_feed_head WHERE feed = 'revocations_pruned'";
/// Counter rows of subjects with no grant left, in `subject_id` order after
/// `$1`, at most `$2`; the row of the last one looked at is returned too
/// (`MAX`), to go on from there. PostgreSQL skips rows another
/// transaction holds.
const DELETE_SUBJECTS_PG: &str = "WITH picked AS (SELECT s.subject_id FROM writ_subjects AS s WHERE s.subject_id > $1 AND NOT EXISTS (SELECT 1 FROM writ_grants AS g WHERE g.subject_id = s.subject_id) ORDER BY s.subject_id LIMIT $2 FOR UPDATE SKIP LOCKED), gone AS (DELETE FROM writ_subjects WHERE subject_id IN (SELECT subject_id FROM picked) RETURNING subject_id) SELECT COUNT(*), MAX(subject_id) FROM gone";
const DELETE_SUBJECTS_SQLITE: &str = "DELETE FROM writ_subjects WHERE subject_id IN (SELECT s.subject_id FROM writ_subjects AS s WHERE s.subject_id > ?1 AND NOT EXISTS (SELECT 1 FROM writ_grants AS g WHERE g.subject_id = s.subject_id) ORDER BY s.subject_id LIMIT ?2) RETURNING subject_id";

/// `$N` placeholders as SQLite's `?N`.
fn sqlite(sql: &str) -> String {
    sql.replace('$', "?")
}

impl Ledger {
    /// Deletes what is older than `retention` (at the ledger's time) and no
    /// longer holds: grants expired or revoked before then (none issued
    /// within `window`, the repeat window, whatever the retention), the
    /// answers of idempotency keys first used before then, the feed's rows
    /// recorded before then (a prefix of cursors, recorded as pruned), and
    /// the counter rows of subjects with no grant left. Each batch of
    /// [`BATCH`] rows is a transaction of its own.
    pub async fn sweep(&self, retention: Duration, window: Duration) -> Result<Swept, LedgerError> {
        let now = self.now();
        let cutoff = now.saturating_sub(window_ms(retention));
        let counted = now.saturating_sub(window_ms(window));
        let bound = id_bound(cutoff.min(counted).saturating_add(1));
        let mut swept = Swept::default();
        loop {
            let n = self
                .delete_batch(DELETE_GRANTS, &[counted, cutoff], Some(&bound))
                .await?;
            swept.grants += n;
            if n < BATCH as u64 {
                break;
            }
        }
        loop {
            let n = self.delete_batch(DELETE_KEYS, &[cutoff], None).await?;
            swept.keys += n;
            if n < BATCH as u64 {
                break;
            }
        }
        loop {
            let (n, full) = self.prune_feed(cutoff).await?;
            swept.feed += n;
            if !full {
                break;
            }
        }
        let mut after = String::new();
        loop {
            let (n, last) = self.delete_subjects(&after).await?;
            swept.subjects += n;
            match last {
                Some(last) if n >= BATCH as u64 => after = last,
                _ => break,
            }
        }
        swept.pruned_to = self.feed_pruned().await?;
        Ok(swept)
    }

    /// Runs one of the batched deletes: `times` are `$1`, `$2`, ...; then
    /// `bound` (a text), then the batch size.
    async fn delete_batch(
        &self,
        sql: &'static str,
        times: &[i64],
        bound: Option<&str>,
    ) -> Result<u64, LedgerError> {
        let times = times.to_vec();
        let bound = bound.map(str::to_owned);
        match &self.store {
            Store::Sqlite(s) => {
                s.with(move |conn| {
                    let mut values: Vec<rusqlite::types::Value> = times
                        .into_iter()
                        .map(rusqlite::types::Value::from)
                        .collect();
                    if let Some(bound) = bound {
                        values.push(rusqlite::types::Value::from(bound));
                    }
                    values.push(rusqlite::types::Value::from(BATCH));
                    let n = conn
                        .prepare_cached(&sqlite(sql))?
                        .execute(rusqlite::params_from_iter(values))?;
                    Ok(u64::try_from(n).unwrap_or(u64::MAX))
                })
                .await
            }
            Store::Postgres(p) => {
                p.ready().await?;
                let client = p.pool.get().await.map_err(postgres::unavailable)?;
                let mut values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    times.iter().map(|t| t as _).collect();
                if let Some(bound) = &bound {
                    values.push(bound);
                }
                values.push(&BATCH);
                client
                    .execute(sql, &values)
                    .await
                    .map_err(postgres::unavailable)
            }
        }
    }

    /// Prunes one batch of the feed's oldest rows recorded at or before
    /// `cutoff`: records the cursor pruned to and deletes up to it, in one
    /// transaction. Returns the rows deleted and whether the batch was full
    /// (there may be more).
    async fn prune_feed(&self, cutoff: i64) -> Result<(u64, bool), LedgerError> {
        match &self.store {
            Store::Sqlite(s) => {
                s.with(move |conn| {
                    let tx =
                        conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    let point: Option<i64> = tx
                        .query_row(&sqlite(PRUNE_POINT), params![cutoff, BATCH], |row| {
                            row.get(0)
                        })
                        .optional()?
                        .flatten();
                    let Some(point) = point else {
                        return Ok((0, false));
                    };
                    tx.execute(&sqlite(MARK_PRUNED), params![point])?;
                    let n = tx.execute(&sqlite(DELETE_FEED), params![point])?;
                    tx.commit()?;
                    let n = u64::try_from(n).unwrap_or(u64::MAX);
                    Ok((n, n >= BATCH as u64))
                })
                .await
            }
            Store::Postgres(p) => {
                p.ready().await?;
                let mut client = p.pool.get().await.map_err(postgres::unavailable)?;
                let tx = client.transaction().await.map_err(postgres::unavailable)?;
                let row = tx
                    .query_one(PRUNE_POINT, &[&cutoff, &BATCH])
                    .await
                    .map_err(postgres::unavailable)?;
                let point: Option<i64> = row.try_get(0).map_err(postgres::unavailable)?;
                let Some(point) = point else {
                    return Ok((0, false));
                };
                tx.execute(MARK_PRUNED, &[&point])
                    .await
                    .map_err(postgres::unavailable)?;
                let n = tx
                    .execute(DELETE_FEED, &[&point])
                    .await
                    .map_err(postgres::unavailable)?;
                tx.commit().await.map_err(postgres::unavailable)?;
                Ok((n, n >= BATCH as u64))
            }
        }
    }

    /// Deletes one batch of counter rows of subjects with no grant left,
    /// after `after` in `subject_id` order; returns how many and the last.
    async fn delete_subjects(&self, after: &str) -> Result<(u64, Option<String>), LedgerError> {
        let after = after.to_owned();
        match &self.store {
            Store::Sqlite(s) => {
                s.with(move |conn| {
                    let mut statement = conn.prepare_cached(DELETE_SUBJECTS_SQLITE)?;
                    let gone: Vec<String> = statement
                        .query_map(params![after, BATCH], |row| row.get(0))?
                        .collect::<Result<_, _>>()?;
                    let n = u64::try_from(gone.len()).unwrap_or(u64::MAX);
                    Ok((n, gone.into_iter().max()))
                })
                .await
            }
            Store::Postgres(p) => {
                p.ready().await?;
                let client = p.pool.get().await.map_err(postgres::unavailable)?;
                let row = client
                    .query_one(DELETE_SUBJECTS_PG, &[&after, &BATCH])
                    .await
                    .map_err(postgres::unavailable)?;
                let n: i64 = row.try_get(0).map_err(postgres::unavailable)?;
                let last: Option<String> = row.try_get(1).map_err(postgres::unavailable)?;
                Ok((u64::try_from(n).unwrap_or(0), last))
            }
        }
    }

    /// The cursor the feed was pruned to: rows up to it are gone (0 when
    /// retention never deleted a row).
    pub async fn feed_pruned(&self) -> Result<i64, LedgerError> {
        match &self.store {
            Store::Sqlite(s) => {
                s.with(|conn| {
                    conn.query_row(READ_PRUNED, [], |row| row.get::<_, i64>(0))
                        .optional()
                        .map(|pruned| pruned.unwrap_or(0))
                })
                .await
            }
            Store::Postgres(p) => {
                p.ready().await?;
                let client = p.pool.get().await.map_err(postgres::unavailable)?;
                let row = client
                    .query_opt(READ_PRUNED, &[])
                    .await
                    .map_err(postgres::unavailable)?;
                match row {
                    Some(row) => row.try_get(0).map_err(postgres::unavailable),
                    None => Ok(0),
                }
            }
        }
    }

    /// The feed after `after`, at most `limit` rows, or
    /// [`FeedRead::Pruned`] when retention deleted rows after `after`.
    /// The rows are read first, then (only when they do not start right
    /// after `after`) the pruned cursor: the deletion and its mark commit
    /// together, so a read that missed rows always sees the mark.
    pub async fn read_feed(&self, after: i64, limit: usize) -> Result<FeedRead, LedgerError> {
        let rows = self.feed(after, limit).await?;
        if rows
            .first()
            .is_some_and(|row| row.seq == after.saturating_add(1))
        {
            return Ok(FeedRead::Rows(rows));
        }
        let pruned_to = self.feed_pruned().await?;
        if after < pruned_to {
            Ok(FeedRead::Pruned { after, pruned_to })
        } else {
            Ok(FeedRead::Rows(rows))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::id_bound;

    /// A UUIDv7 made at `ms`.
    fn made_at(ms: u64) -> String {
        let nanos = u32::try_from((ms % 1000) * 1_000_000).expect("under a second");
        uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            ms / 1000,
            nanos,
        ))
        .to_string()
    }

    #[test]
    fn the_bound_sorts_after_earlier_ids_and_before_the_others() {
        for ms in [1_800_000_123_456_u64, 1_700_000_000_000, 1_765_432_109_999] {
            let bound = id_bound(i64::try_from(ms).expect("fits"));
            assert!(made_at(ms - 1) < bound, "{ms}");
            assert!(made_at(ms) > bound, "{ms}");
            assert!(made_at(ms + 1) > bound, "{ms}");
        }
    }
}
