//! Analytics benchmark: `cargo xtask bench analytics [--sizes 100000,1000000] [--runs 15]`.
//!
//! For each size it generates a synthetic 30-day dataset, ingests it through the
//! real batch writer (rollups included), builds a plain baseline table with the
//! same rows (one text column per dimension, only a timestamp index), then prints
//! the median time of each analytics query next to a plain `GROUP BY` answering
//! the same question on the baseline, plus database bytes per event and peak RSS.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/synth.rs"]
mod synth;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cpamp_domain::analytics::dashboard::{DashboardRequest, dashboard};
use cpamp_domain::analytics::monitoring::{Include, MonitoringRequest, PageRequest, monitoring};
use cpamp_domain::analytics::query::{Cursor, Filters, Scope};
use cpamp_domain::analytics::time::{DAY_MS, Granularity, Zone};
use cpamp_domain::ports::{BatchOrigin, EventSink, IngestBatch};
use cpamp_storage::{Options, SqliteStore};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};

const END_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const DAYS: i64 = 30;

fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

async fn time<F, Fut, T>(runs: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    // One warm-up run so every query sees a warm page cache, like a live server.
    std::hint::black_box(f().await);
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        std::hint::black_box(f().await);
        samples.push(start.elapsed());
    }
    median(samples)
}

async fn plain_pool(path: &Path) -> SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .pragma("cache_size", "-16384"),
        )
        .await
        .expect("open baseline")
}

const PLAIN_COLUMNS: &str = "timestamp_ms, model, requested_model, provider, auth_index, source, source_hash, \
    api_key_hash, account, auth_file, input_tokens, output_tokens, reasoning_tokens, cached_tokens, \
    cache_read_tokens, cache_creation_tokens, total_tokens, latency_ms, ttft_ms, failed, fail_summary, request_id, event_hash";

async fn build(dir: &Path, count: usize) -> (PathBuf, PathBuf, Duration) {
    let ours = dir.join(format!("cpamp-{count}.db"));
    let plain = dir.join(format!("plain-{count}.db"));
    if ours.exists() && plain.exists() {
        return (ours, plain, Duration::ZERO);
    }
    for path in [&ours, &plain] {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    let store = SqliteStore::open(Options::new(&ours))
        .await
        .expect("open store");
    let pool = plain_pool(&plain).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE plain_events (id INTEGER PRIMARY KEY, {})",
        PLAIN_COLUMNS
            .replace(", ", " , ")
            .split(" , ")
            .map(|c| format!("{c} "))
            .collect::<Vec<_>>()
            .join(", ")
    )))
    .execute(&pool)
    .await
    .expect("create plain");
    sqlx::query("CREATE INDEX plain_time ON plain_events (timestamp_ms)")
        .execute(&pool)
        .await
        .expect("index");
    let mut generator = synth::Generator::new(42, count, END_MS, DAYS);
    let mut ingest = Duration::ZERO;
    loop {
        let events = generator.take(1000);
        if events.is_empty() {
            break;
        }
        let mut transaction = pool.begin().await.expect("begin");
        for chunk in events.chunks(40) {
            let marks = vec![format!("({})", vec!["?"; 23].join(",")); chunk.len()].join(",");
            let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO plain_events ({PLAIN_COLUMNS}) VALUES {marks}"
            )));
            for e in chunk {
                query = query
                    .bind(e.timestamp_ms)
                    .bind(e.model.clone())
                    .bind(e.requested_model.clone())
                    .bind(e.provider.clone())
                    .bind(e.auth_index.clone())
                    .bind(e.source.clone())
                    .bind(e.source_hash.clone())
                    .bind(e.api_key_hash.clone())
                    .bind(e.account_snapshot.clone())
                    .bind(e.auth_file_snapshot.clone())
                    .bind(e.normalized.total_input)
                    .bind(e.tokens.output)
                    .bind(e.tokens.reasoning)
                    .bind(e.tokens.cached)
                    .bind(e.tokens.cache_read)
                    .bind(e.tokens.cache_creation)
                    .bind(e.tokens.total)
                    .bind(e.latency_ms)
                    .bind(e.ttft_ms)
                    .bind(i64::from(e.failed))
                    .bind(e.fail_summary.clone())
                    .bind(e.request_id.clone())
                    .bind(e.event_hash.clone());
            }
            query
                .execute(&mut *transaction)
                .await
                .expect("insert plain");
        }
        transaction.commit().await.expect("commit plain");
        let start = Instant::now();
        store
            .store_batch(IngestBatch {
                origin: BatchOrigin::Collector("http://127.0.0.1:8317".into()),
                events,
                dead_letters: Vec::new(),
            })
            .await
            .expect("store batch");
        ingest += start.elapsed();
    }
    store.close().await;
    pool.close().await;
    (ours, plain, ingest)
}

fn overview_include() -> Include {
    Include {
        summary: true,
        compact: true,
        percentiles: true,
        summary_comparison: true,
        timeline: true,
        model_stats: true,
        channel_share: true,
        api_key_stats: true,
        anomaly_points: true,
        ..Include::default()
    }
}

fn request(
    scope: Scope,
    zone: &str,
    granularity: Granularity,
    include: Include,
) -> MonitoringRequest {
    MonitoringRequest {
        scope,
        now_ms: END_MS,
        zone: Zone::parse(zone).expect("zone"),
        granularity,
        include,
        generated_at_ms: END_MS,
    }
}

async fn baseline(pool: &SqlitePool, sql: &str, binds: [i64; 2]) -> usize {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
    for bind in binds {
        query = query.bind(bind);
    }
    let rows = query.fetch_all(pool).await.expect("baseline query");
    rows.len() + rows.first().map(|row| row.len()).unwrap_or(0)
}

struct Line {
    name: &'static str,
    target_ms: Option<f64>,
    ours: Duration,
    plain: Duration,
}

/// Builds the databases (parent process) and reports how long that took.
async fn prepare(dir: &Path, count: usize) {
    let started = Instant::now();
    let (_, _, ingest) = build(dir, count).await;
    println!();
    println!(
        "## {count} events ({DAYS} days; built in {:.1} s, of which the batch writer {:.1} s = {:.0} events/s; 0 s means reused)",
        started.elapsed().as_secs_f64(),
        ingest.as_secs_f64(),
        if ingest.is_zero() {
            0.0
        } else {
            count as f64 / ingest.as_secs_f64()
        }
    );
}

/// Runs the queries (a fresh child process, so its peak RSS is the queries' own).
async fn run_size(dir: &Path, count: usize, runs: usize) {
    let ours_path = dir.join(format!("cpamp-{count}.db"));
    let plain_path = dir.join(format!("plain-{count}.db"));
    let bytes = file_size(&ours_path) + file_size(&dir.join(format!("cpamp-{count}.db-wal")));
    let plain_bytes = file_size(&plain_path);
    let rss_before_kb = status_kb("VmRSS:");
    let store = SqliteStore::open(Options::new(&ours_path))
        .await
        .expect("reopen");
    let pool = plain_pool(&plain_path).await;
    let from = END_MS - DAYS * DAY_MS;
    let today = END_MS - DAY_MS;
    let now = END_MS - 1;
    let model_filter = Filters {
        models: vec!["gpt-5".into()],
        ..Filters::default()
    };
    let key_filter = Filters {
        api_key_hashes: vec![
            synth::Generator::new(42, 1, END_MS, DAYS).take(1)[0]
                .api_key_hash
                .clone()
                .unwrap_or_default(),
        ],
        ..Filters::default()
    };

    // cpamp first, so the peak RSS below belongs to cpamp's queries alone.
    let dashboard_ms = time(runs, || {
        dashboard(
            &store,
            DashboardRequest {
                today_start_ms: today,
                now_ms: now,
                top_models: 5,
                recent_failures: 5,
                generated_at_ms: now,
            },
        )
    })
    .await;
    eprintln!("peak RSS after dashboard_ms: {} kB", status_kb("VmHWM:"));
    let scope30 = Scope::time_only(from, END_MS);
    let overview_ms = time(runs, || {
        monitoring(
            &store,
            request(scope30.clone(), "UTC", Granularity::Day, overview_include()),
        )
    })
    .await;
    eprintln!("peak RSS after overview_ms: {} kB", status_kb("VmHWM:"));
    let kolkata_ms = time(runs, || {
        monitoring(
            &store,
            request(
                scope30.clone(),
                "Asia/Kolkata",
                Granularity::Day,
                overview_include(),
            ),
        )
    })
    .await;
    eprintln!("peak RSS after kolkata_ms: {} kB", status_kb("VmHWM:"));
    let shanghai_ms = time(runs, || {
        monitoring(
            &store,
            request(
                scope30.clone(),
                "Asia/Shanghai",
                Granularity::Hour,
                overview_include(),
            ),
        )
    })
    .await;
    eprintln!("peak RSS after shanghai_ms: {} kB", status_kb("VmHWM:"));
    let page_scope = Scope {
        filters: model_filter.clone(),
        ..scope30.clone()
    };
    let page_include = || Include {
        summary: true,
        compact: true,
        events_page: Some(PageRequest {
            limit: 500,
            cursor: Cursor::default(),
        }),
        ..Include::default()
    };
    let page_ms = time(runs, || {
        monitoring(
            &store,
            request(page_scope.clone(), "UTC", Granularity::Day, page_include()),
        )
    })
    .await;
    eprintln!("peak RSS after page_ms: {} kB", status_kb("VmHWM:"));
    let selector_include = || Include {
        filter_options: true,
        filter_selectors: true,
        ..Include::default()
    };
    let selectors_ms = time(runs, || {
        monitoring(
            &store,
            request(scope30.clone(), "UTC", Granularity::Day, selector_include()),
        )
    })
    .await;
    eprintln!("peak RSS after selectors_ms: {} kB", status_kb("VmHWM:"));
    let key_scope = Scope {
        filters: key_filter,
        ..scope30.clone()
    };
    let key_ms = time(runs, || {
        monitoring(
            &store,
            request(
                key_scope.clone(),
                "UTC",
                Granularity::Day,
                overview_include(),
            ),
        )
    })
    .await;
    eprintln!("peak RSS after key_ms: {} kB", status_kb("VmHWM:"));
    let search_scope = Scope {
        search_query: "claude".into(),
        ..Scope::time_only(END_MS - DAY_MS, END_MS)
    };
    let search_include = || Include {
        summary: true,
        compact: true,
        events_page: Some(PageRequest {
            limit: 500,
            cursor: Cursor::default(),
        }),
        ..Include::default()
    };
    let search_ms = time(runs.min(3), || {
        monitoring(
            &store,
            request(
                search_scope.clone(),
                "UTC",
                Granularity::Hour,
                search_include(),
            ),
        )
    })
    .await;
    eprintln!("peak RSS after search_ms: {} kB", status_kb("VmHWM:"));
    let query_peak_kb = status_kb("VmHWM:");

    let plain_dashboard = time(runs, || {
        baseline(
            &pool,
            "SELECT (timestamp_ms - ?1) / 3600000 AS h, model, auth_index, failed, count(*), sum(input_tokens), sum(output_tokens), \
             sum(cached_tokens), sum(total_tokens), avg(nullif(latency_ms, 0)) FROM plain_events \
             WHERE timestamp_ms >= ?1 AND timestamp_ms < ?2 GROUP BY h, model, auth_index, failed",
            [today, now],
        )
    })
    .await;
    let plain_overview = "SELECT (timestamp_ms - ?1) / 86400000 AS d, model, auth_index, api_key_hash, failed, count(*), \
        sum(input_tokens), sum(output_tokens), sum(cached_tokens), sum(cache_read_tokens), sum(total_tokens), \
        avg(nullif(latency_ms, 0)) FROM plain_events WHERE timestamp_ms >= ?1 AND timestamp_ms < ?2 \
        GROUP BY d, model, auth_index, api_key_hash, failed";
    let plain_overview_ms = time(runs, || baseline(&pool, plain_overview, [from, END_MS])).await;
    let plain_page = time(runs, || {
        baseline(
            &pool,
            "SELECT * FROM plain_events WHERE timestamp_ms >= ?1 AND timestamp_ms < ?2 AND (model = 'gpt-5' OR model = 'gpt-5(high)') \
             ORDER BY timestamp_ms DESC, id DESC LIMIT 501",
            [from, END_MS],
        )
    })
    .await;
    let plain_selectors = time(runs, || {
        baseline(
            &pool,
            "SELECT DISTINCT model, provider, auth_file, account, api_key_hash, auth_index, source, source_hash \
             FROM plain_events WHERE timestamp_ms >= ?1 AND timestamp_ms < ?2",
            [from, END_MS],
        )
    })
    .await;
    let plain_key = time(runs, || {
        baseline(
            &pool,
            "SELECT (timestamp_ms - ?1) / 86400000 AS d, model, auth_index, failed, count(*), sum(total_tokens) \
             FROM plain_events WHERE timestamp_ms >= ?1 AND timestamp_ms < ?2 AND api_key_hash = (SELECT api_key_hash FROM plain_events LIMIT 1) \
             GROUP BY d, model, auth_index, failed",
            [from, END_MS],
        )
    })
    .await;
    let plain_search = time(runs.min(3), || {
        baseline(
            &pool,
            "SELECT * FROM plain_events WHERE timestamp_ms >= ?1 AND timestamp_ms < ?2 AND (lower(model) LIKE '%claude%' OR lower(requested_model) LIKE '%claude%') \
             ORDER BY timestamp_ms DESC LIMIT 501",
            [END_MS - DAY_MS, END_MS],
        )
    })
    .await;
    let lines = vec![
        Line {
            name: "dashboard summary (today)",
            target_ms: Some(10.0),
            ours: dashboard_ms,
            plain: plain_dashboard,
        },
        Line {
            name: "analytics overview 30d (UTC)",
            target_ms: Some(50.0),
            ours: overview_ms,
            plain: plain_overview_ms,
        },
        Line {
            name: "analytics overview 30d (Asia/Kolkata, +05:30)",
            target_ms: None,
            ours: kolkata_ms,
            plain: plain_overview_ms,
        },
        Line {
            name: "analytics overview 30d hourly (Asia/Shanghai)",
            target_ms: None,
            ours: shanghai_ms,
            plain: plain_overview_ms,
        },
        Line {
            name: "monitoring page 500, model filter (+summary)",
            target_ms: Some(20.0),
            ours: page_ms,
            plain: plain_page,
        },
        Line {
            name: "filter selectors 30d",
            target_ms: Some(5.0),
            ours: selectors_ms,
            plain: plain_selectors,
        },
        Line {
            name: "overview 30d, API-key filter",
            target_ms: None,
            ours: key_ms,
            plain: plain_key,
        },
        Line {
            name: "search 'claude' 24h, page 500 (raw path)",
            target_ms: None,
            ours: search_ms,
            plain: plain_search,
        },
    ];

    println!();
    println!("| query | cpamp median | plain GROUP BY median | speed-up | target |");
    println!("|---|---:|---:|---:|---|");
    for line in &lines {
        let ours_ms = line.ours.as_secs_f64() * 1e3;
        let plain_ms = line.plain.as_secs_f64() * 1e3;
        let target = match line.target_ms {
            Some(target) if ours_ms <= target => format!("≤ {target} ms: met"),
            Some(target) => format!("≤ {target} ms: MISSED"),
            None => "-".to_string(),
        };
        println!(
            "| {} | {ours_ms:.2} ms | {plain_ms:.2} ms | {:.1}× | {target} |",
            line.name,
            plain_ms / ours_ms.max(1e-9)
        );
    }
    let per_event = bytes as f64 / count as f64;
    println!();
    println!(
        "database: {:.1} MB = {per_event:.0} bytes/event (target ≤ 512: {}); plain baseline table: {:.0} bytes/event",
        bytes as f64 / 1e6,
        if per_event <= 512.0 { "met" } else { "MISSED" },
        plain_bytes as f64 / count as f64
    );
    println!(
        "peak RSS of the query process (cpamp queries only, measured before the baseline ran): {:.1} MB (target ≤ 64 MB: {}; RSS at start: {:.1} MB)",
        query_peak_kb as f64 / 1024.0,
        if query_peak_kb <= 64 * 1024 {
            "met"
        } else {
            "MISSED"
        },
        rss_before_kb as f64 / 1024.0
    );
    store.close().await;
    pool.close().await;
}

fn main() {
    let mut sizes = vec![100_000usize, 1_000_000];
    let mut runs = 15usize;
    let mut dir = PathBuf::from("target/bench-analytics");
    let mut query_size: Option<usize> = None;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut index = 0;
    while index < args.len() {
        match args[index].as_str() {
            "--sizes" => {
                index += 1;
                sizes = args
                    .get(index)
                    .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
                    .unwrap_or(sizes);
            }
            "--runs" => {
                index += 1;
                runs = args.get(index).and_then(|v| v.parse().ok()).unwrap_or(runs);
            }
            "--query" => {
                index += 1;
                query_size = args.get(index).and_then(|v| v.parse().ok());
            }
            "--dir" => {
                index += 1;
                dir = args.get(index).map(PathBuf::from).unwrap_or(dir);
            }
            other => {
                eprintln!(
                    "unknown argument {other}; usage: bench_analytics [--sizes 100000,1000000] [--runs 15] [--dir PATH]"
                );
                std::process::exit(2);
            }
        }
        index += 1;
    }
    std::fs::create_dir_all(&dir).expect("bench dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(size) = query_size {
        runtime.block_on(run_size(&dir, size, runs));
        return;
    }
    println!(
        "# cpamp analytics benchmark ({} runs per query, median; databases in {})",
        runs,
        dir.display()
    );
    for size in sizes {
        runtime.block_on(prepare(&dir, size));
        let status = std::process::Command::new(std::env::current_exe().expect("own path"))
            .args([
                "--query",
                &size.to_string(),
                "--runs",
                &runs.to_string(),
                "--dir",
            ])
            .arg(&dir)
            .status()
            .expect("run query process");
        if !status.success() {
            eprintln!("query process for {size} events failed: {status}");
            std::process::exit(1);
        }
    }
}
