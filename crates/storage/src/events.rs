//! The ingest transaction: one batch from CPA becomes rows in one transaction.
//!
//! The batch's events claim their hashes in the identity ledger (a hash that is
//! already there, or repeats inside the batch, is a duplicate and counted as
//! skipped); the events that claimed a hash are inserted row by row through
//! prepared statements. Dead letters of the batch, the rollups and the row
//! counters are written in the same transaction. Either the whole batch is
//! stored or, on any error, nothing is, and the caller keeps the batch to retry.
//!
//! The transaction runs on a blocking thread over the store's batch connection
//! (rusqlite, its statements prepared once and reused), while the task holds the
//! writer pool's only connection: a batch and every other write of the store
//! still happen one at a time.

use cpamp_domain::StoreError;
use cpamp_domain::decode::redact_dead_letter_text;
use cpamp_domain::event::{TokenCounts, UsageEvent};
use cpamp_domain::ports::{BatchOutcome, EventSink, IngestBatch};
use rusqlite::{Connection, TransactionBehavior};

use crate::dims::{DimKind, DimStage};
use crate::{SqliteStore, error};

impl EventSink for SqliteStore {
    async fn store_batch(&self, batch: IngestBatch) -> Result<BatchOutcome, StoreError> {
        if batch.events.is_empty() && batch.dead_letters.is_empty() {
            return Ok(BatchOutcome::default());
        }
        self.with_batch_writer(("begin batch", "store batch"), move |store, connection| {
            store_in_transaction(store, connection, &batch)
        })
        .await
    }
}

fn store_in_transaction(
    store: &SqliteStore,
    connection: &mut Connection,
    batch: &IngestBatch,
) -> Result<BatchOutcome, StoreError> {
    let mut stage = DimStage::default();
    // IMMEDIATE: the write lock is taken (or waited for) before anything is read.
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(error::sqlite("begin batch"))?;
    // Dropping the transaction on an error rolls it back.
    let outcome = write_batch(store, &transaction, &mut stage, batch)
        .map_err(error::sqlite("store batch"))?;
    transaction
        .commit()
        .map_err(error::sqlite("commit batch"))?;
    store.dims().commit(stage);
    store.counted(outcome.inserted, outcome.dead_lettered);
    Ok(outcome)
}

/// An event that claimed its hash and will be inserted with this id.
pub(crate) struct NewEvent<'a> {
    pub id: i64,
    pub event: &'a UsageEvent,
    pub hash: [u8; 32],
    pub dims: EventDims,
    /// The response metadata's template id and literals, when it has that form.
    pub metadata: Option<(i64, Vec<u8>)>,
}

fn write_batch(
    store: &SqliteStore,
    connection: &Connection,
    stage: &mut DimStage,
    batch: &IngestBatch,
) -> rusqlite::Result<BatchOutcome> {
    let mut outcome = BatchOutcome::default();
    // Imported and adopted events keep `cpa_source_id` NULL: they were not
    // collected from a CPA connection.
    let origin_id = match batch.origin.cpa_base_url() {
        None => None,
        Some(base_url) => match store.dims().origin(base_url) {
            Some(id) => Some(id),
            None => {
                let id = cpa_source_id(connection, base_url)?;
                stage.others.origins.insert(base_url.to_string(), id);
                Some(id)
            }
        },
    };

    // The batch's hashes in key order (ties in input order), so the ledger's
    // pages are visited in key order and a hash repeated inside the batch sits
    // next to its first occurrence. The leading eight bytes decide almost every
    // comparison without a call to compare the whole arrays.
    let mut sorted: Vec<(u64, [u8; 32], usize)> = batch
        .events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let hash = decode_hash(&event.event_hash);
            (leading_word(&hash), hash, index)
        })
        .collect();
    sorted.sort_unstable();
    // The first occurrence of each hash is a candidate; the others are skipped.
    let mut first = vec![false; batch.events.len()];
    let mut previous: Option<&[u8; 32]> = None;
    for (_, hash, index) in &sorted {
        if previous == Some(hash) {
            outcome.skipped += 1;
        } else {
            first[*index] = true;
        }
        previous = Some(hash);
    }

    // Ids are assigned here in input order (one writer, so nothing else takes
    // them). Candidates that turn out to be duplicates leave a harmless gap.
    let next_id: i64 = connection
        .prepare_cached("SELECT coalesce(max(id), 0) + 1 FROM usage_events")?
        .query_row([], |row| row.get(0))?;
    let mut ids = vec![0_i64; batch.events.len()];
    let mut next = next_id;
    for (index, id) in ids.iter_mut().enumerate() {
        if first[index] {
            *id = next;
            next += 1;
        }
    }

    // Claims in key order. A hash already in the ledger changes no row; the
    // hashes claimed here are those of the events to insert.
    let mut claimed: Vec<Option<[u8; 32]>> = vec![None; batch.events.len()];
    for (_, hash, index) in &sorted {
        let index = *index;
        if first[index]
            && crate::ledger::claim(
                connection,
                hash,
                Some(ids[index]),
                crate::ledger::SEEN_AT_CREATION,
            )?
        {
            claimed[index] = Some(*hash);
        }
    }

    let mut fresh = Vec::with_capacity(batch.events.len());
    for (index, event) in batch.events.iter().enumerate() {
        let Some(hash) = claimed[index] else {
            if first[index] {
                outcome.skipped += 1;
            }
            continue;
        };
        outcome.fresh.push(index);
        let dims = resolve_dims(store, connection, stage, event)?;
        let metadata = compact_metadata(store, connection, stage, event)?;
        fresh.push(NewEvent {
            id: ids[index],
            event,
            hash,
            dims,
            metadata,
        });
    }
    insert_events(connection, &fresh, origin_id)?;
    // Their hours' index rows are gone (`search_index::unseal`): the next
    // indexing pass looks from the earliest of them.
    if let Some(first) = fresh.iter().map(|new| new.event.timestamp_ms).min() {
        store.search_index_lowered(first);
    }
    outcome.inserted = fresh.len() as u64;

    if !batch.dead_letters.is_empty() {
        let mut insert = connection.prepare_cached(
            "INSERT INTO dead_letter_events (payload, error, created_at_ms) VALUES (?1, ?2, ?3)",
        )?;
        for dead_letter in &batch.dead_letters {
            // Dead letters are redacted like failure summaries: a malformed item can
            // carry a client API key, a token or a cookie, which must never reach the file.
            insert.execute((
                redact_dead_letter_text(&dead_letter.payload),
                redact_dead_letter_text(&dead_letter.reason),
                dead_letter.created_at_ms,
            ))?;
            outcome.dead_lettered += 1;
        }
    }
    crate::rollup::flush(store, connection, stage, &fresh)?;
    crate::snapshots::note_latest(connection, &fresh)?;
    bump_counter(connection, "usage_events", outcome.inserted)?;
    bump_counter(connection, "dead_letter_events", outcome.dead_lettered)?;
    Ok(outcome)
}

fn bump_counter(connection: &Connection, name: &str, by: u64) -> rusqlite::Result<()> {
    if by == 0 {
        return Ok(());
    }
    connection
        .prepare_cached("UPDATE counters SET value = value + ?1 WHERE name = ?2")?
        .execute((i64::try_from(by).unwrap_or(i64::MAX), name))
        .map(|_| ())
}

fn cpa_source_id(connection: &Connection, base_url: &str) -> rusqlite::Result<i64> {
    connection
        .prepare_cached(
            "INSERT INTO cpa_sources (base_url, created_at_ms) VALUES (?1, ?2) \
             ON CONFLICT (base_url) DO UPDATE SET base_url = excluded.base_url RETURNING id",
        )?
        .query_row((base_url, crate::settings::now_ms()), |row| row.get(0))
}

/// The 32 raw bytes of a hex event hash. A malformed hash (which the decoder never
/// produces) is hashed again so it still dedupes deterministically.
fn decode_hash(hex_hash: &str) -> [u8; 32] {
    if let Some(bytes) = decode_hex_32(hex_hash.as_bytes()) {
        return bytes;
    }
    let mut bytes = [0u8; 32];
    use sha2::Digest;
    let digest = sha2::Sha256::digest(hex_hash.as_bytes());
    bytes.copy_from_slice(&digest);
    bytes
}

/// 64 hex digits (either case) as 32 bytes, like `hex::decode_to_slice` but
/// without its per-digit error bookkeeping (every event's hash passes here).
fn decode_hex_32(digits: &[u8]) -> Option<[u8; 32]> {
    fn nibble(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            b'A'..=b'F' => Some(digit - b'A' + 10),
            _ => None,
        }
    }
    if digits.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(bytes)
}

/// The first eight bytes of a hash as a number that orders like the bytes.
fn leading_word(hash: &[u8; 32]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(word)
}

/// The timestamp text's columns: nothing when `timestamp_ms` rebuilds it, the
/// digits beyond the millisecond when only those are missing, else the text
/// (`scratch` is a buffer reused from event to event).
fn timestamp_columns<'e>(
    event: &'e UsageEvent,
    scratch: &mut String,
) -> (Option<&'e str>, Option<i64>) {
    scratch.clear();
    cpamp_domain::event::write_timestamp_ms(scratch, event.timestamp_ms);
    if *scratch == event.timestamp {
        return (None, None);
    }
    match crate::compact::timestamp_sub_ms(&event.timestamp, event.timestamp_ms, scratch) {
        Some(sub) => (None, Some(sub)),
        None => (Some(event.timestamp.as_str()), None),
    }
}

/// The template id and literals of an event's response metadata (`None` when it
/// has none, or keeps its text as it is).
fn compact_metadata(
    store: &SqliteStore,
    connection: &Connection,
    stage: &mut DimStage,
    event: &UsageEvent,
) -> rusqlite::Result<Option<(i64, Vec<u8>)>> {
    let Some(text) = text(&event.response_metadata_json) else {
        return Ok(None);
    };
    let Some(parts) = crate::compact::encode_metadata(
        text,
        event.timestamp_ms,
        self::text(&event.header_trace_id),
    ) else {
        return Ok(None);
    };
    let cache = store.dims();
    let values = [(DimKind::ResponseMetadata, Some(parts.template.as_str()))];
    let id = match cache.lookup_all(stage, &values)[0] {
        Some(id) => Some(id),
        None => stage.resolve(
            cache,
            connection,
            DimKind::ResponseMetadata,
            Some(&parts.template),
        )?,
    };
    Ok(id.map(|id| (id, parts.values)))
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

fn resolve_dims(
    store: &SqliteStore,
    connection: &Connection,
    stage: &mut DimStage,
    event: &UsageEvent,
) -> rusqlite::Result<EventDims> {
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
            *id = stage.resolve(cache, connection, *kind, *value)?;
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

/// The columns of an event row, in the order [`insert_events`] binds them.
const INSERT_EVENT: &str = "INSERT INTO usage_events (\
    id, event_hash, cpa_source_id, request_key, timestamp_ms, timestamp_text, \
    provider_id, executor_type_id, model_id, requested_model_id, resolved_model_id, \
    endpoint_id, method_id, path_id, client_ip_id, x_forwarded_for_id, user_agent_id, \
    auth_type_id, auth_index_id, source_id, source_hash_id, api_key_hash_id, \
    account_snapshot_id, auth_label_snapshot_id, auth_file_snapshot_id, \
    auth_provider_snapshot_id, auth_project_id_snapshot_id, auth_snapshot_at_ms, \
    reasoning_effort_id, service_tier_id, request_service_tier_id, response_service_tier_id, \
    cache_input_mode, input_tokens, output_tokens, reasoning_tokens, cached_tokens, \
    cache_tokens, cache_read_tokens, cache_creation_tokens, total_tokens, \
    normalized_uncached_input_stored, normalized_total_input_stored, \
    normalized_cache_read_stored, normalized_cache_creation_stored, \
    latency_ms, ttft_ms, failed, fail_status_stored, fail_summary, response_metadata_json, \
    header_quota_recover_at_ms, header_quota_used_percent, header_quota_plan_type_id, \
    header_error_kind_id, header_error_code_id, header_trace, created_at_delta, \
    timestamp_sub_ms, metadata_template_id, metadata_values) VALUES (\
    ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, \
    ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, \
    ?, ?, ?)";

/// The normalized token counts (uncached input, total input, cache read, cache
/// creation) the virtual columns of `0120_normalized_tokens_derived` compute from
/// an event's raw counters and cache input mode (`0`: included in the input, `1`:
/// separate). A count whose computation overflows somewhere is `None`: SQLite
/// would leave integers there, so it stays stored.
fn derived_normalized(tokens: &TokenCounts, mode: i64) -> Option<[Option<i64>; 4]> {
    let read = tokens.cache_read.max(0);
    let creation = tokens.cache_creation.max(0);
    let input = tokens.input.max(0);
    let cache_read = read.checked_add(creation).and_then(|both| {
        tokens
            .cached
            .max(tokens.cache)
            .checked_sub(both)
            .and_then(|extra| extra.max(0).checked_add(read))
    });
    let (uncached, total) = match mode {
        1 => (
            Some(input),
            cache_read
                .and_then(|cache_read| input.checked_add(cache_read))
                .and_then(|sum| sum.checked_add(creation)),
        ),
        0 => (
            cache_read
                .and_then(|cache_read| input.checked_sub(cache_read))
                .and_then(|rest| rest.checked_sub(creation))
                .map(|rest| rest.max(0)),
            Some(input),
        ),
        _ => return None,
    };
    Some([uncached, total, cache_read, Some(creation)])
}

/// `created_at_ms - timestamp_ms`, when both are within the bounds the
/// conversion of `0125_created_at_delta` uses (so SQLite's sum gives the time
/// back exactly).
fn created_at_delta(created_at_ms: i64, timestamp_ms: i64) -> Option<i64> {
    const BOUND: i64 = 4_000_000_000_000_000_000;
    ((-BOUND..=BOUND).contains(&created_at_ms) && (-BOUND..=BOUND).contains(&timestamp_ms))
        .then(|| created_at_ms - timestamp_ms)
}

/// A text column's value: `NULL` for a missing or empty text.
fn text(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|text| !text.is_empty())
}

/// Inserts the events, one execution of one prepared statement each; values are
/// bound straight from the borrowed event, nothing is copied.
fn insert_events(
    connection: &Connection,
    rows: &[NewEvent<'_>],
    origin_id: Option<i64>,
) -> rusqlite::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut statement = connection.prepare_cached(INSERT_EVENT)?;
    let mut scratch = String::with_capacity(32);
    for new in rows {
        let event = new.event;
        let dims = &new.dims;
        let tokens = &event.tokens;
        let normalized = &event.normalized;
        let known = event.cache_input_mode.is_some();
        let cache_input_mode = event.cache_input_mode.map(|mode| match mode {
            cpamp_domain::event::CacheInputMode::IncludedInInput => 0_i64,
            cpamp_domain::event::CacheInputMode::SeparateFromInput => 1_i64,
        });
        let mut index = 0;
        let mut bind = |value: &dyn rusqlite::ToSql| {
            index += 1;
            statement.raw_bind_parameter(index, value)
        };
        bind(&new.id)?;
        bind(&&new.hash[..])?;
        bind(&origin_id)?;
        // Hex request and trace ids are stored as their bytes (`compact.rs`).
        let request = text(&event.request_id);
        match request.and_then(crate::compact::request_bytes) {
            Some(bytes) => bind(&&bytes[..])?,
            None => bind(&request)?,
        }
        bind(&event.timestamp_ms)?;
        let (timestamp_text, timestamp_sub_ms) = timestamp_columns(event, &mut scratch);
        bind(&timestamp_text)?;
        for id in [
            dims.provider,
            dims.executor_type,
            dims.model,
            dims.requested_model,
            dims.resolved_model,
            dims.endpoint,
            dims.method,
            dims.path,
            dims.client_ip,
            dims.x_forwarded_for,
            dims.user_agent,
            dims.auth_type,
            dims.auth_index,
            dims.source,
            dims.source_hash,
            dims.api_key_hash,
            dims.account,
            dims.auth_label,
            dims.auth_file,
            dims.auth_provider,
            dims.auth_project,
        ] {
            bind(&id)?;
        }
        bind(&event.auth_snapshot_at_ms.filter(|value| *value > 0))?;
        for id in [
            dims.reasoning_effort,
            dims.service_tier,
            dims.request_service_tier,
            dims.response_service_tier,
            cache_input_mode,
        ] {
            bind(&id)?;
        }
        for value in [
            tokens.input,
            tokens.output,
            tokens.reasoning,
            tokens.cached,
            tokens.cache,
            tokens.cache_read,
            tokens.cache_creation,
            tokens.total,
        ] {
            bind(&value)?;
        }
        // A count the columns compute from the others is not stored.
        let derived = cache_input_mode.and_then(|mode| derived_normalized(tokens, mode));
        for (position, value) in [
            normalized.uncached_input,
            normalized.total_input,
            normalized.cache_read,
            normalized.cache_creation,
        ]
        .into_iter()
        .enumerate()
        {
            let computed = derived.and_then(|derived| derived[position]);
            bind(
                &known
                    .then_some(value)
                    .filter(|value| Some(*value) != computed),
            )?;
        }
        bind(&event.latency_ms)?;
        bind(&event.ttft_ms)?;
        bind(&i64::from(event.failed))?;
        // Status 200 is stored as NULL and no status as 0 (`0123`).
        bind(&match event.fail_status_code.filter(|code| *code > 0) {
            Some(200) => None,
            None => Some(0),
            code => code,
        })?;
        bind(&text(&event.fail_summary))?;
        bind(&text(&event.response_metadata_json).filter(|_| new.metadata.is_none()))?;
        bind(&event.header_quota_recover_at_ms.filter(|value| *value > 0))?;
        bind(&event.header_quota_used_percent)?;
        bind(&dims.quota_plan_type)?;
        bind(&dims.error_kind)?;
        bind(&dims.error_code)?;
        let trace = text(&event.header_trace_id);
        match trace.and_then(crate::compact::trace_bytes) {
            Some(bytes) => bind(&&bytes[..])?,
            None => bind(&trace)?,
        }
        // The creation time as the milliseconds after the event (`0125`).
        match created_at_delta(event.created_at_ms, event.timestamp_ms) {
            Some(delta) => bind(&delta)?,
            None => bind(&format!("={}", event.created_at_ms))?,
        }
        bind(&timestamp_sub_ms)?;
        bind(&new.metadata.as_ref().map(|(id, _)| *id))?;
        bind(&new.metadata.as_ref().map(|(_, values)| values.as_slice()))?;
        statement.raw_execute()?;
    }
    // Their hours' search index rows no longer list every event.
    crate::search_index::unseal(connection, rows.iter().map(|new| new.event.timestamp_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_hashes_decode_like_the_hex_crate() {
        let lower = "813f3c933ea15b6ef828b6a4c0f08cef5e402c0a9dd5bb4130415e8a6be95008";
        let mut expected = [0u8; 32];
        hex::decode_to_slice(lower, &mut expected).expect("valid hex");
        assert_eq!(decode_hex_32(lower.as_bytes()), Some(expected));
        assert_eq!(
            decode_hex_32(lower.to_uppercase().as_bytes()),
            Some(expected)
        );
        assert_eq!(decode_hash(lower), expected);
        for bad in [&lower[..62], "g".repeat(64).as_str(), &format!("{lower}00")] {
            assert_eq!(decode_hex_32(bad.as_bytes()), None, "{bad}");
            // A malformed hash still has a fixed identity of its own.
            assert_eq!(decode_hash(bad), decode_hash(bad));
            assert_ne!(decode_hash(bad), expected);
        }
    }

    #[test]
    fn leading_words_order_like_the_hashes() {
        let mut hashes: Vec<[u8; 32]> = (0_u8..=255)
            .map(|seed| {
                use sha2::Digest;
                sha2::Sha256::digest([seed]).into()
            })
            .collect();
        let mut by_word = hashes.clone();
        hashes.sort_unstable();
        by_word.sort_unstable_by_key(|hash| (leading_word(hash), *hash));
        assert_eq!(hashes, by_word);
    }
}
