//! The fleet manager's configuration (`medgate-fleet.toml`). Every key has a default: no file at
//! all gives the zero-setup fleet (embedded broker, SQLite, HTTP on loopback).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// Where the SQLite database, the CA and the admin token live.
    pub data_dir: PathBuf,
    /// HTTP API.
    pub http: HttpSection,
    /// Database.
    pub database: DatabaseSection,
    /// MQTT broker.
    pub broker: BrokerSection,
    /// Telemetry storage.
    pub telemetry: TelemetrySection,
    /// Online/offline detection.
    pub devices: DevicesSection,
    /// Users, sessions and the first-run setup link.
    pub auth: AuthSection,
    /// atna (issue 13 part 4): where the audit log also goes (`[audit.syslog]`).
    pub audit: AuditSection,
    /// alerts (issue 13 part 3): thresholds and channels (`[alerts]`).
    pub alerts: crate::alerts::config::AlertsSection,
    /// ota (issue 14 part 2): bundle uploads and campaigns (`[updates]`).
    pub updates: UpdatesSection,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("medgate-fleet-data"),
            http: HttpSection::default(),
            database: DatabaseSection::default(),
            broker: BrokerSection::default(),
            telemetry: TelemetrySection::default(),
            devices: DevicesSection::default(),
            auth: AuthSection::default(),
            audit: AuditSection::default(),
            alerts: crate::alerts::config::AlertsSection::default(),
            updates: UpdatesSection::default(),
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Address of the REST API, SSE feed and /metrics.
    pub bind: SocketAddr,
    /// File with the admin bearer token; default `{data_dir}/admin-token` (created if missing).
    pub admin_token_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate (required beyond loopback: enrollment carries claim
    /// tokens, the console the admin token).
    pub tls: Option<HttpTls>,
}

/// `[http.tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTls {
    /// PEM certificate chain (its names must match the URL the appliances enroll with).
    pub certificate: PathBuf,
    /// PEM private key.
    pub private_key: PathBuf,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8800)),
            admin_token_file: None,
            tls: None,
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// A session ends this many minutes after its last request.
    pub session_idle_minutes: u64,
    /// A session ends this many hours after login, however active.
    pub session_absolute_hours: u64,
    /// The first-run setup link expires after this many hours (a new one is printed at every
    /// start while no user exists).
    pub setup_link_hours: u64,
    /// console-auth (issue 12): single sign-on by OpenID Connect (`[auth.oidc]`); the local
    /// password login stays as break-glass.
    pub oidc: Option<crate::auth::oidc::OidcSection>,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            session_idle_minutes: 30,
            session_absolute_hours: 12,
            setup_link_hours: 24,
            oidc: None,
        }
    }
}

/// atna (issue 13 part 4): `[audit]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// The hospital's audit repository: IHE ATNA over syslog (RFC 5424) over TLS (RFC 5425).
    pub syslog: Option<AuditSyslog>,
}

/// `[audit.syslog]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSyslog {
    /// Forward (default true when the section is present).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The repository, `host:port` (6514 is syslog over TLS).
    pub address: String,
    /// The name its certificate must carry; default: the host of `address`.
    pub server_name: Option<String>,
    /// PEM CA certificates to trust for the repository.
    pub ca: PathBuf,
    /// The fleet's client certificate (mutual TLS), with `private_key`.
    pub certificate: Option<PathBuf>,
    /// Its key.
    pub private_key: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

/// `[database]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSection {
    /// `sqlite://PATH` or `postgres://user@host:port/db`; default: SQLite in `{data_dir}/fleet.db`.
    pub url: Option<String>,
    /// Connections in the pool.
    pub max_connections: Option<u32>,
}

/// Embedded or external broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerMode {
    /// rumqttd inside this process: zero setup, no TLS, no per-topic ACL (loopback and demos).
    Embedded,
    /// Mosquitto or any MQTT 3.1.1 broker.
    External,
}

/// `[broker]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSection {
    /// `embedded` (default) or `external`.
    pub mode: BrokerMode,
    /// Embedded: where it listens. External: ignored.
    pub listen: SocketAddr,
    /// External: `host:port` to connect to.
    pub address: Option<String>,
    /// MQTT client id of this fleet replica (each replica needs its own).
    pub client_id: String,
    /// Subscribe with `$share/{group}/…` so replicas split the load (the broker must support shared
    /// subscriptions); without it every replica processes every message, idempotently.
    pub shared_group: Option<String>,
    /// TLS to an external broker.
    pub tls: Option<BrokerTls>,
    /// The broker's certificate revocation list (Mosquitto's `crlfile`, written by
    /// `broker-config`): the fleet rewrites it at start and whenever a device is revoked,
    /// decommissioned or approved again. Mosquitto reads it only at start: restart the broker
    /// after a revocation to cut the device off.
    pub crl_file: Option<PathBuf>,
}

impl Default for BrokerSection {
    fn default() -> Self {
        Self {
            mode: BrokerMode::Embedded,
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            address: None,
            client_id: "medgate-fleet".into(),
            shared_group: None,
            tls: None,
            crl_file: None,
        }
    }
}

/// `[broker.tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerTls {
    /// CA of the broker's certificate.
    pub ca: PathBuf,
    /// The fleet's client certificate (its common name is its broker username).
    pub certificate: PathBuf,
    /// Its key.
    pub private_key: PathBuf,
}

/// `[telemetry]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// Raw telemetry older than this is folded into buckets.
    pub raw_retention_hours: u64,
    /// Bucket width of the downsampled history.
    pub bucket_secs: u64,
    /// Buckets older than this are deleted.
    pub retention_days: u64,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        Self {
            raw_retention_hours: 24,
            bucket_secs: 300,
            retention_days: 90,
        }
    }
}

/// `[devices]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevicesSection {
    /// A device silent for this many telemetry intervals is marked offline.
    pub missed_heartbeats: u64,
    /// Lifetime of enrollment claim tokens, hours.
    pub claim_token_hours: u64,
    /// Lifetime of issued device certificates, days.
    pub certificate_days: u64,
    /// Base URL devices use to reach this API (printed in claim instructions).
    pub public_url: Option<String>,
}

impl Default for DevicesSection {
    fn default() -> Self {
        Self {
            missed_heartbeats: 3,
            claim_token_hours: 72,
            certificate_days: 365,
            public_url: None,
        }
    }
}

/// `[updates]` (ota, issue 14 part 2): bundle uploads and the offers campaigns make.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpdatesSection {
    /// The trust store uploads are verified with (`medgate-bundle trust init … --out` it);
    /// without it, uploads are refused.
    pub trust_file: Option<PathBuf>,
    /// The largest bundle accepted, MiB.
    pub max_bundle_mib: u64,
    /// The HTTPS base devices download from: offers name
    /// `{download_url}/device/v1/bundles/{sha256}`; without it, campaigns cannot be created.
    pub download_url: Option<medgate_contract::HttpsUrl>,
    /// Where this fleet serves the devices' downloads (HTTPS, device certificates required,
    /// its certificate from the fleet's CA). Default: none (another replica, or nothing).
    pub download_bind: Option<SocketAddr>,
    /// The names and addresses in that listener's certificate (what devices connect to, as in
    /// `download_url`). Default: `localhost`, `127.0.0.1`.
    pub download_hostnames: Vec<String>,
}

impl Default for UpdatesSection {
    fn default() -> Self {
        Self {
            trust_file: None,
            max_bundle_mib: 1024,
            download_url: None,
            download_bind: None,
            download_hostnames: vec!["localhost".into(), "127.0.0.1".into()],
        }
    }
}

/// The largest `[updates] max_bundle_mib` (16 GiB).
pub const MAX_BUNDLE_MIB: u64 = 16 * 1024;

impl UpdatesSection {
    /// The base the offers name: `download_url`, else `https://{download_bind}` when it is a
    /// single address.
    pub fn offer_base(&self) -> Option<medgate_contract::HttpsUrl> {
        if let Some(u) = &self.download_url {
            return Some(u.clone());
        }
        let b = self.download_bind.filter(|b| !b.ip().is_unspecified())?;
        medgate_contract::HttpsUrl::new(format!("https://{b}")).ok()
    }

    /// Its problems, one line each, naming the key.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(b) = self.download_bind {
            if b.ip().is_unspecified() && self.download_url.is_none() {
                p.push(format!(
                    "updates.download_url: set it (https://NAME:{}) — download_bind {b} listens on every address, so the fleet cannot tell devices which one to use",
                    b.port()
                ));
            }
            if self.download_hostnames.iter().any(|h| h.trim().is_empty())
                || self.download_hostnames.is_empty()
            {
                p.push("updates.download_hostnames: give the names and addresses devices connect to (e.g. [\"fleet.region.example\"])".into());
            }
        }
        if self.max_bundle_mib == 0 || self.max_bundle_mib > MAX_BUNDLE_MIB {
            p.push(format!(
                "updates.max_bundle_mib: give 1 to {MAX_BUNDLE_MIB} (MiB; the largest bundle accepted)"
            ));
        }
        if let Some(f) = &self.trust_file {
            match std::fs::read(f) {
                Err(e) => p.push(format!(
                    "updates.trust_file: cannot read {} ({e}); make it with `medgate-bundle trust init … --out {}`",
                    f.display(),
                    f.display()
                )),
                Ok(bytes) => {
                    if let Err(e) = medgate_bundle::TrustStore::from_json(&bytes) {
                        p.push(format!(
                            "updates.trust_file: {} is not a trust store ({e}); make it with `medgate-bundle trust init`",
                            f.display()
                        ));
                    }
                }
            }
        }
        p
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}; check the path and its permissions", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, an unknown key or a wrong type (the message names the key and the line).
    #[error("{}{message}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Parse {
        /// The file, when read from one.
        path: Option<PathBuf>,
        /// The parser's message.
        message: String,
    },
    /// Values that cannot work, one line each, naming its key.
    #[error("{}", problems.join("\n"))]
    Invalid {
        /// Every problem.
        problems: Vec<String>,
    },
}

impl ConfigError {
    /// Every problem, one line each.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid { problems } => problems.clone(),
            other => vec![other.to_string()],
        }
    }
}

impl FleetConfig {
    /// Reads and validates a file (`None`: the defaults); on failure, every problem
    /// ([`ConfigError::problems`]), each naming its key.
    pub fn load(path: Option<&Path>) -> Result<FleetConfig, ConfigError> {
        let config = match path {
            None => FleetConfig::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                Self::parse(&text).map_err(|e| match e {
                    ConfigError::Parse { message, .. } => ConfigError::Parse {
                        path: Some(p.to_owned()),
                        message,
                    },
                    other => other,
                })?
            }
        };
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid { problems })
        }
    }

    /// Parses TOML text (no validation). The error names the key and the line.
    pub fn parse(text: &str) -> Result<FleetConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: None,
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// Every problem, one line each.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        let a = &self.auth;
        for (key, v, max) in [
            ("auth.session_idle_minutes", a.session_idle_minutes, 24 * 60),
            (
                "auth.session_absolute_hours",
                a.session_absolute_hours,
                24 * 31,
            ),
            ("auth.setup_link_hours", a.setup_link_hours, 24 * 7),
        ] {
            if v == 0 || v > max {
                p.push(format!("{key}: give 1 to {max}"));
            }
        }
        if a.session_idle_minutes > a.session_absolute_hours * 60 {
            p.push(
                "auth.session_idle_minutes: longer than auth.session_absolute_hours; shorten it"
                    .into(),
            );
        }
        // console-auth (issue 12): `[auth.oidc]`, its client secret file read.
        if let Some(o) = &a.oidc
            && let Err(problems) = crate::auth::oidc::Settings::parse(o)
        {
            p.extend(problems);
        }
        if let Some(url) = &self.database.url
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            p.push(format!(
                "database.url: {url:?} is neither sqlite://PATH nor postgres://…"
            ));
        }
        if self.broker.mode == BrokerMode::External {
            match &self.broker.address {
                None => {
                    p.push("broker.address: required with mode = \"external\" (host:port)".into())
                }
                Some(a)
                    if a.rsplit_once(':')
                        .and_then(|(_, port)| port.parse::<u16>().ok())
                        .is_none() =>
                {
                    p.push(format!("broker.address: {a:?} is not host:port"))
                }
                Some(_) => {}
            }
        }
        if self.broker.mode == BrokerMode::Embedded && self.broker.tls.is_some() {
            p.push("broker.tls: the embedded broker has no TLS; use mode = \"external\" (Mosquitto) for TLS".into());
        }
        if let Some(tls) = &self.broker.tls {
            for (k, f) in [
                ("ca", &tls.ca),
                ("certificate", &tls.certificate),
                ("private_key", &tls.private_key),
            ] {
                if !f.is_file() {
                    p.push(format!("broker.tls.{k}: {} does not exist", f.display()));
                }
            }
        }
        if let Some(tls) = &self.http.tls {
            for (k, f) in [
                ("certificate", &tls.certificate),
                ("private_key", &tls.private_key),
            ] {
                if !f.is_file() {
                    p.push(format!("http.tls.{k}: {} does not exist", f.display()));
                }
            }
        } else if !self.http.bind.ip().is_loopback() {
            p.push(format!(
                "http.bind: {} is reachable from the network without TLS; add [http.tls] (certificate, private_key) — enrollment and the console carry secrets",
                self.http.bind
            ));
        }
        if self.broker.crl_file.is_some() && self.broker.mode == BrokerMode::Embedded {
            p.push(
                "broker.crl_file: only for an external broker (mode = \"external\"); the embedded broker has no TLS".into(),
            );
        }
        p.extend(self.updates.validate());
        if self.broker.client_id.is_empty() || self.broker.client_id.len() > 23 {
            p.push("broker.client_id: 1-23 characters (MQTT 3.1.1)".into());
        }
        if let Some(g) = &self.broker.shared_group
            && (g.is_empty() || g.contains(['/', '+', '#']))
        {
            p.push("broker.shared_group: a name without '/', '+' or '#'".into());
        }
        if self.telemetry.bucket_secs == 0
            || self.telemetry.raw_retention_hours == 0
            || self.telemetry.retention_days == 0
        {
            p.push(
                "telemetry: raw_retention_hours, bucket_secs and retention_days must be positive"
                    .into(),
            );
        }
        // atna (issue 13 part 4): `[audit.syslog]`.
        if let Some(a) = self.audit.syslog.as_ref().filter(|a| a.enabled) {
            let port_ok = a
                .address
                .rsplit_once(':')
                .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok_and(|n| n > 0));
            if !port_ok {
                p.push(format!(
                    "audit.syslog.address: {:?} is not host:port (e.g. \"audit.hospital.example:6514\")",
                    a.address
                ));
            }
            if !a.ca.is_file() {
                p.push(format!(
                    "audit.syslog.ca: {} does not exist",
                    a.ca.display()
                ));
            }
            match (&a.certificate, &a.private_key) {
                (Some(c), Some(k)) => {
                    for (key, f) in [("certificate", c), ("private_key", k)] {
                        if !f.is_file() {
                            p.push(format!(
                                "audit.syslog.{key}: {} does not exist",
                                f.display()
                            ));
                        }
                    }
                }
                (None, None) => {}
                _ => p.push(
                    "audit.syslog: give both certificate and private_key (mutual TLS), or neither"
                        .into(),
                ),
            }
        }
        // alerts (issue 13 part 3): `[alerts]`.
        p.extend(self.alerts.validate());
        if self.devices.missed_heartbeats == 0 {
            p.push("devices.missed_heartbeats: at least 1".into());
        }
        if self.devices.claim_token_hours == 0 || self.devices.certificate_days == 0 {
            p.push("devices: claim_token_hours and certificate_days must be positive".into());
        }
        p
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(u) => u.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("fleet.db").display()
            ),
        }
    }

    /// The admin token file in effect.
    pub fn admin_token_file(&self) -> PathBuf {
        self.http
            .admin_token_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("admin-token"))
    }
}

/// The documented example configuration (`medgate-fleet config example`).
pub const EXAMPLE: &str = include_str!("../medgate-fleet.example.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_typos_are_refused() {
        assert!(FleetConfig::default().validate().is_empty());
        assert!(toml::from_str::<FleetConfig>("[http]\nbnid = \"x\"").is_err());
        let c: FleetConfig = toml::from_str("[broker]\nmode = \"external\"").expect("parses");
        assert!(c.validate().iter().any(|p| p.starts_with("broker.address")));
        let c: FleetConfig = toml::from_str("[database]\nurl = \"mysql://x\"").expect("parses");
        assert!(c.validate().iter().any(|p| p.starts_with("database.url")));
        let c: FleetConfig = toml::from_str("[broker]\ncrl_file = \"/x/crl.pem\"").expect("parses");
        assert!(
            c.validate()
                .iter()
                .any(|p| p.starts_with("broker.crl_file"))
        );
    }

    #[test]
    fn audit_syslog_is_checked_key_by_key() {
        let c: FleetConfig = toml::from_str(
            "[audit.syslog]\naddress = \"audit\"\nca = \"/nonexistent/ca.pem\"\ncertificate = \"/x.pem\"",
        )
        .expect("parses");
        assert_eq!(
            c.validate(),
            vec![
                "audit.syslog.address: \"audit\" is not host:port (e.g. \"audit.hospital.example:6514\")".to_string(),
                "audit.syslog.ca: /nonexistent/ca.pem does not exist".to_string(),
                "audit.syslog: give both certificate and private_key (mutual TLS), or neither"
                    .to_string(),
            ]
        );
        let off: FleetConfig =
            toml::from_str("[audit.syslog]\nenabled = false\naddress = \"x\"\nca = \"/no\"")
                .expect("parses");
        assert!(off.validate().is_empty());
        assert!(toml::from_str::<FleetConfig>("[audit.syslog]\nadress = \"x:1\"").is_err());
    }

    /// The documented example, with its example TLS paths pointing at files that exist.
    fn example_in(dir: &Path) -> String {
        let mut text = EXAMPLE.to_string();
        for name in ["ca.crt", "fleet.crt", "fleet.key"] {
            let file = dir.join(name);
            std::fs::write(&file, "PEM").expect("write");
            text = text.replace(
                &format!("\"/etc/medgate/broker/{name}\""),
                &format!("{:?}", file.display().to_string()),
            );
        }
        text
    }

    #[test]
    fn the_documented_example_parses_and_validates() {
        let c = FleetConfig::parse(EXAMPLE).expect("example parses");
        assert_eq!(c.broker.mode, BrokerMode::External);
        // As shipped, only its example TLS files (absent here) are reported, each with its key.
        let problems = c.validate();
        assert!(
            !problems.is_empty() && problems.iter().all(|p| p.starts_with("broker.tls.")),
            "{problems:?}"
        );
        // With them present, the loader accepts it.
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("fleet.toml");
        std::fs::write(&file, example_in(dir.path())).expect("write");
        let c = FleetConfig::load(Some(&file)).expect("example valid");
        assert_eq!(
            c.database_url(),
            "postgres://medgate@db.region.example:5432/medgate"
        );
        assert_eq!(
            c.broker.address.as_deref(),
            Some("mqtt.region.example:8883")
        );
    }

    #[test]
    fn the_example_documents_every_key() {
        // Every key of the configuration, set or commented out.
        for key in [
            "data_dir",
            "[http]",
            "bind",
            "admin_token_file",
            "[http.tls]",
            "certificate",
            "private_key",
            "[database]",
            "url",
            "max_connections",
            "[broker]",
            "mode",
            "listen",
            "address",
            "client_id",
            "shared_group",
            "crl_file",
            "[broker.tls]",
            "ca",
            "[telemetry]",
            "raw_retention_hours",
            "bucket_secs",
            "retention_days",
            "[devices]",
            "missed_heartbeats",
            "claim_token_hours",
            "certificate_days",
            "public_url",
            "[auth]",
            "session_idle_minutes",
            "session_absolute_hours",
            "setup_link_hours",
            "[auth.oidc]",
            "name",
            "issuer",
            "client_id",
            "client_secret_file",
            "redirect_url",
            "scopes",
            "algorithms",
            "groups_claim",
            "username_claim",
            "post_logout_redirect_url",
            "ca_file",
            "[[auth.oidc.roles]]",
            "group",
            "role",
            "sites",
            // alerts (issue 13 part 3)
            "[alerts]",
            "enabled",
            "evaluate_secs",
            "offline_for_secs",
            "archive_unreachable_for_secs",
            "oldest_queued_warning_secs",
            "oldest_queued_critical_secs",
            "oldest_queued_for_secs",
            "disk_warning_percent",
            "disk_critical_percent",
            "disk_for_secs",
            "quarantine_growth_objects",
            "quarantine_window_secs",
            "certificate_warning_days",
            "certificate_critical_days",
            "update_failed_for_secs",
            "max_attempts",
            "[alerts.email]",
            "server",
            "server_name",
            "from",
            "to",
            "username",
            "password_file",
            "[alerts.webhook]",
            "secret_file",
            // ota (issue 14 part 2)
            "[updates]",
            "trust_file",
            "max_bundle_mib",
            "download_url",
        ] {
            let documented = EXAMPLE.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l == key || l.starts_with(&format!("{key} = "))
            });
            assert!(documented, "{key} is not in medgate-fleet.example.toml");
        }
        // Uncommenting every optional key still gives a configuration that parses.
        let all: String = EXAMPLE
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with('[')
                        || rest.split_once(" = ").is_some_and(|(k, _)| {
                            !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                        }) =>
                {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        FleetConfig::parse(&all).expect("every key, uncommented, parses");
    }

    #[test]
    fn updates_are_checked_key_by_key() {
        let c: FleetConfig = toml::from_str(
            "[updates]\ntrust_file = \"/nonexistent/trust.json\"\nmax_bundle_mib = 0",
        )
        .expect("parses");
        assert_eq!(
            c.validate(),
            vec![
                "updates.max_bundle_mib: give 1 to 16384 (MiB; the largest bundle accepted)"
                    .to_string(),
                "updates.trust_file: cannot read /nonexistent/trust.json (No such file or directory (os error 2)); make it with `medgate-bundle trust init … --out /nonexistent/trust.json`".to_string(),
            ]
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("trust.json");
        std::fs::write(&f, "{}").expect("write");
        let c: FleetConfig = toml::from_str(&format!(
            "[updates]\ntrust_file = {:?}",
            f.display().to_string()
        ))
        .expect("parses");
        assert!(
            c.validate()[0].starts_with("updates.trust_file: ")
                && c.validate()[0].contains("is not a trust store"),
            "{:?}",
            c.validate()
        );
        let e = toml::from_str::<FleetConfig>("[updates]\ndownload_url = \"http://fleet\"")
            .expect_err("not https");
        assert!(e.to_string().contains("download_url"), "{e}");
        let c: FleetConfig =
            toml::from_str("[updates]\ndownload_url = \"https://fleet.region.example:8443/\"")
                .expect("parses");
        assert_eq!(
            c.updates.download_url.map(String::from).as_deref(),
            Some("https://fleet.region.example:8443")
        );
    }

    #[test]
    fn a_file_with_problems_names_each_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("fleet.toml");
        std::fs::write(
            &file,
            "[broker]\nmode = \"external\"\nclient_id = \"\"\n[devices]\nmissed_heartbeats = 0\n",
        )
        .expect("write");
        let problems = FleetConfig::load(Some(&file))
            .expect_err("invalid")
            .problems();
        for key in [
            "broker.address",
            "broker.client_id",
            "devices.missed_heartbeats",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key}: {problems:?}"
            );
        }
        std::fs::write(&file, "[http]\nbnid = \"x\"\n").expect("write");
        let problems = FleetConfig::load(Some(&file)).expect_err("typo").problems();
        assert!(problems[0].contains("bnid"), "{problems:?}");
    }
}
