//! Wiring: starts an appliance from a [`Config`] — opens the spool and the workflow store,
//! starts the listeners, the forwarders, housekeeping and the local status endpoint — and stops
//! them in order on SIGTERM or Ctrl-C. What runs is shared as the handle [`App`].

use crate::config::{Config, DestinationKind, DestinationSection};
use crate::forward::queue::Backoff;
use crate::forward::stow::{Auth, StowSender};
use crate::forward::{Destination, ForwardHub, Sender, dimse::DimseSender};
use crate::handle::{App, AppParts, Hooks};
use crate::listener::{self, ListenerContext};
use crate::metrics::Metrics;
use crate::scu::ScuOptions;
use crate::tls;
use medgate_config::{AeTitle, Destination as Endpoint};
use medgate_dicom::negotiate::AcceptorPolicy;
use medgate_dicom::pdata::FrameLimits;
use medgate_spool::{Spool, SpoolConfig, WorkflowStore};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
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
    /// The configuration does not parse into its checked values (`config check` says the same).
    #[error("the configuration is invalid: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Config {
        /// Every problem.
        problems: Vec<medgate_config::Problem>,
    },
    /// A destination could not be set up.
    #[error("destination {name}: {reason}")]
    Destination {
        /// Destination name.
        name: String,
        /// Why.
        reason: String,
    },
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

fn senders(d: &DestinationSection, to: &Endpoint) -> Result<Vec<Sender>, AppError> {
    let timeout = Duration::from_secs(d.timeout_secs);
    match to {
        Endpoint::Dimse {
            address,
            called_ae,
            calling_ae,
        } => {
            let tls = match d.tls {
                Some(_) => Some(client_tls(d, &address.host)?),
                None => None,
            };
            let opts = ScuOptions {
                address: address.to_string(),
                calling_ae: calling_ae.to_string(),
                called_ae: called_ae.to_string(),
                timeout,
                tls,
            };
            Ok((0..d.parallel)
                .map(|_| Sender::Dimse(Box::new(DimseSender::new(opts.clone()))))
                .collect())
        }
        Endpoint::Stow { url } => {
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
            let sender = StowSender::new(url, timeout, tls, auth).map_err(|reason| {
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
        segment_bytes: cfg.spool.segment_mib.saturating_mul(1 << 20),
        warm_bytes: cfg.spool.warm_mib.saturating_mul(1 << 20),
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
        torn_records = reconcile.torn_records,
        segments = reconcile.segments,
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

    // The peers as checked types: the values wired below are the values that were validated.
    let endpoints = cfg
        .desired()
        .endpoints()
        .map_err(|problems| AppError::Config { problems })?;
    let mut hub = ForwardHub::default();
    let mut workers = Vec::new();
    for (d, to) in cfg.destinations.iter().zip(&endpoints.destinations) {
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
        for s in senders(d, to)? {
            workers.push((dest.clone(), s));
        }
        hub.destinations.push(dest);
    }
    let hub = Arc::new(hub);

    let l = &cfg.listener;
    let networks = endpoints.allowed_networks.clone();
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
            ae_title: endpoints.listener_ae.to_string(),
            called_ae_titles: endpoints
                .allowed_called
                .iter()
                .map(AeTitle::to_string)
                .collect(),
            calling_ae_titles: endpoints
                .allowed_calling
                .iter()
                .map(AeTitle::to_string)
                .collect(),
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

    let app = Arc::new(App::new(AppParts {
        listeners_expected: 1 + usize::from(tls_listener.is_some()),
        cfg: cfg.clone(),
        spool: spool.clone(),
        metrics: metrics.clone(),
        hub: hub.clone(),
        listener: ctx.clone(),
        reconcile,
        events: hooks.events.clone(),
        fleet: hooks.fleet.clone(),
        config_source: hooks.config_source(),
        update: hooks.update.clone(),
    }));

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
        app.listener_serving();
        tasks.spawn(async move { listener::serve(plain, ctx, None, sd).await });
    }
    if let Some((tl, acceptor)) = tls_listener {
        app.listener_serving();
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
    app.events().flush_forwarded(Duration::ZERO);
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
        let spool = app.spool().clone();
        match tokio::task::spawn_blocking(move || spool.evict()).await {
            Ok(Ok(n)) if n > 0 => {
                app.metrics()
                    .objects_evicted
                    .fetch_add(n, Ordering::Relaxed);
                tracing::info!(evicted = n, "released confirmed objects from the spool");
            }
            Ok(Err(e)) => tracing::error!(error = %e, "retention pass failed"),
            _ => {}
        }
        let u = app.spool().usage();
        let m = &app.metrics();
        m.spool_bytes.store(u.spool_bytes, Ordering::Relaxed);
        m.spool_objects.store(u.objects, Ordering::Relaxed);
        let seg = app.spool().segment_stats();
        for (slot, v) in m
            .segments
            .iter()
            .zip([seg.in_use, seg.ready_warm, seg.ready_cold])
        {
            slot.store(v, Ordering::Relaxed);
        }
        m.disk_free_bytes.store(u.fs_free_bytes, Ordering::Relaxed);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a float in 0..=100 (or bytes ≤ the disk); `as` saturates and maps NaN to 0"
        )]
        let centipercent = (u.used_percent.clamp(0.0, 100.0) * 100.0) as u64;
        m.spool_used_centipercent
            .store(centipercent, Ordering::Relaxed);
        let full = u.used_percent >= app.cfg().spool.high_watermark_percent;
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
            app.events().watermark_crossed(full, u.used_percent);
            was_full = full;
        }
        // A study is reported forwarded once its objects stop arriving at a destination.
        app.events().flush_forwarded(Duration::from_secs(10));
        for d in &app.hub().destinations {
            d.refresh_gauges();
        }
    }
}
