//! The fleet view's shell: an MQTT subscriber feeding [`Fleet`] and an HTTP server for the
//! page, `/api/fleet` and `/metrics`. Both tasks run on the caller's `TaskTracker` and stop on
//! its `CancellationToken`.

use super::Fleet;
use crate::mqtt::config::{parse_broker_url, Credentials};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const INDEX_HTML: &str = include_str!("assets/index.html");
const FLEET_JS: &str = include_str!("assets/fleet.js");
const FLEET_CSS: &str = include_str!("assets/fleet.css");

/// Why the fleet view could not start.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("--broker: {0}")]
    Broker(String),
    #[error("--prefix: must be topic levels without wildcards (got {0:?})")]
    Prefix(String),
    #[error("--ca-file: {0}")]
    Ca(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// How to run the fleet view.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// `mqtt://host[:port]` or `mqtts://host[:port]`.
    pub broker: String,
    pub listen: SocketAddr,
    pub prefix: String,
    pub credentials: Option<Credentials>,
    /// PEM of the broker's CA (needed for `mqtts://`).
    pub ca_pem: Option<Vec<u8>>,
}

fn lock(m: &Mutex<Fleet>) -> MutexGuard<'_, Fleet> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn mqtt_options(o: &FleetOptions) -> Result<MqttOptions, FleetError> {
    let url = parse_broker_url(&o.broker).map_err(FleetError::Broker)?;
    let id = format!("stationd-fleet-{}", std::process::id());
    let mut m = MqttOptions::new(id, url.host, url.port);
    m.set_keep_alive(Duration::from_secs(15));
    m.set_clean_session(true);
    m.set_max_packet_size(256 * 1024, 256 * 1024);
    if let Some(c) = &o.credentials {
        m.set_credentials(&c.user, &c.password);
    }
    match (&o.ca_pem, url.tls) {
        (Some(ca), true) => m.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(
                crate::mqtt::tls_client_config(ca).map_err(|e| FleetError::Ca(e.to_string()))?,
            ),
        ))),
        (None, true) => return Err(FleetError::Ca("required with an mqtts:// broker".into())),
        (Some(_), false) => {
            return Err(FleetError::Ca("applies only to an mqtts:// broker".into()))
        }
        (None, false) => &mut m,
    };
    Ok(m)
}

/// Start the fleet view; returns the address the HTTP server listens on.
pub async fn serve(
    o: FleetOptions,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Result<SocketAddr, FleetError> {
    if o.prefix.is_empty()
        || o.prefix.contains(['+', '#'])
        || o.prefix.split('/').any(str::is_empty)
    {
        return Err(FleetError::Prefix(o.prefix));
    }
    let options = mqtt_options(&o)?;
    let listener = tokio::net::TcpListener::bind(o.listen)
        .await
        .map_err(|source| FleetError::Bind {
            addr: o.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| FleetError::Bind {
        addr: o.listen,
        source,
    })?;
    let fleet = Arc::new(Mutex::new(Fleet::new(&o.prefix)));
    tracker.spawn(subscribe(options, fleet.clone(), cancel.clone()));
    let app = Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/fleet.js",
            get(|| async { asset(FLEET_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/fleet.css",
            get(|| async { asset(FLEET_CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/style.css",
            get(|| async { asset(crate::http::assets::STYLE_CSS, "text/css; charset=utf-8") }),
        )
        .route("/api/fleet", get(api_fleet))
        .route("/metrics", get(metrics))
        .with_state(fleet);
    tracker.spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned());
        if let Err(e) = server.await {
            tracing::error!(error = %e, "fleet HTTP server failed");
        }
    });
    tracing::info!(%addr, broker = %o.broker, prefix = %o.prefix, "fleet view listening");
    Ok(addr)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn api_fleet(State(f): State<Arc<Mutex<Fleet>>>) -> Response {
    Json(lock(&f).json()).into_response()
}

async fn metrics(State(f): State<Arc<Mutex<Fleet>>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        lock(&f).metrics(),
    )
        .into_response()
}

/// Subscribe, feed every message to the fleet, reconnect with capped back-off.
async fn subscribe(options: MqttOptions, fleet: Arc<Mutex<Fleet>>, cancel: CancellationToken) {
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let filters = lock(&fleet).filters();
    let mut failures: u32 = 0;
    loop {
        let event = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            e = eventloop.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                tracing::info!("fleet view connected to the broker");
                let subs = filters
                    .iter()
                    .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                if let Err(e) = client.try_subscribe_many(subs) {
                    tracing::warn!(error = %e, "fleet view cannot queue its subscriptions");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if !lock(&fleet).apply(&p.topic, &p.payload) {
                    tracing::debug!(topic = %p.topic, "fleet view ignored a message it does not understand");
                }
            }
            Ok(_) => {}
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(error = %e, "fleet view: broker connection failed; retrying");
                }
                let backoff =
                    Duration::from_millis(250 << failures.min(5)).min(Duration::from_secs(5));
                failures = failures.saturating_add(1);
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
        }
    }
    let _ = client.try_disconnect();
}
