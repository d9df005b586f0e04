//! SQLite storage of the ledger (rusqlite, bundled SQLite).
//!
//! WAL journal, `synchronous=NORMAL`: a committed flush survives a killed process (`kill -9`);
//! only an operating-system crash or power cut can lose the last commits. Each flush is one
//! transaction. Buckets are stored as additive rows: a flush adds the in-memory deltas to the row
//! of the same quarter hour (`peak_import_w` takes the maximum), so a restarted ledger simply
//! keeps adding to the current bucket. Sessions are keyed by (charger id, start); open sessions
//! have `end_ms` NULL and carry their running totals. The battery origin account lives in the
//! key/value table `state`, and so does the demand charge's state (the open 15-minute window and
//! the month's peak, [`DemandState`]) and the energy counters' reconciliation
//! ([`SavedCounter`], keys `counter:<name>:<field>`).
//!
//! Schema 2 added the bucket column `estimated_s`; a version-1 file is migrated in place. The
//! battery's capacity samples and the planner's bookings have tables of their own, created on
//! open in any schema version.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use super::flows::BatteryOrigin;
use super::model::{utc_from_s, Bucket, SavedCounter, SessionRecord, BUCKET_COLUMNS};
use crate::dispatch::DemandState;
use crate::health::CapacitySample;
use crate::planner::forecast::Booking;

/// Schema version this code writes and reads.
pub const SCHEMA_VERSION: i64 = 2;

/// What went wrong with the ledger database. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger database {}: cannot open: {source}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("ledger database {}: not usable (corrupt or not a database?): {source}", .path.display())]
    Setup {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("ledger database {}: schema version {found} is newer than this program's {SCHEMA_VERSION}", .path.display())]
    SchemaTooNew { path: PathBuf, found: i64 },
    #[error("ledger database {}: journal mode is {mode:?}, WAL could not be enabled", .path.display())]
    NoWal { path: PathBuf, mode: String },
    #[error("ledger database {}: flush failed: {source}", .path.display())]
    Flush {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("ledger database {}: read failed: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

impl LedgerError {
    /// The database file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Open { path, .. }
            | Self::Setup { path, .. }
            | Self::SchemaTooNew { path, .. }
            | Self::NoWal { path, .. }
            | Self::Flush { path, .. }
            | Self::Read { path, .. } => path,
        }
    }
}

/// Replace the energy counters' states (see [`SavedCounter`]).
fn save_counters(
    tx: &rusqlite::Transaction<'_>,
    counters: &[SavedCounter],
) -> rusqlite::Result<()> {
    if counters.is_empty() {
        return Ok(());
    }
    tx.execute("DELETE FROM state WHERE key LIKE 'counter:%'", [])?;
    let mut put = tx.prepare("INSERT OR REPLACE INTO state (key, value) VALUES (?1, ?2)")?;
    for c in counters {
        for (field, v) in [
            ("value", c.value),
            ("booked_wh", c.booked_wh),
            ("at_s", c.at_s),
        ] {
            put.execute(params![format!("counter:{}:{field}", c.name), v])?;
        }
    }
    Ok(())
}

/// State read back when the database is opened.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub open_sessions: Vec<SessionRecord>,
    pub battery_origin: Option<BatteryOrigin>,
    pub demand: Option<DemandState>,
    pub counters: Vec<SavedCounter>,
}

/// An open ledger database.
#[derive(Debug)]
pub struct Store {
    pub(super) conn: Connection,
    path: PathBuf,
    bucket_upsert_sql: String,
    bucket_select_sql: String,
}

pub(super) const SESSION_COLUMNS: &str =
    "charger_id, start_ms, end_ms, last_seen_ms, energy_wh, green_wh, \
     from_pv_wh, from_battery_wh, from_grid_wh, co2_kg, cost_cny";

impl Store {
    /// A read failure of this store's file, for `map_err`.
    fn read_error(&self) -> impl Fn(rusqlite::Error) -> LedgerError + Copy + '_ {
        |source| LedgerError::Read {
            path: self.path.clone(),
            source,
        }
    }

    /// Opens (creating if needed) the database at `path`, enables WAL and checks the schema.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let conn = Connection::open(path).map_err(|source| LedgerError::Open {
            path: path.to_owned(),
            source,
        })?;
        let setup = |source| LedgerError::Setup {
            path: path.to_owned(),
            source,
        };
        conn.busy_timeout(Duration::from_secs(2)).map_err(setup)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(setup)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(LedgerError::NoWal {
                path: path.to_owned(),
                mode,
            });
        }
        conn.execute_batch("PRAGMA synchronous=NORMAL;")
            .map_err(setup)?;
        let mut store = Self {
            conn,
            path: path.to_owned(),
            bucket_upsert_sql: bucket_upsert_sql(),
            bucket_select_sql: format!(
                "SELECT start_s, {} FROM buckets WHERE start_s >= ?1 AND start_s < ?2 ORDER BY start_s",
                BUCKET_COLUMNS.join(", ")
            ),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&mut self) -> Result<(), LedgerError> {
        let path = self.path.clone();
        let setup = |source| LedgerError::Setup {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(setup)?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);")
            .map_err(setup)?;
        let found: Option<i64> = tx
            .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
            .map_err(setup)?;
        match found {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(LedgerError::SchemaTooNew {
                    path: self.path.clone(),
                    found: v,
                })
            }
            Some(SCHEMA_VERSION) => {}
            Some(_) => {
                tx.execute_batch(
                    "ALTER TABLE buckets ADD COLUMN estimated_s REAL NOT NULL DEFAULT 0;",
                )
                .map_err(setup)?;
                tx.execute(
                    "INSERT INTO schema_version (version) VALUES (?1)",
                    [SCHEMA_VERSION],
                )
                .map_err(setup)?;
            }
            None => {
                let cols: Vec<String> = BUCKET_COLUMNS
                    .iter()
                    .map(|c| format!("{c} REAL NOT NULL DEFAULT 0"))
                    .collect();
                tx.execute_batch(&format!(
                    "CREATE TABLE buckets (start_s INTEGER PRIMARY KEY, {});
                     CREATE TABLE sessions (
                        charger_id TEXT NOT NULL,
                        start_ms INTEGER NOT NULL,
                        end_ms INTEGER,
                        last_seen_ms INTEGER NOT NULL,
                        energy_wh REAL NOT NULL,
                        green_wh REAL NOT NULL,
                        from_pv_wh REAL NOT NULL,
                        from_battery_wh REAL NOT NULL,
                        from_grid_wh REAL NOT NULL,
                        co2_kg REAL NOT NULL,
                        cost_cny REAL NOT NULL,
                        PRIMARY KEY (charger_id, start_ms));
                     CREATE INDEX sessions_by_start ON sessions (start_ms);
                     CREATE TABLE state (key TEXT PRIMARY KEY, value REAL NOT NULL);",
                    cols.join(", ")
                ))
                .map_err(setup)?;
                tx.execute(
                    "INSERT INTO schema_version (version) VALUES (?1)",
                    [SCHEMA_VERSION],
                )
                .map_err(setup)?;
            }
        }
        super::outbox::create(&tx).map_err(setup)?;
        create_capacity_samples(&tx).map_err(setup)?;
        create_bookings(&tx).map_err(setup)?;
        tx.commit().map_err(setup)
    }

    /// Reads the open sessions and the battery origin account.
    pub fn load(&self) -> Result<Loaded, LedgerError> {
        let read = self.read_error();
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE end_ms IS NULL ORDER BY start_ms"
            ))
            .map_err(read)?;
        let open_sessions = stmt
            .query_map([], session_from_row)
            .map_err(read)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(read)?;
        let get = |key: &str| -> Result<Option<f64>, LedgerError> {
            self.conn
                .query_row("SELECT value FROM state WHERE key = ?1", [key], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(read)
        };
        let battery_origin = match (get("battery_green_wh")?, get("battery_grey_wh")?) {
            (Some(green_wh), Some(grey_wh)) => Some(BatteryOrigin {
                green_wh: green_wh.max(0.0),
                grey_wh: grey_wh.max(0.0),
                grey_cost_cny: get("battery_grey_cost_cny")?.unwrap_or(0.0).max(0.0),
                grey_co2_kg: get("battery_grey_co2_kg")?.unwrap_or(0.0).max(0.0),
                ..BatteryOrigin::default()
            }),
            _ => None,
        };
        let demand = match (get("demand_month_key")?, get("demand_energy_ws")?) {
            (Some(month_key), Some(energy_ws)) => Some(DemandState {
                window_start_s: get("demand_window_start_s")?.map(|s| s as i64),
                energy_ws,
                month_key: month_key as i32,
                month_peak_w: get("demand_month_peak_w")?.unwrap_or(0.0),
            }),
            _ => None,
        };
        Ok(Loaded {
            open_sessions,
            battery_origin,
            demand,
            counters: self.load_counters().map_err(read)?,
        })
    }

    /// Writes one flush in one transaction: bucket deltas are added to their rows, sessions
    /// (closed and open) replace their rows, the battery account and the demand state (when
    /// given) replace their values.
    pub fn flush<'a>(
        &mut self,
        bucket_deltas: impl IntoIterator<Item = &'a Bucket>,
        sessions: impl IntoIterator<Item = &'a SessionRecord>,
        origin: &BatteryOrigin,
        demand: Option<&DemandState>,
        counters: &[SavedCounter],
    ) -> Result<(), LedgerError> {
        let path = self.path.clone();
        let err = |source| LedgerError::Flush {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut up = tx.prepare(&self.bucket_upsert_sql).map_err(err)?;
            let mut newest_start_s = None;
            for b in bucket_deltas {
                newest_start_s = newest_start_s.max(Some(b.start.timestamp()));
                let values = std::iter::once(Value::Integer(b.start.timestamp()))
                    .chain(b.values().into_iter().map(Value::Real));
                up.execute(params_from_iter(values)).map_err(err)?;
            }
            let mut put = tx
                .prepare(&format!(
                    "INSERT OR REPLACE INTO sessions ({SESSION_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                ))
                .map_err(err)?;
            let mut closed = Vec::new();
            for s in sessions {
                if s.end.is_some() {
                    closed.push(s);
                }
                put.execute(params![
                    s.charger_id,
                    s.start.timestamp_millis(),
                    s.end.map(|e| e.timestamp_millis()),
                    s.last_seen.timestamp_millis(),
                    s.energy_wh,
                    s.green_wh,
                    s.from_pv_wh,
                    s.from_battery_wh,
                    s.from_grid_wh,
                    s.co2_kg,
                    s.cost_cny,
                ])
                .map_err(err)?;
            }
            super::outbox::enqueue(&tx, newest_start_s, closed).map_err(err)?;
            let mut state = tx
                .prepare("INSERT OR REPLACE INTO state (key, value) VALUES (?1, ?2)")
                .map_err(err)?;
            for (k, v) in [
                ("battery_green_wh", origin.green_wh),
                ("battery_grey_wh", origin.grey_wh),
                ("battery_grey_cost_cny", origin.grey_cost_cny),
                ("battery_grey_co2_kg", origin.grey_co2_kg),
            ] {
                state.execute(params![k, v]).map_err(err)?;
            }
            if let Some(d) = demand {
                let window = d.window_start_s.map(|s| s as f64);
                for (k, v) in [
                    ("demand_month_key", Some(f64::from(d.month_key))),
                    ("demand_energy_ws", Some(d.energy_ws)),
                    ("demand_month_peak_w", Some(d.month_peak_w)),
                    ("demand_window_start_s", window),
                ] {
                    match v {
                        Some(v) => state.execute(params![k, v]).map_err(err)?,
                        None => tx
                            .execute("DELETE FROM state WHERE key = ?1", [k])
                            .map_err(err)?,
                    };
                }
            }
        }
        save_counters(&tx, counters).map_err(err)?;
        tx.commit().map_err(err)
    }

    /// The energy counters' states (keys `counter:<name>:value|booked_wh|at_s` of `state`).
    fn load_counters(&self) -> rusqlite::Result<Vec<SavedCounter>> {
        let mut stmt = self
            .conn
            .prepare("SELECT key, value FROM state WHERE key LIKE 'counter:%' ORDER BY key")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut out: Vec<SavedCounter> = Vec::new();
        for (key, v) in rows {
            let Some((name, field)) = key
                .strip_prefix("counter:")
                .and_then(|k| k.rsplit_once(':'))
            else {
                continue;
            };
            if out.last().is_none_or(|c| c.name != name) {
                out.push(SavedCounter {
                    name: name.to_string(),
                    value: f64::NAN,
                    booked_wh: 0.0,
                    at_s: f64::NAN,
                });
            }
            if let Some(c) = out.last_mut() {
                match field {
                    "value" => c.value = v,
                    "booked_wh" => c.booked_wh = v,
                    "at_s" => c.at_s = v,
                    _ => {}
                }
            }
        }
        out.retain(|c| c.value.is_finite() && c.at_s.is_finite() && c.booked_wh.is_finite());
        Ok(out)
    }

    /// Stored buckets whose start lies in `[from, to)`, oldest first.
    pub fn buckets(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Bucket>, LedgerError> {
        let read = self.read_error();
        let mut stmt = self.conn.prepare(&self.bucket_select_sql).map_err(read)?;
        let rows = stmt
            .query_map(params![from.timestamp(), to.timestamp()], |r| {
                let start: i64 = r.get(0)?;
                let mut values = Vec::with_capacity(BUCKET_COLUMNS.len());
                for i in 0..BUCKET_COLUMNS.len() {
                    values.push(r.get::<_, f64>(i + 1)?);
                }
                Ok(Bucket::from_values(utc_from_s(start), &values))
            })
            .map_err(read)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(read)
    }

    /// Stored sessions overlapping `[from, to)` (open ones with their last flushed totals).
    pub fn sessions(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<SessionRecord>, LedgerError> {
        let read = self.read_error();
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions
                 WHERE start_ms < ?2 AND coalesce(end_ms, last_seen_ms) >= ?1
                 ORDER BY start_ms, charger_id"
            ))
            .map_err(read)?;
        let rows = stmt
            .query_map(
                params![from.timestamp_millis(), to.timestamp_millis()],
                session_from_row,
            )
            .map_err(read)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(read)
    }
}

/// The battery's measured capacity samples (`crate::health`), one row per sample, keyed by
/// its time; created on open in any schema version (it only ever adds a table).
fn create_capacity_samples(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS battery_capacity_samples (
            at_ms INTEGER PRIMARY KEY,
            capacity_wh REAL NOT NULL,
            sigma_wh REAL NOT NULL,
            soc_from_pct REAL NOT NULL,
            soc_to_pct REAL NOT NULL,
            energy_wh REAL NOT NULL,
            throughput_wh REAL NOT NULL,
            bms_soh_pct REAL);",
    )
}

impl Store {
    /// Store capacity samples (one transaction; a sample already stored is replaced).
    pub fn insert_capacity_samples(
        &mut self,
        samples: &[CapacitySample],
    ) -> Result<(), LedgerError> {
        let path = self.path.clone();
        let err = |source| LedgerError::Flush {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        for s in samples {
            tx.execute(
                "INSERT OR REPLACE INTO battery_capacity_samples
                 (at_ms, capacity_wh, sigma_wh, soc_from_pct, soc_to_pct, energy_wh,
                  throughput_wh, bms_soh_pct) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    s.at.timestamp_millis(),
                    s.capacity_wh,
                    s.sigma_wh,
                    s.soc_from_pct,
                    s.soc_to_pct,
                    s.energy_wh,
                    s.throughput_wh,
                    s.bms_soh_pct
                ],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Capacity samples at or after `from`, oldest first.
    pub fn capacity_samples(
        &self,
        from: DateTime<Utc>,
    ) -> Result<Vec<CapacitySample>, LedgerError> {
        let read = self.read_error();
        let mut stmt = self
            .conn
            .prepare(
                "SELECT at_ms, capacity_wh, sigma_wh, soc_from_pct, soc_to_pct, energy_wh,
                        throughput_wh, bms_soh_pct
                 FROM battery_capacity_samples WHERE at_ms >= ?1 ORDER BY at_ms",
            )
            .map_err(read)?;
        let rows = stmt
            .query_map([from.timestamp_millis()], |r| {
                Ok(CapacitySample {
                    at: utc_from_ms(r.get(0)?),
                    capacity_wh: r.get(1)?,
                    sigma_wh: r.get(2)?,
                    soc_from_pct: r.get(3)?,
                    soc_to_pct: r.get(4)?,
                    energy_wh: r.get(5)?,
                    throughput_wh: r.get(6)?,
                    bms_soh_pct: r.get(7)?,
                })
            })
            .map_err(read)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(read)
    }
}

fn utc_from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

pub(super) fn session_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRecord> {
    let mut s = SessionRecord::new(&r.get::<_, String>(0)?, utc_from_ms(r.get(1)?));
    s.end = r.get::<_, Option<i64>>(2)?.map(utc_from_ms);
    s.last_seen = utc_from_ms(r.get(3)?);
    s.energy_wh = r.get(4)?;
    s.green_wh = r.get(5)?;
    s.from_pv_wh = r.get(6)?;
    s.from_battery_wh = r.get(7)?;
    s.from_grid_wh = r.get(8)?;
    s.co2_kg = r.get(9)?;
    s.cost_cny = r.get(10)?;
    s.update_share();
    Ok(s)
}

fn bucket_upsert_sql() -> String {
    let placeholders: Vec<String> = (0..=BUCKET_COLUMNS.len())
        .map(|i| format!("?{}", i + 1))
        .collect();
    let updates: Vec<String> = BUCKET_COLUMNS
        .iter()
        .map(|c| {
            if *c == "peak_import_w" {
                format!("{c} = max({c}, excluded.{c})")
            } else {
                format!("{c} = {c} + excluded.{c}")
            }
        })
        .collect();
    format!(
        "INSERT INTO buckets (start_s, {}) VALUES ({}) ON CONFLICT(start_s) DO UPDATE SET {}",
        BUCKET_COLUMNS.join(", "),
        placeholders.join(", "),
        updates.join(", ")
    )
}

/// The planner's bookings (`crate::planner::forecast::bookings`), one row per booking.
fn create_bookings(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS bookings (
            id INTEGER PRIMARY KEY,
            charger INTEGER,
            arrives_ms INTEGER NOT NULL,
            departs_ms INTEGER NOT NULL,
            energy_wh REAL,
            max_w REAL,
            fulfilled_by INTEGER);",
    )
}

impl Store {
    /// Replace the stored bookings with `bookings` (one transaction).
    pub fn replace_bookings(&mut self, bookings: &[Booking]) -> Result<(), LedgerError> {
        let path = self.path.clone();
        let err = |source| LedgerError::Flush {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute("DELETE FROM bookings", []).map_err(err)?;
        for b in bookings {
            let index = |i: Option<usize>| i.and_then(|i| i64::try_from(i).ok());
            tx.execute(
                "INSERT INTO bookings (id, charger, arrives_ms, departs_ms, energy_wh, max_w,
                 fulfilled_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    i64::try_from(b.id).unwrap_or(i64::MAX),
                    index(b.charger),
                    b.arrives.timestamp_millis(),
                    b.departs.timestamp_millis(),
                    b.energy_wh,
                    b.max_w,
                    index(b.fulfilled_by)
                ],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// The stored bookings, by arrival.
    pub fn bookings(&self) -> Result<Vec<Booking>, LedgerError> {
        let read = self.read_error();
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, charger, arrives_ms, departs_ms, energy_wh, max_w, fulfilled_by
                 FROM bookings ORDER BY arrives_ms, id",
            )
            .map_err(read)?;
        let index = |i: Option<i64>| i.and_then(|i| usize::try_from(i).ok());
        let rows = stmt
            .query_map([], |r| {
                Ok(Booking {
                    id: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    charger: index(r.get(1)?),
                    arrives: utc_from_ms(r.get(2)?),
                    departs: utc_from_ms(r.get(3)?),
                    energy_wh: r.get(4)?,
                    max_w: r.get(5)?,
                    fulfilled_by: index(r.get(6)?),
                })
            })
            .map_err(read)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(read)
    }
}
