//! A streaming walk over the top-level elements of a data set (explicit or implicit VR little
//! endian): where each element starts and ends, and the values of the few elements the rules look
//! at. Sequences and encapsulated pixel data are stepped over (through their items and
//! delimiters), never decoded; memory stays bounded whatever the object's size.

use crate::tag::{TagNo, is_long_vr};
use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Seek};

const UNDEFINED: u32 = 0xFFFF_FFFF;
/// Values longer than this are not kept for conditions (they never match).
pub const MAX_VALUE: u32 = 64 * 1024;
/// Deepest nesting of sequences we follow.
const MAX_DEPTH: u32 = 64;

/// Why a data set cannot be walked.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// Reading failed.
    #[error("reading the object: {0}")]
    Io(#[from] io::Error),
    /// Not well-formed.
    #[error("malformed data set at byte {offset} of the data set: {reason}")]
    Malformed {
        /// Offset from the start of the data set.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
}

/// One top-level element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementPos {
    /// The tag.
    pub tag: TagNo,
    /// The VR written in the data set (explicit VR only).
    pub vr: Option<[u8; 2]>,
    /// Offset of its first byte, from the start of the data set.
    pub offset: u64,
    /// Bytes from its first byte to the first byte of the next element.
    pub len: u64,
    /// Its value length field (0xFFFFFFFF: undefined).
    pub value_len: u32,
}

/// What a walk found.
#[derive(Debug, Clone, Default)]
pub struct Walk {
    /// Top-level elements in file order, up to (and including) the first one past `stop_after`.
    pub elements: Vec<ElementPos>,
    /// Values (raw bytes) of the elements asked for, when present and not longer than [`MAX_VALUE`].
    pub values: BTreeMap<TagNo, Vec<u8>>,
    /// The walk reached the end of the data set (so an element can be appended at `end`).
    pub reached_end: bool,
    /// Offset where the walk stopped (the data set's length when `reached_end`).
    pub end: u64,
}

struct Reader<R> {
    r: BufReader<R>,
    pos: u64,
    len: u64,
    explicit: bool,
}

impl<R: Read + Seek> Reader<R> {
    fn malformed(&self, offset: u64, reason: &'static str) -> WalkError {
        WalkError::Malformed { offset, reason }
    }

    fn exact<const N: usize>(&mut self) -> Result<[u8; N], WalkError> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                self.malformed(self.pos, "data set ends inside an element")
            } else {
                WalkError::Io(e)
            }
        })?;
        self.pos += N as u64;
        Ok(b)
    }

    fn skip(&mut self, n: u64) -> Result<(), WalkError> {
        if self.pos.saturating_add(n) > self.len {
            return Err(self.malformed(self.pos, "data set ends inside an element"));
        }
        let n_i = i64::try_from(n).map_err(|_| self.malformed(self.pos, "value too long"))?;
        self.r.seek_relative(n_i)?;
        self.pos += n;
        Ok(())
    }

    fn at_end(&mut self) -> Result<bool, WalkError> {
        Ok(self.pos >= self.len || self.r.fill_buf()?.is_empty())
    }

    /// Reads an element header: (tag, vr, value length, header length). `explicit` says how
    /// the element is encoded (UN of undefined length switches its content to implicit).
    fn header(&mut self, explicit: bool) -> Result<(TagNo, Option<[u8; 2]>, u32), WalkError> {
        let start = self.pos;
        let t: [u8; 4] = self.exact()?;
        let group = u16::from_le_bytes([t[0], t[1]]);
        let element = u16::from_le_bytes([t[2], t[3]]);
        let tag = (u32::from(group) << 16) | u32::from(element);
        if group == 0xFFFE || !explicit {
            let l: [u8; 4] = self.exact()?;
            return Ok((tag, None, u32::from_le_bytes(l)));
        }
        let vr: [u8; 2] = self.exact()?;
        if !vr.iter().all(u8::is_ascii_uppercase) {
            return Err(self.malformed(start, "not a value representation"));
        }
        if is_long_vr(&vr) {
            let l: [u8; 6] = self.exact()?;
            Ok((tag, Some(vr), u32::from_le_bytes([l[2], l[3], l[4], l[5]])))
        } else {
            let l: [u8; 2] = self.exact()?;
            Ok((tag, Some(vr), u32::from(u16::from_le_bytes(l))))
        }
    }

    /// Steps over the content of an undefined-length sequence (items up to the sequence
    /// delimiter), or of an undefined-length item (elements up to the item delimiter).
    fn skip_undefined(
        &mut self,
        explicit: bool,
        in_item: bool,
        depth: u32,
    ) -> Result<(), WalkError> {
        if depth > MAX_DEPTH {
            return Err(self.malformed(self.pos, "sequences nested too deep"));
        }
        loop {
            let start = self.pos;
            let (tag, vr, len) = self.header(explicit)?;
            match tag {
                0xFFFE_E0DD if !in_item => return Ok(()),
                0xFFFE_E00D if in_item => return Ok(()),
                0xFFFE_E000 if !in_item => {
                    if len == UNDEFINED {
                        self.skip_undefined(explicit, true, depth + 1)?;
                    } else {
                        self.skip(u64::from(len))?;
                    }
                }
                _ if !in_item || tag >> 16 == 0xFFFE => {
                    return Err(self.malformed(start, "unexpected element in a sequence"));
                }
                _ if len == UNDEFINED => {
                    let inner_explicit = explicit && vr != Some(*b"UN");
                    self.skip_undefined(inner_explicit, false, depth + 1)?;
                }
                _ => self.skip(u64::from(len))?,
            }
        }
    }
}

/// Walks the data set read from `r` (positioned at its first byte, `len` bytes long). Keeps the
/// values of `wanted` tags and stops after the first element whose tag is above `stop_after`.
pub fn walk<R: Read + Seek>(
    r: R,
    len: u64,
    explicit: bool,
    wanted: &std::collections::BTreeSet<TagNo>,
    stop_after: TagNo,
) -> Result<Walk, WalkError> {
    let mut rd = Reader {
        r: BufReader::with_capacity(64 * 1024, r),
        pos: 0,
        len,
        explicit,
    };
    let mut out = Walk::default();
    let mut last = 0u32;
    loop {
        if rd.at_end()? {
            out.reached_end = true;
            out.end = rd.pos;
            return Ok(out);
        }
        let start = rd.pos;
        let (tag, vr, len) = rd.header(rd.explicit)?;
        let group = tag >> 16;
        if !(0x0008..0xFFFE).contains(&group) {
            return Err(rd.malformed(start, "not a data element at the top level"));
        }
        if tag < last {
            return Err(rd.malformed(start, "elements out of ascending tag order"));
        }
        last = tag;
        if len == UNDEFINED {
            let is_seq =
                vr.is_none_or(|v| &v == b"SQ" || &v == b"UN" || &v == b"OB" || &v == b"OW");
            if !is_seq {
                return Err(rd.malformed(start, "undefined length on a non-sequence"));
            }
            let inner_explicit = rd.explicit && vr != Some(*b"UN");
            rd.skip_undefined(inner_explicit, false, 0)?;
        } else if wanted.contains(&tag) && len <= MAX_VALUE {
            if rd.pos + u64::from(len) > rd.len {
                return Err(rd.malformed(start, "data set ends inside an element"));
            }
            let mut v = vec![0u8; len as usize];
            rd.r.read_exact(&mut v).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    rd.malformed(start, "data set ends inside an element")
                } else {
                    WalkError::Io(e)
                }
            })?;
            rd.pos += u64::from(len);
            out.values.insert(tag, v);
        } else {
            rd.skip(u64::from(len))?;
        }
        out.elements.push(ElementPos {
            tag,
            vr,
            offset: start,
            len: rd.pos - start,
            value_len: len,
        });
        if tag > stop_after {
            out.end = rd.pos;
            return Ok(out);
        }
    }
}

/// A value as text: trailing spaces and NULs and leading spaces removed.
pub fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v)
        .trim_end_matches(['\0', ' '])
        .trim_start()
        .to_string()
}
