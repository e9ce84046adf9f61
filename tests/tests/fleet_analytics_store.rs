//! analytics (issue 13 part 2): the rollups on both backends (SQLite, and PostgreSQL started by
//! the test): study events recorded through the ingest path are summed once (a redelivered
//! event is not), every report reads them back per site and scope, events stored before the
//! rollup tables existed are summed once at start, and the five-minute slots are pruned.

mod fleet_support;

use std::collections::BTreeSet;

use fleet_support::*;
use medgate_contract::{
    AeTitle, DeviceId, Event, EventBody, EventId, Flow, Modality, Schema, SiteId, Token,
};
use medgate_fleet::analytics::report::Period;
use medgate_fleet::auth::SiteScope;
use medgate_fleet::civil::Day;
use medgate_fleet::model::DeviceStatus;
use medgate_fleet::store::{Message, Store, now_db};

fn received(modality: &str, images: u64) -> EventBody {
    EventBody::StudyReceived {
        calling_ae: AeTitle::new("CT1").expect("ae"),
        called_ae: AeTitle::new("MEDGATE").expect("ae"),
        modality: Some(Modality::new(modality).expect("modality")),
        sop_classes: vec![],
        received: Flow {
            objects: images,
            bytes: images * 530_000,
        },
        duration_ms: 800,
    }
}

fn forwarded(modality: &str, images: u64, latency_ms: u64) -> EventBody {
    EventBody::StudyForwarded {
        destination: Token::new("pacs").expect("token"),
        modality: Some(Modality::new(modality).expect("modality")),
        forwarded: Flow {
            objects: images,
            bytes: images * 530_000,
        },
        latency_ms,
        attempts: 1,
    }
}

fn event(seq: u64, at_ms: i64, body: EventBody) -> Event {
    Event {
        schema: Schema::default(),
        id: EventId::new(7, seq),
        at_ms: u64::try_from(at_ms).expect("time"),
        event: body,
    }
}

async fn send(store: &Store, site: &str, device: &DeviceId, e: &Event) {
    let site = SiteId::new(site).expect("site");
    let mut c = store.pool().acquire().await.expect("conn");
    store
        .record(&mut c, &site, device, Message::Event(e), now_db())
        .await
        .expect("record");
}

async fn exercise(store: &Store) {
    let now = now_db();
    let today = Day::of_ms(now);
    let ct = DeviceId::new("ct-1").expect("id");
    let us = DeviceId::new("us-1").expect("id");
    let other = DeviceId::new("dx-9").expect("id");
    for (site, d) in [("st-a", &ct), ("st-a", &us), ("st-b", &other)] {
        store
            .register_device(
                &SiteId::new(site).expect("site"),
                d,
                DeviceStatus::Approved,
                now,
            )
            .await
            .expect("register");
    }
    let e1 = event(1, now - 60_000, received("CT", 300));
    send(store, "st-a", &ct, &e1).await;
    // Redelivered (the appliance had no receipt yet): stored once, summed once.
    send(store, "st-a", &ct, &e1).await;
    send(
        store,
        "st-a",
        &ct,
        &event(2, now - 30_000, forwarded("CT", 300, 1_500)),
    )
    .await;
    send(
        store,
        "st-a",
        &us,
        &event(1, now - 20_000, received("US", 40)),
    )
    .await;
    send(
        store,
        "st-a",
        &us,
        &event(2, now - 10_000, forwarded("US", 40, 90_000)),
    )
    .await;
    // Yesterday, ten days ago.
    send(
        store,
        "st-a",
        &ct,
        &event(3, now - Day::MS, received("CT", 100)),
    )
    .await;
    send(
        store,
        "st-a",
        &ct,
        &event(4, now - 10 * Day::MS, received("CT", 200)),
    )
    .await;
    send(
        store,
        "st-b",
        &other,
        &event(1, now - 5_000, received("DX", 2)),
    )
    .await;
    // Not a study: not summed.
    send(
        store,
        "st-b",
        &other,
        &event(
            2,
            now,
            EventBody::DiskWatermarkCrossed {
                watermark: medgate_contract::Watermark::High,
                crossing: medgate_contract::Crossing::Above,
                used_percent: 91,
            },
        ),
    )
    .await;

    let all = SiteScope::All;
    let only_a = SiteScope::Only(BTreeSet::from(["st-a".to_string()]));
    let week = Period::last(7, today);

    let daily = store.analytics_daily(&all, week).await.expect("daily");
    let today_ct = daily
        .rows
        .iter()
        .find(|r| r.day == today && r.site == "st-a" && r.modality == "CT")
        .expect("today's CT row");
    assert_eq!(
        (
            today_ct.figures.studies,
            today_ct.figures.images,
            today_ct.figures.forwarded,
            today_ct.figures.images_forwarded
        ),
        (1, 300, 1, 300),
        "{daily:?}"
    );
    assert!(daily.rows.iter().all(|r| r.day >= week.from));
    assert!(
        store
            .analytics_daily(&only_a, week)
            .await
            .expect("daily")
            .rows
            .iter()
            .all(|r| r.site == "st-a")
    );

    let trend = store
        .analytics_trend(&all, Period::last(30, today))
        .await
        .expect("trend");
    assert_eq!(trend.days.len(), 30);
    assert_eq!(trend.studies.iter().sum::<u64>(), 5, "{trend:?}");
    assert_eq!(trend.studies[29], 3, "today: CT, US and DX");
    assert_eq!(trend.studies[28], 1, "yesterday's CT");
    assert_eq!(trend.sites.len(), 2);
    let trend_a = store
        .analytics_trend(&only_a, Period::last(30, today))
        .await
        .expect("trend");
    assert_eq!(trend_a.studies.iter().sum::<u64>(), 4);

    let devices = store.analytics_devices(&all, week).await.expect("devices");
    assert_eq!(devices.registered.get("st-a"), Some(&2));
    assert_eq!(devices.registered.get("st-b"), Some(&1));
    let mix: Vec<(&str, &str, u64)> = devices
        .rows
        .iter()
        .map(|r| (r.site.as_str(), r.modality.as_str(), r.devices))
        .collect();
    assert_eq!(
        mix,
        vec![("st-a", "CT", 1), ("st-a", "US", 1), ("st-b", "DX", 1)]
    );

    let delays = store.analytics_delays(&all, week).await.expect("delays");
    assert_eq!(delays.region.confirmations, 2);
    let a = delays
        .sites
        .iter()
        .find(|s| s.site == "st-a")
        .expect("st-a");
    assert!(
        a.p50_ms.is_some_and(|v| (1_500..=1_800).contains(&v)),
        "{a:?}"
    );
    assert!(
        a.p99_ms.is_some_and(|v| (90_000..=107_100).contains(&v)),
        "within 19 %: {a:?}"
    );

    let overview = store
        .analytics_overview(&all, today)
        .await
        .expect("overview");
    assert_eq!(overview.year, today.ymd().0);
    // Today's three; yesterday's and the ten-day-old one unless the year began since.
    let in_year = |days_ago: i64| u64::from(today.plus(-days_ago) >= today.year_start());
    assert_eq!(
        overview.region.studies,
        3 + in_year(1) + in_year(10),
        "{overview:?}"
    );
    assert_eq!(
        overview.region.images,
        overview.sites.iter().map(|s| s.figures.images).sum::<u64>()
    );

    // The recent slots: today's and the last hour's; the ten-day-old study is not in them.
    let recent = store
        .analytics_recent(&all, now - 3_600_000)
        .await
        .expect("recent");
    assert_eq!(recent["st-a"]["CT"].studies, 1);
    assert_eq!(recent["st-a"]["US"].images, 40);
    assert_eq!(recent["st-b"]["DX"].studies, 1);
    let eight_days = store
        .analytics_recent(&all, now - 9 * Day::MS)
        .await
        .expect("recent");
    assert_eq!(
        eight_days["st-a"]["CT"].studies, 2,
        "yesterday's and today's"
    );

    // An event stored before migration 15 (rolled = 0, as the previous version wrote it) is
    // summed once at start.
    let old = event(9, now - 2 * Day::MS, received("MR", 150));
    sqlx::query(
        "INSERT INTO events (device_id, event_id, at_ms, received_ms, kind, data, rolled) \
         VALUES ($1, $2, $3, $4, 'study_received', $5, 0)",
    )
    .bind("ct-1")
    .bind(old.id.to_string())
    .bind(now - 2 * Day::MS)
    .bind(now)
    .bind(serde_json::to_string(&old.event).expect("json"))
    .execute(store.pool())
    .await
    .expect("old event");
    assert_eq!(store.backfill_analytics().await.expect("backfill"), 1);
    assert_eq!(store.backfill_analytics().await.expect("again"), 0);
    let daily = store.analytics_daily(&all, week).await.expect("daily");
    assert!(
        daily
            .rows
            .iter()
            .any(|r| r.modality == "MR" && r.figures.images == 150 && r.day == today.plus(-2))
    );

    // Slots older than eight days go; newer stay.
    assert!(
        store
            .prune_analytics_recent(now + 9 * Day::MS)
            .await
            .expect("prune")
            >= 4
    );
    assert!(
        store
            .analytics_recent(&all, 0)
            .await
            .expect("recent")
            .is_empty()
    );
}

#[tokio::test]
async fn analytics_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    exercise(&Store::connect(&url, None).await.expect("connect")).await;
}

#[tokio::test]
async fn analytics_on_postgres() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = Postgres::start(dir.path());
    exercise(&Store::connect(&pg.url(), None).await.expect("connect")).await;
}
