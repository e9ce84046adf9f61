//! The wall in a real browser (Debian's chromium, headless, driven by playwright-core from
//! tests/browser/wall.mjs) against the real `medgate-fleet serve` binary, with simulated
//! appliances (the appliance's reporter, in this process) at four hospitals in varied states.
//!
//! The scenario creates a display link in the console, opens the wall without a session and
//! asks this test (through files in a control directory: `<n>.req` holds the action, this test
//! answers `<n>.done`) to start and kill an appliance, and to kill and restart the fleet on the
//! same ports and database, and to take an appliance's archive down and up (the fleet's alert
//! rules, with short thresholds, raise and clear a real alert: the alarms band shows it); it
//! measures change → pixels latency over 100 changes, takes the screenshots at 1920×1080 and
//! 3840×2160, day and night, and revokes the link.

mod fleet_support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_support::browser::run_scenario;
use fleet_support::{Api, TestAppliance, enroll, reporter_config};
use medgate_contract::*;
use medgate_e2e::Fleet;
use medgate_report::{Reporter, TelemetrySource};
use serde_json::json;

/// A simulated appliance's figures (what its telemetry says), set by the test.
struct Figures {
    snapshot: Mutex<TelemetrySnapshot>,
    version: &'static str,
}

impl TelemetrySource for Figures {
    fn snapshot(&self) -> TelemetrySnapshot {
        self.snapshot.lock().map(|s| s.clone()).unwrap_or_default()
    }
    fn inventory(&self) -> Inventory {
        Inventory {
            serial: Token::new("SN-W").expect("valid"),
            hardware_profile: Token::new("test").expect("valid"),
            os_version: Token::new("1").expect("valid"),
            appliance_version: Token::new(self.version).expect("valid"),
            ae_title: Some(AeTitle::new("MEDGATE").expect("valid")),
            nics: vec![],
            disk: Disk {
                total_bytes: 1000,
                free_bytes: 500,
            },
            peers: vec![],
            config_schema: Some(1),
        }
    }
}

fn healthy() -> TelemetrySnapshot {
    TelemetrySnapshot {
        uptime_secs: 3600,
        disk: Disk {
            total_bytes: 1_000_000_000_000,
            free_bytes: 600_000_000_000,
        },
        queue: QueueStats {
            depth: 2,
            oldest_age_secs: 3,
        },
        destinations: vec![DestinationQueue {
            name: Token::new("archive").expect("valid"),
            depth: 2,
            oldest_age_secs: 3,
            quarantined: 0,
            state: DestinationState::Ok,
        }],
        ..TelemetrySnapshot::default()
    }
}

/// The fleet's appliances: (site, device, room, version, figures); `None`: enrolled, never
/// connected.
fn fleet_plan() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<TelemetrySnapshot>,
)> {
    let mut unreachable = healthy();
    unreachable.queue = QueueStats {
        depth: 140,
        oldest_age_secs: 720,
    };
    unreachable.destinations[0] = DestinationQueue {
        name: Token::new("archive").expect("valid"),
        depth: 140,
        oldest_age_secs: 720,
        quarantined: 0,
        state: DestinationState::BackingOff,
    };
    let mut disk = healthy();
    disk.disk.free_bytes = 90_000_000_000;
    let mut update = healthy();
    update.update = Some(UpdateReport {
        state: UpdatePhase::WaitingIdle,
        version: Some(Token::new("0.2.0").expect("valid")),
        running: Some(Token::new("0.1.0").expect("valid")),
        campaign: None,
        on_probation: false,
        code: Some(Token::new("associations_active").expect("valid")),
    });
    let mut slow = healthy();
    slow.queue = QueueStats {
        depth: 30,
        oldest_age_secs: 840,
    };
    vec![
        ("st-marien", "ct-1", "CT 1", "0.1.0", Some(healthy())),
        ("st-marien", "mr-1", "MR 1", "0.1.0", Some(unreachable)),
        ("st-marien", "us-1", "Ultrasound 3", "0.1.0", Some(disk)),
        ("nordklinik", "dx-1", "X-ray 1", "0.1.0", Some(healthy())),
        ("nordklinik", "ct-2", "CT 2", "0.1.0", Some(update)),
        ("nordklinik", "mr-2", "MR 2", "0.1.0", None),
        (
            "kinderspital",
            "us-2",
            "Ultrasound 1",
            "0.2.0",
            Some(healthy()),
        ),
        ("kinderspital", "dx-2", "X-ray 2", "0.1.0", Some(slow)),
        ("lakeside", "ct-3", "CT 3", "0.2.0", Some(healthy())),
        ("lakeside", "ecg-1", "Cardiology", "0.2.0", Some(healthy())),
    ]
}

const SITES: [(&str, &str); 4] = [
    ("st-marien", "St. Marien Hospital"),
    ("nordklinik", "Nordklinik"),
    ("kinderspital", "Kinderspital"),
    ("lakeside", "Lakeside Clinic"),
];

fn start_reporter(
    mqtt_port: u16,
    dir: &Path,
    site: &str,
    device: &str,
    figures: Arc<Figures>,
    interval: u64,
) -> Reporter {
    let mut c = reporter_config(mqtt_port, site, device);
    c.telemetry_interval_secs = interval;
    Reporter::start(
        c,
        &dir.join(format!("outbox-{device}")),
        figures,
        TestAppliance::new(),
    )
    .expect("reporter")
}

/// The alert rules with short holds: a condition that holds a second raises its alert.
const ALERTS: &str = "[alerts]\nevaluate_secs = 1\narchive_unreachable_for_secs = 1\n\
     offline_for_secs = 2\noldest_queued_warning_secs = 800\noldest_queued_for_secs = 1\n\
     disk_for_secs = 1\n";

/// The modality an appliance's studies come from (by its device id; the cardiology one sends
/// none: counted as "other").
fn modality_of(device: &str) -> Option<Modality> {
    let code = device.split('-').next().unwrap_or("").to_ascii_uppercase();
    (code != "ECG").then(|| Modality::new(&code).expect("valid"))
}

/// `n` studies from the appliance's modality, each received and forwarded.
fn studies(r: &Reporter, device: &str, n: u64) {
    for i in 1..=n {
        r.event(EventBody::StudyReceived {
            calling_ae: AeTitle::new("CT01").expect("valid"),
            called_ae: AeTitle::new("MEDGATE").expect("valid"),
            modality: modality_of(device),
            sop_classes: vec![],
            received: Flow {
                objects: 100 + i,
                bytes: 0,
            },
            duration_ms: 5,
        })
        .expect("event");
        r.event(EventBody::StudyForwarded {
            destination: Token::new("archive").expect("valid"),
            modality: modality_of(device),
            forwarded: Flow {
                objects: 100 + i,
                bytes: 0,
            },
            latency_ms: 900,
            attempts: 1,
        })
        .expect("event");
    }
}

/// A device appears within 2 s, turns red with its reason when killed and green when back; the
/// fleet killed shows "feed lost" within 10 s and the wall is live again by itself after the
/// restart; 100 changes measured change → pixels; an alert raised and cleared by the rules shows
/// in and leaves the alarms band within 2 s; exams by modality; screenshots at both sizes, day
/// and night; a revoked link closes the wall at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wall_is_live_recovers_and_closes_when_revoked_in_chromium() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut fleet = Fleet::start_extra(&dir.path().join("fleet"), ALERTS)
        .await
        .expect("fleet");
    let api = Api {
        base: fleet.url(),
        token: fleet.token.clone(),
        http: reqwest::Client::new(),
    };
    for (id, name) in SITES {
        let (s, v) = api
            .send(
                reqwest::Method::PUT,
                &format!("/api/v1/sites/{id}"),
                json!({"name": name}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, v) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/users",
            json!({"name": "it-admin", "role": "admin", "password": "a long enough password"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let mut figures: HashMap<&str, Arc<Figures>> = HashMap::new();
    let mut reporters: HashMap<&str, Reporter> = HashMap::new();
    for (site, device, room, version, snap) in fleet_plan() {
        enroll(&api, site, device).await;
        let (s, v) = api
            .send(
                reqwest::Method::PATCH,
                &format!("/api/v1/devices/{device}"),
                json!({"room": room}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let Some(snap) = snap else { continue };
        let f = Arc::new(Figures {
            snapshot: Mutex::new(snap),
            version,
        });
        figures.insert(device, f.clone());
        // ct-1 is started by the scenario (it must appear within 2 s).
        if device != "ct-1" {
            let r = start_reporter(fleet.mqtt_port, dir.path(), site, device, f, 2);
            studies(&r, device, 3);
            reporters.insert(device, r);
        }
    }
    for device in reporters.keys() {
        api.wait(20, "online", &format!("/api/v1/devices/{device}"), |d| {
            d["connection"] == "online"
        })
        .await;
    }

    let control = dir.path().join("control");
    std::fs::create_dir_all(&control).expect("control dir");
    let base = fleet.url();
    let scenario = {
        let base = base.clone();
        let control = control.display().to_string();
        let token = fleet.token.clone();
        tokio::spawn(async move {
            run_scenario(
                "wall.mjs",
                &base,
                &[
                    ("CONTROL_DIR", &control),
                    ("ADMIN_USER", "it-admin"),
                    ("ADMIN_PASSWORD", "a long enough password"),
                    ("ADMIN_TOKEN", &token),
                    ("LIVE_DEVICE", "ct-1"),
                    ("LATENCY_DEVICE", "dx-1"),
                    ("ALARM_DEVICE", "us-2"),
                    ("CALM_SITE", "Lakeside Clinic"),
                ],
            )
            .await;
        })
    };
    let mut n: u32 = 0;
    let mut restarts = 0;
    while !scenario.is_finished() {
        let req = control.join(format!("{n}.req"));
        let Ok(action) = std::fs::read_to_string(&req) else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let answer = match action.trim() {
            "start ct-1" => {
                let f = figures["ct-1"].clone();
                let r = start_reporter(fleet.mqtt_port, dir.path(), "st-marien", "ct-1", f, 1);
                studies(&r, "ct-1", 2);
                reporters.insert("ct-1", r);
                "ok".to_owned()
            }
            "kill ct-1" => match reporters.remove("ct-1") {
                // Aborted, not shut down: no `offline` message, the broker sees the connection
                // drop (a crash, as far as MQTT can tell).
                Some(r) => {
                    r.shutdown(Duration::ZERO).await;
                    "ok".to_owned()
                }
                None => "ct-1 is not running".to_owned(),
            },
            // The archive of us-2 stops answering (the appliance backs off, its queue grows)
            // and comes back: the fleet's rules raise and clear `archive_unreachable`.
            "archive down us-2" => {
                if let Ok(mut s) = figures["us-2"].snapshot.lock() {
                    s.queue = QueueStats {
                        depth: 25,
                        oldest_age_secs: 90,
                    };
                    s.destinations[0].state = DestinationState::BackingOff;
                    s.destinations[0].depth = 25;
                    s.destinations[0].oldest_age_secs = 90;
                }
                "ok".to_owned()
            }
            "archive up us-2" => {
                if let Ok(mut s) = figures["us-2"].snapshot.lock() {
                    *s = healthy();
                }
                "ok".to_owned()
            }
            "kill fleet" => match fleet.kill() {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("{e:#}"),
            },
            "restart fleet" => {
                restarts += 1;
                match fleet.start_again(restarts).await {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => format!("{e:#}"),
                }
            }
            other => format!("unknown action {other:?}"),
        };
        std::fs::write(control.join(format!("{n}.done")), answer).expect("answer");
        n += 1;
    }
    let outcome = scenario.await;
    for (_, r) in reporters.drain() {
        r.shutdown(Duration::from_secs(1)).await;
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    // Creating and revoking the link are audited, by the admin who did it, never with the
    // secret.
    let (s, log) = api.get("/api/v1/audit?action=display.").await;
    assert_eq!(s, 200, "{log}");
    let entries = log["entries"].as_array().expect("entries");
    let actions: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        ["display.revoke", "display.create", "display.create"],
        "{log}"
    );
    assert!(entries.iter().all(|e| e["actor"] == "it-admin"), "{log}");
    assert!(
        !log.to_string().contains("mgd_"),
        "no secret in the audit log: {log}"
    );
}
