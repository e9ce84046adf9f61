//! The C-STORE SCP's decisions that need no file or spool (PS3.4 B.2.3, PS3.7 9.1.1): is the
//! request acceptable on its presentation context, and is the received data set a DICOM data set
//! and the one its command announced. Each refusal is a DIMSE status and an error comment.

use crate::command::{self, CommandSet, status, tags};
use crate::scan::{self, Summary};
use crate::uids;

/// A C-STORE-RQ's identifying fields, as sent (UIDs trimmed of their padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRequest {
    /// Message ID.
    pub message_id: u16,
    /// Affected SOP Class UID.
    pub sop_class: String,
    /// Affected SOP Instance UID.
    pub sop_instance: String,
}

/// Why an object is refused: the C-STORE-RSP status and its error comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// DIMSE status.
    pub status: u16,
    /// Error Comment.
    pub comment: String,
}

impl Refusal {
    fn new(status: u16, comment: impl Into<String>) -> Self {
        Refusal {
            status,
            comment: comment.into(),
        }
    }
}

impl StoreRequest {
    /// The fields of a C-STORE-RQ (empty where missing).
    pub fn of(cmd: &CommandSet) -> Self {
        StoreRequest {
            message_id: cmd.message_id().unwrap_or(0),
            sop_class: cmd.string(tags::AFFECTED_SOP_CLASS_UID).unwrap_or_default(),
            sop_instance: cmd
                .string(tags::AFFECTED_SOP_INSTANCE_UID)
                .unwrap_or_default(),
        }
    }

    /// Checks the request against the presentation context it came on (its abstract syntax):
    /// both UIDs valid (`C000`), the SOP class the context's (`A900`).
    pub fn check(&self, context_abstract_syntax: &str) -> Result<(), Refusal> {
        if crate::validate_uid(&self.sop_instance).is_err()
            || crate::validate_uid(&self.sop_class).is_err()
        {
            return Err(Refusal::new(
                status::CANNOT_UNDERSTAND,
                "Affected SOP Class/Instance UID missing or invalid",
            ));
        }
        if self.sop_class != context_abstract_syntax {
            return Err(Refusal::new(
                status::DATASET_MISMATCH,
                format!(
                    "SOP class {} sent on a presentation context for {context_abstract_syntax}",
                    self.sop_class
                ),
            ));
        }
        Ok(())
    }

    /// The C-STORE-RSP with this status.
    pub fn response(&self, status_code: u16, comment: Option<&str>) -> CommandSet {
        command::store_rsp(
            self.message_id,
            &self.sop_class,
            &self.sop_instance,
            status_code,
            comment,
        )
    }

    /// The C-STORE-RSP of a refusal.
    pub fn refusal(&self, refusal: &Refusal) -> CommandSet {
        self.response(refusal.status, Some(&refusal.comment))
    }
}

/// Is the data set whose first bytes are `head` (`whole`: all of it) a DICOM data set in
/// `transfer_syntax`, and the one `request` announced? The scan's summary if so; `C000` for a
/// malformed data set, a different SOP Instance UID or none at all, `A900` for a different SOP
/// Class UID.
pub fn check_dataset(
    request: &StoreRequest,
    head: &[u8],
    transfer_syntax: &str,
    whole: bool,
) -> Result<Summary, Refusal> {
    let summary =
        scan::scan(head, uids::dataset_encoding(transfer_syntax), whole).map_err(|e| {
            Refusal::new(
                status::CANNOT_UNDERSTAND,
                format!("cannot parse data set: {e}"),
            )
        })?;
    if summary
        .sop_instance_uid
        .as_deref()
        .is_some_and(|u| u != request.sop_instance)
    {
        return Err(Refusal::new(
            status::CANNOT_UNDERSTAND,
            "SOP Instance UID in the data set differs from the command",
        ));
    }
    if summary
        .sop_class_uid
        .as_deref()
        .is_some_and(|u| u != request.sop_class)
    {
        return Err(Refusal::new(
            status::DATASET_MISMATCH,
            "SOP Class UID in the data set differs from the command",
        ));
    }
    if summary.complete && summary.sop_instance_uid.is_none() {
        return Err(Refusal::new(
            status::CANNOT_UNDERSTAND,
            "data set has no SOP Instance UID",
        ));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
    const MR: &str = "1.2.840.10008.5.1.4.1.1.4";

    fn el(out: &mut Vec<u8>, g: u16, e: u16, vr: &[u8; 2], v: &[u8]) {
        out.extend_from_slice(&g.to_le_bytes());
        out.extend_from_slice(&e.to_le_bytes());
        out.extend_from_slice(vr);
        out.extend_from_slice(&crate::length::len16(v.len()).to_le_bytes());
        out.extend_from_slice(v);
    }

    fn dataset(class: Option<&str>, instance: Option<&str>) -> Vec<u8> {
        let mut d = Vec::new();
        let pad = |s: &str| {
            let mut v = s.as_bytes().to_vec();
            if v.len() % 2 == 1 {
                v.push(0);
            }
            v
        };
        if let Some(c) = class {
            el(&mut d, 0x0008, 0x0016, b"UI", &pad(c));
        }
        if let Some(i) = instance {
            el(&mut d, 0x0008, 0x0018, b"UI", &pad(i));
        }
        el(&mut d, 0x0008, 0x0060, b"CS", b"CT");
        el(&mut d, 0x0020, 0x000D, b"UI", b"1.2.3");
        el(&mut d, 0x0020, 0x000E, b"UI", b"1.2.3.1\0");
        el(&mut d, 0x0028, 0x0010, b"US", &[0, 2]);
        d
    }

    fn request(class: &str, instance: &str) -> StoreRequest {
        StoreRequest::of(&command::store_rq(5, class, instance))
    }

    #[test]
    fn request_checks() {
        let ok = request(CT, "1.2.3.4");
        assert_eq!(ok.message_id, 5);
        assert_eq!(ok.check(CT), Ok(()));
        assert_eq!(
            ok.check(MR).map_err(|r| r.status),
            Err(status::DATASET_MISMATCH)
        );
        for bad in [request(CT, ""), request(CT, "1.02"), request("", "1.2.3")] {
            assert_eq!(
                bad.check(CT).map_err(|r| r.status),
                Err(status::CANNOT_UNDERSTAND)
            );
        }
        let rsp = ok.refusal(&Refusal::new(status::OUT_OF_RESOURCES, "full"));
        assert_eq!(rsp.status(), Some(status::OUT_OF_RESOURCES));
        assert_eq!(rsp.u16(tags::MESSAGE_ID_BEING_RESPONDED_TO), Some(5));
    }

    #[test]
    fn dataset_checks() {
        let rq = request(CT, "1.2.3.4");
        let ex = uids::EXPLICIT_VR_LE;
        let good = dataset(Some(CT), Some("1.2.3.4"));
        let s = check_dataset(&rq, &good, ex, true).expect("matches");
        assert_eq!(s.modality.as_deref(), Some("CT"));
        let code = |d: &[u8], whole| {
            check_dataset(&rq, d, ex, whole)
                .map(|_| ())
                .map_err(|r| r.status)
        };
        assert_eq!(
            code(&dataset(Some(CT), Some("1.2.3.5")), true),
            Err(status::CANNOT_UNDERSTAND)
        );
        assert_eq!(
            code(&dataset(Some(MR), Some("1.2.3.4")), true),
            Err(status::DATASET_MISMATCH)
        );
        assert_eq!(
            code(&dataset(Some(CT), None), true),
            Err(status::CANNOT_UNDERSTAND)
        );
        assert_eq!(
            code(b"not DICOM at all", true),
            Err(status::CANNOT_UNDERSTAND)
        );
        assert_eq!(code(&[], true), Err(status::CANNOT_UNDERSTAND));
        // A prefix cut in the middle of an element is not an error when more follows.
        assert_eq!(code(&good[..good.len() - 3], false), Ok(()));
        // Opaque (deflated) data sets are not scanned.
        assert_eq!(
            check_dataset(&rq, b"zz", uids::DEFLATED_EXPLICIT_VR_LE, true).map(|_| ()),
            Ok(())
        );
    }
}
