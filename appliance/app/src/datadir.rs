//! The data directory: one appliance per directory, owner-only files.
//!
//! [`DataDir::claim`] is the first thing a running appliance does with its `data_dir`, before it
//! opens the spool, the index, the outbox or anything else under it:
//! - it takes an exclusive, non-blocking `flock` on `<data_dir>/medgate.lock` and writes its
//!   process id there. A second instance on the same directory is refused at once, before it
//!   touches anything, with the holder's pid (the kernel drops the lock when the holder dies,
//!   so a crashed instance never leaves a stale lock behind);
//! - it sets the process umask to `0077`, so every file and directory the appliance creates
//!   (objects, index, outbox, audit list, identity, diagnostics) is owner-only whoever starts
//!   it and whatever the caller's umask was;
//! - it makes everything already under the directory owner-only and says so, with counts, when
//!   it found something wider (an earlier run by hand under umask 022, a restored backup).

use nix::fcntl::{Flock, FlockArg};
use nix::sys::stat::{Mode, umask};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The lock file's name under `data_dir`.
pub const LOCK_FILE: &str = "medgate.lock";

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Another process holds the directory.
    #[error(
        "the data directory {dir} is in use by another medgate-appliance ({holder}); a second instance would work the same spool, so nothing was started and nothing under {dir} was changed. \
         Check the running one with `systemctl status medgate-appliance` (or `medgate-appliance status`), stop it first, or give this instance its own appliance.data_dir"
    )]
    InUse {
        /// The directory.
        dir: PathBuf,
        /// Who holds it, as far as the lock file says ("pid 1234" or "pid unknown").
        holder: String,
    },
    /// A filesystem operation failed.
    #[error(
        "cannot {op} {path}: {source}; check that the directory exists and belongs to the service user"
    )]
    Io {
        /// What we were doing.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DataDirError + 'a {
    move |source| DataDirError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// What [`DataDir::claim`] found wider than owner-only and made private.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tightened {
    /// Files whose group or other permission bits were removed.
    pub files: u64,
    /// Directories whose group or other permission bits were removed.
    pub dirs: u64,
}

/// The claim on a data directory: held for as long as the appliance runs in this process.
#[derive(Debug)]
pub struct DataDir {
    dir: PathBuf,
    _lock: Flock<File>,
    tightened: Tightened,
}

/// Makes every file creation of this process owner-only (umask 0077). Idempotent.
pub fn private_umask() {
    umask(Mode::from_bits_truncate(0o077));
}

impl DataDir {
    /// Claims `dir` for this process: private umask, the directory created (0700) if missing, the
    /// exclusive lock taken, existing content made owner-only. Refuses with
    /// [`DataDirError::InUse`] when another process holds it.
    pub fn claim(dir: &Path) -> Result<DataDir, DataDirError> {
        private_umask();
        fs::create_dir_all(dir).map_err(io("create", dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) => format!("pid {pid}"),
                    Err(_) => "pid unknown".to_string(),
                };
                return Err(DataDirError::InUse {
                    dir: dir.to_path_buf(),
                    holder,
                });
            }
            Err((_, errno)) => {
                return Err(DataDirError::Io {
                    op: "lock",
                    path: lock_path,
                    source: std::io::Error::from(errno),
                });
            }
        };
        // Ours now: record who holds it, for the message a second instance prints.
        lock.set_len(0).map_err(io("write", &lock_path))?;
        lock.rewind().map_err(io("write", &lock_path))?;
        writeln!(lock, "{}", std::process::id()).map_err(io("write", &lock_path))?;
        let tightened = make_private(dir)?;
        if tightened != Tightened::default() {
            tracing::warn!(
                dir = %dir.display(),
                files = tightened.files,
                dirs = tightened.dirs,
                "found files or directories of the data directory readable by others (patient data); made them owner-only"
            );
        }
        Ok(DataDir {
            dir: dir.to_path_buf(),
            _lock: lock,
            tightened,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// What the claim made owner-only.
    pub fn tightened(&self) -> Tightened {
        self.tightened
    }
}

/// Removes the group and other bits of `dir` and of everything below it (symbolic links are
/// neither followed nor changed).
fn make_private(dir: &Path) -> Result<Tightened, DataDirError> {
    let mut found = Tightened::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).map_err(io("read the metadata of", &path))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7700))
                .map_err(io("restrict the permissions of", &path))?;
            if meta.is_dir() {
                found.dirs += 1;
            } else {
                found.files += 1;
            }
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&path).map_err(io("list", &path))? {
                stack.push(entry.map_err(io("list", &path))?.path());
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_refused_with_the_holders_pid_and_changes_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let first = DataDir::claim(tmp.path()).expect("first claim");
        fs::write(tmp.path().join("marker"), b"x").expect("write");
        // A second open file description on the same file: what another process would do.
        let err = DataDir::claim(tmp.path()).expect_err("second claim");
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(
            text.contains("systemctl status medgate-appliance"),
            "{text}"
        );
        assert!(tmp.path().join("marker").exists());
        drop(first);
        // Released with its holder.
        DataDir::claim(tmp.path()).expect("claim after release");
    }

    #[test]
    fn existing_content_is_made_owner_only() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sub = tmp.path().join("spool").join("objects");
        fs::create_dir_all(&sub).expect("mkdir");
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o755)).expect("chmod");
        let f = sub.join("1.dcm");
        fs::write(&f, b"x").expect("write");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).expect("chmod");
        let claim = DataDir::claim(tmp.path()).expect("claim");
        assert!(claim.tightened().files >= 1 && claim.tightened().dirs >= 1);
        for p in [&sub, &f] {
            let mode = fs::metadata(p).expect("meta").permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", p.display());
        }
        // Created after the claim: owner-only through the umask.
        let new = tmp.path().join("new-file");
        fs::write(&new, b"x").expect("write");
        let mode = fs::metadata(&new).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }
}
