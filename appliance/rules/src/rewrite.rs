//! Applying rules to a Part 10 object: [`inspect`] decides (meta, walk, coercions, routing) and
//! [`write_coerced`] streams the object to a new one in which only the changed top-level
//! elements differ. Every other byte — file meta, sequences, encapsulated pixel data, trailing
//! padding — is copied as it is. Generic over `Read + Seek` / `Write`: the caller owns the files.

use crate::dataset::{self, ElementPos, Walk, WalkError};
use crate::engine::{Change, Context, Routing, Rules, Values};
use crate::tag::{self, TagNo, is_long_vr, is_text_vr};
use medgate_dicom::length::{len16, len32};
use medgate_dicom::part10;
use medgate_dicom::uids::{self, DatasetEncoding};
use std::io::{self, Read, Seek, SeekFrom, Write};

/// How much of the file is read to find the file meta group.
const META_HEAD: u64 = 64 * 1024;

/// Why an object could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Reading failed.
    #[error("reading the object: {0}")]
    Io(#[from] io::Error),
    /// Not a Part 10 file.
    #[error("not a DICOM Part 10 file: {0}")]
    Meta(#[from] part10::MetaError),
}

/// One byte-level edit of the data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The element.
    pub tag: TagNo,
    /// Offset in the data set where the old element starts (or where the new one is inserted).
    pub offset: u64,
    /// Bytes of the old element (0: an insertion).
    pub remove: u64,
    /// The new element, header included.
    pub bytes: Vec<u8>,
}

/// What the rules make of one object.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// Transfer syntax of the object.
    pub transfer_syntax: String,
    /// SOP Class UID (file meta).
    pub sop_class_uid: String,
    /// Source AE title recorded in the file meta, if any.
    pub source_ae: Option<String>,
    /// Where the data set starts in the file.
    pub dataset_offset: u64,
    /// Every change the coercion rules made, in order (values: local display only).
    pub changes: Vec<Change>,
    /// The byte edits that implement them (empty: the object stays as it is).
    pub edits: Vec<Edit>,
    /// Coercion was refused for the whole object (deflated or big endian transfer syntax, or a
    /// data set that cannot be walked): it is stored and forwarded unchanged.
    pub refused: Option<String>,
    /// Changes left out, with the reason (e.g. the object holds the element with VR UN).
    pub skipped: Vec<String>,
    /// Where it goes.
    pub routing: Routing,
}

impl Inspection {
    /// Whether the object must be rewritten.
    pub fn rewrites(&self) -> bool {
        !self.edits.is_empty()
    }

    /// The size of the rewritten file, from the size of the original.
    pub fn new_len(&self, old_len: u64) -> u64 {
        let removed: u64 = self.edits.iter().map(|e| e.remove).sum();
        let added: u64 = self.edits.iter().map(|e| e.bytes.len() as u64).sum();
        old_len - removed + added
    }
}

/// Encodes one text element: value padded to even length (UI with NUL, others with space).
pub fn encode_element(tag: TagNo, vr: [u8; 2], explicit: bool, value: &str) -> Vec<u8> {
    let mut v = value.as_bytes().to_vec();
    if v.len() % 2 == 1 {
        v.push(if &vr == b"UI" { 0 } else { b' ' });
    }
    let mut out = Vec::with_capacity(v.len() + 12);
    out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
    out.extend_from_slice(&((tag & 0xFFFF) as u16).to_le_bytes());
    if explicit {
        out.extend_from_slice(&vr);
        if is_long_vr(&vr) {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&len32(v.len()).to_le_bytes());
        } else {
            out.extend_from_slice(&len16(v.len()).to_le_bytes());
        }
    } else {
        out.extend_from_slice(&len32(v.len()).to_le_bytes());
    }
    out.extend_from_slice(&v);
    out
}

fn values_of(walk: &Walk) -> Values {
    let mut values = Values::new();
    for e in &walk.elements {
        let v = match walk.values.get(&e.tag) {
            Some(raw) => dataset::text(raw),
            // Present but too long (or not asked for): it has a value no pattern matches.
            None if e.value_len > 0 => format!("<{} bytes, not read>", e.value_len),
            None => String::new(),
        };
        values.insert(e.tag, v);
    }
    values
}

/// Inspects the object read from `src` (`len` bytes): reads its file meta, walks the top-level
/// elements the rules need, applies the coercion rules and the routing rules, and plans the
/// byte edits. Reads only as far as the last element the rules look at.
pub fn inspect<R: Read + Seek>(
    rules: &Rules,
    mut src: R,
    len: u64,
    ctx: &Context<'_>,
) -> Result<Inspection, InspectError> {
    src.seek(SeekFrom::Start(0))?;
    let mut head = Vec::new();
    (&mut src).take(META_HEAD.min(len)).read_to_end(&mut head)?;
    let (meta, offset) = part10::parse_meta(&head)?;
    let offset = offset as u64;
    let sop_class = if ctx.sop_class.is_empty() {
        meta.sop_class_uid.as_str()
    } else {
        ctx.sop_class
    };
    let calling_ae = if ctx.calling_ae.is_empty() {
        meta.source_ae.as_deref().unwrap_or("")
    } else {
        ctx.calling_ae
    };
    let ctx = Context {
        calling_ae,
        sop_class,
        called_ae: ctx.called_ae,
    };
    let mut out = Inspection {
        transfer_syntax: meta.transfer_syntax.clone(),
        sop_class_uid: meta.sop_class_uid.clone(),
        source_ae: meta.source_ae.clone(),
        dataset_offset: offset,
        changes: Vec::new(),
        edits: Vec::new(),
        refused: None,
        skipped: Vec::new(),
        routing: Routing::All,
    };
    if rules.wanted().is_empty() {
        out.routing = rules.route(&ctx, &Values::new());
        return Ok(out);
    }
    let explicit = match uids::dataset_encoding(&meta.transfer_syntax) {
        DatasetEncoding::ExplicitLittle => true,
        DatasetEncoding::ImplicitLittle => false,
        DatasetEncoding::Opaque => {
            if rules.has_coercion() {
                out.refused = Some(format!(
                    "transfer syntax {} (deflated or big endian) cannot be rewritten in place: stored and forwarded unchanged",
                    meta.transfer_syntax
                ));
            }
            out.routing = rules.route(&ctx, &Values::new());
            return Ok(out);
        }
    };
    src.seek(SeekFrom::Start(offset))?;
    let stop_after = rules.wanted().iter().next_back().copied().unwrap_or(0);
    let walk = match dataset::walk(
        &mut src,
        len.saturating_sub(offset),
        explicit,
        rules.wanted(),
        stop_after,
    ) {
        Ok(w) => w,
        Err(WalkError::Io(e)) => return Err(InspectError::Io(e)),
        Err(e) => {
            if rules.has_coercion() {
                out.refused = Some(format!("{e}: stored and forwarded unchanged"));
            }
            out.routing = rules.route(&ctx, &Values::new());
            return Ok(out);
        }
    };
    let values = values_of(&walk);
    let (changes, after) = rules.coerce(&ctx, &values);
    // One edit per element whose final value differs from the original.
    let mut skipped_tags = Vec::new();
    for (t, new) in &after {
        if values.get(t) == Some(new) {
            continue;
        }
        let std_vr = rules.target_vr(*t).unwrap_or(*b"LO");
        match walk.elements.iter().find(|e| e.tag == *t) {
            Some(ElementPos {
                vr, offset, len, ..
            }) => {
                let vr = vr.unwrap_or(std_vr);
                if !is_text_vr(&vr) || tag::check_value(&vr, new).is_err() {
                    // A VR other than the dictionary's: only write what that VR can hold.
                    out.skipped.push(format!(
                        "{}: the object holds it with VR {}, which cannot take the new value; left unchanged",
                        tag::describe(*t),
                        String::from_utf8_lossy(&vr)
                    ));
                    skipped_tags.push(*t);
                    continue;
                }
                out.edits.push(Edit {
                    tag: *t,
                    offset: *offset,
                    remove: *len,
                    bytes: encode_element(*t, vr, explicit, new),
                });
            }
            None => {
                let at = walk
                    .elements
                    .iter()
                    .find(|e| e.tag > *t)
                    .map(|e| e.offset)
                    .or(walk.reached_end.then_some(walk.end));
                match at {
                    Some(at) => out.edits.push(Edit {
                        tag: *t,
                        offset: at,
                        remove: 0,
                        bytes: encode_element(*t, std_vr, explicit, new),
                    }),
                    None => {
                        out.skipped.push(format!(
                            "{}: no place to insert it was found, left unchanged",
                            tag::describe(*t)
                        ));
                        skipped_tags.push(*t);
                    }
                }
            }
        }
    }
    out.edits.sort_by_key(|e| (e.offset, e.tag));
    out.changes = changes
        .into_iter()
        .filter(|c| !skipped_tags.contains(&c.tag))
        .collect();
    let mut routed = after;
    for t in &skipped_tags {
        match values.get(t) {
            Some(v) => routed.insert(*t, v.clone()),
            None => routed.remove(t),
        };
    }
    out.routing = rules.route(&ctx, &routed);
    Ok(out)
}

/// Copies `n` bytes.
fn copy_n<R: Read, W: Write>(src: &mut R, dst: &mut W, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut src.take(n), dst)?;
    if copied != n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the object is shorter than when it was inspected",
        ));
    }
    Ok(())
}

/// Streams the object from `src` to `dst` with the inspection's edits applied. Returns the
/// bytes written. Memory: the copy buffers, whatever the object's size.
pub fn write_coerced<R: Read + Seek, W: Write>(
    src: R,
    dst: W,
    inspection: &Inspection,
) -> io::Result<u64> {
    let mut src = io::BufReader::with_capacity(256 * 1024, src);
    src.seek(SeekFrom::Start(0))?;
    let mut dst = io::BufWriter::with_capacity(256 * 1024, dst);
    let mut pos = 0u64;
    let mut written = 0u64;
    for e in &inspection.edits {
        let at = inspection.dataset_offset + e.offset;
        copy_n(&mut src, &mut dst, at - pos)?;
        written += at - pos;
        dst.write_all(&e.bytes)?;
        written += e.bytes.len() as u64;
        if e.remove > 0 {
            src.seek_relative(i64::try_from(e.remove).unwrap_or(i64::MAX))?;
        }
        pos = at + e.remove;
    }
    written += io::copy(&mut src, &mut dst)?;
    dst.flush()?;
    Ok(written)
}
