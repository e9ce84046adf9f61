//! The UIDs the appliance negotiates: Verification, every standard storage SOP class, and the
//! transfer syntaxes of the standard (we never decode pixel data, so every syntax is fine to
//! accept as long as its bytes are kept exactly as sent).

use dicom_core::dictionary::UidDictionary;
use dicom_dictionary_std::StandardSopClassDictionary;

/// Verification SOP class (C-ECHO).
pub const VERIFICATION: &str = "1.2.840.10008.1.1";
/// Storage Commitment Push Model SOP class.
pub const STORAGE_COMMITMENT_PUSH: &str = "1.2.840.10008.1.20.1";
/// Implicit VR Little Endian: the default transfer syntax, and the one of every command set.
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
/// Explicit VR Little Endian.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// Deflated Explicit VR Little Endian.
pub const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";
/// Explicit VR Big Endian (retired, still sent by a few old modalities).
pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";

/// Every transfer syntax of the standard we accept by default, with its name. Uncompressed first:
/// when a modality proposes several in one presentation context, the acceptor keeps the
/// modality's order (it knows best what it holds), so this order only matters for our proposals.
pub const TRANSFER_SYNTAXES: &[(&str, &str)] = &[
    (EXPLICIT_VR_LE, "Explicit VR Little Endian"),
    (IMPLICIT_VR_LE, "Implicit VR Little Endian"),
    (EXPLICIT_VR_BE, "Explicit VR Big Endian"),
    (
        DEFLATED_EXPLICIT_VR_LE,
        "Deflated Explicit VR Little Endian",
    ),
    (
        "1.2.840.10008.1.2.1.98",
        "Encapsulated Uncompressed Explicit VR Little Endian",
    ),
    ("1.2.840.10008.1.2.5", "RLE Lossless"),
    ("1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)"),
    ("1.2.840.10008.1.2.4.51", "JPEG Extended (Process 2 & 4)"),
    (
        "1.2.840.10008.1.2.4.57",
        "JPEG Lossless, Non-Hierarchical (Process 14)",
    ),
    (
        "1.2.840.10008.1.2.4.70",
        "JPEG Lossless, First-Order Prediction (Process 14 [SV1])",
    ),
    ("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless"),
    ("1.2.840.10008.1.2.4.81", "JPEG-LS Near-Lossless"),
    ("1.2.840.10008.1.2.4.90", "JPEG 2000 (Lossless Only)"),
    ("1.2.840.10008.1.2.4.91", "JPEG 2000"),
    (
        "1.2.840.10008.1.2.4.92",
        "JPEG 2000 Part 2 Multi-component (Lossless Only)",
    ),
    ("1.2.840.10008.1.2.4.93", "JPEG 2000 Part 2 Multi-component"),
    (
        "1.2.840.10008.1.2.4.201",
        "High-Throughput JPEG 2000 (Lossless Only)",
    ),
    (
        "1.2.840.10008.1.2.4.202",
        "High-Throughput JPEG 2000 with RPCL Options (Lossless Only)",
    ),
    ("1.2.840.10008.1.2.4.203", "High-Throughput JPEG 2000"),
    ("1.2.840.10008.1.2.4.110", "JPEG XL Lossless"),
    ("1.2.840.10008.1.2.4.111", "JPEG XL JPEG Recompression"),
    ("1.2.840.10008.1.2.4.112", "JPEG XL"),
    ("1.2.840.10008.1.2.8.1", "Deflated Image Frame Compression"),
    ("1.2.840.10008.1.2.4.100", "MPEG2 Main Profile / Main Level"),
    (
        "1.2.840.10008.1.2.4.100.1",
        "Fragmentable MPEG2 Main Profile / Main Level",
    ),
    ("1.2.840.10008.1.2.4.101", "MPEG2 Main Profile / High Level"),
    (
        "1.2.840.10008.1.2.4.101.1",
        "Fragmentable MPEG2 Main Profile / High Level",
    ),
    (
        "1.2.840.10008.1.2.4.102",
        "MPEG-4 AVC/H.264 High Profile / Level 4.1",
    ),
    (
        "1.2.840.10008.1.2.4.102.1",
        "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.1",
    ),
    (
        "1.2.840.10008.1.2.4.103",
        "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1",
    ),
    (
        "1.2.840.10008.1.2.4.103.1",
        "Fragmentable MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1",
    ),
    (
        "1.2.840.10008.1.2.4.104",
        "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video",
    ),
    (
        "1.2.840.10008.1.2.4.104.1",
        "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video",
    ),
    (
        "1.2.840.10008.1.2.4.105",
        "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video",
    ),
    (
        "1.2.840.10008.1.2.4.105.1",
        "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video",
    ),
    (
        "1.2.840.10008.1.2.4.106",
        "MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2",
    ),
    (
        "1.2.840.10008.1.2.4.106.1",
        "Fragmentable MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2",
    ),
    (
        "1.2.840.10008.1.2.4.107",
        "HEVC/H.265 Main Profile / Level 5.1",
    ),
    (
        "1.2.840.10008.1.2.4.108",
        "HEVC/H.265 Main 10 Profile / Level 5.1",
    ),
];

/// Whether `uid` is a transfer syntax of the standard that we accept by default.
pub fn is_standard_transfer_syntax(uid: &str) -> bool {
    TRANSFER_SYNTAXES.iter().any(|(ts, _)| *ts == uid)
}

/// The name of a transfer syntax, or the UID itself when unknown.
pub fn transfer_syntax_name(uid: &str) -> &str {
    TRANSFER_SYNTAXES
        .iter()
        .find(|(ts, _)| *ts == uid)
        .map(|(_, name)| *name)
        .unwrap_or(uid)
}

/// Whether the dataset bytes of this transfer syntax are explicit VR little endian (the header
/// scan reads them), implicit VR little endian, or something the scan does not read (deflate,
/// big endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetEncoding {
    /// Implicit VR Little Endian.
    ImplicitLittle,
    /// Explicit VR Little Endian (also every encapsulated syntax: only pixel data differs).
    ExplicitLittle,
    /// Explicit VR Big Endian or deflated: we keep the bytes but do not scan them.
    Opaque,
}

/// The dataset encoding of a transfer syntax.
pub fn dataset_encoding(ts: &str) -> DatasetEncoding {
    match ts {
        IMPLICIT_VR_LE => DatasetEncoding::ImplicitLittle,
        EXPLICIT_VR_BE | DEFLATED_EXPLICIT_VR_LE | "1.2.840.10008.1.2.4.95" => {
            DatasetEncoding::Opaque
        }
        // JPIP referenced deflate syntaxes are deflated too.
        ts if ts.starts_with("1.2.840.10008.1.2.4.95") => DatasetEncoding::Opaque,
        _ => DatasetEncoding::ExplicitLittle,
    }
}

/// Whether `uid` is a standard storage SOP class (any object a modality can C-STORE): every SOP
/// class of the standard's registry whose name is a storage class, retired ones included (old
/// modalities still send them), excluding the services that only carry "Storage" in their name.
pub fn is_standard_storage_sop_class(uid: &str) -> bool {
    match StandardSopClassDictionary.by_uid(uid) {
        Some(entry) => {
            let name = entry.name;
            name.contains("Storage")
                && !name.contains("Commitment")
                && !name.contains("Storage Management")
                && !name.contains("Media Storage Directory")
                && !name.contains("Query/Retrieve")
        }
        None => false,
    }
}

/// The name of a SOP class, if the standard knows it.
pub fn sop_class_name(uid: &str) -> Option<&'static str> {
    StandardSopClassDictionary.by_uid(uid).map(|e| e.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_classes() {
        for uid in [
            "1.2.840.10008.5.1.4.1.1.2",        // CT
            "1.2.840.10008.5.1.4.1.1.4",        // MR
            "1.2.840.10008.5.1.4.1.1.1.1",      // DX for presentation
            "1.2.840.10008.5.1.4.1.1.3.1",      // US multi-frame
            "1.2.840.10008.5.1.4.1.1.9.1.1",    // 12-lead ECG
            "1.2.840.10008.5.1.4.1.1.77.1.1.1", // video endoscopic
            "1.2.840.10008.5.1.4.1.1.77.1.6",   // VL whole slide microscopy
            "1.2.840.10008.5.1.4.1.1.88.11",    // basic text SR
        ] {
            assert!(is_standard_storage_sop_class(uid), "{uid}");
        }
        for uid in [
            VERIFICATION,
            STORAGE_COMMITMENT_PUSH,
            "1.2.840.10008.5.1.4.1.2.2.1",
            "1.2.3.4",
        ] {
            assert!(!is_standard_storage_sop_class(uid), "{uid}");
        }
    }

    #[test]
    fn transfer_syntaxes() {
        assert!(is_standard_transfer_syntax("1.2.840.10008.1.2.4.107"));
        assert!(!is_standard_transfer_syntax("1.2.3"));
        assert_eq!(
            dataset_encoding(IMPLICIT_VR_LE),
            DatasetEncoding::ImplicitLittle
        );
        assert_eq!(
            dataset_encoding("1.2.840.10008.1.2.4.50"),
            DatasetEncoding::ExplicitLittle
        );
        assert_eq!(
            dataset_encoding(DEFLATED_EXPLICIT_VR_LE),
            DatasetEncoding::Opaque
        );
        assert_eq!(
            transfer_syntax_name(EXPLICIT_VR_LE),
            "Explicit VR Little Endian"
        );
    }
}
