//! Watchdogs: the policy that decides when to pet (sans-IO: only while the listener and the spool
//! are healthy, and only on a fresh health report), the hardware watchdog (`/dev/watchdog`, ioctls
//! through nix, magic close), and [`Watchdogs`], which pets both it and systemd's.

use std::fmt;
use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::notify::{NotifyError, SdNotify};
use crate::sysfs::SysRoot;

/// The health the appliance reports to the watchdog policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// The DICOM listener accepts associations.
    pub listener_ok: bool,
    /// The spool accepts writes (filesystem writable, index open).
    pub spool_ok: bool,
}

impl Health {
    /// Both listener and spool are healthy.
    pub fn is_healthy(self) -> bool {
        self.listener_ok && self.spool_ok
    }
}

/// Why the policy does not pet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withheld {
    /// No health report arrived yet.
    NoReport,
    /// The last report says listener or spool (or both) are down.
    Unhealthy(Health),
    /// The last report is too old: whatever should report is stuck.
    Stale {
        /// Age of the last report.
        age: Duration,
        /// The limit.
        limit: Duration,
    },
}

impl fmt::Display for Withheld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Withheld::NoReport => f.write_str("no health report yet"),
            Withheld::Unhealthy(h) => match (h.listener_ok, h.spool_ok) {
                (false, false) => f.write_str("listener and spool unhealthy"),
                (false, true) => f.write_str("listener unhealthy"),
                (true, false) => f.write_str("spool unhealthy"),
                (true, true) => f.write_str("healthy"),
            },
            Withheld::Stale { age, limit } => write!(
                f,
                "last health report is {:.1}s old (limit {:.1}s)",
                age.as_secs_f64(),
                limit.as_secs_f64()
            ),
        }
    }
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PetDecision {
    /// Pet the watchdogs.
    Pet,
    /// Healthy, but the last pet is recent enough.
    NotDue,
    /// Do not pet: the watchdogs will fire if this lasts.
    Withhold(Withheld),
}

/// The sans-IO petting policy. Feed it health reports with [`WatchdogPolicy::report`] and ask
/// [`WatchdogPolicy::decide`] on every tick.
#[derive(Debug, Clone)]
pub struct WatchdogPolicy {
    pet_interval: Duration,
    max_report_age: Duration,
    last_report: Option<(Health, Instant)>,
    last_pet: Option<Instant>,
}

impl WatchdogPolicy {
    /// Pets at most every `pet_interval`, and only on a report younger than `max_report_age`.
    pub fn new(pet_interval: Duration, max_report_age: Duration) -> Self {
        Self {
            pet_interval,
            max_report_age,
            last_report: None,
            last_pet: None,
        }
    }

    /// For a watchdog that fires after `timeout`: pet every third of it, and require a report
    /// younger than half of it (so a stuck reporter stops the petting well before the timeout).
    pub fn for_timeout(timeout: Duration) -> Self {
        Self::new(timeout / 3, timeout / 2)
    }

    /// How often to tick.
    pub fn pet_interval(&self) -> Duration {
        self.pet_interval
    }

    /// Records a health report.
    pub fn report(&mut self, health: Health, now: Instant) {
        self.last_report = Some((health, now));
    }

    /// Decides whether to pet now; a [`PetDecision::Pet`] is recorded as done.
    pub fn decide(&mut self, now: Instant) -> PetDecision {
        let Some((health, at)) = self.last_report else {
            return PetDecision::Withhold(Withheld::NoReport);
        };
        let age = now.saturating_duration_since(at);
        if age > self.max_report_age {
            return PetDecision::Withhold(Withheld::Stale {
                age,
                limit: self.max_report_age,
            });
        }
        if !health.is_healthy() {
            return PetDecision::Withhold(Withheld::Unhealthy(health));
        }
        if self
            .last_pet
            .is_some_and(|p| now.saturating_duration_since(p) < self.pet_interval)
        {
            return PetDecision::NotDue;
        }
        self.last_pet = Some(now);
        PetDecision::Pet
    }
}

/// A failed hardware watchdog operation.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    /// The device could not be opened.
    #[error(
        "opening watchdog {path} failed: {source}; it needs the board's watchdog driver, access for the \
         service (group medgate, DeviceAllow= in the unit), and no other holder (only one process may open it)"
    )]
    Open {
        /// The device.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An ioctl failed.
    #[error("{request} on {path} failed: {errno}; {hint}")]
    Ioctl {
        /// The device.
        path: PathBuf,
        /// The request name (`WDIOC_KEEPALIVE`).
        request: &'static str,
        /// The errno.
        errno: nix::Error,
        /// What it probably means.
        hint: &'static str,
    },
    /// The magic close could not be written.
    #[error(
        "writing the magic close 'V' to {path} failed: {source}; the watchdog stays armed and resets the box \
         unless something pets it"
    )]
    MagicClose {
        /// The device.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

#[allow(unsafe_code)]
mod sys {
    //! The watchdog ioctls of `<linux/watchdog.h>`, declared through nix's macros (which
    //! generate `unsafe fn`s: the only unsafe code of the crate).
    nix::ioctl_read!(keepalive, b'W', 5, nix::libc::c_int);
    nix::ioctl_readwrite!(set_timeout, b'W', 6, nix::libc::c_int);
    nix::ioctl_read!(get_timeout, b'W', 7, nix::libc::c_int);

    /// `WDIOC_KEEPALIVE`.
    pub(super) fn wdioc_keepalive(fd: std::os::fd::RawFd) -> nix::Result<()> {
        let mut dummy: nix::libc::c_int = 0;
        // SAFETY: `fd` is an open file descriptor borrowed from a live `File`; the kernel
        // writes at most one c_int to `dummy`, a valid local.
        unsafe { keepalive(fd, &mut dummy) }.map(|_| ())
    }

    /// `WDIOC_SETTIMEOUT`: returns the timeout the driver actually set.
    pub(super) fn wdioc_settimeout(
        fd: std::os::fd::RawFd,
        secs: nix::libc::c_int,
    ) -> nix::Result<nix::libc::c_int> {
        let mut value = secs;
        // SAFETY: `fd` is an open descriptor of a live `File`; `value` is a valid c_int the
        // kernel reads and overwrites.
        unsafe { set_timeout(fd, &mut value) }.map(|_| value)
    }

    /// `WDIOC_GETTIMEOUT`.
    pub(super) fn wdioc_gettimeout(fd: std::os::fd::RawFd) -> nix::Result<nix::libc::c_int> {
        let mut value: nix::libc::c_int = 0;
        // SAFETY: as above; the kernel writes one c_int to `value`.
        unsafe { get_timeout(fd, &mut value) }.map(|_| value)
    }
}

fn ioctl_hint(errno: nix::Error, request: &str) -> &'static str {
    match errno {
        nix::Error::ENOTTY => {
            "the file is not a watchdog device; check watchdog.device in the hardware profile"
        }
        nix::Error::EINVAL if request == "WDIOC_SETTIMEOUT" => {
            "the driver refuses this timeout; choose another watchdog.timeout_secs in the hardware profile"
        }
        nix::Error::EOPNOTSUPP => {
            "the driver does not support it; choose another watchdog in the hardware profile"
        }
        _ => "check the watchdog driver (dmesg)",
    }
}

/// The hardware watchdog. Opening it arms it: from then on the box resets unless
/// [`HardwareWatchdog::keepalive`] is called within the timeout. [`HardwareWatchdog::disarm`]
/// (the magic close) stops it on a clean shutdown; dropping it without disarming leaves it
/// armed, on purpose: a crashed appliance must be restarted in time or the box resets.
#[derive(Debug)]
pub struct HardwareWatchdog {
    file: Option<File>,
    path: PathBuf,
}

impl HardwareWatchdog {
    /// Opens (and so arms) the device, e.g. `/dev/watchdog` under `root`.
    pub fn open(root: &SysRoot, device: &str) -> Result<Self, WatchdogError> {
        let path = root.path(device);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|source| WatchdogError::Open {
                path: path.clone(),
                source,
            })?;
        tracing::info!(device = %path.display(), "hardware watchdog armed");
        Ok(Self {
            file: Some(file),
            path,
        })
    }

    /// The device path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn ioctl<T>(
        &self,
        request: &'static str,
        op: impl FnOnce(std::os::fd::RawFd) -> nix::Result<T>,
    ) -> Result<T, WatchdogError> {
        let fd = match &self.file {
            Some(f) => f.as_raw_fd(),
            None => {
                return Err(WatchdogError::Ioctl {
                    path: self.path.clone(),
                    request,
                    errno: nix::Error::EBADF,
                    hint: "the watchdog was already disarmed",
                });
            }
        };
        op(fd).map_err(|errno| WatchdogError::Ioctl {
            path: self.path.clone(),
            request,
            errno,
            hint: ioctl_hint(errno, request),
        })
    }

    /// Sets the timeout in seconds; returns the one the driver chose (drivers round).
    pub fn set_timeout(&mut self, secs: u32) -> Result<u32, WatchdogError> {
        let secs = nix::libc::c_int::try_from(secs).unwrap_or(nix::libc::c_int::MAX);
        let actual = self.ioctl("WDIOC_SETTIMEOUT", |fd| sys::wdioc_settimeout(fd, secs))?;
        Ok(u32::try_from(actual).unwrap_or(0))
    }

    /// The current timeout in seconds.
    pub fn timeout(&self) -> Result<u32, WatchdogError> {
        let t = self.ioctl("WDIOC_GETTIMEOUT", sys::wdioc_gettimeout)?;
        Ok(u32::try_from(t).unwrap_or(0))
    }

    /// Pets the watchdog (`WDIOC_KEEPALIVE`).
    pub fn keepalive(&mut self) -> Result<(), WatchdogError> {
        self.ioctl("WDIOC_KEEPALIVE", sys::wdioc_keepalive)
    }

    /// The magic close: writes `V` and closes, which stops the watchdog (unless the kernel was
    /// built or booted with `nowayout`). Call it only on a clean shutdown.
    pub fn disarm(mut self) -> Result<(), WatchdogError> {
        let Some(mut file) = self.file.take() else {
            return Ok(());
        };
        file.write_all(b"V")
            .map_err(|source| WatchdogError::MagicClose {
                path: self.path.clone(),
                source,
            })?;
        drop(file);
        tracing::info!(device = %self.path.display(), "hardware watchdog disarmed (magic close)");
        Ok(())
    }
}

impl Drop for HardwareWatchdog {
    fn drop(&mut self) {
        if self.file.is_some() {
            tracing::warn!(
                device = %self.path.display(),
                "hardware watchdog closed without magic close: it stays armed and resets the box unless petted"
            );
        }
    }
}

/// A failed pet of one of the watchdogs.
#[derive(Debug, thiserror::Error)]
pub enum PetError {
    /// The hardware watchdog.
    #[error(transparent)]
    Hardware(#[from] WatchdogError),
    /// systemd's watchdog.
    #[error(transparent)]
    Systemd(#[from] NotifyError),
}

/// The policy plus the watchdogs it pets: the hardware one and systemd's (either may be absent).
#[derive(Debug)]
pub struct Watchdogs {
    policy: WatchdogPolicy,
    hardware: Option<HardwareWatchdog>,
    systemd: Option<SdNotify>,
    last_withheld: Option<Withheld>,
}

impl Watchdogs {
    /// Combines a policy with the watchdogs to pet.
    pub fn new(
        policy: WatchdogPolicy,
        hardware: Option<HardwareWatchdog>,
        systemd: Option<SdNotify>,
    ) -> Self {
        Self {
            policy,
            hardware,
            systemd,
            last_withheld: None,
        }
    }

    /// The systemd notifier, for `READY=1` and `STATUS=` (it is the one petted here).
    pub fn systemd(&self) -> Option<&SdNotify> {
        self.systemd.as_ref()
    }

    /// How often to call [`Watchdogs::tick`].
    pub fn pet_interval(&self) -> Duration {
        self.policy.pet_interval()
    }

    /// Records a health report.
    pub fn report(&mut self, health: Health, now: Instant) {
        self.policy.report(health, now);
    }

    /// Pets both watchdogs if the policy says so; logs once when petting stops and resumes.
    /// A failure of one watchdog does not keep the other from being petted.
    pub fn tick(&mut self, now: Instant) -> Result<PetDecision, PetError> {
        let decision = self.policy.decide(now);
        match decision {
            PetDecision::Pet => {
                if let Some(w) = self.last_withheld.take() {
                    tracing::info!(was = %w, "healthy again: petting the watchdogs");
                }
                let hw = self
                    .hardware
                    .as_mut()
                    .map(HardwareWatchdog::keepalive)
                    .transpose();
                let sd = self.systemd.as_ref().map(SdNotify::watchdog).transpose();
                hw?;
                sd?;
            }
            PetDecision::Withhold(w) => {
                let kind_changed = self
                    .last_withheld
                    .is_none_or(|last| std::mem::discriminant(&last) != std::mem::discriminant(&w));
                if kind_changed {
                    tracing::warn!(reason = %w, "not petting the watchdogs: the box resets if this lasts");
                }
                self.last_withheld = Some(w);
            }
            PetDecision::NotDue => {}
        }
        Ok(decision)
    }

    /// Clean shutdown: tells systemd we are stopping and disarms the hardware watchdog.
    pub fn shutdown(mut self) -> Result<(), PetError> {
        if let Some(sd) = self.systemd.take() {
            sd.stopping()?;
        }
        if let Some(hw) = self.hardware.take() {
            hw.disarm()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    const OK: Health = Health {
        listener_ok: true,
        spool_ok: true,
    };
    const SPOOL_DOWN: Health = Health {
        listener_ok: true,
        spool_ok: false,
    };
    const S: Duration = Duration::from_secs(1);

    #[test]
    fn pets_only_when_healthy_fresh_and_due() {
        let t0 = Instant::now();
        let mut p = WatchdogPolicy::for_timeout(30 * S);
        assert_eq!(p.pet_interval(), 10 * S);
        assert_eq!(p.decide(t0), PetDecision::Withhold(Withheld::NoReport));
        p.report(OK, t0);
        assert_eq!(p.decide(t0), PetDecision::Pet);
        assert_eq!(p.decide(t0 + 5 * S), PetDecision::NotDue);
        p.report(OK, t0 + 9 * S);
        assert_eq!(p.decide(t0 + 10 * S), PetDecision::Pet);
        p.report(SPOOL_DOWN, t0 + 20 * S);
        assert_eq!(
            p.decide(t0 + 20 * S),
            PetDecision::Withhold(Withheld::Unhealthy(SPOOL_DOWN))
        );
        p.report(OK, t0 + 21 * S);
        assert_eq!(p.decide(t0 + 21 * S), PetDecision::Pet);
        // The reporter got stuck: no petting after half the timeout.
        assert_eq!(
            p.decide(t0 + 37 * S),
            PetDecision::Withhold(Withheld::Stale {
                age: 16 * S,
                limit: 15 * S
            })
        );
        assert_eq!(
            Withheld::Stale {
                age: 16 * S,
                limit: 15 * S
            }
            .to_string(),
            "last health report is 16.0s old (limit 15.0s)"
        );
        assert_eq!(
            Withheld::Unhealthy(SPOOL_DOWN).to_string(),
            "spool unhealthy"
        );
    }

    #[test]
    fn ioctl_request_codes_are_linuxs() {
        // <linux/watchdog.h> on x86-64 and arm64: _IOR('W', 5, int), _IOWR('W', 6, int), _IOR('W', 7, int).
        let size = size_of::<nix::libc::c_int>();
        assert_eq!(nix::request_code_read!(b'W', 5, size) as u64, 0x8004_5705);
        assert_eq!(
            nix::request_code_readwrite!(b'W', 6, size) as u64,
            0xC004_5706
        );
        assert_eq!(nix::request_code_read!(b'W', 7, size) as u64, 0x8004_5707);
    }

    #[test]
    fn a_regular_file_is_not_a_watchdog_and_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("dev")).expect("mkdir");
        std::fs::write(dir.path().join("dev/watchdog"), "").expect("fake device");
        let root = SysRoot::new(dir.path());
        let mut wd = HardwareWatchdog::open(&root, "/dev/watchdog").expect("open");
        let err = wd.keepalive().expect_err("not a watchdog");
        let msg = err.to_string();
        assert!(msg.starts_with("WDIOC_KEEPALIVE on "), "{msg}");
        assert!(
            msg.contains("ENOTTY") && msg.contains("not a watchdog device"),
            "{msg}"
        );
        let err = wd.set_timeout(30).expect_err("not a watchdog");
        assert!(err.to_string().starts_with("WDIOC_SETTIMEOUT on "), "{err}");
        // The magic close writes 'V'.
        wd.disarm().expect("magic close");
        assert_eq!(
            std::fs::read(dir.path().join("dev/watchdog")).expect("read"),
            b"V"
        );

        let err = HardwareWatchdog::open(&root, "/dev/watchdog1").expect_err("missing");
        assert!(err.to_string().starts_with("opening watchdog "), "{err}");
    }

    #[test]
    fn watchdogs_pet_systemd_only_while_healthy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).expect("bind");
        server.set_nonblocking(true).expect("nonblocking");
        let sd = SdNotify::connect(path.as_os_str()).expect("connect");
        let mut w = Watchdogs::new(WatchdogPolicy::for_timeout(30 * S), None, Some(sd));
        let t0 = Instant::now();
        let mut buf = [0u8; 64];
        w.systemd()
            .expect("notifier")
            .ready("receiving")
            .expect("ready");
        let len = server.recv(&mut buf).expect("READY=1");
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=receiving");

        w.report(OK, t0);
        assert_eq!(w.tick(t0).expect("tick"), PetDecision::Pet);
        let len = server.recv(&mut buf).expect("a WATCHDOG=1 datagram");
        assert_eq!(&buf[..len], b"WATCHDOG=1");

        w.report(SPOOL_DOWN, t0 + 10 * S);
        assert!(matches!(
            w.tick(t0 + 10 * S).expect("tick"),
            PetDecision::Withhold(_)
        ));
        assert!(
            server.recv(&mut buf).is_err(),
            "no pet while the spool is down"
        );

        w.report(OK, t0 + 11 * S);
        assert_eq!(w.tick(t0 + 11 * S).expect("tick"), PetDecision::Pet);
        assert!(server.recv(&mut buf).is_ok());

        w.shutdown().expect("shutdown");
        let len = server.recv(&mut buf).expect("STOPPING=1");
        assert_eq!(&buf[..len], b"STOPPING=1");
    }

    #[test]
    fn a_failing_hardware_watchdog_still_lets_systemd_be_petted() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("dev")).expect("mkdir");
        std::fs::write(dir.path().join("dev/watchdog"), "").expect("fake device");
        let hw = HardwareWatchdog::open(&SysRoot::new(dir.path()), "/dev/watchdog").expect("open");
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).expect("bind");
        server.set_nonblocking(true).expect("nonblocking");
        let sd = SdNotify::connect(path.as_os_str()).expect("connect");
        let mut w = Watchdogs::new(WatchdogPolicy::for_timeout(30 * S), Some(hw), Some(sd));
        let t0 = Instant::now();
        w.report(OK, t0);
        let err = w.tick(t0).expect_err("the fake device refuses the ioctl");
        assert!(matches!(err, PetError::Hardware(_)), "{err}");
        let mut buf = [0u8; 64];
        assert!(server.recv(&mut buf).is_ok(), "systemd was petted anyway");
    }
}
