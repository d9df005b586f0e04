//! Serves every device of a fake station (fixed sample view, no physics) on ephemeral loopback
//! ports, prints `<device id> <port>` per line, then runs until Ctrl-C and prints the commands
//! written. For checking the register maps with third-party tools (pysunspec2, mbpoll).
//!
//! `cargo run -p station-sim --example wire_fake`

// Test and bench code may panic on a broken invariant and time itself with the wall clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use station_sim::view::Station;
use station_sim::wire::fake::{sample_view, FakeStation};
use station_sim::wire::{serve_device, station_devices};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let chargers = 8;
    let station = Arc::new(FakeStation::new(sample_view(chargers)));
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    for spec in station_devices(chargers) {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("{} {}", spec.id, listener.local_addr()?.port());
        let dyn_station: Arc<dyn Station> = station.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            if let Err(err) = serve_device(listener, spec, dyn_station, cancel).await {
                eprintln!("{err}");
            }
        });
    }
    tracker.close();
    tokio::signal::ctrl_c().await?;
    cancel.cancel();
    tracker.wait().await;
    for command in station.commands() {
        println!("applied {command:?}");
    }
    Ok(())
}
