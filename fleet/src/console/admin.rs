//! The account and administration pages, as HTML (maud): users and roles, a user's page (role,
//! sites, disable, password reset, sessions), my API tokens, my sessions, the audit log with
//! its filters, paging and export links. Pure: each function takes what it shows. The handlers
//! are `console::admin_pages`.

use maud::{Markup, html};

use super::pages::{Nav, layout};
use super::view::{self, utc};
use crate::auth::policy::{Permission, role_covers};
use crate::auth::{Credential, Principal, Role};
use crate::model::Site;
use crate::store::audit::{AuditEntry, AuditFilter, Outcome};
use crate::store::users::{ApiToken, Session, User};

/// Entries on one page of the audit log.
pub const AUDIT_PAGE: i64 = 50;

/// The navigation entries of these pages the principal's role may open.
pub fn nav_links(p: &Principal, nav: Nav) -> Markup {
    let cur = |n: Nav| (nav == n).then_some("page");
    html! {
        @if Permission::UsersManage.granted_to(p.role) {
            a href="/users" aria-current=[cur(Nav::Users)] { "Users" }
        }
        @if Permission::AuditRead.granted_to(p.role) {
            a href="/audit" aria-current=[cur(Nav::Audit)] { "Audit log" }
        }
        // wall (issue 13 part 1)
        @if Permission::DisplaysManage.granted_to(p.role) {
            a href="/displays" aria-current=[cur(Nav::Displays)] { "Wall displays" }
        }
    }
}

/// The account links next to the user's name.
pub fn account_links(nav: Nav) -> Markup {
    let cur = |n: Nav| (nav == n).then_some("page");
    html! {
        a href="/tokens" aria-current=[cur(Nav::Tokens)] { "API tokens" }
        a href="/sessions" aria-current=[cur(Nav::Sessions)] { "Sessions" }
    }
}

fn csrf_of(p: &Principal) -> &str {
    match &p.credential {
        Credential::Session { csrf, .. } => csrf,
        _ => "",
    }
}

fn csrf_field(p: &Principal) -> Markup {
    html! { input type="hidden" name="csrf_token" value=(csrf_of(p)); }
}

fn sites_words(sites: &Option<Vec<String>>) -> String {
    match sites {
        None => "every site".into(),
        Some(s) => s.join(", "),
    }
}

fn sign_in_words(u: &User) -> &'static str {
    match (u.sso, u.has_password) {
        (true, _) => "single sign-on",
        (false, true) => "password",
        (false, false) => "none",
    }
}

fn role_words(r: Role) -> &'static str {
    match r {
        Role::Admin => "admin — everything, including users and sites",
        Role::Operator => "operator — devices, configuration, commands, claims",
        Role::Viewer => "viewer — reads devices and sites, changes nothing",
        Role::Auditor => "auditor — the audit log only",
        Role::Vendor => "vendor — its own bundles and campaigns",
    }
}

/// A role picker: the roles `actor` may hand out.
fn role_select(actor: &Principal, name: &str, current: Option<Role>) -> Markup {
    html! {
        select name=(name) id=(name) {
            @for r in Role::ALL {
                @if role_covers(actor.role, r) {
                    option value=(r.as_str()) selected[current == Some(r)] { (role_words(r)) }
                }
            }
        }
    }
}

/// Site checkboxes; none ticked means every site.
fn site_boxes(sites: &[Site], chosen: &Option<Vec<String>>) -> Markup {
    html! {
        fieldset.sites {
            legend { "Sites (none ticked: every site)" }
            @if sites.is_empty() {
                p.muted { "No site exists yet." }
            }
            @for s in sites {
                label.inline {
                    input type="checkbox" name="sites" value=(s.id)
                        checked[chosen.as_ref().is_some_and(|c| c.contains(&s.id))];
                    (s.name) @if s.name != s.id { " " span.muted { "(" (s.id) ")" } }
                }
            }
        }
    }
}

/// A message after a change (`role="status"`), or an error (`role="alert"`).
#[derive(Debug, Clone, Default)]
pub struct Flash {
    /// What was done.
    pub done: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
    /// A secret shown once (a generated password, a new token), with what it is.
    pub secret: Option<(String, String)>,
}

fn flash(f: &Flash) -> Markup {
    html! {
        @if let Some(d) = &f.done { p.notice role="status" { (d) } }
        @if let Some(e) = &f.error { p.error role="alert" { (e) } }
        @if let Some((what, secret)) = &f.secret {
            div.secret role="status" {
                p { strong { (what) } " — copy it now: it is not shown again." }
                code #secret { (secret) }
            }
        }
    }
}

/// `GET /users`: every user, and the form to create one.
pub fn users(who: &Principal, users: &[User], sites: &[Site], f: &Flash, now_ms: i64) -> Markup {
    layout(
        "Users",
        Nav::Users,
        Some(who),
        html! {
            h1 { "Users and roles" }
            (flash(f))
            table {
                caption.muted { (users.len()) " users. Roles and sites decide every page and API call (docs/fleet.md)." }
                thead { tr {
                    th scope="col" { "User" } th scope="col" { "Role" } th scope="col" { "Sites" }
                    th scope="col" { "Signs in with" } th scope="col" { "State" } th scope="col" { "Last change" }
                } }
                tbody {
                    @for u in users {
                        tr {
                            td.nowrap { a href=(format!("/users/{}", view::encode(&u.name))) { strong { (u.name) } } }
                            td.nowrap { (u.role) }
                            td { (sites_words(&u.sites)) }
                            td.nowrap { (sign_in_words(u)) }
                            td.nowrap {
                                @if let Some(t) = u.disabled_ms { span.state-revoked title=(utc(t)) { "disabled" } }
                                @else { span.state-online { "active" } }
                            }
                            td.nowrap { span title=(utc(u.updated_ms)) { (view::ago(now_ms, u.updated_ms)) } }
                        }
                    }
                }
            }
            section.panel aria-labelledby="new-user" {
                h2 #new-user { "Create a user" }
                form.stack method="post" action="/users" {
                    (csrf_field(who))
                    label { "User name (a-z, 0-9, '.', '_', '-')" input name="name" required pattern="[a-z0-9][a-z0-9._-]{0,63}" autocomplete="off"; }
                    label { "Role" (role_select(who, "role", Some(Role::Viewer))) }
                    (site_boxes(sites, &None))
                    label { "Password (leave empty to generate one, shown once)" input type="password" name="password" autocomplete="new-password" minlength="12"; }
                    div { button type="submit" { "Create user" } }
                }
            }
        },
    )
}

/// `GET /users/{name}`: one user, its rights, its sessions.
pub fn user(
    who: &Principal,
    u: &User,
    sessions: &[Session],
    sites: &[Site],
    f: &Flash,
    now_ms: i64,
) -> Markup {
    let base = format!("/users/{}", view::encode(&u.name));
    layout(
        &format!("User {}", u.name),
        Nav::Users,
        Some(who),
        html! {
            p.crumbs { a href="/users" { "Users" } " › " (u.name) }
            h1 { "User " (u.name) }
            (flash(f))
            dl.facts {
                dt { "Role" } dd { (role_words(u.role)) }
                dt { "Sites" } dd { (sites_words(&u.sites)) }
                dt { "Signs in with" } dd { (sign_in_words(u)) }
                dt { "State" } dd {
                    @if let Some(t) = u.disabled_ms { "disabled since " (utc(t)) } @else { "active" }
                }
                dt { "Created" } dd { (utc(u.created_ms)) }
                dt { "Last change" } dd { (utc(u.updated_ms)) }
            }
            section.panel aria-labelledby="rights" {
                h2 #rights { "Role and sites" }
                @if u.sso {
                    p.muted { "A single sign-on user: its role and sites are set again from its groups at the identity provider at every sign-in." }
                }
                form.stack method="post" action=(base) {
                    (csrf_field(who))
                    input type="hidden" name="op" value="rights";
                    label { "Role" (role_select(who, "role", Some(u.role))) }
                    (site_boxes(sites, &u.sites))
                    div { button type="submit" { "Save role and sites" } }
                }
            }
            section.panel aria-labelledby="access" {
                h2 #access { "Access" }
                div.actions {
                    form method="post" action=(base) {
                        (csrf_field(who))
                        @if u.disabled_ms.is_some() {
                            input type="hidden" name="op" value="enable";
                            button type="submit" { "Enable " (u.name) }
                        } @else {
                            input type="hidden" name="op" value="disable";
                            button.danger type="submit" { "Disable " (u.name) }
                        }
                    }
                    @if !u.sso {
                        form method="post" action=(format!("{base}/password")) {
                            (csrf_field(who))
                            button type="submit" { "Reset password" }
                        }
                    }
                }
                p.muted { "Disabling ends every session of the user at once; its API tokens stop working with it. A password reset generates a new password, shown once, to pass on in person." }
            }
            section.panel aria-labelledby="its-sessions" {
                h2 #its-sessions { "Open sessions" }
                (session_table(who, sessions, now_ms, Some(&base)))
            }
        },
    )
}

fn session_table(
    who: &Principal,
    sessions: &[Session],
    now_ms: i64,
    user_base: Option<&str>,
) -> Markup {
    let mine = match &who.credential {
        Credential::Session { id, .. } => Some(id.as_str()),
        _ => None,
    };
    html! {
        @if sessions.is_empty() {
            p.muted { "No open session." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Session" } th scope="col" { "Signed in" } th scope="col" { "Last activity" }
                    th scope="col" { "From" } th scope="col" { span.visually-hidden { "Action" } }
                } }
                tbody {
                    @for s in sessions {
                        tr {
                            td.nowrap { code { (s.id.get(..8).unwrap_or(s.id.as_str())) } @if user_base.is_none() && mine == Some(s.id.as_str()) { " " span.badge { "this browser" } } }
                            td.nowrap { (utc(s.created_ms)) }
                            td.nowrap { span title=(utc(s.last_seen_ms)) { (view::ago(now_ms, s.last_seen_ms)) } }
                            td.nowrap { (s.source.clone().unwrap_or_else(|| "unknown".into())) }
                            td.nowrap {
                                @let action = match user_base {
                                    Some(b) => format!("{b}/sessions/{}/revoke", s.id),
                                    None => format!("/sessions/{}/revoke", s.id),
                                };
                                form method="post" action=(action) {
                                    (csrf_field(who))
                                    button.small type="submit" { "End session" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /sessions`: my open sessions.
pub fn sessions(who: &Principal, sessions: &[Session], f: &Flash, now_ms: i64) -> Markup {
    layout(
        "Sessions",
        Nav::Sessions,
        Some(who),
        html! {
            h1 { "My sessions" }
            (flash(f))
            p.muted { "Each browser you signed in with. End the ones you do not recognise, then change your password." }
            (session_table(who, sessions, now_ms, None))
            @if Permission::UsersManage.granted_to(who.role) {
                p { "Other users' sessions are on their pages under " a href="/users" { "Users" } "." }
            }
        },
    )
}

fn token_state(t: &ApiToken, now_ms: i64) -> Markup {
    html! {
        @if let Some(r) = t.revoked_ms { span.state-revoked title=(utc(r)) { "revoked" } }
        @else if t.expires_ms <= now_ms { span.state-decommissioned { "expired" } }
        @else { span.state-online { "active" } }
    }
}

/// `GET /tokens`: my personal API tokens and the form to create one.
pub fn tokens(who: &Principal, tokens: &[ApiToken], f: &Flash, now_ms: i64) -> Markup {
    layout(
        "API tokens",
        Nav::Tokens,
        Some(who),
        html! {
            h1 { "My API tokens" }
            (flash(f))
            p.muted { "For scripts and integrations: send " code { "Authorization: Bearer mgt_…" } ". A token has a role no higher than yours, expires, and can be revoked here." }
            @if tokens.is_empty() {
                p.muted { "No token yet." }
            } @else {
                table {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "Sites" }
                        th scope="col" { "Created" } th scope="col" { "Expires" } th scope="col" { "Last used" }
                        th scope="col" { "State" } th scope="col" { span.visually-hidden { "Action" } }
                    } }
                    tbody {
                        @for t in tokens {
                            tr {
                                td { strong { (t.name) } br; code.muted { (t.id) } }
                                td.nowrap { (t.role) }
                                td { (sites_words(&t.sites)) }
                                td.nowrap { (utc(t.created_ms)) }
                                td.nowrap { (utc(t.expires_ms)) }
                                td.nowrap { @if let Some(u) = t.last_used_ms { span title=(utc(u)) { (view::ago(now_ms, u)) } } @else { span.muted { "never" } } }
                                td.nowrap { (token_state(t, now_ms)) }
                                td.nowrap {
                                    @if t.revoked_ms.is_none() && t.expires_ms > now_ms {
                                        form method="post" action=(format!("/tokens/{}/revoke", t.id)) {
                                            (csrf_field(who))
                                            button.small.danger type="submit" aria-label=(format!("Revoke token {}", t.name)) { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section.panel aria-labelledby="new-token" {
                h2 #new-token { "Create a token" }
                form.stack method="post" action="/tokens" {
                    (csrf_field(who))
                    label { "What it is for" input name="name" required maxlength="100" placeholder="e.g. backup script on it-srv-2"; }
                    // Least privilege by default: read-only, when the user may give it.
                    label { "Role" (role_select(who, "role", Some(if role_covers(who.role, Role::Viewer) { Role::Viewer } else { who.role }))) }
                    label { "Expires in (days, 1 to 366)" input type="number" name="expires_in_days" value="90" min="1" max="366" required; }
                    div { button type="submit" { "Create token" } }
                }
            }
        },
    )
}

/// `YYYY-MM-DDTHH:MM[:SS]` (an `<input type="datetime-local">`, read as UTC) as Unix ms.
pub fn parse_local(s: &str) -> Option<i64> {
    let (date, time) = s.trim().split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let mut t = time.split(':');
    let (hh, mm): (i64, i64) = (t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    let ss: i64 = match t.next() {
        Some(v) => v.split('.').next()?.parse().ok()?,
        None => 0,
    };
    if d.next().is_some()
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || !(0..24).contains(&hh)
        || !(0..60).contains(&mm)
        || !(0..60).contains(&ss)
        || !(1970..=9999).contains(&y)
    {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400) + hh * 3600 + mm * 60 + ss) * 1000)
}

/// Unix ms as an `<input type="datetime-local">` value (UTC).
pub fn local_value(ms: i64) -> String {
    // `YYYY-MM-DD HH:MM UTC` → `YYYY-MM-DDTHH:MM`.
    utc(ms).trim_end_matches(" UTC").replacen(' ', "T", 1)
}

/// The audit log's filter as the page's form has it (the URL keeps it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditView {
    /// Exactly this actor.
    pub actor: String,
    /// Actions starting with this.
    pub action: String,
    /// Exactly this target.
    pub target: String,
    /// ok, denied, failed or empty.
    pub outcome: String,
    /// From (datetime-local, UTC).
    pub from: String,
    /// To (datetime-local, UTC).
    pub to: String,
    /// Older than this id (the page).
    pub before: String,
}

impl AuditView {
    /// The store's filter, one page (one more entry than shown, to know whether another page
    /// follows); an error names the field.
    pub fn filter(&self) -> Result<AuditFilter, String> {
        let opt = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        let time = |s: &str, what: &str| match opt(s) {
            None => Ok(None),
            Some(v) => parse_local(&v).map(Some).ok_or_else(|| {
                format!("{what}: {v:?} is not a date and time (YYYY-MM-DDTHH:MM, UTC)")
            }),
        };
        let outcome = opt(&self.outcome);
        if let Some(o) = &outcome
            && o.parse::<Outcome>().is_err()
        {
            return Err(format!("outcome: {o:?}; give ok, denied or failed"));
        }
        Ok(AuditFilter {
            actor: opt(&self.actor),
            action: opt(&self.action),
            target: opt(&self.target),
            outcome,
            since_ms: time(&self.from, "from")?,
            until_ms: time(&self.to, "to")?,
            limit: Some(AUDIT_PAGE + 1),
            before: opt(&self.before),
        })
    }

    /// The query string of this filter (without the page), for links.
    pub fn query(&self) -> String {
        [
            ("actor", &self.actor),
            ("action", &self.action),
            ("target", &self.target),
            ("outcome", &self.outcome),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| format!("{k}={}", view::encode(v.trim())))
        .collect::<Vec<_>>()
        .join("&")
    }

    /// The export URL of the API (`format` csv or json) with the same filter, up to 100,000
    /// entries.
    pub fn export(&self, format: &str) -> Result<String, String> {
        let f = self.filter()?;
        let mut q: Vec<String> = vec![format!("format={format}"), "limit=100000".into()];
        for (k, v) in [
            ("actor", &f.actor),
            ("action", &f.action),
            ("target", &f.target),
            ("outcome", &f.outcome),
        ] {
            if let Some(v) = v {
                q.push(format!("{k}={}", view::encode(v)));
            }
        }
        if let Some(s) = f.since_ms {
            q.push(format!("since_ms={s}"));
        }
        if let Some(u) = f.until_ms {
            q.push(format!("until_ms={u}"));
        }
        Ok(format!("/api/v1/audit?{}", q.join("&")))
    }
}

fn outcome_class(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "state-online",
        Outcome::Denied => "state-revoked",
        Outcome::Failed => "state-pending",
    }
}

/// `GET /audit`: the log, newest first, filtered, a page at a time.
pub fn audit(
    who: &Principal,
    v: &AuditView,
    entries: &[AuditEntry],
    more: bool,
    error: Option<&str>,
) -> Markup {
    let shown = &entries[..entries.len().min(usize::try_from(AUDIT_PAGE).unwrap_or(50))];
    let q = v.query();
    let amp = if q.is_empty() { "" } else { "&" };
    html! {
        (layout("Audit log", Nav::Audit, Some(who), html! {
            h1 { "Audit log" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form.filters method="get" action="/audit" {
                label { "Who" input name="actor" value=(v.actor) placeholder="user name"; }
                label { "Action (starts with)" input name="action" value=(v.action) placeholder="login, user., device."; }
                label { "Target" input name="target" value=(v.target) placeholder="user:alice, device:ct-1"; }
                label { "Outcome"
                    select name="outcome" {
                        option value="" { "Any outcome" }
                        @for o in ["ok", "denied", "failed"] {
                            option value=(o) selected[v.outcome == o] { (o) }
                        }
                    }
                }
                label { "From (UTC)" input type="datetime-local" name="from" value=(v.from); }
                label { "To (UTC)" input type="datetime-local" name="to" value=(v.to); }
                button type="submit" { "Apply" }
                a href="/audit" { "Clear filters" }
            }
            @if let (Ok(csv), Ok(json)) = (v.export("csv"), v.export("json")) {
                p.exports { "Export this selection (up to 100,000 entries): " a href=(csv) download="medgate-audit.csv" { "CSV" } " · " a href=(json) download="medgate-audit.json" { "JSON" } }
            }
            @if shown.is_empty() {
                p.muted { "No entry matches." }
            } @else {
                table.audit {
                    thead { tr {
                        th scope="col" { "When (UTC)" } th scope="col" { "Who" } th scope="col" { "From" }
                        th scope="col" { "Action" } th scope="col" { "Target" } th scope="col" { "Outcome" }
                        th scope="col" { "Before → after" }
                    } }
                    tbody {
                        @for e in shown {
                            tr {
                                td.nowrap { (when(e.at_ms)) }
                                td { (e.actor) }
                                td.nowrap { (e.source.clone().unwrap_or_default()) }
                                td.nowrap { code { (e.action) } }
                                td { (e.target) }
                                td.nowrap { span class=(outcome_class(e.outcome)) { (e.outcome.as_str()) } }
                                td.change {
                                    @if e.before.is_some() || e.after.is_some() {
                                        details {
                                            summary { (summary(e)) }
                                            @if let Some(b) = &e.before { p.muted { "Before" } pre { (b) } }
                                            @if let Some(a) = &e.after { p.muted { "After" } pre { (a) } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages" {
                @if !v.before.is_empty() {
                    a href=(format!("/audit?{q}")) { "↖ Newest" }
                }
                @if more {
                    @if let Some(last) = shown.last() {
                        a href=(format!("/audit?{q}{amp}before={}", view::encode(&last.id))) rel="next" { "Older →" }
                    }
                }
            }
        }))
    }
}

/// A short line for an entry's change: the fields that differ (`role: viewer → operator`), or
/// the beginning of the document.
fn summary(e: &AuditEntry) -> String {
    use serde_json::Value;
    let parse = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| serde_json::from_str::<serde_json::Map<String, Value>>(t).ok())
    };
    let short = |v: Option<&Value>| -> String {
        let t = match v {
            None | Some(Value::Null) => "—".to_owned(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        };
        let mut s: String = t.chars().take(30).collect();
        if t.chars().count() > 30 {
            s.push('…');
        }
        s
    };
    if let (Some(b), Some(a)) = (parse(&e.before), parse(&e.after)) {
        let changed: Vec<String> = a
            .keys()
            .chain(b.keys().filter(|k| !a.contains_key(*k)))
            .filter(|k| !k.ends_with("_ms") || k.as_str() == "disabled_ms")
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| format!("{k}: {} → {}", short(b.get(k)), short(a.get(k))))
            .collect();
        if !changed.is_empty() {
            return changed.join("; ");
        }
    }
    let text = e.after.as_deref().or(e.before.as_deref()).unwrap_or("");
    let mut s: String = text.chars().take(60).collect();
    if text.chars().count() > 60 {
        s.push('…');
    }
    s
}

/// `YYYY-MM-DD HH:MM:SS` (UTC).
fn when(ms: i64) -> String {
    format!(
        "{}:{:02}",
        utc(ms).trim_end_matches(" UTC"),
        ms.div_euclid(1000).rem_euclid(60)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::SiteScope;

    fn admin() -> Principal {
        Principal {
            user: "root".into(),
            role: Role::Admin,
            sites: SiteScope::All,
            credential: Credential::Session {
                id: "s1".into(),
                csrf: "c5rf".into(),
            },
        }
    }

    #[test]
    fn pages_escape_carry_the_csrf_token_and_have_no_inline_script_or_style() {
        let u = User {
            name: "<b>eve</b>".into(),
            role: Role::Viewer,
            sites: Some(vec!["st-marien".into()]),
            has_password: false,
            sso: true,
            disabled_ms: None,
            created_ms: 0,
            updated_ms: 0,
        };
        let s = Session {
            id: "0123456789abcdef".into(),
            user: "root".into(),
            source: Some("10.0.0.1".into()),
            created_ms: 0,
            last_seen_ms: 0,
            revoked_ms: None,
            csrf_token: "x".into(),
        };
        let t = ApiToken {
            id: "t1".into(),
            user: "root".into(),
            name: "backup \"nightly\"".into(),
            role: Role::Viewer,
            sites: None,
            created_ms: 0,
            expires_ms: 10,
            revoked_ms: None,
            last_used_ms: None,
        };
        let e = AuditEntry {
            id: "1".into(),
            at_ms: 0,
            actor: "root".into(),
            source: None,
            action: "user.create".into(),
            target: "user:<b>eve</b>".into(),
            outcome: Outcome::Ok,
            before: None,
            after: Some(r#"{"name":"<b>eve</b>"}"#.into()),
        };
        let site = Site {
            id: "st-marien".into(),
            name: "St. Marien".into(),
            created_ms: 0,
            devices: 1,
            online: 1,
        };
        let flash = Flash {
            secret: Some(("The password".into(), "<secret>".into())),
            ..Flash::default()
        };
        let who = admin();
        for html in [
            users(
                &who,
                std::slice::from_ref(&u),
                std::slice::from_ref(&site),
                &flash,
                0,
            ),
            user(
                &who,
                &u,
                std::slice::from_ref(&s),
                std::slice::from_ref(&site),
                &Flash::default(),
                0,
            ),
            sessions(&who, std::slice::from_ref(&s), &Flash::default(), 0),
            tokens(&who, &[t], &Flash::default(), 5),
            audit(&who, &AuditView::default(), &[e], true, None),
        ]
        .map(Markup::into_string)
        {
            assert_eq!(html.matches("<script").count(), 1, "{html}");
            assert!(
                !html.contains("style=") && !html.contains("<style"),
                "{html}"
            );
            assert!(!html.contains("<b>eve"), "escaped: {html}");
            assert!(!html.contains("<secret>"), "escaped: {html}");
            assert!(
                html.contains("Users") && html.contains("Audit log"),
                "admin navigation"
            );
        }
        let html = user(&who, &u, &[s], &[site], &Flash::default(), 0).into_string();
        assert!(html.contains(r#"name="csrf_token" value="c5rf""#));
        assert!(
            html.contains("single sign-on") && !html.contains("Reset password"),
            "{html}"
        );
    }

    #[test]
    fn a_change_is_summed_up_by_the_fields_that_differ() {
        let e = AuditEntry {
            id: "1".into(),
            at_ms: 61_000,
            actor: "root".into(),
            source: None,
            action: "user.update".into(),
            target: "user:vera".into(),
            outcome: Outcome::Ok,
            before: Some(
                r#"{"name":"vera","role":"viewer","updated_ms":1,"disabled_ms":null}"#.into(),
            ),
            after: Some(
                r#"{"name":"vera","role":"operator","updated_ms":2,"disabled_ms":5}"#.into(),
            ),
        };
        assert_eq!(summary(&e), "disabled_ms: — → 5; role: viewer → operator");
        assert_eq!(when(61_000), "1970-01-01 00:01:01");
    }

    #[test]
    fn datetime_local_reads_as_utc_and_back() {
        assert_eq!(parse_local("1970-01-01T00:00"), Some(0));
        assert_eq!(parse_local("2026-12-02T04:40"), Some(1_796_186_400_000));
        assert_eq!(parse_local("2026-12-02T04:40:30"), Some(1_796_186_430_000));
        assert_eq!(local_value(1_796_186_400_000), "2026-12-02T04:40");
        for bad in [
            "",
            "2026-13-01T00:00",
            "2026-12-02",
            "2026-12-02T25:00",
            "x-y-zT1:2",
        ] {
            assert_eq!(parse_local(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_audit_filter_comes_from_the_form_and_goes_to_the_export() {
        let v = AuditView {
            actor: "alice".into(),
            action: "user.".into(),
            from: "1970-01-01T00:01".into(),
            before: "0009".into(),
            ..AuditView::default()
        };
        let f = v.filter().expect("valid");
        assert_eq!(f.actor.as_deref(), Some("alice"));
        assert_eq!(f.since_ms, Some(60_000));
        assert_eq!(f.limit, Some(AUDIT_PAGE + 1));
        assert_eq!(f.before.as_deref(), Some("0009"));
        assert_eq!(
            v.query(),
            "actor=alice&action=user.&from=1970-01-01T00%3A01"
        );
        assert_eq!(
            v.export("csv").expect("url"),
            "/api/v1/audit?format=csv&limit=100000&actor=alice&action=user.&since_ms=60000"
        );
        let bad = AuditView {
            outcome: "maybe".into(),
            ..AuditView::default()
        };
        assert!(bad.filter().expect_err("bad").starts_with("outcome"));
        let bad = AuditView {
            to: "tomorrow".into(),
            ..AuditView::default()
        };
        assert!(bad.filter().expect_err("bad").starts_with("to:"));
    }
}
