//! The last 24 h of station powers at one point per minute of station time, for the dashboard's
//! charts (`GET /api/history`). Each point is the mean of the cycles in its minute.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::Serialize;
use std::collections::VecDeque;

/// One minute of averaged powers, W; `None` when no cycle of that minute had the reading.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryPoint {
    pub t: DateTime<Utc>,
    pub grid_w: Option<f64>,
    pub pv_w: Option<f64>,
    pub battery_w: Option<f64>,
    pub vehicles_w: Option<f64>,
    pub building_w: Option<f64>,
}

/// Powers of one cycle, W.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    pub grid_w: Option<f64>,
    pub pv_w: Option<f64>,
    pub battery_w: Option<f64>,
    pub vehicles_w: Option<f64>,
    pub building_w: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Mean {
    sum: f64,
    n: u32,
}

impl Mean {
    fn add(&mut self, v: Option<f64>) {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            self.sum += v;
            self.n += 1;
        }
    }
    fn get(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / f64::from(self.n))
    }
}

/// A ring of minute points.
#[derive(Debug, Clone)]
pub struct History {
    points: VecDeque<HistoryPoint>,
    capacity: usize,
    current: Option<(DateTime<Utc>, [Mean; 5])>,
}

impl Default for History {
    fn default() -> Self {
        Self::new(24 * 60)
    }
}

fn minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::minutes(1)).unwrap_or(t)
}

impl History {
    pub fn new(capacity_minutes: usize) -> Self {
        History {
            points: VecDeque::with_capacity(capacity_minutes.min(24 * 60)),
            capacity: capacity_minutes.max(1),
            current: None,
        }
    }

    /// Add one cycle's sample at station time `at`.
    pub fn record(&mut self, at: DateTime<Utc>, s: Sample) {
        let m = minute(at);
        match &mut self.current {
            Some((start, _)) if *start == m => {}
            Some((start, _)) if *start > m => return, // time went backwards: ignore the sample
            _ => self.close_current(m),
        }
        if let Some((_, means)) = &mut self.current {
            for (mean, v) in
                means
                    .iter_mut()
                    .zip([s.grid_w, s.pv_w, s.battery_w, s.vehicles_w, s.building_w])
            {
                mean.add(v);
            }
        }
    }

    fn close_current(&mut self, next: DateTime<Utc>) {
        if let Some((t, m)) = self.current.take() {
            if self.points.len() == self.capacity {
                self.points.pop_front();
            }
            self.points.push_back(HistoryPoint {
                t,
                grid_w: m[0].get(),
                pv_w: m[1].get(),
                battery_w: m[2].get(),
                vehicles_w: m[3].get(),
                building_w: m[4].get(),
            });
        }
        self.current = Some((next, [Mean::default(); 5]));
    }

    /// Closed points from the last `hours` before `now`, oldest first.
    pub fn since(&self, now: DateTime<Utc>, hours: f64) -> Vec<HistoryPoint> {
        // Saturating: `now` may be the earliest time chrono has (nothing recorded yet).
        let from = now
            .checked_sub_signed(TimeDelta::milliseconds((hours * 3_600_000.0) as i64))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        self.points
            .iter()
            .filter(|p| p.t >= from)
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 17, h, m, s).single().unwrap()
    }

    fn grid(w: f64) -> Sample {
        Sample {
            grid_w: Some(w),
            ..Sample::default()
        }
    }

    #[test]
    fn a_minute_point_is_the_mean_of_its_cycles_and_closes_when_the_next_minute_starts() {
        let mut h = History::new(60);
        h.record(t(1, 0, 0), grid(100.0));
        h.record(t(1, 0, 30), grid(300.0));
        assert!(h.is_empty());
        h.record(t(1, 1, 0), grid(0.0));
        let pts = h.since(t(1, 2, 0), 1.0);
        assert_eq!(pts.len(), 1);
        assert_eq!(pts[0].t, t(1, 0, 0));
        assert_eq!(pts[0].grid_w, Some(200.0));
        assert_eq!(pts[0].pv_w, None);
    }

    #[test]
    fn asking_for_hours_before_the_earliest_time_returns_points_instead_of_panicking() {
        let mut h = History::new(60);
        assert!(h.since(DateTime::<Utc>::MIN_UTC, 24.0).is_empty());
        h.record(t(1, 0, 0), grid(100.0));
        h.record(t(1, 1, 0), grid(100.0));
        assert_eq!(h.since(DateTime::<Utc>::MIN_UTC, 24.0).len(), 1);
        assert_eq!(h.since(t(1, 2, 0), 24.0).len(), 1);
    }

    #[test]
    fn the_ring_keeps_only_its_capacity_and_filters_by_hours() {
        let mut h = History::new(3);
        for m in 0..6 {
            h.record(t(2, m, 0), grid(f64::from(m)));
        }
        assert_eq!(h.len(), 3);
        let pts = h.since(t(2, 6, 0), 24.0);
        assert_eq!(
            pts.iter().map(|p| p.grid_w.unwrap()).collect::<Vec<_>>(),
            vec![2.0, 3.0, 4.0]
        );
        assert_eq!(h.since(t(2, 6, 0), 2.5 / 60.0).len(), 1);
    }

    #[test]
    fn samples_from_the_past_are_ignored() {
        let mut h = History::new(10);
        h.record(t(3, 5, 0), grid(1.0));
        h.record(t(3, 4, 0), grid(1000.0));
        h.record(t(3, 6, 0), grid(1.0));
        assert_eq!(h.since(t(3, 7, 0), 1.0)[0].grid_w, Some(1.0));
    }
}
