//! ota (issue 14 part 2): the bundle and campaign store on both backends (SQLite, and
//! PostgreSQL started by the test): a bundle is stored whole in 1 MiB chunks and once, ranges
//! read back exactly the file's bytes across chunk boundaries, campaigns and their devices read
//! back as written, a save with a stale revision writes nothing (two replicas never both act),
//! and a device may download only a bundle a live campaign offered it.

mod fleet_support;

use fleet_support::*;
use medgate_contract::{DeviceId, InstallMode, Sha256Hex, SiteId, Token};
use medgate_fleet::ota::campaign::{CampaignState, DeviceRecord, DeviceState, FailKind, Health};
use medgate_fleet::ota::target::Targets;
use medgate_fleet::ota::window::SiteWindow;
use medgate_fleet::store::ota::{BundleRecord, CHUNK, CampaignChange, CampaignRecord};
use medgate_fleet::store::{Store, now_db};

fn content() -> Vec<u8> {
    // Two whole chunks and a part, no two chunks alike.
    (0..(2 * CHUNK + 12_345))
        .map(|i| u8::try_from((i * 7 + i / CHUNK) % 251).expect("byte"))
        .collect()
}

fn record(sha: &Sha256Hex, size: u64) -> BundleRecord {
    BundleRecord {
        sha256: sha.clone(),
        product: "medgate-appliance".into(),
        version: "1.4.0".into(),
        hardware: vec!["qemu-vm".into()],
        payload_kind: "appliance_binaries".into(),
        size,
        min_installed: Some("1.2.0".into()),
        floor: None,
        expires_ms: now_db() + 86_400_000,
        created_ms: now_db(),
        uploaded_by: "alice".into(),
        uploaded_ms: now_db(),
    }
}

fn id(s: &str) -> DeviceId {
    DeviceId::new(s).expect("device")
}

fn site(s: &str) -> SiteId {
    SiteId::new(s).expect("site")
}

async fn exercise(store: &Store) {
    let bytes = content();
    let sha = Sha256Hex::new(sha256_hex(&bytes)).expect("sha");
    let size = bytes.len() as u64;
    let rec = record(&sha, size);
    assert!(
        store
            .insert_bundle(&rec, &mut &bytes[..])
            .await
            .expect("insert")
    );
    assert!(
        !store
            .insert_bundle(&rec, &mut &bytes[..])
            .await
            .expect("again"),
        "stored once"
    );
    assert_eq!(store.bundle(&sha).await.expect("read"), Some(rec.clone()));
    assert_eq!(store.bundles().await.expect("list"), vec![rec.clone()]);
    assert_eq!(store.bundle_size(&sha).await.expect("size"), Some(size));
    let c = usize::try_from(CHUNK).expect("chunk");
    for (start, len) in [
        (0u64, 10u64),
        (CHUNK - 5, 10),
        (CHUNK, CHUNK),
        (CHUNK - 1, CHUNK + 2),
        (2 * CHUNK + 1, u64::MAX),
        (0, size),
    ] {
        let got = store.bundle_range(&sha, start, len).await.expect("range");
        let from = usize::try_from(start).expect("start");
        let to = usize::try_from(start.saturating_add(len).min(size)).expect("end");
        assert_eq!(got.len(), to - from, "range {start}+{len}");
        assert!(got == bytes[from..to], "range {start}+{len}: other bytes");
    }
    assert!(
        store
            .bundle_range(&sha, size, 10)
            .await
            .expect("past")
            .is_empty()
    );
    assert_eq!(
        store.bundle_range(&sha, 0, 0).await.expect("none"),
        Vec::<u8>::new()
    );
    let other = Sha256Hex::new("ab".repeat(32)).expect("sha");
    assert_eq!(store.bundle_size(&other).await.expect("size"), None);
    assert!(
        store
            .bundle_range(&other, 0, 10)
            .await
            .expect("range")
            .is_empty()
    );
    assert_eq!(
        bytes[c..c + 3],
        store.bundle_range(&sha, CHUNK, 3).await.expect("range")[..]
    );
    // A record whose size is not the content's is not stored.
    let short = Sha256Hex::new("cd".repeat(32)).expect("sha");
    assert!(
        store
            .insert_bundle(&record(&short, 5), &mut &b"1234"[..])
            .await
            .is_err()
    );
    assert_eq!(store.bundle(&short).await.expect("read"), None);

    // A campaign and its devices.
    let now = now_db();
    let campaign = CampaignRecord {
        id: Token::new("cmp-1").expect("id"),
        name: "1.4.0 north first".into(),
        bundle: sha.clone(),
        state: CampaignState::Draft,
        targets: Targets {
            sites: vec![site("north"), site("south")],
            ..Targets::default()
        },
        canary: vec![id("c1")],
        wave_shares: vec![50, 100],
        soak_secs: 600,
        failure_threshold_pct: 10,
        mode: InstallMode::Forced,
        deadline_ms: Some(1_900_000_000_000),
        windows: vec![SiteWindow {
            site: site("south"),
            utc_offset_minutes: 60,
            start: "22:00".into(),
            minutes: 120,
        }],
        released_waves: 0,
        acknowledged_failures: 0,
        created_by: "alice".into(),
        created_ms: now,
        approved_by: None,
        approved_ms: None,
        paused_reason: None,
        revision: 1,
        updated_ms: now,
    };
    let t0 = u64::try_from(now).expect("now");
    let devices = vec![
        DeviceRecord::pending(id("c1"), site("north"), 0, t0),
        DeviceRecord::pending(id("d1"), site("south"), 1, t0),
        DeviceRecord::pending(id("d2"), site("south"), 2, t0),
    ];
    store
        .insert_campaign(&campaign, &devices)
        .await
        .expect("campaign");
    assert_eq!(
        store.campaign("cmp-1").await.expect("read"),
        Some(campaign.clone())
    );
    assert_eq!(
        store.campaigns().await.expect("list"),
        vec![campaign.clone()]
    );
    assert_eq!(
        store.campaign_devices("cmp-1").await.expect("devices"),
        devices
    );
    assert!(
        store.live_campaigns().await.expect("live").is_empty(),
        "a draft is not live"
    );
    assert!(
        !store
            .device_may_download(&id("c1"), &sha)
            .await
            .expect("may"),
        "not offered"
    );

    // Approved: the canary offered, with its baseline.
    let mut c1 = devices[0].clone();
    c1.state = DeviceState::Offered;
    c1.baseline = Some(Health {
        forward_errors_milli_per_s: 12,
        forward_p99_ms: 900,
    });
    let running = CampaignChange {
        state: CampaignState::Running,
        paused_reason: None,
        released_waves: 1,
        acknowledged_failures: 0,
        approved_by: Some("bob".into()),
    };
    assert!(
        store
            .save_campaign("cmp-1", 1, &running, &[&c1], now + 1)
            .await
            .expect("save")
    );
    // Another replica with the same revision: nothing written.
    let mut stale = c1.clone();
    stale.state = DeviceState::Failed;
    assert!(
        !store
            .save_campaign("cmp-1", 1, &running, &[&stale], now + 2)
            .await
            .expect("stale")
    );
    let read = store.campaign("cmp-1").await.expect("read").expect("there");
    assert_eq!(read.state, CampaignState::Running);
    assert_eq!(read.revision, 2);
    assert_eq!(read.released_waves, 1);
    assert_eq!(read.approved_by.as_deref(), Some("bob"));
    assert_eq!(read.approved_ms, Some(now + 1));
    assert_eq!(
        store.campaign_devices("cmp-1").await.expect("devices")[0],
        c1
    );
    assert_eq!(
        store.live_campaigns().await.expect("live"),
        vec!["cmp-1".to_owned()]
    );
    assert!(
        store
            .device_may_download(&id("c1"), &sha)
            .await
            .expect("may")
    );
    assert!(
        !store
            .device_may_download(&id("d1"), &sha)
            .await
            .expect("may"),
        "pending"
    );
    assert!(
        !store
            .device_may_download(&id("c1"), &other)
            .await
            .expect("may"),
        "other bundle"
    );

    // It rolls back; the campaign pauses; approval is kept.
    let mut failed = c1.clone();
    failed.state = DeviceState::Failed;
    failed.fail = Some(FailKind::RolledBack);
    failed.code = Some(Token::new("health_deadline").expect("code"));
    failed.running = Some(Token::new("1.3.0").expect("v"));
    failed.version = Some(Token::new("1.4.0").expect("v"));
    let paused = CampaignChange {
        state: CampaignState::Paused,
        paused_reason: Some("failure_threshold: 1 of 1 canary devices failed (rolled_back)".into()),
        released_waves: 1,
        acknowledged_failures: 0,
        approved_by: Some("carol".into()),
    };
    assert!(
        store
            .save_campaign("cmp-1", 2, &paused, &[&failed], now + 3)
            .await
            .expect("save")
    );
    let read = store.campaign("cmp-1").await.expect("read").expect("there");
    assert_eq!(read.paused_reason, paused.paused_reason);
    assert_eq!(
        read.approved_by.as_deref(),
        Some("bob"),
        "the first approval is kept"
    );
    let back = store
        .device_campaigns(&id("c1"))
        .await
        .expect("device campaigns");
    assert_eq!(back, vec![("cmp-1".to_owned(), failed.clone())]);

    // Cancelled: nothing to download any more.
    let cancelled = CampaignChange {
        state: CampaignState::Cancelled,
        paused_reason: None,
        released_waves: 1,
        acknowledged_failures: 0,
        approved_by: None,
    };
    assert!(
        store
            .save_campaign("cmp-1", 3, &cancelled, &[], now + 4)
            .await
            .expect("save")
    );
    assert!(
        !store
            .device_may_download(&id("c1"), &sha)
            .await
            .expect("may")
    );
    assert!(store.live_campaigns().await.expect("live").is_empty());
}

#[tokio::test]
async fn ota_store_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    exercise(&Store::connect(&url, None).await.expect("connect")).await;
}

#[tokio::test]
async fn ota_store_on_postgres() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = Postgres::start(dir.path());
    exercise(&Store::connect(&pg.url(), None).await.expect("connect")).await;
}
