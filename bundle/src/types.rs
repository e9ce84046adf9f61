//! The checked values a bundle and a trust document are made of: names, versions, instants,
//! digests, serials. Each is parsed once (serde goes through the same parser) and cannot hold
//! anything else.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A value that did not parse: which kind, the text (bounded), and what it must look like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} '{text}' is not valid: {expected}")]
pub struct ParseError {
    /// What was parsed ("version", "name", …).
    pub kind: &'static str,
    /// The text, cut to 80 characters.
    pub text: String,
    /// What it must look like.
    pub expected: &'static str,
}

fn parse_error(kind: &'static str, text: &str, expected: &'static str) -> ParseError {
    ParseError {
        kind,
        text: text.chars().take(80).collect(),
        expected,
    }
}

macro_rules! serde_via_str {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A product or hardware profile name: 1–64 of `a-z 0-9 . _ -`, starting with a letter or digit
/// (the names of `hardware/profiles/*.toml`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        const EXPECTED: &str =
            "1-64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit";
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
        let first_ok = s
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if s.len() > 64 || !first_ok || !s.chars().all(ok_char) {
            return Err(parse_error("name", s, EXPECTED));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
serde_via_str!(Name);

/// A semantic version `MAJOR.MINOR.PATCH[-PRERELEASE]`, ordered as semver 2.0 orders them
/// (a pre-release sorts before its release; build metadata `+…` is refused, since two bundles
/// that differ only in it would compare equal).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    major: u64,
    minor: u64,
    patch: u64,
    pre: Vec<PreId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PreId {
    Num(u64),
    Alpha(String),
}

impl Version {
    /// `MAJOR.MINOR.PATCH` without pre-release.
    pub fn new(major: u64, minor: u64, patch: u64) -> Self {
        Self {
            major,
            minor,
            patch,
            pre: Vec::new(),
        }
    }
}

fn numeric(part: &str) -> Option<u64> {
    let digits = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let no_leading_zero = part == "0" || !part.starts_with('0');
    if digits && no_leading_zero {
        part.parse().ok()
    } else {
        None
    }
}

impl FromStr for Version {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        const EXPECTED: &str = "MAJOR.MINOR.PATCH or MAJOR.MINOR.PATCH-PRERELEASE (semver, no '+build', no leading zeros)";
        let err = || parse_error("version", s, EXPECTED);
        if s.len() > 64 {
            return Err(err());
        }
        let (core, pre) = match s.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (s, None),
        };
        let mut parts = core.split('.');
        let mut next = || parts.next().and_then(numeric).ok_or_else(err);
        let (major, minor, patch) = (next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(err());
        }
        let mut ids = Vec::new();
        if let Some(pre) = pre {
            for id in pre.split('.') {
                let alnum =
                    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                if !alnum {
                    return Err(err());
                }
                if id.bytes().all(|b| b.is_ascii_digit()) {
                    ids.push(PreId::Num(numeric(id).ok_or_else(err)?));
                } else {
                    ids.push(PreId::Alpha(id.to_owned()));
                }
            }
        }
        Ok(Self {
            major,
            minor,
            patch,
            pre: ids,
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        for (i, id) in self.pre.iter().enumerate() {
            f.write_str(if i == 0 { "-" } else { "." })?;
            match id {
                PreId::Num(n) => write!(f, "{n}")?,
                PreId::Alpha(a) => f.write_str(a)?,
            }
        }
        Ok(())
    }
}

impl Ord for PreId {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Num(a), Self::Num(b)) => a.cmp(b),
            (Self::Num(_), Self::Alpha(_)) => Ordering::Less,
            (Self::Alpha(_), Self::Num(_)) => Ordering::Greater,
            (Self::Alpha(a), Self::Alpha(b)) => a.cmp(b),
        }
    }
}
impl PartialOrd for PreId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => self.pre.cmp(&other.pre),
            })
    }
}
impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
serde_via_str!(Version);

/// An instant, whole seconds since the Unix epoch, UTC. Written as RFC 3339
/// (`2027-01-31T00:00:00Z`) in documents and on the command line, so that people read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// Seconds since the epoch.
    pub const fn from_unix(secs: u64) -> Self {
        Self(secs)
    }
    /// Seconds since the epoch.
    pub const fn unix(self) -> u64 {
        self.0
    }
    /// `self + secs`, saturating.
    pub const fn plus_secs(self, secs: u64) -> Self {
        Self(self.0.saturating_add(secs))
    }
    /// Seconds from `earlier` to `self` (0 if `earlier` is later).
    pub const fn secs_since(self, earlier: Self) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
    /// The current time of this machine (for the shells; the logic takes time as input).
    pub fn now() -> Self {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self(secs)
    }
}

// Days from 1970-01-01 to a civil date and back (Howard Hinnant's algorithms), on i64.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = i64::try_from(self.0).unwrap_or(i64::MAX);
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

impl FromStr for Timestamp {
    type Err = ParseError;
    /// `YYYY-MM-DDTHH:MM:SSZ` (UTC), or `YYYY-MM-DD` for midnight UTC.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let err = || parse_error("time", s, "YYYY-MM-DDTHH:MM:SSZ (UTC) or YYYY-MM-DD");
        let b = s.as_bytes();
        let num = |r: std::ops::Range<usize>| -> Result<i64, ParseError> {
            let part = s.get(r).ok_or_else(err)?;
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(err());
            }
            part.parse().map_err(|_| err())
        };
        let date_ok = b.len() >= 10 && b[4] == b'-' && b[7] == b'-';
        if !date_ok || !(b.len() == 10 || b.len() == 20) {
            return Err(err());
        }
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hh, mm, ss) = if b.len() == 20 {
            let time_ok = b[10] == b'T' && b[13] == b':' && b[16] == b':' && b[19] == b'Z';
            if !time_ok {
                return Err(err());
            }
            (num(11..13)?, num(14..16)?, num(17..19)?)
        } else {
            (0, 0, 0)
        };
        let days_in_month = match m {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
            2 => 28,
            _ => return Err(err()),
        };
        if y < 1970 || d < 1 || d > days_in_month || hh > 23 || mm > 59 || ss > 59 {
            return Err(err());
        }
        let secs = days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss;
        u64::try_from(secs).map(Self).map_err(|_| err())
    }
}
serde_via_str!(Timestamp);

/// Fixed-size bytes written as lower-case hex.
macro_rules! hex_bytes {
    ($(#[$doc:meta])* $t:ident, $n:expr, $kind:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $t(pub [u8; $n]);

        impl FromStr for $t {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                let mut out = [0u8; $n];
                let lower = !s.bytes().any(|b| b.is_ascii_uppercase());
                match hex::decode_to_slice(s, &mut out) {
                    Ok(()) if lower => Ok(Self(out)),
                    _ => Err(parse_error($kind, s, concat!(stringify!($n), " bytes as lower-case hex"))),
                }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($t), self)
            }
        }
        serde_via_str!($t);
    };
}

hex_bytes!(
    /// A SHA-256 digest.
    Digest, 32, "sha256"
);
hex_bytes!(
    /// A bundle's serial: 16 random bytes chosen when it is signed, so that two bundles never
    /// share metadata bytes and a signature names the bundle it was made for.
    Serial, 16, "serial"
);

impl Digest {
    /// SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let d = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }
    /// The first 8 hex digits, for messages.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

/// A running SHA-256 over a stream.
#[derive(Clone)]
pub struct Hasher(ring::digest::Context);

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher(sha256)")
    }
}

impl Default for Hasher {
    fn default() -> Self {
        Self(ring::digest::Context::new(&ring::digest::SHA256))
    }
}

impl Hasher {
    /// Add bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// The digest of everything added.
    pub fn finish(self) -> Digest {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        Digest(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().expect("version")
    }

    #[test]
    fn versions_order_as_semver() {
        let ordered = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.2.0",
            "1.10.0",
            "2.0.0",
        ];
        for pair in ordered.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
        assert_eq!(v("1.10.0").to_string(), "1.10.0");
        assert_eq!(v("1.0.0-rc.1").to_string(), "1.0.0-rc.1");
    }

    #[test]
    fn bad_versions_are_refused() {
        for bad in [
            "",
            "1",
            "1.2",
            "1.2.3.4",
            "01.2.3",
            "1.2.3+build",
            "1.2.3-",
            "1.2.3-a..b",
            "1.2.3-01",
            "v1.2.3",
            "1.2.-3",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!("qemu-vm".parse::<Name>().is_ok());
        assert!("medgate-appliance".parse::<Name>().is_ok());
        for bad in ["", "-x", "Qemu", "a b", "a/b", &"x".repeat(65)] {
            assert!(bad.parse::<Name>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timestamps_round_trip() {
        for (text, secs) in [
            ("1970-01-01T00:00:00Z", 0),
            ("2000-02-29T12:34:56Z", 951_827_696),
            ("2027-01-31T00:00:00Z", 1_801_353_600),
        ] {
            let t: Timestamp = text.parse().expect("time");
            assert_eq!(t.unix(), secs, "{text}");
            assert_eq!(t.to_string(), text);
        }
        assert_eq!(
            "2027-01-31".parse::<Timestamp>().map(Timestamp::unix),
            Ok(1_801_353_600)
        );
        for bad in [
            "2027-02-29",
            "2027-13-01",
            "2027-01-01T24:00:00Z",
            "2027-01-01 00:00:00",
            "1969-12-31",
            "2027-1-01",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hex_is_strict() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_string().parse::<Digest>(), Ok(d));
        assert!(d.to_string().to_uppercase().parse::<Digest>().is_err());
        assert!("abcd".parse::<Digest>().is_err());
    }
}
