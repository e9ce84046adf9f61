//! The appliance's side of the fleet: enrollment, reporting (telemetry, inventory, events) and
//! the fleet's commands, around the running appliance.
//!
//! [`attach`] connects the reporter ([`medgate_report`]) to the supervisor
//! ([`crate::supervisor`]) when fleet reporting is configured: telemetry and inventory from the
//! running appliance, the fleet's commands carried out on it, a new configuration or a restart
//! handed to the supervisor as a [`Request`] (which rolls back a configuration that does not
//! come up; the fleet is then told `rolled_back` with its code), and a configuration that proved
//! healthy kept for the next start ([`managed`]). Capture never waits on MQTT: events go to the
//! reporter's outbox and the reporter runs on its own task.

pub mod enroll;
pub mod managed;

use crate::app::AppError;
use crate::config::Config;
use crate::handle::{App, Hooks};
use crate::supervisor::{Attachment, Request, RunError};
use medgate_contract::{
    CommandOutput, ConfigProblem, DesiredConfig, DestinationQueue, DestinationState, Disk,
    ErrorCounts, Flow, Inventory, Nic, Percentiles, QueueStats, TelemetrySnapshot, Token,
    UpdateReport,
};
use medgate_report::{
    ApplyOutcome, CommandFailure, CommandHandler, CommandResult, ProducedFile, Reporter,
    ReporterConfig, TelemetrySource,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Calling AEs listed in the inventory (the birth message); the local list has them all.
const MAX_PEERS: usize = 64;

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
    /// The device certificate the fleet knows this device by (for update downloads).
    identity: Option<crate::update::inbox::Identity>,
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
    let Some(qc) = &app.workflow().qc else {
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
    let m = &app.metrics();
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

/// One destination's queue as telemetry: its name (a token: `[a-z0-9-]`, checked by the
/// configuration), depth, oldest age, quarantine count and state. `None` for a name that is
/// not a token (it cannot travel).
fn destination_queue(
    name: &str,
    s: &crate::forward::Snapshot,
    quarantined: u64,
) -> Option<DestinationQueue> {
    let state = if s.down {
        DestinationState::BackingOff
    } else if s.quarantining {
        DestinationState::Quarantining
    } else {
        DestinationState::Ok
    };
    Some(DestinationQueue {
        name: Token::new(name).ok()?,
        depth: u64::try_from(s.depth).unwrap_or(u64::MAX),
        oldest_age_secs: s.oldest_age_secs,
        quarantined,
        state,
    })
}

/// The agent's status as telemetry carries it: its codes and versions, not its words.
fn update_report(s: &crate::update::view::UpdateStatus) -> Option<UpdateReport> {
    let state = serde_json::from_value(serde_json::Value::String(s.state.clone()?)).ok()?;
    let token = |v: &Option<String>| v.as_deref().and_then(|t| Token::new(t).ok());
    Some(UpdateReport {
        state,
        version: token(&s.version),
        running: token(&s.running),
        campaign: token(&s.campaign),
        on_probation: s.on_probation,
        code: token(&s.reason).or_else(|| token(&s.code)),
    })
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
        let m = &app.metrics();
        let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let mut queue = QueueStats::default();
        let mut quarantine = 0;
        let mut latency = Percentiles::default();
        for d in m.destinations.values() {
            queue.depth += ld(&d.queue_depth);
            queue.oldest_age_secs = queue.oldest_age_secs.max(ld(&d.oldest_age_secs));
            quarantine += ld(&d.quarantined);
            let q = |p: f64| d.latency.quantile(p).map_or(0, crate::metrics::secs_to_ms);
            latency.p50 = latency.p50.max(q(0.5));
            latency.p90 = latency.p90.max(q(0.9));
            latency.p99 = latency.p99.max(q(0.99));
            latency.max = latency.max.max(q(1.0));
        }
        let destinations = app
            .hub()
            .destinations
            .iter()
            .filter_map(|d| {
                let quarantined = m
                    .destinations
                    .get(&d.name)
                    .map_or(0, |g| ld(&g.quarantined));
                destination_queue(&d.name, &d.snapshot(), quarantined)
            })
            .collect();
        let usage = app.spool().usage();
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
            associations_active: u32::try_from(ld(&m.associations_active)).unwrap_or(u32::MAX),
            forward_latency_ms: latency,
            errors: ErrorCounts {
                receive: base.errors.receive + now.errors.receive,
                forward: base.errors.forward + now.errors.forward,
                storage: base.errors.storage + now.errors.storage,
                other: 0,
            },
            qc: qc_counts(&app),
            destinations,
            update: app.update().get().as_ref().and_then(update_report),
        }
    }

    fn inventory(&self) -> Inventory {
        let app = self.hooks.app();
        let hw = app.as_ref().and_then(|a| a.hardware());
        let (serial, profile, nics) = match hw.as_ref().map(|h| &h.inventory) {
            Some(inv) => (
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
                let u = a.spool().usage();
                let peers = a
                    .spool()
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
                    medgate_contract::AeTitle::new(a.cfg().listener.ae_title.as_str()).ok(),
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

/// The device's certificate for update downloads: the broker link's mutual-TLS files, else
/// those `enroll` wrote beside the settings file (an embedded broker without TLS still gave
/// the device its certificate).
fn download_identity(
    reporter: &ReporterConfig,
    local: &Config,
) -> Option<crate::update::inbox::Identity> {
    use crate::update::inbox::Identity;
    if let Some(t) = &reporter.tls {
        if let (Some(certificate), Some(private_key)) = (&t.certificate, &t.private_key) {
            return Some(Identity {
                ca: t.ca.clone(),
                certificate: certificate.clone(),
                private_key: private_key.clone(),
            });
        }
    }
    let beside = Identity::beside(local.appliance.fleet_enrollment.as_deref()?)?;
    beside.certificate.exists().then_some(beside)
}

impl CommandHandler for Link {
    fn desired_update(&self, desired: medgate_contract::DesiredUpdate) {
        if self.local.update.is_none() {
            tracing::warn!(campaign = %desired.campaign, "an update instruction arrived, but [update] is not configured on this appliance; ignored");
            return;
        }
        self.hooks.update_inbox.put(crate::update::inbox::Offered {
            desired,
            identity: self.identity.clone(),
        });
    }

    async fn apply_config(&self, desired: &DesiredConfig) -> ApplyOutcome {
        let cfg = match managed::merge(&desired.config, &self.local) {
            Ok(c) => c,
            Err(problems) => {
                tracing::warn!(version = desired.version, problems = ?problems, "desired configuration refused by validation; nothing changed");
                return ApplyOutcome::Rejected(managed::to_contract(&problems, "invalid_value"));
            }
        };
        let (reply, answer) = oneshot::channel();
        let version = desired.version;
        let req = Request::Apply {
            cfg: Box::new(cfg),
            version,
            reply,
        };
        if self.requests.send(req).await.is_err() {
            return ApplyOutcome::Rejected(vec![problem("shutting_down", None)]);
        }
        match answer.await {
            Ok(Ok(())) => {
                // Healthy with it: kept for the next start.
                let applied = managed::Applied {
                    version,
                    config: desired.config.clone(),
                };
                if let Err(e) = self.store.save(&applied) {
                    tracing::error!(error = %e, "cannot keep the applied configuration; it runs until the next restart");
                }
                ApplyOutcome::Applied
            }
            // Why, as a code the fleet can show (the message stays in the log).
            Ok(Err(code)) => ApplyOutcome::RolledBack(vec![problem(code, None)]),
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

    async fn collect_diagnostics(&self) -> Result<ProducedFile, CommandFailure> {
        let app = self.app()?;
        let file = self.config_file.clone();
        let applied = self
            .store
            .load()
            .ok()
            .flatten()
            .and_then(|a| serde_json::to_value(a).ok());
        let (bundle, content) = tokio::task::spawn_blocking(move || {
            let bundle = crate::diagnostics::collect(&app, file.as_deref(), applied.as_ref())?;
            let content = std::fs::read(&bundle.path)
                .map_err(|e| format!("cannot read {}: {e}", bundle.path.display()))?;
            Ok::<_, String>((bundle, content))
        })
        .await
        .map_err(|_| CommandFailure::failed("internal"))?
        .map_err(|e| {
            tracing::error!(error = %e, "diagnostics bundle failed");
            CommandFailure::failed("io")
        })?;
        tracing::info!(file = %bundle.path.display(), bytes = bundle.bytes, "diagnostics bundle written");
        Ok(ProducedFile {
            output: CommandOutput {
                bytes: Some(content.len() as u64),
                sha256: medgate_contract::Sha256Hex::new(bundle.sha256.as_str()).ok(),
                file: Token::new(bundle.name.as_str()).ok(),
                ..CommandOutput::default()
            },
            content,
        })
    }

    async fn retry_now(&self, destination: Option<Token>) -> CommandResult {
        let app = self.app()?;
        retry_now(app.hub(), destination.as_ref())
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

/// Connects fleet reporting and commands to the supervisor when `local` configures it (`None`:
/// no fleet, or settings unusable — the appliance then runs alone, which the log says). Called
/// by [`crate::supervisor::run`] once the data directory is claimed.
pub fn attach(
    local: &Config,
    config_file: Option<&Path>,
    hooks: &Hooks,
) -> Result<Option<Attachment>, RunError> {
    let reporter_cfg = match settings(local) {
        Ok(Settings::On(c)) => *c,
        Ok(Settings::Off) => return Ok(None),
        Ok(Settings::NotEnrolled(p)) => {
            tracing::warn!(file = %p.display(), "not enrolled with the fleet yet: running without reporting; run `medgate-appliance enroll` (the image does it at first boot), then restart");
            return Ok(None);
        }
        Err(e) => {
            tracing::error!(error = %e, "fleet settings unusable: running without reporting; fix them and restart");
            return Ok(None);
        }
    };

    let store = managed::Store::new(&local.appliance.data_dir);
    let (tx, requests) = mpsc::channel(4);
    let identity = download_identity(&reporter_cfg, local);
    let link = Arc::new(Link {
        hooks: hooks.clone(),
        requests: tx,
        local: local.clone(),
        config_file: config_file.map(Path::to_path_buf),
        store: store.clone(),
        started: Instant::now(),
        carried: Mutex::new(Carried::default()),
        os_version: os_version(),
        identity,
    });

    // The configuration to run: the last one the fleet set that proved healthy, else the file.
    let kept = match store.load() {
        Ok(Some(applied)) => match managed::merge(&applied.config, local) {
            Ok(cfg) => {
                tracing::info!(
                    version = applied.version,
                    "running the configuration last applied from the fleet"
                );
                Some((cfg, applied.version))
            }
            Err(p) => {
                tracing::error!(problems = ?p, "the configuration kept from the fleet is no longer valid; running the local file");
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the configuration kept from the fleet; running the local file");
            None
        }
    };

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
        hooks
            .fleet
            .connect(Box::new(move || weak.upgrade().map(|r| r.status())));
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
    let weak = Arc::downgrade(&reporter);
    Ok(Some(Attachment {
        requests,
        kept,
        on_retire: Box::new(move |app| link.retire(app)),
        // The birth carries the inventory of the running appliance.
        on_inventory: Box::new(move || {
            if let Some(r) = weak.upgrade() {
                r.refresh_inventory();
            }
        }),
        finish: Box::new(move || {
            Box::pin(async move {
                match Arc::try_unwrap(reporter) {
                    Ok(r) => r.shutdown(Duration::from_secs(5)).await,
                    Err(_) => {
                        tracing::warn!(
                            "reporter still in use at shutdown; its outbox is flushed by sled"
                        )
                    }
                }
            })
        }),
    }))
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
            segment_bytes: medgate_spool::DEFAULT_SEGMENT_BYTES,
            warm_bytes: 0,
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

    #[test]
    fn each_destination_travels_with_its_state_in_words() {
        let snap = |down, quarantining| crate::forward::Snapshot {
            depth: 3,
            oldest_age_secs: 12,
            down,
            quarantining,
            last_error: None,
        };
        let q = destination_queue("archive", &snap(false, false), 0).expect("token");
        assert_eq!(
            (q.name.as_str(), q.depth, q.oldest_age_secs, q.state),
            ("archive", 3, 12, DestinationState::Ok)
        );
        // Down wins: the backoff is what holds the queue.
        let q = destination_queue("archive", &snap(true, true), 2).expect("token");
        assert_eq!((q.state, q.quarantined), (DestinationState::BackingOff, 2));
        let q = destination_queue("archive", &snap(false, true), 2).expect("token");
        assert_eq!(q.state, DestinationState::Quarantining);
        assert!(destination_queue("not a token", &snap(false, false), 0).is_none());
    }

    #[test]
    fn the_update_status_travels_as_codes_and_versions_only() {
        use crate::update::view::UpdateStatus;
        use medgate_contract::UpdatePhase;
        let s = UpdateStatus {
            running: Some("0.1.0".into()),
            on_probation: false,
            campaign: Some("local-17".into()),
            version: Some("0.2.0".into()),
            state: Some("waiting_idle".into()),
            code: None,
            reason: Some("associations_active".into()),
            detail: Some("waiting for idle DICOM: 1 association active".into()),
        };
        let r = update_report(&s).expect("report");
        assert_eq!(r.state, UpdatePhase::WaitingIdle);
        assert_eq!(
            r.code.as_ref().map(Token::as_str),
            Some("associations_active")
        );
        assert_eq!(r.version.as_ref().map(Token::as_str), Some("0.2.0"));
        let json = serde_json::to_string(&r).expect("json");
        assert!(!json.contains("waiting for idle"), "no words: {json}");
        let rolled = UpdateStatus {
            state: Some("rolled_back".into()),
            code: Some("health_deadline".into()),
            reason: None,
            ..s.clone()
        };
        let r = update_report(&rolled).expect("report");
        assert_eq!(r.state, UpdatePhase::RolledBack);
        assert_eq!(r.code.as_ref().map(Token::as_str), Some("health_deadline"));
        assert!(
            update_report(&UpdateStatus::default()).is_none(),
            "no state, no report"
        );
    }
}
