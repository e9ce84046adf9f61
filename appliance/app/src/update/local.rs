//! `medgate-appliance update --file BUNDLE`: for a site without a path to the fleet.
//!
//! Verifies the bundle completely (signatures, threshold, expiry, compatibility, floor, payload
//! hash) against the trust store before anything is written, installs it into the inactive
//! directory slot (verified again while it streams), then hands the switch to the running
//! service — which switches when DICOM is idle, exactly as the agent decides — or, when the
//! service is not running, switches itself: the next start runs the new version on probation.

use super::state::{self, Saved, Switched};
use super::{Slots, UpdateError, device, load_trust, make_program, running_version, section};
use crate::config::Config;
use crate::datadir::{DataDir, DataDirError};
use medgate_bundle::agent::Refusal;
use medgate_bundle::local::{install_file, verify_file};
use medgate_bundle::slot::SlotBackend;
use medgate_bundle::{Timestamp, Version};
use std::path::{Path, PathBuf};

/// What `update --file` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalOutcome {
    /// Installed; the running service switches when DICOM is idle.
    HandedOver {
        /// The version installed.
        version: Version,
    },
    /// Installed and switched (the service was not running): it starts on probation.
    Switched {
        /// The version installed.
        version: Version,
        /// The version a rollback returns to.
        previous: Option<Version>,
    },
}

/// Why `update --file` did nothing (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The bundle was refused; nothing was written.
    #[error("refused ({}): {}; nothing was written", .0.code, .0.message)]
    Refused(Refusal),
    /// A switch is not committed yet.
    #[error(
        "version {0} is on probation since a switch; wait until it is committed or rolled back (`medgate-appliance status`), then try again"
    )]
    OnProbation(Version),
    /// The setup.
    #[error(transparent)]
    Update(#[from] UpdateError),
    /// The data directory.
    #[error(transparent)]
    DataDir(DataDirError),
}

impl LocalError {
    /// The refusal's code, if the bundle was refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused(r) => Some(&r.code),
            _ => None,
        }
    }
}

/// Verifies, installs and switches (or hands over) `bundle` per `cfg` (loaded from
/// `config_path`, which the restarted service is given).
pub fn update_file(
    cfg: &Config,
    config_path: &Path,
    bundle: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<LocalOutcome, LocalError> {
    let u = section(cfg)?;
    let trust = load_trust(cfg)?;
    let bundle = std::path::absolute(bundle).unwrap_or_else(|_| bundle.to_path_buf());
    let mut slots = Slots::open(cfg, u)?;
    let status = slots.status().map_err(UpdateError::from)?;
    if let Some(p) = status.probation {
        return Err(LocalError::OnProbation(p.trying));
    }
    let installed = running_version(&slots)?;
    let device = device(u, installed)?;
    let now = Timestamp::now();
    let meta = verify_file(&bundle, &trust, &device, now, progress)
        .map_err(|e| LocalError::Refused(Refusal::from(&e)))?;
    tracing::info!(version = %meta.version, bundle = %bundle.display(), "update verified");
    install_file(&bundle, &trust, &device, now, &mut slots)
        .map_err(|e| LocalError::Refused(Refusal::from(&e)))?;
    make_program(&slots, &meta.version)?;
    tracing::info!(version = %meta.version, "update installed into the inactive slot");
    let size = std::fs::metadata(&bundle).map_or(0, |m| m.len());
    let campaign = format!("local-{}", now.unix())
        .parse()
        .map_err(|_| UpdateError::NotConfigured)?;
    let mut saved = Saved {
        campaign,
        version: meta.version.clone(),
        size,
        bundle,
        floor: meta.floor.clone(),
        switched: None,
        outcome: None,
        download: None,
    };
    let data_dir = &cfg.appliance.data_dir;
    let claim = match DataDir::claim(data_dir) {
        Ok(claim) => claim,
        Err(DataDirError::InUse { .. }) => {
            state::request(data_dir, &saved).map_err(UpdateError::from)?;
            return Ok(LocalOutcome::HandedOver {
                version: meta.version,
            });
        }
        Err(e) => return Err(LocalError::DataDir(e)),
    };
    let config_path: PathBuf =
        std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    saved.switched = Some(Switched {
        previous: status.active.clone(),
        args: vec![
            "run".into(),
            "--config".into(),
            config_path.display().to_string(),
        ],
        probe_address: super::agent::probe_address(cfg.listener.bind),
        probe_ae: cfg.listener.ae_title.clone(),
    });
    state::store(data_dir, &saved).map_err(UpdateError::from)?;
    slots.switch(&meta.version).map_err(UpdateError::from)?;
    tracing::info!(version = %meta.version, previous = ?status.active.as_ref().map(ToString::to_string), "update switched; the next start runs it on probation");
    drop(claim);
    Ok(LocalOutcome::Switched {
        version: meta.version,
        previous: status.active,
    })
}
