//! Register writes: which registers are writable, and how written words become
//! [`Command`]s after range checks.
//!
//! Rules (all exceptions change nothing):
//! - every written register must lie inside the device's map, else 0x02;
//! - every written register must belong to a writable point, else 0x02 (read-only), also when
//!   only one register of a multi-register write is read-only;
//! - a write must cover whole points: a write that covers only part of a 32-bit point (or of
//!   the Alfen float32 setpoint) answers 0x03;
//! - a value out of range answers 0x03.
//!
//! All points of a request are decoded and checked before any command is applied; the
//! commands are then applied in address order. If the station refuses one (`Station::apply`
//! errors, meaning the value is out of range for the device now) the request answers 0x03;
//! commands before it in the same request stay applied.

use super::encode::{f32_from, i32_from, u32_from};
use super::image::UnitImage;
use crate::view::{Command, StationView};
use tokio_modbus::ExceptionCode;

/// What a writable point controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldKind {
    /// Model 123 `Conn`: 1 (connected) is accepted and changes nothing; 0 is refused with
    /// 0x03 because the simulated inverter has no remote disconnect (use `WMaxLimPct` 0).
    PvConn,
    PvLimitPct,
    PvLimitRevertS,
    PvLimitEnabled,
    BatterySocReserveMin,
    BatterySetpointEnabled,
    /// Model 704 `WSetMod`: only 1 (watts) is supported; 0 (percent) answers 0x03.
    BatterySetpointMode,
    BatterySetpointW,
    BatterySetpointRevertS,
    ChargerSetpointA(usize),
    ChargerSafeCurrentA(usize),
    ChargerPhases(usize),
}

/// A writable point: `len` registers at `addr` of `unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    pub(crate) unit: u8,
    pub(crate) addr: u16,
    pub(crate) len: u16,
    pub(crate) kind: FieldKind,
}

fn enable_flag(word: u16) -> Result<bool, ExceptionCode> {
    match word {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(ExceptionCode::IllegalDataValue),
    }
}

fn amps(words: &[u16], rating_a: Option<f64>) -> Result<f64, ExceptionCode> {
    let value = f64::from(f32_from(words));
    if !value.is_finite() || value < 0.0 {
        return Err(ExceptionCode::IllegalDataValue);
    }
    Ok(match rating_a {
        Some(r) if r.is_finite() => value.min(r),
        _ => value,
    })
}

fn decode(
    kind: FieldKind,
    words: &[u16],
    view: &StationView,
) -> Result<Option<Command>, ExceptionCode> {
    use ExceptionCode::IllegalDataValue as Bad;
    let cmd = match kind {
        FieldKind::PvConn => match words[0] {
            1 => return Ok(None),
            _ => return Err(Bad),
        },
        FieldKind::PvLimitPct => {
            if words[0] > 100 {
                return Err(Bad);
            }
            Command::PvLimitPct(f64::from(words[0]))
        }
        FieldKind::PvLimitRevertS => {
            if words[0] == 0xFFFF {
                return Err(Bad);
            }
            Command::PvLimitRevertS(u32::from(words[0]))
        }
        FieldKind::PvLimitEnabled => Command::PvLimitEnabled(enable_flag(words[0])?),
        FieldKind::BatterySocReserveMin => {
            // SoC_SF is -1.
            let pct = f64::from(words[0]) / 10.0;
            if pct > 100.0 {
                return Err(Bad);
            }
            Command::BatterySocReserveMinPct(pct)
        }
        FieldKind::BatterySetpointEnabled => {
            Command::BatterySetpointEnabled(enable_flag(words[0])?)
        }
        FieldKind::BatterySetpointMode => match words[0] {
            1 => return Ok(None),
            _ => return Err(Bad),
        },
        FieldKind::BatterySetpointW => {
            let raw = i32_from(words);
            // WSet_SF is 0.
            let watts = f64::from(raw);
            if raw == i32::MIN || watts.abs() > view.battery.pcs_rating_w {
                return Err(Bad);
            }
            Command::BatterySetpointW(watts)
        }
        FieldKind::BatterySetpointRevertS => {
            let secs = u32_from(words);
            if secs == u32::MAX {
                return Err(Bad);
            }
            Command::BatterySetpointRevertS(secs)
        }
        FieldKind::ChargerSetpointA(index) => Command::ChargerSetpointA {
            index,
            amps: amps(words, view.chargers.get(index).map(|c| c.rating_a))?,
        },
        FieldKind::ChargerSafeCurrentA(index) => Command::ChargerSafeCurrentA {
            index,
            amps: amps(words, view.chargers.get(index).map(|c| c.rating_a))?,
        },
        FieldKind::ChargerPhases(index) => match words[0] {
            1 | 3 => Command::ChargerPhases {
                index,
                phases: words[0] as u8,
            },
            _ => return Err(Bad),
        },
    };
    Ok(Some(cmd))
}

/// Checks a write of `words` at `addr` on `unit` and turns it into commands.
pub(crate) fn decode_write(
    fields: &[Field],
    unit: &UnitImage,
    addr: u16,
    words: &[u16],
    view: &StationView,
) -> Result<Vec<Command>, ExceptionCode> {
    let count = u16::try_from(words.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
    if !unit.covers(addr, count) {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    let end = u32::from(addr) + u32::from(count);
    // First pass: every register must belong to a writable point.
    let mut spans = Vec::new();
    let mut at = u32::from(addr);
    while at < end {
        let field = fields
            .iter()
            .find(|f| {
                f.unit == unit.unit
                    && (u32::from(f.addr)..u32::from(f.addr) + u32::from(f.len)).contains(&at)
            })
            .ok_or(ExceptionCode::IllegalDataAddress)?;
        spans.push(*field);
        at = u32::from(field.addr) + u32::from(field.len);
    }
    // Second pass: whole points only, then decode and range-check.
    let mut commands = Vec::new();
    for field in spans {
        let start = u32::from(field.addr);
        let stop = start + u32::from(field.len);
        if start < u32::from(addr) || stop > end {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let from = (start - u32::from(addr)) as usize;
        let slice = &words[from..from + usize::from(field.len)];
        if let Some(cmd) = decode(field.kind, slice, view)? {
            commands.push(cmd);
        }
    }
    Ok(commands)
}
