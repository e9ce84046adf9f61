//! An object being received, and where a stored object's bytes are.
//!
//! [`TempObject`] takes the object's bytes as they arrive: into the next record of a lane (a
//! segment lent to it), or — when no segment is ready, or the object outgrows the lane's room, in
//! which case the bytes written so far are copied over — into a file of its own in `spool/tmp/`.
//! Memory: nothing but the bytes of the current write.

use crate::segment_format::BLOCK;
use crate::segments::{Lane, Segments};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Writeback of an object being received is started every this many bytes, so that the
/// fdatasync at its end has little left to write.
const WRITEBACK_EVERY: u64 = 256 * 1024;

/// Starts writeback of a range just written, without waiting for it. (POSIX_FADV_DONTNEED
/// starts writeback of dirty pages and drops only pages already clean.)
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let _ = nix::fcntl::posix_fadvise(
        file.as_raw_fd(),
        i64::try_from(offset).unwrap_or(i64::MAX),
        i64::try_from(len).unwrap_or(i64::MAX),
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
}

#[derive(Debug)]
pub(crate) enum Sink {
    /// The next record of a lane; the bytes start one block after the lane's tail.
    Lane {
        lane: Lane,
        crc: crc32fast::Hasher,
        /// Where the object goes if it outgrows the lane.
        spill: PathBuf,
    },
    /// A file of its own.
    File { path: PathBuf, file: File },
    /// Nothing (after a failed spill, or once committed or discarded).
    Gone,
}

/// An object being received: write its bytes ([`std::io::Write`]), then commit it to the spool
/// or discard it. Dropped without either, it is discarded.
#[derive(Debug)]
pub struct TempObject {
    /// The id it will have.
    pub id: u64,
    pub(crate) sink: Sink,
    pub(crate) written: u64,
    unflushed: u64,
    segs: Arc<Segments>,
}

impl TempObject {
    pub(crate) fn new(id: u64, sink: Sink, segs: Arc<Segments>) -> TempObject {
        TempObject {
            id,
            sink,
            written: 0,
            unflushed: 0,
            segs,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.written
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// Where the bytes written so far are (to read them back before the commit).
    pub fn location(&self) -> Option<ObjectLocation> {
        match &self.sink {
            Sink::Lane { lane, .. } => Some(ObjectLocation {
                path: lane.seg.path.clone(),
                offset: lane.tail + BLOCK,
                len: self.written,
            }),
            Sink::File { path, .. } => Some(ObjectLocation {
                path: path.clone(),
                offset: 0,
                len: self.written,
            }),
            Sink::Gone => None,
        }
    }

    /// Moves the bytes written so far from the lane to a file of their own; the lane goes back
    /// as it was (nothing was committed in it).
    fn spill(&mut self) -> std::io::Result<()> {
        let Sink::Lane { lane, spill, .. } = std::mem::replace(&mut self.sink, Sink::Gone) else {
            return Ok(());
        };
        let copied = (|| -> std::io::Result<File> {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&spill)?;
            let mut buf = vec![0u8; 256 * 1024];
            let (base, mut at) = (lane.tail + BLOCK, 0u64);
            while at < self.written {
                let n =
                    usize::try_from((self.written - at).min(buf.len() as u64)).unwrap_or(buf.len());
                lane.seg.file.read_exact_at(&mut buf[..n], base + at)?;
                file.write_all_at(&buf[..n], at)?;
                at += n as u64;
            }
            Ok(file)
        })();
        self.segs.give_back(lane, 0, false);
        match copied {
            Ok(file) => {
                self.sink = Sink::File { path: spill, file };
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&spill);
                Err(e)
            }
        }
    }

    /// Takes the sink out (commit or discard); the object is then gone.
    pub(crate) fn take_sink(&mut self) -> Sink {
        std::mem::replace(&mut self.sink, Sink::Gone)
    }

    /// The segments its lane goes back to.
    pub(crate) fn segments(&self) -> &Arc<Segments> {
        &self.segs
    }

    /// Drops the bytes: a lane goes back untouched, a file is removed.
    pub(crate) fn drop_bytes(&mut self) {
        match self.take_sink() {
            Sink::Lane { lane, .. } => self.segs.give_back(lane, 0, false),
            Sink::File { path, file } => {
                drop(file);
                if let Err(e) = std::fs::remove_file(&path) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(path = %path.display(), error = %e, "could not remove temp file; it is removed at next start");
                    }
                }
            }
            Sink::Gone => {}
        }
    }
}

impl Drop for TempObject {
    fn drop(&mut self) {
        self.drop_bytes();
    }
}

impl Write for TempObject {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.write_all(data).map(|()| data.len())
    }

    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        if let Sink::Lane { lane, .. } = &self.sink {
            if self.written.saturating_add(data.len() as u64) > lane.room() {
                self.spill()?;
            }
        }
        let at = self.written;
        let (file, base) = match &mut self.sink {
            Sink::Lane { lane, crc, .. } => {
                let base = lane.tail + BLOCK;
                lane.seg.file.write_all_at(data, base + at)?;
                crc.update(data);
                (&lane.seg.file, base)
            }
            Sink::File { file, .. } => {
                file.write_all_at(data, at)?;
                (&*file, 0)
            }
            Sink::Gone => {
                return Err(std::io::Error::other(
                    "the object's bytes were dropped after an earlier write failed",
                ));
            }
        };
        self.written += data.len() as u64;
        self.unflushed += data.len() as u64;
        if self.unflushed >= WRITEBACK_EVERY {
            start_writeback(file, base + self.written - self.unflushed, self.unflushed);
            self.unflushed = 0;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where a stored object's bytes are: a range of a segment, or a whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectLocation {
    /// The file.
    pub path: PathBuf,
    /// Where in it the object starts.
    pub offset: u64,
    /// Its length in bytes.
    pub len: u64,
}

impl ObjectLocation {
    /// Opens the object for reading: positioned at its first byte, ending at its last.
    pub fn open(&self) -> std::io::Result<ObjectReader> {
        let file = File::open(&self.path)?;
        Ok(ObjectReader {
            file,
            base: self.offset,
            len: self.len,
            pos: 0,
        })
    }

    /// The path, for messages.
    pub fn display(&self) -> std::path::Display<'_> {
        self.path.display()
    }

    /// The file it is in.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads one object's bytes (a [`Read`] + [`Seek`] view of its range).
#[derive(Debug)]
pub struct ObjectReader {
    file: File,
    base: u64,
    len: u64,
    pos: u64,
}

impl ObjectReader {
    /// The object's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the object is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        if n == 0 {
            return Ok(0);
        }
        let k = self.file.read_at(&mut buf[..n], self.base + self.pos)?;
        self.pos += k as u64;
        Ok(k)
    }
}

impl Seek for ObjectReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let Some(t) = target else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the object's start",
            ));
        };
        self.pos = t;
        Ok(t)
    }
}
