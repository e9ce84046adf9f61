//! Login throttling: failures counted per account and per source address in a sliding window;
//! at the limit, further attempts are refused until the oldest failure leaves the window. Pure:
//! the time is an input (Unix ms), so the tests walk the clock.
//!
//! Per account, so nobody guesses one user's password from many addresses; per address, so
//! one address cannot try many users. Unknown user names count like known ones (the answer
//! does not tell them apart). The shell keeps the failures in the database under
//! [`stored_keys`] and, for each attempt, [`Throttle::load`]s them into a fresh throttle
//! before the check, so replicas count together and no process holds state of its own.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// A limit: at most `failures` failed logins within `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Failures allowed in the window.
    pub failures: usize,
    /// The window (ms).
    pub window_ms: i64,
}

/// What is counted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Address(IpAddr),
}

/// The throttle's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The attempt may proceed (the password is checked).
    Allow,
    /// Refused without checking the password; try again after this long (ms).
    Wait {
        /// Milliseconds until an attempt is allowed again.
        retry_after_ms: i64,
    },
}

/// The counters.
#[derive(Debug, Clone)]
pub struct Throttle {
    account: Limit,
    address: Limit,
    failures: HashMap<Key, VecDeque<i64>>,
}

/// Keys kept at most; beyond it the keys whose failures all left the window are dropped, then
/// the ones with the oldest last failure (memory stays bounded under a spray of addresses).
const MAX_KEYS: usize = 100_000;

impl Throttle {
    /// A throttle with these limits.
    pub fn new(account: Limit, address: Limit) -> Throttle {
        Throttle {
            account,
            address,
            failures: HashMap::new(),
        }
    }

    /// The default: 5 failures per account and 20 per address in 15 minutes.
    pub fn standard() -> Throttle {
        Throttle::new(
            Limit {
                failures: 5,
                window_ms: 15 * 60_000,
            },
            Limit {
                failures: 20,
                window_ms: 15 * 60_000,
            },
        )
    }

    fn wait(&mut self, key: &Key, limit: Limit, now: i64) -> i64 {
        let Some(q) = self.failures.get_mut(key) else {
            return 0;
        };
        while q.front().is_some_and(|&t| t <= now - limit.window_ms) {
            q.pop_front();
        }
        if q.len() < limit.failures {
            return 0;
        }
        // The (len - failures + 1)-th oldest must leave the window for one more attempt.
        let k = q.len() - limit.failures;
        q.get(k).map_or(0, |&t| t + limit.window_ms - now)
    }

    /// The longest window: failures older than this no longer count.
    pub fn window_ms(&self) -> i64 {
        self.account.window_ms.max(self.address.window_ms)
    }

    /// Replaces what is held for `account` and `address` with the failures recorded elsewhere
    /// (the database every replica writes), in the order of [`stored_keys`].
    pub fn load(
        &mut self,
        account: &str,
        address: Option<IpAddr>,
        account_failures: Vec<i64>,
        address_failures: Vec<i64>,
    ) {
        let mut put = |key: Key, mut at: Vec<i64>| {
            if at.is_empty() {
                self.failures.remove(&key);
            } else {
                at.sort_unstable();
                self.failures.insert(key, at.into());
            }
        };
        put(Key::Account(account.to_owned()), account_failures);
        if let Some(a) = address {
            put(Key::Address(a), address_failures);
        }
    }

    /// Whether a login for `account` from `address` may be tried at `now`.
    pub fn check(&mut self, account: &str, address: Option<IpAddr>, now: i64) -> Decision {
        let mut wait = self.wait(&Key::Account(account.to_owned()), self.account, now);
        if let Some(a) = address {
            wait = wait.max(self.wait(&Key::Address(a), self.address, now));
        }
        if wait > 0 {
            Decision::Wait {
                retry_after_ms: wait,
            }
        } else {
            Decision::Allow
        }
    }

    /// Records a failed login.
    pub fn failed(&mut self, account: &str, address: Option<IpAddr>, now: i64) {
        if self.failures.len() >= MAX_KEYS {
            self.prune(now);
        }
        self.failures
            .entry(Key::Account(account.to_owned()))
            .or_default()
            .push_back(now);
        if let Some(a) = address {
            self.failures
                .entry(Key::Address(a))
                .or_default()
                .push_back(now);
        }
    }

    /// Records a successful login: the account's failures are forgiven (the address's are not:
    /// one good password does not license guessing others from there).
    pub fn succeeded(&mut self, account: &str) {
        self.failures.remove(&Key::Account(account.to_owned()));
    }

    fn prune(&mut self, now: i64) {
        let window = self.account.window_ms.max(self.address.window_ms);
        self.failures
            .retain(|_, q| q.back().is_some_and(|&t| t > now - window));
        if self.failures.len() >= MAX_KEYS {
            let mut last: Vec<i64> = self
                .failures
                .values()
                .filter_map(|q| q.back().copied())
                .collect();
            last.sort_unstable();
            let cut = last[last.len() / 2];
            self.failures
                .retain(|_, q| q.back().is_some_and(|&t| t > cut));
        }
    }

    /// Keys held (for the memory bound's test).
    pub fn keys(&self) -> usize {
        self.failures.len()
    }
}

/// The keys under which the failures of `account` and `address` are stored: the account's,
/// then the address's if there is one.
pub fn stored_keys(account: &str, address: Option<IpAddr>) -> Vec<String> {
    // A user name is at most what the login form takes; a longer one is counted by its start.
    let name: String = account.chars().take(256).collect();
    let mut keys = vec![format!("account:{name}")];
    if let Some(a) = address {
        keys.push(format!("address:{a}"));
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    fn small() -> Throttle {
        Throttle::new(
            Limit {
                failures: 3,
                window_ms: 10 * MIN,
            },
            Limit {
                failures: 5,
                window_ms: 10 * MIN,
            },
        )
    }

    #[test]
    fn an_account_is_locked_after_its_limit_until_the_window_slides() {
        let mut t = small();
        for i in 0..3 {
            assert_eq!(t.check("alice", ip("10.0.0.1"), i * MIN), Decision::Allow);
            // Each failure from another address: the account limit still counts them all.
            t.failed("alice", ip(&format!("10.0.0.{}", i + 1)), i * MIN);
        }
        assert_eq!(
            t.check("alice", ip("10.0.0.9"), 3 * MIN),
            Decision::Wait {
                retry_after_ms: 7 * MIN
            }
        );
        // Another account from a fresh address is not affected.
        assert_eq!(t.check("bob", ip("10.0.0.9"), 3 * MIN), Decision::Allow);
        // The first failure leaves the window at 10 min: one more attempt.
        assert_eq!(t.check("alice", None, 10 * MIN), Decision::Allow);
    }

    #[test]
    fn an_address_is_locked_across_accounts_and_success_forgives_only_the_account() {
        let mut t = small();
        let a = ip("192.0.2.7");
        for i in 0..5 {
            assert_eq!(t.check(&format!("user{i}"), a, i), Decision::Allow);
            t.failed(&format!("user{i}"), a, i);
        }
        assert!(matches!(t.check("user9", a, 10), Decision::Wait { .. }));
        assert_eq!(t.check("user9", ip("192.0.2.8"), 10), Decision::Allow);
        let mut t = small();
        t.failed("carol", a, 0);
        t.failed("carol", a, 1);
        t.succeeded("carol");
        t.failed("carol", a, 2);
        t.failed("carol", a, 3);
        assert_eq!(t.check("carol", a, 4), Decision::Allow);
    }

    #[test]
    fn memory_stays_bounded_under_a_spray_of_addresses() {
        let mut t = small();
        for i in 0..(u32::try_from(MAX_KEYS).expect("a small table") + 10) {
            let a = IpAddr::from(i.to_be_bytes());
            t.failed("x", Some(a), i64::from(i));
        }
        assert!(t.keys() <= MAX_KEYS, "{}", t.keys());
    }

    #[test]
    fn failures_loaded_from_elsewhere_count_like_ones_seen_here() {
        let mut t = Throttle::standard();
        let a = ip("10.0.0.7");
        t.failed("x", a, 0);
        // Another replica saw five failures of "it-ops" and twenty from the address.
        t.load(
            "it-ops",
            a,
            (1..=5).map(|m| m * MIN).collect(),
            vec![MIN; 20],
        );
        assert!(matches!(
            t.check("it-ops", None, 6 * MIN),
            Decision::Wait { retry_after_ms } if retry_after_ms == 10 * MIN
        ));
        assert!(matches!(t.check("y", a, 6 * MIN), Decision::Wait { .. }));
        // Loading nothing forgets what was held.
        t.load("it-ops", a, Vec::new(), Vec::new());
        assert_eq!(t.check("it-ops", a, 6 * MIN), Decision::Allow);
        assert_eq!(
            stored_keys("it-ops", a),
            ["account:it-ops", "address:10.0.0.7"]
        );
        assert_eq!(stored_keys("it-ops", None), ["account:it-ops"]);
    }
}
