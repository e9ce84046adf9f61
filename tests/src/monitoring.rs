//! What the shipped monitoring files (deploy/prometheus, deploy/grafana) ask of the metrics:
//! the Grafana dashboard as types, its PromQL expressions, and every `medgate_*` metric family the
//! alerting rules and the dashboard name — so that a test can hold them against the real
//! `/metrics` of the appliance and the fleet.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::workspace_root;

/// The alerting rules Prometheus loads.
pub fn rules_file() -> PathBuf {
    workspace_root().join("deploy/prometheus/medgate.rules.yml")
}

/// Their unit tests (`promtool test rules`).
pub fn rules_test_file() -> PathBuf {
    workspace_root().join("deploy/prometheus/medgate.rules.test.yml")
}

/// The Grafana dashboard.
pub fn dashboard_file() -> PathBuf {
    workspace_root().join("deploy/grafana/medgate-overview.json")
}

/// Metric families the appliance exports only while it has a fleet link (enrolled): checked by
/// the fleet e2e test, where it has one.
pub const FLEET_LINK_METRICS: [&str; 2] = [
    "medgate_fleet_connected",
    "medgate_fleet_outbox_dropped_total",
];

/// Metric families the appliance exports only with an update agent (`[update]` configured):
/// checked by the update e2e test, where it has one.
pub const UPDATE_AGENT_METRICS: [&str; 1] = ["medgate_update_state"];

/// A Grafana dashboard, as much of it as we rely on (unknown fields are Grafana's own).
#[derive(Debug, Deserialize)]
pub struct Dashboard {
    pub uid: String,
    pub title: String,
    pub panels: Vec<Panel>,
    pub templating: Templating,
}

#[derive(Debug, Deserialize)]
pub struct Templating {
    pub list: Vec<Variable>,
}

#[derive(Debug, Deserialize)]
pub struct Variable {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Deserialize)]
pub struct Panel {
    pub id: u32,
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    #[serde(rename = "gridPos")]
    pub grid: Grid,
    pub targets: Vec<Target>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
pub struct Grid {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

#[derive(Debug, Deserialize)]
pub struct Target {
    #[serde(rename = "refId")]
    pub ref_id: String,
    pub expr: String,
}

/// Reads and parses the dashboard.
pub fn dashboard() -> Result<Dashboard> {
    let path = dashboard_file();
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a dashboard", path.display()))
}

/// A dashboard expression as Prometheus sees it once Grafana filled its variables in
/// (`$__rate_interval` → 5m, `$instance` → every instance).
pub fn as_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("\"$instance\"", "\".*\"")
}

/// Every `medgate_*` metric family named in `text` (histogram series `_bucket`/`_sum`/`_count`
/// as their family), outside comment lines.
pub fn metric_families(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let mut rest = line;
        while let Some(i) = rest.find("medgate_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            out.insert(family.to_string());
            rest = &tail[end..];
        }
    }
    out
}

/// Every metric family the rules and the dashboard name.
pub fn referenced_families() -> Result<BTreeSet<String>> {
    let rules = std::fs::read_to_string(rules_file())?;
    let mut all = metric_families(&rules);
    for p in dashboard()?.panels {
        for t in p.targets {
            all.extend(metric_families(&t.expr));
        }
    }
    Ok(all)
}

/// The families a Prometheus text exposition declares (`# TYPE name kind`).
pub fn exported_families(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_found_in_expressions_and_histograms_fold() {
        let f = metric_families(
            "# medgate_not_this\nexpr: histogram_quantile(0.99, rate(medgate_delivery_seconds_bucket[5m])) > medgate_queue_depth",
        );
        assert_eq!(
            f.into_iter().collect::<Vec<_>>(),
            ["medgate_delivery_seconds", "medgate_queue_depth"]
        );
    }

    #[test]
    fn exported_families_come_from_type_lines() {
        let f = exported_families(
            "# HELP medgate_a x\n# TYPE medgate_a counter\nmedgate_a 1\n# TYPE medgate_b_seconds histogram\n",
        );
        assert_eq!(
            f.into_iter().collect::<Vec<_>>(),
            ["medgate_a", "medgate_b_seconds"]
        );
    }
}
