//! A site's maintenance window in its local time, as the UTC window an offer carries.
//!
//! The fleet carries no time zone database (see [`crate::ops::fleet::TimeZone`]): a window is
//! given with the site's UTC offset in minutes (`+60` for Europe/Oslo in winter). When the
//! site's offset changes (daylight saving time), the campaign's window is edited and the
//! offers are published again.

use medgate_contract::{SiteId, UtcWindow};
use serde::{Deserialize, Serialize};

/// Minutes in a day.
const DAY_MINUTES: i32 = 1440;

/// A daily maintenance window of one site, in its local time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteWindow {
    /// The site.
    #[schema(value_type = String)]
    pub site: SiteId,
    /// The site's offset from UTC in minutes (-720 to +840), e.g. 60 for UTC+01:00.
    pub utc_offset_minutes: i16,
    /// Local opening time, `HH:MM` (24 h).
    pub start: String,
    /// How long it stays open, minutes (1-1440).
    pub minutes: u16,
}

/// A window that does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// The start is not `HH:MM`.
    #[error(
        "window of site {site}: start {start:?} is not a local time; give HH:MM (24 h), e.g. 22:30"
    )]
    Start {
        /// The site.
        site: String,
        /// What was given.
        start: String,
    },
    /// The offset is outside -12:00..+14:00.
    #[error(
        "window of site {site}: utc_offset_minutes {offset} is not a UTC offset; give -720 to 840 (60 for UTC+01:00)"
    )]
    Offset {
        /// The site.
        site: String,
        /// What was given.
        offset: i16,
    },
    /// The length is 0 or more than a day.
    #[error("window of site {site}: minutes {minutes} must be 1 to 1440 (a whole day)")]
    Length {
        /// The site.
        site: String,
        /// What was given.
        minutes: u16,
    },
}

fn parse_hhmm(s: &str) -> Option<i32> {
    let (h, m) = s.trim().split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: i32 = h.parse().ok()?;
    let m: i32 = m.parse().ok()?;
    ((0..24).contains(&h) && (0..60).contains(&m)).then_some(h * 60 + m)
}

impl SiteWindow {
    /// Checks the window and converts it: the UTC minute it opens and its length.
    pub fn to_utc(&self) -> Result<UtcWindow, WindowError> {
        let site = self.site.to_string();
        let local = parse_hhmm(&self.start).ok_or_else(|| WindowError::Start {
            site: site.clone(),
            start: self.start.clone(),
        })?;
        if !(-720..=840).contains(&self.utc_offset_minutes) {
            return Err(WindowError::Offset {
                site,
                offset: self.utc_offset_minutes,
            });
        }
        if self.minutes == 0 || i32::from(self.minutes) > DAY_MINUTES {
            return Err(WindowError::Length {
                site,
                minutes: self.minutes,
            });
        }
        let start = (local - i32::from(self.utc_offset_minutes)).rem_euclid(DAY_MINUTES);
        Ok(UtcWindow {
            start_minute: u16::try_from(start).unwrap_or(0),
            minutes: self.minutes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(offset: i16, start: &str, minutes: u16) -> SiteWindow {
        SiteWindow {
            site: SiteId::new("oslo").expect("site"),
            utc_offset_minutes: offset,
            start: start.into(),
            minutes,
        }
    }

    #[test]
    fn local_windows_become_utc() {
        // 22:30 at UTC+01:00 is 21:30 UTC.
        assert_eq!(
            w(60, "22:30", 120).to_utc(),
            Ok(UtcWindow {
                start_minute: 21 * 60 + 30,
                minutes: 120
            })
        );
        // 00:30 at UTC+02:00 is 22:30 UTC the day before.
        assert_eq!(
            w(120, "00:30", 60).to_utc().map(|u| u.start_minute),
            Ok(1350)
        );
        // 23:00 at UTC-05:00 is 04:00 UTC the next day.
        assert_eq!(
            w(-300, "23:00", 60).to_utc().map(|u| u.start_minute),
            Ok(240)
        );
        assert_eq!(w(0, "0:00", 1440).to_utc().map(|u| u.minutes), Ok(1440));
    }

    #[test]
    fn wrong_windows_are_refused_with_what_to_give() {
        for bad in ["24:00", "12:60", "noon", "12", "12:5", ""] {
            let e = w(0, bad, 60).to_utc().expect_err(bad);
            assert!(e.to_string().contains("HH:MM"), "{e}");
        }
        assert!(matches!(
            w(900, "01:00", 60).to_utc(),
            Err(WindowError::Offset { .. })
        ));
        assert!(matches!(
            w(0, "01:00", 0).to_utc(),
            Err(WindowError::Length { .. })
        ));
        assert!(matches!(
            w(0, "01:00", 1441).to_utc(),
            Err(WindowError::Length { .. })
        ));
    }
}
