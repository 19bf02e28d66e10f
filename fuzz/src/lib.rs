//! The fuzz targets' bodies: each takes arbitrary bytes, runs one parser of untrusted
//! input and checks properties that must hold for every input (beyond "does not panic").
//!
//! The libFuzzer binaries in `fuzz_targets/` call these functions; the stable test
//! `crates/api/tests/fuzz_corpus.rs` includes this file and replays the seed corpus and
//! every saved regression input through the same functions, so `cargo test` runs them
//! without a nightly toolchain.

use std::io::{BufReader, Read};
use std::mem::discriminant;
use std::ops::ControlFlow;

use cpamp_domain::analytics::time::{Granularity, Zone};
use cpamp_domain::decode::{MAX_DURATION_MS, MAX_QUOTA_USED_PERCENT, MAX_TOKENS_PER_EVENT};
use cpamp_domain::event::{Decoded, UsageEvent};

/// The clock every target passes in (2026-06-01T00:00:00Z).
pub const NOW_MS: i64 = 1_780_272_000_000;

/// A target: takes arbitrary bytes, panics when a property does not hold.
pub type Target = fn(&[u8]);

/// Every target by name, as `cargo xtask fuzz` and the corpus replay know them.
pub const TARGETS: &[(&str, Target)] = &[
    ("decode", decode),
    ("resp", resp),
    ("import", import),
    ("analytics", analytics),
];

/// The CPA queue payload decoder (`cpamp_domain::decode::decode`).
///
/// Properties: the outcome is deterministic; surrounding whitespace and a trailing
/// `\r\n` change nothing about it; a decoded event is within the plausibility bounds,
/// has a 64-digit lowercase hex hash and respects the column caps.
pub fn decode(data: &[u8]) {
    let decoded = cpamp_domain::decode::decode(data, NOW_MS);
    let again = cpamp_domain::decode::decode(data, NOW_MS);
    assert_eq!(
        format!("{decoded:?}"),
        format!("{again:?}"),
        "decoding is not deterministic"
    );
    match &decoded {
        Decoded::Event(event) => check_event(event, true),
        Decoded::Dead(dead) => {
            assert!(!dead.reason.is_empty(), "a dead letter without a reason");
            assert_eq!(dead.created_at_ms, NOW_MS);
        }
        Decoded::Refresh | Decoded::SupportRefresh | Decoded::Blank => {}
    }
    let mut padded = b" \t".to_vec();
    padded.extend_from_slice(data);
    padded.extend_from_slice(b"\r\n");
    let padded = cpamp_domain::decode::decode(&padded, NOW_MS);
    match (&padded, &decoded) {
        (Decoded::Event(padded), Decoded::Event(plain)) => assert_eq!(
            format!("{padded:?}"),
            format!("{plain:?}"),
            "whitespace around a payload changed the event"
        ),
        (padded, plain) => assert_eq!(
            discriminant(padded),
            discriminant(plain),
            "whitespace around a payload changed the outcome: {padded:?} vs {plain:?}"
        ),
    }
}

/// What every stored event must satisfy, whichever way it arrived.
fn check_event(event: &UsageEvent, decoded_hash: bool) {
    if decoded_hash {
        assert!(
            event.event_hash.len() == 64
                && event
                    .event_hash
                    .bytes()
                    .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')),
            "event hash {:?} is not 64 lowercase hex digits",
            event.event_hash
        );
    }
    let tokens = &event.tokens;
    let normalized = &event.normalized;
    for value in [
        tokens.input,
        tokens.output,
        tokens.reasoning,
        tokens.cached,
        tokens.cache,
        tokens.cache_read,
        tokens.cache_creation,
        tokens.total,
        normalized.uncached_input,
        normalized.total_input,
        normalized.cache_read,
        normalized.cache_creation,
    ] {
        assert!(
            value.unsigned_abs() <= MAX_TOKENS_PER_EVENT.unsigned_abs(),
            "token count {value} beyond the bound: {event:?}"
        );
    }
    for value in [event.latency_ms, event.ttft_ms].into_iter().flatten() {
        assert!(
            value.unsigned_abs() <= MAX_DURATION_MS.unsigned_abs(),
            "duration {value} beyond the bound"
        );
    }
    if let Some(percent) = event.header_quota_used_percent {
        assert!(
            percent.is_finite() && percent.abs() <= MAX_QUOTA_USED_PERCENT,
            "quota percent {percent}"
        );
    }
    for (value, cap) in [
        (&event.client_ip, 64),
        (&event.x_forwarded_for, 2048),
        (&event.user_agent, 1024),
    ] {
        if let Some(value) = value {
            assert!(
                value.len() <= cap,
                "{} bytes over a {cap}-byte cap",
                value.len()
            );
        }
    }
    if let Some(summary) = &event.fail_summary {
        assert!(
            summary.len() <= 64 * 1024 + 16,
            "failure summary of {} bytes",
            summary.len()
        );
    }
}

/// The RESP reply reader and what the pop and the subscription make of each reply
/// (`cpamp_collector::read_replies`).
///
/// The first byte picks chunk sizes; the rest is what CPA sent. Property: the replies,
/// their meaning and the final error are the same whether the bytes arrive at once or
/// split into chunks (a reply split at any byte reads the same), and every popped or
/// published payload is bytes CPA sent.
pub fn resp(data: &[u8]) {
    let Some((&seed, bytes)) = data.split_first() else {
        return;
    };
    let whole = cpamp_collector::read_replies([bytes]);
    let step = usize::from(seed % 7) + 1;
    let mut chunks = Vec::new();
    let mut rest = bytes;
    let mut size = step;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        chunks.push(chunk);
        rest = tail;
        // Sizes cycle through 1..=step + 3, so splits land at many different offsets.
        size = size % (step + 3) + 1;
    }
    let split = cpamp_collector::read_replies(chunks);
    assert_eq!(whole, split, "a split changed what was read");
    // Every payload is bytes CPA sent: together they never exceed the input.
    let mut delivered = 0;
    for reply in &whole.0 {
        if let Ok(items) = &reply.pop {
            for item in items {
                if let cpamp_collector::RawItem::Payload(payload) = item {
                    delivered += payload.len();
                }
            }
        }
        if let Ok(Some(payload)) = &reply.subscription {
            assert!(!payload.is_empty(), "an empty message was delivered");
            assert!(payload.len() <= bytes.len(), "a message CPA never sent");
        }
    }
    assert!(delivered <= bytes.len(), "popped payloads CPA never sent");
}

/// The usage import reader (`cpamp_domain::transfer::import::read_import`).
///
/// The first byte picks a read size; the rest is the uploaded file. Properties: the
/// report and every event are the same whether the reader sees the file at once or a
/// few bytes per read (as a slow upload delivers it); counters agree with what reached
/// the sink; imported events are within the plausibility bounds.
pub fn import(data: &[u8]) {
    let Some((&seed, bytes)) = data.split_first() else {
        return;
    };
    let (report, events) = read_import(bytes);
    let trickle = Trickle {
        bytes,
        step: usize::from(seed % 13) + 1,
    };
    let capacity = usize::from(seed / 13 % 8) + 1;
    let (slow_report, slow_events) = read_import(BufReader::with_capacity(capacity, trickle));
    assert_eq!(
        report_text(&report),
        report_text(&slow_report),
        "the read size changed the report"
    );
    assert_eq!(events, slow_events, "the read size changed the events");
    assert_eq!(report.events, events.len() as u64);
    assert!(report.issues.len() as u64 <= report.failed);
    assert!(report.issues.len() <= cpamp_domain::transfer::import::MAX_ISSUES);
}

fn read_import(
    input: impl std::io::BufRead,
) -> (
    cpamp_domain::transfer::import::ImportReport,
    Vec<UsageEvent>,
) {
    let mut events = Vec::new();
    let report = cpamp_domain::transfer::import::read_import(input, NOW_MS, &mut |event| {
        check_event(&event, false);
        events.push(event);
        ControlFlow::Continue(())
    });
    (report, events)
}

fn report_text(report: &cpamp_domain::transfer::import::ImportReport) -> String {
    format!(
        "{:?} {} {} {} {:?} {:?} {:?}",
        report.format,
        report.events,
        report.failed,
        report.unsupported,
        report.warnings,
        report.issues,
        report.error.as_ref().map(ToString::to_string)
    )
}

/// A reader that hands out at most `step` bytes per read.
struct Trickle<'a> {
    bytes: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(out.len()).min(self.bytes.len());
        out[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

const QUARTER_MS: i64 = 15 * 60 * 1000;
const HOUR_MS: i64 = 60 * 60 * 1000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// The analytics request parsers: the dashboard's query string
/// (`GET /dashboard/summary`) and the monitoring body (`POST /monitoring/analytics`).
///
/// The first byte picks the parser; the rest is the request. Properties: an accepted
/// request is within the documented bounds (ranges ordered and positive, page sizes
/// capped), and the range can be planned: the time-zone checks storage runs first on
/// every accepted range finish, and bucket starts never lie after the instant.
pub fn analytics(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        let query = String::from_utf8_lossy(bytes);
        if let Ok(request) = cpamp_api::routes::dashboard_request(&query, NOW_MS) {
            assert!(request.today_start_ms > 0);
            assert!(request.now_ms >= request.today_start_ms);
            assert!(request.top_models >= 1);
            assert!((1..=50_000).contains(&request.recent_failures));
            assert_eq!(request.generated_at_ms, NOW_MS);
        }
        return;
    }
    let Ok(request) = cpamp_api::routes::monitoring_request(bytes, NOW_MS) else {
        return;
    };
    let scope = &request.scope;
    assert!(0 < scope.from_ms && scope.from_ms < scope.to_ms);
    assert!(request.now_ms > 0);
    assert!(request.include.recent_failures <= 50_000);
    if let Some(page) = &request.include.events_page {
        assert!((1..=50_000).contains(&page.limit));
    }
    if let Some((_, _, limit)) = request.include.drilldown_preview {
        assert!((1..=100).contains(&limit));
    }
    plan(
        &request.zone,
        request.granularity,
        scope.from_ms,
        scope.to_ms,
    );
}

/// What storage computes from an accepted range before reading anything.
fn plan(zone: &Zone, granularity: Granularity, from_ms: i64, to_ms: i64) {
    for block in [QUARTER_MS, HOUR_MS, DAY_MS] {
        let _ = zone.lossless(granularity, block, from_ms, to_ms);
    }
    for ms in [from_ms, to_ms - 1] {
        let bucket = zone.bucket(granularity, ms);
        assert!(
            bucket <= ms || bucket == 0,
            "bucket {bucket} starts after {ms}"
        );
        let _ = zone.label(granularity, bucket);
    }
}
