//! `station-sim`: run the station simulator on loopback.
#![forbid(unsafe_code)]

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use clap::Parser;
use station_sim::runtime::{spawn, SimConfig, DEFAULT_PORT_BASE};
use station_sim::scenario::Scenario;
use station_sim::wire::profile::{Framing, ProfileMap, ProfiledSpec};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Software simulator of a PV + second-life battery + EV charging station, speaking SunSpec and
/// Alfen Modbus TCP. Every device gets its own TCP listener, like separate hardware.
#[derive(Debug, Parser)]
#[command(name = "station-sim", version)]
struct Args {
    /// Scenario file (simulator/scenarios/*.toml); default: the reference sunny weekday.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Simulated seconds per real second (60 = one simulated minute per second).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Seed for weather, loads and vehicle arrivals.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Simulated start: RFC 3339 (`2026-06-17T06:00:00+08:00`) or local site time
    /// (`2026-06-17T06:00`); default: the scenario's start.
    #[arg(long)]
    start: Option<String>,
    /// First port: PV on B, battery B+1, grid meter B+2, building meter B+3, control API B+9,
    /// chargers B+10, B+11, ...
    #[arg(long, default_value_t = DEFAULT_PORT_BASE)]
    port_base: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Log format: `text` or `json`.
    #[arg(long, default_value = "text")]
    log_format: String,
    /// Serve a device with a device profile's register map: `grid-meter=config/profiles/chint-dtsu666.toml`
    /// (repeatable).
    #[arg(long = "profile", value_name = "DEVICE=FILE")]
    profiles: Vec<String>,
    /// Serve a profiled device as RTU frames over TCP (a transparent RS485 gateway) at a unit
    /// id: `grid-meter:1` (repeatable).
    #[arg(long = "rtu", value_name = "DEVICE:UNIT")]
    rtu: Vec<String>,
    /// Serve a profiled device as RTU frames (unit 1, 9600 8N1) on a serial port instead of
    /// TCP: `grid-meter=/tmp/ttyA` (one end of `socat pty,raw,echo=0,link=/tmp/ttyA
    /// pty,raw,echo=0,link=/tmp/ttyB`; the controller opens the other end) (repeatable).
    #[arg(long = "serial", value_name = "DEVICE=PATH")]
    serial: Vec<String>,
}

/// The `--profile` and `--rtu` options as profiled devices.
fn profiled(args: &Args) -> Result<Vec<ProfiledSpec>> {
    let mut out = Vec::new();
    for p in &args.profiles {
        let (device, file) = p
            .split_once('=')
            .with_context(|| format!("--profile: expected DEVICE=FILE (got {p:?})"))?;
        let map = ProfileMap::load(Path::new(file)).context("--profile")?;
        out.push(ProfiledSpec::tcp(device, Arc::new(map)));
    }
    for r in &args.rtu {
        let (device, unit) = r
            .split_once(':')
            .with_context(|| format!("--rtu: expected DEVICE:UNIT (got {r:?})"))?;
        let unit: u8 = unit
            .parse()
            .with_context(|| format!("--rtu {r}: unit id 0-255"))?;
        let spec = out
            .iter_mut()
            .find(|s| s.device == device)
            .with_context(|| format!("--rtu {r}: {device} has no --profile"))?;
        *spec = ProfiledSpec::rtu_over_tcp(device, Arc::clone(&spec.profile), unit);
    }
    for s in &args.serial {
        let (device, path) = s
            .split_once('=')
            .with_context(|| format!("--serial: expected DEVICE=PATH (got {s:?})"))?;
        let spec = out
            .iter_mut()
            .find(|p| p.device == device)
            .with_context(|| format!("--serial {s}: {device} has no --profile"))?;
        *spec = ProfiledSpec::rtu_serial(device, Arc::clone(&spec.profile), 1, path);
    }
    Ok(out)
}

fn parse_start(s: &str, scenario: &Scenario) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
        .with_context(|| {
            format!("--start: expected RFC 3339 or YYYY-MM-DDTHH:MM local time (got {s:?})")
        })?;
    let tz = scenario.tz();
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .with_context(|| format!("--start: {s} does not exist in {tz}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match args.log_format.as_str() {
        "json" => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        "text" => tracing_subscriber::fmt().with_env_filter(filter).init(),
        other => anyhow::bail!("--log-format: expected text or json (got {other:?})"),
    }

    let scenario = match &args.scenario {
        Some(path) => Scenario::load(path)
            .with_context(|| format!("cannot load scenario {}", path.display()))?,
        None => Scenario::reference(),
    };
    let start = args
        .start
        .as_deref()
        .map(|s| parse_start(s, &scenario))
        .transpose()?;
    let config = SimConfig {
        start,
        bind: args.bind,
        port_base: Some(args.port_base),
        profiles: profiled(&args)?,
        ..SimConfig::ephemeral(scenario.clone(), args.seed, args.speed)
    };
    // Listen for the stop signals before announcing the endpoints: whoever reads the banner may
    // signal at once, and a signal that arrives before its handler exists would kill the process.
    let stop = StopSignals::listen()?;
    let profiles = config.profiles.clone();
    let sim = spawn(config).await.context("cannot start the simulator")?;

    println!(
        "station-sim: scenario {:?}, seed {}, speed {}x, simulated time {}",
        scenario.name,
        args.seed,
        args.speed,
        sim.now()
    );
    for (id, addr) in sim.addrs.devices() {
        let unit = if id.starts_with("charger-") {
            "unit 1 socket, unit 200 station (Alfen NG9xx)".to_string()
        } else {
            "unit 1, SunSpec at 40000".to_string()
        };
        let (framing, unit) = match profiles.iter().find(|p| p.device == id) {
            Some(p) if p.framing == Framing::RtuOverTcp => (
                "rtu/tcp",
                format!("unit {}, profile {}", p.unit, p.profile.name),
            ),
            Some(ProfiledSpec {
                framing: Framing::RtuSerial { path, .. },
                unit,
                profile,
                ..
            }) => (
                "rtu serial",
                format!("{path}, unit {unit}, profile {}", profile.name),
            ),
            Some(p) => (
                "modbus tcp",
                format!("unit {}, profile {}", p.unit, p.profile.name),
            ),
            None => ("modbus tcp", unit),
        };
        println!("  {id:<15} {framing} {addr}  {unit}");
    }
    println!("  control API     http://{}/truth", sim.addrs.api);
    println!("Ctrl-C stops.");

    let signal = stop.wait().await?;
    println!("stopping ({signal})");
    sim.shutdown().await;
    Ok(())
}

/// SIGINT (Ctrl-C) and, on Unix, SIGTERM, registered when created.
struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn listen() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(StopSignals {
                interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
                terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(StopSignals {})
        }
    }

    /// Waits for the first stop signal; returns its name.
    #[cfg_attr(not(unix), allow(unused_mut))]
    async fn wait(mut self) -> Result<&'static str> {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => Ok("SIGINT"),
                _ = self.terminate.recv() => Ok("SIGTERM"),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c()
                .await
                .context("cannot listen for Ctrl-C")?;
            Ok("Ctrl-C")
        }
    }
}
