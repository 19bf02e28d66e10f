//! Databases written by earlier releases are converted in place when opened: the
//! answers stay the same and nothing stored is lost.
//!
//! Each test writes a database with the current code, turns it back into the
//! shape an earlier release left (the objects a later migration adds are dropped
//! and that migration is forgotten), reopens it and compares.

mod support;

use cpamp_domain::analytics::accounts::header_snapshots;
use cpamp_domain::analytics::time::DAY_MS;
use cpamp_storage::{Options, SqliteStore};
use sqlx::Connection;
use support::synth;

const END_MS: i64 = 1_767_225_600_000;

/// Turns the cycle starts migration 0098 left out (or marked) back into stored values.
const UNDO_0098: &str = "UPDATE account_quota_snapshots SET cycle_start_ms = CASE \
     WHEN typeof(cycle_start_ms) = 'real' THEN NULL \
     WHEN cycle_start_ms IS NULL AND cycle_end_ms IS NOT NULL AND duration_seconds IS NOT NULL \
     THEN cycle_end_ms - duration_seconds * 1000 ELSE cycle_start_ms END";

async fn seeded(path: &std::path::Path, count: usize) -> SqliteStore {
    let store = SqliteStore::open(Options::new(path)).await.expect("open");
    let events = synth::events(11, count, END_MS, 3);
    support::store_in_batches(&store, &events, 200, false).await;
    store
}

/// Runs `statements` on the closed database and forgets migration `version`.
async fn rewind(path: &std::path::Path, version: i64, statements: &[&'static str]) {
    let url = format!("sqlite://{}", path.display());
    let mut connection = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    for statement in statements.iter().copied() {
        sqlx::query(statement)
            .execute(&mut connection)
            .await
            .expect(statement);
    }
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = ?")
        .bind(version)
        .execute(&mut connection)
        .await
        .expect("forget migration");
    connection.close().await.expect("close");
}

/// Statements that put the latency samples back in their layout from before
/// `0132` and forget `0132`, so the next open converts them again. The old
/// blobs are rebuilt from the stored events as ingest wrote them: per block,
/// per (identity, analytics model, failed) group its ids and value counts, then
/// its latency and TTFT values. `runs` gives the tables their run column
/// (`0021`), else one row per block; `days` adds day blocks with samples of
/// their own (before `0122`), one run per hour of the day.
async fn legacy_samples(path: &std::path::Path, runs: bool, days: bool) -> Vec<&'static str> {
    use std::collections::BTreeMap;
    type Groups = BTreeMap<(i64, i64, bool), (Vec<u32>, Vec<u32>)>;
    fn put(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }
    let zigzag = |value: i64| ((value << 1) ^ (value >> 63)) as u64;
    let encode = |groups: &Groups| {
        let mut out = Vec::new();
        for ((identity, model, failed), (latencies, ttfts)) in groups {
            put(&mut out, zigzag(*identity));
            put(&mut out, zigzag(*model));
            put(&mut out, u64::from(*failed));
            put(&mut out, latencies.len() as u64);
            put(&mut out, ttfts.len() as u64);
            for value in latencies.iter().chain(ttfts) {
                put(&mut out, u64::from(*value));
            }
        }
        out
    };
    let url = format!("sqlite://{}?mode=ro", path.display());
    let mut connection = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    // Time, identity, analytics model, failed, latency, TTFT.
    type Row = (i64, i64, i64, bool, Option<i64>, Option<i64>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT e.timestamp_ms, i.id, \
         coalesce(a.analytics_dim_id, coalesce(e.requested_model_id, e.model_id)), \
         e.failed != 0, e.latency_ms, e.ttft_ms FROM usage_events e \
         JOIN usage_identities i ON i.provider_id = coalesce(e.provider_id, 0) \
         AND i.executor_type_id = coalesce(e.executor_type_id, 0) \
         AND i.auth_index_id = coalesce(e.auth_index_id, 0) \
         AND i.source_id = coalesce(e.source_id, 0) \
         AND i.source_hash_id = coalesce(e.source_hash_id, 0) \
         AND i.api_key_hash_id = coalesce(e.api_key_hash_id, 0) \
         AND i.account_id = coalesce(e.account_snapshot_id, 0) \
         AND i.auth_label_id = coalesce(e.auth_label_snapshot_id, 0) \
         AND i.auth_file_id = coalesce(e.auth_file_snapshot_id, 0) \
         AND i.auth_provider_id = coalesce(e.auth_provider_snapshot_id, 0) \
         AND i.auth_project_id = coalesce(e.auth_project_id_snapshot_id, 0) \
         LEFT JOIN usage_model_analytics a \
         ON a.model_dim_id = coalesce(e.requested_model_id, e.model_id) ORDER BY e.id",
    )
    .fetch_all(&mut connection)
    .await
    .expect("events with their groups");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_events")
        .fetch_one(&mut connection)
        .await
        .expect("count");
    connection.close().await.expect("close");
    assert_eq!(rows.len() as i64, count, "every event has its identity");
    let mut blocks: [BTreeMap<i64, Groups>; 2] = Default::default();
    for (at, identity, model, failed, latency, ttft) in rows {
        let positive = |value: Option<i64>| value.filter(|v| *v > 0).map(|v| v as u32);
        if latency.is_none_or(|v| v <= 0) && ttft.is_none_or(|v| v <= 0) {
            continue;
        }
        for (level, step) in [15 * 60_000, 3_600_000].into_iter().enumerate() {
            let entry = blocks[level]
                .entry(at.div_euclid(step) * step)
                .or_default()
                .entry((identity, model, failed))
                .or_default();
            entry.0.extend(positive(latency));
            entry.1.extend(positive(ttft));
        }
    }
    let mut statements = vec![
        "DROP TABLE usage_rollup_samples_m".to_string(),
        "DROP TABLE usage_rollup_samples_q".to_string(),
        "DELETE FROM _sqlx_migrations WHERE version = 132".to_string(),
        "CREATE TABLE usage_rollup_latency_m (bucket_ms INTEGER NOT NULL, run INTEGER NOT NULL, \
         entries BLOB NOT NULL, PRIMARY KEY (bucket_ms, run))"
            .to_string(),
    ];
    for (level, suffix) in ["q", "h"].into_iter().enumerate() {
        statements.push(if runs {
            format!(
                "CREATE TABLE usage_rollup_latency_{suffix} (bucket_ms INTEGER NOT NULL, \
                 run INTEGER NOT NULL, entries BLOB NOT NULL, PRIMARY KEY (bucket_ms, run))"
            )
        } else {
            format!(
                "CREATE TABLE usage_rollup_latency_{suffix} \
                 (bucket_ms INTEGER PRIMARY KEY, entries BLOB NOT NULL)"
            )
        });
        for (bucket, groups) in &blocks[level] {
            let hex: String = encode(groups).iter().map(|b| format!("{b:02X}")).collect();
            statements.push(if runs {
                format!("INSERT INTO usage_rollup_latency_{suffix} VALUES ({bucket}, 0, X'{hex}')")
            } else {
                format!("INSERT INTO usage_rollup_latency_{suffix} VALUES ({bucket}, X'{hex}')")
            });
        }
    }
    if days {
        statements.push(
            "CREATE TABLE usage_rollup_latency_d (bucket_ms INTEGER NOT NULL, \
             run INTEGER NOT NULL, entries BLOB NOT NULL, PRIMARY KEY (bucket_ms, run))"
                .to_string(),
        );
        statements.push(
            "INSERT INTO usage_rollup_latency_d (bucket_ms, run, entries) \
             SELECT bucket_ms - bucket_ms % 86400000, \
             row_number() OVER (PARTITION BY bucket_ms - bucket_ms % 86400000 \
             ORDER BY bucket_ms, run) - 1, entries FROM usage_rollup_latency_h"
                .to_string(),
        );
    }
    statements
        .into_iter()
        .map(|statement| &*Box::leak(statement.into_boxed_str()))
        .collect()
}

#[tokio::test]
async fn header_snapshots_of_a_database_from_before_the_latest_header_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("usage.sqlite");
    let store = seeded(&path, 2_000).await;
    let before = header_snapshots(&store, END_MS, 3, 1000)
        .await
        .expect("snapshots");
    assert!(before.items.len() >= 6, "{}", before.items.len());
    store.close().await;

    rewind(&path, 20, &["DROP TABLE usage_header_latest"]).await;
    let store = SqliteStore::open(Options::new(&path))
        .await
        .expect("reopen");
    let after = header_snapshots(&store, END_MS, 3, 1000)
        .await
        .expect("snapshots");
    let keys = |answer: &cpamp_domain::analytics::accounts::HeaderSnapshots| {
        answer
            .items
            .iter()
            .map(|item| (item.event_hash.clone(), item.timestamp_ms))
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&after), keys(&before));
    // A narrower window leaves out credentials whose newest header is older.
    let recent = header_snapshots(&store, END_MS, 1, 1000)
        .await
        .expect("snapshots");
    assert!(
        recent
            .items
            .iter()
            .all(|item| item.timestamp_ms >= END_MS - DAY_MS)
    );
    // Limits count credentials, newest first.
    let two = header_snapshots(&store, END_MS, 3, 2).await.expect("two");
    assert_eq!(keys(&two), keys(&before)[..2].to_vec());
}

#[tokio::test]
async fn latency_samples_of_a_database_from_before_sample_runs() {
    use cpamp_domain::analytics::monitoring::{Include, MonitoringRequest, monitoring};
    use cpamp_domain::analytics::query::Scope;
    use cpamp_domain::analytics::time::{Granularity, Zone};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("usage.sqlite");
    let store = seeded(&path, 2_000).await;
    let percentiles = |store: SqliteStore| async move {
        let (from, to) = (END_MS - 3 * DAY_MS + 7 * 60_000 + 3, END_MS - 11);
        let response = monitoring(
            &store,
            MonitoringRequest {
                scope: Scope::time_only(from, to),
                now_ms: END_MS,
                zone: Zone::parse("Asia/Kolkata").expect("zone"),
                granularity: Granularity::resolve(Some("hour"), from, to),
                include: Include {
                    summary: true,
                    percentiles: true,
                    timeline: true,
                    ..Include::default()
                },
                generated_at_ms: END_MS,
            },
        )
        .await
        .expect("query");
        store.close().await;
        let summary = response.summary.expect("summary");
        let timeline: Vec<(i64, Option<i64>, Option<i64>)> = response
            .timeline
            .iter()
            .map(|point| (point.bucket_ms, point.p95_latency_ms, point.p95_ttft_ms))
            .collect();
        (
            summary.p50_latency_ms,
            summary.p95_latency_ms,
            summary.p95_ttft_ms,
            timeline,
        )
    };
    let before = percentiles(store).await;
    assert!(before.1.is_some() && before.3.len() > 24, "{before:?}");

    // The earlier shape: one sample row per block (every block here fits one run),
    // in the layout from before `0132`. Day blocks keep no samples since `0122`
    // (their hours' are read): the earlier day table is there, empty.
    let mut statements = legacy_samples(&path, false, false).await;
    statements.push(
        "CREATE TABLE usage_rollup_latency_d (bucket_ms INTEGER PRIMARY KEY, entries BLOB NOT NULL)",
    );
    rewind(&path, 21, &statements).await;
    let store = SqliteStore::open(Options::new(&path))
        .await
        .expect("reopen");
    let after = percentiles(store).await;
    assert_eq!(after, before);
}

#[tokio::test]
async fn heatmaps_of_a_database_from_before_the_heat_rollup() {
    use cpamp_domain::analytics::monitoring::{Include, MonitoringRequest, monitoring};
    use cpamp_domain::analytics::query::Scope;
    use cpamp_domain::analytics::time::{Granularity, Zone};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("usage.sqlite");
    let store = seeded(&path, 2_000).await;
    let heatmap = |store: SqliteStore| async move {
        let mut answers = Vec::new();
        for zone in ["Asia/Shanghai", "America/New_York"] {
            let response = monitoring(
                &store,
                MonitoringRequest {
                    scope: Scope::time_only(END_MS - 3 * DAY_MS + 7 * 60_000 + 3, END_MS - 11),
                    now_ms: END_MS,
                    zone: Zone::parse(zone).expect("zone"),
                    granularity: Granularity::Day,
                    include: Include {
                        heatmap: true,
                        hourly_distribution: true,
                        ..Include::default()
                    },
                    generated_at_ms: END_MS,
                },
            )
            .await
            .expect("query");
            answers.push(serde_json::to_string(&response).expect("json"));
        }
        store.close().await;
        answers
    };
    let before = heatmap(store).await;
    assert!(
        before
            .iter()
            .all(|answer| answer.contains("api_key_contributors"))
    );

    // The earlier shape: no heat rollup, and no reduced identities (every synthetic
    // event names a credential, so reduced identities are exactly the rows without one).
    rewind(
        &path,
        22,
        &[
            "DROP TABLE usage_rollup_heat_h",
            "DROP TABLE usage_rollup_backfill",
            "DELETE FROM usage_identities WHERE auth_index_id = 0 AND source_id = 0 AND auth_file_id = 0",
        ],
    )
    .await;
    let store = SqliteStore::open(Options::new(&path))
        .await
        .expect("reopen");
    let after = heatmap(store.clone()).await;
    assert_eq!(after, before);
    // The conversion ran once and left nothing to do.
    let store = SqliteStore::open(Options::new(&path))
        .await
        .expect("reopen again");
    assert_eq!(heatmap(store).await, before);
}

/// Everything a reader can get out of the stored events: every event through
/// the stream (`GET /usage`), both export formats, header snapshots and the
/// identity groups.
async fn every_answer(store: &SqliteStore, now_ms: i64) -> Vec<String> {
    use cpamp_domain::analytics::query::{AnalyticsStore, GroupRequest, Scope};
    use cpamp_domain::ports::{EventPages, EventSelection, EventStream, ExportChunks};
    use cpamp_domain::transfer::export::ExportFormat;

    let mut answers = Vec::new();
    let mut pages = store
        .open_event_stream(EventSelection::default())
        .await
        .expect("open stream");
    loop {
        let page = pages.next_page().await.expect("page");
        if page.is_empty() {
            break;
        }
        answers.extend(page.iter().map(|event| format!("{event:?}")));
    }
    for format in [ExportFormat::Jsonl, ExportFormat::Csv] {
        let mut export = store
            .open_export(EventSelection::default(), format)
            .await
            .expect("open export");
        let mut out = String::new();
        while let Some(chunk) = export.next_chunk().await.expect("chunk") {
            out.push_str(&chunk);
        }
        answers.push(out);
    }
    let snapshots = header_snapshots(store, now_ms, 3, 1000)
        .await
        .expect("snapshots");
    answers.push(serde_json::to_string(&snapshots).expect("json"));
    let mut groups: Vec<String> = store
        .groups(GroupRequest {
            scope: Scope::time_only(0, i64::MAX),
            identity: true,
            timeline: None,
        })
        .await
        .expect("groups")
        .iter()
        .map(|row| format!("{row:?}"))
        .collect();
    groups.sort();
    answers.extend(groups);
    answers
}

#[tokio::test]
async fn events_of_a_database_from_before_compact_rows_read_the_same() {
    use cpamp_domain::event::{Decoded, UsageEvent, format_timestamp_ms};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("usage.sqlite");
    let now_ms = END_MS;
    // Realistic CPA payloads (nanosecond timestamps, provider headers), and a few
    // texts the compact form cannot hold: another offset, metadata that is not
    // an object.
    let mut traffic = cpamp_testkit::Traffic::new(0xc0de);
    let count = 3_000_i64;
    let mut events: Vec<UsageEvent> = (0..count)
        .map(|index| {
            let at_ms = now_ms - 3 * DAY_MS + index * (3 * DAY_MS / count);
            let nanos = i128::from(at_ms) * 1_000_000 + 123_457;
            match cpamp_domain::decode::decode(&traffic.payload(nanos), now_ms) {
                Decoded::Event(event) => *event,
                other => panic!("realistic payload did not decode: {other:?}"),
            }
        })
        .collect();
    for event in events.iter_mut().step_by(97) {
        event.timestamp = format!("{}+00:00", &event.timestamp[..19]);
    }
    for event in events.iter_mut().skip(5).step_by(89) {
        event.response_metadata_json = Some(format!("[\"not an object\",{}]", event.timestamp_ms));
    }
    let store = SqliteStore::open(Options::new(&path)).await.expect("open");
    support::store_in_batches(&store, &events, 250, false).await;
    let before = every_answer(&store, now_ms).await;
    assert!(before.len() > count as usize);
    store.close().await;

    // The earlier shape: whole texts in `timestamp_text` (when `timestamp_ms`
    // does not rebuild them) and `response_metadata_json`, no compact columns.
    let url = format!("sqlite://{}", path.display());
    let mut connection = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    for event in &events {
        let rebuilt = format_timestamp_ms(event.timestamp_ms);
        sqlx::query(
            "UPDATE usage_events SET timestamp_text = ?, response_metadata_json = ? \
             WHERE event_hash = unhex(?)",
        )
        .bind((event.timestamp != rebuilt).then_some(event.timestamp.as_str()))
        .bind(event.response_metadata_json.as_deref())
        .bind(&event.event_hash)
        .execute(&mut connection)
        .await
        .expect("old row");
    }
    connection.close().await.expect("close");
    // The ledger as it was before `0031_event_ledger`: every hash whole, keyed by
    // it, and one hash whose event was never stored.
    rewind(
        &path,
        31,
        &[
            "CREATE TABLE usage_event_identity_ledger (event_hash BLOB PRIMARY KEY, \
             event_id INTEGER, first_seen_at_ms INTEGER NOT NULL) WITHOUT ROWID",
            "INSERT INTO usage_event_identity_ledger \
             SELECT coalesce(ledger.event_hash, event.event_hash), ledger.event_id, \
             CASE WHEN ledger.first_seen_at_ms = 0 THEN event.created_at_ms ELSE ledger.first_seen_at_ms END \
             FROM usage_event_ledger ledger LEFT JOIN usage_events event ON event.id = ledger.event_id",
            "INSERT INTO usage_event_identity_ledger \
             SELECT event_hash, event_id, first_seen_at_ms FROM usage_event_ledger_overflow",
            "INSERT INTO usage_event_identity_ledger VALUES (unhex(printf('%064d', 42)), NULL, 1)",
            "DROP TABLE usage_event_ledger",
            "DROP TABLE usage_event_ledger_overflow",
        ],
    )
    .await;
    rewind(
        &path,
        30,
        &[
            "ALTER TABLE usage_events DROP COLUMN timestamp_sub_ms",
            "ALTER TABLE usage_events DROP COLUMN metadata_template_id",
            "ALTER TABLE usage_events DROP COLUMN metadata_values",
            "DELETE FROM dims WHERE kind = 25",
        ],
    )
    .await;

    let store = SqliteStore::open(Options::new(&path))
        .await
        .expect("reopen");
    let after = every_answer(&store, now_ms).await;
    assert_eq!(after.len(), before.len());
    for (left, right) in before.iter().zip(&after) {
        assert!(left == right, "differs after conversion:\n{left}\n{right}");
    }
    store.close().await;

    // The rows took the compact form; only the texts it cannot hold stayed.
    let mut connection = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    let (texts, metadata, templates, subs): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(timestamp_text), count(response_metadata_json), \
         count(metadata_template_id), count(timestamp_sub_ms) FROM usage_events",
    )
    .fetch_one(&mut connection)
    .await
    .expect("count");
    connection.close().await.expect("close");
    assert_eq!(texts, events.iter().step_by(97).count() as i64);
    assert_eq!(metadata, events.iter().skip(5).step_by(89).count() as i64);
    assert!(templates > count * 9 / 10, "{templates}");
    assert_eq!(subs, count - texts);
    // A second open has nothing left to convert, and every hash still dedupes:
    // the stored events' and the one without an event.
    let store = SqliteStore::open(Options::new(&path))
        .await
        .expect("reopen again");
    assert_eq!(every_answer(&store, now_ms).await, before);
    let mut again = events.clone();
    let mut remembered = events[0].clone();
    remembered.event_hash = format!("{:064}", 42);
    again.push(remembered);
    let outcome = support::store_collected(&store, &again).await;
    assert_eq!((outcome.inserted, outcome.skipped), (0, count as u64 + 1));
    store.close().await;
    let mut connection = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    let (ledger, old): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM usage_event_ledger), \
         (SELECT count(*) FROM sqlite_master WHERE name = 'usage_event_identity_ledger')",
    )
    .fetch_one(&mut connection)
    .await
    .expect("ledger");
    connection.close().await.expect("close");
    assert_eq!((ledger, old), (count + 1, 0));
}

#[tokio::test]
async fn quota_windows_of_databases_from_before_the_compact_quota_rows() {
    use cpamp_domain::automation::quota::{Observation, QuotaStore, WindowInput};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("usage.sqlite");
    let store = SqliteStore::open(Options::new(&path)).await.expect("open");
    let accounts = [
        "usage-account-history:2:auth:6964782D31",
        "usage-account-history:2:auth:6964782D32",
    ];
    let mut observations = Vec::new();
    for step in 0..40_i64 {
        for (index, account) in accounts.iter().enumerate() {
            let at = END_MS - DAY_MS + step * 600_000 + index as i64;
            let window = |id: &str, minutes: i64, used: f64| WindowInput {
                provider_window_id: id.into(),
                window_mode: "fixed".into(),
                model_scope_kind: "family".into(),
                model_scope_key: "codex_main".into(),
                boundary_accuracy: "derived".into(),
                cycle_start_ms: Some(at - minutes * 30_000),
                cycle_end_ms: Some(at + minutes * 30_000),
                duration_seconds: Some(minutes * 60),
                used_percent: Some(used),
                ..WindowInput::default()
            };
            observations.push(Observation {
                account_key: (*account).into(),
                provider: "codex".into(),
                source: "response_header".into(),
                source_observation_id: format!("req-{step}-{index}"),
                inventory_scope_key: "codex:rate-limits".into(),
                inventory_mode: "partial".into(),
                observed_at_ms: at,
                windows: vec![
                    window("five-hour", 300, (step % 100) as f64),
                    window("weekly", 10_080, (step / 2) as f64),
                ],
                removals: Vec::new(),
            });
        }
    }
    store
        .write_observations(observations.clone(), END_MS)
        .await
        .expect("observations");
    let windows = |store: SqliteStore| async move {
        let mut answers = Vec::new();
        for account in accounts {
            let windows = store
                .account_windows(account, "codex")
                .await
                .expect("windows");
            assert_eq!(windows.len(), 2);
            answers.push(format!("{windows:?}"));
        }
        store.close().await;
        answers
    };
    let before = windows(store).await;

    // The earlier shapes: every cycle start stored as given; observations found
    // through an index of their whole
    // hash; before that, observation and snapshot rows spell out every text and
    // the hash as hex, snapshot rows have an index of their own; before that,
    // every snapshot row repeats its window's account key, and the newest applied
    // observation is found through an index.
    rewind(&path, 98, &[UNDO_0098]).await;
    rewind(
        &path,
        96,
        &["DROP INDEX idx_account_quota_observations_hash"],
    )
    .await;
    rewind(
        &path,
        95,
        &[
            "ALTER TABLE account_quota_observations RENAME TO compact_observations",
            "ALTER TABLE account_quota_snapshots RENAME TO compact_snapshots",
            "CREATE TABLE account_quota_observations (id INTEGER PRIMARY KEY, \
             observation_hash TEXT NOT NULL UNIQUE, account_key TEXT NOT NULL, provider TEXT NOT NULL, \
             source TEXT NOT NULL, source_observation_id TEXT NOT NULL DEFAULT '', \
             inventory_scope_key TEXT NOT NULL, inventory_mode TEXT NOT NULL, \
             observed_at_ms INTEGER NOT NULL, window_count INTEGER NOT NULL DEFAULT 0, \
             lifecycle_applied INTEGER NOT NULL DEFAULT 0, created_at_ms INTEGER NOT NULL)",
            "CREATE TABLE account_quota_snapshots (id INTEGER PRIMARY KEY, \
             observation_id INTEGER NOT NULL REFERENCES account_quota_observations (id) ON DELETE CASCADE, \
             window_id INTEGER NOT NULL REFERENCES account_quota_windows (id) ON DELETE CASCADE, \
             account_key TEXT NOT NULL, provider TEXT NOT NULL, provider_window_id TEXT NOT NULL, \
             provider_window_aliases_json TEXT NOT NULL DEFAULT '', window_kind TEXT NOT NULL DEFAULT '', \
             window_mode TEXT NOT NULL, model_scope_kind TEXT NOT NULL, \
             model_scope_key TEXT NOT NULL DEFAULT '', model_ids_json TEXT NOT NULL DEFAULT '', \
             source TEXT NOT NULL, source_observation_id TEXT NOT NULL DEFAULT '', \
             observed_at_ms INTEGER NOT NULL, boundary_accuracy TEXT NOT NULL, cycle_start_ms INTEGER, \
             cycle_end_ms INTEGER, duration_seconds INTEGER, used_percent REAL, remaining_percent REAL, \
             used_value REAL, limit_value REAL, quota_unit TEXT NOT NULL DEFAULT '', \
             reset_credits_available REAL, reset_credits_json TEXT NOT NULL DEFAULT '', \
             plan_type TEXT NOT NULL DEFAULT '', relationship_kind TEXT NOT NULL DEFAULT '', \
             container_provider_window_id TEXT NOT NULL DEFAULT '')",
            "CREATE INDEX idx_account_quota_snapshots_window ON account_quota_snapshots \
             (window_id, observed_at_ms, id)",
            "INSERT INTO account_quota_observations SELECT o.id, lower(hex(o.observation_hash)), \
             r.account_key, r.provider, r.source, o.source_observation_id, r.inventory_scope_key, \
             r.inventory_mode, o.observed_at_ms, o.window_count, o.lifecycle_applied, o.created_at_ms \
             FROM compact_observations o JOIN account_quota_observers r ON r.id = o.observer_id",
            "INSERT INTO account_quota_snapshots (observation_id, window_id, account_key, provider, \
             provider_window_id, provider_window_aliases_json, window_kind, window_mode, \
             model_scope_kind, model_scope_key, model_ids_json, source, source_observation_id, \
             observed_at_ms, boundary_accuracy, cycle_start_ms, cycle_end_ms, duration_seconds, \
             used_percent, remaining_percent, used_value, limit_value, quota_unit, \
             reset_credits_available, reset_credits_json, plan_type, relationship_kind, \
             container_provider_window_id) \
             SELECT s.observation_id, s.window_id, '', r.provider, h.provider_window_id, \
             h.provider_window_aliases_json, h.window_kind, h.window_mode, h.model_scope_kind, \
             h.model_scope_key, h.model_ids_json, r.source, o.source_observation_id, s.observed_at_ms, \
             h.boundary_accuracy, s.cycle_start_ms, s.cycle_end_ms, s.duration_seconds, s.used_percent, \
             s.remaining_percent, s.used_value, s.limit_value, h.quota_unit, s.reset_credits_available, \
             h.reset_credits_json, h.plan_type, h.relationship_kind, h.container_provider_window_id \
             FROM compact_snapshots s JOIN account_quota_shapes h ON h.id = s.shape_id \
             JOIN compact_observations o ON o.id = s.observation_id \
             JOIN account_quota_observers r ON r.id = o.observer_id ORDER BY s.observation_id",
            "DROP TABLE compact_snapshots",
            "DROP TABLE compact_observations",
            "DROP TABLE account_quota_shapes",
            "DROP TABLE account_quota_observers",
        ],
    )
    .await;
    rewind(
        &path,
        33,
        &[
            "DROP TABLE account_quota_newest",
            "CREATE INDEX idx_account_quota_observations_scope ON account_quota_observations \
             (account_key, provider, inventory_scope_key, lifecycle_applied, observed_at_ms)",
        ],
    )
    .await;
    rewind(
        &path,
        32,
        &["UPDATE account_quota_snapshots SET account_key = \
           (SELECT w.account_key FROM account_quota_windows w WHERE w.id = window_id)"],
    )
    .await;
    let store = SqliteStore::open(Options::new(&path))
        .await
        .expect("reopen");
    assert_eq!(windows(store).await, before);
    let url = format!("sqlite://{}", path.display());
    let mut connection = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    let (rows, observation_rows, hashes, shapes, observers, hash_indexes): (
        i64,
        i64,
        i64,
        i64,
        i64,
        String,
    ) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM account_quota_snapshots), \
             (SELECT count(*) FROM account_quota_observations), \
             (SELECT count(*) FROM account_quota_observations WHERE length(observation_hash) = 32), \
             (SELECT count(*) FROM account_quota_shapes), \
             (SELECT count(*) FROM account_quota_observers), \
             (SELECT group_concat(name) FROM sqlite_master WHERE type = 'index' \
              AND tbl_name = 'account_quota_observations')",
        )
        .fetch_one(&mut connection)
        .await
        .expect("count");
    assert_eq!((rows, observation_rows, hashes), (160, 80, 80));
    // One set of texts per window id; one origin per account.
    assert_eq!((shapes, observers), (2, 2));
    // Observations are found through their hash's first bytes only.
    assert_eq!(hash_indexes, "idx_account_quota_observations_hash");
    let (newest, index): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM account_quota_newest WHERE observed_at_ms >= ?), \
         (SELECT count(*) FROM sqlite_master WHERE name = 'idx_account_quota_observations_scope')",
    )
    .bind(END_MS - DAY_MS + 39 * 600_000)
    .fetch_one(&mut connection)
    .await
    .expect("newest");
    connection.close().await.expect("close");
    assert_eq!((newest, index), (2, 0));

    // Evidence older than the newest applied one still does not move the
    // windows' figures; newer evidence does.
    let store = SqliteStore::open(Options::new(&path))
        .await
        .expect("reopen");
    // The converted hashes still recognise every observation stored before.
    let again = store
        .write_observations(observations, END_MS)
        .await
        .expect("again");
    assert_eq!(again, vec![0; 80]);
    let report = |at: i64, used: f64| Observation {
        account_key: accounts[0].into(),
        provider: "codex".into(),
        source: "response_header".into(),
        source_observation_id: format!("late-{at}"),
        inventory_scope_key: "codex:rate-limits".into(),
        inventory_mode: "partial".into(),
        observed_at_ms: at,
        windows: vec![WindowInput {
            provider_window_id: "five-hour".into(),
            window_mode: "fixed".into(),
            model_scope_kind: "family".into(),
            model_scope_key: "codex_main".into(),
            boundary_accuracy: "derived".into(),
            cycle_start_ms: Some(at - 9_000_000),
            cycle_end_ms: Some(at + 9_000_000),
            duration_seconds: Some(18_000),
            used_percent: Some(used),
            ..WindowInput::default()
        }],
        removals: Vec::new(),
    };
    store
        .write_observations(vec![report(END_MS - 2 * DAY_MS, 77.0)], END_MS)
        .await
        .expect("older");
    let five_hour = |windows: &[cpamp_domain::automation::quota::StoredWindow]| {
        windows
            .iter()
            .find(|window| window.input.provider_window_id == "five-hour")
            .and_then(|window| window.input.used_percent)
    };
    let unchanged = store
        .account_windows(accounts[0], "codex")
        .await
        .expect("windows");
    assert_eq!(five_hour(&unchanged), Some(39.0));
    store
        .write_observations(vec![report(END_MS, 88.0)], END_MS)
        .await
        .expect("newer");
    let moved = store
        .account_windows(accounts[0], "codex")
        .await
        .expect("windows");
    assert_eq!(five_hour(&moved), Some(88.0));
    store.close().await;
}

#[tokio::test]
async fn ledger_rows_of_a_database_from_before_they_left_the_creation_time_to_the_event() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("usage.sqlite");
    let count = 600;
    let store = seeded(&path, count).await;
    store.close().await;
    // The earlier shape: every ledger row repeats its event row's creation time.
    rewind(
        &path,
        97,
        &["UPDATE usage_event_ledger SET first_seen_at_ms = \
           (SELECT created_at_ms FROM usage_events WHERE id = event_id) WHERE event_id IS NOT NULL"],
    )
    .await;
    let url = format!("sqlite://{}", path.display());
    let mut connection = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    let timed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM usage_event_ledger WHERE first_seen_at_ms <> 0")
            .fetch_one(&mut connection)
            .await
            .expect("timed");
    connection.close().await.expect("close");
    assert_eq!(timed, count as i64);

    let store = SqliteStore::open(Options::new(&path))
        .await
        .expect("reopen");
    // Every stored event is still known: storing them again adds nothing.
    let events = synth::events(11, count, END_MS, 3);
    let outcome = support::store_in_batches(&store, &events, 200, false).await;
    assert_eq!((outcome.inserted, outcome.skipped), (0, count as u64));
    store.close().await;
    let mut connection = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    let (rows, timed): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(nullif(first_seen_at_ms, 0)) FROM usage_event_ledger",
    )
    .fetch_one(&mut connection)
    .await
    .expect("ledger");
    connection.close().await.expect("close");
    assert_eq!((rows, timed), (count as i64, 0));
}

#[tokio::test]
async fn quota_cycle_starts_of_a_database_from_before_they_were_left_to_the_end() {
    use cpamp_domain::automation::quota::{Observation, QuotaStore, WindowInput};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("usage.sqlite");
    let store = SqliteStore::open(Options::new(&path)).await.expect("open");
    let account = "usage-account-history:2:auth:6964782D31";
    let window =
        |id: &str, start: Option<i64>, end: Option<i64>, seconds: Option<i64>| WindowInput {
            provider_window_id: id.into(),
            window_mode: "fixed".into(),
            model_scope_kind: "family".into(),
            model_scope_key: "codex_main".into(),
            boundary_accuracy: "derived".into(),
            cycle_start_ms: start,
            cycle_end_ms: end,
            duration_seconds: seconds,
            used_percent: Some(12.0),
            ..WindowInput::default()
        };
    let mut observations = Vec::new();
    for step in 0..6_i64 {
        let at = END_MS - DAY_MS + step * 3_600_000;
        observations.push(Observation {
            account_key: account.into(),
            provider: "codex".into(),
            source: "response_header".into(),
            source_observation_id: format!("req-{step}"),
            inventory_scope_key: "codex:rate-limits".into(),
            inventory_mode: "partial".into(),
            observed_at_ms: at,
            windows: vec![
                // Start = end - duration: left to them.
                window(
                    "five-hour",
                    Some(at - 9_000_000),
                    Some(at + 9_000_000),
                    Some(18_000),
                ),
                // No start although end and duration are known.
                window("weekly", None, Some(at + 1_000), Some(604_800)),
                // A start the others do not give.
                window("monthly", Some(at - 5), Some(at + 7), Some(3)),
                // No duration.
                window("window-x", Some(at - 5), Some(at + 7), None),
                // Past the bounds of exact arithmetic.
                window("window-y", Some(i64::MIN), Some(i64::MAX), Some(i64::MAX)),
            ],
            removals: Vec::new(),
        });
    }
    store
        .write_observations(observations, END_MS)
        .await
        .expect("observations");
    let windows = |store: SqliteStore| async move {
        let windows = store
            .account_windows(account, "codex")
            .await
            .expect("windows");
        store.close().await;
        format!("{windows:?}")
    };
    let before = windows(store).await;
    assert!(before.contains("cycle_start_ms: Some(-9223372036854775808)"));
    let stored = |path: std::path::PathBuf| async move {
        let url = format!("sqlite://{}", path.display());
        let mut connection = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("connect");
        let forms: Vec<(String, i64)> = sqlx::query_as(
            "SELECT typeof(cycle_start_ms), count(*) FROM account_quota_snapshots \
             GROUP BY 1 ORDER BY 1",
        )
        .fetch_all(&mut connection)
        .await
        .expect("forms");
        connection.close().await.expect("close");
        forms
    };
    let compact = vec![
        ("integer".to_string(), 18),
        ("null".to_string(), 6),
        ("real".to_string(), 6),
    ];
    assert_eq!(stored(path.clone()).await, compact);

    // The earlier shape: every start as it was given.
    rewind(&path, 98, &[UNDO_0098]).await;
    assert_eq!(
        stored(path.clone()).await,
        vec![("integer".to_string(), 24), ("null".to_string(), 6)]
    );
    let store = SqliteStore::open(Options::new(&path))
        .await
        .expect("reopen");
    assert_eq!(windows(store).await, before);
    assert_eq!(stored(path.clone()).await, compact);
}

/// Decoded realistic CPA payloads (`cpamp_testkit::Traffic`) over the three
/// days before `now_ms`, with nanosecond timestamps.
fn realistic_events(seed: u64, count: i64, now_ms: i64) -> Vec<cpamp_domain::event::UsageEvent> {
    use cpamp_domain::event::Decoded;
    let mut traffic = cpamp_testkit::Traffic::new(seed);
    (0..count)
        .map(|index| {
            let at_ms = now_ms - 3 * DAY_MS + index * (3 * DAY_MS / count);
            let nanos = i128::from(at_ms) * 1_000_000 + 123_457;
            match cpamp_domain::decode::decode(&traffic.payload(nanos), now_ms) {
                Decoded::Event(event) => *event,
                other => panic!("realistic payload did not decode: {other:?}"),
            }
        })
        .collect()
}

/// Every row of `sql` over the closed database at `path`, each value with its
/// SQLite type.
async fn dump(path: &std::path::Path, sql: &'static str) -> Vec<String> {
    use sqlx::{Row, ValueRef};
    let url = format!("sqlite://{}", path.display());
    let mut connection = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    let rows = sqlx::query(sql)
        .fetch_all(&mut connection)
        .await
        .expect(sql);
    connection.close().await.expect("close");
    rows.iter()
        .map(|row| {
            (0..row.len())
                .map(|index| {
                    let raw = row.try_get_raw(index).expect("value");
                    if raw.is_null() {
                        return "NULL".to_string();
                    }
                    let kind = raw.type_info().to_string();
                    match kind.as_str() {
                        "INTEGER" => format!("i{}", row.get::<i64, _>(index)),
                        "REAL" => format!("r{}", row.get::<f64, _>(index)),
                        "TEXT" => format!("t{:?}", row.get::<String, _>(index)),
                        _ => format!("b{:?}", row.get::<Vec<u8>, _>(index)),
                    }
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

const NORMALIZED: &str = "SELECT id, normalized_uncached_input_tokens, \
     normalized_total_input_tokens, normalized_cache_read_tokens, \
     normalized_cache_creation_tokens FROM usage_events ORDER BY id";

#[tokio::test]
async fn normalized_tokens_of_a_database_from_before_they_were_left_to_the_raw_counts() {
    use cpamp_domain::event::CacheInputMode;

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("usage.sqlite");
    let now_ms = END_MS;
    let count = 1_500_i64;
    let mut events = realistic_events(0x70c5, count, now_ms);
    // Counts the raw counters do not give (as an import can carry), no mode,
    // and counters whose computation overflows.
    for event in events.iter_mut().step_by(7) {
        event.normalized.total_input += 1;
        event.normalized.cache_creation = 3;
    }
    for event in events.iter_mut().skip(3).step_by(11) {
        event.cache_input_mode = None;
    }
    for (index, event) in events.iter_mut().skip(5).step_by(13).enumerate() {
        event.cache_input_mode = Some(if index % 2 == 0 {
            CacheInputMode::SeparateFromInput
        } else {
            CacheInputMode::IncludedInInput
        });
        event.tokens.input = i64::MAX - 1;
        event.tokens.cached = i64::MIN;
        event.tokens.cache = i64::MAX;
        event.tokens.cache_read = 5;
        event.normalized.uncached_input = i64::MAX - 1;
        event.normalized.total_input = i64::MAX;
        event.normalized.cache_read = i64::MAX;
    }
    let store = SqliteStore::open(Options::new(&path)).await.expect("open");
    support::store_in_batches(&store, &events, 250, false).await;
    let before = every_answer(&store, now_ms).await;
    store.close().await;
    let columns = dump(&path, NORMALIZED).await;
    // The columns give every event's counts back, NULL without a mode.
    let expected: Vec<String> = events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let n = &event.normalized;
            match event.cache_input_mode {
                Some(_) => format!(
                    "i{}|i{}|i{}|i{}|i{}",
                    index + 1,
                    n.uncached_input,
                    n.total_input,
                    n.cache_read,
                    n.cache_creation
                ),
                None => format!("i{}|NULL|NULL|NULL|NULL", index + 1),
            }
        })
        .collect();
    assert_eq!(columns, expected);
    let known = events
        .iter()
        .filter(|e| e.cache_input_mode.is_some())
        .count();
    let stored = "SELECT count(normalized_uncached_input_stored), \
         count(normalized_total_input_stored), count(normalized_cache_read_stored), \
         count(normalized_cache_creation_stored) FROM usage_events";
    let compact = dump(&path, stored).await;
    // Only the counts the columns cannot compute are stored.
    let differing = events.iter().step_by(7).count();
    let overflowing = events.iter().skip(5).step_by(13).count();
    assert!(
        compact[0].split('|').all(|count| {
            let count: usize = count[1..].parse().expect("count");
            count <= differing + overflowing
        }),
        "{compact:?}"
    );

    // The earlier shape: every count stored as the decoder gave it.
    rewind(
        &path,
        120,
        &[
            "UPDATE usage_events SET \
             normalized_uncached_input_stored = normalized_uncached_input_tokens, \
             normalized_total_input_stored = normalized_total_input_tokens, \
             normalized_cache_read_stored = normalized_cache_read_tokens, \
             normalized_cache_creation_stored = normalized_cache_creation_tokens",
            "ALTER TABLE usage_events DROP COLUMN normalized_uncached_input_tokens",
            "ALTER TABLE usage_events DROP COLUMN normalized_total_input_tokens",
            "ALTER TABLE usage_events DROP COLUMN normalized_cache_read_tokens",
            "ALTER TABLE usage_events DROP COLUMN normalized_cache_creation_tokens",
            "ALTER TABLE usage_events RENAME COLUMN normalized_uncached_input_stored \
             TO normalized_uncached_input_tokens",
            "ALTER TABLE usage_events RENAME COLUMN normalized_total_input_stored \
             TO normalized_total_input_tokens",
            "ALTER TABLE usage_events RENAME COLUMN normalized_cache_read_stored \
             TO normalized_cache_read_tokens",
            "ALTER TABLE usage_events RENAME COLUMN normalized_cache_creation_stored \
             TO normalized_cache_creation_tokens",
        ],
    )
    .await;
    assert_eq!(dump(&path, NORMALIZED).await, columns);
    let old = dump(
        &path,
        "SELECT count(normalized_total_input_tokens) FROM usage_events",
    )
    .await;
    assert_eq!(old, vec![format!("i{known}")]);

    assert_reopened_answers_match(&path, now_ms, &before).await;
    assert_eq!(dump(&path, NORMALIZED).await, columns);
    assert_eq!(dump(&path, stored).await, compact);
}

const IDS: &str = "SELECT id, request_id, header_trace_id FROM usage_events ORDER BY id";

#[tokio::test]
async fn request_and_trace_ids_of_a_database_from_before_hex_ids_were_stored_as_bytes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("usage.sqlite");
    let now_ms = END_MS;
    let count = 1_500_i64;
    let mut events = realistic_events(0x1d5, count, now_ms);
    // Ids that only look like the hex forms, and ids that are absent.
    let others = [
        "0000ABCD",
        "0000abc",
        "0000abcde",
        "",
        "ü000abcd",
        "26D3E413-9ED0-4903-A9CA-AAFADB92D339",
        "26d3e4139ed04903a9caaafadb92d339",
        "26d3e413-9ed0-4903-a9ca-aafadb92d33",
        "{26d3e413-9ed0-4903-a9ca-aafadb92d339}",
    ];
    for (index, event) in events.iter_mut().step_by(17).enumerate() {
        let other = others[index % others.len()];
        event.request_id = Some(other.to_string());
        event.header_trace_id = Some(other.to_string());
    }
    for event in events.iter_mut().skip(4).step_by(19) {
        event.request_id = None;
        event.header_trace_id = None;
    }
    let store = SqliteStore::open(Options::new(&path)).await.expect("open");
    support::store_in_batches(&store, &events, 250, false).await;
    let before = every_answer(&store, now_ms).await;
    store.close().await;
    let columns = dump(&path, IDS).await;
    // The columns give every event's ids back.
    let text = |value: &Option<String>| match value.as_deref() {
        None | Some("") => "NULL".to_string(),
        Some(text) => format!("t{text:?}"),
    };
    let expected: Vec<String> = events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            format!(
                "i{}|{}|{}",
                index + 1,
                text(&event.request_id),
                text(&event.header_trace_id)
            )
        })
        .collect();
    assert_eq!(columns, expected);
    let forms = "SELECT typeof(request_key), typeof(header_trace), count(*) FROM usage_events \
         GROUP BY 1, 2 ORDER BY 1, 2";
    let compact = dump(&path, forms).await;
    let blobs = |forms: &[String]| -> (i64, i64) {
        let mut counts = (0, 0);
        for row in forms {
            let parts: Vec<&str> = row.split('|').collect();
            let rows: i64 = parts[2][1..].parse().expect("count");
            if parts[0] == "t\"blob\"" {
                counts.0 += rows;
            }
            if parts[1] == "t\"blob\"" {
                counts.1 += rows;
            }
        }
        counts
    };
    let (requests, traces) = blobs(&compact);
    assert!(requests > count * 3 / 4, "{compact:?}");
    assert!(traces > count / 4, "{compact:?}");

    // The earlier shape: every id stored as its text.
    rewind(
        &path,
        121,
        &[
            "UPDATE usage_events SET request_key = request_id, header_trace = header_trace_id",
            "ALTER TABLE usage_events DROP COLUMN request_id",
            "ALTER TABLE usage_events DROP COLUMN header_trace_id",
            "ALTER TABLE usage_events RENAME COLUMN request_key TO request_id",
            "ALTER TABLE usage_events RENAME COLUMN header_trace TO header_trace_id",
        ],
    )
    .await;
    assert_eq!(dump(&path, IDS).await, columns);
    assert_eq!(
        blobs(
            &dump(
                &path,
                "SELECT typeof(request_id), typeof(header_trace_id), count(*) FROM usage_events \
                 GROUP BY 1, 2 ORDER BY 1, 2"
            )
            .await
        ),
        (0, 0)
    );

    assert_reopened_answers_match(&path, now_ms, &before).await;
    assert_eq!(dump(&path, IDS).await, columns);
    assert_eq!(dump(&path, forms).await, compact);
}

#[tokio::test]
async fn latency_samples_of_a_database_from_before_days_were_read_from_their_hours() {
    use cpamp_domain::analytics::monitoring::{Include, MonitoringRequest, monitoring};
    use cpamp_domain::analytics::query::Scope;
    use cpamp_domain::analytics::time::{Granularity, Zone};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("usage.sqlite");
    let store = seeded(&path, 3_000).await;
    // Whole UTC days (read from day blocks) and Kolkata days (hours and quarters).
    let percentiles = |store: SqliteStore| async move {
        let mut answers = Vec::new();
        for (zone, from, to) in [
            ("UTC", END_MS - 3 * DAY_MS, END_MS),
            ("UTC", END_MS - 3 * DAY_MS + 7 * 60_000 + 3, END_MS - 11),
            ("Asia/Kolkata", END_MS - 3 * DAY_MS, END_MS),
        ] {
            let response = monitoring(
                &store,
                MonitoringRequest {
                    scope: Scope::time_only(from, to),
                    now_ms: END_MS,
                    zone: Zone::parse(zone).expect("zone"),
                    granularity: Granularity::resolve(Some("day"), from, to),
                    include: Include {
                        summary: true,
                        percentiles: true,
                        timeline: true,
                        ..Include::default()
                    },
                    generated_at_ms: END_MS,
                },
            )
            .await
            .expect("query");
            let summary = response.summary.expect("summary");
            answers.push(format!(
                "{:?} {:?} {:?} {:?}",
                summary.p50_latency_ms,
                summary.p95_latency_ms,
                summary.p95_ttft_ms,
                response
                    .timeline
                    .iter()
                    .map(|point| (point.bucket_ms, point.p95_latency_ms, point.p95_ttft_ms))
                    .collect::<Vec<_>>()
            ));
        }
        store.close().await;
        answers
    };
    let before = percentiles(store).await;
    assert!(before[0].contains("Some("), "{before:?}");

    // The earlier shape: day blocks with samples of their own (here the runs
    // of their hours, each a run of the day), in the layout from before `0132`.
    rewind(&path, 122, &legacy_samples(&path, true, true).await).await;
    assert!(
        dump(&path, "SELECT count(*) FROM usage_rollup_latency_d").await[0] != "i0",
        "day samples to convert"
    );
    let store = SqliteStore::open(Options::new(&path))
        .await
        .expect("reopen");
    assert_eq!(percentiles(store).await, before);
    assert_eq!(
        dump(
            &path,
            "SELECT count(*) FROM sqlite_master WHERE name LIKE 'usage_rollup_latency_%'"
        )
        .await,
        vec!["i0".to_string()]
    );
}

const STATUSES: &str = "SELECT id, fail_status_code FROM usage_events ORDER BY id";

#[tokio::test]
async fn status_codes_of_a_database_from_before_status_200_was_left_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("usage.sqlite");
    let now_ms = END_MS;
    let count = 1_200_i64;
    let mut events = realistic_events(0x200, count, now_ms);
    // No code, and codes next to the ones left out.
    for (index, event) in events.iter_mut().step_by(9).enumerate() {
        event.fail_status_code = [None, Some(201), Some(2000), Some(1)][index % 4];
    }
    let store = SqliteStore::open(Options::new(&path)).await.expect("open");
    support::store_in_batches(&store, &events, 250, false).await;
    let before = every_answer(&store, now_ms).await;
    store.close().await;
    let columns = dump(&path, STATUSES).await;
    let expected: Vec<String> = events
        .iter()
        .enumerate()
        .map(|(index, event)| match event.fail_status_code {
            Some(code) if code > 0 => format!("i{}|i{code}", index + 1),
            _ => format!("i{}|NULL", index + 1),
        })
        .collect();
    assert_eq!(columns, expected);
    let forms =
        "SELECT typeof(fail_status_stored), count(*) FROM usage_events GROUP BY 1 ORDER BY 1";
    let compact = dump(&path, forms).await;
    let successes = events
        .iter()
        .filter(|event| event.fail_status_code == Some(200))
        .count();
    assert!(successes as i64 > count * 3 / 4, "{successes}");
    assert!(
        compact.contains(&format!("t\"null\"|i{successes}")),
        "{compact:?}"
    );

    // The earlier shape: every code stored as it is.
    rewind(
        &path,
        123,
        &[
            "UPDATE usage_events SET fail_status_stored = fail_status_code",
            "ALTER TABLE usage_events DROP COLUMN fail_status_code",
            "ALTER TABLE usage_events RENAME COLUMN fail_status_stored TO fail_status_code",
        ],
    )
    .await;
    assert_eq!(dump(&path, STATUSES).await, columns);

    assert_reopened_answers_match(&path, now_ms, &before).await;
    assert_eq!(dump(&path, STATUSES).await, columns);
    assert_eq!(dump(&path, forms).await, compact);
}

#[tokio::test]
async fn events_of_a_database_from_before_the_event_indexes_left_the_id_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("usage.sqlite");
    let now_ms = END_MS;
    let events = realistic_events(0x124, 1_000, now_ms);
    let store = SqliteStore::open(Options::new(&path)).await.expect("open");
    support::store_in_batches(&store, &events, 250, false).await;
    let before = every_answer(&store, now_ms).await;
    store.close().await;
    let indexes = "SELECT name, sql FROM sqlite_master \
         WHERE type = 'index' AND tbl_name = 'usage_events' ORDER BY name";
    let current = dump(&path, indexes).await;
    assert_eq!(current.len(), 3, "{current:?}");
    assert!(
        current.iter().all(|index| !index.contains(", id")),
        "{current:?}"
    );

    // The earlier shape: the id named as the indexes' last column.
    rewind(
        &path,
        124,
        &[
            "DROP INDEX idx_usage_events_timestamp",
            "CREATE INDEX idx_usage_events_timestamp ON usage_events (timestamp_ms, id)",
            "DROP INDEX idx_usage_events_model_time",
            "CREATE INDEX idx_usage_events_model_time \
             ON usage_events (coalesce(requested_model_id, model_id), timestamp_ms, id)",
            "DROP INDEX idx_usage_events_failed_time",
            "CREATE INDEX idx_usage_events_failed_time ON usage_events (timestamp_ms, id) \
             WHERE failed = 1",
        ],
    )
    .await;
    assert!(
        dump(&path, indexes)
            .await
            .iter()
            .all(|index| index.contains(", id")),
    );

    assert_reopened_answers_match(&path, now_ms, &before).await;
    assert_eq!(dump(&path, indexes).await, current);
}

const CREATED: &str = "SELECT id, created_at_ms FROM usage_events ORDER BY id";

#[tokio::test]
async fn creation_times_of_a_database_from_before_they_were_kept_after_the_event() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("usage.sqlite");
    let now_ms = END_MS;
    let count = 1_000_i64;
    let mut events = realistic_events(0x125, count, now_ms);
    // Created before the event, at the same instant, and times no difference holds.
    for (index, event) in events.iter_mut().step_by(7).enumerate() {
        event.created_at_ms = match index % 5 {
            0 => event.timestamp_ms - 86_400_000,
            1 => event.timestamp_ms,
            2 => i64::MAX,
            3 => i64::MIN,
            _ => 4_000_000_000_000_000_001,
        };
    }
    let store = SqliteStore::open(Options::new(&path)).await.expect("open");
    support::store_in_batches(&store, &events, 250, false).await;
    let before = every_answer(&store, now_ms).await;
    store.close().await;
    let columns = dump(&path, CREATED).await;
    let expected: Vec<String> = events
        .iter()
        .enumerate()
        .map(|(index, event)| format!("i{}|i{}", index + 1, event.created_at_ms))
        .collect();
    assert_eq!(columns, expected);
    let forms = "SELECT typeof(created_at_delta), count(*) FROM usage_events GROUP BY 1 ORDER BY 1";
    let compact = dump(&path, forms).await;
    let far = events.iter().step_by(7).skip(2).step_by(5).count()
        + events.iter().step_by(7).skip(3).step_by(5).count()
        + events.iter().step_by(7).skip(4).step_by(5).count();
    assert_eq!(
        compact,
        vec![
            format!("t\"integer\"|i{}", count as usize - far),
            format!("t\"text\"|i{far}")
        ]
    );

    // The earlier shape: every creation time stored whole.
    rewind(
        &path,
        125,
        &[
            "UPDATE usage_events SET created_at_delta = created_at_ms",
            "ALTER TABLE usage_events DROP COLUMN created_at_ms",
            "ALTER TABLE usage_events RENAME COLUMN created_at_delta TO created_at_ms",
        ],
    )
    .await;
    assert_eq!(dump(&path, CREATED).await, columns);

    assert_reopened_answers_match(&path, now_ms, &before).await;
    assert_eq!(dump(&path, CREATED).await, columns);
    assert_eq!(dump(&path, forms).await, compact);
}

const TIMESTAMPS: &str =
    "SELECT id, timestamp_ms, timestamp_text, timestamp_sub_ms FROM usage_events ORDER BY id";

#[tokio::test]
async fn timestamps_of_a_database_from_before_only_digits_beyond_the_millisecond_were_kept() {
    use cpamp_domain::event::format_timestamp_ms;

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("usage.sqlite");
    let now_ms = END_MS;
    let count = 1_000_i64;
    let mut events = realistic_events(0x126, count, now_ms);
    // One to six digits beyond the millisecond, with leading and trailing zeros.
    let extra = ["1", "05", "100", "0007", "12340", "000001", "9", "000000"];
    for (index, event) in events.iter_mut().step_by(3).enumerate() {
        let canonical = format_timestamp_ms(event.timestamp_ms);
        event.timestamp = format!(
            "{}.{:03}{}Z",
            &canonical[..19],
            event.timestamp_ms.rem_euclid(1_000),
            extra[index % extra.len()]
        );
    }
    let store = SqliteStore::open(Options::new(&path)).await.expect("open");
    support::store_in_batches(&store, &events, 250, false).await;
    let before = every_answer(&store, now_ms).await;
    store.close().await;
    let answers = before.join("\n");
    for event in &events {
        assert!(answers.contains(&event.timestamp), "{}", event.timestamp);
    }
    let compact = dump(&path, TIMESTAMPS).await;
    // Every text is rebuilt from the digits beyond its millisecond: all fit
    // three bytes.
    let (texts, large) = (
        dump(&path, "SELECT count(timestamp_text) FROM usage_events").await,
        dump(
            &path,
            "SELECT count(*) FROM usage_events WHERE timestamp_sub_ms >= 8388608",
        )
        .await,
    );
    assert_eq!((texts[0].as_str(), large[0].as_str()), ("i0", "i0"));

    // The earlier shape: `10^n` plus every fraction digit.
    rewind(
        &path,
        126,
        &["UPDATE usage_events SET timestamp_sub_ms = CASE \
           WHEN timestamp_sub_ms >= 1000000 THEN 1000000000 + (timestamp_ms % 1000) * 1000000 + timestamp_sub_ms - 1000000 \
           WHEN timestamp_sub_ms >= 100000 THEN 100000000 + (timestamp_ms % 1000) * 100000 + timestamp_sub_ms - 100000 \
           WHEN timestamp_sub_ms >= 10000 THEN 10000000 + (timestamp_ms % 1000) * 10000 + timestamp_sub_ms - 10000 \
           WHEN timestamp_sub_ms >= 1000 THEN 1000000 + (timestamp_ms % 1000) * 1000 + timestamp_sub_ms - 1000 \
           WHEN timestamp_sub_ms >= 100 THEN 100000 + (timestamp_ms % 1000) * 100 + timestamp_sub_ms - 100 \
           ELSE 10000 + (timestamp_ms % 1000) * 10 + timestamp_sub_ms - 10 END \
           WHERE timestamp_sub_ms IS NOT NULL"],
    )
    .await;
    assert_ne!(dump(&path, TIMESTAMPS).await, compact);

    assert_reopened_answers_match(&path, now_ms, &before).await;
    assert_eq!(dump(&path, TIMESTAMPS).await, compact);
}

/// Reopens the database at `path` (running what the migrations leave to the store)
/// and checks that every answer is the one given before the conversion.
async fn assert_reopened_answers_match(path: &std::path::Path, now_ms: i64, before: &[String]) {
    let store = SqliteStore::open(Options::new(path)).await.expect("reopen");
    let after = every_answer(&store, now_ms).await;
    store.close().await;
    assert_eq!(after.len(), before.len());
    for (left, right) in before.iter().zip(&after) {
        assert!(left == right, "differs after conversion:\n{left}\n{right}");
    }
}

/// The heatmap and hourly distribution of the last three days in several zones
/// (whole-hour, half-hour, 45-minute and daylight-saving offsets) and scopes,
/// as JSON.
async fn heat_answers(store: &SqliteStore) -> Vec<String> {
    use cpamp_domain::analytics::monitoring::{Include, MonitoringRequest, monitoring};
    use cpamp_domain::analytics::query::Scope;
    use cpamp_domain::analytics::time::{Granularity, Zone};

    let whole = Scope::time_only(END_MS - 3 * DAY_MS, END_MS);
    let ragged = Scope::time_only(END_MS - 3 * DAY_MS + 7 * 60_000 + 3, END_MS - 11);
    let mut model = whole.clone();
    model.filters.models = vec!["gpt-5".to_string(), "claude-sonnet-4-5".to_string()];
    let mut failed = ragged.clone();
    failed.filters.failed_only = true;
    let mut succeeded = whole.clone();
    succeeded.filters.include_failed = false;
    let mut answers = Vec::new();
    for zone in [
        "UTC",
        "Asia/Shanghai",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "America/New_York",
        "Australia/Lord_Howe",
    ] {
        for scope in [&whole, &ragged, &model, &failed, &succeeded] {
            let response = monitoring(
                store,
                MonitoringRequest {
                    scope: scope.clone(),
                    now_ms: END_MS,
                    zone: Zone::parse(zone).expect("zone"),
                    granularity: Granularity::Day,
                    include: Include {
                        heatmap: true,
                        hourly_distribution: true,
                        ..Include::default()
                    },
                    generated_at_ms: END_MS,
                },
            )
            .await
            .expect("query");
            answers.push(serde_json::to_string(&response).expect("json"));
        }
    }
    answers
}

/// Rewrites the heat blobs of the closed database at `path` (`0130` layout,
/// `crates/storage/src/rollup.rs`, `encode_heat`) in the layout they had before
/// `0130`: per entry, as zigzag varints, the reduced identity, model,
/// billing model, tier, context band, failed flag, calls, input, output,
/// reasoning, cached, cache read, cache creation, total, latency sum, latency
/// samples, zero-token calls and last seen − hour. Entries keep their order; the
/// fields the heat layout no longer keeps are written as 0 (no reader used them).
async fn heat_blobs_back_to_generic_entries(path: &std::path::Path) {
    fn take(bytes: &[u8], at: &mut usize) -> Option<u64> {
        let mut value = 0_u64;
        let mut shift = 0;
        loop {
            let byte = *bytes.get(*at)?;
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(value);
            }
            shift += 7;
        }
    }
    fn signed(value: u64) -> i64 {
        ((value >> 1) as i64) ^ -((value & 1) as i64)
    }
    fn put(out: &mut Vec<u8>, value: i64) {
        let mut value = ((value << 1) ^ (value >> 63)) as u64;
        while value >= 0x80 {
            out.push((value & 0x7f) as u8 | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }
    let url = format!("sqlite://{}", path.display());
    let mut connection = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    let blobs: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT bucket_ms, entries FROM usage_rollup_heat_h")
            .fetch_all(&mut connection)
            .await
            .expect("heat blobs");
    assert!(!blobs.is_empty());
    for (bucket, blob) in blobs {
        let at = &mut 0;
        let identities: Vec<i64> = (0..take(&blob, at).expect("count"))
            .map(|_| signed(take(&blob, at).expect("identity")))
            .collect();
        let bands: Vec<[i64; 4]> = (0..take(&blob, at).expect("count"))
            .map(|_| {
                [0, 1, 2, 3].map(|field| {
                    let value = take(&blob, at).expect("band");
                    if field == 3 {
                        value as i64
                    } else {
                        signed(value)
                    }
                })
            })
            .collect();
        let bits = usize::BITS - (identities.len() - 1).leading_zeros();
        let mut out = Vec::new();
        while *at < blob.len() {
            let code = take(&blob, at).expect("code");
            let band = bands[(code >> bits >> 1) as usize];
            put(&mut out, identities[(code & ((1 << bits) - 1)) as usize]);
            for value in band {
                put(&mut out, value);
            }
            put(&mut out, ((code >> bits) & 1) as i64);
            // Three bytes of 3-bit length codes, then each sum's low bytes.
            let codes = u32::from_le_bytes([blob[*at], blob[*at + 1], blob[*at + 2], 0]);
            *at += 3;
            let sums: Vec<i64> = (0..7)
                .map(|index| {
                    let length = [0, 1, 2, 3, 4, 5, 6, 8][(codes >> (3 * index) & 7) as usize];
                    let mut word = [0_u8; 8];
                    word[..length].copy_from_slice(&blob[*at..*at + length]);
                    *at += length;
                    signed(u64::from_le_bytes(word))
                })
                .collect();
            // calls, input, output, reasoning, cached, cache read, cache creation,
            // total, latency sum, latency samples, zero-token calls, last seen.
            for value in [
                sums[0], sums[1], sums[2], 0, sums[3], sums[4], sums[5], sums[6], 0, 0, 0, 0,
            ] {
                put(&mut out, value);
            }
        }
        sqlx::query("UPDATE usage_rollup_heat_h SET entries = ? WHERE bucket_ms = ?")
            .bind(out)
            .bind(bucket)
            .execute(&mut connection)
            .await
            .expect("rewrite heat blob");
    }
    connection.close().await.expect("close");
}

#[tokio::test]
async fn heatmaps_of_a_database_from_before_compact_heat_blobs() {
    use cpamp_domain::prices::{ModelPrice, PriceStore, Rate, Rates};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("usage.sqlite");
    let store = seeded(&path, 3_000).await;
    // Priced models, so costs are sums of many parts.
    let price = |prompt: f64, completion: f64| ModelPrice {
        rates: Rates {
            prompt: Rate::set(prompt),
            completion: Rate::set(completion),
            cache_read: Rate::set(prompt / 10.0),
            ..Rates::default()
        },
        source: "manual".to_string(),
        updated_at_ms: 7,
        ..ModelPrice::default()
    };
    store
        .replace_prices(vec![
            ("gpt-5".into(), price(1.25, 10.0)),
            ("gpt-5-mini".into(), price(0.25, 2.0)),
            ("claude-sonnet-4-5".into(), price(3.0, 15.0)),
            ("claude-haiku-4-5".into(), price(1.0, 5.0)),
        ])
        .await
        .expect("prices");
    let before = heat_answers(&store).await;
    assert!(before.iter().any(|answer| answer.contains("\"cost\":0.")));
    store.close().await;
    const BLOBS: &str = "SELECT bucket_ms, entries FROM usage_rollup_heat_h ORDER BY bucket_ms";
    let blobs = dump(&path, BLOBS).await;

    heat_blobs_back_to_generic_entries(&path).await;
    assert_ne!(dump(&path, BLOBS).await, blobs);
    rewind(&path, 130, &[]).await;
    let store = SqliteStore::open(Options::new(&path))
        .await
        .expect("reopen");
    assert_eq!(heat_answers(&store).await, before);
    store.close().await;
    // The blobs are those the current code writes, and the step is done.
    assert_eq!(dump(&path, BLOBS).await, blobs);
    assert!(
        dump(&path, "SELECT name FROM usage_rollup_backfill")
            .await
            .is_empty()
    );
}
