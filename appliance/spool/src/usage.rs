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
    /// The fuller of: filesystem use and spool bytes against `max_bytes` (percent, 0-100).
    pub used_percent: f64,
}

/// Reads the filesystem's size and free space.
pub(crate) fn fs_space(path: &Path) -> std::io::Result<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let frsize = st.fragment_size() as u64;
    Ok((
        st.blocks() as u64 * frsize,
        st.blocks_available() as u64 * frsize,
    ))
}

/// The fuller of the two measures, in percent.
pub(crate) fn used_percent(spool_bytes: u64, max_bytes: u64, fs_total: u64, fs_free: u64) -> f64 {
    let fs = if fs_total == 0 {
        0.0
    } else {
        (fs_total.saturating_sub(fs_free)) as f64 * 100.0 / fs_total as f64
    };
    let cap = if max_bytes == 0 {
        0.0
    } else {
        spool_bytes as f64 * 100.0 / max_bytes as f64
    };
    fs.max(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent() {
        assert_eq!(used_percent(0, 0, 100, 40), 60.0);
        assert_eq!(used_percent(90, 100, 100, 90), 90.0);
        assert_eq!(used_percent(10, 0, 0, 0), 0.0);
    }
}
