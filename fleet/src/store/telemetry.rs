//! Telemetry history: raw samples (written by [`super::ingest`]), downsampled into buckets and
//! expired.

use std::collections::HashMap;
use std::sync::OnceLock;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{One, Result, Store, json, multi_row_sql, params};
use crate::model::TelemetrySample;

impl<'r> sqlx::FromRow<'r, AnyRow> for TelemetrySample {
    fn from_row(r: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(TelemetrySample {
            ts_ms: r.try_get("ts_ms")?,
            bucket_secs: r.try_get("bucket_secs")?,
            data: json(r, "data")?,
        })
    }
}

impl Store {
    /// The latest raw telemetry sample of every device heard since `since_ms`, by device id:
    /// one primary-key seek per device (the registry drives the join), not a scan of the
    /// telemetry table. A sample that does not read (a newer appliance's?) is left out, not
    /// fatal. For the alert evaluator and the wall.
    pub async fn latest_telemetry_all(
        &self,
        since_ms: i64,
    ) -> Result<HashMap<String, TelemetrySample>> {
        let rows = sqlx::query(
            "SELECT d.id AS device_id, t.ts_ms, t.bucket_secs, t.data FROM devices d \
             JOIN telemetry t ON t.device_id = d.id AND t.bucket_secs = 0 AND t.ts_ms = ( \
               SELECT MAX(m.ts_ms) FROM telemetry m WHERE m.device_id = d.id AND m.bucket_secs = 0) \
             WHERE t.ts_ms >= $1",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in &rows {
            let Ok(data) = json(r, "data") else { continue };
            out.insert(
                r.try_get("device_id")?,
                TelemetrySample {
                    ts_ms: r.try_get("ts_ms")?,
                    bucket_secs: r.try_get("bucket_secs")?,
                    data,
                },
            );
        }
        Ok(out)
    }

    /// Telemetry history of a device between two times (raw and buckets), oldest first.
    pub async fn telemetry(
        &self,
        device: &str,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> Result<Vec<TelemetrySample>> {
        Ok(sqlx::query_as::<_, TelemetrySample>(
            "SELECT ts_ms, bucket_secs, data FROM telemetry WHERE device_id = $1 AND ts_ms >= $2 AND ts_ms <= $3 \
             ORDER BY ts_ms LIMIT $4",
        )
        .bind(device)
        .bind(from_ms)
        .bind(to_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The latest telemetry sample of a device.
    pub async fn latest_telemetry(&self, device: &str) -> Result<Option<TelemetrySample>> {
        Ok(sqlx::query_as::<_, TelemetrySample>(
            "SELECT ts_ms, bucket_secs, data FROM telemetry WHERE device_id = $1 ORDER BY ts_ms DESC LIMIT 1",
        )
        .bind(device)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Telemetry of a device between two times, downsampled to at most one sample per `step_ms`
    /// (the last of each step: counters are cumulative, so rates between points stay right),
    /// oldest first. The database picks the samples (one grouped scan of the device's range
    /// through the primary key) and only those are read and decoded: a week of 10 s samples is
    /// ~60,000 rows, a chart of it a few hundred.
    pub async fn telemetry_series(
        &self,
        device: &str,
        from_ms: i64,
        to_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<TelemetrySample>> {
        let step = step_ms.max(1);
        let mut rows = sqlx::query_as::<_, TelemetrySample>(
            "SELECT t.ts_ms, t.bucket_secs, t.data FROM telemetry t JOIN ( \
               SELECT MAX(ts_ms) AS last_ms FROM telemetry WHERE device_id = $1 AND ts_ms >= $2 AND ts_ms <= $3 \
               GROUP BY ts_ms / $4) g ON t.ts_ms = g.last_ms \
             WHERE t.device_id = $1 ORDER BY t.ts_ms, t.bucket_secs",
        )
        .bind(device)
        .bind(from_ms)
        .bind(to_ms)
        .bind(step)
        .fetch_all(&self.pool)
        .await?;
        // A bucket and a raw sample may share a time: keep one.
        rows.dedup_by_key(|s| s.ts_ms);
        Ok(rows)
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
        let bucket_ms = super::db_int(bucket_secs.saturating_mul(1000));
        let mut folded = 0;
        for _ in 0..MAX_WINDOWS {
            let One(oldest) = sqlx::query_as::<_, One<Option<i64>>>(
                "SELECT MIN(ts_ms) FROM telemetry WHERE bucket_secs = 0 AND ts_ms < $1",
            )
            .bind(raw_before)
            .fetch_one(&self.pool)
            .await?;
            let Some(oldest) = oldest else { break };
            let start = oldest - oldest.rem_euclid(bucket_ms);
            let end = (start + bucket_ms).min(raw_before);
            let devices: Vec<String> = sqlx::query_as::<_, One<String>>(
                "SELECT DISTINCT device_id FROM telemetry WHERE bucket_secs = 0 AND ts_ms >= $1 AND ts_ms < $2",
            )
            .bind(start)
            .bind(end)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|One(d)| d)
            .collect();
            let mut rest = devices.as_slice();
            while !rest.is_empty() {
                let (insert, n) = fold_insert_sql(rest.len());
                let (delete, _) = fold_delete_sql(n);
                let _w = self.write_guard().await;
                let mut tx = self.tx().await?;
                let mut q = sqlx::query(insert)
                    .bind(start)
                    .bind(end)
                    .bind(super::db_int(bucket_secs));
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
