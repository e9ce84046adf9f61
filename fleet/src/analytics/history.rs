//! analytics: a region's generated history — studies as the appliances would have reported them
//! (`study_received`, then `study_forwarded` once the archive confirmed), day by day, for the
//! demo's trends and the analytics benchmark. Deterministic for a seed; no IO: the caller
//! decides whether the events go into the events table or only into the rollups.
//!
//! The shape, from the region's figures: 1.57 million exams a year over 12 hospitals by default
//! (weekdays busier than weekends, a quieter August and Christmas, a day's studies mostly
//! between 07:00 and 19:00 UTC); per modality the images per study and bytes per image of its
//! kind (CT ~300 slices of 0.53 MB, DX 1–4 images of 10 MB, US multi-frame clips, ECG one
//! small object …); forwarding delays mostly around a second, with a tail of archive trouble.

use medgate_contract::{AeTitle, EventBody, Flow, Modality, Token};

use crate::civil::Day;

/// An appliance of the generated region and the modality in its room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedDevice {
    /// Site id.
    pub site: String,
    /// Device id.
    pub device: String,
    /// The modality it serves.
    pub modality: Modality,
}

/// What a modality's studies look like.
#[derive(Debug, Clone, Copy)]
struct Kind {
    /// Share of a hospital's studies done by one appliance of it (relative weight).
    weight: f64,
    /// Images per study, lowest and highest.
    images: (u64, u64),
    /// Bytes per image.
    bytes: u64,
}

fn kind(m: &str) -> Kind {
    let (weight, images, bytes) = match m {
        "CT" => (0.8, (120, 700), 530_000),
        "MR" => (0.5, (150, 600), 270_000),
        "DX" | "CR" => (1.0, (1, 4), 10_000_000),
        "US" => (0.7, (8, 60), 1_500_000),
        "MG" => (0.35, (4, 8), 25_000_000),
        "XA" | "RF" => (0.25, (20, 200), 1_000_000),
        "ES" => (0.2, (5, 40), 900_000),
        "ECG" => (0.5, (1, 1), 200_000),
        _ => (0.3, (1, 20), 1_000_000),
    };
    Kind {
        weight,
        images,
        bytes,
    }
}

/// The default region: `hospitals` hospitals (`hospital-01` …), each with 2 CT, 1 MR, 4 DX,
/// 3 US, 1 MG, 1 endoscopy and 2 ECG appliances.
pub fn region(hospitals: usize) -> Vec<SeedDevice> {
    const ROOMS: [(&str, usize); 7] = [
        ("CT", 2),
        ("MR", 1),
        ("DX", 4),
        ("US", 3),
        ("MG", 1),
        ("ES", 1),
        ("ECG", 2),
    ];
    let mut out = Vec::new();
    for h in 1..=hospitals {
        for (m, n) in ROOMS {
            for i in 1..=n {
                if let Ok(modality) = Modality::new(m) {
                    out.push(SeedDevice {
                        site: format!("hospital-{h:02}"),
                        device: format!("h{h:02}-{}-{i}", m.to_ascii_lowercase()),
                        modality,
                    });
                }
            }
        }
    }
    out
}

/// Hourly weights of a day's studies (UTC hours 0–23).
const HOURS: [f64; 24] = [
    0.4, 0.3, 0.3, 0.3, 0.3, 0.4, 0.8, 2.0, 4.0, 5.0, 5.0, 4.8, 4.0, 4.4, 4.8, 4.6, 4.0, 3.0, 2.0,
    1.4, 1.0, 0.8, 0.6, 0.5,
];

/// How busy a day is relative to the year's average day.
fn day_factor(day: Day) -> f64 {
    // 1970-01-01 was a Thursday: weekday 0 = Monday.
    let weekday = (day.days() + 3).rem_euclid(7);
    let week = if weekday >= 5 { 0.45 } else { 1.22 };
    let (_, m, d) = day.ymd();
    let season = match (m, d) {
        (8, _) => 0.8,
        (12, 24..=31) | (1, 1) => 0.6,
        (7, _) => 0.9,
        _ => 1.03,
    };
    week * season
}

/// The generator.
#[derive(Debug, Clone)]
pub struct History {
    devices: Vec<SeedDevice>,
    exams_per_day: f64,
    seed: u64,
    called: AeTitle,
    destination: Token,
}

/// A history that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// No appliance to give studies to.
    #[error("no appliance to generate studies for: register or simulate appliances first")]
    NoDevices,
}

impl History {
    /// A history of `exams_per_year` studies a year over `devices`.
    pub fn new(
        devices: Vec<SeedDevice>,
        exams_per_year: u64,
        seed: u64,
    ) -> Result<History, HistoryError> {
        if devices.is_empty() {
            return Err(HistoryError::NoDevices);
        }
        let called = AeTitle::new("MEDGATE").expect("a constant AE title");
        let destination = Token::new("archive").expect("a constant destination name");
        #[allow(clippy::cast_precision_loss)]
        let exams_per_day = exams_per_year as f64 / 365.0;
        Ok(History {
            devices,
            exams_per_day,
            seed,
            called,
            destination,
        })
    }

    /// The appliances.
    pub fn devices(&self) -> &[SeedDevice] {
        &self.devices
    }

    /// Every event of `day`: for each study its `study_received` at its time and its
    /// `study_forwarded` when the archive confirmed it, handed to `f` with the device and the
    /// event's time (the device's clock). Events with a time after `until_ms` are not made
    /// (today's history stops at now). Returns the studies made.
    pub fn day(
        &self,
        day: Day,
        until_ms: i64,
        mut f: impl FnMut(&SeedDevice, i64, &EventBody),
    ) -> u64 {
        let seed = self.seed
            ^ u64::try_from(day.days())
                .unwrap_or(0)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut rng = fastrand::Rng::with_seed(seed);
        let total_weight: f64 = self
            .devices
            .iter()
            .map(|d| kind(d.modality.as_str()).weight)
            .sum();
        let hours_total: f64 = HOURS.iter().sum();
        let mut made = 0u64;
        for d in &self.devices {
            let k = kind(d.modality.as_str());
            let mean = self.exams_per_day * day_factor(day) * k.weight / total_weight;
            // ±10 % day-to-day noise around the mean.
            let n = (mean * (0.9 + 0.2 * rng.f64())).round();
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let n = n.max(0.0) as u64;
            let calling = AeTitle::new(d.modality.as_str()).unwrap_or_else(|_| self.called.clone());
            for _ in 0..n {
                // The hour by the day's curve, then a time inside it.
                let mut pick = rng.f64() * hours_total;
                let mut hour = 23;
                for (h, w) in HOURS.iter().enumerate() {
                    if pick < *w {
                        hour = h;
                        break;
                    }
                    pick -= w;
                }
                let at = day.start_ms()
                    + i64::try_from(hour).unwrap_or(0) * 3_600_000
                    + rng.i64(0..3_600_000);
                if at > until_ms {
                    continue;
                }
                let images = rng.u64(k.images.0..=k.images.1);
                let flow = Flow {
                    objects: images,
                    bytes: images.saturating_mul(k.bytes),
                };
                let duration_ms = images.saturating_mul(rng.u64(20..200));
                f(
                    d,
                    at,
                    &EventBody::StudyReceived {
                        calling_ae: calling.clone(),
                        called_ae: self.called.clone(),
                        modality: Some(d.modality.clone()),
                        sop_classes: vec![],
                        received: flow,
                        duration_ms,
                    },
                );
                made += 1;
                // Mostly 0.2–3 s; 3 % a few minutes (a busy archive); 0.5 % hours (an outage).
                let r = rng.f64();
                let latency_ms = if r < 0.005 {
                    rng.u64(600_000..10_800_000)
                } else if r < 0.035 {
                    rng.u64(30_000..600_000)
                } else {
                    200 + rng.u64(0..800) + images.saturating_mul(rng.u64(1..8))
                };
                let confirmed = at.saturating_add(i64::try_from(latency_ms).unwrap_or(0));
                if confirmed > until_ms {
                    continue;
                }
                f(
                    d,
                    confirmed,
                    &EventBody::StudyForwarded {
                        destination: self.destination.clone(),
                        modality: Some(d.modality.clone()),
                        forwarded: flow,
                        latency_ms,
                        attempts: if latency_ms > 30_000 { 2 } else { 1 },
                    },
                );
            }
        }
        made
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_year_has_the_regions_volume_and_the_weeks_shape() {
        let h = History::new(region(12), 1_570_000, 7).expect("history");
        assert_eq!(h.devices().len(), 12 * 14);
        let first = Day::from_ymd(2026, 1, 1);
        let mut year = 0u64;
        let mut received = 0u64;
        for i in 0..365 {
            year += h.day(first.plus(i), i64::MAX, |_, _, e| {
                if matches!(e, EventBody::StudyReceived { .. }) {
                    received += 1;
                }
            });
        }
        assert_eq!(year, received);
        assert!((1_450_000..1_700_000).contains(&year), "{year}");
        // A Monday is busier than a Sunday; the same day twice is the same.
        let monday = Day::from_ymd(2026, 11, 30);
        let sunday = Day::from_ymd(2026, 11, 29);
        let count = |d| h.day(d, i64::MAX, |_, _, _| {});
        assert!(count(monday) > 2 * count(sunday));
        assert_eq!(count(monday), count(monday));
        // Nothing after `until`.
        let noon = monday.start_ms() + 12 * 3_600_000;
        let mut late = 0;
        h.day(monday, noon, |_, at, _| {
            if at > noon {
                late += 1;
            }
        });
        assert_eq!(late, 0);
        assert!(matches!(
            History::new(vec![], 1, 1),
            Err(HistoryError::NoDevices)
        ));
    }
}
