//! Requests per second of one simulated device over loopback: 1 and 16 concurrent clients,
//! each reading 50 holding registers in a loop (one request in flight per connection).
//!
//! `cargo bench -p station-sim --bench modbus` (optional argument: seconds per case, default 3)

// Test and bench code may panic on a broken invariant and time itself with the wall clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use station_sim::view::Station;
use station_sim::wire::fake::{sample_view, FakeStation};
use station_sim::wire::{serve_device, DeviceSpec};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_modbus::prelude::*;
use tokio_util::sync::CancellationToken;

const READ_ADDR: u16 = 40070; // start of model 802 on the battery
const READ_COUNT: u16 = 50;

async fn client_loop(addr: SocketAddr, until: Instant) -> anyhow::Result<u64> {
    let mut ctx = tcp::connect_slave(addr, Slave(1)).await?;
    let mut done = 0u64;
    while Instant::now() < until {
        let words = ctx.read_holding_registers(READ_ADDR, READ_COUNT).await??;
        anyhow::ensure!(words.len() == usize::from(READ_COUNT), "short read");
        done += 1;
    }
    Ok(done)
}

async fn run_case(addr: SocketAddr, clients: usize, secs: f64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(client_loop(addr, until)))
        .collect();
    let mut total = 0u64;
    for task in tasks {
        total += task.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let secs: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3.0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let station: Arc<dyn Station> = Arc::new(FakeStation::new(sample_view(8)));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let spec = DeviceSpec::from_id("battery").ok_or_else(|| anyhow::anyhow!("spec"))?;
        let server = tokio::spawn(serve_device(listener, spec, station, cancel.clone()));
        for clients in [1usize, 16] {
            let rate = run_case(addr, clients, secs).await?;
            println!("modbus/read_{READ_COUNT}_registers/{clients}_clients: {rate:.0} requests/s");
        }
        cancel.cancel();
        server.await??;
        Ok(())
    })
}
