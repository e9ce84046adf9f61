//! The appliance's TOML configuration: structure, defaults and validation with exact messages.
//! Pure: [`Config::parse`] and [`Config::validate`] touch no file besides the ones the config names
//! (certificate paths are checked for existence by `validate_files`).

use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identity and storage.
    pub appliance: ApplianceSection,
    /// The DICOM listener.
    pub listener: ListenerSection,
    /// Spool watermarks and retention.
    #[serde(default)]
    pub spool: SpoolSection,
    /// Retry policy.
    #[serde(default)]
    pub forward: ForwardSection,
    /// Archives to forward to.
    #[serde(default, rename = "destination")]
    pub destinations: Vec<DestinationSection>,
    /// Local status endpoint.
    #[serde(default)]
    pub status: StatusSection,
    /// The box: hardware profile, watchdog, LEDs.
    #[serde(default)]
    pub hardware: HardwareSection,
    /// Coercion and routing rules (docs/rules.md). Absent: objects are stored as received and
    /// go to every destination.
    #[serde(default)]
    pub rules: medgate_rules::RulesConfig,
    /// Storage Commitment Push Model SCP (off when absent).
    #[serde(default)]
    pub commitment: Option<crate::workflow::config::CommitmentSection>,
    /// Modality Worklist proxy (off when absent).
    #[serde(default)]
    pub worklist: Option<crate::workflow::config::WorklistSection>,
    /// Quality checks at ingest (off when absent).
    #[serde(default)]
    pub qc: Option<crate::workflow::config::QcSection>,
    /// Reporting to the fleet manager over MQTT, written by hand (see also
    /// `appliance.fleet_enrollment`). Absent: no reporting.
    #[serde(default)]
    pub fleet: Option<medgate_report::ReporterConfig>,
}

/// `[hardware]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HardwareSection {
    /// A built-in profile name or the path of a profile TOML; none on a plain server.
    pub profile: Option<String>,
    /// Where /sys and /dev are (tests use a fake tree).
    pub sysfs_root: PathBuf,
}

impl Default for HardwareSection {
    fn default() -> Self {
        HardwareSection {
            profile: None,
            sysfs_root: PathBuf::from("/"),
        }
    }
}

/// `[appliance]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplianceSection {
    /// Display name.
    pub name: String,
    /// Spool and index directory.
    pub data_dir: PathBuf,
    /// The `[fleet]` settings written by `medgate-appliance enroll` (a TOML file holding the
    /// table's keys). Until the file exists the appliance runs without reporting.
    #[serde(default)]
    pub fleet_enrollment: Option<PathBuf>,
}

/// `[listener]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    /// Our AE title.
    pub ae_title: String,
    /// Plain DICOM address.
    #[serde(deserialize_with = "de_bind")]
    pub bind: SocketAddr,
    /// DICOM TLS address.
    #[serde(default, deserialize_with = "de_bind_opt")]
    pub tls_bind: Option<SocketAddr>,
    /// Concurrent associations.
    #[serde(default = "default_max_associations")]
    pub max_associations: usize,
    /// Largest P-DATA PDU we accept.
    #[serde(default = "default_max_pdu")]
    pub max_pdu_bytes: u32,
    /// ARTIM timeout.
    #[serde(default = "default_artim")]
    pub artim_timeout_secs: u64,
    /// Idle timeout.
    #[serde(default = "default_idle")]
    pub idle_timeout_secs: u64,
    /// Called AE titles we answer to.
    #[serde(default)]
    pub allowed_called_ae_titles: Vec<String>,
    /// Calling AE titles accepted.
    #[serde(default)]
    pub allowed_calling_ae_titles: Vec<String>,
    /// Source networks accepted.
    #[serde(default)]
    pub allowed_networks: Vec<String>,
    /// Private storage SOP classes accepted.
    #[serde(default)]
    pub private_sop_classes: Vec<String>,
    /// Transfer syntaxes accepted.
    #[serde(default)]
    pub transfer_syntaxes: Vec<String>,
    /// TLS material for `tls_bind`.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
}

/// `[listener.tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// PEM certificate chain.
    pub certificate: PathBuf,
    /// PEM private key.
    pub private_key: PathBuf,
    /// PEM CA bundle; if set, clients must present a certificate it signed.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// `[spool]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolSection {
    /// Refuse above this use.
    pub high_watermark_percent: f64,
    /// Evict down to this use.
    pub low_watermark_percent: f64,
    /// Optional cap on the spool's bytes.
    pub max_bytes: u64,
    /// Keep confirmed objects this long.
    pub retention_hours: u64,
}

impl Default for SpoolSection {
    fn default() -> Self {
        SpoolSection {
            high_watermark_percent: 90.0,
            low_watermark_percent: 80.0,
            max_bytes: 0,
            retention_hours: 168,
        }
    }
}

/// `[forward]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardSection {
    /// First backoff.
    pub initial_backoff_ms: u64,
    /// Backoff ceiling.
    pub max_backoff_secs: u64,
}

impl Default for ForwardSection {
    fn default() -> Self {
        ForwardSection {
            initial_backoff_ms: 1000,
            max_backoff_secs: 300,
        }
    }
}

/// Kind of destination.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DestinationKind {
    /// DICOM C-STORE.
    Dimse,
    /// DICOMweb STOW-RS.
    Stow,
}

/// `[[destination]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationSection {
    /// Unique name.
    pub name: String,
    /// Protocol.
    pub kind: DestinationKind,
    /// host:port (dimse).
    #[serde(default)]
    pub address: Option<String>,
    /// Called AE title (dimse).
    #[serde(default)]
    pub called_ae_title: Option<String>,
    /// Calling AE title (dimse); default: the listener's.
    #[serde(default)]
    pub calling_ae_title: Option<String>,
    /// Base URL (stow).
    #[serde(default)]
    pub url: Option<String>,
    /// Parallel associations or requests.
    #[serde(default = "default_parallel")]
    pub parallel: usize,
    /// Timeout for connect and each response.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// HTTP basic user (stow).
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the HTTP basic password (stow).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// File holding a bearer token (stow).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// TLS to the destination.
    #[serde(default)]
    pub tls: Option<DestinationTls>,
}

/// `[destination.tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationTls {
    /// PEM CA bundle to trust.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// PEM client private key.
    #[serde(default)]
    pub private_key: Option<PathBuf>,
    /// Name to verify the server certificate against.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// `[status]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusSection {
    /// Address of the local HTTP endpoint.
    #[serde(deserialize_with = "de_bind")]
    pub bind: SocketAddr,
    /// The status API has no authentication: binding it beyond loopback must be said
    /// deliberately with `allow_unauthenticated_remote = true`.
    pub allow_unauthenticated_remote: bool,
}

impl Default for StatusSection {
    fn default() -> Self {
        StatusSection {
            bind: SocketAddr::from(([127, 0, 0, 1], 8104)),
            allow_unauthenticated_remote: false,
        }
    }
}

/// Parses an address to listen on: an IP address and a port, with a message that says what is
/// wrong (a host name, a port above 65535, no port).
pub fn parse_bind(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!(
            "{s:?} has no port: write an IP address and a port, e.g. \"0.0.0.0:11112\""
        ));
    };
    let port_problem = port_problem(port);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<IpAddr>().is_err() {
        return Err(format!(
            "{host:?} is not an IP address: a listening address must be one of this box's addresses (or 0.0.0.0 / [::] for all), not a host name{}",
            port_problem
                .map(|p| format!("; and {p}"))
                .unwrap_or_default()
        ));
    }
    Err(port_problem.unwrap_or_else(|| format!("{s:?} is not an IP address and port")))
}

/// What is wrong with a port number, if anything (0 included: see the callers).
fn port_problem(port: &str) -> Option<String> {
    match port.parse::<u64>() {
        Err(_) => Some(format!("the port {port:?} is not a number")),
        Ok(p) if p > 65_535 => Some(format!("the port {p} is above 65535")),
        Ok(_) => None,
    }
}

fn de_bind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    parse_bind(&s).map_err(serde::de::Error::custom)
}

fn de_bind_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    de_bind(d).map(Some)
}

/// Whether two listening addresses would take the same port on some address.
fn binds_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn default_max_associations() -> usize {
    32
}
fn default_max_pdu() -> u32 {
    262_144
}
fn default_artim() -> u64 {
    30
}
fn default_idle() -> u64 {
    300
}
fn default_parallel() -> usize {
    2
}
fn default_timeout() -> u64 {
    60
}

/// A CIDR network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses "10.0.0.0/8", "fd00::/8" or a bare address (a /32 or /128).
    pub fn parse(s: &str) -> Result<Network, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP network (expected e.g. \"10.20.0.0/16\")"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has a prefix length outside 0..={max}"))?,
            None => max,
        };
        Ok(Network { addr, prefix })
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

/// A validation failure: the key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Errors loading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown/mistyped keys.
    #[error("configuration {path} is not valid: {message}")]
    Syntax {
        /// The path.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The values are inconsistent.
    #[error("configuration {path} has {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The path.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

impl Config {
    /// Parses TOML text. A required table that is missing is named as such (with a hint when
    /// its keys ended up in the table above, as when the header line was forgotten).
    pub fn parse(text: &str) -> Result<Config, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut missing = Vec::new();
        for (name, keys) in [
            ("appliance", &["name", "data_dir"][..]),
            ("listener", &["ae_title", "bind"][..]),
        ] {
            if table.contains_key(name) {
                continue;
            }
            let under = table.iter().find_map(|(t, v)| {
                let v = v.as_table()?;
                keys.iter()
                    .any(|k| v.contains_key(*k))
                    .then_some(t.as_str())
            });
            missing.push(match under {
                Some(t) => format!(
                    "missing [{name}] table: its keys ({}) are under [{t}]; is the `[{name}]` header line missing?",
                    keys.join(", ")
                ),
                None => format!(
                    "missing [{name}] table (with at least {}); see `medgate-appliance config example`",
                    keys.join(" and ")
                ),
            });
        }
        if !missing.is_empty() {
            return Err(missing.join("\n"));
        }
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Reads, parses and validates a file (including that the files it names exist).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg = Config::parse(&text).map_err(|message| ConfigError::Syntax {
            path: path.to_path_buf(),
            message,
        })?;
        let mut problems = cfg.validate();
        problems.extend(cfg.validate_files());
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            })
        }
    }

    /// Checks every value; returns all problems at once.
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut bad = |key: &str, message: String| {
            p.push(Problem {
                key: key.to_string(),
                message,
            })
        };
        if self.appliance.name.trim().is_empty() {
            bad("appliance.name", "must not be empty".into());
        }
        if !self.appliance.data_dir.is_absolute() {
            bad(
                "appliance.data_dir",
                format!("{:?} must be an absolute path", self.appliance.data_dir),
            );
        }
        if let Some(f) = &self.fleet {
            if self.appliance.fleet_enrollment.is_some() {
                bad(
                    "appliance.fleet_enrollment",
                    "use either [fleet] or fleet_enrollment (the file `medgate-appliance enroll` writes), not both".into(),
                );
            }
            if let Err(e) = f.validate() {
                let text = e.to_string();
                let (key, message) = text.split_once(": ").unwrap_or(("fleet", &text));
                bad(key, message.to_string());
            }
        }
        if let Some(f) = &self.appliance.fleet_enrollment {
            if !f.is_absolute() {
                bad(
                    "appliance.fleet_enrollment",
                    format!("{f:?} must be an absolute path"),
                );
            }
        }
        let l = &self.listener;
        if let Err(e) = medgate_dicom::validate_ae_title(&l.ae_title) {
            bad("listener.ae_title", e);
        }
        for (i, ae) in l.allowed_called_ae_titles.iter().enumerate() {
            if let Err(e) = medgate_dicom::validate_ae_title(ae) {
                bad(&format!("listener.allowed_called_ae_titles[{i}]"), e);
            }
        }
        for (i, ae) in l.allowed_calling_ae_titles.iter().enumerate() {
            if let Err(e) = medgate_dicom::validate_ae_title(ae) {
                bad(&format!("listener.allowed_calling_ae_titles[{i}]"), e);
            }
        }
        for (i, n) in l.allowed_networks.iter().enumerate() {
            if let Err(e) = Network::parse(n) {
                bad(&format!("listener.allowed_networks[{i}]"), e);
            }
        }
        for (i, uid) in l.private_sop_classes.iter().enumerate() {
            if let Err(e) = medgate_dicom::validate_uid(uid) {
                bad(&format!("listener.private_sop_classes[{i}]"), e);
            }
        }
        for (i, uid) in l.transfer_syntaxes.iter().enumerate() {
            if let Err(e) = medgate_dicom::validate_uid(uid) {
                bad(&format!("listener.transfer_syntaxes[{i}]"), e);
            } else if !medgate_dicom::uids::is_standard_transfer_syntax(uid) {
                bad(
                    &format!("listener.transfer_syntaxes[{i}]"),
                    format!(
                        "{uid:?} is not a transfer syntax the DICOM standard defines (PS3.6 Annex A); leave the list empty to accept every standard one"
                    ),
                );
            }
        }
        if !(1..=4096).contains(&l.max_associations) {
            bad(
                "listener.max_associations",
                format!("{} must be between 1 and 4096", l.max_associations),
            );
        }
        if !(16_384..=16_777_216).contains(&l.max_pdu_bytes) {
            bad(
                "listener.max_pdu_bytes",
                format!(
                    "{} must be between 16384 and 16777216 (16 MiB)",
                    l.max_pdu_bytes
                ),
            );
        }
        if !(1..=3600).contains(&l.artim_timeout_secs) {
            bad(
                "listener.artim_timeout_secs",
                "must be between 1 and 3600".into(),
            );
        }
        if !(1..=86_400).contains(&l.idle_timeout_secs) {
            bad(
                "listener.idle_timeout_secs",
                "must be between 1 and 86400".into(),
            );
        }
        match (&l.tls_bind, &l.tls) {
            (Some(_), None) => bad(
                "listener.tls_bind",
                "is set but [listener.tls] is missing: add certificate and private_key".into(),
            ),
            (None, Some(_)) => bad(
                "listener.tls",
                "is set but listener.tls_bind is missing: say where DICOM TLS listens (e.g. \"0.0.0.0:2762\")".into(),
            ),
            _ => {}
        }
        if l.bind.port() == 0 {
            bad(
                "listener.bind",
                format!(
                    "{}: port 0 would listen on a random port no modality is configured for; use 104 or 11112",
                    l.bind
                ),
            );
        }
        if let Some(tls) = l.tls_bind {
            if tls.port() == 0 {
                bad(
                    "listener.tls_bind",
                    format!("{tls}: port 0 would listen on a random port; use 2762"),
                );
            } else if binds_overlap(tls, l.bind) {
                bad(
                    "listener.tls_bind",
                    format!(
                        "{tls} takes the same port as listener.bind ({}); give DICOM TLS its own port (e.g. 2762)",
                        l.bind
                    ),
                );
            }
        }
        let st = &self.status;
        for (key, other) in [
            ("listener.bind", Some(l.bind)),
            ("listener.tls_bind", l.tls_bind),
        ] {
            if let Some(other) = other {
                if binds_overlap(st.bind, other) {
                    bad(
                        "status.bind",
                        format!(
                            "{} takes the same port as {key} ({other}); the status endpoint needs its own port (default 127.0.0.1:8104)",
                            st.bind
                        ),
                    );
                }
            }
        }
        if !st.bind.ip().is_loopback() && !st.allow_unauthenticated_remote {
            bad(
                "status.bind",
                format!(
                    "{} is reachable beyond this box, but the status API has no authentication (anyone on the network could read it and retry or requeue objects); bind it to 127.0.0.1, or set status.allow_unauthenticated_remote = true if a firewall restricts it deliberately",
                    st.bind
                ),
            );
        }
        let s = &self.spool;
        if !(1.0..=99.9).contains(&s.high_watermark_percent) {
            bad(
                "spool.high_watermark_percent",
                "must be between 1 and 99.9".into(),
            );
        }
        if !(0.0..s.high_watermark_percent).contains(&s.low_watermark_percent) {
            bad(
                "spool.low_watermark_percent",
                format!(
                    "{} must be below spool.high_watermark_percent ({})",
                    s.low_watermark_percent, s.high_watermark_percent
                ),
            );
        }
        if self.forward.initial_backoff_ms == 0 || self.forward.initial_backoff_ms > 600_000 {
            bad(
                "forward.initial_backoff_ms",
                "must be between 1 and 600000".into(),
            );
        }
        if self.forward.max_backoff_secs * 1000 < self.forward.initial_backoff_ms {
            bad(
                "forward.max_backoff_secs",
                "must not be below forward.initial_backoff_ms".into(),
            );
        }
        if let Some(profile) = &self.hardware.profile {
            let is_path = profile.contains('/') || profile.ends_with(".toml");
            if !is_path && !medgate_hardware::profile::builtin_names().contains(&profile.as_str()) {
                bad(
                    "hardware.profile",
                    format!(
                        "{profile:?} is neither a built-in profile ({}) nor a path to a profile file",
                        medgate_hardware::profile::builtin_names().join(", ")
                    ),
                );
            }
        }
        if self.destinations.is_empty() {
            bad(
                "destination",
                "no [[destination]]: objects would stay on the appliance forever; add the regional archive".into(),
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, d) in self.destinations.iter().enumerate() {
            let k = |f: &str| format!("destination[{i}].{f}");
            if d.name.is_empty()
                || !d
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                bad(
                    &k("name"),
                    format!("{:?} must be lowercase letters, digits and '-'", d.name),
                );
            }
            if !names.insert(d.name.clone()) {
                bad(&k("name"), format!("{:?} is used twice", d.name));
            }
            if !(1..=64).contains(&d.parallel) {
                bad(&k("parallel"), "must be between 1 and 64".into());
            }
            if !(1..=3600).contains(&d.timeout_secs) {
                bad(&k("timeout_secs"), "must be between 1 and 3600".into());
            }
            match d.kind {
                DestinationKind::Dimse => {
                    match d.address.as_deref() {
                        None => bad(
                            &k("address"),
                            "is required for kind = \"dimse\" (host:port)".into(),
                        ),
                        Some(a) => {
                            if let Err(e) = parse_host_port(a) {
                                bad(&k("address"), e);
                            }
                        }
                    }
                    match d.called_ae_title.as_deref() {
                        None => bad(
                            &k("called_ae_title"),
                            "is required for kind = \"dimse\"".into(),
                        ),
                        Some(ae) => {
                            if let Err(e) = medgate_dicom::validate_ae_title(ae) {
                                bad(&k("called_ae_title"), e);
                            }
                        }
                    }
                    if let Some(ae) = d.calling_ae_title.as_deref() {
                        if let Err(e) = medgate_dicom::validate_ae_title(ae) {
                            bad(&k("calling_ae_title"), e);
                        }
                    }
                    if d.url.is_some() {
                        bad(
                            &k("url"),
                            "is for kind = \"stow\"; a dimse destination uses address".into(),
                        );
                    }
                }
                DestinationKind::Stow => {
                    match d.url.as_deref() {
                        None => bad(
                            &k("url"),
                            "is required for kind = \"stow\" (the DICOMweb base URL)".into(),
                        ),
                        Some(u) => {
                            if !(u.starts_with("http://") || u.starts_with("https://")) {
                                bad(
                                    &k("url"),
                                    format!("{u:?} must start with http:// or https://"),
                                );
                            }
                        }
                    }
                    if d.address.is_some() || d.called_ae_title.is_some() {
                        bad(
                            &k("address"),
                            "address and called_ae_title are for kind = \"dimse\"".into(),
                        );
                    }
                    if d.username.is_some() != d.password_file.is_some() {
                        bad(
                            &k("username"),
                            "username and password_file go together".into(),
                        );
                    }
                    if d.username.is_some() && d.bearer_token_file.is_some() {
                        bad(
                            &k("bearer_token_file"),
                            "use either basic auth or a bearer token, not both".into(),
                        );
                    }
                }
            }
            if let Some(t) = &d.tls {
                if t.certificate.is_some() != t.private_key.is_some() {
                    bad(
                        &k("tls.certificate"),
                        "certificate and private_key go together".into(),
                    );
                }
            }
        }
        p.extend(crate::workflow::config::validate(self));
        p.extend(crate::rules::validate(self));
        p
    }

    /// Checks that every file the configuration names can be read.
    pub fn validate_files(&self) -> Vec<Problem> {
        let mut files: Vec<(String, &PathBuf)> = Vec::new();
        if let Some(t) = &self.listener.tls {
            files.push(("listener.tls.certificate".into(), &t.certificate));
            files.push(("listener.tls.private_key".into(), &t.private_key));
            if let Some(ca) = &t.client_ca {
                files.push(("listener.tls.client_ca".into(), ca));
            }
        }
        for (i, d) in self.destinations.iter().enumerate() {
            for (f, v) in [
                ("password_file", &d.password_file),
                ("bearer_token_file", &d.bearer_token_file),
            ] {
                if let Some(v) = v {
                    files.push((format!("destination[{i}].{f}"), v));
                }
            }
            if let Some(t) = &d.tls {
                for (f, v) in [
                    ("tls.ca", &t.ca),
                    ("tls.certificate", &t.certificate),
                    ("tls.private_key", &t.private_key),
                ] {
                    if let Some(v) = v {
                        files.push((format!("destination[{i}].{f}"), v));
                    }
                }
            }
        }
        files
            .into_iter()
            .filter_map(|(key, path)| {
                std::fs::metadata(path).err().map(|e| Problem {
                    key,
                    message: format!("cannot read {}: {e}", path.display()),
                })
            })
            .collect()
    }

    /// The calling AE title a destination uses.
    pub fn calling_ae_for<'a>(&'a self, d: &'a DestinationSection) -> &'a str {
        d.calling_ae_title
            .as_deref()
            .unwrap_or(&self.listener.ae_title)
    }
}

/// Splits "host:port" (also "[v6]:port").
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    parse_host_port(s).ok()
}

/// [`split_host_port`] with a message that says what is wrong.
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!(
            "{s:?} must be host:port (e.g. \"pacs.example.org:104\")"
        ));
    };
    if let Some(p) = port_problem(port) {
        return Err(format!("{s:?}: {p}"));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("{s:?}: the port {port:?} is not a number"))?;
    if port == 0 {
        return Err(format!("{s:?}: port 0 cannot be called"));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{s:?} has no host before the port"));
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../medgate-appliance.example.toml");

    #[test]
    fn example_is_valid() {
        let cfg = Config::parse(EXAMPLE).expect("example parses");
        assert_eq!(cfg.validate(), vec![]);
        assert_eq!(cfg.destinations.len(), 1);
        assert_eq!(cfg.listener.max_pdu_bytes, 262_144);
    }

    #[test]
    fn typos_are_errors() {
        let text = EXAMPLE.replace("max_associations", "max_asociations");
        let e = Config::parse(&text).expect_err("unknown key");
        assert!(e.contains("unknown field `max_asociations`"), "{e}");
    }

    #[test]
    fn every_problem_is_reported() {
        let text = EXAMPLE
            .replace(
                "ae_title = \"MEDGATE\"",
                "ae_title = \"THIS_AE_IS_FAR_TOO_LONG\"",
            )
            .replace("low_watermark_percent = 80", "low_watermark_percent = 95")
            .replace("parallel = 2", "parallel = 0")
            .replace(
                "allowed_networks = []",
                "allowed_networks = [\"10.0.0.0/33\"]",
            );
        let cfg = Config::parse(&text).expect("parses");
        let keys: Vec<String> = cfg.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            vec![
                "listener.ae_title",
                "listener.allowed_networks[0]",
                "spool.low_watermark_percent",
                "destination[0].parallel"
            ]
        );
    }

    #[test]
    fn networks() {
        let n = Network::parse("10.20.0.0/16").expect("net");
        assert!(n.contains("10.20.3.4".parse().expect("ip")));
        assert!(!n.contains("10.21.3.4".parse().expect("ip")));
        assert!(n.contains("::ffff:10.20.0.1".parse().expect("ip")));
        assert!(
            Network::parse("127.0.0.1")
                .expect("host")
                .contains("127.0.0.1".parse().expect("ip"))
        );
        assert!(
            Network::parse("0.0.0.0/0")
                .expect("any")
                .contains("8.8.8.8".parse().expect("ip"))
        );
        assert!(
            Network::parse("fd00::/8")
                .expect("v6")
                .contains("fd12::1".parse().expect("ip"))
        );
        assert!(Network::parse("nonsense").is_err());
    }

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("pacs:104"), Some(("pacs".into(), 104)));
        assert_eq!(split_host_port("[::1]:11112"), Some(("::1".into(), 11112)));
        assert_eq!(split_host_port("pacs"), None);
        assert_eq!(split_host_port("pacs:0"), None);
        let e = parse_host_port("pacs:70000").expect_err("port");
        assert!(e.contains("the port 70000 is above 65535"), "{e}");
        let e = parse_host_port("pacs").expect_err("no port");
        assert!(e.contains("must be host:port"), "{e}");
    }

    const MINIMAL: &str = "[appliance]\nname = \"t\"\ndata_dir = \"/srv/m\"\n[listener]\nae_title = \"M\"\nbind = \"0.0.0.0:11112\"\n[[destination]]\nname = \"a\"\nkind = \"dimse\"\naddress = \"pacs:104\"\ncalled_ae_title = \"PACS\"\n";

    fn problems(text: &str) -> Vec<Problem> {
        Config::parse(text).expect("parses").validate()
    }

    #[test]
    fn listening_addresses_say_what_is_wrong() {
        let e =
            Config::parse(&MINIMAL.replace("0.0.0.0:11112", "0.0.0.0:70000")).expect_err("port");
        assert!(e.contains("listener.bind") || e.contains("bind"), "{e}");
        assert!(e.contains("the port 70000 is above 65535"), "{e}");
        let e = Config::parse(&MINIMAL.replace("0.0.0.0:11112", "appliance.local:11112"))
            .expect_err("host name");
        assert!(
            e.contains("\"appliance.local\" is not an IP address"),
            "{e}"
        );
        assert!(e.contains("not a host name"), "{e}");
        let e = Config::parse(&MINIMAL.replace("0.0.0.0:11112", "0.0.0.0")).expect_err("no port");
        assert!(e.contains("has no port"), "{e}");
        let p = problems(&MINIMAL.replace("0.0.0.0:11112", "0.0.0.0:0"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "listener.bind");
        assert!(p[0].message.contains("port 0"), "{p:?}");
    }

    #[test]
    fn the_status_endpoint_needs_its_own_port_and_stays_local_unless_said() {
        let same = format!("{MINIMAL}[status]\nbind = \"127.0.0.1:11112\"\n");
        let p = problems(&same);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "status.bind");
        assert!(p[0].message.contains("same port as listener.bind"), "{p:?}");

        let remote = format!("{MINIMAL}[status]\nbind = \"0.0.0.0:8104\"\n");
        let p = problems(&remote);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "status.bind");
        assert!(p[0].message.contains("no authentication"), "{p:?}");
        let deliberate = format!(
            "{MINIMAL}[status]\nbind = \"0.0.0.0:8104\"\nallow_unauthenticated_remote = true\n"
        );
        assert_eq!(problems(&deliberate), vec![]);
    }

    #[test]
    fn transfer_syntaxes_must_be_standard() {
        let text = MINIMAL.replace(
            "bind = \"0.0.0.0:11112\"",
            "bind = \"0.0.0.0:11112\"\ntransfer_syntaxes = [\"1.2.840.10008.1.2.1\", \"1.2.3.4\"]",
        );
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "listener.transfer_syntaxes[1]");
        assert!(p[0].message.contains("not a transfer syntax"), "{p:?}");
    }

    #[test]
    fn a_missing_table_header_is_named() {
        let text = MINIMAL.replace("[listener]\n", "");
        let e = Config::parse(&text).expect_err("no listener");
        assert!(e.starts_with("missing [listener] table"), "{e}");
        assert!(e.contains("are under [appliance]"), "{e}");
        assert!(!e.contains("unknown field"), "{e}");
        let e = Config::parse("[appliance]\nname = \"t\"\ndata_dir = \"/x\"\n")
            .expect_err("no listener");
        assert!(
            e.starts_with("missing [listener] table (with at least"),
            "{e}"
        );
    }
}
