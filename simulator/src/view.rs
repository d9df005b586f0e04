//! The contract between the plant physics (`physics`) and the devices on the wire (`wire`).
//!
//! The physics produces a [`StationView`] (what every device would show on its registers) and
//! accepts [`Command`]s (what a controller wrote into a device's control registers). The wire
//! layer renders views into register images and turns register writes into commands; it never
//! touches the physics directly. The runtime glues both together through the [`Station`] trait.
//!
//! Sign convention (the project's one convention): grid power > 0 is import, battery power > 0
//! is discharge, PV power > 0 is generation, loads > 0 consume.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// Operating state of the PV inverter, numbered as SunSpec model 103 `St`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PvStatus {
    Off = 1,
    Sleeping = 2,
    Mppt = 4,
    Throttled = 5,
    Fault = 7,
    Standby = 8,
}

/// What the PV inverter shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PvView {
    /// AC rating of the inverter, W (model 120 `WRtg`).
    pub rating_w: f64,
    /// AC output power now, W (> 0 generation).
    pub power_w: f64,
    /// DC input power, W.
    pub dc_power_w: f64,
    /// What the array could deliver now without any limit, W (truth only, not on the wire).
    pub available_w: f64,
    /// Lifetime AC energy, Wh (model 103 `WH`).
    pub energy_wh: f64,
    /// Active-power limit, % of `rating_w` (model 123 `WMaxLimPct`).
    pub limit_pct: f64,
    /// Whether the limit is enabled (model 123 `WMaxLim_Ena`).
    pub limit_enabled: bool,
    /// Revert timeout of the limit, s; 0 = never reverts (model 123 `WMaxLimPct_RvrtTms`).
    pub limit_revert_s: u32,
    pub status: PvStatus,
    /// Phase-to-neutral voltage, V, and line current per phase, A.
    pub voltage_v: [f64; 3],
    pub current_a: [f64; 3],
    pub frequency_hz: f64,
    pub cabinet_temp_c: f64,
}

/// Battery state, numbered as SunSpec model 802 `State`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BatteryState {
    Disconnected = 1,
    Connected = 3,
    Standby = 4,
    SocProtection = 5,
    Fault = 99,
}

/// Bits of SunSpec model 802 `Evt1` used by the simulator.
pub mod battery_alarm {
    pub const COMM_ERROR: u32 = 1 << 0;
    pub const OVER_TEMP_ALARM: u32 = 1 << 1;
    pub const OVER_TEMP_WARNING: u32 = 1 << 2;
    pub const UNDER_TEMP_ALARM: u32 = 1 << 3;
    pub const UNDER_TEMP_WARNING: u32 = 1 << 4;
    pub const OVER_CHARGE_CURRENT_ALARM: u32 = 1 << 5;
    pub const OVER_DISCHARGE_CURRENT_ALARM: u32 = 1 << 7;
    pub const OVER_VOLT_ALARM: u32 = 1 << 9;
    pub const UNDER_VOLT_ALARM: u32 = 1 << 11;
    pub const UNDER_SOC_MIN_WARNING: u32 = 1 << 13;
    pub const OVER_SOC_MAX_WARNING: u32 = 1 << 15;
    pub const VOLTAGE_IMBALANCE_WARNING: u32 = 1 << 17;
    pub const CONTACTOR_ERROR: u32 = 1 << 20;
    pub const GROUND_FAULT: u32 = 1 << 22;
}

/// What the battery (BMS + PCS) shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatteryView {
    /// Nameplate energy of the pack when new, Wh (model 802 `WHRtg`).
    pub nameplate_wh: f64,
    /// Usable energy now = nameplate x the true SoH, Wh (truth only, not on the wire).
    pub usable_wh: f64,
    pub soc_pct: f64,
    /// SoH as the BMS reports it (model 802 `SoH`), %: may be biased and stale.
    pub soh_pct: f64,
    /// The pack's true SoH, % (truth only).
    pub true_soh_pct: f64,
    /// The BMS's SoC window now, narrowed by the cell spread, % (truth only).
    pub soc_min_pct: f64,
    pub soc_max_pct: f64,
    /// Energy between the window's ends at the true capacity, Wh (truth only).
    pub window_wh: f64,
    /// Cell spread at mid SoC, mV (truth only; the wire shows max/min cells).
    pub imbalance_mv: f64,
    /// Modules in the pack's one string and cells in series per module (models 803/804).
    pub modules: u16,
    pub cells_per_module: u16,
    /// Modules (1-based) holding the highest and the lowest cell (803/804 `*Mod`).
    pub cell_v_max_module: u16,
    pub cell_v_min_module: u16,
    /// Hottest and coolest module temperature, C, and their modules (803/804 `ModTmp*`).
    pub module_temp_max_c: f64,
    pub module_temp_max_module: u16,
    pub module_temp_min_c: f64,
    pub module_temp_min_module: u16,
    /// Power at the PCS AC side now, W (> 0 discharge).
    pub power_w: f64,
    /// Power setpoint the PCS is following, W (> 0 discharge); 0 when idle or reverted.
    pub setpoint_w: f64,
    /// Whether the watt setpoint is enabled (model 704 `WSetEna`).
    pub setpoint_enabled: bool,
    /// Revert timeout of the setpoint, s (model 704 `WSetRvrtTms`); 0 = never reverts.
    pub setpoint_revert_s: u32,
    /// PCS rating, W.
    pub pcs_rating_w: f64,
    /// BMS power limits now, W, both >= 0 (model 802 `WChaRteMax`, `WDisChaRteMax`):
    /// already derated by SoC, temperature, cell voltage, C-rate cap and alarms.
    pub max_charge_w: f64,
    pub max_discharge_w: f64,
    /// BMS current limits now, A, both >= 0 (model 802 `AChaMax`, `ADisChaMax`).
    pub max_charge_a: f64,
    pub max_discharge_a: f64,
    /// DC bus voltage V, DC current A (> 0 discharge).
    pub voltage_v: f64,
    pub current_a: f64,
    pub cell_v_max: f64,
    pub cell_v_min: f64,
    pub temp_c: f64,
    pub state: BatteryState,
    /// Model 802 `Evt1` bitfield, see [`battery_alarm`].
    pub alarms: u32,
    /// Cycle count (model 802 `NCyc`): equivalent full cycles so far, rounded down.
    pub cycles: u32,
    /// Minimum reserve SoC, % (model 802 `SoCRsvMin`, writable).
    pub soc_reserve_min_pct: f64,
}

/// What a SunSpec model 203 meter shows. Total and per-phase power share one sign convention
/// given by where the meter sits (grid meter: > 0 import; building meter: > 0 consumption).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeterView {
    pub power_w: f64,
    pub phase_w: [f64; 3],
    pub voltage_v: [f64; 3],
    pub current_a: [f64; 3],
    pub frequency_hz: f64,
    /// Lifetime energy imported (flowing in the > 0 direction), Wh.
    pub import_wh: f64,
    /// Lifetime energy exported (flowing in the < 0 direction), Wh.
    pub export_wh: f64,
}

/// IEC 61851 mode-3 states as the Alfen socket shows them at register 1201.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Mode3State {
    A,
    B1,
    B2,
    C1,
    C2,
    D1,
    D2,
    E,
    F,
}

impl Mode3State {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode3State::A => "A",
            Mode3State::B1 => "B1",
            Mode3State::B2 => "B2",
            Mode3State::C1 => "C1",
            Mode3State::C2 => "C2",
            Mode3State::D1 => "D1",
            Mode3State::D2 => "D2",
            Mode3State::E => "E",
            Mode3State::F => "F",
        }
    }
}

/// The car plugged into a charger (truth only, not on the wire).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VehicleView {
    pub kind: String,
    pub battery_wh: f64,
    pub soc_pct: f64,
    pub target_soc_pct: f64,
    pub onboard_max_a: f64,
    /// Phases the on-board charger uses, 1 or 3 (a charger sees it as current on one phase).
    pub phases: u8,
    pub arrived: DateTime<Utc>,
    pub departs: DateTime<Utc>,
    /// Energy delivered in this session so far, Wh.
    pub session_wh: f64,
    /// Energy still wanted to reach the target, Wh.
    pub wanted_wh: f64,
}

/// What an Alfen NG9xx socket (unit 1) and its station (unit 200) show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChargerView {
    pub id: String,
    /// 1 or 3.
    pub phases: u8,
    /// Hardware rating per phase, A.
    pub rating_a: f64,
    pub state: Mode3State,
    pub voltage_v: [f64; 3],
    pub current_a: [f64; 3],
    pub power_w: f64,
    /// Lifetime energy delivered, Wh.
    pub energy_wh: f64,
    /// The max current the charger applies now (register 1206), A.
    pub applied_max_a: f64,
    /// The last max-current setpoint written (register 1210), A.
    pub setpoint_a: f64,
    /// Safe current used when the setpoint is not refreshed (register 1212), A.
    pub safe_current_a: f64,
    /// Validity time of a setpoint, s.
    pub validity_s: u32,
    /// Remaining validity of the current setpoint, s (register 1208); 0 = fallen back to safe.
    pub remaining_validity_s: u32,
    pub temperature_c: f64,
    pub vehicle: Option<VehicleView>,
}

/// Everything every device shows at one instant of simulated time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StationView {
    pub sim_time: DateTime<Utc>,
    pub pv: PvView,
    pub battery: BatteryView,
    /// Grid connection meter (> 0 import).
    pub grid_meter: MeterView,
    /// Dealership building meter (> 0 consumption).
    pub building_meter: MeterView,
    pub chargers: Vec<ChargerView>,
}

/// A write a controller made into a device's control registers, already range-checked by the
/// wire layer. The physics applies it at its current simulated time (revert timers start then).
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Model 123 `WMaxLimPct`, % of rating, 0..=100.
    PvLimitPct(f64),
    /// Model 123 `WMaxLim_Ena`.
    PvLimitEnabled(bool),
    /// Model 123 `WMaxLimPct_RvrtTms`, s.
    PvLimitRevertS(u32),
    /// Model 704 `WSet`, W (> 0 discharge), within +-PCS rating.
    BatterySetpointW(f64),
    /// Model 704 `WSetEna`.
    BatterySetpointEnabled(bool),
    /// Model 704 `WSetRvrtTms`, s.
    BatterySetpointRevertS(u32),
    /// Model 802 `SoCRsvMin`, %.
    BatterySocReserveMinPct(f64),
    /// Alfen 1210 max current setpoint, A (>= 0) for charger `index` (0-based).
    ChargerSetpointA { index: usize, amps: f64 },
    /// Alfen 1212 safe current, A (>= 0).
    ChargerSafeCurrentA { index: usize, amps: f64 },
    /// Alfen 1215 phases, 1 or 3.
    ChargerPhases { index: usize, phases: u8 },
}

/// Why the physics refused a [`Command`]: the value is out of range for the device now. The
/// wire layer answers such a write with Modbus exception 3 (illegal data value).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    /// A numeric value outside the device's range, e.g. `battery setpoint W 2e5 outside
    /// -120000..=120000`.
    #[error("{field} {value} outside {lo}..={hi}")]
    OutOfRange {
        field: &'static str,
        value: f64,
        lo: f64,
        hi: f64,
    },
    /// A charger index the station does not have (0-based).
    #[error("charger index {index} outside 0..{count}")]
    NoSuchCharger { index: usize, count: usize },
    /// A phase count other than 1 or 3.
    #[error("charger phases {phases} must be 1 or 3")]
    Phases { phases: u8 },
}

/// A device id as `docs/reference-station.md` names it (`pv`, `battery`, `charger-3`, ...).
pub type DeviceId = String;

/// Wire-level faults active on one device right now (the runtime resolves expiry).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WireFaults {
    /// Accept and drop connections, answer nothing.
    pub offline: bool,
    /// Delay every reply by this much.
    pub latency: Option<Duration>,
    /// Answer every request with this Modbus exception code.
    pub exception: Option<u8>,
    /// Keep serving the register image as of when the freeze began.
    pub frozen: bool,
    /// Override named points before rendering (`"soc_pct"`, `"soh_pct"`, `"power_w"`, ...);
    /// NaN is allowed and renders as the SunSpec "not implemented" marker on integer points.
    pub bad_values: Vec<(String, f64)>,
}

/// What the wire layer needs from the running station.
pub trait Station: Send + Sync + 'static {
    /// The latest view of every device.
    fn view(&self) -> Arc<StationView>;
    /// Apply a control write. Errors mean the value is out of range for the device now.
    fn apply(&self, command: Command) -> Result<(), CommandError>;
    /// Wire faults active on `device` now.
    fn wire_faults(&self, device: &str) -> WireFaults;
}
