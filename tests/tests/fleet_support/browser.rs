//! Browser scenarios (tests/browser/*.mjs): Debian's chromium driven by playwright-core, run by
//! node against a fleet this test process serves. `ci/test` installs the node packages
//! (`npm ci --prefix tests/browser`); screenshots go to `target/screenshots/`.

use std::path::{Path, PathBuf};

/// tests/browser, where the scenarios and their node_modules are.
pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Where scenarios save screenshots: `target/screenshots` of the workspace (or
/// `$CARGO_TARGET_DIR/screenshots`).
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("screenshots")
}

/// Runs `node tests/browser/<script>` with `BASE_URL`, `SCREENSHOT_DIR` and `vars`; panics with the
/// scenario's output unless it passed. Async: the fleet under test keeps serving meanwhile.
pub async fn run_scenario(script: &str, base_url: &str, vars: &[(&str, &str)]) {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "the browser test packages are not installed: run `npm ci --prefix tests/browser` (ci/test does)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists() || std::env::var_os("CHROMIUM").is_some(),
        "no /usr/bin/chromium: install Debian's chromium (ci/test does) or set CHROMIUM"
    );
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(dir.join(script))
        .current_dir(&dir)
        .env("BASE_URL", base_url)
        .env("SCREENSHOT_DIR", screenshot_dir())
        .kill_on_drop(true);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(240), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("browser scenario {script} did not finish within 240 s"))
        .unwrap_or_else(|e| panic!("could not start node for {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser scenario {script} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}
