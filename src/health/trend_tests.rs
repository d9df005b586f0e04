use super::*;
use chrono::TimeZone;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// Daily samples of a pack `age0` days old at `t0()`: `C = c0 - a sqrt(age) - b Q`, the
/// throughput rate alternating between `lo` and `hi` Wh/day every 30 days, +-`noise` Wh.
fn pack(days: i64, age0: f64, a: f64, b: f64, lo: f64, hi: f64, noise: f64) -> Vec<CapacitySample> {
    let mut q = 0.0;
    (0..days)
        .map(|d| {
            q += if (d / 30) % 2 == 0 { lo } else { hi };
            let age = age0 + d as f64;
            let wobble = if d % 2 == 0 { noise } else { -noise };
            let c = 400_000.0 - a * age.sqrt() - b * q + wobble;
            CapacitySample {
                at: t0() + Duration::days(d),
                capacity_wh: c,
                sigma_wh: 1000.0,
                soc_from_pct: 90.0,
                soc_to_pct: 10.0,
                energy_wh: 0.8 * c,
                throughput_wh: q,
                bms_soh_pct: None,
            }
        })
        .collect()
}

const A: f64 = 1500.0; // Wh per sqrt(day): 1.4 kWh in the year after age 5 years
const B: f64 = 1.0e-4; // Wh per Wh of throughput

#[test]
fn calendar_and_cycle_fade_are_fitted_apart_when_the_cycling_rate_varies() {
    let s = pack(365, 1826.0, A, B, 100_000.0, 700_000.0, 300.0);
    let now = t0() + Duration::days(364);
    let made = t0() - Duration::days(1826);
    let f = fade(&s, now, Some(made)).unwrap();
    assert_eq!(f.age_source, AgeSource::Configured);
    assert!((f.age_days - 2190.0).abs() < 1.0, "{f:?}");
    assert!((f.calendar_wh_per_sqrt_day - A).abs() < 0.1 * A, "{f:?}");
    assert!((f.cycle_wh_per_wh - B).abs() < 0.1 * B, "{f:?}");
    // The rate of the last 30 days (day 334..364: the `hi` phase partly) is what is projected.
    assert!(f.throughput_wh_per_day > 99_000.0 && f.throughput_wh_per_day < 701_000.0);
}

#[test]
fn the_end_of_life_follows_the_slowing_calendar_fade_not_a_straight_line() {
    // Steady cycling: a and b are collinear in a year but the projection of their sum is not.
    // Little cycling (about 20 EFC a year): the calendar fade leads, as in the year run.
    let rate = 20_000.0;
    let s = pack(365, 1826.0, A, B, rate, rate, 200.0);
    let now = t0() + Duration::days(364);
    let f = fade(&s, now, Some(t0() - Duration::days(1826))).unwrap();
    let c_now = s.last().unwrap().capacity_wh;
    let eol_wh = c_now - 40_000.0;
    let e = end_of_life(c_now, eol_wh, &f, now).unwrap();
    let got = (e.date - now).num_seconds() as f64 / 86_400.0;
    // Truth: the first day the model's own loss reaches 30 kWh.
    let age = 2190.0;
    let truth = (1..40_000)
        .map(|d| d as f64)
        .find(|d| A * ((age + d).sqrt() - age.sqrt()) + B * rate * d >= 40_000.0)
        .unwrap();
    assert!((got - truth).abs() < 0.1 * truth, "{got} vs {truth}: {f:?}");
    assert!(e.earliest <= e.date && e.latest.is_none_or(|l| l >= e.date));
    // A straight line through the same year (today's slope) comes early by more than 20 %.
    let straight = 40_000.0 / (A * ((age).sqrt() - (age - 364.0).sqrt()) / 364.0 + B * rate);
    assert!(straight < 0.8 * truth, "{straight} vs {truth}");
}

#[test]
fn without_a_manufacturing_date_the_age_is_fitted_and_said_so() {
    let s = pack(365, 700.0, A, B, 100_000.0, 700_000.0, 50.0);
    let now = t0() + Duration::days(364);
    let f = fade(&s, now, None).unwrap();
    assert_eq!(f.age_source, AgeSource::Fitted);
    // Young pack, strongly curved calendar fade: the age is found to within a third.
    assert!((f.age_days - 1064.0).abs() < 0.33 * 1064.0, "{f:?}");
}

#[test]
fn too_little_history_gives_no_trend_and_no_fade_gives_no_end_of_life() {
    let s = pack(10, 1826.0, A, B, 100_000.0, 700_000.0, 300.0);
    assert!(fade(&s, t0() + Duration::days(9), None).is_none());
    let flat = pack(100, 1826.0, 0.0, 0.0, 100_000.0, 700_000.0, 0.0);
    let f = fade(&flat, t0() + Duration::days(99), Some(t0())).unwrap();
    assert!(end_of_life(400_000.0, 300_000.0, &f, t0()).is_none());
}

fn measured_fade(b: f64, se: f64) -> Fade {
    Fade {
        calendar_wh_per_sqrt_day: A,
        calendar_se: 100.0,
        cycle_wh_per_wh: b,
        cycle_se: se,
        cov: 0.0,
        age_days: 2000.0,
        age_source: AgeSource::Configured,
        throughput_wh_per_day: 300_000.0,
        calendar_wh_per_day: 16.8,
        cycle_wh_per_day: b * 300_000.0,
        wh_per_day: 16.8 + b * 300_000.0,
        wh_per_efc: 2.0 * b * 340_000.0,
        days: 365.0,
        samples: 300,
    }
}

#[test]
fn the_wear_price_spreads_the_pack_value_over_the_capacity_left_until_end_of_life() {
    // 1e-4 Wh per Wh: one kWh discharged and recharged costs 0.2 Wh of capacity; 60000 CNY over
    // the 40 kWh left: 1500 CNY per kWh of capacity -> 0.30 CNY per kWh discharged.
    let f = measured_fade(1.0e-4, 1.0e-5);
    let w = wear(Some(&f), Some(340_000.0), 300_000.0, 60_000.0, 0.2);
    assert_eq!(w.source, "measured");
    assert!((w.cny_per_kwh - 0.30).abs() < 1e-9, "{w:?}");
    assert!(w.reason.is_none());
}

#[test]
fn the_wear_price_falls_back_to_the_policy_with_a_reason_and_is_clamped() {
    let f = measured_fade(1.0e-4, 1.0e-5);
    let no_cap = wear(Some(&f), None, 300_000.0, 60_000.0, 0.2);
    assert_eq!((no_cap.source, no_cap.cny_per_kwh), ("policy", 0.2));
    assert!(no_cap.reason.unwrap().contains("not confident"));
    let no_fade = wear(None, Some(340_000.0), 300_000.0, 60_000.0, 0.2);
    assert_eq!(no_fade.source, "policy");
    // b only 2 standard errors above zero: not measured.
    let vague = measured_fade(1.0e-4, 0.5e-4);
    let w = wear(Some(&vague), Some(340_000.0), 300_000.0, 60_000.0, 0.2);
    assert_eq!(w.source, "policy");
    assert!(w.reason.unwrap().contains("not yet told apart"), "reason");
    let negative = measured_fade(-1.0e-4, 1.0e-6);
    assert_eq!(
        wear(Some(&negative), Some(340_000.0), 300_000.0, 60_000.0, 0.2).source,
        "policy"
    );
    // 12 CNY/kWh measured 1 kWh before the end of life: clamped to 10 x 0.2.
    let near_end = wear(Some(&f), Some(301_000.0), 300_000.0, 60_000.0, 0.2);
    assert_eq!(near_end.source, "clamped");
    assert!((near_end.cny_per_kwh - 2.0).abs() < 1e-9, "{near_end:?}");
    assert!((near_end.measured_cny_per_kwh.unwrap() - 12.0).abs() < 1e-9);
    assert!(near_end.reason.unwrap().contains("outside"));
    // A pack fading ten times slower than the policy assumes is clamped from below.
    let slow = wear(
        Some(&measured_fade(1.0e-6, 1.0e-7)),
        Some(340_000.0),
        300_000.0,
        60_000.0,
        0.2,
    );
    assert_eq!(slow.source, "clamped");
    assert!((slow.cny_per_kwh - 0.02).abs() < 1e-12, "{slow:?}");
    let at_end = wear(Some(&f), Some(299_000.0), 300_000.0, 60_000.0, 0.2);
    assert_eq!(at_end.source, "policy");
}

#[test]
fn a_fade_that_would_gain_capacity_is_set_to_zero_and_keeps_the_joint_band() {
    // Calendar fade plus a throughput term that "gains" capacity (what collinear noise can
    // make of steady cycling): the cycle fade is pinned at 0, the calendar fade refitted.
    let pts: Vec<(f64, f64, f64, f64)> = (0..200)
        .map(|i| {
            let age = 2000.0 + i as f64;
            let q = 1000.0 * i as f64 + if i % 3 == 0 { 50_000.0 } else { 0.0 };
            (age.sqrt(), q, 400_000.0 - A * age.sqrt() + 1.0e-5 * q, 1.0)
        })
        .collect();
    let ((p, q), cov, _) = fit2(&pts).unwrap();
    assert!(
        p < 0.0 && q > 0.0,
        "joint fit gains capacity with throughput: {q}"
    );
    let ((p1, q1), cov1, _) = fit_non_negative(&pts).unwrap();
    assert_eq!(q1, 0.0);
    assert!(p1 < 0.0, "{p1}");
    assert_eq!(cov1, cov, "the band stays the joint fit's");
}
