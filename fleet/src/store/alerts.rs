//! alerts (issue 13 part 3): raised alerts and the notification outbox. Transitions are
//! idempotent across replicas: a raise is an insert that the one-firing-per-(device, kind)
//! unique index lets through once, a clear is a conditional update, and the notifications are
//! written in the same transaction as the transition that caused them; a delivery is claimed by
//! a conditional update of its next attempt time (a lease), so two replicas do not send it
//! twice.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{One, Result, Store, rows_changed, word};
use crate::alerts::rules::{Condition, Firing};
use crate::model::{Alert, AlertKind, AlertState, Severity};

/// A notification channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// SMTP.
    Email,
    /// HTTPS POST.
    Webhook,
}

impl Channel {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }

    fn parse(s: &str) -> Option<Channel> {
        match s {
            "email" => Some(Channel::Email),
            "webhook" => Some(Channel::Webhook),
            _ => None,
        }
    }
}

/// What a notification tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The alert was raised.
    Raised,
    /// It cleared.
    Cleared,
}

impl Event {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Raised => "raised",
            Event::Cleared => "cleared",
        }
    }
}

/// A notification due for delivery, with its alert.
#[derive(Debug, Clone)]
pub struct Due {
    /// The alert.
    pub alert: Alert,
    /// Raised or cleared.
    pub event: Event,
    /// Where.
    pub channel: Channel,
    /// Attempts made so far.
    pub attempt: i64,
    /// Its next-attempt time when read (the claim's condition).
    pub next_ms: i64,
}

/// A filter of the alerts listing.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    /// Only this site.
    pub site: Option<String>,
    /// Only firing or only resolved.
    pub state: Option<AlertState>,
    /// Only this device.
    pub device: Option<String>,
    /// At most (default 500).
    pub limit: Option<i64>,
}

/// The alert columns, as a literal for `concat!`.
macro_rules! columns {
    () => {
        "id, device_id, site_id, kind, severity, raised_ms, cleared_ms, acked_by, acked_ms, silenced_until_ms, words"
    };
}

impl<'r> FromRow<'r, AnyRow> for Alert {
    fn from_row(r: &'r AnyRow) -> sqlx::Result<Self> {
        let cleared_ms: Option<i64> = r.try_get("cleared_ms")?;
        Ok(Alert {
            id: r.try_get("id")?,
            device: r.try_get("device_id")?,
            site: r.try_get("site_id")?,
            kind: word(r, "kind")?,
            severity: word(r, "severity")?,
            state: if cleared_ms.is_some() {
                AlertState::Resolved
            } else {
                AlertState::Firing
            },
            raised_ms: r.try_get("raised_ms")?,
            cleared_ms,
            acked_by: r.try_get("acked_by")?,
            acked_ms: r.try_get("acked_ms")?,
            silenced_until_ms: r.try_get("silenced_until_ms")?,
            words: r.try_get("words")?,
        })
    }
}

fn alert_id(now_ms: i64) -> String {
    format!("{now_ms:013}-{:08x}", fastrand::u32(..))
}

impl Store {
    /// The firing alerts, as the state machine needs them.
    pub async fn alerts_firing(&self) -> Result<Vec<Firing>> {
        let rows = sqlx::query(
            "SELECT id, device_id, kind, severity FROM alerts WHERE cleared_ms IS NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Firing {
                    id: r.try_get("id")?,
                    device: r.try_get("device_id")?,
                    kind: word::<AlertKind>(r, "kind")?,
                    severity: word::<Severity>(r, "severity")?,
                })
            })
            .collect::<sqlx::Result<Vec<_>>>()
            .map_err(Into::into)
    }

    /// Raises `c` unless a firing alert of its device and kind exists (another replica raised
    /// it), with a notification per channel. The new alert's id, if this call raised it.
    pub async fn raise_alert(
        &self,
        c: &Condition,
        now_ms: i64,
        channels: &[Channel],
    ) -> Result<Option<String>> {
        let id = alert_id(now_ms);
        let _w = self.write_guard().await;
        let mut tx = self.tx().await?;
        let r = sqlx::query(
            "INSERT INTO alerts (id, device_id, site_id, kind, severity, raised_ms, words) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .bind(&c.device)
        .bind(&c.site)
        .bind(c.kind.as_str())
        .bind(c.severity.as_str())
        .bind(now_ms)
        .bind(&c.words)
        .execute(&mut *tx)
        .await?;
        if !rows_changed(&r) {
            return Ok(None);
        }
        for ch in channels {
            enqueue(&mut tx, &id, Event::Raised, *ch, now_ms).await?;
        }
        tx.commit().await?;
        Ok(Some(id))
    }

    /// A firing alert's new severity and words.
    pub async fn escalate_alert(&self, id: &str, c: &Condition) -> Result<()> {
        let _w = self.write_guard().await;
        sqlx::query(
            "UPDATE alerts SET severity = $1, words = $2 WHERE id = $3 AND cleared_ms IS NULL",
        )
        .bind(c.severity.as_str())
        .bind(&c.words)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Clears a firing alert (once, whichever replica comes first), with a notification per
    /// channel unless it is silenced. Whether this call cleared it.
    pub async fn clear_alert(&self, id: &str, now_ms: i64, channels: &[Channel]) -> Result<bool> {
        let _w = self.write_guard().await;
        let mut tx = self.tx().await?;
        let r =
            sqlx::query("UPDATE alerts SET cleared_ms = $1 WHERE id = $2 AND cleared_ms IS NULL")
                .bind(now_ms)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        if !rows_changed(&r) {
            return Ok(false);
        }
        let One(silenced) = sqlx::query_as::<_, One<Option<i64>>>(
            "SELECT silenced_until_ms FROM alerts WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        if silenced.is_none_or(|until| until <= now_ms) {
            for ch in channels {
                enqueue(&mut tx, id, Event::Cleared, *ch, now_ms).await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Alerts matching `f`: firing first (critical before warning, newest first), then resolved
    /// (newest first).
    pub async fn alerts(&self, f: &AlertFilter) -> Result<Vec<Alert>> {
        let limit = f.limit.unwrap_or(500).clamp(1, 10_000);
        let state = match f.state {
            None => "",
            Some(AlertState::Firing) => "firing",
            Some(AlertState::Resolved) => "resolved",
        };
        Ok(sqlx::query_as::<_, Alert>(concat!(
            "SELECT ",
            columns!(),
            " FROM alerts WHERE ($1 = '' OR site_id = $1) AND ($2 = '' OR device_id = $2) \
             AND ($3 = '' OR ($3 = 'firing' AND cleared_ms IS NULL) OR ($3 = 'resolved' AND cleared_ms IS NOT NULL)) \
             ORDER BY CASE WHEN cleared_ms IS NULL THEN 0 ELSE 1 END, \
             CASE WHEN cleared_ms IS NULL AND severity = 'critical' THEN 0 ELSE 1 END, raised_ms DESC, id DESC LIMIT $4"
        ))
        .bind(f.site.as_deref().unwrap_or(""))
        .bind(f.device.as_deref().unwrap_or(""))
        .bind(state)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// One alert.
    pub async fn alert(&self, id: &str) -> Result<Option<Alert>> {
        Ok(
            sqlx::query_as::<_, Alert>(concat!(
                "SELECT ",
                columns!(),
                " FROM alerts WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?,
        )
    }

    /// Acknowledges an alert (the first acknowledgement stays). Whether it was changed.
    pub async fn ack_alert(&self, id: &str, by: &str, now_ms: i64) -> Result<bool> {
        let _w = self.write_guard().await;
        let r = sqlx::query(
            "UPDATE alerts SET acked_by = $1, acked_ms = $2 WHERE id = $3 AND acked_ms IS NULL",
        )
        .bind(by)
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(rows_changed(&r))
    }

    /// Holds an alert's notifications until `until_ms` (those already queued are skipped).
    pub async fn silence_alert(&self, id: &str, until_ms: i64) -> Result<bool> {
        let _w = self.write_guard().await;
        let r = sqlx::query("UPDATE alerts SET silenced_until_ms = $1 WHERE id = $2")
            .bind(until_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(rows_changed(&r))
    }

    /// Firing alerts per (kind, severity), for `medgate_fleet_alerts_firing`.
    pub async fn alerts_firing_counts(&self) -> Result<Vec<(AlertKind, Severity, i64)>> {
        let rows = sqlx::query(
            "SELECT kind, severity, COUNT(*) AS n FROM alerts WHERE cleared_ms IS NULL GROUP BY kind, severity",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((word(r, "kind")?, word(r, "severity")?, r.try_get("n")?)))
            .collect::<sqlx::Result<Vec<_>>>()
            .map_err(Into::into)
    }

    /// Notifications due at `now_ms` (at most `limit`), oldest first.
    pub async fn notifications_due(&self, now_ms: i64, limit: i64) -> Result<Vec<Due>> {
        let rows = sqlx::query(
            "SELECT n.event, n.channel, n.attempt, n.next_ms, a.id, a.device_id, a.site_id, a.kind, a.severity, \
             a.raised_ms, a.cleared_ms, a.acked_by, a.acked_ms, a.silenced_until_ms, a.words \
             FROM alert_notifications n JOIN alerts a ON a.id = n.alert_id \
             WHERE n.status = 'pending' AND n.next_ms <= $1 ORDER BY n.next_ms LIMIT $2",
        )
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let event = match r.try_get::<String, _>("event")?.as_str() {
                "cleared" => Event::Cleared,
                _ => Event::Raised,
            };
            let Some(channel) = Channel::parse(&r.try_get::<String, _>("channel")?) else {
                continue;
            };
            out.push(Due {
                alert: Alert::from_row(r)?,
                event,
                channel,
                attempt: r.try_get("attempt")?,
                next_ms: r.try_get("next_ms")?,
            });
        }
        Ok(out)
    }

    /// Takes a due notification for `lease_ms` (until then no other replica sends it). Whether
    /// this call got it.
    pub async fn claim_notification(&self, d: &Due, lease_until_ms: i64) -> Result<bool> {
        let _w = self.write_guard().await;
        let r = sqlx::query(
            "UPDATE alert_notifications SET next_ms = $1 WHERE alert_id = $2 AND event = $3 AND channel = $4 \
             AND status = 'pending' AND next_ms = $5",
        )
        .bind(lease_until_ms)
        .bind(&d.alert.id)
        .bind(d.event.as_str())
        .bind(d.channel.as_str())
        .bind(d.next_ms)
        .execute(&self.pool)
        .await?;
        Ok(rows_changed(&r))
    }

    /// The outcome of an attempt: `status` `sent`, `failed` (given up) or `skipped` (silenced),
    /// or still `pending` with its next attempt at `next_ms`.
    pub async fn notification_outcome(
        &self,
        d: &Due,
        status: &str,
        attempt: i64,
        next_ms: i64,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<()> {
        let _w = self.write_guard().await;
        sqlx::query(
            "UPDATE alert_notifications SET status = $1, attempt = $2, next_ms = $3, last_error = $4, \
             done_ms = CASE WHEN $1 = 'pending' THEN NULL ELSE $5 END \
             WHERE alert_id = $6 AND event = $7 AND channel = $8",
        )
        .bind(status)
        .bind(attempt)
        .bind(next_ms)
        .bind(error)
        .bind(now_ms)
        .bind(&d.alert.id)
        .bind(d.event.as_str())
        .bind(d.channel.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The notifications of an alert: (event, channel, status, attempts, last error).
    pub async fn alert_notifications(
        &self,
        alert: &str,
    ) -> Result<Vec<(String, String, String, i64, Option<String>)>> {
        let rows = sqlx::query(
            "SELECT event, channel, status, attempt, last_error FROM alert_notifications WHERE alert_id = $1 \
             ORDER BY created_ms, event, channel",
        )
        .bind(alert)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("event")?,
                    r.try_get("channel")?,
                    r.try_get("status")?,
                    r.try_get("attempt")?,
                    r.try_get("last_error")?,
                ))
            })
            .collect::<sqlx::Result<Vec<_>>>()
            .map_err(Into::into)
    }

    /// Every device's certificate end (Unix ms), where known.
    pub async fn certificate_ends(&self) -> Result<HashMap<String, i64>> {
        let rows = sqlx::query(
            "SELECT id, cert_expires_ms FROM devices WHERE cert_expires_ms IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = HashMap::new();
        for r in &rows {
            out.insert(r.try_get("id")?, r.try_get("cert_expires_ms")?);
        }
        Ok(out)
    }
}

async fn enqueue(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    alert: &str,
    event: Event,
    channel: Channel,
    now_ms: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO alert_notifications (alert_id, event, channel, status, attempt, next_ms, created_ms) \
         VALUES ($1, $2, $3, 'pending', 0, $4, $4) ON CONFLICT DO NOTHING",
    )
    .bind(alert)
    .bind(event.as_str())
    .bind(channel.as_str())
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
