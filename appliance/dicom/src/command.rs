//! DIMSE command sets (PS3.7 chapter 9 and E): group 0000 elements, always implicit VR little
//! endian. Decoding is strict about structure and tolerant about elements it does not know.

use std::collections::BTreeMap;

/// Element numbers of group 0000 we use.
pub mod tags {
    /// (0000,0000) Command Group Length.
    pub const GROUP_LENGTH: u16 = 0x0000;
    /// (0000,0002) Affected SOP Class UID.
    pub const AFFECTED_SOP_CLASS_UID: u16 = 0x0002;
    /// (0000,0003) Requested SOP Class UID.
    pub const REQUESTED_SOP_CLASS_UID: u16 = 0x0003;
    /// (0000,0100) Command Field.
    pub const COMMAND_FIELD: u16 = 0x0100;
    /// (0000,0110) Message ID.
    pub const MESSAGE_ID: u16 = 0x0110;
    /// (0000,0120) Message ID Being Responded To.
    pub const MESSAGE_ID_BEING_RESPONDED_TO: u16 = 0x0120;
    /// (0000,0600) Move Destination.
    pub const MOVE_DESTINATION: u16 = 0x0600;
    /// (0000,0700) Priority.
    pub const PRIORITY: u16 = 0x0700;
    /// (0000,0800) Command Data Set Type.
    pub const COMMAND_DATA_SET_TYPE: u16 = 0x0800;
    /// (0000,0900) Status.
    pub const STATUS: u16 = 0x0900;
    /// (0000,0901) Offending Element.
    pub const OFFENDING_ELEMENT: u16 = 0x0901;
    /// (0000,0902) Error Comment.
    pub const ERROR_COMMENT: u16 = 0x0902;
    /// (0000,0903) Error ID.
    pub const ERROR_ID: u16 = 0x0903;
    /// (0000,1000) Affected SOP Instance UID.
    pub const AFFECTED_SOP_INSTANCE_UID: u16 = 0x1000;
    /// (0000,1001) Requested SOP Instance UID.
    pub const REQUESTED_SOP_INSTANCE_UID: u16 = 0x1001;
    /// (0000,1002) Event Type ID.
    pub const EVENT_TYPE_ID: u16 = 0x1002;
    /// (0000,1008) Action Type ID.
    pub const ACTION_TYPE_ID: u16 = 0x1008;
    /// (0000,1030) Move Originator Application Entity Title.
    pub const MOVE_ORIGINATOR_AE: u16 = 0x1030;
    /// (0000,1031) Move Originator Message ID.
    pub const MOVE_ORIGINATOR_MESSAGE_ID: u16 = 0x1031;
}

/// Command Field values.
pub mod field {
    /// C-STORE-RQ
    pub const C_STORE_RQ: u16 = 0x0001;
    /// C-STORE-RSP
    pub const C_STORE_RSP: u16 = 0x8001;
    /// C-GET-RQ
    pub const C_GET_RQ: u16 = 0x0010;
    /// C-FIND-RQ
    pub const C_FIND_RQ: u16 = 0x0020;
    /// C-FIND-RSP
    pub const C_FIND_RSP: u16 = 0x8020;
    /// C-MOVE-RQ
    pub const C_MOVE_RQ: u16 = 0x0021;
    /// C-ECHO-RQ
    pub const C_ECHO_RQ: u16 = 0x0030;
    /// C-ECHO-RSP
    pub const C_ECHO_RSP: u16 = 0x8030;
    /// N-EVENT-REPORT-RQ
    pub const N_EVENT_REPORT_RQ: u16 = 0x0100;
    /// N-EVENT-REPORT-RSP
    pub const N_EVENT_REPORT_RSP: u16 = 0x8100;
    /// N-ACTION-RQ
    pub const N_ACTION_RQ: u16 = 0x0130;
    /// N-ACTION-RSP
    pub const N_ACTION_RSP: u16 = 0x8130;
    /// C-CANCEL-RQ
    pub const C_CANCEL_RQ: u16 = 0x0FFF;
}

/// Command Data Set Type value meaning "no data set follows".
pub const DATA_SET_ABSENT: u16 = 0x0101;
/// A Command Data Set Type value meaning "a data set follows" (any value but 0x0101).
pub const DATA_SET_PRESENT: u16 = 0x0000;

/// DIMSE status codes we send or interpret.
pub mod status {
    /// Success.
    pub const SUCCESS: u16 = 0x0000;
    /// Warning: coercion of data elements.
    pub const WARNING_COERCION: u16 = 0xB000;
    /// Warning: data set does not match SOP class.
    pub const WARNING_DATASET_MISMATCH: u16 = 0xB007;
    /// Warning: elements discarded.
    pub const WARNING_ELEMENTS_DISCARDED: u16 = 0xB006;
    /// Refused: out of resources (A7xx).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: data set does not match SOP class (A9xx).
    pub const DATASET_MISMATCH: u16 = 0xA900;
    /// Error: cannot understand (Cxxx).
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Failure: SOP class not supported.
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// Failure: not authorized.
    pub const NOT_AUTHORIZED: u16 = 0x0124;
    /// Failure: processing failure.
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    /// Failure: unrecognized operation.
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
    /// Failure: mistyped argument.
    pub const MISTYPED_ARGUMENT: u16 = 0x0212;
    /// Cancel.
    pub const CANCEL: u16 = 0xFE00;
    /// Pending.
    pub const PENDING: u16 = 0xFF00;
}

/// The class of a DIMSE status (PS3.7 C).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// The operation succeeded.
    Success,
    /// Succeeded with a warning.
    Warning,
    /// Failed.
    Failure,
    /// Cancelled.
    Cancel,
    /// More responses follow.
    Pending,
}

/// Classifies a status code.
pub fn status_class(code: u16) -> StatusClass {
    match code {
        0x0000 => StatusClass::Success,
        0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF => StatusClass::Warning,
        0xFE00 => StatusClass::Cancel,
        0xFF00 | 0xFF01 => StatusClass::Pending,
        _ => StatusClass::Failure,
    }
}

/// Errors decoding a command set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    /// Fewer bytes than an element header or value announces.
    #[error("command set truncated at byte {0}")]
    Truncated(usize),
    /// An element outside group 0000.
    #[error("command set holds element ({group:04X},{element:04X}) outside group 0000")]
    WrongGroup {
        /// Group number found.
        group: u16,
        /// Element number found.
        element: u16,
    },
    /// A command set without the Command Field.
    #[error("command set has no Command Field (0000,0100)")]
    NoCommandField,
    /// An element of the wrong length for its VR.
    #[error("element (0000,{0:04X}) has a length that does not fit its value representation")]
    BadLength(u16),
    /// A command set larger than we accept.
    #[error("command set of {0} bytes is larger than the 64 KiB we accept")]
    TooLarge(usize),
}

/// Largest command set we accept. Real ones are a few hundred bytes.
pub const MAX_COMMAND_LEN: usize = 64 * 1024;

/// A decoded command set: element number → raw value bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandSet {
    elements: BTreeMap<u16, Vec<u8>>,
}

impl CommandSet {
    /// An empty command set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes implicit VR little endian command bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, CommandError> {
        if bytes.len() > MAX_COMMAND_LEN {
            return Err(CommandError::TooLarge(bytes.len()));
        }
        let mut elements = BTreeMap::new();
        let mut pos = 0usize;
        while pos < bytes.len() {
            let header = bytes
                .get(pos..pos + 8)
                .ok_or(CommandError::Truncated(pos))?;
            let group = u16::from_le_bytes([header[0], header[1]]);
            let element = u16::from_le_bytes([header[2], header[3]]);
            let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
            if group != 0x0000 {
                return Err(CommandError::WrongGroup { group, element });
            }
            let start = pos + 8;
            let value = bytes
                .get(start..start.checked_add(len).ok_or(CommandError::Truncated(pos))?)
                .ok_or(CommandError::Truncated(pos))?;
            elements.insert(element, value.to_vec());
            pos = start + len;
        }
        let cmd = CommandSet { elements };
        let field = cmd
            .elements
            .get(&tags::COMMAND_FIELD)
            .ok_or(CommandError::NoCommandField)?;
        if field.len() != 2 {
            return Err(CommandError::BadLength(tags::COMMAND_FIELD));
        }
        Ok(cmd)
    }

    /// Encodes as implicit VR little endian with a correct group length first.
    pub fn encode(&self) -> Vec<u8> {
        let body_len: usize = self
            .elements
            .iter()
            .filter(|(e, _)| **e != tags::GROUP_LENGTH)
            .map(|(_, v)| 8 + v.len())
            .sum();
        let mut out = Vec::with_capacity(12 + body_len);
        out.extend_from_slice(&[0, 0, 0, 0, 4, 0, 0, 0]);
        out.extend_from_slice(&crate::length::len32(body_len).to_le_bytes());
        for (element, value) in self
            .elements
            .iter()
            .filter(|(e, _)| **e != tags::GROUP_LENGTH)
        {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&element.to_le_bytes());
            out.extend_from_slice(&crate::length::len32(value.len()).to_le_bytes());
            out.extend_from_slice(value);
        }
        out
    }

    /// The raw value of an element.
    pub fn raw(&self, element: u16) -> Option<&[u8]> {
        self.elements.get(&element).map(Vec::as_slice)
    }

    /// A US (16-bit) value.
    pub fn u16(&self, element: u16) -> Option<u16> {
        match self.raw(element)? {
            [a, b] => Some(u16::from_le_bytes([*a, *b])),
            _ => None,
        }
    }

    /// A string value (UI, AE, LO, ...), without its padding.
    pub fn string(&self, element: u16) -> Option<String> {
        let raw = self.raw(element)?;
        let s = String::from_utf8_lossy(raw);
        Some(s.trim_end_matches(['\0', ' ']).trim_start().to_string())
    }

    /// The Command Field.
    pub fn command_field(&self) -> u16 {
        self.u16(tags::COMMAND_FIELD).unwrap_or(0)
    }

    /// The Message ID (requests).
    pub fn message_id(&self) -> Option<u16> {
        self.u16(tags::MESSAGE_ID)
    }

    /// Whether a data set follows this command.
    pub fn has_dataset(&self) -> bool {
        self.u16(tags::COMMAND_DATA_SET_TYPE)
            .is_some_and(|t| t != DATA_SET_ABSENT)
    }

    /// The Status (responses).
    pub fn status(&self) -> Option<u16> {
        self.u16(tags::STATUS)
    }

    /// Sets a US value.
    pub fn set_u16(&mut self, element: u16, value: u16) -> &mut Self {
        self.elements.insert(element, value.to_le_bytes().to_vec());
        self
    }

    /// Sets a UI value (NUL-padded to even length).
    pub fn set_uid(&mut self, element: u16, uid: &str) -> &mut Self {
        let mut v = uid.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        self.elements.insert(element, v);
        self
    }

    /// Sets a text value (AE, LO: space-padded to even length, truncated to 64 bytes).
    pub fn set_text(&mut self, element: u16, text: &str) -> &mut Self {
        let mut v: Vec<u8> = text
            .bytes()
            .filter(|b| b.is_ascii() && !b.is_ascii_control() && *b != b'\\')
            .take(64)
            .collect();
        if v.len() % 2 == 1 {
            v.push(b' ');
        }
        self.elements.insert(element, v);
        self
    }
}

/// A C-ECHO-RQ.
pub fn echo_rq(message_id: u16) -> CommandSet {
    let mut c = CommandSet::new();
    c.set_uid(tags::AFFECTED_SOP_CLASS_UID, crate::uids::VERIFICATION)
        .set_u16(tags::COMMAND_FIELD, field::C_ECHO_RQ)
        .set_u16(tags::MESSAGE_ID, message_id)
        .set_u16(tags::COMMAND_DATA_SET_TYPE, DATA_SET_ABSENT);
    c
}

/// A C-ECHO-RSP answering `message_id`.
pub fn echo_rsp(message_id: u16, status_code: u16) -> CommandSet {
    let mut c = CommandSet::new();
    c.set_uid(tags::AFFECTED_SOP_CLASS_UID, crate::uids::VERIFICATION)
        .set_u16(tags::COMMAND_FIELD, field::C_ECHO_RSP)
        .set_u16(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id)
        .set_u16(tags::COMMAND_DATA_SET_TYPE, DATA_SET_ABSENT)
        .set_u16(tags::STATUS, status_code);
    c
}

/// Priority MEDIUM of C-STORE.
pub const PRIORITY_MEDIUM: u16 = 0x0000;

/// A C-STORE-RQ.
pub fn store_rq(message_id: u16, sop_class: &str, sop_instance: &str) -> CommandSet {
    let mut c = CommandSet::new();
    c.set_uid(tags::AFFECTED_SOP_CLASS_UID, sop_class)
        .set_u16(tags::COMMAND_FIELD, field::C_STORE_RQ)
        .set_u16(tags::MESSAGE_ID, message_id)
        .set_u16(tags::PRIORITY, PRIORITY_MEDIUM)
        .set_u16(tags::COMMAND_DATA_SET_TYPE, DATA_SET_PRESENT)
        .set_uid(tags::AFFECTED_SOP_INSTANCE_UID, sop_instance);
    c
}

/// A C-STORE-RSP, with an Error Comment when `comment` is given (failures and warnings).
pub fn store_rsp(
    message_id: u16,
    sop_class: &str,
    sop_instance: &str,
    status_code: u16,
    comment: Option<&str>,
) -> CommandSet {
    let mut c = CommandSet::new();
    c.set_uid(tags::AFFECTED_SOP_CLASS_UID, sop_class)
        .set_u16(tags::COMMAND_FIELD, field::C_STORE_RSP)
        .set_u16(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id)
        .set_u16(tags::COMMAND_DATA_SET_TYPE, DATA_SET_ABSENT)
        .set_u16(tags::STATUS, status_code)
        .set_uid(tags::AFFECTED_SOP_INSTANCE_UID, sop_instance);
    if let Some(comment) = comment {
        c.set_text(tags::ERROR_COMMENT, comment);
    }
    c
}

/// A generic failure response to a request we do not serve, echoing its command field | 0x8000.
pub fn unsupported_rsp(request: &CommandSet) -> CommandSet {
    let mut c = CommandSet::new();
    if let Some(class) = request
        .string(tags::AFFECTED_SOP_CLASS_UID)
        .or_else(|| request.string(tags::REQUESTED_SOP_CLASS_UID))
    {
        c.set_uid(tags::AFFECTED_SOP_CLASS_UID, &class);
    }
    c.set_u16(tags::COMMAND_FIELD, request.command_field() | 0x8000)
        .set_u16(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            request.message_id().unwrap_or(0),
        )
        .set_u16(tags::COMMAND_DATA_SET_TYPE, DATA_SET_ABSENT)
        .set_u16(tags::STATUS, status::UNRECOGNIZED_OPERATION);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_store_rq() {
        let rq = store_rq(7, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5");
        let bytes = rq.encode();
        // Group length is the length of everything after it.
        assert_eq!(
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            bytes.len() - 12
        );
        let back = CommandSet::decode(&bytes).expect("decodes");
        assert_eq!(back.command_field(), field::C_STORE_RQ);
        assert_eq!(back.message_id(), Some(7));
        assert!(back.has_dataset());
        assert_eq!(
            back.string(tags::AFFECTED_SOP_INSTANCE_UID).as_deref(),
            Some("1.2.3.4.5")
        );
        assert_eq!(
            back.string(tags::AFFECTED_SOP_CLASS_UID).as_deref(),
            Some("1.2.840.10008.5.1.4.1.1.2")
        );
    }

    #[test]
    fn store_rsp_fields() {
        let rsp = store_rsp(
            9,
            "1.2",
            "1.2.3",
            status::OUT_OF_RESOURCES,
            Some("spool full"),
        );
        let back = CommandSet::decode(&rsp.encode()).expect("decodes");
        assert_eq!(back.status(), Some(0xA700));
        assert!(!back.has_dataset());
        assert_eq!(back.u16(tags::MESSAGE_ID_BEING_RESPONDED_TO), Some(9));
        assert_eq!(
            back.string(tags::ERROR_COMMENT).as_deref(),
            Some("spool full")
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(CommandSet::decode(&[1, 2, 3]).is_err());
        assert!(matches!(
            CommandSet::decode(&[8, 0, 0x18, 0, 2, 0, 0, 0, 1, 1]),
            Err(CommandError::WrongGroup { .. })
        ));
        // Length far beyond the buffer.
        assert!(CommandSet::decode(&[0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
        // No command field.
        assert_eq!(
            CommandSet::decode(&[0, 0, 0x10, 0x01, 2, 0, 0, 0, 1, 0]),
            Err(CommandError::NoCommandField)
        );
    }

    #[test]
    fn classes() {
        assert_eq!(status_class(0), StatusClass::Success);
        assert_eq!(status_class(0xB000), StatusClass::Warning);
        assert_eq!(status_class(0xA700), StatusClass::Failure);
        assert_eq!(status_class(0xFF00), StatusClass::Pending);
    }
}
