//! Configuration: documents per scope (device, tag, site), each device's effective desired
//! configuration (versioned), what devices report, and the drift between the two
//! ([`Drift::of`], the one rule).

use medgate_contract::{DeviceId, ReportedConfig};
use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{One, Recorded, Result, Store, Two, json};
use crate::model::{ConfigScope, Desired, DeviceConfig, Drift, Reported};

/// A configuration document: the appliance configuration as a JSON object.
pub type Document = Map<String, Value>;

/// Desired versions kept per device in the history.
const HISTORY: i64 = 50;

impl<'r> sqlx::FromRow<'r, AnyRow> for Desired {
    fn from_row(r: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(Desired {
            version: r.try_get("version")?,
            source: r.try_get("source")?,
            config: json(r, "config")?,
            updated_ms: r.try_get("updated_ms")?,
        })
    }
}

impl<'r> sqlx::FromRow<'r, AnyRow> for Reported {
    fn from_row(r: &'r AnyRow) -> sqlx::Result<Self> {
        let status: String = r.try_get("status")?;
        Ok(Reported {
            running_version: r.try_get("running_version")?,
            desired_version: r.try_get("desired_version")?,
            status: serde_json::from_value(Value::String(status))
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            problems: json(r, "problems")?,
            at_ms: r.try_get("at_ms")?,
        })
    }
}

impl Store {
    /// Stores a configuration document for a scope and target; returns its revision.
    pub async fn put_config_document(
        &self,
        scope: ConfigScope,
        target: &str,
        config: &Document,
        now: i64,
    ) -> Result<i64> {
        let mut tx = self.tx().await?;
        let prev = sqlx::query_as::<_, One<i64>>(
            "SELECT revision FROM config_documents WHERE scope = $1 AND target = $2",
        )
        .bind(scope.as_str())
        .bind(target)
        .fetch_optional(&mut *tx)
        .await?;
        let revision = prev.map_or(0, |One(r)| r) + 1;
        sqlx::query(
            "INSERT INTO config_documents (scope, target, revision, config, updated_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (scope, target) DO UPDATE SET revision = $3, config = $4, updated_ms = $5",
        )
        .bind(scope.as_str())
        .bind(target)
        .bind(revision)
        .bind(serde_json::to_string(config)?)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(revision)
    }

    /// The configuration document that applies to a device: its own, else its first tag's (by
    /// name) that has one, else its site's. Returns (source `scope:target`, config).
    pub async fn effective_config(&self, device: &str) -> Result<Option<(String, Document)>> {
        let Some(reg) = self.registration(device).await? else {
            return Ok(None);
        };
        let mut candidates = vec![(ConfigScope::Device, device.to_owned())];
        for t in self.tags(device).await? {
            candidates.push((ConfigScope::Tag, t));
        }
        candidates.push((ConfigScope::Site, reg.site));
        for (scope, target) in candidates {
            let row = sqlx::query_as::<_, One<String>>(
                "SELECT config FROM config_documents WHERE scope = $1 AND target = $2",
            )
            .bind(scope.as_str())
            .bind(&target)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(One(config)) = row {
                return Ok(Some((
                    format!("{scope}:{target}"),
                    serde_json::from_str(&config)?,
                )));
            }
        }
        Ok(None)
    }

    /// Sets the effective desired configuration of a device; the version increases only when the
    /// configuration changes. Returns (version, changed).
    pub async fn set_device_desired(
        &self,
        device: &str,
        source: &str,
        config: &Document,
        now: i64,
    ) -> Result<(i64, bool)> {
        let mut tx = self.tx().await?;
        let prev = sqlx::query_as::<_, Two<i64, String>>(
            "SELECT version, config FROM device_desired WHERE device_id = $1",
        )
        .bind(device)
        .fetch_optional(&mut *tx)
        .await?;
        let (prev_version, prev_config) = match prev {
            Some(Two(v, c)) => (v, Some(serde_json::from_str::<Document>(&c)?)),
            None => (0, None),
        };
        if prev_config.as_ref() == Some(config) {
            tx.rollback().await?;
            return Ok((prev_version, false));
        }
        let version = prev_version + 1;
        sqlx::query(
            "INSERT INTO device_desired (device_id, version, source, config, updated_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (device_id) DO UPDATE SET version = $2, source = $3, config = $4, updated_ms = $5",
        )
        .bind(device)
        .bind(version)
        .bind(source)
        .bind(serde_json::to_string(config)?)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // History (the document a device reports running may be an older version); the last
        // HISTORY versions are kept.
        sqlx::query(
            "INSERT INTO device_desired_history (device_id, version, source, config, updated_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (device_id, version) DO UPDATE SET source = $3, config = $4, updated_ms = $5",
        )
        .bind(device)
        .bind(version)
        .bind(source)
        .bind(serde_json::to_string(config)?)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM device_desired_history WHERE device_id = $1 AND version <= $2")
            .bind(device)
            .bind(version - HISTORY)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((version, true))
    }

    /// The document of one desired version of a device (from the history), if still kept.
    pub async fn desired_version(&self, device: &str, version: i64) -> Result<Option<Document>> {
        let row = sqlx::query_as::<_, One<String>>(
            "SELECT config FROM device_desired_history WHERE device_id = $1 AND version = $2",
        )
        .bind(device)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|One(c)| serde_json::from_str(&c).map_err(Into::into))
            .transpose()
    }

    /// The stored document of a scope and target, with its revision.
    pub async fn config_document(
        &self,
        scope: ConfigScope,
        target: &str,
    ) -> Result<Option<(i64, Document)>> {
        let row = sqlx::query_as::<_, Two<i64, String>>(
            "SELECT revision, config FROM config_documents WHERE scope = $1 AND target = $2",
        )
        .bind(scope.as_str())
        .bind(target)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|Two(r, c)| Ok((r, serde_json::from_str(&c)?)))
            .transpose()
    }

    /// Desired and reported configuration of a device, with drift.
    pub async fn device_config(&self, device: &str) -> Result<DeviceConfig> {
        let desired = sqlx::query_as::<_, Desired>(
            "SELECT version, source, config, updated_ms FROM device_desired WHERE device_id = $1",
        )
        .bind(device)
        .fetch_optional(&self.pool)
        .await?;
        let reported = sqlx::query_as::<_, Reported>(
            "SELECT running_version, desired_version, status, problems, at_ms FROM device_reported WHERE device_id = $1",
        )
        .bind(device)
        .fetch_optional(&self.pool)
        .await?;
        let drift = Drift::of(
            desired.as_ref().map(|d| d.version),
            reported.as_ref().map(|r| (r.desired_version, r.status)),
        );
        Ok(DeviceConfig {
            desired,
            reported,
            drift,
        })
    }

    /// Records the reported configuration of an admitted device.
    pub(super) async fn record_reported(
        &self,
        c: &mut AnyConnection,
        device: &DeviceId,
        r: &ReportedConfig,
    ) -> Result<Recorded> {
        let status = match serde_json::to_value(r.status)? {
            Value::String(s) => s,
            _ => "unknown".to_owned(),
        };
        sqlx::query(
            "INSERT INTO device_reported (device_id, running_version, desired_version, status, problems, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (device_id) DO UPDATE SET running_version = $2, \
             desired_version = $3, status = $4, problems = $5, at_ms = $6",
        )
        .bind(device.as_str())
        .bind(super::db_int(r.running_version))
        .bind(super::db_int(r.desired_version))
        .bind(status)
        .bind(serde_json::to_string(&r.problems)?)
        .bind(super::db_int(r.at_ms))
        .execute(&mut *c)
        .await?;
        sqlx::query("UPDATE devices SET running_config_version = $1 WHERE id = $2")
            .bind(super::db_int(r.running_version))
            .bind(device.as_str())
            .execute(&mut *c)
            .await?;
        Ok(Recorded::New)
    }
}
