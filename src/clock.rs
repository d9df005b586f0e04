//! Time is an input: this is the only module of the controller that reads a clock, the wall
//! clock (through [`SystemClock`]) or the monotonic one ([`monotonic`]). Everything else is
//! handed `now`. `clippy.toml` refuses `Utc::now`, `SystemTime::now` and `Instant::now`
//! elsewhere.
//!
//! The daemon asks a [`Clock`] for `now` and for how fast time runs. In production that is the
//! system clock; in the demo and the end-to-end tests it follows the simulator's clock, so tariff
//! periods, reserve windows and timeouts line up with simulated time at N x real time.

use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Instant;

/// The monotonic clock, for latencies, ages and deadlines that must not jump with the wall
/// clock.
#[allow(clippy::disallowed_methods)] // the one monotonic clock read of the controller
pub fn monotonic() -> Instant {
    Instant::now()
}

/// A source of `now`.
pub trait Clock: Send + Sync + 'static {
    /// The current instant in the station's time line.
    fn now(&self) -> DateTime<Utc>;
    /// Station seconds per real second (1 for the system clock).
    fn speed(&self) -> f64 {
        1.0
    }
}

/// Station-monotonic time: monotonic seconds since the daemon started, scaled by the clock's
/// speed (1 on the system clock, N in a demo at N x real time). Poll schedules, reading ages
/// and the ledger's cycle lengths use it, so a step of the wall clock (NTP, a bad RTC) moves
/// none of them; the wall clock only stamps data.
#[derive(Debug, Clone, Copy)]
pub struct Ticks {
    start: Instant,
    speed: f64,
}

impl Ticks {
    pub fn new(speed: f64) -> Ticks {
        Ticks {
            start: monotonic(),
            speed: if speed.is_finite() && speed > 0.0 {
                speed
            } else {
                1.0
            },
        }
    }

    /// Station seconds since start.
    pub fn now(&self) -> std::time::Duration {
        self.start.elapsed().mul_f64(self.speed)
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one wall clock read of the controller
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that follows another time line (the simulator's), read through a closure.
#[derive(Clone)]
pub struct FollowClock {
    now: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
    speed: f64,
}

impl FollowClock {
    /// `now` reads the followed time line; `speed` is its rate in seconds per real second.
    pub fn new(now: impl Fn() -> DateTime<Utc> + Send + Sync + 'static, speed: f64) -> Self {
        FollowClock {
            now: Arc::new(now),
            speed: if speed.is_finite() && speed > 0.0 {
                speed
            } else {
                1.0
            },
        }
    }
}

impl Clock for FollowClock {
    fn now(&self) -> DateTime<Utc> {
        (self.now)()
    }

    fn speed(&self) -> f64 {
        self.speed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_follow_clock_reports_the_followed_time_and_a_sane_speed() {
        let t = Utc.with_ymd_and_hms(2026, 6, 17, 4, 0, 0).single().unwrap();
        let c = FollowClock::new(move || t, 60.0);
        assert_eq!(c.now(), t);
        assert_eq!(c.speed(), 60.0);
        assert_eq!(FollowClock::new(move || t, 0.0).speed(), 1.0);
        assert_eq!(FollowClock::new(move || t, f64::NAN).speed(), 1.0);
    }
}
