//! The local HTTP endpoint: `/healthz`, `/metrics`, and the JSON API the `status`, `peers` and
//! `quarantine` sub-commands use. Bound to loopback by default; it shows AE titles, counts and
//! UIDs of SOP classes, never patient data.

use crate::handle::App;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// `/api/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    /// Appliance name.
    pub name: String,
    /// Software version.
    pub version: String,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Healthy?
    pub healthy: bool,
    /// Why not.
    pub health_problem: Option<String>,
    /// Our AE title.
    pub ae_title: String,
    /// Plain DICOM address.
    pub bind: String,
    /// DICOM TLS address.
    pub tls_bind: Option<String>,
    /// Associations open now.
    pub associations_active: u64,
    /// Objects received since start.
    pub objects_received: u64,
    /// Bytes received since start.
    pub bytes_received: u64,
    /// Objects in the spool.
    pub spool_objects: u64,
    /// Bytes in the spool.
    pub spool_bytes: u64,
    /// What the watermarks are compared with: the fuller of the filesystem's use and the
    /// spool's bytes against `spool.max_bytes` (percent). See `spool` for each measure.
    pub spool_used_percent: f64,
    /// High watermark (percent).
    pub high_watermark_percent: f64,
    /// Free bytes on the spool filesystem.
    pub disk_free_bytes: u64,
    /// The spool's space, each measure named for what it is.
    #[serde(default)]
    pub spool: Option<SpoolStatus>,
    /// Where the running configuration comes from (the local file, or the fleet's version).
    #[serde(default)]
    pub config_source: crate::handle::ConfigSource,
    /// Per destination.
    pub destinations: Vec<DestinationStatus>,
    /// What start-up reconciliation found.
    pub startup: serde_json::Value,
    /// Hardware inventory and alarms (absent without a hardware profile).
    #[serde(default)]
    pub hardware: Option<serde_json::Value>,
    /// Coercion and routing rules in use (hash, label, counts; no element values).
    #[serde(default)]
    pub rules: crate::rules::RulesStatus,
    /// Workflow services (storage commitment, ...): counts and states, no patient data.
    #[serde(default)]
    pub workflow: serde_json::Value,
    /// Reporting to the fleet manager (absent without a fleet).
    #[serde(default)]
    pub fleet: Option<FleetStatus>,
    /// The update agent (absent without `[update]`): the version in force, the install under
    /// way or its outcome, and why it waits.
    #[serde(default)]
    pub update: Option<crate::update::view::UpdateStatus>,
}

/// The spool's space in `/api/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpoolStatus {
    /// Objects in the spool.
    pub objects: u64,
    /// Bytes of the spool's own object files.
    pub bytes: u64,
    /// `spool.max_bytes` (0: no cap).
    pub max_bytes: u64,
    /// The spool's bytes against that cap (percent), when set.
    pub cap_used_percent: Option<f64>,
    /// The spool filesystem's size.
    pub filesystem_bytes: u64,
    /// Bytes free on it for the appliance.
    pub filesystem_free_bytes: u64,
    /// Bytes in use on it, by everything.
    pub filesystem_used_bytes: u64,
    /// The whole filesystem's use as `df` shows it (percent): the spool and everything else.
    pub filesystem_used_percent: f64,
    /// New objects are refused (A700) at this use, after evicting confirmed ones.
    pub high_watermark_percent: f64,
    /// Confirmed objects are evicted early down to this use.
    pub low_watermark_percent: f64,
    /// Confirmed objects are kept this long.
    pub retention_hours: u64,
}

/// The fleet link in `/api/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetStatus {
    /// Connected to the broker now.
    pub connected: bool,
    /// Sessions since start.
    pub connects: u64,
    /// Messages waiting in the outbox (events until the fleet's receipt).
    pub outbox: u64,
    /// Messages confirmed since start (events by the fleet's receipt, others by the broker).
    pub acked: u64,
    /// Events sent again because the fleet's receipt did not come in time.
    #[serde(default)]
    pub resent: u64,
    /// Messages dropped because the outbox was full.
    pub dropped: u64,
}

/// One destination in `/api/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DestinationStatus {
    /// Name.
    pub name: String,
    /// dimse or stow.
    pub kind: String,
    /// Objects waiting.
    pub queue_depth: u64,
    /// Age of the oldest waiting object (s).
    pub oldest_age_secs: u64,
    /// Confirmed since start.
    pub forwarded: u64,
    /// In quarantine now.
    pub quarantined: u64,
    /// Answering?
    pub up: bool,
    /// Last failure (kept after a success, then with `last_error_cleared`).
    pub last_error: Option<String>,
    /// When the last failure happened (Unix milliseconds).
    #[serde(default)]
    pub last_error_at_ms: Option<u64>,
    /// How long ago (s).
    #[serde(default)]
    pub last_error_age_secs: Option<u64>,
    /// A send succeeded after the last failure: it is history, not the present state.
    #[serde(default)]
    pub last_error_cleared: bool,
}

/// The router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/status", get(status))
        .route("/api/peers", get(peers))
        .route("/api/quarantine", get(quarantine))
        .route("/api/qc", get(qc_flags))
        .route("/api/quarantine/retry", post(retry))
        .route("/api/retry-now", post(retry_now))
        .with_state(app)
}

async fn healthz(State(app): State<Arc<App>>) -> impl IntoResponse {
    match app.health() {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {why}\n"),
        ),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    // Queue gauges are read at scrape time, not as of the last housekeeping tick.
    for d in &app.hub().destinations {
        d.refresh_gauges();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics().render()
            + &app.workflow().render_metrics()
            + &app.listener().rules.render_metrics()
            + &fleet_metrics(&app)
            + &app.update().render_metrics(),
    )
}

/// Builds the status report.
pub fn report(app: &App) -> StatusReport {
    let u = app.spool().usage();
    let m = &app.metrics();
    let health = app.health();
    StatusReport {
        name: app.cfg().appliance.name.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: app.started().elapsed().as_secs(),
        healthy: health.is_ok(),
        health_problem: health.err(),
        ae_title: app.cfg().listener.ae_title.clone(),
        bind: app.cfg().listener.bind.to_string(),
        tls_bind: app.cfg().listener.tls_bind.map(|a| a.to_string()),
        associations_active: m.associations_active.load(Ordering::Relaxed),
        objects_received: m.objects_received.load(Ordering::Relaxed),
        bytes_received: m.bytes_received.load(Ordering::Relaxed),
        spool_objects: u.objects,
        spool_bytes: u.spool_bytes,
        spool_used_percent: u.used_percent,
        high_watermark_percent: app.cfg().spool.high_watermark_percent,
        disk_free_bytes: u.fs_free_bytes,
        spool: Some(SpoolStatus {
            objects: u.objects,
            bytes: u.spool_bytes,
            max_bytes: app.cfg().spool.max_bytes,
            cap_used_percent: u.cap_used_percent,
            filesystem_bytes: u.fs_total_bytes,
            filesystem_free_bytes: u.fs_free_bytes,
            filesystem_used_bytes: u.fs_used_bytes,
            filesystem_used_percent: u.fs_used_percent,
            high_watermark_percent: app.cfg().spool.high_watermark_percent,
            low_watermark_percent: app.cfg().spool.low_watermark_percent,
            retention_hours: app.cfg().spool.retention_hours,
        }),
        config_source: app.config_source(),
        destinations: app
            .hub()
            .destinations
            .iter()
            .map(|d| {
                let s = d.snapshot();
                let dm = m.destinations.get(&d.name);
                DestinationStatus {
                    name: d.name.clone(),
                    kind: d.kind.to_string(),
                    queue_depth: s.depth as u64,
                    oldest_age_secs: s.oldest_age_secs,
                    forwarded: dm.map_or(0, |x| x.forwarded.load(Ordering::Relaxed)),
                    quarantined: dm.map_or(0, |x| x.quarantined.load(Ordering::Relaxed)),
                    up: !s.down,
                    last_error_at_ms: s.last_error.as_ref().map(|e| e.at_ms),
                    last_error_age_secs: s.last_error.as_ref().map(|e| e.age_secs),
                    last_error_cleared: s.last_error.as_ref().is_some_and(|e| e.cleared),
                    last_error: s.last_error.map(|e| e.message),
                }
            })
            .collect(),
        startup: serde_json::to_value(app.reconcile()).unwrap_or_default(),
        hardware: app
            .hardware()
            .map(|h| serde_json::json!({ "inventory": h.inventory, "alarms": h.alarms })),
        rules: app.listener().rules.status(),
        workflow: app.workflow().status(),
        fleet: app.fleet_status().map(|f| FleetStatus {
            connected: f.connected,
            connects: f.connects,
            outbox: f.outbox_len as u64,
            acked: f.acked,
            resent: f.resent,
            dropped: f.outbox_dropped,
        }),
        update: app.update().get(),
    }
}

/// The fleet link's gauges (nothing without a fleet).
fn fleet_metrics(app: &App) -> String {
    let Some(f) = app.fleet_status() else {
        return String::new();
    };
    let mut o = String::new();
    for (name, kind, help, v) in [
        (
            "medgate_fleet_connected",
            "gauge",
            "1 while connected to the fleet's MQTT broker.",
            u64::from(f.connected),
        ),
        (
            "medgate_fleet_outbox_entries",
            "gauge",
            "Messages for the fleet waiting in the durable outbox.",
            f.outbox_len as u64,
        ),
        (
            "medgate_fleet_outbox_dropped_total",
            "counter",
            "Messages dropped because the outbox was full.",
            f.outbox_dropped,
        ),
        (
            "medgate_fleet_events_resent_total",
            "counter",
            "Events published again because the fleet's receipt did not come in time.",
            f.resent,
        ),
    ] {
        crate::metrics::write_metric(&mut o, name, kind, help, v);
    }
    o
}

async fn status(State(app): State<Arc<App>>) -> Json<StatusReport> {
    Json(report(&app))
}

/// `/api/qc?limit=N`.
#[derive(Debug, Deserialize)]
pub struct QcQuery {
    /// Most flags listed (newest first); default 1000.
    #[serde(default)]
    pub limit: Option<usize>,
}

async fn qc_flags(
    State(app): State<Arc<App>>,
    Query(q): Query<QcQuery>,
) -> axum::response::Response {
    let Some(service) = app.workflow().qc.clone() else {
        return (
            StatusCode::NOT_FOUND,
            "quality checks are off: add a [qc] section to the configuration (docs/workflow.md)\n",
        )
            .into_response();
    };
    let limit = q.limit.unwrap_or(1000).min(100_000);
    match tokio::task::spawn_blocking(move || (service.counts(), service.list(limit))).await {
        Ok((counts, flags)) => {
            Json(serde_json::json!({ "counts": counts, "flags": flags })).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Runs a blocking spool query and answers its result as JSON (500 with the error otherwise).
async fn spool_json<T, F>(query: F) -> axum::response::Response
where
    T: Serialize + Send + 'static,
    F: FnOnce() -> Result<T, medgate_spool::SpoolError> + Send + 'static,
{
    match tokio::task::spawn_blocking(query).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn peers(State(app): State<Arc<App>>) -> impl IntoResponse {
    let spool = app.spool().clone();
    spool_json(move || spool.peers()).await
}

async fn quarantine(State(app): State<Arc<App>>) -> impl IntoResponse {
    let spool = app.spool().clone();
    spool_json(move || spool.quarantined()).await
}

/// Query of `POST /api/quarantine/retry`.
#[derive(Debug, Deserialize)]
pub struct RetryQuery {
    /// One object, or all.
    pub id: Option<u64>,
    /// One destination, or all.
    pub destination: Option<String>,
}

/// Answer of `POST /api/quarantine/retry`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RetryResult {
    /// (object, destination) pairs queued again.
    pub requeued: usize,
}

async fn retry(State(app): State<Arc<App>>, Query(q): Query<RetryQuery>) -> impl IntoResponse {
    match app.retry_quarantine(q.id, q.destination.clone()).await {
        Ok(requeued) => {
            tracing::info!(requeued, id = ?q.id, destination = ?q.destination, "quarantine retried by an operator");
            Json(RetryResult { requeued }).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// Query of `POST /api/retry-now`.
#[derive(Debug, Deserialize)]
pub struct RetryNowQuery {
    /// One destination, or all.
    pub destination: Option<String>,
}

/// Answer of `POST /api/retry-now`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RetryNowResult {
    /// The destinations whose backoff waits were ended.
    pub destinations: Vec<String>,
}

async fn retry_now(
    State(app): State<Arc<App>>,
    Query(q): Query<RetryNowQuery>,
) -> axum::response::Response {
    let names: Vec<String> = app
        .hub()
        .destinations
        .iter()
        .map(|d| d.name.clone())
        .filter(|n| q.destination.as_ref().is_none_or(|d| d == n))
        .collect();
    if names.is_empty() {
        let known: Vec<&str> = app
            .hub()
            .destinations
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        return (
            StatusCode::NOT_FOUND,
            format!(
                "no destination {:?}; the configured ones are: {}\n",
                q.destination.unwrap_or_default(),
                known.join(", ")
            ),
        )
            .into_response();
    }
    app.hub().retry_now(q.destination.as_deref());
    Json(RetryNowResult {
        destinations: names,
    })
    .into_response()
}
