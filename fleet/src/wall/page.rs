//! The wall as HTML (maud, every value escaped): the full-screen page and the live fragment the
//! SSE stream sends (the same markup, so the first paint and every push look alike). No inline
//! script or style (the Content-Security-Policy forbids both): layout by classes of
//! `fleet/assets/wall.css`, behaviour by `fleet/assets/wall.js` (served with SRI).

use maud::{DOCTYPE, Markup, html};

use super::tile::{Level, SiteSummary, Tile, Wall, age_words, span};
use crate::console::assets::sri_sha384;

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

/// Tile size class for the busiest hospital's number of appliances and the rows of hospitals.
fn density(tiles: usize, rows: usize) -> usize {
    let per_screen = tiles * rows;
    match per_screen {
        0..=4 => 1,
        5..=9 => 2,
        10..=20 => 3,
        21..=40 => 4,
        _ => 5,
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
                div { dt { "Images today" } dd { (count(s.today.images_received)) " in · " (count(s.today.images_forwarded)) " out" } }
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

/// The live part of the wall (the SSE snapshot replaces it): the totals and the hospitals.
pub fn fragment(w: &Wall) -> Markup {
    let cols = columns(w.sites.len());
    let rows = w.sites.len().div_ceil(cols).max(1);
    let busiest = w.sites.iter().map(|s| s.tiles.len()).max().unwrap_or(0);
    let dens = density(busiest, rows);
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
        }
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

    #[test]
    fn the_fragment_names_levels_in_words_and_escapes_names() {
        let w = Wall {
            sites: vec![SiteSummary::of(
                "a",
                "<St. Marien>",
                vec![],
                Default::default(),
            )],
            levels: BTreeMap::new(),
            at_ms: 0,
        };
        let html = fragment(&w).into_string();
        assert!(html.contains("&lt;St. Marien&gt;"));
        assert!(html.contains("0 faults") && html.contains("No appliance at this hospital yet."));
        assert!(
            !html.contains("style="),
            "no inline style: the CSP forbids it"
        );
    }
}
