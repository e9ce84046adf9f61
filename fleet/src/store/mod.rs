//! The fleet database: SQLite or PostgreSQL through sqlx's `Any` driver, one set of portable
//! migrations and statements (`$N` parameters, TEXT/BIGINT columns, `ON CONFLICT`).
//!
//! Every write from MQTT is idempotent (upserts, `ON CONFLICT DO NOTHING` on event ids,
//! monotonic command states), so several fleet replicas may process the same message.
//!
//! One module per aggregate, each an `impl Store` block: [`registry`] (devices, sites, tags,
//! status, births and states), [`claims`], [`ingest`] (admission of device messages and the bulk
//! writes of telemetry and events), [`telemetry`] (history, downsampling), [`config`] (documents,
//! desired and reported configuration, drift), [`commands`], [`peers`], [`users`] (users,
//! sessions, API tokens, the setup token), [`audit`] (append-only). Rows are read by column
//! name into the types of [`crate::model`].

pub mod audit;
pub mod claims;
pub mod commands;
pub mod config;
pub mod fleet;
pub mod ingest;
pub mod peers;
pub mod registry;
pub mod secrets;
pub mod telemetry;
pub mod users;
// diagnostics download (issue 12)
pub mod files;
// alerts (issue 13 part 3)
pub mod alerts;
// wall (issue 13 part 1): display links and what the wall reads.
pub mod displays;
// analytics (issue 13 part 2): the rollup tables and the reports read from them.
pub mod analytics;
// ota (issue 14 part 2): bundles in chunks, campaigns and their devices.
pub mod ota;

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use serde::de::DeserializeOwned;
use sqlx::AnyConnection;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor, Row, SqlSafeStr};

pub use ingest::Message;

use crate::model::{Backend, Refused, Registration, Unreadable};

/// Database failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sqlx failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("database migration: {0}; the database may belong to a newer fleet version")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A document to store does not serialise, or a stored one does not read.
    #[error("stored document unreadable: {0}")]
    Json(#[from] serde_json::Error),
    /// A stored value does not read as its type.
    #[error(transparent)]
    Unreadable(#[from] Unreadable),
}

type Result<T> = std::result::Result<T, StoreError>;

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// SQLite or PostgreSQL.
    pub backend: Backend,
    write_lock: Arc<tokio::sync::Mutex<()>>,
    admitted: Arc<Mutex<HashMap<String, (Registration, std::time::Instant)>>>,
}

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
    /// The connection to pass to the `record*` methods.
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
    /// Refused: wrong site, or revoked/decommissioned.
    Refused(Refused),
}

/// A time in ms, a version or a count as the database's signed 64-bit integer. Values come from
/// devices too: one beyond `i64::MAX` (no clock or counter gets there) is kept as `i64::MAX`,
/// never wrapped into a negative number.
pub fn db_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The database's integer back as unsigned (the store never writes a negative one; read as 0).
pub fn from_db(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Now, in ms since the epoch, as the database stores it.
pub fn now_db() -> i64 {
    db_int(medgate_contract::now_ms())
}

/// The migrations of a backend: the same portable ones on both, then those only one dialect
/// can say (the audit log's append-only triggers).
fn migrator(sqlite: bool) -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            Cow::Borrowed("init"),
            MigrationType::Simple,
            include_str!("../../migrations/0001_init.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            Cow::Borrowed("telemetry age index"),
            MigrationType::Simple,
            include_str!("../../migrations/0002_telemetry_age.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            Cow::Borrowed("users, sessions, tokens, audit"),
            MigrationType::Simple,
            include_str!("../../migrations/0003_auth.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            4,
            Cow::Borrowed("audit append-only"),
            MigrationType::Simple,
            if sqlite {
                include_str!("../../migrations/0004_audit_append_only.sqlite.sql")
            } else {
                include_str!("../../migrations/0004_audit_append_only.postgres.sql")
            }
            .into_sql_str(),
            false,
        ),
        // console-auth (issue 12): single sign-on users.
        Migration::new(
            5,
            Cow::Borrowed("single sign-on users"),
            MigrationType::Simple,
            include_str!("../../migrations/0005_sso_users.sql").into_sql_str(),
            false,
        ),
        // console-fleet: sites' time zone and rooms, inventory columns, claim rooms.
        Migration::new(
            6,
            Cow::Borrowed("sites and rooms"),
            MigrationType::Simple,
            include_str!("../../migrations/0006_sites_rooms.sql").into_sql_str(),
            false,
        ),
        // console: device page
        Migration::new(
            7,
            Cow::Borrowed("device page: desired history, certificate expiry"),
            MigrationType::Simple,
            include_str!("../../migrations/0007_device_page.sql").into_sql_str(),
            false,
        ),
        // diagnostics download (issue 12): file chunks and files of commands.
        Migration::new(
            8,
            Cow::Borrowed("command files"),
            MigrationType::Simple,
            include_str!("../../migrations/0008_command_files.sql").into_sql_str(),
            false,
        ),
        // atna (issue 13 part 4): the forwarder's cursor.
        Migration::new(
            9,
            Cow::Borrowed("atna cursor"),
            MigrationType::Simple,
            include_str!("../../migrations/0009_atna_cursor.sql").into_sql_str(),
            false,
        ),
        // console: the login form's key shared by the replicas
        Migration::new(
            10,
            Cow::Borrowed("secrets shared by the replicas"),
            MigrationType::Simple,
            include_str!("../../migrations/0010_shared_secrets.sql").into_sql_str(),
            false,
        ),
        // console: failed logins counted across the replicas
        Migration::new(
            11,
            Cow::Borrowed("failed logins shared by the replicas"),
            MigrationType::Simple,
            include_str!("../../migrations/0011_login_failures.sql").into_sql_str(),
            false,
        ),
        // wall (issue 13 part 1): display links, and the index of the wall's "today" figures.
        Migration::new(
            12,
            Cow::Borrowed("wall display links"),
            MigrationType::Simple,
            include_str!("../../migrations/0012_display_links.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            13,
            Cow::Borrowed("wall: events by time and kind"),
            MigrationType::Simple,
            include_str!("../../migrations/0013_wall_today.sql").into_sql_str(),
            false,
        ),
        // alerts (issue 13 part 3): alerts and their notification outbox.
        Migration::new(
            14,
            Cow::Borrowed("alerts and notifications"),
            MigrationType::Simple,
            include_str!("../../migrations/0014_alerts.sql").into_sql_str(),
            false,
        ),
        // analytics (issue 13 part 2): rollups of the study events.
        Migration::new(
            15,
            Cow::Borrowed("analytics rollups"),
            MigrationType::Simple,
            include_str!("../../migrations/0015_analytics.sql").into_sql_str(),
            false,
        ),
        // atna (issue 13 part 4): one forwarder at a time.
        Migration::new(
            16,
            Cow::Borrowed("atna lease"),
            MigrationType::Simple,
            include_str!("../../migrations/0016_atna_lease.sql").into_sql_str(),
            false,
        ),
        // ota (issue 14 part 2): bundles, campaigns and their devices.
        Migration::new(
            17,
            Cow::Borrowed("update bundles and campaigns"),
            MigrationType::Simple,
            include_str!("../../migrations/0017_ota.sql").into_sql_str(),
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

/// A column holding one of a [`crate::model`] enum's words (or another value read by `FromStr`).
fn word<T: FromStr<Err = Unreadable>>(r: &AnyRow, column: &str) -> sqlx::Result<T> {
    let s: String = r.try_get(column)?;
    s.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// A column holding a JSON document.
fn json<T: DeserializeOwned>(r: &AnyRow, column: &str) -> sqlx::Result<T> {
    let s: String = r.try_get(column)?;
    serde_json::from_str(&s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// A nullable column holding a JSON document.
fn json_opt<T: DeserializeOwned>(r: &AnyRow, column: &str) -> sqlx::Result<Option<T>> {
    let s: Option<String> = r.try_get(column)?;
    s.map(|s| serde_json::from_str(&s).map_err(|e| sqlx::Error::Decode(Box::new(e))))
        .transpose()
}

/// A single-column row (`SELECT id …`, `SELECT COUNT(*) AS n …`).
struct One<T>(T);

impl<'r, T> sqlx::FromRow<'r, AnyRow> for One<T>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    fn from_row(r: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(One(r.try_get(0)?))
    }
}

/// A two-column row.
struct Two<A, B>(A, B);

impl<'r, A, B> sqlx::FromRow<'r, AnyRow> for Two<A, B>
where
    A: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
    B: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    fn from_row(r: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(Two(r.try_get(0)?, r.try_get(1)?))
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
        migrator(sqlite).run(&pool).await?;
        if sqlite {
            spawn_checkpointer(pool.clone());
        }
        let store = Store {
            pool,
            backend: if sqlite {
                Backend::Sqlite
            } else {
                Backend::Postgres
            },
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
            admitted: Arc::new(Mutex::new(HashMap::new())),
        };
        // console-fleet: version and profile columns of devices born before migration 5.
        store.backfill_inventory_columns().await?;
        // analytics: study events stored before migration 15, summed once.
        store.backfill_analytics().await?;
        Ok(store)
    }

    /// The pool (for tests and health checks).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
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
        Ok(if self.backend == Backend::Sqlite {
            self.pool.begin_with("BEGIN IMMEDIATE").await?
        } else {
            self.pool.begin().await?
        })
    }

    async fn write_guard(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        if self.backend == Backend::Sqlite {
            Some(self.write_lock.lock().await)
        } else {
            None
        }
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
            let One(value) = sqlx::query_as::<_, One<i64>>(sql)
                .fetch_one(&self.pool)
                .await?;
            out.push(crate::metrics::Gauge { name, help, value });
        }
        // Certificates that end within 30 days lose the device its fleet link when they do.
        let One(value) = sqlx::query_as::<_, One<i64>>(
            "SELECT COUNT(*) FROM devices WHERE status = 'approved' AND cert_expires_ms IS NOT NULL AND cert_expires_ms < $1",
        )
        .bind(now_db().saturating_add(CERT_EXPIRY_WARNING_MS))
        .fetch_one(&self.pool)
        .await?;
        out.push(crate::metrics::Gauge {
            name: "device_certificates_expiring",
            help: "Approved devices whose certificate (issued at enrollment) ends within 30 days or has ended; enroll them again before it does",
            value,
        });
        Ok(out)
    }
}

/// How long before its end a device certificate counts as expiring (30 days).
pub const CERT_EXPIRY_WARNING_MS: i64 = 30 * 86_400_000;

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

/// `$2, $3, … ${k + 1}`.
fn id_params(k: usize) -> String {
    params(2, k)
}

#[cfg(test)]
pub(crate) mod tests;
