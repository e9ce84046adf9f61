//! [`DesiredConfig`]: the part of the configuration the fleet owns, as one document — the
//! appliance's TOML file without its box-local keys, or the JSON object the fleet sends.

use crate::check::{binds_overlap, is_standard_transfer_syntax, validate_uid};
use crate::sections::{
    DestinationKind, DestinationSection, ForwardSection, ListenerSection, SpoolSection,
};
use crate::workflow::{CommitmentSection, QcSection, WorklistSection};
use crate::{Problem, rules};
use serde::Deserialize;

/// What the fleet may set: the name, the listener, spool limits, retry policy, destinations,
/// rules and the workflow services. Unknown keys are refused — box-local ones too (see
/// [`BOX_LOCAL_KEYS`] and [`strip_box_local`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredConfig {
    /// `[appliance]` with only `name`; absent: the appliance keeps its local name.
    #[serde(default)]
    pub appliance: Option<DesiredAppliance>,
    /// The DICOM listener.
    pub listener: ListenerSection,
    /// Spool watermarks and retention.
    #[serde(default)]
    pub spool: SpoolSection,
    /// Retry policy.
    #[serde(default)]
    pub forward: ForwardSection,
    /// Archives to forward to.
    #[serde(default, rename = "destination")]
    pub destinations: Vec<DestinationSection>,
    /// Coercion and routing rules.
    #[serde(default)]
    pub rules: rules::RulesConfig,
    /// Storage Commitment Push Model SCP (off when absent).
    #[serde(default)]
    pub commitment: Option<CommitmentSection>,
    /// Modality Worklist proxy (off when absent).
    #[serde(default)]
    pub worklist: Option<WorklistSection>,
    /// Quality checks at ingest (off when absent).
    #[serde(default)]
    pub qc: Option<QcSection>,
}

/// `[appliance]` as the fleet may set it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredAppliance {
    /// Display name.
    pub name: String,
}

/// The keys of the file that belong to the box and never to the fleet: `appliance.data_dir`,
/// `appliance.fleet_enrollment` and the `[fleet]`, `[hardware]` and `[status]` tables.
pub const BOX_LOCAL_KEYS: &[&str] = &[
    "appliance.data_dir",
    "appliance.fleet_enrollment",
    "fleet",
    "hardware",
    "status",
];

/// Removes the box-local keys from a document (a whole file sent as JSON has them); returns the
/// ones it removed, in [`BOX_LOCAL_KEYS`] order.
pub fn strip_box_local(doc: &mut serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let mut removed = Vec::new();
    for key in BOX_LOCAL_KEYS {
        let gone = match key.split_once('.') {
            Some((table, k)) => doc
                .get_mut(table)
                .and_then(serde_json::Value::as_object_mut)
                .and_then(|t| t.remove(k))
                .is_some(),
            None => doc.remove(*key).is_some(),
        };
        if gone {
            removed.push(key.to_string());
        }
    }
    if doc
        .get("appliance")
        .and_then(serde_json::Value::as_object)
        .is_some_and(serde_json::Map::is_empty)
    {
        doc.remove("appliance");
    }
    removed
}

impl DesiredConfig {
    /// Reads a JSON document (the TOML tables as a JSON object). Box-local keys must have been
    /// removed ([`strip_box_local`]): they are refused like any unknown key.
    pub fn from_json(doc: serde_json::Map<String, serde_json::Value>) -> Result<Self, Problem> {
        serde_json::from_value(serde_json::Value::Object(doc)).map_err(|e| Problem {
            key: "config".into(),
            message: e.to_string(),
        })
    }

    /// Checks every value; returns all problems at once, each with its dotted key.
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut bad = |key: &str, message: String| {
            p.push(Problem {
                key: key.to_string(),
                message,
            })
        };
        if let Some(a) = &self.appliance {
            if a.name.trim().is_empty() {
                bad("appliance.name", "must not be empty".into());
            }
        }
        let l = &self.listener;
        // AE titles, networks and destination addresses: the parse the appliance wires from.
        let (listener_keys, destination_keys): (Vec<Problem>, Vec<Problem>) = self
            .endpoints()
            .err()
            .unwrap_or_default()
            .into_iter()
            .partition(|p| p.key.starts_with("listener."));
        for p in listener_keys {
            bad(&p.key, p.message);
        }
        let mut destination_keys = destination_keys.into_iter().peekable();
        for (i, uid) in l.private_sop_classes.iter().enumerate() {
            if let Err(e) = validate_uid(uid) {
                bad(&format!("listener.private_sop_classes[{i}]"), e);
            }
        }
        for (i, uid) in l.transfer_syntaxes.iter().enumerate() {
            if let Err(e) = validate_uid(uid) {
                bad(&format!("listener.transfer_syntaxes[{i}]"), e);
            } else if !is_standard_transfer_syntax(uid) {
                bad(
                    &format!("listener.transfer_syntaxes[{i}]"),
                    format!(
                        "{uid:?} is not a transfer syntax the DICOM standard defines (PS3.6 Annex A); leave the list empty to accept every standard one"
                    ),
                );
            }
        }
        if !(1..=4096).contains(&l.max_associations) {
            bad(
                "listener.max_associations",
                format!("{} must be between 1 and 4096", l.max_associations),
            );
        }
        if !(16_384..=16_777_216).contains(&l.max_pdu_bytes) {
            bad(
                "listener.max_pdu_bytes",
                format!(
                    "{} must be between 16384 and 16777216 (16 MiB)",
                    l.max_pdu_bytes
                ),
            );
        }
        if !(1..=3600).contains(&l.artim_timeout_secs) {
            bad(
                "listener.artim_timeout_secs",
                "must be between 1 and 3600".into(),
            );
        }
        if !(1..=86_400).contains(&l.idle_timeout_secs) {
            bad(
                "listener.idle_timeout_secs",
                "must be between 1 and 86400".into(),
            );
        }
        match (&l.tls_bind, &l.tls) {
            (Some(_), None) => bad(
                "listener.tls_bind",
                "is set but [listener.tls] is missing: add certificate and private_key".into(),
            ),
            (None, Some(_)) => bad(
                "listener.tls",
                "is set but listener.tls_bind is missing: say where DICOM TLS listens (e.g. \"0.0.0.0:2762\")".into(),
            ),
            _ => {}
        }
        if l.bind.port() == 0 {
            bad(
                "listener.bind",
                format!(
                    "{}: port 0 would listen on a random port no modality is configured for; use 104 or 11112",
                    l.bind
                ),
            );
        }
        if let Some(tls) = l.tls_bind {
            if tls.port() == 0 {
                bad(
                    "listener.tls_bind",
                    format!("{tls}: port 0 would listen on a random port; use 2762"),
                );
            } else if binds_overlap(tls, l.bind) {
                bad(
                    "listener.tls_bind",
                    format!(
                        "{tls} takes the same port as listener.bind ({}); give DICOM TLS its own port (e.g. 2762)",
                        l.bind
                    ),
                );
            }
        }
        let s = &self.spool;
        if !(1.0..=99.9).contains(&s.high_watermark_percent) {
            bad(
                "spool.high_watermark_percent",
                "must be between 1 and 99.9".into(),
            );
        }
        if !(0.0..s.high_watermark_percent).contains(&s.low_watermark_percent) {
            bad(
                "spool.low_watermark_percent",
                format!(
                    "{} must be below spool.high_watermark_percent ({})",
                    s.low_watermark_percent, s.high_watermark_percent
                ),
            );
        }
        if s.segment_mib > 1024 {
            bad(
                "spool.segment_mib",
                format!(
                    "{} MiB is more than the 1024 MiB a segment may be; use 16 (the default), or 0 for a file per object",
                    s.segment_mib
                ),
            );
        }
        if s.warm_mib > 4096 {
            bad(
                "spool.warm_mib",
                format!(
                    "{} MiB is more than the 4096 MiB a burst needs; lower it (0 turns warming off)",
                    s.warm_mib
                ),
            );
        }
        if self.forward.initial_backoff_ms == 0 || self.forward.initial_backoff_ms > 600_000 {
            bad(
                "forward.initial_backoff_ms",
                "must be between 1 and 600000".into(),
            );
        }
        if self.forward.max_backoff_secs * 1000 < self.forward.initial_backoff_ms {
            bad(
                "forward.max_backoff_secs",
                "must not be below forward.initial_backoff_ms".into(),
            );
        }
        if self.destinations.is_empty() {
            bad(
                "destination",
                "no [[destination]]: objects would stay on the appliance forever; add the regional archive".into(),
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, d) in self.destinations.iter().enumerate() {
            let k = |f: &str| format!("destination[{i}].{f}");
            if d.name.is_empty()
                || !d
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                bad(
                    &k("name"),
                    format!("{:?} must be lowercase letters, digits and '-'", d.name),
                );
            }
            if !names.insert(d.name.clone()) {
                bad(&k("name"), format!("{:?} is used twice", d.name));
            }
            if !(1..=64).contains(&d.parallel) {
                bad(&k("parallel"), "must be between 1 and 64".into());
            }
            if !(1..=3600).contains(&d.timeout_secs) {
                bad(&k("timeout_secs"), "must be between 1 and 3600".into());
            }
            let prefix = format!("destination[{i}].");
            while let Some(p) = destination_keys.next_if(|p| p.key.starts_with(&prefix)) {
                bad(&p.key, p.message);
            }
            match d.kind {
                DestinationKind::Dimse => {
                    if d.url.is_some() {
                        bad(
                            &k("url"),
                            "is for kind = \"stow\"; a dimse destination uses address".into(),
                        );
                    }
                }
                DestinationKind::Stow => {
                    if d.address.is_some() || d.called_ae_title.is_some() {
                        bad(
                            &k("address"),
                            "address and called_ae_title are for kind = \"dimse\"".into(),
                        );
                    }
                    if d.username.is_some() != d.password_file.is_some() {
                        bad(
                            &k("username"),
                            "username and password_file go together".into(),
                        );
                    }
                    if d.username.is_some() && d.bearer_token_file.is_some() {
                        bad(
                            &k("bearer_token_file"),
                            "use either basic auth or a bearer token, not both".into(),
                        );
                    }
                }
            }
            if let Some(t) = &d.tls {
                if t.certificate.is_some() != t.private_key.is_some() {
                    bad(
                        &k("tls.certificate"),
                        "certificate and private_key go together".into(),
                    );
                }
            }
        }
        p.extend(crate::workflow::validate(
            self.commitment.as_ref(),
            self.worklist.as_ref(),
            self.qc.as_ref(),
        ));
        let names: Vec<String> = self.destinations.iter().map(|d| d.name.clone()).collect();
        p.extend(rules::validate(&self.rules, &names));
        p
    }
}
