//! The per-destination queue as a pure state machine: which object to send next, when, and what
//! a result does to the object and to the destination. Time and randomness are inputs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// After this many object-level retries an object is quarantined.
pub const MAX_OBJECT_ATTEMPTS: u32 = 8;

/// What happened to one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The destination confirmed it (success, or success with a warning given).
    Confirmed(Option<String>),
    /// This object failed for a transient reason (e.g. A7xx from the archive): retry it later.
    RetryObject(String),
    /// The destination is unreachable or refused the association: back off the destination.
    DestinationDown(String),
    /// The destination refused this object for good: quarantine it.
    Refused(String),
}

/// Exponential backoff with jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Ceiling.
    pub max: Duration,
}

impl Backoff {
    /// The delay after `n` consecutive failures (n >= 1), with `jitter` in [0, 1): between half
    /// and all of min(max, initial * 2^(n-1)).
    pub fn delay(&self, n: u32, jitter: f64) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << (n.saturating_sub(1)).min(20));
        let base = exp.min(self.max);
        base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// What a worker should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Send this object.
    Take(u64),
    /// Nothing to do before this instant.
    WaitUntil(Instant),
    /// Nothing queued.
    Empty,
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    not_before: Option<Instant>,
    /// Object-level failures (they count toward quarantine).
    attempts: u32,
    /// Every send, whatever its outcome.
    sends: u32,
}

/// The last failure of a destination, for the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    /// What failed.
    pub message: String,
    /// When.
    pub at: Instant,
    /// A send succeeded since: the error is history, not the present state.
    pub cleared: bool,
}

/// One destination's queue.
#[derive(Debug)]
pub struct DestQueue {
    queued: BTreeMap<u64, Entry>,
    in_flight: BTreeMap<u64, Entry>,
    backoff: Backoff,
    down_until: Option<Instant>,
    down_count: u32,
    /// When the current outage began (the first failed contact since the last success).
    down_since: Option<Instant>,
    last_error: Option<LastError>,
    /// The last object it finished with went to quarantine (refused, or retries exhausted),
    /// and none was confirmed since.
    quarantining: bool,
}

/// What the caller must do after a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Record the confirmation in the spool.
    Confirm {
        /// Sends it took, this one included.
        attempts: u32,
        /// The destination was down and this send ended the outage, which lasted this long.
        recovered_after: Option<Duration>,
    },
    /// Quarantine with this reason.
    Quarantine(String),
    /// Nothing to record: it stays queued.
    Requeued,
}

impl DestQueue {
    /// An empty queue.
    pub fn new(backoff: Backoff) -> Self {
        DestQueue {
            queued: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            backoff,
            down_until: None,
            down_count: 0,
            down_since: None,
            last_error: None,
            quarantining: false,
        }
    }

    fn failed(&mut self, reason: &str, now: Instant) {
        self.last_error = Some(LastError {
            message: reason.to_string(),
            at: now,
            cleared: false,
        });
    }

    /// Whether its last finished object went to quarantine with no confirmation since (the
    /// archive refuses what it is sent).
    pub fn is_quarantining(&self) -> bool {
        self.quarantining
    }

    /// The last failure (kept, marked cleared, after a success).
    pub fn last_error(&self) -> Option<&LastError> {
        self.last_error.as_ref()
    }

    /// Ends every backoff wait now (an operator says the archive is back): the destination and
    /// each waiting object may be tried at once. Object attempt counts are kept, so an object
    /// that keeps failing still reaches quarantine. Returns how many objects were waiting.
    pub fn retry_now(&mut self) -> usize {
        let mut waiting = usize::from(self.down_until.is_some());
        self.down_until = None;
        for e in self.queued.values_mut() {
            if e.not_before.take().is_some() {
                waiting += 1;
            }
        }
        waiting
    }

    /// Queues an object (no-op if already queued or in flight).
    pub fn push(&mut self, id: u64) {
        if !self.in_flight.contains_key(&id) {
            self.queued.entry(id).or_default();
        }
    }

    /// Picks the next object, oldest first.
    pub fn next(&mut self, now: Instant) -> Next {
        if let Some(t) = self.down_until {
            if t > now {
                return if self.queued.is_empty() {
                    Next::Empty
                } else {
                    Next::WaitUntil(t)
                };
            }
        }
        let mut earliest: Option<Instant> = None;
        let mut pick = None;
        for (id, e) in &self.queued {
            match e.not_before {
                Some(t) if t > now => earliest = Some(earliest.map_or(t, |x: Instant| x.min(t))),
                _ => {
                    pick = Some(*id);
                    break;
                }
            }
        }
        match pick {
            Some(id) => {
                let e = self.queued.remove(&id).unwrap_or_default();
                self.in_flight.insert(id, e);
                Next::Take(id)
            }
            None => earliest.map_or(Next::Empty, Next::WaitUntil),
        }
    }

    /// Applies the result of sending `id`.
    pub fn on_result(&mut self, id: u64, outcome: &Outcome, now: Instant, jitter: f64) -> Effect {
        let mut entry = self.in_flight.remove(&id).unwrap_or_default();
        entry.sends += 1;
        match outcome {
            Outcome::Confirmed(_) => {
                self.down_count = 0;
                self.down_until = None;
                let recovered_after = self
                    .down_since
                    .take()
                    .map(|t| now.saturating_duration_since(t));
                if let Some(e) = &mut self.last_error {
                    e.cleared = true;
                }
                self.quarantining = false;
                Effect::Confirm {
                    attempts: entry.sends,
                    recovered_after,
                }
            }
            Outcome::Refused(reason) => {
                self.down_count = 0;
                self.down_until = None;
                self.down_since = None;
                self.failed(reason, now);
                self.quarantining = true;
                Effect::Quarantine(reason.clone())
            }
            Outcome::RetryObject(reason) => {
                self.down_count = 0;
                self.down_until = None;
                self.down_since = None;
                entry.attempts += 1;
                self.failed(reason, now);
                if entry.attempts >= MAX_OBJECT_ATTEMPTS {
                    self.quarantining = true;
                    return Effect::Quarantine(format!(
                        "gave up after {} attempts: {reason}",
                        entry.attempts
                    ));
                }
                entry.not_before = Some(now + self.backoff.delay(entry.attempts, jitter));
                self.queued.insert(id, entry);
                Effect::Requeued
            }
            Outcome::DestinationDown(reason) => {
                self.down_count += 1;
                self.down_since.get_or_insert(now);
                let until = now + self.backoff.delay(self.down_count, jitter);
                // Several workers fail together when the archive goes down: keep the latest wait.
                self.down_until = Some(self.down_until.map_or(until, |t| t.max(until)));
                self.failed(reason, now);
                self.queued.insert(id, entry);
                Effect::Requeued
            }
        }
    }

    /// Forgets an object (it left the spool, or needs no sending any more).
    pub fn forget(&mut self, id: u64) {
        self.queued.remove(&id);
        self.in_flight.remove(&id);
    }

    /// Objects waiting or in flight.
    pub fn depth(&self) -> usize {
        self.queued.len() + self.in_flight.len()
    }

    /// The oldest waiting or in-flight id.
    pub fn oldest(&self) -> Option<u64> {
        let a = self.queued.keys().next().copied();
        let b = self.in_flight.keys().next().copied();
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the destination is down: the last contact failed and none has
    /// succeeded since. It stays down while the backoff waits *and* while the
    /// next attempt is under way, so a status read between two attempts never
    /// shows an unreachable archive as up.
    pub fn is_down(&self) -> bool {
        self.down_count > 0
    }

    /// Ids queued (for tests and status).
    pub fn queued_ids(&self) -> BTreeSet<u64> {
        self.queued.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> DestQueue {
        DestQueue::new(Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        })
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        assert_eq!(b.delay(1, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(3, 1.0), Duration::from_secs(4));
        assert_eq!(b.delay(3, 0.0), Duration::from_secs(2));
        assert_eq!(b.delay(30, 1.0), Duration::from_secs(60));
    }

    #[test]
    fn oldest_first_and_no_duplicates() {
        let mut q = q();
        let now = Instant::now();
        q.push(3);
        q.push(1);
        q.push(1);
        assert_eq!(q.next(now), Next::Take(1));
        q.push(1); // in flight: ignored
        assert_eq!(q.next(now), Next::Take(3));
        assert_eq!(q.next(now), Next::Empty);
        assert_eq!(q.depth(), 2);
        assert_eq!(
            q.on_result(1, &Outcome::Confirmed(None), now, 0.5),
            Effect::Confirm {
                attempts: 1,
                recovered_after: None
            }
        );
        assert_eq!(q.depth(), 1);
    }

    #[test]
    fn destination_down_pauses_everything_then_resumes() {
        let mut q = q();
        let now = Instant::now();
        q.push(1);
        q.push(2);
        assert_eq!(q.next(now), Next::Take(1));
        assert_eq!(
            q.on_result(1, &Outcome::DestinationDown("refused".into()), now, 1.0),
            Effect::Requeued
        );
        assert!(q.is_down());
        assert_eq!(q.next(now), Next::WaitUntil(now + Duration::from_secs(1)));
        let later = now + Duration::from_secs(1);
        assert_eq!(q.next(later), Next::Take(1));
        assert!(q.is_down(), "still down while the retry is under way");
        assert_eq!(
            q.on_result(1, &Outcome::DestinationDown("refused".into()), later, 1.0),
            Effect::Requeued
        );
        assert_eq!(
            q.next(later),
            Next::WaitUntil(later + Duration::from_secs(2))
        );
        let e = q.last_error().expect("error").clone();
        assert_eq!(
            (e.message.as_str(), e.at, e.cleared),
            ("refused", later, false)
        );
        let later = later + Duration::from_secs(2);
        assert_eq!(q.next(later), Next::Take(1));
        assert_eq!(
            q.on_result(1, &Outcome::Confirmed(None), later, 1.0),
            Effect::Confirm {
                attempts: 3,
                recovered_after: Some(Duration::from_secs(3))
            }
        );
        assert!(!q.is_down());
        let e = q.last_error().expect("kept");
        assert!(e.cleared, "a success marks the last error as history");
        assert_eq!(q.next(later), Next::Take(2));
        assert_eq!(
            q.on_result(2, &Outcome::Confirmed(None), later, 1.0),
            Effect::Confirm {
                attempts: 1,
                recovered_after: None
            },
            "only the send that ends an outage is a recovery"
        );
    }

    #[test]
    fn retry_now_ends_every_wait_but_keeps_attempt_counts() {
        let mut q = q();
        let now = Instant::now();
        q.push(1);
        q.push(2);
        assert_eq!(q.next(now), Next::Take(1));
        q.on_result(1, &Outcome::RetryObject("A700".into()), now, 1.0);
        assert_eq!(q.next(now), Next::Take(2));
        for _ in 0..5 {
            q.on_result(2, &Outcome::DestinationDown("refused".into()), now, 1.0);
            assert!(matches!(q.next(now), Next::WaitUntil(_)));
            // Simulate the wait elapsing for the destination only.
            q.down_until = Some(now);
            assert_eq!(q.next(now), Next::Take(2));
        }
        q.on_result(2, &Outcome::DestinationDown("refused".into()), now, 1.0);
        assert!(matches!(q.next(now), Next::WaitUntil(t) if t > now + Duration::from_secs(30)));
        assert_eq!(q.retry_now(), 2, "the destination's wait and object 1's");
        assert_eq!(q.next(now), Next::Take(1));
        assert_eq!(q.next(now), Next::Take(2));
        assert!(q.is_down(), "down until a contact succeeds");
        assert_eq!(q.retry_now(), 0, "nothing waits any more");
        // Object 1's attempt count was kept: it still reaches quarantine after 8 in all.
        let mut effect = q.on_result(1, &Outcome::RetryObject("A700".into()), now, 1.0);
        for _ in 2..MAX_OBJECT_ATTEMPTS {
            assert_eq!(effect, Effect::Requeued);
            q.retry_now();
            assert_eq!(q.next(now), Next::Take(1));
            effect = q.on_result(1, &Outcome::RetryObject("A700".into()), now, 1.0);
        }
        assert!(matches!(effect, Effect::Quarantine(_)), "{effect:?}");
    }

    #[test]
    fn object_retries_then_quarantine() {
        let mut q = q();
        let mut now = Instant::now();
        q.push(7);
        q.push(8);
        assert_eq!(q.next(now), Next::Take(7));
        assert_eq!(
            q.on_result(7, &Outcome::RetryObject("A700".into()), now, 1.0),
            Effect::Requeued
        );
        // 7 waits; 8 goes first.
        assert_eq!(q.next(now), Next::Take(8));
        assert_eq!(q.next(now), Next::WaitUntil(now + Duration::from_secs(1)));
        let mut effect = Effect::Requeued;
        for _ in 1..MAX_OBJECT_ATTEMPTS {
            now += Duration::from_secs(120);
            assert_eq!(q.next(now), Next::Take(7));
            effect = q.on_result(7, &Outcome::RetryObject("A700".into()), now, 1.0);
        }
        assert!(
            matches!(effect, Effect::Quarantine(ref r) if r.starts_with("gave up after 8 attempts"))
        );
        assert_eq!(
            q.on_result(8, &Outcome::Refused("C000".into()), now, 0.0),
            Effect::Quarantine("C000".into())
        );
        assert_eq!(q.depth(), 0);
    }

    #[test]
    fn a_destination_is_quarantining_from_a_refusal_until_a_confirmation() {
        let mut q = q();
        let now = Instant::now();
        for id in [1, 2, 3] {
            q.push(id);
        }
        assert!(!q.is_quarantining());
        assert_eq!(q.next(now), Next::Take(1));
        q.on_result(1, &Outcome::Refused("C000".into()), now, 0.0);
        assert!(q.is_quarantining());
        // An outage says nothing about refusals: still quarantining.
        assert_eq!(q.next(now), Next::Take(2));
        q.on_result(2, &Outcome::DestinationDown("refused".into()), now, 0.0);
        assert!(q.is_quarantining() && q.is_down());
        let later = now + Duration::from_secs(120);
        assert_eq!(q.next(later), Next::Take(2));
        q.on_result(2, &Outcome::Confirmed(None), later, 0.0);
        assert!(!q.is_quarantining() && !q.is_down());
    }
}
