//! The spool proper: files, index, reconciliation, admission, release.

use crate::dirsync::DirSync;
use crate::record::{ObjectRecord, PeerRecord, QuarantineEntry};
use crate::usage::{FsSpace, Usage, cap_used_percent, fs_space, fs_used_percent, used_percent};
use crate::{Result, SpoolError};
use medgate_dicom::negotiate::Knock;
use medgate_dicom::{part10, scan, uids};
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
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
}

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
}

/// The answer to "may I accept one more object?".
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// Yes.
    Accept,
    /// No: the spool is above its high watermark (percent used given).
    Full(f64),
}

/// Chooses the destinations of an object re-indexed from its file at start-up (the routing
/// rules); `None`: every destination.
pub type Router =
    std::sync::Arc<dyn Fn(&Path, &ObjectRecord) -> Option<BTreeSet<String>> + Send + Sync>;

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

/// An object being received: its id and temp path. Commit it or discard it.
#[derive(Debug)]
pub struct TempObject {
    /// The id it will have.
    pub id: u64,
    /// Where its bytes are being written.
    pub path: PathBuf,
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
    dir_syncs: Mutex<HashMap<PathBuf, std::sync::Arc<(File, DirSync)>>>,
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
            mem: Mutex::new(Memory::default()),
            evicting: Mutex::new(()),
            router: RouterSlot(router),
        };
        spool.reconcile(&mut report)?;
        Ok((spool, report))
    }

    fn reconcile(&self, report: &mut ReconcileReport) -> Result<()> {
        // 1. Temp files are objects never acknowledged: the sender was not told "success".
        for entry in
            fs::read_dir(&self.tmp_dir).map_err(|e| SpoolError::io("list", &self.tmp_dir, e))?
        {
            let entry = entry.map_err(|e| SpoolError::io("list", &self.tmp_dir, e))?;
            fs::remove_file(entry.path())
                .map_err(|e| SpoolError::io("remove temp file", &entry.path(), e))?;
            report.removed_temp_files += 1;
        }
        // 2. The files.
        let mut files: HashMap<u64, (PathBuf, u64)> = HashMap::new();
        for shard in fs::read_dir(&self.objects_dir)
            .map_err(|e| SpoolError::io("list", &self.objects_dir, e))?
        {
            let shard = shard
                .map_err(|e| SpoolError::io("list", &self.objects_dir, e))?
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
        // 3. Records without files are dropped; records of files are kept.
        let mut known = BTreeSet::new();
        let mut max_id = 0u64;
        let configured: BTreeSet<&String> = self.cfg.destinations.iter().collect();
        for item in self.objects.iter() {
            let (k, v) = item?;
            let id = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]));
            if !files.contains_key(&id) {
                self.objects.remove(k)?;
                report.dropped_records += 1;
                continue;
            }
            let mut rec: ObjectRecord = match serde_json::from_slice(&v) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(id, error = %e, "unreadable index record, re-indexing from the file");
                    continue;
                }
            };
            let before = rec.pending.len();
            rec.pending.retain(|d| configured.contains(d));
            rec.quarantined.retain(|d, _| configured.contains(d));
            if rec.pending.len() != before {
                report.dropped_destinations += (before - rec.pending.len()) as u64;
                self.put(&rec)?;
            }
            known.insert(id);
        }
        // 4. Files without records are re-indexed and go to every destination again.
        for (id, (path, _)) in &files {
            if known.contains(id) {
                continue;
            }
            match self.reindex(*id, path) {
                Ok(rec) => {
                    self.put(&rec)?;
                    known.insert(*id);
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
        // 5. Memory: sizes, released set, next id.
        let mut mem = self.lock_mem();
        let mut bytes = 0;
        for id in &known {
            let size = files.get(id).map(|(_, s)| *s).unwrap_or(0);
            bytes += size;
            max_id = max_id.max(*id);
            if let Some(rec) = self.get(*id)? {
                if rec.is_released() {
                    mem.released.insert(*id, size);
                }
            }
        }
        drop(mem);
        self.spool_bytes.store(bytes, Ordering::Relaxed);
        self.object_count
            .store(known.len() as u64, Ordering::Relaxed);
        self.last_id.store(max_id, Ordering::Relaxed);
        report.objects = known.len() as u64;
        self.objects.flush()?;
        Ok(())
    }

    fn reindex(&self, id: u64, path: &Path) -> std::result::Result<ObjectRecord, String> {
        let mut f = File::open(path).map_err(|e| e.to_string())?;
        let size = f.metadata().map_err(|e| e.to_string())?.len();
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
        };
        if let Some(router) = &self.router.0 {
            if let Some(to) = router(path, &rec) {
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

    /// Where an object's file lives.
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
        let high = self.cfg.high_watermark_percent;
        // Bytes to free for each measure to fall below the watermark (with one more per cent).
        // Freeing x bytes moves them from used to available; their sum stays.
        let usable = usage.fs_used_bytes + usage.fs_free_bytes;
        let share = |bytes: u64| percent_of(bytes, (high - 1.0).max(0.0));
        let fs_target = share(usable);
        let mut need = usage.fs_used_bytes.saturating_sub(fs_target);
        if self.cfg.max_bytes > 0 {
            let cap_target = share(self.cfg.max_bytes);
            need = need.max(usage.spool_bytes.saturating_sub(cap_target));
        }
        let (mut freed, mut deleted) = (0u64, 0u64);
        while freed < need {
            let candidate = self
                .lock_mem()
                .released
                .iter()
                .next()
                .map(|(id, size)| (*id, *size));
            let Some((id, size)) = candidate else { break };
            match self.get(id)? {
                Some(rec) if rec.is_released() => {
                    self.delete(id, size)?;
                    freed += size;
                    deleted += 1;
                }
                _ => {
                    self.lock_mem().released.remove(&id);
                }
            }
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

    /// Allocates an id and a temp path for an incoming object.
    pub fn begin(&self) -> TempObject {
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
        TempObject {
            id,
            path: self.tmp_dir.join(format!("{id:016x}.part")),
        }
    }

    /// Removes an object that will not be acknowledged.
    pub fn discard(&self, temp: TempObject) {
        if let Err(e) = fs::remove_file(&temp.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %temp.path.display(), error = %e, "could not remove temp file; it is removed at next start");
            }
        }
    }

    fn dir_sync_for(&self, dir: &Path) -> Result<std::sync::Arc<(File, DirSync)>> {
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
        let ds = std::sync::Arc::new((f, DirSync::default()));
        map.insert(dir.to_path_buf(), ds.clone());
        Ok(ds)
    }

    /// Makes a fully written temp file durable in the spool and indexes it: file fsync, rename,
    /// directory fsync (group commit across callers), record. After this returns the object may
    /// be acknowledged.
    pub fn commit(&self, temp: TempObject, file: File, rec: ObjectRecord) -> Result<ObjectRecord> {
        self.commit_to(temp, file, rec, None)
    }

    /// [`Spool::commit`] for an object routed to some destinations only (`None`: every
    /// destination): it is released once those confirmed it.
    pub fn commit_to(
        &self,
        temp: TempObject,
        file: File,
        mut rec: ObjectRecord,
        destinations: Option<&BTreeSet<String>>,
    ) -> Result<ObjectRecord> {
        file.sync_all()
            .map_err(|e| SpoolError::io("fsync", &temp.path, e))?;
        drop(file);
        let final_path = self.object_path(temp.id);
        let dir = final_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.objects_dir.clone());
        let ds = self.dir_sync_for(&dir)?;
        fs::rename(&temp.path, &final_path)
            .map_err(|e| SpoolError::io("rename into spool", &temp.path, e))?;
        ds.1.sync(&ds.0)
            .map_err(|e| SpoolError::io("fsync directory", &dir, e))?;
        rec.id = temp.id;
        rec.received_at_ms = temp.id / 1000;
        rec.pending = match destinations {
            Some(to) => self.routed(to),
            None => self.cfg.destinations.iter().cloned().collect(),
        };
        self.put(&rec)?;
        self.spool_bytes.fetch_add(rec.size, Ordering::Relaxed);
        self.object_count.fetch_add(1, Ordering::Relaxed);
        if rec.is_released() {
            self.lock_mem().released.insert(rec.id, rec.size);
        }
        Ok(rec)
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
            let candidate = {
                let mem = self.lock_mem();
                mem.released.iter().next().map(|(id, size)| (*id, *size))
            };
            let Some((id, size)) = candidate else { break };
            let expired = match self.get(id)? {
                Some(rec) if rec.is_released() => rec
                    .released_at_ms()
                    .is_some_and(|at| now.saturating_sub(at) >= retention_ms),
                Some(_) => {
                    // Re-queued since (e.g. a destination was added back): not releasable.
                    self.lock_mem().released.remove(&id);
                    continue;
                }
                None => {
                    self.lock_mem().released.remove(&id);
                    continue;
                }
            };
            let above_low = self.usage().used_percent > self.cfg.low_watermark_percent;
            if !expired && !above_low {
                break;
            }
            self.delete(id, size)?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Removes an object's file and record. Only for objects no destination still needs.
    fn delete(&self, id: u64, size: u64) -> Result<()> {
        let path = self.object_path(id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::io("remove object", &path, e)),
        }
        self.objects.remove(key(id))?;
        self.lock_mem().released.remove(&id);
        self.spool_bytes.fetch_sub(
            size.min(self.spool_bytes.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        self.object_count.fetch_sub(1, Ordering::Relaxed);
        // Space changed: do not trust the cached filesystem figures.
        self.lock_mem().fs = None;
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

/// `percent` per cent of `bytes`, rounded down.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a float in 0..=100 (or bytes ≤ the disk); `as` saturates and maps NaN to 0"
)]
fn percent_of(bytes: u64, percent: f64) -> u64 {
    (bytes as f64 * percent / 100.0) as u64
}
