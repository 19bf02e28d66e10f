//! Search answers match a case-insensitive substring test over the searched
//! fields of every event, computed here from the generated events themselves:
//! dictionary values, free texts with non-ASCII characters (whose lowercase can
//! be ASCII: the Kelvin sign, the dotted capital I), control characters, literal
//! `%` and `_`, event-hash and request-id fragments. The same answers hold
//! before the search index is built, once it is, and after events arrive late
//! into indexed hours.

mod support;

use std::collections::BTreeSet;

use cpamp_domain::analytics::analytics_model;
use cpamp_domain::analytics::monitoring::{Include, MonitoringRequest, monitoring};
use cpamp_domain::analytics::query::{AnalyticsStore, Cursor, Scope};
use cpamp_domain::analytics::time::{DAY_MS, Granularity, HOUR_MS, Zone};
use cpamp_domain::event::UsageEvent;
use cpamp_storage::{Options, SqliteStore};
use support::synth;

const END_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn events() -> Vec<UsageEvent> {
    let mut events = synth::events(31, 3_000, END_MS, 2);
    let summaries = [
        "upstream Überlastet (529)",
        "rate_limit: 100% of quota used",
        "\u{212A}elvin overload",
        "upstream \u{130}dle timeout",
        "plain overload",
        "upstream said:\n\t{\"error\": \"Claude overloaded\"}\r\n",
    ];
    for (index, event) in events.iter_mut().enumerate() {
        if event.failed {
            event.fail_summary = Some(summaries[index % summaries.len()].to_string());
        }
        if index % 9 == 0 {
            event.header_trace_id = Some(format!("Trace-ÄB-{index:05}"));
            event.header_error_kind = Some("Rate_Limited".to_string());
        }
        if index % 13 == 0 {
            event.request_id = Some(format!("REQ-{index:04}-Mixed"));
        }
        // Hex request and trace ids, which are stored as their bytes.
        let digits = &event.event_hash;
        if index % 5 == 1 {
            event.request_id = Some(digits[40..48].to_string());
        }
        if index % 7 == 2 {
            event.header_trace_id = Some(format!(
                "{}-{}-{}-{}-{}",
                &digits[0..8],
                &digits[8..12],
                &digits[12..16],
                &digits[16..20],
                &digits[20..32]
            ));
        }
    }
    events
}

/// The searched texts of an event, as stored and read back.
fn fields(event: &UsageEvent) -> Vec<String> {
    let requested = event.requested_model.as_deref().unwrap_or("");
    let effective = if requested.is_empty() {
        &event.model
    } else {
        requested
    };
    [
        event.request_id.clone(),
        Some(event.event_hash.clone()),
        Some(event.model.clone()),
        event.requested_model.clone(),
        Some(analytics_model(effective).to_string()),
        event.resolved_model.clone(),
        event.endpoint.clone(),
        event.method.clone(),
        event.path.clone(),
        event.client_ip.clone(),
        event.x_forwarded_for.clone(),
        event.user_agent.clone(),
        event.source.clone(),
        event.source_hash.clone(),
        event.api_key_hash.clone(),
        event.auth_index.clone(),
        event.account_snapshot.clone(),
        event.auth_label_snapshot.clone(),
        event.auth_file_snapshot.clone(),
        event.auth_provider_snapshot.clone(),
        event.auth_project_id_snapshot.clone(),
        event.reasoning_effort.clone(),
        event.service_tier.clone(),
        event.executor_type.clone(),
        event.fail_summary.clone(),
        event.header_quota_plan_type.clone(),
        event.header_error_kind.clone(),
        event.header_error_code.clone(),
        event.header_trace_id.clone(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn matches(event: &UsageEvent, needle: &str) -> bool {
    fields(event)
        .iter()
        .any(|field| field.to_lowercase().contains(&needle.to_lowercase()))
}

#[tokio::test]
async fn search_answers_equal_a_substring_test_of_every_event() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(Options::new(dir.path().join("usage.sqlite")))
        .await
        .expect("open store");
    let mut events = events();
    support::store_in_batches(&store, &events, 250, false).await;
    let range = (END_MS - 2 * DAY_MS + 17 * 60_000 + 5, END_MS - 3 * 60_000);
    let needles = needles(&events);
    check(&store, &events, range, &needles, "unindexed").await;
    // Every hour is over: each gets its index row.
    let indexed = store
        .seal_search_hours(END_MS + DAY_MS)
        .await
        .expect("index hours");
    assert!(indexed >= 48, "{indexed} hours indexed");
    assert_eq!(
        store
            .seal_search_hours(END_MS + DAY_MS)
            .await
            .expect("index again"),
        0,
        "indexed hours are not built again"
    );
    check(&store, &events, range, &needles, "indexed").await;
    // Events that arrive late into indexed hours, with texts no other event has.
    let late: Vec<UsageEvent> = (0..40)
        .map(|index| {
            let mut event = events[index * 61].clone();
            event.event_hash = format!("{:064x}", 0xfeed_0000_u64 + index as u64);
            event.timestamp_ms = range.0 + (index as i64) * 3_500_000;
            event.user_agent = Some(format!("late-arrival-agent/{index}"));
            if index % 3 == 0 {
                event.failed = true;
                event.fail_summary = Some("late Überlastet failure".to_string());
            }
            event
        })
        .collect();
    support::store_in_batches(&store, &late, 7, false).await;
    let late_hours: BTreeSet<i64> = late
        .iter()
        .map(|event| event.timestamp_ms.div_euclid(HOUR_MS))
        .collect();
    events.extend(late);
    let mut needles = needles;
    needles.extend(["late-arrival".to_string(), "late über".to_string()]);
    check(&store, &events, range, &needles, "late arrivals").await;
    // Built again, the rows list the late events too: the batches told the next
    // pass which hours to look at again, and it builds those and no other.
    assert_eq!(
        store
            .seal_search_hours(END_MS + DAY_MS)
            .await
            .expect("index again"),
        late_hours.len(),
        "hours with late events are indexed again"
    );
    check(&store, &events, range, &needles, "indexed again").await;
}

fn needles(events: &[UsageEvent]) -> Vec<String> {
    let hash_fragment = events[1234].event_hash[20..31].to_string();
    // Fragments of a trace id across a dash, and of a request id in capitals.
    let trace_fragment = events[1402].header_trace_id.as_deref().expect("trace")[6..15].to_string();
    let request_fragment = events[1401].request_id.as_deref().expect("request")[1..7].to_string();
    let needles = [
        "claude".to_string(),
        "post".to_string(),
        "über".to_string(),
        "kelvin".to_string(),
        "upstream i".to_string(),
        "100%".to_string(),
        "rate_limit".to_string(),
        "_".to_string(),
        "%".to_string(),
        "äb-0".to_string(),
        "req-01".to_string(),
        "mixed".to_string(),
        hash_fragment,
        trace_fragment,
        request_fragment.to_uppercase(),
        "idx-3".to_string(),
        "priority".to_string(),
        "gemini-2.5".to_string(),
        "nothing-has-this".to_string(),
        "\"error\"".to_string(),
        "said:\n\t{".to_string(),
        // Every byte of these is in the failure summaries, but not the needle:
        // the index's run filters leave those summaries out.
        "load (529)".to_string(),
        "overload upstream".to_string(),
        "kelvin overload".to_string(),
    ];
    needles.to_vec()
}

/// Every needle's page, summary, timeline and account stats over `[from, to)`
/// against the substring test of `events`.
async fn check(
    store: &SqliteStore,
    events: &[UsageEvent],
    (from, to): (i64, i64),
    needles: &[String],
    stage: &str,
) {
    for needle in needles {
        let expected: BTreeSet<String> = events
            .iter()
            .filter(|event| event.timestamp_ms >= from && event.timestamp_ms < to)
            .filter(|event| matches(event, needle))
            .map(|event| event.event_hash.clone())
            .collect();
        let mut scope = Scope::time_only(from, to);
        scope.search_query = needle.clone();
        // A short page walks the newest matches first.
        let short = store
            .events_page(scope.clone(), Cursor::default(), 25)
            .await
            .expect("short page");
        let mut newest: Vec<i64> = events
            .iter()
            .filter(|event| expected.contains(&event.event_hash))
            .map(|event| event.timestamp_ms)
            .collect();
        newest.sort_unstable_by(|a, b| b.cmp(a));
        newest.truncate(25);
        let times: Vec<i64> = short.items.iter().map(|event| event.timestamp_ms).collect();
        assert_eq!(times, newest, "{stage}: newest events matching {needle:?}");
        let page = store
            .events_page(scope.clone(), Cursor::default(), 10_000)
            .await
            .expect("page");
        let got: BTreeSet<String> = page
            .items
            .iter()
            .map(|event| event.event_hash.clone())
            .collect();
        assert_eq!(got, expected, "{stage}: events matching {needle:?}");
        let matching: Vec<&UsageEvent> = events
            .iter()
            .filter(|event| expected.contains(&event.event_hash))
            .collect();
        // UTC hours fold whole hour blocks; Kolkata's (+05:30) quarter-hour blocks.
        for zone_name in ["Asia/Kolkata", "UTC"] {
            let zone = Zone::parse(zone_name).expect("zone");
            let response = monitoring(
                store,
                MonitoringRequest {
                    scope: scope.clone(),
                    now_ms: END_MS,
                    zone: zone.clone(),
                    granularity: Granularity::Hour,
                    include: Include {
                        summary: true,
                        compact: true,
                        percentiles: true,
                        timeline: true,
                        account_stats: true,
                        ..Include::default()
                    },
                    generated_at_ms: END_MS,
                },
            )
            .await
            .expect("query");
            let summary = response.summary.expect("summary");
            assert_eq!(
                summary.total_calls,
                expected.len() as i64,
                "{stage}: calls matching {needle:?}"
            );
            assert_eq!(
                summary.total_tokens,
                matching.iter().map(|event| event.tokens.total).sum::<i64>(),
                "{stage}: tokens matching {needle:?}"
            );
            assert_eq!(
                summary.failure_calls,
                matching.iter().filter(|event| event.failed).count() as i64,
                "{stage}: failures matching {needle:?}"
            );
            // Calls and tokens per local hour, from the events themselves.
            let mut buckets: std::collections::BTreeMap<i64, (i64, i64)> = Default::default();
            for event in &matching {
                let bucket = buckets
                    .entry(zone.bucket(Granularity::Hour, event.timestamp_ms))
                    .or_default();
                bucket.0 += 1;
                bucket.1 += event.tokens.total;
            }
            let timeline: std::collections::BTreeMap<i64, (i64, i64)> = response
                .timeline
                .iter()
                .filter(|point| point.calls > 0)
                .map(|point| (point.bucket_ms, (point.calls, point.tokens)))
                .collect();
            assert_eq!(
                timeline, buckets,
                "{stage}: timeline of {needle:?} in {zone_name}"
            );
            let account_calls: i64 = response
                .account_stats
                .iter()
                .map(|stat| stat.counts.calls)
                .sum();
            assert_eq!(
                account_calls,
                expected.len() as i64,
                "{stage}: accounts of {needle:?}"
            );
        }
        assert!(
            ["nothing-has-this", "load (529)", "overload upstream"].contains(&needle.as_str())
                || !expected.is_empty(),
            "{needle:?} finds something"
        );
    }
}
