//! A site's maintenance window in its local time, as the UTC window an offer carries.
//!
//! The local time is the site's time zone (the Sites page's IANA name, read from the system's
//! time zone database by [`crate::tz`]) unless the window gives a fixed UTC offset. The UTC
//! window is the one of the window's next opening, so it follows daylight saving time: when a
//! site's offset changes, the campaign's tick publishes its offers again.

use crate::tz::Zone;
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
    /// A fixed offset from UTC in minutes (-720 to +840), e.g. 60 for UTC+01:00; none: the
    /// site's time zone, daylight saving time included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utc_offset_minutes: Option<i16>,
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
    /// Neither an offset nor a time zone for the site.
    #[error(
        "window of site {site}: its local time is not known; set the site's time zone (Sites page) or give utc_offset_minutes"
    )]
    NoTimeZone {
        /// The site.
        site: String,
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
    /// Checks the window and converts it at `now_secs` (Unix): the UTC minute of its next
    /// opening (or of the opening it is in) and its length. `zone` is the site's time zone,
    /// used when the window gives no offset.
    pub fn to_utc(&self, zone: Option<&Zone>, now_secs: i64) -> Result<UtcWindow, WindowError> {
        let site = self.site.to_string();
        let local = parse_hhmm(&self.start).ok_or_else(|| WindowError::Start {
            site: site.clone(),
            start: self.start.clone(),
        })?;
        if self.minutes == 0 || i32::from(self.minutes) > DAY_MINUTES {
            return Err(WindowError::Length {
                site,
                minutes: self.minutes,
            });
        }
        let offset = match (self.utc_offset_minutes, zone) {
            (Some(o), _) => {
                if !(-720..=840).contains(&o) {
                    return Err(WindowError::Offset { site, offset: o });
                }
                o
            }
            (None, Some(z)) => next_opening_offset(z, local, self.minutes, now_secs),
            (None, None) => return Err(WindowError::NoTimeZone { site }),
        };
        let start = (local - i32::from(offset)).rem_euclid(DAY_MINUTES);
        Ok(UtcWindow {
            start_minute: u16::try_from(start).unwrap_or(0),
            minutes: self.minutes,
        })
    }
}

/// The zone's offset (minutes) at the window's next opening after `now` — or at the opening of
/// the window `now` is in — found by guessing with the offset now and checking once more.
fn next_opening_offset(zone: &Zone, local: i32, minutes: u16, now: i64) -> i16 {
    let mut offset = zone.offset_minutes_at(now);
    for _ in 0..2 {
        let day = now.div_euclid(86_400) * 86_400;
        let utc_min = i64::from((local - i32::from(offset)).rem_euclid(DAY_MINUTES));
        // The opening on this UTC day, or the day before when that one is still open.
        let mut opening = day + utc_min * 60;
        if opening > now && opening - 86_400 + i64::from(minutes) * 60 > now {
            opening -= 86_400;
        }
        if opening + i64::from(minutes) * 60 <= now {
            opening += 86_400;
        }
        offset = zone.offset_minutes_at(opening);
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(offset: i16, start: &str, minutes: u16) -> SiteWindow {
        SiteWindow {
            site: SiteId::new("oslo").expect("site"),
            utc_offset_minutes: Some(offset),
            start: start.into(),
            minutes,
        }
    }

    fn utc(w: &SiteWindow) -> Result<UtcWindow, WindowError> {
        w.to_utc(None, 0)
    }

    #[test]
    fn a_window_in_the_sites_time_zone_follows_daylight_saving_time() {
        let oslo = Zone::load("Europe/Oslo").expect("tzdata");
        let zoned = SiteWindow {
            utc_offset_minutes: None,
            ..w(0, "22:00", 240)
        };
        // 2026-03-28 12:00 UTC: tonight's 22:00 is still winter time (+01:00) → 21:00 UTC.
        let saturday = 1_774_699_200;
        assert_eq!(
            zoned.to_utc(Some(&oslo), saturday).map(|u| u.start_minute),
            Ok(21 * 60)
        );
        // 2026-03-29 12:00 UTC: summer time (+02:00) → 20:00 UTC.
        assert_eq!(
            zoned
                .to_utc(Some(&oslo), saturday + 86_400)
                .map(|u| u.start_minute),
            Ok(20 * 60)
        );
        // Inside tonight's window (23:30 UTC) it stays the window it is in.
        assert_eq!(
            zoned
                .to_utc(Some(&oslo), saturday + 11 * 3600 + 1800)
                .map(|u| u.start_minute),
            Ok(21 * 60)
        );
        // A fixed offset wins over the zone; neither: refused with what to do.
        assert_eq!(
            w(60, "22:00", 240)
                .to_utc(Some(&oslo), saturday + 86_400)
                .map(|u| u.start_minute),
            Ok(21 * 60)
        );
        let e = zoned.to_utc(None, saturday).expect_err("no zone");
        assert!(e.to_string().contains("set the site's time zone"), "{e}");
    }

    #[test]
    fn local_windows_become_utc() {
        // 22:30 at UTC+01:00 is 21:30 UTC.
        assert_eq!(
            utc(&w(60, "22:30", 120)),
            Ok(UtcWindow {
                start_minute: 21 * 60 + 30,
                minutes: 120
            })
        );
        // 00:30 at UTC+02:00 is 22:30 UTC the day before.
        assert_eq!(utc(&w(120, "00:30", 60)).map(|u| u.start_minute), Ok(1350));
        // 23:00 at UTC-05:00 is 04:00 UTC the next day.
        assert_eq!(utc(&w(-300, "23:00", 60)).map(|u| u.start_minute), Ok(240));
        assert_eq!(utc(&w(0, "0:00", 1440)).map(|u| u.minutes), Ok(1440));
    }

    #[test]
    fn wrong_windows_are_refused_with_what_to_give() {
        for bad in ["24:00", "12:60", "noon", "12", "12:5", ""] {
            let e = utc(&w(0, bad, 60)).expect_err(bad);
            assert!(e.to_string().contains("HH:MM"), "{e}");
        }
        assert!(matches!(
            utc(&w(900, "01:00", 60)),
            Err(WindowError::Offset { .. })
        ));
        assert!(matches!(
            utc(&w(0, "01:00", 0)),
            Err(WindowError::Length { .. })
        ));
        assert!(matches!(
            utc(&w(0, "01:00", 1441)),
            Err(WindowError::Length { .. })
        ));
    }
}
