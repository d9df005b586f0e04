//! SunSpec discovery and point decoding.
//!
//! Discovery reads two registers at 40000, then 0, then 50000 looking for "SunS"
//! (0x5375 0x6E53), then walks the model chain `[ID][L][L registers]` until ID 0xFFFF, recording
//! every model's address and length. Drivers find models by id; no offset of a model is assumed.
//!
//! Point offsets used by the drivers count from the model's ID register (ID at +0, L at +1) and
//! were checked against the model JSON files shipped in pysunspec2 1.3.7 (`models/json`).
//!
//! "Not implemented" markers decode to `None`, never to a value:
//! int16 and sunssf 0x8000, uint16 and enum16 0xFFFF, uint32 and bitfield32 0xFFFFFFFF,
//! int32 0x80000000, float32 NaN, string all NUL, acc32 0.
//! acc32 0 is "not accumulated": an energy counter reading 0 is indistinguishable from a device
//! that does not accumulate, so energy counters of value 0 are reported as missing. Only energy
//! counters (WH, TotWhImp, TotWhExp) use acc32 here, and the readings carry them as `Option`.

use super::error::DeviceError;
use super::link::Link;

/// The "SunS" marker as two registers.
pub const SUNS_MARKER: [u16; 2] = [0x5375, 0x6E53];
/// Base addresses probed for the marker, in order.
pub const SEARCH_BASES: [u16; 3] = [40000, 0, 50000];
/// Model id that ends the chain.
pub const END_MODEL_ID: u16 = 0xFFFF;
/// Upper bound on the models walked (guards against a looping or corrupt chain).
pub const MAX_MODELS: usize = 256;

/// One model found in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelEntry {
    /// SunSpec model id.
    pub id: u16,
    /// Address of the model's ID register.
    pub addr: u16,
    /// Length L (registers after the ID and L registers).
    pub len: u16,
}

impl ModelEntry {
    /// Address of `count` registers at `offset` from the model's ID register, refused when they
    /// run past the model's length (`L` + the ID and L registers) or past address 65535: a
    /// device whose model is shorter than the map says gets an error, never a write elsewhere.
    pub fn at(&self, offset: u16, count: u16) -> Result<u16, crate::devices::error::DeviceError> {
        let end = u32::from(offset) + u32::from(count);
        let addr = self.addr.checked_add(offset);
        match addr {
            Some(a)
                if end <= u32::from(self.len) + 2 && u32::from(a) + u32::from(count) <= 65_536 =>
            {
                Ok(a)
            }
            _ => Err(crate::devices::error::DeviceError::bad_data(
                &format!("model {}", self.id),
                format!(
                    "registers {offset}..{end} lie beyond the model (length {} at {})",
                    self.len, self.addr
                ),
            )),
        }
    }
}

/// The model chain of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SunSpecMap {
    /// Address of the "SunS" marker.
    pub base: u16,
    /// Models in chain order.
    pub models: Vec<ModelEntry>,
}

impl SunSpecMap {
    /// First model with this id.
    pub fn find(&self, id: u16) -> Option<ModelEntry> {
        self.models.iter().copied().find(|m| m.id == id)
    }

    /// First model whose id is in `ids` (in chain order).
    pub fn find_any(&self, ids: &[u16]) -> Option<ModelEntry> {
        self.models.iter().copied().find(|m| ids.contains(&m.id))
    }

    /// Like `find`, with `ModelMissing` when absent.
    pub fn require(&self, id: u16) -> Result<ModelEntry, DeviceError> {
        self.find(id).ok_or(DeviceError::ModelMissing(id))
    }
}

/// Locate the SunSpec marker and walk the model chain.
///
/// An exception at a probed base (typically 0x02 illegal data address) moves on to the next
/// base; a link failure aborts discovery.
pub async fn discover(link: &mut Link) -> Result<SunSpecMap, DeviceError> {
    let mut base_found = None;
    for base in SEARCH_BASES {
        match link.read_holding(base, 2).await {
            Ok(words) if words[..] == SUNS_MARKER => {
                base_found = Some(base);
                break;
            }
            Ok(_) => {}
            Err(DeviceError::Exception { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let Some(base) = base_found else {
        return Err(DeviceError::NotSunSpec {
            tried: SEARCH_BASES.to_vec(),
        });
    };
    let mut models = Vec::new();
    let mut addr = u32::from(base) + 2;
    loop {
        if models.len() >= MAX_MODELS {
            return Err(DeviceError::bad_data(
                "model chain",
                format!("more than {MAX_MODELS} models"),
            ));
        }
        let Ok(at) = u16::try_from(addr) else {
            return Err(DeviceError::bad_data(
                "model chain",
                "chain runs past register 65535 without an end marker",
            ));
        };
        if u32::from(at) + 2 > 0x1_0000 {
            return Err(DeviceError::bad_data("model chain", "header past 65535"));
        }
        let hdr = link.read_holding(at, 2).await?;
        let (id, len) = (hdr[0], hdr[1]);
        if id == END_MODEL_ID {
            break;
        }
        models.push(ModelEntry { id, addr: at, len });
        addr = u32::from(at) + 2 + u32::from(len);
    }
    Ok(SunSpecMap { base, models })
}

/// Registers of one model, read whole (ID and L included, so offsets match the model tables).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelBlock {
    /// The model this block was read from.
    pub entry: ModelEntry,
    /// `len + 2` registers starting at the ID register.
    pub regs: Vec<u16>,
}

/// Read a whole model in requests of at most 125 registers. `ModelMissing(id)` when the
/// registers at the recorded address no longer start with the model's id.
pub async fn read_model(link: &mut Link, entry: ModelEntry) -> Result<ModelBlock, DeviceError> {
    let total = u32::from(entry.len) + 2;
    let Ok(total) = u16::try_from(total) else {
        return Err(DeviceError::bad_data("L", "model length overflows"));
    };
    let regs = link.read_holding(entry.addr, total).await?;
    if regs.first() != Some(&entry.id) {
        // The chain changed under us (device replaced or reconfigured): the caller should run
        // discovery again.
        return Err(DeviceError::ModelMissing(entry.id));
    }
    Ok(ModelBlock { entry, regs })
}

impl ModelBlock {
    /// Build a block from registers already read (ID register first).
    pub fn from_regs(entry: ModelEntry, regs: Vec<u16>) -> Self {
        ModelBlock { entry, regs }
    }

    /// Raw register at `off`.
    pub fn raw(&self, off: u16) -> Option<u16> {
        self.regs.get(usize::from(off)).copied()
    }

    fn pair(&self, off: u16) -> Option<[u16; 2]> {
        Some([self.raw(off)?, self.raw(off.checked_add(1)?)?])
    }

    /// uint16 / enum16 point.
    pub fn uint16(&self, off: u16) -> Option<u16> {
        decode_uint16(self.raw(off)?)
    }

    /// int16 point.
    pub fn int16(&self, off: u16) -> Option<i16> {
        decode_int16(self.raw(off)?)
    }

    /// sunssf point (range -10..=10 accepted).
    pub fn sunssf(&self, off: u16) -> Option<i16> {
        decode_sunssf(self.raw(off)?)
    }

    /// uint32 / bitfield32 point.
    pub fn uint32(&self, off: u16) -> Option<u32> {
        decode_uint32(self.pair(off)?)
    }

    /// acc32 point (0 is missing, see module docs).
    pub fn acc32(&self, off: u16) -> Option<u32> {
        decode_acc32(self.pair(off)?)
    }

    /// int32 point.
    pub fn int32(&self, off: u16) -> Option<i32> {
        decode_int32(self.pair(off)?)
    }

    /// float32 point.
    pub fn float32(&self, off: u16) -> Option<f32> {
        decode_float32(self.pair(off)?)
    }

    /// string point of `len` registers.
    pub fn string(&self, off: u16, len: u16) -> Option<String> {
        let start = usize::from(off);
        let end = start + usize::from(len);
        decode_string(self.regs.get(start..end)?)
    }

    /// int16 point scaled by the sunssf at `sf_off`.
    pub fn int16_sf(&self, off: u16, sf_off: u16) -> Option<f64> {
        Some(scale(f64::from(self.int16(off)?), self.sunssf(sf_off)?))
    }

    /// uint16 point scaled by the sunssf at `sf_off`.
    pub fn uint16_sf(&self, off: u16, sf_off: u16) -> Option<f64> {
        Some(scale(f64::from(self.uint16(off)?), self.sunssf(sf_off)?))
    }

    /// acc32 point scaled by the sunssf at `sf_off`.
    pub fn acc32_sf(&self, off: u16, sf_off: u16) -> Option<f64> {
        Some(scale(f64::from(self.acc32(off)?), self.sunssf(sf_off)?))
    }

    /// int32 point scaled by the sunssf at `sf_off`.
    pub fn int32_sf(&self, off: u16, sf_off: u16) -> Option<f64> {
        Some(scale(f64::from(self.int32(off)?), self.sunssf(sf_off)?))
    }

    /// float32 point as f64 (NaN is missing).
    pub fn float(&self, off: u16) -> Option<f64> {
        self.float32(off).map(f64::from)
    }
}

/// value = raw x 10^sf.
pub fn scale(raw: f64, sf: i16) -> f64 {
    raw * 10f64.powi(i32::from(sf))
}

/// Inverse of `scale`, rounded to the nearest raw integer.
pub fn unscale(value: f64, sf: i16) -> f64 {
    (value / 10f64.powi(i32::from(sf))).round()
}

/// uint16/enum16: 0xFFFF is missing.
pub fn decode_uint16(raw: u16) -> Option<u16> {
    (raw != 0xFFFF).then_some(raw)
}

/// int16: 0x8000 is missing.
pub fn decode_int16(raw: u16) -> Option<i16> {
    (raw != 0x8000).then_some(raw as i16)
}

/// sunssf: 0x8000 is missing; values outside -10..=10 are invalid and treated as missing.
pub fn decode_sunssf(raw: u16) -> Option<i16> {
    decode_int16(raw).filter(|sf| (-10..=10).contains(sf))
}

/// uint32/bitfield32, high word first: 0xFFFFFFFF is missing.
pub fn decode_uint32(w: [u16; 2]) -> Option<u32> {
    let v = (u32::from(w[0]) << 16) | u32::from(w[1]);
    (v != 0xFFFF_FFFF).then_some(v)
}

/// acc32, high word first: 0 is missing (not accumulated).
pub fn decode_acc32(w: [u16; 2]) -> Option<u32> {
    let v = (u32::from(w[0]) << 16) | u32::from(w[1]);
    (v != 0).then_some(v)
}

/// int32, high word first: 0x80000000 is missing.
pub fn decode_int32(w: [u16; 2]) -> Option<i32> {
    let v = (u32::from(w[0]) << 16) | u32::from(w[1]);
    (v != 0x8000_0000).then_some(v as i32)
}

/// float32, big-endian, high word first: NaN is missing.
pub fn decode_float32(w: [u16; 2]) -> Option<f32> {
    let v = f32::from_bits((u32::from(w[0]) << 16) | u32::from(w[1]));
    (!v.is_nan()).then_some(v)
}

/// Two registers of a float32, high word first.
pub fn encode_float32(v: f32) -> [u16; 2] {
    let b = v.to_bits();
    [(b >> 16) as u16, (b & 0xFFFF) as u16]
}

/// Two registers of a 32-bit integer, high word first.
/// Read back `count` registers at `addr` (1 or 2: uint16 or uint32) after writing `expected`
/// there, and refuse a device that does not hold it (`point` names it in the error).
pub(crate) async fn verify_written(
    link: &mut crate::devices::link::Link,
    point: &str,
    addr: u16,
    count: u16,
    expected: u32,
) -> Result<(), crate::devices::error::DeviceError> {
    let regs = link.read_holding(addr, count).await?;
    let actual = match regs.as_slice() {
        [v] => Some(u32::from(*v)),
        [hi, lo] => Some((u32::from(*hi) << 16) | u32::from(*lo)),
        _ => None,
    };
    match actual {
        Some(v) if v == expected => Ok(()),
        other => Err(crate::devices::error::DeviceError::bad_data(
            point,
            format!("wrote {expected}, the device holds {other:?}: its fallback is not configured"),
        )),
    }
}

pub fn encode_u32(v: u32) -> [u16; 2] {
    [(v >> 16) as u16, (v & 0xFFFF) as u16]
}

/// string: two ASCII bytes per register, high byte first, NUL padded; all NUL is missing.
pub fn decode_string(regs: &[u16]) -> Option<String> {
    let bytes: Vec<u8> = regs.iter().flat_map(|r| r.to_be_bytes()).collect();
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    if end == 0 {
        return None;
    }
    let s = String::from_utf8_lossy(&bytes[..end]).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// Registers holding `s` as a string point of `len` registers (NUL padded, truncated).
pub fn encode_string(s: &str, len: usize) -> Vec<u16> {
    let mut bytes: Vec<u8> = s.bytes().take(len * 2).collect();
    bytes.resize(len * 2, 0);
    bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}
