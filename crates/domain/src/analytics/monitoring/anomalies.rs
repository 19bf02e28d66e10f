//! `anomaly_points`: spikes and drops between consecutive timeline buckets.

use serde::Serialize;

use super::timeline::TimelinePoint;
use crate::analytics::ratio;
use crate::analytics::time::{DAY_MS, Granularity, HOUR_MS};

/// One `anomaly_points[]` row: a timeline bucket compared with the previous bucket
/// that had calls. Relative changes are fractions (`1.0` = +100 %); a change from 0 to
/// anything is `1.0`.
#[derive(Debug, Serialize)]
pub struct Anomaly {
    /// Start of the bucket, Unix milliseconds.
    pub bucket_ms: i64,
    /// End of the bucket (`bucket_ms` + 1 hour or 1 day), Unix milliseconds.
    pub bucket_end_ms: i64,
    /// The bucket's timeline label (`HH:MM` or `MM/DD` in the request's zone).
    pub label: String,
    /// `high` (three or more metrics), `medium` (two) or `low` (one).
    pub severity: &'static str,
    /// What jumped: `request_spike` (calls more than doubled), `cost_spike` (cost more
    /// than doubled), `tokens_per_request_spike` (+50 %), `cache_hit_drop` (hit rate
    /// down more than 0.2), `failure_rate_spike` (failure rate up more than 0.2) or
    /// `latency_spike` (P95 latency +50 %).
    pub metric_keys: Vec<&'static str>,
    /// Calls in the bucket.
    pub calls: i64,
    /// Total tokens in the bucket.
    pub total_tokens: i64,
    /// Cost of the bucket in US dollars; `null` when a model has no price.
    pub cost: Option<f64>,
    /// Failure rate of the bucket, 0–1.
    pub failure_rate: f64,
    /// Relative change of calls.
    pub request_change: f64,
    /// Relative change of cost (an unknown cost counts as 0).
    pub cost_change: f64,
    /// Relative change of tokens per call.
    pub tokens_per_request_change: f64,
    /// Absolute change of the cache hit rate (−1 to 1).
    pub cache_hit_rate_change: f64,
    /// Absolute change of the failure rate (−1 to 1).
    pub failure_rate_change: f64,
    /// Relative change of P95 latency (a missing P95 counts as 0).
    pub latency_p95_change: f64,
}

pub(super) fn anomalies(points: &[TimelinePoint], granularity: Granularity) -> Vec<Anomaly> {
    let pct = |current: f64, previous: f64| {
        if previous <= 0.0 {
            if current > 0.0 { 1.0 } else { 0.0 }
        } else {
            (current - previous) / previous
        }
    };
    let mut out: Vec<(f64, Anomaly)> = Vec::new();
    for pair in points.windows(2) {
        let (previous, current) = (&pair[0], &pair[1]);
        let request_change = pct(current.calls as f64, previous.calls as f64);
        let cost_change = pct(current.cost.unwrap_or(0.0), previous.cost.unwrap_or(0.0));
        let tokens_per_request_change = pct(
            ratio(current.total_tokens as f64, current.calls as f64),
            ratio(previous.total_tokens as f64, previous.calls as f64),
        );
        let cache_hit_rate_change = current.cache_hit_rate - previous.cache_hit_rate;
        let failure_rate_change = current.failure_rate - previous.failure_rate;
        let latency_p95_change = pct(
            current.p95_latency_ms.unwrap_or(0) as f64,
            previous.p95_latency_ms.unwrap_or(0) as f64,
        );
        let mut keys = Vec::new();
        if request_change > 1.0 {
            keys.push("request_spike");
        }
        if cost_change > 1.0 {
            keys.push("cost_spike");
        }
        if tokens_per_request_change > 0.5 {
            keys.push("tokens_per_request_spike");
        }
        if cache_hit_rate_change < -0.2 {
            keys.push("cache_hit_drop");
        }
        if failure_rate_change > 0.2 {
            keys.push("failure_rate_spike");
        }
        if latency_p95_change > 0.5 {
            keys.push("latency_spike");
        }
        if keys.is_empty() {
            continue;
        }
        let score = 10.0 * keys.len() as f64
            + [
                request_change,
                cost_change,
                tokens_per_request_change,
                -cache_hit_rate_change,
                failure_rate_change,
                latency_p95_change,
            ]
            .iter()
            .map(|value| value.max(0.0))
            .sum::<f64>();
        let step = match granularity {
            Granularity::Hour => HOUR_MS,
            Granularity::Day => DAY_MS,
        };
        out.push((
            score,
            Anomaly {
                bucket_ms: current.bucket_ms,
                bucket_end_ms: current.bucket_ms + step,
                label: current.label.clone(),
                severity: match keys.len() {
                    0 | 1 => "low",
                    2 => "medium",
                    _ => "high",
                },
                metric_keys: keys,
                calls: current.calls,
                total_tokens: current.total_tokens,
                cost: current.cost,
                failure_rate: current.failure_rate,
                request_change,
                cost_change,
                tokens_per_request_change,
                cache_hit_rate_change,
                failure_rate_change,
                latency_p95_change,
            },
        ));
    }
    out.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then_with(|| b.1.bucket_ms.cmp(&a.1.bucket_ms))
    });
    out.into_iter()
        .take(50)
        .map(|(_, anomaly)| anomaly)
        .collect()
}
