//! The daemon's devices: one driver per configured device, read and written concurrently each
//! cycle (a cycle costs the slowest device, bounded by its timeout), with per-device state:
//! the last good reading and when it was taken, link state, errors, and whether the device-side
//! fallback (charger safe current, SunSpec revert timeouts) is configured on the current
//! connection.

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
}

/// One device with its driver and state.
pub struct Device {
    pub config: DeviceConfig,
    driver: Driver,
    /// Last good reading, with the station time it was taken.
    pub reading: Option<(DeviceReading, DateTime<Utc>)>,
    pub last_ok: Option<DateTime<Utc>>,
    pub last_error: Option<DeviceError>,
    pub errors_total: u64,
    /// Whether the last read was refused as bad data (the device is `degraded`).
    pub bad_data: bool,
    /// Station time of the last read, for the poll interval (station time, so a simulator
    /// running faster than real time is polled at its own pace).
    last_poll: Option<DateTime<Utc>>,
    /// `connects` count of the link when the fallback was last configured.
    configured_on: Option<u64>,
    /// Latency of the last request, s, and whether it succeeded (for metrics).
    pub last_requests: Vec<(f64, bool)>,
}

fn link_config(d: &DeviceConfig) -> LinkConfig {
    LinkConfig::new(d.endpoint.host.clone(), d.endpoint.port, d.endpoint.unit_id)
        .with_timeout(d.endpoint.timeout)
        .with_framing(d.endpoint.framing)
}

impl Device {
    pub fn new(config: DeviceConfig) -> Device {
        let link = link_config(&config);
        let driver = match (&config.role, &config.profile) {
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
            (role, _) => Self::builtin_driver(role, &config, link),
        };
        Device {
            config,
            driver,
            reading: None,
            last_ok: None,
            last_error: None,
            errors_total: 0,
            bad_data: false,
            last_poll: None,
            configured_on: None,
            last_requests: Vec::with_capacity(4),
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

    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// The link state as the status shows it: a device whose readings are refused is degraded.
    pub fn link_state(&self) -> LinkState {
        match self.driver.link().state() {
            LinkState::Online if self.bad_data => LinkState::Degraded,
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
        }
    }

    /// The last good reading if it is no older than `max_age` at `now`.
    pub fn fresh(&self, now: DateTime<Utc>, max_age: Duration) -> Option<&DeviceReading> {
        let (r, at) = self.reading.as_ref()?;
        let age = (now - *at).to_std().unwrap_or(Duration::ZERO);
        (age <= max_age).then_some(r)
    }

    fn note(&mut self, started: Instant, result: &Result<(), DeviceError>) {
        self.last_requests
            .push((started.elapsed().as_secs_f64(), result.is_ok()));
        if let Err(e) = result {
            self.errors_total += 1;
            self.last_error = Some(e.clone());
        }
    }

    /// Configure the device-side fallback once per connection.
    async fn ensure_fallback(&mut self) {
        if matches!(self.driver, Driver::Meter(_) | Driver::Profiled(_)) {
            // Meters take no setpoints; a profiled device has no device-side fallback to
            // configure (its setpoints' refresh is checked against the poll interval).
            return;
        }
        let connects = self.driver.link().stats().connects;
        if !self.driver.link().is_connected() || self.configured_on == Some(connects) {
            return;
        }
        let started = crate::clock::monotonic();
        let result = match (&mut self.driver, &self.config.role) {
            (Driver::Pv(d), DeviceRole::Pv { revert_s, .. }) => {
                d.configure_fallback(*revert_s).await
            }
            (Driver::Battery(d), DeviceRole::Battery { revert_s, .. }) => {
                d.configure_fallback(*revert_s).await
            }
            (Driver::Charger(d), DeviceRole::Charger(c)) => {
                d.configure_fallback(c.safe_current_a).await
            }
            _ => Ok(()),
        };
        match &result {
            Ok(()) => {
                self.configured_on = Some(connects);
                tracing::info!(device = %self.config.id, "device-side fallback configured");
            }
            Err(e) => {
                tracing::warn!(device = %self.config.id, error = %e, "cannot configure the device-side fallback")
            }
        }
        self.note(started, &result);
    }

    /// Read the device unless its poll interval has not passed yet.
    async fn read(&mut self, now: DateTime<Utc>) {
        self.last_requests.clear();
        if let Some(last) = self.last_poll {
            let since = (now - last).to_std().unwrap_or(Duration::ZERO);
            if since + Duration::from_millis(5) < self.config.endpoint.poll_interval {
                return;
            }
        }
        let started = crate::clock::monotonic();
        self.last_poll = Some(now);
        let result = match &mut self.driver {
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
                self.reading = Some((r, now));
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
    }

    async fn write(&mut self, sp: Setpoint) {
        if !self.driver.link().is_connected() {
            // A write to a dead link would only wait out the back-off; the next read reconnects.
            return;
        }
        let started = crate::clock::monotonic();
        let result = match (&mut self.driver, sp) {
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
        self.note(started, &result);
    }

    async fn safe(&mut self) {
        let result = match &mut self.driver {
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

/// All devices of the station.
pub struct DeviceSet {
    pub devices: Vec<Device>,
}

impl DeviceSet {
    pub fn new(config: &StationConfig) -> Self {
        DeviceSet {
            devices: config.devices.iter().cloned().map(Device::new).collect(),
        }
    }

    pub fn get(&self, id: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.config.id == id)
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.devices.iter().position(|d| d.config.id == id)
    }

    /// Read every device concurrently.
    pub async fn read_all(&mut self, now: DateTime<Utc>) {
        join_all(self.devices.iter_mut().map(|d| {
            let span = tracing::info_span!("device", id = %d.config.id);
            d.read(now).instrument(span)
        }))
        .await;
    }

    /// Write setpoints concurrently: `(device index, setpoint)`.
    pub async fn write_all(&mut self, setpoints: &[(usize, Setpoint)]) {
        let mut writes: Vec<Option<Setpoint>> = vec![None; self.devices.len()];
        for (i, sp) in setpoints {
            if let Some(slot) = writes.get_mut(*i) {
                *slot = Some(*sp);
            }
        }
        join_all(self.devices.iter_mut().zip(writes).filter_map(|(d, sp)| {
            let sp = sp?;
            let span = tracing::info_span!("device", id = %d.config.id);
            Some(d.write(sp).instrument(span))
        }))
        .await;
    }

    /// Write safe setpoints to every device that has one (chargers to their safe current,
    /// battery to 0 W), concurrently.
    pub async fn safe_all(&mut self) {
        join_all(self.devices.iter_mut().map(|d| {
            let span = tracing::info_span!("device", id = %d.config.id);
            d.safe().instrument(span)
        }))
        .await;
    }
}
