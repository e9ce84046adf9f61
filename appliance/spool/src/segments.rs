//! The segment files: made and recycled off the receiving path by a preparer thread, lent to
//! incoming objects as lanes (one object at a time per lane, appended at the lane's tail), walked
//! at start-up, and given back to the filesystem when their objects are deleted.
//!
//! Invariants:
//! - a `.seg` file exists only once it was allocated whole, its header fdatasync'd and its name
//!   made durable; the receiving path never creates or grows a file in `segments/`;
//! - a record's header is written and fdatasync'd with its bytes before the object is
//!   acknowledged; records of one segment are appended one after the other (one lane holds a
//!   segment at a time), so from the last record the index knows, the next records follow
//!   contiguously until a block that is no header of this life;
//! - a deleted record keeps its header, marked dead (fdatasync'd before its bytes are punched out
//!   of the file), so a walk steps over it and an index entry that outlived the deletion is
//!   recognised as stale;
//! - a segment is recycled (new generation and nonce, holes refilled) only once none of its
//!   records is alive and no lane holds it.

use crate::segment_format::{BLOCK, BLOCK_LEN, RecordHeader, SegmentHeader, align_up, span};
use crate::{Result, SpoolError};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Segments kept ready (allocated, empty) for new lanes, at least.
const READY_TARGET: usize = 4;
/// While the spool is idle, up to this many ready segments are kept, and written through with
/// zeros ("warm"): a burst then lands on blocks that are already written, whose fdatasync flushes
/// data only (measured here: ~2× the durable rate of freshly allocated blocks).
const WARM_MAX: usize = 64;
/// ... and at most this share of the filesystem (per cent).
const WARM_SHARE_PERCENT: u64 = 5;
/// The spool counts as idle once no lane was taken for this long.
const IDLE_AFTER: Duration = Duration::from_millis(1000);
/// A lane with less room than this for object bytes is sealed: its next object would likely
/// not fit.
fn min_room(size: u64) -> u64 {
    (size / 8).max(BLOCK)
}

/// One segment file in its current life.
#[derive(Debug)]
pub(crate) struct SegFile {
    pub(crate) header: SegmentHeader,
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    /// Every block is allocated and written (no hole, no unwritten extent).
    pub(crate) written: AtomicBool,
}

/// A segment lent to one incoming object at a time.
#[derive(Debug)]
pub(crate) struct Lane {
    pub(crate) seg: Arc<SegFile>,
    /// Where the next record's header goes.
    pub(crate) tail: u64,
}

impl Lane {
    /// Bytes of object data the next record can hold.
    pub(crate) fn room(&self) -> u64 {
        self.seg
            .header
            .size
            .saturating_sub(self.tail)
            .saturating_sub(BLOCK)
    }
}

#[derive(Debug)]
struct Meta {
    seg: Arc<SegFile>,
    live: u64,
    in_lane: bool,
}

#[derive(Debug, Default)]
struct Inner {
    /// Segments holding records, or lent as lanes, by number.
    used: HashMap<u32, Meta>,
    ready: Vec<Arc<SegFile>>,
    idle: Vec<Lane>,
    /// Sealed segments with no live record, for the preparer.
    recycle: Vec<Arc<SegFile>>,
    next_number: u32,
    stop: bool,
    /// When a lane was last taken.
    last_take: Option<Instant>,
    /// How many segments to keep ready while idle.
    warm_target: usize,
}

/// The segment files, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SegmentStats {
    /// Holding records or lent to an incoming object.
    pub in_use: u64,
    /// Ready, written through (a burst lands on written blocks).
    pub ready_warm: u64,
    /// Ready, allocated only.
    pub ready_cold: u64,
    /// Dead, waiting for their next life.
    pub recycling: u64,
}

/// What deleting a record asks of the caller.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Removal {
    /// Others still live in the segment: mark the record dead and punch its bytes out.
    Punch,
    /// It was the segment's last: the segment is recycled whole; nothing to do per record.
    Recycled,
}

/// A record found by walking a segment.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) offset: u64,
    pub(crate) header: RecordHeader,
    /// Its bytes match its CRC (only checked when asked).
    pub(crate) intact: bool,
}

/// The segment files of one spool.
#[derive(Debug)]
pub(crate) struct Segments {
    dir: PathBuf,
    size: u64,
    inner: Mutex<Inner>,
    wake: Condvar,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SpoolError + 'a {
    move |e| SpoolError::io(op, path, e)
}

fn seg_path(dir: &Path, number: u32) -> PathBuf {
    dir.join(format!("{number:08x}.seg"))
}

static ZEROS: [u8; 1 << 16] = [0u8; 1 << 16];

fn write_zeros(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let mut at = from;
    while at < to {
        let n = usize::try_from((to - at).min(ZEROS.len() as u64)).unwrap_or(ZEROS.len());
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Fills every hole of `file` below `size` with zeros: blocks punched out of a segment are
/// allocated and written again before it is reused.
fn refill_holes(file: &File, size: u64) -> std::io::Result<()> {
    use nix::unistd::{Whence, lseek};
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let mut pos: u64 = 0;
    while pos < size {
        let at = i64::try_from(pos).unwrap_or(i64::MAX);
        let hole = match lseek(fd, at, Whence::SeekHole) {
            Ok(h) => u64::try_from(h).unwrap_or(size),
            Err(e) => return Err(std::io::Error::from(e)),
        };
        if hole >= size {
            break;
        }
        let data = match lseek(
            fd,
            i64::try_from(hole).unwrap_or(i64::MAX),
            Whence::SeekData,
        ) {
            Ok(d) => u64::try_from(d).unwrap_or(size).min(size),
            Err(nix::errno::Errno::ENXIO) => size,
            Err(e) => return Err(std::io::Error::from(e)),
        };
        write_zeros(file, hole, data)?;
        pos = data.max(hole + 1);
    }
    Ok(())
}

/// Whether every block of `file` below `size` is written (ext4 and xfs report unwritten
/// extents as holes too).
fn fully_written(file: &File, size: u64) -> bool {
    use nix::unistd::{Whence, lseek};
    use std::os::fd::AsRawFd;
    lseek(file.as_raw_fd(), 0, Whence::SeekHole)
        .ok()
        .and_then(|h| u64::try_from(h).ok())
        .is_some_and(|h| h >= size)
}

/// Gives `file` its blocks up to `size` (a new segment, or one whose dead records were punched
/// out): reserved as unwritten extents, which read as zeros and cost no data write — the first
/// fdatasync after writing into one also commits its conversion. Where the filesystem cannot,
/// the holes are written with zeros.
fn allocate(file: &File, size: u64) -> std::io::Result<()> {
    use nix::fcntl::{FallocateFlags, fallocate};
    use std::os::fd::AsRawFd;
    let len = i64::try_from(size).unwrap_or(i64::MAX);
    match fallocate(file.as_raw_fd(), FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP) => {
            if file.metadata()?.len() < size {
                file.set_len(size)?;
            }
            refill_holes(file, size)
        }
        Err(e) => Err(std::io::Error::from(e)),
    }
}

/// How many segments to keep ready while idle: `warm_bytes`, at most [`WARM_SHARE_PERCENT`] of
/// the filesystem and [`WARM_MAX`] segments.
fn warm_target(dir: &Path, size: u64, warm_bytes: u64) -> usize {
    let total = crate::usage::fs_space(dir).map(|f| f.total).unwrap_or(0);
    let n = (total / 100 * WARM_SHARE_PERCENT).min(warm_bytes) / size.max(1);
    usize::try_from(n).unwrap_or(WARM_MAX).min(WARM_MAX)
}

fn punch(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use nix::fcntl::{FallocateFlags, fallocate};
    use std::os::fd::AsRawFd;
    if len == 0 {
        return Ok(());
    }
    fallocate(
        file.as_raw_fd(),
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        i64::try_from(offset).unwrap_or(i64::MAX),
        i64::try_from(len).unwrap_or(i64::MAX),
    )
    .map_err(std::io::Error::from)
}

fn nonce() -> u64 {
    // Not a secret: only unpredictable to a sender, so that object bytes cannot pass for a header.
    let mut b = [0u8; 8];
    if File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ u32::try_from(d.as_secs() & 0xffff_ffff).unwrap_or(0))
            .unwrap_or(0);
        b = ((u64::from(t) << 32) | u64::from(std::process::id())).to_le_bytes();
    }
    u64::from_le_bytes(b)
}

impl Segments {
    /// Opens `dir`: removes unfinished segments (`.tmp`), reads every segment's header, moves a
    /// segment whose header does not read to `damaged_dir`. Returns the segments for the walk.
    pub(crate) fn open(
        dir: &Path,
        damaged_dir: &Path,
        size: u64,
        warm_bytes: u64,
    ) -> Result<(Segments, Vec<Arc<SegFile>>)> {
        fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        let mut found = Vec::new();
        let mut next_number = 0u32;
        for entry in fs::read_dir(dir).map_err(io("list", dir))? {
            let path = entry.map_err(io("list", dir))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.ends_with(".tmp") {
                fs::remove_file(&path).map_err(io("remove unfinished segment", &path))?;
                continue;
            }
            let Some(number) = name
                .strip_suffix(".seg")
                .and_then(|n| u32::from_str_radix(n, 16).ok())
            else {
                tracing::warn!(path = %path.display(), "unexpected file among the spool segments, left alone");
                continue;
            };
            next_number = next_number.max(number.saturating_add(1));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io("open segment", &path))?;
            let mut head = vec![0u8; BLOCK_LEN];
            let header = file
                .read_exact_at(&mut head, 0)
                .ok()
                .and_then(|()| SegmentHeader::decode(&head));
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            match header {
                Some(h) if h.number == number => {
                    if len != h.size {
                        // Not something a torn write does to a preallocated file: say so, read
                        // what is there, refill it before reuse.
                        tracing::error!(path = %path.display(), len, size = h.size, "spool segment is not its recorded size; reading the records it still holds");
                    }
                    let written = AtomicBool::new(fully_written(&file, h.size));
                    found.push(Arc::new(SegFile {
                        header: h,
                        file,
                        path,
                        written,
                    }));
                }
                _ => {
                    let to = damaged_dir.join(name);
                    tracing::error!(path = %path.display(), moved_to = %to.display(), "spool segment without a valid header; moved aside, not deleted");
                    fs::rename(&path, &to).map_err(io("move damaged segment", &path))?;
                }
            }
        }
        let segs = Segments {
            dir: dir.to_path_buf(),
            size,
            inner: Mutex::new(Inner {
                next_number,
                warm_target: warm_target(dir, size, warm_bytes),
                ..Inner::default()
            }),
            wake: Condvar::new(),
        };
        Ok((segs, found))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After the start-up walk: the segments and how many live records each holds. Every one is
    /// sealed (appending resumes in fresh lanes); those without a live record are recycled.
    pub(crate) fn install(&self, found: Vec<(Arc<SegFile>, u64)>) {
        let mut inner = self.lock();
        for (seg, live) in found {
            if live == 0 {
                inner.recycle.push(seg);
            } else {
                inner.used.insert(
                    seg.header.number,
                    Meta {
                        seg,
                        live,
                        in_lane: false,
                    },
                );
            }
        }
        drop(inner);
        self.wake.notify_all();
    }

    /// A lane for one incoming object: an idle one, or a ready segment; `None` when none is
    /// ready (the object then goes to a file of its own).
    pub(crate) fn take_lane(&self) -> Option<Lane> {
        let mut inner = self.lock();
        inner.last_take = Some(Instant::now());
        if let Some(lane) = inner.idle.pop() {
            return Some(lane);
        }
        // A warm one first.
        let at = inner
            .ready
            .iter()
            .rposition(|s| s.written.load(Ordering::Relaxed));
        let seg = match at {
            Some(i) => Some(inner.ready.swap_remove(i)),
            None => inner.ready.pop(),
        };
        drop(inner);
        self.wake.notify_all();
        let seg = seg?;
        let mut inner = self.lock();
        inner.used.insert(
            seg.header.number,
            Meta {
                seg: seg.clone(),
                live: 0,
                in_lane: true,
            },
        );
        Some(Lane { seg, tail: BLOCK })
    }

    /// The object of `lane` is done (committed with `added` records, or discarded). The lane
    /// goes back to the idle ones, or is sealed when it has little room left or `seal` is set
    /// (after a write error its tail is not trusted).
    pub(crate) fn give_back(&self, lane: Lane, added: u64, seal: bool) {
        let mut inner = self.lock();
        let number = lane.seg.header.number;
        let sealed = seal || lane.room() < min_room(self.size);
        if let Some(m) = inner.used.get_mut(&number) {
            m.live += added;
            if sealed {
                m.in_lane = false;
            }
        }
        if !sealed {
            inner.idle.push(lane);
            return;
        }
        let dead = inner.used.get(&number).is_some_and(|m| m.live == 0);
        if dead {
            if let Some(m) = inner.used.remove(&number) {
                inner.recycle.push(m.seg);
            }
            drop(inner);
            self.wake.notify_all();
        }
    }

    /// The segment of a record being deleted; what to do with the record.
    pub(crate) fn remove_record(&self, number: u32) -> Option<(Arc<SegFile>, Removal)> {
        let mut inner = self.lock();
        let m = inner.used.get_mut(&number)?;
        m.live = m.live.saturating_sub(1);
        let seg = m.seg.clone();
        if m.live > 0 || m.in_lane {
            return Some((seg, Removal::Punch));
        }
        inner.used.remove(&number);
        inner.recycle.push(seg.clone());
        drop(inner);
        self.wake.notify_all();
        Some((seg, Removal::Recycled))
    }

    /// Where segment `number`'s file is.
    pub(crate) fn path_of(&self, number: u32) -> PathBuf {
        seg_path(&self.dir, number)
    }

    /// How many segment files there are, by state.
    pub(crate) fn stats(&self) -> SegmentStats {
        let inner = self.lock();
        let warm = inner
            .ready
            .iter()
            .filter(|s| s.written.load(Ordering::Relaxed))
            .count() as u64;
        SegmentStats {
            in_use: inner.used.len() as u64,
            ready_warm: warm,
            ready_cold: inner.ready.len() as u64 - warm,
            recycling: inner.recycle.len() as u64,
        }
    }

    /// Gives back to the filesystem the ready segments beyond the few the next objects need
    /// (the spool is full: its warm pool must not cost a modality an A700). Returns the bytes.
    pub(crate) fn trim_ready(&self) -> u64 {
        let extra: Vec<Arc<SegFile>> = {
            let mut inner = self.lock();
            // Cold ones first, warm ones last.
            inner
                .ready
                .sort_by_key(|s| std::cmp::Reverse(s.written.load(Ordering::Relaxed)));
            let keep = READY_TARGET.min(inner.ready.len());
            inner.ready.split_off(keep)
        };
        let mut freed = 0;
        for seg in extra {
            match fs::remove_file(&seg.path) {
                Ok(()) => freed += seg.header.size,
                Err(e) => {
                    tracing::warn!(path = %seg.path.display(), error = %e, "could not give a ready segment back");
                }
            }
        }
        freed
    }

    /// Stops the preparer.
    pub(crate) fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_all();
    }

    /// The preparer's loop (its own thread): keeps [`READY_TARGET`] segments ready, recycling
    /// dead ones first and making new ones only when none is dead, and gives back to the
    /// filesystem dead segments beyond that. `may_grow` says whether the disk has room for one
    /// more segment.
    pub(crate) fn prepare_loop(&self, may_grow: &dyn Fn(u64) -> bool) {
        while let Some(job) = self.next_job(true) {
            if let Err(e) = self.run(job, may_grow) {
                if !e.is_disk_full() {
                    tracing::error!(error = %e, "preparing a spool segment failed; objects go to files of their own meanwhile");
                }
                let inner = self.lock();
                let _ = self
                    .wake
                    .wait_timeout(inner, Duration::from_secs(2))
                    .unwrap_or_else(|p| p.into_inner());
            }
        }
    }

    /// Makes one segment ready now, if none is (at start-up, so that the first objects already
    /// go to a segment).
    pub(crate) fn prepare_now(&self, may_grow: &dyn Fn(u64) -> bool) -> Result<()> {
        while self.lock().ready.is_empty() {
            let Some(job) = self.next_job(false) else {
                break;
            };
            self.run(job, may_grow)?;
        }
        Ok(())
    }

    /// The next thing to do; waits for one when `wait` (`None`: stopped, or nothing to do).
    fn next_job(&self, wait: bool) -> Option<Job> {
        let mut inner = self.lock();
        loop {
            if inner.stop {
                return None;
            }
            let idle = inner.last_take.is_none_or(|t| t.elapsed() >= IDLE_AFTER);
            let target = if idle {
                inner.warm_target.max(READY_TARGET)
            } else {
                READY_TARGET
            };
            let want = inner.ready.len() < target;
            if let Some(seg) = inner.recycle.pop() {
                // A segment of another size than configured (spool.segment_mib changed) ends
                // with its life: the pool moves to the new size as its segments die.
                return Some(if want && seg.header.size == self.size {
                    Job::Recycle(seg)
                } else {
                    Job::Remove(seg)
                });
            }
            if want && (inner.ready.len() < READY_TARGET || wait) {
                let n = inner.next_number;
                inner.next_number = n.wrapping_add(1);
                return Some(Job::Make(n));
            }
            if idle && wait {
                // Taken out of the ready ones while it is written: no lane may get it meanwhile.
                if let Some(i) = inner
                    .ready
                    .iter()
                    .position(|s| !s.written.load(Ordering::Relaxed))
                {
                    return Some(Job::Warm(inner.ready.swap_remove(i)));
                }
            }
            if !wait {
                return None;
            }
            inner = self
                .wake
                .wait_timeout(inner, IDLE_AFTER)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn run(&self, job: Job, may_grow: &dyn Fn(u64) -> bool) -> Result<()> {
        let seg = match job {
            Job::Recycle(seg) => {
                let next = self.recycle(&seg);
                if next.is_err() {
                    // Tried again later.
                    self.lock().recycle.push(seg);
                }
                next?
            }
            Job::Remove(seg) => {
                return fs::remove_file(&seg.path)
                    .map_err(io("give a dead segment back", &seg.path));
            }
            Job::Warm(seg) => {
                let warmed = refill_holes(&seg.file, seg.header.size)
                    .and_then(|()| seg.file.sync_data())
                    .map_err(io("warm a segment", &seg.path));
                seg.written.store(warmed.is_ok(), Ordering::Relaxed);
                self.lock().ready.push(seg);
                return warmed;
            }
            Job::Make(n) if may_grow(self.size) => self.make(n)?,
            Job::Make(_) => {
                return Err(SpoolError::io(
                    "make a segment",
                    &self.dir,
                    std::io::Error::from_raw_os_error(nix::libc::ENOSPC),
                ));
            }
        };
        self.lock().ready.push(seg);
        Ok(())
    }

    /// A new segment: written whole under a temporary name, header, fdatasync, renamed, the
    /// directory fsync'd.
    fn make(&self, number: u32) -> Result<Arc<SegFile>> {
        let path = seg_path(&self.dir, number);
        let tmp = path.with_extension("tmp");
        let made = (|| -> std::io::Result<File> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            allocate(&file, self.size)?;
            Ok(file)
        })();
        let file = match made {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(SpoolError::io("make a segment", &tmp, e));
            }
        };
        let header = SegmentHeader {
            nonce: nonce(),
            generation: 1,
            number,
            size: self.size,
        };
        file.write_all_at(&header.encode(), 0)
            .and_then(|()| file.sync_data())
            .map_err(io("write a segment", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("name a segment", &tmp))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync directory", &self.dir))?;
        Ok(Arc::new(SegFile {
            header,
            file,
            path,
            written: AtomicBool::new(false),
        }))
    }

    /// A dead segment's next life: holes refilled, new generation and nonce, fdatasync.
    fn recycle(&self, seg: &Arc<SegFile>) -> Result<Arc<SegFile>> {
        let file = seg
            .file
            .try_clone()
            .map_err(io("open segment", &seg.path))?;
        let len = file
            .metadata()
            .map_err(io("open segment", &seg.path))?
            .len();
        if len < seg.header.size {
            file.set_len(seg.header.size)
                .map_err(io("refill a segment", &seg.path))?;
        }
        allocate(&file, seg.header.size).map_err(io("refill a segment", &seg.path))?;
        let header = SegmentHeader {
            nonce: nonce(),
            generation: seg.header.generation.wrapping_add(1),
            ..seg.header
        };
        file.write_all_at(&header.encode(), 0)
            .and_then(|()| file.sync_data())
            .map_err(io("recycle a segment", &seg.path))?;
        let written = AtomicBool::new(fully_written(&file, header.size));
        Ok(Arc::new(SegFile {
            header,
            file,
            path: seg.path.clone(),
            written,
        }))
    }
}

enum Job {
    Warm(Arc<SegFile>),
    Recycle(Arc<SegFile>),
    Remove(Arc<SegFile>),
    Make(u32),
}

impl SegFile {
    /// The record header at `offset`, if one of this life is there.
    pub(crate) fn header_at(&self, offset: u64) -> Option<RecordHeader> {
        let mut b = vec![0u8; BLOCK_LEN];
        self.file.read_exact_at(&mut b, offset).ok()?;
        RecordHeader::decode(&b, &self.header)
    }

    /// Walks the records from `from` (a record's header) to the end of this life's records.
    /// `check(id)` says whether the bytes of a record are checked against its CRC (records the
    /// index does not know).
    pub(crate) fn walk(&self, from: u64, check: &dyn Fn(u64) -> bool) -> Vec<Found> {
        let mut out = Vec::new();
        let mut at = from;
        while at.saturating_add(BLOCK) <= self.header.size {
            let Some(header) = self.header_at(at) else {
                break;
            };
            let intact = !header.is_dead() && (!check(header.id) || self.data_ok(at, &header));
            out.push(Found {
                offset: at,
                header,
                intact,
            });
            at = at.saturating_add(span(header.len));
        }
        out
    }

    fn data_ok(&self, offset: u64, h: &RecordHeader) -> bool {
        let mut crc = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        let (mut at, end) = (offset + BLOCK, offset + BLOCK + h.len);
        while at < end {
            let n = usize::try_from((end - at).min(buf.len() as u64)).unwrap_or(buf.len());
            if self.file.read_exact_at(&mut buf[..n], at).is_err() {
                return false;
            }
            crc.update(&buf[..n]);
            at += n as u64;
        }
        crc.finalize() == h.data_crc
    }

    /// Marks the record at `offset` dead (not yet durable: the caller fdatasyncs).
    pub(crate) fn mark_dead(&self, offset: u64) -> std::io::Result<Option<RecordHeader>> {
        let Some(mut h) = self.header_at(offset) else {
            return Ok(None);
        };
        h.flags |= crate::segment_format::FLAG_DEAD;
        self.file.write_all_at(&h.encode(), offset)?;
        Ok(Some(h))
    }

    /// Gives the bytes of a dead record back to the filesystem (its header stays).
    pub(crate) fn punch_record(&self, offset: u64, len: u64) -> std::io::Result<()> {
        punch(&self.file, offset + BLOCK, align_up(len))
    }
}
