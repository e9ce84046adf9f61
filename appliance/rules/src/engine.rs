//! Validated rules, ready to evaluate: which coercions apply to an object and where it goes.

use crate::config::{self, Problem, RulesConfig, When};
use crate::tag::{self, TagNo};
use std::collections::{BTreeMap, BTreeSet};

/// Modality (0008,0060).
pub const MODALITY: TagNo = 0x0008_0060;

/// What is known of an object besides its elements.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// The sender's calling AE title.
    pub calling_ae: &'a str,
    /// The AE title it called.
    pub called_ae: &'a str,
    /// SOP Class UID.
    pub sop_class: &'a str,
}

/// Element values as text (see [`crate::dataset::text`]); a missing key is a missing element.
pub type Values = BTreeMap<TagNo, String>;

#[derive(Debug, Clone)]
struct Cond {
    modality: Vec<String>,
    calling_ae: Vec<String>,
    called_ae: Vec<String>,
    sop_class: Vec<String>,
    tags: Vec<(TagNo, Vec<String>)>,
}

fn value_matches(value: Option<&str>, pattern: &str) -> bool {
    match (value, pattern) {
        (None, "") => true,
        (None, _) => false,
        (Some(v), p) => match p.strip_suffix('*') {
            Some(prefix) => v.starts_with(prefix),
            None => v == p,
        },
    }
}

impl Cond {
    fn new(w: &When) -> Cond {
        Cond {
            modality: w.modality.clone(),
            calling_ae: w.calling_ae.iter().map(|a| a.trim().to_string()).collect(),
            called_ae: w.called_ae.iter().map(|a| a.trim().to_string()).collect(),
            sop_class: w.sop_class.clone(),
            tags: w
                .tags
                .iter()
                .filter_map(|(k, v)| {
                    let t = config::condition_tag(k).ok()?;
                    Some((t, v.values().iter().map(|s| s.to_string()).collect()))
                })
                .collect(),
        }
    }

    fn matches(&self, ctx: &Context<'_>, values: &Values) -> bool {
        let any = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        let modality = values.get(&MODALITY).map(String::as_str).unwrap_or("");
        any(&self.modality, modality)
            && any(&self.calling_ae, ctx.calling_ae.trim())
            && any(&self.called_ae, ctx.called_ae.trim())
            && any(&self.sop_class, medgate_dicom::trim_uid(ctx.sop_class))
            && self.tags.iter().all(|(t, pats)| {
                let v = values.get(t).map(String::as_str).filter(|v| !v.is_empty());
                pats.iter().any(|p| value_matches(v, p))
            })
    }

    fn tags(&self) -> impl Iterator<Item = TagNo> + '_ {
        self.tags
            .iter()
            .map(|(t, _)| *t)
            .chain((!self.modality.is_empty()).then_some(MODALITY))
    }
}

#[derive(Debug, Clone)]
enum Action {
    Set(String),
    Fill(String),
    Map(BTreeMap<String, String>),
}

#[derive(Debug, Clone)]
struct Coerce {
    name: String,
    when: Cond,
    actions: Vec<(TagNo, [u8; 2], Action)>,
}

#[derive(Debug, Clone)]
struct Route {
    name: String,
    when: Cond,
    to: Vec<String>,
}

/// One effect of one rule on one element.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// The rule's name.
    pub rule: String,
    /// The element.
    pub tag: TagNo,
    /// Its value before (None: the object did not have it).
    pub old: Option<String>,
    /// Its value after.
    pub new: String,
}

impl Change {
    /// `rule "x": (0010,0021) IssuerOfPatientID: (absent) -> "HOSP-A"`: for the local console
    /// only (it shows values).
    pub fn describe(&self) -> String {
        format!(
            "rule {:?}: {}: {} -> {:?}",
            self.rule,
            tag::describe(self.tag),
            self.old
                .as_ref()
                .map(|o| format!("{o:?}"))
                .unwrap_or_else(|| "(absent)".into()),
            self.new
        )
    }
}

/// Where an object goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Routing {
    /// No routing rules: every destination.
    All,
    /// These destinations; `routes` are the names of the routes that matched (empty: the default).
    To {
        /// Destination names.
        destinations: BTreeSet<String>,
        /// Routes that matched.
        routes: Vec<String>,
    },
}

impl Routing {
    /// The destinations among `all` (configuration order kept).
    pub fn select(&self, all: &[String]) -> BTreeSet<String> {
        match self {
            Routing::All => all.iter().cloned().collect(),
            Routing::To { destinations, .. } => all
                .iter()
                .filter(|d| destinations.contains(*d))
                .cloned()
                .collect(),
        }
    }
}

/// The rules, validated and compiled.
#[derive(Debug, Clone)]
pub struct Rules {
    config: RulesConfig,
    coerce: Vec<Coerce>,
    routes: Vec<Route>,
    default_route: Vec<String>,
    hash: String,
    wanted: BTreeSet<TagNo>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules::new(RulesConfig::default(), &[]).unwrap_or_else(|_| Rules {
            config: RulesConfig::default(),
            coerce: Vec::new(),
            routes: Vec::new(),
            default_route: Vec::new(),
            hash: String::new(),
            wanted: BTreeSet::new(),
        })
    }
}

/// The SHA-256 of the canonical JSON form of the rules (key order fixed), as `sha256:<hex>`.
pub fn rules_hash(cfg: &RulesConfig) -> String {
    let json = serde_json::to_vec(cfg).unwrap_or_default();
    let d = ring::digest::digest(&ring::digest::SHA256, &json);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl Rules {
    /// Validates (against the configured destination names) and compiles.
    pub fn new(cfg: RulesConfig, destinations: &[String]) -> Result<Rules, Vec<Problem>> {
        let problems = config::validate(&cfg, destinations);
        if !problems.is_empty() {
            return Err(problems);
        }
        let coerce: Vec<Coerce> = cfg
            .coerce
            .iter()
            .map(|r| {
                let mut actions = Vec::new();
                for (k, v) in &r.set {
                    if let Ok((t, vr)) = config::target(k) {
                        actions.push((t, vr, Action::Set(v.clone())));
                    }
                }
                for (k, v) in &r.fill {
                    if let Ok((t, vr)) = config::target(k) {
                        actions.push((t, vr, Action::Fill(v.clone())));
                    }
                }
                for (k, m) in &r.map {
                    if let Ok((t, vr)) = config::target(k) {
                        actions.push((t, vr, Action::Map(m.clone())));
                    }
                }
                actions.sort_by_key(|a| a.0);
                Coerce {
                    name: r.name.clone(),
                    when: Cond::new(&r.when),
                    actions,
                }
            })
            .collect();
        let routes: Vec<Route> = cfg
            .route
            .iter()
            .map(|r| Route {
                name: r.name.clone(),
                when: Cond::new(&r.when),
                to: r.to.clone(),
            })
            .collect();
        let mut wanted = BTreeSet::new();
        for c in &coerce {
            wanted.extend(c.when.tags());
            wanted.extend(c.actions.iter().map(|a| a.0));
        }
        for r in &routes {
            wanted.extend(r.when.tags());
        }
        Ok(Rules {
            hash: rules_hash(&cfg),
            default_route: cfg.default_route.clone(),
            config: cfg,
            coerce,
            routes,
            wanted,
        })
    }

    /// The configuration they came from.
    pub fn config(&self) -> &RulesConfig {
        &self.config
    }

    /// `sha256:<hex>` of the rules.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The operator's label, if any.
    pub fn version(&self) -> Option<&str> {
        self.config.version.as_deref()
    }

    /// Number of coercion rules.
    pub fn coerce_count(&self) -> usize {
        self.coerce.len()
    }

    /// Number of routes.
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// Whether any coercion rule is configured.
    pub fn has_coercion(&self) -> bool {
        !self.coerce.is_empty()
    }

    /// Whether objects are routed (else they go to every destination).
    pub fn has_routing(&self) -> bool {
        !self.routes.is_empty() || !self.default_route.is_empty()
    }

    /// The elements the rules look at or write.
    pub fn wanted(&self) -> &BTreeSet<TagNo> {
        &self.wanted
    }

    /// Applies the coercion rules, in order, to `values`: conditions look at the object as
    /// received, each action at the values left by the rules before it. Returns every change
    /// and the values after them.
    pub fn coerce(&self, ctx: &Context<'_>, values: &Values) -> (Vec<Change>, Values) {
        let mut current = values.clone();
        let mut changes = Vec::new();
        for rule in &self.coerce {
            if !rule.when.matches(ctx, values) {
                continue;
            }
            for (t, _, action) in &rule.actions {
                let cur = current.get(t).cloned();
                let new = match action {
                    Action::Set(v) => (cur.as_deref() != Some(v.as_str())).then(|| v.clone()),
                    Action::Fill(v) => cur.as_deref().is_none_or(str::is_empty).then(|| v.clone()),
                    Action::Map(m) => cur.as_deref().and_then(|c| m.get(c)).cloned(),
                };
                if let Some(new) = new {
                    if cur.as_deref() == Some(new.as_str()) {
                        continue;
                    }
                    changes.push(Change {
                        rule: rule.name.clone(),
                        tag: *t,
                        old: cur,
                        new: new.clone(),
                    });
                    current.insert(*t, new);
                }
            }
        }
        (changes, current)
    }

    /// The standard VR of an element the rules write.
    pub fn target_vr(&self, t: TagNo) -> Option<[u8; 2]> {
        self.coerce
            .iter()
            .flat_map(|c| c.actions.iter())
            .find(|a| a.0 == t)
            .map(|a| a.1)
    }

    /// Where an object with these (coerced) values goes.
    pub fn route(&self, ctx: &Context<'_>, values: &Values) -> Routing {
        if !self.has_routing() {
            return Routing::All;
        }
        let mut destinations = BTreeSet::new();
        let mut routes = Vec::new();
        for r in &self.routes {
            if r.when.matches(ctx, values) {
                destinations.extend(r.to.iter().cloned());
                routes.push(r.name.clone());
            }
        }
        if destinations.is_empty() {
            destinations.extend(self.default_route.iter().cloned());
        }
        Routing::To {
            destinations,
            routes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Rules {
        #[derive(serde::Deserialize)]
        struct Wrap {
            rules: RulesConfig,
        }
        let cfg = toml::from_str::<Wrap>(text).expect("parses").rules;
        Rules::new(cfg, &["archive".into(), "pacs".into(), "us".into()]).expect("valid")
    }

    const RULES: &str = r#"
[rules]
default_route = ["archive"]
[[rules.coerce]]
name = "issuer"
when = { calling_ae = ["CT_A"] }
set = { IssuerOfPatientID = "HOSP-A" }
fill = { InstitutionName = "Hospital A" }
[[rules.coerce]]
name = "body part"
when = { modality = ["CT"], tags = { StationName = "CT*" } }
map = { BodyPartExamined = { THX = "CHEST" } }
[[rules.route]]
name = "ct"
when = { modality = ["CT"] }
to = ["pacs"]
[[rules.route]]
name = "us"
when = { modality = ["US"] }
to = ["us", "archive"]
"#;

    fn vals(pairs: &[(TagNo, &str)]) -> Values {
        pairs.iter().map(|(t, v)| (*t, v.to_string())).collect()
    }

    #[test]
    fn coercion_in_order_with_conditions() {
        let r = rules(RULES);
        let ctx = Context {
            calling_ae: "CT_A",
            called_ae: "MEDGATE",
            sop_class: "1.2.840.10008.5.1.4.1.1.2",
        };
        let v = vals(&[
            (MODALITY, "CT"),
            (0x0008_0080, ""),
            (0x0008_1010, "CT7"),
            (0x0018_0015, "THX"),
        ]);
        let (changes, after) = r.coerce(&ctx, &v);
        let got: Vec<String> = changes.iter().map(Change::describe).collect();
        assert_eq!(
            got,
            vec![
                "rule \"issuer\": (0008,0080) InstitutionName: \"\" -> \"Hospital A\"",
                "rule \"issuer\": (0010,0021) IssuerOfPatientID: (absent) -> \"HOSP-A\"",
                "rule \"body part\": (0018,0015) BodyPartExamined: \"THX\" -> \"CHEST\"",
            ]
        );
        assert_eq!(after.get(&0x0010_0021).map(String::as_str), Some("HOSP-A"));
        // Already right: nothing to do.
        let (again, _) = r.coerce(&ctx, &after);
        assert_eq!(again, vec![]);
        // Another sender: nothing.
        let other = Context {
            calling_ae: "CT_B",
            ..ctx
        };
        assert_eq!(r.coerce(&other, &vals(&[(MODALITY, "MR")])).0, vec![]);
    }

    #[test]
    fn routing_union_and_default() {
        let r = rules(RULES);
        let ctx = Context::default();
        let all = vec!["archive".to_string(), "pacs".into(), "us".into()];
        let to = |m: &str| r.route(&ctx, &vals(&[(MODALITY, m)])).select(&all);
        assert_eq!(to("CT"), BTreeSet::from(["pacs".to_string()]));
        assert_eq!(
            to("US"),
            BTreeSet::from(["archive".to_string(), "us".into()])
        );
        assert_eq!(to("MR"), BTreeSet::from(["archive".to_string()]));
        assert_eq!(Rules::default().route(&ctx, &Values::new()), Routing::All);
        assert!(r.hash().starts_with("sha256:") && r.hash().len() == 71);
        assert_ne!(r.hash(), Rules::default().hash());
    }
}
