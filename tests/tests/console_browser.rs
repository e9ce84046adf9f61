//! The console in a real browser (Debian's chromium, headless, driven by playwright-core from
//! tests/browser): each test serves a fleet as in production and runs one scenario script
//! against it. Screenshots land in target/screenshots/.

mod fleet_support;

use fleet_support::browser::run_scenario;
use fleet_support::*;
// console-fleet
use medgate_e2e::{Appliance, Storescp, workspace_bin};

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

// console-fleet: sites, claims, a real appliance enrolled with the downloaded file, site scope
// and a bulk action over "all".

/// Admin creates a site and a room, issues a claim token and downloads the provisioning file
/// (chromium); the real `medgate-appliance` enrolls with that file and reports; the operator of
/// site A sees only site A, is refused site B's appliance by URL and through the API, and a bulk
/// action over "all" changes only site A's devices; the admin finds the new appliance online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_claims_enrollment_scope_and_bulk_in_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = medgate_fleet::serve(fleet_config(dir.path()))
        .await
        .expect("serve");
    let api = Api::new(&running);
    // A region to look at: two hospitals, rooms, tags, a device waiting for approval.
    let (s, _) = api
        .send(
            reqwest::Method::PUT,
            "/api/v1/sites/st-marien",
            serde_json::json!({"name": "St. Marien"}),
        )
        .await;
    assert_eq!(s, 200);
    for i in 1..=14 {
        let dev = format!("{}-room-{i}", ["ct", "mr", "dx", "us"][i % 4]);
        enroll(&api, "st-marien", &dev).await;
        let tags = if i % 3 == 0 {
            vec!["radiology", "night-shift"]
        } else {
            vec!["radiology"]
        };
        let (s, _) = api
            .send(
                reqwest::Method::PATCH,
                &format!("/api/v1/devices/{dev}"),
                serde_json::json!({"room": format!("Room {}", 100 + i), "tags": tags}),
            )
            .await;
        assert_eq!(s, 200);
    }
    for dev in ["dx-room-1", "ct-room-2"] {
        enroll(&api, "nordby", dev).await;
    }
    for (name, role, sites) in [
        ("it-admin", "admin", None),
        ("op-marien", "operator", Some(vec!["st-marien"])),
    ] {
        let (s, v) = api
            .send(
                reqwest::Method::POST,
                "/api/v1/users",
                serde_json::json!({"name": name, "role": role, "sites": sites, "password": "correct horse battery staple"}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let base = running.base_url();
    let provisioning = dir.path().join("provisioning.toml");
    let common = [
        ("ADMIN_USER", "it-admin"),
        ("OP_USER", "op-marien"),
        ("PASSWORD", "correct horse battery staple"),
        ("NEW_SITE", "nordklinik"),
        ("NEW_DEVICE", "ct-north-1"),
        ("SITE_A", "st-marien"),
        ("SITE_B", "nordby"),
        ("B_DEVICE", "ct-room-2"),
        ("BULK_TAG", "checked-2026"),
    ];
    let prov = provisioning.display().to_string();
    let mut vars = common.to_vec();
    vars.extend([("PHASE", "admin"), ("PROVISIONING_PATH", prov.as_str())]);
    run_scenario("console_fleet.mjs", &base, &vars).await;

    // The real appliance enrolls with the downloaded file, then runs and reports.
    let text = std::fs::read_to_string(&provisioning).expect("downloaded provisioning file");
    assert!(text.contains(&format!("fleet_url = \"{base}\"")), "{text}");
    let identity = dir.path().join("identity");
    let out =
        std::process::Command::new(workspace_bin("medgate-appliance").expect("appliance binary"))
            .arg("enroll")
            .arg("--provisioning")
            .arg(&provisioning)
            .arg("--identity-dir")
            .arg(&identity)
            .output()
            .expect("enroll");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "enroll: {said}");
    assert!(
        said.contains("enrolled as device ct-north-1 of site nordklinik"),
        "{said}"
    );
    let archive_port = free_port();
    let _archive = Storescp::start(&dir.path().join("archive"), archive_port, "ARCHIVE")
        .await
        .expect("storescp");
    let _appliance = Appliance::start_configured(
        &dir.path().join("appliance"),
        &format!("fleet_enrollment = \"{}\"\n", identity.join("fleet.toml").display()),
        "",
        &format!(
            "[[destination]]\nname = \"archive\"\nkind = \"dimse\"\naddress = \"127.0.0.1:{archive_port}\"\ncalled_ae_title = \"ARCHIVE\"\n"
        ),
    )
    .await
    .expect("appliance");
    api.wait(
        30,
        "the enrolled appliance online",
        "/api/v1/devices/ct-north-1",
        |d| d["connection"] == "online" && d["room"] == "CT 1" && d["site"] == "nordklinik",
    )
    .await;

    let mut vars = common.to_vec();
    vars.push(("PHASE", "operator"));
    run_scenario("console_fleet.mjs", &base, &vars).await;
    // The bulk action over "all" reached every device of site A and none of site B.
    let (_, devices) = api.get("/api/v1/devices").await;
    let devices = devices["devices"].as_array().cloned().unwrap_or_default();
    assert!(devices.len() > 14);
    for d in devices {
        let tagged = d["tags"]
            .as_array()
            .is_some_and(|t| t.contains(&serde_json::json!("checked-2026")));
        assert_eq!(tagged, d["site"] == "st-marien", "{d}");
    }
}
