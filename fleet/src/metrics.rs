//! Prometheus metrics of the fleet (text format, no extra crate).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (ms) of the publish-to-database latency histogram.
pub const LATENCY_BUCKETS_MS: [i64; 12] = [
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 60_000,
];

/// A gauge read from the database at every scrape, with the `# HELP` text that says what it
/// counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauge {
    /// Name after the `medgate_fleet_` prefix (e.g. `devices_online`).
    pub name: &'static str,
    /// What it means, for `# HELP`.
    pub help: &'static str,
    /// Its value now.
    pub value: i64,
}

/// The fleet's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Device messages recorded (new or duplicate).
    pub messages: Counter,
    /// New events stored.
    pub events_new: Counter,
    /// Duplicate events ignored (redeliveries, other replicas).
    pub events_duplicate: Counter,
    /// Invalid messages dropped.
    pub invalid: Counter,
    /// Messages refused (revoked device, wrong site).
    pub refused: Counter,
    /// Database errors while recording.
    pub db_errors: Counter,
    /// Event receipts published to devices.
    pub receipts_sent: Counter,
    /// Event receipts not published (the MQTT client's queue was full; the device sends again).
    pub receipts_skipped: Counter,
    /// 1 while connected to the broker.
    pub mqtt_connected: AtomicU64,
    /// ota (issue 14): bundle downloads served to devices (each request, resumes included).
    pub bundle_downloads: Counter,
    /// atna (issue 13 part 4): the forwarder's counters.
    pub atna: std::sync::Arc<crate::atna_forward::AtnaMetrics>,
    /// alerts (issue 13 part 3): notifications by channel and outcome.
    pub alerts: std::sync::Arc<crate::alerts::AlertMetrics>,
    latency: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    latency_sum_ms: AtomicU64,
}

impl Metrics {
    /// Records one publish-to-database latency (device clock to fleet clock, ms).
    pub fn observe_latency(&self, ms: i64) {
        let ms = ms.max(0);
        let i = LATENCY_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.latency[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ms
            .fetch_add(u64::try_from(ms).unwrap_or(0), Ordering::Relaxed);
    }

    /// The upper bound of the bucket holding the given quantile (0..1), in ms; None if empty.
    pub fn latency_quantile_ms(&self, q: f64) -> Option<i64> {
        let counts: Vec<u64> = self
            .latency
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "q in 0..=1 times a count; `as` saturates"
        )]
        let target = (q * total as f64).ceil() as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Some(LATENCY_BUCKETS_MS.get(i).copied().unwrap_or(i64::MAX));
            }
        }
        None
    }

    /// Prometheus text, with the database gauges given.
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut s = String::new();
        let counters = [
            (
                "medgate_fleet_messages_total",
                "Device messages recorded",
                self.messages.get(),
            ),
            (
                "medgate_fleet_events_new_total",
                "New events stored",
                self.events_new.get(),
            ),
            (
                "medgate_fleet_events_duplicate_total",
                "Duplicate events ignored",
                self.events_duplicate.get(),
            ),
            (
                "medgate_fleet_invalid_messages_total",
                "Invalid messages dropped",
                self.invalid.get(),
            ),
            (
                "medgate_fleet_refused_messages_total",
                "Messages refused (revoked, wrong site)",
                self.refused.get(),
            ),
            (
                "medgate_fleet_db_errors_total",
                "Database errors while recording",
                self.db_errors.get(),
            ),
            (
                "medgate_fleet_event_receipts_total",
                "Event receipts published to devices",
                self.receipts_sent.get(),
            ),
            (
                "medgate_fleet_event_receipts_skipped_total",
                "Event receipts not published because the MQTT client was busy (devices send again)",
                self.receipts_skipped.get(),
            ),
            (
                "medgate_fleet_bundle_downloads_total",
                "Update bundle downloads served to devices (resumed ones count again)",
                self.bundle_downloads.get(),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        let _ = writeln!(
            s,
            "# HELP medgate_fleet_mqtt_connected 1 while connected to the broker\n# TYPE medgate_fleet_mqtt_connected gauge\nmedgate_fleet_mqtt_connected {}",
            self.mqtt_connected.load(Ordering::Relaxed)
        );
        // atna (issue 13 part 4).
        let a = &self.atna;
        let _ = writeln!(
            s,
            "# HELP medgate_fleet_atna_sent_total ATNA audit records written to the audit repository\n# TYPE medgate_fleet_atna_sent_total counter\nmedgate_fleet_atna_sent_total {}\n\
             # HELP medgate_fleet_atna_backlog Audit entries not yet written to the audit repository (as the lease holder last counted)\n# TYPE medgate_fleet_atna_backlog gauge\nmedgate_fleet_atna_backlog {}\n\
             # HELP medgate_fleet_atna_connected 1 while connected to the audit repository\n# TYPE medgate_fleet_atna_connected gauge\nmedgate_fleet_atna_connected {}\n\
             # HELP medgate_fleet_atna_lease_held 1 while this replica holds the lease to forward the audit log (one replica at a time)\n# TYPE medgate_fleet_atna_lease_held gauge\nmedgate_fleet_atna_lease_held {}",
            a.sent.load(Ordering::Relaxed),
            a.backlog.load(Ordering::Relaxed),
            a.connected.load(Ordering::Relaxed),
            a.lease_held.load(Ordering::Relaxed)
        );
        for g in gauges {
            let (name, help, v) = (g.name, g.help, g.value);
            let _ = writeln!(
                s,
                "# HELP medgate_fleet_{name} {help}\n# TYPE medgate_fleet_{name} gauge\nmedgate_fleet_{name} {v}"
            );
        }
        let name = "medgate_fleet_ingest_latency_ms";
        let _ = writeln!(
            s,
            "# HELP {name} From the device's send time to recorded in the database\n# TYPE {name} histogram"
        );
        let mut cum = 0;
        for (i, b) in LATENCY_BUCKETS_MS.iter().enumerate() {
            cum += self.latency[i].load(Ordering::Relaxed);
            let _ = writeln!(s, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += self.latency[LATENCY_BUCKETS_MS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            s,
            "{name}_bucket{{le=\"+Inf\"}} {cum}\n{name}_sum {}\n{name}_count {cum}",
            self.latency_sum_ms.load(Ordering::Relaxed)
        );
        s
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn quantiles_and_text() {
        let m = Metrics::default();
        assert_eq!(m.latency_quantile_ms(0.99), None);
        for _ in 0..98 {
            m.observe_latency(3);
        }
        m.observe_latency(400);
        m.observe_latency(700);
        assert_eq!(m.latency_quantile_ms(0.5), Some(5));
        assert_eq!(m.latency_quantile_ms(0.99), Some(500));
        let text = m.render(&[Gauge {
            name: "devices_online",
            help: "Devices connected now",
            value: 2,
        }]);
        assert!(text.contains("medgate_fleet_ingest_latency_ms_bucket{le=\"+Inf\"} 100"));
        assert!(text.contains("medgate_fleet_devices_online 2"));
        assert_help_before_every_type(&text);
    }

    /// Every `# TYPE name …` line comes right after a non-empty `# HELP name …` line.
    pub(crate) fn assert_help_before_every_type(text: &str) {
        let lines: Vec<&str> = text.lines().collect();
        let mut types = 0;
        for (i, line) in lines.iter().enumerate() {
            let Some(rest) = line.strip_prefix("# TYPE ") else {
                continue;
            };
            types += 1;
            let name = rest.split(' ').next().unwrap_or_default();
            let help = i
                .checked_sub(1)
                .and_then(|j| lines.get(j))
                .and_then(|l| l.strip_prefix(&format!("# HELP {name} ")));
            assert!(
                help.is_some_and(|h| !h.trim().is_empty()),
                "{name} has no HELP line before its TYPE line:\n{text}"
            );
        }
        assert!(types > 0, "no metric rendered:\n{text}");
    }
}
