//! The DICOM Part 10 file meta information (PS3.10 7.1): what we write in front of the dataset
//! bytes a modality sent, and read back when forwarding or rebuilding the index.

/// The file meta we write and read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// (0002,0002) Media Storage SOP Class UID.
    pub sop_class_uid: String,
    /// (0002,0003) Media Storage SOP Instance UID.
    pub sop_instance_uid: String,
    /// (0002,0010) Transfer Syntax UID: the one of the presentation context it came on.
    pub transfer_syntax: String,
    /// (0002,0016) Source Application Entity Title: the calling AE that sent it.
    pub source_ae: Option<String>,
}

/// Errors reading a file meta group.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetaError {
    /// Fewer bytes than the header needs.
    #[error("file is too short to be a DICOM Part 10 file ({0} bytes)")]
    TooShort(usize),
    /// No DICM magic at offset 128.
    #[error("no DICM prefix at offset 128: not a DICOM Part 10 file")]
    NoMagic,
    /// A malformed element in group 0002.
    #[error("malformed file meta element at byte {0}")]
    Malformed(usize),
    /// A required element is missing.
    #[error("file meta lacks {0}")]
    Missing(&'static str),
}

fn push_element(out: &mut Vec<u8>, element: u16, vr: &[u8; 2], value: &[u8], pad: u8) {
    let mut v = value.to_vec();
    if v.len() % 2 == 1 {
        v.push(pad);
    }
    out.extend_from_slice(&0x0002u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(vr);
    if vr == b"OB" {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&crate::length::len32(v.len()).to_le_bytes());
    } else {
        out.extend_from_slice(&crate::length::len16(v.len()).to_le_bytes());
    }
    out.extend_from_slice(&v);
}

/// Encodes preamble, `DICM` and the meta group. The dataset bytes follow unchanged.
pub fn encode_meta(meta: &FileMeta) -> Vec<u8> {
    let mut group = Vec::with_capacity(256);
    push_element(&mut group, 0x0001, b"OB", &[0, 1], 0);
    push_element(&mut group, 0x0002, b"UI", meta.sop_class_uid.as_bytes(), 0);
    push_element(
        &mut group,
        0x0003,
        b"UI",
        meta.sop_instance_uid.as_bytes(),
        0,
    );
    push_element(
        &mut group,
        0x0010,
        b"UI",
        meta.transfer_syntax.as_bytes(),
        0,
    );
    push_element(
        &mut group,
        0x0012,
        b"UI",
        crate::IMPLEMENTATION_CLASS_UID.as_bytes(),
        0,
    );
    push_element(
        &mut group,
        0x0013,
        b"SH",
        crate::IMPLEMENTATION_VERSION_NAME.as_bytes(),
        b' ',
    );
    if let Some(ae) = meta.source_ae.as_deref().filter(|a| !a.is_empty()) {
        push_element(&mut group, 0x0016, b"AE", ae.as_bytes(), b' ');
    }
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    push_element(
        &mut out,
        0x0000,
        b"UL",
        &crate::length::len32(group.len()).to_le_bytes(),
        0,
    );
    out.extend_from_slice(&group);
    out
}

/// Parses the meta group at the start of a file. Returns the meta and the offset of the dataset.
/// `head` must hold the whole meta group (4 KiB is plenty for any real file; pass more if unsure).
pub fn parse_meta(head: &[u8]) -> Result<(FileMeta, usize), MetaError> {
    if head.len() < 132 {
        return Err(MetaError::TooShort(head.len()));
    }
    if &head[128..132] != b"DICM" {
        return Err(MetaError::NoMagic);
    }
    let mut pos = 132;
    let mut class = None;
    let mut instance = None;
    let mut ts = None;
    let mut source = None;
    while let Some(h) = head.get(pos..pos + 8) {
        let group = u16::from_le_bytes([h[0], h[1]]);
        if group != 0x0002 {
            break;
        }
        let element = u16::from_le_bytes([h[2], h[3]]);
        let vr = [h[4], h[5]];
        let (len, value_start) = match &vr {
            b"OB" | b"OW" | b"OF" | b"SQ" | b"UT" | b"UN" | b"UC" | b"UR" | b"OD" | b"OL"
            | b"OV" => {
                let l = head
                    .get(pos + 8..pos + 12)
                    .ok_or(MetaError::Malformed(pos))?;
                (
                    u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize,
                    pos + 12,
                )
            }
            _ => (u16::from_le_bytes([h[6], h[7]]) as usize, pos + 8),
        };
        let value = head
            .get(value_start..value_start.saturating_add(len))
            .ok_or(MetaError::Malformed(pos))?;
        let text = || crate::trim_uid(String::from_utf8_lossy(value).trim()).to_string();
        match element {
            0x0002 => class = Some(text()),
            0x0003 => instance = Some(text()),
            0x0010 => ts = Some(text()),
            0x0016 => source = Some(text()),
            _ => {}
        }
        pos = value_start + len;
    }
    Ok((
        FileMeta {
            sop_class_uid: class.ok_or(MetaError::Missing("Media Storage SOP Class UID"))?,
            sop_instance_uid: instance
                .ok_or(MetaError::Missing("Media Storage SOP Instance UID"))?,
            transfer_syntax: ts.ok_or(MetaError::Missing("Transfer Syntax UID"))?,
            source_ae: source.filter(|s| !s.is_empty()),
        },
        pos,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let meta = FileMeta {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_instance_uid: "1.2.3.4.5".into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            source_ae: Some("CT1".into()),
        };
        let mut bytes = encode_meta(&meta);
        let len = bytes.len();
        bytes.extend_from_slice(&[0x08, 0x00, 0x18, 0x00]);
        let (back, offset) = parse_meta(&bytes).expect("parses");
        assert_eq!(back, meta);
        assert_eq!(offset, len);
        // Group length covers exactly the rest of the group.
        let gl = u32::from_le_bytes([bytes[140], bytes[141], bytes[142], bytes[143]]) as usize;
        assert_eq!(144 + gl, len);
    }

    #[test]
    fn rejects_non_dicom() {
        assert_eq!(parse_meta(&[0; 10]), Err(MetaError::TooShort(10)));
        assert_eq!(parse_meta(&[0; 200]), Err(MetaError::NoMagic));
    }
}
