//! Analytics queries against a real SQLite file, checked against expectations
//! computed directly from the generated events (not through the store).

mod support;

use std::collections::{BTreeMap, HashSet};

use cpamp_domain::analytics::dashboard::{DashboardRequest, dashboard};
use cpamp_domain::analytics::monitoring::{Include, MonitoringRequest, PageRequest, monitoring};
use cpamp_domain::analytics::query::{AnalyticsStore, Cursor, Filters, Scope};
use cpamp_domain::analytics::time::{DAY_MS, Granularity, Zone};
use cpamp_domain::analytics::{analytics_model, nearest_rank};
use cpamp_domain::event::UsageEvent;
use cpamp_storage::{Options, SqliteStore};
use support::synth;

const END_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

async fn seeded(count: usize) -> (tempfile::TempDir, SqliteStore, Vec<UsageEvent>) {
    seeded_over(count, 4).await
}

async fn seeded_over(count: usize, days: i64) -> (tempfile::TempDir, SqliteStore, Vec<UsageEvent>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(Options::new(dir.path().join("cpamp.db")))
        .await
        .expect("open store");
    let events = synth::events(7, count, END_MS, days);
    support::store_in_batches(&store, &events, 250, false).await;
    (dir, store, events)
}

fn analytics_of(event: &UsageEvent) -> String {
    analytics_model(event.requested_model.as_deref().unwrap_or(&event.model)).to_string()
}

fn input_of(event: &UsageEvent) -> i64 {
    event.normalized.total_input
}

fn request(scope: Scope, zone: &str, include: Include) -> MonitoringRequest {
    let granularity = Granularity::resolve(Some("day"), scope.from_ms, scope.to_ms);
    MonitoringRequest {
        scope,
        now_ms: END_MS,
        zone: Zone::parse(zone).expect("zone"),
        granularity,
        include,
        generated_at_ms: END_MS,
    }
}

#[tokio::test]
async fn summary_timeline_and_p95_match_the_events_in_two_zones() {
    let (_dir, store, events) = seeded(4000).await;
    // Unaligned edges exercise raw edges, quarter, hour and day rollups together.
    let from = END_MS - 3 * DAY_MS - 7 * 60_000 - 13;
    let to = END_MS - 37 * 60_000 + 5;
    for zone_name in ["UTC", "Asia/Kolkata", "America/New_York"] {
        let include = Include {
            summary: true,
            compact: true,
            percentiles: true,
            timeline: true,
            model_stats: true,
            ..Include::default()
        };
        let response = monitoring(
            &store,
            request(Scope::time_only(from, to), zone_name, include),
        )
        .await
        .expect("query");
        let selected: Vec<&UsageEvent> = events
            .iter()
            .filter(|e| e.timestamp_ms >= from && e.timestamp_ms < to)
            .collect();
        let summary = response.summary.expect("summary");
        assert_eq!(summary.total_calls, selected.len() as i64);
        assert_eq!(
            summary.failure_calls,
            selected.iter().filter(|e| e.failed).count() as i64
        );
        assert_eq!(
            summary.total_tokens,
            selected.iter().map(|e| e.tokens.total).sum::<i64>()
        );
        assert_eq!(
            summary.token_sums.input_tokens,
            selected.iter().map(|e| input_of(e)).sum::<i64>()
        );
        assert_eq!(
            summary.zero_token_calls,
            selected
                .iter()
                .filter(|e| e.tokens.total == 0 && !e.failed)
                .count() as i64
        );
        let mut latencies: Vec<u32> = selected
            .iter()
            .filter_map(|e| e.latency_ms)
            .map(|v| v as u32)
            .collect();
        assert_eq!(summary.p95_latency_ms, nearest_rank(&mut latencies, 0.95));
        let mut ttfts: Vec<u32> = selected
            .iter()
            .filter_map(|e| e.ttft_ms)
            .map(|v| v as u32)
            .collect();
        assert_eq!(summary.p95_ttft_ms, nearest_rank(&mut ttfts, 0.95));
        assert_eq!(
            summary.total_cost, None,
            "unpriced models have unknown cost"
        );

        // Day buckets: local midnight computed with jiff directly.
        let tz = jiff::tz::TimeZone::get(zone_name).expect("tz");
        let mut expected: BTreeMap<i64, (i64, i64, Vec<u32>)> = BTreeMap::new();
        for event in &selected {
            let zoned = jiff::Timestamp::from_millisecond(event.timestamp_ms)
                .expect("ts")
                .to_zoned_datetime(tz.clone());
            let midnight = zoned
                .start_of_day()
                .expect("midnight")
                .timestamp()
                .as_millisecond();
            let entry = expected.entry(midnight).or_default();
            entry.0 += 1;
            entry.1 += event.tokens.total;
            entry.2.extend(event.latency_ms.map(|v| v as u32));
        }
        let got: Vec<(i64, i64, i64, Option<i64>)> = response
            .timeline
            .iter()
            .map(|p| (p.bucket_ms, p.calls, p.tokens, p.p95_latency_ms))
            .collect();
        let want: Vec<(i64, i64, i64, Option<i64>)> = expected
            .into_iter()
            .map(|(bucket, (calls, tokens, mut lat))| {
                (bucket, calls, tokens, nearest_rank(&mut lat, 0.95))
            })
            .collect();
        assert_eq!(got, want, "timeline in {zone_name}");

        let gpt5 = response
            .model_stats
            .iter()
            .find(|m| m.model == "gpt-5")
            .expect("gpt-5 row");
        assert_eq!(
            gpt5.counts.calls,
            selected
                .iter()
                .filter(|e| analytics_of(e) == "gpt-5")
                .count() as i64
        );
    }
}

/// Sample runs of one block, read from the file: (run, bytes).
async fn sample_runs(path: &std::path::Path, level: &str, bucket: i64) -> Vec<(i64, i64)> {
    use sqlx::Connection;
    let url = format!("sqlite://{}?mode=ro", path.display());
    let mut connection = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    let runs = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT run, length(entries) FROM usage_rollup_samples_{level} WHERE bucket_ms = ? ORDER BY run"
    )))
    .bind(bucket)
    .fetch_all(&mut connection)
    .await
    .expect("runs");
    connection.close().await.expect("close");
    runs
}

#[tokio::test]
async fn a_full_quarter_hour_keeps_its_samples_in_bounded_runs_and_p95_stays_exact() {
    // 12,000 events in the last UTC quarter hour of a day, 250 per batch: the
    // quarter's samples outgrow one run. Hours and days read their quarters.
    let day = END_MS - DAY_MS;
    let quarter = END_MS - 900_000;
    let mut events = synth::events(7, 12_000, END_MS, 1);
    for event in &mut events {
        event.timestamp_ms = quarter + (event.timestamp_ms - day) / 96;
        event.timestamp = cpamp_domain::event::format_timestamp_ms(event.timestamp_ms);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(Options::new(dir.path().join("cpamp.db")))
        .await
        .expect("open store");
    support::store_in_batches(&store, &events, 250, false).await;
    let runs = sample_runs(&dir.path().join("cpamp.db"), "q", quarter).await;
    assert!(runs.len() >= 3, "the quarter holds several runs: {runs:?}");
    assert_eq!(
        runs.iter().map(|run| run.0).collect::<Vec<_>>(),
        (0..runs.len() as i64).collect::<Vec<_>>()
    );
    // A run is sealed once it reaches 16 KiB; one batch adds far less than that.
    let sealed = &runs[..runs.len() - 1];
    assert!(
        sealed
            .iter()
            .all(|(_, bytes)| (16 * 1024..24 * 1024).contains(bytes)),
        "{runs:?}"
    );
    for (from, to) in [
        (day, END_MS),
        (day + 3_600_000 + 17, END_MS - 900_000 - 5),
        (quarter + 60_000 + 17, END_MS - 5),
        (END_MS - 3_600_000, END_MS),
    ] {
        let include = Include {
            summary: true,
            percentiles: true,
            timeline: true,
            ..Include::default()
        };
        let response = monitoring(&store, request(Scope::time_only(from, to), "UTC", include))
            .await
            .expect("query");
        let selected = events
            .iter()
            .filter(|e| e.timestamp_ms >= from && e.timestamp_ms < to);
        let mut latencies: Vec<u32> = selected
            .clone()
            .filter_map(|e| e.latency_ms.filter(|v| *v > 0))
            .map(|v| v as u32)
            .collect();
        let mut ttfts: Vec<u32> = selected
            .filter_map(|e| e.ttft_ms.filter(|v| *v > 0))
            .map(|v| v as u32)
            .collect();
        let summary = response.summary.expect("summary");
        assert_eq!(summary.p95_latency_ms, nearest_rank(&mut latencies, 0.95));
        assert_eq!(summary.p50_latency_ms, nearest_rank(&mut latencies, 0.50));
        assert_eq!(summary.p99_latency_ms, nearest_rank(&mut latencies, 0.99));
        assert_eq!(summary.p95_ttft_ms, nearest_rank(&mut ttfts, 0.95));
    }
}

#[tokio::test]
async fn cursor_pages_have_no_duplicates_or_gaps_under_combined_filters() {
    let (_dir, store, events) = seeded(3000).await;
    let from = END_MS - 2 * DAY_MS + 11;
    let to = END_MS - 5 * 60_000;
    let filters = Filters {
        models: vec!["gpt-5".into(), "claude-sonnet-4-5".into()],
        providers: vec!["openai".into(), "anthropic".into()],
        include_failed: true,
        ..Filters::default()
    };
    let scope = Scope {
        from_ms: from,
        to_ms: to,
        filters,
        ..Scope::default()
    };
    let mut expected: Vec<&UsageEvent> = events
        .iter()
        .filter(|e| e.timestamp_ms >= from && e.timestamp_ms < to)
        .filter(|e| ["gpt-5", "claude-sonnet-4-5"].contains(&analytics_of(e).as_str()))
        .collect();
    expected.sort_by_key(|event| std::cmp::Reverse(event.timestamp_ms));
    let mut seen = Vec::new();
    let mut cursor = Cursor::default();
    loop {
        let include = Include {
            events_page: Some(PageRequest { limit: 97, cursor }),
            ..Include::default()
        };
        let response = monitoring(&store, request(scope.clone(), "UTC", include))
            .await
            .expect("page");
        let events_section = response.events.expect("events");
        assert_eq!(events_section.total_count, expected.len() as i64);
        seen.extend(
            events_section
                .items
                .iter()
                .map(|item| item.event_hash.clone()),
        );
        if !events_section.has_more {
            assert_eq!(
                (events_section.next_before_ms, events_section.next_before_id),
                (0, 0)
            );
            break;
        }
        cursor = Cursor {
            before_ms: events_section.next_before_ms,
            before_id: events_section.next_before_id,
        };
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicates");
    let want: Vec<String> = expected.iter().map(|e| e.event_hash.clone()).collect();
    assert_eq!(seen, want, "every event once, newest first");

    // Status + identity + latency filters combined (raw path) against a direct count.
    let filters = Filters {
        api_key_hashes: vec![events[0].api_key_hash.clone().expect("hash")],
        include_failed: false,
        min_latency_ms: 3000,
        ..Filters::default()
    };
    let scope = Scope {
        from_ms: from,
        to_ms: to,
        filters,
        ..Scope::default()
    };
    let include = Include {
        summary: true,
        compact: true,
        ..Include::default()
    };
    let response = monitoring(&store, request(scope, "UTC", include))
        .await
        .expect("filtered");
    let want = events
        .iter()
        .filter(|e| e.timestamp_ms >= from && e.timestamp_ms < to)
        .filter(|e| {
            e.api_key_hash == events[0].api_key_hash
                && !e.failed
                && e.latency_ms.is_some_and(|l| l >= 3000)
        })
        .count() as i64;
    assert_eq!(response.summary.expect("summary").total_calls, want);
}

#[tokio::test]
async fn event_points_are_the_events_of_a_range_with_any_bounds() {
    let (_dir, store, events) = seeded(3000).await;
    let (from, to) = (
        END_MS - DAY_MS + 7 * 60_000 + 3,
        END_MS - 3 * 3_600_000 - 11,
    );
    let mut got: Vec<(i64, bool, i64)> = store
        .event_points(from, to)
        .await
        .expect("points")
        .into_iter()
        .map(|point| {
            assert_eq!(point.calls, 1);
            (point.bucket_ms, point.failed, point.tokens)
        })
        .collect();
    got.sort_unstable();
    let mut want: Vec<(i64, bool, i64)> = events
        .iter()
        .filter(|e| e.timestamp_ms >= from && e.timestamp_ms < to)
        .map(|e| (e.timestamp_ms, e.failed, e.tokens.total))
        .collect();
    want.sort_unstable();
    assert!(want.iter().any(|point| point.1) && want.len() > 10);
    assert_eq!(got, want);
    assert!(
        store
            .event_points(to, from)
            .await
            .expect("empty")
            .is_empty()
    );
}

#[tokio::test]
async fn dashboard_counts_today_per_hour_and_ten_minutes() {
    let (_dir, store, events) = seeded(3000).await;
    // Kathmandu midnight (+05:45) is not hour-aligned in UTC.
    let today_start = END_MS - DAY_MS + 18 * 3_600_000 + 15 * 60_000 - DAY_MS;
    let now = today_start + 20 * 3_600_000 + 7 * 60_000 + 3;
    // Events follow `now` in its 5-minute block: its partial block is read raw.
    assert!(
        store
            .fine_tail(now - now.rem_euclid(300_000), now)
            .await
            .expect("probe")
            .is_none()
    );
    assert_dashboard_counts(&store, &events, today_start, now).await;
}

#[tokio::test]
async fn dashboard_reads_the_last_partial_block_whole_when_nothing_follows_now() {
    let (_dir, store, events) = seeded(3000).await;
    let today_start = END_MS - DAY_MS + 18 * 3_600_000 + 15 * 60_000 - DAY_MS;
    let newest = events.iter().map(|e| e.timestamp_ms).max().expect("events");
    let now = newest + 1;
    let block = now - now.rem_euclid(300_000);
    assert!(block < newest, "the newest event starts no block");
    let tail = store
        .fine_tail(block, now)
        .await
        .expect("probe")
        .expect("nothing follows now");
    let in_block: Vec<&UsageEvent> = events
        .iter()
        .filter(|e| e.timestamp_ms >= block && e.timestamp_ms < now)
        .collect();
    assert_eq!(
        tail.iter().map(|b| b.calls).sum::<i64>(),
        in_block.len() as i64
    );
    assert_eq!(
        tail.iter().map(|b| b.tokens).sum::<i64>(),
        in_block.iter().map(|e| e.tokens.total).sum::<i64>()
    );
    assert!(
        store
            .fine_tail(block, newest)
            .await
            .expect("probe")
            .is_none()
    );
    assert_dashboard_counts(&store, &events, today_start, now).await;
}

/// The dashboard of `[today_start, now)` against counts made from `events`.
async fn assert_dashboard_counts(
    store: &SqliteStore,
    events: &[UsageEvent],
    today_start: i64,
    now: i64,
) {
    let summary = dashboard(
        store,
        DashboardRequest {
            today_start_ms: today_start,
            now_ms: now,
            top_models: 5,
            recent_failures: 5,
            generated_at_ms: now,
        },
    )
    .await
    .expect("dashboard");
    let today: Vec<&UsageEvent> = events
        .iter()
        .filter(|e| e.timestamp_ms >= today_start && e.timestamp_ms < now)
        .collect();
    assert_eq!(summary.today.total_calls, today.len() as i64);
    assert_eq!(
        summary.today.failure_calls,
        today.iter().filter(|e| e.failed).count() as i64
    );
    assert_eq!(
        summary.today.total_tokens,
        today.iter().map(|e| e.tokens.total).sum::<i64>()
    );
    assert_eq!(summary.traffic_timeline.len(), 24);
    assert_eq!(summary.today_request_health_timeline.points.len(), 144);
    for (index, point) in summary.traffic_timeline.iter().enumerate() {
        let lo = today_start + index as i64 * 3_600_000;
        let want = today
            .iter()
            .filter(|e| e.timestamp_ms >= lo && e.timestamp_ms < lo + 3_600_000)
            .count() as i64;
        assert_eq!(point.calls, want, "hour {index}");
    }
    for (index, point) in summary
        .today_request_health_timeline
        .points
        .iter()
        .enumerate()
    {
        let lo = today_start + index as i64 * 600_000;
        let in_bucket: Vec<_> = today
            .iter()
            .filter(|e| e.timestamp_ms >= lo && e.timestamp_ms < lo + 600_000)
            .collect();
        assert_eq!(
            point.calls,
            in_bucket.len() as i64,
            "ten-minute bucket {index}"
        );
        assert_eq!(
            point.failure,
            in_bucket.iter().filter(|e| e.failed).count() as i64
        );
    }
    let rolling = events
        .iter()
        .filter(|e| e.timestamp_ms >= now - 1_800_000 && e.timestamp_ms < now)
        .count() as i64;
    assert_eq!(summary.rolling_30m.total_calls, rolling);
    let failures: Vec<i64> = today
        .iter()
        .filter(|e| e.failed)
        .map(|e| e.timestamp_ms)
        .rev()
        .take(5)
        .collect();
    assert_eq!(
        summary
            .recent_failures
            .iter()
            .map(|f| f.timestamp_ms)
            .collect::<Vec<_>>(),
        failures
    );
    assert!(
        summary
            .recent_failures
            .iter()
            .all(|f| f.fail_summary.is_some())
    );
    let channel_calls: i64 = summary.channel_health.iter().map(|c| c.calls).sum();
    assert!(channel_calls <= summary.today.total_calls && !summary.channel_health.is_empty());
}

fn credential_key(event: &UsageEvent) -> (String, String) {
    (
        event.auth_file_snapshot.clone().unwrap_or_default(),
        event.auth_index.clone().unwrap_or_default(),
    )
}

#[tokio::test]
async fn header_snapshots_are_the_latest_header_event_per_credential() {
    use cpamp_domain::analytics::accounts::header_snapshots;
    let (_dir, store, events) = seeded(3_000).await;
    let days = 2;
    let from = END_MS - days * DAY_MS;
    // Expected: per (file, index), the newest event in the window with header
    // metadata (the generator sets an error kind on failures only).
    let mut latest: BTreeMap<(String, String), &UsageEvent> = BTreeMap::new();
    for event in &events {
        if event.timestamp_ms < from
            || event.timestamp_ms > END_MS
            || event.header_error_kind.is_none()
        {
            continue;
        }
        let entry = latest.entry(credential_key(event)).or_insert(event);
        if event.timestamp_ms > entry.timestamp_ms {
            *entry = event;
        }
    }
    let mut expected: Vec<&UsageEvent> = latest.into_values().collect();
    expected.sort_by_key(|event| std::cmp::Reverse(event.timestamp_ms));
    assert!(
        expected.len() >= 6,
        "the seed must cover several credentials"
    );

    let answer = header_snapshots(&store, END_MS, days, 1000)
        .await
        .expect("snapshots");
    assert_eq!((answer.from_ms, answer.to_ms), (from, END_MS));
    let got: Vec<(String, i64, String)> = answer
        .items
        .iter()
        .map(|item| {
            (
                item.event_hash.clone(),
                item.timestamp_ms,
                item.headers.header_error_kind.clone(),
            )
        })
        .collect();
    let want: Vec<(String, i64, String)> = expected
        .iter()
        .map(|event| {
            (
                event.event_hash.clone(),
                event.timestamp_ms,
                event.header_error_kind.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(got, want);
    let first = &answer.items[0];
    assert_eq!(
        &*first.identity.auth_file_snapshot,
        expected[0]
            .auth_file_snapshot
            .as_deref()
            .unwrap_or_default()
    );
    assert_eq!(
        &*first.identity.auth_index,
        expected[0].auth_index.as_deref().unwrap_or_default()
    );

    // Filter options list the header values of the range, whatever the filters.
    let mut scope = Scope::time_only(from, END_MS);
    scope.filters.failed_only = true;
    let include = Include {
        filter_options: true,
        ..Include::default()
    };
    let response = monitoring(&store, request(scope, "UTC", include))
        .await
        .expect("options");
    let options = response.filter_options.expect("filter options");
    let kinds: Vec<String> = events
        .iter()
        .filter(|event| event.timestamp_ms >= from && event.timestamp_ms < END_MS)
        .filter_map(|event| event.header_error_kind.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(options.header_error_kinds, kinds);
    assert!(options.header_error_codes.is_empty() && options.header_trace_ids.is_empty());

    let limited = header_snapshots(&store, END_MS, days, 3)
        .await
        .expect("limited");
    assert_eq!(limited.items.len(), 3);
    assert_eq!(limited.items[2].event_hash, want[2].0);
}

#[tokio::test]
async fn account_history_and_window_usage_match_the_events_of_the_credential() {
    use cpamp_domain::analytics::accounts::{
        AccountTarget, HistoryTarget, ModelScope, Period, UsageWindow, account_history,
        account_window_usage,
    };
    let (_dir, store, events) = seeded(3_000).await;
    let target = AccountTarget {
        auth_file_snapshot: "openai-1.json".into(),
        auth_provider_snapshot: "OpenAI".into(),
        auth_index: "idx-1".into(),
        ..AccountTarget::default()
    };
    assert_eq!(
        target.key(),
        "usage-account-history:2:file-index:6F70656E61692D312E6A736F6E:6964782D31"
    );
    let mine: Vec<&UsageEvent> = events
        .iter()
        .filter(|event| credential_key(event) == ("openai-1.json".into(), "idx-1".into()))
        .collect();
    assert!(mine.len() > 50);
    let failures = mine.iter().filter(|event| event.failed).count() as i64;
    let tokens: i64 = mine.iter().map(|event| event.tokens.total).sum();
    let mut newest: Vec<&UsageEvent> = mine.clone();
    newest.sort_by_key(|event| std::cmp::Reverse(event.timestamp_ms));

    let nobody = AccountTarget {
        auth_file_snapshot: "missing.json".into(),
        auth_provider_snapshot: "openai".into(),
        ..AccountTarget::default()
    };
    let history = account_history(
        &store,
        END_MS,
        &[
            HistoryTarget {
                row_key: "r1".into(),
                target: target.clone(),
            },
            HistoryTarget {
                row_key: "r2".into(),
                target: nobody.clone(),
            },
        ],
    )
    .await
    .expect("history");
    assert_eq!(history.checkpoint.latest_id, events.len() as i64);
    assert!(!history.checkpoint.pending);
    let item = &history.items[0];
    assert_eq!(item.row_key, "r1");
    assert!(item.matched);
    assert_eq!(item.total_requests, mine.len() as i64);
    assert_eq!(item.failure_calls, failures);
    assert_eq!(item.success_calls, mine.len() as i64 - failures);
    assert_eq!(item.total_tokens, tokens);
    assert_eq!(
        item.first_seen_ms,
        mine.iter().map(|e| e.timestamp_ms).min()
    );
    assert_eq!(item.last_seen_ms, mine.iter().map(|e| e.timestamp_ms).max());
    assert_eq!(item.sync_status, "ready");
    let recent: Vec<i64> = item
        .recent_requests
        .as_ref()
        .expect("recent requests")
        .iter()
        .map(|request| request.timestamp_ms)
        .collect();
    let want: Vec<i64> = newest
        .iter()
        .take(10)
        .map(|event| event.timestamp_ms)
        .collect();
    assert_eq!(recent, want);
    assert_eq!(
        item.latest_request.as_ref().map(|r| r.timestamp_ms),
        want.first().copied()
    );
    let empty = &history.items[1];
    assert!(!empty.matched);
    assert_eq!(
        (empty.total_requests, empty.success_rate, empty.sync_status),
        (0, None, "empty")
    );

    // A window over the middle two days, scoped to one billing model.
    let (from, to) = (
        END_MS - 3 * DAY_MS + 3_600_000 * 5 + 7,
        END_MS - DAY_MS - 1_234,
    );
    let in_window: Vec<&&UsageEvent> = mine
        .iter()
        .filter(|event| event.timestamp_ms >= from && event.timestamp_ms < to)
        .collect();
    let wanted = |event: &UsageEvent| event.resolved_model.as_deref() == Some("gpt-5-2025-08-07");
    let matched: Vec<&&&UsageEvent> = in_window.iter().filter(|event| wanted(event)).collect();
    let window = |scope: ModelScope| UsageWindow {
        request_key: "k".into(),
        row_key: "r1".into(),
        window_key: String::new(),
        provider_window_id: "w".into(),
        period: Period::Current,
        from_ms: from,
        to_ms: to,
        scope,
        target: target.clone(),
    };
    let models =
        ModelScope::parse("models", "", &["GPT-5-2025-08-07".into()], None).expect("scope");
    let product = ModelScope::parse("product", "p", &[], None).expect("scope");
    let usage = account_window_usage(
        &store,
        END_MS,
        &[window(models), window(ModelScope::all()), window(product)],
    )
    .await
    .expect("window usage");
    let scoped = &usage.items[0];
    assert_eq!(scoped.total_requests, matched.len() as i64);
    assert_eq!(
        scoped.failure_calls,
        matched.iter().filter(|e| e.failed).count() as i64
    );
    assert_eq!(
        scoped.total_tokens,
        matched.iter().map(|e| e.tokens.total).sum::<i64>()
    );
    assert_eq!(
        scoped.unmatched_requests,
        (in_window.len() - matched.len()) as i64
    );
    assert_eq!(scoped.scope_match_status, "partial");
    assert_eq!(
        scoped.last_seen_ms,
        matched.iter().map(|e| e.timestamp_ms).max()
    );
    let all = &usage.items[1];
    assert_eq!(
        (all.total_requests, all.unmatched_requests),
        (in_window.len() as i64, 0)
    );
    assert_eq!(all.scope_match_status, "complete");
    let incomplete = &usage.items[2];
    assert_eq!(
        (incomplete.total_requests, incomplete.scope_match_status),
        (0, "unmatched")
    );
    assert_eq!(incomplete.sync_status, "empty");
}

#[tokio::test]
async fn filter_selectors_list_the_models_and_identities_of_the_range() {
    let (dir, store, events) = seeded(2_000).await;
    // Partial days at both edges and two whole days in the middle.
    let (from, to) = (
        END_MS - 3 * DAY_MS - 5 * 3_600_000 - 17,
        END_MS - 7 * 3_600_000 + 3,
    );
    check_selectors(&store, &events, (from, to)).await;
    // Partial hours that hold whole quarter hours and rests of a few minutes,
    // and whole hours of the partial days, each with a model and an account no
    // other event has.
    let mut events = events;
    let wide = (from - 40 * 60_000, to + 35 * 60_000);
    let edges: Vec<UsageEvent> = [
        (wide.0 + 5 * 60_000, "edge-rest-start"),
        (wide.0 + 25 * 60_000, "edge-quarter-start"),
        (wide.0 + 2 * 3_600_000, "edge-hour-start"),
        (wide.1 - 3 * 3_600_000, "edge-hour-end"),
        (wide.1 - 20 * 60_000, "edge-quarter-end"),
        (wide.1 - 60_000, "edge-rest-end"),
    ]
    .into_iter()
    .enumerate()
    .map(|(index, (at, name))| {
        let mut event = events[index].clone();
        event.event_hash = format!("{:064x}", 0xed9e_u64 + index as u64);
        event.timestamp_ms = at;
        event.model = name.to_string();
        event.requested_model = None;
        event.account_snapshot = Some(format!("{name}@example.org"));
        event
    })
    .collect();
    support::store_collected(&store, &edges).await;
    events.extend(edges);
    check_selectors(&store, &events, wide).await;

    // Blocks without a pair row are read from their identity rollup; the backfill
    // step of an upgrade gives each one its row at open.
    let url = format!("sqlite://{}", dir.path().join("cpamp.db").display());
    let mut store = store;
    for mark in [false, true] {
        store.close().await;
        let mut connection = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
            .await
            .expect("connect");
        for table in ["usage_rollup_pairs_d", "usage_rollup_pairs_h"] {
            let removed = sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
                .execute(&mut connection)
                .await
                .expect("delete pairs");
            // The first round leaves none for the second.
            assert_eq!(removed.rows_affected() >= 4, !mark, "{table}");
        }
        if mark {
            sqlx::query("INSERT INTO usage_rollup_backfill (name) VALUES ('pairs_h')")
                .execute(&mut connection)
                .await
                .expect("mark the backfill");
        }
        drop(connection);
        store = SqliteStore::open(Options::new(dir.path().join("cpamp.db")))
            .await
            .expect("reopen");
        let mut connection = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
            .await
            .expect("connect");
        let missing: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM usage_rollup_ident_h) - (SELECT count(*) FROM usage_rollup_pairs_h) \
             + (SELECT count(*) FROM usage_rollup_ident_d) - (SELECT count(*) FROM usage_rollup_pairs_d)",
        )
        .fetch_one(&mut connection)
        .await
        .expect("count pair rows");
        drop(connection);
        assert_eq!(missing > 0, !mark, "pair rows missing after open");
        check_selectors(&store, &events, (from, to)).await;
        check_selectors(&store, &events, wide).await;
    }
    // New events keep the backfilled rows whole.
    let mut late = events[10].clone();
    late.event_hash = format!("{:064x}", 0x1a7e_u64);
    late.timestamp_ms = wide.0 + 2 * 3_600_000 + 60_000;
    late.model = "edge-hour-late".to_string();
    late.requested_model = None;
    support::store_collected(&store, std::slice::from_ref(&late)).await;
    events.push(late);
    check_selectors(&store, &events, wide).await;
}

/// The selectors of `[from, to)` against the events' own distinct values.
async fn check_selectors(store: &SqliteStore, events: &[UsageEvent], (from, to): (i64, i64)) {
    let inside: Vec<&UsageEvent> = events
        .iter()
        .filter(|event| event.timestamp_ms >= from && event.timestamp_ms < to)
        .collect();
    let distinct = |values: Vec<String>| -> Vec<String> {
        values
            .into_iter()
            .filter(|value| !value.is_empty())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let want_models = distinct(inside.iter().map(|event| analytics_of(event)).collect());
    let want_files = distinct(
        inside
            .iter()
            .map(|event| event.auth_file_snapshot.clone().unwrap_or_default())
            .collect(),
    );
    let want_keys = distinct(
        inside
            .iter()
            .map(|event| {
                event
                    .api_key_hash
                    .clone()
                    .unwrap_or_default()
                    .to_lowercase()
            })
            .collect(),
    );
    let want_accounts = distinct(
        inside
            .iter()
            .map(|event| event.account_snapshot.clone().unwrap_or_default())
            .collect(),
    );
    let include = Include {
        filter_options: true,
        filter_selectors: true,
        ..Include::default()
    };
    let check = |response: cpamp_domain::analytics::monitoring::MonitoringResponse| {
        let options = response.filter_options.expect("selectors");
        assert_eq!(options.models.as_deref(), Some(&want_models[..]));
        assert_eq!(options.auth_files, want_files);
        assert_eq!(options.api_key_hashes.as_deref(), Some(&want_keys[..]));
        assert_eq!(options.accounts.as_deref(), Some(&want_accounts[..]));
        assert_eq!(options.account_count, Some(want_accounts.len() as i64));
    };
    let response = monitoring(store, request(Scope::time_only(from, to), "UTC", include))
        .await
        .expect("selectors");
    check(response);
}

#[tokio::test]
async fn a_late_older_header_event_does_not_replace_the_newest() {
    use cpamp_domain::analytics::accounts::header_snapshots;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(Options::new(dir.path().join("cpamp.db")))
        .await
        .expect("open store");
    let mut events = synth::events(3, 400, END_MS, 1);
    events.retain(|event| event.header_error_kind.is_some());
    let mut newer = events.first().cloned().expect("a failure with headers");
    newer.timestamp_ms = END_MS - 60_000;
    let mut older = newer.clone();
    older.event_hash = "ee".repeat(32);
    older.timestamp_ms = END_MS - 3_600_000;
    for event in [newer.clone(), older] {
        support::store_collected(&store, &[event]).await;
    }
    let answer = header_snapshots(&store, END_MS, 1, 10)
        .await
        .expect("snapshots");
    assert_eq!(answer.items.len(), 1);
    assert_eq!(answer.items[0].event_hash, newer.event_hash);
    assert_eq!(answer.items[0].timestamp_ms, newer.timestamp_ms);
}

#[tokio::test]
async fn group_rows_name_the_most_recent_identity_of_their_credential() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(Options::new(dir.path().join("cpamp.db")))
        .await
        .expect("open store");
    let template = synth::events(11, 1, END_MS, 1).remove(0);
    // One client key and one credential whose account, label, source and project
    // changed: older calls days ago, newer ones in the last hours, so the range
    // reads day rollups before hour rollups and raw edges.
    let stamp = |mut event: UsageEvent, index: usize, at_ms: i64, who: &str| {
        event.event_hash = format!("{index:064x}");
        event.request_id = Some(format!("req-{index}"));
        event.timestamp_ms = at_ms;
        event.timestamp = cpamp_domain::event::format_timestamp_ms(at_ms);
        event.api_key_hash = Some("ab".repeat(32));
        event.auth_index = Some("idx-1".into());
        event.auth_file_snapshot = Some("codex-one.json".into());
        event.source_hash = Some(format!("{who}-source-hash"));
        event.source = Some(format!("{who}-source"));
        event.account_snapshot = Some(format!("{who}@example.com"));
        event.auth_label_snapshot = Some(format!("{who} label"));
        event.auth_project_id_snapshot = Some(format!("{who}-project"));
        event.failed = true;
        event
    };
    let mut events = Vec::new();
    for index in 0..6 {
        // "zz-old" sorts after "aa-new": the newer one must win by time, not by name.
        let at = END_MS - (5 - index as i64 % 3) * DAY_MS - 3_600_000;
        events.push(stamp(template.clone(), index, at, "zz-old"));
    }
    for index in 6..9 {
        let at = END_MS - (index as i64 - 5) * 3_600_000 - 7 * 60_000;
        events.push(stamp(template.clone(), index, at, "aa-new"));
    }
    support::store_collected(&store, &events).await;
    let include = Include {
        api_key_stats: true,
        channel_share: true,
        credential_stats: true,
        ..Include::default()
    };
    let mut scope = Scope::time_only(END_MS - 10 * DAY_MS - 13, END_MS - 60_000 + 7);
    scope.filters.api_key_hashes = vec!["ab".repeat(32)];
    // Rows are merged in hash maps with a fresh seed per request: ask repeatedly.
    for _ in 0..5 {
        let response = monitoring(&store, request(scope.clone(), "UTC", include.clone()))
            .await
            .expect("query");
        let key = &response.api_key_stats[0];
        assert_eq!(response.api_key_stats.len(), 1);
        assert_eq!(&*key.identity.account_snapshot, "aa-new@example.com");
        assert_eq!(&*key.identity.auth_label_snapshot, "aa-new label");
        let contexts = key.contexts.as_ref().expect("contexts");
        assert_eq!(contexts.len(), 2, "{contexts:?}");
        let credential = &response.credential_stats[0];
        assert_eq!(response.credential_stats.len(), 1);
        assert_eq!(&*credential.identity.source, "aa-new-source");
        assert_eq!(&*credential.identity.source_hash, "aa-new-source-hash");
        assert_eq!(
            &*credential.identity.auth_project_id_snapshot,
            "aa-new-project"
        );
        assert_eq!(&*credential.identity.account_snapshot, "aa-new@example.com");
        let channel = &response.channel_share[0];
        assert_eq!(response.channel_share.len(), 1);
        assert_eq!(&*channel.identity.source, "aa-new-source");
        assert_eq!(&*channel.identity.account_snapshot, "aa-new@example.com");
        assert_eq!(channel.calls, 9);
    }
}
