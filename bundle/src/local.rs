//! What the agent's `Verify` and `Install` actions do with a bundle file on this machine (a
//! download, or a file carried to a site without a path to the fleet).
//!
//! Both passes read the whole file: `verify_file` checks everything, the payload hash included,
//! and writes nothing; `install_file` checks everything again while it streams the payload into
//! the slot backend's staging area (the file may have changed between the two), which keeps it
//! only after the payload's end checked out.

use crate::agent::Refusal;
use crate::format::{BundleError, BundleMeta, Device, Unverified};
use crate::slot::{SlotBackend, SlotError};
use crate::trust::TrustStore;
use crate::types::Timestamp;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

/// An install that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The bundle was refused.
    #[error("{0}")]
    Refused(#[from] BundleError),
    /// The slot backend failed.
    #[error("{0}")]
    Slot(#[from] SlotError),
}

impl From<&BundleError> for Refusal {
    fn from(e: &BundleError) -> Self {
        Refusal::new(e.code(), e.to_string())
    }
}

impl From<&InstallError> for Refusal {
    fn from(e: &InstallError) -> Self {
        match e {
            InstallError::Refused(b) | InstallError::Slot(SlotError::Payload(b)) => b.into(),
            InstallError::Slot(s) => Refusal::new("install_failed", s.to_string()),
        }
    }
}

fn open(path: &Path, device: &Device) -> Result<Unverified<BufReader<File>>, BundleError> {
    let file = File::open(path).map_err(BundleError::Io)?;
    Unverified::open(BufReader::with_capacity(1 << 20, file), device.max_payload)
}

/// Verify a bundle file completely for `device`; nothing is written.
pub fn verify_file(
    path: &Path,
    trust: &TrustStore,
    device: &Device,
    now: Timestamp,
    progress: &mut dyn FnMut(u64),
) -> Result<BundleMeta, BundleError> {
    open(path, device)?
        .verify(trust, device, now)?
        .payload()
        .check_all(progress)
}

/// Verify a bundle file again and install its payload into `slots` (outside the version in
/// force); nothing is kept unless every check passed.
pub fn install_file<B: SlotBackend>(
    path: &Path,
    trust: &TrustStore,
    device: &Device,
    now: Timestamp,
    slots: &mut B,
) -> Result<BundleMeta, InstallError> {
    let verified = open(path, device)?.verify(trust, device, now)?;
    let meta = verified.metadata().clone();
    slots.install(&meta.version, &mut verified.payload())?;
    Ok(meta)
}

/// After a commit: the trust store's floor rises to the committed bundle's floor.
pub fn committed(trust: &mut TrustStore, meta: &BundleMeta) {
    if let Some(floor) = &meta.floor {
        trust.raise_floor(floor);
    }
}
