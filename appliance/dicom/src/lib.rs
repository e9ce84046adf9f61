//! Sans-IO DICOM for Medgate: everything the appliance needs of the DICOM network protocol that
//! does not touch a socket or a file.
//!
//! - [`uids`]: the standard storage SOP classes and transfer syntaxes we negotiate.
//! - [`pdata`]: framing of PDUs on the wire and of P-DATA-TF value items (zero-copy).
//! - [`acceptor`]: the acceptor after A-ASSOCIATE-AC: PDU/PDV in, the step to carry out out.
//! - [`assemble`]: DIMSE messages from PDVs (command joined, data set streamed), every role.
//! - [`command`]: DIMSE command sets (implicit VR little endian), statuses and builders.
//! - [`negotiate`]: the association acceptor's decision (A-ASSOCIATE-AC/RJ) from a policy.
//! - [`requestor`]: the requestor's reading of the A-ASSOCIATE answer and of interruptions.
//! - [`length`]: a value's byte count as its 16- or 32-bit length field, explicit and bounded.
//! - [`part10`]: the Part 10 file meta header we put in front of the received dataset bytes.
//! - [`scan`]: a bounded scan of a dataset's first bytes for the few attributes we index.
//! - [`store`]: the C-STORE SCP's pure checks: request vs context, data set vs command.
//! - [`dataset`]: decoding and encoding of the small data sets of non-storage DIMSE messages.
//! - [`commitment`]: Storage Commitment Push Model (PS3.4 Annex J) messages and their data sets.
//! - [`worklist`]: Modality Worklist C-FIND matching and return keys (PS3.4 Annex K, C.2.2.2).
//!
//! The PDU codec itself (A-ASSOCIATE-RQ/AC/RJ, release, abort) is dicom-ul's `pdu` module;
//! P-DATA is framed here so that data values can be streamed to disk without copies.

pub mod acceptor;
pub mod assemble;
pub mod command;
pub mod commitment;
pub mod dataset;
pub mod length;
pub mod negotiate;
pub mod part10;
pub mod pdata;
pub mod requestor;
pub mod scan;
pub mod store;
pub mod uids;
pub mod worklist;

pub use dicom_ul::pdu;

/// Our implementation class UID (PS3.7 D.3.3.2), sent in associations and Part 10 headers.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.80028107136915767763361938286996206362";
/// Our implementation version name (at most 16 characters).
pub const IMPLEMENTATION_VERSION_NAME: &str = "MEDGATE_01";

/// AE title and UID checks: the configuration's own, so that the appliance and the fleet (which
/// links `medgate-config`, not this crate) apply one rule.
pub use medgate_config::check::{validate_ae_title, validate_uid};

/// Trims the padding a UID may carry on the wire (trailing NUL or space).
pub fn trim_uid(uid: &str) -> &str {
    uid.trim_end_matches(['\0', ' '])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ae_titles() {
        assert!(validate_ae_title("MEDGATE").is_ok());
        assert!(validate_ae_title("   ").is_err());
        assert!(validate_ae_title("A_VERY_LONG_AE_TITLE").is_err());
        assert!(validate_ae_title("BAD\\AE").is_err());
    }

    #[test]
    fn uids() {
        assert!(validate_uid("1.2.840.10008.1.1").is_ok());
        assert!(validate_uid(IMPLEMENTATION_CLASS_UID).is_ok());
        assert!(validate_uid("1.2.03").is_err());
        assert!(validate_uid("1..2").is_err());
        assert!(validate_uid("1.2.a").is_err());
        assert_eq!(trim_uid("1.2.3\0"), "1.2.3");
    }
}
