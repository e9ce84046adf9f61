//! What the device page shows, computed without IO: the chart series of a time range
//! (rates from cumulative counters), the configuration as TOML and its check with each problem
//! at its key and line, the line diff against the configuration the device runs, and the
//! device's state in words.

use medgate_contract::{
    CommandAction, CommandOutput, DestinationQueue, DestinationState, EventBody, TelemetrySnapshot,
};
use serde::Serialize;

use super::view::ago;
use crate::model::{
    CommandRecord, Connection, Device, DeviceConfig, DeviceStatus, Drift, TelemetrySample,
};
use crate::store::config::Document;

/// A chart's time range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Range {
    /// The last hour, raw samples (one per 10 s at most).
    #[default]
    Hour,
    /// The last day, one point per 5 min.
    Day,
    /// The last week, one point per 30 min.
    Week,
}

impl Range {
    /// Every range, in the order the page offers them.
    pub const ALL: [Range; 3] = [Range::Hour, Range::Day, Range::Week];

    /// From the query word (`hour` when absent).
    pub fn parse(s: Option<&str>) -> Result<Range, String> {
        match s.unwrap_or("hour") {
            "hour" => Ok(Range::Hour),
            "day" => Ok(Range::Day),
            "week" => Ok(Range::Week),
            other => Err(format!(
                "range {other:?} is not one of hour, day, week; use ?range=hour"
            )),
        }
    }

    /// The query word.
    pub fn as_str(self) -> &'static str {
        match self {
            Range::Hour => "hour",
            Range::Day => "day",
            Range::Week => "week",
        }
    }

    /// What the page calls it.
    pub fn label(self) -> &'static str {
        match self {
            Range::Hour => "Last hour",
            Range::Day => "Last day",
            Range::Week => "Last week",
        }
    }

    /// Its length.
    pub fn span_ms(self) -> i64 {
        match self {
            Range::Hour => 3_600_000,
            Range::Day => 86_400_000,
            Range::Week => 7 * 86_400_000,
        }
    }

    /// One point per this long at most (the server's downsampling): 360, 288 and 336 points.
    pub fn step_ms(self) -> i64 {
        match self {
            Range::Hour => 10_000,
            Range::Day => 300_000,
            Range::Week => 1_800_000,
        }
    }
}

/// The chart data of a range, as columns (uPlot's shape): times in Unix seconds, one value or
/// a gap (`null`) per time in each series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chart {
    /// The range's word.
    pub range: &'static str,
    /// Start and end of the range (Unix seconds): the x axis shows all of it.
    pub from: i64,
    /// End.
    pub to: i64,
    /// Point times (Unix seconds).
    pub t: Vec<i64>,
    /// Objects received per minute since the previous point.
    pub received_per_min: Vec<Option<f64>>,
    /// Objects forwarded (confirmed by every destination) per minute.
    pub forwarded_per_min: Vec<Option<f64>>,
    /// Objects waiting (all destinations).
    pub queue_depth: Vec<Option<u64>>,
    /// Age of the oldest waiting object, seconds.
    pub oldest_age_secs: Vec<Option<u64>>,
    /// Spool filesystem use, percent.
    pub disk_used_percent: Vec<Option<f64>>,
    /// Forward latency, median, ms.
    pub latency_p50_ms: Vec<Option<u64>>,
    /// Forward latency, 90th percentile, ms.
    pub latency_p90_ms: Vec<Option<u64>>,
}

/// Milliseconds as `f64` for a rate (exact below 2^53 ms, some 285,000 years).
fn ms_f64(ms: i64) -> f64 {
    // i64 → f64 through u32 halves: no lossy `as`.
    let hi = f64::from(u32::try_from(ms.max(0) >> 32).unwrap_or(u32::MAX));
    let lo = f64::from(u32::try_from(ms.max(0) & 0xffff_ffff).unwrap_or(0));
    hi * 4_294_967_296.0 + lo
}

/// A count as `f64` (see [`ms_f64`]).
fn count_f64(n: u64) -> f64 {
    ms_f64(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Per minute between two cumulative counts `dt_ms` apart; `None` when the counter went back
/// (the appliance process restarted) or no time passed.
fn per_min(prev: u64, now: u64, dt_ms: i64) -> Option<f64> {
    if dt_ms <= 0 || now < prev {
        return None;
    }
    let r = count_f64(now - prev) * 60_000.0 / ms_f64(dt_ms);
    Some((r * 10.0).round() / 10.0)
}

/// Percent used of a filesystem, one decimal; `None` if its size is unknown.
pub fn used_percent(total: u64, free: u64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let p = count_f64(total.saturating_sub(free)) * 100.0 / count_f64(total);
    Some((p * 10.0).round() / 10.0)
}

/// The chart of `samples` (oldest first, already downsampled) over `[to_ms - span, to_ms]`.
pub fn chart(range: Range, samples: &[TelemetrySample], to_ms: i64) -> Chart {
    // The x axis starts at the range's start, or a minute before the first point when the
    // device has reported for less than the range (a new device's chart is not a sliver).
    let start = (to_ms - range.span_ms()).div_euclid(1000);
    let first = samples.first().map(|s| s.ts_ms.div_euclid(1000) - 60);
    let mut c = Chart {
        range: range.as_str(),
        from: first.map_or(start, |f| f.max(start)),
        to: to_ms.div_euclid(1000),
        t: Vec::with_capacity(samples.len()),
        received_per_min: Vec::with_capacity(samples.len()),
        forwarded_per_min: Vec::with_capacity(samples.len()),
        queue_depth: Vec::with_capacity(samples.len()),
        oldest_age_secs: Vec::with_capacity(samples.len()),
        disk_used_percent: Vec::with_capacity(samples.len()),
        latency_p50_ms: Vec::with_capacity(samples.len()),
        latency_p90_ms: Vec::with_capacity(samples.len()),
    };
    let mut prev: Option<&TelemetrySample> = None;
    for s in samples {
        let d = &s.data;
        c.t.push(s.ts_ms.div_euclid(1000));
        let rate = |f: fn(&TelemetrySnapshot) -> u64| {
            prev.and_then(|p| per_min(f(&p.data), f(d), s.ts_ms - p.ts_ms))
        };
        c.received_per_min.push(rate(|d| d.received.objects));
        c.forwarded_per_min.push(rate(|d| d.forwarded.objects));
        c.queue_depth.push(Some(d.queue.depth));
        c.oldest_age_secs.push(Some(d.queue.oldest_age_secs));
        c.disk_used_percent
            .push(used_percent(d.disk.total_bytes, d.disk.free_bytes));
        c.latency_p50_ms.push(Some(d.forward_latency_ms.p50));
        c.latency_p90_ms.push(Some(d.forward_latency_ms.p90));
        prev = Some(s);
    }
    c
}

/// `1 object`, `3 objects`.
fn objects(n: u64) -> String {
    if n == 1 {
        "1 object".into()
    } else {
        format!("{n} objects")
    }
}

/// A size in words (`512 B`, `1.5 MB`, `2.0 GB`; decimal units, as disks are sold).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = count_f64(n) / 1000.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// A duration in words (`45 s`, `12 min`, `3 h 5 min`, `2 days 4 h`).
pub fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} days {} h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// How serious a finding is (the page colours it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Something is wrong now.
    Bad,
    /// Worth a look.
    Warn,
    /// All is well.
    Ok,
}

impl Severity {
    /// The CSS class.
    pub fn class(self) -> &'static str {
        match self {
            Severity::Bad => "finding bad",
            Severity::Warn => "finding warn",
            Severity::Ok => "finding ok",
        }
    }
}

/// A destination's state in words.
pub fn destination_state(d: &DestinationQueue) -> (&'static str, &'static str) {
    match d.state {
        DestinationState::Ok => ("ok", "state-online"),
        DestinationState::BackingOff => ("backing off", "state-pending"),
        DestinationState::Quarantining => ("quarantining", "state-failed"),
        DestinationState::Other => ("unknown", "state-none"),
    }
}

/// The device's state and why, in words, most serious first.
pub fn findings(
    d: &Device,
    cfg: &DeviceConfig,
    latest: Option<&TelemetrySample>,
    now_ms: i64,
) -> Vec<(Severity, String)> {
    let mut f = Vec::new();
    match d.status {
        DeviceStatus::Pending => f.push((
            Severity::Warn,
            "Reported without enrollment: approve it if it is yours, or revoke it.".to_owned(),
        )),
        DeviceStatus::Revoked => f.push((
            Severity::Bad,
            "Revoked: its messages are refused and its certificate is on the broker's revocation list.".to_owned(),
        )),
        DeviceStatus::Decommissioned => f.push((
            Severity::Bad,
            "Decommissioned: taken out of service.".to_owned(),
        )),
        DeviceStatus::Approved => {}
    }
    match (d.connection, d.last_seen_ms) {
        (Connection::Online, _) => {}
        (Connection::Offline, Some(t)) => f.push((
            Severity::Bad,
            format!(
                "Offline: last heard {}. Check its power and network.",
                ago(now_ms, t)
            ),
        )),
        (Connection::Offline, None) => f.push((Severity::Bad, "Offline.".to_owned())),
        (Connection::Unknown, _) => f.push((
            Severity::Warn,
            "Enrolled but never connected: check that it can reach the broker.".to_owned(),
        )),
    }
    let (sev, words) = drift_words(cfg);
    if sev != Severity::Ok {
        f.push((sev, words));
    }
    if let Some(s) = latest {
        for q in &s.data.destinations {
            match q.state {
                DestinationState::BackingOff => f.push((
                    Severity::Bad,
                    format!(
                        "Destination {} does not answer: {} objects wait, the oldest for {}; forwarding retries with backoff.",
                        q.name.as_str(),
                        q.depth,
                        duration(q.oldest_age_secs)
                    ),
                )),
                DestinationState::Quarantining => f.push((
                    Severity::Bad,
                    format!(
                        "Destination {} refuses objects: they go to quarantine ({} there now). Look at the archive's log, then retry the quarantine.",
                        q.name.as_str(),
                        q.quarantined
                    ),
                )),
                DestinationState::Ok | DestinationState::Other => {}
            }
        }
        if s.data.destinations.is_empty() && s.data.queue.oldest_age_secs > 600 {
            f.push((
                Severity::Warn,
                format!(
                    "{} objects wait to be forwarded, the oldest for {}.",
                    s.data.queue.depth,
                    duration(s.data.queue.oldest_age_secs)
                ),
            ));
        }
        if s.data.quarantine_objects > 0 && !f.iter().any(|(_, w)| w.contains("quarantine")) {
            f.push((
                Severity::Warn,
                format!(
                    "{} objects are in quarantine: retry them once the cause is fixed, or purge them.",
                    s.data.quarantine_objects
                ),
            ));
        }
        if let Some(p) = used_percent(s.data.disk.total_bytes, s.data.disk.free_bytes)
            && p >= 85.0
        {
            f.push((
                Severity::Warn,
                format!("The spool's disk is {p:.0} % full."),
            ));
        }
    }
    if f.is_empty() {
        f.push((
            Severity::Ok,
            match latest {
                Some(_) => {
                    "Running normally: online, forwarding, configuration applied.".to_owned()
                }
                None => "Online; no telemetry received yet.".to_owned(),
            },
        ));
    }
    f.sort_by_key(|(s, _)| *s);
    f
}

/// Why an installed update waits, from the appliance's reason code (`update.reason` on the
/// appliance, the telemetry's `update.code` while waiting).
pub fn wait_words(code: Option<&str>) -> &'static str {
    match code {
        Some("associations_active") => "associations are open",
        Some("study_arriving") => "a study is still arriving",
        Some("recent_object") => "an object arrived moments ago",
        Some("forward_queue") => "too many objects wait to be forwarded",
        Some("outside_window") => "outside the site's maintenance window",
        Some("activity_unknown") => "the DICOM activity is not known yet",
        Some(_) | None => "DICOM is busy",
    }
}

/// The words and severity of what the update agent reports.
pub fn update_words(u: &medgate_contract::UpdateReport) -> (Severity, String) {
    use medgate_contract::UpdatePhase as P;
    let version = u.version.as_ref().map_or("?", |v| v.as_str());
    let running = u
        .running
        .as_ref()
        .map(|r| format!("; it runs {}", r.as_str()))
        .unwrap_or_default();
    let code = u.code.as_ref().map(|c| c.as_str());
    let why = code.map(|c| format!(" ({c})")).unwrap_or_default();
    let wait = wait_words(code);
    let (sev, what) = match u.state {
        P::Downloading => (Severity::Ok, format!("downloading {version}")),
        P::Verifying => (Severity::Ok, format!("verifying {version}")),
        P::Installing => (
            Severity::Ok,
            format!("installing {version} into the inactive slot"),
        ),
        P::WaitingIdle => (
            Severity::Warn,
            format!("{version} installed, waiting for idle DICOM: {wait}"),
        ),
        P::Switching => (Severity::Ok, format!("switching to {version}")),
        P::Probing => (
            Severity::Warn,
            format!("{version} on probation until it proves healthy"),
        ),
        P::Installed => (Severity::Ok, format!("{version} installed and committed")),
        P::RolledBack => (
            Severity::Bad,
            format!("{version} rolled back by itself{why}: the previous version runs"),
        ),
        P::Refused => (
            Severity::Bad,
            format!("{version} refused before anything was written{why}"),
        ),
        P::Failed => (Severity::Bad, format!("{version} failed{why}")),
        P::Cancelled => (Severity::Warn, format!("{version} cancelled by the fleet")),
        P::Abandoned => (
            Severity::Warn,
            format!("{version} abandoned: its deadline passed before DICOM was idle"),
        ),
        P::Other => (
            Severity::Warn,
            format!("{version}: a state this console does not know{why}"),
        ),
    };
    (sev, format!("{what}{running}."))
}

/// The configuration drift in words, with the device's reason when it did not apply.
pub fn drift_words(cfg: &DeviceConfig) -> (Severity, String) {
    let desired = cfg.desired.as_ref().map_or(0, |d| d.version);
    match cfg.drift {
        Drift::None => (
            Severity::Ok,
            "No configuration set by the fleet: the device runs its local file.".to_owned(),
        ),
        Drift::InSync => (
            Severity::Ok,
            format!("in_sync: the device runs version {desired}, the one set here."),
        ),
        Drift::Pending => (
            Severity::Warn,
            format!(
                "pending: version {desired} is waiting for the device{}.",
                cfg.reported
                    .as_ref()
                    .map(|r| format!(" (it runs version {})", r.running_version))
                    .unwrap_or_default()
            ),
        ),
        Drift::Failed => {
            let r = cfg.reported.as_ref();
            let how = match r.map(|r| r.status) {
                Some(medgate_contract::ConfigStatus::RolledBack) => "rolled back",
                _ => "rejected",
            };
            let why: Vec<String> = r
                .map(|r| {
                    r.problems
                        .iter()
                        .map(|p| match &p.field {
                            Some(k) => format!("{} at {}", p.code.as_str(), k.as_str()),
                            None => p.code.as_str().to_owned(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            (
                Severity::Bad,
                format!(
                    "{how}: the device did not apply version {desired}{}; it runs version {}.",
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", why.join(", "))
                    },
                    r.map_or(0, |r| r.running_version)
                ),
            )
        }
    }
}

/// An event in words (codes, counts and AE titles only: that is all events carry).
pub fn event_words(e: &EventBody) -> String {
    match e {
        EventBody::StudyReceived {
            calling_ae,
            modality,
            received,
            duration_ms,
            ..
        } => format!(
            "{} ({}) received from {}{} in {}",
            objects(received.objects),
            bytes(received.bytes),
            calling_ae.as_str(),
            modality
                .as_ref()
                .map(|m| format!(", {}", m.as_str()))
                .unwrap_or_default(),
            duration(duration_ms / 1000)
        ),
        EventBody::StudyForwarded {
            destination,
            forwarded,
            latency_ms,
            attempts,
            ..
        } => format!(
            "{} ({}) forwarded to {} after {} ({} attempt{})",
            objects(forwarded.objects),
            bytes(forwarded.bytes),
            destination.as_str(),
            duration(latency_ms / 1000),
            attempts,
            if *attempts == 1 { "" } else { "s" }
        ),
        EventBody::ObjectQuarantined {
            reason,
            calling_ae,
            destination,
            bytes: b,
            ..
        } => format!(
            "object of {}{} quarantined ({}){}",
            bytes(*b),
            calling_ae
                .as_ref()
                .map(|a| format!(" from {}", a.as_str()))
                .unwrap_or_default(),
            serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
                .replace('_', " "),
            destination
                .as_ref()
                .map(|d| format!(" by {}", d.as_str()))
                .unwrap_or_default()
        ),
        EventBody::DiskWatermarkCrossed {
            watermark,
            crossing,
            used_percent,
        } => format!(
            "disk use {used_percent} % went {} the {} watermark",
            match crossing {
                medgate_contract::Crossing::Above => "above",
                medgate_contract::Crossing::Below => "below",
            },
            match watermark {
                medgate_contract::Watermark::High => "high",
                medgate_contract::Watermark::Low => "low",
            }
        ),
        EventBody::PeerSeen(p) => format!(
            "calling AE {} from {} {}",
            p.calling_ae.as_str(),
            p.ip,
            if p.accepted { "accepted" } else { "refused" }
        ),
        EventBody::QuarantineChanged {
            action, objects, ..
        } => format!(
            "quarantine {}: {objects} objects",
            match action {
                medgate_contract::QuarantineAction::Retry => "retried",
                medgate_contract::QuarantineAction::Purge => "purged",
            }
        ),
        EventBody::Other => "an event this fleet version does not know".to_owned(),
    }
}

/// A command's action in words.
pub fn action_words(a: &CommandAction) -> String {
    match a {
        CommandAction::Restart => "restart".into(),
        CommandAction::RetryQuarantine => "retry quarantine".into(),
        CommandAction::PurgeQuarantine {
            older_than_secs: None,
        } => "purge quarantine".into(),
        CommandAction::PurgeQuarantine {
            older_than_secs: Some(s),
        } => format!("purge quarantine older than {}", duration(*s)),
        CommandAction::CollectDiagnostics => "collect diagnostics".into(),
        CommandAction::RetryNow { destination: None } => "retry now (all destinations)".into(),
        CommandAction::RetryNow {
            destination: Some(d),
        } => format!("retry now ({})", d.as_str()),
    }
}

/// A command's result in words.
pub fn result_words(c: &CommandRecord) -> String {
    let mut parts = Vec::new();
    if let Some(code) = &c.code {
        parts.push(format!("code {code}"));
    }
    if let Some(o) = &c.output {
        let CommandOutput {
            objects,
            bytes: b,
            sha256,
            file,
            destinations,
        } = o;
        if let Some(n) = objects {
            parts.push(format!("{n} objects"));
        }
        if let Some(n) = b {
            parts.push(bytes(*n));
        }
        if let Some(n) = destinations {
            parts.push(format!("{n} destinations"));
        }
        if let Some(f) = file {
            parts.push(format!("file {}", f.as_str()));
        }
        if let Some(h) = sha256 {
            parts.push(format!(
                "SHA-256 {}…",
                &h.as_str()[..h.as_str().len().min(12)]
            ));
        }
    }
    parts.join(", ")
}

// ---- the configuration editor ----

/// A problem of the edited configuration, at its key and, when found, its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedProblem {
    /// The dotted key (`listener.ae_title`, `destination[0].address`), or `config` for the
    /// document as a whole.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
    /// Its line in the text (1-based).
    pub line: Option<usize>,
}

/// The check of an edited configuration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checked {
    /// The document, when the text is TOML.
    pub doc: Option<Document>,
    /// Every problem, in line order (problems without a line last).
    pub problems: Vec<KeyedProblem>,
    /// Box-local keys the text has (they stay the box's own and are not sent).
    pub box_local: Vec<String>,
}

impl Checked {
    /// Whether it may be saved.
    pub fn ok(&self) -> bool {
        self.doc.is_some() && self.problems.is_empty()
    }
}

/// A desired document as TOML (what the editor shows; the appliance's own file format).
pub fn toml_text(doc: &Document) -> String {
    toml::to_string_pretty(doc).unwrap_or_else(|e| {
        format!(
            "# this configuration cannot be shown as TOML ({e}); its JSON:\n# {}\n",
            serde_json::to_string(doc).unwrap_or_default()
        )
    })
}

/// Checks edited TOML as the appliance would take it: TOML syntax (at its line), keys the
/// device's configuration schema does not know (each at its key), then the values
/// (`medgate_config`: type errors at their key path, then every `Problem` of `validate`).
pub fn check(text: &str, schema_version: u32) -> Checked {
    let lines = key_lines(text);
    let at = |key: String, message: String| KeyedProblem {
        line: line_of(&lines, &key),
        key,
        message,
    };
    let value: toml::Value = match toml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let line = e
                .span()
                .and_then(|s| text.get(..s.start))
                .map(|before| before.matches('\n').count() + 1);
            return Checked {
                problems: vec![KeyedProblem {
                    key: "config".into(),
                    message: format!("not valid TOML: {}", e.message()),
                    line,
                }],
                ..Checked::default()
            };
        }
    };
    let mut doc = match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => {
            return Checked {
                problems: vec![at(
                    "config".into(),
                    "must be a TOML document of tables".into(),
                )],
                ..Checked::default()
            };
        }
    };
    let box_local = medgate_config::strip_box_local(&mut doc);
    if doc.is_empty() {
        return Checked {
            problems: vec![at(
                "config".into(),
                "empty: write the fleet-owned tables, at least [listener] with ae_title and bind"
                    .into(),
            )],
            box_local,
            ..Checked::default()
        };
    }
    let mut problems: Vec<KeyedProblem> = match medgate_config::keys_not_known(&doc, schema_version)
    {
        Err(e) => vec![at("config".into(), format!("the device reports {e}"))],
        Ok(keys) => keys
            .into_iter()
            .map(|k| {
                at(
                    k,
                    format!(
                        "no such key in configuration schema version {schema_version} (the device's); check its spelling"
                    ),
                )
            })
            .collect(),
    };
    if problems.is_empty() {
        match serde_path_to_error::deserialize::<_, medgate_config::DesiredConfig>(
            serde_json::Value::Object(doc.clone()),
        ) {
            Err(e) => {
                let key = e.path().to_string();
                let key = if key == "." || key.is_empty() {
                    "config".to_owned()
                } else {
                    key
                };
                problems.push(at(key, e.into_inner().to_string()));
            }
            Ok(c) => problems.extend(c.validate().into_iter().map(|p| at(p.key, p.message))),
        }
    }
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    Checked {
        doc: Some(doc),
        problems,
        box_local,
    }
}

/// The dotted key of every table header and `key = value` line of a TOML text, with its line
/// (1-based): `listener.ae_title`, `destination[1].address`, `rules.coerce[0].set`.
pub fn key_lines(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut prefix = String::new();
    // Current index of each array of tables, by its plain path (`destination`, `rules.coerce`).
    let mut arrays: Vec<(String, usize)> = Vec::new();
    let path_of = |plain: &[&str], arrays: &[(String, usize)], last_is_new: bool| -> String {
        let mut acc = String::new();
        let mut out = String::new();
        for (i, seg) in plain.iter().enumerate() {
            if i > 0 {
                acc.push('.');
                out.push('.');
            }
            acc.push_str(seg);
            out.push_str(seg);
            let is_last = i + 1 == plain.len();
            if !(is_last && last_is_new)
                && let Some((_, n)) = arrays.iter().find(|(p, _)| *p == acc)
            {
                out.push_str(&format!("[{n}]"));
            }
        }
        out
    };
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some(h) = l.strip_prefix("[[") {
            let name = h.split("]]").next().unwrap_or_default();
            let segs: Vec<&str> = name
                .split('.')
                .map(|s| s.trim().trim_matches('"'))
                .collect();
            let plain = segs.join(".");
            let n = match arrays.iter_mut().find(|(p, _)| *p == plain) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    arrays.push((plain.clone(), 0));
                    0
                }
            };
            // Arrays under the previous element start again.
            let nested = format!("{plain}.");
            arrays.retain(|(p, _)| !p.starts_with(&nested));
            prefix = format!("{}[{n}]", path_of(&segs, &arrays, true));
            out.push((prefix.clone(), line));
        } else if let Some(h) = l.strip_prefix('[') {
            let name = h.split(']').next().unwrap_or_default();
            let segs: Vec<&str> = name
                .split('.')
                .map(|s| s.trim().trim_matches('"'))
                .collect();
            prefix = path_of(&segs, &arrays, false);
            out.push((prefix.clone(), line));
        } else if let Some((k, _)) = l.split_once('=') {
            let k = k.trim().trim_matches('"');
            if k.is_empty() || k.contains(char::is_whitespace) && !k.contains('.') {
                continue;
            }
            let key = if prefix.is_empty() {
                k.to_owned()
            } else {
                format!("{prefix}.{k}")
            };
            out.push((key, line));
        }
    }
    out
}

/// The line of a key: its own, else that of the nearest enclosing key the text has
/// (`listener.allowed_networks[2]` → the `allowed_networks` line).
pub fn line_of(lines: &[(String, usize)], key: &str) -> Option<usize> {
    let mut k = key;
    loop {
        if let Some((_, l)) = lines.iter().find(|(p, _)| p == k) {
            return Some(*l);
        }
        let cut = k.rfind(['.', '['])?;
        k = &k[..cut];
    }
}

/// One line of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffLine {
    /// In both.
    Same(String),
    /// Only in the new text.
    Added(String),
    /// Only in the old text.
    Removed(String),
}

/// Lines compared at most (a longer document is shown without a diff).
pub const DIFF_MAX_LINES: usize = 2000;

/// The line diff of two texts (longest common subsequence); `None` if either is longer than
/// [`DIFF_MAX_LINES`].
pub fn diff(old: &str, new: &str) -> Option<Vec<DiffLine>> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    if a.len() > DIFF_MAX_LINES || b.len() > DIFF_MAX_LINES {
        return None;
    }
    // lcs[i][j]: common lines of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(DiffLine::Same(a[i].to_owned()));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(DiffLine::Added(b[j].to_owned()));
            j += 1;
        } else {
            out.push(DiffLine::Removed(a[i].to_owned()));
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use medgate_contract::{Disk, Flow, QueueStats, Token};

    fn sample(ts_ms: i64, received: u64, depth: u64) -> TelemetrySample {
        TelemetrySample {
            ts_ms,
            bucket_secs: 0,
            data: TelemetrySnapshot {
                received: Flow {
                    objects: received,
                    bytes: 0,
                },
                forwarded: Flow {
                    objects: received / 2,
                    bytes: 0,
                },
                queue: QueueStats {
                    depth,
                    oldest_age_secs: depth * 2,
                },
                disk: Disk {
                    total_bytes: 1000,
                    free_bytes: 250,
                },
                ..TelemetrySnapshot::default()
            },
        }
    }

    #[test]
    fn chart_rates_come_from_counter_differences_and_a_restart_is_a_gap() {
        let s = [
            sample(60_000, 100, 1),
            sample(120_000, 160, 2),
            sample(150_000, 190, 0),
            // The appliance restarted: its counters began again.
            sample(210_000, 5, 0),
        ];
        let c = chart(Range::Hour, &s, 3_600_000);
        assert_eq!(c.t, [60, 120, 150, 210]);
        // Less than an hour of data: the axis starts a minute before the first point.
        assert_eq!((c.from, c.to), (0, 3600));
        let late = chart(Range::Hour, &s[1..], 3_600_000);
        assert_eq!(late.from, 60);
        assert_eq!(c.received_per_min, [None, Some(60.0), Some(60.0), None]);
        assert_eq!(c.forwarded_per_min, [None, Some(30.0), Some(30.0), None]);
        assert_eq!(c.queue_depth, [Some(1), Some(2), Some(0), Some(0)]);
        assert_eq!(c.oldest_age_secs[1], Some(4));
        assert_eq!(c.disk_used_percent[0], Some(75.0));
        let json = serde_json::to_string(&c).expect("json");
        assert!(
            json.contains(r#""received_per_min":[null,60.0,60.0,null]"#),
            "{json}"
        );
        assert_eq!(Range::parse(None), Ok(Range::Hour));
        assert_eq!(Range::parse(Some("week")), Ok(Range::Week));
        assert!(Range::parse(Some("year")).is_err());
        // Points per range stay a few hundred.
        for r in Range::ALL {
            assert!(r.span_ms() / r.step_ms() <= 400, "{r:?}");
        }
    }

    #[test]
    fn sizes_and_durations_read_as_words() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1_500_000), "1.5 MB");
        assert_eq!(bytes(2_000_000_000), "2.0 GB");
        assert_eq!(duration(45), "45 s");
        assert_eq!(duration(725), "12 min");
        assert_eq!(duration(3 * 3600 + 300), "3 h 5 min");
        assert_eq!(duration(2 * 86_400 + 4 * 3600), "2 days 4 h");
    }

    const GOOD: &str = r#"[appliance]
name = "ct-room-1"

[listener]
ae_title = "MEDGATE"
bind = "0.0.0.0:104"
max_associations = 8

[[destination]]
name = "archive"
kind = "dimse"
address = "archive.example:104"
called_ae_title = "ARCHIVE"

[[destination]]
name = "web"
kind = "stow"
url = "https://pacs.example/dicomweb"
"#;

    #[test]
    fn keys_are_found_at_their_lines_in_tables_and_arrays_of_tables() {
        let lines = key_lines(GOOD);
        assert_eq!(line_of(&lines, "appliance.name"), Some(2));
        assert_eq!(line_of(&lines, "listener.max_associations"), Some(7));
        assert_eq!(line_of(&lines, "destination[0].address"), Some(12));
        assert_eq!(line_of(&lines, "destination[1].url"), Some(18));
        assert_eq!(line_of(&lines, "destination[1]"), Some(15));
        // A key the text lacks: its table's line.
        assert_eq!(line_of(&lines, "destination[1].called_ae_title"), Some(15));
        assert_eq!(line_of(&lines, "listener.allowed_networks[2]"), Some(4));
        assert_eq!(line_of(&lines, "config"), None);
        let nested = "[rules]\n[[rules.coerce]]\nname = \"a\"\n[rules.coerce.set]\nX = \"1\"\n[[rules.coerce]]\nname = \"b\"\n";
        let lines = key_lines(nested);
        assert_eq!(line_of(&lines, "rules.coerce[0].set.X"), Some(5));
        assert_eq!(line_of(&lines, "rules.coerce[1].name"), Some(7));
    }

    #[test]
    fn a_wrong_key_a_wrong_value_and_bad_toml_are_each_shown_at_their_line() {
        let ok = check(GOOD, 1);
        assert!(ok.ok(), "{:?}", ok.problems);
        let typo = GOOD.replace("max_associations", "max_asociations");
        let c = check(&typo, 1);
        assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
        assert_eq!(c.problems[0].key, "listener.max_asociations");
        assert_eq!(c.problems[0].line, Some(7));
        assert!(c.problems[0].message.contains("no such key"));
        let wrong_type = GOOD.replace("max_associations = 8", "max_associations = \"eight\"");
        let c = check(&wrong_type, 1);
        assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
        assert_eq!(
            (c.problems[0].key.as_str(), c.problems[0].line),
            ("listener.max_associations", Some(7))
        );
        let bad_value = GOOD.replace("archive.example:104", "no port");
        let c = check(&bad_value, 1);
        assert!(
            c.problems
                .iter()
                .any(|p| p.key == "destination[0].address" && p.line == Some(12)),
            "{:?}",
            c.problems
        );
        let c = check("[listener\nae_title = 1", 1);
        assert_eq!(c.problems[0].key, "config");
        assert_eq!(c.problems[0].line, Some(1));
        assert!(c.doc.is_none() && !c.ok());
        // Box-local keys are the box's own: noted, not sent, no problem.
        let c = check(&format!("{GOOD}\n[status]\nbind = \"127.0.0.1:1\"\n"), 1);
        assert!(c.ok(), "{:?}", c.problems);
        assert_eq!(c.box_local, ["status"]);
        assert!(!c.doc.as_ref().is_some_and(|d| d.contains_key("status")));
    }

    #[test]
    fn toml_round_trips_a_document_and_the_diff_marks_changed_lines() {
        let doc = check(GOOD, 1).doc.expect("doc");
        let text = toml_text(&doc);
        assert_eq!(check(&text, 1).doc.as_ref(), Some(&doc), "{text}");
        assert!(text.contains("[[destination]]"), "{text}");
        let d = diff("a\nb\nc\n", "a\nB\nc\nd\n").expect("small");
        assert_eq!(
            d,
            [
                DiffLine::Same("a".into()),
                DiffLine::Added("B".into()),
                DiffLine::Removed("b".into()),
                DiffLine::Same("c".into()),
                DiffLine::Added("d".into()),
            ]
        );
        assert_eq!(diff("", "").expect("empty"), []);
        assert!(diff(&"x\n".repeat(DIFF_MAX_LINES + 1), "").is_none());
    }

    #[test]
    fn the_state_is_said_in_words_with_each_destination() {
        let d = Device {
            id: "ct-1".into(),
            site: "a".into(),
            room: None,
            status: DeviceStatus::Approved,
            connection: Connection::Online,
            last_seen_ms: Some(0),
            inventory: None,
            running_config_version: Some(2),
            events_received: 0,
            desired_config_version: Some(3),
            config_drift: Drift::Pending,
            tags: vec![],
        };
        let cfg = DeviceConfig {
            desired: None,
            reported: None,
            drift: Drift::None,
        };
        let mut s = sample(0, 1, 7);
        s.data.destinations = vec![DestinationQueue {
            name: Token::new("archive").expect("token"),
            depth: 7,
            oldest_age_secs: 300,
            quarantined: 0,
            state: DestinationState::BackingOff,
        }];
        let f = findings(&d, &cfg, Some(&s), 1000);
        assert_eq!(f[0].0, Severity::Bad);
        assert!(
            f[0].1
                .contains("archive does not answer: 7 objects wait, the oldest for 5 min"),
            "{f:?}"
        );
        let s = sample(0, 1, 0);
        let f = findings(&d, &cfg, Some(&s), 1000);
        assert_eq!(
            f,
            [(
                Severity::Ok,
                "Running normally: online, forwarding, configuration applied.".to_owned()
            )]
        );
    }

    #[test]
    fn update_states_are_worded_with_their_reason() {
        use medgate_contract::{Token, UpdatePhase, UpdateReport};
        let t = |s: &str| Token::new(s).ok();
        let mut u = UpdateReport {
            state: UpdatePhase::WaitingIdle,
            version: t("0.2.0"),
            running: t("0.1.0"),
            campaign: t("c-1"),
            on_probation: false,
            code: t("associations_active"),
        };
        assert_eq!(
            update_words(&u),
            (
                Severity::Warn,
                "0.2.0 installed, waiting for idle DICOM: associations are open; it runs 0.1.0."
                    .to_owned()
            )
        );
        u.state = UpdatePhase::RolledBack;
        u.code = t("health_deadline");
        let (sev, words) = update_words(&u);
        assert_eq!(sev, Severity::Bad);
        assert!(
            words.contains("rolled back by itself (health_deadline)"),
            "{words}"
        );
    }
}
