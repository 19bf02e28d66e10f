//! `timeline`: per local bucket, with exact P95 latency and TTFT per bucket.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::analytics::cost::PriceBook;
use crate::analytics::nearest_rank;
use crate::analytics::query::{GroupRow, SampleBlock};
use crate::analytics::time::{Granularity, Zone};
use crate::analytics::totals::{TokenSums, Totals, row_cost};

#[derive(Debug, Serialize, Clone)]
pub struct TimelinePoint {
    pub bucket_ms: i64,
    pub label: String,
    pub calls: i64,
    pub tokens: i64,
    pub success: i64,
    pub failure: i64,
    #[serde(flatten)]
    pub token_sums: TokenSums,
    pub cache_hit_rate: f64,
    pub reasoning_tokens: i64,
    pub total_tokens: i64,
    pub cost: Option<f64>,
    pub average_latency_ms: Option<f64>,
    pub p95_latency_ms: Option<i64>,
    pub p95_ttft_ms: Option<i64>,
    pub success_rate: f64,
    pub failure_rate: f64,
}

pub(super) fn timeline_points(
    book: &PriceBook,
    rows: &[GroupRow],
    samples: &[SampleBlock],
    zone: &Zone,
    granularity: Granularity,
) -> Vec<TimelinePoint> {
    let mut buckets: BTreeMap<i64, Totals> = BTreeMap::new();
    for row in rows {
        buckets
            .entry(row.bucket_ms)
            .or_default()
            .add(row, row_cost(book, row));
    }
    let mut p95: HashMap<i64, (Option<i64>, Option<i64>)> = HashMap::new();
    let mut scratch: Vec<u32> = Vec::new();
    for block in samples {
        // One scratch buffer, so percentiles never double the samples in memory.
        scratch.clear();
        scratch.extend_from_slice(&block.latencies);
        let latency = nearest_rank(&mut scratch, 0.95);
        scratch.clear();
        scratch.extend_from_slice(&block.ttfts);
        p95.insert(block.bucket_ms, (latency, nearest_rank(&mut scratch, 0.95)));
    }
    buckets
        .into_iter()
        .filter(|(_, acc)| acc.metrics.calls > 0)
        .map(|(bucket_ms, acc)| {
            let m = acc.metrics;
            let (p95_latency_ms, p95_ttft_ms) =
                p95.get(&bucket_ms).copied().unwrap_or((None, None));
            TimelinePoint {
                bucket_ms,
                label: zone.label(granularity, bucket_ms),
                calls: m.calls,
                tokens: m.total,
                success: m.success(),
                failure: m.failures,
                token_sums: TokenSums::of(&m),
                cache_hit_rate: m.cache_hit_rate(),
                reasoning_tokens: m.reasoning,
                total_tokens: m.total,
                cost: acc.cost,
                average_latency_ms: m.average_latency(),
                p95_latency_ms,
                p95_ttft_ms,
                success_rate: m.success_rate(),
                failure_rate: m.failure_rate(),
            }
        })
        .collect()
}
