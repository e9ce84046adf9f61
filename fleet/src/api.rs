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
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::app::App;
use crate::model::{CommandRecord, ConfigScope, Device, DeviceConfig, DeviceStatus};
use crate::ops::{Enrolled, NewClaim, OpError, sha256_hex};
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
    let devices = app.ops.devices(q.site.as_deref()).await?;
    Ok(Json(json!({ "devices": devices })))
}

async fn get_device(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<Device> {
    found(app.ops.device(&id).await?, "such device")
}

/// `Some` as JSON, `None` as 404 `no <what>`.
fn found<T>(v: Option<T>, what: &str) -> ApiResult<T> {
    v.map(Json).ok_or_else(|| not_found(what))
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
    let d = app
        .ops
        .patch_device(&id, p.room.as_deref(), p.tags.as_deref())
        .await?;
    found(d, "such device")
}

async fn approve_device(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<Device> {
    found(
        app.ops.set_status(&id, DeviceStatus::Approved).await?,
        "such device",
    )
}

async fn revoke_device(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<Device> {
    found(
        app.ops.set_status(&id, DeviceStatus::Revoked).await?,
        "such device",
    )
}

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

async fn list_events(State(app): State<Arc<App>>, Query(q): Query<EventQuery>) -> ApiResult {
    let events = app
        .ops
        .events(q.device.as_deref(), q.since_ms.unwrap_or(0), q.limit)
        .await?;
    Ok(Json(json!({ "events": events })))
}

async fn device_events(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<EventQuery>,
) -> ApiResult {
    let events = app
        .ops
        .events(Some(&id), q.since_ms.unwrap_or(0), q.limit)
        .await?;
    let total = app.ops.event_count(&id).await?;
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
    let samples = app.ops.telemetry(&id, q.from_ms, q.to_ms, q.limit).await?;
    Ok(Json(json!({"device": id, "samples": samples})))
}

async fn device_peers(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    let peers = app.ops.peers(&id).await?;
    Ok(Json(json!({"device": id, "peers": peers})))
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
    Ok(Json(app.ops.approve_peer(&id, &b.calling_ae).await?))
}

async fn device_config(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<DeviceConfig> {
    found(app.ops.device_config(&id).await?, "such device")
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
        app.ops
            .put_config(ConfigScope::Device, &id, b.config)
            .await?,
    ))
}

async fn put_site_config(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Json(b): Json<ConfigBody>,
) -> ApiResult {
    Ok(Json(
        app.ops.put_config(ConfigScope::Site, &id, b.config).await?,
    ))
}

async fn put_tag_config(
    State(app): State<Arc<App>>,
    Path(tag): Path<String>,
    Json(b): Json<ConfigBody>,
) -> ApiResult {
    Ok(Json(
        app.ops.put_config(ConfigScope::Tag, &tag, b.config).await?,
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
        .ops
        .create_command(&id, b.action, b.expires_in_secs.map(Duration::from_secs))
        .await?;
    Ok((StatusCode::CREATED, Json(c)))
}

async fn device_commands(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    let commands = app.ops.commands(&id).await?;
    Ok(Json(json!({"device": id, "commands": commands})))
}

async fn get_command(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<CommandRecord> {
    found(app.ops.command(&id).await?, "such command")
}

async fn list_sites(State(app): State<Arc<App>>) -> ApiResult {
    Ok(Json(json!({"sites": app.ops.sites().await?})))
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
    Ok(Json(app.ops.put_site(&site, &b.name).await?))
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
) -> Result<(StatusCode, Json<NewClaim>), ApiError> {
    let site = SiteId::new(b.site.as_str()).map_err(|e| bad(e.to_string()))?;
    let device = DeviceId::new(b.device.as_str()).map_err(|e| bad(e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        Json(app.ops.create_claim(site, device).await?),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollBody {
    token: String,
    csr_pem: String,
}

async fn enroll(State(app): State<Arc<App>>, Json(b): Json<EnrollBody>) -> ApiResult<Enrolled> {
    Ok(Json(app.ops.enroll(&b.token, &b.csr_pem).await?))
}

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
