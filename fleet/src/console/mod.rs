//! The console: server-rendered pages served by the fleet itself, assets inside the binary.
//! [`view`] computes what a page shows (pure), [`pages`] renders it (maud), [`assets`] holds
//! htmx and the style sheet; the handlers here parse, call `ops`, render. Access is the policy
//! table's, like the API's: `api::guard` redirects a page without a session to `/login` and
//! answers refusals with [`pages::error`].
//!
//! Every page is sent with a strict Content-Security-Policy ([`CSP`]: only this origin's
//! scripts and styles, no inline script or style, no framing) and `Cache-Control: no-store`.

pub mod assets;
pub mod pages;
pub mod view;
// console-auth (issue 12): sign-in (password, single sign-on, logout) and the account and
// administration pages.
pub mod admin;
pub mod admin_pages;
pub mod signin;
// console-fleet: the devices list, bulk actions, sites and rooms, claims.
pub mod fleet;
pub mod fleet_pages;
pub mod fleet_view;
// console: device page
pub mod device;
pub mod device_page;
pub mod device_view;
// alerts (issue 13 part 3): the Alerts page.
pub mod alerts;
// analytics (issue 13 part 2): the Analytics pages.
pub mod analytics;
// ota (issue 14): the Updates pages.
pub mod updates;

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use maud::Markup;
use serde::Deserialize;

use crate::app::App;
use crate::auth::{Principal, Source, session};
use crate::ops::{Actor, OpError};

/// The Content-Security-Policy of every page.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// A page with its security headers.
pub fn page(status: StatusCode, markup: Markup) -> Response {
    let mut r = (status, markup.into_string()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A redirect after a form (303: the browser follows with GET).
fn see_other(to: &'static str, cookie: Option<String>) -> Response {
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
    if let Some(c) = cookie
        && let Ok(v) = HeaderValue::from_str(&c)
    {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// A refusal or failure as a page (also the guard's).
pub fn error_page(status: StatusCode, message: &str, who: Option<&Principal>) -> Response {
    let title = match status {
        StatusCode::FORBIDDEN => "Not permitted",
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::BAD_REQUEST => "Not understood",
        _ => "Something went wrong",
    };
    page(status, pages::error(title, message, who))
}

fn op_error_page(e: &OpError, who: Option<&Principal>) -> Response {
    let status = match e {
        OpError::NotFound(_) => StatusCode::NOT_FOUND,
        OpError::Invalid(_) | OpError::InvalidConfig(_) => StatusCode::BAD_REQUEST,
        OpError::Forbidden(_) => StatusCode::FORBIDDEN,
        OpError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        OpError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
        OpError::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        OpError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        OpError::Conflict(_) => StatusCode::CONFLICT,
        _ => {
            tracing::error!(error = %e, "console page failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    error_page(status, &e.to_string(), who)
}

/// `GET /static/htmx-….min.js`.
pub async fn htmx() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        assets::HTMX,
    )
        .into_response()
}

// ---- console: device page (static files) ----

/// A static script or style sheet of the device page, with its content type.
fn static_file(content_type: &'static str, cache: &'static str, body: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response()
}

/// `GET /static/uplot-….min.js`.
pub async fn uplot_js() -> Response {
    static_file(
        "text/javascript; charset=utf-8",
        "public, max-age=31536000, immutable",
        assets::UPLOT_JS,
    )
}

/// `GET /static/uplot-….min.css`.
pub async fn uplot_css() -> Response {
    static_file(
        "text/css; charset=utf-8",
        "public, max-age=31536000, immutable",
        assets::UPLOT_CSS,
    )
}

/// `GET /static/device-charts.js` (ours: changes with the binary, so a short cache).
pub async fn charts_js() -> Response {
    static_file(
        "text/javascript; charset=utf-8",
        "public, max-age=3600",
        assets::CHARTS_JS,
    )
}

/// `GET /static/analytics-charts.js` (analytics, issue 13 part 2; ours: a short cache).
pub async fn analytics_js() -> Response {
    static_file(
        "text/javascript; charset=utf-8",
        "public, max-age=3600",
        assets::ANALYTICS_JS,
    )
}

/// `GET /static/updates.js` (ota, issue 14; ours: a short cache).
pub async fn updates_js() -> Response {
    static_file(
        "text/javascript; charset=utf-8",
        "public, max-age=3600",
        assets::UPDATES_JS,
    )
}

// ---- end of console: device page ----

/// `GET /static/console.css`.
pub async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        assets::CSS,
    )
        .into_response()
}

/// `GET /setup?token=…`.
#[derive(Debug, Deserialize)]
pub struct SetupQuery {
    #[serde(default)]
    token: String,
}

/// `GET /setup`: the first-run form while no user exists.
pub async fn setup_page(State(app): State<Arc<App>>, Query(q): Query<SetupQuery>) -> Response {
    match app.ops.store.user_count().await {
        Ok(n) => page(StatusCode::OK, pages::setup(&q.token, None, n > 0)),
        Err(e) => op_error_page(&OpError::Store(e), None),
    }
}

/// The first-run form.
#[derive(Debug, Deserialize)]
pub struct SetupForm {
    token: String,
    user: String,
    password: String,
    confirm: String,
}

/// `POST /setup`: creates the first admin and logs it in.
pub async fn setup_submit(
    State(app): State<Arc<App>>,
    Extension(source): Extension<Source>,
    Form(f): Form<SetupForm>,
) -> Response {
    let again = |status, msg: &str| page(status, pages::setup(&f.token, Some(msg), false));
    if f.password != f.confirm {
        return again(
            StatusCode::BAD_REQUEST,
            "the two passwords differ; type the same one twice",
        );
    }
    let user = f.user.trim();
    match app.ops.setup(&f.token, user, &f.password, source.0).await {
        Ok(_) => {}
        Err(e @ (OpError::Invalid(_) | OpError::Unauthenticated(_))) => {
            let status = if matches!(e, OpError::Invalid(_)) {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::UNAUTHORIZED
            };
            return again(status, &e.to_string());
        }
        Err(e) => return op_error_page(&e, None),
    }
    match app.ops.login(user, &f.password, source.0).await {
        Ok(l) => see_other(
            "/",
            Some(session::set_cookie(&l.secret, app.ops.cookie_secure())),
        ),
        Err(_) => see_other("/login", None),
    }
}

/// `GET /`: the fleet overview of the caller's sites.
pub async fn overview(State(app): State<Arc<App>>, Extension(actor): Extension<Actor>) -> Response {
    let scope = &actor.principal.sites;
    let (devices, sites) = match (
        app.ops.devices(scope, None).await,
        app.ops.sites(scope).await,
    ) {
        (Ok(d), Ok(s)) => (d, s),
        (Err(e), _) | (_, Err(e)) => return op_error_page(&e, Some(&actor.principal)),
    };
    let o = view::Overview::of(&devices, &sites);
    page(
        StatusCode::OK,
        pages::overview(&actor.principal, &o, &devices, crate::store::now_db()),
    )
}
