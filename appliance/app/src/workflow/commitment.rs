//! Storage Commitment Push Model SCP (PS3.4 Annex J).
//!
//! A modality asks with N-ACTION "do you hold these instances safely?". We answer the N-ACTION
//! at once (the request is persisted in the spool's index first, so it survives a restart) and
//! report the outcome with N-EVENT-REPORT once every referenced instance is confirmed by every
//! destination (success), or failed: never received (0x0112), received with another SOP class
//! (0x0119), quarantined by a destination (0x0110), or still unconfirmed after
//! `give_up_after_hours` (0x0110).
//!
//! The report goes on an open association of the requester that accepted the Storage
//! Commitment context (the one that asked, if still open), else on a new association to the
//! address configured for its AE title, where we propose the SCP role (role selection, PS3.4
//! J.3.3 / PS3.7 D.3.3.4). Without either, it waits for the modality's next association.
//!
//! [`evaluate`] is the pure decision; [`Commitment`] the persistent state and the delivery.

use crate::scu::ScuError;
use crate::workflow::assoc::MessageAssociation;
use crate::workflow::config::CommitmentSection;
use medgate_dicom::command::{field, status, tags};
use medgate_dicom::commitment::{self as sc, Failure, Outcome, Request, reason};
use medgate_dicom::dataset;
use medgate_dicom::pdu::RequestorRoles;
use medgate_spool::{ObjectRecord, Spool};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Decides a request from the spool records of its instances: `None` while some instance is
/// still waiting for a destination's confirmation (unless `expired`).
pub fn evaluate(request: &Request, records: &[ObjectRecord], expired: bool) -> Option<Outcome> {
    let mut success = Vec::new();
    let mut failed = Vec::new();
    for r in &request.references {
        let same: Vec<&ObjectRecord> = records
            .iter()
            .filter(|o| o.sop_instance_uid == r.sop_instance)
            .collect();
        let fail = |reason: u16| Failure {
            reference: r.clone(),
            reason,
        };
        if same.is_empty() {
            failed.push(fail(reason::NO_SUCH_OBJECT));
            continue;
        }
        // The newest copy with the right class decides (a resend replaces an older one).
        let Some(rec) = same
            .iter()
            .filter(|o| o.sop_class_uid == r.sop_class)
            .max_by_key(|o| o.id)
        else {
            failed.push(fail(reason::CLASS_INSTANCE_CONFLICT));
            continue;
        };
        if !rec.quarantined.is_empty() {
            failed.push(fail(reason::PROCESSING_FAILURE));
        } else if !rec.pending.is_empty() {
            if !expired {
                return None;
            }
            failed.push(fail(reason::PROCESSING_FAILURE));
        } else {
            success.push(r.clone());
        }
    }
    Some(Outcome {
        transaction_uid: request.transaction_uid.clone(),
        success,
        failed,
    })
}

/// One request as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingRequest {
    /// The request.
    pub request: Request,
    /// Who asked.
    pub calling_ae: String,
    /// The AE title they called (ours), used as calling AE when we report on a new association.
    pub called_ae: String,
    /// When it arrived.
    pub received_at_ms: u64,
    /// The outcome, once decided; the request is deleted once it is delivered.
    pub outcome: Option<Outcome>,
    /// Delivery attempts on new associations.
    pub attempts: u32,
    /// Not before this time (ms since the epoch) on a new association.
    pub next_attempt_ms: u64,
    /// The last delivery error.
    pub last_error: Option<String>,
}

/// What an association task is asked to send.
pub type Report = Outcome;

struct Live {
    calling_ae: String,
    tx: mpsc::UnboundedSender<Report>,
}

/// Counters (no patient data: counts only).
#[derive(Debug, Default)]
pub struct CommitmentCounters {
    /// N-ACTION requests accepted.
    pub requests: AtomicU64,
    /// N-ACTION requests refused.
    pub refused: AtomicU64,
    /// Reports delivered with every instance committed.
    pub reported_success: AtomicU64,
    /// Reports delivered with failures.
    pub reported_failures: AtomicU64,
    /// Failed delivery attempts.
    pub delivery_errors: AtomicU64,
}

/// The storage commitment service.
pub struct Commitment {
    cfg: CommitmentSection,
    spool: Arc<Spool>,
    tree: sled::Tree,
    live: Mutex<HashMap<u64, Live>>,
    inflight: Mutex<HashMap<String, Instant>>,
    next_assoc: AtomicU64,
    wake: tokio::sync::Notify,
    /// Counters.
    pub counters: CommitmentCounters,
}

impl std::fmt::Debug for Commitment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commitment").finish_non_exhaustive()
    }
}

/// A live association's registration; dropping it unregisters.
#[derive(Debug)]
pub struct Registration {
    service: Arc<Commitment>,
    id: u64,
    /// Reports to send on this association.
    pub reports: mpsc::UnboundedReceiver<Report>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.service
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        // Anything handed to this association and not confirmed goes out another way.
        self.service.wake.notify_one();
    }
}

/// How long a report handed to an open association may wait for its N-EVENT-REPORT-RSP.
const INFLIGHT_TIMEOUT: Duration = Duration::from_secs(30);

impl Commitment {
    /// Opens the service's state in the workflow store (it must outlive an index rebuild).
    pub fn open(
        cfg: CommitmentSection,
        spool: Arc<Spool>,
        store: &medgate_spool::WorkflowStore,
    ) -> Result<Self, medgate_spool::SpoolError> {
        let tree = store.tree("commitment")?;
        Ok(Commitment {
            cfg,
            spool,
            tree,
            live: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            next_assoc: AtomicU64::new(1),
            wake: tokio::sync::Notify::new(),
            counters: CommitmentCounters::default(),
        })
    }

    /// Registers an association of `calling_ae` that accepted the Storage Commitment context.
    pub fn register(self: &Arc<Self>, calling_ae: &str) -> Registration {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_assoc.fetch_add(1, Ordering::Relaxed);
        self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(
            id,
            Live {
                calling_ae: calling_ae.to_string(),
                tx,
            },
        );
        self.wake.notify_one();
        Registration {
            service: self.clone(),
            id,
            reports: rx,
        }
    }

    /// Takes on a request (persisted before this returns).
    pub fn accept(
        &self,
        request: Request,
        calling_ae: &str,
        called_ae: &str,
    ) -> Result<(), medgate_spool::SpoolError> {
        let p = PendingRequest {
            calling_ae: calling_ae.to_string(),
            called_ae: called_ae.to_string(),
            received_at_ms: now_ms(),
            outcome: None,
            attempts: 0,
            next_attempt_ms: 0,
            last_error: None,
            request,
        };
        self.put(&p)?;
        self.tree.flush()?;
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            calling_ae,
            instances = p.request.references.len(),
            "storage commitment requested"
        );
        self.wake.notify_one();
        Ok(())
    }

    fn put(&self, p: &PendingRequest) -> Result<(), medgate_spool::SpoolError> {
        let v = serde_json::to_vec(p).map_err(medgate_spool::SpoolError::from)?;
        self.tree
            .insert(p.request.transaction_uid.as_bytes(), v)
            .map_err(medgate_spool::SpoolError::from)?;
        Ok(())
    }

    /// Every request not yet reported.
    pub fn pending(&self) -> Vec<PendingRequest> {
        self.tree
            .iter()
            .filter_map(|kv| kv.ok())
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect()
    }

    /// The requester confirmed a report (N-EVENT-REPORT-RSP success).
    pub fn delivered(&self, transaction_uid: &str) {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(transaction_uid);
        if let Ok(Some(v)) = self.tree.remove(transaction_uid.as_bytes()) {
            let _ = self.tree.flush();
            if let Ok(p) = serde_json::from_slice::<PendingRequest>(&v) {
                let ok = p.outcome.as_ref().is_none_or(|o| o.failed.is_empty());
                let c = if ok {
                    &self.counters.reported_success
                } else {
                    &self.counters.reported_failures
                };
                c.fetch_add(1, Ordering::Relaxed);
                tracing::info!(calling_ae = %p.calling_ae, all_committed = ok, "storage commitment reported");
            }
        }
    }

    /// A report handed to an association failed; try again.
    pub fn not_delivered(&self, transaction_uid: &str, why: &str) {
        self.counters
            .delivery_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            error = why,
            "storage commitment report not accepted; will retry"
        );
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(transaction_uid);
        self.wake.notify_one();
    }

    /// Re-evaluates and delivers until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let poll = Duration::from_secs(self.cfg.poll_interval_secs);
        loop {
            let me = self.clone();
            let due = tokio::task::spawn_blocking(move || me.decide_all()).await;
            if let Ok(due) = due {
                for p in due {
                    self.deliver(p).await;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {},
                () = tokio::time::sleep(poll) => {},
            }
        }
    }

    /// Decides what can be decided; returns the requests whose outcome is ready to deliver.
    fn decide_all(&self) -> Vec<PendingRequest> {
        let mut pending = self.pending();
        let undecided: HashSet<String> = pending
            .iter()
            .filter(|p| p.outcome.is_none())
            .flat_map(|p| p.request.references.iter().map(|r| r.sop_instance.clone()))
            .collect();
        let records = match self.spool.find_by_sop_instance(&undecided) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "storage commitment: cannot read the spool index");
                return Vec::new();
            }
        };
        let give_up_ms = self.cfg.give_up_after_hours * 3_600_000;
        let now = now_ms();
        for p in pending.iter_mut().filter(|p| p.outcome.is_none()) {
            let expired = now.saturating_sub(p.received_at_ms) >= give_up_ms;
            if let Some(o) = evaluate(&p.request, &records, expired) {
                tracing::info!(calling_ae = %p.calling_ae, committed = o.success.len(), failed = o.failed.len(), "storage commitment decided");
                p.outcome = Some(o);
                if let Err(e) = self.put(p) {
                    tracing::warn!(error = %e, "storage commitment: cannot persist an outcome");
                }
            }
        }
        pending.retain(|p| p.outcome.is_some());
        pending
    }

    async fn deliver(&self, mut p: PendingRequest) {
        let Some(outcome) = p.outcome.clone() else {
            return;
        };
        let txn = p.request.transaction_uid.clone();
        {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = inflight.get(&txn) {
                if t.elapsed() < INFLIGHT_TIMEOUT && self.has_live(&p.calling_ae) {
                    return;
                }
                inflight.remove(&txn);
            }
            // An open association of the requester: hand it over.
            let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            let mut ids: Vec<&u64> = live
                .iter()
                .filter(|(_, l)| l.calling_ae == p.calling_ae && !l.tx.is_closed())
                .map(|(id, _)| id)
                .collect();
            ids.sort();
            if let Some(id) = ids.last() {
                if live[*id].tx.send(outcome.clone()).is_ok() {
                    inflight.insert(txn, Instant::now());
                    return;
                }
            }
        }
        // Else a new association, if we know where.
        let Some(rq) = self
            .cfg
            .requesters
            .iter()
            .find(|r| r.ae_title.trim() == p.calling_ae)
            .cloned()
        else {
            if p.attempts == 0 {
                tracing::info!(calling_ae = %p.calling_ae, "storage commitment outcome waits for the requester's next association (no [[commitment.requester]] address for it)");
                p.attempts = 1;
                let _ = self.put(&p);
            }
            return;
        };
        if now_ms() < p.next_attempt_ms {
            return;
        }
        let called = rq
            .called_ae_title
            .clone()
            .unwrap_or_else(|| rq.ae_title.clone());
        let result = self
            .report_on_new_association(&rq.address, &p.called_ae, &called, &outcome)
            .await;
        match result {
            Ok(()) => self.delivered(&txn),
            Err(e) => {
                self.counters
                    .delivery_errors
                    .fetch_add(1, Ordering::Relaxed);
                p.attempts = p.attempts.saturating_add(1);
                let backoff = self
                    .cfg
                    .retry_secs
                    .saturating_mul(u64::from(p.attempts.min(10)));
                p.next_attempt_ms = now_ms() + backoff.min(3600) * 1000;
                p.last_error = Some(e.to_string());
                tracing::warn!(calling_ae = %p.calling_ae, address = %rq.address, error = %e, retry_in_secs = backoff.min(3600), "storage commitment report failed");
                let _ = self.put(&p);
            }
        }
    }

    fn has_live(&self, calling_ae: &str) -> bool {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|l| l.calling_ae == calling_ae && !l.tx.is_closed())
    }

    async fn report_on_new_association(
        &self,
        address: &str,
        calling_ae: &str,
        called_ae: &str,
        outcome: &Outcome,
    ) -> Result<(), ScuError> {
        let timeout = Duration::from_secs(self.cfg.timeout_secs);
        // We are the association requestor but the SCP of the service: propose that role.
        let roles = [(
            sc::SOP_CLASS,
            RequestorRoles {
                scu: false,
                scp: true,
            },
        )];
        let mut assoc = MessageAssociation::connect(
            address,
            calling_ae,
            called_ae,
            &[sc::SOP_CLASS],
            &roles,
            timeout,
        )
        .await?;
        let result = send_report(&mut assoc, outcome).await;
        match &result {
            Ok(()) => assoc.release().await,
            Err(_) => assoc.abort().await,
        }
        result
    }

    /// Counts for `/api/status`.
    pub fn status(&self) -> serde_json::Value {
        let pending = self.pending();
        let c = &self.counters;
        serde_json::json!({
            "requests": c.requests.load(Ordering::Relaxed),
            "refused": c.refused.load(Ordering::Relaxed),
            "pending": pending.iter().filter(|p| p.outcome.is_none()).count(),
            "awaiting_delivery": pending.iter().filter(|p| p.outcome.is_some()).count(),
            "reported_success": c.reported_success.load(Ordering::Relaxed),
            "reported_failures": c.reported_failures.load(Ordering::Relaxed),
            "delivery_errors": c.delivery_errors.load(Ordering::Relaxed),
        })
    }

    /// Prometheus lines.
    pub fn render_metrics(&self, out: &mut String) {
        let pending = self.pending();
        let c = &self.counters;
        let mut g = |name: &str, kind: &str, help: &str, v: u64| {
            crate::metrics::write_metric(out, name, kind, help, v);
        };
        g(
            "medgate_commitment_requests_total",
            "counter",
            "Storage commitment N-ACTION requests accepted.",
            c.requests.load(Ordering::Relaxed),
        );
        g(
            "medgate_commitment_refused_total",
            "counter",
            "Storage commitment N-ACTION requests refused.",
            c.refused.load(Ordering::Relaxed),
        );
        g(
            "medgate_commitment_reported_success_total",
            "counter",
            "Storage commitment reports with every instance committed.",
            c.reported_success.load(Ordering::Relaxed),
        );
        g(
            "medgate_commitment_reported_failures_total",
            "counter",
            "Storage commitment reports with failed instances.",
            c.reported_failures.load(Ordering::Relaxed),
        );
        g(
            "medgate_commitment_delivery_errors_total",
            "counter",
            "Failed attempts to deliver a storage commitment report.",
            c.delivery_errors.load(Ordering::Relaxed),
        );
        g(
            "medgate_commitment_pending",
            "gauge",
            "Storage commitment requests not yet reported.",
            pending.len() as u64,
        );
    }
}

/// Sends an N-EVENT-REPORT on an association (requestor side) and waits for its response.
async fn send_report(assoc: &mut MessageAssociation, outcome: &Outcome) -> Result<(), ScuError> {
    let ctx = assoc
        .context_for(sc::SOP_CLASS)
        .cloned()
        .ok_or_else(|| ScuError::NoContext {
            sop_class: sc::SOP_CLASS.into(),
            transfer_syntax: "implicit or explicit VR little endian".into(),
        })?;
    if let Some((_, r)) = assoc.roles.iter().find(|(uid, _)| uid == sc::SOP_CLASS) {
        if !r.scp {
            return Err(ScuError::Protocol(
                "the requester refused us the SCP role for storage commitment".into(),
            ));
        }
    }
    let id = assoc.next_message_id();
    let (cmd, data) = report_message(id, outcome, &ctx.transfer_syntax)?;
    assoc.send(ctx.id, &cmd, Some(&data)).await?;
    let Some(rsp) = assoc.receive().await? else {
        return Err(ScuError::Protocol(
            "released before answering the N-EVENT-REPORT".into(),
        ));
    };
    let c = &rsp.command;
    if c.command_field() != field::N_EVENT_REPORT_RSP
        || c.u16(tags::MESSAGE_ID_BEING_RESPONDED_TO) != Some(id)
    {
        return Err(ScuError::Protocol(format!(
            "expected N-EVENT-REPORT-RSP to message {id}, got command 0x{:04X}",
            c.command_field()
        )));
    }
    match c.status() {
        Some(status::SUCCESS) => Ok(()),
        other => Err(ScuError::Protocol(format!(
            "N-EVENT-REPORT answered with status {other:04X?}"
        ))),
    }
}

/// The N-EVENT-REPORT-RQ command and data set of an outcome.
pub fn report_message(
    message_id: u16,
    outcome: &Outcome,
    transfer_syntax: &str,
) -> Result<(medgate_dicom::command::CommandSet, Vec<u8>), ScuError> {
    let data = dataset::encode(&sc::outcome_dataset(outcome), transfer_syntax)
        .map_err(|e| ScuError::Protocol(e.to_string()))?;
    Ok((sc::event_report_rq(message_id, outcome.event_type()), data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use medgate_dicom::commitment::Reference;
    use std::collections::{BTreeMap, BTreeSet};

    fn rec(id: u64, instance: &str, pending: &[&str], quarantined: &[&str]) -> ObjectRecord {
        ObjectRecord {
            id,
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_instance_uid: instance.into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            calling_ae: "CT".into(),
            called_ae: "MEDGATE".into(),
            size: 1,
            received_at_ms: 0,
            summary: Default::default(),
            pending: pending
                .iter()
                .map(|s| s.to_string())
                .collect::<BTreeSet<_>>(),
            confirmed: BTreeMap::new(),
            quarantined: quarantined
                .iter()
                .map(|s| (s.to_string(), "refused".to_string()))
                .collect(),
            segment: None,
        }
    }

    fn request(instances: &[&str]) -> Request {
        Request {
            transaction_uid: "2.25.1".into(),
            references: instances
                .iter()
                .map(|i| Reference {
                    sop_class: "1.2.840.10008.5.1.4.1.1.2".into(),
                    sop_instance: i.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn waits_while_a_destination_has_not_confirmed() {
        let rq = request(&["1.1", "1.2"]);
        let recs = [rec(1, "1.1", &[], &[]), rec(2, "1.2", &["archive"], &[])];
        assert_eq!(evaluate(&rq, &recs, false), None);
        let o = evaluate(&rq, &recs, true).expect("expired: decided");
        assert_eq!(o.success.len(), 1);
        assert_eq!(o.failed[0].reason, reason::PROCESSING_FAILURE);
    }

    #[test]
    fn success_missing_quarantined_and_conflicting() {
        let rq = request(&["1.1", "1.2", "1.3", "1.4"]);
        let mut other_class = rec(4, "1.4", &[], &[]);
        other_class.sop_class_uid = "1.2.840.10008.5.1.4.1.1.4".into();
        let recs = [
            rec(1, "1.1", &[], &[]),
            rec(3, "1.3", &[], &["archive"]),
            other_class,
        ];
        let o = evaluate(&rq, &recs, false).expect("decided");
        assert_eq!(o.success, vec![rq.references[0].clone()]);
        let reasons: Vec<(String, u16)> = o
            .failed
            .iter()
            .map(|f| (f.reference.sop_instance.clone(), f.reason))
            .collect();
        assert_eq!(
            reasons,
            vec![
                ("1.2".to_string(), reason::NO_SUCH_OBJECT),
                ("1.3".to_string(), reason::PROCESSING_FAILURE),
                ("1.4".to_string(), reason::CLASS_INSTANCE_CONFLICT),
            ]
        );
        assert_eq!(o.event_type(), sc::EVENT_FAILURES);
    }

    #[test]
    fn all_confirmed_is_event_type_1() {
        let rq = request(&["1.1"]);
        let o = evaluate(&rq, &[rec(1, "1.1", &[], &[])], false).expect("decided");
        assert_eq!(o.event_type(), sc::EVENT_SUCCESS);
    }
}
