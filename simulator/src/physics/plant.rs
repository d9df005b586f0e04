//! The whole station stepped in simulated time.

use super::battery::Battery;
use super::charger::Charger;
use super::exo::{ExoModel, NOMINAL_V};
use super::kpi::{CostParts, Flows, KpiTracker, Kpis};
use super::pv::PvInverter;
use super::vehicles::{Vehicle, VehicleSpec};
use super::{forecast_from, Exogenous, SessionForecast};
use crate::scenario::{FaultKind, Scenario};
use crate::view::{
    BatteryView, ChargerView, Command, CommandError, MeterView, Mode3State, PvView, StationView,
    VehicleView,
};
use chrono::{DateTime, Duration, Utc};

/// How the building load splits over L1, L2, L3.
const BUILDING_PHASE_SHARE: [f64; 3] = [0.36, 0.33, 0.31];
const GRID_HZ: f64 = 50.0;

/// The station's physics: PV, battery, chargers with cars, building, grid meter.
#[derive(Debug, Clone)]
pub struct Plant {
    sc: Scenario,
    epoch: DateTime<Utc>,
    epoch_unix_s: f64,
    t_s: f64,
    exo: ExoModel,
    pv: PvInverter,
    battery: Battery,
    chargers: Vec<Charger>,
    building_w: f64,
    building_phase_w: [f64; 3],
    ev_w: f64,
    grid_w: f64,
    grid_phase_w: [f64; 3],
    grid_import_wh: f64,
    grid_export_wh: f64,
    building_wh: f64,
    kpi: KpiTracker,
    /// Scheduled BMS alarms, [start, end) in seconds since the epoch.
    bms_windows: Vec<(f64, f64)>,
}

impl Plant {
    /// A plant at the scenario's start time.
    pub fn new(scenario: &Scenario, seed: u64) -> Plant {
        Plant::with_start(scenario, seed, scenario.start_utc())
    }

    /// A plant starting at `start` (chargers empty, battery at its initial SoC).
    pub fn with_start(scenario: &Scenario, seed: u64, start: DateTime<Utc>) -> Plant {
        let sc = scenario.clone();
        let c = &sc.chargers;
        let chargers = (0..c.count)
            .map(|i| Charger::new(i, c.phases, c.rating_a, c.safe_current_a, c.validity_s))
            .collect();
        let bms_windows = sc
            .scheduled_faults()
            .into_iter()
            .filter(|f| f.spec.kind == FaultKind::BmsAlarm)
            .map(|f| {
                let a = (f.start - start).num_milliseconds() as f64 / 1000.0;
                let b = (f.end - start).num_milliseconds() as f64 / 1000.0;
                (a, b)
            })
            .collect();
        let mut plant = Plant {
            epoch: start,
            epoch_unix_s: start.timestamp_millis() as f64 / 1000.0,
            t_s: 0.0,
            exo: ExoModel::new(&sc, seed, start),
            pv: PvInverter::new(
                sc.pv_rating_w(),
                sc.pv.inverter_efficiency,
                sc.pv.limit_ramp_pct_per_s,
                sc.pv.limit_revert_s,
            ),
            battery: Battery::new(&sc.battery),
            chargers,
            building_w: 0.0,
            building_phase_w: [0.0; 3],
            ev_w: 0.0,
            grid_w: 0.0,
            grid_phase_w: [0.0; 3],
            grid_import_wh: 0.0,
            grid_export_wh: 0.0,
            building_wh: 0.0,
            kpi: KpiTracker::new(
                sc.import_limit_w(),
                sc.tariff.export_cny_per_kwh,
                sc.tariff.demand_cny_per_kw,
                sc.co2_kg_per_kwh,
            ),
            bms_windows,
            sc,
        };
        // Show the state at t = 0 (exogenous values, cars already due) without advancing.
        plant.step(0.0);
        plant
    }

    /// Simulated time now.
    pub fn now(&self) -> DateTime<Utc> {
        self.epoch + Duration::milliseconds((self.t_s * 1000.0).round() as i64)
    }

    /// Seconds simulated since the start.
    pub fn elapsed_s(&self) -> f64 {
        self.t_s
    }

    pub fn scenario(&self) -> &Scenario {
        &self.sc
    }

    /// Advance the physics by `dt_s` seconds (sub-stepped at minute boundaries so that the
    /// per-minute exogenous values are integrated exactly). `dt_s = 0` refreshes the state.
    pub fn step(&mut self, dt_s: f64) {
        if !dt_s.is_finite() || dt_s < 0.0 {
            return;
        }
        let end = self.t_s + dt_s;
        if dt_s == 0.0 {
            self.exo.advance_to(self.t_s);
            self.sub_step(0.0);
            return;
        }
        while self.t_s < end {
            self.exo.advance_to(self.t_s);
            let h = (end.min(self.exo.minute_end_s()) - self.t_s).max(0.0);
            let h = if h <= 0.0 { end - self.t_s } else { h };
            self.sub_step(h);
            self.t_s = if end - (self.t_s + h) < 1e-9 {
                end
            } else {
                self.t_s + h
            };
        }
    }

    fn sub_step(&mut self, h: f64) {
        let t = self.t_s;
        self.depart_due(t);
        self.plug_arrivals(t);
        self.battery.alarm_scheduled = self.bms_windows.iter().any(|&(a, b)| t >= a && t < b);

        let pv_available_w = self.exo.pv_available_w();
        self.pv.step(h, pv_available_w);
        let pv_w = self.pv.power_w;
        let ev_phase_w = self.step_chargers(h);
        let ev_w = self.ev_w;

        let building_w = self.exo.building_w();
        self.building_w = building_w;
        for (p, s) in self.building_phase_w.iter_mut().zip(BUILDING_PHASE_SHARE) {
            *p = building_w * s;
        }

        let pv_surplus_w = (pv_w - building_w - ev_w).max(0.0);
        self.battery.step(h, pv_surplus_w);
        let batt_w = self.battery.power_w;

        self.grid_w = building_w + ev_w - pv_w - batt_w;
        let source_per_phase_w = (pv_w + batt_w) / 3.0;
        for ((g, b), e) in self
            .grid_phase_w
            .iter_mut()
            .zip(self.building_phase_w)
            .zip(ev_phase_w)
        {
            *g = b + e - source_per_phase_w;
        }
        let hours = h / 3600.0;
        if self.grid_w > 0.0 {
            self.grid_import_wh += self.grid_w * hours;
        } else {
            self.grid_export_wh -= self.grid_w * hours;
        }
        self.building_wh += building_w * hours;

        if h > 0.0 {
            self.record_kpis(h, t, pv_w, pv_available_w);
        }
    }

    /// Cars whose departure time has come leave; their sessions are scored.
    fn depart_due(&mut self, t: f64) {
        for c in &mut self.chargers {
            if let Some(v) = &c.vehicle {
                if v.depart_s <= t {
                    self.kpi.session_ended(v.wanted_wh());
                    c.vehicle = None;
                }
            }
        }
    }

    /// Cars due by `t` plug into the charger the exogenous model gave them.
    fn plug_arrivals(&mut self, t: f64) {
        while let Some((ci, a)) = self.exo.pop_arrival(t) {
            let (arrived, departs) = (self.at(a.t_s), self.at(a.depart_s));
            if let Some(c) = self.chargers.get_mut(ci) {
                if c.vehicle.is_none() {
                    c.vehicle = Some(Vehicle {
                        kind: a.kind,
                        battery_wh: a.battery_wh,
                        soc_pct: a.soc_pct,
                        target_soc_pct: a.target_soc_pct,
                        onboard_max_a: a.onboard_a,
                        phases: a.phases,
                        arrive_s: a.t_s,
                        depart_s: a.depart_s,
                        arrived,
                        departs,
                        session_wh: 0.0,
                    });
                }
            }
        }
    }

    /// Step every charger by `h`; sets the total EV power and returns it per phase, W.
    fn step_chargers(&mut self, h: f64) -> [f64; 3] {
        let mut ev_w = 0.0;
        let mut ev_phase_w = [0.0; 3];
        for c in &mut self.chargers {
            c.step(h);
            ev_w += c.power_w;
            let lines = c.line_currents_a();
            for (p, a) in ev_phase_w.iter_mut().zip(lines) {
                *p += a * NOMINAL_V;
            }
        }
        self.ev_w = ev_w;
        ev_phase_w
    }

    /// Score the sub-step of `h` seconds that started at `t` (the flows are already set).
    fn record_kpis(&mut self, h: f64, t: f64, pv_w: f64, pv_available_w: f64) {
        let soc = self.battery.soc_pct;
        let flows = Flows {
            pv_w,
            pv_available_w,
            building_w: self.building_w,
            ev_w: self.ev_w,
            battery_w: self.battery.power_w,
            grid_w: self.grid_w,
            battery_solar_fraction: self.battery.solar_fraction(),
            import_price: self.exo.import_price(),
            soc_outside_window: soc < self.battery.soc_min_pct - 1e-6
                || soc > self.battery.soc_max_pct + 1e-6,
        };
        let month = self.exo.month_key();
        self.kpi.record(h, self.epoch_unix_s + t, month, &flows);
    }

    /// Apply a control write at the current simulated time.
    pub fn apply(&mut self, cmd: Command) -> Result<(), CommandError> {
        match cmd {
            Command::PvLimitPct(p) => {
                self.pv.limit_pct = in_range("PV limit %", p, 0.0, 100.0)?;
                self.pv.limit_command();
            }
            Command::PvLimitEnabled(on) => {
                self.pv.limit_enabled = on;
                self.pv.limit_command();
            }
            Command::PvLimitRevertS(s) => self.pv.limit_revert_s = s,
            Command::BatterySetpointW(w) => {
                let r = self.battery.pcs_w;
                let w = in_range("battery setpoint W", w, -r, r)?;
                self.battery.set_setpoint(w);
            }
            Command::BatterySetpointEnabled(on) => self.battery.setpoint_enabled = on,
            Command::BatterySetpointRevertS(s) => self.battery.setpoint_revert_s = s,
            Command::BatterySocReserveMinPct(p) => {
                self.battery.soc_reserve_min_pct = in_range("SoC reserve %", p, 0.0, 100.0)?;
                self.battery.update_limits();
            }
            Command::ChargerSetpointA { index, amps } => {
                let a = in_range("charger setpoint A", amps, 0.0, 1000.0)?;
                self.charger(index)?.set_setpoint(a);
            }
            Command::ChargerSafeCurrentA { index, amps } => {
                let a = in_range("charger safe current A", amps, 0.0, 1000.0)?;
                self.charger(index)?.safe_current_a = a;
            }
            Command::ChargerPhases { index, phases } => {
                if phases != 1 && phases != 3 {
                    return Err(CommandError::Phases { phases });
                }
                self.charger(index)?.set_phases(phases);
            }
        }
        Ok(())
    }

    fn charger(&mut self, index: usize) -> Result<&mut Charger, CommandError> {
        let count = self.chargers.len();
        self.chargers
            .get_mut(index)
            .ok_or(CommandError::NoSuchCharger { index, count })
    }

    /// Plug a car by hand into charger `charger_index` (0-based); it leaves after `stay_s`.
    pub fn plug_vehicle(&mut self, charger_index: usize, v: VehicleSpec) -> Result<(), PlugError> {
        let count = self.chargers.len();
        let t = self.t_s;
        let epoch = self.epoch;
        let c = self
            .chargers
            .get_mut(charger_index)
            .ok_or(PlugError::NoSuchCharger {
                index: charger_index,
                count,
            })?;
        if c.vehicle.is_some() {
            return Err(PlugError::Occupied {
                number: charger_index + 1,
            });
        }
        check_vehicle(&v)?;
        let (arrived, departs) = (time_at(epoch, t), time_at(epoch, t + v.stay_s));
        c.vehicle = Some(Vehicle {
            kind: v.kind,
            battery_wh: v.battery_wh,
            soc_pct: v.soc_pct,
            target_soc_pct: v.target_soc_pct,
            onboard_max_a: v.onboard_max_a,
            phases: v.phases,
            arrive_s: t,
            depart_s: t + v.stay_s,
            arrived,
            departs,
            session_wh: 0.0,
        });
        self.exo.mark_occupied(charger_index, t + v.stay_s);
        Ok(())
    }

    /// Raise or clear a BMS alarm by hand (scheduled `bms_alarm` faults act on their own).
    pub fn set_bms_alarm(&mut self, on: bool) {
        self.battery.alarm_manual = on;
        self.battery.update_limits();
    }

    /// Cars turned away because every charger was busy.
    pub fn turned_away(&self) -> u64 {
        self.exo.turned_away()
    }

    /// The running scorecard since the start.
    /// The battery's physics state (tests continue its ageing law from here).
    pub fn battery(&self) -> &Battery {
        &self.battery
    }

    pub fn kpis(&self) -> Kpis {
        let b = &self.battery;
        self.kpi
            .kpis(b.efc(), b.soh_pct - b.soh0_pct, self.degradation_cny())
    }

    /// The parts of the scorecard's cost since the start.
    pub fn cost_parts(&self) -> CostParts {
        self.kpi.cost_parts(self.degradation_cny())
    }

    fn degradation_cny(&self) -> f64 {
        let soh_change = self.battery.soh_pct - self.battery.soh0_pct;
        self.sc.battery.pack_value_cny * (-soh_change).max(0.0)
            / self.sc.battery.allowed_soh_loss_pct
    }

    /// Perfect foresight of the exogenous processes for `days` from now (15-minute steps),
    /// including the cars plugged now (with what they still want).
    pub fn exogenous(&self, days: u32) -> Exogenous {
        let mut f = forecast_from(self.exo.clone(), self.t_s, days, &self.sc.chargers);
        let mut current: Vec<SessionForecast> = self
            .chargers
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let v = c.vehicle.as_ref()?;
                Some(SessionForecast {
                    charger: i,
                    kind: v.kind,
                    arrive: v.arrived,
                    depart: v.departs,
                    wanted_wh: v.wanted_wh(),
                    max_w: v.onboard_max_a.min(c.rating_a)
                        * f64::from(v.phases.min(c.phases))
                        * NOMINAL_V,
                    battery_wh: v.battery_wh,
                    soc_pct: v.soc_pct,
                })
            })
            .collect();
        current.append(&mut f.sessions);
        f.sessions = current;
        f
    }

    fn at(&self, t_s: f64) -> DateTime<Utc> {
        time_at(self.epoch, t_s)
    }

    /// What every device shows now (a fresh view; loops should keep one and use
    /// [`Plant::view_into`]).
    pub fn view(&self) -> StationView {
        let mut v = StationView {
            sim_time: self.epoch,
            pv: self.pv_view(),
            battery: self.battery_view(),
            grid_meter: meter_view(self.grid_phase_w, self.grid_import_wh, self.grid_export_wh),
            building_meter: meter_view(self.building_phase_w, self.building_wh, 0.0),
            chargers: Vec::with_capacity(self.chargers.len()),
        };
        self.view_into(&mut v);
        v
    }

    /// Overwrite `out` with what every device shows now, reusing its buffers: the charger
    /// list, the charger ids and the vehicle kinds are kept when they already hold the right
    /// value, so a loop that keeps one view allocates only when a car plugs in (its vehicle
    /// entry) or the number of chargers grows. Gives exactly what [`Plant::view`] gives.
    pub fn view_into(&self, out: &mut StationView) {
        out.sim_time = self.now();
        out.pv = self.pv_view();
        out.battery = self.battery_view();
        out.grid_meter = meter_view(self.grid_phase_w, self.grid_import_wh, self.grid_export_wh);
        out.building_meter = meter_view(self.building_phase_w, self.building_wh, 0.0);
        out.chargers.truncate(self.chargers.len());
        for (i, c) in self.chargers.iter().enumerate() {
            match out.chargers.get_mut(i) {
                Some(cv) => {
                    if !is_charger_id(&cv.id, i + 1) {
                        cv.id.clear();
                        cv.id.push_str("charger-");
                        push_decimal(&mut cv.id, i + 1);
                    }
                    self.fill_charger_view(c, cv);
                }
                None => {
                    let mut cv = ChargerView {
                        id: format!("charger-{}", i + 1),
                        phases: 0,
                        rating_a: 0.0,
                        state: Mode3State::A,
                        voltage_v: [NOMINAL_V; 3],
                        current_a: [0.0; 3],
                        power_w: 0.0,
                        energy_wh: 0.0,
                        applied_max_a: 0.0,
                        setpoint_a: 0.0,
                        safe_current_a: 0.0,
                        validity_s: 0,
                        remaining_validity_s: 0,
                        temperature_c: 0.0,
                        vehicle: None,
                    };
                    self.fill_charger_view(c, &mut cv);
                    out.chargers.push(cv);
                }
            }
        }
    }

    fn pv_view(&self) -> PvView {
        let pv = &self.pv;
        let pv_a = pv.power_w / 3.0 / NOMINAL_V;
        PvView {
            rating_w: pv.rating_w,
            power_w: pv.power_w,
            dc_power_w: pv.dc_power_w(),
            available_w: pv.available_w,
            energy_wh: pv.energy_wh,
            limit_pct: pv.limit_pct,
            limit_enabled: pv.limit_enabled,
            limit_revert_s: pv.limit_revert_s,
            status: pv.status(),
            voltage_v: [NOMINAL_V; 3],
            current_a: [pv_a; 3],
            frequency_hz: GRID_HZ,
            cabinet_temp_c: self.sc.battery.ambient_c + 15.0 * pv.power_w / pv.rating_w,
        }
    }

    fn battery_view(&self) -> BatteryView {
        let b = &self.battery;
        let (cell_max, cell_min) = b.cell_v();
        let (v_max_mod, v_min_mod) = b.cell_extreme_modules();
        let (t_max, t_max_mod, t_min, t_min_mod) = b.module_temps();
        BatteryView {
            nameplate_wh: b.nameplate_wh,
            usable_wh: b.usable_wh(),
            soc_pct: b.soc_pct,
            soh_pct: b.bms_soh_pct,
            true_soh_pct: b.soh_pct,
            soc_min_pct: b.soc_min_pct,
            soc_max_pct: b.soc_max_pct,
            window_wh: b.window_wh(),
            imbalance_mv: b.imbalance_mv,
            modules: b.modules,
            cells_per_module: (b.series / f64::from(b.modules)) as u16,
            cell_v_max_module: v_max_mod,
            cell_v_min_module: v_min_mod,
            module_temp_max_c: t_max,
            module_temp_max_module: t_max_mod,
            module_temp_min_c: t_min,
            module_temp_min_module: t_min_mod,
            power_w: b.power_w,
            setpoint_w: if b.setpoint_enabled {
                b.setpoint_w
            } else {
                0.0
            },
            setpoint_enabled: b.setpoint_enabled,
            setpoint_revert_s: b.setpoint_revert_s,
            pcs_rating_w: b.pcs_w,
            max_charge_w: b.max_charge_w(),
            max_discharge_w: b.max_discharge_w(),
            max_charge_a: b.max_charge_a,
            max_discharge_a: b.max_discharge_a,
            voltage_v: b.voltage_v(),
            current_a: b.current_a,
            cell_v_max: cell_max,
            cell_v_min: cell_min,
            temp_c: b.temp_c,
            state: b.state(),
            alarms: b.alarms(),
            // Truncation is `floor` here: negative values and NaN saturate to 0 either way.
            cycles: b.efc() as u32,
            soc_reserve_min_pct: b.soc_reserve_min_pct,
        }
    }

    /// Everything of a charger's view but its id.
    fn fill_charger_view(&self, c: &Charger, cv: &mut ChargerView) {
        cv.phases = c.phases;
        cv.rating_a = c.rating_a;
        cv.state = c.state;
        cv.voltage_v = [NOMINAL_V; 3];
        cv.current_a = c.line_currents_a();
        cv.power_w = c.power_w;
        cv.energy_wh = c.energy_wh;
        cv.applied_max_a = c.applied_max_a();
        cv.setpoint_a = c.setpoint_a;
        cv.safe_current_a = c.safe_current_a;
        cv.validity_s = c.validity_s;
        cv.remaining_validity_s = ceil_u32(c.remaining_validity_s);
        cv.temperature_c = 25.0 + 10.0 * c.power_w / (c.rating_a * 3.0 * NOMINAL_V);
        match (c.vehicle.as_ref(), cv.vehicle.as_mut()) {
            (None, _) => cv.vehicle = None,
            (Some(v), Some(vv)) => {
                let kind = v.kind.as_str();
                if vv.kind != kind {
                    vv.kind.clear();
                    vv.kind.push_str(kind);
                }
                vv.battery_wh = v.battery_wh;
                vv.soc_pct = v.soc_pct;
                vv.target_soc_pct = v.target_soc_pct;
                vv.onboard_max_a = v.onboard_max_a;
                vv.phases = v.phases;
                vv.arrived = v.arrived;
                vv.departs = v.departs;
                vv.session_wh = v.session_wh;
                vv.wanted_wh = v.wanted_wh();
            }
            (Some(v), None) => {
                cv.vehicle = Some(VehicleView {
                    kind: v.kind.as_str().to_string(),
                    battery_wh: v.battery_wh,
                    soc_pct: v.soc_pct,
                    target_soc_pct: v.target_soc_pct,
                    onboard_max_a: v.onboard_max_a,
                    phases: v.phases,
                    arrived: v.arrived,
                    departs: v.departs,
                    session_wh: v.session_wh,
                    wanted_wh: v.wanted_wh(),
                })
            }
        }
    }
}

/// Why [`Plant::plug_vehicle`] refused a car.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlugError {
    /// A charger index the station does not have (0-based).
    #[error("charger index {index} outside 0..{count}")]
    NoSuchCharger { index: usize, count: usize },
    /// A car is already plugged into charger `number` (1-based, as in `charger-3`).
    #[error("charger {number} is occupied")]
    Occupied { number: usize },
    /// A vehicle parameter outside its range, e.g. `vehicle soc_pct 120 outside 0..=100`.
    #[error("vehicle {field} {value} outside {lo}..={hi}")]
    OutOfRange {
        field: &'static str,
        value: f64,
        lo: f64,
        hi: f64,
    },
    /// An on-board charger phase count other than 1 or 3.
    #[error("vehicle phases {phases} must be 1 or 3")]
    Phases { phases: u8 },
}

/// `v` if it is finite and within `lo..=hi`, else the command error naming `field`.
fn in_range(field: &'static str, value: f64, lo: f64, hi: f64) -> Result<f64, CommandError> {
    if value.is_finite() && value >= lo && value <= hi {
        Ok(value)
    } else {
        Err(CommandError::OutOfRange {
            field,
            value,
            lo,
            hi,
        })
    }
}

/// Check a hand-plugged car's parameters, first bad one named.
fn check_vehicle(v: &VehicleSpec) -> Result<(), PlugError> {
    let checks: [(&'static str, f64, f64, f64); 5] = [
        ("battery_wh", v.battery_wh, 1.0, 1e6),
        ("soc_pct", v.soc_pct, 0.0, 100.0),
        ("target_soc_pct", v.target_soc_pct, 0.0, 100.0),
        ("onboard_max_a", v.onboard_max_a, 0.0, 1000.0),
        ("stay_s", v.stay_s, 0.0, 1e8),
    ];
    for (field, value, lo, hi) in checks {
        if !(value.is_finite() && value >= lo && value <= hi) {
            return Err(PlugError::OutOfRange {
                field,
                value,
                lo,
                hi,
            });
        }
    }
    if v.phases != 1 && v.phases != 3 {
        return Err(PlugError::Phases { phases: v.phases });
    }
    Ok(())
}

/// `x.ceil() as u32` for every `x` (NaN and negatives give 0, large values saturate) without
/// the libm call `ceil` costs on baseline x86-64.
fn ceil_u32(x: f64) -> u32 {
    let t = x as u32;
    if f64::from(t) < x {
        t.saturating_add(1)
    } else {
        t
    }
}

/// `t_s` seconds after `epoch`, to the millisecond.
fn time_at(epoch: DateTime<Utc>, t_s: f64) -> DateTime<Utc> {
    epoch + Duration::milliseconds((t_s * 1000.0).round() as i64)
}

/// A SunSpec meter's view of three phase powers and two energy counters.
fn meter_view(phase_w: [f64; 3], import_wh: f64, export_wh: f64) -> MeterView {
    MeterView {
        power_w: phase_w.iter().sum(),
        phase_w,
        voltage_v: [NOMINAL_V; 3],
        current_a: phase_w.map(|w| w.abs() / NOMINAL_V),
        frequency_hz: GRID_HZ,
        import_wh,
        export_wh,
    }
}

/// Whether `id` is `charger-{number}` exactly as `format!` writes it (no allocation).
fn is_charger_id(id: &str, number: usize) -> bool {
    id.strip_prefix("charger-").is_some_and(|digits| {
        !digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit())
            && digits.parse::<usize>().is_ok_and(|n| n == number)
    })
}

/// Append `n` in decimal to `s` (no allocation beyond growing `s`).
fn push_decimal(s: &mut String, n: usize) {
    use std::fmt::Write;
    // Writing into a String cannot fail.
    let _ = write!(s, "{n}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_u32_matches_ceil_then_cast_everywhere() {
        let mut xs = vec![
            0.0,
            -0.0,
            -0.5,
            -1.5,
            0.5,
            1.0,
            59.999_999_999,
            60.0,
            60.000_000_001,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::from(u32::MAX) - 0.5,
            f64::from(u32::MAX),
            f64::from(u32::MAX) + 0.5,
            1e300,
            f64::MIN_POSITIVE,
        ];
        xs.extend((0..20_000).map(|i| f64::from(i) * 0.013 - 3.0));
        for x in xs {
            assert_eq!(ceil_u32(x), x.ceil() as u32, "x = {x}");
        }
    }

    #[test]
    fn charger_ids_are_recognised_only_as_format_writes_them() {
        assert!(is_charger_id("charger-1", 1));
        assert!(is_charger_id("charger-12", 12));
        assert!(!is_charger_id("charger-01", 1));
        assert!(!is_charger_id("charger-+1", 1));
        assert!(!is_charger_id("charger-2", 1));
        assert!(!is_charger_id("charger-", 0));
        assert!(!is_charger_id("Charger-1", 1));
        let mut s = String::from("x");
        s.clear();
        s.push_str("charger-");
        push_decimal(&mut s, 307);
        assert_eq!(s, "charger-307");
    }
}
