//! The MQTT state task: turns each published [`Status`] into retained topics (only the changed
//! ones, all of them every `state_interval` and after a reconnect), alarm events and Home
//! Assistant discovery. It only ever `try_publish`es: a full client queue drops the message and
//! the next round sends it again.

use super::topics::{self, Alarm, EnergyGuard};
use super::{discovery, Link, MqttConfig};
use crate::daemon::status::Status;
use chrono::{DateTime, Utc};
use rumqttc::{AsyncClient, QoS};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

struct State {
    cfg: MqttConfig,
    root: String,
    client: AsyncClient,
    /// Retained payloads as last queued, by topic relative to the root.
    sent: BTreeMap<String, String>,
    guard: EnergyGuard,
    alarms: Vec<(Alarm, DateTime<Utc>)>,
    online_since: Option<DateTime<Utc>>,
    discovery_shape: Option<Vec<String>>,
    dropped: u64,
}

pub(super) async fn run(
    cfg: MqttConfig,
    client: AsyncClient,
    mut status: watch::Receiver<Option<Arc<Status>>>,
    mut link: watch::Receiver<Link>,
    cancel: CancellationToken,
) {
    let mut st = State {
        root: cfg.root(),
        cfg,
        client,
        sent: BTreeMap::new(),
        guard: EnergyGuard::default(),
        alarms: Vec::new(),
        online_since: None,
        discovery_shape: None,
        dropped: 0,
    };
    let mut every = tokio::time::interval(st.cfg.state_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = Link::default();
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = link.changed() => {
                if r.is_err() { break; }
                let now = *link.borrow_and_update();
                if now.epoch != seen.epoch {
                    st.sent.clear();
                    st.online_since = None;
                    st.discovery_shape = None;
                }
                if now.discovery != seen.discovery {
                    st.discovery_shape = None;
                }
                seen = now;
            }
            r = status.changed() => if r.is_err() { break },
            _ = every.tick() => st.sent.clear(),
        }
        if !seen.connected {
            continue;
        }
        let current = status.borrow_and_update().clone();
        if let Some(s) = current {
            st.publish(&s);
        }
    }
}

impl State {
    fn publish(&mut self, s: &Status) {
        if self.cfg.discovery && self.discovery_shape.as_ref() != Some(&discovery::shape(s)) {
            for (topic, payload) in discovery::messages(&self.cfg, s) {
                self.queue(&topic, true, payload);
            }
            self.discovery_shape = Some(discovery::shape(s));
        }
        let online_since = *self.online_since.get_or_insert(s.time);
        self.alarms(s);
        let day = s
            .time
            .with_timezone(
                &s.timezone
                    .parse::<chrono_tz::Tz>()
                    .unwrap_or(chrono_tz::UTC),
            )
            .date_naive();
        let mut state = topics::state(s);
        let alarms: Vec<_> = self
            .alarms
            .iter()
            .map(|(a, since)| json!({"kind": a.kind, "device": a.device, "message": a.message, "since": since}))
            .collect();
        state.insert("alarms".into(), serde_json::Value::from(alarms).to_string());
        let summary = topics::summary(
            &self.cfg.station_id,
            s,
            Some(online_since),
            self.alarms.len(),
            self.cfg.dashboard_url.as_deref(),
        );
        state.insert("summary".into(), summary.to_string());
        for (k, v) in state {
            if self.sent.get(&k) == Some(&v) {
                continue;
            }
            if topics::ENERGY_TOPICS.contains(&k.as_str()) {
                let value = v.parse::<f64>().unwrap_or(f64::NAN);
                if !self.guard.allow(day, &k, value) {
                    continue;
                }
            }
            if self.queue(&format!("{}/{k}", self.root), true, v.clone()) {
                self.sent.insert(k, v);
            }
        }
    }

    /// Compare the status's alarms with the open ones; publish an event per change.
    fn alarms(&mut self, s: &Status) {
        let now = topics::alarms(s);
        let mut events = Vec::new();
        for (a, since) in &self.alarms {
            if !now.iter().any(|n| n.key() == a.key()) {
                events.push(
                    json!({"event": "cleared", "kind": a.kind, "device": a.device,
                                   "message": a.message, "since": since, "time": s.time}),
                );
            }
        }
        self.alarms
            .retain(|(a, _)| now.iter().any(|n| n.key() == a.key()));
        for n in now {
            match self.alarms.iter_mut().find(|(a, _)| a.key() == n.key()) {
                Some((a, _)) => a.message = n.message,
                None => {
                    events.push(
                        json!({"event": "raised", "kind": n.kind, "device": n.device,
                                       "message": n.message, "time": s.time}),
                    );
                    tracing::warn!(kind = n.kind, device = %n.device, message = %n.message, "alarm raised");
                    self.alarms.push((n, s.time));
                }
            }
        }
        for e in events {
            let topic = format!("{}/events/alarm", self.root);
            self.queue(&topic, false, e.to_string());
        }
    }

    fn queue(&mut self, topic: &str, retain: bool, payload: String) -> bool {
        match self
            .client
            .try_publish(topic, QoS::AtMostOnce, retain, payload)
        {
            Ok(()) => true,
            Err(_) => {
                self.dropped += 1;
                if self.dropped.is_power_of_two() {
                    tracing::warn!(dropped = self.dropped, "mqtt client queue full: state messages dropped (sent again on the next round)");
                }
                false
            }
        }
    }
}
