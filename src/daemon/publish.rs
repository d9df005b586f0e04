//! Everything a cycle publishes, derived from the one thing it observed and decided: the
//! [`Observation`] (dispatch snapshot + telemetry), the [`Plan`] and the devices' links. The
//! status, the history sample, the ledger's input and (through the status) the metrics all come
//! from here, so they never disagree about what the cycle saw.
//!
//! Only fresh readings are shown; a missing or stale one is `None` (`null` in JSON).

use super::history::Sample;
use super::snapshot::Observation;
use super::status::{
    BatteryStatus, BuildingStatus, ChargerStatus, DeviceStatus, GridStatus, PvStatus,
};
use crate::dispatch::{ChargeMode, ChargerState, Plan, Policy};
use crate::ledger::ChargerInput;

/// Which device kinds the station has (a station without PV has 0 W of it; one whose PV is
/// unread has no value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fitted {
    pub pv: bool,
    pub battery: bool,
}

/// One cycle's inputs to everything it publishes.
pub struct CycleView<'a> {
    pub observed: &'a Observation,
    pub plan: &'a Plan,
    pub policy: &'a Policy,
    pub fitted: Fitted,
}

/// The measured powers of one cycle, W; `None` where not measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Powers {
    pub grid_w: Option<f64>,
    pub pv_w: Option<f64>,
    pub battery_w: Option<f64>,
    pub building_w: Option<f64>,
    /// Sum over chargers, only when every charger was read.
    pub vehicles_w: Option<f64>,
}

impl CycleView<'_> {
    /// The measured powers, as the history, the status and the ledger see them.
    pub fn powers(&self) -> Powers {
        let s = &self.observed.snapshot;
        let known = s.chargers.iter().all(|c| c.state != ChargerState::Unknown);
        Powers {
            grid_w: s.grid.power.fresh_value().map(|w| w.value()),
            pv_w: s.pv.power.fresh_value().map(|w| w.value()),
            battery_w: s.battery.power.fresh_value().map(|w| w.value()),
            building_w: s.building.fresh_value().map(|w| w.value()),
            vehicles_w: known.then(|| s.chargers.iter().map(|c| c.power.value()).sum()),
        }
    }

    pub fn history_sample(&self) -> Sample {
        let p = self.powers();
        Sample {
            grid_w: p.grid_w,
            pv_w: p.pv_w,
            battery_w: p.battery_w,
            vehicles_w: p.vehicles_w,
            building_w: p.building_w,
        }
    }

    /// The ledger's per-flow input, or `None` unless every flow is measured (nothing is
    /// invented). Returns `(pv, building, battery, grid)` W and the chargers.
    pub fn ledger_flows(&self) -> Option<(LedgerPowers, Vec<ChargerInput<'_>>)> {
        let p = self.powers();
        let pv = if self.fitted.pv { p.pv_w? } else { 0.0 };
        let battery = if self.fitted.battery {
            p.battery_w?
        } else {
            0.0
        };
        p.vehicles_w?;
        let chargers = self
            .observed
            .snapshot
            .chargers
            .iter()
            .map(|c| ChargerInput {
                id: c.id.as_str(),
                power_w: c.power.value(),
                plugged: c.plugged,
            })
            .collect();
        let powers = LedgerPowers {
            pv_w: pv,
            building_w: p.building_w?,
            battery_w: battery,
            grid_w: p.grid_w?,
        };
        Some((powers, chargers))
    }

    pub fn grid(&self) -> GridStatus {
        let s = &self.observed.snapshot.grid;
        GridStatus {
            power_w: s.power.fresh_value().map(|w| w.value()),
            phase_w: self.observed.telemetry.grid_phase_w,
            import_limit_w: self.policy.grid.import_limit.value(),
            export_limit_w: self.policy.grid.export_limit.value(),
            fresh: s.power.is_fresh(),
        }
    }

    pub fn pv(&self) -> PvStatus {
        let s = &self.observed.snapshot.pv;
        let fresh = s.power.is_fresh();
        PvStatus {
            power_w: s.power.fresh_value().map(|w| w.value()),
            rating_w: fresh.then_some(s.rating.value()),
            limit_pct: self.plan.pv_limit.value(),
            energy_wh: self.observed.telemetry.pv_energy_wh,
        }
    }

    pub fn battery(&self) -> BatteryStatus {
        let b = &self.observed.snapshot.battery;
        let t = &self.observed.telemetry;
        let fresh = b.soc.is_fresh();
        BatteryStatus {
            soc_pct: b.soc.fresh_value().map(|p| p.value()),
            soh_pct: fresh.then_some(b.soh.value()),
            power_w: b.power.fresh_value().map(|w| w.value()),
            setpoint_w: self.plan.battery.value(),
            max_charge_w: fresh.then_some(b.max_charge.value()),
            max_discharge_w: fresh.then_some(b.max_discharge.value()),
            temp_c: t.battery_temp_c,
            usable_wh: fresh.then_some(b.usable_capacity.value()),
            alarms: t.battery_events,
            state: t.battery_state.map(|s| format!("{s:?}").to_lowercase()),
        }
    }

    pub fn building(&self) -> BuildingStatus {
        BuildingStatus {
            power_w: self.powers().building_w,
        }
    }

    /// One card per charger; `session` gives the open session's energy and green share.
    pub fn chargers(&self, session: impl Fn(&str) -> Option<(f64, f64)>) -> Vec<ChargerStatus> {
        let s = &self.observed.snapshot;
        let iec = &self.observed.telemetry.charger_iec_state;
        s.chargers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let read = c.state != ChargerState::Unknown;
                let open = session(c.id.as_str());
                ChargerStatus {
                    id: c.id.to_string(),
                    state: iec
                        .get(i)
                        .copied()
                        .flatten()
                        .unwrap_or("unknown")
                        .to_string(),
                    current_a: read
                        .then(|| c.current.iter().map(|a| a.value()).fold(0.0, f64::max)),
                    setpoint_a: self
                        .plan
                        .chargers
                        .iter()
                        .find(|p| p.id == c.id)
                        .map_or(0.0, |p| p.amps.value()),
                    power_w: read.then_some(c.power.value()),
                    phases: c.phases,
                    rating_a: c.rating.value(),
                    session_wh: open.map(|o| o.0),
                    session_green_pct: open.map(|o| o.1),
                    mode: mode_name(self.policy.vehicles.for_charger(c.id.as_str()).mode)
                        .to_string(),
                }
            })
            .collect()
    }
}

/// The ledger's station-level powers of one cycle, W.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LedgerPowers {
    pub pv_w: f64,
    pub building_w: f64,
    pub battery_w: f64,
    pub grid_w: f64,
}

/// A charge mode as the API and the dashboard name it.
pub fn mode_name(m: ChargeMode) -> &'static str {
    match m {
        ChargeMode::Fast => "fast",
        ChargeMode::Solar => "solar",
        ChargeMode::MinSolar => "min_solar",
    }
}

/// The devices' links as the status shows them.
pub fn links(devices: &super::device_set::DeviceSet) -> Vec<DeviceStatus> {
    devices.devices.iter().map(|d| d.status()).collect()
}
