//! Claim tokens: one-time enrollment authorisations, stored as hashes.

use medgate_contract::{DeviceId, SiteId};

use super::{Result, Store, Two, rows_changed};
use crate::model::Unreadable;

/// What a claim token enrolls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The site.
    pub site: SiteId,
    /// The device.
    pub device: DeviceId,
}

impl Store {
    /// Stores a claim token (its hash).
    pub async fn create_claim(
        &self,
        token_hash: &str,
        site: &SiteId,
        device: &DeviceId,
        expires_ms: i64,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO claim_tokens (token_hash, site_id, device_id, expires_ms, created_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(site.as_str())
        .bind(device.as_str())
        .bind(expires_ms)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Uses a claim token once: returns what it enrolls if it was valid and unused. Atomic: of
    /// two replicas or two requests, one wins.
    pub async fn use_claim(&self, token_hash: &str, now: i64) -> Result<Option<Claim>> {
        let r = sqlx::query("UPDATE claim_tokens SET used_ms = $1 WHERE token_hash = $2 AND used_ms IS NULL AND expires_ms > $1")
            .bind(now)
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        if !rows_changed(&r) {
            return Ok(None);
        }
        let Two(site, device) = sqlx::query_as::<_, Two<String, String>>(
            "SELECT site_id, device_id FROM claim_tokens WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_one(&self.pool)
        .await?;
        let unreadable = |what, value: &str| Unreadable {
            what,
            value: value.to_owned(),
        };
        Ok(Some(Claim {
            site: SiteId::new(site.as_str()).map_err(|_| unreadable("site id", &site))?,
            device: DeviceId::new(device.as_str()).map_err(|_| unreadable("device id", &device))?,
        }))
    }
}
