//! The console's fleet queries: the devices list filtered, sorted and paged in the database
//! (one count, one page of rows, the page's tags — never the whole registry per request), the
//! values its filters offer, sites with their time zone and rooms, a configuration document,
//! and the room a claim token names. Statements are fixed texts joined with `$N` parameters
//! (hence `AssertSqlSafe`): no value from a request is ever part of the SQL.

use std::collections::HashMap;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{One, Result, Store, Two, rows_changed};
use crate::auth::SiteScope;
use crate::model::{Connection, Device, DeviceStatus};

/// Which devices: every filter of the devices list (all optional; `attention` as
/// `console::view::attention` decides it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceSelection {
    /// Site id.
    pub site: Option<String>,
    /// Registry status.
    pub status: Option<DeviceStatus>,
    /// Connection.
    pub connection: Option<Connection>,
    /// Appliance version (from the last birth).
    pub version: Option<String>,
    /// Hardware profile (from the last birth).
    pub profile: Option<String>,
    /// Has this tag.
    pub tag: Option<String>,
    /// Only devices that need attention.
    pub attention: bool,
    /// Part of the id, room or a tag, lower case.
    pub q: Option<String>,
}

/// A column of the devices list to sort by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    /// Device id.
    #[default]
    Device,
    /// Site id.
    Site,
    /// Room.
    Room,
    /// Registry status.
    Status,
    /// Connection.
    Connection,
    /// Last heard.
    LastSeen,
    /// Appliance version.
    Version,
    /// Hardware profile.
    Profile,
    /// Configuration drift.
    Config,
}

impl SortKey {
    /// Every key, as the URL names it.
    pub const ALL: [(SortKey, &'static str); 9] = [
        (SortKey::Device, "device"),
        (SortKey::Site, "site"),
        (SortKey::Room, "room"),
        (SortKey::Status, "status"),
        (SortKey::Connection, "connection"),
        (SortKey::LastSeen, "last_seen"),
        (SortKey::Version, "version"),
        (SortKey::Profile, "profile"),
        (SortKey::Config, "config"),
    ];

    /// The URL word.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("device", |(_, w)| w)
    }

    /// From the URL word.
    pub fn parse(word: &str) -> Option<SortKey> {
        Self::ALL.iter().find(|(_, w)| *w == word).map(|(k, _)| *k)
    }

    /// The SQL expression (a fixed text: never built from input).
    fn sql(self) -> &'static str {
        match self {
            SortKey::Device => "d.id",
            SortKey::Site => "d.site_id",
            SortKey::Room => "d.room",
            SortKey::Status => "d.status",
            SortKey::Connection => "d.connection",
            SortKey::LastSeen => "d.last_seen_ms",
            SortKey::Version => "d.appliance_version",
            SortKey::Profile => "d.hardware_profile",
            // failed, pending, in sync, none.
            SortKey::Config => {
                "CASE WHEN dd.version IS NULL THEN 3 \
                 WHEN r.desired_version = dd.version AND r.status = 'applied' THEN 2 \
                 WHEN r.desired_version = dd.version THEN 0 ELSE 1 END"
            }
        }
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortDir {
    /// Ascending.
    #[default]
    Asc,
    /// Descending.
    Desc,
}

/// The order of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceOrder {
    /// By.
    pub key: SortKey,
    /// Which way.
    pub dir: SortDir,
}

/// Values the devices list's filters offer (within the caller's sites).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facets {
    /// Appliance versions reported.
    pub versions: Vec<String>,
    /// Hardware profiles reported.
    pub profiles: Vec<String>,
    /// Tags in use.
    pub tags: Vec<String>,
}

/// A site with its time zone, rooms and device counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteDetail {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// IANA time zone, if set.
    pub time_zone: Option<String>,
    /// Rooms, by name.
    pub rooms: Vec<String>,
    /// Created (Unix ms).
    pub created_ms: i64,
    /// Devices registered there.
    pub devices: i64,
    /// Of which online.
    pub online: i64,
}

/// One bound value of a built statement.
#[derive(Debug, Clone)]
enum Arg {
    Text(String),
    Int(i64),
}

/// A statement's WHERE clause built from a selection: fixed SQL texts with `$N` parameters, the
/// values bound in order.
#[derive(Debug, Default)]
struct Where {
    sql: Vec<String>,
    args: Vec<Arg>,
}

impl Where {
    fn param(&mut self, v: Arg) -> String {
        self.args.push(v);
        format!("${}", self.args.len())
    }

    fn of(sel: &DeviceSelection, scope: &SiteScope) -> Where {
        let mut w = Where::default();
        if let SiteScope::Only(sites) = scope {
            if sites.is_empty() {
                w.sql.push("1 = 0".into());
            } else {
                let ps: Vec<String> = sites
                    .iter()
                    .map(|s| w.param(Arg::Text(s.clone())))
                    .collect();
                w.sql.push(format!("d.site_id IN ({})", ps.join(", ")));
            }
        }
        if let Some(s) = &sel.site {
            let p = w.param(Arg::Text(s.clone()));
            w.sql.push(format!("d.site_id = {p}"));
        }
        if let Some(s) = sel.status {
            let p = w.param(Arg::Text(s.as_str().into()));
            w.sql.push(format!("d.status = {p}"));
        }
        if let Some(c) = sel.connection {
            let p = w.param(Arg::Text(c.as_str().into()));
            w.sql.push(format!("d.connection = {p}"));
        }
        if let Some(v) = &sel.version {
            let p = w.param(Arg::Text(v.clone()));
            w.sql.push(format!("d.appliance_version = {p}"));
        }
        if let Some(v) = &sel.profile {
            let p = w.param(Arg::Text(v.clone()));
            w.sql.push(format!("d.hardware_profile = {p}"));
        }
        if let Some(t) = &sel.tag {
            let p = w.param(Arg::Text(t.clone()));
            w.sql.push(format!(
                "EXISTS (SELECT 1 FROM device_tags t WHERE t.device_id = d.id AND t.tag = {p})"
            ));
        }
        if sel.attention {
            // The SQL form of `console::view::attention` (a unit test holds them equal).
            w.sql.push(
                "(d.status = 'pending' OR (d.status = 'approved' AND (d.connection <> 'online' \
                 OR (dd.version IS NOT NULL AND r.desired_version = dd.version AND r.status <> 'applied'))))"
                    .into(),
            );
        }
        if let Some(q) = &sel.q {
            let p = w.param(Arg::Text(format!("%{}%", like_escape(q))));
            w.sql.push(format!(
                "(LOWER(d.id) LIKE {p} ESCAPE '\\' OR LOWER(COALESCE(d.room, '')) LIKE {p} ESCAPE '\\' \
                 OR EXISTS (SELECT 1 FROM device_tags t WHERE t.device_id = d.id AND LOWER(t.tag) LIKE {p} ESCAPE '\\'))"
            ));
        }
        w
    }

    fn clause(&self) -> String {
        if self.sql.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.sql.join(" AND "))
        }
    }
}

/// `%`, `_` and `\` taken literally in a LIKE pattern (with `ESCAPE '\'`).
fn like_escape(q: &str) -> String {
    let mut out = String::with_capacity(q.len());
    for c in q.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

const FROM: &str = " FROM devices d LEFT JOIN device_desired dd ON dd.device_id = d.id \
                    LEFT JOIN device_reported r ON r.device_id = d.id";

const COLUMNS: &str = "SELECT d.id, d.site_id, d.room, d.status, d.connection, d.last_seen_ms, d.inventory, \
     d.running_config_version, d.events_received, dd.version AS desired_version, \
     r.desired_version AS reported_desired_version, r.status AS reported_status";

macro_rules! bind_all {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                Arg::Text(s) => q.bind(s.clone()),
                Arg::Int(i) => q.bind(*i),
            };
        }
        q
    }};
}

impl<'r> sqlx::FromRow<'r, AnyRow> for SiteDetail {
    fn from_row(r: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(SiteDetail {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            time_zone: r.try_get("time_zone")?,
            rooms: Vec::new(),
            created_ms: r.try_get("created_ms")?,
            devices: r.try_get("devices")?,
            online: r.try_get("online")?,
        })
    }
}

impl Store {
    /// How many devices a selection holds within a scope.
    pub async fn count_devices(&self, sel: &DeviceSelection, scope: &SiteScope) -> Result<i64> {
        let w = Where::of(sel, scope);
        let sql = format!("SELECT COUNT(*){FROM}{}", w.clause());
        let One(n) = bind_all!(
            sqlx::query_as::<_, One<i64>>(sqlx::AssertSqlSafe(sql)),
            &w.args
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }

    /// One page of a selection within a scope, in order (ties by device id), with their tags.
    pub async fn device_page(
        &self,
        sel: &DeviceSelection,
        scope: &SiteScope,
        order: DeviceOrder,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<Device>> {
        let mut w = Where::of(sel, scope);
        let dir = match order.dir {
            SortDir::Asc => "ASC",
            SortDir::Desc => "DESC",
        };
        let key = order.key.sql();
        // Missing values last whichever the direction (SQLite and PostgreSQL differ otherwise).
        let order_by = if order.key == SortKey::Device {
            format!("d.id {dir}")
        } else {
            format!("({key}) IS NULL, {key} {dir}, d.id")
        };
        let clause = w.clause();
        let lim = w.param(Arg::Int(limit));
        let off = w.param(Arg::Int(offset));
        let sql = format!("{COLUMNS}{FROM}{clause} ORDER BY {order_by} LIMIT {lim} OFFSET {off}");
        let mut devices = bind_all!(
            sqlx::query_as::<_, Device>(sqlx::AssertSqlSafe(sql)),
            &w.args
        )
        .fetch_all(&self.pool)
        .await?;
        self.fill_tags(&mut devices).await?;
        Ok(devices)
    }

    /// Ids and sites of every device of a selection within a scope, by id.
    pub async fn selected_devices(
        &self,
        sel: &DeviceSelection,
        scope: &SiteScope,
    ) -> Result<Vec<(String, String)>> {
        let w = Where::of(sel, scope);
        let sql = format!("SELECT d.id, d.site_id{FROM}{} ORDER BY d.id", w.clause());
        Ok(bind_all!(
            sqlx::query_as::<_, Two<String, String>>(sqlx::AssertSqlSafe(sql)),
            &w.args
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|Two(id, site)| (id, site))
        .collect())
    }

    async fn fill_tags(&self, devices: &mut [Device]) -> Result<()> {
        if devices.is_empty() {
            return Ok(());
        }
        let ps: Vec<String> = (1..=devices.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT device_id, tag FROM device_tags WHERE device_id IN ({}) ORDER BY device_id, tag",
            ps.join(", ")
        );
        let mut q = sqlx::query_as::<_, Two<String, String>>(sqlx::AssertSqlSafe(sql));
        for d in devices.iter() {
            q = q.bind(d.id.clone());
        }
        let mut tags: HashMap<String, Vec<String>> = HashMap::new();
        for Two(device, tag) in q.fetch_all(&self.pool).await? {
            tags.entry(device).or_default().push(tag);
        }
        for d in devices.iter_mut() {
            d.tags = tags.remove(&d.id).unwrap_or_default();
        }
        Ok(())
    }

    /// The versions, hardware profiles and tags devices within a scope have.
    pub async fn facets(&self, scope: &SiteScope) -> Result<Facets> {
        let w = Where::of(&DeviceSelection::default(), scope);
        let and = |extra: &str| {
            if w.sql.is_empty() {
                format!(" WHERE {extra}")
            } else {
                format!("{} AND {extra}", w.clause())
            }
        };
        let versions = self
            .strings(
                format!(
                    "SELECT DISTINCT d.appliance_version FROM devices d{} ORDER BY d.appliance_version",
                    and("d.appliance_version IS NOT NULL")
                ),
                &w.args,
            )
            .await?;
        let profiles = self
            .strings(
                format!(
                    "SELECT DISTINCT d.hardware_profile FROM devices d{} ORDER BY d.hardware_profile",
                    and("d.hardware_profile IS NOT NULL")
                ),
                &w.args,
            )
            .await?;
        let tags = self
            .strings(
                format!(
                    "SELECT DISTINCT t.tag FROM device_tags t JOIN devices d ON d.id = t.device_id{} ORDER BY t.tag LIMIT 500",
                    w.clause()
                ),
                &w.args,
            )
            .await?;
        Ok(Facets {
            versions,
            profiles,
            tags,
        })
    }

    async fn strings(&self, sql: String, args: &[Arg]) -> Result<Vec<String>> {
        Ok(bind_all!(
            sqlx::query_as::<_, One<String>>(sqlx::AssertSqlSafe(sql)),
            args
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|One(v)| v)
        .collect())
    }

    /// Fills the version and hardware profile columns of devices whose last birth predates
    /// them (a database from before migration 5); run at start, cheap once done.
    pub async fn backfill_inventory_columns(&self) -> Result<u64> {
        let rows = sqlx::query_as::<_, Two<String, String>>(
            "SELECT id, inventory FROM devices WHERE inventory IS NOT NULL AND appliance_version IS NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut n = 0;
        for Two(id, inv) in rows {
            let Ok(inv) = serde_json::from_str::<medgate_contract::Inventory>(&inv) else {
                continue;
            };
            sqlx::query(
                "UPDATE devices SET appliance_version = $1, hardware_profile = $2 WHERE id = $3",
            )
            .bind(inv.appliance_version.as_str())
            .bind(inv.hardware_profile.as_str())
            .bind(id)
            .execute(&self.pool)
            .await?;
            n += 1;
        }
        Ok(n)
    }

    /// Sites (within a scope) with time zone, rooms and counts, by id.
    pub async fn site_details(&self, scope: &SiteScope) -> Result<Vec<SiteDetail>> {
        let mut sites = sqlx::query_as::<_, SiteDetail>(
            "SELECT s.id, s.name, s.time_zone, s.created_ms, \
             (SELECT COUNT(*) FROM devices d WHERE d.site_id = s.id) AS devices, \
             (SELECT COUNT(*) FROM devices d WHERE d.site_id = s.id AND d.connection = 'online') AS online \
             FROM sites s ORDER BY s.id",
        )
        .fetch_all(&self.pool)
        .await?;
        sites.retain(|s| scope.allows(&s.id));
        let mut rooms: HashMap<String, Vec<String>> = HashMap::new();
        for Two(site, room) in sqlx::query_as::<_, Two<String, String>>(
            "SELECT site_id, name FROM site_rooms ORDER BY site_id, name",
        )
        .fetch_all(&self.pool)
        .await?
        {
            rooms.entry(site).or_default().push(room);
        }
        for s in &mut sites {
            s.rooms = rooms.remove(&s.id).unwrap_or_default();
        }
        Ok(sites)
    }

    /// One site with its time zone, rooms and counts.
    pub async fn site_detail(&self, id: &str) -> Result<Option<SiteDetail>> {
        let one = SiteScope::from_list(Some(vec![id.to_owned()]));
        Ok(self.site_details(&one).await?.into_iter().next())
    }

    /// Sets a site's time zone and replaces its rooms (one transaction); false if no such site.
    pub async fn set_site_details(
        &self,
        id: &str,
        time_zone: Option<&str>,
        rooms: &[String],
    ) -> Result<bool> {
        let _w = self.write_guard().await;
        let mut tx = self.tx().await?;
        let r = sqlx::query("UPDATE sites SET time_zone = $1 WHERE id = $2")
            .bind(time_zone)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if !rows_changed(&r) {
            return Ok(false);
        }
        sqlx::query("DELETE FROM site_rooms WHERE site_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for room in rooms {
            sqlx::query(
                "INSERT INTO site_rooms (site_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(room)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Events of the devices of the sites in `scope`, newest first.
    pub async fn events_of_sites(
        &self,
        scope: &SiteScope,
        since_ms: i64,
        limit: i64,
    ) -> Result<Vec<crate::model::EventRecord>> {
        let mut w = Where::of(&DeviceSelection::default(), scope);
        let clause = w.clause();
        let since = w.param(Arg::Int(since_ms));
        let lim = w.param(Arg::Int(limit));
        let sql = format!(
            "SELECT e.device_id, e.event_id, e.at_ms, e.received_ms, e.kind, e.data FROM events e \
             WHERE e.received_ms >= {since} AND e.device_id IN (SELECT d.id FROM devices d{clause}) \
             ORDER BY e.received_ms DESC, e.event_id DESC LIMIT {lim}"
        );
        Ok(bind_all!(
            sqlx::query_as::<_, crate::model::EventRecord>(sqlx::AssertSqlSafe(sql)),
            &w.args
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records the room a claim token's appliance goes to.
    pub async fn set_claim_room(&self, token_hash: &str, room: &str) -> Result<()> {
        sqlx::query("UPDATE claim_tokens SET room = $1 WHERE token_hash = $2")
            .bind(room)
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// After enrollment with a claim token: the device gets the room its claim named, if any
    /// (and it has none yet).
    pub async fn apply_claim_room(&self, token_hash: &str, device: &str) -> Result<()> {
        let room = sqlx::query_as::<_, One<Option<String>>>(
            "SELECT room FROM claim_tokens WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(One(Some(room))) = room {
            sqlx::query("UPDATE devices SET room = $1 WHERE id = $2 AND room IS NULL")
                .bind(room)
                .bind(device)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Whether a claim token is valid now (unused, unexpired) for a site: the provisioning
    /// file is only built around such a token. Returns its device and expiry.
    pub async fn open_claim(
        &self,
        token_hash: &str,
        site: &str,
        now: i64,
    ) -> Result<Option<(String, i64)>> {
        Ok(sqlx::query_as::<_, Two<String, i64>>(
            "SELECT device_id, expires_ms FROM claim_tokens WHERE token_hash = $1 AND site_id = $2 \
             AND used_ms IS NULL AND expires_ms > $3",
        )
        .bind(token_hash)
        .bind(site)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?
        .map(|Two(d, e)| (d, e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_take_wildcards_literally_and_sort_words_round_trip() {
        assert_eq!(like_escape("a%b_c\\d"), "a\\%b\\_c\\\\d");
        for (k, w) in SortKey::ALL {
            assert_eq!(SortKey::parse(w), Some(k));
            assert_eq!(k.as_str(), w);
        }
        assert_eq!(SortKey::parse("id; DROP TABLE devices"), None);
    }

    #[test]
    fn a_selection_becomes_fixed_sql_with_its_values_bound() {
        let sel = DeviceSelection {
            site: Some("a".into()),
            q: Some("ct".into()),
            attention: true,
            ..DeviceSelection::default()
        };
        let scope = SiteScope::from_list(Some(vec!["a".into(), "b".into()]));
        let w = Where::of(&sel, &scope);
        let c = w.clause();
        assert!(
            c.starts_with(" WHERE d.site_id IN ($1, $2) AND d.site_id = $3"),
            "{c}"
        );
        assert!(c.contains("LIKE $4"), "{c}");
        assert_eq!(w.args.len(), 4);
        let none = Where::of(&sel, &SiteScope::Only(Default::default()));
        assert!(none.clause().starts_with(" WHERE 1 = 0"));
    }

    /// 250 devices in every state the attention rule knows: the database's filter agrees with
    /// `console::view::attention`, pages hold 100, the order is total.
    #[tokio::test]
    async fn the_database_filters_sorts_and_pages_as_the_console_decides() {
        use medgate_contract::{DeviceId, SiteId};
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url, None).await.expect("connect");
        let statuses = DeviceStatus::ALL;
        let connections = Connection::ALL;
        for i in 0..250_usize {
            let site = SiteId::new(if i % 3 == 0 { "b" } else { "a" }).expect("site");
            let id = format!("d{i:03}");
            let dev = DeviceId::new(id.as_str()).expect("id");
            let status = statuses[i % statuses.len()];
            store
                .register_device(&site, &dev, status, 1)
                .await
                .expect("register");
            let conn = connections[(i / 4) % connections.len()];
            sqlx::query("UPDATE devices SET connection = $1, last_seen_ms = $2, appliance_version = $3 WHERE id = $4")
                .bind(conn.as_str())
                .bind(i64::try_from(i % 7).expect("small"))
                .bind(if i % 5 == 0 { None } else { Some(format!("1.{}", i % 2)) })
                .bind(&id)
                .execute(&store.pool)
                .await
                .expect("update");
            // Desired and reported configuration: none, in sync, failed, pending.
            match i % 4 {
                0 => {}
                k => {
                    sqlx::query("INSERT INTO device_desired (device_id, version, source, config, updated_ms) VALUES ($1, 2, 'device:x', '{}', 1)")
                        .bind(&id)
                        .execute(&store.pool)
                        .await
                        .expect("desired");
                    let (v, st) = match k {
                        1 => (2, "applied"),
                        2 => (2, "rolled_back"),
                        _ => (1, "applied"),
                    };
                    sqlx::query("INSERT INTO device_reported (device_id, running_version, desired_version, status, problems, at_ms) VALUES ($1, 1, $2, $3, '[]', 1)")
                        .bind(&id)
                        .bind(v)
                        .bind(st)
                        .execute(&store.pool)
                        .await
                        .expect("reported");
                }
            }
        }
        let all = SiteScope::All;
        let everything = store
            .device_page(
                &DeviceSelection::default(),
                &all,
                DeviceOrder::default(),
                0,
                1000,
            )
            .await
            .expect("all");
        assert_eq!(everything.len(), 250);
        let attention = DeviceSelection {
            attention: true,
            ..DeviceSelection::default()
        };
        let by_sql: Vec<String> = store
            .device_page(&attention, &all, DeviceOrder::default(), 0, 1000)
            .await
            .expect("attention")
            .into_iter()
            .map(|d| d.id)
            .collect();
        let by_rule: Vec<String> = everything
            .iter()
            .filter(|d| crate::console::view::attention(d).is_some())
            .map(|d| d.id.clone())
            .collect();
        assert!(!by_rule.is_empty() && by_rule.len() < 250);
        assert_eq!(by_sql, by_rule);
        assert_eq!(
            store.count_devices(&attention, &all).await.expect("count"),
            i64::try_from(by_rule.len()).expect("small")
        );
        // Site scope, pages of 100 and a total order (nulls last, ties by id) both ways.
        let only_a = SiteScope::from_list(Some(vec!["a".into()]));
        assert_eq!(
            store
                .count_devices(&DeviceSelection::default(), &only_a)
                .await
                .expect("n"),
            166
        );
        for dir in [SortDir::Asc, SortDir::Desc] {
            for (key, _) in SortKey::ALL {
                let order = DeviceOrder { key, dir };
                let mut paged = Vec::new();
                for p in 0..2 {
                    let page = store
                        .device_page(&DeviceSelection::default(), &only_a, order, p * 100, 100)
                        .await
                        .expect("page");
                    assert!(page.iter().all(|d| d.site == "a"));
                    paged.extend(page.into_iter().map(|d| d.id));
                }
                let mut sorted = paged.clone();
                sorted.sort();
                sorted.dedup();
                assert_eq!(sorted.len(), 166, "{key:?} {dir:?}: every device once");
                if key == SortKey::Version {
                    let last = store
                        .device_page(&DeviceSelection::default(), &only_a, order, 165, 1)
                        .await
                        .expect("last");
                    let v = sqlx::query_as::<_, One<Option<String>>>(
                        "SELECT appliance_version FROM devices WHERE id = $1",
                    )
                    .bind(&last[0].id)
                    .fetch_one(&store.pool)
                    .await
                    .expect("v");
                    assert_eq!(v.0, None, "{dir:?}: devices without a version come last");
                }
            }
        }
        // Search takes % and _ literally.
        let q = |s: &str| DeviceSelection {
            q: Some(s.into()),
            ..DeviceSelection::default()
        };
        assert_eq!(store.count_devices(&q("d24"), &all).await.expect("n"), 10);
        assert_eq!(store.count_devices(&q("%"), &all).await.expect("n"), 0);
        let v = DeviceSelection {
            version: Some("1.1".into()),
            site: Some("a".into()),
            ..DeviceSelection::default()
        };
        let n = everything
            .iter()
            .enumerate()
            .filter(|(i, d)| d.site == "a" && i % 5 != 0 && i % 2 == 1)
            .count();
        assert_eq!(
            store.count_devices(&v, &all).await.expect("n"),
            i64::try_from(n).expect("small")
        );
    }
}
