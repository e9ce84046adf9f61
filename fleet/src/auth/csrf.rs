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

// ---- console-auth (issue 12): the login form's CSRF token, before any session ----
//
// Signed double submit: `GET /login` sets the cookie [`LOGIN_COOKIE`] (HttpOnly,
// SameSite=Strict, random) and puts `HMAC(key, cookie)` in the form; `POST /login` must bring
// both, and they must match. A page of another site can neither read the token nor make the
// browser send the Strict cookie with its cross-site POST, so a forged login is refused before
// the password is looked at (a login CSRF would sign the victim into the attacker's account).

/// The pre-session cookie of the login form.
pub const LOGIN_COOKIE: &str = "medgate_login";

/// The form token of a login cookie's value.
pub fn login_token(key: &ring::hmac::Key, cookie: &str) -> String {
    let tag = ring::hmac::sign(key, format!("login-form:{cookie}").as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a login form's token belongs to its cookie (both sent, in constant time).
pub fn login_matches(key: &ring::hmac::Key, cookie: Option<&str>, sent: Option<&str>) -> bool {
    match (cookie, sent) {
        (Some(c), Some(t)) if c.len() >= 32 => matches(Some(t), &login_token(key, c)),
        _ => false,
    }
}

/// The `Set-Cookie` value of the login form's cookie (an hour; `Secure` over HTTPS).
pub fn login_cookie(value: &str, secure: bool) -> String {
    format!(
        "{LOGIN_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=3600{}",
        if secure { "; Secure" } else { "" }
    )
}

/// A cookie's value in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_token_is_bound_to_its_cookie_and_key() {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"k");
        let c = "a".repeat(43);
        let t = login_token(&key, &c);
        assert!(login_matches(&key, Some(&c), Some(&t)));
        assert!(!login_matches(&key, Some(&"b".repeat(43)), Some(&t)));
        assert!(
            !login_matches(&key, None, Some(&t)),
            "no cookie: cross-site"
        );
        assert!(!login_matches(&key, Some(&c), None));
        assert!(!login_matches(
            &key,
            Some("short"),
            Some(&login_token(&key, "short"))
        ));
        let other = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"other");
        assert!(!login_matches(&other, Some(&c), Some(&t)));
        assert!(login_cookie("v", false).contains("SameSite=Strict; Max-Age=3600"));
        assert_eq!(
            cookie_value("a=1; medgate_login=xyz", LOGIN_COOKIE),
            Some("xyz")
        );
    }

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
