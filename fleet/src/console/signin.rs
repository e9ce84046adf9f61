//! Signing in and out of the console: the login page (its form protected by a pre-session CSRF
//! token, `auth::csrf::login_token`), the password login with throttling said in words, single
//! sign-on by OpenID Connect (start, callback) and logout (with the provider's logout for SSO
//! users when it has one). The page markup is here too; the decisions are `auth`'s and `ops`'.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use super::pages::{Nav, layout};
use super::{op_error_page, page};
use crate::app::App;
use crate::auth::policy::Permission;
use crate::auth::{Role, Source, csrf, oidc, session};
use crate::ops::sso::SsoError;
use crate::ops::{Actor, OpError};
use crate::store::audit::Outcome;

/// What the login page shows besides its form.
#[derive(Debug, Clone, Default)]
pub struct LoginView<'a> {
    /// An error (`role="alert"`).
    pub error: Option<&'a str>,
    /// A notice (the session ended, logged out).
    pub notice: Option<&'a str>,
    /// The user name typed.
    pub user: &'a str,
    /// The form's CSRF token.
    pub csrf: &'a str,
    /// The provider's name, when single sign-on is configured.
    pub sso: Option<&'a str>,
}

/// The login page.
pub fn login_markup(v: &LoginView<'_>) -> Markup {
    layout(
        "Log in",
        Nav::None,
        None,
        html! {
            div.narrow {
                h1 { "Log in to the Medgate fleet" }
                @if let Some(n) = v.notice { p.notice role="status" { (n) } }
                @if let Some(e) = v.error { p.error role="alert" { (e) } }
                @if let Some(name) = v.sso {
                    // A link, not a form: the redirect to the provider is a navigation, which
                    // the CSP's `form-action 'self'` would refuse after a form.
                    a.button.sso href="/auth/oidc/start" { "Sign in with " (name) }
                    p.divider { span { "or with a local Medgate account" } }
                }
                form method="post" action="/login" {
                    input type="hidden" name="csrf_token" value=(v.csrf);
                    label { "User name" input name="user" value=(v.user) autocomplete="username" required autofocus[v.sso.is_none()]; }
                    label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                    button type="submit" { "Log in" }
                }
                @if v.sso.is_some() {
                    p.muted.small { "Local accounts are for break-glass: they work while the identity provider is down." }
                }
            }
        },
    )
}

/// A page that moves on by itself (`meta refresh`) to `to`. After a successful single sign-on
/// rather than a redirect: the browser arrives from the provider's site, and only a navigation
/// that starts on this site carries the `SameSite=Strict` session cookie. After the logout form
/// of an SSO user, towards the provider's logout: a redirect after a form to another origin is
/// refused by the CSP's `form-action 'self'`, a navigation is not.
fn continue_markup(title: &str, to: &str, link: &str) -> Markup {
    html! {
        (maud::DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(format!("0; url={to}"));
                title { (title) " · Medgate fleet" }
                link rel="stylesheet" href=(super::assets::CSS_PATH);
            }
            body {
                main #main { div.narrow { h1 { (title) } p { a href=(to) { (link) } } } }
            }
        }
    }
}

/// Where a user lands after signing in: the first page their role may see.
pub fn landing(role: Role) -> &'static str {
    if Permission::DevicesRead.granted_to(role) {
        "/"
    } else if Permission::AuditRead.granted_to(role) {
        "/audit"
    } else {
        "/tokens"
    }
}

fn cookie_of<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| csrf::cookie_value(h, name))
}

fn with_cookies(mut r: Response, cookies: &[String]) -> Response {
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

fn redirect(to: &str, cookies: &[String]) -> Response {
    let r = match HeaderValue::from_str(to) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    with_cookies(r, cookies)
}

/// The login form's cookie value (the browser's, if it has a usable one) and its token.
async fn login_form(
    app: &App,
    headers: &HeaderMap,
) -> Result<(String, String, Option<String>), OpError> {
    let key = app.ops.form_key().await?;
    let (value, set) = match cookie_of(headers, csrf::LOGIN_COOKIE).filter(|c| c.len() >= 32) {
        Some(c) => (c.to_owned(), None),
        None => {
            let v = crate::ops::random_token()?;
            let set = csrf::login_cookie(&v, app.ops.cookie_secure());
            (v, Some(set))
        }
    };
    let token = csrf::login_token(key, &value);
    Ok((value, token, set))
}

/// Renders the login page with a fresh (or the browser's) form token.
async fn login_response(
    app: &App,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
    notice: Option<&str>,
    user: &str,
) -> Response {
    let (_, token, set) = match login_form(app, headers).await {
        Ok(f) => f,
        Err(e) => return op_error_page(&e, None),
    };
    let sso = app.ops.sso().map(|s| s.settings.name.as_str());
    let view = LoginView {
        error,
        notice,
        user,
        csrf: &token,
        sso,
    };
    let r = page(status, login_markup(&view));
    with_cookies(r, &set.into_iter().collect::<Vec<_>>())
}

/// `GET /login?ended=1`.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    ended: Option<String>,
}

/// `GET /login`.
pub async fn login_page(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let notice = q.ended.is_some().then_some(
        "Your session has ended (idle too long, expired, logged out elsewhere or revoked). Log in again.",
    );
    login_response(&app, &headers, StatusCode::OK, None, notice, "").await
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
    #[serde(default)]
    csrf_token: Option<String>,
}

/// Whether the login form came from this console's login page; audits a refusal.
async fn form_is_ours(
    app: &App,
    headers: &HeaderMap,
    sent: Option<&str>,
    who: &str,
    source: Option<std::net::IpAddr>,
) -> bool {
    let ok = app
        .ops
        .form_key()
        .await
        .is_ok_and(|k| csrf::login_matches(k, cookie_of(headers, csrf::LOGIN_COOKIE), sent));
    if !ok {
        app.ops
            .audit_as(
                who,
                source,
                "csrf",
                "POST /login",
                Outcome::Denied,
                None,
                Some(json!({"reason": "login form token missing or wrong"}).to_string()),
            )
            .await;
    }
    ok
}

const FOREIGN_FORM: &str = "This login form did not come from this console, or it is more than an hour old: nothing was done. Reload the page and log in again.";

/// Throttling in words.
fn throttled_words(secs: u64) -> String {
    let wait = if secs <= 90 {
        format!("{secs} seconds")
    } else {
        format!("about {} minutes", secs.div_ceil(60))
    };
    format!(
        "Too many failed logins for this user or from this address. Logins are paused to protect the account: try again in {wait}. If you forgot your password, ask an admin to reset it."
    )
}

/// `POST /login`: on success the session cookie and the user's first page.
pub async fn login_submit(
    State(app): State<Arc<App>>,
    Extension(source): Extension<Source>,
    headers: HeaderMap,
    axum::Form(f): axum::Form<LoginForm>,
) -> Response {
    let user = f.user.trim();
    if !form_is_ours(&app, &headers, f.csrf_token.as_deref(), user, source.0).await {
        return login_response(
            &app,
            &headers,
            StatusCode::FORBIDDEN,
            Some(FOREIGN_FORM),
            None,
            "",
        )
        .await;
    }
    match app.ops.login(user, &f.password, source.0).await {
        Ok(l) => redirect(
            landing(l.user.role),
            &[session::set_cookie(&l.secret, app.ops.cookie_secure())],
        ),
        Err(OpError::Throttled { retry_after_secs }) => {
            login_response(
                &app,
                &headers,
                StatusCode::TOO_MANY_REQUESTS,
                Some(&throttled_words(retry_after_secs)),
                None,
                user,
            )
            .await
        }
        Err(e @ OpError::Unauthenticated(_)) => {
            login_response(
                &app,
                &headers,
                StatusCode::UNAUTHORIZED,
                Some(&e.to_string()),
                None,
                user,
            )
            .await
        }
        Err(e) => op_error_page(&e, None),
    }
}

fn sso_error_words(app: &App, e: &SsoError) -> (StatusCode, String) {
    let name = app
        .ops
        .sso()
        .map_or("the identity provider", |s| s.settings.name.as_str());
    match e {
        SsoError::NotConfigured => (StatusCode::NOT_FOUND, e.to_string()),
        SsoError::Provider { .. } => {
            tracing::warn!(error = %e, "single sign-on: provider unreachable");
            (
                StatusCode::BAD_GATEWAY,
                format!(
                    "Sign-in with {name} is not available right now: {e}. Log in with a local Medgate account (break-glass) meanwhile, or try again later."
                ),
            )
        }
        SsoError::Oidc(_) => {
            tracing::warn!(error = %e, "single sign-on: ID token refused");
            (
                StatusCode::UNAUTHORIZED,
                format!(
                    "Sign-in with {name} was refused: {e}. Try again; if it persists, tell the fleet's admin."
                ),
            )
        }
        SsoError::State | SsoError::Denied(_) => (StatusCode::BAD_REQUEST, e.to_string()),
        SsoError::Refused(_) => (StatusCode::FORBIDDEN, e.to_string()),
        SsoError::Op(op) => {
            tracing::error!(error = %op, "single sign-on failed");
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// `GET /auth/oidc/start` (the login page's button): to the provider, with the pending sign-in
/// in a signed cookie. Nothing changes here before the callback, which needs that cookie: a
/// link from another site starts at most a sign-in of the browser's own user.
pub async fn sso_start(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if app.ops.sso().is_none() {
        return login_response(
            &app,
            &headers,
            StatusCode::OK,
            None,
            Some("Single sign-on is not configured here: log in with your Medgate account."),
            "",
        )
        .await;
    }
    match app.ops.sso_begin().await {
        Ok((url, pending)) => {
            let secure = if app.ops.cookie_secure() {
                "; Secure"
            } else {
                ""
            };
            // Lax, not Strict: it must come back with the provider's (cross-site) redirect.
            let cookie = format!(
                "{}={pending}; Path=/auth/oidc; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
                oidc::PENDING_COOKIE,
                oidc::PENDING_SECS
            );
            redirect(url.as_str(), &[cookie])
        }
        Err(e) => {
            let (status, msg) = sso_error_words(&app, &e);
            login_response(&app, &headers, status, Some(&msg), None, "").await
        }
    }
}

/// The provider's answer.
#[derive(Debug, Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    /// RFC 9207: the issuer of the answer, when the provider says it.
    iss: Option<String>,
}

/// `GET /auth/oidc/callback?code=&state=`: the session, then the user's first page.
pub async fn sso_callback(
    State(app): State<Arc<App>>,
    Extension(source): Extension<Source>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let secure = if app.ops.cookie_secure() {
        "; Secure"
    } else {
        ""
    };
    let clear = format!(
        "{}=; Path=/auth/oidc; HttpOnly; SameSite=Lax; Max-Age=0{secure}",
        oidc::PENDING_COOKIE
    );
    let fail = async |e: SsoError| {
        let (status, msg) = sso_error_words(&app, &e);
        with_cookies(
            login_response(&app, &headers, status, Some(&msg), None, "").await,
            std::slice::from_ref(&clear),
        )
    };
    if let Some(err) = &q.error {
        let words: String = q
            .error_description
            .as_deref()
            .unwrap_or(err.as_str())
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        return fail(SsoError::Denied(words)).await;
    }
    if let (Some(iss), Some(sso)) = (&q.iss, app.ops.sso())
        && iss.trim_end_matches('/') != sso.settings.issuer
    {
        return fail(SsoError::Denied(
            "the answer comes from another issuer than auth.oidc.issuer (mix-up)".into(),
        ))
        .await;
    }
    let (Some(code), Some(state)) = (q.code.as_deref(), q.state.as_deref()) else {
        // Nothing in progress (a bookmark of this address): the login page.
        return login_response(
            &app,
            &headers,
            StatusCode::OK,
            None,
            Some("No sign-in is in progress: start it from this page."),
            "",
        )
        .await;
    };
    let pending = cookie_of(&headers, oidc::PENDING_COOKIE);
    match app.ops.sso_finish(pending, state, code, source.0).await {
        Ok(l) => {
            let r = page(
                StatusCode::OK,
                continue_markup("Signed in", landing(l.user.role), "Continue to the console"),
            );
            with_cookies(
                r,
                &[
                    session::set_cookie(&l.secret, app.ops.cookie_secure()),
                    clear.clone(),
                ],
            )
        }
        Err(e) => fail(e).await,
    }
}

/// `POST /logout` (the form carries the CSRF token): ends the session; an SSO user goes on to
/// the provider's logout when it has one, everyone else back to the login page.
pub async fn logout(State(app): State<Arc<App>>, Extension(actor): Extension<Actor>) -> Response {
    if let Err(e) = app.ops.logout(&actor).await {
        return op_error_page(&e, Some(&actor.principal));
    }
    let clear = session::clear_cookie(app.ops.cookie_secure());
    let sso_user = app
        .ops
        .store
        .user(&actor.principal.user)
        .await
        .ok()
        .flatten()
        .is_some_and(|u| u.sso);
    if sso_user && let Some(url) = app.ops.sso_logout_url().await {
        let r = page(
            StatusCode::OK,
            continue_markup(
                "Signing out at the identity provider",
                url.as_str(),
                "Continue to the identity provider's sign-out",
            ),
        );
        return with_cookies(r, &[clear]);
    }
    redirect("/login", &[clear])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_said_in_words_and_landing_follows_the_role() {
        assert!(throttled_words(30).contains("try again in 30 seconds"));
        assert!(throttled_words(899).contains("try again in about 15 minutes"));
        assert_eq!(landing(Role::Viewer), "/");
        assert_eq!(landing(Role::Auditor), "/audit");
        assert_eq!(landing(Role::Vendor), "/tokens");
    }

    #[test]
    fn the_login_page_has_its_token_and_the_sso_button_when_configured() {
        let html = login_markup(&LoginView {
            csrf: "t0k",
            sso: Some("Region <login>"),
            ..LoginView::default()
        })
        .into_string();
        assert_eq!(html.matches(r#"name="csrf_token" value="t0k""#).count(), 1);
        assert!(html.contains(r#"href="/auth/oidc/start""#));
        assert!(html.contains("Sign in with Region &lt;login&gt;"));
        let plain = login_markup(&LoginView::default()).into_string();
        assert!(!plain.contains("Sign in with") && !plain.contains("/auth/oidc/start"));
    }
}
