//! The device page as HTML (maud): state and why, live figures and per-destination queues
//! (refreshed by htmx), telemetry charts (uPlot, data by JSON), inventory, the configuration
//! editor (checked as you type, diff against what the device runs), quarantine, commands,
//! modalities seen and recent events. Pure: takes what it shows, returns markup. No inline
//! script or style; the scripts are named with their SRI hashes.

use maud::{Markup, html};

use super::assets::{
    CHARTS_JS_PATH, UPLOT_CSS_PATH, UPLOT_CSS_SRI, UPLOT_JS_PATH, UPLOT_JS_SRI, charts_js_sri,
};
use super::device_view::{
    self, Checked, DiffLine, Range, bytes, destination_state, duration, used_percent,
};
use super::view::{ago, encode, utc};
use crate::auth::{Credential, Principal};
use crate::model::{
    CommandFile, CommandRecord, CommandState, Device, DeviceConfig, DeviceIdentity, EventRecord,
    FileState, PeerRecord, TelemetrySample,
};

/// Seconds between refreshes of the live part.
pub const LIVE_REFRESH_SECS: u32 = 10;
/// Seconds between refreshes of the charts.
pub const CHART_REFRESH_SECS: u32 = 30;

/// The configuration editor's state.
#[derive(Debug, Clone)]
pub struct Editor {
    /// The text shown (the desired configuration as TOML, or what was submitted).
    pub text: String,
    /// Its check.
    pub checked: Checked,
    /// What the device runs, as TOML, or why it cannot be shown.
    pub running: Result<String, String>,
}

/// Everything the device page shows.
#[derive(Debug)]
pub struct DevicePage<'a> {
    /// The device.
    pub device: &'a Device,
    /// Boot and certificate.
    pub identity: Option<&'a DeviceIdentity>,
    /// Desired and reported configuration.
    pub config: &'a DeviceConfig,
    /// The latest telemetry.
    pub latest: Option<&'a TelemetrySample>,
    /// Calling AEs seen.
    pub peers: &'a [PeerRecord],
    /// Recent events, newest first.
    pub events: &'a [EventRecord],
    /// Recent commands, newest first.
    pub commands: &'a [CommandRecord],
    /// The charts' range.
    pub range: Range,
    /// The editor.
    pub editor: Editor,
    /// Whether the viewer may change the device (the policy table's answer for its role:
    /// controls are shown or not; the server decides every request anyway).
    pub can_operate: bool,
    /// A message after an action (`Saved as version 4`).
    pub notice: Option<String>,
    /// Now (Unix ms).
    pub now_ms: i64,
}

fn csrf_of(who: &Principal) -> Option<&str> {
    match &who.credential {
        Credential::Session { csrf, .. } => Some(csrf.as_str()),
        _ => None,
    }
}

fn csrf_field(who: &Principal) -> Markup {
    html! {
        @if let Some(c) = csrf_of(who) { input type="hidden" name="csrf_token" value=(c); }
    }
}

/// The whole page.
pub fn device(who: &Principal, p: &DevicePage<'_>) -> Markup {
    let d = p.device;
    let base = format!("/devices/{}", encode(&d.id));
    let body = html! {
        link rel="stylesheet" href=(UPLOT_CSS_PATH) integrity=(UPLOT_CSS_SRI);
        nav.crumbs aria-label="Breadcrumb" {
            a href="/devices" { "Devices" } " › " a href=(format!("/devices?site={}", encode(&d.site))) { (d.site) } " › " span aria-current="page" { (d.id) }
        }
        h1 { "Device " (d.id) @if let Some(r) = &d.room { span.muted.sub { " · " (r) } } }
        @if let Some(n) = &p.notice { p.notice role="status" { (n) } }
        (live(p))
        section #charts aria-labelledby="charts-h" data-src=(format!("{base}/charts.json?range={}", p.range.as_str())) data-refresh-secs=(CHART_REFRESH_SECS) {
            div.section-head {
                h2 #charts-h { "Telemetry" }
                nav.ranges aria-label="Chart range" {
                    @for r in Range::ALL {
                        a href=(format!("{base}?range={}#charts", r.as_str())) aria-current=[(r == p.range).then_some("true")] { (r.label()) }
                    }
                }
            }
            p.muted.chart-status role="status" { "Charts load with JavaScript; the figures above refresh without it." }
            div.charts {
                (chart_figure("rates", "Objects received and forwarded per minute"))
                (chart_figure("queue", "Objects waiting to be forwarded"))
                (chart_figure("oldest", "Age of the oldest waiting object"))
                (chart_figure("latency", "Forward latency"))
                (chart_figure("disk", "Spool disk use"))
            }
        }
        div.two {
            (inventory(p))
            (quarantine(who, p, &base))
        }
        (config_section(who, p, &base))
        (commands(who, p, &base))
        (peers(who, p, &base))
        (events(p))
        script src=(UPLOT_JS_PATH) integrity=(UPLOT_JS_SRI) defer {}
        script src=(CHARTS_JS_PATH) integrity=(charts_js_sri()) defer {}
    };
    super::pages::device_layout(&format!("Device {}", d.id), who, body)
}

fn chart_figure(name: &str, title: &str) -> Markup {
    html! {
        figure.chart data-chart=(name) aria-label=(title) {
            figcaption { span.title { (title) } " " span.latest.muted {} }
            div.plot {}
        }
    }
}

/// The live part (state and why, figures, per-destination queues), refreshed by htmx.
pub fn live(p: &DevicePage<'_>) -> Markup {
    let d = p.device;
    let findings = device_view::findings(d, p.config, p.latest, p.now_ms);
    let (drift_sev, drift) = device_view::drift_words(p.config);
    let url = format!("/devices/{}/live", encode(&d.id));
    html! {
        section #live aria-labelledby="state-h" hx-get=(url) hx-trigger=(format!("every {LIVE_REFRESH_SECS}s")) hx-swap="outerHTML" {
            h2.visually-hidden #state-h { "State" }
            div.badges {
                span class=(format!("badge state-{}", d.connection.as_str())) { (d.connection.as_str()) }
                span class=(format!("badge state-{}", d.status.as_str())) { (d.status.as_str()) }
                span #drift class=(format!("badge state-{}", d.config_drift.as_str())) data-drift=(d.config_drift.as_str()) { "configuration " (d.config_drift.as_str()) }
                span.muted {
                    @if let Some(t) = d.last_seen_ms { "last heard " span title=(utc(t)) { (ago(p.now_ms, t)) } } @else { "never heard from" }
                }
            }
            ul.findings aria-label="State and why" {
                @for (sev, words) in &findings { li class=(sev.class()) { (words) } }
            }
            p class=(format!("drift {}", drift_sev.class())) { strong { "Configuration: " } (drift) }
            @if let Some(u) = p.latest.and_then(|s| s.data.update.as_ref()) {
                @let (sev, words) = device_view::update_words(u);
                p #update class=(format!("drift {}", sev.class())) data-update=(serde_plain(u.state)) { strong { "Update: " } (words) }
            }
            @if let Some(s) = p.latest {
                @let t = &s.data;
                div.cards.small {
                    div.card { span.n { (t.received.objects) } span.label { "received since start (" (bytes(t.received.bytes)) ")" } }
                    div.card { span.n { (t.forwarded.objects) } span.label { "forwarded since start" } }
                    div.card { span.n { (t.queue.depth) } span.label { "waiting, oldest " (duration(t.queue.oldest_age_secs)) } }
                    div.card { span.n { (t.quarantine_objects) } span.label { "in quarantine" } }
                    div.card { span.n { (t.associations_active) } span.label { "associations open" } }
                    div.card { span.n { @if let Some(u) = used_percent(t.disk.total_bytes, t.disk.free_bytes) { (format!("{u:.0} %")) } @else { "–" } } span.label { "disk used of " (bytes(t.disk.total_bytes)) } }
                    div.card { span.n { (t.forward_latency_ms.p90) " ms" } span.label { "forward latency p90" } }
                }
                h3 { "Destinations" }
                @if t.destinations.is_empty() {
                    p.muted { "The device does not report its queue per destination (an appliance version before it did): all destinations together are above." }
                } @else {
                    table.destinations {
                        thead { tr {
                            th scope="col" { "Destination" } th scope="col" { "State" }
                            th.num scope="col" { "Waiting" } th.num scope="col" { "Oldest waiting" } th.num scope="col" { "In quarantine" }
                        } }
                        tbody {
                            @for q in &t.destinations {
                                @let (words, class) = destination_state(q);
                                tr {
                                    td.nowrap { strong { (q.name.as_str()) } }
                                    td class=(format!("nowrap {class}")) { (words) }
                                    td.num { (q.depth) }
                                    td.num { @if q.depth > 0 { (duration(q.oldest_age_secs)) } @else { "–" } }
                                    td.num { (q.quarantined) }
                                }
                            }
                        }
                    }
                }
                p.muted.small { "Figures of " span title=(utc(s.ts_ms)) { (ago(p.now_ms, s.ts_ms)) } "; this part refreshes every " (LIVE_REFRESH_SECS) " s." }
            } @else {
                p.muted { "No telemetry received yet." }
            }
        }
    }
}

fn inventory(p: &DevicePage<'_>) -> Markup {
    let d = p.device;
    let id = p.identity;
    let uptime = p.latest.map(|s| s.data.uptime_secs);
    html! {
        section.panel aria-labelledby="inv-h" {
            h2 #inv-h { "Inventory" }
            @if let Some(i) = &d.inventory {
                dl.facts {
                    dt { "Hardware profile" } dd { (i.hardware_profile.as_str()) }
                    dt { "Serial number" } dd { (i.serial.as_str()) }
                    dt { "Appliance version" } dd { (i.appliance_version.as_str()) }
                    dt { "OS image version" } dd { (i.os_version.as_str()) }
                    dt { "Configuration schema" } dd { "version " (i.config_schema.unwrap_or(1)) }
                    dt { "AE title" } dd { (i.ae_title.as_ref().map(|a| a.as_str().to_owned()).unwrap_or_else(|| "–".into())) }
                    dt { "Spool disk" } dd { (bytes(i.disk.total_bytes)) ", " (bytes(i.disk.free_bytes)) " free" }
                    dt { "Boot" } dd {
                        @if let Some(b) = id.and_then(|i| i.boot_id.as_deref()) { code { (b) } }
                        @if let Some(u) = uptime { ", up " (duration(u)) }
                    }
                    dt { "Certificate" } dd { (cert_words(id, p.now_ms)) }
                    dt { "Reports every" } dd { (id.and_then(|i| i.telemetry_interval_secs).map(|s| format!("{s} s")).unwrap_or_else(|| "–".into())) }
                }
                h3 { "Network interfaces" }
                @if i.nics.is_empty() { p.muted { "None reported." } } @else {
                    table {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Link" } th scope="col" { "Speed" } th scope="col" { "MAC" } } }
                        tbody {
                            @for n in &i.nics {
                                tr {
                                    td { (n.name.as_str()) }
                                    td class=(if n.link_up { "state-online" } else { "state-offline" }) { (if n.link_up { "up" } else { "down" }) }
                                    td { (n.speed_mbps.map(|s| format!("{s} Mbit/s")).unwrap_or_else(|| "–".into())) }
                                    td { code { (n.mac.as_ref().map(|m| m.as_str().to_owned()).unwrap_or_default()) } }
                                }
                            }
                        }
                    }
                }
            } @else {
                p.muted { "The device has not sent its inventory yet (it does at every connection)." }
                dl.facts { dt { "Certificate" } dd { (cert_words(id, p.now_ms)) } }
            }
        }
    }
}

fn cert_words(id: Option<&DeviceIdentity>, now_ms: i64) -> String {
    let Some(i) = id else { return "–".into() };
    let serial = i.cert_serial.as_deref().map(|s| format!("serial {s}"));
    let exp = i.cert_expires_ms.map(|e| {
        if e <= now_ms {
            format!("expired {}", utc(e))
        } else {
            format!("expires {} (in {} days)", utc(e), (e - now_ms) / 86_400_000)
        }
    });
    match (serial, exp) {
        (None, None) => "none issued by this fleet".into(),
        (Some(s), None) => format!("{s}, expiry not recorded (enrolled before it was kept)"),
        (None, Some(e)) => e,
        (Some(s), Some(e)) => format!("{s}, {e}"),
    }
}

fn quarantine(who: &Principal, p: &DevicePage<'_>, base: &str) -> Markup {
    let n = p.latest.map(|s| s.data.quarantine_objects);
    html! {
        section.panel #quarantine aria-labelledby="q-h" {
            h2 #q-h { "Quarantine" }
            p {
                @match n {
                    Some(0) => { "Nothing in quarantine." }
                    Some(n) => { strong { (n) } " objects in quarantine: a destination refused them, or forwarding gave up. Fix the cause, then retry them; purge deletes them from the appliance." }
                    None => { "Unknown until the device sends telemetry." }
                }
            }
            @if p.can_operate {
                div.actions {
                    form method="post" action=(format!("{base}/command")) {
                        (csrf_field(who))
                        input type="hidden" name="action" value="retry_quarantine";
                        button type="submit" { "Retry quarantined objects" }
                    }
                    form.purge method="post" action=(format!("{base}/command")) {
                        (csrf_field(who))
                        input type="hidden" name="action" value="purge_quarantine";
                        label { "Only older than (days, empty: all)" input type="number" name="older_than_days" min="0" step="1" inputmode="numeric"; }
                        label.inline { input type="checkbox" name="confirm" value="yes" required; "I understand purged objects are deleted" }
                        button.danger type="submit" { "Purge quarantine" }
                    }
                }
            } @else {
                p.muted { "Your role may look, not change: retry and purge need an operator." }
            }
        }
    }
}

fn config_section(who: &Principal, p: &DevicePage<'_>, base: &str) -> Markup {
    let e = &p.editor;
    html! {
        section #config aria-labelledby="config-h" {
            h2 #config-h { "Configuration" }
            p.muted {
                "The device's desired configuration in TOML, the format of the appliance's own file (box-local tables such as "
                code { "[status]" } " and " code { "[fleet]" } " stay on the box). It is checked as you type, against the configuration schema the device reports; "
                "the diff compares it with what the device runs."
            }
            form.config method="post" action=(format!("{base}/config")) {
                (csrf_field(who))
                div.editor {
                    div {
                        label for="config-text" { "Desired configuration (TOML)" }
                        @if p.can_operate {
                            textarea #config-text name="config" rows="24" spellcheck="false" autocomplete="off"
                                aria-describedby="config-check"
                                hx-post=(format!("{base}/config/check")) hx-trigger="input changed delay:400ms, load"
                                hx-target="#config-check" hx-swap="outerHTML" { (e.text) }
                        } @else {
                            textarea #config-text name="config" rows="24" spellcheck="false" readonly aria-describedby="config-check" { (e.text) }
                        }
                        @if p.can_operate {
                            div.actions { button type="submit" { "Save and send to the device" } }
                        } @else {
                            p.muted { "Your role may look, not change: saving needs an operator." }
                        }
                    }
                    (config_check(&e.checked, &e.text, &e.running))
                }
            }
        }
    }
}

/// The check of the editor's text: each problem at its key and line, the annotated lines,
/// and the diff against what the device runs (the fragment `#config-check`).
pub fn config_check(c: &Checked, text: &str, running: &Result<String, String>) -> Markup {
    html! {
        div #config-check aria-live="polite" {
            @if c.problems.is_empty() && c.doc.is_some() {
                p.finding.ok role="status" { "Valid for the device." }
            } @else if c.problems.is_empty() {
                p.muted { "Not checked yet." }
            } @else {
                p.finding.bad role="status" { (c.problems.len()) " problem" @if c.problems.len() > 1 { "s" } " — nothing is sent until they are fixed:" }
                ol.problems {
                    @for pr in &c.problems {
                        li data-key=(pr.key) {
                            @if let Some(l) = pr.line { span.line { "line " (l) } " " }
                            code.key { (pr.key) } ": " (pr.message)
                        }
                    }
                }
                @if c.problems.iter().any(|p| p.line.is_some()) {
                    h3 { "At the keys" }
                    pre.annotated {
                        @for (i, l) in text.lines().enumerate() {
                            @let here: Vec<_> = c.problems.iter().filter(|p| p.line == Some(i + 1)).collect();
                            @if !here.is_empty() {
                                span.ln { (format!("{:>4} ", i + 1)) } mark { (l) } "\n"
                                @for pr in here { span.at { "     ↑ " (pr.key) } "\n" }
                            }
                        }
                    }
                }
            }
            @if !c.box_local.is_empty() {
                p.muted { "Box-local, kept on the device and not sent: " (c.box_local.join(", ")) "." }
            }
            h3 { "Changes against what the device runs" }
            @match running {
                Err(why) => { p.muted { (why) } }
                Ok(run) => {
                    @let shown = c.doc.as_ref().map(device_view::toml_text);
                    @match shown.as_deref().map(|new| device_view::diff(run, new)) {
                        None => { p.muted { "Fix the TOML to see the changes." } }
                        Some(None) => { p.muted { "Too long to compare here." } }
                        Some(Some(lines)) => {
                            @if lines.iter().all(|l| matches!(l, DiffLine::Same(_))) {
                                p.muted { "No change: this is what the device runs." }
                            } @else {
                                pre.diff aria-label="Changes: lines starting with + are added, with − removed" {
                                    @for l in &lines {
                                        @match l {
                                            DiffLine::Same(t) => { span.same { "  " (t) "\n" } }
                                            DiffLine::Added(t) => { ins { "+ " (t) "\n" } }
                                            DiffLine::Removed(t) => { del { "− " (t) "\n" } }
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
}

fn commands(who: &Principal, p: &DevicePage<'_>, base: &str) -> Markup {
    html! {
        section #commands aria-labelledby="cmd-h" {
            h2 #cmd-h { "Commands" }
            @if p.can_operate {
                div.actions {
                    @for (action, label) in [("collect_diagnostics", "Collect diagnostics bundle"), ("retry_now", "Retry forwarding now"), ("restart", "Restart (after DICOM goes idle)")] {
                        form method="post" action=(format!("{base}/command")) {
                            (csrf_field(who))
                            input type="hidden" name="action" value=(action);
                            button type="submit" { (label) }
                        }
                    }
                }
            }
            @if p.commands.is_empty() {
                p.muted { "No commands sent yet." }
            } @else {
                table {
                    thead { tr {
                        th scope="col" { "Sent" } th scope="col" { "Action" } th scope="col" { "State" }
                        th scope="col" { "Result" } th scope="col" { "Updated" }
                    } }
                    tbody {
                        @for c in p.commands {
                            tr {
                                td.nowrap { span title=(utc(c.created_ms)) { (ago(p.now_ms, c.created_ms)) } }
                                td { (device_view::action_words(&c.action)) }
                                td class=(format!("nowrap {}", command_class(c.status))) { (c.status.as_str()) }
                                td {
                                    (device_view::result_words(c))
                                    @if let Some(f) = &c.file { br; (command_file(p, c, f)) }
                                }
                                td.nowrap { span title=(utc(c.updated_ms)) { (ago(p.now_ms, c.updated_ms)) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The file a command produced: a download link once it is whole and checked (for those who
/// may download it), else where it is.
fn command_file(p: &DevicePage<'_>, c: &CommandRecord, f: &CommandFile) -> Markup {
    html! {
        @match f.state {
            FileState::Complete if p.can_operate => {
                a.download href=(format!("/api/v1/commands/{}/file", encode(&c.id))) download=(f.name) {
                    "Download " (f.name) " (" (bytes(u64::try_from(f.bytes).unwrap_or(0))) ")"
                }
            }
            FileState::Complete => span.muted { (f.name) " received (" (bytes(u64::try_from(f.bytes).unwrap_or(0))) ")" },
            FileState::Receiving => span.state-pending { (f.name) ": arriving from the appliance…" },
            FileState::Failed => span.state-failed {
                (f.name) " arrived damaged (" (f.reason.as_deref().unwrap_or("digest mismatch")) "): collect it again"
            },
        }
    }
}

fn command_class(s: CommandState) -> &'static str {
    match s {
        CommandState::Succeeded => "state-online",
        CommandState::Queued | CommandState::Accepted => "state-pending",
        CommandState::Failed | CommandState::Rejected | CommandState::Expired => "state-failed",
    }
}

fn peers(who: &Principal, p: &DevicePage<'_>, base: &str) -> Markup {
    html! {
        section #peers aria-labelledby="peers-h" {
            h2 #peers-h { "Modalities seen" }
            @if p.peers.is_empty() {
                p.muted { "No modality has called this appliance yet." }
            } @else {
                table {
                    thead { tr {
                        th scope="col" { "Calling AE" } th scope="col" { "Address" } th scope="col" { "Called AE" }
                        th scope="col" { "Modalities" } th scope="col" { "Last association" } th.num scope="col" { "Associations" }
                        th scope="col" { "Last seen" } th scope="col" { "Allow-list" }
                    } }
                    tbody {
                        @for peer in p.peers {
                            tr {
                                td.nowrap { strong { (peer.calling_ae) } }
                                td.nowrap { (peer.ip) }
                                td.nowrap { (peer.called_ae) }
                                td { (peer.modalities.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")) }
                                td class=(if peer.accepted { "state-online" } else { "state-failed" }) {
                                    @if peer.accepted { "accepted" } @else {
                                        "refused" @if let Some(r) = peer.refusal { ": " (serde_json::to_value(r).ok().and_then(|v| v.as_str().map(|s| s.replace('_', " "))).unwrap_or_default()) }
                                    }
                                }
                                td.num { (peer.associations) }
                                td.nowrap { span title=(utc(peer.last_seen_ms)) { (ago(p.now_ms, peer.last_seen_ms)) } }
                                td {
                                    @if peer.approved { span.state-online { "approved" } }
                                    @else if p.can_operate {
                                        form method="post" action=(format!("{base}/peers/approve")) {
                                            (csrf_field(who))
                                            input type="hidden" name="calling_ae" value=(peer.calling_ae);
                                            button type="submit" aria-label=(format!("Approve {}", peer.calling_ae)) { "Approve" }
                                        }
                                    } @else { span.muted { "not approved" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn events(p: &DevicePage<'_>) -> Markup {
    html! {
        section #events aria-labelledby="ev-h" {
            h2 #ev-h { "Recent events" }
            @if p.events.is_empty() {
                p.muted { "No events yet." }
            } @else {
                table {
                    thead { tr { th scope="col" { "When" } th scope="col" { "Event" } th scope="col" { "What" } } }
                    tbody {
                        @for e in p.events {
                            tr {
                                td.nowrap { span title=(utc(e.at_ms)) { (ago(p.now_ms, e.at_ms)) } }
                                td.nowrap { (e.kind.replace('_', " ")) }
                                td { (device_view::event_words(&e.event)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// An enum's serde word (`waiting_idle`), for a data attribute the browser tests read.
fn serde_plain<T: serde::Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
