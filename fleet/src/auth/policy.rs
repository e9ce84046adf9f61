//! The one policy table: every HTTP route of the fleet, with the permission it needs and what
//! its site scope is checked against. The router is built from it (a route missing here does not
//! start: `api::router` refuses it) and one middleware consults it for every request, so no
//! handler has a check of its own to forget. The role × route matrix test walks this table.

use std::fmt;

use axum::http::Method;

use super::{Principal, Role};

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Anyone, unauthenticated (health, metrics counts, OpenAPI, enrollment by claim token,
    /// login, first-run setup by its one-time token).
    Public,
    /// Any authenticated user: their own account, sessions and tokens.
    Account,
    /// Read devices, sites, events, telemetry, peers, configurations, commands.
    DevicesRead,
    /// Change devices: room and tags, approval, revocation, configuration, commands, peers.
    DevicesOperate,
    /// Site-wide and tag-wide configurations.
    ConfigWrite,
    /// Claim tokens for new appliances.
    ClaimsCreate,
    /// Create and rename sites.
    SitesManage,
    /// Users, their roles, sites and sessions.
    UsersManage,
    /// The audit log.
    AuditRead,
    /// The wall's display links: create, list, revoke (wall, issue 13 part 1).
    DisplaysManage,
    /// ota (issue 14 part 2): upload bundles; create, approve, pause, resume and cancel update
    /// campaigns (admins only; campaigns are read with `DevicesRead`, within the sites).
    UpdatesManage,
}

impl Permission {
    /// Whether `role` holds this permission (the role table).
    pub fn granted_to(self, role: Role) -> bool {
        use Permission as P;
        match role {
            Role::Admin => true,
            Role::Operator => matches!(
                self,
                P::Public
                    | P::Account
                    | P::DevicesRead
                    | P::DevicesOperate
                    | P::ConfigWrite
                    | P::ClaimsCreate
            ),
            Role::Viewer => matches!(self, P::Public | P::Account | P::DevicesRead),
            Role::Auditor => matches!(self, P::Public | P::Account | P::AuditRead),
            Role::Vendor => matches!(self, P::Public | P::Account),
        }
    }
}

/// Every permission.
pub const PERMISSIONS: [Permission; 11] = [
    Permission::Public,
    Permission::Account,
    Permission::DevicesRead,
    Permission::DevicesOperate,
    Permission::ConfigWrite,
    Permission::ClaimsCreate,
    Permission::SitesManage,
    Permission::UsersManage,
    Permission::AuditRead,
    Permission::DisplaysManage,
    Permission::UpdatesManage,
];

/// Whether `role` may hand out `other` (a token's role, a new user's role): only a role whose
/// permissions are all its own.
pub fn role_covers(role: Role, other: Role) -> bool {
    PERMISSIONS
        .iter()
        .all(|p| !p.granted_to(other) || p.granted_to(role))
}

/// What a route's site scope is checked against (by the middleware, before the handler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Nothing site-bound (or the caller's own account).
    None,
    /// The path's `{id}` is a device: its site must be in scope, else 404 (another site's
    /// device is not even said to exist).
    Device,
    /// The path's `{id}` is a site: in scope, else 403.
    Site,
    /// The path's `{id}` is a command: its device's site in scope, else 404.
    Command,
    /// `?device=` if given must be in scope (404); without it, the operation filters to the
    /// scope.
    QueryDevice,
    /// A listing the operation filters to the scope (devices, sites), or a body naming its
    /// site, which the operation checks.
    Filtered,
    /// Reaches devices of any site (tag-wide configuration): only a principal with every site.
    AllSites,
    /// alerts (issue 13 part 3): the path's `{id}` is an alert: its site in scope, else 404.
    Alert,
}

/// HTTP methods of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    /// GET (and HEAD).
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl Verb {
    /// From a request's method (HEAD is GET's).
    pub fn of(m: &Method) -> Option<Verb> {
        Some(match *m {
            Method::GET | Method::HEAD => Verb::Get,
            Method::POST => Verb::Post,
            Method::PUT => Verb::Put,
            Method::PATCH => Verb::Patch,
            Method::DELETE => Verb::Delete,
            _ => return None,
        })
    }

    /// As a method.
    pub fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
            Verb::Put => Method::PUT,
            Verb::Patch => Method::PATCH,
            Verb::Delete => Method::DELETE,
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.method().fmt(f)
    }
}

/// One route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Method.
    pub verb: Verb,
    /// Path as the router has it (`{id}` parameters).
    pub path: &'static str,
    /// What it needs.
    pub permission: Permission,
    /// What its scope is checked against.
    pub target: Target,
}

impl Route {
    /// A console page (HTML): without a session it redirects to the login page instead of
    /// answering 401, and refusals are pages.
    pub fn is_page(&self) -> bool {
        !self.path.starts_with("/api/")
            && !self.path.starts_with("/static/")
            && !matches!(self.path, "/healthz" | "/metrics")
    }
}

const fn r(verb: Verb, path: &'static str, permission: Permission, target: Target) -> Route {
    Route {
        verb,
        path,
        permission,
        target,
    }
}

use Permission as P;
use Target as T;
use Verb as V;

/// Every route the fleet serves.
pub const ROUTES: &[Route] = &[
    r(V::Get, "/healthz", P::Public, T::None),
    r(V::Get, "/metrics", P::Public, T::None),
    r(V::Get, "/static/htmx-2.0.11.min.js", P::Public, T::None),
    r(V::Get, "/static/console.css", P::Public, T::None),
    r(V::Get, "/setup", P::Public, T::None),
    r(V::Post, "/setup", P::Public, T::None),
    r(V::Get, "/login", P::Public, T::None),
    r(V::Post, "/login", P::Public, T::None),
    r(V::Post, "/logout", P::Account, T::None),
    r(V::Get, "/", P::DevicesRead, T::Filtered),
    r(V::Get, "/devices", P::DevicesRead, T::Filtered),
    r(V::Get, "/api/v1/openapi.json", P::Public, T::None),
    r(V::Post, "/api/v1/enroll", P::Public, T::None),
    r(V::Post, "/api/v1/auth/setup", P::Public, T::None),
    r(V::Post, "/api/v1/auth/login", P::Public, T::None),
    r(V::Post, "/api/v1/auth/logout", P::Account, T::None),
    r(V::Get, "/api/v1/auth/me", P::Account, T::None),
    r(V::Get, "/api/v1/auth/sessions", P::Account, T::None),
    r(V::Delete, "/api/v1/auth/sessions/{id}", P::Account, T::None),
    r(V::Get, "/api/v1/tokens", P::Account, T::None),
    r(V::Post, "/api/v1/tokens", P::Account, T::None),
    r(V::Delete, "/api/v1/tokens/{id}", P::Account, T::None),
    r(V::Get, "/api/v1/users", P::UsersManage, T::None),
    r(V::Post, "/api/v1/users", P::UsersManage, T::None),
    r(V::Patch, "/api/v1/users/{name}", P::UsersManage, T::None),
    r(
        V::Get,
        "/api/v1/users/{name}/sessions",
        P::UsersManage,
        T::None,
    ),
    r(
        V::Delete,
        "/api/v1/users/{name}/sessions",
        P::UsersManage,
        T::None,
    ),
    r(V::Get, "/api/v1/audit", P::AuditRead, T::None),
    r(V::Get, "/api/v1/devices", P::DevicesRead, T::Filtered),
    r(V::Get, "/api/v1/devices/{id}", P::DevicesRead, T::Device),
    r(
        V::Patch,
        "/api/v1/devices/{id}",
        P::DevicesOperate,
        T::Device,
    ),
    r(
        V::Post,
        "/api/v1/devices/{id}/approve",
        P::DevicesOperate,
        T::Device,
    ),
    r(
        V::Post,
        "/api/v1/devices/{id}/revoke",
        P::DevicesOperate,
        T::Device,
    ),
    r(
        V::Post,
        "/api/v1/devices/{id}/decommission",
        P::DevicesOperate,
        T::Device,
    ),
    r(
        V::Get,
        "/api/v1/devices/{id}/events",
        P::DevicesRead,
        T::Device,
    ),
    r(
        V::Get,
        "/api/v1/devices/{id}/telemetry",
        P::DevicesRead,
        T::Device,
    ),
    r(
        V::Get,
        "/api/v1/devices/{id}/peers",
        P::DevicesRead,
        T::Device,
    ),
    r(
        V::Post,
        "/api/v1/devices/{id}/peers/approve",
        P::DevicesOperate,
        T::Device,
    ),
    r(
        V::Get,
        "/api/v1/devices/{id}/config",
        P::DevicesRead,
        T::Device,
    ),
    r(
        V::Put,
        "/api/v1/devices/{id}/config",
        P::DevicesOperate,
        T::Device,
    ),
    r(
        V::Get,
        "/api/v1/devices/{id}/commands",
        P::DevicesRead,
        T::Device,
    ),
    r(
        V::Post,
        "/api/v1/devices/{id}/commands",
        P::DevicesOperate,
        T::Device,
    ),
    r(V::Get, "/api/v1/commands/{id}", P::DevicesRead, T::Command),
    // The diagnostics bundle holds configuration and log lines (no patient data): operators'.
    r(
        V::Get,
        "/api/v1/commands/{id}/file",
        P::DevicesOperate,
        T::Command,
    ),
    r(V::Get, "/api/v1/sites", P::DevicesRead, T::Filtered),
    r(V::Put, "/api/v1/sites/{id}", P::SitesManage, T::Site),
    r(V::Put, "/api/v1/sites/{id}/config", P::ConfigWrite, T::Site),
    r(
        V::Put,
        "/api/v1/tags/{tag}/config",
        P::ConfigWrite,
        T::AllSites,
    ),
    r(V::Get, "/api/v1/events", P::DevicesRead, T::QueryDevice),
    r(V::Post, "/api/v1/claims", P::ClaimsCreate, T::Filtered),
    r(V::Get, "/api/v1/live", P::DevicesRead, T::Filtered),
    // console-auth (issue 12): single sign-on (before any session) and the account and
    // administration pages.
    r(V::Get, "/auth/oidc/start", P::Public, T::None),
    r(V::Get, "/auth/oidc/callback", P::Public, T::None),
    r(V::Get, "/users", P::UsersManage, T::None),
    r(V::Post, "/users", P::UsersManage, T::None),
    r(V::Get, "/users/{name}", P::UsersManage, T::None),
    r(V::Post, "/users/{name}", P::UsersManage, T::None),
    r(V::Post, "/users/{name}/password", P::UsersManage, T::None),
    r(
        V::Post,
        "/users/{name}/sessions/{id}/revoke",
        P::UsersManage,
        T::None,
    ),
    r(V::Get, "/tokens", P::Account, T::None),
    r(V::Post, "/tokens", P::Account, T::None),
    r(V::Post, "/tokens/{id}/revoke", P::Account, T::None),
    r(V::Get, "/sessions", P::Account, T::None),
    r(V::Post, "/sessions/{id}/revoke", P::Account, T::None),
    r(V::Get, "/audit", P::AuditRead, T::None),
    // console-fleet: the devices list's bulk actions, sites and rooms, claims.
    r(V::Post, "/devices/bulk", P::DevicesOperate, T::Filtered),
    r(V::Get, "/sites", P::DevicesRead, T::Filtered),
    r(V::Post, "/sites", P::SitesManage, T::Filtered),
    r(V::Get, "/sites/{id}", P::DevicesRead, T::Site),
    r(V::Post, "/sites/{id}", P::SitesManage, T::Site),
    r(V::Post, "/sites/{id}/claims", P::ClaimsCreate, T::Site),
    r(
        V::Post,
        "/sites/{id}/provisioning",
        P::ClaimsCreate,
        T::Site,
    ),
    // console: device page
    r(V::Get, "/static/uplot-1.6.32.min.js", P::Public, T::None),
    r(V::Get, "/static/uplot-1.6.32.min.css", P::Public, T::None),
    r(V::Get, "/static/device-charts.js", P::Public, T::None),
    r(V::Get, "/devices/{id}", P::DevicesRead, T::Device),
    r(V::Get, "/devices/{id}/live", P::DevicesRead, T::Device),
    r(
        V::Get,
        "/devices/{id}/charts.json",
        P::DevicesRead,
        T::Device,
    ),
    r(
        V::Post,
        "/devices/{id}/config/check",
        P::DevicesOperate,
        T::Device,
    ),
    r(
        V::Post,
        "/devices/{id}/config",
        P::DevicesOperate,
        T::Device,
    ),
    r(
        V::Post,
        "/devices/{id}/command",
        P::DevicesOperate,
        T::Device,
    ),
    r(
        V::Post,
        "/devices/{id}/peers/approve",
        P::DevicesOperate,
        T::Device,
    ),
    // alerts (issue 13 part 3): the alerts page and API, acknowledgement and silence.
    r(V::Get, "/alerts", P::DevicesRead, T::Filtered),
    r(V::Post, "/alerts/{id}/ack", P::DevicesOperate, T::Alert),
    r(V::Post, "/alerts/{id}/silence", P::DevicesOperate, T::Alert),
    r(V::Get, "/api/v1/alerts", P::DevicesRead, T::Filtered),
    r(
        V::Post,
        "/api/v1/alerts/{id}/ack",
        P::DevicesOperate,
        T::Alert,
    ),
    r(
        V::Post,
        "/api/v1/alerts/{id}/silence",
        P::DevicesOperate,
        T::Alert,
    ),
    // ota (issue 14): the Updates pages; the campaign pages show the caller's sites' devices
    // (a campaign with none of them: 404), the changes are admins'.
    r(V::Get, "/updates", P::DevicesRead, T::Filtered),
    r(V::Post, "/updates/campaigns", P::UpdatesManage, T::Filtered),
    r(
        V::Get,
        "/updates/campaigns/{id}",
        P::DevicesRead,
        T::Filtered,
    ),
    r(
        V::Get,
        "/updates/campaigns/{id}/live",
        P::DevicesRead,
        T::Filtered,
    ),
    r(
        V::Post,
        "/updates/campaigns/{id}/{action}",
        P::UpdatesManage,
        T::Filtered,
    ),
    r(V::Get, "/static/updates.js", P::Public, T::None),
    // analytics (issue 13 part 2): the region's numbers, pages and API, within the caller's sites.
    r(V::Get, "/analytics", P::DevicesRead, T::Filtered),
    r(V::Get, "/analytics/daily", P::DevicesRead, T::Filtered),
    r(V::Get, "/static/analytics-charts.js", P::Public, T::None),
    r(
        V::Get,
        "/api/v1/analytics/overview",
        P::DevicesRead,
        T::Filtered,
    ),
    r(
        V::Get,
        "/api/v1/analytics/daily",
        P::DevicesRead,
        T::Filtered,
    ),
    r(
        V::Get,
        "/api/v1/analytics/trend",
        P::DevicesRead,
        T::Filtered,
    ),
    r(
        V::Get,
        "/api/v1/analytics/devices",
        P::DevicesRead,
        T::Filtered,
    ),
    r(
        V::Get,
        "/api/v1/analytics/delay",
        P::DevicesRead,
        T::Filtered,
    ),
    // wall (issue 13 part 1): display links (admins), and the wall itself, which its link's
    // secret authorises (no session; unknown or revoked: 404).
    r(V::Get, "/displays", P::DisplaysManage, T::None),
    r(V::Post, "/displays", P::DisplaysManage, T::None),
    r(V::Post, "/displays/{id}/revoke", P::DisplaysManage, T::None),
    r(V::Get, "/static/wall.js", P::Public, T::None),
    r(V::Get, "/static/wall.css", P::Public, T::None),
    r(V::Get, "/wall/{token}", P::Public, T::None),
    r(V::Get, "/wall/{token}/events", P::Public, T::None),
    // ota (issue 14 part 2): bundles and update campaigns. A campaign's devices are filtered to
    // the caller's sites by the operation (a campaign with none of them: 404).
    r(V::Post, "/api/v1/bundles", P::UpdatesManage, T::None),
    r(V::Get, "/api/v1/bundles", P::DevicesRead, T::None),
    r(V::Get, "/api/v1/bundles/{id}", P::DevicesRead, T::None),
    r(V::Post, "/api/v1/campaigns", P::UpdatesManage, T::Filtered),
    r(V::Get, "/api/v1/campaigns", P::DevicesRead, T::Filtered),
    r(
        V::Get,
        "/api/v1/campaigns/{id}",
        P::DevicesRead,
        T::Filtered,
    ),
    r(
        V::Post,
        "/api/v1/campaigns/{id}/approve",
        P::UpdatesManage,
        T::Filtered,
    ),
    r(
        V::Post,
        "/api/v1/campaigns/{id}/pause",
        P::UpdatesManage,
        T::Filtered,
    ),
    r(
        V::Post,
        "/api/v1/campaigns/{id}/resume",
        P::UpdatesManage,
        T::Filtered,
    ),
    r(
        V::Post,
        "/api/v1/campaigns/{id}/cancel",
        P::UpdatesManage,
        T::Filtered,
    ),
];

/// The route of a request (its method and the router's matched path).
pub fn route(method: &Method, matched_path: &str) -> Option<&'static Route> {
    let verb = Verb::of(method)?;
    ROUTES
        .iter()
        .find(|r| r.verb == verb && r.path == matched_path)
}

/// The permission decision for an authenticated principal (scope is checked after it).
pub fn permits(principal: &Principal, route: &Route) -> bool {
    route.permission.granted_to(principal.role)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_table_has_each_route_once_and_only_documented_public_routes() {
        let mut seen = HashSet::new();
        for r in ROUTES {
            assert!(seen.insert((r.verb, r.path)), "{} {} twice", r.verb, r.path);
        }
        let public: Vec<_> = ROUTES
            .iter()
            .filter(|r| r.permission == Permission::Public)
            .map(|r| r.path)
            .collect();
        assert_eq!(
            public,
            [
                "/healthz",
                "/metrics",
                "/static/htmx-2.0.11.min.js",
                "/static/console.css",
                "/setup",
                "/setup",
                "/login",
                "/login",
                "/api/v1/openapi.json",
                "/api/v1/enroll",
                "/api/v1/auth/setup",
                "/api/v1/auth/login",
                "/auth/oidc/start",
                "/auth/oidc/callback",
                // console: device page
                "/static/uplot-1.6.32.min.js",
                "/static/uplot-1.6.32.min.css",
                "/static/device-charts.js",
                // ota: the Updates page's upload script
                "/static/updates.js",
                // analytics: the Analytics page's charts script
                "/static/analytics-charts.js",
                // wall: the display link's secret authorises
                "/static/wall.js",
                "/static/wall.css",
                "/wall/{token}",
                "/wall/{token}/events",
            ]
        );
        // Every state-changing device route checks the device's site.
        for r in ROUTES {
            if r.path.starts_with("/api/v1/devices/{id}") || r.path.starts_with("/devices/{id}") {
                assert_eq!(r.target, Target::Device, "{} {}", r.verb, r.path);
            }
        }
    }

    #[test]
    fn roles_hold_what_the_documentation_says() {
        use Permission as P;
        let table: &[(Role, &[Permission])] = &[
            (Role::Admin, &PERMISSIONS),
            (
                Role::Operator,
                &[
                    P::Public,
                    P::Account,
                    P::DevicesRead,
                    P::DevicesOperate,
                    P::ConfigWrite,
                    P::ClaimsCreate,
                ],
            ),
            (Role::Viewer, &[P::Public, P::Account, P::DevicesRead]),
            (Role::Auditor, &[P::Public, P::Account, P::AuditRead]),
            (Role::Vendor, &[P::Public, P::Account]),
        ];
        for (role, granted) in table {
            for p in PERMISSIONS {
                assert_eq!(p.granted_to(*role), granted.contains(&p), "{role} {p:?}");
            }
        }
        assert!(role_covers(Role::Admin, Role::Operator));
        assert!(role_covers(Role::Operator, Role::Viewer));
        assert!(!role_covers(Role::Operator, Role::Admin));
        assert!(!role_covers(Role::Viewer, Role::Auditor));
        assert!(role_covers(Role::Auditor, Role::Vendor));
    }

    #[test]
    fn requests_find_their_route_and_head_is_get() {
        let r = route(&Method::HEAD, "/api/v1/devices/{id}").expect("route");
        assert_eq!(r.permission, Permission::DevicesRead);
        assert!(route(&Method::OPTIONS, "/api/v1/devices").is_none());
        assert!(route(&Method::DELETE, "/api/v1/devices").is_none());
    }
}
