//! ota (issue 14 part 2) through HTTP and the broker, on a fleet started as in production: a
//! bundle made with the vendor tool is uploaded as the raw body (201, then 200 with the same
//! record), a tampered one and one beyond `max_bundle_mib` are refused with their code; a
//! campaign is created and approved, and its canary's offer is on the broker retained
//! (`update/desired`, naming `{download_url}/device/v1/bundles/{sha256}`), seen by a client
//! that subscribes afterwards; cancel replaces it with a cancel; every step is audited.

mod fleet_support;

use std::path::{Path, PathBuf};

use fleet_support::*;
use medgate_contract::{DesiredUpdate, DeviceId, SiteId, UpdateAction};
use medgate_e2e::ota;
use medgate_fleet::model::DeviceStatus;
use medgate_fleet::store::now_db;
use reqwest::Method;
use serde_json::{Value, json};

/// The vendor's keys and documents, the fleet's trust store, and a signed bundle of 300 KB,
/// made with the real `medgate-bundle`.
fn vendor(dir: &Path) -> (PathBuf, PathBuf) {
    let keys = ota::vendor_keys(dir).expect("vendor keys");
    let trust = dir.join("fleet-trust.json");
    ota::trust_store(&keys, &trust).expect("trust store");
    let payload = dir.join("payload");
    let bytes: Vec<u8> = (0..300_000u32)
        .map(|i| u8::try_from(i % 251).expect("byte"))
        .collect();
    std::fs::write(&payload, bytes).expect("payload");
    let bundle = dir.join("medgate-1.4.0.mgb");
    ota::sign(&keys, &payload, "1.4.0", &bundle).expect("sign");
    (trust, bundle)
}

async fn upload(api: &Api, body: Vec<u8>) -> (u16, Value) {
    let r = api
        .http
        .post(format!("{}/api/v1/bundles", api.base))
        .bearer_auth(&api.token)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .expect("upload");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn updates(c: &Collector, device: &str) -> Vec<DesiredUpdate> {
    c.messages
        .lock()
        .expect("lock")
        .iter()
        .filter(|(t, _, _)| t.ends_with(&format!("/{device}/update/desired")))
        .map(|(_, p, _)| serde_json::from_slice(p).expect("a DesiredUpdate"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_uploaded_campaign_approved_offer_retained_on_the_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (trust, bundle) = vendor(dir.path());
    let mut config = fleet_config(dir.path());
    config.updates.trust_file = Some(trust);
    config.updates.max_bundle_mib = 1;
    config.updates.download_url =
        Some(medgate_contract::HttpsUrl::new("https://fleet.region.example:8443").expect("url"));
    let running = medgate_fleet::serve(config).await.expect("serve");
    let api = Api::new(&running);
    let store = &running.app.ops.store;
    for (site, device) in [("north", "c1"), ("south", "d1")] {
        store
            .register_device(
                &SiteId::new(site).expect("site"),
                &DeviceId::new(device).expect("id"),
                DeviceStatus::Approved,
                now_db(),
            )
            .await
            .expect("register");
    }

    // Upload: stored, then the same record again; refusals with their code.
    let file = std::fs::read(&bundle).expect("bundle");
    let (s, rec) = upload(&api, file.clone()).await;
    assert_eq!(s, 201, "{rec}");
    assert_eq!(rec["version"], "1.4.0");
    assert_eq!(rec["sha256"], sha256_hex(&file));
    assert_eq!(rec["size"], json!(file.len()));
    let (s, again) = upload(&api, file.clone()).await;
    assert_eq!((s, &again), (200, &rec));
    let mut tampered = file.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x20;
    let (s, v) = upload(&api, tampered).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["code"], "payload_digest_mismatch");
    assert!(
        v["error"].as_str().unwrap_or_default().contains("refused"),
        "{v}"
    );
    let (s, v) = upload(&api, vec![0u8; (1 << 20) + 1]).await;
    assert_eq!(s, 413, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("max_bundle_mib"),
        "{v}"
    );
    let (s, list) = api.get("/api/v1/bundles").await;
    assert_eq!(s, 200);
    assert_eq!(list["bundles"].as_array().map(Vec::len), Some(1));
    let sha = rec["sha256"].as_str().expect("sha").to_owned();
    let (s, one) = api.get(&format!("/api/v1/bundles/{sha}")).await;
    assert_eq!((s, &one), (200, &rec));

    // A campaign: canary c1, then south.
    let (s, created) = api
        .send(
            Method::POST,
            "/api/v1/campaigns",
            json!({"name": "1.4.0", "bundle": sha, "canary": ["c1"], "wave_shares": [100],
                   "soak_secs": 600, "failure_threshold_pct": 10,
                   "windows": [{"site": "south", "utc_offset_minutes": 60, "start": "22:00", "minutes": 120}]}),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["campaign"]["state"], "draft");
    let id = created["campaign"]["id"].as_str().expect("id").to_owned();
    let (s, v) = api
        .send(
            Method::POST,
            "/api/v1/campaigns",
            json!({"name": "x", "bundle": sha, "wave_shares": [50]}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("wave_shares"),
        "{v}"
    );

    let early = Collector::start(
        running.broker.1,
        "ota-early",
        "medgate/v1/+/+/update/desired",
        None,
    )
    .await;
    let (s, v) = api
        .send(
            Method::POST,
            &format!("/api/v1/campaigns/{id}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["campaign"]["state"], "running");
    assert_eq!(v["counts"]["offered"], 1);
    early
        .wait(10, "the canary's offer", |c| !updates(c, "c1").is_empty())
        .await;
    let offer = match &updates(&early, "c1")[0].action {
        UpdateAction::Install(o) => o.clone(),
        UpdateAction::Cancel => panic!("an install, not a cancel"),
    };
    assert_eq!(
        offer.url.as_str(),
        format!("https://fleet.region.example:8443/device/v1/bundles/{sha}")
    );
    assert_eq!(offer.sha256.as_str(), sha);
    assert_eq!(offer.size, file.len() as u64);
    assert!(
        updates(&early, "d1").is_empty(),
        "the next wave waits for the canary"
    );
    // Retained: a device that connects later finds it.
    let late = Collector::start(
        running.broker.1,
        "ota-late",
        "medgate/v1/+/+/update/desired",
        None,
    )
    .await;
    late.wait(10, "the retained offer", |c| !updates(c, "c1").is_empty())
        .await;
    assert!(
        late.messages
            .lock()
            .expect("lock")
            .iter()
            .all(|(_, _, retain)| *retain)
    );
    assert!(
        store
            .device_may_download(
                &DeviceId::new("c1").expect("id"),
                &medgate_contract::Sha256Hex::new(&sha).expect("sha")
            )
            .await
            .expect("may")
    );

    // Twice approved: 409 with what to do.
    let (s, v) = api
        .send(
            Method::POST,
            &format!("/api/v1/campaigns/{id}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    // Cancel: the canary's offer is withdrawn.
    let (s, v) = api
        .send(
            Method::POST,
            &format!("/api/v1/campaigns/{id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["campaign"]["state"], "cancelled");
    early
        .wait(10, "the cancel", |c| {
            updates(c, "c1")
                .last()
                .is_some_and(|u| u.action == UpdateAction::Cancel)
        })
        .await;
    let (s, one) = api.get(&format!("/api/v1/campaigns/{id}")).await;
    assert_eq!(s, 200);
    let states: Vec<&str> = one["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter_map(|d| d["state"].as_str())
        .collect();
    assert_eq!(states, ["withdrawn", "withdrawn"]);

    let (s, audit) = api.get("/api/v1/audit?action=update.").await;
    assert_eq!(s, 200);
    let actions: Vec<&str> = audit
        .as_array()
        .or_else(|| audit["entries"].as_array())
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in [
        "update.bundle_upload",
        "update.campaign_create",
        "update.campaign_approve",
        "update.campaign_cancel",
    ] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
}
