//! Modbus RTU on an RS485 bus, reached through a transparent gateway (RTU frames inside a TCP
//! stream) or a serial port of this machine (tokio-serial: baud, parity, stop bits from the
//! config): one owner task per bus serialises the requests of every device on it, keeps the
//! inter-frame silence
//! RS485 needs (tokio-modbus leaves none, slowtec/tokio-modbus#180) and bounds each request by
//! its device's timeout. A dead device costs the bus one timeout per attempt (and its link
//! backs off), never more: the other devices' requests wait only behind it.
//!
//! Buses are shared by gateway address or serial device: [`Bus::shared`] returns the running
//! owner of `host:port` ([`Bus::shared_serial`]: of `/dev/ttyUSB0`) or starts one. The owner
//! task ends when the last handle is dropped.

use super::error::{
    DeviceError, FC_READ_HOLDING, FC_READ_INPUT, FC_WRITE_MULTIPLE, FC_WRITE_SINGLE,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_modbus::client::{rtu, Client, Context, Reader, Writer};
use tokio_modbus::slave::SlaveContext;
use tokio_modbus::Slave;

/// One request on the bus.
#[derive(Debug, Clone, PartialEq)]
pub enum BusOp {
    /// Read `count` registers with function 3 or 4.
    Read {
        function: u8,
        addr: u16,
        count: u16,
    },
    WriteSingle {
        addr: u16,
        value: u16,
    },
    WriteMultiple {
        addr: u16,
        values: Vec<u16>,
    },
}

impl BusOp {
    fn function_and_address(&self) -> (u8, u16) {
        match self {
            BusOp::Read { function, addr, .. } => (*function, *addr),
            BusOp::WriteSingle { addr, .. } => (FC_WRITE_SINGLE, *addr),
            BusOp::WriteMultiple { addr, .. } => (FC_WRITE_MULTIPLE, *addr),
        }
    }
}

struct Job {
    unit: u8,
    op: BusOp,
    timeout: Duration,
    reply: oneshot::Sender<Result<Vec<u16>, DeviceError>>,
}

/// Serial line settings that decide the silence between frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineSettings {
    /// Bits per second of the RS485 line behind the gateway.
    pub baud: u32,
    /// Bits per character: start + 8 data + parity + stop bits (10 for 8N1, 11 for 8E1/8N2).
    pub bits_per_char: u32,
}

impl LineSettings {
    /// Time of one character on the line.
    pub fn char_time(self) -> Duration {
        Duration::from_secs_f64(f64::from(self.bits_per_char) / f64::from(self.baud.max(1)))
    }

    /// The inter-frame silence: 3.5 characters, at least 1.75 ms (the spec's floor above
    /// 19200 baud).
    pub fn silence(self) -> Duration {
        self.char_time()
            .mul_f64(3.5)
            .max(Duration::from_micros(1750))
    }

    /// Time one transaction holds the bus: request and response frames, two silences and the
    /// device's turnaround.
    pub fn transaction(self, op: &BusOp, turnaround: Duration) -> Duration {
        let (request, response) = match op {
            BusOp::Read { count, .. } => (8, 5 + 2 * u32::from(*count)),
            BusOp::WriteSingle { .. } => (8, 8),
            BusOp::WriteMultiple { values, .. } => {
                (9 + 2 * u32::try_from(values.len()).unwrap_or(u32::MAX), 8)
            }
        };
        self.char_time() * (request + response) + self.silence() * 2 + turnaround
    }
}

/// Parity of a serial line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
}

/// Everything needed to open a serial port of this machine as an RS485 bus (8 data bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialSettings {
    pub baud: u32,
    pub parity: Parity,
    /// 1 or 2.
    pub stop_bits: u8,
}

impl SerialSettings {
    /// The timing of this line.
    pub fn line(self) -> LineSettings {
        let parity = u32::from(self.parity != Parity::None);
        LineSettings {
            baud: self.baud,
            bits_per_char: 9 + parity + u32::from(self.stop_bits.clamp(1, 2)),
        }
    }
}

/// Where a bus owner reaches its line.
#[derive(Debug, Clone)]
enum Target {
    /// A transparent gateway at `host:port`.
    Gateway(String),
    /// A serial port of this machine.
    Serial(String, SerialSettings),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Gateway(a) | Target::Serial(a, _) => f.write_str(a),
        }
    }
}

/// Handle of the owner task of one bus.
#[derive(Debug, Clone)]
pub struct Bus {
    tx: mpsc::Sender<Job>,
}

type Registry = Mutex<HashMap<(String, u16), Weak<Bus>>>;

fn registry() -> &'static Registry {
    static BUSES: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    BUSES.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Bus {
    /// The owner of the gateway at `host:port`, started on first use (needs a tokio runtime).
    pub fn shared(host: &str, port: u16, line: LineSettings) -> Arc<Bus> {
        Self::shared_at(
            (host.to_string(), port),
            Target::Gateway(format!("{host}:{port}")),
            line,
        )
    }

    /// The owner of the serial port at `path` (`/dev/ttyUSB0`), opened with `settings` on
    /// first use.
    pub fn shared_serial(path: &str, settings: SerialSettings) -> Arc<Bus> {
        Self::shared_at(
            (format!("serial:{path}"), 0),
            Target::Serial(path.to_string(), settings),
            settings.line(),
        )
    }

    fn shared_at(key: (String, u16), target: Target, line: LineSettings) -> Arc<Bus> {
        let mut map = registry()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(bus) = map.get(&key).and_then(Weak::upgrade) {
            return bus;
        }
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(owner(target, line, rx));
        let bus = Arc::new(Bus { tx });
        map.insert(key, Arc::downgrade(&bus));
        bus
    }

    /// Run one request for `unit`, bounded by `timeout` once it is on the bus. The reply is
    /// two-layered as on a TCP link: a device exception is `DeviceError::Exception`.
    pub async fn request(
        &self,
        unit: u8,
        op: BusOp,
        timeout: Duration,
    ) -> Result<Vec<u16>, DeviceError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                unit,
                op,
                timeout,
                reply,
            })
            .await
            .map_err(|_| DeviceError::Transport("bus owner stopped".into()))?;
        rx.await
            .map_err(|_| DeviceError::Transport("bus owner dropped the request".into()))?
    }
}

/// The owner task: one connection to the gateway, one request at a time.
async fn owner(target: Target, line: LineSettings, mut rx: mpsc::Receiver<Job>) {
    let mut ctx: Option<Context> = None;
    while let Some(job) = rx.recv().await {
        let result = run(&target, &mut ctx, &job).await;
        if matches!(result, Err(ref e) if e.is_link_failure()) {
            // A late reply would desynchronise every later frame: start over.
            if let Some(mut c) = ctx.take() {
                let _ = c.disconnect().await;
            }
        }
        tracing::trace!(bus = %target, unit = job.unit, ok = result.is_ok(), "bus request");
        let _ = job.reply.send(result);
        tokio::time::sleep(line.silence()).await;
    }
    tracing::debug!(bus = %target, "bus owner stopped: no device uses it any more");
}

/// Open the line: connect to the gateway, or open the serial port.
async fn open(target: &Target, job: &Job) -> Result<Context, DeviceError> {
    let after_ms = u64::try_from(job.timeout.as_millis()).unwrap_or(u64::MAX);
    match target {
        Target::Gateway(addr) => {
            match timeout(job.timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(s)) => Ok(rtu::attach_slave(s, Slave(job.unit))),
                Ok(Err(e)) => Err(DeviceError::Transport(format!("connect {addr}: {e}"))),
                Err(_) => Err(DeviceError::Timeout {
                    op: "connect",
                    after_ms,
                }),
            }
        }
        Target::Serial(path, s) => {
            use tokio_serial::SerialPortBuilderExt;
            let port = tokio_serial::new(path, s.baud)
                .data_bits(tokio_serial::DataBits::Eight)
                .parity(match s.parity {
                    Parity::None => tokio_serial::Parity::None,
                    Parity::Even => tokio_serial::Parity::Even,
                    Parity::Odd => tokio_serial::Parity::Odd,
                })
                .stop_bits(if s.stop_bits == 2 {
                    tokio_serial::StopBits::Two
                } else {
                    tokio_serial::StopBits::One
                })
                .open_native_async()
                .map_err(|e| DeviceError::Transport(format!("open serial port {path}: {e}")))?;
            Ok(rtu::attach_slave(port, Slave(job.unit)))
        }
    }
}

async fn run(
    target: &Target,
    ctx: &mut Option<Context>,
    job: &Job,
) -> Result<Vec<u16>, DeviceError> {
    let after_ms = u64::try_from(job.timeout.as_millis()).unwrap_or(u64::MAX);
    if ctx.is_none() {
        *ctx = Some(open(target, job).await?);
    }
    if let BusOp::Read { function, .. } = job.op {
        if function != FC_READ_HOLDING && function != FC_READ_INPUT {
            return Err(DeviceError::InvalidRequest(format!(
                "read function {function} (expected 3 or 4)"
            )));
        }
    }
    let Some(c) = ctx.as_mut() else {
        return Err(DeviceError::Disconnected);
    };
    c.set_slave(Slave(job.unit));
    let (function, address) = job.op.function_and_address();
    let fut = async {
        match &job.op {
            BusOp::Read {
                function: FC_READ_INPUT,
                addr,
                count,
            } => c.read_input_registers(*addr, *count).await,
            BusOp::Read { addr, count, .. } => c.read_holding_registers(*addr, *count).await,
            BusOp::WriteSingle { addr, value } => c
                .write_single_register(*addr, *value)
                .await
                .map(|r| r.map(|()| Vec::new())),
            BusOp::WriteMultiple { addr, values } => c
                .write_multiple_registers(*addr, values)
                .await
                .map(|r| r.map(|()| Vec::new())),
        }
    };
    match timeout(job.timeout, fut).await {
        Ok(Ok(Ok(words))) => Ok(words),
        Ok(Ok(Err(code))) => Err(DeviceError::Exception {
            function,
            address,
            code: u8::from(code),
        }),
        Ok(Err(e)) => Err(DeviceError::from(e)),
        Err(_) => Err(DeviceError::Timeout {
            op: "request",
            after_ms,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_three_and_a_half_characters_with_the_spec_floor() {
        let slow = LineSettings {
            baud: 9600,
            bits_per_char: 11,
        };
        assert!((slow.silence().as_secs_f64() - 3.5 * 11.0 / 9600.0).abs() < 1e-6);
        let fast = LineSettings {
            baud: 115_200,
            bits_per_char: 11,
        };
        assert_eq!(fast.silence(), Duration::from_micros(1750));
    }

    #[test]
    fn a_read_of_eight_registers_at_9600_8n1_holds_the_bus_about_forty_ms_plus_turnaround() {
        let line = LineSettings {
            baud: 9600,
            bits_per_char: 10,
        };
        let op = BusOp::Read {
            function: 3,
            addr: 0x2012,
            count: 8,
        };
        let t = line.transaction(&op, Duration::ZERO).as_secs_f64();
        // 8 + 21 characters of 1.042 ms and two silences of 3.65 ms.
        assert!(
            (t - (29.0 * 10.0 / 9600.0 + 2.0 * 3.5 * 10.0 / 9600.0)).abs() < 1e-6,
            "{t}"
        );
    }
}
