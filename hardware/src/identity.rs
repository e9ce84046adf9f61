//! Identity of the box: DMI vendor, product and serial (`/sys/class/dmi/id`), and whether a TPM
//! is present (`/sys/class/tpm/tpm0`).

use serde::{Deserialize, Serialize};

use crate::sysfs::SysRoot;

/// What the firmware says the box is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Identity {
    /// `sys_vendor` (`Supermicro`, `QEMU`).
    pub vendor: Option<String>,
    /// `product_name`.
    pub product: Option<String>,
    /// `product_serial`, absent when the firmware leaves a placeholder or it cannot be read.
    pub serial: Option<String>,
    /// The TPM.
    pub tpm: Tpm,
}

/// Whether a TPM is present, and which version.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tpm {
    /// `/sys/class/tpm/tpm0` exists.
    pub present: bool,
    /// `tpm_version_major` (1 or 2) when the kernel exposes it.
    pub version_major: Option<u8>,
}

/// Placeholders firmware vendors leave in DMI fields; they identify nothing.
const PLACEHOLDERS: &[&str] = &[
    "to be filled by o.e.m.",
    "default string",
    "system serial number",
    "system product name",
    "not specified",
    "not applicable",
    "none",
    "n/a",
    "0",
    "0123456789",
    "123456789",
    "oem",
    "o.e.m.",
];

/// Cleans a DMI value: trims it and drops empty values and vendor placeholders (sans-IO).
pub fn clean_dmi(value: &str) -> Option<String> {
    let v = value.trim();
    let lower = v.to_ascii_lowercase();
    if v.is_empty()
        || PLACEHOLDERS.contains(&lower.as_str())
        || v.chars().all(|c| c == '0' || c == ' ')
    {
        None
    } else {
        Some(v.to_owned())
    }
}

/// Reads the identity. Fields that cannot be read are `None`; each unreadable field (other than
/// missing, as on boxes without DMI) is returned as a problem. `product_serial` is readable by
/// root only: a service running as its own user gets a problem, not a failure.
pub fn read_identity(root: &SysRoot) -> (Identity, Vec<String>) {
    let mut problems = Vec::new();
    let mut field = |name: &str| match root.read_optional(format!("/sys/class/dmi/id/{name}")) {
        Ok(v) => v.as_deref().and_then(clean_dmi),
        Err(e) => {
            problems.push(format!("identity: {e}"));
            None
        }
    };
    let vendor = field("sys_vendor");
    let product = field("product_name");
    let serial = field("product_serial");
    let present = root.exists("/sys/class/tpm/tpm0");
    let version_major = root
        .read_optional("/sys/class/tpm/tpm0/tpm_version_major")
        .ok()
        .flatten()
        .and_then(|v| v.parse().ok());
    (
        Identity {
            vendor,
            product,
            serial,
            tpm: Tpm {
                present,
                version_major,
            },
        },
        problems,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::fake;

    #[test]
    fn placeholders_are_not_identities() {
        assert_eq!(clean_dmi("  To Be Filled By O.E.M.\n"), None);
        assert_eq!(clean_dmi("Default string"), None);
        assert_eq!(clean_dmi("0000000"), None);
        assert_eq!(clean_dmi(""), None);
        assert_eq!(clean_dmi("S123ABC\n").as_deref(), Some("S123ABC"));
    }

    #[test]
    fn reads_a_fake_dmi_and_tpm_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        fake::file(r, "/sys/class/dmi/id/sys_vendor", "Supermicro\n");
        fake::file(r, "/sys/class/dmi/id/product_name", "SYS-5019C-M\n");
        fake::file(r, "/sys/class/dmi/id/product_serial", "A123456789\n");
        fake::file(r, "/sys/class/tpm/tpm0/tpm_version_major", "2\n");
        let (id, problems) = read_identity(&SysRoot::new(r));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(id.vendor.as_deref(), Some("Supermicro"));
        assert_eq!(id.product.as_deref(), Some("SYS-5019C-M"));
        assert_eq!(id.serial.as_deref(), Some("A123456789"));
        assert_eq!(
            id.tpm,
            Tpm {
                present: true,
                version_major: Some(2)
            }
        );
    }

    #[test]
    fn a_box_without_dmi_or_tpm_has_an_empty_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (id, problems) = read_identity(&SysRoot::new(dir.path()));
        assert_eq!(id, Identity::default());
        assert!(problems.is_empty());
    }

    #[test]
    fn an_unreadable_serial_is_a_problem_not_a_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        fake::file(r, "/sys/class/dmi/id/sys_vendor", "QEMU\n");
        // A directory where a file is expected: reading fails with an error other than
        // "not found", as a root-only file does for a service user.
        fake::dir(r, "/sys/class/dmi/id/product_serial");
        let (id, problems) = read_identity(&SysRoot::new(r));
        assert_eq!(id.vendor.as_deref(), Some("QEMU"));
        assert_eq!(id.serial, None);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("identity: reading ") && problems[0].contains("product_serial"),
            "{problems:?}"
        );
    }
}
