//! Embedding cpamp's collector and SQLite store in another Rust program, without a web
//! framework: the collector pulls CPA's usage queue and commits every batch to a SQLite
//! file that cpamp-server (or any SQLite reader) can open later.
//!
//! ```text
//! # against the built-in fake CPA: collect 500 events, check they are stored, exit
//! cargo run -p cpamp-collector --example embed
//! # against a real CPA, until Ctrl-C
//! cargo run -p cpamp-collector --example embed -- \
//!     --upstream http://127.0.0.1:8317 --key <CPA management key> --db usage.sqlite
//! ```
//!
//! The store is the collector's sink as it is (`SqliteStore` implements the domain's
//! `EventSink` port); a program that wants to see or filter events first wraps it in its
//! own `EventSink`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cpamp_collector::{Collector, CollectorSettings, ManagementKey, Mode, StatusHandle};
use cpamp_domain::ports::StoreStats;
use cpamp_storage::{Options, SqliteStore};
use cpamp_testkit::{FakeCpa, FakeCpaOptions};

/// Events the fake CPA queues when no `--upstream` is given.
const DEMO_EVENTS: usize = 500;

struct Args {
    upstream: Option<String>,
    key: String,
    db: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        upstream: None,
        key: String::new(),
        db: None,
    };
    let mut rest = std::env::args().skip(1);
    while let Some(flag) = rest.next() {
        let mut value = || rest.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--upstream" => args.upstream = Some(value()?),
            "--key" => args.key = value()?,
            "--db" => args.db = Some(PathBuf::from(value()?)),
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: embed [--upstream URL --key KEY] [--db FILE]"
                ));
            }
        }
    }
    if args.upstream.is_some() && args.key.is_empty() {
        return Err("--upstream needs --key with CPA's management key".to_string());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("embed: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let args = parse_args()?;
    let scratch = tempfile::tempdir().map_err(|error| error.to_string())?;
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| scratch.path().join("usage.sqlite"));
    let store = SqliteStore::open(Options::new(&db))
        .await
        .map_err(|error| format!("cannot open {}: {error}", db.display()))?;

    // Without an upstream, a fake CPA on a free local port plays the part.
    let fake = match args.upstream {
        Some(_) => None,
        None => Some(
            FakeCpa::start(FakeCpaOptions::new("embed-example-key"))
                .await
                .map_err(|error| format!("cannot start the fake CPA: {error}"))?,
        ),
    };
    let (upstream, key) = match (&args.upstream, &fake) {
        (Some(upstream), _) => (upstream.clone(), args.key.clone()),
        (None, Some(cpa)) => (cpa.base_url(), "embed-example-key".to_string()),
        (None, None) => unreachable!("a fake CPA runs when no upstream is given"),
    };

    let mut settings = CollectorSettings::new(upstream, ManagementKey::new(key));
    settings.mode = Mode::Auto;
    let collector = Collector::new(store.clone(), StatusHandle::new("auto", "usage"));
    collector.start(settings).await;

    match &fake {
        Some(cpa) => {
            let emitted = cpa.emit(DEMO_EVENTS).await.len();
            wait_for_events(&store, &collector, emitted).await?;
        }
        None => {
            println!("collecting into {}; Ctrl-C stops", db.display());
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    () = tokio::time::sleep(Duration::from_secs(10)) => report(&store, &collector).await?,
                }
            }
        }
    }

    // Stop popping, commit whatever is held, then report what the store holds.
    collector.shutdown().await;
    report(&store, &collector).await?;
    store.close().await;
    Ok(())
}

async fn wait_for_events(
    store: &SqliteStore,
    collector: &Collector<SqliteStore>,
    expected: usize,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let counts = store.counts().await.map_err(|error| error.to_string())?;
        if counts.events as usize >= expected {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "stored {} of {expected} events in 30 s; collector: {:?}",
                counts.events,
                collector.status().snapshot()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn report(store: &SqliteStore, collector: &Collector<SqliteStore>) -> Result<(), String> {
    let counts = store.counts().await.map_err(|error| error.to_string())?;
    let status = collector.status().snapshot();
    println!(
        "stored events: {}, dead letters: {}; collector {}, transport {}{}",
        counts.events,
        counts.dead_letters,
        status.state.as_str(),
        if status.transport.is_empty() {
            "-"
        } else {
            &status.transport
        },
        if status.last_error.is_empty() {
            String::new()
        } else {
            format!(", last error: {}", status.last_error)
        }
    );
    Ok(())
}
