//! Quality checks at ingest, as pure functions of what the header scan found, the object's
//! content hash, and what was seen before. QC flags, it never refuses: flagged objects are
//! stored and forwarded like any other. The IO (state in the index, the hash) is in
//! [`super::qc_service`].

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One quality check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// (0010,0020) Patient ID missing or empty.
    MissingPatientId,
    /// (0008,0050) Accession Number missing or empty.
    MissingAccessionNumber,
    /// (0020,000D) Study Instance UID missing or empty.
    MissingStudyInstanceUid,
    /// A modality the sending station is not expected to produce.
    UnexpectedModality,
    /// The same SOP Instance UID received again with different content.
    ConflictingDuplicate,
    /// An object of a study that had been quiet long enough to seem complete.
    LateArrival,
}

impl Check {
    /// Every check, in a stable order.
    pub const ALL: [Check; 6] = [
        Check::MissingPatientId,
        Check::MissingAccessionNumber,
        Check::MissingStudyInstanceUid,
        Check::UnexpectedModality,
        Check::ConflictingDuplicate,
        Check::LateArrival,
    ];

    /// The name used in the API, metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Check::MissingPatientId => "missing_patient_id",
            Check::MissingAccessionNumber => "missing_accession_number",
            Check::MissingStudyInstanceUid => "missing_study_instance_uid",
            Check::UnexpectedModality => "unexpected_modality",
            Check::ConflictingDuplicate => "conflicting_duplicate",
            Check::LateArrival => "late_arrival",
        }
    }
}

/// What the checks are configured with.
#[derive(Debug, Clone, Default)]
pub struct QcPolicy {
    /// Per calling AE title, the modality codes expected from it (stations not listed: any).
    pub expected_modalities: HashMap<String, Vec<String>>,
    /// After this many ms without a new object a study seems complete; `None`: no late check.
    pub complete_after_ms: Option<u64>,
}

/// What ingest saw of one object (from the header scan and the stored file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Who sent it.
    pub calling_ae: String,
    /// (0008,0060) Modality.
    pub modality: Option<String>,
    /// (0020,000D) Study Instance UID.
    pub study_instance_uid: Option<String>,
    /// Patient ID present and not empty.
    pub has_patient_id: bool,
    /// Accession Number present and not empty.
    pub has_accession_number: bool,
    /// When it was received (ms since the epoch).
    pub received_at_ms: u64,
    /// Hash of the data set (hex), if it could be read.
    pub content_hash: Option<String>,
}

/// What was seen before this object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// Content hash of an earlier object with the same SOP Instance UID.
    pub previous_hash: Option<String>,
    /// When the study last received an object (ms since the epoch).
    pub study_last_ms: Option<u64>,
}

/// The checks this object fails (empty: clean).
pub fn check(policy: &QcPolicy, o: &Observed, known: &Known) -> Vec<Check> {
    let mut flags = Vec::new();
    if !o.has_patient_id {
        flags.push(Check::MissingPatientId);
    }
    if !o.has_accession_number {
        flags.push(Check::MissingAccessionNumber);
    }
    if o.study_instance_uid.as_deref().is_none_or(str::is_empty) {
        flags.push(Check::MissingStudyInstanceUid);
    }
    if let Some(expected) = policy.expected_modalities.get(&o.calling_ae) {
        let ok = o
            .modality
            .as_deref()
            .is_some_and(|m| expected.iter().any(|e| e.eq_ignore_ascii_case(m.trim())));
        if !ok {
            flags.push(Check::UnexpectedModality);
        }
    }
    if let (Some(prev), Some(now)) = (&known.previous_hash, &o.content_hash) {
        if prev != now {
            flags.push(Check::ConflictingDuplicate);
        }
    }
    if let (Some(quiet), Some(last)) = (policy.complete_after_ms, known.study_last_ms) {
        if o.received_at_ms.saturating_sub(last) >= quiet {
            flags.push(Check::LateArrival);
        }
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean() -> Observed {
        Observed {
            sop_instance_uid: "1.2.3".into(),
            calling_ae: "CT01".into(),
            modality: Some("CT".into()),
            study_instance_uid: Some("1.2".into()),
            has_patient_id: true,
            has_accession_number: true,
            received_at_ms: 1_000_000,
            content_hash: Some("aa".into()),
        }
    }

    fn policy() -> QcPolicy {
        QcPolicy {
            expected_modalities: HashMap::from([(
                "CT01".to_string(),
                vec!["CT".to_string(), "SR".to_string()],
            )]),
            complete_after_ms: Some(60_000),
        }
    }

    #[test]
    fn a_clean_object_is_not_flagged() {
        assert_eq!(check(&policy(), &clean(), &Known::default()), vec![]);
        // A resend with the same content, soon after the study's last object: clean.
        let known = Known {
            previous_hash: Some("aa".into()),
            study_last_ms: Some(999_000),
        };
        assert_eq!(check(&policy(), &clean(), &known), vec![]);
    }

    #[test]
    fn missing_identifiers() {
        let o = Observed {
            has_patient_id: false,
            has_accession_number: false,
            study_instance_uid: None,
            ..clean()
        };
        assert_eq!(
            check(&policy(), &o, &Known::default()),
            vec![
                Check::MissingPatientId,
                Check::MissingAccessionNumber,
                Check::MissingStudyInstanceUid
            ]
        );
    }

    #[test]
    fn unexpected_modality_only_for_configured_stations() {
        let mr = Observed {
            modality: Some("MR".into()),
            ..clean()
        };
        assert_eq!(
            check(&policy(), &mr, &Known::default()),
            vec![Check::UnexpectedModality]
        );
        let none = Observed {
            modality: None,
            ..clean()
        };
        assert_eq!(
            check(&policy(), &none, &Known::default()),
            vec![Check::UnexpectedModality]
        );
        let other_station = Observed {
            calling_ae: "US01".into(),
            ..mr
        };
        assert_eq!(check(&policy(), &other_station, &Known::default()), vec![]);
        let lower = Observed {
            modality: Some("sr".into()),
            ..clean()
        };
        assert_eq!(check(&policy(), &lower, &Known::default()), vec![]);
    }

    #[test]
    fn conflicting_duplicate_and_late_arrival() {
        let known = Known {
            previous_hash: Some("bb".into()),
            study_last_ms: Some(1_000_000 - 60_000),
        };
        assert_eq!(
            check(&policy(), &clean(), &known),
            vec![Check::ConflictingDuplicate, Check::LateArrival]
        );
        // Hash unknown (file unreadable): no duplicate verdict.
        let o = Observed {
            content_hash: None,
            ..clean()
        };
        assert_eq!(check(&policy(), &o, &known), vec![Check::LateArrival]);
        // No quiet period configured: no late check.
        let p = QcPolicy {
            complete_after_ms: None,
            ..policy()
        };
        assert_eq!(check(&p, &o, &known), vec![]);
    }
}
