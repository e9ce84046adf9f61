//! alerts (issue 13 part 3): the Alerts page — firing first, then the history, filtered by site
//! and state — with acknowledge and silence buttons for operators and admins (CSRF-checked by
//! the guard, site-scoped by the policy table's `Target::Alert`, audited by the operations).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use maud::{Markup, html};
use serde::Deserialize;

use super::pages::{Nav, layout};
use super::view::{encode, utc};
use super::{error_page, op_error_page, page};
use crate::alerts::rules::age;
use crate::app::App;
use crate::auth::policy::Permission;
use crate::auth::{Credential, Principal};
use crate::model::{Alert, AlertState, Severity};
use crate::ops::Actor;
use crate::store::alerts::AlertFilter;

/// The page's filters (`?site=&state=&device=`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AlertsQuery {
    site: String,
    state: String,
    device: String,
    done: String,
}

/// The silence form.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SilenceForm {
    minutes: u64,
    back: String,
}

/// The acknowledge form.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AckForm {
    back: String,
}

/// Silence durations offered (minutes, label).
const SILENCES: [(u64, &str); 4] = [
    (60, "1 h"),
    (240, "4 h"),
    (1440, "24 h"),
    (10_080, "7 days"),
];

fn back_to(back: &str) -> Response {
    // Only this page's own query comes back (no open redirect).
    let to = if back.starts_with("/alerts") && !back.starts_with("//") {
        back
    } else {
        "/alerts"
    };
    let sep = if to.contains('?') { '&' } else { '?' };
    match HeaderValue::from_str(&format!("{to}{sep}done=1")) {
        Ok(v) => {
            let mut r = StatusCode::SEE_OTHER.into_response();
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => error_page(StatusCode::BAD_REQUEST, "bad redirect", None),
    }
}

/// `GET /alerts`.
pub async fn alerts(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<AlertsQuery>,
) -> Response {
    let who = &actor.principal;
    let state = match crate::ops::alerts::state_filter(Some(&q.state)) {
        Ok(s) => s,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e.to_string(), Some(who)),
    };
    let f = AlertFilter {
        site: Some(q.site.clone()).filter(|s| !s.is_empty()),
        state,
        device: Some(q.device.clone()).filter(|s| !s.is_empty()),
        limit: Some(500),
    };
    let sites = match app.ops.sites(&who.sites).await {
        Ok(s) => s.into_iter().map(|s| s.id).collect::<Vec<_>>(),
        Err(e) => return op_error_page(&e, Some(who)),
    };
    match app.ops.alerts(&who.sites, &f).await {
        Ok(list) => page(
            StatusCode::OK,
            render(who, &q, &sites, &list, crate::store::now_db()),
        ),
        Err(e) => op_error_page(&e, Some(who)),
    }
}

/// `POST /alerts/{id}/ack`.
pub async fn ack(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Form(f): Form<AckForm>,
) -> Response {
    match app.ops.ack_alert(&actor, &id).await {
        Ok(_) => back_to(&f.back),
        Err(e) => op_error_page(&e, Some(&actor.principal)),
    }
}

/// `POST /alerts/{id}/silence`.
pub async fn silence(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Form(f): Form<SilenceForm>,
) -> Response {
    match app.ops.silence_alert(&actor, &id, f.minutes).await {
        Ok(_) => back_to(&f.back),
        Err(e) => op_error_page(&e, Some(&actor.principal)),
    }
}

fn csrf(p: &Principal) -> &str {
    match &p.credential {
        Credential::Session { csrf, .. } => csrf,
        _ => "",
    }
}

fn severity_mark(s: Severity) -> Markup {
    // Never colour alone: an icon and the word.
    match s {
        Severity::Critical => {
            html! { span.sev.sev-critical { span aria-hidden="true" { "✖ " } "Critical" } }
        }
        Severity::Warning => {
            html! { span.sev.sev-warning { span aria-hidden="true" { "⚠ " } "Warning" } }
        }
    }
}

fn row_class(a: &Alert) -> String {
    match a.state {
        AlertState::Firing => format!("firing sev-row-{}", a.severity),
        AlertState::Resolved => "resolved".into(),
    }
}

/// The page (pure).
pub fn render(
    who: &Principal,
    q: &AlertsQuery,
    sites: &[String],
    list: &[Alert],
    now_ms: i64,
) -> Markup {
    let operate = Permission::DevicesOperate.granted_to(who.role);
    let back = format!(
        "/alerts?site={}&state={}&device={}",
        encode(&q.site),
        encode(&q.state),
        encode(&q.device)
    );
    let firing = list
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .count();
    layout(
        "Alerts",
        Nav::Alerts,
        Some(who),
        html! {
            h1 { "Alerts" }
            p.muted {
                (firing) " firing"
                @if q.state != "firing" { ", " (list.len() - firing) " resolved shown" }
                ". Alerts carry device figures only (counts, ages, AE titles), never patient data."
            }
            @if q.done == "1" { p.notice role="status" { "Done." } }
            form.filters method="get" action="/alerts" {
                label { "Site"
                    select name="site" {
                        option value="" selected[q.site.is_empty()] { "All my sites" }
                        @for s in sites { option value=(s) selected[q.site == *s] { (s) } }
                    }
                }
                label { "State"
                    select name="state" {
                        option value="" selected[q.state.is_empty()] { "Firing and resolved" }
                        option value="firing" selected[q.state == "firing"] { "Firing" }
                        option value="resolved" selected[q.state == "resolved"] { "Resolved" }
                    }
                }
                @if !q.device.is_empty() { input type="hidden" name="device" value=(q.device); }
                button type="submit" { "Show" }
            }
            @if list.is_empty() {
                p { "No alerts match." }
            } @else {
                div.scroll {
                    table.alerts {
                        thead { tr {
                            th { "Severity" } th { "State" } th { "Device" } th { "Site" } th { "What" }
                            th { "Raised" } th { "Cleared" } th { "Handled" }
                            @if operate { th { "Actions" } }
                        } }
                        tbody {
                            @for a in list {
                                tr class=(row_class(a)) {
                                    td.nowrap { (severity_mark(a.severity)) }
                                    td.nowrap {
                                        @if a.state == AlertState::Firing {
                                            strong { "Firing" } br; span.small.muted { "for " (age(u64::try_from((now_ms - a.raised_ms).max(0) / 1000).unwrap_or(0))) }
                                        } @else { "Resolved" }
                                    }
                                    td.nowrap { a href=(format!("/devices/{}", encode(&a.device))) { (a.device) } }
                                    td.nowrap { (a.site) }
                                    td.words { strong { (a.kind.as_str().replace('_', " ")) } br; (a.words) }
                                    td.when { (utc(a.raised_ms)) }
                                    td.when {
                                        @if let Some(c) = a.cleared_ms {
                                            (utc(c)) br; span.small.muted { "after " (age(u64::try_from((c - a.raised_ms).max(0) / 1000).unwrap_or(0))) }
                                        } @else { "—" }
                                    }
                                    td {
                                        @if let (Some(by), Some(at)) = (&a.acked_by, a.acked_ms) {
                                            "Acknowledged by " (by) br; span.small.muted { (utc(at)) }
                                        }
                                        @if let Some(u) = a.silenced_until_ms.filter(|u| *u > now_ms) {
                                            @if a.acked_by.is_some() { br; }
                                            "Silenced until " span.t { (utc(u)) }
                                        }
                                        @if a.acked_by.is_none() && a.silenced_until_ms.is_none_or(|u| u <= now_ms) { span.muted { "—" } }
                                    }
                                    @if operate {
                                        td.actions-cell {
                                            @if a.acked_ms.is_none() && a.state == AlertState::Firing {
                                                form method="post" action=(format!("/alerts/{}/ack", encode(&a.id))) {
                                                    input type="hidden" name="csrf_token" value=(csrf(who));
                                                    input type="hidden" name="back" value=(back);
                                                    button type="submit" { "Acknowledge" }
                                                }
                                            }
                                            @if a.state == AlertState::Firing {
                                                form method="post" action=(format!("/alerts/{}/silence", encode(&a.id))) {
                                                    input type="hidden" name="csrf_token" value=(csrf(who));
                                                    input type="hidden" name="back" value=(back);
                                                    label.inline { span.visually-hidden { "Silence for" }
                                                        select name="minutes" {
                                                            @for (m, l) in SILENCES { option value=(m) { (l) } }
                                                        }
                                                    }
                                                    button type="submit" { "Silence" }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}
