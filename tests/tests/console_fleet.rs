//! The console's fleet pages through HTTP, on a fleet served as in production, with devices
//! that report over the embedded broker (the appliance's reporter): the devices list's filters
//! and sort answered by the database; bulk actions over checked rows and over every matching
//! device, each device checked against the operator's sites and audited; sites with time zone
//! and rooms; a claim token shown once and its provisioning file, which enrolls; the live feed,
//! the events and the overview of a user limited to one site.

mod fleet_support;

use std::time::Duration;

use fleet_support::*;
use futures_util::StreamExt;
use medgate_report::Reporter;
use reqwest::Method;
use serde_json::{Value, json};

/// The device ids of a devices list page, in order.
fn listed(html: &str) -> Vec<String> {
    html.split(r#"name="id" value=""#)
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(str::to_owned)
        .collect()
}

async fn create_user(api: &Api, name: &str, role: &str, sites: Option<Vec<&str>>) {
    let (s, v) = api
        .send(
            Method::POST,
            "/api/v1/users",
            json!({"name": name, "role": role, "sites": sites, "password": "a long enough password"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_devices_list_filters_sorts_and_acts_in_bulk_within_the_operators_sites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = medgate_fleet::serve(fleet_config(dir.path()))
        .await
        .expect("serve");
    let api = Api::new(&running);
    for (site, dev) in [
        ("site-a", "a1"),
        ("site-a", "a2"),
        ("site-a", "a3"),
        ("site-b", "b1"),
    ] {
        enroll(&api, site, dev).await;
    }
    // a1 reports (online, inventory 0.1.0 on hardware "test"); "a-new" reports without
    // enrollment (pending); b1 reports at site B.
    let app = TestAppliance::new();
    let mut reporters = Vec::new();
    for (site, dev) in [("site-a", "a1"), ("site-a", "a-new"), ("site-b", "b1")] {
        reporters.push(
            Reporter::start(
                reporter_config(running.broker.1, site, dev),
                &dir.path().join(format!("outbox-{dev}")),
                app.clone(),
                app.clone(),
            )
            .expect("reporter"),
        );
    }
    for dev in ["a1", "a-new", "b1"] {
        api.wait(15, "online", &format!("/api/v1/devices/{dev}"), |d| {
            d["connection"] == "online" && d["inventory"]["appliance_version"] == "0.1.0"
        })
        .await;
    }
    let (s, _) = api
        .send(
            Method::PATCH,
            "/api/v1/devices/a2",
            json!({"tags": ["ct"], "room": "CT 2"}),
        )
        .await;
    assert_eq!(s, 200);
    create_user(&api, "it-admin", "admin", None).await;
    create_user(&api, "op-a", "operator", Some(vec!["site-a"])).await;
    create_user(&api, "view-a", "viewer", Some(vec!["site-a"])).await;
    let admin = Session::login(&api.base, "it-admin", "a long enough password").await;
    let op = Session::login(&api.base, "op-a", "a long enough password").await;
    let viewer = Session::login(&api.base, "view-a", "a long enough password").await;

    // Filters, search and sort, answered by the database.
    for (query, expected) in [
        ("", vec!["a-new", "a1", "a2", "a3", "b1"]),
        ("?tag=ct", vec!["a2"]),
        ("?q=CT", vec!["a2"]),
        ("?status=pending", vec!["a-new"]),
        ("?version=0.1.0&profile=test", vec!["a-new", "a1", "b1"]),
        ("?connection=online&site=site-a", vec!["a-new", "a1"]),
        ("?attention=1", vec!["a-new", "a2", "a3"]),
        (
            "?sort=device&dir=desc",
            vec!["b1", "a3", "a2", "a1", "a-new"],
        ),
        ("?sort=room&site=site-a", vec!["a2", "a-new", "a1", "a3"]),
        (
            "?sort=connection&dir=desc",
            vec!["a2", "a3", "a-new", "a1", "b1"],
        ),
    ] {
        let (s, html) = admin.page(&format!("/devices{query}")).await;
        assert_eq!(s, 200, "{query}");
        assert_eq!(listed(&html), expected, "/devices{query}");
    }
    let (s, html) = admin.page("/devices?sort=nonsense").await;
    assert_eq!(s, 400);
    assert!(
        html.contains("sort &quot;nonsense&quot;: use one of device"),
        "{html}"
    );
    let (_, html) = admin.page("/devices?sort=last_seen&dir=desc").await;
    assert!(
        html.contains(r#"aria-sort="descending""#) && html.contains("sort=last_seen\""),
        "the current column says its order, its link turns it round"
    );

    // The operator of site A sees site A only: the list, the filter, by URL, by the API.
    let (_, html) = op.page("/devices").await;
    assert_eq!(listed(&html), ["a-new", "a1", "a2", "a3"]);
    let (_, html) = op.page("/devices?site=site-b").await;
    assert!(listed(&html).is_empty() && html.contains("No device matches"));
    let (s, _) = op.page("/api/v1/devices/b1").await;
    assert_eq!(s, 404);
    let (s, _) = op.page("/sites/site-b").await;
    assert_eq!(s, 403);
    let (s, html) = op.page("/").await;
    assert_eq!(s, 200);
    assert!(
        html.contains("site-a") && !html.contains("site-b"),
        "{html}"
    );

    // A bulk action over every matching device asks first, then touches site A only.
    let all = [
        ("apply_to", "all"),
        ("action", "tag"),
        ("bulk_tag", "bulk-x"),
    ];
    let (s, html) = op.post_text("/devices/bulk", &all).await;
    assert_eq!(s, 200);
    assert!(
        html.contains("4 devices") && html.contains(r#"name="confirm" value="1""#),
        "{html}"
    );
    let mut confirmed = all.to_vec();
    confirmed.push(("confirm", "1"));
    let (s, html) = op.post_text("/devices/bulk", &confirmed).await;
    assert_eq!(s, 200);
    assert!(html.contains("4 tagged"), "{html}");
    let (_, devices) = api.get("/api/v1/devices").await;
    for d in devices["devices"].as_array().expect("devices") {
        let tagged = d["tags"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("bulk-x")));
        assert_eq!(tagged, d["site"] == "site-a", "{d}");
    }
    // Checked rows: another site's device is refused (and audited), as if it did not exist.
    let (s, html) = op
        .post_text(
            "/devices/bulk",
            &[
                ("apply_to", "checked"),
                ("id", "a1"),
                ("id", "a3"),
                ("id", "b1"),
                ("id", "a-new"),
                ("action", "restart"),
            ],
        )
        .await;
    assert_eq!(s, 200);
    assert!(
        html.contains(
            "1 restarted, 1 skipped: not approved (pending), 1 skipped: not connected, 1 refused: not at one of your sites"
        ),
        "{html}"
    );
    let (_, log) = api.get("/api/v1/audit?target=device:b1").await;
    assert!(
        log["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["action"] == "bulk.restart" && e["outcome"] == "denied"),
        "{log}"
    );
    let (_, log) = api.get("/api/v1/audit?target=device:a1").await;
    assert!(
        log["entries"][0]["action"] == "command.create",
        "each device's change is audited on its own: {log}"
    );
    let (_, cmds) = api.get("/api/v1/devices/a1/commands").await;
    assert_eq!(cmds["commands"][0]["action"]["type"], "restart");
    let (s, html) = op
        .post_text(
            "/devices/bulk",
            &[
                ("status", "pending"),
                ("apply_to", "all"),
                ("action", "approve"),
                ("confirm", "1"),
            ],
        )
        .await;
    assert!(s == 200 && html.contains("1 approved"), "{html}");
    let (_, d) = api.get("/api/v1/devices/a-new").await;
    assert_eq!(d["status"], "approved");
    // A configuration document for the checked rows, validated for each device.
    let (s, html) = op
        .post_text(
            "/devices/bulk",
            &[
                ("apply_to", "checked"),
                ("id", "a2"),
                ("action", "config"),
                ("config_source", "document"),
                (
                    "config_document",
                    "[listener]\nae_title = \"\"\nbind = \"0.0.0.0:104\"\n",
                ),
            ],
        )
        .await;
    assert!(
        s == 200
            && html.contains("1 failed: not valid for it: ")
            && html.contains("listener.ae_title"),
        "{html}"
    );
    // Without the CSRF token, or as a viewer: refused before any device is looked at.
    let r = op.post("/devices/bulk", &confirmed, false).await;
    assert_eq!(r.status(), 403);
    let r = viewer.post("/devices/bulk", &confirmed, true).await;
    assert_eq!(r.status(), 403);
    let (_, html) = viewer.page("/devices").await;
    assert!(!html.contains("Bulk action") && listed(&html).is_empty());

    // Events and the live feed of a user limited to a site: their sites' only.
    let events = |who: &Session, path: &'static str| {
        let (http, base, cookie) = (who.http.clone(), who.base.clone(), who.cookie.clone());
        async move {
            let r = http
                .get(format!("{base}{path}"))
                .header("cookie", cookie)
                .send()
                .await
                .expect("get");
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    for r in &reporters {
        r.event(study(3)).expect("event");
    }
    api.wait(15, "events of both sites", "/api/v1/events", |v| {
        let evs = v["events"].as_array().cloned().unwrap_or_default();
        ["a1", "b1"]
            .iter()
            .all(|d| evs.iter().any(|e| e["device"] == *d))
    })
    .await;
    let (s, v) = events(&op, "/api/v1/events").await;
    assert_eq!(s, 200, "{v}");
    let evs = v["events"].as_array().expect("events");
    assert!(
        !evs.is_empty() && evs.iter().all(|e| e["device"] != "b1"),
        "{v}"
    );
    let r = op
        .http
        .get(format!("{}/api/v1/live", op.base))
        .header("cookie", &op.cookie)
        .send()
        .await
        .expect("live");
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("event: snapshot") || !seen.contains("\n\n") {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("snapshot in time");
        seen.push_str(&String::from_utf8_lossy(
            &chunk.expect("chunk").expect("bytes"),
        ));
    }
    assert!(
        seen.contains("\"a1\"") && !seen.contains("\"b1\"") && !seen.contains("site-b"),
        "{seen}"
    );
    for r in reporters {
        r.shutdown(Duration::from_secs(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_get_rooms_and_a_claim_token_shown_once_enrolls_through_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = medgate_fleet::serve(fleet_config(dir.path()))
        .await
        .expect("serve");
    let api = Api::new(&running);
    create_user(&api, "it-admin", "admin", None).await;
    create_user(&api, "op-c", "operator", Some(vec!["site-c"])).await;
    let admin = Session::login(&api.base, "it-admin", "a long enough password").await;
    let op = Session::login(&api.base, "op-c", "a long enough password").await;

    let (s, html) = admin
        .post_text(
            "/sites",
            &[
                ("id", "site-c"),
                ("name", "Nordklinik"),
                ("time_zone", "Oslo"),
                ("rooms", ""),
            ],
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        html.contains("time zone &quot;Oslo&quot;: give an IANA name"),
        "{html}"
    );
    let r = admin
        .post(
            "/sites",
            &[
                ("id", "site-c"),
                ("name", "Nordklinik"),
                ("time_zone", "Europe/Oslo"),
                ("rooms", "CT 1\nMR 2\n"),
            ],
            true,
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/sites/site-c?saved=1");
    let (s, html) = admin.page("/sites").await;
    assert_eq!(s, 200);
    assert!(
        html.contains("Nordklinik") && html.contains("Europe/Oslo") && html.contains("CT 1, MR 2")
    );
    // An operator may not edit a site, but issues claims for its own.
    let r = op.post("/sites/site-c", &[("name", "x")], true).await;
    assert_eq!(r.status(), 403);
    let (s, html) = op.page("/sites/site-c").await;
    assert!(s == 200 && html.contains("Issue claim token") && !html.contains("Save site"));
    let (s, html) = op
        .post_text(
            "/sites/site-c/claims",
            &[("device", "ct-new"), ("room", "PET 9")],
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        html.contains("PET 9&quot; is not one of site site-c"),
        "{html}"
    );
    let (s, html) = op
        .post_text(
            "/sites/site-c/claims",
            &[("device", "ct-new"), ("room", "CT 1")],
        )
        .await;
    assert_eq!(s, 200);
    let token = html
        .split(r#"name="token" value=""#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the token in the download form")
        .to_owned();
    assert_eq!(token.len(), 64, "{html}");
    assert!(
        html.contains(&format!(r#"readonly value="{token}""#)),
        "shown once, on the page"
    );
    let (_, log) = api.get("/api/v1/audit").await;
    assert!(
        !log.to_string().contains(&token),
        "the token is never stored or audited"
    );
    // The provisioning file around it, as a download; a forged token gets none.
    let r = op
        .post(
            "/sites/site-c/provisioning",
            &[("token", &"0".repeat(64))],
            true,
        )
        .await;
    assert_eq!(r.status(), 403);
    let r = op
        .post("/sites/site-c/provisioning", &[("token", &token)], true)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"provisioning-ct-new.toml\""
    );
    let file: toml::Table = toml::from_str(&r.text().await.expect("text")).expect("TOML");
    assert_eq!(file["claim_token"].as_str(), Some(token.as_str()));
    assert_eq!(file["fleet_url"].as_str(), Some(api.base.as_str()));
    // It enrolls (the appliance's `enroll` sends exactly this token), into its room.
    let key = rcgen::KeyPair::generate().expect("key");
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let r = api
        .http
        .post(format!("{}/api/v1/enroll", api.base))
        .json(&json!({"token": token, "csr_pem": csr}))
        .send()
        .await
        .expect("enroll");
    assert_eq!(r.status(), 200);
    let (_, d) = api.get("/api/v1/devices/ct-new").await;
    assert_eq!(
        (&d["site"], &d["room"], &d["status"]),
        (&json!("site-c"), &json!("CT 1"), &json!("approved"))
    );
    let r = op
        .post("/sites/site-c/provisioning", &[("token", &token)], true)
        .await;
    assert_eq!(r.status(), 403, "a used token makes no file");
    // Another site's claims are not the operator's.
    let (s, _) = api
        .send(Method::PUT, "/api/v1/sites/site-d", json!({"name": "D"}))
        .await;
    assert_eq!(s, 200);
    let r = op
        .post("/sites/site-d/claims", &[("device", "x1")], true)
        .await;
    assert_eq!(r.status(), 403);
}
