//! MQTT ingestion: the fleet's client subscribes to every device topic and records each message
//! in the database, idempotently, then tells the live feed.
//!
//! Messages are spread over worker tasks by device (a hash of the topic's device level), so one
//! device's messages are processed in order while devices proceed in parallel. An invalid message
//! is dropped with a logged reason and counted.
//!
//! Once a batch is committed, each device whose events it held gets one [`EventReceipt`] naming
//! them (new and duplicate alike): the device keeps an event in its outbox until then, so an event
//! lost between broker and database (a broker restart, a fleet crash after the PUBACK) is sent again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use medgate_contract::{
    Birth, CommandAck, DeviceTopics, Event, EventId, EventReceipt, FileChunk, Kind,
    MAX_PAYLOAD_BYTES, ReportedConfig, Schema, State, Telemetry, decode,
};
use rumqttc::{
    AsyncClient, Event as MqttEvent, EventLoop, MqttOptions, Packet, Publish, QoS, Transport,
};
use serde_json::json;
use tokio::sync::mpsc;

use crate::app::App;
use crate::config::{BrokerMode, FleetConfig};
use crate::pem::{self, TlsError};
use crate::store::{Message, Recorded, StoreError, db_int, now_db};

const WORKERS: usize = 8;

/// The broker address the fleet connects to.
pub fn broker_endpoint(config: &FleetConfig) -> (String, u16) {
    match (config.broker.mode, &config.broker.address) {
        (BrokerMode::External, Some(a)) => {
            let (h, p) = a.rsplit_once(':').unwrap_or((a, "8883"));
            (
                h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                p.parse().unwrap_or(8883),
            )
        }
        _ => {
            let l = config.broker.listen;
            let host = if l.ip().is_unspecified() {
                "127.0.0.1".to_owned()
            } else {
                l.ip().to_string()
            };
            (host, l.port())
        }
    }
}

/// Ingestion could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A TLS file of `[broker.tls]` is missing or wrong (the message names the key).
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The fleet's MQTT client, not connected yet: the client (for the publisher) and its event
/// loop (for [`start`]). The client queues what is published until the loop connects.
pub fn client(config: &FleetConfig) -> Result<(AsyncClient, EventLoop), IngestError> {
    let (host, port) = broker_endpoint(config);
    let mut opts = MqttOptions::new(config.broker.client_id.clone(), host, port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(MAX_PAYLOAD_BYTES + 1024, MAX_PAYLOAD_BYTES + 1024);
    // A persistent session: a broker with persistence (Mosquitto) keeps our subscriptions and
    // queues device messages while the fleet restarts.
    opts.set_clean_session(false);
    opts.set_inflight(1000);
    if let Some(tls) = &config.broker.tls {
        let files = client_tls(tls).map_err(IngestError::Tls)?;
        opts.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(files),
        ));
    }
    Ok(AsyncClient::new(opts, 10_000))
}

/// Spawns the polling and worker tasks: connects, subscribes, records device messages.
pub fn start(app: Arc<App>, client: AsyncClient, mut eventloop: EventLoop, config: &FleetConfig) {
    let mut senders = Vec::with_capacity(WORKERS);
    for _ in 0..WORKERS {
        let (tx, rx) = mpsc::channel::<Publish>(10_000);
        senders.push(tx);
        tokio::spawn(worker(app.clone(), rx));
    }

    let filters: Vec<String> = Kind::ALL
        .into_iter()
        .filter(|k| k.from_device())
        .map(|k| match &config.broker.shared_group {
            Some(g) => format!("$share/{g}/{}", k.fleet_filter()),
            None => k.fleet_filter(),
        })
        .collect();
    let sub_client = client.clone();
    let app_poll = app.clone();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        // Time the poll loop waited on full worker queues since the last warning.
        let mut paused = Duration::ZERO;
        let mut last_pause_log: Option<std::time::Instant> = None;
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(200);
                    app_poll
                        .metrics
                        .mqtt_connected
                        .store(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!("fleet connected to the broker");
                    // rumqttc does not re-subscribe by itself; subscribe from another task (never
                    // await a request from the polling task).
                    let c = sub_client.clone();
                    let f = filters.clone();
                    let app = app_poll.clone();
                    tokio::spawn(async move {
                        let subs = f
                            .into_iter()
                            .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
                        if let Err(e) = c.subscribe_many(subs).await {
                            tracing::error!(error = %e, "cannot subscribe to device topics");
                        }
                        app.ops.republish_all_desired().await;
                    });
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    // rumqttc has already acknowledged a QoS 1 message when it is read (devices
                    // keep events until their receipt). Only a full worker queue (10,000 messages:
                    // the database far behind) stops the reading: TCP back-pressure on the broker,
                    // nothing dropped, no unbounded buffer. Logged, as it delays every device.
                    let shard = shard_of(&p.topic);
                    let p = match senders[shard].try_send(p) {
                        Ok(()) => continue,
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                        Err(mpsc::error::TrySendError::Full(p)) => p,
                    };
                    let since = std::time::Instant::now();
                    if senders[shard].send(p).await.is_err() {
                        break;
                    }
                    paused += since.elapsed();
                    if last_pause_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        tracing::warn!(
                            paused_ms = u64::try_from(paused.as_millis()).unwrap_or(u64::MAX),
                            worker = shard,
                            "the database is behind: reading from the broker paused while a worker queue was full"
                        );
                        paused = Duration::ZERO;
                        last_pause_log = Some(std::time::Instant::now());
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    app_poll
                        .metrics
                        .mqtt_connected
                        .store(0, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(error = %e, delay_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX), "fleet lost the broker; reconnecting");
                    tokio::time::sleep(
                        backoff
                            + Duration::from_millis(fastrand::u64(
                                0..=u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX) / 2,
                            )),
                    )
                    .await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    });
}

fn client_tls(tls: &crate::config::BrokerTls) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in pem::certificates("broker.tls.ca", &tls.ca)? {
        roots.add(c).map_err(pem::refused("broker.tls.ca"))?;
    }
    let chain = pem::certificates("broker.tls.certificate", &tls.certificate)?;
    let key = pem::private_key("broker.tls.private_key", &tls.private_key)?;
    let config = rustls::ClientConfig::builder_with_provider(pem::provider())
        .with_safe_default_protocol_versions()
        .map_err(pem::refused("broker.tls"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(pem::refused("broker.tls"))?;
    Ok(Arc::new(config))
}

fn shard_of(topic: &str) -> usize {
    // The device level (4th); FNV-1a.
    let device = topic.split('/').nth(3).unwrap_or(topic);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    usize::try_from(h % WORKERS as u64).unwrap_or(0)
}

/// A decoded device message.
#[derive(Debug)]
enum Msg {
    Birth(Birth),
    State(State),
    Telemetry(Telemetry),
    Event(Event),
    Ack(CommandAck),
    Reported(ReportedConfig),
    File(FileChunk),
}

#[derive(Debug)]
struct Item {
    topic: String,
    dev: DeviceTopics,
    msg: Msg,
}

/// Messages recorded in one transaction, at most.
const BATCH: usize = 256;

async fn worker(app: Arc<App>, mut rx: mpsc::Receiver<Publish>) {
    while let Some(first) = rx.recv().await {
        let mut raw = vec![first];
        while raw.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => raw.push(m),
                Err(_) => break,
            }
        }
        let items: Vec<Item> = raw
            .iter()
            .filter_map(|p| parse(&app, p.topic.clone(), &p.payload))
            .collect();
        if items.is_empty() {
            continue;
        }
        let now = now_db();
        let results = match record_batch(&app, &items, now).await {
            Ok(r) => r,
            Err(e) => {
                // One bad apple (or a conflict): record them one by one.
                tracing::debug!(error = %e, n = items.len(), "batch failed; recording one by one");
                let mut r = Vec::with_capacity(items.len());
                for item in &items {
                    r.push(record_persistently(&app, item, now).await);
                }
                r
            }
        };
        let mut stored: HashMap<&DeviceTopics, Vec<EventId>> = HashMap::new();
        for (item, result) in items.iter().zip(results) {
            if let (Msg::Event(e), Ok(Recorded::New | Recorded::Duplicate)) = (&item.msg, &result) {
                stored.entry(&item.dev).or_default().push(e.id);
            }
            after(&app, item, result).await;
        }
        for (dev, ids) in stored {
            send_receipts(&app, dev, ids);
        }
    }
}

/// Publishes receipts for stored events (QoS 1, never waiting: when the client's queue is full the
/// receipt is skipped and counted, and the device sends the events again after its timeout).
fn send_receipts(app: &App, dev: &DeviceTopics, ids: Vec<EventId>) {
    for chunk in ids.chunks(EventReceipt::MAX_IDS) {
        let receipt = EventReceipt {
            schema: Schema::default(),
            ids: chunk.to_vec(),
        };
        match app.ops.publisher().receipt(dev, &receipt) {
            Ok(()) => app.metrics.receipts_sent.inc(),
            Err(e) => {
                app.metrics.receipts_skipped.inc();
                tracing::debug!(device = %dev.device, error = %e, "event receipt skipped");
            }
        }
    }
}

/// [`record_one`], retried while the database fails (an outage or a restart of PostgreSQL);
/// the device's later messages wait. Gives up after about two minutes (logged and counted).
async fn record_persistently(app: &App, item: &Item, now: i64) -> Result<Recorded, StoreError> {
    let mut delay = Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        match record_one(app, item, now).await {
            Ok(r) => return Ok(r),
            Err(e) if attempt >= 10 => return Err(e),
            Err(e) => {
                tracing::warn!(topic = %item.topic, attempt, error = %e, "cannot store a device message; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
                attempt += 1;
            }
        }
    }
}

fn parse(app: &App, topic: String, payload: &[u8]) -> Option<Item> {
    let (dev, kind) = match DeviceTopics::parse(&topic) {
        Ok(x) => x,
        Err(e) => {
            app.metrics.invalid.inc();
            tracing::warn!(topic, reason = %e, "dropped a message on an unknown topic");
            return None;
        }
    };
    // An empty retained payload clears a topic; nothing to record.
    if payload.is_empty() {
        return None;
    }
    let msg = match kind {
        Kind::Birth => decode(payload).map(Msg::Birth),
        Kind::State => decode(payload).map(Msg::State),
        Kind::Telemetry => decode(payload).map(Msg::Telemetry),
        Kind::Event => decode(payload).map(Msg::Event),
        Kind::CmdAck => decode(payload).map(Msg::Ack),
        Kind::ConfigReported => decode(payload).map(Msg::Reported),
        Kind::Cmd | Kind::ConfigDesired | Kind::EventReceipt | Kind::UpdateDesired => {
            return None; // our own messages
        }
        Kind::File => decode(payload).map(Msg::File),
    };
    match msg {
        Ok(msg) => Some(Item { topic, dev, msg }),
        Err(e) => {
            app.metrics.invalid.inc();
            tracing::warn!(topic, reason = %e, "dropped an invalid message");
            None
        }
    }
}

async fn record(
    store: &crate::store::Store,
    c: &mut sqlx::AnyConnection,
    item: &Item,
    now: i64,
) -> Result<Recorded, StoreError> {
    let msg = match &item.msg {
        Msg::Birth(b) => Message::Birth(b),
        Msg::State(s) => Message::State(s.state),
        Msg::Telemetry(t) => Message::Telemetry(t),
        Msg::Event(e) => Message::Event(e),
        Msg::Ack(a) => Message::Ack(a),
        Msg::Reported(r) => Message::Reported(r),
        Msg::File(f) => Message::File(f),
    };
    store
        .record(c, &item.dev.site, &item.dev.device, msg, now)
        .await
}

/// Records a batch in one transaction. Telemetry and events (nearly all the traffic) are
/// recorded in bulk, a few multi-row statements per batch ([`Store::record_telemetry_many`],
/// [`Store::record_events_many`]); they are written before any other message of the same device
/// in the batch (birth, state, acknowledgement, reported configuration), so each device's order is
/// kept where it matters.
async fn record_batch(
    app: &App,
    items: &[Item],
    now: i64,
) -> Result<Vec<Result<Recorded, StoreError>>, StoreError> {
    let store = &app.ops.store;
    let mut batch = store.begin().await?;
    let mut out: Vec<Option<Recorded>> = vec![None; items.len()];
    // Admitted telemetry and events not yet written (item indices), and their devices.
    let mut pending: Vec<usize> = Vec::new();
    let mut pending_devices: HashSet<&str> = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let device = item.dev.device.as_str();
        if let Msg::Telemetry(_) | Msg::Event(_) = &item.msg {
            match store
                .admit_device(batch.conn(), &item.dev.site, &item.dev.device, now)
                .await?
            {
                Err(why) => out[i] = Some(Recorded::Refused(why)),
                Ok(()) => {
                    pending.push(i);
                    pending_devices.insert(device);
                }
            }
            continue;
        }
        if pending_devices.contains(device) {
            flush(store, batch.conn(), items, &mut pending, &mut out, now).await?;
            pending_devices.clear();
        }
        out[i] = Some(record(store, batch.conn(), item, now).await?);
    }
    flush(store, batch.conn(), items, &mut pending, &mut out, now).await?;
    batch.commit().await?;
    Ok(out
        .into_iter()
        .map(|r| Ok(r.unwrap_or(Recorded::Duplicate)))
        .collect())
}

/// Writes the pending telemetry and events (in bulk) and fills in their outcomes.
async fn flush(
    store: &crate::store::Store,
    c: &mut sqlx::AnyConnection,
    items: &[Item],
    pending: &mut Vec<usize>,
    out: &mut [Option<Recorded>],
    now: i64,
) -> Result<(), StoreError> {
    let (mut tel, mut ev) = (Vec::new(), Vec::new());
    let (mut tel_rows, mut ev_rows) = (Vec::new(), Vec::new());
    for &i in pending.iter() {
        match &items[i].msg {
            Msg::Telemetry(t) => {
                tel.push(i);
                tel_rows.push((&items[i].dev.device, t));
            }
            Msg::Event(e) => {
                ev.push(i);
                ev_rows.push((&items[i].dev.device, e));
            }
            _ => {}
        }
    }
    pending.clear();
    if !tel_rows.is_empty() {
        let recorded = store.record_telemetry_many(c, &tel_rows, now).await?;
        for (i, r) in tel.into_iter().zip(recorded) {
            out[i] = Some(r);
        }
    }
    if !ev_rows.is_empty() {
        let recorded = store.record_events_many(c, &ev_rows, now).await?;
        for (i, r) in ev.into_iter().zip(recorded) {
            out[i] = Some(r);
        }
    }
    Ok(())
}

async fn record_one(app: &App, item: &Item, now: i64) -> Result<Recorded, StoreError> {
    let mut batch = app.ops.store.begin().await?;
    let r = record(&app.ops.store, batch.conn(), item, now).await?;
    batch.commit().await?;
    Ok(r)
}

async fn after(app: &App, item: &Item, result: Result<Recorded, StoreError>) {
    let m = &app.metrics;
    let topic = item.topic.as_str();
    let device = &item.dev.device;
    let recorded_at = now_db();
    match result {
        Ok(Recorded::New) => {
            m.messages.inc();
            match &item.msg {
                Msg::Telemetry(t) => {
                    m.observe_latency(recorded_at.saturating_sub(db_int(t.sent_at_ms)));
                    // wall (issue 13 part 1): walls show the latest figures.
                    app.ops.wall.changed();
                    // ota (issue 14): a local install's end goes to the audit trail.
                    if let Some(u) = &t.snapshot.update {
                        app.ops.note_local_update(device, u).await;
                    }
                }
                Msg::Event(e) => {
                    m.observe_latency(recorded_at.saturating_sub(db_int(e.at_ms)));
                    m.events_new.inc();
                    app.ops.live(json!({"type": "event", "device": device, "site": item.dev.site, "id": e.id, "at_ms": e.at_ms, "event": e.event}));
                }
                Msg::Ack(a) => {
                    app.ops.live(json!({"type": "command", "device": device, "id": a.id, "status": a.status, "code": a.code}));
                }
                Msg::Birth(_) => {
                    app.ops.live_device(device.as_str()).await;
                    app.ops.resend_queued_commands(device.as_str()).await;
                }
                Msg::State(_) | Msg::Reported(_) => app.ops.live_device(device.as_str()).await,
                Msg::File(_) => {}
            }
        }
        Ok(Recorded::Duplicate) => {
            m.messages.inc();
            if matches!(item.msg, Msg::Event(_)) {
                m.events_duplicate.inc();
            }
        }
        Ok(Recorded::Refused(why)) => {
            m.refused.inc();
            tracing::warn!(topic, reason = %why, "refused a message");
        }
        Err(e) => {
            m.db_errors.inc();
            tracing::error!(topic, error = %e, "cannot record a message");
        }
    }
}
