//! Acceptance against tools nobody here wrote: pysunspec2 (PyPI) scans and writes the SunSpec
//! devices, mbpoll (Debian) reads and writes a charger. The simulator runs inside the test
//! process on ephemeral ports at speed 0, so the test moves its clock with `advance`.
//!
//! These tests need the tools, so they are ignored by a bare `cargo test`; `.ci/run` installs
//! them and runs `cargo test --workspace -- --include-ignored`. The Python interpreter is
//! `$STATION_PYTHON`, else `<workspace root>/.venv/bin/python`.

// Test and bench code may panic on a broken invariant and time itself with the wall clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use serde_json::Value;
use station_sim::runtime::{spawn, PlugRequest, SimConfig, SimHandle, Truth};
use station_sim::scenario::Scenario;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::process::Command;
use tokio::time::timeout;
use tokio_modbus::prelude::*;

const T: Duration = Duration::from_secs(30);

fn python() -> PathBuf {
    match std::env::var_os("STATION_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(".venv")
            .join("bin")
            .join("python"),
    }
}

fn peer(script: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("peers")
        .join(script)
}

/// Runs a command, fails the test with its stderr if it fails, returns its stdout.
async fn run(cmd: &mut Command, what: &str) -> String {
    let out = timeout(T, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {T:?}"))
        .unwrap_or_else(|e| panic!("cannot run {what} (installed by .ci/run): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs a peer script under the venv's Python; parses its JSON stdout.
async fn run_peer(script: &str, args: &[String]) -> Value {
    let py = python();
    let stdout = run(
        Command::new(&py).arg(peer(script)).args(args),
        &format!("{} {script}", py.display()),
    )
    .await;
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{script}: {e}: {stdout}"))
}

async fn scan(addr: SocketAddr) -> Value {
    run_peer(
        "sunspec_scan.py",
        &[addr.ip().to_string(), addr.port().to_string()],
    )
    .await
}

/// `mbpoll -m tcp -p PORT -a 1 -0 ARGS... 127.0.0.1 [VALUES...]`; returns the polled values
/// (the text after `[ref]:` on each result line).
async fn mbpoll(addr: SocketAddr, args: &[&str], values: &[&str]) -> Vec<String> {
    let port = addr.port().to_string();
    let mut cmd = Command::new("mbpoll");
    cmd.args(["-m", "tcp", "-p", &port, "-a", "1", "-0", "-o", "5"])
        .args(args)
        .arg(addr.ip().to_string())
        .args(values);
    let stdout = run(&mut cmd, &format!("mbpoll {}", args.join(" "))).await;
    stdout
        .lines()
        .filter(|l| l.starts_with('['))
        .filter_map(|l| l.split_once("]:").map(|(_, v)| v.trim().to_string()))
        .collect()
}

/// The reference station without random arrivals, at local 11:59, speed 0.
async fn noon_sim() -> SimHandle {
    let scenario = Scenario::from_toml_str("[vehicles]\narrival_scale = 0.0\n").unwrap();
    let start = scenario.resolve_local("11:59").unwrap();
    let config = SimConfig {
        start: Some(start),
        ..SimConfig::ephemeral(scenario, 3, 0.0)
    };
    let sim = spawn(config).await.unwrap();
    // Let the PV reach its noon output, then wait until every device answers.
    sim.advance(60.0);
    for (id, addr) in sim.addrs.devices() {
        let probe = if id.starts_with("charger-") {
            1201
        } else {
            40000
        };
        let deadline = Instant::now() + T;
        loop {
            let answered = async {
                let mut ctx = tcp::connect_slave(addr, Slave(1)).await.ok()?;
                ctx.read_holding_registers(probe, 1).await.ok()?.ok()
            };
            if let Ok(Some(_)) = timeout(T, answered).await {
                break;
            }
            assert!(Instant::now() < deadline, "{id} at {addr} never answered");
            tokio::task::yield_now().await;
        }
    }
    sim
}

fn point(scan: &Value, model: u16, name: &str) -> f64 {
    scan["values"][model.to_string()][name]
        .as_f64()
        .unwrap_or_else(|| panic!("model {model} {name} not decoded: {}", scan["values"]))
}

/// One count of a point with scale factor `sf`: the rounding a decoded value may show.
fn count(scan: &Value, model: u16, sf_name: &str) -> f64 {
    10f64.powf(point(scan, model, sf_name))
}

fn models(scan: &Value) -> Vec<u64> {
    scan["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_u64().unwrap())
        .collect()
}

fn assert_near(what: &str, decoded: f64, truth: f64, tolerance: f64) {
    assert!(
        (decoded - truth).abs() <= tolerance,
        "{what}: pysunspec2 decoded {decoded}, the truth is {truth} (tolerance {tolerance})"
    );
}

fn charger_truth(t: &Truth, id: &str) -> station_sim::runtime::ChargerTruth {
    t.chargers.iter().find(|c| c.id == id).unwrap().clone()
}

#[tokio::test]
#[ignore = "needs pysunspec2 and mbpoll (installed by .ci/run)"]
async fn pysunspec2_scans_pv_battery_and_meters_and_decodes_the_truth() {
    let sim = noon_sim().await;
    let truth = sim.truth();
    assert!(
        truth.pv.power_w > 0.3 * truth.pv.rating_w,
        "PV should be up at noon: {:?}",
        truth.pv
    );

    let pv = scan(sim.addrs.pv).await;
    assert_eq!(models(&pv), [1, 103, 120, 123]);
    assert_eq!(pv["values"]["1"]["Mn"], "station-sim");
    assert_eq!(pv["values"]["1"]["SN"], "pv");
    let w = count(&pv, 103, "W_SF");
    assert_near("pv W", point(&pv, 103, "W"), truth.pv.power_w, w);
    assert_near(
        "pv DCW",
        point(&pv, 103, "DCW"),
        truth.pv.dc_power_w,
        count(&pv, 103, "DCW_SF"),
    );
    assert_near(
        "pv WRtg",
        point(&pv, 120, "WRtg"),
        truth.pv.rating_w,
        count(&pv, 120, "WRtg_SF"),
    );
    assert_eq!(point(&pv, 103, "St"), truth.pv.status as u8 as f64);
    assert_eq!(point(&pv, 123, "WMaxLimPct"), truth.pv.limit_pct);
    assert_eq!(point(&pv, 123, "WMaxLim_Ena"), 0.0);

    let battery = scan(sim.addrs.battery).await;
    assert_eq!(models(&battery), [1, 704, 802, 803, 804]);
    let b = &truth.battery;
    assert_near("battery SoC", point(&battery, 802, "SoC"), b.soc_pct, 0.1);
    assert_near("battery SoH", point(&battery, 802, "SoH"), b.soh_pct, 0.1);
    assert_near(
        "battery WHRtg",
        point(&battery, 802, "WHRtg"),
        b.nameplate_wh,
        count(&battery, 802, "WHRtg_SF"),
    );
    let rate = count(&battery, 802, "WChaDisChaMax_SF");
    assert_near(
        "battery WChaRteMax",
        point(&battery, 802, "WChaRteMax"),
        b.max_charge_w,
        rate,
    );
    assert_near(
        "battery WDisChaRteMax",
        point(&battery, 802, "WDisChaRteMax"),
        b.max_discharge_w,
        rate,
    );
    assert_near(
        "battery W",
        point(&battery, 802, "W"),
        b.power_w,
        count(&battery, 802, "W_SF"),
    );
    assert_near("battery V", point(&battery, 802, "V"), b.voltage_v, 0.1);
    assert_eq!(point(&battery, 802, "State"), b.state as u8 as f64);
    assert_eq!(point(&battery, 704, "WSetMod"), 1.0);
    assert_near(
        "battery WSet",
        point(&battery, 704, "WSet"),
        b.setpoint_w,
        1.0,
    );

    for (addr, power_w, phase_w, serial) in [
        (
            sim.addrs.grid_meter,
            truth.grid.power_w,
            Some(truth.grid.phase_w),
            "grid-meter",
        ),
        (
            sim.addrs.building_meter,
            truth.building.power_w,
            None,
            "building-meter",
        ),
    ] {
        let meter = scan(addr).await;
        assert_eq!(models(&meter), [1, 203], "{serial}");
        assert_eq!(meter["values"]["1"]["SN"], serial);
        let w = count(&meter, 203, "W_SF");
        assert_near(serial, point(&meter, 203, "W"), power_w, w);
        if let Some(phases) = phase_w {
            for (name, p) in ["WphA", "WphB", "WphC"].into_iter().zip(phases) {
                assert_near(name, point(&meter, 203, name), p, w);
            }
        }
        assert_near("Hz", point(&meter, 203, "Hz"), 50.0, 0.5);
    }
    sim.shutdown().await;
}

#[tokio::test]
#[ignore = "needs pysunspec2 and mbpoll (installed by .ci/run)"]
async fn pysunspec2_decodes_the_lithium_ion_bank_and_string_with_cells_modules_and_temperatures() {
    // Half a count of the scale factor (-1 and -3), plus float slack.
    const HALF_DECI: f64 = 0.050_001;
    const HALF_MILLI: f64 = 0.000_500_001;
    let sim = noon_sim().await;
    let b = sim.truth().battery;
    let scan = scan(sim.addrs.battery).await;
    let bank = &scan["values"]["803"];
    let string = &scan["values"]["804"];
    let f = |v: &Value, name: &str| {
        v[name]
            .as_f64()
            .unwrap_or_else(|| panic!("{name} not decoded: {v}"))
    };
    assert_eq!((f(bank, "NStr"), f(bank, "NStrCon")), (1.0, 1.0));
    assert_near(
        "803 ModTmpMax",
        f(bank, "ModTmpMax"),
        b.module_temp_max_c,
        HALF_DECI,
    );
    assert_near(
        "803 ModTmpMin",
        f(bank, "ModTmpMin"),
        b.module_temp_min_c,
        HALF_DECI,
    );
    assert_eq!(f(bank, "ModTmpMaxMod"), f64::from(b.module_temp_max_module));
    assert_eq!(f(bank, "ModTmpMinMod"), f64::from(b.module_temp_min_module));
    let s0 = &bank["string"][0];
    assert_eq!(f(s0, "StrNMod"), f64::from(b.modules));
    assert_near(
        "803 StrCellVMax",
        f(s0, "StrCellVMax"),
        b.cell_v_max,
        HALF_MILLI,
    );
    assert_near(
        "803 StrCellVMin",
        f(s0, "StrCellVMin"),
        b.cell_v_min,
        HALF_MILLI,
    );
    assert_eq!(f(s0, "StrCellVMaxMod"), f64::from(b.cell_v_max_module));
    assert_eq!(f(s0, "StrCellVMinMod"), f64::from(b.cell_v_min_module));
    assert_near("803 StrSoC", f(s0, "StrSoC"), b.soc_pct, HALF_DECI);

    assert_eq!(f(string, "NMod"), f64::from(b.modules));
    assert_near(
        "804 CellVMax",
        f(string, "CellVMax"),
        b.cell_v_max,
        HALF_MILLI,
    );
    assert_near(
        "804 CellVMin",
        f(string, "CellVMin"),
        b.cell_v_min,
        HALF_MILLI,
    );
    assert_eq!(f(string, "CellVMinMod"), f64::from(b.cell_v_min_module));
    assert_near(
        "804 ModTmpMax",
        f(string, "ModTmpMax"),
        b.module_temp_max_c,
        HALF_DECI,
    );
    assert_eq!(
        f(string, "ModTmpMaxMod"),
        f64::from(b.module_temp_max_module)
    );
    let groups = string["lithium_ion_string_module"].as_array().unwrap();
    assert_eq!(groups.len(), usize::from(b.modules));
    let weakest = &groups[usize::from(b.cell_v_min_module) - 1];
    assert_near(
        "804 ModCellVMin",
        f(weakest, "ModCellVMin"),
        b.cell_v_min,
        HALF_MILLI,
    );
    assert_eq!(f(weakest, "ModNCell"), f64::from(b.cells_per_module));
    let hottest = &groups[usize::from(b.module_temp_max_module) - 1];
    assert_near(
        "804 ModCellTmpMax",
        f(hottest, "ModCellTmpMax"),
        b.module_temp_max_c,
        HALF_DECI,
    );
    sim.shutdown().await;
}

#[tokio::test]
#[ignore = "needs pysunspec2 and mbpoll (installed by .ci/run)"]
async fn a_power_limit_written_with_pysunspec2_lowers_the_simulated_pv_output() {
    let sim = noon_sim().await;
    let before = sim.truth().pv;
    let half_w = 0.5 * before.rating_w;
    assert!(
        before.power_w > half_w + 5_000.0,
        "the test needs PV well above half its rating at noon: {before:?}"
    );

    let written = run_peer(
        "sunspec_limit.py",
        &[
            sim.addrs.pv.ip().to_string(),
            sim.addrs.pv.port().to_string(),
            "50".to_string(),
        ],
    )
    .await;
    assert_eq!(written["WMaxLimPct"].as_f64(), Some(50.0), "{written}");
    assert_eq!(written["WMaxLim_Ena"].as_f64(), Some(1.0), "{written}");
    let limited = sim.truth().pv;
    assert_eq!(limited.limit_pct, 50.0);
    assert!(limited.limit_enabled);

    // The inverter ramps to the new limit (10 %/s by default): half a minute is plenty.
    sim.advance(30.0);
    let after = sim.truth().pv;
    assert!(
        after.power_w <= half_w + 0.01 * after.rating_w,
        "PV at {} W with a 50 % limit of a {} W rating",
        after.power_w,
        after.rating_w
    );
    assert!(
        after.available_w > half_w,
        "the sun is still there: {after:?}"
    );
    // pysunspec2 sees the lowered output too.
    let pv = scan(sim.addrs.pv).await;
    assert_near(
        "limited W",
        point(&pv, 103, "W"),
        after.power_w,
        count(&pv, 103, "W_SF"),
    );
    sim.shutdown().await;
}

#[tokio::test]
#[ignore = "needs pysunspec2 and mbpoll (installed by .ci/run)"]
async fn mbpoll_reads_a_charger_state_and_writes_its_max_current_which_the_car_follows() {
    let sim = noon_sim().await;
    let charger = sim.addrs.chargers[0];
    sim.plug(&PlugRequest {
        charger: "charger-1".into(),
        battery_kwh: 75.0,
        soc_pct: 20.0,
        target_soc_pct: 90.0,
        stay_h: 4.0,
        onboard_a: 32.0,
        phases: 3,
    })
    .unwrap();
    sim.advance(1.0);

    // The IEC 61851 state string: 5 registers, two ASCII characters each, NUL padded.
    let words = mbpoll(
        charger,
        &["-r", "1201", "-c", "5", "-t", "4:hex", "-1"],
        &[],
    )
    .await;
    assert_eq!(words.len(), 5, "{words:?}");
    let mut state = String::new();
    for w in &words {
        let w = u16::from_str_radix(w.trim_start_matches("0x"), 16).unwrap();
        state.extend(
            w.to_be_bytes()
                .iter()
                .filter(|b| **b != 0)
                .map(|b| *b as char),
        );
    }
    let truth = charger_truth(&sim.truth(), "charger-1");
    assert_eq!(state, truth.state.as_str());
    assert!(state.starts_with('B') || state.starts_with('C'), "{state}");

    // Write 16 A into the max-current setpoint (float32, high word first).
    mbpoll(charger, &["-r", "1210", "-t", "4:float", "-B"], &["16"]).await;
    sim.advance(5.0);
    let c = charger_truth(&sim.truth(), "charger-1");
    assert_eq!(c.setpoint_a, 16.0);
    assert_eq!(c.state.as_str(), "C2");
    assert!((c.current_a - 16.0).abs() < 1e-6, "{c:?}");
    let applied = mbpoll(
        charger,
        &["-r", "1206", "-c", "1", "-t", "4:float", "-B", "-1"],
        &[],
    )
    .await;
    assert_eq!(applied, ["16"]);

    // Not refreshed: past the validity time (60 s) the charger applies its safe current.
    sim.advance(61.0);
    let c = charger_truth(&sim.truth(), "charger-1");
    assert_eq!(c.remaining_validity_s, 0);
    assert!((c.current_a - c.safe_current_a).abs() < 1e-6, "{c:?}");
    assert!(c.current_a < 16.0);
    let applied = mbpoll(
        charger,
        &["-r", "1206", "-c", "1", "-t", "4:float", "-B", "-1"],
        &[],
    )
    .await;
    assert_eq!(applied, [format!("{}", c.safe_current_a)]);
    let accounted = mbpoll(charger, &["-r", "1214", "-c", "1", "-t", "4", "-1"], &[]).await;
    assert_eq!(accounted, ["0"]);
    sim.shutdown().await;
}

#[tokio::test]
#[ignore = "needs pysunspec2 and mbpoll (installed by .ci/run)"]
async fn mbpoll_reads_the_pv_power_and_its_scale_factor_as_the_readme_shows() {
    let sim = noon_sim().await;
    // README: model 103 W (int16) at 40084, W_SF one register later.
    let words = mbpoll(
        sim.addrs.pv,
        &["-r", "40084", "-c", "2", "-t", "4", "-1"],
        &[],
    )
    .await;
    assert_eq!(words.len(), 2, "{words:?}");
    let first = |s: &str| s.split_whitespace().next().unwrap().to_string();
    // mbpoll shows a register as unsigned, with the signed reading in parentheses if negative.
    let signed = |s: &str| -> i64 {
        match s.split_once('(') {
            Some((_, rest)) => rest.trim_end_matches(')').parse().unwrap(),
            None => first(s).parse().unwrap(),
        }
    };
    let w = signed(&words[0]) as f64 * 10f64.powi(signed(&words[1]) as i32);
    let truth = sim.truth().pv.power_w;
    assert!(
        (w - truth).abs() <= 10f64.powi(signed(&words[1]) as i32),
        "mbpoll read {w} W, the truth is {truth} W"
    );
    sim.shutdown().await;
}
