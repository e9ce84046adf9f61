//! The appliance's durable spool.
//!
//! **What is on disk is the truth.** Every received object is a record appended to a segment
//! (`<data_dir>/spool/segments/`: preallocated files, recycled, see [`segment_format`] for the
//! layout) or, when it is larger than a segment, when no segment is ready, or when an earlier
//! version spooled it, one Part 10 file under `<data_dir>/spool/objects/`. Before the modality
//! hears "success" a record's header (id, length, CRC-32 of the bytes, the segment's nonce and
//! generation) and bytes are fdatasync'd; a file is fsync'd, renamed into place and its directory
//! fsync'd (concurrent renames share one directory fsync: group commit). sled
//! (`<data_dir>/index/`) holds the per-object records: where the bytes are, which destinations
//! still have to confirm it, quarantine reasons, and the peers that knocked. sled is not
//! power-loss durable, so it is treated as a cache of the truth: at start-up [`Spool::open`]
//! reconciles it with the disk, rebuilds it when it does not open, removes orphan temp files and
//! never deletes bytes it cannot account for.
//!
//! Invariants:
//! - a record of a segment or a file in `objects/` whose index entry is missing is re-indexed
//!   and sent again to every destination (at-least-once; the archive deduplicates by SOP
//!   Instance UID) — a segment record only if its bytes match its checksum: the torn tail of a
//!   kill -9 or a power cut is cut, never served;
//! - an index entry whose bytes are gone (file released before sled flushed, record marked dead,
//!   segment recycled) is dropped;
//! - bytes are deleted only when their record says every destination confirmed them; a segment
//!   is recycled only when none of its records is alive.
//!
//! The workflow services' state (storage commitment requests, worklist cache, quality checks)
//! cannot be rebuilt from the spool: it is kept apart, in [`WorkflowStore`]
//! (`<data_dir>/workflow/`), which an index rebuild never touches.

mod dirsync;
pub mod offline;
mod record;
pub mod segment_format;
mod segments;
mod store;
mod temp;
mod usage;
mod workflow_store;

pub use record::{ObjectRecord, PeerRecord, QuarantineEntry, SegmentSlot};
pub use segments::SegmentStats;
pub use store::{Admission, DEFAULT_SEGMENT_BYTES, ReconcileReport, Router, Spool, SpoolConfig};
pub use temp::{ObjectLocation, ObjectReader, TempObject};
pub use usage::Usage;
pub use workflow_store::{WorkflowStore, WorkflowStoreReport};

/// Errors of the spool. Each says what failed and where.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// On which path.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The index failed.
    #[error(
        "spool index (sled) failed: {0}; the spool files are intact, restart to rebuild the index"
    )]
    Index(#[from] sled::Error),
    /// A record could not be (de)serialised.
    #[error("spool index record is corrupt: {0}")]
    Record(#[from] serde_json::Error),
    /// Another process holds the index.
    #[error(
        "the spool index {0} is locked by another process: is another medgate-appliance running with this data_dir? Stop it first"
    )]
    Locked(std::path::PathBuf),
    /// An object id that is not in the spool.
    #[error("object {0} is not in the spool")]
    UnknownObject(u64),
}

impl SpoolError {
    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        SpoolError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether this error means the disk is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, SpoolError::Io { source, .. } if source.raw_os_error() == Some(nix::libc::ENOSPC) || source.raw_os_error() == Some(nix::libc::EDQUOT))
    }
}

/// Result alias.
pub type Result<T, E = SpoolError> = std::result::Result<T, E>;
