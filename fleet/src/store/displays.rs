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
    /// Counts one event of `at_ms` into the day (from `since_ms`) and the last hour (from
    /// `hour_since_ms`); other events and older ones count nowhere.
    pub fn count(&mut self, e: &EventBody, at_ms: i64, since_ms: i64, hour_since_ms: i64) {
        let (day, hour) = (at_ms >= since_ms, at_ms >= hour_since_ms);
        match e {
            EventBody::StudyReceived {
                received, modality, ..
            } => {
                if day {
                    self.studies += 1;
                    self.images_received = self.images_received.saturating_add(received.objects);
                    let m = self
                        .modalities
                        .entry(
                            modality
                                .as_ref()
                                .map_or(OTHER_MODALITY, |m| m.as_str())
                                .to_owned(),
                        )
                        .or_default();
                    m.studies += 1;
                    m.images = m.images.saturating_add(received.objects);
                }
                if hour {
                    self.hour_received = self.hour_received.saturating_add(received.objects);
                }
            }
            EventBody::StudyForwarded { forwarded, .. } => {
                if day {
                    self.images_forwarded = self.images_forwarded.saturating_add(forwarded.objects);
                }
                if hour {
                    self.hour_forwarded = self.hour_forwarded.saturating_add(forwarded.objects);
                }
            }
            _ => {}
        }
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

    /// The study figures by site id: the day from `since_ms` and the last hour from
    /// `hour_since_ms` (device clock; either may be the earlier). A scan of the events — the
    /// shape lets rollup tables answer it instead.
    pub async fn today_by_site(
        &self,
        since_ms: i64,
        hour_since_ms: i64,
    ) -> Result<BTreeMap<String, Today>> {
        let rows = sqlx::query(
            "SELECT d.site_id, e.at_ms, e.data FROM events e JOIN devices d ON d.id = e.device_id \
             WHERE e.at_ms >= $1 AND e.kind IN ('study_received', 'study_forwarded')",
        )
        .bind(since_ms.min(hour_since_ms))
        .fetch_all(&self.pool)
        .await?;
        let mut out: BTreeMap<String, Today> = BTreeMap::new();
        for r in &rows {
            let site: String = r.try_get("site_id")?;
            let at_ms: i64 = r.try_get("at_ms")?;
            let Ok(e) = json::<EventBody>(r, "data") else {
                continue;
            };
            out.entry(site)
                .or_default()
                .count(&e, at_ms, since_ms, hour_since_ms);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medgate_contract::{AeTitle, Flow, Modality, Token};

    fn received(modality: Option<&str>, objects: u64) -> EventBody {
        EventBody::StudyReceived {
            calling_ae: AeTitle::new("CT01").expect("ae"),
            called_ae: AeTitle::new("MEDGATE").expect("ae"),
            modality: modality.map(|m| Modality::new(m).expect("modality")),
            sop_classes: vec![],
            received: Flow { objects, bytes: 0 },
            duration_ms: 1,
        }
    }

    fn forwarded(objects: u64) -> EventBody {
        EventBody::StudyForwarded {
            destination: Token::new("archive").expect("token"),
            modality: None,
            forwarded: Flow { objects, bytes: 0 },
            latency_ms: 1,
            attempts: 1,
        }
    }

    #[test]
    fn the_day_counts_by_modality_and_the_last_hour_apart() {
        // The day starts at 100, the last hour at 50 (just after midnight): an event at 60 is
        // in the last hour only, one at 120 in both, one at 10 in neither.
        let mut t = Today::default();
        for (e, at) in [
            (received(Some("CT"), 100), 120),
            (received(Some("CT"), 50), 130),
            (received(Some("MR"), 30), 140),
            (received(None, 7), 150),
            (received(Some("DX"), 5), 60),
            (received(Some("US"), 9), 10),
            (forwarded(100), 125),
            (forwarded(4), 70),
            (forwarded(8), 10),
        ] {
            t.count(&e, at, 100, 50);
        }
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
        assert!(!t.modalities.contains_key("DX"), "before the day began");
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
