//! What the wall shows, computed without IO: a device, its latest telemetry and the time in, a
//! [`Tile`] out (a level, the reasons in words, how old its data is); the tiles of a site folded
//! into a [`SiteSummary`]. Counts, states, sizes, timings and names only — there is nothing
//! else in the fleet.

use std::collections::BTreeMap;

use medgate_contract::{DestinationState, UpdatePhase};

use super::alarms::{Alarm, alarms};
use crate::model::{Alert, Connection, Device, DeviceStatus, Drift, TelemetrySample};
use crate::store::displays::Today;

/// Disk use from which a tile turns amber (percent).
pub const DISK_WARN_PERCENT: u64 = 85;
/// Disk use from which a tile turns red (percent).
pub const DISK_BAD_PERCENT: u64 = 95;
/// Age of the oldest queued object from which a tile turns amber (seconds).
pub const QUEUE_WARN_SECS: u64 = 10 * 60;
/// Age of the latest telemetry of an online device from which a tile turns amber (seconds).
pub const TELEMETRY_STALE_SECS: u64 = 2 * 60;

/// A tile's colour, worst first. Never shown by colour alone: each has an icon and a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Something is wrong now: images may not reach the archive.
    Red,
    /// Worth a look soon.
    Amber,
    /// Not in service yet, or nothing known.
    Grey,
    /// Receiving and forwarding.
    Green,
}

impl Level {
    /// Every level, worst first.
    pub const ALL: [Level; 4] = [Level::Red, Level::Amber, Level::Grey, Level::Green];

    /// The CSS class.
    pub fn class(self) -> &'static str {
        match self {
            Level::Red => "red",
            Level::Amber => "amber",
            Level::Grey => "grey",
            Level::Green => "green",
        }
    }

    /// The icon (a shape of its own for each level, for colour-blind viewers too).
    pub fn icon(self) -> &'static str {
        match self {
            Level::Red => "✖",
            Level::Amber => "▲",
            Level::Grey => "●",
            Level::Green => "✔",
        }
    }

    /// The word.
    pub fn word(self) -> &'static str {
        match self {
            Level::Red => "fault",
            Level::Amber => "warning",
            Level::Grey => "unknown",
            Level::Green => "ok",
        }
    }
}

/// One appliance on the wall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tile {
    /// The device id.
    pub device: String,
    /// Its room, if set.
    pub room: Option<String>,
    /// The appliance version it runs.
    pub version: Option<String>,
    /// Its level (the worst of its reasons).
    pub level: Level,
    /// Why, worst first (at least one).
    pub reasons: Vec<String>,
    /// When its data was last heard (Unix ms), if ever.
    pub data_ms: Option<i64>,
    /// Objects waiting to be forwarded.
    pub queued: u64,
    /// Age of the oldest of them (seconds).
    pub oldest_secs: u64,
}

/// A span of time in words: `45 s`, `12 min`, `3 h`, `2 days`.
pub fn span(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..7200 => format!("{} min", secs / 60),
        7200..172_800 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}

/// How old data of `then_ms` is at `now_ms`, in words: `data 4 s old`.
pub fn age_words(now_ms: i64, then_ms: Option<i64>) -> String {
    match then_ms {
        Some(t) => format!("data {} old", span(secs_between(t, now_ms))),
        None => "no data yet".into(),
    }
}

fn secs_between(from_ms: i64, to_ms: i64) -> u64 {
    u64::try_from(to_ms.saturating_sub(from_ms).max(0) / 1000).unwrap_or(0)
}

/// The tile of a device from its registry record and latest telemetry, at `now_ms`.
pub fn tile(d: &Device, latest: Option<&TelemetrySample>, now_ms: i64) -> Tile {
    let mut found: Vec<(Level, String)> = Vec::new();
    let seen = d.last_seen_ms;
    match d.status {
        DeviceStatus::Pending => found.push((Level::Grey, "waiting for approval".into())),
        DeviceStatus::Revoked => found.push((Level::Grey, "revoked".into())),
        DeviceStatus::Decommissioned => found.push((Level::Grey, "decommissioned".into())),
        DeviceStatus::Approved => {}
    }
    match d.connection {
        Connection::Online => {}
        Connection::Offline => found.push((
            Level::Red,
            match seen {
                Some(t) => format!("no heartbeat {}", span(secs_between(t, now_ms))),
                None => "no heartbeat".into(),
            },
        )),
        Connection::Unknown => found.push((Level::Grey, "never connected".into())),
    }
    if d.config_drift == Drift::Failed {
        found.push((Level::Red, "configuration failed".into()));
    }
    let online = d.connection == Connection::Online;
    if let Some(s) = latest {
        let t = &s.data;
        for q in &t.destinations {
            match q.state {
                DestinationState::BackingOff => found.push((
                    Level::Red,
                    format!(
                        "{} unreachable {}",
                        q.name.as_str(),
                        span(q.oldest_age_secs)
                    ),
                )),
                DestinationState::Quarantining => {
                    found.push((Level::Red, format!("{} refuses images", q.name.as_str())))
                }
                DestinationState::Ok | DestinationState::Other => {}
            }
        }
        if let Some(p) = used_percent(t.disk.total_bytes, t.disk.free_bytes) {
            if p >= DISK_BAD_PERCENT {
                found.push((Level::Red, format!("disk {p} %")));
            } else if p >= DISK_WARN_PERCENT {
                found.push((Level::Amber, format!("disk {p} %")));
            }
        }
        let unreachable = found.iter().any(|(_, w)| w.contains("unreachable"));
        if t.queue.oldest_age_secs >= QUEUE_WARN_SECS && !unreachable {
            found.push((
                Level::Amber,
                format!("queue oldest {}", span(t.queue.oldest_age_secs)),
            ));
        }
        if t.quarantine_objects > 0 && !found.iter().any(|(_, w)| w.contains("refuses")) {
            found.push((
                Level::Amber,
                format!("{} in quarantine", t.quarantine_objects),
            ));
        }
        if let Some(u) = &t.update {
            match u.state {
                UpdatePhase::WaitingIdle => {
                    found.push((Level::Amber, "update waiting for idle DICOM".into()))
                }
                UpdatePhase::RolledBack => found.push((Level::Red, "update rolled back".into())),
                UpdatePhase::Failed | UpdatePhase::Refused => {
                    found.push((Level::Red, "update failed".into()))
                }
                UpdatePhase::Probing => found.push((Level::Amber, "update on probation".into())),
                _ => {}
            }
        }
        let telemetry_age = secs_between(s.ts_ms, now_ms);
        if online && telemetry_age >= TELEMETRY_STALE_SECS {
            found.push((
                Level::Amber,
                format!("no telemetry {}", span(telemetry_age)),
            ));
        }
    } else if online && d.status == DeviceStatus::Approved {
        found.push((Level::Grey, "no telemetry yet".into()));
    }
    found.sort_by_key(|(l, _)| *l);
    let level = found.first().map_or(Level::Green, |(l, _)| *l);
    let mut reasons: Vec<String> = found.into_iter().map(|(_, w)| w).collect();
    if reasons.is_empty() {
        reasons.push(match latest {
            Some(s) if s.data.queue.depth > 0 => "forwarding".into(),
            _ => "all forwarded".into(),
        });
    }
    let data_ms = match (seen, latest.map(|s| s.ts_ms)) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    Tile {
        device: d.id.clone(),
        room: d.room.clone(),
        version: d
            .inventory
            .as_ref()
            .map(|i| i.appliance_version.as_str().to_owned()),
        level,
        reasons,
        data_ms,
        queued: latest.map_or(0, |s| s.data.queue.depth),
        oldest_secs: latest.map_or(0, |s| s.data.queue.oldest_age_secs),
    }
}

/// Used space in whole percent (rounded up: 90.2 % reads 91 %), if the size is known.
pub fn used_percent(total: u64, free: u64) -> Option<u64> {
    if total == 0 {
        return None;
    }
    let used = u128::from(total.saturating_sub(free));
    let p = (used * 100).div_ceil(u128::from(total));
    u64::try_from(p).ok()
}

/// One hospital on the wall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteSummary {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its appliances, by device id.
    pub tiles: Vec<Tile>,
    /// Tiles per level.
    pub levels: BTreeMap<Level, usize>,
    /// Objects waiting to be forwarded, all appliances.
    pub backlog: u64,
    /// Age of the oldest unforwarded object (seconds).
    pub oldest_secs: u64,
    /// Appliances per version (`unknown` when not reported yet).
    pub versions: BTreeMap<String, usize>,
    /// The day's figures.
    pub today: Today,
}

impl SiteSummary {
    /// Folds the tiles of a site.
    pub fn of(id: &str, name: &str, mut tiles: Vec<Tile>, today: Today) -> SiteSummary {
        tiles.sort_by(|a, b| a.device.cmp(&b.device));
        let mut s = SiteSummary {
            id: id.to_owned(),
            name: name.to_owned(),
            tiles: Vec::new(),
            levels: BTreeMap::new(),
            backlog: 0,
            oldest_secs: 0,
            versions: BTreeMap::new(),
            today,
        };
        for t in &tiles {
            *s.levels.entry(t.level).or_default() += 1;
            s.backlog = s.backlog.saturating_add(t.queued);
            s.oldest_secs = s.oldest_secs.max(t.oldest_secs);
            *s.versions
                .entry(t.version.clone().unwrap_or_else(|| "unknown".into()))
                .or_default() += 1;
        }
        s.tiles = tiles;
        s
    }

    /// The worst level of its tiles (green for a site without appliances).
    pub fn worst(&self) -> Level {
        self.levels.keys().next().copied().unwrap_or(Level::Green)
    }
}

/// The whole wall: the hospitals of a display link, their active alarms, the region's day, and
/// the time it was computed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wall {
    /// The hospitals, by name.
    pub sites: Vec<SiteSummary>,
    /// Tiles per level, all hospitals.
    pub levels: BTreeMap<Level, usize>,
    /// The firing alerts of its appliances, critical first, then oldest first.
    pub alarms: Vec<Alarm>,
    /// The day's figures of all its hospitals.
    pub region: Today,
    /// ota (issue 14): update campaigns running or paused on its appliances.
    pub rollouts: Vec<Rollout>,
    /// When (Unix ms, the fleet's clock).
    pub at_ms: i64,
}

/// ota (issue 14): one update campaign as the wall shows it (its devices on the display link's
/// hospitals only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// The campaign's name.
    pub name: String,
    /// The version it installs.
    pub version: String,
    /// Why it is paused, if it is.
    pub paused: Option<String>,
    /// Devices healthy on the new version.
    pub healthy: u64,
    /// Devices that failed (rolled back, refused, …).
    pub failed: u64,
    /// Devices installed and waiting for idle DICOM.
    pub waiting: u64,
    /// Its devices.
    pub total: u64,
}

impl Rollout {
    /// The wall's line for it.
    pub fn words(&self) -> String {
        let mut s = format!(
            "Update {} ({}): {} of {} done",
            self.version, self.name, self.healthy, self.total
        );
        if self.failed > 0 {
            s.push_str(&format!(", {} failed", self.failed));
        }
        if self.waiting > 0 {
            s.push_str(&format!(", {} waiting for idle DICOM", self.waiting));
        }
        if let Some(why) = &self.paused {
            s.push_str(&format!(" — paused: {why}"));
        }
        s
    }
}

impl Wall {
    /// Builds the wall from the sites (id, name) in scope, their devices (revoked and
    /// decommissioned ones are left out: they are not in service), the latest telemetry of each
    /// device, the day's figures and the firing alerts (those of other devices are left out).
    pub fn of(
        sites: &[(String, String)],
        devices: &[Device],
        latest: &BTreeMap<String, TelemetrySample>,
        today: &BTreeMap<String, Today>,
        alerts: &[Alert],
        now_ms: i64,
    ) -> Wall {
        let mut by_site: BTreeMap<&str, Vec<Tile>> = BTreeMap::new();
        for d in devices {
            if d.status.on_revocation_list() {
                continue;
            }
            by_site
                .entry(d.site.as_str())
                .or_default()
                .push(tile(d, latest.get(&d.id), now_ms));
        }
        let mut out: Vec<SiteSummary> = sites
            .iter()
            .map(|(id, name)| {
                SiteSummary::of(
                    id,
                    name,
                    by_site.remove(id.as_str()).unwrap_or_default(),
                    today.get(id).cloned().unwrap_or_default(),
                )
            })
            .collect();
        // Devices of a site the registry has no record of (reported before the site was
        // named): shown under their site id.
        for (id, tiles) in by_site {
            out.push(SiteSummary::of(
                id,
                id,
                tiles,
                today.get(id).cloned().unwrap_or_default(),
            ));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        let mut levels = BTreeMap::new();
        let mut region = Today::default();
        let mut hospital: BTreeMap<&str, &str> = BTreeMap::new();
        for s in &out {
            for (l, n) in &s.levels {
                *levels.entry(*l).or_default() += n;
            }
            region.add(&s.today);
            for t in &s.tiles {
                hospital.insert(t.device.as_str(), s.name.as_str());
            }
        }
        let alarms = alarms(alerts, &hospital, now_ms);
        Wall {
            sites: out,
            levels,
            alarms,
            region,
            rollouts: Vec::new(),
            at_ms: now_ms,
        }
    }

    /// Appliances on the wall.
    pub fn tiles(&self) -> usize {
        self.sites.iter().map(|s| s.tiles.len()).sum()
    }
}

#[cfg(test)]
mod rollout_tests {
    use super::Rollout;

    #[test]
    fn a_rollout_line_says_done_failed_waiting_and_why_paused() {
        let mut r = Rollout {
            name: "1.4.0 north".into(),
            version: "1.4.0".into(),
            paused: None,
            healthy: 3,
            failed: 0,
            waiting: 2,
            total: 12,
        };
        assert_eq!(
            r.words(),
            "Update 1.4.0 (1.4.0 north): 3 of 12 done, 2 waiting for idle DICOM"
        );
        r.failed = 1;
        r.waiting = 0;
        r.paused = Some("failure_threshold: 1 of 1 canary devices failed (rolled_back)".into());
        assert_eq!(
            r.words(),
            "Update 1.4.0 (1.4.0 north): 3 of 12 done, 1 failed — paused: failure_threshold: 1 of 1 canary devices failed (rolled_back)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medgate_contract::{
        DestinationQueue, Disk, QueueStats, TelemetrySnapshot, Token, UpdateReport,
    };

    const MIN: i64 = 60_000;
    const NOW: i64 = 1_000 * MIN;

    fn device(id: &str, connection: Connection) -> Device {
        Device {
            id: id.into(),
            site: "a".into(),
            room: Some("CT 1".into()),
            status: DeviceStatus::Approved,
            connection,
            last_seen_ms: Some(NOW - 5_000),
            inventory: None,
            running_config_version: None,
            events_received: 0,
            desired_config_version: None,
            config_drift: Drift::None,
            tags: vec![],
        }
    }

    fn sample(ts_ms: i64, f: impl FnOnce(&mut TelemetrySnapshot)) -> TelemetrySample {
        let mut data = TelemetrySnapshot {
            disk: Disk {
                total_bytes: 100,
                free_bytes: 60,
            },
            ..TelemetrySnapshot::default()
        };
        f(&mut data);
        TelemetrySample {
            ts_ms,
            bucket_secs: 0,
            data,
        }
    }

    fn dest(state: DestinationState, oldest: u64) -> DestinationQueue {
        DestinationQueue {
            name: Token::new("archive").expect("token"),
            depth: 40,
            oldest_age_secs: oldest,
            quarantined: 0,
            state,
        }
    }

    #[test]
    fn a_healthy_appliance_is_green_and_says_how_old_its_data_is() {
        let t = tile(
            &device("ct-1", Connection::Online),
            Some(&sample(NOW - 2_000, |_| {})),
            NOW,
        );
        assert_eq!(t.level, Level::Green);
        assert_eq!(t.reasons, ["all forwarded"]);
        assert_eq!(t.data_ms, Some(NOW - 2_000));
        assert_eq!(age_words(NOW, t.data_ms), "data 2 s old");
        assert_eq!(age_words(NOW, None), "no data yet");
    }

    #[test]
    fn each_fault_has_its_level_and_its_words() {
        let mut off = device("ct-1", Connection::Offline);
        off.last_seen_ms = Some(NOW - 3 * MIN);
        let t = tile(&off, Some(&sample(NOW - 3 * MIN, |_| {})), NOW);
        assert_eq!(
            (t.level, t.reasons[0].as_str()),
            (Level::Red, "no heartbeat 3 min")
        );

        let on = device("ct-1", Connection::Online);
        let cases: Vec<(TelemetrySample, Level, &str)> = vec![
            (
                sample(NOW, |s| {
                    s.destinations = vec![dest(DestinationState::BackingOff, 720)]
                }),
                Level::Red,
                "archive unreachable 12 min",
            ),
            (
                sample(NOW, |s| {
                    s.destinations = vec![dest(DestinationState::Quarantining, 0)]
                }),
                Level::Red,
                "archive refuses images",
            ),
            (
                sample(NOW, |s| s.disk.free_bytes = 9),
                Level::Amber,
                "disk 91 %",
            ),
            (
                sample(NOW, |s| s.disk.free_bytes = 3),
                Level::Red,
                "disk 97 %",
            ),
            (
                sample(NOW, |s| {
                    s.queue = QueueStats {
                        depth: 12,
                        oldest_age_secs: 14 * 60,
                    }
                }),
                Level::Amber,
                "queue oldest 14 min",
            ),
            (
                sample(NOW, |s| {
                    s.update = Some(UpdateReport {
                        state: UpdatePhase::WaitingIdle,
                        version: None,
                        running: None,
                        campaign: None,
                        on_probation: false,
                        code: None,
                    })
                }),
                Level::Amber,
                "update waiting for idle DICOM",
            ),
            (
                sample(NOW, |s| s.quarantine_objects = 3),
                Level::Amber,
                "3 in quarantine",
            ),
            (
                sample(NOW - 5 * MIN, |_| {}),
                Level::Amber,
                "no telemetry 5 min",
            ),
        ];
        for (s, level, words) in cases {
            let t = tile(&on, Some(&s), NOW);
            assert_eq!((t.level, t.reasons[0].as_str()), (level, words), "{s:?}");
        }

        let mut failed = device("ct-1", Connection::Online);
        failed.config_drift = Drift::Failed;
        let t = tile(&failed, Some(&sample(NOW, |s| s.disk.free_bytes = 9)), NOW);
        assert_eq!(t.level, Level::Red);
        assert_eq!(
            t.reasons,
            ["configuration failed", "disk 91 %"],
            "worst first"
        );
    }

    #[test]
    fn unknown_and_pending_appliances_are_grey() {
        let mut never = device("x", Connection::Unknown);
        never.last_seen_ms = None;
        let t = tile(&never, None, NOW);
        assert_eq!(
            (t.level, t.reasons[0].as_str()),
            (Level::Grey, "never connected")
        );
        let t = tile(&device("y", Connection::Online), None, NOW);
        assert_eq!(
            (t.level, t.reasons[0].as_str()),
            (Level::Grey, "no telemetry yet")
        );
        let mut p = device("z", Connection::Online);
        p.status = DeviceStatus::Pending;
        assert_eq!(tile(&p, None, NOW).reasons[0], "waiting for approval");
    }

    #[test]
    fn the_wall_groups_by_hospital_and_sums_backlog_versions_and_levels() {
        let mut b = device("b-1", Connection::Offline);
        b.site = "b".into();
        let mut gone = device("a-old", Connection::Offline);
        gone.status = DeviceStatus::Decommissioned;
        let devices = vec![
            device("a-2", Connection::Online),
            device("a-1", Connection::Online),
            b,
            gone,
        ];
        let mut latest = BTreeMap::new();
        latest.insert(
            "a-1".to_owned(),
            sample(NOW, |s| {
                s.queue = QueueStats {
                    depth: 5,
                    oldest_age_secs: 30,
                }
            }),
        );
        latest.insert(
            "a-2".to_owned(),
            sample(NOW, |s| {
                s.queue = QueueStats {
                    depth: 7,
                    oldest_age_secs: 90,
                }
            }),
        );
        let mut today = BTreeMap::new();
        today.insert(
            "a".to_owned(),
            Today {
                studies: 3,
                images_received: 300,
                images_forwarded: 280,
                ..Today::default()
            },
        );
        today.insert(
            "b".to_owned(),
            Today {
                studies: 1,
                hour_received: 20,
                ..Today::default()
            },
        );
        let sites = vec![
            ("b".to_owned(), "Nordklinik".to_owned()),
            ("a".to_owned(), "St. Marien".to_owned()),
            ("c".to_owned(), "Empty".to_owned()),
        ];
        let alert = |device: &str, words: &str| Alert {
            id: device.into(),
            device: device.into(),
            site: "a".into(),
            kind: crate::model::AlertKind::DeviceOffline,
            severity: crate::model::Severity::Critical,
            state: crate::model::AlertState::Firing,
            raised_ms: NOW - 12 * MIN,
            cleared_ms: None,
            acked_by: None,
            acked_ms: None,
            silenced_until_ms: None,
            words: words.into(),
        };
        let alerts = vec![
            alert("b-1", "b-1: offline"),
            alert("a-old", "a-old: offline"),
        ];
        let w = Wall::of(&sites, &devices, &latest, &today, &alerts, NOW);
        let names: Vec<_> = w.sites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Empty", "Nordklinik", "St. Marien"]);
        let a = &w.sites[2];
        let ids: Vec<_> = a.tiles.iter().map(|t| t.device.as_str()).collect();
        assert_eq!(ids, ["a-1", "a-2"], "decommissioned left out, sorted by id");
        assert_eq!((a.backlog, a.oldest_secs), (12, 90));
        assert_eq!(a.versions.get("unknown"), Some(&2));
        assert_eq!(a.today.images_received, 300);
        assert_eq!(w.sites[1].worst(), Level::Red);
        assert_eq!(w.sites[0].worst(), Level::Green);
        assert_eq!(w.levels.get(&Level::Green), Some(&2));
        assert_eq!(w.levels.get(&Level::Red), Some(&1));
        assert_eq!(w.tiles(), 3);
        assert_eq!((w.region.studies, w.region.hour_received), (4, 20));
        let alarmed: Vec<(&str, &str)> = w
            .alarms
            .iter()
            .map(|a| (a.device.as_str(), a.hospital.as_str()))
            .collect();
        assert_eq!(
            alarmed,
            [("b-1", "Nordklinik")],
            "the decommissioned device is not on the wall"
        );
    }

    #[test]
    fn spans_and_percentages_read_as_words() {
        assert_eq!(span(45), "45 s");
        assert_eq!(span(720), "12 min");
        assert_eq!(span(3 * 3600), "3 h");
        assert_eq!(span(3 * 86_400), "3 days");
        assert_eq!(used_percent(100, 9), Some(91));
        assert_eq!(used_percent(1000, 98), Some(91), "90.2 % reads 91 %");
        assert_eq!(used_percent(0, 0), None);
    }
}
