//! atna (issue 13 part 4): the forwarder's store functions on both backends (SQLite, and
//! PostgreSQL started by the test): one lease holder at a time, entries read after the cursor
//! and before the settle bound, the backlog count, the cursor never moving back.

mod fleet_support;

use fleet_support::*;
use medgate_fleet::store::Store;
use medgate_fleet::store::audit::{AuditEntry, Outcome, audit_id, audit_id_floor};

fn entry(micros: u64) -> AuditEntry {
    AuditEntry {
        id: audit_id(micros, "0a1b2c3d"),
        at_ms: i64::try_from(micros / 1000).expect("time"),
        actor: "alice".into(),
        source: None,
        action: "login".into(),
        target: "user:alice".into(),
        outcome: Outcome::Ok,
        before: None,
        after: Some("{\"x\":1}".into()),
    }
}

async fn exercise(store: &Store) {
    // Two replicas ask for the lease at once: exactly one gets it.
    let (a, b) = tokio::join!(
        store.take_atna_lease("syslog", "a", 1_000, 11_000),
        store.take_atna_lease("syslog", "b", 1_000, 11_000),
    );
    let (a, b) = (a.expect("lease"), b.expect("lease"));
    assert!(a ^ b, "one of a ({a}) and b ({b}) holds it");
    let (holder, other) = if a { ("a", "b") } else { ("b", "a") };
    assert!(
        store
            .take_atna_lease("syslog", holder, 5_000, 15_000)
            .await
            .expect("renew")
    );
    assert!(
        !store
            .take_atna_lease("syslog", other, 14_000, 24_000)
            .await
            .expect("lease")
    );
    assert!(
        store
            .take_atna_lease("syslog", other, 15_001, 25_001)
            .await
            .expect("take over")
    );
    assert!(
        !store
            .take_atna_lease("syslog", holder, 15_002, 25_002)
            .await
            .expect("lease")
    );

    // Entries at 10 s, 20 s and 30 s; the settle bound of 25 s leaves out the last.
    for s in [30_u64, 10, 20] {
        store
            .append_audit(&entry(s * 1_000_000))
            .await
            .expect("append");
    }
    let bound = audit_id_floor(25_000);
    let read = store.audit_after("", &bound, 100).await.expect("read");
    let at: Vec<i64> = read.iter().map(|e| e.at_ms).collect();
    assert_eq!(at, [10_000, 20_000]);
    assert_eq!(store.audit_count_after("").await.expect("count"), 3);
    store
        .advance_atna_cursor("syslog", &read[1].id, 1)
        .await
        .expect("advance");
    store
        .advance_atna_cursor("syslog", &read[0].id, 2)
        .await
        .expect("advance");
    let cursor = store.atna_cursor("syslog").await.expect("cursor");
    assert_eq!(cursor, read[1].id, "never backwards");
    assert_eq!(store.audit_count_after(&cursor).await.expect("count"), 1);
    assert!(
        store
            .audit_after(&cursor, &bound, 100)
            .await
            .expect("read")
            .is_empty()
    );
    let later = store
        .audit_after(&cursor, &audit_id_floor(31_000), 100)
        .await
        .expect("read");
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].at_ms, 30_000);
}

#[tokio::test]
async fn atna_store_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    exercise(&Store::connect(&url, None).await.expect("connect")).await;
}

#[tokio::test]
async fn atna_store_on_postgres() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = Postgres::start(dir.path());
    exercise(&Store::connect(&pg.url(), None).await.expect("connect")).await;
}
