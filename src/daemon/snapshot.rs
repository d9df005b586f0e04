//! Turning the devices' last good readings into the dispatch [`Snapshot`], with staleness marks.
//!
//! A reading no older than `max_age` is fresh; an older one is stale; none at all is missing.
//! Dispatch treats stale and missing conservatively (see `dispatch`): unknown grid power puts
//! cars at their safe current, an unreachable charger counts at its full rating, and an unknown
//! battery is not used.

use super::device_set::{DeviceReading, DeviceSet};
use crate::config::{DeviceRole, StationConfig};
use crate::daemon::status::LinkState;
use crate::devices::battery::BatteryState;
use crate::devices::charger::Mode3;
use crate::dispatch::{
    BatterySnapshot, ChargerId, ChargerSnapshot, ChargerState, GridSnapshot, PvSnapshot, Reading,
    Snapshot,
};
use crate::units::{Amps, Percent, WattHours, Watts};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// SunSpec 802 `Evt1` bits that are alarms (not warnings, and not the SoC-end flags the BMS
/// limits already handle): comm error, over/under temperature, over charge/discharge current,
/// over/under voltage, temperature imbalance, contactor, fan, ground fault, door, other,
/// configuration.
pub const BATTERY_ALARM_MASK: u32 = (1 << 0)
    | (1 << 1)
    | (1 << 3)
    | (1 << 5)
    | (1 << 7)
    | (1 << 9)
    | (1 << 11)
    | (1 << 18)
    | (1 << 20)
    | (1 << 21)
    | (1 << 22)
    | (1 << 23)
    | (1 << 25)
    | (1 << 28);

/// Model 802 has no temperature point; its BMS limits already derate by temperature, so
/// dispatch sees a nominal temperature.
const NOMINAL_BATTERY_TEMP_C: f64 = 25.0;

/// Map the charger's IEC 61851 state into dispatch's.
pub fn charger_state(m: Mode3) -> ChargerState {
    match m {
        Mode3::A => ChargerState::A,
        Mode3::B1 => ChargerState::B1,
        Mode3::B2 => ChargerState::B2,
        Mode3::C1 => ChargerState::C1,
        Mode3::C2 => ChargerState::C2,
        Mode3::D1 | Mode3::D2 => ChargerState::D,
        Mode3::E => ChargerState::E,
        Mode3::F => ChargerState::F,
    }
}

/// How old a reading may be and still count as fresh.
pub fn max_age(config: &StationConfig, poll_interval: Duration) -> Duration {
    let cycle = Duration::from_secs_f64(config.policy.cycle_s.max(0.001));
    cycle.max(poll_interval) * config.stale_after_cycles
}

fn reading<T: Copy + Default>(value: Option<(T, bool)>) -> Reading<T> {
    match value {
        Some((v, true)) => Reading::fresh(v),
        Some((v, false)) => Reading::stale(v),
        None => Reading::missing(),
    }
}

/// Build the snapshot dispatch decides on.
pub fn build(devices: &DeviceSet, config: &StationConfig, now: DateTime<Utc>) -> Snapshot {
    let mut grid = GridSnapshot {
        power: Reading::missing(),
        phase_power: Reading::missing(),
    };
    let mut pv = PvSnapshot {
        power: Reading::missing(),
        rating: Watts::ZERO,
        limit: Percent(100.0),
    };
    let mut battery = BatterySnapshot {
        online: false,
        soc: Reading::missing(),
        soh: Percent(100.0),
        power: Reading::missing(),
        max_charge: Watts::ZERO,
        max_discharge: Watts::ZERO,
        temperature_c: NOMINAL_BATTERY_TEMP_C,
        alarm: false,
        usable_capacity: WattHours(0.0),
    };
    let mut building = Reading::missing();
    let mut chargers = Vec::with_capacity(devices.devices.len());

    for d in &devices.devices {
        let age_limit = max_age(config, d.config.endpoint.poll_interval);
        let fresh = d.fresh(now, age_limit).is_some();
        let last = d.reading.as_ref().map(|(r, _)| r);
        match (&d.config.role, last) {
            (DeviceRole::GridMeter, Some(DeviceReading::Meter(m))) => {
                grid.power = reading(Some((Watts(m.power_w), fresh)));
                if let [Some(a), Some(b), Some(c)] = m.phase_w {
                    grid.phase_power = reading(Some(([Watts(a), Watts(b), Watts(c)], fresh)));
                }
            }
            (DeviceRole::BuildingMeter, Some(DeviceReading::Meter(m))) => {
                building = reading(Some((Watts(m.power_w), fresh)));
            }
            (DeviceRole::Pv { rating_w, .. }, r) => {
                let configured = rating_w.unwrap_or(0.0);
                match r {
                    Some(DeviceReading::Pv(p)) => {
                        pv.power = reading(Some((Watts(p.power_w), fresh)));
                        pv.rating = Watts(if p.rating_w > 0.0 {
                            p.rating_w
                        } else {
                            configured
                        });
                        pv.limit = Percent(p.limit_pct.unwrap_or(100.0));
                    }
                    _ => pv.rating = Watts(configured),
                }
            }
            (DeviceRole::Battery { rating_w, .. }, Some(DeviceReading::Battery(b))) => {
                let pcs = rating_w.unwrap_or(f64::INFINITY);
                let soh = b.soh_pct.unwrap_or(100.0);
                battery.online = fresh && d.link_state() == LinkState::Online;
                battery.soc = reading(Some((Percent(b.soc_pct), fresh)));
                battery.soh = Percent(soh);
                battery.power = reading(Some((Watts(b.power_w), fresh)));
                battery.max_charge = Watts(b.max_charge_w.unwrap_or(0.0).min(pcs));
                battery.max_discharge = Watts(b.max_discharge_w.unwrap_or(0.0).min(pcs));
                battery.alarm = b.events & BATTERY_ALARM_MASK != 0
                    || matches!(b.state, Some(BatteryState::Fault));
                // Without a capacity the battery cannot be planned with: it stays unused.
                battery.usable_capacity = WattHours(b.capacity_wh.unwrap_or(0.0) * soh / 100.0);
                if b.capacity_wh.is_none() {
                    battery.online = false;
                }
            }
            (DeviceRole::Charger(c), r) => {
                let online = fresh && d.link_state() != LinkState::Offline;
                let (state, current, power, phases) = match r {
                    Some(DeviceReading::Charger(cr)) if fresh => (
                        charger_state(cr.state),
                        [
                            Amps(cr.current_a[0]),
                            Amps(cr.current_a[1]),
                            Amps(cr.current_a[2]),
                        ],
                        Watts(cr.power_w),
                        if cr.phases == 1 || cr.phases == 3 {
                            cr.phases
                        } else {
                            c.phases
                        },
                    ),
                    _ => (
                        ChargerState::Unknown,
                        [Amps::ZERO; 3],
                        Watts::ZERO,
                        c.phases,
                    ),
                };
                chargers.push(ChargerSnapshot {
                    id: ChargerId::new(&d.config.id),
                    online,
                    state,
                    current,
                    power,
                    phases,
                    min_current: Amps(c.min_a),
                    rating: Amps(c.rating_a),
                    safe_current: Amps(c.safe_current_a),
                    plugged: matches!(
                        state,
                        ChargerState::B1
                            | ChargerState::B2
                            | ChargerState::C1
                            | ChargerState::C2
                            | ChargerState::D
                    ),
                });
            }
            _ => {}
        }
    }
    Snapshot {
        grid,
        pv,
        battery,
        building,
        chargers,
    }
}
