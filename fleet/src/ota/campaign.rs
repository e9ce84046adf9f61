//! The campaign engine: a pure state machine, time as input (`handle(now_ms, input)`).
//!
//! ```text
//! campaign:  draft ──approve──▶ running ⇄ paused ──▶ completed | cancelled
//! device:    pending ─▶ offered ─▶ downloading … waiting_idle … probing ─▶ installed
//!                 ─▶ healthy (soak passed)  |  failed (with why)  |  withdrawn (cancel)
//! ```
//!
//! Waves: wave 0 is the named canary devices (may be empty), then growing shares of the
//! remaining targets (cumulative, e.g. `[25, 100]`). The next wave is offered only when every
//! device already offered is healthy or failed and the failure share is within the threshold;
//! past the threshold the campaign pauses by itself with the reason, and a paused campaign
//! offers nothing new.
//!
//! Honest state: a device is `installed` only when it reports the version installed AND running
//! and not on probation; one that reports `installed` but runs another version, or rolled back,
//! or whose running version changes back later, is `failed` — never done. During the soak a
//! device fails when it is offline too long, its forwarding error rate rises above its baseline
//! (the health figures before its offer) plus [`FORWARD_ERROR_SLACK`], or its forward p99 gets
//! worse than `max(2 × baseline, baseline + 1000 ms)`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use medgate_contract::{
    DeviceId, HttpsUrl, InstallMode, Sha256Hex, SiteId, Token, UpdateOffer, UpdatePhase,
    UpdateReport, UtcWindow,
};
use serde::{Deserialize, Serialize};

use crate::model::Unreadable;

/// Forwarding errors per second a device may add over its baseline during the soak, in
/// thousandths (50 = 0.05 errors/s, three a minute).
pub const FORWARD_ERROR_SLACK: u64 = 50;
/// How much slower (ms) the forward p99 may get, at least, before it counts as worse (the
/// limit is `max(2 × baseline, baseline + this)`).
pub const FORWARD_DELAY_SLACK_MS: u64 = 1000;
/// How long an installed device may be offline during its soak before it fails (ms).
pub const OFFLINE_LIMIT_MS: u64 = 180_000;

macro_rules! words {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $word:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// The stored and shown word.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Unreadable;
            fn from_str(s: &str) -> Result<Self, Unreadable> {
                match s {
                    $($word => Ok(Self::$variant),)+
                    _ => Err(Unreadable { what: stringify!($name), value: s.to_owned() }),
                }
            }
        }
    };
}

words!(
    /// Where a campaign stands.
    CampaignState {
        /// Created, waiting for an admin's approval; offers nothing.
        Draft = "draft",
        /// Offering its waves.
        Running = "running",
        /// Offers nothing new (by an operator, or by itself past the failure threshold); devices
        /// already offered go on and are still followed.
        Paused = "paused",
        /// Every wave offered, every device healthy or failed (within the threshold).
        Completed = "completed",
        /// Cancelled: offers not yet installed were withdrawn.
        Cancelled = "cancelled",
    }
);

words!(
    /// Where one device of a campaign stands.
    DeviceState {
        /// In a wave not offered yet.
        Pending = "pending",
        /// Offered; the device has not said anything of it yet.
        Offered = "offered",
        /// Downloading the bundle.
        Downloading = "downloading",
        /// Verifying it.
        Verifying = "verifying",
        /// Writing the inactive slot.
        Installing = "installing",
        /// Installed, waiting for idle DICOM (the code says why).
        WaitingIdle = "waiting_idle",
        /// Switching.
        Switching = "switching",
        /// Running the new version on probation.
        Probing = "probing",
        /// Committed and running the new version: soaking.
        Installed = "installed",
        /// Ran the new version healthy for the soak period.
        Healthy = "healthy",
        /// Did not make it (the fail code says why).
        Failed = "failed",
        /// The campaign was cancelled before it installed.
        Withdrawn = "withdrawn",
    }
);

impl DeviceState {
    /// Healthy, failed or withdrawn: nothing more happens to it in this campaign.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Healthy | Self::Failed | Self::Withdrawn)
    }

    /// Offered and not switched yet: a cancel withdraws it.
    fn withdrawable(self) -> bool {
        matches!(
            self,
            Self::Offered
                | Self::Downloading
                | Self::Verifying
                | Self::Installing
                | Self::WaitingIdle
        )
    }

    fn in_progress(self) -> bool {
        self.withdrawable() || matches!(self, Self::Switching | Self::Probing)
    }
}

words!(
    /// Why a device failed.
    FailKind {
        /// It switched and rolled back (not healthy on probation).
        RolledBack = "rolled_back",
        /// It refused the bundle before writing anything.
        Refused = "refused",
        /// A step failed; the previous version runs.
        Failed = "failed",
        /// A soft install whose deadline passed before DICOM was idle.
        Abandoned = "abandoned",
        /// It cancelled the install without the campaign asking.
        Cancelled = "cancelled",
        /// It reported `installed` but runs another version.
        NotRunning = "not_running",
        /// Offline longer than the limit during its soak.
        Offline = "unhealthy_offline",
        /// Forwarding errors above its baseline during its soak.
        ForwardErrors = "unhealthy_forward_errors",
        /// Forwarding delay worse than its baseline allows during its soak.
        ForwardDelay = "unhealthy_forward_delay",
        /// Its running version changed back after it was installed.
        Reverted = "reverted",
    }
);

/// A device's health figures, from its telemetry over a recent interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// Forwarding errors per second, in thousandths.
    pub forward_errors_milli_per_s: u64,
    /// Receive-to-confirmed forward latency, 99th percentile (ms).
    pub forward_p99_ms: u64,
}

/// The bundle a campaign installs, as its offers name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleRef {
    /// Content address.
    pub sha256: Sha256Hex,
    /// The version its signed metadata says.
    pub version: Token,
    /// The file's size.
    pub size: u64,
    /// Where devices download it.
    pub url: HttpsUrl,
}

/// What a campaign does, fixed at creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The bundle.
    pub bundle: BundleRef,
    /// Waves: 1 (the canary wave) + the number of shares.
    pub waves: u32,
    /// Seconds a device must run the new version healthy before it counts as healthy.
    pub soak_secs: u64,
    /// The failure share (percent of the devices offered) beyond which it pauses by itself.
    pub failure_threshold_pct: u8,
    /// Soft or forced.
    pub mode: InstallMode,
    /// The deadline (Unix ms).
    pub deadline_ms: Option<u64>,
    /// Maintenance windows by site (none: any time).
    pub windows: BTreeMap<SiteId, UtcWindow>,
}

/// One device of a campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The device.
    pub device: DeviceId,
    /// Its site (its window).
    pub site: SiteId,
    /// Its wave (0: canary).
    pub wave: u32,
    /// Where it stands.
    pub state: DeviceState,
    /// Why it failed.
    pub fail: Option<FailKind>,
    /// The device's own code: its wait reason, or its final state's code (`health_deadline`).
    pub code: Option<Token>,
    /// The version it reports installing.
    pub version: Option<Token>,
    /// The version it runs.
    pub running: Option<Token>,
    /// When it entered its state (Unix ms).
    pub since_ms: u64,
    /// Its health figures before the offer.
    pub baseline: Option<Health>,
    /// The latest health figures given (not stored: the baseline of an offer made now).
    pub latest: Option<Health>,
}

impl DeviceRecord {
    /// A pending device of `wave`.
    pub fn pending(device: DeviceId, site: SiteId, wave: u32, now_ms: u64) -> DeviceRecord {
        DeviceRecord {
            device,
            site,
            wave,
            state: DeviceState::Pending,
            fail: None,
            code: None,
            version: None,
            running: None,
            since_ms: now_ms,
            baseline: None,
            latest: None,
        }
    }
}

/// A campaign and its devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Campaign {
    /// Its id (the `campaign` of offers and reports).
    pub id: Token,
    /// What it does.
    pub plan: Plan,
    /// Where it stands.
    pub state: CampaignState,
    /// Why it is paused.
    pub paused_reason: Option<String>,
    /// Waves offered so far (0: none yet).
    pub released_waves: u32,
    /// Failures an operator resumed past: the threshold counts only those after them.
    pub acknowledged_failures: u32,
    /// Its devices.
    pub devices: Vec<DeviceRecord>,
}

/// What the engine is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The clock moved on.
    Tick,
    /// What is known of a device now.
    Report {
        /// The device.
        device: DeviceId,
        /// Its telemetry's latest `update` report.
        report: Option<UpdateReport>,
        /// Connected now.
        online: bool,
        /// Last heard from (Unix ms).
        last_seen_ms: Option<u64>,
        /// Its health figures over the recent interval.
        health: Option<Health>,
    },
    /// An admin approved it.
    Approve,
    /// An operator paused it.
    Pause,
    /// An operator resumed it.
    Resume,
    /// An operator cancelled it.
    Cancel,
}

/// What the shell is to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Publish this offer to the device (retained).
    Offer {
        /// The device.
        device: DeviceId,
        /// The offer.
        offer: UpdateOffer,
    },
    /// Publish a cancel to the device (retained).
    Withdraw {
        /// The device.
        device: DeviceId,
    },
    /// The campaign paused (audit, console).
    Paused {
        /// Why.
        reason: String,
    },
    /// The campaign completed.
    Completed,
    /// A device's state, fail kind or code changed (audit, persistence, live feed).
    DeviceChanged {
        /// The device.
        device: DeviceId,
        /// Its state now.
        state: DeviceState,
        /// Why it failed.
        fail: Option<FailKind>,
        /// The device's code.
        code: Option<Token>,
    },
}

/// An operator action the campaign's state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a campaign that is {state}: {hint}")]
pub struct NotAllowed {
    /// approve, pause, resume or cancel.
    pub action: &'static str,
    /// The campaign's state.
    pub state: CampaignState,
    /// What can be done instead.
    pub hint: &'static str,
}

/// Wave shares, canary devices or targets that do not make a plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A share outside 1-100, not increasing, or the last not 100.
    #[error(
        "wave_shares {0:?}: give increasing cumulative percentages of the non-canary devices ending at 100, e.g. [25, 100]"
    )]
    Shares(Vec<u8>),
    /// A canary that is not targeted.
    #[error(
        "canary device {0} is not among the campaign's targets: add its site, tag or version to the targets, or name another canary"
    )]
    CanaryNotTargeted(String),
    /// Nothing to update.
    #[error(
        "no device matches the targets: widen the sites, tags, current version or hardware profile"
    )]
    NoTargets,
}

/// Assigns the targets to waves: the canaries to wave 0, the rest (in id order) to waves 1…
/// by cumulative `shares` (percent, the last 100; a wave's count is rounded up).
pub fn assign_waves(
    targets: &[(DeviceId, SiteId)],
    canary: &[DeviceId],
    shares: &[u8],
) -> Result<Vec<(DeviceId, SiteId, u32)>, PlanError> {
    let increasing = shares.windows(2).all(|w| w[0] < w[1]);
    if shares.is_empty()
        || !increasing
        || shares.first().is_some_and(|s| *s == 0)
        || shares.last() != Some(&100)
    {
        return Err(PlanError::Shares(shares.to_vec()));
    }
    if targets.is_empty() {
        return Err(PlanError::NoTargets);
    }
    let canaries: BTreeSet<&DeviceId> = canary.iter().collect();
    for c in &canaries {
        if !targets.iter().any(|(d, _)| d == *c) {
            return Err(PlanError::CanaryNotTargeted(c.to_string()));
        }
    }
    let mut out: Vec<(DeviceId, SiteId, u32)> = targets
        .iter()
        .filter(|(d, _)| canaries.contains(d))
        .map(|(d, s)| (d.clone(), s.clone(), 0))
        .collect();
    let mut rest: Vec<&(DeviceId, SiteId)> = targets
        .iter()
        .filter(|(d, _)| !canaries.contains(d))
        .collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    rest.dedup_by(|a, b| a.0 == b.0);
    let n = rest.len();
    let mut given = 0usize;
    for (i, share) in shares.iter().enumerate() {
        let upto = (n * usize::from(*share)).div_ceil(100).min(n);
        let wave = u32::try_from(i + 1).unwrap_or(u32::MAX);
        for (d, s) in &rest[given..upto.max(given)] {
            out.push((d.clone(), s.clone(), wave));
        }
        given = upto.max(given);
    }
    Ok(out)
}

impl Campaign {
    /// Handles one input at `now_ms`; the actions to carry out, in order.
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Result<Vec<Action>, NotAllowed> {
        let mut out = Vec::new();
        match input {
            Input::Approve => {
                if self.state != CampaignState::Draft {
                    return Err(self.not_allowed(
                        "approve",
                        "only a draft is approved; resume a paused campaign instead",
                    ));
                }
                self.state = CampaignState::Running;
            }
            Input::Pause => {
                if self.state != CampaignState::Running {
                    return Err(self.not_allowed("pause", "only a running campaign pauses"));
                }
                self.pause("paused by an operator".into(), &mut out);
                return Ok(out);
            }
            Input::Resume => {
                if self.state != CampaignState::Paused {
                    return Err(self.not_allowed(
                        "resume",
                        "only a paused campaign resumes; approve a draft instead",
                    ));
                }
                self.state = CampaignState::Running;
                self.paused_reason = None;
                self.acknowledged_failures = self.failed_count();
            }
            Input::Cancel => {
                if matches!(
                    self.state,
                    CampaignState::Completed | CampaignState::Cancelled
                ) {
                    return Err(self.not_allowed(
                        "cancel",
                        "it is over already; create a new campaign to install another bundle",
                    ));
                }
                self.cancel(now_ms, &mut out);
                return Ok(out);
            }
            Input::Report {
                device,
                report,
                online,
                last_seen_ms,
                health,
            } => {
                if !self.is_live() {
                    // A draft keeps the latest figures only: the baseline of its first offers.
                    if let Some(d) = self.devices.iter_mut().find(|d| d.device == device) {
                        d.latest = health;
                    }
                    return Ok(out);
                }
                self.observe(
                    now_ms,
                    &device,
                    report.as_ref(),
                    online,
                    last_seen_ms,
                    health,
                    &mut out,
                );
            }
            Input::Tick => {}
        }
        if self.is_live() {
            self.settle(now_ms, &mut out);
        }
        Ok(out)
    }

    fn not_allowed(&self, action: &'static str, hint: &'static str) -> NotAllowed {
        NotAllowed {
            action,
            state: self.state,
            hint,
        }
    }

    /// Running or paused: its devices are followed.
    pub fn is_live(&self) -> bool {
        matches!(self.state, CampaignState::Running | CampaignState::Paused)
    }

    fn failed_count(&self) -> u32 {
        let n = self
            .devices
            .iter()
            .filter(|d| d.state == DeviceState::Failed)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn pause(&mut self, reason: String, out: &mut Vec<Action>) {
        self.state = CampaignState::Paused;
        self.paused_reason = Some(reason.clone());
        out.push(Action::Paused { reason });
    }

    fn cancel(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        self.state = CampaignState::Cancelled;
        self.paused_reason = None;
        for i in 0..self.devices.len() {
            let state = self.devices[i].state;
            if state.withdrawable() {
                out.push(Action::Withdraw {
                    device: self.devices[i].device.clone(),
                });
            }
            if state.withdrawable() || state == DeviceState::Pending {
                set(
                    &mut self.devices[i],
                    now_ms,
                    DeviceState::Withdrawn,
                    None,
                    None,
                    out,
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn observe(
        &mut self,
        now_ms: u64,
        device: &DeviceId,
        report: Option<&UpdateReport>,
        online: bool,
        last_seen_ms: Option<u64>,
        health: Option<Health>,
        out: &mut Vec<Action>,
    ) {
        let id = self.id.clone();
        let version = self.plan.bundle.version.clone();
        let Some(d) = self.devices.iter_mut().find(|d| &d.device == device) else {
            return;
        };
        d.latest = health;
        if matches!(
            d.state,
            DeviceState::Pending | DeviceState::Failed | DeviceState::Withdrawn
        ) {
            return;
        }
        if let Some(r) = report {
            if r.running.is_some() {
                d.running.clone_from(&r.running);
            }
            let ours = r.campaign.as_ref() == Some(&id) && r.version.as_ref() == Some(&version);
            if ours {
                d.version.clone_from(&r.version);
            }
            let runs_other = r.running.as_ref().is_some_and(|v| *v != version);
            match d.state {
                s if s.in_progress() && ours => apply_phase(d, now_ms, r, &version, out),
                DeviceState::Installed | DeviceState::Healthy => {
                    if ours && r.state == UpdatePhase::RolledBack {
                        let code = r.code.clone();
                        fail(d, now_ms, FailKind::RolledBack, code, out);
                    } else if runs_other {
                        fail(d, now_ms, FailKind::Reverted, None, out);
                    }
                }
                _ => {}
            }
        }
        if d.state != DeviceState::Installed {
            return;
        }
        let offline_for = last_seen_ms.map_or(u64::MAX, |seen| now_ms.saturating_sub(seen));
        if !online && offline_for > OFFLINE_LIMIT_MS {
            fail(d, now_ms, FailKind::Offline, None, out);
            return;
        }
        if let Some(h) = health {
            let b = d.baseline.unwrap_or_default();
            let delay_limit = b
                .forward_p99_ms
                .saturating_mul(2)
                .max(b.forward_p99_ms.saturating_add(FORWARD_DELAY_SLACK_MS));
            if h.forward_errors_milli_per_s
                > b.forward_errors_milli_per_s
                    .saturating_add(FORWARD_ERROR_SLACK)
            {
                fail(d, now_ms, FailKind::ForwardErrors, None, out);
            } else if h.forward_p99_ms > delay_limit {
                fail(d, now_ms, FailKind::ForwardDelay, None, out);
            }
        }
    }

    /// Soak promotions, then (running) the threshold, the next wave, completion.
    fn settle(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        let soak_ms = self.plan.soak_secs.saturating_mul(1000);
        for d in &mut self.devices {
            if d.state == DeviceState::Installed && now_ms >= d.since_ms.saturating_add(soak_ms) {
                let code = d.code.clone();
                set(d, now_ms, DeviceState::Healthy, None, code, out);
            }
        }
        if self.state != CampaignState::Running {
            return;
        }
        loop {
            if let Some(reason) = self.threshold_passed() {
                self.pause(reason, out);
                return;
            }
            let released = self.released_waves;
            let all_final = self
                .devices
                .iter()
                .filter(|d| d.wave < released)
                .all(|d| d.state.is_final());
            if !all_final {
                return;
            }
            if released >= self.plan.waves {
                self.state = CampaignState::Completed;
                out.push(Action::Completed);
                return;
            }
            self.release(released, now_ms, out);
        }
    }

    /// The pause reason when the failures since the last resume pass the threshold.
    fn threshold_passed(&self) -> Option<String> {
        let released: Vec<&DeviceRecord> = self
            .devices
            .iter()
            .filter(|d| d.wave < self.released_waves)
            .collect();
        let n = u64::try_from(released.len()).unwrap_or(u64::MAX);
        let failed: Vec<&DeviceRecord> = released
            .iter()
            .copied()
            .filter(|d| d.state == DeviceState::Failed)
            .collect();
        let total = u64::try_from(failed.len()).unwrap_or(u64::MAX);
        let counted = total.saturating_sub(u64::from(self.acknowledged_failures));
        if n == 0 || counted == 0 {
            return None;
        }
        if counted.saturating_mul(100) <= u64::from(self.plan.failure_threshold_pct) * n {
            return None;
        }
        let codes: BTreeSet<&'static str> = failed
            .iter()
            .filter_map(|d| d.fail.map(FailKind::as_str))
            .collect();
        let canary = if released.iter().all(|d| d.wave == 0) {
            "canary "
        } else {
            ""
        };
        Some(format!(
            "failure_threshold: {total} of {n} {canary}devices failed ({})",
            codes.into_iter().collect::<Vec<_>>().join(", ")
        ))
    }

    /// Offers wave `wave` to its devices.
    fn release(&mut self, wave: u32, now_ms: u64, out: &mut Vec<Action>) {
        self.released_waves = wave.saturating_add(1);
        let b = &self.plan.bundle;
        for d in self.devices.iter_mut().filter(|d| d.wave == wave) {
            if d.state != DeviceState::Pending {
                continue;
            }
            let offer = UpdateOffer {
                version: b.version.clone(),
                sha256: b.sha256.clone(),
                size: b.size,
                url: b.url.clone(),
                mode: self.plan.mode,
                deadline_ms: self.plan.deadline_ms,
                window: self.plan.windows.get(&d.site).copied(),
            };
            d.baseline = d.latest;
            out.push(Action::Offer {
                device: d.device.clone(),
                offer,
            });
            set(d, now_ms, DeviceState::Offered, None, None, out);
        }
    }

    /// The offer a device of this campaign was (or would be) given: for re-publishing.
    pub fn offer_for(&self, device: &DeviceId) -> Option<UpdateOffer> {
        let d = self.devices.iter().find(|d| &d.device == device)?;
        let b = &self.plan.bundle;
        Some(UpdateOffer {
            version: b.version.clone(),
            sha256: b.sha256.clone(),
            size: b.size,
            url: b.url.clone(),
            mode: self.plan.mode,
            deadline_ms: self.plan.deadline_ms,
            window: self.plan.windows.get(&d.site).copied(),
        })
    }
}

/// A report of this campaign's install from a device that is offered or installing.
fn apply_phase(
    d: &mut DeviceRecord,
    now_ms: u64,
    r: &UpdateReport,
    version: &Token,
    out: &mut Vec<Action>,
) {
    let code = r.code.clone();
    let to = match r.state {
        UpdatePhase::Downloading => DeviceState::Downloading,
        UpdatePhase::Verifying => DeviceState::Verifying,
        UpdatePhase::Installing => DeviceState::Installing,
        UpdatePhase::WaitingIdle => DeviceState::WaitingIdle,
        UpdatePhase::Switching => DeviceState::Switching,
        UpdatePhase::Probing => DeviceState::Probing,
        UpdatePhase::Installed => {
            if r.on_probation {
                DeviceState::Probing
            } else if r.running.as_ref() == Some(version) {
                DeviceState::Installed
            } else {
                return fail(d, now_ms, FailKind::NotRunning, code, out);
            }
        }
        UpdatePhase::RolledBack => return fail(d, now_ms, FailKind::RolledBack, code, out),
        UpdatePhase::Refused => return fail(d, now_ms, FailKind::Refused, code, out),
        UpdatePhase::Failed => return fail(d, now_ms, FailKind::Failed, code, out),
        UpdatePhase::Cancelled => return fail(d, now_ms, FailKind::Cancelled, code, out),
        UpdatePhase::Abandoned => return fail(d, now_ms, FailKind::Abandoned, code, out),
        UpdatePhase::Other => return,
    };
    set(d, now_ms, to, None, code, out);
}

fn fail(
    d: &mut DeviceRecord,
    now_ms: u64,
    kind: FailKind,
    code: Option<Token>,
    out: &mut Vec<Action>,
) {
    set(d, now_ms, DeviceState::Failed, Some(kind), code, out);
}

/// Moves a device; a change is reported once.
fn set(
    d: &mut DeviceRecord,
    now_ms: u64,
    state: DeviceState,
    fail: Option<FailKind>,
    code: Option<Token>,
    out: &mut Vec<Action>,
) {
    if d.state == state && d.fail == fail && d.code == code {
        return;
    }
    if d.state != state {
        d.since_ms = now_ms;
    }
    d.state = state;
    d.fail = fail;
    d.code.clone_from(&code);
    out.push(Action::DeviceChanged {
        device: d.device.clone(),
        state,
        fail,
        code,
    });
}

#[cfg(test)]
mod tests;
