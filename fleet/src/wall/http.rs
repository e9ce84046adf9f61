//! The wall's handlers: `GET /wall/{token}` (the page), `GET /wall/{token}/events` (SSE: a full
//! snapshot on connect, then a push per change, at most 5 a second, a heartbeat every 2 s, and
//! a `revoked` event that ends the stream the moment the link is revoked), the script and style
//! sheet, and the console's display links page (admins: create, list, revoke; audited and
//! CSRF-checked by `api::guard` like every console form).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use maud::{Markup, html};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::page::{self, NightMode};
use super::{HEARTBEAT, PUSH_GAP, REFRESH, TzOffset, parse_night};
use crate::app::App;
use crate::auth::{Credential, Principal};
use crate::console::pages::{Nav, layout};
use crate::console::view::{ago, utc};
use crate::console::{error_page, page as console_page};
use crate::model::Site;
use crate::ops::{Actor, OpError};
use crate::store::displays::DisplayLink;
use crate::store::now_db;

fn static_file(content_type: &'static str, body: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// `GET /static/wall.js`.
pub async fn js() -> Response {
    static_file("text/javascript; charset=utf-8", page::JS)
}

/// `GET /static/wall.css`.
pub async fn css() -> Response {
    static_file("text/css; charset=utf-8", page::CSS)
}

/// `GET /wall/{token}?night=on|off|auto&tz=<minutes>` (`tz`: the screen's
/// `Date.getTimezoneOffset()`, for its local "today"; default UTC).
#[derive(Debug, Deserialize)]
pub struct WallQuery {
    night: Option<String>,
    tz: Option<String>,
}

/// `GET /wall/{token}/events?tz=<minutes>`.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    tz: Option<String>,
}

fn not_valid() -> Response {
    console_page(StatusCode::NOT_FOUND, page::invalid())
}

fn failed(e: &OpError) -> Response {
    tracing::error!(error = %e, "wall failed");
    let mut r = console_page(
        StatusCode::SERVICE_UNAVAILABLE,
        html! { p { "The fleet cannot read its database just now; this page retries by itself." } },
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    r
}

/// `GET /wall/{token}`: the wall of a display link (its secret is the authorisation).
pub async fn wall(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    Query(q): Query<WallQuery>,
) -> Response {
    let mode = match NightMode::parse(q.night.as_deref()) {
        Ok(m) => m,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e, None),
    };
    let tz = match TzOffset::parse(q.tz.as_deref()) {
        Ok(t) => t,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e, None),
    };
    let link = match app.ops.open_display(&token).await {
        Ok(Some(l)) => l,
        Ok(None) => return not_valid(),
        Err(e) => return failed(&e),
    };
    match app.ops.wall_of(&link, tz).await {
        Ok(w) => console_page(
            StatusCode::OK,
            page::page(
                &link.name,
                &format!("/wall/{token}/events"),
                &w,
                link.night,
                mode,
            ),
        ),
        Err(e) => failed(&e),
    }
}

/// A snapshot event's data.
#[derive(Debug, Serialize)]
struct Snapshot {
    /// When it was computed (the fleet's clock, Unix ms).
    at_ms: i64,
    /// When the latest change it shows was signalled (Unix ms; 0: none since start).
    change_ms: i64,
    /// The live fragment.
    html: String,
}

/// A heartbeat event's data.
#[derive(Debug, Serialize)]
struct Beat {
    at_ms: i64,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<SseEvent, Infallible>> + Send>>;

/// One open wall stream.
struct Feed {
    app: Arc<App>,
    link: DisplayLink,
    tz: TzOffset,
    changed: tokio::sync::watch::Receiver<i64>,
    revoked: tokio::sync::broadcast::Receiver<String>,
    beat: tokio::time::Interval,
    beats: u32,
    last_push: tokio::time::Instant,
    pending: bool,
    first: bool,
    done: bool,
}

impl Feed {
    async fn snapshot(&mut self) -> Option<SseEvent> {
        let change_ms = *self.changed.borrow_and_update();
        match self.app.ops.wall_of(&self.link, self.tz).await {
            Ok(w) => {
                self.last_push = tokio::time::Instant::now();
                self.beats = 0;
                let data = Snapshot {
                    at_ms: w.at_ms,
                    change_ms,
                    html: page::fragment(&w).into_string(),
                };
                SseEvent::default().event("snapshot").json_data(&data).ok()
            }
            Err(e) => {
                // Retried at the next heartbeat; the wall shows its data ageing meanwhile.
                tracing::warn!(error = %e, "wall snapshot failed");
                self.pending = true;
                None
            }
        }
    }

    fn revoked_event(&mut self) -> SseEvent {
        self.done = true;
        SseEvent::default()
            .event("revoked")
            .data("this display link is not valid any more")
    }

    /// The next event, or `None` when the stream ends.
    async fn next(&mut self) -> Option<SseEvent> {
        if self.done {
            return None;
        }
        if self.first {
            self.first = false;
            if let Some(e) = self.snapshot().await {
                return Some(e);
            }
        }
        loop {
            let gap_over = self.last_push + PUSH_GAP;
            tokio::select! {
                r = self.changed.changed() => {
                    if r.is_err() {
                        return None;
                    }
                    self.pending = true;
                }
                r = self.revoked.recv() => match r {
                    Ok(id) if id == self.link.id => return Some(self.revoked_event()),
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        if !self.app.ops.display_active(&self.link.id).await.unwrap_or(true) {
                            return Some(self.revoked_event());
                        }
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = tokio::time::sleep_until(gap_over), if self.pending => {
                    self.pending = false;
                    if let Some(e) = self.snapshot().await {
                        return Some(e);
                    }
                }
                _ = self.beat.tick() => {
                    self.beats += 1;
                    let every = u32::try_from(REFRESH.as_secs() / HEARTBEAT.as_secs()).unwrap_or(5);
                    if self.beats >= every {
                        // Another replica may have revoked the link.
                        if !self.app.ops.display_active(&self.link.id).await.unwrap_or(true) {
                            return Some(self.revoked_event());
                        }
                        self.pending = true;
                        continue;
                    }
                    let beat = Beat { at_ms: now_db() };
                    if let Ok(e) = SseEvent::default().event("beat").json_data(&beat) {
                        return Some(e);
                    }
                }
            }
        }
    }
}

/// `GET /wall/{token}/events`: the wall's live stream (404 for a link that is not valid, 400
/// for a `tz` that is no offset).
pub async fn events(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Response {
    let tz = match TzOffset::parse(q.tz.as_deref()) {
        Ok(t) => t,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let link = match app.ops.open_display(&token).await {
        Ok(Some(l)) => l,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                "this display link is not valid any more\n",
            )
                .into_response();
        }
        Err(e) => return failed(&e),
    };
    // Subscribe before the first snapshot: no change can fall between the two.
    let changed = app.ops.wall.subscribe_changes();
    let revoked = app.ops.wall.subscribe_revoked();
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    beat.reset();
    let feed = Feed {
        app,
        link,
        tz,
        changed,
        revoked,
        beat,
        beats: 0,
        last_push: tokio::time::Instant::now(),
        pending: false,
        first: true,
        done: false,
    };
    let stream: EventStream = Box::pin(futures_util::stream::unfold(feed, |mut f| async move {
        f.next().await.map(|e| (Ok(e), f))
    }));
    let mut r = Sse::new(stream).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

// ---- the console's display links page ----

/// A message after a change, an error, and a new link's URL (shown once).
#[derive(Debug, Default)]
struct Flash {
    done: Option<String>,
    error: Option<String>,
    url: Option<String>,
}

fn csrf_field(p: &Principal) -> Markup {
    let v = match &p.credential {
        Credential::Session { csrf, .. } => csrf.as_str(),
        _ => "",
    };
    html! { input type="hidden" name="csrf_token" value=(v); }
}

fn sites_words(sites: &Option<Vec<String>>, all: &[Site]) -> String {
    match sites {
        None => "every site".into(),
        Some(s) => s
            .iter()
            .map(|id| {
                all.iter()
                    .find(|x| &x.id == id)
                    .map_or_else(|| id.clone(), |x| x.name.clone())
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn night_words(n: Option<(u8, u8)>) -> String {
    match n {
        None => "never".into(),
        Some((f, t)) => format!("{f:02}:00 to {t:02}:00"),
    }
}

fn displays_markup(
    who: &Principal,
    links: &[DisplayLink],
    sites: &[Site],
    f: &Flash,
    now_ms: i64,
) -> Markup {
    layout(
        "Wall displays",
        Nav::Displays,
        Some(who),
        html! {
            h1 { "Wall displays" }
            @if let Some(d) = &f.done { p.notice role="status" { (d) } }
            @if let Some(e) = &f.error { p.error role="alert" { (e) } }
            @if let Some(url) = &f.url {
                div.secret role="status" {
                    p { strong { "The display link" } " — open it on the screen, or copy it now: it is not shown again." }
                    code #secret { (url) }
                    p { a href=(url) target="_blank" rel="noopener" { "Open the wall" } }
                }
            }
            p.muted { "A display link opens the wall — a read-only, full-screen view of the appliances of its sites — on a TV without anyone logging in. It never expires by itself; revoke it here when the screen is gone. The wall shows states, counts and ages only." }
            @if links.is_empty() {
                p.muted { "No display link yet." }
            } @else {
                table {
                    thead { tr {
                        th scope="col" { "Screen" } th scope="col" { "Sites" } th scope="col" { "Night mode" }
                        th scope="col" { "Created" } th scope="col" { "Last opened" } th scope="col" { "State" }
                        th scope="col" { span.visually-hidden { "Action" } }
                    } }
                    tbody {
                        @for l in links {
                            tr {
                                td { strong { (l.name) } br; code.muted { (l.id) } }
                                td { (sites_words(&l.sites, sites)) }
                                td.nowrap { (night_words(l.night)) }
                                td.nowrap { (utc(l.created_ms)) br; span.muted { "by " (l.created_by) } }
                                td.nowrap { @if let Some(u) = l.last_used_ms { span title=(utc(u)) { (ago(now_ms, u)) } } @else { span.muted { "never" } } }
                                td.nowrap { @if let Some(r) = l.revoked_ms { span.state-failed { "revoked " (utc(r)) } } @else { span.state-online { "active" } } }
                                td.nowrap {
                                    @if l.active() {
                                        form method="post" action=(format!("/displays/{}/revoke", l.id)) {
                                            (csrf_field(who))
                                            button.small.danger type="submit" aria-label=(format!("Revoke display link {}", l.name)) { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section.panel aria-labelledby="new-display" {
                h2 #new-display { "Create a display link" }
                form.stack method="post" action="/displays" {
                    (csrf_field(who))
                    label { "Which screen" input name="name" required maxlength="100" placeholder="e.g. IT office TV"; }
                    fieldset.sites {
                        legend { "Sites (none ticked: every site you may see)" }
                        @if sites.is_empty() { p.muted { "No site exists yet." } }
                        @for s in sites {
                            label.inline {
                                input type="checkbox" name="sites" value=(s.id);
                                (s.name) @if s.name != s.id { " " span.muted { "(" (s.id) ")" } }
                            }
                        }
                    }
                    fieldset {
                        legend { "Night mode: dimmed between these hours of the screen's local time (leave empty for never)" }
                        label.inline { "From hour " input type="number" name="night_from" min="0" max="23" placeholder="20"; }
                        label.inline { " to hour " input type="number" name="night_to" min="0" max="23" placeholder="7"; }
                    }
                    div { button type="submit" { "Create display link" } }
                }
            }
        },
    )
}

fn status_of(e: &OpError) -> StatusCode {
    match e {
        OpError::NotFound(_) => StatusCode::NOT_FOUND,
        OpError::Invalid(_) | OpError::InvalidConfig(_) => StatusCode::BAD_REQUEST,
        OpError::Forbidden(_) => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn displays_with(app: &App, actor: &Actor, status: StatusCode, f: Flash) -> Response {
    let (links, sites) = match (
        app.ops.displays().await,
        app.ops.sites(&actor.principal.sites).await,
    ) {
        (Ok(l), Ok(s)) => (l, s),
        (Err(e), _) | (_, Err(e)) => {
            return error_page(status_of(&e), &e.to_string(), Some(&actor.principal));
        }
    };
    console_page(
        status,
        displays_markup(&actor.principal, &links, &sites, &f, now_db()),
    )
}

/// `GET /displays`.
pub async fn displays_page(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
) -> Response {
    displays_with(&app, &actor, StatusCode::OK, Flash::default()).await
}

/// The absolute URL of a wall: `[devices] public_url` if set, else this request's host.
fn wall_url(app: &App, headers: &HeaderMap, secret: &str) -> String {
    let base = app
        .ops
        .config
        .devices
        .public_url
        .clone()
        .or_else(|| {
            let host = headers.get(header::HOST)?.to_str().ok()?;
            let scheme = if app.ops.config.http.tls.is_some() {
                "https"
            } else {
                "http"
            };
            Some(format!("{scheme}://{host}"))
        })
        .unwrap_or_default();
    format!("{}/wall/{secret}", base.trim_end_matches('/'))
}

/// `POST /displays`: creates a link, its URL shown once.
pub async fn displays_create(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let one = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map_or("", |(_, v)| v.as_str())
    };
    let sites: Vec<String> = fields
        .iter()
        .filter(|(k, _)| k == "sites")
        .map(|(_, v)| v.clone())
        .collect();
    let night = match parse_night(one("night_from"), one("night_to")) {
        Ok(n) => n,
        Err(e) => {
            let f = Flash {
                error: Some(e),
                ..Flash::default()
            };
            return displays_with(&app, &actor, StatusCode::BAD_REQUEST, f).await;
        }
    };
    match app
        .ops
        .create_display(&actor, one("name"), Some(sites), night)
        .await
    {
        Ok(n) => {
            let f = Flash {
                done: Some(format!("Display link {:?} created.", n.link.name)),
                url: Some(wall_url(&app, &headers, &n.secret)),
                ..Flash::default()
            };
            displays_with(&app, &actor, StatusCode::OK, f).await
        }
        Err(e) => {
            let f = Flash {
                error: Some(e.to_string()),
                ..Flash::default()
            };
            displays_with(&app, &actor, status_of(&e), f).await
        }
    }
}

/// `POST /displays/{id}/revoke`: the link stops working at once, open walls too.
pub async fn displays_revoke(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Response {
    match app.ops.revoke_display(&actor, &id).await {
        Ok(()) => {
            let f = Flash {
                done: Some(
                    "The display link is revoked: its walls now say it is not valid.".into(),
                ),
                ..Flash::default()
            };
            displays_with(&app, &actor, StatusCode::OK, f).await
        }
        Err(e) => {
            let f = Flash {
                error: Some(e.to_string()),
                ..Flash::default()
            };
            displays_with(&app, &actor, status_of(&e), f).await
        }
    }
}
