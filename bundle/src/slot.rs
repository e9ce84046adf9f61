//! Slot backends: where a verified payload is installed, how the device switches to it, and
//! how it commits or rolls back.
//!
//! [`SlotBackend`] is what the update agent's shell drives; [`DirBackend`] is the directory
//! backend for a Debian server and for tests: versioned directories, an atomic symlink switch,
//! fsync at every step, so that a stop (kill -9, power loss) at any point leaves either the old
//! version or the new one in force, never a mix. The image's A/B partitions (`medgate-slot`)
//! are the other backend, [`crate::slot_ab::AbBackend`].

use crate::format::{BundleError, Payload};
use crate::types::Version;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// What the slots hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotStatus {
    /// The version in force (`None`: nothing installed yet).
    pub active: Option<Version>,
    /// Versions installed and complete besides the active one.
    pub installed: Vec<Version>,
    /// The active version is on probation since a switch, with the version to go back to.
    pub probation: Option<Probation>,
}

/// A switch not yet committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probation {
    /// The version being tried.
    pub trying: Version,
    /// The version a rollback returns to.
    pub previous: Version,
}

/// A slot operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// A file operation failed.
    #[error("{op} {path}: {source}; check the slot directory's disk and permissions")]
    Io {
        /// What was done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The payload was refused while it was written; nothing was committed.
    #[error("the payload was refused while being written, nothing installed: {0}")]
    Payload(#[source] BundleError),
    /// A version that is not installed.
    #[error("version {0} is not installed in a slot: install it first")]
    NotInstalled(Version),
    /// Switch to the version in force.
    #[error("version {0} is already the one in force")]
    AlreadyActive(Version),
    /// Install over the version a rollback would return to.
    #[error("version {0} is the one a rollback returns to: commit or roll back the switch first")]
    InUse(Version),
    /// Nothing to go back to.
    #[error("no switch on probation: nothing to commit or roll back")]
    NoProbation,
    /// Something in the slot directory that this backend did not write.
    #[error(
        "the slot directory holds {0}, which this backend does not understand: repair it by hand"
    )]
    Damaged(PathBuf),
    /// The root-image payload does not fit this device (A/B backend).
    #[error("the root image cannot be installed, nothing was made bootable: {0}")]
    RootImage(#[from] crate::rootimage::HeaderError),
    /// `medgate-slot` (or its root helper) failed (A/B backend).
    #[error(
        "`{command}` failed: {message}; see `medgate-slot status` and the journal of medgate-slot-apply.service"
    )]
    Tool {
        /// The command.
        command: String,
        /// What it said.
        message: String,
    },
    /// The kernel command line names no slot (A/B backend).
    #[error(
        "{0} names no slot (medgate.slot=A|B): this system was not booted from the image's A/B slots; use update.backend = \"directory\""
    )]
    NotBooted(PathBuf),
}

/// Where payloads are installed and switched to.
pub trait SlotBackend {
    /// What the slots hold.
    fn status(&self) -> Result<SlotStatus, SlotError>;
    /// Install `payload` as `version` outside the version in force. Nothing is kept unless the
    /// payload was read to its end without error (its size and hash are checked there).
    fn install<R: Read>(
        &mut self,
        version: &Version,
        payload: &mut Payload<R>,
    ) -> Result<(), SlotError>;
    /// Make the installed `version` the one in force, on probation.
    fn switch(&mut self, version: &Version) -> Result<(), SlotError>;
    /// End the probation: the version in force stays.
    fn commit(&mut self) -> Result<(), SlotError>;
    /// End the probation by going back to the previous version.
    fn rollback(&mut self) -> Result<(), SlotError>;
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SlotError + 'a {
    move |source| SlotError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn sync_dir(dir: &Path) -> Result<(), SlotError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// The directory backend:
///
/// ```text
/// <root>/versions/<version>/payload   complete installs (renamed in whole from staging/)
/// <root>/staging/<version>/           an install under way (removed on open)
/// <root>/current -> versions/<v>      the version in force (replaced by rename: atomic)
/// <root>/previous -> versions/<v>     the version before the last switch
/// <root>/probation                    "<trying> <previous>" while a switch is not committed
/// ```
#[derive(Debug)]
pub struct DirBackend {
    root: PathBuf,
}

/// An install under way in `staging/` (the steps of [`SlotBackend::install`], public so that a
/// test can stop between them as a kill would).
#[derive(Debug)]
pub struct Installation {
    version: Version,
    staging: PathBuf,
    file: File,
}

impl DirBackend {
    /// Open (create) the slot directory and repair what a stop left: installs under way are
    /// removed, a probation marker that does not match the version in force is dropped (the
    /// switch or the rollback it belonged to did not happen, or did in full), half-made links
    /// are removed.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, SlotError> {
        let root = root.into();
        for dir in [root.join("versions"), root.join("staging")] {
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        }
        let staging = root.join("staging");
        for entry in fs::read_dir(&staging).map_err(io_err("list", &staging))? {
            let path = entry.map_err(io_err("list", &staging))?.path();
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(io_err("remove", &path))?;
        }
        sync_dir(&staging)?;
        for tmp in ["current.new", "previous.new", "probation.new"] {
            let path = root.join(tmp);
            if path.symlink_metadata().is_ok() {
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
        }
        let backend = Self { root };
        if let Some(p) = backend.read_probation()? {
            if backend.link("current")?.as_ref() != Some(&p.trying) {
                backend.remove_probation()?;
            }
        }
        sync_dir(&backend.root)?;
        Ok(backend)
    }

    /// The directory of an installed version.
    pub fn version_dir(&self, version: &Version) -> PathBuf {
        self.root.join("versions").join(version.to_string())
    }

    fn link(&self, name: &str) -> Result<Option<Version>, SlotError> {
        let path = self.root.join(name);
        match fs::read_link(&path) {
            Ok(target) => {
                let v = target
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse().ok());
                v.map(Some).ok_or(SlotError::Damaged(path))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SlotError::Io {
                op: "read link",
                path,
                source: e,
            }),
        }
    }

    fn set_link(&self, name: &str, version: &Version) -> Result<(), SlotError> {
        let tmp = self.root.join(format!("{name}.new"));
        let path = self.root.join(name);
        let target = Path::new("versions").join(version.to_string());
        if tmp.symlink_metadata().is_ok() {
            fs::remove_file(&tmp).map_err(io_err("remove", &tmp))?;
        }
        std::os::unix::fs::symlink(&target, &tmp).map_err(io_err("link", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
        sync_dir(&self.root)
    }

    fn read_probation(&self) -> Result<Option<Probation>, SlotError> {
        let path = self.root.join("probation");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(SlotError::Io {
                    op: "read",
                    path,
                    source: e,
                });
            }
        };
        let mut parts = text.split_whitespace().map(str::parse::<Version>);
        match (parts.next(), parts.next(), parts.next()) {
            (Some(Ok(trying)), Some(Ok(previous)), None) => {
                Ok(Some(Probation { trying, previous }))
            }
            _ => Err(SlotError::Damaged(path)),
        }
    }

    fn write_probation(&self, p: &Probation) -> Result<(), SlotError> {
        let tmp = self.root.join("probation.new");
        let path = self.root.join("probation");
        let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        writeln!(f, "{} {}", p.trying, p.previous).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
        sync_dir(&self.root)
    }

    fn remove_probation(&self) -> Result<(), SlotError> {
        let path = self.root.join("probation");
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.root),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SlotError::Io {
                op: "remove",
                path,
                source: e,
            }),
        }
    }

    /// Step 1 of an install: a fresh staging directory and its payload file.
    pub fn begin_install(&mut self, version: &Version) -> Result<Installation, SlotError> {
        if self.link("current")?.as_ref() == Some(version) {
            return Err(SlotError::AlreadyActive(version.clone()));
        }
        if self
            .read_probation()?
            .is_some_and(|p| p.previous == *version)
        {
            return Err(SlotError::InUse(version.clone()));
        }
        let staging = self.root.join("staging").join(version.to_string());
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io_err("remove", &staging))?;
        }
        fs::create_dir(&staging).map_err(io_err("create", &staging))?;
        let path = staging.join("payload");
        let file = File::create(&path).map_err(io_err("create", &path))?;
        Ok(Installation {
            version: version.clone(),
            staging,
            file,
        })
    }

    /// Step 3 of an install: make the staged payload durable and put it in place in whole.
    pub fn finish_install(&mut self, mut inst: Installation) -> Result<(), SlotError> {
        let payload = inst.staging.join("payload");
        inst.file.flush().map_err(io_err("write", &payload))?;
        inst.file.sync_all().map_err(io_err("fsync", &payload))?;
        sync_dir(&inst.staging)?;
        let dest = self.version_dir(&inst.version);
        if dest.exists() {
            fs::remove_dir_all(&dest).map_err(io_err("remove", &dest))?;
        }
        fs::rename(&inst.staging, &dest).map_err(io_err("rename", &dest))?;
        sync_dir(&self.root.join("versions"))?;
        sync_dir(&self.root.join("staging"))
    }

    /// Remove installed versions other than the one in force and the one before it (and
    /// `keep`), so that the disk holds at most three.
    pub fn prune(&mut self, keep: &Version) -> Result<(), SlotError> {
        let keep = [
            self.link("current")?,
            self.link("previous")?,
            Some(keep.clone()),
        ];
        for v in self.status()?.installed {
            if !keep.contains(&Some(v.clone())) {
                let dir = self.version_dir(&v);
                fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))?;
            }
        }
        sync_dir(&self.root.join("versions"))
    }
}

impl Installation {
    /// Step 2 of an install: payload bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), SlotError> {
        let path = self.staging.join("payload");
        self.file.write_all(bytes).map_err(io_err("write", &path))
    }
}

impl SlotBackend for DirBackend {
    fn status(&self) -> Result<SlotStatus, SlotError> {
        let active = self.link("current")?;
        let versions = self.root.join("versions");
        let mut installed = Vec::new();
        for entry in fs::read_dir(&versions).map_err(io_err("list", &versions))? {
            let entry = entry.map_err(io_err("list", &versions))?;
            let name = entry.file_name();
            let v = name.to_str().and_then(|n| n.parse::<Version>().ok());
            let v = v.ok_or_else(|| SlotError::Damaged(entry.path()))?;
            if Some(&v) != active.as_ref() {
                installed.push(v);
            }
        }
        installed.sort();
        Ok(SlotStatus {
            active,
            installed,
            probation: self.read_probation()?,
        })
    }

    fn install<R: Read>(
        &mut self,
        version: &Version,
        payload: &mut Payload<R>,
    ) -> Result<(), SlotError> {
        let mut inst = self.begin_install(version)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match payload.read(&mut buf) {
                Ok(0) if payload.is_checked() => break,
                Ok(0) => {
                    // Only an empty read buffer gives 0 before the end; ours is not empty.
                    let staging = inst.staging.clone();
                    drop(inst);
                    fs::remove_dir_all(&staging).map_err(io_err("remove", &staging))?;
                    return Err(SlotError::Payload(BundleError::Truncated {
                        what: "payload",
                    }));
                }
                Ok(n) => inst.write(&buf[..n])?,
                Err(e) => {
                    let staging = inst.staging.clone();
                    drop(inst);
                    fs::remove_dir_all(&staging).map_err(io_err("remove", &staging))?;
                    return Err(SlotError::Payload(BundleError::from_io(e)));
                }
            }
        }
        self.finish_install(inst)
    }

    fn switch(&mut self, version: &Version) -> Result<(), SlotError> {
        if !self.version_dir(version).is_dir() {
            return Err(SlotError::NotInstalled(version.clone()));
        }
        let Some(previous) = self.link("current")? else {
            // The first install: nothing to go back to, nothing on probation.
            return self.set_link("current", version);
        };
        if previous == *version {
            return Err(SlotError::AlreadyActive(version.clone()));
        }
        // Marker first: a stop before the link leaves a marker that does not match `current`,
        // which `open` drops.
        self.write_probation(&Probation {
            trying: version.clone(),
            previous: previous.clone(),
        })?;
        self.set_link("previous", &previous)?;
        self.set_link("current", version)
    }

    fn commit(&mut self) -> Result<(), SlotError> {
        if self.read_probation()?.is_none() {
            return Err(SlotError::NoProbation);
        }
        self.remove_probation()
    }

    fn rollback(&mut self) -> Result<(), SlotError> {
        let p = self.read_probation()?.ok_or(SlotError::NoProbation)?;
        // Link first: a stop after it leaves a marker that does not match `current` (dropped).
        self.set_link("current", &p.previous)?;
        self.remove_probation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type R = Result<(), Box<dyn std::error::Error>>;

    fn v(s: &str) -> Version {
        s.parse().expect("version")
    }

    fn put(b: &mut DirBackend, version: &str, bytes: &[u8]) -> Result<(), SlotError> {
        let mut inst = b.begin_install(&v(version))?;
        inst.write(bytes)?;
        b.finish_install(inst)
    }

    fn active_payload(root: &Path) -> io::Result<Vec<u8>> {
        fs::read(root.join("current").join("payload"))
    }

    /// 1.0.0 installed and in force, committed.
    fn base(root: &Path) -> Result<DirBackend, SlotError> {
        let mut b = DirBackend::open(root)?;
        put(&mut b, "1.0.0", b"old")?;
        b.switch(&v("1.0.0"))?;
        Ok(b)
    }

    #[test]
    fn install_switch_commit_and_restart() -> R {
        let dir = tempfile::tempdir()?;
        let mut b = base(dir.path())?;
        let s = b.status()?;
        assert_eq!(
            (s.active, s.probation),
            (Some(v("1.0.0")), None),
            "the first install is not on probation"
        );
        put(&mut b, "1.1.0", b"new")?;
        assert_eq!(b.status()?.installed, vec![v("1.1.0")]);
        assert_eq!(
            active_payload(dir.path())?,
            b"old",
            "installing does not touch the version in force"
        );
        b.switch(&v("1.1.0"))?;
        assert_eq!(active_payload(dir.path())?, b"new");
        // The restart into the new version finds it on probation.
        let mut b = DirBackend::open(dir.path())?;
        let p = Probation {
            trying: v("1.1.0"),
            previous: v("1.0.0"),
        };
        assert_eq!(b.status()?.probation, Some(p));
        b.commit()?;
        let s = DirBackend::open(dir.path())?.status()?;
        assert_eq!(
            (s.active, s.probation, s.installed),
            (Some(v("1.1.0")), None, vec![v("1.0.0")])
        );
        assert!(matches!(b.commit(), Err(SlotError::NoProbation)));
        assert!(matches!(
            b.switch(&v("9.9.9")),
            Err(SlotError::NotInstalled(_))
        ));
        assert!(matches!(
            b.begin_install(&v("1.1.0")),
            Err(SlotError::AlreadyActive(_))
        ));
        put(&mut b, "1.2.0", b"newer")?;
        b.switch(&v("1.2.0"))?;
        let back = b.begin_install(&v("1.1.0"));
        assert!(
            matches!(back, Err(SlotError::InUse(_))),
            "the way back is kept"
        );
        Ok(())
    }

    #[test]
    fn rollback_returns_to_the_previous_version() -> R {
        let dir = tempfile::tempdir()?;
        let mut b = base(dir.path())?;
        put(&mut b, "1.1.0", b"bad")?;
        b.switch(&v("1.1.0"))?;
        b.rollback()?;
        let s = DirBackend::open(dir.path())?.status()?;
        assert_eq!((s.active, s.probation), (Some(v("1.0.0")), None));
        assert_eq!(active_payload(dir.path())?, b"old");
        Ok(())
    }

    #[test]
    fn kill_during_install_leaves_the_old_version() -> R {
        let dir = tempfile::tempdir()?;
        let mut b = base(dir.path())?;
        let mut inst = b.begin_install(&v("1.1.0"))?;
        inst.write(b"half of the new ")?;
        drop(inst); // killed here: never finished
        drop(b);
        let mut b = DirBackend::open(dir.path())?;
        let s = b.status()?;
        assert_eq!(
            (s.active.clone(), s.installed.clone(), s.probation),
            (Some(v("1.0.0")), vec![], None)
        );
        assert_eq!(
            fs::read_dir(dir.path().join("staging"))?.count(),
            0,
            "the half install is gone"
        );
        assert_eq!(active_payload(dir.path())?, b"old");
        // ... and the device can try again.
        put(&mut b, "1.1.0", b"new")?;
        b.switch(&v("1.1.0"))?;
        assert_eq!(active_payload(dir.path())?, b"new");
        Ok(())
    }

    #[test]
    fn kill_between_install_and_switch_keeps_the_install() -> R {
        let dir = tempfile::tempdir()?;
        let mut b = base(dir.path())?;
        put(&mut b, "1.1.0", b"new")?;
        drop(b);
        let s = DirBackend::open(dir.path())?.status()?;
        assert_eq!(
            (s.active, s.installed),
            (Some(v("1.0.0")), vec![v("1.1.0")])
        );
        Ok(())
    }

    #[test]
    fn kill_during_switch_or_rollback_leaves_one_version_in_force() -> R {
        let dir = tempfile::tempdir()?;
        let mut b = base(dir.path())?;
        put(&mut b, "1.1.0", b"new")?;
        // Switch killed after the marker, before the link (and a half-made link left behind).
        b.write_probation(&Probation {
            trying: v("1.1.0"),
            previous: v("1.0.0"),
        })?;
        std::os::unix::fs::symlink("versions/1.1.0", dir.path().join("current.new"))?;
        drop(b);
        let mut b = DirBackend::open(dir.path())?;
        let s = b.status()?;
        assert_eq!((s.active, s.probation), (Some(v("1.0.0")), None));
        assert!(dir.path().join("current.new").symlink_metadata().is_err());
        // Rollback killed after the link, before the marker was removed.
        b.switch(&v("1.1.0"))?;
        b.set_link("current", &v("1.0.0"))?;
        drop(b);
        let s = DirBackend::open(dir.path())?.status()?;
        assert_eq!((s.active, s.probation), (Some(v("1.0.0")), None));
        assert_eq!(active_payload(dir.path())?, b"old");
        Ok(())
    }

    #[test]
    fn prune_keeps_current_previous_and_the_new_one() -> R {
        let dir = tempfile::tempdir()?;
        let mut b = base(dir.path())?;
        for (n, version) in ["1.1.0", "1.2.0"].iter().enumerate() {
            put(&mut b, version, format!("v{n}").as_bytes())?;
            b.switch(&v(version))?;
            b.commit()?;
        }
        put(&mut b, "1.3.0", b"v3")?;
        put(&mut b, "1.2.5", b"stray")?;
        b.prune(&v("1.3.0"))?;
        assert_eq!(b.status()?.installed, vec![v("1.1.0"), v("1.3.0")]);
        Ok(())
    }
}
