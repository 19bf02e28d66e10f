//! `GET /v0/management/dashboard/summary`: today's totals, models, traffic,
//! health strip, token mix, channels and failures.

use std::collections::BTreeMap;

use serde::Serialize;

use super::cost::PriceBook;
use super::failures::{RecentFailure, recent_failure_item};
use super::identity::{ChannelKeys, FailureSourceKeys, IdentityFields};
use super::query::{AnalyticsStore, Cursor, FineBlock, GroupRequest, GroupRow, Identity, Scope};
use super::time::{DAY_MS, HOUR_MS, MINUTE_MS};
use super::totals::{TokenSums, Totals, cost_key, group_by, row_cost, unpriced_models};
use super::{QueryError, ratio};
use crate::ports::StoreError;

/// `GET /dashboard/summary` parameters, already validated.
#[derive(Debug, Clone)]
pub struct DashboardRequest {
    /// Start of "today" (`today_start_ms`), Unix milliseconds: the panel sends the
    /// browser's local midnight, and every dashboard bucket is a fixed offset from it
    /// (there is no time-zone parameter).
    pub today_start_ms: i64,
    /// End of the window (`now_ms`, exclusive), Unix milliseconds; the server clock when
    /// the caller sent none.
    pub now_ms: i64,
    /// Rows of `top_models_today` and `model_cost_rank` (`top_models`, default 5).
    pub top_models: usize,
    /// Rows of `recent_failures` (`recent_failures`, default 5).
    pub recent_failures: usize,
    /// The server clock when the request started, echoed as `generated_at_ms`.
    pub generated_at_ms: i64,
}

/// The body of `GET /dashboard/summary`: everything over `[today_start_ms, now_ms)`,
/// failures included. Every array is always present (`[]` when empty). Costs are US
/// dollars priced at read time; a `null` cost means some model in it has no price.
#[derive(Debug, Serialize)]
pub struct DashboardSummary {
    /// The server clock when the request started, Unix milliseconds.
    pub generated_at_ms: i64,
    /// The window the figures cover.
    pub window: DashboardWindow,
    /// Totals of the day so far.
    pub today: DashboardToday,
    /// Throughput over the last 30 minutes before `now_ms`.
    pub rolling_30m: Rolling,
    /// The busiest models of the day by calls (at most `top_models`).
    pub top_models_today: Vec<TopModel>,
    /// The most expensive models of the day (at most `top_models`).
    pub model_cost_rank: Vec<CostRank>,
    /// Exactly 24 hourly buckets from `today_start_ms`.
    pub traffic_timeline: Vec<TrafficPoint>,
    /// The same 24 hourly buckets as a heat strip.
    pub hourly_activity: Vec<HourlyActivity>,
    /// The day in 144 ten-minute buckets, coloured by failure rate.
    pub today_request_health_timeline: HealthTimeline,
    /// Exactly four segments in the order `input`, `cached`, `output`, `reasoning`.
    pub token_mix: Vec<TokenMix>,
    /// The five worst channels (auth indexes) of the day.
    pub channel_health: Vec<ChannelHealth>,
    /// The five biggest failure sources (client key × auth index) of the day.
    pub failure_sources: Vec<DashboardFailureSource>,
    /// The newest failed calls of the day, newest first (at most `recent_failures`).
    pub recent_failures: Vec<RecentFailure>,
    /// Models without a price behind a `null` cost today (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unpriced_models: Vec<String>,
}

/// `window` of the dashboard: the instants the figures were computed for, Unix
/// milliseconds.
#[derive(Debug, Serialize)]
pub struct DashboardWindow {
    /// Start of the day as the caller sent it.
    pub today_start_ms: i64,
    /// The effective end of the window (exclusive).
    pub now_ms: i64,
    /// `now_ms` − 30 minutes, the start of `rolling_30m`.
    pub rolling_30m_start_ms: i64,
}

/// `today` of the dashboard: totals over `[today_start_ms, now_ms)`.
#[derive(Debug, Serialize)]
pub struct DashboardToday {
    /// Calls (upstream attempts), failed ones included.
    pub total_calls: i64,
    /// Calls that did not fail.
    pub success_calls: i64,
    /// Calls that failed.
    pub failure_calls: i64,
    /// `success_calls / total_calls`, 0–1 (0 when there were no calls).
    pub success_rate: f64,
    /// Input, output and cache token sums (`input_tokens` … `cache_creation_tokens`).
    #[serde(flatten)]
    pub token_sums: TokenSums,
    /// Reasoning tokens reported by the upstream.
    pub reasoning_tokens: i64,
    /// Total tokens as the upstream reported them.
    pub total_tokens: i64,
    /// Cost of the day in US dollars; `null` when a model used today has no price.
    pub total_cost: Option<f64>,
    /// Mean latency in milliseconds over calls that reported one; `null` when none did.
    pub average_latency_ms: Option<f64>,
    /// Successful calls that reported a total of 0 tokens.
    pub zero_token_calls: i64,
}

/// `rolling_30m` of the dashboard: throughput over `[now − 30 min, now)`.
#[derive(Debug, Serialize)]
pub struct Rolling {
    /// Calls per minute (`total_calls / 30`).
    pub rpm: f64,
    /// Tokens per minute (`total_tokens / 30`).
    pub tpm: f64,
    /// Calls in the 30 minutes.
    pub total_calls: i64,
    /// Total tokens in the 30 minutes.
    pub total_tokens: i64,
}

/// One row of `top_models_today`: a model's day, its price bands merged.
#[derive(Debug, Serialize)]
pub struct TopModel {
    /// Analytics model name (reasoning-effort suffixes such as `(high)` removed).
    pub model: String,
    /// Calls of the day.
    pub calls: i64,
    /// Total tokens of the day.
    pub tokens: i64,
    /// Cost in US dollars; `null` when the model has no price.
    pub cost: Option<f64>,
    /// Share of calls that succeeded, 0–1.
    pub success_rate: f64,
}

/// One row of `model_cost_rank`: like [`TopModel`], ranked by cost.
#[derive(Debug, Serialize)]
pub struct CostRank {
    /// Analytics model name.
    pub model: String,
    /// Calls of the day.
    pub calls: i64,
    /// Total tokens of the day.
    pub tokens: i64,
    /// Cost in US dollars; `null` when the model has no price (ranked last).
    pub cost: Option<f64>,
    /// Share of calls that succeeded, 0–1.
    pub success_rate: f64,
    /// Cost relative to the day's most expensive model, 0–1 (bar length in the panel).
    pub cost_share: f64,
}

/// One hour of `traffic_timeline`: `[bucket_ms, bucket_ms + 1 h)`.
#[derive(Debug, Serialize)]
pub struct TrafficPoint {
    /// Start of the hour, `today_start_ms + i · 3 600 000`.
    pub bucket_ms: i64,
    /// Calls in the hour.
    pub calls: i64,
    /// Total tokens in the hour.
    pub tokens: i64,
    /// Calls that succeeded.
    pub success: i64,
    /// Calls that failed.
    pub failure: i64,
    /// Calls relative to the busiest hour, 0–1.
    pub calls_share: f64,
    /// Tokens relative to the hour with the most tokens, 0–1.
    pub tokens_share: f64,
    /// `failure / calls`, 0–1.
    pub failure_rate: f64,
}

/// One hour of `hourly_activity`, the heat strip over the same buckets as
/// [`TrafficPoint`].
#[derive(Debug, Serialize)]
pub struct HourlyActivity {
    /// Hour of the day counted from `today_start_ms`, 0–23.
    pub hour_index: i64,
    /// Start of the hour, Unix milliseconds.
    pub bucket_ms: i64,
    /// Calls in the hour.
    pub calls: i64,
    /// Total tokens in the hour.
    pub tokens: i64,
    /// The larger of the hour's calls and tokens shares, 0–1 (cell shade).
    pub intensity: f64,
}

/// `today_request_health_timeline`: the whole day (not only up to now) in 144
/// ten-minute buckets.
#[derive(Debug, Serialize)]
pub struct HealthTimeline {
    /// `today_start_ms`.
    pub from_ms: i64,
    /// `today_start_ms` + 24 h (the end of the day, not now).
    pub to_ms: i64,
    /// Bucket width in milliseconds, always 600 000.
    pub bucket_ms: i64,
    /// Successful calls over all points.
    pub success_calls: i64,
    /// Failed calls over all points.
    pub failure_calls: i64,
    /// All calls over all points.
    pub total_calls: i64,
    /// `success_calls / total_calls`, 0–1.
    pub success_rate: f64,
    /// Exactly 144 buckets.
    pub points: Vec<HealthPoint>,
}

/// Ten minutes of the health timeline.
#[derive(Debug, Serialize)]
pub struct HealthPoint {
    /// Start of the bucket, Unix milliseconds.
    pub bucket_ms: i64,
    /// Calls in the bucket.
    pub calls: i64,
    /// Total tokens in the bucket.
    pub tokens: i64,
    /// Calls that succeeded.
    pub success: i64,
    /// Calls that failed.
    pub failure: i64,
    /// `success / calls`, 0–1.
    pub success_rate: f64,
    /// `failure / calls`, 0–1.
    pub failure_rate: f64,
    /// Cell colour: `future` (after now), `empty` (no calls), `bad` (failure rate
    /// ≥ 10 %), `warn` (some failures) or `good`.
    pub tone: &'static str,
    /// Calls relative to the busiest bucket, 0–1.
    pub intensity: f64,
    /// The bucket starts after `now_ms` (the bucket holding now is not future).
    pub future: bool,
}

/// One segment of `token_mix`.
#[derive(Debug, Serialize)]
pub struct TokenMix {
    /// `input` (input without cached tokens), `cached` (cached, cache-read and
    /// cache-creation tokens), `output` or `reasoning`.
    pub key: &'static str,
    /// Tokens of the segment, after removing what the upstream counted twice so the
    /// segments do not exceed the total.
    pub tokens: i64,
    /// Share of the four segments' sum, 0–1.
    pub share: f64,
}

/// One row of `channel_health`: a channel (CPA auth index) over the day.
#[derive(Debug, Serialize)]
pub struct ChannelHealth {
    /// The auth index is `-` when empty.
    #[serde(flatten)]
    pub identity: IdentityFields<ChannelKeys>,
    /// Calls through the channel.
    pub calls: i64,
    /// Calls that failed.
    pub failures: i64,
    /// `failures / calls`, 0–1.
    pub failure_rate: f64,
    /// `(calls − failures) / calls`, 0–1.
    pub success_rate: f64,
    /// Total tokens through the channel today.
    pub tokens: i64,
    /// Cost in US dollars; `null` when a model used has no price.
    pub cost: Option<f64>,
    /// Mean latency in milliseconds over calls that reported one; `null` when none.
    pub average_latency_ms: Option<f64>,
    /// `bad` (success < 85 %, ≥ 5 failures or latency ≥ 30 s), `warn` (success < 95 %,
    /// any failure or latency ≥ 15 s) or `good`; rows are sorted worst first.
    pub tone: &'static str,
}

/// One row of `failure_sources`: a client key (source hash) × auth index pair with at
/// least one failure today.
#[derive(Debug, Serialize)]
pub struct DashboardFailureSource {
    /// Source, source hash, auth index (stored values, `""` when empty) and the
    /// account snapshots.
    #[serde(flatten)]
    pub identity: IdentityFields<FailureSourceKeys>,
    /// Calls of the pair.
    pub calls: i64,
    /// Calls that failed.
    pub failures: i64,
    /// `failures / calls`, 0–1.
    pub failure_rate: f64,
    /// Time of the pair's newest call, Unix milliseconds.
    pub last_seen_ms: i64,
    /// Mean latency in milliseconds over calls that reported one; `null` when none.
    pub average_latency_ms: Option<f64>,
    /// `bad` (failure rate ≥ 50 % or ≥ 5 failures) or `warn`.
    pub tone: &'static str,
}

/// Lexicographic max of non-empty values.
fn max_text(current: &mut String, candidate: &str) {
    if candidate > current.as_str() {
        *current = candidate.to_string();
    }
}

/// Snapshot texts of a group: lexicographic max of each, provider snapshot else provider.
#[derive(Default, Clone)]
struct Snapshots {
    source: String,
    account: String,
    label: String,
    auth_provider: String,
    provider: String,
}

impl Snapshots {
    fn add(&mut self, identity: &Identity) {
        max_text(&mut self.source, &identity.source);
        max_text(&mut self.account, &identity.account);
        max_text(&mut self.label, &identity.auth_label);
        max_text(&mut self.auth_provider, &identity.auth_provider);
        max_text(&mut self.provider, &identity.provider);
    }

    /// The identity fields of the group (keys and hashes are set by the caller).
    fn fields<L>(&self) -> IdentityFields<L> {
        let provider = if self.auth_provider.is_empty() {
            &self.provider
        } else {
            &self.auth_provider
        };
        IdentityFields {
            source: self.source.as_str().into(),
            account_snapshot: self.account.as_str().into(),
            auth_label_snapshot: self.label.as_str().into(),
            auth_provider_snapshot: provider.as_str().into(),
            ..IdentityFields::default()
        }
    }
}

/// Builds the dashboard summary: six store reads run concurrently over the day, the
/// last 30 minutes, 5-minute blocks and the newest failures, priced with one price book.
///
/// # Errors
///
/// [`QueryError`] when a store read fails.
pub async fn dashboard<S: AnalyticsStore>(
    store: &S,
    request: DashboardRequest,
) -> Result<DashboardSummary, QueryError> {
    let DashboardRequest {
        today_start_ms: start,
        now_ms: now,
        top_models,
        recent_failures,
        generated_at_ms,
    } = request;
    let book = store.price_book().await?;
    let today_scope = Scope::time_only(start, now);
    let rolling_start = now - 30 * MINUTE_MS;
    let (today_rows, rolling_rows, fine, failures) = futures_util::future::try_join4(
        store.groups(GroupRequest {
            scope: today_scope.clone(),
            identity: true,
            timeline: None,
        }),
        store.groups(GroupRequest {
            scope: Scope::time_only(rolling_start, now),
            identity: false,
            timeline: None,
        }),
        fine_counts(store, start, now),
        store.events_page(
            Scope {
                filters: super::query::Filters {
                    failed_only: true,
                    ..Default::default()
                },
                ..today_scope.clone()
            },
            Cursor::default(),
            recent_failures,
        ),
    )
    .await?;

    let today = Totals::of(&book, &today_rows);
    let m = &today.metrics;
    let rolling = Totals::of(&book, &rolling_rows).metrics;

    // Models, merged over bands.
    let models = group_by(&book, &today_rows, |row| row.model.to_string());
    let mut by_calls: Vec<(&String, &Totals)> = models.iter().collect();
    by_calls.sort_by(|a, b| {
        b.1.metrics
            .calls
            .cmp(&a.1.metrics.calls)
            .then_with(|| a.0.cmp(b.0))
    });
    let top_models_today = by_calls
        .iter()
        .take(top_models)
        .map(|(model, totals)| TopModel {
            model: model.to_string(),
            calls: totals.metrics.calls,
            tokens: totals.metrics.total,
            cost: totals.cost,
            success_rate: totals.metrics.success_rate(),
        })
        .collect();
    let max_cost = models
        .values()
        .filter_map(|totals| totals.cost)
        .fold(0.0_f64, f64::max);
    let mut by_cost: Vec<(&String, &Totals)> = models.iter().collect();
    by_cost.sort_by(|a, b| {
        cost_key(b.1.cost)
            .total_cmp(&cost_key(a.1.cost))
            .then_with(|| b.1.metrics.calls.cmp(&a.1.metrics.calls))
            .then_with(|| a.0.cmp(b.0))
    });
    let model_cost_rank = by_cost
        .iter()
        .take(top_models)
        .map(|(model, totals)| CostRank {
            model: model.to_string(),
            calls: totals.metrics.calls,
            tokens: totals.metrics.total,
            cost: totals.cost,
            success_rate: totals.metrics.success_rate(),
            cost_share: totals.cost.map_or(0.0, |cost| ratio(cost, max_cost)),
        })
        .collect();

    // Hourly traffic and the 10-minute health strip, from 5-minute blocks.
    let mut hours = [(0_i64, 0_i64, 0_i64); 24]; // calls, tokens, failures
    let mut tens = vec![(0_i64, 0_i64, 0_i64); 144];
    for block in &fine {
        let offset = block.bucket_ms - start;
        if offset < 0 {
            continue;
        }
        let hour = usize::try_from(offset / HOUR_MS).unwrap_or(usize::MAX);
        if let Some(slot) = hours.get_mut(hour) {
            add_block(slot, block);
        }
        let ten = usize::try_from(offset / (10 * MINUTE_MS)).unwrap_or(usize::MAX);
        if let Some(slot) = tens.get_mut(ten) {
            add_block(slot, block);
        }
    }
    let max_calls = hours.iter().map(|h| h.0).max().unwrap_or(0) as f64;
    let max_tokens = hours.iter().map(|h| h.1).max().unwrap_or(0) as f64;
    let mut traffic_timeline = Vec::with_capacity(24);
    let mut hourly_activity = Vec::with_capacity(24);
    for (index, (calls, tokens, failures)) in hours.iter().enumerate() {
        let bucket_ms = start + index as i64 * HOUR_MS;
        let calls_share = ratio(*calls as f64, max_calls);
        let tokens_share = ratio(*tokens as f64, max_tokens);
        traffic_timeline.push(TrafficPoint {
            bucket_ms,
            calls: *calls,
            tokens: *tokens,
            success: calls - failures,
            failure: *failures,
            calls_share,
            tokens_share,
            failure_rate: ratio(*failures as f64, *calls as f64),
        });
        hourly_activity.push(HourlyActivity {
            hour_index: index as i64,
            bucket_ms,
            calls: *calls,
            tokens: *tokens,
            intensity: calls_share.max(tokens_share),
        });
    }
    let max_ten = tens.iter().map(|t| t.0).max().unwrap_or(0) as f64;
    let mut points = Vec::with_capacity(144);
    let (mut success_calls, mut failure_calls) = (0_i64, 0_i64);
    for (index, (calls, tokens, failures)) in tens.iter().enumerate() {
        let bucket_ms = start + index as i64 * 10 * MINUTE_MS;
        let future = bucket_ms > now;
        let failure_rate = ratio(*failures as f64, *calls as f64);
        success_calls = calls
            .saturating_sub(*failures)
            .saturating_add(success_calls);
        failure_calls = failure_calls.saturating_add(*failures);
        points.push(HealthPoint {
            bucket_ms,
            calls: *calls,
            tokens: *tokens,
            success: calls - failures,
            failure: *failures,
            success_rate: ratio((calls - failures) as f64, *calls as f64),
            failure_rate,
            tone: if future {
                "future"
            } else if *calls == 0 {
                "empty"
            } else if failure_rate >= 0.1 {
                "bad"
            } else if failure_rate > 0.0 {
                "warn"
            } else {
                "good"
            },
            intensity: ratio(*calls as f64, max_ten),
            future,
        });
    }
    let health = HealthTimeline {
        from_ms: start,
        to_ms: start + DAY_MS,
        bucket_ms: 10 * MINUTE_MS,
        success_calls,
        failure_calls,
        total_calls: success_calls + failure_calls,
        success_rate: ratio(success_calls as f64, (success_calls + failure_calls) as f64),
        points,
    };

    // Token mix with the overflow deduction.
    let cached_all = m.cached.max(0) + m.cache_read.max(0) + m.cache_creation.max(0);
    let mut input = (m.input.max(0) - cached_all).max(0);
    let mut output = m.output.max(0);
    let reasoning = m.reasoning.max(0);
    if m.total > 0 {
        let mut overflow = input + cached_all + output + reasoning - m.total;
        if overflow > 0 {
            let first = output.min(reasoning).min(overflow);
            output -= first;
            overflow -= first;
            let second = output.min(overflow);
            output -= second;
            overflow -= second;
            input = (input - overflow).max(0);
        }
    }
    let sum = (input + cached_all + output + reasoning) as f64;
    let token_mix = [
        ("input", input),
        ("cached", cached_all),
        ("output", output),
        ("reasoning", reasoning),
    ]
    .into_iter()
    .map(|(key, tokens)| TokenMix {
        key,
        tokens,
        share: ratio(tokens as f64, sum),
    })
    .collect();

    let (channel_health, failure_sources) = channels_and_failures(&book, &today_rows);
    let unpriced_models = unpriced_models(&book, &today_rows);
    Ok(DashboardSummary {
        generated_at_ms,
        window: DashboardWindow {
            today_start_ms: start,
            now_ms: now,
            rolling_30m_start_ms: rolling_start,
        },
        today: DashboardToday {
            total_calls: m.calls,
            success_calls: m.success(),
            failure_calls: m.failures,
            success_rate: m.success_rate(),
            token_sums: TokenSums::of(m),
            reasoning_tokens: m.reasoning,
            total_tokens: m.total,
            total_cost: today.cost,
            average_latency_ms: m.average_latency(),
            zero_token_calls: m.zero_token_calls,
        },
        rolling_30m: Rolling {
            rpm: rolling.calls as f64 / 30.0,
            tpm: rolling.total as f64 / 30.0,
            total_calls: rolling.calls,
            total_tokens: rolling.total,
        },
        top_models_today,
        model_cost_rank,
        traffic_timeline,
        hourly_activity,
        today_request_health_timeline: health,
        token_mix,
        channel_health,
        failure_sources,
        recent_failures: failures
            .items
            .iter()
            .map(|event| recent_failure_item(event, false))
            .collect(),
        unpriced_models,
    })
}

/// The five worst channels and the five biggest failure sources of the day.
fn channels_and_failures(
    book: &PriceBook,
    rows: &[GroupRow],
) -> (Vec<ChannelHealth>, Vec<DashboardFailureSource>) {
    // Channels: by auth index.
    let mut channels: BTreeMap<String, (Totals, Snapshots)> = BTreeMap::new();
    let mut sources: BTreeMap<(String, String), (Totals, Snapshots)> = BTreeMap::new();
    for row in rows {
        let Some(identity) = &row.identity else {
            continue;
        };
        let cost = row_cost(book, row);
        let key = if identity.auth_index.is_empty() {
            "-".to_string()
        } else {
            identity.auth_index.to_string()
        };
        let entry = channels.entry(key).or_default();
        entry.0.add(row, cost);
        entry.1.add(identity);
        let entry = sources
            .entry((
                identity.source_hash.to_string(),
                identity.auth_index.to_string(),
            ))
            .or_default();
        entry.0.add(row, cost);
        entry.1.add(identity);
    }
    let mut channel_health: Vec<ChannelHealth> = channels
        .into_iter()
        .map(|(auth_index, (totals, snapshots))| {
            let m = totals.metrics;
            let success_rate = m.success_rate();
            let latency = m.average_latency();
            let latency_value = latency.unwrap_or(0.0);
            let tone = if success_rate < 0.85 || m.failures >= 5 || latency_value >= 30_000.0 {
                "bad"
            } else if success_rate < 0.95 || m.failures > 0 || latency_value >= 15_000.0 {
                "warn"
            } else {
                "good"
            };
            ChannelHealth {
                identity: IdentityFields {
                    auth_index: auth_index.into(),
                    ..snapshots.fields()
                },
                calls: m.calls,
                failures: m.failures,
                failure_rate: m.failure_rate(),
                success_rate,
                tokens: m.total,
                cost: totals.cost,
                average_latency_ms: latency,
                tone,
            }
        })
        .collect();
    let severity = |tone: &str| match tone {
        "bad" => 0,
        "warn" => 1,
        _ => 2,
    };
    channel_health.sort_by(|a, b| {
        severity(a.tone)
            .cmp(&severity(b.tone))
            .then_with(|| b.failures.cmp(&a.failures))
            .then_with(|| b.calls.cmp(&a.calls))
            .then_with(|| a.identity.auth_index.cmp(&b.identity.auth_index))
    });
    channel_health.truncate(5);
    let mut failure_sources: Vec<DashboardFailureSource> = sources
        .into_iter()
        .filter(|(_, (totals, _))| totals.metrics.failures > 0)
        .map(|((source_hash, auth_index), (totals, snapshots))| {
            let m = totals.metrics;
            let failure_rate = m.failure_rate();
            DashboardFailureSource {
                identity: IdentityFields {
                    source_hash: source_hash.into(),
                    auth_index: auth_index.into(),
                    ..snapshots.fields()
                },
                calls: m.calls,
                failures: m.failures,
                failure_rate,
                last_seen_ms: totals.last_seen_ms,
                average_latency_ms: m.average_latency(),
                tone: if failure_rate >= 0.5 || m.failures >= 5 {
                    "bad"
                } else {
                    "warn"
                },
            }
        })
        .collect();
    failure_sources.sort_by(|a, b| {
        b.failures
            .cmp(&a.failures)
            .then_with(|| b.last_seen_ms.cmp(&a.last_seen_ms))
            .then_with(|| a.identity.source_hash.cmp(&b.identity.source_hash))
            .then_with(|| a.identity.auth_index.cmp(&b.identity.auth_index))
    });
    failure_sources.truncate(5);
    (channel_health, failure_sources)
}

/// Calls/tokens per 5-minute block in `[from, to)`: stored blocks for whole blocks,
/// raw events for a partial block at either end. When `from` starts a block, the
/// partial block at the end is read whole if no event lies after `to` in it: its
/// events then all fall into the hour and 10-minute slots its start falls into.
async fn fine_counts<S: AnalyticsStore>(
    store: &S,
    from: i64,
    to: i64,
) -> Result<Vec<FineBlock>, StoreError> {
    const FINE: i64 = 5 * MINUTE_MS;
    let mut out = Vec::new();
    let mut to = to;
    let tail_block = to.div_euclid(FINE) * FINE;
    if from.rem_euclid(FINE) == 0
        && from <= tail_block
        && tail_block < to
        && let Some(blocks) = store.fine_tail(tail_block, to).await?
    {
        out = blocks;
        to = tail_block;
    }
    let inner_from = -((-from).div_euclid(FINE)) * FINE;
    let inner_to = to.div_euclid(FINE) * FINE;
    if inner_from < inner_to {
        out.extend(store.fine_blocks(inner_from, inner_to).await?);
    }
    let edges = if inner_from < inner_to {
        vec![(from, inner_from), (inner_to, to)]
    } else {
        vec![(from, to)]
    };
    for (a, b) in edges {
        if a >= b {
            continue;
        }
        // Events keep their own instant; the dashboard indexes by offset.
        out.extend(store.event_points(a, b).await?);
    }
    Ok(out)
}

/// Adds a fine block to a (calls, tokens, failures) slot, saturating at the `i64` bounds.
fn add_block(slot: &mut (i64, i64, i64), block: &FineBlock) {
    slot.0 = slot.0.saturating_add(block.calls);
    slot.1 = slot.1.saturating_add(block.tokens);
    if block.failed {
        slot.2 = slot.2.saturating_add(block.calls);
    }
}
