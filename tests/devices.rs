//! Device driver tests against an in-test Modbus TCP server (tokio-modbus `tcp-server`) that
//! serves register images built here: SunSpec images at different bases, with different model
//! orders and scale factors, and an Alfen NG9xx socket.
// Test and bench code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use station_controller::devices::sunspec::{
    self, decode_acc32, decode_float32, decode_int16, decode_int32, decode_string, decode_sunssf,
    decode_uint16, decode_uint32, encode_float32, encode_string, encode_u32,
};
use station_controller::devices::{
    Battery, BatteryConfig, BatteryState, ChargerConfig, ChargerProfile, DeviceError,
    InverterStatus, Link, LinkConfig, LinkState, Meter, MeterConfig, Mode3, PvConfig, PvInverter,
};
use support::modbus_plant::{
    closed_addr, fast_link, image, model, serve, start, wait_until_answering, Logged, Plant,
};

// ---------------------------------------------------------------------------------------------
// SunSpec image builders (offsets from pysunspec2 model JSON, counted from the ID register)
// ---------------------------------------------------------------------------------------------

fn common() -> Vec<u16> {
    let mut m = model(1, 66, &[]);
    let mn = encode_string("TestWorks", 16);
    m[2..18].copy_from_slice(&mn);
    m
}

fn sf(v: i16) -> u16 {
    v as u16
}

/// Model 103 with W = w_raw x 10^w_sf, WH acc32, Hz, DCW, St.
fn inverter_103(w_raw: i16, w_sf: i16, wh: u32, st: u16) -> Vec<u16> {
    let [wh_hi, wh_lo] = encode_u32(wh);
    model(
        103,
        50,
        &[
            (14, w_raw as u16),
            (15, sf(w_sf)),
            (16, 5000),
            (17, sf(-2)),
            (24, wh_hi),
            (25, wh_lo),
            (26, sf(0)),
            (31, w_raw as u16),
            (32, sf(w_sf)),
            (38, st),
        ],
    )
}

fn nameplate_120(wrtg_raw: u16, wrtg_sf: i16) -> Vec<u16> {
    model(120, 26, &[(2, 4), (3, wrtg_raw), (4, sf(wrtg_sf))])
}

fn controls_123(pct_sf: i16) -> Vec<u16> {
    model(123, 24, &[(5, 0xFFFF), (9, 0), (23, sf(pct_sf))])
}

fn der_704(wset_sf: i16) -> Vec<u16> {
    model(704, 65, &[(54, sf(0)), (55, sf(wset_sf))])
}

struct Bat {
    soc_raw: u16,
    soc_sf: i16,
    w_raw: i16,
    w_sf: i16,
}

fn battery_802(b: &Bat) -> Vec<u16> {
    let [c_hi, c_lo] = encode_u32(1234);
    model(
        802,
        62,
        &[
            (3, 500),        // WHRtg 500 x 10^2 = 50 kWh
            (4, 300),        // WChaRteMax 300 x 10^2 = 30 kW
            (5, 250),        // WDisChaRteMax 25 kW
            (7, 0xFFFF),     // SoCMax not implemented
            (8, 50),         // SoCMin raw 50, scaled by SoC_SF
            (11, b.soc_raw), // SoC
            (13, 0xFFFF),    // SoH not implemented
            (14, c_hi),      // NCyc
            (15, c_lo),
            (22, 3),                // State connected
            (26, 0),                // Evt1
            (27, 0b100),            // over-temperature warning
            (34, 7200),             // V 720.0
            (37, 3350),             // CellVMax 3.350
            (40, 3290),             // CellVMin 3.290
            (44, (-125i16) as u16), // A -12.5
            (45, 40),               // AChaMax
            (46, 40),               // ADisChaMax
            (47, b.w_raw as u16),
            (53, sf(2)),
            (54, sf(2)),
            (56, sf(b.soc_sf)),
            (58, sf(0)),
            (59, sf(-1)),
            (60, sf(-3)),
            (61, sf(-1)),
            (62, sf(0)),
            (63, sf(b.w_sf)),
        ],
    )
}

fn f32_regs(v: f32) -> [u16; 2] {
    encode_float32(v)
}

fn float_regs(m: &mut [u16], off: usize, v: f32) {
    m[off..off + 2].copy_from_slice(&f32_regs(v));
}

// ---------------------------------------------------------------------------------------------
// SunSpec discovery and PV inverter
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn discovery_finds_models_at_base_0_and_base_50000_with_their_own_scale_factors() {
    // Unit 1: image at 0, order 1, 120, 103, 123; W = 1234 x 10^-1.
    // Unit 2: image at 50000, order 1, 123, 103(after a 704), 120; W = 52 x 10^2.
    let plant = Arc::new(Plant::default())
        .with_unit(
            1,
            0,
            &image(&[
                common(),
                nameplate_120(100, 2),
                inverter_103(1234, -1, 98765, 4),
                controls_123(0),
            ]),
        )
        .with_unit(
            2,
            50000,
            &image(&[
                common(),
                controls_123(-1),
                der_704(0),
                inverter_103(52, 2, 0, 5),
                nameplate_120(8000, 0),
            ]),
        );
    let srv = start(plant.clone()).await;

    let mut link = Link::new(fast_link(srv.addr, 1));
    let map = sunspec::discover(&mut link).await.unwrap();
    assert_eq!(map.base, 0);
    let ids: Vec<u16> = map.models.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1, 120, 103, 123]);
    assert_eq!(map.find(103).unwrap().addr, 2 + 68 + 28);

    let mut pv1 = PvInverter::new(PvConfig::new(fast_link(srv.addr, 1)));
    let r1 = pv1.read().await.unwrap();
    assert!((r1.power_w - 123.4).abs() < 1e-9, "{r1:?}");
    assert_eq!(r1.rating_w, 10_000.0);
    assert_eq!(r1.energy_wh, Some(98_765.0));
    assert_eq!(r1.status, Some(InverterStatus::Mppt));
    assert_eq!(r1.frequency_hz, Some(50.0));
    assert_eq!(r1.limit_pct, Some(100.0), "limit disabled reads as 100 %");

    let mut link2 = Link::new(fast_link(srv.addr, 2));
    let map2 = sunspec::discover(&mut link2).await.unwrap();
    assert_eq!(map2.base, 50000);
    let ids2: Vec<u16> = map2.models.iter().map(|m| m.id).collect();
    assert_eq!(ids2, vec![1, 123, 704, 103, 120]);

    let mut pv2 = PvInverter::new(PvConfig::new(fast_link(srv.addr, 2)));
    let r2 = pv2.read().await.unwrap();
    assert_eq!(r2.power_w, 5200.0);
    assert_eq!(r2.rating_w, 8000.0);
    assert_eq!(r2.status, Some(InverterStatus::Throttled));
    srv.kill().await;
}

#[tokio::test]
async fn device_without_sunspec_marker_is_reported_with_the_bases_tried() {
    let plant = Arc::new(Plant::default()).with_unit(1, 40000, &[0x1234, 0x5678]);
    let srv = start(plant).await;
    let mut link = Link::new(fast_link(srv.addr, 1));
    let err = sunspec::discover(&mut link).await.unwrap_err();
    assert_eq!(
        err,
        DeviceError::NotSunSpec {
            tried: vec![40000, 0, 50000]
        }
    );
    srv.kill().await;
}

#[tokio::test]
async fn not_implemented_markers_decode_as_missing_not_as_values() {
    let mut inv = inverter_103(700, 0, 0, 0xFFFF); // WH acc32 0 -> missing, St 0xFFFF
    inv[16] = 0xFFFF; // Hz is uint16: 0xFFFF is not implemented
    inv[31] = 0x8000; // DCW not implemented
    let plant = Arc::new(Plant::default()).with_unit(
        1,
        40000,
        &image(&[common(), nameplate_120(1000, 1), inv]),
    );
    let srv = start(plant).await;
    let mut pv = PvInverter::new(PvConfig::new(fast_link(srv.addr, 1)));
    let r = pv.read().await.unwrap();
    assert_eq!(r.power_w, 700.0);
    assert_eq!(r.energy_wh, None);
    assert_eq!(r.frequency_hz, None);
    assert_eq!(r.dc_power_w, None);
    assert_eq!(r.status, None);
    assert_eq!(r.limit_pct, None, "no control model");
    srv.kill().await;

    assert_eq!(decode_int16(0x8000), None);
    assert_eq!(decode_int16(0xFFFF), Some(-1));
    assert_eq!(decode_sunssf(0x8000), None);
    assert_eq!(decode_sunssf(sf(-2)), Some(-2));
    assert_eq!(decode_uint16(0xFFFF), None);
    assert_eq!(decode_uint32([0xFFFF, 0xFFFF]), None);
    assert_eq!(decode_acc32([0, 0]), None);
    assert_eq!(decode_acc32([0, 7]), Some(7));
    assert_eq!(decode_int32([0x8000, 0]), None);
    assert_eq!(decode_int32([0xFFFF, 0xFFFE]), Some(-2));
    assert_eq!(decode_float32([0x7FC0, 0]), None);
    assert_eq!(decode_string(&[0, 0, 0]), None);
}

#[tokio::test]
async fn pv_power_far_beyond_rating_is_bad_data_naming_w() {
    let plant = Arc::new(Plant::default()).with_unit(
        1,
        40000,
        &image(&[common(), nameplate_120(10, 3), inverter_103(16, 3, 5, 4)]),
    );
    let srv = start(plant).await;
    let mut pv = PvInverter::new(PvConfig::new(fast_link(srv.addr, 1)));
    match pv.read().await {
        Err(DeviceError::BadData { point, .. }) => assert_eq!(point, "W"),
        other => panic!("expected BadData, got {other:?}"),
    }
    srv.kill().await;
}

#[tokio::test]
async fn pv_limit_is_written_through_model_123_with_its_scale_factor() {
    let plant = Arc::new(Plant::default()).with_unit(
        1,
        40000,
        &image(&[
            common(),
            inverter_103(300, 1, 1, 5),
            controls_123(-1),
            nameplate_120(5, 3),
        ]),
    );
    let srv = start(plant.clone()).await;
    let mut pv = PvInverter::new(PvConfig::new(fast_link(srv.addr, 1)));
    let r = pv.read().await.unwrap();
    assert_eq!(r.power_w, 3000.0);
    let c123 = 40002 + 68 + 52;
    pv.configure_fallback(90).await.unwrap();
    pv.set_limit_pct(42.5).await.unwrap();
    assert_eq!(plant.reg(1, c123 + 5), 425, "WMaxLimPct raw with SF -1");
    assert_eq!(plant.reg(1, c123 + 9), 1, "WMaxLim_Ena");
    assert_eq!(plant.reg(1, c123 + 7), 90, "WMaxLimPct_RvrtTms");
    let r = pv.read().await.unwrap();
    assert_eq!(r.limit_pct, Some(42.5));
    assert!(matches!(
        pv.set_limit_pct(120.0).await,
        Err(DeviceError::InvalidRequest(_))
    ));
    srv.kill().await;
}

#[tokio::test]
async fn pv_limit_falls_back_to_model_704_when_123_is_absent() {
    let plant = Arc::new(Plant::default()).with_unit(
        1,
        0,
        &image(&[
            common(),
            der_704(0),
            nameplate_120(5, 3),
            inverter_103(-10, 0, 1, 4),
        ]),
    );
    let srv = start(plant.clone()).await;
    let mut cfg = PvConfig::new(fast_link(srv.addr, 1));
    cfg.invert = true;
    let mut pv = PvInverter::new(cfg);
    let r = pv.read().await.unwrap();
    assert_eq!(r.power_w, 10.0, "invert flips the inverter's sign");
    pv.set_limit_pct(60.0).await.unwrap();
    pv.configure_fallback(70_000).await.unwrap();
    let c704 = 2 + 68;
    assert_eq!(plant.reg(1, c704 + 14), 1, "WMaxLimPctEna");
    assert_eq!(plant.reg(1, c704 + 15), 60, "WMaxLimPct");
    assert_eq!(plant.regs(1, c704 + 18, 2), encode_u32(70_000).to_vec());
    assert_eq!(pv.read().await.unwrap().limit_pct, Some(60.0));
    srv.kill().await;
}

// ---------------------------------------------------------------------------------------------
// Battery
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn battery_reads_802_and_commands_watts_through_704() {
    let bat = Bat {
        soc_raw: 655,
        soc_sf: -1,
        w_raw: -1200,
        w_sf: 1,
    };
    let plant = Arc::new(Plant::default()).with_unit(
        1,
        40000,
        &image(&[common(), der_704(1), battery_802(&bat)]),
    );
    let srv = start(plant.clone()).await;
    let mut cfg = BatteryConfig::new(fast_link(srv.addr, 1));
    cfg.invert = true;
    let mut b = Battery::new(cfg);
    let r = b.read().await.unwrap();
    assert!((r.soc_pct - 65.5).abs() < 1e-9);
    assert_eq!(r.soh_pct, None, "SoH 0xFFFF is not implemented");
    assert_eq!(r.soc_max_pct, None);
    assert_eq!(r.soc_min_pct, Some(5.0));
    assert_eq!(r.capacity_wh, Some(50_000.0));
    assert_eq!(r.max_charge_w, Some(30_000.0));
    assert_eq!(r.max_discharge_w, Some(25_000.0));
    assert_eq!(
        r.power_w, 12_000.0,
        "inverted: device -12 kW means discharge"
    );
    assert_eq!(r.current_a, Some(12.5));
    assert_eq!(r.voltage_v, Some(720.0));
    assert!((r.cell_v_max.unwrap() - 3.35).abs() < 1e-9);
    assert_eq!(r.state, Some(BatteryState::Connected));
    assert_eq!(r.events, 0b100);
    assert_eq!(r.cycles, Some(1234));

    let c704 = 40002 + 68;
    b.configure_fallback(30).await.unwrap();
    assert_eq!(plant.regs(1, c704 + 31, 2), vec![0, 30]);
    b.set_power_w(5000.0).await.unwrap();
    // Inverted and WSet_SF = 1: 5000 W discharge is written as -500.
    assert_eq!(plant.reg(1, c704 + 22), 1, "WSetEna");
    assert_eq!(plant.reg(1, c704 + 23), 1, "WSetMod watts");
    assert_eq!(
        plant.regs(1, c704 + 24, 2),
        encode_u32((-500i32) as u32).to_vec()
    );
    assert!(matches!(
        b.set_power_w(40_000.0).await,
        Err(DeviceError::InvalidRequest(_))
    ));
    b.safe().await.unwrap();
    assert_eq!(plant.regs(1, c704 + 24, 2), vec![0, 0]);
    srv.kill().await;
}

#[tokio::test]
async fn battery_soc_of_250_pct_is_bad_data_naming_soc() {
    let bat = Bat {
        soc_raw: 250,
        soc_sf: 0,
        w_raw: 10,
        w_sf: 0,
    };
    let plant =
        Arc::new(Plant::default()).with_unit(1, 40000, &image(&[common(), battery_802(&bat)]));
    let srv = start(plant).await;
    let mut b = Battery::new(BatteryConfig::new(fast_link(srv.addr, 1)));
    match b.read().await {
        Err(DeviceError::BadData { point, reason }) => {
            assert_eq!(point, "SoC");
            assert!(reason.contains("250"), "{reason}");
        }
        other => panic!("expected BadData, got {other:?}"),
    }
    assert!(matches!(
        b.safe().await,
        Err(DeviceError::ModelMissing(704))
    ));
    srv.kill().await;
}

#[tokio::test]
async fn a_pcs_reporting_huge_limits_cannot_widen_the_power_bound_beyond_the_configured_rating() {
    // 100 kW measured on a 25 kW PCS that claims 3.2 MW charge and discharge limits.
    let bat = Bat {
        soc_raw: 50,
        soc_sf: 0,
        w_raw: 1000,
        w_sf: 2,
    };
    let mut m802 = battery_802(&bat);
    m802[4] = 32_000; // WChaRteMax x 10^2
    m802[5] = 32_000; // WDisChaRteMax x 10^2
    let plant = Arc::new(Plant::default()).with_unit(1, 40000, &image(&[common(), m802]));
    let srv = start(plant).await;
    let mut lying = BatteryConfig::new(fast_link(srv.addr, 1));
    lying.rating_w = Some(25_000.0);
    match Battery::new(lying).read().await {
        Err(DeviceError::BadData { point, reason }) => {
            assert_eq!(point, "W");
            assert!(
                reason.contains("100000") && reason.contains("25000"),
                "{reason}"
            );
        }
        other => panic!("expected BadData naming W, got {other:?}"),
    }
    // Without a configured rating the PCS's own limits are all there is to go by.
    let unrated = BatteryConfig::new(fast_link(srv.addr, 1));
    let r = Battery::new(unrated).read().await.unwrap();
    assert_eq!(r.power_w, 100_000.0);
    srv.kill().await;
}

// ---------------------------------------------------------------------------------------------
// Meter
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn meter_decodes_integer_203_and_float_213_with_import_export() {
    let [e_hi, e_lo] = encode_u32(1500);
    let [i_hi, i_lo] = encode_u32(4200);
    let m203 = model(
        203,
        105,
        &[
            (16, 4998),
            (17, sf(-2)),
            (18, (-3000i16) as u16),
            (19, (-1000i16) as u16),
            (20, (-1000i16) as u16),
            (21, 0x8000),
            (22, sf(0)),
            (38, e_hi),
            (39, e_lo),
            (46, i_hi),
            (47, i_lo),
            (54, sf(1)),
        ],
    );
    let mut m213 = model(213, 124, &[]);
    float_regs(&mut m213, 26, 50.0);
    float_regs(&mut m213, 28, 2500.5);
    float_regs(&mut m213, 30, 800.0);
    float_regs(&mut m213, 32, 900.0);
    float_regs(&mut m213, 34, 800.5);
    float_regs(&mut m213, 60, 10.0);
    float_regs(&mut m213, 68, f32::NAN);
    let plant = Arc::new(Plant::default())
        .with_unit(1, 40000, &image(&[common(), m203]))
        .with_unit(2, 0, &image(&[common(), m213]));
    let srv = start(plant.clone()).await;

    let mut cfg = MeterConfig::new(fast_link(srv.addr, 1));
    cfg.invert = true;
    let mut m = Meter::new(cfg);
    let r = m.read().await.unwrap();
    assert_eq!(r.power_w, 3000.0);
    assert_eq!(r.phase_w, [Some(1000.0), Some(1000.0), None]);
    assert!((r.frequency_hz.unwrap() - 49.98).abs() < 1e-9);
    assert_eq!(
        r.import_wh,
        Some(15_000.0),
        "inverted: device export is our import"
    );
    assert_eq!(r.export_wh, Some(42_000.0));

    let mut m2 = Meter::new(MeterConfig::new(fast_link(srv.addr, 2)));
    let r2 = m2.read().await.unwrap();
    assert_eq!(r2.power_w, 2500.5);
    assert_eq!(r2.phase_w, [Some(800.0), Some(900.0), Some(800.5)]);
    assert_eq!(r2.export_wh, Some(10.0));
    assert_eq!(r2.import_wh, None, "NaN is not implemented");
    // Model 213 is 126 registers: read as 125 + 1, never more than 125 at once.
    let reads: Vec<(u8, u16, u16)> = plant
        .log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| match l {
            Logged::Read(u, a, n) => Some((*u, *a, *n)),
            _ => None,
        })
        .collect();
    assert!(reads.iter().all(|(_, _, n)| *n <= 125), "{reads:?}");
    assert!(
        reads.contains(&(2, 70, 125)) && reads.contains(&(2, 195, 1)),
        "{reads:?}"
    );
    srv.kill().await;
}

#[tokio::test]
async fn meter_discovers_again_when_the_model_chain_moves() {
    let m203 = |w: i16| model(203, 105, &[(18, w as u16), (22, sf(0))]);
    let plant = Arc::new(Plant::default()).with_unit(1, 40000, &image(&[common(), m203(100)]));
    let srv = start(plant.clone()).await;
    let mut m = Meter::new(MeterConfig::new(fast_link(srv.addr, 1)));
    assert_eq!(m.read().await.unwrap().power_w, 100.0);
    // Firmware update: a nameplate model now sits where the meter model was.
    plant.set(
        1,
        40000,
        &image(&[common(), nameplate_120(1, 0), m203(-250)]),
    );
    assert_eq!(m.read().await.unwrap_err(), DeviceError::ModelMissing(203));
    assert_eq!(m.read().await.unwrap().power_w, -250.0);
    srv.kill().await;
}

// ---------------------------------------------------------------------------------------------
// Link behaviour
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn exception_reply_is_an_exception_with_its_code_and_keeps_the_link_online() {
    let plant = Arc::new(Plant::default()).with_unit(1, 100, &[1, 2, 3]);
    let srv = start(plant.clone()).await;
    let mut link = Link::new(fast_link(srv.addr, 1));
    assert_eq!(link.read_holding(100, 3).await.unwrap(), vec![1, 2, 3]);
    let err = link.read_holding(200, 2).await.unwrap_err();
    assert_eq!(
        err,
        DeviceError::Exception {
            function: 0x03,
            address: 200,
            code: 0x02
        }
    );
    assert!(!err.is_link_failure());
    let err = link.write_multiple(300, &[5]).await.unwrap_err();
    assert_eq!(
        err,
        DeviceError::Exception {
            function: 0x10,
            address: 300,
            code: 0x02
        }
    );
    // Writes longer than 123 registers are refused before anything is sent.
    assert!(matches!(
        link.write_multiple(100, &[0; 124]).await,
        Err(DeviceError::InvalidRequest(_))
    ));
    assert_eq!(plant.writes().len(), 1);
    assert_eq!(link.state(), LinkState::Online);
    assert!(
        link.is_connected(),
        "an exception does not drop the connection"
    );
    assert_eq!(link.stats().connects, 1);
    assert_eq!(link.stats().exceptions, 2);

    // Unknown unit id behind the server: gateway exception 0x0B.
    let mut other = Link::new(fast_link(srv.addr, 9));
    match other.read_holding(100, 1).await {
        Err(DeviceError::Exception { code, .. }) => assert_eq!(code, 0x0B),
        r => panic!("expected exception, got {r:?}"),
    }
    srv.kill().await;
}

#[tokio::test]
async fn silent_server_times_out_then_the_link_reconnects() {
    let plant = Arc::new(Plant::default()).with_unit(1, 0, &[11, 22]);
    let srv = start(plant.clone()).await;
    let cfg =
        fast_link(srv.addr, 1).with_backoff(Duration::from_millis(100), Duration::from_millis(400));
    let mut link = Link::new(cfg);
    assert_eq!(link.read_holding(0, 2).await.unwrap(), vec![11, 22]);

    plant.mute.store(true, Ordering::SeqCst);
    let err = link.read_holding(0, 2).await.unwrap_err();
    assert_eq!(
        err,
        DeviceError::Timeout {
            op: "read",
            after_ms: 200
        }
    );
    assert!(!link.is_connected(), "timeout drops the connection");
    assert_eq!(link.state(), LinkState::Degraded);
    // Within the back-off no reconnect is tried.
    assert_eq!(
        link.read_holding(0, 2).await.unwrap_err(),
        DeviceError::Disconnected
    );

    plant.mute.store(false, Ordering::SeqCst);
    plant.set(1, 0, &[33, 44]);
    let mut answer = None;
    for _ in 0..20 {
        if let Some(at) = link.next_attempt() {
            tokio::time::sleep_until(at).await;
        }
        if let Ok(v) = link.read_holding(0, 2).await {
            answer = Some(v);
            break;
        }
    }
    assert_eq!(
        answer,
        Some(vec![33, 44]),
        "fresh connection, no stale reply"
    );
    assert_eq!(link.stats().connects, 2);
    assert_eq!(link.stats().timeouts, 1);
    assert_eq!(link.state(), LinkState::Online);
    srv.kill().await;
}

#[tokio::test]
async fn killed_server_takes_the_link_offline_and_a_restart_brings_it_back_with_backoff() {
    let plant = Arc::new(Plant::default()).with_unit(1, 0, &[7]);
    let srv = start(plant.clone()).await;
    let addr = srv.addr;
    let mut link = Link::new(fast_link(addr, 1));
    assert_eq!(link.read_holding(0, 1).await.unwrap(), vec![7]);
    assert_eq!(link.state(), LinkState::Online);
    let good_at = link.last_good().unwrap();
    srv.kill().await;

    // Retry at the pace the back-off allows until the link gives up.
    let mut delays = Vec::new();
    for _ in 0..10 {
        let before = tokio::time::Instant::now();
        let r = link.read_holding(0, 1).await;
        assert!(r.as_ref().is_err_and(|e| e.is_link_failure()), "{r:?}");
        if let Some(at) = link.next_attempt() {
            delays.push(at.saturating_duration_since(before));
        }
        if link.state() == LinkState::Offline {
            break;
        }
        if let Some(at) = link.next_attempt() {
            tokio::time::sleep_until(at).await;
        }
    }
    assert_eq!(link.state(), LinkState::Offline);
    assert!(
        delays.len() >= 2,
        "gave up before backing off twice: {delays:?}"
    );
    assert!(delays.windows(2).all(|w| w[1] >= w[0]), "{delays:?}");
    // Hammering while offline does not turn into a reconnect storm.
    let failures = link.stats().connect_failures;
    for _ in 0..100 {
        let _ = link.read_holding(0, 1).await;
    }
    assert!(link.stats().connect_failures <= failures + 1);
    assert!(link.stats().skipped_backoff >= 99);

    let srv = serve(plant, addr).await;
    let mut back = false;
    for _ in 0..20 {
        if let Some(at) = link.next_attempt() {
            tokio::time::sleep_until(at).await;
        }
        if link.read_holding(0, 1).await.is_ok() {
            back = true;
            break;
        }
    }
    assert!(back, "link did not come back");
    assert_eq!(link.state(), LinkState::Online);
    assert_eq!(link.stats().connects, 2);
    assert!(link.last_good().unwrap() > good_at);
    srv.kill().await;
}

#[test]
fn default_link_config_backs_off_from_half_a_second_to_thirty() {
    let cfg = LinkConfig::new("10.0.0.1", 502, 1);
    assert_eq!(cfg.unit_id, 1);
    assert_eq!(cfg.backoff_min, Duration::from_millis(500));
    assert_eq!(cfg.backoff_max, Duration::from_secs(30));
}

#[tokio::test]
async fn reconnect_backoff_doubles_and_is_capped() {
    let addr = closed_addr();
    let cfg = LinkConfig::new("127.0.0.1", addr.port(), 1)
        .with_timeout(Duration::from_millis(200))
        .with_backoff(Duration::from_millis(20), Duration::from_millis(160));
    let mut link = Link::new(cfg);
    let mut delays_ms = Vec::new();
    for _ in 0..6 {
        let r = link.read_holding(0, 1).await;
        let after = tokio::time::Instant::now();
        assert!(r.unwrap_err().is_link_failure());
        let at = link.next_attempt().unwrap();
        delays_ms.push(at.saturating_duration_since(after).as_millis());
        // A call before the back-off elapsed does not try to connect.
        let failures = link.stats().connect_failures;
        if tokio::time::Instant::now() < at {
            assert_eq!(
                link.read_holding(0, 1).await.unwrap_err(),
                DeviceError::Disconnected
            );
            assert_eq!(link.stats().connect_failures, failures);
        }
        tokio::time::sleep_until(at).await;
    }
    // Measured after the failed call returned, so each delay is a little under nominal; the
    // halfway bound still tells a doubling sequence from a constant one.
    let nominal = [20u128, 40, 80, 160, 160, 160];
    for (d, n) in delays_ms.iter().zip(nominal) {
        assert!(*d <= n && 2 * *d >= n, "{delays_ms:?}");
    }
    assert_eq!(link.state(), LinkState::Offline);
    assert_eq!(link.stats().connect_failures, 6);
    assert_eq!(link.stats().connects, 0);
}

// ---------------------------------------------------------------------------------------------
// Alfen charger
// ---------------------------------------------------------------------------------------------

fn alfen_socket(state: &str) -> (Vec<u16>, Vec<u16>) {
    // 300..=379 measurements, 1200..=1219 status.
    let mut meas = vec![0u16; 80];
    let at = |reg: usize| reg - 300;
    for (i, v) in [231.0f32, 229.5, 230.2].iter().enumerate() {
        float_regs(&mut meas, at(306 + 2 * i), *v);
    }
    for (i, v) in [15.9f32, 16.0, 15.8].iter().enumerate() {
        float_regs(&mut meas, at(320 + 2 * i), *v);
    }
    float_regs(&mut meas, at(344), 11_000.0);
    let e = 123_456.5f64.to_bits();
    for k in 0..4 {
        meas[at(374) + k] = (e >> (48 - 16 * k)) as u16;
    }
    let mut status = vec![0u16; 20];
    status[1..6].copy_from_slice(&encode_string(state, 5));
    float_regs(&mut status, 6, 16.0);
    status[8..10].copy_from_slice(&encode_u32(45));
    float_regs(&mut status, 10, 16.0);
    float_regs(&mut status, 12, 6.0);
    status[14] = 1;
    status[15] = 3;
    (meas, status)
}

#[tokio::test]
async fn alfen_state_c2_decodes_and_the_setpoint_lands_at_1210_as_float32() {
    let (meas, status) = alfen_socket("C2");
    let plant = Arc::new(Plant::default())
        .with_unit(1, 300, &meas)
        .with_unit(1, 1200, &status)
        .with_unit(200, 1100, &[0; 10]);
    let srv = start(plant.clone()).await;
    let mut cfg = ChargerConfig::new(fast_link(srv.addr, 1));
    cfg.max_current_a = 32.0;
    let mut ch = ChargerProfile::Alfen.build(cfg);
    let r = ch.read().await.unwrap();
    assert_eq!(r.state, Mode3::C2);
    assert!(r.state.is_charging());
    assert_eq!(r.current_a, [15.9f32 as f64, 16.0, 15.8f32 as f64]);
    assert_eq!(r.power_w, 11_000.0);
    assert_eq!(r.energy_wh, Some(123_456.5));
    assert_eq!(r.applied_max_a, 16.0);
    assert_eq!(r.remaining_validity_s, 45);
    assert_eq!(r.phases, 3);

    ch.configure_fallback(8.0).await.unwrap();
    ch.set_current(13.5).await.unwrap();
    ch.set_current(13.5).await.unwrap();
    assert_eq!(plant.regs(1, 1210, 2), f32_regs(13.5).to_vec());
    assert_eq!(plant.regs(1, 1212, 2), f32_regs(8.0).to_vec());
    let writes = plant.writes();
    assert_eq!(
        writes,
        vec![
            Logged::WriteMultiple(1, 1212, f32_regs(8.0).to_vec()),
            Logged::WriteMultiple(1, 1210, f32_regs(13.5).to_vec()),
            Logged::WriteMultiple(1, 1210, f32_regs(13.5).to_vec()),
        ],
        "FC16 every cycle, the setpoint is refreshed even when unchanged"
    );
    assert!(matches!(
        ch.set_current(40.0).await,
        Err(DeviceError::InvalidRequest(_))
    ));
    ch.safe().await.unwrap();
    assert_eq!(plant.regs(1, 1210, 2), f32_regs(8.0).to_vec());
    assert_eq!(ch.link().state(), LinkState::Online);
    srv.kill().await;
}

#[tokio::test]
async fn alfen_read_only_safe_current_is_accepted_only_when_it_already_matches() {
    let (meas, status) = alfen_socket("B2");
    let plant = Arc::new(Plant::default())
        .with_unit(1, 300, &meas)
        .with_unit(1, 1200, &status);
    plant.read_only.lock().unwrap().push((1, 1212, 1213));
    let srv = start(plant.clone()).await;
    let mut ch = ChargerProfile::Alfen.build(ChargerConfig::new(fast_link(srv.addr, 1)));
    assert_eq!(ch.read().await.unwrap().state, Mode3::B2);
    match ch.configure_fallback(10.0).await {
        Err(DeviceError::Exception {
            function,
            address,
            code,
        }) => {
            assert_eq!((function, address, code), (0x10, 1212, 0x02));
        }
        r => panic!("expected the device's exception, got {r:?}"),
    }
    ch.configure_fallback(6.0).await.unwrap();
    ch.safe().await.unwrap();
    assert_eq!(plant.regs(1, 1210, 2), f32_regs(6.0).to_vec());
    assert_eq!(plant.regs(1, 1212, 2), f32_regs(6.0).to_vec());
    srv.kill().await;
}

#[tokio::test]
async fn alfen_unknown_state_text_is_bad_data() {
    let (meas, status) = alfen_socket("Z9");
    let plant = Arc::new(Plant::default())
        .with_unit(1, 300, &meas)
        .with_unit(1, 1200, &status);
    let srv = start(plant).await;
    let mut ch = ChargerProfile::Alfen.build(ChargerConfig::new(fast_link(srv.addr, 1)));
    match ch.read().await {
        Err(DeviceError::BadData { point, .. }) => assert_eq!(point, "mode3 state"),
        r => panic!("expected BadData, got {r:?}"),
    }
    srv.kill().await;
}

#[tokio::test]
async fn driver_futures_can_be_spawned_and_report_an_unreachable_device() {
    let addr = closed_addr();
    let link = fast_link(addr, 1);
    let mut pv = PvInverter::new(PvConfig::new(link.clone()));
    let mut bat = Battery::new(BatteryConfig::new(link.clone()));
    let mut meter = Meter::new(MeterConfig::new(link.clone()));
    let mut ch = ChargerProfile::Alfen.build(ChargerConfig::new(link));
    let errs = tokio::spawn(async move {
        vec![
            pv.read().await.unwrap_err(),
            bat.read().await.unwrap_err(),
            meter.read().await.unwrap_err(),
            ch.read().await.unwrap_err(),
        ]
    })
    .await
    .unwrap();
    assert!(errs.iter().all(DeviceError::is_link_failure), "{errs:?}");
}

#[test]
fn mode3_states_parse_from_their_text() {
    for (s, m) in [
        ("A", Mode3::A),
        ("B1", Mode3::B1),
        ("B2", Mode3::B2),
        ("C1", Mode3::C1),
        ("C2", Mode3::C2),
        ("D1", Mode3::D1),
        ("D2", Mode3::D2),
        ("E", Mode3::E),
        ("F", Mode3::F),
    ] {
        assert_eq!(Mode3::parse(s), Some(m));
        assert_eq!(m.as_str(), s);
        assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{s}\""));
    }
    assert_eq!(Mode3::parse("C3"), None);
    assert!(Mode3::B2.vehicle_connected() && !Mode3::B2.is_charging());
}

// ---------------------------------------------------------------------------------------------
// Property tests of the codecs
// ---------------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn float32_round_trips_high_word_first(v in any::<f32>().prop_filter("not NaN", |v| !v.is_nan())) {
        let w = encode_float32(v);
        prop_assert_eq!(decode_float32(w).map(f32::to_bits), Some(v.to_bits()));
        prop_assert_eq!(w[0], (v.to_bits() >> 16) as u16);
    }

    #[test]
    fn strings_round_trip_through_registers(s in "[A-Za-z0-9]{1,10}") {
        prop_assert_eq!(decode_string(&encode_string(&s, 5)), Some(s));
    }

    #[test]
    fn scaling_then_unscaling_recovers_the_raw_value(raw in -32767i32..=32767, sf in -4i16..=4) {
        let v = sunspec::scale(f64::from(raw), sf);
        prop_assert_eq!(sunspec::unscale(v, sf), f64::from(raw));
    }

    #[test]
    fn int32_and_uint32_decode_high_word_first(v in any::<u32>()) {
        let w = encode_u32(v);
        if v != 0xFFFF_FFFF { prop_assert_eq!(decode_uint32(w), Some(v)); }
        if v != 0x8000_0000 { prop_assert_eq!(decode_int32(w), Some(v as i32)); }
    }
}

// ---------------------------------------------------------------------------------------------
// Third-party peer: pymodbus serving a SunSpec inverter (needs Python with pymodbus 3.16)
// ---------------------------------------------------------------------------------------------

/// Run with `cargo test -p station-controller --test devices -- --ignored`; the interpreter is
/// `$STATION_PYTHON` (set by `.ci/run`) or the project's `.venv/bin/python`.
#[tokio::test]
#[ignore = "needs Python with pymodbus installed"]
async fn pv_driver_reads_and_limits_a_pymodbus_sunspec_inverter() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let python = std::env::var("STATION_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_string());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/peers/pymodbus_sunspec_inverter.py"
    );
    let mut child = tokio::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let port: u16 = line.strip_prefix("PORT ").unwrap().parse().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_until_answering(addr).await;

    let link_cfg = LinkConfig::new("127.0.0.1", port, 1).with_timeout(Duration::from_secs(2));
    let mut link = Link::new(link_cfg.clone());
    let map = sunspec::discover(&mut link).await.unwrap();
    assert_eq!(map.base, 50000);
    let ids: Vec<u16> = map.models.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1, 123, 113, 120]);

    let mut pv = PvInverter::new(PvConfig::new(link_cfg));
    let r = pv.read().await.unwrap();
    assert_eq!(r.power_w, 4321.5);
    assert_eq!(r.energy_wh, Some(765_432.0));
    assert_eq!(r.rating_w, 6000.0);
    assert_eq!(r.status, Some(InverterStatus::Mppt));
    assert_eq!(r.limit_pct, Some(100.0));

    pv.configure_fallback(120).await.unwrap();
    pv.set_limit_pct(37.25).await.unwrap();
    let c123 = map.find(123).unwrap().addr;
    let regs = link.read_holding(c123 + 5, 5).await.unwrap();
    assert_eq!(regs[0], 3725, "WMaxLimPct with SF -2");
    assert_eq!(regs[2], 120, "WMaxLimPct_RvrtTms");
    assert_eq!(regs[4], 1, "WMaxLim_Ena");
    assert_eq!(pv.read().await.unwrap().limit_pct, Some(37.25));

    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
}
