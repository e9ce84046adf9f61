//! Hardware profiles: what a kind of box looks like (which NIC faces the modalities, which LEDs
//! show which state, the watchdog, sensor and disk limits), as TOML files in `hardware/profiles/`.
//!
//! A profile is validated twice: on its own when loaded ([`Profile::from_toml`], exact messages,
//! every problem at once), and against the machine at start-up ([`Profile::check_hardware`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::leds::LedMapping;
use crate::nics::{self, NicRole, NicRule};
use crate::sensors::SensorLimits;
use crate::storage::StorageLimits;
use crate::sysfs::SysRoot;

/// The profiles shipped in `hardware/profiles/`, built into the crate: `(name, TOML text)`.
pub const BUILTIN_PROFILES: &[(&str, &str)] = &[
    (
        "generic-1u-2nic",
        include_str!("../profiles/generic-1u-2nic.toml"),
    ),
    ("qemu-vm", include_str!("../profiles/qemu-vm.toml")),
];

/// A hardware profile. Build it with [`Profile::from_toml`], [`Profile::load`] or
/// [`Profile::builtin`], which validate it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Short name (`generic-1u-2nic`), shown in the inventory.
    pub name: String,
    /// One line for people.
    pub description: String,
    /// The hardware watchdog.
    pub watchdog: WatchdogSettings,
    /// Which interface plays which role.
    pub nics: NicRules,
    /// Which LED shows which state; absent on boxes without status LEDs (a VM).
    #[serde(default)]
    pub leds: Option<LedMapping>,
    /// Sensor limits.
    pub sensors: SensorLimits,
    /// Disk limits.
    pub storage: StorageLimits,
}

/// The `[watchdog]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchdogSettings {
    /// The device, an absolute path under `/dev` (`/dev/watchdog`).
    pub device: String,
    /// Seconds without a keep-alive after which the hardware resets the box (2-600).
    pub timeout_secs: u32,
    /// Whether a missing device is a start-up error (true on real appliances).
    #[serde(default = "default_true")]
    pub required: bool,
}

fn default_true() -> bool {
    true
}

/// The `[nics]` table: one rule per role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicRules {
    /// The interface facing the modalities (DICOM in).
    pub modality: NicRule,
    /// The interface facing the hospital network and the archive (uplink).
    pub uplink: NicRule,
}

impl NicRules {
    /// The rule for a role.
    pub fn rule(&self, role: NicRole) -> &NicRule {
        match role {
            NicRole::Modality => &self.modality,
            NicRole::Uplink => &self.uplink,
        }
    }
}

/// Why a profile cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error(
        "reading hardware profile {path} failed: {source}; check the path (profiles live in /usr/share/medgate/profiles)"
    )]
    Read {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or not the shape of a profile (unknown key, missing key, wrong type).
    #[error("hardware profile {origin} is not a valid profile: {message}")]
    Syntax {
        /// Where the text came from.
        origin: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// Parsed, but values are out of range; every problem is listed.
    #[error("hardware profile {origin} is invalid: {}", problems.join("; "))]
    Invalid {
        /// Where the text came from.
        origin: String,
        /// One sentence per problem.
        problems: Vec<String>,
    },
    /// No built-in profile has that name.
    #[error("no built-in hardware profile named {name:?}; choose one of: {}", builtin_names().join(", "))]
    UnknownBuiltin {
        /// The name asked for.
        name: String,
    },
}

/// The machine does not match the profile (found at start-up by [`Profile::check_hardware`]).
#[derive(Debug, thiserror::Error)]
#[error("this machine does not match hardware profile {profile:?}: {}", problems.join("; "))]
pub struct HardwareMismatch {
    /// The profile's name.
    pub profile: String,
    /// One sentence per problem, each saying what to do.
    pub problems: Vec<String>,
}

/// The names of the built-in profiles.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN_PROFILES.iter().map(|(name, _)| *name).collect()
}

impl Profile {
    /// Parses and validates a profile; `origin` names it in messages (a file path).
    pub fn from_toml(origin: &str, text: &str) -> Result<Self, ProfileError> {
        let profile: Profile = toml::from_str(text).map_err(|e| ProfileError::Syntax {
            origin: origin.to_owned(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        let problems = profile.problems();
        if problems.is_empty() {
            Ok(profile)
        } else {
            Err(ProfileError::Invalid {
                origin: origin.to_owned(),
                problems,
            })
        }
    }

    /// Reads, parses and validates a profile file.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&path.display().to_string(), &text)
    }

    /// One of the profiles built into the crate ([`BUILTIN_PROFILES`]).
    pub fn builtin(name: &str) -> Result<Self, ProfileError> {
        let (_, text) = BUILTIN_PROFILES
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| ProfileError::UnknownBuiltin {
                name: name.to_owned(),
            })?;
        Self::from_toml(&format!("(built-in) {name}"), text)
    }

    /// Every problem of the values, one sentence each; empty when the profile is valid.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !is_profile_name(&self.name) {
            p.push(format!(
                "name must be 1-64 characters of a-z, 0-9 and '-' (got {:?})",
                self.name
            ));
        }
        let dev = &self.watchdog.device;
        if !dev.starts_with("/dev/") || dev.contains("..") || dev.len() <= "/dev/".len() {
            p.push(format!(
                "watchdog.device must be an absolute path under /dev, like \"/dev/watchdog\" (got {dev:?})"
            ));
        }
        if !(2..=600).contains(&self.watchdog.timeout_secs) {
            p.push(format!(
                "watchdog.timeout_secs must be between 2 and 600 (got {})",
                self.watchdog.timeout_secs
            ));
        }
        for role in NicRole::ALL {
            p.extend(self.nics.rule(role).problems(role));
        }
        if self.nics.modality == self.nics.uplink {
            p.push(
                "nics.modality and nics.uplink have the same rule; each role needs its own interface"
                    .to_owned(),
            );
        }
        if let Some(leds) = &self.leds {
            p.extend(leds.problems());
        }
        p.extend(self.sensors.problems());
        p.extend(self.storage.problems());
        p
    }

    /// Checks the machine under `root` against the profile: the watchdog device (when required),
    /// one interface per NIC role, every LED named. Call it at start-up and refuse to run on a
    /// mismatch.
    pub fn check_hardware(&self, root: &SysRoot) -> Result<(), HardwareMismatch> {
        let mut problems = Vec::new();
        if self.watchdog.required && !root.exists(&self.watchdog.device) {
            problems.push(format!(
                "watchdog device {} not found; load the board's watchdog driver (QEMU: add -device i6300esb), \
                 or set watchdog.required = false in the profile for a box without one",
                self.watchdog.device
            ));
        }
        match nics::list_nics(root) {
            Ok(found) => {
                if let Err(e) = nics::assign_roles(&self.nics, &found) {
                    problems.extend(e.problems);
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
        if let Some(leds) = &self.leds {
            let mut seen = Vec::new();
            for (state, setting) in leds.entries() {
                if seen.contains(&&setting.led) {
                    continue;
                }
                seen.push(&setting.led);
                let dir = format!("/sys/class/leds/{}", setting.led);
                if !root.exists(&dir) {
                    problems.push(format!(
                        "LED {:?} (leds.{}) not found under /sys/class/leds; fix the name in the profile or load the LED driver",
                        setting.led,
                        state.as_str()
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(HardwareMismatch {
                profile: self.name.clone(),
                problems,
            })
        }
    }
}

fn is_profile_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::fake;

    #[test]
    fn builtin_profiles_are_valid_and_match_the_files() {
        for (name, _) in BUILTIN_PROFILES {
            let p = Profile::builtin(name).expect("valid built-in profile");
            assert_eq!(&p.name, name);
        }
        // Every file in profiles/ is built in and valid (a new file must be added to the list).
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("profiles dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, vec!["generic-1u-2nic.toml", "qemu-vm.toml"]);
        for f in files {
            Profile::load(&dir.join(&f)).expect("profile file loads");
        }
        let err = Profile::builtin("nope").expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "no built-in hardware profile named \"nope\"; choose one of: generic-1u-2nic, qemu-vm"
        );
    }

    const GOOD: &str = r#"
name = "test-box"
description = "a test"
[watchdog]
device = "/dev/watchdog"
timeout_secs = 30
[nics.modality]
name = "eth0"
[nics.uplink]
mac = "52:54:00:*"
[sensors]
max_temperature_c = 80.0
[storage]
min_free_percent = 10
"#;

    #[test]
    fn a_minimal_profile_parses_with_defaults() {
        let p = Profile::from_toml("test", GOOD).expect("valid");
        assert!(p.watchdog.required);
        assert!(p.leds.is_none());
        assert_eq!(p.sensors.min_fan_rpm, None);
        assert!(p.storage.smart);
    }

    #[test]
    fn every_invalid_value_is_reported_with_an_exact_message() {
        let text = GOOD
            .replace("test-box", "Test Box")
            .replace("\"/dev/watchdog\"", "\"watchdog\"")
            .replace("timeout_secs = 30", "timeout_secs = 1")
            .replace("name = \"eth0\"", "name = \"eth0\"\nmac = \"aa:bb:*\"")
            .replace("52:54:00:*", "52:54:zz")
            .replace("80.0", "200.0")
            .replace("min_free_percent = 10", "min_free_percent = 0");
        let err = Profile::from_toml("bad.toml", &text).expect_err("invalid");
        let ProfileError::Invalid { origin, problems } = &err else {
            panic!("expected Invalid, got {err}");
        };
        assert_eq!(origin, "bad.toml");
        assert_eq!(
            problems,
            &vec![
                "name must be 1-64 characters of a-z, 0-9 and '-' (got \"Test Box\")".to_owned(),
                "watchdog.device must be an absolute path under /dev, like \"/dev/watchdog\" (got \"watchdog\")".to_owned(),
                "watchdog.timeout_secs must be between 2 and 600 (got 1)".to_owned(),
                "nics.modality: give exactly one of name or mac".to_owned(),
                "nics.uplink.mac \"52:54:zz\" is not a MAC pattern: write 1-6 hex pairs separated by ':', ending in '*' unless all six are given (e.g. \"52:54:00:*\")".to_owned(),
                "sensors.max_temperature_c must be between 30 and 120 (got 200)".to_owned(),
                "storage.min_free_percent must be between 1 and 50 (got 0)".to_owned(),
            ]
        );
        assert!(
            err.to_string()
                .starts_with("hardware profile bad.toml is invalid: name must be")
        );
    }

    #[test]
    fn same_rule_for_both_roles_is_refused() {
        let text = GOOD.replace("mac = \"52:54:00:*\"", "name = \"eth0\"");
        let err = Profile::from_toml("t", &text).expect_err("invalid");
        assert_eq!(
            err.to_string(),
            "hardware profile t is invalid: nics.modality and nics.uplink have the same rule; each role needs its own interface"
        );
    }

    #[test]
    fn unknown_and_missing_keys_are_syntax_errors() {
        let err = Profile::from_toml("t", &GOOD.replace("timeout_secs", "timeout"))
            .expect_err("unknown key");
        let msg = err.to_string();
        assert!(
            msg.starts_with("hardware profile t is not a valid profile: "),
            "{msg}"
        );
        assert!(msg.contains("unknown field `timeout`"), "{msg}");
        let err = Profile::from_toml("t", "name = 1").expect_err("wrong type");
        assert!(err.to_string().contains("invalid type"), "{err}");
        let err = Profile::load(Path::new("/nonexistent/p.toml")).expect_err("missing");
        assert!(
            err.to_string()
                .starts_with("reading hardware profile /nonexistent/p.toml failed")
        );
    }

    fn qemu_tree(root: &Path) {
        fake::file(root, "/dev/watchdog", "");
        for (name, mac) in [("eth0", "52:54:00:12:34:56"), ("eth1", "52:54:00:12:34:57")] {
            fake::file(root, &format!("/sys/class/net/{name}/address"), mac);
            fake::file(root, &format!("/sys/class/net/{name}/operstate"), "up");
            fake::dir(root, &format!("/sys/class/net/{name}/device"));
        }
    }

    #[test]
    fn check_hardware_accepts_a_matching_machine_and_explains_a_mismatch() {
        let dir = tempfile::tempdir().expect("tempdir");
        qemu_tree(dir.path());
        let root = SysRoot::new(dir.path());
        let qemu = Profile::builtin("qemu-vm").expect("profile");
        qemu.check_hardware(&root).expect("matches");

        let generic = Profile::builtin("generic-1u-2nic").expect("profile");
        let err = generic.check_hardware(&root).expect_err("mismatch");
        assert_eq!(err.problems.len(), 5, "{err}");
        assert!(
            err.problems[0].starts_with("no interface matches NIC role modality"),
            "{err}"
        );
        assert!(
            err.problems[1].starts_with("no interface matches NIC role uplink"),
            "{err}"
        );
        assert_eq!(
            err.problems[2],
            "LED \"medgate:green:status\" (leds.booting) not found under /sys/class/leds; \
             fix the name in the profile or load the LED driver"
        );
        assert!(
            err.problems[3].starts_with("LED \"medgate:amber:status\" (leds.degraded)"),
            "{err}"
        );
        assert!(
            err.problems[4].starts_with("LED \"medgate:red:status\" (leds.fault)"),
            "{err}"
        );

        std::fs::remove_file(dir.path().join("dev/watchdog")).expect("rm");
        let err = qemu.check_hardware(&root).expect_err("no watchdog");
        assert_eq!(
            err.to_string(),
            "this machine does not match hardware profile \"qemu-vm\": watchdog device /dev/watchdog not found; \
             load the board's watchdog driver (QEMU: add -device i6300esb), or set watchdog.required = false \
             in the profile for a box without one"
        );
    }
}
