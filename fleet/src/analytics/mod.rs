//! analytics (issue 13 part 2), sans-IO: what study events add to the rollup tables, and the
//! forwarding-delay histogram. The store writes a [`Rollup`] in the transaction that stored the
//! events it was made of (new events only, so a redelivered event is never counted twice) and
//! reads the tables back as the [`report`] types; [`history`] generates a region's year of
//! studies as events for the demo and the benchmark.
//!
//! Three tables, all sums, all keyed by site (the hospital the device belongs to):
//! - daily per (site, UTC day, modality, device): studies and images received, forwarded
//!   confirmations — every analytics page reads this one;
//! - per five minutes per (site, slot, modality): the same counts, kept [`RECENT_DAYS`] days —
//!   the wall's "today" (from local midnight) and "last hour" read this one;
//! - delay per (site, UTC day, bucket): how many forwarded studies took a delay in that bucket
//!   (log scale, [`bucket`]), so that p50/p95/p99 over any range of days is a sum and a walk.
//!
//! Days are UTC days: the fleet has no time-zone database, and a region's hospitals share one
//! zone; the wall's "today" is the screen's local day, from the five-minute slots.

pub mod history;
pub mod report;

use std::collections::BTreeMap;

use medgate_contract::{EventBody, Modality};

use crate::civil::Day;

/// How long five-minute slots are kept (days).
pub const RECENT_DAYS: i64 = 8;

/// A five-minute slot's length, milliseconds.
pub const SLOT_MS: i64 = 300_000;

/// Delay buckets per doubling: bucket `b` holds delays `d` with `b = floor(4 · log2(d + 1))`, so
/// a percentile read from the histogram is within 19 % (2^¼) of the true one.
pub const BUCKETS_PER_DOUBLING: f64 = 4.0;

/// The bucket of a delay in milliseconds.
pub fn bucket(delay_ms: u64) -> u32 {
    // f64 holds every delay below 2^53 ms (285 000 years) exactly enough for a log.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let b = ((delay_ms as f64 + 1.0).log2() * BUCKETS_PER_DOUBLING).floor() as u32;
    b
}

/// The largest delay (milliseconds) of bucket `b`: what a percentile in it is reported as, so a
/// reported delay is never below the true one.
pub fn bucket_upper_ms(b: u32) -> u64 {
    let upper = 2f64.powf(f64::from(b + 1) / BUCKETS_PER_DOUBLING) - 1.0;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ms = upper.floor().max(0.0) as u64;
    ms
}

/// The `q`-quantile (0 < q ≤ 1) of a histogram of (bucket, count), as the bucket's upper bound;
/// `None` when it is empty.
pub fn quantile(hist: &BTreeMap<u32, u64>, q: f64) -> Option<u64> {
    let total: u64 = hist.values().sum();
    if total == 0 {
        return None;
    }
    // The rank of the quantile, 1-based: the smallest value with at least q of the counts at or
    // below it.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0u64;
    for (b, n) in hist {
        seen = seen.saturating_add(*n);
        if seen >= rank {
            return Some(bucket_upper_ms(*b));
        }
    }
    hist.keys().next_back().map(|b| bucket_upper_ms(*b))
}

/// A modality as stored: its code, or `""` when the device did not know it.
pub fn modality_key(m: Option<&Modality>) -> String {
    m.map_or_else(String::new, |m| m.as_str().to_owned())
}

/// The figures one row of a rollup table sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Studies received (one per `study_received` event: a study, or the part of it one
    /// association carried).
    pub studies: u64,
    /// Images (objects) received.
    pub images: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Forwarding confirmations (one per study and destination).
    pub forwarded: u64,
    /// Images forwarded and confirmed.
    pub images_forwarded: u64,
    /// Bytes forwarded and confirmed.
    pub bytes_forwarded: u64,
}

impl Counts {
    /// Adds `o` to these counts (saturating).
    pub fn add(&mut self, o: &Counts) {
        self.studies = self.studies.saturating_add(o.studies);
        self.images = self.images.saturating_add(o.images);
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.forwarded = self.forwarded.saturating_add(o.forwarded);
        self.images_forwarded = self.images_forwarded.saturating_add(o.images_forwarded);
        self.bytes_forwarded = self.bytes_forwarded.saturating_add(o.bytes_forwarded);
    }

    /// What one study event counts, if it is one.
    pub fn of_event(e: &EventBody) -> Option<(Counts, Option<&Modality>)> {
        match e {
            EventBody::StudyReceived {
                modality, received, ..
            } => Some((
                Counts {
                    studies: 1,
                    images: received.objects,
                    bytes: received.bytes,
                    ..Counts::default()
                },
                modality.as_ref(),
            )),
            EventBody::StudyForwarded {
                modality,
                forwarded,
                ..
            } => Some((
                Counts {
                    forwarded: 1,
                    images_forwarded: forwarded.objects,
                    bytes_forwarded: forwarded.bytes,
                    ..Counts::default()
                },
                modality.as_ref(),
            )),
            _ => None,
        }
    }
}

/// A row of the daily table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DailyKey {
    /// The device's site.
    pub site: String,
    /// The event's UTC day.
    pub day: Day,
    /// [`modality_key`].
    pub modality: String,
    /// The device.
    pub device: String,
}

/// A row of the five-minute table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotKey {
    /// The device's site.
    pub site: String,
    /// The event's five-minute slot (`at_ms / SLOT_MS`).
    pub slot: i64,
    /// [`modality_key`].
    pub modality: String,
}

/// A row of the delay table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DelayKey {
    /// The device's site.
    pub site: String,
    /// The confirmation's UTC day.
    pub day: Day,
    /// [`bucket`] of the delay.
    pub bucket: u32,
}

/// What a set of events adds to the three tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollup {
    /// Daily rows.
    pub daily: BTreeMap<DailyKey, Counts>,
    /// Five-minute rows (only events within [`RECENT_DAYS`] of the `now` given to [`Rollup::add`]).
    pub slots: BTreeMap<SlotKey, Counts>,
    /// Delay rows: studies per bucket.
    pub delays: BTreeMap<DelayKey, u64>,
}

impl Rollup {
    /// Adds one event of `device` at `site`, stamped `at_ms` by the device; `now_ms` decides
    /// whether it is recent enough for the five-minute table. Returns whether it counted (study
    /// events only).
    pub fn add(
        &mut self,
        site: &str,
        device: &str,
        at_ms: i64,
        e: &EventBody,
        now_ms: i64,
    ) -> bool {
        let Some((c, modality)) = Counts::of_event(e) else {
            return false;
        };
        let modality = modality_key(modality);
        let day = Day::of_ms(at_ms);
        if at_ms >= now_ms.saturating_sub(RECENT_DAYS * Day::MS) {
            self.slots
                .entry(SlotKey {
                    site: site.to_owned(),
                    slot: at_ms.div_euclid(SLOT_MS),
                    modality: modality.clone(),
                })
                .or_default()
                .add(&c);
        }
        self.daily
            .entry(DailyKey {
                site: site.to_owned(),
                day,
                modality,
                device: device.to_owned(),
            })
            .or_default()
            .add(&c);
        if let EventBody::StudyForwarded { latency_ms, .. } = e {
            *self
                .delays
                .entry(DelayKey {
                    site: site.to_owned(),
                    day,
                    bucket: bucket(*latency_ms),
                })
                .or_default() += 1;
        }
        true
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.daily.is_empty() && self.slots.is_empty() && self.delays.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medgate_contract::{AeTitle, Flow, Token};

    fn received(modality: Option<&str>, objects: u64) -> EventBody {
        EventBody::StudyReceived {
            calling_ae: AeTitle::new("CT1").expect("ae"),
            called_ae: AeTitle::new("MEDGATE").expect("ae"),
            modality: modality.map(|m| Modality::new(m).expect("modality")),
            sop_classes: vec![],
            received: Flow {
                objects,
                bytes: objects * 1000,
            },
            duration_ms: 5,
        }
    }

    fn forwarded(objects: u64, latency_ms: u64) -> EventBody {
        EventBody::StudyForwarded {
            destination: Token::new("pacs").expect("token"),
            modality: Some(Modality::new("CT").expect("modality")),
            forwarded: Flow {
                objects,
                bytes: objects * 1000,
            },
            latency_ms,
            attempts: 1,
        }
    }

    #[test]
    fn buckets_grow_by_a_fourth_root_of_two_and_bound_their_delays() {
        assert_eq!(bucket(0), 0);
        for d in [
            0u64,
            1,
            2,
            7,
            100,
            999,
            1_000,
            60_000,
            86_400_000,
            u64::MAX / 4,
        ] {
            let b = bucket(d);
            assert!(bucket_upper_ms(b) >= d, "{d} above its bucket {b}");
            if b > 8 {
                // The bucket is at most 19 % wide.
                #[allow(clippy::cast_precision_loss)]
                let ratio = bucket_upper_ms(b) as f64 / (d as f64 + 1.0);
                assert!(ratio < 1.19 + 1e-9, "{d}: {ratio}");
            }
        }
        assert!(bucket(2_000) > bucket(1_000));
    }

    #[test]
    fn quantiles_are_read_from_the_histogram_conservatively() {
        let mut h = BTreeMap::new();
        assert_eq!(quantile(&h, 0.5), None);
        // 90 studies at ~100 ms, 9 at ~2 s, 1 at ~60 s.
        h.insert(bucket(100), 90);
        h.insert(bucket(2_000), 9);
        h.insert(bucket(60_000), 1);
        let p50 = quantile(&h, 0.5).expect("p50");
        let p95 = quantile(&h, 0.95).expect("p95");
        let p99 = quantile(&h, 0.99).expect("p99");
        let p100 = quantile(&h, 1.0).expect("max");
        assert!((100..=119).contains(&p50), "{p50}");
        assert!((2_000..=2_380).contains(&p95), "{p95}");
        assert_eq!(p99, p95, "the 99th of 100 is still in the 2 s bucket");
        assert!((60_000..=71_400).contains(&p100), "{p100}");
    }

    #[test]
    fn study_events_are_summed_per_day_device_modality_and_slot() {
        let now = Day::from_ymd(2026, 12, 1).start_ms() + 10 * 3_600_000;
        let mut r = Rollup::default();
        assert!(r.add("st-a", "ct-1", now - 1_000, &received(Some("CT"), 300), now));
        assert!(r.add("st-a", "ct-1", now - 2_000, &received(Some("CT"), 200), now));
        assert!(r.add("st-a", "ct-1", now - 500, &forwarded(300, 1_500), now));
        assert!(r.add("st-a", "us-1", now - 500, &received(None, 40), now));
        // Ten days ago: the daily table, not the five-minute one.
        assert!(r.add(
            "st-a",
            "ct-1",
            now - 10 * Day::MS,
            &received(Some("CT"), 10),
            now
        ));
        assert!(!r.add(
            "st-a",
            "ct-1",
            now,
            &EventBody::DiskWatermarkCrossed {
                watermark: medgate_contract::Watermark::High,
                crossing: medgate_contract::Crossing::Above,
                used_percent: 91,
            },
            now
        ));
        let today = Day::of_ms(now);
        let ct = &r.daily[&DailyKey {
            site: "st-a".into(),
            day: today,
            modality: "CT".into(),
            device: "ct-1".into(),
        }];
        assert_eq!(
            (
                ct.studies,
                ct.images,
                ct.bytes,
                ct.forwarded,
                ct.images_forwarded
            ),
            (2, 500, 500_000, 1, 300)
        );
        assert_eq!(
            r.daily[&DailyKey {
                site: "st-a".into(),
                day: today,
                modality: String::new(),
                device: "us-1".into(),
            }]
                .images,
            40
        );
        assert_eq!(r.daily.len(), 3);
        let slots: u64 = r.slots.values().map(|c| c.studies).sum();
        assert_eq!(slots, 3, "the old study is not in the recent slots");
        assert_eq!(r.delays.values().sum::<u64>(), 1);
        assert!(r.delays.keys().all(|k| k.bucket == bucket(1_500)));
    }
}
