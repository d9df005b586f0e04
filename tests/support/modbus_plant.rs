//! An in-test Modbus TCP server (tokio-modbus `tcp-server`) serving register images per unit
//! id, logging every request: the device drivers' tests and their property tests
//! (`tests/devices.rs`, `tests/device_decoding.rs`) build their images on it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use station_controller::devices::LinkConfig;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_modbus::server::tcp::{accept_tcp_connection, Server};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

/// Registers of one unit id; reads or writes touching an unmapped register get exception 0x02.
pub(crate) struct Bank {
    regs: Vec<u16>,
    mapped: Vec<bool>,
}

impl Bank {
    fn new() -> Self {
        Bank {
            regs: vec![0; 0x1_0000],
            mapped: vec![false; 0x1_0000],
        }
    }

    pub(crate) fn load(&mut self, start: u16, words: &[u16]) {
        for (i, w) in words.iter().enumerate() {
            let a = usize::from(start) + i;
            self.regs[a] = *w;
            self.mapped[a] = true;
        }
    }

    fn range_ok(&self, addr: u16, n: usize) -> bool {
        let a = usize::from(addr);
        a + n <= 0x1_0000 && self.mapped[a..a + n].iter().all(|m| *m)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Logged {
    Read(u8, u16, u16),
    WriteSingle(u8, u16, u16),
    WriteMultiple(u8, u16, Vec<u16>),
}

#[derive(Default)]
pub(crate) struct Plant {
    pub(crate) units: Mutex<HashMap<u8, Bank>>,
    pub(crate) mute: AtomicBool,
    pub(crate) log: Mutex<Vec<Logged>>,
    /// (unit, first, last) register ranges that refuse writes with exception 0x02.
    pub(crate) read_only: Mutex<Vec<(u8, u16, u16)>>,
}

impl Plant {
    pub(crate) fn with_unit(self: &Arc<Self>, unit: u8, start: u16, words: &[u16]) -> Arc<Self> {
        self.units
            .lock()
            .unwrap()
            .entry(unit)
            .or_insert_with(Bank::new)
            .load(start, words);
        self.clone()
    }

    pub(crate) fn reg(&self, unit: u8, addr: u16) -> u16 {
        self.units.lock().unwrap()[&unit].regs[usize::from(addr)]
    }

    pub(crate) fn regs(&self, unit: u8, addr: u16, n: usize) -> Vec<u16> {
        let a = usize::from(addr);
        self.units.lock().unwrap()[&unit].regs[a..a + n].to_vec()
    }

    pub(crate) fn set(&self, unit: u8, addr: u16, words: &[u16]) {
        self.units
            .lock()
            .unwrap()
            .get_mut(&unit)
            .unwrap()
            .load(addr, words);
    }

    pub(crate) fn writes(&self) -> Vec<Logged> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| !matches!(l, Logged::Read(..)))
            .cloned()
            .collect()
    }

    fn writable(&self, unit: u8, addr: u16, n: usize) -> bool {
        let last = usize::from(addr) + n - 1;
        !self.read_only.lock().unwrap().iter().any(|(u, a, b)| {
            *u == unit && usize::from(addr) <= usize::from(*b) && last >= usize::from(*a)
        })
    }

    fn handle(&self, req: SlaveRequest<'static>) -> Result<Option<Response>, ExceptionCode> {
        if self.mute.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let unit = req.slave;
        let mut units = self.units.lock().unwrap();
        let Some(bank) = units.get_mut(&unit) else {
            return Err(ExceptionCode::GatewayTargetDevice);
        };
        let mut log = self.log.lock().unwrap();
        match req.request {
            Request::ReadHoldingRegisters(addr, n) => {
                log.push(Logged::Read(unit, addr, n));
                if n == 0 || n > 125 {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                if !bank.range_ok(addr, usize::from(n)) {
                    return Err(ExceptionCode::IllegalDataAddress);
                }
                let a = usize::from(addr);
                Ok(Some(Response::ReadHoldingRegisters(
                    bank.regs[a..a + usize::from(n)].to_vec(),
                )))
            }
            Request::WriteSingleRegister(addr, v) => {
                log.push(Logged::WriteSingle(unit, addr, v));
                if !bank.range_ok(addr, 1) || !self.writable(unit, addr, 1) {
                    return Err(ExceptionCode::IllegalDataAddress);
                }
                bank.regs[usize::from(addr)] = v;
                Ok(Some(Response::WriteSingleRegister(addr, v)))
            }
            Request::WriteMultipleRegisters(addr, words) => {
                log.push(Logged::WriteMultiple(unit, addr, words.to_vec()));
                if words.is_empty() || words.len() > 123 {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                if !bank.range_ok(addr, words.len()) || !self.writable(unit, addr, words.len()) {
                    return Err(ExceptionCode::IllegalDataAddress);
                }
                bank.load(addr, &words);
                Ok(Some(Response::WriteMultipleRegisters(
                    addr,
                    words.len() as u16,
                )))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

pub(crate) struct Svc(Arc<Plant>);

impl tokio_modbus::server::Service for Svc {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        std::future::ready(self.0.handle(req))
    }
}

pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    pub(crate) stop: Option<oneshot::Sender<()>>,
    pub(crate) task: JoinHandle<()>,
}

impl Running {
    pub(crate) async fn kill(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap();
    }
}

pub(crate) async fn serve(plant: Arc<Plant>, bind: SocketAddr) -> Running {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let server = Server::new(listener);
        let on_connected = move |stream: tokio::net::TcpStream, socket_addr: SocketAddr| {
            let plant = plant.clone();
            async move {
                accept_tcp_connection(stream, socket_addr, move |_| Ok(Some(Svc(plant.clone()))))
            }
        };
        let abort = async move {
            let _ = stopped.await;
        };
        server
            .serve_until(&on_connected, |_err| {}, abort)
            .await
            .unwrap();
    });
    wait_until_answering(addr).await;
    Running {
        addr,
        stop: Some(stop),
        task,
    }
}

pub(crate) async fn start(plant: Arc<Plant>) -> Running {
    serve(plant, "127.0.0.1:0".parse().unwrap()).await
}

/// Poll with a plain TCP connect until the listener accepts (at most 10 s).
pub(crate) async fn wait_until_answering(addr: SocketAddr) {
    super::until_async(
        &format!("the server at {addr} to answer"),
        Duration::from_secs(10),
        async || tokio::net::TcpStream::connect(addr).await.ok(),
    )
    .await;
}

/// A loopback address nothing listens on: connects are refused at once.
pub(crate) fn closed_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], super::free_port()))
}

pub(crate) fn fast_link(addr: SocketAddr, unit: u8) -> LinkConfig {
    LinkConfig::new(addr.ip().to_string(), addr.port(), unit)
        .with_timeout(Duration::from_millis(200))
        .with_backoff(Duration::from_millis(20), Duration::from_millis(160))
}

/// A SunSpec model: ID, length and `len` registers, zero but for `points` (offsets counted
/// from the ID register, as pysunspec2's model JSON counts them).
pub(crate) fn model(id: u16, len: u16, points: &[(u16, u16)]) -> Vec<u16> {
    let mut m = vec![0u16; usize::from(len) + 2];
    m[0] = id;
    m[1] = len;
    for (off, v) in points {
        m[usize::from(*off)] = *v;
    }
    m
}

/// A SunSpec device image: the "SunS" marker, the models, the end marker.
pub(crate) fn image(models: &[Vec<u16>]) -> Vec<u16> {
    let mut v = vec![0x5375, 0x6E53];
    for m in models {
        v.extend_from_slice(m);
    }
    v.extend_from_slice(&[0xFFFF, 0]);
    v
}
