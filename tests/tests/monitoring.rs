//! The monitoring files shipped for sites that run Prometheus and Grafana (deploy/), checked by
//! the tools themselves and held against the real metrics:
//! - `promtool check rules` on the alerting rules, `promtool test rules` on their unit tests
//!   (each alert fires when it should, with its words, and not before);
//! - the Grafana dashboard parses as a dashboard (unique ids, panels inside the 24-column grid
//!   without overlapping, every panel with a query), and every one of its PromQL expressions is
//!   valid PromQL, checked by promtool as a recording rule;
//! - every `medgate_*` metric the rules and the dashboard name is exported by a real appliance
//!   (with the worklist proxy on) or the real fleet manager (the fleet-link gauges, exported only
//!   by an enrolled appliance, are checked in tests/tests/fleet.rs).

use std::process::Command;

use anyhow::{Context, Result, ensure};
use medgate_e2e::monitoring::{
    FLEET_LINK_METRICS, UPDATE_AGENT_METRICS, as_promql, dashboard, exported_families,
    referenced_families, rules_file, rules_test_file,
};
use medgate_e2e::{Appliance, Fleet, free_port, peer::require_tool};

fn promtool(args: &[&str]) -> Result<String> {
    let tool = require_tool("/usr/bin/promtool");
    let out = Command::new(tool).args(args).output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "promtool {args:?} failed:\n{text}");
    Ok(text)
}

#[test]
fn alerting_rules_pass_promtool_check_and_their_unit_tests() -> Result<()> {
    let rules = rules_file();
    let out = promtool(&["check", "rules", &rules.to_string_lossy()])?;
    assert!(out.contains("SUCCESS"), "{out}");
    let out = promtool(&["test", "rules", &rules_test_file().to_string_lossy()])?;
    assert!(out.contains("SUCCESS"), "{out}");
    Ok(())
}

#[test]
fn dashboard_is_laid_out_and_every_query_is_valid_promql() -> Result<()> {
    let d = dashboard()?;
    assert_eq!(d.uid, "medgate-overview");
    assert!(!d.title.is_empty());
    let vars: Vec<_> = d
        .templating
        .list
        .iter()
        .map(|v| (v.name.as_str(), v.kind.as_str()))
        .collect();
    assert!(vars.contains(&("datasource", "datasource")), "{vars:?}");
    assert!(vars.contains(&("instance", "query")), "{vars:?}");
    assert!(d.panels.len() >= 10, "a dashboard worth shipping");
    let mut ids = std::collections::BTreeSet::new();
    for p in &d.panels {
        assert!(ids.insert(p.id), "panel id {} twice", p.id);
        assert!(
            matches!(p.kind.as_str(), "stat" | "timeseries" | "gauge" | "table"),
            "{}: {}",
            p.title,
            p.kind
        );
        assert!(!p.targets.is_empty(), "{} has no query", p.title);
        assert!(
            p.grid.w > 0 && p.grid.h > 0 && p.grid.x + p.grid.w <= 24,
            "{}: {:?}",
            p.title,
            p.grid
        );
    }
    for (i, a) in d.panels.iter().enumerate() {
        for b in &d.panels[i + 1..] {
            let (a, b) = (a.grid, b.grid);
            let apart =
                a.x + a.w <= b.x || b.x + b.w <= a.x || a.y + a.h <= b.y || b.y + b.h <= a.y;
            assert!(apart, "panels overlap: {a:?} {b:?}");
        }
    }
    // Every expression as a recording rule: promtool parses each one.
    let dir = tempfile::tempdir()?;
    let mut yaml = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for p in &d.panels {
        for t in &p.targets {
            let expr = serde_json::to_string(&as_promql(&t.expr))?;
            yaml += &format!(
                "      - record: dashboard:panel{}:{}\n        expr: {expr}\n",
                p.id, t.ref_id
            );
        }
    }
    let file = dir.path().join("dashboard.rules.yml");
    std::fs::write(&file, yaml)?;
    let out = promtool(&["check", "rules", &file.to_string_lossy()])?;
    let n: usize = d.panels.iter().map(|p| p.targets.len()).sum();
    assert!(out.contains(&format!("SUCCESS: {n} rules found")), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_dashboard_name_is_exported() -> Result<()> {
    let t = tempfile::tempdir()?;
    let fleet = Fleet::start(&t.path().join("fleet")).await?;
    let ris = free_port();
    let appliance = Appliance::start(
        &t.path().join("appliance"),
        &format!(
            "[[destination]]\nname = \"archive\"\nkind = \"dimse\"\naddress = \"127.0.0.1:{}\"\ncalled_ae_title = \"ARCHIVE\"\n\n[worklist]\nupstream = \"127.0.0.1:{ris}\"\ncalled_ae_title = \"RIS\"\n",
            free_port()
        ),
    )
    .await?;
    let mut exported = exported_families(&appliance.metrics().await?);
    let fleet_metrics = reqwest::get(format!("{}/metrics", fleet.url()))
        .await?
        .text()
        .await
        .context("fleet /metrics")?;
    exported.extend(exported_families(&fleet_metrics));
    let referenced = referenced_families()?;
    assert!(referenced.len() >= 15, "{referenced:?}");
    let missing: Vec<_> = referenced
        .iter()
        .filter(|m| {
            !exported.contains(*m)
                && !FLEET_LINK_METRICS.contains(&m.as_str())
                && !UPDATE_AGENT_METRICS.contains(&m.as_str())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the shipped rules or dashboard name metrics nobody exports: {missing:?}"
    );
    Ok(())
}
