//! The audit log: who did what, when, from where, to what, with what outcome, and the state
//! before and after (JSON text; counts, states, names and configuration — never patient data,
//! which the fleet does not have). Append-only: this module has no UPDATE or DELETE, and the
//! database refuses them (triggers of migration 4, on SQLite and on PostgreSQL).

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Result, Store};

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done.
    Ok,
    /// Refused by the policy, the site scope, a CSRF check or the login throttle.
    Denied,
    /// Tried and failed (a wrong password, an invalid request).
    Failed,
}

impl Outcome {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
}

impl std::str::FromStr for Outcome {
    type Err = crate::model::Unreadable;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "ok" => Ok(Outcome::Ok),
            "denied" => Ok(Outcome::Denied),
            "failed" => Ok(Outcome::Failed),
            _ => Err(crate::model::Unreadable {
                what: "audit outcome",
                value: s.to_owned(),
            }),
        }
    }
}

/// One entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Time-ordered id.
    pub id: String,
    /// When (Unix ms).
    pub at_ms: i64,
    /// Who: a user name, `alice (token …)`, `break-glass`, `cli`, or the name tried at a login.
    pub actor: String,
    /// From where (IP address), if known.
    pub source: Option<String>,
    /// What: `device.patch`, `login`, `user.create`, …
    pub action: String,
    /// To what: `device:ct-1`, `user:alice`, a route, …
    pub target: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The state before (JSON text).
    pub before: Option<String>,
    /// The state after (JSON text).
    pub after: Option<String>,
}

impl<'r> sqlx::FromRow<'r, AnyRow> for AuditEntry {
    fn from_row(r: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(AuditEntry {
            id: r.try_get("id")?,
            at_ms: r.try_get("at_ms")?,
            actor: r.try_get("actor")?,
            source: r.try_get("source")?,
            action: r.try_get("action")?,
            target: r.try_get("target")?,
            outcome: super::word(r, "outcome")?,
            before: r.try_get("before_json")?,
            after: r.try_get("after_json")?,
        })
    }
}

/// Which entries to read; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Exactly this actor.
    pub actor: Option<String>,
    /// Actions starting with this (`device.` for every device action).
    pub action: Option<String>,
    /// Exactly this target.
    pub target: Option<String>,
    /// This outcome (`ok`, `denied`, `failed`).
    pub outcome: Option<String>,
    /// At or after (Unix ms).
    pub since_ms: Option<i64>,
    /// Before (Unix ms).
    pub until_ms: Option<i64>,
    /// At most (default 1000, up to 100,000).
    pub limit: Option<i64>,
    /// Only entries older than this id (the next page of a listing, newest first).
    pub before: Option<String>,
}

impl Store {
    /// Appends an entry.
    pub async fn append_audit(&self, e: &AuditEntry) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        Self::insert_audit(&mut conn, e).await
    }

    /// Appends the entry `make` returns, calling it only once a connection is at hand: its id
    /// and time are taken just before the INSERT, not before a wait for the pool, so the time
    /// from id to commit stays short (the ATNA forwarder's settle window relies on it).
    pub async fn append_audit_stamped(
        &self,
        make: impl FnOnce() -> AuditEntry,
    ) -> Result<AuditEntry> {
        let mut conn = self.pool.acquire().await?;
        let e = make();
        Self::insert_audit(&mut conn, &e).await?;
        Ok(e)
    }

    async fn insert_audit(conn: &mut sqlx::AnyConnection, e: &AuditEntry) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit (id, at_ms, actor, source, action, target, outcome, before_json, after_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&e.id)
        .bind(e.at_ms)
        .bind(&e.actor)
        .bind(e.source.as_deref())
        .bind(&e.action)
        .bind(&e.target)
        .bind(e.outcome.as_str())
        .bind(e.before.as_deref())
        .bind(e.after.as_deref())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Entries matching `f`, newest first.
    pub async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let limit = f.limit.unwrap_or(1000).clamp(1, 100_000);
        let action_prefix = f.action.as_deref().map(|a| {
            // LIKE with the prefix's own wildcards escaped.
            let escaped: String = a
                .chars()
                .flat_map(|c| match c {
                    '%' | '_' | '\\' => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            format!("{escaped}%")
        });
        Ok(sqlx::query_as::<_, AuditEntry>(
            "SELECT id, at_ms, actor, source, action, target, outcome, before_json, after_json FROM audit \
             WHERE ($1 = '' OR actor = $1) AND ($2 = '' OR action LIKE $2 ESCAPE '\\') AND ($3 = '' OR target = $3) \
             AND ($4 = '' OR outcome = $4) AND at_ms >= $5 AND at_ms < $6 AND ($8 = '' OR id < $8) ORDER BY id DESC LIMIT $7",
        )
        .bind(f.actor.as_deref().unwrap_or(""))
        .bind(action_prefix.as_deref().unwrap_or(""))
        .bind(f.target.as_deref().unwrap_or(""))
        .bind(f.outcome.as_deref().unwrap_or(""))
        .bind(f.since_ms.unwrap_or(0))
        .bind(f.until_ms.unwrap_or(i64::MAX))
        .bind(limit)
        .bind(f.before.as_deref().unwrap_or(""))
        .fetch_all(&self.pool)
        .await?)
    }
}

/// An entry's id: `micros` (Unix µs, 16 digits, zero-padded) then `suffix` (random hex, unique
/// across replicas). Id order is time order; [`audit_id_floor`] relies on this form.
pub fn audit_id(micros: u64, suffix: &str) -> String {
    format!("{micros:016}{suffix}")
}

/// The smallest id an entry made at or after `at_ms` can have: every id below it was made
/// before `at_ms` (by the clock of the replica that made it).
pub fn audit_id_floor(at_ms: i64) -> String {
    audit_id(u64::try_from(at_ms.max(0)).unwrap_or(0) * 1000, "")
}

/// atna (issue 13 part 4): the ATNA forwarder's reading of the log.
impl Store {
    /// Up to `limit` entries after the entry `after_id` (`""`: from the start) and before
    /// `before_id` (exclusive; the forwarder passes [`audit_id_floor`] of its settle time),
    /// oldest first.
    pub async fn audit_after(
        &self,
        after_id: &str,
        before_id: &str,
        limit: i64,
    ) -> Result<Vec<AuditEntry>> {
        Ok(sqlx::query_as::<_, AuditEntry>(
            "SELECT id, at_ms, actor, source, action, target, outcome, before_json, after_json FROM audit \
             WHERE id > $1 AND id < $2 ORDER BY id ASC LIMIT $3",
        )
        .bind(after_id)
        .bind(before_id)
        .bind(limit.clamp(1, 10_000))
        .fetch_all(&self.pool)
        .await?)
    }

    /// How many entries come after `after_id` (settled or not): the forwarder's backlog.
    pub async fn audit_count_after(&self, after_id: &str) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM audit WHERE id > $1")
            .bind(after_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Takes or renews the forwarding lease of destination `name` for `holder` until
    /// `until_ms`: true if `holder` now has it (it had it, or nobody did, or the last holder's
    /// lease ran out before `now_ms`), false if another replica holds it. One statement, so of
    /// two replicas asking at once exactly one wins, on SQLite and on PostgreSQL.
    pub async fn take_atna_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO atna_lease (name, holder, until_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms \
             WHERE atna_lease.holder = excluded.holder OR atna_lease.until_ms < $4",
        )
        .bind(name)
        .bind(holder)
        .bind(until_ms)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(super::rows_changed(&r))
    }

    /// The id of the last entry forwarded to destination `name` (`""` if none yet).
    pub async fn atna_cursor(&self, name: &str) -> Result<String> {
        let row = sqlx::query("SELECT last_id FROM atna_cursor WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get("last_id")?,
            None => String::new(),
        })
    }

    /// Moves the cursor of `name` to `last_id`, never backwards (another replica may be ahead).
    pub async fn advance_atna_cursor(&self, name: &str, last_id: &str, now_ms: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO atna_cursor (name, last_id, updated_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET last_id = excluded.last_id, updated_ms = excluded.updated_ms \
             WHERE atna_cursor.last_id < excluded.last_id",
        )
        .bind(name)
        .bind(last_id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// The entries as CSV (RFC 4180, a header line). A cell that a spreadsheet would read as a
/// formula (starting with `=`, `+`, `-`, `@`) is prefixed with `'`.
pub fn to_csv(entries: &[AuditEntry]) -> String {
    fn cell(out: &mut String, v: &str) {
        let v = if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{v}")
        } else {
            v.to_owned()
        };
        if v.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&v.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&v);
        }
    }
    let mut out = String::from("id,at_ms,actor,source,action,target,outcome,before,after\r\n");
    for e in entries {
        let at = e.at_ms.to_string();
        let cells = [
            e.id.as_str(),
            &at,
            &e.actor,
            e.source.as_deref().unwrap_or(""),
            &e.action,
            &e.target,
            e.outcome.as_str(),
            e.before.as_deref().unwrap_or(""),
            e.after.as_deref().unwrap_or(""),
        ];
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            cell(&mut out, c);
        }
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_atna_cursor_reads_in_order_and_never_moves_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url, None).await.expect("connect");
        for id in ["03", "01", "02"] {
            let e = AuditEntry {
                id: id.into(),
                at_ms: 1,
                actor: "a".into(),
                source: None,
                action: "login".into(),
                target: "user:a".into(),
                outcome: Outcome::Ok,
                before: None,
                after: None,
            };
            store.append_audit(&e).await.expect("append");
        }
        assert_eq!(store.atna_cursor("repo").await.expect("cursor"), "");
        let ids = |v: Vec<AuditEntry>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.audit_after("", "99", 2).await.expect("read")),
            ["01", "02"]
        );
        store
            .advance_atna_cursor("repo", "02", 5)
            .await
            .expect("advance");
        store
            .advance_atna_cursor("repo", "01", 6)
            .await
            .expect("advance");
        assert_eq!(store.atna_cursor("repo").await.expect("cursor"), "02");
        assert_eq!(
            ids(store.audit_after("02", "99", 10).await.expect("read")),
            ["03"]
        );
        // The upper bound is exclusive; the backlog counts everything after the cursor.
        assert!(
            store
                .audit_after("02", "03", 10)
                .await
                .expect("read")
                .is_empty()
        );
        assert_eq!(store.audit_count_after("01").await.expect("count"), 2);
        assert_eq!(store.audit_count_after("03").await.expect("count"), 0);
    }

    #[test]
    fn the_id_floor_of_a_time_sorts_between_the_ids_before_and_after_it() {
        let at = 1_796_211_647_123_i64;
        let floor = audit_id_floor(at);
        let micros = u64::try_from(at).expect("time") * 1000;
        assert_eq!(floor, "1796211647123000");
        assert!(audit_id(micros - 1, "ffffffff") < floor);
        assert!(audit_id(micros, "00000000") > floor);
        assert!(audit_id(micros + 999, "00000000") > floor);
        assert_eq!(audit_id(5, "ab"), "0000000000000005ab");
        assert_eq!(audit_id_floor(-1), "0000000000000000");
    }

    #[tokio::test]
    async fn one_replica_holds_the_atna_lease_until_it_runs_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url, None).await.expect("connect");
        let take = |holder: &'static str, now: i64| {
            let store = store.clone();
            async move {
                store
                    .take_atna_lease("syslog", holder, now, now + 10_000)
                    .await
                    .expect("lease")
            }
        };
        assert!(take("a", 1_000).await, "nobody had it");
        assert!(!take("b", 2_000).await, "a holds it until 11000");
        assert!(take("a", 5_000).await, "a renews (now until 15000)");
        assert!(!take("b", 14_999).await, "a's renewal counts");
        // Another destination has a lease of its own.
        assert!(
            store
                .take_atna_lease("other", "b", 2_000, 12_000)
                .await
                .expect("lease")
        );
        // a stopped renewing: b takes over, and a cannot renew any more.
        assert!(take("b", 15_001).await, "a's lease ran out");
        assert!(!take("a", 15_002).await, "b holds it now");
        assert!(take("b", 16_000).await);
    }

    #[test]
    fn csv_quotes_what_needs_it_and_defuses_formulas() {
        let e = AuditEntry {
            id: "1".into(),
            at_ms: 5,
            actor: "=cmd()".into(),
            source: None,
            action: "device.patch".into(),
            target: "device:a".into(),
            outcome: Outcome::Ok,
            before: Some(r#"{"room":"1, left"}"#.into()),
            after: None,
        };
        assert_eq!(
            to_csv(&[e]),
            "id,at_ms,actor,source,action,target,outcome,before,after\r\n\
             1,5,'=cmd(),,device.patch,device:a,ok,\"{\"\"room\"\":\"\"1, left\"\"}\",\r\n"
        );
    }
}
