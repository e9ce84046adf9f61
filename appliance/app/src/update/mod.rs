//! The update agent's shell (docs/ota.md): `medgate-appliance update --file` ([`local`]) and
//! the task inside the running appliance ([`agent`]) that feeds the sans-IO
//! [`medgate_bundle::agent::Agent`] the real DICOM activity, the clock and the health probes,
//! and carries out its actions on the slots ([`Slots`]: `update.backend`).
//!
//! Directory slots ([`medgate_bundle::slot::DirBackend`], a Debian server): a "version" is the
//! `medgate-appliance` executable (the bundle's `appliance_binaries` payload); the service runs
//! `<slots_dir>/current/medgate-appliance`. A switch replaces the running process by the new
//! version (`exec`, same pid, same command line), which starts on probation and proves health
//! or rolls back and `exec`s the previous version again.
//!
//! A/B slots ([`medgate_bundle::slot_ab::AbBackend`], the image): a version is a whole root
//! (`root_image` payload) in the inactive partitions; a switch or a rollback reboots the box
//! (through the root helper `medgate-slot-apply`), and the boot into the new slot is on
//! probation.

pub mod agent;
pub mod download;
pub mod inbox;
pub mod local;
pub mod state;
pub mod view;

use crate::config::{Config, UpdateBackend, UpdateSection};
use medgate_bundle::agent::{Policy, WaitReason};
use medgate_bundle::format::Payload;
use medgate_bundle::slot::{DirBackend, SlotBackend, SlotError, SlotStatus};
use medgate_bundle::slot_ab::{AbBackend, AbPaths, SlotTool};
use medgate_bundle::{Device, Name, PayloadKind, TrustStore, Version};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the root helper `medgate-slot-apply` answers the A/B backend's requests.
pub const SLOT_APPLY_ANSWERS: &str = "/run/medgate-slot-apply";
/// How long the A/B backend waits for the helper.
const SLOT_APPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// The slots `update.backend` names.
#[derive(Debug)]
pub enum Slots {
    /// `directory`.
    Dir(DirBackend),
    /// `ab`.
    Ab(AbBackend),
}

impl Slots {
    /// Opens the backend of `[update]` (the A/B one keeps its files in `<data_dir>/update/ab`).
    pub fn open(cfg: &Config, u: &UpdateSection) -> Result<Self, UpdateError> {
        match u.backend {
            UpdateBackend::Directory => {
                let dir = u.slots_dir.as_ref().ok_or(UpdateError::NotConfigured)?;
                Ok(Self::Dir(DirBackend::open(dir)?))
            }
            UpdateBackend::Ab => {
                let dir = state::dir(&cfg.appliance.data_dir).join("ab");
                Ok(Self::Ab(AbBackend::new(
                    AbPaths::image(dir.clone()),
                    SlotTool::Helper {
                        dir,
                        answers: PathBuf::from(SLOT_APPLY_ANSWERS),
                        timeout: SLOT_APPLY_TIMEOUT,
                    },
                )))
            }
        }
    }

    /// A switch or a rollback reboots the box (A/B) rather than `exec`ing a program.
    pub fn reboots(&self) -> bool {
        matches!(self, Self::Ab(_))
    }
}

impl SlotBackend for Slots {
    fn status(&self) -> Result<SlotStatus, SlotError> {
        match self {
            Self::Dir(b) => b.status(),
            Self::Ab(b) => b.status(),
        }
    }
    fn install<R: Read>(
        &mut self,
        version: &Version,
        payload: &mut Payload<R>,
    ) -> Result<(), SlotError> {
        match self {
            Self::Dir(b) => b.install(version, payload),
            Self::Ab(b) => b.install(version, payload),
        }
    }
    fn switch(&mut self, version: &Version) -> Result<(), SlotError> {
        match self {
            Self::Dir(b) => b.switch(version),
            Self::Ab(b) => b.switch(version),
        }
    }
    fn commit(&mut self) -> Result<(), SlotError> {
        match self {
            Self::Dir(b) => b.commit(),
            Self::Ab(b) => b.commit(),
        }
    }
    fn rollback(&mut self) -> Result<(), SlotError> {
        match self {
            Self::Dir(b) => b.rollback(),
            Self::Ab(b) => b.rollback(),
        }
    }
}

/// The program's name in a version's directory.
pub const PROGRAM: &str = "medgate-appliance";
/// The product bundles must name.
pub const PRODUCT: &str = "medgate-appliance";

/// A program and its arguments.
pub type Program = (PathBuf, Vec<String>);

/// A program to `exec` once the appliance stopped (set by a switch or a rollback).
#[derive(Debug, Clone, Default)]
pub struct Restart(Arc<Mutex<Option<Program>>>);

impl Restart {
    fn set(&self, program: PathBuf, args: Vec<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((program, args));
    }
    /// The program and arguments to replace this process with, if a switch asked for it.
    pub fn take(&self) -> Option<Program> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Why the agent shell cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// No `[update]` section.
    #[error(
        "no usable [update] section in the configuration: set update.hardware, and update.slots_dir or update.backend = \"ab\" (see `medgate-appliance config example`)"
    )]
    NotConfigured,
    /// The trust store is missing or unreadable.
    #[error(
        "cannot use the trust store {path}: {reason}; create it with `medgate-bundle trust init --root root.json --keys keys.json --out {path}`"
    )]
    Trust {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The slot directory.
    #[error("slot directory: {0}")]
    Slot(#[from] SlotError),
    /// The state files.
    #[error(transparent)]
    State(#[from] state::StateError),
}

/// The `[update]` section, or why there is none.
pub fn section(cfg: &Config) -> Result<&UpdateSection, UpdateError> {
    cfg.update.as_ref().ok_or(UpdateError::NotConfigured)
}

/// The agent's policy from `[update]`.
pub fn policy(u: &UpdateSection) -> Policy {
    Policy {
        queue_bound: u.queue_bound,
        quiet_secs: u.quiet_secs,
        health_deadline_secs: u.health_deadline_secs,
        probe_interval_secs: u.probe_interval_secs,
        ..Policy::default()
    }
}

/// The trust store's path.
pub fn trust_path(cfg: &Config) -> PathBuf {
    state::dir(&cfg.appliance.data_dir).join(state::TRUST)
}

/// Reads the trust store.
pub fn load_trust(cfg: &Config) -> Result<TrustStore, UpdateError> {
    let path = trust_path(cfg);
    let bytes = std::fs::read(&path).map_err(|e| UpdateError::Trust {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    TrustStore::from_json(&bytes).map_err(|e| UpdateError::Trust {
        path,
        reason: e.to_string(),
    })
}

/// Writes the trust store back (after a commit raised its floor).
pub fn save_trust(cfg: &Config, trust: &TrustStore) -> Result<(), UpdateError> {
    let path = trust_path(cfg);
    let tmp = path.with_extension("json.new");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(trust.to_json().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| UpdateError::Trust {
        path: path.clone(),
        reason: e.to_string(),
    })
}

/// The version this process is, as far as the slots say (the package's own before the first
/// install).
pub fn running_version(slots: &impl SlotBackend) -> Result<Version, UpdateError> {
    match slots.status()?.active {
        Some(v) => Ok(v),
        None => Ok(env!("CARGO_PKG_VERSION")
            .parse()
            .map_err(|_| SlotError::Damaged(PathBuf::from(env!("CARGO_PKG_VERSION"))))?),
    }
}

/// What this device accepts.
pub fn device(u: &UpdateSection, installed: Version) -> Result<Device, UpdateError> {
    let hardware: Name = u.hardware.parse().map_err(|_| UpdateError::NotConfigured)?;
    let product: Name = PRODUCT.parse().map_err(|_| UpdateError::NotConfigured)?;
    Ok(Device {
        product,
        hardware,
        installed,
        accepts: match u.backend {
            UpdateBackend::Directory => PayloadKind::ApplianceBinaries,
            UpdateBackend::Ab => PayloadKind::RootImage,
        },
        max_payload: u.max_payload_bytes,
        allow_downgrade: false,
    })
}

/// The program of the version in force (directory slots; none for A/B).
pub fn current_program(u: &UpdateSection) -> Option<PathBuf> {
    u.slots_dir
        .as_ref()
        .map(|dir| dir.join("current").join(PROGRAM))
}

/// After an install into directory slots: the payload becomes the version's executable program
/// (`versions/<v>/medgate-appliance`, mode 0755). Nothing for A/B slots (the root holds it).
pub fn make_program(slots: &Slots, version: &Version) -> Result<(), UpdateError> {
    use std::os::unix::fs::PermissionsExt;
    let Slots::Dir(slots) = slots else {
        return Ok(());
    };
    let dir = slots.version_dir(version);
    let payload = dir.join("payload");
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| {
            UpdateError::Slot(SlotError::Io {
                op,
                path: path.clone(),
                source,
            })
        }
    };
    std::fs::set_permissions(&payload, std::fs::Permissions::from_mode(0o755))
        .map_err(io("chmod", &payload))?;
    let program = dir.join(PROGRAM);
    if program.symlink_metadata().is_err() {
        std::os::unix::fs::symlink("payload", &program).map_err(io("link", &program))?;
    }
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", &dir))
}

/// The reason's stable code (the metric label, the status's `reason`).
pub fn reason_code(r: &WaitReason) -> &'static str {
    match r {
        WaitReason::ActivityUnknown => "activity_unknown",
        WaitReason::Associations(_) => "associations_active",
        WaitReason::StudyArriving { .. } => "study_arriving",
        WaitReason::RecentObject { .. } => "recent_object",
        WaitReason::OutsideWindow { .. } => "outside_window",
        WaitReason::Queue { .. } => "forward_queue",
        WaitReason::DownloadRetry { .. } => "download_retry",
    }
}
