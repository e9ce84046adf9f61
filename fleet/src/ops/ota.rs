//! ota (issue 14 part 2): bundle uploads (verified with the fleet's trust store, refused with
//! the code), campaigns (create, approve, pause, resume, cancel) and the tick that runs every
//! live campaign's engine ([`crate::ota::campaign`]) on the devices' reports and health.
//!
//! Every change is saved by compare-and-set on the campaign's revision before anything is
//! published or audited, so of several replicas running the same tick one acts. Offers and
//! withdrawals go out retained (`update/desired`); every change is audited: `update.bundle_upload`,
//! `update.campaign_create|approve|pause|resume|cancel|complete`, and per device
//! `update.device_installed|failed|rolled_back|refused`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use futures_util::{Stream, StreamExt};
use medgate_bundle::format::verify_for_distribution;
use medgate_bundle::{BundleError, Timestamp, TrustStore};
use medgate_contract::{
    DesiredUpdate, DeviceId, HttpsUrl, InstallMode, Schema, Sha256Hex, SiteId, Token, UpdateAction,
    UtcWindow, now_ms,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::{Actor, OpError, Ops, random_token};
use crate::auth::SiteScope;
use crate::model::{Connection, DeviceStatus, TelemetrySample};
use crate::ota::campaign::{
    Action, BundleRef, Campaign, CampaignState, DeviceRecord, DeviceState, FailKind, Health, Input,
    Plan, assign_waves,
};
use crate::ota::target::{Candidate, Targets};
use crate::ota::window::SiteWindow;
use crate::store::audit::Outcome;
use crate::store::ota::{BundleRecord, CampaignChange, CampaignRecord};
use crate::store::{db_int, from_db, now_db};
use crate::tz::Zone;

/// The window over which a device's forwarding error rate is taken (ms).
const HEALTH_WINDOW_MS: i64 = 300_000;
/// The longest soak (30 days).
const MAX_SOAK_SECS: u64 = 30 * 86_400;

fn default_shares() -> Vec<u8> {
    vec![100]
}
fn default_soak() -> u64 {
    3600
}
fn default_threshold() -> u8 {
    10
}
fn default_mode() -> InstallMode {
    InstallMode::Soft
}

/// `POST /api/v1/campaigns`: a new campaign (a draft until an admin approves it).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    /// A name for people (1-100 characters).
    pub name: String,
    /// The bundle's SHA-256 (as uploaded).
    #[schema(value_type = String)]
    pub bundle: Sha256Hex,
    /// Whom it targets (site, tag, current version, hardware profile); none: every approved
    /// device in your sites.
    #[serde(default)]
    pub targets: Targets,
    /// Wave 0: these devices first (they must be targeted).
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub canary: Vec<DeviceId>,
    /// Then these cumulative shares of the other devices, percent, ending at 100. Default
    /// `[100]`.
    #[serde(default = "default_shares")]
    pub wave_shares: Vec<u8>,
    /// A wave's devices run the new version healthy this long before the next wave. Default
    /// 3600.
    #[serde(default = "default_soak")]
    pub soak_secs: u64,
    /// Pause by itself when more than this share of the devices offered failed. Default 10.
    #[serde(default = "default_threshold")]
    pub failure_threshold_pct: u8,
    /// `soft` (wait for idle DICOM, give up at the deadline) or `forced` (switch at the first
    /// idle moment after the deadline). Default soft.
    #[serde(default = "default_mode")]
    #[schema(value_type = String)]
    pub mode: InstallMode,
    /// The deadline (Unix ms); required when forced.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Maintenance windows per site (local time, at the site's UTC offset).
    #[serde(default)]
    pub windows: Vec<SiteWindow>,
}

/// One device of a campaign, as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CampaignDevice {
    /// The device.
    pub device: String,
    /// Its site.
    pub site: String,
    /// Its wave (0: canary).
    pub wave: u32,
    /// Where it stands (`healthy` only after the soak; `failed` with `fail`).
    pub state: DeviceState,
    /// Why it failed.
    pub fail: Option<FailKind>,
    /// The device's own code (its wait reason, or why it rolled back or refused).
    pub code: Option<String>,
    /// The version it reports installing.
    pub version: Option<String>,
    /// The version it runs.
    pub running: Option<String>,
    /// In this state since (Unix ms).
    pub since_ms: u64,
}

impl From<&DeviceRecord> for CampaignDevice {
    fn from(d: &DeviceRecord) -> Self {
        CampaignDevice {
            device: d.device.to_string(),
            site: d.site.to_string(),
            wave: d.wave,
            state: d.state,
            fail: d.fail,
            code: d.code.as_ref().map(ToString::to_string),
            version: d.version.as_ref().map(ToString::to_string),
            running: d.running.as_ref().map(ToString::to_string),
            since_ms: d.since_ms,
        }
    }
}

/// How often the upkeep ticks the campaigns, seconds.
const TICK_SECS: i64 = 5;

fn now_secs() -> i64 {
    now_db().div_euclid(1000)
}

/// A campaign's windows in UTC at `now_secs`, with its sites' `zones`. One that does not
/// resolve (its site's time zone removed since) is read at UTC, with an error in the log: a
/// window is never dropped, so a device never installs outside of it for that.
fn windows_at(
    rec: &CampaignRecord,
    zones: &BTreeMap<SiteId, Zone>,
    now_secs: i64,
) -> BTreeMap<SiteId, UtcWindow> {
    let mut windows = BTreeMap::new();
    for w in &rec.windows {
        let utc = match w.to_utc(zones.get(&w.site), now_secs) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(campaign = %rec.id, error = %e, "maintenance window read at UTC");
                let at_utc = SiteWindow {
                    utc_offset_minutes: Some(0),
                    ..w.clone()
                };
                match at_utc.to_utc(None, now_secs) {
                    Ok(u) => u,
                    Err(_) => continue,
                }
            }
        };
        windows.insert(w.site.clone(), utc);
    }
    windows
}

/// A campaign with its bundle's version and its devices (those in your sites).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CampaignView {
    /// The campaign.
    pub campaign: CampaignRecord,
    /// The version it installs.
    pub version: String,
    /// Devices by state.
    pub counts: BTreeMap<String, u64>,
    /// Its devices (in your sites).
    pub devices: Vec<CampaignDevice>,
}

impl CampaignView {
    /// Its devices (in the caller's sites) in `state`.
    pub fn count(&self, state: DeviceState) -> u64 {
        self.counts.get(state.as_str()).copied().unwrap_or(0)
    }

    /// Its devices (in the caller's sites).
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// An operator's action on a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampaignCommand {
    /// Start it.
    Approve,
    /// Offer nothing new.
    Pause,
    /// Go on.
    Resume,
    /// Withdraw what is not installed.
    Cancel,
}

impl CampaignCommand {
    fn input(self) -> Input {
        match self {
            Self::Approve => Input::Approve,
            Self::Pause => Input::Pause,
            Self::Resume => Input::Resume,
            Self::Cancel => Input::Cancel,
        }
    }
    fn audit_action(self) -> &'static str {
        match self {
            Self::Approve => "update.campaign_approve",
            Self::Pause => "update.campaign_pause",
            Self::Resume => "update.campaign_resume",
            Self::Cancel => "update.campaign_cancel",
        }
    }
}

/// A device's health figures from its raw telemetry over the recent window, oldest first: the
/// forwarding error rate between the first and last sample (since its start when it restarted
/// in between or only one sample is there) and the last sample's forward p99.
pub fn health_of(samples: &[TelemetrySample]) -> Option<Health> {
    let raw: Vec<&TelemetrySample> = samples.iter().filter(|s| s.bucket_secs == 0).collect();
    let last = raw.last()?;
    let first = raw.first()?;
    let (l, f) = (&last.data, &first.data);
    let dt_ms = u64::try_from(last.ts_ms.saturating_sub(first.ts_ms)).unwrap_or(0);
    let continuous =
        dt_ms > 0 && l.uptime_secs >= f.uptime_secs && l.errors.forward >= f.errors.forward;
    let milli_per_s = if continuous {
        (l.errors.forward - f.errors.forward).saturating_mul(1_000_000) / dt_ms
    } else {
        l.errors.forward.saturating_mul(1000) / l.uptime_secs.max(1)
    };
    Some(Health {
        forward_errors_milli_per_s: milli_per_s,
        forward_p99_ms: l.forward_latency_ms.p99,
        uptime_secs: l.uptime_secs,
    })
}

fn refused(e: &BundleError) -> OpError {
    OpError::Refused {
        code: e.code(),
        message: format!("bundle refused ({}): {e}", e.code()),
    }
}

fn bundle_record(
    meta: &medgate_bundle::BundleMeta,
    sha: Sha256Hex,
    size: u64,
    by: &str,
) -> BundleRecord {
    let ms = |t: Timestamp| db_int(t.unix().saturating_mul(1000));
    BundleRecord {
        sha256: sha,
        product: meta.product.as_str().to_owned(),
        version: meta.version.to_string(),
        hardware: meta
            .hardware
            .iter()
            .map(|h| h.as_str().to_owned())
            .collect(),
        payload_kind: meta.payload.to_string(),
        size,
        min_installed: meta.min_installed.as_ref().map(ToString::to_string),
        floor: meta.floor.as_ref().map(ToString::to_string),
        expires_ms: ms(meta.expires),
        created_ms: ms(meta.created),
        uploaded_by: by.to_owned(),
        uploaded_ms: now_db(),
    }
}

fn counts(devices: &[DeviceRecord]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for d in devices {
        *m.entry(d.state.as_str().to_owned()).or_insert(0) += 1;
    }
    m
}

/// The device rows to write: those that differ from what was loaded (the transient health
/// figures aside).
fn changed<'a>(before: &[DeviceRecord], after: &'a [DeviceRecord]) -> Vec<&'a DeviceRecord> {
    after
        .iter()
        .filter(|a| {
            !before.iter().any(|b| {
                b.device == a.device
                    && DeviceRecord {
                        latest: None,
                        ..(*a).clone()
                    } == DeviceRecord {
                        latest: None,
                        ..b.clone()
                    }
            })
        })
        .collect()
}

fn device_audit(state: DeviceState, fail: Option<FailKind>) -> Option<&'static str> {
    match (state, fail) {
        (DeviceState::Installed, _) => Some("update.device_installed"),
        (DeviceState::Failed, Some(FailKind::RolledBack)) => Some("update.device_rolled_back"),
        (DeviceState::Failed, Some(FailKind::Refused)) => Some("update.device_refused"),
        (DeviceState::Failed, _) => Some("update.device_failed"),
        _ => None,
    }
}

impl Ops {
    fn trust_store(&self) -> Result<TrustStore, OpError> {
        let Some(path) = &self.config.updates.trust_file else {
            return Err(OpError::Conflict(
                "bundle uploads need the fleet's trust store: set [updates] trust_file (made with `medgate-bundle trust init`) and restart".into(),
            ));
        };
        let bytes = std::fs::read(path).map_err(|e| {
            OpError::Conflict(format!(
                "[updates] trust_file {}: cannot read it ({e}); make it with `medgate-bundle trust init`",
                path.display()
            ))
        })?;
        TrustStore::from_json(&bytes).map_err(|e| {
            OpError::Conflict(format!(
                "[updates] trust_file {}: not a trust store ({e}); make it with `medgate-bundle trust init`",
                path.display()
            ))
        })
    }

    /// Stores an uploaded bundle (the raw `.mgb` file as a stream of byte chunks): written to a
    /// temporary file under the data directory (at most `[updates] max_bundle_mib`), verified
    /// with the trust store (refused with its code), then stored in chunks. An upload of a
    /// bundle already stored answers its record (`false`: not new). Audited as
    /// `update.bundle_upload`.
    pub async fn upload_bundle<S, B, E>(
        &self,
        actor: &Actor,
        mut body: S,
    ) -> Result<(BundleRecord, bool), OpError>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let trust = self.trust_store()?;
        let max = self.config.updates.max_bundle_mib.saturating_mul(1 << 20);
        let dir = self.config.data_dir.join("tmp");
        let io = |what: &str, e: std::io::Error| {
            OpError::Corrupt(format!("{what} under {}: {e}", dir.display()))
        };
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io("cannot create the upload directory", e))?;
        let path: PathBuf = dir.join(format!("bundle-{}.part", &random_token()?[..16]));
        let result = self
            .receive_and_store(actor, &mut body, &path, max, trust)
            .await;
        let _ = tokio::fs::remove_file(&path).await;
        let target = match &result {
            Ok((r, _)) => format!("bundle:{}", r.sha256),
            Err(_) => "bundle".to_owned(),
        };
        match &result {
            Ok((r, true)) => {
                self.audit(
                    actor,
                    "update.bundle_upload",
                    &target,
                    Outcome::Ok,
                    None,
                    Some(json!({"product": r.product, "version": r.version, "size": r.size, "hardware": r.hardware}).to_string()),
                )
                .await;
            }
            Ok((_, false)) => {}
            Err(e @ (OpError::Refused { .. } | OpError::TooLarge(_) | OpError::Invalid(_))) => {
                let code = match e {
                    OpError::Refused { code, .. } => *code,
                    OpError::TooLarge(_) => "too_large",
                    _ => "invalid",
                };
                self.audit(
                    actor,
                    "update.bundle_upload",
                    &target,
                    Outcome::Failed,
                    None,
                    Some(json!({"code": code, "reason": e.to_string()}).to_string()),
                )
                .await;
            }
            Err(_) => {}
        }
        result
    }

    async fn receive_and_store<S, B, E>(
        &self,
        actor: &Actor,
        body: &mut S,
        path: &std::path::Path,
        max: u64,
        trust: TrustStore,
    ) -> Result<(BundleRecord, bool), OpError>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let io =
            |e: std::io::Error| OpError::Corrupt(format!("upload file {}: {e}", path.display()));
        let mut file = tokio::fs::File::create(path).await.map_err(io)?;
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let mut size: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                OpError::Invalid(format!("the upload broke off ({e}): send the bundle again"))
            })?;
            let bytes = chunk.as_ref();
            size = size.saturating_add(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
            if size > max {
                return Err(OpError::TooLarge(format!(
                    "the bundle is larger than [updates] max_bundle_mib = {} MiB: refused; raise max_bundle_mib if it is a real bundle",
                    self.config.updates.max_bundle_mib
                )));
            }
            digest.update(bytes);
            file.write_all(bytes).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        drop(file);
        if size == 0 {
            return Err(OpError::Invalid(
                "the request body is empty: send the .mgb file as the raw body (Content-Type: application/octet-stream)".into(),
            ));
        }
        let sha = Sha256Hex::new(hex::encode(digest.finish().as_ref()))
            .map_err(|e| OpError::Corrupt(e.to_string()))?;
        if let Some(existing) = self.store.bundle(&sha).await? {
            return Ok((existing, false));
        }
        let verify_path = path.to_owned();
        let meta = tokio::task::spawn_blocking(move || {
            let f = std::fs::File::open(&verify_path).map_err(BundleError::Io)?;
            verify_for_distribution(
                std::io::BufReader::with_capacity(1 << 20, f),
                &trust,
                Timestamp::now(),
            )
        })
        .await
        .map_err(|e| OpError::Corrupt(format!("the bundle check stopped: {e}")))?
        .map_err(|e| refused(&e))?;
        let rec = bundle_record(&meta, sha.clone(), size, &actor.principal.label());
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        if self.store.insert_bundle(&rec, &mut file).await? {
            return Ok((rec, true));
        }
        // Another replica stored it meanwhile.
        let existing = self
            .store
            .bundle(&sha)
            .await?
            .ok_or_else(|| OpError::Corrupt(format!("bundle {sha} vanished")))?;
        Ok((existing, false))
    }

    /// Every stored bundle.
    pub async fn bundles(&self) -> Result<Vec<BundleRecord>, OpError> {
        Ok(self.store.bundles().await?)
    }

    /// One stored bundle.
    pub async fn bundle(&self, sha: &str) -> Result<BundleRecord, OpError> {
        let sha = Sha256Hex::new(sha).map_err(|e| OpError::Invalid(e.to_string()))?;
        self.store.bundle(&sha).await?.ok_or_else(|| {
            OpError::NotFound(format!(
                "no bundle {sha}; upload it first (POST /api/v1/bundles)"
            ))
        })
    }

    fn download_url(&self, sha: &Sha256Hex) -> Result<HttpsUrl, OpError> {
        let Some(base) = self.config.updates.offer_base() else {
            return Err(OpError::Conflict(
                "campaigns need the address devices download from: set [updates] download_bind (this fleet serves the downloads) or download_url (https://…), and restart".into(),
            ));
        };
        HttpsUrl::new(format!("{base}/device/v1/bundles/{sha}"))
            .map_err(|e| OpError::Conflict(format!("[updates] download_url: {e}")))
    }

    /// Creates a campaign (a draft): the targets resolved now among the approved devices of the
    /// caller's sites that do not already run the bundle's version, assigned to waves. Audited
    /// as `update.campaign_create`.
    pub async fn create_campaign(
        &self,
        actor: &Actor,
        req: NewCampaign,
    ) -> Result<CampaignView, OpError> {
        let name = req.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(OpError::Invalid("name: give 1 to 100 characters".into()));
        }
        let bundle = self.bundle(req.bundle.as_str()).await?;
        let now = now_ms();
        if from_db(bundle.expires_ms) <= now {
            return Err(OpError::Invalid(format!(
                "bundle {} expired (its signed expiry has passed): devices would refuse it; upload a fresh bundle",
                bundle.sha256
            )));
        }
        self.download_url(&bundle.sha256)?;
        if req.failure_threshold_pct > 100 {
            return Err(OpError::Invalid(
                "failure_threshold_pct: give 0 to 100 (percent of the devices offered)".into(),
            ));
        }
        if req.soak_secs > MAX_SOAK_SECS {
            return Err(OpError::Invalid(format!(
                "soak_secs: give 0 to {MAX_SOAK_SECS} (30 days)"
            )));
        }
        match (req.mode, req.deadline_ms) {
            (InstallMode::Forced, None) => {
                return Err(OpError::Invalid(
                    "deadline_ms: a forced install needs a deadline (Unix ms) after which it switches at the first idle moment".into(),
                ));
            }
            (_, Some(d)) if d <= now => {
                return Err(OpError::Invalid(
                    "deadline_ms: the deadline has passed; give a time in the future (Unix ms)"
                        .into(),
                ));
            }
            _ => {}
        }
        let mut windows = BTreeMap::new();
        let zones = self.window_zones(&req.windows).await?;
        for w in &req.windows {
            let utc = w
                .to_utc(zones.get(&w.site), now_secs())
                .map_err(|e| OpError::Invalid(e.to_string()))?;
            if windows.insert(w.site.clone(), utc).is_some() {
                return Err(OpError::Invalid(format!(
                    "windows: site {} has two windows; give one per site",
                    w.site
                )));
            }
        }
        let scope = &actor.principal.sites;
        let mut candidates: Vec<Candidate> = self
            .store
            .devices(None)
            .await?
            .into_iter()
            .filter(|d| d.status == DeviceStatus::Approved && scope.allows(&d.site))
            .filter_map(|d| {
                Some(Candidate {
                    device: DeviceId::new(&d.id).ok()?,
                    site: SiteId::new(&d.site).ok()?,
                    tags: d.tags.clone(),
                    version: d
                        .inventory
                        .as_ref()
                        .map(|i| i.appliance_version.to_string()),
                    hardware: d.inventory.as_ref().map(|i| i.hardware_profile.to_string()),
                })
            })
            .collect();
        // A device that already runs the version would refuse it (not newer): not a target.
        candidates.retain(|c| c.version.as_deref() != Some(bundle.version.as_str()));
        let targets = req.targets.select(&candidates);
        let waves = assign_waves(&targets, &req.canary, &req.wave_shares)
            .map_err(|e| OpError::Invalid(e.to_string()))?;
        for (device, _, _) in &waves {
            for (other, d) in self.store.device_campaigns(device).await? {
                let Some(c) = self.store.campaign(&other).await? else {
                    continue;
                };
                if !matches!(c.state, CampaignState::Completed | CampaignState::Cancelled)
                    && d.state != DeviceState::Withdrawn
                {
                    return Err(OpError::Conflict(format!(
                        "device {device} is already in campaign {other} ({}): cancel that campaign or leave the device out of the targets",
                        c.state
                    )));
                }
            }
        }
        let id = Token::new(format!("cmp-{}", &random_token()?[..16]))
            .map_err(|e| OpError::Corrupt(e.to_string()))?;
        let created = now_db();
        let rec = CampaignRecord {
            id: id.clone(),
            name,
            bundle: bundle.sha256.clone(),
            state: CampaignState::Draft,
            targets: req.targets,
            canary: req.canary,
            wave_shares: req.wave_shares,
            soak_secs: req.soak_secs,
            failure_threshold_pct: req.failure_threshold_pct,
            mode: req.mode,
            deadline_ms: req.deadline_ms,
            windows: req.windows,
            released_waves: 0,
            acknowledged_failures: 0,
            created_by: actor.principal.label(),
            created_ms: created,
            approved_by: None,
            approved_ms: None,
            paused_reason: None,
            revision: 1,
            updated_ms: created,
        };
        let devices: Vec<DeviceRecord> = waves
            .into_iter()
            .map(|(d, s, w)| DeviceRecord::pending(d, s, w, now))
            .collect();
        self.store.insert_campaign(&rec, &devices).await?;
        self.audit(
            actor,
            "update.campaign_create",
            &format!("campaign:{id}"),
            Outcome::Ok,
            None,
            Some(
                json!({"name": rec.name, "bundle": rec.bundle, "version": bundle.version, "devices": devices.len(), "canary": rec.canary, "wave_shares": rec.wave_shares, "soak_secs": rec.soak_secs, "failure_threshold_pct": rec.failure_threshold_pct, "mode": rec.mode, "deadline_ms": rec.deadline_ms})
                    .to_string(),
            ),
        )
        .await;
        self.campaign_view(scope, id.as_str()).await
    }

    /// The campaigns with a device in `scope` (every campaign for every site), newest first,
    /// each with its devices in `scope`.
    pub async fn campaigns(&self, scope: &SiteScope) -> Result<Vec<CampaignView>, OpError> {
        let mut out = Vec::new();
        for c in self.store.campaigns().await? {
            match self.campaign_view(scope, c.id.as_str()).await {
                Ok(v) => out.push(v),
                Err(OpError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// One campaign with its devices in `scope`; not found when none of its devices is (and
    /// the scope is not every site).
    pub async fn campaign_view(
        &self,
        scope: &SiteScope,
        id: &str,
    ) -> Result<CampaignView, OpError> {
        let missing = || OpError::NotFound(format!("no campaign {id:?}"));
        let campaign = self.store.campaign(id).await?.ok_or_else(missing)?;
        let devices = self.store.campaign_devices(id).await?;
        let visible: Vec<DeviceRecord> = devices
            .into_iter()
            .filter(|d| scope.allows(d.site.as_str()))
            .collect();
        if visible.is_empty() && !matches!(scope, SiteScope::All) {
            return Err(missing());
        }
        let version = self
            .store
            .bundle(&campaign.bundle)
            .await?
            .map(|b| b.version)
            .unwrap_or_default();
        Ok(CampaignView {
            counts: counts(&visible),
            devices: visible.iter().map(CampaignDevice::from).collect(),
            version,
            campaign,
        })
    }

    /// Approves, pauses, resumes or cancels a campaign, audited as `update.campaign_…`.
    pub async fn campaign_command(
        &self,
        actor: &Actor,
        id: &str,
        cmd: CampaignCommand,
    ) -> Result<CampaignView, OpError> {
        let before = self
            .store
            .campaign(id)
            .await?
            .ok_or_else(|| OpError::NotFound(format!("no campaign {id:?}")))?;
        let approved_by = (cmd == CampaignCommand::Approve).then(|| actor.principal.label());
        // Approval observes the devices first: their figures are the baselines of the offers.
        let saved = self
            .drive(
                id,
                vec![cmd.input()],
                approved_by,
                cmd == CampaignCommand::Approve,
            )
            .await?;
        if !saved {
            return Err(OpError::Conflict(format!(
                "campaign {id} changed while this was done (another request or replica): look at it again and retry"
            )));
        }
        let after = self.campaign_view(&SiteScope::All, id).await?;
        self.audit(
            actor,
            cmd.audit_action(),
            &format!("campaign:{id}"),
            Outcome::Ok,
            Some(json!({"state": before.state}).to_string()),
            Some(json!({"state": after.campaign.state, "devices": after.counts}).to_string()),
        )
        .await;
        self.campaign_view(&actor.principal.sites, id).await
    }

    fn remembered_outcomes(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.local_outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// An install a device did without a campaign (`medgate-appliance update --file`, campaign
    /// `local-…`), audited once when its telemetry says it ended: `update.local_installed`,
    /// `…_rolled_back`, `…_refused`, `…_failed`, `…_cancelled`, `…_abandoned`, in the device's
    /// name. Campaign installs are audited by the campaign (`update.device_…`).
    pub async fn note_local_update(&self, device: &DeviceId, u: &medgate_contract::UpdateReport) {
        use medgate_contract::UpdatePhase as P;
        let word = match u.state {
            P::Installed => "installed",
            P::RolledBack => "rolled_back",
            P::Refused => "refused",
            P::Failed => "failed",
            P::Cancelled => "cancelled",
            P::Abandoned => "abandoned",
            _ => return,
        };
        let Some(campaign) = u
            .campaign
            .as_ref()
            .filter(|c| c.as_str().starts_with("local-"))
        else {
            return;
        };
        let version = u.version.as_ref().map_or("?", |v| v.as_str());
        let key = format!("{campaign}:{version}:{word}");
        if self.remembered_outcomes().get(device.as_str()) == Some(&key) {
            return;
        }
        match self
            .store
            .first_update_outcome(device, &key, now_db())
            .await
        {
            Ok(first) => {
                self.remembered_outcomes()
                    .insert(device.to_string(), key.clone());
                if !first {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(device = %device, error = %e, "cannot record a local update's outcome; not audited now (the next report tries again)");
                return;
            }
        }
        let outcome = if u.state == P::Installed {
            Outcome::Ok
        } else {
            Outcome::Failed
        };
        let who = format!("device:{device}");
        self.audit_as(
            &who,
            None,
            &format!("update.local_{word}"),
            &who,
            outcome,
            None,
            Some(
                json!({
                    "campaign": campaign,
                    "version": version,
                    "running": u.running,
                    "code": u.code,
                })
                .to_string(),
            ),
        )
        .await;
    }

    /// The campaigns' tick (upkeep, every 5 s): every running or paused campaign's engine run
    /// on its devices' latest reports, connection and health figures, then a clock tick.
    pub async fn ota_tick(&self) {
        let ids = match self.store.live_campaigns().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the update campaigns");
                return;
            }
        };
        for id in &ids {
            if let Err(e) = self.drive(id, vec![Input::Tick], None, true).await {
                tracing::warn!(campaign = %id, error = %e, "update campaign tick failed");
            }
        }
        self.republish_shifted_windows(&ids).await;
    }

    /// Loads a campaign, runs `inputs` (after the devices' reports when `observe`), saves by
    /// compare-and-set and only then carries out the actions. `false` when another writer saved
    /// first (nothing was done).
    async fn drive(
        &self,
        id: &str,
        inputs: Vec<Input>,
        approved_by: Option<String>,
        observe: bool,
    ) -> Result<bool, OpError> {
        let Some(rec) = self.store.campaign(id).await? else {
            return Err(OpError::NotFound(format!("no campaign {id:?}")));
        };
        let devices = self.store.campaign_devices(id).await?;
        let mut engine = self.engine(&rec, devices.clone()).await?;
        let now = now_ms();
        let mut all = Vec::new();
        if observe
            && !matches!(
                engine.state,
                CampaignState::Completed | CampaignState::Cancelled
            )
        {
            for input in self.observations(&engine).await? {
                all.extend(
                    engine
                        .handle(now, input)
                        .map_err(|e| OpError::Conflict(e.to_string()))?,
                );
            }
        }
        for input in inputs {
            all.extend(
                engine
                    .handle(now, input)
                    .map_err(|e| OpError::Conflict(e.to_string()))?,
            );
        }
        let rows = changed(&devices, &engine.devices);
        let change = CampaignChange {
            state: engine.state,
            paused_reason: engine.paused_reason.clone(),
            released_waves: engine.released_waves,
            acknowledged_failures: engine.acknowledged_failures,
            approved_by,
        };
        let same = rows.is_empty()
            && change.state == rec.state
            && change.paused_reason == rec.paused_reason
            && change.released_waves == rec.released_waves
            && change.acknowledged_failures == rec.acknowledged_failures
            && change.approved_by.is_none();
        if same {
            return Ok(true);
        }
        if !self
            .store
            .save_campaign(id, rec.revision, &change, &rows, now_db())
            .await?
        {
            return Ok(false);
        }
        self.carry_out(&engine, &all).await;
        Ok(true)
    }

    /// The engine of a stored campaign: its plan from the record, the bundle and the
    /// configured download address.
    async fn engine(
        &self,
        rec: &CampaignRecord,
        devices: Vec<DeviceRecord>,
    ) -> Result<Campaign, OpError> {
        let id = &rec.id;
        let bundle = self.store.bundle(&rec.bundle).await?.ok_or_else(|| {
            OpError::Corrupt(format!(
                "campaign {id}: bundle {} is not stored",
                rec.bundle
            ))
        })?;
        let windows = windows_at(rec, &self.campaign_zones(rec).await, now_secs());
        Ok(Campaign {
            id: rec.id.clone(),
            plan: Plan {
                bundle: BundleRef {
                    sha256: rec.bundle.clone(),
                    version: Token::new(&bundle.version)
                        .map_err(|e| OpError::Corrupt(e.to_string()))?,
                    size: bundle.size,
                    url: self.download_url(&rec.bundle)?,
                },
                waves: u32::try_from(rec.wave_shares.len() + 1).unwrap_or(u32::MAX),
                soak_secs: rec.soak_secs,
                failure_threshold_pct: rec.failure_threshold_pct,
                mode: rec.mode,
                deadline_ms: rec.deadline_ms,
                windows,
            },
            state: rec.state,
            paused_reason: rec.paused_reason.clone(),
            released_waves: rec.released_waves,
            acknowledged_failures: rec.acknowledged_failures,
            devices,
        })
    }

    /// What is known of each device that can still change: its latest update report,
    /// connection, and (soaking, or about to be offered) its health figures.
    async fn observations(&self, c: &Campaign) -> Result<Vec<Input>, OpError> {
        let now = now_db();
        let registry: HashMap<String, crate::model::Device> = self
            .store
            .devices(None)
            .await?
            .into_iter()
            .map(|d| (d.id.clone(), d))
            .collect();
        let latest = self.store.latest_telemetry_all(now - 3_600_000).await?;
        // The pending devices offered next (the first wave with any): their figures now are
        // the baselines of their offers.
        let next = c
            .devices
            .iter()
            .filter(|d| d.state == DeviceState::Pending)
            .map(|d| d.wave)
            .min();
        let mut out = Vec::new();
        for d in &c.devices {
            if matches!(d.state, DeviceState::Failed | DeviceState::Withdrawn) {
                continue;
            }
            let next_wave = d.state == DeviceState::Pending && Some(d.wave) == next;
            if d.state == DeviceState::Pending && !next_wave {
                continue;
            }
            let reg = registry.get(d.device.as_str());
            let health = if d.state == DeviceState::Installed || next_wave {
                let samples = self
                    .store
                    .telemetry(d.device.as_str(), now - HEALTH_WINDOW_MS, now, 1000)
                    .await?;
                health_of(&samples)
            } else {
                None
            };
            out.push(Input::Report {
                device: d.device.clone(),
                report: latest
                    .get(d.device.as_str())
                    .and_then(|s| s.data.update.clone()),
                online: reg.is_some_and(|r| r.connection == Connection::Online),
                last_seen_ms: reg.and_then(|r| r.last_seen_ms).map(from_db),
                health,
            });
        }
        Ok(out)
    }

    /// Publishes offers and withdrawals, audits pauses, completion and device outcomes, tells
    /// the live feed.
    async fn carry_out(&self, c: &Campaign, actions: &[Action]) {
        let target = format!("campaign:{}", c.id);
        for a in actions {
            match a {
                Action::Offer { device, offer } => {
                    self.publish_update(c, device, UpdateAction::Install(offer.clone()))
                        .await;
                }
                Action::Withdraw { device } => {
                    self.publish_update(c, device, UpdateAction::Cancel).await;
                }
                Action::Paused { reason } => {
                    if reason.starts_with("failure_threshold") {
                        self.audit_as(
                            "fleet",
                            None,
                            "update.campaign_pause",
                            &target,
                            Outcome::Ok,
                            None,
                            Some(json!({"reason": reason}).to_string()),
                        )
                        .await;
                    }
                    self.live(json!({"type": "campaign", "campaign": c.id, "state": c.state, "reason": reason}));
                }
                Action::Completed => {
                    self.audit_as(
                        "fleet",
                        None,
                        "update.campaign_complete",
                        &target,
                        Outcome::Ok,
                        None,
                        Some(json!({"devices": counts(&c.devices)}).to_string()),
                    )
                    .await;
                    self.live(json!({"type": "campaign", "campaign": c.id, "state": c.state}));
                }
                Action::DeviceChanged {
                    device,
                    state,
                    fail,
                    code,
                } => {
                    let d = c.devices.iter().find(|d| &d.device == device);
                    if let Some(action) = device_audit(*state, *fail) {
                        self.audit_as(
                            "fleet",
                            None,
                            action,
                            &format!("device:{device}"),
                            if *state == DeviceState::Failed {
                                Outcome::Failed
                            } else {
                                Outcome::Ok
                            },
                            None,
                            Some(
                                json!({"campaign": c.id, "version": c.plan.bundle.version, "running": d.and_then(|d| d.running.clone()), "fail": fail, "code": code})
                                    .to_string(),
                            ),
                        )
                        .await;
                    }
                    self.live(json!({"type": "update", "campaign": c.id, "device": device, "state": state, "fail": fail, "code": code, "running": d.and_then(|d| d.running.clone())}));
                }
            }
        }
    }

    /// The time zones of the sites whose window gives no fixed offset (the Sites page's IANA
    /// name, from the system's time zone database); a site without one is left out (its
    /// window is then refused, or read as UTC by a running campaign).
    async fn window_zones(
        &self,
        windows: &[SiteWindow],
    ) -> Result<BTreeMap<SiteId, Zone>, OpError> {
        let mut out = BTreeMap::new();
        for w in windows.iter().filter(|w| w.utc_offset_minutes.is_none()) {
            if out.contains_key(&w.site) {
                continue;
            }
            let tz = self
                .store
                .site_detail(w.site.as_str())
                .await?
                .and_then(|d| d.time_zone);
            if let Some(tz) = tz {
                let zone = Zone::load(&tz).map_err(|e| OpError::Invalid(e.to_string()))?;
                out.insert(w.site.clone(), zone);
            }
        }
        Ok(out)
    }

    /// The time zones of a campaign's windows; one that cannot be read is left out (its window
    /// is then read at UTC by [`windows_at`]), with an error in the log.
    async fn campaign_zones(&self, rec: &CampaignRecord) -> BTreeMap<SiteId, Zone> {
        match self.window_zones(&rec.windows).await {
            Ok(z) => z,
            Err(e) => {
                tracing::error!(campaign = %rec.id, error = %e, "maintenance windows: a site's time zone cannot be read; its window is read at UTC until it is fixed");
                BTreeMap::new()
            }
        }
    }

    /// ota (issue 14): campaigns whose windows moved in UTC since the last tick (a site's
    /// daylight saving time): their open offers are published again with the new window.
    async fn republish_shifted_windows(&self, ids: &[String]) {
        let now = now_secs();
        for id in ids {
            let Ok(Some(rec)) = self.store.campaign(id).await else {
                continue;
            };
            if rec.windows.is_empty() {
                continue;
            }
            let zones = self.campaign_zones(&rec).await;
            if windows_at(&rec, &zones, now - TICK_SECS * 2) != windows_at(&rec, &zones, now) {
                tracing::info!(campaign = %id, "a site's maintenance window moved in UTC (daylight saving time): publishing its offers again");
                self.republish_campaign(id).await;
            }
        }
    }

    /// Publishes again (retained) the offer of every device a live campaign offered and that
    /// has not finished, e.g. after the fleet (re)connected to a broker that keeps nothing (the
    /// embedded one); a device treats a repeated offer as a no-op.
    pub async fn republish_updates(&self) {
        let ids = match self.store.live_campaigns().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the update campaigns to re-publish offers");
                return;
            }
        };
        for id in ids {
            self.republish_campaign(&id).await;
        }
    }

    /// Publishes again the open offers of one campaign.
    async fn republish_campaign(&self, id: &str) {
        let Ok(Some(rec)) = self.store.campaign(id).await else {
            return;
        };
        let Ok(devices) = self.store.campaign_devices(id).await else {
            return;
        };
        let Ok(c) = self.engine(&rec, devices).await else {
            return;
        };
        for d in &c.devices {
            let open = !d.state.is_final() && d.state != DeviceState::Pending;
            if let (true, Some(offer)) = (open, c.offer_for(&d.device)) {
                self.publish_update(&c, &d.device, UpdateAction::Install(offer))
                    .await;
            }
        }
    }

    async fn publish_update(&self, c: &Campaign, device: &DeviceId, action: UpdateAction) {
        let Some(d) = c.devices.iter().find(|d| &d.device == device) else {
            return;
        };
        let topics = medgate_contract::DeviceTopics::new(d.site.clone(), device.clone());
        let msg = DesiredUpdate {
            schema: Schema::default(),
            campaign: c.id.clone(),
            issued_at_ms: now_ms(),
            action,
        };
        if let Err(e) = self.publisher().update(&topics, &msg).await {
            tracing::warn!(campaign = %c.id, device = %device, error = %e, "cannot publish the update instruction");
        }
    }
}

#[cfg(test)]
mod tests;
