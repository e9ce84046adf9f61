//! The image's A/B slot backend (docs/ota.md, "Slots"; os-image/README.md, "A/B slots").
//!
//! The booted slot is the one the running kernel's command line names (`medgate.slot=A`); the
//! other one is where an install goes. Its partitions are written directly
//! (`/dev/disk/by-partlabel/root-B`, `root-B-verity`); everything on the ESP — a slot's UKI,
//! its boot counter — goes through `medgate-slot` ([`SlotTool`]), which on the image the root
//! helper `medgate-slot-apply` runs for the appliance (the appliance runs as `medgate`, the ESP is
//! root's).
//!
//! An install first takes the target slot out of rotation (`mark-bad`: a half-written slot is
//! never a fallback), streams the root file system and its hash tree into the partitions,
//! stages the slot's UKI, and only once the payload's end checked out (size and SHA-256) puts the
//! UKI on the ESP — the UKI is what makes a slot bootable, so a cut install leaves nothing new
//! bootable. A switch is `set-next X --tries 3` (the shell then reboots); the boot into the new
//! slot is on probation while its UKI's name carries a counter; commit is `mark-good`; rollback
//! is `mark-bad` of the booted slot (the other one, good, then sorts first). A new slot that
//! never gets healthy is left by systemd-boot's counter by itself.
//!
//! Which version each slot holds: the booted root says its own (`/usr/lib/medgate/image-version`,
//! written by `os-image/build --version`); the data partition keeps a record
//! (`<state>/slots`: `A 0.1.0`, `B 0.2.0`), written after an install's UKI is in place.

use crate::format::{BundleError, Payload};
use crate::rootimage::{HEADER_LEN, Header, Slot};
use crate::slot::{Probation, SlotBackend, SlotError, SlotStatus};
use crate::types::Version;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Boots a switched-to slot gets to become healthy.
pub const SWITCH_TRIES: u32 = 3;

/// Where the backend finds what it uses (injectable: the unit tests use plain files).
#[derive(Debug, Clone)]
pub struct AbPaths {
    /// The directory of the partitions by GPT name (`root-A`, `root-A-verity`, `root-B`, …).
    pub partitions: PathBuf,
    /// The running kernel's command line (`medgate.slot=`).
    pub cmdline: PathBuf,
    /// The booted root's version file (absent: the record's, else unknown).
    pub image_version: PathBuf,
    /// The backend's own files on the data partition: the record `slots`, the staged UKI.
    pub state: PathBuf,
}

impl AbPaths {
    /// The image's paths, with the backend's files under `state`.
    pub fn image(state: PathBuf) -> Self {
        Self {
            partitions: PathBuf::from("/dev/disk/by-partlabel"),
            cmdline: PathBuf::from("/proc/cmdline"),
            image_version: PathBuf::from("/usr/lib/medgate/image-version"),
            state,
        }
    }
}

/// How `medgate-slot` is run.
#[derive(Debug, Clone)]
pub enum SlotTool {
    /// Run the script directly (root, or tests with `MEDGATE_ESP` set to a directory).
    Direct {
        /// The `medgate-slot` script.
        script: PathBuf,
        /// `MEDGATE_ESP` for it (none: its default, `/efi`).
        esp: Option<PathBuf>,
    },
    /// Ask the root helper `medgate-slot-apply` (a path unit watches `<dir>/request`; it answers
    /// in `<answers>/result`), for an appliance that runs unprivileged.
    Helper {
        /// Where the request is written (the appliance's; the helper only reads it).
        dir: PathBuf,
        /// Where the helper answers (root's, readable).
        answers: PathBuf,
        /// How long to wait for an answer.
        timeout: Duration,
    },
}

/// The state of one slot on the ESP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// Its UKI has no counter: a committed slot.
    Good,
    /// On probation with this many boots left.
    Trying(u32),
    /// No tries left: never picked while the other is usable.
    Bad,
}

/// What `medgate-slot status` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspStatus {
    /// The booted slot (as the kernel command line the script read says).
    pub booted: Option<Slot>,
    /// The slot the next boot picks.
    pub next: Option<Slot>,
    /// Slot A's state (none: no UKI).
    pub a: Option<SlotState>,
    /// Slot B's state.
    pub b: Option<SlotState>,
}

impl EspStatus {
    /// The state of `slot`.
    pub fn of(&self, slot: Slot) -> Option<SlotState> {
        match slot {
            Slot::A => self.a,
            Slot::B => self.b,
        }
    }

    /// Parses `medgate-slot status`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut s = Self {
            booted: None,
            next: None,
            a: None,
            b: None,
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("booted:") {
                s.booted = rest.trim().parse().ok();
            } else if let Some(rest) = line.strip_prefix("next:") {
                let rest = rest.trim();
                if !rest.is_empty() {
                    s.next = Some(rest.parse()?);
                }
            } else if let Some(rest) = line.strip_prefix("slot ") {
                let (slot, what) = rest
                    .split_once(": ")
                    .ok_or_else(|| format!("unexpected line {line:?}"))?;
                let slot: Slot = slot.parse()?;
                let state = if what.starts_with("good") {
                    SlotState::Good
                } else if what.starts_with("bad") {
                    SlotState::Bad
                } else if let Some(p) = what.strip_prefix("on probation, ") {
                    let left = p
                        .split_whitespace()
                        .next()
                        .and_then(|n| n.parse().ok())
                        .ok_or_else(|| format!("unexpected line {line:?}"))?;
                    SlotState::Trying(left)
                } else {
                    return Err(format!("unexpected line {line:?}"));
                };
                match slot {
                    Slot::A => s.a = Some(state),
                    Slot::B => s.b = Some(state),
                }
            }
        }
        Ok(s)
    }
}

/// The A/B backend.
#[derive(Debug, Clone)]
pub struct AbBackend {
    paths: AbPaths,
    tool: SlotTool,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SlotError + 'a {
    move |source| SlotError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn tool_err(command: &str, message: impl Into<String>) -> SlotError {
    SlotError::Tool {
        command: command.to_owned(),
        message: message.into(),
    }
}

/// The slot named by `medgate.slot=` in a kernel command line.
pub fn booted_slot(cmdline: &str) -> Option<Slot> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("medgate.slot="))
        .and_then(|s| s.parse().ok())
}

impl AbBackend {
    /// A backend over `paths`, running `medgate-slot` as `tool` says. Opens nothing yet.
    pub fn new(paths: AbPaths, tool: SlotTool) -> Self {
        Self { paths, tool }
    }

    /// The booted slot: from the kernel command line, or, where this process may not read it
    /// (the appliance's sandbox hides /proc/cmdline), from `medgate-slot status`.
    pub fn booted(&self) -> Result<Slot, SlotError> {
        match self.cmdline_slot() {
            Some(slot) => Ok(slot),
            None => self.booted_from(&self.esp_status()?),
        }
    }

    fn cmdline_slot(&self) -> Option<Slot> {
        fs::read_to_string(&self.paths.cmdline)
            .ok()
            .as_deref()
            .and_then(booted_slot)
    }

    fn booted_from(&self, esp: &EspStatus) -> Result<Slot, SlotError> {
        self.cmdline_slot()
            .or(esp.booted)
            .ok_or_else(|| SlotError::NotBooted(self.paths.cmdline.clone()))
    }

    fn partition(&self, slot: Slot, verity: bool) -> PathBuf {
        let name = if verity {
            format!("root-{slot}-verity")
        } else {
            format!("root-{slot}")
        };
        self.paths.partitions.join(name)
    }

    fn record_path(&self) -> PathBuf {
        self.paths.state.join("slots")
    }

    /// The recorded version of each slot.
    fn record(&self) -> Result<[Option<Version>; 2], SlotError> {
        let path = self.record_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok([None, None]),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let mut r = [None, None];
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut w = line.split_whitespace();
            let (Some(slot), Some(version), None) = (w.next(), w.next(), w.next()) else {
                return Err(SlotError::Damaged(path));
            };
            let (Ok(slot), Ok(version)) = (slot.parse::<Slot>(), version.parse::<Version>()) else {
                return Err(SlotError::Damaged(path));
            };
            r[idx(slot)] = Some(version);
        }
        Ok(r)
    }

    fn write_record(&self, r: &[Option<Version>; 2]) -> Result<(), SlotError> {
        let dir = &self.paths.state;
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let path = self.record_path();
        let tmp = dir.join("slots.new");
        let mut text = String::new();
        for slot in [Slot::A, Slot::B] {
            if let Some(v) = &r[idx(slot)] {
                text.push_str(&format!("{slot} {v}\n"));
            }
        }
        let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(text.as_bytes())
            .map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync directory", dir))
    }

    /// The version the booted root holds.
    fn booted_version(&self, booted: Slot) -> Result<Option<Version>, SlotError> {
        let p = &self.paths.image_version;
        match fs::read_to_string(p) {
            Ok(t) => t
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| SlotError::Damaged(p.clone())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Ok(self.record()?[idx(booted)].clone())
            }
            Err(e) => Err(io_err("read", p)(e)),
        }
    }

    /// Runs `medgate-slot ARGS`; its standard output.
    pub fn slot_command(&self, args: &[&str]) -> Result<String, SlotError> {
        let command = format!("medgate-slot {}", args.join(" "));
        match &self.tool {
            SlotTool::Direct { script, esp } => {
                let mut c = Command::new(script);
                c.args(args);
                if let Some(esp) = esp {
                    c.env("MEDGATE_ESP", esp);
                }
                let out = c.output().map_err(|e| {
                    tool_err(&command, format!("cannot run {}: {e}", script.display()))
                })?;
                if !out.status.success() {
                    return Err(tool_err(
                        &command,
                        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                    ));
                }
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            }
            SlotTool::Helper {
                dir,
                answers,
                timeout,
            } => helper(dir, answers, *timeout, &args.join(" "), &command),
        }
    }

    /// What the ESP says of both slots.
    pub fn esp_status(&self) -> Result<EspStatus, SlotError> {
        let out = self.slot_command(&["status"])?;
        EspStatus::parse(&out).map_err(|m| tool_err("medgate-slot status", m))
    }

    /// Reboots the box (after a switch or a rollback): `systemctl reboot`, or the helper's.
    pub fn reboot(&self) -> Result<(), SlotError> {
        match &self.tool {
            SlotTool::Direct { .. } => {
                let out = Command::new("systemctl")
                    .arg("reboot")
                    .output()
                    .map_err(|e| tool_err("systemctl reboot", e.to_string()))?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(tool_err(
                        "systemctl reboot",
                        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                    ))
                }
            }
            SlotTool::Helper {
                dir,
                answers,
                timeout,
            } => helper(dir, answers, *timeout, "reboot", "reboot").map(|_| ()),
        }
    }

    fn size_of(path: &Path) -> Result<u64, SlotError> {
        let mut f = File::open(path).map_err(io_err("open", path))?;
        f.seek(SeekFrom::End(0)).map_err(io_err("size", path))
    }

    fn staged_uki(&self, slot: Slot) -> PathBuf {
        self.paths.state.join(format!("uki-{slot}.efi"))
    }

    fn stream<R: Read>(
        payload: &mut Payload<R>,
        len: u64,
        out: &mut dyn Write,
        buf: &mut [u8],
        path: &Path,
    ) -> Result<(), SlotError> {
        let mut left = len;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            let n = payload
                .read(&mut buf[..want])
                .map_err(|e| SlotError::Payload(BundleError::from_io(e)))?;
            if n == 0 {
                return Err(SlotError::Payload(BundleError::Truncated {
                    what: "payload",
                }));
            }
            out.write_all(&buf[..n]).map_err(io_err("write", path))?;
            left -= n as u64;
        }
        Ok(())
    }

    fn write_parts<R: Read>(
        &self,
        target: Slot,
        payload: &mut Payload<R>,
        staged: &Path,
    ) -> Result<(), SlotError> {
        let mut head = [0u8; HEADER_LEN];
        payload
            .read_exact(&mut head)
            .map_err(|e| SlotError::Payload(BundleError::from_io(e)))?;
        let h = Header::parse(&head, payload.remaining())?;
        let (root_dev, verity_dev) = (self.partition(target, false), self.partition(target, true));
        h.fits(Self::size_of(&root_dev)?, Self::size_of(&verity_dev)?)?;
        let mut buf = vec![0u8; 1 << 20];
        for (dev, len) in [(&root_dev, h.root), (&verity_dev, h.verity)] {
            let mut f = OpenOptions::new()
                .write(true)
                .open(dev)
                .map_err(io_err("open for writing", dev))?;
            Self::stream(payload, len, &mut f, &mut buf, dev)?;
            f.sync_all().map_err(io_err("fsync", dev))?;
        }
        let mut uki = File::create(staged).map_err(io_err("create", staged))?;
        for slot in [Slot::A, Slot::B] {
            if slot == target {
                Self::stream(payload, h.uki(slot), &mut uki, &mut buf, staged)?;
            } else {
                Self::stream(payload, h.uki(slot), &mut io::sink(), &mut buf, staged)?;
            }
        }
        // The end: size and SHA-256 are checked on this read.
        match payload.read(&mut buf) {
            Ok(0) if payload.is_checked() => {}
            Ok(_) => return Err(SlotError::Payload(BundleError::TrailingData)),
            Err(e) => return Err(SlotError::Payload(BundleError::from_io(e))),
        }
        uki.sync_all().map_err(io_err("fsync", staged))
    }
}

fn idx(slot: Slot) -> usize {
    match slot {
        Slot::A => 0,
        Slot::B => 1,
    }
}

/// One request to the root helper: `<dir>/request` holds `<id> <request>`; the helper answers in
/// `<answers>/result` with `<id> ok|error` and then the output or message.
fn helper(
    dir: &Path,
    answers: &Path,
    timeout: Duration,
    request: &str,
    command: &str,
) -> Result<String, SlotError> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let path = dir.join("request");
    let tmp = dir.join("request.new");
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(format!("{id} {request}\n").as_bytes())?;
        f.set_permissions(fs::Permissions::from_mode(0o644))?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    };
    write().map_err(io_err("write", &path))?;
    let result = answers.join("result");
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Ok(text) = fs::read_to_string(&result) {
            let mut lines = text.splitn(2, '\n');
            let head = lines.next().unwrap_or("");
            let rest = lines.next().unwrap_or("").trim_end().to_owned();
            let mut w = head.split_whitespace();
            if w.next() == Some(id.to_string().as_str()) {
                return match w.next() {
                    Some("ok") => Ok(rest),
                    _ => Err(tool_err(command, rest)),
                };
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(tool_err(
        command,
        format!(
            "no answer from medgate-slot-apply within {} s (is medgate-slot-apply.path running? `systemctl status medgate-slot-apply.path`)",
            timeout.as_secs()
        ),
    ))
}

impl SlotBackend for AbBackend {
    fn status(&self) -> Result<SlotStatus, SlotError> {
        let esp = self.esp_status()?;
        let booted = self.booted_from(&esp)?;
        let active = self.booted_version(booted)?;
        let record = self.record()?;
        let other = record[idx(booted.other())].clone();
        let probation = match (esp.of(booted), &active) {
            (Some(SlotState::Trying(_)), Some(trying)) => Some(Probation {
                trying: trying.clone(),
                previous: other.clone().unwrap_or_else(|| trying.clone()),
            }),
            _ => None,
        };
        Ok(SlotStatus {
            active,
            installed: other.into_iter().collect(),
            probation,
        })
    }

    fn install<R: Read>(
        &mut self,
        version: &Version,
        payload: &mut Payload<R>,
    ) -> Result<(), SlotError> {
        let esp = self.esp_status()?;
        let booted = self.booted_from(&esp)?;
        let target = booted.other();
        let running = self.booted_version(booted)?;
        if running.as_ref() == Some(version) {
            return Err(SlotError::AlreadyActive(version.clone()));
        }
        if let Some(SlotState::Trying(_)) = esp.of(booted) {
            return Err(SlotError::InUse(running.unwrap_or_else(|| version.clone())));
        }
        // Out of rotation first: a half-written slot is never a fallback.
        let mut record = self.record()?;
        record[idx(target)] = None;
        self.write_record(&record)?;
        self.slot_command(&["mark-bad", target.as_str()])?;
        fs::create_dir_all(&self.paths.state).map_err(io_err("create", &self.paths.state))?;
        let staged = self.staged_uki(target);
        if let Err(e) = self.write_parts(target, payload, &staged) {
            let _ = fs::remove_file(&staged);
            return Err(e);
        }
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&staged, fs::Permissions::from_mode(0o644))
                .map_err(io_err("chmod", &staged))?;
        }
        let staged_arg = staged.display().to_string();
        let put = self.slot_command(&["install-uki", target.as_str(), &staged_arg]);
        let _ = fs::remove_file(&staged);
        put?;
        record[idx(target)] = Some(version.clone());
        if record[idx(booted)].is_none() {
            record[idx(booted)] = running;
        }
        self.write_record(&record)
    }

    fn switch(&mut self, version: &Version) -> Result<(), SlotError> {
        let booted = self.booted()?;
        if self.booted_version(booted)?.as_ref() == Some(version) {
            return Err(SlotError::AlreadyActive(version.clone()));
        }
        let target = booted.other();
        if self.record()?[idx(target)].as_ref() != Some(version) {
            return Err(SlotError::NotInstalled(version.clone()));
        }
        let tries = SWITCH_TRIES.to_string();
        self.slot_command(&["set-next", target.as_str(), "--tries", &tries])?;
        Ok(())
    }

    /// Ends the probation of the booted slot. Already good (the health gate's
    /// `systemd-bless-boot` may have been first) is fine; bad is not.
    fn commit(&mut self) -> Result<(), SlotError> {
        let esp = self.esp_status()?;
        let booted = self.booted_from(&esp)?;
        match esp.of(booted) {
            Some(SlotState::Trying(_)) => {
                self.slot_command(&["mark-good", booted.as_str()])?;
                Ok(())
            }
            Some(SlotState::Good) => Ok(()),
            _ => Err(SlotError::NoProbation),
        }
    }

    /// Takes the booted slot out of rotation; the other one boots next (the shell reboots).
    fn rollback(&mut self) -> Result<(), SlotError> {
        let esp = self.esp_status()?;
        let booted = self.booted_from(&esp)?;
        let other = booted.other();
        if esp.of(other).is_none() || esp.of(other) == Some(SlotState::Bad) {
            // Nothing good to go back to: keep the booted slot rather than boot nothing.
            return Err(SlotError::NoProbation);
        }
        self.slot_command(&["mark-bad", booted.as_str()])?;
        if self.esp_status()?.next != Some(other) {
            let tries = SWITCH_TRIES.to_string();
            self.slot_command(&["set-next", other.as_str(), "--tries", &tries])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_lines_parse() {
        let s = EspStatus::parse(
            "booted: B\nnext:   A\nslot A: good (generation 1, medgate-1-A.efi)\nslot B: on probation, 2 tries left, 1 done (generation 2, medgate-2-B+2-1.efi)\n",
        )
        .expect("parses");
        assert_eq!(
            s,
            EspStatus {
                booted: Some(Slot::B),
                next: Some(Slot::A),
                a: Some(SlotState::Good),
                b: Some(SlotState::Trying(2))
            }
        );
        assert_eq!(
            EspStatus::parse("slot B: bad, no tries left (generation 0, x)\n")
                .expect("bad")
                .b,
            Some(SlotState::Bad)
        );
        assert!(EspStatus::parse("slot C: good\n").is_err());
        assert_eq!(booted_slot("ro medgate.slot=B quiet"), Some(Slot::B));
        assert_eq!(booted_slot("ro quiet"), None);
    }
}
