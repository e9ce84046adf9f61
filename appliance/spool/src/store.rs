//! The spool proper: files, index, reconciliation, admission, release.

use crate::dirsync::DirSync;
use crate::record::{ObjectRecord, PeerRecord, QuarantineEntry, SegmentSlot};
use crate::segment_format::{BLOCK, RecordHeader, span};
use crate::segments::{Removal, SegFile, Segments};
use crate::temp::{ObjectLocation, Sink, TempObject};
use crate::usage::{FsSpace, Usage, cap_used_percent, fs_space, fs_used_percent, used_percent};
use crate::{Result, SpoolError};
use medgate_dicom::negotiate::Knock;
use medgate_dicom::{part10, scan, uids};
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The prefix of the index trees earlier versions kept the workflow state in.
const LEGACY_STATE_PREFIX: &str = "state:";

/// How much of a file's head is read to re-index it.
const REINDEX_HEAD: usize = 64 * 1024;

/// What the spool needs to know.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// The data directory; the spool uses `spool/` and `index/` below it.
    pub data_dir: PathBuf,
    /// Names of the configured destinations: every new object waits for all of them.
    pub destinations: Vec<String>,
    /// Refuse new objects above this use (percent).
    pub high_watermark_percent: f64,
    /// Evict released objects down to this use (percent).
    pub low_watermark_percent: f64,
    /// Optional cap on the spool's bytes (0: none).
    pub max_bytes: u64,
    /// Keep released objects this long.
    pub retention: Duration,
    /// Size of each segment file (objects up to about this size are appended to segments);
    /// 0: every object in a file of its own.
    pub segment_bytes: u64,
    /// While idle, keep up to this many bytes of segments ready and written through (at most 5 %
    /// of the filesystem); 0: only the few the next objects need.
    pub warm_bytes: u64,
}

/// The segment size the appliance uses: room for ~28 CT slices, and a spill of at most this
/// much for an object that outgrows it.
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;

/// What start-up found and did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReconcileReport {
    /// The index did not open and was rebuilt from the files.
    pub index_rebuilt: bool,
    /// Objects in the spool after reconciliation.
    pub objects: u64,
    /// Files that had no record and were re-indexed (and will be sent again).
    pub reindexed: u64,
    /// Records whose file was gone (released before the index was flushed).
    pub dropped_records: u64,
    /// Temp files of objects never acknowledged, removed.
    pub removed_temp_files: u64,
    /// Files in `objects/` that are not valid Part 10 files, moved to `spool/damaged/`.
    pub damaged_files: u64,
    /// Destinations removed from pending lists because they are no longer configured.
    pub dropped_destinations: u64,
    /// Records found in segments whose bytes do not match their checksum (the object being
    /// written at a kill -9 or power cut, never acknowledged): cut, never served.
    pub torn_records: u64,
    /// Segments in use after reconciliation.
    pub segments: u64,
}

/// The answer to "may I accept one more object?".
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// Yes.
    Accept,
    /// No: the spool is above its high watermark (percent used given).
    Full(f64),
}

/// Chooses the destinations of an object re-indexed from the spool at start-up (the routing
/// rules); `None`: every destination.
pub type Router =
    Arc<dyn Fn(&ObjectLocation, &ObjectRecord) -> Option<BTreeSet<String>> + Send + Sync>;

struct RouterSlot(Option<Router>);

impl std::fmt::Debug for RouterSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Router"
        } else {
            "NoRouter"
        })
    }
}

#[derive(Debug, Default)]
struct Memory {
    /// Objects released by every destination, by id (age order), with their size.
    released: std::collections::BTreeMap<u64, u64>,
    /// Cached filesystem space and when it was read.
    fs: Option<(std::time::Instant, FsSpace)>,
}

/// The durable spool. Cheap to share behind an `Arc`; every method is blocking (call it from a
/// blocking thread in async code).
#[derive(Debug)]
pub struct Spool {
    cfg: SpoolConfig,
    objects_dir: PathBuf,
    tmp_dir: PathBuf,
    damaged_dir: PathBuf,
    _db: sled::Db,
    objects: sled::Tree,
    peers: sled::Tree,
    last_id: AtomicU64,
    spool_bytes: AtomicU64,
    object_count: AtomicU64,
    dir_syncs: Mutex<HashMap<PathBuf, Arc<(File, DirSync)>>>,
    segments: Arc<Segments>,
    preparer: Mutex<Option<std::thread::JoinHandle<()>>>,
    mem: Mutex<Memory>,
    /// Held while evicting: concurrent evictions would delete (and count) an object twice.
    evicting: Mutex<()>,
    router: RouterSlot,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// Objects deleted together (one fdatasync per segment for their dead marks).
const EVICT_BATCH: usize = 256;

/// How long to wait for the index lock of a process that is still exiting.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// sled 0.34 reports a held lock as `ErrorKind::Other` with the text "could not acquire lock
/// on …" (the `WouldBlock` of `try_lock_exclusive` only inside that text): a lock held by a live
/// process is not damage, and must never make the caller rebuild or move the database aside.
pub(crate) fn is_lock_held(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock
        || io.to_string().contains("could not acquire lock"))
}

/// sled's page cache for the index. The records are small; sled's default (1 GiB) is more than a
/// sandboxed appliance service may use (sled then clamps it to the cgroup limit and logs an error).
const INDEX_CACHE_BYTES: u64 = 64 * 1024 * 1024;

fn index_config(dir: &Path) -> sled::Config {
    sled::Config::new()
        .path(dir)
        .cache_capacity(INDEX_CACHE_BYTES)
}

/// Opens the index, waiting up to [`LOCK_WAIT`] while its lock is still held.
fn open_waiting_for_lock(dir: &Path) -> std::result::Result<sled::Db, sled::Error> {
    open_config_waiting_for_lock(|| index_config(dir))
}

/// Opens a sled database, waiting up to [`LOCK_WAIT`] while its lock is still held (a previous
/// instance of the appliance in this process, or a process that is still exiting).
pub(crate) fn open_config_waiting_for_lock(
    config: impl Fn() -> sled::Config,
) -> std::result::Result<sled::Db, sled::Error> {
    let started = std::time::Instant::now();
    loop {
        match config().open() {
            Err(e) if is_lock_held(&e) && started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn fsync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| SpoolError::io("fsync directory", path, e))
}

impl Spool {
    /// Opens (creating if needed) and reconciles the spool.
    pub fn open(cfg: SpoolConfig) -> Result<(Spool, ReconcileReport)> {
        Spool::open_with_router(cfg, None)
    }

    /// Opens and reconciles the spool; files re-indexed at start-up go to the destinations
    /// `router` chooses (every destination without one).
    pub fn open_with_router(
        cfg: SpoolConfig,
        router: Option<Router>,
    ) -> Result<(Spool, ReconcileReport)> {
        let spool_dir = cfg.data_dir.join("spool");
        let objects_dir = spool_dir.join("objects");
        let tmp_dir = spool_dir.join("tmp");
        let damaged_dir = spool_dir.join("damaged");
        for d in [
            &cfg.data_dir,
            &spool_dir,
            &objects_dir,
            &tmp_dir,
            &damaged_dir,
        ] {
            fs::create_dir_all(d).map_err(|e| SpoolError::io("create directory", d, e))?;
        }
        fsync_dir(&cfg.data_dir)?;
        fsync_dir(&spool_dir)?;
        let segments_dir = spool_dir.join("segments");
        let (segments, found) = Segments::open(
            &segments_dir,
            &damaged_dir,
            cfg.segment_bytes,
            cfg.warm_bytes,
        )?;
        fsync_dir(&spool_dir)?;

        let mut report = ReconcileReport::default();
        let index_dir = cfg.data_dir.join("index");
        let db = match open_waiting_for_lock(&index_dir) {
            Ok(db) => db,
            Err(e) if is_lock_held(&e) => {
                // Another process uses this spool: never rebuild under its feet.
                return Err(SpoolError::Locked(index_dir));
            }
            Err(e) => {
                let aside = cfg.data_dir.join(format!("index.broken-{}", now_ms()));
                tracing::error!(error = %e, moved_to = %aside.display(), "spool index does not open; rebuilding it from the spool files");
                fs::rename(&index_dir, &aside)
                    .map_err(|e| SpoolError::io("move broken index aside", &index_dir, e))?;
                report.index_rebuilt = true;
                index_config(&index_dir).open()?
            }
        };
        let objects = db.open_tree("objects")?;
        let peers = db.open_tree("peers")?;
        let spool = Spool {
            cfg,
            objects_dir,
            tmp_dir,
            damaged_dir,
            _db: db,
            objects,
            peers,
            last_id: AtomicU64::new(0),
            spool_bytes: AtomicU64::new(0),
            object_count: AtomicU64::new(0),
            dir_syncs: Mutex::new(HashMap::new()),
            segments: Arc::new(segments),
            preparer: Mutex::new(None),
            mem: Mutex::new(Memory::default()),
            evicting: Mutex::new(()),
            router: RouterSlot(router),
        };
        spool.reconcile(found, &mut report)?;
        if spool.cfg.segment_bytes > 0 {
            spool.start_preparer()?;
        }
        Ok((spool, report))
    }

    /// Makes a segment ready, then starts the thread that makes and recycles segments off the
    /// receiving path.
    fn start_preparer(&self) -> Result<()> {
        let segs = self.segments.clone();
        let data_dir = self.cfg.data_dir.clone();
        let high = self.cfg.high_watermark_percent;
        // A new segment only while the disk stays below the high watermark with it.
        let may_grow = move |size: u64| {
            fs_space(&data_dir).is_ok_and(|fs| {
                let usable = fs.used + fs.available;
                fs.available > size.saturating_mul(2) && (fs.used + size) < percent_of(usable, high)
            })
        };
        if let Err(e) = segs.prepare_now(&may_grow) {
            tracing::warn!(error = %e, "no spool segment could be made at start-up; objects go to files of their own until one is");
        }
        let handle = std::thread::Builder::new()
            .name("spool-segments".into())
            .spawn(move || segs.prepare_loop(&may_grow))
            .map_err(|e| SpoolError::io("start the segment preparer", &self.cfg.data_dir, e))?;
        *self.preparer.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(())
    }

    fn reconcile(&self, found: Vec<Arc<SegFile>>, report: &mut ReconcileReport) -> Result<()> {
        // 1. Temp files are objects never acknowledged: the sender was not told "success".
        for entry in
            fs::read_dir(&self.tmp_dir).map_err(|e| SpoolError::io("list", &self.tmp_dir, e))?
        {
            let entry = entry.map_err(|e| SpoolError::io("list", &self.tmp_dir, e))?;
            fs::remove_file(entry.path())
                .map_err(|e| SpoolError::io("remove temp file", &entry.path(), e))?;
            report.removed_temp_files += 1;
        }
        // 2. The files of their own.
        let files = object_files(&self.objects_dir)?;
        let segs: HashMap<u32, Arc<SegFile>> =
            found.into_iter().map(|s| (s.header.number, s)).collect();
        // 3. Records whose bytes are gone (released before the index was flushed, or in a
        //    segment recycled since) are dropped; the others are kept.
        let mut known: HashMap<u64, u64> = HashMap::new(); // id -> size
        let mut live: HashMap<u32, u64> = HashMap::new();
        // Per segment: where the walk for records the index does not know starts.
        let mut walk_from: HashMap<u32, u64> = HashMap::new();
        let mut unreadable = 0u64;
        let configured: BTreeSet<&String> = self.cfg.destinations.iter().collect();
        for item in self.objects.iter() {
            let (k, v) = item?;
            let id = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]));
            let mut rec: ObjectRecord = match serde_json::from_slice(&v) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(id, error = %e, "unreadable index record, re-indexing from the spool");
                    self.objects.remove(k)?;
                    unreadable += 1;
                    continue;
                }
            };
            let present = match rec.segment {
                None => files.contains_key(&id),
                Some(slot) => segs.get(&slot.segment).is_some_and(|seg| {
                    seg.header.generation == slot.generation
                        && seg
                            .header_at(slot.offset)
                            .is_some_and(|h| h.id == id && h.len == rec.size && !h.is_dead())
                }),
            };
            if !present {
                self.objects.remove(k)?;
                report.dropped_records += 1;
                continue;
            }
            let before = rec.pending.len();
            rec.pending.retain(|d| configured.contains(d));
            rec.quarantined.retain(|d, _| configured.contains(d));
            if rec.pending.len() != before {
                report.dropped_destinations += (before - rec.pending.len()) as u64;
                self.put(&rec)?;
            }
            if let Some(slot) = rec.segment {
                *live.entry(slot.segment).or_default() += 1;
                let next = slot.offset.saturating_add(span(rec.size));
                let e = walk_from.entry(slot.segment).or_insert(BLOCK);
                *e = (*e).max(next);
            }
            known.insert(id, rec.size);
        }
        // 4. Records in segments the index does not know: those acknowledged just before a
        //    stop (the index lags), or all of them when it was rebuilt. Their bytes must match
        //    their checksum; the torn tail of a kill -9 does not, and is cut.
        let full = report.index_rebuilt || unreadable > 0;
        for (number, seg) in &segs {
            let from = if full {
                BLOCK
            } else {
                walk_from.get(number).copied().unwrap_or(BLOCK)
            };
            for f in seg.walk(from, &|id| !known.contains_key(&id)) {
                if known.contains_key(&f.header.id) || f.header.is_dead() {
                    continue;
                }
                if !f.intact {
                    tracing::warn!(
                        segment = number,
                        offset = f.offset,
                        id = f.header.id,
                        "spool record does not match its checksum (written when the appliance stopped, never acknowledged); cut"
                    );
                    report.torn_records += 1;
                    continue;
                }
                let loc = ObjectLocation {
                    path: seg.path.clone(),
                    offset: f.offset + BLOCK,
                    len: f.header.len,
                };
                let slot = SegmentSlot {
                    segment: *number,
                    generation: seg.header.generation,
                    offset: f.offset,
                };
                match self.reindex(f.header.id, &loc, Some(slot)) {
                    Ok(rec) => {
                        self.put(&rec)?;
                        known.insert(rec.id, rec.size);
                        *live.entry(*number).or_default() += 1;
                        report.reindexed += 1;
                    }
                    Err(e) => {
                        // Its checksum held: these are the bytes as received. Keep them in place
                        // (the segment is not recycled while they are counted) and say so.
                        tracing::error!(segment = number, offset = f.offset, error = %e, "spool record is not a valid DICOM object; left in place, not forwarded");
                        *live.entry(*number).or_default() += 1;
                        report.damaged_files += 1;
                    }
                }
            }
        }
        // 5. Files without records are re-indexed and go to every destination again.
        for (id, (path, size)) in &files {
            if known.contains_key(id) {
                continue;
            }
            let loc = ObjectLocation {
                path: path.clone(),
                offset: 0,
                len: *size,
            };
            match self.reindex(*id, &loc, None) {
                Ok(rec) => {
                    self.put(&rec)?;
                    known.insert(*id, rec.size);
                    report.reindexed += 1;
                }
                Err(e) => {
                    let to = self.damaged_dir.join(path.file_name().unwrap_or_default());
                    tracing::error!(path = %path.display(), error = %e, moved_to = %to.display(), "spool file is not a valid DICOM file; moved aside, not deleted");
                    fs::rename(path, &to)
                        .map_err(|e| SpoolError::io("move damaged file", path, e))?;
                    report.damaged_files += 1;
                }
            }
        }
        // 6. Memory: sizes, released set, next id, the segments' live counts.
        let mut mem = self.lock_mem();
        let (mut bytes, mut max_id) = (0u64, 0u64);
        for (id, size) in &known {
            bytes += size;
            max_id = max_id.max(*id);
            if let Some(rec) = self.get(*id)? {
                if rec.is_released() {
                    mem.released.insert(*id, *size);
                }
            }
        }
        drop(mem);
        report.segments = segs.len() as u64;
        self.segments.install(
            segs.into_iter()
                .map(|(n, seg)| (seg, live.get(&n).copied().unwrap_or(0)))
                .collect(),
        );
        self.spool_bytes.store(bytes, Ordering::Relaxed);
        self.object_count
            .store(known.len() as u64, Ordering::Relaxed);
        self.last_id.store(max_id, Ordering::Relaxed);
        report.objects = known.len() as u64;
        self.objects.flush()?;
        Ok(())
    }

    /// A record for an object the index does not know, from its bytes.
    fn reindex(
        &self,
        id: u64,
        loc: &ObjectLocation,
        segment: Option<SegmentSlot>,
    ) -> std::result::Result<ObjectRecord, String> {
        let mut f = loc.open().map_err(|e| e.to_string())?;
        let size = loc.len;
        let mut head = Vec::with_capacity(REINDEX_HEAD);
        f.by_ref()
            .take(REINDEX_HEAD as u64)
            .read_to_end(&mut head)
            .map_err(|e| e.to_string())?;
        let (meta, offset) = part10::parse_meta(&head).map_err(|e| e.to_string())?;
        let whole = size <= REINDEX_HEAD as u64;
        let summary = scan::scan(
            &head[offset..],
            uids::dataset_encoding(&meta.transfer_syntax),
            whole,
        )
        .unwrap_or_default();
        let mut rec = ObjectRecord {
            id,
            sop_class_uid: meta.sop_class_uid,
            sop_instance_uid: meta.sop_instance_uid,
            transfer_syntax: meta.transfer_syntax,
            calling_ae: meta.source_ae.unwrap_or_default(),
            called_ae: String::new(),
            size,
            received_at_ms: id / 1000,
            summary,
            pending: self.cfg.destinations.iter().cloned().collect(),
            confirmed: Default::default(),
            quarantined: Default::default(),
            segment,
        };
        if let Some(router) = &self.router.0 {
            if let Some(to) = router(loc, &rec) {
                rec.pending = self.routed(&to);
            }
        }
        Ok(rec)
    }

    /// The configured destinations among `to`; every destination if none is (an object is
    /// never routed nowhere).
    fn routed(&self, to: &BTreeSet<String>) -> BTreeSet<String> {
        let set: BTreeSet<String> = self
            .cfg
            .destinations
            .iter()
            .filter(|d| to.contains(*d))
            .cloned()
            .collect();
        if set.is_empty() {
            tracing::warn!(routed_to = ?to, "object routed to no configured destination; sending it to every destination");
            self.cfg.destinations.iter().cloned().collect()
        } else {
            set
        }
    }

    fn lock_mem(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.mem.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&self, rec: &ObjectRecord) -> Result<()> {
        self.objects.insert(key(rec.id), serde_json::to_vec(rec)?)?;
        Ok(())
    }

    /// The record of an object.
    pub fn get(&self, id: u64) -> Result<Option<ObjectRecord>> {
        match self.objects.get(key(id))? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// Where an object's bytes are: its record of a segment, or its file.
    pub fn locate(&self, rec: &ObjectRecord) -> ObjectLocation {
        match rec.segment {
            Some(slot) => ObjectLocation {
                path: self.segments.path_of(slot.segment),
                offset: slot.offset + BLOCK,
                len: rec.size,
            },
            None => ObjectLocation {
                path: self.object_path(rec.id),
                offset: 0,
                len: rec.size,
            },
        }
    }

    /// Where the bytes of object `id` are, if it is in the spool.
    pub fn locate_id(&self, id: u64) -> Result<Option<ObjectLocation>> {
        Ok(self.get(id)?.map(|r| self.locate(&r)))
    }

    /// The segment files, by state.
    pub fn segment_stats(&self) -> crate::SegmentStats {
        self.segments.stats()
    }

    /// Where an object that is a file of its own lives (see [`Spool::locate`]).
    pub fn object_path(&self, id: u64) -> PathBuf {
        self.objects_dir
            .join(format!("{:08x}", id >> 32))
            .join(format!("{id:016x}.dcm"))
    }

    /// Ids of the objects a destination still has to confirm (quarantined ones excluded), oldest first.
    pub fn pending_for(&self, destination: &str) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for item in self.objects.iter() {
            let (_, v) = item?;
            let rec: ObjectRecord = serde_json::from_slice(&v)?;
            if rec.pending.contains(destination) && !rec.quarantined.contains_key(destination) {
                out.push(rec.id);
            }
        }
        Ok(out)
    }

    /// Space and counts now.
    pub fn usage(&self) -> Usage {
        let spool_bytes = self.spool_bytes.load(Ordering::Relaxed);
        let fs = self.fs_space_cached();
        Usage {
            spool_bytes,
            objects: self.object_count.load(Ordering::Relaxed),
            fs_total_bytes: fs.total,
            fs_free_bytes: fs.available,
            fs_used_bytes: fs.used,
            fs_used_percent: fs_used_percent(fs),
            cap_used_percent: cap_used_percent(spool_bytes, self.cfg.max_bytes),
            used_percent: used_percent(spool_bytes, self.cfg.max_bytes, fs),
        }
    }

    fn fs_space_cached(&self) -> FsSpace {
        let mut mem = self.lock_mem();
        if let Some((at, fs)) = mem.fs {
            if at.elapsed() < Duration::from_millis(200) {
                return fs;
            }
        }
        let fs = fs_space(&self.cfg.data_dir).unwrap_or_default();
        mem.fs = Some((std::time::Instant::now(), fs));
        fs
    }

    /// May one more object come in? Above the high watermark, objects every destination
    /// confirmed are evicted first (oldest first, whatever their retention) to make room:
    /// an object that is only kept for retention never makes a modality hear A700.
    pub fn admission(&self) -> Admission {
        let usage = self.usage();
        if usage.used_percent < self.cfg.high_watermark_percent {
            return Admission::Accept;
        }
        match self.make_room(&usage) {
            Ok(true) => Admission::Accept,
            Ok(false) => Admission::Full(self.usage().used_percent),
            Err(e) => {
                tracing::error!(error = %e, "could not evict confirmed objects to make room");
                Admission::Full(usage.used_percent)
            }
        }
    }

    /// Evicts released objects, oldest first, until the bytes freed bring `usage` below the
    /// high watermark. Returns whether they did. Reckons with the bytes it frees rather than
    /// statvfs, which may show freed blocks only after the filesystem's next journal commit.
    fn make_room(&self, usage: &Usage) -> Result<bool> {
        let _one_at_a_time = self.evicting.lock().unwrap_or_else(|p| p.into_inner());
        // Segments kept ready for a burst go first: they hold no object.
        let pooled = self.segments.trim_ready();
        let usage = if pooled > 0 {
            tracing::info!(
                bytes = pooled,
                "spool above its high watermark: gave ready segments back first"
            );
            self.lock_mem().fs = None;
            &self.usage()
        } else {
            usage
        };
        if usage.used_percent < self.cfg.high_watermark_percent {
            return Ok(true);
        }
        let need = self.bytes_above(usage, self.cfg.high_watermark_percent - 1.0);
        let (mut freed, mut deleted) = (0u64, 0u64);
        while freed < need {
            let batch = self.released_batch(usize::MAX, |_, size, planned| {
                (planned < need.saturating_sub(freed)).then_some(size)
            })?;
            if batch.is_empty() {
                break;
            }
            self.delete_many(&batch)?;
            freed += batch.iter().map(|(_, s)| s).sum::<u64>();
            deleted += batch.len() as u64;
        }
        if deleted > 0 {
            tracing::info!(
                objects = deleted,
                bytes = freed,
                "spool above its high watermark: evicted confirmed objects early to admit new ones"
            );
        }
        Ok(freed >= need && need > 0)
    }

    /// Allocates an id and a place for an incoming object: the next record of a lane when a
    /// segment is ready, else a file of its own in `spool/tmp/`. Never creates a segment.
    pub fn begin(&self) -> Result<TempObject> {
        let mut prev = self.last_id.load(Ordering::Relaxed);
        let id = loop {
            let candidate = now_us().max(prev + 1);
            match self.last_id.compare_exchange_weak(
                prev,
                candidate,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break candidate,
                Err(actual) => prev = actual,
            }
        };
        let path = self.tmp_dir.join(format!("{id:016x}.part"));
        let lane = if self.cfg.segment_bytes > 0 {
            self.segments.take_lane()
        } else {
            None
        };
        let sink = match lane {
            Some(lane) => Sink::Lane {
                lane,
                crc: crc32fast::Hasher::new(),
                spill: path,
            },
            None => self.own_file(path)?,
        };
        Ok(TempObject::new(id, sink, self.segments.clone()))
    }

    /// A place for a rewritten copy of `temp` (same id), always a file of its own.
    pub fn begin_copy(&self, temp: &TempObject) -> Result<TempObject> {
        let path = self.tmp_dir.join(format!("{:016x}.copy", temp.id));
        Ok(TempObject::new(
            temp.id,
            self.own_file(path)?,
            self.segments.clone(),
        ))
    }

    fn own_file(&self, path: PathBuf) -> Result<Sink> {
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| SpoolError::io("create a temp file", &path, e))?;
        Ok(Sink::File { path, file })
    }

    /// Drops an object that will not be acknowledged (its lane goes back, its file is removed).
    pub fn discard(&self, temp: TempObject) {
        drop(temp);
    }

    fn dir_sync_for(&self, dir: &Path) -> Result<Arc<(File, DirSync)>> {
        let mut map = self.dir_syncs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ds) = map.get(dir) {
            return Ok(ds.clone());
        }
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(|e| SpoolError::io("create directory", dir, e))?;
            fsync_dir(&self.objects_dir)?;
        }
        let f = File::open(dir).map_err(|e| SpoolError::io("open directory", dir, e))?;
        // Keep only the directories of the last few hours open.
        if map.len() > 8 {
            map.clear();
        }
        let ds = Arc::new((f, DirSync::default()));
        map.insert(dir.to_path_buf(), ds.clone());
        Ok(ds)
    }

    /// Makes a fully written object durable in the spool and indexes it. A record of a segment:
    /// its header written, fdatasync. A file of its own: fsync, rename, directory fsync
    /// (group commit across callers). After this returns the object may be acknowledged.
    pub fn commit(&self, temp: TempObject, rec: ObjectRecord) -> Result<ObjectRecord> {
        self.commit_to(temp, rec, None)
    }

    /// [`Spool::commit`] for an object routed to some destinations only (`None`: every
    /// destination): it is released once those confirmed it.
    pub fn commit_to(
        &self,
        mut temp: TempObject,
        mut rec: ObjectRecord,
        destinations: Option<&BTreeSet<String>>,
    ) -> Result<ObjectRecord> {
        rec.id = temp.id;
        rec.received_at_ms = temp.id / 1000;
        rec.size = temp.len();
        rec.pending = match destinations {
            Some(to) => self.routed(to),
            None => self.cfg.destinations.iter().cloned().collect(),
        };
        let written = temp.len();
        match temp.take_sink() {
            Sink::Lane { mut lane, crc, .. } => {
                let header = RecordHeader {
                    nonce: lane.seg.header.nonce,
                    generation: lane.seg.header.generation,
                    id: temp.id,
                    len: written,
                    flags: 0,
                    data_crc: crc.finalize(),
                };
                let durable = lane
                    .seg
                    .file
                    .write_all_at(&header.encode(), lane.tail)
                    .and_then(|()| lane.seg.file.sync_data());
                if let Err(e) = durable {
                    let path = lane.seg.path.clone();
                    temp.segments().give_back(lane, 0, true);
                    return Err(SpoolError::io("write a spool record", &path, e));
                }
                rec.segment = Some(SegmentSlot {
                    segment: lane.seg.header.number,
                    generation: lane.seg.header.generation,
                    offset: lane.tail,
                });
                if let Err(e) = self.put(&rec) {
                    // Not acknowledged: the next object of the lane overwrites the record.
                    temp.segments().give_back(lane, 0, false);
                    return Err(e);
                }
                lane.tail += span(written);
                temp.segments().give_back(lane, 1, false);
            }
            Sink::File { path, file } => {
                rec.segment = None;
                let durable = self.commit_file(temp.id, &path, file);
                if let Err(e) = durable.and_then(|()| self.put(&rec)) {
                    let _ = fs::remove_file(self.object_path(temp.id));
                    let _ = fs::remove_file(&path);
                    return Err(e);
                }
            }
            Sink::Gone => {
                return Err(SpoolError::io(
                    "commit",
                    &self.tmp_dir,
                    std::io::Error::other("the object's bytes were dropped after a write failed"),
                ));
            }
        }
        self.spool_bytes.fetch_add(rec.size, Ordering::Relaxed);
        self.object_count.fetch_add(1, Ordering::Relaxed);
        if rec.is_released() {
            self.lock_mem().released.insert(rec.id, rec.size);
        }
        Ok(rec)
    }

    /// A file of its own into `objects/`: fsync, rename, directory fsync.
    fn commit_file(&self, id: u64, path: &Path, file: File) -> Result<()> {
        file.sync_all()
            .map_err(|e| SpoolError::io("fsync", path, e))?;
        drop(file);
        let final_path = self.object_path(id);
        let dir = final_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.objects_dir.clone());
        let ds = self.dir_sync_for(&dir)?;
        fs::rename(path, &final_path).map_err(|e| SpoolError::io("rename into spool", path, e))?;
        ds.1.sync(&ds.0)
            .map_err(|e| SpoolError::io("fsync directory", &dir, e))
    }

    /// A destination confirmed an object. Returns true when every destination has.
    pub fn confirm(&self, id: u64, destination: &str) -> Result<bool> {
        let mut rec = self.get(id)?.ok_or(SpoolError::UnknownObject(id))?;
        rec.pending.remove(destination);
        rec.quarantined.remove(destination);
        rec.confirmed.insert(destination.to_string(), now_ms());
        self.put(&rec)?;
        if rec.is_released() {
            self.lock_mem().released.insert(id, rec.size);
        }
        Ok(rec.is_released())
    }

    /// A destination refused an object permanently: keep it, with the reason, until someone retries it.
    pub fn quarantine(&self, id: u64, destination: &str, reason: &str) -> Result<()> {
        let mut rec = self.get(id)?.ok_or(SpoolError::UnknownObject(id))?;
        rec.quarantined
            .insert(destination.to_string(), reason.to_string());
        self.put(&rec)
    }

    /// Every quarantined (object, destination).
    pub fn quarantined(&self) -> Result<Vec<QuarantineEntry>> {
        let mut out = Vec::new();
        for item in self.objects.iter() {
            let (_, v) = item?;
            let rec: ObjectRecord = serde_json::from_slice(&v)?;
            for (dest, reason) in &rec.quarantined {
                out.push(QuarantineEntry {
                    id: rec.id,
                    destination: dest.clone(),
                    reason: reason.clone(),
                    sop_class_uid: rec.sop_class_uid.clone(),
                    transfer_syntax: rec.transfer_syntax.clone(),
                    calling_ae: rec.calling_ae.clone(),
                    size: rec.size,
                });
            }
        }
        Ok(out)
    }

    /// Takes objects out of quarantine (all, or one id, for all or one destination). Returns the
    /// (id, destination) pairs that must be queued again.
    pub fn release_quarantine(
        &self,
        id: Option<u64>,
        destination: Option<&str>,
    ) -> Result<Vec<(u64, String)>> {
        let mut out = Vec::new();
        for entry in self.quarantined()? {
            if id.is_some_and(|i| i != entry.id)
                || destination.is_some_and(|d| d != entry.destination)
            {
                continue;
            }
            if let Some(mut rec) = self.get(entry.id)? {
                rec.quarantined.remove(&entry.destination);
                self.put(&rec)?;
                out.push((entry.id, entry.destination));
            }
        }
        Ok(out)
    }

    /// Deletes released objects: those older than the retention, then the oldest ones while the
    /// spool is above its low watermark. Never touches an object a destination has not confirmed.
    /// Returns the number of objects deleted.
    pub fn evict(&self) -> Result<u64> {
        let _one_at_a_time = self.evicting.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        let retention_ms = u64::try_from(self.cfg.retention.as_millis()).unwrap_or(u64::MAX);
        let mut deleted = 0;
        loop {
            let need = self.bytes_above(&self.usage(), self.cfg.low_watermark_percent);
            let batch = self.released_batch(EVICT_BATCH, |rec, size, planned| {
                let expired = rec
                    .released_at_ms()
                    .is_some_and(|at| now.saturating_sub(at) >= retention_ms);
                (expired || planned < need).then_some(size)
            })?;
            if batch.is_empty() {
                break;
            }
            self.delete_many(&batch)?;
            deleted += batch.len() as u64;
        }
        Ok(deleted)
    }

    /// Bytes to free for the spool's use to fall to `percent` (of the filesystem, and of the
    /// cap when there is one). Freeing x bytes moves them from used to available; their sum stays.
    fn bytes_above(&self, usage: &Usage, percent: f64) -> u64 {
        let share = |bytes: u64| percent_of(bytes, percent.max(0.0));
        let usable = usage.fs_used_bytes + usage.fs_free_bytes;
        let mut need = usage.fs_used_bytes.saturating_sub(share(usable));
        if self.cfg.max_bytes > 0 {
            need = need.max(usage.spool_bytes.saturating_sub(share(self.cfg.max_bytes)));
        }
        need
    }

    /// Up to `max` released objects, oldest first, that `take(record, size, bytes taken so far)`
    /// accepts (it returns the size to count), stopping at the first it refuses. Objects no
    /// longer released (re-queued since) leave the released set.
    fn released_batch(
        &self,
        max: usize,
        take: impl Fn(&ObjectRecord, u64, u64) -> Option<u64>,
    ) -> Result<Vec<(u64, u64)>> {
        let candidates: Vec<(u64, u64)> = self
            .lock_mem()
            .released
            .iter()
            .take(max.min(EVICT_BATCH * 4))
            .map(|(id, size)| (*id, *size))
            .collect();
        let (mut batch, mut planned) = (Vec::new(), 0u64);
        for (id, size) in candidates {
            match self.get(id)? {
                Some(rec) if rec.is_released() => match take(&rec, size, planned) {
                    Some(n) => {
                        batch.push((id, size));
                        planned += n;
                        if batch.len() >= max {
                            break;
                        }
                    }
                    None => break,
                },
                _ => {
                    self.lock_mem().released.remove(&id);
                }
            }
        }
        Ok(batch)
    }

    /// Removes an object's bytes and record. Only for objects no destination still needs.
    fn delete(&self, id: u64, size: u64) -> Result<()> {
        self.delete_many(&[(id, size)])
    }

    /// Removes objects' bytes and records (ids with their sizes). Only for objects no
    /// destination still needs. A record of a segment is marked dead — durably, before its
    /// bytes are punched out of the file and its index entry goes — unless it was the segment's
    /// last, which recycles the segment whole.
    fn delete_many(&self, batch: &[(u64, u64)]) -> Result<()> {
        let mut punched: Vec<(Arc<SegFile>, u64, u64)> = Vec::new();
        let mut removed: Vec<(u64, u64)> = Vec::with_capacity(batch.len());
        for (id, size) in batch {
            let Some(rec) = self.get(*id)? else {
                self.lock_mem().released.remove(id);
                continue;
            };
            removed.push((*id, *size));
            match rec.segment {
                None => {
                    let path = self.object_path(*id);
                    match fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(SpoolError::io("remove object", &path, e)),
                    }
                }
                Some(slot) => match self.segments.remove_record(slot.segment) {
                    Some((seg, Removal::Punch)) if seg.header.generation == slot.generation => {
                        seg.mark_dead(slot.offset)
                            .map_err(|e| SpoolError::io("mark a record dead", &seg.path, e))?;
                        punched.push((seg, slot.offset, *size));
                    }
                    _ => {}
                },
            }
        }
        // The dead marks durable, once per segment, before any byte is given back.
        let mut synced: BTreeSet<u32> = BTreeSet::new();
        for (seg, _, _) in &punched {
            if synced.insert(seg.header.number) {
                seg.file
                    .sync_data()
                    .map_err(|e| SpoolError::io("fdatasync a segment", &seg.path, e))?;
            }
        }
        for (seg, offset, size) in &punched {
            if let Err(e) = seg.punch_record(*offset, *size) {
                // The record is dead either way; its bytes come back when the segment recycles.
                tracing::warn!(segment = %seg.path.display(), error = %e, "could not give a deleted record's bytes back to the filesystem");
            }
        }
        let mut mem = self.lock_mem();
        for (id, size) in &removed {
            self.objects.remove(key(*id))?;
            mem.released.remove(id);
            self.spool_bytes.fetch_sub(
                (*size).min(self.spool_bytes.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            self.object_count.fetch_sub(1, Ordering::Relaxed);
        }
        // Space changed: do not trust the cached filesystem figures.
        mem.fs = None;
        Ok(())
    }

    /// Gives up on quarantined objects received before `received_before_ms` (all if `None`): the
    /// refusing destination no longer waits for them, and an object no other destination still
    /// needs is deleted at once. An operator's decision (audited by the caller); objects that a
    /// destination did not refuse are never touched. Returns (objects, bytes) deleted.
    pub fn purge_quarantine(&self, received_before_ms: Option<u64>) -> Result<(u64, u64)> {
        let (mut objects, mut bytes) = (0, 0);
        for entry in self.quarantined()? {
            let Some(mut rec) = self.get(entry.id)? else {
                continue;
            };
            if received_before_ms.is_some_and(|t| rec.received_at_ms >= t) {
                continue;
            }
            rec.quarantined.remove(&entry.destination);
            rec.pending.remove(&entry.destination);
            if rec.pending.is_empty() && rec.quarantined.is_empty() {
                self.delete(rec.id, rec.size)?;
                objects += 1;
                bytes += rec.size;
            } else {
                self.put(&rec)?;
            }
        }
        Ok((objects, bytes))
    }

    /// Records a knock on the listener; `refusal` is the code of why it was refused (the
    /// contract's `Refusal`, e.g. `calling_ae_not_allowed`), `None` when it was accepted.
    /// Returns the peer's record as it is now.
    pub fn record_knock(
        &self,
        knock: &Knock,
        address: &str,
        refusal: Option<&str>,
    ) -> Result<PeerRecord> {
        let k = format!("{}|{}", knock.calling_ae, address);
        let now = now_ms();
        let mut rec: PeerRecord = match self.peers.get(k.as_bytes())? {
            Some(v) => serde_json::from_slice(&v).unwrap_or_default(),
            None => PeerRecord {
                calling_ae: knock.calling_ae.clone(),
                address: address.to_string(),
                first_seen_ms: now,
                ..Default::default()
            },
        };
        rec.last_seen_ms = now;
        rec.called_aes.insert(knock.called_ae.clone());
        match &knock.rejection {
            None => {
                rec.accepted += 1;
                rec.last_refusal = None;
            }
            Some(why) => {
                rec.rejected += 1;
                rec.last_rejection = Some(why.clone());
                rec.last_refusal = Some(refusal.unwrap_or("other").to_string());
            }
        }
        rec.last_accepted = Some(knock.rejection.is_none());
        rec.last_called_ae = Some(knock.called_ae.clone());
        for offer in &knock.offers {
            let accepted = offer.accepted.is_some();
            let e = rec
                .sop_classes
                .entry(offer.abstract_syntax.clone())
                .or_insert(accepted);
            *e = *e || accepted;
        }
        self.peers.insert(k.as_bytes(), serde_json::to_vec(&rec)?)?;
        Ok(rec)
    }

    /// An object stored by the peer (calling AE at `address`) has modality `code`: kept in its
    /// record, at most `max` codes. Returns the updated record when the code is new for the peer;
    /// `None` when it was known already, the list is full, or the peer never knocked.
    pub fn record_peer_modality(
        &self,
        calling_ae: &str,
        address: &str,
        code: &str,
        max: usize,
    ) -> Result<Option<PeerRecord>> {
        let k = format!("{calling_ae}|{address}");
        let mut updated = None;
        // Atomic read-modify-write: another association of the same peer may knock meanwhile.
        // (A `None` from the closure would delete the record: every path keeps it.)
        self.peers.fetch_and_update(k.as_bytes(), |old| {
            updated = None;
            let old = old?;
            let Ok(mut rec) = serde_json::from_slice::<PeerRecord>(old) else {
                return Some(old.to_vec());
            };
            if rec.modalities.contains(code) || rec.modalities.len() >= max {
                return Some(old.to_vec());
            }
            rec.modalities.insert(code.to_string());
            // Seen now: the record's state is newer than any announced before.
            rec.last_seen_ms = rec.last_seen_ms.max(now_ms());
            match serde_json::to_vec(&rec) {
                Ok(bytes) => {
                    updated = Some(rec);
                    Some(bytes)
                }
                Err(_) => Some(old.to_vec()),
            }
        })?;
        Ok(updated)
    }

    /// Every peer that knocked.
    pub fn peers(&self) -> Result<Vec<PeerRecord>> {
        let mut out = Vec::new();
        for item in self.peers.iter() {
            let (_, v) = item?;
            out.push(serde_json::from_slice(&v)?);
        }
        Ok(out)
    }

    /// The trees in which earlier versions kept the workflow services' state in this index
    /// (`state:<name>`), by name. Only for migrating them to the [`crate::WorkflowStore`].
    pub fn legacy_state(&self) -> Result<Vec<(String, sled::Tree)>> {
        let mut out = Vec::new();
        for raw in self._db.tree_names() {
            if let Some(name) = raw.strip_prefix(LEGACY_STATE_PREFIX.as_bytes()) {
                let name = String::from_utf8_lossy(name).into_owned();
                out.push((name, self._db.open_tree(&raw)?));
            }
        }
        Ok(out)
    }

    /// Removes a legacy state tree once its entries are durable in the workflow store.
    pub fn drop_legacy_state(&self, name: &str) -> Result<()> {
        self._db.drop_tree(format!("{LEGACY_STATE_PREFIX}{name}"))?;
        self._db.flush()?;
        Ok(())
    }

    /// The records of the objects whose SOP Instance UID is one of `uids` (one scan of the index).
    pub fn find_by_sop_instance(
        &self,
        uids: &std::collections::HashSet<String>,
    ) -> Result<Vec<ObjectRecord>> {
        #[derive(serde::Deserialize)]
        struct Head {
            sop_instance_uid: String,
        }
        let mut out = Vec::new();
        if uids.is_empty() {
            return Ok(out);
        }
        for item in self.objects.iter() {
            let (_, v) = item?;
            let head: Head = serde_json::from_slice(&v)?;
            if uids.contains(&head.sop_instance_uid) {
                out.push(serde_json::from_slice(&v)?);
            }
        }
        Ok(out)
    }

    /// Flushes the index (on shutdown).
    pub fn flush(&self) -> Result<()> {
        self.objects.flush()?;
        self.peers.flush()?;
        Ok(())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.segments.stop();
        let handle = self
            .preparer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// The objects under `objects_dir` that are files of their own, by id: path and size.
pub(crate) fn object_files(objects_dir: &Path) -> Result<HashMap<u64, (PathBuf, u64)>> {
    let mut files = HashMap::new();
    for shard in fs::read_dir(objects_dir).map_err(|e| SpoolError::io("list", objects_dir, e))? {
        let shard = shard
            .map_err(|e| SpoolError::io("list", objects_dir, e))?
            .path();
        if !shard.is_dir() {
            continue;
        }
        for entry in fs::read_dir(&shard).map_err(|e| SpoolError::io("list", &shard, e))? {
            let entry = entry.map_err(|e| SpoolError::io("list", &shard, e))?;
            let path = entry.path();
            let id = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| u64::from_str_radix(s, 16).ok());
            match id {
                Some(id) if path.extension().is_some_and(|e| e == "dcm") => {
                    let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    files.insert(id, (path, size));
                }
                _ => {
                    tracing::warn!(path = %path.display(), "unexpected file in the spool, left alone")
                }
            }
        }
    }
    Ok(files)
}

/// `percent` per cent of `bytes`, rounded down.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a float in 0..=100 (or bytes ≤ the disk); `as` saturates and maps NaN to 0"
)]
fn percent_of(bytes: u64, percent: f64) -> u64 {
    (bytes as f64 * percent / 100.0) as u64
}
