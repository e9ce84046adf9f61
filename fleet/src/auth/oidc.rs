//! Single sign-on by OpenID Connect, sans-IO: the settings of `[auth.oidc]` parsed into checked
//! types, the provider's discovery document, PKCE (S256), the signed cookie that carries a
//! login's state, nonce and PKCE verifier across the round trip, ID-token validation (compact
//! JWS parsed here, signatures by `ring`), and the mapping of the provider's groups to a role.
//! The HTTP calls (discovery, JWKS, token endpoint) are `ops::sso`'s.
//!
//! ID-token validation, in this order (OpenID Connect Core 3.1.3.7): the header's `alg` must be
//! in the configured allow-list — only RS256 and ES256 exist here, so `none` and every HMAC
//! algorithm are refused before anything else, whatever the list says —; the key is the JWKS
//! entry of the header's `kid` whose type matches the algorithm (an RSA key for RS256, a P-256
//! key for ES256: no algorithm confusion); the signature over `header.payload`; then `iss`
//! exactly the configured issuer, `aud` containing the client id (with more than one audience,
//! `azp` must be the client id; `azp`, if present, always), `exp` in the future and `iat` not in
//! the future (both with a small leeway), and `nonce` exactly the one sent.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::{hmac, signature};
use serde::Deserialize;

use super::{Role, SiteScope};

/// Clock skew tolerated on `exp` and `iat` (seconds).
pub const LEEWAY_SECS: i64 = 60;
/// How long a login may take between the redirect to the provider and its answer (seconds).
pub const PENDING_SECS: i64 = 600;
/// The cookie carrying a login's state, nonce and PKCE verifier (signed).
pub const PENDING_COOKIE: &str = "medgate_oidc";
/// The console's path the provider redirects back to.
pub const CALLBACK_PATH: &str = "/auth/oidc/callback";
/// Largest ID token accepted (bytes).
const MAX_TOKEN: usize = 16 * 1024;

/// A signature algorithm this fleet verifies. Nothing else exists: `none` and the HMAC
/// algorithms (`HS256`, …) cannot be configured, so cannot be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (2048-8192 bit keys).
    Rs256,
    /// ECDSA P-256 with SHA-256.
    Es256,
}

impl Alg {
    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }
}

impl FromStr for Alg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "RS256" => Ok(Alg::Rs256),
            "ES256" => Ok(Alg::Es256),
            other => Err(format!(
                "{other:?} is not accepted: give RS256 or ES256 (\"none\" and HMAC algorithms are never accepted)"
            )),
        }
    }
}

/// One mapping of a provider group to a role and optional sites (`[[auth.oidc.roles]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMapping {
    /// The group as the provider sends it in the groups claim.
    pub group: String,
    /// The role its members get.
    pub role: Role,
    /// Their sites.
    pub sites: SiteScope,
}

/// The role and sites of a user whose groups are `groups`: the first mapping (in the order of
/// the configuration) whose group they have; `None` if none matches (the login is refused).
pub fn map_groups<'a>(groups: &[String], mappings: &'a [RoleMapping]) -> Option<&'a RoleMapping> {
    mappings.iter().find(|m| groups.contains(&m.group))
}

/// The secret the fleet authenticates to the token endpoint with (read from its file).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl ClientSecret {
    /// The value, for the token request only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(***)")
    }
}

/// `[auth.oidc]` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSection {
    /// What the login button says: "Sign in with {name}".
    pub name: String,
    /// The provider's issuer URL (its discovery document is `{issuer}/.well-known/openid-configuration`).
    pub issuer: String,
    /// This fleet's client id at the provider.
    pub client_id: String,
    /// File holding the client secret (one line, owner-only).
    pub client_secret_file: PathBuf,
    /// The console's callback as registered at the provider: `{console}/auth/oidc/callback`.
    pub redirect_url: String,
    /// Scopes asked for; must include `openid`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// ID-token signature algorithms accepted (RS256, ES256).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// The claim holding the user's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// The claim naming the user (their Medgate user name, lower-cased).
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// Where the provider sends the browser after its logout (registered there); default: the
    /// console's `/login`.
    pub post_logout_redirect_url: Option<String>,
    /// A PEM file of CA certificates to trust for the provider besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Group → role mappings, first match wins.
    #[serde(default)]
    pub roles: Vec<RoleSection>,
}

/// `[[auth.oidc.roles]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSection {
    /// The group.
    pub group: String,
    /// admin, operator, viewer, auditor or vendor.
    pub role: String,
    /// Site ids (leave out for every site).
    pub sites: Option<Vec<String>>,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "groups".into()]
}
fn default_algorithms() -> Vec<String> {
    vec!["RS256".into()]
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_username_claim() -> String {
    "preferred_username".into()
}

/// `[auth.oidc]` checked: what the fleet uses.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The provider's name for the button.
    pub name: String,
    /// The issuer, exactly as the ID tokens must say it.
    pub issuer: String,
    /// The discovery document's URL.
    pub discovery_url: url::Url,
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: ClientSecret,
    /// The callback URL.
    pub redirect_url: url::Url,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Accepted algorithms.
    pub algorithms: Vec<Alg>,
    /// The groups claim.
    pub groups_claim: String,
    /// The user name claim.
    pub username_claim: String,
    /// After the provider's logout.
    pub post_logout_redirect_url: url::Url,
    /// Extra CA certificates (PEM file).
    pub ca_file: Option<PathBuf>,
    /// Group mappings.
    pub roles: Vec<RoleMapping>,
}

/// Whether a URL may be used for the provider: HTTPS, or plain HTTP to a loopback address
/// (a provider on the same host, as in the tests).
fn secure_or_loopback(u: &url::Url) -> bool {
    match u.scheme() {
        "https" => true,
        "http" => match u.host() {
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        },
        _ => false,
    }
}

impl Settings {
    /// Checks `[auth.oidc]` and reads the client secret file: every problem, one line each,
    /// naming its key.
    pub fn parse(s: &OidcSection) -> Result<Settings, Vec<String>> {
        let mut p = Vec::new();
        let k = |key: &str| format!("auth.oidc.{key}");
        if s.name.trim().is_empty() || s.name.len() > 60 {
            p.push(format!(
                "{}: 1-60 characters, shown as \"Sign in with …\"",
                k("name")
            ));
        }
        let issuer = s.issuer.trim_end_matches('/').to_owned();
        let discovery = match url::Url::parse(&s.issuer) {
            Ok(u) if !secure_or_loopback(&u) => {
                p.push(format!(
                    "{}: {:?} must be https:// (plain http only to a loopback address)",
                    k("issuer"),
                    s.issuer
                ));
                None
            }
            Ok(u) if u.query().is_some() || u.fragment().is_some() => {
                p.push(format!(
                    "{}: {:?} must have no query or fragment",
                    k("issuer"),
                    s.issuer
                ));
                None
            }
            Ok(_) => url::Url::parse(&format!("{issuer}/.well-known/openid-configuration")).ok(),
            Err(e) => {
                p.push(format!(
                    "{}: {:?} is not a URL ({e}); give the provider's issuer, e.g. https://login.example/realms/x",
                    k("issuer"),
                    s.issuer
                ));
                None
            }
        };
        if s.client_id.trim().is_empty() {
            p.push(format!(
                "{}: give the client id registered at the provider",
                k("client_id")
            ));
        }
        let secret = match std::fs::read_to_string(&s.client_secret_file) {
            Ok(t) if !t.trim().is_empty() => Some(ClientSecret(t.trim().to_owned())),
            Ok(_) => {
                p.push(format!(
                    "{}: {} is empty; put the client secret from the provider in it",
                    k("client_secret_file"),
                    s.client_secret_file.display()
                ));
                None
            }
            Err(e) => {
                p.push(format!(
                    "{}: {}: {e}; create it (owner-only) with the client secret from the provider",
                    k("client_secret_file"),
                    s.client_secret_file.display()
                ));
                None
            }
        };
        let redirect = match url::Url::parse(&s.redirect_url) {
            Ok(u) if u.path() != CALLBACK_PATH => {
                p.push(format!(
                    "{}: {:?} must end in {CALLBACK_PATH} (the console's callback)",
                    k("redirect_url"),
                    s.redirect_url
                ));
                None
            }
            Ok(u) if !secure_or_loopback(&u) => {
                p.push(format!(
                    "{}: {:?} must be https:// (plain http only on loopback)",
                    k("redirect_url"),
                    s.redirect_url
                ));
                None
            }
            Ok(u) => Some(u),
            Err(e) => {
                p.push(format!(
                    "{}: {:?} is not a URL ({e})",
                    k("redirect_url"),
                    s.redirect_url
                ));
                None
            }
        };
        if !s.scopes.iter().any(|x| x == "openid") {
            p.push(format!("{}: must include \"openid\"", k("scopes")));
        }
        if let Some(bad) = s
            .scopes
            .iter()
            .find(|x| x.is_empty() || !x.bytes().all(|b| b.is_ascii_graphic() && b != b'"'))
        {
            p.push(format!("{}: {bad:?} is not a scope name", k("scopes")));
        }
        let mut algorithms = Vec::new();
        for a in &s.algorithms {
            match a.parse::<Alg>() {
                Ok(a) => algorithms.push(a),
                Err(e) => p.push(format!("{}: {e}", k("algorithms"))),
            }
        }
        if s.algorithms.is_empty() {
            p.push(format!("{}: give at least one (RS256)", k("algorithms")));
        }
        for (key, v) in [
            ("groups_claim", &s.groups_claim),
            ("username_claim", &s.username_claim),
        ] {
            if v.is_empty() {
                p.push(format!("{}: give a claim name", k(key)));
            }
        }
        let post_logout = match &s.post_logout_redirect_url {
            Some(u) => match url::Url::parse(u) {
                Ok(u) => Some(u),
                Err(e) => {
                    p.push(format!(
                        "{}: {u:?} is not a URL ({e})",
                        k("post_logout_redirect_url")
                    ));
                    None
                }
            },
            None => redirect.as_ref().and_then(|r| r.join("/login").ok()),
        };
        if let Some(f) = &s.ca_file
            && !f.is_file()
        {
            p.push(format!("{}: {} does not exist", k("ca_file"), f.display()));
        }
        let mut roles = Vec::new();
        for (i, r) in s.roles.iter().enumerate() {
            let key = format!("auth.oidc.roles[{i}]");
            if r.group.is_empty() {
                p.push(format!("{key}.group: give the provider's group name"));
            }
            let role = match r.role.parse::<Role>() {
                Ok(role) => Some(role),
                Err(e) => {
                    p.push(format!("{key}.role: {e}"));
                    None
                }
            };
            if let Some(sites) = &r.sites {
                if sites.is_empty() {
                    p.push(format!(
                        "{key}.sites: give at least one site, or leave it out for every site"
                    ));
                }
                for site in sites {
                    if let Err(e) = medgate_contract::SiteId::new(site.as_str()) {
                        p.push(format!("{key}.sites: {e}"));
                    }
                }
            }
            if let Some(role) = role {
                roles.push(RoleMapping {
                    group: r.group.clone(),
                    role,
                    sites: SiteScope::from_list(r.sites.clone()),
                });
            }
        }
        if s.roles.is_empty() {
            p.push(
                "auth.oidc.roles: map at least one group to a role ([[auth.oidc.roles]] group = \"…\", role = \"…\"); users without a mapped group cannot sign in".into(),
            );
        }
        match (discovery, secret, redirect, post_logout) {
            (Some(discovery_url), Some(client_secret), Some(redirect_url), Some(post))
                if p.is_empty() =>
            {
                Ok(Settings {
                    name: s.name.trim().to_owned(),
                    issuer,
                    discovery_url,
                    client_id: s.client_id.trim().to_owned(),
                    client_secret,
                    redirect_url,
                    scopes: s.scopes.clone(),
                    algorithms,
                    groups_claim: s.groups_claim.clone(),
                    username_claim: s.username_claim.clone(),
                    post_logout_redirect_url: post,
                    ca_file: s.ca_file.clone(),
                    roles,
                })
            }
            _ => Err(p),
        }
    }
}

/// Why an OpenID Connect step failed (the message says what to check).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    /// The discovery document is unusable.
    #[error("the provider's discovery document: {0}")]
    Discovery(String),
    /// The ID token is not a compact JWS, or a claim has the wrong type.
    #[error("ID token malformed: {0}")]
    Malformed(&'static str),
    /// The header's algorithm is not accepted.
    #[error("ID token signed with {0:?}, which is not in auth.oidc.algorithms")]
    Algorithm(String),
    /// No key of the provider's JWKS fits the header (the shell fetches the JWKS again once).
    #[error("no key of the provider's JWKS matches the ID token (kid {0:?}, or its type)")]
    UnknownKey(Option<String>),
    /// The signature does not verify.
    #[error("ID token signature does not verify")]
    Signature,
    /// `iss` is not the configured issuer.
    #[error("ID token issuer {0:?} is not auth.oidc.issuer")]
    Issuer(String),
    /// `aud` lacks the client id, or `azp` names another client.
    #[error("ID token is not for this client (aud/azp)")]
    Audience,
    /// `exp` is past.
    #[error("ID token expired")]
    Expired,
    /// `iat` is in the future (or missing).
    #[error("ID token issued in the future or without iat; check the clocks")]
    IssuedAt,
    /// `nonce` is not the one sent.
    #[error("ID token nonce does not match this login")]
    Nonce,
    /// A claim the fleet needs is missing.
    #[error("ID token lacks the claim {0:?}")]
    Missing(String),
}

/// The provider's discovery document (the fields used).
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    /// Must be exactly the configured issuer.
    pub issuer: String,
    /// Where the browser is sent to sign in.
    pub authorization_endpoint: url::Url,
    /// Where the code is exchanged.
    pub token_endpoint: url::Url,
    /// The signing keys.
    pub jwks_uri: url::Url,
    /// RP-initiated logout, if offered.
    pub end_session_endpoint: Option<url::Url>,
    /// PKCE methods (S256 must be among them when listed).
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
}

impl Discovery {
    /// Parses and checks a discovery document against the settings.
    pub fn parse(body: &[u8], s: &Settings) -> Result<Discovery, OidcError> {
        let d: Discovery = serde_json::from_slice(body)
            .map_err(|e| OidcError::Discovery(format!("not the expected JSON ({e})")))?;
        if d.issuer.trim_end_matches('/') != s.issuer {
            return Err(OidcError::Discovery(format!(
                "issuer {:?} differs from auth.oidc.issuer {:?}",
                d.issuer, s.issuer
            )));
        }
        for (what, u) in [
            ("authorization_endpoint", Some(&d.authorization_endpoint)),
            ("token_endpoint", Some(&d.token_endpoint)),
            ("jwks_uri", Some(&d.jwks_uri)),
            ("end_session_endpoint", d.end_session_endpoint.as_ref()),
        ] {
            if let Some(u) = u
                && !secure_or_loopback(u)
            {
                return Err(OidcError::Discovery(format!("{what} {u} is not https://")));
            }
        }
        if let Some(m) = &d.code_challenge_methods_supported
            && !m.iter().any(|x| x == "S256")
        {
            return Err(OidcError::Discovery(
                "the provider does not offer PKCE with S256".into(),
            ));
        }
        Ok(Discovery {
            issuer: s.issuer.clone(),
            ..d
        })
    }

    /// The URL the browser is sent to: authorization code flow with PKCE (S256), state and
    /// nonce.
    pub fn authorization_url(&self, s: &Settings, p: &Pending) -> url::Url {
        let mut u = self.authorization_endpoint.clone();
        u.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &s.client_id)
            .append_pair("redirect_uri", s.redirect_url.as_str())
            .append_pair("scope", &s.scopes.join(" "))
            .append_pair("state", &p.state)
            .append_pair("nonce", &p.nonce)
            .append_pair("code_challenge", &pkce_challenge(&p.verifier))
            .append_pair("code_challenge_method", "S256");
        u
    }

    /// The provider's logout URL (RP-initiated logout), if it has one.
    pub fn end_session_url(&self, s: &Settings, id_token_hint: Option<&str>) -> Option<url::Url> {
        let mut u = self.end_session_endpoint.clone()?;
        {
            let mut q = u.query_pairs_mut();
            q.append_pair("client_id", &s.client_id).append_pair(
                "post_logout_redirect_uri",
                s.post_logout_redirect_url.as_str(),
            );
            if let Some(h) = id_token_hint {
                q.append_pair("id_token_hint", h);
            }
        }
        Some(u)
    }
}

/// The body of the token request (`application/x-www-form-urlencoded`).
pub fn token_request(s: &Settings, code: &str, verifier: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("redirect_uri", s.redirect_url.as_str())
        .append_pair("code_verifier", verifier)
        .append_pair("client_id", &s.client_id)
        .append_pair("client_secret", s.client_secret.expose())
        .finish()
}

/// The token endpoint's answer (the field used).
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    /// The ID token (compact JWS).
    pub id_token: String,
}

/// The S256 code challenge of a PKCE verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ))
}

/// Random bytes as base64url (state, nonce, PKCE verifier: 32 bytes → 43 characters).
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What a login in progress must remember across the round trip to the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Sent as `state`, must come back as it.
    pub state: String,
    /// Sent as `nonce`, must be in the ID token.
    pub nonce: String,
    /// The PKCE verifier (its challenge was sent).
    pub verifier: String,
    /// When the login started (Unix s).
    pub started_s: i64,
}

impl Pending {
    /// From 96 random bytes and the time.
    pub fn new(random: &[u8; 96], now_s: i64) -> Pending {
        Pending {
            state: b64(&random[..32]),
            nonce: b64(&random[32..64]),
            verifier: b64(&random[64..]),
            started_s: now_s,
        }
    }

    /// The cookie value: the fields and their HMAC.
    pub fn seal(&self, key: &hmac::Key) -> String {
        let body = format!(
            "{}.{}.{}.{}",
            self.state, self.nonce, self.verifier, self.started_s
        );
        let tag = hmac::sign(key, body.as_bytes());
        format!("{body}.{}", b64(tag.as_ref()))
    }

    /// Reads a cookie value back: `None` if it was not made by this fleet, is malformed or
    /// older than [`PENDING_SECS`].
    pub fn open(key: &hmac::Key, value: &str, now_s: i64) -> Option<Pending> {
        let (body, tag) = value.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        hmac::verify(key, body.as_bytes(), &tag).ok()?;
        let mut it = body.split('.');
        let (state, nonce, verifier, started) = (it.next()?, it.next()?, it.next()?, it.next()?);
        if it.next().is_some() {
            return None;
        }
        let started_s: i64 = started.parse().ok()?;
        if now_s < started_s || now_s - started_s > PENDING_SECS {
            return None;
        }
        Some(Pending {
            state: state.to_owned(),
            nonce: nonce.to_owned(),
            verifier: verifier.to_owned(),
            started_s,
        })
    }
}

/// Whether two strings are equal (and not empty), in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    super::csrf::matches(Some(a), b)
}

/// Whether the `state` a callback brings is the pending login's.
pub fn state_matches(p: &Pending, state: &str) -> bool {
    same(&p.state, state)
}

/// The provider's signing keys (`jwks_uri`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// One JSON Web Key (the fields used).
#[derive(Debug, Clone, Deserialize)]
pub struct Jwk {
    /// `RSA` or `EC`.
    pub kty: String,
    /// Its id.
    pub kid: Option<String>,
    /// The algorithm it is for, if said.
    pub alg: Option<String>,
    /// `sig` or `enc`, if said.
    #[serde(rename = "use")]
    pub use_: Option<String>,
    /// RSA modulus (base64url).
    pub n: Option<String>,
    /// RSA exponent (base64url).
    pub e: Option<String>,
    /// EC curve.
    pub crv: Option<String>,
    /// EC x (base64url).
    pub x: Option<String>,
    /// EC y (base64url).
    pub y: Option<String>,
}

impl Jwk {
    /// Whether this key may verify `alg` (its type, curve, `alg` and `use`).
    fn fits(&self, alg: Alg) -> bool {
        let kind = match alg {
            Alg::Rs256 => self.kty == "RSA",
            Alg::Es256 => self.kty == "EC" && self.crv.as_deref() == Some("P-256"),
        };
        kind && self.alg.as_deref().is_none_or(|a| a == alg.as_str())
            && self.use_.as_deref().is_none_or(|u| u == "sig")
    }

    /// Verifies `sig` over `msg` with this key.
    fn verify(&self, alg: Alg, msg: &[u8], sig: &[u8]) -> bool {
        let d = |v: &Option<String>| v.as_deref().and_then(|s| URL_SAFE_NO_PAD.decode(s).ok());
        match alg {
            Alg::Rs256 => match (d(&self.n), d(&self.e)) {
                (Some(n), Some(e)) => signature::RsaPublicKeyComponents { n, e }
                    .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, sig)
                    .is_ok(),
                _ => false,
            },
            Alg::Es256 => match (d(&self.x), d(&self.y)) {
                (Some(x), Some(y)) if x.len() == 32 && y.len() == 32 => {
                    let mut point = Vec::with_capacity(65);
                    point.push(4);
                    point.extend_from_slice(&x);
                    point.extend_from_slice(&y);
                    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                        .verify(msg, sig)
                        .is_ok()
                }
                _ => false,
            },
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
    crit: Option<serde_json::Value>,
}

/// `aud`: one string or an array.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    azp: Option<String>,
    exp: Option<i64>,
    iat: Option<i64>,
    nonce: Option<String>,
    /// Every other claim; the groups and user name claims are read from here by name.
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

/// What to expect of an ID token.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The settings (issuer, client id, algorithms, claim names).
    pub settings: &'a Settings,
    /// The nonce sent with this login.
    pub nonce: &'a str,
    /// Now (Unix s).
    pub now_s: i64,
}

/// Who an ID token says signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `sub`: the provider's stable id of the user.
    pub subject: String,
    /// The user name claim, if present.
    pub username: Option<String>,
    /// The groups claim (empty if absent).
    pub groups: Vec<String>,
}

/// Validates an ID token (see the module's documentation for the order of the checks).
pub fn validate(token: &str, jwks: &Jwks, x: &Expect<'_>) -> Result<Identity, OidcError> {
    if token.len() > MAX_TOKEN {
        return Err(OidcError::Malformed("longer than 16 KiB"));
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(OidcError::Malformed("not three dot-separated parts"));
    };
    let dec = |s: &str, what: &'static str| {
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| OidcError::Malformed(what))
    };
    let header: Header = serde_json::from_slice(&dec(h64, "header is not base64url")?)
        .map_err(|_| OidcError::Malformed("header is not a JOSE header"))?;
    let alg = header
        .alg
        .parse::<Alg>()
        .ok()
        .filter(|a| x.settings.algorithms.contains(a))
        .ok_or_else(|| OidcError::Algorithm(header.alg.clone()))?;
    if header.crit.is_some() {
        return Err(OidcError::Malformed(
            "critical header extensions are not understood",
        ));
    }
    if let Some(t) = &header.typ
        && !t.eq_ignore_ascii_case("JWT")
    {
        return Err(OidcError::Malformed("typ is not JWT"));
    }
    let sig = dec(s64, "signature is not base64url")?;
    let msg = &token.as_bytes()[..h64.len() + 1 + p64.len()];
    let candidates: Vec<&Jwk> = jwks
        .keys
        .iter()
        .filter(|k| k.fits(alg))
        .filter(|k| header.kid.is_none() || k.kid == header.kid)
        .collect();
    if candidates.is_empty() {
        return Err(OidcError::UnknownKey(header.kid));
    }
    if !candidates.iter().any(|k| k.verify(alg, msg, &sig)) {
        return Err(OidcError::Signature);
    }
    let c: Claims = serde_json::from_slice(&dec(p64, "payload is not base64url")?)
        .map_err(|_| OidcError::Malformed("payload is not a JSON object of claims"))?;
    let s = x.settings;
    let iss = c.iss.unwrap_or_default();
    if iss != s.issuer {
        return Err(OidcError::Issuer(iss));
    }
    let auds = match c.aud {
        Some(Audience::One(a)) => vec![a],
        Some(Audience::Many(v)) => v,
        None => vec![],
    };
    if !auds.contains(&s.client_id) {
        return Err(OidcError::Audience);
    }
    match &c.azp {
        Some(azp) if *azp != s.client_id => return Err(OidcError::Audience),
        None if auds.len() > 1 => return Err(OidcError::Audience),
        _ => {}
    }
    match c.exp {
        Some(exp) if x.now_s < exp.saturating_add(LEEWAY_SECS) => {}
        _ => return Err(OidcError::Expired),
    }
    match c.iat {
        Some(iat) if iat <= x.now_s.saturating_add(LEEWAY_SECS) => {}
        _ => return Err(OidcError::IssuedAt),
    }
    if !c.nonce.as_deref().is_some_and(|n| same(n, x.nonce)) {
        return Err(OidcError::Nonce);
    }
    let subject = c
        .sub
        .filter(|s| !s.is_empty())
        .ok_or_else(|| OidcError::Missing("sub".into()))?;
    let username = match c.other.get(&s.username_claim) {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(u)) => Some(u.clone()),
        Some(_) => return Err(OidcError::Malformed("the user name claim is not a string")),
    };
    let groups = match c.other.get(&s.groups_claim) {
        None | Some(serde_json::Value::Null) => vec![],
        Some(serde_json::Value::String(g)) => vec![g.clone()],
        Some(serde_json::Value::Array(v)) => v
            .iter()
            .map(|g| g.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(OidcError::Malformed(
                "the groups claim is not a list of strings",
            ))?,
        Some(_) => {
            return Err(OidcError::Malformed(
                "the groups claim is not a list of strings",
            ));
        }
    };
    Ok(Identity {
        subject,
        username,
        groups,
    })
}

/// The Medgate user name for an SSO user: the user name claim lower-cased, if it is a valid
/// name (`auth::check_user_name`).
pub fn user_name(id: &Identity) -> Result<String, String> {
    let Some(name) = &id.username else {
        return Err(
            "the provider sent no user name claim (auth.oidc.username_claim); ask its admin to release it".into(),
        );
    };
    let name = name.to_lowercase();
    super::check_user_name(&name).map(|()| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ISSUER: &str = "http://127.0.0.1:9999/oidc";

    fn settings(algs: &[Alg]) -> Settings {
        Settings {
            name: "Test".into(),
            issuer: ISSUER.into(),
            discovery_url: url::Url::parse(&format!("{ISSUER}/.well-known/openid-configuration"))
                .expect("url"),
            client_id: "fleet".into(),
            client_secret: ClientSecret("s".into()),
            redirect_url: url::Url::parse("http://127.0.0.1:8800/auth/oidc/callback").expect("url"),
            scopes: vec!["openid".into()],
            algorithms: algs.to_vec(),
            groups_claim: "groups".into(),
            username_claim: "preferred_username".into(),
            post_logout_redirect_url: url::Url::parse("http://127.0.0.1:8800/login").expect("url"),
            ca_file: None,
            roles: vec![],
        }
    }

    struct Keys {
        rsa: signature::RsaKeyPair,
        ec: signature::EcdsaKeyPair,
        jwks: Jwks,
    }

    fn keys() -> Keys {
        let rsa = signature::RsaKeyPair::from_pkcs8(include_bytes!("testdata/oidc-test-rsa.pk8"))
            .expect("test key");
        let rng = ring::rand::SystemRandom::new();
        let pk8 = signature::EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .expect("ec key");
        let ec = signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pk8.as_ref(),
            &rng,
        )
        .expect("ec key");
        let comps = signature::RsaPublicKeyComponents::<Vec<u8>>::from(
            signature::KeyPair::public_key(&rsa),
        );
        let point = signature::KeyPair::public_key(&ec).as_ref().to_vec();
        let jwks: Jwks = serde_json::from_value(json!({"keys": [
            {"kty": "RSA", "kid": "r1", "use": "sig", "alg": "RS256", "n": b64(&comps.n), "e": b64(&comps.e)},
            {"kty": "EC", "kid": "e1", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])},
        ]}))
        .expect("jwks");
        Keys { rsa, ec, jwks }
    }

    fn claims(now: i64) -> serde_json::Value {
        json!({
            "iss": ISSUER, "sub": "u-1", "aud": "fleet", "exp": now + 300, "iat": now,
            "nonce": "n0nce", "preferred_username": "Alice", "groups": ["radiology-it"],
        })
    }

    fn sign(k: &Keys, header: serde_json::Value, claims: &serde_json::Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = ring::rand::SystemRandom::new();
        let sig = match header["alg"].as_str() {
            Some("ES256") => {
                k.ec.sign(&rng, input.as_bytes())
                    .expect("sign")
                    .as_ref()
                    .to_vec()
            }
            _ => {
                let mut sig = vec![0; k.rsa.public().modulus_len()];
                k.rsa
                    .sign(
                        &signature::RSA_PKCS1_SHA256,
                        &rng,
                        input.as_bytes(),
                        &mut sig,
                    )
                    .expect("sign");
                sig
            }
        };
        format!("{input}.{}", b64(&sig))
    }

    fn check(token: &str, s: &Settings, k: &Keys, now: i64) -> Result<Identity, OidcError> {
        validate(
            token,
            &k.jwks,
            &Expect {
                settings: s,
                nonce: "n0nce",
                now_s: now,
            },
        )
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_good_token_is_accepted_with_rs256_and_es256() {
        let k = keys();
        let s = settings(&[Alg::Rs256, Alg::Es256]);
        let t = sign(
            &k,
            json!({"alg": "RS256", "kid": "r1", "typ": "JWT"}),
            &claims(NOW),
        );
        let id = check(&t, &s, &k, NOW).expect("valid");
        assert_eq!(
            id,
            Identity {
                subject: "u-1".into(),
                username: Some("Alice".into()),
                groups: vec!["radiology-it".into()]
            }
        );
        assert_eq!(user_name(&id).as_deref(), Ok("alice"));
        let t = sign(&k, json!({"alg": "ES256", "kid": "e1"}), &claims(NOW));
        assert!(check(&t, &s, &k, NOW).is_ok());
        // Without kid, the key of the right type is found.
        let t = sign(&k, json!({"alg": "RS256"}), &claims(NOW));
        assert!(check(&t, &s, &k, NOW).is_ok());
    }

    #[test]
    fn a_bad_signature_is_refused() {
        let k = keys();
        let s = settings(&[Alg::Rs256]);
        let t = sign(&k, json!({"alg": "RS256", "kid": "r1"}), &claims(NOW));
        // Another payload under the same signature.
        let mut c = claims(NOW);
        c["groups"] = json!(["region-admins"]);
        let forged = format!(
            "{}.{}.{}",
            t.split('.').next().expect("h"),
            b64(c.to_string().as_bytes()),
            t.rsplit('.').next().expect("s")
        );
        assert_eq!(check(&forged, &s, &k, NOW), Err(OidcError::Signature));
        // A flipped bit in the signature.
        let mut sig = URL_SAFE_NO_PAD
            .decode(t.rsplit('.').next().expect("s"))
            .expect("b64");
        sig[10] ^= 1;
        let (head, _) = t.rsplit_once('.').expect("dot");
        assert_eq!(
            check(&format!("{head}.{}", b64(&sig)), &s, &k, NOW),
            Err(OidcError::Signature)
        );
    }

    #[test]
    fn alg_none_hmac_and_algorithm_confusion_are_refused() {
        let k = keys();
        let s = settings(&[Alg::Rs256]);
        let body = b64(claims(NOW).to_string().as_bytes());
        let none = format!("{}.{body}.", b64(br#"{"alg":"none"}"#));
        assert_eq!(
            check(&none, &s, &k, NOW),
            Err(OidcError::Algorithm("none".into()))
        );
        // HS256 with the RSA public key (its JWK's modulus) as the HMAC secret.
        let header = b64(br#"{"alg":"HS256","kid":"r1"}"#);
        let n = k.jwks.keys[0].n.clone().expect("n");
        let mac = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, n.as_bytes()),
            format!("{header}.{body}").as_bytes(),
        );
        let confused = format!("{header}.{body}.{}", b64(mac.as_ref()));
        assert_eq!(
            check(&confused, &s, &k, NOW),
            Err(OidcError::Algorithm("HS256".into()))
        );
        // ES256 is not in this allow-list, even with a valid signature.
        let t = sign(&k, json!({"alg": "ES256", "kid": "e1"}), &claims(NOW));
        assert_eq!(
            check(&t, &s, &k, NOW),
            Err(OidcError::Algorithm("ES256".into()))
        );
        // RS256 named, but pointing at the EC key: no key of that type.
        let s2 = settings(&[Alg::Rs256, Alg::Es256]);
        let t = sign(&k, json!({"alg": "RS256", "kid": "e1"}), &claims(NOW));
        assert_eq!(
            check(&t, &s2, &k, NOW),
            Err(OidcError::UnknownKey(Some("e1".into())))
        );
        assert!("none".parse::<Alg>().is_err() && "HS256".parse::<Alg>().is_err());
        // Unknown critical extensions and a typ of another token kind.
        let t = sign(
            &k,
            json!({"alg": "RS256", "crit": ["b64"], "b64": false}),
            &claims(NOW),
        );
        assert!(matches!(
            check(&t, &s, &k, NOW),
            Err(OidcError::Malformed(_))
        ));
        let t = sign(&k, json!({"alg": "RS256", "typ": "at+jwt"}), &claims(NOW));
        assert!(matches!(
            check(&t, &s, &k, NOW),
            Err(OidcError::Malformed(_))
        ));
    }

    #[test]
    fn issuer_audience_expiry_and_nonce_are_checked() {
        let k = keys();
        let s = settings(&[Alg::Rs256]);
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut c = claims(NOW);
            f(&mut c);
            check(
                &sign(&k, json!({"alg": "RS256", "kid": "r1"}), &c),
                &s,
                &k,
                NOW,
            )
        };
        assert_eq!(
            with(&|c| c["iss"] = json!("http://127.0.0.1:9999/other")),
            Err(OidcError::Issuer("http://127.0.0.1:9999/other".into()))
        );
        assert_eq!(
            with(&|c| c["aud"] = json!("someone-else")),
            Err(OidcError::Audience)
        );
        assert_eq!(
            with(&|c| c["aud"] = json!(["fleet", "other"])),
            Err(OidcError::Audience),
            "several audiences need azp"
        );
        assert!(
            with(&|c| {
                c["aud"] = json!(["fleet", "other"]);
                c["azp"] = json!("fleet");
            })
            .is_ok()
        );
        assert_eq!(
            with(&|c| c["azp"] = json!("other")),
            Err(OidcError::Audience)
        );
        assert_eq!(
            with(&|c| c["exp"] = json!(NOW - LEEWAY_SECS - 1)),
            Err(OidcError::Expired)
        );
        assert!(
            with(&|c| c["exp"] = json!(NOW - 10)).is_ok(),
            "within the leeway"
        );
        assert_eq!(
            with(&|c| c["iat"] = json!(NOW + LEEWAY_SECS + 5)),
            Err(OidcError::IssuedAt)
        );
        assert_eq!(
            with(&|c| c["nonce"] = json!("another")),
            Err(OidcError::Nonce)
        );
        assert_eq!(
            with(&|c| {
                c.as_object_mut().expect("obj").remove("nonce");
            }),
            Err(OidcError::Nonce)
        );
        assert_eq!(
            with(&|c| {
                c.as_object_mut().expect("obj").remove("exp");
            }),
            Err(OidcError::Expired)
        );
        assert!(matches!(
            with(&|c| c["groups"] = json!([1, 2])),
            Err(OidcError::Malformed(_))
        ));
        assert!(matches!(
            check("a.b", &s, &k, NOW),
            Err(OidcError::Malformed(_))
        ));
    }

    #[test]
    fn pending_logins_are_signed_and_expire() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k");
        let p = Pending::new(&[7; 96], 1000);
        assert_eq!(p.state.len(), 43);
        let v = p.seal(&key);
        assert_eq!(
            Pending::open(&key, &v, 1000 + PENDING_SECS),
            Some(p.clone())
        );
        assert_eq!(Pending::open(&key, &v, 1001 + PENDING_SECS), None);
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"other");
        assert_eq!(Pending::open(&other, &v, 1000), None);
        let tampered = v.replacen(&p.state[..4], "AAAA", 1);
        assert_eq!(Pending::open(&key, &tampered, 1000), None);
        assert!(state_matches(&p, &p.state) && !state_matches(&p, "x"));
        // RFC 7636 appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn groups_map_to_the_first_matching_role() {
        let m = vec![
            RoleMapping {
                group: "region-admins".into(),
                role: Role::Admin,
                sites: SiteScope::All,
            },
            RoleMapping {
                group: "radiology-it".into(),
                role: Role::Operator,
                sites: SiteScope::from_list(Some(vec!["st-marien".into()])),
            },
        ];
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            map_groups(&g(&["radiology-it"]), &m).map(|r| r.role),
            Some(Role::Operator)
        );
        assert_eq!(
            map_groups(&g(&["radiology-it", "region-admins"]), &m).map(|r| r.role),
            Some(Role::Admin)
        );
        assert!(map_groups(&g(&["cleaners"]), &m).is_none());
    }

    #[test]
    fn settings_name_each_wrong_key() {
        let dir = tempfile::tempdir().expect("dir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").expect("write");
        let ok: OidcSection = toml::from_str(&format!(
            "name = \"Hospital SSO\"\nissuer = \"https://login.example/realms/x/\"\nclient_id = \"fleet\"\nclient_secret_file = {:?}\nredirect_url = \"https://fleet.example/auth/oidc/callback\"\n[[roles]]\ngroup = \"it\"\nrole = \"operator\"\nsites = [\"st-marien\"]\n",
            secret.display().to_string()
        ))
        .expect("parses");
        let s = Settings::parse(&ok).expect("valid");
        assert_eq!(s.issuer, "https://login.example/realms/x");
        assert_eq!(s.client_secret.expose(), "s3cret");
        assert_eq!(format!("{:?}", s.client_secret), "ClientSecret(***)");
        assert_eq!(
            s.post_logout_redirect_url.as_str(),
            "https://fleet.example/login"
        );
        let bad = OidcSection {
            issuer: "http://login.example".into(),
            client_id: String::new(),
            client_secret_file: dir.path().join("missing"),
            redirect_url: "https://fleet.example/callback".into(),
            scopes: vec!["profile".into()],
            algorithms: vec!["none".into(), "HS256".into()],
            roles: vec![RoleSection {
                group: "it".into(),
                role: "root".into(),
                sites: Some(vec![]),
            }],
            ..ok
        };
        let p = Settings::parse(&bad).expect_err("invalid");
        for key in [
            "auth.oidc.issuer",
            "auth.oidc.client_id",
            "auth.oidc.client_secret_file",
            "auth.oidc.redirect_url",
            "auth.oidc.scopes",
            "auth.oidc.algorithms: \"none\"",
            "auth.oidc.algorithms: \"HS256\"",
            "auth.oidc.roles[0].role",
            "auth.oidc.roles[0].sites",
        ] {
            assert!(p.iter().any(|l| l.starts_with(key)), "{key}: {p:?}");
        }
    }
}
