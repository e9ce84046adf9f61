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

// ---- console-auth (issue 12): single sign-on, the account and administration pages, and the
// login's defences ----

/// A real OpenID provider (tests/browser/oidc_provider.mjs, oidc-provider from npm) on a free
/// loopback port, for a fleet whose console is at `fleet_base`; killed when dropped.
struct OidcProvider {
    peer: medgate_testkit::Peer,
    issuer: String,
}

impl OidcProvider {
    async fn start(dir: &std::path::Path, fleet_base: &str, secret: &str) -> OidcProvider {
        let port = free_port();
        let mut cmd = std::process::Command::new("node");
        cmd.arg(browser::browser_dir().join("oidc_provider.mjs"))
            .current_dir(browser::browser_dir())
            .env("OIDC_PORT", port.to_string())
            .env(
                "FLEET_REDIRECT_URI",
                format!("{fleet_base}/auth/oidc/callback"),
            )
            .env("FLEET_POST_LOGOUT_URI", format!("{fleet_base}/login"))
            .env("OIDC_CLIENT_SECRET", secret);
        let mut peer = medgate_testkit::Peer::spawn("oidc-provider", cmd, &dir.join("oidc.log"))
            .expect("start the OpenID provider");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !peer.log().contains("ready") {
            peer.check_alive().expect("the OpenID provider runs");
            assert!(
                std::time::Instant::now() < deadline,
                "the OpenID provider did not get ready: {}",
                peer.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        OidcProvider {
            peer,
            issuer: format!("http://127.0.0.1:{port}"),
        }
    }
}

/// A fleet on a known free port (the provider must know its callback before it starts).
fn fleet_on_free_port(dir: &std::path::Path) -> (medgate_fleet::config::FleetConfig, String) {
    let mut c = fleet_config(dir);
    let port = free_port();
    c.http.bind = format!("127.0.0.1:{port}").parse().expect("addr");
    (c, format!("http://127.0.0.1:{port}"))
}

/// A local user by the break-glass admin token.
async fn local_user(api: &Api, name: &str, role: &str, password: &str) {
    let (s, v) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/users",
            serde_json::json!({"name": name, "role": role, "password": password}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
}

/// Single sign-on against a real provider: the login page's button (screenshots), a user whose
/// group maps to operator of one site sees that site's devices and gets 403 on the admin pages,
/// logs out through the provider's logout; a user without a mapped group is refused in words;
/// an admin by group sees the SSO users. Then the provider is stopped: the button says it is not
/// available and the local break-glass login still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_login_with_roles_from_groups_logout_and_break_glass_in_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut config, base) = fleet_on_free_port(dir.path());
    let secret_file = dir.path().join("oidc-secret");
    std::fs::write(&secret_file, "a-client-secret-for-the-test\n").expect("secret");
    let mut provider = OidcProvider::start(dir.path(), &base, "a-client-secret-for-the-test").await;
    let oidc: medgate_fleet::auth::oidc::OidcSection = toml::from_str(&format!(
        r#"
        name = "Region login"
        issuer = "{issuer}"
        client_id = "medgate-fleet"
        client_secret_file = {secret:?}
        redirect_url = "{base}/auth/oidc/callback"
        algorithms = ["RS256", "ES256"]
        [[roles]]
        group = "region-admins"
        role = "admin"
        [[roles]]
        group = "radiology-it"
        role = "operator"
        sites = ["st-marien"]
        "#,
        issuer = provider.issuer,
        secret = secret_file.display().to_string(),
    ))
    .expect("oidc section");
    config.auth.oidc = Some(oidc);
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    let running = medgate_fleet::serve(config).await.expect("serve");
    assert_eq!(running.base_url(), base);
    let api = Api::new(&running);
    enroll(&api, "st-marien", "ct-room-1").await;
    enroll(&api, "nordklinik", "dx-room-1").await;
    local_user(&api, "it-admin", "admin", "break glass in case of fire").await;

    run_scenario(
        "console_sso.mjs",
        &base,
        &[
            ("PHASE", "provider-up"),
            ("PROVIDER_URL", &provider.issuer),
            ("LOCAL_USER", "it-admin"),
            ("LOCAL_PASSWORD", "break glass in case of fire"),
        ],
    )
    .await;

    // The SSO users exist, marked as such, with the roles of their groups; the audit log has
    // their sign-ins and the refusal.
    let (s, v) = api.get("/api/v1/users").await;
    assert_eq!(s, 200);
    let users = v["users"].as_array().expect("users");
    let rita = users
        .iter()
        .find(|u| u["name"] == "rita.radiology")
        .expect("rita.radiology created at her first sign-in");
    assert_eq!(
        (
            &rita["role"],
            &rita["sso"],
            &rita["has_password"],
            &rita["sites"]
        ),
        (
            &serde_json::json!("operator"),
            &serde_json::json!(true),
            &serde_json::json!(false),
            &serde_json::json!(["st-marien"])
        )
    );
    assert!(users.iter().all(|u| u["name"] != "carl.cleaner"));
    let (_, log) = api.get("/api/v1/audit?action=login.sso").await;
    let entries = log["entries"].as_array().expect("entries");
    assert!(
        entries
            .iter()
            .any(|e| e["actor"] == "rita.radiology" && e["outcome"] == "ok"),
        "{log}"
    );
    assert!(
        entries.iter().any(|e| e["outcome"] == "failed"
            && e["after"]
                .as_str()
                .is_some_and(|a| a.contains("none of your groups"))),
        "{log}"
    );

    // The provider goes down: its button says so, the local login still works.
    provider.peer.kill().expect("stop the provider");
    run_scenario(
        "console_sso.mjs",
        &base,
        &[
            ("PHASE", "provider-down"),
            ("PROVIDER_URL", &provider.issuer),
            ("LOCAL_USER", "it-admin"),
            ("LOCAL_PASSWORD", "break glass in case of fire"),
        ],
    )
    .await;
}

/// The administration pages in the browser, as an admin: create a viewer (its generated
/// password shown once) and a token (shown once, works, revoked), the viewer's 403 on admin
/// pages, its session ended by the admin, role changes, the audit log filtered and exported;
/// screenshots of every page. Then the login's defences: a cross-site POST from a page of
/// another origin refused (no user made, no login), throttling said in words, and a session
/// idle longer than `[auth] session_idle_minutes` (1 here) sent back to the login page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_pages_and_the_login_defences_in_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = fleet_config(dir.path());
    config.auth.session_idle_minutes = 1;
    let running = medgate_fleet::serve(config).await.expect("serve");
    let api = Api::new(&running);
    enroll(&api, "st-marien", "ct-room-1").await;
    enroll(&api, "st-marien", "mr-room-2").await;
    enroll(&api, "nordklinik", "dx-room-1").await;
    local_user(&api, "it-admin", "admin", "correct horse battery staple").await;
    local_user(&api, "locked.out", "viewer", "the right one, long enough").await;
    // 60 audited changes, for the audit log's paging (50 a page).
    for i in 0..60 {
        let (s, v) = api
            .send(
                reqwest::Method::PATCH,
                "/api/v1/devices/ct-room-1",
                serde_json::json!({"room": format!("CT {i}")}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let base = running.base_url();
    run_scenario(
        "console_admin.mjs",
        &base,
        &[
            ("ADMIN_USER", "it-admin"),
            ("ADMIN_PASSWORD", "correct horse battery staple"),
            ("THROTTLE_USER", "locked.out"),
        ],
    )
    .await;
    // What the scenario did is in the registry and the audit log; the forged requests did
    // nothing.
    let (_, v) = api.get("/api/v1/users").await;
    let names: Vec<&str> = v["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert!(names.contains(&"vera.viewer"), "{names:?}");
    assert!(
        !names.contains(&"mallory"),
        "the cross-site POST made no user"
    );
    let (_, log) = api.get("/api/v1/audit?actor=it-admin&action=user.").await;
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"user.create") && actions.contains(&"user.update"),
        "{actions:?}"
    );
    let (_, log) = api.get("/api/v1/audit?action=csrf").await;
    assert!(
        !log["entries"].as_array().expect("entries").is_empty(),
        "the forged login is audited: {log}"
    );
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
    let out = std::process::Command::new(workspace_bin("medgate-appliance").expect("bin"))
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

    // What the downloaded diagnostics bundle must not hold: the patients' names, IDs, birth dates
    // and the accession numbers of the studies sent above.
    let forbidden = [11u64, 12]
        .iter()
        .flat_map(|&seed| {
            let p = medgate_sim::studies::Patient::synthetic(seed);
            [p.name, p.id, p.birth_date, format!("ACC{seed:05}")]
        })
        .collect::<Vec<_>>()
        .join("\n");
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
            ("FORBIDDEN", &forbidden),
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

// alerts (issue 13 part 3): the Alerts page.

/// Alerts of two sites in the store (three firing and one resolved at st-marien, one firing at
/// nordklinik); an operator of st-marien acknowledges one and silences another in chromium, a
/// viewer sees no buttons; both actions are in the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_page_acknowledge_and_silence_in_chromium() {
    use medgate_fleet::alerts::rules::Condition;
    use medgate_fleet::model::{AlertKind, Severity};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = fleet_config(dir.path());
    // The rules would clear the alerts made below (their conditions do not hold).
    config.alerts.enabled = false;
    let running = medgate_fleet::serve(config).await.expect("serve");
    let api = Api::new(&running);
    enroll(&api, "st-marien", "ct-room-1").await;
    enroll(&api, "st-marien", "mr-room-2").await;
    enroll(&api, "nordklinik", "dx-room-1").await;
    let store = &running.app.ops.store;
    let now = medgate_fleet::store::now_db();
    let cond = |device: &str, site: &str, kind, severity, words: &str| Condition {
        device: device.into(),
        site: site.into(),
        kind,
        severity,
        words: words.into(),
    };
    let old = store
        .raise_alert(
            &cond("mr-room-2", "st-marien", AlertKind::OldestQueued, Severity::Warning, "mr-room-2 (AE MEDGATE_MR2): oldest unforwarded object waits for 16 min (41 waiting)"),
            now - 3_600_000,
            &[],
        )
        .await
        .expect("raise")
        .expect("new");
    store
        .clear_alert(&old, now - 3_600_000 + 720_000, &[])
        .await
        .expect("clear");
    for (device, site, kind, severity, words, ago) in [
        (
            "ct-room-1",
            "st-marien",
            AlertKind::ArchiveUnreachable,
            Severity::Critical,
            "ct-room-1 (AE MEDGATE_CT1): archive unreachable: destination pacs with 12 objects waiting, oldest 14 min",
            840_000,
        ),
        (
            "mr-room-2",
            "st-marien",
            AlertKind::DiskUse,
            Severity::Warning,
            "mr-room-2 (AE MEDGATE_MR2): disk 88 % full (58 GB free)",
            300_000,
        ),
        (
            "ct-room-1",
            "st-marien",
            AlertKind::CertificateExpiring,
            Severity::Warning,
            "ct-room-1 (AE MEDGATE_CT1): device certificate ends in 21 d; enroll it again before then",
            60_000,
        ),
        (
            "dx-room-1",
            "nordklinik",
            AlertKind::DeviceOffline,
            Severity::Critical,
            "dx-room-1 (AE MEDGATE_DX1): offline, no heartbeat for 9 min",
            120_000,
        ),
    ] {
        store
            .raise_alert(&cond(device, site, kind, severity, words), now - ago, &[])
            .await
            .expect("raise")
            .expect("new");
    }
    for (name, role) in [("olga.operator", "operator"), ("vic.viewer", "viewer")] {
        let (s, v) = api
            .send(
                reqwest::Method::POST,
                "/api/v1/users",
                serde_json::json!({"name": name, "role": role, "sites": ["st-marien"], "password": "correct horse battery staple"}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let base = running.base_url();
    run_scenario(
        "console_alerts.mjs",
        &base,
        &[
            ("OPERATOR_USER", "olga.operator"),
            ("VIEWER_USER", "vic.viewer"),
            ("PASSWORD", "correct horse battery staple"),
        ],
    )
    .await;
    for action in ["alert.ack", "alert.silence"] {
        let (_, log) = api.get(&format!("/api/v1/audit?action={action}")).await;
        let entries = log["entries"].as_array().expect("entries");
        assert!(
            entries
                .iter()
                .any(|e| e["actor"] == "olga.operator" && e["outcome"] == "ok"),
            "{action}: {log}"
        );
    }
}

// analytics (issue 13 part 2): the Analytics pages.

/// A year of generated history for three appliances at two hospitals in the rollups, plus
/// today's studies through the real ingest path; an IT user of every site reads the region's
/// numbers in chromium (figures as the API gives them, charts drawn, 7/30/365 days, delays,
/// appliances, the per-day table and its limit in words); a viewer of one hospital sees only
/// it and is refused another. Screenshots at both sizes, light and dark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_pages_in_chromium() {
    use medgate_contract::{
        AeTitle, DeviceId, Event, EventBody, EventId, Flow, Modality, Schema, SiteId, Token,
    };
    use medgate_fleet::analytics::history::{History, SeedDevice};
    use medgate_fleet::civil::Day;
    use medgate_fleet::store::Message;
    let dir = tempfile::tempdir().expect("tempdir");
    let running = medgate_fleet::serve(fleet_config(dir.path()))
        .await
        .expect("serve");
    let api = Api::new(&running);
    let rooms = [
        ("st-marien", "ct-room-1", "CT"),
        ("st-marien", "us-room-2", "US"),
        ("nordklinik", "dx-room-1", "DX"),
    ];
    for (site, device, _) in rooms {
        enroll(&api, site, device).await;
    }
    let store = &running.app.ops.store;
    let now = medgate_fleet::store::now_db();
    let today = Day::of_ms(now);
    let devices = rooms
        .iter()
        .map(|(site, device, m)| SeedDevice {
            site: (*site).into(),
            device: (*device).into(),
            modality: Modality::new(*m).expect("modality"),
        })
        .collect();
    let history = History::new(devices, 60_000, 13).expect("history");
    store
        .seed_history(&history, today.plus(-365), today.start_ms() - 1)
        .await
        .expect("seed");
    // Today: two CT studies and their confirmations through the ingest path.
    let ct = DeviceId::new("ct-room-1").expect("id");
    let site = SiteId::new("st-marien").expect("site");
    for (seq, body) in [
        EventBody::StudyReceived {
            calling_ae: AeTitle::new("CT_SCANNER").expect("ae"),
            called_ae: AeTitle::new("MEDGATE").expect("ae"),
            modality: Some(Modality::new("CT").expect("m")),
            sop_classes: vec![],
            received: Flow {
                objects: 300,
                bytes: 159_000_000,
            },
            duration_ms: 9_000,
        },
        EventBody::StudyForwarded {
            destination: Token::new("pacs").expect("token"),
            modality: Some(Modality::new("CT").expect("m")),
            forwarded: Flow {
                objects: 300,
                bytes: 159_000_000,
            },
            latency_ms: 1_400,
            attempts: 1,
        },
    ]
    .into_iter()
    .enumerate()
    {
        let e = Event {
            schema: Schema::default(),
            id: EventId::new(42, u64::try_from(seq).expect("seq")),
            at_ms: u64::try_from(now - 60_000).expect("time"),
            event: body,
        };
        let mut c = store.pool().acquire().await.expect("conn");
        store
            .record(&mut c, &site, &ct, Message::Event(&e), now)
            .await
            .expect("record");
    }
    for (name, sites) in [
        ("ines.it", serde_json::Value::Null),
        ("vic.viewer", serde_json::json!(["st-marien"])),
    ] {
        let (s, v) = api
            .send(
                reqwest::Method::POST,
                "/api/v1/users",
                serde_json::json!({"name": name, "role": "viewer", "sites": sites, "password": "correct horse battery staple"}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    // What the page must show, from the API.
    let (s, o) = api.get("/api/v1/analytics/overview").await;
    assert_eq!(s, 200, "{o}");
    let studies = o["region"]["studies"].as_u64().expect("studies");
    assert!(studies > 40_000, "a year of history: {o}");
    let (s, t) = api.get("/api/v1/analytics/trend?days=365").await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["days"].as_array().map(Vec::len), Some(365), "{t}");
    let (s, d) = api.get("/api/v1/analytics/daily?days=93").await;
    assert_eq!(s, 400, "the per-day table's limit: {d}");
    let (s, d) = api.get("/api/v1/analytics/delay?days=1").await;
    assert_eq!(s, 200, "{d}");
    assert!(
        d["region"]["confirmations"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "today's confirmation: {d}"
    );
    let grouped = medgate_fleet::console::analytics::count(studies);
    let base = running.base_url();
    run_scenario(
        "console_analytics.mjs",
        &base,
        &[
            ("IT_USER", "ines.it"),
            ("VIEWER_USER", "vic.viewer"),
            ("PASSWORD", "correct horse battery staple"),
            ("REGION_STUDIES", &grouped),
        ],
    )
    .await;
}

/// ota (issue 14): one device's telemetry with its update agent's report, through the ingest
/// path (what the campaign engine observes).
async fn report_update(
    store: &medgate_fleet::store::Store,
    site: &str,
    device: &str,
    seq: u64,
    update: medgate_contract::UpdateReport,
) {
    use medgate_contract::{DeviceId, Schema, SiteId, Telemetry, TelemetrySnapshot};
    let now = medgate_fleet::store::now_db();
    let t = Telemetry {
        schema: Schema::default(),
        sent_at_ms: u64::try_from(now).expect("time"),
        boot_id: 7,
        seq,
        snapshot: TelemetrySnapshot {
            uptime_secs: seq,
            update: Some(update),
            ..TelemetrySnapshot::default()
        },
    };
    let mut c = store.pool().acquire().await.expect("conn");
    store
        .record(
            &mut c,
            &SiteId::new(site).expect("site"),
            &DeviceId::new(device).expect("device"),
            medgate_fleet::store::Message::Telemetry(&t),
            now,
        )
        .await
        .expect("record");
}

/// ota (issue 14): the Updates pages. The fleet checks uploads with a real trust store and a
/// bundle signed by `medgate-bundle`; the appliances are played by this test through the
/// ingest path (offered → the canary waits for idle DICOM for a while → installed), which is
/// what the campaign engine reads; the admin drives the campaign in Chromium.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_pages_in_chromium() {
    use medgate_contract::{Token, UpdatePhase, UpdateReport};
    use medgate_fleet::ota::campaign::DeviceState;
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = medgate_e2e::ota::vendor_keys(dir.path()).expect("keys");
    let trust = dir.path().join("fleet-trust.json");
    medgate_e2e::ota::trust_store(&keys, &trust).expect("trust");
    let payload = dir.path().join("medgate-appliance-0.2.0");
    std::fs::write(
        &payload,
        "#!/bin/sh\nexec /usr/bin/medgate-appliance \"$@\"\n",
    )
    .expect("payload");
    let bundle = dir.path().join("medgate-0.2.0.mgb");
    medgate_e2e::ota::sign(&keys, &payload, "0.2.0", &bundle).expect("sign");
    let mut bad = std::fs::read(&bundle).expect("bundle");
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let bad_bundle = dir.path().join("medgate-0.2.0-tampered.mgb");
    std::fs::write(&bad_bundle, bad).expect("bad");
    let mut cfg = fleet_config(dir.path());
    cfg.updates.trust_file = Some(trust);
    cfg.updates.download_url =
        Some(medgate_contract::HttpsUrl::new("https://fleet.example:8443").expect("url"));
    let running = medgate_fleet::serve(cfg).await.expect("serve");
    let api = Api::new(&running);
    let rooms = [
        ("st-marien", "ct-room-1"),
        ("st-marien", "mr-room-2"),
        ("st-marien", "us-room-3"),
        ("nordklinik", "dx-room-1"),
    ];
    for (site, device) in rooms {
        enroll(&api, site, device).await;
    }
    let r = api
        .http
        .post(format!("{}/api/v1/bundles", api.base))
        .bearer_auth(&api.token)
        .body(std::fs::read(&bundle).expect("bundle"))
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status().as_u16(), 201);
    local_user(&api, "ada.admin", "admin", "correct horse battery staple").await;
    let (s, v) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/users",
            serde_json::json!({"name": "nils.viewer", "role": "viewer", "sites": ["nordklinik"], "password": "correct horse battery staple"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    // The wall of the region's corridor shows the rollout too.
    let display = running
        .app
        .ops
        .create_display(
            &medgate_fleet::ops::Actor::cli(),
            "Radiology corridor",
            None,
            None,
        )
        .await
        .expect("display link");
    // The appliances: each answers its offer; the canary waits 8 s for idle DICOM first.
    let store = running.app.ops.store.clone();
    let devices = tokio::spawn(async move {
        let mut seq = 0u64;
        let mut offered_at = std::collections::HashMap::new();
        loop {
            for id in store.live_campaigns().await.unwrap_or_default() {
                for d in store.campaign_devices(&id).await.unwrap_or_default() {
                    let (site, device) = (d.site.to_string(), d.device.to_string());
                    let report = |state, running: &str, code: Option<&str>| UpdateReport {
                        state,
                        version: Token::new("0.2.0").ok(),
                        running: Token::new(running).ok(),
                        campaign: Token::new(&id).ok(),
                        on_probation: false,
                        code: code.and_then(|c| Token::new(c).ok()),
                    };
                    let at = *offered_at
                        .entry(device.clone())
                        .or_insert_with(std::time::Instant::now);
                    let u = match d.state {
                        DeviceState::Pending => continue,
                        DeviceState::Offered | DeviceState::WaitingIdle
                            if device == "ct-room-1" && at.elapsed().as_secs() < 8 =>
                        {
                            report(
                                UpdatePhase::WaitingIdle,
                                "0.1.0",
                                Some("associations_active"),
                            )
                        }
                        _ => report(UpdatePhase::Installed, "0.2.0", None),
                    };
                    seq += 1;
                    report_update(&store, &site, &device, seq, u).await;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    });
    run_scenario(
        "console_updates.mjs",
        &running.base_url(),
        &[
            ("ADMIN_USER", "ada.admin"),
            ("VIEWER_USER", "nils.viewer"),
            ("PASSWORD", "correct horse battery staple"),
            ("BAD_BUNDLE", &bad_bundle.display().to_string()),
            ("WALL_PATH", &format!("/wall/{}", display.secret)),
        ],
    )
    .await;
    devices.abort();
}
