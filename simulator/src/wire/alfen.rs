//! The EV chargers: Alfen NG9xx "Modbus slave" (Active Load Balancing) profile.
//!
//! Unit 1 (the socket):
//! - 300..426 meter block: 300 meter state (uint16), 301 last-value timestamp (uint64), 305
//!   meter type (uint16) all read 0 (their encodings are not confirmed, so nothing is claimed);
//!   306/308/310 phase voltages V (float32), 320/322/324 phase currents A (float32), 326
//!   current sum A (float32), 344 real power sum W (float32), 374 real energy delivered Wh
//!   (float64). Every other point of the block (line-line voltages 312..316, neutral current
//!   318, power factors 328..334, frequency 336, per-phase real power 338..342, apparent and
//!   reactive powers 346..360, per-phase delivered energy 362..372, consumed/apparent/reactive
//!   energies 378..425) reads NaN, the float "not available" value.
//! - 1200..1216 control block: 1200 availability (uint16, 1 = operative), 1201 mode-3 state
//!   (string, 5 registers, two ASCII characters per register, NUL padded), 1206 applied max
//!   current A (float32), 1208 remaining validity s (uint32), 1210 max current setpoint A
//!   (float32, read/write, FC16 with both registers: one register of it is a partial write,
//!   0x03), 1212 safe current A (float32, read/write), 1214 setpoint accounted for (uint16: 1
//!   while the last setpoint is valid, 0 once fallen back to the safe current), 1215 phases
//!   (uint16, read/write with FC6 or FC16, 1 or 3).
//!
//! Writes to 1210/1212: NaN, infinite or negative -> exception 0x03; a value above the
//! charger's rating is accepted and clamped to the rating (the charger applies at most its
//! rating, as the real one applies at most its station limit).
//!
//! Unit 200 (the station), block 1100..1106: 1100 active max current A (float32, the applied
//! max current), 1102 temperature C (float32), 1104 OCPP state (uint16, 0 = no backend: the
//! simulator has none), 1105 number of sockets (uint16, 1). These station addresses come from
//! public driver code, not from the vendor document; they are kept to these four points.
//!
//! Register layout checked against the public OpenEMS Alfen driver (blocks 300..361,
//! 362..425 and 1200..1215 read with FC3). All floats are IEEE 754 big-endian, high word
//! first.

use super::encode::{f32_words, f64_words, string_into};
use super::image::{Block, Image, UnitImage};
use super::writes::{Field, FieldKind};
use crate::view::ChargerView;

/// The socket's unit id.
pub const SOCKET_UNIT: u8 = 1;
/// The station's unit id.
pub const STATION_UNIT: u8 = 200;

const METER_START: u16 = 300;
const FLOAT32_START: u16 = 306;
const FLOAT64_START: u16 = 362;
const METER_END: u16 = 426;
const CONTROL_START: u16 = 1200;
const CONTROL_END: u16 = 1216;
const STATION_START: u16 = 1100;
const STATION_END: u16 = 1106;

pub(crate) const SETPOINT_ADDR: u16 = 1210;
pub(crate) const SAFE_CURRENT_ADDR: u16 = 1212;
pub(crate) const PHASES_ADDR: u16 = 1215;

struct Regs {
    start: u16,
    words: Vec<u16>,
}

impl Regs {
    fn new(start: u16, end: u16) -> Self {
        Regs {
            start,
            words: vec![0; usize::from(end - start)],
        }
    }
    fn at(&mut self, addr: u16) -> &mut [u16] {
        &mut self.words[usize::from(addr - self.start)..]
    }
    fn f32(&mut self, addr: u16, v: f64) {
        self.at(addr)[..2].copy_from_slice(&f32_words(v));
    }
    fn f64(&mut self, addr: u16, v: f64) {
        self.at(addr)[..4].copy_from_slice(&f64_words(v));
    }
    fn u16(&mut self, addr: u16, v: u16) {
        self.at(addr)[0] = v;
    }
    fn u32(&mut self, addr: u16, v: u32) {
        self.at(addr)[..2].copy_from_slice(&[(v >> 16) as u16, v as u16]);
    }
    fn block(self) -> Block {
        Block {
            start: self.start,
            words: self.words,
        }
    }
}

/// Renders one charger.
pub(crate) fn render_charger(c: &ChargerView) -> Image {
    let mut meter = Regs::new(METER_START, METER_END);
    // 300..306 (meter state, timestamp, type) stay 0. Float32 points 306..362, float64
    // points 362..426: all "not available" first.
    for addr in (FLOAT32_START..FLOAT64_START).step_by(2) {
        meter.f32(addr, f64::NAN);
    }
    for addr in (FLOAT64_START..METER_END).step_by(4) {
        meter.f64(addr, f64::NAN);
    }
    for (i, addr) in [306, 308, 310].into_iter().enumerate() {
        meter.f32(addr, c.voltage_v[i]);
    }
    for (i, addr) in [320, 322, 324].into_iter().enumerate() {
        meter.f32(addr, c.current_a[i]);
    }
    meter.f32(326, c.current_a.iter().sum());
    meter.f32(344, c.power_w);
    meter.f64(374, c.energy_wh);

    let mut control = Regs::new(CONTROL_START, CONTROL_END);
    control.u16(1200, 1);
    string_into(c.state.as_str(), &mut control.at(1201)[..5]);
    control.f32(1206, c.applied_max_a);
    control.u32(1208, c.remaining_validity_s);
    control.f32(SETPOINT_ADDR, c.setpoint_a);
    control.f32(SAFE_CURRENT_ADDR, c.safe_current_a);
    control.u16(1214, u16::from(c.remaining_validity_s > 0));
    control.u16(PHASES_ADDR, u16::from(c.phases));

    let mut station = Regs::new(STATION_START, STATION_END);
    station.f32(1100, c.applied_max_a);
    station.f32(1102, c.temperature_c);
    station.u16(1104, 0);
    station.u16(1105, 1);

    Image {
        units: vec![
            UnitImage {
                unit: SOCKET_UNIT,
                blocks: vec![meter.block(), control.block()],
            },
            UnitImage {
                unit: STATION_UNIT,
                blocks: vec![station.block()],
            },
        ],
    }
}

/// The writable registers of a charger (`index` is 0-based).
pub(crate) fn charger_fields(index: usize) -> Vec<Field> {
    vec![
        Field {
            unit: SOCKET_UNIT,
            addr: SETPOINT_ADDR,
            len: 2,
            kind: FieldKind::ChargerSetpointA(index),
        },
        Field {
            unit: SOCKET_UNIT,
            addr: SAFE_CURRENT_ADDR,
            len: 2,
            kind: FieldKind::ChargerSafeCurrentA(index),
        },
        Field {
            unit: SOCKET_UNIT,
            addr: PHASES_ADDR,
            len: 1,
            kind: FieldKind::ChargerPhases(index),
        },
    ]
}
