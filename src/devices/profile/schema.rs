//! The profile file as written (`config/profiles/<model>.toml`), unknown keys refused.
//!
//! ```toml
//! [device]
//! kind = "meter"            # meter | pv | battery
//! vendor = "Chint"
//! model = "DTSU666"
//! source = "CHINT DTSU666 user manual, section 7 (communication address table)"
//!
//! [[probe]]                 # checked before the profile is trusted
//! point = "voltage_l1_v"
//! range = [150.0, 300.0]
//!
//! [points.power_w]
//! function = 3              # 3 holding, 4 input
//! address = 0x2012          # protocol address (0-based)
//! type = "f32"              # u16 i16 u32 i32 u64 i64 f32 f64 string
//! word_order = "high_first" # or low_first
//! scale = 0.1               # or scale_register = <address of an i16 power-of-ten>
//! unit = "W"
//! sign = 1                  # -1 flips the device's convention
//! range = [-500000.0, 500000.0]
//! poll = "fast"             # fast (every read) or slow (energy counters)
//!
//! [setpoints.limit_pct]
//! function = 6              # 6 single, 16 multiple
//! address = 40125
//! type = "i16"
//! scale = 0.1
//! unit = "%"
//! range = [0.0, 100.0]
//! refresh_s = 60
//! safe = 100.0
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;

/// A whole profile file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    pub device: RawDeviceInfo,
    #[serde(default)]
    pub probe: Vec<RawProbe>,
    #[serde(default)]
    pub points: BTreeMap<String, RawPoint>,
    #[serde(default)]
    pub setpoints: BTreeMap<String, RawSetpoint>,
}

/// What the device is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeviceInfo {
    pub kind: String,
    pub vendor: String,
    pub model: String,
    /// The vendor document the map was written from.
    pub source: String,
    /// Every how many reads the slow points are read again (default 10).
    pub slow_every: Option<u32>,
}

/// One identification check: a point's value in a range, or a text point equal to / starting
/// with a string.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    pub point: String,
    pub range: Option<[f64; 2]>,
    pub equals: Option<String>,
    pub starts_with: Option<String>,
}

/// One readable point.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoint {
    pub function: u8,
    pub address: u16,
    #[serde(rename = "type")]
    pub ty: String,
    /// Length of a `string` point in registers.
    pub registers: Option<u16>,
    pub word_order: Option<String>,
    pub scale: Option<f64>,
    pub scale_register: Option<u16>,
    /// Unsigned integer points: keep `(raw >> shift) & mask` (a state packed in a byte).
    pub shift: Option<u8>,
    pub mask: Option<u64>,
    /// The value is negated while `(point & mask) != 0`.
    pub negative_when: Option<RawNegativeWhen>,
    #[serde(default)]
    pub unit: String,
    pub sign: Option<i8>,
    pub range: Option<[f64; 2]>,
    pub poll: Option<String>,
    /// Raw value (decimal, as a string key) to state name (`operating`, `standby`, `fault`...).
    pub states: Option<BTreeMap<String, String>>,
    pub description: Option<String>,
}

/// One writable setpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSetpoint {
    pub function: u8,
    pub address: u16,
    #[serde(rename = "type")]
    pub ty: String,
    pub word_order: Option<String>,
    pub scale: Option<f64>,
    #[serde(default)]
    pub unit: String,
    pub sign: Option<i8>,
    pub range: [f64; 2],
    /// The device falls back unless the setpoint is rewritten within this many seconds.
    pub refresh_s: Option<u32>,
    /// The value written on shutdown.
    pub safe: f64,
    /// Devices that take a magnitude plus a direction command (Sungrow forced mode): the
    /// register value is |setpoint| and the command register gets the code of its sign.
    pub direction: Option<RawDirection>,
    /// Fixed writes before the first write of each connection (e.g. select forced mode).
    #[serde(default)]
    pub prepare: Vec<RawWrite>,
    /// A point that reads the setpoint back, for devices whose set register is write only
    /// (default: the setpoint's own register).
    pub readback: Option<String>,
    pub description: Option<String>,
}

/// The command register of a direction-encoded setpoint and its codes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirection {
    pub address: u16,
    /// Code for a setpoint > 0 (battery: discharge).
    pub positive: u16,
    /// Code for a setpoint < 0 (battery: charge).
    pub negative: u16,
    /// Code for 0 (stop).
    pub zero: u16,
    /// Devices with one magnitude register per direction (Huawei forcible charge/discharge):
    /// the register of negative setpoints' magnitudes (the setpoint's `address` takes the
    /// positive ones). The magnitude is then written before the command.
    pub negative_register: Option<u16>,
}

/// One fixed register write (function 6).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWrite {
    pub address: u16,
    pub value: u16,
}

/// A point whose sign another point's flag gives (unsigned power plus a running-state bit).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNegativeWhen {
    pub point: String,
    pub mask: u64,
}
