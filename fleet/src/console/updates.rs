//! ota (issue 14): the Updates pages. `/updates` lists the campaigns with their progress and
//! the stored bundles; `/updates/campaigns/{id}` shows one campaign's plan and each device's
//! state in words, refreshed by htmx every 2 s. Admins upload bundles (the small `updates.js`
//! posts the file to `POST /api/v1/bundles` with the session's CSRF token and shows the
//! refusal's code and reason), create campaigns (a plain form) and approve, pause, resume or
//! cancel them. Everything is the operations' (site-scoped, audited); this module parses,
//! calls one operation and renders.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use maud::{Markup, html};
use serde::Deserialize;

use super::device_view::{Severity, bytes, duration, wait_words};
use super::pages::{Nav, layout};
use super::view::{ago, encode, utc};
use super::{error_page, op_error_page, page};
use crate::app::App;
use crate::auth::policy::Permission;
use crate::auth::{Credential, Principal};
use crate::ops::Actor;
use crate::ops::ota::{CampaignCommand, CampaignDevice, CampaignView, NewCampaign};
use crate::ota::campaign::{CampaignState, DeviceState};
use crate::store::ota::BundleRecord;

/// How often the campaign page's device table refreshes, seconds.
pub const LIVE_REFRESH_SECS: u64 = 2;

fn csrf(p: &Principal) -> &str {
    match &p.credential {
        Credential::Session { csrf, .. } => csrf,
        _ => "",
    }
}

fn see_other(to: &str) -> Response {
    match HeaderValue::from_str(to) {
        Ok(v) => {
            let mut r = StatusCode::SEE_OTHER.into_response();
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => error_page(StatusCode::BAD_REQUEST, "bad redirect", None),
    }
}

/// `GET /updates`.
pub async fn updates(State(app): State<Arc<App>>, Extension(actor): Extension<Actor>) -> Response {
    let who = &actor.principal;
    let campaigns = match app.ops.campaigns(&who.sites).await {
        Ok(c) => c,
        Err(e) => return op_error_page(&e, Some(who)),
    };
    let bundles = match app.ops.bundles().await {
        Ok(b) => b,
        Err(e) => return op_error_page(&e, Some(who)),
    };
    page(
        StatusCode::OK,
        render_list(who, &campaigns, &bundles, crate::store::now_db()),
    )
}

/// `GET /updates/campaigns/{id}`.
pub async fn campaign(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Response {
    campaign_part(&app, &actor, &id, render_campaign).await
}

/// `GET /updates/campaigns/{id}/live`: the state line and the device table (htmx).
pub async fn live(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Response {
    campaign_part(&app, &actor, &id, live_part).await
}

/// One campaign in the caller's sites, rendered by `render`.
async fn campaign_part(
    app: &App,
    actor: &Actor,
    id: &str,
    render: fn(&Principal, &CampaignView, i64) -> Markup,
) -> Response {
    let who = &actor.principal;
    match app.ops.campaign_view(&who.sites, id).await {
        Ok(v) => page(StatusCode::OK, render(who, &v, crate::store::now_db())),
        Err(e) => op_error_page(&e, Some(who)),
    }
}

/// `POST /updates/campaigns/{id}/{action}` (approve, pause, resume, cancel).
pub async fn command(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let cmd = match action.as_str() {
        "approve" => CampaignCommand::Approve,
        "pause" => CampaignCommand::Pause,
        "resume" => CampaignCommand::Resume,
        "cancel" => CampaignCommand::Cancel,
        _ => {
            return error_page(
                StatusCode::NOT_FOUND,
                "no such campaign action (approve, pause, resume, cancel)",
                Some(&actor.principal),
            );
        }
    };
    match app.ops.campaign_command(&actor, &id, cmd).await {
        Ok(_) => see_other(&format!("/updates/campaigns/{}", encode(&id))),
        Err(e) => op_error_page(&e, Some(&actor.principal)),
    }
}

/// The new-campaign form, as the browser sends it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CampaignForm {
    name: String,
    bundle: String,
    sites: String,
    tags: String,
    versions: String,
    hardware: String,
    canary: String,
    waves: String,
    soak_minutes: String,
    failure_threshold_pct: String,
    mode: String,
    deadline: String,
    windows: String,
}

/// Words separated by commas or white space.
fn words(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The form as the API's request (its JSON shape, so that the operation checks both the same
/// way); the message names the field.
pub fn campaign_request(f: &CampaignForm) -> Result<NewCampaign, String> {
    let number = |field: &str, v: &str| -> Result<Option<u64>, String> {
        let v = v.trim();
        if v.is_empty() {
            return Ok(None);
        }
        v.parse()
            .map(Some)
            .map_err(|_| format!("{field}: {v:?} is not a whole number"))
    };
    let mut j = serde_json::json!({
        "name": f.name.trim(),
        "bundle": f.bundle.trim(),
        "targets": {
            "sites": words(&f.sites),
            "tags": words(&f.tags),
            "versions": words(&f.versions),
            "hardware": words(&f.hardware),
        },
        "canary": words(&f.canary),
    });
    let waves = words(&f.waves)
        .iter()
        .map(|w| {
            w.trim_end_matches('%')
                .parse::<u8>()
                .map_err(|_| format!("waves: {w:?} is not a share in percent (1 to 100)"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !waves.is_empty() {
        j["wave_shares"] = serde_json::json!(waves);
    }
    if let Some(m) = number("soak minutes", &f.soak_minutes)? {
        j["soak_secs"] = serde_json::json!(m.saturating_mul(60));
    }
    if let Some(t) = number("failure threshold", &f.failure_threshold_pct)? {
        j["failure_threshold_pct"] = serde_json::json!(t);
    }
    if !f.mode.trim().is_empty() {
        j["mode"] = serde_json::json!(f.mode.trim());
    }
    if !f.deadline.trim().is_empty() {
        let ms = crate::civil::parse_utc_minute(f.deadline.trim()).ok_or_else(|| {
            format!(
                "deadline: {:?} is not a time (YYYY-MM-DD HH:MM, UTC)",
                f.deadline.trim()
            )
        })?;
        j["deadline_ms"] = serde_json::json!(ms);
    }
    let mut windows = Vec::new();
    for line in f.windows.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (site, start, minutes, offset) = match parts[..] {
            [site, start, minutes] => (site, start, minutes, None),
            [site, start, minutes, offset] => (site, start, minutes, Some(offset)),
            _ => {
                return Err(format!(
                    "maintenance windows: {line:?} is not \"SITE HH:MM MINUTES\" (the site's time zone) or \"SITE HH:MM MINUTES UTC-OFFSET-MINUTES\" (e.g. \"st-olav 22:00 240\")"
                ));
            }
        };
        let minutes: u16 = minutes
            .parse()
            .map_err(|_| format!("maintenance windows: {minutes:?} is not a number of minutes"))?;
        let offset: Option<i16> = offset
            .map(|o| {
                o.trim_start_matches('+')
                    .parse()
                    .map_err(|_| format!("maintenance windows: {o:?} is not an offset in minutes"))
            })
            .transpose()?;
        let mut w = serde_json::json!({"site": site, "start": start, "minutes": minutes});
        if let Some(o) = offset {
            w["utc_offset_minutes"] = serde_json::json!(o);
        }
        windows.push(w);
    }
    j["windows"] = serde_json::Value::Array(windows);
    serde_json::from_value(j).map_err(|e| e.to_string())
}

/// `POST /updates/campaigns`.
pub async fn create(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Form(f): Form<CampaignForm>,
) -> Response {
    let req = match campaign_request(&f) {
        Ok(r) => r,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e, Some(&actor.principal)),
    };
    match app.ops.create_campaign(&actor, req).await {
        Ok(v) => see_other(&format!(
            "/updates/campaigns/{}",
            encode(v.campaign.id.as_str())
        )),
        Err(e) => op_error_page(&e, Some(&actor.principal)),
    }
}

/// A campaign's state in words.
pub fn campaign_words(v: &CampaignView) -> (Severity, String) {
    let c = &v.campaign;
    let n = |s| v.count(s);
    let total = v.total();
    match c.state {
        CampaignState::Draft => (
            Severity::Warn,
            format!("Draft: waits for an admin's approval; {total} devices targeted."),
        ),
        CampaignState::Running => (
            Severity::Ok,
            format!(
                "Running: {} of {total} healthy on {}, {} failed.",
                n(DeviceState::Healthy),
                v.version,
                n(DeviceState::Failed)
            ),
        ),
        CampaignState::Paused => (
            Severity::Bad,
            format!(
                "Paused{}: nothing new is offered; {} of {total} healthy, {} failed.",
                c.paused_reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                n(DeviceState::Healthy),
                n(DeviceState::Failed)
            ),
        ),
        CampaignState::Completed => (
            if n(DeviceState::Failed) > 0 {
                Severity::Warn
            } else {
                Severity::Ok
            },
            format!(
                "Completed: {} of {total} healthy on {}, {} failed.",
                n(DeviceState::Healthy),
                v.version,
                n(DeviceState::Failed)
            ),
        ),
        CampaignState::Cancelled => (
            Severity::Warn,
            format!(
                "Cancelled: {} withdrawn; {} healthy on {} stay on it.",
                n(DeviceState::Withdrawn),
                n(DeviceState::Healthy),
                v.version
            ),
        ),
    }
}

/// One device's state in words: what it does now, and why it waits or failed.
pub fn device_words(d: &CampaignDevice, version: &str) -> (Severity, String) {
    let running = d
        .running
        .as_deref()
        .map(|r| format!("; it runs {r}"))
        .unwrap_or_default();
    let code = d.code.as_deref();
    let why = code.map(|c| format!(" ({c})")).unwrap_or_default();
    match d.state {
        DeviceState::Pending => (Severity::Ok, "Waits for its wave.".into()),
        DeviceState::Offered => (
            Severity::Ok,
            format!("Offered {version}; the device has not answered yet{running}."),
        ),
        DeviceState::Downloading => (Severity::Ok, format!("Downloading {version}{running}.")),
        DeviceState::Verifying => (
            Severity::Ok,
            format!("Verifying {version} (signatures, hashes) before writing anything."),
        ),
        DeviceState::Installing => (
            Severity::Ok,
            format!("Installing {version} into the inactive slot{running}."),
        ),
        DeviceState::WaitingIdle => (
            Severity::Warn,
            format!(
                "{version} installed, waiting for idle DICOM: {}{running}.",
                wait_words(code)
            ),
        ),
        DeviceState::Switching => (Severity::Ok, format!("Switching to {version}.")),
        DeviceState::Probing => (
            Severity::Warn,
            format!(
                "{version} on probation until it proves healthy (C-ECHO, spool, link, archive)."
            ),
        ),
        DeviceState::Installed => (
            Severity::Ok,
            format!(
                "Runs {version}, committed; soaking: forwarding watched against its figures before the update."
            ),
        ),
        DeviceState::Healthy => (
            Severity::Ok,
            format!("Healthy on {version} for the soak period."),
        ),
        DeviceState::Withdrawn => (
            Severity::Warn,
            format!("Withdrawn: the campaign was cancelled before it switched{running}."),
        ),
        DeviceState::Failed => {
            let what = match d.fail.map(|f| f.as_str()) {
                Some("rolled_back") => {
                    format!("rolled back by itself{why}: the previous version runs")
                }
                Some("refused") => format!("refused the bundle before writing anything{why}"),
                Some("abandoned") => {
                    "gave up: its deadline passed before DICOM was idle".to_owned()
                }
                Some("not_running") => "says installed but runs another version".to_owned(),
                Some("reverted") => {
                    "went back to another version after it was installed".to_owned()
                }
                Some("unhealthy_offline") => "offline too long during its soak".to_owned(),
                Some("unhealthy_forward_errors") => {
                    "more forwarding errors than before the update".to_owned()
                }
                Some("unhealthy_forward_delay") => {
                    "forwarding slower than before the update".to_owned()
                }
                Some(other) => format!("failed ({other}){why}"),
                None => format!("failed{why}"),
            };
            (Severity::Bad, format!("Failed: {what}{running}."))
        }
    }
}

fn mode_words(m: medgate_contract::InstallMode) -> &'static str {
    match m {
        medgate_contract::InstallMode::Soft => {
            "soft: each device waits for idle DICOM and its window"
        }
        medgate_contract::InstallMode::Forced => {
            "forced: after the deadline, the first idle moment (never during a study)"
        }
    }
}

fn state_badge(s: CampaignState) -> Markup {
    html! { span class=(format!("badge campaign-{}", s.as_str())) { (s.as_str()) } }
}

fn progress(v: &CampaignView) -> Markup {
    let total = v.total();
    let healthy = v.count(DeviceState::Healthy);
    let failed = v.count(DeviceState::Failed);
    html! {
        span.progress {
            meter min="0" max=(total.max(1)) value=(healthy) title=(format!("{healthy} of {total} healthy")) {}
            " " (healthy) " / " (total) " healthy"
            @if failed > 0 { ", " span.sev.sev-critical { (failed) " failed" } }
        }
    }
}

/// The list page (pure).
pub fn render_list(
    who: &Principal,
    campaigns: &[CampaignView],
    bundles: &[BundleRecord],
    now_ms: i64,
) -> Markup {
    let admin = Permission::UpdatesManage.granted_to(who.role);
    layout(
        "Updates",
        Nav::Updates,
        Some(who),
        html! {
            h1 { "Updates" }
            p.muted { "Vendor-signed bundles, rolled out in waves: canary devices first, each wave only after the last ran healthy for its soak; a campaign pauses by itself when too many devices fail. Devices never switch during a study." }
            h2 { "Campaigns" }
            @if campaigns.is_empty() {
                p.muted { "No campaign yet." @if admin { " Upload a bundle, then create one below." } }
            } @else {
                table.campaigns {
                    thead { tr { th { "Campaign" } th { "Version" } th { "State" } th { "Progress" } th { "Created" } } }
                    tbody {
                        @for v in campaigns {
                            @let c = &v.campaign;
                            tr data-campaign=(c.id.as_str()) {
                                td { a href=(format!("/updates/campaigns/{}", encode(c.id.as_str()))) { (c.name) } }
                                td { (v.version) }
                                td { (state_badge(c.state)) @if let Some(r) = &c.paused_reason { " " span.muted { (r) } } }
                                td { (progress(v)) }
                                td { span title=(utc(c.created_ms)) { (ago(now_ms, c.created_ms)) } " by " (c.created_by) }
                            }
                        }
                    }
                }
            }
            h2 { "Bundles" }
            @if bundles.is_empty() {
                p.muted { "No bundle stored." }
            } @else {
                table.bundles {
                    thead { tr { th { "Version" } th { "Product" } th { "Kind" } th { "Hardware" } th { "Size" } th { "Expires" } th { "SHA-256" } } }
                    tbody {
                        @for b in bundles {
                            tr {
                                td { (b.version) @if let Some(f) = &b.floor { " " span.muted { "(floor " (f) ")" } } }
                                td { (b.product) }
                                td { (b.payload_kind) }
                                td { (b.hardware.join(", ")) }
                                td { (bytes(b.size)) }
                                td { span title=(utc(b.expires_ms)) { (utc(b.expires_ms)) } }
                                td { code title=(b.sha256.as_str()) { (b.sha256.as_str().get(..12).unwrap_or_default()) "…" } }
                            }
                        }
                    }
                }
            }
            @if admin {
                h2 { "Upload a bundle" }
                form #bundle-upload data-csrf=(csrf(who)) {
                    p.muted { "The vendor's signed .mgb file. It is verified here (signatures, thresholds, expiry, countersignature, payload hash) before it is stored; a refused file is not kept." }
                    label { "Bundle file " input type="file" name="bundle" accept=".mgb" required; }
                    button type="submit" { "Upload and verify" }
                    p #bundle-upload-result role="status" aria-live="polite" {}
                }
                script src=(super::assets::UPDATES_JS_PATH) integrity=(super::assets::updates_js_sri()) defer {}
                @if !bundles.is_empty() {
                    h2 { "New campaign" }
                    form.campaign-form method="post" action="/updates/campaigns" {
                        input type="hidden" name="csrf_token" value=(csrf(who));
                        label { "Name " input type="text" name="name" required maxlength="100" placeholder="1.4.0 for the north hospitals"; }
                        label { "Bundle "
                            select name="bundle" required {
                                @for b in bundles { option value=(b.sha256.as_str()) { (b.product) " " (b.version) " (" (b.hardware.join(", ")) ")" } }
                            }
                        }
                        fieldset {
                            legend { "Targets (empty: every approved device in your sites)" }
                            label { "Sites " input type="text" name="sites" placeholder="st-olav, north"; }
                            label { "Tags " input type="text" name="tags" placeholder="ct"; }
                            label { "Running version " input type="text" name="versions" placeholder="1.3.2"; }
                            label { "Hardware " input type="text" name="hardware" placeholder="generic-1u-2nic"; }
                        }
                        fieldset {
                            legend { "Waves" }
                            label { "Canary devices (first, alone) " input type="text" name="canary" placeholder="ct-room-1"; }
                            label { "Then shares of the rest, % " input type="text" name="waves" placeholder="25, 100"; }
                            label { "Soak, minutes " input type="number" name="soak_minutes" min="0" placeholder="60"; }
                            label { "Pause when more than this % failed " input type="number" name="failure_threshold_pct" min="0" max="100" placeholder="10"; }
                        }
                        fieldset {
                            legend { "When" }
                            label { "Mode "
                                select name="mode" {
                                    option value="soft" { "soft: wait for idle DICOM, give up at the deadline" }
                                    option value="forced" { "forced: after the deadline, switch at the first idle moment" }
                                }
                            }
                            label { "Deadline (UTC, YYYY-MM-DD HH:MM) " input type="text" name="deadline" placeholder="2026-12-10 06:00"; }
                            label { "Maintenance windows, one site a line: SITE HH:MM MINUTES, in the site's time zone (or add a fixed UTC offset in minutes) "
                                textarea name="windows" rows="2" placeholder="st-olav 22:00 240" {}
                            }
                        }
                        button type="submit" { "Create (as a draft)" }
                    }
                }
            }
        },
    )
}

/// The campaign page (pure).
pub fn render_campaign(who: &Principal, v: &CampaignView, now_ms: i64) -> Markup {
    let c = &v.campaign;
    let waves = if c.wave_shares.is_empty() {
        "100 %".to_owned()
    } else {
        c.wave_shares
            .iter()
            .map(|s| format!("{s} %"))
            .collect::<Vec<_>>()
            .join(", then ")
    };
    layout(
        &c.name,
        Nav::Updates,
        Some(who),
        html! {
            p { a href="/updates" { "← Updates" } }
            h1 { (c.name) " " (state_badge(c.state)) }
            dl.facts {
                dt { "Installs" } dd { (v.version) " " code title=(c.bundle.as_str()) { (c.bundle.as_str().get(..12).unwrap_or_default()) "…" } }
                dt { "Waves" } dd {
                    @if c.canary.is_empty() { "no canary, " } @else { "canary " (c.canary.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")) ", then " }
                    (waves) " of the rest; "
                    @if c.soak_secs == 0 { "each as soon as the wave before runs it committed" } @else { "each after the wave before ran it healthy for " (duration(c.soak_secs)) }
                }
                dt { "Pauses" } dd { "by itself when more than " (c.failure_threshold_pct) " % of the devices offered failed" }
                dt { "Mode" } dd {
                    (mode_words(c.mode))
                    @if let Some(d) = c.deadline_ms { ", deadline " (utc(i64::try_from(d).unwrap_or(i64::MAX))) }
                }
                @if !c.windows.is_empty() {
                    dt { "Windows" } dd {
                        @for w in &c.windows {
                            span.window {
                                (w.site.as_str()) " " (w.start) " for " (w.minutes) " min "
                                @if let Some(o) = w.utc_offset_minutes { "(UTC" (format!("{o:+}")) " min)" } @else { "(the site's time zone)" }
                            }
                            " "
                        }
                    }
                }
                dt { "Created" } dd { (utc(c.created_ms)) " by " (c.created_by) }
                @if let (Some(by), Some(at)) = (&c.approved_by, c.approved_ms) { dt { "Approved" } dd { (utc(at)) " by " (by) } }
            }
            @if Permission::UpdatesManage.granted_to(who.role) {
                div.actions {
                    @for (action, label, shown) in [
                        ("approve", "Approve and start", c.state == CampaignState::Draft),
                        ("pause", "Pause", c.state == CampaignState::Running),
                        ("resume", "Resume", c.state == CampaignState::Paused),
                        ("cancel", "Cancel", matches!(c.state, CampaignState::Draft | CampaignState::Running | CampaignState::Paused)),
                    ] {
                        @if shown {
                            form method="post" action=(format!("/updates/campaigns/{}/{action}", encode(c.id.as_str()))) {
                                input type="hidden" name="csrf_token" value=(csrf(who));
                                button type="submit" data-action=(action) { (label) }
                            }
                        }
                    }
                }
            }
            (live_part(who, v, now_ms))
        },
    )
}

/// The state line and the device table, refreshed by htmx.
pub fn live_part(_who: &Principal, v: &CampaignView, now_ms: i64) -> Markup {
    let c = &v.campaign;
    let (sev, words) = campaign_words(v);
    let refresh = matches!(c.state, CampaignState::Running | CampaignState::Paused)
        .then(|| format!("every {LIVE_REFRESH_SECS}s"));
    html! {
        section #campaign-live hx-get=(format!("/updates/campaigns/{}/live", encode(c.id.as_str()))) hx-trigger=[refresh] hx-swap="outerHTML" data-state=(c.state.as_str()) {
            p #campaign-state class=(sev.class()) { (words) }
            p { (progress(v)) }
            table.campaign-devices {
                thead { tr { th { "Device" } th { "Site" } th { "Wave" } th { "State" } th { "Running" } th { "Since" } } }
                tbody {
                    @for d in &v.devices {
                        @let (sev, words) = device_words(d, &v.version);
                        tr data-device=(d.device) data-state=(d.state.as_str()) {
                            td { a href=(format!("/devices/{}", encode(&d.device))) { (d.device) } }
                            td { (d.site) }
                            td { @if d.wave == 0 && c.canary.iter().any(|x| x.as_str() == d.device) { "canary" } @else { (d.wave) } }
                            td class=(sev.class()) { (words) }
                            td { (d.running.as_deref().unwrap_or("–")) }
                            td { span title=(utc(i64::try_from(d.since_ms).unwrap_or(i64::MAX))) { (ago(now_ms, i64::try_from(d.since_ms).unwrap_or(i64::MAX))) } }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ota::campaign::FailKind;

    fn form() -> CampaignForm {
        CampaignForm {
            name: "1.4.0 north".into(),
            bundle: "ab".repeat(32),
            sites: "st-olav, north".into(),
            canary: "ct-room-1 mr-room-2".into(),
            waves: "25%, 100".into(),
            soak_minutes: "30".into(),
            failure_threshold_pct: "5".into(),
            mode: "forced".into(),
            deadline: "2026-12-10 06:00".into(),
            windows: "st-olav 22:00 240 +60\n\nnorth 23:30 60\n".into(),
            ..CampaignForm::default()
        }
    }

    #[test]
    fn the_form_reads_as_the_apis_campaign_request() {
        let r = campaign_request(&form()).expect("valid");
        assert_eq!(r.name, "1.4.0 north");
        assert_eq!(r.targets.sites.len(), 2);
        assert_eq!(r.canary.len(), 2);
        assert_eq!(r.wave_shares, [25, 100]);
        assert_eq!(r.soak_secs, 1800);
        assert_eq!(r.failure_threshold_pct, 5);
        assert_eq!(r.mode, medgate_contract::InstallMode::Forced);
        assert_eq!(
            r.deadline_ms,
            crate::civil::parse_utc_minute("2026-12-10 06:00")
        );
        assert_eq!(r.windows.len(), 2);
        assert_eq!(r.windows[0].utc_offset_minutes, Some(60));
        assert_eq!(
            r.windows[1].utc_offset_minutes, None,
            "the site's time zone"
        );
        // Defaults where the form is left empty.
        let empty = CampaignForm {
            name: "x".into(),
            bundle: "ab".repeat(32),
            ..CampaignForm::default()
        };
        let r = campaign_request(&empty).expect("valid");
        assert_eq!(r.wave_shares, [100]);
        assert!(r.targets.sites.is_empty() && r.windows.is_empty());
    }

    #[test]
    fn a_bad_field_is_named() {
        for (f, says) in [
            (
                CampaignForm {
                    waves: "25, all".into(),
                    ..form()
                },
                "waves",
            ),
            (
                CampaignForm {
                    soak_minutes: "an hour".into(),
                    ..form()
                },
                "soak minutes",
            ),
            (
                CampaignForm {
                    deadline: "tomorrow".into(),
                    ..form()
                },
                "deadline",
            ),
            (
                CampaignForm {
                    windows: "st-olav 22:00".into(),
                    ..form()
                },
                "maintenance windows",
            ),
            (
                CampaignForm {
                    sites: "St Olav!".into(),
                    ..form()
                },
                "invalid",
            ),
        ] {
            let e = campaign_request(&f).expect_err("refused");
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn a_device_that_rolled_back_is_never_worded_as_done() {
        let d = CampaignDevice {
            device: "ct-room-1".into(),
            site: "st-olav".into(),
            wave: 0,
            state: DeviceState::Failed,
            fail: Some(FailKind::RolledBack),
            code: Some("health_deadline".into()),
            version: Some("0.3.0".into()),
            running: Some("0.2.0".into()),
            since_ms: 0,
        };
        let (sev, words) = device_words(&d, "0.3.0");
        assert_eq!(sev, Severity::Bad);
        assert_eq!(
            words,
            "Failed: rolled back by itself (health_deadline): the previous version runs; it runs 0.2.0."
        );
        let waiting = CampaignDevice {
            state: DeviceState::WaitingIdle,
            fail: None,
            code: Some("study_arriving".into()),
            ..d
        };
        assert_eq!(
            device_words(&waiting, "0.3.0").1,
            "0.3.0 installed, waiting for idle DICOM: a study is still arriving; it runs 0.2.0."
        );
    }
}
