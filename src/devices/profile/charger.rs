//! A profiled charger behind the same [`ChargerDriver`] interface as the built-in Alfen driver.

use super::driver::{ProfileDevice, ProfiledConfig, ProfiledReading};
use super::model::Profile;
use crate::devices::charger::{ChargerDriver, ChargerReading, DriverFuture};
use crate::devices::error::DeviceError;
use crate::devices::link::Link;
use std::sync::Arc;

/// A charger driven by a `kind = "charger"` profile.
#[derive(Debug)]
pub struct ProfileCharger {
    dev: ProfileDevice,
}

impl ProfileCharger {
    /// A driver that connects lazily and probes on every new connection.
    pub fn new(profile: Arc<Profile>, cfg: ProfiledConfig) -> Self {
        ProfileCharger {
            dev: ProfileDevice::new(profile, cfg),
        }
    }
}

impl ChargerDriver for ProfileCharger {
    fn read(&mut self) -> DriverFuture<'_, ChargerReading> {
        Box::pin(async move {
            match self.dev.read().await? {
                ProfiledReading::Charger(c) => Ok(c),
                _ => Err(DeviceError::InvalidRequest(format!(
                    "profile {} is not a charger profile",
                    self.dev.profile().name
                ))),
            }
        })
    }

    fn set_current(&mut self, amps: f64) -> DriverFuture<'_, ()> {
        Box::pin(self.dev.set_current(amps))
    }

    fn configure_fallback(&mut self, safe_current_a: f64) -> DriverFuture<'_, ()> {
        Box::pin(self.dev.configure_fallback(safe_current_a))
    }

    fn safe(&mut self) -> DriverFuture<'_, ()> {
        Box::pin(self.dev.safe_current())
    }

    fn link(&self) -> &Link {
        self.dev.link()
    }

    fn link_mut(&mut self) -> &mut Link {
        self.dev.link_mut()
    }
}
