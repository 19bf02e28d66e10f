//! `model_share` and `model_stats`: per analytics model, pricing bands merged
//! (also the `models[]` nested in account, credential and API-key rows).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::analytics::cost::PriceBook;
use crate::analytics::query::{GroupRow, Text};
use crate::analytics::totals::{CallCounts, TokenSums, Totals, cost_key, row_cost};

/// One `model_share[]` row: a model's part of the scope, most calls first.
#[derive(Debug, Serialize)]
pub struct ModelShare {
    /// Analytics model (`-` when blank).
    pub model: String,
    /// Calls of the model.
    pub calls: i64,
    /// Total tokens of the model.
    pub tokens: i64,
    /// Cost in US dollars; `null` when the model has no price.
    pub cost: Option<f64>,
}

/// One `model_stats[]` row, or one `models[]` item nested in account, credential
/// and API-key rows: an analytics model with its price bands merged.
#[derive(Debug, Serialize, Clone)]
pub struct ModelStat {
    /// Analytics model (`-` when blank).
    pub model: String,
    /// Calls, successes, failures and success rate.
    #[serde(flatten)]
    pub counts: CallCounts,
    /// Input, output and cache token sums.
    #[serde(flatten)]
    pub token_sums: TokenSums,
    /// Input tokens served from the cache (cached + cache read).
    pub cache_hit_tokens: i64,
    /// All input tokens, the denominator of the hit rate.
    pub cache_hit_input_tokens: i64,
    /// `cache_hit_tokens / cache_hit_input_tokens`, 0–1.
    pub cache_hit_rate: f64,
    /// Total tokens as reported.
    pub total_tokens: i64,
    /// Cost in US dollars; `null` when the model has no price.
    pub cost: Option<f64>,
    /// Time of the model's newest call, Unix milliseconds; only in the nested
    /// `models[]` lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<i64>,
}

fn model_stat(model: &str, acc: &Totals, with_last_seen: bool) -> ModelStat {
    let m = &acc.metrics;
    ModelStat {
        model: if model.is_empty() {
            "-".to_string()
        } else {
            model.to_string()
        },
        counts: CallCounts::of(m),
        token_sums: TokenSums::of(m),
        cache_hit_tokens: m.cache_hit_tokens(),
        cache_hit_input_tokens: m.input,
        cache_hit_rate: m.cache_hit_rate(),
        total_tokens: m.total,
        cost: acc.cost,
        last_seen_ms: with_last_seen.then_some(acc.last_seen_ms),
    }
}

pub(super) fn model_stats(book: &PriceBook, rows: &[GroupRow]) -> Vec<ModelStat> {
    let mut by_model: BTreeMap<&str, Totals> = BTreeMap::new();
    for row in rows {
        by_model
            .entry(&row.model)
            .or_default()
            .add(row, row_cost(book, row));
    }
    let mut out: Vec<ModelStat> = by_model
        .iter()
        .map(|(model, acc)| model_stat(model, acc, false))
        .collect();
    out.sort_by(|a, b| {
        b.counts
            .calls
            .cmp(&a.counts.calls)
            .then_with(|| a.model.cmp(&b.model))
    });
    out
}

pub(super) fn nested_models(models: &BTreeMap<Text, Totals>) -> Vec<ModelStat> {
    let mut out: Vec<ModelStat> = models
        .iter()
        .map(|(model, acc)| model_stat(model, acc, true))
        .collect();
    out.sort_by(|a, b| {
        cost_key(b.cost)
            .total_cmp(&cost_key(a.cost))
            .then_with(|| b.counts.calls.cmp(&a.counts.calls))
            .then_with(|| b.last_seen_ms.cmp(&a.last_seen_ms))
            .then_with(|| a.model.cmp(&b.model))
    });
    out
}

/// `model_share`: the model stats reduced to calls, tokens and cost.
pub(super) fn model_share(stats: &[ModelStat]) -> Vec<ModelShare> {
    stats
        .iter()
        .map(|stat| ModelShare {
            model: stat.model.clone(),
            calls: stat.counts.calls,
            tokens: stat.total_tokens,
            cost: stat.cost,
        })
        .collect()
}
