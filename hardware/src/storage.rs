//! Storage health: free space of a filesystem (`statvfs`), the disks of `/sys/block`, and SMART
//! through `smartctl --json` when smartmontools is installed (parsing is sans-IO).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sysfs::{SysRoot, SysfsError, parse_i64};

/// The profile's `[storage]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageLimits {
    /// Less free space than this (percent of the filesystem, 1-50) makes the appliance degraded.
    pub min_free_percent: u8,
    /// Whether to ask smartctl about the disks (when it is installed).
    #[serde(default = "default_true")]
    pub smart: bool,
}

fn default_true() -> bool {
    true
}

impl StorageLimits {
    pub(crate) fn problems(&self) -> Vec<String> {
        if (1..=50).contains(&self.min_free_percent) {
            Vec::new()
        } else {
            vec![format!(
                "storage.min_free_percent must be between 1 and 50 (got {})",
                self.min_free_percent
            )]
        }
    }
}

/// Space of one filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsUsage {
    /// The path asked about (the spool's directory).
    pub path: PathBuf,
    /// Size in bytes.
    pub total_bytes: u64,
    /// Bytes an unprivileged process may still write.
    pub available_bytes: u64,
    /// Inodes an unprivileged process may still use.
    pub files_available: u64,
}

impl FsUsage {
    /// Builds the usage from `statvfs` counts (sans-IO).
    pub fn from_counts(
        path: PathBuf,
        fragment_size: u64,
        blocks: u64,
        blocks_available: u64,
        files_available: u64,
    ) -> Self {
        Self {
            path,
            total_bytes: blocks.saturating_mul(fragment_size),
            available_bytes: blocks_available.saturating_mul(fragment_size),
            files_available,
        }
    }

    /// Available space in percent of the size (100 for an empty-sized filesystem).
    pub fn available_percent(&self) -> f64 {
        if self.total_bytes == 0 {
            100.0
        } else {
            self.available_bytes as f64 * 100.0 / self.total_bytes as f64
        }
    }

    /// An alarm when space or inodes run low.
    pub fn alarm(&self, limits: &StorageLimits) -> Option<String> {
        let pct = self.available_percent();
        if pct < f64::from(limits.min_free_percent) {
            Some(format!(
                "filesystem of {} has {:.1}% free ({} MiB), below the profile's {}%; check that forwarding drains the spool",
                self.path.display(),
                pct,
                self.available_bytes / (1024 * 1024),
                limits.min_free_percent
            ))
        } else if self.files_available == 0 {
            Some(format!(
                "filesystem of {} has no free inodes; check that forwarding drains the spool",
                self.path.display()
            ))
        } else {
            None
        }
    }
}

/// A failed storage query.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// `statvfs` failed.
    #[error("statvfs of {path} failed: {source}; check that the path exists and is mounted")]
    Statvfs {
        /// The path.
        path: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// smartctl could not be run or did not finish.
    #[error("running {program} on {device} failed: {message}")]
    Smartctl {
        /// The smartctl binary.
        program: PathBuf,
        /// The device.
        device: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// smartctl ran but could not read the device, or its output is not what we parse.
    #[error("smartctl could not report on {device}: {message}")]
    SmartReport {
        /// The device.
        device: String,
        /// smartctl's own error messages, or the parse error.
        message: String,
    },
}

/// Space of the filesystem holding `path` (a real path: `statvfs` is not redirected by a
/// [`SysRoot`]).
pub fn filesystem_usage(path: &Path) -> Result<FsUsage, StorageError> {
    let s = nix::sys::statvfs::statvfs(path).map_err(|source| StorageError::Statvfs {
        path: path.to_owned(),
        source,
    })?;
    Ok(FsUsage::from_counts(
        path.to_owned(),
        s.fragment_size(),
        s.blocks(),
        s.blocks_available(),
        s.files_available(),
    ))
}

/// A disk of `/sys/block`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// Kernel name (`sda`, `nvme0n1`, `vda`).
    pub name: String,
    /// Model, when the driver tells it.
    pub model: Option<String>,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Spinning disk (true), solid state (false), unknown (none).
    pub rotational: Option<bool>,
    /// Removable medium.
    pub removable: bool,
    /// SMART summary, when smartctl was asked and could answer.
    pub smart: Option<SmartHealth>,
}

/// Lists the physical disks of `/sys/block` (those backed by a device: no loop, zram or
/// device-mapper), sorted by name.
pub fn list_disks(root: &SysRoot) -> Result<Vec<DiskInfo>, SysfsError> {
    let mut disks = Vec::new();
    for name in root.list("/sys/block")? {
        let dir = format!("/sys/block/{name}");
        if !root.exists(format!("{dir}/device")) {
            continue;
        }
        let attr = |a: &str| root.read_trimmed(format!("{dir}/{a}")).ok();
        let sectors = attr("size").as_deref().and_then(parse_i64).unwrap_or(0);
        disks.push(DiskInfo {
            model: attr("device/model").filter(|m| !m.is_empty()),
            size_bytes: u64::try_from(sectors).unwrap_or(0).saturating_mul(512),
            rotational: attr("queue/rotational").map(|r| r == "1"),
            removable: attr("removable").as_deref() == Some("1"),
            smart: None,
            name,
        });
    }
    Ok(disks)
}

/// The part of a SMART report the appliance cares about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmartHealth {
    /// smartctl's overall health verdict.
    pub passed: Option<bool>,
    /// Model name.
    pub model: Option<String>,
    /// Disk serial number (hardware, not patient data).
    pub serial: Option<String>,
    /// Current temperature, °C.
    pub temperature_c: Option<i64>,
    /// Power-on hours.
    pub power_on_hours: Option<i64>,
    /// ATA attribute 5, reallocated sectors.
    pub reallocated_sectors: Option<i64>,
    /// ATA attribute 197, sectors pending reallocation.
    pub pending_sectors: Option<i64>,
    /// NVMe media and data integrity errors.
    pub media_errors: Option<i64>,
    /// NVMe wear estimate, percent of rated life used.
    pub percentage_used: Option<i64>,
    /// smartctl's exit status bit mask (bit 3: disk failing; bit 4: pre-fail attribute at
    /// threshold; bit 6: errors in the error log).
    pub exit_status: u8,
}

impl SmartHealth {
    /// Alarms for a disk that is failing or wearing out, one sentence each.
    pub fn alarms(&self, disk: &str) -> Vec<String> {
        let mut a = Vec::new();
        if self.passed == Some(false) || self.exit_status & 0b1000 != 0 {
            a.push(format!(
                "disk {disk}: SMART says the disk is failing; replace it"
            ));
        } else if self.exit_status & 0b1_0000 != 0 {
            a.push(format!("disk {disk}: a SMART pre-failure attribute reached its threshold; plan to replace it"));
        }
        for (what, v) in [
            ("reallocated sectors", self.reallocated_sectors),
            ("sectors pending reallocation", self.pending_sectors),
            ("media errors", self.media_errors),
        ] {
            if let Some(n) = v.filter(|n| *n > 0) {
                a.push(format!(
                    "disk {disk}: {n} {what}; watch it and plan to replace it"
                ));
            }
        }
        if let Some(p) = self.percentage_used.filter(|p| *p >= 90) {
            a.push(format!(
                "disk {disk}: {p}% of its rated write endurance used; plan to replace it"
            ));
        }
        a
    }
}

/// Parses the output of `smartctl --json` (any of `-i -H -A -x`). A report in which smartctl
/// could not open or identify the device (exit status bits 0-1) is an error carrying
/// smartctl's own messages.
pub fn parse_smartctl_json(device: &str, json: &[u8]) -> Result<SmartHealth, StorageError> {
    let report_err = |message: String| StorageError::SmartReport {
        device: device.to_owned(),
        message,
    };
    let v: Value = serde_json::from_slice(json).map_err(|e| {
        report_err(format!(
            "its output is not JSON ({e}); is smartctl older than 7.0?"
        ))
    })?;
    let exit_status = v
        .pointer("/smartctl/exit_status")
        .and_then(Value::as_u64)
        .ok_or_else(|| {
            report_err(
                "its JSON has no smartctl.exit_status; is smartctl older than 7.0?".to_owned(),
            )
        })?;
    let exit_status = u8::try_from(exit_status).unwrap_or(u8::MAX);
    if exit_status & 0b11 != 0 {
        let messages: Vec<&str> = v
            .pointer("/smartctl/messages")
            .and_then(Value::as_array)
            .map(|m| {
                m.iter()
                    .filter_map(|m| m.get("string").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        let messages = if messages.is_empty() {
            "no message".to_owned()
        } else {
            messages.join("; ")
        };
        return Err(report_err(format!(
            "{messages} (exit status {exit_status})"
        )));
    }
    let int = |p: &str| v.pointer(p).and_then(Value::as_i64);
    let text = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned);
    let ata_raw = |id: i64| {
        v.pointer("/ata_smart_attributes/table")
            .and_then(Value::as_array)
            .and_then(|t| {
                t.iter()
                    .find(|a| a.get("id").and_then(Value::as_i64) == Some(id))
            })
            .and_then(|a| a.pointer("/raw/value"))
            .and_then(Value::as_i64)
    };
    Ok(SmartHealth {
        passed: v.pointer("/smart_status/passed").and_then(Value::as_bool),
        model: text("/model_name"),
        serial: text("/serial_number"),
        temperature_c: int("/temperature/current"),
        power_on_hours: int("/power_on_time/hours"),
        reallocated_sectors: ata_raw(5),
        pending_sectors: ata_raw(197),
        media_errors: int("/nvme_smart_health_information_log/media_errors"),
        percentage_used: int("/nvme_smart_health_information_log/percentage_used"),
        exit_status,
    })
}

/// The smartctl program, found on the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smartctl {
    program: PathBuf,
    timeout: Duration,
}

impl Smartctl {
    /// Finds smartctl in `/usr/sbin`, `/sbin` or `/usr/bin`; `None` when smartmontools is not
    /// installed (SMART is then simply not reported).
    pub fn find() -> Option<Self> {
        ["/usr/sbin/smartctl", "/sbin/smartctl", "/usr/bin/smartctl"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .map(Self::at)
    }

    /// A smartctl at a given path, with a 20 s timeout per device.
    pub fn at(program: &Path) -> Self {
        Self {
            program: program.to_owned(),
            timeout: Duration::from_secs(20),
        }
    }

    /// Changes the time one device may take before smartctl is killed.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Asks smartctl about one device (`/dev/sda`). Needs read access to the raw device (root
    /// or the `disk` group). A hung disk cannot hang the caller past the timeout.
    pub fn health(&self, device: &Path) -> Result<SmartHealth, StorageError> {
        let fail = |message: String| StorageError::Smartctl {
            program: self.program.clone(),
            device: device.to_owned(),
            message,
        };
        let mut child = Command::new(&self.program)
            .args(["--json=c", "-i", "-H", "-A"])
            .arg(device)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| fail(format!("cannot start it: {e}")))?;
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| fail("no stdout pipe".to_owned()))?;
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            stdout.read_to_end(&mut out).map(|_| out)
        });
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if started.elapsed() >= self.timeout => {
                    // Kill and reap; errors here only mean it already exited.
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fail(format!(
                        "no answer within {:?}; the disk may be hanging",
                        self.timeout
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(fail(format!("waiting for it failed: {e}"))),
            }
        }
        let out = reader
            .join()
            .map_err(|_| fail("the output reader panicked".to_owned()))?
            .map_err(|e| fail(format!("reading its output failed: {e}")))?;
        parse_smartctl_json(&device.display().to_string(), &out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::fake;

    const ATA_OK: &str = r#"{
      "json_format_version": [1, 0],
      "smartctl": {"version": [7, 3], "exit_status": 0},
      "device": {"name": "/dev/sda", "info_name": "/dev/sda [SAT]", "type": "sat", "protocol": "ATA"},
      "model_name": "Samsung SSD 870 EVO 500GB",
      "serial_number": "S6PXNM0T123456A",
      "smart_status": {"passed": true},
      "ata_smart_attributes": {"revision": 1, "table": [
        {"id": 5, "name": "Reallocated_Sector_Ct", "value": 100, "worst": 100, "thresh": 10,
         "raw": {"value": 2, "string": "2"}},
        {"id": 9, "name": "Power_On_Hours", "value": 97, "worst": 97, "thresh": 0,
         "raw": {"value": 12034, "string": "12034"}},
        {"id": 197, "name": "Current_Pending_Sector", "value": 100, "worst": 100, "thresh": 0,
         "raw": {"value": 0, "string": "0"}}
      ]},
      "power_on_time": {"hours": 12034},
      "temperature": {"current": 31}
    }"#;

    const NVME_FAILING: &str = r#"{
      "json_format_version": [1, 0],
      "smartctl": {"version": [7, 3], "exit_status": 8},
      "device": {"name": "/dev/nvme0", "type": "nvme", "protocol": "NVMe"},
      "model_name": "KINGSTON SNV2S500G",
      "serial_number": "50026B7686A1B2C3",
      "smart_status": {"passed": false, "nvme": {"value": 4}},
      "nvme_smart_health_information_log": {"critical_warning": 4, "temperature": 48,
        "available_spare": 100, "percentage_used": 93, "power_on_hours": 20400, "media_errors": 0},
      "temperature": {"current": 48},
      "power_on_time": {"hours": 20400}
    }"#;

    #[test]
    fn parses_an_ata_report() {
        let h = parse_smartctl_json("/dev/sda", ATA_OK.as_bytes()).expect("parsed");
        assert_eq!(h.passed, Some(true));
        assert_eq!(h.model.as_deref(), Some("Samsung SSD 870 EVO 500GB"));
        assert_eq!(h.temperature_c, Some(31));
        assert_eq!(h.power_on_hours, Some(12034));
        assert_eq!(
            (h.reallocated_sectors, h.pending_sectors),
            (Some(2), Some(0))
        );
        assert_eq!(
            h.alarms("sda"),
            vec!["disk sda: 2 reallocated sectors; watch it and plan to replace it".to_owned()]
        );
    }

    #[test]
    fn parses_a_failing_nvme_report() {
        let h = parse_smartctl_json("/dev/nvme0", NVME_FAILING.as_bytes()).expect("parsed");
        assert_eq!(h.passed, Some(false));
        assert_eq!(h.percentage_used, Some(93));
        assert_eq!(h.reallocated_sectors, None);
        assert_eq!(
            h.alarms("nvme0n1"),
            vec![
                "disk nvme0n1: SMART says the disk is failing; replace it".to_owned(),
                "disk nvme0n1: 93% of its rated write endurance used; plan to replace it"
                    .to_owned(),
            ]
        );
    }

    #[test]
    fn refuses_unreadable_reports_with_smartctls_words() {
        let err = parse_smartctl_json(
            "/dev/vda",
            br#"{"smartctl":{"messages":[{"string":"/dev/vda: Unable to detect device type","severity":"error"}],"exit_status":1}}"#,
        )
        .expect_err("exit 1");
        assert_eq!(
            err.to_string(),
            "smartctl could not report on /dev/vda: /dev/vda: Unable to detect device type (exit status 1)"
        );
        let err = parse_smartctl_json("/dev/sda", b"smartctl 6.6").expect_err("not json");
        assert!(err.to_string().contains("not JSON"), "{err}");
        let err = parse_smartctl_json("/dev/sda", b"{}").expect_err("no status");
        assert!(err.to_string().contains("no smartctl.exit_status"), "{err}");
    }

    #[test]
    fn the_real_smartctl_on_a_device_it_cannot_read_gives_a_clear_error() {
        // Runs the real smartctl when smartmontools is installed (`apt-get install
        // smartmontools`; CI should install it); without it there is nothing to run.
        let Some(smartctl) = Smartctl::find() else {
            eprintln!("smartctl not installed: SMART is not reported");
            return;
        };
        let err = smartctl
            .health(Path::new("/dev/null"))
            .expect_err("/dev/null is no disk");
        assert!(
            err.to_string()
                .starts_with("smartctl could not report on /dev/null: "),
            "{err}"
        );
        let err = Smartctl::at(Path::new("/nonexistent/smartctl"))
            .health(Path::new("/dev/sda"))
            .expect_err("no program");
        assert!(err.to_string().contains("cannot start it"), "{err}");
    }

    #[test]
    fn a_hanging_smartctl_is_killed_at_the_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let program = dir.path().join("smartctl");
        std::fs::write(&program, "#!/bin/sh\nexec sleep 30\n").expect("write");
        let mut perms = std::fs::metadata(&program).expect("meta").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&program, perms).expect("chmod");
        let started = Instant::now();
        let err = Smartctl::at(&program)
            .with_timeout(Duration::from_millis(300))
            .health(Path::new("/dev/sda"))
            .expect_err("timeout");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(err.to_string().contains("no answer within 300ms"), "{err}");
    }

    #[test]
    fn statvfs_and_the_free_space_alarm() {
        let dir = tempfile::tempdir().expect("tempdir");
        let u = filesystem_usage(dir.path()).expect("statvfs");
        assert!(u.total_bytes > 0 && u.available_bytes <= u.total_bytes);
        let err = filesystem_usage(Path::new("/nonexistent/x")).expect_err("missing");
        assert!(
            err.to_string()
                .starts_with("statvfs of /nonexistent/x failed"),
            "{err}"
        );

        let limits = StorageLimits {
            min_free_percent: 10,
            smart: true,
        };
        let full = FsUsage::from_counts("/var/lib/medgate".into(), 4096, 1_000_000, 50_000, 10);
        assert_eq!(
            full.alarm(&limits).as_deref(),
            Some(
                "filesystem of /var/lib/medgate has 5.0% free (195 MiB), below the profile's 10%; check that forwarding drains the spool"
            )
        );
        let fine = FsUsage::from_counts("/d".into(), 4096, 1_000_000, 500_000, 10);
        assert_eq!(fine.alarm(&limits), None);
        let no_inodes = FsUsage::from_counts("/d".into(), 4096, 1_000_000, 500_000, 0);
        assert!(
            no_inodes
                .alarm(&limits)
                .is_some_and(|a| a.contains("no free inodes"))
        );
    }

    #[test]
    fn lists_physical_disks_of_a_fake_sys_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        fake::file(r, "/sys/block/sda/size", "976773168\n");
        fake::file(r, "/sys/block/sda/queue/rotational", "0\n");
        fake::file(r, "/sys/block/sda/removable", "0\n");
        fake::file(r, "/sys/block/sda/device/model", "Samsung SSD 870\n");
        fake::file(r, "/sys/block/loop0/size", "0\n");
        fake::file(r, "/sys/block/vda/size", "2097152\n");
        fake::dir(r, "/sys/block/vda/device");
        let disks = list_disks(&SysRoot::new(r)).expect("listed");
        assert_eq!(disks.len(), 2);
        assert_eq!(disks[0].name, "sda");
        assert_eq!(disks[0].size_bytes, 976_773_168 * 512);
        assert_eq!(disks[0].rotational, Some(false));
        assert_eq!(disks[0].model.as_deref(), Some("Samsung SSD 870"));
        assert_eq!(disks[1].name, "vda");
        assert_eq!(
            (disks[1].model.as_deref(), disks[1].rotational),
            (None, None)
        );
    }
}
