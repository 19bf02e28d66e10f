//! Analytics: the dashboard, monitoring and usage-analytics read model.
//!
//! Storage answers with pre-aggregated group rows (from rollups where possible,
//! raw events otherwise) and exact latency percentiles, selected through the
//! value bands of `percentile`; this module turns them into the response
//! sections. Every number a response carries is computed here from those
//! rows, so the rules (success/failure, zero-token calls, cache accounting,
//! nearest-rank P95, cost at read time) live in one place and are unit-tested
//! without a database.
//!
//! Response types derive `serde::Serialize` in wire key order rather than being
//! mirrored by DTOs in the API crate: the shapes are large and purely data, and
//! one definition keeps key order and omission rules next to the rules that fill
//! them.
//!
//! Layout:
//! - `time`: IANA zones and Go-compatible local buckets.
//! - `model`: the analytics-model suffix rule.
//! - `cost`: the price book and the read-time cost of a band of token sums.
//! - `explain`: the cost of one request, line by line.
//! - `query`: request types (scope, filters), the rows storage answers with, and
//!   the storage port.
//! - `percentile`: exact percentiles selected through value bands.
//! - `totals`: summing rows (metrics, cost, last seen).
//! - `identity`: the credential/client-key fields response rows carry, one
//!   flattened type with a per-row-kind key layout.
//! - `headers`: the response-header metadata rows carry, one flattened type.
//! - `failures`: failed requests as failure lists show them.
//! - `dashboard`: `GET /dashboard/summary`.
//! - `monitoring/`: `POST /monitoring/analytics`, one section per file.
//! - `accounts/`: header snapshots, account history, account window usage.

pub mod accounts;
pub mod cost;
pub mod dashboard;
pub mod explain;
pub mod failures;
pub mod headers;
pub mod heat;
pub mod identity;
pub mod model;
pub mod monitoring;
pub mod percentile;
pub mod query;
pub mod time;
pub mod totals;

pub use model::analytics_model;

use crate::ports::StoreError;

/// Why a query failed: the request (400) or the store (500/503).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The request cannot be answered as asked (400).
    #[error(transparent)]
    Request(#[from] AnalyticsError),
    /// The store failed (500/503).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A request the analytics layer cannot answer as asked. Always the client's fault
/// (HTTP 400); the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalyticsError {
    /// The time zone is not an IANA name the server knows.
    #[error("invalid time zone: {0}")]
    InvalidTimeZone(String),
    /// Another invalid parameter; the message names it.
    #[error("{0}")]
    Invalid(String),
}

impl AnalyticsError {
    /// The machine-readable code of the error envelope.
    pub fn code(&self) -> &'static str {
        match self {
            AnalyticsError::InvalidTimeZone(_) => "invalid_time_zone",
            AnalyticsError::Invalid(_) => "request_failed",
        }
    }
}

/// Nearest-rank percentile over the positive values: sort ascending and take index
/// `ceil(p * n) - 1`. `None` when there is no positive value. Reorders `values`.
pub fn nearest_rank(values: &mut [u32], percentile: f64) -> Option<i64> {
    let mut positive = 0;
    for index in 0..values.len() {
        if values[index] > 0 {
            values.swap(positive, index);
            positive += 1;
        }
    }
    if positive == 0 {
        return None;
    }
    let slice = &mut values[..positive];
    let rank = ((percentile * positive as f64).ceil() as usize).clamp(1, positive) - 1;
    let (_, value, _) = slice.select_nth_unstable(rank);
    Some(i64::from(*value))
}

/// Token sums and counts of one group of events. Every field is a plain sum, so
/// groups merge by addition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Upstream attempts.
    pub calls: i64,
    /// Failed attempts.
    pub failures: i64,
    /// Σ I: normalized total input (prompt including cache buckets).
    pub input: i64,
    /// Output tokens (reasoning included).
    pub output: i64,
    /// Reasoning tokens (part of `output`).
    pub reasoning: i64,
    /// Σ C: compat cached tokens (cached beyond the explicit read/creation buckets).
    pub cached: i64,
    /// Σ R: input read from the cache.
    pub cache_read: i64,
    /// Σ W: input written to the cache.
    pub cache_creation: i64,
    /// Total tokens as reported.
    pub total: i64,
    /// Sum of the positive latencies reported, ms.
    pub latency_sum: i64,
    /// Attempts with a positive latency (the divisor of the mean).
    pub latency_samples: i64,
    /// Successful attempts with a total of 0 tokens.
    pub zero_token_calls: i64,
}

impl Metrics {
    /// Adds `other`, saturating at the `i64` bounds: a stored absurd value (a
    /// token count of `i64::MAX`, say) can pin a sum but never wrap it or fail a
    /// read.
    pub fn add(&mut self, other: &Metrics) {
        let sum = |a: &mut i64, b: i64| *a = a.saturating_add(b);
        sum(&mut self.calls, other.calls);
        sum(&mut self.failures, other.failures);
        sum(&mut self.input, other.input);
        sum(&mut self.output, other.output);
        sum(&mut self.reasoning, other.reasoning);
        sum(&mut self.cached, other.cached);
        sum(&mut self.cache_read, other.cache_read);
        sum(&mut self.cache_creation, other.cache_creation);
        sum(&mut self.total, other.total);
        sum(&mut self.latency_sum, other.latency_sum);
        sum(&mut self.latency_samples, other.latency_samples);
        sum(&mut self.zero_token_calls, other.zero_token_calls);
    }

    /// Attempts that did not fail.
    pub fn success(&self) -> i64 {
        self.calls.saturating_sub(self.failures)
    }

    /// Successful attempts over all attempts (0 without attempts).
    pub fn success_rate(&self) -> f64 {
        ratio(self.success() as f64, self.calls as f64)
    }

    /// Failed attempts over all attempts (0 without attempts).
    pub fn failure_rate(&self) -> f64 {
        ratio(self.failures as f64, self.calls as f64)
    }

    /// Mean latency over the samples; `None` without a sample.
    pub fn average_latency(&self) -> Option<f64> {
        (self.latency_samples > 0).then(|| self.latency_sum as f64 / self.latency_samples as f64)
    }

    /// Σ(C + R), each clamped at zero.
    pub fn cache_hit_tokens(&self) -> i64 {
        self.cached.max(0).saturating_add(self.cache_read.max(0))
    }

    /// (C + R) / I capped at 1; 0 when I ≤ 0.
    pub fn cache_hit_rate(&self) -> f64 {
        let input = self.input.max(0);
        if input <= 0 {
            return 0.0;
        }
        (self.cache_hit_tokens() as f64 / input as f64).min(1.0)
    }
}

/// The key an endpoint or analytics model is listed under in CPA's usage
/// payload (`GET /v0/management/usage`): the text itself, `-` when empty.
pub fn usage_payload_key(value: &str) -> &str {
    if value.is_empty() { "-" } else { value }
}

/// `numerator / denominator`, 0 when the denominator is not positive.
pub fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_p95_ignores_non_positive_values() {
        let mut values: Vec<u32> = (1..=20).collect();
        assert_eq!(nearest_rank(&mut values, 0.95), Some(19));
        let mut values = vec![0, 0, 300];
        assert_eq!(nearest_rank(&mut values, 0.95), Some(300));
        let mut values = vec![0, 0];
        assert_eq!(nearest_rank(&mut values, 0.95), None);
        let mut values = vec![5, 1, 4, 2, 3];
        assert_eq!(nearest_rank(&mut values, 0.5), Some(3));
        // ceil(0.95 * 21) - 1 = 19 -> the 20th smallest.
        let mut values: Vec<u32> = (1..=21).rev().collect();
        assert_eq!(nearest_rank(&mut values, 0.95), Some(20));
    }

    #[test]
    fn cache_hit_rate_is_capped_and_guarded() {
        let metrics = Metrics {
            input: 1000,
            cached: 400,
            cache_read: 0,
            ..Metrics::default()
        };
        assert_eq!(metrics.cache_hit_rate(), 0.4);
        let metrics = Metrics {
            input: 10,
            cached: 400,
            ..Metrics::default()
        };
        assert_eq!(metrics.cache_hit_rate(), 1.0);
        assert_eq!(Metrics::default().cache_hit_rate(), 0.0);
    }
}
