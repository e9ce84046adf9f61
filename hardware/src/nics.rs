//! Network interfaces: what `/sys/class/net` says about them (MAC, link, speed) and which one
//! plays which role (the modality side, the uplink), by the profile's rules.

use serde::{Deserialize, Serialize};

use crate::profile::NicRules;
use crate::sysfs::{SysRoot, SysfsError, parse_i64};

/// The role of an interface on the appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NicRole {
    /// Faces the modalities: only DICOM (104, 2762) and ICMP come in.
    Modality,
    /// Faces the hospital network: MQTT over TLS, HTTPS and DICOM TLS go out.
    Uplink,
}

impl NicRole {
    /// Both roles, in a fixed order.
    pub const ALL: [NicRole; 2] = [NicRole::Modality, NicRole::Uplink];

    /// `modality` or `uplink`, as in the profile.
    pub fn as_str(self) -> &'static str {
        match self {
            NicRole::Modality => "modality",
            NicRole::Uplink => "uplink",
        }
    }
}

/// How the profile finds the interface of a role: by name or by MAC address, exactly one of the
/// two. A trailing `*` matches any rest (`eno*`, `52:54:00:*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicRule {
    /// Interface name or name prefix ending in `*`.
    #[serde(default)]
    pub name: Option<String>,
    /// MAC address or prefix ending in `*`, case-insensitive.
    #[serde(default)]
    pub mac: Option<String>,
}

impl NicRule {
    /// Whether the interface matches the rule.
    pub fn matches(&self, nic: &NicInfo) -> bool {
        match (&self.name, &self.mac) {
            (Some(pattern), None) => glob_matches(pattern, &nic.name),
            (None, Some(pattern)) => nic.mac.as_deref().is_some_and(|mac| {
                glob_matches(&pattern.to_ascii_lowercase(), &mac.to_ascii_lowercase())
            }),
            _ => false,
        }
    }

    /// Problems of the rule, for the profile's validation.
    pub(crate) fn problems(&self, role: NicRole) -> Vec<String> {
        let role = role.as_str();
        match (&self.name, &self.mac) {
            (Some(name), None) if !is_name_pattern(name) => vec![format!(
                "nics.{role}.name {name:?} is not an interface name pattern: 1-15 characters of letters, \
                 digits, '-', '_' and '.', optionally ending in '*'"
            )],
            (None, Some(mac)) if !is_mac_pattern(mac) => vec![format!(
                "nics.{role}.mac {mac:?} is not a MAC pattern: write 1-6 hex pairs separated by ':', \
                 ending in '*' unless all six are given (e.g. \"52:54:00:*\")"
            )],
            (Some(_), None) | (None, Some(_)) => Vec::new(),
            _ => vec![format!("nics.{role}: give exactly one of name or mac")],
        }
    }

    fn describe(&self) -> String {
        match (&self.name, &self.mac) {
            (Some(name), None) => format!("name = {name:?}"),
            (None, Some(mac)) => format!("mac = {mac:?}"),
            _ => "(invalid rule)".to_owned(),
        }
    }
}

fn glob_matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

fn is_name_pattern(p: &str) -> bool {
    let body = p.strip_suffix('*').unwrap_or(p);
    (1..=15).contains(&body.len())
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_mac_pattern(p: &str) -> bool {
    let (body, wildcard) = match p.strip_suffix('*') {
        Some(body) => (body.strip_suffix(':').unwrap_or(body), true),
        None => (p, false),
    };
    if body.is_empty() {
        return false;
    }
    let pairs: Vec<&str> = body.split(':').collect();
    let ok_pairs = pairs
        .iter()
        .all(|pair| pair.len() == 2 && pair.bytes().all(|b| b.is_ascii_hexdigit()));
    ok_pairs && (pairs.len() == 6 || (wildcard && pairs.len() < 6))
}

/// What `/sys/class/net/<name>` says about one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicInfo {
    /// Interface name (`eno1`).
    pub name: String,
    /// MAC address, lowercase, when the interface has one.
    pub mac: Option<String>,
    /// The kernel's operational state (`up`, `down`, `unknown`, ...).
    pub operstate: String,
    /// Whether a cable/link is detected (`carrier`); unknown while the interface is down.
    pub carrier: Option<bool>,
    /// Link speed in Mbit/s, when the driver knows it.
    pub speed_mbps: Option<u32>,
    /// MTU in bytes.
    pub mtu: Option<u32>,
    /// Backed by a device (not a bridge, veth or tunnel).
    pub physical: bool,
    /// The role the profile gives it, once [`assign_roles`] ran.
    pub role: Option<NicRole>,
}

impl NicInfo {
    /// Whether the link is up: carrier detected, or `operstate` up when carrier is unknown.
    pub fn link_up(&self) -> bool {
        self.carrier.unwrap_or(self.operstate == "up")
    }
}

/// Parses a `speed` attribute: Mbit/s, or `None` for "unknown" (`-1`, or absurd values).
pub fn parse_speed(text: &str) -> Option<u32> {
    parse_i64(text)
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| (1..=1_000_000).contains(v))
}

/// Parses a `carrier` attribute (`0` or `1`).
pub fn parse_carrier(text: &str) -> Option<bool> {
    match text.trim() {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

/// Lists the interfaces of `/sys/class/net` except the loopback, sorted by name. Attributes that
/// cannot be read (the kernel refuses `speed` and `carrier` on a down interface) are `None`.
pub fn list_nics(root: &SysRoot) -> Result<Vec<NicInfo>, SysfsError> {
    let mut nics = Vec::new();
    for name in root.list("/sys/class/net")? {
        if name == "lo" {
            continue;
        }
        let dir = format!("/sys/class/net/{name}");
        let attr = |a: &str| root.read_trimmed(format!("{dir}/{a}")).ok();
        let mac = attr("address")
            .filter(|m| !m.is_empty() && m != "00:00:00:00:00:00")
            .map(|m| m.to_ascii_lowercase());
        nics.push(NicInfo {
            mac,
            operstate: attr("operstate").unwrap_or_else(|| "unknown".to_owned()),
            carrier: attr("carrier").as_deref().and_then(parse_carrier),
            speed_mbps: attr("speed").as_deref().and_then(parse_speed),
            mtu: attr("mtu")
                .as_deref()
                .and_then(parse_i64)
                .and_then(|v| u32::try_from(v).ok()),
            physical: root.exists(format!("{dir}/device")),
            role: None,
            name,
        });
    }
    Ok(nics)
}

/// The interface chosen for each role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleAssignment {
    /// The modality-side interface's name.
    pub modality: String,
    /// The uplink interface's name.
    pub uplink: String,
}

impl RoleAssignment {
    /// The interface name of a role.
    pub fn interface(&self, role: NicRole) -> &str {
        match role {
            NicRole::Modality => &self.modality,
            NicRole::Uplink => &self.uplink,
        }
    }
}

/// The profile's NIC rules do not pick exactly one distinct interface per role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", problems.join("; "))]
pub struct NicRoleError {
    /// One sentence per problem, each saying what to do.
    pub problems: Vec<String>,
}

/// Picks one interface per role by the profile's rules. Each rule must match exactly one
/// interface, and not the same one as the other role.
pub fn assign_roles(rules: &NicRules, nics: &[NicInfo]) -> Result<RoleAssignment, NicRoleError> {
    let present: Vec<&str> = nics.iter().map(|n| n.name.as_str()).collect();
    let present = if present.is_empty() {
        "none".to_owned()
    } else {
        present.join(", ")
    };
    let mut problems = Vec::new();
    let mut chosen = Vec::new();
    for role in NicRole::ALL {
        let rule = rules.rule(role);
        let hits: Vec<&NicInfo> = nics.iter().filter(|n| rule.matches(n)).collect();
        match hits.as_slice() {
            [one] => chosen.push(one.name.clone()),
            [] => problems.push(format!(
                "no interface matches NIC role {} ({}); interfaces present: {present}; fix nics.{} in the hardware profile",
                role.as_str(),
                rule.describe(),
                role.as_str()
            )),
            many => problems.push(format!(
                "NIC role {} ({}) matches {} interfaces ({}); make nics.{} in the hardware profile match exactly one",
                role.as_str(),
                rule.describe(),
                many.len(),
                many.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", "),
                role.as_str()
            )),
        }
    }
    if let [modality, uplink] = chosen.as_slice() {
        if modality == uplink {
            problems.push(format!(
                "interface {modality} matches both NIC roles; the modality and uplink rules must pick different interfaces"
            ));
        } else if problems.is_empty() {
            return Ok(RoleAssignment {
                modality: modality.clone(),
                uplink: uplink.clone(),
            });
        }
    }
    Err(NicRoleError { problems })
}

/// Lists the interfaces and marks each one's role; the roles must resolve.
pub fn list_nics_with_roles(
    root: &SysRoot,
    rules: &NicRules,
) -> Result<(Vec<NicInfo>, Result<RoleAssignment, NicRoleError>), SysfsError> {
    let mut nics = list_nics(root)?;
    let assignment = assign_roles(rules, &nics);
    if let Ok(a) = &assignment {
        for nic in &mut nics {
            nic.role = NicRole::ALL
                .into_iter()
                .find(|role| a.interface(*role) == nic.name);
        }
    }
    Ok((nics, assignment))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::fake;

    fn nic(name: &str, mac: &str) -> NicInfo {
        NicInfo {
            name: name.to_owned(),
            mac: Some(mac.to_owned()),
            operstate: "up".to_owned(),
            carrier: Some(true),
            speed_mbps: Some(1000),
            mtu: Some(1500),
            physical: true,
            role: None,
        }
    }

    fn by_name(m: &str, u: &str) -> NicRules {
        NicRules {
            modality: NicRule {
                name: Some(m.to_owned()),
                mac: None,
            },
            uplink: NicRule {
                name: Some(u.to_owned()),
                mac: None,
            },
        }
    }

    #[test]
    fn patterns() {
        assert!(is_mac_pattern("52:54:00:*"));
        assert!(is_mac_pattern("52:54:00*"));
        assert!(is_mac_pattern("52:54:00:12:34:56"));
        assert!(!is_mac_pattern("52:54:00"));
        assert!(!is_mac_pattern("*"));
        assert!(!is_mac_pattern("52:54:00:12:34:56:78"));
        assert!(!is_mac_pattern("5:54:00:*"));
        assert!(is_name_pattern("eno1"));
        assert!(is_name_pattern("enp*"));
        assert!(!is_name_pattern("*"));
        assert!(!is_name_pattern("a/b"));
        assert!(!is_name_pattern("a-very-long-interface"));
        assert_eq!(parse_speed("1000\n"), Some(1000));
        assert_eq!(parse_speed("-1"), None);
        assert_eq!(parse_speed("4294967295"), None);
        assert_eq!(parse_carrier("1\n"), Some(true));
        assert_eq!(parse_carrier("x"), None);
    }

    #[test]
    fn assigns_by_name_and_by_mac_case_insensitively() {
        let nics = vec![
            nic("eno1", "3c:ec:ef:00:00:01"),
            nic("eno2", "3c:ec:ef:00:00:02"),
        ];
        let a = assign_roles(&by_name("eno1", "eno2"), &nics).expect("assigned");
        assert_eq!(a.modality, "eno1");
        assert_eq!(a.uplink, "eno2");
        let rules = NicRules {
            modality: NicRule {
                name: None,
                mac: Some("3C:EC:EF:00:00:02".to_owned()),
            },
            uplink: NicRule {
                name: Some("eno1".to_owned()),
                mac: None,
            },
        };
        let a = assign_roles(&rules, &nics).expect("assigned");
        assert_eq!(a.modality, "eno2");
        assert_eq!(a.uplink, "eno1");
    }

    #[test]
    fn explains_missing_ambiguous_and_shared_interfaces() {
        let nics = vec![
            nic("eno1", "3c:ec:ef:00:00:01"),
            nic("eno2", "3c:ec:ef:00:00:02"),
        ];
        let err = assign_roles(&by_name("eth0", "eno*"), &nics).expect_err("no match");
        assert_eq!(
            err.problems,
            vec![
                "no interface matches NIC role modality (name = \"eth0\"); interfaces present: eno1, eno2; \
                 fix nics.modality in the hardware profile"
                    .to_owned(),
                "NIC role uplink (name = \"eno*\") matches 2 interfaces (eno1, eno2); make nics.uplink in \
                 the hardware profile match exactly one"
                    .to_owned(),
            ]
        );
        let rules = NicRules {
            modality: NicRule {
                name: Some("eno1".to_owned()),
                mac: None,
            },
            uplink: NicRule {
                name: None,
                mac: Some("3c:ec:ef:00:00:01".to_owned()),
            },
        };
        let err = assign_roles(&rules, &nics).expect_err("shared");
        assert_eq!(
            err.to_string(),
            "interface eno1 matches both NIC roles; the modality and uplink rules must pick different interfaces"
        );
        let err = assign_roles(&by_name("eno1", "eno2"), &[]).expect_err("none");
        assert!(
            err.problems[0].contains("interfaces present: none"),
            "{err}"
        );
    }

    #[test]
    fn reads_a_fake_sys_class_net() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        fake::file(r, "/sys/class/net/lo/address", "00:00:00:00:00:00\n");
        fake::file(r, "/sys/class/net/eno1/address", "3C:EC:EF:00:00:01\n");
        fake::file(r, "/sys/class/net/eno1/operstate", "up\n");
        fake::file(r, "/sys/class/net/eno1/carrier", "1\n");
        fake::file(r, "/sys/class/net/eno1/speed", "1000\n");
        fake::file(r, "/sys/class/net/eno1/mtu", "1500\n");
        fake::dir(r, "/sys/class/net/eno1/device");
        fake::file(r, "/sys/class/net/eno2/address", "3c:ec:ef:00:00:02\n");
        fake::file(r, "/sys/class/net/eno2/operstate", "down\n");
        fake::file(r, "/sys/class/net/eno2/speed", "-1\n");
        fake::dir(r, "/sys/class/net/eno2/device");
        fake::file(r, "/sys/class/net/br0/address", "aa:bb:cc:dd:ee:ff\n");
        fake::file(r, "/sys/class/net/br0/operstate", "unknown\n");
        let root = SysRoot::new(r);
        let (nics, assignment) =
            list_nics_with_roles(&root, &by_name("eno1", "eno2")).expect("listed");
        assert_eq!(assignment.expect("roles").uplink, "eno2");
        let names: Vec<&str> = nics.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, vec!["br0", "eno1", "eno2"]);
        let eno1 = &nics[1];
        assert_eq!(eno1.mac.as_deref(), Some("3c:ec:ef:00:00:01"));
        assert_eq!(eno1.speed_mbps, Some(1000));
        assert_eq!(eno1.mtu, Some(1500));
        assert!(eno1.link_up() && eno1.physical);
        assert_eq!(eno1.role, Some(NicRole::Modality));
        let eno2 = &nics[2];
        assert_eq!((eno2.carrier, eno2.speed_mbps), (None, None));
        assert!(!eno2.link_up());
        assert_eq!(eno2.role, Some(NicRole::Uplink));
        assert!(!nics[0].physical);
        assert_eq!(nics[0].role, None);
    }
}
