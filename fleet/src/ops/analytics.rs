//! analytics (issue 13 part 2): the region's numbers within the caller's sites — one site if
//! asked (refused when it is not one of theirs), every site of their scope otherwise. Reading
//! only: nothing here is audited beyond the access the guard already checked.

use std::collections::BTreeSet;

use super::{OpError, Ops};
use crate::analytics::report::{BadPeriod, Daily, Delays, Devices, Overview, Period, Trend};
use crate::auth::SiteScope;
use crate::civil::Day;
use crate::store::now_db;

/// A report's request: the range and an optional site, as the query gave them.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct AnalyticsQuery {
    /// Only this site (hospital) id.
    pub site: Option<String>,
    /// First day, YYYY-MM-DD.
    pub from: Option<String>,
    /// Last day, YYYY-MM-DD (default today, UTC).
    pub to: Option<String>,
    /// The last N days (when `from` is not given).
    pub days: Option<String>,
}

impl From<BadPeriod> for OpError {
    fn from(e: BadPeriod) -> OpError {
        OpError::Invalid(e.to_string())
    }
}

/// Today (UTC), the reports' default end.
pub fn today() -> Day {
    Day::of_ms(now_db())
}

impl AnalyticsQuery {
    /// The range asked for; `default_days` when none is.
    pub fn period(&self, default_days: i64) -> Result<Period, OpError> {
        Ok(Period::parse(
            self.from.as_deref(),
            self.to.as_deref(),
            self.days.as_deref(),
            default_days,
            today(),
        )?)
    }

    /// The sites to read: `site` if given (and in `scope`), else all of `scope`.
    pub fn scope(&self, scope: &SiteScope) -> Result<SiteScope, OpError> {
        match self
            .site
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => Ok(scope.clone()),
            Some(site) if scope.allows(site) => {
                Ok(SiteScope::Only(BTreeSet::from([site.to_owned()])))
            }
            Some(site) => Err(OpError::Forbidden(format!(
                "site {site:?} is not one of your sites; ask an admin to add it to your user"
            ))),
        }
    }
}

impl Ops {
    /// Studies and images per hospital, day and modality (default: the last 7 days; at most
    /// 92).
    pub async fn analytics_daily(
        &self,
        scope: &SiteScope,
        q: &AnalyticsQuery,
    ) -> Result<Daily, OpError> {
        Ok(self
            .store
            .analytics_daily(&q.scope(scope)?, q.period(7)?.for_daily()?)
            .await?)
    }

    /// Studies and images per day per hospital (default: the last 30 days).
    pub async fn analytics_trend(
        &self,
        scope: &SiteScope,
        q: &AnalyticsQuery,
    ) -> Result<Trend, OpError> {
        Ok(self
            .store
            .analytics_trend(&q.scope(scope)?, q.period(30)?)
            .await?)
    }

    /// Appliances by hospital and modality (default: the last 30 days).
    pub async fn analytics_devices(
        &self,
        scope: &SiteScope,
        q: &AnalyticsQuery,
    ) -> Result<Devices, OpError> {
        Ok(self
            .store
            .analytics_devices(&q.scope(scope)?, q.period(30)?)
            .await?)
    }

    /// Forwarding delay p50/p95/p99 per hospital (default: the last 7 days).
    pub async fn analytics_delays(
        &self,
        scope: &SiteScope,
        q: &AnalyticsQuery,
    ) -> Result<Delays, OpError> {
        Ok(self
            .store
            .analytics_delays(&q.scope(scope)?, q.period(7)?)
            .await?)
    }

    /// The region this year (to `to`, default today).
    pub async fn analytics_overview(
        &self,
        scope: &SiteScope,
        q: &AnalyticsQuery,
    ) -> Result<Overview, OpError> {
        let to = q.period(1)?.to;
        Ok(self.store.analytics_overview(&q.scope(scope)?, to).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_outside_the_scope_is_refused_in_words() {
        let mine = SiteScope::Only(BTreeSet::from(["st-a".to_string()]));
        let q = |site: &str| AnalyticsQuery {
            site: Some(site.into()),
            ..AnalyticsQuery::default()
        };
        assert_eq!(q("st-a").scope(&mine).ok(), Some(mine.clone()));
        assert_eq!(q("").scope(&mine).ok(), Some(mine.clone()));
        let e = q("st-b").scope(&mine).expect_err("outside");
        assert!(e.to_string().contains("not one of your sites"), "{e}");
        assert_eq!(
            q("st-b").scope(&SiteScope::All).ok(),
            Some(SiteScope::Only(BTreeSet::from(["st-b".to_string()])))
        );
        let bad = AnalyticsQuery {
            days: Some("0".into()),
            ..AnalyticsQuery::default()
        };
        assert!(matches!(bad.period(7), Err(OpError::Invalid(_))));
    }
}
