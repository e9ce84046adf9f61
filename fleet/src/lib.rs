//! The Medgate fleet manager: enrollment, registry and inventory, telemetry, events,
//! configuration and commands of appliances over MQTT (see docs/fleet.md).
//!
//! - [`config`]: `medgate-fleet.toml`; every key has a default (zero setup).
//! - [`model`]: the domain as types (statuses as enums, records as structs).
//! - [`store`]: SQLite or PostgreSQL (sqlx `Any`), one module per aggregate, portable
//!   migrations, idempotent writes.
//! - [`ops`]: every domain operation (enrollment, status, configuration, commands, claims,
//!   peers, upkeep), given its [`publish::Publisher`] at construction.
//! - [`broker`]: the embedded rumqttd broker (zero-setup default).
//! - [`ingest`]: the MQTT client recording device messages.
//! - [`app`]: the shared state (operations, counters, admin token).
//! - [`api`], [`openapi`]: REST under `/api/v1` (parse, call [`ops`], serialise), SSE live
//!   feed, `/metrics`.
//! - [`auth`]: identity and access (passwords, sessions, CSRF, throttle, tokens, the policy
//!   table); [`console`]: the server-rendered pages.
//! - [`ota`]: update campaigns as a pure state machine (waves, soak, failure threshold).
//! - [`ca`]: the fleet CA and enrollment certificates; [`brokerconf`]: Mosquitto configuration.

// alerts (issue 13 part 3): rules, their history, e-mail and webhook.
pub mod alerts;
// analytics (issue 13 part 2): study events into rollups, and the reports read from them.
pub mod analytics;
pub mod api;
pub mod app;
// atna (issue 13 part 4): the audit log as IHE ATNA syslog messages.
pub mod atna;
// atna: the TLS forwarder.
pub mod atna_forward;
pub mod auth;
pub mod broker;
pub mod brokerconf;
pub mod ca;
pub mod civil;
pub mod config;
pub mod console;
// ota (issue 14): the devices' download listener.
pub mod device_https;
pub mod https;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod ops;
// ota (issue 14 part 2): update campaigns, sans-IO.
pub mod ota;
pub mod pem;
pub mod publish;
pub mod store;
// wall (issue 13 part 1): display links and the wall.
pub mod wall;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use app::App;
use config::{BrokerMode, FleetConfig};

/// A running fleet manager.
#[derive(Debug)]
pub struct Running {
    /// The shared state.
    pub app: Arc<App>,
    /// Where the HTTP API listens.
    pub http: SocketAddr,
    /// Whether it serves HTTPS.
    pub https: bool,
    /// The broker (host, port) the fleet uses.
    pub broker: (String, u16),
    /// The admin token file (break-glass: docs/fleet.md).
    pub admin_token_file: std::path::PathBuf,
    /// While no user exists: the one-time token of the first-run setup link (printed once;
    /// see [`Running::setup_hint`]).
    pub setup_token: Option<String>,
}

impl Running {
    /// The base URL (`http://…` or `https://…`) of this fleet.
    pub fn base_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.http)
    }

    /// The first-run setup link (the console's page, with the one-time token), for stdout and
    /// the log, with the API request that does the same (`None` once a user exists).
    pub fn setup_hint(&self) -> Option<String> {
        self.setup_token.as_ref().map(|t| {
            let base = self.base_url();
            format!(
                "no user exists yet: create the first admin, once, within {} h, at\n  {base}/setup?token={t}\n  (or: curl -X POST {base}/api/v1/auth/setup -H 'content-type: application/json' -d '{{\"token\": \"{t}\", \"user\": \"NAME\", \"password\": \"12 OR MORE CHARACTERS\"}}'; or `medgate-fleet admin create --user NAME --role admin`)",
                self.app.ops.config.auth.setup_link_hours,
            )
        })
    }
}

/// The fleet could not start; the message names the configuration key or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A file or directory could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// The configuration key or file.
        what: &'static str,
        /// The path.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The admin token file holds too short a token.
    #[error(
        "{0}: the admin token must be at least 32 characters; delete the file to get a new one"
    )]
    ShortAdminToken(std::path::PathBuf),
    /// The embedded broker did not start.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    /// The database.
    #[error("database {url}: {source}")]
    Database {
        /// The URL, without its password.
        url: String,
        /// Why.
        #[source]
        source: store::StoreError,
    },
    /// The CA.
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    /// The MQTT client.
    #[error(transparent)]
    Ingest(#[from] ingest::IngestError),
    /// An operation at start (the revocation list, a random token).
    #[error(transparent)]
    Op(#[from] ops::OpError),
    /// `[http] tls`.
    #[error(transparent)]
    HttpTls(#[from] pem::TlsError),
    /// alerts (issue 13 part 3): a channel of `[alerts]` cannot be set up.
    #[error("{0}")]
    Alerts(String),
}

/// Reads the admin token file, creating it (0600, random) if missing. Returns the token.
pub fn admin_token(path: &Path) -> Result<String, ServeError> {
    if let Ok(t) = std::fs::read_to_string(path) {
        let t = t.trim().to_owned();
        if t.len() >= 32 {
            return Ok(t);
        }
        return Err(ServeError::ShortAdminToken(path.to_owned()));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| ServeError::Io {
            what: "admin token directory",
            path: parent.to_owned(),
            source,
        })?;
    }
    let token = ops::random_token()?;
    ca::write_key(path, &format!("{token}\n"))?;
    Ok(token)
}

/// Starts everything: broker (embedded mode), database, CA, MQTT ingestion, upkeep, HTTP.
pub async fn serve(config: FleetConfig) -> Result<Running, ServeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::Io {
        what: "data_dir",
        path: config.data_dir.clone(),
        source,
    })?;
    if config.broker.mode == BrokerMode::Embedded {
        broker::start_embedded(config.broker.listen).map_err(ServeError::Broker)?;
    }
    let url = config.database_url();
    let store = store::Store::connect(&url, config.database.max_connections)
        .await
        .map_err(|source| ServeError::Database {
            url: redact(&url),
            source,
        })?;
    let ca = ca::Ca::load_or_create(&config.data_dir.join("ca"))?;
    let token_file = config.admin_token_file();
    let token = admin_token(&token_file)?;
    // The client exists before it connects: what is published meanwhile waits in its queue.
    let (client, eventloop) = ingest::client(&config)?;
    let ops = ops::Ops::new(
        store,
        config.clone(),
        ca,
        publish::Publisher::mqtt(client.clone()),
    );
    let app = Arc::new(App::new(ops, ops::sha256_hex(token.as_bytes())));
    ingest::start(app.clone(), client, eventloop, &config);
    app.spawn_upkeep();
    // atna (issue 13 part 4): the audit log also goes to the hospital's audit repository.
    if let Some(s) = config.audit.syslog.clone().filter(|s| s.enabled) {
        let tls = Arc::new(atna_forward::client_config(&s)?);
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "medgate-fleet".into());
        tokio::spawn(atna_forward::run(
            app.ops.store.clone(),
            s,
            tls,
            hostname.clone(),
            atna_forward::holder_name(&hostname),
            app.metrics.atna.clone(),
        ));
    }
    // alerts (issue 13 part 3): the evaluator and the delivery of notifications.
    if config.alerts.enabled {
        let channels = alerts::Channels::new(&config.alerts, config.devices.public_url.clone())
            .map_err(ServeError::Alerts)?;
        let walls = app.clone();
        tokio::spawn(alerts::evaluate(
            app.ops.store.clone(),
            config.alerts.clone(),
            channels.list(),
            move || walls.ops.wall.changed(),
        ));
        tokio::spawn(alerts::deliver(
            app.ops.store.clone(),
            channels,
            config.alerts.max_attempts,
            app.metrics.alerts.clone(),
        ));
    }
    app.ops.write_crl().await?;
    let setup_token = app.ops.issue_setup_token().await?;
    let bind_error = |source| ServeError::Io {
        what: "http.bind",
        path: config.http.bind.to_string().into(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(config.http.bind)
        .await
        .map_err(bind_error)?;
    let http = listener.local_addr().map_err(bind_error)?;
    let router = api::router(app.clone());
    let https = match &config.http.tls {
        Some(t) => {
            let tls = https::server_config(&t.certificate, &t.private_key)?;
            let listener = https::TlsListener::new(listener, tls).map_err(bind_error)?;
            tokio::spawn(async move {
                let service = router.into_make_service_with_connect_info::<api::Peer>();
                if let Err(e) = axum::serve(listener, service).await {
                    tracing::error!(error = %e, "HTTPS server stopped");
                }
            });
            true
        }
        None => {
            tokio::spawn(async move {
                let service = router.into_make_service_with_connect_info::<api::Peer>();
                if let Err(e) = axum::serve(listener, service).await {
                    tracing::error!(error = %e, "HTTP server stopped");
                }
            });
            false
        }
    };
    // ota (issue 14): the devices' downloads, on their own mutual-TLS listener.
    if let Some(bind) = config.updates.download_bind {
        let tls = device_https::server_config(&app.ops.ca, &config.updates.download_hostnames)?;
        let bind_error = |source| ServeError::Io {
            what: "updates.download_bind",
            path: bind.to_string().into(),
            source,
        };
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(bind_error)?;
        let listener = https::TlsListener::new(listener, tls).map_err(bind_error)?;
        let service = device_https::router(app.clone())
            .into_make_service_with_connect_info::<device_https::DevicePeer>();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, service).await {
                tracing::error!(error = %e, "the devices' HTTPS listener stopped");
            }
        });
        tracing::info!(bind = %bind, "serving update downloads to devices (HTTPS, device certificates)");
    }
    let running = Running {
        app,
        http,
        https,
        broker: ingest::broker_endpoint(&config),
        admin_token_file: token_file,
        setup_token,
    };
    if let Some(hint) = running.setup_hint() {
        tracing::warn!("{hint}");
    }
    Ok(running)
}

/// A database URL without its password.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
