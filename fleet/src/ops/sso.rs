//! Single sign-on, the IO half: the provider's discovery document and signing keys (fetched
//! when first needed, cached for an hour, the keys fetched again at most every 30 s when a
//! token names one not yet known: key rotation), the code exchange at the token endpoint, and
//! the login itself — the ID token validated by `auth::oidc`, the user created or updated from
//! its groups (marked as an SSO user, without a password), a session opened, all audited.
//!
//! Nothing here runs at start: a provider that is down only fails its own sign-in button; the
//! local password login (break-glass) does not depend on it.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::json;

use super::access::{LoggedIn, open_session};
use super::{OpError, Ops};
use crate::auth::oidc::{self, Discovery, Jwks, OidcError, Pending, Settings};
use crate::auth::{Role, SiteScope};
use crate::store::audit::Outcome;
use crate::store::now_db;

/// How long the discovery document and the keys are kept.
const CACHE_FOR: Duration = Duration::from_secs(3600);
/// Keys are fetched again on an unknown `kid` at most this often.
const REFETCH_KEYS_AFTER: Duration = Duration::from_secs(30);
/// Timeout of each call to the provider.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read from the provider.
const MAX_BODY: usize = 1024 * 1024;

/// Why a single sign-on failed. Each message says what to check; the login page adds that the
/// local login still works.
#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    /// Single sign-on is not configured.
    #[error("single sign-on is not configured ([auth.oidc] in the fleet's configuration)")]
    NotConfigured,
    /// The provider could not be reached or answered an error.
    #[error("the identity provider does not answer as expected ({what}: {detail})")]
    Provider {
        /// Which call.
        what: &'static str,
        /// What happened.
        detail: String,
    },
    /// The provider's answer is not acceptable (discovery document, ID token).
    #[error(transparent)]
    Oidc(#[from] OidcError),
    /// The round trip does not belong to a login started here (or took too long).
    #[error(
        "this sign-in was not started from this console or took longer than 10 minutes; start again"
    )]
    State,
    /// The provider refused or the user cancelled (`error` in the callback).
    #[error("the identity provider did not sign you in ({0})")]
    Denied(String),
    /// The user may not sign in here (no mapped group, a name taken by a local user, disabled).
    #[error("{0}")]
    Refused(String),
    /// An operation failed.
    #[error(transparent)]
    Op(#[from] OpError),
}

#[derive(Debug, Default)]
struct Cache {
    discovery: Option<(Discovery, Instant)>,
    jwks: Option<(Jwks, Instant)>,
}

/// The provider: its settings, an HTTP client, the cache.
#[derive(Debug)]
pub struct Sso {
    /// `[auth.oidc]`, checked.
    pub settings: Settings,
    http: reqwest::Client,
    cache: tokio::sync::Mutex<Cache>,
}

fn tls_config(s: &Settings) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    if let Some(f) = &s.ca_file {
        for c in crate::pem::certificates("auth.oidc.ca_file", f).map_err(|e| e.to_string())? {
            roots
                .add(c)
                .map_err(|e| format!("auth.oidc.ca_file: {}: {e}", f.display()))?;
        }
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(crate::pem::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

impl Sso {
    /// The provider of these settings (no network call yet).
    pub fn new(settings: Settings) -> Result<Sso, String> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config(&settings)?)
            .timeout(CALL_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("auth.oidc: HTTP client: {e}"))?;
        Ok(Sso {
            settings,
            http,
            cache: tokio::sync::Mutex::new(Cache::default()),
        })
    }

    async fn get(&self, what: &'static str, url: &url::Url) -> Result<Vec<u8>, SsoError> {
        let fail = |detail: String| SsoError::Provider { what, detail };
        let r = self
            .http
            .get(url.as_str())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| fail(format!("{url}: {e}")))?;
        read_body(what, url, r).await
    }

    /// The discovery document: cached, or fetched now when `fresh` (each sign-in starts with
    /// it: a cheap check that the provider answers, so that one that is down is said on the
    /// login page rather than by the browser's own error page).
    pub async fn discovery(&self, fresh: bool) -> Result<Discovery, SsoError> {
        let mut c = self.cache.lock().await;
        if !fresh
            && let Some((d, at)) = &c.discovery
            && at.elapsed() < CACHE_FOR
        {
            return Ok(d.clone());
        }
        let body = self.get("discovery", &self.settings.discovery_url).await?;
        let d = Discovery::parse(&body, &self.settings)?;
        c.discovery = Some((d.clone(), Instant::now()));
        Ok(d)
    }

    /// The provider's keys: cached, or fetched again when `refresh` and the cached ones are
    /// older than [`REFETCH_KEYS_AFTER`].
    async fn jwks(&self, d: &Discovery, refresh: bool) -> Result<Jwks, SsoError> {
        let mut c = self.cache.lock().await;
        if let Some((k, at)) = &c.jwks {
            let age = at.elapsed();
            if age < CACHE_FOR && !(refresh && age >= REFETCH_KEYS_AFTER) {
                return Ok(k.clone());
            }
        }
        let body = self.get("jwks_uri", &d.jwks_uri).await?;
        let k: Jwks = serde_json::from_slice(&body).map_err(|e| SsoError::Provider {
            what: "jwks_uri",
            detail: format!("not a JWK set ({e})"),
        })?;
        c.jwks = Some((k.clone(), Instant::now()));
        Ok(k)
    }

    /// Exchanges the code for the ID token.
    async fn exchange(
        &self,
        d: &Discovery,
        code: &str,
        verifier: &str,
    ) -> Result<String, SsoError> {
        let url = &d.token_endpoint;
        let r = self
            .http
            .post(url.as_str())
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(oidc::token_request(&self.settings, code, verifier))
            .send()
            .await
            .map_err(|e| SsoError::Provider {
                what: "token_endpoint",
                detail: format!("{url}: {e}"),
            })?;
        let body = read_body("token_endpoint", url, r).await?;
        let t: oidc::TokenResponse =
            serde_json::from_slice(&body).map_err(|e| SsoError::Provider {
                what: "token_endpoint",
                detail: format!("no id_token in the answer ({e})"),
            })?;
        Ok(t.id_token)
    }

    /// Validates an ID token, fetching the keys again once if it names an unknown one.
    async fn identity(
        &self,
        d: &Discovery,
        token: &str,
        nonce: &str,
    ) -> Result<oidc::Identity, SsoError> {
        let expect = oidc::Expect {
            settings: &self.settings,
            nonce,
            now_s: now_db().div_euclid(1000),
        };
        let keys = self.jwks(d, false).await?;
        match oidc::validate(token, &keys, &expect) {
            Err(OidcError::UnknownKey(_)) => {
                let keys = self.jwks(d, true).await?;
                Ok(oidc::validate(token, &keys, &expect)?)
            }
            other => Ok(other?),
        }
    }
}

async fn read_body(
    what: &'static str,
    url: &url::Url,
    mut r: reqwest::Response,
) -> Result<Vec<u8>, SsoError> {
    let fail = |detail: String| SsoError::Provider { what, detail };
    let status = r.status();
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| fail(format!("{url}: {e}")))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(fail(format!("{url}: answer larger than 1 MiB")));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        // The provider's error code (RFC 6749 5.2), never the whole body.
        let code = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_default();
        return Err(fail(format!("{url}: HTTP {status} {code}")));
    }
    Ok(body)
}

/// The provider of `[auth.oidc]`, if configured and valid (`config check` and the start-up
/// validation report its problems; an invalid section leaves single sign-on off).
pub fn from_config(config: &crate::config::FleetConfig) -> Option<Sso> {
    let section = config.auth.oidc.as_ref()?;
    let made = Settings::parse(section)
        .map_err(|p| p.join("; "))
        .and_then(Sso::new);
    match made {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "single sign-on is off: [auth.oidc] is not valid");
            None
        }
    }
}

/// The name of the login form's key in `shared_secrets`.
const FORM_KEY_SECRET: &str = "form_key";

impl Ops {
    /// The key signing the login form's CSRF token and the pending sign-in cookie: random, made
    /// once for the whole fleet and kept in the database, so that every replica behind a load
    /// balancer accepts the forms and cookies of the others.
    pub async fn form_key(&self) -> Result<&ring::hmac::Key, OpError> {
        self.form_key
            .get_or_try_init(|| async {
                let fresh = crate::ops::random_token()?;
                let hex = self
                    .store
                    .shared_secret(FORM_KEY_SECRET, &fresh, now_db())
                    .await?;
                // 64 hexadecimal digits of 32 random bytes: the key is their text.
                Ok::<_, OpError>(ring::hmac::Key::new(
                    ring::hmac::HMAC_SHA256,
                    hex.as_bytes(),
                ))
            })
            .await
    }

    /// The configured provider, if any.
    pub fn sso(&self) -> Option<&Sso> {
        self.sso.as_ref()
    }

    /// Starts a sign-in: the provider's authorization URL and the signed cookie value that
    /// carries the state, nonce and PKCE verifier.
    pub async fn sso_begin(&self) -> Result<(url::Url, String), SsoError> {
        let sso = self.sso().ok_or(SsoError::NotConfigured)?;
        let d = sso.discovery(true).await?;
        let mut random = [0u8; 96];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
            .map_err(|_| OpError::Random)?;
        let p = Pending::new(&random, now_db().div_euclid(1000));
        Ok((
            d.authorization_url(&sso.settings, &p),
            p.seal(self.form_key().await?),
        ))
    }

    /// Finishes a sign-in from the provider's callback: checks the state against the pending
    /// cookie, exchanges the code, validates the ID token, maps the groups to a role, creates
    /// or updates the user and opens a session. Every outcome is audited (`login.sso`).
    pub async fn sso_finish(
        &self,
        pending: Option<&str>,
        state: &str,
        code: &str,
        source: Option<IpAddr>,
    ) -> Result<LoggedIn, SsoError> {
        let result = self.sso_finish_inner(pending, state, code, source).await;
        if let Err(e) = &result {
            self.audit_as(
                "sso",
                source,
                "login.sso",
                "sso",
                Outcome::Failed,
                None,
                Some(json!({"reason": e.to_string()}).to_string()),
            )
            .await;
        }
        result
    }

    async fn sso_finish_inner(
        &self,
        pending: Option<&str>,
        state: &str,
        code: &str,
        source: Option<IpAddr>,
    ) -> Result<LoggedIn, SsoError> {
        let sso = self.sso().ok_or(SsoError::NotConfigured)?;
        let now_s = now_db().div_euclid(1000);
        let key = self.form_key().await.ok();
        let p = pending
            .zip(key)
            .and_then(|(v, k)| Pending::open(k, v, now_s))
            .filter(|p| oidc::state_matches(p, state))
            .ok_or(SsoError::State)?;
        let d = sso.discovery(false).await?;
        let token = sso.exchange(&d, code, &p.verifier).await?;
        let id = sso.identity(&d, &token, &p.nonce).await?;
        let name = oidc::user_name(&id).map_err(SsoError::Refused)?;
        let Some(m) = oidc::map_groups(&id.groups, &sso.settings.roles) else {
            return Err(SsoError::Refused(format!(
                "{name}: none of your groups at the identity provider gives a role in Medgate; ask an admin to map one of them (auth.oidc.roles)"
            )));
        };
        let subject = format!("{}#{}", sso.settings.issuer, id.subject);
        self.sso_user(&name, &subject, m.role, &m.sites, source)
            .await?;
        let login = self
            .store
            .user_login(&name)
            .await
            .map_err(OpError::from)?
            .ok_or_else(|| OpError::Corrupt(format!("user {name} vanished")))?;
        if login.user.disabled_ms.is_some() {
            return Err(SsoError::Refused(format!(
                "{name}: this user is disabled in Medgate; ask an admin"
            )));
        }
        let l = open_session(self, &login.user, source, "login.sso").await?;
        Ok(l)
    }

    /// Creates the SSO user or brings its role and sites up to date with its groups (audited as
    /// `user.sso` when anything changed). Refused when the name belongs to a local user or to
    /// another subject.
    async fn sso_user(
        &self,
        name: &str,
        subject: &str,
        role: Role,
        sites: &SiteScope,
        source: Option<IpAddr>,
    ) -> Result<(), SsoError> {
        let now = now_db();
        let before = self.store.user(name).await.map_err(OpError::from)?;
        let owner = self.store.sso_subject(name).await.map_err(OpError::from)?;
        match (&before, owner.as_deref()) {
            (None, _) => {
                if !self
                    .store
                    .create_sso_user(name, subject, role, sites, now)
                    .await
                    .map_err(OpError::from)?
                {
                    return Err(SsoError::Refused(format!(
                        "{name}: this provider account is linked to another Medgate user, or the name was just taken; ask an admin"
                    )));
                }
            }
            (Some(_), Some(s)) if s == subject => {}
            (Some(_), _) => {
                return Err(SsoError::Refused(format!(
                    "{name}: a local Medgate user of this name exists; an admin must rename or remove it before {name} can sign in with single sign-on"
                )));
            }
        }
        let after = self
            .store
            .user(name)
            .await
            .map_err(OpError::from)?
            .ok_or_else(|| OpError::Corrupt(format!("user {name} vanished")))?;
        let after = if before.is_some() && (after.role != role || after.scope() != *sites) {
            self.store
                .update_user(name, role, sites, after.disabled_ms, None, now)
                .await
                .map_err(OpError::from)?;
            self.store
                .user(name)
                .await
                .map_err(OpError::from)?
                .ok_or_else(|| OpError::Corrupt(format!("user {name} vanished")))?
        } else {
            after
        };
        if before.as_ref() != Some(&after) {
            self.audit_as(
                name,
                source,
                "user.sso",
                &format!("user:{name}"),
                Outcome::Ok,
                before.as_ref().and_then(|b| serde_json::to_string(b).ok()),
                serde_json::to_string(&after).ok(),
            )
            .await;
        }
        Ok(())
    }

    /// Where the browser goes after a local logout of an SSO user: the provider's logout
    /// (RP-initiated logout), when it has one.
    pub async fn sso_logout_url(&self) -> Option<url::Url> {
        let sso = self.sso()?;
        let d = sso.discovery(false).await.ok()?;
        d.end_session_url(&sso.settings, None)
    }
}
