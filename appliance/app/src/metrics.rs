//! Counters, gauges and histograms of the appliance, rendered in the Prometheus text format.
//! Lock-free on the hot path (atomics); per-destination and per-status series live in small maps.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes the `# HELP` and `# TYPE` lines of a metric (its samples follow).
pub fn write_header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Writes a metric with one unlabelled sample: its `# HELP` and `# TYPE` lines and its value.
pub fn write_metric(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    value: impl std::fmt::Display,
) {
    write_header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// A histogram with fixed buckets (seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// Buckets for fsync and forward latencies.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

impl Histogram {
    /// A histogram over `bounds`.
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if s <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_us.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The q-quantile estimated from the buckets (upper bound of the bucket), in seconds.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count.load(Ordering::Relaxed);
        if total == 0 {
            return None;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "q in 0..=1 times a count; `as` saturates"
        )]
        let rank = (q * total as f64).ceil() as u64;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if c.load(Ordering::Relaxed) >= rank {
                return Some(*b);
            }
        }
        self.bounds.last().copied()
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Per-destination figures.
#[derive(Debug)]
pub struct DestinationMetrics {
    /// Objects confirmed by the destination.
    pub forwarded: AtomicU64,
    /// Bytes confirmed.
    pub forwarded_bytes: AtomicU64,
    /// Transient failures (retried).
    pub transient_failures: AtomicU64,
    /// Permanent refusals (quarantined).
    pub quarantined_total: AtomicU64,
    /// Objects waiting (gauge).
    pub queue_depth: AtomicU64,
    /// Age of the oldest waiting object in seconds (gauge).
    pub oldest_age_secs: AtomicU64,
    /// Objects in quarantine now (gauge).
    pub quarantined: AtomicU64,
    /// 1 when the destination answers, 0 from a failed contact until one succeeds again.
    pub up: AtomicU64,
    /// Time from taking an object to its confirmation.
    pub latency: Histogram,
    /// Time from the object's C-STORE success here (durable in the spool) to the destination's
    /// confirmation: queueing, retries and sending together — how late the archive has it.
    pub delivery: Histogram,
}

impl Default for DestinationMetrics {
    fn default() -> Self {
        DestinationMetrics {
            forwarded: AtomicU64::new(0),
            forwarded_bytes: AtomicU64::new(0),
            transient_failures: AtomicU64::new(0),
            quarantined_total: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
            oldest_age_secs: AtomicU64::new(0),
            quarantined: AtomicU64::new(0),
            up: AtomicU64::new(1),
            latency: Histogram::new(LATENCY_BUCKETS),
            delivery: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

/// Every metric of the appliance.
#[derive(Debug)]
pub struct Metrics {
    /// Associations accepted.
    pub associations_accepted: AtomicU64,
    /// Associations rejected (policy, busy, address).
    pub associations_rejected: AtomicU64,
    /// Associations aborted (by us or the peer) or broken.
    pub associations_aborted: AtomicU64,
    /// Associations open now.
    pub associations_active: AtomicU64,
    /// Objects stored durably.
    pub objects_received: AtomicU64,
    /// Bytes stored durably (Part 10 file sizes).
    pub bytes_received: AtomicU64,
    /// C-ECHO requests answered.
    pub echoes: AtomicU64,
    /// C-STORE failures sent, by status code.
    pub store_failures: Mutex<BTreeMap<u16, u64>>,
    /// Objects deleted by the retention policy.
    pub objects_evicted: AtomicU64,
    /// Objects confirmed by every destination they were queued for.
    pub objects_released: AtomicU64,
    /// Bytes of those objects.
    pub bytes_released: AtomicU64,
    /// Time to make one object durable (file fsync, rename, directory fsync, index).
    pub fsync_latency: Histogram,
    /// Spool figures (gauges), refreshed by the housekeeping task.
    pub spool_bytes: AtomicU64,
    /// Objects in the spool.
    pub spool_objects: AtomicU64,
    /// Spool segment files: in use, ready and written through, ready and allocated only.
    pub segments: [AtomicU64; 3],
    /// Free bytes on the spool's filesystem.
    pub disk_free_bytes: AtomicU64,
    /// Spool use in hundredths of a percent.
    pub spool_used_centipercent: AtomicU64,
    /// Per destination, in configuration order.
    pub destinations: BTreeMap<String, DestinationMetrics>,
    /// The studies that arrived lately: (calling AE, modality code) → when its last
    /// association that stored objects ended. For the update agent's "study still arriving".
    pub studies_seen: Mutex<BTreeMap<(String, String), std::time::Instant>>,
}

impl Metrics {
    /// Metrics for these destinations.
    pub fn new(destinations: &[String]) -> Self {
        Metrics {
            associations_accepted: AtomicU64::new(0),
            associations_rejected: AtomicU64::new(0),
            associations_aborted: AtomicU64::new(0),
            associations_active: AtomicU64::new(0),
            objects_received: AtomicU64::new(0),
            studies_seen: Mutex::new(BTreeMap::new()),
            bytes_received: AtomicU64::new(0),
            echoes: AtomicU64::new(0),
            store_failures: Mutex::new(BTreeMap::new()),
            objects_evicted: AtomicU64::new(0),
            objects_released: AtomicU64::new(0),
            bytes_released: AtomicU64::new(0),
            fsync_latency: Histogram::new(LATENCY_BUCKETS),
            spool_bytes: AtomicU64::new(0),
            spool_objects: AtomicU64::new(0),
            segments: Default::default(),
            disk_free_bytes: AtomicU64::new(0),
            spool_used_centipercent: AtomicU64::new(0),
            destinations: destinations
                .iter()
                .map(|d| (d.clone(), DestinationMetrics::default()))
                .collect(),
        }
    }

    /// Counts a failure status sent to a modality.
    pub fn store_failed(&self, status: u16) {
        let mut m = self
            .store_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *m.entry(status).or_insert(0) += 1;
    }

    /// An association of `calling_ae` stored objects of `modality` (a code, `OT` if unknown);
    /// keeps the 64 most recent senders.
    pub fn study_stored(&self, calling_ae: &str, modality: Option<&str>) {
        let mut seen = self.studies_seen.lock().unwrap_or_else(|p| p.into_inner());
        let modality = modality
            .filter(|m| crate::events::is_modality_code(m))
            .unwrap_or("OT");
        seen.insert(
            (calling_ae.to_owned(), modality.to_owned()),
            std::time::Instant::now(),
        );
        while seen.len() > 64 {
            let oldest = seen.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone());
            match oldest {
                Some(k) => seen.remove(&k),
                None => break,
            };
        }
    }

    /// The modalities that stored objects within `secs`, with how long ago (most recent first).
    pub fn studies_within(&self, secs: u64) -> Vec<(String, std::time::Duration)> {
        let seen = self.studies_seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = seen
            .iter()
            .map(|((_, m), t)| (m.clone(), t.elapsed()))
            .filter(|(_, ago)| ago.as_secs() < secs)
            .collect();
        out.sort_by_key(|(_, ago)| *ago);
        out
    }

    /// The Prometheus exposition.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(8192);
        let g = |o: &mut String, name: &str, kind: &str, help: &str, v: u64| {
            write_metric(o, name, kind, help, v);
        };
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        g(
            &mut o,
            "medgate_associations_accepted_total",
            "counter",
            "DICOM associations accepted.",
            ld(&self.associations_accepted),
        );
        g(
            &mut o,
            "medgate_associations_rejected_total",
            "counter",
            "DICOM associations rejected (policy, limit, address).",
            ld(&self.associations_rejected),
        );
        g(
            &mut o,
            "medgate_associations_aborted_total",
            "counter",
            "DICOM associations aborted or broken.",
            ld(&self.associations_aborted),
        );
        g(
            &mut o,
            "medgate_associations_active",
            "gauge",
            "DICOM associations open now.",
            ld(&self.associations_active),
        );
        g(
            &mut o,
            "medgate_objects_received_total",
            "counter",
            "Objects stored durably and acknowledged.",
            ld(&self.objects_received),
        );
        g(
            &mut o,
            "medgate_bytes_received_total",
            "counter",
            "Bytes stored durably and acknowledged.",
            ld(&self.bytes_received),
        );
        g(
            &mut o,
            "medgate_echoes_total",
            "counter",
            "C-ECHO requests answered.",
            ld(&self.echoes),
        );
        g(
            &mut o,
            "medgate_objects_evicted_total",
            "counter",
            "Confirmed objects deleted by the retention policy.",
            ld(&self.objects_evicted),
        );
        g(
            &mut o,
            "medgate_objects_released_total",
            "counter",
            "Objects confirmed by every destination they were queued for.",
            ld(&self.objects_released),
        );
        g(
            &mut o,
            "medgate_bytes_released_total",
            "counter",
            "Bytes of the objects confirmed by every destination.",
            ld(&self.bytes_released),
        );
        g(
            &mut o,
            "medgate_spool_bytes",
            "gauge",
            "Bytes of objects in the spool.",
            ld(&self.spool_bytes),
        );
        g(
            &mut o,
            "medgate_spool_objects",
            "gauge",
            "Objects in the spool.",
            ld(&self.spool_objects),
        );
        write_header(
            &mut o,
            "medgate_spool_segments",
            "gauge",
            "Spool segment files by state (ready_warm: written through, for the next burst).",
        );
        for (state, v) in ["in_use", "ready_warm", "ready_cold"]
            .iter()
            .zip(&self.segments)
        {
            o.push_str(&format!(
                "medgate_spool_segments{{state=\"{state}\"}} {}\n",
                ld(v)
            ));
        }
        g(
            &mut o,
            "medgate_disk_free_bytes",
            "gauge",
            "Free bytes on the spool filesystem.",
            ld(&self.disk_free_bytes),
        );
        write_metric(
            &mut o,
            "medgate_spool_used_percent",
            "gauge",
            "Spool use against its watermarks.",
            ld(&self.spool_used_centipercent) as f64 / 100.0,
        );
        write_header(
            &mut o,
            "medgate_store_failures_total",
            "counter",
            "C-STORE failure statuses sent to modalities.",
        );
        for (status, n) in self
            .store_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                o,
                "medgate_store_failures_total{{status=\"{status:04X}\"}} {n}"
            );
        }
        write_header(
            &mut o,
            "medgate_fsync_seconds",
            "histogram",
            "Time to make one received object durable.",
        );
        self.fsync_latency
            .render(&mut o, "medgate_fsync_seconds", "");
        type Field = fn(&DestinationMetrics) -> &AtomicU64;
        let series: [(&str, &str, &str, Field); 8] = [
            (
                "medgate_forwarded_objects_total",
                "counter",
                "Objects confirmed by the destination.",
                |d| &d.forwarded,
            ),
            (
                "medgate_forwarded_bytes_total",
                "counter",
                "Bytes confirmed by the destination.",
                |d| &d.forwarded_bytes,
            ),
            (
                "medgate_forward_transient_failures_total",
                "counter",
                "Transient forwarding failures (retried).",
                |d| &d.transient_failures,
            ),
            (
                "medgate_forward_quarantined_total",
                "counter",
                "Objects the destination refused permanently.",
                |d| &d.quarantined_total,
            ),
            (
                "medgate_queue_depth",
                "gauge",
                "Objects waiting for the destination.",
                |d| &d.queue_depth,
            ),
            (
                "medgate_queue_oldest_age_seconds",
                "gauge",
                "Age of the oldest object waiting for the destination.",
                |d| &d.oldest_age_secs,
            ),
            (
                "medgate_quarantine_objects",
                "gauge",
                "Objects in quarantine for the destination.",
                |d| &d.quarantined,
            ),
            (
                "medgate_destination_up",
                "gauge",
                "0 from a failed contact with the destination until a send succeeds again, else 1.",
                |d| &d.up,
            ),
        ];
        for (name, kind, help, f) in series {
            write_header(&mut o, name, kind, help);
            for (dest, m) in &self.destinations {
                let _ = writeln!(
                    o,
                    "{name}{{destination=\"{dest}\"}} {}",
                    f(m).load(Ordering::Relaxed)
                );
            }
        }
        write_header(
            &mut o,
            "medgate_forward_seconds",
            "histogram",
            "Time from taking an object to its confirmation.",
        );
        for (dest, m) in &self.destinations {
            m.latency.render(
                &mut o,
                "medgate_forward_seconds",
                &format!("destination=\"{dest}\""),
            );
        }
        write_header(
            &mut o,
            "medgate_delivery_seconds",
            "histogram",
            "Time from the C-STORE success given to the modality to the destination's confirmation.",
        );
        for (dest, m) in &self.destinations {
            m.delivery.render(
                &mut o,
                "medgate_delivery_seconds",
                &format!("destination=\"{dest}\""),
            );
        }
        o
    }
}

/// Seconds as whole milliseconds (rounded; negative and NaN as 0).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "`as` saturates and maps NaN to 0"
)]
pub fn secs_to_ms(secs: f64) -> u64 {
    (secs * 1000.0).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new(&["archive".to_string()]);
        m.objects_received.fetch_add(3, Ordering::Relaxed);
        m.store_failed(0xA700);
        m.fsync_latency.observe(Duration::from_micros(1500));
        let text = m.render();
        assert!(text.contains("medgate_objects_received_total 3"));
        assert!(text.contains("medgate_store_failures_total{status=\"A700\"} 1"));
        assert!(text.contains("medgate_fsync_seconds_bucket{le=\"0.002\"} 1"));
        assert!(text.contains("medgate_fsync_seconds_bucket{le=\"0.001\"} 0"));
        assert!(text.contains("medgate_queue_depth{destination=\"archive\"} 0"));
        assert!(text.contains("medgate_forward_seconds_count{destination=\"archive\"} 0"));
        assert!(text.contains("medgate_delivery_seconds_count{destination=\"archive\"} 0"));
    }

    #[test]
    fn quantiles() {
        let h = Histogram::new(LATENCY_BUCKETS);
        assert_eq!(h.quantile(0.5), None);
        for ms in [1, 1, 1, 40] {
            h.observe(Duration::from_millis(ms));
        }
        assert_eq!(h.quantile(0.5), Some(0.001));
        assert_eq!(h.quantile(0.99), Some(0.05));
    }
}
