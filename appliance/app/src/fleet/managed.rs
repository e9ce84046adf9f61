//! The configuration the fleet manages: the desired configuration it sent, merged over the
//! local file, and kept on the data partition once it proved itself (the listener came up).
//!
//! The local file owns what belongs to this box and nobody else: `appliance.data_dir`,
//! `appliance.fleet_enrollment`, `[fleet]`, `[hardware]` and `[status]`. The fleet owns the
//! rest (`medgate_config::DesiredConfig`: name, listener, spool limits, retry policy,
//! destinations, rules, workflow services). A desired configuration is validated by the same
//! code as the local file before anything changes.

use crate::config::{Config, Problem};
use medgate_contract::{ConfigProblem, Token};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A configuration from the fleet that ran healthy, as kept on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    /// The fleet's version of it.
    pub version: u64,
    /// The configuration as the fleet sent it (the TOML file as a JSON object).
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// Builds the configuration to run from a desired one and the local file: the desired document
/// is `medgate-config`'s [`medgate_config::DesiredConfig`] (unknown keys refused); box-local keys
/// in it (a whole file sent as JSON, or a document kept by an older version) are dropped — the
/// local file owns them. Every problem is returned, with its key.
pub fn merge(
    desired: &serde_json::Map<String, serde_json::Value>,
    local: &Config,
) -> Result<Config, Vec<Problem>> {
    let mut doc = desired.clone();
    medgate_config::strip_box_local(&mut doc);
    let desired = medgate_config::DesiredConfig::from_json(doc).map_err(|p| vec![p])?;
    let cfg = Config::from_parts(local, desired);
    let mut problems = cfg.validate();
    problems.extend(cfg.validate_files());
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(problems)
    }
}

/// Problems as the fleet sees them: a code and the key, never free text (which could carry
/// anything).
pub fn to_contract(problems: &[Problem], code: &str) -> Vec<ConfigProblem> {
    problems
        .iter()
        .filter_map(|p| {
            Some(ConfigProblem {
                code: Token::new(code).ok()?,
                field: Token::new(p.key.as_str()).ok(),
            })
        })
        .collect()
}

/// Where the applied configuration is kept.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// The store under the appliance's data directory.
    pub fn new(data_dir: &Path) -> Self {
        Store {
            path: data_dir.join("fleet").join("applied-config.json"),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last applied configuration, if any.
    pub fn load(&self) -> Result<Option<Applied>, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{}: {e}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }

    /// Keeps `applied` durably (temp file, fsync, rename, directory fsync).
    pub fn save(&self, applied: &Applied) -> Result<(), String> {
        use std::io::Write;
        let err = |e: std::io::Error| format!("{}: {e}", self.path.display());
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let tmp = self.path.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(applied).map_err(|e| e.to_string())?;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(dir: &Path) -> Config {
        Config::parse(&format!(
            r#"
[appliance]
name = "local"
data_dir = "{}"
[listener]
ae_title = "LOCAL"
bind = "127.0.0.1:11112"
[status]
bind = "127.0.0.1:18104"
"#,
            dir.display()
        ))
        .expect("local config")
    }

    fn desired(ae: &str) -> serde_json::Map<String, serde_json::Value> {
        let v = serde_json::json!({
            "appliance": {"name": "from-fleet", "data_dir": "/somewhere/else"},
            "listener": {"ae_title": ae, "bind": "0.0.0.0:104"},
            "status": {"bind": "0.0.0.0:9999"},
            "destination": [{"name": "archive", "kind": "dimse", "address": "10.0.0.1:104", "called_ae_title": "ARCHIVE"}],
        });
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn the_local_file_keeps_what_belongs_to_the_box() {
        let dir = tempfile::tempdir().expect("dir");
        let cfg = merge(&desired("FLEET"), &local(dir.path())).expect("valid");
        assert_eq!(cfg.appliance.name, "from-fleet");
        assert_eq!(cfg.listener.ae_title, "FLEET");
        assert_eq!(cfg.appliance.data_dir, dir.path());
        assert_eq!(cfg.status.bind.to_string(), "127.0.0.1:18104");
    }

    #[test]
    fn an_invalid_desired_configuration_is_refused_with_its_keys() {
        let dir = tempfile::tempdir().expect("dir");
        let problems = merge(&desired("BAD\\AE"), &local(dir.path())).expect_err("refused");
        let c = to_contract(&problems, "invalid_value");
        assert_eq!(
            c[0].field.as_ref().map(|f| f.as_str()),
            Some("listener.ae_title")
        );
        let mut typo = desired("OK");
        typo.insert("listner".into(), serde_json::json!({}));
        assert!(merge(&typo, &local(dir.path())).is_err());
    }

    #[test]
    fn a_document_without_box_local_keys_is_enough() {
        let dir = tempfile::tempdir().expect("dir");
        let mut doc = desired("SITE");
        doc.remove("appliance");
        doc.remove("status");
        let cfg = merge(&doc, &local(dir.path())).expect("valid");
        assert_eq!(cfg.appliance.name, "local", "no name: the local one stays");
        assert_eq!(cfg.listener.ae_title, "SITE");
        assert_eq!(cfg.appliance.data_dir, dir.path());
        assert_eq!(cfg.status.bind.to_string(), "127.0.0.1:18104");
    }

    #[test]
    fn applied_configuration_survives_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::new(dir.path());
        assert!(store.load().expect("load").is_none());
        let a = Applied {
            version: 7,
            config: desired("FLEET"),
        };
        store.save(&a).expect("save");
        let back = store.load().expect("load").expect("some");
        assert_eq!(back.version, 7);
        assert_eq!(back.config, a.config);
    }
}
