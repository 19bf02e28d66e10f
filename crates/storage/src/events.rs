//! The ingest transaction: one batch from CPA becomes rows in one transaction.
//!
//! Per event, in batch order: claim its hash in the identity ledger (a hash that is
//! already there means a duplicate, counted as skipped), then insert the event and
//! point the ledger row at it. Dead letters of the batch are written in the same
//! transaction, and so are the row counters. Either the whole batch is stored or,
//! on any error, nothing is, and the caller keeps the batch to retry.

use cpamp_domain::StoreError;
use cpamp_domain::event::UsageEvent;
use cpamp_domain::ports::{BatchOutcome, EventSink, IngestBatch};
use sqlx::SqliteConnection;

use crate::dims::{DimKind, DimStage};
use crate::{SqliteStore, error};

impl EventSink for SqliteStore {
    async fn store_batch(&self, batch: IngestBatch) -> Result<BatchOutcome, StoreError> {
        if batch.events.is_empty() && batch.dead_letters.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let mut transaction = self
            .writer()
            .begin()
            .await
            .map_err(|error| error::map(error, "begin batch"))?;
        let mut stage = DimStage::default();
        let outcome = write_batch(self, &mut transaction, &mut stage, &batch)
            .await
            .map_err(|error| error::map(error, "store batch"))?;
        transaction
            .commit()
            .await
            .map_err(|error| error::map(error, "commit batch"))?;
        self.dims().commit(stage);
        Ok(outcome)
    }
}

async fn write_batch(
    store: &SqliteStore,
    connection: &mut SqliteConnection,
    stage: &mut DimStage,
    batch: &IngestBatch,
) -> Result<BatchOutcome, sqlx::Error> {
    let mut outcome = BatchOutcome::default();
    let mut rollups = crate::rollup::Accumulator::default();
    let origin_id = if batch.origin.is_empty() {
        None
    } else {
        Some(cpa_source_id(connection, &batch.origin).await?)
    };
    for event in &batch.events {
        let hash = decode_hash(&event.event_hash);
        let claimed = sqlx::query(
            "INSERT INTO usage_event_identity_ledger (event_hash, event_id, first_seen_at_ms) \
             VALUES (?, NULL, ?) ON CONFLICT (event_hash) DO NOTHING",
        )
        .bind(&hash[..])
        .bind(event.created_at_ms)
        .execute(&mut *connection)
        .await?
        .rows_affected();
        if claimed == 0 {
            outcome.skipped += 1;
            continue;
        }
        let (event_id, dims) =
            insert_event(store, connection, stage, event, &hash, origin_id).await?;
        rollups.add(event, dims);
        sqlx::query("UPDATE usage_event_identity_ledger SET event_id = ? WHERE event_hash = ?")
            .bind(event_id)
            .bind(&hash[..])
            .execute(&mut *connection)
            .await?;
        outcome.inserted += 1;
    }
    for dead_letter in &batch.dead_letters {
        sqlx::query(
            "INSERT INTO dead_letter_events (payload, error, created_at_ms) VALUES (?, ?, ?)",
        )
        .bind(&dead_letter.payload)
        .bind(&dead_letter.reason)
        .bind(dead_letter.created_at_ms)
        .execute(&mut *connection)
        .await?;
        outcome.dead_lettered += 1;
    }
    crate::rollup::flush(store, connection, stage, rollups).await?;
    bump_counter(connection, "usage_events", outcome.inserted).await?;
    bump_counter(connection, "dead_letter_events", outcome.dead_lettered).await?;
    Ok(outcome)
}

async fn bump_counter(
    connection: &mut SqliteConnection,
    name: &str,
    by: u64,
) -> Result<(), sqlx::Error> {
    if by == 0 {
        return Ok(());
    }
    sqlx::query("UPDATE counters SET value = value + ? WHERE name = ?")
        .bind(i64::try_from(by).unwrap_or(i64::MAX))
        .bind(name)
        .execute(connection)
        .await
        .map(|_| ())
}

async fn cpa_source_id(
    connection: &mut SqliteConnection,
    base_url: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO cpa_sources (base_url, created_at_ms) VALUES (?, ?) \
         ON CONFLICT (base_url) DO UPDATE SET base_url = excluded.base_url RETURNING id",
    )
    .bind(base_url)
    .bind(crate::settings::now_ms())
    .fetch_one(connection)
    .await
}

/// The 32 raw bytes of a hex event hash. A malformed hash (which the decoder never
/// produces) is hashed again so it still dedupes deterministically.
fn decode_hash(hex_hash: &str) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    if hex_hash.len() == 64 && hex::decode_to_slice(hex_hash, &mut bytes).is_ok() {
        return bytes;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(hex_hash.as_bytes());
    bytes.copy_from_slice(&digest);
    bytes
}

/// The timestamp text is stored only when it cannot be rebuilt from `timestamp_ms`.
fn timestamp_text(event: &UsageEvent) -> Option<&str> {
    if cpamp_domain::event::format_timestamp_ms(event.timestamp_ms) == event.timestamp {
        None
    } else {
        Some(event.timestamp.as_str())
    }
}

async fn insert_event(
    store: &SqliteStore,
    connection: &mut SqliteConnection,
    stage: &mut DimStage,
    event: &UsageEvent,
    hash: &[u8; 32],
    origin_id: Option<i64>,
) -> Result<(i64, crate::rollup::EventDims), sqlx::Error> {
    let cache = store.dims();
    macro_rules! dim {
        ($kind:expr, $value:expr) => {
            stage
                .resolve(cache, &mut *connection, $kind, $value)
                .await?
        };
    }
    let provider = dim!(DimKind::Provider, event.provider.as_deref());
    let executor_type = dim!(DimKind::ExecutorType, event.executor_type.as_deref());
    let model = dim!(
        DimKind::Model,
        Some(event.model.as_str())
            .filter(|m| !m.is_empty())
            .or(Some("-"))
    );
    let requested_model = dim!(DimKind::Model, event.requested_model.as_deref());
    let resolved_model = dim!(DimKind::Model, event.resolved_model.as_deref());
    let endpoint = dim!(DimKind::Endpoint, event.endpoint.as_deref());
    let method = dim!(DimKind::Method, event.method.as_deref());
    let path = dim!(DimKind::Path, event.path.as_deref());
    let client_ip = dim!(DimKind::ClientIp, event.client_ip.as_deref());
    let x_forwarded_for = dim!(DimKind::XForwardedFor, event.x_forwarded_for.as_deref());
    let user_agent = dim!(DimKind::UserAgent, event.user_agent.as_deref());
    let auth_type = dim!(DimKind::AuthType, event.auth_type.as_deref());
    let auth_index = dim!(DimKind::AuthIndex, event.auth_index.as_deref());
    let source = dim!(DimKind::Source, event.source.as_deref());
    let source_hash = dim!(DimKind::SourceHash, event.source_hash.as_deref());
    let api_key_hash = dim!(DimKind::ApiKeyHash, event.api_key_hash.as_deref());
    let account = dim!(DimKind::Account, event.account_snapshot.as_deref());
    let auth_label = dim!(DimKind::AuthLabel, event.auth_label_snapshot.as_deref());
    let auth_file = dim!(DimKind::AuthFile, event.auth_file_snapshot.as_deref());
    let auth_provider = dim!(
        DimKind::AuthProvider,
        event.auth_provider_snapshot.as_deref()
    );
    let auth_project = dim!(
        DimKind::AuthProject,
        event.auth_project_id_snapshot.as_deref()
    );
    let reasoning_effort = dim!(DimKind::ReasoningEffort, event.reasoning_effort.as_deref());
    let service_tier = dim!(DimKind::ServiceTier, event.service_tier.as_deref());
    let request_service_tier = dim!(DimKind::ServiceTier, event.request_service_tier.as_deref());
    let response_service_tier = dim!(DimKind::ServiceTier, event.response_service_tier.as_deref());
    let quota_plan_type = dim!(
        DimKind::QuotaPlanType,
        event.header_quota_plan_type.as_deref()
    );
    let error_kind = dim!(DimKind::ErrorKind, event.header_error_kind.as_deref());
    let error_code = dim!(DimKind::ErrorCode, event.header_error_code.as_deref());
    let cache_input_mode = event.cache_input_mode.map(|mode| match mode {
        cpamp_domain::event::CacheInputMode::IncludedInInput => 0_i64,
        cpamp_domain::event::CacheInputMode::SeparateFromInput => 1_i64,
    });
    let tokens = &event.tokens;
    let normalized = &event.normalized;
    let normalized_known = event.cache_input_mode.is_some();
    let event_id = sqlx::query_scalar(
        "INSERT INTO usage_events (\
            event_hash, cpa_source_id, request_id, timestamp_ms, timestamp_text, \
            provider_id, executor_type_id, model_id, requested_model_id, resolved_model_id, \
            endpoint_id, method_id, path_id, client_ip_id, x_forwarded_for_id, user_agent_id, \
            auth_type_id, auth_index_id, source_id, source_hash_id, api_key_hash_id, \
            account_snapshot_id, auth_label_snapshot_id, auth_file_snapshot_id, \
            auth_provider_snapshot_id, auth_project_id_snapshot_id, auth_snapshot_at_ms, \
            reasoning_effort_id, service_tier_id, request_service_tier_id, response_service_tier_id, \
            cache_input_mode, input_tokens, output_tokens, reasoning_tokens, cached_tokens, \
            cache_tokens, cache_read_tokens, cache_creation_tokens, total_tokens, \
            normalized_uncached_input_tokens, normalized_total_input_tokens, \
            normalized_cache_read_tokens, normalized_cache_creation_tokens, \
            latency_ms, ttft_ms, failed, fail_status_code, fail_summary, response_metadata_json, \
            header_quota_recover_at_ms, header_quota_used_percent, header_quota_plan_type_id, \
            header_error_kind_id, header_error_code_id, header_trace_id, created_at_ms\
         ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, \
                   ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, \
                   ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(&hash[..])
    .bind(origin_id)
    .bind(event.request_id.as_deref().filter(|id| !id.is_empty()))
    .bind(event.timestamp_ms)
    .bind(timestamp_text(event))
    .bind(provider)
    .bind(executor_type)
    .bind(model)
    .bind(requested_model)
    .bind(resolved_model)
    .bind(endpoint)
    .bind(method)
    .bind(path)
    .bind(client_ip)
    .bind(x_forwarded_for)
    .bind(user_agent)
    .bind(auth_type)
    .bind(auth_index)
    .bind(source)
    .bind(source_hash)
    .bind(api_key_hash)
    .bind(account)
    .bind(auth_label)
    .bind(auth_file)
    .bind(auth_provider)
    .bind(auth_project)
    .bind(event.auth_snapshot_at_ms.filter(|value| *value > 0))
    .bind(reasoning_effort)
    .bind(service_tier)
    .bind(request_service_tier)
    .bind(response_service_tier)
    .bind(cache_input_mode)
    .bind(tokens.input)
    .bind(tokens.output)
    .bind(tokens.reasoning)
    .bind(tokens.cached)
    .bind(tokens.cache)
    .bind(tokens.cache_read)
    .bind(tokens.cache_creation)
    .bind(tokens.total)
    .bind(normalized_known.then_some(normalized.uncached_input))
    .bind(normalized_known.then_some(normalized.total_input))
    .bind(normalized_known.then_some(normalized.cache_read))
    .bind(normalized_known.then_some(normalized.cache_creation))
    .bind(event.latency_ms)
    .bind(event.ttft_ms)
    .bind(i64::from(event.failed))
    .bind(event.fail_status_code.filter(|code| *code > 0))
    .bind(event.fail_summary.as_deref().filter(|text| !text.is_empty()))
    .bind(event.response_metadata_json.as_deref().filter(|text| !text.is_empty()))
    .bind(event.header_quota_recover_at_ms.filter(|value| *value > 0))
    .bind(event.header_quota_used_percent)
    .bind(quota_plan_type)
    .bind(error_kind)
    .bind(error_code)
    .bind(event.header_trace_id.as_deref().filter(|text| !text.is_empty()))
    .bind(event.created_at_ms)
    .fetch_one(&mut *connection)
    .await?;
    let dims = crate::rollup::EventDims {
        model,
        requested_model,
        resolved_model,
        provider,
        executor_type,
        auth_index,
        source,
        source_hash,
        api_key_hash,
        account,
        auth_label,
        auth_file,
        auth_provider,
        auth_project,
        service_tier,
    };
    Ok((event_id, dims))
}
