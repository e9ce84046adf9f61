//! The inventory: everything the appliance knows about its box, in one serde-serializable
//! struct for the fleet and the local status page. Hardware only: no patient data.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::identity::{Identity, read_identity};
use crate::nics::{NicInfo, NicRole, RoleAssignment, list_nics_with_roles};
use crate::profile::Profile;
use crate::sensors::{SensorReading, evaluate, read_hwmon};
use crate::storage::{DiskInfo, FsUsage, Smartctl, filesystem_usage, list_disks};
use crate::sysfs::SysRoot;

/// The box, as found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    /// The hardware profile's name.
    pub profile: String,
    /// Vendor, product, serial, TPM.
    pub identity: Identity,
    /// Network interfaces, with their roles.
    pub nics: Vec<NicInfo>,
    /// The interface of each role, when the profile's rules resolve.
    pub roles: Option<RoleAssignment>,
    /// Physical disks, with SMART when asked and available.
    pub disks: Vec<DiskInfo>,
    /// Space of the filesystems asked about (the spool's).
    pub filesystems: Vec<FsUsage>,
    /// Temperatures and fans.
    pub sensors: Vec<SensorReading>,
    /// What could not be read, one sentence each (the rest of the inventory is still valid).
    pub problems: Vec<String>,
}

impl Inventory {
    /// Gathers the inventory under `root`. `filesystems` are real paths to `statvfs` (the spool
    /// directory); `smartctl` is asked about each disk when given and the profile wants SMART.
    /// Never fails: what cannot be read lands in [`Inventory::problems`].
    pub fn collect(
        root: &SysRoot,
        profile: &Profile,
        filesystems: &[PathBuf],
        smartctl: Option<&Smartctl>,
    ) -> Self {
        let mut problems = Vec::new();
        let (identity, p) = read_identity(root);
        problems.extend(p);

        let (nics, roles) = match list_nics_with_roles(root, &profile.nics) {
            Ok((nics, Ok(roles))) => (nics, Some(roles)),
            Ok((nics, Err(e))) => {
                problems.extend(e.problems);
                (nics, None)
            }
            Err(e) => {
                problems.push(e.to_string());
                (Vec::new(), None)
            }
        };

        let mut disks = list_disks(root).unwrap_or_else(|e| {
            problems.push(e.to_string());
            Vec::new()
        });
        if let Some(smartctl) = smartctl.filter(|_| profile.storage.smart) {
            for disk in &mut disks {
                let device = root.path(format!("/dev/{}", disk.name));
                match smartctl.health(&device) {
                    Ok(h) => disk.smart = Some(h),
                    Err(e) => problems.push(e.to_string()),
                }
            }
        }

        let filesystems = filesystems
            .iter()
            .filter_map(|p| {
                filesystem_usage(p)
                    .map_err(|e| problems.push(e.to_string()))
                    .ok()
            })
            .collect();

        let sensors = match read_hwmon(root) {
            Ok((readings, p)) => {
                problems.extend(p);
                readings
            }
            Err(e) => {
                problems.push(e.to_string());
                Vec::new()
            }
        };

        Self {
            profile: profile.name.clone(),
            identity,
            nics,
            roles,
            disks,
            filesystems,
            sensors,
            problems,
        }
    }

    /// What needs attention, one sentence each (sans-IO): NIC roles unresolved or without link,
    /// heat, slow fans, filling filesystems, failing disks. Non-empty means "degraded".
    pub fn alarms(&self, profile: &Profile) -> Vec<String> {
        let mut alarms = Vec::new();
        match &self.roles {
            None => alarms.push("NIC roles unresolved; see the inventory's problems".to_owned()),
            Some(roles) => {
                for role in NicRole::ALL {
                    let name = roles.interface(role);
                    if self.nics.iter().any(|n| n.name == name && !n.link_up()) {
                        alarms.push(format!(
                            "{} interface {name} has no link; check its cable and switch port",
                            role.as_str()
                        ));
                    }
                }
            }
        }
        alarms.extend(evaluate(&self.sensors, &profile.sensors));
        alarms.extend(
            self.filesystems
                .iter()
                .filter_map(|f| f.alarm(&profile.storage)),
        );
        for disk in &self.disks {
            if let Some(smart) = &disk.smart {
                alarms.extend(smart.alarms(&disk.name));
            }
        }
        alarms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::fake;

    fn fake_box(r: &std::path::Path) {
        fake::file(r, "/sys/class/dmi/id/sys_vendor", "QEMU\n");
        fake::file(
            r,
            "/sys/class/dmi/id/product_name",
            "Standard PC (Q35 + ICH9, 2009)\n",
        );
        for (name, mac, state) in [
            ("eth0", "52:54:00:12:34:56", "up"),
            ("eth1", "52:54:00:12:34:57", "down"),
        ] {
            fake::file(r, &format!("/sys/class/net/{name}/address"), mac);
            fake::file(r, &format!("/sys/class/net/{name}/operstate"), state);
            fake::dir(r, &format!("/sys/class/net/{name}/device"));
        }
        fake::file(r, "/sys/block/vda/size", "2097152\n");
        fake::dir(r, "/sys/block/vda/device");
        fake::file(r, "/sys/class/hwmon/hwmon0/name", "acpitz\n");
        fake::file(r, "/sys/class/hwmon/hwmon0/temp1_input", "27800\n");
    }

    #[test]
    fn collects_a_fake_qemu_box_and_serializes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        fake_box(dir.path());
        let profile = Profile::builtin("qemu-vm").expect("profile");
        let inv = Inventory::collect(
            &SysRoot::new(dir.path()),
            &profile,
            &[dir.path().to_owned()],
            None,
        );
        assert!(inv.problems.is_empty(), "{:?}", inv.problems);
        assert_eq!(inv.profile, "qemu-vm");
        assert_eq!(inv.identity.vendor.as_deref(), Some("QEMU"));
        let roles = inv.roles.clone().expect("roles");
        assert_eq!(
            (roles.modality.as_str(), roles.uplink.as_str()),
            ("eth0", "eth1")
        );
        assert_eq!(inv.disks.len(), 1);
        assert_eq!(inv.filesystems.len(), 1);
        assert_eq!(inv.sensors[0].value, 27.8);
        assert_eq!(
            inv.alarms(&profile),
            vec!["uplink interface eth1 has no link; check its cable and switch port".to_owned()]
        );
        let json = serde_json::to_value(&inv).expect("json");
        assert_eq!(json["nics"][0]["role"], "modality");
        assert_eq!(json["roles"]["uplink"], "eth1");
        let back: Inventory = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, inv);
    }

    #[test]
    fn what_cannot_be_read_becomes_a_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let profile = Profile::builtin("generic-1u-2nic").expect("profile");
        let inv = Inventory::collect(
            &SysRoot::new(dir.path()),
            &profile,
            &[PathBuf::from("/nonexistent/spool")],
            None,
        );
        assert_eq!(inv.roles, None);
        assert_eq!(inv.problems.len(), 3, "{:?}", inv.problems);
        assert!(inv.problems[2].starts_with("statvfs of /nonexistent/spool failed"));
        assert_eq!(
            inv.alarms(&profile),
            vec!["NIC roles unresolved; see the inventory's problems".to_owned()]
        );
    }
}
