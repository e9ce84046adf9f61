//! The account routes: first-run setup, login and logout, the caller's sessions and tokens,
//! users (admins) and the audit log (admins, auditors). Parse, call one operation, serialise.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiResult, ErrorBody, bad};
use crate::app::App;
use crate::auth::{Credential, Role, Source, session};
use crate::ops::Actor;
use crate::ops::access::{NewToken, NewUserCreated, UserChange};
use crate::store::audit::{self, AuditEntry, AuditFilter};
use crate::store::users::{ApiToken, Session, User};

/// `POST /auth/setup`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupBody {
    /// The one-time token of the setup link the fleet printed at start.
    token: String,
    /// The first admin's name.
    user: String,
    /// Its password (12 to 256 characters).
    password: String,
}

#[utoipa::path(post, path = "/auth/setup", summary = "First run: create the first admin with the one-time setup token the fleet printed", request_body = SetupBody, responses((status = 201, body = User), (status = 400, description = "Invalid name or password", body = ErrorBody), (status = 401, description = "Setup token unknown, expired or used, or a user exists", body = ErrorBody)))]
pub async fn setup(
    State(app): State<Arc<App>>,
    Extension(source): Extension<Source>,
    Json(b): Json<SetupBody>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let u = app
        .ops
        .setup(&b.token, &b.user, &b.password, source.0)
        .await?;
    Ok((StatusCode::CREATED, Json(u)))
}

/// `POST /auth/login`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    user: String,
    password: String,
}

/// Who is logged in (`/auth/login`, `/auth/me`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// The user (`break-glass` for the bootstrap admin token).
    user: String,
    /// The role in effect.
    role: Role,
    /// The sites in effect (`null`: every site).
    sites: Option<Vec<String>>,
    /// `session`, `token` or `break_glass`.
    via: &'static str,
    /// The session's id.
    session: Option<String>,
    /// The session's CSRF token: send it as `X-CSRF-Token` with every state-changing request.
    csrf_token: Option<String>,
}

fn me_of(actor: &Actor) -> Me {
    let p = &actor.principal;
    let (via, session, csrf_token) = match &p.credential {
        Credential::Session { id, csrf } => ("session", Some(id.clone()), Some(csrf.clone())),
        Credential::Token { .. } => ("token", None, None),
        Credential::BreakGlass => ("break_glass", None, None),
    };
    Me {
        user: p.user.clone(),
        role: p.role,
        sites: p.sites.to_list(),
        via,
        session,
        csrf_token,
    }
}

#[utoipa::path(post, path = "/auth/login", summary = "Log in with a password: sets the session cookie (HttpOnly, SameSite=Strict, Secure over HTTPS) and returns the CSRF token", request_body = LoginBody, responses((status = 200, body = Me), (status = 401, description = "Wrong user name or password", body = ErrorBody), (status = 429, description = "Too many failures for this user or address (Retry-After)", body = ErrorBody)))]
pub async fn login(
    State(app): State<Arc<App>>,
    Extension(source): Extension<Source>,
    Json(b): Json<LoginBody>,
) -> Result<Response, ApiError> {
    let l = app.ops.login(&b.user, &b.password, source.0).await?;
    let me = Me {
        user: l.user.name.clone(),
        role: l.user.role,
        sites: l.user.sites.clone(),
        via: "session",
        session: Some(l.session.id.clone()),
        csrf_token: Some(l.session.csrf_token.clone()),
    };
    let cookie = session::set_cookie(&l.secret, app.ops.cookie_secure());
    Ok(([(header::SET_COOKIE, cookie)], Json(me)).into_response())
}

#[utoipa::path(post, path = "/auth/logout", summary = "End this session (clears the cookie)", responses((status = 204, description = "Logged out"), (status = 401, description = "Not logged in", body = ErrorBody)))]
pub async fn logout(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
) -> Result<Response, ApiError> {
    app.ops.logout(&actor).await?;
    let cookie = session::clear_cookie(app.ops.cookie_secure());
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

#[utoipa::path(get, path = "/auth/me", summary = "Who is asking: user, role, sites, and the session's CSRF token", responses((status = 200, body = Me), (status = 401, description = "Not logged in", body = ErrorBody)), security(("admin" = [])))]
pub async fn me(Extension(actor): Extension<Actor>) -> Json<Me> {
    Json(me_of(&actor))
}

/// Sessions of a user.
#[derive(Debug, Serialize, ToSchema)]
pub struct Sessions {
    sessions: Vec<Session>,
}

#[utoipa::path(get, path = "/auth/sessions", summary = "My open sessions", responses((status = 200, body = Sessions), (status = 401, description = "Not logged in", body = ErrorBody)), security(("admin" = [])))]
pub async fn my_sessions(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
) -> ApiResult<Sessions> {
    Ok(Json(Sessions {
        sessions: app.ops.sessions(&actor.principal.user).await?,
    }))
}

#[utoipa::path(delete, path = "/auth/sessions/{id}", summary = "End one of my sessions", params(("id" = String, Path, description = "Session id")), responses((status = 204, description = "Ended"), (status = 404, description = "No such open session of mine", body = ErrorBody), (status = 401, description = "Not logged in", body = ErrorBody)), security(("admin" = [])))]
pub async fn revoke_my_session(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user = actor.principal.user.clone();
    app.ops.revoke_session(&actor, &user, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Tokens of a user.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tokens {
    tokens: Vec<ApiToken>,
}

#[utoipa::path(get, path = "/tokens", summary = "My personal API tokens (without their secrets)", responses((status = 200, body = Tokens), (status = 401, description = "Not logged in", body = ErrorBody)), security(("admin" = [])))]
pub async fn my_tokens(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
) -> ApiResult<Tokens> {
    Ok(Json(Tokens {
        tokens: app.ops.tokens(&actor.principal.user).await?,
    }))
}

/// `POST /tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// What it is for.
    name: String,
    /// Its role (default: mine; never above mine).
    role: Option<Role>,
    /// Its sites (default: mine; never beyond mine).
    sites: Option<Vec<String>>,
    /// Lifetime in days (1-366).
    expires_in_days: u64,
}

#[utoipa::path(post, path = "/tokens", summary = "Create a personal API token (its secret is shown only in this answer)", request_body = TokenBody, responses((status = 201, body = NewToken), (status = 400, description = "Invalid request", body = ErrorBody), (status = 403, description = "Role or sites beyond mine", body = ErrorBody), (status = 401, description = "Not logged in", body = ErrorBody)), security(("admin" = [])))]
pub async fn create_token(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Json(b): Json<TokenBody>,
) -> Result<(StatusCode, Json<NewToken>), ApiError> {
    let t = app
        .ops
        .create_token(&actor, &b.name, b.role, b.sites, b.expires_in_days)
        .await?;
    Ok((StatusCode::CREATED, Json(t)))
}

#[utoipa::path(delete, path = "/tokens/{id}", summary = "Revoke one of my tokens", params(("id" = String, Path, description = "Token id")), responses((status = 204, description = "Revoked"), (status = 404, description = "No such active token of mine", body = ErrorBody), (status = 401, description = "Not logged in", body = ErrorBody)), security(("admin" = [])))]
pub async fn revoke_token(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.ops.revoke_token(&actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /users`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Users {
    users: Vec<User>,
}

#[utoipa::path(get, path = "/users", summary = "Every user", responses((status = 200, body = Users), (status = 401, description = "Not logged in", body = ErrorBody), (status = 403, description = "Not an admin", body = ErrorBody)), security(("admin" = [])))]
pub async fn list_users(State(app): State<Arc<App>>) -> ApiResult<Users> {
    Ok(Json(Users {
        users: app.ops.users().await?,
    }))
}

/// `POST /users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    name: String,
    role: Role,
    /// Sites (leave out or null for every site).
    sites: Option<Vec<String>>,
    /// A password; without it one is generated and returned once.
    password: Option<String>,
}

#[utoipa::path(post, path = "/users", summary = "Create a user", request_body = UserBody, responses((status = 201, body = NewUserCreated), (status = 400, description = "Invalid request", body = ErrorBody), (status = 409, description = "Name taken", body = ErrorBody), (status = 401, description = "Not logged in", body = ErrorBody), (status = 403, description = "Not an admin", body = ErrorBody)), security(("admin" = [])))]
pub async fn create_user(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Json(b): Json<UserBody>,
) -> Result<(StatusCode, Json<NewUserCreated>), ApiError> {
    let u = app
        .ops
        .create_user(&actor, &b.name, b.role, b.sites, b.password)
        .await?;
    Ok((StatusCode::CREATED, Json(u)))
}

/// Present (even as `null`) → `Some(value)`; absent → `None` (with `#[serde(default)]`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `PATCH /users/{name}`: fields left out stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    role: Option<Role>,
    /// Sites; `null` for every site.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    sites: Option<Option<Vec<String>>>,
    /// Disable (its sessions end, its tokens stop working) or enable.
    disabled: Option<bool>,
    /// A new password.
    password: Option<String>,
}

#[utoipa::path(patch, path = "/users/{name}", summary = "Change a user's role, sites, password or disabled state", params(("name" = String, Path, description = "User name")), request_body = UserPatch, responses((status = 200, body = User), (status = 400, description = "Invalid request", body = ErrorBody), (status = 404, description = "No such user", body = ErrorBody), (status = 401, description = "Not logged in", body = ErrorBody), (status = 403, description = "Not an admin", body = ErrorBody)), security(("admin" = [])))]
pub async fn patch_user(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
    Json(b): Json<UserPatch>,
) -> ApiResult<User> {
    let change = UserChange {
        role: b.role,
        sites: b.sites,
        disabled: b.disabled,
        password: b.password,
    };
    Ok(Json(app.ops.update_user(&actor, &name, change).await?))
}

#[utoipa::path(get, path = "/users/{name}/sessions", summary = "A user's open sessions", params(("name" = String, Path, description = "User name")), responses((status = 200, body = Sessions), (status = 401, description = "Not logged in", body = ErrorBody), (status = 403, description = "Not an admin", body = ErrorBody)), security(("admin" = [])))]
pub async fn user_sessions(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> ApiResult<Sessions> {
    Ok(Json(Sessions {
        sessions: app.ops.sessions(&name).await?,
    }))
}

/// `DELETE /users/{name}/sessions`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    revoked: u64,
}

#[utoipa::path(delete, path = "/users/{name}/sessions", summary = "End every session of a user", params(("name" = String, Path, description = "User name")), responses((status = 200, body = Revoked), (status = 401, description = "Not logged in", body = ErrorBody), (status = 403, description = "Not an admin", body = ErrorBody)), security(("admin" = [])))]
pub async fn revoke_user_sessions(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> ApiResult<Revoked> {
    Ok(Json(Revoked {
        revoked: app.ops.revoke_sessions_of(&actor, &name).await?,
    }))
}

/// `GET /audit` as JSON.
#[derive(Debug, Serialize, ToSchema)]
pub struct Audit {
    entries: Vec<AuditEntry>,
}

/// `GET /audit`: the filter and the format.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    outcome: Option<String>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    limit: Option<i64>,
    /// Only entries older than this id (the next page).
    before: Option<String>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

#[utoipa::path(get, path = "/audit", summary = "The audit log, newest first, filtered; as JSON or CSV (?format=csv)", params(("actor" = Option<String>, Query, description = "Exactly this actor"), ("action" = Option<String>, Query, description = "Actions starting with this (device. for every device action)"), ("target" = Option<String>, Query, description = "Exactly this target (device:ID, user:NAME, …)"), ("outcome" = Option<String>, Query, description = "ok, denied or failed"), ("since_ms" = Option<i64>, Query, description = "At or after (Unix ms)"), ("until_ms" = Option<i64>, Query, description = "Before (Unix ms)"), ("limit" = Option<i64>, Query, description = "At most (default 1000, up to 100,000)"), ("before" = Option<String>, Query, description = "Only entries older than this id (the next page)"), ("format" = Option<String>, Query, description = "json (default) or csv")), responses((status = 200, body = Audit), (status = 400, description = "Invalid filter", body = ErrorBody), (status = 401, description = "Not logged in", body = ErrorBody), (status = 403, description = "Not an admin or auditor", body = ErrorBody)), security(("admin" = [])))]
pub async fn audit(
    State(app): State<Arc<App>>,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let f = AuditFilter {
        actor: q.actor,
        action: q.action,
        target: q.target,
        outcome: q.outcome,
        since_ms: q.since_ms,
        until_ms: q.until_ms,
        limit: q.limit,
        before: q.before,
    };
    let entries = app.ops.audit_entries(&f).await?;
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(Audit { entries }).into_response()),
        Some("csv") => Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"medgate-audit.csv\"",
                ),
            ],
            audit::to_csv(&entries),
        )
            .into_response()),
        Some(other) => Err(bad(format!("format {other:?}: json or csv"))),
    }
}
