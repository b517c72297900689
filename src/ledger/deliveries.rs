//! Where a webhook's push of the revocation feed has got to
//! (`writ_deliveries`, schema version 4). The pusher (the server's
//! `webhook` module) reads the feed after its target's cursor, delivers,
//! and advances the cursor with a compare-and-set, so replicas sharing the
//! ledger, and a restarted replica, resume where delivery stopped.

use rusqlite::params;

use super::{postgres, LedgerError, Store};
use crate::ledger::Ledger;

impl Ledger {
    /// The feed's head: the cursor of the newest revocation or narrowing
    /// (0 when there is none).
    pub async fn feed_head(&self) -> Result<i64, LedgerError> {
        const SQL: &str = "SELECT last_seq FROM writ_feed_head WHERE feed = 'revocations'";
        match &self.store {
            Store::Sqlite(s) => {
                s.with(|conn| conn.query_row(SQL, [], |row| row.get::<_, i64>(0)))
                    .await
            }
            Store::Postgres(p) => {
                p.ready().await?;
                let client = p.pool.get().await.map_err(postgres::unavailable)?;
                let row = client
                    .query_one(SQL, &[])
                    .await
                    .map_err(postgres::unavailable)?;
                Ok(row.get(0))
            }
        }
    }

    /// The cursor delivery to `target` has reached. A target seen for the
    /// first time starts at `start` (the pusher passes the feed's head:
    /// a new webhook is sent what happens from then on; the history stays
    /// on `GET /v1/revocations`).
    pub async fn delivery_cursor(
        &self,
        target: &str,
        start: i64,
        now: i64,
    ) -> Result<i64, LedgerError> {
        let target = target.to_owned();
        match &self.store {
            Store::Sqlite(s) => {
                s.with(move |conn| {
                    conn.execute(
                        "INSERT INTO writ_deliveries (target, delivered_seq, updated_at) VALUES (?1, ?2, ?3) ON CONFLICT (target) DO NOTHING",
                        params![target, start, now],
                    )?;
                    conn.query_row(
                        "SELECT delivered_seq FROM writ_deliveries WHERE target = ?1",
                        params![target],
                        |row| row.get::<_, i64>(0),
                    )
                })
                .await
            }
            Store::Postgres(p) => {
                p.ready().await?;
                let client = p.pool.get().await.map_err(postgres::unavailable)?;
                client
                    .execute(
                        "INSERT INTO writ_deliveries (target, delivered_seq, updated_at) VALUES ($1, $2, $3) ON CONFLICT (target) DO NOTHING",
                        &[&target, &start, &now],
                    )
                    .await
                    .map_err(postgres::unavailable)?;
                let row = client
                    .query_one(
                        "SELECT delivered_seq FROM writ_deliveries WHERE target = $1",
                        &[&target],
                    )
                    .await
                    .map_err(postgres::unavailable)?;
                Ok(row.get(0))
            }
        }
    }

    /// Moves `target`'s cursor from `from` to `to`, only if it still is at
    /// `from`: false when another replica moved it meanwhile (the caller
    /// reads it again and goes on from there).
    pub async fn advance_delivery(
        &self,
        target: &str,
        from: i64,
        to: i64,
        now: i64,
    ) -> Result<bool, LedgerError> {
        let target = target.to_owned();
        let changed = match &self.store {
            Store::Sqlite(s) => {
                s.with(move |conn| {
                    conn.execute(
                        "UPDATE writ_deliveries SET delivered_seq = ?1, updated_at = ?2 WHERE target = ?3 AND delivered_seq = ?4",
                        params![to, now, target, from],
                    )
                })
                .await?
            }
            Store::Postgres(p) => {
                p.ready().await?;
                let client = p.pool.get().await.map_err(postgres::unavailable)?;
                let changed = client
                    .execute(
                        "UPDATE writ_deliveries SET delivered_seq = $1, updated_at = $2 WHERE target = $3 AND delivered_seq = $4",
                        &[&to, &now, &target, &from],
                    )
                    .await
                    .map_err(postgres::unavailable)?;
                usize::try_from(changed).unwrap_or(usize::MAX)
            }
        };
        Ok(changed == 1)
    }

    /// Every webhook target and its cursor, for `writ grants` and tests.
    pub async fn deliveries(&self) -> Result<Vec<(String, i64)>, LedgerError> {
        const SQL: &str = "SELECT target, delivered_seq FROM writ_deliveries ORDER BY target";
        match &self.store {
            Store::Sqlite(s) => {
                s.with(|conn| {
                    let mut statement = conn.prepare(SQL)?;
                    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
                    rows.collect()
                })
                .await
            }
            Store::Postgres(p) => {
                p.ready().await?;
                let client = p.pool.get().await.map_err(postgres::unavailable)?;
                let rows = client
                    .query(SQL, &[])
                    .await
                    .map_err(postgres::unavailable)?;
                Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
            }
        }
    }
}
