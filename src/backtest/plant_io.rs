//! The glue between the simulator's plant and the dispatch core, for in-process backtests:
//! a [`StationView`] becomes a dispatch [`Snapshot`] (every reading fresh, as if read over
//! Modbus a moment ago) and a [`Plan`] becomes plant [`Command`]s.
//!
//! Both directions reuse their buffers: [`SnapshotBuilder::update`] overwrites the snapshot of
//! the previous cycle in place (charger ids are allocated once), and [`plan_commands`] appends
//! to a caller-owned vector, so a closed loop allocates nothing per cycle on this side.

use crate::dispatch::{
    BatterySnapshot, ChargerId, ChargerSnapshot, ChargerState, GridSnapshot, Plan, PvSnapshot,
    Reading, Snapshot,
};
use crate::units::{Amps, Percent, WattHours, Watts};
use station_sim::view::{battery_alarm, BatteryState, Command, Mode3State, StationView};

/// IEC 61851 minimum current every simulated charger can offer, A.
pub const CHARGER_MIN_CURRENT_A: f64 = 6.0;

/// SunSpec model 802 `Evt1` bits that are alarms (the BMS stops or the data is unusable);
/// the other bits the simulator sets are warnings and do not idle the battery.
pub const BATTERY_ALARM_MASK: u32 = battery_alarm::COMM_ERROR
    | battery_alarm::OVER_TEMP_ALARM
    | battery_alarm::UNDER_TEMP_ALARM
    | battery_alarm::OVER_CHARGE_CURRENT_ALARM
    | battery_alarm::OVER_DISCHARGE_CURRENT_ALARM
    | battery_alarm::OVER_VOLT_ALARM
    | battery_alarm::UNDER_VOLT_ALARM
    | battery_alarm::CONTACTOR_ERROR
    | battery_alarm::GROUND_FAULT;

/// The dispatch core's view of a mode-3 state (D1 and D2 are both `D`).
pub fn charger_state(s: Mode3State) -> ChargerState {
    match s {
        Mode3State::A => ChargerState::A,
        Mode3State::B1 => ChargerState::B1,
        Mode3State::B2 => ChargerState::B2,
        Mode3State::C1 => ChargerState::C1,
        Mode3State::C2 => ChargerState::C2,
        Mode3State::D1 | Mode3State::D2 => ChargerState::D,
        Mode3State::E => ChargerState::E,
        Mode3State::F => ChargerState::F,
    }
}

/// Keeps one [`Snapshot`] and refreshes it from each new [`StationView`].
#[derive(Debug, Clone, Default)]
pub struct SnapshotBuilder {
    snapshot: Option<Snapshot>,
}

impl SnapshotBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The snapshot of `view`, every reading fresh. The returned reference stays valid until
    /// the next call.
    pub fn update(&mut self, view: &StationView) -> &Snapshot {
        let snap = self.snapshot.get_or_insert_with(|| empty_snapshot(view));
        fill_snapshot(view, snap);
        snap
    }

    /// The snapshot built by the last [`SnapshotBuilder::update`], if any.
    pub fn last(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// Mutable access to the last snapshot (to mark readings stale for fault replays).
    pub fn last_mut(&mut self) -> Option<&mut Snapshot> {
        self.snapshot.as_mut()
    }
}

/// A fresh snapshot of `view` (allocates; closed loops use [`SnapshotBuilder`]).
pub fn snapshot_from_view(view: &StationView) -> Snapshot {
    let mut snap = empty_snapshot(view);
    fill_snapshot(view, &mut snap);
    snap
}

fn empty_snapshot(view: &StationView) -> Snapshot {
    let mut s = Snapshot::reference_idle(0);
    s.chargers = view
        .chargers
        .iter()
        .map(|c| ChargerSnapshot {
            id: ChargerId::new(&c.id),
            online: true,
            state: ChargerState::Unknown,
            current: [Amps::ZERO; 3],
            power: Watts::ZERO,
            phases: c.phases,
            min_current: Amps(CHARGER_MIN_CURRENT_A),
            rating: Amps(c.rating_a),
            safe_current: Amps(c.safe_current_a),
            plugged: false,
        })
        .collect();
    s
}

fn fill_snapshot(view: &StationView, s: &mut Snapshot) {
    s.grid = GridSnapshot {
        power: Reading::fresh(Watts(view.grid_meter.power_w)),
        phase_power: Reading::fresh(view.grid_meter.phase_w.map(Watts)),
    };
    let pv = &view.pv;
    s.pv = PvSnapshot {
        power: Reading::fresh(Watts(pv.power_w)),
        rating: Watts(pv.rating_w),
        limit: Percent(if pv.limit_enabled {
            pv.limit_pct
        } else {
            100.0
        }),
    };
    let b = &view.battery;
    s.battery = BatterySnapshot {
        online: b.state != BatteryState::Disconnected,
        soc: Reading::fresh(Percent(b.soc_pct)),
        soh: Percent(b.soh_pct),
        power: Reading::fresh(Watts(b.power_w)),
        max_charge: Watts(b.max_charge_w),
        max_discharge: Watts(b.max_discharge_w),
        temperature_c: b.temp_c,
        alarm: b.alarms & BATTERY_ALARM_MASK != 0,
        usable_capacity: WattHours(b.usable_wh),
    };
    s.building = Reading::fresh(Watts(view.building_meter.power_w));
    if s.chargers.len() != view.chargers.len() {
        *s = empty_snapshot(view);
        fill_snapshot(view, s);
        return;
    }
    for (cs, cv) in s.chargers.iter_mut().zip(&view.chargers) {
        if cs.id.as_str() != cv.id {
            cs.id = ChargerId::new(&cv.id);
        }
        cs.online = true;
        cs.state = charger_state(cv.state);
        cs.current = cv.current_a.map(Amps);
        cs.power = Watts(cv.power_w);
        cs.phases = cv.phases;
        cs.min_current = Amps(CHARGER_MIN_CURRENT_A);
        cs.rating = Amps(cv.rating_a);
        cs.safe_current = Amps(cv.safe_current_a);
        cs.plugged = cv.vehicle.is_some();
    }
}

/// Append the commands that carry out `plan` on a plant whose PCS is rated `pcs_rating_w`:
/// one `ChargerSetpointA` per charger (every cycle, which also refreshes the setpoint's
/// validity), the battery setpoint (clamped to the PCS rating), and the PV limit (enabled
/// only below 100 %).
pub fn plan_commands(plan: &Plan, pcs_rating_w: f64, out: &mut Vec<Command>) {
    for (index, sp) in plan.chargers.iter().enumerate() {
        out.push(Command::ChargerSetpointA {
            index,
            amps: sp.amps.0.max(0.0),
        });
    }
    let battery_w = if plan.battery.0.is_finite() {
        plan.battery.0.clamp(-pcs_rating_w, pcs_rating_w)
    } else {
        0.0
    };
    out.push(Command::BatterySetpointW(battery_w));
    let limit = plan.pv_limit.0;
    if limit.is_finite() && limit < 100.0 {
        out.push(Command::PvLimitPct(limit.clamp(0.0, 100.0)));
        out.push(Command::PvLimitEnabled(true));
    } else {
        out.push(Command::PvLimitEnabled(false));
    }
}
