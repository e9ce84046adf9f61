//! Sessions: when one expires (idle and absolute limits) and the cookie that carries it.
//!
//! The cookie holds a random secret; the database holds only its SHA-256 and a separate public
//! id (what listings show and revocation names), so a database reader cannot hijack a session.

/// The cookie's name.
pub const COOKIE: &str = "medgate_session";

/// The limits of a session (from `[auth]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Ends this long after the last request (ms).
    pub idle_ms: i64,
    /// Ends this long after login, whatever the activity (ms).
    pub absolute_ms: i64,
}

/// A stored session's times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    /// Logged in (Unix ms).
    pub created_ms: i64,
    /// Last request (Unix ms).
    pub last_seen_ms: i64,
    /// Revoked (logout or revocation), if it was.
    pub revoked_ms: Option<i64>,
}

/// Whether a session still holds at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid; `touch` says whether to record `now` as its last request (at most once a
    /// minute — or a quarter of the idle limit, if shorter, so that activity always keeps a
    /// session alive —, so reading pages does not write on every request).
    Valid {
        /// Record the activity.
        touch: bool,
    },
    /// Idle too long.
    IdleExpired,
    /// Older than the absolute limit.
    AbsoluteExpired,
    /// Logged out or revoked.
    Revoked,
}

/// How often activity is written back.
pub const TOUCH_EVERY_MS: i64 = 60_000;

/// Decides a session at `now`.
pub fn check(t: Times, limits: Limits, now: i64) -> Verdict {
    if t.revoked_ms.is_some() {
        Verdict::Revoked
    } else if now >= t.created_ms.saturating_add(limits.absolute_ms) {
        Verdict::AbsoluteExpired
    } else if now >= t.last_seen_ms.saturating_add(limits.idle_ms) {
        Verdict::IdleExpired
    } else {
        Verdict::Valid {
            touch: now - t.last_seen_ms >= TOUCH_EVERY_MS.min(limits.idle_ms / 4),
        }
    }
}

/// The `Set-Cookie` value that sets a session. `Secure` when the console is served over HTTPS
/// (a browser drops a `Secure` cookie on plain HTTP, which the default loopback fleet serves).
pub fn set_cookie(secret: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The session secret in a `Cookie` header, if any.
pub fn from_cookie_header(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        idle_ms: 30 * 60_000,
        absolute_ms: 12 * 3_600_000,
    };

    fn at(created_ms: i64, last_seen_ms: i64) -> Times {
        Times {
            created_ms,
            last_seen_ms,
            revoked_ms: None,
        }
    }

    #[test]
    fn idle_and_absolute_limits_end_a_session() {
        assert_eq!(check(at(0, 0), L, 1_000), Verdict::Valid { touch: false });
        assert_eq!(check(at(0, 0), L, 60_000), Verdict::Valid { touch: true });
        assert_eq!(
            check(at(0, 0), L, L.idle_ms - 1),
            Verdict::Valid { touch: true }
        );
        assert_eq!(check(at(0, 0), L, L.idle_ms), Verdict::IdleExpired);
        // Active all along, still ended by the absolute limit.
        let t = at(0, L.absolute_ms - 1_000);
        assert_eq!(
            check(t, L, L.absolute_ms - 500),
            Verdict::Valid { touch: false }
        );
        assert_eq!(check(t, L, L.absolute_ms), Verdict::AbsoluteExpired);
        // A short idle limit is kept alive by activity: touched every quarter of it.
        let short = Limits {
            idle_ms: 60_000,
            absolute_ms: L.absolute_ms,
        };
        assert_eq!(
            check(at(0, 0), short, 14_999),
            Verdict::Valid { touch: false }
        );
        assert_eq!(
            check(at(0, 0), short, 15_000),
            Verdict::Valid { touch: true }
        );
        let revoked = Times {
            revoked_ms: Some(5),
            ..at(0, 0)
        };
        assert_eq!(check(revoked, L, 10), Verdict::Revoked);
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_over_https() {
        assert_eq!(
            set_cookie("abc", true),
            "medgate_session=abc; Path=/; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(!set_cookie("abc", false).contains("Secure"));
        assert!(clear_cookie(true).contains("Max-Age=0"));
        assert_eq!(
            from_cookie_header("theme=dark; medgate_session=s3cr3t ; x=y"),
            Some("s3cr3t")
        );
        assert_eq!(from_cookie_header("medgate_session=; a=b"), None);
        assert_eq!(from_cookie_header("other=1"), None);
    }
}
