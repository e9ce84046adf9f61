//! The delivery state of one MQTT session, without IO: which outbox entries are published, which
//! the broker acknowledged, which events wait for the fleet's receipt, and when to send again.
//!
//! MQTT's PUBACK only says that the *broker* has a message. A broker that restarts without
//! persistence, or that has no subscriber at that moment (the fleet reconnecting after the same
//! outage), acknowledges and then forgets it. So an event leaves the outbox only when the fleet's
//! [`medgate_contract::EventReceipt`] names it; other outbox entries (command acknowledgements,
//! reported configurations) leave it at PUBACK.
//!
//! - At most [`WINDOW`] entries are published and not yet acknowledged by the broker.
//! - At most [`AWAITING_MAX`] events are acknowledged by the broker and waiting for their receipt;
//!   the outbox waits behind them (a fleet that is down is not flooded).
//! - When the oldest waiting event has waited longer than the receipt timeout, publishing restarts
//!   from it: every event still in the outbox is sent again (the fleet deduplicates by id). The
//!   timeout doubles, up to [`RECEIPT_TIMEOUT_MAX`], while no receipt comes, and is reset by one.
//!
//! Packet ids are matched to entries by the order of rumqttc's `Outgoing::Publish` events, which is
//! the order of the session's publish calls ([`Delivery::published_entry`] and
//! [`Delivery::published_other`] record each call).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Outbox entries published and not yet acknowledged by the broker, at most.
pub const WINDOW: usize = 32;
/// Events acknowledged by the broker and waiting for the fleet's receipt, at most.
pub const AWAITING_MAX: usize = 1000;
/// The longest wait for a receipt before sending again.
pub const RECEIPT_TIMEOUT_MAX: Duration = Duration::from_secs(600);

/// An outbox entry on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sent {
    seq: u64,
    /// An event: it stays in the outbox until the fleet's receipt.
    needs_receipt: bool,
}

/// One session's delivery state.
#[derive(Debug)]
pub struct Delivery {
    /// Our publish calls whose packet id is not known yet, in order (`None`: not an outbox entry).
    pending: VecDeque<Option<Sent>>,
    /// Packet id → entry, until the broker's PUBACK.
    inflight: HashMap<u16, Sent>,
    /// Events acknowledged by the broker → when.
    awaiting: BTreeMap<u64, Instant>,
    /// The last outbox entry published.
    cursor: Option<u64>,
    base_timeout: Duration,
    timeout: Duration,
}

impl Delivery {
    /// A new session: publishing starts at the oldest outbox entry.
    pub fn new(receipt_timeout: Duration) -> Self {
        Self {
            pending: VecDeque::new(),
            inflight: HashMap::new(),
            awaiting: BTreeMap::new(),
            cursor: None,
            base_timeout: receipt_timeout,
            timeout: receipt_timeout,
        }
    }

    /// Publish outbox entries after this sequence number (from the oldest if `None`).
    pub fn cursor(&self) -> Option<u64> {
        self.cursor
    }

    fn unacked(&self) -> usize {
        self.inflight.len() + self.pending.iter().flatten().count()
    }

    /// How many more outbox entries may be published now.
    pub fn room(&self) -> usize {
        let unacked = self.unacked();
        WINDOW
            .saturating_sub(unacked)
            .min(AWAITING_MAX.saturating_sub(self.awaiting.len() + unacked))
    }

    /// An outbox entry was handed to the MQTT client.
    pub fn published_entry(&mut self, seq: u64, needs_receipt: bool) {
        self.cursor = Some(seq);
        self.pending.push_back(Some(Sent { seq, needs_receipt }));
    }

    /// Something else (birth, state, telemetry) was handed to the MQTT client.
    pub fn published_other(&mut self) {
        self.pending.push_back(None);
    }

    /// rumqttc wrote our next publish with this packet id.
    pub fn on_outgoing_publish(&mut self, pkid: u16) {
        if let Some(Some(sent)) = self.pending.pop_front() {
            self.inflight.insert(pkid, sent);
        }
    }

    /// The broker acknowledged a packet. Returns the outbox entry to remove now, if any (events
    /// wait for their receipt instead).
    pub fn on_puback(&mut self, pkid: u16, now: Instant) -> Option<u64> {
        let sent = self.inflight.remove(&pkid)?;
        if sent.needs_receipt {
            self.awaiting.insert(sent.seq, now);
            None
        } else {
            Some(sent.seq)
        }
    }

    /// The fleet stored these events (sequence numbers of this outbox's stream). They are to be
    /// removed from the outbox; a copy still on its way is removed again at its PUBACK.
    pub fn on_receipt(&mut self, seqs: &[u64]) {
        for seq in seqs {
            self.awaiting.remove(seq);
        }
        let receipted = |s: &mut Sent| {
            if seqs.contains(&s.seq) {
                s.needs_receipt = false;
            }
        };
        self.inflight.values_mut().for_each(receipted);
        self.pending.iter_mut().flatten().for_each(receipted);
        self.timeout = self.base_timeout;
    }

    /// Events waiting for their receipt.
    pub fn awaiting(&self) -> usize {
        self.awaiting.len()
    }

    /// Checks the receipt timeout. When the oldest waiting event has waited too long, publishing
    /// restarts from it and the number of events sent again is returned.
    pub fn receipt_overdue(&mut self, now: Instant) -> Option<usize> {
        let oldest_ack = self.awaiting.values().min()?;
        if now.saturating_duration_since(*oldest_ack) < self.timeout {
            return None;
        }
        let first = self.awaiting.keys().next().copied()?;
        let n = self.awaiting.len();
        self.awaiting.clear();
        // Entries older than `first` still in the outbox are on their way (their PUBACK decides).
        self.cursor = first.checked_sub(1);
        self.timeout = (self.timeout * 2).min(RECEIPT_TIMEOUT_MAX.max(self.base_timeout));
        Some(n)
    }

    /// The current receipt timeout.
    pub fn receipt_timeout(&self) -> Duration {
        self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(30);

    #[test]
    fn events_wait_for_their_receipt_and_others_leave_at_puback() {
        let mut d = Delivery::new(T);
        let now = Instant::now();
        d.published_other(); // birth
        d.published_entry(1, true);
        d.published_entry(2, false); // a command acknowledgement
        d.on_outgoing_publish(1);
        d.on_outgoing_publish(2);
        d.on_outgoing_publish(3);
        assert_eq!(d.on_puback(1, now), None, "birth: no outbox entry");
        assert_eq!(d.on_puback(2, now), None, "the event waits for its receipt");
        assert_eq!(d.on_puback(3, now), Some(2));
        assert_eq!(d.on_puback(3, now), None, "a second PUBACK is ignored");
        assert_eq!(d.awaiting(), 1);
        d.on_receipt(&[1]);
        assert_eq!(d.awaiting(), 0);
        assert_eq!(d.cursor(), Some(2));
    }

    #[test]
    fn the_window_and_the_waiting_events_bound_publishing() {
        let mut d = Delivery::new(T);
        let now = Instant::now();
        assert_eq!(d.room(), WINDOW);
        for seq in 1..=WINDOW as u64 {
            d.published_entry(seq, true);
        }
        assert_eq!(d.room(), 0);
        let window_pkid = u16::try_from(WINDOW).expect("a small window");
        for pkid in 1..=window_pkid {
            d.on_outgoing_publish(pkid);
            d.on_puback(pkid, now);
        }
        assert_eq!(d.room(), WINDOW);
        // A fleet that never answers: publishing stops at AWAITING_MAX.
        let mut seq = WINDOW as u64;
        let mut pkid = window_pkid;
        while d.room() > 0 {
            seq += 1;
            pkid += 1;
            d.published_entry(seq, true);
            d.on_outgoing_publish(pkid);
            d.on_puback(pkid, now);
        }
        assert_eq!(d.awaiting(), AWAITING_MAX);
    }

    #[test]
    fn without_a_receipt_events_are_sent_again_with_a_growing_timeout() {
        let mut d = Delivery::new(T);
        let t0 = Instant::now();
        for (pkid, seq) in [(1u16, 5u64), (2, 6), (3, 7)] {
            d.published_entry(seq, true);
            d.on_outgoing_publish(pkid);
            d.on_puback(pkid, t0);
        }
        d.on_receipt(&[6]);
        assert_eq!(d.receipt_overdue(t0 + T - Duration::from_secs(1)), None);
        assert_eq!(d.receipt_overdue(t0 + T), Some(2));
        assert_eq!(d.cursor(), Some(4), "from the oldest event not receipted");
        assert_eq!(d.receipt_timeout(), 2 * T);
        // Sent again, still no receipt: the next wait is longer.
        let t1 = t0 + T;
        for (pkid, seq) in [(4u16, 5u64), (5, 7)] {
            d.published_entry(seq, true);
            d.on_outgoing_publish(pkid);
            d.on_puback(pkid, t1);
        }
        assert_eq!(d.receipt_overdue(t1 + T), None);
        assert_eq!(d.receipt_overdue(t1 + 2 * T), Some(2));
        for _ in 0..10 {
            d.published_entry(9, true);
            d.on_outgoing_publish(9);
            d.on_puback(9, t1);
            d.receipt_overdue(t1 + RECEIPT_TIMEOUT_MAX * 2);
        }
        assert_eq!(d.receipt_timeout(), RECEIPT_TIMEOUT_MAX);
        // A receipt shows the fleet is back: the timeout is reset.
        d.on_receipt(&[5]);
        assert_eq!(d.receipt_timeout(), T);
    }

    #[test]
    fn a_receipt_for_a_copy_on_its_way_removes_it_at_puback() {
        let mut d = Delivery::new(T);
        let now = Instant::now();
        d.published_entry(1, true);
        d.published_entry(2, true);
        d.on_outgoing_publish(10);
        // The receipt of an earlier copy (a previous session) arrives first.
        d.on_receipt(&[1, 2]);
        d.on_outgoing_publish(11);
        assert_eq!(d.on_puback(10, now), Some(1));
        assert_eq!(d.on_puback(11, now), Some(2));
        assert_eq!(d.awaiting(), 0);
    }
}
