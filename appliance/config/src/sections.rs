//! The fleet-owned tables of the configuration file: `[listener]`, `[spool]`, `[forward]` and
//! `[[destination]]` (the workflow tables are in [`crate::workflow`], `[rules]` in
//! [`crate::rules`]). The same types serve the appliance's TOML file and the fleet's JSON.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// Size of each spool segment file (MiB); 0: every object in a file of its own.
    pub segment_mib: u64,
    /// Spool segments kept allocated and written through while idle, for the next burst (MiB).
    pub warm_mib: u64,
}

impl Default for SpoolSection {
    fn default() -> Self {
        SpoolSection {
            high_watermark_percent: 90.0,
            low_watermark_percent: 80.0,
            max_bytes: 0,
            retention_hours: 168,
            segment_mib: 16,
            warm_mib: 256,
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

/// Deserialises a listening address with [`crate::check::parse_bind`].
pub fn de_bind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    crate::check::parse_bind(&s).map_err(serde::de::Error::custom)
}

fn de_bind_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    de_bind(d).map(Some)
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
