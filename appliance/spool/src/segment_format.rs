//! The on-disk format of spool segments, pure: encoding and checking of the segment header and
//! of the record headers. No IO here; [`crate::segments`] does the reading and writing.
//!
//! A segment is a file of a fixed size, allocated whole once when it is made, then reused
//! ("recycled") for as long as the spool lives: appending an object to it writes blocks that are
//! already allocated (and, from its second life on, already written), so its fdatasync flushes
//! data and at most an extent conversion — no new inode, no directory entry, no rename: the way
//! the disk takes durable writes fastest (docs/benchmarks.md, "Spool design: measured").
//!
//! ```text
//! block 0            segment header: magic, nonce, generation, number, size, CRC
//! block 1 ..         records, each: one header block, then the object's bytes, padded to a block
//!                    header: magic, nonce, generation, id, length, flags, CRC of the bytes, CRC
//! ```
//! Every recycling gives the segment a new generation and a new random nonce. A record header
//! counts only if its nonce and generation are the segment's, its own CRC holds, and (for a record
//! the index does not know) the CRC of its bytes: so a record of an earlier life, the bytes of an
//! object whose header never made it to disk (kill -9, power cut: a torn tail), and object bytes
//! that happen to look like a header (a sender cannot know the nonce) are all told apart.

/// The unit of layout: headers and object starts are aligned to it.
pub const BLOCK: u64 = 4096;
/// [`BLOCK`] as a buffer length.
pub const BLOCK_LEN: usize = 4096;

const SEGMENT_MAGIC: &[u8; 8] = b"MGSPSEG1";
const RECORD_MAGIC: &[u8; 8] = b"MGSPREC1";
const SEGMENT_HEADER_LEN: usize = 44;
const RECORD_HEADER_LEN: usize = 56;

/// Record flag: the object was deleted and its bytes given back to the filesystem.
pub const FLAG_DEAD: u32 = 1;

/// A segment's identity in this life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Random per life: a record header must carry it.
    pub nonce: u64,
    /// Counts the lives (recyclings) of this segment.
    pub generation: u64,
    /// The segment's number (its file name).
    pub number: u32,
    /// The file's size in bytes.
    pub size: u64,
}

/// One record's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// The segment's nonce in the life the record was written.
    pub nonce: u64,
    /// The segment's generation then.
    pub generation: u64,
    /// The object's spool id.
    pub id: u64,
    /// The object's length in bytes (the Part 10 file as it would be on its own).
    pub len: u64,
    /// [`FLAG_DEAD`] or 0.
    pub flags: u32,
    /// CRC-32 of the object's bytes.
    pub data_crc: u32,
}

fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

impl SegmentHeader {
    /// The header block (one [`BLOCK`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_LEN];
        b[0..8].copy_from_slice(SEGMENT_MAGIC);
        b[8..16].copy_from_slice(&self.nonce.to_le_bytes());
        b[16..24].copy_from_slice(&self.generation.to_le_bytes());
        b[24..28].copy_from_slice(&self.number.to_le_bytes());
        b[28..36].copy_from_slice(&self.size.to_le_bytes());
        let c = crc(&b[..36]);
        b[36..40].copy_from_slice(&c.to_le_bytes());
        b
    }

    /// Reads a header block; `None` when it is not one (torn, zeros, another file).
    pub fn decode(b: &[u8]) -> Option<SegmentHeader> {
        if b.len() < SEGMENT_HEADER_LEN || &b[0..8] != SEGMENT_MAGIC {
            return None;
        }
        if u32_at(b, 36) != crc(&b[..36]) {
            return None;
        }
        Some(SegmentHeader {
            nonce: u64_at(b, 8),
            generation: u64_at(b, 16),
            number: u32_at(b, 24),
            size: u64_at(b, 28),
        })
    }
}

impl RecordHeader {
    /// The header block (one [`BLOCK`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_LEN];
        b[0..8].copy_from_slice(RECORD_MAGIC);
        b[8..16].copy_from_slice(&self.nonce.to_le_bytes());
        b[16..24].copy_from_slice(&self.generation.to_le_bytes());
        b[24..32].copy_from_slice(&self.id.to_le_bytes());
        b[32..40].copy_from_slice(&self.len.to_le_bytes());
        b[40..44].copy_from_slice(&self.flags.to_le_bytes());
        b[44..48].copy_from_slice(&self.data_crc.to_le_bytes());
        let c = crc(&b[..48]);
        b[48..52].copy_from_slice(&c.to_le_bytes());
        b
    }

    /// Reads a record header of the segment `seg`'s current life; `None` when the block holds
    /// none (end of the records, a torn header, a record of an earlier life, object bytes).
    pub fn decode(b: &[u8], seg: &SegmentHeader) -> Option<RecordHeader> {
        if b.len() < RECORD_HEADER_LEN || &b[0..8] != RECORD_MAGIC {
            return None;
        }
        if u32_at(b, 48) != crc(&b[..48]) {
            return None;
        }
        let h = RecordHeader {
            nonce: u64_at(b, 8),
            generation: u64_at(b, 16),
            id: u64_at(b, 24),
            len: u64_at(b, 32),
            flags: u32_at(b, 40),
            data_crc: u32_at(b, 44),
        };
        let fits = h
            .len
            .checked_add(BLOCK)
            .is_some_and(|n| n <= seg.size.saturating_sub(BLOCK));
        (h.nonce == seg.nonce && h.generation == seg.generation && fits).then_some(h)
    }

    /// Whether the object was deleted.
    pub fn is_dead(&self) -> bool {
        self.flags & FLAG_DEAD != 0
    }
}

/// `n` rounded up to a whole number of blocks.
pub fn align_up(n: u64) -> u64 {
    n.div_ceil(BLOCK).saturating_mul(BLOCK)
}

/// The bytes a record of `len` object bytes takes: its header block and its padded bytes.
pub fn span(len: u64) -> u64 {
    BLOCK.saturating_add(align_up(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg() -> SegmentHeader {
        SegmentHeader {
            nonce: 0x1234_5678_9abc_def0,
            generation: 3,
            number: 7,
            size: 16 << 20,
        }
    }

    fn rec() -> RecordHeader {
        RecordHeader {
            nonce: seg().nonce,
            generation: 3,
            id: 42,
            len: 530_000,
            flags: 0,
            data_crc: 0xdead_beef,
        }
    }

    #[test]
    fn headers_round_trip() {
        assert_eq!(SegmentHeader::decode(&seg().encode()), Some(seg()));
        assert_eq!(RecordHeader::decode(&rec().encode(), &seg()), Some(rec()));
    }

    #[test]
    fn any_flipped_bit_or_another_life_is_no_header() {
        let good = rec().encode();
        for byte in 0..52 {
            let mut b = good.clone();
            b[byte] ^= 0x10;
            assert_eq!(RecordHeader::decode(&b, &seg()), None, "byte {byte}");
        }
        let older = SegmentHeader {
            generation: 2,
            ..seg()
        };
        assert_eq!(RecordHeader::decode(&good, &older), None);
        let other = SegmentHeader { nonce: 1, ..seg() };
        assert_eq!(RecordHeader::decode(&good, &other), None);
        assert_eq!(RecordHeader::decode(&[0u8; 4096], &seg()), None);
        let mut s = seg().encode();
        s[30] ^= 1;
        assert_eq!(SegmentHeader::decode(&s), None);
    }

    #[test]
    fn a_record_longer_than_its_segment_is_no_header() {
        let long = RecordHeader {
            len: 16 << 20,
            ..rec()
        };
        assert_eq!(RecordHeader::decode(&long.encode(), &seg()), None);
    }

    #[test]
    fn spans_are_whole_blocks() {
        assert_eq!(span(0), 4096);
        assert_eq!(span(1), 8192);
        assert_eq!(span(4096), 8192);
        assert_eq!(span(4097), 12288);
    }
}
