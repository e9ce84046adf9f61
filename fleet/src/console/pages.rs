//! The console's pages as HTML (maud: compile-time templates, every value escaped). Pure:
//! each function takes what it shows and returns markup; no page has inline script or style
//! (the Content-Security-Policy forbids both).

use maud::{DOCTYPE, Markup, html};

use super::assets::{CSS_PATH, HTMX_PATH, HTMX_SRI};
use super::view::{self, Overview};
use crate::auth::{Credential, Principal};
use crate::model::Device;

/// Which navigation entry is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// None (login, setup, errors).
    None,
    /// The overview.
    Overview,
    /// The devices list.
    Devices,
    // console-auth (issue 12): users, tokens, sessions, audit.
    /// Users and roles.
    Users,
    /// My API tokens.
    Tokens,
    /// Sessions.
    Sessions,
    /// The audit log.
    Audit,
    /// Sites and rooms (console-fleet).
    Sites,
    /// alerts (issue 13 part 3): the Alerts page.
    Alerts,
    /// The wall's display links (wall, issue 13 part 1).
    Displays,
    /// analytics (issue 13 part 2): the region's numbers.
    Analytics,
    /// ota (issue 14): bundles and update campaigns.
    Updates,
}

/// htmx's settings: no inline indicator styles (the CSP forbids them), no eval, no script tags
/// from responses.
const HTMX_CONFIG: &str =
    r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;

/// The page frame: head, skip link, navigation, the user and logout; `body` is the page's own.
pub fn layout(title: &str, nav: Nav, who: Option<&Principal>, body: Markup) -> Markup {
    let csrf = who.and_then(|p| match &p.credential {
        Credential::Session { csrf, .. } => Some(csrf.as_str()),
        _ => None,
    });
    let headers = csrf.map(|c| format!(r#"{{"X-CSRF-Token": "{c}"}}"#));
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="htmx-config" content=(HTMX_CONFIG);
                title { (title) " · Medgate fleet" }
                link rel="stylesheet" href=(CSS_PATH);
                script src=(HTMX_PATH) integrity=(HTMX_SRI) defer {}
            }
            body hx-headers=[headers] {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "Medgate fleet" }
                    @if let Some(p) = who {
                        nav aria-label="Main" {
                            a href="/" aria-current=[(nav == Nav::Overview).then_some("page")] { "Overview" }
                            a href="/devices" aria-current=[(nav == Nav::Devices).then_some("page")] { "Devices" }
                            a href="/sites" aria-current=[(nav == Nav::Sites).then_some("page")] { "Sites" }
                            // alerts (issue 13 part 3).
                            a href="/alerts" aria-current=[(nav == Nav::Alerts).then_some("page")] { "Alerts" }
                            // analytics (issue 13 part 2).
                            a href="/analytics" aria-current=[(nav == Nav::Analytics).then_some("page")] { "Analytics" }
                            // ota (issue 14).
                            a href="/updates" aria-current=[(nav == Nav::Updates).then_some("page")] { "Updates" }
                            // console-auth (issue 12): the account and administration pages.
                            (super::admin::nav_links(p, nav))
                        }
                        div.who {
                            span { (p.user) " · " (p.role) (scope_words(p)) }
                            (super::admin::account_links(nav))
                            @if let Some(c) = csrf {
                                form method="post" action="/logout" {
                                    input type="hidden" name="csrf_token" value=(c);
                                    button.link type="submit" { "Log out" }
                                }
                            }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

fn scope_words(p: &Principal) -> String {
    match p.sites.to_list() {
        None => String::new(),
        Some(s) => format!(" (sites {})", s.join(", ")),
    }
}

/// The first-run page: create the first admin with the setup token (or say it is done).
pub fn setup(token: &str, error: Option<&str>, done: bool) -> Markup {
    layout(
        "First-run setup",
        Nav::None,
        None,
        html! {
            div.narrow {
                h1 { @if done { "Setup is done" } @else { "Create the first admin" } }
                @if done {
                    p { "Setup is done: a user exists. " a href="/login" { "Log in" } "." }
                } @else {
                    p.muted { "This page works once, with the link the fleet printed at start. The password needs 12 to 256 characters." }
                    @if let Some(e) = error { p.error role="alert" { (e) } }
                    form method="post" action="/setup" {
                        input type="hidden" name="token" value=(token);
                        label { "User name" input name="user" autocomplete="username" required autofocus; }
                        label { "Password" input type="password" name="password" autocomplete="new-password" minlength="12" required; }
                        label { "Password again" input type="password" name="confirm" autocomplete="new-password" minlength="12" required; }
                        button type="submit" { "Create admin and log in" }
                    }
                }
            }
        },
    )
}

/// A refusal or failure, as a page.
pub fn error(title: &str, message: &str, who: Option<&Principal>) -> Markup {
    layout(
        title,
        Nav::None,
        who,
        html! {
            h1 { (title) }
            p role="alert" { (message) }
            p { a href="/" { "Back to the overview" } }
        },
    )
}

fn card(n: usize, label: &str, href: &str) -> Markup {
    html! {
        a.card href=(href) { span.n { (n) } span.label { (label) } }
    }
}

/// The fleet overview.
pub fn overview(who: &Principal, o: &Overview, devices: &[Device], now_ms: i64) -> Markup {
    let a = &o.all;
    let by_id = |id: &str| devices.iter().find(|d| d.id == id);
    html! {
        (layout("Overview", Nav::Overview, Some(who), html! {
            h1 { "Fleet overview" }
            div.cards {
                (card(a.total, "devices", "/devices"))
                (card(a.online, "online", "/devices?connection=online"))
                (card(a.offline, "offline", "/devices?connection=offline"))
                (card(a.unknown, "never connected", "/devices?connection=unknown"))
                (card(a.pending, "waiting for approval", "/devices?status=pending"))
                (card(a.config_failed, "configuration failed", "/devices?attention=1"))
                (card(a.attention, "need attention", "/devices?attention=1"))
            }
            h2 { "Needs attention first" }
            @if o.attention.is_empty() {
                p.muted { "Nothing: every approved device is online with its configuration applied." }
            } @else {
                ul.attention {
                    @for (id, site, reason) in o.attention.iter().take(20) {
                        li {
                            strong { (id) } " at " (site) ": "
                            @if let Some(d) = by_id(id) { (reason.words(d, now_ms)) }
                        }
                    }
                }
                @if o.attention.len() > 20 {
                    p { a href="/devices?attention=1" { "All " (o.attention.len()) " devices needing attention" } }
                }
            }
            h2 { "By site" }
            table {
                thead { tr {
                    th scope="col" { "Site" }
                    th.num scope="col" { "Devices" } th.num scope="col" { "Online" } th.num scope="col" { "Offline" }
                    th.num scope="col" { "Never connected" } th.num scope="col" { "Waiting for approval" }
                    th.num scope="col" { "Configuration failed" } th.num scope="col" { "Need attention" }
                } }
                tbody {
                    @for (id, (name, c)) in &o.by_site {
                        tr {
                            td { a href=(format!("/devices?site={}", view::encode(id))) { (name) } @if name != id { " " span.muted { "(" (id) ")" } } }
                            td.num { (c.total) } td.num { (c.online) } td.num { (c.offline) }
                            td.num { (c.unknown) } td.num { (c.pending) } td.num { (c.config_failed) } td.num { (c.attention) }
                        }
                    }
                }
            }
        }))
    }
}

// ---- console: device page ----

/// The layout, for the device page ([`super::device_page`]): under the Devices entry.
pub(super) fn device_layout(title: &str, who: &Principal, body: Markup) -> Markup {
    layout(title, Nav::Devices, Some(who), body)
}

// ---- end of console: device page ----

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Role, SiteScope};
    use crate::model::{Connection, DeviceStatus};

    fn viewer() -> Principal {
        Principal {
            user: "alice".into(),
            role: Role::Viewer,
            sites: SiteScope::from_list(Some(vec!["a".into()])),
            credential: Credential::Session {
                id: "s".into(),
                csrf: "c0ffee".into(),
            },
        }
    }

    /// An `on…=` attribute (inline event handler) anywhere.
    fn has_event_attribute(html: &str) -> bool {
        html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name_len > 0 && rest.as_bytes().get(name_len) == Some(&b'=')
        })
    }

    #[test]
    fn pages_escape_values_carry_the_csrf_token_and_no_inline_script_or_style() {
        let mut d = Device {
            id: "<script>x</script>".into(),
            site: "a".into(),
            room: Some("CT \"1\"".into()),
            status: DeviceStatus::Approved,
            connection: Connection::Offline,
            last_seen_ms: Some(0),
            inventory: None,
            running_config_version: None,
            events_received: 0,
            desired_config_version: None,
            config_drift: crate::model::Drift::None,
            tags: vec![],
        };
        d.tags.push("t&t".into());
        let list = super::super::fleet_view::ListView::default();
        let p = crate::ops::fleet::DevicePage {
            devices: vec![d.clone()],
            matched: 1,
            pages: 1,
            page: 1,
        };
        let facets = crate::store::fleet::Facets::default();
        let html =
            super::super::fleet_pages::devices(&viewer(), &list, &p, &[], &facets, 60_000, true)
                .into_string();
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;") && !html.contains("<script>x"));
        assert!(html.contains("t&amp;t") && html.contains("CT &quot;1&quot;"));
        assert!(html.contains(r#"name="csrf_token" value="c0ffee""#));
        assert!(html.contains("X-CSRF-Token") && html.contains("alice · viewer (sites a)"));
        for page in [
            html,
            super::super::signin::login_markup(&super::super::signin::LoginView {
                error: Some("wrong"),
                user: "bob",
                csrf: "t",
                sso: Some("SSO"),
                ..Default::default()
            })
            .into_string(),
            setup("tok", None, false).into_string(),
            overview(&viewer(), &Overview::of(&[d.clone()], &[]), &[d], 0).into_string(),
        ] {
            // The only script is htmx, by URL with its integrity hash; no style attributes.
            assert_eq!(page.matches("<script").count(), 1, "{page}");
            assert!(page.contains(&format!(
                r#"<script src="{HTMX_PATH}" integrity="{HTMX_SRI}""#
            )));
            assert!(
                !page.contains("style=") && !page.contains("<style"),
                "{page}"
            );
            assert!(!has_event_attribute(&page), "{page}");
        }
    }
}
