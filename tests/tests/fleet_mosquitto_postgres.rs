//! Production shape: Mosquitto configured by `medgate-fleet broker-config` (mutual TLS, CN as
//! username, per-device ACLs), PostgreSQL, two fleet replicas, devices enrolled with claim tokens.
//! - a device can neither read nor write another device's topics;
//! - broker down, then back: no event lost, the fleet's count equals the appliance's, each event
//!   stored once although both replicas receive it.
//!
//! The outage lasts MEDGATE_TEST_OUTAGE_SECS seconds (default 10; the minute is 60).

mod fleet_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fleet_support::*;
use medgate_contract::*;
use medgate_fleet::config::{BrokerMode, BrokerTls, FleetConfig};
use medgate_report::{Reporter, ReporterConfig, TlsFiles};
use rumqttc::{
    AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS, SubscribeReasonCode, Transport,
};
use serde_json::json;

fn write_device_files(
    dir: &Path,
    device: &str,
    cert: &str,
    key: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (c, k) = (
        dir.join(format!("{device}.crt")),
        dir.join(format!("{device}.key")),
    );
    std::fs::write(&c, cert).expect("write");
    std::fs::write(&k, key).expect("write");
    (c, k)
}

fn tls_reporter(
    port: u16,
    device: &str,
    ca: &Path,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
) -> ReporterConfig {
    let mut c = reporter_config(port, "site-a", device);
    c.broker = format!("localhost:{port}");
    c.tls = Some(TlsFiles {
        ca: ca.to_owned(),
        certificate: Some(cert),
        private_key: Some(key),
    });
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_tls_acl_postgres_replicas_and_outage() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("medgate_fleet=info,medgate_report=warn")
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = Postgres::start(dir.path());

    // broker-config, through the binary.
    let mut config = fleet_config(dir.path());
    let port = free_port();
    let fleet_toml = dir.path().join("fleet.toml");
    let crl = dir.path().join("fleet-writes/crl.pem");
    std::fs::write(
        &fleet_toml,
        format!(
            "data_dir = \"{}\"\n[broker]\nmode = \"external\"\naddress = \"localhost:{port}\"\ncrl_file = \"{}\"\n",
            config.data_dir.display(),
            crl.display()
        ),
    )
    .expect("write");
    let out = dir.path().join("broker");
    let status =
        Command::new(medgate_testkit::workspace_bin("medgate-fleet").expect("built by ci/test"))
            .args(["broker-config", "--config"])
            .arg(&fleet_toml)
            .arg("--out")
            .arg(&out)
            .args([
                "--hostname",
                "localhost",
                "--hostname",
                "127.0.0.1",
                "--bind",
                "127.0.0.1",
                "--port",
            ])
            .arg(port.to_string())
            .status()
            .expect("medgate-fleet broker-config");
    assert!(status.success());
    let conf = out.join("mosquitto.conf");
    let text = std::fs::read_to_string(&conf).expect("conf");
    assert!(
        text.contains("use_identity_as_username true") && text.contains("require_certificate true")
    );
    // Tests run as root: keep mosquitto from switching to its own user (it could not read the tempdir).
    std::fs::write(
        &conf,
        format!("{text}user root\nlog_dest stderr\nlog_type error\n"),
    )
    .expect("write");
    let mut broker = Mosquitto::start_with_conf(&conf, port, &dir.path().join("mosquitto.log"))
        .expect("mosquitto");

    // Two fleet replicas on one PostgreSQL and one broker.
    config.broker.mode = BrokerMode::External;
    config.broker.address = Some(format!("localhost:{port}"));
    config.broker.tls = Some(BrokerTls {
        ca: out.join("ca.crt"),
        certificate: out.join("fleet.crt"),
        private_key: out.join("fleet.key"),
    });
    config.broker.crl_file = Some(crl.clone());
    assert!(
        text.contains(&format!("crlfile {}\n", crl.display())),
        "{text}"
    );
    config.database.url = Some(pg.url());
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    let running = medgate_fleet::serve(config.clone()).await.expect("fleet 1");
    assert_eq!(running.app.ops.store.backend, "postgres");
    let mut config2: FleetConfig = config.clone();
    config2.broker.client_id = "medgate-fleet-2".into();
    let running2 = medgate_fleet::serve(config2).await.expect("fleet 2");
    let api = Api::new(&running);
    let api2 = Api::new(&running2);
    login_across_replicas(&api, &api2).await;

    // Two devices enrolled with claim tokens.
    let ca = out.join("ca.crt");
    let (a_cert, a_key, _) = enroll(&api, "site-a", "dev-a").await;
    let (a_crt, a_key) = write_device_files(dir.path(), "dev-a", &a_cert, &a_key);
    let (b_cert, b_key, _) = enroll(&api2, "site-a", "dev-b").await;
    let (b_crt, b_key) = write_device_files(dir.path(), "dev-b", &b_cert, &b_key);

    let app_a = TestAppliance::new();
    let app_b = TestAppliance::new();
    let rep_a = Reporter::start(
        tls_reporter(port, "dev-a", &ca, a_crt.clone(), a_key.clone()),
        &dir.path().join("ob-a"),
        app_a.clone(),
        app_a.clone(),
    )
    .expect("reporter a");
    let rep_b = Reporter::start(
        tls_reporter(port, "dev-b", &ca, b_crt, b_key),
        &dir.path().join("ob-b"),
        app_b.clone(),
        app_b.clone(),
    )
    .expect("reporter b");
    for (api, dev) in [(&api, "dev-a"), (&api2, "dev-b")] {
        api.wait(20, "online", &format!("/api/v1/devices/{dev}"), |d| {
            d["connection"] == "online" && d["inventory"].is_object()
        })
        .await;
    }

    // ACL: dev-a's identity cannot subscribe to dev-b's commands nor publish dev-b's events.
    let mut opts = MqttOptions::new("dev-a-intruder", "localhost", port);
    opts.set_keep_alive(Duration::from_secs(5));
    let tls = tls_reporter(port, "dev-a", &ca, a_crt, a_key)
        .rustls_config()
        .expect("tls")
        .expect("some");
    opts.set_transport(Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls),
    ));
    let (intruder, mut el) = AsyncClient::new(opts, 10);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = el.poll().await {
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    let b = DeviceTopics::new(
        SiteId::new("site-a").expect("id"),
        DeviceId::new("dev-b").expect("id"),
    );
    intruder
        .subscribe(b.topic(Kind::Cmd), QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    intruder
        .subscribe("medgate/v1/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let forged = Event {
        schema: Schema::default(),
        id: EventId::new(1, 1),
        at_ms: now_ms(),
        event: study(999),
    };
    intruder
        .publish(
            b.topic(Kind::Event),
            QoS::AtLeastOnce,
            false,
            encode(&forged).expect("encode"),
        )
        .await
        .expect("publish");
    intruder
        .publish(b.topic(Kind::Birth), QoS::AtLeastOnce, true, b"{}".to_vec())
        .await
        .expect("publish");
    // A command for dev-b, and dev-b's own traffic, must not reach the intruder.
    let (s, _) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/devices/dev-b/commands",
            json!({"action": {"type": "restart"}}),
        )
        .await;
    assert_eq!(s, 201);
    rep_b.event(study(1)).expect("event");
    let mut subacks = Vec::new();
    let mut leaked = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        match ev {
            MqttEvent::Incoming(Packet::SubAck(s)) => subacks.extend(s.return_codes),
            MqttEvent::Incoming(Packet::Publish(p)) => leaked.push(p.topic),
            _ => {}
        }
    }
    // Mosquitto 2.0 acknowledges a 3.1.1 client's subscription (it may answer 0x80 in newer
    // versions) but delivers nothing its ACL forbids: the delivery is what is checked.
    assert_eq!(subacks.len(), 2, "{subacks:?}");
    assert!(subacks.iter().all(|c| matches!(
        c,
        SubscribeReasonCode::Failure | SubscribeReasonCode::Success(_)
    )));
    assert!(
        leaked.is_empty(),
        "dev-a read other devices' topics: {leaked:?}"
    );
    api.wait(
        10,
        "dev-b's own event",
        "/api/v1/devices/dev-b/events?limit=1",
        |v| v["total"] == 1,
    )
    .await;
    let (_, v) = api.get("/api/v1/devices/dev-b/events?limit=10").await;
    assert!(
        !v.to_string().contains("\"objects\":999"),
        "the forged event was not recorded: {v}"
    );

    // A diagnostics bundle through Mosquitto into PostgreSQL, its chunks recorded by both
    // replicas at once: assembled once, served by either.
    let (s, cmd) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/devices/dev-a/commands",
            json!({"action": {"type": "collect_diagnostics"}}),
        )
        .await;
    assert_eq!(s, 201, "{cmd}");
    let id = cmd["id"].as_str().expect("id").to_owned();
    let done = api2
        .wait(20, "bundle", &format!("/api/v1/commands/{id}"), |c| {
            c["status"] == "succeeded" && c["file"]["state"] == "complete"
        })
        .await;
    assert_eq!(done["file"]["sha256"], sha256_hex(&diagnostics_bundle()));
    let r = api2.download(&format!("/api/v1/commands/{id}/file")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.bytes().await.expect("body").to_vec(),
        diagnostics_bundle()
    );

    // Broker outage: the appliance keeps producing events; nothing is lost.
    for i in 0..50 {
        rep_a.event(study(i)).expect("event");
    }
    api.wait(
        20,
        "first 50 events",
        "/api/v1/devices/dev-a/events?limit=1",
        |v| v["total"] == 50,
    )
    .await;
    broker.stop();
    let outage: u64 = std::env::var("MEDGATE_TEST_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut produced = 50u64;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(outage) {
        for _ in 0..10 {
            rep_a
                .event(study(produced))
                .expect("event while the broker is down");
            produced += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        rep_a.status().outbox_len as u64 >= produced - 50,
        "{:?}",
        rep_a.status()
    );
    broker.restart().expect("mosquitto restart");
    let total = i64::try_from(produced).expect("a test count");
    api.wait(
        60,
        "every event after the outage",
        "/api/v1/devices/dev-a/events?limit=1",
        |v| v["total"] == total,
    )
    .await;
    // Each event once, although both replicas received all of them.
    let d = api2
        .wait(10, "counter", "/api/v1/devices/dev-a", |d| {
            d["events_received"] == total
        })
        .await;
    assert_eq!(
        d["events_received"], total,
        "the fleet's count equals the appliance's"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, d) = api.get("/api/v1/devices/dev-a").await;
    assert_eq!(d["events_received"], total, "no double count");
    // Both replicas process every event (no shared subscription): one stores it, the other finds
    // it already there.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let dup = running.app.metrics.events_duplicate.get()
            + running2.app.metrics.events_duplicate.get();
        if dup >= produced {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replicas both processed the events ({dup} duplicates ignored)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, d) = api2.get("/api/v1/devices/dev-a").await;
    assert_eq!(d["events_received"], total, "still counted once");
    // The device's outbox empties only with the fleet's receipts (published by both replicas).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while rep_a.status().outbox_len > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "events still waiting for a receipt: {:?}",
            rep_a.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let receipts =
        running.app.metrics.receipts_sent.get() + running2.app.metrics.receipts_sent.get();
    assert!(receipts > 0, "receipts published");

    // Telemetry downsampling on PostgreSQL: every raw sample folds into buckets.
    let store = &running.app.ops.store;
    let raw_before = medgate_fleet::store::now_db() + 1;
    let (folded, _) = store
        .downsample(raw_before, 60, 0)
        .await
        .expect("downsample on PostgreSQL");
    assert!(folded > 0, "raw samples folded");
    let rows = store
        .telemetry("dev-a", 0, raw_before - 1, 10_000)
        .await
        .expect("read");
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r.bucket_secs == 60),
        "{rows:?}"
    );

    // Revocation reaches the broker: dev-b is revoked, the fleet rewrites the broker's
    // revocation list, and after the broker's restart dev-b's certificate is refused while dev-a
    // connects again.
    let before = std::fs::read(&crl).expect("crl");
    let (s, _) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/devices/dev-b/revoke",
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    assert_ne!(
        std::fs::read(&crl).expect("crl"),
        before,
        "the list was rewritten"
    );
    let (a_connects, b_connects) = (rep_a.status().connects, rep_b.status().connects);
    broker.restart().expect("mosquitto restart");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while rep_a.status().connects == a_connects || !rep_a.status().connected {
        assert!(
            std::time::Instant::now() < deadline,
            "dev-a did not reconnect: {:?}",
            rep_a.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let b = rep_b.status();
    assert!(
        !b.connected && b.connects == b_connects,
        "the revoked dev-b connected again: {b:?}"
    );

    rep_a.shutdown(Duration::from_secs(5)).await;
    rep_b.shutdown(Duration::from_secs(5)).await;
}

/// Behind a load balancer without sticky sessions: the login form served by one replica is
/// accepted by the other (the key signing its CSRF token is shared through the database), the
/// session it opens is valid on both, and failed logins on one count on the other.
async fn login_across_replicas(api: &Api, api2: &Api) {
    let (s, v) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/users",
            json!({"name": "it-ops", "role": "operator", "password": "a long enough password"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = http
        .get(format!("{}/login", api.base))
        .send()
        .await
        .expect("login page");
    let cookie = set_cookie(&r);
    let html = r.text().await.expect("text");
    let token = login_form_token(&html);
    let r = http
        .post(format!("{}/login", api2.base))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "user=it-ops&password=a+long+enough+password&csrf_token={token}"
        ))
        .send()
        .await
        .expect("login on the other replica");
    assert_eq!(r.status(), 303, "the other replica accepts the form");
    let session = set_cookie(&r);
    for base in [&api.base, &api2.base] {
        let r = http
            .get(format!("{base}/devices"))
            .header("cookie", &session)
            .send()
            .await
            .expect("devices page");
        assert_eq!(r.status(), 200, "the session is valid on {base}");
    }
    // The throttle counts the failures of both replicas: five on one lock the user on the other.
    let login = |base: &str, password: &str| {
        http.post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"user": "it-ops", "password": password}))
            .send()
    };
    for _ in 0..5 {
        let r = login(&api.base, "wrong password").await.expect("login");
        assert_eq!(r.status(), 401);
    }
    let r = login(&api2.base, "a long enough password")
        .await
        .expect("login");
    assert_eq!(r.status(), 429, "locked on the other replica too");
}
