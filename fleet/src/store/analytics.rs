//! analytics (issue 13 part 2): the rollup tables (migration 15) — written from a
//! [`Rollup`] in the transaction of the events it sums, read back by the reports. Every write
//! is an additive upsert (`ON CONFLICT … DO UPDATE SET n = n + excluded.n`), so replicas
//! recording different events of the same hour add up, and a duplicate event, which the events
//! table refuses, is never summed. Statements are fixed texts plus `site_id IN ($N, …)` for a
//! scope (hence `AssertSqlSafe`): no value from a request is ever part of the SQL.

use std::collections::BTreeMap;

use medgate_contract::EventBody;
use sqlx::{AnyConnection, Row};

use super::{Result, Store, db_int, json, multi_row_sql};
use crate::analytics::history::History;
use crate::analytics::report::{Daily, DayRow, Delays, Devices, MixRow, Overview, Period, Trend};
use crate::analytics::{Counts, RECENT_DAYS, Rollup, SLOT_MS};
use crate::auth::SiteScope;
use crate::civil::Day;

/// Events rolled up per transaction when the events stored before migration 15 are summed.
const BACKFILL_BATCH: i64 = 2_000;

/// The six counts, as bound parameters.
fn counts(c: &Counts) -> [i64; 6] {
    [
        db_int(c.studies),
        db_int(c.images),
        db_int(c.bytes),
        db_int(c.forwarded),
        db_int(c.images_forwarded),
        db_int(c.bytes_forwarded),
    ]
}

/// `INSERT INTO table (keys…, sums…) VALUES (…), … ON CONFLICT (keys…) DO UPDATE SET sum =
/// table.sum + excluded.sum, …` for `k` rows: the additive upsert of every rollup table.
fn upsert_text(table: &str, keys: &[&str], sums: &[&str], k: usize) -> String {
    let per = keys.len() + sums.len();
    let values: Vec<String> = (0..k)
        .map(|i| {
            let p: Vec<String> = (1..=per).map(|j| format!("${}", per * i + j)).collect();
            format!("({})", p.join(", "))
        })
        .collect();
    let add: Vec<String> = sums
        .iter()
        .map(|c| format!("{c} = {table}.{c} + excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO {table} ({}, {}) VALUES {} ON CONFLICT ({}) DO UPDATE SET {}",
        keys.join(", "),
        sums.join(", "),
        values.join(", "),
        keys.join(", "),
        add.join(", ")
    )
}

/// The six summed columns of the daily and five-minute tables, in [`counts`]' order.
const COUNT_COLUMNS: [&str; 6] = [
    "studies",
    "images",
    "bytes",
    "forwarded",
    "images_forwarded",
    "bytes_forwarded",
];

fn daily_sql(n: usize) -> (&'static str, usize) {
    static TEXTS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let build = |k| {
        let keys = ["site_id", "day", "modality", "device_id"];
        upsert_text("analytics_daily", &keys, &COUNT_COLUMNS, k)
    };
    multi_row_sql(&TEXTS, build, n)
}

fn recent_sql(n: usize) -> (&'static str, usize) {
    static TEXTS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let build = |k| {
        let keys = ["site_id", "slot", "modality"];
        upsert_text("analytics_recent", &keys, &COUNT_COLUMNS, k)
    };
    multi_row_sql(&TEXTS, build, n)
}

fn delay_sql(n: usize) -> (&'static str, usize) {
    static TEXTS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let build = |k| upsert_text("analytics_delay", &["site_id", "day", "bucket"], &["n"], k);
    multi_row_sql(&TEXTS, build, n)
}

/// A value bound to an upsert.
enum Param {
    Text(String),
    Int(i64),
}

/// A row of an upsert: its keys, then its sums.
fn row(keys: Vec<Param>, sums: impl IntoIterator<Item = i64>) -> Vec<Param> {
    let mut v = keys;
    v.extend(sums.into_iter().map(Param::Int));
    v
}

/// Runs the upsert `sql` over `rows`, as many rows a statement as its texts allow.
async fn upsert(
    c: &mut AnyConnection,
    sql: fn(usize) -> (&'static str, usize),
    rows: &[Vec<Param>],
) -> Result<()> {
    let mut rest = rows;
    while !rest.is_empty() {
        let (text, n) = sql(rest.len());
        let mut q = sqlx::query(text);
        for p in rest[..n].iter().flatten() {
            q = match p {
                Param::Text(s) => q.bind(s.clone()),
                Param::Int(i) => q.bind(*i),
            };
        }
        q.execute(&mut *c).await?;
        rest = &rest[n..];
    }
    Ok(())
}

/// ` AND site_id IN ($first, …)` for a scope of some sites (nothing for every site), and the
/// ids to bind in that order.
fn scope_filter(scope: &SiteScope, first: usize) -> (String, Vec<String>) {
    match scope {
        SiteScope::All => (String::new(), Vec::new()),
        SiteScope::Only(s) if s.is_empty() => (" AND 1 = 0".into(), Vec::new()),
        SiteScope::Only(s) => (
            format!(" AND site_id IN ({})", super::params(first, s.len())),
            s.iter().cloned().collect(),
        ),
    }
}

fn u(r: &sqlx::any::AnyRow, col: &str) -> sqlx::Result<u64> {
    let v: i64 = r.try_get(col)?;
    Ok(u64::try_from(v).unwrap_or(0))
}

fn counts_of(r: &sqlx::any::AnyRow) -> sqlx::Result<Counts> {
    Ok(Counts {
        studies: u(r, "studies")?,
        images: u(r, "images")?,
        bytes: u(r, "bytes")?,
        forwarded: u(r, "forwarded")?,
        images_forwarded: u(r, "images_forwarded")?,
        bytes_forwarded: u(r, "bytes_forwarded")?,
    })
}

/// The six sums, named as the columns (PostgreSQL's SUM of BIGINT is NUMERIC: cast back).
const SUMS: &str = "CAST(SUM(studies) AS BIGINT) AS studies, CAST(SUM(images) AS BIGINT) AS images, \
     CAST(SUM(bytes) AS BIGINT) AS bytes, CAST(SUM(forwarded) AS BIGINT) AS forwarded, \
     CAST(SUM(images_forwarded) AS BIGINT) AS images_forwarded, \
     CAST(SUM(bytes_forwarded) AS BIGINT) AS bytes_forwarded";

impl Store {
    /// Runs `sql` and returns its rows: its first parameters are `leading`, `{scope}` is where
    /// `scope`'s site filter goes (its ids bound after them).
    async fn fetch_scoped(
        &self,
        sql: &str,
        leading: &[i64],
        scope: &SiteScope,
    ) -> Result<Vec<sqlx::any::AnyRow>> {
        let (filter, sites) = scope_filter(scope, leading.len() + 1);
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.replace("{scope}", &filter)));
        for v in leading {
            q = q.bind(*v);
        }
        for s in sites {
            q = q.bind(s);
        }
        Ok(q.fetch_all(&self.pool).await?)
    }

    /// Adds `r` to the rollup tables, on the events' own transaction.
    pub async fn write_rollup(&self, c: &mut AnyConnection, r: &Rollup) -> Result<()> {
        let text = |s: &str| Param::Text(s.to_owned());
        let daily: Vec<_> = r
            .daily
            .iter()
            .map(|(k, v)| {
                let keys = vec![
                    text(&k.site),
                    Param::Int(k.day.days()),
                    text(&k.modality),
                    text(&k.device),
                ];
                row(keys, counts(v))
            })
            .collect();
        upsert(c, daily_sql, &daily).await?;
        let slots: Vec<_> = r
            .slots
            .iter()
            .map(|(k, v)| {
                let keys = vec![text(&k.site), Param::Int(k.slot), text(&k.modality)];
                row(keys, counts(v))
            })
            .collect();
        upsert(c, recent_sql, &slots).await?;
        let delays: Vec<_> = r
            .delays
            .iter()
            .map(|(k, v)| {
                let keys = vec![
                    text(&k.site),
                    Param::Int(k.day.days()),
                    Param::Int(i64::from(k.bucket)),
                ];
                row(keys, [db_int(*v)])
            })
            .collect();
        upsert(c, delay_sql, &delays).await
    }

    /// Sums the study events stored before migration 15 (`rolled = 0`) into the rollups, in
    /// batches, each event claimed by the update that marks it (so two replicas starting at once
    /// never both count one). Returns the events summed.
    pub async fn backfill_analytics(&self) -> Result<u64> {
        let mut summed = 0u64;
        loop {
            let mut batch = self.begin().await?;
            let c = batch.conn();
            let rows = sqlx::query(
                "SELECT e.device_id, e.event_id, e.at_ms, e.data, d.site_id FROM events e \
                 JOIN devices d ON d.id = e.device_id \
                 WHERE e.rolled = 0 AND e.kind IN ('study_received', 'study_forwarded') LIMIT $1",
            )
            .bind(BACKFILL_BATCH)
            .fetch_all(&mut *c)
            .await?;
            if rows.is_empty() {
                batch.commit().await?;
                break;
            }
            let now = super::now_db();
            let mut rollup = Rollup::default();
            for r in &rows {
                let device: String = r.try_get("device_id")?;
                let id: String = r.try_get("event_id")?;
                let claimed = sqlx::query(
                    "UPDATE events SET rolled = 1 WHERE device_id = $1 AND event_id = $2 AND rolled = 0",
                )
                .bind(&device)
                .bind(&id)
                .execute(&mut *c)
                .await?;
                if !super::rows_changed(&claimed) {
                    continue;
                }
                // An event that does not read is marked all the same (it would be selected
                // forever) and not counted.
                if let Ok(e) = json::<EventBody>(r, "data") {
                    let site: String = r.try_get("site_id")?;
                    let at: i64 = r.try_get("at_ms")?;
                    if rollup.add(&site, &device, at, &e, now) {
                        summed += 1;
                    }
                }
            }
            self.write_rollup(batch.conn(), &rollup).await?;
            batch.commit().await?;
        }
        if summed > 0 {
            tracing::info!(
                events = summed,
                "study events stored before the analytics tables summed into them"
            );
        }
        Ok(summed)
    }

    /// Writes `history`'s studies of the days `from` to the day of `now_ms` (up to `now_ms`)
    /// into the rollups, one transaction per day — for the demo and the benchmark: the events
    /// table is not written (it holds only what appliances really sent). Returns the studies.
    pub async fn seed_history(&self, history: &History, from: Day, now_ms: i64) -> Result<u64> {
        let mut studies = 0u64;
        let mut day = from;
        while day <= Day::of_ms(now_ms) {
            let mut rollup = Rollup::default();
            studies += history.day(day, now_ms, |d, at, e| {
                rollup.add(&d.site, &d.device, at, e, now_ms);
            });
            let mut batch = self.begin().await?;
            self.write_rollup(batch.conn(), &rollup).await?;
            batch.commit().await?;
            day = day.plus(1);
        }
        Ok(studies)
    }

    /// Drops five-minute slots older than [`RECENT_DAYS`] before `now_ms`. Returns the rows
    /// dropped.
    pub async fn prune_analytics_recent(&self, now_ms: i64) -> Result<u64> {
        let before = (now_ms - RECENT_DAYS * Day::MS).div_euclid(SLOT_MS);
        let _guard = self.write_guard().await;
        Ok(sqlx::query("DELETE FROM analytics_recent WHERE slot < $1")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Per site, modality: the counts of the five-minute slots that start at or after `since_ms`
    /// (the wall's "today" and "last hour"; a bound inside a slot leaves that slot out).
    pub async fn analytics_recent(
        &self,
        scope: &SiteScope,
        since_ms: i64,
    ) -> Result<BTreeMap<String, BTreeMap<String, Counts>>> {
        let sql = format!(
            "SELECT site_id, modality, {SUMS} FROM analytics_recent WHERE slot >= $1{{scope}} \
             GROUP BY site_id, modality"
        );
        let first = since_ms.div_euclid(SLOT_MS) + i64::from(since_ms.rem_euclid(SLOT_MS) > 0);
        let found = self.fetch_scoped(&sql, &[first], scope).await?;
        let mut out: BTreeMap<String, BTreeMap<String, Counts>> = BTreeMap::new();
        for r in &found {
            out.entry(r.try_get("site_id")?)
                .or_default()
                .insert(r.try_get("modality")?, counts_of(r)?);
        }
        Ok(out)
    }

    /// Per day, site and modality within `period`.
    pub async fn analytics_daily(&self, scope: &SiteScope, period: Period) -> Result<Daily> {
        let sql = format!(
            "SELECT day, site_id, modality, {SUMS} FROM analytics_daily \
             WHERE day >= $1 AND day <= $2{{scope}} GROUP BY day, site_id, modality \
             ORDER BY day, site_id, modality"
        );
        let found = self
            .fetch_scoped(&sql, &[period.from.days(), period.to.days()], scope)
            .await?;
        let mut rows = Vec::new();
        for r in &found {
            rows.push(DayRow {
                day: Day::from_days(r.try_get("day")?),
                site: r.try_get("site_id")?,
                modality: r.try_get("modality")?,
                figures: counts_of(r)?.into(),
            });
        }
        Ok(Daily { period, rows })
    }

    /// Studies and images per day and site within `period`, every day present.
    pub async fn analytics_trend(&self, scope: &SiteScope, period: Period) -> Result<Trend> {
        let sql = format!(
            "SELECT site_id, day, {SUMS} FROM analytics_daily \
             WHERE day >= $1 AND day <= $2{{scope}} GROUP BY site_id, day"
        );
        let found = self
            .fetch_scoped(&sql, &[period.from.days(), period.to.days()], scope)
            .await?;
        let mut rows = Vec::new();
        for r in &found {
            rows.push((
                r.try_get("site_id")?,
                Day::from_days(r.try_get("day")?),
                counts_of(r)?,
            ));
        }
        Ok(Trend::of(period, &rows))
    }

    /// Appliances per site and modality that received studies within `period`, and the approved
    /// appliances of each site.
    pub async fn analytics_devices(&self, scope: &SiteScope, period: Period) -> Result<Devices> {
        let sql = "SELECT site_id, modality, COUNT(DISTINCT device_id) AS devices, \
             CAST(SUM(studies) AS BIGINT) AS studies FROM analytics_daily \
             WHERE day >= $1 AND day <= $2 AND studies > 0{scope} \
             GROUP BY site_id, modality ORDER BY site_id, modality";
        let found = self
            .fetch_scoped(sql, &[period.from.days(), period.to.days()], scope)
            .await?;
        let mut rows = Vec::new();
        for r in &found {
            rows.push(MixRow {
                site: r.try_get("site_id")?,
                modality: r.try_get("modality")?,
                devices: u(r, "devices")?,
                studies: u(r, "studies")?,
            });
        }
        let sql = "SELECT site_id, COUNT(*) AS n FROM devices WHERE status = 'approved'{scope} \
                   GROUP BY site_id";
        let found = self.fetch_scoped(sql, &[], scope).await?;
        let mut registered = BTreeMap::new();
        for r in &found {
            registered.insert(r.try_get("site_id")?, u(r, "n")?);
        }
        Ok(Devices {
            period,
            registered,
            rows,
        })
    }

    /// Forwarding delay percentiles per site within `period`.
    pub async fn analytics_delays(&self, scope: &SiteScope, period: Period) -> Result<Delays> {
        let sql = "SELECT site_id, bucket, CAST(SUM(n) AS BIGINT) AS n FROM analytics_delay \
             WHERE day >= $1 AND day <= $2{scope} GROUP BY site_id, bucket";
        let found = self
            .fetch_scoped(sql, &[period.from.days(), period.to.days()], scope)
            .await?;
        let mut rows = Vec::new();
        for r in &found {
            let b: i64 = r.try_get("bucket")?;
            rows.push((
                r.try_get("site_id")?,
                u32::try_from(b).unwrap_or(0),
                u(r, "n")?,
            ));
        }
        Ok(Delays::of(period, &rows))
    }

    /// The year of `today` from January 1st: per site and for the region.
    pub async fn analytics_overview(&self, scope: &SiteScope, today: Day) -> Result<Overview> {
        let period = Period {
            from: today.year_start(),
            to: today,
        };
        let sql = format!(
            "SELECT site_id, {SUMS} FROM analytics_daily WHERE day >= $1 AND day <= $2{{scope}} \
             GROUP BY site_id ORDER BY site_id"
        );
        let found = self
            .fetch_scoped(&sql, &[period.from.days(), period.to.days()], scope)
            .await?;
        let mut rows = Vec::new();
        for r in &found {
            rows.push((r.try_get("site_id")?, counts_of(r)?));
        }
        Ok(Overview::of(period, rows))
    }
}
