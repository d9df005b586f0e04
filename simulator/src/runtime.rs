//! The simulator's imperative shell: one clock task steps the pure plant at N x real time, one
//! Modbus listener per device serves its register map, and the HTTP control API exposes the truth
//! and fault injection. Everything hangs off one `CancellationToken` and one `TaskTracker`.
//!
//! This is the only module of the simulator that reads the wall clock (`Instant::now`), and only
//! to turn elapsed real time into a simulated-time target; the physics never sees it.

use crate::api;
use crate::faults::FaultValue;
use crate::faults::{ActiveFault, FaultError, FaultRequest, FaultTable};
use crate::physics::{Kpis, Plant, PlugError, VehicleKind, VehicleSpec};
use crate::scenario::{FaultSpec, Scenario};
use crate::view::{
    BatteryView, ChargerView, Command, CommandError, Mode3State, PvView, Station, StationView,
    VehicleView, WireFaults,
};
use crate::wire::{self, DeviceKind, DeviceSpec};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How a simulator instance is started.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub scenario: Scenario,
    pub seed: u64,
    /// Simulated seconds per real second; 0 = the clock stands still and only
    /// [`SimHandle::advance`] moves it (deterministic tests).
    pub speed: f64,
    /// Simulated start instant; `None` = the scenario's start.
    pub start: Option<DateTime<Utc>>,
    pub bind: IpAddr,
    /// First port (PV); `None` = every listener on an ephemeral port.
    pub port_base: Option<u16>,
    /// Physics step, simulated seconds.
    pub step_s: f64,
    /// Devices served with a device profile's map instead of their built-in one.
    pub profiles: Vec<wire::profile::ProfiledSpec>,
}

impl SimConfig {
    /// Loopback, ephemeral ports, the given speed: what tests use.
    pub fn ephemeral(scenario: Scenario, seed: u64, speed: f64) -> Self {
        SimConfig {
            scenario,
            seed,
            speed,
            start: None,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_base: None,
            step_s: 1.0,
            profiles: Vec::new(),
        }
    }
}

/// Port offsets from `--port-base`, as documented in the README.
pub mod port_offset {
    pub const PV: u16 = 0;
    pub const BATTERY: u16 = 1;
    pub const GRID_METER: u16 = 2;
    pub const BUILDING_METER: u16 = 3;
    pub const API: u16 = 9;
    pub const FIRST_CHARGER: u16 = 10;
}

/// Default first port.
pub const DEFAULT_PORT_BASE: u16 = 5020;

/// Where every device and the control API listen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimAddrs {
    pub pv: SocketAddr,
    pub battery: SocketAddr,
    pub grid_meter: SocketAddr,
    pub building_meter: SocketAddr,
    pub api: SocketAddr,
    pub chargers: Vec<SocketAddr>,
}

impl SimAddrs {
    /// Every Modbus device as `(id, address)`, in the order of `docs/reference-station.md`.
    pub fn devices(&self) -> Vec<(String, SocketAddr)> {
        let mut out = vec![
            ("pv".to_string(), self.pv),
            ("battery".to_string(), self.battery),
            ("grid-meter".to_string(), self.grid_meter),
            ("building-meter".to_string(), self.building_meter),
        ];
        for (i, a) in self.chargers.iter().enumerate() {
            out.push((charger_id(i), *a));
        }
        out
    }

    /// The address of one device by id.
    pub fn device(&self, id: &str) -> Option<SocketAddr> {
        self.devices()
            .into_iter()
            .find(|(d, _)| d == id)
            .map(|(_, a)| a)
    }
}

/// `charger-1` for index 0.
pub fn charger_id(index: usize) -> String {
    format!("charger-{}", index + 1)
}

/// Errors starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr} for {device}: {source}")]
    Bind {
        device: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid simulator setting {key}: {problem}")]
    Setting { key: &'static str, problem: String },
    #[error("scheduled fault {index} of the scenario: {source}")]
    ScheduledFault { index: usize, source: FaultError },
}

/// A vehicle plug-in request (`POST /vehicles`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlugRequest {
    /// Charger id, e.g. `charger-3`.
    pub charger: String,
    #[serde(default = "default_battery_kwh")]
    pub battery_kwh: f64,
    #[serde(default = "default_soc_pct")]
    pub soc_pct: f64,
    #[serde(default = "default_target_pct")]
    pub target_soc_pct: f64,
    /// How long the car stays, hours.
    #[serde(default = "default_stay_h")]
    pub stay_h: f64,
    /// The car's on-board charger limit per phase, A.
    #[serde(default = "default_onboard_a")]
    pub onboard_a: f64,
    /// Phases the car's on-board charger uses (1 or 3).
    #[serde(default = "default_phases")]
    pub phases: u8,
}

/// Why a plug-in request was refused; the control API answers 400 with this as the reason,
/// which names the request field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlugRequestError {
    /// `charger` is not `charger-N` with N >= 1.
    #[error("charger: not a charger id (got {got:?})")]
    NotACharger { got: String },
    /// A numeric field outside its range.
    #[error("{field}: must be within [{lo}, {hi}] (got {value})")]
    OutOfRange {
        field: &'static str,
        value: f64,
        lo: f64,
        hi: f64,
    },
    /// `phases` other than 1 or 3.
    #[error("phases: must be 1 or 3 (got {phases})")]
    Phases { phases: u8 },
    /// The plant refused the car (no such charger, or occupied).
    #[error("charger: {0}")]
    Refused(#[from] PlugError),
}

impl PlugRequest {
    /// The 0-based charger index of `charger-N`.
    fn charger_index(&self) -> Result<usize, PlugRequestError> {
        self.charger
            .strip_prefix("charger-")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n >= 1)
            .map(|n| n - 1)
            .ok_or_else(|| PlugRequestError::NotACharger {
                got: self.charger.clone(),
            })
    }

    /// Every numeric field within its range, the first bad one named.
    fn check_ranges(&self) -> Result<(), PlugRequestError> {
        let checks: [(&'static str, f64, f64, f64); 5] = [
            ("battery_kwh", self.battery_kwh, 1.0, 300.0),
            ("soc_pct", self.soc_pct, 0.0, 100.0),
            ("target_soc_pct", self.target_soc_pct, 0.0, 100.0),
            ("stay_h", self.stay_h, 0.01, 96.0),
            ("onboard_a", self.onboard_a, 6.0, 80.0),
        ];
        for (field, value, lo, hi) in checks {
            if !(value.is_finite() && value >= lo && value <= hi) {
                return Err(PlugRequestError::OutOfRange {
                    field,
                    value,
                    lo,
                    hi,
                });
            }
        }
        if self.phases != 1 && self.phases != 3 {
            return Err(PlugRequestError::Phases {
                phases: self.phases,
            });
        }
        Ok(())
    }
}

fn default_battery_kwh() -> f64 {
    60.0
}
fn default_soc_pct() -> f64 {
    30.0
}
fn default_target_pct() -> f64 {
    80.0
}
fn default_stay_h() -> f64 {
    4.0
}
fn default_onboard_a() -> f64 {
    32.0
}
fn default_phases() -> u8 {
    3
}

/// The truth the control API serves (`GET /truth`).
#[derive(Debug, Clone, Serialize)]
pub struct Truth {
    pub sim_time: DateTime<Utc>,
    pub speed: f64,
    pub grid: GridTruth,
    pub pv: PvView,
    pub battery: BatteryView,
    pub building: BuildingTruth,
    pub chargers: Vec<ChargerTruth>,
    pub kpis: Kpis,
    pub faults: Vec<ActiveFault>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GridTruth {
    pub power_w: f64,
    pub phase_w: [f64; 3],
    pub import_limit_w: f64,
    pub export_limit_w: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildingTruth {
    pub power_w: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChargerTruth {
    pub id: String,
    pub state: Mode3State,
    /// Highest phase current, A.
    pub current_a: f64,
    pub setpoint_a: f64,
    pub applied_max_a: f64,
    pub safe_current_a: f64,
    pub remaining_validity_s: u32,
    pub power_w: f64,
    pub phases: u8,
    pub vehicle: Option<VehicleView>,
}

impl ChargerTruth {
    fn from_view(c: &ChargerView) -> Self {
        ChargerTruth {
            id: c.id.clone(),
            state: c.state,
            current_a: c.current_a.iter().copied().fold(0.0, f64::max),
            setpoint_a: c.setpoint_a,
            applied_max_a: c.applied_max_a,
            safe_current_a: c.safe_current_a,
            remaining_validity_s: c.remaining_validity_s,
            power_w: c.power_w,
            phases: c.phases,
            vehicle: c.vehicle.clone(),
        }
    }
}

/// State shared by the clock, the Modbus listeners and the control API.
pub(crate) struct Shared {
    plant: Mutex<Plant>,
    view: RwLock<Arc<StationView>>,
    faults: Mutex<FaultTable>,
    scheduled: Mutex<Vec<(DateTime<Utc>, FaultRequest)>>,
    device_ids: Vec<String>,
    speed: f64,
    step_s: f64,
    import_limit_w: f64,
    export_limit_w: f64,
}

/// Lock a mutex, recovering the data if a panicking thread poisoned it (the simulator's state
/// stays usable; a panic is already logged by the task that had it).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn publish(&self, plant: &Plant) {
        let v = Arc::new(plant.view());
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = v;
    }

    /// Step the plant until its clock reaches `target` (at most `max_steps` steps). Faults start
    /// and end between steps, so a timed fault acts on the physics for exactly its window
    /// (to the step) however far one call advances.
    fn advance_to(&self, target: DateTime<Utc>, max_steps: usize) {
        let mut plant = lock(&self.plant);
        let mut steps = 0;
        loop {
            let now = plant.now();
            self.sync_faults(now, &mut plant);
            let remaining = (target - now).num_milliseconds() as f64 / 1000.0;
            if remaining < 1e-3 || steps >= max_steps {
                break;
            }
            plant.step(remaining.min(self.step_s));
            steps += 1;
        }
        self.publish(&plant);
    }

    /// Start the scheduled faults that are due, drop the ones whose time is up, and tell the
    /// plant when the BMS alarm changes.
    fn sync_faults(&self, now: DateTime<Utc>, plant: &mut Plant) {
        let mut scheduled = lock(&self.scheduled);
        let mut faults = lock(&self.faults);
        let alarm_before = faults.bms_alarm();
        while scheduled.first().is_some_and(|(at, _)| *at <= now) {
            let (at, req) = scheduled.remove(0);
            match faults.add(&req, &self.device_ids, at) {
                Ok(id) => {
                    tracing::info!(id, device = %req.device, kind = ?req.kind, "scheduled fault starts")
                }
                Err(e) => tracing::warn!(error = %e, "scheduled fault refused"),
            }
        }
        faults.expire(now);
        let alarm = faults.bms_alarm();
        if alarm != alarm_before {
            plant.set_bms_alarm(alarm);
        }
    }

    pub(crate) fn truth(&self) -> Truth {
        let plant = lock(&self.plant);
        let v = plant.view();
        let kpis = plant.kpis();
        drop(plant);
        Truth {
            sim_time: v.sim_time,
            speed: self.speed,
            grid: GridTruth {
                power_w: v.grid_meter.power_w,
                phase_w: v.grid_meter.phase_w,
                import_limit_w: self.import_limit_w,
                export_limit_w: self.export_limit_w,
            },
            building: BuildingTruth {
                power_w: v.building_meter.power_w,
            },
            chargers: v.chargers.iter().map(ChargerTruth::from_view).collect(),
            pv: v.pv,
            battery: v.battery,
            kpis,
            faults: lock(&self.faults).active().to_vec(),
        }
    }

    pub(crate) fn inject(&self, req: &FaultRequest) -> Result<u64, FaultError> {
        let mut plant = lock(&self.plant);
        let mut faults = lock(&self.faults);
        let id = faults.add(req, &self.device_ids, plant.now())?;
        plant.set_bms_alarm(faults.bms_alarm());
        drop(faults);
        self.publish(&plant);
        Ok(id)
    }

    pub(crate) fn clear_faults(&self) {
        let mut plant = lock(&self.plant);
        lock(&self.faults).clear();
        lock(&self.scheduled).clear();
        plant.set_bms_alarm(false);
        self.publish(&plant);
    }

    pub(crate) fn plug(&self, req: &PlugRequest) -> Result<(), PlugRequestError> {
        let index = req.charger_index()?;
        req.check_ranges()?;
        let mut plant = lock(&self.plant);
        let spec = VehicleSpec {
            kind: VehicleKind::Manual,
            battery_wh: req.battery_kwh * 1000.0,
            soc_pct: req.soc_pct,
            target_soc_pct: req.target_soc_pct,
            onboard_max_a: req.onboard_a,
            phases: req.phases,
            stay_s: req.stay_h * 3600.0,
        };
        plant.plug_vehicle(index, spec)?;
        // Show the plugged car at once (mode-3 state B or C), also while the clock stands still.
        plant.step(0.0);
        self.publish(&plant);
        Ok(())
    }
}

impl Station for Shared {
    fn view(&self) -> Arc<StationView> {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn apply(&self, command: Command) -> Result<(), CommandError> {
        let mut plant = lock(&self.plant);
        plant.apply(command)?;
        self.publish(&plant);
        Ok(())
    }

    fn wire_faults(&self, device: &str) -> WireFaults {
        lock(&self.faults).wire_faults(device)
    }
}

/// A running simulator. Dropping the handle stops it too (without waiting for its tasks).
pub struct SimHandle {
    pub addrs: SimAddrs,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl SimHandle {
    /// The truth now: true state and running scorecard.
    pub fn truth(&self) -> Truth {
        self.shared.truth()
    }

    /// What every device shows now.
    pub fn view(&self) -> Arc<StationView> {
        self.shared.view()
    }

    /// Simulated time now.
    pub fn now(&self) -> DateTime<Utc> {
        self.view().sim_time
    }

    /// A cloneable source of simulated time, for a controller clock that follows the simulator.
    pub fn time_source(&self) -> impl Fn() -> DateTime<Utc> + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || shared.view().sim_time
    }

    /// Inject a fault (as `POST /faults`).
    pub fn inject(&self, req: &FaultRequest) -> Result<u64, FaultError> {
        self.shared.inject(req)
    }

    /// Clear every fault, scheduled ones included (as `DELETE /faults`).
    pub fn clear_faults(&self) {
        self.shared.clear_faults()
    }

    /// Plug a car into a charger (as `POST /vehicles`).
    pub fn plug(&self, req: &PlugRequest) -> Result<(), PlugRequestError> {
        self.shared.plug(req)
    }

    /// Step the simulated clock by `secs` now (useful with speed 0).
    pub fn advance(&self, secs: f64) {
        let target = self.now() + chrono::Duration::milliseconds((secs * 1000.0).round() as i64);
        self.shared.advance_to(target, usize::MAX);
    }

    /// A child token: cancelled when the simulator stops.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.child_token()
    }

    /// Stop every task and wait for them.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn bind(addr: SocketAddr, device: &str) -> Result<TcpListener, SimError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| SimError::Bind {
            device: device.to_string(),
            addr,
            source,
        })
}

fn port(base: Option<u16>, offset: u16) -> Result<u16, SimError> {
    match base {
        None => Ok(0),
        Some(b) => b.checked_add(offset).ok_or(SimError::Setting {
            key: "port_base",
            problem: format!("{b} + {offset} exceeds 65535"),
        }),
    }
}

/// Start a simulator: bind every listener, start the clock, serve until cancelled.
pub async fn spawn(config: SimConfig) -> Result<SimHandle, SimError> {
    check_settings(&config)?;
    let shared = Arc::new(build_shared(&config)?);
    let n_chargers = shared.device_ids.len() - FIXED_DEVICES.len();
    let devices = bind_devices(config.bind, config.port_base, n_chargers).await?;
    check_profiles(&config.profiles, &devices)?;
    let (api_listener, api_addr) =
        bind_one(config.bind, config.port_base, port_offset::API, "api").await?;

    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let addrs = serve_devices(
        devices,
        &config.profiles,
        api_addr,
        &shared,
        &tracker,
        &cancel,
    );
    tracker.spawn(api::serve(api_listener, shared.clone(), cancel.clone()));
    if config.speed > 0.0 {
        tracker.spawn(run_clock(shared.clone(), cancel.clone()));
    }
    Ok(SimHandle {
        addrs,
        shared,
        cancel,
        tracker,
    })
}

/// The devices every station has, in the order of their port offsets; chargers follow.
const FIXED_DEVICES: [(u16, &str, DeviceKind); 4] = [
    (port_offset::PV, "pv", DeviceKind::Pv),
    (port_offset::BATTERY, "battery", DeviceKind::Battery),
    (port_offset::GRID_METER, "grid-meter", DeviceKind::GridMeter),
    (
        port_offset::BUILDING_METER,
        "building-meter",
        DeviceKind::BuildingMeter,
    ),
];

/// Refuse a speed or a physics step the clock cannot run with.
fn check_settings(config: &SimConfig) -> Result<(), SimError> {
    if !(config.speed.is_finite() && config.speed >= 0.0) {
        return Err(SimError::Setting {
            key: "speed",
            problem: format!("must be >= 0 (got {})", config.speed),
        });
    }
    if !(config.step_s.is_finite() && config.step_s > 0.0 && config.step_s <= 60.0) {
        return Err(SimError::Setting {
            key: "step_s",
            problem: format!("must be within (0, 60] (got {})", config.step_s),
        });
    }
    Ok(())
}

/// Every profiled device names a device of the station whose kind its profile fits.
fn check_profiles(
    profiles: &[wire::profile::ProfiledSpec],
    devices: &[BoundDevice],
) -> Result<(), SimError> {
    for p in profiles {
        let problem = match devices.iter().find(|d| d.spec.id == p.device) {
            None => format!("{}: the station has no such device", p.device),
            Some(d) if !p.fits(d.spec.kind) => format!(
                "{}: profile {} is a {} profile",
                p.device, p.profile.name, p.profile.kind
            ),
            Some(_) => continue,
        };
        return Err(SimError::Setting {
            key: "profiles",
            problem,
        });
    }
    Ok(())
}

/// The plant at its start, its first view, the device ids and the scheduled faults.
fn build_shared(config: &SimConfig) -> Result<Shared, SimError> {
    let scenario = &config.scenario;
    // Every scheduled fault, the BMS alarm included, goes through the fault table (so that
    // the truth lists it and `DELETE /faults` clears it); the plant gets none of its own.
    let mut plant_scenario = scenario.clone();
    plant_scenario.faults.clear();
    let plant = match config.start {
        Some(start) => Plant::with_start(&plant_scenario, config.seed, start),
        None => Plant::new(&plant_scenario, config.seed),
    };
    let view = plant.view();
    let mut device_ids: Vec<String> = FIXED_DEVICES
        .iter()
        .map(|(_, id, _)| id.to_string())
        .collect();
    device_ids.extend((0..view.chargers.len()).map(charger_id));
    let scheduled = scheduled_faults(scenario, &device_ids)?;
    Ok(Shared {
        view: RwLock::new(Arc::new(view)),
        plant: Mutex::new(plant),
        faults: Mutex::new(FaultTable::new()),
        scheduled: Mutex::new(scheduled),
        device_ids,
        speed: config.speed,
        step_s: config.step_s,
        import_limit_w: scenario.import_limit_w(),
        export_limit_w: scenario.export_limit_w(),
    })
}

/// The scenario's faults as requests in start order; they join the fault table when their
/// time comes.
fn scheduled_faults(
    scenario: &Scenario,
    device_ids: &[String],
) -> Result<Vec<(DateTime<Utc>, FaultRequest)>, SimError> {
    let mut scheduled = Vec::new();
    for (index, sf) in scenario.scheduled_faults().into_iter().enumerate() {
        let req = scheduled_request(&sf.spec);
        req.validate(device_ids)
            .map_err(|source| SimError::ScheduledFault { index, source })?;
        scheduled.push((sf.start, req));
    }
    scheduled.sort_by_key(|(at, _)| *at);
    Ok(scheduled)
}

/// A listener bound for one device.
struct BoundDevice {
    spec: DeviceSpec,
    listener: TcpListener,
    addr: SocketAddr,
}

/// Bind one listener per device: the fixed devices, then `n_chargers` chargers.
async fn bind_devices(
    ip: IpAddr,
    base: Option<u16>,
    n_chargers: usize,
) -> Result<Vec<BoundDevice>, SimError> {
    let mut specs: Vec<(u16, DeviceSpec)> = FIXED_DEVICES
        .iter()
        .map(|&(offset, id, kind)| {
            let id = id.to_string();
            (offset, DeviceSpec { id, kind })
        })
        .collect();
    for i in 0..n_chargers {
        let offset = u16::try_from(i)
            .ok()
            .and_then(|i| port_offset::FIRST_CHARGER.checked_add(i))
            .ok_or(SimError::Setting {
                key: "chargers",
                problem: format!("too many chargers ({n_chargers})"),
            })?;
        specs.push((offset, DeviceSpec::charger(i)));
    }
    let mut bound = Vec::with_capacity(specs.len());
    for (offset, spec) in specs {
        let (listener, addr) = bind_one(ip, base, offset, &spec.id).await?;
        bound.push(BoundDevice {
            spec,
            listener,
            addr,
        });
    }
    Ok(bound)
}

/// Bind the listener at `base + offset` (or an ephemeral port) and read back its address.
async fn bind_one(
    ip: IpAddr,
    base: Option<u16>,
    offset: u16,
    device: &str,
) -> Result<(TcpListener, SocketAddr), SimError> {
    let listener = bind(SocketAddr::new(ip, port(base, offset)?), device).await?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind {
        device: device.to_string(),
        addr: SocketAddr::new(ip, 0),
        source,
    })?;
    Ok((listener, addr))
}

/// Start one Modbus server task per bound device; the addresses they listen on.
fn serve_devices(
    devices: Vec<BoundDevice>,
    profiles: &[wire::profile::ProfiledSpec],
    api: SocketAddr,
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> SimAddrs {
    let unset = SocketAddr::new(api.ip(), 0);
    let mut addrs = SimAddrs {
        pv: unset,
        battery: unset,
        grid_meter: unset,
        building_meter: unset,
        api,
        chargers: Vec::new(),
    };
    for BoundDevice {
        spec,
        listener,
        addr,
    } in devices
    {
        match spec.kind {
            DeviceKind::Pv => addrs.pv = addr,
            DeviceKind::Battery => addrs.battery = addr,
            DeviceKind::GridMeter => addrs.grid_meter = addr,
            DeviceKind::BuildingMeter => addrs.building_meter = addr,
            DeviceKind::Charger { .. } => addrs.chargers.push(addr),
        }
        let station: Arc<dyn Station> = shared.clone();
        match profiles.iter().find(|p| p.device == spec.id) {
            Some(p) => {
                let served = wire::profile::ServedProfile::new(p.clone());
                let serve =
                    wire::serve_profiled_device(listener, spec, served, station, cancel.clone());
                tracker.spawn(serve);
            }
            None => {
                tracker.spawn(wire::serve_device(listener, spec, station, cancel.clone()));
            }
        }
    }
    addrs
}

/// The fault request of a scenario's scheduled fault.
fn scheduled_request(spec: &FaultSpec) -> FaultRequest {
    FaultRequest {
        device: spec.device.clone(),
        kind: spec.kind,
        duration_s: Some(spec.duration_s),
        latency_ms: spec.latency_ms,
        code: spec.exception_code,
        point: spec.point.clone(),
        value: spec.value.map(FaultValue::Number),
    }
}

/// Step the plant so that simulated time follows `speed` x real time. Ticks that are missed are
/// skipped; the next tick catches up to the target (bounded per tick so writes are never starved).
// The simulator's one wall-clock read: real elapsed time sets the simulated-time target.
#[allow(clippy::disallowed_methods)]
async fn run_clock(shared: Arc<Shared>, cancel: CancellationToken) {
    let tick = Duration::from_millis(20);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let origin_real = Instant::now();
    let origin_sim = shared.view().sim_time;
    // Enough steps per tick for 100,000x real time at 1 s steps.
    let max_steps = (2_000.0 / shared.step_s).ceil() as usize + 1;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = interval.tick() => {}
        }
        let elapsed = origin_real.elapsed().as_secs_f64() * shared.speed;
        let target = origin_sim + chrono::Duration::milliseconds((elapsed * 1000.0) as i64);
        let shared = shared.clone();
        // Stepping is CPU work: keep it off the async worker that also serves Modbus.
        if tokio::task::spawn_blocking(move || shared.advance_to(target, max_steps))
            .await
            .is_err()
        {
            tracing::error!("simulator clock step panicked; stopping the clock");
            break;
        }
    }
}
