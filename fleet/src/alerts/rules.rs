//! alerts (issue 13 part 3), sans-IO: the rules (a device, its latest telemetry and now → the
//! conditions that hold) and the state machine (per device and kind: pending → firing →
//! resolved). No database, clock or network here: the evaluator ([`super::run`]) reads, calls
//! these and writes what they return.
//!
//! Words carry figures only: device ids, the appliance's AE title, destination names, counts,
//! ages, percentages, versions and codes. Nothing of an image (patient, study, accession) is in
//! the telemetry, so nothing of it can be in an alert.
//!
//! `worklist_cache_stale` is not a rule: the telemetry carries no worklist figure (the
//! appliance's worklist cache is not reported to the fleet); see docs/fleet.md "Alerts".

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;

use medgate_contract::{DestinationState, UpdatePhase};

use super::config::AlertsSection;
use crate::model::{AlertKind, Connection, Device, DeviceStatus, Severity, TelemetrySample};

/// A condition that holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// The device.
    pub device: String,
    /// Its site.
    pub site: String,
    /// The rule.
    pub kind: AlertKind,
    /// How urgent.
    pub severity: Severity,
    /// In words, figures only.
    pub words: String,
}

/// What is known of one device at an evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The registry's record.
    pub device: &'a Device,
    /// Its latest telemetry sample, if any.
    pub latest: Option<&'a TelemetrySample>,
    /// When its certificate ends (Unix ms).
    pub cert_expires_ms: Option<i64>,
    /// Objects that went to quarantine within the window ([`QuarantineHistory`]).
    pub quarantine_growth: Option<u64>,
}

/// One device's evaluation: the conditions that hold, and the kinds that cannot be judged now
/// (telemetry rules of an offline device: its last figures are old, so its alerts stay as they
/// are, neither raised nor cleared).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// The device.
    pub device: String,
    /// What holds.
    pub holding: Vec<Condition>,
    /// What is left as it is.
    pub unknown: Vec<AlertKind>,
}

/// The rules fed by telemetry.
const TELEMETRY_KINDS: [AlertKind; 5] = [
    AlertKind::ArchiveUnreachable,
    AlertKind::OldestQueued,
    AlertKind::DiskUse,
    AlertKind::QuarantineGrowing,
    AlertKind::UpdateFailed,
];

/// An age in words: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
pub fn age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => match (secs % 3600) / 60 {
            0 => format!("{} h", secs / 3600),
            m => format!("{} h {m} min", secs / 3600),
        },
        _ => match (secs % 86_400) / 3600 {
            0 => format!("{} d", secs / 86_400),
            h => format!("{} d {h} h", secs / 86_400),
        },
    }
}

fn ms_to_secs(ms: i64) -> u64 {
    u64::try_from(ms.max(0) / 1000).unwrap_or(0)
}

/// The rules, for one device at `now_ms`.
pub fn evaluate(f: &Facts<'_>, t: &AlertsSection, now_ms: i64) -> Evaluation {
    let d = f.device;
    let mut e = Evaluation {
        device: d.id.clone(),
        ..Evaluation::default()
    };
    // Only enrolled devices in service raise anything; the others' alerts clear.
    if d.status != DeviceStatus::Approved {
        return e;
    }
    let ae = d
        .inventory
        .as_ref()
        .and_then(|i| i.ae_title.as_ref())
        .map(|a| format!(" (AE {a})"))
        .unwrap_or_default();
    let mut hold = |kind, severity, words: String| {
        e.holding.push(Condition {
            device: d.id.clone(),
            site: d.site.clone(),
            kind,
            severity,
            words,
        });
    };
    if let Some(end) = f.cert_expires_ms {
        let left = end.saturating_sub(now_ms);
        let day = 86_400_000_i64;
        let warn = i64::try_from(t.certificate_warning_days).unwrap_or(i64::MAX / day) * day;
        let crit = i64::try_from(t.certificate_critical_days).unwrap_or(i64::MAX / day) * day;
        if left <= 0 {
            hold(
                AlertKind::CertificateExpiring,
                Severity::Critical,
                format!(
                    "{}{ae}: device certificate ended {} ago; enroll it again",
                    d.id,
                    age(ms_to_secs(-left))
                ),
            );
        } else if left < warn {
            hold(
                AlertKind::CertificateExpiring,
                if left < crit {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                format!(
                    "{}{ae}: device certificate ends in {}; enroll it again before then",
                    d.id,
                    age(ms_to_secs(left))
                ),
            );
        }
    }
    if d.connection == Connection::Offline {
        let words = match d.last_seen_ms {
            Some(seen) => format!(
                "{}{ae}: offline, no heartbeat for {}",
                d.id,
                age(ms_to_secs(now_ms - seen))
            ),
            None => format!("{}{ae}: offline", d.id),
        };
        hold(AlertKind::DeviceOffline, Severity::Critical, words);
    }
    let Some(sample) = f.latest.filter(|_| d.connection == Connection::Online) else {
        e.unknown.extend(TELEMETRY_KINDS);
        return e;
    };
    let s = &sample.data;
    let unreachable: Vec<_> = s
        .destinations
        .iter()
        .filter(|q| q.state == DestinationState::BackingOff)
        .collect();
    if !unreachable.is_empty() {
        let mut words = format!("{}{ae}: archive unreachable:", d.id);
        for (i, q) in unreachable.iter().enumerate() {
            let _ = write!(
                words,
                "{} destination {} with {} object{} waiting, oldest {}",
                if i == 0 { "" } else { ";" },
                q.name,
                q.depth,
                if q.depth == 1 { "" } else { "s" },
                age(q.oldest_age_secs)
            );
        }
        hold(AlertKind::ArchiveUnreachable, Severity::Critical, words);
    }
    if s.queue.depth > 0 && s.queue.oldest_age_secs >= t.oldest_queued_warning_secs {
        hold(
            AlertKind::OldestQueued,
            if s.queue.oldest_age_secs >= t.oldest_queued_critical_secs {
                Severity::Critical
            } else {
                Severity::Warning
            },
            format!(
                "{}{ae}: oldest unforwarded object waits for {} ({} waiting)",
                d.id,
                age(s.queue.oldest_age_secs),
                s.queue.depth
            ),
        );
    }
    if s.disk.total_bytes > 0 {
        let used = s.disk.total_bytes.saturating_sub(s.disk.free_bytes);
        let pct =
            u64::try_from(u128::from(used) * 100 / u128::from(s.disk.total_bytes)).unwrap_or(100);
        if pct >= t.disk_warning_percent {
            hold(
                AlertKind::DiskUse,
                if pct >= t.disk_critical_percent {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                format!(
                    "{}{ae}: disk {pct} % full ({} GB free)",
                    d.id,
                    s.disk.free_bytes / 1_000_000_000
                ),
            );
        }
    }
    if let Some(grew) = f.quarantine_growth
        && grew >= t.quarantine_growth_objects
    {
        hold(
            AlertKind::QuarantineGrowing,
            Severity::Warning,
            format!(
                "{}{ae}: {grew} objects went to quarantine in the last {} ({} there now)",
                d.id,
                age(t.quarantine_window_secs),
                s.quarantine_objects
            ),
        );
    }
    if let Some(u) = &s.update
        && matches!(
            u.state,
            UpdatePhase::Failed | UpdatePhase::RolledBack | UpdatePhase::Refused
        )
    {
        let what = match u.state {
            UpdatePhase::RolledBack => "rolled back",
            UpdatePhase::Refused => "refused",
            _ => "failed",
        };
        let mut words = format!("{}{ae}: update", d.id);
        if let Some(v) = &u.version {
            let _ = write!(words, " to {v}");
        }
        let _ = write!(words, " {what}");
        if let Some(c) = &u.code {
            let _ = write!(words, " ({c})");
        }
        if let Some(r) = &u.running {
            let _ = write!(words, "; {r} runs");
        }
        hold(AlertKind::UpdateFailed, Severity::Warning, words);
    }
    e
}

/// How long a rule's condition must hold before it is raised, ms.
pub fn hold_ms(t: &AlertsSection, kind: AlertKind) -> i64 {
    let secs = match kind {
        AlertKind::DeviceOffline => t.offline_for_secs,
        AlertKind::ArchiveUnreachable => t.archive_unreachable_for_secs,
        AlertKind::OldestQueued => t.oldest_queued_for_secs,
        AlertKind::DiskUse => t.disk_for_secs,
        AlertKind::UpdateFailed => t.update_failed_for_secs,
        AlertKind::QuarantineGrowing | AlertKind::CertificateExpiring => 0,
    };
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Quarantine counts seen per device within a window: how many objects went there lately.
#[derive(Debug, Default)]
pub struct QuarantineHistory {
    seen: HashMap<String, VecDeque<(i64, u64)>>,
}

impl QuarantineHistory {
    /// Records a device's count at `ts_ms` and returns by how much it grew within `window_ms`
    /// (from the lowest count in the window: an appliance that released objects from quarantine
    /// starts lower).
    pub fn observe(&mut self, device: &str, ts_ms: i64, count: u64, window_ms: i64) -> u64 {
        let q = self.seen.entry(device.to_owned()).or_default();
        if q.back().is_none_or(|(t, _)| *t < ts_ms) {
            q.push_back((ts_ms, count));
        }
        while q.front().is_some_and(|(t, _)| *t < ts_ms - window_ms) {
            q.pop_front();
        }
        let low = q.iter().map(|(_, c)| *c).min().unwrap_or(count);
        count.saturating_sub(low)
    }

    /// Forgets devices not in `keep`.
    pub fn retain(&mut self, keep: &std::collections::HashSet<&str>) {
        self.seen.retain(|d, _| keep.contains(d.as_str()));
    }
}

/// A firing alert, as the machine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    /// Its id.
    pub id: String,
    /// The device.
    pub device: String,
    /// The rule.
    pub kind: AlertKind,
    /// Its severity.
    pub severity: Severity,
}

/// What to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Held long enough: raise (and notify).
    Raise(Condition),
    /// Still firing at another severity: update its severity and words.
    Escalate {
        /// The alert.
        id: String,
        /// Now.
        condition: Condition,
    },
    /// No longer holds: clear (and notify).
    Clear {
        /// The alert.
        id: String,
    },
}

/// The state machine: per (device, kind), since when a condition has held without being raised
/// (pending). Firing and resolved alerts live in the database; this holds only the pending ones,
/// so a restarted fleet waits the "for" duration again before raising.
#[derive(Debug, Default)]
pub struct Machine {
    pending: HashMap<(String, AlertKind), i64>,
}

impl Machine {
    /// One step: the evaluations of every device (a device absent from them is gone: its alerts
    /// clear), the alerts firing now, and how long each kind must hold.
    pub fn step(
        &mut self,
        now_ms: i64,
        evaluations: &[Evaluation],
        firing: &[Firing],
        hold_ms: impl Fn(AlertKind) -> i64,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        let firing_by: HashMap<(&str, AlertKind), &Firing> = firing
            .iter()
            .map(|f| ((f.device.as_str(), f.kind), f))
            .collect();
        let mut holding: std::collections::HashSet<(&str, AlertKind)> = Default::default();
        let mut unknown: std::collections::HashSet<(&str, AlertKind)> = Default::default();
        for e in evaluations {
            for k in &e.unknown {
                unknown.insert((e.device.as_str(), *k));
            }
            for c in &e.holding {
                let key = (c.device.as_str(), c.kind);
                holding.insert(key);
                if let Some(f) = firing_by.get(&key) {
                    self.pending.remove(&(c.device.clone(), c.kind));
                    if f.severity != c.severity {
                        out.push(Transition::Escalate {
                            id: f.id.clone(),
                            condition: c.clone(),
                        });
                    }
                    continue;
                }
                let since = *self
                    .pending
                    .entry((c.device.clone(), c.kind))
                    .or_insert(now_ms);
                if now_ms - since >= hold_ms(c.kind) {
                    self.pending.remove(&(c.device.clone(), c.kind));
                    out.push(Transition::Raise(c.clone()));
                }
            }
        }
        for f in firing {
            let key = (f.device.as_str(), f.kind);
            if !holding.contains(&key) && !unknown.contains(&key) {
                out.push(Transition::Clear { id: f.id.clone() });
            }
        }
        self.pending.retain(|(d, k), _| {
            let key = (d.as_str(), *k);
            holding.contains(&key) || unknown.contains(&key)
        });
        out
    }

    /// Conditions held but not raised yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medgate_contract::{
        AeTitle, DestinationQueue, Disk, Inventory, QueueStats, TelemetrySnapshot, Token,
        UpdateReport,
    };

    use crate::model::Drift;

    fn device(connection: Connection) -> Device {
        Device {
            id: "ct-1".into(),
            site: "st-marien".into(),
            room: None,
            status: DeviceStatus::Approved,
            connection,
            last_seen_ms: Some(1_000_000),
            inventory: Some(Inventory {
                serial: Token::new("s1").expect("token"),
                hardware_profile: Token::new("nuc").expect("token"),
                os_version: Token::new("1").expect("token"),
                appliance_version: Token::new("1").expect("token"),
                ae_title: Some(AeTitle::new("MEDGATE_CT1").expect("ae")),
                nics: vec![],
                disk: Disk::default(),
                peers: vec![],
                config_schema: None,
            }),
            running_config_version: None,
            events_received: 0,
            desired_config_version: None,
            config_drift: Drift::None,
            tags: vec![],
        }
    }

    fn sample(f: impl FnOnce(&mut TelemetrySnapshot)) -> TelemetrySample {
        let mut data = TelemetrySnapshot {
            disk: Disk {
                total_bytes: 100_000_000_000,
                free_bytes: 50_000_000_000,
            },
            ..TelemetrySnapshot::default()
        };
        f(&mut data);
        TelemetrySample {
            ts_ms: 1_000_000,
            bucket_secs: 0,
            data,
        }
    }

    fn kinds(d: &Device, s: Option<&TelemetrySample>, growth: Option<u64>) -> Evaluation {
        let f = Facts {
            device: d,
            latest: s,
            cert_expires_ms: None,
            quarantine_growth: growth,
        };
        evaluate(&f, &AlertsSection::default(), 1_010_000)
    }

    fn one(e: &Evaluation) -> &Condition {
        assert_eq!(e.holding.len(), 1, "{e:?}");
        &e.holding[0]
    }

    #[test]
    fn a_healthy_device_raises_nothing() {
        let d = device(Connection::Online);
        let e = kinds(&d, Some(&sample(|_| {})), Some(0));
        assert!(e.holding.is_empty() && e.unknown.is_empty(), "{e:?}");
    }

    #[test]
    fn offline_is_critical_and_freezes_the_telemetry_rules() {
        let d = device(Connection::Offline);
        let e = kinds(&d, Some(&sample(|_| {})), None);
        let c = one(&e);
        assert_eq!(
            (c.kind, c.severity),
            (AlertKind::DeviceOffline, Severity::Critical)
        );
        assert_eq!(
            c.words,
            "ct-1 (AE MEDGATE_CT1): offline, no heartbeat for 10 s"
        );
        assert_eq!(e.unknown, TELEMETRY_KINDS.to_vec());
    }

    #[test]
    fn a_destination_backing_off_is_an_unreachable_archive() {
        let d = device(Connection::Online);
        let s = sample(|s| {
            s.destinations = vec![
                DestinationQueue {
                    name: Token::new("pacs").expect("token"),
                    depth: 3,
                    oldest_age_secs: 150,
                    quarantined: 0,
                    state: DestinationState::BackingOff,
                },
                DestinationQueue {
                    name: Token::new("backup").expect("token"),
                    depth: 0,
                    oldest_age_secs: 0,
                    quarantined: 0,
                    state: DestinationState::Ok,
                },
            ];
        });
        let e = kinds(&d, Some(&s), None);
        let c = one(&e);
        assert_eq!(c.kind, AlertKind::ArchiveUnreachable);
        assert_eq!(
            c.words,
            "ct-1 (AE MEDGATE_CT1): archive unreachable: destination pacs with 3 objects waiting, oldest 2 min"
        );
    }

    #[test]
    fn oldest_queued_warns_then_is_critical() {
        let d = device(Connection::Online);
        let at = |age| {
            sample(|s| {
                s.queue = QueueStats {
                    depth: 7,
                    oldest_age_secs: age,
                }
            })
        };
        assert!(kinds(&d, Some(&at(899)), None).holding.is_empty());
        let e = kinds(&d, Some(&at(900)), None);
        assert_eq!(one(&e).severity, Severity::Warning);
        assert_eq!(
            one(&e).words,
            "ct-1 (AE MEDGATE_CT1): oldest unforwarded object waits for 15 min (7 waiting)"
        );
        assert_eq!(
            one(&kinds(&d, Some(&at(3600)), None)).severity,
            Severity::Critical
        );
        // An empty queue is never old.
        let empty = sample(|s| s.queue.oldest_age_secs = 99_999);
        assert!(kinds(&d, Some(&empty), None).holding.is_empty());
    }

    #[test]
    fn disk_use_by_percent() {
        let d = device(Connection::Online);
        let free = |gb: u64| sample(|s| s.disk.free_bytes = gb * 1_000_000_000);
        assert!(kinds(&d, Some(&free(16)), None).holding.is_empty());
        let e = kinds(&d, Some(&free(15)), None);
        assert_eq!(
            (one(&e).kind, one(&e).severity),
            (AlertKind::DiskUse, Severity::Warning)
        );
        assert_eq!(
            one(&e).words,
            "ct-1 (AE MEDGATE_CT1): disk 85 % full (15 GB free)"
        );
        assert_eq!(
            one(&kinds(&d, Some(&free(5)), None)).severity,
            Severity::Critical
        );
        let unknown_size = sample(|s| s.disk = Disk::default());
        assert!(kinds(&d, Some(&unknown_size), None).holding.is_empty());
    }

    #[test]
    fn quarantine_growth_within_the_window() {
        let mut h = QuarantineHistory::default();
        assert_eq!(h.observe("ct-1", 0, 5, 60_000), 0);
        assert_eq!(h.observe("ct-1", 30_000, 9, 60_000), 4);
        // The first sample leaves the window.
        assert_eq!(h.observe("ct-1", 70_000, 20, 60_000), 11);
        assert_eq!(h.observe("ct-1", 200_000, 20, 60_000), 0);
        let d = device(Connection::Online);
        let s = sample(|s| s.quarantine_objects = 20);
        assert!(kinds(&d, Some(&s), Some(9)).holding.is_empty());
        let e = kinds(&d, Some(&s), Some(10));
        assert_eq!(
            one(&e).words,
            "ct-1 (AE MEDGATE_CT1): 10 objects went to quarantine in the last 1 h (20 there now)"
        );
    }

    #[test]
    fn certificates_warn_then_are_critical_then_ended() {
        let d = device(Connection::Online);
        let at = |end| {
            let f = Facts {
                device: &d,
                latest: None,
                cert_expires_ms: Some(end),
                quarantine_growth: None,
            };
            evaluate(&f, &AlertsSection::default(), 0)
        };
        let day = 86_400_000;
        assert!(at(31 * day).holding.is_empty());
        let e = at(20 * day);
        assert_eq!(one(&e).severity, Severity::Warning);
        assert_eq!(
            one(&e).words,
            "ct-1 (AE MEDGATE_CT1): device certificate ends in 20 d; enroll it again before then"
        );
        assert_eq!(one(&at(2 * day)).severity, Severity::Critical);
        assert!(one(&at(-day)).words.contains("ended 1 d ago"));
    }

    #[test]
    fn failed_updates_are_worded_with_version_and_code() {
        let d = device(Connection::Online);
        let s = sample(|s| {
            s.update = Some(UpdateReport {
                state: UpdatePhase::RolledBack,
                version: Some(Token::new("2.1.0").expect("token")),
                running: Some(Token::new("2.0.3").expect("token")),
                campaign: None,
                on_probation: false,
                code: Some(Token::new("health_deadline").expect("token")),
            })
        });
        let e = kinds(&d, Some(&s), None);
        assert_eq!(
            one(&e).words,
            "ct-1 (AE MEDGATE_CT1): update to 2.1.0 rolled back (health_deadline); 2.0.3 runs"
        );
    }

    #[test]
    fn devices_out_of_service_raise_nothing() {
        let mut d = device(Connection::Offline);
        d.status = DeviceStatus::Decommissioned;
        let e = kinds(&d, None, None);
        assert!(e.holding.is_empty() && e.unknown.is_empty());
    }

    fn cond(kind: AlertKind, severity: Severity) -> Evaluation {
        Evaluation {
            device: "ct-1".into(),
            holding: vec![Condition {
                device: "ct-1".into(),
                site: "s".into(),
                kind,
                severity,
                words: "w".into(),
            }],
            unknown: vec![],
        }
    }

    #[test]
    fn raised_only_after_holding_for_its_duration_then_cleared() {
        let mut m = Machine::default();
        let hold = |_| 10_000;
        let e = [cond(AlertKind::DiskUse, Severity::Warning)];
        assert_eq!(m.step(0, &e, &[], hold), vec![]);
        assert_eq!(m.pending(), 1);
        assert_eq!(m.step(9_999, &e, &[], hold), vec![]);
        let t = m.step(10_000, &e, &[], hold);
        assert_eq!(t, vec![Transition::Raise(e[0].holding[0].clone())]);
        assert_eq!(m.pending(), 0);
        let firing = [Firing {
            id: "a1".into(),
            device: "ct-1".into(),
            kind: AlertKind::DiskUse,
            severity: Severity::Warning,
        }];
        // Firing and still holding: nothing.
        assert_eq!(m.step(11_000, &e, &firing, hold), vec![]);
        // Worse: escalated.
        let worse = [cond(AlertKind::DiskUse, Severity::Critical)];
        assert!(matches!(
            m.step(12_000, &worse, &firing, hold).as_slice(),
            [Transition::Escalate { id, .. }] if id == "a1"
        ));
        // Gone: cleared.
        let ok = [Evaluation {
            device: "ct-1".into(),
            ..Evaluation::default()
        }];
        assert_eq!(
            m.step(13_000, &ok, &firing, hold),
            vec![Transition::Clear { id: "a1".into() }]
        );
        // A device no longer listed clears too.
        assert_eq!(
            m.step(13_000, &[], &firing, hold),
            vec![Transition::Clear { id: "a1".into() }]
        );
    }

    #[test]
    fn a_condition_that_stops_holding_while_pending_starts_over() {
        let mut m = Machine::default();
        let hold = |_| 10_000;
        let e = [cond(AlertKind::OldestQueued, Severity::Warning)];
        let ok = [Evaluation {
            device: "ct-1".into(),
            ..Evaluation::default()
        }];
        m.step(0, &e, &[], hold);
        m.step(5_000, &ok, &[], hold);
        assert_eq!(m.pending(), 0);
        assert_eq!(m.step(6_000, &e, &[], hold), vec![]);
        assert_eq!(m.step(15_999, &e, &[], hold), vec![]);
        assert_eq!(m.step(16_000, &e, &[], hold).len(), 1);
    }

    #[test]
    fn unknown_kinds_neither_clear_nor_forget_pending() {
        let mut m = Machine::default();
        let hold = |_| 10_000;
        let firing = [Firing {
            id: "a1".into(),
            device: "ct-1".into(),
            kind: AlertKind::ArchiveUnreachable,
            severity: Severity::Critical,
        }];
        let offline = [Evaluation {
            device: "ct-1".into(),
            holding: vec![],
            unknown: TELEMETRY_KINDS.to_vec(),
        }];
        assert_eq!(m.step(0, &offline, &firing, hold), vec![]);
    }

    #[test]
    fn ages_read_as_words() {
        assert_eq!(age(45), "45 s");
        assert_eq!(age(720), "12 min");
        assert_eq!(age(3600), "1 h");
        assert_eq!(age(3900), "1 h 5 min");
        assert_eq!(age(2 * 86_400 + 4 * 3600), "2 d 4 h");
    }
}
