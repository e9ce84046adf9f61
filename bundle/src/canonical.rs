//! Canonical JSON: the one byte form of a document that is signed.
//!
//! The documents are structs (fields in declaration order), without maps or floats, so
//! serde_json's compact output is deterministic. A document read from bytes that signatures
//! cover must be exactly that output: [`parse`] re-serialises what it parsed and refuses any
//! difference (whitespace, key order, escapes, duplicate or unknown keys), so what was signed
//! and what is acted on are the same bytes.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why bytes are not a canonical document.
#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    /// Not JSON of the expected shape.
    #[error("not a valid document: {0}")]
    Malformed(String),
    /// The right shape, but not in canonical form.
    #[error("valid JSON but not in canonical form (compact, fields in order, no unknown keys)")]
    NotCanonical,
}

/// The canonical bytes of `value`.
pub fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these structs cannot fail (no maps with non-string keys, no custom errors);
    // an empty body would not verify against any signature.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Parse canonical bytes.
pub fn parse<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T, CanonicalError> {
    let value: T =
        serde_json::from_slice(bytes).map_err(|e| CanonicalError::Malformed(e.to_string()))?;
    if to_bytes(&value) != bytes {
        return Err(CanonicalError::NotCanonical);
    }
    Ok(value)
}
