//! Modbus RTU through a transparent RS485 gateway: devices behind one gateway share one bus
//! owner that serialises their requests; a dead device costs the others at most its timeout.
//! The gateway and its meters are a pymodbus image (RTU framer over TCP) from `tests/peers/`.

// Test code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

use futures::future::join3;
use station_controller::devices::bus::LineSettings;
use station_controller::devices::link::{Framing, LinkConfig};
use station_controller::devices::profile::{self, ProfileDevice, ProfiledConfig, ProfiledReading};
use station_controller::devices::DeviceError;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::peer::Peer;

const TIMEOUT: Duration = Duration::from_millis(200);

fn meter(name: &str, port: u16, unit: u8) -> ProfileDevice {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/profiles");
    let line = LineSettings {
        baud: 9600,
        bits_per_char: 10,
    };
    ProfileDevice::new(
        Arc::new(profile::load(&dir, name).unwrap()),
        ProfiledConfig {
            link: LinkConfig::new("127.0.0.1", port, unit)
                .with_timeout(TIMEOUT)
                .with_backoff(Duration::from_millis(300), Duration::from_secs(2))
                .with_framing(Framing::RtuOverTcp(line)),
            invert: false,
            rating_w: None,
        },
    )
}

fn power(r: Result<ProfiledReading, DeviceError>) -> f64 {
    match r.unwrap() {
        ProfiledReading::Meter(m) => m.power_w,
        other => panic!("expected a meter reading, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Python with pymodbus (installed by .ci/run)"]
async fn three_meters_on_one_gateway_with_one_dead_keep_their_cycle() {
    let gateway = Peer::start("rs485_gateway.py").await;
    let mut chint = meter("chint-dtsu666", gateway.port, 1);
    let mut eastron = meter("eastron-sdm630", gateway.port, 2);
    let mut dead = meter("chint-dtsu666", gateway.port, 3);

    let mut worst = Duration::ZERO;
    let mut healthy = Vec::new();
    let mut dead_errors = Vec::new();
    for _ in 0..12 {
        let started = Instant::now();
        let (a, b, c) = join3(chint.read(), eastron.read(), dead.read()).await;
        let took = started.elapsed();
        worst = worst.max(took);
        assert!((power(a) - 4321.0).abs() < 1e-6);
        assert!((power(b) + 2500.0).abs() < 1e-6);
        dead_errors.push(c.unwrap_err());
        healthy.push(took);
    }
    // A cycle costs the healthy meters' requests plus at most one timeout of the dead one.
    assert!(
        worst < TIMEOUT + Duration::from_millis(250),
        "slowest cycle {worst:?} with a {TIMEOUT:?} timeout"
    );
    assert!(
        matches!(dead_errors[0], DeviceError::Timeout { .. }),
        "{:?}",
        dead_errors[0]
    );
    assert!(
        dead_errors
            .iter()
            .any(|e| matches!(e, DeviceError::Disconnected)),
        "the dead meter backs off instead of costing a timeout every cycle: {dead_errors:?}"
    );
    assert!(!dead.link().is_connected());
    assert!(chint.link().is_connected() && eastron.link().is_connected());
    // The measured bus figure (loopback, no line delay) for the README's budget.
    eprintln!("cycle times with one dead device: {healthy:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Python with pymodbus (installed by .ci/run)"]
async fn requests_of_two_meters_on_one_gateway_are_serialised_without_mixing_frames() {
    let gateway = Peer::start("rs485_gateway.py").await;
    let mut chint = meter("chint-dtsu666", gateway.port, 1);
    let mut eastron = meter("eastron-sdm630", gateway.port, 2);
    let started = Instant::now();
    for _ in 0..25 {
        let (a, b) = futures::future::join(chint.read(), eastron.read()).await;
        assert!((power(a) - 4321.0).abs() < 1e-6);
        assert!((power(b) + 2500.0).abs() < 1e-6);
    }
    let per_cycle = started.elapsed() / 25;
    eprintln!("two meters, one gateway: {per_cycle:?} per cycle on loopback");
    assert_eq!(
        chint.link().stats().timeouts + eastron.link().stats().timeouts,
        0
    );
}

/// The bus budget: how long one fast read of each shipped meter holds an RS485 bus, from its
/// request plan and the line timing (frames, 3.5-character silences) plus an assumed device
/// turnaround of 20 ms, and how many such meters fit a 1 s cycle.
#[test]
fn the_bus_budget_fits_five_or_six_shipped_meters_per_second_at_9600_baud() {
    use station_controller::devices::bus::BusOp;
    use station_controller::devices::profile::driver::fast_requests;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/profiles");
    let turnaround = Duration::from_millis(20);
    let mut rows = Vec::new();
    for name in ["chint-dtsu666", "eastron-sdm630"] {
        let p = profile::load(&dir, name).unwrap();
        for baud in [9600, 19200] {
            let line = LineSettings {
                baud,
                bits_per_char: 10,
            };
            let cycle: Duration = fast_requests(&p)
                .into_iter()
                .map(|(function, addr, count)| {
                    line.transaction(
                        &BusOp::Read {
                            function,
                            addr,
                            count,
                        },
                        turnaround,
                    )
                })
                .sum();
            let fit = (1.0 / cycle.as_secs_f64()).floor();
            eprintln!(
                "{name:<16} {baud:>6} baud 8N1: {:>6.1} ms per read, {fit} per 1 s cycle",
                cycle.as_secs_f64() * 1000.0
            );
            rows.push((name, baud, cycle, fit));
        }
    }
    // DTSU666 at 9600: 3 requests (2 + 8 + 2 registers) = 87.5 ms of line time + 3 x 20 ms.
    let (_, _, dtsu_9600, fit) = rows[0];
    assert!(
        (dtsu_9600.as_secs_f64() - 0.1475).abs() < 0.001,
        "{dtsu_9600:?}"
    );
    assert_eq!(fit, 6.0);
    // SDM630 at 9600: 4 requests (2 + 6 + 2 + 2 registers) = 108.3 ms + 4 x 20 ms.
    let (_, _, sdm_9600, fit) = rows[2];
    assert!(
        (sdm_9600.as_secs_f64() - 0.1883).abs() < 0.001,
        "{sdm_9600:?}"
    );
    assert_eq!(fit, 5.0);
    // Doubling the baud rate halves the line time but not the turnaround.
    assert!(
        rows.iter()
            .all(|(_, baud, _, fit)| *baud != 19200 || *fit >= 7.0),
        "{rows:?}"
    );
}

/// A child process killed when the test ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A pseudo serial RS485 line: a socat pseudo-terminal pair and a pymodbus RTU *serial* server
/// (pyserial) with the DTSU666 (unit 1) and SDM630 (unit 2) images on end `A`; the client side
/// is end `B`. Everything stops when it is dropped.
struct SerialLine {
    _pair: support::serial::PtyPair,
    server: tokio::process::Child,
    dir: std::path::PathBuf,
    b: std::path::PathBuf,
}

impl Drop for SerialLine {
    fn drop(&mut self) {
        drop(self.server.stdin.take());
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

async fn serial_line(name: &str) -> SerialLine {
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = std::env::temp_dir().join(format!("rs485-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pair = support::serial::PtyPair::open(&dir, "").await;
    let (a, b) = (pair.a.clone(), pair.b.clone());
    let python = std::env::var("STATION_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_string());
    let mut server = tokio::process::Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/rs485_serial_bus.py"
        ))
        .arg(&a)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ready.as_deref(), Some("READY"));
    SerialLine {
        _pair: pair,
        server,
        dir,
        b,
    }
}

/// A real RS485 line in miniature: the pseudo serial line of [`serial_line`], and socat
/// relaying its client end to TCP as a transparent gateway does. Both meters are read through
/// one bus owner over the serial framing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs socat and Python with pymodbus and pyserial (installed by .ci/run)"]
async fn two_meters_on_a_pseudo_serial_bus_behind_a_socat_gateway_read_their_documented_values() {
    use std::process::Command;
    let line = serial_line("gateway").await;
    let b = line.b.clone();
    let port = support::free_port();
    let _gateway = Child(
        Command::new("socat")
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"))
            .arg(format!("FILE:{},raw,echo=0", b.display()))
            .spawn()
            .unwrap(),
    );
    let mut chint = meter("chint-dtsu666", port, 1);
    let mut eastron = meter("eastron-sdm630", port, 2);
    // socat serves exactly one connection (the bus owner's): poll until it listens.
    support::until_async(
        "the first reading through socat",
        Duration::from_secs(20),
        async || chint.read().await.ok(),
    )
    .await;
    for _ in 0..5 {
        let (x, y) = futures::future::join(chint.read(), eastron.read()).await;
        assert!((power(x) - 4321.0).abs() < 1e-6);
        assert!((power(y) + 2500.0).abs() < 1e-6);
    }
    drop(line);
}

fn serial_meter(name: &str, path: &Path, unit: u8) -> ProfileDevice {
    use station_controller::devices::bus::{Parity, SerialSettings};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/profiles");
    let settings = SerialSettings {
        baud: 9600,
        parity: Parity::None,
        stop_bits: 1,
    };
    ProfileDevice::new(
        Arc::new(profile::load(&dir, name).unwrap()),
        ProfiledConfig {
            link: LinkConfig::new(path.display().to_string(), 0, unit)
                .with_timeout(TIMEOUT)
                .with_backoff(Duration::from_millis(300), Duration::from_secs(2))
                .with_framing(Framing::RtuSerial(settings)),
            invert: false,
            rating_w: None,
        },
    )
}

/// Native serial RTU (tokio-serial on a pseudo terminal, 9600 8N1): three meters on one port,
/// the third one dead. The two that answer keep their cycle; the dead one costs at most its
/// timeout per cycle and then backs off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs socat and Python with pymodbus and pyserial (installed by .ci/run)"]
async fn three_meters_on_a_native_serial_port_with_one_dead_keep_their_cycle() {
    let line = serial_line("native").await;
    let mut chint = serial_meter("chint-dtsu666", &line.b, 1);
    let mut eastron = serial_meter("eastron-sdm630", &line.b, 2);
    let mut dead = serial_meter("chint-dtsu666", &line.b, 3);
    let mut cycles = Vec::new();
    let mut dead_errors = Vec::new();
    for _ in 0..12 {
        let started = Instant::now();
        let (a, b, c) = join3(chint.read(), eastron.read(), dead.read()).await;
        cycles.push(started.elapsed());
        assert!((power(a) - 4321.0).abs() < 1e-6);
        assert!((power(b) + 2500.0).abs() < 1e-6);
        dead_errors.push(c.unwrap_err());
    }
    let worst = cycles.iter().max().copied().unwrap();
    assert!(
        worst < TIMEOUT + Duration::from_millis(400),
        "slowest cycle {worst:?} with a {TIMEOUT:?} timeout: {cycles:?}"
    );
    assert!(
        matches!(dead_errors[0], DeviceError::Timeout { .. }),
        "{:?}",
        dead_errors[0]
    );
    assert!(
        dead_errors
            .iter()
            .any(|e| matches!(e, DeviceError::Disconnected)),
        "the dead meter backs off: {dead_errors:?}"
    );
    assert!(chint.link().is_connected() && eastron.link().is_connected());
    assert!(!dead.link().is_connected());
    eprintln!("native serial, two meters and a dead one: {cycles:?}");
    drop(line);
}

/// The measured bus budget on the pseudo serial line: the time one fast read of each meter
/// holds the bus, with the 3.5-character silence of 9600 baud. A pseudo terminal moves bytes
/// without line delay, so this measures the software side (framing, the owner's turns, the
/// pymodbus server's answer); on a real line add the frames' line time (see the computed
/// budget above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs socat and Python with pymodbus and pyserial (installed by .ci/run)"]
async fn measured_bus_time_per_meter_read_on_a_native_serial_port() {
    let line = serial_line("budget").await;
    let mut chint = serial_meter("chint-dtsu666", &line.b, 1);
    let mut eastron = serial_meter("eastron-sdm630", &line.b, 2);
    // Connect and identify once.
    let _ = futures::future::join(chint.read(), eastron.read()).await;
    let n = 40;
    let started = Instant::now();
    for _ in 0..n {
        let (a, b) = futures::future::join(chint.read(), eastron.read()).await;
        assert!((power(a) - 4321.0).abs() < 1e-6);
        assert!((power(b) + 2500.0).abs() < 1e-6);
    }
    let per_read = started.elapsed() / (2 * n);
    let fit = (1.0 / per_read.as_secs_f64()).floor();
    eprintln!(
        "native serial (pty, no line delay): {per_read:?} per meter read, {fit} meters per 1 s cycle"
    );
    assert!(per_read < Duration::from_millis(500), "{per_read:?}");
    drop(line);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Python with pymodbus (installed by .ci/run)"]
async fn an_exception_through_the_gateway_is_an_exception_and_keeps_the_device_online() {
    use station_controller::devices::link::Link;
    let gateway = Peer::start("rs485_gateway.py").await;
    let line = LineSettings {
        baud: 9600,
        bits_per_char: 10,
    };
    let mut link = Link::new(
        LinkConfig::new("127.0.0.1", gateway.port, 1)
            .with_timeout(TIMEOUT)
            .with_framing(Framing::RtuOverTcp(line)),
    );
    let words = link.read_holding(0x2006, 2).await.unwrap();
    assert_eq!(words.len(), 2);
    // The DTSU666 image has nothing at 0x0100: the meter answers "illegal data address".
    let err = link.read_holding(0x0100, 2).await.unwrap_err();
    assert_eq!(
        err,
        DeviceError::Exception {
            function: 3,
            address: 0x0100,
            code: 2
        }
    );
    assert!(link.is_connected());
    assert_eq!(link.stats().exceptions, 1);
    assert_eq!(link.stats().connects, 1, "an exception is no reconnect");
    assert_eq!(
        link.read_input(0x2006, 2).await.unwrap(),
        words,
        "the meter answers 3 and 4 alike"
    );
}
