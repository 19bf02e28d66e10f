//! Ingest benchmark: the store's batch insert rate next to a raw SQLite bulk insert
//! of the same rows, measured in the same run on the same disk.
//!
//! A second table measures what one event costs as its day fills: realistic CPA
//! 7.2 payloads (`cpamp_testkit::Traffic`) in batches of 10, first into an empty
//! UTC day, then into a day that already holds `--day-fill` events (200,000 by
//! default), with bytes written and CPU time per event. Target: the full day
//! within 2× of the empty one. The database size per event after the fill is
//! printed with its target (≤ 400 B).
//!
//! Run with `cargo xtask bench ingest [events] [--day-fill N] [--keep DIR]`; `--keep`
//! leaves the filled day's database in `DIR` for a closer look (`sqlite3`, `dbstat`).

use std::time::Instant;

use cpamp_domain::event::{CacheInputMode, NormalizedTokens, TokenCounts, UsageEvent};
use cpamp_domain::ports::{BatchOrigin, EventSink, IngestBatch};
use cpamp_storage::{Options, SqliteStore};
use sqlx::Connection;

const MODELS: &[&str] = &[
    "gpt-5.5",
    "gpt-5.5-mini",
    "gpt-5-codex",
    "claude-sonnet-4-6",
    "claude-opus-4-1",
    "claude-haiku-4",
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "grok-4",
    "kimi-k2",
    "deepseek-chat",
    "gpt-image-2",
];
const PROVIDERS: &[&str] = &[
    "codex",
    "claude",
    "gemini",
    "xai",
    "kimi",
    "openai-compatible-openrouter",
];

fn event(index: u64) -> UsageEvent {
    let model = MODELS[(index % MODELS.len() as u64) as usize];
    let provider = PROVIDERS[(index % PROVIDERS.len() as u64) as usize];
    let timestamp_ms = 1_767_225_600_000 + (index as i64) * 2_591;
    let failed = index % 20 == 7;
    let input = 1000 + (index % 5000) as i64;
    let output = 100 + (index % 900) as i64;
    UsageEvent {
        event_hash: format!(
            "{:064x}",
            u128::from(index) * 0x9E37_79B9_7F4A_7C15_u128 + 1
        ),
        request_id: Some(format!("{:08x}", index.wrapping_mul(2_654_435_761) as u32)),
        timestamp_ms,
        timestamp: cpamp_domain::event::format_timestamp_ms(timestamp_ms),
        provider: Some(provider.into()),
        executor_type: Some("CodexExecutor".into()),
        model: model.into(),
        requested_model: Some(model.into()),
        resolved_model: Some(model.into()),
        endpoint: Some("POST /v1/responses".into()),
        method: Some("POST".into()),
        path: Some("/v1/responses".into()),
        client_ip: Some(format!("192.0.2.{}", index % 50)),
        user_agent: Some("codex_cli_rs/0.46.0".into()),
        auth_type: Some("oauth".into()),
        auth_index: Some(format!("{:016x}", index % 40)),
        source: Some(format!("use{}***@example.com", index % 40)),
        source_hash: Some(format!("{:064x}", index % 40)),
        api_key_hash: Some(format!("{:064x}", 1000 + index % 8)),
        reasoning_effort: Some("high".into()),
        service_tier: Some("default".into()),
        cache_input_mode: Some(CacheInputMode::IncludedInInput),
        tokens: TokenCounts {
            input,
            output,
            reasoning: output / 4,
            cached: input / 2,
            cache_read: input / 2,
            total: input + output,
            ..TokenCounts::default()
        },
        normalized: NormalizedTokens {
            uncached_input: input - input / 2,
            total_input: input,
            cache_read: input / 2,
            cache_creation: 0,
        },
        latency_ms: Some(800 + (index % 7000) as i64),
        ttft_ms: Some(200 + (index % 900) as i64),
        failed,
        fail_status_code: Some(if failed { 429 } else { 200 }),
        fail_summary: failed.then(|| "{\"error\":{\"type\":\"usage_limit_reached\"}}".to_string()),
        created_at_ms: timestamp_ms + 5,
        ..UsageEvent::default()
    }
}

async fn ours(dir: &std::path::Path, batch_size: usize, total: u64) -> f64 {
    let store = SqliteStore::open(Options::new(dir.join(format!("ours-{batch_size}.sqlite"))))
        .await
        .expect("open store");
    let events: Vec<UsageEvent> = (0..total).map(event).collect();
    let started = Instant::now();
    for chunk in events.chunks(batch_size) {
        let outcome = store
            .store_batch(IngestBatch {
                origin: BatchOrigin::Collector("http://127.0.0.1:8317".into()),
                events: chunk.to_vec(),
                dead_letters: vec![],
            })
            .await
            .expect("store batch");
        assert_eq!(outcome.inserted as usize, chunk.len());
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    store.close().await;
    rate
}

async fn raw(dir: &std::path::Path, batch_size: usize, total: u64) -> f64 {
    let path = dir.join(format!("raw-{batch_size}.sqlite"));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut connection = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("raw connect");
    for pragma in ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL"] {
        sqlx::query(pragma)
            .execute(&mut connection)
            .await
            .expect("pragma");
    }
    // The baseline: the same rows in a flat table of plain text and integer
    // columns (the Go server's layout), one prepared INSERT per row.
    sqlx::query(
        "CREATE TABLE raw_events (id INTEGER PRIMARY KEY, event_hash TEXT, request_id TEXT, \
         timestamp TEXT, provider TEXT, executor_type TEXT, model TEXT, requested_model TEXT, \
         resolved_model TEXT, endpoint TEXT, method TEXT, path TEXT, client_ip TEXT, \
         x_forwarded_for TEXT, user_agent TEXT, auth_type TEXT, auth_index TEXT, source TEXT, \
         source_hash TEXT, api_key_hash TEXT, account_snapshot TEXT, auth_label_snapshot TEXT, \
         auth_file_snapshot TEXT, auth_provider_snapshot TEXT, auth_project_id_snapshot TEXT, \
         reasoning_effort TEXT, service_tier TEXT, request_service_tier TEXT, response_service_tier \
         TEXT, cache_input_mode TEXT, fail_summary TEXT, response_metadata_json TEXT, \
         header_quota_plan_type TEXT, header_error_kind TEXT, header_error_code TEXT, \
         header_trace_id TEXT, timestamp_ms INTEGER, auth_snapshot_at_ms INTEGER, input_tokens \
         INTEGER, output_tokens INTEGER, reasoning_tokens INTEGER, cached_tokens INTEGER, \
         cache_tokens INTEGER, cache_read_tokens INTEGER, cache_creation_tokens INTEGER, \
         total_tokens INTEGER, normalized_uncached_input_tokens INTEGER, \
         normalized_total_input_tokens INTEGER, normalized_cache_read_tokens INTEGER, \
         normalized_cache_creation_tokens INTEGER, latency_ms INTEGER, ttft_ms INTEGER, failed \
         INTEGER, fail_status_code INTEGER, header_quota_recover_at_ms INTEGER, created_at_ms \
         INTEGER, header_quota_used_percent REAL)",
    )
    .execute(&mut connection)
    .await
    .expect("create");
    let events: Vec<UsageEvent> = (0..total).map(event).collect();
    let started = Instant::now();
    for chunk in events.chunks(batch_size) {
        let mut transaction = connection.begin().await.expect("begin");
        for event in chunk {
            sqlx::query(
                "INSERT INTO raw_events (event_hash, request_id, timestamp, provider, executor_type, model, \
         requested_model, resolved_model, endpoint, method, path, client_ip, x_forwarded_for, \
         user_agent, auth_type, auth_index, source, source_hash, api_key_hash, account_snapshot, \
         auth_label_snapshot, auth_file_snapshot, auth_provider_snapshot, auth_project_id_snapshot, \
         reasoning_effort, service_tier, request_service_tier, response_service_tier, \
         cache_input_mode, fail_summary, response_metadata_json, header_quota_plan_type, \
         header_error_kind, header_error_code, header_trace_id, timestamp_ms, auth_snapshot_at_ms, \
         input_tokens, output_tokens, reasoning_tokens, cached_tokens, cache_tokens, \
         cache_read_tokens, cache_creation_tokens, total_tokens, normalized_uncached_input_tokens, \
         normalized_total_input_tokens, normalized_cache_read_tokens, \
         normalized_cache_creation_tokens, latency_ms, ttft_ms, failed, fail_status_code, \
         header_quota_recover_at_ms, created_at_ms, header_quota_used_percent) VALUES (?, ?, ?, ?, \
         ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, \
         ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&event.event_hash)
            .bind(&event.request_id)
            .bind(&event.timestamp)
            .bind(&event.provider)
            .bind(&event.executor_type)
            .bind(&event.model)
            .bind(&event.requested_model)
            .bind(&event.resolved_model)
            .bind(&event.endpoint)
            .bind(&event.method)
            .bind(&event.path)
            .bind(&event.client_ip)
            .bind(&event.x_forwarded_for)
            .bind(&event.user_agent)
            .bind(&event.auth_type)
            .bind(&event.auth_index)
            .bind(&event.source)
            .bind(&event.source_hash)
            .bind(&event.api_key_hash)
            .bind(&event.account_snapshot)
            .bind(&event.auth_label_snapshot)
            .bind(&event.auth_file_snapshot)
            .bind(&event.auth_provider_snapshot)
            .bind(&event.auth_project_id_snapshot)
            .bind(&event.reasoning_effort)
            .bind(&event.service_tier)
            .bind(&event.request_service_tier)
            .bind(&event.response_service_tier)
            .bind(event.cache_input_mode.map(|mode| mode.as_str()))
            .bind(&event.fail_summary)
            .bind(&event.response_metadata_json)
            .bind(&event.header_quota_plan_type)
            .bind(&event.header_error_kind)
            .bind(&event.header_error_code)
            .bind(&event.header_trace_id)
            .bind(event.timestamp_ms)
            .bind(event.auth_snapshot_at_ms)
            .bind(event.tokens.input)
            .bind(event.tokens.output)
            .bind(event.tokens.reasoning)
            .bind(event.tokens.cached)
            .bind(event.tokens.cache)
            .bind(event.tokens.cache_read)
            .bind(event.tokens.cache_creation)
            .bind(event.tokens.total)
            .bind(event.normalized.uncached_input)
            .bind(event.normalized.total_input)
            .bind(event.normalized.cache_read)
            .bind(event.normalized.cache_creation)
            .bind(event.latency_ms)
            .bind(event.ttft_ms)
            .bind(event.failed)
            .bind(event.fail_status_code)
            .bind(event.header_quota_recover_at_ms)
            .bind(event.created_at_ms)
            .bind(event.header_quota_used_percent)
            .execute(&mut *transaction)
            .await
            .expect("insert");
        }
        transaction.commit().await.expect("commit");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// Bytes this process has passed to `write` so far (`wchar` of `/proc/self/io`).
fn bytes_written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("wchar: "))
                .and_then(|value| value.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time of every thread of this process so far, in nanoseconds (first field
/// of each `/proc/self/task/*/schedstat`; SQLite runs on worker threads).
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The UTC day the day-fullness runs write into (2026-03-02) and its length.
const DAY_START_MS: i64 = 1_772_409_600_000;
const DAY_MS: i64 = 86_400_000;
/// Measured events arrive in the day's last ten minutes.
const TAIL_MS: i64 = 10 * 60_000;

/// `count` realistic events spread evenly over `[from_ms, to_ms)`.
fn realistic(
    traffic: &mut cpamp_testkit::Traffic,
    count: u64,
    from_ms: i64,
    to_ms: i64,
) -> Vec<UsageEvent> {
    let step = (to_ms - from_ms) as i128 * 1_000_000 / count.max(1) as i128;
    (0..count)
        .map(|index| {
            let nanos = i128::from(from_ms) * 1_000_000 + step * index as i128 + 123_457;
            match cpamp_domain::decode::decode(&traffic.payload(nanos), to_ms) {
                cpamp_domain::event::Decoded::Event(event) => *event,
                other => panic!("realistic payload did not decode: {other:?}"),
            }
        })
        .collect()
}

async fn store_all(store: &SqliteStore, events: Vec<UsageEvent>, batch_size: usize) {
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        let chunk: Vec<UsageEvent> = events.by_ref().take(batch_size).collect();
        let expected = chunk.len();
        let outcome = store
            .store_batch(IngestBatch {
                origin: BatchOrigin::Collector("http://127.0.0.1:8317".into()),
                events: chunk,
                dead_letters: vec![],
            })
            .await
            .expect("store batch");
        assert_eq!(outcome.inserted as usize, expected);
    }
}

struct DayCost {
    bytes_per_event: f64,
    cpu_us_per_event: f64,
    events_per_s: f64,
    /// Database bytes per stored event after a checkpoint (fill + measured events).
    stored_bytes_per_event: f64,
    /// The largest tables and indexes with their bytes per event.
    tables: String,
}

/// Fills `path` with `fill` events over the day (before its last ten minutes),
/// then times `measured` events into the last ten minutes, 10 per batch.
async fn day_cost(path: &std::path::Path, fill: u64, measured: u64) -> DayCost {
    let store = SqliteStore::open(Options::new(path))
        .await
        .expect("open store");
    let mut traffic = cpamp_testkit::Traffic::new(0xf111);
    let chunk = 20_000;
    let mut done = 0;
    while done < fill {
        let count = chunk.min(fill - done);
        let span = DAY_MS - TAIL_MS;
        let from = DAY_START_MS + span * done as i64 / fill as i64;
        let to = DAY_START_MS + span * (done + count) as i64 / fill as i64;
        store_all(&store, realistic(&mut traffic, count, from, to), 5_000).await;
        done += count;
    }
    let mut traffic = cpamp_testkit::Traffic::new(0x7a11);
    let events = realistic(
        &mut traffic,
        measured,
        DAY_START_MS + DAY_MS - TAIL_MS,
        DAY_START_MS + DAY_MS,
    );
    let (bytes, cpu, started) = (bytes_written(), cpu_ns(), Instant::now());
    store_all(&store, events, 10).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (bytes, cpu) = (bytes_written() - bytes, cpu_ns() - cpu);
    store.close().await;
    // Closing checkpointed the WAL into the main file.
    let size = std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0);
    let tables = table_sizes(path, fill + measured).await;
    DayCost {
        bytes_per_event: bytes as f64 / measured as f64,
        cpu_us_per_event: cpu as f64 / 1_000.0 / measured as f64,
        events_per_s: measured as f64 / elapsed,
        stored_bytes_per_event: size as f64 / (fill + measured) as f64,
        tables,
    }
}

/// Bytes per event of the largest tables and indexes (SQLite's `dbstat`).
async fn table_sizes(path: &std::path::Path, events: u64) -> String {
    let url = format!("sqlite://{}?mode=ro", path.display());
    let mut connection = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    let rows: Result<Vec<(String, i64)>, _> = sqlx::query_as(
        "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 8",
    )
    .fetch_all(&mut connection)
    .await;
    let _ = connection.close().await;
    match rows {
        Ok(rows) => rows
            .iter()
            .map(|(name, bytes)| format!("{name} {:.0}", *bytes as f64 / events as f64))
            .collect::<Vec<_>>()
            .join(", "),
        Err(error) => format!("no per-table sizes: {error}"),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let total: u64 = args
        .iter()
        .take_while(|arg| !arg.starts_with("--"))
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(50_000);
    let day_fill: u64 = args
        .iter()
        .position(|arg| arg == "--day-fill")
        .and_then(|at| args.get(at + 1))
        .map(|value| value.parse().expect("--day-fill takes a number of events"))
        .unwrap_or(200_000);
    let keep: Option<std::path::PathBuf> = args
        .iter()
        .position(|arg| arg == "--keep")
        .and_then(|at| args.get(at + 1))
        .map(std::path::PathBuf::from);
    let dir = tempfile::tempdir().expect("tempdir");
    println!(
        "ingest benchmark: {total} events per run, WAL + synchronous=FULL, one transaction per batch"
    );
    println!(
        "{:<12} {:>16} {:>16} {:>10}",
        "batch size", "cpamp events/s", "raw events/s", "ratio"
    );
    for batch_size in [100usize, 1000] {
        let raw_rate = raw(dir.path(), batch_size, total).await;
        let our_rate = ours(dir.path(), batch_size, total).await;
        println!(
            "{:<12} {:>16.0} {:>16.0} {:>9.0}%",
            batch_size,
            our_rate,
            raw_rate,
            100.0 * our_rate / raw_rate
        );
    }
    let measured = 3_000;
    println!();
    println!(
        "ingest cost by day fullness: {measured} realistic events, 10 per batch, into the last \
         10 minutes of a UTC day"
    );
    println!(
        "{:<26} {:>14} {:>14} {:>12} {:>14}",
        "day already holds", "written B/ev", "CPU µs/ev", "events/s", "stored B/ev"
    );
    let empty = day_cost(&dir.path().join("empty-day.sqlite"), 0, measured).await;
    let full = day_cost(&dir.path().join("full-day.sqlite"), day_fill, measured).await;
    for (label, cost) in [
        ("0 events".to_string(), &empty),
        (format!("{day_fill} events"), &full),
    ] {
        println!(
            "{:<26} {:>14.0} {:>14.1} {:>12.0} {:>14.0}",
            label,
            cost.bytes_per_event,
            cost.cpu_us_per_event,
            cost.events_per_s,
            cost.stored_bytes_per_event
        );
    }
    println!(
        "full / empty: written {:.2}×, CPU {:.2}× (target ≤ 2×); stored {:.0} B/event after the fill (target ≤ 400)",
        full.bytes_per_event / empty.bytes_per_event,
        full.cpu_us_per_event / empty.cpu_us_per_event,
        full.stored_bytes_per_event
    );
    println!("bytes/event by table after the fill: {}", full.tables);
    if let Some(keep) = keep {
        std::fs::create_dir_all(&keep).expect("create the --keep directory");
        let kept = keep.join("full-day.sqlite");
        std::fs::copy(dir.path().join("full-day.sqlite"), &kept).expect("keep the database");
        println!("filled database kept at {}", kept.display());
    }
}
