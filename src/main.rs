//! `stationd`: the station controller daemon and its tools.
#![forbid(unsafe_code)]

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use station_controller::clock::SystemClock;
use station_controller::config::{self, ConfigError};
use station_controller::daemon::{self, notify::Notifier, Options};
use station_controller::demo::{self, Demo};
use station_controller::devices::bus::LineSettings;
use station_controller::devices::link::{Framing, LinkConfig};
use station_controller::devices::profile::{
    self, commission, Profile, ProfileDevice, ProfiledConfig,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Parser)]
#[command(
    name = "stationd",
    version,
    about = "Controller for PV + storage + EV charging stations"
)]
struct Cli {
    /// Log format: `text` or `json` (for log shippers).
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller against the devices in the config file.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// SQLite energy ledger; default: kept in memory only.
        #[arg(long)]
        ledger: Option<PathBuf>,
        /// Seconds between ledger flushes (a `kill -9` loses at most this much).
        #[arg(long, default_value_t = 30.0)]
        ledger_flush_s: f64,
    },
    /// Validate a config file: print every problem and exit 1, or a summary and exit 0.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the bundled simulator and the controller against it, with the dashboard.
    Demo {
        /// A shipped scenario name (sunny-weekday, cloudy-winter-weekday, weekend, ev-rush,
        /// faults-day) or a path to a scenario file.
        #[arg(long, default_value = "sunny-weekday")]
        scenario: String,
        /// Simulated seconds per real second.
        #[arg(long, default_value_t = 60.0)]
        speed: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Simulated start, local time of the scenario's date.
        #[arg(long, default_value = "06:00")]
        start: String,
        /// Dashboard and API address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Step the simulator's plant in process and print the scorecard.
    Backtest(station_controller::backtest::cli::BacktestArgs),
    /// Serve a page, `/api/fleet` and `/metrics` over every station publishing on a broker.
    Fleet {
        /// `mqtt://host[:port]` or `mqtts://host[:port]`.
        #[arg(long)]
        broker: String,
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
        /// Topic prefix the stations publish under.
        #[arg(long, default_value = "station")]
        prefix: String,
        /// Broker user on line 1, password on line 2.
        #[arg(long)]
        credentials_file: Option<PathBuf>,
        /// PEM of the broker's CA, for `mqtts://`.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// Commission a profiled device: identify it, read every point once with its plausibility
    /// verdict, and with --write exercise every setpoint (write, read back, restore).
    Probe(ProbeArgs),
}

#[derive(Debug, clap::Args)]
struct ProbeArgs {
    /// A device id of the config file (which gives profile and address).
    device: Option<String>,
    #[arg(long, requires = "device")]
    config: Option<PathBuf>,
    /// A profile name, with --host (instead of a device from a config).
    #[arg(long, conflicts_with = "device", requires = "host")]
    profile: Option<String>,
    /// Where --profile is looked up.
    #[arg(long, default_value = "config/profiles")]
    profiles_dir: PathBuf,
    #[arg(long)]
    host: Option<String>,
    #[arg(long, default_value_t = 502)]
    port: u16,
    #[arg(long, default_value_t = 1)]
    unit: u8,
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// RTU frames through a transparent RS485 gateway at --host/--port (default: Modbus TCP).
    #[arg(long, conflicts_with = "rtu")]
    rtu_over_tcp: bool,
    /// Modbus RTU on the serial port named by --host (e.g. /dev/ttyUSB0), 8N1.
    #[arg(long)]
    rtu: bool,
    /// RTU: line speed (8N1 assumed); behind a gateway it sets the inter-frame silence.
    #[arg(long, default_value_t = 9600)]
    baud: u32,
    /// Exercise every setpoint: write a test value, read it back, restore the old value.
    #[arg(long)]
    write: bool,
}

/// The profile and link of the device `stationd probe` talks to.
fn probe_target(args: &ProbeArgs) -> Result<(Arc<Profile>, ProfiledConfig)> {
    if let (Some(id), Some(path)) = (&args.device, &args.config) {
        let cfg = config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let d = cfg
            .device(id)
            .with_context(|| format!("no device {id:?} in {}", path.display()))?;
        let profile = d.any_profile().cloned().with_context(|| {
            format!("device {id:?} names no profile (SunSpec and charger drivers are built in)")
        })?;
        let link = LinkConfig::new(d.endpoint.host.clone(), d.endpoint.port, d.endpoint.unit_id)
            .with_timeout(d.endpoint.timeout)
            .with_framing(d.endpoint.framing);
        let invert = d.endpoint.invert;
        return Ok((
            profile,
            ProfiledConfig {
                link,
                invert,
                rating_w: None,
            },
        ));
    }
    let (Some(name), Some(host)) = (&args.profile, &args.host) else {
        anyhow::bail!("give DEVICE --config FILE, or --profile NAME --host HOST [--port --unit]");
    };
    let profile = profile::load(&args.profiles_dir, name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut link = LinkConfig::new(host.clone(), args.port, args.unit)
        .with_timeout(Duration::from_millis(args.timeout_ms));
    if args.rtu {
        link = link.with_framing(Framing::RtuSerial(
            station_controller::devices::bus::SerialSettings {
                baud: args.baud,
                parity: station_controller::devices::bus::Parity::None,
                stop_bits: 1,
            },
        ));
    }
    if args.rtu_over_tcp {
        link = link.with_framing(Framing::RtuOverTcp(LineSettings {
            baud: args.baud,
            bits_per_char: 10,
        }));
    }
    Ok((
        Arc::new(profile),
        ProfiledConfig {
            link,
            invert: false,
            rating_w: None,
        },
    ))
}

async fn probe_device(args: &ProbeArgs) -> Result<ExitCode> {
    let (profile, cfg) = probe_target(args)?;
    let target = format!(
        "{}:{} unit {}",
        cfg.link.host, cfg.link.port, cfg.link.unit_id
    );
    let mut dev = ProfileDevice::new(profile, cfg);
    let report = commission::probe(&mut dev, &target, args.write)
        .await
        .with_context(|| format!("cannot reach {target}"))?;
    print!("{report}");
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Logs go to stderr, coloured only when stderr is a terminal (not for journald or a file) and
/// `NO_COLOR` is unset.
fn init_logging(format: &str) -> Result<()> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    match format {
        "json" => tracing_subscriber::fmt()
            .json()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init(),
        "text" => tracing_subscriber::fmt()
            .with_ansi(colour)
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init(),
        other => anyhow::bail!("--log-format: expected text or json (got {other:?})"),
    }
    Ok(())
}

fn check_config(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(cfg) => {
            println!("{}: ok", path.display());
            println!("  station   {}", cfg.name);
            println!("  timezone  {}", cfg.timezone);
            println!(
                "  grid      import limit {:.1} kW, export limit {:.1} kW",
                cfg.policy.grid.import_limit.value() / 1000.0,
                cfg.policy.grid.export_limit.value() / 1000.0
            );
            println!("  cycle     {} s", cfg.policy.cycle_s);
            println!("  api       {}", cfg.api_listen);
            if let Some(m) = &cfg.mqtt {
                println!("  mqtt      {}:{} topics {}/", m.host, m.port, m.root());
            }
            for d in &cfg.devices {
                let driver = d.any_profile().map_or_else(
                    || "built-in driver".to_string(),
                    |p| format!("profile {} ({} {})", p.name, p.vendor, p.model),
                );
                println!(
                    "  device    {:<15} {}:{} unit {}, {driver}",
                    d.id, d.endpoint.host, d.endpoint.port, d.endpoint.unit_id
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Wait for SIGINT or SIGTERM.
async fn terminated() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

async fn run(config_path: PathBuf, ledger: Option<PathBuf>, ledger_flush_s: f64) -> Result<()> {
    if !(ledger_flush_s.is_finite() && (0.1..=600.0).contains(&ledger_flush_s)) {
        anyhow::bail!("--ledger-flush-s: must be within [0.1, 600] (got {ledger_flush_s})");
    }
    let cfg = config::load(&config_path).map_err(|e| match e {
        ConfigError::Invalid { .. } => anyhow::anyhow!("{e}"),
        other => anyhow::Error::new(other),
    })?;
    let deadline = cfg.shutdown_deadline;
    let notifier = Notifier::from_env();
    if let Some(w) = notifier.watchdog() {
        if let Some(why) = config::watchdog_issue(cfg.policy.cycle_s, w) {
            anyhow::bail!(
                "{}: policy.cycle_s: {why} (WATCHDOG_USEC from systemd)",
                config_path.display()
            );
        }
    }
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let handle = daemon::start(
        cfg,
        Arc::new(SystemClock),
        Options {
            ledger_path: ledger,
            ledger_flush: Duration::from_secs_f64(ledger_flush_s),
            notifier: notifier.clone(),
            ..Options::default()
        },
        cancel.clone(),
        &tracker,
    )
    .await?;
    tracing::info!(api = %handle.api_addr, config = %config_path.display(), "stationd running");

    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    let stop = terminated();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            r = &mut stop => { r?; break; }
            _ = hup.recv() => {
                notifier.reloading();
                match config::load(&config_path) {
                    Ok(new) => {
                        handle.replace_policy(new.policy).await;
                        tracing::info!("SIGHUP: policy reloaded (devices and api need a restart)");
                    }
                    Err(e) => tracing::error!(error = %e, "SIGHUP: new config rejected; the running policy stays"),
                }
                notifier.ready();
            }
        }
    }
    tracing::info!("stopping");
    cancel.cancel();
    tracker.close();
    if tokio::time::timeout(deadline + Duration::from_secs(1), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("tasks did not stop within the shutdown deadline");
    }
    Ok(())
}

async fn run_demo(
    scenario: &str,
    speed: f64,
    seed: u64,
    start: &str,
    listen: SocketAddr,
) -> Result<()> {
    let scenario = demo::scenario(scenario)?;
    let name = scenario.name.clone();
    let demo = Demo::start_at(scenario, seed, speed, Some(start), listen, |_| {}).await?;
    println!("stationd demo: scenario {name:?} at {speed}x, simulator and controller on loopback");
    for (id, addr) in demo.sim.addrs.devices() {
        println!("  {id:<15} modbus tcp {addr}");
    }
    println!("  simulator truth http://{}/truth", demo.sim.addrs.api);
    println!("  dashboard       http://{}/", demo.daemon.api_addr);
    println!("Ctrl-C stops.");
    terminated().await?;
    println!("stopping");
    demo.shutdown().await;
    Ok(())
}

async fn run_fleet(
    broker: String,
    listen: SocketAddr,
    prefix: String,
    credentials_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
) -> Result<()> {
    use station_controller::{fleet, mqtt::config::read_credentials};
    let credentials = match credentials_file {
        Some(p) => {
            Some(read_credentials(&p).map_err(|e| anyhow::anyhow!("--credentials-file: {e}"))?)
        }
        None => None,
    };
    let ca_pem = match ca_file {
        Some(p) => Some(
            std::fs::read(&p).with_context(|| format!("--ca-file: cannot read {}", p.display()))?,
        ),
        None => None,
    };
    let options = fleet::FleetOptions {
        broker,
        listen,
        prefix,
        credentials,
        ca_pem,
    };
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let addr = fleet::serve(options, cancel.clone(), &tracker).await?;
    println!("stationd fleet: http://{addr}/");
    terminated().await?;
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    init_logging(&cli.log_format)?;
    match cli.command {
        Command::CheckConfig { config } => Ok(check_config(&config)),
        Command::Probe(args) => probe_device(&args).await,
        Command::Run {
            config,
            ledger,
            ledger_flush_s,
        } => run(config, ledger, ledger_flush_s)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Demo {
            scenario,
            speed,
            seed,
            start,
            listen,
        } => run_demo(&scenario, speed, seed, &start, listen)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Fleet {
            broker,
            listen,
            prefix,
            credentials_file,
            ca_file,
        } => run_fleet(broker, listen, prefix, credentials_file, ca_file)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Backtest(args) => {
            match tokio::task::spawn_blocking(move || {
                station_controller::backtest::cli::run_cli(&args)
            })
            .await?
            {
                Ok(text) => {
                    println!("{text}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("stationd backtest: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
