//! The reporter's settings (the appliance's `[fleet]` section) and their TLS material.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use medgate_contract::{DeviceId, SiteId};
use serde::Deserialize;

/// Settings of the MQTT reporting, as found in the appliance's configuration file:
///
/// ```toml
/// [fleet]
/// broker = "fleet.region.example:8883"
/// site = "st-olav"
/// device = "ct-room-1"
/// telemetry_interval_secs = 10
/// [fleet.tls]
/// ca = "/etc/medgate/fleet/ca.crt"
/// certificate = "/etc/medgate/fleet/device.crt"
/// private_key = "/etc/medgate/fleet/device.key"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReporterConfig {
    /// `host:port` of the MQTT broker (8883 for TLS by convention, 1883 plain).
    pub broker: String,
    /// The site (hospital) this appliance belongs to.
    pub site: SiteId,
    /// This appliance's id; also the MQTT client id and the common name of its certificate.
    pub device: DeviceId,
    /// TLS to the broker; without it the connection is plain (loopback and tests only).
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// MQTT username/password (the embedded broker); with TLS client certificates leave it out.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the MQTT password (first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Seconds between telemetry messages.
    #[serde(default = "default_telemetry")]
    pub telemetry_interval_secs: u64,
    /// MQTT keep-alive, seconds; the broker declares the device offline after 1.5x this.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    /// First reconnect delay, milliseconds; doubles up to `reconnect_max_secs`, with jitter.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay, seconds.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_secs: u64,
    /// Messages kept while the broker is unreachable; past it the oldest are dropped (counted).
    #[serde(default = "default_outbox_max")]
    pub outbox_max_entries: usize,
    /// Seconds to wait for the fleet's receipt of a published event before sending it again;
    /// doubles (up to 10 minutes) while no receipt comes at all.
    #[serde(default = "default_receipt_timeout")]
    pub receipt_timeout_secs: u64,
}

fn default_telemetry() -> u64 {
    10
}
fn default_keep_alive() -> u64 {
    30
}
fn default_reconnect_min() -> u64 {
    500
}
fn default_reconnect_max() -> u64 {
    60
}
fn default_outbox_max() -> usize {
    1_000_000
}
fn default_receipt_timeout() -> u64 {
    30
}

/// TLS files for the broker connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM file of the CA(s) that sign the broker's certificate.
    pub ca: PathBuf,
    /// PEM certificate chain of this device (mutual TLS). Required with `private_key`.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// PEM private key of this device (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub private_key: Option<PathBuf>,
}

/// A setting that cannot work, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A field's value is wrong.
    #[error("fleet.{field}: {problem}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong and what to write instead.
        problem: String,
    },
    /// A file could not be read.
    #[error("fleet.{field}: cannot read {path}: {source}")]
    Read {
        /// The field.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TLS material was refused by rustls.
    #[error("fleet.tls: {0}")]
    Tls(String),
}

impl ReporterConfig {
    /// A configuration with defaults for everything but the broker and the identity.
    pub fn new(broker: impl Into<String>, site: SiteId, device: DeviceId) -> Self {
        Self {
            broker: broker.into(),
            site,
            device,
            tls: None,
            username: None,
            password_file: None,
            telemetry_interval_secs: default_telemetry(),
            keep_alive_secs: default_keep_alive(),
            reconnect_min_ms: default_reconnect_min(),
            reconnect_max_secs: default_reconnect_max(),
            outbox_max_entries: default_outbox_max(),
            receipt_timeout_secs: default_receipt_timeout(),
        }
    }

    /// Checks every field (and reads the TLS files), as at start-up.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.broker_addr()?;
        let invalid = |field, problem: &str| {
            Err(ConfigError::Invalid {
                field,
                problem: problem.to_owned(),
            })
        };
        if !(1..=3600).contains(&self.telemetry_interval_secs) {
            return invalid("telemetry_interval_secs", "must be 1 to 3600 seconds");
        }
        if !(5..=3600).contains(&self.keep_alive_secs) {
            return invalid("keep_alive_secs", "must be 5 to 3600 seconds");
        }
        if self.reconnect_min_ms == 0
            || self.reconnect_min_ms > self.reconnect_max_secs.saturating_mul(1000)
        {
            return invalid(
                "reconnect_min_ms",
                "must be at least 1 and at most reconnect_max_secs x 1000",
            );
        }
        if !(1..=3600).contains(&self.receipt_timeout_secs) {
            return invalid("receipt_timeout_secs", "must be 1 to 3600 seconds");
        }
        if self.outbox_max_entries < 1000 {
            return invalid("outbox_max_entries", "must be at least 1000");
        }
        if self.password_file.is_some() && self.username.is_none() {
            return invalid("password_file", "needs `username`");
        }
        self.credentials()?;
        if self.tls.is_some() {
            self.rustls_config()?;
        }
        Ok(())
    }

    /// Host and port of the broker.
    pub fn broker_addr(&self) -> Result<(String, u16), ConfigError> {
        let bad = || ConfigError::Invalid {
            field: "broker",
            problem: format!(
                "{:?} is not host:port (e.g. \"fleet.region.example:8883\")",
                self.broker
            ),
        };
        let (host, port) = self.broker.rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok((host.to_owned(), port))
    }

    /// Keep-alive as a duration.
    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.keep_alive_secs)
    }

    /// Username and password, if configured.
    pub fn credentials(&self) -> Result<Option<(String, String)>, ConfigError> {
        let Some(user) = &self.username else {
            return Ok(None);
        };
        let password = match &self.password_file {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|source| ConfigError::Read {
                    field: "password_file",
                    path: p.clone(),
                    source,
                })?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
            None => String::new(),
        };
        Ok(Some((user.clone(), password)))
    }

    /// The rustls client configuration (ring provider), if TLS is configured.
    pub fn rustls_config(&self) -> Result<Option<Arc<rustls::ClientConfig>>, ConfigError> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certs("tls.ca", &tls.ca)? {
            roots
                .add(cert)
                .map_err(|e| ConfigError::Tls(format!("CA in {}: {e}", tls.ca.display())))?;
        }
        if roots.is_empty() {
            return Err(ConfigError::Tls(format!(
                "{} holds no certificate",
                tls.ca.display()
            )));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::Tls(e.to_string()))?
            .with_root_certificates(roots);
        let config = match (&tls.certificate, &tls.private_key) {
            (Some(c), Some(k)) => {
                let chain = read_certs("tls.certificate", c)?;
                let key = read_key(k)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    ConfigError::Tls(format!("client certificate {}: {e}", c.display()))
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(ConfigError::Invalid {
                    field: "tls",
                    problem: "set both `certificate` and `private_key`, or neither".into(),
                });
            }
        };
        Ok(Some(Arc::new(config)))
    }
}

fn read_certs(
    field: &'static str,
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ConfigError> {
    let pem = std::fs::read(path).map_err(|source| ConfigError::Read {
        field,
        path: path.to_owned(),
        source,
    })?;
    use rustls::pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> =
        rustls::pki_types::CertificateDer::pem_slice_iter(&pem).collect();
    let certs = certs
        .map_err(|e| ConfigError::Tls(format!("{}: not PEM certificates: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError::Tls(format!(
            "{}: no certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<rustls::pki_types::PrivateKeyDer<'static>, ConfigError> {
    let pem = std::fs::read(path).map_err(|source| ConfigError::Read {
        field: "tls.private_key",
        path: path.to_owned(),
        source,
    })?;
    use rustls::pki_types::pem::{self, PemObject};
    rustls::pki_types::PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            ConfigError::Tls(format!("{}: no private key found", path.display()))
        }
        e => ConfigError::Tls(format!("{}: {e}", path.display())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_toml_with_defaults_and_refuses_typos() {
        let c: ReporterConfig =
            toml_like(r#"{"broker":"127.0.0.1:1883","site":"s1","device":"d1"}"#);
        assert_eq!(c.telemetry_interval_secs, 10);
        c.validate().expect("valid");
        assert_eq!(
            c.broker_addr().expect("addr"),
            ("127.0.0.1".to_owned(), 1883)
        );
        let typo: Result<ReporterConfig, _> = serde_json::from_str(
            r#"{"broker":"h:1","site":"s1","device":"d1","telemetry_intervall_secs":5}"#,
        );
        assert!(typo.is_err());
        let bad_site: Result<ReporterConfig, _> =
            serde_json::from_str(r#"{"broker":"h:1","site":"S 1","device":"d1"}"#);
        assert!(bad_site.is_err());
    }

    #[test]
    fn refuses_bad_values_with_the_field_name() {
        let mut c: ReporterConfig = toml_like(r#"{"broker":"nohost","site":"s1","device":"d1"}"#);
        assert!(
            c.validate()
                .expect_err("no port")
                .to_string()
                .starts_with("fleet.broker:")
        );
        c.broker = "h:1883".into();
        c.telemetry_interval_secs = 0;
        assert!(
            c.validate()
                .expect_err("zero")
                .to_string()
                .contains("telemetry_interval_secs")
        );
        c.telemetry_interval_secs = 10;
        c.tls = Some(TlsFiles {
            ca: "/nonexistent/ca.pem".into(),
            certificate: None,
            private_key: None,
        });
        assert!(
            c.validate()
                .expect_err("missing")
                .to_string()
                .contains("/nonexistent/ca.pem")
        );
    }

    fn toml_like(json: &str) -> ReporterConfig {
        serde_json::from_str(json).expect("parses")
    }
}
