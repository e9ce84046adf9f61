//! The appliance and the fleet manager together, both real binaries: enrollment with a claim
//! token, reporting over the embedded MQTT broker (every message captured by `mosquitto_sub`),
//! the fleet's counts against the appliance's, desired configuration applied and rolled back,
//! commands, modality onboarding (modalities, refusal reasons, inventory) — and not one byte of patient data on the wire, in the fleet's
//! API or in the diagnostics bundle.

use anyhow::{Context, Result};
use medgate_e2e::privacy::{assert_clean, forbidden};
use medgate_e2e::{Appliance, Fleet, MqttCapture, Storescp, echoscu, free_port};
use medgate_sim::studies::{GeneratedFile, Patient, Study};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const SITE: &str = "st-olav";
const DEVICE: &str = "ct-room-1";

fn device(path: &str) -> String {
    format!("/api/v1/devices/{DEVICE}{path}")
}

/// Enrolls with the real CLI; returns the settings file.
async fn enroll(fleet: &Fleet, dir: &Path) -> Result<std::path::PathBuf> {
    let provisioning = dir.join("provisioning.toml");
    fleet.write_provisioning(&provisioning, &fleet.claim(SITE, DEVICE).await?)?;
    let identity = dir.join("identity");
    let run = || medgate_e2e::fleet::enroll_cli(&provisioning, &identity);
    let out = run()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "enroll: {text}");
    assert!(
        text.contains("enrolled as device ct-room-1 of site st-olav"),
        "{text}"
    );
    // Idempotent: a second run (a first boot retried) changes nothing.
    let out = run()?;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("already enrolled"));
    // The key is the device's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(identity.join("device.key"))?
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "device key mode {mode:o}");
    assert!(std::fs::read_to_string(identity.join("device.crt"))?.contains("BEGIN CERTIFICATE"));
    // A used claim token is refused, with a message that says what to do — once.
    std::fs::remove_dir_all(&identity)?;
    let out = run()?;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already used"), "{stderr}");
    assert_eq!(
        stderr
            .matches("ask hospital IT for a new claim token")
            .count(),
        1,
        "{stderr}"
    );
    assert_eq!(stderr.matches("ask hospital IT").count(), 1, "{stderr}");
    // Enroll again with a fresh token.
    fleet.write_provisioning(&provisioning, &fleet.claim(SITE, DEVICE).await?)?;
    let out = run()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(identity.join("fleet.toml"))
}

fn studies(dir: &Path) -> Result<(Vec<Patient>, Vec<String>, Vec<GeneratedFile>)> {
    let mut patients = Vec::new();
    let mut accessions = Vec::new();
    let mut files = Vec::new();
    for seed in [4711u64, 4712] {
        let p = Patient::synthetic(seed);
        let acc = format!("ACCX{seed}");
        let mut study = Study::new(p.clone(), acc.clone(), seed);
        files.extend(study.one_of_each(&dir.join(seed.to_string()))?);
        patients.push(p);
        accessions.push(acc);
    }
    Ok((patients, accessions, files))
}

/// The appliance's whole configuration file as the JSON object the fleet sends.
fn config_json(appliance: &Appliance) -> Result<Value> {
    let text = std::fs::read_to_string(&appliance.config)?;
    let v: toml::Value = toml::from_str(&text)?;
    Ok(serde_json::to_value(v)?)
}

/// Waits until the fleet's telemetry and events count what the appliance received and
/// forwarded; returns the events.
async fn same_counts(fleet: &Fleet, appliance: &Appliance, timeout: Duration) -> Result<Value> {
    let n = same_telemetry(fleet, appliance, timeout).await?;
    fleet
        .wait("study events", &device("/events?limit=500"), timeout, |v| {
            event_sums(v) == (n, n)
        })
        .await
}

/// Objects in the fleet's `study_received` and `study_forwarded` events.
fn event_sums(events: &Value) -> (u64, u64) {
    let evs = events["events"].as_array().cloned().unwrap_or_default();
    let sum = |kind: &str, field: &str| -> u64 {
        evs.iter()
            .filter(|e| e["event"]["type"] == kind)
            .map(|e| e["event"][field]["objects"].as_u64().unwrap_or(0))
            .sum()
    };
    (
        sum("study_received", "received"),
        sum("study_forwarded", "forwarded"),
    )
}

/// A storescp archive and an appliance forwarding to it, reporting with the enrolled `settings`.
async fn archive_and_appliance(
    dir: &Path,
    settings: &Path,
    extra: &str,
) -> Result<(Storescp, Appliance)> {
    let archive_port = free_port();
    let archive = Storescp::start(&dir.join("archive"), archive_port, "ARCHIVE").await?;
    let appliance = Appliance::start_configured(
        &dir.join("appliance"),
        &format!("fleet_enrollment = \"{}\"\n", settings.display()),
        "",
        &format!(
            "[[destination]]\nname = \"archive\"\nkind = \"dimse\"\naddress = \"127.0.0.1:{archive_port}\"\ncalled_ae_title = \"ARCHIVE\"\n{extra}"
        ),
    )
    .await?;
    Ok((archive, appliance))
}

/// Waits until the fleet's latest telemetry counts what the appliance received and forwarded;
/// returns the object count.
async fn same_telemetry(fleet: &Fleet, appliance: &Appliance, timeout: Duration) -> Result<u64> {
    let s = appliance.status().await?;
    let n = s["objects_received"].as_u64().context("objects")?;
    let bytes = s["bytes_received"].as_u64().context("bytes")?;
    fleet
        .wait("telemetry counts", &device("/telemetry"), timeout, |v| {
            v["samples"]
                .as_array()
                .and_then(|s| s.last())
                .is_some_and(|s| {
                    s["data"]["received"]["objects"] == n
                        && s["data"]["received"]["bytes"] == bytes
                        && s["data"]["forwarded"]["objects"] == n
                })
        })
        .await?;
    Ok(n)
}

/// The entry of `calling_ae` in a list of peers (the fleet's or the appliance's).
fn peer<'a>(peers: &'a Value, calling_ae: &str) -> Option<&'a Value> {
    peers
        .as_array()?
        .iter()
        .find(|p| p["calling_ae"] == calling_ae)
}

async fn command(fleet: &Fleet, action: Value) -> Result<Value> {
    let (s, c) = fleet
        .send(
            Method::POST,
            &device("/commands"),
            Some(json!({ "action": action })),
        )
        .await?;
    assert_eq!(s, 201, "{c}");
    let path = format!("/api/v1/commands/{}", c["id"].as_str().context("id")?);
    fleet
        .wait("command result", &path, Duration::from_secs(30), |c| {
            c["status"] == "succeeded" || c["status"] == "failed" || c["status"] == "rejected"
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appliance_enrolls_reports_obeys_and_never_leaks_patient_data() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let t = tempfile::Builder::new()
        .prefix("medgate-e2e-fleet-")
        .tempdir()?;
    let fleet = Fleet::start(&t.path().join("fleet")).await?;
    let capture = MqttCapture::start(fleet.mqtt_port, t.path()).await?;

    // Enrollment, then the appliance runs with the settings it wrote.
    let settings = enroll(&fleet, t.path()).await?;
    // Quality checks on: the CT scanner is expected to send CT only.
    let qc = "[qc]\n[[qc.station]]\nae_title = \"CTSCANNER\"\nmodalities = [\"CT\"]\n";
    let (mut archive, mut appliance) = archive_and_appliance(t.path(), &settings, qc).await?;
    let d = fleet
        .wait(
            "online with inventory",
            &device(""),
            Duration::from_secs(30),
            |d| d["connection"] == "online" && d["inventory"]["ae_title"] == "MEDGATE",
        )
        .await?;
    assert_eq!(d["site"], SITE);
    assert_eq!(d["status"], "approved");
    // The fleet-link gauges the shipped alerting rules use (the rest: tests/tests/monitoring.rs).
    let exported = medgate_e2e::monitoring::exported_families(&appliance.metrics().await?);
    for m in medgate_e2e::monitoring::FLEET_LINK_METRICS {
        assert!(
            exported.contains(m),
            "{m} missing from an enrolled appliance's /metrics"
        );
    }

    // Studies with known patients pass through.
    let (patients, accessions, files) = studies(&t.path().join("studies"))?;
    let forbidden = forbidden(&patients, &accessions, &files);
    // The check below is not vacuous: the objects carry exactly these values.
    let first = String::from_utf8_lossy(&std::fs::read(&files[0].path)?).to_string();
    for value in [&patients[0].name, &patients[0].id, &accessions[0]] {
        assert!(first.contains(value.as_str()), "{value} is in the object");
    }
    let paths: Vec<_> = files.iter().map(|f| f.path.clone()).collect();
    let report = appliance
        .storescu()
        .calling_ae("CTSCANNER")
        .send(&paths)
        .await?;
    report.expect_all_success(files.len())?;
    appliance.wait_drained(Duration::from_secs(60)).await?;
    archive
        .wait_for_files(files.len(), Duration::from_secs(30))
        .await?;

    // The fleet's counts equal the appliance's.
    let events = same_counts(&fleet, &appliance, Duration::from_secs(30)).await?;
    assert!(
        events.to_string().contains("\"modality\":\"CT\""),
        "{events}"
    );
    // The quality checks' counts reach the fleet (the flagged objects stay listed locally).
    let local = appliance
        .wait_status("QC done", Duration::from_secs(10), |s| {
            s["workflow"]["qc"]["objects_checked"] == files.len() as u64
        })
        .await?;
    let unexpected = local["workflow"]["qc"]["flags"]["unexpected_modality"].clone();
    assert!(unexpected.as_u64().is_some_and(|n| n > 0), "{local}");
    fleet
        .wait(
            "QC counts",
            &device("/telemetry"),
            Duration::from_secs(10),
            |v| {
                v["samples"]
                    .as_array()
                    .and_then(|s| s.last())
                    .is_some_and(|s| s["data"]["qc"]["unexpected_modality"] == unexpected)
            },
        )
        .await?;

    // Onboarding: the modality that knocked is listed, with the modality codes of the objects
    // it stored (the appliance's own record of them); approving it puts it in the allow-list.
    let local = appliance.get("/api/peers").await?;
    let local_modalities = peer(&local, "CTSCANNER")
        .map(|p| p["modalities"].clone())
        .context("the appliance lists CTSCANNER")?;
    let codes = local_modalities.as_array().context("modalities")?;
    assert!(
        codes.contains(&json!("CT")) && codes.len() > 1,
        "CT and the other modalities it sent: {local}"
    );
    let peers = fleet
        .wait(
            "peer seen with its modalities",
            &device("/peers"),
            Duration::from_secs(10),
            |v| peer(&v["peers"], "CTSCANNER").is_some_and(|p| p["modalities"] == local_modalities),
        )
        .await?;
    let ct = peer(&peers["peers"], "CTSCANNER").context("CTSCANNER")?;
    assert_eq!(
        (ct["accepted"].clone(), ct["refusal"].clone()),
        (json!(true), Value::Null),
        "{ct}"
    );
    // The inventory lists it too, before any configuration change re-sent the birth.
    fleet
        .wait(
            "inventory with the peer",
            &device(""),
            Duration::from_secs(10),
            |d| {
                peer(&d["inventory"]["peers"], "CTSCANNER")
                    .is_some_and(|p| p["modalities"] == local_modalities)
            },
        )
        .await?;
    // Configuration v1 from the fleet carries coercion rules (configured centrally, audited).
    let mut cfg = config_json(&appliance)?;
    cfg["rules"] = json!({
        "version": "fleet-v1",
        "coerce": [{"name": "issuer st-olav", "set": {"IssuerOfPatientID": "ST-OLAV"}}],
    });
    let (s, v) = fleet
        .send(
            Method::PUT,
            &device("/config"),
            Some(json!({ "config": cfg.clone() })),
        )
        .await?;
    assert_eq!(s, 200, "{v}");
    fleet
        .wait(
            "config v1 applied",
            &device("/config"),
            Duration::from_secs(60),
            |c| c["drift"] == "in_sync",
        )
        .await?;
    let status = appliance.status().await?;
    assert_eq!(status["rules"]["version"], "fleet-v1", "{status}");
    // The local status says the fleet's version overrides the local file.
    assert_eq!(
        status["config_source"],
        json!({"from": "fleet", "version": 1}),
        "{status}"
    );
    let out = appliance.cli(&["status"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("config:      the fleet's version 1, overriding the local file"),
        "{text}"
    );
    let audit = std::fs::read_to_string(appliance.dir.join("data/rules-audit.jsonl"))?;
    let last: Value = serde_json::from_str(audit.lines().last().context("audit entry")?)?;
    assert_eq!(last["event"], "fleet configuration v1", "{audit}");
    let (s, v) = fleet
        .send(
            Method::POST,
            &device("/peers/approve"),
            Some(json!({"calling_ae": "CTSCANNER"})),
        )
        .await?;
    assert_eq!(s, 200, "{v}");
    fleet
        .wait(
            "allow-list applied",
            &device("/config"),
            Duration::from_secs(60),
            |c| c["drift"] == "in_sync" && c["reported"]["running_version"] == 2,
        )
        .await?;
    let ok = echoscu(appliance.port, "MEDGATE", "CTSCANNER").await?;
    assert!(ok.success, "approved modality echoes: {}", ok.log);
    let refused = echoscu(appliance.port, "MEDGATE", "STRANGER").await?;
    assert!(!refused.success, "an AE not approved is refused now");
    // The fleet shows it refused, and why — in the peer list and in the inventory.
    let refused_with_reason = |p: Option<&Value>| {
        p.is_some_and(|p| p["accepted"] == false && p["refusal"] == "calling_ae_not_allowed")
    };
    fleet
        .wait(
            "refused peer with its reason",
            &device("/peers"),
            Duration::from_secs(10),
            |v| refused_with_reason(peer(&v["peers"], "STRANGER")),
        )
        .await?;
    fleet
        .wait(
            "refused peer in the inventory",
            &device(""),
            Duration::from_secs(10),
            |d| refused_with_reason(peer(&d["inventory"]["peers"], "STRANGER")),
        )
        .await?;

    // A configuration that cannot come up (its port is taken) is rolled back by itself.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0")?;
    cfg["listener"]["bind"] = json!(squatter.local_addr()?.to_string());
    cfg["listener"]["allowed_calling_ae_titles"] = json!(["CTSCANNER"]);
    let (s, v) = fleet
        .send(
            Method::PUT,
            &device("/config"),
            Some(json!({ "config": cfg.clone() })),
        )
        .await?;
    assert_eq!(s, 200, "{v}");
    let c = fleet
        .wait(
            "rolled back",
            &device("/config"),
            Duration::from_secs(90),
            |c| c["reported"]["desired_version"] == 3,
        )
        .await?;
    assert_eq!(c["reported"]["status"], "rolled_back", "{c}");
    assert_eq!(c["reported"]["problems"][0]["code"], "listener_down", "{c}");
    assert_eq!(c["reported"]["running_version"], 2, "{c}");
    assert_eq!(c["drift"], "failed");
    let status = appliance.status().await?;
    assert_eq!(
        status["config_source"],
        json!({"from": "fleet", "version": 2}),
        "the rollback runs the last good version again: {status}"
    );
    let ok = echoscu(appliance.port, "MEDGATE", "CTSCANNER").await?;
    assert!(
        ok.success,
        "the previous configuration serves again: {}",
        ok.log
    );
    drop(squatter);

    // Commands: diagnostics bundle, quarantine retry (nothing to retry), restart.
    let c = command(&fleet, json!({"type": "collect_diagnostics"})).await?;
    assert_eq!(c["status"], "succeeded", "{c}");
    let file = c["output"]["file"].as_str().context("bundle name")?;
    let bundle = std::fs::read_to_string(appliance.dir.join("data/diagnostics").join(file))?;
    assert!(bundle.contains("\"logs\""));
    assert!(
        bundle.contains("association accepted"),
        "the bundle has the log lines"
    );
    assert_eq!(c["output"]["bytes"], bundle.len() as u64);
    assert_clean("the diagnostics bundle", &bundle, &forbidden);
    // It reached the fleet: downloaded there, the same bytes, the digest the appliance announced,
    // and the download is audited.
    let id = c["id"].as_str().context("command id")?;
    let c = fleet
        .wait(
            "bundle received",
            &format!("/api/v1/commands/{id}"),
            Duration::from_secs(10),
            |c| c["file"]["state"] == "complete",
        )
        .await?;
    let (s, disposition, bytes) = fleet
        .download(&format!("/api/v1/commands/{id}/file"))
        .await?;
    assert_eq!(s, 200);
    assert_eq!(disposition, format!("attachment; filename=\"{file}\""));
    assert_eq!(
        bytes,
        bundle.as_bytes(),
        "the fleet serves the appliance's bytes"
    );
    assert_eq!(
        c["output"]["sha256"].as_str(),
        Some(hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes)).as_str())
    );
    let audit = fleet
        .get("/api/v1/audit?action=diagnostics.download")
        .await?;
    assert_eq!(
        audit["entries"][0]["target"], "ct-room-1",
        "the download is audited: {audit}"
    );
    let c = command(&fleet, json!({"type": "retry_quarantine"})).await?;
    assert_eq!(c["status"], "succeeded", "{c}");
    assert_eq!(c["output"]["objects"], 0);
    // Retry now: every destination's backoff wait ends (here: the one archive); a name the
    // appliance does not have is refused with a code.
    let c = command(&fleet, json!({"type": "retry_now"})).await?;
    assert_eq!(c["status"], "succeeded", "{c}");
    assert_eq!(c["output"]["destinations"], 1, "{c}");
    let c = command(
        &fleet,
        json!({"type": "retry_now", "destination": "archive"}),
    )
    .await?;
    assert_eq!(c["output"]["destinations"], 1, "{c}");
    let c = command(
        &fleet,
        json!({"type": "retry_now", "destination": "nowhere"}),
    )
    .await?;
    assert_eq!(
        (c["status"].clone(), c["code"].clone()),
        (json!("rejected"), json!("unknown_destination")),
        "{c}"
    );
    let c = command(&fleet, json!({"type": "restart"})).await?;
    assert_eq!(c["status"], "succeeded", "{c}");
    // After the restart it serves (with the configuration the fleet set) and reports on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut echoed = false;
    for _ in 0..40 {
        if echoscu(appliance.port, "MEDGATE", "CTSCANNER")
            .await?
            .success
        {
            echoed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(echoed, "serving after the restart command");

    // A process restart keeps the configuration the fleet set.
    appliance.kill9()?;
    appliance.restart().await?;
    assert!(
        echoscu(appliance.port, "MEDGATE", "CTSCANNER")
            .await?
            .success
    );
    assert!(
        !echoscu(appliance.port, "MEDGATE", "STRANGER")
            .await?
            .success
    );
    // The births of the restarts did not take the reason or the modalities back.
    let peers = fleet.get(&device("/peers")).await?;
    assert!(
        refused_with_reason(peer(&peers["peers"], "STRANGER")),
        "{peers}"
    );
    assert_eq!(
        peer(&peers["peers"], "CTSCANNER").map(|p| p["modalities"].clone()),
        Some(local_modalities.clone()),
        "{peers}"
    );

    // Not one byte of patient data reached MQTT or the fleet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mqtt = capture.text();
    assert!(
        mqtt.contains("medgate/v1/st-olav/ct-room-1/telemetry"),
        "capture works: {}",
        &mqtt[..mqtt.len().min(500)]
    );
    assert!(mqtt.contains("study_received"), "events captured");
    assert_clean("the MQTT traffic", &mqtt, &forbidden);
    for path in [
        "",
        "/events?limit=500",
        "/telemetry",
        "/peers",
        "/config",
        "/commands",
    ] {
        let v = fleet.get(&device(path)).await?;
        assert_clean(&format!("GET {}", device(path)), &v.to_string(), &forbidden);
    }
    let fleet_log = std::fs::read_to_string(fleet.dir.join("fleet.log"))?;
    assert_clean("the fleet's log", &fleet_log, &forbidden);
    // The appliance itself logs no patient data either (at its default level).
    let log = std::fs::read_to_string(appliance.dir.join("appliance-1.log"))?;
    assert_clean("the appliance's log", &log, &forbidden);

    // The fleet crashes (kill -9, its embedded broker with it) just as a study's events are on
    // their way, and comes back: every event still arrives, because an event leaves the
    // appliance's outbox only with the fleet's receipt (after the commit), not with the PUBACK.
    let more = medgate_e2e::appliance::ct_files(&t.path().join("more"), 77, 12)?;
    let paths: Vec<_> = more.iter().map(|f| f.path.clone()).collect();
    let mut fleet = fleet;
    let before = event_sums(&fleet.get(&device("/events?limit=500")).await?);
    appliance
        .storescu()
        .calling_ae("CTSCANNER")
        .send(&paths)
        .await?
        .expect_all_success(more.len())?;
    fleet.crash_and_restart(2).await?;
    appliance.wait_drained(Duration::from_secs(60)).await?;
    let n = more.len() as u64;
    fleet
        .wait(
            "the study's events after the fleet's crash",
            &device("/events?limit=500"),
            Duration::from_secs(120),
            |v| event_sums(v) == (before.0 + n, before.1 + n),
        )
        .await?;
    same_telemetry(&fleet, &appliance, Duration::from_secs(30)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mosquitto_with_mutual_tls_reports_survive_a_broker_outage() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let t = tempfile::Builder::new()
        .prefix("medgate-e2e-fleet-tls-")
        .tempdir()?;
    let (fleet, mut mosquitto) = Fleet::start_with_mosquitto(&t.path().join("fleet")).await?;

    // Enrolled: its own key and certificate, and TLS to the broker the fleet names.
    let settings = enroll(&fleet, t.path()).await?;
    let text = std::fs::read_to_string(&settings)?;
    assert!(
        text.contains("[tls]") && text.contains(&format!("localhost:{}", mosquitto.port)),
        "{text}"
    );
    let (mut archive, appliance) = archive_and_appliance(t.path(), &settings, "").await?;
    fleet
        .wait(
            "online over mTLS",
            &device(""),
            Duration::from_secs(30),
            |d| d["connection"] == "online" && d["inventory"]["ae_title"] == "MEDGATE",
        )
        .await?;

    let mut study = Study::new(Patient::synthetic(99), "ACC99".to_string(), 99);
    let first = study.one_of_each(&t.path().join("s1"))?;
    let paths: Vec<_> = first.iter().map(|f| f.path.clone()).collect();
    appliance
        .storescu()
        .send(&paths)
        .await?
        .expect_all_success(first.len())?;
    same_counts(&fleet, &appliance, Duration::from_secs(30)).await?;

    // The broker goes away for a minute: capture and forwarding go on, the events wait in the
    // outbox.
    mosquitto.kill();
    let down = std::time::Instant::now();
    let mut study = Study::new(Patient::synthetic(98), "ACC98".to_string(), 98);
    let second = study.one_of_each(&t.path().join("s2"))?;
    let paths: Vec<_> = second.iter().map(|f| f.path.clone()).collect();
    appliance
        .storescu()
        .send(&paths)
        .await?
        .expect_all_success(second.len())?;
    appliance.wait_drained(Duration::from_secs(60)).await?;
    archive
        .wait_for_files(first.len() + second.len(), Duration::from_secs(30))
        .await?;
    fleet
        .wait(
            "offline (missed heartbeats)",
            &device(""),
            Duration::from_secs(40),
            |d| d["connection"] == "offline",
        )
        .await?;

    tokio::time::sleep(Duration::from_secs(60).saturating_sub(down.elapsed())).await;

    // Back: no event lost, the fleet's counts equal the appliance's again. The broker restarted
    // without the state of its last seconds, and the fleet and the appliance reconnect in either
    // order: an event the broker acknowledged but never delivered is sent again because no
    // receipt came for it.
    mosquitto.restart()?;
    fleet
        .wait("online again", &device(""), Duration::from_secs(90), |d| {
            d["connection"] == "online"
        })
        .await?;
    same_counts(&fleet, &appliance, Duration::from_secs(120)).await?;
    // And every event left the appliance's outbox only with the fleet's receipt.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = appliance.status().await?;
        if s["fleet"]["outbox"] == 0 {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the appliance's outbox did not empty: {}",
            s["fleet"]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}
