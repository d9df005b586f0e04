//! Pure decoding and encoding of register words: the value types of a profile point, word
//! order, scaling. No I/O, no panics on any input (a property test feeds arbitrary words).

use std::fmt;

/// How a point's registers hold its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// ASCII text, two characters per register (high byte first), NUL/blank padded.
    String {
        registers: u16,
    },
}

impl ValueType {
    /// Parse the profile spelling; `string` needs its length in registers.
    pub fn parse(name: &str, string_registers: Option<u16>) -> Option<Self> {
        Some(match name {
            "u16" => Self::U16,
            "i16" => Self::I16,
            "u32" => Self::U32,
            "i32" => Self::I32,
            "u64" => Self::U64,
            "i64" => Self::I64,
            "f32" => Self::F32,
            "f64" => Self::F64,
            "string" => Self::String {
                registers: string_registers?,
            },
            _ => return None,
        })
    }

    /// Registers the value occupies.
    pub fn registers(self) -> u16 {
        match self {
            Self::U16 | Self::I16 => 1,
            Self::U32 | Self::I32 | Self::F32 => 2,
            Self::U64 | Self::I64 | Self::F64 => 4,
            Self::String { registers } => registers,
        }
    }

    /// True for the numeric types.
    pub fn is_numeric(self) -> bool {
        !matches!(self, Self::String { .. })
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::U16 => "u16",
            Self::I16 => "i16",
            Self::U32 => "u32",
            Self::I32 => "i32",
            Self::U64 => "u64",
            Self::I64 => "i64",
            Self::F32 => "f32",
            Self::F64 => "f64",
            Self::String { .. } => "string",
        };
        f.write_str(s)
    }
}

/// Order of the 16-bit words of a multi-register value (bytes within a word are always
/// big-endian, as Modbus sends them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordOrder {
    /// Most significant word at the lowest address (Modbus convention, SunSpec, most meters).
    HighFirst,
    /// Least significant word first (Sungrow, some PLC-based devices).
    LowFirst,
}

impl WordOrder {
    /// Parse `high_first` / `low_first`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "high_first" => Some(Self::HighFirst),
            "low_first" => Some(Self::LowFirst),
            _ => None,
        }
    }
}

/// A decoded register value.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    Number(f64),
    Text(String),
}

/// Join `words` into one big-endian integer of up to 64 bits, honouring the word order.
fn join(words: &[u16], order: WordOrder) -> u64 {
    let fold = |acc: u64, w: &u16| (acc << 16) | u64::from(*w);
    match order {
        WordOrder::HighFirst => words.iter().fold(0, fold),
        WordOrder::LowFirst => words.iter().rev().fold(0, fold),
    }
}

/// Decode one value from exactly `ty.registers()` words; `None` when the slice is too short.
pub fn decode(words: &[u16], ty: ValueType, order: WordOrder) -> Option<Raw> {
    let n = usize::from(ty.registers());
    let w = words.get(..n)?;
    let bits = join(w, order);
    // The casts below reinterpret the joined bits at their own width (the intent).
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
    let v = match ty {
        ValueType::U16 | ValueType::U32 => bits as f64,
        ValueType::U64 => bits as f64,
        ValueType::I16 => f64::from(bits as u16 as i16),
        ValueType::I32 => f64::from(bits as u32 as i32),
        ValueType::I64 => bits as i64 as f64,
        ValueType::F32 => f64::from(f32::from_bits(bits as u32)),
        ValueType::F64 => f64::from_bits(bits),
        ValueType::String { .. } => return Some(Raw::Text(text(w))),
    };
    Some(Raw::Number(v))
}

/// ASCII text of registers, high byte first, cut at the first NUL, blanks trimmed.
pub fn text(words: &[u16]) -> String {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_string()
}

/// Why a value cannot be encoded into a register type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    #[error("{value} does not fit type {ty}")]
    OutOfRange { value: f64, ty: ValueType },
    #[error("type {0} cannot be written")]
    NotWritable(ValueType),
}

/// Encode a raw (already unscaled) number into the words of `ty`. Integers are rounded to the
/// nearest; a value outside the type's range is refused, never wrapped.
pub fn encode(value: f64, ty: ValueType, order: WordOrder) -> Result<Vec<u16>, EncodeError> {
    let out_of_range = || EncodeError::OutOfRange { value, ty };
    if !value.is_finite() {
        return Err(out_of_range());
    }
    let r = value.round();
    let fits = |lo: f64, hi: f64| (lo..=hi).contains(&r);
    // Each cast follows a range check of the rounded value against the target type.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let (bits, n): (u64, usize) = match ty {
        ValueType::U16 if fits(0.0, 65535.0) => (r as u64, 1),
        ValueType::I16 if fits(-32768.0, 32767.0) => (u64::from(r as i16 as u16), 1),
        ValueType::U32 if fits(0.0, 4_294_967_295.0) => (r as u64, 2),
        ValueType::I32 if fits(-2_147_483_648.0, 2_147_483_647.0) => {
            (u64::from(r as i32 as u32), 2)
        }
        ValueType::U64 if fits(0.0, 1.8e19) => (r as u64, 4),
        ValueType::I64 if fits(-9.2e18, 9.2e18) => (r as i64 as u64, 4),
        ValueType::F32 if value.abs() <= f64::from(f32::MAX) => {
            (u64::from((value as f32).to_bits()), 2)
        }
        ValueType::F64 => (value.to_bits(), 4),
        ValueType::String { .. } => return Err(EncodeError::NotWritable(ty)),
        _ => return Err(out_of_range()),
    };
    let mut words: Vec<u16> = (0..n)
        .rev()
        .map(|i| ((bits >> (16 * i)) & 0xFFFF) as u16)
        .collect();
    if order == WordOrder::LowFirst {
        words.reverse();
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_float_high_word_first_decodes_as_the_ieee_value() {
        let [hi, lo] = [0x4348u16, 0x0000];
        assert_eq!(
            decode(&[hi, lo], ValueType::F32, WordOrder::HighFirst),
            Some(Raw::Number(200.0))
        );
        assert_eq!(
            decode(&[lo, hi], ValueType::F32, WordOrder::LowFirst),
            Some(Raw::Number(200.0))
        );
    }

    #[test]
    fn signed_types_decode_negative_values() {
        let words = encode(-1234.0, ValueType::I32, WordOrder::LowFirst).unwrap();
        assert_eq!(words, vec![0xFB2E, 0xFFFF]);
        assert_eq!(
            decode(&words, ValueType::I32, WordOrder::LowFirst),
            Some(Raw::Number(-1234.0))
        );
        assert_eq!(
            decode(&[0xFFFF], ValueType::I16, WordOrder::HighFirst),
            Some(Raw::Number(-1.0))
        );
    }

    #[test]
    fn a_short_slice_decodes_to_nothing_instead_of_panicking() {
        assert_eq!(decode(&[1], ValueType::U64, WordOrder::HighFirst), None);
    }

    #[test]
    fn text_stops_at_the_first_nul_and_trims_blanks() {
        assert_eq!(text(&[0x5355, 0x4E32, 0x3030, 0x3020, 0x0000]), "SUN2000");
    }

    #[test]
    fn encoding_refuses_values_outside_the_type() {
        assert!(encode(70000.0, ValueType::U16, WordOrder::HighFirst).is_err());
        assert!(encode(-1.0, ValueType::U32, WordOrder::HighFirst).is_err());
        assert!(encode(f64::NAN, ValueType::F32, WordOrder::HighFirst).is_err());
        assert_eq!(
            encode(1000.4, ValueType::I16, WordOrder::HighFirst).unwrap(),
            vec![1000]
        );
    }
}
