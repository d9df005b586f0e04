//! Wire faults of a scenario replayed in process: what the daemon's drivers would make of a
//! device that stops answering, answers with exceptions, freezes or sends absurd values.
//!
//! The plant applies physics faults (`bms_alarm`) itself; the wire faults (`offline`,
//! `exception`, `frozen`, `bad_value`, `latency`) exist only on the Modbus side, so the closed
//! loop, which has no sockets, replays them on the [`Snapshot`] and on the commands:
//! * `offline` / `exception`: the device's readings keep their last values marked stale
//!   (a charger or the battery shows as offline) and writes to it are lost.
//! * `frozen`: the readings keep the values they had when the freeze began, still looking
//!   fresh (a driver cannot tell a frozen register image from a steady plant); writes work.
//! * `bad_value`: `soc_pct` / `soh_pct` outside 0..=100 and powers beyond 1.5 x the rating
//!   (or NaN) are refused as a driver would (the reading is missing); plausible values are
//!   passed on as read.
//! * `latency`: not replayed; a reply 1.5 s late is a reading one cycle older.

use crate::dispatch::{Freshness, Reading, Snapshot};
use crate::units::{Percent, Watts};
use chrono::{DateTime, Utc};
use station_sim::scenario::{FaultKind, Scenario};
use station_sim::view::Command;

/// A driver refuses a power beyond this multiple of the device's rating.
const POWER_RATING_MARGIN: f64 = 1.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Device {
    Pv,
    Battery,
    GridMeter,
    BuildingMeter,
    Charger(usize),
}

impl Device {
    fn parse(id: &str) -> Option<Device> {
        match id {
            "pv" => Some(Device::Pv),
            "battery" => Some(Device::Battery),
            "grid-meter" => Some(Device::GridMeter),
            "building-meter" => Some(Device::BuildingMeter),
            _ => {
                let n: usize = id.strip_prefix("charger-")?.parse().ok()?;
                n.checked_sub(1).map(Device::Charger)
            }
        }
    }

    fn of_command(c: &Command) -> Device {
        match c {
            Command::PvLimitPct(_) | Command::PvLimitEnabled(_) | Command::PvLimitRevertS(_) => {
                Device::Pv
            }
            Command::BatterySetpointW(_)
            | Command::BatterySetpointEnabled(_)
            | Command::BatterySetpointRevertS(_)
            | Command::BatterySocReserveMinPct(_) => Device::Battery,
            Command::ChargerSetpointA { index, .. }
            | Command::ChargerSafeCurrentA { index, .. }
            | Command::ChargerPhases { index, .. } => Device::Charger(*index),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Effect {
    Unreachable,
    Frozen,
    BadValue { point: String, value: f64 },
}

#[derive(Debug, Clone, PartialEq)]
struct Window {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    device: Device,
    effect: Effect,
}

/// The wire faults of one scenario and the readings they hold.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultReplay {
    windows: Vec<Window>,
    /// The snapshot handed to the dispatch core last cycle (after the faults).
    previous: Option<Snapshot>,
    active: Vec<(Device, Effect)>,
}

impl FaultReplay {
    /// The wire faults of `scenario`, or `None` when it has none (nothing to replay).
    pub fn from_scenario(scenario: &Scenario) -> Option<FaultReplay> {
        let windows: Vec<Window> = scenario
            .scheduled_faults()
            .into_iter()
            .filter_map(|f| {
                let device = Device::parse(&f.spec.device)?;
                let effect = match f.spec.kind {
                    FaultKind::Offline | FaultKind::Exception => Effect::Unreachable,
                    FaultKind::Frozen => Effect::Frozen,
                    FaultKind::BadValue => Effect::BadValue {
                        point: f.spec.point.clone()?,
                        value: f.spec.value?,
                    },
                    FaultKind::Latency | FaultKind::BmsAlarm => return None,
                };
                Some(Window {
                    start: f.start,
                    end: f.end,
                    device,
                    effect,
                })
            })
            .collect();
        (!windows.is_empty()).then_some(FaultReplay {
            windows,
            previous: None,
            active: Vec::new(),
        })
    }

    /// Apply the faults active at `now` to `snapshot` (which holds what the plant shows).
    pub fn apply(&mut self, now: DateTime<Utc>, snapshot: &mut Snapshot) {
        self.active.clear();
        for w in &self.windows {
            if now >= w.start && now < w.end {
                self.active.push((w.device, w.effect.clone()));
            }
        }
        for (device, effect) in &self.active {
            match effect {
                Effect::Unreachable => hold(snapshot, self.previous.as_ref(), *device, true),
                Effect::Frozen => hold(snapshot, self.previous.as_ref(), *device, false),
                Effect::BadValue { point, value } => bad_value(snapshot, *device, point, *value),
            }
        }
        match &mut self.previous {
            Some(p) if p.chargers.len() == snapshot.chargers.len() => p.clone_from(snapshot),
            p => *p = Some(snapshot.clone()),
        }
    }

    /// Whether a write of `command` reaches its device now (after [`FaultReplay::apply`]).
    pub fn delivers(&self, command: &Command) -> bool {
        let d = Device::of_command(command);
        !self
            .active
            .iter()
            .any(|(dev, e)| *dev == d && *e == Effect::Unreachable)
    }
}

fn stale<T: Copy>(now: Reading<T>, held: Option<Reading<T>>, unreachable: bool) -> Reading<T> {
    let held = held.unwrap_or(now);
    if unreachable {
        Reading {
            value: held.value,
            freshness: match held.freshness {
                Freshness::Missing => Freshness::Missing,
                _ => Freshness::Stale,
            },
        }
    } else {
        held
    }
}

/// Keep the device's previous readings: stale when unreachable, as they were when frozen.
fn hold(s: &mut Snapshot, prev: Option<&Snapshot>, device: Device, unreachable: bool) {
    match device {
        Device::GridMeter => {
            s.grid.power = stale(s.grid.power, prev.map(|p| p.grid.power), unreachable);
            s.grid.phase_power = stale(
                s.grid.phase_power,
                prev.map(|p| p.grid.phase_power),
                unreachable,
            );
        }
        Device::BuildingMeter => {
            s.building = stale(s.building, prev.map(|p| p.building), unreachable);
        }
        Device::Pv => {
            s.pv.power = stale(s.pv.power, prev.map(|p| p.pv.power), unreachable);
            if let Some(p) = prev {
                s.pv.limit = p.pv.limit;
            }
        }
        Device::Battery => {
            let b = &mut s.battery;
            b.soc = stale(b.soc, prev.map(|p| p.battery.soc), unreachable);
            b.power = stale(b.power, prev.map(|p| p.battery.power), unreachable);
            if let Some(p) = prev {
                b.max_charge = p.battery.max_charge;
                b.max_discharge = p.battery.max_discharge;
                b.alarm = p.battery.alarm;
                b.temperature_c = p.battery.temperature_c;
            }
            if unreachable {
                b.online = false;
            }
        }
        Device::Charger(i) => {
            let held = prev.and_then(|p| p.chargers.get(i)).cloned();
            if let Some(c) = s.chargers.get_mut(i) {
                if let Some(h) = held {
                    c.state = h.state;
                    c.current = h.current;
                    c.power = h.power;
                    c.plugged = h.plugged;
                }
                if unreachable {
                    c.online = false;
                }
            }
        }
    }
}

fn bad_value(s: &mut Snapshot, device: Device, point: &str, value: f64) {
    let pct_ok = value.is_finite() && (0.0..=100.0).contains(&value);
    let power = |rating: f64| {
        if value.is_finite() && value.abs() <= POWER_RATING_MARGIN * rating.abs() {
            Reading::fresh(Watts(value))
        } else {
            Reading::missing()
        }
    };
    match (device, point) {
        (Device::Battery, "soc_pct") => {
            s.battery.soc = if pct_ok {
                Reading::fresh(Percent(value))
            } else {
                Reading::missing()
            };
        }
        (Device::Battery, "soh_pct") if pct_ok => s.battery.soh = Percent(value),
        (Device::Battery, "power_w") => {
            let rating = s.battery.max_charge.0.max(s.battery.max_discharge.0);
            s.battery.power = power(rating);
        }
        (Device::Pv, "power_w") => s.pv.power = power(s.pv.rating.0),
        (Device::GridMeter, "power_w") => {
            // No rating on a meter: only non-finite values are refused.
            s.grid.power = if value.is_finite() {
                Reading::fresh(Watts(value))
            } else {
                Reading::missing()
            };
        }
        (Device::BuildingMeter, "power_w") => {
            s.building = if value.is_finite() {
                Reading::fresh(Watts(value))
            } else {
                Reading::missing()
            };
        }
        (Device::Charger(i), "power_w") => {
            if let Some(c) = s.chargers.get_mut(i) {
                if value.is_finite() {
                    c.power = Watts(value);
                }
            }
        }
        _ => {}
    }
}
