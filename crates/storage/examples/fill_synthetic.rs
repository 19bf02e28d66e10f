//! Fills a database with synthetic usage events, for benchmarks that need a large one:
//! `cargo run --release -p cpamp-storage --example fill_synthetic -- PATH [COUNT]`.
//!
//! The events (1,000,000 by default) are the analytics benchmark's deterministic set,
//! spread over the 30 days before now and stored through the real batch writer, so
//! rollups are built exactly as in production. An existing database is left alone when
//! it already holds at least COUNT events.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark tool prints what it did and stops on a broken setup"
)]

#[path = "../tests/support/synth.rs"]
mod synth;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use cpamp_domain::ports::{BatchOrigin, EventSink, IngestBatch, StoreStats};
use cpamp_storage::{Options, SqliteStore};

const DAYS: i64 = 30;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: fill_synthetic PATH [COUNT]");
    let count: usize = args
        .next()
        .map(|count| count.replace('_', "").parse().expect("COUNT is a number"))
        .unwrap_or(1_000_000);
    let store = SqliteStore::open(Options::new(&path))
        .await
        .expect("open the database");
    let stored = store.counts().await.expect("count events").events;
    if stored >= i64::try_from(count).unwrap_or(i64::MAX) {
        println!("{path} already holds {stored} events");
        store.close().await;
        return;
    }
    let now_ms = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis(),
    )
    .expect("time fits");
    let mut generator = synth::Generator::new(42, count, now_ms, DAYS);
    let started = Instant::now();
    loop {
        let events = generator.take(2000);
        if events.is_empty() {
            break;
        }
        store
            .store_batch(IngestBatch {
                origin: BatchOrigin::Collector("http://127.0.0.1:8317".into()),
                events,
                dead_letters: Vec::new(),
            })
            .await
            .expect("store a batch");
    }
    store.close().await;
    println!(
        "stored {count} events over the {DAYS} days before now into {path} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
