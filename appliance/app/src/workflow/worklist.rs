//! Modality Worklist proxy: answers a modality's MWL C-FIND by asking the upstream RIS
//! worklist SCP, and keeps the answers in the spool's index so that, when the RIS is
//! unreachable, the modality still gets the cached entries matching its query (matched here,
//! PS3.4 K.6). A cache older than `cache_ttl_secs` while the RIS is unreachable is "stale":
//! logged, counted and shown in `/api/status`, never hidden.
//!
//! Patient data stays here: the log says AE titles and counts, never names or IDs.

use crate::scu::ScuError;
use crate::workflow::assoc::MessageAssociation;
use crate::workflow::config::WorklistSection;
use crate::workflow::session::Outgoing;
use medgate_dicom::command::{StatusClass, field, status, status_class, tags};
use medgate_dicom::dataset::{self, Dataset};
use medgate_dicom::{uids, worklist as mwl};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// How long a cancelled query may take to end with the RIS before it is dropped.
const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// One cached worklist entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cached {
    fetched_at_ms: u64,
    /// The entry as the RIS sent it, explicit VR little endian.
    dataset: Vec<u8>,
}

/// Counters (no patient data).
#[derive(Debug, Default)]
pub struct WorklistCounters {
    /// Queries received from modalities.
    pub queries: AtomicU64,
    /// Queries answered by the RIS.
    pub upstream_answers: AtomicU64,
    /// Queries answered from the cache (RIS unreachable).
    pub cache_answers: AtomicU64,
    /// Entries returned to modalities.
    pub entries_returned: AtomicU64,
    /// Entries returned from the cache that were older than the TTL.
    pub stale_entries_returned: AtomicU64,
    /// Failed attempts to reach the RIS.
    pub upstream_errors: AtomicU64,
    /// Queries cancelled by the modality.
    pub cancelled: AtomicU64,
    /// Queries refused (bad identifier, too large, busy).
    pub refused: AtomicU64,
}

#[derive(Debug, Default)]
struct Upstream {
    /// `None` until the first query.
    up: Option<bool>,
    last_ok_ms: Option<u64>,
    last_error: Option<String>,
}

/// The worklist proxy.
pub struct Worklist {
    cfg: WorklistSection,
    calling_ae: String,
    tree: sled::Tree,
    upstream: Mutex<Upstream>,
    /// Counters.
    pub counters: WorklistCounters,
}

impl std::fmt::Debug for Worklist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worklist").finish_non_exhaustive()
    }
}

/// How a query ended.
enum Answer {
    /// Entries and whether they came from the cache (with how many stale).
    Entries(Vec<Dataset>, Option<u64>),
    /// The RIS refused the query: pass its status on.
    Refused(u16, String),
    /// Cancelled by the modality.
    Cancelled,
}

impl Worklist {
    /// Opens the cache in the workflow store.
    pub fn open(
        cfg: WorklistSection,
        listener_ae: &str,
        store: &medgate_spool::WorkflowStore,
    ) -> Result<Self, medgate_spool::SpoolError> {
        let tree = store.tree("worklist")?;
        Ok(Worklist {
            calling_ae: cfg
                .calling_ae_title
                .clone()
                .unwrap_or_else(|| listener_ae.to_string()),
            cfg,
            tree,
            upstream: Mutex::new(Upstream::default()),
            counters: WorklistCounters::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Upstream> {
        self.upstream.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers one C-FIND: pending responses then the final one go to `out`.
    pub async fn find(
        self: Arc<Self>,
        query: Dataset,
        calling_ae: String,
        message_id: u16,
        context: (u8, String),
        cancel: CancellationToken,
        out: mpsc::Sender<Outgoing>,
    ) {
        self.counters.queries.fetch_add(1, Ordering::Relaxed);
        let (ctx_id, ts) = context;
        // A cancelled query gets a moment to end cleanly with the RIS (C-CANCEL), then the
        // association to the RIS is dropped.
        let upstream = self.ask_upstream(&query, &cancel);
        tokio::pin!(upstream);
        let asked = tokio::select! {
            r = &mut upstream => r,
            () = async {
                cancel.cancelled().await;
                tokio::time::sleep(CANCEL_GRACE).await;
            } => Ok(Answer::Cancelled),
        };
        let answer = match asked {
            Ok(a) => a,
            Err(e) => {
                self.counters
                    .upstream_errors
                    .fetch_add(1, Ordering::Relaxed);
                {
                    let mut u = self.lock();
                    u.up = Some(false);
                    u.last_error = Some(e.to_string());
                }
                let me = self.clone();
                let q = query.clone();
                let cached = tokio::task::spawn_blocking(move || me.cached_answers(&q))
                    .await
                    .unwrap_or_default();
                let (entries, stale) = cached;
                if stale > 0 {
                    tracing::warn!(calling_ae = %calling_ae, upstream = %self.cfg.upstream, error = %e, entries = entries.len(), stale, ttl_secs = self.cfg.cache_ttl_secs, "worklist RIS unreachable; answering from a STALE cache");
                } else {
                    tracing::warn!(calling_ae = %calling_ae, upstream = %self.cfg.upstream, error = %e, entries = entries.len(), "worklist RIS unreachable; answering from the cache");
                }
                Answer::Entries(entries, Some(stale))
            }
        };
        let final_rsp = match answer {
            Answer::Cancelled => {
                self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
                mwl::find_rsp(message_id, status::CANCEL, false, None)
            }
            Answer::Refused(code, why) => {
                tracing::warn!(calling_ae = %calling_ae, status = format!("{code:04X}"), "worklist RIS refused the query");
                mwl::find_rsp(message_id, code, false, Some(&why))
            }
            Answer::Entries(entries, from_cache) => {
                match from_cache {
                    None => self
                        .counters
                        .upstream_answers
                        .fetch_add(1, Ordering::Relaxed),
                    Some(stale) => {
                        self.counters
                            .stale_entries_returned
                            .fetch_add(stale, Ordering::Relaxed);
                        self.counters.cache_answers.fetch_add(1, Ordering::Relaxed)
                    }
                };
                let mut cancelled = false;
                let mut sent = 0u64;
                for e in &entries {
                    if cancel.is_cancelled() {
                        cancelled = true;
                        break;
                    }
                    match dataset::encode(e, &ts) {
                        Ok(bytes) => {
                            let rsp = mwl::find_rsp(message_id, status::PENDING, true, None);
                            if out.send((ctx_id, rsp, Some(bytes))).await.is_err() {
                                return;
                            }
                            sent += 1;
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "a worklist entry could not be encoded; skipped");
                        }
                    }
                }
                self.counters
                    .entries_returned
                    .fetch_add(sent, Ordering::Relaxed);
                tracing::info!(calling_ae = %calling_ae, entries = sent, from_cache = from_cache.is_some(), "worklist query answered");
                if cancelled {
                    self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
                    mwl::find_rsp(message_id, status::CANCEL, false, None)
                } else {
                    mwl::find_rsp(message_id, status::SUCCESS, false, None)
                }
            }
        };
        let _ = out.send((ctx_id, final_rsp, None)).await;
    }

    /// Asks the RIS with the widened query; caches and returns the answers projected on the
    /// modality's return keys. `Err` only when the RIS could not be asked.
    async fn ask_upstream(
        self: &Arc<Self>,
        query: &Dataset,
        cancel: &CancellationToken,
    ) -> Result<Answer, ScuError> {
        let timeout = Duration::from_secs(self.cfg.timeout_secs);
        let mut assoc = MessageAssociation::connect(
            &self.cfg.upstream,
            &self.calling_ae,
            &self.cfg.called_ae_title,
            &[mwl::SOP_CLASS],
            &[],
            timeout,
        )
        .await?;
        let result = self.query_on(&mut assoc, query, cancel).await;
        match &result {
            Ok(_) => assoc.release().await,
            Err(_) => assoc.abort().await,
        }
        let (answers, cancelled, refused) = result?;
        {
            let mut u = self.lock();
            u.up = Some(true);
            u.last_ok_ms = Some(now_ms());
            u.last_error = None;
        }
        if let Some((code, why)) = refused {
            return Ok(Answer::Refused(code, why));
        }
        if cancelled {
            return Ok(Answer::Cancelled);
        }
        let me = self.clone();
        let (q, a) = (query.clone(), answers.clone());
        let _ = tokio::task::spawn_blocking(move || me.refresh_cache(&q, &a)).await;
        Ok(Answer::Entries(
            answers.iter().map(|a| mwl::project(query, a)).collect(),
            None,
        ))
    }

    #[allow(clippy::type_complexity)]
    async fn query_on(
        &self,
        assoc: &mut MessageAssociation,
        query: &Dataset,
        cancel: &CancellationToken,
    ) -> Result<(Vec<Dataset>, bool, Option<(u16, String)>), ScuError> {
        let ctx =
            assoc
                .context_for(mwl::SOP_CLASS)
                .cloned()
                .ok_or_else(|| ScuError::NoContext {
                    sop_class: mwl::SOP_CLASS.into(),
                    transfer_syntax: "implicit or explicit VR little endian".into(),
                })?;
        let id = assoc.next_message_id();
        let identifier = dataset::encode(&mwl::widen(query), &ctx.transfer_syntax)
            .map_err(|e| ScuError::Protocol(e.to_string()))?;
        assoc
            .send(ctx.id, &mwl::find_rq(id), Some(&identifier))
            .await?;
        let mut answers = Vec::new();
        let mut cancel_sent = false;
        loop {
            let msg = tokio::select! {
                m = assoc.receive() => m?,
                () = cancel.cancelled(), if !cancel_sent => {
                    cancel_sent = true;
                    assoc.send(ctx.id, &mwl::cancel_rq(id), None).await?;
                    continue;
                }
            };
            let Some(msg) = msg else {
                return Err(ScuError::Protocol("the RIS released during a query".into()));
            };
            let c = &msg.command;
            if c.command_field() != field::C_FIND_RSP
                || c.u16(tags::MESSAGE_ID_BEING_RESPONDED_TO) != Some(id)
            {
                return Err(ScuError::Protocol(format!(
                    "expected C-FIND-RSP to message {id}, got command 0x{:04X}",
                    c.command_field()
                )));
            }
            let code = c.status().unwrap_or(0xFFFF);
            match status_class(code) {
                StatusClass::Pending => {
                    let bytes = msg.dataset.ok_or_else(|| {
                        ScuError::Protocol("pending C-FIND-RSP without identifier".into())
                    })?;
                    let ds = dataset::decode(&bytes, &ctx.transfer_syntax)
                        .map_err(|e| ScuError::Protocol(format!("RIS answer: {e}")))?;
                    if answers.len() >= self.cfg.max_entries {
                        return Err(ScuError::Protocol(format!(
                            "the RIS sent more than worklist.max_entries = {} entries",
                            self.cfg.max_entries
                        )));
                    }
                    answers.push(ds);
                }
                StatusClass::Success | StatusClass::Warning => return Ok((answers, false, None)),
                StatusClass::Cancel => return Ok((answers, true, None)),
                StatusClass::Failure => {
                    let why = c
                        .string(tags::ERROR_COMMENT)
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "refused by the RIS".into());
                    return Ok((answers, false, Some((code, why))));
                }
            }
        }
    }

    /// Stores the RIS's answers; drops cached entries the same query matches that the RIS no
    /// longer lists (done or cancelled procedures), and entries past `cache_max_age_hours`.
    fn refresh_cache(&self, query: &Dataset, answers: &[Dataset]) {
        let now = now_ms();
        let mut keys = HashSet::new();
        for a in answers {
            let key = mwl::entry_key(a);
            let Ok(bytes) = dataset::encode(a, uids::EXPLICIT_VR_LE) else {
                continue;
            };
            let v = Cached {
                fetched_at_ms: now,
                dataset: bytes,
            };
            if let Ok(v) = serde_json::to_vec(&v) {
                let _ = self.tree.insert(key.as_bytes(), v);
            }
            keys.insert(key);
        }
        let max_age = self.cfg.cache_max_age_hours * 3_600_000;
        for item in self.tree.iter().flatten() {
            let (k, v) = item;
            let Ok(c) = serde_json::from_slice::<Cached>(&v) else {
                let _ = self.tree.remove(&k);
                continue;
            };
            let key = String::from_utf8_lossy(&k).to_string();
            if keys.contains(&key) {
                continue;
            }
            let old = now.saturating_sub(c.fetched_at_ms) > max_age;
            let gone = dataset::decode(&c.dataset, uids::EXPLICIT_VR_LE)
                .map(|d| mwl::matches(query, &d))
                .unwrap_or(true);
            if old || gone {
                let _ = self.tree.remove(&k);
            }
        }
        let _ = self.tree.flush();
    }

    /// The cached entries matching `query`, projected, and how many of them are stale.
    fn cached_answers(&self, query: &Dataset) -> (Vec<Dataset>, u64) {
        let now = now_ms();
        let ttl = self.cfg.cache_ttl_secs * 1000;
        let max_age = self.cfg.cache_max_age_hours * 3_600_000;
        let mut out = Vec::new();
        let mut stale = 0;
        for (_, v) in self.tree.iter().flatten() {
            let Ok(c) = serde_json::from_slice::<Cached>(&v) else {
                continue;
            };
            let age = now.saturating_sub(c.fetched_at_ms);
            if age > max_age {
                continue;
            }
            let Ok(d) = dataset::decode(&c.dataset, uids::EXPLICIT_VR_LE) else {
                continue;
            };
            if let Some(r) = mwl::respond(query, &d) {
                if age > ttl {
                    stale += 1;
                }
                out.push(r);
            }
            if out.len() >= self.cfg.max_entries {
                break;
            }
        }
        (out, stale)
    }

    fn cache_summary(&self) -> (u64, Option<u64>) {
        let now = now_ms();
        let mut n = 0;
        let mut oldest: Option<u64> = None;
        for (_, v) in self.tree.iter().flatten() {
            if let Ok(c) = serde_json::from_slice::<Cached>(&v) {
                n += 1;
                let age = now.saturating_sub(c.fetched_at_ms) / 1000;
                oldest = Some(oldest.map_or(age, |o: u64| o.max(age)));
            }
        }
        (n, oldest)
    }

    /// Whether answers would now come from a stale cache: the RIS was unreachable at the last
    /// query and its last good answer is older than the TTL (or there never was one).
    pub fn is_stale(&self) -> bool {
        let u = self.lock();
        u.up == Some(false)
            && u.last_ok_ms
                .is_none_or(|t| now_ms().saturating_sub(t) > self.cfg.cache_ttl_secs * 1000)
    }

    /// `/api/status` part (counts and states only).
    pub fn status(&self) -> serde_json::Value {
        let (entries, oldest) = self.cache_summary();
        let c = &self.counters;
        let stale = self.is_stale();
        let u = self.lock();
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "upstream": self.cfg.upstream,
            "upstream_up": u.up,
            "last_upstream_ok_secs_ago": u.last_ok_ms.map(|t| now_ms().saturating_sub(t) / 1000),
            "last_upstream_error": u.last_error,
            "cache_entries": entries,
            "cache_oldest_age_secs": oldest,
            "cache_ttl_secs": self.cfg.cache_ttl_secs,
            "cache_stale": stale,
            "queries": ld(&c.queries),
            "upstream_answers": ld(&c.upstream_answers),
            "cache_answers": ld(&c.cache_answers),
            "entries_returned": ld(&c.entries_returned),
            "stale_entries_returned": ld(&c.stale_entries_returned),
            "upstream_errors": ld(&c.upstream_errors),
            "cancelled": ld(&c.cancelled),
            "refused": ld(&c.refused),
        })
    }

    /// Prometheus lines.
    pub fn render_metrics(&self, out: &mut String) {
        let c = &self.counters;
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (entries, oldest) = self.cache_summary();
        let up = self.lock().up;
        let mut g = |name: &str, kind: &str, help: &str, v: u64| {
            crate::metrics::write_metric(out, name, kind, help, v);
        };
        g(
            "medgate_worklist_queries_total",
            "counter",
            "Modality worklist queries received.",
            ld(&c.queries),
        );
        g(
            "medgate_worklist_upstream_answers_total",
            "counter",
            "Worklist queries answered by the RIS.",
            ld(&c.upstream_answers),
        );
        g(
            "medgate_worklist_cache_answers_total",
            "counter",
            "Worklist queries answered from the cache (RIS unreachable).",
            ld(&c.cache_answers),
        );
        g(
            "medgate_worklist_entries_returned_total",
            "counter",
            "Worklist entries returned to modalities.",
            ld(&c.entries_returned),
        );
        g(
            "medgate_worklist_stale_entries_returned_total",
            "counter",
            "Cached worklist entries returned although older than the TTL.",
            ld(&c.stale_entries_returned),
        );
        g(
            "medgate_worklist_upstream_errors_total",
            "counter",
            "Failed attempts to query the RIS.",
            ld(&c.upstream_errors),
        );
        g(
            "medgate_worklist_cancelled_total",
            "counter",
            "Worklist queries cancelled by the modality.",
            ld(&c.cancelled),
        );
        g(
            "medgate_worklist_refused_total",
            "counter",
            "Worklist queries refused.",
            ld(&c.refused),
        );
        g(
            "medgate_worklist_upstream_up",
            "gauge",
            "1 if the RIS answered the last query (0 before any).",
            u64::from(up == Some(true)),
        );
        g(
            "medgate_worklist_cache_entries",
            "gauge",
            "Worklist entries in the cache.",
            entries,
        );
        g(
            "medgate_worklist_cache_oldest_age_seconds",
            "gauge",
            "Age of the oldest cached worklist entry.",
            oldest.unwrap_or(0),
        );
        g(
            "medgate_worklist_cache_stale",
            "gauge",
            "1 if the RIS is unreachable and the cache is older than its TTL.",
            u64::from(self.is_stale()),
        );
    }
}
