//! The Modbus TCP server of one device: connection handling, wire faults, reads and writes.

use super::image::Image;
use super::profile::{Framing, ServedProfile};
use super::writes::{decode_write, Field};
use super::{alfen, sunspec, DeviceKind, DeviceSpec, WireError};
use crate::view::{Station, StationView, WireFaults};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_modbus::server::tcp::Server;
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_util::sync::CancellationToken;

/// Largest register count of one read (Modbus application protocol, FC3/FC4).
pub const MAX_READ: u16 = 125;
/// Largest register count of one write-multiple (FC16).
pub const MAX_WRITE: u16 = 123;

struct Cached {
    view: Arc<StationView>,
    bad_values: Vec<(String, f64)>,
    image: Option<Arc<Image>>,
}

#[derive(Default)]
struct DeviceState {
    cache: Option<Cached>,
    /// The image captured when a freeze began; served while the freeze lasts.
    frozen: Option<Option<Arc<Image>>>,
}

/// State shared by every connection of one device.
struct Device {
    spec: DeviceSpec,
    station: Arc<dyn Station>,
    fields: Vec<Field>,
    /// Served with a profile's map instead of the built-in one.
    profile: Option<ServedProfile>,
    state: Mutex<DeviceState>,
}

/// Applies named point overrides (`WireFaults::bad_values`) to the device's part of the view.
fn override_points(view: &mut StationView, kind: &DeviceKind, bad: &[(String, f64)]) {
    for (name, value) in bad {
        let value = *value;
        let known = match (kind, name.as_str()) {
            (DeviceKind::Pv, "power_w") => {
                view.pv.power_w = value;
                true
            }
            (DeviceKind::Battery, "soc_pct") => {
                view.battery.soc_pct = value;
                true
            }
            (DeviceKind::Battery, "soh_pct") => {
                view.battery.soh_pct = value;
                true
            }
            (DeviceKind::Battery, "power_w") => {
                view.battery.power_w = value;
                true
            }
            (DeviceKind::Battery, "voltage_v") => {
                view.battery.voltage_v = value;
                true
            }
            (DeviceKind::GridMeter, "power_w") => {
                view.grid_meter.power_w = value;
                true
            }
            (DeviceKind::BuildingMeter, "power_w") => {
                view.building_meter.power_w = value;
                true
            }
            (DeviceKind::Charger { index }, "power_w") => match view.chargers.get_mut(*index) {
                Some(c) => {
                    c.power_w = value;
                    true
                }
                None => false,
            },
            (DeviceKind::Charger { index }, "current_a") => match view.chargers.get_mut(*index) {
                Some(c) => {
                    c.current_a = [value; 3];
                    true
                }
                None => false,
            },
            _ => false,
        };
        if !known {
            tracing::debug!(point = %name, ?kind, "bad value for an unknown point ignored");
        }
    }
}

/// Renders the register image `spec` shows for `view` (after `bad_values` overrides).
/// `None` when the view has no such device (a charger index beyond the view's chargers).
pub fn render(
    spec: &DeviceSpec,
    view: &StationView,
    bad_values: &[(String, f64)],
) -> Option<Image> {
    let overridden;
    let view = if bad_values.is_empty() {
        view
    } else {
        let mut v = view.clone();
        override_points(&mut v, &spec.kind, bad_values);
        overridden = v;
        &overridden
    };
    Some(match spec.kind {
        DeviceKind::Pv => sunspec::render_pv(&view.pv, &spec.id),
        DeviceKind::Battery => sunspec::render_battery(&view.battery, &spec.id),
        DeviceKind::GridMeter => sunspec::render_meter(&view.grid_meter, "Grid meter", &spec.id),
        DeviceKind::BuildingMeter => {
            sunspec::render_meter(&view.building_meter, "Building meter", &spec.id)
        }
        DeviceKind::Charger { index } => alfen::render_charger(view.chargers.get(index)?),
    })
}

impl Device {
    fn new(spec: DeviceSpec, station: Arc<dyn Station>, profile: Option<ServedProfile>) -> Self {
        let fields = match spec.kind {
            DeviceKind::Pv => sunspec::pv_fields(),
            DeviceKind::Battery => sunspec::battery_fields(),
            DeviceKind::GridMeter | DeviceKind::BuildingMeter => Vec::new(),
            DeviceKind::Charger { index } => alfen::charger_fields(index),
        };
        Device {
            spec,
            station,
            fields,
            profile,
            state: Mutex::new(DeviceState::default()),
        }
    }

    /// The live image, re-rendered only when the view or the bad values changed.
    fn live_image(&self, state: &mut DeviceState, faults: &WireFaults) -> Option<Arc<Image>> {
        let view = self.station.view();
        if let Some(c) = &state.cache {
            if Arc::ptr_eq(&c.view, &view) && c.bad_values == faults.bad_values {
                return c.image.clone();
            }
        }
        let image = match &self.profile {
            None => render(&self.spec, &view, &faults.bad_values),
            Some(p) => {
                let mut v = StationView::clone(&view);
                override_points(&mut v, &self.spec.kind, &faults.bad_values);
                Some(p.render(self.spec.kind, &v))
            }
        }
        .map(Arc::new);
        state.cache = Some(Cached {
            view,
            bad_values: faults.bad_values.clone(),
            image: image.clone(),
        });
        image
    }

    /// The image to serve now: live, or the one captured when the current freeze began.
    fn image(&self, faults: &WireFaults) -> Option<Arc<Image>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if faults.frozen {
            if let Some(frozen) = &state.frozen {
                return frozen.clone();
            }
            let image = self.live_image(&mut state, faults);
            state.frozen = Some(image.clone());
            image
        } else {
            state.frozen = None;
            self.live_image(&mut state, faults)
        }
    }

    fn write(
        &self,
        image: &Image,
        unit: u8,
        addr: u16,
        words: &[u16],
    ) -> Result<(), ExceptionCode> {
        let unit = image.unit(unit).ok_or(ExceptionCode::GatewayTargetDevice)?;
        let view = self.station.view();
        let commands = match &self.profile {
            None => decode_write(&self.fields, unit, addr, words, &view)?,
            Some(p) => p.write(self.spec.kind, addr, words, &view)?,
        };
        for command in commands {
            if let Err(reason) = self.station.apply(command.clone()) {
                tracing::debug!(device = %self.spec.id, ?command, %reason, "command refused");
                return Err(ExceptionCode::IllegalDataValue);
            }
        }
        Ok(())
    }

    fn process(
        &self,
        faults: &WireFaults,
        unit: u8,
        request: Request<'static>,
    ) -> Result<Response, ExceptionCode> {
        let image = self
            .image(faults)
            .ok_or(ExceptionCode::ServerDeviceFailure)?;
        let unit_image = image.unit(unit).ok_or(ExceptionCode::GatewayTargetDevice)?;
        match request {
            Request::ReadHoldingRegisters(addr, count)
            | Request::ReadInputRegisters(addr, count) => {
                if count == 0 || count > MAX_READ {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                let words = unit_image.read(addr, count)?.to_vec();
                Ok(if matches!(request, Request::ReadInputRegisters(..)) {
                    Response::ReadInputRegisters(words)
                } else {
                    Response::ReadHoldingRegisters(words)
                })
            }
            Request::WriteSingleRegister(addr, word) => {
                if faults.frozen {
                    return Err(ExceptionCode::ServerDeviceFailure);
                }
                self.write(&image, unit, addr, &[word])?;
                Ok(Response::WriteSingleRegister(addr, word))
            }
            Request::WriteMultipleRegisters(addr, words) => {
                let count = u16::try_from(words.len()).unwrap_or(u16::MAX);
                if count == 0 || count > MAX_WRITE {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                if faults.frozen {
                    return Err(ExceptionCode::ServerDeviceFailure);
                }
                self.write(&image, unit, addr, &words)?;
                Ok(Response::WriteMultipleRegisters(addr, count))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

/// One connection's service: answers requests, or asks its transport to hang up.
struct Connection {
    device: Arc<Device>,
    hang_up: Arc<AtomicBool>,
}

type Reply = Result<Option<Response>, ExceptionCode>;

impl Service for Connection {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Reply> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let device = Arc::clone(&self.device);
        let hang_up = Arc::clone(&self.hang_up);
        Box::pin(async move {
            let faults = device.station.wire_faults(&device.spec.id);
            if faults.offline {
                hang_up.store(true, Ordering::Release);
                return Ok(None);
            }
            if let Some(delay) = faults.latency {
                tokio::time::sleep(delay).await;
            }
            if let Some(code) = faults.exception {
                return Err(ExceptionCode::new(code));
            }
            match device.process(&faults, req.slave, req.request) {
                // On an RS485 bus a device not addressed stays silent.
                Err(ExceptionCode::GatewayTargetDevice) if device.rtu() => Ok(None),
                other => other.map(Some),
            }
        })
    }
}

/// A TCP stream that reads end-of-file once its connection was told to hang up, so that the
/// server's per-connection loop ends and the socket is closed without an answer.
struct HangUpStream {
    inner: TcpStream,
    hang_up: Arc<AtomicBool>,
}

impl AsyncRead for HangUpStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.hang_up.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for HangUpStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves one device on `listener` until `cancel` fires (then returns `Ok(())`); open
/// connections are closed when it returns. Every request first consults
/// `station.wire_faults(&spec.id)`.
pub async fn serve_device(
    listener: TcpListener,
    spec: DeviceSpec,
    station: Arc<dyn Station>,
    cancel: CancellationToken,
) -> Result<(), WireError> {
    serve(listener, Device::new(spec, station, None), cancel).await
}

/// Serves one device with a profile's map (see [`super::profile`]), over Modbus TCP or RTU
/// frames as its spec says; otherwise as [`serve_device`].
pub async fn serve_profiled_device(
    listener: TcpListener,
    spec: DeviceSpec,
    profile: ServedProfile,
    station: Arc<dyn Station>,
    cancel: CancellationToken,
) -> Result<(), WireError> {
    if let Framing::RtuSerial { path, baud } = profile.spec.framing.clone() {
        drop(listener);
        let device = Device::new(spec, station, Some(profile));
        return serve_serial(path, baud, device, cancel).await;
    }
    serve(listener, Device::new(spec, station, Some(profile)), cancel).await
}

impl Device {
    fn rtu(&self) -> bool {
        self.profile
            .as_ref()
            .is_some_and(|p| p.spec.framing != Framing::Tcp)
    }
}

/// Serves one device as RTU frames on a serial port until `cancel` fires; wire faults apply
/// as on TCP (`offline`: silence).
async fn serve_serial(
    path: String,
    baud: u32,
    device: Device,
    cancel: CancellationToken,
) -> Result<(), WireError> {
    let id = device.spec.id.clone();
    let port = tokio_serial::SerialStream::open(&tokio_serial::new(&path, baud)).map_err(|e| {
        WireError::Serve {
            id: id.clone(),
            source: io::Error::other(format!("open serial port {path}: {e}")),
        }
    })?;
    let service = Connection {
        device: Arc::new(device),
        hang_up: Arc::new(AtomicBool::new(false)),
    };
    tokio_modbus::server::rtu::Server::new(port)
        .serve_until(service, cancel.cancelled_owned())
        .await
        .map(|_| ())
        .map_err(|source| WireError::Serve { id, source })
}

async fn serve(
    listener: TcpListener,
    device: Device,
    cancel: CancellationToken,
) -> Result<(), WireError> {
    let id = device.spec.id.clone();
    let rtu = device.rtu();
    let device = Arc::new(device);
    let on_connected = move |stream: TcpStream, peer: SocketAddr| {
        let device = Arc::clone(&device);
        async move {
            if device.station.wire_faults(&device.spec.id).offline {
                tracing::debug!(device = %device.spec.id, %peer, "offline: connection dropped");
                return Ok(None);
            }
            // Small request/response frames: send each reply at once.
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(%peer, %err, "TCP_NODELAY not set");
            }
            let hang_up = Arc::new(AtomicBool::new(false));
            let service = Connection {
                device,
                hang_up: Arc::clone(&hang_up),
            };
            Ok(Some((
                service,
                HangUpStream {
                    inner: stream,
                    hang_up,
                },
            )))
        }
    };
    let on_process_error = |err: io::Error| tracing::debug!(%err, "connection ended with an error");
    let served = if rtu {
        tokio_modbus::server::rtu_over_tcp::Server::new(listener)
            .serve_until(&on_connected, on_process_error, cancel.cancelled_owned())
            .await
    } else {
        Server::new(listener)
            .serve_until(&on_connected, on_process_error, cancel.cancelled_owned())
            .await
    };
    served
        .map(|_| ())
        .map_err(|source| WireError::Serve { id, source })
}
