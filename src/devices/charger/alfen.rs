//! Alfen NG9xx "Modbus slave" (Active Load Balancing) profile, socket unit (usually 1).
//! float32 and float64 values are big-endian, high word first.
//!
//! The setpoint (1210) must be rewritten before its validity runs out; the charger then falls
//! back to the safe current (1212). `set_current` writes on every call, so calling it each
//! control cycle keeps the setpoint valid.

use super::{link_for, ChargerConfig, ChargerDriver, ChargerReading, DriverFuture, Mode3};
use crate::devices::check;
use crate::devices::error::DeviceError;
use crate::devices::link::Link;
use crate::devices::sunspec::{decode_float32, decode_string, encode_float32};

/// First register of the measurement block (phase voltages).
pub const REG_MEASURE_START: u16 = 306;
/// Phase currents L1..L3 (float32 each).
pub const REG_CURRENTS: [u16; 3] = [320, 322, 324];
/// Real power sum W (float32).
pub const REG_POWER: u16 = 344;
/// Real energy delivered Wh (float64).
pub const REG_ENERGY: u16 = 374;
/// Mode 3 state string, 5 registers.
pub const REG_STATE: u16 = 1201;
/// Length of the state string.
pub const STATE_LEN: u16 = 5;
/// Actual applied max current A (float32).
pub const REG_APPLIED_MAX: u16 = 1206;
/// Remaining validity of the setpoint s (uint32).
pub const REG_VALIDITY: u16 = 1208;
/// Max current setpoint A (float32, FC16).
pub const REG_SETPOINT: u16 = 1210;
/// Safe current A (float32, FC16).
pub const REG_SAFE_CURRENT: u16 = 1212;
/// Phases in use (uint16).
pub const REG_PHASES: u16 = 1215;

const MEASURE_LEN: u16 = REG_ENERGY + 4 - REG_MEASURE_START;
const STATUS_LEN: u16 = REG_PHASES + 1 - REG_STATE;

/// Driver of one Alfen socket.
#[derive(Debug)]
pub struct AlfenCharger {
    link: Link,
    cfg: ChargerConfig,
    safe_current_a: f64,
}

impl AlfenCharger {
    /// A driver that connects lazily. The safe current defaults to 0 A until configured.
    pub fn new(cfg: ChargerConfig) -> Self {
        AlfenCharger {
            link: link_for(&cfg.link),
            cfg,
            safe_current_a: 0.0,
        }
    }

    fn check_current(&self, amps: f64) -> Result<f32, DeviceError> {
        if !amps.is_finite() || amps < 0.0 || amps > self.cfg.max_current_a {
            return Err(DeviceError::InvalidRequest(format!(
                "current {amps} A outside 0..={} A",
                self.cfg.max_current_a
            )));
        }
        Ok(amps as f32)
    }

    async fn write_float(&mut self, addr: u16, amps: f64) -> Result<(), DeviceError> {
        let v = self.check_current(amps)?;
        self.link.write_multiple(addr, &encode_float32(v)).await
    }

    /// Write the safe current (1212) and read it back. Some firmware keeps 1212 read-only (set
    /// with the installer tool) and refuses the write with an exception; the driver then
    /// accepts the configuration only when 1212 already holds the requested value. `safe()`
    /// uses the value read back from the device.
    async fn configure_safe_current(&mut self, safe_current_a: f64) -> Result<(), DeviceError> {
        let write = self.write_float(REG_SAFE_CURRENT, safe_current_a).await;
        if let Err(e) = &write {
            if !e.is_exception() {
                return write;
            }
        }
        let regs = self.link.read_holding(REG_SAFE_CURRENT, 2).await?;
        let actual = check::required(
            "safe current",
            decode_float32([regs[0], regs[1]]).map(f64::from),
        )?;
        if (actual - safe_current_a).abs() > 0.01 {
            return match write {
                Err(e) => Err(e),
                Ok(()) => Err(DeviceError::bad_data(
                    "safe current",
                    format!("wrote {safe_current_a} A, device holds {actual} A"),
                )),
            };
        }
        self.safe_current_a = actual;
        Ok(())
    }

    async fn read_inner(&mut self) -> Result<ChargerReading, DeviceError> {
        let m = self
            .link
            .read_holding(REG_MEASURE_START, MEASURE_LEN)
            .await?;
        let s = self.link.read_holding(REG_STATE, STATUS_LEN).await?;
        let at = |regs: &[u16], base: u16, addr: u16| -> [u16; 2] {
            let i = usize::from(addr - base);
            [regs[i], regs[i + 1]]
        };
        let f32_point =
            |name: &str, w: [u16; 2]| check::required(name, decode_float32(w).map(f64::from));

        let state_txt = decode_string(&s[..usize::from(STATE_LEN)])
            .ok_or_else(|| DeviceError::bad_data("mode3 state", "empty string"))?;
        let state = Mode3::parse(&state_txt).ok_or_else(|| {
            DeviceError::bad_data("mode3 state", format!("unknown state {state_txt:?}"))
        })?;

        let names = ["current L1", "current L2", "current L3"];
        let mut current_a = [0.0; 3];
        for (i, reg) in REG_CURRENTS.iter().enumerate() {
            let a = f32_point(names[i], at(&m, REG_MEASURE_START, *reg))?;
            if a < -0.5 || a > 1.5 * self.cfg.max_current_a {
                return Err(DeviceError::bad_data(
                    names[i],
                    format!("{a} A implausible"),
                ));
            }
            current_a[i] = a;
        }
        let power_w = check::power_within(
            "real power",
            f32_point("real power", at(&m, REG_MEASURE_START, REG_POWER))?,
            Some(self.cfg.rating_w()),
        )?;
        let e = usize::from(REG_ENERGY - REG_MEASURE_START);
        let bits = m[e..e + 4]
            .iter()
            .fold(0u64, |acc, w| (acc << 16) | u64::from(*w));
        let energy = f64::from_bits(bits);
        let energy_wh = if energy.is_nan() {
            None
        } else if energy.is_finite() && energy >= 0.0 {
            Some(energy)
        } else {
            return Err(DeviceError::bad_data(
                "energy delivered",
                format!("{energy} Wh"),
            ));
        };

        let applied_max_a = f32_point("applied max current", at(&s, REG_STATE, REG_APPLIED_MAX))?;
        if !(0.0..=1.5 * self.cfg.max_current_a).contains(&applied_max_a) {
            return Err(DeviceError::bad_data(
                "applied max current",
                format!("{applied_max_a} A implausible"),
            ));
        }
        let v = at(&s, REG_STATE, REG_VALIDITY);
        let remaining_validity_s = (u32::from(v[0]) << 16) | u32::from(v[1]);
        let phases = match s[usize::from(REG_PHASES - REG_STATE)] {
            1 => 1,
            3 => 3,
            p => {
                return Err(DeviceError::bad_data(
                    "phases",
                    format!("{p} is neither 1 nor 3"),
                ))
            }
        };
        Ok(ChargerReading {
            state,
            current_a,
            power_w,
            energy_wh,
            applied_max_a,
            remaining_validity_s,
            phases,
        })
    }
}

impl ChargerDriver for AlfenCharger {
    fn read(&mut self) -> DriverFuture<'_, ChargerReading> {
        Box::pin(self.read_inner())
    }

    fn set_current(&mut self, amps: f64) -> DriverFuture<'_, ()> {
        Box::pin(self.write_float(REG_SETPOINT, amps))
    }

    fn configure_fallback(&mut self, safe_current_a: f64) -> DriverFuture<'_, ()> {
        Box::pin(self.configure_safe_current(safe_current_a))
    }

    fn safe(&mut self) -> DriverFuture<'_, ()> {
        let amps = self.safe_current_a;
        Box::pin(self.write_float(REG_SETPOINT, amps))
    }

    fn link(&self) -> &Link {
        &self.link
    }

    fn link_mut(&mut self) -> &mut Link {
        &mut self.link
    }
}
