//! The wall's display links (their secret as SHA-256 only) and what a wall reads beyond the
//! registry: each device's latest telemetry sample and the day's study figures per site.

use std::collections::BTreeMap;

use medgate_contract::EventBody;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Result, Store, json, json_opt, rows_changed};

/// A display link as the console lists it (no hash, no secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayLink {
    /// Its public id.
    pub id: String,
    /// What the screen is ("IT office TV").
    pub name: String,
    /// Its sites (`None`: every site).
    pub sites: Option<Vec<String>>,
    /// Night mode from this local hour to that one (dimmed), if any.
    pub night: Option<(u8, u8)>,
    /// Who created it.
    pub created_by: String,
    /// Created (Unix ms).
    pub created_ms: i64,
    /// Revoked (Unix ms).
    pub revoked_ms: Option<i64>,
    /// Last opened (Unix ms, to the minute).
    pub last_used_ms: Option<i64>,
}

impl DisplayLink {
    /// Whether it still opens a wall.
    pub fn active(&self) -> bool {
        self.revoked_ms.is_none()
    }
}

fn hour(v: Option<i64>) -> Option<u8> {
    v.and_then(|h| u8::try_from(h).ok()).filter(|h| *h < 24)
}

impl<'r> sqlx::FromRow<'r, AnyRow> for DisplayLink {
    fn from_row(r: &'r AnyRow) -> sqlx::Result<Self> {
        let from = hour(r.try_get("night_from")?);
        let to = hour(r.try_get("night_to")?);
        Ok(DisplayLink {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            sites: json_opt(r, "sites")?,
            night: from.zip(to),
            created_by: r.try_get("created_by")?,
            created_ms: r.try_get("created_ms")?,
            revoked_ms: r.try_get("revoked_ms")?,
            last_used_ms: r.try_get("last_used_ms")?,
        })
    }
}

macro_rules! display_columns {
    () => {
        "id, name, sites, night_from, night_to, created_by, created_ms, revoked_ms, last_used_ms"
    };
}

/// The day's study figures of one site (from the appliances' study events).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Today {
    /// Studies (or parts of studies, one per association) received.
    pub studies: u64,
    /// Images (DICOM objects) received.
    pub images_received: u64,
    /// Images confirmed by a destination (each destination counts).
    pub images_forwarded: u64,
}

impl Store {
    /// Stores a new display link.
    pub async fn create_display(&self, d: &DisplayLink, token_hash: &str) -> Result<()> {
        let sites = d.sites.as_ref().map(serde_json::to_string).transpose()?;
        sqlx::query(
            "INSERT INTO display_links (id, token_hash, name, sites, night_from, night_to, created_by, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&d.id)
        .bind(token_hash)
        .bind(&d.name)
        .bind(sites)
        .bind(d.night.map(|n| i64::from(n.0)))
        .bind(d.night.map(|n| i64::from(n.1)))
        .bind(&d.created_by)
        .bind(d.created_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The display link of a secret (by its hash), revoked ones included.
    pub async fn display_by_hash(&self, token_hash: &str) -> Result<Option<DisplayLink>> {
        Ok(sqlx::query_as::<_, DisplayLink>(concat!(
            "SELECT ",
            display_columns!(),
            " FROM display_links WHERE token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// One display link by id.
    pub async fn display(&self, id: &str) -> Result<Option<DisplayLink>> {
        Ok(sqlx::query_as::<_, DisplayLink>(concat!(
            "SELECT ",
            display_columns!(),
            " FROM display_links WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Every display link, newest first (revoked ones included: the listing says so).
    pub async fn displays(&self) -> Result<Vec<DisplayLink>> {
        Ok(sqlx::query_as::<_, DisplayLink>(concat!(
            "SELECT ",
            display_columns!(),
            " FROM display_links ORDER BY created_ms DESC, id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes a display link; `false` if it is unknown or revoked already.
    pub async fn revoke_display(&self, id: &str, now: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE display_links SET revoked_ms = $1 WHERE id = $2 AND revoked_ms IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(rows_changed(&r))
    }

    /// Records that a wall opened with the link (at most one write a minute).
    pub async fn touch_display(&self, id: &str, now: i64) -> Result<()> {
        let minute = now - now.rem_euclid(60_000);
        sqlx::query(
            "UPDATE display_links SET last_used_ms = $1 WHERE id = $2 AND (last_used_ms IS NULL OR last_used_ms < $1)",
        )
        .bind(minute)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The study figures since `since_ms` (device clock), by site id.
    pub async fn today_by_site(&self, since_ms: i64) -> Result<BTreeMap<String, Today>> {
        let rows = sqlx::query(
            "SELECT d.site_id, e.data FROM events e JOIN devices d ON d.id = e.device_id \
             WHERE e.at_ms >= $1 AND e.kind IN ('study_received', 'study_forwarded')",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut out: BTreeMap<String, Today> = BTreeMap::new();
        for r in &rows {
            let site: String = r.try_get("site_id")?;
            let Ok(e) = json::<EventBody>(r, "data") else {
                continue;
            };
            let t = out.entry(site).or_default();
            match e {
                EventBody::StudyReceived { received, .. } => {
                    t.studies += 1;
                    t.images_received = t.images_received.saturating_add(received.objects);
                }
                EventBody::StudyForwarded { forwarded, .. } => {
                    t.images_forwarded = t.images_forwarded.saturating_add(forwarded.objects);
                }
                _ => {}
            }
        }
        Ok(out)
    }
}
