//! The glue between the simulator's plant and the dispatch core, for in-process backtests:
//! a [`StationView`] becomes a dispatch [`Snapshot`] (every reading fresh, as if read over
//! Modbus a moment ago) and a [`Plan`] becomes plant [`Command`]s.
//!
//! Both directions reuse their buffers: [`SnapshotBuilder::update`] overwrites the snapshot of
//! the previous cycle in place (charger ids are allocated once), and [`plan_commands`] appends
//! to a caller-owned vector, so a closed loop allocates nothing per cycle on this side.

use crate::devices::battery::evt1;
use crate::dispatch::{
    BatterySnapshot, ChargerId, ChargerSnapshot, ChargerState, GridSnapshot, HealthLimits, Plan,
    PvSnapshot, Reading, Snapshot,
};
use crate::units::{Amps, Percent, WattHours, Watts};
use station_sim::view::{BatteryState, Command, Mode3State, StationView};

/// IEC 61851 minimum current every simulated charger can offer, A.
pub const CHARGER_MIN_CURRENT_A: f64 = 6.0;

/// The dispatch core's view of a mode-3 state, through the one IEC 61851 mapping
/// ([`ChargerState::from_iec61851`]) the daemon uses too.
pub fn charger_state(s: Mode3State) -> ChargerState {
    ChargerState::from_iec61851(s.as_str())
}

/// Keeps one [`Snapshot`] and refreshes it from each new [`StationView`].
///
/// The BMS limits of the view (SunSpec model 802 `WChaRteMax`/`WDisChaRteMax`) are DC-side
/// figures; the snapshot carries what the PCS can deliver on the AC side, which is what the
/// dispatch core balances against the grid: discharge `min(PCS rating, DC limit x efficiency)`,
/// charge `min(PCS rating, DC limit / efficiency)`, with the PCS's one-way efficiency.
#[derive(Debug, Clone)]
pub struct SnapshotBuilder {
    snapshot: Option<Snapshot>,
    battery_efficiency: f64,
}

impl Default for SnapshotBuilder {
    fn default() -> Self {
        Self::new(1.0)
    }
}

impl SnapshotBuilder {
    /// `battery_efficiency`: the PCS's one-way efficiency in (0, 1] (1 takes the BMS limits
    /// as AC figures).
    pub fn new(battery_efficiency: f64) -> Self {
        let eff = if battery_efficiency.is_finite() && battery_efficiency > 0.0 {
            battery_efficiency.min(1.0)
        } else {
            1.0
        };
        SnapshotBuilder {
            snapshot: None,
            battery_efficiency: eff,
        }
    }

    /// The snapshot of `view`, every reading fresh. The returned reference stays valid until
    /// the next call.
    pub fn update(&mut self, view: &StationView) -> &Snapshot {
        let eff = self.battery_efficiency;
        let snap = self.snapshot.get_or_insert_with(|| empty_snapshot(view));
        fill_snapshot(view, eff, snap);
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

/// A fresh snapshot of `view` for a PCS of one-way efficiency `battery_efficiency`
/// (allocates; closed loops use [`SnapshotBuilder`]).
pub fn snapshot_from_view(view: &StationView, battery_efficiency: f64) -> Snapshot {
    let mut b = SnapshotBuilder::new(battery_efficiency);
    b.update(view);
    b.snapshot.unwrap_or_else(|| empty_snapshot(view))
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

fn fill_snapshot(view: &StationView, eff: f64, s: &mut Snapshot) {
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
        max_charge: Watts((b.max_charge_w / eff).min(b.pcs_rating_w).max(0.0)),
        max_discharge: Watts((b.max_discharge_w * eff).min(b.pcs_rating_w).max(0.0)),
        temperature_c: b.temp_c,
        alarm: evt1::is_alarm(b.alarms),
        // What the BMS says (nameplate x reported SoH), as the daemon sees it; the measured
        // capacity replaces it once confident (`crate::health`).
        usable_capacity: WattHours(b.nameplate_wh * b.soh_pct / 100.0),
        health: HealthLimits::default(),
    };
    s.building = Reading::fresh(Watts(view.building_meter.power_w));
    if s.chargers.len() != view.chargers.len() {
        *s = empty_snapshot(view);
        fill_snapshot(view, eff, s);
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

/// What the battery health tracker takes from the plant's battery, as the daemon reads it
/// over SunSpec 802/804: SoC, AC power, DC voltage x current, the reported SoH, the nameplate,
/// the extreme cells and module temperatures.
pub fn health_observation(view: &StationView) -> crate::health::BatteryObservation {
    let b = &view.battery;
    crate::health::BatteryObservation {
        soc_pct: b.soc_pct,
        ac_power_w: b.power_w,
        dc_power_w: Some(b.voltage_v * b.current_a),
        bms_soh_pct: Some(b.soh_pct),
        nameplate_wh: Some(b.nameplate_wh),
        cell_v_max: Some(b.cell_v_max),
        cell_v_min: Some(b.cell_v_min),
        module_temp_max_c: Some(b.module_temp_max_c),
        module_temp_min_c: Some(b.module_temp_min_c),
    }
}

/// Refresh a setpoint whose validity (or revert timer) has less than this share left.
pub const REFRESH_SHARE: f64 = 0.5;

/// Append the commands that carry out `plan` on the plant that showed `view`, writing only
/// what differs from what the devices show, plus a refresh of setpoints that would otherwise
/// time out (as a daemon polling the same registers would): a charger setpoint when it changes
/// or when less than half its validity is left; the battery setpoint when it changes or after
/// `battery_refresh_s` since the last write (`since_battery_write_s`); the PV limit when it
/// changes. Returns whether the battery setpoint was written.
pub fn plan_changes(
    plan: &Plan,
    view: &StationView,
    since_battery_write_s: f64,
    out: &mut Vec<Command>,
) -> bool {
    for (index, (sp, cv)) in plan.chargers.iter().zip(&view.chargers).enumerate() {
        let amps = sp.amps.0.max(0.0);
        let stale = f64::from(cv.remaining_validity_s) < REFRESH_SHARE * f64::from(cv.validity_s);
        if stale || (amps - cv.setpoint_a).abs() > 1e-9 {
            out.push(Command::ChargerSetpointA { index, amps });
        }
    }
    let b = &view.battery;
    let battery_w = clamp_battery(plan, b.pcs_rating_w);
    let revert = f64::from(b.setpoint_revert_s);
    let battery_due = revert > 0.0 && since_battery_write_s >= REFRESH_SHARE * revert;
    let mut wrote_battery = false;
    if battery_due || (battery_w - b.setpoint_w).abs() > 1e-9 || !b.setpoint_enabled {
        if !b.setpoint_enabled {
            out.push(Command::BatterySetpointEnabled(true));
        }
        out.push(Command::BatterySetpointW(battery_w));
        wrote_battery = true;
    }
    let pv = &view.pv;
    let limit = plan.pv_limit.0;
    if limit.is_finite() && limit < 100.0 {
        let limit = limit.clamp(0.0, 100.0);
        let revert = f64::from(pv.limit_revert_s);
        if (limit - pv.limit_pct).abs() > 1e-9 || !pv.limit_enabled || revert > 0.0 {
            out.push(Command::PvLimitPct(limit));
            out.push(Command::PvLimitEnabled(true));
        }
    } else if pv.limit_enabled {
        out.push(Command::PvLimitEnabled(false));
    }
    wrote_battery
}

fn clamp_battery(plan: &Plan, pcs_rating_w: f64) -> f64 {
    if plan.battery.0.is_finite() {
        plan.battery.0.clamp(-pcs_rating_w, pcs_rating_w)
    } else {
        0.0
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
    out.push(Command::BatterySetpointW(clamp_battery(plan, pcs_rating_w)));
    let limit = plan.pv_limit.0;
    if limit.is_finite() && limit < 100.0 {
        out.push(Command::PvLimitPct(limit.clamp(0.0, 100.0)));
        out.push(Command::PvLimitEnabled(true));
    } else {
        out.push(Command::PvLimitEnabled(false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::ChargerSetpoint;
    use station_sim::physics::Plant;
    use station_sim::scenario::Scenario;

    fn view() -> StationView {
        let mut v = Plant::new(&Scenario::reference(), 1).view();
        v.grid_meter.power_w = 42_000.0;
        v.building_meter.power_w = 50_000.0;
        v.pv.power_w = 20_000.0;
        v.battery.max_charge_w = 100_000.0;
        v.battery.max_discharge_w = 150_000.0;
        v.chargers[2].state = Mode3State::C2;
        v.chargers[2].current_a = [16.0; 3];
        v.chargers[2].power_w = 11_040.0;
        v.chargers[5].state = Mode3State::D2;
        v
    }

    #[test]
    fn snapshot_marks_every_reading_fresh_and_maps_the_chargers() {
        let v = view();
        let s = snapshot_from_view(&v, 0.95);
        assert_eq!(s.grid.power, Reading::fresh(Watts(42_000.0)));
        assert_eq!(s.building, Reading::fresh(Watts(50_000.0)));
        assert_eq!(s.pv.power, Reading::fresh(Watts(20_000.0)));
        assert_eq!(s.pv.limit, Percent(100.0));
        assert!(s.battery.soc.is_fresh() && s.battery.online && !s.battery.alarm);
        assert_eq!(s.battery.usable_capacity, WattHours(v.battery.usable_wh));
        assert_eq!(s.chargers.len(), 8);
        assert_eq!(s.chargers[0].id.as_str(), "charger-1");
        assert_eq!(s.chargers[0].state, ChargerState::A);
        assert!(!s.chargers[0].plugged);
        assert_eq!(s.chargers[2].state, ChargerState::C2);
        assert_eq!(s.chargers[2].current, [Amps(16.0); 3]);
        assert_eq!(s.chargers[5].state, ChargerState::D);
        assert_eq!(s.chargers[0].min_current, Amps(6.0));
        assert_eq!(s.chargers[0].rating, Amps(32.0));
    }

    #[test]
    fn battery_limits_become_ac_figures_capped_by_the_pcs() {
        let v = view();
        let s = snapshot_from_view(&v, 0.95);
        // 150 kW DC x 0.95 = 142.5 kW, above the 120 kW PCS.
        assert_eq!(s.battery.max_discharge, Watts(120_000.0));
        // 100 kW DC / 0.95 = 105.3 kW AC.
        assert!((s.battery.max_charge.0 - 100_000.0 / 0.95).abs() < 1e-6);
        let mut v2 = v.clone();
        v2.battery.max_discharge_w = 40_000.0;
        let s2 = snapshot_from_view(&v2, 0.95);
        assert!((s2.battery.max_discharge.0 - 38_000.0).abs() < 1e-6);
    }

    #[test]
    fn only_alarm_bits_idle_the_battery_warnings_do_not() {
        let mut v = view();
        v.battery.alarms = station_sim::view::battery_alarm::UNDER_SOC_MIN_WARNING
            | station_sim::view::battery_alarm::OVER_TEMP_WARNING;
        assert!(!snapshot_from_view(&v, 0.95).battery.alarm);
        v.battery.alarms |= station_sim::view::battery_alarm::CONTACTOR_ERROR;
        assert!(snapshot_from_view(&v, 0.95).battery.alarm);
    }

    #[test]
    fn builder_updates_in_place_and_follows_a_new_roster() {
        let mut b = SnapshotBuilder::new(0.95);
        let mut v = view();
        let id_ptr = b.update(&v).chargers[0].id.0.as_ptr();
        v.grid_meter.power_w = 1.0;
        let s = b.update(&v);
        assert_eq!(s.grid.power.value, Watts(1.0));
        assert_eq!(
            s.chargers[0].id.0.as_ptr(),
            id_ptr,
            "ids are not reallocated"
        );
        v.chargers.truncate(3);
        assert_eq!(b.update(&v).chargers.len(), 3);
    }

    fn plan(amps: &[f64], battery_w: f64, pv_limit: f64) -> Plan {
        Plan {
            chargers: amps
                .iter()
                .enumerate()
                .map(|(i, &a)| ChargerSetpoint {
                    id: ChargerId::new(&format!("charger-{}", i + 1)),
                    amps: Amps(a),
                    phases: 3,
                })
                .collect(),
            battery: Watts(battery_w),
            pv_limit: Percent(pv_limit),
            ..Plan::default()
        }
    }

    #[test]
    fn plan_commands_write_every_charger_and_clamp_the_battery_to_the_pcs() {
        let mut out = Vec::new();
        plan_commands(&plan(&[0.0, 16.0], 500_000.0, 40.0), 120_000.0, &mut out);
        assert_eq!(
            out,
            vec![
                Command::ChargerSetpointA {
                    index: 0,
                    amps: 0.0
                },
                Command::ChargerSetpointA {
                    index: 1,
                    amps: 16.0
                },
                Command::BatterySetpointW(120_000.0),
                Command::PvLimitPct(40.0),
                Command::PvLimitEnabled(true),
            ]
        );
        out.clear();
        plan_commands(&plan(&[], -20_000.0, 100.0), 120_000.0, &mut out);
        assert_eq!(
            out,
            vec![
                Command::BatterySetpointW(-20_000.0),
                Command::PvLimitEnabled(false)
            ]
        );
    }

    #[test]
    fn plan_changes_write_what_differs_and_refresh_before_timeouts() {
        let mut v = view();
        for c in &mut v.chargers {
            c.setpoint_a = 10.0;
            c.remaining_validity_s = 50;
        }
        v.chargers[1].remaining_validity_s = 20; // less than half of 60 s left
        v.battery.setpoint_w = 5_000.0;
        let p = plan(
            &[10.0, 10.0, 12.0, 10.0, 10.0, 10.0, 10.0, 10.0],
            5_000.0,
            100.0,
        );
        let mut out = Vec::new();
        let wrote = plan_changes(&p, &v, 1.0, &mut out);
        assert!(!wrote);
        assert_eq!(
            out,
            vec![
                Command::ChargerSetpointA {
                    index: 1,
                    amps: 10.0
                },
                Command::ChargerSetpointA {
                    index: 2,
                    amps: 12.0
                },
            ]
        );
        // The battery setpoint is refreshed after half its revert time.
        out.clear();
        assert!(plan_changes(
            &p,
            &v,
            0.5 * f64::from(v.battery.setpoint_revert_s),
            &mut out
        ));
        assert!(out.contains(&Command::BatterySetpointW(5_000.0)));
        // A limit to lift is lifted once.
        v.pv.limit_enabled = true;
        out.clear();
        plan_changes(&p, &v, 1.0, &mut out);
        assert!(out.contains(&Command::PvLimitEnabled(false)));
    }

    #[test]
    fn every_mode3_state_maps() {
        use Mode3State::*;
        let pairs = [
            (A, ChargerState::A),
            (B1, ChargerState::B1),
            (B2, ChargerState::B2),
            (C1, ChargerState::C1),
            (C2, ChargerState::C2),
            (D1, ChargerState::D),
            (D2, ChargerState::D),
            (E, ChargerState::E),
            (F, ChargerState::F),
        ];
        for (m, c) in pairs {
            assert_eq!(charger_state(m), c);
        }
    }
}
