//! A bounded scan of the first bytes of a dataset for the few attributes the appliance indexes
//! (study, series, modality, the SOP instance the dataset claims to be) and the presence of the
//! identifiers quality checks look for. It never decodes pixel data and never reads past the
//! prefix it is given; the bytes themselves are stored untouched.

use crate::uids::DatasetEncoding;

/// What the scan found. Identifying values stay on the appliance: only presence flags and codes
/// are meant for reporting.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// (0008,0016) SOP Class UID.
    pub sop_class_uid: Option<String>,
    /// (0008,0018) SOP Instance UID.
    pub sop_instance_uid: Option<String>,
    /// (0008,0060) Modality.
    pub modality: Option<String>,
    /// (0020,000D) Study Instance UID.
    pub study_instance_uid: Option<String>,
    /// (0020,000E) Series Instance UID.
    pub series_instance_uid: Option<String>,
    /// (0010,0020) Patient ID is present and not empty.
    pub has_patient_id: bool,
    /// (0008,0050) Accession Number is present and not empty.
    pub has_accession_number: bool,
    /// The scan reached the end of the attributes it looks for.
    pub complete: bool,
}

/// The dataset is not a well-formed DICOM data set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed data set at byte {offset}: {reason}")]
pub struct ScanError {
    /// Offset in the dataset.
    pub offset: usize,
    /// What is wrong.
    pub reason: &'static str,
}

const LONG_VRS: [&[u8; 2]; 12] = [
    b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV", b"SV",
];
const ALL_VRS: [&[u8; 2]; 35] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB",
    b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
    b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV", b"xs",
];

const UNDEFINED: u32 = 0xFFFF_FFFF;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    explicit: bool,
}

enum Step {
    /// Not enough bytes in the prefix to go on.
    OutOfData,
}

struct Header {
    group: u16,
    element: u16,
    vr: Option<[u8; 2]>,
    len: u32,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Step> {
        let s = self
            .buf
            .get(self.pos..self.pos + n)
            .ok_or(Step::OutOfData)?;
        self.pos += n;
        Ok(s)
    }

    fn header(&mut self) -> Result<Result<Header, ScanError>, Step> {
        let start = self.pos;
        let t = self.take(4)?;
        let group = u16::from_le_bytes([t[0], t[1]]);
        let element = u16::from_le_bytes([t[2], t[3]]);
        // Item and delimitation items carry no VR, whatever the syntax.
        if group == 0xFFFE {
            let l = self.take(4)?;
            let len = u32::from_le_bytes([l[0], l[1], l[2], l[3]]);
            return Ok(Ok(Header {
                group,
                element,
                vr: None,
                len,
            }));
        }
        if self.explicit {
            let vr_bytes = self.take(2)?;
            let vr = [vr_bytes[0], vr_bytes[1]];
            if !ALL_VRS.contains(&&vr) {
                return Ok(Err(ScanError {
                    offset: start,
                    reason: "unknown value representation",
                }));
            }
            let len = if LONG_VRS.contains(&&vr) || &vr == b"UV" {
                let l = self.take(6)?;
                u32::from_le_bytes([l[2], l[3], l[4], l[5]])
            } else {
                let l = self.take(2)?;
                u32::from(u16::from_le_bytes([l[0], l[1]]))
            };
            Ok(Ok(Header {
                group,
                element,
                vr: Some(vr),
                len,
            }))
        } else {
            let l = self.take(4)?;
            let len = u32::from_le_bytes([l[0], l[1], l[2], l[3]]);
            Ok(Ok(Header {
                group,
                element,
                vr: None,
                len,
            }))
        }
    }

    /// Skips an undefined-length sequence (or item) up to and including its delimiter.
    fn skip_undefined(&mut self, depth: u32) -> Result<Result<(), ScanError>, Step> {
        if depth > 32 {
            return Ok(Err(ScanError {
                offset: self.pos,
                reason: "sequences nested too deep",
            }));
        }
        loop {
            let start = self.pos;
            let h = match self.header()? {
                Ok(h) => h,
                Err(e) => return Ok(Err(e)),
            };
            match (h.group, h.element) {
                (0xFFFE, 0xE0DD) | (0xFFFE, 0xE00D) => return Ok(Ok(())),
                (0xFFFE, 0xE000) if h.len == UNDEFINED => {
                    if let Err(e) = self.skip_undefined(depth + 1)? {
                        return Ok(Err(e));
                    }
                }
                _ if h.len == UNDEFINED => {
                    if let Err(e) = self.skip_undefined(depth + 1)? {
                        return Ok(Err(e));
                    }
                }
                _ => {
                    if h.group != 0xFFFE && h.group < 0x0002 {
                        return Ok(Err(ScanError {
                            offset: start,
                            reason: "element in group 0000 or 0001",
                        }));
                    }
                    self.take(h.len as usize)?;
                }
            }
        }
    }
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v)
        .trim_end_matches(['\0', ' '])
        .trim_start()
        .to_string()
}

/// Scans a dataset prefix. `is_whole` says the prefix is the entire dataset (then running out of
/// bytes mid-element is an error, else it just ends the scan).
pub fn scan(
    prefix: &[u8],
    encoding: DatasetEncoding,
    is_whole: bool,
) -> Result<Summary, ScanError> {
    let mut summary = Summary::default();
    let explicit = match encoding {
        DatasetEncoding::ExplicitLittle => true,
        DatasetEncoding::ImplicitLittle => false,
        DatasetEncoding::Opaque => return Ok(summary),
    };
    if is_whole && prefix.is_empty() {
        return Err(ScanError {
            offset: 0,
            reason: "empty data set",
        });
    }
    let mut c = Cursor {
        buf: prefix,
        pos: 0,
        explicit,
    };
    let mut last_tag = 0u32;
    loop {
        if c.pos == prefix.len() {
            summary.complete = is_whole;
            return Ok(summary);
        }
        let start = c.pos;
        let step = (|| -> Result<Result<bool, ScanError>, Step> {
            let h = match c.header()? {
                Ok(h) => h,
                Err(e) => return Ok(Err(e)),
            };
            let tag = (u32::from(h.group) << 16) | u32::from(h.element);
            if h.group >= 0xFFFE || h.group < 0x0002 || (h.group % 2 == 1 && h.group <= 0x0008) {
                return Ok(Err(ScanError {
                    offset: start,
                    reason: "not a data element at the top level",
                }));
            }
            if tag < last_tag {
                return Ok(Err(ScanError {
                    offset: start,
                    reason: "elements out of ascending tag order",
                }));
            }
            last_tag = tag;
            if h.group > 0x0020 {
                // Everything we look for is in groups 0008 to 0020.
                return Ok(Ok(true));
            }
            if h.len == UNDEFINED {
                let is_sq = h.vr.is_none_or(|vr| &vr == b"SQ" || &vr == b"UN");
                if !is_sq {
                    return Ok(Err(ScanError {
                        offset: start,
                        reason: "undefined length on a non-sequence",
                    }));
                }
                if let Err(e) = c.skip_undefined(0)? {
                    return Ok(Err(e));
                }
                return Ok(Ok(false));
            }
            let value = c.take(h.len as usize)?;
            match tag {
                0x0008_0016 => summary.sop_class_uid = Some(text(value)),
                0x0008_0018 => summary.sop_instance_uid = Some(text(value)),
                0x0008_0050 => summary.has_accession_number = !text(value).is_empty(),
                0x0008_0060 => summary.modality = Some(text(value)),
                0x0010_0020 => summary.has_patient_id = !text(value).is_empty(),
                0x0020_000D => summary.study_instance_uid = Some(text(value)),
                0x0020_000E => summary.series_instance_uid = Some(text(value)),
                _ => {}
            }
            Ok(Ok(false))
        })();
        match step {
            Ok(Ok(true)) => {
                summary.complete = true;
                return Ok(summary);
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => return Err(e),
            Err(Step::OutOfData) => {
                if is_whole {
                    return Err(ScanError {
                        offset: start,
                        reason: "data set ends inside an element",
                    });
                }
                return Ok(summary);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(out: &mut Vec<u8>, g: u16, e: u16, vr: &[u8; 2], v: &[u8]) {
        out.extend_from_slice(&g.to_le_bytes());
        out.extend_from_slice(&e.to_le_bytes());
        out.extend_from_slice(vr);
        if LONG_VRS.contains(&vr) {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&crate::length::len32(v.len()).to_le_bytes());
        } else {
            out.extend_from_slice(&crate::length::len16(v.len()).to_le_bytes());
        }
        out.extend_from_slice(v);
    }

    fn sample() -> Vec<u8> {
        let mut d = Vec::new();
        el(
            &mut d,
            0x0008,
            0x0016,
            b"UI",
            b"1.2.840.10008.5.1.4.1.1.2\0",
        );
        el(&mut d, 0x0008, 0x0018, b"UI", b"1.2.3.4");
        el(&mut d, 0x0008, 0x0050, b"SH", b"ACC1");
        el(&mut d, 0x0008, 0x0060, b"CS", b"CT");
        // An undefined-length sequence with one undefined-length item.
        d.extend_from_slice(&[
            0x08, 0x00, 0x32, 0x10, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        d.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        el(&mut d, 0x0008, 0x0100, b"SH", b"CODE");
        d.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        d.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        el(&mut d, 0x0010, 0x0010, b"PN", b"DOE^JOHN");
        el(&mut d, 0x0010, 0x0020, b"LO", b"PID123");
        el(&mut d, 0x0020, 0x000D, b"UI", b"1.2.3");
        el(&mut d, 0x0020, 0x000E, b"UI", b"1.2.3.1\0");
        el(&mut d, 0x0028, 0x0010, b"US", &[0, 2]);
        el(&mut d, 0x7FE0, 0x0010, b"OW", &[0; 16]);
        d
    }

    #[test]
    fn finds_attributes() {
        let s = scan(&sample(), DatasetEncoding::ExplicitLittle, true).expect("scans");
        assert_eq!(s.sop_instance_uid.as_deref(), Some("1.2.3.4"));
        assert_eq!(s.modality.as_deref(), Some("CT"));
        assert_eq!(s.study_instance_uid.as_deref(), Some("1.2.3"));
        assert_eq!(s.series_instance_uid.as_deref(), Some("1.2.3.1"));
        assert!(s.has_patient_id && s.has_accession_number && s.complete);
    }

    #[test]
    fn prefix_is_not_an_error() {
        let d = sample();
        for cut in 0..d.len() {
            let s = scan(&d[..cut], DatasetEncoding::ExplicitLittle, false).expect("prefix scans");
            if cut < 10 {
                assert!(s.sop_instance_uid.is_none());
            }
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(
            scan(
                b"this is not DICOM at all, just text",
                DatasetEncoding::ExplicitLittle,
                true
            )
            .is_err()
        );
        let d = sample();
        assert!(scan(&d[..20], DatasetEncoding::ExplicitLittle, true).is_err());
        assert!(scan(&[0xFF; 64], DatasetEncoding::ImplicitLittle, true).is_err());
    }

    #[test]
    fn implicit() {
        let mut d = Vec::new();
        for (g, e, v) in [
            (0x0008u16, 0x0018u16, &b"1.2.3.4\0"[..]),
            (0x0008, 0x0060, b"US"),
            (0x0020, 0x000D, b"9.8"),
        ] {
            d.extend_from_slice(&g.to_le_bytes());
            d.extend_from_slice(&e.to_le_bytes());
            d.extend_from_slice(&crate::length::len32(v.len()).to_le_bytes());
            d.extend_from_slice(v);
        }
        let s = scan(&d, DatasetEncoding::ImplicitLittle, true).expect("scans");
        assert_eq!(s.modality.as_deref(), Some("US"));
        assert_eq!(s.study_instance_uid.as_deref(), Some("9.8"));
    }
}
