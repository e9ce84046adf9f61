//! analytics: what the queries answer, and the pure steps from rows to those answers (a trend's
//! missing days filled with zeros, percentiles from summed histograms). Serialised as they are
//! by the REST API (`/api/v1/analytics/…`) and rendered by the console's Analytics pages.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::{Counts, quantile};
use crate::civil::{BadDay, Day};

/// The longest range a query takes (days): two years.
pub const MAX_DAYS: i64 = 731;

/// The longest range of the per-day, per-modality table (days): a quarter — a year of it is
/// some 30 000 rows for a region, a download rather than an answer; the trend covers years.
pub const MAX_DAILY_DAYS: i64 = 92;

/// A range of UTC days, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Period {
    /// First day.
    #[schema(value_type = String, format = Date)]
    pub from: Day,
    /// Last day.
    #[schema(value_type = String, format = Date)]
    pub to: Day,
}

/// A range that cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPeriod {
    /// A date that is not one.
    #[error("{0}")]
    Day(#[from] BadDay),
    /// `to` before `from`.
    #[error("the range ends ({to}) before it starts ({from}): give from <= to")]
    Reversed {
        /// First day.
        from: Day,
        /// Last day.
        to: Day,
    },
    /// Too long.
    #[error("the range has {0} days; at most {MAX_DAYS} (two years) are answered at once")]
    TooLong(i64),
    /// Too long for the per-day table.
    #[error(
        "the range has {0} days; the per-day table answers at most {MAX_DAILY_DAYS} days at once (ask for the trend for longer ranges, or several quarters)"
    )]
    TooLongForDaily(i64),
    /// `days` not a count.
    #[error("days={0:?}: give a number of days from 1 to {MAX_DAYS}, e.g. 7, 30 or 365")]
    Days(String),
}

impl Period {
    /// The `days` days that end with `today`.
    pub fn last(days: i64, today: Day) -> Period {
        let days = days.clamp(1, MAX_DAYS);
        Period {
            from: today.plus(1 - days),
            to: today,
        }
    }

    /// From a query's `from`, `to` (YYYY-MM-DD) and `days` (used when `from` is absent; default
    /// `default_days`); `to` defaults to `today`.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        days: Option<&str>,
        default_days: i64,
        today: Day,
    ) -> Result<Period, BadPeriod> {
        fn nonempty(s: Option<&str>) -> Option<&str> {
            s.map(str::trim).filter(|s| !s.is_empty())
        }
        let to = match nonempty(to) {
            Some(t) => Day::parse(t)?,
            None => today,
        };
        let p = match (nonempty(from), nonempty(days)) {
            (Some(f), _) => Period {
                from: Day::parse(f)?,
                to,
            },
            (None, Some(d)) => {
                let n: i64 = d.parse().map_err(|_| BadPeriod::Days(d.to_owned()))?;
                if !(1..=MAX_DAYS).contains(&n) {
                    return Err(BadPeriod::Days(d.to_owned()));
                }
                Period::last(n, to)
            }
            (None, None) => Period::last(default_days, to),
        };
        if p.to < p.from {
            return Err(BadPeriod::Reversed {
                from: p.from,
                to: p.to,
            });
        }
        let n = p.days();
        if n > MAX_DAYS {
            return Err(BadPeriod::TooLong(n));
        }
        Ok(p)
    }

    /// Itself, if short enough for the per-day table.
    pub fn for_daily(self) -> Result<Period, BadPeriod> {
        match self.days() {
            n if n > MAX_DAILY_DAYS => Err(BadPeriod::TooLongForDaily(n)),
            _ => Ok(self),
        }
    }

    /// Its number of days.
    pub fn days(self) -> i64 {
        self.to.days() - self.from.days() + 1
    }

    /// Each of its days, in order.
    pub fn each(self) -> impl Iterator<Item = Day> {
        (self.from.days()..=self.to.days()).map(Day::from_days)
    }
}

/// Counts as the API shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Figures {
    /// Studies received (a study, or the part of it one association carried).
    pub studies: u64,
    /// Images (DICOM objects) received.
    pub images: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Forwarding confirmations by the archive (one per study and destination).
    pub forwarded: u64,
    /// Images the archive confirmed.
    pub images_forwarded: u64,
}

impl From<Counts> for Figures {
    fn from(c: Counts) -> Figures {
        Figures {
            studies: c.studies,
            images: c.images,
            bytes: c.bytes,
            forwarded: c.forwarded,
            images_forwarded: c.images_forwarded,
        }
    }
}

/// One hospital's figures of one day and modality.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DayRow {
    /// The day.
    #[schema(value_type = String, format = Date)]
    pub day: Day,
    /// The site (hospital) id.
    pub site: String,
    /// The modality code, `""` when the appliance did not know it.
    pub modality: String,
    /// The figures.
    #[serde(flatten)]
    pub figures: Figures,
}

/// `GET /api/v1/analytics/daily`: per hospital, day and modality.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Daily {
    /// The range.
    pub period: Period,
    /// Rows by day, then site, then modality.
    pub rows: Vec<DayRow>,
}

/// One hospital's series in a trend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TrendSeries {
    /// The site id.
    pub site: String,
    /// Studies per day, one per day of the period (0 when none).
    pub studies: Vec<u64>,
    /// Images per day.
    pub images: Vec<u64>,
}

/// `GET /api/v1/analytics/trend`: studies and images per day per hospital.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Trend {
    /// The range.
    pub period: Period,
    /// The days, in order.
    #[schema(value_type = Vec<String>)]
    pub days: Vec<Day>,
    /// Per hospital, by site id.
    pub sites: Vec<TrendSeries>,
    /// The region's studies per day.
    pub studies: Vec<u64>,
    /// The region's images per day.
    pub images: Vec<u64>,
}

impl Trend {
    /// From (site, day, counts) rows: one series per site, every day of the period present.
    pub fn of(period: Period, rows: &[(String, Day, Counts)]) -> Trend {
        let days: Vec<Day> = period.each().collect();
        let n = days.len();
        let index = |d: Day| usize::try_from(d.days() - period.from.days()).ok();
        let mut sites: BTreeMap<&str, TrendSeries> = BTreeMap::new();
        let (mut studies, mut images) = (vec![0u64; n], vec![0u64; n]);
        for (site, day, c) in rows {
            let Some(i) = index(*day).filter(|i| *i < n) else {
                continue;
            };
            let s = sites.entry(site).or_insert_with(|| TrendSeries {
                site: site.clone(),
                studies: vec![0; n],
                images: vec![0; n],
            });
            s.studies[i] = s.studies[i].saturating_add(c.studies);
            s.images[i] = s.images[i].saturating_add(c.images);
            studies[i] = studies[i].saturating_add(c.studies);
            images[i] = images[i].saturating_add(c.images);
        }
        Trend {
            period,
            days,
            sites: sites.into_values().collect(),
            studies,
            images,
        }
    }
}

/// How many appliances of a hospital received studies of a modality.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct MixRow {
    /// The site id.
    pub site: String,
    /// The modality code (`""`: not known).
    pub modality: String,
    /// Appliances that received studies of it in the period.
    pub devices: u64,
    /// Their studies in the period.
    pub studies: u64,
}

/// `GET /api/v1/analytics/devices`: the device distribution by hospital and modality.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Devices {
    /// The range.
    pub period: Period,
    /// Appliances registered (approved) per site, whether or not they received anything.
    pub registered: BTreeMap<String, u64>,
    /// Per site and modality.
    pub rows: Vec<MixRow>,
}

/// One hospital's forwarding delay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DelayRow {
    /// The site id.
    pub site: String,
    /// Forwarding confirmations measured.
    pub confirmations: u64,
    /// Median delay from C-STORE success at the appliance to the archive's confirmation, ms
    /// (the upper bound of its histogram bucket: within 19 %, never below).
    pub p50_ms: Option<u64>,
    /// 95th percentile, ms.
    pub p95_ms: Option<u64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<u64>,
}

impl DelayRow {
    /// From a site's summed histogram.
    pub fn of(site: String, hist: &BTreeMap<u32, u64>) -> DelayRow {
        DelayRow {
            site,
            confirmations: hist.values().sum(),
            p50_ms: quantile(hist, 0.50),
            p95_ms: quantile(hist, 0.95),
            p99_ms: quantile(hist, 0.99),
        }
    }
}

/// `GET /api/v1/analytics/delay`: forwarding delay per hospital.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Delays {
    /// The range.
    pub period: Period,
    /// Per site, by site id.
    pub sites: Vec<DelayRow>,
    /// The whole region's.
    pub region: DelayRow,
}

impl Delays {
    /// From (site, bucket, count) rows.
    pub fn of(period: Period, rows: &[(String, u32, u64)]) -> Delays {
        let mut per: BTreeMap<&str, BTreeMap<u32, u64>> = BTreeMap::new();
        let mut all: BTreeMap<u32, u64> = BTreeMap::new();
        for (site, b, n) in rows {
            *per.entry(site).or_default().entry(*b).or_default() += n;
            *all.entry(*b).or_default() += n;
        }
        Delays {
            period,
            sites: per
                .into_iter()
                .map(|(s, h)| DelayRow::of(s.to_owned(), &h))
                .collect(),
            region: DelayRow::of("region".into(), &all),
        }
    }
}

/// One hospital's year.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SiteYear {
    /// The site id.
    pub site: String,
    /// Its figures.
    #[serde(flatten)]
    pub figures: Figures,
}

/// `GET /api/v1/analytics/overview`: the region this year.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Overview {
    /// The year.
    pub year: i64,
    /// From January 1st to today.
    pub period: Period,
    /// The region's figures.
    pub region: Figures,
    /// Per hospital.
    pub sites: Vec<SiteYear>,
}

impl Overview {
    /// From per-site counts.
    pub fn of(period: Period, rows: Vec<(String, Counts)>) -> Overview {
        let mut region = Counts::default();
        for (_, c) in &rows {
            region.add(c);
        }
        Overview {
            year: period.from.ymd().0,
            period,
            region: region.into(),
            sites: rows
                .into_iter()
                .map(|(site, c)| SiteYear {
                    site,
                    figures: c.into(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::bucket;

    fn day(s: &str) -> Day {
        Day::parse(s).expect("day")
    }

    #[test]
    fn periods_from_the_query_with_their_errors_in_words() {
        let today = day("2026-12-01");
        let p = Period::parse(None, None, None, 30, today).expect("default");
        assert_eq!((p.from, p.to, p.days()), (day("2026-11-02"), today, 30));
        let p = Period::parse(None, None, Some("7"), 30, today).expect("days");
        assert_eq!(p.from, day("2026-11-25"));
        let p =
            Period::parse(Some("2026-01-01"), Some("2026-01-31"), None, 30, today).expect("range");
        assert_eq!(p.days(), 31);
        assert!(matches!(
            Period::parse(Some("2026-02-01"), Some("2026-01-31"), None, 30, today),
            Err(BadPeriod::Reversed { .. })
        ));
        assert!(matches!(
            Period::parse(Some("2020-01-01"), None, None, 30, today),
            Err(BadPeriod::TooLong(_))
        ));
        for bad in ["0", "-3", "x", "732"] {
            let e = Period::parse(None, None, Some(bad), 30, today).expect_err(bad);
            assert!(e.to_string().contains("give a number of days"), "{e}");
        }
        assert!(Period::last(92, today).for_daily().is_ok());
        let e = Period::last(93, today).for_daily().expect_err("long");
        assert!(e.to_string().contains("at most 92 days"), "{e}");
        let e = Period::parse(Some("2026-02-30"), None, None, 30, today).expect_err("date");
        assert!(e.to_string().contains("YYYY-MM-DD"), "{e}");
    }

    #[test]
    fn a_trend_has_every_day_and_sums_the_region() {
        let p = Period::parse(
            Some("2026-11-28"),
            Some("2026-12-01"),
            None,
            7,
            day("2026-12-01"),
        )
        .expect("period");
        let c = |studies, images| Counts {
            studies,
            images,
            ..Counts::default()
        };
        let rows = vec![
            ("st-a".to_string(), day("2026-11-28"), c(10, 100)),
            ("st-b".to_string(), day("2026-11-28"), c(1, 2)),
            ("st-a".to_string(), day("2026-12-01"), c(5, 50)),
            ("st-a".to_string(), day("2026-10-01"), c(99, 99)),
        ];
        let t = Trend::of(p, &rows);
        assert_eq!(t.days.len(), 4);
        assert_eq!(t.studies, vec![11, 0, 0, 5]);
        assert_eq!(t.images, vec![102, 0, 0, 50]);
        assert_eq!(t.sites.len(), 2);
        assert_eq!(t.sites[0].studies, vec![10, 0, 0, 5]);
        assert_eq!(t.sites[1].images, vec![2, 0, 0, 0]);
    }

    #[test]
    fn delays_sum_histograms_per_site_and_for_the_region() {
        let p = Period::last(7, day("2026-12-01"));
        let rows = vec![
            ("st-a".to_string(), bucket(100), 98u64),
            ("st-a".to_string(), bucket(5_000), 2),
            ("st-b".to_string(), bucket(400), 100),
        ];
        let d = Delays::of(p, &rows);
        assert_eq!(d.sites.len(), 2);
        assert_eq!(d.sites[0].confirmations, 100);
        assert!(d.sites[0].p50_ms.is_some_and(|v| (100..120).contains(&v)));
        assert!(
            d.sites[0]
                .p99_ms
                .is_some_and(|v| (5_000..5_950).contains(&v))
        );
        assert_eq!(d.region.confirmations, 200);
        // 98 at ~100 ms, 100 at ~400 ms, 2 at ~5 s: the median and the 99th are both ~400 ms.
        assert!(d.region.p50_ms.is_some_and(|v| (400..476).contains(&v)));
        assert!(d.region.p99_ms.is_some_and(|v| (400..476).contains(&v)));
        let empty = Delays::of(p, &[]);
        assert_eq!((empty.region.confirmations, empty.region.p50_ms), (0, None));
    }
}
