//! The box the appliance runs on: hardware profile check at start, status LEDs, the hardware
//! and systemd watchdogs (petted only while the listener and the spool are healthy), and the
//! hardware inventory. Everything here is optional on a plain server: without a profile there
//! is no hardware watchdog and no LED, only systemd's notify protocol when systemd asks for it.

use crate::config::HardwareSection;
use crate::handle::{App, Hardware};
use medgate_hardware::storage::Smartctl;
use medgate_hardware::{
    ApplianceState, HardwareWatchdog, Health, Inventory, Leds, Profile, SdNotify, StateInputs,
    SysRoot, WatchdogPolicy, Watchdogs,
};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the inventory is refreshed.
const INVENTORY_EVERY: Duration = Duration::from_secs(60);

/// Errors that stop start-up.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    /// The profile could not be loaded.
    #[error("hardware profile: {0}")]
    Profile(String),
    /// The box does not match its profile.
    #[error("this machine does not match hardware profile {profile}: {detail}")]
    Mismatch {
        /// Profile name.
        profile: String,
        /// What differs.
        detail: String,
    },
    /// The hardware watchdog could not be armed.
    #[error("hardware watchdog: {0}")]
    Watchdog(String),
}

/// The box, prepared before the listeners start.
#[derive(Debug)]
pub struct Board {
    root: SysRoot,
    profile: Option<Profile>,
    leds: Option<Leds>,
}

impl Board {
    /// Loads and checks the profile and shows "booting".
    pub fn prepare(cfg: &HardwareSection) -> Result<Board, BoardError> {
        let root = SysRoot::new(cfg.sysfs_root.clone());
        let profile = match cfg.profile.as_deref() {
            None => None,
            Some(p) if p.contains('/') || p.ends_with(".toml") => Some(
                Profile::load(std::path::Path::new(p))
                    .map_err(|e| BoardError::Profile(e.to_string()))?,
            ),
            Some(name) => {
                Some(Profile::builtin(name).map_err(|e| BoardError::Profile(e.to_string()))?)
            }
        };
        if let Some(p) = &profile {
            p.check_hardware(&root).map_err(|e| BoardError::Mismatch {
                profile: p.name.clone(),
                detail: e.to_string(),
            })?;
        }
        let mut leds = profile
            .as_ref()
            .and_then(|p| p.leds.clone())
            .map(|m| Leds::new(root.clone(), m));
        if let Some(l) = leds.as_mut() {
            if let Err(e) = l.show(ApplianceState::Booting) {
                tracing::warn!(error = %e, "cannot set the status LEDs");
            }
        }
        Ok(Board {
            root,
            profile,
            leds,
        })
    }

    /// The profile's name, if any.
    pub fn profile_name(&self) -> Option<&str> {
        self.profile.as_ref().map(|p| p.name.as_str())
    }

    /// Arms the watchdogs and tells systemd we are ready. Call once the listeners serve.
    pub fn arm(&self) -> Result<Watchdogs, BoardError> {
        let systemd = SdNotify::from_env().map_err(|e| BoardError::Watchdog(e.to_string()))?;
        let mut timeout = medgate_hardware::notify::watchdog_timeout_from_env()
            .unwrap_or(Duration::from_secs(30));
        let hardware = match &self.profile {
            Some(p) => match HardwareWatchdog::open(&self.root, &p.watchdog.device) {
                Ok(mut hw) => {
                    let secs = hw
                        .set_timeout(p.watchdog.timeout_secs)
                        .map_err(|e| BoardError::Watchdog(e.to_string()))?;
                    timeout = timeout.min(Duration::from_secs(u64::from(secs)));
                    Some(hw)
                }
                Err(e) if p.watchdog.required => return Err(BoardError::Watchdog(e.to_string())),
                Err(e) => {
                    tracing::warn!(error = %e, "no hardware watchdog (the profile does not require one)");
                    None
                }
            },
            None => None,
        };
        let wd = Watchdogs::new(WatchdogPolicy::for_timeout(timeout), hardware, systemd);
        if let Some(sd) = wd.systemd() {
            if let Err(e) = sd.ready("receiving DICOM") {
                tracing::warn!(error = %e, "cannot notify systemd");
            }
        }
        Ok(wd)
    }

    /// Pets the watchdogs while healthy, drives the LEDs, refreshes the inventory, until shutdown.
    pub async fn supervise(
        mut self,
        mut wd: Watchdogs,
        app: Arc<App>,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(wd.pet_interval().min(Duration::from_secs(5)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_inventory: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {},
                () = shutdown.cancelled() => break,
            }
            let health = Health {
                listener_ok: app.listeners_ok(),
                spool_ok: app.listener().spool_ok.load(Ordering::Relaxed),
            };
            let now = Instant::now();
            wd.report(health, now);
            if let Err(e) = wd.tick(now) {
                tracing::error!(error = %e, "cannot pet a watchdog");
            }
            if let Some(profile) = &self.profile {
                if last_inventory.is_none_or(|t| t.elapsed() >= INVENTORY_EVERY) {
                    last_inventory = Some(Instant::now());
                    let (root, profile, dir) = (
                        self.root.clone(),
                        profile.clone(),
                        app.cfg().appliance.data_dir.clone(),
                    );
                    if let Ok(inv) = tokio::task::spawn_blocking(move || {
                        let inv =
                            Inventory::collect(&root, &profile, &[dir], Smartctl::find().as_ref());
                        let alarms = inv.alarms(&profile);
                        Hardware {
                            inventory: inv,
                            alarms,
                        }
                    })
                    .await
                    {
                        app.set_hardware(inv);
                    }
                }
            }
            let degraded =
                app.hub().destinations.iter().any(|d| d.snapshot().down) || app.hardware_alarmed();
            if let Some(leds) = self.leds.as_mut() {
                let state = ApplianceState::decide(&StateInputs {
                    started: true,
                    health,
                    updating: false,
                    degraded,
                });
                if let Err(e) = leds.show(state) {
                    tracing::warn!(error = %e, "cannot set the status LEDs");
                }
            }
        }
        if let Err(e) = wd.shutdown() {
            tracing::warn!(error = %e, "watchdog shutdown");
        }
    }
}
