//! A long, realistic stream of CPA usage payloads for round-trip tests and benchmarks.
//!
//! It cycles through the captured CPA v7.2.140 payloads of
//! `crates/domain/tests/fixtures/cpa/usage-events.jsonl` (response headers, quota
//! windows, nanosecond timestamps, failure bodies, accounting breakdowns) and the
//! generator's payloads, giving each a unique request id and a timestamp spread evenly
//! over a time span, so every payload is a distinct event.

use serde_json::Value;

const CAPTURED: &str = include_str!("../../domain/tests/fixtures/cpa/usage-events.jsonl");

/// Deterministic payloads: `count` of them, timestamps from `start_ms` on, `step_ms` apart
/// (plus a sub-millisecond part, as CPA sends nanoseconds).
#[derive(Debug)]
pub struct Corpus {
    templates: Vec<Value>,
    produced: u64,
    count: u64,
    start_ms: i64,
    step_ms: i64,
}

impl Corpus {
    /// A corpus of `count` payloads, the first at `start_ms`, each `step_ms` after the last.
    pub fn new(count: u64, start_ms: i64, step_ms: i64) -> Corpus {
        let mut templates: Vec<Value> = CAPTURED
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        for emitted in crate::events::EventGenerator::new(11).generate(60) {
            if let Ok(value) = serde_json::from_slice(&emitted.payload) {
                templates.push(value);
            }
        }
        Corpus {
            templates,
            produced: 0,
            count,
            start_ms,
            step_ms,
        }
    }
}

impl Iterator for Corpus {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.produced >= self.count {
            return None;
        }
        let index = self.produced;
        self.produced += 1;
        let template = &self.templates[(index % self.templates.len() as u64) as usize];
        let mut payload = template.clone();
        if let Value::Object(members) = &mut payload {
            let ms = self.start_ms + index as i64 * self.step_ms;
            let nanos = (index % 997) * 1_009;
            let timestamp = jiff::Timestamp::from_millisecond(ms)
                .ok()
                .and_then(|at| {
                    at.checked_add(jiff::SignedDuration::from_nanos(nanos as i64))
                        .ok()
                })
                .map(|at| at.to_string())
                .unwrap_or_default();
            members.insert("timestamp".into(), Value::String(timestamp));
            members.insert("request_id".into(), Value::String(format!("{index:010x}")));
        }
        serde_json::to_vec(&payload).ok()
    }
}
