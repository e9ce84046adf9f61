//! Configuration sections of the workflow services and their validation (exact key paths).
//! Every section is optional: a service is off when its section is absent.

use crate::Problem;
use crate::check::{HostPort, validate_ae_title};
use serde::Deserialize;

/// `[commitment]`: Storage Commitment Push Model SCP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitmentSection {
    /// How often pending requests are re-evaluated against the spool.
    #[serde(default = "default_poll")]
    pub poll_interval_secs: u64,
    /// After this long, instances not yet confirmed by every destination are reported failed
    /// (0x0110) so the modality stops waiting and keeps its copy.
    #[serde(default = "default_give_up")]
    pub give_up_after_hours: u64,
    /// Connect and response timeout of the association we open to report.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Wait between attempts to report on a new association.
    #[serde(default = "default_retry")]
    pub retry_secs: u64,
    /// Requesters we may open an association to (per calling AE title).
    #[serde(default, rename = "requester")]
    pub requesters: Vec<RequesterSection>,
}

/// `[[commitment.requester]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequesterSection {
    /// The calling AE title of the modality that sends N-ACTION requests.
    pub ae_title: String,
    /// host:port where it accepts the N-EVENT-REPORT association.
    pub address: String,
    /// The AE title to call there; default: `ae_title`.
    #[serde(default)]
    pub called_ae_title: Option<String>,
}

/// `[worklist]`: Modality Worklist proxy to the RIS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorklistSection {
    /// host:port of the RIS worklist SCP.
    pub upstream: String,
    /// The RIS's AE title.
    pub called_ae_title: String,
    /// Our AE title towards the RIS; default: the listener's.
    #[serde(default)]
    pub calling_ae_title: Option<String>,
    /// Connect and response timeout towards the RIS.
    #[serde(default = "default_worklist_timeout")]
    pub timeout_secs: u64,
    /// Cached answers older than this are stale (still served when the RIS is down, flagged).
    #[serde(default = "default_ttl")]
    pub cache_ttl_secs: u64,
    /// Cached answers older than this are deleted and never served.
    #[serde(default = "default_max_age")]
    pub cache_max_age_hours: u64,
    /// Most entries one query may return.
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
}

/// `[qc]`: quality checks at ingest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QcSection {
    /// Seconds without a new object after which a study seems complete; a later object of it is
    /// flagged "late arrival". 0: no late-arrival check.
    #[serde(default = "default_complete_after")]
    pub complete_after_secs: u64,
    /// Flags and the state of the checks are kept this many days.
    #[serde(default = "default_keep_days")]
    pub keep_days: u64,
    /// Per station, the modalities expected from it.
    #[serde(default, rename = "station")]
    pub stations: Vec<QcStation>,
}

/// `[[qc.station]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QcStation {
    /// The station's calling AE title.
    pub ae_title: String,
    /// Modality codes (0008,0060) it is expected to send.
    pub modalities: Vec<String>,
}

fn default_complete_after() -> u64 {
    900
}
fn default_keep_days() -> u64 {
    30
}

fn default_worklist_timeout() -> u64 {
    10
}
fn default_ttl() -> u64 {
    3600
}
fn default_max_age() -> u64 {
    72
}
fn default_max_entries() -> usize {
    1000
}

fn default_poll() -> u64 {
    2
}
fn default_give_up() -> u64 {
    24
}
fn default_timeout() -> u64 {
    30
}
fn default_retry() -> u64 {
    60
}

/// Checks the workflow sections of a configuration.
pub fn validate(
    commitment: Option<&CommitmentSection>,
    worklist: Option<&WorklistSection>,
    qc: Option<&QcSection>,
) -> Vec<Problem> {
    let mut p = Vec::new();
    let mut bad = |key: String, message: String| p.push(Problem { key, message });
    if let Some(c) = commitment {
        if !(1..=3600).contains(&c.poll_interval_secs) {
            bad(
                "commitment.poll_interval_secs".into(),
                format!("{} must be between 1 and 3600", c.poll_interval_secs),
            );
        }
        if !(1..=720).contains(&c.give_up_after_hours) {
            bad(
                "commitment.give_up_after_hours".into(),
                format!(
                    "{} must be between 1 and 720 (30 days)",
                    c.give_up_after_hours
                ),
            );
        }
        if !(1..=600).contains(&c.timeout_secs) {
            bad(
                "commitment.timeout_secs".into(),
                format!("{} must be between 1 and 600", c.timeout_secs),
            );
        }
        if !(1..=86_400).contains(&c.retry_secs) {
            bad(
                "commitment.retry_secs".into(),
                format!("{} must be between 1 and 86400", c.retry_secs),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, r) in c.requesters.iter().enumerate() {
            let k = |f: &str| format!("commitment.requester[{i}].{f}");
            if let Err(e) = validate_ae_title(&r.ae_title) {
                bad(k("ae_title"), e);
            } else if !seen.insert(r.ae_title.trim().to_string()) {
                bad(
                    k("ae_title"),
                    format!(
                        "{:?} is listed twice; keep one entry per AE title",
                        r.ae_title
                    ),
                );
            }
            if let Err(e) = HostPort::parse(&r.address) {
                bad(k("address"), e);
            }
            if let Some(called) = &r.called_ae_title {
                if let Err(e) = validate_ae_title(called) {
                    bad(k("called_ae_title"), e);
                }
            }
        }
    }
    if let Some(w) = worklist {
        if let Err(e) = HostPort::parse(&w.upstream) {
            bad("worklist.upstream".into(), e);
        }
        if let Err(e) = validate_ae_title(&w.called_ae_title) {
            bad("worklist.called_ae_title".into(), e);
        }
        if let Some(ae) = &w.calling_ae_title {
            if let Err(e) = validate_ae_title(ae) {
                bad("worklist.calling_ae_title".into(), e);
            }
        }
        if !(1..=120).contains(&w.timeout_secs) {
            bad(
                "worklist.timeout_secs".into(),
                format!("{} must be between 1 and 120", w.timeout_secs),
            );
        }
        if !(1..=604_800).contains(&w.cache_ttl_secs) {
            bad(
                "worklist.cache_ttl_secs".into(),
                format!("{} must be between 1 and 604800 (7 days)", w.cache_ttl_secs),
            );
        }
        if !(1..=720).contains(&w.cache_max_age_hours) {
            bad(
                "worklist.cache_max_age_hours".into(),
                format!(
                    "{} must be between 1 and 720 (30 days)",
                    w.cache_max_age_hours
                ),
            );
        } else if w.cache_max_age_hours * 3600 < w.cache_ttl_secs {
            bad(
                "worklist.cache_max_age_hours".into(),
                "must be at least cache_ttl_secs, or stale entries could never be served".into(),
            );
        }
        if !(1..=100_000).contains(&w.max_entries) {
            bad(
                "worklist.max_entries".into(),
                format!("{} must be between 1 and 100000", w.max_entries),
            );
        }
    }
    if let Some(q) = qc {
        if q.complete_after_secs > 30 * 86_400 {
            bad(
                "qc.complete_after_secs".into(),
                format!(
                    "{} must be at most 2592000 (30 days); 0 turns the late-arrival check off",
                    q.complete_after_secs
                ),
            );
        }
        if !(1..=3650).contains(&q.keep_days) {
            bad(
                "qc.keep_days".into(),
                format!("{} must be between 1 and 3650", q.keep_days),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, s) in q.stations.iter().enumerate() {
            let k = |f: &str| format!("qc.station[{i}].{f}");
            if let Err(e) = validate_ae_title(&s.ae_title) {
                bad(k("ae_title"), e);
            } else if !seen.insert(s.ae_title.trim().to_string()) {
                bad(
                    k("ae_title"),
                    format!(
                        "{:?} is listed twice; keep one entry per AE title",
                        s.ae_title
                    ),
                );
            }
            if s.modalities.is_empty() {
                bad(
                    k("modalities"),
                    "must list at least one modality code (e.g. [\"CT\", \"SR\"])".into(),
                );
            }
            for (j, m) in s.modalities.iter().enumerate() {
                let ok = (1..=16).contains(&m.len())
                    && m.bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
                if !ok {
                    bad(
                        format!("qc.station[{i}].modalities[{j}]"),
                        format!(
                            "{m:?} is not a modality code (upper-case letters, digits, _; e.g. \"CT\")"
                        ),
                    );
                }
            }
        }
    }
    p
}
