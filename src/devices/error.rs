//! Errors of the device drivers.
//!
//! Two layers are kept apart on purpose: a Modbus exception means the device answered and refused
//! the request (the link is healthy), a transport error or a timeout means the link itself failed
//! and the connection has been dropped.

use thiserror::Error;

/// Modbus function code of "read holding registers".
pub const FC_READ_HOLDING: u8 = 0x03;
/// Modbus function code of "read input registers".
pub const FC_READ_INPUT: u8 = 0x04;
/// Modbus function code of "write single register".
pub const FC_WRITE_SINGLE: u8 = 0x06;
/// Modbus function code of "write multiple registers".
pub const FC_WRITE_MULTIPLE: u8 = 0x10;

/// Everything that can go wrong when talking to a field device.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum DeviceError {
    /// The device answered with a Modbus exception (0x01 illegal function, 0x02 illegal data
    /// address, 0x03 illegal data value, 0x04 server device failure, 0x0B gateway target ...).
    #[error("modbus exception 0x{code:02X} for function 0x{function:02X} at register {address}")]
    Exception {
        /// Function code of the refused request.
        function: u8,
        /// First register address of the refused request.
        address: u16,
        /// Exception code sent by the device.
        code: u8,
    },
    /// The connection failed (I/O error or a Modbus framing/protocol error).
    #[error("transport error: {0}")]
    Transport(String),
    /// The device did not answer within the configured time.
    #[error("{op} timed out after {after_ms} ms")]
    Timeout {
        /// What was attempted (`connect`, `read`, `write`).
        op: &'static str,
        /// The timeout that expired, in milliseconds.
        after_ms: u64,
    },
    /// No "SunS" marker at any of the probed base addresses.
    #[error("no SunSpec marker found at base addresses {tried:?}")]
    NotSunSpec {
        /// Base addresses probed, in order.
        tried: Vec<u16>,
    },
    /// A SunSpec model the driver needs is not in the device's model chain.
    #[error("SunSpec model {0} not present on the device")]
    ModelMissing(u16),
    /// A reading was received but failed validation.
    #[error("bad data at point {point}: {reason}")]
    BadData {
        /// Name of the offending point (SunSpec point name or register description).
        point: String,
        /// Why the value was rejected.
        reason: String,
    },
    /// There is no connection and the reconnect back-off has not elapsed yet.
    #[error("device disconnected (waiting for reconnect back-off)")]
    Disconnected,
    /// The work was given up because the daemon is stopping.
    #[error("cancelled: the daemon is stopping")]
    Cancelled,
    /// The caller asked for something the driver refuses to send (value out of range, too many
    /// registers for one request).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl DeviceError {
    /// True when the device answered with a Modbus exception.
    pub fn is_exception(&self) -> bool {
        matches!(self, DeviceError::Exception { .. })
    }

    /// True when the failure concerns the link (transport, timeout, no connection), i.e. the
    /// device may be fine but could not be reached.
    pub fn is_link_failure(&self) -> bool {
        matches!(
            self,
            DeviceError::Transport(_) | DeviceError::Timeout { .. } | DeviceError::Disconnected
        )
    }

    pub(crate) fn bad_data(point: &str, reason: impl Into<String>) -> Self {
        DeviceError::BadData {
            point: point.to_string(),
            reason: reason.into(),
        }
    }
}

impl From<std::io::Error> for DeviceError {
    fn from(e: std::io::Error) -> Self {
        DeviceError::Transport(e.to_string())
    }
}

impl From<tokio_modbus::Error> for DeviceError {
    fn from(e: tokio_modbus::Error) -> Self {
        DeviceError::Transport(e.to_string())
    }
}
