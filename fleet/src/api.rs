//! The REST API under `/api/v1`, the live feed (SSE), `/metrics` and `/healthz`.
//!
//! Every route is in [`crate::auth::policy::ROUTES`] with the permission it needs; the router
//! is built from it ([`Routes`] refuses a route the table lacks) and one middleware
//! ([`guard`]) authenticates (session cookie, personal token, or the break-glass admin token),
//! checks CSRF on cookie-authenticated state changes, the permission and the site scope, then
//! hands the handler the [`Actor`]. Handlers parse, call one operation, serialise.

pub mod account;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{
    ConnectInfo, FromRequestParts, MatchedPath, Path, Query, RawPathParams, Request, State,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, patch, post, put};
use axum::{Extension, Json, Router};
use medgate_contract::{CommandAction, DeviceId, SiteId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;

use crate::app::App;
use crate::auth::policy::{self, Permission, Target, Verb};
use crate::auth::{Credential, Source, csrf};
use crate::model::{
    CommandRecord, ConfigScope, Device, DeviceConfig, DeviceStatus, EventRecord, PeerRecord, Site,
    TelemetrySample,
};
use crate::ops::{Actor, ConfigApplied, Enrolled, NewClaim, OpError, SiteName};
use crate::store::StoreError;
use crate::store::audit::Outcome;

/// An error answer: `{"error": …, "problems": [...]}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, Value);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = self.1["retry_after_secs"].as_u64();
        let mut r = (self.0, Json(self.1)).into_response();
        if let Some(secs) = retry
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
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
            OpError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            OpError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            OpError::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            OpError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
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
        let mut v = json!(body);
        if let OpError::Throttled { retry_after_secs } = &e {
            v["retry_after_secs"] = json!(retry_after_secs);
        }
        if let OpError::Refused { code, .. } = &e {
            v["code"] = json!(code);
        }
        ApiError(status, v)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        OpError::Store(e).into()
    }
}

fn error(status: StatusCode, msg: impl Into<String>) -> ApiError {
    ApiError(status, json!({"error": msg.into(), "problems": []}))
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

/// The router under construction: each route is added with its method and must be in the policy
/// table ([`policy::ROUTES`]), so none can be served without a permission.
#[derive(Debug)]
pub struct Routes {
    router: Router<Arc<App>>,
    /// (method, path) of every route added.
    pub added: Vec<(Verb, &'static str)>,
}

impl Routes {
    fn new() -> Routes {
        Routes {
            router: Router::new(),
            added: Vec::new(),
        }
    }

    /// Adds a route. Panics (at start, in every test) if the policy table lacks it.
    fn add(mut self, verb: Verb, path: &'static str, handler: MethodRouter<Arc<App>>) -> Routes {
        assert!(
            policy::route(&verb.method(), path).is_some(),
            "{verb} {path} is not in auth::policy::ROUTES: add it there with its permission"
        );
        self.added.push((verb, path));
        self.router = self.router.route(path, handler);
        self
    }
}

/// Every route with its handler (state and middleware are added by [`router`]).
pub fn routes() -> Routes {
    use Verb::{Delete as D, Get as G, Patch as Pa, Post as Po, Put as Pu};
    Routes::new()
        .add(G, "/healthz", get(|| async { "ok\n" }))
        .add(G, "/metrics", get(metrics))
        .add(
            G,
            crate::console::assets::HTMX_PATH,
            get(crate::console::htmx),
        )
        .add(
            G,
            crate::console::assets::CSS_PATH,
            get(crate::console::css),
        )
        .add(G, "/setup", get(crate::console::setup_page))
        .add(Po, "/setup", post(crate::console::setup_submit))
        .add(G, "/login", get(crate::console::signin::login_page))
        .add(Po, "/login", post(crate::console::signin::login_submit))
        .add(Po, "/logout", post(crate::console::signin::logout))
        .add(G, "/", get(crate::console::overview))
        .add(G, "/devices", get(crate::console::fleet::devices))
        .add(G, "/api/v1/openapi.json", get(openapi_json))
        .add(Po, "/api/v1/enroll", post(enroll))
        .add(Po, "/api/v1/auth/setup", post(account::setup))
        .add(Po, "/api/v1/auth/login", post(account::login))
        .add(Po, "/api/v1/auth/logout", post(account::logout))
        .add(G, "/api/v1/auth/me", get(account::me))
        .add(G, "/api/v1/auth/sessions", get(account::my_sessions))
        .add(
            D,
            "/api/v1/auth/sessions/{id}",
            delete(account::revoke_my_session),
        )
        .add(G, "/api/v1/tokens", get(account::my_tokens))
        .add(Po, "/api/v1/tokens", post(account::create_token))
        .add(D, "/api/v1/tokens/{id}", delete(account::revoke_token))
        .add(G, "/api/v1/users", get(account::list_users))
        .add(Po, "/api/v1/users", post(account::create_user))
        .add(Pa, "/api/v1/users/{name}", patch(account::patch_user))
        .add(
            G,
            "/api/v1/users/{name}/sessions",
            get(account::user_sessions),
        )
        .add(
            D,
            "/api/v1/users/{name}/sessions",
            delete(account::revoke_user_sessions),
        )
        .add(G, "/api/v1/audit", get(account::audit))
        .add(G, "/api/v1/devices", get(list_devices))
        .add(G, "/api/v1/devices/{id}", get(get_device))
        .add(Pa, "/api/v1/devices/{id}", patch(patch_device))
        .add(Po, "/api/v1/devices/{id}/approve", post(approve_device))
        .add(Po, "/api/v1/devices/{id}/revoke", post(revoke_device))
        .add(
            Po,
            "/api/v1/devices/{id}/decommission",
            post(decommission_device),
        )
        .add(G, "/api/v1/devices/{id}/events", get(device_events))
        .add(G, "/api/v1/devices/{id}/telemetry", get(device_telemetry))
        .add(G, "/api/v1/devices/{id}/peers", get(device_peers))
        .add(Po, "/api/v1/devices/{id}/peers/approve", post(approve_peer))
        .add(G, "/api/v1/devices/{id}/config", get(device_config))
        .add(Pu, "/api/v1/devices/{id}/config", put(put_device_config))
        .add(G, "/api/v1/devices/{id}/commands", get(device_commands))
        .add(Po, "/api/v1/devices/{id}/commands", post(post_command))
        .add(G, "/api/v1/commands/{id}", get(get_command))
        .add(G, "/api/v1/commands/{id}/file", get(get_command_file))
        .add(G, "/api/v1/sites", get(list_sites))
        .add(Pu, "/api/v1/sites/{id}", put(put_site))
        .add(Pu, "/api/v1/sites/{id}/config", put(put_site_config))
        .add(Pu, "/api/v1/tags/{tag}/config", put(put_tag_config))
        .add(G, "/api/v1/events", get(list_events))
        .add(Po, "/api/v1/claims", post(create_claim))
        .add(G, "/api/v1/live", get(live))
        // console-auth (issue 12): single sign-on and the account and administration pages.
        .add(G, "/auth/oidc/start", get(crate::console::signin::sso_start))
        .add(G, "/auth/oidc/callback", get(crate::console::signin::sso_callback))
        .add(G, "/users", get(crate::console::admin_pages::users_page))
        .add(Po, "/users", post(crate::console::admin_pages::users_create))
        .add(G, "/users/{name}", get(crate::console::admin_pages::user_page))
        .add(Po, "/users/{name}", post(crate::console::admin_pages::user_change))
        .add(
            Po,
            "/users/{name}/password",
            post(crate::console::admin_pages::user_password),
        )
        .add(
            Po,
            "/users/{name}/sessions/{id}/revoke",
            post(crate::console::admin_pages::user_session_revoke),
        )
        .add(G, "/tokens", get(crate::console::admin_pages::tokens_page))
        .add(Po, "/tokens", post(crate::console::admin_pages::tokens_create))
        .add(
            Po,
            "/tokens/{id}/revoke",
            post(crate::console::admin_pages::token_revoke),
        )
        .add(G, "/sessions", get(crate::console::admin_pages::sessions_page))
        .add(
            Po,
            "/sessions/{id}/revoke",
            post(crate::console::admin_pages::session_revoke),
        )
        .add(G, "/audit", get(crate::console::admin_pages::audit_page))
        // console-fleet: bulk actions, sites and rooms, claims.
        .add(Po, "/devices/bulk", post(crate::console::fleet::bulk))
        .add(G, "/sites", get(crate::console::fleet::sites))
        .add(Po, "/sites", post(crate::console::fleet::create_site))
        .add(G, "/sites/{id}", get(crate::console::fleet::site))
        .add(Po, "/sites/{id}", post(crate::console::fleet::save_site))
        .add(
            Po,
            "/sites/{id}/claims",
            post(crate::console::fleet::create_claim),
        )
        .add(
            Po,
            "/sites/{id}/provisioning",
            post(crate::console::fleet::provisioning),
        )
        // console: device page
        .add(
            G,
            crate::console::assets::UPLOT_JS_PATH,
            get(crate::console::uplot_js),
        )
        .add(
            G,
            crate::console::assets::UPLOT_CSS_PATH,
            get(crate::console::uplot_css),
        )
        .add(
            G,
            crate::console::assets::CHARTS_JS_PATH,
            get(crate::console::charts_js),
        )
        .add(G, "/devices/{id}", get(crate::console::device::device))
        .add(G, "/devices/{id}/live", get(crate::console::device::live))
        .add(
            G,
            "/devices/{id}/charts.json",
            get(crate::console::device::charts),
        )
        .add(
            Po,
            "/devices/{id}/config/check",
            post(crate::console::device::check),
        )
        .add(
            Po,
            "/devices/{id}/config",
            post(crate::console::device::save),
        )
        .add(
            Po,
            "/devices/{id}/command",
            post(crate::console::device::command),
        )
        .add(
            Po,
            "/devices/{id}/peers/approve",
            post(crate::console::device::approve_peer),
        )
        // alerts (issue 13 part 3).
        .add(G, "/alerts", get(crate::console::alerts::alerts))
        .add(
            Po,
            "/alerts/{id}/ack",
            post(crate::console::alerts::ack),
        )
        .add(
            Po,
            "/alerts/{id}/silence",
            post(crate::console::alerts::silence),
        )
        // ota (issue 14): the Updates pages.
        .add(G, "/updates", get(crate::console::updates::updates))
        .add(Po, "/updates/campaigns", post(crate::console::updates::create))
        .add(
            G,
            "/updates/campaigns/{id}",
            get(crate::console::updates::campaign),
        )
        .add(
            G,
            "/updates/campaigns/{id}/live",
            get(crate::console::updates::live),
        )
        .add(
            Po,
            "/updates/campaigns/{id}/{action}",
            post(crate::console::updates::command),
        )
        .add(
            G,
            crate::console::assets::UPDATES_JS_PATH,
            get(crate::console::updates_js),
        )
        // analytics (issue 13 part 2).
        .add(G, "/analytics", get(crate::console::analytics::summary))
        .add(G, "/analytics/daily", get(crate::console::analytics::daily))
        .add(
            G,
            crate::console::assets::ANALYTICS_JS_PATH,
            get(crate::console::analytics_js),
        )
        .add(G, "/api/v1/analytics/overview", get(analytics_overview))
        .add(G, "/api/v1/analytics/daily", get(analytics_daily))
        .add(G, "/api/v1/analytics/trend", get(analytics_trend))
        .add(G, "/api/v1/analytics/devices", get(analytics_devices))
        .add(G, "/api/v1/analytics/delay", get(analytics_delay))
        .add(G, "/api/v1/alerts", get(list_alerts))
        .add(Po, "/api/v1/alerts/{id}/ack", post(ack_alert))
        .add(Po, "/api/v1/alerts/{id}/silence", post(silence_alert))
        // wall (issue 13 part 1): display links, the wall and its live stream.
        .add(G, "/displays", get(crate::wall::http::displays_page))
        .add(Po, "/displays", post(crate::wall::http::displays_create))
        .add(
            Po,
            "/displays/{id}/revoke",
            post(crate::wall::http::displays_revoke),
        )
        .add(G, crate::wall::page::JS_PATH, get(crate::wall::http::js))
        .add(G, crate::wall::page::CSS_PATH, get(crate::wall::http::css))
        .add(G, "/wall/{token}", get(crate::wall::http::wall))
        .add(G, "/wall/{token}/events", get(crate::wall::http::events))
        // ota (issue 14 part 2): bundles and update campaigns.
        .add(Po, "/api/v1/bundles", post(upload_bundle))
        .add(G, "/api/v1/bundles", get(list_bundles))
        .add(G, "/api/v1/bundles/{id}", get(get_bundle))
        .add(Po, "/api/v1/campaigns", post(create_campaign))
        .add(G, "/api/v1/campaigns", get(list_campaigns))
        .add(G, "/api/v1/campaigns/{id}", get(get_campaign))
        .add(Po, "/api/v1/campaigns/{id}/approve", post(approve_campaign))
        .add(Po, "/api/v1/campaigns/{id}/pause", post(pause_campaign))
        .add(Po, "/api/v1/campaigns/{id}/resume", post(resume_campaign))
        .add(Po, "/api/v1/campaigns/{id}/cancel", post(cancel_campaign))
}

// ota (issue 14 part 2): bundles and update campaigns.

/// `GET /bundles`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Bundles {
    bundles: Vec<crate::store::ota::BundleRecord>,
}

/// `GET /campaigns`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Campaigns {
    campaigns: Vec<crate::ops::ota::CampaignView>,
}

#[utoipa::path(post, path = "/bundles", summary = "Upload a signed update bundle (the raw .mgb file as the body): verified with [updates] trust_file (signatures, threshold, rotated-out keys, expiry, countersignature, payload hash) and stored; audited as update.bundle_upload", request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The .mgb file"), responses((status = 201, description = "Stored", body = crate::store::ota::BundleRecord), (status = 200, description = "Already stored: the same record", body = crate::store::ota::BundleRecord), (status = 400, description = "Empty or broken body", body = ErrorBody), (status = 409, description = "No trust store configured", body = ErrorBody), (status = 413, description = "Larger than [updates] max_bundle_mib", body = ErrorBody), (status = 422, description = "Refused: `code` says why (bad_signature, bundle_expired, …)", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not an admin", body = ErrorBody)), security(("admin" = [])))]
async fn upload_bundle(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let (rec, new) = app
        .ops
        .upload_bundle(&actor, body.into_data_stream())
        .await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(rec)).into_response())
}

#[utoipa::path(get, path = "/bundles", summary = "Stored update bundles, newest upload first", responses((status = 200, body = Bundles), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role", body = ErrorBody)), security(("admin" = [])))]
async fn list_bundles(State(app): State<Arc<App>>) -> ApiResult<Bundles> {
    Ok(Json(Bundles {
        bundles: app.ops.bundles().await?,
    }))
}

#[utoipa::path(get, path = "/bundles/{id}", summary = "One stored bundle", params(("id" = String, Path, description = "The bundle file's SHA-256")), responses((status = 200, body = crate::store::ota::BundleRecord), (status = 400, description = "Not a SHA-256", body = ErrorBody), (status = 404, description = "Not stored", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role", body = ErrorBody)), security(("admin" = [])))]
async fn get_bundle(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<crate::store::ota::BundleRecord> {
    Ok(Json(app.ops.bundle(&id).await?))
}

#[utoipa::path(post, path = "/campaigns", summary = "Create an update campaign (a draft until approved): targets by site, tag, current version and hardware; canary devices, then cumulative wave shares; soak, failure threshold, soft or forced with a deadline, maintenance windows per site; audited as update.campaign_create", request_body = crate::ops::ota::NewCampaign, responses((status = 201, body = crate::ops::ota::CampaignView), (status = 400, description = "Invalid campaign (the message names the field)", body = ErrorBody), (status = 404, description = "No such bundle", body = ErrorBody), (status = 409, description = "A device is in another live campaign, or [updates] download_url is not set", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not an admin", body = ErrorBody)), security(("admin" = [])))]
async fn create_campaign(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: crate::ops::ota::NewCampaign = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "expected {{\"name\", \"bundle\": sha256, \"targets\", \"canary\", \"wave_shares\", \"soak_secs\", \"failure_threshold_pct\", \"mode\", \"deadline_ms\", \"windows\"}}: {e}"
        ))
    })?;
    let v = app.ops.create_campaign(&actor, req).await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

#[utoipa::path(get, path = "/campaigns", summary = "Update campaigns with a device in your sites, newest first, each with its devices there", responses((status = 200, body = Campaigns), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role", body = ErrorBody)), security(("admin" = [])))]
async fn list_campaigns(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
) -> ApiResult<Campaigns> {
    Ok(Json(Campaigns {
        campaigns: app.ops.campaigns(&actor.principal.sites).await?,
    }))
}

#[utoipa::path(get, path = "/campaigns/{id}", summary = "One update campaign with the state, code, version and running version of each of its devices in your sites", params(("id" = String, Path, description = "Campaign id")), responses((status = 200, body = crate::ops::ota::CampaignView), (status = 404, description = "Not found (or none of its devices in your sites)", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role", body = ErrorBody)), security(("admin" = [])))]
async fn get_campaign(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<crate::ops::ota::CampaignView> {
    Ok(Json(
        app.ops.campaign_view(&actor.principal.sites, &id).await?,
    ))
}

async fn campaign_command(
    app: &App,
    actor: &Actor,
    id: &str,
    cmd: crate::ops::ota::CampaignCommand,
) -> ApiResult<crate::ops::ota::CampaignView> {
    Ok(Json(app.ops.campaign_command(actor, id, cmd).await?))
}

#[utoipa::path(post, path = "/campaigns/{id}/approve", summary = "Approve a draft campaign: it offers its first wave (audited as update.campaign_approve)", params(("id" = String, Path, description = "Campaign id")), responses((status = 200, body = crate::ops::ota::CampaignView), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "Not a draft (the message says what to do)", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not an admin", body = ErrorBody)), security(("admin" = [])))]
async fn approve_campaign(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<crate::ops::ota::CampaignView> {
    campaign_command(&app, &actor, &id, crate::ops::ota::CampaignCommand::Approve).await
}

#[utoipa::path(post, path = "/campaigns/{id}/pause", summary = "Pause a running campaign: nothing new is offered (audited as update.campaign_pause)", params(("id" = String, Path, description = "Campaign id")), responses((status = 200, body = crate::ops::ota::CampaignView), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "Not running", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not an admin", body = ErrorBody)), security(("admin" = [])))]
async fn pause_campaign(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<crate::ops::ota::CampaignView> {
    campaign_command(&app, &actor, &id, crate::ops::ota::CampaignCommand::Pause).await
}

#[utoipa::path(post, path = "/campaigns/{id}/resume", summary = "Resume a paused campaign, past the failures so far (audited as update.campaign_resume)", params(("id" = String, Path, description = "Campaign id")), responses((status = 200, body = crate::ops::ota::CampaignView), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "Not paused", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not an admin", body = ErrorBody)), security(("admin" = [])))]
async fn resume_campaign(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<crate::ops::ota::CampaignView> {
    campaign_command(&app, &actor, &id, crate::ops::ota::CampaignCommand::Resume).await
}

#[utoipa::path(post, path = "/campaigns/{id}/cancel", summary = "Cancel a campaign: offers not yet installed are withdrawn (audited as update.campaign_cancel)", params(("id" = String, Path, description = "Campaign id")), responses((status = 200, body = crate::ops::ota::CampaignView), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "Completed or cancelled already", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not an admin", body = ErrorBody)), security(("admin" = [])))]
async fn cancel_campaign(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<crate::ops::ota::CampaignView> {
    campaign_command(&app, &actor, &id, crate::ops::ota::CampaignCommand::Cancel).await
}

/// alerts (issue 13 part 3): `GET /alerts`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Alerts {
    alerts: Vec<crate::model::Alert>,
}

/// alerts: the listing's filters.
#[derive(Debug, Deserialize)]
struct AlertQuery {
    site: Option<String>,
    state: Option<String>,
    device: Option<String>,
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/alerts", summary = "Alerts in your sites: firing first (newest first), then resolved", params(("site" = Option<String>, Query, description = "Only this site's"), ("state" = Option<String>, Query, description = "firing or resolved"), ("device" = Option<String>, Query, description = "Only this device's"), ("limit" = Option<i64>, Query, description = "At most (default 500)")), responses((status = 200, body = Alerts), (status = 400, description = "Invalid filter", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn list_alerts(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<AlertQuery>,
) -> ApiResult<Alerts> {
    let f = crate::store::alerts::AlertFilter {
        site: q.site.filter(|s| !s.is_empty()),
        state: crate::ops::alerts::state_filter(q.state.as_deref())?,
        device: q.device.filter(|s| !s.is_empty()),
        limit: q.limit,
    };
    let alerts = app.ops.alerts(&actor.principal.sites, &f).await?;
    Ok(Json(Alerts { alerts }))
}

#[utoipa::path(post, path = "/alerts/{id}/ack", summary = "Acknowledge an alert (audited as alert.ack)", params(("id" = String, Path, description = "Alert id")), responses((status = 200, body = crate::model::Alert), (status = 404, description = "Not found", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn ack_alert(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<crate::model::Alert> {
    Ok(Json(app.ops.ack_alert(&actor, &id).await?))
}

/// alerts: `POST /alerts/{id}/silence`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Silence {
    /// Hold notifications this long (0 lifts the silence; at most 10080, a week).
    minutes: u64,
}

#[utoipa::path(post, path = "/alerts/{id}/silence", summary = "Silence an alert's notifications for a while (audited as alert.silence)", params(("id" = String, Path, description = "Alert id")), request_body = Silence, responses((status = 200, body = crate::model::Alert), (status = 400, description = "Invalid duration", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn silence_alert(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<crate::model::Alert> {
    let s: Silence = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("expected {{\"minutes\": N}}: {e}")))?;
    Ok(Json(app.ops.silence_alert(&actor, &id, s.minutes).await?))
}

// analytics (issue 13 part 2): the region's numbers, read from the rollups, within the
// caller's sites (`?site=` narrows to one of them; another is 403).

#[utoipa::path(get, path = "/analytics/overview", summary = "The region this year: studies, images and bytes, per hospital", params(("site" = Option<String>, Query, description = "Only this site"), ("to" = Option<String>, Query, description = "The year of this day, up to it (YYYY-MM-DD, default today UTC)")), responses((status = 200, body = crate::analytics::report::Overview), (status = 400, description = "Invalid date", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn analytics_overview(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<crate::ops::analytics::AnalyticsQuery>,
) -> ApiResult<crate::analytics::report::Overview> {
    Ok(Json(
        app.ops
            .analytics_overview(&actor.principal.sites, &q)
            .await?,
    ))
}

#[utoipa::path(get, path = "/analytics/daily", summary = "Studies and images per hospital, UTC day and modality (default the last 7 days, at most 92)", params(("site" = Option<String>, Query, description = "Only this site"), ("from" = Option<String>, Query, description = "First day, YYYY-MM-DD"), ("to" = Option<String>, Query, description = "Last day, YYYY-MM-DD (default today)"), ("days" = Option<String>, Query, description = "The last N days, when from is not given (1-92)")), responses((status = 200, body = crate::analytics::report::Daily), (status = 400, description = "Invalid range", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn analytics_daily(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<crate::ops::analytics::AnalyticsQuery>,
) -> ApiResult<crate::analytics::report::Daily> {
    Ok(Json(
        app.ops.analytics_daily(&actor.principal.sites, &q).await?,
    ))
}

#[utoipa::path(get, path = "/analytics/trend", summary = "Studies and images per day per hospital, every day present (default the last 30 days)", params(("site" = Option<String>, Query, description = "Only this site"), ("from" = Option<String>, Query, description = "First day, YYYY-MM-DD"), ("to" = Option<String>, Query, description = "Last day, YYYY-MM-DD (default today)"), ("days" = Option<String>, Query, description = "The last N days: 7, 30, 365 … (1-731)")), responses((status = 200, body = crate::analytics::report::Trend), (status = 400, description = "Invalid range", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn analytics_trend(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<crate::ops::analytics::AnalyticsQuery>,
) -> ApiResult<crate::analytics::report::Trend> {
    Ok(Json(
        app.ops.analytics_trend(&actor.principal.sites, &q).await?,
    ))
}

#[utoipa::path(get, path = "/analytics/devices", summary = "Appliances by hospital and modality that received studies (default the last 30 days), and those registered", params(("site" = Option<String>, Query, description = "Only this site"), ("from" = Option<String>, Query, description = "First day, YYYY-MM-DD"), ("to" = Option<String>, Query, description = "Last day, YYYY-MM-DD (default today)"), ("days" = Option<String>, Query, description = "The last N days (1-731)")), responses((status = 200, body = crate::analytics::report::Devices), (status = 400, description = "Invalid range", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn analytics_devices(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<crate::ops::analytics::AnalyticsQuery>,
) -> ApiResult<crate::analytics::report::Devices> {
    Ok(Json(
        app.ops
            .analytics_devices(&actor.principal.sites, &q)
            .await?,
    ))
}

#[utoipa::path(get, path = "/analytics/delay", summary = "Forwarding delay (C-STORE success at the appliance to archive confirmation) p50/p95/p99 per hospital (default the last 7 days)", params(("site" = Option<String>, Query, description = "Only this site"), ("from" = Option<String>, Query, description = "First day, YYYY-MM-DD"), ("to" = Option<String>, Query, description = "Last day, YYYY-MM-DD (default today)"), ("days" = Option<String>, Query, description = "The last N days (1-731)")), responses((status = 200, body = crate::analytics::report::Delays), (status = 400, description = "Invalid range", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn analytics_delay(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<crate::ops::analytics::AnalyticsQuery>,
) -> ApiResult<crate::analytics::report::Delays> {
    Ok(Json(
        app.ops.analytics_delays(&actor.principal.sites, &q).await?,
    ))
}

/// The router: [`routes`] behind [`guard`].
pub fn router(app: Arc<App>) -> Router {
    routes()
        .router
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// The TCP peer of a connection (axum's connect info), over HTTP or HTTPS.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for Peer
{
    fn connect_info(s: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Peer {
        Peer(*s.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<
        axum::serve::IncomingStream<'_, crate::https::TlsListener>,
    > for Peer
{
    fn connect_info(s: axum::serve::IncomingStream<'_, crate::https::TlsListener>) -> Peer {
        Peer(*s.remote_addr())
    }
}

/// Largest form body the guard reads to find a CSRF field.
const FORM_LIMIT: usize = 64 * 1024;

/// The one middleware: the route's policy entry decides (see the module's documentation).
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(path) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
    else {
        return next.run(req).await;
    };
    let Some(route) = policy::route(req.method(), &path) else {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not served on {path}", req.method()),
        )
        .into_response();
    };
    let source = Source(
        req.extensions()
            .get::<ConnectInfo<Peer>>()
            .map(|c| c.0.0.ip()),
    );
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(source);
    if route.permission == Permission::Public {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let principal = match authenticate(&app, &parts.headers).await {
        Ok(Some(p)) => p,
        Ok(None) if route.is_page() => {
            // console-auth (issue 12): a session cookie that no longer holds says so on the
            // login page.
            let ended = parts.headers.get_all(header::COOKIE).iter().any(|c| {
                c.to_str()
                    .ok()
                    .and_then(crate::auth::session::from_cookie_header)
                    .is_some()
            });
            let to = if ended { "/login?ended=1" } else { "/login" };
            return (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
        }
        Ok(None) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "log in (POST /api/v1/auth/login) or send `Authorization: Bearer <token>` with a personal API token",
            )
            .into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let actor = Actor::new(principal, source.0);
    let target_text = format!("{} {path}", route.verb);
    // CSRF: a cookie-authenticated request that changes state carries the session's token.
    let mut body = axum::body::Body::new(body);
    if let Credential::Session { csrf: expected, .. } = &actor.principal.credential
        && csrf::changes_state(&parts.method)
    {
        let mut sent = parts
            .headers
            .get(csrf::HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if sent.is_none() && form {
            let Ok(bytes) = axum::body::to_bytes(body, FORM_LIMIT).await else {
                return error(StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response();
            };
            sent = form_field(&bytes, csrf::FORM_FIELD);
            body = axum::body::Body::from(bytes);
        }
        if !csrf::matches(sent.as_deref(), expected) {
            app.ops
                .audit(&actor, "csrf", &target_text, Outcome::Denied, None, None)
                .await;
            if route.is_page() {
                return crate::console::error_page(
                    StatusCode::FORBIDDEN,
                    "this form is out of date or did not come from this console; reload the page and try again",
                    Some(&actor.principal),
                );
            }
            return error(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token: send the session's token (GET /api/v1/auth/me) in the X-CSRF-Token header",
            )
            .into_response();
        }
    }
    if !policy::permits(&actor.principal, route) {
        if csrf::changes_state(&parts.method) {
            app.ops
                .audit(&actor, "access", &target_text, Outcome::Denied, None, None)
                .await;
        }
        let msg = format!(
            "your role {} may not {} {path}; ask an admin for a role that may",
            actor.principal.role, route.verb
        );
        if route.is_page() {
            return crate::console::error_page(StatusCode::FORBIDDEN, &msg, Some(&actor.principal));
        }
        return error(StatusCode::FORBIDDEN, msg).into_response();
    }
    if let Err(resp) = check_scope(&app, &actor, route.target, &mut parts).await {
        if csrf::changes_state(&parts.method) {
            app.ops
                .audit(
                    &actor,
                    "access",
                    &target_text,
                    Outcome::Denied,
                    None,
                    Some(json!({"reason": "site scope"}).to_string()),
                )
                .await;
        }
        return resp;
    }
    parts.extensions.insert(actor);
    next.run(Request::from_parts(parts, body)).await
}

/// A field of an `application/x-www-form-urlencoded` body, as sent (not percent-decoded: the
/// CSRF token is hexadecimal, which a form never encodes; anything else does not match).
fn form_field(body: &[u8], name: &str) -> Option<String> {
    let body = std::str::from_utf8(body).ok()?;
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The principal of a request: a session cookie, else a bearer token.
async fn authenticate(
    app: &App,
    headers: &HeaderMap,
) -> Result<Option<crate::auth::Principal>, OpError> {
    if let Some(t) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return app
            .ops
            .authenticate_bearer(t, &app.admin_token_sha256)
            .await;
    }
    for cookie in headers.get_all(header::COOKIE) {
        if let Some(secret) = cookie
            .to_str()
            .ok()
            .and_then(crate::auth::session::from_cookie_header)
        {
            return app.ops.authenticate_session(secret).await;
        }
    }
    Ok(None)
}

/// The site-scope check of a route's [`Target`].
async fn check_scope(
    app: &App,
    actor: &Actor,
    target: Target,
    parts: &mut axum::http::request::Parts,
) -> Result<(), Response> {
    let scope = &actor.principal.sites;
    let id = match RawPathParams::from_request_parts(parts, &()).await {
        Ok(p) => p
            .iter()
            .find(|(k, _)| *k == "id")
            .map(|(_, v)| v.to_owned()),
        Err(_) => None,
    };
    let failed = |e: OpError| ApiError::from(e).into_response();
    match target {
        Target::None | Target::Filtered => Ok(()),
        Target::Device => match id {
            Some(id) if app.ops.device_in_scope(scope, &id).await.map_err(failed)? => Ok(()),
            _ => Err(not_found("such device").into_response()),
        },
        Target::Command => match id {
            Some(id) if app.ops.command_in_scope(scope, &id).await.map_err(failed)? => Ok(()),
            _ => Err(not_found("such command").into_response()),
        },
        // alerts (issue 13 part 3).
        Target::Alert => match id {
            Some(id) if app.ops.alert_in_scope(scope, &id).await.map_err(failed)? => Ok(()),
            _ => Err(not_found("such alert").into_response()),
        },
        Target::Site => {
            let id = id.unwrap_or_default();
            actor.check_site(&id).map_err(failed)
        }
        Target::QueryDevice => {
            let device = Query::<DeviceQuery>::try_from_uri(&parts.uri)
                .map(|q| q.0.device)
                .unwrap_or_default();
            match device {
                Some(d) if app.ops.device_in_scope(scope, &d).await.map_err(failed)? => Ok(()),
                Some(_) => Err(not_found("such device").into_response()),
                // Without ?device=, the operation filters to the scope.
                None => Ok(()),
            }
        }
        Target::AllSites => {
            if scope.is_all() {
                Ok(())
            } else {
                Err(error(
                    StatusCode::FORBIDDEN,
                    "this reaches devices of every site; your user is limited to some sites",
                )
                .into_response())
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct DeviceQuery {
    device: Option<String>,
}

#[utoipa::path(get, path = "/openapi.json", summary = "This document", responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
async fn openapi_json() -> Json<Value> {
    Json(crate::openapi::document())
}

#[derive(Debug, Deserialize)]
struct SiteFilter {
    site: Option<String>,
}

#[utoipa::path(get, path = "/devices", summary = "List devices (optional ?site=) with connection, registry status, inventory and config drift", params(("site" = Option<String>, Query, description = "Only this site's devices")), responses((status = 200, body = Devices), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn list_devices(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<SiteFilter>,
) -> ApiResult<Devices> {
    let devices = app
        .ops
        .devices(&actor.principal.sites, q.site.as_deref())
        .await?;
    Ok(Json(Devices { devices }))
}

#[utoipa::path(get, path = "/devices/{id}", summary = "One device", params(("id" = String, Path, description = "Device id")), responses((status = 200, body = Device), (status = 404, description = "Not found", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
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

#[utoipa::path(patch, path = "/devices/{id}", summary = "Set room and tags", params(("id" = String, Path, description = "Device id")), request_body = DevicePatch, responses((status = 200, body = Device), (status = 400, description = "Invalid request", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn patch_device(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Json(p): Json<DevicePatch>,
) -> ApiResult<Device> {
    let d = app
        .ops
        .patch_device(&actor, &id, p.room.as_deref(), p.tags.as_deref())
        .await?;
    found(d, "such device")
}

#[utoipa::path(post, path = "/devices/{id}/approve", summary = "Approve a device (pending → approved)", params(("id" = String, Path, description = "Device id")), responses((status = 200, body = Device), (status = 404, description = "Not found", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn approve_device(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<Device> {
    found(
        app.ops
            .set_status(&actor, &id, DeviceStatus::Approved)
            .await?,
        "such device",
    )
}

#[utoipa::path(post, path = "/devices/{id}/revoke", summary = "Revoke a device: its messages are refused, its certificate goes on the broker's revocation list", params(("id" = String, Path, description = "Device id")), responses((status = 200, body = Device), (status = 404, description = "Not found", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn revoke_device(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<Device> {
    found(
        app.ops
            .set_status(&actor, &id, DeviceStatus::Revoked)
            .await?,
        "such device",
    )
}

#[utoipa::path(post, path = "/devices/{id}/decommission", summary = "Decommission a device", params(("id" = String, Path, description = "Device id")), responses((status = 200, body = Device), (status = 404, description = "Not found", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn decommission_device(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<Device> {
    found(
        app.ops
            .set_status(&actor, &id, DeviceStatus::Decommissioned)
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

#[utoipa::path(get, path = "/events", summary = "Events of every device (or ?device=), newest first", params(("device" = Option<String>, Query, description = "Only this device"), ("since_ms" = Option<i64>, Query, description = "Received at or after (Unix ms)"), ("limit" = Option<i64>, Query, description = "At most (default 100, up to 10,000)")), responses((status = 200, body = Events), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn list_events(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<EventQuery>,
) -> ApiResult<Events> {
    let since = q.since_ms.unwrap_or(0);
    let events = match q.device.as_deref() {
        Some(d) => app.ops.events(Some(d), since, q.limit).await?,
        None => {
            app.ops
                .events_in_scope(&actor.principal.sites, since, q.limit)
                .await?
        }
    };
    Ok(Json(Events { events }))
}

#[utoipa::path(get, path = "/devices/{id}/events", summary = "Events of a device, newest first, with their total", params(("id" = String, Path, description = "Device id"), ("since_ms" = Option<i64>, Query, description = "Received at or after (Unix ms)"), ("limit" = Option<i64>, Query, description = "At most (default 100, up to 10,000)")), responses((status = 200, body = DeviceEvents), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
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

#[utoipa::path(get, path = "/devices/{id}/telemetry", summary = "Telemetry history (raw samples and buckets), oldest first", params(("id" = String, Path, description = "Device id"), ("from_ms" = Option<i64>, Query, description = "From (Unix ms)"), ("to_ms" = Option<i64>, Query, description = "To (Unix ms)"), ("limit" = Option<i64>, Query, description = "At most (default 1000, up to 100,000)")), responses((status = 200, body = DeviceTelemetry), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
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

#[utoipa::path(get, path = "/devices/{id}/peers", summary = "Calling AEs the device has seen", params(("id" = String, Path, description = "Device id")), responses((status = 200, body = DevicePeers), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
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

#[utoipa::path(post, path = "/devices/{id}/peers/approve", summary = "Approve a calling AE: added to the device's allow-list through its desired configuration", params(("id" = String, Path, description = "Device id")), request_body = ApprovePeer, responses((status = 200, body = ConfigApplied), (status = 400, description = "Invalid request", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "No desired configuration", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn approve_peer(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Json(b): Json<ApprovePeer>,
) -> ApiResult<ConfigApplied> {
    Ok(Json(
        app.ops.approve_peer(&actor, &id, &b.calling_ae).await?,
    ))
}

#[utoipa::path(get, path = "/devices/{id}/config", summary = "Desired and reported configuration, with drift", params(("id" = String, Path, description = "Device id")), responses((status = 200, body = DeviceConfig), (status = 404, description = "Not found", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
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

#[utoipa::path(put, path = "/devices/{id}/config", summary = "Set a device's desired configuration (the appliance TOML as JSON), validated by the appliance's code", params(("id" = String, Path, description = "Device id")), request_body = ConfigBody, responses((status = 200, body = ConfigApplied), (status = 400, description = "Invalid request", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 422, description = "Not valid for the appliance", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn put_device_config(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Json(b): Json<ConfigBody>,
) -> ApiResult<ConfigApplied> {
    Ok(Json(
        app.ops
            .put_config(&actor, ConfigScope::Device, &id, b.config)
            .await?,
    ))
}

#[utoipa::path(put, path = "/sites/{id}/config", summary = "Set a site's desired configuration", params(("id" = String, Path, description = "Site id")), request_body = ConfigBody, responses((status = 200, body = ConfigApplied), (status = 400, description = "Invalid request", body = ErrorBody), (status = 422, description = "Not valid for the appliance", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn put_site_config(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Json(b): Json<ConfigBody>,
) -> ApiResult<ConfigApplied> {
    Ok(Json(
        app.ops
            .put_config(&actor, ConfigScope::Site, &id, b.config)
            .await?,
    ))
}

#[utoipa::path(put, path = "/tags/{tag}/config", summary = "Set the desired configuration of every device with a tag", params(("tag" = String, Path, description = "Tag")), request_body = ConfigBody, responses((status = 200, body = ConfigApplied), (status = 400, description = "Invalid request", body = ErrorBody), (status = 422, description = "Not valid for the appliance", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn put_tag_config(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(tag): Path<String>,
    Json(b): Json<ConfigBody>,
) -> ApiResult<ConfigApplied> {
    Ok(Json(
        app.ops
            .put_config(&actor, ConfigScope::Tag, &tag, b.config)
            .await?,
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

#[utoipa::path(post, path = "/devices/{id}/commands", summary = "Send a command; re-sent when the device next connects while queued", params(("id" = String, Path, description = "Device id")), request_body = CommandBody, responses((status = 201, body = CommandRecord), (status = 400, description = "Invalid request", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn post_command(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Json(b): Json<CommandBody>,
) -> Result<(StatusCode, Json<CommandRecord>), ApiError> {
    let c = app
        .ops
        .create_command(
            &actor,
            &id,
            b.action,
            b.expires_in_secs.map(Duration::from_secs),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(c)))
}

#[utoipa::path(get, path = "/devices/{id}/commands", summary = "Commands of a device, newest first", params(("id" = String, Path, description = "Device id")), responses((status = 200, body = DeviceCommands), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
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

#[utoipa::path(get, path = "/commands/{id}", summary = "One command", params(("id" = String, Path, description = "Command id")), responses((status = 200, body = CommandRecord), (status = 404, description = "Not found", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn get_command(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<CommandRecord> {
    found(app.ops.command(&id).await?, "such command")
}

#[utoipa::path(get, path = "/commands/{id}/file", summary = "Download the file a command produced (the diagnostics bundle)", description = "The bytes as the appliance sent them, checked against their size and SHA-256 (also in `X-Content-SHA256`). Audited as `diagnostics.download`. 409 while the file is still arriving or when it arrived damaged.", params(("id" = String, Path, description = "Command id")), responses((status = 200, description = "The file, as an attachment", content_type = "application/octet-stream"), (status = 404, description = "No such command, or it produced no file", body = ErrorBody), (status = 409, description = "Still arriving, or damaged", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn get_command_file(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (file, content) = app.ops.command_file(&actor, &id).await?;
    Ok(attachment(
        content,
        "application/octet-stream",
        &file.name,
        Some(&file.sha256),
    ))
}

/// A download: `Content-Disposition: attachment` with `name` (quotes and controls dropped),
/// never cached, never sniffed into something the browser would run.
pub fn attachment(
    body: impl IntoResponse,
    content_type: &'static str,
    name: &str,
    sha256: Option<&str>,
) -> Response {
    let safe: String = name
        .chars()
        .filter(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '/' | ';'))
        .collect();
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some(v) = sha256.and_then(|d| HeaderValue::from_str(d).ok()) {
        h.insert("x-content-sha256", v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

#[utoipa::path(get, path = "/sites", summary = "Sites with device counts", responses((status = 200, body = Sites), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn list_sites(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
) -> ApiResult<Sites> {
    Ok(Json(Sites {
        sites: app.ops.sites(&actor.principal.sites).await?,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SiteBody {
    name: String,
}

#[utoipa::path(put, path = "/sites/{id}", summary = "Create or rename a site", params(("id" = String, Path, description = "Site id")), request_body = SiteBody, responses((status = 200, body = SiteName), (status = 400, description = "Invalid request", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn put_site(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Json(b): Json<SiteBody>,
) -> ApiResult<SiteName> {
    let site = SiteId::new(id.as_str()).map_err(|e| bad(e.to_string()))?;
    Ok(Json(app.ops.put_site(&actor, &site, &b.name).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    site: String,
    device: String,
}

#[utoipa::path(post, path = "/claims", summary = "A one-time claim token for a device at a site", request_body = ClaimBody, responses((status = 201, body = NewClaim), (status = 400, description = "Invalid request", body = ErrorBody), (status = 409, description = "The device is registered at another site", body = ErrorBody), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn create_claim(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Json(b): Json<ClaimBody>,
) -> Result<(StatusCode, Json<NewClaim>), ApiError> {
    let site = SiteId::new(b.site.as_str()).map_err(|e| bad(e.to_string()))?;
    let device = DeviceId::new(b.device.as_str()).map_err(|e| bad(e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        Json(app.ops.create_claim(&actor, site, device).await?),
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

#[utoipa::path(get, path = "/live", summary = "Live feed (text/event-stream): a full snapshot, then device, event and command changes", responses((status = 200, description = "Server-sent events", content_type = "text/event-stream", body = String), (status = 401, description = "Not logged in, or no valid token", body = ErrorBody), (status = 403, description = "Not permitted to this role or site", body = ErrorBody)), security(("admin" = [])))]
async fn live(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    // Subscribe first, then take the snapshot: no change can fall between the two. A user
    // limited to sites gets their sites' snapshot and changes only.
    let rx = app.ops.subscribe_live();
    let scope = actor.principal.sites;
    let snapshot = app.ops.snapshot_in_scope(&scope).await?.to_string();
    let stream = futures_util::stream::unfold(
        (Some(snapshot), rx, app, scope),
        |(first, mut rx, app, scope)| async move {
            if let Some(s) = first {
                return Some((
                    Ok(SseEvent::default().event("snapshot").data(s)),
                    (None, rx, app, scope),
                ));
            }
            loop {
                match rx.recv().await {
                    Ok(msg) if !app.ops.live_visible(&scope, &msg).await => continue,
                    Ok(msg) => {
                        let kind = serde_json::from_str::<Value>(&msg)
                            .ok()
                            .and_then(|v| v["type"].as_str().map(str::to_owned))
                            .unwrap_or_else(|| "change".into());
                        return Some((
                            Ok(SseEvent::default().event(kind).data(msg)),
                            (None, rx, app, scope),
                        ));
                    }
                    // Too slow a reader: a new full snapshot replaces what it missed.
                    Err(RecvError::Lagged(_)) => match app.ops.snapshot_in_scope(&scope).await {
                        Ok(s) => {
                            return Some((
                                Ok(SseEvent::default().event("snapshot").data(s.to_string())),
                                (None, rx, app, scope),
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
    // alerts (issue 13 part 3): firing alerts by kind and severity, notifications.
    let firing = app
        .ops
        .store
        .alerts_firing_counts()
        .await
        .unwrap_or_default();
    let mut text = app.metrics.render(&gauges);
    text.push_str(&app.metrics.alerts.render(&firing));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[cfg(test)]
mod tests {
    //! The handlers over real operations (SQLite, a publisher in memory), through HTTP.

    use super::*;
    use crate::config::FleetConfig;
    use crate::ops::sha256_hex;
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

    #[test]
    fn the_router_serves_exactly_the_policy_tables_routes() {
        let mut added = routes().added;
        let mut table: Vec<_> = policy::ROUTES.iter().map(|r| (r.verb, r.path)).collect();
        added.sort();
        table.sort();
        assert_eq!(added, table);
    }

    #[test]
    fn a_csrf_form_field_is_found_as_sent() {
        assert_eq!(
            form_field(b"a=1&csrf_token=ab12", "csrf_token").as_deref(),
            Some("ab12")
        );
        assert_eq!(form_field(b"csrf_token", "csrf_token"), None);
        assert_eq!(form_field(&[0xff, b'='], "csrf_token"), None);
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
