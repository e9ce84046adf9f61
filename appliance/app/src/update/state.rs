//! What the update agent keeps on disk under `<data_dir>/update/`, so that the process a switch
//! starts (or a restart) continues where the last one stopped:
//!
//! - `trust.json`: the device's trust store (`medgate-bundle trust init`);
//! - `request.json`: an install handed over by `medgate-appliance update --file` to the running
//!   service (taken and removed by it);
//! - `state.json`: the install in force — its instruction, where the switch came from (the
//!   command line to restart with, the listener the health probe calls) and its last outcome.
//!
//! Every file is written to a temporary name, fsync'd and renamed.

use medgate_bundle::{Name, Version};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The trust store's file name.
pub const TRUST: &str = "trust.json";
const REQUEST: &str = "request.json";
const STATE: &str = "state.json";

/// The directory of the update agent's files.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("update")
}

/// One install: the instruction, where its bundle is, how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// The campaign (`local-…` for `update --file`).
    pub campaign: Name,
    /// The version the bundle installs.
    pub version: Version,
    /// The bundle file's size.
    pub size: u64,
    /// The bundle file.
    pub bundle: PathBuf,
    /// The bundle's signed floor (raised in the trust store at commit).
    #[serde(default)]
    pub floor: Option<Version>,
    /// Set at the switch.
    #[serde(default)]
    pub switched: Option<Switched>,
    /// The final report, once over.
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// Where the bundle comes from when the fleet offered it (none: a local file).
    #[serde(default)]
    pub download: Option<Fetch>,
}

/// A bundle the fleet offered: downloaded into `bundle` with resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetch {
    /// The HTTPS address (the fleet's device listener).
    pub url: String,
    /// The bundle file's SHA-256, as offered.
    pub sha256: String,
}

/// What the process that switched left for the one it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switched {
    /// The version it ran (a rollback returns to it).
    pub previous: Option<Version>,
    /// Its command line after the program (`run --config …`): the new version is started with
    /// it, and so is the old one after a rollback.
    pub args: Vec<String>,
    /// The listener the modalities use (host:port) and its AE title: the health probe's C-ECHO
    /// goes there, whatever the new version's configuration says.
    pub probe_address: String,
    /// The called AE title of that listener.
    pub probe_ae: String,
}

/// The end of an install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// `installed`, `rolled_back`, `refused`, `failed`, `cancelled`, `abandoned`.
    pub state: String,
    /// Why (none for `installed`).
    pub code: Option<String>,
    /// Words.
    pub detail: String,
}

/// A file of the update directory that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("cannot {op} {path}: {source}; check the data directory's disk and permissions")]
    Io {
        /// What was done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Not what this version writes.
    #[error("{path} is not a valid update state ({message}); move it away to start afresh")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn read(path: &Path) -> Result<Option<Saved>, StateError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StateError::Malformed {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

fn write(path: &Path, saved: &Saved) -> Result<(), StateError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    let tmp = path.with_extension("json.new");
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    let text = serde_json::to_vec_pretty(saved).map_err(|e| StateError::Malformed {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    f.write_all(&text).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("fsync", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("rename", path))?;
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", parent))
}

/// The install in force, if any.
pub fn load(data_dir: &Path) -> Result<Option<Saved>, StateError> {
    read(&dir(data_dir).join(STATE))
}

/// Records the install in force.
pub fn store(data_dir: &Path, saved: &Saved) -> Result<(), StateError> {
    write(&dir(data_dir).join(STATE), saved)
}

/// Hands an install to the running service.
pub fn request(data_dir: &Path, saved: &Saved) -> Result<(), StateError> {
    write(&dir(data_dir).join(REQUEST), saved)
}

/// Takes the install handed over, if any (the file is removed).
pub fn take_request(data_dir: &Path) -> Result<Option<Saved>, StateError> {
    let path = dir(data_dir).join(REQUEST);
    let saved = read(&path)?;
    if saved.is_some() {
        fs::remove_file(&path).map_err(io_err("remove", &path))?;
    }
    Ok(saved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_taken_once_and_the_state_survives_a_reload() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let saved = Saved {
            campaign: "local-1".parse().expect("name"),
            version: "1.2.0".parse().expect("version"),
            size: 10,
            bundle: "/tmp/b.mgb".into(),
            floor: None,
            switched: Some(Switched {
                previous: Some("1.1.0".parse().expect("version")),
                args: vec!["run".into(), "--config".into(), "/etc/m.toml".into()],
                probe_address: "127.0.0.1:104".into(),
                probe_ae: "MEDGATE".into(),
            }),
            outcome: None,
            download: None,
        };
        assert_eq!(take_request(tmp.path()).expect("none"), None);
        request(tmp.path(), &saved).expect("request");
        assert_eq!(take_request(tmp.path()).expect("take"), Some(saved.clone()));
        assert_eq!(take_request(tmp.path()).expect("gone"), None);
        store(tmp.path(), &saved).expect("store");
        assert_eq!(load(tmp.path()).expect("load"), Some(saved));
        fs::write(dir(tmp.path()).join(STATE), b"{").expect("write");
        assert!(matches!(
            load(tmp.path()),
            Err(StateError::Malformed { .. })
        ));
    }
}
