//! What the update agent shows: the status's `update` object and the `medgate_update_state`
//! metric. Codes and versions only (no patient data).

use crate::metrics::write_header;
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::sync::Mutex;

/// `update` in `/api/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// The version in force in the slots (`current`), if any.
    pub running: Option<String>,
    /// The running version is on probation since a switch (not committed yet).
    pub on_probation: bool,
    /// The install under way or the last one: its campaign.
    pub campaign: Option<String>,
    /// Its version.
    pub version: Option<String>,
    /// Where it stands (`waiting_idle`, `probing`, `installed`, `rolled_back`, `refused`, …).
    pub state: Option<String>,
    /// For a final state other than `installed`: the stable code of why.
    pub code: Option<String>,
    /// While waiting: the reason's code (`associations_active`, `study_arriving`, …).
    pub reason: Option<String>,
    /// Words: the wait reason, the refusal, why it rolled back.
    pub detail: Option<String>,
}

/// The agent's status, shared with the status endpoint.
#[derive(Debug, Default)]
pub struct UpdateView {
    inner: Mutex<Option<UpdateStatus>>,
}

impl UpdateView {
    /// The status (none without an update agent).
    pub fn get(&self) -> Option<UpdateStatus> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes it.
    pub fn update(&self, f: impl FnOnce(&mut UpdateStatus)) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(g.get_or_insert_with(UpdateStatus::default));
    }

    /// `medgate_update_state{state,reason,version} 1` (nothing without an agent).
    pub fn render_metrics(&self) -> String {
        let Some(s) = self.get() else {
            return String::new();
        };
        let mut o = String::new();
        write_header(
            &mut o,
            "medgate_update_state",
            "gauge",
            "The update agent's state (labels: state, reason code, version, running version).",
        );
        let _ = writeln!(
            o,
            "medgate_update_state{{state=\"{}\",reason=\"{}\",version=\"{}\",running=\"{}\"}} 1",
            s.state.as_deref().unwrap_or("none"),
            s.reason.as_deref().or(s.code.as_deref()).unwrap_or(""),
            s.version.as_deref().unwrap_or(""),
            s.running.as_deref().unwrap_or("")
        );
        o
    }
}
