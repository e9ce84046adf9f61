//! What sled keeps per object and per calling peer.

use medgate_dicom::scan::Summary;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One spooled object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectRecord {
    /// Spool id: microseconds since the epoch at receipt, made unique. Orders objects by age.
    pub id: u64,
    /// SOP Class UID (from the C-STORE command).
    pub sop_class_uid: String,
    /// SOP Instance UID (from the C-STORE command).
    pub sop_instance_uid: String,
    /// Transfer syntax of the bytes as received.
    pub transfer_syntax: String,
    /// Calling AE title of the sender.
    pub calling_ae: String,
    /// Called AE title the sender used.
    pub called_ae: String,
    /// Size of the Part 10 file in bytes.
    pub size: u64,
    /// Receipt time, milliseconds since the epoch.
    pub received_at_ms: u64,
    /// What the header scan found.
    #[serde(default)]
    pub summary: Summary,
    /// Destinations that have not confirmed it yet (quarantined ones included).
    pub pending: BTreeSet<String>,
    /// Destinations that confirmed it, with the time (ms since the epoch).
    #[serde(default)]
    pub confirmed: BTreeMap<String, u64>,
    /// Destinations that refused it permanently, with their reason.
    #[serde(default)]
    pub quarantined: BTreeMap<String, String>,
    /// Where its bytes are when they are a record of a segment; `None`: a file of its own
    /// (large objects, and every object spooled before segments existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<SegmentSlot>,
}

/// A record's place in a segment.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SegmentSlot {
    /// The segment's number.
    pub segment: u32,
    /// The segment's life the record was written in.
    pub generation: u64,
    /// Where the record's header block starts.
    pub offset: u64,
}

impl ObjectRecord {
    /// The record of an object just received, before [`crate::Spool::commit`] gives it its id,
    /// size, time and destinations.
    pub fn incoming(
        sop_class_uid: &str,
        sop_instance_uid: &str,
        transfer_syntax: &str,
        calling_ae: &str,
        called_ae: &str,
        summary: Summary,
    ) -> ObjectRecord {
        ObjectRecord {
            id: 0,
            sop_class_uid: sop_class_uid.to_string(),
            sop_instance_uid: sop_instance_uid.to_string(),
            transfer_syntax: transfer_syntax.to_string(),
            calling_ae: calling_ae.to_string(),
            called_ae: called_ae.to_string(),
            size: 0,
            received_at_ms: 0,
            summary,
            pending: BTreeSet::new(),
            confirmed: BTreeMap::new(),
            quarantined: BTreeMap::new(),
            segment: None,
        }
    }

    /// Every destination confirmed it: the retention policy may release it.
    pub fn is_released(&self) -> bool {
        self.pending.is_empty()
    }

    /// The time the last destination confirmed it.
    pub fn released_at_ms(&self) -> Option<u64> {
        if self.is_released() {
            Some(
                self.confirmed
                    .values()
                    .copied()
                    .max()
                    .unwrap_or(self.received_at_ms),
            )
        } else {
            None
        }
    }
}

/// A quarantined (object, destination) pair.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QuarantineEntry {
    /// Spool id.
    pub id: u64,
    /// Destination that refused it.
    pub destination: String,
    /// The refusal.
    pub reason: String,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// Transfer syntax.
    pub transfer_syntax: String,
    /// Calling AE it came from.
    pub calling_ae: String,
    /// Size in bytes.
    pub size: u64,
}

/// A calling AE (at an address) that knocked on the listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct PeerRecord {
    /// Calling AE title.
    pub calling_ae: String,
    /// Source IP address.
    pub address: String,
    /// Called AE titles it used.
    pub called_aes: BTreeSet<String>,
    /// First seen (ms since the epoch).
    pub first_seen_ms: u64,
    /// Last seen (ms since the epoch).
    pub last_seen_ms: u64,
    /// Associations accepted.
    pub accepted: u64,
    /// Associations rejected.
    pub rejected: u64,
    /// Why the last rejection happened.
    pub last_rejection: Option<String>,
    /// SOP classes offered, with whether we accepted them.
    pub sop_classes: BTreeMap<String, bool>,
    /// Modality codes (0008,0060) of the objects it stored (codes only, bounded).
    #[serde(default)]
    pub modalities: BTreeSet<String>,
    /// The AE title its last association called (`None`: recorded by an older version).
    #[serde(default)]
    pub last_called_ae: Option<String>,
    /// Whether its last association was accepted (`None`: recorded by an older version).
    #[serde(default)]
    pub last_accepted: Option<bool>,
    /// Why its last association was refused, as a code (`calling_ae_not_allowed`, …); `None`
    /// when it was accepted.
    #[serde(default)]
    pub last_refusal: Option<String>,
}
