//! alerts (issue 13 part 3): the alerts listing, acknowledgement and silence — site-scoped and
//! audited (`alert.ack`, `alert.silence`).

use serde_json::json;

use super::{Actor, OpError, Ops};
use crate::auth::SiteScope;
use crate::model::{Alert, AlertState};
use crate::store::alerts::AlertFilter;
use crate::store::audit::Outcome;
use crate::store::now_db;

/// The longest silence, minutes (a week).
pub const MAX_SILENCE_MINUTES: u64 = 7 * 24 * 60;

/// Parses a state filter word (`firing`, `resolved`; empty: both).
pub fn state_filter(s: Option<&str>) -> Result<Option<AlertState>, OpError> {
    match s.unwrap_or("") {
        "" | "all" => Ok(None),
        w => w
            .parse()
            .map(Some)
            .map_err(|_| OpError::Invalid(format!("state: {w:?} is neither firing nor resolved"))),
    }
}

impl Ops {
    /// Alerts in `scope` (optionally of one site, state or device), firing first.
    pub async fn alerts(&self, scope: &SiteScope, f: &AlertFilter) -> Result<Vec<Alert>, OpError> {
        if let Some(site) = &f.site
            && !scope.allows(site)
        {
            return Err(OpError::Forbidden(format!(
                "site {site:?} is not one of your sites; ask an admin to add it to your user"
            )));
        }
        let mut v = self.store.alerts(f).await?;
        v.retain(|a| scope.allows(&a.site));
        Ok(v)
    }

    /// Whether an alert exists and its site is in `scope`.
    pub async fn alert_in_scope(&self, scope: &SiteScope, id: &str) -> Result<bool, OpError> {
        Ok(self
            .store
            .alert(id)
            .await?
            .is_some_and(|a| scope.allows(&a.site)))
    }

    /// Acknowledges an alert (someone is on it), audited as `alert.ack`. Acknowledging again
    /// keeps the first acknowledgement.
    pub async fn ack_alert(&self, actor: &Actor, id: &str) -> Result<Alert, OpError> {
        let Some(before) = self.store.alert(id).await? else {
            return Err(OpError::NotFound("no such alert".into()));
        };
        actor.check_site(&before.site)?;
        let who = actor.principal.label();
        let changed = self.store.ack_alert(id, &who, now_db()).await?;
        let after = self
            .store
            .alert(id)
            .await?
            .ok_or_else(|| OpError::NotFound("no such alert".into()))?;
        if changed {
            // wall (issue 13 part 1): the alarms band says "acknowledged".
            self.wall.changed();
            self.audit(
                actor,
                "alert.ack",
                &format!("alert:{id}"),
                Outcome::Ok,
                None,
                Some(
                    json!({"device": after.device, "kind": after.kind, "severity": after.severity})
                        .to_string(),
                ),
            )
            .await;
        }
        Ok(after)
    }

    /// Holds an alert's notifications for `minutes` (1 to a week; 0 lifts the silence),
    /// audited as `alert.silence`.
    pub async fn silence_alert(
        &self,
        actor: &Actor,
        id: &str,
        minutes: u64,
    ) -> Result<Alert, OpError> {
        if minutes > MAX_SILENCE_MINUTES {
            return Err(OpError::Invalid(format!(
                "minutes: give 0 (lift the silence) to {MAX_SILENCE_MINUTES} (a week)"
            )));
        }
        let Some(before) = self.store.alert(id).await? else {
            return Err(OpError::NotFound("no such alert".into()));
        };
        actor.check_site(&before.site)?;
        let now = now_db();
        let until = now.saturating_add(i64::try_from(minutes).unwrap_or(0) * 60_000);
        self.store.silence_alert(id, until).await?;
        // wall (issue 13 part 1): the alarms band says "silenced".
        self.wall.changed();
        let after = self
            .store
            .alert(id)
            .await?
            .ok_or_else(|| OpError::NotFound("no such alert".into()))?;
        self.audit(
            actor,
            "alert.silence",
            &format!("alert:{id}"),
            Outcome::Ok,
            before
                .silenced_until_ms
                .map(|u| json!({"silenced_until_ms": u}).to_string()),
            Some(
                json!({"device": after.device, "kind": after.kind, "minutes": minutes, "silenced_until_ms": until})
                    .to_string(),
            ),
        )
        .await;
        Ok(after)
    }
}
