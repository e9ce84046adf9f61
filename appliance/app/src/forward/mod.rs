//! Store-and-forward: one durable queue per destination (the spool's records are the durable
//! part, [`queue::DestQueue`] the in-memory schedule), N workers per destination, each holding
//! one association or HTTP client. Results are recorded in the spool before the queue forgets
//! an object; transient failures back off with jitter, permanent refusals go to quarantine.

pub mod dimse;
pub mod queue;
pub mod stow;

use crate::metrics::{DestinationMetrics, Metrics};
use medgate_contract::now_ms;
use medgate_spool::{ObjectRecord, Spool};
use queue::{Backoff, DestQueue, Effect, Next, Outcome};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Idle associations are released after this long.
pub const IDLE_RELEASE: Duration = Duration::from_secs(15);

/// A sender: one association or HTTP client towards a destination.
#[derive(Debug)]
pub enum Sender {
    /// C-STORE SCU.
    Dimse(Box<dimse::DimseSender>),
    /// STOW-RS client.
    Stow(stow::StowSender),
}

impl Sender {
    async fn send(&mut self, rec: &ObjectRecord, path: &medgate_spool::ObjectLocation) -> Outcome {
        match self {
            Sender::Dimse(s) => s.send(rec, path).await,
            Sender::Stow(s) => s.send(rec, path).await,
        }
    }

    async fn idle(&mut self) {
        if let Sender::Dimse(s) = self {
            s.release().await;
        }
    }
}

/// A destination's state, for the status API, the CLI and the gauges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Objects waiting or in flight.
    pub depth: usize,
    /// Age of the oldest of them (s).
    pub oldest_age_secs: u64,
    /// The last contact failed and none succeeded since.
    pub down: bool,
    /// Its last finished object went to quarantine and none was confirmed since.
    pub quarantining: bool,
    /// The last failure, if any.
    pub last_error: Option<LastErrorSnapshot>,
}

/// The last failure of a destination, as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastErrorSnapshot {
    /// What failed.
    pub message: String,
    /// How long ago (s).
    pub age_secs: u64,
    /// When (Unix milliseconds).
    pub at_ms: u64,
    /// A send succeeded since: history, not the present state.
    pub cleared: bool,
}

/// One destination at run time.
#[derive(Debug)]
pub struct Destination {
    /// Its name.
    pub name: String,
    /// "dimse" or "stow".
    pub kind: &'static str,
    queue: Mutex<DestQueue>,
    notify: Notify,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    events: Arc<crate::events::Events>,
}

impl Destination {
    /// A destination with its queue loaded with the spool's pending objects.
    pub fn new(
        name: String,
        kind: &'static str,
        backoff: Backoff,
        spool: Arc<Spool>,
        metrics: Arc<Metrics>,
        events: Arc<crate::events::Events>,
    ) -> Result<Self, medgate_spool::SpoolError> {
        let mut q = DestQueue::new(backoff);
        for id in spool.pending_for(&name)? {
            q.push(id);
        }
        let quarantined = spool
            .quarantined()?
            .iter()
            .filter(|e| e.destination == name)
            .count() as u64;
        let d = Destination {
            name,
            kind,
            queue: Mutex::new(q),
            notify: Notify::new(),
            spool,
            metrics,
            events,
        };
        d.m().quarantined.store(quarantined, Ordering::Relaxed);
        Ok(d)
    }

    fn m(&self) -> &DestinationMetrics {
        // Metrics are created for every configured destination.
        static EMPTY: std::sync::OnceLock<DestinationMetrics> = std::sync::OnceLock::new();
        self.metrics
            .destinations
            .get(&self.name)
            .unwrap_or_else(|| EMPTY.get_or_init(DestinationMetrics::default))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DestQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an object and wakes a worker.
    pub fn push(&self, id: u64) {
        self.lock().push(id);
        self.notify.notify_one();
    }

    /// The destination's state now.
    pub fn snapshot(&self) -> Snapshot {
        let q = self.lock();
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let oldest_age_secs = q
            .oldest()
            .map(|id| now_us.saturating_sub(id) / 1_000_000)
            .unwrap_or(0);
        let last_error = q.last_error().map(|e| {
            let age = e.at.elapsed();
            LastErrorSnapshot {
                message: e.message.clone(),
                age_secs: age.as_secs(),
                at_ms: now_ms().saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
                cleared: e.cleared,
            }
        });
        Snapshot {
            depth: q.depth(),
            oldest_age_secs,
            down: q.is_down(),
            quarantining: q.is_quarantining(),
            last_error,
        }
    }

    /// Ends the backoff waits of this destination and its objects now, and wakes its workers
    /// (an operator says the archive is back). Returns how many waits were ended.
    pub fn retry_now(&self) -> usize {
        let ended = self.lock().retry_now();
        tracing::info!(destination = %self.name, waits_ended = ended, "retry now: backoff waits ended by an operator");
        self.notify.notify_waiters();
        // A worker between two waits has no waiter registered yet: it finds no wait left.
        self.notify.notify_one();
        ended
    }

    /// Refreshes the gauges.
    pub fn refresh_gauges(&self) {
        let s = self.snapshot();
        let m = self.m();
        m.queue_depth.store(s.depth as u64, Ordering::Relaxed);
        m.oldest_age_secs
            .store(s.oldest_age_secs, Ordering::Relaxed);
        m.up.store(u64::from(!s.down), Ordering::Relaxed);
    }

    /// Sets the quarantine gauge (after a purge).
    pub fn set_quarantined(&self, n: u64) {
        self.m().quarantined.store(n, Ordering::Relaxed);
    }

    /// Adjusts the quarantine gauge after a retry.
    pub fn unquarantined(&self, n: u64) {
        let g = &self.m().quarantined;
        let cur = g.load(Ordering::Relaxed);
        g.store(cur.saturating_sub(n), Ordering::Relaxed);
    }

    /// One worker: takes objects and sends them until shutdown.
    pub async fn worker(self: Arc<Self>, mut sender: Sender, shutdown: CancellationToken) {
        loop {
            let next = self.lock().next(Instant::now());
            match next {
                Next::Take(id) => {
                    let outcome = self.attempt(&mut sender, id).await;
                    self.apply(id, outcome).await;
                }
                Next::WaitUntil(t) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(t.into()) => {},
                        () = self.notify.notified() => {},
                        () = shutdown.cancelled() => break,
                    }
                }
                Next::Empty => {
                    tokio::select! {
                        () = self.notify.notified() => {},
                        () = tokio::time::sleep(IDLE_RELEASE) => sender.idle().await,
                        () = shutdown.cancelled() => break,
                    }
                }
            }
            if shutdown.is_cancelled() {
                break;
            }
        }
        sender.idle().await;
    }

    async fn attempt(
        &self,
        sender: &mut Sender,
        id: u64,
    ) -> Option<(Outcome, Option<ObjectRecord>, Duration)> {
        let rec = match self.spool.get(id) {
            Ok(Some(rec)) => rec,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(id, error = %e, "cannot read the spool index; will retry");
                return Some((
                    Outcome::DestinationDown(format!("spool index: {e}")),
                    None,
                    Duration::ZERO,
                ));
            }
        };
        if !rec.pending.contains(&self.name) || rec.quarantined.contains_key(&self.name) {
            return None;
        }
        let started = Instant::now();
        let loc = self.spool.locate(&rec);
        let outcome = sender.send(&rec, &loc).await;
        Some((outcome, Some(rec), started.elapsed()))
    }

    async fn apply(&self, id: u64, result: Option<(Outcome, Option<ObjectRecord>, Duration)>) {
        let Some((outcome, rec, elapsed)) = result else {
            self.lock().forget(id);
            return;
        };
        let effect = self
            .lock()
            .on_result(id, &outcome, Instant::now(), fastrand::f64());
        let m = self.m();
        let size = rec.as_ref().map_or(0, |r| r.size);
        match (&effect, &outcome) {
            (
                Effect::Confirm {
                    attempts,
                    recovered_after,
                },
                Outcome::Confirmed(warning),
            ) => {
                if let Some(down) = recovered_after {
                    tracing::info!(destination = %self.name, down_secs = down.as_secs(), queue_depth = self.lock().depth(), "destination reachable again; forwarding resumes");
                }
                if let Some(w) = warning {
                    tracing::warn!(destination = %self.name, id, warning = %w, "destination stored the object with a warning");
                }
                m.forwarded.fetch_add(1, Ordering::Relaxed);
                m.forwarded_bytes.fetch_add(size, Ordering::Relaxed);
                m.latency.observe(elapsed);
                if let Some(r) = &rec {
                    let since_receipt = now_ms().saturating_sub(r.received_at_ms);
                    m.delivery.observe(Duration::from_millis(since_receipt));
                    self.events.object_forwarded(
                        &self.name,
                        r.summary.study_instance_uid.as_deref(),
                        r.summary.modality.as_deref(),
                        r.size,
                        Duration::from_millis(since_receipt),
                        *attempts,
                    );
                }
                // In place, not on the blocking pool: a confirmation is an update of the index
                // in memory (sled's own threads write its log), and a hop to the pool and back
                // would cost two context switches per forwarded object.
                match self.spool.confirm(id, &self.name) {
                    Ok(released) => {
                        if released {
                            self.metrics
                                .objects_released
                                .fetch_add(1, Ordering::Relaxed);
                            self.metrics
                                .bytes_released
                                .fetch_add(size, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        tracing::error!(destination = %self.name, id, error = %e, "could not record a confirmation; the object will be sent again after a restart");
                    }
                }
            }
            (Effect::Quarantine(reason), _) => {
                tracing::warn!(destination = %self.name, id, reason = %reason, "object quarantined: the destination refused it; retry with `medgate-appliance quarantine retry`");
                m.quarantined_total.fetch_add(1, Ordering::Relaxed);
                m.quarantined.fetch_add(1, Ordering::Relaxed);
                if let Some(r) = &rec {
                    let why = if reason.starts_with("gave up after") {
                        medgate_contract::QuarantineReason::RetriesExhausted
                    } else {
                        medgate_contract::QuarantineReason::RejectedByDestination
                    };
                    self.events.object_quarantined(
                        why,
                        &r.calling_ae,
                        &r.sop_class_uid,
                        &self.name,
                        r.size,
                    );
                }
                let spool = self.spool.clone();
                let name = self.name.clone();
                let reason = reason.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if let Err(e) = spool.quarantine(id, &name, &reason) {
                        tracing::error!(id, error = %e, "could not record the quarantine");
                    }
                })
                .await;
            }
            (_, Outcome::DestinationDown(reason)) => {
                m.transient_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(destination = %self.name, reason = %reason, "destination unavailable; backing off");
            }
            (_, Outcome::RetryObject(reason)) => {
                m.transient_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(destination = %self.name, id, reason = %reason, "transient failure; the object will be retried");
            }
            _ => {}
        }
    }
}

/// Every destination; new objects are announced here.
#[derive(Debug, Default)]
pub struct ForwardHub {
    /// The destinations, in configuration order.
    pub destinations: Vec<Arc<Destination>>,
}

impl ForwardHub {
    /// Queues a new object for every destination.
    pub fn enqueue(&self, id: u64) {
        for d in &self.destinations {
            d.push(id);
        }
    }

    /// Queues a new object for the destinations it was routed to (its pending set).
    pub fn enqueue_routed(&self, rec: &ObjectRecord) {
        for d in &self.destinations {
            if rec.pending.contains(&d.name) {
                d.push(rec.id);
            }
        }
    }

    /// Ends the backoff waits of one destination (by name) or of all, and wakes their workers.
    /// Returns how many destinations were woken (0: no destination of that name).
    pub fn retry_now(&self, destination: Option<&str>) -> usize {
        let mut woken = 0;
        for d in &self.destinations {
            if destination.is_none_or(|n| n == d.name) {
                d.retry_now();
                woken += 1;
            }
        }
        woken
    }

    /// Queues an object again for one destination (after a quarantine retry).
    pub fn requeue(&self, id: u64, destination: &str) {
        if let Some(d) = self.destinations.iter().find(|d| d.name == destination) {
            d.push(id);
            d.unquarantined(1);
        }
    }
}
