//! Bookings: cars the operator knows are coming (a workshop appointment, a test-drive car's
//! return, a fleet car's shift end), entered ahead with the time they are due, how long they
//! stay and, when known, the energy they want and the power they draw.
//!
//! The statistics of past sessions ([`super::cars`]) cannot see a car that is not in the
//! station's habits: eight cars booked for one afternoon on a station that sees two a day. A
//! booking puts that car in the forecast, so the plan keeps the battery and the peak ready for
//! it. Bookings are part of the expected arrivals, not on top of them: a booked car counts as
//! one of the cars its hour expects from the statistics.
//!
//! A booking is expected from its time until [`GRACE_MIN`] after it (a car that is late is
//! expected now), on its charger (or another free one when that is still busy); the first car
//! plugged in within [`GRACE_MIN`] of it fulfils it, a car on its charger first, then one
//! for a booking that names no charger, then one whose own charger was busy, and it is no
//! longer expected (that car is planned as plugged in, with its own wish). One that nobody fulfils lapses [`GRACE_MIN`] after its
//! time. Pure: the daemon keeps the book and the backtest fills it from the scenario.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// How long before or after its time a plugged-in car fulfils a booking, and how long a
/// booked car that has not come is still expected, minutes.
pub const GRACE_MIN: i64 = 30;

/// Most bookings a book holds (a station has a few chargers: this is weeks of appointments).
pub const MAX_BOOKINGS: usize = 500;

/// A car the operator expects.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Booking {
    /// Number given by the book (unique in it).
    pub id: u64,
    /// Charger index (0-based); None: whichever is free.
    pub charger: Option<usize>,
    pub arrives: DateTime<Utc>,
    pub departs: DateTime<Utc>,
    /// Energy the car wants, Wh (None: the charger's configured default).
    pub energy_wh: Option<f64>,
    /// Power the car draws, W (None: the charger's configured default).
    pub max_w: Option<f64>,
    /// The charger whose car fulfilled the booking, once one did.
    pub fulfilled_by: Option<usize>,
}

impl Booking {
    /// Still expected at `now`: not fulfilled, not lapsed.
    pub fn expected_at(&self, now: DateTime<Utc>) -> bool {
        self.fulfilled_by.is_none()
            && now < self.arrives + Duration::minutes(GRACE_MIN)
            && now < self.departs
    }
}

/// What is wrong with a booking, naming the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BookingError {
    #[error("departs: must be after arrives")]
    DepartsBeforeArrival,
    #[error("energy_kwh: must be finite and not negative (got {0})")]
    Energy(f64),
    #[error("max_kw: must be finite and above 0 (got {0})")]
    Power(f64),
    #[error("the book is full ({MAX_BOOKINGS} bookings)")]
    Full,
}

/// The bookings a station holds, by arrival.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bookings {
    next_id: u64,
    list: Vec<Booking>,
}

impl Bookings {
    /// Add a booking (its `id` and `fulfilled_by` are set by the book); returns its id.
    pub fn add(&mut self, mut b: Booking) -> Result<u64, BookingError> {
        if b.departs <= b.arrives {
            return Err(BookingError::DepartsBeforeArrival);
        }
        if let Some(e) = b.energy_wh.filter(|e| !e.is_finite() || *e < 0.0) {
            return Err(BookingError::Energy(e / 1000.0));
        }
        if let Some(w) = b.max_w.filter(|w| !w.is_finite() || *w <= 0.0) {
            return Err(BookingError::Power(w / 1000.0));
        }
        if self.list.len() >= MAX_BOOKINGS {
            return Err(BookingError::Full);
        }
        self.next_id += 1;
        b.id = self.next_id;
        b.fulfilled_by = None;
        let at = self.list.partition_point(|o| o.arrives <= b.arrives);
        self.list.insert(at, b);
        Ok(self.next_id)
    }

    /// Remove booking `id`; whether it was there.
    pub fn cancel(&mut self, id: u64) -> bool {
        let before = self.list.len();
        self.list.retain(|b| b.id != id);
        self.list.len() != before
    }

    /// A car plugged in on `charger` at `at`: it fulfils the booking due nearest to `at`
    /// within [`GRACE_MIN`] that names this charger, or else the one nearest that names none,
    /// or else the one nearest that names another charger (whose car went elsewhere: its own
    /// was busy). Returns the booking's id.
    pub fn plugged(&mut self, charger: usize, at: DateTime<Utc>) -> Option<u64> {
        let grace = Duration::minutes(GRACE_MIN);
        let open = |b: &&mut Booking| {
            b.fulfilled_by.is_none() && (b.arrives - at).abs() <= grace && at < b.departs
        };
        let nearest = |fits: &dyn Fn(Option<usize>) -> bool, list: &mut [Booking]| {
            list.iter_mut()
                .filter(open)
                .filter(|b| fits(b.charger))
                .min_by_key(|b| (b.arrives - at).abs())
                .map(|b| {
                    b.fulfilled_by = Some(charger);
                    b.id
                })
        };
        nearest(&|c| c == Some(charger), &mut self.list)
            .or_else(|| nearest(&|c| c.is_none(), &mut self.list))
            .or_else(|| nearest(&|c| c.is_some(), &mut self.list))
    }

    /// Bookings still expected at `now`, by arrival.
    pub fn expected(&self, now: DateTime<Utc>) -> Vec<Booking> {
        self.list
            .iter()
            .filter(|b| b.expected_at(now))
            .cloned()
            .collect()
    }

    /// Drop the bookings whose car has left (or would have): departed before `now`. Returns
    /// how many were dropped.
    pub fn prune(&mut self, now: DateTime<Utc>) -> usize {
        let before = self.list.len();
        self.list.retain(|b| b.departs > now);
        before - self.list.len()
    }

    /// Every booking held, by arrival.
    pub fn all(&self) -> &[Booking] {
        &self.list
    }

    /// Take back bookings saved earlier (with their ids and whether they were fulfilled);
    /// one whose id is held already, or that no car could be (departs before it arrives), is
    /// skipped. New bookings are numbered after every id held.
    pub fn restore(&mut self, saved: Vec<Booking>) {
        for b in saved {
            if b.departs <= b.arrives || self.list.iter().any(|o| o.id == b.id) {
                continue;
            }
            if self.list.len() >= MAX_BOOKINGS {
                break;
            }
            self.next_id = self.next_id.max(b.id);
            let at = self.list.partition_point(|o| o.arrives <= b.arrives);
            self.list.insert(at, b);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 7, 15, h, m, 0).unwrap()
    }

    fn booking(charger: Option<usize>, h: u32, m: u32, stay_h: i64) -> Booking {
        Booking {
            id: 0,
            charger,
            arrives: t(h, m),
            departs: t(h, m) + Duration::hours(stay_h),
            energy_wh: Some(30_000.0),
            max_w: None,
            fulfilled_by: None,
        }
    }

    #[test]
    fn a_booking_is_expected_until_half_an_hour_after_its_time_and_then_lapses() {
        let mut book = Bookings::default();
        book.add(booking(None, 13, 0, 3)).unwrap();
        assert_eq!(book.expected(t(9, 0)).len(), 1);
        assert_eq!(book.expected(t(13, 29)).len(), 1);
        assert!(book.expected(t(13, 30)).is_empty());
        book.prune(t(15, 59));
        assert_eq!(book.all().len(), 1);
        book.prune(t(16, 0));
        assert!(book.all().is_empty());
    }

    #[test]
    fn a_car_plugged_in_near_a_booking_fulfils_the_nearest_on_its_charger_first() {
        let mut book = Bookings::default();
        let anywhere = book.add(booking(None, 13, 0, 3)).unwrap();
        let on_two = book.add(booking(Some(2), 13, 10, 3)).unwrap();
        let later = book.add(booking(None, 14, 0, 3)).unwrap();
        // Charger 2 takes its own booking although the unnamed one is nearer.
        assert_eq!(book.plugged(2, t(13, 2)), Some(on_two));
        // Charger 0 takes the unnamed one due nearest; the 14:00 one is too far.
        assert_eq!(book.plugged(0, t(13, 20)), Some(anywhere));
        assert_eq!(book.plugged(1, t(13, 25)), None);
        assert_eq!(book.plugged(1, t(13, 31)), Some(later));
        assert!(book.expected(t(13, 5)).is_empty());
    }

    #[test]
    fn a_car_on_another_charger_fulfils_a_named_booking_when_nothing_nearer_fits() {
        let mut book = Bookings::default();
        let on_two = book.add(booking(Some(2), 13, 0, 3)).unwrap();
        let anywhere = book.add(booking(None, 13, 20, 3)).unwrap();
        // Charger 5 at 13:05: the unnamed booking comes before a booking named for another.
        assert_eq!(book.plugged(5, t(13, 5)), Some(anywhere));
        assert_eq!(book.plugged(6, t(13, 6)), Some(on_two));
    }

    #[test]
    fn a_booking_that_cannot_be_a_car_is_refused_with_the_field_named() {
        let mut book = Bookings::default();
        let mut b = booking(None, 13, 0, 3);
        b.departs = b.arrives;
        assert_eq!(
            book.add(b.clone()).unwrap_err().to_string(),
            "departs: must be after arrives"
        );
        b.departs = b.arrives + Duration::hours(1);
        b.energy_wh = Some(-1000.0);
        assert!(book
            .add(b.clone())
            .unwrap_err()
            .to_string()
            .starts_with("energy_kwh"));
        b.energy_wh = None;
        b.max_w = Some(0.0);
        assert!(book
            .add(b.clone())
            .unwrap_err()
            .to_string()
            .starts_with("max_kw"));
        assert!(book.all().is_empty());
        b.max_w = Some(22_000.0);
        assert_eq!(book.add(b).unwrap(), 1);
    }

    #[test]
    fn restored_bookings_keep_their_ids_and_new_ones_are_numbered_after_them() {
        let mut saved = Bookings::default();
        saved.add(booking(None, 13, 0, 3)).unwrap();
        saved.add(booking(Some(1), 14, 0, 3)).unwrap();
        saved.plugged(1, t(14, 5));
        let mut book = Bookings::default();
        book.restore(saved.all().to_vec());
        assert_eq!(book, saved);
        assert_eq!(book.add(booking(None, 9, 0, 1)).unwrap(), 3);
        book.restore(saved.all().to_vec());
        assert_eq!(book.all().len(), 3, "ids held are not taken twice");
    }

    #[test]
    fn cancelling_removes_only_that_booking() {
        let mut book = Bookings::default();
        let a = book.add(booking(None, 13, 0, 3)).unwrap();
        let b = book.add(booking(None, 12, 0, 3)).unwrap();
        assert_eq!(book.all()[0].id, b, "kept by arrival");
        assert!(book.cancel(a));
        assert!(!book.cancel(a));
        assert_eq!(book.all().len(), 1);
    }
}
