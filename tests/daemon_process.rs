//! The real `stationd` binary as an operator runs it: `check-config`, `run` against the
//! simulator, SIGHUP reload, SIGTERM shutdown, `kill -9`, and a device nobody here wrote.
// Test and bench code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

use station_sim::runtime::{SimConfig, SimHandle};
use station_sim::scenario::Scenario;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{free_port, plug, station_file, until, until_async};

const STATIOND: &str = env!("CARGO_BIN_EXE_stationd");

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stationd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A loopback address for the daemon's API, to write into its config.
fn api_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

async fn sim(speed: f64, at: &str) -> SimHandle {
    let sc = Scenario::reference();
    let start = sc.resolve_local(at);
    station_sim::runtime::spawn(SimConfig {
        start,
        ..SimConfig::ephemeral(sc, 11, speed)
    })
    .await
    .unwrap()
}

struct Daemon {
    child: Child,
    api: SocketAddr,
}

impl Daemon {
    /// `stationd run` with `config`, whose API listens on `api`.
    fn spawn(config: &Path, api: SocketAddr, env: &[(&str, &str)]) -> Daemon {
        Self::spawn_with(config, api, env, &[])
    }

    fn spawn_with(config: &Path, api: SocketAddr, env: &[(&str, &str)], args: &[&str]) -> Daemon {
        let mut cmd = Command::new(STATIOND);
        cmd.args(["run", "--config"])
            .arg(config)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon {
            child: cmd.spawn().unwrap(),
            api,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }

    async fn status(&self) -> Option<serde_json::Value> {
        let r = reqwest::get(format!("http://{}/api/status", self.api))
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `stationd check-config --config PATH`, run to completion.
fn check_config(path: &Path) -> std::process::Output {
    Command::new(STATIOND)
        .args(["check-config", "--config"])
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn check_config_accepts_the_reference_station_and_prints_a_summary() {
    let out = check_config(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/station.toml"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("import limit 150.0 kW"), "{stdout}");
    assert!(stdout.contains("charger-8"), "{stdout}");
}

#[test]
fn check_config_names_every_error_of_a_bad_file_and_exits_1() {
    let dir = temp_dir("bad-config");
    let path = dir.join("bad.toml");
    let mut doc = station_file::reference();
    station_file::set(&mut doc, "policy.grid.import_limit_kw", -5);
    station_file::set(&mut doc, "policy.battery.soc_min_pct", 150.0);
    station_file::set(&mut doc, "devices.building-meter.port", 0);
    station_file::write(&path, &doc);
    let out = check_config(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for expected in [
        "policy.grid.import_limit_kw: must be > 0 (got -5)",
        "policy.battery.soc_min_pct",
        "devices.building-meter.port",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in {stderr}"
        );
    }
    let out = Command::new(STATIOND)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "run must refuse an invalid config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reloads_its_policy_on_sighup_and_keeps_it_when_the_new_file_is_invalid() {
    let sim = sim(1.0, "12:00").await;
    let dir = temp_dir("sighup");
    let path = dir.join("station.toml");
    let api = api_addr();
    let config = station_file::for_sim(&sim.addrs, api);
    station_file::write(&path, &config);
    let d = Daemon::spawn(&path, api, &[]);
    let limit = async |d: &Daemon| {
        d.status()
            .await
            .and_then(|s| s["grid"]["import_limit_w"].as_f64())
    };
    until_async("first status", Duration::from_secs(30), async || {
        limit(&d).await
    })
    .await;
    assert_eq!(limit(&d).await, Some(150_000.0));

    let mut lower = config.clone();
    station_file::set(&mut lower, "policy.grid.import_limit_kw", 120.0);
    station_file::write(&path, &lower);
    d.signal("-HUP");
    until_async("the reloaded limit", Duration::from_secs(30), async || {
        (limit(&d).await == Some(120_000.0)).then_some(())
    })
    .await;

    let mut invalid = config;
    station_file::set(&mut invalid, "policy.grid.import_limit_kw", -1.0);
    station_file::write(&path, &invalid);
    d.signal("-HUP");
    // Give the daemon a few cycles to (wrongly) apply it; the limit must stay.
    let cycle = d.status().await.unwrap()["cycle"].as_u64().unwrap();
    until_async("three more cycles", Duration::from_secs(30), async || {
        let c = d.status().await?["cycle"].as_u64()?;
        (c >= cycle + 3).then_some(())
    })
    .await;
    assert_eq!(limit(&d).await, Some(120_000.0));
    drop(d);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_writes_safe_setpoints_and_exits_0() {
    let sim = sim(1.0, "18:05").await;
    sim.plug(&plug("charger-1")).unwrap();
    let dir = temp_dir("sigterm");
    let path = dir.join("station.toml");
    let api = api_addr();
    station_file::write(&path, &station_file::for_sim(&sim.addrs, api));
    let mut d = Daemon::spawn(&path, api, &[("STATION__POLICY__CYCLE_S", "0.2")]);
    until("the car charging fast", Duration::from_secs(60), || {
        let t = sim.truth();
        (t.chargers[0].setpoint_a > 10.0).then_some(())
    })
    .await;
    d.signal("-TERM");
    let status = d.wait_exit(Duration::from_secs(5)).expect("did not exit");
    assert!(status.success(), "exit status {status:?}");
    let t = sim.truth();
    assert!(
        t.chargers[0].setpoint_a <= 6.0 + 1e-6,
        "setpoint {}",
        t.chargers[0].setpoint_a
    );
    assert!(t.battery.setpoint_w.abs() < 1.0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_the_station_falls_back_to_safe_values_on_its_own() {
    // 10x: the chargers' 60 s validity and the PCS's 30 s revert pass in 6 s and 3 s.
    let sim = sim(10.0, "18:05").await;
    for id in ["charger-1", "charger-2"] {
        sim.plug(&plug(id)).unwrap();
    }
    let dir = temp_dir("kill9");
    let path = dir.join("station.toml");
    let api = api_addr();
    // A safe current the simulator does not start with: the cars can only end at 10 A if the
    // daemon configured it on the chargers.
    let mut doc = station_file::for_sim(&sim.addrs, api);
    for id in ["charger-1", "charger-2"] {
        station_file::set(&mut doc, &format!("devices.{id}.safe_current_a"), 10.0);
    }
    station_file::write(&path, &doc);
    // The daemon runs on the wall clock, not the simulator's: with vehicles served first and a
    // low import limit the battery discharges to keep the cars charging, whatever the tariff
    // period is now.
    let ledger = dir.join("ledger.db");
    let ledger_arg = ledger.display().to_string();
    let mut d = Daemon::spawn_with(
        &path,
        api,
        &[
            ("STATION__POLICY__CYCLE_S", "0.2"),
            ("STATION__POLICY__SERVE_FIRST", "vehicles"),
            ("STATION__POLICY__GRID__IMPORT_LIMIT_KW", "60"),
            ("STATION__POLICY__GRID__DEMAND_TARGET_KW", "60"),
        ],
        &["--ledger", &ledger_arg, "--ledger-flush-s", "1"],
    );
    until(
        "cars fast and the battery discharging to hold the import limit",
        Duration::from_secs(60),
        || {
            let t = sim.truth();
            (t.chargers[0].applied_max_a > 12.0 && t.battery.power_w > 1000.0).then_some(())
        },
    )
    .await;
    // Let the ledger record a few seconds (as the daemon reports it, flushed or not), then kill
    // without warning.
    let recorded_s = until_async(
        "the ledger to cover 5 s",
        Duration::from_secs(30),
        async || {
            let energy: serde_json::Value = reqwest::get(format!("http://{api}/api/energy"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let covered_s = energy["totals"]["sum"]["covered_s"].as_f64()?;
            (covered_s >= 5.0).then_some(covered_s)
        },
    )
    .await;
    d.signal("-KILL");
    d.wait_exit(Duration::from_secs(5)).expect("not killed");
    let killed_at = sim.now();
    let killed_wall = chrono::Utc::now();
    let fell_back = until("the device-side fallbacks", Duration::from_secs(30), || {
        let t = sim.truth();
        let safe = t
            .chargers
            .iter()
            .take(2)
            .all(|c| (c.applied_max_a - 10.0).abs() < 1e-6);
        (safe && t.battery.power_w.abs() < 1.0).then_some(t.sim_time)
    })
    .await;
    let took = (fell_back - killed_at).num_seconds();
    // Charger validity 60 s; the PCS reverts after its 30 s timeout and ramps to 0.
    assert!(took <= 75, "fallback took {took} simulated seconds");

    // The ledger survived the kill, losing at most the last flush interval (1 s) plus a cycle
    // (0.2 s) of what it had recorded when we looked; allow as much again for scheduling.
    let mut ledger = station_controller::ledger::Ledger::open(&ledger, Duration::from_secs(30));
    assert!(ledger.healthy(), "{:?}", ledger.health());
    // The whole run, in whole UTC quarter-hour buckets.
    let totals = ledger.totals(
        killed_wall - chrono::Duration::days(1),
        killed_wall + chrono::Duration::minutes(15),
    );
    assert!(
        totals.sum.covered_s >= recorded_s - 2.4,
        "only {} s of the {recorded_s} s recorded survived",
        totals.sum.covered_s
    );
    assert!(totals.sum.import_wh > 0.0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Python with pymodbus (installed by .ci/run)"]
async fn the_daemon_reads_and_limits_a_foreign_pymodbus_sunspec_inverter() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let python = std::env::var("STATION_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_string());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/peers/pymodbus_sunspec_inverter.py"
    );
    let mut peer = tokio::process::Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(peer.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let peer_port: u16 = line.strip_prefix("PORT ").unwrap().parse().unwrap();

    let sim = sim(1.0, "12:00").await;
    let dir = temp_dir("foreign");
    let path = dir.join("station.toml");
    let api = api_addr();
    let mut config = station_file::for_sim(&sim.addrs, api);
    station_file::set(&mut config, "devices.pv.port", i64::from(peer_port));
    station_file::set(&mut config, "devices.pv.rating_kw", 6);
    station_file::write(&path, &config);
    let d = Daemon::spawn(&path, api, &[]);
    let pv = until_async(
        "the foreign inverter's power",
        Duration::from_secs(30),
        async || {
            let s = d.status().await?;
            s["pv"]["power_w"].as_f64()
        },
    )
    .await;
    assert!((pv - 4321.5).abs() < 0.01, "read {pv} W");

    // The daemon enabled the limit (model 123 WMaxLim_Ena) and wrote WMaxLimPct with the
    // device's own scale factor (-2): 100 % = 10000.
    let mut ctx = tokio_modbus::client::tcp::connect_slave(
        format!("127.0.0.1:{peer_port}").parse().unwrap(),
        tokio_modbus::Slave(1),
    )
    .await
    .unwrap();
    use tokio_modbus::client::Reader;
    let base = 50002u16 + 68; // SunS, then model 1 (2 + 66): model 123 follows.
    until_async("the limit written", Duration::from_secs(30), async || {
        let regs = ctx.read_holding_registers(base, 26).await.ok()?.ok()?;
        (regs[0] == 123 && regs[5] == 10000 && regs[9] == 1).then_some(())
    })
    .await;
    drop(d);
    drop(peer.stdin.take());
    sim.shutdown().await;
}

#[test]
fn the_systemd_unit_runs_the_daemon_as_a_notify_service_with_a_watchdog() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/systemd/stationd.service"),
    )
    .unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=stationd",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(line), "unit lacks {line}");
    }
    // The ExecStart line uses flags the binary has.
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    assert!(exec.contains(" run --config ") && exec.contains("--ledger"));
}

#[test]
fn check_config_names_every_unknown_key_at_once() {
    let dir = temp_dir("unknown-keys");
    let path = dir.join("unknown.toml");
    let mut text = toml::to_string(&station_file::reference()).unwrap();
    text = text.replace("[api]\n", "[api]\nlisten_address = \"x\"\n");
    text = text.replace("[policy.grid]\n", "[policy.grid]\nimport_limit_kv = 3\n");
    text.push_str("\n[colour]\nname = \"red\"\n");
    std::fs::write(&path, text).unwrap();
    let out = check_config(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for key in [
        "api.listen_address: unknown key",
        "policy.grid.import_limit_kv: unknown key",
        "colour: unknown key",
    ] {
        assert!(stderr.contains(key), "missing {key:?} in {stderr}");
    }
}

/// A systemd notify socket in `dir`, with a read timeout.
fn notify_socket(dir: &Path) -> (std::os::unix::net::UnixDatagram, PathBuf) {
    let path = dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    (socket, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_the_watchdog_is_pinged_and_logs_on_a_pipe_carry_no_colour_codes() {
    let sim = sim(1.0, "12:00").await;
    let dir = temp_dir("watchdog");
    let path = dir.join("station.toml");
    let api = api_addr();
    station_file::write(&path, &station_file::for_sim(&sim.addrs, api));
    let (socket, socket_path) = notify_socket(&dir);
    let mut child = Command::new(STATIOND)
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "6000000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m == "WATCHDOG=1") {
        let n = socket.recv(&mut buf).expect("a notification within 30 s");
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(seen[0].starts_with("READY=1"), "{seen:?}");
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(child.wait().unwrap().success(), "{stderr}");
    assert!(stderr.contains("stationd running"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes on a pipe: {stderr:?}"
    );
    sim.shutdown().await;
}

#[test]
fn a_systemd_watchdog_shorter_than_the_liveness_window_is_refused_naming_policy_cycle_s() {
    let dir = temp_dir("short-watchdog");
    let path = dir.join("station.toml");
    station_file::write(&path, &station_file::reference());
    let out = Command::new(STATIOND)
        .args(["run", "--config"])
        .arg(&path)
        .env("WATCHDOG_USEC", "2000000")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("policy.cycle_s"), "{stderr}");
    assert!(stderr.contains("WatchdogSec"), "{stderr}");
}
