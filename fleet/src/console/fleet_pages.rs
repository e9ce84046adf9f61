//! The fleet pages as HTML (maud, every value escaped, no inline script or style): the devices
//! list with its filters, sortable columns, pages and bulk actions; the bulk confirmation and
//! result; sites and rooms; a new appliance's claim token, shown once, with its provisioning file.

use std::collections::HashMap;

use maud::{Markup, html};

use super::fleet_view::{BulkForm, ListView, SiteForm};
use super::pages::{Nav, layout};
use super::view;
use crate::auth::{Credential, Principal};
use crate::model::{Connection, DeviceStatus, Site};
use crate::ops::NewClaim;
use crate::ops::fleet::{BulkAction, BulkReport, BulkTarget, ConfigSource, DevicePage};
use crate::store::fleet::{Facets, SiteDetail, SortKey};

fn csrf_of(who: &Principal) -> Option<&str> {
    match &who.credential {
        Credential::Session { csrf, .. } => Some(csrf.as_str()),
        _ => None,
    }
}

fn csrf_field(who: &Principal) -> Markup {
    html! {
        @if let Some(c) = csrf_of(who) {
            input type="hidden" name=(crate::auth::csrf::FORM_FIELD) value=(c);
        }
    }
}

fn site_label(s: &Site) -> String {
    if s.name == s.id {
        s.name.clone()
    } else {
        format!("{} ({})", s.name, s.id)
    }
}

/// A `<select>` of words with an "any" entry.
fn choice(label: &str, name: &str, any: &str, values: &[String], current: Option<&str>) -> Markup {
    html! {
        label { (label)
            select name=(name) {
                option value="" { (any) }
                @for v in values {
                    option value=(v) selected[current == Some(v.as_str())] { (v.replace('_', " ")) }
                }
            }
        }
    }
}

fn header(v: &ListView, key: SortKey, label: &str) -> Markup {
    let arrow = match v.aria_sort(key) {
        Some("ascending") => " ▲",
        Some(_) => " ▼",
        None => "",
    };
    html! {
        th scope="col" aria-sort=[v.aria_sort(key)] {
            a.sort href=(v.sort_url(key)) { (label) span.arrow aria-hidden="true" { (arrow) } }
        }
    }
}

/// The devices list.
#[allow(clippy::too_many_arguments)]
pub fn devices(
    who: &Principal,
    v: &ListView,
    p: &DevicePage,
    sites: &[Site],
    facets: &Facets,
    now_ms: i64,
    can_operate: bool,
) -> Markup {
    let names: HashMap<&str, &str> = sites
        .iter()
        .map(|s| (s.id.as_str(), s.name.as_str()))
        .collect();
    let words = |all: &[&str]| all.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let statuses = words(
        &DeviceStatus::ALL
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>(),
    );
    let connections = words(
        &Connection::ALL
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>(),
    );
    let s = &v.sel;
    let first = (p.page - 1) * crate::ops::fleet::PAGE_SIZE + 1;
    let last = first + i64::try_from(p.devices.len()).unwrap_or(0) - 1;
    html! {
        (layout("Devices", Nav::Devices, Some(who), html! {
            h1 { "Devices" }
            form.filters method="get" action="/devices" hx-get="/devices" hx-target="#device-table"
                hx-select="#device-table" hx-swap="outerHTML" hx-push-url="true" hx-trigger="change, submit" {
                label { "Site"
                    select name="site" {
                        option value="" { "All sites" }
                        @for st in sites {
                            option value=(st.id) selected[s.site.as_deref() == Some(st.id.as_str())] { (site_label(st)) }
                        }
                    }
                }
                (choice("Status", "status", "Any status", &statuses, s.status.map(DeviceStatus::as_str)))
                (choice("Connection", "connection", "Any connection", &connections, s.connection.map(Connection::as_str)))
                (choice("Version", "version", "Any version", &facets.versions, s.version.as_deref()))
                (choice("Hardware", "profile", "Any hardware", &facets.profiles, s.profile.as_deref()))
                (choice("Tag", "tag", "Any tag", &facets.tags, s.tag.as_deref()))
                label { "Search (id, room, tag)" input type="search" name="q" value=(s.q.clone().unwrap_or_default()); }
                label.inline { input type="checkbox" name="attention" value="1" checked[s.attention]; "Needs attention" }
                @if v.order != Default::default() {
                    input type="hidden" name="sort" value=(v.order.key.as_str());
                    @if v.order.dir == crate::store::fleet::SortDir::Desc { input type="hidden" name="dir" value="desc"; }
                }
                button type="submit" { "Apply" }
                a href="/devices" { "Clear filters" }
            }
            div #device-table {
                p.count role="status" {
                    @if p.matched == 0 { "No device matches these filters." }
                    @else {
                        (p.matched) " devices match"
                        @if p.pages > 1 { " · showing " (first) "–" (last) ", page " (p.page) " of " (p.pages) }
                        "."
                    }
                }
                form #bulk method="post" action="/devices/bulk" {
                    (csrf_field(who))
                    @for (k, val) in v.filter_pairs() { input type="hidden" name=(k) value=(val); }
                    @if can_operate && p.matched > 0 {
                        fieldset.bulk {
                            legend { "Bulk action" }
                            label { "Apply to"
                                select name="apply_to" {
                                    option value="checked" { "the rows checked below" }
                                    option value="all" { "every device matching the filters (" (p.matched) ")" }
                                }
                            }
                            label { "Action"
                                select name="action" {
                                    option value="approve" { "Approve (pending devices)" }
                                    option value="tag" { "Add tag" }
                                    option value="untag" { "Remove tag" }
                                    option value="restart" { "Restart (connected devices)" }
                                    option value="config" { "Apply configuration" }
                                }
                            }
                            label { "Tag (add or remove)" input name="bulk_tag" list="known-tags" placeholder="e.g. radiology"; }
                            datalist #known-tags { @for t in &facets.tags { option value=(t) {} } }
                            label { "Configuration"
                                select name="config_source" {
                                    option value="site" { "each device's site configuration" }
                                    option value="tag" { "the configuration of tag…" }
                                    option value="document" { "the document below" }
                                }
                            }
                            label { "Configuration tag" input name="config_tag" list="known-tags"; }
                            details.document {
                                summary { "Configuration document (TOML or JSON)" }
                                label { "Document"
                                    textarea name="config_document" rows="8" cols="60" spellcheck="false" {}
                                }
                            }
                            button type="submit" { "Run" }
                        }
                    }
                    div.scroll {
                        table.devices {
                            caption.visually-hidden { "Devices, sortable by column" }
                            thead { tr {
                                @if can_operate { th scope="col" { span.visually-hidden { "Select" } } }
                                (header(v, SortKey::Device, "Device"))
                                (header(v, SortKey::Site, "Site"))
                                (header(v, SortKey::Room, "Room"))
                                (header(v, SortKey::Status, "Status"))
                                (header(v, SortKey::Connection, "Connection"))
                                (header(v, SortKey::LastSeen, "Last heard"))
                                (header(v, SortKey::Version, "Version"))
                                (header(v, SortKey::Profile, "Hardware"))
                                (header(v, SortKey::Config, "Configuration"))
                                th scope="col" { "Tags" }
                                th scope="col" { "Attention" }
                            } }
                            tbody {
                                @for d in &p.devices {
                                    tr {
                                        @if can_operate {
                                            td { input type="checkbox" name="id" value=(d.id) aria-label=(format!("Select {}", d.id)); }
                                        }
                                        td.nowrap { a href=(format!("/devices/{}", view::encode(&d.id))) { strong { (d.id) } } }
                                        td.nowrap { (names.get(d.site.as_str()).copied().unwrap_or(d.site.as_str())) }
                                        td.nowrap { (d.room.clone().unwrap_or_default()) }
                                        td class=(format!("nowrap state-{}", d.status.as_str())) { (d.status.as_str()) }
                                        td class=(format!("nowrap state-{}", d.connection.as_str())) { (d.connection.as_str()) }
                                        td.nowrap { @if let Some(t) = d.last_seen_ms { span title=(view::utc(t)) { (view::ago(now_ms, t)) } } @else { span.muted { "never" } } }
                                        td.nowrap { (d.inventory.as_ref().map(|i| i.appliance_version.as_str().to_owned()).unwrap_or_default()) }
                                        td.nowrap { (d.inventory.as_ref().map(|i| i.hardware_profile.as_str().to_owned()).unwrap_or_default()) }
                                        td class=(format!("nowrap state-{}", d.config_drift.as_str())) { (d.config_drift.as_str().replace('_', " ")) }
                                        td { (d.tags.join(", ")) }
                                        td.reason { @if let Some(r) = view::attention(d) { (r.words(d, now_ms)) } }
                                    }
                                }
                            }
                        }
                    }
                }
                @if p.pages > 1 {
                    nav.pager aria-label="Pages" {
                        @if p.page > 1 {
                            a href=(v.url(v.order, 1)) { "« First" }
                            a href=(v.url(v.order, p.page - 1)) rel="prev" { "← Previous" }
                        }
                        span { "Page " (p.page) " of " (p.pages) }
                        @if p.page < p.pages {
                            a href=(v.url(v.order, p.page + 1)) rel="next" { "Next →" }
                            a href=(v.url(v.order, p.pages)) { "Last »" }
                        }
                    }
                }
            }
        }))
    }
}

fn action_words(a: &BulkAction) -> String {
    match a {
        BulkAction::Approve => "approve the pending ones among".into(),
        BulkAction::Tag(t) => format!("add tag {t} to"),
        BulkAction::Untag(t) => format!("remove tag {t} from"),
        BulkAction::Restart => "restart the connected ones among".into(),
        BulkAction::Config(ConfigSource::Site) => {
            "give a copy of their site's configuration to".into()
        }
        BulkAction::Config(ConfigSource::Tag(t)) => {
            format!("give a copy of tag {t}'s configuration to")
        }
        BulkAction::Config(ConfigSource::Document(_)) => {
            "give the configuration document to".into()
        }
    }
}

/// Asks before an action over every device matching the filters.
pub fn bulk_confirm(who: &Principal, f: &BulkForm, count: usize) -> Markup {
    let back = f.list.url(f.list.order, 1);
    html! {
        (layout("Confirm bulk action", Nav::Devices, Some(who), html! {
            h1 { "Confirm bulk action" }
            p.lead { "You are about to " (action_words(&f.action)) " " strong { (count) " devices" } " (every device matching the filters, at your sites)." }
            p.muted { "Each device is checked again when it runs; every change is in the audit log." }
            form method="post" action="/devices/bulk" {
                (csrf_field(who))
                @for (k, v) in &f.fields { input type="hidden" name=(k) value=(v); }
                input type="hidden" name="confirm" value="1";
                div.actions {
                    button type="submit" { "Yes, run it on " (count) " devices" }
                    a href=(back) { "Cancel" }
                }
            }
        }))
    }
}

/// The result of a bulk action: the summary, then device by device (not done first).
pub fn bulk_result(who: &Principal, r: &BulkReport, back: &str) -> Markup {
    let mut rows: Vec<&(String, crate::ops::fleet::BulkOutcome)> = r.results.iter().collect();
    rows.sort_by_key(|(_, o)| !matches!(o, crate::ops::fleet::BulkOutcome::Done(_)));
    html! {
        (layout("Bulk action done", Nav::Devices, Some(who), html! {
            h1 { "Bulk action: " (r.action.word()) }
            p.summary role="status" { (r.words()) }
            p { a href=(back) { "Back to the devices list" } }
            @if !rows.is_empty() {
                h2 { "Device by device" }
                table {
                    thead { tr { th scope="col" { "Device" } th scope="col" { "Outcome" } th scope="col" { "Details" } } }
                    tbody {
                        @for (id, o) in rows.iter().take(1000) {
                            @let (kind, class) = match o {
                                crate::ops::fleet::BulkOutcome::Done(_) => ("done", "state-online"),
                                crate::ops::fleet::BulkOutcome::Skipped(_) => ("skipped", "state-pending"),
                                crate::ops::fleet::BulkOutcome::Refused(_) => ("refused", "state-failed"),
                                crate::ops::fleet::BulkOutcome::Failed(_) => ("failed", "state-failed"),
                            };
                            tr { td.nowrap { strong { (id) } } td class=(class) { (kind) } td { (o.words()) } }
                        }
                    }
                }
                @if rows.len() > 1000 { p.muted { "The first 1,000 of " (rows.len()) " devices; the audit log has them all." } }
            }
        }))
    }
}

fn site_fields(f: Option<&SiteForm>, s: Option<&SiteDetail>, create: bool) -> Markup {
    let name = f
        .map(|f| f.name.clone())
        .or_else(|| s.map(|s| s.name.clone()))
        .unwrap_or_default();
    let tz = f
        .map(|f| f.time_zone.clone())
        .or_else(|| s.and_then(|s| s.time_zone.clone()))
        .unwrap_or_default();
    let rooms = f
        .map(|f| f.rooms.clone())
        .or_else(|| s.map(|s| s.rooms.join("\n")))
        .unwrap_or_default();
    html! {
        @if create {
            label { "Site id (letters, digits, - and _; it cannot change)"
                input name="id" value=(f.map(|f| f.id.clone()).unwrap_or_default()) required pattern="[A-Za-z0-9._:+~-]{1,64}" placeholder="st-olav"; }
        }
        label { "Name" input name="name" value=(name) required maxlength="200" placeholder="St. Olav Hospital"; }
        label { "Time zone (IANA name)" input name="time_zone" value=(tz) placeholder="Europe/Oslo"; }
        label { "Rooms, one per line"
            textarea name="rooms" rows="5" cols="40" { (rooms) }
        }
    }
}

/// Sites and rooms.
pub fn sites(
    who: &Principal,
    sites: &[SiteDetail],
    can_manage: bool,
    error: Option<&str>,
    form: Option<&SiteForm>,
) -> Markup {
    html! {
        (layout("Sites", Nav::Sites, Some(who), html! {
            h1 { "Sites and rooms" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            @if sites.is_empty() {
                p.muted { "No site yet." }
            } @else {
                div.scroll {
                    table {
                        thead { tr {
                            th scope="col" { "Site" } th scope="col" { "Time zone" } th scope="col" { "Rooms" }
                            th.num scope="col" { "Devices" } th.num scope="col" { "Online" } th scope="col" { span.visually-hidden { "Actions" } }
                        } }
                        tbody {
                            @for s in sites {
                                tr {
                                    td { a href=(format!("/sites/{}", view::encode(&s.id))) { strong { (s.name) } } @if s.name != s.id { " " span.muted { "(" (s.id) ")" } } }
                                    td.nowrap { @if let Some(tz) = &s.time_zone { (tz) } @else { span.muted { "not set" } } }
                                    td { @if s.rooms.is_empty() { span.muted { "none" } } @else { (s.rooms.join(", ")) } }
                                    td.num { a href=(format!("/devices?site={}", view::encode(&s.id))) { (s.devices) } }
                                    td.num { (s.online) }
                                    td.nowrap { a href=(format!("/sites/{}", view::encode(&s.id))) { "Open" } }
                                }
                            }
                        }
                    }
                }
            }
            @if can_manage {
                section.panel aria-labelledby="new-site" {
                    h2 #new-site { "Add a site" }
                    form.stack method="post" action="/sites" {
                        (csrf_field(who))
                        (site_fields(form, None, true))
                        button type="submit" { "Create site" }
                    }
                }
            }
        }))
    }
}

/// One site: edit it, issue a claim token for a new appliance.
#[allow(clippy::too_many_arguments)]
pub fn site(
    who: &Principal,
    s: &SiteDetail,
    can_manage: bool,
    can_claim: bool,
    error: Option<&str>,
    form: Option<&SiteForm>,
    notice: Option<&str>,
) -> Markup {
    let path = format!("/sites/{}", view::encode(&s.id));
    html! {
        (layout(&format!("Site {}", s.name), Nav::Sites, Some(who), html! {
            p.crumbs { a href="/sites" { "Sites" } " › " (s.name) }
            h1 { (s.name) @if s.name != s.id { " " span.muted { "(" (s.id) ")" } } }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            p { (s.devices) " devices, " (s.online) " online · " a href=(format!("/devices?site={}", view::encode(&s.id))) { "Show its devices" } }
            div.columns {
                @if can_claim {
                    section.panel aria-labelledby="claim" {
                        h2 #claim { "Add a new appliance" }
                        p.muted { "Issues a one-time claim token for the appliance, shown once, and its provisioning file." }
                        form.stack method="post" action=(format!("{path}/claims")) {
                            (csrf_field(who))
                            label { "Device id (how the fleet will call it)" input name="device" required pattern="[A-Za-z0-9._:+~-]{1,64}" placeholder="ct-room-1"; }
                            label { "Room"
                                select name="room" {
                                    option value="" { "no room yet" }
                                    @for r in &s.rooms { option value=(r) { (r) } }
                                }
                            }
                            button type="submit" { "Issue claim token" }
                        }
                    }
                }
                section.panel aria-labelledby="edit" {
                    h2 #edit { "Name, time zone and rooms" }
                    @if can_manage {
                        form.stack method="post" action=(path) {
                            (csrf_field(who))
                            (site_fields(form, Some(s), false))
                            button type="submit" { "Save site" }
                        }
                    } @else {
                        dl {
                            dt { "Time zone" } dd { (s.time_zone.clone().unwrap_or_else(|| "not set".into())) }
                            dt { "Rooms" } dd { @if s.rooms.is_empty() { "none" } @else { (s.rooms.join(", ")) } }
                        }
                        p.muted { "Only an admin changes sites." }
                    }
                }
            }
        }))
    }
}

/// A new claim token, shown once, with the form that downloads its provisioning file.
pub fn claim_issued(who: &Principal, s: &SiteDetail, c: &NewClaim, room: Option<&str>) -> Markup {
    let path = format!("/sites/{}", view::encode(&s.id));
    html! {
        (layout("Claim token", Nav::Sites, Some(who), html! {
            p.crumbs { a href="/sites" { "Sites" } " › " a href=(path) { (s.name) } " › claim token" }
            h1 { "Claim token for " (c.device.as_str()) }
            p.notice role="status" {
                "This token is shown only now. It enrolls device " strong { (c.device.as_str()) } " at " (s.name)
                @if let Some(r) = room { ", room " (r) }
                ", once, until " (view::utc(c.expires_ms)) "."
            }
            label { "Claim token"
                input.token readonly value=(c.token) aria-describedby="token-help" size="70";
            }
            p #token-help .muted { "Download the provisioning file now: the fleet keeps only a hash of the token and cannot show it again." }
            form method="post" action=(format!("{path}/provisioning")) {
                (csrf_field(who))
                input type="hidden" name="token" value=(c.token);
                button type="submit" { "Download provisioning file" }
            }
            h2 { "Then, on the appliance" }
            ol.steps {
                li { "Put the file on the appliance's ESP as " code { "medgate/provisioning.toml" } " (the image enrolls at first boot), or" }
                li { "run " code { "medgate-appliance enroll --provisioning provisioning-" (c.device.as_str()) ".toml --identity-dir /var/lib/medgate/identity" } "." }
                li { "The device appears in the " a href=(format!("/devices?site={}", view::encode(&s.id))) { "devices list" } " as soon as it enrolled." }
            }
        }))
    }
}

/// Whether a bulk form's target is every matching device.
pub fn is_all(f: &BulkForm) -> bool {
    matches!(f.target, BulkTarget::Selection(_))
}
