//! A test MQTT subscriber: connects to a broker with rumqttc, subscribes, and records every
//! message (the last payload per topic, a count per topic, and every message in arrival
//! order). It reconnects on its own after a broker outage.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default, Clone)]
pub(crate) struct Seen {
    pub(crate) last: BTreeMap<String, String>,
    pub(crate) counts: BTreeMap<String, usize>,
    pub(crate) all: Vec<(String, String)>,
    pub(crate) connects: usize,
}

pub(crate) struct Probe {
    pub(crate) client: AsyncClient,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Probe {
    /// Connect as `client_id` (a persistent session unless `clean`) and subscribe to `filters`
    /// with QoS 1.
    pub(crate) async fn connect(
        port: u16,
        client_id: &str,
        clean: bool,
        filters: &[&str],
    ) -> Probe {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_clean_session(clean);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(o, 1000);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let record = seen.clone();
        let subscriber = client.clone();
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        record.lock().unwrap().connects += 1;
                        for f in &filters {
                            subscriber.subscribe(f, QoS::AtLeastOnce).await.unwrap();
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let payload = String::from_utf8_lossy(&p.payload).to_string();
                        let mut s = record.lock().unwrap();
                        *s.counts.entry(p.topic.clone()).or_default() += 1;
                        s.last.insert(p.topic.clone(), payload.clone());
                        s.all.push((p.topic, payload));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        let probe = Probe { client, seen, task };
        probe
            .until("the probe's connection", Duration::from_secs(20), |s| {
                (s.connects > 0).then_some(())
            })
            .await;
        probe
    }

    pub(crate) fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// The last payload on `topic`.
    pub(crate) fn last(&self, topic: &str) -> Option<String> {
        self.seen.lock().unwrap().last.get(topic).cloned()
    }

    /// Poll every 20 ms until `f` returns `Some`, or panic after `limit`.
    pub(crate) async fn until<T>(
        &self,
        what: &str,
        limit: Duration,
        mut f: impl FnMut(&Seen) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f(&self.seen.lock().unwrap()) {
                return v;
            }
            assert!(start.elapsed() < limit, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}
