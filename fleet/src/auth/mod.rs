//! Identity and access: who is asking ([`Principal`]) and what they may do.
//!
//! Sans-IO, one job per module: [`password`] (argon2id hashes), [`session`] (session expiry
//! and the cookie), [`csrf`] (the per-session token of state-changing requests), [`throttle`]
//! (login failures per account and per source address, time as input), [`token`] (personal API
//! tokens), [`policy`] (the one table deciding every route). The store keeps users, sessions,
//! tokens and the audit log (`store::users`, `store::audit`); `ops::access` ties them together;
//! `api` has the one middleware that consults [`policy`] for every request.

pub mod csrf;
// console-auth (issue 12): single sign-on.
pub mod oidc;
pub mod password;
pub mod policy;
pub mod session;
pub mod throttle;
pub mod token;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::Unreadable;

/// A role: what its holder may do (the permissions are [`policy::Permission`]s).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including users and sites.
    Admin,
    /// Devices, configuration, commands, quarantine, claims.
    Operator,
    /// Reads devices, sites, events and telemetry; changes nothing.
    Viewer,
    /// Reads the audit log only.
    Auditor,
    /// Its own bundles and campaigns (the OTA issue); no device access.
    Vendor,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Operator,
        Role::Viewer,
        Role::Auditor,
        Role::Vendor,
    ];

    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::Auditor => "auditor",
            Role::Vendor => "vendor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Unreadable;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| Unreadable {
                what: "role (admin, operator, viewer, auditor or vendor)",
                value: s.to_owned(),
            })
    }
}

/// The sites a user or token may see and change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteScope {
    /// Every site (no scope given).
    All,
    /// Only these site ids.
    Only(BTreeSet<String>),
}

impl SiteScope {
    /// From the stored form: `None` is every site.
    pub fn from_list(sites: Option<Vec<String>>) -> SiteScope {
        match sites {
            None => SiteScope::All,
            Some(v) => SiteScope::Only(v.into_iter().collect()),
        }
    }

    /// The stored form.
    pub fn to_list(&self) -> Option<Vec<String>> {
        match self {
            SiteScope::All => None,
            SiteScope::Only(s) => Some(s.iter().cloned().collect()),
        }
    }

    /// Whether `site` is in scope.
    pub fn allows(&self, site: &str) -> bool {
        match self {
            SiteScope::All => true,
            SiteScope::Only(s) => s.contains(site),
        }
    }

    /// Whether every site is in scope.
    pub fn is_all(&self) -> bool {
        matches!(self, SiteScope::All)
    }

    /// Whether `other` is no wider than `self`.
    pub fn covers(&self, other: &SiteScope) -> bool {
        match (self, other) {
            (SiteScope::All, _) => true,
            (SiteScope::Only(_), SiteScope::All) => false,
            (SiteScope::Only(mine), SiteScope::Only(theirs)) => theirs.is_subset(mine),
        }
    }
}

/// A request's source address: the TCP peer (`X-Forwarded-For` is not trusted), put on every
/// matched request by the HTTP shell, public routes included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source(pub Option<std::net::IpAddr>);

/// How a request authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A session cookie (state-changing requests need the session's CSRF token).
    Session {
        /// The session's public id.
        id: String,
        /// Its CSRF token.
        csrf: String,
    },
    /// A personal API token (`Authorization: Bearer mgt_…`).
    Token {
        /// The token's public id.
        id: String,
    },
    /// The bootstrap admin token: break-glass only (docs/fleet.md).
    BreakGlass,
}

/// Who is asking: a user with a role and a site scope, by session or token, or break-glass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user name (`break-glass` for the bootstrap admin token).
    pub user: String,
    /// The role in effect (a token's role, never above its user's).
    pub role: Role,
    /// The sites in effect.
    pub sites: SiteScope,
    /// How it authenticated.
    pub credential: Credential,
}

impl Principal {
    /// The break-glass principal of the bootstrap admin token.
    pub fn break_glass() -> Principal {
        Principal {
            user: "break-glass".into(),
            role: Role::Admin,
            sites: SiteScope::All,
            credential: Credential::BreakGlass,
        }
    }

    /// How the audit log names it: `alice`, `alice (token 1f…)`, `break-glass`.
    pub fn label(&self) -> String {
        match &self.credential {
            Credential::Session { .. } | Credential::BreakGlass => self.user.clone(),
            Credential::Token { id } => format!("{} (token {id})", self.user),
        }
    }
}

/// A user name: 1–64 characters of `a-z 0-9 . _ -` (lower case), starting with a letter or
/// digit. The name is what the audit log records.
pub fn check_user_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok && name != "break-glass" {
        Ok(())
    } else {
        Err(format!(
            "user name {name:?}: use 1-64 characters a-z, 0-9, '.', '_' or '-', starting with a letter or digit (and not \"break-glass\")"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_read_back_and_scopes_nest() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().ok(), Some(r));
        }
        assert!("root".parse::<Role>().is_err());
        let a = SiteScope::from_list(Some(vec!["a".into()]));
        let ab = SiteScope::from_list(Some(vec!["a".into(), "b".into()]));
        assert!(ab.covers(&a) && !a.covers(&ab) && SiteScope::All.covers(&ab));
        assert!(!ab.covers(&SiteScope::All));
        assert!(a.allows("a") && !a.allows("b") && SiteScope::All.allows("z"));
        assert_eq!(SiteScope::from_list(None), SiteScope::All);
    }

    #[test]
    fn user_names_are_checked() {
        assert!(check_user_name("alice.m-1").is_ok());
        for bad in ["", "Alice", "-x", "a b", "break-glass", &"x".repeat(65)] {
            assert!(check_user_name(bad).is_err(), "{bad}");
        }
    }
}
