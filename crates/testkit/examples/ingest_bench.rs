//! Live-ingest benchmark: events/s from the fake CPA into committed SQLite rows, per
//! transport, and the process's resident memory while doing it.
//!
//! Run: `cargo run --release -p cpamp-testkit --example ingest_bench [events] [batch]`.
//! The fake CPA runs in the same process, so the memory figures include its queue.

#![allow(clippy::print_stdout, reason = "a benchmark prints its table")]

use std::time::{Duration, Instant};

use cpamp_collector::{Collector, CollectorSettings, ManagementKey, Mode, StatusHandle};
use cpamp_storage::{Options, SqliteStore};
use cpamp_testkit::{FakeCpa, FakeCpaOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let events: usize = args
        .next()
        .and_then(|value| value.parse().ok())
        .unwrap_or(50_000);
    let batch: u32 = args
        .next()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1_000);
    println!(
        "live ingest: {events} events, batch {batch}, fake CPA in-process, SQLite in a temp dir"
    );
    println!(
        "{:<10} {:>10} {:>12} {:>14} {:>14}",
        "transport", "seconds", "events/s", "peak RSS MiB", "end RSS MiB"
    );
    for mode in [Mode::Http, Mode::Resp, Mode::Subscribe] {
        let row = run(mode, events, batch).await?;
        println!(
            "{:<10} {:>10.2} {:>12.0} {:>14.1} {:>14.1}",
            mode.as_str(),
            row.elapsed.as_secs_f64(),
            events as f64 / row.elapsed.as_secs_f64(),
            row.peak_rss_mib,
            row.end_rss_mib
        );
    }
    Ok(())
}

struct Row {
    elapsed: Duration,
    peak_rss_mib: f64,
    end_rss_mib: f64,
}

async fn run(mode: Mode, events: usize, batch: u32) -> Result<Row, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(Options::new(dir.path().join("usage.sqlite"))).await?;
    let mut options = FakeCpaOptions::new("bench-key");
    options.retention = Duration::from_secs(3600);
    let cpa = FakeCpa::start(options).await?;
    let status = StatusHandle::new(mode.as_str(), "usage");
    let collector = Collector::new(store.clone(), status.clone());
    let mut settings = CollectorSettings::new(cpa.base_url(), ManagementKey::new("bench-key"));
    settings.mode = mode;
    settings.batch_size = batch;
    settings.poll_interval = Duration::from_millis(50);
    settings.consumer_check_interval = Duration::ZERO;

    let started;
    if mode == Mode::Subscribe {
        collector.start(settings).await;
        while cpa.subscriber_count() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        started = Instant::now();
        cpa.emit(events).await;
    } else {
        // The queue is filled first; the clock measures draining it into committed rows.
        cpa.emit(events).await;
        started = Instant::now();
        collector.start(settings).await;
    }
    let mut peak = 0.0f64;
    loop {
        let snapshot = status.snapshot();
        peak = peak.max(rss_mib("VmRSS"));
        let stored =
            snapshot.total_inserted + snapshot.total_skipped + snapshot.total_dead_lettered;
        if stored >= events as u64 {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err(format!(
                "{}: only {stored} of {events} stored: {snapshot:?}",
                mode.as_str()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let end = rss_mib("VmRSS");
    collector.shutdown().await;
    store.close().await;
    Ok(Row {
        elapsed,
        peak_rss_mib: peak.max(end),
        end_rss_mib: end,
    })
}

/// A `/proc/self/status` memory figure in MiB (0 where unavailable).
fn rss_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
