//! The MQTT I/O task: owns the rumqttc event loop, the connection state, commands and the
//! energy outbox (see the module docs of [`super`] and [`super::outbox`]).

use super::commands::{self, Command, Refused};
use super::outbox::{self, InFlight};
use super::{Link, MqttConfig, MqttError, StationLink};
use crate::daemon::control::ControlMsg;
use crate::ledger::Store;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet,
    Publish, QoS, TlsConfiguration, Transport,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::monotonic;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Energy records on the wire at once.
const WINDOW: usize = 32;
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// rumqttc options for `cfg`: clean session, last will `offline` on `<root>/status`, login
/// and TLS as configured.
pub(super) fn options(cfg: &MqttConfig) -> Result<MqttOptions, MqttError> {
    let mut o = MqttOptions::new(format!("stationd-{}", cfg.station_id), &cfg.host, cfg.port);
    o.set_keep_alive(cfg.keep_alive);
    o.set_clean_session(true);
    o.set_inflight(100);
    o.set_max_packet_size(256 * 1024, 256 * 1024);
    o.set_last_will(LastWill::new(
        format!("{}/status", cfg.root()),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(c) = &cfg.credentials {
        o.set_credentials(&c.user, &c.password);
    }
    if let Some(ca) = &cfg.tls_ca {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls_config(ca)?),
        )));
    }
    Ok(o)
}

pub(crate) fn tls_config(ca_pem: &[u8]) -> Result<rustls::ClientConfig, MqttError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        let cert = cert.map_err(|e| MqttError::Ca(e.to_string()))?;
        roots.add(cert).map_err(|e| MqttError::Ca(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(MqttError::Ca("no PEM certificate found".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MqttError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

pub(super) struct Io {
    cfg: MqttConfig,
    root: String,
    client: AsyncClient,
    station: StationLink,
    ledger: Option<PathBuf>,
    store: Option<Store>,
    link: watch::Sender<Link>,
    inflight: InFlight,
    connected: bool,
    failures: u32,
    last_fill: Option<Instant>,
    refill: bool,
}

impl Io {
    pub(super) fn new(
        cfg: MqttConfig,
        client: AsyncClient,
        station: StationLink,
        ledger: Option<PathBuf>,
        link: watch::Sender<Link>,
    ) -> Io {
        Io {
            root: cfg.root(),
            cfg,
            client,
            station,
            ledger,
            store: None,
            link,
            inflight: InFlight::default(),
            connected: false,
            failures: 0,
            last_fill: None,
            refill: false,
        }
    }

    pub(super) async fn run(mut self, mut eventloop: EventLoop, cancel: CancellationToken) {
        loop {
            let event = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                e = eventloop.poll() => e,
            };
            match event {
                Ok(event) => self.handle(event).await,
                Err(e) => {
                    if !self.lost(e, &cancel).await {
                        break;
                    }
                }
            }
            if self.connected {
                self.fill();
            }
        }
        self.goodbye(eventloop).await;
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => self.connected(),
            Event::Incoming(Packet::Publish(p)) => self.incoming(p).await,
            Event::Incoming(Packet::PubAck(a)) => {
                if let Some(seq) = self.inflight.acked(a.pkid) {
                    self.refill = true;
                    if let Some(store) = &self.store {
                        if let Err(e) = store.outbox_mark_sent(&[seq]) {
                            tracing::warn!(error = %e, seq, "mqtt: cannot mark an energy record sent; it will be sent again");
                        }
                    }
                }
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => self.inflight.outgoing(pkid),
            _ => {}
        }
    }

    fn connected(&mut self) {
        tracing::info!(host = %self.cfg.host, port = self.cfg.port, root = %self.root, "mqtt connected");
        self.connected = true;
        self.failures = 0;
        self.inflight.reset();
        self.refill = true;
        let mut filters = commands::filters(&self.root);
        filters.push(format!("{}/status", self.cfg.discovery_prefix));
        let subs = filters
            .into_iter()
            .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
        if let Err(e) = self.client.try_subscribe_many(subs) {
            tracing::warn!(error = %e, "mqtt: cannot queue the command subscriptions");
        }
        self.publish_qos1(&format!("{}/status", self.root), true, "online".into());
        self.link.send_modify(|l| {
            l.connected = true;
            l.epoch += 1;
        });
    }

    /// Queue a QoS 1 message that is not an energy record.
    fn publish_qos1(&mut self, topic: &str, retain: bool, payload: String) {
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            Ok(()) => self.inflight.expect(None),
            Err(e) => {
                tracing::warn!(error = %e, topic, "mqtt: message dropped (client queue full)")
            }
        }
    }

    async fn incoming(&mut self, p: Publish) {
        if p.topic == format!("{}/status", self.cfg.discovery_prefix) {
            if p.payload.as_ref() == b"online" {
                tracing::info!("mqtt: Home Assistant came online; sending discovery again");
                self.link.send_modify(|l| l.discovery += 1);
            }
            return;
        }
        let status = self.station.status.borrow().clone();
        let chargers: Vec<&str> = status
            .as_deref()
            .map(|s| s.chargers.iter().map(|c| c.id.as_str()).collect())
            .unwrap_or_default();
        let mut outcome = commands::parse(&self.root, &p.topic, &p.payload, &chargers);
        if let Ok(Command::SetMode { charger, mode }) = &outcome {
            let msg = ControlMsg::SetMode {
                id: charger.clone(),
                mode: *mode,
            };
            let sent = self
                .station
                .control
                .send_timeout(msg, Duration::from_secs(2))
                .await;
            if let Err(e) = sent {
                let why = match e {
                    mpsc::error::SendTimeoutError::Timeout(_) => "busy for 2 s",
                    mpsc::error::SendTimeoutError::Closed(_) => "not running",
                };
                outcome = Err(Refused::NotTaken { why: why.into() });
            }
        }
        match &outcome {
            Ok(c) => tracing::info!(topic = %p.topic, command = ?c, "mqtt command accepted"),
            Err(e) => tracing::warn!(topic = %p.topic, reason = %e, "mqtt command refused"),
        }
        let body = commands::result_payload(&p.topic, &p.payload, &outcome);
        self.publish_qos1(&commands::result_topic(&p.topic), false, body);
    }

    /// The connection failed or could not be made: forget what was in flight, wait, retry.
    /// Returns false when cancelled while waiting.
    async fn lost(&mut self, e: ConnectionError, cancel: &CancellationToken) -> bool {
        if self.connected {
            tracing::warn!(error = %e, "mqtt connection lost; retrying (the control loop is not affected)");
            self.connected = false;
            self.link.send_modify(|l| l.connected = false);
        } else if self.failures == 0 {
            tracing::warn!(error = %e, host = %self.cfg.host, port = self.cfg.port, "mqtt broker unreachable; retrying");
        } else {
            tracing::debug!(error = %e, "mqtt reconnect failed");
        }
        self.inflight.reset();
        let backoff = Duration::from_millis(250 << self.failures.min(5)).min(MAX_BACKOFF);
        self.failures = self.failures.saturating_add(1);
        tokio::select! {
            _ = cancel.cancelled() => false,
            _ = tokio::time::sleep(backoff) => true,
        }
    }

    /// Queue unsent energy records while the window has room: after an ack, else once a second.
    fn fill(&mut self) {
        let room = WINDOW.saturating_sub(self.inflight.records());
        let due = self.refill
            || self
                .last_fill
                .is_none_or(|t| monotonic().duration_since(t) >= Duration::from_secs(1));
        if room == 0 || !due || self.ledger.is_none() {
            return;
        }
        self.refill = false;
        self.last_fill = Some(monotonic());
        let after = self.inflight.highest();
        let Some(store) = self.store() else { return };
        let items = match store.outbox_pending(after, room) {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(error = %e, "mqtt: cannot read the ledger outbox");
                self.store = None;
                return;
            }
        };
        for item in items {
            let (topic, payload) = outbox::message(&self.cfg.station_id, &item);
            let topic = format!("{}/{topic}", self.root);
            if self
                .client
                .try_publish(topic, QoS::AtLeastOnce, false, payload)
                .is_err()
            {
                break;
            }
            self.inflight.expect(Some(item.seq));
        }
    }

    fn store(&mut self) -> Option<&Store> {
        if self.store.is_none() {
            let path = self.ledger.as_ref()?;
            match Store::open(path) {
                Ok(s) => self.store = Some(s),
                Err(e) => tracing::warn!(error = %e, "mqtt: cannot open the ledger outbox"),
            }
        }
        self.store.as_ref()
    }

    /// Say `offline` (a clean disconnect does not fire the last will) and disconnect, within 2 s.
    async fn goodbye(mut self, mut eventloop: EventLoop) {
        if !self.connected {
            return;
        }
        self.publish_qos1(&format!("{}/status", self.root), true, "offline".into());
        if self.client.try_disconnect().is_err() {
            return;
        }
        let flushed = async {
            while let Ok(event) = eventloop.poll().await {
                if matches!(event, Event::Outgoing(Outgoing::Disconnect)) {
                    break;
                }
            }
        };
        // Bounded: a broker that stopped answering does not hold up the shutdown.
        let _ = tokio::time::timeout(Duration::from_secs(2), flushed).await;
        tracing::info!("mqtt disconnected");
    }
}
