//! Personal API tokens: `mgt_` and 64 hexadecimal digits of randomness, sent as
//! `Authorization: Bearer mgt_…`. Stored as their SHA-256 (they are long random secrets: a slow
//! hash would add nothing), shown once at creation. Each has a role and sites no wider than its
//! user's, an expiry, and can be revoked.

/// The prefix that tells a personal token from the bootstrap admin token (and lets secret
/// scanners find leaked ones).
pub const PREFIX: &str = "mgt_";

/// Longest lifetime a token may be given (days).
pub const MAX_DAYS: u64 = 366;

/// A token from 32 random bytes.
pub fn format(random: &[u8; 32]) -> String {
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("{PREFIX}{hex}")
}

/// Whether a bearer value looks like a personal token (prefix and 64 lower-case hex digits).
pub fn looks_like(bearer: &str) -> bool {
    bearer.strip_prefix(PREFIX).is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Checks a requested lifetime in days.
pub fn check_days(days: u64) -> Result<(), String> {
    if (1..=MAX_DAYS).contains(&days) {
        Ok(())
    } else {
        Err(format!(
            "expires_in_days: give 1 to {MAX_DAYS} days (a token that never expires is not offered)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_their_prefix_and_are_recognised() {
        let t = format(&[0xab; 32]);
        assert_eq!(t.len(), 4 + 64);
        assert!(looks_like(&t));
        assert!(!looks_like("0123456789abcdef0123456789abcdef"));
        assert!(!looks_like(&t.to_uppercase()));
        assert!(!looks_like(&t[..60]));
        assert!(check_days(0).is_err() && check_days(367).is_err() && check_days(90).is_ok());
    }
}
