//! Space accounting: the filesystem's use and the spool's own bytes, against the watermarks.

use serde::Serialize;
use std::path::Path;

/// How full the spool is.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Usage {
    /// Bytes of the spool's object files.
    pub spool_bytes: u64,
    /// Number of objects in the spool.
    pub objects: u64,
    /// Filesystem size in bytes.
    pub fs_total_bytes: u64,
    /// Bytes available to us on the filesystem.
    pub fs_free_bytes: u64,
    /// Bytes in use on the filesystem (by everything on it, not only the spool).
    pub fs_used_bytes: u64,
    /// The filesystem's use as `df` shows it (percent, 0-100): used against used + available,
    /// so blocks reserved for root (or otherwise not ours) count as neither.
    pub fs_used_percent: f64,
    /// The spool's own bytes against `spool.max_bytes` (percent), when a cap is set.
    pub cap_used_percent: Option<f64>,
    /// The fuller of the two: what the watermarks are compared with (percent, 0-100).
    pub used_percent: f64,
}

/// The filesystem's space: size, available to us, in use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FsSpace {
    pub total: u64,
    pub available: u64,
    pub used: u64,
}

/// Reads the filesystem's size, available and used space.
pub(crate) fn fs_space(path: &Path) -> std::io::Result<FsSpace> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let frsize = st.fragment_size() as u64;
    let blocks = st.blocks() as u64;
    Ok(FsSpace {
        total: blocks * frsize,
        available: st.blocks_available() as u64 * frsize,
        used: blocks.saturating_sub(st.blocks_free() as u64) * frsize,
    })
}

/// The filesystem's use, in percent, as `df` computes it: used / (used + available).
pub(crate) fn fs_used_percent(fs: FsSpace) -> f64 {
    let usable = fs.used + fs.available;
    if usable == 0 {
        0.0
    } else {
        fs.used as f64 * 100.0 / usable as f64
    }
}

/// The spool's bytes against its cap, in percent (none without a cap).
pub(crate) fn cap_used_percent(spool_bytes: u64, max_bytes: u64) -> Option<f64> {
    (max_bytes > 0).then(|| spool_bytes as f64 * 100.0 / max_bytes as f64)
}

/// The fuller of the two measures, in percent.
pub(crate) fn used_percent(spool_bytes: u64, max_bytes: u64, fs: FsSpace) -> f64 {
    fs_used_percent(fs).max(cap_used_percent(spool_bytes, max_bytes).unwrap_or(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent() {
        let fs = |total, available, used| FsSpace {
            total,
            available,
            used,
        };
        assert_eq!(used_percent(0, 0, fs(100, 40, 60)), 60.0);
        assert_eq!(used_percent(90, 100, fs(100, 90, 10)), 90.0);
        assert_eq!(used_percent(10, 0, FsSpace::default()), 0.0);
        // 50 blocks reserved for root: df's 25 / (25 + 25) = 50 %, not (100 - 25) / 100.
        assert_eq!(used_percent(0, 0, fs(100, 25, 25)), 50.0);
    }
}
