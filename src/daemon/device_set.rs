//! The daemon's devices: one driver per configured device, read and written concurrently each
//! cycle (a cycle costs the slowest device, bounded by its timeout), with per-device state:
//! the last good reading and when it was taken, link state, errors, and whether the device-side
//! fallback (charger safe current, SunSpec revert timeouts) is configured on the current
//! connection. Connecting and SunSpec discovery run in tasks of their own (module `prepare`),
//! never in the cycle.

mod prepare;
pub use prepare::Background;

use crate::config::{DeviceConfig, DeviceRole, StationConfig};
use crate::daemon::status::DeviceStatus;
use crate::devices::battery::{Battery, BatteryConfig, BatteryReading};
use crate::devices::charger::{ChargerConfig, ChargerDriver, ChargerProfile, ChargerReading};
use crate::devices::error::DeviceError;
use crate::devices::link::{Link, LinkConfig, LinkState};
use crate::devices::meter::{Meter, MeterConfig, MeterReading};
use crate::devices::profile::charger::ProfileCharger;
use crate::devices::profile::{ProfileDevice, ProfiledConfig, ProfiledReading};
use crate::devices::pv::{PvConfig, PvInverter, PvReading};
use chrono::{DateTime, Utc};
use futures::future::join_all;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// A validated reading of one device.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceReading {
    Pv(PvReading),
    Battery(BatteryReading),
    Meter(MeterReading),
    Charger(ChargerReading),
}

/// Seconds a charger's remaining validity may exceed `validity_s` (its own rounding).
const VALIDITY_SLACK_S: u32 = 2;

/// What the plan asks one device to do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Setpoint {
    PvLimitPct(f64),
    BatteryW(f64),
    ChargerA(f64),
}

enum Driver {
    Pv(PvInverter),
    Battery(Battery),
    Meter(Meter),
    Charger(Box<dyn ChargerDriver>),
    /// A meter, PV inverter or battery driven by a device profile.
    Profiled(ProfileDevice),
}

impl Driver {
    fn link(&self) -> &Link {
        match self {
            Driver::Pv(d) => d.link(),
            Driver::Battery(d) => d.link(),
            Driver::Meter(d) => d.link(),
            Driver::Charger(d) => d.link(),
            Driver::Profiled(d) => d.link(),
        }
    }

    fn link_mut(&mut self) -> &mut Link {
        match self {
            Driver::Pv(d) => d.link_mut(),
            Driver::Battery(d) => d.link_mut(),
            Driver::Meter(d) => d.link_mut(),
            Driver::Charger(d) => d.link_mut(),
            Driver::Profiled(d) => d.link_mut(),
        }
    }
}

/// One device with its driver and state.
pub struct Device {
    pub config: DeviceConfig,
    /// The driver; `None` while `away` is preparing it.
    driver: Option<Driver>,
    away: Option<prepare::Away>,
    /// Last good reading, with the station time it was taken.
    pub reading: Option<(DeviceReading, DateTime<Utc>)>,
    pub last_ok: Option<DateTime<Utc>>,
    pub last_error: Option<DeviceError>,
    pub errors_total: u64,
    /// Whether the last read was refused as bad data (the device is `degraded`).
    pub bad_data: bool,
    /// Station-monotonic time of the last read attempt and of the last good reading (see
    /// [`crate::clock::Ticks`]): poll intervals and ages never follow a wall-clock step.
    last_poll: Option<Duration>,
    read_at: Option<Duration>,
    /// `connects` count of the link when the fallback was last configured.
    configured_on: Option<u64>,
    /// Why the device-side fallback cannot be trusted: not configured (the write or its read
    /// back failed), or a charger that keeps a setpoint longer than `validity_s`.
    fallback_problem: Option<String>,
    /// A read or write of this cycle is under way (left set when the cycle budget cut it off).
    in_flight: bool,
    /// Latency of the last request, s, and whether it succeeded (for metrics).
    pub last_requests: Vec<(f64, bool)>,
}

fn link_config(d: &DeviceConfig) -> LinkConfig {
    LinkConfig::new(d.endpoint.host.clone(), d.endpoint.port, d.endpoint.unit_id)
        .with_timeout(d.endpoint.timeout)
        .with_framing(d.endpoint.framing)
}

/// The driver a device's config asks for.
fn build_driver(config: &DeviceConfig) -> Driver {
    let link = link_config(config);
    match (&config.role, &config.profile) {
        (DeviceRole::Pv { rating_w, .. } | DeviceRole::Battery { rating_w, .. }, Some(p)) => {
            Driver::Profiled(ProfileDevice::new(
                p.clone(),
                ProfiledConfig {
                    link,
                    invert: config.endpoint.invert,
                    rating_w: *rating_w,
                },
            ))
        }
        (DeviceRole::GridMeter | DeviceRole::BuildingMeter, Some(p)) => {
            Driver::Profiled(ProfileDevice::new(
                p.clone(),
                ProfiledConfig {
                    link,
                    invert: config.endpoint.invert,
                    rating_w: None,
                },
            ))
        }
        (role, _) => builtin_driver(role, config, link),
    }
}

/// Configure the device-side fallback (`None`: the device has none to configure: a meter
/// takes no setpoints, a profiled device's setpoint refresh is checked against its poll).
async fn configure_fallback(
    driver: &mut Driver,
    role: &DeviceRole,
) -> Option<Result<(), DeviceError>> {
    match (driver, role) {
        (Driver::Pv(d), DeviceRole::Pv { revert_s, .. }) => {
            Some(d.configure_fallback(*revert_s).await)
        }
        (Driver::Battery(d), DeviceRole::Battery { revert_s, .. }) => {
            Some(d.configure_fallback(*revert_s).await)
        }
        (Driver::Charger(d), DeviceRole::Charger(c)) => {
            Some(d.configure_fallback(c.safe_current_a).await)
        }
        _ => None,
    }
}

impl Device {
    pub fn new(config: DeviceConfig) -> Device {
        Device {
            driver: Some(build_driver(&config)),
            away: None,
            config,
            reading: None,
            last_ok: None,
            last_error: None,
            errors_total: 0,
            bad_data: false,
            last_poll: None,
            read_at: None,
            configured_on: None,
            fallback_problem: None,
            in_flight: false,
            last_requests: Vec::with_capacity(4),
        }
    }
}

/// The SunSpec and built-in charger drivers.
fn builtin_driver(role: &DeviceRole, config: &DeviceConfig, link: LinkConfig) -> Driver {
    match role {
        DeviceRole::Pv { rating_w, .. } => Driver::Pv(PvInverter::new(PvConfig {
            invert: config.endpoint.invert,
            rating_w: *rating_w,
            ..PvConfig::new(link)
        })),
        DeviceRole::Battery { rating_w, .. } => Driver::Battery(Battery::new(BatteryConfig {
            invert: config.endpoint.invert,
            rating_w: *rating_w,
            ..BatteryConfig::new(link)
        })),
        DeviceRole::GridMeter | DeviceRole::BuildingMeter => {
            Driver::Meter(Meter::new(MeterConfig {
                invert: config.endpoint.invert,
                ..MeterConfig::new(link)
            }))
        }
        DeviceRole::Charger(c) => match &c.profile {
            crate::config::ChargerProfile::Alfen => {
                Driver::Charger(ChargerProfile::Alfen.build(ChargerConfig {
                    max_current_a: c.rating_a,
                    ..ChargerConfig::new(link)
                }))
            }
            crate::config::ChargerProfile::Profile(p) => {
                Driver::Charger(Box::new(ProfileCharger::new(
                    p.clone(),
                    ProfiledConfig {
                        link,
                        invert: false,
                        rating_w: Some(f64::from(c.phases) * 230.0 * c.rating_a),
                    },
                )))
            }
        },
    }
}

impl Device {
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// The link state as the status shows it: a device whose readings are refused is degraded.
    pub fn link_state(&self) -> LinkState {
        let link = match (&self.driver, &self.away) {
            (Some(d), _) => d.link().state(),
            (None, Some(away)) => away.state(),
            (None, None) => LinkState::Offline,
        };
        match link {
            LinkState::Online if self.bad_data || self.fallback_problem.is_some() => {
                LinkState::Degraded
            }
            state => state,
        }
    }

    pub fn status(&self) -> DeviceStatus {
        DeviceStatus {
            id: self.config.id.clone(),
            link: self.link_state(),
            last_ok: self.last_ok,
            last_error: self.last_error.as_ref().map(|e| e.to_string()),
            errors_total: self.errors_total,
            warning: self.fallback_problem.clone(),
        }
    }

    /// The last good reading if it is no older than `max_age` at station-monotonic `mono`.
    pub fn fresh(&self, mono: Duration, max_age: Duration) -> Option<&DeviceReading> {
        let (r, _) = self.reading.as_ref()?;
        let age = mono.saturating_sub(self.read_at?);
        (age <= max_age).then_some(r)
    }

    fn note(&mut self, started: Instant, result: &Result<(), DeviceError>) {
        self.last_requests
            .push((started.elapsed().as_secs_f64(), result.is_ok()));
        if let Err(e) = result {
            self.count_error(e.clone());
        }
    }

    fn count_error(&mut self, e: DeviceError) {
        self.errors_total += 1;
        self.last_error = Some(e);
    }

    /// A charger whose setpoint stays valid longer than `validity_s` falls back later than the
    /// config promises: degraded, with the reason. (The Alfen map has no register to write the
    /// validity time; it is a device setting, so it is checked, not set.)
    fn check_validity(&mut self, r: &DeviceReading) {
        let (DeviceReading::Charger(c), DeviceRole::Charger(cfg)) = (r, &self.config.role) else {
            return;
        };
        if c.remaining_validity_s == u32::MAX {
            // A profiled charger whose current setpoint declares no refresh_s.
            self.fallback_problem = Some(format!(
                "the charger keeps a current setpoint until it is rewritten (no validity time, validity_s = {} s not enforced by the device): it has no fallback of its own if the controller stops",
                cfg.validity_s
            ));
        } else if c.remaining_validity_s > cfg.validity_s + VALIDITY_SLACK_S {
            self.fallback_problem = Some(format!(
                "the charger keeps a setpoint for {} s, longer than validity_s = {} s: its own fallback comes late",
                c.remaining_validity_s, cfg.validity_s
            ));
        } else if self
            .fallback_problem
            .as_deref()
            .is_some_and(|p| p.starts_with("the charger keeps"))
        {
            self.fallback_problem = None;
        }
    }

    /// Configure the device-side fallback once per connection (a connection made in the
    /// background is configured there).
    async fn ensure_fallback(&mut self) {
        let Some(driver) = self.driver.as_mut() else {
            return;
        };
        let connects = driver.link().stats().connects;
        if !driver.link().is_connected() || self.configured_on == Some(connects) {
            return;
        }
        let started = crate::clock::monotonic();
        let Some(result) = configure_fallback(driver, &self.config.role).await else {
            return;
        };
        self.apply_fallback(connects, &result);
        self.note(started, &result);
    }

    /// Record the fallback configured on connection number `connects`.
    fn apply_fallback(&mut self, connects: u64, result: &Result<(), DeviceError>) {
        match result {
            Ok(()) => {
                self.configured_on = Some(connects);
                self.fallback_problem = None;
                tracing::info!(device = %self.config.id, "device-side fallback configured and read back");
            }
            Err(e) => {
                if self.fallback_problem.is_none() {
                    tracing::warn!(device = %self.config.id, error = %e, "cannot configure the device-side fallback");
                }
                self.fallback_problem = Some(format!("device-side fallback not configured: {e}"));
            }
        }
    }

    /// Read the device unless its poll interval has not passed yet (station-monotonic `mono`);
    /// a good reading is stamped with the wall time `now`.
    /// A device that needs connecting or discovery is handed to a task of its own and skips
    /// the read (stale) until that task is done.
    async fn read(&mut self, now: DateTime<Utc>, mono: Duration, bg: &Background) {
        self.last_requests.clear();
        if !self.rejoin() || self.send_away_if_needed(bg) {
            return;
        }
        if let Some(last) = self.last_poll {
            if mono.saturating_sub(last) + Duration::from_millis(5)
                < self.config.endpoint.poll_interval
            {
                return;
            }
        }
        let Some(driver) = self.driver.as_mut() else {
            return;
        };
        let started = crate::clock::monotonic();
        self.last_poll = Some(mono);
        self.in_flight = true;
        let result = match driver {
            Driver::Pv(d) => d.read().await.map(DeviceReading::Pv),
            Driver::Battery(d) => d.read().await.map(DeviceReading::Battery),
            Driver::Meter(d) => d.read().await.map(DeviceReading::Meter),
            Driver::Charger(d) => d.read().await.map(DeviceReading::Charger),
            Driver::Profiled(d) => d.read().await.map(|r| match r {
                ProfiledReading::Meter(m) => DeviceReading::Meter(m),
                ProfiledReading::Pv(p) => DeviceReading::Pv(p),
                ProfiledReading::Battery(b) => DeviceReading::Battery(b),
                ProfiledReading::Charger(c) => DeviceReading::Charger(c),
            }),
        };
        match result {
            Ok(r) => {
                self.check_validity(&r);
                self.reading = Some((r, now));
                self.read_at = Some(mono);
                self.last_ok = Some(now);
                self.bad_data = false;
                self.note(started, &Ok(()));
            }
            Err(e) => {
                let bad = matches!(e, DeviceError::BadData { .. });
                if bad != self.bad_data || self.last_error.as_ref() != Some(&e) {
                    tracing::warn!(device = %self.config.id, error = %e, "read failed");
                }
                self.bad_data = bad;
                self.note(started, &Err(e));
            }
        }
        self.ensure_fallback().await;
        self.in_flight = false;
    }

    /// The cycle's budget ran out while this device was mid-request: drop the connection (a
    /// late answer must not be taken for the next request's), and count the miss.
    fn abandon(&mut self, op: &'static str, budget: Duration) {
        if !self.in_flight {
            return;
        }
        self.in_flight = false;
        let Some(driver) = self.driver.as_mut() else {
            return;
        };
        if budget.is_zero() {
            // Shutdown: the safe setpoint follows at once, on a fresh connection.
            driver.link_mut().disconnect();
        } else {
            driver.link_mut().abandon();
        }
        let e = DeviceError::Timeout {
            op,
            after_ms: u64::try_from(budget.as_millis()).unwrap_or(u64::MAX),
        };
        tracing::warn!(device = %self.config.id, error = %e, "missed the cycle budget; the link reconnects");
        self.last_requests.push((budget.as_secs_f64(), false));
        self.errors_total += 1;
        self.last_error = Some(e);
    }

    async fn write(&mut self, sp: Setpoint) {
        let Some(driver) = self.driver.as_mut() else {
            // Away being prepared: stale, nothing is written to it this cycle.
            return;
        };
        if !driver.link().is_connected() || driver.needs_prepare() {
            // A write to a dead link would only wait out the back-off, one to an undiscovered
            // device would discover in the cycle: the next read sends it to be prepared.
            return;
        }
        let started = crate::clock::monotonic();
        self.in_flight = true;
        let result = match (driver, sp) {
            (Driver::Pv(d), Setpoint::PvLimitPct(p)) => d.set_limit_pct(p).await,
            (Driver::Battery(d), Setpoint::BatteryW(w)) => d.set_power_w(w).await,
            (Driver::Charger(d), Setpoint::ChargerA(a)) => d.set_current(a).await,
            (Driver::Profiled(d), Setpoint::PvLimitPct(p)) => d.set_limit_pct(p).await,
            (Driver::Profiled(d), Setpoint::BatteryW(w)) => d.set_power_w(w).await,
            _ => Err(DeviceError::InvalidRequest(format!(
                "setpoint {sp:?} does not fit device {}",
                self.config.id
            ))),
        };
        if let Err(e) = &result {
            tracing::warn!(device = %self.config.id, setpoint = ?sp, error = %e, "write failed");
        }
        self.in_flight = false;
        self.note(started, &result);
    }

    async fn safe(&mut self) {
        let Some(driver) = self.driver.as_mut() else {
            return;
        };
        let result = match driver {
            Driver::Battery(d) => d.safe().await,
            Driver::Charger(d) => d.safe().await,
            Driver::Profiled(d) if !d.profile().setpoints.is_empty() => d.safe().await,
            Driver::Profiled(_) => return,
            // The PV limit stays as last written and lapses by its own revert timeout.
            Driver::Pv(_) | Driver::Meter(_) => return,
        };
        match result {
            Ok(()) => tracing::info!(device = %self.config.id, "safe setpoint written"),
            Err(e) => {
                tracing::warn!(device = %self.config.id, error = %e, "cannot write the safe setpoint; the device falls back on its own")
            }
        }
    }
}

/// When the I/O of one cycle must be done: the instant, and the budget it came from.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: tokio::time::Instant,
    pub budget: Duration,
}

/// All devices of the station.
pub struct DeviceSet {
    pub devices: Vec<Device>,
    /// Where connecting and discovery run, off the cycle.
    background: Background,
}

impl DeviceSet {
    pub fn new(config: &StationConfig, background: Background) -> Self {
        DeviceSet {
            devices: config.devices.iter().cloned().map(Device::new).collect(),
            background,
        }
    }

    pub fn get(&self, id: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.config.id == id)
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.devices.iter().position(|d| d.config.id == id)
    }

    /// Read every device concurrently, until `deadline` at the latest: a device still reading
    /// then is abandoned (stale this cycle, its link reconnects).
    pub async fn read_all(&mut self, now: DateTime<Utc>, mono: Duration, deadline: Deadline) {
        let bg = &self.background;
        let reads = join_all(self.devices.iter_mut().map(|d| {
            let span = tracing::info_span!("device", id = %d.config.id);
            d.read(now, mono, bg).instrument(span)
        }));
        if tokio::time::timeout_at(deadline.at, reads).await.is_err() {
            self.abandon_in_flight("read within the cycle budget", deadline.budget);
        }
    }

    /// Drop every request still under way: the cycle budget ran out (the link degrades and
    /// backs off), or shutdown came (`budget` zero: the link reconnects at once for the safe
    /// setpoints).
    pub fn abandon_in_flight(&mut self, op: &'static str, budget: Duration) {
        for d in &mut self.devices {
            d.abandon(op, budget);
        }
    }

    /// Write setpoints concurrently, `(device index, setpoint)`, until `deadline` at the latest.
    pub async fn write_all(&mut self, setpoints: &[(usize, Setpoint)], deadline: Deadline) {
        let mut writes: Vec<Option<Setpoint>> = vec![None; self.devices.len()];
        for (i, sp) in setpoints {
            if let Some(slot) = writes.get_mut(*i) {
                *slot = Some(*sp);
            }
        }
        let writes = join_all(self.devices.iter_mut().zip(writes).filter_map(|(d, sp)| {
            let sp = sp?;
            let span = tracing::info_span!("device", id = %d.config.id);
            Some(d.write(sp).instrument(span))
        }));
        if tokio::time::timeout_at(deadline.at, writes).await.is_err() {
            self.abandon_in_flight("write within the cycle budget", deadline.budget);
        }
    }

    /// Write safe setpoints to every device that has one (chargers to their safe current,
    /// battery to 0 W), concurrently; connecting and discovery under way are cancelled first.
    pub async fn safe_all(&mut self) {
        self.background.cancel();
        join_all(self.devices.iter_mut().map(|d| {
            let span = tracing::info_span!("device", id = %d.config.id);
            async {
                d.recall().await;
                d.safe().await;
            }
            .instrument(span)
        }))
        .await;
    }
}
