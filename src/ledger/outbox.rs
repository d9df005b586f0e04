//! The ledger's outbox: finished 15-minute buckets and closed charging sessions waiting to be
//! published (MQTT energy telemetry), each with a sequence number that never repeats.
//!
//! A row is added in the same transaction as the flush that finishes its record, so a record is
//! queued exactly once and survives a `kill -9` as well as the flush does. A bucket is finished
//! when a later bucket has been written (cycle times only move forward). The publisher reads the
//! unsent rows in sequence order ([`Store::outbox_pending`]) and marks a row sent only after the
//! broker acknowledged it ([`Store::outbox_mark_sent`]); a row sent twice (a lost
//! acknowledgement) carries the same sequence number both times, so consumers deduplicate by
//! (station, seq).
//!
//! A database that predates the outbox gets the table on its next open; its buckets up to then
//! are history and are not queued (the state key `outbox_bucket_floor` marks where queuing
//! starts).

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Transaction};

use super::model::{utc_from_s, Bucket, SessionRecord, BUCKET_COLUMNS};
use super::store::{session_from_row, LedgerError, Store, SESSION_COLUMNS};

/// Creates the outbox table if it does not exist (runs at every open).
pub(super) fn create(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let exists: Option<String> = tx
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'outbox'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_some() {
        return Ok(());
    }
    tx.execute_batch(
        "CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            key TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            bucket_start_s INTEGER,
            charger_id TEXT,
            session_start_ms INTEGER,
            sent INTEGER NOT NULL DEFAULT 0);
         CREATE INDEX outbox_unsent ON outbox (sent, seq);
         INSERT OR REPLACE INTO state (key, value)
            SELECT 'outbox_bucket_floor', max(start_s) - 1 FROM buckets HAVING count(*) > 0;",
    )
}

/// Queues the buckets that a flush writing buckets up to `newest_start_s` has finished, and the
/// closed sessions among `sessions`. Already queued records are left alone.
pub(super) fn enqueue<'a>(
    tx: &Transaction<'_>,
    newest_start_s: Option<i64>,
    sessions: impl IntoIterator<Item = &'a SessionRecord>,
) -> rusqlite::Result<()> {
    if let Some(newest) = newest_start_s {
        tx.execute(
            "INSERT OR IGNORE INTO outbox (key, kind, bucket_start_s)
             SELECT 'bucket/' || start_s, 'bucket', start_s FROM buckets
             WHERE start_s < ?1 AND start_s > coalesce(
                (SELECT max(bucket_start_s) FROM outbox WHERE kind = 'bucket'),
                (SELECT value FROM state WHERE key = 'outbox_bucket_floor'),
                -1)
             ORDER BY start_s",
            [newest],
        )?;
    }
    let mut put = tx.prepare_cached(
        "INSERT OR IGNORE INTO outbox (key, kind, charger_id, session_start_ms)
         VALUES (?1, 'session', ?2, ?3)",
    )?;
    for s in sessions.into_iter().filter(|s| s.end.is_some()) {
        let start_ms = s.start.timestamp_millis();
        put.execute(params![
            format!("session/{}/{start_ms}", s.charger_id),
            s.charger_id,
            start_ms
        ])?;
    }
    Ok(())
}

/// One queued record.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboxRecord {
    Bucket(Bucket),
    Session(SessionRecord),
}

/// A queued record with its sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    pub seq: i64,
    pub record: OutboxRecord,
}

impl Store {
    /// Up to `limit` unsent records with a sequence number above `after`, oldest first.
    pub fn outbox_pending(&self, after: i64, limit: usize) -> Result<Vec<OutboxItem>, LedgerError> {
        let read = |source| LedgerError::Read {
            path: self.path().to_owned(),
            source,
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, kind, bucket_start_s, charger_id, session_start_ms FROM outbox
                 WHERE sent = 0 AND seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(read)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![after, limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })
            .map_err(read)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(read)?;
        let mut items = Vec::with_capacity(rows.len());
        for (seq, kind, bucket_start, charger, session_start) in rows {
            let record = match (kind.as_str(), bucket_start, charger, session_start) {
                ("bucket", Some(start), _, _) => self
                    .bucket_at(start)
                    .map_err(read)?
                    .map(OutboxRecord::Bucket),
                ("session", _, Some(c), Some(start)) => self
                    .session_at(&c, start)
                    .map_err(read)?
                    .map(OutboxRecord::Session),
                _ => None,
            };
            match record {
                Some(record) => items.push(OutboxItem { seq, record }),
                // The record is gone (a hand-edited database): nothing to send, never retried.
                None => self.outbox_mark_sent(&[seq])?,
            }
        }
        Ok(items)
    }

    /// Marks records as acknowledged by the broker.
    pub fn outbox_mark_sent(&self, seqs: &[i64]) -> Result<(), LedgerError> {
        let err = |source| LedgerError::Flush {
            path: self.path().to_owned(),
            source,
        };
        let mut stmt = self
            .conn
            .prepare_cached("UPDATE outbox SET sent = 1 WHERE seq = ?1")
            .map_err(err)?;
        for seq in seqs {
            stmt.execute([seq]).map_err(err)?;
        }
        Ok(())
    }

    /// Number of queued records not yet acknowledged.
    pub fn outbox_unsent(&self) -> Result<u64, LedgerError> {
        self.conn
            .query_row("SELECT count(*) FROM outbox WHERE sent = 0", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|source| LedgerError::Read {
                path: self.path().to_owned(),
                source,
            })
    }

    /// The highest sequence number ever queued (0 when none).
    pub fn outbox_last_seq(&self) -> Result<i64, LedgerError> {
        self.conn
            .query_row("SELECT coalesce(max(seq), 0) FROM outbox", [], |r| r.get(0))
            .map_err(|source| LedgerError::Read {
                path: self.path().to_owned(),
                source,
            })
    }

    fn bucket_at(&self, start_s: i64) -> rusqlite::Result<Option<Bucket>> {
        let sql = format!(
            "SELECT {} FROM buckets WHERE start_s = ?1",
            BUCKET_COLUMNS.join(", ")
        );
        self.conn
            .query_row(&sql, [start_s], |r| {
                let mut values = Vec::with_capacity(BUCKET_COLUMNS.len());
                for i in 0..BUCKET_COLUMNS.len() {
                    values.push(r.get::<_, f64>(i)?);
                }
                Ok(Bucket::from_values(utc_from_s(start_s), &values))
            })
            .optional()
    }

    fn session_at(&self, charger: &str, start_ms: i64) -> rusqlite::Result<Option<SessionRecord>> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE charger_id = ?1 AND start_ms = ?2"
                ),
                params![charger, start_ms],
                session_from_row,
            )
            .optional()
    }
}

/// The end of a bucket starting at `start`.
pub fn bucket_end(start: DateTime<Utc>) -> DateTime<Utc> {
    start + chrono::Duration::seconds(super::BUCKET_S)
}
