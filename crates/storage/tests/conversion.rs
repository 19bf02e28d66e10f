//! Databases written by earlier releases are converted in place when opened: the
//! answers stay the same and nothing stored is lost.
//!
//! Each test writes a database with the current code, turns it back into the
//! shape an earlier release left (the objects a later migration adds are dropped
//! and that migration is forgotten), reopens it and compares.

#[path = "support/synth.rs"]
mod synth;

use cpamp_domain::analytics::accounts::header_snapshots;
use cpamp_domain::analytics::time::DAY_MS;
use cpamp_domain::ports::{BatchOrigin, EventSink, IngestBatch};
use cpamp_storage::{Options, SqliteStore};
use sqlx::Connection;

const END_MS: i64 = 1_767_225_600_000;

async fn seeded(path: &std::path::Path, count: usize) -> SqliteStore {
    let store = SqliteStore::open(Options::new(path)).await.expect("open");
    let events = synth::events(11, count, END_MS, 3);
    for chunk in events.chunks(200) {
        store
            .store_batch(IngestBatch {
                origin: BatchOrigin::Collector("http://cpa".into()),
                events: chunk.to_vec(),
                dead_letters: Vec::new(),
            })
            .await
            .expect("store batch");
    }
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

    // The earlier shape: one sample row per block (every block here fits one run).
    let mut statements = Vec::new();
    for level in ["q", "h", "d"] {
        statements.push(format!(
            "CREATE TABLE old_{level} (bucket_ms INTEGER PRIMARY KEY, entries BLOB NOT NULL)"
        ));
        statements.push(format!(
            "INSERT INTO old_{level} SELECT bucket_ms, entries FROM usage_rollup_latency_{level}"
        ));
        statements.push(format!("DROP TABLE usage_rollup_latency_{level}"));
        statements.push(format!(
            "ALTER TABLE old_{level} RENAME TO usage_rollup_latency_{level}"
        ));
    }
    let statements: Vec<&'static str> = statements
        .into_iter()
        .map(|statement| &*Box::leak(statement.into_boxed_str()))
        .collect();
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
