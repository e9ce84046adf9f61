//! The wall as HTML (maud, every value escaped): the full-screen page and the live fragment the
//! SSE stream sends (the same markup, so the first paint and every push look alike). No inline
//! script or style (the Content-Security-Policy forbids both): layout by classes of
//! `fleet/assets/wall.css`, behaviour by `fleet/assets/wall.js` (served with SRI).

use maud::{DOCTYPE, Markup, html};

use super::alarms::Alarm;
use super::tile::{Level, SiteSummary, Tile, Wall, age_words, span};
use crate::console::assets::sri_sha384;
use crate::store::displays::Today;

/// The wall's script's path.
pub const JS_PATH: &str = "/static/wall.js";
/// The wall's script: the SSE client (snapshot, heartbeat, feed lost, reconnect, night mode).
pub const JS: &[u8] = include_bytes!("../../assets/wall.js");
/// The wall's style sheet's path.
pub const CSS_PATH: &str = "/static/wall.css";
/// The wall's style sheet (full screen, large type, high contrast, night mode).
pub const CSS: &[u8] = include_bytes!("../../assets/wall.css");

/// The script's SRI hash (of the bytes this binary serves).
pub fn js_sri() -> &'static str {
    static SRI: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SRI.get_or_init(|| sri_sha384(JS))
}

/// The style sheet's SRI hash.
pub fn css_sri() -> &'static str {
    static SRI: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SRI.get_or_init(|| sri_sha384(CSS))
}

/// How the night mode is chosen for this page (`?night=on|off`, else the link's hours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NightMode {
    /// By the link's hours, in the screen's local time.
    Auto,
    /// Always dimmed.
    On,
    /// Never dimmed.
    Off,
}

impl NightMode {
    /// From the query's `night` value.
    pub fn parse(v: Option<&str>) -> Result<NightMode, String> {
        match v {
            None | Some("" | "auto") => Ok(NightMode::Auto),
            Some("on") => Ok(NightMode::On),
            Some("off") => Ok(NightMode::Off),
            Some(other) => Err(format!(
                "night {other:?}: use on, off or auto (the link's hours)"
            )),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            NightMode::Auto => "auto",
            NightMode::On => "on",
            NightMode::Off => "off",
        }
    }
}

/// Thousands with thin separators: `12 345`.
fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// Columns of hospitals for `n` of them (rows follow: the grid fills the screen).
fn columns(n: usize) -> usize {
    match n {
        0 | 1 => 1,
        2 | 4 => 2,
        3 | 5 | 6 | 9 => 3,
        7 | 8 | 10..=12 | 13..=16 => 4,
        _ => 5,
    }
}

/// Tile size class for the busiest hospital's number of appliances and the rows of hospitals
/// (the alarms band, the region's line and three lines of figures per hospital take their share
/// of the height first).
fn density(tiles: usize, rows: usize) -> usize {
    let per_screen = tiles * rows;
    match per_screen {
        0..=2 => 1,
        3..=5 => 2,
        6..=14 => 3,
        15..=32 => 4,
        _ => 5,
    }
}

/// Lines the alarms band may take (its rows and the "+K more" line) for the rows of hospitals
/// below it: the more hospitals share the screen, the fewer lines the band takes.
fn alarm_lines(site_rows: usize) -> usize {
    match site_rows {
        0 | 1 => 6,
        2 => 4,
        3 => 3,
        _ => 2,
    }
}

/// The rows the band shows of `n` alarms in `lines` lines, and how many it leaves to "+K more".
fn alarm_split(n: usize, lines: usize) -> (usize, usize) {
    if n <= lines {
        (n, 0)
    } else {
        let shown = lines.saturating_sub(1);
        (shown, n - shown)
    }
}

/// The top modalities of a day: `CT 120 · MR 40 · DX 30 · +2`.
fn modalities(t: &Today) -> String {
    let (top, more) = t.top_modalities(3);
    let mut parts: Vec<String> = top
        .iter()
        .map(|(m, d)| format!("{m} {}", count(d.studies)))
        .collect();
    if more > 0 {
        parts.push(format!("+{more}"));
    }
    parts.join(" · ")
}

fn in_out(i: u64, o: u64) -> String {
    format!("{} in · {} out", count(i), count(o))
}

fn alarm_markup(a: &Alarm, now_ms: i64) -> Markup {
    let secs = u64::try_from(now_ms.saturating_sub(a.raised_ms) / 1000).unwrap_or(0);
    html! {
        li class={ "alarm " (a.class()) } data-device=(a.device) {
            span.a-sev { span aria-hidden="true" { (a.icon()) } " " (a.severity.as_str()) }
            span.a-dev { (a.device) }
            span.a-hosp { (a.hospital) }
            span.a-what { (a.what) }
            span.a-for data-since=(a.raised_ms) { "for " (span(secs)) }
            span.a-handling { (a.handling()) }
        }
    }
}

/// The active alarms band: at most `lines` lines, then "+K more"; a calm line when none.
fn alarms_markup(alarms: &[Alarm], now_ms: i64, lines: usize) -> Markup {
    let (shown, more) = alarm_split(alarms.len(), lines);
    html! {
        section class={ "alarms " @if alarms.is_empty() { "calm" } @else { "firing" } } aria-label="Active alarms" {
            @if alarms.is_empty() {
                p.no-alarms { span aria-hidden="true" { "✔" } " No active alarms" }
            } @else {
                ol.alarm-rows {
                    @for a in &alarms[..shown] { (alarm_markup(a, now_ms)) }
                    @if more > 0 {
                        li.alarm-more { "+" (more) " more active alarm" @if more > 1 { "s" } " — see the console's Alerts page" }
                    }
                }
            }
        }
    }
}

fn level_count(l: Level, n: usize) -> String {
    let word = match (l, n) {
        (Level::Red, 1) => "fault",
        (Level::Red, _) => "faults",
        (Level::Amber, 1) => "warning",
        (Level::Amber, _) => "warnings",
        (Level::Grey, _) => "unknown",
        (Level::Green, _) => "ok",
    };
    format!("{n} {word}")
}

fn tile_markup(t: &Tile, now_ms: i64) -> Markup {
    let more = t.reasons.len().saturating_sub(1);
    html! {
        li class={ "tile " (t.level.class()) } data-device=(t.device) {
            div.t-head {
                span.icon aria-hidden="true" { (t.level.icon()) }
                span.t-name { (t.device) }
                span.visually-hidden { ", " (t.level.word()) ": " }
            }
            @if let Some(r) = &t.room { div.t-room { (r) } }
            div.t-reason {
                (t.reasons.first().map_or("", String::as_str))
                @if more > 0 { span.t-more { " +" (more) } }
            }
            div.t-age data-at=[t.data_ms] { (age_words(now_ms, t.data_ms)) }
        }
    }
}

fn site_markup(s: &SiteSummary, now_ms: i64, dens: usize) -> Markup {
    let worst = s.worst();
    let versions: Vec<String> = s
        .versions
        .iter()
        .map(|(v, n)| format!("{v} ×{n}"))
        .collect();
    html! {
        article class={ "site " (worst.class()) } aria-label=(s.name) {
            header.site-head {
                h2 { (s.name) }
                ul.site-levels {
                    @for l in Level::ALL {
                        @if let Some(n) = s.levels.get(&l) {
                            li class=(l.class()) { span aria-hidden="true" { (l.icon()) } " " (level_count(l, *n)) }
                        }
                    }
                }
            }
            dl.figures {
                div.exams { dt { "Exams today" } dd {
                    (count(s.today.studies))
                    @if !s.today.modalities.is_empty() { span.mods { " — " (modalities(&s.today)) } }
                } }
                div { dt { "Images today" } dd { (in_out(s.today.images_received, s.today.images_forwarded)) } }
                div { dt { "Last hour" } dd { (in_out(s.today.hour_received, s.today.hour_forwarded)) } }
                div { dt { "Backlog" } dd {
                    (count(s.backlog)) " queued"
                    @if s.backlog > 0 { " · oldest " (span(s.oldest_secs)) }
                } }
                div { dt { "Versions" } dd { @if versions.is_empty() { "—" } @else { (versions.join(", ")) } } }
            }
            @if s.tiles.is_empty() {
                p.no-tiles { "No appliance at this hospital yet." }
            } @else {
                ul class={ "tiles d-" (dens) } {
                    @for t in &s.tiles { (tile_markup(t, now_ms)) }
                }
            }
        }
    }
}

/// The live part of the wall (the SSE snapshot replaces it): the totals, the active alarms and
/// the hospitals.
pub fn fragment(w: &Wall) -> Markup {
    let cols = columns(w.sites.len());
    let rows = w.sites.len().div_ceil(cols).max(1);
    let busiest = w.sites.iter().map(|s| s.tiles.len()).max().unwrap_or(0);
    let dens = density(busiest, rows);
    let r = &w.region;
    html! {
        div.totals-bar {
            p.summary { (w.tiles()) " appliances · " (w.sites.len()) " hospitals" }
            ul.totals aria-label="Appliances by state" {
                @for l in Level::ALL {
                    li class=(l.class()) {
                        span aria-hidden="true" { (l.icon()) } " " (level_count(l, w.levels.get(&l).copied().unwrap_or(0)))
                    }
                }
            }
            p.region {
                span.r-label { "Region today " }
                strong { (count(r.studies)) " exams" }
                @if !r.modalities.is_empty() { " (" (modalities(r)) ")" }
                " · images " (in_out(r.images_received, r.images_forwarded))
                " · last hour " (in_out(r.hour_received, r.hour_forwarded))
            }
        }
        @if !w.rollouts.is_empty() {
            ul.rollouts aria-label="Updates rolling out" {
                @for r in &w.rollouts {
                    li class=[r.paused.is_some().then_some("paused")] {
                        span aria-hidden="true" { @if r.paused.is_some() { "⏸ " } @else { "⟳ " } }
                        (r.words())
                    }
                }
            }
        }
        (alarms_markup(&w.alarms, w.at_ms, alarm_lines(rows)))
        @if w.sites.is_empty() {
            p.empty { "No hospital on this display link." }
        } @else {
            div class={ "sites cols-" (cols) } {
                @for s in &w.sites { (site_markup(s, w.at_ms, dens)) }
            }
        }
    }
}

/// The full-screen page.
pub fn page(
    name: &str,
    events_url: &str,
    w: &Wall,
    night: Option<(u8, u8)>,
    mode: NightMode,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" class=[(mode == NightMode::On).then_some("night")] {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                title { (name) " · Medgate wall" }
                link rel="stylesheet" href=(CSS_PATH) integrity=(css_sri());
                script src=(JS_PATH) integrity=(js_sri()) defer {}
            }
            body data-events=(events_url) data-at=(w.at_ms)
                data-night=(mode.as_str())
                data-night-from=[night.map(|n| n.0)] data-night-to=[night.map(|n| n.1)] {
                header.top {
                    h1 { "Imaging to the archive" }
                    p.display-name { (name) }
                    p.clock #clock aria-live="off" { }
                }
                div.feed #feed role="alert" hidden { }
                main #live { (fragment(w)) }
            }
        }
    }
}

/// The page of a link that is unknown or revoked.
pub fn invalid() -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Display link not valid · Medgate wall" }
                link rel="stylesheet" href=(CSS_PATH) integrity=(css_sri());
            }
            body.invalid {
                main.invalid-box {
                    h1 { "This display link is not valid any more" }
                    p { "It was revoked, or it never existed. Ask a Medgate fleet admin for a new display link (console: Wall displays)." }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Severity;
    use std::collections::BTreeMap;

    #[test]
    fn counts_columns_and_modes() {
        assert_eq!(count(1_234_567), "1\u{202f}234\u{202f}567");
        assert_eq!(count(12), "12");
        assert_eq!(columns(12), 4);
        assert_eq!(columns(1), 1);
        assert_eq!(NightMode::parse(Some("on")), Ok(NightMode::On));
        assert!(NightMode::parse(Some("dim")).is_err());
    }

    fn wall(alarms: Vec<Alarm>, today: Today) -> Wall {
        Wall {
            sites: vec![SiteSummary::of("a", "<St. Marien>", vec![], today.clone())],
            levels: BTreeMap::new(),
            alarms,
            region: today,
            rollouts: Vec::new(),
            at_ms: 3_600_000,
        }
    }

    fn alarm(device: &str, severity: Severity) -> Alarm {
        Alarm {
            severity,
            device: device.into(),
            hospital: "<St. Marien>".into(),
            what: "archive unreachable: destination archive with 140 objects waiting".into(),
            raised_ms: 3_600_000 - 12 * 60_000,
            acknowledged: true,
            silenced: false,
        }
    }

    #[test]
    fn the_band_shows_the_lines_that_fit_then_how_many_more() {
        assert_eq!(alarm_split(0, 4), (0, 0));
        assert_eq!(alarm_split(4, 4), (4, 0));
        assert_eq!(alarm_split(5, 4), (3, 2), "the last line says +2 more");
        assert!(alarm_lines(1) > alarm_lines(2) && alarm_lines(2) > alarm_lines(4));
        assert_eq!(alarm_lines(9), 2);

        let calm = fragment(&wall(vec![], Today::default())).into_string();
        assert!(calm.contains("No active alarms"), "{calm}");

        let many: Vec<Alarm> = (0..9)
            .map(|i| alarm(&format!("ct-{i}"), Severity::Critical))
            .collect();
        let html = fragment(&wall(many, Today::default())).into_string();
        assert!(!html.contains("No active alarms"));
        assert_eq!(
            html.matches("class=\"alarm red\"").count(),
            5,
            "6 lines for one row of hospitals"
        );
        assert!(html.contains("+4 more active alarms"), "{html}");
        assert!(
            html.contains(">critical<") || html.contains(" critical<"),
            "{html}"
        );
        assert!(html.contains("for 12 min") && html.contains("acknowledged"));
        assert!(
            html.contains("&lt;St. Marien&gt;"),
            "hospital names are escaped"
        );
    }

    #[test]
    fn exams_by_modality_and_the_last_hour_per_hospital_and_for_the_region() {
        let mut t = Today {
            studies: 460,
            images_received: 12_345,
            images_forwarded: 12_000,
            hour_received: 300,
            hour_forwarded: 290,
            ..Today::default()
        };
        for (m, n) in [
            ("CT", 120),
            ("MR", 40),
            ("DX", 300),
            ("US", 0),
            ("other", 0),
        ] {
            t.modalities.insert(
                m.into(),
                crate::store::displays::ModalityDay {
                    studies: n,
                    images: n * 10,
                },
            );
        }
        assert_eq!(modalities(&t), "DX 300 · CT 120 · MR 40 · +2");
        let html = fragment(&wall(vec![], t)).into_string();
        assert!(
            html.contains("Exams today") && html.contains("DX 300 · CT 120"),
            "{html}"
        );
        assert!(
            html.contains("Last hour") && html.contains("300 in · 290 out"),
            "{html}"
        );
        assert!(
            html.contains("Region today") && html.contains("460 exams"),
            "{html}"
        );
        assert!(
            html.contains("12\u{202f}345 in · 12\u{202f}000 out"),
            "{html}"
        );
    }

    #[test]
    fn the_fragment_names_levels_in_words_and_escapes_names() {
        let w = wall(vec![], Today::default());
        let html = fragment(&w).into_string();
        assert!(html.contains("&lt;St. Marien&gt;"));
        assert!(html.contains("0 faults") && html.contains("No appliance at this hospital yet."));
        assert!(
            !html.contains("style="),
            "no inline style: the CSP forbids it"
        );
        assert!(!html.contains("rollouts"), "no campaign: no rollout line");
    }

    #[test]
    fn a_paused_rollout_is_marked_and_its_name_escaped() {
        let mut w = wall(vec![], Today::default());
        w.rollouts = vec![crate::wall::tile::Rollout {
            name: "<1.4.0>".into(),
            version: "1.4.0".into(),
            paused: Some("failure_threshold: 1 of 1 canary devices failed (rolled_back)".into()),
            healthy: 0,
            failed: 1,
            waiting: 0,
            total: 4,
        }];
        let html = fragment(&w).into_string();
        assert!(html.contains(r#"<li class="paused">"#), "{html}");
        assert!(
            html.contains("Update 1.4.0 (&lt;1.4.0&gt;): 0 of 4 done, 1 failed — paused"),
            "{html}"
        );
    }
}
