//! The daemon's battery health: the [`HealthTracker`] fed every cycle from the battery's
//! reading, its capacity samples kept in the ledger database (table
//! `battery_capacity_samples`) by a blocking task of its own, and the report the HTTP API,
//! the dashboard and `/metrics` read.
//!
//! The control loop never waits for SQLite: new samples go to the writer through a bounded
//! queue (`try_send`; a full queue drops them with a warning, the in-memory estimate keeps
//! them). On start the samples of the last 400 days are loaded once, before the loop runs, so
//! a restarted daemon dispatches on the capacity it had measured.

use super::snapshot::Observation;
use crate::dispatch::Policy;
use crate::health::{CapacitySample, HealthConfig, HealthReport, HealthTracker};
use crate::ledger::Store;
use chrono::{DateTime, Duration as TimeDelta, Utc};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Samples loaded on start.
const LOAD_DAYS: i64 = 400;
/// Batches of new samples the writer's queue holds.
const QUEUE: usize = 64;
/// Station seconds between two reports.
const REPORT_EVERY_S: i64 = 10;

/// The latest report, shared with the HTTP server.
pub type ReportSlot = Arc<Mutex<Option<Arc<HealthReport>>>>;

/// The control loop's part.
pub struct DaemonHealth {
    tracker: HealthTracker,
    writer: Option<SyncSender<Vec<CapacitySample>>>,
    slot: ReportSlot,
    reported_at: Option<DateTime<Utc>>,
    warning: Option<String>,
}

impl DaemonHealth {
    /// Feed the cycle's battery reading, put the measured capacity and the health limits into
    /// the dispatch snapshot, hand new samples to the writer and refresh the report.
    pub fn cycle(&mut self, now: DateTime<Utc>, observed: &mut Observation, policy: &Policy) {
        if let Some(o) = observed.telemetry.battery_health {
            self.tracker.observe(now, o);
        }
        self.tracker
            .apply_to_snapshot(&policy.battery, now, &mut observed.snapshot.battery);
        let fresh = self.tracker.take_new_samples();
        if let (false, Some(tx)) = (fresh.is_empty(), &self.writer) {
            for s in &fresh {
                tracing::info!(
                    capacity_kwh = s.capacity_wh / 1000.0,
                    sigma_kwh = s.sigma_wh / 1000.0,
                    soc_from = s.soc_from_pct,
                    soc_to = s.soc_to_pct,
                    "battery capacity measured"
                );
            }
            if tx.try_send(fresh).is_err() {
                tracing::warn!(
                    "battery health writer busy or stopped; samples kept in memory only"
                );
            }
        }
        let due = self
            .reported_at
            .is_none_or(|t| now - t >= TimeDelta::seconds(REPORT_EVERY_S) || t > now);
        if due {
            let report = self.tracker.report(&policy.battery, now);
            if report.warning != self.warning {
                if let Some(w) = &report.warning {
                    tracing::warn!(warning = %w, "battery SoH disagrees with the measurement");
                }
                self.warning = report.warning.clone();
            }
            *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(report));
            self.reported_at = Some(now);
        }
    }

    /// The disagreement warning, when there is one (for the status reasons).
    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }
}

/// Load the kept samples (from `path`, when the ledger is on disk), start the writer on
/// `tracker`, and return the control loop's part and the report slot.
pub async fn start(
    cfg: HealthConfig,
    path: Option<PathBuf>,
    now: DateTime<Utc>,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> (DaemonHealth, ReportSlot) {
    let slot: ReportSlot = Arc::new(Mutex::new(None));
    let Some(path) = path else {
        return (
            daemon_health(HealthTracker::new(cfg), None, slot.clone()),
            slot,
        );
    };
    let load_path = path.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        Store::open(&load_path).and_then(|s| s.capacity_samples(now - TimeDelta::days(LOAD_DAYS)))
    })
    .await;
    let samples = match loaded {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "battery capacity samples not loaded; measuring afresh");
            Vec::new()
        }
        Err(e) => {
            tracing::warn!(error = %e, "battery capacity samples not loaded; measuring afresh");
            Vec::new()
        }
    };
    tracing::info!(samples = samples.len(), "battery capacity samples loaded");
    let (tx, rx) = sync_channel(QUEUE);
    tracker.spawn_blocking(move || write_samples(&path, &rx, &cancel));
    (
        daemon_health(
            HealthTracker::restore(cfg, &samples),
            Some(tx),
            slot.clone(),
        ),
        slot,
    )
}

fn daemon_health(
    tracker: HealthTracker,
    writer: Option<SyncSender<Vec<CapacitySample>>>,
    slot: ReportSlot,
) -> DaemonHealth {
    DaemonHealth {
        tracker,
        writer,
        slot,
        reported_at: None,
        warning: None,
    }
}

/// The writer: one transaction per batch, until cancelled and the queue is drained.
fn write_samples(path: &Path, rx: &Receiver<Vec<CapacitySample>>, cancel: &CancellationToken) {
    let mut store = match Store::open(path) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "battery health writer cannot open the ledger");
            return;
        }
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(batch) => {
                if let Err(e) = store.insert_capacity_samples(&batch) {
                    tracing::warn!(error = %e, "battery capacity samples not stored");
                }
            }
            Err(RecvTimeoutError::Timeout) if !cancel.is_cancelled() => {}
            Err(_) => break,
        }
    }
}

/// The health gauges for `/metrics`.
pub fn metrics_text(report: Option<&HealthReport>) -> String {
    let mut out = String::new();
    let Some(r) = report else {
        return out;
    };
    let est = r.estimate;
    let eol_days = |t: Option<DateTime<Utc>>| {
        t.zip(r.at)
            .map(|(t, now)| (t - now).num_seconds() as f64 / 86_400.0)
    };
    let gauges: [(&str, &str, Option<f64>); 17] = [
        (
            "station_battery_capacity_measured_wh",
            "Measured battery capacity (0-100 % SoC), Wh.",
            est.map(|e| e.capacity_wh),
        ),
        (
            "station_battery_capacity_band_wh",
            "Half-width of the measured capacity's 95 % band, Wh.",
            est.map(|e| e.band_wh),
        ),
        (
            "station_battery_capacity_confident",
            "1 when dispatch uses the measured capacity.",
            Some(if est.is_some_and(|e| e.confident) {
                1.0
            } else {
                0.0
            }),
        ),
        (
            "station_battery_capacity_bms_wh",
            "Nameplate x the BMS's SoH, Wh.",
            r.bms_capacity_wh,
        ),
        (
            "station_battery_capacity_in_use_wh",
            "Capacity dispatch and the planner use, Wh.",
            r.capacity_in_use_wh,
        ),
        (
            "station_battery_equivalent_full_cycles",
            "Equivalent full cycles counted since measuring began.",
            Some(r.equivalent_full_cycles),
        ),
        (
            "station_battery_throughput_wh",
            "DC energy through the pack (charge + discharge) counted, Wh.",
            Some(r.throughput_wh),
        ),
        (
            "station_battery_cell_spread_mv",
            "Cell voltage spread at mid SoC, mV.",
            r.cell_spread_mv,
        ),
        (
            "station_battery_module_temperature_min_celsius",
            "Coolest module temperature (803/804).",
            r.temp_min_c,
        ),
        (
            "station_battery_fade_wh_per_day",
            "Measured capacity fade now (calendar + cycle), Wh per day.",
            r.fade.map(|f| f.wh_per_day),
        ),
        (
            "station_battery_fade_calendar_wh_per_day",
            "Calendar part of the measured fade now, Wh per day.",
            r.fade.map(|f| f.calendar_wh_per_day),
        ),
        (
            "station_battery_fade_cycle_wh_per_wh",
            "Cycle fade: capacity lost per Wh of DC throughput, Wh/Wh.",
            r.fade.map(|f| f.cycle_wh_per_wh),
        ),
        (
            "station_battery_end_of_life_days",
            "Days until the capacity reaches the end-of-life level (projected).",
            r.end_of_life.and_then(|e| eol_days(Some(e.date))),
        ),
        (
            "station_battery_end_of_life_days_earliest",
            "Earliest end of life within the 95 % range, days.",
            r.end_of_life.and_then(|e| eol_days(Some(e.earliest))),
        ),
        (
            "station_battery_wear_cny_per_kwh",
            "Wear price in use (measured cycle fade, else the policy's), CNY per kWh discharged.",
            Some(r.wear.cny_per_kwh),
        ),
        (
            "station_battery_wear_measured",
            "1 when the wear price comes from the measured cycle fade (clamped or not).",
            Some(if r.wear_cny_per_kwh.is_some() {
                1.0
            } else {
                0.0
            }),
        ),
        (
            "station_battery_soh_disagreement",
            "1 while the BMS's SoH disagrees with the measurement.",
            Some(if r.disagreement.is_some() { 1.0 } else { 0.0 }),
        ),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        if let Some(v) = v.filter(|v| v.is_finite()) {
            let _ = writeln!(out, "{name} {v}");
        }
    }
    out
}
