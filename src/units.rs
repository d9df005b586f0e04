//! Small `Copy` newtypes for the physical quantities the controller reasons about.
//!
//! Sign convention (the project's one convention): grid power > 0 is import, battery power > 0
//! is discharge, PV power > 0 is generation, loads > 0 consume. The types do not enforce a sign;
//! the field that holds a value says which convention applies.
//!
//! All types serialize as a bare number (`#[serde(transparent)]`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub, SubAssign};

/// Nominal phase-to-neutral voltage of the Chinese low-voltage grid.
pub const NOMINAL_VOLTAGE: Volts = Volts(230.0);

macro_rules! unit {
    ($(#[$doc:meta])* $name:ident, $symbol:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub f64);

        impl $name {
            pub const ZERO: $name = $name(0.0);

            /// The bare number.
            #[inline]
            pub const fn value(self) -> f64 {
                self.0
            }

            #[inline]
            pub fn min(self, other: $name) -> $name {
                $name(self.0.min(other.0))
            }

            #[inline]
            pub fn max(self, other: $name) -> $name {
                $name(self.0.max(other.0))
            }

            /// Clamp into `[lo, hi]`; if `lo > hi` the result is `lo` (never panics).
            #[inline]
            pub fn clamp(self, lo: $name, hi: $name) -> $name {
                $name(self.0.min(hi.0).max(lo.0))
            }

            #[inline]
            pub fn abs(self) -> $name {
                $name(self.0.abs())
            }

            #[inline]
            pub fn is_finite(self) -> bool {
                self.0.is_finite()
            }
        }

        impl Add for $name {
            type Output = $name;
            #[inline]
            fn add(self, rhs: $name) -> $name {
                $name(self.0 + rhs.0)
            }
        }

        impl Sub for $name {
            type Output = $name;
            #[inline]
            fn sub(self, rhs: $name) -> $name {
                $name(self.0 - rhs.0)
            }
        }

        impl AddAssign for $name {
            #[inline]
            fn add_assign(&mut self, rhs: $name) {
                self.0 += rhs.0;
            }
        }

        impl SubAssign for $name {
            #[inline]
            fn sub_assign(&mut self, rhs: $name) {
                self.0 -= rhs.0;
            }
        }

        impl Neg for $name {
            type Output = $name;
            #[inline]
            fn neg(self) -> $name {
                $name(-self.0)
            }
        }

        impl Mul<f64> for $name {
            type Output = $name;
            #[inline]
            fn mul(self, rhs: f64) -> $name {
                $name(self.0 * rhs)
            }
        }

        impl Div<f64> for $name {
            type Output = $name;
            #[inline]
            fn div(self, rhs: f64) -> $name {
                $name(self.0 / rhs)
            }
        }

        impl std::iter::Sum for $name {
            fn sum<I: Iterator<Item = $name>>(iter: I) -> $name {
                $name(iter.map(|v| v.0).sum())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{} {}", round_for_display(self.0), $symbol)
            }
        }
    };
}

unit!(
    /// Power in watts. Which sign means what depends on the field (see the module doc).
    Watts,
    "W"
);
unit!(
    /// Energy in watt-hours.
    WattHours,
    "Wh"
);
unit!(
    /// Current in amperes (per phase for chargers).
    Amps,
    "A"
);
unit!(
    /// Voltage in volts (phase to neutral unless a field says otherwise).
    Volts,
    "V"
);
unit!(
    /// A percentage, 0..=100 where the field says so (SoC, PV limit).
    Percent,
    "%"
);

fn round_for_display(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

impl Watts {
    /// Build from kilowatts.
    #[inline]
    pub fn from_kw(kw: f64) -> Watts {
        Watts(kw * 1000.0)
    }

    /// The value in kilowatts.
    #[inline]
    pub fn kw(self) -> f64 {
        self.0 / 1000.0
    }

    /// Energy moved at this power during `seconds`.
    #[inline]
    pub fn over_seconds(self, seconds: f64) -> WattHours {
        WattHours(self.0 * seconds / 3600.0)
    }
}

impl WattHours {
    /// Build from kilowatt-hours.
    #[inline]
    pub fn from_kwh(kwh: f64) -> WattHours {
        WattHours(kwh * 1000.0)
    }

    /// The value in kilowatt-hours.
    #[inline]
    pub fn kwh(self) -> f64 {
        self.0 / 1000.0
    }
}

impl Percent {
    /// The value as a fraction (50 % -> 0.5).
    #[inline]
    pub fn fraction(self) -> f64 {
        self.0 / 100.0
    }

    /// Build from a fraction (0.5 -> 50 %).
    #[inline]
    pub fn from_fraction(f: f64) -> Percent {
        Percent(f * 100.0)
    }
}

/// AC power drawn by a charger: P = phases x V x I.
#[inline]
pub fn charger_power(current: Amps, phases: u8, voltage: Volts) -> Watts {
    Watts(f64::from(phases) * voltage.0 * current.0)
}

/// AC power drawn by a charger at the nominal 230 V.
#[inline]
pub fn charger_power_nominal(current: Amps, phases: u8) -> Watts {
    charger_power(current, phases, NOMINAL_VOLTAGE)
}

/// Per-phase current that draws `power` on `phases` phases at `voltage`: I = P / (phases x V).
/// Returns 0 A for 0 phases or a non-positive voltage instead of dividing by zero.
#[inline]
pub fn charger_current(power: Watts, phases: u8, voltage: Volts) -> Amps {
    let denom = f64::from(phases) * voltage.0;
    if denom > 0.0 {
        Amps(power.0 / denom)
    } else {
        Amps::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_three_phase_32_a_charger_draws_about_22_kw() {
        let p = charger_power_nominal(Amps(32.0), 3);
        assert!((p.kw() - 22.08).abs() < 1e-9);
    }

    #[test]
    fn current_from_power_inverts_power_from_current() {
        let p = charger_power(Amps(16.0), 1, Volts(230.0));
        assert!((charger_current(p, 1, Volts(230.0)).0 - 16.0).abs() < 1e-12);
        assert_eq!(charger_current(p, 0, Volts(230.0)), Amps::ZERO);
    }

    #[test]
    fn clamp_with_inverted_bounds_returns_the_lower_bound() {
        assert_eq!(Watts(5.0).clamp(Watts(10.0), Watts(0.0)), Watts(10.0));
        assert_eq!(Watts(5.0).clamp(Watts(0.0), Watts(3.0)), Watts(3.0));
    }

    #[test]
    fn units_serialize_as_bare_numbers() {
        assert_eq!(serde_json::to_string(&Watts(1500.0)).unwrap(), "1500.0");
        let w: Watts = serde_json::from_str("2.5").unwrap();
        assert_eq!(w, Watts(2.5));
    }

    #[test]
    fn watts_display_rounds_to_one_decimal() {
        assert_eq!(Watts(1234.56).to_string(), "1234.6 W");
        assert_eq!((-Watts::from_kw(2.0) + Watts(500.0)).kw(), -1.5);
    }
}
