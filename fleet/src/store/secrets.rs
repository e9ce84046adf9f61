//! Secrets the fleet's replicas share (table `shared_secrets`): made by the first replica that
//! needs one, read by every other, never changed afterwards.

use super::{Result, Store};

impl Store {
    /// The shared secret `name`: the stored one, or `fresh` stored now if there is none yet.
    /// Of two replicas asking at once, one insert wins and both read the winner.
    pub async fn shared_secret(&self, name: &str, fresh: &str, now: i64) -> Result<String> {
        sqlx::query(
            "INSERT INTO shared_secrets (name, value, created_ms) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(fresh)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let value: String = sqlx::query_scalar("SELECT value FROM shared_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(value)
    }
}
