//! The operations of the console's fleet pages: the devices list within the caller's sites
//! (filtered, sorted and paged by the database), bulk actions (each device checked again here
//! against the actor's sites and role, then changed through the same operation a single change
//! uses, so each is audited on its own), sites with time zone and rooms, claim tokens for a room
//! and the provisioning file around one, and the site-scoped views of the live feed and events.

use std::collections::{BTreeMap, HashMap};

use medgate_contract::{CommandAction, DeviceId, SiteId, Token};
use serde_json::{Value, json};

use super::{Actor, NewClaim, OpError, Ops, sha256_hex};
use crate::auth::SiteScope;
use crate::auth::policy::Permission;
use crate::model::{ConfigScope, Connection, Device, DeviceStatus, EventRecord};
use crate::store::audit::Outcome;
use crate::store::fleet::{DeviceOrder, DeviceSelection, Facets, SiteDetail};
use crate::store::now_db;

/// Devices per page of the list.
pub const PAGE_SIZE: i64 = 100;

/// At most this many devices in one bulk action.
pub const BULK_MAX: usize = 10_000;

/// One page of the devices list.
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePage {
    /// The page's devices.
    pub devices: Vec<Device>,
    /// How many match the filters.
    pub matched: i64,
    /// Pages (at least 1).
    pub pages: i64,
    /// This page (from 1; a page beyond the last is the last).
    pub page: i64,
}

/// An IANA time zone name (`Europe/Oslo`, `America/Argentina/Buenos_Aires`, `UTC`): checked by
/// its form — an area the tz database has, then 1-3 parts of letters, digits, `_`, `+`, `-` —
/// not against a tz database (the fleet carries none; the appliance's clock is UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeZone(String);

impl TimeZone {
    const AREAS: [&'static str; 11] = [
        "Africa",
        "America",
        "Antarctica",
        "Arctic",
        "Asia",
        "Atlantic",
        "Australia",
        "Europe",
        "Indian",
        "Pacific",
        "Etc",
    ];

    /// Checks a name.
    pub fn parse(s: &str) -> Result<TimeZone, OpError> {
        let s = s.trim();
        let bad = || {
            OpError::Invalid(format!(
                "time zone {s:?}: give an IANA name such as Europe/Oslo or America/New_York (or UTC)"
            ))
        };
        if s == "UTC" {
            return Ok(TimeZone(s.into()));
        }
        let mut parts = s.split('/');
        let area = parts.next().ok_or_else(bad)?;
        let rest: Vec<&str> = parts.collect();
        let part_ok = |p: &&str| {
            (1..=30).contains(&p.len())
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-'))
                && p.starts_with(|c: char| c.is_ascii_alphabetic())
        };
        if !Self::AREAS.contains(&area)
            || rest.is_empty()
            || rest.len() > 2
            || !rest.iter().all(part_ok)
        {
            return Err(bad());
        }
        Ok(TimeZone(s.into()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A room's name: 1-100 characters, trimmed, no control characters.
pub fn check_room(s: &str) -> Result<String, OpError> {
    let r = s.trim();
    if r.is_empty() || r.chars().count() > 100 || r.chars().any(char::is_control) {
        return Err(OpError::Invalid(format!(
            "room {r:?}: 1-100 characters without line breaks or tabs"
        )));
    }
    Ok(r.to_owned())
}

/// What a site's edit form sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteEdit {
    /// Name, 1-200 characters.
    pub name: String,
    /// Time zone, if any.
    pub time_zone: Option<TimeZone>,
    /// Rooms (checked by [`check_room`], duplicates dropped).
    pub rooms: Vec<String>,
}

/// Where a bulk configuration comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigSource {
    /// Each device's own site's document.
    Site,
    /// The document of a tag.
    Tag(Token),
    /// A document given with the action (the appliance configuration as JSON).
    Document(Value),
}

/// A bulk action.
#[derive(Debug, Clone, PartialEq)]
pub enum BulkAction {
    /// Approve pending devices.
    Approve,
    /// Add a tag.
    Tag(Token),
    /// Remove a tag.
    Untag(Token),
    /// Restart connected devices (a command each).
    Restart,
    /// Give each device a copy of a configuration as its own (device) document.
    Config(ConfigSource),
}

impl BulkAction {
    /// The audit's word.
    pub fn word(&self) -> &'static str {
        match self {
            BulkAction::Approve => "approve",
            BulkAction::Tag(_) => "tag",
            BulkAction::Untag(_) => "untag",
            BulkAction::Restart => "restart",
            BulkAction::Config(_) => "config",
        }
    }

    /// What a device it was done to is, in the summary.
    pub fn done_word(&self) -> &'static str {
        match self {
            BulkAction::Approve => "approved",
            BulkAction::Tag(_) => "tagged",
            BulkAction::Untag(_) => "untagged",
            BulkAction::Restart => "restarted",
            BulkAction::Config(_) => "configured",
        }
    }
}

/// Which devices a bulk action is for.
#[derive(Debug, Clone, PartialEq)]
pub enum BulkTarget {
    /// Every device the filters select (within the actor's sites).
    Selection(DeviceSelection),
    /// These (the checked rows).
    Devices(Vec<String>),
}

/// What happened to one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BulkOutcome {
    /// Done; the words say what.
    Done(String),
    /// Nothing to do, or not now (why).
    Skipped(String),
    /// Not permitted (why).
    Refused(String),
    /// Tried and failed (why).
    Failed(String),
}

impl BulkOutcome {
    fn kind(&self) -> (u8, &'static str) {
        match self {
            BulkOutcome::Done(_) => (0, "done"),
            BulkOutcome::Skipped(_) => (1, "skipped"),
            BulkOutcome::Refused(_) => (2, "refused"),
            BulkOutcome::Failed(_) => (3, "failed"),
        }
    }

    /// The words of the outcome.
    pub fn words(&self) -> &str {
        match self {
            BulkOutcome::Done(w)
            | BulkOutcome::Skipped(w)
            | BulkOutcome::Refused(w)
            | BulkOutcome::Failed(w) => w,
        }
    }
}

/// The refusal of a device outside the actor's sites, or unknown: the same words for both, so
/// that another site's device is not even said to exist.
pub const NOT_YOURS: &str = "not at one of your sites";

/// The outcome of a bulk action, device by device.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkReport {
    /// The action.
    pub action: BulkAction,
    /// Each device and what happened to it, in order.
    pub results: Vec<(String, BulkOutcome)>,
}

impl BulkReport {
    /// Counts by outcome and reason, done first: (kind word, reason, count).
    pub fn summary(&self) -> Vec<(&'static str, String, usize)> {
        let mut by: BTreeMap<(u8, &'static str, String), usize> = BTreeMap::new();
        for (_, o) in &self.results {
            let (rank, kind) = o.kind();
            let reason = match o {
                BulkOutcome::Done(_) => self.action.done_word().to_owned(),
                other => other.words().to_owned(),
            };
            *by.entry((rank, kind, reason)).or_default() += 1;
        }
        by.into_iter().map(|((_, k, r), n)| (k, r, n)).collect()
    }

    /// The summary in words: `12 restarted, 2 skipped: not connected, 1 refused: not at one of
    /// your sites`.
    pub fn words(&self) -> String {
        if self.results.is_empty() {
            return "no device selected: nothing done".into();
        }
        self.summary()
            .iter()
            .map(|(kind, reason, n)| {
                if *kind == "done" {
                    format!("{n} {reason}")
                } else {
                    format!("{n} {kind}: {reason}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A provisioning file for a new appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioning {
    /// File name to save it as.
    pub file_name: String,
    /// The TOML text (`medgate-appliance enroll --provisioning` reads it).
    pub text: String,
}

/// Whom a live-feed message (JSON text) concerns: device changes and events name their site,
/// command changes their device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveTarget {
    /// A site.
    Site(String),
    /// A device (its site is looked up).
    Device(String),
}

/// Reads a live-feed message's [`LiveTarget`]; `None` for one that names neither.
pub fn live_target(msg: &str) -> Option<LiveTarget> {
    let v: Value = serde_json::from_str(msg).ok()?;
    let text = |v: &Value| v.as_str().map(str::to_owned);
    match v["type"].as_str()? {
        "device" => text(&v["device"]["site"]).map(LiveTarget::Site),
        "event" => text(&v["site"]).map(LiveTarget::Site),
        _ => text(&v["device"]).map(LiveTarget::Device),
    }
}

impl Ops {
    // ---- the devices list ----

    /// One page of the devices the selection holds within `scope` (page from 1).
    pub async fn device_page(
        &self,
        scope: &SiteScope,
        sel: &DeviceSelection,
        order: DeviceOrder,
        page: i64,
    ) -> Result<DevicePage, OpError> {
        let matched = self.store.count_devices(sel, scope).await?;
        let pages = ((matched + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
        let page = page.clamp(1, pages);
        let devices = self
            .store
            .device_page(sel, scope, order, (page - 1) * PAGE_SIZE, PAGE_SIZE)
            .await?;
        Ok(DevicePage {
            devices,
            matched,
            pages,
            page,
        })
    }

    /// What the filters offer within `scope`.
    pub async fn facets(&self, scope: &SiteScope) -> Result<Facets, OpError> {
        Ok(self.store.facets(scope).await?)
    }

    // ---- bulk actions ----

    /// Carries out a bulk action device by device: each is checked again against the actor's
    /// sites and role, then changed through the operation a single change uses (audited there);
    /// a refusal is audited as denied. Ends with one summary entry.
    pub async fn bulk(
        &self,
        actor: &Actor,
        target: BulkTarget,
        action: BulkAction,
    ) -> Result<BulkReport, OpError> {
        let ids: Vec<String> = match target {
            BulkTarget::Selection(sel) => self
                .store
                .selected_devices(&sel, &actor.principal.sites)
                .await?
                .into_iter()
                .map(|(id, _)| id)
                .collect(),
            BulkTarget::Devices(mut v) => {
                v.sort();
                v.dedup();
                v
            }
        };
        if ids.len() > BULK_MAX {
            return Err(OpError::Invalid(format!(
                "{} devices selected; a bulk action takes at most {BULK_MAX}: narrow the filters",
                ids.len()
            )));
        }
        if let BulkAction::Config(ConfigSource::Document(d)) = &action
            && !d.is_object()
        {
            return Err(OpError::Invalid(
                "the configuration must be a TOML document or a JSON object".into(),
            ));
        }
        let permitted = Permission::DevicesOperate.granted_to(actor.principal.role);
        let mut site_docs: HashMap<String, Option<Value>> = HashMap::new();
        let tag_doc = match &action {
            BulkAction::Config(ConfigSource::Tag(t)) => {
                let doc = self
                    .store
                    .config_document(ConfigScope::Tag, t.as_str())
                    .await?
                    .map(|(_, doc)| Value::Object(doc));
                Some(doc.ok_or_else(|| {
                    OpError::Invalid(format!(
                        "tag {t} has no configuration document; set one first (PUT /api/v1/tags/{t}/config)"
                    ))
                })?)
            }
            _ => None,
        };
        let mut results = Vec::with_capacity(ids.len());
        for id in ids {
            let outcome = match self
                .bulk_one(
                    actor,
                    &id,
                    &action,
                    permitted,
                    &mut site_docs,
                    tag_doc.as_ref(),
                )
                .await
            {
                Ok(o) => o,
                Err(e) => BulkOutcome::Failed(e.to_string()),
            };
            if let BulkOutcome::Refused(why) = &outcome {
                self.audit(
                    actor,
                    &format!("bulk.{}", action.word()),
                    &format!("device:{id}"),
                    Outcome::Denied,
                    None,
                    Some(json!({"reason": why}).to_string()),
                )
                .await;
            }
            results.push((id, outcome));
        }
        let report = BulkReport { action, results };
        let counts: Vec<Value> = report
            .summary()
            .into_iter()
            .map(|(k, r, n)| json!({"outcome": k, "reason": r, "devices": n}))
            .collect();
        self.audit(
            actor,
            &format!("bulk.{}", report.action.word()),
            "devices",
            Outcome::Ok,
            None,
            Some(json!({"summary": counts}).to_string()),
        )
        .await;
        tracing::info!(action = report.action.word(), devices = report.results.len(), summary = %report.words(), "bulk action");
        Ok(report)
    }

    async fn bulk_one(
        &self,
        actor: &Actor,
        id: &str,
        action: &BulkAction,
        permitted: bool,
        site_docs: &mut HashMap<String, Option<Value>>,
        tag_doc: Option<&Value>,
    ) -> Result<BulkOutcome, OpError> {
        let Some(d) = self.store.device(id).await? else {
            return Ok(BulkOutcome::Refused(NOT_YOURS.into()));
        };
        if !actor.principal.sites.allows(&d.site) {
            return Ok(BulkOutcome::Refused(NOT_YOURS.into()));
        }
        if !permitted {
            return Ok(BulkOutcome::Refused(format!(
                "your role {} may not change devices",
                actor.principal.role
            )));
        }
        Ok(match action {
            BulkAction::Approve => {
                if d.status != DeviceStatus::Pending {
                    BulkOutcome::Skipped(format!("already {}", d.status))
                } else {
                    self.set_status(actor, id, DeviceStatus::Approved).await?;
                    BulkOutcome::Done("approved".into())
                }
            }
            BulkAction::Tag(t) => {
                if d.tags.iter().any(|x| x == t.as_str()) {
                    BulkOutcome::Skipped("already tagged".into())
                } else {
                    let mut tags = d.tags.clone();
                    tags.push(t.as_str().to_owned());
                    self.patch_device(actor, id, None, Some(tags.as_slice()))
                        .await?;
                    BulkOutcome::Done(format!("tagged {t}"))
                }
            }
            BulkAction::Untag(t) => {
                if !d.tags.iter().any(|x| x == t.as_str()) {
                    BulkOutcome::Skipped("not tagged".into())
                } else {
                    let tags: Vec<String> = d
                        .tags
                        .iter()
                        .filter(|x| *x != t.as_str())
                        .cloned()
                        .collect();
                    self.patch_device(actor, id, None, Some(tags.as_slice()))
                        .await?;
                    BulkOutcome::Done(format!("untagged {t}"))
                }
            }
            BulkAction::Restart => {
                if d.status != DeviceStatus::Approved {
                    BulkOutcome::Skipped(format!("not approved ({})", d.status))
                } else if d.connection != Connection::Online {
                    BulkOutcome::Skipped("not connected".into())
                } else {
                    let c = self
                        .create_command(
                            actor,
                            id,
                            CommandAction::Restart,
                            Some(std::time::Duration::from_secs(600)),
                        )
                        .await?;
                    BulkOutcome::Done(format!("restart sent ({})", c.id))
                }
            }
            BulkAction::Config(source) => {
                let doc = match source {
                    ConfigSource::Document(v) => Some(v.clone()),
                    ConfigSource::Tag(_) => tag_doc.cloned(),
                    ConfigSource::Site => {
                        if !site_docs.contains_key(&d.site) {
                            let doc = self
                                .store
                                .config_document(ConfigScope::Site, &d.site)
                                .await?
                                .map(|(_, doc)| Value::Object(doc));
                            site_docs.insert(d.site.clone(), doc);
                        }
                        site_docs.get(&d.site).cloned().flatten()
                    }
                };
                let Some(doc) = doc else {
                    return Ok(BulkOutcome::Skipped(
                        "its site has no configuration document".into(),
                    ));
                };
                match self.put_config(actor, ConfigScope::Device, id, doc).await {
                    Ok(applied) => match applied.devices.first() {
                        Some(v) => {
                            BulkOutcome::Done(format!("configuration version {}", v.version))
                        }
                        None => BulkOutcome::Skipped("already has this configuration".into()),
                    },
                    Err(OpError::InvalidConfig(p)) => {
                        BulkOutcome::Failed(format!("not valid for it: {}", p.join("; ")))
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    }

    // ---- sites and rooms ----

    /// Sites within `scope`, with time zone, rooms and counts.
    pub async fn site_details(&self, scope: &SiteScope) -> Result<Vec<SiteDetail>, OpError> {
        Ok(self.store.site_details(scope).await?)
    }

    /// One site within `scope` (`None`: no such site, or not one of the caller's).
    pub async fn site_detail(
        &self,
        scope: &SiteScope,
        id: &str,
    ) -> Result<Option<SiteDetail>, OpError> {
        if !scope.allows(id) {
            return Ok(None);
        }
        Ok(self.store.site_detail(id).await?)
    }

    /// Creates or edits a site: name (through [`Ops::put_site`]), time zone and rooms, audited
    /// with before and after.
    pub async fn save_site(
        &self,
        actor: &Actor,
        site: &SiteId,
        edit: SiteEdit,
    ) -> Result<SiteDetail, OpError> {
        actor.check_site(site.as_str())?;
        let mut rooms: Vec<String> = Vec::new();
        for r in &edit.rooms {
            let r = check_room(r)?;
            if !rooms.contains(&r) {
                rooms.push(r);
            }
        }
        let before = self.store.site_detail(site.as_str()).await?;
        self.put_site(actor, site, &edit.name).await?;
        let tz = edit.time_zone.as_ref().map(TimeZone::as_str);
        self.store
            .set_site_details(site.as_str(), tz, &rooms)
            .await?;
        let after = self
            .store
            .site_detail(site.as_str())
            .await?
            .ok_or_else(|| OpError::Corrupt(format!("site {site} vanished")))?;
        let doc = |s: &SiteDetail| json!({"time_zone": s.time_zone, "rooms": s.rooms}).to_string();
        self.audit(
            actor,
            "site.details",
            &format!("site:{site}"),
            Outcome::Ok,
            before.as_ref().map(doc),
            Some(doc(&after)),
        )
        .await;
        Ok(after)
    }

    /// A claim token for a new appliance at a site, optionally for one of its rooms (the device
    /// gets that room when it enrolls).
    pub async fn claim_for_room(
        &self,
        actor: &Actor,
        site: SiteId,
        device: DeviceId,
        room: Option<&str>,
    ) -> Result<NewClaim, OpError> {
        let room = match room.map(str::trim).filter(|r| !r.is_empty()) {
            Some(r) => {
                let r = check_room(r)?;
                let known = self
                    .store
                    .site_detail(site.as_str())
                    .await?
                    .is_some_and(|s| s.rooms.contains(&r));
                if !known {
                    return Err(OpError::Invalid(format!(
                        "room {r:?} is not one of site {site}'s rooms; add it on the site's page first"
                    )));
                }
                Some(r)
            }
            None => None,
        };
        let claim = self.create_claim(actor, site, device).await?;
        if let Some(r) = room {
            self.store
                .set_claim_room(&sha256_hex(claim.token.as_bytes()), &r)
                .await?;
        }
        Ok(claim)
    }

    /// The provisioning file around a claim token that is still unused for `site`:
    /// `fleet_url` is `[devices] public_url`, else `base_url` (where the console was reached).
    pub async fn provisioning(
        &self,
        actor: &Actor,
        site: &str,
        token: &str,
        base_url: &str,
    ) -> Result<Provisioning, OpError> {
        actor.check_site(site)?;
        let Some((device, expires_ms)) = self
            .store
            .open_claim(&sha256_hex(token.trim().as_bytes()), site, now_db())
            .await?
        else {
            return Err(OpError::Forbidden(
                "this claim token is unknown, used or expired: issue a new one".into(),
            ));
        };
        let url = self
            .config
            .devices
            .public_url
            .clone()
            .unwrap_or_else(|| base_url.to_owned());
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let text = format!(
            "# Medgate appliance provisioning: enrolls device {device} at site {site}.\n\
             # On the appliance: medgate-appliance enroll --provisioning THIS_FILE --identity-dir /var/lib/medgate/identity\n\
             # (the appliance image does it at first boot from medgate/provisioning.toml on its ESP).\n\
             # The claim token works once, until {} — keep this file like a password.\n\
             fleet_url = {}\n\
             claim_token = {}\n\
             # fleet_ca = \"/path/ca.pem\"   # if the fleet's HTTPS certificate is not from a CA the appliance trusts\n",
            crate::console::view::utc(expires_ms),
            q(&url),
            q(token.trim()),
        );
        self.audit(
            actor,
            "claim.provisioning",
            &format!("device:{device}"),
            Outcome::Ok,
            None,
            Some(json!({"site": site, "device": device}).to_string()),
        )
        .await;
        Ok(Provisioning {
            file_name: format!("provisioning-{device}.toml"),
            text,
        })
    }

    // ---- site-scoped views ----

    /// Events of the devices in `scope`, newest first (at most 10,000).
    pub async fn events_in_scope(
        &self,
        scope: &SiteScope,
        since_ms: i64,
        limit: Option<i64>,
    ) -> Result<Vec<EventRecord>, OpError> {
        if scope.is_all() {
            return self.events(None, since_ms, limit).await;
        }
        let limit = limit.unwrap_or(100).clamp(1, 10_000);
        Ok(self.store.events_of_sites(scope, since_ms, limit).await?)
    }

    /// The live feed's first snapshot, of the devices and sites in `scope`.
    pub async fn snapshot_in_scope(&self, scope: &SiteScope) -> Result<Value, OpError> {
        let devices = self.devices(scope, None).await?;
        let sites = self.sites(scope).await?;
        Ok(
            json!({"type": "snapshot", "at_ms": medgate_contract::now_ms(), "devices": devices, "sites": sites}),
        )
    }

    /// Whether a live-feed message may go to a reader limited to `scope`.
    pub async fn live_visible(&self, scope: &SiteScope, msg: &str) -> bool {
        if scope.is_all() {
            return true;
        }
        let site = match live_target(msg) {
            Some(LiveTarget::Site(s)) => Some(s),
            Some(LiveTarget::Device(d)) => self
                .store
                .registration(&d)
                .await
                .ok()
                .flatten()
                .map(|r| r.site),
            None => None,
        };
        site.is_some_and(|s| scope.allows(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zones_and_rooms_are_checked_by_their_form() {
        for ok in [
            "Europe/Oslo",
            "America/Argentina/Buenos_Aires",
            "UTC",
            "Etc/GMT+1",
        ] {
            assert_eq!(TimeZone::parse(ok).map(|t| t.0).ok().as_deref(), Some(ok));
        }
        for bad in [
            "",
            "Oslo",
            "Mars/Olympus",
            "Europe/",
            "Europe/Os lo",
            "Europe/a/b/c",
        ] {
            assert!(TimeZone::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(check_room("  CT 1 ").ok().as_deref(), Some("CT 1"));
        assert!(check_room("a\nb").is_err() && check_room(" ").is_err());
    }

    #[test]
    fn a_bulk_report_sums_up_in_words() {
        let r = BulkReport {
            action: BulkAction::Restart,
            results: vec![
                ("a".into(), BulkOutcome::Done("restart sent".into())),
                ("b".into(), BulkOutcome::Skipped("not connected".into())),
                ("c".into(), BulkOutcome::Done("restart sent".into())),
                ("d".into(), BulkOutcome::Refused(NOT_YOURS.into())),
                ("e".into(), BulkOutcome::Skipped("not connected".into())),
            ],
        };
        assert_eq!(
            r.words(),
            "2 restarted, 2 skipped: not connected, 1 refused: not at one of your sites"
        );
        let empty = BulkReport {
            action: BulkAction::Approve,
            results: vec![],
        };
        assert_eq!(empty.words(), "no device selected: nothing done");
    }

    #[test]
    fn live_messages_name_their_site_or_device() {
        assert_eq!(
            live_target(r#"{"type":"device","device":{"id":"d1","site":"a"}}"#),
            Some(LiveTarget::Site("a".into()))
        );
        assert_eq!(
            live_target(r#"{"type":"event","device":"d1","site":"b"}"#),
            Some(LiveTarget::Site("b".into()))
        );
        assert_eq!(
            live_target(r#"{"type":"command","device":"d1","id":"c"}"#),
            Some(LiveTarget::Device("d1".into()))
        );
        assert_eq!(live_target("not json"), None);
    }
}
