//! A simulated device that shows a device profile's register map (`config/profiles/*.toml`):
//! the physics' values encoded through the profile's points (type, word order, scale or
//! scale-factor register, sign, bit fields, state maps, a sign carried by another point's
//! flag), and writes to its setpoints turned into [`Command`]s. It lets a station built
//! entirely from profiled devices (Huawei, Sungrow, CHINT, Phoenix CHARX, ...) run end to end.
//!
//! This is not the check of a profile's correctness: the profile is both the controller's and
//! this device's map here, so a wrong address would hide on both sides. The independent
//! images in the controller's `tests/peers/` (written from the vendors' documents) are.
//!
//! # What the device shows
//! - A point the physics has a value for (see [`values::shown`]) shows it; a state point
//!   shows the code its state map gives the physics' state.
//! - A point the physics has no value for shows what the identification probe expects of it
//!   (the middle of a range, the model text), else the low end of its range, else zero; flag
//!   points show the bits of the values whose sign they carry.
//! - A scale-factor register shows the smallest power of ten (from 10^-3) at which every
//!   point it scales fits its type.
//! - A number that does not fit its type saturates; NaN (a `bad_values` fault) shows the
//!   integer types' all-ones / minimum marker and a float NaN.
//! - Setpoint registers read back what the physics follows (PV limit, battery setpoint and
//!   its direction code, charger current and safe current), other setpoints what was written.
//!
//! # Writes
//! A write must cover setpoints (their value, their direction command register, their
//! `prepare` registers) whole, else 0x02 (a register that is no setpoint) or 0x03 (part of
//! one); a value outside the setpoint's range or a direction code the profile does not
//! declare answers 0x03. A setpoint with `prepare` writes takes effect only while those
//! registers hold their values (a Sungrow in self-consumption mode ignores forced power).
//! Setpoints without `refresh_s` never revert in the physics (the profile says the device
//! keeps them); with it, they revert after that many seconds.

pub mod map;
pub mod values;

use super::image::{Block, Image, UnitImage};
use super::DeviceKind;
use crate::view::{Command, StationView};
use map::{Expect, PointMap, ScaleOf, SetpointMap, Ty};
pub use map::{ProfileError, ProfileMap};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio_modbus::ExceptionCode;
use values::{shown, state_code, Shown};

/// How a profiled device's frames travel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Framing {
    /// Modbus TCP (MBAP header).
    #[default]
    Tcp,
    /// Raw RTU frames over the TCP connection (a transparent RS485 gateway).
    RtuOverTcp,
    /// RTU frames on a serial port (8N1 at `baud`), e.g. one end of a socat pseudo-terminal
    /// pair; the device's TCP listener is then not served.
    RtuSerial { path: String, baud: u32 },
}

/// A device of the station served with a profile's map instead of its built-in one.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfiledSpec {
    /// The device id (`pv`, `grid-meter`, `charger-2`, ...).
    pub device: String,
    pub profile: Arc<ProfileMap>,
    pub framing: Framing,
    /// The unit id it answers (other ids: 0x0B over TCP, silence over RTU).
    pub unit: u8,
}

impl ProfiledSpec {
    /// Device `device` served with `profile` over Modbus TCP, unit 1.
    pub fn tcp(device: &str, profile: Arc<ProfileMap>) -> Self {
        ProfiledSpec {
            device: device.to_string(),
            profile,
            framing: Framing::Tcp,
            unit: 1,
        }
    }

    /// The same over RTU frames (a transparent gateway) at `unit`.
    pub fn rtu_over_tcp(device: &str, profile: Arc<ProfileMap>, unit: u8) -> Self {
        ProfiledSpec {
            framing: Framing::RtuOverTcp,
            unit,
            ..Self::tcp(device, profile)
        }
    }

    /// The same as RTU frames on the serial port at `path` (9600 8N1), at `unit`.
    pub fn rtu_serial(device: &str, profile: Arc<ProfileMap>, unit: u8, path: &str) -> Self {
        ProfiledSpec {
            framing: Framing::RtuSerial {
                path: path.to_string(),
                baud: 9600,
            },
            unit,
            ..Self::tcp(device, profile)
        }
    }

    /// Whether the profile's kind fits the device it plays.
    pub fn fits(&self, kind: DeviceKind) -> bool {
        let want = match kind {
            DeviceKind::Pv => "pv",
            DeviceKind::Battery => "battery",
            DeviceKind::GridMeter | DeviceKind::BuildingMeter => "meter",
            DeviceKind::Charger { .. } => "charger",
        };
        self.profile.kind == want
    }
}

/// The running state of one profiled device: registers written that the physics does not
/// hold (direction codes, `prepare` registers, setpoints without a physics meaning).
#[derive(Debug)]
pub struct ServedProfile {
    pub spec: ProfiledSpec,
    held: Mutex<BTreeMap<u16, u16>>,
}

/// The largest magnitude a type holds, for saturation.
fn bounds(ty: Ty) -> (f64, f64) {
    match ty {
        Ty::U16 => (0.0, 65535.0),
        Ty::I16 => (-32768.0, 32767.0),
        Ty::U32 => (0.0, 4_294_967_295.0),
        Ty::I32 => (-2_147_483_648.0, 2_147_483_647.0),
        Ty::U64 => (0.0, 1.8e19),
        Ty::I64 => (-9.2e18, 9.2e18),
        Ty::F32 => (-f64::from(f32::MAX), f64::from(f32::MAX)),
        Ty::F64 | Ty::Text(_) => (f64::MIN, f64::MAX),
    }
}

/// Encode a raw (unscaled) number into the words of `ty`, saturating; NaN shows the
/// "not implemented" marker of integer types.
pub fn number_words(raw: f64, ty: Ty, low_first: bool) -> Vec<u16> {
    let (lo, hi) = bounds(ty);
    let r = raw.round().clamp(lo, hi);
    // Every cast follows the clamp into the type's own range.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let (bits, n): (u64, u32) = match ty {
        Ty::U16 if raw.is_nan() => (0xFFFF, 1),
        Ty::I16 if raw.is_nan() => (0x8000, 1),
        Ty::U32 if raw.is_nan() => (0xFFFF_FFFF, 2),
        Ty::I32 if raw.is_nan() => (0x8000_0000, 2),
        Ty::U64 if raw.is_nan() => (u64::MAX, 4),
        Ty::I64 if raw.is_nan() => (1 << 63, 4),
        Ty::U16 => (r as u64, 1),
        Ty::I16 => (u64::from(r as i16 as u16), 1),
        Ty::U32 => (r as u64, 2),
        Ty::I32 => (u64::from(r as i32 as u32), 2),
        Ty::U64 => (r as u64, 4),
        Ty::I64 => (r as i64 as u64, 4),
        Ty::F32 => (u64::from((raw.clamp(lo, hi) as f32).to_bits()), 2),
        Ty::F64 => (raw.to_bits(), 4),
        Ty::Text(n) => return vec![0; usize::from(n)],
    };
    let mut words: Vec<u16> = (0..n)
        .rev()
        .map(|i| ((bits >> (16 * i)) & 0xFFFF) as u16)
        .collect();
    if low_first {
        words.reverse();
    }
    words
}

/// The words of a number of `ty` back into a number (`None` for text).
fn number_of(words: &[u16], ty: Ty, low_first: bool) -> Option<f64> {
    let mut w = words.to_vec();
    if low_first {
        w.reverse();
    }
    let bits = w.iter().fold(0u64, |acc, x| (acc << 16) | u64::from(*x));
    // Reinterpreting the joined bits at the type's width is the intent.
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
    Some(match ty {
        Ty::U16 | Ty::U32 | Ty::U64 => bits as f64,
        Ty::I16 => f64::from(bits as u16 as i16),
        Ty::I32 => f64::from(bits as u32 as i32),
        Ty::I64 => bits as i64 as f64,
        Ty::F32 => f64::from(f32::from_bits(bits as u32)),
        Ty::F64 => f64::from_bits(bits),
        Ty::Text(_) => return None,
    })
}

/// ASCII text into `n` registers, high byte first, NUL padded.
fn text_words(text: &str, n: u16) -> Vec<u16> {
    let mut bytes: Vec<u8> = text.bytes().take(usize::from(n) * 2).collect();
    bytes.resize(usize::from(n) * 2, 0);
    bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

/// What a point shows, in engineering units or text, before its own sign and scale.
enum Face {
    Number(f64),
    Text(String),
}

fn face_of(kind: DeviceKind, profile: &ProfileMap, p: &PointMap, view: &StationView) -> Face {
    let from_code = |code: &str| match p.ty {
        Ty::Text(_) => Face::Text(code.to_string()),
        _ => Face::Number(code.parse().unwrap_or(0.0)),
    };
    match shown(kind, &p.name, view) {
        Some(Shown::Number(v)) => Face::Number(v),
        Some(Shown::State(s)) => state_code(&p.states, s).map_or(Face::Number(0.0), from_code),
        None => match profile.expectation(&p.name) {
            Some(Expect::Range(lo, hi)) => Face::Number((lo + hi) / 2.0),
            Some(Expect::Equals(t) | Expect::StartsWith(t)) => Face::Text(t.clone()),
            None => Face::Number(match p.range {
                Some((lo, hi)) if !(lo..=hi).contains(&0.0) => lo,
                _ => 0.0,
            }),
        },
    }
}

/// The smallest exponent from -3 at which every value fits `ty`.
fn exponent_for(values: &[f64], ty: Ty) -> i16 {
    let (lo, hi) = bounds(ty);
    (-3..=9)
        .find(|sf| {
            let f = 10f64.powi(i32::from(*sf));
            values
                .iter()
                .all(|v| !v.is_finite() || (lo..=hi).contains(&(v / f).round()))
        })
        .unwrap_or(9)
}

impl ServedProfile {
    pub fn new(spec: ProfiledSpec) -> Self {
        ServedProfile {
            spec,
            held: Mutex::new(BTreeMap::new()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<u16, u16>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The image device `kind` shows for `view`.
    pub fn render(&self, kind: DeviceKind, view: &StationView) -> Image {
        let profile = &self.spec.profile;
        let mut regs: BTreeMap<u16, u16> = self.held().clone();
        for sp in &profile.setpoints {
            self.render_setpoint(kind, sp, view, &mut regs);
        }
        // Engineering value over sign, per point; text points apart.
        let mut numbers: BTreeMap<&str, f64> = BTreeMap::new();
        let mut flags: BTreeMap<&str, u64> = BTreeMap::new();
        for p in &profile.points {
            match face_of(kind, profile, p, view) {
                Face::Text(t) => {
                    put(&mut regs, p.address, &text_words(&t, p.ty.registers()));
                }
                Face::Number(mut v) => {
                    if let Some((flag, mask)) = &p.negative_when {
                        if v < 0.0 {
                            v = -v;
                            *flags.entry(flag.as_str()).or_default() |= mask;
                        }
                    }
                    numbers.insert(&p.name, v / p.sign);
                }
            }
        }
        let mut exponents: BTreeMap<u16, i16> = BTreeMap::new();
        for p in &profile.points {
            if let ScaleOf::Register(r) = p.scale {
                let shared: Vec<f64> = profile
                    .points
                    .iter()
                    .filter(|q| q.scale == ScaleOf::Register(r))
                    .filter_map(|q| numbers.get(q.name.as_str()).copied())
                    .collect();
                exponents
                    .entry(r)
                    .or_insert_with(|| exponent_for(&shared, p.ty));
            }
        }
        for (r, sf) in &exponents {
            // An i16 exponent register holds the two's complement of the exponent.
            #[allow(clippy::cast_sign_loss)]
            put(&mut regs, *r, &[*sf as u16]);
        }
        for p in &profile.points {
            let Some(v) = numbers.get(p.name.as_str()).copied() else {
                continue;
            };
            let factor = match p.scale {
                ScaleOf::Constant(f) => f,
                ScaleOf::Register(r) => {
                    10f64.powi(i32::from(exponents.get(&r).copied().unwrap_or(0)))
                }
            };
            let mut raw = v / factor;
            if let Some((shift, mask)) = p.bits {
                // Bit fields are unsigned codes (the profile format says so).
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let code = ((raw.round().max(0.0) as u64) & mask) << shift;
                raw = code as f64;
            }
            if let Some(bits) = flags.get(p.name.as_str()) {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let code = (raw.round().max(0.0) as u64) | bits;
                raw = code as f64;
            }
            put(&mut regs, p.address, &number_words(raw, p.ty, p.low_first));
        }
        Image {
            units: vec![UnitImage {
                unit: self.spec.unit,
                blocks: blocks(&regs),
            }],
        }
    }

    /// A setpoint's register (and direction register) as the device reads it back.
    fn render_setpoint(
        &self,
        kind: DeviceKind,
        sp: &SetpointMap,
        view: &StationView,
        regs: &mut BTreeMap<u16, u16>,
    ) {
        let followed = match (kind, sp.name.as_str()) {
            (DeviceKind::Pv, "limit_pct") => Some(if view.pv.limit_enabled {
                view.pv.limit_pct
            } else {
                100.0
            }),
            (DeviceKind::Battery, "power_w") => Some(if view.battery.setpoint_enabled {
                view.battery.setpoint_w
            } else {
                0.0
            }),
            (DeviceKind::Charger { index }, "current_a") => {
                view.chargers.get(index).map(|c| c.setpoint_a)
            }
            (DeviceKind::Charger { index }, "fallback_current_a") => {
                view.chargers.get(index).map(|c| c.safe_current_a)
            }
            _ => None,
        };
        let Some(v) = followed else {
            for i in 0..sp.ty.registers() {
                regs.entry(sp.address.wrapping_add(i)).or_insert(0);
            }
            return;
        };
        let v = v * sp.sign;
        let (register, shown) = match sp.direction {
            Some(d) => {
                let code = if v > 0.0 {
                    d.positive
                } else if v < 0.0 {
                    d.negative
                } else {
                    d.zero
                };
                put(regs, d.address, &[code]);
                (d.register_for(sp.address, v), v.abs())
            }
            None => (sp.address, v),
        };
        put(
            regs,
            register,
            &number_words(shown / sp.scale, sp.ty, sp.low_first),
        );
        for (a, _) in &sp.prepare {
            regs.entry(*a).or_insert(0);
        }
        if let Some(r) = sp.direction.and_then(|d| d.negative_register) {
            for i in 0..sp.ty.registers() {
                regs.entry(r.wrapping_add(i)).or_insert(0);
            }
        }
    }

    /// Decode a write into commands (checked whole before anything is held); see the module
    /// doc for the rules.
    pub fn write(
        &self,
        kind: DeviceKind,
        addr: u16,
        words: &[u16],
        view: &StationView,
    ) -> Result<Vec<Command>, ExceptionCode> {
        let end = u32::from(addr) + words.len() as u32;
        let within =
            |a: u16, n: u16| u32::from(a) >= u32::from(addr) && u32::from(a) + u32::from(n) <= end;
        let touches =
            |a: u16, n: u16| u32::from(a) < end && u32::from(a) + u32::from(n) > u32::from(addr);
        let at = |a: u16| words[usize::from(a - addr)];
        let mut covered = vec![false; words.len()];
        let mut cover = |a: u16, n: u16| {
            for i in 0..n {
                covered[usize::from(a - addr + i)] = true;
            }
        };
        let mut held = self.held();
        let mut pending = held.clone();
        let mut touched: Vec<&SetpointMap> = Vec::new();
        for sp in &self.spec.profile.setpoints {
            let mut hit = false;
            if let Some(d) = sp.direction.filter(|d| within(d.address, 1)) {
                let code = at(d.address);
                if ![d.positive, d.negative, d.zero].contains(&code) {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                cover(d.address, 1);
                pending.insert(d.address, code);
                hit = true;
            }
            let registers = [
                Some(sp.address),
                sp.direction.and_then(|d| d.negative_register),
            ];
            for register in registers.into_iter().flatten() {
                if !touches(register, sp.ty.registers()) {
                    continue;
                }
                if !within(register, sp.ty.registers()) {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                let w: Vec<u16> = (0..sp.ty.registers()).map(|i| at(register + i)).collect();
                let raw =
                    number_of(&w, sp.ty, sp.low_first).ok_or(ExceptionCode::IllegalDataValue)?;
                let v = raw * sp.scale * sp.sign;
                let (lo, hi) = match sp.direction {
                    Some(_) => (0.0, sp.min.abs().max(sp.max.abs())),
                    None => (sp.min, sp.max),
                };
                if !v.is_finite() || !(lo - 1e-9..=hi + 1e-9).contains(&v) {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                cover(register, sp.ty.registers());
                for (i, x) in w.iter().enumerate() {
                    pending.insert(register.wrapping_add(i as u16), *x);
                }
                hit = true;
            }
            for (a, _) in sp.prepare.iter().filter(|(a, _)| within(*a, 1)) {
                cover(*a, 1);
                pending.insert(*a, at(*a));
            }
            if hit {
                touched.push(sp);
            }
        }
        if covered.iter().any(|c| !c) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let mut commands = Vec::new();
        for sp in touched {
            let prepared = sp.prepare.iter().all(|(a, v)| pending.get(a) == Some(v));
            if let (true, Some(v)) = (prepared, signed_value(sp, &pending)) {
                commands.extend(commands_for(kind, sp, v, view)?);
            }
        }
        *held = pending;
        Ok(commands)
    }
}

/// The engineering value a setpoint's held registers (and direction code) say.
fn signed_value(sp: &SetpointMap, regs: &BTreeMap<u16, u16>) -> Option<f64> {
    let code = sp
        .direction
        .map(|d| regs.get(&d.address).copied().unwrap_or(d.zero));
    let register = match (sp.direction, code) {
        (Some(d), Some(c)) if c == d.negative => d.register_for(sp.address, -1.0),
        _ => sp.address,
    };
    let w: Vec<u16> = (0..sp.ty.registers())
        .map(|i| regs.get(&register.wrapping_add(i)).copied().unwrap_or(0))
        .collect();
    let v = number_of(&w, sp.ty, sp.low_first)? * sp.scale * sp.sign;
    let (Some(d), Some(code)) = (sp.direction, code) else {
        return Some(v);
    };
    Some(if code == d.positive {
        v.abs()
    } else if code == d.negative {
        -v.abs()
    } else {
        0.0
    })
}

/// The physics commands of a setpoint value; setpoints the physics has no meaning for give
/// none (they are held and read back).
fn commands_for(
    kind: DeviceKind,
    sp: &SetpointMap,
    v: f64,
    view: &StationView,
) -> Result<Vec<Command>, ExceptionCode> {
    let revert = sp.refresh_s.unwrap_or(0);
    Ok(match (kind, sp.name.as_str()) {
        (DeviceKind::Pv, "limit_pct") => vec![
            Command::PvLimitRevertS(revert),
            Command::PvLimitEnabled(true),
            Command::PvLimitPct(v),
        ],
        (DeviceKind::Battery, "power_w") => vec![
            Command::BatterySetpointRevertS(revert),
            Command::BatterySetpointEnabled(true),
            Command::BatterySetpointW(v),
        ],
        (DeviceKind::Charger { index }, name @ ("current_a" | "fallback_current_a")) => {
            let rating = view
                .chargers
                .get(index)
                .map(|c| c.rating_a)
                .ok_or(ExceptionCode::ServerDeviceFailure)?;
            if v < 0.0 {
                return Err(ExceptionCode::IllegalDataValue);
            }
            let amps = v.min(rating);
            vec![if name == "current_a" {
                Command::ChargerSetpointA { index, amps }
            } else {
                Command::ChargerSafeCurrentA { index, amps }
            }]
        }
        _ => Vec::new(),
    })
}

fn put(regs: &mut BTreeMap<u16, u16>, at: u16, words: &[u16]) {
    for (i, w) in words.iter().enumerate() {
        if let Some(a) = u16::try_from(i).ok().and_then(|i| at.checked_add(i)) {
            regs.insert(a, *w);
        }
    }
}

/// Contiguous registers into blocks.
fn blocks(regs: &BTreeMap<u16, u16>) -> Vec<Block> {
    let mut out: Vec<Block> = Vec::new();
    for (&a, &w) in regs {
        match out.last_mut() {
            Some(b) if u32::from(b.start) + b.words.len() as u32 == u32::from(a) => b.words.push(w),
            _ => out.push(Block {
                start: a,
                words: vec![w],
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::fake::sample_view;

    fn profile(name: &str) -> Arc<ProfileMap> {
        let path = format!(
            "{}/../config/profiles/{name}.toml",
            env!("CARGO_MANIFEST_DIR")
        );
        Arc::new(ProfileMap::load(Path::new(&path)).unwrap())
    }

    fn served(device: &str, name: &str) -> ServedProfile {
        ServedProfile::new(ProfiledSpec::tcp(device, profile(name)))
    }

    fn read(image: &Image, addr: u16, n: u16) -> Vec<u16> {
        image.unit(1).unwrap().read(addr, n).unwrap().to_vec()
    }

    use std::path::Path;

    #[test]
    fn every_shipped_profile_can_be_served() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/profiles");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            ProfileMap::load(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
        assert!(n >= 6, "only {n} profiles");
    }

    #[test]
    fn a_dtsu666_grid_meter_shows_the_grid_power_as_a_float_in_tenths_of_a_watt() {
        let view = sample_view(0);
        let image = served("grid-meter", "chint-dtsu666").render(DeviceKind::GridMeter, &view);
        // DTSU666 address table: Pt at 0x2012, float, 0.1 W; Ua at 0x2006, 0.1 V.
        let w = read(&image, 0x2012, 2);
        let pt = f32::from_bits((u32::from(w[0]) << 16) | u32::from(w[1]));
        assert!((f64::from(pt) - view.grid_meter.power_w * 10.0).abs() < 1.0);
        let w = read(&image, 0x2006, 2);
        let ua = f32::from_bits((u32::from(w[0]) << 16) | u32::from(w[1]));
        assert!((f64::from(ua) - view.grid_meter.voltage_v[0] * 10.0).abs() < 0.1);
        // The points of the fast read lie in one block, as on the meter.
        assert!(image.unit(1).unwrap().covers(0x2012, 8));
    }

    #[test]
    fn a_charging_sungrow_shows_the_magnitude_and_sets_the_charging_flag() {
        let mut view = sample_view(0);
        view.battery.power_w = -5_000.0;
        view.battery.soc_pct = 55.5;
        let image = served("battery", "sungrow-sh").render(DeviceKind::Battery, &view);
        assert_eq!(read(&image, 13021, 1), vec![5000]);
        assert_eq!(read(&image, 13000, 1)[0] & 0x0002, 0x0002);
        assert_eq!(read(&image, 13022, 1), vec![555]);
        let device_type = read(&image, 4999, 1)[0];
        assert!((3328..=3839).contains(&device_type), "{device_type}");
        view.battery.power_w = 5_000.0;
        let image = served("battery", "sungrow-sh").render(DeviceKind::Battery, &view);
        assert_eq!(read(&image, 13000, 1)[0] & 0x0002, 0);
    }

    #[test]
    fn sungrow_forced_power_takes_effect_only_in_forced_mode_and_with_a_declared_code() {
        let view = sample_view(0);
        let dev = served("battery", "sungrow-sh");
        let k = DeviceKind::Battery;
        assert_eq!(dev.write(k, 13050, &[0xAA], &view), Ok(vec![]));
        assert_eq!(dev.write(k, 13051, &[5000], &view), Ok(vec![]));
        assert_eq!(
            dev.write(k, 13050, &[0x77], &view),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            dev.write(k, 13060, &[1], &view),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(dev.write(k, 13049, &[2], &view), Ok(vec![]));
        let cmds = dev.write(k, 13051, &[4000], &view).unwrap();
        assert_eq!(cmds.last(), Some(&Command::BatterySetpointW(-4000.0)));
        assert!(cmds.contains(&Command::BatterySetpointRevertS(0)));
        let cmds = dev.write(k, 13050, &[0xBB], &view).unwrap();
        assert_eq!(cmds.last(), Some(&Command::BatterySetpointW(4000.0)));
        assert_eq!(
            dev.write(k, 13051, &[20_000], &view),
            Err(ExceptionCode::IllegalDataValue),
            "outside the setpoint's range"
        );
    }

    #[test]
    fn a_huawei_inverter_shows_its_model_status_and_takes_a_percentage_limit() {
        let mut view = sample_view(0);
        view.pv.status = crate::view::PvStatus::Mppt;
        let dev = served("pv", "huawei-sun2000");
        let image = dev.render(DeviceKind::Pv, &view);
        let model = read(&image, 30000, 15);
        assert_eq!(model[0..4], [0x5355, 0x4E32, 0x3030, 0x3000]); // "SUN2000\0"
        assert_eq!(read(&image, 32089, 1), vec![0x0200]);
        let w = read(&image, 32080, 2);
        let p = i32::from_be_bytes([(w[0] >> 8) as u8, w[0] as u8, (w[1] >> 8) as u8, w[1] as u8]);
        assert_eq!(f64::from(p), view.pv.power_w.round());
        let cmds = dev.write(DeviceKind::Pv, 40125, &[500], &view).unwrap();
        assert_eq!(cmds.last(), Some(&Command::PvLimitPct(50.0)));
        assert_eq!(
            dev.write(DeviceKind::Pv, 40125, &[1001], &view),
            Err(ExceptionCode::IllegalDataValue)
        );
    }

    #[test]
    fn a_charx_charger_shows_its_state_letter_and_takes_a_current() {
        let view = sample_view(2);
        let dev = served("charger-1", "phoenix-charx-sec");
        let image = dev.render(DeviceKind::Charger { index: 0 }, &view);
        assert_eq!(read(&image, 1299, 1), vec![u16::from_be_bytes([b'C', 0])]);
        let cmds = dev
            .write(DeviceKind::Charger { index: 0 }, 1301, &[16], &view)
            .unwrap();
        assert_eq!(
            cmds,
            vec![Command::ChargerSetpointA {
                index: 0,
                amps: 16.0
            }]
        );
        let image = dev.render(DeviceKind::Charger { index: 1 }, &view);
        assert_eq!(read(&image, 1299, 1), vec![u16::from_be_bytes([b'A', 0])]);
    }

    #[test]
    fn a_luna2000_takes_charge_and_discharge_power_in_their_own_registers() {
        let view = sample_view(0);
        let dev = served("battery", "huawei-luna2000");
        let k = DeviceKind::Battery;
        assert_eq!(dev.write(k, 47246, &[0], &view), Ok(vec![]));
        assert_eq!(dev.write(k, 47083, &[5], &view), Ok(vec![]));
        assert_eq!(
            dev.write(k, 47247, &[0, 3000], &view),
            Ok(vec![
                Command::BatterySetpointRevertS(240),
                Command::BatterySetpointEnabled(true),
                Command::BatterySetpointW(0.0),
            ])
        );
        let cmds = dev.write(k, 47100, &[1], &view).unwrap();
        assert_eq!(cmds.last(), Some(&Command::BatterySetpointW(-3000.0)));
        let mut view = sample_view(0);
        view.battery.setpoint_enabled = true;
        view.battery.setpoint_w = -3000.0;
        view.battery.power_w = -2900.0;
        let image = dev.render(k, &view);
        assert_eq!(read(&image, 47247, 2), vec![0, 3000]);
        assert_eq!(read(&image, 47100, 1), vec![1]);
        // Charging is > 0 on the LUNA2000's wire.
        assert_eq!(read(&image, 37765, 2), vec![0, 2900]);
    }

    #[test]
    fn nan_shows_the_integer_marker_and_big_values_saturate() {
        assert_eq!(number_words(f64::NAN, Ty::U16, false), vec![0xFFFF]);
        assert_eq!(number_words(f64::NAN, Ty::I32, false), vec![0x8000, 0]);
        assert_eq!(number_words(1e9, Ty::I16, false), vec![0x7FFF]);
        assert_eq!(number_words(-1.0, Ty::U32, true), vec![0, 0]);
        assert_eq!(number_words(-2.0, Ty::I32, true), vec![0xFFFE, 0xFFFF]);
    }

    #[test]
    fn a_shared_scale_register_takes_the_exponent_every_value_fits() {
        assert_eq!(exponent_for(&[1.5, 2.0], Ty::I16), -3);
        assert_eq!(exponent_for(&[120_000.0], Ty::I16), 1);
        assert_eq!(exponent_for(&[120_000.0, 1.0], Ty::U16), 1);
    }
}
