//! Identity and access through HTTP, on a fleet started as in production (`serve`):
//! - the role × route matrix, generated from the policy table itself (`auth::policy::ROUTES`):
//!   every route (API and console pages) × no credential and every role, by personal token
//!   and by session cookie with its CSRF token, each cell asserted
//!   (401 — for a page, 303 to the login page —, 403, or allowed: 200 for reads, neither 401
//!   nor 403 for changes), so a new route is covered the day it is added;
//! - site scope: an operator of site B gets 404 for site A's device and does not see it listed;
//! - first-run setup by its one-time token, password login, the session cookie, CSRF, logout,
//!   session listing, revocation and expiry, throttling, personal tokens, the audit log.

mod fleet_support;

use fleet_support::*;
use medgate_fleet::auth::Role;
use medgate_fleet::auth::policy::{Permission, ROUTES, Verb};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// How a matrix cell authenticates.
enum Cred {
    /// Not at all.
    None,
    /// `Authorization: Bearer`.
    Bearer(String),
    /// The session cookie and its CSRF token.
    Session(String, String),
}

/// A request of the matrix: an empty JSON body for changes.
async fn call(
    http: &reqwest::Client,
    base: &str,
    verb: Verb,
    path: &str,
    cred: &Cred,
) -> StatusCode {
    let mut r = http.request(verb.method(), format!("{base}{path}"));
    match cred {
        Cred::None => {}
        Cred::Bearer(t) => r = r.bearer_auth(t),
        Cred::Session(cookie, csrf) => {
            r = r.header("cookie", cookie).header("x-csrf-token", csrf);
        }
    }
    if verb != Verb::Get {
        r = r.json(&json!({}));
    }
    r.send().await.expect("request").status()
}

async fn fixture() -> (medgate_fleet::Running, Api, tempfile::TempDir) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("medgate_fleet=info")
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let running = medgate_fleet::serve(fleet_config(dir.path()))
        .await
        .expect("serve");
    let api = Api::new(&running);
    enroll(&api, "site-a", "dev-a").await;
    enroll(&api, "site-b", "dev-b").await;
    (running, api, dir)
}

/// Creates a user (break-glass) and a personal token for it (logged in by session): the token.
async fn user_with_token(api: &Api, name: &str, role: Role, sites: Option<Vec<&str>>) -> String {
    let (s, v) = api
        .send(
            Method::POST,
            "/api/v1/users",
            json!({"name": name, "role": role, "sites": sites, "password": "a long enough password"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let b = Session::login(&api.base, name, "a long enough password").await;
    let r = b
        .csrf(Method::POST, "/api/v1/tokens")
        .json(&json!({"name": "matrix", "expires_in_days": 1}))
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["record"]["role"], json!(role));
    v["token"].as_str().expect("token").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_times_every_role_and_no_credential() {
    let (running, api, _dir) = fixture().await;
    // wall (issue 13 part 1): a display link whose secret the wall's routes take.
    let display = running
        .app
        .ops
        .create_display(&medgate_fleet::ops::Actor::cli(), "matrix TV", None, None)
        .await
        .expect("display link");
    let (s, cmd) = api
        .send(
            Method::POST,
            "/api/v1/devices/dev-a/commands",
            json!({"action": {"type": "restart"}}),
        )
        .await;
    assert_eq!(s, 201, "{cmd}");
    let restart = cmd["id"].as_str().expect("id").to_owned();
    // The commands routes act on a diagnostics command whose bundle is in (put in the store as
    // ingest would: this matrix has no device connected).
    let (s, cmd) = api
        .send(
            Method::POST,
            "/api/v1/devices/dev-a/commands",
            json!({"action": {"type": "collect_diagnostics"}}),
        )
        .await;
    assert_eq!(s, 201, "{cmd}");
    let command = cmd["id"].as_str().expect("id").to_owned();
    assert_ne!(command, restart);
    let content = b"{\"logs\":[]}".to_vec();
    let (id, name, sha) = (
        medgate_contract::CommandId::new(command.as_str()).expect("id"),
        medgate_contract::Token::new("diag-1.json").expect("name"),
        medgate_contract::Sha256Hex::new(sha256_hex(&content)).expect("sha"),
    );
    let store = &running.app.ops.store;
    let mut batch = store.begin().await.expect("begin");
    for chunk in medgate_contract::FileChunk::split(&id, &name, &sha, &content) {
        store
            .record_file_chunk(
                batch.conn(),
                &medgate_contract::DeviceId::new("dev-a").expect("id"),
                &chunk,
                1,
            )
            .await
            .expect("chunk");
    }
    batch.commit().await.expect("commit");
    // ota (issue 14 part 2): a stored bundle and a draft campaign the bundle and campaign
    // routes act on (put in the store directly: the matrix has no trust store).
    let bundle = medgate_contract::Sha256Hex::new(sha256_hex(b"a bundle")).expect("sha");
    let now = medgate_fleet::store::now_db();
    store
        .insert_bundle(
            &medgate_fleet::store::ota::BundleRecord {
                sha256: bundle.clone(),
                product: "medgate-appliance".into(),
                version: "1.4.0".into(),
                hardware: vec!["qemu-vm".into()],
                payload_kind: "appliance_binaries".into(),
                size: 8,
                min_installed: None,
                floor: None,
                expires_ms: now + 86_400_000,
                created_ms: now,
                uploaded_by: "matrix".into(),
                uploaded_ms: now,
            },
            &mut &b"a bundle"[..],
        )
        .await
        .expect("bundle");
    store
        .insert_campaign(
            &medgate_fleet::store::ota::CampaignRecord {
                id: medgate_contract::Token::new("cmp-matrix").expect("id"),
                name: "matrix".into(),
                bundle: bundle.clone(),
                state: medgate_fleet::ota::campaign::CampaignState::Draft,
                targets: Default::default(),
                canary: vec![],
                wave_shares: vec![100],
                soak_secs: 60,
                failure_threshold_pct: 10,
                mode: medgate_contract::InstallMode::Soft,
                deadline_ms: None,
                windows: vec![],
                released_waves: 0,
                acknowledged_failures: 0,
                created_by: "matrix".into(),
                created_ms: now,
                approved_by: None,
                approved_ms: None,
                paused_reason: None,
                revision: 1,
                updated_ms: now,
            },
            &[],
        )
        .await
        .expect("campaign");
    // The user the /users/{name} routes act on (not one of the matrix's own).
    let (s, v) = api
        .send(
            Method::POST,
            "/api/v1/users",
            json!({"name": "subject", "role": "viewer", "password": "a long enough password"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    // Columns: no credential, then each role by personal token and by session cookie (with
    // its CSRF token, as the console sends it).
    let mut principals: Vec<(String, Option<Role>, Cred)> = vec![("none".into(), None, Cred::None)];
    for role in Role::ALL {
        let token = user_with_token(&api, role.as_str(), role, None).await;
        principals.push((format!("{role}/token"), Some(role), Cred::Bearer(token)));
    }
    for role in Role::ALL {
        let b = Session::login(&api.base, role.as_str(), "a long enough password").await;
        principals.push((
            format!("{role}/session"),
            Some(role),
            Cred::Session(b.cookie, b.csrf),
        ));
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut cells = 0;
    let mut table = String::new();
    for route in ROUTES {
        let id = if route.path.starts_with("/api/v1/commands/") {
            command.as_str()
        } else if route.path.starts_with("/api/v1/bundles/") {
            bundle.as_str()
        } else if route.path.starts_with("/api/v1/campaigns/")
            || route.path.starts_with("/updates/campaigns/")
        {
            "cmp-matrix"
        } else if route.path.starts_with("/api/v1/sites/") || route.path.starts_with("/sites/") {
            "site-a"
        } else if route.path.starts_with("/api/v1/devices/")
            || route.path.starts_with("/devices/{id}")
        {
            "dev-a"
        } else {
            // Sessions and tokens: an id nobody has (the matrix's own must survive).
            "nope"
        };
        let path = route
            .path
            .replace("{id}", id)
            .replace("{name}", "subject")
            .replace("{tag}", "ct")
            .replace("{token}", &display.secret)
            .replace("{action}", "pause");
        table.push_str(&format!("{:6} {:36}", route.verb, route.path));
        for (label, role, cred) in &principals {
            let got = call(&http, &api.base, route.verb, &path, cred).await;
            let allowed = match role {
                None => route.permission == Permission::Public,
                Some(r) => route.permission.granted_to(*r),
            };
            let cell = format!("{} {} as {label}: {got}", route.verb, route.path);
            if !allowed && role.is_none() && route.is_page() {
                assert_eq!(got, StatusCode::SEE_OTHER, "{cell}");
            } else if !allowed && role.is_none() {
                assert_eq!(got, StatusCode::UNAUTHORIZED, "{cell}");
            } else if !allowed {
                assert_eq!(got, StatusCode::FORBIDDEN, "{cell}");
            } else if route.verb == Verb::Get {
                assert_eq!(got, StatusCode::OK, "{cell}");
            } else {
                // Authorised: the handler ran and judged the (empty) body or did the change.
                assert!(
                    got != StatusCode::UNAUTHORIZED
                        && got != StatusCode::FORBIDDEN
                        && got != StatusCode::METHOD_NOT_ALLOWED
                        && !got.is_server_error(),
                    "{cell}"
                );
            }
            table.push_str(&format!(" {:>3}", got.as_u16()));
            cells += 1;
        }
        table.push('\n');
        // Logging out ends each session column's session: log them in again.
        if route.path.ends_with("/logout") {
            for (_, role, cred) in principals.iter_mut() {
                if let (Some(r), Cred::Session(..)) = (*role, &*cred) {
                    let b = Session::login(&api.base, r.as_str(), "a long enough password").await;
                    *cred = Cred::Session(b.cookie, b.csrf);
                }
            }
        }
    }
    let labels: Vec<&str> = principals.iter().map(|p| p.0.as_str()).collect();
    println!(
        "role × route matrix: {} routes × {} principals = {cells} cells\ncolumns: {}\n{table}",
        ROUTES.len(),
        principals.len(),
        labels.join(" ")
    );
    assert_eq!(cells, ROUTES.len() * (1 + 2 * Role::ALL.len()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_of_one_site_cannot_see_or_change_another_sites_device() {
    let (_running, api, _dir) = fixture().await;
    let token = user_with_token(&api, "op-b", Role::Operator, Some(vec!["site-b"])).await;
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let (http, base, token) = (http.clone(), api.base.clone(), token.clone());
        async move {
            let r = http
                .get(format!("{base}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .expect("get");
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    assert_eq!(get("/api/v1/devices/dev-a").await.0, 404);
    assert_eq!(get("/api/v1/devices/dev-a/config").await.0, 404);
    assert_eq!(get("/api/v1/devices/dev-b").await.0, 200);
    let (_, list) = get("/api/v1/devices").await;
    let ids: Vec<&str> = list["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(ids, ["dev-b"]);
    let (_, sites) = get("/api/v1/sites").await;
    assert_eq!(sites["sites"].as_array().map(Vec::len), Some(1), "{sites}");
    // Changes: another site's device does not exist for it; its own does.
    let send = |m: Method, path: &str, body: Value| {
        http.request(m, format!("{}{path}", api.base))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let r = send(Method::PATCH, "/api/v1/devices/dev-a", json!({"room": "x"}))
        .await
        .expect("patch");
    assert_eq!(r.status(), 404);
    let r = send(
        Method::PATCH,
        "/api/v1/devices/dev-b",
        json!({"room": "CT 2"}),
    )
    .await
    .expect("patch");
    assert_eq!(r.status(), 200);
    let r = send(
        Method::POST,
        "/api/v1/claims",
        json!({"site": "site-a", "device": "new-1"}),
    )
    .await
    .expect("claim");
    assert_eq!(r.status(), 403);
    let r = send(Method::PUT, "/api/v1/tags/ct/config", json!({"config": {}}))
        .await
        .expect("tag");
    assert_eq!(r.status(), 403, "a tag reaches every site");
    // Without ?device=: the events of its sites' devices only.
    let (s, events) = get("/api/v1/events").await;
    assert_eq!(s, 200, "{events}");
    assert!(
        events["events"]
            .as_array()
            .is_some_and(|e| e.iter().all(|e| e["device"] == "dev-b")),
        "{events}"
    );
    assert_eq!(get("/api/v1/events?device=dev-b").await.0, 200);
    assert_eq!(get("/api/v1/events?device=dev-a").await.0, 404);
    // Its token cannot be widened to a site it does not have.
    let (s, v) = api
        .send(
            Method::PATCH,
            "/api/v1/users/op-b",
            json!({"sites": ["site-b", "site-c"]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // The audit log names who changed what, with before and after.
    let (s, log) = api.get("/api/v1/audit?target=device:dev-b").await;
    assert_eq!(s, 200);
    let e = &log["entries"][0];
    assert_eq!(
        (
            e["actor"].as_str().map(|a| a.starts_with("op-b (token ")),
            &e["action"]
        ),
        (Some(true), &json!("device.patch")),
        "{log}"
    );
    assert!(
        e["before"].as_str().is_some() && e["after"].as_str().is_some_and(|a| a.contains("CT 2"))
    );
    let (s, log) = api.get("/api/v1/audit?action=access&outcome=denied").await;
    assert_eq!(s, 200);
    assert!(
        log["entries"].as_array().is_some_and(|e| e.len() >= 2),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_login_csrf_sessions_throttling_and_audit() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("medgate_fleet=info")
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let running = medgate_fleet::serve(fleet_config(dir.path()))
        .await
        .expect("serve");
    let api = Api::new(&running);
    let base = api.base.clone();
    // First run: a one-time setup token; the hint names the request.
    let setup = running
        .setup_token
        .clone()
        .expect("no user yet: a setup token");
    assert!(running.setup_hint().is_some_and(|h| h.contains(&setup)));
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| http.post(format!("{base}{path}")).json(&body).send();
    let pw = "a long enough password";
    let r = post(
        "/api/v1/auth/setup",
        json!({"token": "wrong", "user": "root", "password": pw}),
    )
    .await
    .expect("setup");
    assert_eq!(r.status(), 401);
    let r = post(
        "/api/v1/auth/setup",
        json!({"token": setup, "user": "root", "password": "short"}),
    )
    .await
    .expect("setup");
    assert_eq!(r.status(), 400);
    let r = post(
        "/api/v1/auth/setup",
        json!({"token": setup, "user": "root", "password": pw}),
    )
    .await
    .expect("setup");
    assert_eq!(r.status(), 201);
    let r = post(
        "/api/v1/auth/setup",
        json!({"token": setup, "user": "root2", "password": pw}),
    )
    .await
    .expect("setup");
    assert_eq!(r.status(), 401, "the setup token works once");

    // Login: the cookie is HttpOnly, SameSite=Strict (not Secure: plain HTTP on loopback).
    let r = post(
        "/api/v1/auth/login",
        json!({"user": "root", "password": pw}),
    )
    .await
    .expect("login");
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(
        cookie.contains("; HttpOnly")
            && cookie.contains("; SameSite=Strict")
            && cookie.contains("; Path=/")
            && !cookie.contains("Secure"),
        "{cookie}"
    );
    let b = Session::login(&base, "root", pw).await;
    assert_eq!(
        (&b.me["user"], &b.me["role"], &b.me["via"]),
        (&json!("root"), &json!("admin"), &json!("session"))
    );
    assert_eq!(
        b.status("/api/v1/devices").await,
        200,
        "a read needs no CSRF token"
    );

    // CSRF: a state change by cookie without the token, or with another, is refused.
    let create = json!({"name": "alice", "role": "viewer", "password": pw});
    let r = b
        .req(Method::POST, "/api/v1/users")
        .json(&create)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    let r = b
        .req(Method::POST, "/api/v1/users")
        .header("x-csrf-token", "0".repeat(64))
        .json(&create)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    let r = b
        .csrf(Method::POST, "/api/v1/users")
        .json(&create)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201);
    // A form post carries it as a field.
    let form = |token: &str| {
        b.req(Method::POST, "/api/v1/auth/logout")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("x=1&csrf_token={token}"))
            .send()
    };
    assert_eq!(form("nope").await.expect("post").status(), 403);

    // A viewer reads but does not change; a token above its role is refused.
    let v = Session::login(&base, "alice", pw).await;
    assert_eq!(v.status("/api/v1/sites").await, 200);
    let r = v
        .csrf(Method::PUT, "/api/v1/sites/s1")
        .json(&json!({"name": "S1"}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 403);
    let r = v
        .csrf(Method::POST, "/api/v1/tokens")
        .json(&json!({"name": "x", "role": "operator", "expires_in_days": 1}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);

    // Sessions: listed, one revoked by id ends that session only.
    let second = Session::login(&base, "root", pw).await;
    let second_id = second.me["session"].as_str().expect("id").to_owned();
    let sessions: Value = b
        .req(Method::GET, "/api/v1/auth/sessions")
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    // The first login above (its cookie checked), `b` and `second`.
    assert_eq!(
        sessions["sessions"].as_array().map(Vec::len),
        Some(3),
        "{sessions}"
    );
    assert!(
        !sessions.to_string().contains(&b.csrf),
        "no CSRF token in listings"
    );
    let r = b
        .csrf(
            Method::DELETE,
            &format!("/api/v1/auth/sessions/{second_id}"),
        )
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    assert_eq!(second.status("/api/v1/auth/me").await, 401);
    assert_eq!(b.status("/api/v1/auth/me").await, 200);

    // Idle expiry: a session whose last request is older than [auth] session_idle_minutes.
    sqlx::query("UPDATE sessions SET last_seen_ms = 0 WHERE user_name = 'alice'")
        .execute(running.app.ops.store.pool())
        .await
        .expect("age the session");
    assert_eq!(v.status("/api/v1/sites").await, 401);

    // Throttling: 5 failures for an account, then refused (429, Retry-After) even with the
    // right password.
    for _ in 0..5 {
        let r = post(
            "/api/v1/auth/login",
            json!({"user": "alice", "password": "wrong password!"}),
        )
        .await
        .expect("login");
        assert_eq!(r.status(), 401);
    }
    let r = post(
        "/api/v1/auth/login",
        json!({"user": "alice", "password": pw}),
    )
    .await
    .expect("login");
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());

    // Logout (the form field carries the CSRF token) ends the session.
    let token = b.csrf.clone();
    assert_eq!(form(&token).await.expect("logout").status(), 204);
    assert_eq!(b.status("/api/v1/auth/me").await, 401);

    // The break-glass token still works, and the audit log has every login, failed or not,
    // as JSON and as CSV.
    let (s, log) = api.get("/api/v1/audit?action=login").await;
    assert_eq!(s, 200);
    let outcomes: Vec<&str> = log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    assert!(
        outcomes.contains(&"ok") && outcomes.contains(&"failed") && outcomes.contains(&"denied"),
        "{outcomes:?}"
    );
    assert!(
        log["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .all(|e| e["source"] == "127.0.0.1"),
        "{log}"
    );
    let csv = api
        .http
        .get(format!("{base}/api/v1/audit?format=csv&action=user."))
        .bearer_auth(&api.token)
        .send()
        .await
        .expect("csv");
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.expect("text");
    assert!(
        text.starts_with("id,at_ms,actor,source,action,target,outcome,before,after\r\n"),
        "{text}"
    );
    assert!(text.contains(",user.create,user:alice,ok,"), "{text}");
    assert!(
        !text.contains("a long enough password") && !text.contains("$argon2"),
        "no secret in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_create_makes_users_for_scripts_and_ends_the_setup_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fleet_config(dir.path());
    let file = dir.path().join("fleet.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = {:?}\n[http]\nbind = \"127.0.0.1:0\"\n[broker]\nlisten = \"{}\"\n",
            config.data_dir, config.broker.listen
        ),
    )
    .expect("write");
    let bin = medgate_testkit::workspace_bin("medgate-fleet").expect("built by ci/test");
    let run = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(&bin)
            .args(["admin", "create", "--config"])
            .arg(&file)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("wait");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(
        &["--user", "ops", "--role", "operator", "--site", "site-a"],
        "",
    );
    assert!(ok, "{err}");
    let generated = out
        .lines()
        .find_map(|l| l.strip_prefix("password (shown only now): "))
        .expect("a generated password")
        .to_owned();
    assert_eq!(generated.len(), 20);
    let (ok, _, err) = run(
        &["--user", "root", "--role", "admin", "--password-stdin"],
        "typed on stdin, long enough\n",
    );
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["--user", "x", "--role", "root"], "");
    assert!(
        !ok && err.contains("--role \"root\": give admin, operator"),
        "{err}"
    );
    let (ok, _, err) = run(&["--user", "ops", "--role", "viewer"], "");
    assert!(!ok && err.contains("exists already"), "{err}");

    // The fleet on that database: no setup link any more; both users log in.
    let running = medgate_fleet::serve(
        medgate_fleet::config::FleetConfig::load(Some(&file)).expect("config"),
    )
    .await
    .expect("serve");
    assert!(running.setup_token.is_none() && running.setup_hint().is_none());
    let base = format!("http://{}", running.http);
    let ops = Session::login(&base, "ops", &generated).await;
    assert_eq!(
        (&ops.me["role"], &ops.me["sites"]),
        (&json!("operator"), &json!(["site-a"]))
    );
    Session::login(&base, "root", "typed on stdin, long enough").await;
    let api = Api::new(&running);
    let (_, log) = api.get("/api/v1/audit?action=user.create").await;
    let actors: Vec<&str> = log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["actor"].as_str())
        .collect();
    assert_eq!(actors, ["cli", "cli"]);
}

/// A browser without JavaScript: forms, cookies by hand, no redirects followed.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_pages_from_first_run_to_logout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = medgate_fleet::serve(fleet_config(dir.path()))
        .await
        .expect("serve");
    let api = Api::new(&running);
    enroll(&api, "site-a", "ct-1").await;
    enroll(&api, "site-b", "mr-1").await;
    let base = api.base.clone();
    let http = no_redirects();
    let form = |path: &str, body: &str, cookie: Option<&str>| {
        let mut r = http
            .post(format!("{base}{path}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned());
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.send()
    };
    let get = |path: &str, cookie: Option<&str>| {
        let mut r = http.get(format!("{base}{path}"));
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.send()
    };
    // Without a session, a page sends to the login page.
    let r = get("/", None).await.expect("get");
    assert_eq!(
        (r.status(), &r.headers()["location"]),
        (
            StatusCode::SEE_OTHER,
            &"/login".parse::<reqwest::header::HeaderValue>().expect("v")
        )
    );

    // The printed setup link opens the form; the form makes the admin and logs it in.
    let token = running.setup_token.clone().expect("setup token");
    let hint = running.setup_hint().expect("hint");
    assert!(
        hint.contains(&format!("{base}/setup?token={token}")),
        "{hint}"
    );
    let r = get(&format!("/setup?token={token}"), None)
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(
        csp.starts_with("default-src 'self'; script-src 'self'; style-src 'self'")
            && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(
        r.text()
            .await
            .expect("text")
            .contains(&format!(r#"name="token" value="{token}""#))
    );
    let r = form(
        "/setup",
        &format!(
            "token={token}&user=root&password=a+long+enough+password&confirm=another+long+password"
        ),
        None,
    )
    .await
    .expect("post");
    assert_eq!(r.status(), 400, "the passwords differ");
    let r = form(
        "/setup",
        &format!(
            "token={token}&user=root&password=a+long+enough+password&confirm=a+long+enough+password"
        ),
        None,
    )
    .await
    .expect("post");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = set_cookie(&r);
    let r = get("/setup", None).await.expect("get");
    assert!(r.text().await.expect("text").contains("Setup is done"));

    // The overview counts by state and by site, with what needs attention first.
    let r = get("/", Some(&cookie)).await.expect("get");
    assert_eq!(r.status(), 200);
    let html = r.text().await.expect("text");
    assert!(
        html.contains("Fleet overview") && html.contains("root · admin"),
        "{html}"
    );
    assert!(
        html.contains(r#"<span class="n">2</span><span class="label">devices</span>"#),
        "{html}"
    );
    assert!(html.contains("enrolled but never connected"), "{html}");
    assert!(
        html.contains(r#"href="/devices?site=site-a""#)
            && html.contains(r#"href="/devices?site=site-b""#)
    );
    // The devices list filters from the URL and keeps the filter in the form.
    let r = get("/devices?site=site-b&q=MR", Some(&cookie))
        .await
        .expect("get");
    let html = r.text().await.expect("text");
    assert!(
        html.contains("1 devices match")
            && html.contains("<strong>mr-1</strong>")
            && !html.contains("<strong>ct-1</strong>"),
        "{html}"
    );
    assert!(
        html.contains(r#"<option value="site-b" selected>"#),
        "{html}"
    );
    let r = get("/devices?status=gone", Some(&cookie))
        .await
        .expect("get");
    assert_eq!(r.status(), 400);
    // The vendored htmx is served with the hash the page names.
    let r = get(medgate_fleet::console::assets::HTMX_PATH, None)
        .await
        .expect("get");
    let js = r.bytes().await.expect("bytes");
    assert_eq!(
        medgate_fleet::console::assets::sri_sha384(&js),
        medgate_fleet::console::assets::HTMX_SRI
    );

    // A scoped operator sees only its site; an auditor has no device pages.
    let (s, v) = api.send(Method::POST, "/api/v1/users", json!({"name": "op-a", "role": "operator", "sites": ["site-a"], "password": "a long enough password"})).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = api
        .send(
            Method::POST,
            "/api/v1/users",
            json!({"name": "aud", "role": "auditor", "password": "a long enough password"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    // The login form carries its own CSRF token: a cookie and the form field, from the page.
    let r = get("/login", None).await.expect("get");
    let login_cookie = set_cookie(&r);
    assert!(login_cookie.starts_with("medgate_login="), "{login_cookie}");
    let html = r.text().await.expect("text");
    let login_token = login_form_token(&html);
    let login = |user: &str| {
        form(
            "/login",
            &format!("user={user}&password=a+long+enough+password&csrf_token={login_token}"),
            Some(&login_cookie),
        )
    };
    // Without the token (a form posted from another site), or with another cookie's: refused
    // before the password is looked at.
    let r = form(
        "/login",
        "user=op-a&password=a+long+enough+password",
        Some(&login_cookie),
    )
    .await
    .expect("post");
    assert_eq!(r.status(), 403);
    let r = form(
        "/login",
        &format!("user=op-a&password=a+long+enough+password&csrf_token={login_token}"),
        Some(&format!("medgate_login={}", "0".repeat(64))),
    )
    .await
    .expect("post");
    assert_eq!(r.status(), 403);
    let r = form(
        "/login",
        &format!("user=op-a&password=wrong&csrf_token={login_token}"),
        Some(&login_cookie),
    )
    .await
    .expect("post");
    assert_eq!(r.status(), 401);
    assert!(
        r.text()
            .await
            .expect("text")
            .contains("user name or password wrong")
    );
    let r = login("op-a").await.expect("post");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let op = set_cookie(&r);
    let html = get("/devices", Some(&op))
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(
        html.contains("<strong>ct-1</strong>")
            && !html.contains("mr-1")
            && !html.contains("site-b"),
        "{html}"
    );
    let r = login("aud").await.expect("post");
    let aud = set_cookie(&r);
    let r = get("/", Some(&aud)).await.expect("get");
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .expect("text")
            .contains("your role auditor may not GET /")
    );

    // Logout is a form with the session's CSRF token; without it, refused.
    let html = get("/", Some(&cookie))
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    let csrf = html
        .split(r#"name="csrf_token" value=""#)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("csrf field")
        .to_owned();
    let r = form("/logout", "csrf_token=forged", Some(&cookie))
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    let r = form("/logout", &format!("csrf_token={csrf}"), Some(&cookie))
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .expect("cookie")
            .contains("Max-Age=0")
    );
    assert_eq!(
        get("/", Some(&cookie)).await.expect("get").status(),
        StatusCode::SEE_OTHER
    );
}
