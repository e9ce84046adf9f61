//! Enrollment: the appliance creates its device key, sends a certificate request with a one-time
//! claim token to the fleet manager, and keeps what comes back — its certificate, the fleet's CA
//! and the broker's address — as the `[fleet]` settings the appliance then runs with.
//!
//! The private key never leaves the box. The claim token is used once; it is not stored.

use serde::Deserialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The provisioning file a technician (or the image's provisioning step) drops on the box.
///
/// ```toml
/// fleet_url = "https://fleet.region.example"
/// claim_token = "…"                  # from the fleet console: Devices → Claim
/// # broker = "mqtt.region.example:8883"  # overrides the broker address the fleet answers
/// # fleet_ca = "/etc/medgate/fleet-ca.pem"  # CA of the fleet's HTTPS certificate
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provisioning {
    /// Base URL of the fleet manager (`http://` on a lab network only).
    pub fleet_url: String,
    /// The one-time claim token.
    pub claim_token: String,
    /// `host:port` of the MQTT broker, if not the one the fleet answers.
    #[serde(default)]
    pub broker: Option<String>,
    /// PEM CA bundle for the fleet's HTTPS certificate (default: the system's roots).
    #[serde(default)]
    pub fleet_ca: Option<PathBuf>,
    /// Telemetry period written into the settings.
    #[serde(default)]
    pub telemetry_interval_secs: Option<u64>,
}

/// What went wrong, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The provisioning file is missing or wrong.
    #[error("provisioning file {path}: {message}")]
    Provisioning {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The key or the request could not be made.
    #[error("cannot create the device key or its certificate request: {0}")]
    Key(String),
    /// The fleet could not be reached (retry later).
    #[error(
        "cannot reach the fleet manager at {url}: {message}; check the uplink and fleet_url, it is retried"
    )]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The fleet refused (e.g. a used or expired claim token). The fleet's explanation says what
    /// to do; the advice is added only when it does not (an answer from a proxy, an older fleet).
    #[error(
        "the fleet manager refused the enrollment ({status}): {message}{}",
        advice_unless_given(.message)
    )]
    Refused {
        /// HTTP status.
        status: u16,
        /// The fleet's explanation.
        message: String,
    },
    /// The fleet's answer is not what was expected.
    #[error("unexpected answer from the fleet manager: {0}")]
    Answer(String),
}

/// What to do after a refusal, unless the fleet's explanation already says it.
fn advice_unless_given(message: &str) -> &'static str {
    if message.to_ascii_lowercase().contains("ask hospital it") {
        ""
    } else {
        "; ask hospital IT for a new claim token"
    }
}

impl EnrollError {
    /// Worth retrying later (the uplink or the fleet may come back).
    pub fn is_transient(&self) -> bool {
        matches!(self, EnrollError::Unreachable { .. })
            || matches!(self, EnrollError::Refused { status, .. } if *status >= 500)
    }
}

/// How enrollment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enrolled {
    /// Done now: the settings file was written.
    Now {
        /// Site the fleet put the device in.
        site: String,
        /// The device id.
        device: String,
    },
    /// The settings file already existed: nothing was done.
    Already,
}

/// Names of the files kept in the identity directory.
pub mod files {
    /// The device's private key (0600).
    pub const KEY: &str = "device.key";
    /// Its certificate, signed by the fleet's CA.
    pub const CERT: &str = "device.crt";
    /// The fleet's CA (trusted for the broker).
    pub const CA: &str = "ca.crt";
    /// The `[fleet]` settings (TOML).
    pub const SETTINGS: &str = "fleet.toml";
}

#[derive(Debug, Deserialize)]
struct Answer {
    site: String,
    device: String,
    certificate_pem: String,
    ca_pem: String,
    broker: String,
    #[serde(default = "yes")]
    broker_tls: bool,
}

fn yes() -> bool {
    true
}

impl Provisioning {
    /// Reads and checks a provisioning file.
    pub fn load(path: &Path) -> Result<Self, EnrollError> {
        let err = |message: String| EnrollError::Provisioning {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let p: Provisioning = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        if !(p.fleet_url.starts_with("https://") || p.fleet_url.starts_with("http://")) {
            return Err(err(format!(
                "fleet_url {:?} must start with https:// (or http:// on a lab network)",
                p.fleet_url
            )));
        }
        if p.claim_token.trim().is_empty() {
            return Err(err("claim_token is empty".into()));
        }
        Ok(p)
    }
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, directory fsync) with `mode`.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), EnrollError> {
    use std::os::unix::fs::OpenOptionsExt;
    let werr = |source| EnrollError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(werr)?;
    f.write_all(bytes).map_err(werr)?;
    f.sync_all().map_err(werr)?;
    std::fs::rename(&tmp, path).map_err(werr)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(werr)?;
    }
    Ok(())
}

/// The device key: kept if it exists (a retried first boot), created otherwise.
fn device_key(dir: &Path) -> Result<rcgen::KeyPair, EnrollError> {
    let path = dir.join(files::KEY);
    match std::fs::read_to_string(&path) {
        Ok(pem) => rcgen::KeyPair::from_pem(&pem)
            .map_err(|e| EnrollError::Key(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = rcgen::KeyPair::generate().map_err(|e| EnrollError::Key(e.to_string()))?;
            write_file(&path, key.serialize_pem().as_bytes(), 0o600)?;
            Ok(key)
        }
        Err(source) => Err(EnrollError::Write { path, source }),
    }
}

fn http_client(p: &Provisioning) -> Result<reqwest::Client, EnrollError> {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10));
    if let Some(ca) = &p.fleet_ca {
        let tls = crate::tls::client_config(ca, None).map_err(|e| EnrollError::Provisioning {
            path: ca.clone(),
            message: e.to_string(),
        })?;
        b = b.use_preconfigured_tls((*tls).clone());
    }
    b.build().map_err(|e| EnrollError::Key(e.to_string()))
}

/// Enrolls once: creates the key in `dir`, asks the fleet for a certificate and writes the
/// settings file. Does nothing if `dir/fleet.toml` exists.
pub async fn enroll(p: &Provisioning, dir: &Path) -> Result<Enrolled, EnrollError> {
    let settings = dir.join(files::SETTINGS);
    if settings.exists() {
        return Ok(Enrolled::Already);
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| EnrollError::Write {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    let key = device_key(dir)?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| EnrollError::Key(e.to_string()))?;
    let url = format!("{}/api/v1/enroll", p.fleet_url.trim_end_matches('/'));
    let rsp = http_client(p)?
        .post(&url)
        .json(&serde_json::json!({"token": p.claim_token.trim(), "csr_pem": csr}))
        .send()
        .await
        .map_err(|e| EnrollError::Unreachable {
            url: url.clone(),
            message: e.to_string(),
        })?;
    let status = rsp.status().as_u16();
    let body = rsp.text().await.map_err(|e| EnrollError::Unreachable {
        url: url.clone(),
        message: e.to_string(),
    })?;
    if status != 200 {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(body);
        return Err(EnrollError::Refused { status, message });
    }
    let a: Answer = serde_json::from_str(&body).map_err(|e| EnrollError::Answer(e.to_string()))?;
    let cert = dir.join(files::CERT);
    let ca = dir.join(files::CA);
    write_file(&cert, a.certificate_pem.as_bytes(), 0o600)?;
    write_file(&ca, a.ca_pem.as_bytes(), 0o600)?;
    let broker = p.broker.clone().unwrap_or(a.broker);
    let mut table = toml::Table::new();
    table.insert("broker".into(), broker.into());
    table.insert("site".into(), a.site.clone().into());
    table.insert("device".into(), a.device.clone().into());
    if let Some(t) = p.telemetry_interval_secs {
        table.insert(
            "telemetry_interval_secs".into(),
            i64::try_from(t).unwrap_or(i64::MAX).into(),
        );
    }
    if a.broker_tls {
        let mut tls = toml::Table::new();
        tls.insert("ca".into(), ca.display().to_string().into());
        tls.insert("certificate".into(), cert.display().to_string().into());
        tls.insert(
            "private_key".into(),
            dir.join(files::KEY).display().to_string().into(),
        );
        table.insert("tls".into(), tls.into());
    }
    let text = format!(
        "# Written by `medgate-appliance enroll`: the appliance's [fleet] settings.\n{}",
        toml::to_string(&table).map_err(|e| EnrollError::Answer(e.to_string()))?
    );
    // Written last: its presence means "enrolled".
    write_file(&settings, text.as_bytes(), 0o600)?;
    Ok(Enrolled::Now {
        site: a.site,
        device: a.device,
    })
}

/// Reads the settings file `enroll` wrote.
pub fn read_settings(path: &Path) -> Result<medgate_report::ReporterConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let cfg: medgate_report::ReporterConfig =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    cfg.validate()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_gives_its_advice_once() {
        // The fleet's answer to a reused claim token (fleet/src/api.rs) already says what to do.
        let reused = EnrollError::Refused {
            status: 403,
            message: "claim token unknown, expired or already used; ask hospital IT for a new claim token".into(),
        };
        let text = reused.to_string();
        assert_eq!(text.matches("ask hospital IT").count(), 1, "{text}");
        assert_eq!(
            text,
            "the fleet manager refused the enrollment (403): claim token unknown, expired or already used; ask hospital IT for a new claim token"
        );
        // An answer without advice (a proxy's page) gets it.
        let bare = EnrollError::Refused {
            status: 403,
            message: "Forbidden".into(),
        };
        assert_eq!(
            bare.to_string(),
            "the fleet manager refused the enrollment (403): Forbidden; ask hospital IT for a new claim token"
        );
    }
}
