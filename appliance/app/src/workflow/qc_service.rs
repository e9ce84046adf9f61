//! The IO shell of the quality checks: after an object is stored, a single background worker
//! hashes its data set (SHA-256, from the spool file, off the C-STORE path), looks up what was
//! seen before in the index, runs [`qc::check`](super::qc::check), and records the flags.
//! Flags and counts are local: `/api/qc` and `medgate-appliance qc list` show SOP Instance UID,
//! check and time; metrics and status show counts only.

use crate::workflow::config::QcSection;
use crate::workflow::qc::{self, Check, Known, Observed, QcPolicy};
use medgate_spool::{ObjectRecord, Spool};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
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

/// One flag raised on one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    /// Spool id of the object.
    pub id: u64,
    /// Its SOP Instance UID.
    pub sop_instance_uid: String,
    /// The check it failed.
    pub check: Check,
    /// When it was received (ms since the epoch).
    pub received_at_ms: u64,
    /// Who sent it.
    pub calling_ae: String,
    /// Its modality, as sent.
    pub modality: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Seen {
    hash: String,
    at_ms: u64,
}

/// Objects waiting for QC; past this, QC of new objects is skipped (counted) rather than
/// holding memory.
const QUEUE: usize = 4096;

/// The quality-check service.
pub struct QcService {
    policy: QcPolicy,
    keep_ms: u64,
    spool: Arc<Spool>,
    hashes: sled::Tree,
    studies: sled::Tree,
    flags: sled::Tree,
    counts: BTreeMap<Check, AtomicU64>,
    flagged_objects: AtomicU64,
    checked: AtomicU64,
    skipped: AtomicU64,
    seq: AtomicU64,
    tx: mpsc::Sender<ObjectRecord>,
    rx: Mutex<Option<mpsc::Receiver<ObjectRecord>>>,
}

impl std::fmt::Debug for QcService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QcService").finish_non_exhaustive()
    }
}

impl QcService {
    /// Opens the state in the workflow store; counts are those of the flags kept.
    pub fn open(
        cfg: &QcSection,
        spool: Arc<Spool>,
        store: &medgate_spool::WorkflowStore,
    ) -> Result<Self, medgate_spool::SpoolError> {
        let hashes = store.tree("qc-hashes")?;
        let studies = store.tree("qc-studies")?;
        let flags = store.tree("qc-flags")?;
        let counts: BTreeMap<Check, AtomicU64> =
            Check::ALL.iter().map(|c| (*c, AtomicU64::new(0))).collect();
        for (_, v) in flags.iter().flatten() {
            if let Ok(f) = serde_json::from_slice::<Flag>(&v) {
                if let Some(c) = counts.get(&f.check) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        Ok(QcService {
            policy: QcPolicy {
                expected_modalities: cfg
                    .stations
                    .iter()
                    .map(|s| (s.ae_title.trim().to_string(), s.modalities.clone()))
                    .collect(),
                complete_after_ms: (cfg.complete_after_secs > 0)
                    .then_some(cfg.complete_after_secs * 1000),
            },
            keep_ms: cfg.keep_days * 86_400_000,
            spool,
            hashes,
            studies,
            flags,
            counts,
            flagged_objects: AtomicU64::new(0),
            checked: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            tx,
            rx: Mutex::new(Some(rx)),
        })
    }

    /// Called once an object is durably stored; never blocks.
    pub fn on_stored(&self, rec: &ObjectRecord) {
        if self.tx.try_send(rec.clone()).is_err() {
            let n = self.skipped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(
                    skipped = n + 1,
                    "quality checks fall behind ingest; some objects are not checked"
                );
            }
        }
    }

    /// The worker, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let mut pruned = Instant::now();
        loop {
            let rec = tokio::select! {
                () = shutdown.cancelled() => return,
                r = rx.recv() => match r { Some(r) => r, None => return },
            };
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.process(&rec)).await;
            if pruned.elapsed() > Duration::from_secs(600) {
                pruned = Instant::now();
                let me = self.clone();
                let _ = tokio::task::spawn_blocking(move || me.prune()).await;
            }
        }
    }

    fn hash_dataset(&self, id: u64) -> Option<String> {
        let mut f = self.spool.locate_id(id).ok()??.open().ok()?;
        let mut head = vec![0u8; 64 * 1024];
        let n = read_full(&mut f, &mut head).ok()?;
        let (_, offset) = medgate_dicom::part10::parse_meta(&head[..n]).ok()?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(head.get(offset..n)?);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let k = f.read(&mut buf).ok()?;
            if k == 0 {
                break;
            }
            ctx.update(&buf[..k]);
        }
        Some(
            ctx.finish()
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    fn process(&self, rec: &ObjectRecord) {
        let received_at_ms = if rec.received_at_ms == 0 {
            now_ms()
        } else {
            rec.received_at_ms
        };
        let s = &rec.summary;
        let observed = Observed {
            sop_instance_uid: rec.sop_instance_uid.clone(),
            calling_ae: rec.calling_ae.clone(),
            modality: s.modality.clone(),
            study_instance_uid: s.study_instance_uid.clone(),
            has_patient_id: s.has_patient_id,
            has_accession_number: s.has_accession_number,
            received_at_ms,
            content_hash: self.hash_dataset(rec.id),
        };
        let previous_hash = self
            .hashes
            .get(rec.sop_instance_uid.as_bytes())
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_slice::<Seen>(&v).ok())
            .map(|s| s.hash);
        let study_last_ms = observed
            .study_instance_uid
            .as_deref()
            .filter(|u| !u.is_empty())
            .and_then(|u| self.studies.get(u.as_bytes()).ok().flatten())
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes);
        let flags = qc::check(
            &self.policy,
            &observed,
            &Known {
                previous_hash,
                study_last_ms,
            },
        );
        if let Some(h) = &observed.content_hash {
            if let Ok(v) = serde_json::to_vec(&Seen {
                hash: h.clone(),
                at_ms: received_at_ms,
            }) {
                let _ = self.hashes.insert(rec.sop_instance_uid.as_bytes(), v);
            }
        }
        if let Some(u) = observed
            .study_instance_uid
            .as_deref()
            .filter(|u| !u.is_empty())
        {
            let last = study_last_ms.unwrap_or(0).max(received_at_ms);
            let _ = self.studies.insert(u.as_bytes(), &last.to_be_bytes());
        }
        self.checked.fetch_add(1, Ordering::Relaxed);
        if flags.is_empty() {
            return;
        }
        self.flagged_objects.fetch_add(1, Ordering::Relaxed);
        for check in &flags {
            let flag = Flag {
                id: rec.id,
                sop_instance_uid: rec.sop_instance_uid.clone(),
                check: *check,
                received_at_ms,
                calling_ae: rec.calling_ae.clone(),
                modality: s.modality.clone(),
            };
            let mut key = received_at_ms.to_be_bytes().to_vec();
            key.extend_from_slice(&self.seq.fetch_add(1, Ordering::Relaxed).to_be_bytes());
            if let Ok(v) = serde_json::to_vec(&flag) {
                let _ = self.flags.insert(key, v);
            }
            if let Some(c) = self.counts.get(check) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        let names: Vec<&str> = flags.iter().map(|c| c.name()).collect();
        tracing::info!(id = rec.id, calling_ae = %rec.calling_ae, checks = ?names, "quality check flagged an object (accepted and forwarded as usual)");
    }

    /// Drops state and flags older than `keep_days`.
    fn prune(&self) {
        let cutoff = now_ms().saturating_sub(self.keep_ms);
        for (k, v) in self.hashes.iter().flatten() {
            if serde_json::from_slice::<Seen>(&v).is_ok_and(|s| s.at_ms < cutoff) {
                let _ = self.hashes.remove(k);
            }
        }
        for (k, v) in self.studies.iter().flatten() {
            if <[u8; 8]>::try_from(v.as_ref()).is_ok_and(|b| u64::from_be_bytes(b) < cutoff) {
                let _ = self.studies.remove(k);
            }
        }
        for (k, v) in self.flags.iter().flatten() {
            if serde_json::from_slice::<Flag>(&v).is_ok_and(|f| f.received_at_ms < cutoff) {
                if let Ok(f) = serde_json::from_slice::<Flag>(&v) {
                    if let Some(c) = self.counts.get(&f.check) {
                        c.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                let _ = self.flags.remove(k);
            }
        }
    }

    /// The flags kept, newest first, at most `limit`.
    pub fn list(&self, limit: usize) -> Vec<Flag> {
        self.flags
            .iter()
            .rev()
            .flatten()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .take(limit)
            .collect()
    }

    /// Flags kept per check.
    pub fn counts(&self) -> HashMap<&'static str, u64> {
        self.counts
            .iter()
            .map(|(c, n)| (c.name(), n.load(Ordering::Relaxed)))
            .collect()
    }

    /// `/api/status` part (counts only).
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "flags": self.counts(),
            "objects_checked": self.checked.load(Ordering::Relaxed),
            "objects_flagged": self.flagged_objects.load(Ordering::Relaxed),
            "skipped": self.skipped.load(Ordering::Relaxed),
        })
    }

    /// Prometheus lines.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        crate::metrics::write_header(
            out,
            "medgate_qc_flags",
            "gauge",
            "Quality-check flags kept (last keep_days), by check.",
        );
        for (c, n) in &self.counts {
            let _ = writeln!(
                out,
                "medgate_qc_flags{{check=\"{}\"}} {}",
                c.name(),
                n.load(Ordering::Relaxed)
            );
        }
        let mut g = |name: &str, help: &str, v: u64| {
            crate::metrics::write_metric(out, name, "counter", help, v);
        };
        g(
            "medgate_qc_objects_checked_total",
            "Objects quality-checked since start.",
            self.checked.load(Ordering::Relaxed),
        );
        g(
            "medgate_qc_objects_flagged_total",
            "Objects with at least one quality flag since start.",
            self.flagged_objects.load(Ordering::Relaxed),
        );
        g(
            "medgate_qc_skipped_total",
            "Objects not quality-checked because the checks fell behind.",
            self.skipped.load(Ordering::Relaxed),
        );
    }
}

fn read_full(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = f.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}
