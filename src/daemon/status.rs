//! The daemon's published status: what the last control cycle saw and decided. Served as JSON
//! by `GET /api/status`, streamed to the dashboard, and rendered as Prometheus metrics.
//!
//! Sign convention: grid power > 0 is import, battery power > 0 is discharge, PV > 0 is
//! generation, loads > 0 consume. Missing readings are `null`.

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use crate::devices::link::LinkState;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GridStatus {
    pub power_w: Option<f64>,
    pub phase_w: [Option<f64>; 3],
    pub import_limit_w: f64,
    pub export_limit_w: f64,
    /// Whether the reading is fresh enough to control with.
    pub fresh: bool,
    /// Highest closed 15-minute average import this month (the demand charge's peak; kept
    /// across restarts in the ledger), W.
    pub month_peak_w: f64,
    /// Average import of the open 15-minute window so far, over the full 15 minutes, W.
    pub demand_window_avg_w: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PvStatus {
    pub power_w: Option<f64>,
    pub rating_w: Option<f64>,
    /// The limit the plan asks for, % of rating (100 = unlimited).
    pub limit_pct: f64,
    pub energy_wh: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BatteryStatus {
    pub soc_pct: Option<f64>,
    pub soh_pct: Option<f64>,
    pub power_w: Option<f64>,
    pub setpoint_w: f64,
    pub max_charge_w: Option<f64>,
    pub max_discharge_w: Option<f64>,
    pub temp_c: Option<f64>,
    pub usable_wh: Option<f64>,
    /// Alarm bits (SunSpec 802 Evt1), 0 when none.
    pub alarms: u32,
    pub state: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BuildingStatus {
    pub power_w: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChargerStatus {
    pub id: String,
    /// IEC 61851 state as the charger reports it ("A", "B1", "C2", ...), or "unknown".
    pub state: String,
    /// Highest phase current, A.
    pub current_a: Option<f64>,
    /// The setpoint the plan wrote this cycle, A (0 = paused).
    pub setpoint_a: f64,
    pub power_w: Option<f64>,
    pub phases: u8,
    pub rating_a: f64,
    /// Energy of the running session, Wh, and its green share %, from the ledger.
    pub session_wh: Option<f64>,
    pub session_green_pct: Option<f64>,
    pub mode: String,
    /// The session's departure and energy wish and whether the plan meets it (planner only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wish: Option<crate::daemon::planning::WishStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceStatus {
    pub id: String,
    pub link: LinkState,
    pub last_ok: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub errors_total: u64,
    /// Why a device that answers is not trusted (e.g. meters that disagree), if it is not.
    pub warning: Option<String>,
}

/// Today's scorecard (`docs/reference-station.md`, section Scorecard), from the ledger.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TodayStatus {
    pub pv_kwh: f64,
    pub grid_import_kwh: f64,
    pub grid_export_kwh: f64,
    pub self_consumption_pct: f64,
    pub self_sufficiency_pct: f64,
    pub peak_import_kw: f64,
    pub ev_delivered_kwh: f64,
    pub ev_green_share_pct: f64,
    pub co2_kg: f64,
    pub co2_avoided_kg: f64,
    pub cost_cny: f64,
}

/// Everything the last cycle published.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub station: String,
    /// IANA time zone of the site (tariff periods are local times in it).
    pub timezone: String,
    /// Station time of the cycle (follows the simulator in the demo).
    pub time: DateTime<Utc>,
    pub cycle: u64,
    pub cycle_ms: f64,
    pub grid: GridStatus,
    pub pv: PvStatus,
    pub battery: BatteryStatus,
    pub building: BuildingStatus,
    pub chargers: Vec<ChargerStatus>,
    pub devices: Vec<DeviceStatus>,
    /// The reasons behind the last plan, in plain words.
    pub reasons: Vec<String>,
    pub today: TodayStatus,
}
