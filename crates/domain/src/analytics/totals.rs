//! Summing group rows: metrics, read-time cost and last-seen time of a set of rows.

#![warn(missing_docs)]

use std::collections::BTreeMap;

use super::Metrics;
use super::cost::{Band, PriceBook, add_cost};
use super::query::GroupRow;

/// The read-time cost of one group row under `book`; `None` when its model has no
/// price.
pub fn row_cost(book: &PriceBook, row: &GroupRow) -> Option<f64> {
    book.band_cost(band_of(row), &row.metrics)
}

/// The price-relevant key of a group row.
pub fn band_of(row: &GroupRow) -> Band<'_> {
    Band {
        model: &row.model,
        billing_model: &row.billing_model,
        service_tier: &row.service_tier,
        context_band: row.context_band,
    }
}

/// The billing models of `rows` that carry tokens but have no price (what makes a
/// cost `null`), sorted.
pub fn unpriced_models(book: &PriceBook, rows: &[GroupRow]) -> Vec<String> {
    book.unpriced(rows.iter().map(|row| (band_of(row), &row.metrics)))
}

/// Metrics, cost and last-seen time of a set of rows. The cost is `None` once any
/// row had no price (the sum is then unknown); with no row it is `Some(0.0)`.
#[derive(Debug, Clone, Copy)]
pub struct Totals {
    /// The summed metrics.
    pub metrics: Metrics,
    /// The summed cost, USD; `None` when any row had no price.
    pub cost: Option<f64>,
    /// The newest event's time, Unix ms (0 without rows).
    pub last_seen_ms: i64,
}

impl Default for Totals {
    fn default() -> Totals {
        Totals {
            metrics: Metrics::default(),
            cost: Some(0.0),
            last_seen_ms: 0,
        }
    }
}

impl Totals {
    /// Adds a row whose cost was already computed.
    pub fn add(&mut self, row: &GroupRow, cost: Option<f64>) {
        self.metrics.add(&row.metrics);
        self.cost = add_cost(self.cost, cost);
        self.last_seen_ms = self.last_seen_ms.max(row.last_seen_ms);
    }

    /// The totals of `rows`.
    pub fn of(book: &PriceBook, rows: &[GroupRow]) -> Totals {
        let mut totals = Totals::default();
        for row in rows {
            totals.add(row, row_cost(book, row));
        }
        totals
    }
}

/// Per-key totals, in key order.
pub fn group_by<K: Ord>(
    book: &PriceBook,
    rows: &[GroupRow],
    key: impl Fn(&GroupRow) -> K,
) -> BTreeMap<K, Totals> {
    let mut out: BTreeMap<K, Totals> = BTreeMap::new();
    for row in rows {
        out.entry(key(row))
            .or_default()
            .add(row, row_cost(book, row));
    }
    out
}

/// Sort key that puts an unknown cost after every known one (descending order).
pub fn cost_key(cost: Option<f64>) -> f64 {
    cost.unwrap_or(-1.0)
}

/// `calls`, `success_calls`, `failure_calls` and `success_rate` of a group row,
/// flattened into model, account, credential, API-key and context rows.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CallCounts {
    /// Upstream attempts.
    pub calls: i64,
    /// Attempts that did not fail.
    pub success_calls: i64,
    /// Failed attempts.
    pub failure_calls: i64,
    /// Successful over all attempts.
    pub success_rate: f64,
}

impl CallCounts {
    /// The counts of a group's metrics.
    pub fn of(metrics: &Metrics) -> CallCounts {
        CallCounts {
            calls: metrics.calls,
            success_calls: metrics.success(),
            failure_calls: metrics.failures,
            success_rate: metrics.success_rate(),
        }
    }
}

/// The input side and output token sums in their wire order: `input_tokens` (I,
/// normalized input), `output_tokens`, `cached_tokens` (C, compat cached),
/// `cache_read_tokens`, `cache_creation_tokens`. Flattened into every row that
/// shows token sums.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct TokenSums {
    /// Σ I: normalized input.
    pub input_tokens: i64,
    /// Output tokens, reasoning included.
    pub output_tokens: i64,
    /// Σ C: compat cached tokens.
    pub cached_tokens: i64,
    /// Σ R: cache reads.
    pub cache_read_tokens: i64,
    /// Σ W: cache writes.
    pub cache_creation_tokens: i64,
}

impl TokenSums {
    /// The token sums of a group's metrics.
    pub fn of(metrics: &Metrics) -> TokenSums {
        TokenSums {
            input_tokens: metrics.input,
            output_tokens: metrics.output,
            cached_tokens: metrics.cached,
            cache_read_tokens: metrics.cache_read,
            cache_creation_tokens: metrics.cache_creation,
        }
    }
}
