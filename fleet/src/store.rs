//! The fleet database: SQLite or PostgreSQL through sqlx's `Any` driver, one set of portable
//! migrations and statements (`$N` parameters, TEXT/BIGINT columns, `ON CONFLICT`).
//!
//! Every write from MQTT is idempotent (upserts, `ON CONFLICT DO NOTHING` on event ids,
//! monotonic command states), so several fleet replicas may process the same message.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use medgate_contract::{
    Birth, CommandAck, CommandStatus, DeviceId, DeviceState, Event, EventBody, Peer,
    ReportedConfig, SiteId, Telemetry,
};
use serde_json::{Value, json};
use sqlx::AnyConnection;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor, Row, SqlSafeStr};

/// Database failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sqlx failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("database migration: {0}; the database may belong to a newer fleet version")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored JSON document is unreadable.
    #[error("stored document unreadable: {0}")]
    Json(#[from] serde_json::Error),
}

type Result<T> = std::result::Result<T, StoreError>;

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// "sqlite" or "postgres".
    pub backend: &'static str,
    write_lock: Arc<tokio::sync::Mutex<()>>,
    admitted: Arc<Mutex<HashMap<String, Admitted>>>,
}

/// A device's site and registry status, and when they were read.
type Admitted = (String, String, std::time::Instant);

/// How long a device's site and registry status are trusted from memory (a change made by
/// another replica is seen after at most this long).
const ADMIT_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// A batch of writes in one transaction; [`Batch::commit`] to keep them.
#[derive(Debug)]
pub struct Batch<'a> {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _guard: Option<tokio::sync::MutexGuard<'a, ()>>,
}

impl Batch<'_> {
    /// The connection to pass to the `record_*` methods.
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// Commits.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

/// Outcome of recording a message from a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Stored (new).
    New,
    /// Already known (a redelivery, or another replica stored it).
    Duplicate,
    /// Refused: unknown device for this message kind, wrong site, or revoked/decommissioned.
    Refused(&'static str),
}

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            Cow::Borrowed("init"),
            MigrationType::Simple,
            include_str!("../migrations/0001_init.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            Cow::Borrowed("telemetry age index"),
            MigrationType::Simple,
            include_str!("../migrations/0002_telemetry_age.sql").into_sql_str(),
            false,
        ),
    ])
}

fn rows_changed(r: &sqlx::any::AnyQueryResult) -> bool {
    r.rows_affected() > 0
}

/// `New` if the statement changed a row, `Duplicate` if it was already there.
fn recorded(r: &sqlx::any::AnyQueryResult) -> Recorded {
    if rows_changed(r) {
        Recorded::New
    } else {
        Recorded::Duplicate
    }
}

impl Store {
    /// Connects and runs the migrations.
    pub async fn connect(url: &str, max_connections: Option<u32>) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        if sqlite
            && let Some(path) = url
                .strip_prefix("sqlite://")
                .map(|p| p.split('?').next().unwrap_or(p))
            && let Some(parent) = std::path::Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Db(sqlx::Error::Io(e)))?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.unwrap_or(if sqlite { 4 } else { 10 }))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // Checkpoints run in the background (below), not in the writer's
                        // commit; the automatic one stays as a bound on the WAL (64 MiB).
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 16384;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        migrator().run(&pool).await?;
        if sqlite {
            spawn_checkpointer(pool.clone());
        }
        Ok(Store {
            pool,
            backend: if sqlite { "sqlite" } else { "postgres" },
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
            admitted: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The pool (for tests and health checks).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The site and registry status of a device, if known.
    pub async fn device_site_status(&self, device: &str) -> Result<Option<(String, String)>> {
        let row = sqlx::query("SELECT site_id, status FROM devices WHERE id = $1")
            .bind(device)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| {
            (
                r.try_get::<String, _>(0).unwrap_or_default(),
                r.try_get::<String, _>(1).unwrap_or_default(),
            )
        }))
    }

    /// Adds a device to the registry (enrollment or first sight). Existing devices are left alone.
    pub async fn register_device(
        &self,
        site: &SiteId,
        device: &DeviceId,
        status: &str,
        now: i64,
    ) -> Result<bool> {
        let mut c = self.pool.acquire().await?;
        let _w = self.write_guard().await;
        self.register_device_in(&mut c, site, device, status, now)
            .await
    }

    /// Starts a batch of writes (one transaction). On SQLite, batches are serialised in-process
    /// (one writer at a time, no busy waiting).
    pub async fn begin(&self) -> Result<Batch<'_>> {
        let guard = self.write_guard().await;
        let tx = self.tx().await?;
        Ok(Batch { tx, _guard: guard })
    }

    /// A transaction; on SQLite `BEGIN IMMEDIATE`, so that a transaction which reads before it
    /// writes cannot fail with SQLITE_BUSY_SNAPSHOT (it waits for the write lock instead).
    async fn tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(if self.backend == "sqlite" {
            self.pool.begin_with("BEGIN IMMEDIATE").await?
        } else {
            self.pool.begin().await?
        })
    }

    async fn write_guard(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        if self.backend == "sqlite" {
            Some(self.write_lock.lock().await)
        } else {
            None
        }
    }

    fn cached(&self, device: &str) -> Option<(String, String)> {
        let cache = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(device)
            .filter(|(_, _, at)| at.elapsed() < ADMIT_CACHE_TTL)
            .map(|(s, st, _)| (s.clone(), st.clone()))
    }

    fn cache(&self, device: &str, site: &str, status: &str) {
        let mut cache = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(
            device.to_owned(),
            (
                site.to_owned(),
                status.to_owned(),
                std::time::Instant::now(),
            ),
        );
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
    pub async fn register_device_in(
        &self,
        c: &mut AnyConnection,
        site: &SiteId,
        device: &DeviceId,
        status: &str,
        now: i64,
    ) -> Result<bool> {
        self.ensure_site(c, site.as_str(), now).await?;
        let r = sqlx::query(
            "INSERT INTO devices (id, site_id, status, connection, events_received, created_ms, updated_ms) \
             VALUES ($1, $2, $3, 'unknown', 0, $4, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(device.as_str())
        .bind(site.as_str())
        .bind(status)
        .bind(now)
        .execute(&mut *c)
        .await?;
        Ok(rows_changed(&r))
    }

    /// Checks that a message from `site/device` may be recorded; registers unknown devices as
    /// `pending` (they appear in the console for approval).
    async fn admit(
        &self,
        c: &mut AnyConnection,
        site: &SiteId,
        device: &DeviceId,
        now: i64,
    ) -> Result<Option<&'static str>> {
        let known = match self.cached(device.as_str()) {
            Some(k) => Some(k),
            None => {
                let row = sqlx::query("SELECT site_id, status FROM devices WHERE id = $1")
                    .bind(device.as_str())
                    .fetch_optional(&mut *c)
                    .await?;
                let k = row.map(|r| {
                    (
                        r.try_get::<String, _>(0).unwrap_or_default(),
                        r.try_get::<String, _>(1).unwrap_or_default(),
                    )
                });
                if let Some((s, st)) = &k {
                    self.cache(device.as_str(), s, st);
                }
                k
            }
        };
        match known {
            None => {
                self.register_device_in(c, site, device, "pending", now)
                    .await?;
                self.cache(device.as_str(), site.as_str(), "pending");
                Ok(None)
            }
            Some((s, _)) if s != site.as_str() => Ok(Some("device is registered at another site")),
            Some((_, status)) if status == "revoked" || status == "decommissioned" => {
                Ok(Some("device is revoked or decommissioned"))
            }
            Some(_) => Ok(None),
        }
    }

    /// Records a birth: inventory, boot, online, peers.
    pub async fn record_birth(
        &self,
        c: &mut AnyConnection,
        site: &SiteId,
        device: &DeviceId,
        birth: &Birth,
        now: i64,
    ) -> Result<Recorded> {
        if let Some(why) = self.admit(c, site, device, now).await? {
            return Ok(Recorded::Refused(why));
        }
        let inventory = serde_json::to_string(&birth.inventory)?;
        sqlx::query(
            "UPDATE devices SET inventory = $1, boot_id = $2, telemetry_interval_secs = $3, running_config_version = $4, \
             connection = 'online', last_seen_ms = $5, updated_ms = $5 WHERE id = $6",
        )
        .bind(inventory)
        .bind(format!("{:016x}", birth.boot_id))
        .bind(i64::from(birth.telemetry_interval_secs))
        .bind(birth.config_version as i64)
        .bind(now)
        .bind(device.as_str())
        .execute(&mut *c)
        .await?;
        for peer in &birth.inventory.peers {
            self.upsert_peer(c, device, peer).await?;
        }
        Ok(Recorded::New)
    }

    /// Stores what the device last said of a peer. A `peer_seen` event and the birth's inventory
    /// both carry the whole state (modalities so far, acceptance and refusal of the last
    /// association); the one seen last on the device wins, so an event resent after a reconnect,
    /// or a retained birth read again, never replaces a newer state with an older one.
    async fn upsert_peer(&self, c: &mut AnyConnection, device: &DeviceId, p: &Peer) -> Result<()> {
        sqlx::query(
            "INSERT INTO peers (device_id, calling_ae, ip, called_ae, sop_classes, modalities, accepted, refusal, associations, last_seen_ms, approved) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0) \
             ON CONFLICT (device_id, calling_ae, ip) DO UPDATE SET called_ae = $4, sop_classes = $5, modalities = $6, \
             accepted = $7, refusal = $8, associations = $9, last_seen_ms = $10 \
             WHERE peers.last_seen_ms <= $10",
        )
        .bind(device.as_str())
        .bind(p.calling_ae.as_str())
        .bind(p.ip.to_string())
        .bind(p.called_ae.as_str())
        .bind(serde_json::to_string(&p.sop_classes)?)
        .bind(serde_json::to_string(&p.modalities)?)
        .bind(i64::from(p.accepted))
        .bind(p.refusal.and_then(|r| serde_json::to_value(r).ok().and_then(|v| v.as_str().map(str::to_owned))))
        .bind(p.associations as i64)
        .bind(p.last_seen_ms as i64)
        .execute(&mut *c)
        .await?;
        Ok(())
    }

    /// Records the retained state (online / offline, the last will).
    pub async fn record_state(
        &self,
        c: &mut AnyConnection,
        site: &SiteId,
        device: &DeviceId,
        state: DeviceState,
        now: i64,
    ) -> Result<Recorded> {
        if let Some(why) = self.admit(c, site, device, now).await? {
            return Ok(Recorded::Refused(why));
        }
        let s = match state {
            DeviceState::Online => "online",
            DeviceState::Offline => "offline",
        };
        let r = sqlx::query("UPDATE devices SET connection = $1, updated_ms = $2 WHERE id = $3 AND connection <> $1")
            .bind(s)
            .bind(now)
            .bind(device.as_str())
            .execute(&mut *c)
            .await?;
        if state == DeviceState::Online {
            sqlx::query("UPDATE devices SET last_seen_ms = $1 WHERE id = $2")
                .bind(now)
                .bind(device.as_str())
                .execute(&mut *c)
                .await?;
        }
        Ok(recorded(&r))
    }

    /// Records telemetry (deduplicated by device and send time) and the heartbeat.
    pub async fn record_telemetry(
        &self,
        c: &mut AnyConnection,
        site: &SiteId,
        device: &DeviceId,
        t: &Telemetry,
        now: i64,
    ) -> Result<Recorded> {
        if let Some(why) = self.admit(c, site, device, now).await? {
            return Ok(Recorded::Refused(why));
        }
        let r = sqlx::query(
            "INSERT INTO telemetry (device_id, ts_ms, bucket_secs, data) VALUES ($1, $2, 0, $3) ON CONFLICT DO NOTHING",
        )
        .bind(device.as_str())
        .bind(t.sent_at_ms as i64)
        .bind(serde_json::to_string(&t.snapshot)?)
        .execute(&mut *c)
        .await?;
        sqlx::query("UPDATE devices SET last_seen_ms = $1, connection = 'online' WHERE id = $2")
            .bind(now)
            .bind(device.as_str())
            .execute(&mut *c)
            .await?;
        Ok(recorded(&r))
    }

    /// Checks that a message from `site/device` may be recorded (registering an unknown device
    /// as `pending`); `Some(reason)` if refused. For [`Store::record_telemetry_many`].
    pub async fn admit_device(
        &self,
        c: &mut AnyConnection,
        site: &SiteId,
        device: &DeviceId,
        now: i64,
    ) -> Result<Option<&'static str>> {
        self.admit(c, site, device, now).await
    }

    /// Records telemetry samples of admitted devices ([`Store::admit_device`]) in a few
    /// statements: multi-row inserts (deduplicated by device and send time, as
    /// [`Store::record_telemetry`]) and one heartbeat update for their devices. Returns, per
    /// sample in order, `New` or `Duplicate` (a repeat within `rows` is a duplicate).
    pub async fn record_telemetry_many(
        &self,
        c: &mut AnyConnection,
        rows: &[(&DeviceId, &Telemetry)],
        now: i64,
    ) -> Result<Vec<Recorded>> {
        let mut inserted: HashSet<(String, i64)> = HashSet::with_capacity(rows.len());
        let mut rest = rows;
        while !rest.is_empty() {
            let (sql, n) = telemetry_insert_sql(rest.len());
            let mut q = sqlx::query(sql);
            for (device, t) in &rest[..n] {
                q = q
                    .bind(device.as_str())
                    .bind(t.sent_at_ms as i64)
                    .bind(serde_json::to_string(&t.snapshot)?);
            }
            for r in q.fetch_all(&mut *c).await? {
                inserted.insert((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?));
            }
            rest = &rest[n..];
        }
        let mut devices: Vec<&str> = rows.iter().map(|(d, _)| d.as_str()).collect();
        devices.sort_unstable();
        devices.dedup();
        let mut rest = devices.as_slice();
        while !rest.is_empty() {
            let (sql, n) = heartbeat_update_sql(rest.len());
            let mut q = sqlx::query(sql).bind(now);
            for d in &rest[..n] {
                q = q.bind(*d);
            }
            q.execute(&mut *c).await?;
            rest = &rest[n..];
        }
        Ok(rows
            .iter()
            .map(|(d, t)| {
                if inserted.remove(&(d.as_str().to_owned(), t.sent_at_ms as i64)) {
                    Recorded::New
                } else {
                    Recorded::Duplicate
                }
            })
            .collect())
    }

    /// Records events of admitted devices ([`Store::admit_device`]) in a few statements, as
    /// [`Store::record_event`] does one by one: stored once per (device, id) (multi-row insert),
    /// the device's count of events incremented by its new ones only, peers of `peer_seen`
    /// events upserted. Returns, per event in order, `New` or `Duplicate`.
    pub async fn record_events_many(
        &self,
        c: &mut AnyConnection,
        rows: &[(&DeviceId, &Event)],
        now: i64,
    ) -> Result<Vec<Recorded>> {
        let ids: Vec<String> = rows.iter().map(|(_, e)| e.id.to_string()).collect();
        let mut inserted: HashSet<(String, String)> = HashSet::with_capacity(rows.len());
        let mut start = 0;
        while start < rows.len() {
            let (sql, n) = event_insert_sql(rows.len() - start);
            let mut q = sqlx::query(sql);
            for ((device, e), id) in rows[start..start + n].iter().zip(&ids[start..start + n]) {
                let kind = serde_json::to_value(&e.event)?
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("other")
                    .to_owned();
                q = q
                    .bind(device.as_str())
                    .bind(id.clone())
                    .bind(e.at_ms as i64)
                    .bind(now)
                    .bind(kind)
                    .bind(serde_json::to_string(&e.event)?);
            }
            for r in q.fetch_all(&mut *c).await? {
                inserted.insert((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?));
            }
            start += n;
        }
        let mut new_per_device: HashMap<&str, i64> = HashMap::new();
        let results: Vec<Recorded> = rows
            .iter()
            .zip(&ids)
            .map(|((device, _), id)| {
                if inserted.remove(&(device.as_str().to_owned(), id.clone())) {
                    *new_per_device.entry(device.as_str()).or_default() += 1;
                    Recorded::New
                } else {
                    Recorded::Duplicate
                }
            })
            .collect();
        // One statement per distinct number of new events (nearly always 1).
        let mut by_count: std::collections::BTreeMap<i64, Vec<&str>> = Default::default();
        for (device, n) in new_per_device {
            by_count.entry(n).or_default().push(device);
        }
        for (n, devices) in by_count {
            let mut rest = devices.as_slice();
            while !rest.is_empty() {
                let (sql, k) = events_count_update_sql(rest.len());
                let mut q = sqlx::query(sql).bind(n);
                for d in &rest[..k] {
                    q = q.bind(*d);
                }
                q.execute(&mut *c).await?;
                rest = &rest[k..];
            }
        }
        for ((device, e), r) in rows.iter().zip(&results) {
            if let (Recorded::New, EventBody::PeerSeen(p)) = (r, &e.event) {
                self.upsert_peer(c, device, p).await?;
            }
        }
        Ok(results)
    }

    /// Records an event, once per (device, id); counts it on the device.
    pub async fn record_event(
        &self,
        c: &mut AnyConnection,
        site: &SiteId,
        device: &DeviceId,
        e: &Event,
        now: i64,
    ) -> Result<Recorded> {
        if let Some(why) = self.admit(c, site, device, now).await? {
            return Ok(Recorded::Refused(why));
        }
        let kind = serde_json::to_value(&e.event)?
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("other")
            .to_owned();
        let r = sqlx::query(
            "INSERT INTO events (device_id, event_id, at_ms, received_ms, kind, data) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (device_id, event_id) DO NOTHING",
        )
        .bind(device.as_str())
        .bind(e.id.to_string())
        .bind(e.at_ms as i64)
        .bind(now)
        .bind(kind)
        .bind(serde_json::to_string(&e.event)?)
        .execute(&mut *c)
        .await?;
        if !rows_changed(&r) {
            return Ok(Recorded::Duplicate);
        }
        sqlx::query("UPDATE devices SET events_received = events_received + 1 WHERE id = $1")
            .bind(device.as_str())
            .execute(&mut *c)
            .await?;
        if let EventBody::PeerSeen(p) = &e.event {
            self.upsert_peer(c, device, p).await?;
        }
        Ok(Recorded::New)
    }

    /// Records a command acknowledgement; states only move forward.
    pub async fn record_ack(
        &self,
        c: &mut AnyConnection,
        device: &DeviceId,
        ack: &CommandAck,
        now: i64,
    ) -> Result<Recorded> {
        let (status, from): (&str, &[&str]) = match ack.status {
            CommandStatus::Accepted => ("accepted", &["queued"]),
            CommandStatus::Succeeded => ("succeeded", &["queued", "accepted"]),
            CommandStatus::Failed => ("failed", &["queued", "accepted"]),
            CommandStatus::Rejected => ("rejected", &["queued", "accepted"]),
            CommandStatus::Expired => ("expired", &["queued", "accepted"]),
        };
        let r = sqlx::query(
            "UPDATE commands SET status = $1, code = $2, output = $3, updated_ms = $4 \
             WHERE id = $5 AND device_id = $6 AND (status = $7 OR status = $8)",
        )
        .bind(status)
        .bind(ack.code.as_ref().map(|c| c.as_str().to_owned()))
        .bind(serde_json::to_string(&ack.output)?)
        .bind(now)
        .bind(ack.id.as_str())
        .bind(device.as_str())
        .bind(from[0])
        .bind(from.get(1).copied().unwrap_or(from[0]))
        .execute(&mut *c)
        .await?;
        Ok(recorded(&r))
    }

    /// Records the reported configuration.
    pub async fn record_reported(
        &self,
        c: &mut AnyConnection,
        site: &SiteId,
        device: &DeviceId,
        r: &ReportedConfig,
        now: i64,
    ) -> Result<Recorded> {
        if let Some(why) = self.admit(c, site, device, now).await? {
            return Ok(Recorded::Refused(why));
        }
        let status = serde_json::to_value(r.status)?
            .as_str()
            .unwrap_or("unknown")
            .to_owned();
        sqlx::query(
            "INSERT INTO device_reported (device_id, running_version, desired_version, status, problems, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (device_id) DO UPDATE SET running_version = $2, \
             desired_version = $3, status = $4, problems = $5, at_ms = $6",
        )
        .bind(device.as_str())
        .bind(r.running_version as i64)
        .bind(r.desired_version as i64)
        .bind(status)
        .bind(serde_json::to_string(&r.problems)?)
        .bind(r.at_ms as i64)
        .execute(&mut *c)
        .await?;
        sqlx::query("UPDATE devices SET running_config_version = $1 WHERE id = $2")
            .bind(r.running_version as i64)
            .bind(device.as_str())
            .execute(&mut *c)
            .await?;
        Ok(Recorded::New)
    }

    /// Marks online devices silent for `missed` telemetry intervals as offline; returns them.
    pub async fn sweep_offline(&self, missed: u64, now: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT id FROM devices WHERE connection = 'online' AND last_seen_ms IS NOT NULL \
             AND last_seen_ms + COALESCE(telemetry_interval_secs, 60) * 1000 * $1 < $2",
        )
        .bind(missed as i64)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let ids: Vec<String> = rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>(0).ok())
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
                "UPDATE devices SET connection = 'offline', updated_ms = $1 WHERE id = $2 AND connection = 'online' \
                 AND last_seen_ms + COALESCE(telemetry_interval_secs, 60) * 1000 * $3 < $1",
            )
            .bind(now)
            .bind(&id)
            .bind(missed as i64)
            .execute(&mut *tx)
            .await?;
            if rows_changed(&r) {
                offline.push(id);
            }
        }
        tx.commit().await?;
        Ok(offline)
    }

    /// Folds raw telemetry older than `raw_before` into `bucket_secs` buckets (the last sample of
    /// each bucket: counters are cumulative) and deletes buckets older than `buckets_before`.
    /// Returns (raw rows folded, buckets deleted).
    ///
    /// Set-based, oldest window first, one transaction per bucket window and group of up to
    /// 128 devices: two statements fold the group's samples of the window through the primary
    /// key (device, bucket, time), so the work grows with windows and groups, not with rows, and
    /// ingestion, which shares SQLite's write lock, waits at most one group's fold (about 4,000
    /// rows, ~30 ms, at 5,000 devices sending every 10 s). A window cut by `raw_before` is folded
    /// again with its later samples on the next call (the bucket is updated to the later sample).
    pub async fn downsample(
        &self,
        raw_before: i64,
        bucket_secs: u64,
        buckets_before: i64,
    ) -> Result<(u64, u64)> {
        /// Windows folded per call at most (the next call goes on).
        const MAX_WINDOWS: usize = 1000;
        let bucket_ms = (bucket_secs * 1000) as i64;
        let mut folded = 0;
        for _ in 0..MAX_WINDOWS {
            let oldest: Option<i64> = sqlx::query(
                "SELECT MIN(ts_ms) FROM telemetry WHERE bucket_secs = 0 AND ts_ms < $1",
            )
            .bind(raw_before)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
            let Some(oldest) = oldest else { break };
            let start = oldest - oldest.rem_euclid(bucket_ms);
            let end = (start + bucket_ms).min(raw_before);
            let devices: Vec<String> = sqlx::query(
                "SELECT DISTINCT device_id FROM telemetry WHERE bucket_secs = 0 AND ts_ms >= $1 AND ts_ms < $2",
            )
            .bind(start)
            .bind(end)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
            let mut rest = devices.as_slice();
            while !rest.is_empty() {
                let (insert, n) = fold_insert_sql(rest.len());
                let (delete, _) = fold_delete_sql(n);
                let _w = self.write_guard().await;
                let mut tx = self.tx().await?;
                let mut q = sqlx::query(insert)
                    .bind(start)
                    .bind(end)
                    .bind(bucket_secs as i64);
                for d in &rest[..n] {
                    q = q.bind(d.as_str());
                }
                q.execute(&mut *tx).await?;
                let mut q = sqlx::query(delete).bind(start).bind(end);
                for d in &rest[..n] {
                    q = q.bind(d.as_str());
                }
                folded += q.execute(&mut *tx).await?.rows_affected();
                tx.commit().await?;
                rest = &rest[n..];
            }
        }
        let _w = self.write_guard().await;
        let r = sqlx::query("DELETE FROM telemetry WHERE bucket_secs > 0 AND ts_ms < $1")
            .bind(buckets_before)
            .execute(&self.pool)
            .await?;
        Ok((folded, r.rows_affected()))
    }

    // ---- reads for the API ----

    /// Every device, as JSON objects for the API and the live feed.
    pub async fn devices(&self, site: Option<&str>) -> Result<Vec<Value>> {
        self.devices_where(site.unwrap_or(""), "").await
    }

    async fn devices_where(&self, site: &str, id: &str) -> Result<Vec<Value>> {
        let rows = sqlx::query(
            "SELECT d.id, d.site_id, d.room, d.status, d.connection, d.last_seen_ms, d.inventory, d.running_config_version, \
             d.events_received, dd.version, r.desired_version, r.status, r.running_version \
             FROM devices d LEFT JOIN device_desired dd ON dd.device_id = d.id LEFT JOIN device_reported r ON r.device_id = d.id \
             WHERE ($1 = '' OR d.site_id = $1) AND ($2 = '' OR d.id = $2) ORDER BY d.site_id, d.id",
        )
        .bind(site)
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        // Tags of every device in one query.
        let tag_rows = sqlx::query("SELECT device_id, tag FROM device_tags WHERE ($1 = '' OR device_id = $1) ORDER BY device_id, tag")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        let mut tags: HashMap<String, Vec<String>> = HashMap::new();
        for r in tag_rows {
            tags.entry(r.try_get(0)?).or_default().push(r.try_get(1)?);
        }
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: String = r.try_get(0)?;
            out.push(device_json(&r, tags.remove(&id).unwrap_or_default())?);
        }
        Ok(out)
    }

    /// One device.
    pub async fn device(&self, id: &str) -> Result<Option<Value>> {
        if id.is_empty() {
            return Ok(None);
        }
        Ok(self.devices_where("", id).await?.into_iter().next())
    }

    /// Tags of a device.
    pub async fn tags(&self, device: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT tag FROM device_tags WHERE device_id = $1 ORDER BY tag")
            .bind(device)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>(0).ok())
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

    /// Sets the registry status (approved, revoked, decommissioned). False if no such device.
    pub async fn set_device_status(&self, device: &str, status: &str, now: i64) -> Result<bool> {
        self.forget(device);
        let r = sqlx::query("UPDATE devices SET status = $1, updated_ms = $2 WHERE id = $3")
            .bind(status)
            .bind(now)
            .bind(device)
            .execute(&self.pool)
            .await?;
        Ok(rows_changed(&r))
    }

    /// Serials (hex) of the certificates of revoked and decommissioned devices, with when their
    /// status changed (Unix ms).
    pub async fn revoked_serials(&self) -> Result<Vec<(String, u64)>> {
        let rows = sqlx::query(
            "SELECT cert_serial, updated_ms FROM devices \
             WHERE status IN ('revoked', 'decommissioned') AND cert_serial IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let at: i64 = r.try_get(1)?;
                Ok((r.try_get(0)?, at.max(0) as u64))
            })
            .collect()
    }

    /// Records the serial of the certificate issued to a device.
    pub async fn set_cert_serial(&self, device: &str, serial: &str) -> Result<()> {
        sqlx::query("UPDATE devices SET cert_serial = $1 WHERE id = $2")
            .bind(serial)
            .bind(device)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sites with device counts.
    pub async fn sites(&self) -> Result<Vec<Value>> {
        let rows = sqlx::query(
            "SELECT s.id, s.name, s.created_ms, \
             (SELECT COUNT(*) FROM devices d WHERE d.site_id = s.id), \
             (SELECT COUNT(*) FROM devices d WHERE d.site_id = s.id AND d.connection = 'online') \
             FROM sites s ORDER BY s.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(json!({
                    "id": r.try_get::<String, _>(0)?, "name": r.try_get::<String, _>(1)?,
                    "created_ms": r.try_get::<i64, _>(2)?, "devices": r.try_get::<i64, _>(3)?,
                    "online": r.try_get::<i64, _>(4)?,
                }))
            })
            .collect()
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

    /// Events, newest first.
    pub async fn events(
        &self,
        device: Option<&str>,
        since_ms: i64,
        limit: i64,
    ) -> Result<Vec<Value>> {
        let rows = sqlx::query(
            "SELECT device_id, event_id, at_ms, received_ms, kind, data FROM events \
             WHERE ($1 = '' OR device_id = $1) AND received_ms >= $2 ORDER BY received_ms DESC, event_id DESC LIMIT $3",
        )
        .bind(device.unwrap_or(""))
        .bind(since_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(json!({
                    "device": r.try_get::<String, _>(0)?, "id": r.try_get::<String, _>(1)?,
                    "at_ms": r.try_get::<i64, _>(2)?, "received_ms": r.try_get::<i64, _>(3)?,
                    "type": r.try_get::<String, _>(4)?,
                    "event": serde_json::from_str::<Value>(&r.try_get::<String, _>(5)?)?,
                }))
            })
            .collect()
    }

    /// Number of distinct events stored for a device.
    pub async fn event_count(&self, device: &str) -> Result<i64> {
        let r = sqlx::query("SELECT COUNT(*) FROM events WHERE device_id = $1")
            .bind(device)
            .fetch_one(&self.pool)
            .await?;
        Ok(r.try_get(0)?)
    }

    /// Telemetry history of a device between two times (raw and buckets), oldest first.
    pub async fn telemetry(
        &self,
        device: &str,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> Result<Vec<Value>> {
        let rows = sqlx::query(
            "SELECT ts_ms, bucket_secs, data FROM telemetry WHERE device_id = $1 AND ts_ms >= $2 AND ts_ms <= $3 \
             ORDER BY ts_ms LIMIT $4",
        )
        .bind(device)
        .bind(from_ms)
        .bind(to_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(json!({
                    "ts_ms": r.try_get::<i64, _>(0)?, "bucket_secs": r.try_get::<i64, _>(1)?,
                    "data": serde_json::from_str::<Value>(&r.try_get::<String, _>(2)?)?,
                }))
            })
            .collect()
    }

    /// Creates a command row (`queued`).
    pub async fn create_command(
        &self,
        id: &str,
        device: &str,
        action: &Value,
        expires_ms: Option<i64>,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO commands (id, device_id, action, status, created_ms, updated_ms, expires_ms) VALUES ($1, $2, $3, 'queued', $4, $4, $5)",
        )
        .bind(id)
        .bind(device)
        .bind(action.to_string())
        .bind(now)
        .bind(expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Commands, newest first.
    pub async fn commands(&self, device: Option<&str>, limit: i64) -> Result<Vec<Value>> {
        let rows = sqlx::query(
            "SELECT id, device_id, action, status, code, output, created_ms, updated_ms, expires_ms FROM commands \
             WHERE ($1 = '' OR device_id = $1) ORDER BY created_ms DESC, id LIMIT $2",
        )
        .bind(device.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(command_json).collect()
    }

    /// One command.
    pub async fn command(&self, id: &str) -> Result<Option<Value>> {
        let row = sqlx::query(
            "SELECT id, device_id, action, status, code, output, created_ms, updated_ms, expires_ms FROM commands WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(command_json).transpose()
    }

    // ---- configuration ----

    /// Stores a configuration document for a scope (`device`, `site`, `tag`) and target.
    pub async fn put_config_document(
        &self,
        scope: &str,
        target: &str,
        config: &Value,
        now: i64,
    ) -> Result<i64> {
        let mut tx = self.tx().await?;
        let prev =
            sqlx::query("SELECT revision FROM config_documents WHERE scope = $1 AND target = $2")
                .bind(scope)
                .bind(target)
                .fetch_optional(&mut *tx)
                .await?;
        let revision = prev
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?
            .unwrap_or(0)
            + 1;
        sqlx::query(
            "INSERT INTO config_documents (scope, target, revision, config, updated_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (scope, target) DO UPDATE SET revision = $3, config = $4, updated_ms = $5",
        )
        .bind(scope)
        .bind(target)
        .bind(revision)
        .bind(config.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(revision)
    }

    /// The configuration document that applies to a device: its own, else its first tag's (by
    /// name) that has one, else its site's. Returns (source, config).
    pub async fn effective_config(&self, device: &str) -> Result<Option<(String, Value)>> {
        let Some((site, _)) = self.device_site_status(device).await? else {
            return Ok(None);
        };
        let mut candidates = vec![("device".to_owned(), device.to_owned())];
        for t in self.tags(device).await? {
            candidates.push(("tag".to_owned(), t));
        }
        candidates.push(("site".to_owned(), site));
        for (scope, target) in candidates {
            let row =
                sqlx::query("SELECT config FROM config_documents WHERE scope = $1 AND target = $2")
                    .bind(&scope)
                    .bind(&target)
                    .fetch_optional(&self.pool)
                    .await?;
            if let Some(r) = row {
                let config: Value = serde_json::from_str(&r.try_get::<String, _>(0)?)?;
                return Ok(Some((format!("{scope}:{target}"), config)));
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
        config: &Value,
        now: i64,
    ) -> Result<(i64, bool)> {
        let mut tx = self.tx().await?;
        let prev = sqlx::query("SELECT version, config FROM device_desired WHERE device_id = $1")
            .bind(device)
            .fetch_optional(&mut *tx)
            .await?;
        let (prev_version, prev_config) = match prev {
            Some(r) => (
                r.try_get::<i64, _>(0)?,
                Some(serde_json::from_str::<Value>(&r.try_get::<String, _>(1)?)?),
            ),
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
        .bind(config.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((version, true))
    }

    /// Desired and reported configuration of a device, with drift.
    pub async fn device_config(&self, device: &str) -> Result<Value> {
        let desired = sqlx::query(
            "SELECT version, source, config, updated_ms FROM device_desired WHERE device_id = $1",
        )
        .bind(device)
        .fetch_optional(&self.pool)
        .await?;
        let reported = sqlx::query(
            "SELECT running_version, desired_version, status, problems, at_ms FROM device_reported WHERE device_id = $1",
        )
        .bind(device)
        .fetch_optional(&self.pool)
        .await?;
        let desired = match desired {
            Some(r) => json!({
                "version": r.try_get::<i64, _>(0)?, "source": r.try_get::<String, _>(1)?,
                "config": serde_json::from_str::<Value>(&r.try_get::<String, _>(2)?)?, "updated_ms": r.try_get::<i64, _>(3)?,
            }),
            None => Value::Null,
        };
        let reported = match reported {
            Some(r) => json!({
                "running_version": r.try_get::<i64, _>(0)?, "desired_version": r.try_get::<i64, _>(1)?,
                "status": r.try_get::<String, _>(2)?,
                "problems": serde_json::from_str::<Value>(&r.try_get::<String, _>(3)?)?, "at_ms": r.try_get::<i64, _>(4)?,
            }),
            None => Value::Null,
        };
        let drift = drift(&desired, &reported);
        Ok(json!({ "desired": desired, "reported": reported, "drift": drift }))
    }

    /// Devices of a site, or with a tag.
    pub async fn devices_in(&self, scope: &str, target: &str) -> Result<Vec<String>> {
        let rows = match scope {
            "site" => {
                sqlx::query("SELECT id FROM devices WHERE site_id = $1")
                    .bind(target)
                    .fetch_all(&self.pool)
                    .await?
            }
            "tag" => {
                sqlx::query("SELECT device_id FROM device_tags WHERE tag = $1")
                    .bind(target)
                    .fetch_all(&self.pool)
                    .await?
            }
            _ => {
                sqlx::query("SELECT id FROM devices WHERE id = $1")
                    .bind(target)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        Ok(rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>(0).ok())
            .collect())
    }

    // ---- peers ----

    /// Calling AEs a device has seen.
    pub async fn peers(&self, device: &str) -> Result<Vec<Value>> {
        let rows = sqlx::query(
            "SELECT calling_ae, ip, called_ae, sop_classes, modalities, accepted, refusal, associations, last_seen_ms, approved \
             FROM peers WHERE device_id = $1 ORDER BY calling_ae, ip",
        )
        .bind(device)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(json!({
                    "calling_ae": r.try_get::<String, _>(0)?, "ip": r.try_get::<String, _>(1)?,
                    "called_ae": r.try_get::<String, _>(2)?,
                    "sop_classes": serde_json::from_str::<Value>(&r.try_get::<String, _>(3)?)?,
                    "modalities": serde_json::from_str::<Value>(&r.try_get::<String, _>(4)?)?,
                    "accepted": r.try_get::<i64, _>(5)? != 0, "refusal": r.try_get::<Option<String>, _>(6)?,
                    "associations": r.try_get::<i64, _>(7)?, "last_seen_ms": r.try_get::<i64, _>(8)?,
                    "approved": r.try_get::<i64, _>(9)? != 0,
                }))
            })
            .collect()
    }

    /// Marks a calling AE approved on a device. False if it was never seen there.
    pub async fn approve_peer(&self, device: &str, calling_ae: &str) -> Result<bool> {
        let r =
            sqlx::query("UPDATE peers SET approved = 1 WHERE device_id = $1 AND calling_ae = $2")
                .bind(device)
                .bind(calling_ae)
                .execute(&self.pool)
                .await?;
        Ok(rows_changed(&r))
    }

    // ---- claim tokens ----

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

    /// Uses a claim token once: returns its (site, device) if it was valid and unused. Atomic:
    /// of two replicas or two requests, one wins.
    pub async fn use_claim(&self, token_hash: &str, now: i64) -> Result<Option<(String, String)>> {
        let r = sqlx::query("UPDATE claim_tokens SET used_ms = $1 WHERE token_hash = $2 AND used_ms IS NULL AND expires_ms > $1")
            .bind(now)
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        if !rows_changed(&r) {
            return Ok(None);
        }
        let row = sqlx::query("SELECT site_id, device_id FROM claim_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_one(&self.pool)
            .await?;
        Ok(Some((row.try_get(0)?, row.try_get(1)?)))
    }

    /// Counts for /metrics: devices by connection, events, commands by status, each with the
    /// help text that says what it counts.
    pub async fn gauges(&self) -> Result<Vec<crate::metrics::Gauge>> {
        let mut out = Vec::new();
        for (name, help, sql) in [
            (
                "devices_online",
                "Devices connected now (their last state message is online)",
                "SELECT COUNT(*) FROM devices WHERE connection = 'online'",
            ),
            (
                "devices_offline",
                "Devices not connected (last will, clean shutdown or missed heartbeats)",
                "SELECT COUNT(*) FROM devices WHERE connection = 'offline'",
            ),
            (
                "devices_pending",
                "Devices that reported without enrollment and wait for approval",
                "SELECT COUNT(*) FROM devices WHERE status = 'pending'",
            ),
            (
                "devices_total",
                "Devices in the registry, whatever their status",
                "SELECT COUNT(*) FROM devices",
            ),
            (
                "events_stored",
                "Device events held in the database",
                "SELECT COUNT(*) FROM events",
            ),
            (
                "commands_open",
                "Commands queued or accepted by their device and not finished yet",
                "SELECT COUNT(*) FROM commands WHERE status = 'queued' OR status = 'accepted'",
            ),
        ] {
            let r = sqlx::query(sql).fetch_one(&self.pool).await?;
            out.push(crate::metrics::Gauge {
                name,
                help,
                value: r.try_get::<i64, _>(0)?,
            });
        }
        Ok(out)
    }
}

/// SQLite: copies the WAL into the database (and fsyncs both) every half second from a pool
/// connection, outside the writers' lock. A checkpoint in the writer's own commit (SQLite's
/// automatic one, every 4 MiB of WAL by default) made every writer wait for those fsyncs: on this
/// project's VM disk that, not the CPU, capped ingestion. PASSIVE never waits for readers or
/// writers.
fn spawn_checkpointer(pool: AnyPool) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !pool.is_closed() {
            tick.tick().await;
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                if pool.is_closed() {
                    break;
                }
                tracing::warn!(error = %e, "SQLite checkpoint failed; retrying");
            }
        }
    });
}

/// Rows per multi-row statement: powers of two up to this, so that a handful of statement texts
/// cover every batch (each is prepared once per connection and cached).
const MULTI_ROW_MAX: usize = 128;

/// The largest power of two <= min(n, MULTI_ROW_MAX); n >= 1.
fn multi_row_chunk(n: usize) -> usize {
    let n = n.clamp(1, MULTI_ROW_MAX);
    1 << (usize::BITS - 1 - n.leading_zeros())
}

/// Statement texts for 1, 2, 4 … MULTI_ROW_MAX rows, built once.
fn multi_row_sql(
    cell: &'static OnceLock<Vec<&'static str>>,
    build: fn(usize) -> String,
    n: usize,
) -> (&'static str, usize) {
    let texts = cell.get_or_init(|| {
        let mut v = Vec::new();
        let mut k = 1;
        while k <= MULTI_ROW_MAX {
            // Leaked once per process: a few static statement texts.
            v.push(&*build(k).leak());
            k *= 2;
        }
        v
    });
    let k = multi_row_chunk(n);
    (texts[k.trailing_zeros() as usize], k)
}

/// `$first, $first+1, …` for `k` parameters.
fn params(first: usize, k: usize) -> String {
    (first..first + k)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Downsampling: the last raw sample in `[$1, $2)` of each of up to `n` devices (`$4…`) into the
/// bucket `$1` of width `$3`; returns the text and its device count.
fn fold_insert_sql(n: usize) -> (&'static str, usize) {
    static TEXTS: OnceLock<Vec<&'static str>> = OnceLock::new();
    multi_row_sql(
        &TEXTS,
        |k| {
            format!(
                "INSERT INTO telemetry (device_id, ts_ms, bucket_secs, data) \
                 SELECT t.device_id, $1, $3, t.data FROM telemetry t \
                 WHERE t.device_id IN ({}) AND t.bucket_secs = 0 AND t.ts_ms >= $1 AND t.ts_ms < $2 \
                 AND t.ts_ms = (SELECT MAX(u.ts_ms) FROM telemetry u \
                   WHERE u.device_id = t.device_id AND u.bucket_secs = 0 AND u.ts_ms >= $1 AND u.ts_ms < $2) \
                 ON CONFLICT (device_id, bucket_secs, ts_ms) DO UPDATE SET data = excluded.data",
                params(4, k)
            )
        },
        n,
    )
}

/// Downsampling: deletes the raw samples in `[$1, $2)` of up to `n` devices (`$3…`).
fn fold_delete_sql(n: usize) -> (&'static str, usize) {
    static TEXTS: OnceLock<Vec<&'static str>> = OnceLock::new();
    multi_row_sql(
        &TEXTS,
        |k| {
            format!(
                "DELETE FROM telemetry WHERE device_id IN ({}) AND bucket_secs = 0 AND ts_ms >= $1 AND ts_ms < $2",
                params(3, k)
            )
        },
        n,
    )
}

/// `INSERT … telemetry … VALUES (…), … ON CONFLICT DO NOTHING RETURNING device_id, ts_ms` for
/// up to `n` rows; returns the text and its row count.
fn telemetry_insert_sql(n: usize) -> (&'static str, usize) {
    static TEXTS: OnceLock<Vec<&'static str>> = OnceLock::new();
    multi_row_sql(
        &TEXTS,
        |k| {
            let values: Vec<String> = (0..k)
                .map(|i| format!("(${}, ${}, 0, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
                .collect();
            format!(
                "INSERT INTO telemetry (device_id, ts_ms, bucket_secs, data) VALUES {} \
                 ON CONFLICT DO NOTHING RETURNING device_id, ts_ms",
                values.join(", ")
            )
        },
        n,
    )
}

/// `UPDATE devices SET last_seen_ms = $1, connection = 'online' WHERE id IN (…)` for up to `n`
/// devices; returns the text and its device count.
fn heartbeat_update_sql(n: usize) -> (&'static str, usize) {
    static TEXTS: OnceLock<Vec<&'static str>> = OnceLock::new();
    multi_row_sql(
        &TEXTS,
        |k| {
            format!(
                "UPDATE devices SET last_seen_ms = $1, connection = 'online' WHERE id IN ({})",
                id_params(k)
            )
        },
        n,
    )
}

/// `UPDATE devices SET events_received = events_received + $1 WHERE id IN (…)` for up to `n`
/// devices; returns the text and its device count.
fn events_count_update_sql(n: usize) -> (&'static str, usize) {
    static TEXTS: OnceLock<Vec<&'static str>> = OnceLock::new();
    multi_row_sql(
        &TEXTS,
        |k| {
            format!(
                "UPDATE devices SET events_received = events_received + $1 WHERE id IN ({})",
                id_params(k)
            )
        },
        n,
    )
}

/// `$2, $3, … ${k + 1}`.
fn id_params(k: usize) -> String {
    (0..k)
        .map(|i| format!("${}", i + 2))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `INSERT … events … VALUES (…), … ON CONFLICT DO NOTHING RETURNING device_id, event_id` for up
/// to `n` rows; returns the text and its row count.
fn event_insert_sql(n: usize) -> (&'static str, usize) {
    static TEXTS: OnceLock<Vec<&'static str>> = OnceLock::new();
    multi_row_sql(
        &TEXTS,
        |k| {
            let values: Vec<String> = (0..k)
                .map(|i| {
                    let p: Vec<String> = (1..=6).map(|j| format!("${}", 6 * i + j)).collect();
                    format!("({})", p.join(", "))
                })
                .collect();
            format!(
                "INSERT INTO events (device_id, event_id, at_ms, received_ms, kind, data) VALUES {} \
                 ON CONFLICT (device_id, event_id) DO NOTHING RETURNING device_id, event_id",
                values.join(", ")
            )
        },
        n,
    )
}

fn device_json(r: &AnyRow, tags: Vec<String>) -> Result<Value> {
    let inventory: Option<String> = r.try_get(6)?;
    let desired_version: Option<i64> = r.try_get(9)?;
    let reported_desired: Option<i64> = r.try_get(10)?;
    let reported_status: Option<String> = r.try_get(11)?;
    let drift = match (
        desired_version,
        reported_desired,
        reported_status.as_deref(),
    ) {
        (None, _, _) => "none",
        (Some(d), Some(rd), Some("applied")) if d == rd => "in_sync",
        (Some(d), Some(rd), Some(_)) if d == rd => "failed",
        _ => "pending",
    };
    Ok(json!({
        "id": r.try_get::<String, _>(0)?,
        "site": r.try_get::<String, _>(1)?,
        "room": r.try_get::<Option<String>, _>(2)?,
        "status": r.try_get::<String, _>(3)?,
        "connection": r.try_get::<String, _>(4)?,
        "last_seen_ms": r.try_get::<Option<i64>, _>(5)?,
        "inventory": inventory.map(|i| serde_json::from_str::<Value>(&i)).transpose()?,
        "running_config_version": r.try_get::<Option<i64>, _>(7)?,
        "events_received": r.try_get::<i64, _>(8)?,
        "desired_config_version": desired_version,
        "config_drift": drift,
        "tags": tags,
    }))
}

fn command_json(r: &AnyRow) -> Result<Value> {
    let output: Option<String> = r.try_get(5)?;
    Ok(json!({
        "id": r.try_get::<String, _>(0)?, "device": r.try_get::<String, _>(1)?,
        "action": serde_json::from_str::<Value>(&r.try_get::<String, _>(2)?)?,
        "status": r.try_get::<String, _>(3)?, "code": r.try_get::<Option<String>, _>(4)?,
        "output": output.map(|o| serde_json::from_str::<Value>(&o)).transpose()?,
        "created_ms": r.try_get::<i64, _>(6)?, "updated_ms": r.try_get::<i64, _>(7)?,
        "expires_ms": r.try_get::<Option<i64>, _>(8)?,
    }))
}

fn drift(desired: &Value, reported: &Value) -> &'static str {
    match (
        desired.get("version").and_then(Value::as_i64),
        reported.get("desired_version").and_then(Value::as_i64),
    ) {
        (None, _) => "none",
        (Some(d), Some(r)) if d == r && reported["status"] == "applied" => "in_sync",
        (Some(d), Some(r)) if d == r => "failed",
        _ => "pending",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medgate_contract::{Schema, TelemetrySnapshot};

    fn telemetry(at: u64, objects: u64) -> Telemetry {
        let mut snapshot = TelemetrySnapshot::default();
        snapshot.received.objects = objects;
        Telemetry {
            schema: Schema::default(),
            sent_at_ms: at,
            boot_id: 1,
            seq: at,
            snapshot,
        }
    }

    #[tokio::test]
    async fn events_in_bulk_are_stored_once_and_counted() {
        use medgate_contract::{AeTitle, EventId, Flow, Peer, Token};
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url, None).await.expect("connect");
        let site = SiteId::new("s").expect("id");
        let (a, b) = (
            DeviceId::new("a").expect("id"),
            DeviceId::new("b").expect("id"),
        );
        let event = |seq: u64, body: EventBody| Event {
            schema: Schema::default(),
            id: EventId::new(7, seq),
            at_ms: 1000 + seq,
            event: body,
        };
        let forwarded = || EventBody::StudyForwarded {
            destination: Token::new("archive").expect("token"),
            modality: None,
            forwarded: Flow {
                objects: 1,
                bytes: 2,
            },
            latency_ms: 3,
            attempts: 1,
        };
        let peer = Peer {
            calling_ae: AeTitle::new("CT01").expect("ae"),
            called_ae: AeTitle::new("MEDGATE").expect("ae"),
            ip: "10.0.0.1".parse().expect("ip"),
            sop_classes: vec![],
            modalities: vec![],
            accepted: true,
            refusal: None,
            associations: 1,
            last_seen_ms: 5,
        };
        let events: Vec<Event> = (1..=200).map(|i| event(i, forwarded())).collect();
        let seen = event(500, EventBody::PeerSeen(peer));
        // a: 200 events (chunks 128, 64, 8) + a peer; b: 3 events, one of them twice.
        let mut rows: Vec<(&DeviceId, &Event)> = events.iter().map(|e| (&a, e)).collect();
        rows.push((&a, &seen));
        rows.extend([
            (&b, &events[0]),
            (&b, &events[1]),
            (&b, &events[0]),
            (&b, &events[2]),
        ]);
        let mut batch = store.begin().await.expect("begin");
        for d in [&a, &b] {
            assert_eq!(
                store
                    .admit_device(batch.conn(), &site, d, 1)
                    .await
                    .expect("admit"),
                None
            );
        }
        let r = store
            .record_events_many(batch.conn(), &rows, 9)
            .await
            .expect("record");
        let again = store
            .record_events_many(batch.conn(), &rows[..3], 9)
            .await
            .expect("record");
        batch.commit().await.expect("commit");
        let new = r.iter().filter(|x| **x == Recorded::New).count();
        assert_eq!((new, r[203]), (204, Recorded::Duplicate), "{r:?}");
        assert!(again.iter().all(|x| *x == Recorded::Duplicate));
        let count = |d: &'static str| {
            let store = store.clone();
            async move {
                sqlx::query("SELECT events_received FROM devices WHERE id = $1")
                    .bind(d)
                    .fetch_one(store.pool())
                    .await
                    .expect("row")
                    .try_get::<i64, _>(0)
                    .expect("n")
            }
        };
        assert_eq!((count("a").await, count("b").await), (201, 3));
        assert_eq!(store.peers("a").await.expect("peers").len(), 1);
    }

    #[tokio::test]
    async fn a_peer_shows_its_modalities_and_refusal_and_an_older_state_never_wins() {
        use medgate_contract::{AeTitle, Disk, EventId, Inventory, Modality, Peer, Refusal, Token};
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url, None).await.expect("connect");
        let site = SiteId::new("s").expect("id");
        let dev = DeviceId::new("d").expect("id");
        let peer = |ae: &str, accepted: bool, refusal, modalities: &[&str], seen| Peer {
            calling_ae: AeTitle::new(ae).expect("ae"),
            called_ae: AeTitle::new("MEDGATE").expect("ae"),
            ip: "10.0.0.9".parse().expect("ip"),
            sop_classes: vec![],
            modalities: modalities
                .iter()
                .map(|m| Modality::new(*m).expect("code"))
                .collect(),
            accepted,
            refusal,
            associations: seen,
            last_seen_ms: seen,
        };
        let event = |seq: u64, p: Peer| Event {
            schema: Schema::default(),
            id: EventId::new(1, seq),
            at_ms: seq,
            event: EventBody::PeerSeen(p),
        };
        let birth = |peers: Vec<Peer>| Birth {
            schema: Schema::default(),
            sent_at_ms: 1,
            boot_id: 1,
            inventory: Inventory {
                serial: Token::new("SN").expect("token"),
                hardware_profile: Token::new("none").expect("token"),
                os_version: Token::new("1").expect("token"),
                appliance_version: Token::new("1").expect("token"),
                ae_title: None,
                nics: vec![],
                disk: Disk::default(),
                peers,
                config_schema: None,
            },
            config_version: 0,
            telemetry_interval_secs: 10,
        };
        let refused = Some(Refusal::CallingAeNotAllowed);
        let mut c = store.pool().acquire().await.expect("conn");
        for e in [
            event(1, peer("STRANGER", false, refused, &[], 10)),
            event(2, peer("CT1", true, None, &[], 10)),
            // The CT's first object: its modality, announced again with the state so far.
            event(3, peer("CT1", true, None, &["CT"], 11)),
        ] {
            let r = store
                .record_event(&mut c, &site, &dev, &e, 20)
                .await
                .expect("event");
            assert_eq!(r, Recorded::New);
        }
        // A birth built before the modality arrived (read late, or retained and read again)
        // does not take it back; a newer one replaces the state.
        store
            .record_birth(
                &mut c,
                &site,
                &dev,
                &birth(vec![
                    peer("CT1", true, None, &[], 10),
                    peer("STRANGER", false, None, &[], 9),
                ]),
                21,
            )
            .await
            .expect("birth");
        let peers = store.peers("d").await.expect("peers");
        let find = |ae: &str| {
            peers
                .iter()
                .find(|p| p["calling_ae"] == ae)
                .cloned()
                .unwrap_or_else(|| panic!("{ae} listed: {peers:?}"))
        };
        assert_eq!(find("CT1")["modalities"], json!(["CT"]), "{peers:?}");
        assert_eq!(find("STRANGER")["accepted"], false);
        assert_eq!(find("STRANGER")["refusal"], "calling_ae_not_allowed");
        store
            .record_birth(
                &mut c,
                &site,
                &dev,
                &birth(vec![peer(
                    "STRANGER",
                    false,
                    Some(Refusal::CalledAeNotRecognized),
                    &[],
                    30,
                )]),
                31,
            )
            .await
            .expect("birth");
        let peers = store.peers("d").await.expect("peers");
        let stranger = peers.iter().find(|p| p["calling_ae"] == "STRANGER");
        assert_eq!(
            stranger.map(|p| p["refusal"].clone()),
            Some(json!("called_ae_not_recognized"))
        );
    }

    #[tokio::test]
    async fn every_rendered_metric_has_help() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url, None).await.expect("connect");
        let gauges = store.gauges().await.expect("gauges");
        assert!(!gauges.is_empty());
        let text = crate::metrics::Metrics::default().render(&gauges);
        for g in &gauges {
            assert!(
                text.contains(&format!("medgate_fleet_{} 0", g.name)),
                "{text}"
            );
        }
        crate::metrics::tests::assert_help_before_every_type(&text);
    }

    #[tokio::test]
    async fn telemetry_in_bulk_is_deduplicated_and_beats_the_heart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url, None).await.expect("connect");
        let site = SiteId::new("s").expect("id");
        let devs: Vec<DeviceId> = (0..3)
            .map(|i| DeviceId::new(format!("d{i}")).expect("id"))
            .collect();
        let samples: Vec<Telemetry> = (0..300).map(|i| telemetry(1000 + i, i)).collect();
        // 300 samples (chunks of 128, 128, 32, 8, 4), spread over 3 devices; then four of d0's
        // again, one of them twice in the same call.
        let mut rows: Vec<(&DeviceId, &Telemetry)> = samples
            .iter()
            .enumerate()
            .map(|(i, t)| (&devs[i % 3], t))
            .collect();
        let mut batch = store.begin().await.expect("begin");
        for d in &devs {
            assert_eq!(
                store
                    .admit_device(batch.conn(), &site, d, 7)
                    .await
                    .expect("admit"),
                None
            );
        }
        let first = store
            .record_telemetry_many(batch.conn(), &rows, 7)
            .await
            .expect("record");
        assert!(first.iter().all(|r| *r == Recorded::New));
        rows.retain(|(d, _)| d.as_str() == "d0");
        rows.truncate(4);
        rows.push(rows[0]);
        rows.push((&devs[0], &samples[297]));
        let second = store
            .record_telemetry_many(batch.conn(), &rows, 9)
            .await
            .expect("record");
        batch.commit().await.expect("commit");
        assert_eq!(second.len(), 6);
        assert!(
            second.iter().all(|r| *r == Recorded::Duplicate),
            "{second:?}"
        );
        let mut total = 0;
        for d in &devs {
            total += store
                .telemetry(d.as_str(), 0, i64::MAX, 1000)
                .await
                .expect("read")
                .len();
            let (_, status) = store
                .device_site_status(d.as_str())
                .await
                .expect("read")
                .expect("known");
            assert_eq!(status, "pending");
        }
        assert_eq!(total, 300);
        let online: i64 = sqlx::query(
            "SELECT COUNT(*) FROM devices WHERE connection = 'online' AND last_seen_ms = 9",
        )
        .fetch_one(store.pool())
        .await
        .expect("count")
        .try_get(0)
        .expect("n");
        assert_eq!(online, 1, "the heartbeat of the second call's device only");
    }

    #[tokio::test]
    async fn telemetry_is_deduplicated_downsampled_and_expired() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url, None).await.expect("connect");
        let (site, dev) = (
            SiteId::new("s").expect("id"),
            DeviceId::new("d").expect("id"),
        );
        // Two 5-minute buckets (0-300 s, 300-600 s) of raw samples, one sent twice, and a third
        // bucket (900-1200 s) that the first pass cuts in two.
        let mut batch = store.begin().await.expect("begin");
        for (at, n) in [
            (10_000, 1),
            (200_000, 2),
            (200_000, 2),
            (310_000, 3),
            (590_000, 4),
            (910_000, 5),
            (1_100_000, 6),
        ] {
            store
                .record_telemetry(batch.conn(), &site, &dev, &telemetry(at, n), 1)
                .await
                .expect("record");
        }
        batch.commit().await.expect("commit");
        assert_eq!(
            store
                .telemetry("d", 0, i64::MAX, 100)
                .await
                .expect("read")
                .len(),
            6,
            "duplicate ignored"
        );
        let rows = |store: &Store| {
            let store = store.clone();
            async move {
                let rows = store.telemetry("d", 0, i64::MAX, 100).await.expect("read");
                let mut v: Vec<(i64, i64, u64)> = rows
                    .iter()
                    .map(|r| {
                        (
                            r["ts_ms"].as_i64().expect("ts"),
                            r["bucket_secs"].as_i64().expect("b"),
                            r["data"]["received"]["objects"].as_u64().expect("n"),
                        )
                    })
                    .collect();
                v.sort_unstable();
                v
            }
        };
        let (folded, deleted) = store
            .downsample(1_000_000, 300, 0)
            .await
            .expect("downsample");
        assert_eq!((folded, deleted), (5, 0));
        assert_eq!(
            rows(&store).await,
            vec![
                (0, 300, 2),
                (300_000, 300, 4),
                (900_000, 300, 5),
                (1_100_000, 0, 6)
            ],
            "last sample of each bucket; the sample after the cut still raw"
        );
        // The next pass folds the rest of the cut bucket: it now holds its last sample.
        let (folded, _) = store
            .downsample(2_000_000, 300, 0)
            .await
            .expect("downsample");
        assert_eq!(folded, 1);
        assert_eq!(
            rows(&store).await,
            vec![(0, 300, 2), (300_000, 300, 4), (900_000, 300, 6)]
        );
        // Retention: buckets older than the cut are deleted.
        let (_, deleted) = store
            .downsample(2_000_000, 300, 300_001)
            .await
            .expect("expire");
        assert_eq!(deleted, 2);
    }

    #[tokio::test]
    async fn downsampling_in_device_groups_covers_every_device() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url, None).await.expect("connect");
        let site = SiteId::new("s").expect("id");
        let mut batch = store.begin().await.expect("begin");
        for d in 0..300 {
            let dev = DeviceId::new(format!("d{d}")).expect("id");
            for (at, n) in [(10_000, d), (20_000, d + 100)] {
                store
                    .record_telemetry(batch.conn(), &site, &dev, &telemetry(at, n), 1)
                    .await
                    .expect("record");
            }
        }
        batch.commit().await.expect("commit");
        // 300 devices: groups of 128, 128, 32, 8 and 4.
        let (folded, _) = store
            .downsample(1_000_000, 300, 0)
            .await
            .expect("downsample");
        assert_eq!(folded, 600);
        for d in 0..300u64 {
            let rows = store
                .telemetry(&format!("d{d}"), 0, i64::MAX, 10)
                .await
                .expect("read");
            assert_eq!(rows.len(), 1, "d{d}: {rows:?}");
            assert_eq!(rows[0]["bucket_secs"], 300);
            assert_eq!(rows[0]["data"]["received"]["objects"], d + 100);
        }
    }
}
