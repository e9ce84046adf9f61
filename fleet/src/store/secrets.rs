//! What the fleet's replicas must share beyond the registry: secrets (table `shared_secrets`,
//! made by the first replica that needs one, read by every other, never changed) and the failed
//! logins the throttle counts (table `login_failures`).

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

    /// The failures recorded under each of `keys` after `since` (Unix ms), oldest first.
    pub async fn login_failures(&self, keys: &[&str], since: i64) -> Result<Vec<Vec<i64>>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let at: Vec<i64> = sqlx::query_scalar(
                "SELECT at_ms FROM login_failures WHERE key = $1 AND at_ms > $2 ORDER BY at_ms",
            )
            .bind(*key)
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
            out.push(at);
        }
        Ok(out)
    }

    /// Records a failed login under each of `keys` at `now`, and forgets failures recorded
    /// before `forget_before` (past every window).
    pub async fn record_login_failure(
        &self,
        keys: &[&str],
        now: i64,
        forget_before: i64,
    ) -> Result<()> {
        let mut tx = self.tx().await?;
        for key in keys {
            sqlx::query("INSERT INTO login_failures (key, at_ms) VALUES ($1, $2)")
                .bind(*key)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM login_failures WHERE at_ms < $1")
            .bind(forget_before)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets the failures recorded under `key` (an account's, after a good password).
    pub async fn clear_login_failures(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM login_failures WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
