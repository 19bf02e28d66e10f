//! Answers served from rollups equal the answers of a raw scan of the same events.
//!
//! A search every stored event matches (each synthetic event's method is `POST`)
//! makes the store read raw events for every section; the same request without it
//! is answered from rollups (and the newest-first task walk). The two answers must
//! be identical, section by section, in zones with whole-hour, half-hour,
//! 45-minute and daylight-saving offsets, over ranges with partial quarter hours,
//! hours and days at both ends.

mod support;

use cpamp_domain::analytics::monitoring::{Include, MonitoringRequest, monitoring};
use cpamp_domain::analytics::query::Scope;
use cpamp_domain::analytics::time::{DAY_MS, Granularity, HOUR_MS, Zone};
use cpamp_domain::event::{UsageEvent, format_timestamp_ms};
use cpamp_storage::{Options, SqliteStore};
use support::synth;

const END_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// Synthetic events over five days, plus siblings sharing an instant and a
/// credential with an earlier event (several calls of one task), stored in
/// batches out of time order.
async fn store() -> (tempfile::TempDir, SqliteStore) {
    let (dir, store) = empty_store().await;
    let mut events = synth::events(23, 6_000, END_MS, 5);
    let siblings: Vec<UsageEvent> = events
        .iter()
        .step_by(7)
        .enumerate()
        .map(|(index, event)| {
            let mut sibling = event.clone();
            sibling.event_hash = format!("{index:064x}");
            sibling.model = "gpt-5-mini".to_string();
            sibling.requested_model = Some("gpt-5-mini".to_string());
            sibling.failed = index % 5 == 0;
            sibling.timestamp = format_timestamp_ms(event.timestamp_ms);
            sibling
        })
        .collect();
    events.extend(siblings);
    // Newest batches first, so rollup blocks are merged out of order.
    support::store_in_batches(&store, &events, 300, true).await;
    (dir, store)
}

fn everything() -> Include {
    Include {
        summary: true,
        compact: false,
        percentiles: true,
        timeline: true,
        hourly_distribution: true,
        heatmap: true,
        model_share: true,
        model_stats: true,
        channel_share: true,
        failure_sources: true,
        account_stats: true,
        credential_stats: true,
        api_key_stats: true,
        task_buckets: true,
        ..Include::default()
    }
}

async fn answer(
    store: &SqliteStore,
    scope: Scope,
    zone: &str,
    granularity: Granularity,
) -> serde_json::Value {
    answer_with(store, scope, zone, granularity, everything()).await
}

async fn answer_with(
    store: &SqliteStore,
    scope: Scope,
    zone: &str,
    granularity: Granularity,
    include: Include,
) -> serde_json::Value {
    answer_at(store, scope, zone, granularity, include, END_MS).await
}

async fn answer_at(
    store: &SqliteStore,
    scope: Scope,
    zone: &str,
    granularity: Granularity,
    include: Include,
    end_ms: i64,
) -> serde_json::Value {
    let response = monitoring(
        store,
        MonitoringRequest {
            scope,
            now_ms: end_ms - 3 * HOUR_MS - 7 * 60_000,
            zone: Zone::parse(zone).expect("zone"),
            granularity,
            include,
            generated_at_ms: end_ms,
        },
    )
    .await
    .expect("query");
    serde_json::to_value(&response).expect("json")
}

#[tokio::test]
async fn rollup_answers_equal_raw_scan_answers_in_every_zone() {
    let (_dir, store) = store().await;
    // Partial quarter hour, hour and day at both ends; one range ends after the
    // newest event, one inside the busiest hours.
    let ranges = [
        (
            END_MS - 4 * DAY_MS - 7 * 60_000 - 13,
            END_MS - 2 * HOUR_MS - 37 * 60_000 + 5,
        ),
        (
            END_MS - 2 * DAY_MS + 3 * HOUR_MS + 1,
            END_MS + HOUR_MS + 7 * 60_000 + 3,
        ),
        // Starts before the first event and ends after the last, both mid-quarter.
        (END_MS - 6 * DAY_MS + 5 * 60_000 + 3, END_MS + 17 * 60_000),
        (
            END_MS - 30 * HOUR_MS - 22 * 60_000,
            END_MS - 29 * HOUR_MS + 8 * 60_000,
        ),
    ];
    for zone in [
        "UTC",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "America/New_York",
        "Asia/Shanghai",
    ] {
        for (from, to) in ranges {
            for granularity in [Granularity::Hour, Granularity::Day] {
                let rollups = answer(&store, Scope::time_only(from, to), zone, granularity).await;
                let mut raw_scope = Scope::time_only(from, to);
                raw_scope.search_query = "post".to_string();
                let raw = answer(&store, raw_scope, zone, granularity).await;
                assert!(
                    rollups["heatmap"]
                        .as_array()
                        .is_some_and(|cells| !cells.is_empty()),
                    "a heatmap in {zone}"
                );
                let tasks = rollups["task_buckets"].as_array().map_or(0, Vec::len);
                assert!(
                    tasks == 500 || (to - from < DAY_MS && tasks > 0),
                    "{tasks} task buckets in {zone}"
                );
                let (Some(rollups), Some(raw)) = (rollups.as_object(), raw.as_object()) else {
                    panic!("objects");
                };
                for (section, value) in rollups {
                    assert_eq!(
                        Some(value),
                        raw.get(section),
                        "{section} in {zone} over [{from}, {to}) by {granularity:?}"
                    );
                }
                assert_eq!(rollups.len(), raw.len(), "sections in {zone}");
            }
        }
    }
}

#[tokio::test]
async fn filtered_heatmaps_equal_raw_scan_heatmaps() {
    let (_dir, store) = store().await;
    let (from, to) = (END_MS - 3 * DAY_MS - 5 * 60_000, END_MS - 50 * 60_000);
    let mut model = Scope::time_only(from, to);
    model.filters.models = vec!["claude-sonnet-4-5".to_string()];
    model.filters.include_failed = false;
    let mut provider = Scope::time_only(from, to);
    provider.filters.providers = vec!["gemini".to_string()];
    for scope in [model, provider] {
        for zone in ["Asia/Kolkata", "America/New_York"] {
            let rollups = answer(&store, scope.clone(), zone, Granularity::Hour).await;
            let mut raw_scope = scope.clone();
            raw_scope.search_query = "post".to_string();
            let raw = answer(&store, raw_scope, zone, Granularity::Hour).await;
            assert!(
                rollups["heatmap"]
                    .as_array()
                    .is_some_and(|cells| !cells.is_empty())
            );
            assert_eq!(rollups["heatmap"], raw["heatmap"], "heatmap in {zone}");
            assert_eq!(rollups["summary"], raw["summary"], "summary in {zone}");
            assert_eq!(
                rollups["task_buckets"], raw["task_buckets"],
                "tasks in {zone}"
            );
        }
    }
}

#[tokio::test]
async fn heatmaps_over_several_weeks_equal_raw_scan_heatmaps() {
    // Each weekday hour gathers the same local hour of three weeks, so rollup rows
    // of different dates share a cell.
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(Options::new(dir.path().join("usage.sqlite")))
        .await
        .expect("open store");
    let events = synth::events(41, 4_000, END_MS, 22);
    support::store_in_batches(&store, &events, 500, false).await;
    let (from, to) = (END_MS - 22 * DAY_MS + 11 * 60_000 + 7, END_MS + 3 * 60_000);
    for zone in ["UTC", "Asia/Kathmandu", "America/New_York"] {
        let rollups = answer(&store, Scope::time_only(from, to), zone, Granularity::Day).await;
        let mut raw_scope = Scope::time_only(from, to);
        raw_scope.search_query = "post".to_string();
        let raw = answer(&store, raw_scope, zone, Granularity::Day).await;
        assert_eq!(
            rollups["heatmap"].as_array().map(Vec::len),
            Some(168),
            "every weekday hour in {zone}"
        );
        assert_eq!(rollups["heatmap"], raw["heatmap"], "heatmap in {zone}");
        assert_eq!(
            rollups["hourly_distribution"], raw["hourly_distribution"],
            "hours in {zone}"
        );
    }
}

#[tokio::test]
async fn key_filtered_timelines_equal_raw_scan_timelines() {
    // An API-key filter reads identity rollups; the timelines, the summary and the
    // identity sections then share one read, as the raw scan's do.
    let (_dir, store) = store().await;
    let (from, to) = (
        END_MS - 4 * DAY_MS + 13 * 60_000 + 1,
        END_MS - 70 * 60_000 - 9,
    );
    let all = answer(&store, Scope::time_only(from, to), "UTC", Granularity::Hour).await;
    let key = all["api_key_stats"][0]["api_key_hash"]
        .as_str()
        .expect("an API key")
        .to_string();
    let mut scope = Scope::time_only(from, to);
    scope.filters.api_key_hashes = vec![key];
    let include = Include {
        credential_timeline: true,
        api_key_timeline: true,
        ..everything()
    };
    for zone in ["UTC", "Asia/Kolkata"] {
        for granularity in [Granularity::Hour, Granularity::Day] {
            let rollups =
                answer_with(&store, scope.clone(), zone, granularity, include.clone()).await;
            let mut raw_scope = scope.clone();
            raw_scope.search_query = "post".to_string();
            let raw = answer_with(&store, raw_scope, zone, granularity, include.clone()).await;
            for section in ["api_key_timeline", "credential_timeline", "timeline"] {
                assert!(
                    rollups[section]
                        .as_array()
                        .is_some_and(|points| !points.is_empty()),
                    "{section} in {zone}"
                );
            }
            same_sections(&rollups, &raw, &format!("{zone} by {granularity:?}"));
        }
    }
}

/// Events of the last hour and a half, which ingest also keeps in minute rollups.
#[tokio::test]
async fn recent_ranges_read_their_edges_from_minute_rollups() {
    const MINUTE_MS: i64 = 60_000;
    let (dir, store) = empty_store().await;
    let path = dir.path().join("usage.sqlite");
    let now = jiff::Timestamp::now().as_millisecond();
    let end = now.div_euclid(MINUTE_MS) * MINUTE_MS;
    // One day of synthetic events squeezed into the 90 minutes before `end`.
    let mut events = synth::events(59, 5_000, END_MS, 1);
    for event in &mut events {
        event.timestamp_ms = end - (END_MS - event.timestamp_ms) / 16;
        event.timestamp = format_timestamp_ms(event.timestamp_ms);
    }
    support::store_in_batches(&store, &events, 400, false).await;
    // Both edges fall mid-quarter, with events on either side of them in the
    // same quarter hour, so neither can be widened to a whole one.
    let quarter = 15 * MINUTE_MS;
    let from = (end - 75 * MINUTE_MS).div_euclid(quarter) * quarter + 4 * MINUTE_MS + 1_234;
    let to = (end - 5 * MINUTE_MS).div_euclid(quarter) * quarter - 4 * MINUTE_MS - 4_321;
    for edge in [from, to] {
        assert!(
            events
                .iter()
                .any(|e| e.timestamp_ms < edge && e.timestamp_ms >= edge - 60_000)
        );
        assert!(
            events
                .iter()
                .any(|e| e.timestamp_ms >= edge && e.timestamp_ms < edge + 60_000)
        );
    }
    let read = |zone: &'static str, granularity| {
        let store = store.clone();
        async move {
            let rollups = answer_at(
                &store,
                Scope::time_only(from, to),
                zone,
                granularity,
                everything(),
                now,
            )
            .await;
            let mut raw_scope = Scope::time_only(from, to);
            raw_scope.search_query = "post".to_string();
            let raw = answer_at(&store, raw_scope, zone, granularity, everything(), now).await;
            (rollups, raw)
        }
    };
    for zone in ["UTC", "Asia/Kolkata", "Asia/Kathmandu"] {
        for granularity in [Granularity::Hour, Granularity::Day] {
            let (rollups, raw) = read(zone, granularity).await;
            same_sections(&rollups, &raw, &format!("{zone} by {granularity:?}"));
        }
    }
    // The edges are read from the minute rows: without them, the answer counts
    // only the whole quarter hours and the raw remainders of a minute.
    let inside = events
        .iter()
        .filter(|e| e.timestamp_ms >= from && e.timestamp_ms < to)
        .count();
    let (before, _) = read("UTC", Granularity::Hour).await;
    assert_eq!(before["summary"]["total_calls"], inside as i64);
    {
        use sqlx::Connection;
        let mut connection = connect(&path).await;
        for table in [
            "usage_rollup_agg_m",
            "usage_rollup_ident_m",
            "usage_rollup_samples_m",
        ] {
            let deleted = sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
                .execute(&mut connection)
                .await
                .expect("delete minute rows")
                .rows_affected();
            assert!(deleted > 0, "{table} holds the recent minutes");
        }
        connection.close().await.expect("close");
    }
    let (after, raw) = read("UTC", Granularity::Hour).await;
    assert_eq!(raw["summary"]["total_calls"], inside as i64);
    let counted = after["summary"]["total_calls"].as_i64().expect("a count");
    assert!(
        counted < inside as i64 - 100,
        "{counted} of {inside} events without the minute rows"
    );
    // A database that held these events before it had minute rollups starts them
    // after its newest event: its edges are read raw again, and exactly.
    {
        use sqlx::Connection;
        let mut connection = connect(&path).await;
        sqlx::query("UPDATE usage_rollup_minute_start SET start_ms = ?")
            .bind(now + 1)
            .execute(&mut connection)
            .await
            .expect("move the start");
        connection.close().await.expect("close");
    }
    let (upgraded, raw) = read("UTC", Granularity::Hour).await;
    assert_eq!(upgraded, raw);
    assert_eq!(upgraded["summary"]["total_calls"], inside as i64);
}

/// Every section of `rollups` equals the same section of `raw`.
fn same_sections(rollups: &serde_json::Value, raw: &serde_json::Value, context: &str) {
    let (Some(rollups), Some(raw)) = (rollups.as_object(), raw.as_object()) else {
        panic!("objects");
    };
    for (section, value) in rollups {
        assert_eq!(Some(value), raw.get(section), "{section} in {context}");
    }
}

async fn empty_store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(Options::new(dir.path().join("usage.sqlite")))
        .await
        .expect("open store");
    (dir, store)
}

/// A connection of the test's own to the store's file.
async fn connect(path: &std::path::Path) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("connect")
}

async fn count(connection: &mut sqlx::SqliteConnection, sql: &'static str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(connection)
        .await
        .expect("count")
}

/// Minute rows are written only for events of the last three hours, and a batch
/// deletes the rows that have fallen out of that window.
#[tokio::test]
async fn minute_rollups_keep_only_the_recent_hours() {
    use sqlx::Connection;
    const HOUR: i64 = 3_600_000;
    let (dir, store) = empty_store().await;
    let path = dir.path().join("usage.sqlite");
    let now = jiff::Timestamp::now().as_millisecond();
    let mut events = synth::events(61, 40, END_MS, 1);
    for (index, event) in events.iter_mut().enumerate() {
        // Half of them four hours old, half of them from the last minutes.
        let age = if index % 2 == 0 { 4 * HOUR } else { 5 * 60_000 };
        event.timestamp_ms = now - age - index as i64 * 1_000;
        event.timestamp = format_timestamp_ms(event.timestamp_ms);
    }
    let mut connection = connect(&path).await;
    // A row left from five hours ago, as if ingest had stopped since.
    sqlx::query("INSERT INTO usage_rollup_agg_m (bucket_ms, entries) VALUES (?, x'00')")
        .bind((now - 5 * HOUR).div_euclid(60_000) * 60_000)
        .execute(&mut connection)
        .await
        .expect("an old minute row");
    support::store_collected(&store, &events).await;
    let oldest = count(
        &mut connection,
        "SELECT coalesce(min(bucket_ms), 0) FROM usage_rollup_ident_m",
    )
    .await;
    assert!(
        oldest >= now - 3 * HOUR,
        "{oldest} is within three hours of {now}"
    );
    assert_eq!(
        count(
            &mut connection,
            "SELECT count(*) FROM usage_rollup_agg_m WHERE bucket_ms < strftime('%s', 'now') * 1000 - 3 * 3600000"
        )
        .await,
        0,
        "the old row is gone"
    );
    let minutes: std::collections::BTreeSet<i64> = events
        .iter()
        .filter(|event| event.timestamp_ms >= now - 3 * HOUR)
        .map(|event| event.timestamp_ms.div_euclid(60_000) * 60_000)
        .collect();
    assert_eq!(
        count(&mut connection, "SELECT count(*) FROM usage_rollup_ident_m").await,
        minutes.len() as i64
    );
    assert_eq!(
        count(
            &mut connection,
            "SELECT count(DISTINCT bucket_ms) FROM usage_rollup_samples_m"
        )
        .await,
        minutes.len() as i64
    );
    connection.close().await.expect("close");
}
