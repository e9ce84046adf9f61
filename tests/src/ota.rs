//! Update bundles, trust stores and directory slots for the update tests (docs/ota.md): the
//! vendor's keys and documents made with the real `medgate-bundle`, bundles signed by it, the
//! slot directory as the Debian package leaves it, and a wait on the appliance's update status.

use crate::{Appliance, workspace_bin};
use anyhow::{Result, bail};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs `medgate-bundle` in `dir`; its output, or an error with it.
pub fn bundle_tool(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(workspace_bin("medgate-bundle")?)
        .current_dir(dir)
        .args(args)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("medgate-bundle {args:?} failed: {text}");
    }
    Ok(text)
}

/// Vendor keys, root and keys documents in `keys/`, the device's trust store in its data dir
/// (`data/update/trust.json`, as the appliance of [`crate::Appliance`] finds it).
pub fn trust(dir: &Path) -> Result<PathBuf> {
    let k = vendor_keys(dir)?;
    trust_store(&k, &dir.join("data/update/trust.json"))?;
    Ok(k)
}

/// A root key and a vendor key in `dir/keys/`, the root document (1 of 1) and the keys document
/// delegating the vendor key (1 of 1); returns the directory.
pub fn vendor_keys(dir: &Path) -> Result<PathBuf> {
    let k = dir.join("keys");
    std::fs::create_dir_all(&k)?;
    bundle_tool(&k, &["keygen", "--name", "root-1"])?;
    bundle_tool(&k, &["keygen", "--name", "vendor-1"])?;
    bundle_tool(
        &k,
        &[
            "root",
            "--key",
            "root-1.pub",
            "--threshold",
            "1",
            "--version",
            "1",
            "--expires",
            "2099-01-01",
            "--sign-with",
            "root-1.key",
            "--out",
            "root.json",
        ],
    )?;
    bundle_tool(
        &k,
        &[
            "delegate",
            "--root",
            "root.json",
            "--key",
            "vendor-1.pub",
            "--threshold",
            "1",
            "--version",
            "1",
            "--expires",
            "2099-01-01",
            "--sign-with",
            "root-1.key",
            "--out",
            "keys.json",
        ],
    )?;
    Ok(k)
}

/// A trust store at `out` made of the root and keys documents in `keys` (a device's, or the
/// fleet's for checking uploads).
pub fn trust_store(keys: &Path, out: &Path) -> Result<()> {
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d)?;
    }
    bundle_tool(
        keys,
        &[
            "trust",
            "init",
            "--root",
            "root.json",
            "--keys",
            "keys.json",
            "--out",
            &out.display().to_string(),
        ],
    )?;
    Ok(())
}

/// A bundle of `payload` as `version`, signed by the vendor key.
pub fn sign(keys: &Path, payload: &Path, version: &str, out: &Path) -> Result<()> {
    bundle_tool(
        keys,
        &[
            "sign",
            "--payload",
            &payload.display().to_string(),
            "--kind",
            "appliance-binaries",
            "--version",
            version,
            "--hardware",
            "qemu-vm",
            "--expires-days",
            "30",
            "--sign-with",
            "vendor-1.key",
            "--out",
            &out.display().to_string(),
        ],
    )?;
    Ok(())
}

/// The slot directory as the Debian package leaves it: version 0.1.0 (the appliance binary)
/// in force. Returns the program systemd would run.
pub fn seed_slots(slots: &Path) -> Result<PathBuf> {
    let v = slots.join("versions/0.1.0");
    std::fs::create_dir_all(&v)?;
    std::fs::copy(workspace_bin("medgate-appliance")?, v.join("payload"))?;
    std::fs::set_permissions(v.join("payload"), std::fs::Permissions::from_mode(0o755))?;
    std::os::unix::fs::symlink("payload", v.join("medgate-appliance"))?;
    std::os::unix::fs::symlink("versions/0.1.0", slots.join("current"))?;
    Ok(slots.join("current/medgate-appliance"))
}

pub fn update_section(slots: &Path) -> String {
    format!(
        "[update]\nslots_dir = \"{}\"\nhardware = \"qemu-vm\"\nhealth_deadline_secs = 15\nprobe_interval_secs = 1\nquiet_secs = 2\nstudy_stable_secs = 3\n\n",
        slots.display()
    )
}

pub fn update_cli(config: &Path, bundle: &Path) -> Result<Output> {
    Ok(Command::new(workspace_bin("medgate-appliance")?)
        .args(["update", "--config"])
        .arg(config)
        .arg("--file")
        .arg(bundle)
        .output()?)
}

pub fn current(slots: &Path) -> Result<String> {
    Ok(std::fs::read_link(slots.join("current"))?
        .display()
        .to_string())
}

/// Polls `/api/status` through restarts (the switch replaces the process) until `check`.
pub async fn wait_update(
    a: &Appliance,
    what: &str,
    timeout: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> Result<serde_json::Value> {
    let started = Instant::now();
    let mut last = serde_json::Value::Null;
    loop {
        if let Ok(s) = a.status().await {
            if check(&s["update"]) {
                return Ok(s);
            }
            last = s["update"].clone();
        }
        if started.elapsed() > timeout {
            bail!(
                "{what}: not after {timeout:?}; last update status {last}\n{}",
                a.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
