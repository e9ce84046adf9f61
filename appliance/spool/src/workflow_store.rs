//! The workflow services' own durable state: pending storage commitment requests, the worklist
//! cache, quality-check state. Unlike the index it cannot be rebuilt from the spool files, so
//! it lives in its own sled database (`<data_dir>/workflow/`) that an index rebuild never
//! touches.

use crate::store::{is_lock_held, now_ms, open_config_waiting_for_lock};
use crate::{Result, Spool, SpoolError};
use std::path::{Path, PathBuf};

/// Its page cache: the state is small (requests, a cache of worklist answers, flags).
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// The workflow state store. Cheap to share behind an `Arc`; blocking like the spool.
#[derive(Debug)]
pub struct WorkflowStore {
    db: sled::Db,
    dir: PathBuf,
}

/// What opening the store found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkflowStoreReport {
    /// The store did not open and was moved aside (kept, never deleted) and started empty.
    pub moved_aside: Option<PathBuf>,
    /// Entries taken over from the index of an earlier version.
    pub migrated_entries: u64,
}

impl WorkflowStore {
    /// The directory of the store under a data directory.
    pub fn dir_of(data_dir: &Path) -> PathBuf {
        data_dir.join("workflow")
    }

    /// Opens (creating if needed) the store under `data_dir`, waiting while a previous
    /// instance still holds its lock. A store held by another process is an error; a store
    /// that does not open is moved aside (kept for a person to look at) and started empty:
    /// capture must not stop for the workflow services' state.
    pub fn open(data_dir: &Path) -> Result<(WorkflowStore, WorkflowStoreReport)> {
        let dir = Self::dir_of(data_dir);
        let config = || sled::Config::new().path(&dir).cache_capacity(CACHE_BYTES);
        let mut report = WorkflowStoreReport::default();
        let db = match open_config_waiting_for_lock(config) {
            Ok(db) => db,
            Err(e) if is_lock_held(&e) => return Err(SpoolError::Locked(dir)),
            Err(e) => {
                let aside = data_dir.join(format!("workflow.broken-{}", now_ms()));
                tracing::error!(error = %e, moved_to = %aside.display(), "the workflow state does not open; moved aside and started empty (pending storage commitment requests in it are not answered)");
                std::fs::rename(&dir, &aside)
                    .map_err(|e| SpoolError::io("move broken workflow state aside", &dir, e))?;
                report.moved_aside = Some(aside);
                config().open()?
            }
        };
        Ok((WorkflowStore { db, dir }, report))
    }

    /// Takes over the state earlier versions kept in the spool index (`state:<name>` trees):
    /// each entry not in this store yet is copied, the store flushed, and only then the old
    /// tree dropped from the index. Idempotent: a crash anywhere in between copies again at
    /// the next start, and an entry this store has already is never overwritten. Returns the
    /// number of entries copied.
    pub fn migrate_from(&self, spool: &Spool) -> Result<u64> {
        let mut copied = 0;
        for (name, old) in spool.legacy_state()? {
            let new = self.tree(&name)?;
            let mut n = 0u64;
            for item in old.iter() {
                let (k, v) = item?;
                if new
                    .compare_and_swap(&k, None as Option<&[u8]>, Some(v))?
                    .is_ok()
                {
                    n += 1;
                }
            }
            self.db.flush()?;
            spool.drop_legacy_state(&name)?;
            if n > 0 {
                tracing::info!(
                    tree = %name,
                    entries = n,
                    "workflow state moved from the spool index to its own store"
                );
            }
            copied += n;
        }
        Ok(copied)
    }

    /// A named tree of the store (one per kind of state, e.g. `commitment`).
    pub fn tree(&self, name: &str) -> Result<sled::Tree> {
        Ok(self.db.open_tree(name)?)
    }

    /// Where it lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Flushes it (on shutdown).
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}
