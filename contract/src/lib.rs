//! The Medgate appliance <-> fleet contract: MQTT topics and versioned JSON messages.
//!
//! Both sides use this crate, so they cannot disagree on a topic or a field. The layout and the
//! rules are documented for people in `docs/mqtt.md`.
//!
//! - [`topic`]: `medgate/v1/{site}/{device}/{kind}` and its parser.
//! - [`messages`]: one type per kind, each with a required `schema` field.
//! - [`values`]: the validated strings messages are made of — the reason no patient data can be put
//!   in a message: there is no free-text field.
//! - [`decode`] / [`encode`]: tolerant reading (unknown fields ignored) with a typed error, so an
//!   invalid message is dropped with a reason, never a crash.

pub mod messages;
pub mod topic;
pub mod values;

pub use messages::*;
pub use topic::{DeviceTopics, Kind, TOPIC_ROOT, TopicError};
pub use values::{
    AeTitle, CommandId, DeviceId, EventId, HttpsUrl, MacAddress, Modality, Sha256Hex, SiteId,
    SopClassUid, Token, ValueError,
};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest payload either side sends or accepts (bytes). Desired configurations are the largest
/// messages; a few KiB in practice.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// A message type and the topic kind it travels on.
pub trait Message: Serialize + DeserializeOwned {
    /// The topic kind.
    const KIND: Kind;
}

impl Message for Birth {
    const KIND: Kind = Kind::Birth;
}
impl Message for State {
    const KIND: Kind = Kind::State;
}
impl Message for Telemetry {
    const KIND: Kind = Kind::Telemetry;
}
impl Message for Event {
    const KIND: Kind = Kind::Event;
}
impl Message for EventReceipt {
    const KIND: Kind = Kind::EventReceipt;
}
impl Message for Command {
    const KIND: Kind = Kind::Cmd;
}
impl Message for CommandAck {
    const KIND: Kind = Kind::CmdAck;
}
impl Message for DesiredConfig {
    const KIND: Kind = Kind::ConfigDesired;
}
impl Message for ReportedConfig {
    const KIND: Kind = Kind::ConfigReported;
}
impl Message for FileChunk {
    const KIND: Kind = Kind::File;
}
impl Message for DesiredUpdate {
    const KIND: Kind = Kind::UpdateDesired;
}

/// Why a payload was not accepted. The message is dropped; log this and go on.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Larger than [`MAX_PAYLOAD_BYTES`].
    #[error("{kind} payload of {len} bytes is larger than the {max} bytes allowed")]
    TooLarge {
        /// Topic kind.
        kind: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not JSON, a field missing or invalid, or an unsupported schema version.
    #[error("invalid {kind} payload: {source}")]
    Invalid {
        /// Topic kind.
        kind: &'static str,
        /// What serde found (names the field and the rule).
        #[source]
        source: serde_json::Error,
    },
}

/// Decodes a payload of type `M`. Unknown fields are ignored; validation of every value is part
/// of decoding.
pub fn decode<M: Message>(payload: &[u8]) -> Result<M, DecodeError> {
    let kind = M::KIND.suffix();
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(DecodeError::TooLarge {
            kind,
            len: payload.len(),
            max: MAX_PAYLOAD_BYTES,
        });
    }
    serde_json::from_slice(payload).map_err(|source| DecodeError::Invalid { kind, source })
}

/// Encodes a message as JSON. Serialising these types cannot fail (no maps with non-string keys,
/// no non-finite floats); the `Result` is kept so a future field cannot turn into a panic.
pub fn encode<M: Message>(message: &M) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(message)
}

/// Milliseconds since the Unix epoch, from the system clock (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
