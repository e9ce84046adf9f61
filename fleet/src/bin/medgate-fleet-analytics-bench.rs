//! `medgate-fleet-analytics-bench`: the analytics benchmark's engine (issue 13 part 2; run it
//! with `ci/bench-analytics`). Into a fresh database (SQLite file, or the PostgreSQL URL given)
//! it registers a generated region's appliances, writes a year of their generated history into
//! the rollups (the days before today), records today's studies through the real ingest path
//! (`Store::record_events_many`, events table and rollups in one transaction per 256 events, as
//! the MQTT workers do), then times every analytics query, rounds interleaved, and prints one
//! line per query: median and worst milliseconds, rows returned.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use medgate_contract::{DeviceId, Event, EventBody, EventId, Schema, SiteId};
use medgate_fleet::analytics::history::{History, region};
use medgate_fleet::analytics::report::Period;
use medgate_fleet::auth::SiteScope;
use medgate_fleet::civil::Day;
use medgate_fleet::model::DeviceStatus;
use medgate_fleet::store::{Store, now_db};

/// Time the fleet's analytics queries on a year of a generated region's history.
#[derive(Debug, Parser)]
#[command(name = "medgate-fleet-analytics-bench", version)]
struct Args {
    /// Database URL (`sqlite://…?mode=rwc` or `postgres://…`); it must be empty.
    #[arg(long)]
    database: String,
    /// Hospitals of the generated region (14 appliances each).
    #[arg(long, default_value_t = 12)]
    hospitals: usize,
    /// Studies a year across the region.
    #[arg(long, default_value_t = 1_570_000)]
    exams_per_year: u64,
    /// Days of history before today.
    #[arg(long, default_value_t = 365)]
    days: i64,
    /// Rounds of every query (interleaved).
    #[arg(long, default_value_t = 15)]
    rounds: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let store = Store::connect(&a.database, None)
        .await
        .with_context(|| format!("connecting to {}", a.database))?;
    let devices = region(a.hospitals);
    let now = now_db();
    for d in &devices {
        store
            .register_device(
                &SiteId::new(d.site.as_str())?,
                &DeviceId::new(d.device.as_str())?,
                DeviceStatus::Approved,
                now,
            )
            .await?;
    }
    let history = History::new(devices, a.exams_per_year, a.seed)?;
    let today = Day::of_ms(now);

    // 1. The year before today, into the rollups.
    let t = Instant::now();
    let studies = store
        .seed_history(&history, today.plus(-a.days), today.start_ms() - 1)
        .await?;
    let seeded = t.elapsed();
    println!(
        "history: {studies} studies over {} days before today ({} hospitals, {} appliances) written to the rollups in {:.1} s",
        a.days,
        a.hospitals,
        history.devices().len(),
        seeded.as_secs_f64()
    );

    // 2. Today, through the ingest path: events table and rollups, 256 events a transaction.
    let mut events: Vec<(DeviceId, Event)> = Vec::new();
    let mut seq = 0u64;
    history.day(today, now, |d, at, e: &EventBody| {
        seq += 1;
        if let Ok(id) = DeviceId::new(d.device.as_str()) {
            events.push((
                id,
                Event {
                    schema: Schema::default(),
                    id: EventId::new(1, seq),
                    at_ms: u64::try_from(at).unwrap_or(0),
                    event: e.clone(),
                },
            ));
        }
    });
    let t = Instant::now();
    for chunk in events.chunks(256) {
        let rows: Vec<(&DeviceId, &Event)> = chunk.iter().map(|(d, e)| (d, e)).collect();
        let mut batch = store.begin().await?;
        store
            .record_events_many(batch.conn(), &rows, now_db())
            .await?;
        batch.commit().await?;
    }
    let took = t.elapsed();
    #[allow(clippy::cast_precision_loss)]
    let rate = events.len() as f64 / took.as_secs_f64().max(1e-9);
    println!(
        "ingest:  today's {} study events so far through record_events_many (events table + rollups): {:.2} s, {:.0} events/s",
        events.len(),
        took.as_secs_f64(),
        rate
    );

    // 3. The queries, interleaved rounds.
    let all = SiteScope::All;
    let one = SiteScope::Only(std::iter::once("hospital-01".to_string()).collect());
    type Q<'a> = (&'static str, &'a SiteScope, Period);
    let year = Period::last(365, today);
    let queries: Vec<(&str, Q<'_>)> = vec![
        ("overview", ("this year, region", &all, year)),
        ("overview", ("this year, one hospital", &one, year)),
        ("daily", ("7 days, region", &all, Period::last(7, today))),
        ("daily", ("30 days, region", &all, Period::last(30, today))),
        (
            "daily",
            ("92 days (its most), region", &all, Period::last(92, today)),
        ),
        ("trend", ("7 days, region", &all, Period::last(7, today))),
        ("trend", ("30 days, region", &all, Period::last(30, today))),
        ("trend", ("365 days, region", &all, year)),
        ("trend", ("365 days, one hospital", &one, year)),
        (
            "devices",
            ("30 days, region", &all, Period::last(30, today)),
        ),
        ("devices", ("365 days, region", &all, year)),
        ("delay", ("7 days, region", &all, Period::last(7, today))),
        ("delay", ("365 days, region", &all, year)),
        ("delay", ("365 days, one hospital", &one, year)),
        ("recent", ("wall: today + last hour, region", &all, year)),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); queries.len()];
    let mut rows: Vec<usize> = vec![0; queries.len()];
    for _ in 0..a.rounds {
        for (i, (kind, (_, scope, p))) in queries.iter().enumerate() {
            let t = Instant::now();
            rows[i] = match *kind {
                "overview" => store.analytics_overview(scope, p.to).await?.sites.len(),
                "daily" => store.analytics_daily(scope, *p).await?.rows.len(),
                "trend" => store.analytics_trend(scope, *p).await?.days.len(),
                "devices" => store.analytics_devices(scope, *p).await?.rows.len(),
                "delay" => store.analytics_delays(scope, *p).await?.sites.len(),
                _ => store
                    .analytics_recent(scope, today.start_ms() - 14 * 3_600_000)
                    .await?
                    .len(),
            };
            times[i].push(ms(t.elapsed()));
        }
    }
    println!(
        "{:<9} {:<34} {:>9} {:>9} {:>7}",
        "query", "range", "median ms", "worst ms", "rows"
    );
    let mut worst_median = 0f64;
    for (i, (kind, (label, _, _))) in queries.iter().enumerate() {
        let v = &mut times[i];
        v.sort_by(f64::total_cmp);
        let median = v.get(v.len() / 2).copied().unwrap_or(0.0);
        let worst = v.last().copied().unwrap_or(0.0);
        worst_median = worst_median.max(median);
        println!(
            "{kind:<9} {label:<34} {median:>9.1} {worst:>9.1} {:>7}",
            rows[i]
        );
    }
    println!(
        "slowest median: {worst_median:.1} ms ({})",
        if worst_median < 200.0 {
            "every query under 200 ms"
        } else {
            "ABOVE the 200 ms target"
        }
    );
    Ok(())
}
