//! The zero-setup fleet (embedded rumqttd broker, SQLite) with a device built on medgate-report:
//! enrollment, registry, inventory, events counted once, telemetry, commands, desired
//! configuration validated by the appliance's code, modality onboarding, live feed, metrics,
//! OpenAPI and authentication.

mod fleet_support;

use std::time::Duration;

use fleet_support::*;
use futures_util::StreamExt;
use medgate_fleet::openapi::api_routes;
use medgate_report::Reporter;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_setup_fleet_with_a_reporting_device() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("medgate_fleet=info,medgate_report=warn")
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fleet_config(dir.path());
    let running = medgate_fleet::serve(config).await.expect("serve");
    assert_eq!(running.app.ops.store.backend, "sqlite");
    let api = Api::new(&running);

    // Authentication: the API refuses requests without the admin token; openapi.json is public.
    let anon = reqwest::get(format!("{}/api/v1/devices", api.base))
        .await
        .expect("get");
    assert_eq!(anon.status().as_u16(), 401);
    let doc: Value = reqwest::get(format!("{}/api/v1/openapi.json", api.base))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    for (method, path) in api_routes() {
        assert!(
            doc["paths"][path][&method].is_object(),
            "{method} {path} documented"
        );
    }

    // Enrollment with a one-time claim token: a certificate for the device.
    let (cert, _key, ca) = enroll(&api, "site-a", "dev-1").await;
    assert!(cert.contains("BEGIN CERTIFICATE") && ca.contains("BEGIN CERTIFICATE"));
    let d = api
        .wait(5, "enrolled device", "/api/v1/devices/dev-1", |d| {
            d["status"] == "approved"
        })
        .await;
    assert_eq!(d["site"], "site-a");

    // The live feed starts with a full snapshot.
    let live = api
        .http
        .get(format!("{}/api/v1/live", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .expect("live");
    assert_eq!(live.status().as_u16(), 200);
    let mut live = live.bytes_stream();
    let first = String::from_utf8(live.next().await.expect("chunk").expect("bytes").to_vec())
        .expect("utf8");
    assert!(first.starts_with("event: snapshot"), "{first}");
    assert!(first.contains("\"dev-1\""), "{first}");

    // The device reports.
    let app = TestAppliance::new();
    let reporter = Reporter::start(
        reporter_config(running.broker.1, "site-a", "dev-1"),
        &dir.path().join("outbox"),
        app.clone(),
        app.clone(),
    )
    .expect("reporter");
    let d = api
        .wait(10, "online with inventory", "/api/v1/devices/dev-1", |d| {
            d["connection"] == "online" && d["inventory"]["serial"] == "SN-1"
        })
        .await;
    assert_eq!(d["inventory"]["peers"][0]["calling_ae"], "CT01");

    // Live feed: the device change arrives.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    while !seen.contains("event: device") {
        let chunk = tokio::time::timeout_at(deadline, live.next())
            .await
            .expect("live change in time");
        seen.push_str(&String::from_utf8_lossy(
            &chunk.expect("chunk").expect("bytes"),
        ));
    }

    // Events: each counted once.
    for i in 0..100 {
        reporter.event(study(i)).expect("event");
    }
    api.wait(
        20,
        "100 events",
        "/api/v1/devices/dev-1/events?limit=1",
        |v| v["total"] == 100,
    )
    .await;
    let d = api
        .wait(5, "counter", "/api/v1/devices/dev-1", |d| {
            d["events_received"] == 100
        })
        .await;
    assert_eq!(d["events_received"], 100);

    // Telemetry history.
    api.wait(10, "telemetry", "/api/v1/devices/dev-1/telemetry", |v| {
        v["samples"].as_array().is_some_and(|s| s.len() >= 2)
    })
    .await;

    // Commands: delivered and their result tracked.
    let (s, cmd) = api
        .send(
            Method::POST,
            "/api/v1/devices/dev-1/commands",
            json!({"action": {"type": "purge_quarantine", "older_than_secs": 3600}}),
        )
        .await;
    assert_eq!(s, 201, "{cmd}");
    let cmd_id_of_purge = cmd["id"].as_str().expect("id").to_owned();
    let path = format!("/api/v1/commands/{cmd_id_of_purge}");
    let done = api
        .wait(10, "command result", &path, |c| c["status"] == "succeeded")
        .await;
    assert_eq!(done["output"]["objects"], 4);
    // Retry now: one destination, all of them, or one the device does not have.
    for (destination, status, woken) in [
        (json!("archive"), "succeeded", json!(1)),
        (Value::Null, "succeeded", json!(2)),
        (json!("nowhere"), "rejected", Value::Null),
    ] {
        let (s, cmd) = api
            .send(
                Method::POST,
                "/api/v1/devices/dev-1/commands",
                json!({"action": {"type": "retry_now", "destination": destination}}),
            )
            .await;
        assert_eq!(s, 201, "{cmd}");
        let path = format!("/api/v1/commands/{}", cmd["id"].as_str().expect("id"));
        let done = api
            .wait(10, "retry_now result", &path, |c| {
                c["status"] == "succeeded" || c["status"] == "rejected"
            })
            .await;
        assert_eq!(done["status"], status, "{done}");
        assert_eq!(done["output"]["destinations"], woken, "{done}");
        if status == "rejected" {
            assert_eq!(done["code"], "unknown_destination", "{done}");
        }
    }
    // The diagnostics bundle: its two chunks arrive before the result; the fleet checks size and
    // digest and serves the same bytes as an attachment.
    let (s, cmd) = api
        .send(
            Method::POST,
            "/api/v1/devices/dev-1/commands",
            json!({"action": {"type": "collect_diagnostics"}}),
        )
        .await;
    assert_eq!(s, 201, "{cmd}");
    let id = cmd["id"].as_str().expect("id").to_owned();
    let done = api
        .wait(10, "bundle", &format!("/api/v1/commands/{id}"), |c| {
            c["status"] == "succeeded"
        })
        .await;
    let want = diagnostics_bundle();
    assert_eq!(done["file"]["state"], "complete", "{done}");
    assert_eq!(done["file"]["bytes"], want.len(), "{done}");
    assert_eq!(done["file"]["sha256"], sha256_hex(&want), "{done}");
    let r = api.download(&format!("/api/v1/commands/{id}/file")).await;
    assert_eq!(r.status(), 200);
    let header = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        header("content-disposition"),
        "attachment; filename=\"diag-test.json\""
    );
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("cache-control"), "no-store");
    assert_eq!(header("x-content-sha256"), sha256_hex(&want));
    assert_eq!(r.bytes().await.expect("body").to_vec(), want);
    // A command that produced no file (the purge above), and no command at all: 404.
    let purge = cmd_id_of_purge;
    let (s, v) = api.get(&format!("/api/v1/commands/{purge}/file")).await;
    assert_eq!(s, 404, "{v}");
    assert!(v.to_string().contains("has no file"), "{v}");
    let (s, _) = api.get("/api/v1/commands/no-such-command/file").await;
    assert_eq!(s, 404);
    let (s, v) = api
        .send(
            Method::POST,
            "/api/v1/devices/dev-1/commands",
            json!({"action": {"type": "retry_now", "destination": "not a name"}}),
        )
        .await;
    assert_eq!(s, 422, "a destination name is a checked token: {v}");
    let (s, _) = api
        .send(
            Method::POST,
            "/api/v1/devices/dev-1/commands",
            json!({"action": {"type": "format_disk"}}),
        )
        .await;
    assert_eq!(s, 422, "unknown command type refused");

    // Desired configuration: validated by the appliance's code.
    let mut bad = example_appliance_config();
    bad["listener"]["ae_title"] = json!("THIS AE TITLE IS FAR TOO LONG");
    let (s, v) = api
        .send(
            Method::PUT,
            "/api/v1/devices/dev-1/config",
            json!({"config": bad}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["problems"].to_string().contains("listener.ae_title"),
        "{v}"
    );
    let (s, v) = api
        .send(
            Method::PUT,
            "/api/v1/devices/dev-1/config",
            json!({"config": example_appliance_config()}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // The whole file as JSON: its box-local keys are the box's own, dropped and listed.
    assert_eq!(
        v["ignored_box_local_keys"],
        json!(["appliance.data_dir", "hardware", "status"]),
        "{v}"
    );
    let c = api
        .wait(10, "config applied", "/api/v1/devices/dev-1/config", |c| {
            c["drift"] == "in_sync"
        })
        .await;
    assert_eq!(c["reported"]["running_version"], 1);
    assert!(
        c["desired"]["config"]["appliance"]
            .get("data_dir")
            .is_none()
            && c["desired"]["config"].get("status").is_none(),
        "the document sent carries no box-local key: {c}"
    );
    assert_eq!(*app.applied.lock().expect("lock"), vec![1]);

    // Modality onboarding: the seen AE is approved into the allow-list (a new desired version).
    let peers = api
        .wait(5, "peers", "/api/v1/devices/dev-1/peers", |v| {
            v["peers"][0]["calling_ae"] == "CT01"
        })
        .await;
    assert_eq!(peers["peers"][0]["approved"], false);
    let (s, v) = api
        .send(
            Method::POST,
            "/api/v1/devices/dev-1/peers/approve",
            json!({"calling_ae": "CT01"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let c = api
        .wait(
            10,
            "allow-list applied",
            "/api/v1/devices/dev-1/config",
            |c| c["drift"] == "in_sync" && c["reported"]["running_version"] == 2,
        )
        .await;
    assert_eq!(
        c["desired"]["config"]["listener"]["allowed_calling_ae_titles"],
        json!(["CT01"])
    );
    let (s, _) = api
        .send(
            Method::POST,
            "/api/v1/devices/dev-1/peers/approve",
            json!({"calling_ae": "NEVERSEEN"}),
        )
        .await;
    assert_eq!(s, 404);

    // Tags and site listing.
    let (s, _) = api
        .send(
            Method::PATCH,
            "/api/v1/devices/dev-1",
            json!({"room": "CT 1", "tags": ["ct", "wing-b"]}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, sites) = api.get("/api/v1/sites").await;
    assert_eq!(sites["sites"][0]["id"], "site-a");
    assert_eq!(sites["sites"][0]["online"], 1);

    // Metrics.
    let text = reqwest::get(format!("{}/metrics", api.base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let value = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
    };
    assert_eq!(
        value("medgate_fleet_events_new_total "),
        Some(101),
        "100 studies and the purge audit"
    );
    assert!(text.contains("medgate_fleet_devices_online 1"), "{text}");

    // Clean shutdown: offline from the retained state.
    reporter.shutdown(Duration::from_secs(5)).await;
    api.wait(10, "offline", "/api/v1/devices/dev-1", |d| {
        d["connection"] == "offline"
    })
    .await;

    // Revoked devices' messages are refused.
    let (s, _) = api
        .send(Method::POST, "/api/v1/devices/dev-1/revoke", json!({}))
        .await;
    assert_eq!(s, 200);
    let reporter = Reporter::start(
        reporter_config(running.broker.1, "site-a", "dev-1"),
        &dir.path().join("outbox"),
        app.clone(),
        app,
    )
    .expect("reporter");
    reporter.event(study(1000)).expect("event");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, v) = api.get("/api/v1/devices/dev-1/events?limit=1").await;
    assert_eq!(
        v["total"], 101,
        "the revoked device's event was refused (100 studies + 1 purge audit)"
    );
    reporter.shutdown(Duration::from_secs(2)).await;
}
