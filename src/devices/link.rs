//! `Link`: the owner of one Modbus TCP connection to one device.
//!
//! * The unit id is always set explicitly (tokio-modbus defaults to 255).
//! * Every connect and every request is bounded by `tokio::time::timeout` (the client has none).
//! * After a timeout or a transport/protocol error the connection is dropped: a late reply would
//!   otherwise desynchronise every later transaction. The next attempt waits for a capped
//!   exponential back-off (`backoff_min` doubling up to `backoff_max`), so a dead device never
//!   causes a tight reconnect loop.
//! * `&mut self` on every request guarantees one request in flight per connection.
//! * Reads longer than 125 registers are split into several requests; writes are limited to 123.
//!
//! Time comes from `tokio::time::Instant`, so tests may run under tokio's paused clock.

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;
use tokio::time::{timeout, Instant};
use tokio_modbus::client::{tcp, Context, Reader, Writer};
use tokio_modbus::Slave;

use super::bus::{Bus, BusOp, LineSettings, SerialSettings};
use super::error::{
    DeviceError, FC_READ_HOLDING, FC_READ_INPUT, FC_WRITE_MULTIPLE, FC_WRITE_SINGLE,
};

/// Most registers one "read holding registers" request may carry.
pub const MAX_READ_REGS: u16 = 125;
/// Most registers one "write multiple registers" request may carry.
pub const MAX_WRITE_REGS: usize = 123;

/// How to reach one device.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Host name or IP address.
    pub host: String,
    /// TCP port (502 on real devices).
    pub port: u16,
    /// Modbus unit id (1 for most devices; Alfen socket 1, station 200).
    pub unit_id: u8,
    /// Bound on each connect and each request.
    pub timeout: Duration,
    /// First reconnect delay after a failure.
    pub backoff_min: Duration,
    /// Cap of the doubling reconnect delay.
    pub backoff_max: Duration,
    /// Consecutive link failures after which the state becomes `Offline` (before: `Degraded`).
    pub offline_after_failures: u32,
    /// Modbus TCP, or RTU frames through a transparent RS485 gateway.
    pub framing: Framing,
}

/// How requests travel to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Modbus TCP (MBAP header), one connection per device.
    Tcp,
    /// Modbus RTU inside a TCP stream to a transparent RS485 gateway; every device behind the
    /// same gateway shares one [`Bus`] owner.
    RtuOverTcp(LineSettings),
    /// Modbus RTU on a serial port of this machine (the link's `host` is its path, e.g.
    /// `/dev/ttyUSB0`); every device on the same port shares one [`Bus`] owner.
    RtuSerial(SerialSettings),
}

impl LinkConfig {
    /// Defaults for a field device: 1 s timeout, back-off 0.5 s doubling to 30 s, offline after
    /// 3 consecutive failures.
    pub fn new(host: impl Into<String>, port: u16, unit_id: u8) -> Self {
        LinkConfig {
            host: host.into(),
            port,
            unit_id,
            timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            offline_after_failures: 3,
            framing: Framing::Tcp,
        }
    }

    /// Same config with another framing.
    pub fn with_framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// Same config with another timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Same config with another back-off range.
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }
}

/// Health of a device link. A Modbus exception proves the transport works and counts as
/// `Online`; whether the device accepted the request is in the request's result. The daemon
/// also shows a device whose readings fail validation as `Degraded` (the one link state the
/// status, metrics and dashboard use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Last request succeeded.
    Online,
    /// Recent failures, fewer than `offline_after_failures` in a row.
    Degraded,
    /// Never connected, or `offline_after_failures` failures in a row.
    Offline,
}

impl LinkState {
    /// The state as the status JSON and the metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Online => "online",
            LinkState::Degraded => "degraded",
            LinkState::Offline => "offline",
        }
    }
}

/// Counters of a link since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkStats {
    /// Successful TCP connects.
    pub connects: u64,
    /// Failed TCP connects (refused, unreachable, timed out).
    pub connect_failures: u64,
    /// Successful requests (reads and writes).
    pub requests_ok: u64,
    /// Requests answered with a Modbus exception.
    pub exceptions: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Requests that failed on transport or protocol errors.
    pub transport_errors: u64,
    /// Requests refused locally because the back-off had not elapsed.
    pub skipped_backoff: u64,
}

/// One connection owner for one device (see module docs).
pub struct Link {
    cfg: LinkConfig,
    ctx: Option<Context>,
    /// RTU over TCP: the bus owner, and whether the device answered its last request.
    bus: Option<Arc<Bus>>,
    bus_ok: bool,
    state: LinkState,
    last_good: Option<Instant>,
    next_attempt: Option<Instant>,
    backoff: Duration,
    consecutive_failures: u32,
    stats: LinkStats,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("cfg", &self.cfg)
            .field("connected", &self.ctx.is_some())
            .field("state", &self.state)
            .field("last_good", &self.last_good)
            .field("next_attempt", &self.next_attempt)
            .field("backoff", &self.backoff)
            .field("consecutive_failures", &self.consecutive_failures)
            .field("stats", &self.stats)
            .finish()
    }
}

enum Op<'a> {
    Read(u16, u16),
    ReadInput(u16, u16),
    WriteSingle(u16, u16),
    WriteMultiple(u16, &'a [u16]),
}

impl Link {
    /// A link that connects lazily on its first request.
    pub fn new(cfg: LinkConfig) -> Self {
        let backoff = cfg.backoff_min;
        Link {
            cfg,
            ctx: None,
            bus: None,
            bus_ok: false,
            state: LinkState::Offline,
            last_good: None,
            next_attempt: None,
            backoff,
            consecutive_failures: 0,
            stats: LinkStats::default(),
        }
    }

    /// The configuration this link was built with.
    pub fn config(&self) -> &LinkConfig {
        &self.cfg
    }

    /// Current health.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// When the last request succeeded.
    pub fn last_good(&self) -> Option<Instant> {
        self.last_good
    }

    /// Counters.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// True while a TCP connection is held (RTU over TCP: while the device answers).
    pub fn is_connected(&self) -> bool {
        match self.cfg.framing {
            Framing::Tcp => self.ctx.is_some(),
            Framing::RtuOverTcp(_) | Framing::RtuSerial(_) => self.bus_ok,
        }
    }

    /// Earliest time of the next connect attempt, if one is being held back.
    pub fn next_attempt(&self) -> Option<Instant> {
        self.next_attempt
    }

    /// Drop the connection now (the next request reconnects without waiting).
    pub fn disconnect(&mut self) {
        self.ctx = None;
        self.bus_ok = false;
        self.next_attempt = None;
    }

    /// A request was given up from outside (the cycle's budget ran out): drop the connection so
    /// a late answer is never taken for the next request's, and count it as a failure (the
    /// link degrades, and reconnects after its back-off).
    pub fn abandon(&mut self) {
        self.drop_connection();
    }

    /// True for a Modbus TCP link without a connection (an RS485 bus has none to make).
    pub fn needs_connect(&self) -> bool {
        self.cfg.framing == Framing::Tcp && self.ctx.is_none()
    }

    /// Wait out the reconnect back-off, if one is running (cancel-safe: it only sleeps).
    pub async fn wait_backoff(&mut self) {
        if let Some(at) = self.next_attempt {
            tokio::time::sleep_until(at).await;
        }
    }

    /// Connect now (after [`Link::wait_backoff`]); a link already connected, or one on an
    /// RS485 bus, has nothing to do.
    pub async fn connect(&mut self) -> Result<(), DeviceError> {
        if self.cfg.framing != Framing::Tcp {
            return Ok(());
        }
        self.ensure_connected().await
    }

    /// Read `count` holding registers starting at `addr`, split into requests of at most 125.
    pub async fn read_holding(&mut self, addr: u16, count: u16) -> Result<Vec<u16>, DeviceError> {
        self.read_registers(FC_READ_HOLDING, addr, count).await
    }

    /// Read `count` input registers (function 4) starting at `addr`, split as `read_holding`.
    pub async fn read_input(&mut self, addr: u16, count: u16) -> Result<Vec<u16>, DeviceError> {
        self.read_registers(FC_READ_INPUT, addr, count).await
    }

    /// Read with function 3 (holding) or 4 (input); any other function is refused.
    pub async fn read_registers(
        &mut self,
        function: u8,
        addr: u16,
        count: u16,
    ) -> Result<Vec<u16>, DeviceError> {
        if function != FC_READ_HOLDING && function != FC_READ_INPUT {
            return Err(DeviceError::InvalidRequest(format!(
                "read function {function} (expected 3 or 4)"
            )));
        }
        if count == 0 {
            return Err(DeviceError::InvalidRequest("read of 0 registers".into()));
        }
        if u32::from(addr) + u32::from(count) > 0x1_0000 {
            return Err(DeviceError::InvalidRequest(format!(
                "read of {count} registers at {addr} runs past 65535"
            )));
        }
        let mut out = Vec::with_capacity(usize::from(count));
        let mut done: u16 = 0;
        while done < count {
            let n = (count - done).min(MAX_READ_REGS);
            let op = if function == FC_READ_INPUT {
                Op::ReadInput(addr + done, n)
            } else {
                Op::Read(addr + done, n)
            };
            let words = self.request(op).await?;
            if words.len() != usize::from(n) {
                self.fail_transport();
                return Err(DeviceError::Transport(format!(
                    "asked {n} registers at {}, got {}",
                    addr + done,
                    words.len()
                )));
            }
            out.extend_from_slice(&words);
            done += n;
        }
        Ok(out)
    }

    /// Write one register with function 0x06.
    pub async fn write_single(&mut self, addr: u16, value: u16) -> Result<(), DeviceError> {
        self.request(Op::WriteSingle(addr, value)).await.map(|_| ())
    }

    /// Write up to 123 registers with function 0x10 (one request, never split).
    pub async fn write_multiple(&mut self, addr: u16, values: &[u16]) -> Result<(), DeviceError> {
        if values.is_empty() || values.len() > MAX_WRITE_REGS {
            return Err(DeviceError::InvalidRequest(format!(
                "write of {} registers (allowed 1..=123)",
                values.len()
            )));
        }
        self.request(Op::WriteMultiple(addr, values))
            .await
            .map(|_| ())
    }

    async fn ensure_connected(&mut self) -> Result<(), DeviceError> {
        if self.ctx.is_some() {
            return Ok(());
        }
        if let Some(at) = self.next_attempt {
            if Instant::now() < at {
                self.stats.skipped_backoff += 1;
                return Err(DeviceError::Disconnected);
            }
        }
        let after_ms = duration_ms(self.cfg.timeout);
        let target = format!("{}:{}", self.cfg.host, self.cfg.port);
        let slave = Slave(self.cfg.unit_id);
        let attempt = async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host(target).await?.collect();
            let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
            for a in addrs {
                match tcp::connect_slave(a, slave).await {
                    Ok(ctx) => return Ok(ctx),
                    Err(e) => last = e,
                }
            }
            Err(last)
        };
        match timeout(self.cfg.timeout, attempt).await {
            Ok(Ok(ctx)) => {
                self.ctx = Some(ctx);
                self.next_attempt = None;
                self.stats.connects += 1;
                Ok(())
            }
            Ok(Err(e)) => {
                self.stats.connect_failures += 1;
                self.note_link_failure();
                Err(DeviceError::Transport(format!("connect: {e}")))
            }
            Err(_) => {
                self.stats.connect_failures += 1;
                self.note_link_failure();
                Err(DeviceError::Timeout {
                    op: "connect",
                    after_ms,
                })
            }
        }
    }

    async fn request(&mut self, op: Op<'_>) -> Result<Vec<u16>, DeviceError> {
        if self.cfg.framing != Framing::Tcp {
            return self.bus_request(op).await;
        }
        self.ensure_connected().await?;
        let Some(ctx) = self.ctx.as_mut() else {
            return Err(DeviceError::Disconnected);
        };
        let (function, address, op_name) = match op {
            Op::Read(a, _) => (FC_READ_HOLDING, a, "read"),
            Op::ReadInput(a, _) => (FC_READ_INPUT, a, "read"),
            Op::WriteSingle(a, _) => (FC_WRITE_SINGLE, a, "write"),
            Op::WriteMultiple(a, _) => (FC_WRITE_MULTIPLE, a, "write"),
        };
        let fut = async {
            match op {
                Op::Read(a, n) => ctx.read_holding_registers(a, n).await,
                Op::ReadInput(a, n) => ctx.read_input_registers(a, n).await,
                Op::WriteSingle(a, v) => ctx
                    .write_single_register(a, v)
                    .await
                    .map(|r| r.map(|()| Vec::new())),
                Op::WriteMultiple(a, v) => ctx
                    .write_multiple_registers(a, v)
                    .await
                    .map(|r| r.map(|()| Vec::new())),
            }
        };
        match timeout(self.cfg.timeout, fut).await {
            Ok(Ok(Ok(words))) => {
                self.note_success();
                Ok(words)
            }
            Ok(Ok(Err(code))) => {
                self.note_exception();
                Err(DeviceError::Exception {
                    function,
                    address,
                    code: u8::from(code),
                })
            }
            Ok(Err(e)) => {
                self.fail_transport();
                Err(DeviceError::from(e))
            }
            Err(_) => {
                self.stats.timeouts += 1;
                self.drop_connection();
                Err(DeviceError::Timeout {
                    op: op_name,
                    after_ms: duration_ms(self.cfg.timeout),
                })
            }
        }
    }

    /// The device answered with an exception: the transport is fine, keep the connection.
    /// `last_good` stays the time of the last successful request.
    fn note_exception(&mut self) {
        self.stats.exceptions += 1;
        self.consecutive_failures = 0;
        self.backoff = self.cfg.backoff_min;
        self.state = LinkState::Online;
    }

    /// One request through the bus owner of the gateway, with this link's back-off and
    /// accounting (a device answering again after a failure counts as a new connection).
    async fn bus_request(&mut self, op: Op<'_>) -> Result<Vec<u16>, DeviceError> {
        if let Some(at) = self.next_attempt {
            if Instant::now() < at {
                self.stats.skipped_backoff += 1;
                return Err(DeviceError::Disconnected);
            }
        }
        let (host, port, framing) = (self.cfg.host.clone(), self.cfg.port, self.cfg.framing);
        let bus = match (&self.bus, framing) {
            (Some(bus), _) => Arc::clone(bus),
            (None, Framing::RtuSerial(s)) => Bus::shared_serial(&host, s),
            (None, Framing::RtuOverTcp(line)) => Bus::shared(&host, port, line),
            (None, Framing::Tcp) => {
                return Err(DeviceError::InvalidRequest(
                    "a Modbus TCP link has no RS485 bus".into(),
                ))
            }
        };
        self.bus = Some(Arc::clone(&bus));
        let bus_op = match op {
            Op::Read(addr, count) => BusOp::Read {
                function: FC_READ_HOLDING,
                addr,
                count,
            },
            Op::ReadInput(addr, count) => BusOp::Read {
                function: FC_READ_INPUT,
                addr,
                count,
            },
            Op::WriteSingle(addr, value) => BusOp::WriteSingle { addr, value },
            Op::WriteMultiple(addr, values) => BusOp::WriteMultiple {
                addr,
                values: values.to_vec(),
            },
        };
        let result = bus
            .request(self.cfg.unit_id, bus_op, self.cfg.timeout)
            .await;
        match &result {
            Ok(_) | Err(DeviceError::Exception { .. }) => {
                if !self.bus_ok {
                    self.bus_ok = true;
                    self.stats.connects += 1;
                    self.next_attempt = None;
                }
                if result.is_ok() {
                    self.note_success();
                } else {
                    self.note_exception();
                }
            }
            Err(e) => {
                if matches!(e, DeviceError::Timeout { .. }) {
                    self.stats.timeouts += 1;
                } else {
                    self.stats.transport_errors += 1;
                }
                self.bus_ok = false;
                self.note_link_failure();
            }
        }
        result
    }

    fn note_success(&mut self) {
        self.stats.requests_ok += 1;
        self.last_good = Some(Instant::now());
        self.consecutive_failures = 0;
        self.backoff = self.cfg.backoff_min;
        self.state = LinkState::Online;
    }

    fn fail_transport(&mut self) {
        self.stats.transport_errors += 1;
        self.drop_connection();
    }

    /// Drop the connection after a failed request; the next connect waits for the back-off.
    fn drop_connection(&mut self) {
        self.ctx = None;
        self.bus_ok = false;
        self.note_link_failure();
    }

    fn note_link_failure(&mut self) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.next_attempt = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(self.cfg.backoff_max);
        self.state = if self.consecutive_failures >= self.cfg.offline_after_failures.max(1)
            || self.last_good.is_none()
        {
            LinkState::Offline
        } else {
            LinkState::Degraded
        };
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
