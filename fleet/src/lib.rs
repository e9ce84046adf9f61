//! The Medgate fleet manager: enrollment, registry and inventory, telemetry, events,
//! configuration and commands of appliances over MQTT (see docs/fleet.md).
//!
//! - [`config`]: `medgate-fleet.toml`; every key has a default (zero setup).
//! - [`store`]: SQLite or PostgreSQL (sqlx `Any`), portable migrations, idempotent writes.
//! - [`broker`]: the embedded rumqttd broker (zero-setup default).
//! - [`ingest`]: the MQTT client recording device messages.
//! - [`app`]: operations shared by the API and the ingestion (commands, desired configuration).
//! - [`api`], [`openapi`]: REST under `/api/v1`, SSE live feed, `/metrics`.
//! - [`ca`]: the fleet CA and enrollment certificates; [`brokerconf`]: Mosquitto configuration.

pub mod api;
pub mod app;
pub mod broker;
pub mod brokerconf;
pub mod ca;
pub mod config;
pub mod https;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod store;

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
    /// The admin token file.
    pub admin_token_file: std::path::PathBuf,
}

/// Reads the admin token file, creating it (0600, random) if missing. Returns the token.
pub fn admin_token(path: &Path) -> anyhow_like::Result<String> {
    if let Ok(t) = std::fs::read_to_string(path) {
        let t = t.trim().to_owned();
        if t.len() >= 32 {
            return Ok(t);
        }
        return Err(format!(
            "{}: the admin token must be at least 32 characters; delete the file to get a new one",
            path.display()
        ));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let token = app::random_token().map_err(|e| e.to_string())?;
    ca::write_key(path, &format!("{token}\n")).map_err(|e| e.to_string())?;
    Ok(token)
}

mod anyhow_like {
    pub type Result<T> = std::result::Result<T, String>;
}

/// Starts everything: broker (embedded mode), database, CA, MQTT ingestion, upkeep, HTTP.
pub async fn serve(config: FleetConfig) -> Result<Running, String> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("data_dir {}: {e}", config.data_dir.display()))?;
    if config.broker.mode == BrokerMode::Embedded {
        broker::start_embedded(config.broker.listen)?;
    }
    let url = config.database_url();
    let store = store::Store::connect(&url, config.database.max_connections)
        .await
        .map_err(|e| format!("database {}: {e}", redact(&url)))?;
    let ca = ca::Ca::load_or_create(&config.data_dir.join("ca")).map_err(|e| e.to_string())?;
    let token_file = config.admin_token_file();
    let token = admin_token(&token_file)?;
    let app = Arc::new(App::new(
        store,
        config.clone(),
        ca,
        app::sha256_hex(token.as_bytes()),
    ));
    let client = ingest::start(app.clone(), &config)?;
    app.set_mqtt(client);
    app.spawn_upkeep();
    app.write_crl().await?;
    let listener = tokio::net::TcpListener::bind(config.http.bind)
        .await
        .map_err(|e| format!("http.bind {}: {e}", config.http.bind))?;
    let http = listener.local_addr().map_err(|e| e.to_string())?;
    let router = api::router(app.clone());
    let https = match &config.http.tls {
        Some(t) => {
            let tls = https::server_config(&t.certificate, &t.private_key)
                .map_err(|e| format!("http.tls: {e}"))?;
            let listener = https::TlsListener::new(listener, tls).map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!(error = %e, "HTTPS server stopped");
                }
            });
            true
        }
        None => {
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!(error = %e, "HTTP server stopped");
                }
            });
            false
        }
    };
    Ok(Running {
        app,
        http,
        https,
        broker: ingest::broker_endpoint(&config),
        admin_token_file: token_file,
    })
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
