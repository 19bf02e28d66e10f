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
    pub today_start_ms: i64,
    pub now_ms: i64,
    pub top_models: usize,
    pub recent_failures: usize,
    pub generated_at_ms: i64,
}

#[derive(Debug, Serialize)]
pub struct DashboardSummary {
    pub generated_at_ms: i64,
    pub window: DashboardWindow,
    pub today: DashboardToday,
    pub rolling_30m: Rolling,
    pub top_models_today: Vec<TopModel>,
    pub model_cost_rank: Vec<CostRank>,
    pub traffic_timeline: Vec<TrafficPoint>,
    pub hourly_activity: Vec<HourlyActivity>,
    pub today_request_health_timeline: HealthTimeline,
    pub token_mix: Vec<TokenMix>,
    pub channel_health: Vec<ChannelHealth>,
    pub failure_sources: Vec<DashboardFailureSource>,
    pub recent_failures: Vec<RecentFailure>,
    /// Models without a price behind a `null` cost today (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unpriced_models: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct DashboardWindow {
    pub today_start_ms: i64,
    pub now_ms: i64,
    pub rolling_30m_start_ms: i64,
}

#[derive(Debug, Serialize)]
pub struct DashboardToday {
    pub total_calls: i64,
    pub success_calls: i64,
    pub failure_calls: i64,
    pub success_rate: f64,
    #[serde(flatten)]
    pub token_sums: TokenSums,
    pub reasoning_tokens: i64,
    pub total_tokens: i64,
    pub total_cost: Option<f64>,
    pub average_latency_ms: Option<f64>,
    pub zero_token_calls: i64,
}

#[derive(Debug, Serialize)]
pub struct Rolling {
    pub rpm: f64,
    pub tpm: f64,
    pub total_calls: i64,
    pub total_tokens: i64,
}

#[derive(Debug, Serialize)]
pub struct TopModel {
    pub model: String,
    pub calls: i64,
    pub tokens: i64,
    pub cost: Option<f64>,
    pub success_rate: f64,
}

#[derive(Debug, Serialize)]
pub struct CostRank {
    pub model: String,
    pub calls: i64,
    pub tokens: i64,
    pub cost: Option<f64>,
    pub success_rate: f64,
    pub cost_share: f64,
}

#[derive(Debug, Serialize)]
pub struct TrafficPoint {
    pub bucket_ms: i64,
    pub calls: i64,
    pub tokens: i64,
    pub success: i64,
    pub failure: i64,
    pub calls_share: f64,
    pub tokens_share: f64,
    pub failure_rate: f64,
}

#[derive(Debug, Serialize)]
pub struct HourlyActivity {
    pub hour_index: i64,
    pub bucket_ms: i64,
    pub calls: i64,
    pub tokens: i64,
    pub intensity: f64,
}

#[derive(Debug, Serialize)]
pub struct HealthTimeline {
    pub from_ms: i64,
    pub to_ms: i64,
    pub bucket_ms: i64,
    pub success_calls: i64,
    pub failure_calls: i64,
    pub total_calls: i64,
    pub success_rate: f64,
    pub points: Vec<HealthPoint>,
}

#[derive(Debug, Serialize)]
pub struct HealthPoint {
    pub bucket_ms: i64,
    pub calls: i64,
    pub tokens: i64,
    pub success: i64,
    pub failure: i64,
    pub success_rate: f64,
    pub failure_rate: f64,
    pub tone: &'static str,
    pub intensity: f64,
    pub future: bool,
}

#[derive(Debug, Serialize)]
pub struct TokenMix {
    pub key: &'static str,
    pub tokens: i64,
    pub share: f64,
}

#[derive(Debug, Serialize)]
pub struct ChannelHealth {
    /// The auth index is `-` when empty.
    #[serde(flatten)]
    pub identity: IdentityFields<ChannelKeys>,
    pub calls: i64,
    pub failures: i64,
    pub failure_rate: f64,
    pub success_rate: f64,
    pub tokens: i64,
    pub cost: Option<f64>,
    pub average_latency_ms: Option<f64>,
    pub tone: &'static str,
}

#[derive(Debug, Serialize)]
pub struct DashboardFailureSource {
    #[serde(flatten)]
    pub identity: IdentityFields<FailureSourceKeys>,
    pub calls: i64,
    pub failures: i64,
    pub failure_rate: f64,
    pub last_seen_ms: i64,
    pub average_latency_ms: Option<f64>,
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

/// Builds the dashboard summary.
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
/// raw events for a partial block at either end.
async fn fine_counts<S: AnalyticsStore>(
    store: &S,
    from: i64,
    to: i64,
) -> Result<Vec<FineBlock>, StoreError> {
    const FINE: i64 = 5 * MINUTE_MS;
    let inner_from = -((-from).div_euclid(FINE)) * FINE;
    let inner_to = to.div_euclid(FINE) * FINE;
    let mut out = Vec::new();
    if inner_from < inner_to {
        out = store.fine_blocks(inner_from, inner_to).await?;
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
        for event in store.raw_events(Scope::time_only(a, b), usize::MAX).await? {
            // Raw events keep their own instant; the dashboard indexes by offset.
            out.push(FineBlock {
                bucket_ms: event.timestamp_ms,
                failed: event.failed,
                calls: 1,
                tokens: event.tokens.total,
            });
        }
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
