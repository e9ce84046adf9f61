//! The console in a real browser (Debian's chromium, headless, driven by playwright-core from
//! tests/browser): each test serves a fleet as in production and runs one scenario script
//! against it. Screenshots land in target/screenshots/.

mod fleet_support;

use fleet_support::browser::run_scenario;
use fleet_support::*;

/// The printed setup link → first admin → overview and devices (screenshots at 1366×768 and
/// 1920×1080, light and dark) → logout → wrong password refused → login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_setup_login_logout_in_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = medgate_fleet::serve(fleet_config(dir.path()))
        .await
        .expect("serve");
    let api = Api::new(&running);
    enroll(&api, "st-marien", "ct-room-1").await;
    enroll(&api, "st-marien", "mr-room-2").await;
    enroll(&api, "nordklinik", "dx-room-1").await;
    let token = running
        .setup_token
        .clone()
        .expect("no user yet: a setup link");
    let base = running.base_url();
    let setup_url = format!("{base}/setup?token={token}");
    run_scenario(
        "console_first_run.mjs",
        &base,
        &[
            ("SETUP_URL", &setup_url),
            ("ADMIN_USER", "it-admin"),
            ("ADMIN_PASSWORD", "correct horse battery staple"),
        ],
    )
    .await;
}
