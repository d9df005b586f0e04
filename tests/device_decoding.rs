//! Property tests: every driver decodes arbitrary register contents without panicking, and a
//! reading it hands on holds only values in range (anything else is an error naming the point,
//! so the device is degraded, never used). The images keep a valid SunSpec model chain (so the
//! drivers get past discovery) with arbitrary model lengths and bodies; the Alfen socket gets
//! arbitrary measurement and status blocks.
// Test and bench code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use station_controller::devices::check::POWER_RATING_MARGIN;
use station_controller::devices::sunspec::{encode_float32, encode_string};
use station_controller::devices::{
    Battery, BatteryConfig, ChargerConfig, ChargerProfile, DeviceError, Meter, MeterConfig,
    PvConfig, PvInverter,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::modbus_plant::{fast_link, image, model, start, Plant};

/// A register value: anything, with the SunSpec "not implemented" markers, small numbers and
/// small signed scale factors drawn often.
fn reg() -> impl Strategy<Value = u16> {
    prop_oneof![
        3 => any::<u16>(),
        1 => Just(0xFFFF),
        1 => Just(0x8000),
        1 => Just(0),
        2 => 0u16..2_000,
        2 => (-4i16..=4).prop_map(|v| v as u16),
    ]
}

/// `base` with up to `n` registers overwritten by arbitrary values (`(index, value)`, the
/// index taken modulo the length), so most images are plausible but for a few points.
fn damaged(base: Vec<u16>, n: usize) -> impl Strategy<Value = Vec<u16>> {
    proptest::collection::vec((any::<usize>(), reg()), 0..=n).prop_map(move |hits| {
        let mut out = base.clone();
        for (i, v) in hits {
            let i = i % out.len();
            out[i] = v;
        }
        out
    })
}

/// A model `id` of `len` registers: `base_points` set, the body damaged in up to 4 places;
/// one time in six a body of arbitrary length and content instead.
fn any_model(id: u16, len: u16, base_points: &[(u16, u16)]) -> impl Strategy<Value = Vec<u16>> {
    let base = model(id, len, base_points)[2..].to_vec();
    let arbitrary = (0..len + 10)
        .prop_flat_map(|n| proptest::collection::vec(reg(), usize::from(n)))
        .boxed();
    prop_oneof![5 => damaged(base, 4).boxed(), 1 => arbitrary].prop_map(move |body| {
        let mut m = vec![id, body.len() as u16];
        m.extend(body);
        m
    })
}

/// Counts how the drivers answered, to check that both branches were exercised.
#[derive(Default)]
struct Outcomes {
    ok: AtomicUsize,
    refused: AtomicUsize,
}

impl Outcomes {
    fn note<T>(&self, r: &Result<T, DeviceError>) {
        match r {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                assert!(
                    !e.to_string().trim().is_empty(),
                    "an error without a message: {e:?}"
                );
                self.refused.fetch_add(1, Ordering::Relaxed)
            }
        };
    }

    /// Both readings and refusals were seen: the properties were not checked on errors alone.
    fn assert_both(&self, what: &str) {
        let (ok, refused) = (
            self.ok.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        );
        assert!(
            ok * 10 >= ok + refused && refused * 10 >= ok + refused,
            "{what}: {ok} readings, {refused} refusals: a generator that misses one branch"
        );
    }
}

/// Run `cases` cases of `strategy` through `check`.
fn run<S: Strategy>(strategy: S, check: impl Fn(S::Value)) {
    let mut runner = TestRunner::new(ProptestConfig::with_cases(CASES));
    runner
        .run(&strategy, |v| {
            check(v);
            Ok(())
        })
        .unwrap();
}

const CASES: u32 = 128;

/// Run `f` on a fresh current-thread runtime against `plant`, served on a free port.
fn with_server<T>(plant: Arc<Plant>, f: impl AsyncFnOnce(std::net::SocketAddr) -> T) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let srv = start(plant).await;
            let out = f(srv.addr).await;
            srv.kill().await;
            out
        })
}

fn within_rating(p: f64, rating_w: f64) -> bool {
    p.is_finite() && p.abs() <= POWER_RATING_MARGIN * rating_w + 1e-6
}

/// Plausible points of the models (offsets from the ID register, as the SunSpec model
/// definitions count them): an inverter at 5 kW of 10 kW, a meter at 20 kW, a battery at 50 %.
const INVERTER_103: &[(u16, u16)] = &[
    (14, 5_000),
    (15, 0),
    (16, 5_000),
    (17, 0xFFFE),
    (24, 0),
    (25, 9_000),
    (26, 0),
    (38, 4),
];
const NAMEPLATE_120: &[(u16, u16)] = &[(2, 4), (3, 10_000), (4, 0)];
const CONTROLS_123: &[(u16, u16)] = &[(5, 100), (9, 1), (23, 0)];
const METER_203: &[(u16, u16)] = &[
    (16, 5_000),
    (17, 0xFFFE),
    (18, 20_000),
    (19, 7_000),
    (20, 7_000),
    (21, 6_000),
    (22, 0),
    (38, 0),
    (39, 500),
    (46, 1),
    (47, 0),
    (54, 0),
];
const STORAGE_802: &[(u16, u16)] = &[
    (3, 500),
    (4, 300),
    (5, 250),
    (11, 50),
    (13, 98),
    (22, 3),
    (34, 7_200),
    (47, 100),
    (53, 2),
    (54, 2),
    (56, 0),
    (58, 0),
    (59, 0xFFFF),
    (63, 2),
];

#[test]
fn the_pv_driver_decodes_any_inverter_image_into_values_in_range_or_an_error() {
    let outcomes = Outcomes::default();
    let images = (
        any_model(1, 66, &[]),
        any_model(103, 50, INVERTER_103),
        proptest::option::of(any_model(120, 26, NAMEPLATE_120)),
        prop_oneof![
            Just(None),
            any_model(123, 24, CONTROLS_123).prop_map(Some),
            any_model(704, 65, &[]).prop_map(Some),
        ],
        proptest::option::of(1_000.0f64..200_000.0),
    );
    run(
        images,
        |(common, inverter, nameplate, limit, configured_rating)| {
            let mut models = vec![common, inverter];
            models.extend(nameplate);
            models.extend(limit);
            let plant = Arc::new(Plant::default()).with_unit(1, 40_000, &image(&models));
            let r = with_server(plant, async |addr| {
                let mut cfg = PvConfig::new(fast_link(addr, 1));
                cfg.rating_w = configured_rating;
                PvInverter::new(cfg).read().await
            });
            outcomes.note(&r);
            if let Ok(r) = r {
                assert!(r.rating_w.is_finite() && r.rating_w > 0.0, "{r:?}");
                assert!(within_rating(r.power_w, r.rating_w), "{r:?}");
                if let Some(dc) = r.dc_power_w {
                    assert!(within_rating(dc, r.rating_w), "{r:?}");
                }
                assert!(
                    r.energy_wh.is_none_or(|e| e.is_finite() && e >= 0.0),
                    "{r:?}"
                );
                assert!(
                    r.limit_pct.is_none_or(|p| (0.0..=100.0).contains(&p)),
                    "{r:?}"
                );
                assert!(r.frequency_hz.is_none_or(f64::is_finite), "{r:?}");
            }
        },
    );
    outcomes.assert_both("pv");
}

#[test]
fn the_meter_driver_decodes_any_meter_image_into_values_in_range_or_an_error() {
    let outcomes = Outcomes::default();
    let images = (
        any_model(1, 66, &[]),
        prop_oneof![
            any_model(203, 105, METER_203),
            // Float meters: arbitrary contents only (every float point damaged or not).
            proptest::collection::vec(reg(), 124).prop_map(|b| {
                let mut m = vec![213, 124];
                m.extend(b);
                m
            }),
        ],
        proptest::option::of(10_000.0f64..400_000.0),
        any::<bool>(),
    );
    run(images, |(common, meter, rating, invert)| {
        let plant = Arc::new(Plant::default()).with_unit(1, 40_000, &image(&[common, meter]));
        let r = with_server(plant, async |addr| {
            let mut cfg = MeterConfig::new(fast_link(addr, 1));
            cfg.rating_w = rating;
            cfg.invert = invert;
            Meter::new(cfg).read().await
        });
        outcomes.note(&r);
        if let Ok(r) = r {
            let bound = |p: f64| match rating {
                Some(w) => within_rating(p, w),
                None => p.is_finite(),
            };
            assert!(bound(r.power_w), "{r:?}");
            assert!(r.phase_w.iter().flatten().all(|p| bound(*p)), "{r:?}");
            for e in [r.import_wh, r.export_wh].into_iter().flatten() {
                assert!(e.is_finite() && e >= 0.0, "{r:?}");
            }
        }
    });
    outcomes.assert_both("meter");
}

#[test]
fn the_battery_driver_decodes_any_802_image_into_values_in_range_or_an_error() {
    let outcomes = Outcomes::default();
    let images = (
        any_model(1, 66, &[]),
        any_model(802, 62, STORAGE_802),
        proptest::option::of(any_model(704, 65, &[])),
        proptest::option::of(5_000.0f64..500_000.0),
    );
    run(images, |(common, storage, control, rating)| {
        let mut models = vec![common, storage];
        models.extend(control);
        let plant = Arc::new(Plant::default()).with_unit(1, 40_000, &image(&models));
        let r = with_server(plant, async |addr| {
            let mut cfg = BatteryConfig::new(fast_link(addr, 1));
            cfg.rating_w = rating;
            Battery::new(cfg).read().await
        });
        outcomes.note(&r);
        if let Ok(r) = r {
            assert!((0.0..=100.0).contains(&r.soc_pct), "{r:?}");
            assert!(
                r.soh_pct.is_none_or(|v| (0.0..=100.0).contains(&v)),
                "{r:?}"
            );
            // Bounded by the configured rating, else by what the PCS itself reports it can do
            // (a reported 0 W bounds nothing).
            let reported = match (r.max_charge_w, r.max_discharge_w) {
                (Some(c), Some(d)) => Some(c.max(d)),
                (c, d) => c.or(d),
            };
            match rating.or(reported).filter(|w| *w > 0.0) {
                Some(w) => assert!(within_rating(r.power_w, w), "{r:?}"),
                None => assert!(r.power_w.is_finite(), "{r:?}"),
            }
            for v in [r.max_charge_w, r.max_discharge_w, r.capacity_wh]
                .into_iter()
                .flatten()
            {
                assert!(v.is_finite() && v >= 0.0, "{r:?}");
            }
        }
    });
    outcomes.assert_both("battery");
}

/// An Alfen socket charging at 16 A on three phases (registers 300..=379 and 1200..=1219).
fn alfen_socket() -> (Vec<u16>, Vec<u16>) {
    let f32_at = |m: &mut [u16], i: usize, v: f32| m[i..i + 2].copy_from_slice(&encode_float32(v));
    let mut meas = vec![0u16; 80];
    for i in 0..3 {
        f32_at(&mut meas, 6 + 2 * i, 230.0);
        f32_at(&mut meas, 20 + 2 * i, 16.0);
    }
    f32_at(&mut meas, 44, 11_000.0);
    let e = 5_000.0f64.to_bits();
    for k in 0..4 {
        meas[74 + k] = (e >> (48 - 16 * k)) as u16;
    }
    let mut status = vec![0u16; 20];
    status[1..6].copy_from_slice(&encode_string("C2", 5));
    f32_at(&mut status, 6, 16.0);
    status[8..10].copy_from_slice(&[0, 45]);
    f32_at(&mut status, 10, 16.0);
    f32_at(&mut status, 12, 6.0);
    status[14] = 1;
    status[15] = 3;
    (meas, status)
}

#[test]
fn the_alfen_driver_decodes_any_socket_registers_into_values_in_range_or_an_error() {
    let outcomes = Outcomes::default();
    let (meas, status) = alfen_socket();
    let registers = (damaged(meas, 3), damaged(status, 3), 6.0f64..63.0);
    run(registers, |(measurements, status, max_current_a)| {
        let plant = Arc::new(Plant::default())
            .with_unit(1, 300, &measurements)
            .with_unit(1, 1200, &status);
        let mut cfg = ChargerConfig::new(fast_link(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            1,
        ));
        cfg.max_current_a = max_current_a;
        let rating_w = cfg.rating_w();
        let r = with_server(plant, async |addr| {
            cfg.link = fast_link(addr, 1);
            ChargerProfile::Alfen.build(cfg).read().await
        });
        outcomes.note(&r);
        if let Ok(r) = r {
            for a in r.current_a {
                assert!(
                    a.is_finite() && (-0.5..=1.5 * max_current_a).contains(&a),
                    "{r:?}"
                );
            }
            assert!(within_rating(r.power_w, rating_w), "{r:?}");
            assert!(
                r.energy_wh.is_none_or(|e| e.is_finite() && e >= 0.0),
                "{r:?}"
            );
            assert!(
                r.applied_max_a.is_finite()
                    && (0.0..=1.5 * max_current_a).contains(&r.applied_max_a),
                "{r:?}"
            );
            assert!(r.phases == 1 || r.phases == 3, "{r:?}");
        }
    });
    outcomes.assert_both("alfen");
}
