//! analytics (issue 13 part 2): the Analytics pages — the region this year, the trend of the
//! last 7, 30 or 365 days, forwarding delay per hospital, appliances by hospital and modality
//! (`/analytics`), and studies and images per hospital, day and modality (`/analytics/daily`).
//! Handlers parse the query, call `ops`, render; `render_*` are pure. Charts are uPlot, drawn
//! by `analytics-charts.js` from the series each figure carries in a `data-series` attribute
//! (no inline script: the CSP forbids it).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};

use super::assets::{
    ANALYTICS_JS_PATH, UPLOT_CSS_PATH, UPLOT_CSS_SRI, UPLOT_JS_PATH, UPLOT_JS_SRI, analytics_js_sri,
};
use super::pages::{Nav, layout};
use super::view::encode;
use super::{op_error_page, page};
use crate::analytics::report::{Daily, Delays, Devices, Overview, Trend};
use crate::app::App;
use crate::auth::Principal;
use crate::ops::Actor;
use crate::ops::analytics::AnalyticsQuery;

/// The trend ranges offered (days, label).
const RANGES: [(i64, &str); 3] = [(7, "7 days"), (30, "30 days"), (365, "365 days")];

/// What `/analytics` shows.
#[derive(Debug)]
pub struct Summary {
    /// This year.
    pub overview: Overview,
    /// The chosen range's trend.
    pub trend: Trend,
    /// The chosen range's delays.
    pub delays: Delays,
    /// The chosen range's appliances.
    pub devices: Devices,
}

/// `1 234 567` with thin spaces.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3 * 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// Bytes in words: `1.4 TB`, `820 GB`, `12 MB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (1_000_000_000_000_000, "PB"),
        (1_000_000_000_000, "TB"),
        (1_000_000_000, "GB"),
        (1_000_000, "MB"),
        (1_000, "kB"),
    ];
    for (size, unit) in UNITS {
        if n >= size {
            let tenths = n / (size / 10);
            return if tenths >= 100 {
                format!("{} {unit}", count(tenths / 10))
            } else {
                format!("{}.{} {unit}", tenths / 10, tenths % 10)
            };
        }
    }
    format!("{n} B")
}

/// A delay in words: `850 ms`, `1.7 s`, `4 min`, `2.5 h`.
pub fn delay(ms: Option<u64>) -> String {
    match ms {
        None => "—".into(),
        Some(ms) if ms < 1_000 => format!("{ms} ms"),
        Some(ms) if ms < 60_000 => format!("{}.{} s", ms / 1_000, ms % 1_000 / 100),
        Some(ms) if ms < 3_600_000 => format!("{} min", ms.div_ceil(60_000)),
        Some(ms) => format!("{}.{} h", ms / 3_600_000, ms % 3_600_000 / 360_000),
    }
}

fn modality_label(m: &str) -> &str {
    if m.is_empty() { "not reported" } else { m }
}

/// A series for `analytics-charts.js`: day starts (Unix seconds) and one or more value arrays.
fn series(trend: &Trend, which: &str) -> String {
    let t: Vec<i64> = trend.days.iter().map(|d| d.start_ms() / 1000).collect();
    let v = if which == "images" {
        &trend.images
    } else {
        &trend.studies
    };
    serde_json::json!({ "t": t, "v": v }).to_string()
}

fn range_links(q: &AnalyticsQuery, days: i64) -> Markup {
    let site = q.site.clone().unwrap_or_default();
    html! {
        nav.ranges aria-label="Range" {
            @for (n, label) in RANGES {
                a href={ "/analytics?days=" (n) "&site=" (encode(&site)) }
                    aria-current=[(n == days).then_some("true")] { (label) }
            }
        }
    }
}

fn site_form(action: &str, q: &AnalyticsQuery, sites: &[String], days: Option<i64>) -> Markup {
    let chosen = q.site.clone().unwrap_or_default();
    html! {
        form.filters method="get" action=(action) {
            label { "Hospital"
                select name="site" {
                    option value="" selected[chosen.is_empty()] { "All my hospitals" }
                    @for s in sites { option value=(s) selected[chosen == *s] { (s) } }
                }
            }
            @if let Some(d) = days { input type="hidden" name="days" value=(d); }
            @if days.is_none() {
                label { "From" input type="date" name="from" value=[q.from.as_deref()]; }
                label { "To" input type="date" name="to" value=[q.to.as_deref()]; }
            }
            button type="submit" { "Show" }
        }
    }
}

/// The delay table.
fn delay_table(d: &Delays) -> Markup {
    html! {
        table.analytics {
            caption.visually-hidden { "Forwarding delay per hospital" }
            thead { tr { th scope="col" { "Hospital" } th.num scope="col" { "Confirmations" } th.num scope="col" { "p50" } th.num scope="col" { "p95" } th.num scope="col" { "p99" } } }
            tbody {
                @for s in &d.sites {
                    tr { th scope="row" { (s.site) } td.num { (count(s.confirmations)) } td.num { (delay(s.p50_ms)) } td.num { (delay(s.p95_ms)) } td.num { (delay(s.p99_ms)) } }
                }
                @if d.sites.is_empty() { tr { td colspan="5" { "No forwarded study in this range." } } }
            }
            @if d.sites.len() > 1 {
                tfoot { tr { th scope="row" { "Region" } td.num { (count(d.region.confirmations)) } td.num { (delay(d.region.p50_ms)) } td.num { (delay(d.region.p95_ms)) } td.num { (delay(d.region.p99_ms)) } } }
            }
        }
    }
}

/// The appliances table: hospitals × modalities, appliances (and their studies) per cell.
fn devices_table(d: &Devices) -> Markup {
    let modalities: BTreeSet<&str> = d.rows.iter().map(|r| r.modality.as_str()).collect();
    let mut cells: BTreeMap<&str, BTreeMap<&str, (u64, u64)>> = BTreeMap::new();
    for r in &d.rows {
        cells
            .entry(r.site.as_str())
            .or_default()
            .insert(r.modality.as_str(), (r.devices, r.studies));
    }
    for s in d.registered.keys() {
        cells.entry(s.as_str()).or_default();
    }
    html! {
        table.analytics {
            caption.visually-hidden { "Appliances by hospital and modality" }
            thead { tr {
                th scope="col" { "Hospital" }
                th.num scope="col" { "Registered" }
                @for m in &modalities { th.num scope="col" { (modality_label(m)) } }
            } }
            tbody {
                @for (site, row) in &cells {
                    tr {
                        th scope="row" { (site) }
                        td.num { (d.registered.get(*site).copied().unwrap_or(0)) }
                        @for m in &modalities {
                            td.num {
                                @if let Some((n, studies)) = row.get(m) {
                                    (n) span.muted.small { " · " (count(*studies)) " studies" }
                                } @else { span.muted { "—" } }
                            }
                        }
                    }
                }
                @if cells.is_empty() { tr { td colspan="2" { "No appliance yet." } } }
            }
        }
    }
}

/// `/analytics` (pure).
pub fn render_summary(
    who: &Principal,
    q: &AnalyticsQuery,
    sites: &[String],
    days: i64,
    s: &Summary,
) -> Markup {
    let o = &s.overview;
    let scope_words = q
        .site
        .as_deref()
        .filter(|x| !x.is_empty())
        .map_or_else(|| "the region".to_string(), |x| format!("hospital {x}"));
    let total_studies: u64 = s.trend.studies.iter().sum();
    let total_images: u64 = s.trend.images.iter().sum();
    let daily_link = format!(
        "/analytics/daily?site={}",
        encode(q.site.as_deref().unwrap_or(""))
    );
    layout(
        "Analytics",
        Nav::Analytics,
        Some(who),
        html! {
            h1 { "Analytics " span.sub.muted { "· " (scope_words) } }
            p.muted { "Studies, images and forwarding delays as the appliances reported them (counts only, never patient data). Days are UTC days." }
            (site_form("/analytics", q, sites, Some(days)))
            h2 { (o.year) " so far " span.muted.small { "(" (o.period.from) " to " (o.period.to) ")" } }
            div.cards {
                div.card { span.n { (count(o.region.studies)) } span.label { "studies" } }
                div.card { span.n { (count(o.region.images)) } span.label { "images" } }
                div.card { span.n { (bytes(o.region.bytes)) } span.label { "received" } }
                div.card { span.n { (count(o.region.images_forwarded)) } span.label { "images confirmed by the archive" } }
            }
            @if o.sites.len() > 1 {
                table.analytics {
                    caption.visually-hidden { "This year per hospital" }
                    thead { tr { th scope="col" { "Hospital" } th.num scope="col" { "Studies" } th.num scope="col" { "Images" } th.num scope="col" { "Received" } th.num scope="col" { "Share of studies" } } }
                    tbody {
                        @for y in &o.sites {
                            tr {
                                th scope="row" { a href={ "/analytics?days=" (days) "&site=" (encode(&y.site)) } { (y.site) } }
                                td.num { (count(y.figures.studies)) }
                                td.num { (count(y.figures.images)) }
                                td.num { (bytes(y.figures.bytes)) }
                                td.num { (share(y.figures.studies, o.region.studies)) }
                            }
                        }
                    }
                }
            }
            div.section-head {
                h2 { "The last " (days) " days" }
                (range_links(q, days))
                a href=(daily_link) { "Per day and modality →" }
            }
            p.muted { (count(total_studies)) " studies, " (count(total_images)) " images from " (s.trend.period.from) " to " (s.trend.period.to) "." }
            section #analytics-charts {
                p.muted.chart-status role="status" { "Charts load with JavaScript; the tables below hold the same figures." }
                div.charts {
                    figure.chart data-chart="studies" data-series=(series(&s.trend, "studies")) aria-label="Studies per day" {
                        figcaption { span.title { "Studies per day" } " " span.latest.muted {} }
                        div.plot {}
                    }
                    figure.chart data-chart="images" data-series=(series(&s.trend, "images")) aria-label="Images per day" {
                        figcaption { span.title { "Images per day" } " " span.latest.muted {} }
                        div.plot {}
                    }
                }
            }
            h2 { "Forwarding delay " span.muted.small { "(C-STORE success at the appliance → archive confirmation, last " (days) " days)" } }
            (delay_table(&s.delays))
            h2 { "Appliances by hospital and modality " span.muted.small { "(that received studies in the last " (days) " days)" } }
            (devices_table(&s.devices))
            link rel="stylesheet" href=(UPLOT_CSS_PATH) integrity=(UPLOT_CSS_SRI);
            script src=(UPLOT_JS_PATH) integrity=(UPLOT_JS_SRI) defer {}
            script src=(ANALYTICS_JS_PATH) integrity=(analytics_js_sri()) defer {}
        },
    )
}

fn share(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "—".into();
    }
    let tenths = part.saturating_mul(1000) / whole;
    format!("{}.{} %", tenths / 10, tenths % 10)
}

/// One row of the per-day table: modality → (studies, images). Rows are keyed by (newest day
/// first, site).
type Cells<'a> = BTreeMap<&'a str, (u64, u64)>;

/// `/analytics/daily` (pure): per day, hospital and modality.
pub fn render_daily(who: &Principal, q: &AnalyticsQuery, sites: &[String], d: &Daily) -> Markup {
    let modalities: BTreeSet<&str> = d.rows.iter().map(|r| r.modality.as_str()).collect();
    let mut grid: BTreeMap<(std::cmp::Reverse<String>, &str), Cells<'_>> = BTreeMap::new();
    let mut totals: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for r in &d.rows {
        grid.entry((std::cmp::Reverse(r.day.to_string()), r.site.as_str()))
            .or_default()
            .insert(r.modality.as_str(), (r.figures.studies, r.figures.images));
        let t = totals.entry(r.modality.as_str()).or_default();
        t.0 += r.figures.studies;
        t.1 += r.figures.images;
    }
    layout(
        "Analytics per day",
        Nav::Analytics,
        Some(who),
        html! {
            nav.crumbs { a href="/analytics" { "Analytics" } " / per day and modality" }
            h1 { "Studies and images per day " span.sub.muted { "· " (d.period.from) " to " (d.period.to) } }
            p.muted { "Each cell: studies, then images. Days are UTC days; at most 92 days at once (the trend on the Analytics page covers years)." }
            (site_form("/analytics/daily", &AnalyticsQuery {
                from: Some(d.period.from.to_string()),
                to: Some(d.period.to.to_string()),
                ..q.clone()
            }, sites, None))
            table.analytics.daily {
                thead { tr {
                    th scope="col" { "Day" } th scope="col" { "Hospital" }
                    @for m in &modalities { th.num scope="col" { (modality_label(m)) } }
                    th.num scope="col" { "All" }
                } }
                tbody {
                    @for ((day, site), row) in &grid {
                        tr {
                            td.t { (day.0) } th scope="row" { (site) }
                            @for m in &modalities {
                                td.num {
                                    @if let Some((s, i)) = row.get(m) { (count(*s)) span.muted.small { " · " (count(*i)) } }
                                    @else { span.muted { "—" } }
                                }
                            }
                            td.num { (count(row.values().map(|v| v.0).sum())) span.muted.small { " · " (count(row.values().map(|v| v.1).sum())) } }
                        }
                    }
                    @if grid.is_empty() { tr { td colspan="3" { "No study in this range." } } }
                }
                @if !grid.is_empty() {
                    tfoot { tr {
                        th scope="row" colspan="2" { "Total" }
                        @for m in &modalities {
                            @let t = totals.get(m).copied().unwrap_or((0, 0));
                            td.num { (count(t.0)) span.muted.small { " · " (count(t.1)) } }
                        }
                        td.num { (count(totals.values().map(|v| v.0).sum())) span.muted.small { " · " (count(totals.values().map(|v| v.1).sum())) } }
                    } }
                }
            }
        },
    )
}

async fn site_ids(app: &App, who: &Principal) -> Result<Vec<String>, Response> {
    match app.ops.sites(&who.sites).await {
        Ok(s) => Ok(s.into_iter().map(|s| s.id).collect()),
        Err(e) => Err(op_error_page(&e, Some(who))),
    }
}

/// `GET /analytics`.
pub async fn summary(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<AnalyticsQuery>,
) -> Response {
    let who = &actor.principal;
    let sites = match site_ids(&app, who).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let q = AnalyticsQuery {
        from: None,
        to: None,
        days: Some(q.days.unwrap_or_else(|| "30".into())),
        ..q
    };
    let days = match q.period(30) {
        Ok(p) => p.days(),
        Err(e) => return op_error_page(&e, Some(who)),
    };
    let scope = &who.sites;
    let result = async {
        Ok::<_, crate::ops::OpError>(Summary {
            overview: app
                .ops
                .analytics_overview(
                    scope,
                    &AnalyticsQuery {
                        days: None,
                        ..q.clone()
                    },
                )
                .await?,
            trend: app.ops.analytics_trend(scope, &q).await?,
            delays: app.ops.analytics_delays(scope, &q).await?,
            devices: app.ops.analytics_devices(scope, &q).await?,
        })
    }
    .await;
    match result {
        Ok(s) => page(StatusCode::OK, render_summary(who, &q, &sites, days, &s)),
        Err(e) => op_error_page(&e, Some(who)),
    }
}

/// `GET /analytics/daily`.
pub async fn daily(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<AnalyticsQuery>,
) -> Response {
    let who = &actor.principal;
    let sites = match site_ids(&app, who).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match app.ops.analytics_daily(&who.sites, &q).await {
        Ok(d) => page(StatusCode::OK, render_daily(who, &q, &sites, &d)),
        Err(e) => op_error_page(&e, Some(who)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_in_words() {
        assert_eq!(count(1_570_000), "1\u{202f}570\u{202f}000");
        assert_eq!(count(999), "999");
        assert_eq!(bytes(1_400_000_000_000), "1.4 TB");
        assert_eq!(bytes(820_000_000_000), "820 GB");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(delay(Some(850)), "850 ms");
        assert_eq!(delay(Some(1_720)), "1.7 s");
        assert_eq!(delay(Some(185_000)), "4 min");
        assert_eq!(delay(Some(9_000_000)), "2.5 h");
        assert_eq!(delay(None), "—");
        assert_eq!(share(1, 3), "33.3 %");
        assert_eq!(share(1, 0), "—");
    }
}
