//! Turning the devices' last good readings into what one cycle observed: the dispatch
//! [`Snapshot`] (with staleness marks) and the [`Telemetry`] that only the status shows. This is
//! the one place a cycle walks the devices' readings; everything published is derived from its
//! result (see `publish`).
//!
//! A reading no older than `max_age` is fresh; an older one is stale; none at all is missing.
//! Dispatch treats stale and missing conservatively (see `dispatch`): unknown grid power puts
//! cars at their safe current, an unreachable charger counts at its full rating, and an unknown
//! battery is not used.

use super::device_set::{Device, DeviceReading, DeviceSet};
use crate::config::{ChargerSettings, DeviceRole, StationConfig};
use crate::devices::battery::{evt1, BatteryReading, BatteryState};
use crate::devices::charger::ChargerReading;
use crate::devices::link::LinkState;
use crate::devices::meter::MeterReading;
use crate::devices::pv::PvReading;
use crate::dispatch::{
    BatterySnapshot, ChargerId, ChargerSnapshot, ChargerState, GridSnapshot, HealthLimits,
    PvSnapshot, Reading, Snapshot,
};
use crate::units::{Amps, Percent, WattHours, Watts};
use std::time::Duration;

/// Model 802 has no temperature point; its BMS limits already derate by temperature, so
/// dispatch sees a nominal temperature unless the battery has 803/804 (module temperatures).
const NOMINAL_BATTERY_TEMP_C: f64 = 25.0;

/// What a cycle read that dispatch does not use, for the status only. Values are `None` unless
/// their reading is fresh.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Telemetry {
    /// Grid power per phase, W (> 0 import), where the meter gives it.
    pub grid_phase_w: [Option<f64>; 3],
    /// PV lifetime energy, Wh.
    pub pv_energy_wh: Option<f64>,
    /// The grid meter's import and export energy counters, Wh.
    pub grid_import_wh: Option<f64>,
    pub grid_export_wh: Option<f64>,
    /// The battery's `Evt1` bits as read.
    pub battery_events: u32,
    pub battery_state: Option<BatteryState>,
    /// Battery temperature, °C, where the device reports one.
    pub battery_temp_c: Option<f64>,
    /// What the battery health tracker takes from a fresh battery reading.
    pub battery_health: Option<crate::health::BatteryObservation>,
    /// Per charger of the snapshot (same order): the IEC 61851 state as the charger wrote it
    /// (`"D1"` where dispatch sees `D`).
    pub charger_iec_state: Vec<Option<&'static str>>,
    /// Per charger of the snapshot (same order): its energy meter, Wh.
    pub charger_energy_wh: Vec<Option<f64>>,
}

/// What one cycle observed: the dispatch snapshot and the telemetry beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub snapshot: Snapshot,
    pub telemetry: Telemetry,
}

/// How old a reading may be and still count as fresh.
pub fn max_age(config: &StationConfig, poll_interval: Duration) -> Duration {
    let cycle = Duration::from_secs_f64(config.policy.cycle_s.max(0.001));
    cycle.max(poll_interval) * config.stale_after_cycles
}

fn reading<T: Copy + Default>(value: T, fresh: bool) -> Reading<T> {
    if fresh {
        Reading::fresh(value)
    } else {
        Reading::stale(value)
    }
}

/// Build what the cycle observed from every device's last good reading, aged at
/// station-monotonic `mono`.
pub fn build(devices: &DeviceSet, config: &StationConfig, mono: Duration) -> Observation {
    let mut obs = Observation {
        snapshot: empty(devices.devices.len()),
        telemetry: Telemetry::default(),
    };
    for d in &devices.devices {
        let fresh = d
            .fresh(mono, max_age(config, d.config.endpoint.poll_interval))
            .is_some();
        let last = d.reading.as_ref().map(|(r, _)| r);
        match (&d.config.role, last) {
            (DeviceRole::GridMeter, Some(DeviceReading::Meter(m))) => grid(&mut obs, m, fresh),
            (DeviceRole::BuildingMeter, Some(DeviceReading::Meter(m))) => {
                obs.snapshot.building = reading(Watts(m.power_w), fresh);
            }
            (DeviceRole::Pv { rating_w, .. }, r) => {
                let p = match r {
                    Some(DeviceReading::Pv(p)) => Some(p),
                    _ => None,
                };
                pv(&mut obs, p, rating_w.unwrap_or(0.0), fresh);
            }
            (
                DeviceRole::Battery {
                    rating_w,
                    capacity_wh,
                    ..
                },
                Some(DeviceReading::Battery(b)),
            ) => {
                let online = fresh && d.link_state() == LinkState::Online;
                battery(
                    &mut obs,
                    b,
                    BatteryLimits {
                        // Required by the config: without it, 0 W.
                        pcs_w: rating_w.unwrap_or(0.0),
                        // A device that does not report its capacity: the configured one.
                        capacity_wh: b.capacity_wh.or(*capacity_wh),
                    },
                    fresh,
                    online,
                );
            }
            (DeviceRole::Charger(c), r) => charger(&mut obs, d, c, r, fresh),
            _ => {}
        }
    }
    obs
}

fn empty(devices: usize) -> Snapshot {
    Snapshot {
        grid: GridSnapshot {
            power: Reading::missing(),
            phase_power: Reading::missing(),
        },
        pv: PvSnapshot {
            power: Reading::missing(),
            rating: Watts::ZERO,
            limit: Percent(100.0),
        },
        battery: BatterySnapshot {
            online: false,
            soc: Reading::missing(),
            soh: Percent(100.0),
            power: Reading::missing(),
            max_charge: Watts::ZERO,
            max_discharge: Watts::ZERO,
            temperature_c: NOMINAL_BATTERY_TEMP_C,
            alarm: false,
            usable_capacity: WattHours(0.0),
            health: HealthLimits::default(),
        },
        building: Reading::missing(),
        chargers: Vec::with_capacity(devices),
    }
}

fn grid(obs: &mut Observation, m: &MeterReading, fresh: bool) {
    obs.snapshot.grid.power = reading(Watts(m.power_w), fresh);
    if let [Some(a), Some(b), Some(c)] = m.phase_w {
        obs.snapshot.grid.phase_power = reading([Watts(a), Watts(b), Watts(c)], fresh);
    }
    if fresh {
        obs.telemetry.grid_phase_w = m.phase_w;
        obs.telemetry.grid_import_wh = m.import_wh;
        obs.telemetry.grid_export_wh = m.export_wh;
    }
}

fn pv(obs: &mut Observation, p: Option<&PvReading>, configured_rating_w: f64, fresh: bool) {
    let s = &mut obs.snapshot.pv;
    s.rating = Watts(configured_rating_w);
    if let Some(p) = p {
        s.power = reading(Watts(p.power_w), fresh);
        if p.rating_w > 0.0 {
            s.rating = Watts(p.rating_w);
        }
        s.limit = Percent(p.limit_pct.unwrap_or(100.0));
        if fresh {
            obs.telemetry.pv_energy_wh = p.energy_wh;
        }
    }
}

/// What the config adds to a battery reading: the PCS rating and the capacity of a device
/// that does not report its own.
struct BatteryLimits {
    pcs_w: f64,
    capacity_wh: Option<f64>,
}

fn battery(
    obs: &mut Observation,
    b: &BatteryReading,
    limits: BatteryLimits,
    fresh: bool,
    online: bool,
) {
    let BatteryLimits { pcs_w, capacity_wh } = limits;
    let soh = b.soh_pct.unwrap_or(100.0);
    obs.snapshot.battery = BatterySnapshot {
        // Without a capacity the battery cannot be planned with, and a PCS that is not in an
        // operating state cannot follow a setpoint: either stays unused (and is told 0 W).
        online: online && capacity_wh.is_some() && b.state.is_none_or(BatteryState::is_operating),
        soc: reading(Percent(b.soc_pct), fresh),
        soh: Percent(soh),
        power: reading(Watts(b.power_w), fresh),
        max_charge: Watts(b.max_charge_w.unwrap_or(0.0).min(pcs_w)),
        max_discharge: Watts(b.max_discharge_w.unwrap_or(0.0).min(pcs_w)),
        temperature_c: b.cells.as_deref().map_or(NOMINAL_BATTERY_TEMP_C, |c| {
            dispatch_temperature(c.module_temp_min_c, c.module_temp_max_c)
        }),
        alarm: alarm(b),
        usable_capacity: WattHours(capacity_wh.unwrap_or(0.0) * soh / 100.0),
        health: HealthLimits::default(),
    };
    if fresh {
        obs.telemetry.battery_events = b.events;
        obs.telemetry.battery_state = b.state;
        obs.telemetry.battery_temp_c = b.cells.as_deref().map(|c| c.module_temp_max_c);
        obs.telemetry.battery_health = Some(health_observation(b));
    }
}

/// The health tracker's view of a battery reading: DC power from voltage x current, the
/// weakest cells from 804 (else 802), module temperatures from 804/803.
fn health_observation(b: &BatteryReading) -> crate::health::BatteryObservation {
    let cells = b.cells.as_deref();
    crate::health::BatteryObservation {
        soc_pct: b.soc_pct,
        ac_power_w: b.power_w,
        dc_power_w: b.voltage_v.zip(b.current_a).map(|(v, a)| v * a),
        bms_soh_pct: b.soh_pct,
        nameplate_wh: b.capacity_wh,
        cell_v_max: cells.and_then(|c| c.cell_v_max).or(b.cell_v_max),
        cell_v_min: cells.and_then(|c| c.cell_v_min).or(b.cell_v_min),
        module_temp_max_c: cells.map(|c| c.module_temp_max_c),
        module_temp_min_c: cells.map(|c| c.module_temp_min_c),
    }
}

/// The one temperature dispatch's limits check: the module farther from 25 C (the hottest
/// when it is warm, the coolest when it is cold), so neither end is missed.
pub fn dispatch_temperature(coolest_c: f64, hottest_c: f64) -> f64 {
    if hottest_c - NOMINAL_BATTERY_TEMP_C >= NOMINAL_BATTERY_TEMP_C - coolest_c {
        hottest_c
    } else {
        coolest_c
    }
}

/// Whether the battery reports an alarm that stops it: an `Evt1` alarm bit or the fault state.
fn alarm(b: &BatteryReading) -> bool {
    evt1::is_alarm(b.events) || matches!(b.state, Some(BatteryState::Fault))
}

fn charger(
    obs: &mut Observation,
    d: &Device,
    c: &ChargerSettings,
    r: Option<&DeviceReading>,
    fresh: bool,
) {
    let online = fresh && d.link_state() != LinkState::Offline;
    let read: Option<&ChargerReading> = match r {
        Some(DeviceReading::Charger(cr)) if fresh => Some(cr),
        _ => None,
    };
    let state = read.map_or(ChargerState::Unknown, |cr| {
        ChargerState::from_iec61851(cr.state.as_str())
    });
    obs.snapshot.chargers.push(ChargerSnapshot {
        id: ChargerId::new(&d.config.id),
        online,
        state,
        current: read.map_or([Amps::ZERO; 3], |cr| cr.current_a.map(Amps)),
        power: read.map_or(Watts::ZERO, |cr| Watts(cr.power_w)),
        phases: read
            .map(|cr| cr.phases)
            .filter(|p| *p == 1 || *p == 3)
            .unwrap_or(c.phases),
        min_current: Amps(c.min_a),
        rating: Amps(c.rating_a),
        safe_current: Amps(c.safe_current_a),
        plugged: state.can_charge(),
    });
    obs.telemetry
        .charger_iec_state
        .push(read.map(|cr| cr.state.as_str()));
    obs.telemetry
        .charger_energy_wh
        .push(read.and_then(|cr| cr.energy_wh));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::plant_io::snapshot_from_view;
    use station_sim::physics::Plant;
    use station_sim::scenario::Scenario;

    fn reading(events: u32) -> BatteryReading {
        BatteryReading {
            cells: None,
            cells_problem: None,
            soc_pct: 50.0,
            soh_pct: Some(72.0),
            soc_max_pct: None,
            soc_min_pct: None,
            capacity_wh: Some(500_000.0),
            max_charge_w: Some(100_000.0),
            max_discharge_w: Some(100_000.0),
            max_charge_a: None,
            max_discharge_a: None,
            voltage_v: None,
            current_a: None,
            power_w: 0.0,
            cell_v_max: None,
            cell_v_min: None,
            state: Some(BatteryState::Connected),
            events,
            cycles: None,
        }
    }

    #[test]
    fn the_daemon_and_the_backtest_classify_every_alarm_bit_the_same_way() {
        let mut view = Plant::new(&Scenario::reference(), 1).view();
        let mut alarms = 0;
        for bit in 0..32 {
            view.battery.alarms = 1 << bit;
            let backtest = snapshot_from_view(&view, 0.95).battery.alarm;
            let daemon = alarm(&reading(1 << bit));
            assert_eq!(daemon, backtest, "Evt1 bit {bit}");
            alarms += u32::from(daemon);
        }
        // The SunSpec 802 alarm and error bits, not the warnings.
        assert_eq!(alarms, 14);
        assert!(alarm(&reading(
            evt1::CONTACTOR_ERROR | evt1::OVER_TEMP_WARNING
        )));
        assert!(!alarm(&reading(
            evt1::OVER_TEMP_WARNING | evt1::UNDER_SOC_MIN_ALARM
        )));
    }
}
