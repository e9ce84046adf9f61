//! The update agent's decisions, sans-IO: what to do next given the campaign's instruction,
//! DICOM activity, the clock, download progress and health after the switch.
//!
//! [`Agent::handle`] takes the time and one [`Input`] and returns [`Action`]s for the shell to
//! carry out (download from an offset, verify, install into the inactive slot, switch, probe,
//! commit, roll back) and [`Report`]s for the fleet. The shell feeds back what happened. The
//! order is fixed: download → verify (everything, payload included, before anything is
//! written) → install into the inactive slot → wait for DICOM to be idle → switch → prove
//! health within a deadline → commit, or roll back by itself and say why.
//!
//! A switch restarts (directory slots) or reboots (A/B image) the process that runs the agent:
//! the shell keeps the instruction on disk and the new process starts with
//! [`Agent::on_probation`] when the slot backend reports a probation.
//!
//! Waiting rules ([`idle_verdict`]): never while an association is open or a study is still
//! arriving (quiet for less than its stable age) — not even past a forced deadline, since
//! switching would cut a study in flight (promise 3); before the deadline also not outside the
//! maintenance window nor with more than the bound of objects waiting to be forwarded. Past the
//! deadline a time-forced install skips the window and the queue bound (the queue is durable in
//! the spool and resumes after the switch); a soft install gives up and says why.

use crate::types::{Name, Timestamp, Version};
use medgate_contract::Modality;
use std::fmt;

/// How the campaign wants the install done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Wait for idle DICOM and the window; give up at `give_up_at`, if given.
    Soft {
        /// The last moment to switch; then the install is abandoned.
        give_up_at: Option<Timestamp>,
    },
    /// Wait like soft until `at`, then skip the window and the queue bound (never an open
    /// association or a study arriving).
    TimeForced {
        /// The moment the window and the queue bound stop counting.
        at: Timestamp,
    },
}

/// A daily maintenance window in UTC (the fleet converts the site's time zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Minutes after midnight UTC when it opens (0–1439).
    pub start_minute: u16,
    /// How long it stays open, in minutes (1–1440).
    pub minutes: u16,
}

impl Window {
    fn offset(now: Timestamp, start_minute: u16) -> u64 {
        let day = now.unix() % 86_400;
        (day + 86_400 - u64::from(start_minute) * 60) % 86_400
    }
    /// Whether `now` is inside.
    pub fn contains(&self, now: Timestamp) -> bool {
        Self::offset(now, self.start_minute) < u64::from(self.minutes) * 60
    }
    /// When it opens next (now, if open).
    pub fn next_open(&self, now: Timestamp) -> Timestamp {
        if self.contains(now) {
            return now;
        }
        let since_open = Self::offset(now, self.start_minute);
        now.plus_secs(86_400 - since_open)
    }
}

/// The fleet's instruction for one install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// The campaign's id (reports name it).
    pub campaign: Name,
    /// The version the bundle installs.
    pub version: Version,
    /// The bundle file's size in bytes.
    pub size: u64,
    /// Soft or time-forced, with its deadline.
    pub mode: Mode,
    /// The site's maintenance window.
    pub window: Option<Window>,
}

/// A study still arriving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arriving {
    /// Its modality (`CT`), for the reason in words.
    pub modality: Modality,
    /// When its last object arrived.
    pub last_object: Timestamp,
    /// How long it must be quiet to count as complete (the appliance's stable age for it).
    pub stable_age_secs: u64,
}

/// What the DICOM side is doing (the shell reads it from the running appliance).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Activity {
    /// Associations open now.
    pub associations: u32,
    /// When the last object (of any study) arrived.
    pub last_object: Option<Timestamp>,
    /// Studies that received an object within their stable age.
    pub arriving: Vec<Arriving>,
    /// Objects waiting to be forwarded.
    pub forward_queue: u64,
}

/// Why the agent waits, in words the console shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    /// No recent activity report: idle is never assumed.
    ActivityUnknown,
    /// Associations open.
    Associations(u32),
    /// A study arriving, quiet in so many seconds.
    StudyArriving {
        /// Its modality.
        modality: Modality,
        /// Seconds until it has been quiet for its stable age.
        quiet_in_secs: u64,
    },
    /// An object arrived moments ago (a modality between two associations).
    RecentObject {
        /// Seconds since it arrived.
        ago_secs: u64,
        /// Seconds until the quiet period is over.
        quiet_in_secs: u64,
    },
    /// Outside the maintenance window.
    OutsideWindow {
        /// When it opens.
        opens: Timestamp,
    },
    /// Too many objects waiting to be forwarded.
    Queue {
        /// Objects waiting.
        depth: u64,
        /// The bound.
        bound: u64,
    },
    /// A download stopped; retrying.
    DownloadRetry {
        /// Bytes already downloaded.
        have: u64,
        /// When the next attempt starts.
        at: Timestamp,
    },
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ActivityUnknown => f.write_str("DICOM activity not known yet"),
            Self::Associations(1) => f.write_str("1 association active"),
            Self::Associations(n) => write!(f, "{n} associations active"),
            Self::StudyArriving {
                modality,
                quiet_in_secs,
            } => {
                write!(f, "{modality} study arriving, quiet in {quiet_in_secs} s")
            }
            Self::RecentObject {
                ago_secs,
                quiet_in_secs,
            } => {
                write!(
                    f,
                    "an object arrived {ago_secs} s ago, quiet in {quiet_in_secs} s"
                )
            }
            Self::OutsideWindow { opens } => {
                write!(f, "outside the maintenance window, opens {opens}")
            }
            Self::Queue { depth, bound } => {
                write!(
                    f,
                    "{depth} objects waiting to be forwarded, switching at {bound} or fewer"
                )
            }
            Self::DownloadRetry { have, at } => {
                write!(f, "download stopped at {have} bytes, resuming at {at}")
            }
        }
    }
}

/// The agent's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// At most this many objects waiting to be forwarded at the switch (before a forced deadline).
    pub queue_bound: u64,
    /// DICOM counts as idle only this long after the last object (modalities open one
    /// association per series: the gap between two is not idle).
    pub quiet_secs: u64,
    /// An activity report older than this is not trusted.
    pub activity_max_age_secs: u64,
    /// The new version must be healthy within this after the switch, else it is rolled back.
    pub health_deadline_secs: u64,
    /// Seconds between health probes.
    pub probe_interval_secs: u64,
    /// Consecutive healthy probes needed to commit.
    pub healthy_probes: u32,
    /// First download retry delay (doubles, up to `download_retry_max_secs`).
    pub download_retry_secs: u64,
    /// Longest download retry delay.
    pub download_retry_max_secs: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            queue_bound: 100,
            quiet_secs: 10,
            activity_max_age_secs: 15,
            health_deadline_secs: 120,
            probe_interval_secs: 5,
            healthy_probes: 2,
            download_retry_secs: 5,
            download_retry_max_secs: 300,
        }
    }
}

/// One round of health probes after the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// The listener answered C-ECHO.
    pub echo: bool,
    /// A file could be written and fsync'd in the spool.
    pub spool_writable: bool,
    /// Connected to the fleet's broker.
    pub mqtt: bool,
    /// The archive is reachable, or the forward queue is safe (durable and not growing past
    /// what the spool holds).
    pub archive: bool,
}

impl Health {
    /// Whether every probe passed.
    pub fn ok(&self) -> bool {
        self.failing().is_empty()
    }
    /// The probes that failed, in words.
    pub fn failing(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.echo {
            out.push("the listener did not answer C-ECHO");
        }
        if !self.spool_writable {
            out.push("the spool is not writable");
        }
        if !self.mqtt {
            out.push("MQTT not connected");
        }
        if !self.archive {
            out.push("the archive is unreachable and the queue not safe");
        }
        out
    }
}

/// Why a step failed or was refused (a code and words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// A stable `snake_case` code (`bad_signature`, `install_failed`, …).
    pub code: String,
    /// What happened and what to do.
    pub message: String,
}

impl Refusal {
    /// A refusal.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Install this; `partial` bytes of the bundle are already downloaded.
    Campaign {
        /// The instruction.
        instruction: Instruction,
        /// Bytes on disk from an earlier attempt.
        partial: u64,
    },
    /// The fleet cancels (honoured until the switch).
    Cancel,
    /// Time passed.
    Tick,
    /// The current DICOM activity.
    Activity(Activity),
    /// Bytes downloaded so far.
    DownloadProgress {
        /// Bytes on disk.
        have: u64,
    },
    /// The download stopped (connection cut, server error).
    DownloadStopped {
        /// Bytes on disk.
        have: u64,
        /// Why.
        error: String,
    },
    /// The download reached its end.
    DownloadComplete {
        /// Bytes on disk.
        have: u64,
    },
    /// Verification's outcome (everything, payload hash included): the version the verified
    /// bundle installs.
    Verified(Result<Version, Refusal>),
    /// The install into the inactive slot.
    Installed(Result<(), Refusal>),
    /// The switch.
    Switched(Result<(), Refusal>),
    /// A round of health probes.
    Health(Health),
    /// The commit.
    Committed(Result<(), Refusal>),
    /// The rollback.
    RolledBack(Result<(), Refusal>),
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Download the bundle from this byte offset (HTTP Range), reporting progress.
    Download {
        /// Where to resume.
        from: u64,
    },
    /// Verify the downloaded bundle completely (metadata, signatures, payload hash).
    Verify,
    /// Remove the downloaded file (refused or cancelled).
    DiscardDownload,
    /// Install the verified bundle into the inactive slot.
    Install,
    /// Nothing to do now, for this reason.
    Wait(WaitReason),
    /// Switch to the installed version (restart or reboot into it, on probation).
    Switch,
    /// Run the health probes and report them.
    ProbeHealth,
    /// Make the new version permanent.
    Commit,
    /// Go back to the previous version.
    RollBack {
        /// Why, in words.
        why: String,
    },
    /// Tell the fleet.
    Report(Report),
}

/// The state the fleet shows for this device's install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Downloading.
    Downloading,
    /// Verifying.
    Verifying,
    /// Installing into the inactive slot.
    Installing,
    /// Installed, waiting for idle DICOM.
    WaitingIdle,
    /// Switching.
    Switching,
    /// Running the new version on probation.
    Probing,
    /// Running the new version, committed.
    Installed,
    /// Back on the previous version.
    RolledBack,
    /// The bundle was refused.
    Refused,
    /// A step failed.
    Failed,
    /// Cancelled by the fleet.
    Cancelled,
    /// A soft install whose deadline passed.
    Abandoned,
}

impl State {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Downloading => "downloading",
            Self::Verifying => "verifying",
            Self::Installing => "installing",
            Self::WaitingIdle => "waiting_idle",
            Self::Switching => "switching",
            Self::Probing => "probing",
            Self::Installed => "installed",
            Self::RolledBack => "rolled_back",
            Self::Refused => "refused",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Abandoned => "abandoned",
        }
    }
    /// Whether the install is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Installed
                | Self::RolledBack
                | Self::Refused
                | Self::Failed
                | Self::Cancelled
                | Self::Abandoned
        )
    }
}

/// One report to the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The campaign.
    pub campaign: Name,
    /// The version being installed.
    pub version: Version,
    /// Where it stands.
    pub state: State,
    /// For a final state other than `installed`: a stable `snake_case` code of why
    /// (`bad_signature`, `health_deadline`, `deadline_passed`, …).
    pub code: Option<String>,
    /// Words: progress, the wait reason, the refusal, why it rolled back.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Idle,
    Downloading {
        have: u64,
        attempts: u32,
        retry_at: Option<Timestamp>,
        reported_tenth: u64,
    },
    Verifying,
    Installing,
    WaitingIdle {
        reason: Option<WaitReason>,
    },
    Switching,
    Probing {
        since: Timestamp,
        last_probe: Timestamp,
        healthy: u32,
        last: Option<Health>,
    },
    Committing,
    RollingBack {
        code: &'static str,
        why: String,
    },
    Over(State),
}

/// The agent: one install at a time.
#[derive(Debug, Clone)]
pub struct Agent {
    policy: Policy,
    job: Option<Instruction>,
    phase: Phase,
    activity: Option<(Timestamp, Activity)>,
    /// The final report of the last install, repeated when the fleet repeats its instruction.
    outcome: Option<Report>,
}

/// Whether DICOM is idle enough to switch now, or why not.
pub fn idle_verdict(
    activity: Option<&(Timestamp, Activity)>,
    instruction: &Instruction,
    policy: &Policy,
    now: Timestamp,
) -> Result<(), WaitReason> {
    let Some((_, activity)) =
        activity.filter(|(at, _)| now.secs_since(*at) <= policy.activity_max_age_secs)
    else {
        return Err(WaitReason::ActivityUnknown);
    };
    if activity.associations > 0 {
        return Err(WaitReason::Associations(activity.associations));
    }
    let arriving = activity
        .arriving
        .iter()
        .map(|s| {
            (
                s,
                s.last_object.plus_secs(s.stable_age_secs).secs_since(now),
            )
        })
        .filter(|(_, quiet_in)| *quiet_in > 0)
        .max_by_key(|(_, quiet_in)| *quiet_in);
    if let Some((study, quiet_in_secs)) = arriving {
        return Err(WaitReason::StudyArriving {
            modality: study.modality.clone(),
            quiet_in_secs,
        });
    }
    if let Some(last) = activity.last_object {
        let quiet_in_secs = last.plus_secs(policy.quiet_secs).secs_since(now);
        if quiet_in_secs > 0 {
            return Err(WaitReason::RecentObject {
                ago_secs: now.secs_since(last),
                quiet_in_secs,
            });
        }
    }
    let forced_now = matches!(instruction.mode, Mode::TimeForced { at } if now >= at);
    if forced_now {
        return Ok(());
    }
    if let Some(window) = instruction.window {
        if !window.contains(now) {
            return Err(WaitReason::OutsideWindow {
                opens: window.next_open(now),
            });
        }
    }
    if activity.forward_queue > policy.queue_bound {
        return Err(WaitReason::Queue {
            depth: activity.forward_queue,
            bound: policy.queue_bound,
        });
    }
    Ok(())
}

impl Agent {
    /// An agent with nothing to do.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            job: None,
            phase: Phase::Idle,
            activity: None,
            outcome: None,
        }
    }

    /// The agent of a process that started on probation (the switch restarted or rebooted into
    /// the new version): it probes health and commits or rolls back.
    pub fn on_probation(
        policy: Policy,
        instruction: Instruction,
        now: Timestamp,
    ) -> (Self, Vec<Action>) {
        let mut agent = Self {
            policy,
            job: Some(instruction),
            phase: Phase::Idle,
            activity: None,
            outcome: None,
        };
        let mut out = Vec::new();
        agent.probe_from(now, &mut out);
        (agent, out)
    }

    /// The state to show, if an install is under way or over.
    pub fn state(&self) -> Option<State> {
        self.job.as_ref()?;
        Some(match &self.phase {
            Phase::Idle => return None,
            Phase::Downloading { .. } => State::Downloading,
            Phase::Verifying => State::Verifying,
            Phase::Installing => State::Installing,
            Phase::WaitingIdle { .. } => State::WaitingIdle,
            Phase::Switching => State::Switching,
            Phase::Probing { .. } | Phase::Committing | Phase::RollingBack { .. } => State::Probing,
            Phase::Over(s) => *s,
        })
    }

    fn report(&self, state: State, detail: impl Into<String>, out: &mut Vec<Action>) {
        self.report_code(state, None, detail.into(), out);
    }

    fn report_code(&self, state: State, code: Option<&str>, detail: String, out: &mut Vec<Action>) {
        if let Some(job) = &self.job {
            out.push(Action::Report(Report {
                campaign: job.campaign.clone(),
                version: job.version.clone(),
                state,
                code: code.map(str::to_owned),
                detail,
            }));
        }
    }

    fn finish(&mut self, state: State, code: Option<&str>, detail: String, out: &mut Vec<Action>) {
        self.report_code(state, code, detail, out);
        self.outcome = match out.last() {
            Some(Action::Report(r)) => Some(r.clone()),
            _ => None,
        };
        self.phase = Phase::Over(state);
    }

    fn probe_from(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        self.phase = Phase::Probing {
            since: now,
            last_probe: now,
            healthy: 0,
            last: None,
        };
        self.report(
            State::Probing,
            format!(
                "healthy within {} s or rolled back",
                self.policy.health_deadline_secs
            ),
            out,
        );
        out.push(Action::ProbeHealth);
    }

    fn download_from(&mut self, have: u64, attempts: u32, out: &mut Vec<Action>) {
        self.phase = Phase::Downloading {
            have,
            attempts,
            retry_at: None,
            reported_tenth: u64::MAX,
        };
        out.push(Action::Download { from: have });
    }

    /// Handle one input at time `now`; the actions, in order.
    pub fn handle(&mut self, now: Timestamp, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Campaign {
                instruction,
                partial,
            } => self.on_campaign(instruction, partial, &mut out),
            Input::Cancel => self.on_cancel(&mut out),
            Input::Tick => self.on_tick(now, &mut out),
            Input::Activity(a) => {
                self.activity = Some((now, a));
                if matches!(self.phase, Phase::WaitingIdle { .. }) {
                    self.try_switch(now, &mut out);
                }
            }
            Input::DownloadProgress { have } => self.on_progress(have, &mut out),
            Input::DownloadStopped { have, error } => self.on_stopped(now, have, &error, &mut out),
            Input::DownloadComplete { have } => self.on_complete(now, have, &mut out),
            Input::Verified(r) => self.on_verified(r, &mut out),
            Input::Installed(r) => self.on_installed(now, r, &mut out),
            Input::Switched(r) => self.on_switched(now, r, &mut out),
            Input::Health(h) => self.on_health(now, h, &mut out),
            Input::Committed(r) => self.on_committed(r, &mut out),
            Input::RolledBack(r) => self.on_rolled_back(r, &mut out),
        }
        out
    }

    fn on_campaign(&mut self, instruction: Instruction, partial: u64, out: &mut Vec<Action>) {
        let busy = !matches!(self.phase, Phase::Idle | Phase::Over(_));
        if self.job.as_ref() == Some(&instruction) {
            // The fleet repeats itself (a retained message, a reconnect): say where we are, and
            // never start over an install that already ended — a version that rolled back is
            // not tried again until the fleet issues a new instruction.
            match (&self.outcome, busy) {
                (Some(report), false) => out.push(Action::Report(report.clone())),
                _ => {
                    let state = self.state().unwrap_or(State::Downloading);
                    self.report(state, "already under way", out);
                }
            }
            return;
        }
        let past_switch = matches!(
            self.phase,
            Phase::Switching
                | Phase::Probing { .. }
                | Phase::Committing
                | Phase::RollingBack { .. }
        );
        if past_switch {
            return; // The probation decides first; the fleet sees the outcome and asks again.
        }
        if busy {
            out.push(Action::DiscardDownload);
        }
        self.job = Some(instruction);
        let have = if busy { 0 } else { partial };
        self.report(State::Downloading, format!("from byte {have}"), out);
        self.download_from(have, 0, out);
    }

    fn on_cancel(&mut self, out: &mut Vec<Action>) {
        match self.phase {
            Phase::Downloading { .. }
            | Phase::Verifying
            | Phase::Installing
            | Phase::WaitingIdle { .. } => {
                out.push(Action::DiscardDownload);
                self.finish(
                    State::Cancelled,
                    Some("cancelled"),
                    "cancelled by the fleet before the switch".into(),
                    out,
                );
            }
            _ => {}
        }
    }

    fn on_tick(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        match self.phase.clone() {
            Phase::Downloading {
                have,
                attempts,
                retry_at: Some(at),
                ..
            } if now >= at => {
                self.download_from(have, attempts, out);
            }
            Phase::WaitingIdle { .. } => self.try_switch(now, out),
            Phase::Probing { last_probe, .. } => {
                if self.past_health_deadline(now, out) {
                    return;
                }
                if now.secs_since(last_probe) >= self.policy.probe_interval_secs {
                    if let Phase::Probing { last_probe, .. } = &mut self.phase {
                        *last_probe = now;
                    }
                    out.push(Action::ProbeHealth);
                }
            }
            _ => {}
        }
    }

    /// Past the health deadline: roll back (true).
    fn past_health_deadline(&mut self, now: Timestamp, out: &mut Vec<Action>) -> bool {
        let Phase::Probing { since, last, .. } = &self.phase else {
            return false;
        };
        let limit = self.policy.health_deadline_secs;
        if now.secs_since(*since) < limit {
            return false;
        }
        let (code, why) = match last {
            None => (
                "no_health_report",
                format!("no health report within {limit} s of the switch"),
            ),
            Some(h) if h.ok() => (
                "health_deadline",
                format!(
                    "not healthy within {limit} s of the switch: not enough healthy probes in a row"
                ),
            ),
            Some(h) => (
                "health_deadline",
                format!(
                    "not healthy within {limit} s of the switch: {}",
                    h.failing().join(", ")
                ),
            ),
        };
        self.roll_back(code, why, out);
        true
    }

    fn on_progress(&mut self, have: u64, out: &mut Vec<Action>) {
        let size = self.job.as_ref().map_or(0, |j| j.size);
        let mut tell = None;
        if let Phase::Downloading {
            have: h,
            reported_tenth,
            ..
        } = &mut self.phase
        {
            *h = have;
            let tenth = have.saturating_mul(10).checked_div(size).unwrap_or(10);
            if tenth != *reported_tenth {
                *reported_tenth = tenth;
                tell = Some(format!("{}% ({have} of {size} bytes)", tenth * 10));
            }
        }
        if let Some(detail) = tell {
            self.report(State::Downloading, detail, out);
        }
    }

    fn on_stopped(&mut self, now: Timestamp, have: u64, error: &str, out: &mut Vec<Action>) {
        let Phase::Downloading { attempts, .. } = self.phase else {
            return;
        };
        let attempts = attempts.saturating_add(1);
        let shift = attempts.saturating_sub(1).min(16);
        let delay = self
            .policy
            .download_retry_secs
            .saturating_mul(1 << shift)
            .min(self.policy.download_retry_max_secs);
        let at = now.plus_secs(delay);
        self.phase = Phase::Downloading {
            have,
            attempts,
            retry_at: Some(at),
            reported_tenth: u64::MAX,
        };
        let reason = WaitReason::DownloadRetry { have, at };
        self.report(State::Downloading, format!("{reason} ({error})"), out);
        out.push(Action::Wait(reason));
    }

    fn on_complete(&mut self, now: Timestamp, have: u64, out: &mut Vec<Action>) {
        if !matches!(self.phase, Phase::Downloading { .. }) {
            return;
        }
        let size = self.job.as_ref().map_or(0, |j| j.size);
        if have < size {
            self.on_stopped(now, have, "the server ended the download early", out);
        } else if have > size {
            out.push(Action::DiscardDownload);
            let detail =
                format!("{have} bytes, the campaign announced {size}; the bundle was discarded");
            self.finish(State::Failed, Some("download_size"), detail, out);
        } else {
            self.phase = Phase::Verifying;
            self.report(
                State::Verifying,
                "signatures, thresholds, expiry, compatibility, payload hash",
                out,
            );
            out.push(Action::Verify);
        }
    }

    fn on_verified(&mut self, r: Result<Version, Refusal>, out: &mut Vec<Action>) {
        if self.phase != Phase::Verifying {
            return;
        }
        let announced = self.job.as_ref().map(|j| j.version.clone());
        let r = r.and_then(|version| match announced {
            Some(a) if a != version => Err(Refusal::new(
                "version_mismatch",
                format!("the bundle installs version {version}, the campaign announced {a}: the fleet must name the bundle it sends"),
            )),
            _ => Ok(()),
        });
        match r {
            Ok(()) => {
                self.phase = Phase::Installing;
                self.report(State::Installing, "into the inactive slot", out);
                out.push(Action::Install);
            }
            Err(refusal) => {
                out.push(Action::DiscardDownload);
                self.finish(State::Refused, Some(&refusal.code), refusal.message, out);
            }
        }
    }

    fn on_installed(&mut self, now: Timestamp, r: Result<(), Refusal>, out: &mut Vec<Action>) {
        if self.phase != Phase::Installing {
            return;
        }
        match r {
            Ok(()) => {
                self.phase = Phase::WaitingIdle { reason: None };
                self.try_switch(now, out);
            }
            Err(refusal) => {
                self.finish(State::Failed, Some(&refusal.code), refusal.message, out);
            }
        }
    }

    fn try_switch(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        let Some(job) = &self.job else { return };
        match idle_verdict(self.activity.as_ref(), job, &self.policy, now) {
            Ok(()) => {
                self.phase = Phase::Switching;
                self.report(State::Switching, "DICOM idle", out);
                out.push(Action::Switch);
            }
            Err(reason) => {
                let soft_over = matches!(job.mode, Mode::Soft { give_up_at: Some(d) } if now >= d);
                if soft_over {
                    let detail = format!(
                        "DICOM was not idle before the deadline (last: {reason}); the new version stays installed in the inactive slot"
                    );
                    self.finish(State::Abandoned, Some("deadline_passed"), detail, out);
                    return;
                }
                let changed =
                    !matches!(&self.phase, Phase::WaitingIdle { reason: Some(r) } if *r == reason);
                if changed {
                    self.report(
                        State::WaitingIdle,
                        format!("waiting for idle DICOM: {reason}"),
                        out,
                    );
                    out.push(Action::Wait(reason.clone()));
                }
                self.phase = Phase::WaitingIdle {
                    reason: Some(reason),
                };
            }
        }
    }

    fn on_switched(&mut self, now: Timestamp, r: Result<(), Refusal>, out: &mut Vec<Action>) {
        if self.phase != Phase::Switching {
            return;
        }
        match r {
            Ok(()) => self.probe_from(now, out),
            Err(refusal) => {
                self.roll_back(
                    "switch_failed",
                    format!("the switch failed: {}", refusal.message),
                    out,
                );
            }
        }
    }

    fn on_health(&mut self, now: Timestamp, h: Health, out: &mut Vec<Action>) {
        if self.past_health_deadline(now, out) {
            return;
        }
        let need = self.policy.healthy_probes;
        let Phase::Probing {
            healthy,
            last,
            last_probe,
            ..
        } = &mut self.phase
        else {
            return;
        };
        *last = Some(h);
        *last_probe = now;
        *healthy = if h.ok() { healthy.saturating_add(1) } else { 0 };
        if *healthy >= need {
            self.phase = Phase::Committing;
            out.push(Action::Commit);
        }
    }

    fn roll_back(&mut self, code: &'static str, why: String, out: &mut Vec<Action>) {
        self.phase = Phase::RollingBack {
            code,
            why: why.clone(),
        };
        out.push(Action::RollBack { why });
    }

    fn on_committed(&mut self, r: Result<(), Refusal>, out: &mut Vec<Action>) {
        if self.phase != Phase::Committing {
            return;
        }
        match r {
            Ok(()) => self.finish(State::Installed, None, "healthy and committed".into(), out),
            Err(refusal) => {
                self.roll_back(
                    "commit_failed",
                    format!("the commit failed: {}", refusal.message),
                    out,
                );
            }
        }
    }

    fn on_rolled_back(&mut self, r: Result<(), Refusal>, out: &mut Vec<Action>) {
        let Phase::RollingBack { code, why } = self.phase.clone() else {
            return;
        };
        match r {
            Ok(()) => self.finish(State::RolledBack, Some(code), why, out),
            Err(refusal) => self.finish(
                State::Failed,
                Some("rollback_failed"),
                format!("{why}; the rollback failed too ({}): the boot counter falls back at the next restart", refusal.message),
                out,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_796_002_400; // 2026-11-30T01:33:20Z

    fn t(secs: u64) -> Timestamp {
        Timestamp::from_unix(T0 + secs)
    }

    fn soft() -> Mode {
        Mode::Soft { give_up_at: None }
    }

    fn job(mode: Mode, window: Option<Window>) -> Instruction {
        Instruction {
            campaign: "c-42".parse().expect("name"),
            version: "1.5.0".parse().expect("version"),
            size: 1000,
            mode,
            window,
        }
    }

    fn quiet() -> Activity {
        Activity::default()
    }

    fn ct(last: u64) -> Arriving {
        Arriving {
            modality: Modality::new("CT").expect("modality"),
            last_object: t(last),
            stable_age_secs: 60,
        }
    }

    fn verdict(a: Activity, at: u64, j: &Instruction, now: u64) -> Result<(), String> {
        idle_verdict(Some(&(t(at), a)), j, &Policy::default(), t(now)).map_err(|r| r.to_string())
    }

    #[test]
    fn waiting_rules() {
        let soft = job(soft(), None);
        assert_eq!(verdict(quiet(), 100, &soft, 100), Ok(()));
        let two = Activity {
            associations: 2,
            ..quiet()
        };
        assert_eq!(
            verdict(two, 100, &soft, 100),
            Err("2 associations active".into())
        );
        let one = Activity {
            associations: 1,
            ..quiet()
        };
        assert_eq!(
            verdict(one, 100, &soft, 100),
            Err("1 association active".into())
        );
        // The last CT object came 20 s ago, its stable age is 60 s.
        let arriving = Activity {
            arriving: vec![ct(80)],
            ..quiet()
        };
        assert_eq!(
            verdict(arriving.clone(), 100, &soft, 100),
            Err("CT study arriving, quiet in 40 s".into())
        );
        assert_eq!(
            verdict(arriving, 135, &soft, 140),
            Ok(()),
            "quiet for its stable age"
        );
        // The study that is quiet last is named.
        let two_studies = Activity {
            arriving: vec![
                ct(80),
                Arriving {
                    modality: Modality::new("MR").expect("modality"),
                    last_object: t(95),
                    stable_age_secs: 120,
                },
            ],
            ..quiet()
        };
        assert_eq!(
            verdict(two_studies, 100, &soft, 100),
            Err("MR study arriving, quiet in 115 s".into())
        );
        let recent = Activity {
            last_object: Some(t(97)),
            ..quiet()
        };
        assert_eq!(
            verdict(recent.clone(), 100, &soft, 100),
            Err("an object arrived 3 s ago, quiet in 7 s".into())
        );
        assert_eq!(verdict(recent, 106, &soft, 107), Ok(()));
        let queue = Activity {
            forward_queue: 340,
            ..quiet()
        };
        assert_eq!(
            verdict(queue, 100, &soft, 100),
            Err("340 objects waiting to be forwarded, switching at 100 or fewer".into())
        );
        // No fresh report: idle is never assumed.
        assert_eq!(
            verdict(quiet(), 100, &soft, 116),
            Err("DICOM activity not known yet".into())
        );
        assert_eq!(
            idle_verdict(None, &soft, &Policy::default(), t(0)).map_err(|r| r.to_string()),
            Err("DICOM activity not known yet".into())
        );
    }

    #[test]
    fn maintenance_window_and_forced_deadline() {
        // 02:00–04:00 UTC. T0 is 01:33:20 UTC.
        let window = Window {
            start_minute: 120,
            minutes: 120,
        };
        assert!(!window.contains(t(0)));
        assert_eq!(window.next_open(t(0)).to_string(), "2026-11-30T02:00:00Z");
        assert!(window.contains(t(27 * 60)));
        assert!(!window.contains(t(27 * 60 + 7200)));
        let soft = job(soft(), Some(window));
        assert_eq!(
            verdict(quiet(), 0, &soft, 0),
            Err("outside the maintenance window, opens 2026-11-30T02:00:00Z".into())
        );
        assert_eq!(verdict(quiet(), 1700, &soft, 1700), Ok(()));
        // Forced at 600 s: before it, the window and the queue hold; after, only DICOM in flight.
        let forced = job(Mode::TimeForced { at: t(600) }, Some(window));
        assert!(verdict(quiet(), 100, &forced, 100).is_err());
        let busy_queue = Activity {
            forward_queue: 5000,
            ..quiet()
        };
        assert_eq!(verdict(busy_queue, 600, &forced, 600), Ok(()));
        let open = Activity {
            associations: 1,
            ..quiet()
        };
        assert_eq!(
            verdict(open, 600, &forced, 600),
            Err("1 association active".into())
        );
        let arriving = Activity {
            arriving: vec![ct(590)],
            ..quiet()
        };
        assert_eq!(
            verdict(arriving, 600, &forced, 600),
            Err("CT study arriving, quiet in 50 s".into())
        );
    }

    fn reports(actions: &[Action]) -> Vec<(State, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Report(r) => Some((
                    r.state,
                    r.code
                        .as_ref()
                        .map_or_else(|| r.detail.clone(), |c| format!("{c}: {}", r.detail)),
                )),
                _ => None,
            })
            .collect()
    }

    fn others(actions: &[Action]) -> Vec<Action> {
        actions
            .iter()
            .filter(|a| !matches!(a, Action::Report(_)))
            .cloned()
            .collect()
    }

    /// An agent that downloaded, verified and installed: now waiting for idle DICOM.
    fn installed(j: Instruction) -> Agent {
        let mut a = Agent::new(Policy::default());
        assert_eq!(
            others(&a.handle(
                t(0),
                Input::Campaign {
                    instruction: j,
                    partial: 0
                }
            )),
            [Action::Download { from: 0 }]
        );
        assert_eq!(
            others(&a.handle(t(1), Input::DownloadComplete { have: 1000 })),
            [Action::Verify]
        );
        assert_eq!(
            others(&a.handle(t(2), Input::Verified(Ok("1.5.0".parse().expect("version"))))),
            [Action::Install]
        );
        a
    }

    #[test]
    fn downloads_resume_where_they_stopped() {
        let mut a = Agent::new(Policy::default());
        let out = a.handle(
            t(0),
            Input::Campaign {
                instruction: job(soft(), None),
                partial: 200,
            },
        );
        assert_eq!(
            others(&out),
            [Action::Download { from: 200 }],
            "the bytes of an earlier attempt are kept"
        );
        let out = a.handle(t(1), Input::DownloadProgress { have: 500 });
        assert_eq!(
            reports(&out),
            [(State::Downloading, "50% (500 of 1000 bytes)".into())]
        );
        assert!(
            a.handle(t(2), Input::DownloadProgress { have: 510 })
                .is_empty(),
            "reported per tenth"
        );
        let out = a.handle(
            t(3),
            Input::DownloadStopped {
                have: 510,
                error: "connection reset".into(),
            },
        );
        let at = t(8);
        assert_eq!(
            others(&out),
            [Action::Wait(WaitReason::DownloadRetry { have: 510, at })]
        );
        assert!(a.handle(t(7), Input::Tick).is_empty());
        assert_eq!(
            others(&a.handle(t(8), Input::Tick)),
            [Action::Download { from: 510 }]
        );
        // The second stop waits twice as long.
        let out = a.handle(
            t(9),
            Input::DownloadStopped {
                have: 700,
                error: "timeout".into(),
            },
        );
        assert_eq!(
            others(&out),
            [Action::Wait(WaitReason::DownloadRetry {
                have: 700,
                at: t(19)
            })]
        );
        assert_eq!(
            others(&a.handle(t(19), Input::Tick)),
            [Action::Download { from: 700 }]
        );
        // A server that ends early counts as a stop.
        let out = a.handle(t(20), Input::DownloadComplete { have: 900 });
        assert!(matches!(
            others(&out)[..],
            [Action::Wait(WaitReason::DownloadRetry { have: 900, .. })]
        ));
    }

    #[test]
    fn a_refused_bundle_is_never_installed() {
        let mut a = Agent::new(Policy::default());
        a.handle(
            t(0),
            Input::Campaign {
                instruction: job(soft(), None),
                partial: 0,
            },
        );
        a.handle(t(1), Input::DownloadComplete { have: 1000 });
        let out = a.handle(
            t(2),
            Input::Verified(Err(Refusal::new(
                "bad_signature",
                "the signature by key ab12 does not verify",
            ))),
        );
        assert_eq!(others(&out), [Action::DiscardDownload]);
        assert_eq!(
            reports(&out),
            [(
                State::Refused,
                "bad_signature: the signature by key ab12 does not verify".into()
            )]
        );
        assert_eq!(a.state(), Some(State::Refused));
        assert!(others(&a.handle(t(3), Input::Installed(Ok(())))).is_empty());
        // A verified bundle of another version than announced is refused too.
        let mut b = Agent::new(Policy::default());
        b.handle(
            t(0),
            Input::Campaign {
                instruction: job(soft(), None),
                partial: 0,
            },
        );
        b.handle(t(1), Input::DownloadComplete { have: 1000 });
        let out = b.handle(t(2), Input::Verified(Ok("1.6.0".parse().expect("version"))));
        assert_eq!(others(&out), [Action::DiscardDownload]);
        assert!(
            reports(&out)[0]
                .1
                .starts_with("version_mismatch: the bundle installs version 1.6.0")
        );
    }

    #[test]
    fn waits_for_idle_dicom_and_says_why_then_switches() {
        let mut a = installed(job(soft(), None));
        let out = a.handle(t(3), Input::Installed(Ok(())));
        assert_eq!(others(&out), [Action::Wait(WaitReason::ActivityUnknown)]);
        let out = a.handle(
            t(4),
            Input::Activity(Activity {
                associations: 2,
                ..quiet()
            }),
        );
        assert_eq!(
            reports(&out),
            [(
                State::WaitingIdle,
                "waiting for idle DICOM: 2 associations active".into()
            )]
        );
        assert!(
            a.handle(
                t(5),
                Input::Activity(Activity {
                    associations: 2,
                    ..quiet()
                })
            )
            .is_empty(),
            "said once"
        );
        let out = a.handle(
            t(6),
            Input::Activity(Activity {
                arriving: vec![ct(6)],
                ..quiet()
            }),
        );
        assert_eq!(
            reports(&out),
            [(
                State::WaitingIdle,
                "waiting for idle DICOM: CT study arriving, quiet in 60 s".into()
            )]
        );
        // Ticks alone do not switch once the report is stale.
        assert!(
            others(&a.handle(t(70), Input::Tick))
                .iter()
                .all(|x| *x != Action::Switch)
        );
        let out = a.handle(t(71), Input::Activity(quiet()));
        assert_eq!(others(&out), [Action::Switch]);
        assert_eq!(a.state(), Some(State::Switching));
    }

    #[test]
    fn a_soft_install_gives_up_at_its_deadline() {
        let mut a = installed(job(
            Mode::Soft {
                give_up_at: Some(t(100)),
            },
            None,
        ));
        a.handle(
            t(3),
            Input::Activity(Activity {
                associations: 1,
                ..quiet()
            }),
        );
        a.handle(t(3), Input::Installed(Ok(())));
        a.handle(
            t(99),
            Input::Activity(Activity {
                associations: 1,
                ..quiet()
            }),
        );
        let out = a.handle(t(100), Input::Tick);
        assert_eq!(a.state(), Some(State::Abandoned));
        assert!(reports(&out)[0].1.starts_with(
            "deadline_passed: DICOM was not idle before the deadline (last: 1 association active)"
        ));
        assert!(!others(&out).contains(&Action::Switch));
    }

    fn healthy() -> Health {
        Health {
            echo: true,
            spool_writable: true,
            mqtt: true,
            archive: true,
        }
    }

    fn switched() -> Agent {
        let mut a = installed(job(soft(), None));
        a.handle(t(3), Input::Activity(quiet()));
        assert_eq!(
            others(&a.handle(t(3), Input::Installed(Ok(())))),
            [Action::Switch]
        );
        assert_eq!(
            others(&a.handle(t(10), Input::Switched(Ok(())))),
            [Action::ProbeHealth]
        );
        a
    }

    #[test]
    fn healthy_in_time_commits() {
        let mut a = switched();
        assert!(
            others(&a.handle(t(11), Input::Health(healthy()))).is_empty(),
            "one healthy probe is not enough"
        );
        assert!(
            others(&a.handle(t(15), Input::Tick)).is_empty(),
            "probes every 5 s"
        );
        assert_eq!(others(&a.handle(t(16), Input::Tick)), [Action::ProbeHealth]);
        assert_eq!(
            others(&a.handle(t(17), Input::Health(healthy()))),
            [Action::Commit]
        );
        let out = a.handle(t(18), Input::Committed(Ok(())));
        assert_eq!(
            reports(&out),
            [(State::Installed, "healthy and committed".into())]
        );
    }

    #[test]
    fn not_healthy_by_the_deadline_rolls_back_and_says_why() {
        let mut a = switched();
        let sick = Health {
            echo: false,
            mqtt: false,
            ..healthy()
        };
        a.handle(t(11), Input::Health(healthy()));
        a.handle(t(20), Input::Health(sick));
        assert!(
            others(&a.handle(t(129), Input::Tick))
                .iter()
                .all(|x| !matches!(x, Action::RollBack { .. }))
        );
        let out = a.handle(t(130), Input::Tick);
        let why = "not healthy within 120 s of the switch: the listener did not answer C-ECHO, MQTT not connected";
        assert_eq!(others(&out), [Action::RollBack { why: why.into() }]);
        let out = a.handle(t(131), Input::RolledBack(Ok(())));
        assert_eq!(
            reports(&out),
            [(State::RolledBack, format!("health_deadline: {why}"))]
        );
        assert_eq!(
            a.state(),
            Some(State::RolledBack),
            "a device that rolled back is never shown as done"
        );
    }

    #[test]
    fn healthy_only_after_the_deadline_still_rolls_back() {
        let mut a = switched();
        a.handle(
            t(11),
            Input::Health(Health {
                echo: false,
                ..healthy()
            }),
        );
        let out = a.handle(t(130), Input::Health(healthy()));
        assert!(
            matches!(others(&out)[..], [Action::RollBack { .. }]),
            "{out:?}"
        );
        assert!(a.handle(t(131), Input::Health(healthy())).is_empty());
        let out = a.handle(t(132), Input::RolledBack(Ok(())));
        assert_eq!(reports(&out)[0].0, State::RolledBack);
    }

    #[test]
    fn a_repeated_instruction_never_starts_an_ended_install_again() {
        let mut a = switched();
        a.handle(t(130), Input::Tick);
        let out = a.handle(t(131), Input::RolledBack(Ok(())));
        let final_report = out.clone();
        // The fleet's retained instruction arrives again (reconnect): the outcome is repeated.
        let out = a.handle(
            t(200),
            Input::Campaign {
                instruction: job(soft(), None),
                partial: 0,
            },
        );
        assert_eq!(out, final_report);
        assert_eq!(a.state(), Some(State::RolledBack));
        // A new instruction (another campaign) starts a new install.
        let mut again = job(soft(), None);
        again.campaign = "c-43".parse().expect("name");
        let out = a.handle(
            t(201),
            Input::Campaign {
                instruction: again.clone(),
                partial: 0,
            },
        );
        assert_eq!(others(&out), [Action::Download { from: 0 }]);
        // While under way, a repeat only says so.
        let out = a.handle(
            t(202),
            Input::Campaign {
                instruction: again,
                partial: 0,
            },
        );
        assert_eq!(
            reports(&out),
            [(State::Downloading, "already under way".into())]
        );
        assert!(others(&out).is_empty());
    }

    #[test]
    fn no_health_report_at_all_rolls_back_too() {
        let (mut a, out) = Agent::on_probation(Policy::default(), job(soft(), None), t(0));
        assert_eq!(others(&out), [Action::ProbeHealth]);
        assert_eq!(others(&a.handle(t(5), Input::Tick)), [Action::ProbeHealth]);
        let out = a.handle(t(120), Input::Tick);
        assert_eq!(
            others(&out),
            [Action::RollBack {
                why: "no health report within 120 s of the switch".into()
            }]
        );
    }

    #[test]
    fn cancel_before_the_switch_only() {
        let mut a = installed(job(soft(), None));
        a.handle(t(3), Input::Installed(Ok(())));
        let out = a.handle(t(4), Input::Cancel);
        assert_eq!(others(&out), [Action::DiscardDownload]);
        assert_eq!(a.state(), Some(State::Cancelled));
        let mut b = switched();
        assert!(b.handle(t(11), Input::Cancel).is_empty());
        assert_eq!(b.state(), Some(State::Probing));
    }
}
