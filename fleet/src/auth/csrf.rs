//! CSRF: a request that authenticates by session cookie and changes state must carry the
//! session's CSRF token (header `X-CSRF-Token`, which htmx sends, or the form field
//! `csrf_token`). A bearer-token request carries no ambient credential (a browser never adds it
//! by itself) and is exempt. The cookie is also `SameSite=Strict`: this is the second lock.

use axum::http::Method;

/// The header.
pub const HEADER: &str = "x-csrf-token";
/// The form field.
pub const FORM_FIELD: &str = "csrf_token";

/// Whether a request with this method changes state (everything but GET, HEAD, OPTIONS).
pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether the token sent matches the session's, in time independent of where they differ.
pub fn matches(sent: Option<&str>, expected: &str) -> bool {
    let Some(sent) = sent else {
        return false;
    };
    let (a, b) = (sent.as_bytes(), expected.as_bytes());
    if a.len() != b.len() || b.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_are_exempt() {
        assert!(!changes_state(&Method::GET) && !changes_state(&Method::HEAD));
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(changes_state(&m), "{m}");
        }
    }

    #[test]
    fn the_token_must_be_exactly_the_sessions() {
        assert!(matches(Some("abcd"), "abcd"));
        assert!(!matches(Some("abce"), "abcd"));
        assert!(!matches(Some("abc"), "abcd"));
        assert!(!matches(None, "abcd"));
        assert!(!matches(Some(""), ""));
    }
}
