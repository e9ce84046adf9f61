//! alerts (issue 13 part 3): the alerts store and the evaluator on both backends (SQLite, and
//! PostgreSQL started by the test): a rule raised once however many replicas evaluate, its
//! notifications written with the transition, claimed by one replica, cleared once, and the
//! acknowledgement and silence.

mod fleet_support;

use fleet_support::*;
use medgate_contract::{
    DestinationQueue, DestinationState, DeviceId, DeviceState, Schema, SiteId, Telemetry,
    TelemetrySnapshot, Token,
};
use medgate_fleet::alerts::config::AlertsSection;
use medgate_fleet::alerts::rules::{Machine, QuarantineHistory};
use medgate_fleet::alerts::{evaluate_once, rfc5322};
use medgate_fleet::model::{AlertKind, AlertState, DeviceStatus, Severity};
use medgate_fleet::store::alerts::{AlertFilter, Channel};
use medgate_fleet::store::{Message, Store, now_db};

fn telemetry(at: i64, backing_off: bool) -> Telemetry {
    let snapshot = TelemetrySnapshot {
        destinations: vec![DestinationQueue {
            name: Token::new("pacs").expect("token"),
            depth: if backing_off { 4 } else { 0 },
            oldest_age_secs: if backing_off { 75 } else { 0 },
            quarantined: 0,
            state: if backing_off {
                DestinationState::BackingOff
            } else {
                DestinationState::Ok
            },
        }],
        ..TelemetrySnapshot::default()
    };
    Telemetry {
        schema: Schema::default(),
        sent_at_ms: u64::try_from(at).expect("time"),
        boot_id: 1,
        seq: u64::try_from(at).expect("time"),
        snapshot,
    }
}

async fn send(store: &Store, device: &DeviceId, msg: Message<'_>) {
    let site = SiteId::new("st-marien").expect("site");
    let mut c = store.pool().acquire().await.expect("conn");
    store
        .record(&mut c, &site, device, msg, now_db())
        .await
        .expect("record");
}

async fn exercise(store: &Store) {
    let site = SiteId::new("st-marien").expect("site");
    let dev = DeviceId::new("ct-1").expect("id");
    store
        .register_device(&site, &dev, DeviceStatus::Approved, now_db())
        .await
        .expect("register");
    send(store, &dev, Message::State(DeviceState::Online)).await;
    send(store, &dev, Message::Telemetry(&telemetry(now_db(), true))).await;
    let t = AlertsSection {
        archive_unreachable_for_secs: 0,
        ..AlertsSection::default()
    };
    let channels = [Channel::Email, Channel::Webhook];
    // Two replicas evaluate at once: one alert.
    let (mut m1, mut m2) = (Machine::default(), Machine::default());
    let (mut q1, mut q2) = (QuarantineHistory::default(), QuarantineHistory::default());
    let (a, b) = tokio::join!(
        evaluate_once(store, &t, &channels, &mut m1, &mut q1),
        evaluate_once(store, &t, &channels, &mut m2, &mut q2),
    );
    a.expect("evaluate");
    b.expect("evaluate");
    evaluate_once(store, &t, &channels, &mut m1, &mut q1)
        .await
        .expect("evaluate");
    let all = store.alerts(&AlertFilter::default()).await.expect("alerts");
    assert_eq!(all.len(), 1, "{all:?}");
    let alert = &all[0];
    assert_eq!(
        (alert.kind, alert.severity, alert.state),
        (
            AlertKind::ArchiveUnreachable,
            Severity::Critical,
            AlertState::Firing
        )
    );
    assert_eq!(
        alert.words,
        "ct-1: archive unreachable: destination pacs with 4 objects waiting, oldest 1 min"
    );
    assert_eq!(
        store.alerts_firing_counts().await.expect("counts"),
        vec![(AlertKind::ArchiveUnreachable, Severity::Critical, 1)]
    );
    // Its notifications: one per channel, claimed by one replica only.
    let due = store.notifications_due(now_db(), 10).await.expect("due");
    assert_eq!(due.len(), 2);
    assert!(
        store
            .claim_notification(&due[0], now_db() + 60_000)
            .await
            .expect("claim")
    );
    assert!(
        !store
            .claim_notification(&due[0], now_db() + 60_000)
            .await
            .expect("claim")
    );
    store
        .notification_outcome(&due[0], "sent", 1, now_db(), None, now_db())
        .await
        .expect("outcome");
    assert_eq!(
        store
            .notifications_due(now_db(), 10)
            .await
            .expect("due")
            .len(),
        1
    );
    // Acknowledged once; silenced.
    assert!(store.ack_alert(&alert.id, "op", 5).await.expect("ack"));
    assert!(!store.ack_alert(&alert.id, "other", 6).await.expect("ack"));
    let acked = store.alert(&alert.id).await.expect("alert").expect("found");
    assert_eq!(
        (acked.acked_by.as_deref(), acked.acked_ms),
        (Some("op"), Some(5))
    );
    // The archive is back: cleared once, with a notification per channel.
    send(
        store,
        &dev,
        Message::Telemetry(&telemetry(now_db() + 1, false)),
    )
    .await;
    let (a, b) = tokio::join!(
        evaluate_once(store, &t, &channels, &mut m1, &mut q1),
        evaluate_once(store, &t, &channels, &mut m2, &mut q2),
    );
    a.expect("evaluate");
    b.expect("evaluate");
    let resolved = store
        .alerts(&AlertFilter {
            state: Some(AlertState::Resolved),
            ..AlertFilter::default()
        })
        .await
        .expect("alerts");
    assert_eq!(resolved.len(), 1);
    assert!(resolved[0].cleared_ms.is_some());
    let n = store
        .alert_notifications(&alert.id)
        .await
        .expect("notifications");
    let cleared = n.iter().filter(|r| r.0 == "cleared").count();
    assert_eq!(cleared, 2, "{n:?}");
    assert!(
        store
            .alerts_firing_counts()
            .await
            .expect("counts")
            .is_empty()
    );
    // Raised again later: a new alert, silenced: its clear does not notify.
    send(
        store,
        &dev,
        Message::Telemetry(&telemetry(now_db() + 2, true)),
    )
    .await;
    evaluate_once(store, &t, &channels, &mut m1, &mut q1)
        .await
        .expect("evaluate");
    let firing = store
        .alerts(&AlertFilter {
            state: Some(AlertState::Firing),
            site: Some("st-marien".into()),
            ..AlertFilter::default()
        })
        .await
        .expect("alerts");
    assert_eq!(firing.len(), 1);
    assert!(
        store
            .silence_alert(&firing[0].id, now_db() + 3_600_000)
            .await
            .expect("silence")
    );
    send(
        store,
        &dev,
        Message::Telemetry(&telemetry(now_db() + 3, false)),
    )
    .await;
    evaluate_once(store, &t, &channels, &mut m1, &mut q1)
        .await
        .expect("evaluate");
    let n = store
        .alert_notifications(&firing[0].id)
        .await
        .expect("notifications");
    assert!(n.iter().all(|r| r.0 == "raised"), "{n:?}");
    // Firing first, then history, newest first.
    let all = store.alerts(&AlertFilter::default()).await.expect("alerts");
    assert_eq!(all.len(), 2);
    assert!(
        store
            .alerts(&AlertFilter {
                site: Some("other".into()),
                ..AlertFilter::default()
            })
            .await
            .expect("alerts")
            .is_empty()
    );
    assert!(rfc5322(0).starts_with("Thu, 01 Jan 1970"));
}

#[tokio::test]
async fn alerts_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    exercise(&Store::connect(&url, None).await.expect("connect")).await;
}

#[tokio::test]
async fn alerts_on_postgres() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = Postgres::start(dir.path());
    exercise(&Store::connect(&pg.url(), None).await.expect("connect")).await;
}
