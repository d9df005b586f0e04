//! Register encoding: scaled SunSpec integers with their "not implemented" markers, IEEE
//! floats (big-endian, high word first) and NUL-padded ASCII strings (two characters per
//! register, first character in the high byte).

fn raw(value: f64, sf: i16) -> f64 {
    (value / 10f64.powi(i32::from(sf))).round()
}

/// uint16 / enum16: NaN -> 0xFFFF; otherwise clamped to 0..=0xFFFE (0xFFFF is the marker).
pub(crate) fn u16_scaled(value: f64, sf: i16) -> u16 {
    if value.is_nan() {
        return 0xFFFF;
    }
    raw(value, sf).clamp(0.0, 65534.0) as u16
}

/// int16: NaN -> 0x8000; otherwise clamped to -32767..=32767 (-32768 is the marker).
pub(crate) fn i16_scaled(value: f64, sf: i16) -> u16 {
    if value.is_nan() {
        return 0x8000;
    }
    (raw(value, sf).clamp(-32767.0, 32767.0) as i16) as u16
}

fn split(value: u32) -> [u16; 2] {
    [(value >> 16) as u16, (value & 0xFFFF) as u16]
}

/// acc32: NaN -> 0 (the acc32 marker); otherwise clamped to 0..=0xFFFFFFFF.
pub(crate) fn acc32_scaled(value: f64, sf: i16) -> [u16; 2] {
    if value.is_nan() {
        return [0, 0];
    }
    split(raw(value, sf).clamp(0.0, f64::from(u32::MAX)) as u32)
}

/// uint32: NaN -> 0xFFFFFFFF; otherwise clamped to 0..=0xFFFFFFFE.
pub(crate) fn u32_scaled(value: f64, sf: i16) -> [u16; 2] {
    if value.is_nan() {
        return [0xFFFF, 0xFFFF];
    }
    split(raw(value, sf).clamp(0.0, f64::from(u32::MAX - 1)) as u32)
}

/// int32: NaN -> 0x80000000; otherwise clamped to -(2^31 - 1)..=2^31 - 1.
pub(crate) fn i32_scaled(value: f64, sf: i16) -> [u16; 2] {
    if value.is_nan() {
        return [0x8000, 0];
    }
    split(raw(value, sf).clamp(-f64::from(i32::MAX), f64::from(i32::MAX)) as i32 as u32)
}

/// Decodes a signed 32-bit value, high word first.
pub(crate) fn i32_from(words: &[u16]) -> i32 {
    u32_from(words) as i32
}

/// Decodes an unsigned 32-bit value, high word first.
pub(crate) fn u32_from(words: &[u16]) -> u32 {
    (u32::from(words[0]) << 16) | u32::from(words[1])
}

/// IEEE 754 single precision, high word first; NaN stays NaN.
pub(crate) fn f32_words(value: f64) -> [u16; 2] {
    split((value as f32).to_bits())
}

/// Decodes an IEEE 754 single, high word first.
pub(crate) fn f32_from(words: &[u16]) -> f32 {
    f32::from_bits(u32_from(words))
}

/// IEEE 754 double precision, highest word first.
pub(crate) fn f64_words(value: f64) -> [u16; 4] {
    let bits = value.to_bits();
    [
        (bits >> 48) as u16,
        (bits >> 32) as u16,
        (bits >> 16) as u16,
        bits as u16,
    ]
}

/// ASCII text into registers, two characters per register, NUL padded and truncated to fit.
/// Non-ASCII characters become '?'.
pub(crate) fn string_into(text: &str, slot: &mut [u16]) {
    let mut bytes = text
        .chars()
        .map(|c| if c.is_ascii() { c as u8 } else { b'?' })
        .chain(std::iter::repeat(0));
    for word in slot.iter_mut() {
        let hi = bytes.next().unwrap_or(0);
        let lo = bytes.next().unwrap_or(0);
        *word = (u16::from(hi) << 8) | u16::from(lo);
    }
}

/// The smallest scale factor in `0..=6` such that `bound` fits in `max_raw` raw counts.
/// Used for power and energy points, sized from the device's (constant) rating so that the
/// scale factor of a device never changes while it runs.
pub(crate) fn sf_for(bound: f64, max_raw: f64) -> i16 {
    if !bound.is_finite() {
        return 0;
    }
    let bound = bound.abs();
    (0..=6)
        .find(|sf| bound / 10f64.powi(*sf) <= max_raw)
        .map_or(6, |sf| sf as i16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_renders_the_marker_of_each_integer_type() {
        assert_eq!(u16_scaled(f64::NAN, 0), 0xFFFF);
        assert_eq!(i16_scaled(f64::NAN, 0), 0x8000);
        assert_eq!(acc32_scaled(f64::NAN, 0), [0, 0]);
        assert_eq!(u32_scaled(f64::NAN, 0), [0xFFFF, 0xFFFF]);
        assert_eq!(i32_scaled(f64::NAN, 0), [0x8000, 0]);
    }

    #[test]
    fn scaled_values_round_and_clamp_without_hitting_markers() {
        assert_eq!(u16_scaled(49.96, -1), 500);
        assert_eq!(i16_scaled(-1234.0, 1), (-123i16) as u16);
        assert_eq!(i16_scaled(-1e9, 0), (-32767i16) as u16);
        assert_eq!(u16_scaled(1e9, 0), 0xFFFE);
        assert_eq!(u16_scaled(-5.0, 0), 0);
        assert_eq!(i32_from(&i32_scaled(-100_000.0, 0)), -100_000);
        assert_eq!(u32_from(&u32_scaled(70_000.0, 0)), 70_000);
    }

    #[test]
    fn floats_are_big_endian_high_word_first() {
        assert_eq!(f32_words(1.0), [0x3F80, 0x0000]);
        assert_eq!(f32_from(&f32_words(-6.5)), -6.5);
        assert_eq!(f64_words(1.0), [0x3FF0, 0, 0, 0]);
        assert!(f32_from(&f32_words(f64::NAN)).is_nan());
    }

    #[test]
    fn strings_pack_two_ascii_characters_per_register_nul_padded() {
        let mut slot = [0xFFFFu16; 3];
        string_into("C2", &mut slot);
        assert_eq!(slot, [0x4332, 0, 0]);
        string_into("abcdefgh", &mut slot);
        assert_eq!(slot, [0x6162, 0x6364, 0x6566]);
    }

    proptest::proptest! {
        #[test]
        fn finite_in_range_values_round_trip_within_half_a_count_and_never_hit_a_marker(
            v in -3276.7f64..3276.7, sf in -2i16..=2,
        ) {
            let scale = 10f64.powi(i32::from(sf));
            let raw = i16_scaled(v, sf);
            proptest::prop_assert_ne!(raw, 0x8000);
            let back = f64::from(raw as i16) * scale;
            if (v / scale).abs() <= 32767.0 {
                proptest::prop_assert!((back - v).abs() <= scale / 2.0 + 1e-9);
            }
            let u = u16_scaled(v.abs(), sf);
            proptest::prop_assert_ne!(u, 0xFFFF);
        }

        #[test]
        fn int32_and_float_encodings_round_trip(v in -2.0e9f64..2.0e9) {
            proptest::prop_assert_eq!(f64::from(i32_from(&i32_scaled(v, 0))), v.round());
            proptest::prop_assert_eq!(f32_from(&f32_words(v)), v as f32);
        }
    }

    #[test]
    fn scale_factor_is_the_smallest_that_fits() {
        assert_eq!(sf_for(135_000.0 * 1.2, 32767.0), 1);
        assert_eq!(sf_for(20_000.0, 32767.0), 0);
        assert_eq!(sf_for(500_000.0, 65534.0), 1);
        assert_eq!(sf_for(f64::NAN, 65534.0), 0);
    }
}
