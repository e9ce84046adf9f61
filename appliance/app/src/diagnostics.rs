//! The diagnostics bundle: one JSON file with what support needs to understand a box — status,
//! metrics, configuration, start-up reconciliation, the calling AEs seen, quarantine counts and
//! the recent log lines — and nothing of a patient. Kept under `{data_dir}/diagnostics/`
//! (the last few), described to the fleet by name, size and SHA-256.

use crate::handle::App;
use crate::logbuf::LogBuffer;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Bundles kept on disk; older ones are deleted.
const KEEP: usize = 5;

/// A written bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Its path.
    pub path: PathBuf,
    /// Its file name (`diag-<ms>.json`).
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// SHA-256 of its content, hexadecimal.
    pub sha256: String,
}

/// Builds and writes a bundle. Blocking (file and index reads): call it off the async threads.
pub fn collect(
    app: &App,
    config_file: Option<&Path>,
    applied: Option<&serde_json::Value>,
) -> Result<Bundle, String> {
    let now = medgate_contract::now_ms();
    let mut quarantine: BTreeMap<String, u64> = BTreeMap::new();
    for e in app.spool().quarantined().map_err(|e| e.to_string())? {
        *quarantine.entry(e.destination).or_default() += 1;
    }
    let peers: Vec<serde_json::Value> = app
        .spool()
        .peers()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|p| {
            serde_json::json!({
                "calling_ae": p.calling_ae, "address": p.address, "called_aes": p.called_aes,
                "accepted": p.accepted, "rejected": p.rejected, "last_rejection": p.last_rejection,
                "sop_classes": p.sop_classes, "last_seen_ms": p.last_seen_ms,
            })
        })
        .collect();
    let config_text = config_file.map(|p| {
        std::fs::read_to_string(p).unwrap_or_else(|e| format!("cannot read {}: {e}", p.display()))
    });
    let bundle = serde_json::json!({
        "kind": "medgate-appliance diagnostics",
        "generated_at_ms": now,
        "appliance_version": env!("CARGO_PKG_VERSION"),
        "status": crate::status::report(app),
        "metrics": app.metrics().render(),
        "config_file": config_text,
        "applied_fleet_config": applied,
        "reconcile_at_start": app.reconcile(),
        "peers": peers,
        "quarantine_by_destination": quarantine,
        "logs": LogBuffer::global().lines(),
    });
    let bytes = serde_json::to_vec_pretty(&bundle).map_err(|e| e.to_string())?;
    let dir = app.cfg().appliance.data_dir.join("diagnostics");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let name = format!("diag-{now}.json");
    let path = dir.join(&name);
    std::fs::write(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    prune(&dir);
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let sha256 = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Bundle {
        path,
        name,
        bytes: bytes.len() as u64,
        sha256,
    })
}

fn prune(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("diag-") && n.ends_with(".json"))
        })
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(KEEP);
    for p in names.into_iter().take(excess) {
        let _ = std::fs::remove_file(p);
    }
}
