//! The store of identity and access on both backends (SQLite, and PostgreSQL started by the
//! test): users, the one-time setup token, sessions, personal tokens, and the audit log, which
//! the database itself refuses to update or delete.

mod fleet_support;

use fleet_support::*;
use medgate_fleet::auth::{Role, SiteScope};
use medgate_fleet::store::Store;
use medgate_fleet::store::audit::{AuditEntry, AuditFilter, Outcome};
use medgate_fleet::store::users::{ApiToken, NewUser};

fn entry(id: &str, at_ms: i64, action: &str, outcome: Outcome) -> AuditEntry {
    AuditEntry {
        id: id.into(),
        at_ms,
        actor: "root".into(),
        source: Some("10.0.0.1".into()),
        action: action.into(),
        target: "device:a".into(),
        outcome,
        before: Some(r#"{"room":null}"#.into()),
        after: Some(r#"{"room":"CT 1"}"#.into()),
    }
}

async fn exercise(store: &Store) {
    // First run: the setup token creates the first admin once, and only while no user exists.
    assert_eq!(store.user_count().await.expect("count"), 0);
    store
        .create_setup_token("old", 10_000, 1)
        .await
        .expect("setup token");
    store
        .create_setup_token("new", 10_000, 2)
        .await
        .expect("setup token");
    let root = NewUser {
        name: "root",
        role: Role::Admin,
        sites: &SiteScope::All,
        password_hash: Some("$argon2id$x"),
    };
    assert!(
        !store
            .setup_first_admin("old", &root, 3)
            .await
            .expect("setup"),
        "replaced"
    );
    assert!(
        !store
            .setup_first_admin("new", &root, 20_000)
            .await
            .expect("setup"),
        "expired"
    );
    assert!(
        store
            .setup_first_admin("new", &root, 4)
            .await
            .expect("setup")
    );
    assert!(
        !store
            .setup_first_admin("new", &root, 5)
            .await
            .expect("setup"),
        "used"
    );
    // Users.
    let scope = SiteScope::from_list(Some(vec!["site-b".into()]));
    let op = NewUser {
        name: "op",
        role: Role::Operator,
        sites: &scope,
        password_hash: None,
    };
    assert!(store.create_user(&op, 6).await.expect("create"));
    assert!(
        !store.create_user(&op, 7).await.expect("create"),
        "name taken"
    );
    let u = store.user_login("op").await.expect("read").expect("op");
    assert_eq!(
        (u.user.role, u.user.scope(), u.password_hash),
        (Role::Operator, scope.clone(), None)
    );
    assert!(
        store
            .update_user(
                "op",
                Role::Viewer,
                &SiteScope::All,
                Some(8),
                Some("$argon2id$y"),
                8
            )
            .await
            .expect("update")
    );
    let u = store.user_login("op").await.expect("read").expect("op");
    assert_eq!(
        (u.user.role, u.user.sites, u.user.disabled_ms),
        (Role::Viewer, None, Some(8))
    );
    assert_eq!(u.password_hash.as_deref(), Some("$argon2id$y"));
    assert_eq!(store.users().await.expect("users").len(), 2);
    // Sessions: by secret hash, revocable one by one or all at once.
    store
        .create_session("s1", "h1", "root", "c1", Some("10.0.0.1"), 10)
        .await
        .expect("session");
    store
        .create_session("s2", "h2", "root", "c2", None, 11)
        .await
        .expect("session");
    let s = store
        .session_by_secret("h1")
        .await
        .expect("read")
        .expect("s1");
    assert_eq!(
        (s.id.as_str(), s.csrf_token.as_str(), s.source.as_deref()),
        ("s1", "c1", Some("10.0.0.1"))
    );
    store.touch_session("s1", 70_000).await.expect("touch");
    assert_eq!(
        store
            .session_by_secret("h1")
            .await
            .expect("read")
            .expect("s1")
            .last_seen_ms,
        70_000
    );
    assert!(
        !store.revoke_session("op", "s1", 12).await.expect("revoke"),
        "not op's"
    );
    assert!(
        store
            .revoke_session("root", "s1", 12)
            .await
            .expect("revoke")
    );
    assert_eq!(store.sessions_of("root").await.expect("list").len(), 1);
    assert_eq!(
        store.revoke_sessions_of("root", 13).await.expect("revoke"),
        1
    );
    assert!(store.sessions_of("root").await.expect("list").is_empty());
    // Tokens.
    let t = ApiToken {
        id: "t1".into(),
        user: "root".into(),
        name: "ci".into(),
        role: Role::Viewer,
        sites: Some(vec!["site-a".into()]),
        created_ms: 20,
        expires_ms: 1_000_000,
        revoked_ms: None,
        last_used_ms: None,
    };
    store.create_token(&t, "th1").await.expect("token");
    assert_eq!(
        store.token_by_hash("th1").await.expect("read"),
        Some(t.clone())
    );
    store.touch_token("t1", 30).await.expect("touch");
    assert!(
        !store.revoke_token("op", "t1", 40).await.expect("revoke"),
        "not op's"
    );
    assert!(store.revoke_token("root", "t1", 40).await.expect("revoke"));
    let listed = store.tokens_of("root").await.expect("list");
    assert_eq!(
        (listed[0].revoked_ms, listed[0].last_used_ms),
        (Some(40), Some(30))
    );
    // Audit: appended, filtered (exact actor/target, action prefix with its wildcards taken
    // literally, outcome, time), newest first.
    for e in [
        entry("0001", 100, "device.patch", Outcome::Ok),
        entry("0002", 200, "device_x", Outcome::Ok),
        entry("0003", 300, "login", Outcome::Failed),
    ] {
        store.append_audit(&e).await.expect("append");
    }
    let all = store.audit(&AuditFilter::default()).await.expect("audit");
    assert_eq!(
        all.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["0003", "0002", "0001"]
    );
    assert_eq!(all[2], entry("0001", 100, "device.patch", Outcome::Ok));
    let f = AuditFilter {
        action: Some("device.".into()),
        ..AuditFilter::default()
    };
    assert_eq!(
        store.audit(&f).await.expect("audit").len(),
        1,
        "'.' is no wildcard, '_' neither"
    );
    let f = AuditFilter {
        action: Some("device_".into()),
        ..AuditFilter::default()
    };
    assert_eq!(store.audit(&f).await.expect("audit").len(), 1);
    let f = AuditFilter {
        outcome: Some("failed".into()),
        since_ms: Some(250),
        ..AuditFilter::default()
    };
    assert_eq!(store.audit(&f).await.expect("audit").len(), 1);
    let f = AuditFilter {
        until_ms: Some(200),
        limit: Some(5),
        ..AuditFilter::default()
    };
    assert_eq!(store.audit(&f).await.expect("audit").len(), 1);
    // Paging, newest first: the page after an id.
    let f = AuditFilter {
        before: Some("0003".into()),
        limit: Some(1),
        ..AuditFilter::default()
    };
    let page: Vec<String> = store
        .audit(&f)
        .await
        .expect("audit")
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(page, ["0002"]);
    // Append-only: the database refuses to change or delete an entry.
    for sql in [
        "UPDATE audit SET actor = 'someone else'",
        "DELETE FROM audit",
        "DELETE FROM audit WHERE id = '0001'",
    ] {
        let e = sqlx::query(sql).execute(store.pool()).await.expect_err(sql);
        assert!(e.to_string().contains("append-only"), "{sql}: {e}");
    }
    assert_eq!(
        store
            .audit(&AuditFilter::default())
            .await
            .expect("audit")
            .len(),
        3
    );
}

#[tokio::test]
async fn users_sessions_tokens_and_audit_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    exercise(&Store::connect(&url, None).await.expect("connect")).await;
}

#[tokio::test]
async fn users_sessions_tokens_and_audit_on_postgres() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = Postgres::start(dir.path());
    let store = Store::connect(&pg.url(), None).await.expect("connect");
    exercise(&store).await;
    let e = sqlx::query("TRUNCATE audit")
        .execute(store.pool())
        .await
        .expect_err("truncate");
    assert!(e.to_string().contains("append-only"), "{e}");
}
