//! A site's UTC offset at an instant, from the system's time zone database (TZif files, RFC
//! 8536, as Debian's `tzdata` installs them under `/usr/share/zoneinfo`): what turns a
//! maintenance window in a hospital's local time into the UTC window an offer carries, right
//! across daylight saving time.
//!
//! [`Zone::from_tzif`] is pure (bytes in, transitions out); [`Zone::load`] reads the file of a
//! checked IANA name. Instants after the file's last transition keep its last offset: Debian
//! ships "fat" files whose transitions run to 2037; the POSIX rule in the footer is not applied.

use std::path::Path;

/// Where the system's time zone files are.
pub const ZONEINFO: &str = "/usr/share/zoneinfo";

/// Why a time zone cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TzError {
    /// The name is not an IANA name this reader accepts.
    #[error(
        "time zone {0:?}: give an IANA name such as Europe/Oslo (letters, digits, _ + - and /)"
    )]
    Name(String),
    /// The file cannot be read.
    #[error(
        "time zone {name}: cannot read {path} ({why}); install the tzdata package or fix the site's time zone"
    )]
    Read {
        /// The name.
        name: String,
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// The file is not TZif.
    #[error("time zone {0}: its file is not a TZif time zone file")]
    Format(String),
}

/// One zone's offsets: the transitions (Unix seconds) and the offset from each on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// Offset before the first transition (seconds east of UTC).
    initial: i32,
    /// (transition, offset from then on), ascending.
    transitions: Vec<(i64, i32)>,
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The header's counts: isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt.
fn counts(b: &[u8], at: usize) -> Option<[usize; 6]> {
    if b.get(at..at + 4)? != b"TZif" {
        return None;
    }
    let mut c = [0usize; 6];
    for (i, v) in c.iter_mut().enumerate() {
        *v = usize::try_from(be_u32(b, at + 20 + 4 * i)?).ok()?;
    }
    Some(c)
}

impl Zone {
    /// A fixed offset (seconds east of UTC).
    pub fn fixed(offset_secs: i32) -> Zone {
        Zone {
            initial: offset_secs,
            transitions: Vec::new(),
        }
    }

    /// Parses a TZif file (version 1 data, or the 64-bit data of version 2 and later).
    pub fn from_tzif(b: &[u8]) -> Option<Zone> {
        let [isut, isstd, leap, timecnt, typecnt, charcnt] = counts(b, 0)?;
        let version = *b.get(4)?;
        let v1_len = timecnt * 5 + typecnt * 6 + charcnt + leap * 8 + isstd + isut;
        let (at, time_size, c) = if version >= b'2' {
            let second = 44 + v1_len;
            (second + 44, 8, counts(b, second)?)
        } else {
            (44, 4, [isut, isstd, leap, timecnt, typecnt, charcnt])
        };
        let [_, _, _, timecnt, typecnt, _] = c;
        if typecnt == 0 {
            return None;
        }
        let times_at = at;
        let idx_at = times_at + timecnt * time_size;
        let types_at = idx_at + timecnt;
        b.get(types_at..types_at + typecnt * 6)?;
        let offset_of = |i: usize| -> Option<i32> {
            let o = types_at + i * 6;
            Some(i32::from_be_bytes(b.get(o..o + 4)?.try_into().ok()?))
        };
        let mut transitions = Vec::with_capacity(timecnt);
        for i in 0..timecnt {
            let t = if time_size == 8 {
                i64::from_be_bytes(
                    b.get(times_at + 8 * i..times_at + 8 * i + 8)?
                        .try_into()
                        .ok()?,
                )
            } else {
                i64::from(i32::from_be_bytes(
                    b.get(times_at + 4 * i..times_at + 4 * i + 4)?
                        .try_into()
                        .ok()?,
                ))
            };
            let ty = usize::from(*b.get(idx_at + i)?);
            if ty >= typecnt {
                return None;
            }
            transitions.push((t, offset_of(ty)?));
        }
        if transitions.windows(2).any(|w| w[0].0 >= w[1].0) {
            return None;
        }
        Some(Zone {
            initial: offset_of(0)?,
            transitions,
        })
    }

    /// The zone of an IANA name from `dir` (normally [`ZONEINFO`]).
    pub fn load_from(dir: &Path, name: &str) -> Result<Zone, TzError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('/')
            && name
                .split('/')
                .all(|p| !p.is_empty() && p != "." && p != "..")
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_+-/".contains(&b));
        if !ok {
            return Err(TzError::Name(name.to_owned()));
        }
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| TzError::Read {
            name: name.to_owned(),
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        Zone::from_tzif(&bytes).ok_or_else(|| TzError::Format(name.to_owned()))
    }

    /// The zone of an IANA name from the system's database.
    pub fn load(name: &str) -> Result<Zone, TzError> {
        Zone::load_from(Path::new(ZONEINFO), name)
    }

    /// The offset from UTC at `unix_secs` (seconds east of UTC).
    pub fn offset_at(&self, unix_secs: i64) -> i32 {
        match self
            .transitions
            .partition_point(|(t, _)| *t <= unix_secs)
            .checked_sub(1)
        {
            Some(i) => self.transitions[i].1,
            None => self.initial,
        }
    }

    /// The offset in whole minutes (every zone in use today is).
    pub fn offset_minutes_at(&self, unix_secs: i64) -> i16 {
        i16::try_from(self.offset_at(unix_secs).div_euclid(60)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-03-29 01:00 UTC, when Europe/Oslo goes from +01:00 to +02:00.
    const EU_SPRING_2026: i64 = 1_774_746_000;

    #[test]
    fn oslo_has_its_summer_and_winter_offsets() {
        let z = Zone::load("Europe/Oslo").expect("tzdata installed");
        assert_eq!(z.offset_minutes_at(EU_SPRING_2026 - 1), 60);
        assert_eq!(z.offset_minutes_at(EU_SPRING_2026), 120);
        // 2026-10-25 01:00 UTC: back to +01:00.
        assert_eq!(z.offset_minutes_at(1_792_890_000 - 1), 120);
        assert_eq!(z.offset_minutes_at(1_792_890_000), 60);
        let ny = Zone::load("America/New_York").expect("tzdata");
        assert_eq!(ny.offset_minutes_at(EU_SPRING_2026), -240);
        assert_eq!(Zone::load("UTC").expect("utc").offset_at(EU_SPRING_2026), 0);
        assert_eq!(Zone::fixed(3600).offset_minutes_at(0), 60);
    }

    #[test]
    fn names_and_files_that_are_not_zones_are_refused() {
        for bad in [
            "",
            "../etc/passwd",
            "/etc/passwd",
            "Europe/../../etc",
            "Europe//Oslo",
            "Europe/Os lo",
        ] {
            assert!(matches!(Zone::load(bad), Err(TzError::Name(_))), "{bad}");
        }
        assert!(matches!(
            Zone::load("Europe/Atlantis"),
            Err(TzError::Read { .. })
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("Bad"), b"not a zone").expect("write");
        assert!(matches!(
            Zone::load_from(dir.path(), "Bad"),
            Err(TzError::Format(_))
        ));
        // Truncated files never panic.
        let oslo = std::fs::read("/usr/share/zoneinfo/Europe/Oslo").expect("tzdata");
        for cut in (0..oslo.len()).step_by(97) {
            let _ = Zone::from_tzif(&oslo[..cut]);
        }
    }
}
