//! Unix milliseconds as a UTC calendar date and time of day (the proleptic Gregorian calendar,
//! Howard Hinnant's `civil_from_days`): for the console's times and the ATNA messages' times,
//! without a date-time crate.

/// A UTC date and time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    /// Year.
    pub year: i64,
    /// Month, 1-12.
    pub month: i64,
    /// Day of the month, 1-31.
    pub day: i64,
    /// Hour, 0-23.
    pub hour: i64,
    /// Minute, 0-59.
    pub minute: i64,
    /// Second, 0-59.
    pub second: i64,
    /// Millisecond, 0-999.
    pub milli: i64,
}

impl Utc {
    /// The date and time of `ms` (Unix milliseconds; before 1970 too).
    pub fn of_ms(ms: i64) -> Utc {
        let secs = ms.div_euclid(1000);
        let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        Utc {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: sod / 3600,
            minute: sod % 3600 / 60,
            second: sod % 60,
            milli: ms.rem_euclid(1000),
        }
    }
}

/// A UTC calendar day: days since 1970-01-01 (analytics' rollups are kept per UTC day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(i64);

/// A day that is not `YYYY-MM-DD`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a date: give YYYY-MM-DD, e.g. 2026-12-01")]
pub struct BadDay(pub String);

impl Day {
    /// Milliseconds in a day.
    pub const MS: i64 = 86_400_000;

    /// The day `n` days after 1970-01-01.
    pub fn from_days(n: i64) -> Day {
        Day(n)
    }

    /// The UTC day of `ms` (Unix milliseconds).
    pub fn of_ms(ms: i64) -> Day {
        Day(ms.div_euclid(Day::MS))
    }

    /// Days since 1970-01-01 (the stored form).
    pub fn days(self) -> i64 {
        self.0
    }

    /// Its first millisecond.
    pub fn start_ms(self) -> i64 {
        self.0.saturating_mul(Day::MS)
    }

    /// `n` days later (earlier when negative).
    pub fn plus(self, n: i64) -> Day {
        Day(self.0.saturating_add(n))
    }

    /// Year, month, day.
    pub fn ymd(self) -> (i64, i64, i64) {
        let t = Utc::of_ms(self.start_ms());
        (t.year, t.month, t.day)
    }

    /// January 1st of its year.
    pub fn year_start(self) -> Day {
        let (y, _, _) = self.ymd();
        Day::from_ymd(y, 1, 1)
    }

    /// The day of a calendar date (Howard Hinnant's `days_from_civil`); month 1-12, day 1-31,
    /// not checked here.
    pub fn from_ymd(year: i64, month: i64, day: i64) -> Day {
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = if month > 2 { month - 3 } else { month + 9 };
        let doy = (153 * m + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Day(era * 146_097 + doe - 719_468)
    }

    /// Parses `YYYY-MM-DD` (a real date: 2026-02-30 is refused).
    pub fn parse(s: &str) -> Result<Day, BadDay> {
        let bad = || BadDay(s.to_owned());
        let t = s.trim();
        let mut it = t.splitn(3, '-');
        let mut num = |len: usize| -> Result<i64, BadDay> {
            let p = it.next().ok_or_else(bad)?;
            if p.len() != len || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let (y, m, d) = (num(4)?, num(2)?, num(2)?);
        if !(1..=12).contains(&m) || d < 1 {
            return Err(bad());
        }
        let day = Day::from_ymd(y, m, d);
        if day.ymd() != (y, m, d) {
            return Err(bad());
        }
        Ok(day)
    }
}

/// Parses `YYYY-MM-DD HH:MM` (or with `T`) as a UTC minute; its Unix milliseconds.
pub fn parse_utc_minute(s: &str) -> Option<u64> {
    let (day, time) = s.trim().split_once([' ', 'T'])?;
    let day = Day::parse(day).ok()?;
    let (h, m) = time.trim().split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    if !(0..24).contains(&h) || !(0..60).contains(&m) {
        return None;
    }
    u64::try_from(day.start_ms() + (h * 60 + m) * 60_000).ok()
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl serde::Serialize for Day {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_utc_minute_reads_with_a_space_or_a_t() {
        assert_eq!(parse_utc_minute("1970-01-01 00:01"), Some(60_000));
        assert_eq!(
            parse_utc_minute("2026-12-10T06:00"),
            parse_utc_minute("2026-12-10 06:00")
        );
        assert_eq!(
            parse_utc_minute("2026-12-10 06:00"),
            u64::try_from(Day::parse("2026-12-10").expect("day").start_ms() + 6 * 3_600_000).ok()
        );
        for bad in [
            "2026-12-10",
            "2026-12-10 24:00",
            "2026-02-30 01:00",
            "x 01:00",
            "2026-12-10 6",
        ] {
            assert_eq!(parse_utc_minute(bad), None, "{bad}");
        }
    }

    #[test]
    fn dates_around_the_epoch_and_leap_days() {
        let t = Utc::of_ms(1_796_210_343_123);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second, t.milli),
            (2026, 12, 2, 11, 19, 3, 123)
        );
        let leap = Utc::of_ms(951_782_400_000); // 2000-02-29
        assert_eq!((leap.year, leap.month, leap.day), (2000, 2, 29));
        let before = Utc::of_ms(-1);
        assert_eq!(
            (
                before.year,
                before.month,
                before.day,
                before.hour,
                before.milli
            ),
            (1969, 12, 31, 23, 999)
        );
    }

    #[test]
    fn days_round_trip_and_refuse_what_is_not_a_date() {
        assert_eq!(Day::from_ymd(1970, 1, 1).days(), 0);
        assert_eq!(Day::from_ymd(2000, 3, 1).days(), 11_017);
        for n in [-800_000, -1, 0, 59, 60, 10_957, 20_788, 2_932_896] {
            let d = Day::from_days(n);
            let (y, m, dd) = d.ymd();
            assert_eq!(Day::from_ymd(y, m, dd), d, "{n}");
            if (0..=9999).contains(&y) {
                assert_eq!(Day::parse(&d.to_string()), Ok(d), "{d}");
            }
        }
        assert_eq!(Day::of_ms(-1).days(), -1);
        assert_eq!(
            Day::parse("2026-12-01").map(|d| d.to_string()),
            Ok("2026-12-01".into())
        );
        assert_eq!(Day::parse("2024-02-29").map(|d| d.ymd()), Ok((2024, 2, 29)));
        for bad in [
            "2026-02-30",
            "2025-02-29",
            "2026-13-01",
            "2026-1-01",
            "26-01-01",
            "2026-01-01x",
            "",
            "x",
        ] {
            assert!(Day::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Day::parse("2026-12-09")
                .map(Day::year_start)
                .map(|d| d.to_string()),
            Ok("2026-01-01".into())
        );
    }
}
