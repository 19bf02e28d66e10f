//! `summary` (compact or full profile, optional exact percentiles) and
//! `summary_comparison` (the same scope over the previous window).

use std::collections::BTreeSet;

use serde::Serialize;

use super::tasks::{TaskBucket, newest_task_buckets};
use crate::analytics::cost::PriceBook;
use crate::analytics::percentile::{PerSeries, Percentiles};
use crate::analytics::query::{AnalyticsStore, GroupRequest, GroupRow, Scope};
use crate::analytics::time::{Granularity, MINUTE_MS, Zone};
use crate::analytics::totals::{TokenSums, Totals};
use crate::analytics::{Metrics, ratio};
use crate::ports::StoreError;

/// `summary` of the monitoring answer: totals of the scope. In the compact profile
/// the rolling, per-day and task figures are 0, `zero_token_models` is `null`, and the
/// percentiles are `null` unless `summary_percentiles` was asked for.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Calls (upstream attempts), failed ones included.
    pub total_calls: i64,
    /// Calls that succeeded.
    pub success_calls: i64,
    /// Calls that failed.
    pub failure_calls: i64,
    /// `success_calls / total_calls`, 0–1 (0 without calls).
    pub success_rate: f64,
    /// Input, output and cache token sums (`input_tokens` … `cache_creation_tokens`).
    #[serde(flatten)]
    pub token_sums: TokenSums,
    /// Share of input served from the cache, `(cached + cache_read) / input`, 0–1.
    pub cache_hit_rate: f64,
    /// Reasoning tokens (part of output).
    pub reasoning_tokens: i64,
    /// Total tokens as the upstream reported them.
    pub total_tokens: i64,
    /// Cost in US dollars; `null` when a model in the scope has no price.
    pub total_cost: Option<f64>,
    /// `total_cost / total_calls`, US dollars; `null` when the cost is unknown.
    pub average_cost_per_call: Option<f64>,
    /// Mean latency in milliseconds over calls that reported one; `null` when none.
    pub average_latency_ms: Option<f64>,
    /// Nearest-rank 95th-percentile latency, ms; `null` without samples or when not
    /// computed.
    pub p95_latency_ms: Option<i64>,
    /// Nearest-rank 95th-percentile time to first token, ms (streaming calls only);
    /// `null` without samples or when not computed.
    pub p95_ttft_ms: Option<i64>,
    /// Median latency, ms; `null` without samples or when not computed.
    pub p50_latency_ms: Option<i64>,
    /// 99th-percentile latency, ms; `null` without samples or when not computed.
    pub p99_latency_ms: Option<i64>,
    /// Successful calls that reported a total of 0 tokens.
    pub zero_token_calls: i64,
    /// Calls per minute over the 30 minutes before `now_ms` (full profile).
    pub rpm_30m: f64,
    /// Tokens per minute over the 30 minutes before `now_ms` (full profile).
    pub tpm_30m: f64,
    /// Calls per active day (local dates with calls, at least 1) (full profile).
    pub avg_daily_requests: f64,
    /// Tokens per active day (full profile).
    pub avg_daily_tokens: f64,
    /// Number of approximate tasks (at most 500) (full profile).
    pub approx_tasks: i64,
    /// Tasks with at least one failed call (full profile).
    pub approx_task_failures: i64,
    /// `(approx_tasks − approx_task_failures) / approx_tasks`, 0–1 (full profile).
    pub approx_task_success_rate: f64,
    /// Analytics models of zero-token calls, sorted; `null` in the compact profile.
    pub zero_token_models: Option<Vec<String>>,
}

/// `summary_comparison`: the same filters over `[from − (to − from), from)`.
#[derive(Debug, Serialize)]
pub struct Comparison {
    /// Start of the previous window, Unix milliseconds.
    pub from_ms: i64,
    /// End of the previous window (the request's `from_ms`), Unix milliseconds.
    pub to_ms: i64,
    /// Calls in the previous window.
    pub total_calls: i64,
    /// Calls that succeeded.
    pub success_calls: i64,
    /// Calls that failed.
    pub failure_calls: i64,
    /// `success_calls / total_calls`, 0–1.
    pub success_rate: f64,
    /// Total tokens of the previous window.
    pub total_tokens: i64,
    /// Cost in US dollars; `null` when a model has no price.
    pub total_cost: Option<f64>,
}

/// The percentiles the summary shows, in this order: P95, P50 and P99 latency,
/// and P95 TTFT.
pub(super) fn asked() -> PerSeries<Vec<f64>> {
    PerSeries {
        latency: vec![0.95, 0.50, 0.99],
        ttft: vec![0.95],
    }
}

/// What the summary is computed from.
pub(super) struct SummaryInput<'a> {
    pub scope: &'a Scope,
    pub zone: &'a Zone,
    pub granularity: Granularity,
    /// The anchor of the rolling 30 minutes.
    pub now_ms: i64,
    /// The full profile (rolling 30 minutes, active days, zero-token models, tasks).
    pub full: bool,
    /// Exact P50/P95/P99 latency and P95 TTFT (always in the full profile).
    pub percentiles: bool,
    /// The scope's rows, bucketed by `granularity`.
    pub rows: &'a [GroupRow],
    pub totals: &'a Totals,
    pub samples: &'a Percentiles,
}

/// The summary, and the task buckets when the full profile computed them.
pub(super) async fn summary<S: AnalyticsStore>(
    store: &S,
    input: SummaryInput<'_>,
) -> Result<(Summary, Option<Vec<TaskBucket>>), StoreError> {
    let SummaryInput {
        scope,
        zone,
        granularity,
        now_ms,
        full,
        percentiles,
        rows,
        totals,
        samples,
    } = input;
    let m = totals.metrics;
    let (mut p95_latency, mut p95_ttft, mut p50, mut p99) = (None, None, None, None);
    if full || percentiles {
        if let [p95, median, tail] = samples.overall.latency[..] {
            (p95_latency, p50, p99) = (p95, median, tail);
        }
        p95_ttft = samples.overall.ttft.first().copied().flatten();
    }
    let mut summary = Summary {
        total_calls: m.calls,
        success_calls: m.success(),
        failure_calls: m.failures,
        success_rate: m.success_rate(),
        token_sums: TokenSums::of(&m),
        cache_hit_rate: m.cache_hit_rate(),
        reasoning_tokens: m.reasoning,
        total_tokens: m.total,
        total_cost: totals.cost,
        average_cost_per_call: totals.cost.map(|cost| ratio(cost, m.calls as f64)),
        average_latency_ms: m.average_latency(),
        p95_latency_ms: p95_latency,
        p95_ttft_ms: p95_ttft,
        p50_latency_ms: p50,
        p99_latency_ms: p99,
        zero_token_calls: m.zero_token_calls,
        rpm_30m: 0.0,
        tpm_30m: 0.0,
        avg_daily_requests: 0.0,
        avg_daily_tokens: 0.0,
        approx_tasks: 0,
        approx_task_failures: 0,
        approx_task_success_rate: 0.0,
        zero_token_models: None,
    };
    if !full {
        return Ok((summary, None));
    }
    let rolling = store
        .groups(GroupRequest {
            scope: scope.with_range(now_ms - 30 * MINUTE_MS, now_ms),
            identity: false,
            timeline: None,
        })
        .await?;
    let mut rolling_metrics = Metrics::default();
    for row in &rolling {
        rolling_metrics.add(&row.metrics);
    }
    summary.rpm_30m = rolling_metrics.calls as f64 / 30.0;
    summary.tpm_30m = rolling_metrics.total as f64 / 30.0;
    let day_rows = if granularity == Granularity::Day {
        None
    } else {
        Some(
            store
                .groups(GroupRequest {
                    scope: scope.clone(),
                    identity: false,
                    timeline: Some((zone.clone(), Granularity::Day)),
                })
                .await?,
        )
    };
    let days: BTreeSet<i64> = day_rows
        .as_deref()
        .unwrap_or(rows)
        .iter()
        .filter(|row| row.metrics.calls > 0)
        .map(|row| row.bucket_ms)
        .collect();
    let active_days = days.len().max(1) as f64;
    summary.avg_daily_requests = m.calls as f64 / active_days;
    summary.avg_daily_tokens = m.total as f64 / active_days;
    let zero_token_models: BTreeSet<&str> = rows
        .iter()
        .filter(|row| row.metrics.zero_token_calls > 0 && !row.model.is_empty())
        .map(|row| &*row.model)
        .collect();
    summary.zero_token_models = Some(zero_token_models.into_iter().map(str::to_string).collect());
    let tasks = newest_task_buckets(store, scope).await?;
    summary.approx_tasks = tasks.len() as i64;
    summary.approx_task_failures = tasks.iter().filter(|task| task.failure > 0).count() as i64;
    summary.approx_task_success_rate = ratio(
        (summary.approx_tasks - summary.approx_task_failures) as f64,
        summary.approx_tasks as f64,
    );
    Ok((summary, Some(tasks)))
}

/// The same scope over `[from − span, from)`; `None` when that window would start
/// at or before 0.
pub(super) async fn comparison<S: AnalyticsStore>(
    store: &S,
    book: &PriceBook,
    scope: &Scope,
) -> Result<Option<Comparison>, StoreError> {
    let span = scope.to_ms - scope.from_ms;
    let start = scope.from_ms - span;
    if start <= 0 {
        return Ok(None);
    }
    let rows = store
        .groups(GroupRequest {
            scope: scope.with_range(start, scope.from_ms),
            identity: false,
            timeline: None,
        })
        .await?;
    let totals = Totals::of(book, &rows);
    let m = totals.metrics;
    Ok(Some(Comparison {
        from_ms: start,
        to_ms: scope.from_ms,
        total_calls: m.calls,
        success_calls: m.success(),
        failure_calls: m.failures,
        success_rate: m.success_rate(),
        total_tokens: m.total,
        total_cost: totals.cost,
    }))
}
