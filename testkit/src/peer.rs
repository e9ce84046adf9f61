//! Child processes of a test: [`Peer`] (killed on drop), tool lookup, workspace binaries.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// DCMTK `storescu`.
pub const STORESCU: &str = "/usr/bin/storescu";
/// DCMTK `storescp`.
pub const STORESCP: &str = "/usr/bin/storescp";
/// DCMTK `echoscu`.
pub const ECHOSCU: &str = "/usr/bin/echoscu";
/// DCMTK `findscu`.
pub const FINDSCU: &str = "/usr/bin/findscu";
/// DCMTK `dcmdrle` (RLE decoder).
pub const DCMDRLE: &str = "/usr/bin/dcmdrle";
/// Orthanc.
pub const ORTHANC: &str = "/usr/sbin/Orthanc";
/// Orthanc's DICOMweb plugin.
pub const ORTHANC_DICOMWEB_PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";
/// Mosquitto broker.
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// The Debian package that provides `path`, for the error message of [`require_tool`].
fn debian_package(path: &str) -> &'static str {
    let name = Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(path);
    match name {
        "storescu" | "storescp" | "echoscu" | "findscu" | "movescu" | "getscu" | "wlmscpfs"
        | "dcmdump" | "dcmdrle" | "dcmcrle" | "dcmodify" => "dcmtk",
        "Orthanc" => "orthanc",
        "libOrthancDicomWeb.so" => "orthanc-dicomweb",
        "mosquitto" => "mosquitto",
        "mosquitto_pub" | "mosquitto_sub" => "mosquitto-clients",
        "postgres" | "initdb" | "pg_ctl" | "psql" => "postgresql",
        "chromium" => "chromium",
        "promtool" => "prometheus",
        _ => "the package providing it",
    }
}

/// Returns `path` if it exists; otherwise FAILS (panics) naming the Debian package to install.
/// A missing peer is a real failure, never a skip: CI (`ci/test`) installs every peer.
pub fn require_tool(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    if !p.exists() {
        let package = debian_package(path);
        panic!(
            "required peer `{path}` is missing: install the Debian package `{package}` \
             (apt-get install --no-install-recommends {package}, or run ci/test which installs \
             every peer). End-to-end tests never skip a missing peer."
        );
    }
    p
}

/// The root of the Cargo workspace (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.to_path_buf())
}

/// Finds the binary `name` of this workspace built in the `debug` profile. `CARGO_BIN_EXE_*`
/// only covers the test's own package, so this looks, in order, next to the running test
/// executable (`<target>/debug/deps/..` → `<target>/debug/name`), in `$CARGO_TARGET_DIR/debug`
/// and in `<workspace>/target/debug`.
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    workspace_bin_in(name, "debug")
}

/// [`workspace_bin`] for another profile directory (`"release"`).
pub fn workspace_bin_in(name: &str, profile: &str) -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // <target>/<profile>/deps/<test>-<hash>
        if let Some(target) = exe.parent().and_then(Path::parent).and_then(Path::parent) {
            candidates.push(target.join(profile).join(name));
        }
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        let dir = if dir.is_relative() {
            workspace_root().join(dir)
        } else {
            dir
        };
        candidates.push(dir.join(profile).join(name));
    }
    candidates.push(workspace_root().join("target").join(profile).join(name));
    if let Some(found) = candidates.iter().find(|c| c.is_file()) {
        return Ok(found.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
    let release = if profile == "release" {
        " --release"
    } else {
        ""
    };
    bail!(
        "`{name}` is not built (looked in {}): run `cargo build{release} -p {name}` first \
         (ci/test builds the whole workspace before testing)",
        looked.join(", ")
    )
}

/// A child process of a test, killed (SIGKILL) and reaped when dropped. Its stdout and stderr
/// go to a log file, shown in errors; `TCP_NODELAY=1` is set in its environment (DCMTK and
/// Orthanc read it; without it DICOM over loopback stalls ~40 ms per message).
#[derive(Debug)]
pub struct Peer {
    name: String,
    child: Option<Child>,
    pid: u32,
    log_path: PathBuf,
}

impl Peer {
    /// Spawns `cmd` with stdin closed and stdout+stderr appended to `log_path`.
    pub fn spawn(name: &str, mut cmd: Command, log_path: &Path) -> Result<Peer> {
        if let Some(parent) = log_path.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("creating log directory {}", parent.display()))?;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("opening log {}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .with_context(|| format!("duplicating log handle {}", log_path.display()))?;
        cmd.env("TCP_NODELAY", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {name}: {cmd:?}"))?;
        Ok(Peer {
            name: name.to_string(),
            pid: child.id(),
            child: Some(child),
            log_path: log_path.to_path_buf(),
        })
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The log file (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `Ok` while the process runs; an error with its exit status and log tail once it exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.try_exit_status()? {
            None => Ok(()),
            Some(status) => Err(anyhow!(
                "{} (pid {}) exited with {status}; log {}:\n{}",
                self.name,
                self.pid,
                self.log_path.display(),
                self.log_tail(30)
            )),
        }
    }

    /// The exit status if the process has exited (reaping it), `None` while it runs.
    pub fn try_exit_status(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            None => bail!("{} was already stopped", self.name),
            Some(child) => child
                .try_wait()
                .with_context(|| format!("polling {} (pid {})", self.name, self.pid)),
        }
    }

    /// Sends `signal` (e.g. SIGSTOP/SIGCONT to freeze and thaw a peer, SIGTERM, SIGHUP).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let pid = i32::try_from(self.pid).context("pid out of range")?;
        kill(Pid::from_raw(pid), signal)
            .with_context(|| format!("sending {signal} to {} (pid {})", self.name, self.pid))
    }

    /// Sends SIGTERM and waits up to `grace` for the exit; then SIGKILL. Returns the status.
    pub async fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.try_exit_status()? {
            self.child = None;
            return Ok(status);
        }
        self.signal(Signal::SIGTERM)?;
        let started = Instant::now();
        while started.elapsed() < grace {
            if let Some(status) = self.try_exit_status()? {
                self.child = None;
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill()
    }

    /// SIGKILL and reap now (a crash, from the peer's point of view).
    pub fn kill(&mut self) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("{} was already stopped", self.name))?;
        // kill() fails only if the process was already reaped; wait() reports the status.
        let _ = child.kill();
        child
            .wait()
            .with_context(|| format!("reaping {} (pid {})", self.name, self.pid))
    }

    /// CPU time and memory of the process now (from /proc).
    pub fn stats(&self) -> Result<ProcStats> {
        proc_stats(self.pid)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// CPU time and memory of a process, from `/proc/<pid>/stat` and `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStats {
    /// User + system CPU time, in milliseconds.
    pub cpu_ms: u64,
    /// Resident set size now, in KiB (VmRSS).
    pub rss_kib: u64,
    /// Peak resident set size, in KiB (VmHWM).
    pub peak_rss_kib: u64,
}

/// Reads [`ProcStats`] of `pid`.
pub fn proc_stats(pid: u32) -> Result<ProcStats> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (has the process exited?)"))?;
    // The command name (field 2) may contain spaces: fields after the last ')' are plain.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat: {stat}"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // after ')' : state(3) ppid(4) ... utime is field 14 → index 11, stime 15 → index 12.
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat: {stat}"))
    };
    // /proc reports clock ticks of USER_HZ, which the Linux ABI fixes at 100 per second.
    const USER_HZ: u64 = 100;
    let cpu_ms = (ticks(11)? + ticks(12)?) * 1000 / USER_HZ;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcStats {
        cpu_ms,
        rss_kib: kib("VmRSS:"),
        peak_rss_kib: kib("VmHWM:"),
    })
}

/// Creates (truncates) a file for a peer's log, returning its path.
pub fn new_log(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(format!("{name}.log"));
    File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "install the Debian package `dcmtk`")]
    fn a_missing_tool_fails_naming_its_package() {
        require_tool("/nonexistent/bin/storescu");
    }

    #[test]
    fn a_missing_workspace_binary_says_how_to_build_it() {
        let err = workspace_bin("medgate-no-such-binary").expect_err("must not exist");
        let msg = err.to_string();
        assert!(
            msg.contains("run `cargo build -p medgate-no-such-binary` first"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn a_peer_is_killed_on_drop_and_its_log_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("sleep.log");
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            "echo started; echo nodelay=$TCP_NODELAY; exec sleep 600",
        ]);
        let mut peer = Peer::spawn("sleeper", cmd, &log).expect("spawn");
        let pid = peer.pid();
        let started = Instant::now();
        while !peer.log().contains("nodelay=1") {
            assert!(started.elapsed() < Duration::from_secs(10), "no output");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        peer.check_alive().expect("running");
        let stats = peer.stats().expect("stats of a running process");
        assert!(stats.peak_rss_kib > 0);
        drop(peer);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} survived the drop of its Peer"
        );
        assert!(fs::read_to_string(&log).expect("log").contains("started"));
    }

    #[tokio::test]
    async fn stop_terminates_gracefully() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new("/bin/sleep");
        cmd.arg("600");
        let mut peer = Peer::spawn("sleep", cmd, &dir.path().join("s.log")).expect("spawn");
        let status = peer.stop(Duration::from_secs(5)).await.expect("stop");
        assert!(!status.success());
        assert!(peer.check_alive().is_err());
    }
}
