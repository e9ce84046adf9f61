//! The thin IO layer: reading and writing files of `/sys` and `/dev` under a configurable root.
//!
//! Every other module asks a [`SysRoot`] for the files it needs, by their absolute path on a real
//! machine (`/sys/class/net`); the root maps that path below a directory, so tests run the same
//! code against a fake tree built in a temporary directory.

use std::io;
use std::path::{Path, PathBuf};

/// A failed read or write of a file under the [`SysRoot`].
#[derive(Debug, thiserror::Error)]
#[error("{action} {path} failed: {source}")]
pub struct SysfsError {
    /// What was being done: "reading", "writing", "listing".
    pub action: &'static str,
    /// The file, as seen on the machine (root included).
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

impl SysfsError {
    /// Whether the file or directory does not exist.
    pub fn is_not_found(&self) -> bool {
        self.source.kind() == io::ErrorKind::NotFound
    }
}

/// The directory that stands for `/` when reading `/sys` and `/dev`: `/` on the appliance, a
/// temporary directory in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysRoot {
    root: PathBuf,
}

impl Default for SysRoot {
    fn default() -> Self {
        Self::host()
    }
}

impl SysRoot {
    /// The real machine: paths are used as they are.
    pub fn host() -> Self {
        Self {
            root: PathBuf::from("/"),
        }
    }

    /// A tree below `root`: `/sys/class/net` becomes `<root>/sys/class/net`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory standing for `/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Maps an absolute machine path (`/sys/class/net`) below the root.
    pub fn path(&self, machine_path: impl AsRef<Path>) -> PathBuf {
        let p = machine_path.as_ref();
        let relative = p.strip_prefix("/").unwrap_or(p);
        self.root.join(relative)
    }

    /// Reads a text attribute, without its trailing newline and surrounding blanks.
    pub fn read_trimmed(&self, machine_path: impl AsRef<Path>) -> Result<String, SysfsError> {
        let path = self.path(machine_path);
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_owned())
            .map_err(|source| SysfsError {
                action: "reading",
                path,
                source,
            })
    }

    /// Like [`SysRoot::read_trimmed`], but a missing file is `Ok(None)`.
    pub fn read_optional(
        &self,
        machine_path: impl AsRef<Path>,
    ) -> Result<Option<String>, SysfsError> {
        match self.read_trimmed(machine_path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a sysfs attribute. The file must exist (sysfs attributes are never created).
    pub fn write(&self, machine_path: impl AsRef<Path>, value: &str) -> Result<(), SysfsError> {
        use std::io::Write as _;
        let path = self.path(machine_path);
        let result = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut f| f.write_all(value.as_bytes()));
        result.map_err(|source| SysfsError {
            action: "writing",
            path,
            source,
        })
    }

    /// Whether the path exists (following symbolic links).
    pub fn exists(&self, machine_path: impl AsRef<Path>) -> bool {
        self.path(machine_path).exists()
    }

    /// The entry names of a directory, sorted; a missing directory is an empty list.
    pub fn list(&self, machine_path: impl AsRef<Path>) -> Result<Vec<String>, SysfsError> {
        let path = self.path(machine_path);
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(SysfsError {
                    action: "listing",
                    path,
                    source,
                });
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| SysfsError {
                action: "listing",
                path: path.clone(),
                source,
            })?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
}

/// Parses a decimal integer attribute (`"42\n"`); `None` when it is not one.
pub(crate) fn parse_i64(text: &str) -> Option<i64> {
    text.trim().parse().ok()
}

#[cfg(test)]
pub(crate) mod fake {
    //! Builders for fake sysfs trees in a temporary directory.
    use std::path::Path;

    /// Writes `content` to `<root>/<machine_path>`, creating the parent directories.
    pub(crate) fn file(root: &Path, machine_path: &str, content: &str) {
        let path = root.join(machine_path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create dirs");
        std::fs::write(&path, content).expect("write fake file");
    }

    /// Creates the directory `<root>/<machine_path>`.
    pub(crate) fn dir(root: &Path, machine_path: &str) {
        std::fs::create_dir_all(root.join(machine_path.trim_start_matches('/')))
            .expect("create dir");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_machine_paths_below_the_root() {
        let root = SysRoot::new("/tmp/fake");
        assert_eq!(
            root.path("/sys/class/net"),
            PathBuf::from("/tmp/fake/sys/class/net")
        );
        assert_eq!(
            SysRoot::host().path("/sys/class/net"),
            PathBuf::from("/sys/class/net")
        );
    }

    #[test]
    fn reads_trims_lists_and_reports_missing_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        fake::file(dir.path(), "/sys/a/b", " hello \n");
        fake::file(dir.path(), "/sys/a/c", "1\n");
        let root = SysRoot::new(dir.path());
        assert_eq!(root.read_trimmed("/sys/a/b").expect("read"), "hello");
        assert_eq!(root.read_optional("/sys/a/missing").expect("read"), None);
        assert_eq!(root.list("/sys/a").expect("list"), vec!["b", "c"]);
        assert!(root.list("/sys/none").expect("list").is_empty());
        let err = root.read_trimmed("/sys/a/missing").expect_err("missing");
        assert!(err.is_not_found());
        assert!(err.to_string().starts_with("reading "), "{err}");
        // Sysfs attributes are never created by a write.
        let err = root.write("/sys/a/new", "1").expect_err("no create");
        assert!(err.to_string().starts_with("writing "), "{err}");
        root.write("/sys/a/c", "0").expect("write");
        assert_eq!(root.read_trimmed("/sys/a/c").expect("read"), "0");
    }
}
