//! The small data sets that travel with non-storage DIMSE messages (N-ACTION, N-EVENT-REPORT,
//! C-FIND identifiers): decoded from and encoded to memory with dicom-object, in the transfer
//! syntax of their presentation context. Storage data sets never come here (they are streamed).

use dicom_core::Tag;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// Largest non-storage data set we hold in memory.
pub const MAX_SMALL_DATASET: usize = 64 * 1024;

/// An in-memory data set.
pub type Dataset = InMemDicomObject;

/// Errors decoding or encoding a small data set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DatasetError {
    /// The transfer syntax is not one we can decode in memory.
    #[error("transfer syntax {0} is not supported for this message")]
    TransferSyntax(String),
    /// Larger than [`MAX_SMALL_DATASET`].
    #[error("data set of {0} bytes is larger than the {MAX_SMALL_DATASET} bytes accepted")]
    TooLarge(usize),
    /// Not a valid data set.
    #[error("cannot parse the data set: {0}")]
    Parse(String),
    /// Cannot be written.
    #[error("cannot encode the data set: {0}")]
    Encode(String),
}

fn syntax(ts: &str) -> Result<&'static dicom_encoding::TransferSyntax, DatasetError> {
    let uid = crate::trim_uid(ts);
    TransferSyntaxRegistry
        .get(uid)
        .filter(|t| !t.is_unsupported())
        .ok_or_else(|| DatasetError::TransferSyntax(uid.to_string()))
}

/// Decodes a data set received on a presentation context of transfer syntax `ts`.
pub fn decode(bytes: &[u8], ts: &str) -> Result<Dataset, DatasetError> {
    if bytes.len() > MAX_SMALL_DATASET {
        return Err(DatasetError::TooLarge(bytes.len()));
    }
    let ts = syntax(ts)?;
    InMemDicomObject::read_dataset_with_ts(bytes, ts)
        .map_err(|e| DatasetError::Parse(e.to_string()))
}

/// Encodes a data set for a presentation context of transfer syntax `ts`.
pub fn encode(ds: &Dataset, ts: &str) -> Result<Vec<u8>, DatasetError> {
    let ts = syntax(ts)?;
    let mut out = Vec::new();
    ds.write_dataset_with_ts(&mut out, ts)
        .map_err(|e| DatasetError::Encode(e.to_string()))?;
    Ok(out)
}

/// A string attribute, trimmed of its padding; `None` if absent, empty or not a string.
pub fn string(ds: &Dataset, tag: Tag) -> Option<String> {
    let e = ds.element_opt(tag).ok().flatten()?;
    let s = e.to_str().ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ').to_string();
    (!s.is_empty()).then_some(s)
}

/// The items of a sequence attribute (empty if absent or not a sequence).
pub fn items(ds: &Dataset, tag: Tag) -> &[Dataset] {
    ds.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uids;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;

    #[test]
    fn roundtrip_both_little_endian_syntaxes() {
        let mut ds = Dataset::new_empty();
        ds.put(DataElement::new(
            tags::TRANSACTION_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3.4"),
        ));
        for ts in [uids::IMPLICIT_VR_LE, uids::EXPLICIT_VR_LE] {
            let bytes = encode(&ds, ts).expect("encodes");
            let back = decode(&bytes, ts).expect("decodes");
            assert_eq!(
                string(&back, tags::TRANSACTION_UID).as_deref(),
                Some("1.2.3.4")
            );
        }
    }

    #[test]
    fn refuses_what_it_cannot_hold() {
        assert_eq!(
            decode(&vec![0; MAX_SMALL_DATASET + 1], uids::IMPLICIT_VR_LE),
            Err(DatasetError::TooLarge(MAX_SMALL_DATASET + 1))
        );
        assert!(matches!(
            decode(&[1, 2, 3], "1.2.3.999"),
            Err(DatasetError::TransferSyntax(_))
        ));
        assert!(matches!(
            decode(
                &[8, 0, 0x95, 0x11, 0xFF, 0xFF, 0, 0, 1],
                uids::IMPLICIT_VR_LE
            ),
            Err(DatasetError::Parse(_))
        ));
    }
}
