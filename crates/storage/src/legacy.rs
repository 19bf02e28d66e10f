//! Adopting a database written by the Go Manager Server (CPA Manager Plus).
//!
//! Existing deployments keep their data directory. When `open` finds Go's schema
//! (a `usage_events` table but no migration history), it moves every Go table
//! aside under a `legacy_go_` prefix in one transaction and then creates cpamp's
//! schema. Settings and dead letters are copied back at once (their layout is the
//! same); usage events are copied in the background, in batches through the normal
//! ingest path, by [`SqliteStore::adopt_legacy_events`], so the server starts at
//! once and nothing needs an offline step. Event hashes are kept, so a Go export
//! or a re-delivered payload still dedupes against adopted rows.
//!
//! Go's settings keep their keys (`admin_credential_v1`, `manager_config_v1`, ...),
//! so an existing admin key and CPA connection are read as before.
//! Progress is kept in the `legacy_go_adoption` setting; an interrupted adoption
//! resumes where it stopped. When every event is adopted, the Go event tables are
//! dropped. Model prices (with their tiers; manual prices become pinned) and API key
//! aliases are copied at open by [`adopt_prices_and_aliases`], also for databases
//! adopted by an earlier version; other Go tables stay for later features.

use cpamp_domain::StoreError;
use cpamp_domain::event::{CacheInputMode, NormalizedTokens, TokenCounts, UsageEvent};
use cpamp_domain::ports::{BatchOrigin, EventSink, IngestBatch};
use cpamp_domain::prices::aliases;
use sqlx::{AssertSqlSafe, Row, SqlitePool};

use crate::{SqliteStore, error};

const LEGACY_PREFIX: &str = "legacy_go_";
const PROGRESS_KEY: &str = "legacy_go_adoption";

/// What one adoption step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdoptionStep {
    /// There is no Go database to adopt (or it was adopted completely before).
    Nothing,
    /// A batch was copied; call again.
    Copied {
        /// Go event rows read in this step.
        rows: u64,
        /// Of those, events cpamp did not hold yet (the rest were already stored).
        inserted: u64,
    },
    /// The last rows were copied and the Go event tables dropped.
    Finished,
}

/// Moves a Go schema aside before cpamp's migrations run. Idempotent.
pub(crate) async fn prepare(writer: &SqlitePool) -> Result<bool, StoreError> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(writer)
    .await
    .map_err(|error| error::map(error, "inspect schema"))?;
    let is_go = tables.iter().any(|name| name == "usage_events")
        && !tables.iter().any(|name| name == "_sqlx_migrations");
    if !is_go {
        return Ok(false);
    }
    tracing::info!(
        tables = tables.len(),
        "found a CPA Manager Plus (Go) database; moving its tables aside and adopting its data"
    );
    let mut transaction = writer
        .begin()
        .await
        .map_err(|error| error::map(error, "begin adoption"))?;
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL",
    )
    .fetch_all(&mut *transaction)
    .await
    .map_err(|error| error::map(error, "list Go indexes"))?;
    // Go's index names would collide with cpamp's; the legacy tables are only
    // read in id order, which needs no index.
    for index in indexes {
        sqlx::query(AssertSqlSafe(format!(
            "DROP INDEX IF EXISTS \"{}\"",
            index.replace('"', "\"\"")
        )))
        .execute(&mut *transaction)
        .await
        .map_err(|error| error::map(error, "drop Go index"))?;
    }
    for table in &tables {
        // Names come from sqlite_master and are quoted; nothing here is user input.
        sqlx::query(AssertSqlSafe(format!(
            "ALTER TABLE \"{}\" RENAME TO \"{LEGACY_PREFIX}{}\"",
            table.replace('"', "\"\""),
            table.replace('"', "\"\"")
        )))
        .execute(&mut *transaction)
        .await
        .map_err(|error| error::map(error, "move Go table aside"))?;
    }
    transaction
        .commit()
        .await
        .map_err(|error| error::map(error, "commit adoption"))?;
    Ok(true)
}

/// Copies Go settings and dead letters into cpamp's tables (after migrations).
pub(crate) async fn copy_small_tables(writer: &SqlitePool) -> Result<(), StoreError> {
    // The Go tables held raw dead-letter payloads: what is dropped here is zeroed, not
    // left in free pages (the store has one writer connection, so this holds for the
    // transaction below; `rollup::backfill` turns it off again).
    sqlx::query("PRAGMA secure_delete = ON")
        .execute(writer)
        .await
        .map_err(|error| error::map(error, "begin adoption"))?;
    let mut transaction = writer
        .begin()
        .await
        .map_err(|error| error::map(error, "begin adoption"))?;
    if table_exists(&mut transaction, "legacy_go_settings").await? {
        sqlx::query(
            "INSERT OR IGNORE INTO settings (key, value, updated_at_ms) \
             SELECT key, value, updated_at_ms FROM legacy_go_settings",
        )
        .execute(&mut *transaction)
        .await
        .map_err(|error| error::map(error, "adopt Go settings"))?;
        sqlx::query("DROP TABLE legacy_go_settings")
            .execute(&mut *transaction)
            .await
            .map_err(|error| error::map(error, "drop Go settings"))?;
    }
    if table_exists(&mut transaction, "legacy_go_dead_letter_events").await? {
        let copied = sqlx::query(
            "INSERT INTO dead_letter_events (payload, error, created_at_ms) \
             SELECT payload, error, created_at_ms FROM legacy_go_dead_letter_events ORDER BY id",
        )
        .execute(&mut *transaction)
        .await
        .map_err(|error| error::map(error, "adopt Go dead letters"))?
        .rows_affected();
        sqlx::query("UPDATE counters SET value = value + ? WHERE name = 'dead_letter_events'")
            .bind(i64::try_from(copied).unwrap_or(i64::MAX))
            .execute(&mut *transaction)
            .await
            .map_err(|error| error::map(error, "count Go dead letters"))?;
        sqlx::query("DROP TABLE legacy_go_dead_letter_events")
            .execute(&mut *transaction)
            .await
            .map_err(|error| error::map(error, "drop Go dead letters"))?;
        // The Go server stored payloads raw; they are redacted before anything else
        // runs (`rollup::backfill`).
        sqlx::query("INSERT OR IGNORE INTO usage_rollup_backfill (name) VALUES (?)")
            .bind(crate::rollup::REDACT_DEAD_LETTERS)
            .execute(&mut *transaction)
            .await
            .map_err(|error| error::map(error, "mark Go dead letters for redaction"))?;
    }
    sqlx::query(
        "INSERT INTO settings (key, value, updated_at_ms) VALUES (?, ?, ?) \
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(PROGRESS_KEY)
    .bind("{\"lastId\":0,\"status\":\"running\"}")
    .bind(crate::settings::now_ms())
    .execute(&mut *transaction)
    .await
    .map_err(|error| error::map(error, "record adoption"))?;
    transaction
        .commit()
        .await
        .map_err(|error| error::map(error, "commit adoption"))
}

/// Copies Go's model prices, their tiers and API key aliases into cpamp's tables and
/// drops the Go tables, in one transaction. Does nothing when they are gone.
/// Manual Go prices (source empty or `manual`) become pinned, so a sync never
/// overwrites them. An alias that differs from an earlier one only in case (Go did
/// not always refuse those) is kept with its hash prefix appended, never dropped.
pub(crate) async fn adopt_prices_and_aliases(writer: &SqlitePool) -> Result<(), StoreError> {
    let mut transaction = writer
        .begin()
        .await
        .map_err(|error| error::map(error, "begin price adoption"))?;
    let mut adopted_prices = 0;
    if table_exists(&mut transaction, "legacy_go_model_prices").await? {
        let columns = column_names(&mut transaction, "legacy_go_model_prices").await?;
        let column = |name: &str, fallback: &str| {
            if columns.iter().any(|present| present == name) {
                format!("\"{name}\"")
            } else {
                fallback.to_string()
            }
        };
        // Go's own upgrade rules for price rows written before the configured flags.
        let select = format!(
            "SELECT model, prompt_per_1m, completion_per_1m, cache_per_1m, {read}, {creation}, {prompt_flag}, \
             {completion_flag}, {read_flag}, {creation_flag}, coalesce({source}, ''), coalesce({source_model}, ''), \
             coalesce({raw}, ''), CASE WHEN trim(coalesce({source}, '')) IN ('', 'manual') THEN 1 ELSE 0 END, \
             updated_at_ms, {synced} FROM legacy_go_model_prices WHERE trim(model) <> ''",
            read = column("cache_read_per_1m", "0"),
            creation = column("cache_creation_per_1m", "0"),
            prompt_flag = column("prompt_configured", "1"),
            completion_flag = column("completion_configured", "1"),
            read_flag = column("cache_read_configured", "(cache_read_per_1m != 0)"),
            creation_flag = column("cache_creation_configured", "(cache_creation_per_1m != 0)"),
            source = column("source", "NULL"),
            source_model = column("source_model_id", "NULL"),
            raw = column("raw_json", "NULL"),
            synced = column("synced_at_ms", "NULL"),
        );
        adopted_prices = sqlx::query(AssertSqlSafe(format!(
            "INSERT OR IGNORE INTO model_prices (model, prompt_per_1m, completion_per_1m, cache_per_1m, \
             cache_read_per_1m, cache_creation_per_1m, prompt_configured, completion_configured, \
             cache_read_configured, cache_creation_configured, source, source_model_id, raw_json, pinned, \
             updated_at_ms, synced_at_ms) {select}"
        )))
        .execute(&mut *transaction)
        .await
        .map_err(|error| error::map(error, "adopt Go prices"))?
        .rows_affected();
        for (table, key) in [
            ("model_price_context_tiers", "threshold_tokens"),
            ("model_price_service_tiers", "mode, service_tier"),
        ] {
            let legacy = format!("{LEGACY_PREFIX}{table}");
            if !table_exists(&mut transaction, &legacy).await? {
                continue;
            }
            let columns = "prompt_per_1m, completion_per_1m, cache_per_1m, cache_read_per_1m, \
                 cache_creation_per_1m, prompt_configured, completion_configured, cache_configured, \
                 cache_read_configured, cache_creation_configured";
            sqlx::query(AssertSqlSafe(format!(
                "INSERT OR IGNORE INTO {table} (model, {key}, {columns}) \
                 SELECT model, {key}, {columns} FROM {legacy} WHERE model IN (SELECT model FROM model_prices)"
            )))
            .execute(&mut *transaction)
            .await
            .map_err(|error| error::map(error, "adopt Go price tiers"))?;
            sqlx::query(AssertSqlSafe(format!("DROP TABLE {legacy}")))
                .execute(&mut *transaction)
                .await
                .map_err(|error| error::map(error, "drop Go price tiers"))?;
        }
        sqlx::query("DROP TABLE legacy_go_model_prices")
            .execute(&mut *transaction)
            .await
            .map_err(|error| error::map(error, "drop Go prices"))?;
    }
    let mut adopted_aliases = 0;
    if table_exists(&mut transaction, "legacy_go_api_key_aliases").await? {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT api_key_hash, alias, updated_at_ms FROM legacy_go_api_key_aliases ORDER BY updated_at_ms, api_key_hash",
        )
        .fetch_all(&mut *transaction)
        .await
        .map_err(|error| error::map(error, "read Go aliases"))?;
        let mut taken = std::collections::HashSet::new();
        for (hash, alias, updated_at_ms) in rows {
            let hash = hash.trim().to_ascii_lowercase();
            let mut alias = alias.trim().to_string();
            if hash.is_empty() || alias.is_empty() {
                continue;
            }
            if !taken.insert(aliases::alias_key(&alias)) {
                alias = format!("{alias} ({})", &hash[..hash.len().min(8)]);
                taken.insert(aliases::alias_key(&alias));
                tracing::warn!(alias = %alias, "a Go API key alias differed from another only in case; kept with its hash prefix");
            }
            adopted_aliases += sqlx::query(
                "INSERT OR IGNORE INTO api_key_aliases (api_key_hash, alias, alias_key, updated_at_ms) VALUES (?, ?, ?, ?)",
            )
            .bind(&hash)
            .bind(&alias)
            .bind(aliases::alias_key(&alias))
            .bind(updated_at_ms)
            .execute(&mut *transaction)
            .await
            .map_err(|error| error::map(error, "adopt Go alias"))?
            .rows_affected();
        }
        sqlx::query("DROP TABLE legacy_go_api_key_aliases")
            .execute(&mut *transaction)
            .await
            .map_err(|error| error::map(error, "drop Go aliases"))?;
    }
    transaction
        .commit()
        .await
        .map_err(|error| error::map(error, "commit price adoption"))?;
    if adopted_prices > 0 || adopted_aliases > 0 {
        tracing::info!(
            prices = adopted_prices,
            aliases = adopted_aliases,
            "adopted model prices and API key aliases of the Go database"
        );
    }
    Ok(())
}

async fn column_names(
    connection: &mut sqlx::SqliteConnection,
    table: &str,
) -> Result<Vec<String>, StoreError> {
    sqlx::query_scalar("SELECT name FROM pragma_table_info(?)")
        .bind(table)
        .fetch_all(connection)
        .await
        .map_err(|error| error::map(error, "inspect Go table"))
}

async fn table_exists(
    connection: &mut sqlx::SqliteConnection,
    name: &str,
) -> Result<bool, StoreError> {
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?")
            .bind(name)
            .fetch_one(connection)
            .await
            .map_err(|error| error::map(error, "inspect schema"))?;
    Ok(count > 0)
}

/// Text columns read from a Go event row (absent in older Go releases → NULL).
const TEXT_COLUMNS: &[&str] = &[
    "event_hash",
    "request_id",
    "timestamp",
    "provider",
    "executor_type",
    "model",
    "requested_model",
    "resolved_model",
    "endpoint",
    "method",
    "path",
    "client_ip",
    "x_forwarded_for",
    "user_agent",
    "auth_type",
    "auth_index",
    "source",
    "source_hash",
    "api_key_hash",
    "account_snapshot",
    "auth_label_snapshot",
    "auth_file_snapshot",
    "auth_provider_snapshot",
    "auth_project_id_snapshot",
    "reasoning_effort",
    "service_tier",
    "request_service_tier",
    "response_service_tier",
    "cache_input_mode",
    "fail_summary",
    "response_metadata_json",
    "header_quota_plan_type",
    "header_error_kind",
    "header_error_code",
    "header_trace_id",
];
const INTEGER_COLUMNS: &[&str] = &[
    "timestamp_ms",
    "auth_snapshot_at_ms",
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "cache_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "total_tokens",
    "normalized_uncached_input_tokens",
    "normalized_total_input_tokens",
    "normalized_cache_read_tokens",
    "normalized_cache_creation_tokens",
    "latency_ms",
    "ttft_ms",
    "failed",
    "fail_status_code",
    "header_quota_recover_at_ms",
    "created_at_ms",
];

impl SqliteStore {
    /// Copies the next `limit` Go events (if any) into cpamp's tables.
    pub async fn adopt_legacy_events(&self, limit: u32) -> Result<AdoptionStep, StoreError> {
        let Some(progress) = self.legacy_progress().await? else {
            return Ok(AdoptionStep::Nothing);
        };
        let writer = self.writer();
        let available: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info('legacy_go_usage_events')")
                .fetch_all(writer)
                .await
                .map_err(|error| error::map(error, "inspect Go events"))?;
        if available.is_empty() {
            self.finish_adoption().await?;
            return Ok(AdoptionStep::Finished);
        }
        let column = |name: &str| {
            if available.iter().any(|present| present == name) {
                format!("\"{name}\"")
            } else {
                format!("NULL AS \"{name}\"")
            }
        };
        let select: Vec<String> = ["id"]
            .iter()
            .chain(TEXT_COLUMNS)
            .chain(INTEGER_COLUMNS)
            .chain(&["header_quota_used_percent"])
            .map(|name| column(name))
            .collect();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {} FROM legacy_go_usage_events WHERE id > ? ORDER BY id LIMIT ?",
            select.join(", ")
        )))
        .bind(progress)
        .bind(i64::from(limit.max(1)))
        .fetch_all(writer)
        .await
        .map_err(|error| error::map(error, "read Go events"))?;
        let Some(last) = rows.last() else {
            self.finish_adoption().await?;
            return Ok(AdoptionStep::Finished);
        };
        let last_id: i64 = last
            .try_get("id")
            .map_err(|error| error::map(error, "read Go id"))?;
        let events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let count = events.len() as u64;
        let outcome = self
            .store_batch(IngestBatch {
                origin: BatchOrigin::Adoption,
                events,
                dead_letters: Vec::new(),
            })
            .await?;
        sqlx::query("UPDATE settings SET value = ?, updated_at_ms = ? WHERE key = ?")
            .bind(format!("{{\"lastId\":{last_id},\"status\":\"running\"}}"))
            .bind(crate::settings::now_ms())
            .bind(PROGRESS_KEY)
            .execute(writer)
            .await
            .map_err(|error| error::map(error, "record adoption progress"))?;
        Ok(AdoptionStep::Copied {
            rows: count,
            inserted: outcome.inserted,
        })
    }

    /// The last adopted Go event id, or `None` when there is nothing (left) to adopt.
    async fn legacy_progress(&self) -> Result<Option<i64>, StoreError> {
        let value: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(PROGRESS_KEY)
            .fetch_optional(self.writer())
            .await
            .map_err(|error| error::map(error, "read adoption progress"))?;
        let Some(value) = value else {
            return Ok(None);
        };
        if value.contains("\"completed\"") {
            return Ok(None);
        }
        let last_id = value
            .split("\"lastId\":")
            .nth(1)
            .and_then(|rest| rest.split([',', '}']).next())
            .and_then(|number| number.trim().parse().ok())
            .unwrap_or(0);
        Ok(Some(last_id))
    }

    async fn finish_adoption(&self) -> Result<(), StoreError> {
        // Go kept raw payloads and raw failure bodies, which can hold secrets: zero
        // their pages when the tables are dropped instead of leaving them free.
        sqlx::query("PRAGMA secure_delete = ON")
            .execute(self.writer())
            .await
            .map_err(|error| error::map(error, "enable secure delete"))?;
        let result = self.drop_legacy_event_tables().await;
        let _ = sqlx::query("PRAGMA secure_delete = OFF")
            .execute(self.writer())
            .await;
        result?;
        let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(self.writer())
            .await;
        tracing::info!("adopted every event of the Go database");
        Ok(())
    }

    async fn drop_legacy_event_tables(&self) -> Result<(), StoreError> {
        // Hashes Go remembered for events it no longer stores keep deduping. The
        // ledger's claims are Rust (`ledger::claim`), run on the batch connection
        // while the writer lease is held, like a batch.
        self.with_batch_writer(
            ("begin adoption", "adopt Go identity ledger"),
            |_, connection| {
                adopt_go_ledger(connection).map_err(error::sqlite("adopt Go identity ledger"))
            },
        )
        .await?;
        let mut transaction = self
            .writer()
            .begin()
            .await
            .map_err(|error| error::map(error, "begin adoption"))?;
        sqlx::query("DROP TABLE IF EXISTS legacy_go_usage_events")
            .execute(&mut *transaction)
            .await
            .map_err(|error| error::map(error, "drop Go events"))?;
        sqlx::query("UPDATE settings SET value = ?, updated_at_ms = ? WHERE key = ?")
            .bind("{\"status\":\"completed\"}")
            .bind(crate::settings::now_ms())
            .bind(PROGRESS_KEY)
            .execute(&mut *transaction)
            .await
            .map_err(|error| error::map(error, "record adoption"))?;
        transaction
            .commit()
            .await
            .map_err(|error| error::map(error, "commit adoption"))
    }
}

/// Claims every hash of the Go ledger (without an event row) and drops it, in
/// one transaction; nothing to do once it is gone.
fn adopt_go_ledger(connection: &mut rusqlite::Connection) -> rusqlite::Result<()> {
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let exists: i64 = transaction.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' \
         AND name = 'legacy_go_usage_event_identity_ledger'",
        [],
        |row| row.get(0),
    )?;
    if exists > 0 {
        {
            let mut select = transaction.prepare(
                "SELECT unhex(event_hash), first_seen_at_ms FROM legacy_go_usage_event_identity_ledger \
                 WHERE length(event_hash) = 64 AND unhex(event_hash) IS NOT NULL",
            )?;
            let mut rows = select.query([])?;
            while let Some(row) = rows.next()? {
                let whole: Vec<u8> = row.get(0)?;
                let first_seen_at_ms: i64 = row.get(1)?;
                if let Ok(hash) = <[u8; 32]>::try_from(whole.as_slice()) {
                    crate::ledger::claim(&transaction, &hash, None, first_seen_at_ms)?;
                }
            }
        }
        transaction.execute_batch("DROP TABLE legacy_go_usage_event_identity_ledger")?;
    }
    transaction.commit()
}

fn event_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<UsageEvent, StoreError> {
    let text = |name: &str| -> Option<String> {
        row.try_get::<Option<String>, _>(name)
            .ok()
            .flatten()
            .filter(|value| !value.is_empty())
    };
    let integer =
        |name: &str| -> Option<i64> { row.try_get::<Option<i64>, _>(name).ok().flatten() };
    let event_hash = text("event_hash")
        .ok_or_else(|| StoreError::Invalid("a Go event row has no event_hash".into()))?;
    let timestamp_ms = integer("timestamp_ms").unwrap_or(0);
    let cache_input_mode = text("cache_input_mode").and_then(|mode| CacheInputMode::parse(&mode));
    let normalized_total = integer("normalized_total_input_tokens");
    Ok(UsageEvent {
        event_hash: event_hash.to_ascii_lowercase(),
        request_id: text("request_id"),
        timestamp_ms,
        timestamp: text("timestamp")
            .unwrap_or_else(|| cpamp_domain::event::format_timestamp_ms(timestamp_ms)),
        provider: text("provider"),
        executor_type: text("executor_type"),
        model: text("model").unwrap_or_else(|| "-".to_string()),
        requested_model: text("requested_model"),
        resolved_model: text("resolved_model"),
        endpoint: text("endpoint"),
        method: text("method"),
        path: text("path"),
        client_ip: text("client_ip"),
        x_forwarded_for: text("x_forwarded_for"),
        user_agent: text("user_agent"),
        auth_type: text("auth_type"),
        auth_index: text("auth_index"),
        source: text("source"),
        source_hash: text("source_hash"),
        api_key_hash: text("api_key_hash"),
        account_snapshot: text("account_snapshot"),
        auth_label_snapshot: text("auth_label_snapshot"),
        auth_file_snapshot: text("auth_file_snapshot"),
        auth_provider_snapshot: text("auth_provider_snapshot"),
        auth_project_id_snapshot: text("auth_project_id_snapshot"),
        auth_snapshot_at_ms: integer("auth_snapshot_at_ms"),
        reasoning_effort: text("reasoning_effort"),
        service_tier: text("service_tier"),
        request_service_tier: text("request_service_tier"),
        response_service_tier: text("response_service_tier"),
        // Rows from before Go's cache-accounting migration have no mode; storage
        // then keeps the normalised columns NULL and readers fall back to raw input.
        cache_input_mode: cache_input_mode.filter(|_| normalized_total.is_some()),
        tokens: TokenCounts {
            input: integer("input_tokens").unwrap_or(0),
            output: integer("output_tokens").unwrap_or(0),
            reasoning: integer("reasoning_tokens").unwrap_or(0),
            cached: integer("cached_tokens").unwrap_or(0),
            cache: integer("cache_tokens").unwrap_or(0),
            cache_read: integer("cache_read_tokens").unwrap_or(0),
            cache_creation: integer("cache_creation_tokens").unwrap_or(0),
            total: integer("total_tokens").unwrap_or(0),
        },
        normalized: NormalizedTokens {
            uncached_input: integer("normalized_uncached_input_tokens").unwrap_or(0),
            total_input: normalized_total.unwrap_or(0),
            cache_read: integer("normalized_cache_read_tokens").unwrap_or(0),
            cache_creation: integer("normalized_cache_creation_tokens").unwrap_or(0),
        },
        latency_ms: integer("latency_ms"),
        ttft_ms: integer("ttft_ms"),
        failed: integer("failed").unwrap_or(0) != 0,
        fail_status_code: integer("fail_status_code"),
        fail_summary: text("fail_summary"),
        response_metadata_json: text("response_metadata_json"),
        header_quota_recover_at_ms: integer("header_quota_recover_at_ms"),
        header_quota_used_percent: row
            .try_get::<Option<f64>, _>("header_quota_used_percent")
            .ok()
            .flatten(),
        header_quota_plan_type: text("header_quota_plan_type"),
        header_error_kind: text("header_error_kind"),
        header_error_code: text("header_error_code"),
        header_trace_id: text("header_trace_id"),
        created_at_ms: integer("created_at_ms").unwrap_or(timestamp_ms),
    })
}
