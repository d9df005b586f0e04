//! Store-and-forward of the ledger's energy records: read unsent outbox rows in sequence order,
//! publish them with QoS 1, and mark a row sent when its PUBACK arrives.
//!
//! rumqttc numbers QoS 1 packets itself and reports the number in `Outgoing::Publish(pkid)`
//! events, in the order the requests were queued. [`InFlight`] pairs each queued QoS 1 request
//! (an energy record, or `None` for other QoS 1 messages) with the next such event, and each
//! PUBACK with its record. Every QoS 1 request must go through [`InFlight::expect`], and only
//! from the task that polls the event loop, so the pairing cannot slip. On any disconnect the
//! session is clean: rumqttc drops what was in flight, [`InFlight::reset`] forgets it, and the
//! unacknowledged rows are read again from the ledger and sent again with the same sequence
//! numbers.

use crate::ledger::outbox::{bucket_end, OutboxItem, OutboxRecord};
use serde_json::json;
use std::collections::{HashMap, VecDeque};

/// QoS 1 messages queued or on the wire, and what each one carries.
#[derive(Debug, Default)]
pub struct InFlight {
    /// Queued with the client, no packet id seen yet, in queue order.
    queued: VecDeque<Option<i64>>,
    /// On the wire, by packet id.
    by_pkid: HashMap<u16, Option<i64>>,
    /// Highest outbox sequence number queued in this connection.
    highest: i64,
}

impl InFlight {
    /// Forget everything (a new connection); the next read starts from the first unsent row.
    pub fn reset(&mut self) {
        self.queued.clear();
        self.by_pkid.clear();
        self.highest = 0;
    }

    /// A QoS 1 request was queued with the client, carrying outbox record `seq` if any.
    pub fn expect(&mut self, seq: Option<i64>) {
        if let Some(s) = seq {
            self.highest = self.highest.max(s);
        }
        self.queued.push_back(seq);
    }

    /// The event loop sent a QoS 1 publish with packet id `pkid`.
    pub fn outgoing(&mut self, pkid: u16) {
        if pkid == 0 || self.by_pkid.contains_key(&pkid) {
            return;
        }
        if let Some(tag) = self.queued.pop_front() {
            self.by_pkid.insert(pkid, tag);
        }
    }

    /// The broker acknowledged `pkid`; returns the outbox record it carried, if any.
    pub fn acked(&mut self, pkid: u16) -> Option<i64> {
        self.by_pkid.remove(&pkid).flatten()
    }

    /// Energy records queued or on the wire.
    pub fn records(&self) -> usize {
        self.queued
            .iter()
            .chain(self.by_pkid.values())
            .filter(|t| t.is_some())
            .count()
    }

    /// Highest sequence number queued in this connection (read rows above it next).
    pub fn highest(&self) -> i64 {
        self.highest
    }
}

/// Topic (relative to the station root) and JSON payload of an outbox record.
pub fn message(station_id: &str, item: &OutboxItem) -> (&'static str, String) {
    match &item.record {
        OutboxRecord::Bucket(b) => (
            "energy/bucket",
            json!({"station": station_id, "seq": item.seq, "kind": "bucket",
                   "end": bucket_end(b.start), "bucket": b})
            .to_string(),
        ),
        OutboxRecord::Session(s) => (
            "energy/session",
            json!({"station": station_id, "seq": item.seq, "kind": "session", "session": s})
                .to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_paired_with_the_records_in_queue_order() {
        let mut f = InFlight::default();
        f.expect(Some(7));
        f.expect(None);
        f.expect(Some(8));
        f.outgoing(1);
        f.outgoing(2);
        f.outgoing(3);
        assert_eq!(f.records(), 2);
        assert_eq!(f.acked(2), None);
        assert_eq!(f.acked(3), Some(8));
        assert_eq!(f.acked(1), Some(7));
        assert_eq!(
            f.acked(1),
            None,
            "a second ack of the same packet id is ignored"
        );
        assert_eq!(f.highest(), 8);
        f.reset();
        assert_eq!((f.records(), f.highest()), (0, 0));
    }
}
