//! Exogenous processes: weather (PV available), building load and vehicle arrivals.
//!
//! Each local day gets its own RNG streams derived from `(seed, stream, local date)`, so the
//! processes never depend on control actions nor on when the simulation started: the same
//! seed gives the same weather, loads and arrivals under any controller. Values are
//! piecewise constant per minute (tables computed once per local day); arrivals are exact
//! instants. Charger assignment is exogenous too because departures are fixed at arrival:
//! a car takes the lowest-numbered free charger (scripted cars take theirs) and is turned away
//! (counted, not queued) when none is free. Cars that would have arrived before the epoch are
//! not there (a run starting at 00:00 has no demo car from the evening before).
//!
//! Per-day tables and the arrival list live in buffers allocated once, so stepping across
//! days does not allocate.

use super::solar;
use super::vehicles::VehicleKind;
use crate::scenario::{parse_time, Scenario};
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Poisson, Weibull};

/// Longest local day (DST) in minutes, for preallocated tables.
const MAX_DAY_MIN: usize = 1500;
/// Nominal phase-to-neutral voltage, V.
pub const NOMINAL_V: f64 = 230.0;

const STREAM_WEATHER: u64 = 1;
const STREAM_BUILDING: u64 = 2;
const STREAM_ARRIVALS: u64 = 3;

/// A car that will arrive (time in seconds since the model's epoch).
#[derive(Clone, Debug, PartialEq)]
pub struct Arrival {
    pub t_s: f64,
    pub depart_s: f64,
    pub kind: VehicleKind,
    pub battery_wh: f64,
    pub soc_pct: f64,
    pub target_soc_pct: f64,
    pub onboard_a: f64,
    pub phases: u8,
    /// Scripted arrivals name their charger; random ones take the lowest free one.
    pub charger: Option<usize>,
}

#[derive(Clone, Debug)]
struct TouPeriod {
    from_min: u32,
    to_min: u32,
    price: f64,
}

/// The exogenous world, stepped minute by minute.
#[derive(Clone, Debug)]
pub struct ExoModel {
    sc: Scenario,
    seed: u64,
    epoch: DateTime<Utc>,
    tz: Tz,
    tou: Vec<TouPeriod>,
    /// Current local date and its span in seconds since epoch.
    date: NaiveDate,
    month_key: u32,
    day_start_s: f64,
    day_end_s: f64,
    day_minutes: usize,
    minute: usize,
    pv_avail_w: Vec<f64>,
    building_w: Vec<f64>,
    price: Vec<f64>,
    /// Pending arrivals sorted by time, latest first (pop gives the next).
    arrivals: Vec<Arrival>,
    occupied_until_s: Vec<f64>,
    turned_away: u64,
}

fn stream_rng(seed: u64, stream: u64, day: i32) -> ChaCha8Rng {
    // splitmix64 over the three inputs
    let mut z = seed
        ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (day as i64 as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ChaCha8Rng::seed_from_u64(z)
}

fn secs_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_milliseconds() as f64 / 1000.0
}

fn is_weekend(d: NaiveDate) -> bool {
    matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

/// Relative arrival weight of staff cars at local hour `h`: a bell around 08:45 between
/// 07:30 and 09:30.
fn staff_weight(h: f64) -> f64 {
    if (7.5..9.5).contains(&h) {
        let z = (h - 8.75) / 0.5;
        (-0.5 * z * z).exp()
    } else {
        0.0
    }
}

/// Relative arrival weight of customers: flat from opening until an hour before closing.
fn customer_weight(h: f64, open_hour: f64, close_hour: f64) -> f64 {
    if h >= open_hour && h < (close_hour - 1.0).max(open_hour + 0.25) {
        1.0
    } else {
        0.0
    }
}

/// Relative arrival weight of the demo fleet: flat from 18:00 to 20:00.
fn demo_weight(h: f64) -> f64 {
    if (18.0..20.0).contains(&h) {
        1.0
    } else {
        0.0
    }
}

/// Middle of 15-minute slot `s`, local hours.
fn slot_mid_h(s: usize) -> f64 {
    (s as f64 * 15.0 + 7.5) / 60.0
}

/// Expected arrivals of each class in one slot.
struct SlotRates {
    staff: f64,
    customer: f64,
    demo: f64,
}

impl SlotRates {
    fn total(&self) -> f64 {
        self.staff + self.customer + self.demo
    }
}

/// One day's arrival profile: each class's daily count spread over the slots by its weight
/// (each class's weights normalised to 1 over the day).
struct ArrivalProfile {
    open_hour: f64,
    close_hour: f64,
    staff_per_day: f64,
    customers_per_day: f64,
    demo_per_day: f64,
    staff_sum: f64,
    customer_sum: f64,
    demo_sum: f64,
}

impl ArrivalProfile {
    fn new(sc: &Scenario, weekend: bool, slots: usize) -> Self {
        let v = &sc.vehicles;
        let (open_hour, close_hour) = (sc.building.open_hour, sc.building.close_hour);
        let (n_staff, n_cust) = if weekend {
            (v.staff_per_weekend_day, v.customers_per_weekend_day)
        } else {
            (v.staff_per_weekday, v.customers_per_weekday)
        };
        let (mut staff_sum, mut customer_sum, mut demo_sum) = (0.0, 0.0, 0.0);
        for s in 0..slots {
            let h = slot_mid_h(s);
            staff_sum += staff_weight(h);
            customer_sum += customer_weight(h, open_hour, close_hour);
            demo_sum += demo_weight(h);
        }
        ArrivalProfile {
            open_hour,
            close_hour,
            staff_per_day: v.arrival_scale * n_staff,
            customers_per_day: v.arrival_scale * n_cust,
            demo_per_day: v.arrival_scale * v.demo_per_evening,
            staff_sum,
            customer_sum,
            demo_sum,
        }
    }

    fn rates(&self, s: usize) -> SlotRates {
        let norm = |x: f64, sum: f64| if sum > 0.0 { x / sum } else { 0.0 };
        let h = slot_mid_h(s);
        let customer = customer_weight(h, self.open_hour, self.close_hour);
        SlotRates {
            staff: self.staff_per_day * norm(staff_weight(h), self.staff_sum),
            customer: self.customers_per_day * norm(customer, self.customer_sum),
            demo: self.demo_per_day * norm(demo_weight(h), self.demo_sum),
        }
    }
}

/// How one random car is drawn: its class, times, battery, on-board charger and energy wanted.
struct CarDraw {
    share_32a_3ph: f64,
    share_16a_3ph: f64,
    energy_mean_kwh: f64,
    /// Weibull (shape 0.6) of the energy wanted before the caps.
    weibull: Option<Weibull<f64>>,
    charger_rating_a: f64,
    charger_phases: u8,
    /// When the demo fleet starts to leave, s since the epoch.
    next_morning_s: f64,
}

impl CarDraw {
    fn new(sc: &Scenario, next_morning_s: f64) -> Self {
        let v = &sc.vehicles;
        // Weibull shape 0.6: mean = scale x Gamma(1 + 1/0.6) = scale x 1.5046.
        let weib_scale = v.energy_mean_kwh / 1.5046;
        CarDraw {
            share_32a_3ph: v.share_32a_3ph,
            share_16a_3ph: v.share_16a_3ph,
            energy_mean_kwh: v.energy_mean_kwh,
            weibull: Weibull::new(weib_scale, 0.6).ok(),
            charger_rating_a: sc.chargers.rating_a,
            charger_phases: sc.chargers.phases,
            next_morning_s,
        }
    }

    /// One car arriving in the slot starting at `slot_start_s`; its class is drawn in
    /// proportion to `rates`.
    fn draw(&self, rng: &mut ChaCha8Rng, rates: &SlotRates, slot_start_s: f64) -> Arrival {
        let u: f64 = rng.random::<f64>() * rates.total();
        let kind = if u < rates.staff {
            VehicleKind::Staff
        } else if u < rates.staff + rates.customer {
            VehicleKind::Customer
        } else {
            VehicleKind::Demo
        };
        let t_s = (slot_start_s + rng.random_range(0.0..900.0)).round();
        let depart_s = match kind {
            VehicleKind::Staff => t_s + 3600.0 * (8.0 + 0.75 * rng.random_range(-1.0..1.0)),
            VehicleKind::Customer => t_s + 3600.0 * rng.random_range(1.0..4.0),
            _ => self.next_morning_s + rng.random_range(0.0..3600.0),
        }
        .round();
        let battery_wh = rng.random_range(40.0..100.0) * 1000.0;
        let soc_pct = rng.random_range(10.0..60.0);
        let r: f64 = rng.random();
        let (onboard_a, phases) = if r < self.share_32a_3ph {
            (32.0, 3)
        } else if r < self.share_32a_3ph + self.share_16a_3ph {
            (16.0, 3)
        } else {
            (32.0, 1)
        };
        let draw_kwh = self
            .weibull
            .map(|w| w.sample(rng))
            .unwrap_or(self.energy_mean_kwh);
        let max_w = f64::min(onboard_a, self.charger_rating_a)
            * f64::from(phases.min(self.charger_phases))
            * NOMINAL_V;
        let dwell_cap_wh = max_w * (depart_s - t_s) / 3600.0;
        let room_wh = (100.0 - soc_pct) / 100.0 * battery_wh;
        let wanted_wh = (draw_kwh * 1000.0).min(dwell_cap_wh).min(room_wh).max(0.0);
        Arrival {
            t_s,
            depart_s,
            kind,
            battery_wh,
            soc_pct,
            target_soc_pct: (soc_pct + wanted_wh / battery_wh * 100.0).min(100.0),
            onboard_a,
            phases,
            charger: None,
        }
    }
}

impl ExoModel {
    pub fn new(sc: &Scenario, seed: u64, epoch: DateTime<Utc>) -> ExoModel {
        let tz = sc.tz();
        let tou = sc
            .tariff
            .periods
            .iter()
            .filter_map(|p| {
                let f = parse_time(&p.from)?;
                let t = parse_time(&p.to)?;
                Some(TouPeriod {
                    from_min: f.hour() * 60 + f.minute(),
                    to_min: t.hour() * 60 + t.minute(),
                    price: p.cny_per_kwh,
                })
            })
            .collect();
        let date = epoch.with_timezone(&tz).date_naive();
        let mut m = ExoModel {
            sc: sc.clone(),
            seed,
            epoch,
            tz,
            tou,
            date,
            month_key: 0,
            day_start_s: 0.0,
            day_end_s: 0.0,
            day_minutes: 0,
            minute: 0,
            pv_avail_w: Vec::with_capacity(MAX_DAY_MIN),
            building_w: Vec::with_capacity(MAX_DAY_MIN),
            price: Vec::with_capacity(MAX_DAY_MIN),
            arrivals: Vec::with_capacity(512),
            occupied_until_s: vec![f64::NEG_INFINITY; sc.chargers.count],
            turned_away: 0,
        };
        for s in &sc.vehicles.scripted {
            if let Some(at) = sc.resolve_local(&s.at) {
                let t_s = secs_between(epoch, at);
                if t_s >= 0.0 {
                    m.arrivals.push(Arrival {
                        t_s,
                        depart_s: t_s + s.stay_h * 3600.0,
                        kind: VehicleKind::Scripted,
                        battery_wh: s.battery_kwh * 1000.0,
                        soc_pct: s.soc_pct,
                        target_soc_pct: s.target_pct.max(s.soc_pct),
                        onboard_a: s.onboard_a,
                        phases: s.phases,
                        charger: Some(s.charger - 1),
                    });
                }
            }
        }
        m.load_day(date);
        m.set_minute(0.0);
        m
    }

    fn local_midnight(&self, d: NaiveDate) -> DateTime<Utc> {
        let naive = d.and_hms_opt(0, 0, 0).unwrap_or_default();
        match self.tz.from_local_datetime(&naive).earliest() {
            Some(t) => t.with_timezone(&Utc),
            // A zone whose midnight does not exist: take 01:00.
            None => self
                .tz
                .from_local_datetime(&(naive + Duration::hours(1)))
                .earliest()
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or(self.epoch),
        }
    }

    fn load_day(&mut self, d: NaiveDate) {
        let start = self.local_midnight(d);
        let next = self.local_midnight(d.succ_opt().unwrap_or(d));
        self.date = d;
        self.month_key = d.year() as u32 * 12 + d.month();
        self.day_start_s = secs_between(self.epoch, start);
        self.day_end_s = secs_between(self.epoch, next).max(self.day_start_s + 60.0);
        self.day_minutes =
            (((self.day_end_s - self.day_start_s) / 60.0).round() as usize).clamp(1, MAX_DAY_MIN);
        let day_num = d.num_days_from_ce();
        self.fill_pv(d, start, day_num);
        self.fill_building(d, day_num);
        self.fill_prices(start);
        self.gen_arrivals(d, day_num);
    }

    fn fill_pv(&mut self, d: NaiveDate, start: DateTime<Utc>, day_num: i32) {
        let w = &self.sc.weather;
        let pv = &self.sc.pv;
        let mut rng = stream_rng(self.seed, STREAM_WEATHER, day_num);
        let daily = match w.fixed_clearness {
            Some(k) => k,
            None => {
                let z: f64 = Normal::new(0.0, 1.0)
                    .map(|n| n.sample(&mut rng))
                    .unwrap_or(0.0);
                (w.clearness_mean + w.clearness_spread * z).clamp(0.05, 1.0)
            }
        };
        let stationary = w.cloud_sigma / (1.0 - w.cloud_phi * w.cloud_phi).sqrt();
        let normal = Normal::new(0.0, 1.0).ok();
        let draw = |rng: &mut ChaCha8Rng| normal.map(|n| n.sample(rng)).unwrap_or(0.0);
        let mut x = stationary * draw(&mut rng);
        let doy = d.ordinal();
        let rating = pv.inverter_ac_kw * 1000.0;
        self.pv_avail_w.clear();
        for m in 0..self.day_minutes {
            x = w.cloud_phi * x + w.cloud_sigma * draw(&mut rng);
            let factor = (daily + x).clamp(0.0, 1.1);
            let t = start + Duration::seconds(m as i64 * 60 + 30);
            let utc_h =
                f64::from(t.hour()) + f64::from(t.minute()) / 60.0 + f64::from(t.second()) / 3600.0;
            let sin_el =
                solar::sin_elevation(self.sc.site.lat_deg, self.sc.site.lon_deg, doy, utc_h);
            let ghi = solar::clear_sky_ghi_w_m2(sin_el);
            let dc_w = pv.kwp * ghi * pv.performance_ratio * factor;
            self.pv_avail_w
                .push((dc_w * pv.inverter_efficiency).min(rating));
        }
    }

    fn fill_building(&mut self, d: NaiveDate, day_num: i32) {
        let b = &self.sc.building;
        let mut rng = stream_rng(self.seed, STREAM_BUILDING, day_num);
        let weekend = is_weekend(d);
        let normal = Normal::new(0.0, 1.0).ok();
        let draw = |rng: &mut ChaCha8Rng| normal.map(|n| n.sample(rng)).unwrap_or(0.0);
        let phi: f64 = 0.95;
        let innov = b.noise_kw * (1.0 - phi * phi).sqrt();
        let mut noise = b.noise_kw * draw(&mut rng);
        let open_len_min = ((b.close_hour - b.open_hour) * 60.0).max(1.0);
        let steps = if weekend { 0.5 } else { 1.0 } * b.workshop_steps_per_day;
        let p_start = steps / open_len_min;
        let mut step_kw = 0.0;
        let mut step_left_min = 0.0;
        self.building_w.clear();
        for m in 0..self.day_minutes {
            let h = (m as f64 + 0.5) / 60.0;
            let weekday_level = if h >= b.open_hour && h < b.close_hour {
                let phase = (h - b.open_hour) / (b.close_hour - b.open_hour);
                b.business_kw + b.business_peak_extra_kw * (std::f64::consts::PI * phase).sin()
            } else if h >= b.open_hour - 1.0 && h < b.open_hour {
                b.night_kw + (b.business_kw - b.night_kw) * (h - (b.open_hour - 1.0))
            } else {
                b.night_kw
            };
            let level = if weekend {
                b.night_kw + (weekday_level - b.night_kw) * b.weekend_factor
            } else {
                weekday_level
            };
            noise = phi * noise + innov * draw(&mut rng);
            let open = h >= b.open_hour && h < b.close_hour;
            let u: f64 = rng.random();
            if step_left_min <= 0.0 {
                step_kw = 0.0;
                if open && u < p_start {
                    step_kw = rng.random_range(b.workshop_min_kw..=b.workshop_max_kw);
                    let e: f64 = rng.random::<f64>().max(1e-9);
                    step_left_min = (-e.ln() * b.workshop_mean_min).max(5.0);
                }
            }
            step_left_min -= 1.0;
            self.building_w
                .push(((level + noise + step_kw) * 1000.0).max(0.0));
        }
    }

    fn fill_prices(&mut self, start: DateTime<Utc>) {
        self.price.clear();
        for m in 0..self.day_minutes {
            let local = (start + Duration::seconds(m as i64 * 60)).with_timezone(&self.tz);
            let mm = local.hour() * 60 + local.minute();
            let p = self
                .tou
                .iter()
                .find(|p| {
                    if p.from_min <= p.to_min {
                        mm >= p.from_min && mm < p.to_min
                    } else {
                        mm >= p.from_min || mm < p.to_min
                    }
                })
                .map_or(self.sc.tariff.flat_cny_per_kwh, |p| p.price);
            self.price.push(p);
        }
    }

    /// Draw the day's random arrivals: per 15-minute slot a Poisson count from the three
    /// classes' rates, then each car in turn (the draw order is part of the seeded contract).
    fn gen_arrivals(&mut self, d: NaiveDate, day_num: i32) {
        let mut rng = stream_rng(self.seed, STREAM_ARRIVALS, day_num);
        let slots = self.day_minutes / 15;
        let profile = ArrivalProfile::new(&self.sc, is_weekend(d), slots);
        let cars = CarDraw::new(&self.sc, self.day_end_s + 7.5 * 3600.0);
        for s in 0..slots {
            let rates = profile.rates(s);
            let lambda = rates.total();
            if lambda <= 0.0 {
                continue;
            }
            let count = Poisson::new(lambda)
                .map(|p| p.sample(&mut rng))
                .unwrap_or(0.0) as u32;
            let slot_start_s = self.day_start_s + s as f64 * 900.0;
            for _ in 0..count {
                let arrival = cars.draw(&mut rng, &rates, slot_start_s);
                // Drawn in full first so that a car before the epoch uses the same numbers.
                if arrival.t_s >= 0.0 {
                    self.arrivals.push(arrival);
                }
            }
        }
        // latest first so that pop() yields the next arrival
        self.arrivals
            .sort_unstable_by(|a, b| b.t_s.total_cmp(&a.t_s));
    }

    fn set_minute(&mut self, t_s: f64) {
        let m = ((t_s - self.day_start_s) / 60.0).floor();
        self.minute = (m.max(0.0) as usize).min(self.day_minutes - 1);
    }

    /// Move to the minute containing `t_s` (seconds since epoch), loading new days as needed.
    pub fn advance_to(&mut self, t_s: f64) {
        let minute_start = self.day_start_s + self.minute as f64 * 60.0;
        if t_s >= minute_start && t_s < self.minute_end_s() {
            return;
        }
        while t_s >= self.day_end_s {
            let next = self.date.succ_opt().unwrap_or(self.date);
            if next == self.date {
                break;
            }
            self.load_day(next);
        }
        self.set_minute(t_s);
    }

    /// End of the current minute, seconds since epoch.
    pub fn minute_end_s(&self) -> f64 {
        (self.day_start_s + (self.minute as f64 + 1.0) * 60.0).min(self.day_end_s)
    }

    /// What the PV array and inverter could deliver this minute, W AC (before any limit).
    pub fn pv_available_w(&self) -> f64 {
        self.pv_avail_w[self.minute]
    }

    /// Building load this minute, W.
    pub fn building_w(&self) -> f64 {
        self.building_w[self.minute]
    }

    /// Import price this minute, CNY/kWh.
    pub fn import_price(&self) -> f64 {
        self.price[self.minute]
    }

    /// Local date now.
    pub fn date(&self) -> NaiveDate {
        self.date
    }

    /// A key that changes with the local calendar month (for monthly demand charges).
    pub fn month_key(&self) -> u32 {
        self.month_key
    }

    pub fn epoch(&self) -> DateTime<Utc> {
        self.epoch
    }

    /// The next arrival at or before `t_s` that gets a charger, with that charger index.
    /// Arrivals finding no free charger are turned away (counted, not queued).
    pub fn pop_arrival(&mut self, t_s: f64) -> Option<(usize, Arrival)> {
        while self.arrivals.last().is_some_and(|a| a.t_s <= t_s) {
            let a = self.arrivals.pop()?;
            let slot = match a.charger {
                Some(c) => (c < self.occupied_until_s.len() && self.occupied_until_s[c] <= a.t_s)
                    .then_some(c),
                None => self.occupied_until_s.iter().position(|&u| u <= a.t_s),
            };
            match slot {
                Some(c) => {
                    self.occupied_until_s[c] = a.depart_s;
                    return Some((c, a));
                }
                None => self.turned_away += 1,
            }
        }
        None
    }

    /// Mark a charger occupied by a car plugged by hand.
    pub fn mark_occupied(&mut self, charger: usize, until_s: f64) {
        if let Some(u) = self.occupied_until_s.get_mut(charger) {
            *u = until_s;
        }
    }

    /// Cars that found every charger busy so far.
    pub fn turned_away(&self) -> u64 {
        self.turned_away
    }
}
