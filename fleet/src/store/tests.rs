use super::*;
use crate::model::DeviceStatus;
use medgate_contract::{
    Birth, DeviceId, Event, EventBody, Schema, SiteId, Telemetry, TelemetrySnapshot,
};
use serde_json::{Value, json};
use sqlx::Row;

/// Rows as the API shows them (JSON).
fn as_json<T: serde::Serialize>(rows: Vec<T>) -> Vec<Value> {
    rows.iter()
        .map(|r| serde_json::to_value(r).expect("serialise"))
        .collect()
}

fn telemetry(at: u64, objects: u64) -> Telemetry {
    let mut snapshot = TelemetrySnapshot::default();
    snapshot.received.objects = objects;
    Telemetry {
        schema: Schema::default(),
        sent_at_ms: at,
        boot_id: 1,
        seq: at,
        snapshot,
    }
}

#[tokio::test]
async fn events_in_bulk_are_stored_once_and_counted() {
    use medgate_contract::{AeTitle, EventId, Flow, Peer, Token};
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = Store::connect(&url, None).await.expect("connect");
    let site = SiteId::new("s").expect("id");
    let (a, b) = (
        DeviceId::new("a").expect("id"),
        DeviceId::new("b").expect("id"),
    );
    let event = |seq: u64, body: EventBody| Event {
        schema: Schema::default(),
        id: EventId::new(7, seq),
        at_ms: 1000 + seq,
        event: body,
    };
    let forwarded = || EventBody::StudyForwarded {
        destination: Token::new("archive").expect("token"),
        modality: None,
        forwarded: Flow {
            objects: 1,
            bytes: 2,
        },
        latency_ms: 3,
        attempts: 1,
    };
    let peer = Peer {
        calling_ae: AeTitle::new("CT01").expect("ae"),
        called_ae: AeTitle::new("MEDGATE").expect("ae"),
        ip: "10.0.0.1".parse().expect("ip"),
        sop_classes: vec![],
        modalities: vec![],
        accepted: true,
        refusal: None,
        associations: 1,
        last_seen_ms: 5,
    };
    let events: Vec<Event> = (1..=200).map(|i| event(i, forwarded())).collect();
    let seen = event(500, EventBody::PeerSeen(peer));
    // a: 200 events (chunks 128, 64, 8) + a peer; b: 3 events, one of them twice.
    let mut rows: Vec<(&DeviceId, &Event)> = events.iter().map(|e| (&a, e)).collect();
    rows.push((&a, &seen));
    rows.extend([
        (&b, &events[0]),
        (&b, &events[1]),
        (&b, &events[0]),
        (&b, &events[2]),
    ]);
    let mut batch = store.begin().await.expect("begin");
    for d in [&a, &b] {
        assert_eq!(
            store
                .admit_device(batch.conn(), &site, d, 1)
                .await
                .expect("admit"),
            Ok(())
        );
    }
    let r = store
        .record_events_many(batch.conn(), &rows, 9)
        .await
        .expect("record");
    let again = store
        .record_events_many(batch.conn(), &rows[..3], 9)
        .await
        .expect("record");
    batch.commit().await.expect("commit");
    let new = r.iter().filter(|x| **x == Recorded::New).count();
    assert_eq!((new, r[203]), (204, Recorded::Duplicate), "{r:?}");
    assert!(again.iter().all(|x| *x == Recorded::Duplicate));
    let count = |d: &'static str| {
        let store = store.clone();
        async move {
            sqlx::query("SELECT events_received FROM devices WHERE id = $1")
                .bind(d)
                .fetch_one(store.pool())
                .await
                .expect("row")
                .try_get::<i64, _>(0)
                .expect("n")
        }
    };
    assert_eq!((count("a").await, count("b").await), (201, 3));
    assert_eq!(store.peers("a").await.expect("peers").len(), 1);
}

#[tokio::test]
async fn a_peer_shows_its_modalities_and_refusal_and_an_older_state_never_wins() {
    use medgate_contract::{AeTitle, Disk, EventId, Inventory, Modality, Peer, Refusal, Token};
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = Store::connect(&url, None).await.expect("connect");
    let site = SiteId::new("s").expect("id");
    let dev = DeviceId::new("d").expect("id");
    let peer = |ae: &str, accepted: bool, refusal, modalities: &[&str], seen| Peer {
        calling_ae: AeTitle::new(ae).expect("ae"),
        called_ae: AeTitle::new("MEDGATE").expect("ae"),
        ip: "10.0.0.9".parse().expect("ip"),
        sop_classes: vec![],
        modalities: modalities
            .iter()
            .map(|m| Modality::new(*m).expect("code"))
            .collect(),
        accepted,
        refusal,
        associations: seen,
        last_seen_ms: seen,
    };
    let event = |seq: u64, p: Peer| Event {
        schema: Schema::default(),
        id: EventId::new(1, seq),
        at_ms: seq,
        event: EventBody::PeerSeen(p),
    };
    let birth = |peers: Vec<Peer>| Birth {
        schema: Schema::default(),
        sent_at_ms: 1,
        boot_id: 1,
        inventory: Inventory {
            serial: Token::new("SN").expect("token"),
            hardware_profile: Token::new("none").expect("token"),
            os_version: Token::new("1").expect("token"),
            appliance_version: Token::new("1").expect("token"),
            ae_title: None,
            nics: vec![],
            disk: Disk::default(),
            peers,
            config_schema: None,
        },
        config_version: 0,
        telemetry_interval_secs: 10,
    };
    let refused = Some(Refusal::CallingAeNotAllowed);
    let mut c = store.pool().acquire().await.expect("conn");
    for e in [
        event(1, peer("STRANGER", false, refused, &[], 10)),
        event(2, peer("CT1", true, None, &[], 10)),
        // The CT's first object: its modality, announced again with the state so far.
        event(3, peer("CT1", true, None, &["CT"], 11)),
    ] {
        let r = store
            .record(&mut c, &site, &dev, Message::Event(&e), 20)
            .await
            .expect("event");
        assert_eq!(r, Recorded::New);
    }
    // A birth built before the modality arrived (read late, or retained and read again)
    // does not take it back; a newer one replaces the state.
    store
        .record(
            &mut c,
            &site,
            &dev,
            Message::Birth(&birth(vec![
                peer("CT1", true, None, &[], 10),
                peer("STRANGER", false, None, &[], 9),
            ])),
            21,
        )
        .await
        .expect("birth");
    let peers = as_json(store.peers("d").await.expect("peers"));
    let find = |ae: &str| {
        peers
            .iter()
            .find(|p| p["calling_ae"] == ae)
            .cloned()
            .unwrap_or_else(|| panic!("{ae} listed: {peers:?}"))
    };
    assert_eq!(find("CT1")["modalities"], json!(["CT"]), "{peers:?}");
    assert_eq!(find("STRANGER")["accepted"], false);
    assert_eq!(find("STRANGER")["refusal"], "calling_ae_not_allowed");
    store
        .record(
            &mut c,
            &site,
            &dev,
            Message::Birth(&birth(vec![peer(
                "STRANGER",
                false,
                Some(Refusal::CalledAeNotRecognized),
                &[],
                30,
            )])),
            31,
        )
        .await
        .expect("birth");
    let peers = as_json(store.peers("d").await.expect("peers"));
    let stranger = peers.iter().find(|p| p["calling_ae"] == "STRANGER");
    assert_eq!(
        stranger.map(|p| p["refusal"].clone()),
        Some(json!("called_ae_not_recognized"))
    );
}

#[tokio::test]
async fn every_rendered_metric_has_help() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = Store::connect(&url, None).await.expect("connect");
    let gauges = store.gauges().await.expect("gauges");
    assert!(!gauges.is_empty());
    let text = crate::metrics::Metrics::default().render(&gauges);
    for g in &gauges {
        assert!(
            text.contains(&format!("medgate_fleet_{} 0", g.name)),
            "{text}"
        );
    }
    crate::metrics::tests::assert_help_before_every_type(&text);
}

#[tokio::test]
async fn certificates_within_30_days_of_their_end_are_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = Store::connect(&url, None).await.expect("connect");
    let site = SiteId::new("s").expect("site");
    let now = now_db();
    let day = 86_400_000;
    for (id, ends) in [("soon", 10 * day), ("ended", -day), ("later", 90 * day)] {
        let dev = DeviceId::new(id).expect("device");
        store.enroll(&site, &dev, "01", now).await.expect("enroll");
        store.set_cert_expiry(id, now + ends).await.expect("expiry");
    }
    // A device waiting for approval has no certificate of ours to renew: not counted.
    let pending = DeviceId::new("pending").expect("device");
    store
        .register_device(&site, &pending, DeviceStatus::Pending, now)
        .await
        .expect("register");
    store
        .set_cert_expiry("pending", now + day)
        .await
        .expect("expiry");
    let gauges = store.gauges().await.expect("gauges");
    let expiring = gauges
        .iter()
        .find(|g| g.name == "device_certificates_expiring")
        .map(|g| g.value);
    assert_eq!(expiring, Some(2));
}

#[tokio::test]
async fn telemetry_in_bulk_is_deduplicated_and_beats_the_heart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = Store::connect(&url, None).await.expect("connect");
    let site = SiteId::new("s").expect("id");
    let devs: Vec<DeviceId> = (0..3)
        .map(|i| DeviceId::new(format!("d{i}")).expect("id"))
        .collect();
    let samples: Vec<Telemetry> = (0..300).map(|i| telemetry(1000 + i, i)).collect();
    // 300 samples (chunks of 128, 128, 32, 8, 4), spread over 3 devices; then four of d0's
    // again, one of them twice in the same call.
    let mut rows: Vec<(&DeviceId, &Telemetry)> = samples
        .iter()
        .enumerate()
        .map(|(i, t)| (&devs[i % 3], t))
        .collect();
    let mut batch = store.begin().await.expect("begin");
    for d in &devs {
        assert_eq!(
            store
                .admit_device(batch.conn(), &site, d, 7)
                .await
                .expect("admit"),
            Ok(())
        );
    }
    let first = store
        .record_telemetry_many(batch.conn(), &rows, 7)
        .await
        .expect("record");
    assert!(first.iter().all(|r| *r == Recorded::New));
    rows.retain(|(d, _)| d.as_str() == "d0");
    rows.truncate(4);
    rows.push(rows[0]);
    rows.push((&devs[0], &samples[297]));
    let second = store
        .record_telemetry_many(batch.conn(), &rows, 9)
        .await
        .expect("record");
    batch.commit().await.expect("commit");
    assert_eq!(second.len(), 6);
    assert!(
        second.iter().all(|r| *r == Recorded::Duplicate),
        "{second:?}"
    );
    let mut total = 0;
    for d in &devs {
        total += store
            .telemetry(d.as_str(), 0, i64::MAX, 1000)
            .await
            .expect("read")
            .len();
        let status = store
            .registration(d.as_str())
            .await
            .expect("read")
            .expect("known")
            .status;
        assert_eq!(status, DeviceStatus::Pending);
    }
    assert_eq!(total, 300);
    let online: i64 = sqlx::query(
        "SELECT COUNT(*) FROM devices WHERE connection = 'online' AND last_seen_ms = 9",
    )
    .fetch_one(store.pool())
    .await
    .expect("count")
    .try_get(0)
    .expect("n");
    assert_eq!(online, 1, "the heartbeat of the second call's device only");
}

#[tokio::test]
async fn telemetry_is_deduplicated_downsampled_and_expired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = Store::connect(&url, None).await.expect("connect");
    let (site, dev) = (
        SiteId::new("s").expect("id"),
        DeviceId::new("d").expect("id"),
    );
    // Two 5-minute buckets (0-300 s, 300-600 s) of raw samples, one sent twice, and a third
    // bucket (900-1200 s) that the first pass cuts in two.
    let mut batch = store.begin().await.expect("begin");
    for (at, n) in [
        (10_000, 1),
        (200_000, 2),
        (200_000, 2),
        (310_000, 3),
        (590_000, 4),
        (910_000, 5),
        (1_100_000, 6),
    ] {
        store
            .record(
                batch.conn(),
                &site,
                &dev,
                Message::Telemetry(&telemetry(at, n)),
                1,
            )
            .await
            .expect("record");
    }
    batch.commit().await.expect("commit");
    assert_eq!(
        store
            .telemetry("d", 0, i64::MAX, 100)
            .await
            .expect("read")
            .len(),
        6,
        "duplicate ignored"
    );
    let rows = |store: &Store| {
        let store = store.clone();
        async move {
            let rows = as_json(store.telemetry("d", 0, i64::MAX, 100).await.expect("read"));
            let mut v: Vec<(i64, i64, u64)> = rows
                .iter()
                .map(|r| {
                    (
                        r["ts_ms"].as_i64().expect("ts"),
                        r["bucket_secs"].as_i64().expect("b"),
                        r["data"]["received"]["objects"].as_u64().expect("n"),
                    )
                })
                .collect();
            v.sort_unstable();
            v
        }
    };
    let (folded, deleted) = store
        .downsample(1_000_000, 300, 0)
        .await
        .expect("downsample");
    assert_eq!((folded, deleted), (5, 0));
    assert_eq!(
        rows(&store).await,
        vec![
            (0, 300, 2),
            (300_000, 300, 4),
            (900_000, 300, 5),
            (1_100_000, 0, 6)
        ],
        "last sample of each bucket; the sample after the cut still raw"
    );
    // The next pass folds the rest of the cut bucket: it now holds its last sample.
    let (folded, _) = store
        .downsample(2_000_000, 300, 0)
        .await
        .expect("downsample");
    assert_eq!(folded, 1);
    assert_eq!(
        rows(&store).await,
        vec![(0, 300, 2), (300_000, 300, 4), (900_000, 300, 6)]
    );
    // Retention: buckets older than the cut are deleted.
    let (_, deleted) = store
        .downsample(2_000_000, 300, 300_001)
        .await
        .expect("expire");
    assert_eq!(deleted, 2);
}

#[tokio::test]
async fn downsampling_in_device_groups_covers_every_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = Store::connect(&url, None).await.expect("connect");
    let site = SiteId::new("s").expect("id");
    let mut batch = store.begin().await.expect("begin");
    for d in 0..300 {
        let dev = DeviceId::new(format!("d{d}")).expect("id");
        for (at, n) in [(10_000, d), (20_000, d + 100)] {
            store
                .record(
                    batch.conn(),
                    &site,
                    &dev,
                    Message::Telemetry(&telemetry(at, n)),
                    1,
                )
                .await
                .expect("record");
        }
    }
    batch.commit().await.expect("commit");
    // 300 devices: groups of 128, 128, 32, 8 and 4.
    let (folded, _) = store
        .downsample(1_000_000, 300, 0)
        .await
        .expect("downsample");
    assert_eq!(folded, 600);
    for d in 0..300u64 {
        let rows = as_json(
            store
                .telemetry(&format!("d{d}"), 0, i64::MAX, 10)
                .await
                .expect("read"),
        );
        assert_eq!(rows.len(), 1, "d{d}: {rows:?}");
        assert_eq!(rows[0]["bucket_secs"], 300);
        assert_eq!(rows[0]["data"]["received"]["objects"], d + 100);
    }
}

// ---- console: device page ----

#[tokio::test]
async fn a_chart_series_is_the_last_sample_of_each_step_with_its_destinations() {
    use medgate_contract::{DestinationQueue, DestinationState, Token};
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = Store::connect(&url, None).await.expect("connect");
    let (site, dev) = (
        SiteId::new("s").expect("id"),
        DeviceId::new("d").expect("id"),
    );
    let mut batch = store.begin().await.expect("begin");
    for (at, n) in [
        (10_000, 1),
        (20_000, 2),
        (290_000, 3),
        (310_000, 4),
        (590_000, 5),
        (910_000, 6),
    ] {
        let mut t = telemetry(at, n);
        t.snapshot.destinations = vec![DestinationQueue {
            name: Token::new("archive").expect("token"),
            depth: n,
            oldest_age_secs: 2 * n,
            quarantined: 0,
            state: DestinationState::BackingOff,
        }];
        store
            .record(batch.conn(), &site, &dev, Message::Telemetry(&t), 1)
            .await
            .expect("record");
    }
    batch.commit().await.expect("commit");
    let series = store
        .telemetry_series("d", 0, 1_000_000, 300_000)
        .await
        .expect("series");
    let points: Vec<(i64, u64)> = series
        .iter()
        .map(|s| (s.ts_ms, s.data.received.objects))
        .collect();
    assert_eq!(
        points,
        [(290_000, 3), (590_000, 5), (910_000, 6)],
        "the last of each 5-minute step"
    );
    assert_eq!(series[0].data.destinations[0].name.as_str(), "archive");
    assert_eq!(
        series[0].data.destinations[0].state,
        DestinationState::BackingOff
    );
    // The range bounds the series; the latest sample is the newest.
    let part = store
        .telemetry_series("d", 300_000, 600_000, 300_000)
        .await
        .expect("series");
    assert_eq!(part.len(), 1);
    assert_eq!(part[0].data.received.objects, 5);
    let latest = store
        .latest_telemetry("d")
        .await
        .expect("read")
        .expect("one");
    assert_eq!(
        (latest.ts_ms, latest.data.destinations[0].depth),
        (910_000, 6)
    );
    assert!(
        store
            .latest_telemetry("other")
            .await
            .expect("read")
            .is_none()
    );
}

// diagnostics download (issue 12): the chunk store.
#[tokio::test]
async fn file_chunks_assemble_in_order_once_and_check_the_digest() {
    use crate::model::FileState;
    use base64::Engine as _;
    use files::ChunkOutcome;
    use medgate_contract::{CommandAction, CommandId, FileChunk, Sha256Hex, Token};
    // Each chunk in a transaction of its own, as ingest records a batch.
    async fn rec(store: &Store, d: &DeviceId, c: &FileChunk, now: i64) -> ChunkOutcome {
        let mut batch = store.begin().await.expect("begin");
        let r = store
            .record_file_chunk(batch.conn(), d, c, now)
            .await
            .expect("record");
        batch.commit().await.expect("commit");
        r
    }
    async fn file_state(store: &Store, command: &str) -> Option<FileState> {
        let c = store.command(command).await.expect("command")?;
        c.file.map(|f| f.state)
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = Store::connect(&url, None).await.expect("connect");
    let (a, b) = (
        DeviceId::new("a").expect("id"),
        DeviceId::new("b").expect("id"),
    );
    store
        .create_command("c-1", "a", &CommandAction::CollectDiagnostics, None, 1)
        .await
        .expect("cmd");
    store
        .create_command("c-2", "a", &CommandAction::Restart, None, 1)
        .await
        .expect("cmd");
    store
        .create_command("c-3", "a", &CommandAction::CollectDiagnostics, None, 1)
        .await
        .expect("cmd");
    let content: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &content));
    let chunk = |cmd: &str, sha: &str, total: u64, at: usize, len: usize| FileChunk {
        schema: Schema::default(),
        command: CommandId::new(cmd).expect("id"),
        name: Token::new("diagnostics-1.json").expect("token"),
        total_bytes: total,
        sha256: Sha256Hex::new(sha).expect("sha"),
        offset: at as u64,
        data: base64::engine::general_purpose::STANDARD.encode(&content[at..at + len]),
    };
    // Out of order, with a duplicate.
    assert_eq!(
        rec(&store, &a, &chunk("c-1", &sha, 300, 200, 100), 2).await,
        ChunkOutcome::Stored
    );
    assert_eq!(
        rec(&store, &a, &chunk("c-1", &sha, 300, 200, 100), 2).await,
        ChunkOutcome::Duplicate
    );
    assert_eq!(file_state(&store, "c-1").await, Some(FileState::Receiving));
    assert_eq!(store.command_file_content("c-1").await.expect("r"), None);
    assert_eq!(
        rec(&store, &a, &chunk("c-1", &sha, 300, 0, 200), 3).await,
        ChunkOutcome::Complete
    );
    assert_eq!(
        rec(&store, &a, &chunk("c-1", &sha, 300, 0, 200), 4).await,
        ChunkOutcome::Duplicate
    );
    assert_eq!(file_state(&store, "c-1").await, Some(FileState::Complete));
    assert_eq!(
        store.command_file_content("c-1").await.expect("r"),
        Some(content.clone())
    );
    // Foreign device, unknown command, a command without a file, over the cap.
    assert!(matches!(
        rec(&store, &b, &chunk("c-3", &sha, 300, 0, 300), 5).await,
        ChunkOutcome::Refused(_)
    ));
    assert!(matches!(
        rec(&store, &a, &chunk("c-9", &sha, 300, 0, 300), 5).await,
        ChunkOutcome::Refused(_)
    ));
    assert!(matches!(
        rec(&store, &a, &chunk("c-2", &sha, 300, 0, 300), 5).await,
        ChunkOutcome::Refused(_)
    ));
    assert!(matches!(
        rec(
            &store,
            &a,
            &chunk("c-3", &sha, medgate_contract::MAX_FILE_BYTES + 1, 0, 300),
            5
        )
        .await,
        ChunkOutcome::Refused(_)
    ));
    assert_eq!(file_state(&store, "c-3").await, None);
    // A digest mismatch is recorded as failed with the reason.
    let wrong = "00".repeat(32);
    assert!(matches!(
        rec(&store, &a, &chunk("c-3", &wrong, 300, 0, 300), 6).await,
        ChunkOutcome::Failed(_)
    ));
    let file = store
        .command("c-3")
        .await
        .expect("r")
        .and_then(|c| c.file)
        .expect("file");
    assert_eq!(file.state, FileState::Failed);
    assert!(file.reason.expect("reason").contains("sha256"));
    assert_eq!(store.command_file_content("c-3").await.expect("r"), None);
}

/// wall (issue 13 part 1): the day's and the last hour's figures by site and modality, from the
/// study events as stored (through the analytics rollups' five-minute slots), with the day
/// starting after the last hour begins and before it.
#[tokio::test]
async fn today_by_site_counts_the_day_and_the_last_hour_by_modality() {
    use medgate_contract::{AeTitle, EventId, Flow, Modality, Token};
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = Store::connect(&url, None).await.expect("connect");
    let (s1, s2) = (
        SiteId::new("s1").expect("id"),
        SiteId::new("s2").expect("id"),
    );
    let (a, b) = (
        DeviceId::new("a").expect("id"),
        DeviceId::new("b").expect("id"),
    );
    let received = |modality: Option<&str>, objects: u64| EventBody::StudyReceived {
        calling_ae: AeTitle::new("CT01").expect("ae"),
        called_ae: AeTitle::new("MEDGATE").expect("ae"),
        modality: modality.map(|m| Modality::new(m).expect("modality")),
        sop_classes: vec![],
        received: Flow { objects, bytes: 0 },
        duration_ms: 1,
    };
    let forwarded = |objects: u64| EventBody::StudyForwarded {
        destination: Token::new("archive").expect("token"),
        modality: None,
        forwarded: Flow { objects, bytes: 0 },
        latency_ms: 1,
        attempts: 1,
    };
    // Times in thousandths of a five-minute slot (the rollup's resolution): 5_000 is the
    // start of slot 5, 7_500 the middle of slot 7.
    const T: u64 = 300;
    let event = |seq: u64, at: u64, body: EventBody| Event {
        schema: Schema::default(),
        id: EventId::new(1, seq),
        at_ms: at * T,
        event: body,
    };
    let events = [
        (&a, event(1, 5_000, received(Some("CT"), 100))),
        (&a, event(2, 6_000, received(Some("CT"), 50))),
        (&a, event(3, 7_000, received(Some("MR"), 30))),
        (&a, event(4, 7_500, forwarded(180))),
        (&a, event(5, 2_000, received(Some("DX"), 9))),
        (&a, event(6, 500, received(Some("US"), 4))),
        (&b, event(1, 8_000, received(None, 7))),
        (&b, event(2, 8_500, forwarded(7))),
    ];
    let mut batch = store.begin().await.expect("begin");
    for (site, d) in [(&s1, &a), (&s2, &b)] {
        assert_eq!(
            store
                .admit_device(batch.conn(), site, d, 1)
                .await
                .expect("admit"),
            Ok(())
        );
    }
    let rows: Vec<(&DeviceId, &Event)> = events.iter().map(|(d, e)| (*d, e)).collect();
    store
        .record_events_many(batch.conn(), &rows, 9)
        .await
        .expect("record");
    batch.commit().await.expect("commit");

    // The day from 4 000, the last hour from 1 000 (just after midnight).
    let t = store
        .today_by_site(4_000 * 300, 1_000 * 300)
        .await
        .expect("today");
    let one = &t["s1"];
    assert_eq!(
        (one.studies, one.images_received, one.images_forwarded),
        (3, 180, 180)
    );
    assert_eq!(
        (one.hour_received, one.hour_forwarded),
        (189, 180),
        "DX at 2 000 too"
    );
    let modalities: Vec<(&str, u64)> = one
        .modalities
        .iter()
        .map(|(k, m)| (k.as_str(), m.studies))
        .collect();
    assert_eq!(modalities, [("CT", 2), ("MR", 1)]);
    assert_eq!(t["s2"].modalities.get("other").map(|m| m.images), Some(7));

    // The day from 1 000, the last hour from 6 500 (inside slot 6: from slot 7 on, whole slots
    // only): the hour is the later bound.
    let t = store
        .today_by_site(1_000 * 300, 6_500 * 300)
        .await
        .expect("today");
    let one = &t["s1"];
    assert_eq!((one.studies, one.images_received), (4, 189));
    assert_eq!((one.hour_received, one.hour_forwarded), (30, 180));
    assert!(!one.modalities.contains_key("US"), "at 500, before both");
}
