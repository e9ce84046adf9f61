//! The update agent inside the running appliance: a tokio task that feeds the sans-IO
//! [`Agent`] once a second with the DICOM activity (associations open, the last object, the
//! studies still arriving, the forward queue), the clock and, after a switch, the health probes;
//! and carries out its actions on the directory slots. It outlives the appliances the
//! supervisor restarts (it reads the running one from [`Hooks`]).

use super::download::{self, Progress};
use super::inbox::{Identity, Offered};
use super::state::{self, Outcome, Saved, Switched};
use super::{
    Restart, Slots, UpdateError, current_program, device, load_trust, make_program, policy,
    reason_code, running_version, save_trust,
};
use crate::config::{Config, UpdateSection};
use crate::handle::{App, Hooks};
use crate::scu::{ScuAssociation, ScuOptions};
use medgate_bundle::Timestamp;
use medgate_bundle::agent::{
    Action, Activity, Agent, Arriving, Health, Input, Instruction, Mode, Policy, Refusal, Report,
    Window,
};
use medgate_bundle::local::{install_file, verify_file};
use medgate_bundle::slot::{Probation, SlotBackend};
use medgate_bundle::{Name, Version};
use medgate_contract::{DesiredUpdate, InstallMode, UpdateAction, UpdateOffer};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const VERIFICATION: &str = "1.2.840.10008.1.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
/// The calling AE title of the health probe's C-ECHO.
pub const PROBE_AE: &str = "MEDGATE-HEALTH";

/// Where the health probe calls the listener bound to `bind` (loopback for a wildcard bind).
pub fn probe_address(bind: SocketAddr) -> String {
    let ip = if bind.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        bind.ip()
    };
    SocketAddr::new(ip, bind.port()).to_string()
}

fn instruction(s: &Saved) -> Instruction {
    Instruction {
        campaign: s.campaign.clone(),
        version: s.version.clone(),
        size: s.size,
        mode: Mode::Soft { give_up_at: None },
        window: None,
    }
}

/// The agent's instruction for the fleet's offer.
fn offered_instruction(campaign: Name, version: Version, offer: &UpdateOffer) -> Instruction {
    let deadline = offer.deadline_ms.map(|ms| Timestamp::from_unix(ms / 1000));
    Instruction {
        campaign,
        version,
        size: offer.size,
        mode: match offer.mode {
            InstallMode::Soft => Mode::Soft {
                give_up_at: deadline,
            },
            InstallMode::Forced => Mode::TimeForced {
                at: deadline.unwrap_or_else(Timestamp::now),
            },
        },
        window: offer.window.map(|w| Window {
            start_minute: w.start_minute,
            minutes: w.minutes,
        }),
    }
}

/// Starts the agent for `local` (its `[update]` and data directory are box-local: the fleet's
/// configuration changes neither). Nothing without `[update]`.
pub fn spawn(local: &Config, hooks: &Hooks, shutdown: CancellationToken, restart: Restart) {
    let Some(u) = local.update.clone() else {
        return;
    };
    let shell = Shell {
        cfg: local.clone(),
        u,
        hooks: hooks.clone(),
        shutdown,
        restart,
        agent: Agent::new(Policy::default()),
        saved: None,
        objects_seen: None,
        last_object: None,
        identity: None,
        download: None,
        progress: mpsc::channel(16),
        pending: None,
    };
    tokio::spawn(async move {
        if let Err(e) = shell.run().await {
            tracing::error!(error = %e, "the update agent stopped; updates wait until the service restarts");
        }
    });
}

struct Shell {
    cfg: Config,
    u: UpdateSection,
    hooks: Hooks,
    shutdown: CancellationToken,
    restart: Restart,
    agent: Agent,
    saved: Option<Saved>,
    objects_seen: Option<u64>,
    last_object: Option<Timestamp>,
    /// The device certificate for downloads (with the fleet's offer).
    identity: Option<Identity>,
    /// The download under way.
    download: Option<tokio::task::AbortHandle>,
    progress: (mpsc::Sender<Progress>, mpsc::Receiver<Progress>),
    /// An offer of another install that came while one was under way: taken when it ends.
    pending: Option<Offered>,
}

/// After an action: go on, or stop (the process is replaced).
enum Next {
    Input(Input),
    Nothing,
    Exit,
}

impl Shell {
    fn slots(&self) -> Result<Slots, UpdateError> {
        Slots::open(&self.cfg, &self.u)
    }

    /// After a switch or a rollback: reboot (A/B) or replace this process by the program in
    /// force (directory slots).
    fn restart_into(&mut self, slots: &mut Slots, args: Vec<String>) -> Next {
        match slots {
            Slots::Ab(ab) => {
                if let Err(e) = ab.reboot() {
                    tracing::error!(error = %e, "cannot reboot into the slot in force; reboot the appliance to finish the update");
                }
                // systemd stops this service on the way down; the agent does nothing more.
                Next::Exit
            }
            Slots::Dir(_) => {
                if let Some(program) = current_program(&self.u) {
                    self.restart.set(program, args);
                }
                self.shutdown.cancel();
                Next::Exit
            }
        }
    }

    /// A/B: where a switch stands after a boot, when the slot no longer says "on probation"
    /// (the health gate's systemd-bless-boot marked it good first, or the boot counter went
    /// back to the previous slot by itself).
    fn after_boot(
        &mut self,
        status: &medgate_bundle::slot::SlotStatus,
    ) -> Result<Option<Probation>, UpdateError> {
        let Some(saved) = self.saved.clone() else {
            return Ok(None);
        };
        if saved.switched.is_none() || saved.outcome.is_some() {
            return Ok(None);
        }
        let previous = saved.switched.as_ref().and_then(|s| s.previous.clone());
        if status.active.as_ref() == Some(&saved.version) {
            return Ok(Some(Probation {
                trying: saved.version.clone(),
                previous: previous.unwrap_or_else(|| saved.version.clone()),
            }));
        }
        let report = Report {
            campaign: saved.campaign.clone(),
            version: saved.version.clone(),
            state: medgate_bundle::agent::State::RolledBack,
            code: Some("boot_failed".into()),
            detail: format!(
                "version {} did not boot healthy in {} tries; the boot counter went back to the previous slot",
                saved.version,
                medgate_bundle::slot_ab::SWITCH_TRIES
            ),
        };
        self.report(&report)?;
        Ok(None)
    }

    async fn run(mut self) -> Result<(), UpdateError> {
        self.agent = Agent::new(policy(&self.u));
        let slots = self.slots()?;
        let status = slots.status()?;
        let running = running_version(&slots)?;
        self.saved = state::load(&self.cfg.appliance.data_dir)?;
        let view = self.hooks.update.clone();
        view.update(|v| {
            v.running = Some(running.to_string());
            v.on_probation = status.probation.is_some();
            if let Some(s) = &self.saved {
                v.campaign = Some(s.campaign.to_string());
                v.version = Some(s.version.to_string());
                if let Some(o) = &s.outcome {
                    v.state = Some(o.state.clone());
                    v.code.clone_from(&o.code);
                    v.detail = Some(o.detail.clone());
                }
            }
        });
        let probation = match (&status.probation, slots.reboots()) {
            (None, true) => self.after_boot(&status)?,
            _ => status.probation.clone(),
        };
        tracing::info!(running = %running, probation = probation.is_some(), "update agent started");
        if let Some(p) = probation {
            let saved = match self.saved.take() {
                Some(s) if s.version == p.trying && s.outcome.is_none() => s,
                _ => Saved {
                    campaign: "local-probation"
                        .parse()
                        .map_err(|_| UpdateError::NotConfigured)?,
                    version: p.trying.clone(),
                    size: 0,
                    bundle: "-".into(),
                    floor: None,
                    switched: None,
                    outcome: None,
                    download: None,
                },
            };
            let (agent, actions) =
                Agent::on_probation(policy(&self.u), instruction(&saved), Timestamp::now());
            self.agent = agent;
            self.saved = Some(saved);
            if self.carry_out(actions).await? {
                return Ok(());
            }
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let inbox = self.hooks.update_inbox.clone();
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {}
                () = inbox.changed() => {
                    if let Some(o) = inbox.take() {
                        if self.offered(o).await? {
                            return Ok(());
                        }
                    }
                    continue;
                }
                Some(p) = self.progress.1.recv() => {
                    let input = match p {
                        Progress::Have(have) => Input::DownloadProgress { have },
                        Progress::Stopped { have, error } => {
                            self.download = None;
                            Input::DownloadStopped { have, error }
                        }
                        Progress::Complete(have) => {
                            self.download = None;
                            Input::DownloadComplete { have }
                        }
                    };
                    if self.feed(input).await? {
                        return Ok(());
                    }
                    continue;
                }
            }
            if let Some(app) = self.hooks.app() {
                let activity = self.activity(&app);
                if self.feed(Input::Activity(activity)).await? {
                    return Ok(());
                }
            }
            let busy = self.agent.state().is_some_and(|s| !s.is_final());
            if !busy {
                if let Some(req) = state::take_request(&self.cfg.appliance.data_dir)? {
                    tracing::info!(campaign = %req.campaign, version = %req.version, "update handed over by `update --file`");
                    state::store(&self.cfg.appliance.data_dir, &req)?;
                    let input = Input::Campaign {
                        instruction: instruction(&req),
                        partial: req.size,
                    };
                    self.saved = Some(req);
                    if self.feed(input).await? {
                        return Ok(());
                    }
                }
            }
            if self.feed(Input::Tick).await? {
                return Ok(());
            }
            if self.agent.state().is_none_or(|s| s.is_final()) {
                if let Some(o) = self.pending.take() {
                    if self.offered(o).await? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// The fleet's instruction: install (download first) or cancel. Returns true when the
    /// process is to be replaced.
    async fn offered(&mut self, o: Offered) -> Result<bool, UpdateError> {
        let desired = o.desired;
        let Ok(campaign) = desired.campaign.as_str().parse::<Name>() else {
            tracing::warn!(campaign = %desired.campaign, "update instruction with a campaign id this agent cannot use; ignored");
            return Ok(false);
        };
        match desired.action {
            UpdateAction::Cancel => {
                if self
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.desired.campaign == desired.campaign)
                {
                    tracing::info!(campaign = %campaign, "the fleet cancelled an update that had not started");
                    self.pending = None;
                }
                if self.saved.as_ref().is_some_and(|s| s.campaign == campaign) {
                    tracing::info!(campaign = %campaign, "the fleet cancelled the update");
                    return self.feed(Input::Cancel).await;
                }
                Ok(false)
            }
            UpdateAction::Install(offer) => {
                let Ok(version) = offer.version.as_str().parse::<Version>() else {
                    tracing::warn!(campaign = %campaign, version = %offer.version, "update instruction with a version that is not semver; ignored");
                    return Ok(false);
                };
                let busy = self.agent.state().is_some_and(|s| !s.is_final());
                let same = self
                    .saved
                    .as_ref()
                    .is_some_and(|s| s.campaign == campaign && s.version == version);
                // Over already (its outcome kept across restarts and shown since the start),
                // or this very install under way: nothing starts again — a version that
                // rolled back is tried again only under a new campaign.
                if same && (busy || self.saved.as_ref().is_some_and(|s| s.outcome.is_some())) {
                    tracing::debug!(campaign = %campaign, version = %version, "update instruction repeated; it stands where it is");
                    return Ok(false);
                }
                // Another install is under way (a local one, or on probation): this one waits
                // for its end; the state of the one under way is never replaced.
                if busy {
                    tracing::info!(campaign = %campaign, version = %version, "update offered while another install is under way; it starts when that one ends");
                    self.pending = Some(Offered {
                        desired: DesiredUpdate {
                            action: UpdateAction::Install(offer),
                            ..desired
                        },
                        identity: o.identity,
                    });
                    return Ok(false);
                }
                if o.identity.is_none() {
                    tracing::error!(campaign = %campaign, "an update was offered, but this device has no certificate to download it with; enroll it again");
                }
                self.identity = o.identity;
                let file = download::path(
                    &state::dir(&self.cfg.appliance.data_dir),
                    offer.sha256.as_str(),
                );
                let saved = Saved {
                    campaign: campaign.clone(),
                    version: version.clone(),
                    size: offer.size,
                    bundle: file.clone(),
                    floor: None,
                    switched: None,
                    outcome: None,
                    download: Some(state::Fetch {
                        url: offer.url.as_str().to_owned(),
                        sha256: offer.sha256.as_str().to_owned(),
                    }),
                };
                state::store(&self.cfg.appliance.data_dir, &saved)?;
                self.saved = Some(saved);
                tracing::info!(campaign = %campaign, version = %version, size = offer.size, "update offered by the fleet");
                let input = Input::Campaign {
                    instruction: offered_instruction(campaign, version, &offer),
                    partial: download::have(&file),
                };
                self.feed(input).await
            }
        }
    }

    /// Starts downloading the offered bundle from byte `from` (stopping one under way).
    fn start_download(&mut self, saved: &Saved, from: u64) -> Next {
        if let Some(d) = self.download.take() {
            d.abort();
        }
        let Some(fetch) = &saved.download else {
            // A local bundle is on disk in whole already.
            return Next::Input(Input::DownloadComplete { have: saved.size });
        };
        let client = match self.identity.as_ref().map(download::client) {
            Some(Ok(c)) => c,
            Some(Err(error)) => return Next::Input(Input::DownloadStopped { have: from, error }),
            None => {
                return Next::Input(Input::DownloadStopped {
                    have: from,
                    error: "no device certificate to download with (the device is not enrolled with a certificate)".into(),
                });
            }
        };
        tracing::info!(campaign = %saved.campaign, url = %fetch.url, from, size = saved.size, "update download");
        let task = tokio::spawn(download::fetch(
            client,
            fetch.url.clone(),
            saved.bundle.clone(),
            from,
            saved.size,
            self.progress.0.clone(),
        ));
        self.download = Some(task.abort_handle());
        Next::Nothing
    }

    /// Drops the downloaded file (a refused bundle, a cancelled install).
    fn discard_download(&mut self, saved: &Saved) {
        if let Some(d) = self.download.take() {
            d.abort();
        }
        if saved.download.is_some() {
            match std::fs::remove_file(&saved.bundle) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %saved.bundle.display(), error = %e, "cannot remove the downloaded bundle")
                }
            }
        }
    }

    /// Tells the agent what DICOM does this moment (nothing if no appliance runs).
    fn refresh_activity(&mut self) {
        if let Some(app) = self.hooks.app() {
            let activity = self.activity(&app);
            // Outside the wait for idle this only records it; no actions follow.
            let _ = self
                .agent
                .handle(Timestamp::now(), Input::Activity(activity));
        }
    }

    fn activity(&mut self, app: &App) -> Activity {
        let now = Timestamp::now();
        let m = app.metrics();
        let received = m.objects_received.load(Ordering::Relaxed);
        if self.objects_seen.is_some_and(|seen| seen != received) {
            self.last_object = Some(now);
        }
        self.objects_seen = Some(received);
        let stable = self.u.study_stable_secs;
        let arriving = m
            .studies_within(stable)
            .into_iter()
            .filter_map(|(modality, ago)| {
                Some(Arriving {
                    modality: medgate_contract::Modality::new(&modality).ok()?,
                    last_object: Timestamp::from_unix(now.unix().saturating_sub(ago.as_secs())),
                    stable_age_secs: stable,
                })
            })
            .collect();
        for d in &app.hub().destinations {
            d.refresh_gauges();
        }
        let forward_queue = m
            .destinations
            .values()
            .map(|d| d.queue_depth.load(Ordering::Relaxed))
            .sum();
        Activity {
            associations: u32::try_from(m.associations_active.load(Ordering::Relaxed))
                .unwrap_or(u32::MAX),
            last_object: self.last_object,
            arriving,
            forward_queue,
        }
    }

    /// Feeds one input; true when the process is to be replaced.
    async fn feed(&mut self, input: Input) -> Result<bool, UpdateError> {
        let actions = self.agent.handle(Timestamp::now(), input);
        self.carry_out(actions).await
    }

    async fn carry_out(&mut self, actions: Vec<Action>) -> Result<bool, UpdateError> {
        let mut todo: VecDeque<Action> = actions.into();
        while let Some(action) = todo.pop_front() {
            match self.act(action).await? {
                Next::Input(input) => todo.extend(self.agent.handle(Timestamp::now(), input)),
                Next::Nothing => {}
                Next::Exit => return Ok(true),
            }
        }
        Ok(false)
    }

    async fn act(&mut self, action: Action) -> Result<Next, UpdateError> {
        let Some(saved) = self.saved.clone() else {
            return Ok(Next::Nothing);
        };
        Ok(match action {
            Action::Download { from } => self.start_download(&saved, from),
            Action::DiscardDownload => {
                self.discard_download(&saved);
                Next::Nothing
            }
            Action::Verify => {
                let r = self.verify(&saved).await;
                let r = match r {
                    Ok(meta) => {
                        if let Some(s) = &mut self.saved {
                            s.floor.clone_from(&meta.floor);
                            state::store(&self.cfg.appliance.data_dir, s)?;
                        }
                        Ok(meta.version)
                    }
                    Err(e) => Err(e),
                };
                Next::Input(Input::Verified(r))
            }
            Action::Install => {
                let r = self.install(&saved).await;
                // The switch is decided on what DICOM does now, not before the install.
                self.refresh_activity();
                Next::Input(Input::Installed(r))
            }
            Action::Wait(reason) => {
                self.hooks.update.update(|v| {
                    v.reason = Some(reason_code(&reason).to_owned());
                    v.detail = Some(reason.to_string());
                });
                Next::Nothing
            }
            Action::Report(r) => {
                self.report(&r)?;
                Next::Nothing
            }
            Action::Switch => self.switch(saved)?,
            Action::ProbeHealth => Next::Input(Input::Health(self.probe(&saved).await)),
            Action::Commit => Next::Input(Input::Committed(self.commit(&saved))),
            Action::RollBack { why } => {
                tracing::warn!(version = %saved.version, why = %why, "update rolling back");
                let r = self
                    .slots()
                    .and_then(|mut s| Ok(s.rollback()?))
                    .map_err(|e| Refusal::new("rollback_failed", e.to_string()));
                let ok = r.is_ok();
                let out = self.agent.handle(Timestamp::now(), Input::RolledBack(r));
                for a in out {
                    if let Action::Report(rep) = a {
                        self.report(&rep)?;
                    }
                }
                if ok {
                    // Back to the previous version: reboot into it, or replace this process.
                    let args = saved.switched.map(|s| s.args).unwrap_or_else(own_args);
                    let mut slots = self.slots()?;
                    return Ok(self.restart_into(&mut slots, args));
                }
                Next::Nothing
            }
        })
    }

    async fn verify(&self, saved: &Saved) -> Result<medgate_bundle::BundleMeta, Refusal> {
        let trust =
            load_trust(&self.cfg).map_err(|e| Refusal::new("trust_store", e.to_string()))?;
        let slots = self
            .slots()
            .map_err(|e| Refusal::new("install_failed", e.to_string()))?;
        let installed =
            running_version(&slots).map_err(|e| Refusal::new("install_failed", e.to_string()))?;
        let device = device(&self.u, installed)
            .map_err(|e| Refusal::new("install_failed", e.to_string()))?;
        let bundle = saved.bundle.clone();
        tokio::task::spawn_blocking(move || {
            verify_file(&bundle, &trust, &device, Timestamp::now(), &mut |_| {})
                .map_err(|e| Refusal::from(&e))
        })
        .await
        .unwrap_or_else(|e| Err(Refusal::new("install_failed", e.to_string())))
    }

    async fn install(&self, saved: &Saved) -> Result<(), Refusal> {
        let fail = |e: UpdateError| Refusal::new("install_failed", e.to_string());
        let mut slots = self.slots().map_err(fail)?;
        let status = slots.status().map_err(|e| fail(e.into()))?;
        if !status.installed.contains(&saved.version) {
            let trust = load_trust(&self.cfg).map_err(fail)?;
            let device = device(&self.u, running_version(&slots).map_err(fail)?).map_err(fail)?;
            let bundle = saved.bundle.clone();
            slots = tokio::task::spawn_blocking(move || {
                install_file(&bundle, &trust, &device, Timestamp::now(), &mut slots)
                    .map(|_| slots)
                    .map_err(|e| Refusal::from(&e))
            })
            .await
            .unwrap_or_else(|e| Err(Refusal::new("install_failed", e.to_string())))?;
        }
        make_program(&slots, &saved.version).map_err(fail)?;
        tracing::info!(version = %saved.version, "update installed into the inactive slot");
        Ok(())
    }

    fn report(&mut self, r: &Report) -> Result<(), UpdateError> {
        tracing::info!(
            campaign = %r.campaign,
            version = %r.version,
            state = r.state.as_str(),
            code = r.code.as_deref().unwrap_or(""),
            detail = %r.detail,
            "update"
        );
        let waiting = r.state == medgate_bundle::agent::State::WaitingIdle;
        self.hooks.update.update(|v| {
            v.campaign = Some(r.campaign.to_string());
            v.version = Some(r.version.to_string());
            v.state = Some(r.state.as_str().to_owned());
            v.code.clone_from(&r.code);
            v.detail = Some(r.detail.clone());
            if !waiting {
                v.reason = None;
            }
        });
        if r.state.is_final() {
            if let Some(saved) = &mut self.saved {
                if saved.download.is_some() {
                    // Installed or not, the downloaded copy is done with (a new instruction
                    // downloads again); the slots keep what was installed.
                    let _ = std::fs::remove_file(&saved.bundle);
                }
                saved.outcome = Some(Outcome {
                    state: r.state.as_str().to_owned(),
                    code: r.code.clone(),
                    detail: r.detail.clone(),
                });
                state::store(&self.cfg.appliance.data_dir, saved)?;
            }
            if r.state == medgate_bundle::agent::State::Installed {
                self.hooks.update.update(|v| {
                    v.running = Some(r.version.to_string());
                    v.on_probation = false;
                });
            }
        }
        Ok(())
    }

    fn switch(&mut self, mut saved: Saved) -> Result<Next, UpdateError> {
        let mut slots = self.slots()?;
        let previous = slots.status()?.active;
        // The listener the modalities use now (the fleet may have changed the local file's).
        let (bind, ae) = match self.hooks.app() {
            Some(app) => (app.cfg().listener.bind, app.cfg().listener.ae_title.clone()),
            None => (self.cfg.listener.bind, self.cfg.listener.ae_title.clone()),
        };
        let args = own_args();
        saved.switched = Some(Switched {
            previous,
            args: args.clone(),
            probe_address: probe_address(bind),
            probe_ae: ae,
        });
        state::store(&self.cfg.appliance.data_dir, &saved)?;
        self.saved = Some(saved.clone());
        if let Err(e) = slots.switch(&saved.version) {
            return Ok(Next::Input(Input::Switched(Err(Refusal::new(
                "switch_failed",
                e.to_string(),
            )))));
        }
        tracing::info!(version = %saved.version, reboot = slots.reboots(), "update switched; restarting into the new version on probation");
        Ok(self.restart_into(&mut slots, args))
    }

    async fn probe(&self, saved: &Saved) -> Health {
        let Some(app) = self.hooks.app() else {
            return Health {
                echo: false,
                spool_writable: false,
                mqtt: false,
                archive: false,
            };
        };
        let (address, ae) = match &saved.switched {
            Some(s) => (s.probe_address.clone(), s.probe_ae.clone()),
            None => (
                probe_address(app.cfg().listener.bind),
                app.cfg().listener.ae_title.clone(),
            ),
        };
        let echo = echo(&address, &ae).await;
        let spool_writable = app.health().is_ok() && write_probe(&self.cfg).is_ok();
        let mqtt = app.fleet_status().is_none_or(|f| f.connected);
        let report = crate::status::report(&app);
        let archive = report.destinations.is_empty()
            || report.destinations.iter().any(|d| d.up)
            || report.spool_used_percent < report.high_watermark_percent;
        let h = Health {
            echo,
            spool_writable,
            mqtt,
            archive,
        };
        tracing::info!(echo, spool_writable, mqtt, archive, address = %address, "update health probe");
        h
    }

    fn commit(&self, saved: &Saved) -> Result<(), Refusal> {
        let fail = |e: UpdateError| Refusal::new("commit_failed", e.to_string());
        let mut slots = self.slots().map_err(fail)?;
        slots.commit().map_err(|e| fail(e.into()))?;
        if let Some(floor) = &saved.floor {
            let mut trust = load_trust(&self.cfg).map_err(fail)?;
            trust.raise_floor(floor);
            save_trust(&self.cfg, &trust).map_err(fail)?;
        }
        if let Slots::Dir(dir) = &mut slots {
            if let Err(e) = dir.prune(&saved.version) {
                tracing::warn!(error = %e, "old versions not pruned");
            }
        }
        Ok(())
    }
}

fn own_args() -> Vec<String> {
    std::env::args().skip(1).collect()
}

async fn echo(address: &str, called_ae: &str) -> bool {
    let opts = ScuOptions {
        address: address.to_owned(),
        calling_ae: PROBE_AE.to_owned(),
        called_ae: called_ae.to_owned(),
        timeout: Duration::from_secs(3),
        tls: None,
    };
    let proposals = [(VERIFICATION.to_owned(), vec![IMPLICIT_LE.to_owned()])];
    let attempt = async {
        let mut assoc = ScuAssociation::connect(&opts, &proposals).await.ok()?;
        let status = assoc.echo().await.ok();
        assoc.release().await;
        status
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), attempt).await,
        Ok(Some(0))
    )
}

fn write_probe(cfg: &Config) -> std::io::Result<()> {
    use std::io::Write;
    let dir = state::dir(&cfg.appliance.data_dir);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("probe");
    let mut f = std::fs::File::create(&path)?;
    f.write_all(b"medgate health probe\n")?;
    f.sync_all()?;
    std::fs::remove_file(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_calls_loopback_for_a_wildcard_bind() {
        assert_eq!(
            probe_address("0.0.0.0:104".parse().expect("addr")),
            "127.0.0.1:104"
        );
        assert_eq!(
            probe_address("10.1.2.3:11112".parse().expect("addr")),
            "10.1.2.3:11112"
        );
    }
}
