//! The reporter against a real Mosquitto (started by the test on a free loopback port):
//! birth, state, telemetry, events, commands, desired configuration; broker outage and reporter
//! restart with no event lost; then mutual TLS with certificates made by rcgen.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use medgate_contract::*;
use medgate_report::*;
use medgate_testkit::{Collector, Mosquitto, Pki, free_port};

struct Appliance {
    received: AtomicU64,
}

impl TelemetrySource for Appliance {
    fn snapshot(&self) -> TelemetrySnapshot {
        TelemetrySnapshot {
            received: Flow {
                objects: self.received.load(Ordering::Relaxed),
                bytes: 0,
            },
            ..TelemetrySnapshot::default()
        }
    }
    fn inventory(&self) -> Inventory {
        Inventory {
            serial: Token::new("SN-1").expect("valid"),
            hardware_profile: Token::new("test").expect("valid"),
            os_version: Token::new("1").expect("valid"),
            appliance_version: Token::new("0.1.0").expect("valid"),
            ae_title: Some(AeTitle::new("MEDGATE").expect("valid")),
            nics: vec![],
            disk: Disk {
                total_bytes: 100,
                free_bytes: 50,
            },
            peers: vec![],
            config_schema: None,
        }
    }
}

struct Handler {
    applied: std::sync::Mutex<Vec<u64>>,
}

impl CommandHandler for Handler {
    async fn apply_config(&self, desired: &DesiredConfig) -> ApplyOutcome {
        if desired
            .config
            .get("listener")
            .and_then(|l| l.get("ae_title"))
            .and_then(|a| a.as_str())
            == Some("")
        {
            return ApplyOutcome::Rejected(vec![ConfigProblem {
                code: Token::new("invalid_value").expect("valid"),
                field: Some(Token::new("listener.ae_title").expect("valid")),
            }]);
        }
        self.applied.lock().expect("lock").push(desired.version);
        ApplyOutcome::Applied
    }
    async fn restart(&self) -> CommandResult {
        Err(CommandFailure::rejected("unsupported"))
    }
    async fn retry_quarantine(&self) -> CommandResult {
        Ok(CommandOutput {
            objects: Some(3),
            ..CommandOutput::default()
        })
    }
    async fn purge_quarantine(&self, _older_than: Option<Duration>) -> CommandResult {
        Ok(CommandOutput {
            objects: Some(2),
            bytes: Some(1000),
            ..CommandOutput::default()
        })
    }
    /// A 300 KiB "bundle": three chunks on the wire.
    async fn collect_diagnostics(&self) -> Result<ProducedFile, CommandFailure> {
        let content = diag_content();
        Ok(ProducedFile {
            output: CommandOutput {
                bytes: Some(content.len() as u64),
                sha256: Some(Sha256Hex::new("ab".repeat(32)).expect("hex")),
                file: Some(Token::new("diag-1.json").expect("token")),
                ..CommandOutput::default()
            },
            content,
        })
    }
}

fn diag_content() -> Vec<u8> {
    (0..300 * 1024u32)
        .map(|i| u8::try_from(i % 253).expect("fits"))
        .collect()
}

fn ids() -> (SiteId, DeviceId) {
    (
        SiteId::new("site-a").expect("valid"),
        DeviceId::new("dev-1").expect("valid"),
    )
}

fn config(port: u16) -> ReporterConfig {
    let (site, device) = ids();
    let mut c = ReporterConfig::new(format!("127.0.0.1:{port}"), site, device);
    c.telemetry_interval_secs = 1;
    c.keep_alive_secs = 5;
    c.reconnect_min_ms = 100;
    c.reconnect_max_secs = 1;
    c.receipt_timeout_secs = 2;
    c
}

/// What the fleet does once it stored events: a receipt naming them.
async fn send_receipt(fleet: &Collector, events: &[Event]) {
    let (site, device) = ids();
    let receipt = EventReceipt {
        schema: Schema::default(),
        ids: events.iter().map(|e| e.id).collect(),
    };
    fleet
        .client
        .publish(
            DeviceTopics::new(site, device).topic(Kind::EventReceipt),
            rumqttc::QoS::AtLeastOnce,
            false,
            encode(&receipt).expect("encode"),
        )
        .await
        .expect("publish");
}

fn received_event(i: u64) -> EventBody {
    EventBody::StudyReceived {
        calling_ae: AeTitle::new("CT01").expect("valid"),
        called_ae: AeTitle::new("MEDGATE").expect("valid"),
        modality: Some(Modality::new("CT").expect("valid")),
        sop_classes: vec![],
        received: Flow {
            objects: i,
            bytes: i * 1000,
        },
        duration_ms: 1,
    }
}

/// Distinct events seen (by id), and whether the first copies came in id order.
fn events(c: &Collector) -> (Vec<Event>, bool) {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for p in c.on("/event") {
        let e: Event = decode(&p).expect("valid event");
        if seen.insert(e.id) {
            out.push(e);
        }
    }
    let ordered = out.windows(2).all(|w| w[0].id < w[1].id);
    (out, ordered)
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("medgate_report=info")
        .with_test_writer()
        .try_init();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_over_plain_mqtt_and_survives_outages_and_restarts() {
    init_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut broker = Mosquitto::start(dir.path(), port, "allow_anonymous true").expect("mosquitto");
    let fleet = Collector::start(port, "fleet", "medgate/v1/#", None).await;
    // Let the collector subscribe before anything is published (non-retained events).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let app = Arc::new(Appliance {
        received: AtomicU64::new(7),
    });
    let handler = Arc::new(Handler {
        applied: std::sync::Mutex::new(vec![]),
    });
    let outbox = dir.path().join("outbox");
    let reporter =
        Reporter::start(config(port), &outbox, app.clone(), handler.clone()).expect("start");

    // Birth (retained, with inventory), online state, telemetry.
    fleet
        .wait(10, "birth", |c| !c.on("/dev-1/birth").is_empty())
        .await;
    let birth: Birth = decode(&fleet.on("/birth")[0]).expect("valid birth");
    assert_eq!(birth.inventory.serial.as_str(), "SN-1");
    fleet
        .wait(10, "online", |c| {
            c.on("/state")
                .iter()
                .any(|p| decode::<State>(p).expect("state").state == DeviceState::Online)
        })
        .await;
    fleet
        .wait(10, "telemetry", |c| c.on("/telemetry").len() >= 2)
        .await;
    let t: Telemetry = decode(&fleet.on("/telemetry")[0]).expect("telemetry");
    assert_eq!(t.snapshot.received.objects, 7);

    // Events, in order, with ids.
    for i in 0..50 {
        reporter.event(received_event(i)).expect("event");
    }
    fleet
        .wait(10, "50 events", |c| events(c).0.len() == 50)
        .await;
    let (evs, ordered) = events(&fleet);
    assert!(ordered, "events in id order");
    // The broker has them all, but only the fleet's receipt takes them out of the outbox; without
    // it they are sent again once the receipt timeout (2 s here) has passed.
    fleet
        .wait(10, "events sent again without a receipt", |c| {
            c.on("/event").len() >= 100
        })
        .await;
    assert_eq!(reporter.status().outbox_len, 50);
    assert!(reporter.status().resent >= 50);
    let (again, ordered) = events(&fleet);
    assert!(ordered && again == evs, "the same events, in order");
    send_receipt(&fleet, &evs[..20]).await;
    fleet
        .wait(10, "20 receipted", |_| reporter.status().outbox_len == 30)
        .await;
    send_receipt(&fleet, &evs).await;
    fleet
        .wait(10, "outbox drained", |_| reporter.status().outbox_len == 0)
        .await;
    let acked = reporter.status().acked;
    assert!(acked >= 50, "{acked}");
    // A receipt that is not JSON, or for another stream, changes nothing.
    let receipt_topic = DeviceTopics::new(ids().0, ids().1).topic(Kind::EventReceipt);
    fleet
        .client
        .publish(
            &receipt_topic,
            rumqttc::QoS::AtLeastOnce,
            false,
            b"[1,2".to_vec(),
        )
        .await
        .expect("publish");

    // Commands: acknowledged (accepted, then the result), audited, redelivery ignored.
    let topics = DeviceTopics::new(ids().0, ids().1);
    let cmd = |id: &str, action| Command {
        schema: Schema::default(),
        id: CommandId::new(id).expect("valid"),
        issued_at_ms: now_ms(),
        expires_at_ms: None,
        action,
    };
    for c in [
        cmd(
            "c-purge",
            CommandAction::PurgeQuarantine {
                older_than_secs: Some(60),
            },
        ),
        cmd("c-restart", CommandAction::Restart),
        cmd("c-diag", CommandAction::CollectDiagnostics),
        cmd(
            "c-purge",
            CommandAction::PurgeQuarantine {
                older_than_secs: Some(60),
            },
        ),
    ] {
        fleet
            .client
            .publish(
                topics.topic(Kind::Cmd),
                rumqttc::QoS::AtLeastOnce,
                false,
                encode(&c).expect("encode"),
            )
            .await
            .expect("publish");
    }
    // Garbage on the command topic is dropped, not a crash.
    fleet
        .client
        .publish(
            topics.topic(Kind::Cmd),
            rumqttc::QoS::AtLeastOnce,
            false,
            b"{not json".to_vec(),
        )
        .await
        .expect("publish");
    fleet
        .wait(10, "acks", |c| c.on("/cmd-ack").len() >= 6)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acks: Vec<CommandAck> = fleet
        .on("/cmd-ack")
        .iter()
        .map(|p| decode(p).expect("ack"))
        .collect();
    let status_of = |id: &str| -> Vec<CommandStatus> {
        acks.iter()
            .filter(|a| a.id.as_str() == id)
            .map(|a| a.status)
            .collect()
    };
    assert_eq!(
        status_of("c-purge"),
        vec![CommandStatus::Accepted, CommandStatus::Succeeded],
        "redelivery ignored"
    );
    assert_eq!(
        status_of("c-restart"),
        vec![CommandStatus::Accepted, CommandStatus::Rejected]
    );
    assert_eq!(
        status_of("c-diag"),
        vec![CommandStatus::Accepted, CommandStatus::Succeeded]
    );
    // The bundle's bytes came before its result, in chunks that fit a payload.
    let mut chunks: Vec<FileChunk> = fleet
        .on("/file")
        .iter()
        .map(|p| decode(p).expect("file chunk"))
        .collect();
    chunks.sort_by_key(|c| c.offset);
    chunks.dedup_by_key(|c| c.offset);
    assert_eq!(chunks.len(), 3, "300 KiB in 128 KiB chunks");
    let mut joined = Vec::new();
    for c in &chunks {
        assert_eq!(
            (c.command.as_str(), c.name.as_str()),
            ("c-diag", "diag-1.json")
        );
        assert_eq!(c.total_bytes, 300 * 1024);
        joined.extend(c.bytes().expect("base64"));
    }
    assert_eq!(joined, diag_content());
    let purge = acks
        .iter()
        .find(|a| a.id.as_str() == "c-purge" && a.status == CommandStatus::Succeeded)
        .expect("purge ack");
    assert_eq!(purge.output.objects, Some(2));
    fleet
        .wait(10, "audit event", |c| {
            events(c).0.iter().any(|e| {
                matches!(
                    &e.event,
                    EventBody::QuarantineChanged {
                        action: QuarantineAction::Purge,
                        objects: 2,
                        ..
                    }
                )
            })
        })
        .await;
    assert!(reporter.status().invalid_dropped >= 1);

    // Desired configuration: applied once, reported (retained); an invalid one is rejected.
    let desired = |version, ae: &str| DesiredConfig {
        schema: Schema::default(),
        version,
        issued_at_ms: now_ms(),
        config: serde_json::json!({"listener": {"ae_title": ae}})
            .as_object()
            .cloned()
            .expect("object"),
    };
    let publish_desired = |d: DesiredConfig| {
        let client = fleet.client.clone();
        let topic = topics.topic(Kind::ConfigDesired);
        async move {
            client
                .publish(
                    topic,
                    rumqttc::QoS::AtLeastOnce,
                    true,
                    encode(&d).expect("encode"),
                )
                .await
                .expect("publish")
        }
    };
    publish_desired(desired(1, "NEWAE")).await;
    fleet
        .wait(10, "reported v1", |c| {
            c.on("/config/reported")
                .iter()
                .any(|p| decode::<ReportedConfig>(p).expect("rep").desired_version == 1)
        })
        .await;
    publish_desired(desired(2, "")).await;
    fleet
        .wait(10, "reported v2", |c| {
            c.on("/config/reported")
                .iter()
                .any(|p| decode::<ReportedConfig>(p).expect("rep").desired_version == 2)
        })
        .await;
    let reports: Vec<ReportedConfig> = fleet
        .on("/config/reported")
        .iter()
        .map(|p| decode(p).expect("rep"))
        .collect();
    let v2 = reports.iter().find(|r| r.desired_version == 2).expect("v2");
    assert_eq!((v2.status, v2.running_version), (ConfigStatus::Rejected, 1));
    assert_eq!(
        v2.problems[0].field.as_ref().map(Token::as_str),
        Some("listener.ae_title")
    );
    assert_eq!(*handler.applied.lock().expect("lock"), vec![1]);

    // Broker down: events keep being accepted (never blocking), then delivered when it is back.
    broker.stop();
    fleet
        .wait(15, "reporter notices the outage", |_| {
            !reporter.status().connected
        })
        .await;
    let started = std::time::Instant::now();
    for i in 50..150 {
        reporter
            .event(received_event(i))
            .expect("event while broker down");
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "event() never waits on the network"
    );
    assert!(reporter.status().outbox_len >= 100);
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.restart().expect("mosquitto restart");
    fleet
        .wait(30, "events after the outage", |c| {
            events(c)
                .0
                .iter()
                .filter(|e| matches!(e.event, EventBody::StudyReceived { .. }))
                .count()
                == 150
        })
        .await;
    let (_, ordered) = events(&fleet);
    assert!(ordered, "replayed in order");
    // The retained birth is back on the restarted (non-persistent) broker: re-published on reconnect.
    let late = Collector::start(port, "late", "medgate/v1/+/+/birth", None).await;
    late.wait(10, "retained birth after broker restart", |c| {
        !c.on("/birth").is_empty()
    })
    .await;

    // The fleet stored them: receipts empty the outbox.
    let (all, _) = events(&fleet);
    for chunk in all.chunks(EventReceipt::MAX_IDS.min(60)) {
        send_receipt(&fleet, chunk).await;
    }
    fleet
        .wait(10, "outbox drained after the outage", |_| {
            reporter.status().outbox_len == 0
        })
        .await;

    // Reporter restart with the broker down: the outbox keeps the events.
    reporter.shutdown(Duration::from_secs(5)).await;
    broker.stop();
    let reporter =
        Reporter::start(config(port), &outbox, app.clone(), handler.clone()).expect("restart");
    for i in 150..170 {
        reporter.event(received_event(i)).expect("event");
    }
    reporter.shutdown(Duration::from_secs(2)).await;
    let reporter = Reporter::start(config(port), &outbox, app, handler).expect("restart again");
    assert_eq!(reporter.status().outbox_len, 20, "kept across a restart");
    broker.restart().expect("mosquitto restart");
    fleet
        .wait(30, "events after the restart", |c| {
            events(c)
                .0
                .iter()
                .filter(|e| matches!(e.event, EventBody::StudyReceived { .. }))
                .count()
                == 170
        })
        .await;
    let (all, ordered) = events(&fleet);
    assert!(ordered, "in order across restarts");
    assert_eq!(
        all.iter()
            .map(|e| e.id.stream)
            .collect::<BTreeSet<_>>()
            .len(),
        1,
        "one stream"
    );
    assert!(evs.iter().all(|e| e.id.stream == all[0].id.stream));
    reporter.shutdown(Duration::from_secs(5)).await;
    // A clean shutdown leaves the retained state at offline (it reaches the collector through
    // the broker a moment after the shutdown returns).
    fleet
        .wait(10, "offline state after the shutdown", |c| {
            c.on("/state")
                .last()
                .is_some_and(|p| decode::<State>(p).expect("state").state == DeviceState::Offline)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_over_mutual_tls_and_refuses_without_a_client_certificate() {
    init_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let (dev_crt, dev_key) = pki.issue("dev-1", &[], "dev-1");
    let (fleet_crt, fleet_key) = pki.issue("fleet", &[], "fleet");
    let port = free_port();
    let _broker = Mosquitto::start(dir.path(), port, &pki.mosquitto_tls()).expect("mosquitto");

    let mut fleet_cfg = config(port);
    fleet_cfg.tls = Some(TlsFiles {
        ca: pki.ca(),
        certificate: Some(fleet_crt),
        private_key: Some(fleet_key),
    });
    let fleet_tls = fleet_cfg.rustls_config().expect("tls").expect("some");
    let fleet = Collector::start(port, "fleet", "medgate/v1/#", Some(fleet_tls)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let app = Arc::new(Appliance {
        received: AtomicU64::new(1),
    });
    let handler = Arc::new(Handler {
        applied: std::sync::Mutex::new(vec![]),
    });
    let mut cfg = config(port);
    cfg.tls = Some(TlsFiles {
        ca: pki.ca(),
        certificate: Some(dev_crt),
        private_key: Some(dev_key),
    });
    let reporter = Reporter::start(
        cfg,
        &dir.path().join("outbox"),
        app.clone(),
        handler.clone(),
    )
    .expect("start");
    reporter.event(received_event(1)).expect("event");
    fleet
        .wait(15, "birth over TLS", |c| !c.on("/dev-1/birth").is_empty())
        .await;
    fleet
        .wait(15, "event over TLS", |c| events(c).0.len() == 1)
        .await;
    assert!(reporter.status().connected);
    reporter.shutdown(Duration::from_secs(5)).await;

    // Without a client certificate the broker refuses the connection.
    let mut anon = config(port);
    anon.device = DeviceId::new("dev-2").expect("valid");
    anon.tls = Some(TlsFiles {
        ca: pki.ca(),
        certificate: None,
        private_key: None,
    });
    let r2 = Reporter::start(anon, &dir.path().join("outbox2"), app, handler).expect("start");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = r2.status();
    assert!(
        !s.connected && s.connects == 0,
        "connected without a client certificate: {s:?}"
    );
    r2.shutdown(Duration::from_secs(2)).await;
}
