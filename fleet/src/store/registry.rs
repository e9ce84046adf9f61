//! The registry: devices (site, status, connection, inventory, room, tags, certificate) and
//! sites; births and states from devices.

use std::collections::HashMap;

use medgate_contract::{Birth, DeviceId, DeviceState, SiteId};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{One, Recorded, Result, Store, Two, json_opt, recorded, rows_changed, word};
use crate::model::{
    ConfigScope, Connection, Device, DeviceIdentity, DeviceStatus, Drift, Registration, Site,
};

impl<'r> sqlx::FromRow<'r, AnyRow> for Registration {
    fn from_row(r: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(Registration {
            site: r.try_get("site_id")?,
            status: word(r, "status")?,
        })
    }
}

impl<'r> sqlx::FromRow<'r, AnyRow> for Device {
    fn from_row(r: &'r AnyRow) -> sqlx::Result<Self> {
        let desired: Option<i64> = r.try_get("desired_version")?;
        let reported_desired: Option<i64> = r.try_get("reported_desired_version")?;
        let reported_status: Option<String> = r.try_get("reported_status")?;
        let reported = match (reported_desired, reported_status) {
            (Some(v), Some(s)) => Some((
                v,
                serde_json::from_value(s.into()).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            )),
            _ => None,
        };
        Ok(Device {
            id: r.try_get("id")?,
            site: r.try_get("site_id")?,
            room: r.try_get("room")?,
            status: word(r, "status")?,
            connection: word(r, "connection")?,
            last_seen_ms: r.try_get("last_seen_ms")?,
            inventory: json_opt(r, "inventory")?,
            running_config_version: r.try_get("running_config_version")?,
            events_received: r.try_get("events_received")?,
            desired_config_version: desired,
            config_drift: Drift::of(desired, reported),
            tags: Vec::new(),
        })
    }
}

impl<'r> sqlx::FromRow<'r, AnyRow> for Site {
    fn from_row(r: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(Site {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            created_ms: r.try_get("created_ms")?,
            devices: r.try_get("devices")?,
            online: r.try_get("online")?,
        })
    }
}

const REGISTRATION: &str = "SELECT site_id, status FROM devices WHERE id = $1";

impl Store {
    /// The site and registry status of a device, if known.
    pub async fn registration(&self, device: &str) -> Result<Option<Registration>> {
        Ok(sqlx::query_as::<_, Registration>(REGISTRATION)
            .bind(device)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// [`Store::registration`], from memory when read less than [`super::ADMIT_CACHE_TTL`] ago.
    pub(super) async fn registration_cached(
        &self,
        c: &mut AnyConnection,
        device: &str,
    ) -> Result<Option<Registration>> {
        {
            let cache = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((r, at)) = cache.get(device)
                && at.elapsed() < super::ADMIT_CACHE_TTL
            {
                return Ok(Some(r.clone()));
            }
        }
        let r = sqlx::query_as::<_, Registration>(REGISTRATION)
            .bind(device)
            .fetch_optional(&mut *c)
            .await?;
        if let Some(r) = &r {
            self.remember(device, r.clone());
        }
        Ok(r)
    }

    pub(super) fn remember(&self, device: &str, r: Registration) {
        let mut cache = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(device.to_owned(), (r, std::time::Instant::now()));
    }

    fn forget(&self, device: &str) {
        self.admitted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(device);
    }

    async fn ensure_site(&self, c: &mut AnyConnection, site: &str, now: i64) -> Result<()> {
        sqlx::query("INSERT INTO sites (id, name, created_ms) VALUES ($1, $1, $2) ON CONFLICT (id) DO NOTHING")
            .bind(site)
            .bind(now)
            .execute(&mut *c)
            .await?;
        Ok(())
    }

    /// Adds a device to the registry (enrollment or first sight). Existing devices are left alone.
    pub async fn register_device(
        &self,
        site: &SiteId,
        device: &DeviceId,
        status: DeviceStatus,
        now: i64,
    ) -> Result<bool> {
        let mut c = self.pool.acquire().await?;
        let _w = self.write_guard().await;
        self.register_device_in(&mut c, site, device, status, now)
            .await
    }

    /// Adds a device to the registry (enrollment or first sight). Existing devices are left alone.
    pub async fn register_device_in(
        &self,
        c: &mut AnyConnection,
        site: &SiteId,
        device: &DeviceId,
        status: DeviceStatus,
        now: i64,
    ) -> Result<bool> {
        self.ensure_site(c, site.as_str(), now).await?;
        let r = sqlx::query(
            "INSERT INTO devices (id, site_id, status, connection, events_received, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, 0, $5, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(device.as_str())
        .bind(site.as_str())
        .bind(status.as_str())
        .bind(Connection::Unknown.as_str())
        .bind(now)
        .execute(&mut *c)
        .await?;
        Ok(rows_changed(&r))
    }

    /// Enrollment, in one transaction: the device is registered at its site (or found there),
    /// approved, and the serial of its new certificate recorded.
    pub async fn enroll(
        &self,
        site: &SiteId,
        device: &DeviceId,
        cert_serial: &str,
        now: i64,
    ) -> Result<()> {
        self.forget(device.as_str());
        let _w = self.write_guard().await;
        let mut tx = self.tx().await?;
        self.register_device_in(&mut tx, site, device, DeviceStatus::Approved, now)
            .await?;
        sqlx::query(
            "UPDATE devices SET status = $1, cert_serial = $2, updated_ms = $3 WHERE id = $4",
        )
        .bind(DeviceStatus::Approved.as_str())
        .bind(cert_serial)
        .bind(now)
        .bind(device.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a birth of an admitted device: inventory, boot, online, peers.
    pub(super) async fn record_birth(
        &self,
        c: &mut AnyConnection,
        device: &DeviceId,
        birth: &Birth,
        now: i64,
    ) -> Result<Recorded> {
        let inventory = serde_json::to_string(&birth.inventory)?;
        sqlx::query(
            "UPDATE devices SET inventory = $1, boot_id = $2, telemetry_interval_secs = $3, running_config_version = $4, \
             connection = $5, last_seen_ms = $6, updated_ms = $6, appliance_version = $8, hardware_profile = $9 WHERE id = $7",
        )
        .bind(inventory)
        .bind(format!("{:016x}", birth.boot_id))
        .bind(i64::from(birth.telemetry_interval_secs))
        .bind(super::db_int(birth.config_version))
        .bind(Connection::Online.as_str())
        .bind(now)
        .bind(device.as_str())
        .bind(birth.inventory.appliance_version.as_str())
        .bind(birth.inventory.hardware_profile.as_str())
        .execute(&mut *c)
        .await?;
        for peer in &birth.inventory.peers {
            self.upsert_peer(c, device, peer).await?;
        }
        Ok(Recorded::New)
    }

    /// Records the retained state of an admitted device (online / offline, the last will).
    pub(super) async fn record_state(
        &self,
        c: &mut AnyConnection,
        device: &DeviceId,
        state: DeviceState,
        now: i64,
    ) -> Result<Recorded> {
        let connection = match state {
            DeviceState::Online => Connection::Online,
            DeviceState::Offline => Connection::Offline,
        };
        let r = sqlx::query("UPDATE devices SET connection = $1, updated_ms = $2 WHERE id = $3 AND connection <> $1")
            .bind(connection.as_str())
            .bind(now)
            .bind(device.as_str())
            .execute(&mut *c)
            .await?;
        if connection == Connection::Online {
            sqlx::query("UPDATE devices SET last_seen_ms = $1 WHERE id = $2")
                .bind(now)
                .bind(device.as_str())
                .execute(&mut *c)
                .await?;
        }
        Ok(recorded(&r))
    }

    /// Marks online devices silent for `missed` telemetry intervals as offline; returns them.
    pub async fn sweep_offline(&self, missed: u64, now: i64) -> Result<Vec<String>> {
        let ids: Vec<String> = sqlx::query_as::<_, One<String>>(
            "SELECT id FROM devices WHERE connection = $3 AND last_seen_ms IS NOT NULL \
             AND last_seen_ms + COALESCE(telemetry_interval_secs, 60) * 1000 * $1 < $2",
        )
        .bind(super::db_int(missed))
        .bind(now)
        .bind(Connection::Online.as_str())
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|One(id)| id)
        .collect();
        if ids.is_empty() {
            return Ok(ids);
        }
        // One transaction, serialised with ingestion on SQLite (no busy waiting on either side);
        // the condition is checked again: a device heard from since the SELECT stays online.
        let _w = self.write_guard().await;
        let mut tx = self.tx().await?;
        let mut offline = Vec::with_capacity(ids.len());
        for id in ids {
            let r = sqlx::query(
                "UPDATE devices SET connection = $4, updated_ms = $1 WHERE id = $2 AND connection = $5 \
                 AND last_seen_ms + COALESCE(telemetry_interval_secs, 60) * 1000 * $3 < $1",
            )
            .bind(now)
            .bind(&id)
            .bind(super::db_int(missed))
            .bind(Connection::Offline.as_str())
            .bind(Connection::Online.as_str())
            .execute(&mut *tx)
            .await?;
            if rows_changed(&r) {
                offline.push(id);
            }
        }
        tx.commit().await?;
        Ok(offline)
    }

    /// Every device (of a site), as the API and the live feed show them.
    pub async fn devices(&self, site: Option<&str>) -> Result<Vec<Device>> {
        self.devices_where(site.unwrap_or(""), "").await
    }

    async fn devices_where(&self, site: &str, id: &str) -> Result<Vec<Device>> {
        let mut devices = sqlx::query_as::<_, Device>(
            "SELECT d.id, d.site_id, d.room, d.status, d.connection, d.last_seen_ms, d.inventory, d.running_config_version, \
             d.events_received, dd.version AS desired_version, r.desired_version AS reported_desired_version, \
             r.status AS reported_status \
             FROM devices d LEFT JOIN device_desired dd ON dd.device_id = d.id LEFT JOIN device_reported r ON r.device_id = d.id \
             WHERE ($1 = '' OR d.site_id = $1) AND ($2 = '' OR d.id = $2) ORDER BY d.site_id, d.id",
        )
        .bind(site)
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        // Tags of every device in one query.
        let mut tags: HashMap<String, Vec<String>> = HashMap::new();
        for Two(device, tag) in sqlx::query_as::<_, Two<String, String>>(
            "SELECT device_id, tag FROM device_tags WHERE ($1 = '' OR device_id = $1) ORDER BY device_id, tag",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        {
            tags.entry(device).or_default().push(tag);
        }
        for d in &mut devices {
            d.tags = tags.remove(&d.id).unwrap_or_default();
        }
        Ok(devices)
    }

    /// One device.
    pub async fn device(&self, id: &str) -> Result<Option<Device>> {
        if id.is_empty() {
            return Ok(None);
        }
        Ok(self.devices_where("", id).await?.into_iter().next())
    }

    /// Boot, reporting period and certificate of a device.
    pub async fn device_identity(&self, id: &str) -> Result<Option<DeviceIdentity>> {
        let row = sqlx::query(
            "SELECT boot_id, telemetry_interval_secs, cert_serial, cert_expires_ms, created_ms FROM devices WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(DeviceIdentity {
            boot_id: r.try_get("boot_id")?,
            telemetry_interval_secs: r.try_get("telemetry_interval_secs")?,
            cert_serial: r.try_get("cert_serial")?,
            cert_expires_ms: r.try_get("cert_expires_ms")?,
            created_ms: r.try_get("created_ms")?,
        }))
    }

    /// Records when a device's certificate expires (after enrollment issued it).
    pub async fn set_cert_expiry(&self, id: &str, expires_ms: i64) -> Result<()> {
        let _w = self.write_guard().await;
        sqlx::query("UPDATE devices SET cert_expires_ms = $1 WHERE id = $2")
            .bind(expires_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Tags of a device.
    pub async fn tags(&self, device: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_as::<_, One<String>>(
            "SELECT tag FROM device_tags WHERE device_id = $1 ORDER BY tag",
        )
        .bind(device)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|One(t)| t)
        .collect())
    }

    /// Replaces the tags and room of a device.
    pub async fn set_device_meta(
        &self,
        device: &str,
        room: Option<&str>,
        tags: Option<&[String]>,
    ) -> Result<()> {
        if let Some(room) = room {
            sqlx::query("UPDATE devices SET room = $1 WHERE id = $2")
                .bind(room)
                .bind(device)
                .execute(&self.pool)
                .await?;
        }
        if let Some(tags) = tags {
            let mut tx = self.tx().await?;
            sqlx::query("DELETE FROM device_tags WHERE device_id = $1")
                .bind(device)
                .execute(&mut *tx)
                .await?;
            for t in tags {
                sqlx::query("INSERT INTO device_tags (device_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(device)
                    .bind(t)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// Sets the registry status. False if no such device.
    pub async fn set_device_status(
        &self,
        device: &str,
        status: DeviceStatus,
        now: i64,
    ) -> Result<bool> {
        self.forget(device);
        let r = sqlx::query("UPDATE devices SET status = $1, updated_ms = $2 WHERE id = $3")
            .bind(status.as_str())
            .bind(now)
            .bind(device)
            .execute(&self.pool)
            .await?;
        Ok(rows_changed(&r))
    }

    /// Serials (hex) of the certificates of devices whose status puts them on the revocation
    /// list, with when their status changed (Unix ms).
    pub async fn revoked_serials(&self) -> Result<Vec<(String, u64)>> {
        let rows = sqlx::query_as::<_, Two<String, i64>>(
            "SELECT cert_serial, updated_ms FROM devices \
             WHERE (status = $1 OR status = $2) AND cert_serial IS NOT NULL ORDER BY id",
        )
        .bind(DeviceStatus::Revoked.as_str())
        .bind(DeviceStatus::Decommissioned.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|Two(serial, at)| (serial, super::from_db(at)))
            .collect())
    }

    /// Sites with device counts.
    pub async fn sites(&self) -> Result<Vec<Site>> {
        Ok(sqlx::query_as::<_, Site>(
            "SELECT s.id, s.name, s.created_ms, \
             (SELECT COUNT(*) FROM devices d WHERE d.site_id = s.id) AS devices, \
             (SELECT COUNT(*) FROM devices d WHERE d.site_id = s.id AND d.connection = $1) AS online \
             FROM sites s ORDER BY s.id",
        )
        .bind(Connection::Online.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Creates or renames a site.
    pub async fn upsert_site(&self, id: &SiteId, name: &str, now: i64) -> Result<()> {
        sqlx::query("INSERT INTO sites (id, name, created_ms) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET name = $2")
            .bind(id.as_str())
            .bind(name)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The devices a configuration document applies to.
    pub async fn devices_in(&self, scope: ConfigScope, target: &str) -> Result<Vec<String>> {
        let sql = match scope {
            ConfigScope::Site => "SELECT id FROM devices WHERE site_id = $1",
            ConfigScope::Tag => "SELECT device_id FROM device_tags WHERE tag = $1",
            ConfigScope::Device => "SELECT id FROM devices WHERE id = $1",
        };
        Ok(sqlx::query_as::<_, One<String>>(sql)
            .bind(target)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|One(id)| id)
            .collect())
    }
}
