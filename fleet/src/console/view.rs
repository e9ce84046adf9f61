//! What the pages show, computed from the domain without IO: the overview's counts and the
//! devices that need attention (each with its reason in words), and times in words. (The
//! devices list's filters are `fleet_view`'s: the database filters and pages it.)

use std::collections::BTreeMap;

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
    let t = crate::civil::Utc::of_ms(ms);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year, t.month, t.day, t.hour, t.minute
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
    fn query_values_are_percent_encoded() {
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
