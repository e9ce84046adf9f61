//! The `[rules]` section of the appliance configuration and its validation (exact key per problem).

use crate::tag::{self, TagNo};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// `[rules]`: coercion rules applied to every object before it is stored, and routing rules that
/// choose its destinations. Empty (the default): objects are stored as received and go to every
/// destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// A label for this set of rules (e.g. "2026-11-28 hospital A onboarding"), reported next to
    /// the hash in `/api/status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `[[rules.coerce]]`, applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coerce: Vec<CoerceRule>,
    /// `[[rules.route]]`: an object goes to the destinations of every route that matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteRule>,
    /// Destinations of objects no route matches. Required when there is a route; without any
    /// route and default, objects go to every destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_route: Vec<String>,
}

/// `[[rules.coerce]]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoerceRule {
    /// Shown in the dry run and logs.
    pub name: String,
    /// When it applies (every condition must hold; empty: always).
    #[serde(default)]
    pub when: When,
    /// Element = value: written whatever the object holds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Element = value: written only when the object lacks it or holds an empty value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fill: BTreeMap<String, String>,
    /// Element = { old = new, ... }: replaces values found in the table.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub map: BTreeMap<String, BTreeMap<String, String>>,
}

/// `[[rules.route]]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// Shown in the dry run and logs.
    pub name: String,
    /// When it applies (every condition must hold; empty: always).
    #[serde(default)]
    pub when: When,
    /// Destination names (`[[destination]].name`).
    pub to: Vec<String>,
}

/// Conditions: every list given must contain the object's value (lists are "any of").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// Modality (0008,0060) is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modality: Vec<String>,
    /// The sender's calling AE title is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calling_ae: Vec<String>,
    /// The AE title the sender called is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub called_ae: Vec<String>,
    /// The SOP Class UID is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sop_class: Vec<String>,
    /// Element = value or [values]: the element's value is one of these ("" matches a missing or
    /// empty element; a trailing `*` matches any value starting with what precedes it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, OneOrMany>,
}

/// A value or a list of values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Any of these.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values.
    pub fn values(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

pub use crate::Problem;

/// `tags = { X = "a" }` as written.
impl std::fmt::Display for OneOrMany {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.values().join(" | "))
    }
}

fn key_part(k: &str) -> String {
    if k.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_string()
    } else {
        format!("{k:?}")
    }
}

/// A target element of a rule: its tag and the VR values are checked against.
pub fn target(name: &str) -> Result<(TagNo, [u8; 2]), String> {
    let t = tag::parse_tag(name)?;
    if let Some(why) = tag::protected(t) {
        return Err(format!("{}: {why}", tag::describe(t)));
    }
    let vr = tag::standard_vr(t).ok_or_else(|| {
        format!(
            "{} is not an element of the standard dictionary with a single VR",
            tag::fmt_tag(t)
        )
    })?;
    if !tag::is_text_vr(&vr) {
        return Err(format!(
            "{} has VR {}: only text elements (AE, CS, DA, LO, PN, SH, UI, ...) can be written",
            tag::describe(t),
            String::from_utf8_lossy(&vr)
        ));
    }
    Ok((t, vr))
}

/// A tag a condition may look at: any top-level data element, private ones included.
pub fn condition_tag(name: &str) -> Result<TagNo, String> {
    let t = tag::parse_tag(name)?;
    if t >> 16 < 0x0008 || t >> 16 >= 0xFFFA || t & 0xFFFF == 0 {
        return Err(format!(
            "{} is not a data element a condition can look at (groups 0008 to FFF8, no group lengths)",
            tag::fmt_tag(t)
        ));
    }
    Ok(t)
}

fn check_name(p: &mut Vec<Problem>, key: String, name: &str, seen: &mut BTreeSet<String>) {
    if name.trim().is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
        p.push(Problem {
            key,
            message: format!("{name:?} must be 1 to 64 characters without control characters"),
        });
    } else if !seen.insert(name.to_string()) {
        p.push(Problem {
            key,
            message: format!("{name:?} is used by another rule: rule names must be unique"),
        });
    }
}

fn check_when(p: &mut Vec<Problem>, base: &str, w: &When) {
    let mut bad = |key: String, message: String| p.push(Problem { key, message });
    for (i, m) in w.modality.iter().enumerate() {
        if let Err(e) = tag::check_value(b"CS", m) {
            bad(
                format!("{base}.modality[{i}]"),
                format!("{e} (modalities are codes like \"CT\", \"US\")"),
            );
        }
    }
    for (field, list) in [("calling_ae", &w.calling_ae), ("called_ae", &w.called_ae)] {
        for (i, ae) in list.iter().enumerate() {
            if let Err(e) = crate::check::validate_ae_title(ae) {
                bad(format!("{base}.{field}[{i}]"), e);
            }
        }
    }
    for (i, uid) in w.sop_class.iter().enumerate() {
        if let Err(e) = crate::check::validate_uid(uid) {
            bad(format!("{base}.sop_class[{i}]"), e);
        }
    }
    for (name, values) in &w.tags {
        let key = format!("{base}.tags.{}", key_part(name));
        if let Err(e) = condition_tag(name) {
            bad(key.clone(), e);
        }
        let v = values.values();
        if v.is_empty() {
            bad(
                key,
                "an empty list matches nothing: give at least one value (\"\" matches a missing element)"
                    .into(),
            );
        } else if let Some(x) = v.iter().find(|x| x.chars().any(|c| c.is_control())) {
            bad(key, format!("{x:?} must not contain control characters"));
        }
    }
}

/// Every problem of a `[rules]` section; `destinations` are the configured destination names.
pub fn validate(cfg: &RulesConfig, destinations: &[String]) -> Vec<Problem> {
    let mut p = Vec::new();
    if let Some(v) = &cfg.version {
        if v.trim().is_empty() || v.len() > 64 || v.chars().any(|c| c.is_control()) {
            p.push(Problem {
                key: "rules.version".into(),
                message: format!("{v:?} must be 1 to 64 characters without control characters"),
            });
        }
    }
    let mut names = BTreeSet::new();
    for (i, r) in cfg.coerce.iter().enumerate() {
        let base = format!("rules.coerce[{i}]");
        check_name(&mut p, format!("{base}.name"), &r.name, &mut names);
        check_when(&mut p, &format!("{base}.when"), &r.when);
        if r.set.is_empty() && r.fill.is_empty() && r.map.is_empty() {
            p.push(Problem {
                key: base.clone(),
                message: "does nothing: give `set`, `fill` or `map`".into(),
            });
        }
        let mut targets: BTreeMap<TagNo, String> = BTreeMap::new();
        for (action, name, values) in r
            .set
            .iter()
            .map(|(k, v)| ("set", k, vec![v.as_str()]))
            .chain(r.fill.iter().map(|(k, v)| ("fill", k, vec![v.as_str()])))
            .chain(
                r.map
                    .iter()
                    .map(|(k, m)| ("map", k, m.values().map(String::as_str).collect())),
            )
        {
            let key = format!("{base}.{action}.{}", key_part(name));
            match target(name) {
                Err(e) => p.push(Problem { key, message: e }),
                Ok((t, vr)) => {
                    if let Some(other) = targets.insert(t, action.to_string()) {
                        p.push(Problem {
                            key: key.clone(),
                            message: format!(
                                "{} is also in `{other}` of this rule: one action per element and rule",
                                tag::describe(t)
                            ),
                        });
                    }
                    for v in values {
                        if let Err(e) = tag::check_value(&vr, v) {
                            p.push(Problem {
                                key: key.clone(),
                                message: e,
                            });
                        }
                    }
                    if action == "map" {
                        if let Some(m) = r.map.get(name) {
                            if m.is_empty() {
                                p.push(Problem {
                                    key: key.clone(),
                                    message: "an empty value map does nothing".into(),
                                });
                            }
                            if m.keys().any(|k| k.is_empty()) {
                                p.push(Problem {
                                    key,
                                    message:
                                        "\"\" cannot be mapped: use `fill` for missing or empty values"
                                            .into(),
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    let known: BTreeSet<&str> = destinations.iter().map(String::as_str).collect();
    let check_dest = |p: &mut Vec<Problem>, key: String, d: &str| {
        if !known.contains(d) {
            p.push(Problem {
                key,
                message: format!(
                    "{d:?} is not a configured destination (known: {})",
                    destinations.join(", ")
                ),
            });
        }
    };
    let mut route_names = BTreeSet::new();
    for (i, r) in cfg.route.iter().enumerate() {
        let base = format!("rules.route[{i}]");
        check_name(&mut p, format!("{base}.name"), &r.name, &mut route_names);
        check_when(&mut p, &format!("{base}.when"), &r.when);
        if r.to.is_empty() {
            p.push(Problem {
                key: format!("{base}.to"),
                message: "must name at least one destination".into(),
            });
        }
        for (j, d) in r.to.iter().enumerate() {
            check_dest(&mut p, format!("{base}.to[{j}]"), d);
        }
    }
    if !cfg.route.is_empty() && cfg.default_route.is_empty() {
        p.push(Problem {
            key: "rules.default_route".into(),
            message: "is required with [[rules.route]]: name the destinations of objects no route matches (e.g. [\"archive\"])".into(),
        });
    }
    for (j, d) in cfg.default_route.iter().enumerate() {
        check_dest(&mut p, format!("rules.default_route[{j}]"), d);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> RulesConfig {
        #[derive(Deserialize)]
        struct Wrap {
            rules: RulesConfig,
        }
        toml::from_str::<Wrap>(text).expect("parses").rules
    }

    fn keys(cfg: &RulesConfig) -> Vec<(String, String)> {
        validate(cfg, &["archive".into(), "pacs".into()])
            .into_iter()
            .map(|p| (p.key, p.message))
            .collect()
    }

    #[test]
    fn good_rules_pass() {
        let cfg = parse(
            r#"
[rules]
version = "v1"
default_route = ["archive"]
[[rules.coerce]]
name = "issuer"
when = { calling_ae = ["CT_A"], modality = ["CT"], tags = { StationName = ["CT1", "CT2*"] } }
set = { IssuerOfPatientID = "HOSP-A" }
fill = { InstitutionName = "Hospital A" }
map = { BodyPartExamined = { THX = "CHEST" } }
[[rules.route]]
name = "ct"
when = { modality = ["CT"] }
to = ["pacs"]
"#,
        );
        assert_eq!(keys(&cfg), vec![]);
    }

    #[test]
    fn every_problem_has_its_key() {
        let cfg = parse(
            r#"
[rules]
version = ""
[[rules.coerce]]
name = "a"
when = { modality = ["ct"], calling_ae = ["WAY_TOO_LONG_AE_TITLE"], sop_class = ["1.2.x"], tags = { NoSuchKeyword = "x", "(0002,0010)" = "y" } }
set = { SOPInstanceUID = "1.2.3", InstitutionName = "Ünï", PixelData = "x", "(0009,0010)" = "X", Rows = "1" }
fill = { StationName = "THIS STATION NAME IS TOO LONG", InstitutionName = "X" }
map = { Modality = { "" = "CT", PX = "dx" } }
[[rules.coerce]]
name = "a"
[[rules.route]]
name = "r"
when = {}
to = ["nowhere"]
"#,
        );
        let got = keys(&cfg);
        let k: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            k,
            vec![
                "rules.version",
                "rules.coerce[0].when.modality[0]",
                "rules.coerce[0].when.calling_ae[0]",
                "rules.coerce[0].when.sop_class[0]",
                "rules.coerce[0].when.tags.\"(0002,0010)\"",
                "rules.coerce[0].when.tags.NoSuchKeyword",
                "rules.coerce[0].set.\"(0009,0010)\"",
                "rules.coerce[0].set.InstitutionName",
                "rules.coerce[0].set.PixelData",
                "rules.coerce[0].set.Rows",
                "rules.coerce[0].set.SOPInstanceUID",
                "rules.coerce[0].fill.InstitutionName",
                "rules.coerce[0].fill.StationName",
                "rules.coerce[0].map.Modality",
                "rules.coerce[0].map.Modality",
                "rules.coerce[1].name",
                "rules.coerce[1]",
                "rules.route[0].to[0]",
                "rules.default_route",
            ],
            "{got:#?}"
        );
        let msg = |key: &str| {
            got.iter()
                .find(|(k, _)| k == key)
                .map(|(_, m)| m.clone())
                .unwrap_or_default()
        };
        assert!(msg("rules.coerce[0].set.SOPInstanceUID").contains("identify the object"));
        assert!(msg("rules.coerce[0].fill.InstitutionName").contains("also in `set`"));
        assert!(msg("rules.route[0].to[0]").contains("not a configured destination"));
        assert!(msg("rules.coerce[1].name").contains("unique"));
    }
}
