//! `timeline`: per local bucket, with exact P95 latency and TTFT per bucket.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::analytics::cost::PriceBook;
use crate::analytics::percentile::{PerSeries, Percentiles};
use crate::analytics::query::GroupRow;
use crate::analytics::time::{Granularity, Zone};
use crate::analytics::totals::{TokenSums, Totals, row_cost};

/// One `timeline[]` point: the calls of one local bucket (an hour or a day in the
/// request's time zone). Only buckets with calls are listed.
#[derive(Debug, Serialize, Clone)]
pub struct TimelinePoint {
    /// Start of the local bucket, Unix milliseconds.
    pub bucket_ms: i64,
    /// The bucket in the request's zone: `HH:MM` for hours, `MM/DD` for days.
    pub label: String,
    /// Calls in the bucket.
    pub calls: i64,
    /// Total tokens (same as `total_tokens`).
    pub tokens: i64,
    /// Calls that succeeded.
    pub success: i64,
    /// Calls that failed.
    pub failure: i64,
    /// Input, output and cache token sums.
    #[serde(flatten)]
    pub token_sums: TokenSums,
    /// `(cached + cache_read) / input`, 0–1.
    pub cache_hit_rate: f64,
    /// Reasoning tokens (part of output).
    pub reasoning_tokens: i64,
    /// Total tokens as reported.
    pub total_tokens: i64,
    /// Cost in US dollars; `null` when a model in the bucket has no price.
    pub cost: Option<f64>,
    /// Mean latency in milliseconds over calls that reported one; `null` when none.
    pub average_latency_ms: Option<f64>,
    /// Exact 95th-percentile latency of the bucket, ms; `null` without samples.
    pub p95_latency_ms: Option<i64>,
    /// Exact 95th-percentile time to first token of the bucket, ms; `null` without
    /// samples.
    pub p95_ttft_ms: Option<i64>,
    /// `success / calls`, 0–1.
    pub success_rate: f64,
    /// `failure / calls`, 0–1.
    pub failure_rate: f64,
}

/// The percentiles each bucket shows: P95 latency and P95 TTFT.
pub(super) fn asked() -> PerSeries<Vec<f64>> {
    PerSeries {
        latency: vec![0.95],
        ttft: vec![0.95],
    }
}

pub(super) fn timeline_points(
    book: &PriceBook,
    rows: &[GroupRow],
    samples: &Percentiles,
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
    buckets
        .into_iter()
        .filter(|(_, acc)| acc.metrics.calls > 0)
        .map(|(bucket_ms, acc)| {
            let m = acc.metrics;
            let (p95_latency_ms, p95_ttft_ms) = samples
                .buckets
                .get(&bucket_ms)
                .map(|p95| {
                    (
                        p95.latency.first().copied().flatten(),
                        p95.ttft.first().copied().flatten(),
                    )
                })
                .unwrap_or((None, None));
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
