//! Storage Commitment Push Model (PS3.4 Annex J): the N-ACTION request a modality sends to ask
//! "do you hold these instances safely?", our N-ACTION response, and the N-EVENT-REPORT with
//! the answer, as command sets and data sets. Pure: no socket, no clock.

use crate::command::{self, CommandSet, DATA_SET_ABSENT, DATA_SET_PRESENT, field, tags};
use crate::dataset::{self, Dataset, DatasetError};
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags as dt;
use serde::{Deserialize, Serialize};

/// Storage Commitment Push Model SOP Class.
pub const SOP_CLASS: &str = crate::uids::STORAGE_COMMITMENT_PUSH;
/// The well-known Storage Commitment Push Model SOP Instance.
pub const SOP_INSTANCE: &str = "1.2.840.10008.1.20.1.1";
/// Action Type ID "Request Storage Commitment".
pub const ACTION_REQUEST: u16 = 1;
/// Event Type ID: every instance committed.
pub const EVENT_SUCCESS: u16 = 1;
/// Event Type ID: some instances failed.
pub const EVENT_FAILURES: u16 = 2;

/// Failure reasons (PS3.4 J.3.2.1.2, C.4.2.1.4).
pub mod reason {
    /// Processing failure (e.g. quarantined: a destination refused it).
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    /// No such object instance (never received).
    pub const NO_SUCH_OBJECT: u16 = 0x0112;
    /// Class/instance conflict (received with another SOP class).
    pub const CLASS_INSTANCE_CONFLICT: u16 = 0x0119;
}

/// Statuses of N-ACTION-RSP specific to this service.
pub mod status {
    /// No such action type.
    pub const NO_SUCH_ACTION: u16 = 0x0123;
    /// No such SOP instance.
    pub const NO_SUCH_SOP_INSTANCE: u16 = 0x0112;
    /// Invalid argument value.
    pub const INVALID_ARGUMENT: u16 = 0x0115;
    /// Missing attribute.
    pub const MISSING_ATTRIBUTE: u16 = 0x0120;
    /// Duplicate transaction UID (PS3.4 J.3.2.1.2: 0x0131 is for references; 0x0111 duplicate
    /// SOP instance is what N-ACTION returns for a reused transaction).
    pub const DUPLICATE_TRANSACTION: u16 = 0x0111;
}

/// One referenced instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// Referenced SOP Class UID.
    pub sop_class: String,
    /// Referenced SOP Instance UID.
    pub sop_instance: String,
}

/// A request: the transaction and the instances to commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Transaction UID.
    pub transaction_uid: String,
    /// Referenced SOP Sequence.
    pub references: Vec<Reference>,
}

/// A failed reference with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The instance.
    pub reference: Reference,
    /// Failure Reason (see [`reason`]).
    pub reason: u16,
}

/// The outcome reported in the N-EVENT-REPORT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Transaction UID.
    pub transaction_uid: String,
    /// Committed instances.
    pub success: Vec<Reference>,
    /// Instances that could not be committed.
    pub failed: Vec<Failure>,
}

impl Outcome {
    /// Event Type ID: 1 if everything succeeded, else 2.
    pub fn event_type(&self) -> u16 {
        if self.failed.is_empty() {
            EVENT_SUCCESS
        } else {
            EVENT_FAILURES
        }
    }
}

/// Why an N-ACTION request cannot be taken on, with the status to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{comment}")]
pub struct Refusal {
    /// DIMSE status for the N-ACTION-RSP.
    pub status: u16,
    /// Error Comment.
    pub comment: String,
}

fn refuse(status: u16, comment: impl Into<String>) -> Refusal {
    Refusal {
        status,
        comment: comment.into(),
    }
}

/// Checks the N-ACTION-RQ command itself (requested class, instance, action type).
pub fn check_action_command(cmd: &CommandSet) -> Result<(), Refusal> {
    let class = cmd
        .string(tags::REQUESTED_SOP_CLASS_UID)
        .unwrap_or_default();
    if class != SOP_CLASS {
        return Err(refuse(
            command::status::SOP_CLASS_NOT_SUPPORTED,
            format!("N-ACTION for SOP class {class:?} is not supported"),
        ));
    }
    let instance = cmd
        .string(tags::REQUESTED_SOP_INSTANCE_UID)
        .unwrap_or_default();
    if instance != SOP_INSTANCE {
        return Err(refuse(
            status::NO_SUCH_SOP_INSTANCE,
            format!("Requested SOP Instance must be {SOP_INSTANCE}"),
        ));
    }
    match cmd.u16(tags::ACTION_TYPE_ID) {
        Some(ACTION_REQUEST) => {}
        other => {
            return Err(refuse(
                status::NO_SUCH_ACTION,
                format!("Action Type ID {other:?} is not 1 (request storage commitment)"),
            ));
        }
    }
    if !cmd.has_dataset() {
        return Err(refuse(
            status::MISSING_ATTRIBUTE,
            "N-ACTION-RQ without the data set of references",
        ));
    }
    Ok(())
}

/// Decodes the N-ACTION data set (bytes in transfer syntax `ts`).
pub fn decode_request(bytes: &[u8], ts: &str) -> Result<Request, Refusal> {
    let ds = dataset::decode(bytes, ts).map_err(|e| match e {
        DatasetError::TooLarge(_) => refuse(command::status::OUT_OF_RESOURCES, e.to_string()),
        other => refuse(status::INVALID_ARGUMENT, other.to_string()),
    })?;
    request_from_dataset(&ds)
}

/// Reads a request out of a decoded data set.
pub fn request_from_dataset(ds: &Dataset) -> Result<Request, Refusal> {
    let transaction_uid = dataset::string(ds, dt::TRANSACTION_UID).ok_or_else(|| {
        refuse(
            status::MISSING_ATTRIBUTE,
            "Transaction UID (0008,1195) missing",
        )
    })?;
    crate::validate_uid(&transaction_uid).map_err(|e| {
        refuse(
            status::INVALID_ARGUMENT,
            format!("Transaction UID invalid: {e}"),
        )
    })?;
    let items = dataset::items(ds, dt::REFERENCED_SOP_SEQUENCE);
    if items.is_empty() {
        return Err(refuse(
            status::MISSING_ATTRIBUTE,
            "Referenced SOP Sequence (0008,1199) missing or empty",
        ));
    }
    let mut references = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let class = dataset::string(item, dt::REFERENCED_SOP_CLASS_UID);
        let instance = dataset::string(item, dt::REFERENCED_SOP_INSTANCE_UID);
        match (class, instance) {
            (Some(sop_class), Some(sop_instance))
                if crate::validate_uid(&sop_class).is_ok()
                    && crate::validate_uid(&sop_instance).is_ok() =>
            {
                references.push(Reference {
                    sop_class,
                    sop_instance,
                });
            }
            _ => {
                return Err(refuse(
                    status::INVALID_ARGUMENT,
                    format!(
                        "Referenced SOP Sequence item {} lacks a valid Referenced SOP Class/Instance UID",
                        i + 1
                    ),
                ));
            }
        }
    }
    Ok(Request {
        transaction_uid,
        references,
    })
}

fn uid_element(tag: dicom_core::Tag, uid: &str) -> DataElement<Dataset> {
    DataElement::new(tag, VR::UI, PrimitiveValue::from(uid))
}

fn reference_item(r: &Reference) -> Dataset {
    let mut item = Dataset::new_empty();
    item.put(uid_element(dt::REFERENCED_SOP_CLASS_UID, &r.sop_class));
    item.put(uid_element(
        dt::REFERENCED_SOP_INSTANCE_UID,
        &r.sop_instance,
    ));
    item
}

/// The N-ACTION data set of a request (the requester's side).
pub fn request_dataset(rq: &Request) -> Dataset {
    let mut ds = Dataset::new_empty();
    ds.put(uid_element(dt::TRANSACTION_UID, &rq.transaction_uid));
    ds.put(DataElement::new(
        dt::REFERENCED_SOP_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(rq.references.iter().map(reference_item).collect::<Vec<_>>()),
    ));
    ds
}

/// The N-EVENT-REPORT data set of an outcome.
pub fn outcome_dataset(o: &Outcome) -> Dataset {
    let mut ds = Dataset::new_empty();
    ds.put(uid_element(dt::TRANSACTION_UID, &o.transaction_uid));
    if !o.success.is_empty() {
        ds.put(DataElement::new(
            dt::REFERENCED_SOP_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(o.success.iter().map(reference_item).collect::<Vec<_>>()),
        ));
    }
    if !o.failed.is_empty() {
        let items: Vec<Dataset> = o
            .failed
            .iter()
            .map(|f| {
                let mut item = reference_item(&f.reference);
                item.put(DataElement::new(
                    dt::FAILURE_REASON,
                    VR::US,
                    PrimitiveValue::from(f.reason),
                ));
                item
            })
            .collect();
        ds.put(DataElement::new(
            dt::FAILED_SOP_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(items),
        ));
    }
    ds
}

/// Reads an outcome out of an N-EVENT-REPORT data set (the requester's side).
pub fn outcome_from_dataset(ds: &Dataset) -> Result<Outcome, Refusal> {
    let transaction_uid = dataset::string(ds, dt::TRANSACTION_UID).ok_or_else(|| {
        refuse(
            status::MISSING_ATTRIBUTE,
            "Transaction UID (0008,1195) missing",
        )
    })?;
    let read_ref = |item: &Dataset| Reference {
        sop_class: dataset::string(item, dt::REFERENCED_SOP_CLASS_UID).unwrap_or_default(),
        sop_instance: dataset::string(item, dt::REFERENCED_SOP_INSTANCE_UID).unwrap_or_default(),
    };
    let success = dataset::items(ds, dt::REFERENCED_SOP_SEQUENCE)
        .iter()
        .map(read_ref)
        .collect();
    let failed = dataset::items(ds, dt::FAILED_SOP_SEQUENCE)
        .iter()
        .map(|item| Failure {
            reference: read_ref(item),
            reason: item
                .element_opt(dt::FAILURE_REASON)
                .ok()
                .flatten()
                .and_then(|e| e.to_int::<u16>().ok())
                .unwrap_or(reason::PROCESSING_FAILURE),
        })
        .collect();
    Ok(Outcome {
        transaction_uid,
        success,
        failed,
    })
}

/// An N-ACTION-RQ (the requester's side).
pub fn action_rq(message_id: u16) -> CommandSet {
    let mut c = CommandSet::new();
    c.set_uid(tags::REQUESTED_SOP_CLASS_UID, SOP_CLASS)
        .set_u16(tags::COMMAND_FIELD, field::N_ACTION_RQ)
        .set_u16(tags::MESSAGE_ID, message_id)
        .set_u16(tags::COMMAND_DATA_SET_TYPE, DATA_SET_PRESENT)
        .set_uid(tags::REQUESTED_SOP_INSTANCE_UID, SOP_INSTANCE)
        .set_u16(tags::ACTION_TYPE_ID, ACTION_REQUEST);
    c
}

/// An N-ACTION-RSP answering `message_id`.
pub fn action_rsp(message_id: u16, status_code: u16, comment: Option<&str>) -> CommandSet {
    let mut c = CommandSet::new();
    c.set_uid(tags::AFFECTED_SOP_CLASS_UID, SOP_CLASS)
        .set_u16(tags::COMMAND_FIELD, field::N_ACTION_RSP)
        .set_u16(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id)
        .set_u16(tags::COMMAND_DATA_SET_TYPE, DATA_SET_ABSENT)
        .set_u16(tags::STATUS, status_code)
        .set_uid(tags::AFFECTED_SOP_INSTANCE_UID, SOP_INSTANCE);
    if status_code == command::status::SUCCESS {
        c.set_u16(tags::ACTION_TYPE_ID, ACTION_REQUEST);
    }
    if let Some(comment) = comment {
        c.set_text(tags::ERROR_COMMENT, comment);
    }
    c
}

/// An N-EVENT-REPORT-RQ (a data set follows).
pub fn event_report_rq(message_id: u16, event_type: u16) -> CommandSet {
    let mut c = CommandSet::new();
    c.set_uid(tags::AFFECTED_SOP_CLASS_UID, SOP_CLASS)
        .set_u16(tags::COMMAND_FIELD, field::N_EVENT_REPORT_RQ)
        .set_u16(tags::MESSAGE_ID, message_id)
        .set_u16(tags::COMMAND_DATA_SET_TYPE, DATA_SET_PRESENT)
        .set_uid(tags::AFFECTED_SOP_INSTANCE_UID, SOP_INSTANCE)
        .set_u16(tags::EVENT_TYPE_ID, event_type);
    c
}

/// An N-EVENT-REPORT-RSP (the requester's side).
pub fn event_report_rsp(message_id: u16, event_type: u16, status_code: u16) -> CommandSet {
    let mut c = CommandSet::new();
    c.set_uid(tags::AFFECTED_SOP_CLASS_UID, SOP_CLASS)
        .set_u16(tags::COMMAND_FIELD, field::N_EVENT_REPORT_RSP)
        .set_u16(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id)
        .set_u16(tags::COMMAND_DATA_SET_TYPE, DATA_SET_ABSENT)
        .set_u16(tags::STATUS, status_code)
        .set_uid(tags::AFFECTED_SOP_INSTANCE_UID, SOP_INSTANCE)
        .set_u16(tags::EVENT_TYPE_ID, event_type);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uids;

    fn rq() -> Request {
        Request {
            transaction_uid: "2.25.1234".into(),
            references: vec![
                Reference {
                    sop_class: "1.2.840.10008.5.1.4.1.1.2".into(),
                    sop_instance: "1.2.3.1".into(),
                },
                Reference {
                    sop_class: "1.2.840.10008.5.1.4.1.1.2".into(),
                    sop_instance: "1.2.3.2".into(),
                },
            ],
        }
    }

    #[test]
    fn request_roundtrip() {
        for ts in [uids::IMPLICIT_VR_LE, uids::EXPLICIT_VR_LE] {
            let bytes = dataset::encode(&request_dataset(&rq()), ts).expect("encodes");
            assert_eq!(decode_request(&bytes, ts), Ok(rq()));
        }
    }

    #[test]
    fn outcome_roundtrip_and_event_type() {
        let o = Outcome {
            transaction_uid: "2.25.1234".into(),
            success: vec![rq().references[0].clone()],
            failed: vec![Failure {
                reference: rq().references[1].clone(),
                reason: reason::NO_SUCH_OBJECT,
            }],
        };
        assert_eq!(o.event_type(), EVENT_FAILURES);
        let bytes = dataset::encode(&outcome_dataset(&o), uids::IMPLICIT_VR_LE).expect("encodes");
        let back = dataset::decode(&bytes, uids::IMPLICIT_VR_LE).expect("decodes");
        assert_eq!(outcome_from_dataset(&back), Ok(o.clone()));
        let all = Outcome {
            failed: vec![],
            ..o
        };
        assert_eq!(all.event_type(), EVENT_SUCCESS);
    }

    #[test]
    fn bad_requests_are_refused_with_a_status() {
        let mut ds = request_dataset(&rq());
        ds.remove_element(dt::TRANSACTION_UID);
        assert_eq!(
            request_from_dataset(&ds).map_err(|r| r.status),
            Err(status::MISSING_ATTRIBUTE)
        );
        let empty = Request {
            transaction_uid: "2.25.1".into(),
            references: vec![],
        };
        assert_eq!(
            request_from_dataset(&request_dataset(&empty)).map_err(|r| r.status),
            Err(status::MISSING_ATTRIBUTE)
        );
        let mut cmd = action_rq(1);
        assert_eq!(check_action_command(&cmd), Ok(()));
        cmd.set_u16(tags::ACTION_TYPE_ID, 2);
        assert_eq!(
            check_action_command(&cmd).map_err(|r| r.status),
            Err(status::NO_SUCH_ACTION)
        );
        assert_eq!(
            decode_request(&[0xFF; 10], uids::IMPLICIT_VR_LE).map_err(|r| r.status),
            Err(status::INVALID_ARGUMENT)
        );
    }

    #[test]
    fn responses_carry_the_fields() {
        let rsp = CommandSet::decode(&action_rsp(5, 0, None).encode()).expect("decodes");
        assert_eq!(rsp.command_field(), field::N_ACTION_RSP);
        assert_eq!(rsp.u16(tags::MESSAGE_ID_BEING_RESPONDED_TO), Some(5));
        assert_eq!(rsp.status(), Some(0));
        assert!(!rsp.has_dataset());
        let ev = CommandSet::decode(&event_report_rq(9, EVENT_FAILURES).encode()).expect("decodes");
        assert_eq!(ev.u16(tags::EVENT_TYPE_ID), Some(2));
        assert!(ev.has_dataset());
        assert_eq!(
            ev.string(tags::AFFECTED_SOP_INSTANCE_UID).as_deref(),
            Some(SOP_INSTANCE)
        );
    }
}
