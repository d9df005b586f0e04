//! The forecasters (src/planner/forecast) on recorded data: three weeks of a shipped scenario's
//! exogenous processes as the simulator's plant sees them (`station_sim::physics::
//! exogenous_forecast`, the same weather, building load and car sessions a closed-loop run
//! meets). Each test feeds the past into a [`History`], forecasts the next day at local
//! midnight, and scores it over the last seven days of the window (each day forecast from the
//! days before it only). The bounds are stated next to each test; a forecaster that says zero
//! (no sun, no load, no cars) scores 100 % and fails every one of them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use chrono::{DateTime, Duration, NaiveTime, Timelike, Utc};
use station_controller::planner::forecast::load;
use station_controller::planner::forecast::solar::clear_sky_quarter_w;
use station_controller::planner::forecast::{
    parse_day_ahead, ChargerDefaults, ForecastConfig, Forecasters, History, LoadProfile,
    PastQuarter, PastSession, Site,
};
use station_controller::planner::ExpectedCar;
use station_sim::physics::{exogenous_forecast, Exogenous};
use station_sim::scenario::Scenario;
use std::path::Path;

const DAY: usize = 96;
/// Days recorded, and the last days scored.
const DAYS: u32 = 21;
const SCORED_DAYS: usize = 7;

fn scenario(name: &str) -> Scenario {
    Scenario::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("simulator/scenarios")
            .join(format!("{name}.toml")),
    )
    .unwrap()
}

fn record(sc: &Scenario) -> Exogenous {
    exogenous_forecast(sc, 1, sc.start_utc(), DAYS)
}

/// The forecasters of the scenario's site: a flat array (the simulator's PV is on the
/// horizontal), the configured defaults a station without history would have.
fn forecasters(sc: &Scenario) -> Forecasters {
    let defaults = ChargerDefaults {
        dwell: Duration::hours(3),
        energy_wh: 15_000.0,
        max_w: 11_000.0,
        arrivals: vec![NaiveTime::from_hms_opt(9, 0, 0).unwrap()],
    };
    Forecasters::new(ForecastConfig {
        site: Site {
            lat_deg: sc.site.lat_deg,
            lon_deg: sc.site.lon_deg,
            tilt_deg: 0.0,
            azimuth_deg: 180.0,
            kwp: sc.pv.kwp,
            ac_kw: sc.pv.inverter_ac_kw,
            performance_ratio: 0.8,
        },
        tz: sc.tz(),
        load_fallback: LoadProfile {
            weekday_w: [30_000.0; 24],
            weekend_w: [20_000.0; 24],
        },
        chargers: vec![defaults; sc.chargers.count],
    })
}

fn step_start(exo: &Exogenous, k: usize) -> DateTime<Utc> {
    exo.start + Duration::seconds(i64::from(exo.step_s) * k as i64)
}

/// Everything recorded before step `upto`; PV above `pv_cap_w` is cut there (flagged or not).
fn history_until(exo: &Exogenous, upto: usize, pv_cap_w: f64, flag_capped: bool) -> History {
    let mut h = History::default();
    for k in 0..upto {
        let pv = exo.pv_available_w[k];
        h.observe_quarter(PastQuarter {
            start: step_start(exo, k),
            pv_w: Some(pv.min(pv_cap_w)),
            building_w: Some(exo.building_w[k]),
            pv_limited: flag_capped && pv > pv_cap_w,
        });
    }
    let now = step_start(exo, upto);
    for s in exo.sessions.iter().filter(|s| s.depart <= now) {
        h.observe_session(PastSession {
            charger: s.charger,
            arrived: s.arrive,
            departed: s.depart,
            energy_wh: s.wanted_wh,
            max_w: s.max_w,
        });
    }
    h
}

/// Normalised mean absolute error, `sum |f - a| / sum a`.
fn nmae(forecast: &[f64], actual: &[f64]) -> f64 {
    let err: f64 = forecast
        .iter()
        .zip(actual)
        .map(|(f, a)| (f - a).abs())
        .sum();
    err / actual.iter().sum::<f64>()
}

/// Mean over the scored days of `score(day's first step, forecasters with the past)`.
fn scored(exo: &Exogenous, mut f: Forecasters, score: impl Fn(usize, &Forecasters) -> f64) -> f64 {
    let last = DAYS as usize;
    let days = last - SCORED_DAYS..last;
    let total: f64 = days
        .map(|d| {
            f.history = history_until(exo, d * DAY, f64::INFINITY, false);
            score(d * DAY, &f)
        })
        .sum();
    total / SCORED_DAYS as f64
}

fn pv_error(exo: &Exogenous, f: &Forecasters, k0: usize) -> f64 {
    let fc = f.pv_w(step_start(exo, k0), DAY);
    nmae(&fc, &exo.pv_available_w[k0..k0 + DAY])
}

/// PV, next day, bound 12 % nMAE on the sunny summer scenario (daily clearness 0.85 +- 0.03;
/// measured 6.5 %) and 75 % on the cloudy winter one (clearness 0.35 +- 0.10 drawn afresh each
/// day, and fast broken clouds with a per-minute spread of about 0.16 around it; measured
/// 66 %). The cloudy bound is loose because the weather is: even the day's own true
/// measured/clear-sky ratio applied to the clear-sky shape scores 45 % there (the intra-day
/// clouds cannot be forecast a day ahead), so the forecaster is held to within 1.6 x of that.
#[test]
fn the_pv_forecast_of_the_next_day_is_within_bounds_and_zeros_are_not() {
    for (name, bound) in [("sunny-weekday", 0.12), ("cloudy-winter-weekday", 0.75)] {
        let sc = scenario(name);
        let exo = record(&sc);
        let err = scored(&exo, forecasters(&sc), |k0, f| pv_error(&exo, f, k0));
        let floor = scored(&exo, forecasters(&sc), |k0, f| {
            oracle_ratio_error(&exo, f, k0)
        });
        eprintln!(
            "pv {name}: next-day nMAE {:.1} % (the day's own ratio: {:.1} %)",
            100.0 * err,
            100.0 * floor
        );
        assert!(err < bound, "{name}: pv nMAE {err}");
        assert!(
            err < 1.6 * floor.max(0.03),
            "{name}: {err} vs the floor {floor}"
        );
        let zeros = nmae(&vec![0.0; DAY], &exo.pv_available_w[..DAY]);
        assert!(zeros >= bound, "zeros pass: {zeros}");
    }
}

/// The error of the clear-sky shape scaled by the day's own true ratio (a forecaster that knew
/// tomorrow's daily clearness, but not its clouds).
fn oracle_ratio_error(exo: &Exogenous, f: &Forecasters, k0: usize) -> f64 {
    let cs: Vec<f64> = (0..DAY)
        .map(|k| clear_sky_quarter_w(&f.cfg.site, step_start(exo, k0 + k)))
        .collect();
    let actual = &exo.pv_available_w[k0..k0 + DAY];
    let ratio = actual.iter().sum::<f64>() / cs.iter().sum::<f64>();
    let fc: Vec<f64> = cs.iter().map(|c| c * ratio).collect();
    nmae(&fc, actual)
}

/// Curtailed quarters flagged as such are left out of the ratio: the forecast of an array held
/// at 40 % of its rating around noon stays within the sunny bound; the same data unflagged
/// would teach it a dull sky.
#[test]
fn flagged_curtailment_does_not_teach_the_pv_forecaster_a_dull_sky() {
    let sc = scenario("sunny-weekday");
    let exo = record(&sc);
    let cap = 0.4 * sc.pv.inverter_ac_kw * 1000.0;
    let k0 = 14 * DAY;
    let mut f = forecasters(&sc);
    f.history = history_until(&exo, k0, cap, true);
    let flagged = pv_error(&exo, &f, k0);
    f.history = history_until(&exo, k0, cap, false);
    let unflagged = pv_error(&exo, &f, k0);
    eprintln!("pv with curtailment: flagged {flagged:.3}, unflagged {unflagged:.3}");
    assert!(flagged < 0.12, "flagged {flagged}");
    assert!(unflagged > 2.0 * flagged, "unflagged {unflagged}");
}

/// A day-ahead product replaces the clear-sky forecast where it covers: given the next day
/// with a 10 % bias, the forecast is that product.
#[test]
fn a_day_ahead_product_replaces_the_clear_sky_forecast_for_its_hours() {
    let sc = scenario("cloudy-winter-weekday");
    let exo = record(&sc);
    let k0 = 14 * DAY;
    let mut csv = String::from("start,pv_w\n");
    for k in k0..k0 + DAY / 2 {
        let t = step_start(&exo, k).to_rfc3339();
        csv.push_str(&format!("{t},{}\n", 1.1 * exo.pv_available_w[k]));
    }
    let mut f = forecasters(&sc);
    f.history = history_until(&exo, k0, f64::INFINITY, false);
    f.day_ahead = Some(parse_day_ahead(&csv).unwrap());
    let fc = f.pv_w(step_start(&exo, k0), DAY);
    for (k, got) in fc.iter().enumerate().take(DAY / 2) {
        let want = (1.1 * exo.pv_available_w[k0 + k]).min(sc.pv.inverter_ac_kw * 1000.0);
        assert!((got - want).abs() < 1e-6, "step {k}: {got} vs {want}");
    }
    let rest = f.day_ahead.take();
    assert!(rest.is_some());
    let clear_sky = f.pv_w(step_start(&exo, k0), DAY);
    assert_eq!(fc[DAY / 2..], clear_sky[DAY / 2..]);
}

/// Building load, next day, bound 15 % nMAE on the sunny weekday scenario (the workshop's
/// random load steps and an AR(1) noise make every day differ; measured about 8 %).
#[test]
fn the_building_load_forecast_of_the_next_day_is_within_bounds_and_zeros_are_not() {
    let sc = scenario("sunny-weekday");
    let exo = record(&sc);
    let bound = 0.15;
    let err = scored(&exo, forecasters(&sc), |k0, f| {
        let fc = f.building_w(step_start(&exo, k0), DAY);
        nmae(&fc, &exo.building_w[k0..k0 + DAY])
    });
    eprintln!("building: next-day nMAE {:.1} %", 100.0 * err);
    assert!(err < bound, "building nMAE {err}");
    assert!(nmae(&vec![0.0; DAY], &exo.building_w[..DAY]) >= bound);
    // Without history the configured profile is the forecast.
    let f = forecasters(&sc);
    assert_eq!(f.building_w(step_start(&exo, 0), 4), vec![30_000.0; 4]);
}

/// A synthetic building: 20 kW flat, and each day one +10 kW step of 8 quarters starting at a
/// different time (never the same quarter on the same weekday twice in four weeks, so the
/// medians stay at 20 kW). History holds `days` whole days, then `extra` quarters of the next
/// day, whose step (if any) starts `step_from` quarters into it.
fn stepped_history(
    days: usize,
    extra: usize,
    step_from: Option<usize>,
) -> (History, DateTime<Utc>) {
    let t0 = DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let mut h = History::default();
    let at = |k: usize| t0 + Duration::minutes(15 * k as i64);
    for k in 0..days * DAY + extra {
        let (d, q) = (k / DAY, k % DAY);
        let from = if d == days {
            step_from
        } else {
            Some(36 + (d * 7) % 20)
        };
        let on = from.is_some_and(|f| q >= f && q < f + 8);
        h.observe_quarter(PastQuarter {
            start: at(k),
            pv_w: Some(0.0),
            building_w: Some(if on { 30_000.0 } else { 20_000.0 }),
            pv_limited: false,
        });
    }
    (h, at(days * DAY + extra) + Duration::minutes(5))
}

/// A load step that is on now carries into the next quarters and fades by what the station
/// measured of its own steps (they last 8 quarters: 7 of 8 consecutive pairs persist); with no
/// step on now, the forecast is the medians.
#[test]
fn a_load_step_running_now_carries_into_the_next_quarters_and_fades() {
    let sc = scenario("sunny-weekday");
    let mut f = forecasters(&sc);
    let (h, now) = stepped_history(21, 50, Some(47));
    f.history = h;
    let fc = f.building_w(now, 24);
    eprintln!("stepped: {:?}", &fc[..6]);
    assert!(fc[0] > 27_000.0 && fc[0] < 30_000.0, "{}", fc[0]);
    assert!(fc[0] > fc[1] && fc[1] > fc[3], "{fc:?}");
    assert!((fc[23] - 20_000.0).abs() < 1_000.0, "{}", fc[23]);
    let (h, now) = stepped_history(21, 30, None);
    f.history = h;
    let flat = f.building_w(now, 24);
    assert!(flat.iter().all(|w| (w - 20_000.0).abs() < 1.0), "{flat:?}");
}

/// Quarters ahead of the earlier forecast [`next_quarter_errors`] compares with (2 h: what is
/// measured now has faded from it).
const LEAD: usize = 8;

/// Forecasts of the quarters of the last seven days whose local hour is in `hours`, made by
/// `forecast(f, k, n)` (the `n` quarters from quarter `k`) with the history up to each quarter:
/// the nMAE of the one made at the quarter's start and of the one made [`LEAD`] quarters
/// earlier, against `actual`.
fn next_quarter_errors(
    exo: &Exogenous,
    mut f: Forecasters,
    hours: std::ops::Range<u32>,
    actual: &[f64],
    forecast: impl Fn(&Forecasters, usize, usize) -> Vec<f64>,
) -> (f64, f64, Forecasters) {
    let tz = f.cfg.tz;
    let first = (DAYS as usize - SCORED_DAYS) * DAY;
    f.history = history_until(exo, first - LEAD, f64::INFINITY, false);
    let mut early = vec![f64::NAN; DAYS as usize * DAY + LEAD + 1];
    let (mut now_f, mut early_f, mut real) = (vec![], vec![], vec![]);
    for k in first - LEAD..DAYS as usize * DAY {
        let fc = forecast(&f, k, LEAD + 1);
        early[k + LEAD] = fc[LEAD];
        let hour = step_start(exo, k).with_timezone(&tz).hour();
        if k >= first && hours.contains(&hour) {
            now_f.push(fc[0]);
            early_f.push(early[k]);
            real.push(actual[k]);
        }
        f.history.observe_quarter(PastQuarter {
            start: step_start(exo, k),
            pv_w: Some(exo.pv_available_w[k]),
            building_w: Some(exo.building_w[k]),
            pv_limited: false,
        });
    }
    (nmae(&now_f, &real), nmae(&early_f, &real), f)
}

/// Building load, the next quarter, forecast at every quarter of the sunny weekday's last seven
/// days while the dealership is open (07:00-19:00 local): what is measured now (a workshop step,
/// the slow noise) makes it better than the forecast of the same quarter made 2 h earlier
/// (measured 5.1 % against 7.6 % nMAE). A forecaster that ignores the present scores the same
/// at both and fails.
#[test]
fn the_next_quarters_building_forecast_knows_what_is_running_now() {
    let sc = scenario("sunny-weekday");
    let exo = record(&sc);
    let (now_e, early_e, f) =
        next_quarter_errors(&exo, forecasters(&sc), 7..19, &exo.building_w, |f, k, n| {
            f.building_w(step_start(&exo, k), n)
        });
    let rho = load::persistence(&f.cfg, &f.history);
    eprintln!(
        "building next quarter: nMAE {:.1} % (2 h earlier {:.1} %), persistence {rho:.2}",
        100.0 * now_e,
        100.0 * early_e
    );
    assert!(rho > 0.3 && rho < 0.9, "{rho}");
    assert!(now_e < 0.8 * early_e, "{now_e} vs {early_e}");
}

/// PV, the next quarter, forecast at every quarter from 08:00 to 16:00 local of the cloudy
/// winter weekday's last seven days (broken clouds, persistence 0.97 per minute): the cloud
/// seen in the last quarter makes it better than the forecast of the same quarter made 2 h
/// earlier (measured 27.5 % against 51.9 % nMAE; 2.8 against 6.4 % on the sunny weekday's thin
/// haze). Today's ratio so far alone scores 43 % against 52 % and fails.
#[test]
fn the_next_quarters_pv_forecast_knows_the_passing_cloud() {
    for name in ["cloudy-winter-weekday", "sunny-weekday"] {
        let sc = scenario(name);
        let exo = record(&sc);
        let (now_e, early_e, _) = next_quarter_errors(
            &exo,
            forecasters(&sc),
            8..16,
            &exo.pv_available_w,
            |f, k, n| f.pv_w(step_start(&exo, k), n),
        );
        eprintln!(
            "pv {name} next quarter: nMAE {:.1} % (2 h earlier {:.1} %)",
            100.0 * now_e,
            100.0 * early_e
        );
        assert!(now_e < 0.7 * early_e, "{name}: {now_e} vs {early_e}");
    }
}

/// Car energy arriving over the next day (all chargers) and arrivals per 3-hour block, each as
/// `(forecast, actual)`.
fn car_day(exo: &Exogenous, cars: &[ExpectedCar], k0: usize) -> ((f64, f64), Vec<(f64, f64)>) {
    let day_start = step_start(exo, k0);
    let block = |t: DateTime<Utc>| ((t - day_start).num_hours() / 3) as usize;
    let mut blocks = vec![(0.0, 0.0); 8];
    let mut energy = (0.0, 0.0);
    for c in cars
        .iter()
        .filter(|c| c.arrives >= day_start && block(c.arrives) < 8)
    {
        blocks[block(c.arrives)].0 += 1.0;
        energy.0 += c.wanted_wh;
    }
    for s in exo
        .sessions
        .iter()
        .filter(|s| s.arrive >= day_start && block(s.arrive) < 8)
    {
        blocks[block(s.arrive)].1 += 1.0;
        energy.1 += s.wanted_wh;
    }
    (energy, blocks)
}

/// nMAE of `(forecast, actual)` pairs.
fn pairs_nmae(p: &[(f64, f64)]) -> f64 {
    let f: Vec<f64> = p.iter().map(|x| x.0).collect();
    let a: Vec<f64> = p.iter().map(|x| x.1).collect();
    nmae(&f, &a)
}

/// Cars over a week of the sunny weekday scenario (7-12 cars a day, each wanting a heavy-tailed
/// Weibull energy, shape 0.6). Bounds: the day's car energy within 60 % nMAE (measured about
/// 44 %: one large car more or less is a third of a day's energy) and the arrivals per 3-hour
/// block within 70 % (measured 55 %: the blocks hold Poisson counts of one to three cars, and
/// a Poisson count of mean 2 is on average 1.1 away from it, 54 %, whatever the forecast).
#[test]
fn the_car_forecast_of_the_next_day_is_within_bounds_and_no_cars_are_not() {
    let sc = scenario("sunny-weekday");
    let exo = record(&sc);
    let mut f = forecasters(&sc);
    let (mut days, mut blocks) = (Vec::new(), Vec::new());
    for d in DAYS as usize - SCORED_DAYS..DAYS as usize {
        let k0 = d * DAY;
        f.history = history_until(&exo, k0, f64::INFINITY, false);
        let now = step_start(&exo, k0);
        let cars = f.arrivals(now, now + Duration::days(1), &[]);
        let (energy, b) = car_day(&exo, &cars, k0);
        days.push(energy);
        blocks.extend(b);
    }
    let (energy_err, count_err) = (pairs_nmae(&days), pairs_nmae(&blocks));
    eprintln!(
        "cars: next-day energy nMAE {:.1} %, arrivals per 3 h block nMAE {:.1} %",
        100.0 * energy_err,
        100.0 * count_err
    );
    assert!(energy_err < 0.6, "car energy nMAE {energy_err}");
    assert!(count_err < 0.7, "arrival count nMAE {count_err}");
    let none: Vec<(f64, f64)> = days.iter().map(|&(_, a)| (0.0, a)).collect();
    assert!(pairs_nmae(&none) >= 0.6);
    let no_blocks: Vec<(f64, f64)> = blocks.iter().map(|&(_, a)| (0.0, a)).collect();
    assert!(pairs_nmae(&no_blocks) >= 0.7);
}

/// A charger with a car plugged in gets no expected arrival before that car leaves, and every
/// expected car fits its charger's free time.
#[test]
fn occupied_chargers_expect_no_car_before_theirs_leaves() {
    let sc = scenario("sunny-weekday");
    let exo = record(&sc);
    let k0 = 14 * DAY;
    let mut f = forecasters(&sc);
    f.history = history_until(&exo, k0, f64::INFINITY, false);
    let now = step_start(&exo, k0) + Duration::hours(8);
    let free = f.arrivals(now, now + Duration::days(1), &[]);
    let leaves = now + Duration::hours(6);
    let occupied = vec![Some(leaves); sc.chargers.count];
    let busy = f.arrivals(now, now + Duration::days(1), &occupied);
    assert!(free.iter().any(|c| c.arrives < leaves), "{free:?}");
    assert!(busy.iter().all(|c| c.arrives >= leaves), "{busy:?}");
    assert!(!busy.is_empty());
}

/// The assembled forecast is what the planner takes: aligned, the horizon's length, prices from
/// the tariff function.
#[test]
fn the_assembled_forecast_covers_the_horizon_from_the_running_quarter() {
    let sc = scenario("sunny-weekday");
    let exo = record(&sc);
    let k0 = 14 * DAY;
    let mut f = forecasters(&sc);
    f.history = history_until(&exo, k0, f64::INFINITY, false);
    let now = step_start(&exo, k0) + Duration::seconds(400);
    let fc = f.forecast(
        now,
        192,
        |t| {
            if t < now + Duration::hours(1) {
                1.0
            } else {
                0.5
            }
        },
        &[],
    );
    assert_eq!(fc.start, step_start(&exo, k0));
    assert_eq!(fc.pv_w.len(), 192);
    assert_eq!(fc.building_w.len(), 192);
    assert_eq!(fc.import_price_cny_per_kwh[..5], [1.0, 1.0, 1.0, 1.0, 1.0]);
    assert_eq!(fc.import_price_cny_per_kwh[5], 0.5);
    assert!(fc.arrivals.iter().all(|c| c.arrives >= now));
}

fn booking(
    charger: Option<usize>,
    arrives: DateTime<Utc>,
    stay_h: i64,
    kwh: f64,
) -> station_controller::planner::forecast::Booking {
    station_controller::planner::forecast::Booking {
        id: 0,
        charger,
        arrives,
        departs: arrives + Duration::hours(stay_h),
        energy_wh: Some(kwh * 1000.0),
        max_w: Some(22_000.0),
        fulfilled_by: None,
    }
}

/// A station that has seen no car for two weeks (the EV rush's, whose only cars are the rush's)
/// expects none; the cars the operator booked are expected with their energy and power, each
/// on a free charger, and a late one is expected now until its grace ends.
#[test]
fn booked_cars_are_expected_where_the_history_sees_none() {
    let sc = scenario("ev-rush");
    let exo = record(&sc);
    let k0 = 14 * DAY;
    let mut f = forecasters(&sc);
    for q in history_until(&exo, k0, f64::INFINITY, false).quarters() {
        f.history.observe_quarter(*q);
    }
    let now = step_start(&exo, k0) + Duration::hours(1);
    assert!(f.arrivals(now, now + Duration::days(1), &[]).is_empty());
    let rush = now + Duration::hours(4);
    for k in 0..3 {
        f.bookings
            .add(booking(
                None,
                rush + Duration::minutes(5 * k),
                3,
                40.0 + k as f64,
            ))
            .unwrap();
    }
    f.bookings.add(booking(Some(5), rush, 2, 30.0)).unwrap();
    let cars = f.arrivals(now, now + Duration::days(1), &[]);
    assert_eq!(cars.len(), 4, "{cars:?}");
    let energy: f64 = cars.iter().map(|c| c.wanted_wh).sum();
    assert!((energy - 153_000.0).abs() < 1e-6, "{cars:?}");
    assert!(cars
        .iter()
        .all(|c| c.max_w == 22_000.0 && c.arrives >= rush));
    // Charger 6 (index 5) busy past the rush: its booked car is expected on a free one.
    let mut occupied = vec![None; sc.chargers.count];
    occupied[5] = Some(rush + Duration::hours(1));
    assert_eq!(f.arrivals(now, now + Duration::days(1), &occupied).len(), 4);
    // Every charger busy: no booked car can be expected.
    let all_busy = vec![Some(rush + Duration::hours(1)); sc.chargers.count];
    assert!(f
        .arrivals(now, now + Duration::days(1), &all_busy)
        .is_empty());
    // Twenty minutes late: expected now; forty minutes late: lapsed.
    let late = f.arrivals(rush + Duration::minutes(20), rush + Duration::days(1), &[]);
    assert_eq!(late.len(), 4);
    assert!(late
        .iter()
        .all(|c| c.arrives == rush + Duration::minutes(20)));
    assert!(f
        .arrivals(rush + Duration::minutes(40), rush + Duration::days(1), &[])
        .is_empty());
    // Plugged in: fulfilled, no longer expected.
    assert!(f.bookings.plugged(5, rush).is_some());
    assert_eq!(f.arrivals(now, now + Duration::days(1), &[]).len(), 3);
}

/// A booked car that the statistics expect anyway (an hour where the station usually sees a
/// car) replaces the statistical one rather than adding to it.
#[test]
fn a_booked_car_counts_as_one_of_the_cars_its_hour_expects() {
    let sc = scenario("sunny-weekday");
    let exo = record(&sc);
    let k0 = 14 * DAY;
    let mut f = forecasters(&sc);
    f.history = history_until(&exo, k0, f64::INFINITY, false);
    let now = step_start(&exo, k0);
    let end = now + Duration::days(1);
    let free = f.arrivals(now, end, &[]);
    let first = free
        .first()
        .expect("the sunny weekday expects cars")
        .clone();
    f.bookings
        .add(booking(None, first.arrives, 2, 55.0))
        .unwrap();
    let booked = f.arrivals(now, end, &[]);
    assert_eq!(booked.len(), free.len(), "{free:?}\n{booked:?}");
    assert!(booked
        .iter()
        .any(|c| c.arrives == first.arrives && c.wanted_wh == 55_000.0));
}
