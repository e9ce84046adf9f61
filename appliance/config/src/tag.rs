//! Naming elements in rules: a keyword of the standard dictionary (`IssuerOfPatientID`) or a tag
//! (`(0010,0021)`, `0010,0021`, `00100021`), and what may be written into which VR.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_dictionary_std::StandardDataDictionary;

/// A tag as one number: group in the high 16 bits.
pub type TagNo = u32;

/// Formats a tag as `(gggg,eeee)`.
pub fn fmt_tag(tag: TagNo) -> String {
    format!("({:04X},{:04X})", tag >> 16, tag & 0xFFFF)
}

/// The keyword of a standard tag, if any.
pub fn keyword(tag: TagNo) -> Option<&'static str> {
    StandardDataDictionary
        .by_tag(dicom_core::Tag((tag >> 16) as u16, (tag & 0xFFFF) as u16))
        .map(|e| e.alias)
}

/// `(gggg,eeee) Keyword` or just the tag.
pub fn describe(tag: TagNo) -> String {
    match keyword(tag) {
        Some(k) => format!("{} {k}", fmt_tag(tag)),
        None => fmt_tag(tag),
    }
}

fn parse_hex_tag(s: &str) -> Option<TagNo> {
    let t = s.trim();
    let t = t
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .unwrap_or(t);
    let (g, e) = match t.split_once(',') {
        Some((g, e)) => (g.trim(), e.trim()),
        None if t.len() == 8 => t.split_at(4),
        None => return None,
    };
    if g.len() != 4 || e.len() != 4 {
        return None;
    }
    let g = u16::from_str_radix(g, 16).ok()?;
    let e = u16::from_str_radix(e, 16).ok()?;
    Some((u32::from(g) << 16) | u32::from(e))
}

/// Parses a keyword or a tag.
pub fn parse_tag(s: &str) -> Result<TagNo, String> {
    if let Some(t) = parse_hex_tag(s) {
        return Ok(t);
    }
    match StandardDataDictionary.by_name(s.trim()) {
        Some(e) => {
            let t = e.tag();
            Ok((u32::from(t.group()) << 16) | u32::from(t.element()))
        }
        None => Err(format!(
            "{s:?} is neither a keyword of the DICOM dictionary (e.g. \"IssuerOfPatientID\", case matters) nor a tag like \"(0010,0021)\""
        )),
    }
}

/// The standard VR of a tag, when it is a single exact one.
pub fn standard_vr(tag: TagNo) -> Option<[u8; 2]> {
    let e = StandardDataDictionary
        .by_tag(dicom_core::Tag((tag >> 16) as u16, (tag & 0xFFFF) as u16))?;
    match e.vr() {
        VirtualVr::Exact(vr) => {
            let s = vr.to_string();
            let b = s.as_bytes();
            (b.len() == 2).then(|| [b[0], b[1]])
        }
        _ => None,
    }
}

/// VRs a rule may write: the text ones.
pub const TEXT_VRS: [&[u8; 2]; 17] = [
    b"AE", b"AS", b"CS", b"DA", b"DS", b"DT", b"IS", b"LO", b"LT", b"PN", b"SH", b"ST", b"TM",
    b"UC", b"UI", b"UR", b"UT",
];

/// Whether a VR is one of [`TEXT_VRS`].
pub fn is_text_vr(vr: &[u8; 2]) -> bool {
    TEXT_VRS.contains(&vr)
}

/// Whether an element of this VR has a 4-byte length (and 2 reserved bytes) in explicit VR.
pub fn is_long_vr(vr: &[u8; 2]) -> bool {
    matches!(
        vr,
        b"OB"
            | b"OW"
            | b"OF"
            | b"SQ"
            | b"UT"
            | b"UN"
            | b"UC"
            | b"UR"
            | b"OD"
            | b"OL"
            | b"OV"
            | b"SV"
            | b"UV"
    )
}

/// Elements no rule may change or insert: the object's identity and encoding.
pub fn protected(tag: TagNo) -> Option<&'static str> {
    let group = tag >> 16;
    match tag {
        _ if group <= 0x0002 => Some("file meta and command elements cannot be changed"),
        _ if tag & 0xFFFF == 0 => Some("group length elements cannot be changed"),
        _ if group >= 0xFFFA => Some("item and padding elements cannot be changed"),
        _ if group % 2 == 1 => Some(
            "private elements cannot be written (their VR is not known): map them to a standard element instead",
        ),
        0x0008_0005 => Some(
            "SpecificCharacterSet cannot be changed: it would change how every text in the object is read",
        ),
        0x0008_0016 | 0x0008_0018 => {
            Some("the SOP Class and SOP Instance UIDs identify the object and cannot be changed")
        }
        _ if group == 0x7FE0 || group == 0x0028 => {
            Some("pixel data and image pixel description cannot be changed")
        }
        _ => None,
    }
}

/// The longest value (bytes) of a text VR.
fn max_len(vr: &[u8; 2]) -> usize {
    match vr {
        b"AE" | b"CS" | b"DS" | b"SH" => 16,
        b"AS" => 4,
        b"DA" => 8,
        b"DT" => 26,
        b"IS" => 12,
        b"LO" | b"PN" | b"UI" => 64,
        b"TM" => 14,
        b"ST" => 1024,
        b"LT" => 10_240,
        _ => 65_534,
    }
}

/// Checks a value a rule would write into an element of VR `vr`.
pub fn check_value(vr: &[u8; 2], v: &str) -> Result<(), String> {
    let vr_s = String::from_utf8_lossy(vr);
    if v.is_empty() {
        return Err("must not be empty".into());
    }
    if !v.bytes().all(|b| (0x20..0x7F).contains(&b)) {
        return Err(format!(
            "{v:?} must be printable ASCII (the default character repertoire)"
        ));
    }
    if v.contains('\\') {
        return Err(format!("{v:?} must be a single value (no backslash)"));
    }
    if v.len() > max_len(vr) {
        return Err(format!(
            "{v:?} is longer than {} characters, the maximum of VR {vr_s}",
            max_len(vr)
        ));
    }
    let ok = match vr {
        b"CS" => v
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ' || b == b'_'),
        b"DA" => v.len() == 8 && v.bytes().all(|b| b.is_ascii_digit()),
        b"TM" => v.bytes().all(|b| b.is_ascii_digit() || b == b'.'),
        b"IS" => v.trim().parse::<i64>().is_ok(),
        b"DS" => v.trim().parse::<f64>().is_ok(),
        b"UI" => crate::check::validate_uid(v).is_ok(),
        b"AE" => crate::check::validate_ae_title(v).is_ok(),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{v:?} is not a valid value of VR {vr_s}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_by_keyword_and_number() {
        assert_eq!(parse_tag("IssuerOfPatientID"), Ok(0x0010_0021));
        assert_eq!(parse_tag("(0010,0021)"), Ok(0x0010_0021));
        assert_eq!(parse_tag("0008,0080"), Ok(0x0008_0080));
        assert_eq!(parse_tag("00091010"), Ok(0x0009_1010));
        assert!(parse_tag("issuerofpatientid").is_err());
        assert_eq!(standard_vr(0x0008_0080), Some(*b"LO"));
        assert_eq!(describe(0x0008_1010), "(0008,1010) StationName");
        assert!(protected(0x0008_0018).is_some());
        assert!(protected(0x0009_1010).is_some());
        assert!(protected(0x0010_0021).is_none());
    }

    #[test]
    fn values() {
        assert!(check_value(b"LO", "HOSP-A").is_ok());
        assert!(check_value(b"CS", "ct").is_err());
        assert!(check_value(b"SH", "A NAME LONGER THAN 16").is_err());
        assert!(check_value(b"LO", "A\\B").is_err());
        assert!(check_value(b"LO", "Klinik Zürich").is_err());
        assert!(check_value(b"DA", "20261128").is_ok());
    }
}
