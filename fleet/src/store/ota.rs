//! ota (issue 14 part 2): update bundles (content-addressed, in 1 MiB chunks, so every replica
//! serves them and a range reads only the chunks it needs), campaigns and their devices.
//!
//! A bundle's record is written after all its chunks: a bundle is seen whole or not at all, and
//! two replicas storing the same upload store it once (its chunks are content-addressed). A campaign changes by
//! compare-and-set on its revision ([`Store::save_campaign`]): of two replicas running the same
//! tick, one saves and acts, the other sees `false` and does nothing.

use base64::Engine as _;
use medgate_contract::{DeviceId, InstallMode, Sha256Hex, Token};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{One, Result, Store, StoreError, db_int, from_db, json, word};
use crate::model::Unreadable;
use crate::ota::campaign::{CampaignState, DeviceRecord, DeviceState, FailKind, Health};
use crate::ota::target::Targets;
use crate::ota::window::SiteWindow;

/// Bytes per stored chunk.
pub const CHUNK: u64 = 1 << 20;

/// A stored bundle: what its verified metadata says, and who uploaded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BundleRecord {
    /// The file's SHA-256 (its content address).
    #[schema(value_type = String)]
    pub sha256: Sha256Hex,
    /// The product.
    pub product: String,
    /// The version it installs.
    pub version: String,
    /// The hardware profiles it runs on.
    pub hardware: Vec<String>,
    /// `appliance_binaries` or `root_image`.
    pub payload_kind: String,
    /// The file's size in bytes.
    pub size: u64,
    /// The device must run at least this.
    pub min_installed: Option<String>,
    /// Once installed, nothing below this installs again.
    pub floor: Option<String>,
    /// It does not install after this (Unix ms).
    pub expires_ms: i64,
    /// Signed at (Unix ms).
    pub created_ms: i64,
    /// Who uploaded it.
    pub uploaded_by: String,
    /// When (Unix ms).
    pub uploaded_ms: i64,
}

/// The waves of a campaign as given: canary devices, then cumulative shares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Waves {
    canary: Vec<DeviceId>,
    shares: Vec<u8>,
}

/// A stored campaign (without its devices).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CampaignRecord {
    /// Its id.
    #[schema(value_type = String)]
    pub id: Token,
    /// Its name.
    pub name: String,
    /// The bundle it installs.
    #[schema(value_type = String)]
    pub bundle: Sha256Hex,
    /// Where it stands.
    pub state: CampaignState,
    /// Whom it targets.
    pub targets: Targets,
    /// Wave 0.
    #[schema(value_type = Vec<String>)]
    pub canary: Vec<DeviceId>,
    /// The following waves, cumulative percent of the other devices.
    pub wave_shares: Vec<u8>,
    /// Healthy this long before the next wave.
    pub soak_secs: u64,
    /// Pauses by itself past this failure share (percent).
    pub failure_threshold_pct: u8,
    /// Soft or forced.
    #[schema(value_type = String)]
    pub mode: InstallMode,
    /// The deadline (Unix ms).
    pub deadline_ms: Option<u64>,
    /// Maintenance windows by site.
    pub windows: Vec<SiteWindow>,
    /// Waves offered so far.
    pub released_waves: u32,
    /// Failures an operator resumed past.
    pub acknowledged_failures: u32,
    /// Who created it.
    pub created_by: String,
    /// When (Unix ms).
    pub created_ms: i64,
    /// Who approved it.
    pub approved_by: Option<String>,
    /// When (Unix ms).
    pub approved_ms: Option<i64>,
    /// Why it is paused.
    pub paused_reason: Option<String>,
    /// Compare-and-set revision.
    pub revision: i64,
    /// Last change (Unix ms).
    pub updated_ms: i64,
}

/// What a save changes of a campaign row (the rest is fixed at creation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignChange {
    /// Its state.
    pub state: CampaignState,
    /// Why paused.
    pub paused_reason: Option<String>,
    /// Waves offered.
    pub released_waves: u32,
    /// Failures resumed past.
    pub acknowledged_failures: u32,
    /// Approved now, by.
    pub approved_by: Option<String>,
}

fn mode_word(m: InstallMode) -> &'static str {
    match m {
        InstallMode::Soft => "soft",
        InstallMode::Forced => "forced",
    }
}

fn mode_of(s: &str) -> sqlx::Result<InstallMode> {
    match s {
        "soft" => Ok(InstallMode::Soft),
        "forced" => Ok(InstallMode::Forced),
        other => Err(sqlx::Error::Decode(Box::new(Unreadable {
            what: "install mode",
            value: other.to_owned(),
        }))),
    }
}

fn checked<T: std::str::FromStr>(r: &AnyRow, column: &str, what: &'static str) -> sqlx::Result<T> {
    let s: String = r.try_get(column)?;
    s.parse().map_err(|_| {
        sqlx::Error::Decode(Box::new(Unreadable {
            what,
            value: s.clone(),
        }))
    })
}

fn checked_opt<T: std::str::FromStr>(
    r: &AnyRow,
    column: &str,
    what: &'static str,
) -> sqlx::Result<Option<T>> {
    let s: Option<String> = r.try_get(column)?;
    s.map(|s| {
        s.parse().map_err(|_| {
            sqlx::Error::Decode(Box::new(Unreadable {
                what,
                value: s.clone(),
            }))
        })
    })
    .transpose()
}

fn small<T: TryFrom<u64> + Default>(v: i64) -> T {
    T::try_from(from_db(v)).unwrap_or_default()
}

impl<'r> sqlx::FromRow<'r, AnyRow> for BundleRecord {
    fn from_row(r: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(BundleRecord {
            sha256: checked(r, "sha256", "bundle sha256")?,
            product: r.try_get("product")?,
            version: r.try_get("version")?,
            hardware: json(r, "hardware")?,
            payload_kind: r.try_get("payload_kind")?,
            size: from_db(r.try_get("size")?),
            min_installed: r.try_get("min_installed")?,
            floor: r.try_get("floor")?,
            expires_ms: r.try_get("expires_ms")?,
            created_ms: r.try_get("created_ms")?,
            uploaded_by: r.try_get("uploaded_by")?,
            uploaded_ms: r.try_get("uploaded_ms")?,
        })
    }
}

impl<'r> sqlx::FromRow<'r, AnyRow> for CampaignRecord {
    fn from_row(r: &'r AnyRow) -> sqlx::Result<Self> {
        let waves: Waves = json(r, "waves")?;
        let deadline: Option<i64> = r.try_get("deadline_ms")?;
        Ok(CampaignRecord {
            id: checked(r, "id", "campaign id")?,
            name: r.try_get("name")?,
            bundle: checked(r, "bundle_sha256", "bundle sha256")?,
            state: word(r, "state")?,
            targets: json(r, "targets")?,
            canary: waves.canary,
            wave_shares: waves.shares,
            soak_secs: from_db(r.try_get("soak_secs")?),
            failure_threshold_pct: small(r.try_get("failure_threshold_pct")?),
            mode: mode_of(&r.try_get::<String, _>("mode")?)?,
            deadline_ms: deadline.map(from_db),
            windows: json(r, "windows")?,
            released_waves: small(r.try_get("released_waves")?),
            acknowledged_failures: small(r.try_get("acknowledged_failures")?),
            created_by: r.try_get("created_by")?,
            created_ms: r.try_get("created_ms")?,
            approved_by: r.try_get("approved_by")?,
            approved_ms: r.try_get("approved_ms")?,
            paused_reason: r.try_get("paused_reason")?,
            revision: r.try_get("revision")?,
            updated_ms: r.try_get("updated_ms")?,
        })
    }
}

fn device_row(r: &AnyRow) -> sqlx::Result<DeviceRecord> {
    let errors: Option<i64> = r.try_get("baseline_errors")?;
    let p99: Option<i64> = r.try_get("baseline_p99_ms")?;
    let fail: Option<String> = r.try_get("fail")?;
    Ok(DeviceRecord {
        device: checked(r, "device_id", "device id")?,
        site: checked(r, "site_id", "site id")?,
        wave: small(r.try_get("wave")?),
        state: word::<DeviceState>(r, "state")?,
        fail: fail
            .map(|f| {
                f.parse::<FailKind>()
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))
            })
            .transpose()?,
        code: checked_opt(r, "code", "device code")?,
        version: checked_opt(r, "version", "version")?,
        running: checked_opt(r, "running", "version")?,
        since_ms: from_db(r.try_get("since_ms")?),
        baseline: match (errors, p99) {
            (Some(e), Some(p)) => Some(Health {
                forward_errors_milli_per_s: from_db(e),
                forward_p99_ms: from_db(p),
            }),
            _ => None,
        },
        latest: None,
    })
}

/// The campaign columns, as a literal for `concat!`.
macro_rules! campaign_columns {
    () => {
        "id, name, bundle_sha256, state, targets, waves, soak_secs, failure_threshold_pct, mode, \
         deadline_ms, windows, released_waves, acknowledged_failures, created_by, created_ms, \
         approved_by, approved_ms, paused_reason, revision, updated_ms"
    };
}

/// The campaign device columns (of `d`), as a literal for `concat!`.
macro_rules! device_columns {
    () => {
        "d.device_id, d.site_id, d.wave, d.state, d.fail, d.code, d.version, d.running, \
         d.since_ms, d.updated_ms, d.baseline_errors, d.baseline_p99_ms"
    };
}

async fn write_device(
    c: &mut sqlx::AnyConnection,
    campaign: &str,
    d: &DeviceRecord,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO campaign_devices (campaign_id, device_id, site_id, wave, state, fail, code, \
         version, running, since_ms, updated_ms, baseline_errors, baseline_p99_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (campaign_id, device_id) DO UPDATE SET state = $5, fail = $6, code = $7, \
         version = $8, running = $9, since_ms = $10, updated_ms = $11, baseline_errors = $12, \
         baseline_p99_ms = $13",
    )
    .bind(campaign)
    .bind(d.device.as_str())
    .bind(d.site.as_str())
    .bind(i64::from(d.wave))
    .bind(d.state.as_str())
    .bind(d.fail.map(FailKind::as_str))
    .bind(d.code.as_ref().map(Token::as_str))
    .bind(d.version.as_ref().map(Token::as_str))
    .bind(d.running.as_ref().map(Token::as_str))
    .bind(db_int(d.since_ms))
    .bind(now)
    .bind(d.baseline.map(|b| db_int(b.forward_errors_milli_per_s)))
    .bind(d.baseline.map(|b| db_int(b.forward_p99_ms)))
    .execute(&mut *c)
    .await?;
    Ok(())
}

impl Store {
    // ---- bundles ----

    /// Stores a verified bundle: its bytes from `content` (exactly `rec.size` bytes) in chunks,
    /// then its record. `false` if a bundle of that SHA-256 is already stored (then the content
    /// is not read), or another replica stored its record first.
    pub async fn insert_bundle<R: AsyncRead + Unpin>(
        &self,
        rec: &BundleRecord,
        content: &mut R,
    ) -> Result<bool> {
        if self.bundle_size(&rec.sha256).await?.is_some() {
            return Ok(false);
        }
        // The chunks first, one short write each (a large upload never holds SQLite's one
        // writer for long); the record last, so a bundle is seen only once whole. Chunks are
        // content-addressed: another replica storing the same upload writes the same bytes.
        let chunk = usize::try_from(CHUNK).unwrap_or(1 << 20);
        let mut buf = vec![0u8; chunk];
        let mut idx: i64 = 0;
        let mut total: u64 = 0;
        loop {
            let mut filled = 0;
            while filled < chunk {
                let n = content
                    .read(&mut buf[filled..])
                    .await
                    .map_err(|e| StoreError::Db(sqlx::Error::Io(e)))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            let data = base64::engine::general_purpose::STANDARD.encode(&buf[..filled]);
            {
                let _w = self.write_guard().await;
                sqlx::query(
                    "INSERT INTO bundle_chunks (sha256, idx, data) VALUES ($1, $2, $3) \
                     ON CONFLICT (sha256, idx) DO NOTHING",
                )
                .bind(rec.sha256.as_str())
                .bind(idx)
                .bind(data)
                .execute(&self.pool)
                .await?;
            }
            idx += 1;
            total += u64::try_from(filled).unwrap_or(u64::MAX);
            if filled < chunk {
                break;
            }
        }
        if total != rec.size {
            return Err(StoreError::Db(sqlx::Error::Io(std::io::Error::other(
                format!(
                    "bundle {} is {} bytes, its record says {}: not stored",
                    rec.sha256, total, rec.size
                ),
            ))));
        }
        let _w = self.write_guard().await;
        let r = sqlx::query(
            "INSERT INTO bundles (sha256, product, version, hardware, payload_kind, size, \
             min_installed, floor, expires_ms, created_ms, uploaded_by, uploaded_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING",
        )
        .bind(rec.sha256.as_str())
        .bind(&rec.product)
        .bind(&rec.version)
        .bind(serde_json::to_string(&rec.hardware)?)
        .bind(&rec.payload_kind)
        .bind(db_int(rec.size))
        .bind(rec.min_installed.as_deref())
        .bind(rec.floor.as_deref())
        .bind(rec.expires_ms)
        .bind(rec.created_ms)
        .bind(&rec.uploaded_by)
        .bind(rec.uploaded_ms)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// A stored bundle.
    pub async fn bundle(&self, sha: &Sha256Hex) -> Result<Option<BundleRecord>> {
        Ok(sqlx::query_as::<_, BundleRecord>(
            "SELECT sha256, product, version, hardware, payload_kind, size, min_installed, floor, \
             expires_ms, created_ms, uploaded_by, uploaded_ms FROM bundles WHERE sha256 = $1",
        )
        .bind(sha.as_str())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Every stored bundle, newest upload first.
    pub async fn bundles(&self) -> Result<Vec<BundleRecord>> {
        Ok(sqlx::query_as::<_, BundleRecord>(
            "SELECT sha256, product, version, hardware, payload_kind, size, min_installed, floor, \
             expires_ms, created_ms, uploaded_by, uploaded_ms FROM bundles \
             ORDER BY uploaded_ms DESC, sha256",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The size of a stored bundle's file; `None` if it is not stored.
    pub async fn bundle_size(&self, sha: &Sha256Hex) -> Result<Option<u64>> {
        let v = sqlx::query_as::<_, One<i64>>("SELECT size FROM bundles WHERE sha256 = $1")
            .bind(sha.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(v.map(|One(n)| from_db(n)))
    }

    /// Bytes `[start, start + len)` of a stored bundle's file (fewer at its end; none past it,
    /// or if it is not stored), reading only the chunks they lie in. The caller bounds `len`.
    pub async fn bundle_range(&self, sha: &Sha256Hex, start: u64, len: u64) -> Result<Vec<u8>> {
        let Some(size) = self.bundle_size(sha).await? else {
            return Ok(Vec::new());
        };
        let end = start.saturating_add(len).min(size);
        if start >= end {
            return Ok(Vec::new());
        }
        let (first, last) = (start / CHUNK, (end - 1) / CHUNK);
        let rows = sqlx::query(
            "SELECT idx, data FROM bundle_chunks WHERE sha256 = $1 AND idx >= $2 AND idx <= $3 \
             ORDER BY idx",
        )
        .bind(sha.as_str())
        .bind(db_int(first))
        .bind(db_int(last))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(usize::try_from(end - start).unwrap_or(0));
        for r in &rows {
            let idx = from_db(r.try_get("idx")?);
            let text: String = r.try_get("data")?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| {
                    StoreError::Unreadable(Unreadable {
                        what: "bundle chunk",
                        value: e.to_string(),
                    })
                })?;
            let at = idx * CHUNK;
            let from = usize::try_from(start.saturating_sub(at)).unwrap_or(0);
            let to = usize::try_from((end - at).min(CHUNK)).unwrap_or(0);
            if from < to && to <= data.len() {
                out.extend_from_slice(&data[from..to]);
            }
        }
        Ok(out)
    }

    /// Whether `device` may download bundle `sha`: it is in a campaign of that bundle that is not
    /// cancelled and that offered it the bundle.
    pub async fn device_may_download(&self, device: &DeviceId, sha: &Sha256Hex) -> Result<bool> {
        let One(n) = sqlx::query_as::<_, One<i64>>(
            "SELECT COUNT(*) FROM campaign_devices d JOIN campaigns c ON c.id = d.campaign_id \
             WHERE d.device_id = $1 AND c.bundle_sha256 = $2 AND c.state <> 'cancelled' \
             AND d.state <> 'pending' AND d.state <> 'withdrawn'",
        )
        .bind(device.as_str())
        .bind(sha.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    // ---- campaigns ----

    /// Stores a new campaign (revision 1) and its devices.
    pub async fn insert_campaign(
        &self,
        c: &CampaignRecord,
        devices: &[DeviceRecord],
    ) -> Result<()> {
        let waves = Waves {
            canary: c.canary.clone(),
            shares: c.wave_shares.clone(),
        };
        let _w = self.write_guard().await;
        let mut tx = self.tx().await?;
        sqlx::query(
            "INSERT INTO campaigns (id, name, bundle_sha256, state, targets, waves, soak_secs, \
             failure_threshold_pct, mode, deadline_ms, windows, released_waves, \
             acknowledged_failures, created_by, created_ms, approved_by, approved_ms, \
             paused_reason, revision, updated_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
             $18, $19, $20)",
        )
        .bind(c.id.as_str())
        .bind(&c.name)
        .bind(c.bundle.as_str())
        .bind(c.state.as_str())
        .bind(serde_json::to_string(&c.targets)?)
        .bind(serde_json::to_string(&waves)?)
        .bind(db_int(c.soak_secs))
        .bind(i64::from(c.failure_threshold_pct))
        .bind(mode_word(c.mode))
        .bind(c.deadline_ms.map(db_int))
        .bind(serde_json::to_string(&c.windows)?)
        .bind(i64::from(c.released_waves))
        .bind(i64::from(c.acknowledged_failures))
        .bind(&c.created_by)
        .bind(c.created_ms)
        .bind(c.approved_by.as_deref())
        .bind(c.approved_ms)
        .bind(c.paused_reason.as_deref())
        .bind(c.revision)
        .bind(c.updated_ms)
        .execute(&mut *tx)
        .await?;
        for d in devices {
            write_device(&mut tx, c.id.as_str(), d, c.created_ms).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every campaign, newest first.
    pub async fn campaigns(&self) -> Result<Vec<CampaignRecord>> {
        Ok(sqlx::query_as::<_, CampaignRecord>(concat!(
            "SELECT ",
            campaign_columns!(),
            " FROM campaigns ORDER BY created_ms DESC, id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// The ids of the running and paused campaigns (the tick's work).
    pub async fn live_campaigns(&self) -> Result<Vec<String>> {
        let rows = sqlx::query_as::<_, One<String>>(
            "SELECT id FROM campaigns WHERE state = 'running' OR state = 'paused' ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|One(id)| id).collect())
    }

    /// One campaign.
    pub async fn campaign(&self, id: &str) -> Result<Option<CampaignRecord>> {
        Ok(sqlx::query_as::<_, CampaignRecord>(concat!(
            "SELECT ",
            campaign_columns!(),
            " FROM campaigns WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A campaign's devices, by wave then id.
    pub async fn campaign_devices(&self, id: &str) -> Result<Vec<DeviceRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            device_columns!(),
            " FROM campaign_devices d WHERE d.campaign_id = $1 ORDER BY d.wave, d.device_id"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(device_row)
            .collect::<sqlx::Result<Vec<_>>>()?)
    }

    /// The campaigns `device` is in, with its record in each, newest campaign first.
    pub async fn device_campaigns(&self, device: &DeviceId) -> Result<Vec<(String, DeviceRecord)>> {
        let rows = sqlx::query(concat!(
            "SELECT d.campaign_id, ",
            device_columns!(),
            " FROM campaign_devices d JOIN campaigns c ON c.id = d.campaign_id \
             WHERE d.device_id = $1 ORDER BY c.created_ms DESC"
        ))
        .bind(device.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("campaign_id")?, device_row(r)?)))
            .collect::<sqlx::Result<Vec<_>>>()
            .map_err(Into::into)
    }

    /// Saves a campaign's change and its changed devices if its revision is still `revision`
    /// (then it becomes `revision + 1`); `false` if another writer saved first (nothing written).
    pub async fn save_campaign(
        &self,
        id: &str,
        revision: i64,
        change: &CampaignChange,
        devices: &[&DeviceRecord],
        now: i64,
    ) -> Result<bool> {
        let _w = self.write_guard().await;
        let mut tx = self.tx().await?;
        let r = sqlx::query(
            "UPDATE campaigns SET state = $1, paused_reason = $2, released_waves = $3, \
             acknowledged_failures = $4, revision = revision + 1, updated_ms = $5 \
             WHERE id = $6 AND revision = $7",
        )
        .bind(change.state.as_str())
        .bind(change.paused_reason.as_deref())
        .bind(i64::from(change.released_waves))
        .bind(i64::from(change.acknowledged_failures))
        .bind(now)
        .bind(id)
        .bind(revision)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        if let Some(by) = &change.approved_by {
            sqlx::query(
                "UPDATE campaigns SET approved_by = $1, approved_ms = $2 \
                 WHERE id = $3 AND approved_by IS NULL",
            )
            .bind(by)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        for d in devices {
            write_device(&mut tx, id, d, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}
