//! Connecting and SunSpec discovery off the control cycle.
//!
//! A device whose Modbus TCP link has no connection, or whose SunSpec model chain is not known
//! yet, hands its driver to a task of its own on the daemon's `TaskTracker`. The task waits out
//! the link's back-off, then connects or walks the model chain (up to a few hundred requests).
//! The device-side fallback is configured by the first read after it, as on any new connection
//! (done here, its write was the first request a struggling device saw, and each failure
//! doubled the back-off). Meanwhile the device is stale (not
//! read, not written, shown degraded or offline) and the cycle carries on with the others; the
//! first read after the task has finished takes the driver back and reads it in that same cycle.
//! Shutdown cancels the tasks (their requests dropped, connections closed) and takes the
//! drivers back before the safe setpoints are written.

use super::{build_driver, Device, Driver};
use crate::devices::error::DeviceError;
use crate::devices::link::LinkState;
use futures::FutureExt;
use std::time::Duration;
use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Where preparation tasks run: the daemon's tracker, under a token that the daemon's
/// cancellation (or [`Background::cancel`]) stops.
#[derive(Debug, Clone)]
pub struct Background {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Background {
    /// Tasks on `tracker`, stopped when `parent` is cancelled.
    pub fn new(tracker: TaskTracker, parent: &CancellationToken) -> Self {
        Background {
            tracker,
            cancel: parent.child_token(),
        }
    }

    /// Stop every preparation under way (shutdown).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

/// A driver being prepared by its own task.
pub(super) struct Away {
    task: JoinHandle<Prepared>,
    /// The link state shown meanwhile (never `Online`: nothing is read).
    state: LinkState,
}

impl Away {
    pub(super) fn state(&self) -> LinkState {
        self.state
    }
}

/// What a preparation task hands back with the driver.
struct Prepared {
    driver: Driver,
    result: Result<(), DeviceError>,
    took: Duration,
}

impl Driver {
    /// A TCP link without a connection, or a SunSpec device whose model chain is unknown.
    pub(super) fn needs_prepare(&self) -> bool {
        let undiscovered = match self {
            Driver::Pv(d) => !d.is_discovered(),
            Driver::Battery(d) => !d.is_discovered(),
            Driver::Meter(d) => !d.is_discovered(),
            Driver::Charger(_) | Driver::Profiled(_) => false,
        };
        undiscovered || self.link().needs_connect()
    }

    /// Wait out the back-off, then discover (which connects), or connect (and identify a
    /// profiled device).
    async fn prepare(&mut self) -> Result<(), DeviceError> {
        self.link_mut().wait_backoff().await;
        match self {
            Driver::Pv(d) if !d.is_discovered() => d.discover().await,
            Driver::Battery(d) if !d.is_discovered() => d.discover().await,
            Driver::Meter(d) if !d.is_discovered() => d.discover().await,
            Driver::Profiled(d) => {
                // A new connection is trusted only once the identification probe passes.
                d.link_mut().connect().await?;
                d.identify().await
            }
            d => d.link_mut().connect().await,
        }
    }
}

/// The task's body: prepare until done or cancelled; a cancelled preparation closes the
/// connection (a late answer must not be taken for the safe setpoint's).
async fn run(mut driver: Driver, cancel: CancellationToken) -> Prepared {
    let started = crate::clock::monotonic();
    let outcome = tokio::select! {
        biased;
        _ = cancel.cancelled() => None,
        r = driver.prepare() => Some(r),
    };
    let result = outcome.unwrap_or_else(|| {
        driver.link_mut().disconnect();
        Err(DeviceError::Cancelled)
    });
    Prepared {
        driver,
        result,
        took: started.elapsed(),
    }
}

impl Device {
    /// Hand the driver to a preparation task if it needs one; true when it went.
    pub(super) fn send_away_if_needed(&mut self, bg: &Background) -> bool {
        if !self.driver.as_ref().is_some_and(Driver::needs_prepare) {
            return false;
        }
        let Some(driver) = self.driver.take() else {
            return false;
        };
        let state = match driver.link().state() {
            LinkState::Online => LinkState::Degraded,
            s => s,
        };
        let span = tracing::info_span!("prepare", device = %self.config.id);
        let task = bg
            .tracker
            .spawn(run(driver, bg.cancel.clone()).instrument(span));
        self.away = Some(Away { task, state });
        true
    }

    /// Take the driver back if its preparation has finished; true when the driver is here.
    pub(super) fn rejoin(&mut self) -> bool {
        let Some(away) = self.away.as_mut() else {
            return self.driver.is_some();
        };
        let Some(joined) = (&mut away.task).now_or_never() else {
            return false;
        };
        self.away = None;
        self.take_back(joined);
        true
    }

    /// Wait for the preparation under way (cancel it first: see [`Background::cancel`]).
    pub(super) async fn recall(&mut self) {
        if let Some(away) = self.away.take() {
            let joined = away.task.await;
            self.take_back(joined);
        }
    }

    fn take_back(&mut self, joined: Result<Prepared, JoinError>) {
        let p = match joined {
            Ok(p) => p,
            Err(e) => {
                // The task panicked: start over with a new driver.
                tracing::error!(device = %self.config.id, error = %e, "device preparation task failed; the driver is rebuilt");
                self.driver = Some(build_driver(&self.config));
                return;
            }
        };
        let took_ms = u64::try_from(p.took.as_millis()).unwrap_or(u64::MAX);
        self.driver = Some(p.driver);
        match p.result {
            Ok(()) => {
                tracing::info!(device = %self.config.id, took_ms, "connected in the background; the device rejoins the cycle");
            }
            Err(e) => {
                if self.last_error.as_ref() != Some(&e) {
                    tracing::warn!(device = %self.config.id, took_ms, error = %e, "connect or discovery failed; retried after the back-off");
                }
                self.count_error(e);
            }
        }
    }
}
