//! PDU framing on the wire (PS3.8 9.3) and zero-copy parsing of P-DATA-TF value items.
//!
//! The socket shell reads the 6-byte header, checks the length against [`FrameLimits`], reads the
//! body into a reusable buffer and hands it here. P-DATA bodies are split into [`Pdv`]s that
//! borrow from that buffer, so data values go to disk without another copy; every other PDU type
//! is decoded by dicom-ul's codec ([`decode_other`]).

use bytes::Buf;
use dicom_ul::pdu::{Pdu, read_pdu};

/// Length of a PDU header: type, reserved, 32-bit length.
pub const PDU_HEADER_LEN: usize = 6;
/// Length of a PDV item header: 32-bit length, context id, message control header.
pub const PDV_HEADER_LEN: usize = 6;

/// PDU type codes.
pub mod pdu_type {
    /// A-ASSOCIATE-RQ
    pub const ASSOCIATE_RQ: u8 = 0x01;
    /// A-ASSOCIATE-AC
    pub const ASSOCIATE_AC: u8 = 0x02;
    /// A-ASSOCIATE-RJ
    pub const ASSOCIATE_RJ: u8 = 0x03;
    /// P-DATA-TF
    pub const P_DATA: u8 = 0x04;
    /// A-RELEASE-RQ
    pub const RELEASE_RQ: u8 = 0x05;
    /// A-RELEASE-RP
    pub const RELEASE_RP: u8 = 0x06;
    /// A-ABORT
    pub const ABORT: u8 = 0x07;
}

/// A-ABORT reasons (service provider, PS3.8 9.3.8).
pub mod abort_reason {
    /// Reason not specified.
    pub const NOT_SPECIFIED: u8 = 0;
    /// Unrecognized PDU.
    pub const UNRECOGNIZED_PDU: u8 = 1;
    /// Unexpected PDU.
    pub const UNEXPECTED_PDU: u8 = 2;
    /// Invalid PDU parameter value.
    pub const INVALID_PARAMETER: u8 = 6;
}

/// Errors in the framing of PDUs and PDVs. Every one of them ends the association with an
/// A-ABORT: the peer is not speaking DICOM correctly.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FramingError {
    /// Unknown PDU type byte.
    #[error("unknown PDU type 0x{0:02X}: the peer is not speaking the DICOM upper layer protocol")]
    UnknownType(u8),
    /// A PDU longer than we accept.
    #[error(
        "PDU of type 0x{pdu_type:02X} announces {length} bytes, more than the {limit} we accept"
    )]
    TooLong {
        /// PDU type.
        pdu_type: u8,
        /// Announced length.
        length: u32,
        /// Our limit.
        limit: u32,
    },
    /// A PDV item whose length does not fit in its PDU.
    #[error("P-DATA item announces {announced} bytes but only {available} remain in the PDU")]
    PdvOverrun {
        /// Announced item length.
        announced: u32,
        /// Bytes left in the PDU.
        available: usize,
    },
    /// A PDV item too short to hold its own header.
    #[error("P-DATA item of length {0} is too short (at least 2 bytes)")]
    PdvTooShort(u32),
    /// A P-DATA PDU without any item.
    #[error("P-DATA PDU without any presentation data value")]
    EmptyPData,
    /// dicom-ul's codec refused a PDU.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What PDU it was.
        what: &'static str,
        /// The codec's message.
        detail: String,
    },
}

/// A PDU header read off the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PduHeader {
    /// The PDU type.
    pub pdu_type: u8,
    /// Length of the body that follows.
    pub length: u32,
}

/// The lengths we accept, per PDU type.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    /// Largest P-DATA-TF body: the max PDU length we advertised.
    pub max_pdata: u32,
    /// Largest association PDU (A-ASSOCIATE-RQ/AC/RJ) body.
    pub max_associate: u32,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_pdata: 262_144,
            max_associate: 256 * 1024,
        }
    }
}

impl PduHeader {
    /// Parses and checks the 6-byte header.
    pub fn parse(bytes: &[u8; PDU_HEADER_LEN], limits: &FrameLimits) -> Result<Self, FramingError> {
        let pdu_type = bytes[0];
        let length = u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
        let limit = match pdu_type {
            pdu_type::ASSOCIATE_RQ | pdu_type::ASSOCIATE_AC | pdu_type::ASSOCIATE_RJ => {
                limits.max_associate
            }
            pdu_type::P_DATA => limits.max_pdata,
            // A-RELEASE-RQ/RP and A-ABORT have a 4-byte body.
            pdu_type::RELEASE_RQ | pdu_type::RELEASE_RP | pdu_type::ABORT => 4,
            other => return Err(FramingError::UnknownType(other)),
        };
        if length > limit {
            return Err(FramingError::TooLong {
                pdu_type,
                length,
                limit,
            });
        }
        Ok(PduHeader { pdu_type, length })
    }
}

/// One presentation data value of a P-DATA-TF PDU, borrowed from the PDU body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pdv<'a> {
    /// Presentation context id.
    pub context_id: u8,
    /// Command (true) or data set (false) fragment.
    pub is_command: bool,
    /// Last fragment of the command or data set.
    pub is_last: bool,
    /// The fragment.
    pub data: &'a [u8],
}

/// Splits a P-DATA-TF body into its PDVs.
pub fn parse_pdata(body: &[u8]) -> Result<Vec<Pdv<'_>>, FramingError> {
    let mut out = Vec::with_capacity(2);
    let mut rest = body;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(FramingError::PdvOverrun {
                announced: 4,
                available: rest.len(),
            });
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        if len < 2 {
            return Err(FramingError::PdvTooShort(len));
        }
        let available = rest.len() - 4;
        if len as usize > available {
            return Err(FramingError::PdvOverrun {
                announced: len,
                available,
            });
        }
        let item = &rest[4..4 + len as usize];
        let control = item[1];
        out.push(Pdv {
            context_id: item[0],
            is_command: control & 0x01 != 0,
            is_last: control & 0x02 != 0,
            data: &item[2..],
        });
        rest = &rest[4 + len as usize..];
    }
    if out.is_empty() {
        return Err(FramingError::EmptyPData);
    }
    Ok(out)
}

/// Decodes a non-P-DATA PDU (header and body) with dicom-ul's codec, strictly.
pub fn decode_other(header: PduHeader, body: &[u8]) -> Result<Pdu, FramingError> {
    let what = match header.pdu_type {
        pdu_type::ASSOCIATE_RQ => "A-ASSOCIATE-RQ",
        pdu_type::ASSOCIATE_AC => "A-ASSOCIATE-AC",
        pdu_type::ASSOCIATE_RJ => "A-ASSOCIATE-RJ",
        pdu_type::RELEASE_RQ => "A-RELEASE-RQ",
        pdu_type::RELEASE_RP => "A-RELEASE-RP",
        pdu_type::ABORT => "A-ABORT",
        _ => "PDU",
    };
    let mut framed = Vec::with_capacity(PDU_HEADER_LEN + body.len());
    framed.push(header.pdu_type);
    framed.push(0);
    framed.extend_from_slice(&header.length.to_be_bytes());
    framed.extend_from_slice(body);
    let max = u32::try_from(framed.len()).unwrap_or(u32::MAX).clamp(
        dicom_ul::pdu::MINIMUM_PDU_SIZE,
        dicom_ul::pdu::MAXIMUM_PDU_SIZE,
    );
    let mut buf = framed.as_slice();
    match read_pdu(&mut buf, max, true) {
        Ok(Some(pdu)) if !buf.has_remaining() => Ok(pdu),
        Ok(Some(_)) => Err(FramingError::Malformed {
            what,
            detail: "trailing bytes after the PDU".into(),
        }),
        Ok(None) => Err(FramingError::Malformed {
            what,
            detail: "truncated".into(),
        }),
        Err(e) => Err(FramingError::Malformed {
            what,
            detail: e.to_string(),
        }),
    }
}

/// Encodes a non-P-DATA PDU with dicom-ul's codec.
pub fn encode_other(pdu: &Pdu) -> Result<Vec<u8>, FramingError> {
    let mut out = Vec::with_capacity(256);
    dicom_ul::write_pdu(&mut out, pdu).map_err(|e| FramingError::Malformed {
        what: "outgoing PDU",
        detail: e.to_string(),
    })?;
    Ok(out)
}

/// The 12 bytes in front of a single-PDV P-DATA-TF PDU carrying `data_len` bytes.
pub fn pdata_header(context_id: u8, is_command: bool, is_last: bool, data_len: usize) -> [u8; 12] {
    // `data_len` is at most the peer's maximum PDU length, itself a u32.
    let item_len = crate::length::len32(data_len.saturating_add(2));
    let pdu_len = item_len.saturating_add(4);
    let mut h = [0u8; 12];
    h[0] = pdu_type::P_DATA;
    h[2..6].copy_from_slice(&pdu_len.to_be_bytes());
    h[6..10].copy_from_slice(&item_len.to_be_bytes());
    h[10] = context_id;
    h[11] = u8::from(is_command) | (u8::from(is_last) << 1);
    h
}

/// Encodes a whole command set as one or more P-DATA-TF PDUs no longer than `max_pdu`
/// (the peer's maximum; 0 means unlimited).
pub fn encode_command_pdus(context_id: u8, command: &[u8], max_pdu: u32) -> Vec<u8> {
    encode_pdus(context_id, true, command, max_pdu)
}

/// Encodes a whole in-memory data set (a small one: N-ACTION, N-EVENT-REPORT, C-FIND
/// identifiers) as one or more P-DATA-TF PDUs no longer than `max_pdu` (0: unlimited).
pub fn encode_dataset_pdus(context_id: u8, dataset: &[u8], max_pdu: u32) -> Vec<u8> {
    encode_pdus(context_id, false, dataset, max_pdu)
}

fn encode_pdus(context_id: u8, is_command: bool, command: &[u8], max_pdu: u32) -> Vec<u8> {
    let max_data = if max_pdu == 0 {
        usize::MAX
    } else {
        (max_pdu as usize).saturating_sub(PDV_HEADER_LEN).max(1)
    };
    let mut out = Vec::with_capacity(command.len() + 12);
    let mut chunks = command.chunks(max_data).peekable();
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        out.extend_from_slice(&pdata_header(context_id, is_command, last, chunk.len()));
        out.extend_from_slice(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_limits() {
        let limits = FrameLimits::default();
        assert!(PduHeader::parse(&[4, 0, 0, 0, 16, 0], &limits).is_ok());
        assert_eq!(
            PduHeader::parse(&[4, 0, 0xFF, 0xFF, 0xFF, 0xFF], &limits),
            Err(FramingError::TooLong {
                pdu_type: 4,
                length: u32::MAX,
                limit: 262_144
            })
        );
        assert_eq!(
            PduHeader::parse(&[0x42, 0, 0, 0, 0, 4], &limits),
            Err(FramingError::UnknownType(0x42))
        );
        assert!(PduHeader::parse(&[5, 0, 0, 0, 0, 5], &limits).is_err());
    }

    #[test]
    fn pdata_roundtrip() {
        let mut pdu = pdata_header(3, false, true, 4).to_vec();
        pdu.extend_from_slice(b"abcd");
        let pdvs = parse_pdata(&pdu[6..]).expect("valid");
        assert_eq!(
            pdvs,
            vec![Pdv {
                context_id: 3,
                is_command: false,
                is_last: true,
                data: b"abcd"
            }]
        );
    }

    #[test]
    fn pdata_bad_lengths() {
        assert_eq!(parse_pdata(&[]), Err(FramingError::EmptyPData));
        assert!(matches!(
            parse_pdata(&[0, 0, 0, 9, 1, 3, 0]),
            Err(FramingError::PdvOverrun { .. })
        ));
        assert_eq!(
            parse_pdata(&[0, 0, 0, 1, 1]),
            Err(FramingError::PdvTooShort(1))
        );
        assert!(parse_pdata(&[0, 0]).is_err());
    }

    #[test]
    fn command_split() {
        let cmd = vec![7u8; 10];
        let bytes = encode_command_pdus(1, &cmd, 10);
        // 4 data bytes per PDU: 3 PDUs, the last one flagged.
        assert_eq!(bytes.len(), 3 * 12 + 10);
        assert_eq!(bytes[11], 0x01);
        assert_eq!(bytes[12 + 4 + 12 + 4 + 11], 0x03);
    }

    #[test]
    fn other_pdus_roundtrip() {
        let bytes = encode_other(&Pdu::ReleaseRQ).expect("encodes");
        let mut h = [0u8; 6];
        h.copy_from_slice(&bytes[..6]);
        let header = PduHeader::parse(&h, &FrameLimits::default()).expect("header");
        assert_eq!(decode_other(header, &bytes[6..]), Ok(Pdu::ReleaseRQ));
        assert!(
            decode_other(
                PduHeader {
                    pdu_type: 1,
                    length: 3
                },
                &[1, 2, 3]
            )
            .is_err()
        );
    }
}
