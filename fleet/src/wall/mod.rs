//! The wall (docs/fleet.md, "The wall"): a read-only, full-screen view of the appliances of some
//! sites for a TV in the IT office, opened by a display link — a secret URL created and revoked
//! by an admin in the console, with no session that could expire.
//!
//! - [`tile`]: what a tile says (sans-IO: device, latest telemetry and now in, tile out) and
//!   the per-hospital figures.
//! - [`alarms`]: the active alarms band (sans-IO: firing alerts in, rows out).
//! - [`page`]: the page and the live fragment (maud).
//! - [`http`]: the handlers: the wall, its SSE stream, the console's display links page.
//! - this module: display link secrets, night hours, the [`Hub`] (the "fleet changed" signal and
//!   revocations, which close open streams at once) and the operations on links.

pub mod alarms;
pub mod http;
pub mod page;
pub mod tile;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::auth::SiteScope;
use crate::model::AlertState;
use crate::ops::{Actor, OpError, Ops, sha256_hex};
use crate::store::alerts::AlertFilter;
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

const DAY_MS: i64 = 86_400_000;

/// A screen's offset from UTC as the browser gives it (`new Date().getTimezoneOffset()`: UTC
/// minus local time, in whole minutes — `-60` in Zürich in winter, `300` in New York), checked:
/// -14 h to +14 h.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TzOffset(i16);

impl TzOffset {
    /// UTC.
    pub const UTC: TzOffset = TzOffset(0);
    /// The furthest offset there is (UTC+14, UTC-12 and a margin), in minutes.
    pub const MAX_MINUTES: i16 = 14 * 60;

    /// From minutes (UTC minus local), if within -14 h..+14 h.
    pub fn from_minutes(m: i64) -> Option<TzOffset> {
        i16::try_from(m)
            .ok()
            .filter(|m| m.abs() <= Self::MAX_MINUTES)
            .map(TzOffset)
    }

    /// From the query's `tz` value (absent or empty: UTC).
    pub fn parse(v: Option<&str>) -> Result<TzOffset, String> {
        let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(TzOffset::UTC);
        };
        v.parse::<i64>()
            .ok()
            .and_then(TzOffset::from_minutes)
            .ok_or_else(|| {
                format!(
                    "tz {v:?}: give the screen's offset as whole minutes from -840 to 840, as \
                     the browser's Date.getTimezoneOffset() says (e.g. -60 for UTC+1); or leave \
                     it out for UTC"
                )
            })
    }

    /// The minutes (UTC minus local).
    pub fn minutes(self) -> i16 {
        self.0
    }

    fn ms(self) -> i64 {
        i64::from(self.0) * 60_000
    }
}

/// The start of the local day of `now_ms` on a screen at offset `tz` (the wall's "today"), in
/// Unix ms: local midnight. The offset is the screen's now (no daylight-saving rules here).
pub fn day_start(now_ms: i64, tz: TzOffset) -> i64 {
    let local = now_ms - tz.ms();
    local - local.rem_euclid(DAY_MS) + tz.ms()
}

/// The start of the last hour's figures.
pub fn hour_start(now_ms: i64) -> i64 {
    now_ms.saturating_sub(3_600_000)
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

/// The day's figures by site and when they were read, by the day's start (screens in other
/// time zones have other days).
type TodayCache = BTreeMap<i64, (Instant, BTreeMap<String, Today>)>;

/// The wall's signals: "the fleet changed" (the time of the latest change, Unix ms; a watch, so
/// any number of changes between two pushes is one push) and revoked link ids.
#[derive(Debug)]
pub struct Hub {
    changed: watch::Sender<i64>,
    revoked: broadcast::Sender<String>,
    today: Mutex<TodayCache>,
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
            today: Mutex::new(BTreeMap::new()),
        }
    }

    /// Something walls show changed (a device, its connection, telemetry, an event, an alert).
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

    /// The wall of a link now, for a screen at offset `tz` (its "today" starts at its local
    /// midnight): its sites, their appliances, figures and active alarms.
    pub async fn wall_of(&self, link: &DisplayLink, tz: TzOffset) -> Result<Wall, OpError> {
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
        let today = self.today(now, tz).await?;
        let firing = AlertFilter {
            state: Some(AlertState::Firing),
            limit: Some(10_000),
            ..AlertFilter::default()
        };
        let alerts = self.alerts(&scope, &firing).await?;
        let mut wall = Wall::of(&sites, &devices, &latest, &today, &alerts, now);
        wall.rollouts = self.rollouts(&scope).await?;
        Ok(wall)
    }

    /// ota (issue 14): the running and paused campaigns with devices in `scope`.
    async fn rollouts(&self, scope: &SiteScope) -> Result<Vec<tile::Rollout>, OpError> {
        use crate::ota::campaign::{CampaignState, DeviceState};
        let mut out = Vec::new();
        for id in self.store.live_campaigns().await? {
            let v = match self.campaign_view(scope, &id).await {
                Ok(v) => v,
                Err(OpError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            out.push(tile::Rollout {
                name: v.campaign.name.clone(),
                version: v.version.clone(),
                paused: (v.campaign.state == CampaignState::Paused).then(|| {
                    v.campaign
                        .paused_reason
                        .clone()
                        .unwrap_or_else(|| "by an operator".into())
                }),
                healthy: v.count(DeviceState::Healthy),
                failed: v.count(DeviceState::Failed),
                waiting: v.count(DeviceState::WaitingIdle),
                total: v.total(),
            });
        }
        Ok(out)
    }

    /// The day's figures by site, reused for a few seconds per day start.
    async fn today(&self, now: i64, tz: TzOffset) -> Result<BTreeMap<String, Today>, OpError> {
        let start = day_start(now, tz);
        if let Ok(g) = self.wall.today.lock()
            && let Some((at, t)) = g.get(&start)
            && at.elapsed() < TODAY_TTL
        {
            return Ok(t.clone());
        }
        let t = self.store.today_by_site(start, hour_start(now)).await?;
        if let Ok(mut g) = self.wall.today.lock() {
            // At most one entry per time zone in use, each dropped once stale.
            g.retain(|_, (at, _)| at.elapsed() < TODAY_TTL);
            g.insert(start, (Instant::now(), t.clone()));
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

    const H: i64 = 3_600_000;

    #[test]
    fn the_day_starts_at_the_screens_local_midnight() {
        let day3 = DAY_MS * 3;
        assert_eq!(day_start(day3 + 5, TzOffset::UTC), day3);
        // UTC+1 (the browser says -60): local midnight is 23:00 UTC the day before.
        let cet = TzOffset::from_minutes(-60).expect("offset");
        assert_eq!(day_start(day3 + 5, cet), day3 - H);
        assert_eq!(
            day_start(day3 - H, cet),
            day3 - H,
            "midnight itself is the start"
        );
        assert_eq!(day_start(day3 - H - 1, cet), day3 - H - DAY_MS);
        // UTC-5 (300): local midnight is 05:00 UTC; at 03:00 UTC it is still yesterday there.
        let ny = TzOffset::from_minutes(300).expect("offset");
        assert_eq!(day_start(day3 + 3 * H, ny), day3 - DAY_MS + 5 * H);
        assert_eq!(day_start(day3 + 6 * H, ny), day3 + 5 * H);
        // Half and quarter hours: India (UTC+5:30), Nepal (UTC+5:45), the edges (±14 h).
        let india = TzOffset::from_minutes(-330).expect("offset");
        assert_eq!(day_start(day3 + H, india), day3 - 5 * H - 30 * 60_000);
        let nepal = TzOffset::from_minutes(-345).expect("offset");
        assert_eq!(day_start(day3 + 20 * H, nepal), day3 + 18 * H + 15 * 60_000);
        let kiritimati = TzOffset::from_minutes(-840).expect("offset");
        assert_eq!(day_start(day3 + 9 * H, kiritimati), day3 - 14 * H);
        let far_west = TzOffset::from_minutes(840).expect("offset");
        assert_eq!(day_start(day3 + 13 * H, far_west), day3 - 10 * H);
        // Before 1970 too (rem_euclid, not %).
        assert_eq!(day_start(-1, TzOffset::UTC), -DAY_MS);
        // A day is always 24 h long and holds `now`.
        for m in [-840, -345, -60, 0, 1, 59, 300, 840] {
            let tz = TzOffset::from_minutes(m).expect("offset");
            for now in [0, day3 + 1, day3 + 23 * H + 59 * 60_000, 1_790_000_000_000] {
                let s = day_start(now, tz);
                assert!(s <= now && now < s + DAY_MS, "{m} {now}");
                assert_eq!(day_start(s + DAY_MS, tz), s + DAY_MS);
            }
        }
        assert_eq!(hour_start(5 * H), 4 * H);
    }

    #[test]
    fn screen_offsets_are_checked_whole_minutes_within_14_hours() {
        assert_eq!(TzOffset::parse(None), Ok(TzOffset::UTC));
        assert_eq!(TzOffset::parse(Some("")), Ok(TzOffset::UTC));
        assert_eq!(TzOffset::parse(Some("-60")).map(TzOffset::minutes), Ok(-60));
        assert_eq!(TzOffset::parse(Some("840")).map(TzOffset::minutes), Ok(840));
        assert_eq!(
            TzOffset::parse(Some("-840")).map(TzOffset::minutes),
            Ok(-840)
        );
        for bad in [
            "841",
            "-841",
            "1.5",
            "60m",
            "+-1",
            "99999999999999999999",
            "UTC",
        ] {
            let e = TzOffset::parse(Some(bad)).expect_err(bad);
            assert!(e.contains("whole minutes from -840 to 840"), "{bad}: {e}");
        }
    }
}
