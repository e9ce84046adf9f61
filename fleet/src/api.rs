//! The REST API under `/api/v1`, the live feed (SSE), `/metrics` and `/healthz`.
//!
//! Every `/api/v1` route but `openapi.json` and `enroll` needs `Authorization: Bearer <admin
//! token>`; `enroll` is authorised by its one-time claim token.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use medgate_contract::{CommandAction, DeviceId, SiteId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;

use crate::app::App;
use crate::model::{
    CommandRecord, ConfigScope, Device, DeviceConfig, DeviceStatus, EventRecord, PeerRecord, Site,
    TelemetrySample,
};
use crate::ops::{ConfigApplied, Enrolled, NewClaim, OpError, SiteName, sha256_hex};
use crate::store::StoreError;

/// An error answer: `{"error": …, "problems": [...]}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, Value);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        let status = match &e {
            OpError::NotFound(_) => StatusCode::NOT_FOUND,
            OpError::Invalid(_) => StatusCode::BAD_REQUEST,
            OpError::InvalidConfig(_) => StatusCode::UNPROCESSABLE_ENTITY,
            OpError::Conflict(_) => StatusCode::CONFLICT,
            OpError::Forbidden(_) => StatusCode::FORBIDDEN,
            OpError::Store(_)
            | OpError::Publish(_)
            | OpError::Ca(_)
            | OpError::Crl { .. }
            | OpError::Random
            | OpError::Corrupt(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "API request failed");
        }
        let problems = match &e {
            OpError::InvalidConfig(p) => p.clone(),
            _ => vec![],
        };
        let body = ErrorBody {
            error: e.to_string(),
            problems,
        };
        ApiError(status, json!(body))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        OpError::Store(e).into()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, json!({"error": msg.into()}))
}

fn not_found(what: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        json!({"error": format!("no {what}")}),
    )
}

type ApiResult<T = Value> = Result<Json<T>, ApiError>;

/// An error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, and what to do.
    error: String,
    /// For a configuration the appliance refuses: one problem per line, `key: message`.
    problems: Vec<String>,
}

/// `GET /devices`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Devices {
    devices: Vec<Device>,
}

/// `GET /events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Events {
    events: Vec<EventRecord>,
}

/// `GET /devices/{id}/events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceEvents {
    device: String,
    /// Distinct events stored for the device.
    total: i64,
    events: Vec<EventRecord>,
}

/// `GET /devices/{id}/telemetry`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceTelemetry {
    device: String,
    samples: Vec<TelemetrySample>,
}

/// `GET /devices/{id}/peers`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DevicePeers {
    device: String,
    peers: Vec<PeerRecord>,
}

/// `GET /devices/{id}/commands`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceCommands {
    device: String,
    commands: Vec<CommandRecord>,
}

/// `GET /sites`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Sites {
    sites: Vec<Site>,
}

/// The router.
pub fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/devices", get(list_devices))
        .route("/devices/{id}", get(get_device).patch(patch_device))
        .route("/devices/{id}/approve", post(approve_device))
        .route("/devices/{id}/revoke", post(revoke_device))
        .route("/devices/{id}/decommission", post(decommission_device))
        .route("/devices/{id}/events", get(device_events))
        .route("/devices/{id}/telemetry", get(device_telemetry))
        .route("/devices/{id}/peers", get(device_peers))
        .route("/devices/{id}/peers/approve", post(approve_peer))
        .route(
            "/devices/{id}/config",
            get(device_config).put(put_device_config),
        )
        .route(
            "/devices/{id}/commands",
            get(device_commands).post(post_command),
        )
        .route("/commands/{id}", get(get_command))
        .route("/sites", get(list_sites))
        .route("/sites/{id}", put(put_site))
        .route("/sites/{id}/config", put(put_site_config))
        .route("/tags/{tag}/config", put(put_tag_config))
        .route("/events", get(list_events))
        .route("/claims", post(create_claim))
        .route("/live", get(live))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            require_admin,
        ))
        .route("/openapi.json", get(openapi_json))
        .route("/enroll", post(enroll));
    Router::new()
        .nest("/api/v1", api)
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(app)
}

#[utoipa::path(get, path = "/openapi.json", summary = "This document", responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
async fn openapi_json() -> Json<Value> {
    Json(crate::openapi::document())
}

async fn require_admin(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token {
        Some(t) if sha256_hex(t.trim().as_bytes()) == app.admin_token_sha256 => next.run(req).await,
        _ => ApiError(
            StatusCode::UNAUTHORIZED,
            json!({"error": "send `Authorization: Bearer <token>` with the admin token (file shown at start-up)"}),
        )
        .into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct SiteFilter {
    site: Option<String>,
}

#[utoipa::path(get, path = "/devices", summary = "List devices (optional ?site=) with connection, registry status, inventory and config drift", params(("site" = Option<String>, Query, description = "Only this site's devices")), responses((status = 200, body = Devices), (status = 401, description = "No or wrong admin token", body = ErrorBody)), security(("admin" = [])))]
async fn list_devices(
    State(app): State<Arc<App>>,
    Query(q): Query<SiteFilter>,
) -> ApiResult<Devices> {
    let devices = app.ops.devices(q.site.as_deref()).await?;
    Ok(Json(Devices { devices }))
}

#[utoipa::path(get, path = "/devices/{id}", summary = "One device", params(("id" = String, Path, description = "Device id")), responses((status = 200, body = Device), (status = 404, description = "Not found", body = ErrorBody), (status = 401, description = "No or wrong admin token", body = ErrorBody)), security(("admin" = [])))]
async fn get_device(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<Device> {
    found(app.ops.device(&id).await?, "such device")
}

/// `Some` as JSON, `None` as 404 `no <what>`.
fn found<T>(v: Option<T>, what: &str) -> ApiResult<T> {
    v.map(Json).ok_or_else(|| not_found(what))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DevicePatch {
    room: Option<String>,
    tags: Option<Vec<String>>,
}

#[utoipa::path(patch, path = "/devices/{id}", summary = "Set room and tags", params(("id" = String, Path, description = "Device id")), request_body = DevicePatch, responses((status = 200, body = Device), (status = 400, description = "Invalid request", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 401, description = "No or wrong admin token", body = ErrorBody)), security(("admin" = [])))]
async fn patch_device(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Json(p): Json<DevicePatch>,
) -> ApiResult<Device> {
    let d = app
        .ops
        .patch_device(&id, p.room.as_deref(), p.tags.as_deref())
        .await?;
    found(d, "such device")
}

#[utoipa::path(post, path = "/devices/{id}/approve", summary = "Approve a device (pending → approved)", params(("id" = String, Path, description = "Device id")), responses((status = 200, body = Device), (status = 404, description = "Not found", body = ErrorBody), (status = 401, description = "No or wrong admin token", body = ErrorBody)), security(("admin" = [])))]
async fn approve_device(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<Device> {
    found(
        app.ops.set_status(&id, DeviceStatus::Approved).await?,
        "such device",
    )
}

#[utoipa::path(post, path = "/devices/{id}/revoke", summary = "Revoke a device: its messages are refused, its certificate goes on the broker's revocation list", params(("id" = String, Path, description = "Device id")), responses((status = 200, body = Device), (status = 404, description = "Not found", body = ErrorBody), (status = 401, description = "No or wrong admin token", body = ErrorBody)), security(("admin" = [])))]
async fn revoke_device(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<Device> {
    found(
        app.ops.set_status(&id, DeviceStatus::Revoked).await?,
        "such device",
    )
}

#[utoipa::path(post, path = "/devices/{id}/decommission", summary = "Decommission a device", params(("id" = String, Path, description = "Device id")), responses((status = 200, body = Device), (status = 404, description = "Not found", body = ErrorBody), (status = 401, description = "No or wrong admin token", body = ErrorBody)), security(("admin" = [])))]
async fn decommission_device(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<Device> {
    found(
        app.ops
            .set_status(&id, DeviceStatus::Decommissioned)
            .await?,
        "such device",
    )
}

#[derive(Debug, Deserialize)]
struct EventQuery {
    device: Option<String>,
    since_ms: Option<i64>,
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/events", summary = "Events of every device (or ?device=), newest first", params(("device" = Option<String>, Query, description = "Only this device"), ("since_ms" = Option<i64>, Query, description = "Received at or after (Unix ms)"), ("limit" = Option<i64>, Query, description = "At most (default 100, up to 10,000)")), responses((status = 200, body = Events), (status = 401, description = "No or wrong admin token", body = ErrorBody)), security(("admin" = [])))]
async fn list_events(
    State(app): State<Arc<App>>,
    Query(q): Query<EventQuery>,
) -> ApiResult<Events> {
    let events = app
        .ops
        .events(q.device.as_deref(), q.since_ms.unwrap_or(0), q.limit)
        .await?;
    Ok(Json(Events { events }))
}

#[utoipa::path(get, path = "/devices/{id}/events", summary = "Events of a device, newest first, with their total", params(("id" = String, Path, description = "Device id"), ("since_ms" = Option<i64>, Query, description = "Received at or after (Unix ms)"), ("limit" = Option<i64>, Query, description = "At most (default 100, up to 10,000)")), responses((status = 200, body = DeviceEvents), (status = 401, description = "No or wrong admin token", body = ErrorBody)), security(("admin" = [])))]
async fn device_events(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<EventQuery>,
) -> ApiResult<DeviceEvents> {
    let events = app
        .ops
        .events(Some(&id), q.since_ms.unwrap_or(0), q.limit)
        .await?;
    let total = app.ops.event_count(&id).await?;
    Ok(Json(DeviceEvents {
        device: id,
        total,
        events,
    }))
}

#[derive(Debug, Deserialize)]
struct RangeQuery {
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/devices/{id}/telemetry", summary = "Telemetry history (raw samples and buckets), oldest first", params(("id" = String, Path, description = "Device id"), ("from_ms" = Option<i64>, Query, description = "From (Unix ms)"), ("to_ms" = Option<i64>, Query, description = "To (Unix ms)"), ("limit" = Option<i64>, Query, description = "At most (default 1000, up to 100,000)")), responses((status = 200, body = DeviceTelemetry), (status = 401, description = "No or wrong admin token", body = ErrorBody)), security(("admin" = [])))]
async fn device_telemetry(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<DeviceTelemetry> {
    let samples = app.ops.telemetry(&id, q.from_ms, q.to_ms, q.limit).await?;
    Ok(Json(DeviceTelemetry {
        device: id,
        samples,
    }))
}

#[utoipa::path(get, path = "/devices/{id}/peers", summary = "Calling AEs the device has seen", params(("id" = String, Path, description = "Device id")), responses((status = 200, body = DevicePeers), (status = 401, description = "No or wrong admin token", body = ErrorBody)), security(("admin" = [])))]
async fn device_peers(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<DevicePeers> {
    let peers = app.ops.peers(&id).await?;
    Ok(Json(DevicePeers { device: id, peers }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ApprovePeer {
    calling_ae: String,
}

#[utoipa::path(post, path = "/devices/{id}/peers/approve", summary = "Approve a calling AE: added to the device's allow-list through its desired configuration", params(("id" = String, Path, description = "Device id")), request_body = ApprovePeer, responses((status = 200, body = ConfigApplied), (status = 400, description = "Invalid request", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "No desired configuration", body = ErrorBody), (status = 401, description = "No or wrong admin token", body = ErrorBody)), security(("admin" = [])))]
async fn approve_peer(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Json(b): Json<ApprovePeer>,
) -> ApiResult<ConfigApplied> {
    Ok(Json(app.ops.approve_peer(&id, &b.calling_ae).await?))
}

#[utoipa::path(get, path = "/devices/{id}/config", summary = "Desired and reported configuration, with drift", params(("id" = String, Path, description = "Device id")), responses((status = 200, body = DeviceConfig), (status = 404, description = "Not found", body = ErrorBody), (status = 401, description = "No or wrong admin token", body = ErrorBody)), security(("admin" = [])))]
async fn device_config(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<DeviceConfig> {
    found(app.ops.device_config(&id).await?, "such device")
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ConfigBody {
    /// The appliance configuration (its TOML as JSON).
    #[schema(value_type = Object)]
    config: Value,
}

#[utoipa::path(put, path = "/devices/{id}/config", summary = "Set a device's desired configuration (the appliance TOML as JSON), validated by the appliance's code", params(("id" = String, Path, description = "Device id")), request_body = ConfigBody, responses((status = 200, body = ConfigApplied), (status = 400, description = "Invalid request", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 422, description = "Not valid for the appliance", body = ErrorBody), (status = 401, description = "No or wrong admin token", body = ErrorBody)), security(("admin" = [])))]
async fn put_device_config(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Json(b): Json<ConfigBody>,
) -> ApiResult<ConfigApplied> {
    Ok(Json(
        app.ops
            .put_config(ConfigScope::Device, &id, b.config)
            .await?,
    ))
}

#[utoipa::path(put, path = "/sites/{id}/config", summary = "Set a site's desired configuration", params(("id" = String, Path, description = "Site id")), request_body = ConfigBody, responses((status = 200, body = ConfigApplied), (status = 400, description = "Invalid request", body = ErrorBody), (status = 422, description = "Not valid for the appliance", body = ErrorBody), (status = 401, description = "No or wrong admin token", body = ErrorBody)), security(("admin" = [])))]
async fn put_site_config(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Json(b): Json<ConfigBody>,
) -> ApiResult<ConfigApplied> {
    Ok(Json(
        app.ops.put_config(ConfigScope::Site, &id, b.config).await?,
    ))
}

#[utoipa::path(put, path = "/tags/{tag}/config", summary = "Set the desired configuration of every device with a tag", params(("tag" = String, Path, description = "Tag")), request_body = ConfigBody, responses((status = 200, body = ConfigApplied), (status = 400, description = "Invalid request", body = ErrorBody), (status = 422, description = "Not valid for the appliance", body = ErrorBody), (status = 401, description = "No or wrong admin token", body = ErrorBody)), security(("admin" = [])))]
async fn put_tag_config(
    State(app): State<Arc<App>>,
    Path(tag): Path<String>,
    Json(b): Json<ConfigBody>,
) -> ApiResult<ConfigApplied> {
    Ok(Json(
        app.ops.put_config(ConfigScope::Tag, &tag, b.config).await?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    /// `{"type": "restart" | "retry_quarantine" | "purge_quarantine" | "collect_diagnostics" | "retry_now", …}`.
    #[schema(value_type = Object)]
    action: CommandAction,
    expires_in_secs: Option<u64>,
}

#[utoipa::path(post, path = "/devices/{id}/commands", summary = "Send a command; re-sent when the device next connects while queued", params(("id" = String, Path, description = "Device id")), request_body = CommandBody, responses((status = 201, body = CommandRecord), (status = 400, description = "Invalid request", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 401, description = "No or wrong admin token", body = ErrorBody)), security(("admin" = [])))]
async fn post_command(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Json(b): Json<CommandBody>,
) -> Result<(StatusCode, Json<CommandRecord>), ApiError> {
    let c = app
        .ops
        .create_command(&id, b.action, b.expires_in_secs.map(Duration::from_secs))
        .await?;
    Ok((StatusCode::CREATED, Json(c)))
}

#[utoipa::path(get, path = "/devices/{id}/commands", summary = "Commands of a device, newest first", params(("id" = String, Path, description = "Device id")), responses((status = 200, body = DeviceCommands), (status = 401, description = "No or wrong admin token", body = ErrorBody)), security(("admin" = [])))]
async fn device_commands(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<DeviceCommands> {
    let commands = app.ops.commands(&id).await?;
    Ok(Json(DeviceCommands {
        device: id,
        commands,
    }))
}

#[utoipa::path(get, path = "/commands/{id}", summary = "One command", params(("id" = String, Path, description = "Command id")), responses((status = 200, body = CommandRecord), (status = 404, description = "Not found", body = ErrorBody), (status = 401, description = "No or wrong admin token", body = ErrorBody)), security(("admin" = [])))]
async fn get_command(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<CommandRecord> {
    found(app.ops.command(&id).await?, "such command")
}

#[utoipa::path(get, path = "/sites", summary = "Sites with device counts", responses((status = 200, body = Sites), (status = 401, description = "No or wrong admin token", body = ErrorBody)), security(("admin" = [])))]
async fn list_sites(State(app): State<Arc<App>>) -> ApiResult<Sites> {
    Ok(Json(Sites {
        sites: app.ops.sites().await?,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SiteBody {
    name: String,
}

#[utoipa::path(put, path = "/sites/{id}", summary = "Create or rename a site", params(("id" = String, Path, description = "Site id")), request_body = SiteBody, responses((status = 200, body = SiteName), (status = 400, description = "Invalid request", body = ErrorBody), (status = 401, description = "No or wrong admin token", body = ErrorBody)), security(("admin" = [])))]
async fn put_site(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Json(b): Json<SiteBody>,
) -> ApiResult<SiteName> {
    let site = SiteId::new(id.as_str()).map_err(|e| bad(e.to_string()))?;
    Ok(Json(app.ops.put_site(&site, &b.name).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    site: String,
    device: String,
}

#[utoipa::path(post, path = "/claims", summary = "A one-time claim token for a device at a site", request_body = ClaimBody, responses((status = 201, body = NewClaim), (status = 400, description = "Invalid request", body = ErrorBody), (status = 409, description = "The device is registered at another site", body = ErrorBody), (status = 401, description = "No or wrong admin token", body = ErrorBody)), security(("admin" = [])))]
async fn create_claim(
    State(app): State<Arc<App>>,
    Json(b): Json<ClaimBody>,
) -> Result<(StatusCode, Json<NewClaim>), ApiError> {
    let site = SiteId::new(b.site.as_str()).map_err(|e| bad(e.to_string()))?;
    let device = DeviceId::new(b.device.as_str()).map_err(|e| bad(e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        Json(app.ops.create_claim(site, device).await?),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct EnrollBody {
    token: String,
    csr_pem: String,
}

#[utoipa::path(post, path = "/enroll", summary = "Enroll with a claim token: returns the device certificate, the CA and the broker", request_body = EnrollBody, responses((status = 200, body = Enrolled), (status = 400, description = "Invalid request", body = ErrorBody), (status = 403, description = "Claim token unknown, expired or used", body = ErrorBody)))]
async fn enroll(State(app): State<Arc<App>>, Json(b): Json<EnrollBody>) -> ApiResult<Enrolled> {
    Ok(Json(app.ops.enroll(&b.token, &b.csr_pem).await?))
}

#[utoipa::path(get, path = "/live", summary = "Live feed (text/event-stream): a full snapshot, then device, event and command changes", responses((status = 200, description = "Server-sent events", content_type = "text/event-stream", body = String), (status = 401, description = "No or wrong admin token", body = ErrorBody)), security(("admin" = [])))]
async fn live(
    State(app): State<Arc<App>>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    // Subscribe first, then take the snapshot: no change can fall between the two.
    let rx = app.ops.subscribe_live();
    let snapshot = app.ops.snapshot().await?.to_string();
    let stream = futures_util::stream::unfold(
        (Some(snapshot), rx, app),
        |(first, mut rx, app)| async move {
            if let Some(s) = first {
                return Some((
                    Ok(SseEvent::default().event("snapshot").data(s)),
                    (None, rx, app),
                ));
            }
            loop {
                match rx.recv().await {
                    Ok(msg) => {
                        let kind = serde_json::from_str::<Value>(&msg)
                            .ok()
                            .and_then(|v| v["type"].as_str().map(str::to_owned))
                            .unwrap_or_else(|| "change".into());
                        return Some((
                            Ok(SseEvent::default().event(kind).data(msg)),
                            (None, rx, app),
                        ));
                    }
                    // Too slow a reader: a new full snapshot replaces what it missed.
                    Err(RecvError::Lagged(_)) => match app.ops.snapshot().await {
                        Ok(s) => {
                            return Some((
                                Ok(SseEvent::default().event("snapshot").data(s.to_string())),
                                (None, rx, app),
                            ));
                        }
                        Err(_) => continue,
                    },
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let gauges = app.ops.store.gauges().await.unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(&gauges),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    //! The handlers over real operations (SQLite, a publisher in memory), through HTTP.

    use super::*;
    use crate::config::FleetConfig;
    use crate::publish::Publisher;
    use crate::store::Store;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    async fn serve() -> (String, tempfile::TempDir) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url, None).await.expect("connect");
        let ca = crate::ca::Ca::load_or_create(&dir.path().join("ca")).expect("ca");
        let ops = crate::ops::Ops::new(store, FleetConfig::default(), ca, Publisher::memory().0);
        let app = Arc::new(App::new(ops, sha256_hex(TOKEN.as_bytes())));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, router(app)).await });
        (base, dir)
    }

    async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
        let mut r = reqwest::Client::new()
            .request(method, url)
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn handlers_answer_with_the_operations_results_and_errors() {
        let (base, _dir) = serve().await;
        let anon = reqwest::get(format!("{base}/api/v1/devices"))
            .await
            .expect("get");
        assert_eq!(anon.status().as_u16(), 401);
        let (s, v) = call(
            reqwest::Method::GET,
            format!("{base}/api/v1/devices/nobody"),
            None,
        )
        .await;
        assert_eq!((s, v), (404, json!({"error": "no such device"})));
        let (s, v) = call(
            reqwest::Method::POST,
            format!("{base}/api/v1/claims"),
            Some(json!({"site": "s", "device": "d"})),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        assert_eq!(
            (v["site"].clone(), v["device"].clone()),
            (json!("s"), json!("d"))
        );
        assert_eq!(v["token"].as_str().map(str::len), Some(64));
        let (s, v) = call(
            reqwest::Method::POST,
            format!("{base}/api/v1/enroll"),
            Some(json!({"token": "unknown", "csr_pem": ""})),
        )
        .await;
        assert_eq!(s, 403, "{v}");
        let (s, v) = call(
            reqwest::Method::PUT,
            format!("{base}/api/v1/sites/s"),
            Some(json!({"name": "  "})),
        )
        .await;
        assert_eq!(s, 400, "{v}");
        let (s, v) = call(
            reqwest::Method::PUT,
            format!("{base}/api/v1/sites/s"),
            Some(json!({"name": " Main "})),
        )
        .await;
        assert_eq!((s, v), (200, json!({"id": "s", "name": "Main"})));
        let (s, v) = call(reqwest::Method::GET, format!("{base}/api/v1/sites"), None).await;
        assert_eq!(s, 200);
        assert_eq!(
            v,
            json!({"sites": [{"id": "s", "name": "Main", "created_ms": v["sites"][0]["created_ms"], "devices": 0, "online": 0}]})
        );
        let (s, v) = call(
            reqwest::Method::POST,
            format!("{base}/api/v1/devices/nobody/commands"),
            Some(json!({"action": {"type": "restart"}})),
        )
        .await;
        assert_eq!(s, 404, "{v}");
    }
}
