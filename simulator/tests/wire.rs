//! The Modbus devices of the simulator, exercised over loopback TCP with tokio-modbus as the
//! client and a fake station behind the servers.

// Test and bench code may panic on a broken invariant and time itself with the wall clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use station_sim::view::{Command, Station, WireFaults};
use station_sim::wire::fake::{sample_view, FakeStation};
use station_sim::wire::{serve_device, DeviceSpec};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::time::timeout;
use tokio_modbus::client::Context;
use tokio_modbus::prelude::*;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(5);

struct Served {
    addr: SocketAddr,
    station: Arc<FakeStation>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn serve(id: &str) -> Served {
    let station = Arc::new(FakeStation::new(sample_view(2)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let spec = DeviceSpec::from_id(id).unwrap();
    let dyn_station: Arc<dyn Station> = station.clone();
    let task = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            serve_device(listener, spec, dyn_station, cancel)
                .await
                .unwrap()
        }
    });
    Served {
        addr,
        station,
        cancel,
        task,
    }
}

/// Connects with `unit` and polls until the server answers a request (any answer).
async fn connect(addr: SocketAddr, unit: u8) -> Context {
    let deadline = Instant::now() + T;
    loop {
        if let Ok(Ok(mut ctx)) = timeout(T, tcp::connect_slave(addr, Slave(unit))).await {
            if let Ok(Ok(_)) = timeout(T, ctx.read_holding_registers(0, 1)).await {
                return ctx;
            }
        }
        assert!(Instant::now() < deadline, "server at {addr} never answered");
        tokio::task::yield_now().await;
    }
}

async fn read(ctx: &mut Context, addr: u16, count: u16) -> Result<Vec<u16>, ExceptionCode> {
    timeout(T, ctx.read_holding_registers(addr, count))
        .await
        .expect("reply in time")
        .expect("transport ok")
}

async fn write(ctx: &mut Context, addr: u16, words: &[u16]) -> Result<(), ExceptionCode> {
    timeout(T, ctx.write_multiple_registers(addr, words))
        .await
        .expect("reply in time")
        .expect("transport ok")
}

/// Walks the SunSpec chain: model id -> (address of the ID register, model registers after L).
async fn walk(ctx: &mut Context) -> BTreeMap<u16, (u16, Vec<u16>)> {
    assert_eq!(read(ctx, 40000, 2).await.unwrap(), vec![0x5375, 0x6E53]);
    let mut models = BTreeMap::new();
    let mut addr = 40002u16;
    loop {
        let hdr = read(ctx, addr, 2).await.unwrap();
        if hdr[0] == 0xFFFF {
            assert_eq!(hdr[1], 0, "end marker length");
            break;
        }
        let len = hdr[1];
        let mut body = Vec::new();
        while body.len() < usize::from(len) {
            let at = addr + 2 + body.len() as u16;
            let n = (len - body.len() as u16).min(125);
            body.extend(read(ctx, at, n).await.unwrap());
        }
        models.insert(hdr[0], (addr, body));
        addr += 2 + len;
    }
    models
}

fn scaled(raw: i16, sf: u16) -> f64 {
    f64::from(raw) * 10f64.powi(i32::from(sf as i16))
}

/// Value of the point at `offset` (counted from the model ID register) of a model body.
fn at(body: &[u16], offset: usize) -> u16 {
    body[offset - 2]
}

fn u32_at(body: &[u16], offset: usize) -> u32 {
    (u32::from(at(body, offset)) << 16) | u32::from(at(body, offset + 1))
}

fn text(words: &[u16]) -> String {
    words
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .take_while(|b| *b != 0)
        .map(char::from)
        .collect()
}

fn f32_of(words: &[u16]) -> f32 {
    f32::from_bits((u32::from(words[0]) << 16) | u32::from(words[1]))
}

#[tokio::test]
async fn pv_inverter_chain_has_models_1_103_120_123_and_scaled_values_decode() {
    let s = serve("pv").await;
    let mut ctx = connect(s.addr, 1).await;
    let models = walk(&mut ctx).await;
    assert_eq!(
        models.keys().copied().collect::<Vec<_>>(),
        vec![1, 103, 120, 123]
    );
    let view = s.station.view();

    let (_, common) = &models[&1];
    assert_eq!(common.len(), 66);
    assert_eq!(text(&common[0..16]), "station-sim");
    assert_eq!(text(&common[16..32]), "PV inverter");
    assert_eq!(text(&common[48..64]), "pv");
    assert_eq!(at(common, 66), 1);

    let (_, inv) = &models[&103];
    let w = scaled(at(inv, 14) as i16, at(inv, 15));
    assert!((w - view.pv.power_w).abs() <= 10.0, "W {w}");
    let hz = scaled(at(inv, 16) as i16, at(inv, 17));
    assert!((hz - 50.02).abs() < 1e-9);
    assert_eq!(f64::from(u32_at(inv, 24)), view.pv.energy_wh);
    assert_eq!(at(inv, 38), 5, "St throttled");
    assert_eq!(at(inv, 18), 0x8000, "VA not implemented");
    assert_eq!(at(inv, 19), 0x8000, "VA_SF not implemented");
    let temp = scaled(at(inv, 33) as i16, at(inv, 37));
    assert!((temp - 41.3).abs() < 1e-9);

    let (_, plate) = &models[&120];
    assert_eq!(at(plate, 2), 4);
    assert_eq!(scaled(at(plate, 3) as i16, at(plate, 4)), 135_000.0);

    let (_, ctl) = &models[&123];
    assert_eq!(at(ctl, 5), 80);
    assert_eq!(at(ctl, 23), 0);
    assert_eq!(at(ctl, 7), 600);
    assert_eq!(at(ctl, 9), 1);
}

#[tokio::test]
async fn battery_chain_has_models_1_802_704_803_804_and_scaled_values_decode() {
    let s = serve("battery").await;
    let mut ctx = connect(s.addr, 1).await;
    let models = walk(&mut ctx).await;
    assert_eq!(
        models.keys().copied().collect::<Vec<_>>(),
        vec![1, 704, 802, 803, 804]
    );
    let b = s.station.view().battery.clone();
    let (_, m) = &models[&802];
    assert_eq!(m.len(), 62);
    let soc = scaled(at(m, 11) as i16, at(m, 56));
    assert!((soc - b.soc_pct).abs() < 1e-9);
    let soh = scaled(at(m, 13) as i16, at(m, 58));
    assert!((soh - b.soh_pct).abs() < 1e-9);
    let wh = f64::from(at(m, 3)) * 10f64.powi(i32::from(at(m, 53) as i16));
    assert_eq!(wh, b.nameplate_wh);
    let w = scaled(at(m, 47) as i16, at(m, 63));
    assert!((w - b.power_w).abs() <= 10.0, "W {w}");
    let v = f64::from(at(m, 34)) * 10f64.powi(i32::from(at(m, 59) as i16));
    assert!((v - b.voltage_v).abs() < 1e-9);
    let cell = f64::from(at(m, 37)) * 10f64.powi(i32::from(at(m, 60) as i16));
    assert!((cell - b.cell_v_max).abs() < 1e-9);
    assert_eq!(at(m, 22), 3, "State connected");
    assert_eq!(u32_at(m, 26), b.alarms);
    assert_eq!(u32_at(m, 14), b.cycles);
    assert_eq!(at(m, 2), 0xFFFF, "AHRtg not implemented");
    assert_eq!(at(m, 52), 0x8000, "AHRtg_SF not implemented");

    let (_, c) = &models[&704];
    assert_eq!(c.len(), 65);
    assert_eq!(at(c, 22), 1);
    assert_eq!(at(c, 23), 1);
    assert_eq!(u32_at(c, 24) as i32, -45_000);
    assert_eq!(at(c, 55), 0);
    assert_eq!(u32_at(c, 31), 900);
    assert_eq!(u32_at(c, 4), 0xFFFF_FFFF, "PFWInjRvrtTms not implemented");

    // 803: fixed block of 26 plus one string group of 32; offsets from the model JSON.
    let (_, bank) = &models[&803];
    assert_eq!(bank.len(), 26 + 32);
    assert_eq!((at(bank, 2), at(bank, 3)), (1, 1), "NStr, NStrCon");
    let tmp_sf = at(bank, 23);
    let t_max = scaled(at(bank, 4) as i16, tmp_sf);
    assert!(
        (t_max - b.module_temp_max_c).abs() < 0.05,
        "ModTmpMax {t_max}"
    );
    assert_eq!(at(bank, 6), b.module_temp_max_module);
    let t_min = scaled(at(bank, 7) as i16, tmp_sf);
    assert!(
        (t_min - b.module_temp_min_c).abs() < 0.05,
        "ModTmpMin {t_min}"
    );
    assert_eq!(at(bank, 9), b.module_temp_min_module);
    // The string group starts at offset 28: StrNMod, StrSt (2), StrConFail, StrSoC, StrSoH,
    // StrA, then StrCellVMax at +7.
    assert_eq!(at(bank, 28), b.modules);
    let cell_sf = at(bank, 22);
    let v_max = scaled(at(bank, 35) as i16, cell_sf);
    assert!((v_max - b.cell_v_max).abs() < 5e-4, "StrCellVMax {v_max}");
    assert_eq!(at(bank, 36), b.cell_v_max_module);
    let v_min = scaled(at(bank, 37) as i16, cell_sf);
    assert!((v_min - b.cell_v_min).abs() < 5e-4, "StrCellVMin {v_min}");
    assert_eq!(at(bank, 38), b.cell_v_min_module);

    // 804: fixed block of 46 plus one module group of 16 per module.
    let (_, st) = &models[&804];
    assert_eq!(st.len(), 46 + 16 * usize::from(b.modules));
    assert_eq!((at(st, 2), at(st, 3)), (1, b.modules), "Idx, NMod");
    let cell_sf = at(st, 43);
    let v_min = scaled(at(st, 17) as i16, cell_sf);
    assert!((v_min - b.cell_v_min).abs() < 5e-4, "CellVMin {v_min}");
    assert_eq!(at(st, 18), b.cell_v_min_module);
    let t_max = scaled(at(st, 20) as i16, at(st, 44));
    assert!(
        (t_max - b.module_temp_max_c).abs() < 0.05,
        "ModTmpMax {t_max}"
    );
    assert_eq!(at(st, 21), b.module_temp_max_module);
    // The module holding the lowest cell shows it as its ModCellVMin (group +5).
    let group = 48 + 16 * (usize::from(b.cell_v_min_module) - 1);
    assert_eq!(at(st, group), b.cells_per_module, "ModNCell");
    let m_min = scaled(at(st, group + 5) as i16, cell_sf);
    assert!((m_min - b.cell_v_min).abs() < 5e-4, "ModCellVMin {m_min}");
}

#[tokio::test]
async fn meters_chain_has_models_1_203_with_energy_accumulators() {
    for id in ["grid-meter", "building-meter"] {
        let s = serve(id).await;
        let mut ctx = connect(s.addr, 1).await;
        let models = walk(&mut ctx).await;
        assert_eq!(models.keys().copied().collect::<Vec<_>>(), vec![1, 203]);
        let view = s.station.view();
        let meter = if id == "grid-meter" {
            &view.grid_meter
        } else {
            &view.building_meter
        };
        let (_, m) = &models[&203];
        assert_eq!(m.len(), 105);
        let w = scaled(at(m, 18) as i16, at(m, 22));
        assert!((w - meter.power_w).abs() <= 10.0, "{id} W {w}");
        assert_eq!(f64::from(u32_at(m, 46)), meter.import_wh);
        assert_eq!(f64::from(u32_at(m, 38)), meter.export_wh);
        assert_eq!(at(m, 23), 0x8000, "VA not implemented");
    }
}

#[tokio::test]
async fn pv_limit_write_arrives_as_a_command_and_150_pct_is_refused() {
    let s = serve("pv").await;
    let mut ctx = connect(s.addr, 1).await;
    let models = walk(&mut ctx).await;
    let base = models[&123].0;
    timeout(T, ctx.write_single_register(base + 5, 55))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(s.station.commands(), vec![Command::PvLimitPct(55.0)]);
    assert_eq!(
        write(&mut ctx, base + 5, &[150]).await,
        Err(ExceptionCode::IllegalDataValue)
    );
    // WMaxLimPct, WinTms, RvrtTms in one request: WinTms is read-only, nothing changes.
    assert_eq!(
        write(&mut ctx, base + 5, &[20, 0, 30]).await,
        Err(ExceptionCode::IllegalDataAddress)
    );
    write(&mut ctx, base + 9, &[0]).await.unwrap();
    assert_eq!(
        s.station.commands(),
        vec![Command::PvLimitPct(55.0), Command::PvLimitEnabled(false)]
    );
}

#[tokio::test]
async fn battery_watt_setpoint_is_written_through_model_704_within_the_pcs_rating() {
    let s = serve("battery").await;
    let mut ctx = connect(s.addr, 1).await;
    let base = walk(&mut ctx).await[&704].0;
    let w = (-80_000i32) as u32;
    write(&mut ctx, base + 24, &[(w >> 16) as u16, w as u16])
        .await
        .unwrap();
    let too_much = 120_001u32;
    assert_eq!(
        write(
            &mut ctx,
            base + 24,
            &[(too_much >> 16) as u16, too_much as u16]
        )
        .await,
        Err(ExceptionCode::IllegalDataValue)
    );
    assert_eq!(
        write(&mut ctx, base + 25, &[0]).await,
        Err(ExceptionCode::IllegalDataValue),
        "half of the int32 WSet"
    );
    write(&mut ctx, base + 22, &[1]).await.unwrap();
    assert_eq!(
        s.station.commands(),
        vec![
            Command::BatterySetpointW(-80_000.0),
            Command::BatterySetpointEnabled(true)
        ]
    );
}

#[tokio::test]
async fn reads_outside_the_map_bad_counts_and_read_only_writes_are_refused() {
    let s = serve("pv").await;
    let mut ctx = connect(s.addr, 1).await;
    assert_eq!(
        read(&mut ctx, 0, 2).await,
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        read(&mut ctx, 39999, 2).await,
        Err(ExceptionCode::IllegalDataAddress)
    );
    let end = 40000 + 2 + 68 + 52 + 28 + 26;
    assert_eq!(read(&mut ctx, end, 2).await.unwrap(), vec![0xFFFF, 0]);
    assert_eq!(
        read(&mut ctx, end, 3).await,
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        read(&mut ctx, 40000, 0).await,
        Err(ExceptionCode::IllegalDataValue)
    );
    assert_eq!(
        read(&mut ctx, 40000, 126).await,
        Err(ExceptionCode::IllegalDataValue)
    );
    assert_eq!(read(&mut ctx, 40000, 125).await.map(|w| w.len()), Ok(125));
    // 103 W is read-only.
    assert_eq!(
        write(&mut ctx, 40002 + 68 + 14, &[1]).await,
        Err(ExceptionCode::IllegalDataAddress)
    );
    // A write of 0 registers; more than 123 do not fit a Modbus PDU (the client refuses
    // to send them and the server's codec closes the connection on such a frame).
    assert_eq!(
        write(&mut ctx, 40000, &[]).await,
        Err(ExceptionCode::IllegalDataValue)
    );
    let coils = timeout(T, ctx.read_coils(0, 8)).await.unwrap().unwrap();
    assert_eq!(coils, Err(ExceptionCode::IllegalFunction));
    let input = timeout(T, ctx.read_input_registers(40000, 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(input, Ok(vec![0x5375, 0x6E53]));
    assert!(s.station.commands().is_empty());
}

#[tokio::test]
async fn unknown_unit_ids_get_gateway_target_failed() {
    let s = serve("pv").await;
    let mut ctx = connect(s.addr, 1).await;
    for unit in [0u8, 2, 200, 255] {
        ctx.set_slave(Slave(unit));
        assert_eq!(
            read(&mut ctx, 40000, 2).await,
            Err(ExceptionCode::GatewayTargetDevice),
            "unit {unit}"
        );
    }
    let c = serve("charger-1").await;
    let mut ctx = connect(c.addr, 1).await;
    ctx.set_slave(Slave(7));
    assert_eq!(
        read(&mut ctx, 1201, 5).await,
        Err(ExceptionCode::GatewayTargetDevice)
    );
}

#[tokio::test]
async fn charger_shows_mode3_state_c2_and_float_measurements() {
    let s = serve("charger-1").await;
    let mut ctx = connect(s.addr, 1).await;
    let state = read(&mut ctx, 1201, 5).await.unwrap();
    assert_eq!(state, vec![0x4332, 0, 0, 0, 0]);
    assert_eq!(text(&state), "C2");
    let meter = read(&mut ctx, 306, 40).await.unwrap();
    assert_eq!(f32_of(&meter[0..2]), 230.1);
    assert_eq!(f32_of(&meter[14..16]), 15.9);
    assert_eq!(f32_of(&meter[38..40]), 11_020.0);
    assert!(
        f32_of(&meter[6..8]).is_nan(),
        "line-line voltage not available"
    );
    // OpenEMS-style block reads of the whole socket map.
    assert_eq!(read(&mut ctx, 300, 62).await.map(|w| w.len()), Ok(62));
    assert_eq!(read(&mut ctx, 362, 64).await.map(|w| w.len()), Ok(64));
    assert_eq!(read(&mut ctx, 1200, 16).await.map(|w| w[0]), Ok(1));
    assert_eq!(
        read(&mut ctx, 425, 2).await,
        Err(ExceptionCode::IllegalDataAddress)
    );
    let energy = read(&mut ctx, 374, 4).await.unwrap();
    let bits = energy
        .iter()
        .fold(0u64, |acc, w| (acc << 16) | u64::from(*w));
    assert_eq!(f64::from_bits(bits), 4_567_890.5);
    let control = read(&mut ctx, 1206, 10).await.unwrap();
    assert_eq!(f32_of(&control[0..2]), 16.0);
    assert_eq!((u32::from(control[2]) << 16) | u32::from(control[3]), 42);
    assert_eq!(control[9], 3, "phases");
    ctx.set_slave(Slave(200));
    let station = read(&mut ctx, 1100, 6).await.unwrap();
    assert_eq!(f32_of(&station[2..4]), 35.5);
    assert_eq!(station[5], 1, "sockets");
    let other = serve("charger-2").await;
    let mut ctx = connect(other.addr, 1).await;
    assert_eq!(text(&read(&mut ctx, 1201, 5).await.unwrap()), "A");
}

#[tokio::test]
async fn charger_setpoint_float_write_arrives_and_negative_or_nan_is_refused() {
    let s = serve("charger-2").await;
    let mut ctx = connect(s.addr, 1).await;
    let bits = 12.5f32.to_bits();
    write(&mut ctx, 1210, &[(bits >> 16) as u16, bits as u16])
        .await
        .unwrap();
    for bad in [-1.0f32, f32::NAN] {
        let bits = bad.to_bits();
        assert_eq!(
            write(&mut ctx, 1210, &[(bits >> 16) as u16, bits as u16]).await,
            Err(ExceptionCode::IllegalDataValue)
        );
    }
    let over = 40.0f32.to_bits();
    write(&mut ctx, 1210, &[(over >> 16) as u16, over as u16])
        .await
        .unwrap();
    assert_eq!(
        write(&mut ctx, 1210, &[0x4148]).await,
        Err(ExceptionCode::IllegalDataValue),
        "half a float"
    );
    assert_eq!(
        write(&mut ctx, 1215, &[2]).await,
        Err(ExceptionCode::IllegalDataValue)
    );
    write(&mut ctx, 1215, &[1]).await.unwrap();
    assert_eq!(
        write(&mut ctx, 1206, &[0, 0]).await,
        Err(ExceptionCode::IllegalDataAddress),
        "applied max current is read-only"
    );
    assert_eq!(
        s.station.commands(),
        vec![
            Command::ChargerSetpointA {
                index: 1,
                amps: 12.5
            },
            Command::ChargerSetpointA {
                index: 1,
                amps: 32.0
            },
            Command::ChargerPhases {
                index: 1,
                phases: 1
            },
        ]
    );
}

#[tokio::test]
async fn offline_fault_drops_open_and_new_connections_without_an_answer() {
    let s = serve("grid-meter").await;
    let mut ctx = connect(s.addr, 1).await;
    s.station.set_faults(
        "grid-meter",
        WireFaults {
            offline: true,
            ..WireFaults::default()
        },
    );
    let r = timeout(T, ctx.read_holding_registers(40000, 2))
        .await
        .expect("closed, not hung");
    assert!(r.is_err(), "open connection answered: {r:?}");
    let mut fresh = tcp::connect_slave(s.addr, Slave(1)).await.unwrap();
    let r = timeout(T, fresh.read_holding_registers(40000, 2))
        .await
        .expect("closed, not hung");
    assert!(r.is_err(), "new connection answered: {r:?}");
    s.station.set_faults("grid-meter", WireFaults::default());
    let mut back = connect(s.addr, 1).await;
    assert_eq!(
        read(&mut back, 40000, 2).await.unwrap(),
        vec![0x5375, 0x6E53]
    );
}

#[tokio::test]
async fn exception_fault_answers_every_request_with_that_code() {
    let s = serve("battery").await;
    let mut ctx = connect(s.addr, 1).await;
    s.station.set_faults(
        "battery",
        WireFaults {
            exception: Some(0x06),
            ..WireFaults::default()
        },
    );
    assert_eq!(
        read(&mut ctx, 40000, 2).await,
        Err(ExceptionCode::ServerDeviceBusy)
    );
    assert_eq!(
        write(&mut ctx, 40000, &[1]).await,
        Err(ExceptionCode::ServerDeviceBusy)
    );
    assert!(s.station.commands().is_empty());
}

#[tokio::test]
async fn frozen_fault_serves_the_image_from_when_the_freeze_began_and_refuses_writes() {
    let s = serve("battery").await;
    let mut ctx = connect(s.addr, 1).await;
    let soc_addr = walk(&mut ctx).await[&802].0 + 11;
    assert_eq!(read(&mut ctx, soc_addr, 1).await.unwrap(), vec![634]);
    s.station.set_faults(
        "battery",
        WireFaults {
            frozen: true,
            ..WireFaults::default()
        },
    );
    assert_eq!(read(&mut ctx, soc_addr, 1).await.unwrap(), vec![634]);
    let mut later = sample_view(2);
    later.battery.soc_pct = 70.0;
    s.station.set_view(later);
    assert_eq!(
        read(&mut ctx, soc_addr, 1).await.unwrap(),
        vec![634],
        "frozen"
    );
    assert_eq!(
        write(&mut ctx, soc_addr - 1, &[200]).await,
        Err(ExceptionCode::ServerDeviceFailure)
    );
    s.station.set_faults("battery", WireFaults::default());
    assert_eq!(
        read(&mut ctx, soc_addr, 1).await.unwrap(),
        vec![700],
        "thawed"
    );
    assert!(s.station.commands().is_empty());
}

#[tokio::test]
async fn latency_fault_delays_replies() {
    let s = serve("pv").await;
    let mut ctx = connect(s.addr, 1).await;
    let delay = Duration::from_millis(300);
    s.station.set_faults(
        "pv",
        WireFaults {
            latency: Some(delay),
            ..WireFaults::default()
        },
    );
    let started = Instant::now();
    assert_eq!(
        read(&mut ctx, 40000, 2).await.unwrap(),
        vec![0x5375, 0x6E53]
    );
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
}

#[tokio::test]
async fn bad_values_override_points_and_nan_renders_the_not_implemented_marker() {
    let s = serve("battery").await;
    let mut ctx = connect(s.addr, 1).await;
    let base = walk(&mut ctx).await[&802].0;
    s.station.set_faults(
        "battery",
        WireFaults {
            bad_values: vec![("soc_pct".into(), f64::NAN), ("soh_pct".into(), 150.0)],
            ..WireFaults::default()
        },
    );
    assert_eq!(read(&mut ctx, base + 11, 1).await.unwrap(), vec![0xFFFF]);
    assert_eq!(read(&mut ctx, base + 13, 1).await.unwrap(), vec![1500]);
    let c = serve("charger-1").await;
    let mut ctx = connect(c.addr, 1).await;
    c.station.set_faults(
        "charger-1",
        WireFaults {
            bad_values: vec![("power_w".into(), f64::NAN)],
            ..WireFaults::default()
        },
    );
    assert!(f32_of(&read(&mut ctx, 344, 2).await.unwrap()).is_nan());
}

#[tokio::test]
async fn cancelling_stops_the_server() {
    let mut s = serve("building-meter").await;
    let _ctx = connect(s.addr, 1).await;
    s.cancel.cancel();
    timeout(T, &mut s.task)
        .await
        .expect("stopped in time")
        .unwrap();
}

#[tokio::test]
async fn cancelling_ends_a_reply_delayed_by_latency() {
    let mut s = serve("pv").await;
    let mut ctx = connect(s.addr, 1).await;
    s.station.set_faults(
        "pv",
        WireFaults {
            latency: Some(Duration::from_secs(3600)),
            ..WireFaults::default()
        },
    );
    let before = s.station.fault_queries();
    let pending = tokio::spawn(async move { ctx.read_holding_registers(40000, 2).await });
    // Poll until the server has taken the request (it then sits in the latency sleep).
    let deadline = Instant::now() + T;
    while s.station.fault_queries() == before {
        assert!(
            Instant::now() < deadline,
            "request never reached the server"
        );
        tokio::task::yield_now().await;
    }
    s.cancel.cancel();
    timeout(T, &mut s.task)
        .await
        .expect("server stopped")
        .unwrap();
    let reply = timeout(T, pending).await.expect("client released").unwrap();
    assert!(reply.is_err(), "no answer after cancel: {reply:?}");
}
