//! The durable outbox: messages for the fleet, kept in sled until the broker acknowledged them.
//!
//! - `append` gives each message the next sequence number of the outbox's stream and stores it;
//!   it never waits on the network.
//! - The publisher reads entries in sequence order from a cursor (`after`) and removes each one
//!   only when it is confirmed (`remove`): an event by the fleet's receipt, anything else by the
//!   broker's PUBACK. At least once, in order.
//! - Entries survive restarts (sled; see DESIGN §3 for its durability limits). If the database
//!   cannot be opened it is moved aside and a new one with a new stream id is created, so event ids
//!   never repeat.
//! - A cap on the number of entries bounds the disk used during a very long broker outage; when it
//!   is reached the oldest entry is dropped and counted (and logged).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use medgate_contract::EventId;

/// Outbox failures.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// sled failed.
    #[error(
        "outbox database {path}: {source}; check the disk (space, permissions) of the data directory"
    )]
    Db {
        /// The database directory.
        path: PathBuf,
        /// What sled said.
        #[source]
        source: sled::Error,
    },
    /// A stored entry could not be decoded (corruption).
    #[error("outbox entry {seq} is corrupt and was skipped")]
    Corrupt {
        /// Its sequence number.
        seq: u64,
    },
    /// The topic is longer than an entry can hold.
    #[error("topic of {0} bytes is too long for the outbox")]
    TopicTooLong(usize),
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Sequence number in the outbox's stream.
    pub seq: u64,
    /// MQTT topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// Publish with the retain flag.
    pub retain: bool,
}

/// The outbox.
#[derive(Debug)]
pub struct Outbox {
    path: PathBuf,
    db: sled::Db,
    entries: sled::Tree,
    meta: sled::Tree,
    stream: u64,
    max_entries: usize,
    append_lock: Mutex<()>,
    dropped: AtomicU64,
}

const STREAM_KEY: &[u8] = b"stream";

/// How long to wait for the lock of a database another handle is closing.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// sled 0.34 reports a held lock as `ErrorKind::Other` with the text "could not acquire lock
/// on …" (the `WouldBlock` of `try_lock_exclusive` only inside that text): a lock held by a live
/// process is not damage, and must never make the caller rebuild or move the database aside.
fn is_lock_held(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock
        || io.to_string().contains("could not acquire lock"))
}

/// Opens the database, waiting up to [`LOCK_WAIT`] while its lock is still held.
/// sled's page cache for the outbox (small entries; sled's 1 GiB default is more than a
/// sandboxed service may use).
fn outbox_config(path: &Path) -> sled::Config {
    sled::Config::new()
        .path(path)
        .cache_capacity(16 * 1024 * 1024)
}

fn open_waiting_for_lock(path: &Path) -> Result<sled::Db, sled::Error> {
    let started = std::time::Instant::now();
    loop {
        match outbox_config(path).open() {
            Err(e) if is_lock_held(&e) && started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

impl Outbox {
    /// Opens (or creates) the outbox in directory `path`. If the database is unreadable it is
    /// renamed to `path.broken-<ms>` and a new one is created (a new stream).
    pub fn open(path: &Path, max_entries: usize) -> Result<Outbox, OutboxError> {
        let db = match open_waiting_for_lock(path) {
            Ok(db) => db,
            Err(locked @ sled::Error::Io(_)) if is_lock_held(&locked) => {
                // Another handle (a reporter still shutting down, or a second process) holds
                // it: that is not damage, and moving it aside would lose its events.
                return Err(OutboxError::Db {
                    path: path.to_owned(),
                    source: locked,
                });
            }
            Err(first) => {
                let aside = path.with_extension(format!("broken-{}", medgate_contract::now_ms()));
                tracing::error!(path = %path.display(), error = %first, aside = %aside.display(),
                    "outbox database does not open; moving it aside and starting a new one");
                std::fs::rename(path, &aside).map_err(|e| OutboxError::Db {
                    path: path.to_owned(),
                    source: sled::Error::Io(e),
                })?;
                outbox_config(path)
                    .open()
                    .map_err(|source| OutboxError::Db {
                        path: path.to_owned(),
                        source,
                    })?
            }
        };
        let db_err = |source| OutboxError::Db {
            path: path.to_owned(),
            source,
        };
        let entries = db.open_tree("entries").map_err(db_err)?;
        let meta = db.open_tree("meta").map_err(db_err)?;
        let stream = match meta.get(STREAM_KEY).map_err(db_err)? {
            Some(v) if v.len() == 8 => u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])),
            _ => {
                let s = fastrand::u64(1..);
                meta.insert(STREAM_KEY, &s.to_be_bytes()).map_err(db_err)?;
                db.flush().map_err(db_err)?;
                s
            }
        };
        Ok(Outbox {
            path: path.to_owned(),
            db,
            entries,
            meta,
            stream,
            max_entries: max_entries.max(1),
            append_lock: Mutex::new(()),
            dropped: AtomicU64::new(0),
        })
    }

    fn err(&self, source: sled::Error) -> OutboxError {
        OutboxError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// The stream id (random, fixed for the life of this database).
    pub fn stream(&self) -> u64 {
        self.stream
    }

    /// Stores a message. `build` receives the message's id (to put in its payload) and returns
    /// the topic, the payload and the retain flag. Returns the id.
    pub fn append_with(
        &self,
        build: impl FnOnce(EventId) -> (String, Vec<u8>, bool),
    ) -> Result<EventId, OutboxError> {
        // One appender at a time: sequence numbers are stored in the order they are given, so
        // a reader's cursor never passes an entry that is not written yet.
        let _guard = self.append_lock.lock().unwrap_or_else(|p| p.into_inner());
        // generate_id is monotonic across restarts (sled persists its reservations).
        let seq = self.db.generate_id().map_err(|e| self.err(e))? + 1;
        let id = EventId::new(self.stream, seq);
        let (topic, payload, retain) = build(id);
        let value = encode_entry(&topic, &payload, retain)?;
        while self.entries.len() >= self.max_entries {
            match self.entries.pop_min().map_err(|e| self.err(e))? {
                Some((k, _)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        seq = key_seq(&k),
                        max_entries = self.max_entries,
                        "outbox full: dropped its oldest entry (the broker has been unreachable for long)"
                    );
                }
                None => break,
            }
        }
        self.entries
            .insert(seq.to_be_bytes(), value)
            .map_err(|e| self.err(e))?;
        Ok(id)
    }

    /// Up to `limit` entries with a sequence number above `cursor` (all if `None`), in order.
    /// A corrupt entry is logged, removed and skipped.
    pub fn after(&self, cursor: Option<u64>, limit: usize) -> Result<Vec<Entry>, OutboxError> {
        let range = match cursor {
            Some(c) => self.entries.range((c.saturating_add(1)).to_be_bytes()..),
            None => self.entries.range::<&[u8], _>(..),
        };
        let mut out = Vec::with_capacity(limit.min(256));
        for item in range {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(|e| self.err(e))?;
            let seq = key_seq(&k);
            match decode_entry(seq, &v) {
                Ok(entry) => out.push(entry),
                Err(e) => {
                    tracing::error!(seq, error = %e, "removing a corrupt outbox entry");
                    self.entries.remove(&k).map_err(|e| self.err(e))?;
                }
            }
        }
        Ok(out)
    }

    /// Removes an entry (once confirmed). Returns whether it was there: removing an absent entry
    /// is a no-op.
    pub fn remove(&self, seq: u64) -> Result<bool, OutboxError> {
        let old = self
            .entries
            .remove(seq.to_be_bytes())
            .map_err(|e| self.err(e))?;
        Ok(old.is_some())
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries dropped because the outbox was full (since open).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Forces the database to disk (sled also does it every 500 ms).
    pub fn flush(&self) -> Result<(), OutboxError> {
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    /// A small persistent key/value store beside the entries, for the reporter's own state
    /// (configuration versions, command ids seen).
    pub(crate) fn meta_get_u64(&self, key: &str) -> Result<Option<u64>, OutboxError> {
        let v = self.meta.get(key.as_bytes()).map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)))
    }

    pub(crate) fn meta_set_u64(&self, key: &str, value: u64) -> Result<(), OutboxError> {
        self.meta
            .insert(key.as_bytes(), &value.to_be_bytes())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records `key` as seen; returns false if it had been seen before. Keeps the newest `keep`.
    pub(crate) fn remember_once(&self, key: &str, keep: usize) -> Result<bool, OutboxError> {
        let tree = self.db.open_tree("seen").map_err(|e| self.err(e))?;
        if tree.contains_key(key.as_bytes()).map_err(|e| self.err(e))? {
            return Ok(false);
        }
        tree.insert(key.as_bytes(), &medgate_contract::now_ms().to_be_bytes())
            .map_err(|e| self.err(e))?;
        if tree.len() > keep {
            // Forget the oldest by time.
            let mut all: Vec<(sled::IVec, u64)> = tree
                .iter()
                .filter_map(Result::ok)
                .map(|(k, v)| {
                    (
                        k,
                        v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0),
                    )
                })
                .collect();
            all.sort_by_key(|(_, t)| *t);
            for (k, _) in all.into_iter().take(tree.len().saturating_sub(keep)) {
                tree.remove(k).map_err(|e| self.err(e))?;
            }
        }
        Ok(true)
    }
}

fn key_seq(k: &[u8]) -> u64 {
    k.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

// Entry layout: [retain: u8][topic length: u16 BE][topic][payload].
fn encode_entry(topic: &str, payload: &[u8], retain: bool) -> Result<Vec<u8>, OutboxError> {
    let len = u16::try_from(topic.len()).map_err(|_| OutboxError::TopicTooLong(topic.len()))?;
    let mut v = Vec::with_capacity(3 + topic.len() + payload.len());
    v.push(u8::from(retain));
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(topic.as_bytes());
    v.extend_from_slice(payload);
    Ok(v)
}

fn decode_entry(seq: u64, v: &[u8]) -> Result<Entry, OutboxError> {
    let corrupt = || OutboxError::Corrupt { seq };
    let (&flag, rest) = v.split_first().ok_or_else(corrupt)?;
    if rest.len() < 2 || flag > 1 {
        return Err(corrupt());
    }
    let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
    let rest = &rest[2..];
    if rest.len() < len {
        return Err(corrupt());
    }
    let topic = std::str::from_utf8(&rest[..len])
        .map_err(|_| corrupt())?
        .to_owned();
    Ok(Entry {
        seq,
        topic,
        payload: rest[len..].to_vec(),
        retain: flag == 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(o: &Outbox, n: usize) -> Vec<EventId> {
        (0..n)
            .map(|i| {
                o.append_with(|id| (format!("t/{i}"), id.to_string().into_bytes(), i % 2 == 0))
                    .expect("append")
            })
            .collect()
    }

    #[test]
    fn appends_in_order_and_reads_from_a_cursor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = Outbox::open(&dir.path().join("ob"), 1000).expect("open");
        let ids = append(&o, 10);
        assert!(
            ids.windows(2).all(|w| w[0].seq < w[1].seq),
            "monotonic: {ids:?}"
        );
        assert!(ids.iter().all(|id| id.stream == o.stream()));
        let first = o.after(None, 4).expect("read");
        assert_eq!(first.len(), 4);
        assert_eq!(first[0].topic, "t/0");
        assert_eq!(first[0].payload, ids[0].to_string().into_bytes());
        assert!(first[0].retain && !first[1].retain);
        let rest = o.after(Some(first[3].seq), 100).expect("read");
        assert_eq!(rest.len(), 6);
        assert_eq!(rest[0].topic, "t/4");
    }

    #[test]
    fn removal_is_at_least_once_and_out_of_order_safe() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = Outbox::open(&dir.path().join("ob"), 1000).expect("open");
        let ids = append(&o, 5);
        // The broker acked 2 and 4 only: the others are still there, in order.
        o.remove(ids[1].seq).expect("remove");
        o.remove(ids[3].seq).expect("remove");
        o.remove(ids[3].seq).expect("removing twice is fine");
        let left: Vec<u64> = o
            .after(None, 100)
            .expect("read")
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(left, vec![ids[0].seq, ids[2].seq, ids[4].seq]);
    }

    #[test]
    fn survives_restart_and_never_reuses_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ob");
        let (stream, ids) = {
            let o = Outbox::open(&path, 1000).expect("open");
            let ids = append(&o, 3);
            o.remove(ids[0].seq).expect("remove");
            o.flush().expect("flush");
            (o.stream(), ids)
        };
        let o = Outbox::open(&path, 1000).expect("reopen");
        assert_eq!(o.stream(), stream, "same stream after a restart");
        let left: Vec<u64> = o
            .after(None, 100)
            .expect("read")
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(
            left,
            vec![ids[1].seq, ids[2].seq],
            "unacked entries survive"
        );
        // Even when everything was acked, new ids continue above the old ones.
        for e in o.after(None, 100).expect("read") {
            o.remove(e.seq).expect("remove");
        }
        drop(o);
        let o = Outbox::open(&path, 1000).expect("reopen");
        let next = append(&o, 1)[0];
        assert!(next.seq > ids[2].seq, "{next:?} after {:?}", ids[2]);
    }

    #[test]
    fn unreadable_database_is_moved_aside_with_a_new_stream() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ob");
        let stream = Outbox::open(&path, 10).expect("open").stream();
        // Wreck it: sled's config file holds garbage.
        std::fs::write(path.join("conf"), b"garbage that is not a sled config").expect("write");
        let o = Outbox::open(&path, 10).expect("reopen rebuilds");
        assert_ne!(o.stream(), stream);
        assert!(o.is_empty());
        let aside = std::fs::read_dir(dir.path())
            .expect("ls")
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().contains("broken-"));
        assert!(aside, "the broken database is kept for inspection");
    }

    #[test]
    fn full_outbox_drops_oldest_and_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = Outbox::open(&dir.path().join("ob"), 3).expect("open");
        let ids = append(&o, 5);
        assert_eq!(o.len(), 3);
        assert_eq!(o.dropped(), 2);
        let left: Vec<u64> = o
            .after(None, 10)
            .expect("read")
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(left, ids[2..].iter().map(|i| i.seq).collect::<Vec<_>>());
    }

    #[test]
    fn concurrent_appenders_never_leave_a_gap_behind_a_cursor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = std::sync::Arc::new(Outbox::open(&dir.path().join("ob"), 100_000).expect("open"));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let o = o.clone();
                std::thread::spawn(move || append(&o, 200))
            })
            .collect();
        // A reader following with a cursor while appenders run sees every entry exactly once.
        let mut cursor = None;
        let mut seen = Vec::new();
        while seen.len() < 800 {
            for e in o.after(cursor, 64).expect("read") {
                cursor = Some(e.seq);
                seen.push(e.seq);
            }
        }
        for t in threads {
            t.join().expect("thread");
        }
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 800);
        assert_eq!(sorted, seen, "read in order");
    }
}
