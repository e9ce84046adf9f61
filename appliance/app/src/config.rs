//! The appliance's TOML configuration: structure, defaults and validation with exact messages.
//! Pure: [`Config::parse`] and [`Config::validate`] touch no file besides the ones the config names
//! (certificate paths are checked for existence by `validate_files`).
//!
//! The file has two parts. What the fleet may set (name, listener, spool, forward, destinations,
//! rules, workflow services) is `medgate-config`'s [`DesiredConfig`], with its validation; the
//! box-local rest (`appliance.data_dir`, `appliance.fleet_enrollment`, `[fleet]`, `[hardware]`,
//! `[status]`) is checked here. [`Config`] is both, built from the file or
//! [`Config::from_parts`] (a desired document from the fleet over the local file).

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use medgate_config::check::binds_overlap;
pub use medgate_config::{
    DesiredConfig, DestinationKind, DestinationSection, DestinationTls, ForwardSection, HostPort,
    ListenerSection, ListenerTls, Network, Problem, SCHEMA_VERSION, SpoolSection, parse_bind,
};

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
    pub commitment: Option<medgate_config::workflow::CommitmentSection>,
    /// Modality Worklist proxy (off when absent).
    #[serde(default)]
    pub worklist: Option<medgate_config::workflow::WorklistSection>,
    /// Quality checks at ingest (off when absent).
    #[serde(default)]
    pub qc: Option<medgate_config::workflow::QcSection>,
    /// Reporting to the fleet manager over MQTT, written by hand (see also
    /// `appliance.fleet_enrollment`). Absent: no reporting.
    #[serde(default)]
    pub fleet: Option<medgate_report::ReporterConfig>,
    /// Signed updates into directory slots or the image's A/B partitions (docs/ota.md). Absent:
    /// no update agent.
    #[serde(default)]
    pub update: Option<UpdateSection>,
}

/// Where updates are installed (`update.backend`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UpdateBackend {
    /// Versioned directories under `update.slots_dir` (a Debian server); a switch `exec`s the
    /// new program.
    #[default]
    Directory,
    /// The image's A/B partitions (`medgate-slot`); a switch reboots into the other slot.
    Ab,
}

/// `[update]` (box-local): the slot backend and the agent's timings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpdateSection {
    /// `directory` (default) or `ab`.
    #[serde(default)]
    pub backend: UpdateBackend,
    /// The slot directory (`versions/`, `current`, …); the service runs
    /// `<slots_dir>/current/medgate-appliance`. Required with `backend = "directory"`, not
    /// used with `ab`.
    #[serde(default)]
    pub slots_dir: Option<PathBuf>,
    /// The hardware profile a bundle must name to install here. Required.
    pub hardware: String,
    /// The new version must be healthy within this after the switch, else it is rolled back.
    #[serde(default = "default_health_deadline")]
    pub health_deadline_secs: u64,
    /// Seconds between health probes after the switch.
    #[serde(default = "default_probe_interval")]
    pub probe_interval_secs: u64,
    /// DICOM counts as idle only this long after the last object.
    #[serde(default = "default_quiet")]
    pub quiet_secs: u64,
    /// A study counts as still arriving until it was quiet this long.
    #[serde(default = "default_study_stable")]
    pub study_stable_secs: u64,
    /// At most this many objects waiting to be forwarded at the switch.
    #[serde(default = "default_queue_bound")]
    pub queue_bound: u64,
    /// The largest bundle payload accepted (bytes).
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: u64,
}

const fn default_health_deadline() -> u64 {
    120
}
const fn default_probe_interval() -> u64 {
    5
}
const fn default_quiet() -> u64 {
    10
}
const fn default_study_stable() -> u64 {
    60
}
const fn default_queue_bound() -> u64 {
    100
}
const fn default_max_payload() -> u64 {
    1 << 30
}

impl UpdateSection {
    fn problems(&self, data_dir: &Path, bad: &mut dyn FnMut(&str, String)) {
        match (self.backend, &self.slots_dir) {
            (UpdateBackend::Directory, None) => bad(
                "update.slots_dir",
                "missing: the directory backend needs the slot directory's full path, e.g. /opt/medgate (or set update.backend = \"ab\" on the image)".into(),
            ),
            (UpdateBackend::Ab, Some(dir)) => bad(
                "update.slots_dir",
                format!(
                    "{} is not used with update.backend = \"ab\" (the slots are the image's A/B partitions); remove it",
                    dir.display()
                ),
            ),
            (UpdateBackend::Directory, Some(dir)) => Self::check_slots_dir(dir, data_dir, bad),
            (UpdateBackend::Ab, None) => {}
        }
        self.check_rest(bad);
    }

    fn check_slots_dir(dir: &Path, data_dir: &Path, bad: &mut dyn FnMut(&str, String)) {
        if !dir.is_absolute() {
            bad(
                "update.slots_dir",
                format!(
                    "{} is not an absolute path; give the slot directory's full path, e.g. /opt/medgate",
                    dir.display()
                ),
            );
        } else if dir.starts_with(data_dir) || data_dir.starts_with(dir) {
            bad(
                "update.slots_dir",
                format!(
                    "{} overlaps appliance.data_dir ({}); the slots hold programs, the data directory patient data: keep them apart",
                    dir.display(),
                    data_dir.display()
                ),
            );
        }
    }

    fn check_rest(&self, bad: &mut dyn FnMut(&str, String)) {
        if let Err(e) = self.hardware.parse::<medgate_bundle::Name>() {
            bad(
                "update.hardware",
                format!("{e}; use the hardware profile name the vendor's bundles list"),
            );
        }
        if !(10..=3600).contains(&self.health_deadline_secs) {
            bad(
                "update.health_deadline_secs",
                format!(
                    "{} is out of range; give 10 to 3600 seconds",
                    self.health_deadline_secs
                ),
            );
        }
        if self.probe_interval_secs == 0 || self.probe_interval_secs * 2 > self.health_deadline_secs
        {
            bad(
                "update.probe_interval_secs",
                format!(
                    "{} does not fit two probes into update.health_deadline_secs ({}); give 1 to {}",
                    self.probe_interval_secs,
                    self.health_deadline_secs,
                    self.health_deadline_secs / 2
                ),
            );
        }
        if self.quiet_secs > 600 {
            bad(
                "update.quiet_secs",
                format!("{} is out of range; give 0 to 600 seconds", self.quiet_secs),
            );
        }
        if self.study_stable_secs > 3600 {
            bad(
                "update.study_stable_secs",
                format!(
                    "{} is out of range; give 0 to 3600 seconds",
                    self.study_stable_secs
                ),
            );
        }
        if self.max_payload_bytes == 0 {
            bad(
                "update.max_payload_bytes",
                "0 accepts no bundle; give the largest payload size in bytes (default 1 GiB)"
                    .into(),
            );
        }
    }
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

/// `[status]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusSection {
    /// Address of the local HTTP endpoint.
    #[serde(deserialize_with = "medgate_config::sections::de_bind")]
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

    /// The fleet-owned part of this configuration (what a desired document from the fleet sets).
    pub fn desired(&self) -> DesiredConfig {
        DesiredConfig {
            appliance: Some(medgate_config::DesiredAppliance {
                name: self.appliance.name.clone(),
            }),
            listener: self.listener.clone(),
            spool: self.spool.clone(),
            forward: self.forward.clone(),
            destinations: self.destinations.clone(),
            rules: self.rules.clone(),
            commitment: self.commitment.clone(),
            worklist: self.worklist.clone(),
            qc: self.qc.clone(),
        }
    }

    /// The configuration to run: the fleet-owned part from `desired`, the box-local part
    /// (`appliance.data_dir`, `appliance.fleet_enrollment`, `[fleet]`, `[hardware]`, `[status]`)
    /// from `local`. A desired document without a name keeps the local one.
    pub fn from_parts(local: &Config, desired: DesiredConfig) -> Config {
        Config {
            appliance: ApplianceSection {
                name: desired
                    .appliance
                    .map(|a| a.name)
                    .unwrap_or_else(|| local.appliance.name.clone()),
                data_dir: local.appliance.data_dir.clone(),
                fleet_enrollment: local.appliance.fleet_enrollment.clone(),
            },
            listener: desired.listener,
            spool: desired.spool,
            forward: desired.forward,
            destinations: desired.destinations,
            status: local.status.clone(),
            hardware: local.hardware.clone(),
            rules: desired.rules,
            commitment: desired.commitment,
            worklist: desired.worklist,
            qc: desired.qc,
            fleet: local.fleet.clone(),
            update: local.update.clone(),
        }
    }

    /// Checks every value; returns all problems at once: the box-local keys here, the
    /// fleet-owned ones by [`DesiredConfig::validate`].
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut bad = |key: &str, message: String| {
            p.push(Problem {
                key: key.to_string(),
                message,
            })
        };
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
        if let Some(u) = &self.update {
            u.problems(&self.appliance.data_dir, &mut bad);
        }
        let l = &self.listener;
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
        p.extend(self.desired().validate());
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
    fn the_configuration_accepts_the_transfer_syntaxes_the_listener_negotiates() {
        let negotiated: Vec<&str> = medgate_dicom::uids::TRANSFER_SYNTAXES
            .iter()
            .map(|(uid, _)| *uid)
            .collect();
        assert_eq!(
            negotiated,
            medgate_config::check::STANDARD_TRANSFER_SYNTAXES
        );
    }

    #[test]
    fn the_file_is_its_two_parts() {
        let cfg = Config::parse(EXAMPLE).expect("example parses");
        let back = Config::from_parts(&cfg, cfg.desired());
        assert_eq!(format!("{back:?}"), format!("{cfg:?}"));
    }

    #[test]
    fn the_update_section_is_checked_with_exact_messages() {
        let base = "[appliance]\nname = \"t\"\ndata_dir = \"/var/lib/medgate\"\n\n[listener]\nae_title = \"MEDGATE\"\nbind = \"127.0.0.1:11112\"\n\n[[destination]]\nname = \"a\"\nkind = \"dimse\"\naddress = \"127.0.0.1:104\"\ncalled_ae_title = \"ARCHIVE\"\n\n[update]\n";
        let problems = |extra: &str| -> Vec<(String, String)> {
            Config::parse(&format!("{base}{extra}"))
                .expect("parses")
                .validate()
                .into_iter()
                .map(|p| (p.key, p.message))
                .collect()
        };
        assert!(problems("slots_dir = \"/opt/medgate\"\nhardware = \"qemu-vm\"\n").is_empty());
        let cfg = Config::parse(&format!(
            "{base}slots_dir = \"/opt/medgate\"\nhardware = \"qemu-vm\"\n"
        ))
        .expect("parses");
        let u = cfg.update.expect("update");
        assert_eq!(
            (
                u.backend,
                u.health_deadline_secs,
                u.probe_interval_secs,
                u.quiet_secs
            ),
            (UpdateBackend::Directory, 120, 5, 10)
        );
        assert_eq!(
            problems("slots_dir = \"opt\"\nhardware = \"qemu-vm\"\n"),
            [("update.slots_dir".to_string(), "opt is not an absolute path; give the slot directory's full path, e.g. /opt/medgate".to_string())]
        );
        assert_eq!(
            problems("slots_dir = \"/var/lib/medgate/slots\"\nhardware = \"qemu-vm\"\n")[0].1,
            "/var/lib/medgate/slots overlaps appliance.data_dir (/var/lib/medgate); the slots hold programs, the data directory patient data: keep them apart"
        );
        let p =
            problems("slots_dir = \"/opt/m\"\nhardware = \"Qemu VM\"\nhealth_deadline_secs = 5\n");
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "update.hardware",
                "update.health_deadline_secs",
                "update.probe_interval_secs"
            ]
        );
        assert_eq!(p[1].1, "5 is out of range; give 10 to 3600 seconds");
        assert_eq!(
            p[2].1,
            "5 does not fit two probes into update.health_deadline_secs (5); give 1 to 2"
        );
        assert_eq!(
            problems("hardware = \"qemu-vm\"\n"),
            [("update.slots_dir".to_string(), "missing: the directory backend needs the slot directory's full path, e.g. /opt/medgate (or set update.backend = \"ab\" on the image)".to_string())]
        );
        assert!(problems("backend = \"ab\"\nhardware = \"qemu-vm\"\n").is_empty());
        let ab = Config::parse(&format!("{base}backend = \"ab\"\nhardware = \"qemu-vm\"\n"))
            .expect("parses");
        assert_eq!(ab.update.expect("update").backend, UpdateBackend::Ab);
        assert_eq!(
            problems("backend = \"ab\"\nslots_dir = \"/opt/m\"\nhardware = \"qemu-vm\"\n"),
            [("update.slots_dir".to_string(), "/opt/m is not used with update.backend = \"ab\" (the slots are the image's A/B partitions); remove it".to_string())]
        );
        let unknown_backend = Config::parse(&format!(
            "{base}backend = \"partitions\"\nhardware = \"x\"\n"
        ))
        .expect_err("unknown backend");
        assert!(
            unknown_backend.contains("unknown variant `partitions`, expected `directory` or `ab`"),
            "{unknown_backend}"
        );
        let missing = Config::parse(&format!("{base}slots_dir = \"/opt/m\"\n"))
            .expect_err("hardware required");
        assert!(missing.contains("missing field `hardware`"), "{missing}");
        let unknown = Config::parse(&format!(
            "{base}slots_dir = \"/opt/m\"\nhardware = \"x\"\nslot_dir = 1\n"
        ))
        .expect_err("unknown");
        assert!(unknown.contains("unknown field `slot_dir`"), "{unknown}");
    }

    #[test]
    fn host_port() {
        let split = |s: &str| HostPort::parse(s).ok().map(|hp| (hp.host, hp.port));
        assert_eq!(split("pacs:104"), Some(("pacs".into(), 104)));
        assert_eq!(split("[::1]:11112"), Some(("::1".into(), 11112)));
        assert_eq!(split("pacs"), None);
        assert_eq!(split("pacs:0"), None);
        let e = HostPort::parse("pacs:70000").expect_err("port");
        assert!(e.contains("the port 70000 is above 65535"), "{e}");
        let e = HostPort::parse("pacs").expect_err("no port");
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
