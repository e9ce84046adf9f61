//! What the devices list, its bulk actions and the sites pages read from a request, checked
//! (pure): the list's filters, sort and page from the URL and back into links, a bulk action
//! from its form, a site's edit form.

use serde::Deserialize;

use crate::model::{Connection, DeviceStatus};
use crate::ops::OpError;
use crate::ops::fleet::{BulkAction, BulkTarget, ConfigSource, SiteEdit, TimeZone};
use crate::store::fleet::{DeviceOrder, DeviceSelection, SortDir, SortKey};

use super::view::encode;

/// The devices list's query, as in the URL (`/devices?site=…&sort=last_seen&dir=desc&page=3`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ListQuery {
    /// Site id.
    pub site: String,
    /// Registry status word.
    pub status: String,
    /// Connection word.
    pub connection: String,
    /// Appliance version.
    pub version: String,
    /// Hardware profile.
    pub profile: String,
    /// Tag.
    pub tag: String,
    /// Part of the device id, room or a tag (case-insensitive).
    pub q: String,
    /// `1`: only devices needing attention.
    pub attention: String,
    /// Column to sort by.
    pub sort: String,
    /// `asc` or `desc`.
    pub dir: String,
    /// Page, from 1.
    pub page: String,
}

/// The list's filters, order and page, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListView {
    /// Which devices.
    pub sel: DeviceSelection,
    /// In which order.
    pub order: DeviceOrder,
    /// Page, from 1.
    pub page: i64,
}

fn word<T: std::str::FromStr>(key: &str, v: &str, all: &[&str]) -> Result<Option<T>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| format!("{key} {v:?}: use one of {}", all.join(", ")))
}

fn text(v: &str) -> Option<String> {
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_owned())
}

impl ListQuery {
    /// From form or query pairs (the last value of a key wins; unknown keys are ignored).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> ListQuery {
        let mut q = ListQuery::default();
        for (k, v) in pairs {
            let slot = match k {
                "site" => &mut q.site,
                "status" => &mut q.status,
                "connection" => &mut q.connection,
                "version" => &mut q.version,
                "profile" => &mut q.profile,
                "tag" => &mut q.tag,
                "q" => &mut q.q,
                "attention" => &mut q.attention,
                "sort" => &mut q.sort,
                "dir" => &mut q.dir,
                "page" => &mut q.page,
                _ => continue,
            };
            v.clone_into(slot);
        }
        q
    }

    /// Checks the query; the error names the parameter and its values.
    pub fn view(&self) -> Result<ListView, String> {
        let statuses: Vec<&str> = DeviceStatus::ALL.iter().map(|s| s.as_str()).collect();
        let connections: Vec<&str> = Connection::ALL.iter().map(|s| s.as_str()).collect();
        let sorts: Vec<&str> = SortKey::ALL.iter().map(|(_, w)| *w).collect();
        let q = self.q.trim().to_lowercase();
        let key = match self.sort.as_str() {
            "" => SortKey::Device,
            w => SortKey::parse(w)
                .ok_or_else(|| format!("sort {w:?}: use one of {}", sorts.join(", ")))?,
        };
        let dir = match self.dir.as_str() {
            "" | "asc" => SortDir::Asc,
            "desc" => SortDir::Desc,
            other => return Err(format!("dir {other:?}: use asc or desc")),
        };
        let page = match self.page.trim() {
            "" => 1,
            p => p
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("page {p:?}: a number from 1"))?,
        };
        Ok(ListView {
            sel: DeviceSelection {
                site: text(&self.site),
                status: word("status", &self.status, &statuses)?,
                connection: word("connection", &self.connection, &connections)?,
                version: text(&self.version),
                profile: text(&self.profile),
                tag: text(&self.tag),
                attention: match self.attention.as_str() {
                    "" | "0" => false,
                    "1" => true,
                    other => return Err(format!("attention {other:?}: use 1 or leave it out")),
                },
                q: (!q.is_empty()).then_some(q),
            },
            order: DeviceOrder { key, dir },
            page,
        })
    }
}

impl ListView {
    /// The filters as (key, value) pairs, as the URL and the bulk form carry them.
    pub fn filter_pairs(&self) -> Vec<(&'static str, String)> {
        let s = &self.sel;
        let mut v = Vec::new();
        if let Some(x) = &s.site {
            v.push(("site", x.clone()));
        }
        if let Some(x) = s.status {
            v.push(("status", x.as_str().to_owned()));
        }
        if let Some(x) = s.connection {
            v.push(("connection", x.as_str().to_owned()));
        }
        if let Some(x) = &s.version {
            v.push(("version", x.clone()));
        }
        if let Some(x) = &s.profile {
            v.push(("profile", x.clone()));
        }
        if let Some(x) = &s.tag {
            v.push(("tag", x.clone()));
        }
        if let Some(x) = &s.q {
            v.push(("q", x.clone()));
        }
        if s.attention {
            v.push(("attention", "1".to_owned()));
        }
        v
    }

    /// The list's URL with these filters, an order and a page.
    pub fn url(&self, order: DeviceOrder, page: i64) -> String {
        let mut parts: Vec<String> = self
            .filter_pairs()
            .into_iter()
            .map(|(k, v)| format!("{k}={}", encode(&v)))
            .collect();
        if order != DeviceOrder::default() {
            parts.push(format!("sort={}", order.key.as_str()));
            if order.dir == SortDir::Desc {
                parts.push("dir=desc".into());
            }
        }
        if page > 1 {
            parts.push(format!("page={page}"));
        }
        if parts.is_empty() {
            "/devices".into()
        } else {
            format!("/devices?{}", parts.join("&"))
        }
    }

    /// The link of a column header: by that column, ascending, or the other way if it is the
    /// current order (back to page 1).
    pub fn sort_url(&self, key: SortKey) -> String {
        let dir = if self.order.key == key && self.order.dir == SortDir::Asc {
            SortDir::Desc
        } else {
            SortDir::Asc
        };
        self.url(DeviceOrder { key, dir }, 1)
    }

    /// `aria-sort` of a column header.
    pub fn aria_sort(&self, key: SortKey) -> Option<&'static str> {
        (self.order.key == key).then_some(match self.order.dir {
            SortDir::Asc => "ascending",
            SortDir::Desc => "descending",
        })
    }
}

/// A bulk action's form, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkForm {
    /// The list it came from (its filters are the selection for "all").
    pub list: ListView,
    /// For which devices.
    pub target: BulkTarget,
    /// What to do.
    pub action: BulkAction,
    /// Whether the confirmation was given (an action over every matching device asks first).
    pub confirmed: bool,
    /// Every field as sent but the CSRF token (to carry into the confirmation form).
    pub fields: Vec<(String, String)>,
}

/// Reads a bulk form (`application/x-www-form-urlencoded`, `id` repeated per checked row).
pub fn bulk_form(body: &[u8]) -> Result<BulkForm, OpError> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    let get = |k: &str| {
        pairs
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let list = ListQuery::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .view()
        .map_err(OpError::Invalid)?;
    let token = |k: &str| {
        let v = get(k).trim();
        medgate_contract::Token::new(v)
            .map_err(|_| OpError::Invalid(format!("tag {v:?}: 1-64 characters A-Za-z0-9._:+~-")))
    };
    let action = match get("action") {
        "approve" => BulkAction::Approve,
        "tag" => BulkAction::Tag(token("bulk_tag")?),
        "untag" => BulkAction::Untag(token("bulk_tag")?),
        "restart" => BulkAction::Restart,
        "config" => BulkAction::Config(match get("config_source") {
            "site" => ConfigSource::Site,
            "tag" => ConfigSource::Tag(token("config_tag")?),
            "document" => ConfigSource::Document(parse_document(get("config_document"))?),
            other => {
                return Err(OpError::Invalid(format!(
                    "configuration source {other:?}: choose the site's, a tag's or a document"
                )));
            }
        }),
        "" => return Err(OpError::Invalid("choose an action".into())),
        other => {
            return Err(OpError::Invalid(format!(
                "action {other:?}: use approve, tag, untag, restart or config"
            )));
        }
    };
    let target = match get("apply_to") {
        "all" => BulkTarget::Selection(list.sel.clone()),
        "checked" | "" => {
            let ids: Vec<String> = pairs
                .iter()
                .filter(|(k, _)| k == "id")
                .map(|(_, v)| v.clone())
                .collect();
            if ids.is_empty() {
                return Err(OpError::Invalid(
                    "no device checked: check rows, or choose \"every device matching the filters\""
                        .into(),
                ));
            }
            BulkTarget::Devices(ids)
        }
        other => {
            return Err(OpError::Invalid(format!(
                "apply_to {other:?}: use checked or all"
            )));
        }
    };
    Ok(BulkForm {
        list,
        target,
        action,
        confirmed: get("confirm") == "1",
        fields: pairs
            .into_iter()
            .filter(|(k, _)| k != crate::auth::csrf::FORM_FIELD && k != "confirm")
            .collect(),
    })
}

/// A configuration typed into a form: a JSON object, or TOML (the appliance file's form).
pub fn parse_document(text: &str) -> Result<serde_json::Value, OpError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(OpError::Invalid(
            "the configuration document is empty: paste the appliance configuration (TOML or JSON)"
                .into(),
        ));
    }
    if t.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(t)
            .map_err(|e| OpError::Invalid(format!("the configuration is not valid JSON: {e}")))?;
        return Ok(v);
    }
    let v: toml::Table = toml::from_str(t)
        .map_err(|e| OpError::Invalid(format!("the configuration is not valid TOML: {e}")))?;
    serde_json::to_value(v).map_err(|e| OpError::Invalid(format!("the configuration: {e}")))
}

/// A site's create or edit form.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SiteForm {
    /// Id (create only).
    pub id: String,
    /// Name.
    pub name: String,
    /// IANA time zone, or empty.
    pub time_zone: String,
    /// Rooms, one per line.
    pub rooms: String,
}

impl SiteForm {
    /// Checks the form.
    pub fn edit(&self) -> Result<SiteEdit, OpError> {
        let time_zone = match self.time_zone.trim() {
            "" => None,
            tz => Some(TimeZone::parse(tz)?),
        };
        Ok(SiteEdit {
            name: self.name.trim().to_owned(),
            time_zone,
            rooms: self
                .rooms
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_query_comes_from_the_url_and_goes_back_into_links() {
        let q = ListQuery {
            site: "a".into(),
            status: "approved".into(),
            q: " CT ".into(),
            tag: "ct".into(),
            sort: "last_seen".into(),
            dir: "desc".into(),
            page: "2".into(),
            ..ListQuery::default()
        };
        let v = q.view().expect("valid");
        assert_eq!(v.sel.q.as_deref(), Some("ct"));
        assert_eq!(v.page, 2);
        assert_eq!(
            v.url(v.order, v.page),
            "/devices?site=a&status=approved&tag=ct&q=ct&sort=last_seen&dir=desc&page=2"
        );
        // The current column's header turns the order round; another starts ascending.
        assert_eq!(
            v.sort_url(SortKey::LastSeen),
            "/devices?site=a&status=approved&tag=ct&q=ct&sort=last_seen"
        );
        assert_eq!(v.aria_sort(SortKey::LastSeen), Some("descending"));
        assert_eq!(v.aria_sort(SortKey::Device), None);
        assert_eq!(
            ListQuery::default()
                .view()
                .map(|v| v.url(v.order, 1))
                .ok()
                .as_deref(),
            Some("/devices")
        );
        for (bad, msg) in [
            (
                ListQuery {
                    status: "gone".into(),
                    ..ListQuery::default()
                },
                "status \"gone\": use one of pending, approved, revoked, decommissioned",
            ),
            (
                ListQuery {
                    sort: "x".into(),
                    ..ListQuery::default()
                },
                "sort \"x\": use one of device, site, room, status, connection, last_seen, version, profile, config",
            ),
            (
                ListQuery {
                    page: "0".into(),
                    ..ListQuery::default()
                },
                "page \"0\": a number from 1",
            ),
            (
                ListQuery {
                    dir: "up".into(),
                    ..ListQuery::default()
                },
                "dir \"up\": use asc or desc",
            ),
        ] {
            assert_eq!(bad.view(), Err(msg.to_owned()));
        }
    }

    #[test]
    fn a_bulk_form_names_its_devices_or_its_filters() {
        let f =
            bulk_form(b"csrf_token=c0&site=a&apply_to=checked&id=d1&id=d2&action=tag&bulk_tag=ct")
                .expect("valid");
        assert_eq!(
            f.target,
            BulkTarget::Devices(vec!["d1".into(), "d2".into()])
        );
        assert!(matches!(f.action, BulkAction::Tag(ref t) if t.as_str() == "ct"));
        assert!(!f.fields.iter().any(|(k, _)| k == "csrf_token"));
        let all =
            bulk_form(b"site=a&attention=1&apply_to=all&action=restart&confirm=1").expect("valid");
        assert!(all.confirmed);
        assert!(
            matches!(all.target, BulkTarget::Selection(ref s) if s.site.as_deref() == Some("a") && s.attention)
        );
        let doc = bulk_form(b"apply_to=all&action=config&config_source=document&config_document=%5Blistener%5D%0Aae_title+%3D+%22X%22")
            .expect("valid");
        assert!(
            matches!(doc.action, BulkAction::Config(ConfigSource::Document(ref v)) if v["listener"]["ae_title"] == "X")
        );
        for bad in [
            &b"apply_to=checked&action=restart"[..],
            b"apply_to=all&action=reboot",
            b"apply_to=all&action=tag&bulk_tag=no+spaces",
            b"apply_to=all&action=config&config_source=document&config_document=%7Bnot",
        ] {
            assert!(
                matches!(bulk_form(bad), Err(OpError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_site_form_gives_rooms_one_per_line() {
        let f = SiteForm {
            name: " St. Olav ".into(),
            time_zone: "Europe/Oslo".into(),
            rooms: "CT 1\n\n  MR 2 \r\n".into(),
            ..SiteForm::default()
        };
        let e = f.edit().expect("valid");
        assert_eq!(
            (e.name.as_str(), e.rooms),
            ("St. Olav", vec!["CT 1".to_owned(), "MR 2".to_owned()])
        );
        let bad = SiteForm {
            time_zone: "Oslo".into(),
            ..SiteForm::default()
        };
        assert!(bad.edit().is_err());
    }
}
