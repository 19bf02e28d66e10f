//! `GET /v0/management/usage` at its cap of 50,000 events, on realistic CPA
//! payloads: the answer holds exactly the newest events, nested by endpoint and
//! model with the newest first, and the server writes it without holding it: its
//! resident memory stays under a bound while answering, again and again.

use std::collections::BTreeMap;

use cpamp_domain::analytics::{analytics_model, usage_payload_key};
use cpamp_domain::decode::decode;
use cpamp_domain::event::{Decoded, UsageEvent};
use cpamp_domain::ports::{BatchOrigin, EventSink, IngestBatch};
use serde_json::Value;

use crate::support::{ServerProcess, client};

const ADMIN_KEY: &str = "cpamp-usage-payload-test-admin-key-0123";
/// More than the cap, so the oldest are left out.
const EVENTS: usize = 52_000;
const CAP: usize = 50_000;
/// Resident memory the (debug) server may reach while answering: the answer is
/// about 40 MB, and holding it with the events it is made of, as a buffered
/// answer does, takes several times that.
const RSS_BOUND_KIB: u64 = 96 * 1024;

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("proc status")
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
        .expect("field")
}

fn realistic_events() -> Vec<UsageEvent> {
    let mut traffic = cpamp_testkit::Traffic::new(0x05a9e);
    let start_ns: i128 = 1_764_547_200_000_000_000; // 2025-12-01T00:00:00Z
    (0..EVENTS)
        .map(|index| {
            let nanos = start_ns + index as i128 * 1_700_000_003;
            match decode(&traffic.payload(nanos), 0) {
                Decoded::Event(event) => *event,
                other => panic!("not an event: {other:?}"),
            }
        })
        .collect()
}

#[test]
fn usage_at_its_cap_is_the_newest_events_nested_and_streamed_in_bounded_memory() {
    let events = realistic_events();
    let data = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = cpamp_storage::SqliteStore::open(cpamp_storage::Options::new(
            data.path().join("usage.sqlite"),
        ))
        .await
        .expect("open");
        for chunk in events.chunks(2_000) {
            store
                .store_batch(IngestBatch {
                    origin: BatchOrigin::Collector("http://cpa".into()),
                    events: chunk.to_vec(),
                    dead_letters: Vec::new(),
                })
                .await
                .expect("seed");
        }
        store.close().await;
    });
    // What the answer must hold: the newest 50,000, per endpoint and model, newest first.
    let mut newest: Vec<&UsageEvent> = events.iter().collect();
    newest.sort_by_key(|event| std::cmp::Reverse(event.timestamp_ms));
    newest.truncate(CAP);
    let mut want: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for event in &newest {
        let model = analytics_model(event.requested_model.as_deref().unwrap_or(&event.model));
        let endpoint = event.endpoint.as_deref().unwrap_or("");
        want.entry((
            usage_payload_key(endpoint).to_string(),
            usage_payload_key(model).to_string(),
        ))
        .or_default()
        .push(event.timestamp.clone());
    }
    assert!(want.len() > 3, "several endpoint and model groups");
    let want_failed = newest.iter().filter(|event| event.failed).count();
    let want_tokens: i64 = newest.iter().map(|event| event.tokens.total).sum();
    drop(newest);
    drop(events);

    let server = ServerProcess::start(data.path(), &[("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY)]);
    let pid = server.child.id();
    for _ in 0..3 {
        let response = client()
            .get(server.url("/v0/management/usage"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .expect("get usage");
        assert_eq!(response.status().as_u16(), 200);
        let body = response.bytes().expect("body");
        assert!(body.len() > 20_000_000, "realistic details: {}", body.len());
        assert!(body.ends_with(b"}\n"));
        let usage: Value = serde_json::from_slice(&body).expect("one JSON object");
        assert_eq!(usage["total_requests"], CAP);
        assert_eq!(usage["failure_count"], want_failed);
        assert_eq!(usage["success_count"], CAP - want_failed);
        assert_eq!(usage["total_tokens"], want_tokens);
        let mut got: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for (endpoint, api) in usage["apis"].as_object().expect("apis") {
            for (model, entry) in api["models"].as_object().expect("models") {
                let details = entry["details"].as_array().expect("details");
                got.insert(
                    (endpoint.clone(), model.clone()),
                    details
                        .iter()
                        .map(|detail| detail["timestamp"].as_str().expect("timestamp").to_string())
                        .collect(),
                );
            }
        }
        assert_eq!(got.len(), want.len());
        assert!(
            got == want,
            "details differ from the newest events per group"
        );
    }
    let peak = proc_status_kib(pid, "VmHWM:");
    let now = proc_status_kib(pid, "VmRSS:");
    assert!(
        peak <= RSS_BOUND_KIB,
        "peak RSS {peak} KiB while answering /usage, bound {RSS_BOUND_KIB} KiB"
    );
    assert!(now <= RSS_BOUND_KIB, "RSS {now} KiB after /usage");
    let _ = server.terminate();
}
