//! The operations of identity and access: first-run setup, login and sessions, users, personal
//! API tokens, authentication of a request, site-scope checks and the audit log. Decisions are
//! the `auth` modules' (pure); this module carries them out against the store.

use std::net::IpAddr;

use medgate_contract::now_ms;
use serde::Serialize;
use serde_json::json;

use super::{OpError, Ops, sha256_hex};
use crate::auth::policy::role_covers;
use crate::auth::throttle::{self, Decision, Throttle};
use crate::auth::{
    Credential, Principal, Role, SiteScope, check_user_name, password, session, token,
};
use crate::store::audit::{AuditEntry, AuditFilter, Outcome, audit_id};
use crate::store::users::{ApiToken, NewUser, Session, User};
use crate::store::{db_int, from_db, now_db};

/// Who does something, from where: what the audit log records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The principal.
    pub principal: Principal,
    /// The source address of the request.
    pub source: Option<IpAddr>,
}

impl Actor {
    /// An actor.
    pub fn new(principal: Principal, source: Option<IpAddr>) -> Actor {
        Actor { principal, source }
    }

    /// Refuses a site outside the actor's scope.
    pub fn check_site(&self, site: &str) -> Result<(), OpError> {
        if self.principal.sites.allows(site) {
            Ok(())
        } else {
            Err(OpError::Forbidden(format!(
                "site {site:?} is not one of your sites; ask an admin to add it to your user"
            )))
        }
    }

    /// A local command line (`medgate-fleet admin …`), with every right: it runs as the
    /// fleet's own user on its host.
    pub fn cli() -> Actor {
        Actor {
            principal: Principal {
                user: "cli".into(),
                role: Role::Admin,
                sites: SiteScope::All,
                credential: Credential::BreakGlass,
            },
            source: None,
        }
    }
}

/// A successful login.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    /// The cookie's secret (never stored; its SHA-256 is).
    pub secret: String,
    /// The session (its CSRF token inside).
    pub session: Session,
    /// The user.
    pub user: User,
}

/// A new personal API token: its secret is shown once, here.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NewToken {
    /// `mgt_…`: send as `Authorization: Bearer …`. Shown only now.
    pub token: String,
    /// The stored record.
    pub record: ApiToken,
}

/// A new user; `generated_password` only when none was given (shown only now).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NewUserCreated {
    /// The user.
    pub user: User,
    /// The password generated for it, if none was given.
    pub generated_password: Option<String>,
}

/// What may change on a user (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct UserChange {
    /// New role.
    pub role: Option<Role>,
    /// New sites (`Some(None)`: every site).
    pub sites: Option<Option<Vec<String>>>,
    /// Disable (`true`) or enable.
    pub disabled: Option<bool>,
    /// A new password.
    pub password: Option<String>,
}

fn random<const N: usize>() -> Result<[u8; N], OpError> {
    let mut b = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| OpError::Random)?;
    Ok(b)
}

/// Microseconds since the epoch, strictly increasing within this process.
fn next_audit_micros() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A password of 20 characters from an alphabet without look-alikes (about 114 bits).
pub fn generate_password() -> Result<String, OpError> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let bytes = random::<64>()?;
    // Rejection sampling keeps every character equally likely.
    let limit = 256 - 256 % ALPHABET.len();
    let out: String = bytes
        .iter()
        .filter(|&&b| usize::from(b) < limit)
        .take(20)
        .map(|&b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect();
    if out.len() == 20 {
        Ok(out)
    } else {
        Err(OpError::Random)
    }
}

async fn hash_password(pw: String) -> Result<String, OpError> {
    let salt = random::<16>()?;
    tokio::task::spawn_blocking(move || password::hash(&pw, salt))
        .await
        .map_err(|_| OpError::Random)?
        .map_err(|e| OpError::Invalid(format!("password: {e}")))
}

fn sites_of(list: Option<Vec<String>>) -> Result<SiteScope, OpError> {
    if let Some(v) = &list {
        for s in v {
            medgate_contract::SiteId::new(s.as_str())
                .map_err(|e| OpError::Invalid(format!("sites: {e}")))?;
        }
        if v.is_empty() {
            return Err(OpError::Invalid(
                "sites: give at least one site, or leave it out (or null) for every site".into(),
            ));
        }
    }
    Ok(SiteScope::from_list(list))
}

/// Opens a session for `user` (after its password or its identity provider said yes), audited as
/// `action` with the session's id.
pub(super) async fn open_session(
    ops: &Ops,
    user: &User,
    source: Option<IpAddr>,
    action: &str,
) -> Result<LoggedIn, OpError> {
    let now = now_db();
    let name = user.name.as_str();
    let secret = hex(&random::<32>()?);
    let id = hex(&random::<12>()?);
    let csrf = hex(&random::<32>()?);
    let source_text = source.map(|s| s.to_string());
    ops.store
        .create_session(
            &id,
            &sha256_hex(secret.as_bytes()),
            name,
            &csrf,
            source_text.as_deref(),
            now,
        )
        .await?;
    let session = Session {
        id,
        user: name.to_owned(),
        source: source_text,
        created_ms: now,
        last_seen_ms: now,
        revoked_ms: None,
        csrf_token: csrf,
    };
    ops.audit_as(
        name,
        source,
        action,
        &format!("user:{name}"),
        Outcome::Ok,
        None,
        json_text(json!({"session": session.id})),
    )
    .await;
    Ok(LoggedIn {
        secret,
        session,
        user: user.clone(),
    })
}

fn json_text(v: impl Serialize) -> Option<String> {
    serde_json::to_string(&v).ok()
}

impl Ops {
    // ---- settings ----

    /// The session limits of `[auth]`.
    pub fn session_limits(&self) -> session::Limits {
        session::Limits {
            idle_ms: db_int(self.config.auth.session_idle_minutes.saturating_mul(60_000)),
            absolute_ms: db_int(
                self.config
                    .auth
                    .session_absolute_hours
                    .saturating_mul(3_600_000),
            ),
        }
    }

    /// Whether the session cookie is `Secure`: when the fleet serves HTTPS itself
    /// (`[http.tls]`) or is published behind HTTPS (`devices.public_url` is `https://…`).
    /// Plain HTTP is allowed on loopback only (`config check`), where a `Secure` cookie would
    /// never come back.
    pub fn cookie_secure(&self) -> bool {
        self.config.http.tls.is_some()
            || self
                .config
                .devices
                .public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
    }

    // ---- audit ----

    /// Appends to the audit log. A failure to write is logged as an error (the change it
    /// records is already done).
    #[allow(clippy::too_many_arguments)]
    pub async fn audit(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        outcome: Outcome,
        before: Option<String>,
        after: Option<String>,
    ) {
        self.audit_as(
            &actor.principal.label(),
            actor.source,
            action,
            target,
            outcome,
            before,
            after,
        )
        .await
    }

    /// Appends to the audit log in the name of `who` (a login's user name, before any
    /// principal exists).
    #[allow(clippy::too_many_arguments)]
    pub async fn audit_as(
        &self,
        who: &str,
        source: Option<IpAddr>,
        action: &str,
        target: &str,
        outcome: Outcome,
        before: Option<String>,
        after: Option<String>,
    ) {
        let suffix = random::<4>().map(|b| hex(&b)).unwrap_or_default();
        let made = self
            .store
            .append_audit_stamped(|| AuditEntry {
                // Microseconds, strictly increasing within the process, then a random suffix
                // (unique across replicas): id order is time order.
                id: audit_id(next_audit_micros(), &suffix),
                at_ms: db_int(now_ms()),
                actor: who.to_owned(),
                source: source.map(|s| s.to_string()),
                action: action.to_owned(),
                target: target.to_owned(),
                outcome,
                before,
                after,
            })
            .await;
        match made {
            Ok(e) => {
                // atna: the forwarder sends only entries older than its settle window; one
                // that took longer to commit could be passed over (docs/fleet.md, "ATNA").
                let took = db_int(now_ms()).saturating_sub(e.at_ms);
                if took > crate::atna_forward::SETTLE_MS / 2 {
                    tracing::warn!(
                        took_ms = took,
                        settle_ms = crate::atna_forward::SETTLE_MS,
                        action,
                        "audit entry committed late; check the database's load (the ATNA forwarder may pass over entries slower than its settle window)"
                    );
                }
            }
            Err(err) => {
                tracing::error!(error = %err, action, target, actor = who, "audit entry not written")
            }
        }
    }

    /// Audit entries matching a filter, newest first.
    pub async fn audit_entries(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, OpError> {
        if let Some(o) = &f.outcome {
            o.parse::<Outcome>()
                .map_err(|_| OpError::Invalid("outcome: ok, denied or failed".into()))?;
        }
        Ok(self.store.audit(f).await?)
    }

    // ---- first run ----

    /// While no user exists: a new one-time setup token (the previous one stops working),
    /// valid `[auth] setup_link_hours`. `None` once a user exists.
    pub async fn issue_setup_token(&self) -> Result<Option<String>, OpError> {
        if self.store.user_count().await? > 0 {
            return Ok(None);
        }
        let token = super::random_token()?;
        let now = now_db();
        let expires = now.saturating_add(db_int(
            self.config.auth.setup_link_hours.saturating_mul(3_600_000),
        ));
        self.store
            .create_setup_token(&sha256_hex(token.as_bytes()), expires, now)
            .await?;
        Ok(Some(token))
    }

    /// Creates the first admin with the setup token (used once).
    pub async fn setup(
        &self,
        setup_token: &str,
        name: &str,
        pw: &str,
        source: Option<IpAddr>,
    ) -> Result<User, OpError> {
        check_user_name(name).map_err(OpError::Invalid)?;
        let hash = hash_password(pw.to_owned()).await?;
        let user = NewUser {
            name,
            role: Role::Admin,
            sites: &SiteScope::All,
            password_hash: Some(&hash),
        };
        let now = now_db();
        let target = format!("user:{name}");
        if !self
            .store
            .setup_first_admin(&sha256_hex(setup_token.trim().as_bytes()), &user, now)
            .await?
        {
            self.audit_as(name, source, "setup", &target, Outcome::Denied, None, None)
                .await;
            return Err(OpError::Unauthenticated(
                "setup token unknown, expired or used, or a user exists already; restart the fleet for a new link while no user exists, or use `medgate-fleet admin create`".into(),
            ));
        }
        let u = self
            .store
            .user(name)
            .await?
            .ok_or_else(|| OpError::Corrupt(format!("user {name} vanished")))?;
        self.audit_as(
            name,
            source,
            "setup",
            &target,
            Outcome::Ok,
            None,
            json_text(&u),
        )
        .await;
        Ok(u)
    }

    // ---- login and sessions ----

    /// Checks a password (throttled per user and address) and opens a session.
    pub async fn login(
        &self,
        name: &str,
        pw: &str,
        source: Option<IpAddr>,
    ) -> Result<LoggedIn, OpError> {
        let now = now_db();
        let target = format!("user:{name}");
        // The limits are fixed; the failures of every replica come from the database.
        let keys = throttle::stored_keys(name, source);
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut limits = Throttle::standard();
        let window = limits.window_ms();
        let mut recorded = self
            .store
            .login_failures(&keys, now - window)
            .await?
            .into_iter();
        let (account_failures, address_failures) = (
            recorded.next().unwrap_or_default(),
            recorded.next().unwrap_or_default(),
        );
        limits.load(name, source, account_failures, address_failures);
        let decision = limits.check(name, source, now);
        if let Decision::Wait { retry_after_ms } = decision {
            let retry_after_secs = from_db(retry_after_ms).div_ceil(1000);
            self.audit_as(
                name,
                source,
                "login",
                &target,
                Outcome::Denied,
                None,
                json_text(json!({"reason": "throttled", "retry_after_secs": retry_after_secs})),
            )
            .await;
            return Err(OpError::Throttled { retry_after_secs });
        }
        let login = self.store.user_login(name).await?;
        let stored = login
            .as_ref()
            .and_then(|l| l.password_hash.clone())
            .unwrap_or_else(|| password::DUMMY_HASH.to_owned());
        let typed = pw.to_owned();
        let matches = tokio::task::spawn_blocking(move || password::verify(&typed, &stored))
            .await
            .unwrap_or(false);
        let why_not = match &login {
            None => Some("unknown user"),
            Some(l) if l.password_hash.is_none() => Some("no password set"),
            Some(_) if !matches => Some("wrong password"),
            Some(l) if l.user.disabled_ms.is_some() => Some("user disabled"),
            Some(_) => None,
        };
        let (Some(login), None) = (login, why_not) else {
            if let Err(e) = self
                .store
                .record_login_failure(&keys, now, now - window)
                .await
            {
                tracing::error!(error = %e, "cannot record a failed login for the throttle");
            }
            self.audit_as(
                name,
                source,
                "login",
                &target,
                Outcome::Failed,
                None,
                json_text(json!({"reason": why_not})),
            )
            .await;
            return Err(OpError::Unauthenticated(
                "user name or password wrong (or the user is disabled); after 5 failures in 15 minutes the user is locked for a while".into(),
            ));
        };
        if let Some(account) = keys.first() {
            self.store.clear_login_failures(account).await?;
        }
        open_session(self, &login.user, source, "login").await
    }

    /// The principal of a session cookie's secret, if the session holds (not revoked, within
    /// its idle and absolute limits, its user enabled).
    pub async fn authenticate_session(&self, secret: &str) -> Result<Option<Principal>, OpError> {
        let Some(s) = self
            .store
            .session_by_secret(&sha256_hex(secret.as_bytes()))
            .await?
        else {
            return Ok(None);
        };
        let now = now_db();
        let times = session::Times {
            created_ms: s.created_ms,
            last_seen_ms: s.last_seen_ms,
            revoked_ms: s.revoked_ms,
        };
        let session::Verdict::Valid { touch } = session::check(times, self.session_limits(), now)
        else {
            return Ok(None);
        };
        let Some(user) = self.store.user(&s.user).await? else {
            return Ok(None);
        };
        if user.disabled_ms.is_some() {
            return Ok(None);
        }
        if touch {
            self.store.touch_session(&s.id, now).await?;
        }
        Ok(Some(Principal {
            user: user.name.clone(),
            role: user.role,
            sites: user.scope(),
            credential: Credential::Session {
                id: s.id,
                csrf: s.csrf_token,
            },
        }))
    }

    /// The principal of a bearer value: a personal token (valid, not revoked, its user enabled
    /// and still holding its role and sites) or the bootstrap admin token (break-glass).
    pub async fn authenticate_bearer(
        &self,
        bearer: &str,
        admin_token_sha256: &str,
    ) -> Result<Option<Principal>, OpError> {
        let hash = sha256_hex(bearer.trim().as_bytes());
        if !token::looks_like(bearer.trim()) {
            let ok = super::super::auth::csrf::matches(Some(&hash), admin_token_sha256);
            return Ok(ok.then(Principal::break_glass));
        }
        let Some(t) = self.store.token_by_hash(&hash).await? else {
            return Ok(None);
        };
        let now = now_db();
        if t.revoked_ms.is_some() || t.expires_ms <= now {
            return Ok(None);
        }
        let Some(user) = self.store.user(&t.user).await? else {
            return Ok(None);
        };
        let sites = SiteScope::from_list(t.sites.clone());
        if user.disabled_ms.is_some()
            || !role_covers(user.role, t.role)
            || !user.scope().covers(&sites)
        {
            return Ok(None);
        }
        if t.last_used_ms
            .is_none_or(|u| now - u >= session::TOUCH_EVERY_MS)
        {
            self.store.touch_token(&t.id, now).await?;
        }
        Ok(Some(Principal {
            user: user.name,
            role: t.role,
            sites,
            credential: Credential::Token { id: t.id },
        }))
    }

    /// Ends the actor's session (logout).
    pub async fn logout(&self, actor: &Actor) -> Result<(), OpError> {
        if let Credential::Session { id, .. } = &actor.principal.credential {
            self.store
                .revoke_session(&actor.principal.user, id, now_db())
                .await?;
            self.audit(
                actor,
                "logout",
                &format!("session:{id}"),
                Outcome::Ok,
                None,
                None,
            )
            .await;
        }
        Ok(())
    }

    /// A user's sessions still valid, newest first.
    pub async fn sessions(&self, user: &str) -> Result<Vec<Session>, OpError> {
        let now = now_db();
        let limits = self.session_limits();
        Ok(self
            .store
            .sessions_of(user)
            .await?
            .into_iter()
            .filter(|s| {
                let t = session::Times {
                    created_ms: s.created_ms,
                    last_seen_ms: s.last_seen_ms,
                    revoked_ms: s.revoked_ms,
                };
                matches!(
                    session::check(t, limits, now),
                    session::Verdict::Valid { .. }
                )
            })
            .collect())
    }

    /// Revokes one of `user`'s sessions.
    pub async fn revoke_session(&self, actor: &Actor, user: &str, id: &str) -> Result<(), OpError> {
        if !self.store.revoke_session(user, id, now_db()).await? {
            return Err(OpError::NotFound(format!(
                "no open session {id:?} of {user}"
            )));
        }
        self.audit(
            actor,
            "session.revoke",
            &format!("session:{id}"),
            Outcome::Ok,
            None,
            json_text(json!({"user": user})),
        )
        .await;
        Ok(())
    }

    /// Revokes every session of a user.
    pub async fn revoke_sessions_of(&self, actor: &Actor, user: &str) -> Result<u64, OpError> {
        let n = self.store.revoke_sessions_of(user, now_db()).await?;
        self.audit(
            actor,
            "session.revoke_all",
            &format!("user:{user}"),
            Outcome::Ok,
            None,
            json_text(json!({"revoked": n})),
        )
        .await;
        Ok(n)
    }

    // ---- users ----

    /// Every user.
    pub async fn users(&self) -> Result<Vec<User>, OpError> {
        Ok(self.store.users().await?)
    }

    /// Creates a user. Its role and sites must be within the actor's; without a password, one
    /// is generated and returned (once).
    pub async fn create_user(
        &self,
        actor: &Actor,
        name: &str,
        role: Role,
        sites: Option<Vec<String>>,
        pw: Option<String>,
    ) -> Result<NewUserCreated, OpError> {
        check_user_name(name).map_err(OpError::Invalid)?;
        let scope = sites_of(sites)?;
        self.check_grant(actor, role, &scope)?;
        let (pw, generated) = match pw {
            Some(p) => (p, None),
            None => {
                let g = generate_password()?;
                (g.clone(), Some(g))
            }
        };
        let hash = hash_password(pw).await?;
        let new = NewUser {
            name,
            role,
            sites: &scope,
            password_hash: Some(&hash),
        };
        if !self.store.create_user(&new, now_db()).await? {
            return Err(OpError::Conflict(format!("user {name:?} exists already")));
        }
        let user = self
            .store
            .user(name)
            .await?
            .ok_or_else(|| OpError::Corrupt(format!("user {name} vanished")))?;
        self.audit(
            actor,
            "user.create",
            &format!("user:{name}"),
            Outcome::Ok,
            None,
            json_text(&user),
        )
        .await;
        Ok(NewUserCreated {
            user,
            generated_password: generated,
        })
    }

    fn check_grant(&self, actor: &Actor, role: Role, scope: &SiteScope) -> Result<(), OpError> {
        if !role_covers(actor.principal.role, role) {
            return Err(OpError::Forbidden(format!(
                "role {role} has rights your role {} does not; ask an admin",
                actor.principal.role
            )));
        }
        if !actor.principal.sites.covers(scope) {
            return Err(OpError::Forbidden(
                "sites: only sites within your own can be given".into(),
            ));
        }
        Ok(())
    }

    /// Changes a user's role, sites, password or disabled state. Disabling ends its sessions
    /// (its tokens stop working with it).
    pub async fn update_user(
        &self,
        actor: &Actor,
        name: &str,
        change: UserChange,
    ) -> Result<User, OpError> {
        let before = self
            .store
            .user(name)
            .await?
            .ok_or_else(|| OpError::NotFound(format!("no user {name:?}")))?;
        // The actor must be allowed to hold both the old and the new rights of the user.
        self.check_grant(actor, before.role, &before.scope())?;
        let role = change.role.unwrap_or(before.role);
        let scope = match change.sites {
            Some(s) => sites_of(s)?,
            None => before.scope(),
        };
        self.check_grant(actor, role, &scope)?;
        if change.password.is_some() && before.sso {
            return Err(OpError::Invalid(format!(
                "{name} signs in by single sign-on: its password is the identity provider's, not Medgate's"
            )));
        }
        let now = now_db();
        let disabled_ms = match change.disabled {
            Some(true) => Some(before.disabled_ms.unwrap_or(now)),
            Some(false) => None,
            None => before.disabled_ms,
        };
        let hash = match change.password {
            Some(p) => Some(hash_password(p).await?),
            None => None,
        };
        self.store
            .update_user(name, role, &scope, disabled_ms, hash.as_deref(), now)
            .await?;
        if disabled_ms.is_some() && before.disabled_ms.is_none() {
            self.store.revoke_sessions_of(name, now).await?;
        }
        let after = self
            .store
            .user(name)
            .await?
            .ok_or_else(|| OpError::NotFound(format!("no user {name:?}")))?;
        let mut after_doc = serde_json::to_value(&after).unwrap_or_default();
        if hash.is_some() {
            after_doc["password_changed"] = json!(true);
        }
        self.audit(
            actor,
            "user.update",
            &format!("user:{name}"),
            Outcome::Ok,
            json_text(&before),
            json_text(after_doc),
        )
        .await;
        Ok(after)
    }

    // ---- personal API tokens ----

    /// Creates a personal token for the actor's user: role and sites default to the actor's and
    /// may not exceed them.
    pub async fn create_token(
        &self,
        actor: &Actor,
        name: &str,
        role: Option<Role>,
        sites: Option<Vec<String>>,
        days: u64,
    ) -> Result<NewToken, OpError> {
        if matches!(actor.principal.credential, Credential::BreakGlass) {
            return Err(OpError::Forbidden(
                "the bootstrap admin token cannot own tokens: log in as a named user".into(),
            ));
        }
        let name = name.trim();
        if name.is_empty() || name.len() > 100 {
            return Err(OpError::Invalid(
                "name: 1-100 characters (what the token is for)".into(),
            ));
        }
        token::check_days(days).map_err(OpError::Invalid)?;
        let role = role.unwrap_or(actor.principal.role);
        let scope = match sites {
            Some(s) => sites_of(Some(s))?,
            None => actor.principal.sites.clone(),
        };
        self.check_grant(actor, role, &scope)?;
        let secret = token::format(&random::<32>()?);
        let now = now_db();
        let record = ApiToken {
            id: hex(&random::<8>()?),
            user: actor.principal.user.clone(),
            name: name.to_owned(),
            role,
            sites: scope.to_list(),
            created_ms: now,
            expires_ms: now.saturating_add(db_int(days.saturating_mul(86_400_000))),
            revoked_ms: None,
            last_used_ms: None,
        };
        self.store
            .create_token(&record, &sha256_hex(secret.as_bytes()))
            .await?;
        self.audit(
            actor,
            "token.create",
            &format!("token:{}", record.id),
            Outcome::Ok,
            None,
            json_text(&record),
        )
        .await;
        Ok(NewToken {
            token: secret,
            record,
        })
    }

    /// The actor's tokens.
    pub async fn tokens(&self, user: &str) -> Result<Vec<ApiToken>, OpError> {
        Ok(self.store.tokens_of(user).await?)
    }

    /// Revokes one of the actor's tokens.
    pub async fn revoke_token(&self, actor: &Actor, id: &str) -> Result<(), OpError> {
        if !self
            .store
            .revoke_token(&actor.principal.user, id, now_db())
            .await?
        {
            return Err(OpError::NotFound(format!(
                "no active token {id:?} of yours"
            )));
        }
        self.audit(
            actor,
            "token.revoke",
            &format!("token:{id}"),
            Outcome::Ok,
            None,
            None,
        )
        .await;
        Ok(())
    }

    // ---- site scope ----

    /// Whether a device exists and its site is in `scope` (an out-of-scope device is treated
    /// as absent).
    pub async fn device_in_scope(&self, scope: &SiteScope, device: &str) -> Result<bool, OpError> {
        Ok(self
            .store
            .registration(device)
            .await?
            .is_some_and(|r| scope.allows(&r.site)))
    }

    /// Whether a command exists and its device is in `scope`.
    pub async fn command_in_scope(&self, scope: &SiteScope, id: &str) -> Result<bool, OpError> {
        match self.store.command(id).await? {
            Some(c) => self.device_in_scope(scope, &c.device).await,
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_ids_increase_and_generated_passwords_are_long_and_plain() {
        let ids: Vec<u64> = (0..1000).map(|_| next_audit_micros()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(format!("{:016}", ids[0]).len(), 16);
        let p = generate_password().expect("random");
        assert_eq!(p.chars().count(), 20);
        assert!(
            p.chars()
                .all(|c| c.is_ascii_alphanumeric() && !"01lIoO".contains(c)),
            "{p}"
        );
        assert_ne!(p, generate_password().expect("random"));
        assert!(password::check_new(&p).is_ok());
    }
}
