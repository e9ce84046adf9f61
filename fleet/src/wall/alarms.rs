//! The wall's active alarms band, computed without IO: the firing alerts of the wall's
//! appliances in, rows out — critical first, then oldest first; each says its severity, device,
//! hospital, what (the alert's words: figures only), for how long, and whether someone is on it
//! ("acknowledged", "silenced") — never who: the wall shows no names of staff.

use std::collections::BTreeMap;

use crate::model::{Alert, AlertState, Severity};

/// One row of the band.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    /// Warning or critical.
    pub severity: Severity,
    /// The device id.
    pub device: String,
    /// The hospital's name.
    pub hospital: String,
    /// What holds (the alert's words without the device's name in front).
    pub what: String,
    /// Raised (Unix ms, the fleet's clock).
    pub raised_ms: i64,
    /// Someone acknowledged it.
    pub acknowledged: bool,
    /// Its notifications are held now.
    pub silenced: bool,
}

impl Alarm {
    /// The icon (the tiles' shapes: ✖ critical like a fault, ▲ warning).
    pub fn icon(&self) -> &'static str {
        match self.severity {
            Severity::Critical => "✖",
            Severity::Warning => "▲",
        }
    }

    /// The CSS class (the tiles' colours).
    pub fn class(&self) -> &'static str {
        match self.severity {
            Severity::Critical => "red",
            Severity::Warning => "amber",
        }
    }

    /// How someone is on it, in words (empty: nobody yet).
    pub fn handling(&self) -> &'static str {
        match (self.acknowledged, self.silenced) {
            (true, true) => "acknowledged · silenced",
            (true, false) => "acknowledged",
            (false, true) => "silenced",
            (false, false) => "",
        }
    }
}

/// The alert's words without the device (and its AE title) in front: the band has a column of
/// its own for the device. `ct-1 (AE CT01): disk 91 % full` reads `disk 91 % full`.
pub fn what(device: &str, words: &str) -> String {
    words
        .strip_prefix(device)
        .and_then(|rest| rest.split_once(": "))
        .map(|(head, tail)| {
            if head.is_empty() || head.starts_with(" (AE ") {
                tail
            } else {
                words
            }
        })
        .unwrap_or(words)
        .trim()
        .to_owned()
}

/// The band's rows: the firing alerts of `devices` (device id → hospital name; the wall's
/// appliances), critical first, then oldest first.
pub fn alarms(alerts: &[Alert], devices: &BTreeMap<&str, &str>, now_ms: i64) -> Vec<Alarm> {
    let mut out: Vec<Alarm> = alerts
        .iter()
        .filter(|a| a.state == AlertState::Firing && a.cleared_ms.is_none())
        .filter_map(|a| {
            let hospital = devices.get(a.device.as_str())?;
            Some(Alarm {
                severity: a.severity,
                device: a.device.clone(),
                hospital: (*hospital).to_owned(),
                what: what(&a.device, &a.words),
                raised_ms: a.raised_ms,
                acknowledged: a.acked_ms.is_some(),
                silenced: a.silenced_until_ms.is_some_and(|u| u > now_ms),
            })
        })
        .collect();
    out.sort_by(|a, b| {
        let rank = |s: Severity| match s {
            Severity::Critical => 0,
            Severity::Warning => 1,
        };
        rank(a.severity)
            .cmp(&rank(b.severity))
            .then(a.raised_ms.cmp(&b.raised_ms))
            .then(a.device.cmp(&b.device))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AlertKind;

    fn alert(device: &str, severity: Severity, raised_ms: i64, words: &str) -> Alert {
        Alert {
            id: format!("{raised_ms}-{device}"),
            device: device.into(),
            site: "a".into(),
            kind: AlertKind::DiskUse,
            severity,
            state: AlertState::Firing,
            raised_ms,
            cleared_ms: None,
            acked_by: None,
            acked_ms: None,
            silenced_until_ms: None,
            words: words.into(),
        }
    }

    #[test]
    fn critical_first_then_oldest_and_only_the_walls_devices() {
        let mut cleared = alert("ct-1", Severity::Critical, 1, "ct-1: offline");
        cleared.state = AlertState::Resolved;
        cleared.cleared_ms = Some(5);
        let alerts = vec![
            alert(
                "us-1",
                Severity::Warning,
                10,
                "us-1 (AE US01): disk 91 % full",
            ),
            alert("mr-1", Severity::Critical, 30, "mr-1: archive unreachable"),
            alert(
                "ct-1",
                Severity::Critical,
                20,
                "ct-1: offline, no heartbeat for 3 min",
            ),
            alert("dx-9", Severity::Critical, 5, "dx-9: offline"),
            cleared,
        ];
        let devices: BTreeMap<&str, &str> = [
            ("us-1", "St. Marien"),
            ("mr-1", "Nordklinik"),
            ("ct-1", "St. Marien"),
        ]
        .into_iter()
        .collect();
        let rows = alarms(&alerts, &devices, 100);
        let order: Vec<(&str, &str)> = rows
            .iter()
            .map(|a| (a.device.as_str(), a.what.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("ct-1", "offline, no heartbeat for 3 min"),
                ("mr-1", "archive unreachable"),
                ("us-1", "disk 91 % full"),
            ],
            "dx-9 is not on this wall; the cleared alert is not firing"
        );
        assert_eq!(rows[0].hospital, "St. Marien");
        assert_eq!((rows[0].icon(), rows[0].class()), ("✖", "red"));
        assert_eq!((rows[2].icon(), rows[2].class()), ("▲", "amber"));
    }

    #[test]
    fn acknowledged_and_silenced_are_words_never_names() {
        let mut a = alert("ct-1", Severity::Critical, 1, "ct-1: offline");
        a.acked_by = Some("dr-house".into());
        a.acked_ms = Some(2);
        let mut s = alert("us-1", Severity::Warning, 1, "us-1: disk 91 % full");
        s.silenced_until_ms = Some(1_000);
        let mut over = alert("mr-1", Severity::Warning, 1, "mr-1: disk 91 % full");
        over.silenced_until_ms = Some(50);
        let devices: BTreeMap<&str, &str> = [("ct-1", "A"), ("us-1", "A"), ("mr-1", "A")]
            .into_iter()
            .collect();
        let rows = alarms(&[a, s, over], &devices, 100);
        let words: Vec<&str> = rows.iter().map(Alarm::handling).collect();
        assert_eq!(words, ["acknowledged", "", "silenced"]);
        assert!(!format!("{rows:?}").contains("dr-house"), "no staff names");
    }

    #[test]
    fn the_device_in_front_of_the_words_is_left_out() {
        assert_eq!(
            what("ct-1", "ct-1 (AE CT01): disk 91 % full"),
            "disk 91 % full"
        );
        assert_eq!(
            what("ct-1", "ct-1: update to 0.2.0 failed"),
            "update to 0.2.0 failed"
        );
        assert_eq!(what("ct-1", "something else: x"), "something else: x");
        assert_eq!(what("ct-1", "ct-10: offline"), "ct-10: offline");
    }
}
