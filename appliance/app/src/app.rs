//! Wiring: opens the spool, starts the listeners, the forwarders, housekeeping and the local
//! status endpoint, and stops them in order on SIGTERM or Ctrl-C.

use crate::config::{Config, DestinationKind, DestinationSection, Network, split_host_port};
use crate::events::Events;
use crate::forward::queue::Backoff;
use crate::forward::stow::{Auth, StowSender};
use crate::forward::{Destination, ForwardHub, Sender, dimse::DimseSender};
use crate::listener::{self, ListenerContext};
use crate::metrics::Metrics;
use crate::scu::ScuOptions;
use crate::tls;
use medgate_dicom::negotiate::AcceptorPolicy;
use medgate_dicom::pdata::FrameLimits;
use medgate_spool::{ReconcileReport, Spool, SpoolConfig, WorkflowStore};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Errors that stop the appliance from starting.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The spool could not be opened.
    #[error("cannot open the spool in {dir}: {source}")]
    Spool {
        /// Data directory.
        dir: String,
        /// Cause.
        source: medgate_spool::SpoolError,
    },
    /// An address could not be bound.
    #[error(
        "cannot listen on {addr} ({what}): {source}; is another process using it, or does binding a port below 1024 need CAP_NET_BIND_SERVICE?"
    )]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Which listener.
        what: &'static str,
        /// OS error.
        source: std::io::Error,
    },
    /// TLS material is unusable.
    #[error("{what}: {source}")]
    Tls {
        /// Which TLS configuration.
        what: String,
        /// Cause.
        source: tls::TlsError,
    },
    /// The data directory is held by another instance, or unusable.
    #[error(transparent)]
    DataDir(#[from] crate::datadir::DataDirError),
    /// The box is not fit to run.
    #[error(transparent)]
    Board(#[from] crate::board::BoardError),
    /// An internal task failed.
    #[error("internal error: {0}")]
    Internal(String),
    /// A destination could not be set up.
    #[error("destination {name}: {reason}")]
    Destination {
        /// Destination name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// The running appliance, shared with the status endpoint.
#[derive(Debug)]
pub struct App {
    /// The configuration it runs with.
    pub cfg: Config,
    /// The spool.
    pub spool: Arc<Spool>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The destinations.
    pub hub: Arc<ForwardHub>,
    /// The listener context (health flags).
    pub listener: Arc<ListenerContext>,
    /// What start-up reconciliation found.
    pub reconcile: ReconcileReport,
    /// When it started.
    pub started: Instant,
    /// Listeners bound and serving.
    pub listeners_up: AtomicUsize,
    /// Listeners configured.
    pub listeners_expected: usize,
    /// The last hardware inventory and its alarms (none without a hardware profile).
    pub inventory: std::sync::Mutex<Option<(medgate_hardware::Inventory, Vec<String>)>>,
    /// Events for the fleet.
    pub events: Arc<Events>,
    /// The fleet reporter's state (none without a fleet).
    pub fleet: Arc<crate::fleet::Probe>,
    /// Where its configuration comes from.
    pub config_source: ConfigSource,
}

/// What the appliance shares with the one who runs it (the fleet link): its event sink, and
/// the running [`App`] while it serves.
#[derive(Debug, Default, Clone)]
pub struct Hooks {
    /// Events for the fleet; a no-op until a sink is connected.
    pub events: Arc<Events>,
    /// The fleet reporter's state, for the local status.
    pub fleet: Arc<crate::fleet::Probe>,
    /// Why the configuration starting now is in force (for the rules audit list):
    /// "start-up" unless the supervisor says otherwise.
    pub reason: Arc<std::sync::Mutex<Option<String>>>,
    /// The running appliance: set once it serves, cleared when it stops.
    pub current: Arc<std::sync::Mutex<Option<Arc<App>>>>,
    /// Where the configuration starting next comes from (the supervisor sets it).
    pub config_source: Arc<std::sync::Mutex<ConfigSource>>,
}

/// Where the running configuration comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum ConfigSource {
    /// The local file, as written.
    #[default]
    LocalFile,
    /// The fleet's desired configuration of this version, merged over the local file (which
    /// keeps the box-local tables: appliance, status, hardware, fleet).
    Fleet {
        /// The fleet's version of it.
        version: u64,
    },
}

impl Hooks {
    /// The running appliance, if any.
    pub fn app(&self) -> Option<Arc<App>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records where the configuration of the next start comes from.
    pub fn set_config_source(&self, source: ConfigSource) {
        *self.config_source.lock().unwrap_or_else(|p| p.into_inner()) = source;
    }

    fn config_source(&self) -> ConfigSource {
        *self.config_source.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records why the next start happens (see [`Hooks::reason`]).
    pub fn set_reason(&self, why: impl Into<String>) {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.into());
    }

    fn reason(&self) -> String {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "start-up".into())
    }

    fn set(&self, app: Option<Arc<App>>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = app;
    }
}

impl App {
    /// Healthy: every listener serves and the spool accepts writes. Returns the reason if not.
    pub fn health(&self) -> Result<(), String> {
        let up = self.listeners_up.load(Ordering::Relaxed);
        if up < self.listeners_expected {
            return Err(format!(
                "{up} of {} listeners serving",
                self.listeners_expected
            ));
        }
        if !self.listener.spool_ok.load(Ordering::Relaxed) {
            return Err("the last spool write failed".into());
        }
        Ok(())
    }
}

impl App {
    /// Takes objects out of quarantine (all, one id, all or one destination) and queues them
    /// again. Returns how many (object, destination) pairs were queued.
    pub async fn retry_quarantine(
        &self,
        id: Option<u64>,
        destination: Option<String>,
    ) -> Result<usize, String> {
        let spool = self.spool.clone();
        let pairs = tokio::task::spawn_blocking(move || {
            spool.release_quarantine(id, destination.as_deref())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        for (id, d) in &pairs {
            self.hub.requeue(*id, d);
        }
        Ok(pairs.len())
    }

    /// Gives up on quarantined objects received more than `older_than` ago (all if `None`); see
    /// [`Spool::purge_quarantine`]. Returns (objects, bytes) deleted.
    pub async fn purge_quarantine(
        &self,
        older_than: Option<Duration>,
    ) -> Result<(u64, u64), String> {
        let cutoff =
            older_than.map(|d| medgate_contract::now_ms().saturating_sub(d.as_millis() as u64));
        let spool = self.spool.clone();
        let (done, left) = tokio::task::spawn_blocking(move || {
            let done = spool.purge_quarantine(cutoff)?;
            Ok::<_, medgate_spool::SpoolError>((done, spool.quarantined()?))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        for d in &self.hub.destinations {
            d.set_quarantined(left.iter().filter(|e| e.destination == d.name).count() as u64);
        }
        Ok(done)
    }
}

/// Makes ring the process-wide rustls provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn client_tls(
    d: &DestinationSection,
    default_host: &str,
) -> Result<(Arc<rustls::ClientConfig>, String), AppError> {
    let err = |source| AppError::Tls {
        what: format!("destination {} TLS", d.name),
        source,
    };
    let t = d.tls.as_ref();
    let client_cert = t.and_then(|t| t.certificate.as_deref().zip(t.private_key.as_deref()));
    let cfg = match t.and_then(|t| t.ca.as_deref()) {
        Some(ca) => tls::client_config(ca, client_cert).map_err(err)?,
        None => {
            // No CA given: trust the system's roots (public archives, hospital PKI installed in the OS).
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| err(e.into()))?
            .with_root_certificates(roots);
            let cfg = match client_cert {
                Some((c, k)) => builder
                    .with_client_auth_cert(
                        tls::load_certs(c).map_err(err)?,
                        tls::load_key(k).map_err(err)?,
                    )
                    .map_err(|e| err(e.into()))?,
                None => builder.with_no_client_auth(),
            };
            Arc::new(cfg)
        }
    };
    let name = t
        .and_then(|t| t.server_name.clone())
        .unwrap_or_else(|| default_host.to_string());
    Ok((cfg, name))
}

fn read_secret(path: &std::path::Path, name: &str) -> Result<String, AppError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| AppError::Destination {
            name: name.to_string(),
            reason: format!("cannot read {}: {e}", path.display()),
        })
}

fn senders(cfg: &Config, d: &DestinationSection) -> Result<Vec<Sender>, AppError> {
    let timeout = Duration::from_secs(d.timeout_secs);
    match d.kind {
        DestinationKind::Dimse => {
            let address = d.address.clone().unwrap_or_default();
            let host = split_host_port(&address)
                .map(|(h, _)| h)
                .unwrap_or_default();
            let tls = match d.tls {
                Some(_) => Some(client_tls(d, &host)?),
                None => None,
            };
            let opts = ScuOptions {
                address,
                calling_ae: cfg.calling_ae_for(d).to_string(),
                called_ae: d.called_ae_title.clone().unwrap_or_default(),
                timeout,
                tls,
            };
            Ok((0..d.parallel)
                .map(|_| Sender::Dimse(DimseSender::new(opts.clone())))
                .collect())
        }
        DestinationKind::Stow => {
            let url = d.url.clone().unwrap_or_default();
            let host = url
                .split("://")
                .nth(1)
                .and_then(|r| r.split(['/', ':']).next())
                .unwrap_or_default()
                .to_string();
            let (tls, _) = client_tls(d, &host)?;
            let auth = match (&d.username, &d.password_file, &d.bearer_token_file) {
                (Some(u), Some(p), _) => Auth::Basic(u.clone(), read_secret(p, &d.name)?),
                (_, _, Some(t)) => Auth::Bearer(read_secret(t, &d.name)?),
                _ => Auth::None,
            };
            let sender = StowSender::new(&url, timeout, tls, auth).map_err(|reason| {
                AppError::Destination {
                    name: d.name.clone(),
                    reason,
                }
            })?;
            Ok((0..d.parallel)
                .map(|_| Sender::Stow(sender.clone()))
                .collect())
        }
    }
}

/// Starts everything and runs until `shutdown` is cancelled.
/// Claims the data directory first ([`crate::datadir::DataDir::claim`]): a second instance on
/// the same directory is refused before anything under it is touched.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<(), AppError> {
    let _claim = crate::datadir::DataDir::claim(&cfg.appliance.data_dir)?;
    run_with(cfg, shutdown, Hooks::default()).await
}

/// [`run`], sharing events and the running appliance through `hooks`.
pub async fn run_with(
    cfg: Config,
    shutdown: CancellationToken,
    hooks: Hooks,
) -> Result<(), AppError> {
    install_crypto_provider();
    let names: Vec<String> = cfg.destinations.iter().map(|d| d.name.clone()).collect();
    let spool_cfg = SpoolConfig {
        data_dir: cfg.appliance.data_dir.clone(),
        destinations: names.clone(),
        high_watermark_percent: cfg.spool.high_watermark_percent,
        low_watermark_percent: cfg.spool.low_watermark_percent,
        max_bytes: cfg.spool.max_bytes,
        retention: Duration::from_secs(cfg.spool.retention_hours * 3600),
    };
    let board = crate::board::Board::prepare(&cfg.hardware)?;
    let dir = cfg.appliance.data_dir.display().to_string();
    let rules = Arc::new(
        crate::rules::RulesRuntime::new(&cfg)
            .map_err(|e| AppError::Internal(format!("invalid [rules]: {e}")))?,
    );
    let router = rules.router();
    let opened = tokio::task::spawn_blocking(move || Spool::open_with_router(spool_cfg, router))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let (spool, reconcile) = opened.map_err(|source| AppError::Spool { dir, source })?;
    tracing::info!(
        objects = reconcile.objects,
        reindexed = reconcile.reindexed,
        dropped_records = reconcile.dropped_records,
        removed_temp_files = reconcile.removed_temp_files,
        damaged_files = reconcile.damaged_files,
        index_rebuilt = reconcile.index_rebuilt,
        "spool reconciled"
    );
    let spool = Arc::new(spool);
    let workflow_store = {
        let (data_dir, spool) = (cfg.appliance.data_dir.clone(), spool.clone());
        let opened = tokio::task::spawn_blocking(move || {
            let (store, mut report) = WorkflowStore::open(&data_dir)?;
            report.migrated_entries = store.migrate_from(&spool)?;
            Ok::<_, medgate_spool::SpoolError>((store, report))
        })
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
        let (store, report) = opened.map_err(|source| AppError::Spool {
            dir: cfg.appliance.data_dir.display().to_string(),
            source,
        })?;
        if report != Default::default() {
            tracing::info!(migrated_entries = report.migrated_entries, moved_aside = ?report.moved_aside, "workflow state opened");
        }
        Arc::new(store)
    };
    if let Err(e) = rules.audit(&hooks.reason()) {
        tracing::error!(error = %e, "cannot write the rules audit list; the rules are applied anyway");
    }
    let metrics = Arc::new(Metrics::new(&names));
    let backoff = Backoff {
        initial: Duration::from_millis(cfg.forward.initial_backoff_ms),
        max: Duration::from_secs(cfg.forward.max_backoff_secs),
    };

    let mut hub = ForwardHub::default();
    let mut workers = Vec::new();
    for d in &cfg.destinations {
        let kind = match d.kind {
            DestinationKind::Dimse => "dimse",
            DestinationKind::Stow => "stow",
        };
        let dest = Arc::new(
            Destination::new(
                d.name.clone(),
                kind,
                backoff,
                spool.clone(),
                metrics.clone(),
                hooks.events.clone(),
            )
            .map_err(|source| AppError::Spool {
                dir: cfg.appliance.data_dir.display().to_string(),
                source,
            })?,
        );
        for s in senders(&cfg, d)? {
            workers.push((dest.clone(), s));
        }
        hub.destinations.push(dest);
    }
    let hub = Arc::new(hub);

    let l = &cfg.listener;
    let networks = l
        .allowed_networks
        .iter()
        .filter_map(|n| Network::parse(n).ok())
        .collect();
    let workflow = Arc::new(
        crate::workflow::Workflow::start(&cfg, &spool, &workflow_store).map_err(|source| {
            AppError::Spool {
                dir: cfg.appliance.data_dir.display().to_string(),
                source,
            }
        })?,
    );
    let ctx = Arc::new(ListenerContext {
        policy: AcceptorPolicy {
            ae_title: l.ae_title.clone(),
            called_ae_titles: l.allowed_called_ae_titles.clone(),
            calling_ae_titles: l.allowed_calling_ae_titles.clone(),
            private_sop_classes: l.private_sop_classes.clone(),
            transfer_syntaxes: l.transfer_syntaxes.clone(),
            max_pdu: l.max_pdu_bytes,
            services: workflow.sop_classes(),
        },
        networks,
        spool: spool.clone(),
        metrics: metrics.clone(),
        forward: hub.clone(),
        limits: FrameLimits {
            max_pdata: l.max_pdu_bytes,
            max_associate: 256 * 1024,
        },
        artim_secs: l.artim_timeout_secs,
        idle_secs: l.idle_timeout_secs,
        slots: Arc::new(tokio::sync::Semaphore::new(l.max_associations)),
        spool_ok: std::sync::atomic::AtomicBool::new(true),
        rules: rules.clone(),
        events: hooks.events.clone(),
        workflow: workflow.clone(),
    });

    let bind = |addr: SocketAddr, what: &'static str| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| AppError::Bind { addr, what, source })
    };
    let plain = bind(l.bind, "DICOM").await?;
    let tls_listener = match (&l.tls_bind, &l.tls) {
        (Some(addr), Some(t)) => {
            let server = tls::server_config(&t.certificate, &t.private_key, t.client_ca.as_deref())
                .map_err(|source| AppError::Tls {
                    what: "listener TLS".into(),
                    source,
                })?;
            Some((
                bind(*addr, "DICOM TLS").await?,
                tokio_rustls::TlsAcceptor::from(server),
            ))
        }
        _ => None,
    };
    let status_listener = bind(cfg.status.bind, "status HTTP").await?;

    let app = Arc::new(App {
        listeners_expected: 1 + usize::from(tls_listener.is_some()),
        cfg: cfg.clone(),
        spool: spool.clone(),
        metrics: metrics.clone(),
        hub: hub.clone(),
        listener: ctx.clone(),
        reconcile,
        started: Instant::now(),
        listeners_up: AtomicUsize::new(0),
        inventory: std::sync::Mutex::new(None),
        events: hooks.events.clone(),
        fleet: hooks.fleet.clone(),
        config_source: hooks.config_source(),
    });

    let mut tasks = tokio::task::JoinSet::new();
    for (dest, sender) in workers {
        tasks.spawn(dest.worker(sender, shutdown.clone()));
    }
    tasks.spawn(housekeeping(app.clone(), shutdown.clone()));
    workflow.spawn(&mut tasks, &shutdown);
    tracing::info!(name = %cfg.appliance.name, ae_title = %l.ae_title, bind = %l.bind, tls_bind = ?l.tls_bind, status = %cfg.status.bind, destinations = ?names, "medgate appliance serving");
    {
        let app = app.clone();
        let (ctx, sd) = (ctx.clone(), shutdown.clone());
        app.listeners_up.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(async move { listener::serve(plain, ctx, None, sd).await });
    }
    if let Some((tl, acceptor)) = tls_listener {
        app.listeners_up.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(listener::serve(
            tl,
            ctx.clone(),
            Some(acceptor),
            shutdown.clone(),
        ));
    }
    {
        let router = crate::status::router(app.clone());
        let sd = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = axum::serve(status_listener, router)
                .with_graceful_shutdown(sd.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "status endpoint failed");
            }
        });
    }

    let profile = board.profile_name().map(str::to_string);
    let watchdogs = board.arm()?;
    tracing::info!(profile = ?profile, "watchdogs armed; ready");
    tasks.spawn(board.supervise(watchdogs, app.clone(), shutdown.clone()));
    hooks.set(Some(app.clone()));

    shutdown.cancelled().await;
    hooks.set(None);
    tracing::info!("shutting down: finishing in-flight work");
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    app.events.flush_forwarded(Duration::ZERO);
    let s = spool.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let _ = workflow_store.flush();
        s.flush()
    })
    .await;
    tracing::info!("stopped");
    Ok(())
}

async fn housekeeping(app: Arc<App>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_full = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {},
            () = shutdown.cancelled() => return,
        }
        let spool = app.spool.clone();
        match tokio::task::spawn_blocking(move || spool.evict()).await {
            Ok(Ok(n)) if n > 0 => {
                app.metrics.objects_evicted.fetch_add(n, Ordering::Relaxed);
                tracing::info!(evicted = n, "released confirmed objects from the spool");
            }
            Ok(Err(e)) => tracing::error!(error = %e, "retention pass failed"),
            _ => {}
        }
        let u = app.spool.usage();
        let m = &app.metrics;
        m.spool_bytes.store(u.spool_bytes, Ordering::Relaxed);
        m.spool_objects.store(u.objects, Ordering::Relaxed);
        m.disk_free_bytes.store(u.fs_free_bytes, Ordering::Relaxed);
        m.spool_used_centipercent
            .store((u.used_percent * 100.0) as u64, Ordering::Relaxed);
        let full = u.used_percent >= app.cfg.spool.high_watermark_percent;
        if full != was_full {
            if full {
                tracing::warn!(
                    used_percent = u.used_percent,
                    "spool crossed its high watermark: new objects are refused with A700 until space returns"
                );
            } else {
                tracing::info!(
                    used_percent = u.used_percent,
                    "spool back below its high watermark: accepting objects again"
                );
            }
            app.events.watermark_crossed(full, u.used_percent);
            was_full = full;
        }
        // A study is reported forwarded once its objects stop arriving at a destination.
        app.events.flush_forwarded(Duration::from_secs(10));
        for d in &app.hub.destinations {
            d.refresh_gauges();
        }
    }
}
