//! Which devices a campaign targets: by site, tag, current version and hardware profile.
//!
//! Each list given is a filter (a device matches one of its values); the lists combine (a
//! device matches every list given). Lists left empty do not filter: no list at all targets
//! every approved device — the campaign is a draft until an admin approves it.

use medgate_contract::{DeviceId, SiteId, Token};
use serde::{Deserialize, Serialize};

/// The targets of a campaign.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    /// Sites.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub sites: Vec<SiteId>,
    /// Tags.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub tags: Vec<Token>,
    /// Appliance versions they run now (from their inventory).
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub versions: Vec<Token>,
    /// Hardware profiles (from their inventory).
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub hardware: Vec<Token>,
}

/// What targeting knows of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its id.
    pub device: DeviceId,
    /// Its site.
    pub site: SiteId,
    /// Its tags.
    pub tags: Vec<String>,
    /// The appliance version it reported.
    pub version: Option<String>,
    /// Its hardware profile.
    pub hardware: Option<String>,
}

impl Targets {
    /// Whether `c` is targeted.
    pub fn matches(&self, c: &Candidate) -> bool {
        let any = |list: &[Token], v: Option<&str>| {
            list.is_empty() || v.is_some_and(|v| list.iter().any(|t| t.as_str() == v))
        };
        (self.sites.is_empty() || self.sites.contains(&c.site))
            && (self.tags.is_empty()
                || self
                    .tags
                    .iter()
                    .any(|t| c.tags.iter().any(|x| x == t.as_str())))
            && any(&self.versions, c.version.as_deref())
            && any(&self.hardware, c.hardware.as_deref())
    }

    /// The targeted candidates, as (device, site), in the order given.
    pub fn select(&self, candidates: &[Candidate]) -> Vec<(DeviceId, SiteId)> {
        candidates
            .iter()
            .filter(|c| self.matches(c))
            .map(|c| (c.device.clone(), c.site.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, site: &str, tags: &[&str], version: &str, hw: &str) -> Candidate {
        Candidate {
            device: DeviceId::new(id).expect("id"),
            site: SiteId::new(site).expect("site"),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            version: Some(version.into()),
            hardware: Some(hw.into()),
        }
    }

    fn t(s: &str) -> Token {
        Token::new(s).expect("token")
    }

    #[test]
    fn lists_filter_and_combine() {
        let all = [
            c("a", "north", &["ct"], "1.3.0", "qemu-vm"),
            c("b", "north", &["mr"], "1.2.0", "qemu-vm"),
            c("e", "south", &["ct"], "1.3.0", "generic-1u-2nic"),
            Candidate {
                version: None,
                hardware: None,
                ..c("f", "south", &[], "x", "y")
            },
        ];
        let ids = |t: &Targets| -> Vec<String> {
            t.select(&all)
                .into_iter()
                .map(|(d, _)| d.to_string())
                .collect()
        };
        assert_eq!(ids(&Targets::default()), ["a", "b", "e", "f"]);
        let north = Targets {
            sites: vec![SiteId::new("north").expect("site")],
            ..Targets::default()
        };
        assert_eq!(ids(&north), ["a", "b"]);
        let ct_130 = Targets {
            tags: vec![t("ct")],
            versions: vec![t("1.3.0")],
            ..Targets::default()
        };
        assert_eq!(ids(&ct_130), ["a", "e"]);
        let hw = Targets {
            hardware: vec![t("generic-1u-2nic")],
            ..Targets::default()
        };
        assert_eq!(ids(&hw), ["e"]);
        // A device that never said its version is not "on 1.3.0".
        let v = Targets {
            versions: vec![t("1.3.0"), t("x")],
            sites: vec![SiteId::new("south").expect("site")],
            ..Targets::default()
        };
        assert_eq!(ids(&v), ["e"]);
    }
}
