//! The ingest transaction: one batch from CPA becomes rows in one transaction.
//!
//! The batch's events claim their hashes in the identity ledger (a hash that is
//! already there, or repeats inside the batch, is a duplicate and counted as
//! skipped); the events that claimed a hash are inserted with multi-row statements.
//! Dead letters of the batch and the row counters are written in the same
//! transaction. Either the whole batch is stored or, on any error, nothing is, and
//! the caller keeps the batch to retry.

use cpamp_domain::StoreError;
use cpamp_domain::decode::redact_dead_letter_text;
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
        let mut connection = self
            .writer()
            .acquire()
            .await
            .map_err(|error| error::map(error, "begin batch"))?;
        let mut stage = DimStage::default();
        let result = store_in_transaction(self, &mut connection, &mut stage, &batch).await;
        match result {
            Ok(outcome) => {
                self.dims().commit(stage);
                Ok(outcome)
            }
            Err(error) => {
                // A failed COMMIT (IO error, disk full, read-only file) can leave
                // SQLite's transaction open on this connection; reusing it would
                // silently nest every later batch inside a transaction that never
                // commits. Close it instead: the pool opens a fresh one next time.
                connection.close_on_drop();
                Err(error)
            }
        }
    }
}

async fn store_in_transaction(
    store: &SqliteStore,
    connection: &mut sqlx::pool::PoolConnection<sqlx::Sqlite>,
    stage: &mut DimStage,
    batch: &IngestBatch,
) -> Result<BatchOutcome, StoreError> {
    let mut transaction = sqlx::Connection::begin(&mut **connection)
        .await
        .map_err(|error| error::map(error, "begin batch"))?;
    let outcome = write_batch(store, &mut transaction, stage, batch)
        .await
        .map_err(|error| error::map(error, "store batch"))?;
    transaction
        .commit()
        .await
        .map_err(|error| error::map(error, "commit batch"))?;
    Ok(outcome)
}

/// Rows per multi-row `INSERT`: statements are the expensive unit with sqlx (a
/// round trip to its worker thread each), and 60 rows of 57 columns stay far
/// below SQLite's bound-parameter limit (32,766).
const EVENTS_PER_STATEMENT: usize = 60;
/// Hashes per ledger claim statement.
const HASHES_PER_STATEMENT: usize = 300;

/// An event that claimed its hash and will be inserted with this id.
pub(crate) struct NewEvent<'a> {
    pub id: i64,
    pub event: &'a UsageEvent,
    pub hash: [u8; 32],
    pub dims: EventDims,
}

async fn write_batch(
    store: &SqliteStore,
    connection: &mut SqliteConnection,
    stage: &mut DimStage,
    batch: &IngestBatch,
) -> Result<BatchOutcome, sqlx::Error> {
    let mut outcome = BatchOutcome::default();
    // Imported and adopted events keep `cpa_source_id` NULL: they were not
    // collected from a CPA connection.
    let origin_id = match batch.origin.cpa_base_url() {
        None => None,
        Some(base_url) => match store.dims().origin(base_url) {
            Some(id) => Some(id),
            None => {
                let id = cpa_source_id(connection, base_url).await?;
                stage.others.origins.insert(base_url.to_string(), id);
                Some(id)
            }
        },
    };

    // Ids are assigned here (one writer, so nothing else takes them). Candidates
    // that turn out to be duplicates leave a harmless gap.
    let next_id: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) + 1 FROM usage_events")
        .fetch_one(&mut *connection)
        .await?;
    let mut seen = std::collections::HashSet::with_capacity(batch.events.len());
    let mut candidates = Vec::with_capacity(batch.events.len());
    for (index, event) in batch.events.iter().enumerate() {
        let hash = decode_hash(&event.event_hash);
        if seen.insert(hash) {
            candidates.push((next_id + candidates.len() as i64, event, hash, index));
        } else {
            outcome.skipped += 1;
        }
    }

    let mut claimed = std::collections::HashSet::with_capacity(candidates.len());
    // In hash order: the ledger's pages are then visited in key order.
    let mut by_hash: Vec<&(i64, &UsageEvent, [u8; 32], usize)> = candidates.iter().collect();
    by_hash.sort_unstable_by_key(|candidate| candidate.2);
    for chunk in by_hash.chunks(HASHES_PER_STATEMENT) {
        let mut builder = sqlx::QueryBuilder::new(
            "INSERT INTO usage_event_identity_ledger (event_hash, event_id, first_seen_at_ms) ",
        );
        builder.push_values(chunk, |mut row, &&(id, event, hash, _)| {
            row.push_bind(hash.to_vec())
                .push_bind(id)
                .push_bind(event.created_at_ms);
        });
        builder.push(" ON CONFLICT (event_hash) DO NOTHING RETURNING event_id");
        let ids: Vec<i64> = builder
            .build_query_scalar()
            .fetch_all(&mut *connection)
            .await?;
        claimed.extend(ids);
    }

    let mut fresh = Vec::with_capacity(claimed.len());
    for (id, event, hash, index) in candidates {
        if !claimed.contains(&id) {
            outcome.skipped += 1;
            continue;
        }
        outcome.fresh.push(index);
        let dims = resolve_dims(store, connection, stage, event).await?;
        fresh.push(NewEvent {
            id,
            event,
            hash,
            dims,
        });
    }
    for chunk in fresh.chunks(EVENTS_PER_STATEMENT) {
        insert_events(connection, chunk, origin_id).await?;
    }
    outcome.inserted = fresh.len() as u64;

    for dead_letter in &batch.dead_letters {
        // Dead letters are redacted like failure summaries: a malformed item can carry
        // a client API key, a token or a cookie, which must never reach the file.
        sqlx::query(
            "INSERT INTO dead_letter_events (payload, error, created_at_ms) VALUES (?, ?, ?)",
        )
        .bind(redact_dead_letter_text(&dead_letter.payload))
        .bind(redact_dead_letter_text(&dead_letter.reason))
        .bind(dead_letter.created_at_ms)
        .execute(&mut *connection)
        .await?;
        outcome.dead_lettered += 1;
    }
    crate::rollup::flush(store, connection, stage, &fresh).await?;
    crate::snapshots::note_latest(connection, &fresh).await?;
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

/// Dictionary ids of one event's repeated texts.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EventDims {
    pub provider: Option<i64>,
    pub executor_type: Option<i64>,
    pub model: Option<i64>,
    pub requested_model: Option<i64>,
    pub resolved_model: Option<i64>,
    pub endpoint: Option<i64>,
    pub method: Option<i64>,
    pub path: Option<i64>,
    pub client_ip: Option<i64>,
    pub x_forwarded_for: Option<i64>,
    pub user_agent: Option<i64>,
    pub auth_type: Option<i64>,
    pub auth_index: Option<i64>,
    pub source: Option<i64>,
    pub source_hash: Option<i64>,
    pub api_key_hash: Option<i64>,
    pub account: Option<i64>,
    pub auth_label: Option<i64>,
    pub auth_file: Option<i64>,
    pub auth_provider: Option<i64>,
    pub auth_project: Option<i64>,
    pub reasoning_effort: Option<i64>,
    pub service_tier: Option<i64>,
    pub request_service_tier: Option<i64>,
    pub response_service_tier: Option<i64>,
    pub quota_plan_type: Option<i64>,
    pub error_kind: Option<i64>,
    pub error_code: Option<i64>,
}

async fn resolve_dims(
    store: &SqliteStore,
    connection: &mut SqliteConnection,
    stage: &mut DimStage,
    event: &UsageEvent,
) -> Result<EventDims, sqlx::Error> {
    let cache = store.dims();
    let model_name = if event.model.is_empty() {
        "-"
    } else {
        event.model.as_str()
    };
    let values = [
        (DimKind::Provider, event.provider.as_deref()),
        (DimKind::ExecutorType, event.executor_type.as_deref()),
        (DimKind::Model, Some(model_name)),
        (DimKind::Model, event.requested_model.as_deref()),
        (DimKind::Model, event.resolved_model.as_deref()),
        (DimKind::Endpoint, event.endpoint.as_deref()),
        (DimKind::Method, event.method.as_deref()),
        (DimKind::Path, event.path.as_deref()),
        (DimKind::ClientIp, event.client_ip.as_deref()),
        (DimKind::XForwardedFor, event.x_forwarded_for.as_deref()),
        (DimKind::UserAgent, event.user_agent.as_deref()),
        (DimKind::AuthType, event.auth_type.as_deref()),
        (DimKind::AuthIndex, event.auth_index.as_deref()),
        (DimKind::Source, event.source.as_deref()),
        (DimKind::SourceHash, event.source_hash.as_deref()),
        (DimKind::ApiKeyHash, event.api_key_hash.as_deref()),
        (DimKind::Account, event.account_snapshot.as_deref()),
        (DimKind::AuthLabel, event.auth_label_snapshot.as_deref()),
        (DimKind::AuthFile, event.auth_file_snapshot.as_deref()),
        (
            DimKind::AuthProvider,
            event.auth_provider_snapshot.as_deref(),
        ),
        (
            DimKind::AuthProject,
            event.auth_project_id_snapshot.as_deref(),
        ),
        (DimKind::ReasoningEffort, event.reasoning_effort.as_deref()),
        (DimKind::ServiceTier, event.service_tier.as_deref()),
        (DimKind::ServiceTier, event.request_service_tier.as_deref()),
        (DimKind::ServiceTier, event.response_service_tier.as_deref()),
        (
            DimKind::QuotaPlanType,
            event.header_quota_plan_type.as_deref(),
        ),
        (DimKind::ErrorKind, event.header_error_kind.as_deref()),
        (DimKind::ErrorCode, event.header_error_code.as_deref()),
    ];
    // Almost always every text is known already: one lock, no statement.
    let mut ids = cache.lookup_all(stage, &values);
    for ((kind, value), id) in values.iter().zip(ids.iter_mut()) {
        if id.is_none() {
            *id = stage
                .resolve(cache, &mut *connection, *kind, *value)
                .await?;
        }
    }
    let [
        provider,
        executor_type,
        model,
        requested_model,
        resolved_model,
        endpoint,
        method,
        path,
        client_ip,
        x_forwarded_for,
        user_agent,
        auth_type,
        auth_index,
        source,
        source_hash,
        api_key_hash,
        account,
        auth_label,
        auth_file,
        auth_provider,
        auth_project,
        reasoning_effort,
        service_tier,
        request_service_tier,
        response_service_tier,
        quota_plan_type,
        error_kind,
        error_code,
    ] = ids;
    Ok(EventDims {
        provider,
        executor_type,
        model,
        requested_model,
        resolved_model,
        endpoint,
        method,
        path,
        client_ip,
        x_forwarded_for,
        user_agent,
        auth_type,
        auth_index,
        source,
        source_hash,
        api_key_hash,
        account,
        auth_label,
        auth_file,
        auth_provider,
        auth_project,
        reasoning_effort,
        service_tier,
        request_service_tier,
        response_service_tier,
        quota_plan_type,
        error_kind,
        error_code,
    })
}

/// Inserts up to [`EVENTS_PER_STATEMENT`] events in one statement.
async fn insert_events(
    connection: &mut SqliteConnection,
    rows: &[NewEvent<'_>],
    origin_id: Option<i64>,
) -> Result<(), sqlx::Error> {
    let mut builder = sqlx::QueryBuilder::new(
        "INSERT INTO usage_events (\
            id, event_hash, cpa_source_id, request_id, timestamp_ms, timestamp_text, \
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
            header_error_kind_id, header_error_code_id, header_trace_id, created_at_ms) ",
    );
    builder.push_values(rows, |mut row, new| {
        let event = new.event;
        let dims = &new.dims;
        let tokens = &event.tokens;
        let normalized = &event.normalized;
        let known = event.cache_input_mode.is_some();
        let cache_input_mode = event.cache_input_mode.map(|mode| match mode {
            cpamp_domain::event::CacheInputMode::IncludedInInput => 0_i64,
            cpamp_domain::event::CacheInputMode::SeparateFromInput => 1_i64,
        });
        row.push_bind(new.id)
            .push_bind(new.hash.to_vec())
            .push_bind(origin_id)
            .push_bind(event.request_id.clone().filter(|id| !id.is_empty()))
            .push_bind(event.timestamp_ms)
            .push_bind(timestamp_text(event).map(str::to_owned))
            .push_bind(dims.provider)
            .push_bind(dims.executor_type)
            .push_bind(dims.model)
            .push_bind(dims.requested_model)
            .push_bind(dims.resolved_model)
            .push_bind(dims.endpoint)
            .push_bind(dims.method)
            .push_bind(dims.path)
            .push_bind(dims.client_ip)
            .push_bind(dims.x_forwarded_for)
            .push_bind(dims.user_agent)
            .push_bind(dims.auth_type)
            .push_bind(dims.auth_index)
            .push_bind(dims.source)
            .push_bind(dims.source_hash)
            .push_bind(dims.api_key_hash)
            .push_bind(dims.account)
            .push_bind(dims.auth_label)
            .push_bind(dims.auth_file)
            .push_bind(dims.auth_provider)
            .push_bind(dims.auth_project)
            .push_bind(event.auth_snapshot_at_ms.filter(|value| *value > 0))
            .push_bind(dims.reasoning_effort)
            .push_bind(dims.service_tier)
            .push_bind(dims.request_service_tier)
            .push_bind(dims.response_service_tier)
            .push_bind(cache_input_mode)
            .push_bind(tokens.input)
            .push_bind(tokens.output)
            .push_bind(tokens.reasoning)
            .push_bind(tokens.cached)
            .push_bind(tokens.cache)
            .push_bind(tokens.cache_read)
            .push_bind(tokens.cache_creation)
            .push_bind(tokens.total)
            .push_bind(known.then_some(normalized.uncached_input))
            .push_bind(known.then_some(normalized.total_input))
            .push_bind(known.then_some(normalized.cache_read))
            .push_bind(known.then_some(normalized.cache_creation))
            .push_bind(event.latency_ms)
            .push_bind(event.ttft_ms)
            .push_bind(i64::from(event.failed))
            .push_bind(event.fail_status_code.filter(|code| *code > 0))
            .push_bind(event.fail_summary.clone().filter(|text| !text.is_empty()))
            .push_bind(
                event
                    .response_metadata_json
                    .clone()
                    .filter(|text| !text.is_empty()),
            )
            .push_bind(event.header_quota_recover_at_ms.filter(|value| *value > 0))
            .push_bind(event.header_quota_used_percent)
            .push_bind(dims.quota_plan_type)
            .push_bind(dims.error_kind)
            .push_bind(dims.error_code)
            .push_bind(
                event
                    .header_trace_id
                    .clone()
                    .filter(|text| !text.is_empty()),
            )
            .push_bind(event.created_at_ms);
    });
    builder.build().execute(connection).await.map(|_| ())
}
