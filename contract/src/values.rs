//! Validated values: the only strings a message can carry.
//!
//! Every string field of a message is one of these types, and each type accepts only what its name
//! says (an AE title, a modality code, a SOP class UID, a short token such as a version or a serial).
//! None of them accepts the characters a person's name is written with in DICOM (`^`, `=`) nor
//! free text: that is how "no patient data, ever" is made a property of the types rather than a
//! promise of every caller. Deserialisation goes through the same checks, so a message carrying
//! anything else is rejected as invalid.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {shown:?}: {rule}")]
pub struct ValueError {
    /// The kind of value (e.g. "AE title").
    pub what: &'static str,
    /// The offending value, cut to 32 characters and with non-printable characters escaped.
    pub shown: String,
    /// The rule it breaks.
    pub rule: &'static str,
}

impl ValueError {
    fn new(what: &'static str, value: &str, rule: &'static str) -> Self {
        let shown: String = value
            .chars()
            .take(32)
            .flat_map(char::escape_default)
            .collect();
        Self { what, shown, rule }
    }
}

macro_rules! validated_string {
    ($(#[$meta:meta])* $name:ident, $what:literal, $check:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `value`; see the type's documentation for the rule.
            pub fn new(value: impl Into<String>) -> Result<Self, ValueError> {
                let value: String = value.into();
                let check: fn(&str) -> Result<String, &'static str> = $check;
                match check(&value) {
                    Ok(normalised) => Ok(Self(normalised)),
                    Err(rule) => Err(ValueError::new($what, &value, rule)),
                }
            }

            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValueError;
            fn try_from(value: String) -> Result<Self, ValueError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl FromStr for $name {
            type Err = ValueError;
            fn from_str(s: &str) -> Result<Self, ValueError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

fn check_id(s: &str) -> Result<String, &'static str> {
    const RULE: &str =
        "1-63 characters a-z, 0-9 and '-', starting and ending with a letter or digit";
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok { Ok(s.to_owned()) } else { Err(RULE) }
}

validated_string!(
    /// A site (hospital) identifier: 1-63 characters `a-z`, `0-9`, `-` (not first or last).
    /// It is a topic level, so it can never hold `/`, `+` or `#`.
    SiteId,
    "site id",
    check_id
);

validated_string!(
    /// A device (appliance) identifier, unique in the whole fleet: same rule as [`SiteId`].
    /// It is also the common name of the device's certificate (the broker's username).
    DeviceId,
    "device id",
    check_id
);

fn check_ae(s: &str) -> Result<String, &'static str> {
    const RULE: &str = "1-16 printable ASCII characters, no backslash, not only spaces (DICOM AE)";
    let trimmed = s.trim_matches(' ');
    let ok = !trimmed.is_empty()
        && s.len() <= 16
        && s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\');
    if ok {
        Ok(trimmed.to_owned())
    } else {
        Err(RULE)
    }
}

validated_string!(
    /// A DICOM Application Entity title: 1-16 printable ASCII characters, no backslash, not only
    /// spaces. Leading and trailing spaces are not significant and are removed.
    AeTitle,
    "AE title",
    check_ae
);

fn check_modality(s: &str) -> Result<String, &'static str> {
    const RULE: &str =
        "2-16 characters A-Z, 0-9 and '_' (a DICOM modality code such as CT, MR, US)";
    let ok = (2..=16).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if ok { Ok(s.to_owned()) } else { Err(RULE) }
}

validated_string!(
    /// A DICOM modality code (0008,0060): 2-16 characters `A-Z`, `0-9`, `_` (e.g. `CT`, `MR`, `ECG`).
    Modality,
    "modality code",
    check_modality
);

fn check_sop_class(s: &str) -> Result<String, &'static str> {
    const RULE: &str = "a UID of a SOP class: digits and dots, at most 64, no leading zeros, \
                        under the DICOM root 1.2.840.10008. or a private root of 5+ components";
    let syntax_ok = !s.is_empty()
        && s.len() <= 64
        && s.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_digit())
                && (c == "0" || !c.starts_with('0'))
        });
    let components = s.split('.').count();
    let root_ok = s.starts_with("1.2.840.10008.") || components >= 5;
    if syntax_ok && root_ok {
        Ok(s.to_owned())
    } else {
        Err(RULE)
    }
}

validated_string!(
    /// The UID of a SOP class (what kind of object, never which object): the DICOM syntax (digits
    /// and dots, at most 64 characters) under the standard root `1.2.840.10008.` or a private root
    /// of at least 5 components (private SOP classes). A short number — which a patient ID might
    /// be — is refused.
    SopClassUid,
    "SOP class UID",
    check_sop_class
);

fn check_token(s: &str) -> Result<String, &'static str> {
    const RULE: &str =
        "1-64 characters A-Z, a-z, 0-9 and . _ : + ~ - [ ] (no spaces, no '^' or '=')";
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:+~-[]".contains(&b));
    if ok { Ok(s.to_owned()) } else { Err(RULE) }
}

validated_string!(
    /// A short machine token: versions, serial numbers, hardware profiles, interface names,
    /// destination names, error codes and configuration field paths. 1-64 characters
    /// `A-Za-z0-9._:+~-[]`: no spaces and none of DICOM's person-name separators.
    Token,
    "token",
    check_token
);

fn check_command_id(s: &str) -> Result<String, &'static str> {
    const RULE: &str = "1-64 characters A-Z, a-z, 0-9 and '-'";
    let ok =
        !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok { Ok(s.to_owned()) } else { Err(RULE) }
}

validated_string!(
    /// The identifier of a command, chosen by the fleet: 1-64 characters `A-Za-z0-9-`.
    CommandId,
    "command id",
    check_command_id
);

fn check_mac(s: &str) -> Result<String, &'static str> {
    const RULE: &str = "six two-digit hex bytes separated by ':' (aa:bb:cc:dd:ee:ff)";
    let parts: Vec<&str> = s.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(RULE)
    }
}

validated_string!(
    /// A MAC address, `aa:bb:cc:dd:ee:ff` (stored lower case).
    MacAddress,
    "MAC address",
    check_mac
);

fn check_sha256(s: &str) -> Result<String, &'static str> {
    const RULE: &str = "64 hexadecimal digits (a SHA-256 digest)";
    let ok = s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(RULE)
    }
}

validated_string!(
    /// A SHA-256 digest in hexadecimal (stored lower case).
    Sha256Hex,
    "SHA-256 digest",
    check_sha256
);

fn check_https_url(s: &str) -> Result<String, &'static str> {
    const RULE: &str = "https://host[:port][/path], at most 256 characters A-Z, a-z, 0-9 and . _ ~ - / : [ ] (no user, query or fragment)";
    let Some(rest) = s.strip_prefix("https://") else {
        return Err(RULE);
    };
    let host = rest.split('/').next().unwrap_or_default();
    let ok = s.len() <= 256
        && !host.is_empty()
        && !host.starts_with(':')
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-/:[]".contains(&b));
    if ok {
        Ok(s.trim_end_matches('/').to_owned())
    } else {
        Err(RULE)
    }
}

validated_string!(
    /// An HTTPS address the fleet tells a device to fetch from (an update bundle's download):
    /// scheme, host, port and path only — no user, query or fragment, so nothing but the address
    /// travels. A trailing `/` is dropped.
    HttpsUrl,
    "HTTPS URL",
    check_https_url
);

/// The identity of an event: the outbox stream it was written to (random, chosen when the
/// appliance's outbox was created) and its sequence number in that stream. Unique per device;
/// the fleet deduplicates on (device, id). Written as `"{stream:016x}-{seq:016x}"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventId {
    /// The outbox stream (a new one after an outbox was lost and rebuilt).
    pub stream: u64,
    /// Monotonic sequence number in the stream.
    pub seq: u64,
}

impl EventId {
    /// An id from its parts.
    pub fn new(stream: u64, seq: u64) -> Self {
        Self { stream, seq }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{:016x}", self.stream, self.seq)
    }
}

impl FromStr for EventId {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        const RULE: &str = "two groups of 16 hexadecimal digits joined by '-'";
        let err = || ValueError::new("event id", s, RULE);
        let (a, b) = s.split_once('-').ok_or_else(err)?;
        if a.len() != 16 || b.len() != 16 {
            return Err(err());
        }
        let stream = u64::from_str_radix(a, 16).map_err(|_| err())?;
        let seq = u64::from_str_radix(b, 16).map_err(|_| err())?;
        Ok(Self { stream, seq })
    }
}

impl TryFrom<String> for EventId {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, ValueError> {
        value.parse()
    }
}

impl From<EventId> for String {
    fn from(value: EventId) -> String {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(SiteId::new("st-olav").is_ok());
        assert!(DeviceId::new("ct-room-1").is_ok());
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a/b",
            "a+b",
            "a#",
            "a b",
            &"a".repeat(64),
        ] {
            assert!(DeviceId::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ae_titles() {
        assert_eq!(
            AeTitle::new(" CT_SCANNER1 ").expect("valid").as_str(),
            "CT_SCANNER1"
        );
        for bad in ["", "    ", "A\\B", "TOO_LONG_AE_TITLE", "CT\u{e9}", "A\nB"] {
            assert!(AeTitle::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn modalities() {
        for good in ["CT", "MR", "US", "ECG", "SM", "RTSTRUCT"] {
            assert!(Modality::new(good).is_ok(), "{good} refused");
        }
        for bad in ["C", "ct", "C T", "DOE^JOHN", "ABCDEFGHIJKLMNOPQ"] {
            assert!(Modality::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sop_classes() {
        assert!(SopClassUid::new("1.2.840.10008.5.1.4.1.1.2").is_ok());
        assert!(
            SopClassUid::new("1.3.6.1.4.1.9590.100.1.2").is_ok(),
            "private root"
        );
        for bad in [
            "123456",
            "12.345",
            "1.2.840.10008.05",
            "1..2",
            "1.2.840.10008.",
            "DOE",
            &"1.".repeat(40),
        ] {
            assert!(SopClassUid::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tokens_refuse_person_names_and_text() {
        assert!(Token::new("1.4.2+build.7").is_ok());
        assert!(Token::new("destination[0].address").is_ok());
        for bad in [
            "DOE^JOHN",
            "John Doe",
            "a=b",
            "",
            &"x".repeat(65),
            "caf\u{e9}",
        ] {
            assert!(Token::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn event_ids_round_trip() {
        let id = EventId::new(0xdead_beef, 42);
        let text = id.to_string();
        assert_eq!(text, "00000000deadbeef-000000000000002a");
        assert_eq!(text.parse::<EventId>().expect("parses"), id);
        assert!("deadbeef-2a".parse::<EventId>().is_err());
        assert!(EventId::from_str("zzzzzzzzzzzzzzzz-0000000000000000").is_err());
    }

    #[test]
    fn deserialisation_validates() {
        let ok: Result<AeTitle, _> = serde_json::from_str("\"STORESCU\"");
        assert!(ok.is_ok());
        let bad: Result<AeTitle, _> = serde_json::from_str("\"THIS IS A VERY LONG NAME\"");
        let err = bad.expect_err("too long");
        assert!(err.to_string().contains("AE title"), "{err}");
        let mac: MacAddress = serde_json::from_str("\"AA:BB:CC:00:11:22\"").expect("valid");
        assert_eq!(mac.as_str(), "aa:bb:cc:00:11:22");
    }
}
