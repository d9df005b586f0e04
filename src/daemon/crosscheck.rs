//! The meters checked against each other every cycle: the grid meter must read what the
//! building meter, the chargers, the PV and the battery add up to,
//! `grid = building + chargers - pv - battery`. The grid meter governs the import limit (see
//! `dispatch`); the others are for attribution and feed-forward, so a persistent disagreement
//! marks the building meter `degraded` with the residual in the reason.
//!
//! Pure: fed the residual of each cycle and its station-monotonic time (a wall-clock step
//! neither ends nor lengthens a streak).

use std::time::Duration;

/// How long the meters must disagree, without a break, before the building meter is degraded.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Residual always tolerated, W (meter classes, readings a few hundred ms apart).
const TOLERANCE_BASE_W: f64 = 2_000.0;
/// Residual tolerated per W of grid power (2 %).
const TOLERANCE_SHARE: f64 = 0.02;

/// A persistent disagreement between the meters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Disagreement {
    /// Mean residual over the disagreement, W: grid - (building + chargers - pv - battery).
    pub residual_w: f64,
    /// How long it has lasted.
    pub for_s: f64,
}

impl Disagreement {
    /// The reason shown on the building meter and in the status.
    pub fn reason(&self) -> String {
        format!(
            "meters disagree: the grid meter reads {:+.1} kW against building + chargers - pv - battery, for {:.0} s",
            self.residual_w / 1000.0,
            self.for_s
        )
    }
}

/// The running check.
#[derive(Debug, Clone, Default)]
pub struct MeterCrossCheck {
    /// Since when every residual was beyond the tolerance, and their sum and count.
    since: Option<(Duration, f64, u32)>,
}

impl MeterCrossCheck {
    /// Feed one cycle: `residual_w` and the grid power it came from, `None` when any meter was
    /// not read this cycle (that breaks the streak: only measured disagreement counts).
    pub fn update(&mut self, now: Duration, reading: Option<(f64, f64)>) -> Option<Disagreement> {
        let Some((residual_w, grid_w)) = reading.filter(|(r, g)| r.is_finite() && g.is_finite())
        else {
            self.since = None;
            return None;
        };
        let tolerance = TOLERANCE_BASE_W + TOLERANCE_SHARE * grid_w.abs();
        if residual_w.abs() <= tolerance {
            self.since = None;
            return None;
        }
        let (start, sum, n) = self.since.get_or_insert((now, 0.0, 0));
        *sum += residual_w;
        *n += 1;
        let for_s = now.saturating_sub(*start).as_secs_f64();
        (for_s >= WINDOW.as_secs_f64()).then(|| Disagreement {
            residual_w: *sum / f64::from(*n),
            for_s,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Duration {
        Duration::from_secs(4 * 3600 + s)
    }

    #[test]
    fn a_residual_that_lasts_the_window_is_reported_with_its_mean() {
        let mut c = MeterCrossCheck::default();
        for s in 0..60 {
            assert_eq!(
                c.update(at(s), Some((14_000.0, 55_000.0))),
                None,
                "at {s} s"
            );
        }
        let d = c.update(at(60), Some((16_000.0, 55_000.0))).unwrap();
        assert!((d.residual_w - (14_000.0 * 60.0 + 16_000.0) / 61.0).abs() < 1e-6);
        assert!(d.reason().contains("+14.0 kW"), "{}", d.reason());
    }

    #[test]
    fn a_residual_within_the_tolerance_or_a_break_resets_the_streak() {
        let mut c = MeterCrossCheck::default();
        for s in 0..59 {
            c.update(at(s), Some((14_000.0, 55_000.0)));
        }
        // 3 kW on 55 kW is within 2 kW + 2 %.
        assert_eq!(c.update(at(59), Some((3_000.0, 55_000.0))), None);
        assert_eq!(c.update(at(70), Some((14_000.0, 55_000.0))), None);
        c.update(at(100), None);
        assert_eq!(c.update(at(140), Some((-14_000.0, 55_000.0))), None);
        assert!(c.update(at(200), Some((-14_000.0, 55_000.0))).is_some());
    }
}
