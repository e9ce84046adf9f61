//! The campaigns' shell against SQLite, with a real signed bundle and a publisher in memory:
//! upload (verified, refused with the code, idempotent), create, approve → the canary gets a
//! retained offer; its reports move it; after the soak the next wave is offered; a canary that
//! rolls back pauses the campaign and nobody else is offered; cancel withdraws.

use std::sync::{Arc, Mutex};

use medgate_bundle::format::{BundleSignature, MetaKind, Role, write_bundle};
use medgate_bundle::keys::SigningKey;
use medgate_bundle::trust::{KeySet, KeysKind, RootKind};
use medgate_bundle::types::Serial;
use medgate_bundle::{BundleMeta, Digest, KeysDoc, PayloadKind, RootDoc, Signed};
use medgate_contract::{
    DeviceTopics, Kind, Telemetry, TelemetrySnapshot, UpdatePhase, UpdateReport,
};

use super::*;
use crate::auth::Principal;
use crate::ca::Ca;
use crate::config::FleetConfig;
use crate::publish::{Publisher, Sent};
use crate::store::{Message, Store};

type R = Result<(), Box<dyn std::error::Error>>;

struct Fixture {
    ops: Ops,
    sent: Arc<Mutex<Vec<Sent>>>,
    vendor: Vec<SigningKey>,
    _dir: tempfile::TempDir,
}

fn signed<T: medgate_bundle::trust::Document>(doc: T, by: &[&SigningKey]) -> Signed<T> {
    let mut s = Signed::new(doc);
    for k in by {
        s.sign(k);
    }
    s
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = Store::connect(&url, None).await.expect("connect");
    let now = Timestamp::now();
    let root_key = SigningKey::generate().expect("key");
    let vendor: Vec<SigningKey> = (0..2)
        .map(|_| SigningKey::generate().expect("key"))
        .collect();
    let root = signed(
        RootDoc {
            kind: RootKind::Root,
            version: 1,
            expires: now.plus_secs(365 * 86_400),
            root: KeySet {
                keys: vec![root_key.public()],
                threshold: 1,
            },
        },
        &[&root_key],
    );
    let keys = signed(
        KeysDoc {
            kind: KeysKind::Keys,
            version: 1,
            expires: now.plus_secs(90 * 86_400),
            signing: KeySet {
                keys: vendor.iter().map(SigningKey::public).collect(),
                threshold: 2,
            },
        },
        &[&root_key],
    );
    let trust = TrustStore::new(root, keys, None, now).expect("trust");
    let trust_file = dir.path().join("trust.json");
    std::fs::write(&trust_file, trust.to_json()).expect("write trust");
    let mut config = FleetConfig {
        data_dir: dir.path().to_owned(),
        ..FleetConfig::default()
    };
    config.updates.trust_file = Some(trust_file);
    config.updates.download_url = Some(HttpsUrl::new("https://fleet.example:8443").expect("url"));
    let ca = Ca::load_or_create(&dir.path().join("ca")).expect("ca");
    let (publisher, sent) = Publisher::memory();
    Fixture {
        ops: Ops::new(store, config, ca, publisher),
        sent,
        vendor,
        _dir: dir,
    }
}

fn admin() -> Actor {
    Actor::new(Principal::break_glass(), None)
}

impl Fixture {
    fn bundle(&self, version: &str, signers: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let now = Timestamp::now();
        let meta = BundleMeta {
            kind: MetaKind::Bundle,
            product: "medgate-appliance".parse().expect("name"),
            version: version.parse().expect("version"),
            hardware: vec!["qemu-vm".parse().expect("name")],
            min_installed: None,
            floor: None,
            downgrade: false,
            payload: PayloadKind::ApplianceBinaries,
            size: payload.len() as u64,
            sha256: Digest::of(&payload),
            created: now,
            expires: now.plus_secs(30 * 86_400),
            serial: Serial(medgate_bundle::keys::random_bytes().expect("random")),
        };
        let sigs: Vec<BundleSignature> = self.vendor[..signers]
            .iter()
            .map(|k| BundleSignature::make(&meta, k, Role::Vendor))
            .collect();
        let mut out = Vec::new();
        write_bundle(
            &mut out,
            &meta,
            &sigs,
            &mut std::io::Cursor::new(payload),
            &mut |_| {},
        )
        .expect("write bundle");
        out
    }

    async fn upload(&self, bytes: Vec<u8>) -> Result<(BundleRecord, bool), OpError> {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            bytes.chunks(65_536).map(|c| Ok(c.to_vec())).collect();
        self.ops
            .upload_bundle(&admin(), futures_util::stream::iter(chunks))
            .await
    }

    async fn device(&self, site: &str, id: &str) {
        self.ops
            .store
            .register_device(
                &SiteId::new(site).expect("site"),
                &DeviceId::new(id).expect("id"),
                DeviceStatus::Approved,
                now_db(),
            )
            .await
            .expect("register");
    }

    async fn report(&self, site: &str, id: &str, seq: u64, update: Option<UpdateReport>) {
        let t = Telemetry {
            schema: Schema::default(),
            sent_at_ms: now_ms(),
            boot_id: 1,
            seq,
            snapshot: TelemetrySnapshot {
                uptime_secs: 100 + seq,
                update,
                ..TelemetrySnapshot::default()
            },
        };
        self.record(site, id, Message::Telemetry(&t)).await;
    }

    async fn birth(&self, site: &str, id: &str, version: &str, hardware: &str) {
        let b = medgate_contract::Birth {
            schema: Schema::default(),
            sent_at_ms: now_ms(),
            boot_id: 1,
            inventory: medgate_contract::Inventory {
                serial: Token::new("SN-1").expect("token"),
                hardware_profile: Token::new(hardware).expect("token"),
                os_version: Token::new("1").expect("token"),
                appliance_version: Token::new(version).expect("token"),
                ae_title: None,
                nics: vec![],
                disk: Default::default(),
                peers: vec![],
                config_schema: None,
            },
            config_version: 0,
            telemetry_interval_secs: 10,
        };
        self.record(site, id, Message::Birth(&b)).await;
    }

    /// One device message through the ingest path.
    async fn record(&self, site: &str, id: &str, msg: Message<'_>) {
        let mut c = self.ops.store.pool().acquire().await.expect("conn");
        self.ops
            .store
            .record(
                &mut c,
                &SiteId::new(site).expect("site"),
                &DeviceId::new(id).expect("id"),
                msg,
                now_db(),
            )
            .await
            .expect("record");
    }

    /// The update instructions sent since the last call: (device, install version or "cancel").
    fn updates(&self) -> Vec<(String, String)> {
        let mut sent = self.sent.lock().expect("sent");
        let out = sent
            .iter()
            .filter(|s| s.topic.ends_with("/update/desired"))
            .map(|s| {
                assert!(s.retain, "update/desired is retained");
                let u: DesiredUpdate = serde_json::from_slice(&s.payload).expect("decodes");
                let parts: Vec<&str> = s.topic.split('/').collect();
                let device = parts[parts.len() - 3].to_owned();
                let what = match u.action {
                    UpdateAction::Install(o) => {
                        assert!(
                            o.url
                                .as_str()
                                .starts_with("https://fleet.example:8443/device/v1/bundles/")
                        );
                        o.version.to_string()
                    }
                    UpdateAction::Cancel => "cancel".into(),
                };
                (device, what)
            })
            .collect();
        sent.clear();
        out
    }
}

fn rep(state: UpdatePhase, campaign: &str, running: &str, probation: bool) -> UpdateReport {
    UpdateReport {
        state,
        version: Some(Token::new("1.4.0").expect("token")),
        running: Some(Token::new(running).expect("token")),
        campaign: Some(Token::new(campaign).expect("token")),
        on_probation: probation,
        code: None,
    }
}

fn new_campaign(bundle: &Sha256Hex, canary: &[&str], soak_secs: u64) -> NewCampaign {
    NewCampaign {
        name: "1.4.0 everywhere".into(),
        bundle: bundle.clone(),
        targets: Targets::default(),
        canary: canary
            .iter()
            .map(|d| DeviceId::new(*d).expect("id"))
            .collect(),
        wave_shares: vec![100],
        soak_secs,
        failure_threshold_pct: 10,
        mode: InstallMode::Soft,
        deadline_ms: None,
        windows: vec![SiteWindow {
            site: SiteId::new("south").expect("site"),
            utc_offset_minutes: Some(60),
            start: "22:00".into(),
            minutes: 120,
        }],
    }
}

fn state(v: &CampaignView, device: &str) -> DeviceState {
    v.devices
        .iter()
        .find(|d| d.device == device)
        .map(|d| d.state)
        .expect("device")
}

#[tokio::test]
async fn uploads_are_verified_refused_with_the_code_and_idempotent() -> R {
    let f = fixture().await;
    let good = f.bundle("1.4.0", 2);
    let (rec, new) = f.upload(good.clone()).await?;
    assert!(new);
    assert_eq!(rec.version, "1.4.0");
    assert_eq!(rec.size, good.len() as u64);
    assert_eq!(rec.sha256.as_str(), crate::ops::sha256_hex(&good));
    // Again: the same record, not new.
    let (again, new) = f.upload(good.clone()).await?;
    assert!(!new);
    assert_eq!(again, rec);
    // Stored whole: ranges across chunk boundaries read back the file's bytes.
    let store = &f.ops.store;
    assert_eq!(
        store.bundle_size(&rec.sha256).await?,
        Some(good.len() as u64)
    );
    assert_eq!(store.bundle_range(&rec.sha256, 0, u64::MAX).await?, good);
    // One vendor signature of two: refused with the code, nothing stored.
    match f.upload(f.bundle("1.5.0", 1)).await {
        Err(OpError::Refused { code, message }) => {
            assert_eq!(code, "threshold_not_met");
            assert!(message.contains("collect more signatures"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let mut tampered = f.bundle("1.5.0", 2);
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(matches!(
        f.upload(tampered).await,
        Err(OpError::Refused {
            code: "payload_digest_mismatch",
            ..
        })
    ));
    assert!(matches!(
        f.upload(Vec::new()).await,
        Err(OpError::Invalid(_))
    ));
    assert_eq!(f.ops.bundles().await?.len(), 1);
    // Audited: one upload, two refusals (the empty body too).
    let audit = f.ops.store.audit(&Default::default()).await?;
    let uploads: Vec<_> = audit
        .iter()
        .filter(|e| e.action == "update.bundle_upload")
        .map(|e| e.outcome)
        .collect();
    assert_eq!(uploads.len(), 4, "{uploads:?}");
    Ok(())
}

#[tokio::test]
async fn canary_first_then_the_next_wave_after_the_soak() -> R {
    let f = fixture().await;
    let (rec, _) = f.upload(f.bundle("1.4.0", 2)).await?;
    f.device("north", "c1").await;
    f.device("south", "d1").await;
    f.device("south", "d2").await;
    let v = f
        .ops
        .create_campaign(&admin(), new_campaign(&rec.sha256, &["c1"], 0))
        .await?;
    let id = v.campaign.id.to_string();
    assert_eq!(v.campaign.state, CampaignState::Draft);
    f.ops.ota_tick().await;
    assert!(f.updates().is_empty(), "a draft offers nothing");
    let v = f
        .ops
        .campaign_command(&admin(), &id, CampaignCommand::Approve)
        .await?;
    assert_eq!(v.campaign.state, CampaignState::Running);
    assert_eq!(v.campaign.approved_by.as_deref(), Some("break-glass"));
    assert_eq!(f.updates(), [("c1".to_owned(), "1.4.0".to_owned())]);
    assert!(
        f.ops
            .store
            .device_may_download(&DeviceId::new("c1")?, &rec.sha256)
            .await?
    );
    assert!(
        !f.ops
            .store
            .device_may_download(&DeviceId::new("d1")?, &rec.sha256)
            .await?
    );
    // A broker that kept nothing gets the open offers again.
    f.ops.republish_updates().await;
    assert_eq!(f.updates(), [("c1".to_owned(), "1.4.0".to_owned())]);
    // The canary downloads, switches, proves healthy.
    f.report(
        "north",
        "c1",
        1,
        Some(rep(UpdatePhase::Downloading, &id, "1.3.0", false)),
    )
    .await;
    f.ops.ota_tick().await;
    let v = f.ops.campaign_view(&SiteScope::All, &id).await?;
    assert_eq!(state(&v, "c1"), DeviceState::Downloading);
    assert!(f.updates().is_empty());
    f.report(
        "north",
        "c1",
        2,
        Some(rep(UpdatePhase::Installed, &id, "1.4.0", false)),
    )
    .await;
    f.ops.ota_tick().await;
    // Soak 0: healthy at once, and the next wave (south) is offered.
    let v = f.ops.campaign_view(&SiteScope::All, &id).await?;
    assert_eq!(state(&v, "c1"), DeviceState::Healthy);
    assert_eq!(
        v.devices
            .iter()
            .find(|d| d.device == "c1")
            .and_then(|d| d.running.clone())
            .as_deref(),
        Some("1.4.0")
    );
    let mut offered = f.updates();
    offered.sort();
    assert_eq!(
        offered,
        [
            ("d1".to_owned(), "1.4.0".to_owned()),
            ("d2".to_owned(), "1.4.0".to_owned())
        ]
    );
    for (seq, d) in [(1, "d1"), (2, "d2")] {
        f.report(
            "south",
            d,
            seq,
            Some(rep(UpdatePhase::Installed, &id, "1.4.0", false)),
        )
        .await;
    }
    f.ops.ota_tick().await;
    let v = f.ops.campaign_view(&SiteScope::All, &id).await?;
    assert_eq!(v.campaign.state, CampaignState::Completed);
    let actions: Vec<String> = f
        .ops
        .store
        .audit(&Default::default())
        .await?
        .into_iter()
        .map(|e| e.action)
        .collect();
    for a in [
        "update.campaign_create",
        "update.campaign_approve",
        "update.device_installed",
        "update.campaign_complete",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }
    // An operator of another site does not see it.
    let north_only = SiteScope::Only(["elsewhere".to_owned()].into());
    assert!(f.ops.campaigns(&north_only).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_canary_rollback_pauses_and_nobody_else_is_offered_then_cancel_withdraws() -> R {
    let f = fixture().await;
    let (rec, _) = f.upload(f.bundle("1.4.0", 2)).await?;
    f.device("north", "c1").await;
    f.device("north", "c2").await;
    f.device("south", "d1").await;
    let v = f
        .ops
        .create_campaign(&admin(), new_campaign(&rec.sha256, &["c1", "c2"], 3600))
        .await?;
    let id = v.campaign.id.to_string();
    f.ops
        .campaign_command(&admin(), &id, CampaignCommand::Approve)
        .await?;
    let mut offered = f.updates();
    offered.sort();
    assert_eq!(offered.len(), 2);
    f.report(
        "north",
        "c2",
        1,
        Some(rep(UpdatePhase::WaitingIdle, &id, "1.3.0", false)),
    )
    .await;
    f.report(
        "north",
        "c1",
        1,
        Some(rep(UpdatePhase::RolledBack, &id, "1.3.0", false)),
    )
    .await;
    f.ops.ota_tick().await;
    let v = f.ops.campaign_view(&SiteScope::All, &id).await?;
    assert_eq!(v.campaign.state, CampaignState::Paused);
    assert_eq!(
        v.campaign.paused_reason.as_deref(),
        Some("failure_threshold: 1 of 2 canary devices failed (rolled_back)")
    );
    assert_eq!(state(&v, "c1"), DeviceState::Failed);
    assert_eq!(state(&v, "d1"), DeviceState::Pending);
    for _ in 0..3 {
        f.ops.ota_tick().await;
    }
    assert!(f.updates().is_empty(), "nobody else is offered");
    let actions: Vec<String> = f
        .ops
        .store
        .audit(&Default::default())
        .await?
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(
        actions.iter().any(|a| a == "update.device_rolled_back"),
        "{actions:?}"
    );
    assert!(
        actions.iter().any(|a| a == "update.campaign_pause"),
        "{actions:?}"
    );
    // Approving a paused campaign is refused with what to do.
    match f
        .ops
        .campaign_command(&admin(), &id, CampaignCommand::Approve)
        .await
    {
        Err(OpError::Conflict(m)) => assert!(m.contains("resume"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let v = f
        .ops
        .campaign_command(&admin(), &id, CampaignCommand::Cancel)
        .await?;
    assert_eq!(v.campaign.state, CampaignState::Cancelled);
    assert_eq!(f.updates(), [("c2".to_owned(), "cancel".to_owned())]);
    assert!(
        !f.ops
            .store
            .device_may_download(&DeviceId::new("c2")?, &rec.sha256)
            .await?
    );
    // A new campaign may take the devices again.
    f.ops
        .create_campaign(&admin(), new_campaign(&rec.sha256, &["c1"], 60))
        .await?;
    // But not while that one is live.
    match f
        .ops
        .create_campaign(&admin(), new_campaign(&rec.sha256, &["c1"], 60))
        .await
    {
        Err(OpError::Conflict(m)) => assert!(m.contains("already in campaign"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn campaigns_are_checked_with_what_to_give() -> R {
    let f = fixture().await;
    let (rec, _) = f.upload(f.bundle("1.4.0", 2)).await?;
    f.device("north", "c1").await;
    let mut forced = new_campaign(&rec.sha256, &[], 60);
    forced.mode = InstallMode::Forced;
    assert!(
        matches!(f.ops.create_campaign(&admin(), forced).await, Err(OpError::Invalid(m)) if m.starts_with("deadline_ms"))
    );
    let mut shares = new_campaign(&rec.sha256, &[], 60);
    shares.wave_shares = vec![50];
    assert!(
        matches!(f.ops.create_campaign(&admin(), shares).await, Err(OpError::Invalid(m)) if m.starts_with("wave_shares"))
    );
    let mut canary = new_campaign(&rec.sha256, &["nobody"], 60);
    canary.targets.sites = vec![SiteId::new("north")?];
    assert!(
        matches!(f.ops.create_campaign(&admin(), canary).await, Err(OpError::Invalid(m)) if m.contains("not among the campaign's targets"))
    );
    let mut window = new_campaign(&rec.sha256, &[], 60);
    window.windows[0].start = "25:00".into();
    assert!(
        matches!(f.ops.create_campaign(&admin(), window).await, Err(OpError::Invalid(m)) if m.contains("HH:MM"))
    );
    let missing = Sha256Hex::new("00".repeat(32))?;
    assert!(matches!(
        f.ops
            .create_campaign(&admin(), new_campaign(&missing, &[], 60))
            .await,
        Err(OpError::NotFound(_))
    ));
    Ok(())
}

#[tokio::test]
async fn targets_by_inventory_and_never_a_device_already_on_the_version() -> R {
    let f = fixture().await;
    let (rec, _) = f.upload(f.bundle("1.4.0", 2)).await?;
    for (id, version, hw) in [
        ("a", "1.3.0", "qemu-vm"),
        ("b", "1.4.0", "qemu-vm"),
        ("c", "1.3.0", "generic-1u-2nic"),
        ("d", "1.2.0", "qemu-vm"),
    ] {
        f.device("north", id).await;
        f.birth("north", id, version, hw).await;
    }
    let mut req = new_campaign(&rec.sha256, &[], 60);
    req.targets.hardware = vec![Token::new("qemu-vm")?];
    let v = f.ops.create_campaign(&admin(), req).await?;
    let ids: Vec<&str> = v.devices.iter().map(|d| d.device.as_str()).collect();
    assert_eq!(ids, ["a", "d"], "b runs 1.4.0 already, c is other hardware");
    let mut req = new_campaign(&rec.sha256, &[], 60);
    req.targets.versions = vec![Token::new("1.3.0")?];
    req.targets.sites = vec![SiteId::new("north")?];
    match f.ops.create_campaign(&admin(), req).await {
        Err(OpError::Conflict(m)) => assert!(m.contains("device a is already in campaign"), "{m}"),
        other => panic!("a is in the first campaign: {other:?}"),
    }
    Ok(())
}

#[test]
fn health_is_the_error_rate_over_the_window_and_the_last_p99() {
    let s = |ts_ms: i64, uptime: u64, errors: u64, p99: u64| TelemetrySample {
        ts_ms,
        bucket_secs: 0,
        data: TelemetrySnapshot {
            uptime_secs: uptime,
            errors: medgate_contract::ErrorCounts {
                forward: errors,
                ..Default::default()
            },
            forward_latency_ms: medgate_contract::Percentiles {
                p99,
                ..Default::default()
            },
            ..TelemetrySnapshot::default()
        },
    };
    assert_eq!(health_of(&[]), None);
    // 30 errors in 300 s: 0.1/s = 100 thousandths.
    assert_eq!(
        health_of(&[s(0, 1000, 10, 500), s(300_000, 1300, 40, 700)]),
        Some(Health {
            forward_errors_milli_per_s: 100,
            forward_p99_ms: 700,
            uptime_secs: 1300,
        })
    );
    // Restarted in between: since its start (20 errors in 50 s).
    assert_eq!(
        health_of(&[s(0, 1000, 10, 500), s(300_000, 50, 20, 900)])
            .map(|h| h.forward_errors_milli_per_s),
        Some(400)
    );
}

#[allow(dead_code)]
fn topics(site: &str, device: &str) -> DeviceTopics {
    DeviceTopics::new(
        SiteId::new(site).expect("site"),
        DeviceId::new(device).expect("id"),
    )
}

#[allow(dead_code)]
const KIND: Kind = Kind::UpdateDesired;

#[tokio::test]
async fn a_local_install_is_audited_once_in_the_devices_name() -> R {
    let f = fixture().await;
    let device = DeviceId::new("ct-room-1")?;
    let report = |state| -> Result<UpdateReport, medgate_contract::ValueError> {
        Ok(UpdateReport {
            state,
            version: Some(Token::new("0.2.0")?),
            running: Some(Token::new("0.2.0")?),
            campaign: Some(Token::new("local-1764672000")?),
            on_probation: false,
            code: None,
        })
    };
    // Under way: nothing yet; then the end, reported with every telemetry sample.
    f.ops
        .note_local_update(&device, &report(UpdatePhase::WaitingIdle)?)
        .await;
    for _ in 0..3 {
        f.ops
            .note_local_update(&device, &report(UpdatePhase::Installed)?)
            .await;
    }
    // A campaign's install is the campaign's to audit.
    let mut campaign = report(UpdatePhase::RolledBack)?;
    campaign.campaign = Some(Token::new("cmp-1")?);
    f.ops.note_local_update(&device, &campaign).await;
    let entries = f.ops.store.audit(&Default::default()).await?;
    let local: Vec<_> = entries
        .iter()
        .filter(|e| e.action.starts_with("update.local_"))
        .collect();
    assert_eq!(local.len(), 1, "{local:?}");
    assert_eq!(local[0].action, "update.local_installed");
    assert_eq!(local[0].actor, "device:ct-room-1");
    let after = local[0].after.as_deref().unwrap_or_default();
    assert!(
        after.contains("local-1764672000") && after.contains("0.2.0"),
        "{after}"
    );
    assert!(
        !entries
            .iter()
            .any(|e| e.action == "update.local_rolled_back")
    );
    Ok(())
}

#[tokio::test]
async fn a_window_in_the_sites_time_zone_needs_one_and_is_offered_in_utc() -> R {
    let f = fixture().await;
    let (rec, _) = f.upload(f.bundle("1.4.0", 2)).await?;
    f.device("south", "c1").await;
    let mut req = new_campaign(&rec.sha256, &["c1"], 0);
    req.windows[0].utc_offset_minutes = None;
    // The site has no time zone yet: refused with what to do.
    let e = f
        .ops
        .create_campaign(&admin(), req.clone())
        .await
        .expect_err("no time zone");
    assert!(e.to_string().contains("set the site's time zone"), "{e}");
    f.ops
        .store
        .set_site_details("south", Some("Europe/Oslo"), &[])
        .await?;
    let v = f.ops.create_campaign(&admin(), req).await?;
    let id = v.campaign.id.to_string();
    f.ops
        .campaign_command(&admin(), &id, CampaignCommand::Approve)
        .await?;
    let offer = {
        let sent = f.sent.lock().expect("sent");
        sent.iter()
            .filter(|s| s.topic.ends_with("/update/desired"))
            .find_map(|s| {
                match serde_json::from_slice::<DesiredUpdate>(&s.payload)
                    .ok()?
                    .action
                {
                    UpdateAction::Install(o) => Some(o),
                    UpdateAction::Cancel => None,
                }
            })
    };
    let Some(offer) = offer else {
        return Err("no offer published".into());
    };
    // 22:00 in Oslo: 21:00 UTC in winter, 20:00 in summer.
    let start = offer.window.map(|w| w.start_minute);
    assert!(matches!(start, Some(1260) | Some(1200)), "{start:?}");
    Ok(())
}
