//! Test peers for the fleet: Mosquitto, PostgreSQL, test certificates and an MQTT collector
//! from medgate-testkit; a fleet in process, a device built on medgate-report.
#![allow(dead_code, unused_imports)]

pub mod browser;
pub mod session;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use medgate_contract::*;
use medgate_fleet::config::FleetConfig;
use medgate_report::*;
use serde_json::Value;

pub use medgate_testkit::{Collector, Mosquitto, Pki, Postgres, free_port};
pub use session::{Session, login_form_token, set_cookie};

/// The appliance's example configuration as JSON (what the fleet sends as desired config).
pub fn example_appliance_config() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../appliance/app/medgate-appliance.example.toml");
    let text = std::fs::read_to_string(&path).expect("example config");
    let v: toml::Value = toml::from_str(&text).expect("example parses");
    serde_json::to_value(v).expect("to json")
}

/// A device: the reporter with a test telemetry source and command handler.
pub struct TestAppliance {
    pub received: AtomicU64,
    pub applied: std::sync::Mutex<Vec<u64>>,
}

impl TestAppliance {
    pub fn new() -> Arc<TestAppliance> {
        Arc::new(TestAppliance {
            received: AtomicU64::new(0),
            applied: std::sync::Mutex::new(vec![]),
        })
    }
}

impl TelemetrySource for TestAppliance {
    fn snapshot(&self) -> TelemetrySnapshot {
        TelemetrySnapshot {
            received: Flow {
                objects: self.received.load(Ordering::Relaxed),
                bytes: 0,
            },
            ..TelemetrySnapshot::default()
        }
    }
    fn inventory(&self) -> Inventory {
        Inventory {
            serial: Token::new("SN-1").expect("valid"),
            hardware_profile: Token::new("test").expect("valid"),
            os_version: Token::new("1").expect("valid"),
            appliance_version: Token::new("0.1.0").expect("valid"),
            ae_title: Some(AeTitle::new("MEDGATE").expect("valid")),
            nics: vec![],
            disk: Disk {
                total_bytes: 100,
                free_bytes: 50,
            },
            peers: vec![Peer {
                calling_ae: AeTitle::new("CT01").expect("valid"),
                called_ae: AeTitle::new("MEDGATE").expect("valid"),
                ip: "127.0.0.1".parse().expect("ip"),
                sop_classes: vec![SopClassUid::new("1.2.840.10008.5.1.4.1.1.2").expect("valid")],
                modalities: vec![Modality::new("CT").expect("valid")],
                accepted: true,
                refusal: None,
                associations: 1,
                last_seen_ms: now_ms(),
            }],
            config_schema: Some(1),
        }
    }
}

impl CommandHandler for TestAppliance {
    async fn apply_config(&self, desired: &DesiredConfig) -> ApplyOutcome {
        self.applied.lock().expect("lock").push(desired.version);
        ApplyOutcome::Applied
    }
    async fn restart(&self) -> CommandResult {
        Ok(CommandOutput::default())
    }
    async fn retry_quarantine(&self) -> CommandResult {
        Ok(CommandOutput {
            objects: Some(0),
            ..CommandOutput::default()
        })
    }
    async fn purge_quarantine(&self, _older_than: Option<Duration>) -> CommandResult {
        Ok(CommandOutput {
            objects: Some(4),
            bytes: Some(4096),
            ..CommandOutput::default()
        })
    }
    /// A small JSON "bundle" (200 KiB: two chunks), the same bytes every time.
    async fn collect_diagnostics(&self) -> Result<ProducedFile, CommandFailure> {
        let content = diagnostics_bundle();
        Ok(ProducedFile {
            output: CommandOutput {
                bytes: Some(content.len() as u64),
                sha256: Sha256Hex::new(sha256_hex(&content)).ok(),
                file: Token::new("diag-test.json").ok(),
                ..CommandOutput::default()
            },
            content,
        })
    }
    /// Two destinations, `archive` and `web`.
    async fn retry_now(&self, destination: Option<Token>) -> CommandResult {
        let woken = match destination.as_ref().map(Token::as_str) {
            None => 2,
            Some("archive" | "web") => 1,
            Some(_) => return Err(CommandFailure::rejected("unknown_destination")),
        };
        Ok(CommandOutput {
            destinations: Some(woken),
            ..CommandOutput::default()
        })
    }
}

pub fn reporter_config(port: u16, site: &str, device: &str) -> ReporterConfig {
    let mut c = ReporterConfig::new(
        format!("127.0.0.1:{port}"),
        SiteId::new(site).expect("valid"),
        DeviceId::new(device).expect("valid"),
    );
    c.telemetry_interval_secs = 1;
    c.keep_alive_secs = 5;
    c.reconnect_min_ms = 100;
    c.reconnect_max_secs = 2;
    c
}

pub fn study(i: u64) -> EventBody {
    EventBody::StudyReceived {
        calling_ae: AeTitle::new("CT01").expect("valid"),
        called_ae: AeTitle::new("MEDGATE").expect("valid"),
        modality: Some(Modality::new("CT").expect("valid")),
        sop_classes: vec![SopClassUid::new("1.2.840.10008.5.1.4.1.1.2").expect("valid")],
        received: Flow {
            objects: i,
            bytes: i * 1000,
        },
        duration_ms: 5,
    }
}

/// A fleet configuration in `dir` with free ports.
pub fn fleet_config(dir: &Path) -> FleetConfig {
    // reqwest (test HTTP client) uses rustls without a built-in provider: ring, as everywhere.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut c = FleetConfig {
        data_dir: dir.join("fleet"),
        ..FleetConfig::default()
    };
    c.http.bind = "127.0.0.1:0".parse().expect("addr");
    c.broker.listen = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    c
}

/// HTTP client with the admin token.
pub struct Api {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(running: &medgate_fleet::Running) -> Api {
        let token = std::fs::read_to_string(&running.admin_token_file)
            .expect("token")
            .trim()
            .to_owned();
        Api {
            base: format!("http://{}", running.http),
            token,
            http: reqwest::Client::new(),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// GET of a download with the admin token: the response as it came (headers, bytes).
    pub async fn download(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("download")
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// Polls `path` until `pred` holds.
    pub async fn wait(
        &self,
        secs: u64,
        what: &str,
        path: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (s, v) = self.get(path).await;
            if s == 200 && pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last {path}: {s} {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Enrolls a device with a claim token and a CSR; returns (certificate PEM, key PEM, CA PEM).
pub async fn enroll(api: &Api, site: &str, device: &str) -> (String, String, String) {
    let (s, claim) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/claims",
            serde_json::json!({"site": site, "device": device}),
        )
        .await;
    assert_eq!(s, 201, "{claim}");
    let key = rcgen::KeyPair::generate().expect("key");
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let body = serde_json::json!({"token": claim["token"], "csr_pem": csr});
    let r = api
        .http
        .post(format!("{}/api/v1/enroll", api.base))
        .json(&body)
        .send()
        .await
        .expect("enroll");
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.expect("json");
    // A claim token works once.
    let again = api
        .http
        .post(format!("{}/api/v1/enroll", api.base))
        .json(&body)
        .send()
        .await
        .expect("enroll");
    assert_eq!(again.status().as_u16(), 403);
    (
        v["certificate_pem"].as_str().expect("cert").to_owned(),
        key.serialize_pem(),
        v["ca_pem"].as_str().expect("ca").to_owned(),
    )
}

/// What the test device's `collect_diagnostics` produces: 200 KiB of JSON, two chunks on the wire.
pub fn diagnostics_bundle() -> Vec<u8> {
    let line = "{\"log\":\"forwarding to ARCHIVE resumed after 3 retries\"},\n";
    let mut out = b"[\n".to_vec();
    while out.len() < 200 * 1024 {
        out.extend_from_slice(line.as_bytes());
    }
    out.extend_from_slice(b"{}]\n");
    out
}

/// SHA-256, hexadecimal.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}
