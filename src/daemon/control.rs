//! The control loop: every cycle read all devices concurrently, build the snapshot, call
//! `dispatch::decide`, write every setpoint (level-triggered), then publish status, ledger,
//! metrics and history.

use super::device_set::{DeviceReading, DeviceSet, Setpoint};
use super::history::Sample;
use super::snapshot;
use super::Shared;
use crate::clock::Clock;
use crate::config::{DeviceRole, StationConfig};
use crate::daemon::status::{
    BatteryStatus, BuildingStatus, ChargerStatus, GridStatus, PvStatus, Status, TodayStatus,
};
use crate::dispatch::{self, ChargeMode, ChargerPolicy, DispatchState, Plan, Policy};
use crate::ledger::{ChargerInput, CycleInput};
use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Messages the control loop takes between cycles.
#[derive(Debug)]
pub enum ControlMsg {
    /// A reloaded, validated policy (SIGHUP).
    ReplacePolicy(Box<Policy>),
    /// Change one charger's mode (HTTP, authenticated).
    SetMode { id: String, mode: ChargeMode },
}

/// The control loop's state.
pub struct Controller {
    pub(crate) config: StationConfig,
    pub(crate) devices: DeviceSet,
    state: DispatchState,
    plan: Plan,
    clock: Arc<dyn Clock>,
    shared: Arc<Shared>,
    cycle: u64,
    last_at: Option<DateTime<Utc>>,
    today: TodayStatus,
    setpoints: Vec<(usize, Setpoint)>,
}

/// Local midnight of `now` in `tz`, as UTC.
fn local_midnight(now: DateTime<Utc>, tz: chrono_tz::Tz) -> DateTime<Utc> {
    let local = now.with_timezone(&tz);
    tz.with_ymd_and_hms(local.year(), local.month(), local.day(), 0, 0, 0)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now)
}

impl Controller {
    pub fn new(config: StationConfig, clock: Arc<dyn Clock>, shared: Arc<Shared>) -> Self {
        let devices = DeviceSet::new(&config);
        Controller {
            config,
            devices,
            state: DispatchState::new(),
            plan: Plan::default(),
            clock,
            shared,
            cycle: 0,
            last_at: None,
            today: TodayStatus::default(),
            setpoints: Vec::new(),
        }
    }

    /// Real time between cycles.
    pub fn period(&self) -> Duration {
        Duration::from_secs_f64((self.config.policy.cycle_s / self.clock.speed()).max(0.001))
    }

    pub fn handle(&mut self, msg: ControlMsg) {
        match msg {
            ControlMsg::ReplacePolicy(p) => {
                tracing::info!("policy reloaded");
                self.config.policy = *p;
            }
            ControlMsg::SetMode { id, mode } => {
                let chargers = &mut self.config.policy.vehicles.chargers;
                match chargers.iter_mut().find(|(c, _)| *c == id) {
                    Some((_, p)) => p.mode = mode,
                    None => chargers.push((
                        id.clone(),
                        ChargerPolicy {
                            mode,
                            min: None,
                            max: None,
                            priority: 0,
                        },
                    )),
                }
                tracing::info!(charger = %id, ?mode, "charger mode changed");
            }
        }
    }

    /// One control cycle.
    pub async fn cycle(&mut self) {
        let started = Instant::now();
        let now = self.clock.now();
        self.devices.read_all(now).await;
        let snap = snapshot::build(&self.devices, &self.config, now);
        dispatch::decide_into(
            &snap,
            &self.config.policy,
            &mut self.state,
            now,
            &mut self.plan,
        );
        self.collect_setpoints(&snap);
        self.devices.write_all(&self.setpoints).await;
        let cycle_s = started.elapsed().as_secs_f64();
        self.cycle += 1;
        self.publish(now, cycle_s);
        self.last_at = Some(now);
    }

    fn collect_setpoints(&mut self, snap: &dispatch::Snapshot) {
        self.setpoints.clear();
        for (i, d) in self.devices.devices.iter().enumerate() {
            match &d.config.role {
                DeviceRole::Charger(_) => {
                    if let Some(sp) = self.plan.chargers.iter().find(|c| c.id.as_str() == d.id()) {
                        self.setpoints
                            .push((i, Setpoint::ChargerA(sp.amps.value())));
                    }
                }
                DeviceRole::Battery { .. } if snap.battery.online => {
                    self.setpoints
                        .push((i, Setpoint::BatteryW(self.plan.battery.value())));
                }
                DeviceRole::Pv { .. } if snap.pv.power.is_fresh() => {
                    self.setpoints
                        .push((i, Setpoint::PvLimitPct(self.plan.pv_limit.value())));
                }
                _ => {}
            }
        }
    }

    fn publish(&mut self, now: DateTime<Utc>, cycle_s: f64) {
        let cfg = &self.config;
        let mut grid = GridStatus {
            import_limit_w: cfg.policy.grid.import_limit.value(),
            export_limit_w: cfg.policy.grid.export_limit.value(),
            ..GridStatus::default()
        };
        let mut pv = PvStatus {
            limit_pct: self.plan.pv_limit.value(),
            ..PvStatus::default()
        };
        let mut battery = BatteryStatus {
            setpoint_w: self.plan.battery.value(),
            ..BatteryStatus::default()
        };
        let mut building = BuildingStatus::default();
        let mut chargers = Vec::new();
        let mut ledger_chargers: Vec<ChargerInput<'_>> = Vec::new();
        let mut vehicles_w = 0.0;
        let mut vehicles_known = true;

        for d in &self.devices.devices {
            let max_age = snapshot::max_age(cfg, d.config.endpoint.poll_interval);
            let fresh = d.fresh(now, max_age);
            match (&d.config.role, fresh) {
                (DeviceRole::GridMeter, Some(DeviceReading::Meter(m))) => {
                    grid.power_w = Some(m.power_w);
                    grid.phase_w = m.phase_w;
                    grid.fresh = true;
                }
                (DeviceRole::BuildingMeter, Some(DeviceReading::Meter(m))) => {
                    building.power_w = Some(m.power_w);
                }
                (DeviceRole::Pv { .. }, Some(DeviceReading::Pv(p))) => {
                    pv.power_w = Some(p.power_w);
                    pv.rating_w = Some(p.rating_w);
                    pv.energy_wh = p.energy_wh;
                }
                (DeviceRole::Battery { .. }, Some(DeviceReading::Battery(b))) => {
                    battery.soc_pct = Some(b.soc_pct);
                    battery.soh_pct = b.soh_pct;
                    battery.power_w = Some(b.power_w);
                    battery.max_charge_w = b.max_charge_w;
                    battery.max_discharge_w = b.max_discharge_w;
                    battery.usable_wh = b
                        .capacity_wh
                        .map(|c| c * b.soh_pct.unwrap_or(100.0) / 100.0);
                    battery.alarms = b.events;
                    battery.state = b.state.map(|s| format!("{s:?}").to_lowercase());
                }
                (DeviceRole::Charger(c), r) => {
                    let reading = match r {
                        Some(DeviceReading::Charger(cr)) => Some(cr),
                        _ => None,
                    };
                    let setpoint_a = self
                        .plan
                        .chargers
                        .iter()
                        .find(|s| s.id.as_str() == d.id())
                        .map_or(0.0, |s| s.amps.value());
                    match reading {
                        Some(cr) => {
                            vehicles_w += cr.power_w;
                            ledger_chargers.push(ChargerInput {
                                id: d.id(),
                                power_w: cr.power_w,
                                plugged: cr.state.vehicle_connected(),
                            });
                        }
                        None => vehicles_known = false,
                    }
                    let session = self.shared.open_session(d.id());
                    chargers.push(ChargerStatus {
                        id: d.id().to_string(),
                        state: reading
                            .map_or("unknown".to_string(), |r| r.state.as_str().to_string()),
                        current_a: reading.map(|r| r.current_a.iter().copied().fold(0.0, f64::max)),
                        setpoint_a,
                        power_w: reading.map(|r| r.power_w),
                        phases: reading.map_or(c.phases, |r| r.phases),
                        rating_a: c.rating_a,
                        session_wh: session.as_ref().map(|s| s.0),
                        session_green_pct: session.as_ref().map(|s| s.1),
                        mode: mode_name(self.config.policy.vehicles.for_charger(d.id()).mode)
                            .to_string(),
                    });
                }
                _ => {}
            }
        }

        // Ledger: only when every flow is measured, so nothing is invented.
        let dt_s = self.last_at.map_or(0.0, |t| {
            ((now - t).num_milliseconds() as f64 / 1000.0).clamp(0.0, 10.0 * cfg.policy.cycle_s)
        });
        let has =
            |f: fn(&DeviceRole) -> bool| self.devices.devices.iter().any(|d| f(&d.config.role));
        // A station without PV or battery has 0 W of it; one whose device is unread has no value.
        let pv_w = if has(|r| matches!(r, DeviceRole::Pv { .. })) {
            pv.power_w
        } else {
            Some(0.0)
        };
        let battery_w = if has(|r| matches!(r, DeviceRole::Battery { .. })) {
            battery.power_w
        } else {
            Some(0.0)
        };
        if let (Some(g), Some(p), Some(b), Some(bl), true) = (
            grid.power_w,
            pv_w,
            battery_w,
            building.power_w,
            vehicles_known,
        ) {
            if dt_s > 0.0 {
                let local = now.with_timezone(&cfg.policy.timezone);
                let minute = (local.hour() * 60 + local.minute()) as u16;
                let input = CycleInput {
                    at: now,
                    dt_s,
                    pv_w: p,
                    building_w: bl,
                    battery_w: b,
                    grid_w: g,
                    chargers: &ledger_chargers,
                    price_cny_per_kwh: cfg.policy.tariff.price_at(minute),
                    export_price_cny_per_kwh: cfg.policy.tariff.export_price_cny_per_kwh,
                    co2_kg_per_kwh: cfg.policy.co2_kg_per_kwh,
                };
                self.shared.record_ledger(&input);
            }
        }
        if self.cycle % 10 == 1 {
            if let Some(t) = self.shared.today(
                local_midnight(now, cfg.policy.timezone),
                now,
                cfg.policy.co2_kg_per_kwh,
            ) {
                self.today = t;
            }
        }

        self.shared.record_history(
            now,
            Sample {
                grid_w: grid.power_w,
                pv_w: pv.power_w,
                battery_w: battery.power_w,
                vehicles_w: vehicles_known.then_some(vehicles_w),
                building_w: building.power_w,
            },
        );
        self.shared.record_cycle(&self.devices, cycle_s);

        let status = Status {
            station: cfg.name.clone(),
            timezone: cfg.policy.timezone.name().to_string(),
            time: now,
            cycle: self.cycle,
            cycle_ms: cycle_s * 1000.0,
            grid,
            pv,
            battery,
            building,
            chargers,
            devices: self.devices.devices.iter().map(|d| d.status()).collect(),
            reasons: self.plan.reasons.iter().map(|r| r.to_string()).collect(),
            today: self.today.clone(),
        };
        self.shared.publish(status);
    }

    /// Write safe setpoints to every device under the shutdown deadline.
    pub async fn shutdown(&mut self) {
        let deadline = self.config.shutdown_deadline;
        if tokio::time::timeout(deadline, self.devices.safe_all())
            .await
            .is_err()
        {
            tracing::warn!(
                deadline_ms = deadline.as_millis() as u64,
                "safe setpoints not all written before the deadline; devices fall back on their own"
            );
        }
    }
}

pub fn mode_name(m: ChargeMode) -> &'static str {
    match m {
        ChargeMode::Fast => "fast",
        ChargeMode::Solar => "solar",
        ChargeMode::MinSolar => "min_solar",
    }
}
