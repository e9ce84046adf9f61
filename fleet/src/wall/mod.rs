//! The wall (docs/fleet.md, "The wall"): a read-only, full-screen view of the appliances of some
//! sites for a TV in the IT office, opened by a display link — a secret URL created and revoked
//! by an admin in the console, with no session that could expire.
//!
//! - [`tile`]: what a tile says (sans-IO: device, latest telemetry and now in, tile out) and
//!   the per-hospital figures.
//! - [`page`]: the page and the live fragment (maud).
//! - [`http`]: the handlers: the wall, its SSE stream, the console's display links page.
//! - this module: display link secrets, night hours, the [`Hub`] (the "fleet changed" signal and
//!   revocations, which close open streams at once) and the operations on links.

pub mod http;
pub mod page;
pub mod tile;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::auth::SiteScope;
use crate::ops::{Actor, OpError, Ops, sha256_hex};
use crate::store::audit::Outcome;
use crate::store::displays::{DisplayLink, Today};
use crate::store::now_db;
use tile::Wall;

/// The prefix of a display link's secret (`mgd_` and 64 hexadecimal digits).
pub const PREFIX: &str = "mgd_";

/// A display secret from 32 random bytes.
pub fn format_secret(random: &[u8; 32]) -> String {
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("{PREFIX}{hex}")
}

/// Whether a path segment looks like a display secret (checked before any database lookup).
pub fn looks_like(s: &str) -> bool {
    s.strip_prefix(PREFIX).is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Night hours from a form's two fields (local hours of the screen, 0-23): both empty is no
/// night mode.
pub fn parse_night(from: &str, to: &str) -> Result<Option<(u8, u8)>, String> {
    let (from, to) = (from.trim(), to.trim());
    if from.is_empty() && to.is_empty() {
        return Ok(None);
    }
    let hour = |s: &str| s.parse::<u8>().ok().filter(|h| *h < 24);
    match (hour(from), hour(to)) {
        (Some(f), Some(t)) if f != t => Ok(Some((f, t))),
        (Some(_), Some(_)) => Err("night mode: the start and end hours must differ".into()),
        _ => Err(
            "night mode: give both hours as 0 to 23 (e.g. from 20 to 7), or leave both empty"
                .into(),
        ),
    }
}

/// Whether `hour` (0-23) falls in the night `from`..`to` (which may wrap past midnight).
pub fn is_night(night: Option<(u8, u8)>, hour: u8) -> bool {
    match night {
        None => false,
        Some((f, t)) if f < t => (f..t).contains(&hour),
        Some((f, t)) => hour >= f || hour < t,
    }
}

/// The start of the UTC day of `now_ms` (the wall's "today").
pub fn day_start(now_ms: i64) -> i64 {
    now_ms - now_ms.rem_euclid(86_400_000)
}

/// Shortest gap between two pushes to one wall (at most 5 a second).
pub const PUSH_GAP: Duration = Duration::from_millis(200);
/// A heartbeat event this often.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A full snapshot at least this often (ages in the reasons move on; another replica's
/// revocation is seen).
pub const REFRESH: Duration = Duration::from_secs(10);
/// How long the day's figures are reused (they are a scan of the day's study events).
const TODAY_TTL: Duration = Duration::from_secs(15);

/// The day's figures by site, when they were read and the day they are of.
type TodayCache = (Instant, i64, BTreeMap<String, Today>);

/// The wall's signals: "the fleet changed" (the time of the latest change, Unix ms; a watch, so
/// any number of changes between two pushes is one push) and revoked link ids.
#[derive(Debug)]
pub struct Hub {
    changed: watch::Sender<i64>,
    revoked: broadcast::Sender<String>,
    today: Mutex<Option<TodayCache>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    /// A hub.
    pub fn new() -> Hub {
        Hub {
            changed: watch::channel(0).0,
            revoked: broadcast::channel(64).0,
            today: Mutex::new(None),
        }
    }

    /// Something walls show changed (a device, its connection, telemetry, an event).
    pub fn changed(&self) {
        let now = now_db();
        self.changed.send_replace(now);
    }

    /// Subscribes to changes.
    pub fn subscribe_changes(&self) -> watch::Receiver<i64> {
        self.changed.subscribe()
    }

    /// Subscribes to revocations.
    pub fn subscribe_revoked(&self) -> broadcast::Receiver<String> {
        self.revoked.subscribe()
    }
}

/// A new display link with its secret (shown once).
#[derive(Debug, Clone)]
pub struct NewDisplay {
    /// The stored link.
    pub link: DisplayLink,
    /// The secret of its URL (`/wall/<secret>`).
    pub secret: String,
}

/// What the audit log keeps of a link (never its secret).
#[derive(Debug, Serialize)]
struct AuditedLink<'a> {
    name: &'a str,
    sites: &'a Option<Vec<String>>,
    night_from: Option<u8>,
    night_to: Option<u8>,
}

fn random32() -> Result<[u8; 32], OpError> {
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| OpError::Random)?;
    Ok(b)
}

impl Ops {
    /// Creates a display link. `sites` none or empty: every site the creator may see.
    pub async fn create_display(
        &self,
        actor: &Actor,
        name: &str,
        sites: Option<Vec<String>>,
        night: Option<(u8, u8)>,
    ) -> Result<NewDisplay, OpError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(OpError::Invalid(
                "name: 1-100 characters (which screen it is, e.g. \"IT office TV\")".into(),
            ));
        }
        let scope = match sites.filter(|s| !s.is_empty()) {
            None => actor.principal.sites.clone(),
            Some(s) => {
                for site in &s {
                    actor.check_site(site)?;
                }
                SiteScope::from_list(Some(s))
            }
        };
        let random = random32()?;
        let secret = format_secret(&random);
        let id: String = random32()?[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let link = DisplayLink {
            id,
            name: name.to_owned(),
            sites: scope.to_list(),
            night,
            created_by: actor.principal.user.clone(),
            created_ms: now_db(),
            revoked_ms: None,
            last_used_ms: None,
        };
        self.store
            .create_display(&link, &sha256_hex(secret.as_bytes()))
            .await?;
        let audited = AuditedLink {
            name: &link.name,
            sites: &link.sites,
            night_from: night.map(|n| n.0),
            night_to: night.map(|n| n.1),
        };
        self.audit(
            actor,
            "display.create",
            &format!("display:{}", link.id),
            Outcome::Ok,
            None,
            serde_json::to_string(&audited).ok(),
        )
        .await;
        Ok(NewDisplay { link, secret })
    }

    /// Every display link, newest first.
    pub async fn displays(&self) -> Result<Vec<DisplayLink>, OpError> {
        Ok(self.store.displays().await?)
    }

    /// Revokes a display link: its walls close at once (their streams end and their page says
    /// the link is not valid any more).
    pub async fn revoke_display(&self, actor: &Actor, id: &str) -> Result<(), OpError> {
        if !self.store.revoke_display(id, now_db()).await? {
            return Err(OpError::NotFound(format!("no active display link {id:?}")));
        }
        let _ = self.wall.revoked.send(id.to_owned());
        self.audit(
            actor,
            "display.revoke",
            &format!("display:{id}"),
            Outcome::Ok,
            None,
            None,
        )
        .await;
        Ok(())
    }

    /// The active link of a secret (`None`: unknown, malformed or revoked).
    pub async fn open_display(&self, secret: &str) -> Result<Option<DisplayLink>, OpError> {
        if !looks_like(secret) {
            return Ok(None);
        }
        let link = self
            .store
            .display_by_hash(&sha256_hex(secret.as_bytes()))
            .await?
            .filter(DisplayLink::active);
        if let Some(l) = &link
            && let Err(e) = self.store.touch_display(&l.id, now_db()).await
        {
            tracing::warn!(error = %e, "cannot record a display link's use");
        }
        Ok(link)
    }

    /// Whether a link is still active (checked by open streams, for another replica's
    /// revocation).
    pub async fn display_active(&self, id: &str) -> Result<bool, OpError> {
        Ok(self.store.display(id).await?.is_some_and(|l| l.active()))
    }

    /// The wall of a link now: its sites, their appliances and figures.
    pub async fn wall_of(&self, link: &DisplayLink) -> Result<Wall, OpError> {
        let scope = SiteScope::from_list(link.sites.clone());
        let now = now_db();
        let sites: Vec<(String, String)> = self
            .sites(&scope)
            .await?
            .into_iter()
            .map(|s| (s.id, s.name))
            .collect();
        let devices = self.devices(&scope, None).await?;
        let mut heard = self.store.latest_telemetry_all(i64::MIN).await?;
        let latest: BTreeMap<String, _> = devices
            .iter()
            .filter_map(|d| heard.remove_entry(&d.id))
            .collect();
        let today = self.today(now).await?;
        Ok(Wall::of(&sites, &devices, &latest, &today, now))
    }

    /// The day's figures by site, reused for a few seconds.
    async fn today(&self, now: i64) -> Result<BTreeMap<String, Today>, OpError> {
        let start = day_start(now);
        if let Ok(g) = self.wall.today.lock()
            && let Some((at, day, t)) = g.as_ref()
            && *day == start
            && at.elapsed() < TODAY_TTL
        {
            return Ok(t.clone());
        }
        let t = self.store.today_by_site(start).await?;
        if let Ok(mut g) = self.wall.today.lock() {
            *g = Some((Instant::now(), start, t.clone()));
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_have_their_prefix_and_are_recognised() {
        let s = format_secret(&[0x5a; 32]);
        assert!(looks_like(&s) && s.starts_with("mgd_") && s.len() == 68);
        assert!(!looks_like(&s[..60]));
        assert!(!looks_like(&s.to_uppercase()));
        assert!(!looks_like("mgt_0000"));
    }

    #[test]
    fn night_hours_are_checked_and_may_wrap_past_midnight() {
        assert_eq!(parse_night("", ""), Ok(None));
        assert_eq!(parse_night("20", "7"), Ok(Some((20, 7))));
        assert!(parse_night("20", "").is_err());
        assert!(parse_night("24", "7").is_err());
        assert!(parse_night("5", "5").is_err());
        assert!(is_night(Some((20, 7)), 23) && is_night(Some((20, 7)), 3));
        assert!(!is_night(Some((20, 7)), 7) && !is_night(Some((20, 7)), 12));
        assert!(is_night(Some((1, 5)), 1) && !is_night(Some((1, 5)), 5));
        assert!(!is_night(None, 3));
    }

    #[test]
    fn the_day_starts_at_utc_midnight() {
        assert_eq!(day_start(86_400_000 * 3 + 5), 86_400_000 * 3);
    }
}
