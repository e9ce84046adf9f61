//! Passwords: argon2id hashes in PHC string form (parameters and salt inside the string, so
//! they can be raised later without breaking stored hashes), and the rules a new password
//! must meet. No default password exists anywhere: a user without a hash cannot log in.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Shortest password accepted.
pub const MIN_LEN: usize = 12;
/// Longest password accepted (hashing cost is bounded; nobody types more).
pub const MAX_LEN: usize = 256;

/// Why a password cannot be set or hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Too short or too long.
    #[error("the password must be {MIN_LEN} to {MAX_LEN} characters long")]
    Length,
    /// The system's random generator failed (no salt).
    #[error("the system random generator failed")]
    Random,
    /// argon2 refused (never with the parameters here).
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// argon2id with OWASP's first recommended parameters: 19 MiB, 2 passes, 1 lane.
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Checks the rules a new password must meet.
pub fn check_new(password: &str) -> Result<(), PasswordError> {
    let n = password.chars().count();
    if (MIN_LEN..=MAX_LEN).contains(&n) {
        Ok(())
    } else {
        Err(PasswordError::Length)
    }
}

/// Hashes a new password (after [`check_new`]) with a fresh 16-byte salt from `salt`.
pub fn hash(password: &str, salt: [u8; 16]) -> Result<String, PasswordError> {
    check_new(password)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the stored PHC string (false for an unreadable one).
pub fn verify(password: &str, stored: &str) -> bool {
    if password.len() > MAX_LEN * 4 {
        return false;
    }
    match PasswordHash::new(stored) {
        Ok(h) => hasher().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// A hash of no one's password, verified against when the user does not exist, so that an
/// unknown user name costs as long as a wrong password (no user enumeration by timing).
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$bm8tb25lcy1zYWx0LTE2$wdQAgF0o7a3H0dJZQ3eWnE4s3JdYqkqn9PZUx8xX7hs";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash("correct horse battery", [7; 16]).expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("correct horse battery", &h));
        assert!(!verify("correct horse battery!", &h));
        assert!(!verify("correct horse battery", "not a phc string"));
        // Another salt, another hash.
        assert_ne!(h, hash("correct horse battery", [8; 16]).expect("hash"));
    }

    #[test]
    fn short_and_huge_passwords_are_refused() {
        assert_eq!(hash("short", [0; 16]), Err(PasswordError::Length));
        assert_eq!(
            check_new(&"x".repeat(MAX_LEN + 1)),
            Err(PasswordError::Length)
        );
        assert!(check_new("twelve chars").is_ok());
    }

    #[test]
    fn the_dummy_hash_is_well_formed_and_matches_nothing_typed() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(!verify("", DUMMY_HASH));
        assert!(!verify("password1234", DUMMY_HASH));
    }
}
