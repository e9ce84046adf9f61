//! Users, sessions, personal API tokens and the first-run setup token. Secrets are stored as
//! hashes only: argon2id for passwords, SHA-256 for the random session secrets and tokens.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{One, Result, Store, json_opt, rows_changed, word};
use crate::auth::{Role, SiteScope};

/// A user as listings show it (no hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct User {
    /// The name.
    pub name: String,
    /// The role.
    pub role: Role,
    /// The sites (`null`: every site).
    pub sites: Option<Vec<String>>,
    /// Whether a password is set.
    pub has_password: bool,
    /// Whether it signs in by single sign-on (OpenID Connect): created at its first sign-in,
    /// its role and sites set from its groups at each one, no password here.
    pub sso: bool,
    /// Disabled (Unix ms): no login, sessions and tokens refused.
    pub disabled_ms: Option<i64>,
    /// Created (Unix ms).
    pub created_ms: i64,
    /// Last changed (Unix ms).
    pub updated_ms: i64,
}

impl User {
    /// The sites as a scope.
    pub fn scope(&self) -> SiteScope {
        SiteScope::from_list(self.sites.clone())
    }
}

/// A user with the stored password hash (for login only).
#[derive(Debug, Clone)]
pub struct UserLogin {
    /// The user.
    pub user: User,
    /// The argon2id PHC string.
    pub password_hash: Option<String>,
}

impl<'r> sqlx::FromRow<'r, AnyRow> for UserLogin {
    fn from_row(r: &'r AnyRow) -> sqlx::Result<Self> {
        let password_hash: Option<String> = r.try_get("password_hash")?;
        Ok(UserLogin {
            user: User {
                name: r.try_get("name")?,
                role: word(r, "role")?,
                sites: json_opt(r, "sites")?,
                has_password: password_hash.is_some(),
                sso: r.try_get::<Option<String>, _>("sso_subject")?.is_some(),
                disabled_ms: r.try_get("disabled_ms")?,
                created_ms: r.try_get("created_ms")?,
                updated_ms: r.try_get("updated_ms")?,
            },
            password_hash,
        })
    }
}

/// A session row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Session {
    /// Its public id.
    pub id: String,
    /// Its user.
    pub user: String,
    /// Where it logged in from.
    pub source: Option<String>,
    /// Logged in (Unix ms).
    pub created_ms: i64,
    /// Last request (Unix ms, to the minute).
    pub last_seen_ms: i64,
    /// Revoked or logged out (Unix ms).
    pub revoked_ms: Option<i64>,
    /// Its CSRF token (never serialised: only its own session is told it).
    #[serde(skip)]
    pub csrf_token: String,
}

impl<'r> sqlx::FromRow<'r, AnyRow> for Session {
    fn from_row(r: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(Session {
            id: r.try_get("id")?,
            user: r.try_get("user_name")?,
            source: r.try_get("source")?,
            created_ms: r.try_get("created_ms")?,
            last_seen_ms: r.try_get("last_seen_ms")?,
            revoked_ms: r.try_get("revoked_ms")?,
            csrf_token: r.try_get("csrf_token")?,
        })
    }
}

/// A personal API token as listings show it (no hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ApiToken {
    /// Its public id.
    pub id: String,
    /// Its user.
    pub user: String,
    /// What it is for (free text).
    pub name: String,
    /// Its role (never above its user's).
    pub role: Role,
    /// Its sites (`null`: every site its user has).
    pub sites: Option<Vec<String>>,
    /// Created (Unix ms).
    pub created_ms: i64,
    /// Expires (Unix ms).
    pub expires_ms: i64,
    /// Revoked (Unix ms).
    pub revoked_ms: Option<i64>,
    /// Last used (Unix ms, to the minute).
    pub last_used_ms: Option<i64>,
}

impl<'r> sqlx::FromRow<'r, AnyRow> for ApiToken {
    fn from_row(r: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(ApiToken {
            id: r.try_get("id")?,
            user: r.try_get("user_name")?,
            name: r.try_get("name")?,
            role: word(r, "role")?,
            sites: json_opt(r, "sites")?,
            created_ms: r.try_get("created_ms")?,
            expires_ms: r.try_get("expires_ms")?,
            revoked_ms: r.try_get("revoked_ms")?,
            last_used_ms: r.try_get("last_used_ms")?,
        })
    }
}

/// A new user's fields.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    /// Name (checked).
    pub name: &'a str,
    /// Role.
    pub role: Role,
    /// Sites.
    pub sites: &'a SiteScope,
    /// argon2id PHC string.
    pub password_hash: Option<&'a str>,
}

fn sites_json(s: &SiteScope) -> Result<Option<String>> {
    Ok(s.to_list().map(|v| serde_json::to_string(&v)).transpose()?)
}

// Column lists as macros: statement texts stay literals (`concat!`), as sqlx wants them.
macro_rules! user_columns {
    () => {
        "name, role, sites, password_hash, disabled_ms, created_ms, updated_ms, sso_subject"
    };
}
macro_rules! session_columns {
    () => {
        "id, user_name, source, created_ms, last_seen_ms, revoked_ms, csrf_token"
    };
}
macro_rules! token_columns {
    () => {
        "id, user_name, name, role, sites, created_ms, expires_ms, revoked_ms, last_used_ms"
    };
}

impl Store {
    // ---- users ----

    /// How many users exist.
    pub async fn user_count(&self) -> Result<i64> {
        let One(n) = sqlx::query_as::<_, One<i64>>("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    /// Creates a user; `false` if the name is taken.
    pub async fn create_user(&self, u: &NewUser<'_>, now: i64) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO users (name, role, sites, password_hash, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (name) DO NOTHING",
        )
        .bind(u.name)
        .bind(u.role.as_str())
        .bind(sites_json(u.sites)?)
        .bind(u.password_hash)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(rows_changed(&r))
    }

    /// A user with its password hash.
    pub async fn user_login(&self, name: &str) -> Result<Option<UserLogin>> {
        Ok(sqlx::query_as::<_, UserLogin>(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A user.
    pub async fn user(&self, name: &str) -> Result<Option<User>> {
        Ok(self.user_login(name).await?.map(|u| u.user))
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<User>> {
        Ok(sqlx::query_as::<_, UserLogin>(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|u| u.user)
        .collect())
    }

    /// Sets a user's role, sites and disabled time (and password hash if given); `false` if
    /// there is no such user.
    pub async fn update_user(
        &self,
        name: &str,
        role: Role,
        sites: &SiteScope,
        disabled_ms: Option<i64>,
        password_hash: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE users SET role = $1, sites = $2, disabled_ms = $3, password_hash = COALESCE($4, password_hash), updated_ms = $5 WHERE name = $6",
        )
        .bind(role.as_str())
        .bind(sites_json(sites)?)
        .bind(disabled_ms)
        .bind(password_hash)
        .bind(now)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(rows_changed(&r))
    }

    // ---- single sign-on (console-auth) ----

    /// The provider subject a user is linked to (`None`: a local user, or no such user).
    pub async fn sso_subject(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query_as::<_, One<Option<String>>>(
            "SELECT sso_subject FROM users WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|One(s)| s))
    }

    /// Creates a user linked to a provider subject, without a password; `false` if the name or
    /// the subject is taken.
    pub async fn create_sso_user(
        &self,
        name: &str,
        subject: &str,
        role: Role,
        sites: &SiteScope,
        now: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO users (name, role, sites, password_hash, created_ms, updated_ms, sso_subject) VALUES ($1, $2, $3, NULL, $4, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(sites_json(sites)?)
        .bind(now)
        .bind(subject)
        .execute(&self.pool)
        .await?;
        Ok(rows_changed(&r))
    }

    // ---- first-run setup ----

    /// Stores a new setup token (its hash); any earlier unused one stops working.
    pub async fn create_setup_token(
        &self,
        token_hash: &str,
        expires_ms: i64,
        now: i64,
    ) -> Result<()> {
        let _w = self.write_guard().await;
        let mut tx = self.tx().await?;
        sqlx::query("UPDATE setup_tokens SET used_ms = $1 WHERE used_ms IS NULL")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO setup_tokens (token_hash, created_ms, expires_ms) VALUES ($1, $2, $3)",
        )
        .bind(token_hash)
        .bind(now)
        .bind(expires_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Uses the setup token to create the first admin, in one transaction: `false` (and
    /// nothing changed) if the token is unknown, used or expired, or a user exists already.
    pub async fn setup_first_admin(
        &self,
        token_hash: &str,
        user: &NewUser<'_>,
        now: i64,
    ) -> Result<bool> {
        let _w = self.write_guard().await;
        let mut tx = self.tx().await?;
        let used = sqlx::query(
            "UPDATE setup_tokens SET used_ms = $1 WHERE token_hash = $2 AND used_ms IS NULL AND expires_ms > $1",
        )
        .bind(now)
        .bind(token_hash)
        .execute(&mut *tx)
        .await?;
        let One(users) = sqlx::query_as::<_, One<i64>>("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *tx)
            .await?;
        if !rows_changed(&used) || users > 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO users (name, role, sites, password_hash, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(user.name)
        .bind(user.role.as_str())
        .bind(sites_json(user.sites)?)
        .bind(user.password_hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    // ---- sessions ----

    /// Stores a new session.
    pub async fn create_session(
        &self,
        id: &str,
        secret_hash: &str,
        user: &str,
        csrf_token: &str,
        source: Option<&str>,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO sessions (id, secret_hash, user_name, csrf_token, source, created_ms, last_seen_ms) VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(id)
        .bind(secret_hash)
        .bind(user)
        .bind(csrf_token)
        .bind(source)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session of a cookie secret (by its hash).
    pub async fn session_by_secret(&self, secret_hash: &str) -> Result<Option<Session>> {
        Ok(sqlx::query_as::<_, Session>(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE secret_hash = $1"
        ))
        .bind(secret_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records a session's activity.
    pub async fn touch_session(&self, id: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE sessions SET last_seen_ms = $1 WHERE id = $2 AND revoked_ms IS NULL")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A user's sessions not revoked, newest first (the caller drops expired ones).
    pub async fn sessions_of(&self, user: &str) -> Result<Vec<Session>> {
        Ok(sqlx::query_as::<_, Session>(concat!(
            "SELECT ", session_columns!(), " FROM sessions WHERE user_name = $1 AND revoked_ms IS NULL ORDER BY created_ms DESC, id"
        ))
        .bind(user)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes one session of a user; `false` if it is not theirs or already revoked.
    pub async fn revoke_session(&self, user: &str, id: &str, now: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE sessions SET revoked_ms = $1 WHERE id = $2 AND user_name = $3 AND revoked_ms IS NULL",
        )
        .bind(now)
        .bind(id)
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(rows_changed(&r))
    }

    /// Revokes every session of a user; how many were open.
    pub async fn revoke_sessions_of(&self, user: &str, now: i64) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE sessions SET revoked_ms = $1 WHERE user_name = $2 AND revoked_ms IS NULL",
        )
        .bind(now)
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    // ---- personal API tokens ----

    /// Stores a new token.
    pub async fn create_token(&self, t: &ApiToken, token_hash: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_tokens (id, token_hash, user_name, name, role, sites, created_ms, expires_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&t.id)
        .bind(token_hash)
        .bind(&t.user)
        .bind(&t.name)
        .bind(t.role.as_str())
        .bind(sites_json(&SiteScope::from_list(t.sites.clone()))?)
        .bind(t.created_ms)
        .bind(t.expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The token of a bearer value (by its hash).
    pub async fn token_by_hash(&self, token_hash: &str) -> Result<Option<ApiToken>> {
        Ok(sqlx::query_as::<_, ApiToken>(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens WHERE token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A user's tokens, newest first (revoked and expired ones included: the listing says so).
    pub async fn tokens_of(&self, user: &str) -> Result<Vec<ApiToken>> {
        Ok(sqlx::query_as::<_, ApiToken>(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens WHERE user_name = $1 ORDER BY created_ms DESC, id"
        ))
        .bind(user)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records a token's use.
    pub async fn touch_token(&self, id: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE api_tokens SET last_used_ms = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Revokes a token of a user; `false` if it is not theirs or already revoked.
    pub async fn revoke_token(&self, user: &str, id: &str, now: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE api_tokens SET revoked_ms = $1 WHERE id = $2 AND user_name = $3 AND revoked_ms IS NULL",
        )
        .bind(now)
        .bind(id)
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(rows_changed(&r))
    }
}
