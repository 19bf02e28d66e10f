//! Rollup maintenance, inside the ingest transaction.
//!
//! The batch writer calls [`flush`] once with the batch's new events, before
//! commit. `flush` merges the batch's events per
//! rollup key and applies one additive upsert per key, so rollups are never stale
//! (they commit or roll back with the events) and a batch costs a statement per
//! distinct key, not per event.
//!
//! Sums are bounded by the number of distinct keys; latency samples grow with the
//! events, so they are kept as append-only runs per block (see [`append_samples`]):
//! a batch touches at most one run of [`RUN_BYTES`] per block and level, however
//! full the block already is.

use std::collections::HashMap;

use cpamp_domain::analytics::cost::context_band;
use cpamp_domain::analytics::heat::HeatSums;
use cpamp_domain::analytics::percentile::{band, band_floor};
use cpamp_domain::analytics::query::metrics_of;
use cpamp_domain::analytics::time::{DAY_MS, HOUR_MS, QUARTER_MS};
use cpamp_domain::analytics::{Metrics, analytics_model};
use cpamp_domain::event::UsageEvent;
use rusqlite::Connection;
use sqlx::SqliteConnection;

use crate::SqliteStore;
use crate::dims::{DimKind, DimStage};
use crate::events::{EventDims, NewEvent};
use crate::fasthash::FastMap;

/// Width of a `usage_rollup_fine` block.
pub(crate) const FINE_MS: i64 = 5 * 60_000;

fn identity_key(dims: &EventDims) -> [i64; 11] {
    [
        dims.provider,
        dims.executor_type,
        dims.auth_index,
        dims.source,
        dims.source_hash,
        dims.api_key_hash,
        dims.account,
        dims.auth_label,
        dims.auth_file,
        dims.auth_provider,
        dims.auth_project,
    ]
    .map(|id| id.unwrap_or(0))
}

/// The reduced identity the heat rollup is keyed by: the effective provider
/// (the snapshot provider, else the event provider) in the provider slot and the
/// API-key hash, every other dimension 0. These are the only identity fields the
/// heatmap reads, so its hourly rows stay few however many credentials there are.
pub(crate) fn heat_key(identity: &[i64; 11]) -> [i64; 11] {
    let provider = if identity[9] != 0 {
        identity[9]
    } else {
        identity[0]
    };
    [provider, 0, 0, 0, 0, identity[5], 0, 0, 0, 0, 0]
}

struct Pending<'a> {
    timestamp_ms: i64,
    dims: EventDims,
    effective_model: &'a str,
    failed: bool,
    band: u8,
    metrics: Metrics,
    latency: Option<u32>,
    ttft: Option<u32>,
}

/// The rollup-relevant values of the batch's new events.
#[derive(Default)]
struct Accumulator<'a> {
    pending: Vec<Pending<'a>>,
}

impl<'a> Accumulator<'a> {
    fn add(&mut self, event: &'a UsageEvent, dims: EventDims) {
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
            Some(requested) if !requested.is_empty() => requested,
            _ if event.model.is_empty() => "-",
            _ => event.model.as_str(),
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

/// The key of one rollup entry. `identity` is 0 in the aggregate rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct EntryKey {
    pub identity: i64,
    pub model: i64,
    pub billing: i64,
    pub tier: i64,
    pub band: u8,
    pub failed: bool,
}

/// The sums of one rollup entry.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Sums {
    pub metrics: Metrics,
    pub last_seen_ms: i64,
}

impl Sums {
    pub(crate) fn add(&mut self, metrics: &Metrics, at: i64) {
        self.metrics.add(metrics);
        self.last_seen_ms = self.last_seen_ms.max(at);
    }

    pub(crate) fn merge(&mut self, other: &Sums) {
        self.add(&other.metrics, other.last_seen_ms);
    }
}

type Entries = FastMap<EntryKey, Sums>;
/// Latency and TTFT values per (identity, analytics model, failed).
type Samples = FastMap<(i64, i64, bool), (Vec<u32>, Vec<u32>)>;

fn floor(value: i64, step: i64) -> i64 {
    value.div_euclid(step) * step
}

/// Width of a minute rollup block.
pub(crate) const MINUTE_MS: i64 = 60_000;

const LEVELS: [(i64, &str); 4] = [
    (MINUTE_MS, "m"),
    (QUARTER_MS, "q"),
    (HOUR_MS, "h"),
    (DAY_MS, "d"),
];

/// The pair tables of the last levels of [`LEVELS`] (hours and days), each with
/// the identity rollup its blobs are built from.
const PAIR_LEVELS: [(&str, &str); 2] = [
    ("usage_rollup_pairs_h", "usage_rollup_ident_h"),
    ("usage_rollup_pairs_d", "usage_rollup_ident_d"),
];

/// The levels of [`LEVELS`] that keep latency samples: minutes and quarter hours.
/// Hours and days read the samples of their quarters (`0132`): with the values
/// kept per band, a percentile read decodes a few bands whatever the block size.
const SAMPLE_LEVELS: usize = 2;

/// Minute rollups (the first of [`LEVELS`]) are written for events stamped at most
/// this long before the server's clock, and rows older than that are deleted as
/// batches come in: they serve the edges of recent ranges, where a quarter hour
/// may still be filling (`0131_minute_rollups.sql`).
pub(crate) const MINUTE_KEEP_MS: i64 = 3 * HOUR_MS;

/// Readers use minute rows at most this long before their own clock: an hour
/// less than [`MINUTE_KEEP_MS`], so a batch that was slow to commit, or a clock
/// that stepped back, cannot leave a minute row short of an event it read.
pub(crate) const MINUTE_READ_MS: i64 = 2 * HOUR_MS;

/// Writes the batch's rollup rows. Runs inside the batch transaction.
pub(crate) fn flush(
    store: &SqliteStore,
    connection: &Connection,
    stage: &mut DimStage,
    fresh: &[NewEvent<'_>],
) -> rusqlite::Result<()> {
    let mut accumulator = Accumulator::default();
    for new in fresh {
        accumulator.add(new.event, new.dims);
    }
    if accumulator.pending.is_empty() {
        return Ok(());
    }
    let recent_from = crate::settings::now_ms().saturating_sub(MINUTE_KEEP_MS);
    for table in [
        "usage_rollup_agg_m",
        "usage_rollup_ident_m",
        "usage_rollup_samples_m",
    ] {
        // `table` is one of the fixed names above; the key's index makes this a
        // seek to the oldest row when there is nothing to delete.
        connection
            .prepare_cached(&format!("DELETE FROM {table} WHERE bucket_ms < ?1"))?
            .execute([floor(recent_from, MINUTE_MS)])?;
    }
    // Analytics model per effective model id.
    let mut analytics_ids: FastMap<i64, i64> = FastMap::default();
    for pending in &accumulator.pending {
        let effective_id = pending
            .dims
            .requested_model
            .or(pending.dims.model)
            .unwrap_or(0);
        if analytics_ids.contains_key(&effective_id) {
            continue;
        }
        if let Some(known) = store
            .dims()
            .analytics(effective_id)
            .or_else(|| stage.others.analytics.get(&effective_id).copied())
        {
            analytics_ids.insert(effective_id, known);
            continue;
        }
        let analytics = analytics_model(pending.effective_model);
        let analytics_id = if analytics == pending.effective_model {
            effective_id
        } else {
            let text = if analytics.is_empty() { "-" } else { analytics };
            stage
                .resolve(store.dims(), connection, DimKind::Model, Some(text))?
                .unwrap_or(0)
        };
        connection
            .prepare_cached(
                "INSERT INTO usage_model_analytics (model_dim_id, analytics_dim_id) VALUES (?1, ?2) \
                 ON CONFLICT (model_dim_id) DO NOTHING",
            )?
            .execute((effective_id, analytics_id))?;
        stage.others.analytics.insert(effective_id, analytics_id);
        analytics_ids.insert(effective_id, analytics_id);
    }
    // Identity id per identity tuple (and per reduced heat tuple).
    let mut identity_ids: FastMap<[i64; 11], i64> = FastMap::default();
    for pending in &accumulator.pending {
        let key = identity_key(&pending.dims);
        for key in [key, heat_key(&key)] {
            if let std::collections::hash_map::Entry::Vacant(slot) = identity_ids.entry(key) {
                slot.insert(identity_id(store, connection, stage, key)?);
            }
        }
    }

    let mut aggregate: [FastMap<i64, Entries>; 4] = Default::default();
    let mut identity: [FastMap<i64, Entries>; 4] = Default::default();
    let mut samples: [FastMap<i64, Samples>; SAMPLE_LEVELS] = Default::default();
    let mut heat: FastMap<i64, Entries> = FastMap::default();
    let mut fine: FastMap<(i64, bool), (i64, i64)> = FastMap::default();
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
        let key = EntryKey {
            identity: 0,
            model,
            billing: pending.dims.resolved_model.unwrap_or(model),
            tier: pending.dims.service_tier.unwrap_or(0),
            band: pending.band,
            failed: pending.failed,
        };
        let full_key = identity_key(&pending.dims);
        let identity_id = identity_ids.get(&full_key).copied().unwrap_or(0);
        let heat_id = identity_ids.get(&heat_key(&full_key)).copied().unwrap_or(0);
        let at = pending.timestamp_ms;
        heat.entry(floor(at, HOUR_MS))
            .or_default()
            .entry(EntryKey {
                identity: heat_id,
                ..key
            })
            .or_default()
            .add(&pending.metrics, at);
        for (level, (step, _)) in LEVELS.iter().enumerate() {
            if level == 0 && at < recent_from {
                continue;
            }
            let bucket = floor(at, *step);
            aggregate[level]
                .entry(bucket)
                .or_default()
                .entry(key)
                .or_default()
                .add(&pending.metrics, at);
            identity[level]
                .entry(bucket)
                .or_default()
                .entry(EntryKey {
                    identity: identity_id,
                    ..key
                })
                .or_default()
                .add(&pending.metrics, at);
            // Hours and days read the samples of their quarters.
            if level < SAMPLE_LEVELS && (pending.latency.is_some() || pending.ttft.is_some()) {
                let entry = samples[level]
                    .entry(bucket)
                    .or_default()
                    .entry((identity_id, model, pending.failed))
                    .or_default();
                entry.0.extend(pending.latency);
                entry.1.extend(pending.ttft);
            }
        }
        let block = fine
            .entry((floor(at, FINE_MS), pending.failed))
            .or_default();
        block.0 += 1;
        block.1 = block.1.saturating_add(pending.metrics.total);
    }

    for (level, (_, suffix)) in LEVELS.iter().enumerate() {
        for (family, buckets, with_identity) in [
            ("agg", &aggregate[level], false),
            ("ident", &identity[level], true),
        ] {
            let table = format!("usage_rollup_{family}_{suffix}");
            for (bucket, entries) in buckets {
                merge_entries(connection, &table, *bucket, with_identity, entries)?;
            }
        }
        if let Some(blocks) = samples.get(level) {
            let table = format!("usage_rollup_samples_{suffix}");
            for (bucket, groups) in blocks {
                append_samples(connection, &table, *bucket, groups)?;
            }
        }
    }
    for (bucket, entries) in &heat {
        merge_heat(connection, *bucket, entries)?;
    }
    // Which (identity, model) pairs each hour and day holds, for filter selectors.
    for (level, (pairs_table, _)) in PAIR_LEVELS.iter().enumerate() {
        for (bucket, entries) in &identity[LEVELS.len() - PAIR_LEVELS.len() + level] {
            let mut pairs: std::collections::BTreeSet<(i64, i64)> = entries
                .keys()
                .map(|key| (key.identity, key.model))
                .collect();
            // Every block with an identity rollup has a pair row (`backfill_pairs`
            // gave one to those written before the pair tables existed), so a
            // block without one is new and holds only this batch's pairs.
            if let Some(existing) = read_blob(connection, pairs_table, *bucket)? {
                decode_pairs(&existing, |identity, model| {
                    pairs.insert((identity, model));
                });
            }
            let mut blob = Vec::new();
            encode_pairs(&pairs, &mut blob);
            write_blob(connection, pairs_table, *bucket, &blob)?;
        }
    }
    for ((bucket, failed), (calls, tokens)) in fine {
        connection.prepare_cached(
            "INSERT INTO usage_rollup_fine (bucket_ms, failed, calls, total_tokens) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (bucket_ms, failed) DO UPDATE SET calls = calls + excluded.calls, \
             total_tokens = CASE \
               WHEN excluded.total_tokens > 0 AND total_tokens > 9223372036854775807 - excluded.total_tokens \
                 THEN 9223372036854775807 \
               WHEN excluded.total_tokens < 0 AND total_tokens < (-9223372036854775807 - 1) - excluded.total_tokens \
                 THEN -9223372036854775807 - 1 \
               ELSE total_tokens + excluded.total_tokens END",
        )?
        .execute((bucket, i64::from(failed), calls, tokens))?;
    }
    Ok(())
}

/// The id of an identity tuple, creating its `usage_identities` row if needed.
fn identity_id(
    store: &SqliteStore,
    connection: &Connection,
    stage: &mut DimStage,
    key: [i64; 11],
) -> rusqlite::Result<i64> {
    if let Some(known) = store
        .dims()
        .identity(&key)
        .or_else(|| stage.others.identities.get(&key).copied())
    {
        return Ok(known);
    }
    let id = connection
        .prepare_cached(INSERT_IDENTITY)?
        .query_row(rusqlite::params_from_iter(key), |row| row.get(0))?;
    stage.others.identities.insert(key, id);
    Ok(id)
}

/// Creates (or finds) an identity row; `RETURNING` its id either way.
const INSERT_IDENTITY: &str = "INSERT INTO usage_identities (provider_id, executor_type_id, \
    auth_index_id, source_id, source_hash_id, api_key_hash_id, account_id, auth_label_id, \
    auth_file_id, auth_provider_id, auth_project_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
    ON CONFLICT DO UPDATE SET provider_id = excluded.provider_id RETURNING id";

async fn insert_identity(
    connection: &mut SqliteConnection,
    key: [i64; 11],
) -> Result<i64, sqlx::Error> {
    let mut query = sqlx::query_scalar::<_, i64>(INSERT_IDENTITY);
    for id in key {
        query = query.bind(id);
    }
    query.fetch_one(&mut *connection).await
}

/// Adds `entries` to the packed block `bucket` of `table`.
fn merge_entries(
    connection: &Connection,
    table: &str,
    bucket: i64,
    with_identity: bool,
    entries: &Entries,
) -> rusqlite::Result<()> {
    let mut merged = entries.clone();
    if let Some(existing) = read_blob(connection, table, bucket)? {
        decode_entries(bucket, with_identity, &existing, |key, sums| {
            merged.entry(key).or_default().merge(&sums);
        });
    }
    let mut blob = Vec::new();
    encode_entries(bucket, with_identity, &merged, &mut blob);
    write_blob(connection, table, bucket, &blob)
}

/// Adds `entries` to the heat block `bucket` ([`encode_heat`]). The merged
/// entries are listed in the order [`merge_entries`] lists them.
fn merge_heat(connection: &Connection, bucket: i64, entries: &Entries) -> rusqlite::Result<()> {
    let mut merged = entries.clone();
    if let Some(existing) = read_blob(connection, HEAT_TABLE, bucket)? {
        decode_heat(&existing, |key, sums| {
            merged.entry(key).or_default().merge(&Sums {
                metrics: sums.metrics(),
                last_seen_ms: 0,
            });
        });
    }
    let mut blob = Vec::new();
    encode_heat(
        merged
            .iter()
            .map(|(key, sums)| (key, HeatSums::of(&sums.metrics))),
        &mut blob,
    );
    write_blob(connection, HEAT_TABLE, bucket, &blob)
}

/// The hourly heat rollup.
pub(crate) const HEAT_TABLE: &str = "usage_rollup_heat_h";

/// The backfill step that rewrites heat blobs stored in the generic entry
/// layout ([`encode_entries`]) in the heat layout ([`encode_heat`]), `0130`.
pub(crate) const HEAT_COMPACT: &str = "heat_h_compact";

/// Completes what a migration left to do in Rust, once: fills rollups added by a
/// migration from the rollups that already existed, redacts dead letters stored
/// before redaction existed (or adopted from the Go server), clears the account
/// key of quota snapshot rows stored before their window held it alone, and
/// fills the newest applied quota observation per scope. Runs at open, before
/// anything is ingested; each step commits with the removal of its mark.
pub(crate) async fn backfill(writer: &sqlx::SqlitePool) -> Result<(), sqlx::Error> {
    let pending: Vec<String> = sqlx::query_scalar("SELECT name FROM usage_rollup_backfill")
        .fetch_all(writer)
        .await?;
    for name in pending {
        if name == crate::compact::COMPACT_EVENTS || name == SAMPLE_BANDS {
            // Their own steps, run before this one (`compact::convert_stored`,
            // `convert_samples`).
            continue;
        }
        let redacting = name == REDACT_DEAD_LETTERS;
        if redacting {
            // The rows' old text must not survive in freed pages either (the store has
            // one writer connection, so this applies to the transaction below).
            sqlx::query("PRAGMA secure_delete = ON")
                .execute(writer)
                .await?;
        }
        let mut transaction = writer.begin().await?;
        if name == "heat_h" {
            backfill_heat(&mut transaction).await?;
        }
        if name == HEAT_COMPACT {
            compact_heat(&mut transaction).await?;
        }
        if name == PAIRS_H {
            backfill_pairs(&mut transaction).await?;
        }
        // The steps `quota_newest` (0033) and `quota_snapshot_account` (0032) are
        // done by migration 0095 on the rows it converts, which also clears them.
        if redacting {
            redact_dead_letters(&mut transaction).await?;
        }
        sqlx::query("DELETE FROM usage_rollup_backfill WHERE name = ?")
            .bind(&name)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        if redacting {
            sqlx::query("PRAGMA secure_delete = OFF")
                .execute(writer)
                .await?;
            // Old page images in the WAL go with a checkpoint.
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(writer)
                .await?;
        }
    }
    Ok(())
}

/// The backfill step that redacts stored dead letters.
pub(crate) const REDACT_DEAD_LETTERS: &str = "redact_dead_letters";

/// Rewrites every stored dead letter in its redacted form (a no-op for rows that are
/// redacted already).
async fn redact_dead_letters(connection: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let mut after = 0_i64;
    loop {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT id, payload, error FROM dead_letter_events WHERE id > ? ORDER BY id LIMIT 500",
        )
        .bind(after)
        .fetch_all(&mut *connection)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.0;
        for (id, payload, reason) in rows {
            let clean_payload = cpamp_domain::decode::redact_dead_letter_text(&payload);
            let clean_reason = cpamp_domain::decode::redact_dead_letter_text(&reason);
            if clean_payload != payload || clean_reason != reason {
                sqlx::query("UPDATE dead_letter_events SET payload = ?, error = ? WHERE id = ?")
                    .bind(clean_payload)
                    .bind(clean_reason)
                    .bind(id)
                    .execute(&mut *connection)
                    .await?;
            }
        }
    }
}

/// The backfill step that gives every hour (and any day) with an identity
/// rollup its pair row (`0134_hour_pairs.sql`).
pub(crate) const PAIRS_H: &str = "pairs_h";

/// Writes the pair row of every block of [`PAIR_LEVELS`] that has an identity
/// rollup but none, from that rollup's keys.
async fn backfill_pairs(connection: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    for (pairs_table, ident_table) in PAIR_LEVELS {
        let mut after = i64::MIN;
        loop {
            // The names are the fixed ones of `PAIR_LEVELS`.
            let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT r.bucket_ms, r.entries FROM {ident_table} r WHERE r.bucket_ms > ? \
                 AND NOT EXISTS (SELECT 1 FROM {pairs_table} p WHERE p.bucket_ms = r.bucket_ms) \
                 ORDER BY r.bucket_ms LIMIT 256"
            )))
            .bind(after)
            .fetch_all(&mut *connection)
            .await?;
            let Some(last) = rows.last().map(|row| row.0) else {
                break;
            };
            after = last;
            for (bucket, blob) in rows {
                let mut pairs = std::collections::BTreeSet::new();
                decode_keys(true, &blob, |key| {
                    pairs.insert((key.identity, key.model));
                });
                let mut out = Vec::new();
                encode_pairs(&pairs, &mut out);
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO {pairs_table} (bucket_ms, entries) VALUES (?, ?)"
                )))
                .bind(bucket)
                .bind(out)
                .execute(&mut *connection)
                .await?;
            }
        }
    }
    Ok(())
}

/// `usage_rollup_heat_h` from `usage_rollup_ident_h`: every entry's identity is
/// replaced by its reduced heat identity and equal keys are summed.
async fn backfill_heat(connection: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    // id and the eleven dimension ids.
    type Row = (i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64);
    let rows: Vec<Row> =
        sqlx::query_as(
            "SELECT id, provider_id, executor_type_id, auth_index_id, source_id, source_hash_id, \
             api_key_hash_id, account_id, auth_label_id, auth_file_id, auth_provider_id, auth_project_id \
             FROM usage_identities",
        )
        .fetch_all(&mut *connection)
        .await?;
    let mut ids: HashMap<[i64; 11], i64> = HashMap::new();
    let mut keys: Vec<(i64, [i64; 11])> = Vec::new();
    for row in rows {
        let key = [
            row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9, row.10, row.11,
        ];
        ids.insert(key, row.0);
        keys.push((row.0, key));
    }
    let mut heat_of: HashMap<i64, i64> = HashMap::new();
    for (id, key) in keys {
        let reduced = heat_key(&key);
        let heat_id = match ids.get(&reduced) {
            Some(known) => *known,
            None => {
                let created = insert_identity(connection, reduced).await?;
                ids.insert(reduced, created);
                created
            }
        };
        heat_of.insert(id, heat_id);
    }
    rewrite_into_heat(connection, "usage_rollup_ident_h", |bucket, blob| {
        let mut entries = Entries::default();
        decode_entries(bucket, true, blob, |key, sums| {
            let identity = heat_of.get(&key.identity).copied().unwrap_or(0);
            entries
                .entry(EntryKey { identity, ..key })
                .or_default()
                .merge(&sums);
        });
        let mut out = Vec::new();
        encode_heat(
            entries
                .iter()
                .map(|(key, sums)| (key, HeatSums::of(&sums.metrics))),
            &mut out,
        );
        out
    })
    .await
}

/// Rewrites every heat blob from the generic entry layout into the heat layout,
/// keeping the order of its entries.
async fn compact_heat(connection: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let mut entries: Vec<(EntryKey, HeatSums)> = Vec::new();
    rewrite_into_heat(connection, HEAT_TABLE, |bucket, blob| {
        entries.clear();
        decode_entries(bucket, true, blob, |key, sums| {
            entries.push((key, HeatSums::of(&sums.metrics)));
        });
        let mut out = Vec::new();
        encode_heat(entries.iter().map(|(key, sums)| (key, *sums)), &mut out);
        out
    })
    .await
}

/// Pages through every blob of `table` in bucket order and writes what `rewrite`
/// makes of each into the heat table, for the same bucket.
async fn rewrite_into_heat(
    connection: &mut SqliteConnection,
    table: &str,
    mut rewrite: impl FnMut(i64, &[u8]) -> Vec<u8>,
) -> Result<(), sqlx::Error> {
    // `table` is one of the fixed rollup table names, never input.
    let sql = format!(
        "SELECT bucket_ms, entries FROM {table} WHERE bucket_ms > ? ORDER BY bucket_ms LIMIT 256"
    );
    let mut cursor = i64::MIN;
    loop {
        let blobs: Vec<(i64, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(cursor)
            .fetch_all(&mut *connection)
            .await?;
        let Some(last) = blobs.last().map(|row| row.0) else {
            return Ok(());
        };
        cursor = last;
        for (bucket, blob) in blobs {
            let out = rewrite(bucket, &blob);
            backfill_write_blob(connection, HEAT_TABLE, bucket, out).await?;
        }
    }
}

/// Size at which a sample run is sealed and the block's next batch starts a new one.
pub(crate) const RUN_BYTES: i64 = 16 * 1024;

/// Adds a batch's samples to one block: merged into the block's newest run while
/// that run is under [`RUN_BYTES`], else written as the next run. A batch thus
/// reads and writes at most one bounded run per block, however many samples the
/// block already holds; readers take the union of the runs.
fn append_samples(
    connection: &Connection,
    table: &str,
    bucket: i64,
    groups: &Samples,
) -> rusqlite::Result<()> {
    use rusqlite::OptionalExtension;
    // `table` is one of the fixed rollup table names, never input. `length` of a
    // blob is read from the record header without loading the blob.
    let newest: Option<(i64, i64)> = connection
        .prepare_cached(&format!(
            "SELECT run, length(entries) FROM {table} WHERE bucket_ms = ?1 ORDER BY run DESC LIMIT 1"
        ))?
        .query_row([bucket], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let mut merged = groups.clone();
    let run = match newest {
        None => 0,
        Some((run, size)) if size >= RUN_BYTES => run + 1,
        Some((run, _)) => {
            let mut statement = connection.prepare_cached(&format!(
                "SELECT entries FROM {table} WHERE bucket_ms = ?1 AND run = ?2"
            ))?;
            let mut rows = statement.query((bucket, run))?;
            if let Some(row) = rows.next()? {
                decode_banded_groups(row.get_ref(0)?.as_blob()?, &mut merged);
            }
            run
        }
    };
    write_samples(connection, table, bucket, run, &merged)
}

/// Writes (or replaces) one run of a sample table.
fn write_samples(
    connection: &Connection,
    table: &str,
    bucket: i64,
    run: i64,
    groups: &Samples,
) -> rusqlite::Result<()> {
    let (mut entries, mut bands) = (Vec::new(), Vec::new());
    encode_banded(groups, &mut entries, &mut bands);
    connection
        .prepare_cached(&format!(
            "INSERT INTO {table} (bucket_ms, run, bands, entries) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (bucket_ms, run) DO UPDATE SET bands = excluded.bands, entries = excluded.entries"
        ))?
        .execute((bucket, run, &bands, &entries))
        .map(|_| ())
}

/// Whether the backfill step `name` is still to do: its mark is in
/// `usage_rollup_backfill` (steps run in Rust at open, see [`backfill`]).
pub(crate) fn step_pending(
    transaction: &rusqlite::Transaction<'_>,
    name: &str,
) -> rusqlite::Result<bool> {
    use rusqlite::OptionalExtension;
    transaction
        .query_row(
            "SELECT 1 FROM usage_rollup_backfill WHERE name = ?1",
            [name],
            |_| Ok(()),
        )
        .optional()
        .map(|found| found.is_some())
}

/// Removes the mark of the backfill step `name`, in the transaction that did it.
pub(crate) fn step_done(
    transaction: &rusqlite::Transaction<'_>,
    name: &str,
) -> rusqlite::Result<()> {
    transaction
        .execute("DELETE FROM usage_rollup_backfill WHERE name = ?1", [name])
        .map(|_| ())
}

/// The backfill step that rewrites the sample runs stored before `0132` in the
/// banded layout ([`encode_banded`]).
pub(crate) const SAMPLE_BANDS: &str = "sample_bands";

/// Rewrites every minute and quarter sample run stored before `0132` into
/// `usage_rollup_samples_*`, keeping block and run, and drops the old tables
/// (the hours' copy included: hours read their quarters now), in one transaction
/// with the removal of the step's mark. Runs at open, before anything is
/// ingested; does nothing without the mark.
pub(crate) fn convert_samples(connection: &mut Connection) -> rusqlite::Result<()> {
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if !step_pending(&transaction, SAMPLE_BANDS)? {
        return Ok(());
    }
    for suffix in ["m", "q"] {
        let old = format!("usage_rollup_latency_{suffix}");
        let new = format!("usage_rollup_samples_{suffix}");
        let exists: bool = transaction.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [&old],
            |row| row.get(0),
        )?;
        if !exists {
            continue;
        }
        let mut select = transaction.prepare(&format!(
            "SELECT bucket_ms, run, entries FROM {old} ORDER BY bucket_ms, run"
        ))?;
        let mut rows = select.query([])?;
        while let Some(row) = rows.next()? {
            let (bucket, run): (i64, i64) = (row.get(0)?, row.get(1)?);
            let mut groups = Samples::default();
            decode_legacy_samples(
                row.get_ref(2)?.as_blob()?,
                |identity, model, failed, l, t| {
                    let entry = groups.entry((identity, model, failed)).or_default();
                    entry.0.extend_from_slice(l);
                    entry.1.extend_from_slice(t);
                },
            );
            write_samples(&transaction, &new, bucket, run, &groups)?;
        }
    }
    transaction.execute_batch(
        "DROP TABLE IF EXISTS usage_rollup_latency_m; DROP TABLE IF EXISTS usage_rollup_latency_q; \
         DROP TABLE IF EXISTS usage_rollup_latency_h;",
    )?;
    step_done(&transaction, SAMPLE_BANDS)?;
    transaction.commit()
}

fn read_blob(
    connection: &Connection,
    table: &str,
    bucket: i64,
) -> rusqlite::Result<Option<Vec<u8>>> {
    use rusqlite::OptionalExtension;
    // `table` is one of the fixed rollup table names built above, never input.
    connection
        .prepare_cached(&format!("SELECT entries FROM {table} WHERE bucket_ms = ?1"))?
        .query_row([bucket], |row| row.get(0))
        .optional()
}

fn write_blob(
    connection: &Connection,
    table: &str,
    bucket: i64,
    blob: &[u8],
) -> rusqlite::Result<()> {
    connection
        .prepare_cached(&format!(
            "INSERT INTO {table} (bucket_ms, entries) VALUES (?1, ?2) \
             ON CONFLICT (bucket_ms) DO UPDATE SET entries = excluded.entries"
        ))?
        .execute((bucket, blob))
        .map(|_| ())
}

/// [`write_blob`] for the backfill at open, which runs on the sqlx writer.
async fn backfill_write_blob(
    connection: &mut SqliteConnection,
    table: &str,
    bucket: i64,
    blob: Vec<u8>,
) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} (bucket_ms, entries) VALUES (?, ?) ON CONFLICT (bucket_ms) DO UPDATE SET entries = excluded.entries"
    )))
    .bind(bucket)
    .bind(blob)
    .execute(&mut *connection)
    .await
    .map(|_| ())
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

pub(crate) fn put(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Reads one varint; `None` at a truncated end.
#[inline]
pub(crate) fn take(bytes: &[u8], at: &mut usize) -> Option<u64> {
    // Most values (ids, flags, small counts) fit one byte; latencies and token
    // counts take a few, sums of tokens more.
    let first = *bytes.get(*at)?;
    if first < 0x80 {
        *at += 1;
        return Some(u64::from(first));
    }
    if let Some(&[b0, b1, b2, b3, b4, b5, b6, b7]) = bytes.get(*at..at.wrapping_add(8)) {
        let word = u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]);
        // The last byte of a value is the first one below 0x80.
        let ends = !word & 0x8080_8080_8080_8080;
        if ends != 0 {
            let length = ends.trailing_zeros() / 8 + 1;
            // The value's bytes, their low seven bits packed together.
            let mut value = word & (u64::MAX >> (64 - 8 * length)) & 0x7f7f_7f7f_7f7f_7f7f;
            value = (value & 0x007f_007f_007f_007f) | ((value & 0x7f00_7f00_7f00_7f00) >> 1);
            value = (value & 0x0000_3fff_0000_3fff) | ((value & 0x3fff_0000_3fff_0000) >> 2);
            value = (value & 0x0000_0000_0fff_ffff) | ((value & 0x0fff_ffff_0000_0000) >> 4);
            *at += length as usize;
            return Some(value);
        }
    }
    let mut value: u64 = 0;
    let mut shift = 0;
    while let Some(byte) = bytes.get(*at) {
        *at += 1;
        if shift < 64 {
            value |= u64::from(byte & 0x7f) << shift;
        }
        if byte & 0x80 == 0 {
            return Some(value);
        }
        shift += 7;
    }
    None
}

/// Entry layout (each a zigzag varint): [identity,] model, billing, tier, band,
/// failed, calls, input, output, reasoning, cached, cache_read, cache_creation,
/// total, latency_sum, latency_samples, zero_token_calls, last_seen − bucket.
pub(crate) fn encode_entries(
    bucket: i64,
    with_identity: bool,
    entries: &Entries,
    out: &mut Vec<u8>,
) {
    for (key, sums) in entries {
        let m = &sums.metrics;
        if with_identity {
            put(out, zigzag(key.identity));
        }
        for value in [
            key.model,
            key.billing,
            key.tier,
            i64::from(key.band),
            i64::from(key.failed),
            m.calls,
            m.input,
            m.output,
            m.reasoning,
            m.cached,
            m.cache_read,
            m.cache_creation,
            m.total,
            m.latency_sum,
            m.latency_samples,
            m.zero_token_calls,
            sums.last_seen_ms - bucket,
        ] {
            put(out, zigzag(value));
        }
    }
}

/// Calls `each` for every entry of a blob written by [`encode_entries`].
pub(crate) fn decode_entries(
    bucket: i64,
    with_identity: bool,
    bytes: &[u8],
    each: impl FnMut(EntryKey, Sums),
) {
    decode_entries_where(bucket, with_identity, bytes, |_| true, each);
}

/// Calls `each` for every entry of a blob written by [`encode_entries`] whose key
/// `keep` accepts. The sums of a refused entry are stepped over without being
/// decoded: a scope that filters by credential, client key or model refuses most
/// entries, and their sums are two thirds of the varints.
pub(crate) fn decode_entries_where(
    bucket: i64,
    with_identity: bool,
    bytes: &[u8],
    mut keep: impl FnMut(&EntryKey) -> bool,
    mut each: impl FnMut(EntryKey, Sums),
) {
    let mut at = 0;
    let key_fields = if with_identity { 6 } else { 5 };
    let mut head = [0_i64; 6];
    let mut v = [0_i64; SUM_FIELDS];
    'entries: while at < bytes.len() {
        for slot in head.iter_mut().take(key_fields) {
            match take(bytes, &mut at) {
                Some(value) => *slot = unzigzag(value),
                None => break 'entries,
            }
        }
        let k = if with_identity {
            &head[1..]
        } else {
            &head[..5]
        };
        let key = EntryKey {
            identity: if with_identity { head[0] } else { 0 },
            model: k[0],
            billing: k[1],
            tier: k[2],
            band: u8::try_from(k[3]).unwrap_or(0),
            failed: k[4] != 0,
        };
        if !keep(&key) {
            if !skip(bytes, &mut at, SUM_FIELDS) {
                break;
            }
            continue;
        }
        for slot in &mut v {
            match take(bytes, &mut at) {
                Some(value) => *slot = unzigzag(value),
                None => break 'entries,
            }
        }
        let calls = v[0];
        each(
            key,
            Sums {
                metrics: Metrics {
                    calls,
                    failures: if key.failed { calls } else { 0 },
                    input: v[1],
                    output: v[2],
                    reasoning: v[3],
                    cached: v[4],
                    cache_read: v[5],
                    cache_creation: v[6],
                    total: v[7],
                    latency_sum: v[8],
                    latency_samples: v[9],
                    zero_token_calls: v[10],
                },
                last_seen_ms: bucket + v[11],
            },
        );
    }
}

/// Calls `each` with the key of every entry of a blob written by
/// [`encode_entries`], stepping over the sums.
pub(crate) fn decode_keys(with_identity: bool, bytes: &[u8], mut each: impl FnMut(EntryKey)) {
    decode_entries_where(
        0,
        with_identity,
        bytes,
        |key| {
            each(*key);
            false
        },
        |_, _| {},
    );
}

/// The varints of an entry's sums: calls, the seven token counts, total, latency
/// sum and samples, zero-token calls, and `last_seen − bucket`.
const SUM_FIELDS: usize = 12;

/// Steps over `count` varints; false when the bytes end first. Eight bytes are
/// looked at a time: a varint ends at each byte below 0x80.
#[inline]
pub(crate) fn skip(bytes: &[u8], at: &mut usize, count: usize) -> bool {
    let mut left = count as u32;
    while left > 0 {
        if let Some(&[b0, b1, b2, b3, b4, b5, b6, b7]) = bytes.get(*at..at.wrapping_add(8)) {
            let word = u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]);
            let mut ends = !word & 0x8080_8080_8080_8080;
            let found = ends.count_ones();
            if found < left {
                left -= found;
                *at += 8;
                continue;
            }
            for _ in 1..left {
                ends &= ends - 1;
            }
            *at += (ends.trailing_zeros() / 8 + 1) as usize;
            return true;
        }
        let Some(&byte) = bytes.get(*at) else {
            return false;
        };
        *at += 1;
        if byte < 0x80 {
            left -= 1;
        }
    }
    true
}

/// Calls `each(identity, model, failed, latencies, ttfts)` for every group of a
/// sample blob in the layout stored before `0132`: per (identity, model, failed)
/// group its ids, the latency and TTFT counts, then the values. Read only by
/// [`convert_samples`].
fn decode_legacy_samples(bytes: &[u8], mut each: impl FnMut(i64, i64, bool, &[u32], &[u32])) {
    let mut at = 0;
    let mut latencies = Vec::new();
    let mut ttfts = Vec::new();
    while at < bytes.len() {
        let head = (|| {
            Some((
                unzigzag(take(bytes, &mut at)?),
                unzigzag(take(bytes, &mut at)?),
                take(bytes, &mut at)? != 0,
                take(bytes, &mut at)?,
                take(bytes, &mut at)?,
            ))
        })();
        let Some((identity, model, failed, latency_count, ttft_count)) = head else {
            return;
        };
        latencies.clear();
        ttfts.clear();
        // A group cut short (never written so) adds nothing.
        if !(append_values(bytes, &mut at, latency_count, &mut latencies)
            && append_values(bytes, &mut at, ttft_count, &mut ttfts))
        {
            return;
        }
        each(identity, model, failed, &latencies, &ttfts);
    }
}

/// Writes a run of samples (`0132`) as two blobs.
///
/// `entries`: the groups (their count and byte length, then identity, model and
/// failed of each, the groups with most values first), then per series (latency, then TTFT) its
/// sections, one per value band ([`band`]) in ascending order: band, value count,
/// byte lengths of the group indexes and of the values, the group index of each
/// value, and each value less its band's floor.
///
/// `bands`: per series, its section count, then band and value count of each
/// section. Readers that need no group sum these few bytes instead of
/// decoding values, then decode only the sections that hold a wanted rank.
pub(crate) fn encode_banded(groups: &Samples, entries: &mut Vec<u8>, bands: &mut Vec<u8>) {
    let mut order: Vec<_> = groups.iter().collect();
    order.sort_by(|a, b| {
        (b.1.0.len() + b.1.1.len())
            .cmp(&(a.1.0.len() + a.1.1.len()))
            .then(a.0.cmp(b.0))
    });
    let mut table = Vec::new();
    for ((identity, model, failed), _) in &order {
        put(&mut table, zigzag(*identity));
        put(&mut table, zigzag(*model));
        put(&mut table, u64::from(*failed));
    }
    put(entries, order.len() as u64);
    put(entries, table.len() as u64);
    entries.extend_from_slice(&table);
    let (mut indexes, mut values) = (Vec::new(), Vec::new());
    for series in 0..2 {
        // (band, group index, value) of every positive value, in section order.
        let mut items: Vec<(u8, u32, u32)> = Vec::new();
        for (index, (_, (latencies, ttfts))) in order.iter().enumerate() {
            let list = if series == 0 { latencies } else { ttfts };
            items.extend(
                list.iter()
                    .filter(|value| **value > 0)
                    .map(|value| (band(*value), index as u32, *value)),
            );
        }
        items.sort_unstable();
        let sections: Vec<&[(u8, u32, u32)]> = items.chunk_by(|a, b| a.0 == b.0).collect();
        put(entries, sections.len() as u64);
        put(bands, sections.len() as u64);
        for section in sections {
            let section_band = section[0].0;
            let floor = band_floor(section_band);
            indexes.clear();
            values.clear();
            for (_, index, value) in section {
                put(&mut indexes, u64::from(*index));
                put(&mut values, u64::from(value - floor));
            }
            for value in [
                u64::from(section_band),
                section.len() as u64,
                indexes.len() as u64,
                values.len() as u64,
            ] {
                put(entries, value);
            }
            entries.extend_from_slice(&indexes);
            entries.extend_from_slice(&values);
            put(bands, u64::from(section_band));
            put(bands, section.len() as u64);
        }
    }
}

/// Calls `each(series, band, count)` for every section of a `bands` blob
/// ([`encode_banded`]); series 0 is latency, 1 TTFT.
pub(crate) fn decode_band_counts(bytes: &[u8], mut each: impl FnMut(usize, u8, u64)) {
    let mut at = 0;
    for series in 0..2 {
        let Some(sections) = take(bytes, &mut at) else {
            return;
        };
        for _ in 0..sections {
            let (Some(band), Some(count)) = (take(bytes, &mut at), take(bytes, &mut at)) else {
                return;
            };
            each(series, band as u8, count);
        }
    }
}

/// Reads an `entries` blob ([`encode_banded`]): for every section `want(series,
/// band)` accepts, calls `each(series, band, values)` with the section's values of
/// the groups `keep(identity, model, failed)` accepts (every group when `keep`
/// is `None`). Sections not wanted are skipped without being decoded.
pub(crate) fn decode_banded(
    bytes: &[u8],
    keep: Option<&mut dyn FnMut(i64, i64, bool) -> bool>,
    mut want: impl FnMut(usize, u8) -> bool,
    mut each: impl FnMut(usize, u8, &[u32]),
) {
    let (mut values, mut indexes) = (Vec::new(), Vec::new());
    walk_banded(bytes, keep, |section, accepted| {
        if !want(section.series, section.band) {
            return true;
        }
        if !section.read_values(bytes, &mut values) {
            return false;
        }
        if let Some(accepted) = accepted {
            if !section.read_indexes(bytes, &mut indexes) {
                return false;
            }
            let mut kept = 0;
            for position in 0..values.len() {
                let index = indexes.get(position).map_or(usize::MAX, |i| *i as usize);
                if accepted.get(index).copied().unwrap_or(false) {
                    values[kept] = values[position];
                    kept += 1;
                }
            }
            values.truncate(kept);
        }
        each(section.series, section.band, &values);
        true
    });
}

/// Calls `each(series, band, count)` for every section of an `entries` blob
/// ([`encode_banded`]) with the number of its values whose group `keep`
/// accepts; only the group indexes are decoded.
pub(crate) fn count_banded(
    bytes: &[u8],
    keep: &mut dyn FnMut(i64, i64, bool) -> bool,
    mut each: impl FnMut(usize, u8, u64),
) {
    let mut indexes = Vec::new();
    walk_banded(bytes, Some(keep), |section, accepted| {
        let count = match accepted {
            None => section.count,
            Some(accepted) => {
                if !section.read_indexes(bytes, &mut indexes) {
                    return false;
                }
                indexes
                    .iter()
                    .filter(|index| accepted.get(**index as usize).copied().unwrap_or(false))
                    .count() as u64
            }
        };
        if count > 0 {
            each(section.series, section.band, count);
        }
        true
    });
}

/// Every group of an `entries` blob with its values ([`encode_banded`]), to merge
/// a batch into a run.
fn decode_banded_groups(bytes: &[u8], into: &mut Samples) {
    let mut keys = Vec::new();
    let mut keep = |identity: i64, model: i64, failed: bool| {
        keys.push((identity, model, failed));
        true
    };
    let mut sections: Vec<(usize, Vec<u32>, Vec<u32>)> = Vec::new();
    walk_banded(bytes, Some(&mut keep), |section, _| {
        let (mut indexes, mut values) = (Vec::new(), Vec::new());
        let complete =
            section.read_indexes(bytes, &mut indexes) && section.read_values(bytes, &mut values);
        if complete {
            sections.push((section.series, indexes, values));
        }
        complete
    });
    for (series, indexes, values) in sections {
        for (index, value) in indexes.iter().zip(values) {
            let Some(key) = keys.get(*index as usize) else {
                continue;
            };
            let entry = into.entry(*key).or_default();
            let list = if series == 0 {
                &mut entry.0
            } else {
                &mut entry.1
            };
            list.push(value);
        }
    }
}

/// One section of an `entries` blob: its series, band, value count and the byte
/// ranges of its group indexes and of its values.
struct Section {
    series: usize,
    band: u8,
    count: u64,
    indexes: (usize, usize),
    values: (usize, usize),
}

impl Section {
    /// The section's values (band floor added) into `into`, replacing what it
    /// held; false when the blob ends first.
    fn read_values(&self, bytes: &[u8], into: &mut Vec<u32>) -> bool {
        into.clear();
        let mut at = self.values.0;
        if !append_values(&bytes[..self.values.1], &mut at, self.count, into) {
            return false;
        }
        let floor = band_floor(self.band);
        for value in into.iter_mut() {
            *value = value.saturating_add(floor);
        }
        true
    }

    /// The section's group indexes into `into`, replacing what it held; false
    /// when the blob ends first.
    fn read_indexes(&self, bytes: &[u8], into: &mut Vec<u32>) -> bool {
        into.clear();
        let mut at = self.indexes.0;
        append_values(&bytes[..self.indexes.1], &mut at, self.count, into)
    }
}

/// Walks the sections of an `entries` blob, calling `visit(section, accepted)`
/// for each until it returns false. `accepted` holds `keep`'s verdict per group
/// index, or is `None` when every group is taken; when `keep` accepts no group,
/// no section is visited. A blob cut short ends the walk.
fn walk_banded(
    bytes: &[u8],
    keep: Option<&mut dyn FnMut(i64, i64, bool) -> bool>,
    mut visit: impl FnMut(&Section, Option<&[bool]>) -> bool,
) {
    let mut at = 0;
    let (Some(group_count), Some(group_bytes)) = (take(bytes, &mut at), take(bytes, &mut at))
    else {
        return;
    };
    let mut accepted: Vec<bool> = Vec::new();
    match keep {
        // No group is asked about: the table is skipped whole.
        None => at = at.saturating_add(usize::try_from(group_bytes).unwrap_or(usize::MAX)),
        Some(keep) => {
            for _ in 0..group_count {
                let (Some(identity), Some(model), Some(failed)) = (
                    take(bytes, &mut at),
                    take(bytes, &mut at),
                    take(bytes, &mut at),
                ) else {
                    return;
                };
                accepted.push(keep(unzigzag(identity), unzigzag(model), failed != 0));
            }
            if !accepted.iter().any(|ok| *ok) {
                return;
            }
        }
    }
    // `None` when every group is taken (or none was asked about).
    let accepted = accepted.iter().any(|ok| !ok).then_some(&accepted[..]);
    for series in 0..2 {
        let Some(sections) = take(bytes, &mut at) else {
            return;
        };
        for _ in 0..sections {
            let head = (|| {
                Some((
                    take(bytes, &mut at)?,
                    take(bytes, &mut at)?,
                    usize::try_from(take(bytes, &mut at)?).ok()?,
                    usize::try_from(take(bytes, &mut at)?).ok()?,
                ))
            })();
            let Some((band, count, index_bytes, value_bytes)) = head else {
                return;
            };
            let index_start = at;
            let value_start = index_start.saturating_add(index_bytes);
            let end = value_start.saturating_add(value_bytes);
            if end > bytes.len() {
                return;
            }
            at = end;
            let section = Section {
                series,
                band: band as u8,
                count,
                indexes: (index_start, value_start),
                values: (value_start, end),
            };
            if !visit(&section, accepted) {
                return;
            }
        }
    }
}

/// Appends `count` varints read at `at` to `into`; false when the bytes end first.
/// Values of up to three bytes (every latency under 35 minutes) are decoded by
/// matching the slice's head, without a bounds check per byte.
fn append_values(bytes: &[u8], at: &mut usize, count: u64, into: &mut Vec<u32>) -> bool {
    into.reserve(usize::try_from(count.min(1 << 20)).unwrap_or(0));
    let Some(mut rest) = bytes.get(*at..) else {
        return count == 0;
    };
    let mut left = count;
    while left > 0 {
        let value = match rest {
            [first, tail @ ..] if *first < 0x80 => {
                rest = tail;
                u32::from(*first)
            }
            [first, second, tail @ ..] if *second < 0x80 => {
                rest = tail;
                u32::from(first & 0x7f) | u32::from(*second) << 7
            }
            [first, second, third, tail @ ..] if *third < 0x80 => {
                rest = tail;
                u32::from(first & 0x7f) | u32::from(second & 0x7f) << 7 | u32::from(*third) << 14
            }
            _ => {
                let mut offset = 0;
                let Some(value) = take(rest, &mut offset) else {
                    *at = bytes.len();
                    return false;
                };
                rest = &rest[offset..];
                u32::try_from(value).unwrap_or(u32::MAX)
            }
        };
        into.push(value);
        left -= 1;
    }
    *at = bytes.len() - rest.len();
    true
}

/// The price band of a heat entry: analytics model, billing model, service tier
/// and context band.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct HeatBand {
    pub model: i64,
    pub billing: i64,
    pub tier: i64,
    pub band: u8,
}

/// The dictionaries at the head of a heat blob: its identities and its bands.
#[derive(Debug, Default)]
pub(crate) struct HeatDictionary {
    pub identities: Vec<i64>,
    pub bands: Vec<HeatBand>,
    /// Bits of an entry's code that hold its identity's index.
    identity_bits: u32,
}

/// Bits needed for the indexes `0..count`.
fn index_bits(count: usize) -> u32 {
    usize::BITS - count.saturating_sub(1).leading_zeros()
}

/// Heat blob layout (`usage_rollup_heat_h`, `0130`): the identities (a count,
/// then each id), the price bands (a count, then model, billing model, tier and
/// context band of each), each listed once in the order its first entry comes,
/// then the entries: a code, `(band index × 2 + failed) << b | identity index`
/// where `b` is the bits the identity indexes need, followed by the sums (see
/// [`put_sums`]). The counts, ids, context bands and codes are varints (the ids
/// zigzag). Entries keep the order they are given in.
pub(crate) fn encode_heat<'a>(
    entries: impl Iterator<Item = (&'a EntryKey, HeatSums)> + Clone,
    out: &mut Vec<u8>,
) {
    let mut identities: FastMap<i64, usize> = FastMap::default();
    let mut identity_list: Vec<i64> = Vec::new();
    let mut bands: FastMap<HeatBand, usize> = FastMap::default();
    let mut band_list: Vec<HeatBand> = Vec::new();
    for (key, _) in entries.clone() {
        identities.entry(key.identity).or_insert_with(|| {
            identity_list.push(key.identity);
            identity_list.len() - 1
        });
        bands.entry(heat_band(key)).or_insert_with(|| {
            band_list.push(heat_band(key));
            band_list.len() - 1
        });
    }
    put(out, identity_list.len() as u64);
    for identity in &identity_list {
        put(out, zigzag(*identity));
    }
    put(out, band_list.len() as u64);
    for band in &band_list {
        put(out, zigzag(band.model));
        put(out, zigzag(band.billing));
        put(out, zigzag(band.tier));
        put(out, u64::from(band.band));
    }
    let bits = index_bits(identity_list.len());
    for (key, sums) in entries {
        let identity = identities[&key.identity] as u64;
        let band = bands[&heat_band(key)] as u64;
        put(out, (band << 1 | u64::from(key.failed)) << bits | identity);
        put_sums(out, &sums);
    }
}

/// Byte lengths of the sums of a heat entry, by their 3-bit length code.
const SUM_LENGTHS: [usize; 8] = [0, 1, 2, 3, 4, 5, 6, 8];

/// The sums of a heat entry: calls, input, output, cached, cache_read,
/// cache_creation and total, each zigzagged and written as its few low bytes
/// (little-endian, none for 0), after three bytes holding the seven 3-bit
/// length codes ([`SUM_LENGTHS`]), the first sum's in the lowest bits. Unlike
/// varints, they are read without a branch per value.
fn put_sums(out: &mut Vec<u8>, sums: &HeatSums) {
    let values = [
        sums.calls,
        sums.input,
        sums.output,
        sums.cached,
        sums.cache_read,
        sums.cache_creation,
        sums.total,
    ]
    .map(zigzag);
    let mut codes = 0_u32;
    for (at, value) in values.iter().enumerate() {
        let bytes = (u64::BITS - value.leading_zeros()).div_ceil(8);
        let code = if bytes > 6 { 7 } else { bytes };
        codes |= code << (3 * at);
    }
    out.extend_from_slice(&codes.to_le_bytes()[..3]);
    for (at, value) in values.iter().enumerate() {
        let length = SUM_LENGTHS[(codes >> (3 * at) & 7) as usize];
        out.extend_from_slice(&value.to_le_bytes()[..length]);
    }
}

/// The sums [`take_sums`] read (in [`put_sums`]' order), as an entry's heat sums: a
/// failed entry's calls are all failures.
#[inline]
fn heat_sums(values: [i64; 7], failed: bool) -> HeatSums {
    let [
        calls,
        input,
        output,
        cached,
        cache_read,
        cache_creation,
        total,
    ] = values;
    HeatSums {
        calls,
        failures: if failed { calls } else { 0 },
        input,
        output,
        cached,
        cache_read,
        cache_creation,
        total,
    }
}

/// Reads the sums [`put_sums`] wrote at `at`; `None` when the bytes end first.
#[inline]
fn take_sums(bytes: &[u8], at: &mut usize) -> Option<[i64; 7]> {
    let rest = bytes.get(*at..)?;
    let (used, values) = match rest.first_chunk::<SUMS_WINDOW>() {
        Some(window) => read_sums(window),
        None => {
            // Near the end of the blob: read from a copy with room for whole words.
            if rest.len() < 3 {
                return None;
            }
            let mut padded = [0_u8; SUMS_WINDOW];
            padded[..rest.len()].copy_from_slice(rest);
            let (used, values) = read_sums(&padded);
            if used > rest.len() {
                return None;
            }
            (used, values)
        }
    };
    *at += used;
    Some(values)
}

/// Bytes [`read_sums`] reads from: the three bytes of length codes and, for each
/// of the seven sums, a whole word at an offset below 64.
const SUMS_WINDOW: usize = 64 + 8;

/// The bits of a word a length code keeps.
const SUM_MASKS: [u64; 8] = [
    0,
    0xff,
    0xffff,
    0xff_ffff,
    0xffff_ffff,
    0xff_ffff_ffff,
    0xffff_ffff_ffff,
    u64::MAX,
];

/// The sums [`put_sums`] wrote at the start of `bytes`; returns the bytes they
/// take and the values.
#[inline]
fn read_sums(bytes: &[u8; SUMS_WINDOW]) -> (usize, [i64; 7]) {
    let word = |at: usize| {
        // `at` is below 64 (the sums take at most 3 + 6 × 8 bytes before the
        // last), so the masked offset is `at` itself and always in the window.
        let at = at & 63;
        let mut word = [0_u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    };
    let codes = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], 0]);
    let mut at = 3;
    let mut values = [0_i64; 7];
    for (index, value) in values.iter_mut().enumerate() {
        let code = (codes >> (3 * index) & 7) as usize;
        *value = unzigzag(word(at) & SUM_MASKS[code]);
        at += SUM_LENGTHS[code];
    }
    (at, values)
}

fn heat_band(key: &EntryKey) -> HeatBand {
    HeatBand {
        model: key.model,
        billing: key.billing,
        tier: key.tier,
        band: key.band,
    }
}

/// Reads the dictionaries of a heat blob into `dictionary` and returns where its
/// entries start; `None` when the blob ends first.
pub(crate) fn heat_dictionary(bytes: &[u8], dictionary: &mut HeatDictionary) -> Option<usize> {
    let mut at = 0;
    dictionary.identities.clear();
    dictionary.bands.clear();
    let identities = take(bytes, &mut at)?;
    for _ in 0..identities {
        dictionary.identities.push(unzigzag(take(bytes, &mut at)?));
    }
    let bands = take(bytes, &mut at)?;
    for _ in 0..bands {
        dictionary.bands.push(HeatBand {
            model: unzigzag(take(bytes, &mut at)?),
            billing: unzigzag(take(bytes, &mut at)?),
            tier: unzigzag(take(bytes, &mut at)?),
            band: u8::try_from(take(bytes, &mut at)?).unwrap_or(0),
        });
    }
    dictionary.identity_bits = index_bits(dictionary.identities.len());
    Some(at)
}

/// Calls `each(identity index, band index, failed, sums)` for every entry of a
/// heat blob whose dictionaries [`heat_dictionary`] read into `dictionary` and
/// whose entries start at `at`. An entry naming an index its dictionaries lack,
/// or cut short, ends the blob (never written so).
#[inline]
pub(crate) fn heat_entries(
    bytes: &[u8],
    mut at: usize,
    dictionary: &HeatDictionary,
    mut each: impl FnMut(usize, usize, bool, &HeatSums),
) {
    // The identities are fewer than the blob's bytes, so `bits` is well below 64.
    let bits = dictionary.identity_bits;
    let mask = (1_u64 << bits) - 1;
    let (identities, bands) = (dictionary.identities.len(), dictionary.bands.len());
    while at < bytes.len() {
        let Some(code) = take(bytes, &mut at) else {
            return;
        };
        let identity = (code & mask) as usize;
        let failed = (code >> bits) & 1 == 1;
        let band = usize::try_from(code >> bits >> 1).unwrap_or(usize::MAX);
        let Some(values) = take_sums(bytes, &mut at) else {
            return;
        };
        if identity >= identities || band >= bands {
            return;
        }
        each(identity, band, failed, &heat_sums(values, failed));
    }
}

/// Calls `each` for every entry of a heat blob, in stored order.
pub(crate) fn decode_heat(bytes: &[u8], mut each: impl FnMut(EntryKey, HeatSums)) {
    let mut dictionary = HeatDictionary::default();
    let Some(at) = heat_dictionary(bytes, &mut dictionary) else {
        return;
    };
    heat_entries(bytes, at, &dictionary, |identity, band, failed, sums| {
        let band = dictionary.bands[band];
        each(
            EntryKey {
                identity: dictionary.identities[identity],
                model: band.model,
                billing: band.billing,
                tier: band.tier,
                band: band.band,
                failed,
            },
            *sums,
        );
    });
}

/// Pair layout: (identity, model) as zigzag varints, in ascending order.
pub(crate) fn encode_pairs(pairs: &std::collections::BTreeSet<(i64, i64)>, out: &mut Vec<u8>) {
    for (identity, model) in pairs {
        put(out, zigzag(*identity));
        put(out, zigzag(*model));
    }
}

/// Calls `each(identity, model)` for every pair of a blob written by [`encode_pairs`].
pub(crate) fn decode_pairs(bytes: &[u8], mut each: impl FnMut(i64, i64)) {
    let mut at = 0;
    while at < bytes.len() {
        let (Some(identity), Some(model)) = (take(bytes, &mut at), take(bytes, &mut at)) else {
            return;
        };
        each(unzigzag(identity), unzigzag(model));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_with_negative_values() {
        let mut entries = Entries::default();
        let key = EntryKey {
            identity: 7,
            model: 3,
            billing: 4,
            tier: 0,
            band: 3,
            failed: true,
        };
        let mut sums = Sums::default();
        sums.add(
            &Metrics {
                calls: 1,
                failures: 1,
                input: -5,
                total: 1_000_000,
                latency_sum: 70,
                latency_samples: 1,
                ..Metrics::default()
            },
            1_000_123,
        );
        entries.insert(key, sums);
        let mut blob = Vec::new();
        encode_entries(1_000_000, true, &entries, &mut blob);
        let mut seen = Vec::new();
        decode_entries(1_000_000, true, &blob, |key, sums| {
            seen.push((key, sums.metrics, sums.last_seen_ms))
        });
        assert_eq!(seen, vec![(key, sums.metrics, 1_000_123)]);
    }

    fn heat_entries_of(seed: i64, count: i64) -> Entries {
        let mut entries = Entries::default();
        for index in 0..count {
            let failed = index % 3 == 0;
            let calls = seed * 7 + index;
            let mut sums = Sums::default();
            sums.add(
                &Metrics {
                    calls,
                    failures: if failed { calls } else { 0 },
                    input: if index == 5 { -5 } else { index * 1_000 },
                    output: index * 300 + seed,
                    reasoning: 11,
                    cached: index % 4,
                    cache_read: index * 50,
                    cache_creation: if index == 9 { i64::MAX } else { index },
                    total: index * 1_350 + seed,
                    latency_sum: 900,
                    latency_samples: 2,
                    zero_token_calls: 1,
                },
                1_000_000 + index,
            );
            let key = EntryKey {
                identity: 100 + index % 37,
                model: index % 5 - 2,
                billing: index % 7,
                tier: index % 2,
                band: (index % 4) as u8,
                failed,
            };
            entries.insert(key, sums);
        }
        entries
    }

    #[test]
    fn refused_entries_are_stepped_over_and_the_rest_decode_as_in_full() {
        // Large sums (up to ten-byte varints) and negative ones, with and without
        // the identity field.
        for with_identity in [true, false] {
            let mut entries = heat_entries_of(3, 60);
            if !with_identity {
                entries = entries
                    .into_iter()
                    .map(|(key, sums)| (EntryKey { identity: 0, ..key }, sums))
                    .collect();
            }
            let mut blob = Vec::new();
            encode_entries(1_000_000, with_identity, &entries, &mut blob);
            let mut all = Vec::new();
            decode_entries(1_000_000, with_identity, &blob, |key, sums| {
                all.push((key, sums.metrics, sums.last_seen_ms));
            });
            assert_eq!(all.len(), entries.len());
            let wanted = |key: &EntryKey| key.model == 1 || key.billing == 3;
            let mut kept = Vec::new();
            decode_entries_where(1_000_000, with_identity, &blob, wanted, |key, sums| {
                kept.push((key, sums.metrics, sums.last_seen_ms));
            });
            let expected: Vec<_> = all
                .iter()
                .filter(|(key, ..)| wanted(key))
                .cloned()
                .collect();
            assert!(!expected.is_empty() && expected.len() < all.len());
            assert_eq!(kept, expected);
            let mut keys = Vec::new();
            decode_keys(with_identity, &blob, |key| keys.push(key));
            assert_eq!(keys, all.iter().map(|(key, ..)| *key).collect::<Vec<_>>());
            // A blob cut anywhere yields whole entries only, the same either way.
            for cut in 0..blob.len() {
                let mut whole = Vec::new();
                decode_entries(1_000_000, with_identity, &blob[..cut], |key, _| {
                    whole.push(key)
                });
                let mut stepped = Vec::new();
                decode_entries_where(1_000_000, with_identity, &blob[..cut], |_| false, |_, _| {});
                decode_keys(with_identity, &blob[..cut], |key| stepped.push(key));
                assert!(stepped.len() >= whole.len() && stepped.len() <= whole.len() + 1);
                assert_eq!(stepped[..whole.len()], whole[..]);
            }
        }
    }

    #[test]
    fn skip_steps_over_varints_of_every_length() {
        let values: Vec<u64> = (0..200_u64)
            .map(|index| match index % 5 {
                0 => index,
                1 => index << 20,
                2 => u64::MAX - index,
                3 => 1 << (index % 64),
                _ => 127 + index,
            })
            .collect();
        let mut bytes = Vec::new();
        for value in &values {
            put(&mut bytes, *value);
        }
        for (count, value) in values.iter().enumerate() {
            let mut at = 0;
            assert!(skip(&bytes, &mut at, count));
            let mut expected = 0;
            for _ in 0..count {
                take(&bytes, &mut expected).expect("a varint");
            }
            assert_eq!(at, expected, "after {count} varints");
            assert_eq!(take(&bytes, &mut at), Some(*value));
        }
        let mut at = 0;
        assert!(!skip(&bytes, &mut at, values.len() + 1));
    }

    fn heat_of(entries: &Entries) -> Vec<(EntryKey, HeatSums)> {
        entries
            .iter()
            .map(|(key, sums)| (*key, HeatSums::of(&sums.metrics)))
            .collect()
    }

    #[test]
    fn heat_blobs_keep_their_entries_and_their_order() {
        for count in [0, 1, 2, 37, 300] {
            let entries = heat_entries_of(3, count);
            let mut blob = Vec::new();
            encode_heat(
                entries
                    .iter()
                    .map(|(key, sums)| (key, HeatSums::of(&sums.metrics))),
                &mut blob,
            );
            let mut seen = Vec::new();
            decode_heat(&blob, |key, sums| seen.push((key, sums)));
            assert_eq!(seen, heat_of(&entries), "{count} entries");
            // The metrics the heatmap reads come back whole.
            for ((key, sums), (_, stored)) in seen.iter().zip(&entries) {
                assert_eq!(sums.failures, if key.failed { sums.calls } else { 0 });
                assert_eq!(HeatSums::of(&sums.metrics()), HeatSums::of(&stored.metrics));
            }
        }
        // A cut blob yields a prefix of its entries, never a wrong one.
        let entries = heat_entries_of(1, 40);
        let mut blob = Vec::new();
        encode_heat(
            entries
                .iter()
                .map(|(key, sums)| (key, HeatSums::of(&sums.metrics))),
            &mut blob,
        );
        let whole = heat_of(&entries);
        for cut in 0..blob.len() {
            let mut seen = Vec::new();
            decode_heat(&blob[..cut], |key, sums| seen.push((key, sums)));
            assert_eq!(seen[..], whole[..seen.len()], "cut at {cut}");
        }
    }

    #[test]
    fn heat_sums_of_every_length_round_trip() {
        let mut values: Vec<i64> = vec![0, i64::MIN, i64::MAX, -1];
        for bit in 0..63 {
            values.extend([1 << bit, (1 << bit) - 1, -(1 << bit), -(1 << bit) - 1]);
        }
        let mut blob = Vec::new();
        let mut written = Vec::new();
        for chunk in values.chunks(7).chain(values[3..].chunks(7)) {
            let mut sums = [0_i64; 7];
            sums[..chunk.len()].copy_from_slice(chunk);
            put_sums(&mut blob, &heat_sums(sums, false));
            written.push((sums, blob.len()));
        }
        let mut at = 0;
        for (sums, end) in &written {
            assert_eq!(take_sums(&blob, &mut at), Some(*sums));
            assert_eq!(at, *end);
        }
        assert_eq!(take_sums(&blob, &mut at), None);
        // Cut anywhere inside the last entry, nothing is read.
        let (_, before_last) = written[written.len() - 2];
        for cut in before_last..blob.len() {
            let mut at = before_last;
            assert_eq!(take_sums(&blob[..cut], &mut at), None, "cut at {cut}");
        }
    }

    fn rollup_tables() -> Connection {
        let connection = Connection::open_in_memory().expect("open");
        for table in [HEAT_TABLE, "usage_rollup_ident_h"] {
            connection
                .execute_batch(&format!(
                    "CREATE TABLE {table} (bucket_ms INTEGER PRIMARY KEY, entries BLOB NOT NULL)"
                ))
                .expect("create");
        }
        connection
    }

    #[test]
    fn heat_merges_list_entries_as_generic_merges_do() {
        let connection = rollup_tables();
        let bucket = 3_600_000;
        for (seed, count) in [(1, 20), (2, 45), (3, 7), (4, 120), (5, 3)] {
            let batch = heat_entries_of(seed, count);
            merge_heat(&connection, bucket, &batch).expect("merge heat");
            merge_entries(&connection, "usage_rollup_ident_h", bucket, true, &batch)
                .expect("merge entries");
            let heat = read_blob(&connection, HEAT_TABLE, bucket)
                .expect("read")
                .expect("heat blob");
            let generic = read_blob(&connection, "usage_rollup_ident_h", bucket)
                .expect("read")
                .expect("generic blob");
            let mut from_heat = Vec::new();
            decode_heat(&heat, |key, sums| from_heat.push((key, sums)));
            let mut from_generic = Vec::new();
            decode_entries(bucket, true, &generic, |key, sums| {
                from_generic.push((key, HeatSums::of(&sums.metrics)));
            });
            assert_eq!(from_heat, from_generic, "after batch {seed}");
            assert!(
                heat.len() < generic.len(),
                "{} vs {}",
                heat.len(),
                generic.len()
            );
        }
    }

    /// A group's key and its sorted latency and TTFT values.
    type Sorted = ((i64, i64, bool), Vec<u32>, Vec<u32>);

    /// The values of `groups`, sorted per group and series, zeros left out (as
    /// every layout keeps them).
    fn sorted(groups: &Samples) -> Vec<Sorted> {
        let mut out: Vec<_> = groups
            .iter()
            .map(|(key, (latencies, ttfts))| {
                let clean = |list: &Vec<u32>| {
                    let mut list: Vec<u32> = list.iter().copied().filter(|v| *v > 0).collect();
                    list.sort_unstable();
                    list
                };
                (*key, clean(latencies), clean(ttfts))
            })
            .filter(|(_, latencies, ttfts)| !latencies.is_empty() || !ttfts.is_empty())
            .collect();
        out.sort();
        out
    }

    fn sample_groups() -> Samples {
        let every_length: Vec<u32> = vec![
            1,
            15,
            16,
            127,
            128,
            1_000,
            16_383,
            16_384,
            (1 << 21) - 1,
            1 << 21,
            (1 << 28) - 1,
            1 << 28,
            u32::MAX,
            5,
        ];
        let mut groups = Samples::default();
        groups.insert((5, 9, false), (every_length.clone(), vec![42, 0, 900]));
        groups.insert((6, 9, true), (vec![2_000_000, 7, 1_001], vec![129, 16_384]));
        groups.insert((-3, 1, false), (vec![], vec![5]));
        groups.insert(
            (7, 3, false),
            ((1..300).map(|v| v * 37).collect(), every_length),
        );
        groups
    }

    #[test]
    fn banded_runs_round_trip_and_count_their_bands() {
        let groups = sample_groups();
        let (mut entries, mut bands) = (Vec::new(), Vec::new());
        encode_banded(&groups, &mut entries, &mut bands);
        let mut back = Samples::default();
        decode_banded_groups(&entries, &mut back);
        assert_eq!(sorted(&back), sorted(&groups));
        // The counts blob counts what the entries blob holds, band by band.
        let mut counted: Vec<(usize, u8, u64)> = Vec::new();
        decode_band_counts(&bands, |series, band, count| {
            counted.push((series, band, count))
        });
        let mut decoded: Vec<(usize, u8, u64)> = Vec::new();
        decode_banded(
            &entries,
            None,
            |_, _| true,
            |series, band, values| {
                assert!(values.iter().all(|value| super::band(*value) == band));
                decoded.push((series, band, values.len() as u64));
            },
        );
        assert_eq!(counted, decoded);
        assert!(counted.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn banded_reads_keep_only_wanted_bands_and_groups() {
        let groups = sample_groups();
        let (mut entries, mut bands) = (Vec::new(), Vec::new());
        encode_banded(&groups, &mut entries, &mut bands);
        let wanted_band = super::band(1_000);
        for wanted in [vec![5, 6, 7, -3], vec![6], vec![5, 7], vec![], vec![-3]] {
            let mut expected: Vec<(usize, u32)> = Vec::new();
            for ((identity, _, _), (latencies, ttfts)) in &groups {
                if !wanted.contains(identity) {
                    continue;
                }
                for (series, list) in [latencies, ttfts].into_iter().enumerate() {
                    expected.extend(
                        list.iter()
                            .filter(|v| **v > 0 && (series == 1 || super::band(**v) == wanted_band))
                            .map(|v| (series, *v)),
                    );
                }
            }
            let mut got: Vec<(usize, u32)> = Vec::new();
            let mut keep = |identity: i64, _: i64, _: bool| wanted.contains(&identity);
            decode_banded(
                &entries,
                Some(&mut keep),
                |series, band| series == 1 || band == wanted_band,
                |series, _, values| got.extend(values.iter().map(|v| (series, *v))),
            );
            expected.sort_unstable();
            got.sort_unstable();
            assert_eq!(got, expected, "groups {wanted:?}");
        }
    }

    #[test]
    fn cut_banded_blobs_end_the_read_without_panicking() {
        let (mut entries, mut bands) = (Vec::new(), Vec::new());
        encode_banded(&sample_groups(), &mut entries, &mut bands);
        let total: usize = sample_groups()
            .values()
            .map(|(l, t)| l.iter().chain(t).filter(|v| **v > 0).count())
            .sum();
        for cut in 0..entries.len() {
            let mut seen = 0;
            decode_banded(
                &entries[..cut],
                None,
                |_, _| true,
                |_, _, values| seen += values.len(),
            );
            assert!(seen < total, "cut at {cut}");
            let mut back = Samples::default();
            decode_banded_groups(&entries[..cut], &mut back);
        }
        for cut in 0..bands.len() {
            decode_band_counts(&bands[..cut], |_, _, _| {});
        }
    }

    /// The layout runs had before `0132`, written as ingest wrote it.
    fn encode_legacy(groups: &Samples) -> Vec<u8> {
        let mut out = Vec::new();
        for ((identity, model, failed), (latencies, ttfts)) in groups {
            put(&mut out, zigzag(*identity));
            put(&mut out, zigzag(*model));
            put(&mut out, u64::from(*failed));
            put(&mut out, latencies.len() as u64);
            put(&mut out, ttfts.len() as u64);
            for value in latencies.iter().chain(ttfts.iter()) {
                put(&mut out, u64::from(*value));
            }
        }
        out
    }

    #[test]
    fn stored_runs_are_converted_to_bands_and_the_old_tables_dropped() {
        let mut connection = Connection::open_in_memory().expect("open");
        let mut ddl = String::from(
            "CREATE TABLE usage_rollup_backfill (name TEXT PRIMARY KEY) WITHOUT ROWID; \
             INSERT INTO usage_rollup_backfill (name) VALUES ('sample_bands'), ('other');",
        );
        for suffix in ["m", "q", "h"] {
            ddl.push_str(&format!(
                "CREATE TABLE usage_rollup_latency_{suffix} (bucket_ms INTEGER NOT NULL, \
                 run INTEGER NOT NULL, entries BLOB NOT NULL, PRIMARY KEY (bucket_ms, run));"
            ));
        }
        for suffix in ["m", "q"] {
            ddl.push_str(&format!(
                "CREATE TABLE usage_rollup_samples_{suffix} (bucket_ms INTEGER NOT NULL, \
                 run INTEGER NOT NULL, bands BLOB NOT NULL, entries BLOB NOT NULL, \
                 PRIMARY KEY (bucket_ms, run));"
            ));
        }
        connection.execute_batch(&ddl).expect("schema");
        let groups = sample_groups();
        let mut other = Samples::default();
        other.insert((1, 1, true), (vec![3, 3, 3], vec![]));
        let stored = [
            ("q", 900_000, 0, &groups),
            ("q", 900_000, 1, &other),
            ("q", 1_800_000, 0, &other),
            ("m", 60_000, 0, &groups),
            ("h", 0, 0, &groups),
        ];
        for (suffix, bucket, run, groups) in stored {
            connection
                .execute(
                    &format!("INSERT INTO usage_rollup_latency_{suffix} VALUES (?1, ?2, ?3)"),
                    (bucket, run, encode_legacy(groups)),
                )
                .expect("insert");
        }
        convert_samples(&mut connection).expect("convert");
        for (suffix, bucket, run, groups) in &stored[..4] {
            let (bands, entries): (Vec<u8>, Vec<u8>) = connection
                .query_row(
                    &format!(
                        "SELECT bands, entries FROM usage_rollup_samples_{suffix} \
                         WHERE bucket_ms = ?1 AND run = ?2"
                    ),
                    (bucket, run),
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .expect("converted run");
            let mut back = Samples::default();
            decode_banded_groups(&entries, &mut back);
            assert_eq!(sorted(&back), sorted(groups));
            let mut counted = 0;
            decode_band_counts(&bands, |_, _, count| counted += count);
            assert_eq!(
                counted as usize,
                sorted(groups)
                    .iter()
                    .map(|g| g.1.len() + g.2.len())
                    .sum::<usize>()
            );
        }
        let names = |sql: &str| -> Vec<String> {
            connection
                .prepare(sql)
                .and_then(|mut statement| {
                    statement
                        .query_map([], |row| row.get(0))?
                        .collect::<rusqlite::Result<Vec<String>>>()
                })
                .expect(sql)
        };
        let left = names("SELECT name FROM sqlite_master WHERE name LIKE 'usage_rollup_latency_%'");
        assert!(left.is_empty(), "{left:?}");
        let marks = names("SELECT name FROM usage_rollup_backfill");
        assert_eq!(marks, vec!["other".to_string()]);
        // Without the mark, nothing happens again.
        convert_samples(&mut connection).expect("second open");
    }

    #[test]
    fn varints_of_every_length_round_trip() {
        let values = [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            u64::MAX,
        ];
        let mut bytes = Vec::new();
        for value in values {
            put(&mut bytes, value);
        }
        let mut at = 0;
        for value in values {
            assert_eq!(take(&bytes, &mut at), Some(value));
        }
        assert_eq!(take(&bytes, &mut at), None);
        assert_eq!(take(&[0x80, 0x80], &mut 0), None);
        // Every length, read with and without eight bytes in hand.
        let mut values: Vec<u64> = (0..64).flat_map(|bit| [1 << bit, (1 << bit) - 1]).collect();
        values.extend([u64::MAX, 0x5555_5555_5555_5555, 0xdead_beef_cafe_f00d]);
        for value in values {
            for padding in 0..10 {
                let mut bytes = Vec::new();
                put(&mut bytes, value);
                let length = bytes.len();
                bytes.extend(std::iter::repeat_n(0xff, padding));
                let mut at = 0;
                assert_eq!(take(&bytes, &mut at), Some(value), "{value} + {padding}");
                assert_eq!(at, length);
                let mut at = 0;
                assert_eq!(take(&bytes[..length - 1], &mut at), None);
            }
        }
    }
}
