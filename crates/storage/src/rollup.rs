//! Rollup maintenance, inside the ingest transaction.
//!
//! The batch writer hands every inserted event to an [`Accumulator`] (memory only)
//! and calls [`flush`] once before commit. `flush` merges the batch's events per
//! rollup key and applies one additive upsert per key, so rollups are never stale
//! (they commit or roll back with the events) and a batch costs a statement per
//! distinct key, not per event.

use std::collections::HashMap;

use cpamp_domain::analytics::cost::context_band;
use cpamp_domain::analytics::query::metrics_of;
use cpamp_domain::analytics::time::{DAY_MS, HOUR_MS, QUARTER_MS};
use cpamp_domain::analytics::{Metrics, analytics_model};
use cpamp_domain::event::UsageEvent;
use sqlx::SqliteConnection;

use crate::SqliteStore;
use crate::dims::{DimKind, DimStage};

/// Width of a `usage_rollup_fine` block.
pub(crate) const FINE_MS: i64 = 5 * 60_000;

/// The dictionary ids the insert resolved for one event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventDims {
    pub model: Option<i64>,
    pub requested_model: Option<i64>,
    pub resolved_model: Option<i64>,
    pub provider: Option<i64>,
    pub executor_type: Option<i64>,
    pub auth_index: Option<i64>,
    pub source: Option<i64>,
    pub source_hash: Option<i64>,
    pub api_key_hash: Option<i64>,
    pub account: Option<i64>,
    pub auth_label: Option<i64>,
    pub auth_file: Option<i64>,
    pub auth_provider: Option<i64>,
    pub auth_project: Option<i64>,
    pub service_tier: Option<i64>,
}

impl EventDims {
    fn identity_key(&self) -> [i64; 11] {
        [
            self.provider,
            self.executor_type,
            self.auth_index,
            self.source,
            self.source_hash,
            self.api_key_hash,
            self.account,
            self.auth_label,
            self.auth_file,
            self.auth_provider,
            self.auth_project,
        ]
        .map(|id| id.unwrap_or(0))
    }
}

struct Pending {
    timestamp_ms: i64,
    dims: EventDims,
    effective_model: String,
    failed: bool,
    band: u8,
    metrics: Metrics,
    latency: Option<u32>,
    ttft: Option<u32>,
}

/// The events of one batch, waiting for [`flush`].
#[derive(Default)]
pub(crate) struct Accumulator {
    pending: Vec<Pending>,
}

impl Accumulator {
    pub(crate) fn add(&mut self, event: &UsageEvent, dims: EventDims) {
        let tokens = &event.tokens;
        let input = if event.cache_input_mode.is_some() {
            event.normalized.total_input
        } else {
            tokens.input
        };
        let cached = (tokens.cached.max(tokens.cache)
            - tokens.cache_read.max(0)
            - tokens.cache_creation.max(0))
        .max(0);
        let effective_model = match event.requested_model.as_deref() {
            Some(requested) if !requested.is_empty() => requested.to_string(),
            _ if event.model.is_empty() => "-".to_string(),
            _ => event.model.clone(),
        };
        let positive = |value: Option<i64>| {
            value
                .filter(|v| *v > 0)
                .map(|v| u32::try_from(v).unwrap_or(u32::MAX))
        };
        self.pending.push(Pending {
            timestamp_ms: event.timestamp_ms,
            dims,
            effective_model,
            failed: event.failed,
            band: context_band(input),
            metrics: metrics_of(event.failed, input, tokens, cached, event.latency_ms),
            latency: positive(event.latency_ms),
            ttft: positive(event.ttft_ms),
        });
    }
}

/// Key of an aggregate row: (bucket, model, billing model, tier, band, failed).
type AggKey = (i64, i64, i64, i64, u8, bool);
/// Key of an identity row: (bucket, identity, model, billing model, tier, band, failed).
type IdentKey = (i64, i64, i64, i64, i64, u8, bool);

#[derive(Default, Clone, Copy)]
struct Sums {
    metrics: Metrics,
    last_seen_ms: i64,
}

impl Sums {
    fn add(&mut self, metrics: &Metrics, at: i64) {
        self.metrics.add(metrics);
        self.last_seen_ms = self.last_seen_ms.max(at);
    }
}

fn floor(value: i64, step: i64) -> i64 {
    value.div_euclid(step) * step
}

/// Writes the batch's rollup rows. Runs inside the batch transaction.
pub(crate) async fn flush(
    store: &SqliteStore,
    connection: &mut SqliteConnection,
    stage: &mut DimStage,
    accumulator: Accumulator,
) -> Result<(), sqlx::Error> {
    if accumulator.pending.is_empty() {
        return Ok(());
    }
    // Analytics model per effective model id.
    let mut analytics_ids: HashMap<i64, i64> = HashMap::new();
    for pending in &accumulator.pending {
        let effective_id = pending
            .dims
            .requested_model
            .or(pending.dims.model)
            .unwrap_or(0);
        if analytics_ids.contains_key(&effective_id) {
            continue;
        }
        let analytics = analytics_model(&pending.effective_model);
        let analytics_id = if analytics == pending.effective_model {
            effective_id
        } else {
            let text = if analytics.is_empty() { "-" } else { analytics };
            stage
                .resolve(store.dims(), &mut *connection, DimKind::Model, Some(text))
                .await?
                .unwrap_or(0)
        };
        sqlx::query(
            "INSERT INTO usage_model_analytics (model_dim_id, analytics_dim_id) VALUES (?, ?) \
             ON CONFLICT (model_dim_id) DO NOTHING",
        )
        .bind(effective_id)
        .bind(analytics_id)
        .execute(&mut *connection)
        .await?;
        analytics_ids.insert(effective_id, analytics_id);
    }
    // Identity id per identity tuple.
    let mut identity_ids: HashMap<[i64; 11], i64> = HashMap::new();
    for pending in &accumulator.pending {
        let key = pending.dims.identity_key();
        if identity_ids.contains_key(&key) {
            continue;
        }
        let mut query = sqlx::query_scalar::<_, i64>(
            "INSERT INTO usage_identities (provider_id, executor_type_id, auth_index_id, source_id, \
             source_hash_id, api_key_hash_id, account_id, auth_label_id, auth_file_id, auth_provider_id, \
             auth_project_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT DO UPDATE SET provider_id = excluded.provider_id RETURNING id",
        );
        for id in key {
            query = query.bind(id);
        }
        let id = query.fetch_one(&mut *connection).await?;
        identity_ids.insert(key, id);
    }

    let mut aggregate: [HashMap<AggKey, Sums>; 3] = Default::default();
    let mut identity: [HashMap<IdentKey, Sums>; 3] = Default::default();
    let mut fine: HashMap<(i64, bool), (i64, i64)> = HashMap::new();
    let mut samples: HashMap<(i64, i64, bool), (Vec<u32>, Vec<u32>)> = HashMap::new();
    let steps = [QUARTER_MS, HOUR_MS, DAY_MS];
    for pending in &accumulator.pending {
        let effective_id = pending
            .dims
            .requested_model
            .or(pending.dims.model)
            .unwrap_or(0);
        let model = analytics_ids
            .get(&effective_id)
            .copied()
            .unwrap_or(effective_id);
        let billing = pending.dims.resolved_model.unwrap_or(model);
        let tier = pending.dims.service_tier.unwrap_or(0);
        let identity_id = identity_ids
            .get(&pending.dims.identity_key())
            .copied()
            .unwrap_or(0);
        let at = pending.timestamp_ms;
        for (level, step) in steps.iter().enumerate() {
            let bucket = floor(at, *step);
            aggregate[level]
                .entry((bucket, model, billing, tier, pending.band, pending.failed))
                .or_default()
                .add(&pending.metrics, at);
            identity[level]
                .entry((
                    bucket,
                    identity_id,
                    model,
                    billing,
                    tier,
                    pending.band,
                    pending.failed,
                ))
                .or_default()
                .add(&pending.metrics, at);
        }
        let block = fine
            .entry((floor(at, FINE_MS), pending.failed))
            .or_default();
        block.0 += 1;
        block.1 += pending.metrics.total;
        if pending.latency.is_some() || pending.ttft.is_some() {
            let entry = samples
                .entry((floor(at, QUARTER_MS), model, pending.failed))
                .or_default();
            entry.0.extend(pending.latency);
            entry.1.extend(pending.ttft);
        }
    }

    for (level, suffix) in ["q", "h", "d"].iter().enumerate() {
        let sql = upsert_sql(&format!("usage_rollup_agg_{suffix}"), false);
        for ((bucket, model, billing, tier, band, failed), sums) in &aggregate[level] {
            bind_metrics(
                sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(bucket)
                    .bind(model)
                    .bind(billing)
                    .bind(tier)
                    .bind(i64::from(*band))
                    .bind(i64::from(*failed)),
                sums,
            )
            .execute(&mut *connection)
            .await?;
        }
        let sql = upsert_sql(&format!("usage_rollup_ident_{suffix}"), true);
        for ((bucket, identity_id, model, billing, tier, band, failed), sums) in &identity[level] {
            bind_metrics(
                sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(bucket)
                    .bind(identity_id)
                    .bind(model)
                    .bind(billing)
                    .bind(tier)
                    .bind(i64::from(*band))
                    .bind(i64::from(*failed)),
                sums,
            )
            .execute(&mut *connection)
            .await?;
        }
    }
    for ((bucket, failed), (calls, tokens)) in fine {
        sqlx::query(
            "INSERT INTO usage_rollup_fine (bucket_ms, failed, calls, total_tokens) VALUES (?, ?, ?, ?) \
             ON CONFLICT (bucket_ms, failed) DO UPDATE SET calls = calls + excluded.calls, \
             total_tokens = total_tokens + excluded.total_tokens",
        )
        .bind(bucket)
        .bind(i64::from(failed))
        .bind(calls)
        .bind(tokens)
        .execute(&mut *connection)
        .await?;
    }
    for ((bucket, model, failed), (latencies, ttfts)) in samples {
        let existing: Option<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT latencies, ttfts FROM usage_rollup_latency WHERE bucket_ms = ? AND model_id = ? AND failed = ?",
        )
        .bind(bucket)
        .bind(model)
        .bind(i64::from(failed))
        .fetch_optional(&mut *connection)
        .await?;
        let (mut latency_blob, mut ttft_blob) = existing.unwrap_or_default();
        encode_varints(&mut latency_blob, &latencies);
        encode_varints(&mut ttft_blob, &ttfts);
        sqlx::query(
            "INSERT INTO usage_rollup_latency (bucket_ms, model_id, failed, latencies, ttfts) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (bucket_ms, model_id, failed) DO UPDATE SET latencies = excluded.latencies, ttfts = excluded.ttfts",
        )
        .bind(bucket)
        .bind(model)
        .bind(i64::from(failed))
        .bind(latency_blob)
        .bind(ttft_blob)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

fn bind_metrics<'q>(query: Query<'q>, sums: &Sums) -> Query<'q> {
    let m = &sums.metrics;
    query
        .bind(m.calls)
        .bind(m.input)
        .bind(m.output)
        .bind(m.reasoning)
        .bind(m.cached)
        .bind(m.cache_read)
        .bind(m.cache_creation)
        .bind(m.total)
        .bind(m.latency_sum)
        .bind(m.latency_samples)
        .bind(m.zero_token_calls)
        .bind(sums.last_seen_ms)
}

fn upsert_sql(table: &str, with_identity: bool) -> String {
    let key = if with_identity {
        "bucket_ms, identity_id, model_id, billing_model_id, service_tier_id, context_band, failed"
    } else {
        "bucket_ms, model_id, billing_model_id, service_tier_id, context_band, failed"
    };
    let key_marks = if with_identity {
        "?, ?, ?, ?, ?, ?, ?"
    } else {
        "?, ?, ?, ?, ?, ?"
    };
    format!(
        "INSERT INTO {table} ({key}, calls, input_tokens, output_tokens, reasoning_tokens, cached_tokens, \
         cache_read_tokens, cache_creation_tokens, total_tokens, latency_sum_ms, latency_samples, \
         zero_token_calls, last_seen_ms) VALUES ({key_marks}, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT ({key}) DO UPDATE SET calls = calls + excluded.calls, \
         input_tokens = input_tokens + excluded.input_tokens, \
         output_tokens = output_tokens + excluded.output_tokens, \
         reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens, \
         cached_tokens = cached_tokens + excluded.cached_tokens, \
         cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens, \
         cache_creation_tokens = cache_creation_tokens + excluded.cache_creation_tokens, \
         total_tokens = total_tokens + excluded.total_tokens, \
         latency_sum_ms = latency_sum_ms + excluded.latency_sum_ms, \
         latency_samples = latency_samples + excluded.latency_samples, \
         zero_token_calls = zero_token_calls + excluded.zero_token_calls, \
         last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)"
    )
}

/// Appends LEB128 varints.
pub(crate) fn encode_varints(out: &mut Vec<u8>, values: &[u32]) {
    for value in values {
        let mut value = *value;
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
}

/// Decodes LEB128 varints, appending to `out`. A truncated tail is ignored.
pub(crate) fn decode_varints(bytes: &[u8], out: &mut Vec<u32>) {
    let mut value: u32 = 0;
    let mut shift = 0;
    for byte in bytes {
        if shift < 32 {
            value |= u32::from(byte & 0x7f) << shift;
        }
        if byte & 0x80 == 0 {
            out.push(value);
            value = 0;
            shift = 0;
        } else {
            shift += 7;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        let values = [0, 1, 127, 128, 300, 65_535, 1_000_000, u32::MAX];
        let mut bytes = Vec::new();
        encode_varints(&mut bytes, &values);
        let mut decoded = Vec::new();
        decode_varints(&bytes, &mut decoded);
        assert_eq!(decoded, values);
    }
}
