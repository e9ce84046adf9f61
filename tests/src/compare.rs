//! Comparing two Part 10 files: element by element, or byte for byte after the file meta group.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result, bail};
use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::{Tag, VR};
use dicom_object::mem::InMemElement;
use dicom_object::{InMemDicomObject, open_file};

/// The differences between the data sets of two Part 10 files, compared element by element:
/// tags, VRs and values, recursing into sequences and encapsulated pixel data. The file meta
/// group (0002,xxxx), group length elements (gggg,0000) and trailing padding (FFFC,FFFC) are
/// ignored; string values are compared without their trailing padding (space or NUL), so a
/// re-encoding that keeps the meaning compares equal. Empty when the data sets are equal.
pub fn dataset_diff(a: impl AsRef<Path>, b: impl AsRef<Path>) -> Result<Vec<String>> {
    let (a, b) = (a.as_ref(), b.as_ref());
    let oa = open_file(a).with_context(|| format!("parsing {}", a.display()))?;
    let ob = open_file(b).with_context(|| format!("parsing {}", b.display()))?;
    let mut diffs = Vec::new();
    diff_objects("", &oa, &ob, &mut diffs);
    Ok(diffs)
}

/// Whether the data sets of two Part 10 files are equal (see [`dataset_diff`]).
pub fn dataset_equal(a: impl AsRef<Path>, b: impl AsRef<Path>) -> Result<bool> {
    Ok(dataset_diff(a, b)?.is_empty())
}

/// Fails with the list of differences unless the data sets are equal (see [`dataset_diff`]).
pub fn assert_dataset_equal(a: impl AsRef<Path>, b: impl AsRef<Path>) -> Result<()> {
    let (a, b) = (a.as_ref(), b.as_ref());
    let diffs = dataset_diff(a, b)?;
    if diffs.is_empty() {
        return Ok(());
    }
    bail!(
        "data sets of {} and {} differ in {} places:\n  {}",
        a.display(),
        b.display(),
        diffs.len(),
        diffs
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    )
}

/// The offset of the data set in a Part 10 file: after the 128-byte preamble, `DICM` and the
/// file meta group (whose length is read from (0002,0000)).
pub fn dataset_offset(path: impl AsRef<Path>) -> Result<u64> {
    let path = path.as_ref();
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut head = [0_u8; 144];
    f.read_exact(&mut head)
        .with_context(|| format!("{} is shorter than a Part 10 header", path.display()))?;
    if &head[128..132] != b"DICM" {
        bail!(
            "{} is not a DICOM Part 10 file (no DICM at 128)",
            path.display()
        );
    }
    // (0002,0000) UL, explicit VR LE: tag(4) "UL" len(2)=4 value(4)
    if head[132..136] != [0x02, 0x00, 0x00, 0x00] || &head[136..138] != b"UL" {
        bail!(
            "{} has no File Meta Information Group Length (0002,0000) first",
            path.display()
        );
    }
    let group_len = u32::from_le_bytes([head[140], head[141], head[142], head[143]]);
    Ok(144 + u64::from(group_len))
}

/// Whether the raw data set bytes (everything after the file meta group) of two Part 10 files
/// are identical. Streams both files: fine for objects of gigabytes.
pub fn dataset_bytes_identical(a: impl AsRef<Path>, b: impl AsRef<Path>) -> Result<bool> {
    let (a, b) = (a.as_ref(), b.as_ref());
    let (oa, ob) = (dataset_offset(a)?, dataset_offset(b)?);
    let len_a = std::fs::metadata(a)?.len() - oa;
    let len_b = std::fs::metadata(b)?.len() - ob;
    if len_a != len_b {
        return Ok(false);
    }
    let mut fa = File::open(a)?;
    let mut fb = File::open(b)?;
    fa.seek(SeekFrom::Start(oa))?;
    fb.seek(SeekFrom::Start(ob))?;
    let mut ra = BufReader::with_capacity(1 << 20, fa);
    let mut rb = BufReader::with_capacity(1 << 20, fb);
    let mut ba = vec![0_u8; 1 << 20];
    let mut bb = vec![0_u8; 1 << 20];
    let mut left = len_a;
    while left > 0 {
        let n = usize::try_from(left.min(ba.len() as u64)).expect("at most the buffer");
        ra.read_exact(&mut ba[..n])
            .with_context(|| format!("reading {}", a.display()))?;
        rb.read_exact(&mut bb[..n])
            .with_context(|| format!("reading {}", b.display()))?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
        left -= n as u64;
    }
    Ok(true)
}

fn relevant(tag: Tag) -> bool {
    tag.element() != 0x0000 && tag.group() != 0x0002 && tag != Tag(0xFFFC, 0xFFFC)
}

fn diff_objects(path: &str, a: &InMemDicomObject, b: &InMemDicomObject, out: &mut Vec<String>) {
    let tags: BTreeSet<Tag> = a.tags().chain(b.tags()).filter(|t| relevant(*t)).collect();
    for tag in tags {
        match (a.get(tag), b.get(tag)) {
            (Some(x), Some(y)) => diff_elements(&format!("{path}{tag}"), x, y, out),
            (Some(x), None) => out.push(format!("{path}{tag} {}: only in the first", x.vr())),
            (None, Some(y)) => out.push(format!("{path}{tag} {}: only in the second", y.vr())),
            (None, None) => {}
        }
    }
}

fn diff_elements(label: &str, x: &InMemElement, y: &InMemElement, out: &mut Vec<String>) {
    if x.vr() != y.vr() {
        out.push(format!("{label}: VR {} vs {}", x.vr(), y.vr()));
    }
    match (x.value(), y.value()) {
        (Value::Primitive(p), Value::Primitive(q)) => {
            if !primitive_eq(x.vr(), p, q) {
                out.push(format!("{label}: {} vs {}", show(p), show(q)));
            }
        }
        (Value::Sequence(s), Value::Sequence(t)) => {
            if s.items().len() != t.items().len() {
                out.push(format!(
                    "{label}: {} items vs {}",
                    s.items().len(),
                    t.items().len()
                ));
            }
            for (i, (ia, ib)) in s.items().iter().zip(t.items()).enumerate() {
                diff_objects(&format!("{label}[{i}]."), ia, ib, out);
            }
        }
        (Value::PixelSequence(s), Value::PixelSequence(t)) => {
            if s.offset_table() != t.offset_table() {
                out.push(format!("{label}: basic offset tables differ"));
            }
            if s.fragments().len() != t.fragments().len() {
                out.push(format!(
                    "{label}: {} fragments vs {}",
                    s.fragments().len(),
                    t.fragments().len()
                ));
            }
            for (i, (fa, fb)) in s.fragments().iter().zip(t.fragments()).enumerate() {
                if fa != fb {
                    out.push(format!(
                        "{label}: fragment {i} differs ({} vs {} bytes)",
                        fa.len(),
                        fb.len()
                    ));
                }
            }
        }
        _ => out.push(format!("{label}: different kinds of value")),
    }
}

fn is_text(vr: VR) -> bool {
    matches!(
        vr,
        VR::AE
            | VR::AS
            | VR::CS
            | VR::DA
            | VR::DS
            | VR::DT
            | VR::IS
            | VR::LO
            | VR::LT
            | VR::PN
            | VR::SH
            | VR::ST
            | VR::TM
            | VR::UC
            | VR::UI
            | VR::UR
            | VR::UT
    )
}

fn primitive_eq(vr: VR, p: &PrimitiveValue, q: &PrimitiveValue) -> bool {
    if p == q {
        return true;
    }
    if is_text(vr) {
        let norm = |v: &PrimitiveValue| -> Vec<String> {
            let mut parts: Vec<String> = v
                .to_multi_str()
                .iter()
                .map(|s| s.trim_end_matches([' ', '\0']).to_string())
                .collect();
            // An empty value may be read as no value or as one empty string.
            if parts.len() == 1 && parts[0].is_empty() {
                parts.clear();
            }
            parts
        };
        return norm(p) == norm(q);
    }
    // Binary values: the same bytes, whatever variant the parser chose (U8 vs U16 for OW).
    p.to_bytes() == q.to_bytes()
}

fn show(v: &PrimitiveValue) -> String {
    let s = match v {
        PrimitiveValue::U8(_)
        | PrimitiveValue::U16(_)
        | PrimitiveValue::I16(_)
        | PrimitiveValue::U32(_)
        | PrimitiveValue::I32(_)
        | PrimitiveValue::U64(_)
        | PrimitiveValue::I64(_)
        | PrimitiveValue::F32(_)
        | PrimitiveValue::F64(_)
            if v.multiplicity() > 8 =>
        {
            format!("<{} bytes>", v.to_bytes().len())
        }
        _ => format!("{:?}", v.to_str()),
    };
    crate::http::truncate(&s, 120)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::DataElement;
    use dicom_dictionary_std::tags;
    use dicom_object::FileMetaTableBuilder;

    fn write(dir: &Path, name: &str, ts: &str, obj: InMemDicomObject) -> std::path::PathBuf {
        let path = dir.join(name);
        obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(ts))
            .expect("meta")
            .write_to_file(&path)
            .expect("write");
        path
    }

    fn sample(name: &str) -> InMemDicomObject {
        let mut o = InMemDicomObject::new_empty();
        o.put(DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            "1.2.840.10008.5.1.4.1.1.7",
        ));
        o.put(DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, "2.25.1"));
        o.put(DataElement::new(tags::PATIENT_NAME, VR::PN, name));
        o.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::from(vec![1_u8, 2, 3, 4]),
        ));
        o
    }

    #[test]
    fn equal_data_sets_in_different_encodings_compare_equal_but_not_byte_identical() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = write(
            dir.path(),
            "a.dcm",
            "1.2.840.10008.1.2.1",
            sample("Doe^Jane"),
        );
        let b = write(
            dir.path(),
            "b.dcm",
            "1.2.840.10008.1.2.1",
            sample("Doe^Jane"),
        );
        let c = write(dir.path(), "c.dcm", "1.2.840.10008.1.2", sample("Doe^Jane"));
        assert!(dataset_equal(&a, &b).expect("compare"));
        assert!(dataset_bytes_identical(&a, &b).expect("compare"));
        // Implicit VR: same elements (the reader takes VRs from the dictionary), other bytes.
        assert_eq!(dataset_diff(&a, &c).expect("compare"), Vec::<String>::new());
        assert!(!dataset_bytes_identical(&a, &c).expect("compare"));
    }

    #[test]
    fn a_changed_value_and_a_missing_element_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = write(
            dir.path(),
            "a.dcm",
            "1.2.840.10008.1.2.1",
            sample("Doe^Jane"),
        );
        let mut other = sample("Doe^John");
        other.remove_element(tags::PIXEL_DATA);
        let b = write(dir.path(), "b.dcm", "1.2.840.10008.1.2.1", other);
        let diffs = dataset_diff(&a, &b).expect("compare");
        assert_eq!(diffs.len(), 2, "{diffs:?}");
        assert!(diffs[0].starts_with("(0010,0010)"), "{diffs:?}");
        assert!(diffs[1].contains("only in the first"), "{diffs:?}");
        assert!(!dataset_bytes_identical(&a, &b).expect("compare"));
        assert!(assert_dataset_equal(&a, &b).is_err());
    }

    #[test]
    fn the_offset_skips_preamble_magic_and_meta_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = write(
            dir.path(),
            "a.dcm",
            "1.2.840.10008.1.2.1",
            sample("Doe^Jane"),
        );
        let offset = usize::try_from(dataset_offset(&a).expect("offset")).expect("64-bit");
        let bytes = std::fs::read(&a).expect("read");
        // The data set starts with its first element, (0008,0016).
        assert_eq!(&bytes[offset..offset + 4], &[0x08, 0x00, 0x16, 0x00]);
        let not_dicom = dir.path().join("x");
        std::fs::write(&not_dicom, vec![0_u8; 200]).expect("write");
        assert!(dataset_offset(&not_dicom).is_err());
    }
}
