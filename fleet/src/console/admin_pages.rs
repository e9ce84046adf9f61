//! The handlers of the account and administration pages (`console::admin` renders them):
//! parse the form, call one operation with the `Actor` (audited there), render. Access is the
//! policy table's (`auth::policy::ROUTES`), checked by `api::guard` before these run, CSRF too.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::admin::{self, AuditView, Flash};
use super::{error_page, op_error_page, page};
use crate::app::App;
use crate::auth::Role;
use crate::ops::access::{UserChange, generate_password};
use crate::ops::{Actor, OpError};
use crate::store::now_db;

/// A form body: every field in order, repeated ones (`sites`) included.
struct FormData(Vec<(String, String)>);

impl FormData {
    fn of(body: &Bytes) -> FormData {
        FormData(form_urlencoded::parse(body).into_owned().collect())
    }

    fn one(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self, name: &str) -> String {
        self.one(name).unwrap_or_default().trim().to_owned()
    }

    /// The ticked sites; none means every site.
    fn sites(&self) -> Option<Vec<String>> {
        let v: Vec<String> = self
            .0
            .iter()
            .filter(|(k, _)| k == "sites")
            .map(|(_, v)| v.clone())
            .collect();
        (!v.is_empty()).then_some(v)
    }

    fn role(&self) -> Result<Role, OpError> {
        self.text("role")
            .parse::<Role>()
            .map_err(|e| OpError::Invalid(format!("role: {e}")))
    }
}

fn status_of(e: &OpError) -> StatusCode {
    match e {
        OpError::NotFound(_) => StatusCode::NOT_FOUND,
        OpError::Invalid(_) | OpError::InvalidConfig(_) => StatusCode::BAD_REQUEST,
        OpError::Conflict(_) => StatusCode::CONFLICT,
        OpError::Forbidden(_) => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn failed(e: &OpError) -> Flash {
    Flash {
        error: Some(e.to_string()),
        ..Flash::default()
    }
}

/// The users page with a message.
async fn users_with(app: &App, actor: &Actor, status: StatusCode, f: Flash) -> Response {
    let (users, sites) = match (
        app.ops.users().await,
        app.ops.sites(&actor.principal.sites).await,
    ) {
        (Ok(u), Ok(s)) => (u, s),
        (Err(e), _) | (_, Err(e)) => return op_error_page(&e, Some(&actor.principal)),
    };
    page(
        status,
        admin::users(&actor.principal, &users, &sites, &f, now_db()),
    )
}

/// `GET /users`.
pub async fn users_page(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
) -> Response {
    users_with(&app, &actor, StatusCode::OK, Flash::default()).await
}

/// `POST /users`: creates a user (a generated password is shown once).
pub async fn users_create(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> Response {
    let f = FormData::of(&body);
    let name = f.text("name");
    let role = match f.role() {
        Ok(r) => r,
        Err(e) => return users_with(&app, &actor, status_of(&e), failed(&e)).await,
    };
    let pw = Some(f.text("password")).filter(|p| !p.is_empty());
    match app
        .ops
        .create_user(&actor, &name, role, f.sites(), pw)
        .await
    {
        Ok(c) => {
            let flash = Flash {
                done: Some(format!(
                    "User {} created with role {}.",
                    c.user.name, c.user.role
                )),
                secret: c
                    .generated_password
                    .map(|p| (format!("The password of {}", c.user.name), p)),
                ..Flash::default()
            };
            users_with(&app, &actor, StatusCode::OK, flash).await
        }
        Err(e) => users_with(&app, &actor, status_of(&e), failed(&e)).await,
    }
}

/// One user's page with a message.
async fn user_with(app: &App, actor: &Actor, name: &str, status: StatusCode, f: Flash) -> Response {
    let who = Some(&actor.principal);
    let user = match app.ops.store.user(name).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            return error_page(StatusCode::NOT_FOUND, &format!("no user {name:?}"), who);
        }
        Err(e) => return op_error_page(&OpError::Store(e), who),
    };
    let (sessions, sites) = match (
        app.ops.sessions(name).await,
        app.ops.sites(&actor.principal.sites).await,
    ) {
        (Ok(s), Ok(t)) => (s, t),
        (Err(e), _) | (_, Err(e)) => return op_error_page(&e, who),
    };
    page(
        status,
        admin::user(&actor.principal, &user, &sessions, &sites, &f, now_db()),
    )
}

/// `GET /users/{name}`.
pub async fn user_page(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> Response {
    user_with(&app, &actor, &name, StatusCode::OK, Flash::default()).await
}

/// `POST /users/{name}`: `op` = `rights` (role and sites), `disable` or `enable`.
pub async fn user_change(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let f = FormData::of(&body);
    let change = match f.text("op").as_str() {
        "rights" => match f.role() {
            Ok(role) => UserChange {
                role: Some(role),
                sites: Some(f.sites()),
                ..UserChange::default()
            },
            Err(e) => return user_with(&app, &actor, &name, status_of(&e), failed(&e)).await,
        },
        "disable" => UserChange {
            disabled: Some(true),
            ..UserChange::default()
        },
        "enable" => UserChange {
            disabled: Some(false),
            ..UserChange::default()
        },
        other => {
            let e = OpError::Invalid(format!("op {other:?}: rights, disable or enable"));
            return user_with(&app, &actor, &name, StatusCode::BAD_REQUEST, failed(&e)).await;
        }
    };
    match app.ops.update_user(&actor, &name, change).await {
        Ok(u) => {
            let done = match (f.text("op").as_str(), u.disabled_ms) {
                ("disable", _) => format!("{name} is disabled; its sessions have ended."),
                ("enable", _) => format!("{name} is enabled again."),
                _ => format!("{name} now has the role {}.", u.role),
            };
            let flash = Flash {
                done: Some(done),
                ..Flash::default()
            };
            user_with(&app, &actor, &name, StatusCode::OK, flash).await
        }
        Err(e) => user_with(&app, &actor, &name, status_of(&e), failed(&e)).await,
    }
}

/// `POST /users/{name}/password`: a new generated password, shown once.
pub async fn user_password(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> Response {
    let result = match generate_password() {
        Ok(pw) => app
            .ops
            .update_user(
                &actor,
                &name,
                UserChange {
                    password: Some(pw.clone()),
                    ..UserChange::default()
                },
            )
            .await
            .map(|_| pw),
        Err(e) => Err(e),
    };
    match result {
        Ok(pw) => {
            let flash = Flash {
                done: Some(format!("The password of {name} was reset.")),
                secret: Some((format!("The new password of {name}"), pw)),
                ..Flash::default()
            };
            user_with(&app, &actor, &name, StatusCode::OK, flash).await
        }
        Err(e) => user_with(&app, &actor, &name, status_of(&e), failed(&e)).await,
    }
}

/// `POST /users/{name}/sessions/{id}/revoke`.
pub async fn user_session_revoke(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    match app.ops.revoke_session(&actor, &name, &id).await {
        Ok(()) => {
            let flash = Flash {
                done: Some(format!("A session of {name} was ended.")),
                ..Flash::default()
            };
            user_with(&app, &actor, &name, StatusCode::OK, flash).await
        }
        Err(e) => user_with(&app, &actor, &name, status_of(&e), failed(&e)).await,
    }
}

/// My tokens page with a message.
async fn tokens_with(app: &App, actor: &Actor, status: StatusCode, f: Flash) -> Response {
    match app.ops.tokens(&actor.principal.user).await {
        Ok(t) => page(status, admin::tokens(&actor.principal, &t, &f, now_db())),
        Err(e) => op_error_page(&e, Some(&actor.principal)),
    }
}

/// `GET /tokens`.
pub async fn tokens_page(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
) -> Response {
    tokens_with(&app, &actor, StatusCode::OK, Flash::default()).await
}

/// `POST /tokens`: creates a token, shown once.
pub async fn tokens_create(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> Response {
    let f = FormData::of(&body);
    let role = match f.role() {
        Ok(r) => r,
        Err(e) => return tokens_with(&app, &actor, status_of(&e), failed(&e)).await,
    };
    let Ok(days) = f.text("expires_in_days").parse::<u64>() else {
        let e = OpError::Invalid("expires_in_days: give a number of days, 1 to 366".into());
        return tokens_with(&app, &actor, StatusCode::BAD_REQUEST, failed(&e)).await;
    };
    match app
        .ops
        .create_token(&actor, &f.text("name"), Some(role), None, days)
        .await
    {
        Ok(t) => {
            let flash = Flash {
                done: Some(format!(
                    "Token {:?} created with role {}.",
                    t.record.name, t.record.role
                )),
                secret: Some((format!("Token {:?}", t.record.name), t.token)),
                ..Flash::default()
            };
            tokens_with(&app, &actor, StatusCode::OK, flash).await
        }
        Err(e) => tokens_with(&app, &actor, status_of(&e), failed(&e)).await,
    }
}

/// `POST /tokens/{id}/revoke`.
pub async fn token_revoke(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Response {
    match app.ops.revoke_token(&actor, &id).await {
        Ok(()) => {
            let flash = Flash {
                done: Some("The token is revoked: it no longer works.".into()),
                ..Flash::default()
            };
            tokens_with(&app, &actor, StatusCode::OK, flash).await
        }
        Err(e) => tokens_with(&app, &actor, status_of(&e), failed(&e)).await,
    }
}

async fn sessions_with(app: &App, actor: &Actor, status: StatusCode, f: Flash) -> Response {
    match app.ops.sessions(&actor.principal.user).await {
        Ok(s) => page(status, admin::sessions(&actor.principal, &s, &f, now_db())),
        Err(e) => op_error_page(&e, Some(&actor.principal)),
    }
}

/// `GET /sessions`.
pub async fn sessions_page(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
) -> Response {
    sessions_with(&app, &actor, StatusCode::OK, Flash::default()).await
}

/// `POST /sessions/{id}/revoke`: ends one of my sessions.
pub async fn session_revoke(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Response {
    let user = actor.principal.user.clone();
    match app.ops.revoke_session(&actor, &user, &id).await {
        Ok(()) => {
            let flash = Flash {
                done: Some("The session was ended.".into()),
                ..Flash::default()
            };
            sessions_with(&app, &actor, StatusCode::OK, flash).await
        }
        Err(e) => sessions_with(&app, &actor, status_of(&e), failed(&e)).await,
    }
}

/// `GET /audit?actor=&action=&target=&outcome=&from=&to=&before=`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AuditQuery {
    actor: String,
    action: String,
    target: String,
    outcome: String,
    from: String,
    to: String,
    before: String,
}

/// `GET /audit`: the log, filtered, a page at a time.
pub async fn audit_page(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<AuditQuery>,
) -> Response {
    let v = AuditView {
        actor: q.actor,
        action: q.action,
        target: q.target,
        outcome: q.outcome,
        from: q.from,
        to: q.to,
        before: q.before,
    };
    let who = &actor.principal;
    let f = match v.filter() {
        Ok(f) => f,
        Err(msg) => {
            return page(
                StatusCode::BAD_REQUEST,
                admin::audit(who, &v, &[], false, Some(&msg)),
            );
        }
    };
    match app.ops.audit_entries(&f).await {
        Ok(entries) => {
            let more = i64::try_from(entries.len()).unwrap_or(i64::MAX) > admin::AUDIT_PAGE;
            page(StatusCode::OK, admin::audit(who, &v, &entries, more, None))
        }
        Err(e) => op_error_page(&e, Some(who)),
    }
}
