//! The daemon in this process on a Tokio runtime of its own, so a test can kill it the way
//! `kill -9` does: [`CrashableDaemon::kill`] drops the runtime with every task at its next
//! await point. No cancellation fires, so no safe setpoint is written and the control loop's
//! shutdown path never runs; the devices' connections close as the process's would. (The
//! ledger's blocking task still flushes what it holds when its stop guard drops: losing the
//! last flush interval is `tests/daemon_process.rs`'s business, with the real binary.)

use station_controller::clock::Clock;
use station_controller::config::StationConfig;
use station_controller::daemon::{self, DaemonHandle, Options};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) struct CrashableDaemon {
    pub(crate) handle: DaemonHandle,
    runtime: Option<tokio::runtime::Runtime>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl CrashableDaemon {
    /// Start the daemon on a new two-worker runtime (built on a thread of its own, as a
    /// runtime cannot be entered from inside another).
    pub(crate) fn start(config: StationConfig, clock: Arc<dyn Clock>, options: Options) -> Self {
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime for the daemon");
            let cancel = CancellationToken::new();
            let tracker = TaskTracker::new();
            let handle = runtime
                .block_on(daemon::start(
                    config,
                    clock,
                    options,
                    cancel.clone(),
                    &tracker,
                ))
                .expect("the daemon starts");
            CrashableDaemon {
                handle,
                runtime: Some(runtime),
                cancel,
                tracker,
            }
        })
        .join()
        .expect("the daemon's starter thread")
    }

    /// `kill -9`: every task of the daemon is dropped where it stands.
    pub(crate) fn kill(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// SIGTERM: safe setpoints, last ledger flush, then the runtime goes.
    pub(crate) async fn stop(mut self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for CrashableDaemon {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
