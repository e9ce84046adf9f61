//! What the pages show, computed from the domain without IO: the overview's counts and the
//! devices that need attention (each with its reason in words), the devices list's filters
//! (read from and written back to the URL) and its pages, and times in words.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::Deserialize;

use crate::model::{Connection, Device, DeviceStatus, Drift, Site};

/// Counts of one group of devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Devices.
    pub total: usize,
    /// Connected now.
    pub online: usize,
    /// Not connected.
    pub offline: usize,
    /// Never heard from.
    pub unknown: usize,
    /// Waiting for approval.
    pub pending: usize,
    /// Whose configuration failed to apply.
    pub config_failed: usize,
    /// That need attention (see [`attention`]).
    pub attention: usize,
}

impl Counts {
    fn add(&mut self, d: &Device) {
        self.total += 1;
        match d.connection {
            Connection::Online => self.online += 1,
            Connection::Offline => self.offline += 1,
            Connection::Unknown => self.unknown += 1,
        }
        if d.status == DeviceStatus::Pending {
            self.pending += 1;
        }
        if d.config_drift == Drift::Failed {
            self.config_failed += 1;
        }
        if attention(d).is_some() {
            self.attention += 1;
        }
    }
}

/// Why a device needs attention, most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// Its configuration did not apply (the device rolled back).
    ConfigFailed,
    /// Enrolled, but gone.
    Offline,
    /// Enrolled, never connected.
    NeverConnected,
    /// Reported without enrollment; waits for approval.
    Pending,
}

impl Reason {
    /// The reason in words.
    pub fn words(self, d: &Device, now_ms: i64) -> String {
        match self {
            Reason::ConfigFailed => format!(
                "configuration version {} did not apply; the device runs its previous one",
                d.desired_config_version.unwrap_or_default()
            ),
            Reason::Offline => match d.last_seen_ms {
                Some(t) => format!("offline, last heard {}", ago(now_ms, t)),
                None => "offline".into(),
            },
            Reason::NeverConnected => "enrolled but never connected".into(),
            Reason::Pending => "reported without enrollment: approve it or revoke it".into(),
        }
    }
}

/// Whether a device needs attention, and why (revoked and decommissioned devices do not).
pub fn attention(d: &Device) -> Option<Reason> {
    match d.status {
        DeviceStatus::Revoked | DeviceStatus::Decommissioned => None,
        DeviceStatus::Pending => Some(Reason::Pending),
        DeviceStatus::Approved => {
            if d.config_drift == Drift::Failed {
                Some(Reason::ConfigFailed)
            } else if d.connection == Connection::Offline {
                Some(Reason::Offline)
            } else if d.connection == Connection::Unknown {
                Some(Reason::NeverConnected)
            } else {
                None
            }
        }
    }
}

/// The fleet overview.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overview {
    /// Every device in scope.
    pub all: Counts,
    /// By site id: (site name, counts); sites without devices included.
    pub by_site: BTreeMap<String, (String, Counts)>,
    /// Devices needing attention, most urgent first: (device id, site, reason).
    pub attention: Vec<(String, String, Reason)>,
}

impl Overview {
    /// Counts over the devices and sites in scope.
    pub fn of(devices: &[Device], sites: &[Site]) -> Overview {
        let mut o = Overview::default();
        for s in sites {
            o.by_site
                .insert(s.id.clone(), (s.name.clone(), Counts::default()));
        }
        for d in devices {
            o.all.add(d);
            o.by_site
                .entry(d.site.clone())
                .or_insert_with(|| (d.site.clone(), Counts::default()))
                .1
                .add(d);
            if let Some(r) = attention(d) {
                o.attention.push((d.id.clone(), d.site.clone(), r));
            }
        }
        o.attention
            .sort_by(|a, b| (a.2, &a.1, &a.0).cmp(&(b.2, &b.1, &b.0)));
        o
    }
}

/// Devices per page.
pub const PAGE_SIZE: usize = 100;

/// The devices list's query, as in the URL (`/devices?site=…&status=…`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct DeviceQuery {
    /// Site id.
    pub site: String,
    /// Registry status word.
    pub status: String,
    /// Connection word.
    pub connection: String,
    /// Part of the device id, room or a tag (case-insensitive).
    pub q: String,
    /// `1`: only devices needing attention.
    pub attention: String,
    /// Page, from 1.
    pub page: Option<usize>,
}

/// The filters, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    /// Site id.
    pub site: Option<String>,
    /// Status.
    pub status: Option<DeviceStatus>,
    /// Connection.
    pub connection: Option<Connection>,
    /// Search text, lower case.
    pub q: Option<String>,
    /// Only devices needing attention.
    pub attention: bool,
    /// Page, from 1.
    pub page: usize,
}

fn word<T: FromStr>(key: &str, v: &str, all: &[&str]) -> Result<Option<T>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| format!("{key} {v:?}: use one of {}", all.join(", ")))
}

impl DeviceQuery {
    /// Checks the query; the error names the parameter and its values.
    pub fn filter(&self) -> Result<DeviceFilter, String> {
        let statuses: Vec<&str> = DeviceStatus::ALL.iter().map(|s| s.as_str()).collect();
        let connections: Vec<&str> = Connection::ALL.iter().map(|s| s.as_str()).collect();
        let q = self.q.trim().to_lowercase();
        Ok(DeviceFilter {
            site: (!self.site.is_empty()).then(|| self.site.clone()),
            status: word("status", &self.status, &statuses)?,
            connection: word("connection", &self.connection, &connections)?,
            q: (!q.is_empty()).then_some(q),
            attention: match self.attention.as_str() {
                "" | "0" => false,
                "1" => true,
                other => return Err(format!("attention {other:?}: use 1 or leave it out")),
            },
            page: self.page.unwrap_or(1).max(1),
        })
    }
}

impl DeviceFilter {
    /// Whether a device passes the filters.
    pub fn matches(&self, d: &Device) -> bool {
        self.site.as_ref().is_none_or(|s| &d.site == s)
            && self.status.is_none_or(|s| d.status == s)
            && self.connection.is_none_or(|c| d.connection == c)
            && (!self.attention || attention(d).is_some())
            && self.q.as_ref().is_none_or(|q| {
                d.id.to_lowercase().contains(q)
                    || d.room
                        .as_deref()
                        .is_some_and(|r| r.to_lowercase().contains(q))
                    || d.tags.iter().any(|t| t.to_lowercase().contains(q))
            })
    }

    /// The filters as a URL query (for links), with another page.
    pub fn query(&self, page: usize) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut push = |k: &str, v: &str| parts.push(format!("{k}={}", encode(v)));
        if let Some(s) = &self.site {
            push("site", s);
        }
        if let Some(s) = self.status {
            push("status", s.as_str());
        }
        if let Some(c) = self.connection {
            push("connection", c.as_str());
        }
        if let Some(q) = &self.q {
            push("q", q);
        }
        if self.attention {
            push("attention", "1");
        }
        if page > 1 {
            push("page", &page.to_string());
        }
        parts.join("&")
    }
}

/// One page of the filtered devices: (the page's devices, how many matched, pages).
pub fn page<'a>(devices: &'a [Device], f: &DeviceFilter) -> (Vec<&'a Device>, usize, usize) {
    let matched: Vec<&Device> = devices.iter().filter(|d| f.matches(d)).collect();
    let n = matched.len();
    let pages = n.div_ceil(PAGE_SIZE).max(1);
    let start = (f.page.min(pages) - 1) * PAGE_SIZE;
    (
        matched.into_iter().skip(start).take(PAGE_SIZE).collect(),
        n,
        pages,
    )
}

/// Percent-encoding of a query value (everything but unreserved characters).
pub fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A past time in words: `just now`, `12 min ago`, `3 h ago`, `5 days ago`.
pub fn ago(now_ms: i64, then_ms: i64) -> String {
    let s = (now_ms - then_ms).max(0) / 1000;
    match s {
        0..60 => "just now".into(),
        60..3600 => format!("{} min ago", s / 60),
        3600..172_800 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// A time as `YYYY-MM-DD HH:MM UTC`.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str, site: &str, status: DeviceStatus, connection: Connection) -> Device {
        Device {
            id: id.into(),
            site: site.into(),
            room: None,
            status,
            connection,
            last_seen_ms: Some(0),
            inventory: None,
            running_config_version: None,
            events_received: 0,
            desired_config_version: None,
            config_drift: Drift::None,
            tags: vec![],
        }
    }

    fn fleet() -> Vec<Device> {
        use Connection as C;
        use DeviceStatus as S;
        let mut failed = device("ct-2", "a", S::Approved, C::Online);
        failed.config_drift = Drift::Failed;
        failed.desired_config_version = Some(4);
        let mut tagged = device("mr-1", "b", S::Approved, C::Online);
        tagged.tags = vec!["Radiology".into()];
        vec![
            device("ct-1", "a", S::Approved, C::Offline),
            failed,
            device("us-1", "a", S::Pending, C::Online),
            device("dx-1", "b", S::Approved, C::Unknown),
            device("old", "b", S::Decommissioned, C::Offline),
            tagged,
        ]
    }

    #[test]
    fn the_overview_counts_by_site_and_orders_attention_by_urgency() {
        let sites = [Site {
            id: "c".into(),
            name: "Empty".into(),
            created_ms: 0,
            devices: 0,
            online: 0,
        }];
        let o = Overview::of(&fleet(), &sites);
        assert_eq!(
            o.all,
            Counts {
                total: 6,
                online: 3,
                offline: 2,
                unknown: 1,
                pending: 1,
                config_failed: 1,
                attention: 4
            }
        );
        assert_eq!(o.by_site["a"].1.attention, 3);
        assert_eq!(o.by_site["c"], ("Empty".into(), Counts::default()));
        let order: Vec<_> = o
            .attention
            .iter()
            .map(|(id, _, r)| (id.as_str(), *r))
            .collect();
        assert_eq!(
            order,
            [
                ("ct-2", Reason::ConfigFailed),
                ("ct-1", Reason::Offline),
                ("dx-1", Reason::NeverConnected),
                ("us-1", Reason::Pending)
            ]
        );
        let d = &fleet()[1];
        assert_eq!(
            Reason::ConfigFailed.words(d, 0),
            "configuration version 4 did not apply; the device runs its previous one"
        );
        assert_eq!(
            Reason::Offline.words(&fleet()[0], 3 * 3_600_000),
            "offline, last heard 3 h ago"
        );
    }

    #[test]
    fn filters_come_from_the_url_go_back_to_it_and_page() {
        let q = DeviceQuery {
            site: "a".into(),
            status: "approved".into(),
            q: " CT ".into(),
            ..DeviceQuery::default()
        };
        let f = q.filter().expect("valid");
        let all = fleet();
        let (shown, n, pages) = page(&all, &f);
        assert_eq!(
            (
                shown.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
                n,
                pages
            ),
            (vec!["ct-1", "ct-2"], 2, 1)
        );
        assert_eq!(f.query(2), "site=a&status=approved&q=ct&page=2");
        let tag = DeviceQuery {
            q: "radio".into(),
            ..DeviceQuery::default()
        };
        assert_eq!(page(&fleet(), &tag.filter().expect("valid")).1, 1);
        let att = DeviceQuery {
            attention: "1".into(),
            ..DeviceQuery::default()
        };
        assert_eq!(page(&fleet(), &att.filter().expect("valid")).1, 4);
        let bad = DeviceQuery {
            status: "gone".into(),
            ..DeviceQuery::default()
        };
        assert_eq!(
            bad.filter(),
            Err("status \"gone\": use one of pending, approved, revoked, decommissioned".into())
        );
        // 250 devices: three pages, the last one partial; a page beyond is the last.
        let many: Vec<Device> = (0..250)
            .map(|i| {
                device(
                    &format!("d{i:03}"),
                    "a",
                    DeviceStatus::Approved,
                    Connection::Online,
                )
            })
            .collect();
        let f = DeviceFilter {
            page: 9,
            ..DeviceFilter::default()
        };
        let (shown, n, pages) = page(&many, &f);
        assert_eq!(
            (shown.len(), n, pages, shown[0].id.as_str()),
            (50, 250, 3, "d200")
        );
        assert_eq!(encode("a b&c/é"), "a%20b%26c%2F%C3%A9");
    }

    #[test]
    fn times_read_in_words_and_in_utc() {
        assert_eq!(ago(10_000, 5_000), "just now");
        assert_eq!(ago(25 * 60_000, 0), "25 min ago");
        assert_eq!(ago(5 * 86_400_000, 0), "5 days ago");
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(1_764_633_600_000 + 3_723_000), "2025-12-02 01:02 UTC");
    }
}
