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
use medgate_contract::{CommandAction, DeviceId, SiteId, now_ms};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::app::{App, OpError, random_token, sha256_hex};
use crate::model::{CommandRecord, ConfigScope, Device, DeviceStatus};
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
            OpError::Store(_) | OpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "API request failed");
        }
        let problems = match &e {
            OpError::InvalidConfig(p) => p.clone(),
            _ => vec![],
        };
        ApiError(
            status,
            json!({"error": e.to_string(), "problems": problems}),
        )
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
        .route(
            "/openapi.json",
            get(|| async { Json(crate::openapi::document()) }),
        )
        .route("/enroll", post(enroll));
    Router::new()
        .nest("/api/v1", api)
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(app)
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

async fn list_devices(State(app): State<Arc<App>>, Query(q): Query<SiteFilter>) -> ApiResult {
    Ok(Json(
        json!({"devices": app.store.devices(q.site.as_deref()).await?}),
    ))
}

async fn get_device(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<Device> {
    app.store
        .device(&id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found("such device"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevicePatch {
    room: Option<String>,
    tags: Option<Vec<String>>,
}

async fn patch_device(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Json(p): Json<DevicePatch>,
) -> ApiResult<Device> {
    if app.store.registration(&id).await?.is_none() {
        return Err(not_found("such device"));
    }
    if let Some(tags) = &p.tags
        && let Some(t) = tags
            .iter()
            .find(|t| medgate_contract::Token::new(t.as_str()).is_err())
    {
        return Err(bad(format!("tag {t:?}: 1-64 characters A-Za-z0-9._:+~-")));
    }
    app.store
        .set_device_meta(&id, p.room.as_deref(), p.tags.as_deref())
        .await?;
    if p.tags.is_some() {
        app.refresh_desired(&id).await?;
    }
    app.live_device(&id).await;
    get_device(State(app), Path(id)).await
}

async fn set_status(app: Arc<App>, id: String, status: DeviceStatus) -> ApiResult<Device> {
    if !app
        .store
        .set_device_status(&id, status, now_ms() as i64)
        .await?
    {
        return Err(not_found("such device"));
    }
    tracing::info!(device = %id, %status, "device registry status changed");
    if let Err(e) = app.write_crl().await {
        tracing::error!(device = %id, error = %e, "the broker's revocation list was not updated");
    }
    app.live_device(&id).await;
    get_device(State(app), Path(id)).await
}

async fn approve_device(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<Device> {
    set_status(app, id, DeviceStatus::Approved).await
}

async fn revoke_device(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<Device> {
    set_status(app, id, DeviceStatus::Revoked).await
}

async fn decommission_device(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<Device> {
    set_status(app, id, DeviceStatus::Decommissioned).await
}

#[derive(Debug, Deserialize)]
struct EventQuery {
    device: Option<String>,
    since_ms: Option<i64>,
    limit: Option<i64>,
}

async fn list_events(State(app): State<Arc<App>>, Query(q): Query<EventQuery>) -> ApiResult {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    Ok(Json(
        json!({"events": app.store.events(q.device.as_deref(), q.since_ms.unwrap_or(0), limit).await?}),
    ))
}

async fn device_events(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<EventQuery>,
) -> ApiResult {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let events = app
        .store
        .events(Some(&id), q.since_ms.unwrap_or(0), limit)
        .await?;
    let total = app.store.event_count(&id).await?;
    Ok(Json(
        json!({"device": id, "total": total, "events": events}),
    ))
}

#[derive(Debug, Deserialize)]
struct RangeQuery {
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    limit: Option<i64>,
}

async fn device_telemetry(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> ApiResult {
    let to = q.to_ms.unwrap_or(i64::MAX);
    let from = q.from_ms.unwrap_or(0);
    let limit = q.limit.unwrap_or(1000).clamp(1, 100_000);
    Ok(Json(
        json!({"device": id, "samples": app.store.telemetry(&id, from, to, limit).await?}),
    ))
}

async fn device_peers(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(
        json!({"device": id, "peers": app.store.peers(&id).await?}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovePeer {
    calling_ae: String,
}

async fn approve_peer(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Json(b): Json<ApprovePeer>,
) -> ApiResult {
    Ok(Json(app.approve_peer(&id, &b.calling_ae).await?))
}

async fn device_config(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<crate::model::DeviceConfig> {
    if app.store.registration(&id).await?.is_none() {
        return Err(not_found("such device"));
    }
    Ok(Json(app.store.device_config(&id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigBody {
    config: Value,
}

async fn put_device_config(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Json(b): Json<ConfigBody>,
) -> ApiResult {
    Ok(Json(
        app.put_config(ConfigScope::Device, &id, b.config).await?,
    ))
}

async fn put_site_config(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Json(b): Json<ConfigBody>,
) -> ApiResult {
    SiteId::new(id.as_str()).map_err(|e| bad(e.to_string()))?;
    Ok(Json(
        app.put_config(ConfigScope::Site, &id, b.config).await?,
    ))
}

async fn put_tag_config(
    State(app): State<Arc<App>>,
    Path(tag): Path<String>,
    Json(b): Json<ConfigBody>,
) -> ApiResult {
    medgate_contract::Token::new(tag.as_str()).map_err(|e| bad(e.to_string()))?;
    Ok(Json(
        app.put_config(ConfigScope::Tag, &tag, b.config).await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    action: CommandAction,
    expires_in_secs: Option<u64>,
}

async fn post_command(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Json(b): Json<CommandBody>,
) -> Result<(StatusCode, Json<CommandRecord>), ApiError> {
    let c = app
        .create_command(&id, b.action, b.expires_in_secs.map(Duration::from_secs))
        .await?;
    Ok((StatusCode::CREATED, Json(c)))
}

async fn device_commands(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(
        json!({"device": id, "commands": app.store.commands(Some(&id), 500).await?}),
    ))
}

async fn get_command(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<CommandRecord> {
    app.store
        .command(&id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found("such command"))
}

async fn list_sites(State(app): State<Arc<App>>) -> ApiResult {
    Ok(Json(json!({"sites": app.store.sites().await?})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteBody {
    name: String,
}

async fn put_site(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Json(b): Json<SiteBody>,
) -> ApiResult {
    let site = SiteId::new(id.as_str()).map_err(|e| bad(e.to_string()))?;
    if b.name.trim().is_empty() || b.name.len() > 200 {
        return Err(bad("name: 1-200 characters"));
    }
    app.store
        .upsert_site(&site, b.name.trim(), now_ms() as i64)
        .await?;
    Ok(Json(json!({"id": site, "name": b.name.trim()})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    site: String,
    device: String,
}

async fn create_claim(
    State(app): State<Arc<App>>,
    Json(b): Json<ClaimBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let site = SiteId::new(b.site.as_str()).map_err(|e| bad(e.to_string()))?;
    let device = DeviceId::new(b.device.as_str()).map_err(|e| bad(e.to_string()))?;
    if let Some(reg) = app.store.registration(device.as_str()).await?
        && reg.site != site.as_str()
    {
        let s = reg.site;
        return Err(ApiError(
            StatusCode::CONFLICT,
            json!({"error": format!("device {device} is registered at site {s}")}),
        ));
    }
    let token = random_token()?;
    let now = now_ms() as i64;
    let expires = now + (app.config.devices.claim_token_hours * 3_600_000) as i64;
    app.store
        .create_claim(&sha256_hex(token.as_bytes()), &site, &device, expires, now)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": token, "site": site, "device": device, "expires_ms": expires})),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollBody {
    token: String,
    csr_pem: String,
}

async fn enroll(State(app): State<Arc<App>>, Json(b): Json<EnrollBody>) -> ApiResult {
    let now = now_ms() as i64;
    let Some(claim) = app
        .store
        .use_claim(&sha256_hex(b.token.trim().as_bytes()), now)
        .await?
    else {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            json!({"error": "claim token unknown, expired or already used; ask hospital IT for a new claim token"}),
        ));
    };
    let (site_id, device_id) = (claim.site, claim.device);
    let issued = app
        .ca
        .sign_device_csr(
            &b.csr_pem,
            device_id.as_str(),
            app.config.devices.certificate_days,
        )
        .map_err(|e| bad(format!("csr_pem: {e}")))?;
    app.store
        .enroll(&site_id, &device_id, &issued.serial, now)
        .await?;
    tracing::info!(device = %device_id, site = %site_id, serial = %issued.serial, "device enrolled");
    app.live_device(device_id.as_str()).await;
    let (host, port) = crate::ingest::broker_endpoint(&app.config);
    // The embedded broker speaks plain MQTT (lab and demo only); an external one speaks TLS.
    let broker_tls = app.config.broker.mode == crate::config::BrokerMode::External
        && app.config.broker.tls.is_some();
    Ok(Json(json!({
        "site": site_id, "device": device_id, "certificate_pem": issued.certificate_pem,
        "ca_pem": app.ca.cert_pem(), "broker": format!("{host}:{port}"), "broker_tls": broker_tls,
    })))
}

async fn live(
    State(app): State<Arc<App>>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    // Subscribe first, then take the snapshot: no change can fall between the two.
    let rx = app.subscribe_live();
    let snapshot = app.snapshot().await?.to_string();
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
                    Err(RecvError::Lagged(_)) => match app.snapshot().await {
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
    let gauges = app.store.gauges().await.unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(&gauges),
    )
        .into_response()
}
