//! The appliance's side of the fleet: enrollment, reporting (telemetry, inventory, events) and
//! the fleet's commands, around the running appliance.
//!
//! [`run`] is the supervisor the `run` command uses: it runs the appliance ([`crate::app`]) and,
//! when fleet reporting is configured, the reporter ([`medgate_report`]). A new configuration
//! from the fleet, or a restart command, replaces the running appliance in this process: it waits
//! for DICOM to go idle (bounded), stops the appliance, starts it with the new configuration and
//! keeps it only if it turns healthy in time; otherwise the previous configuration is started
//! again and the fleet is told `rolled_back`. Capture never waits on MQTT: events go to the
//! reporter's outbox and the reporter runs on its own task.

pub mod enroll;
pub mod managed;

use crate::app::{App, AppError, ConfigSource, Hooks};
use crate::config::Config;
use medgate_contract::{
    CommandOutput, ConfigProblem, DesiredConfig, Disk, ErrorCounts, Flow, Inventory, Nic,
    Percentiles, QueueStats, TelemetrySnapshot, Token,
};
use medgate_report::{
    ApplyOutcome, CommandFailure, CommandHandler, CommandResult, Reporter, ReporterConfig,
    ReporterStatus, TelemetrySource,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Calling AEs listed in the inventory (the birth message); the local list has them all.
const MAX_PEERS: usize = 64;
/// How long a new configuration has to make the appliance healthy.
const HEALTHY_WITHIN: Duration = Duration::from_secs(20);
/// How long a configuration change or a restart waits for DICOM to go idle.
const IDLE_WITHIN: Duration = Duration::from_secs(120);

/// The reporter's state as the local status shows it (set once reporting runs).
#[derive(Default)]
pub struct Probe {
    status: std::sync::OnceLock<Box<dyn Fn() -> Option<ReporterStatus> + Send + Sync>>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("reporting", &self.status.get().is_some())
            .finish()
    }
}

impl Probe {
    /// The reporter's state, if reporting runs.
    pub fn status(&self) -> Option<ReporterStatus> {
        self.status.get().and_then(|f| f())
    }
}

/// Where the fleet settings come from.
#[derive(Debug, Clone)]
pub enum Settings {
    /// No fleet: the appliance runs alone.
    Off,
    /// `appliance.fleet_enrollment` names a file that does not exist yet.
    NotEnrolled(PathBuf),
    /// Report with these settings.
    On(Box<ReporterConfig>),
}

/// Resolves the fleet settings of a configuration.
pub fn settings(cfg: &Config) -> Result<Settings, String> {
    if let Some(f) = &cfg.fleet {
        return Ok(Settings::On(Box::new(f.clone())));
    }
    match &cfg.appliance.fleet_enrollment {
        None => Ok(Settings::Off),
        Some(p) if !p.exists() => Ok(Settings::NotEnrolled(p.clone())),
        Some(p) => enroll::read_settings(p).map(|c| Settings::On(Box::new(c))),
    }
}

enum Request {
    Apply {
        cfg: Box<Config>,
        version: u64,
        desired: serde_json::Map<String, serde_json::Value>,
        reply: oneshot::Sender<Result<(), Vec<ConfigProblem>>>,
    },
    Restart,
}

/// Cumulative figures of appliance instances that have stopped (a configuration change starts a
/// new one in the same process; the fleet's counters must not go backwards).
#[derive(Debug, Default, Clone, Copy)]
struct Carried {
    received: Flow,
    forwarded: Flow,
    errors: ErrorCounts,
}

fn add(a: Flow, b: Flow) -> Flow {
    Flow {
        objects: a.objects + b.objects,
        bytes: a.bytes + b.bytes,
    }
}

/// What the reporter calls: telemetry and inventory from the running appliance, commands
/// carried out on it.
#[derive(Debug)]
pub struct Link {
    hooks: Hooks,
    requests: mpsc::Sender<Request>,
    local: Config,
    config_file: Option<PathBuf>,
    store: managed::Store,
    started: Instant,
    carried: Mutex<Carried>,
    os_version: String,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Apply { version, .. } => write!(f, "Apply({version})"),
            Request::Restart => f.write_str("Restart"),
        }
    }
}

fn token_or(s: &str, fallback: &str) -> Token {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._:+~-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    Token::new(cleaned)
        .or_else(|_| Token::new(fallback))
        .unwrap_or_else(|_| CommandFailure::failed(fallback).code)
}

/// `VERSION_ID` (or `IMAGE_VERSION`) of /etc/os-release.
fn os_version() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(|v| v.trim_matches('"').to_string())
    };
    get("IMAGE_VERSION")
        .or_else(|| get("VERSION_ID"))
        .unwrap_or_else(|| "unknown".into())
}

/// The quality checks' flag counts (zero when they are off).
fn qc_counts(app: &App) -> medgate_contract::QcCounts {
    let Some(qc) = &app.listener.workflow.qc else {
        return medgate_contract::QcCounts::default();
    };
    let c = qc.counts();
    let n = |k: &str| c.get(k).copied().unwrap_or(0);
    medgate_contract::QcCounts {
        missing_patient_id: n("missing_patient_id"),
        missing_accession_number: n("missing_accession_number"),
        missing_study_instance_uid: n("missing_study_instance_uid"),
        unexpected_modality: n("unexpected_modality"),
        conflicting_duplicate: n("conflicting_duplicate"),
        late_arrival: n("late_arrival"),
    }
}

fn counters(app: &App) -> Carried {
    let m = &app.metrics;
    let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let store_failures: u64 = m
        .store_failures
        .lock()
        .map(|f| f.values().sum())
        .unwrap_or(0);
    Carried {
        received: Flow {
            objects: ld(&m.objects_received),
            bytes: ld(&m.bytes_received),
        },
        forwarded: Flow {
            objects: ld(&m.objects_released),
            bytes: ld(&m.bytes_released),
        },
        errors: ErrorCounts {
            receive: ld(&m.associations_aborted),
            forward: m
                .destinations
                .values()
                .map(|d| ld(&d.transient_failures) + ld(&d.quarantined_total))
                .sum(),
            storage: store_failures,
            other: 0,
        },
    }
}

impl Link {
    fn carried(&self) -> Carried {
        *self.carried.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Folds a stopping instance's counters into the carried totals.
    fn retire(&self, app: &App) {
        let c = counters(app);
        let mut t = self.carried.lock().unwrap_or_else(|p| p.into_inner());
        t.received = add(t.received, c.received);
        t.forwarded = add(t.forwarded, c.forwarded);
        t.errors.receive += c.errors.receive;
        t.errors.forward += c.errors.forward;
        t.errors.storage += c.errors.storage;
    }

    fn app(&self) -> Result<Arc<App>, CommandFailure> {
        self.hooks
            .app()
            .ok_or_else(|| CommandFailure::rejected("not_running"))
    }
}

impl TelemetrySource for Link {
    fn snapshot(&self) -> TelemetrySnapshot {
        let base = self.carried();
        let Some(app) = self.hooks.app() else {
            return TelemetrySnapshot {
                uptime_secs: self.started.elapsed().as_secs(),
                received: base.received,
                forwarded: base.forwarded,
                errors: base.errors,
                ..TelemetrySnapshot::default()
            };
        };
        let now = counters(&app);
        let m = &app.metrics;
        let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let mut queue = QueueStats::default();
        let mut quarantine = 0;
        let mut latency = Percentiles::default();
        for d in m.destinations.values() {
            queue.depth += ld(&d.queue_depth);
            queue.oldest_age_secs = queue.oldest_age_secs.max(ld(&d.oldest_age_secs));
            quarantine += ld(&d.quarantined);
            let q = |p: f64| {
                d.latency
                    .quantile(p)
                    .map_or(0, |s| (s * 1000.0).round() as u64)
            };
            latency.p50 = latency.p50.max(q(0.5));
            latency.p90 = latency.p90.max(q(0.9));
            latency.p99 = latency.p99.max(q(0.99));
            latency.max = latency.max.max(q(1.0));
        }
        let usage = app.spool.usage();
        TelemetrySnapshot {
            uptime_secs: self.started.elapsed().as_secs(),
            received: add(base.received, now.received),
            forwarded: add(base.forwarded, now.forwarded),
            queue,
            quarantine_objects: quarantine,
            disk: Disk {
                total_bytes: usage.fs_total_bytes,
                free_bytes: usage.fs_free_bytes,
            },
            associations_active: ld(&m.associations_active) as u32,
            forward_latency_ms: latency,
            errors: ErrorCounts {
                receive: base.errors.receive + now.errors.receive,
                forward: base.errors.forward + now.errors.forward,
                storage: base.errors.storage + now.errors.storage,
                other: 0,
            },
            qc: qc_counts(&app),
        }
    }

    fn inventory(&self) -> Inventory {
        let app = self.hooks.app();
        let hw = app.as_ref().and_then(|a| {
            a.inventory
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        });
        let (serial, profile, nics) = match &hw {
            Some((inv, _)) => (
                inv.identity
                    .serial
                    .clone()
                    .unwrap_or_else(|| "unknown".into()),
                inv.profile.clone(),
                inv.nics
                    .iter()
                    .filter_map(|n| {
                        Some(Nic {
                            name: Token::new(n.name.as_str()).ok()?,
                            mac: n
                                .mac
                                .as_deref()
                                .and_then(|m| medgate_contract::MacAddress::new(m).ok()),
                            addresses: Vec::new(),
                            link_up: n.carrier.unwrap_or(false),
                            speed_mbps: n.speed_mbps,
                        })
                    })
                    .collect(),
            ),
            None => ("unknown".to_string(), "none".to_string(), Vec::new()),
        };
        let (disk, peers, ae_title) = match &app {
            Some(a) => {
                let u = a.spool.usage();
                let peers = a
                    .spool
                    .peers()
                    .unwrap_or_default()
                    .iter()
                    // Bounded, so that the birth stays far below the contract's payload limit.
                    .take(MAX_PEERS)
                    .filter_map(crate::events::peer_of_record)
                    .collect();
                (
                    Disk {
                        total_bytes: u.fs_total_bytes,
                        free_bytes: u.fs_free_bytes,
                    },
                    peers,
                    medgate_contract::AeTitle::new(a.cfg.listener.ae_title.as_str()).ok(),
                )
            }
            None => (Disk::default(), Vec::new(), None),
        };
        Inventory {
            serial: token_or(&serial, "unknown"),
            hardware_profile: token_or(&profile, "none"),
            os_version: token_or(&self.os_version, "unknown"),
            appliance_version: token_or(env!("CARGO_PKG_VERSION"), "unknown"),
            ae_title,
            nics,
            disk,
            peers,
            config_schema: Some(medgate_config::SCHEMA_VERSION),
        }
    }
}

impl CommandHandler for Link {
    async fn apply_config(&self, desired: &DesiredConfig) -> ApplyOutcome {
        let cfg = match managed::merge(&desired.config, &self.local) {
            Ok(c) => c,
            Err(problems) => {
                tracing::warn!(version = desired.version, problems = ?problems, "desired configuration refused by validation; nothing changed");
                return ApplyOutcome::Rejected(managed::to_contract(&problems, "invalid_value"));
            }
        };
        let (reply, answer) = oneshot::channel();
        let req = Request::Apply {
            cfg: Box::new(cfg),
            version: desired.version,
            desired: desired.config.clone(),
            reply,
        };
        if self.requests.send(req).await.is_err() {
            return ApplyOutcome::Rejected(vec![problem("shutting_down", None)]);
        }
        match answer.await {
            Ok(Ok(())) => ApplyOutcome::Applied,
            Ok(Err(p)) => ApplyOutcome::RolledBack(p),
            Err(_) => ApplyOutcome::Rejected(vec![problem("shutting_down", None)]),
        }
    }

    async fn restart(&self) -> CommandResult {
        self.requests
            .send(Request::Restart)
            .await
            .map_err(|_| CommandFailure::rejected("shutting_down"))?;
        Ok(CommandOutput::default())
    }

    async fn retry_quarantine(&self) -> CommandResult {
        let app = self.app()?;
        let n = app.retry_quarantine(None, None).await.map_err(|e| {
            tracing::error!(error = %e, "quarantine retry failed");
            CommandFailure::failed("io")
        })?;
        tracing::info!(requeued = n, "quarantine retried by a fleet command");
        Ok(CommandOutput {
            objects: Some(n as u64),
            ..CommandOutput::default()
        })
    }

    async fn purge_quarantine(&self, older_than: Option<Duration>) -> CommandResult {
        let app = self.app()?;
        let (objects, bytes) = app.purge_quarantine(older_than).await.map_err(|e| {
            tracing::error!(error = %e, "quarantine purge failed");
            CommandFailure::failed("io")
        })?;
        tracing::warn!(objects, bytes, older_than_secs = ?older_than.map(|d| d.as_secs()), "quarantine purged by a fleet command");
        Ok(CommandOutput {
            objects: Some(objects),
            bytes: Some(bytes),
            ..CommandOutput::default()
        })
    }

    async fn collect_diagnostics(&self) -> CommandResult {
        let app = self.app()?;
        let file = self.config_file.clone();
        let applied = self
            .store
            .load()
            .ok()
            .flatten()
            .and_then(|a| serde_json::to_value(a).ok());
        let bundle = tokio::task::spawn_blocking(move || {
            crate::diagnostics::collect(&app, file.as_deref(), applied.as_ref())
        })
        .await
        .map_err(|_| CommandFailure::failed("internal"))?
        .map_err(|e| {
            tracing::error!(error = %e, "diagnostics bundle failed");
            CommandFailure::failed("io")
        })?;
        tracing::info!(file = %bundle.path.display(), bytes = bundle.bytes, "diagnostics bundle written");
        Ok(CommandOutput {
            bytes: Some(bundle.bytes),
            sha256: medgate_contract::Sha256Hex::new(bundle.sha256.as_str()).ok(),
            file: Token::new(bundle.name.as_str()).ok(),
            ..CommandOutput::default()
        })
    }

    async fn retry_now(&self, destination: Option<Token>) -> CommandResult {
        let app = self.app()?;
        retry_now(&app.hub, destination.as_ref())
    }
}

/// The `retry_now` command on the running forwarder: ends the backoff waits of the destination
/// named (all if `None`) and answers how many destinations were woken.
fn retry_now(hub: &crate::forward::ForwardHub, destination: Option<&Token>) -> CommandResult {
    let name = destination.map(Token::as_str);
    let woken = hub.retry_now(name);
    if woken == 0 && name.is_some() {
        tracing::warn!(
            destination = name.unwrap_or_default(),
            "retry now: no destination of that name; the command names one of [[destination]] name"
        );
        return Err(CommandFailure::rejected("unknown_destination"));
    }
    tracing::info!(
        destination = name.unwrap_or("all"),
        woken,
        "backoff waits ended by a fleet command: forwarding is tried now"
    );
    Ok(CommandOutput {
        destinations: Some(woken as u64),
        ..CommandOutput::default()
    })
}

fn problem(code: &str, field: Option<&str>) -> ConfigProblem {
    ConfigProblem {
        code: token_or(code, "failed"),
        field: field.and_then(|f| Token::new(f).ok()),
    }
}

/// One running appliance.
struct Instance {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), AppError>>,
}

impl Instance {
    fn start(cfg: Config, hooks: &Hooks, parent: &CancellationToken) -> Instance {
        let cancel = parent.child_token();
        let task = tokio::spawn(crate::app::run_with(cfg, cancel.clone(), hooks.clone()));
        Instance { cancel, task }
    }

    /// Healthy within `limit`, or why not.
    async fn healthy(&mut self, hooks: &Hooks, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if self.task.is_finished() {
                return Err("the appliance stopped while starting".into());
            }
            if let Some(app) = hooks.app() {
                if app.health().is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(hooks
                    .app()
                    .and_then(|a| a.health().err())
                    .unwrap_or_else(|| "not serving".into()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops it and waits; returns its error if it failed.
    async fn stop(self, link: &Link) -> Option<AppError> {
        if let Some(app) = link.hooks.app() {
            link.retire(&app);
        }
        self.cancel.cancel();
        match self.task.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(AppError::Internal(e.to_string())),
        }
    }
}

/// Waits (at most 15 s) for the first hardware inventory when a hardware profile is configured,
/// so that the birth message carries it.
async fn inventory_ready(hooks: &Hooks) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Some(app) = hooks.app() {
        let ready = app.cfg.hardware.profile.is_none()
            || app
                .inventory
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some();
        if ready || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded, and not past a shutdown) until no association is open, so a change never
/// cuts a study in flight.
async fn idle(hooks: &Hooks, shutdown: &CancellationToken) {
    let deadline = Instant::now() + IDLE_WITHIN;
    while let Some(app) = hooks.app() {
        if shutdown.is_cancelled() {
            return;
        }
        let active = app.metrics.associations_active.load(Ordering::Relaxed);
        if active == 0 {
            return;
        }
        if Instant::now() > deadline {
            tracing::warn!(
                active,
                "DICOM still busy after {} s; going on",
                IDLE_WITHIN.as_secs()
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Errors that stop the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The appliance could not start or failed.
    #[error(transparent)]
    App(#[from] AppError),
    /// The reporter could not start.
    #[error(
        "fleet reporting: {0}; fix [fleet] or the enrollment file, or remove it to run without the fleet"
    )]
    Report(#[from] medgate_report::ReportError),
}

/// Runs the appliance with `local` (from `config_file`) until `shutdown`, with fleet reporting
/// and commands when configured.
pub async fn run(
    local: Config,
    config_file: Option<&Path>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    crate::app::install_crypto_provider();
    // Before anything under data_dir is read or written: one appliance per directory.
    let _claim =
        crate::datadir::DataDir::claim(&local.appliance.data_dir).map_err(AppError::from)?;
    let reporter_cfg = match settings(&local) {
        Ok(Settings::On(c)) => Some(*c),
        Ok(Settings::Off) => None,
        Ok(Settings::NotEnrolled(p)) => {
            tracing::warn!(file = %p.display(), "not enrolled with the fleet yet: running without reporting; run `medgate-appliance enroll` (the image does it at first boot), then restart");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "fleet settings unusable: running without reporting; fix them and restart");
            None
        }
    };
    let Some(reporter_cfg) = reporter_cfg else {
        return Ok(crate::app::run_with(local, shutdown, Hooks::default()).await?);
    };

    let hooks = Hooks::default();
    let store = managed::Store::new(&local.appliance.data_dir);
    let (tx, mut rx) = mpsc::channel(4);
    let link = Arc::new(Link {
        hooks: hooks.clone(),
        requests: tx,
        local: local.clone(),
        config_file: config_file.map(Path::to_path_buf),
        store: store.clone(),
        started: Instant::now(),
        carried: Mutex::new(Carried::default()),
        os_version: os_version(),
    });

    // The configuration to run: the last one the fleet set that proved healthy, else the file.
    let mut current = local.clone();
    let mut from_fleet = false;
    let mut source = ConfigSource::LocalFile;
    match store.load() {
        Ok(Some(applied)) => match managed::merge(&applied.config, &local) {
            Ok(cfg) => {
                tracing::info!(
                    version = applied.version,
                    "running the configuration last applied from the fleet"
                );
                current = cfg;
                from_fleet = true;
                source = ConfigSource::Fleet {
                    version: applied.version,
                };
            }
            Err(p) => {
                tracing::error!(problems = ?p, "the configuration kept from the fleet is no longer valid; running the local file")
            }
        },
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "cannot read the configuration kept from the fleet; running the local file")
        }
    }

    let outbox = local.appliance.data_dir.join("fleet").join("outbox");
    std::fs::create_dir_all(&outbox).map_err(|e| {
        RunError::App(AppError::Internal(format!(
            "cannot create {}: {e}",
            outbox.display()
        )))
    })?;
    let reporter = Arc::new(Reporter::start(
        reporter_cfg,
        &outbox,
        link.clone(),
        link.clone(),
    )?);
    {
        let weak = Arc::downgrade(&reporter);
        let _ = hooks
            .fleet
            .status
            .set(Box::new(move || weak.upgrade().map(|r| r.status())));
    }
    {
        let weak = Arc::downgrade(&reporter);
        hooks.events.connect(Arc::new(move |body| {
            if let Some(r) = weak.upgrade() {
                // A new peer, or a peer's new state, changes the inventory: the birth (retained)
                // is sent again with it, so the fleet's inventory view lists the peers too.
                let peer = matches!(body, medgate_contract::EventBody::PeerSeen(_));
                if let Err(e) = r.event(body) {
                    tracing::error!(error = %e, "cannot store an event for the fleet");
                }
                if peer {
                    r.refresh_inventory();
                }
            }
        }));
    }

    hooks.set_config_source(source);
    let mut instance = Instance::start(current.clone(), &hooks, &shutdown);
    match instance.healthy(&hooks, HEALTHY_WITHIN).await {
        Err(why) if from_fleet => {
            tracing::error!(reason = %why, "the configuration kept from the fleet does not come up; running the local file");
            let _ = instance.stop(&link).await;
            current = local.clone();
            source = ConfigSource::LocalFile;
            hooks.set_config_source(source);
            instance = Instance::start(current.clone(), &hooks, &shutdown);
        }
        Err(why) => tracing::warn!(reason = %why, "not healthy yet"),
        Ok(()) => {}
    }
    // The birth carries the inventory of the running appliance.
    inventory_ready(&hooks).await;
    reporter.refresh_inventory();

    let result = loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                break instance.stop(&link).await.map_or(Ok(()), Err);
            }
            finished = &mut instance.task => {
                break match finished {
                    Ok(r) => r,
                    Err(e) => Err(AppError::Internal(e.to_string())),
                };
            }
            Some(req) = rx.recv() => match req {
                Request::Apply { cfg, version, desired, reply } => {
                    idle(&hooks, &shutdown).await;
                    tracing::info!(version, "switching to the configuration from the fleet");
                    let _ = instance.stop(&link).await;
                    hooks.set_reason(format!("fleet configuration v{version}"));
                    hooks.set_config_source(ConfigSource::Fleet { version });
                    let mut next = Instance::start((*cfg).clone(), &hooks, &shutdown);
                    match next.healthy(&hooks, HEALTHY_WITHIN).await {
                        Ok(()) => {
                            if let Err(e) = store.save(&managed::Applied { version, config: desired }) {
                                tracing::error!(error = %e, "cannot keep the applied configuration; it runs until the next restart");
                            }
                            tracing::info!(version, "configuration from the fleet applied: the appliance is healthy with it");
                            current = *cfg;
                            source = ConfigSource::Fleet { version };
                            instance = next;
                            inventory_ready(&hooks).await;
                            reporter.refresh_inventory();
                            let _ = reply.send(Ok(()));
                        }
                        Err(why) => {
                            let failed = next.stop(&link).await;
                            tracing::error!(version, reason = %why, error = ?failed, "the configuration from the fleet does not bring the appliance up: rolling back");
                            hooks.set_reason(format!("rollback from fleet configuration v{version}"));
                            hooks.set_config_source(source);
                            instance = Instance::start(current.clone(), &hooks, &shutdown);
                            if let Err(e) = instance.healthy(&hooks, HEALTHY_WITHIN).await {
                                tracing::error!(reason = %e, "the previous configuration does not come back up either");
                            }
                            reporter.refresh_inventory();
                            // Why, as a code the fleet can show (the message stays in the log).
                            let code = match failed {
                                Some(AppError::Bind { .. }) => "listener_down",
                                Some(AppError::Tls { .. }) => "tls_unusable",
                                Some(AppError::Destination { .. }) => "destination_unusable",
                                Some(AppError::Spool { .. }) => "spool_unusable",
                                _ => "unhealthy",
                            };
                            let _ = reply.send(Err(vec![problem(code, None)]));
                        }
                    }
                }
                Request::Restart => {
                    idle(&hooks, &shutdown).await;
                    tracing::info!("restarting the appliance (fleet command)");
                    let _ = instance.stop(&link).await;
                    hooks.set_reason("restart (fleet command)");
                    instance = Instance::start(current.clone(), &hooks, &shutdown);
                    if let Err(why) = instance.healthy(&hooks, HEALTHY_WITHIN).await {
                        tracing::error!(reason = %why, "not healthy after the restart");
                    }
                    inventory_ready(&hooks).await;
                    reporter.refresh_inventory();
                }
            }
        }
    };
    match Arc::try_unwrap(reporter) {
        Ok(r) => r.shutdown(Duration::from_secs(5)).await,
        Err(_) => {
            tracing::warn!("reporter still in use at shutdown; its outbox is flushed by sled")
        }
    }
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::queue::Backoff;
    use crate::forward::{Destination, ForwardHub};

    fn hub(dir: &Path, names: &[&str]) -> ForwardHub {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let (spool, _) = medgate_spool::Spool::open(medgate_spool::SpoolConfig {
            data_dir: dir.to_path_buf(),
            destinations: names.clone(),
            high_watermark_percent: 99.9,
            low_watermark_percent: 99.0,
            max_bytes: 0,
            retention: Duration::from_secs(3600),
        })
        .expect("spool");
        let spool = Arc::new(spool);
        let metrics = Arc::new(crate::metrics::Metrics::new(&names));
        let events = Arc::new(crate::events::Events::default());
        let backoff = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        let mut hub = ForwardHub::default();
        for n in names {
            let d = Destination::new(
                n,
                "dimse",
                backoff,
                spool.clone(),
                metrics.clone(),
                events.clone(),
            )
            .expect("destination");
            hub.destinations.push(Arc::new(d));
        }
        hub
    }

    #[test]
    fn retry_now_wakes_the_destination_named_or_all_and_refuses_an_unknown_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = hub(dir.path(), &["archive", "web"]);
        let token = |s: &str| Token::new(s).expect("token");
        let all = retry_now(&hub, None).expect("all");
        assert_eq!(all.destinations, Some(2));
        let one = retry_now(&hub, Some(&token("web"))).expect("one");
        assert_eq!(one.destinations, Some(1));
        let unknown = retry_now(&hub, Some(&token("nowhere"))).expect_err("unknown");
        assert!(unknown.rejected);
        assert_eq!(unknown.code.as_str(), "unknown_destination");
        // No destination configured: nothing to wake, and that is no failure.
        let none = ForwardHub::default();
        assert_eq!(retry_now(&none, None).expect("none").destinations, Some(0));
    }
}
