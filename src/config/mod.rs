//! Station configuration: the raw serde layer (TOML file + `STATION__...` environment overrides,
//! unknown keys rejected) and its validation into a checked [`StationConfig`] before anything
//! starts. Every problem is reported at once, named by its dotted key.

pub mod issues;
pub mod planner;
pub mod policy;

pub use issues::{Issue, Issues};
pub use policy::{
    RawBatteryPolicy, RawChargerOverride, RawEveningReserve, RawGridPolicy, RawPolicy, RawTariff,
    RawTariffPeriod, RawVehiclePolicy,
};

use crate::devices::bus::{Parity, SerialSettings};
use crate::devices::link::Framing;
use crate::devices::profile::{self, Profile, ProfileKind};
use crate::dispatch::policy::Policy;
use chrono_tz::Tz;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: invalid configuration:\n{issues}")]
    Invalid { path: String, issues: Issues },
}

/// The whole file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub station: RawStation,
    #[serde(default)]
    pub api: RawApi,
    #[serde(default)]
    pub control: RawControl,
    #[serde(default)]
    pub devices: BTreeMap<String, RawDevice>,
    #[serde(default)]
    pub policy: RawPolicy,
    /// Fleet telemetry over MQTT; off when absent.
    #[serde(default)]
    pub mqtt: Option<crate::mqtt::config::RawMqtt>,
    /// The predictive planner; off when absent.
    #[serde(default)]
    pub planner: planner::RawPlanner,
    /// Battery health measurement (`crate::health`).
    #[serde(default)]
    pub battery_health: crate::health::RawHealth,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStation {
    pub name: String,
}

impl Default for RawStation {
    fn default() -> Self {
        RawStation {
            name: "station".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApi {
    pub listen: String,
    /// Bearer token for endpoints that change behaviour; empty = those endpoints are refused.
    pub token: String,
    /// Host names (or addresses) the API answers to besides the listen address and
    /// `localhost`/`127.0.0.1`/`[::1]` with the listen port; requests naming any other `Host`
    /// are refused (421), which defeats DNS rebinding.
    pub hosts: Vec<String>,
}

impl Default for RawApi {
    fn default() -> Self {
        RawApi {
            listen: "127.0.0.1:8080".into(),
            token: String::new(),
            hosts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawControl {
    /// Deadline for writing safe setpoints on shutdown, ms.
    pub shutdown_deadline_ms: u64,
    /// A reading older than this many cycles is stale.
    pub stale_after_cycles: u32,
    /// Share of the cycle the reads and writes of one cycle may take, %; a device that misses
    /// it is stale this cycle.
    pub cycle_budget_pct: f64,
}

impl Default for RawControl {
    fn default() -> Self {
        RawControl {
            shutdown_deadline_ms: 2000,
            stale_after_cycles: 3,
            cycle_budget_pct: 80.0,
        }
    }
}

/// One device as written; which fields apply depends on `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    pub kind: String,
    /// Host of a Modbus TCP device or gateway; with `transport = "rtu"` the serial port's path.
    pub host: String,
    /// TCP port (not with `transport = "rtu"`).
    #[serde(default)]
    pub port: u16,
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// Flip the device's sign convention into the project's one.
    #[serde(default)]
    pub invert: bool,
    /// Meters: `grid` or `building`.
    pub role: Option<String>,
    /// PV and battery: SunSpec revert timeout of limits and setpoints, s.
    pub revert_s: Option<u32>,
    /// Chargers: driver profile (`alfen`). Meters, PV and batteries: a device profile under
    /// `profiles/` next to the config file (`chint-dtsu666`); without one they speak SunSpec.
    pub profile: Option<String>,
    /// Chargers: hardware rating per phase, A.
    pub rating_a: Option<f64>,
    /// Chargers: 1 or 3.
    pub phases: Option<u8>,
    /// Chargers: current the charger falls back to when the daemon stops refreshing, A.
    pub safe_current_a: Option<f64>,
    /// Chargers: validity of a setpoint on the device, s.
    pub validity_s: Option<u32>,
    /// Chargers: minimum current while charging, A (IEC 61851: 6).
    pub min_a: Option<f64>,
    /// Battery and PV: rating used to reject absurd readings, kW.
    pub rating_kw: Option<f64>,
    /// Battery: usable energy, kWh, for a profile whose device does not report it (required
    /// then: without a capacity the battery cannot be planned with and stays unused).
    pub capacity_kwh: Option<f64>,
    /// `tcp` (Modbus TCP, default), `rtu-over-tcp` (RTU frames through a transparent RS485
    /// gateway at host:port; every device behind it shares one bus owner) or `rtu` (a serial
    /// port of this machine named by `host`, e.g. `/dev/ttyUSB0`; one bus owner per port).
    pub transport: Option<String>,
    /// RTU: line speed of the RS485 bus (default 9600); sets the port with `transport = "rtu"`
    /// and the inter-frame silence in both RTU transports.
    pub baud: Option<u32>,
    /// RTU: `none` (default), `even` or `odd`.
    pub parity: Option<String>,
    /// RTU: 1 (default) or 2.
    pub stop_bits: Option<u8>,
}

fn default_unit_id() -> u8 {
    1
}
fn default_timeout_ms() -> u64 {
    500
}
fn default_poll_ms() -> u64 {
    1000
}

/// Where and how to reach one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub unit_id: u8,
    pub timeout: Duration,
    pub poll_interval: Duration,
    pub invert: bool,
    pub framing: Framing,
}

/// What kind of device, with the settings of its kind.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceRole {
    Pv {
        revert_s: u32,
        rating_w: Option<f64>,
    },
    Battery {
        revert_s: u32,
        rating_w: Option<f64>,
        /// `capacity_kwh` in Wh, for devices that do not report their capacity.
        capacity_wh: Option<f64>,
    },
    GridMeter,
    BuildingMeter,
    Charger(ChargerSettings),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChargerSettings {
    pub profile: ChargerProfile,
    pub rating_a: f64,
    pub phases: u8,
    pub safe_current_a: f64,
    pub validity_s: u32,
    pub min_a: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChargerProfile {
    /// The built-in Alfen NG9xx driver.
    Alfen,
    /// A `kind = "charger"` device profile from `profiles/`.
    Profile(Arc<Profile>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    pub id: String,
    pub endpoint: Endpoint,
    pub role: DeviceRole,
    /// The device profile of a meter, PV inverter or battery (`None`: SunSpec).
    pub profile: Option<Arc<Profile>>,
}

impl DeviceConfig {
    /// The device profile of any kind of device, chargers included (`None`: built-in driver).
    pub fn any_profile(&self) -> Option<&Arc<Profile>> {
        match &self.role {
            DeviceRole::Charger(ChargerSettings {
                profile: ChargerProfile::Profile(p),
                ..
            }) => Some(p),
            _ => self.profile.as_ref(),
        }
    }
}

/// The checked configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct StationConfig {
    pub name: String,
    pub timezone: Tz,
    pub api_listen: SocketAddr,
    pub api_token: Option<String>,
    /// `api.hosts`, lower-cased.
    pub api_hosts: Vec<String>,
    pub shutdown_deadline: Duration,
    pub stale_after_cycles: u32,
    /// Share of the cycle its reads and writes may take (0.1..=0.95).
    pub cycle_budget: f64,
    /// Devices in a stable order: pv, battery, meters, then chargers by id.
    pub devices: Vec<DeviceConfig>,
    pub policy: Policy,
    pub mqtt: Option<crate::mqtt::config::MqttConfig>,
    /// The predictive planner (`None`: off, the rule policy runs alone).
    pub planner: Option<planner::PlannerSettings>,
    pub battery_health: crate::health::HealthConfig,
}

impl StationConfig {
    pub fn chargers(&self) -> impl Iterator<Item = (&DeviceConfig, &ChargerSettings)> {
        self.devices.iter().filter_map(|d| match &d.role {
            DeviceRole::Charger(c) => Some((d, c)),
            _ => None,
        })
    }

    pub fn device(&self, id: &str) -> Option<&DeviceConfig> {
        self.devices.iter().find(|d| d.id == id)
    }
}

fn order_key(d: &DeviceConfig) -> (u8, String) {
    let rank = match d.role {
        DeviceRole::Pv { .. } => 0,
        DeviceRole::Battery { .. } => 1,
        DeviceRole::GridMeter => 2,
        DeviceRole::BuildingMeter => 3,
        DeviceRole::Charger(_) => 4,
    };
    // charger-10 after charger-9: pad the numeric suffix.
    let id = match d.id.rsplit_once('-') {
        Some((p, n)) if n.chars().all(|c| c.is_ascii_digit()) => format!("{p}-{n:0>6}"),
        _ => d.id.clone(),
    };
    (rank, id)
}

/// Profiles named by devices, each loaded and checked once.
struct ProfileCache {
    dir: Option<PathBuf>,
    loaded: BTreeMap<String, Option<Arc<Profile>>>,
}

impl ProfileCache {
    /// The profile `name`, or `None` after pushing why not (its own issues once, by file and key).
    fn get(&mut self, name: &str, key: &str, issues: &mut Issues) -> Option<Arc<Profile>> {
        let Some(dir) = &self.dir else {
            issues.push(
                key,
                "profiles are read from `profiles/` next to the config file: load the config with config::load",
            );
            return None;
        };
        if let Some(p) = self.loaded.get(name) {
            if p.is_none() {
                issues.push(key, format!("profile {name:?} is invalid (see above)"));
            }
            return p.clone();
        }
        let p = match profile::load(dir, name) {
            Ok(p) => Some(Arc::new(p)),
            Err(found) => {
                issues.0.extend(found.0);
                issues.push(key, format!("profile {name:?} is invalid (see above)"));
                None
            }
        };
        self.loaded.insert(name.to_string(), p.clone());
        p
    }
}

/// The profile of a meter, PV or battery, checked against the device's kind and poll interval.
fn device_profile(
    raw: &RawDevice,
    key: &dyn Fn(&str) -> String,
    cache: &mut ProfileCache,
    issues: &mut Issues,
) -> Option<Arc<Profile>> {
    let name = raw.profile.as_deref()?;
    if raw.revert_s.is_some() {
        issues.push(
            key("revert_s"),
            "applies to SunSpec devices only: a profile's setpoints carry their own refresh",
        );
    }
    let p = cache.get(name, &key("profile"), issues)?;
    if p.kind.as_str() != raw.kind {
        issues.push(
            key("profile"),
            format!(
                "profile {name:?} is a {} profile, the device is a {}",
                p.kind.as_str(),
                raw.kind
            ),
        );
    }
    for sp in &p.setpoints {
        if sp
            .refresh
            .is_some_and(|r| r.as_millis() <= u128::from(raw.poll_interval_ms))
        {
            issues.push(
                key("poll_interval_ms"),
                format!(
                    "must be shorter than the refresh of setpoint {} in {} ({:?})",
                    sp.name, p.file, sp.refresh
                ),
            );
        }
    }
    if p.kind == ProfileKind::Pv && raw.rating_kw.is_none() && p.point("rating_w").is_none() {
        issues.push(
            key("rating_kw"),
            format!("required: profile {name:?} reads no rating_w"),
        );
    }
    if p.kind == ProfileKind::Battery
        && raw.capacity_kwh.is_none()
        && p.point("capacity_wh").is_none()
    {
        issues.push(
            key("capacity_kwh"),
            format!("required: profile {name:?} reads no capacity_wh"),
        );
    }
    Some(p)
}

/// `WatchdogSec` of the shipped unit (config/systemd/stationd.service).
pub const SERVICE_WATCHDOG: Duration = Duration::from_secs(10);

/// The problem, if any, with running cycles of `cycle_s` under a systemd watchdog of
/// `watchdog`: the daemon pings only while its last cycle completed within
/// max(2 x cycle_s, 5 s), so that window must fit in the watchdog period (for the key
/// `policy.cycle_s`).
pub fn watchdog_issue(cycle_s: f64, watchdog: Duration) -> Option<String> {
    let window =
        crate::daemon::liveness_window(Duration::from_secs_f64(cycle_s.clamp(0.0, 3600.0)));
    (window > watchdog).then(|| {
        format!(
            "the control loop shows liveness to systemd's watchdog within max(2 x cycle_s, 5 s) = {} s, longer than WatchdogSec = {} s; use cycle_s <= {} (got {cycle_s})",
            window.as_secs_f64(),
            watchdog.as_secs_f64(),
            watchdog.as_secs_f64() / 2.0
        )
    })
}

impl RawConfig {
    /// Validate everything, collecting every problem. Devices naming a profile need
    /// [`RawConfig::validate_in`] (the profiles' directory).
    pub fn validate(&self) -> Result<StationConfig, Issues> {
        self.validate_in(None)
    }

    /// As [`RawConfig::validate`], reading device profiles from `profiles_dir`.
    pub fn validate_in(&self, profiles_dir: Option<&Path>) -> Result<StationConfig, Issues> {
        let mut issues = Issues::new();
        let mut cache = ProfileCache {
            dir: profiles_dir.map(Path::to_path_buf),
            loaded: BTreeMap::new(),
        };
        let api_listen = self.check_api(&mut issues);
        self.check_control(&mut issues);
        let devices = self.check_devices(&mut cache, &mut issues);
        let policy = self.check_policy(&mut issues);
        let mqtt = self.mqtt.as_ref().and_then(|m| m.validate(&mut issues));
        let planner = self.check_planner(&devices, &mut issues);
        let health = self.battery_health.validate("battery_health", &mut issues);
        match (api_listen, policy, health) {
            (Some(api_listen), Some(policy), Some(battery_health)) if issues.is_empty() => {
                Ok(StationConfig {
                    name: self.station.name.clone(),
                    timezone: policy.timezone,
                    api_listen,
                    api_token: Some(self.api.token.clone()).filter(|t| !t.is_empty()),
                    api_hosts: self
                        .api
                        .hosts
                        .iter()
                        .map(|h| h.to_ascii_lowercase())
                        .collect(),
                    shutdown_deadline: Duration::from_millis(self.control.shutdown_deadline_ms),
                    stale_after_cycles: self.control.stale_after_cycles,
                    cycle_budget: self.control.cycle_budget_pct / 100.0,
                    devices,
                    policy,
                    mqtt,
                    battery_health,
                    planner,
                })
            }
            _ => Err(issues),
        }
    }

    /// `[planner]`, against the configured chargers and PV rating.
    fn check_planner(
        &self,
        devices: &[DeviceConfig],
        issues: &mut Issues,
    ) -> Option<planner::PlannerSettings> {
        let chargers: Vec<String> = devices
            .iter()
            .filter(|d| matches!(d.role, DeviceRole::Charger(_)))
            .map(|d| d.id.clone())
            .collect();
        let pv_kw = devices.iter().find_map(|d| match d.role {
            DeviceRole::Pv { rating_w, .. } => rating_w.map(|w| w / 1000.0),
            _ => None,
        });
        self.planner.validate(&chargers, pv_kw, issues)
    }

    /// `[api]`: the listen address and the Host allow-list.
    fn check_api(&self, issues: &mut Issues) -> Option<SocketAddr> {
        let api_listen: Option<SocketAddr> = match self.api.listen.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                issues.push(
                    "api.listen",
                    format!("expected ADDRESS:PORT (got {:?})", self.api.listen),
                );
                None
            }
        };
        for (i, h) in self.api.hosts.iter().enumerate() {
            let ok = !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
            if !ok {
                issues.push(
                    format!("api.hosts[{i}]"),
                    format!("expected a host name or address, optionally with :PORT (got {h:?})"),
                );
            }
        }
        api_listen
    }

    /// `[control]`.
    fn check_control(&self, issues: &mut Issues) {
        if self.control.shutdown_deadline_ms == 0 || self.control.shutdown_deadline_ms > 30_000 {
            issues.push(
                "control.shutdown_deadline_ms",
                format!(
                    "must be within [1, 30000] (got {})",
                    self.control.shutdown_deadline_ms
                ),
            );
        }
        if self.control.stale_after_cycles == 0 {
            issues.push("control.stale_after_cycles", "must be >= 1 (got 0)");
        }
        issues.within(
            "control.cycle_budget_pct",
            self.control.cycle_budget_pct,
            10.0,
            95.0,
        );
    }

    /// `[devices]`: each device, then the station as a whole (one of each meter, a grid meter,
    /// no two devices at one address, gateways).
    fn check_devices(&self, cache: &mut ProfileCache, issues: &mut Issues) -> Vec<DeviceConfig> {
        let mut devices = Vec::new();
        for (id, raw) in &self.devices {
            if let Some(d) = validate_device(id, raw, cache, issues) {
                devices.push(d);
            }
        }
        let count = |f: fn(&DeviceRole) -> bool| devices.iter().filter(|d| f(&d.role)).count();
        for (what, n) in [
            ("pv", count(|r| matches!(r, DeviceRole::Pv { .. }))),
            (
                "battery",
                count(|r| matches!(r, DeviceRole::Battery { .. })),
            ),
            ("grid meter", count(|r| matches!(r, DeviceRole::GridMeter))),
            (
                "building meter",
                count(|r| matches!(r, DeviceRole::BuildingMeter)),
            ),
        ] {
            if n > 1 {
                issues.push("devices", format!("at most one {what} (got {n})"));
            }
        }
        if count(|r| matches!(r, DeviceRole::GridMeter)) == 0 {
            issues.push(
                "devices",
                "a grid meter (kind = \"meter\", role = \"grid\") is required: the import limit cannot be enforced without it",
            );
        }
        let mut endpoints: BTreeMap<(String, u16, u8), &str> = BTreeMap::new();
        for d in &devices {
            let key = (d.endpoint.host.clone(), d.endpoint.port, d.endpoint.unit_id);
            if let Some(other) = endpoints.insert(key, &d.id) {
                issues.push(
                    format!("devices.{}.port", d.id),
                    format!(
                        "same host, port and unit id as devices.{other} ({}:{} unit {})",
                        d.endpoint.host, d.endpoint.port, d.endpoint.unit_id
                    ),
                );
            }
        }
        check_gateways(&devices, issues);
        devices.sort_by_key(order_key);
        devices
    }

    /// `[policy]`, with what it must agree with elsewhere (the watchdog, the chargers).
    fn check_policy(&self, issues: &mut Issues) -> Option<Policy> {
        let policy = self.policy.validate("policy", issues);
        if (0.1..=60.0).contains(&self.policy.cycle_s) {
            if let Some(why) = watchdog_issue(self.policy.cycle_s, SERVICE_WATCHDOG) {
                issues.push("policy.cycle_s", why);
            }
        }
        for id in self.policy.vehicles.chargers.keys() {
            let known = self.devices.get(id).is_some_and(|d| d.kind == "charger");
            if !known {
                issues.push(
                    format!("policy.vehicles.chargers.{id}"),
                    format!("names {id:?}, which is not a charger under [devices]"),
                );
            }
        }
        policy
    }
}

fn validate_device(
    id: &str,
    raw: &RawDevice,
    cache: &mut ProfileCache,
    issues: &mut Issues,
) -> Option<DeviceConfig> {
    let key = |field: &str| format!("devices.{id}.{field}");
    let before = issues.len();
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        issues.push(
            format!("devices.{id}"),
            "device ids use letters, digits, '-' and '_' only",
        );
    }
    let endpoint = check_endpoint(raw, &key, issues);
    let role = match raw.kind.as_str() {
        "pv" | "battery" => Some(storage_or_pv_role(raw, &key, issues)),
        "meter" => meter_role(raw, &key, issues),
        "charger" => Some(charger_role(raw, &key, cache, issues)),
        other => {
            issues.push(
                key("kind"),
                format!("expected pv, battery, meter or charger (got {other:?})"),
            );
            None
        }
    }?;
    let profile = match role {
        DeviceRole::Charger(_) => None,
        _ => device_profile(raw, &key, cache, issues),
    };
    (issues.len() == before).then(|| DeviceConfig {
        id: id.to_string(),
        endpoint,
        role,
        profile,
    })
}

/// How to reach the device: host, port, unit id, timeout, poll interval.
fn check_endpoint(raw: &RawDevice, key: &dyn Fn(&str) -> String, issues: &mut Issues) -> Endpoint {
    if raw.host.trim().is_empty() {
        issues.push(key("host"), "must not be empty");
    }
    let serial = raw.transport.as_deref() == Some("rtu");
    match (serial, raw.port) {
        (false, 0) => issues.push(key("port"), "must be within [1, 65535] (got 0 or none)"),
        (true, p) if p != 0 => issues.push(
            key("port"),
            "does not apply to transport = \"rtu\" (host names the serial port)",
        ),
        _ => {}
    }
    if raw.unit_id == 0 || raw.unit_id > 247 && raw.unit_id != 255 {
        issues.push(
            key("unit_id"),
            format!("must be within [1, 247] or 255 (got {})", raw.unit_id),
        );
    }
    if raw.timeout_ms < 10 || raw.timeout_ms > 30_000 {
        issues.push(
            key("timeout_ms"),
            format!("must be within [10, 30000] (got {})", raw.timeout_ms),
        );
    }
    if raw.poll_interval_ms < 100 || raw.poll_interval_ms > 600_000 {
        issues.push(
            key("poll_interval_ms"),
            format!(
                "must be within [100, 600000] (got {})",
                raw.poll_interval_ms
            ),
        );
    }
    let framing = check_framing(raw, key, issues);
    Endpoint {
        framing,
        host: raw.host.clone(),
        port: raw.port,
        unit_id: raw.unit_id,
        timeout: Duration::from_millis(raw.timeout_ms),
        poll_interval: Duration::from_millis(raw.poll_interval_ms),
        invert: raw.invert,
    }
}

/// Devices behind one host and port share a gateway: they must agree on its framing.
fn check_gateways(devices: &[DeviceConfig], issues: &mut Issues) {
    let mut gateways: BTreeMap<(String, u16), (&str, Framing)> = BTreeMap::new();
    for d in devices {
        let key = (d.endpoint.host.clone(), d.endpoint.port);
        match gateways.get(&key) {
            Some((other, f)) if *f != d.endpoint.framing => issues.push(
                format!("devices.{}.transport", d.id),
                format!("devices.{other} uses the same host and port with other framing or line settings"),
            ),
            Some(_) => {}
            None => {
                gateways.insert(key, (&d.id, d.endpoint.framing));
            }
        }
    }
}

/// Modbus TCP, or RTU through a transparent gateway with its line settings.
fn check_framing(raw: &RawDevice, key: &dyn Fn(&str) -> String, issues: &mut Issues) -> Framing {
    let line_keys = [
        ("baud", raw.baud.is_some()),
        ("parity", raw.parity.is_some()),
        ("stop_bits", raw.stop_bits.is_some()),
    ];
    match raw.transport.as_deref().unwrap_or("tcp") {
        "tcp" => {
            for (field, set) in line_keys {
                if set {
                    issues.push(
                        key(field),
                        "applies to transport = \"rtu\" or \"rtu-over-tcp\" only",
                    );
                }
            }
            Framing::Tcp
        }
        "rtu" => Framing::RtuSerial(check_line(raw, key, issues)),
        "rtu-over-tcp" => Framing::RtuOverTcp(check_line(raw, key, issues).line()),
        other => {
            issues.push(
                key("transport"),
                format!("expected tcp, rtu or rtu-over-tcp (got {other:?})"),
            );
            Framing::Tcp
        }
    }
}

/// Baud, parity and stop bits of an RTU line.
fn check_line(
    raw: &RawDevice,
    key: &dyn Fn(&str) -> String,
    issues: &mut Issues,
) -> SerialSettings {
    let baud = raw.baud.unwrap_or(9600);
    if !(1200..=115_200).contains(&baud) {
        issues.push(
            key("baud"),
            format!("must be within [1200, 115200] (got {baud})"),
        );
    }
    let parity = match raw.parity.as_deref().unwrap_or("none") {
        "none" => Parity::None,
        "even" => Parity::Even,
        "odd" => Parity::Odd,
        other => {
            issues.push(
                key("parity"),
                format!("expected none, even or odd (got {other:?})"),
            );
            Parity::None
        }
    };
    let stop_bits = raw.stop_bits.unwrap_or(1);
    if stop_bits != 1 && stop_bits != 2 {
        issues.push(
            key("stop_bits"),
            format!("must be 1 or 2 (got {stop_bits})"),
        );
    }
    SerialSettings {
        baud,
        parity,
        stop_bits: stop_bits.clamp(1, 2),
    }
}

/// Push `key: does not apply to kind K` for each of `fields` that is set.
fn refuse_fields(
    fields: &[(&str, bool)],
    kind: &str,
    key: &dyn Fn(&str) -> String,
    issues: &mut Issues,
) {
    for (field, present) in fields {
        if *present {
            issues.push(key(field), format!("does not apply to kind {kind}"));
        }
    }
}

fn charger_fields(raw: &RawDevice) -> [(&'static str, bool); 5] {
    [
        ("rating_a", raw.rating_a.is_some()),
        ("phases", raw.phases.is_some()),
        ("safe_current_a", raw.safe_current_a.is_some()),
        ("validity_s", raw.validity_s.is_some()),
        ("min_a", raw.min_a.is_some()),
    ]
}

fn storage_or_pv_role(
    raw: &RawDevice,
    key: &dyn Fn(&str) -> String,
    issues: &mut Issues,
) -> DeviceRole {
    refuse_fields(&charger_fields(raw), &raw.kind, key, issues);
    refuse_fields(&[("role", raw.role.is_some())], &raw.kind, key, issues);
    let rating_w = raw.rating_kw.map(|kw| {
        issues.positive(&key("rating_kw"), kw);
        kw * 1000.0
    });
    if raw.kind == "battery" && raw.rating_kw.is_none() {
        issues.push(
            key("rating_kw"),
            "required for kind battery: the PCS rating caps the BMS limits dispatch uses",
        );
    }
    let revert_s = raw.revert_s.unwrap_or(30);
    if revert_s == 0 {
        issues.push(
            key("revert_s"),
            "must be > 0: without a revert timeout a crashed daemon leaves its last setpoint in force",
        );
    }
    let capacity_wh = raw.capacity_kwh.map(|kwh| {
        issues.positive(&key("capacity_kwh"), kwh);
        kwh * 1000.0
    });
    if raw.kind == "pv" {
        refuse_fields(
            &[("capacity_kwh", raw.capacity_kwh.is_some())],
            "pv",
            key,
            issues,
        );
        DeviceRole::Pv { revert_s, rating_w }
    } else {
        DeviceRole::Battery {
            revert_s,
            rating_w,
            capacity_wh,
        }
    }
}

fn meter_role(
    raw: &RawDevice,
    key: &dyn Fn(&str) -> String,
    issues: &mut Issues,
) -> Option<DeviceRole> {
    refuse_fields(&charger_fields(raw), "meter", key, issues);
    refuse_fields(
        &[
            ("revert_s", raw.revert_s.is_some()),
            ("rating_kw", raw.rating_kw.is_some()),
            ("capacity_kwh", raw.capacity_kwh.is_some()),
        ],
        "meter",
        key,
        issues,
    );
    match raw.role.as_deref() {
        Some("grid") => Some(DeviceRole::GridMeter),
        Some("building") => Some(DeviceRole::BuildingMeter),
        Some(other) => {
            issues.push(
                key("role"),
                format!("expected \"grid\" or \"building\" (got {other:?})"),
            );
            None
        }
        None => {
            issues.push(
                key("role"),
                "required for kind meter (\"grid\" or \"building\")",
            );
            None
        }
    }
}

fn charger_role(
    raw: &RawDevice,
    key: &dyn Fn(&str) -> String,
    cache: &mut ProfileCache,
    issues: &mut Issues,
) -> DeviceRole {
    refuse_fields(
        &[
            ("role", raw.role.is_some()),
            ("revert_s", raw.revert_s.is_some()),
            ("rating_kw", raw.rating_kw.is_some()),
            ("capacity_kwh", raw.capacity_kwh.is_some()),
        ],
        "charger",
        key,
        issues,
    );
    let profile = match raw.profile.as_deref() {
        None | Some("alfen") => ChargerProfile::Alfen,
        Some(_) => match device_profile(raw, key, cache, issues) {
            Some(p) => ChargerProfile::Profile(p),
            None => ChargerProfile::Alfen,
        },
    };
    let rating_a = raw.rating_a.unwrap_or(32.0);
    issues.within(&key("rating_a"), rating_a, 6.0, 80.0);
    let phases = raw.phases.unwrap_or(3);
    if phases != 1 && phases != 3 {
        issues.push(key("phases"), format!("must be 1 or 3 (got {phases})"));
    }
    let min_a = raw.min_a.unwrap_or(6.0);
    issues.within(&key("min_a"), min_a, 6.0, rating_a.max(6.0));
    let safe_current_a = raw.safe_current_a.unwrap_or(6.0);
    if !(safe_current_a == 0.0 || (min_a..=rating_a).contains(&safe_current_a)) {
        issues.push(
            key("safe_current_a"),
            format!("must be 0 or within [min_a, rating_a] = [{min_a}, {rating_a}] (got {safe_current_a})"),
        );
    }
    let validity_s = raw.validity_s.unwrap_or(60);
    if !(10..=3600).contains(&validity_s) {
        issues.push(
            key("validity_s"),
            format!("must be within [10, 3600] (got {validity_s})"),
        );
    }
    DeviceRole::Charger(ChargerSettings {
        profile,
        rating_a,
        phases,
        safe_current_a,
        validity_s,
        min_a,
    })
}

/// Parse a config from TOML text plus `STATION__...` overrides taken from `env` (pairs of
/// variable name and value; the daemon passes `std::env::vars()`).
pub fn parse(
    path_label: &str,
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<RawConfig, ConfigError> {
    let overrides: config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("STATION__"))
        .collect();
    let built = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("STATION")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(overrides)),
        )
        .build()
        .map_err(|e| ConfigError::Parse {
            path: path_label.to_string(),
            message: e.to_string(),
        })?;
    let value = built
        .try_deserialize::<serde_json::Value>()
        .map_err(|e| ConfigError::Parse {
            path: path_label.to_string(),
            message: e.to_string(),
        })?;
    deserialize_all(value).map_err(|issues| ConfigError::Invalid {
        path: path_label.to_string(),
        issues,
    })
}

/// Unknown keys reported before giving up, at most.
const MAX_UNKNOWN_KEYS: usize = 100;

/// Deserialize the raw config, naming every unknown key at once (serde stops at the first:
/// each one found is recorded with its dotted key, removed, and deserialization retried),
/// then the first other problem, if any.
fn deserialize_all(mut value: serde_json::Value) -> Result<RawConfig, Issues> {
    let mut issues = Issues::new();
    loop {
        let err = match serde_path_to_error::deserialize::<_, RawConfig>(&value) {
            Ok(raw) if issues.is_empty() => return Ok(raw),
            Ok(_) => return Err(issues),
            Err(e) => e,
        };
        let key = err.path().to_string();
        let message = err.inner().to_string();
        let unknown = message.starts_with("unknown field");
        if unknown && issues.len() < MAX_UNKNOWN_KEYS && remove_key(&mut value, &key) {
            let known = message
                .split_once(", expected ")
                .map_or(String::new(), |(_, k)| format!(" (expected {k})"));
            issues.push(key, format!("unknown key{known}"));
            continue;
        }
        issues.push(key, message);
        return Err(issues);
    }
}

/// Remove the dotted `key` from `value`; false when it is not there.
fn remove_key(value: &mut serde_json::Value, key: &str) -> bool {
    let mut parts: Vec<&str> = key.split('.').collect();
    let Some(last) = parts.pop() else {
        return false;
    };
    let mut at = value;
    for p in parts {
        match at.get_mut(p) {
            Some(next) => at = next,
            None => return false,
        }
    }
    at.as_object_mut().is_some_and(|o| o.remove(last).is_some())
}

/// Read, parse and validate a config file with the process environment's overrides.
pub fn load(path: &Path) -> Result<StationConfig, ConfigError> {
    load_with_env(path, std::env::vars())
}

/// As [`load`], with the environment given explicitly (tests).
pub fn load_with_env(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<StationConfig, ConfigError> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: label.clone(),
        message: e.to_string(),
    })?;
    let raw = parse(&label, &text, env)?;
    let profiles_dir = profiles_dir_of(path);
    raw.validate_in(Some(&profiles_dir))
        .map_err(|issues| ConfigError::Invalid {
            path: label,
            issues,
        })
}

/// Where the device profiles of a config file live: `profiles/` next to it.
pub fn profiles_dir_of(config_path: &Path) -> PathBuf {
    config_path
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("profiles")
}
