//! Device messages into the database: admission (one rule, [`Registration::admit`]) and the
//! bulk writes of telemetry and events, the bulk of the traffic. A single message is a batch of
//! one ([`Store::record`]); births, states, acknowledgements and reported configurations are
//! written by their aggregates' modules once admitted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::OnceLock;

use medgate_contract::{
    Birth, CommandAck, DeviceId, DeviceState, Event, EventBody, FileChunk, ReportedConfig, SiteId,
    Telemetry,
};
use serde_json::Value;
use sqlx::{AnyConnection, Row};

use super::files::ChunkOutcome;
use super::{Recorded, Result, Store, id_params, multi_row_sql};
use crate::analytics::{Counts, Rollup};
use crate::model::{Connection, DeviceStatus, EventRecord, Refused, Registration};

/// A decoded device message, borrowed.
#[derive(Debug, Clone, Copy)]
pub enum Message<'a> {
    /// Inventory, boot, peers.
    Birth(&'a Birth),
    /// Online / offline.
    State(DeviceState),
    /// A telemetry sample.
    Telemetry(&'a Telemetry),
    /// An event.
    Event(&'a Event),
    /// A command acknowledgement.
    Ack(&'a CommandAck),
    /// The reported configuration.
    Reported(&'a ReportedConfig),
    /// A chunk of a file a command produced.
    File(&'a FileChunk),
}

/// A chunk's outcome as a message's: what is not kept is logged with its reason (a chunk the
/// device should not have sent is not worth a retry: it counts as a duplicate).
fn file_recorded(device: &DeviceId, f: &FileChunk, outcome: ChunkOutcome) -> Recorded {
    let command = f.command.as_str();
    match outcome {
        ChunkOutcome::Stored => Recorded::New,
        ChunkOutcome::Complete => {
            tracing::info!(%device, command, bytes = f.total_bytes, "file of a command received whole, digest checked");
            Recorded::New
        }
        ChunkOutcome::Failed(why) => {
            tracing::warn!(%device, command, reason = %why, "file of a command received whole but damaged; run the command again");
            Recorded::New
        }
        ChunkOutcome::Duplicate => Recorded::Duplicate,
        ChunkOutcome::Refused(why) => {
            tracing::warn!(%device, command, reason = why, "file chunk dropped");
            Recorded::Duplicate
        }
    }
}

impl Store {
    /// Checks that a message from `site/device` may be recorded; registers an unknown device as
    /// `pending` (it appears in the console for approval).
    pub async fn admit_device(
        &self,
        c: &mut AnyConnection,
        site: &SiteId,
        device: &DeviceId,
        now: i64,
    ) -> Result<std::result::Result<(), Refused>> {
        match self.registration_cached(c, device.as_str()).await? {
            Some(r) => Ok(r.admit(site.as_str())),
            None => {
                self.register_device_in(c, site, device, DeviceStatus::Pending, now)
                    .await?;
                self.remember(
                    device.as_str(),
                    Registration {
                        site: site.as_str().to_owned(),
                        status: DeviceStatus::Pending,
                    },
                );
                Ok(Ok(()))
            }
        }
    }

    /// Records one message from `site/device`. Every kind but an acknowledgement is admitted
    /// first ([`Store::admit_device`]); an acknowledgement only ever moves a command of that
    /// device, so it needs none. Telemetry and events go through the bulk path as a batch of one.
    pub async fn record(
        &self,
        c: &mut AnyConnection,
        site: &SiteId,
        device: &DeviceId,
        msg: Message<'_>,
        now: i64,
    ) -> Result<Recorded> {
        if let Message::Ack(a) = msg {
            return self.record_ack(c, device, a, now).await;
        }
        if let Err(why) = self.admit_device(c, site, device, now).await? {
            return Ok(Recorded::Refused(why));
        }
        match msg {
            Message::Birth(b) => self.record_birth(c, device, b, now).await,
            Message::State(s) => self.record_state(c, device, s, now).await,
            Message::Telemetry(t) => Ok(self
                .record_telemetry_many(c, &[(device, t)], now)
                .await?
                .pop()
                .unwrap_or(Recorded::Duplicate)),
            Message::Event(e) => Ok(self
                .record_events_many(c, &[(device, e)], now)
                .await?
                .pop()
                .unwrap_or(Recorded::Duplicate)),
            Message::Reported(r) => self.record_reported(c, device, r).await,
            Message::File(f) => Ok(file_recorded(
                device,
                f,
                self.record_file_chunk(c, device, f, now).await?,
            )),
            Message::Ack(_) => unreachable!("handled above"),
        }
    }

    /// Records telemetry samples of admitted devices ([`Store::admit_device`]) in a few
    /// statements: multi-row inserts (deduplicated by device and send time) and one heartbeat
    /// update for their devices. Returns, per sample in order, `New` or `Duplicate` (a repeat
    /// within `rows` is a duplicate).
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
                    .bind(super::db_int(t.sent_at_ms))
                    .bind(serde_json::to_string(&t.snapshot)?);
            }
            for r in q.fetch_all(&mut *c).await? {
                inserted.insert((r.try_get("device_id")?, r.try_get("ts_ms")?));
            }
            rest = &rest[n..];
        }
        let mut devices: Vec<&str> = rows.iter().map(|(d, _)| d.as_str()).collect();
        devices.sort_unstable();
        devices.dedup();
        let mut rest = devices.as_slice();
        while !rest.is_empty() {
            let (sql, n) = heartbeat_update_sql(rest.len());
            let mut q = sqlx::query(sql).bind(now).bind(Connection::Online.as_str());
            for d in &rest[..n] {
                q = q.bind(*d);
            }
            q.execute(&mut *c).await?;
            rest = &rest[n..];
        }
        Ok(rows
            .iter()
            .map(|(d, t)| {
                if inserted.remove(&(d.as_str().to_owned(), super::db_int(t.sent_at_ms))) {
                    Recorded::New
                } else {
                    Recorded::Duplicate
                }
            })
            .collect())
    }

    /// Records events of admitted devices ([`Store::admit_device`]) in a few statements: stored
    /// once per (device, id) (multi-row insert), the device's count of events incremented by its
    /// new ones only, peers of `peer_seen` events upserted. Returns, per event in order, `New` or
    /// `Duplicate`.
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
                q = q
                    .bind(device.as_str())
                    .bind(id.clone())
                    .bind(super::db_int(e.at_ms))
                    .bind(now)
                    .bind(event_kind(&e.event)?)
                    .bind(serde_json::to_string(&e.event)?);
            }
            for r in q.fetch_all(&mut *c).await? {
                inserted.insert((r.try_get("device_id")?, r.try_get("event_id")?));
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
        let mut by_count: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
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
        // analytics (issue 13 part 2): the new study events into the rollups, in this
        // transaction (a duplicate never reaches them). The device's site is its admitted one.
        let mut rollup = Rollup::default();
        let mut sites: HashMap<&str, Option<String>> = HashMap::new();
        for ((device, e), r) in rows.iter().zip(&results) {
            if *r != Recorded::New || Counts::of_event(&e.event).is_none() {
                continue;
            }
            let site = match sites.get(device.as_str()) {
                Some(s) => s.clone(),
                None => {
                    let s = self
                        .registration_cached(c, device.as_str())
                        .await?
                        .map(|reg| reg.site);
                    sites.insert(device.as_str(), s.clone());
                    s
                }
            };
            if let Some(site) = site {
                rollup.add(
                    &site,
                    device.as_str(),
                    super::db_int(e.at_ms),
                    &e.event,
                    now,
                );
            }
        }
        if !rollup.is_empty() {
            self.write_rollup(c, &rollup).await?;
        }
        Ok(results)
    }
}

/// The event's `type` (its serde tag), stored in its own column.
fn event_kind(e: &EventBody) -> Result<String> {
    Ok(serde_json::to_value(e)?
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("other")
        .to_owned())
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

/// `UPDATE devices SET last_seen_ms = $1, connection = $2 WHERE id IN (…)` for up to `n`
/// devices; returns the text and its device count.
fn heartbeat_update_sql(n: usize) -> (&'static str, usize) {
    static TEXTS: OnceLock<Vec<&'static str>> = OnceLock::new();
    multi_row_sql(
        &TEXTS,
        |k| {
            format!(
                "UPDATE devices SET last_seen_ms = $1, connection = $2 WHERE id IN ({})",
                super::params(3, k)
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
                    // rolled = 1: summed into the analytics rollups in this transaction.
                    format!("({}, 1)", p.join(", "))
                })
                .collect();
            format!(
                "INSERT INTO events (device_id, event_id, at_ms, received_ms, kind, data, rolled) VALUES {} \
                 ON CONFLICT (device_id, event_id) DO NOTHING RETURNING device_id, event_id",
                values.join(", ")
            )
        },
        n,
    )
}

impl<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> for EventRecord {
    fn from_row(r: &'r sqlx::any::AnyRow) -> sqlx::Result<Self> {
        Ok(EventRecord {
            device: r.try_get("device_id")?,
            id: r.try_get("event_id")?,
            at_ms: r.try_get("at_ms")?,
            received_ms: r.try_get("received_ms")?,
            kind: r.try_get("kind")?,
            event: super::json(r, "data")?,
        })
    }
}

impl Store {
    /// Events, newest first.
    pub async fn events(
        &self,
        device: Option<&str>,
        since_ms: i64,
        limit: i64,
    ) -> Result<Vec<EventRecord>> {
        Ok(sqlx::query_as::<_, EventRecord>(
            "SELECT device_id, event_id, at_ms, received_ms, kind, data FROM events \
             WHERE ($1 = '' OR device_id = $1) AND received_ms >= $2 ORDER BY received_ms DESC, event_id DESC LIMIT $3",
        )
        .bind(device.unwrap_or(""))
        .bind(since_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Number of distinct events stored for a device.
    pub async fn event_count(&self, device: &str) -> Result<i64> {
        let super::One(n) = sqlx::query_as::<_, super::One<i64>>(
            "SELECT COUNT(*) FROM events WHERE device_id = $1",
        )
        .bind(device)
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }
}
