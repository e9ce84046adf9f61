//! The wall's display links (their secret as SHA-256 only) and what a wall reads beyond the
//! registry: each device's latest telemetry sample and the day's study figures per site.

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Result, Store, json_opt, rows_changed};
use crate::analytics::Counts;
use crate::auth::SiteScope;

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

/// One modality's share of a day (from its study events; no modality known: `other`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModalityDay {
    /// Studies received.
    pub studies: u64,
    /// Images received.
    pub images: u64,
}

/// The study figures of one site for a day and the last hour (from the appliances' study
/// events).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Today {
    /// Studies (or parts of studies, one per association) received today.
    pub studies: u64,
    /// Images (DICOM objects) received today.
    pub images_received: u64,
    /// Images confirmed by a destination today (each destination counts).
    pub images_forwarded: u64,
    /// Today's studies and images by modality code (`CT`, `MR`, … and `other`).
    pub modalities: BTreeMap<String, ModalityDay>,
    /// Images received in the last hour.
    pub hour_received: u64,
    /// Images forwarded in the last hour.
    pub hour_forwarded: u64,
}

/// The modality bucket of events without a modality.
pub const OTHER_MODALITY: &str = "other";

impl Today {
    /// A site's day and last hour from its rollup counts per modality (`""`, no modality
    /// known, is [`OTHER_MODALITY`]).
    pub fn of(day: &BTreeMap<String, Counts>, hour: &BTreeMap<String, Counts>) -> Today {
        let mut t = Today::default();
        for (m, c) in day {
            t.studies = t.studies.saturating_add(c.studies);
            t.images_received = t.images_received.saturating_add(c.images);
            t.images_forwarded = t.images_forwarded.saturating_add(c.images_forwarded);
            if c.studies > 0 || c.images > 0 {
                let key = if m.is_empty() {
                    OTHER_MODALITY
                } else {
                    m.as_str()
                };
                let e = t.modalities.entry(key.to_owned()).or_default();
                e.studies = e.studies.saturating_add(c.studies);
                e.images = e.images.saturating_add(c.images);
            }
        }
        for c in hour.values() {
            t.hour_received = t.hour_received.saturating_add(c.images);
            t.hour_forwarded = t.hour_forwarded.saturating_add(c.images_forwarded);
        }
        t
    }

    /// Adds another site's figures (the region's totals).
    pub fn add(&mut self, o: &Today) {
        self.studies = self.studies.saturating_add(o.studies);
        self.images_received = self.images_received.saturating_add(o.images_received);
        self.images_forwarded = self.images_forwarded.saturating_add(o.images_forwarded);
        self.hour_received = self.hour_received.saturating_add(o.hour_received);
        self.hour_forwarded = self.hour_forwarded.saturating_add(o.hour_forwarded);
        for (k, v) in &o.modalities {
            let m = self.modalities.entry(k.clone()).or_default();
            m.studies = m.studies.saturating_add(v.studies);
            m.images = m.images.saturating_add(v.images);
        }
    }

    /// The modalities with the most studies (then by code), at most `n`, and how many more.
    pub fn top_modalities(&self, n: usize) -> (Vec<(&str, ModalityDay)>, usize) {
        let mut v: Vec<(&str, ModalityDay)> = self
            .modalities
            .iter()
            .map(|(k, m)| (k.as_str(), *m))
            .collect();
        v.sort_by(|a, b| b.1.studies.cmp(&a.1.studies).then(a.0.cmp(b.0)));
        let more = v.len().saturating_sub(n);
        v.truncate(n);
        (v, more)
    }
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

    /// The study figures per site id since `since_ms` (the wall's day) and since
    /// `hour_since_ms` (its last hour), device clock — from the five-minute rollup slots
    /// (analytics), each bound rounded up to its slot: the day from local midnight exactly (every
    /// time zone's midnight is a slot boundary), the last hour as its whole slots (55 to 60 min).
    pub async fn today_by_site(
        &self,
        since_ms: i64,
        hour_since_ms: i64,
    ) -> Result<BTreeMap<String, Today>> {
        let day = self.analytics_recent(&SiteScope::All, since_ms).await?;
        let hour = self
            .analytics_recent(&SiteScope::All, hour_since_ms)
            .await?;
        let empty = BTreeMap::new();
        let mut out = BTreeMap::new();
        for site in day.keys().chain(hour.keys()) {
            if !out.contains_key(site) {
                let t = Today::of(
                    day.get(site).unwrap_or(&empty),
                    hour.get(site).unwrap_or(&empty),
                );
                out.insert(site.clone(), t);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_day_counts_by_modality_and_the_last_hour_apart() {
        let c = |studies, images, images_forwarded| Counts {
            studies,
            images,
            images_forwarded,
            ..Counts::default()
        };
        let day: BTreeMap<String, Counts> = [
            ("CT".to_string(), c(2, 150, 100)),
            ("MR".to_string(), c(1, 30, 0)),
            (String::new(), c(1, 7, 0)),
        ]
        .into();
        let hour: BTreeMap<String, Counts> = [
            ("CT".to_string(), c(1, 100, 100)),
            ("DX".to_string(), c(1, 92, 4)),
        ]
        .into();
        let t = Today::of(&day, &hour);
        assert_eq!(
            (t.studies, t.images_received, t.images_forwarded),
            (4, 187, 100)
        );
        assert_eq!((t.hour_received, t.hour_forwarded), (192, 104));
        assert_eq!(
            t.modalities.get("CT"),
            Some(&ModalityDay {
                studies: 2,
                images: 150
            })
        );
        assert_eq!(t.modalities.get(OTHER_MODALITY).map(|m| m.images), Some(7));
        assert!(!t.modalities.contains_key("DX"), "in the last hour only");
        let (top, more) = t.top_modalities(2);
        let codes: Vec<&str> = top.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            (codes, more),
            (vec!["CT", "MR"], 1),
            "most studies, then by code"
        );

        let mut region = Today::default();
        region.add(&t);
        region.add(&t);
        assert_eq!((region.studies, region.hour_forwarded), (8, 208));
        assert_eq!(region.modalities.get("CT").map(|m| m.studies), Some(4));
    }
}
