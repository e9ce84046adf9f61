//! The reporter: one tokio task that keeps an MQTT session to the broker and moves messages.
//!
//! Per connection ("session") it creates a fresh rumqttc client and event loop, so nothing
//! unacknowledged lives only in rumqttc's memory: the outbox is the only queue. A separate task
//! drives `EventLoop::poll()` and forwards its events over a channel (publishing from the polling
//! task would deadlock, DESIGN §3). The session task:
//! - waits for CONNACK, subscribes to `cmd`, `config/desired` and `event-receipt` (rumqttc does not
//!   re-subscribe), publishes the retained birth and `online` state (the last will is the retained
//!   `offline`);
//! - publishes outbox entries in sequence order, a bounded window at once ([`crate::delivery`]);
//!   an event leaves the outbox when the fleet's receipt names it, any other entry when the
//!   broker's PUBACK arrives; events without a receipt in time are sent again;
//! - publishes telemetry (QoS 0) every interval;
//! - hands commands and desired configurations to the appliance's [`CommandHandler`] on tasks of
//!   their own and puts their acknowledgements in the outbox.
//!
//! When the connection is lost the session ends; the next one starts after a backoff (doubling,
//! with jitter) and replays the outbox from its oldest entry.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use medgate_contract::{
    Birth, Command, CommandAck, CommandAction, CommandOutput, CommandStatus, ConfigStatus,
    DesiredConfig, DesiredUpdate, DeviceState, DeviceTopics, Event, EventBody, EventId,
    EventReceipt, FileChunk, Kind, MAX_FILE_BYTES, MAX_PAYLOAD_BYTES, Message, QuarantineAction,
    ReportedConfig, Schema, State, Telemetry, Token, decode, encode, now_ms,
};
use rumqttc::{
    AsyncClient, ConnectionError, Event as MqttEvent, LastWill, MqttOptions, Outgoing, Packet, QoS,
    Transport,
};
use tokio::sync::{Mutex, Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{ConfigError, ReporterConfig};
use crate::delivery::{Delivery, WINDOW};
use crate::handler::{
    ApplyOutcome, CommandFailure, CommandHandler, CommandResult, ProducedFile, TelemetrySource,
};
use crate::outbox::{Outbox, OutboxError};

/// Command ids remembered (to ignore redeliveries).
const COMMANDS_REMEMBERED: usize = 1000;
const META_RUNNING: &str = "config.running_version";
const META_ANSWERED: &str = "config.answered_version";

/// Why the reporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A setting is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The outbox cannot be opened.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// Called outside a tokio runtime.
    #[error("Reporter::start must be called inside a tokio runtime")]
    NoRuntime,
}

/// What the reporter is doing (for the appliance's status page and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReporterStatus {
    /// Connected to the broker now.
    pub connected: bool,
    /// Sessions established since start.
    pub connects: u64,
    /// Outbox entries confirmed since start: events by the fleet's receipt, other entries by the
    /// broker's PUBACK.
    pub acked: u64,
    /// Events sent again because the fleet's receipt did not come in time (since start).
    pub resent: u64,
    /// Entries waiting in the outbox.
    pub outbox_len: usize,
    /// Entries dropped because the outbox was full (since start).
    pub outbox_dropped: u64,
    /// Invalid incoming messages dropped (since start).
    pub invalid_dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connected: AtomicBool,
    connects: AtomicU64,
    acked: AtomicU64,
    resent: AtomicU64,
    invalid: AtomicU64,
}

/// The handle the appliance keeps. Cheap calls, never blocking on the network.
#[derive(Debug)]
pub struct Reporter {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    outbox: Outbox,
    topics: DeviceTopics,
    wake: Notify,
    counters: Counters,
    /// The inventory changed: publish the birth again.
    rebirth: AtomicBool,
}

impl Shared {
    /// Appends a message to the outbox and wakes the session.
    fn push<M: Message>(
        &self,
        retain: bool,
        make: impl FnOnce(EventId) -> M,
    ) -> Result<EventId, OutboxError> {
        let topic = self.topics.topic(M::KIND);
        let id = self.outbox.append_with(|id| {
            // Serialising contract types cannot fail; an empty payload would be dropped by the fleet.
            let payload = encode(&make(id)).unwrap_or_default();
            (topic, payload, retain)
        })?;
        self.wake.notify_one();
        Ok(id)
    }

    fn event(&self, body: EventBody) -> Result<EventId, OutboxError> {
        self.push(false, |id| Event {
            schema: Schema::default(),
            id,
            at_ms: now_ms(),
            event: body,
        })
    }

    /// Puts the chunks of a command's file in the outbox (before its acknowledgement, so the
    /// fleet has the bytes when it learns of the result) and returns the result to acknowledge.
    /// A file its result does not describe is not sent: the command fails with `internal`.
    fn file(&self, id: &medgate_contract::CommandId, f: ProducedFile) -> CommandResult {
        let ProducedFile { output, content } = f;
        let (Some(name), Some(sha256)) = (output.file.clone(), output.sha256.clone()) else {
            tracing::error!(command = %id, "the produced file has no name or digest; not sent");
            return Err(CommandFailure::failed("internal"));
        };
        let size = content.len() as u64;
        if output.bytes != Some(size) || size == 0 {
            tracing::error!(command = %id, size, described = ?output.bytes, "the produced file does not match its description; not sent");
            return Err(CommandFailure::failed("internal"));
        }
        if size > MAX_FILE_BYTES {
            tracing::warn!(command = %id, size, max = MAX_FILE_BYTES, "the produced file is larger than the fleet accepts; not sent");
            return Err(CommandFailure::failed("too_large"));
        }
        for chunk in FileChunk::split(id, &name, &sha256, &content) {
            if let Err(e) = self.push(false, |_| chunk) {
                tracing::error!(command = %id, error = %e, "cannot store a file chunk");
                return Err(CommandFailure::failed("io"));
            }
        }
        tracing::info!(command = %id, file = %name, bytes = size, "file queued for the fleet");
        Ok(output)
    }

    fn ack(
        &self,
        id: &medgate_contract::CommandId,
        status: CommandStatus,
        code: Option<Token>,
        output: CommandOutput,
    ) {
        let r = self.push(false, |_| CommandAck {
            schema: Schema::default(),
            id: id.clone(),
            at_ms: now_ms(),
            status,
            code,
            output,
        });
        if let Err(e) = r {
            tracing::error!(command = %id, error = %e, "cannot store the command acknowledgement");
        }
    }
}

impl Reporter {
    /// Validates the configuration, opens the outbox in `outbox_dir` and starts reporting on the
    /// current tokio runtime. Returns at once: connecting happens in the background.
    pub fn start<S: TelemetrySource, H: CommandHandler>(
        config: ReporterConfig,
        outbox_dir: &Path,
        source: Arc<S>,
        handler: Arc<H>,
    ) -> Result<Reporter, ReportError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ReportError::NoRuntime)?;
        let outbox = Outbox::open(outbox_dir, config.outbox_max_entries)?;
        let topics = DeviceTopics::new(config.site.clone(), config.device.clone());
        let shared = Arc::new(Shared {
            outbox,
            topics,
            wake: Notify::new(),
            counters: Counters::default(),
            rebirth: AtomicBool::new(false),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let worker = Worker {
            config,
            shared: shared.clone(),
            source,
            handler,
            shutdown: shutdown_rx,
            boot_id: fastrand::u64(..),
            telemetry_seq: 0,
            config_lock: Arc::new(Mutex::new(())),
        };
        let task = runtime.spawn(worker.run());
        Ok(Reporter {
            shared,
            shutdown,
            task,
        })
    }

    /// Records an event: appended to the durable outbox and published when the broker is
    /// reachable, at least once, in order. Returns its id. Never waits on the network.
    pub fn event(&self, body: EventBody) -> Result<EventId, OutboxError> {
        self.shared.event(body)
    }

    /// The inventory changed (e.g. the appliance started with a new configuration): the birth
    /// message is published again, retained, with the current inventory. Never waits.
    pub fn refresh_inventory(&self) {
        self.shared.rebirth.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
    }

    /// The device's topics.
    pub fn topics(&self) -> &DeviceTopics {
        &self.shared.topics
    }

    /// Current state.
    pub fn status(&self) -> ReporterStatus {
        let c = &self.shared.counters;
        ReporterStatus {
            connected: c.connected.load(Ordering::Relaxed),
            connects: c.connects.load(Ordering::Relaxed),
            acked: c.acked.load(Ordering::Relaxed),
            resent: c.resent.load(Ordering::Relaxed),
            outbox_len: self.shared.outbox.len(),
            outbox_dropped: self.shared.outbox.dropped(),
            invalid_dropped: c.invalid.load(Ordering::Relaxed),
        }
    }

    /// Stops: publishes the retained `offline` state if connected, disconnects, flushes the
    /// outbox. Waits at most `timeout`.
    pub async fn shutdown(self, timeout: Duration) {
        let _ = self.shutdown.send(true);
        let mut task = self.task;
        if tokio::time::timeout(timeout, &mut task).await.is_err() {
            task.abort();
        }
        if let Err(e) = self.shared.outbox.flush() {
            tracing::warn!(error = %e, "outbox flush at shutdown failed");
        }
    }
}

struct Worker<S, H> {
    config: ReporterConfig,
    shared: Arc<Shared>,
    source: Arc<S>,
    handler: Arc<H>,
    shutdown: watch::Receiver<bool>,
    boot_id: u64,
    telemetry_seq: u64,
    config_lock: Arc<Mutex<()>>,
}

enum SessionEnd {
    Shutdown,
    Lost { was_connected: bool },
}

impl<S: TelemetrySource, H: CommandHandler> Worker<S, H> {
    async fn run(mut self) {
        let min = Duration::from_millis(self.config.reconnect_min_ms);
        let max = Duration::from_secs(self.config.reconnect_max_secs);
        let mut backoff = min;
        loop {
            if *self.shutdown.borrow() {
                break;
            }
            match self.session().await {
                SessionEnd::Shutdown => break,
                SessionEnd::Lost { was_connected } => {
                    self.shared
                        .counters
                        .connected
                        .store(false, Ordering::Relaxed);
                    if was_connected {
                        backoff = min;
                    }
                    // Jitter: between half and all of the backoff.
                    let half = backoff / 2;
                    let delay = half
                        + Duration::from_millis(fastrand::u64(
                            0..=u64::try_from(half.as_millis()).unwrap_or(u64::MAX),
                        ));
                    tracing::info!(
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "reconnecting to the broker after a pause"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.shutdown.changed() => break,
                    }
                    backoff = (backoff * 2).min(max);
                }
            }
        }
        self.shared
            .counters
            .connected
            .store(false, Ordering::Relaxed);
    }

    fn options(&self) -> Result<MqttOptions, ConfigError> {
        let (host, port) = self.config.broker_addr()?;
        let mut opts = MqttOptions::new(self.config.device.as_str(), host, port);
        opts.set_keep_alive(self.config.keep_alive());
        opts.set_clean_session(true);
        opts.set_max_packet_size(MAX_PAYLOAD_BYTES + 1024, MAX_PAYLOAD_BYTES + 1024);
        opts.set_inflight(u16::try_from(WINDOW + 16).unwrap_or(u16::MAX));
        opts.set_request_channel_capacity(WINDOW * 4);
        let will = State {
            schema: Schema::default(),
            sent_at_ms: now_ms(),
            state: DeviceState::Offline,
            boot_id: self.boot_id,
        };
        opts.set_last_will(LastWill::new(
            self.shared.topics.topic(Kind::State),
            encode(&will).unwrap_or_default(),
            QoS::AtLeastOnce,
            true,
        ));
        if let Some((user, password)) = self.config.credentials()? {
            opts.set_credentials(user, password);
        }
        if let Some(tls) = self.config.rustls_config()? {
            opts.set_transport(Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls),
            ));
        }
        Ok(opts)
    }

    async fn session(&mut self) -> SessionEnd {
        let opts = match self.options() {
            Ok(o) => o,
            Err(e) => {
                // Validated at start; files may have changed since (certificate renewal).
                tracing::error!(error = %e, "fleet reporting settings unusable; retrying later");
                return SessionEnd::Lost {
                    was_connected: false,
                };
            }
        };
        let (client, mut eventloop) = AsyncClient::new(opts, WINDOW * 4);
        let (tx, mut rx) = mpsc::unbounded_channel::<Result<MqttEvent, ConnectionError>>();
        let poller = tokio::spawn(async move {
            loop {
                let r = eventloop.poll().await;
                let stop = r.is_err();
                if tx.send(r).is_err() || stop {
                    break;
                }
            }
        });
        let _abort = AbortOnDrop(poller);

        // CONNACK.
        let connect_wait = Duration::from_secs(30);
        match tokio::time::timeout(connect_wait, rx.recv()).await {
            Ok(Some(Ok(MqttEvent::Incoming(Packet::ConnAck(_))))) => {}
            Ok(Some(Err(e))) => {
                tracing::warn!(broker = %self.config.broker, error = %e, "cannot connect to the broker");
                return SessionEnd::Lost {
                    was_connected: false,
                };
            }
            Ok(Some(Ok(other))) => {
                tracing::warn!(broker = %self.config.broker, packet = ?other, "expected CONNACK from the broker");
                return SessionEnd::Lost {
                    was_connected: false,
                };
            }
            Ok(None) | Err(_) => {
                tracing::warn!(broker = %self.config.broker, "no CONNACK from the broker in time");
                return SessionEnd::Lost {
                    was_connected: false,
                };
            }
        }
        let counters = &self.shared.counters;
        counters.connected.store(true, Ordering::Relaxed);
        counters.connects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(broker = %self.config.broker, device = %self.config.device, "connected to the broker");

        let topics = self.shared.topics.clone();
        let mut delivery = Delivery::new(Duration::from_secs(self.config.receipt_timeout_secs));
        let receipt_topic = topics.topic(Kind::EventReceipt);
        let lost = SessionEnd::Lost {
            was_connected: true,
        };

        let subs = [
            rumqttc::SubscribeFilter::new(topics.topic(Kind::Cmd), QoS::AtLeastOnce),
            rumqttc::SubscribeFilter::new(topics.topic(Kind::ConfigDesired), QoS::AtLeastOnce),
            rumqttc::SubscribeFilter::new(topics.topic(Kind::UpdateDesired), QoS::AtLeastOnce),
            rumqttc::SubscribeFilter::new(receipt_topic.clone(), QoS::AtLeastOnce),
        ];
        if client.subscribe_many(subs).await.is_err() {
            return lost;
        }
        self.shared.rebirth.store(false, Ordering::Relaxed);
        let birth = self.birth();
        let online = State {
            schema: Schema::default(),
            sent_at_ms: now_ms(),
            state: DeviceState::Online,
            boot_id: self.boot_id,
        };
        for (kind, payload) in [
            (Kind::Birth, encode(&birth).unwrap_or_default()),
            (Kind::State, encode(&online).unwrap_or_default()),
        ] {
            if client
                .publish(topics.topic(kind), QoS::AtLeastOnce, true, payload)
                .await
                .is_err()
            {
                return lost;
            }
            delivery.published_other();
        }

        let mut tick =
            tokio::time::interval(Duration::from_secs(self.config.telemetry_interval_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shared = self.shared.clone();
        loop {
            if shared.rebirth.swap(false, Ordering::Relaxed) {
                let birth = encode(&self.birth()).unwrap_or_default();
                if client
                    .publish(topics.topic(Kind::Birth), QoS::AtLeastOnce, true, birth)
                    .await
                    .is_err()
                {
                    return lost;
                }
                delivery.published_other();
            }
            // Fill the window from the outbox.
            while delivery.room() > 0 {
                let batch = match shared.outbox.after(delivery.cursor(), delivery.room()) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the outbox");
                        break;
                    }
                };
                if batch.is_empty() {
                    break;
                }
                for entry in batch {
                    let needs_receipt =
                        matches!(DeviceTopics::parse(&entry.topic), Ok((_, Kind::Event)));
                    delivery.published_entry(entry.seq, needs_receipt);
                    if client
                        .publish(entry.topic, QoS::AtLeastOnce, entry.retain, entry.payload)
                        .await
                        .is_err()
                    {
                        return lost;
                    }
                }
            }

            tokio::select! {
                _ = self.shutdown.changed() => {
                    self.goodbye(&client, &mut rx).await;
                    return SessionEnd::Shutdown;
                }
                ev = rx.recv() => match ev {
                    None => return lost,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "connection to the broker lost");
                        return lost;
                    }
                    Some(Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid)))) => delivery.on_outgoing_publish(pkid),
                    Some(Ok(MqttEvent::Incoming(Packet::PubAck(ack)))) => {
                        if let Some(seq) = delivery.on_puback(ack.pkid, Instant::now()) {
                            self.confirmed(seq);
                        }
                    }
                    Some(Ok(MqttEvent::Incoming(Packet::Publish(p)))) if p.topic == receipt_topic => {
                        self.on_receipt(&mut delivery, &p.payload);
                    }
                    Some(Ok(MqttEvent::Incoming(Packet::Publish(p)))) => self.on_message(&p.topic, &p.payload),
                    Some(Ok(_)) => {}
                },
                _ = shared.wake.notified() => {}
                _ = tick.tick() => {
                    if let Some(n) = delivery.receipt_overdue(Instant::now()) {
                        counters.resent.fetch_add(n as u64, Ordering::Relaxed);
                        tracing::warn!(
                            events = n,
                            next_wait_secs = delivery.receipt_timeout().as_secs(),
                            "the fleet has not confirmed published events in time: sending them again"
                        );
                    }
                    self.telemetry_seq += 1;
                    let t = Telemetry {
                        schema: Schema::default(),
                        sent_at_ms: now_ms(),
                        boot_id: self.boot_id,
                        seq: self.telemetry_seq,
                        snapshot: self.source.snapshot(),
                    };
                    // QoS 0 and never waiting: if the request queue is full, this one is skipped.
                    match client.try_publish(topics.topic(Kind::Telemetry), QoS::AtMostOnce, false, encode(&t).unwrap_or_default()) {
                        Ok(()) => delivery.published_other(),
                        Err(e) => tracing::debug!(error = %e, "telemetry skipped"),
                    }
                }
            }
        }
    }

    /// An outbox entry is confirmed (by the fleet's receipt or the broker's PUBACK): removed.
    fn confirmed(&self, seq: u64) {
        match self.shared.outbox.remove(seq) {
            Ok(true) => {
                self.shared.counters.acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => {}
            Err(e) => tracing::error!(seq, error = %e, "cannot remove a confirmed outbox entry"),
        }
    }

    /// The fleet's receipt: the events it names (of this outbox's stream) leave the outbox.
    fn on_receipt(&self, delivery: &mut Delivery, payload: &[u8]) {
        let receipt: EventReceipt = match decode(payload) {
            Ok(r) => r,
            Err(e) => {
                return self.invalid(
                    &self.shared.topics.topic(Kind::EventReceipt),
                    &e.to_string(),
                );
            }
        };
        let stream = self.shared.outbox.stream();
        let seqs: Vec<u64> = receipt
            .ids
            .iter()
            .filter(|id| id.stream == stream)
            .map(|id| id.seq)
            .collect();
        delivery.on_receipt(&seqs);
        for seq in seqs {
            self.confirmed(seq);
        }
    }

    fn birth(&self) -> Birth {
        Birth {
            schema: Schema::default(),
            sent_at_ms: now_ms(),
            boot_id: self.boot_id,
            inventory: self.source.inventory(),
            config_version: self
                .shared
                .outbox
                .meta_get_u64(META_RUNNING)
                .ok()
                .flatten()
                .unwrap_or(0),
            telemetry_interval_secs: u32::try_from(self.config.telemetry_interval_secs)
                .unwrap_or(u32::MAX),
        }
    }

    /// Clean shutdown: retained `offline`, then DISCONNECT (so the will is not sent).
    async fn goodbye(
        &self,
        client: &AsyncClient,
        rx: &mut mpsc::UnboundedReceiver<Result<MqttEvent, ConnectionError>>,
    ) {
        let offline = State {
            schema: Schema::default(),
            sent_at_ms: now_ms(),
            state: DeviceState::Offline,
            boot_id: self.boot_id,
        };
        let topic = self.shared.topics.topic(Kind::State);
        if client
            .publish(
                topic,
                QoS::AtLeastOnce,
                true,
                encode(&offline).unwrap_or_default(),
            )
            .await
            .is_ok()
        {
            let _ = client.disconnect().await;
            // Drive until the disconnect went out (the poller ends) or 2 s passed.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(ev)) = rx.recv().await {
                    if matches!(ev, MqttEvent::Outgoing(Outgoing::Disconnect)) {
                        break;
                    }
                }
            })
            .await;
        }
        self.shared
            .counters
            .connected
            .store(false, Ordering::Relaxed);
        tracing::info!("disconnected from the broker (shutdown)");
    }

    fn on_message(&self, topic: &str, payload: &[u8]) {
        let kind = match DeviceTopics::parse(topic) {
            Ok((t, k)) if t == self.shared.topics => k,
            _ => {
                self.invalid(topic, "not one of this device's topics");
                return;
            }
        };
        match kind {
            Kind::Cmd => match decode::<Command>(payload) {
                Ok(cmd) => self.on_command(cmd),
                Err(e) => self.invalid(topic, &e.to_string()),
            },
            // An empty retained message clears the desired configuration: nothing to do.
            Kind::ConfigDesired if payload.is_empty() => {}
            Kind::ConfigDesired => match decode::<DesiredConfig>(payload) {
                Ok(desired) => self.on_desired(desired),
                Err(e) => self.invalid(topic, &e.to_string()),
            },
            // An empty retained message: the fleet cleared the device's update topic.
            Kind::UpdateDesired if payload.is_empty() => {}
            Kind::UpdateDesired => match decode::<DesiredUpdate>(payload) {
                Ok(desired) => {
                    tracing::info!(campaign = %desired.campaign, "update instruction from the fleet");
                    self.handler.desired_update(desired);
                }
                Err(e) => self.invalid(topic, &e.to_string()),
            },
            _ => self.invalid(topic, "not a topic this device subscribes to"),
        }
    }

    fn invalid(&self, topic: &str, reason: &str) {
        self.shared.counters.invalid.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(topic, reason, "dropped an invalid message from the fleet");
    }

    fn on_command(&self, cmd: Command) {
        let shared = self.shared.clone();
        match shared
            .outbox
            .remember_once(&format!("cmd:{}", cmd.id), COMMANDS_REMEMBERED)
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(command = %cmd.id, "command already handled (redelivery); ignored");
                return;
            }
            Err(e) => {
                tracing::error!(command = %cmd.id, error = %e, "cannot record the command id; handling it anyway")
            }
        }
        if cmd.expires_at_ms.is_some_and(|exp| exp < now_ms()) {
            tracing::info!(command = %cmd.id, "command expired before it arrived");
            shared.ack(
                &cmd.id,
                CommandStatus::Expired,
                None,
                CommandOutput::default(),
            );
            return;
        }
        tracing::info!(command = %cmd.id, action = ?cmd.action, "command received");
        shared.ack(
            &cmd.id,
            CommandStatus::Accepted,
            None,
            CommandOutput::default(),
        );
        let handler = self.handler.clone();
        tokio::spawn(async move {
            let (result, audit) = match &cmd.action {
                CommandAction::Restart => (handler.restart().await, None),
                CommandAction::RetryQuarantine => (
                    handler.retry_quarantine().await,
                    Some(QuarantineAction::Retry),
                ),
                CommandAction::PurgeQuarantine { older_than_secs } => (
                    handler
                        .purge_quarantine(older_than_secs.map(Duration::from_secs))
                        .await,
                    Some(QuarantineAction::Purge),
                ),
                CommandAction::CollectDiagnostics => {
                    let produced = handler.collect_diagnostics().await;
                    (produced.and_then(|f| shared.file(&cmd.id, f)), None)
                }
                CommandAction::RetryNow { destination } => {
                    (handler.retry_now(destination.clone()).await, None)
                }
            };
            match result {
                Ok(output) => {
                    if let Some(action) = audit {
                        let body = EventBody::QuarantineChanged {
                            action,
                            objects: output.objects.unwrap_or(0),
                            command: Some(cmd.id.clone()),
                        };
                        if let Err(e) = shared.event(body) {
                            tracing::error!(command = %cmd.id, error = %e, "cannot store the quarantine audit event");
                        }
                    }
                    tracing::info!(command = %cmd.id, "command succeeded");
                    shared.ack(&cmd.id, CommandStatus::Succeeded, None, output);
                }
                Err(f) => {
                    let status = if f.rejected {
                        CommandStatus::Rejected
                    } else {
                        CommandStatus::Failed
                    };
                    tracing::warn!(command = %cmd.id, code = %f.code, ?status, "command did not succeed");
                    shared.ack(&cmd.id, status, Some(f.code), CommandOutput::default());
                }
            }
        });
    }

    fn on_desired(&self, desired: DesiredConfig) {
        let shared = self.shared.clone();
        let handler = self.handler.clone();
        let lock = self.config_lock.clone();
        tokio::spawn(async move {
            // One configuration change at a time, each answered once.
            let _guard = lock.lock().await;
            let answered = shared
                .outbox
                .meta_get_u64(META_ANSWERED)
                .ok()
                .flatten()
                .unwrap_or(0);
            if desired.version <= answered {
                tracing::debug!(
                    version = desired.version,
                    answered,
                    "desired configuration already answered"
                );
                return;
            }
            tracing::info!(
                version = desired.version,
                "applying the desired configuration from the fleet"
            );
            let running = shared
                .outbox
                .meta_get_u64(META_RUNNING)
                .ok()
                .flatten()
                .unwrap_or(0);
            let (status, problems, running) = match handler.apply_config(&desired).await {
                ApplyOutcome::Applied => (ConfigStatus::Applied, Vec::new(), desired.version),
                ApplyOutcome::Rejected(p) => (ConfigStatus::Rejected, p, running),
                ApplyOutcome::RolledBack(p) => (ConfigStatus::RolledBack, p, running),
            };
            tracing::info!(
                version = desired.version,
                ?status,
                running,
                "desired configuration answered"
            );
            let stored = shared
                .outbox
                .meta_set_u64(META_RUNNING, running)
                .and_then(|()| shared.outbox.meta_set_u64(META_ANSWERED, desired.version))
                .and_then(|()| {
                    shared.push(true, |_| ReportedConfig {
                        schema: Schema::default(),
                        at_ms: now_ms(),
                        running_version: running,
                        desired_version: desired.version,
                        status,
                        problems,
                    })
                });
            if let Err(e) = stored {
                tracing::error!(error = %e, "cannot store the configuration report");
            }
        });
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
