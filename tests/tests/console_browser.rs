//! The console in a real browser (Debian's chromium, headless, driven by playwright-core from
//! tests/browser): each test serves a fleet as in production and runs one scenario script
//! against it. Screenshots land in target/screenshots/.

mod fleet_support;

use fleet_support::browser::run_scenario;
use fleet_support::*;

/// The printed setup link → first admin → overview and devices (screenshots at 1366×768 and
/// 1920×1080, light and dark) → logout → wrong password refused → login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_setup_login_logout_in_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = medgate_fleet::serve(fleet_config(dir.path()))
        .await
        .expect("serve");
    let api = Api::new(&running);
    enroll(&api, "st-marien", "ct-room-1").await;
    enroll(&api, "st-marien", "mr-room-2").await;
    enroll(&api, "nordklinik", "dx-room-1").await;
    let token = running
        .setup_token
        .clone()
        .expect("no user yet: a setup link");
    let base = running.base_url();
    let setup_url = format!("{base}/setup?token={token}");
    run_scenario(
        "console_first_run.mjs",
        &base,
        &[
            ("SETUP_URL", &setup_url),
            ("ADMIN_USER", "it-admin"),
            ("ADMIN_PASSWORD", "correct horse battery staple"),
        ],
    )
    .await;
}

// ---- console: device page ----

/// The device page with a real appliance connected (enrolled by its CLI, reporting every
/// second over the fleet's embedded broker, forwarding to a storescp archive that goes away
/// and comes back): an operator edits the configuration with a wrong key, sees the error at
/// that key, fixes it, saves, and the page shows `in_sync` once the appliance applied it; a
/// viewer sees the page but gets 403 changing the configuration, through the page and through
/// the API; screenshots at both sizes, light and dark, with charts of real traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_page_edits_the_configuration_of_a_real_appliance_in_chromium() {
    use medgate_e2e::{Appliance, Storescp, appliance::ct_files, free_port};
    use reqwest::Method;
    use serde_json::json;
    use std::time::Duration;

    const SITE: &str = "st-olav";
    const DEVICE: &str = "ct-room-1";
    let dir = tempfile::Builder::new()
        .prefix("medgate-e2e-device-page-")
        .tempdir()
        .expect("tempdir");
    let running = medgate_fleet::serve(fleet_config(dir.path()))
        .await
        .expect("serve");
    let api = Api::new(&running);
    let base = running.base_url();
    for (name, role) in [("op-anna", "operator"), ("viewer-ben", "viewer")] {
        let (s, v) = api
            .send(
                Method::POST,
                "/api/v1/users",
                json!({"name": name, "role": role, "password": "a long enough password"}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }

    // The appliance enrolls with a claim token (its own CLI), then runs with what it wrote.
    let (s, claim) = api
        .send(
            Method::POST,
            "/api/v1/claims",
            json!({"site": SITE, "device": DEVICE}),
        )
        .await;
    assert_eq!(s, 201, "{claim}");
    let provisioning = dir.path().join("provisioning.toml");
    std::fs::write(
        &provisioning,
        format!(
            "fleet_url = \"{base}\"\nclaim_token = \"{}\"\ntelemetry_interval_secs = 1\n",
            claim["token"].as_str().expect("token")
        ),
    )
    .expect("provisioning");
    let identity = dir.path().join("identity");
    let out =
        std::process::Command::new(medgate_e2e::workspace_bin("medgate-appliance").expect("bin"))
            .arg("enroll")
            .arg("--provisioning")
            .arg(&provisioning)
            .arg("--identity-dir")
            .arg(&identity)
            .output()
            .expect("enroll");
    assert!(
        out.status.success(),
        "enroll: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let archive_port = free_port();
    let mut archive = Storescp::start(&dir.path().join("archive"), archive_port, "ARCHIVE")
        .await
        .expect("storescp");
    let appliance = Appliance::start_configured(
        &dir.path().join("appliance"),
        &format!(
            "fleet_enrollment = \"{}\"\n",
            identity.join("fleet.toml").display()
        ),
        "",
        &format!(
            "[[destination]]\nname = \"archive\"\nkind = \"dimse\"\naddress = \"127.0.0.1:{archive_port}\"\ncalled_ae_title = \"ARCHIVE\"\n"
        ),
    )
    .await
    .expect("appliance");
    let device_path = format!("/api/v1/devices/{DEVICE}");
    api.wait(
        60,
        "the appliance online with its inventory",
        &device_path,
        |d| d["connection"] == "online" && d["inventory"]["appliance_version"].is_string(),
    )
    .await;

    // Real traffic for the charts: a CT series, then the archive goes away while a second one
    // arrives (the queue grows, the destination backs off), then it comes back and drains.
    let first = ct_files(&dir.path().join("ct1"), 11, 24).expect("ct");
    appliance
        .storescu()
        .calling_ae("CTSCANNER")
        .send(&first.iter().map(|f| f.path.clone()).collect::<Vec<_>>())
        .await
        .expect("storescu")
        .expect_all_success(first.len())
        .expect("stored");
    appliance
        .wait_drained(Duration::from_secs(60))
        .await
        .expect("drained");
    archive.stop().await.expect("archive down");
    let second = ct_files(&dir.path().join("ct2"), 12, 30).expect("ct");
    appliance
        .storescu()
        .calling_ae("CTSCANNER")
        .send(&second.iter().map(|f| f.path.clone()).collect::<Vec<_>>())
        .await
        .expect("storescu")
        .expect_all_success(second.len())
        .expect("stored while the archive is down");
    // The fleet sees the destination back off with the queue it holds.
    api.wait(
        60,
        "telemetry with the archive backing off",
        &format!("{device_path}/telemetry?from_ms=0&limit=100000"),
        |v| {
            v["samples"]
                .as_array()
                .and_then(|s| s.last())
                .is_some_and(|s| {
                    s["data"]["destinations"][0]["name"] == "archive"
                        && s["data"]["destinations"][0]["state"] == "backing_off"
                        && s["data"]["destinations"][0]["depth"] == second.len()
                })
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let _archive = Storescp::start(&dir.path().join("archive2"), archive_port, "ARCHIVE")
        .await
        .expect("storescp back");
    appliance
        .wait_drained(Duration::from_secs(90))
        .await
        .expect("drained after the archive came back");

    // The configuration an engineer would write: the appliance's file without its box-local
    // part, as TOML, with a changed association limit.
    let mut file: toml::Table =
        toml::from_str(&std::fs::read_to_string(&appliance.config).expect("appliance config"))
            .expect("toml");
    for table in ["status", "fleet", "hardware"] {
        file.remove(table);
    }
    if let Some(toml::Value::Table(a)) = file.get_mut("appliance") {
        a.remove("data_dir");
        a.remove("fleet_enrollment");
    }
    if let Some(toml::Value::Table(l)) = file.get_mut("listener") {
        l.insert("max_associations".into(), toml::Value::Integer(12));
    }
    let config_toml = toml::to_string_pretty(&file).expect("toml text");
    assert!(
        config_toml.contains("max_associations = 12"),
        "{config_toml}"
    );

    run_scenario(
        "console_device.mjs",
        &base,
        &[
            ("DEVICE", DEVICE),
            ("OPERATOR_USER", "op-anna"),
            ("VIEWER_USER", "viewer-ben"),
            ("PASSWORD", "a long enough password"),
            ("CONFIG_TOML", &config_toml),
            ("WRONG_KEY", "max_asociations"),
            ("RIGHT_KEY", "max_associations"),
        ],
    )
    .await;

    // The device runs what the operator saved, and the viewer changed nothing.
    let (s, c) = api.get(&format!("{device_path}/config")).await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["drift"], "in_sync", "{c}");
    assert_eq!(c["desired"]["version"], 1, "{c}");
    assert_eq!(
        c["desired"]["config"]["listener"]["max_associations"], 12,
        "{c}"
    );
    // The save is audited with its user; the viewer's attempts as denied.
    let (s, audit) = api.get("/api/v1/audit?limit=500").await;
    assert_eq!(s, 200, "{audit}");
    let entries = audit["entries"].as_array().cloned().unwrap_or_default();
    assert!(
        entries.iter().any(|e| e["action"] == "config.put"
            && e["actor"].as_str().is_some_and(|a| a.contains("op-anna"))
            && e["after"]
                .as_str()
                .is_some_and(|a| a.contains("\"max_associations\":12"))),
        "{audit}"
    );
    assert!(
        entries.iter().any(|e| e["outcome"] == "denied"
            && e["actor"]
                .as_str()
                .is_some_and(|a| a.contains("viewer-ben"))),
        "{audit}"
    );
    drop(appliance);
}
