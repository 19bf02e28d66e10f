//! The quota snapshot tables behind [`QuotaStore`] (migrations 0062, 0095 and 0096):
//! observations, the logical windows they move, and one row per reported window.
//! The texts these rows repeat are stored once: an observation names its observer
//! (account, provider, source, inventory scope and mode) and a snapshot row its
//! shape (the window's descriptive texts).

use cpamp_domain::StoreError;
use cpamp_domain::automation::quota::{
    Observation, QuotaStore, StoredWindow, WindowInput, decode_list, encode_list,
};
use sqlx::{Sqlite, Transaction};

use crate::fasthash::FastMap;
use crate::{SqliteStore, error};

/// The ids of observer and shape rows committed so far, by their texts (the
/// statement that finds them, then the texts), so a write looks each up once.
#[derive(Default)]
pub(crate) struct QuotaTextIds {
    known: std::sync::Mutex<FastMap<Vec<String>, i64>>,
}

/// Entries kept at most; past that the map starts again.
const KNOWN_TEXT_IDS: usize = 4096;

/// The ids one transaction looks up: those committed before (`known`) and
/// those found or added by it (`fresh`, known once it commits).
struct TextIds<'a> {
    known: Option<&'a QuotaTextIds>,
    fresh: FastMap<Vec<String>, i64>,
}

impl TextIds<'_> {
    fn commit(self) {
        let Some(known) = self.known else {
            return;
        };
        let mut map = known
            .known
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if map.len() + self.fresh.len() > KNOWN_TEXT_IDS {
            map.clear();
        }
        map.extend(self.fresh);
    }
}

/// The id of the row `select` finds by `texts`, added by `insert` (same binds)
/// when there is none: the texts quota rows repeat are stored once.
async fn intern(
    transaction: &mut Transaction<'_, Sqlite>,
    ids: &mut TextIds<'_>,
    (select, insert): (&'static str, &'static str),
    texts: &[&str],
) -> Result<i64, sqlx::Error> {
    let key: Vec<String> = std::iter::once(select)
        .chain(texts.iter().copied())
        .map(str::to_owned)
        .collect();
    if let Some(id) = ids.fresh.get(&key) {
        return Ok(*id);
    }
    if let Some(known) = ids.known {
        let map = known
            .known
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(id) = map.get(&key) {
            return Ok(*id);
        }
    }
    let mut query = sqlx::query_scalar(select);
    for text in texts {
        query = query.bind(*text);
    }
    let id = match query.fetch_optional(&mut **transaction).await? {
        Some(id) => id,
        None => {
            let mut query = sqlx::query_scalar(insert);
            for text in texts {
                query = query.bind(*text);
            }
            query.fetch_one(&mut **transaction).await?
        }
    };
    ids.fresh.insert(key, id);
    Ok(id)
}

/// An observation's origin: account key, provider, source, inventory scope and mode.
const OBSERVER: (&str, &str) = (
    "SELECT id FROM account_quota_observers WHERE account_key = ? AND provider = ? \
     AND source = ? AND inventory_scope_key = ? AND inventory_mode = ?",
    "INSERT INTO account_quota_observers (account_key, provider, source, inventory_scope_key, \
     inventory_mode) VALUES (?, ?, ?, ?, ?) RETURNING id",
);

/// A reported window's descriptive texts.
const SHAPE: (&str, &str) = (
    "SELECT id FROM account_quota_shapes WHERE provider_window_id = ? \
     AND provider_window_aliases_json = ? AND window_kind = ? AND window_mode = ? \
     AND model_scope_kind = ? AND model_scope_key = ? AND model_ids_json = ? \
     AND boundary_accuracy = ? AND quota_unit = ? AND reset_credits_json = ? AND plan_type = ? \
     AND relationship_kind = ? AND container_provider_window_id = ?",
    "INSERT INTO account_quota_shapes (provider_window_id, provider_window_aliases_json, \
     window_kind, window_mode, model_scope_kind, model_scope_key, model_ids_json, \
     boundary_accuracy, quota_unit, reset_credits_json, plan_type, relationship_kind, \
     container_provider_window_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
);

/// A snapshot row's cycle start as SQL over the row `s` (migration 0098): NULL
/// stands for the cycle end less the duration when both are known, and the real
/// 0.5 for a start that is really absent then.
macro_rules! cycle_start {
    () => {
        "(CASE WHEN s.cycle_start_ms IS NULL AND s.cycle_end_ms IS NOT NULL \
         AND s.duration_seconds IS NOT NULL THEN s.cycle_end_ms - s.duration_seconds * 1000 \
         WHEN typeof(s.cycle_start_ms) = 'real' THEN NULL ELSE s.cycle_start_ms END)"
    };
}

/// Bounds under which a cycle start is left to the end and duration, so the
/// arithmetic of `cycle_start!` stays exact (the same as migration 0098's).
const CYCLE_END_BOUND: i64 = 4_000_000_000_000_000_000;
const DURATION_BOUND: i64 = 4_000_000_000_000_000;

/// The stored form of a window's cycle start (see `cycle_start!`).
enum StoredStart {
    Value(Option<i64>),
    Absent,
}

impl StoredStart {
    fn of(window: &WindowInput) -> StoredStart {
        let (Some(end), Some(duration)) = (window.cycle_end_ms, window.duration_seconds) else {
            return StoredStart::Value(window.cycle_start_ms);
        };
        let exact = end.unsigned_abs() < CYCLE_END_BOUND.unsigned_abs()
            && duration.unsigned_abs() < DURATION_BOUND.unsigned_abs();
        match window.cycle_start_ms {
            None => StoredStart::Absent,
            Some(start) if exact && start == end - duration * 1000 => StoredStart::Value(None),
            Some(start) => StoredStart::Value(Some(start)),
        }
    }
}

impl sqlx::Type<Sqlite> for StoredStart {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <i64 as sqlx::Type<Sqlite>>::type_info()
    }

    fn compatible(_: &sqlx::sqlite::SqliteTypeInfo) -> bool {
        true
    }
}

impl<'q> sqlx::Encode<'q, Sqlite> for StoredStart {
    fn encode_by_ref(
        &self,
        buffer: &mut <Sqlite as sqlx::Database>::ArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        match self {
            StoredStart::Value(value) => value.encode_by_ref(buffer),
            StoredStart::Absent => 0.5_f64.encode_by_ref(buffer),
        }
    }
}

async fn apply(
    transaction: &mut Transaction<'_, Sqlite>,
    ids: &mut TextIds<'_>,
    observation: &Observation,
    now_ms: i64,
) -> Result<u64, sqlx::Error> {
    let hash = observation.digest().to_vec();
    let known: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM account_quota_observations \
             WHERE substr(observation_hash, 1, 8) = substr(?1, 1, 8) AND observation_hash = ?1",
    )
    .bind(&hash)
    .fetch_optional(&mut **transaction)
    .await?;
    if known.is_some() {
        return Ok(0);
    }
    let newest: Option<i64> = sqlx::query_scalar(
        "SELECT observed_at_ms FROM account_quota_newest WHERE account_key = ? \
         AND provider = ? AND inventory_scope_key = ?",
    )
    .bind(&observation.account_key)
    .bind(&observation.provider)
    .bind(&observation.inventory_scope_key)
    .fetch_optional(&mut **transaction)
    .await?;
    // Only evidence at least as new as what moved the windows moves them again.
    let applies = newest.is_none_or(|newest| observation.observed_at_ms >= newest);
    let observer_id = intern(
        transaction,
        ids,
        OBSERVER,
        &[
            &observation.account_key,
            &observation.provider,
            &observation.source,
            &observation.inventory_scope_key,
            &observation.inventory_mode,
        ],
    )
    .await?;
    let observation_id: i64 = sqlx::query_scalar(
        "INSERT INTO account_quota_observations (observation_hash, observer_id, \
         source_observation_id, observed_at_ms, window_count, lifecycle_applied, created_at_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(&hash)
    .bind(observer_id)
    .bind(&observation.source_observation_id)
    .bind(observation.observed_at_ms)
    .bind(observation.windows.len() as i64)
    .bind(applies)
    .bind(now_ms)
    .fetch_one(&mut **transaction)
    .await?;
    if applies {
        sqlx::query(
            "INSERT INTO account_quota_newest (account_key, provider, inventory_scope_key, observed_at_ms) \
             VALUES (?, ?, ?, ?) ON CONFLICT (account_key, provider, inventory_scope_key) \
             DO UPDATE SET observed_at_ms = max(observed_at_ms, excluded.observed_at_ms)",
        )
        .bind(&observation.account_key)
        .bind(&observation.provider)
        .bind(&observation.inventory_scope_key)
        .bind(observation.observed_at_ms)
        .execute(&mut **transaction)
        .await?;
    }
    let at = observation.observed_at_ms;
    let mut reported = Vec::with_capacity(observation.windows.len());
    for window in &observation.windows {
        let fingerprint = window.scope_fingerprint();
        let window_id: i64 = if applies {
            sqlx::query_scalar(
                "INSERT INTO account_quota_windows (account_key, provider, provider_window_id, \
                 scope_fingerprint, inventory_scope_key, availability, generation, first_seen_at_ms, \
                 last_seen_at_ms, last_observation_id) VALUES (?, ?, ?, ?, ?, 'active', 1, ?, ?, ?) \
                 ON CONFLICT (account_key, provider, provider_window_id, scope_fingerprint) DO UPDATE SET \
                 generation = generation + (availability = 'inactive'), availability = 'active', \
                 missing_since_ms = NULL, deactivated_at_ms = NULL, \
                 last_seen_at_ms = max(last_seen_at_ms, excluded.last_seen_at_ms), \
                 inventory_scope_key = excluded.inventory_scope_key, \
                 last_observation_id = excluded.last_observation_id RETURNING id",
            )
        } else {
            sqlx::query_scalar(
                "INSERT INTO account_quota_windows (account_key, provider, provider_window_id, \
                 scope_fingerprint, inventory_scope_key, availability, generation, first_seen_at_ms, \
                 last_seen_at_ms, last_observation_id) VALUES (?, ?, ?, ?, ?, 'active', 1, ?, ?, ?) \
                 ON CONFLICT (account_key, provider, provider_window_id, scope_fingerprint) DO UPDATE SET \
                 first_seen_at_ms = min(first_seen_at_ms, excluded.first_seen_at_ms) RETURNING id",
            )
        }
        .bind(&observation.account_key)
        .bind(&observation.provider)
        .bind(&window.provider_window_id)
        .bind(&fingerprint)
        .bind(&observation.inventory_scope_key)
        .bind(at)
        .bind(at)
        .bind(observation_id)
        .fetch_one(&mut **transaction)
        .await?;
        reported.push(window_id);
        let aliases = encode_list(&window.provider_window_aliases);
        let model_ids = encode_list(&window.model_ids);
        let shape_id = intern(
            transaction,
            ids,
            SHAPE,
            &[
                &window.provider_window_id,
                &aliases,
                &window.window_kind,
                &window.window_mode,
                &window.model_scope_kind,
                &window.model_scope_key,
                &model_ids,
                &window.boundary_accuracy,
                &window.quota_unit,
                &window.reset_credits_json,
                &window.plan_type,
                &window.relationship_kind,
                &window.container_provider_window_id,
            ],
        )
        .await?;
        // A window reported twice in one observation keeps its later report.
        sqlx::query(
            "INSERT OR REPLACE INTO account_quota_snapshots (window_id, observed_at_ms, \
             observation_id, shape_id, cycle_start_ms, cycle_end_ms, duration_seconds, used_percent, \
             remaining_percent, used_value, limit_value, reset_credits_available) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(window_id)
        .bind(at)
        .bind(observation_id)
        .bind(shape_id)
        .bind(StoredStart::of(window))
        .bind(window.cycle_end_ms)
        .bind(window.duration_seconds)
        .bind(window.used_percent)
        .bind(window.remaining_percent)
        .bind(window.used_value)
        .bind(window.limit_value)
        .bind(window.reset_credits_available)
        .execute(&mut **transaction)
        .await?;
    }
    if applies && observation.inventory_mode == "complete" {
        // Absence is inferred only from complete inventories of the same scope: the first
        // miss marks a window pending, a later one deactivates it.
        let others: Vec<(i64, String, Option<i64>)> = sqlx::query_as(
            "SELECT id, availability, missing_since_ms FROM account_quota_windows WHERE account_key = ? \
             AND provider = ? AND inventory_scope_key = ? AND availability <> 'inactive'",
        )
        .bind(&observation.account_key)
        .bind(&observation.provider)
        .bind(&observation.inventory_scope_key)
        .fetch_all(&mut **transaction)
        .await?;
        for (id, availability, missing_since) in others {
            if reported.contains(&id) {
                continue;
            }
            if availability == "active" {
                sqlx::query(
                    "UPDATE account_quota_windows SET availability = 'pending_absent', missing_since_ms = ? WHERE id = ?",
                )
                .bind(at)
                .bind(id)
                .execute(&mut **transaction)
                .await?;
            } else if missing_since.is_some_and(|since| at > since) {
                sqlx::query(
                    "UPDATE account_quota_windows SET availability = 'inactive', deactivated_at_ms = missing_since_ms WHERE id = ?",
                )
                .bind(id)
                .execute(&mut **transaction)
                .await?;
            }
        }
    }
    if applies && observation.inventory_mode == "delta" {
        for removal in &observation.removals {
            sqlx::query(
                "UPDATE account_quota_windows SET availability = 'inactive', deactivated_at_ms = ? \
                 WHERE account_key = ? AND provider = ? AND provider_window_id = ? \
                 AND (? = '' OR scope_fingerprint = ?)",
            )
            .bind(at)
            .bind(&observation.account_key)
            .bind(&observation.provider)
            .bind(&removal.provider_window_id)
            .bind(&removal.scope_fingerprint)
            .bind(&removal.scope_fingerprint)
            .execute(&mut **transaction)
            .await?;
        }
    }
    Ok(observation.windows.len() as u64)
}

#[derive(sqlx::FromRow)]
struct WindowRow {
    window_id: i64,
    provider: String,
    availability: String,
    generation: i64,
    first_seen_at_ms: i64,
    last_seen_at_ms: i64,
    missing_since_ms: Option<i64>,
    deactivated_at_ms: Option<i64>,
    provider_window_id: String,
    provider_window_aliases_json: String,
    window_kind: String,
    window_mode: String,
    model_scope_kind: String,
    model_scope_key: String,
    model_ids_json: String,
    source: String,
    source_observation_id: String,
    observed_at_ms: i64,
    boundary_accuracy: String,
    cycle_start_ms: Option<i64>,
    cycle_end_ms: Option<i64>,
    duration_seconds: Option<i64>,
    used_percent: Option<f64>,
    remaining_percent: Option<f64>,
    used_value: Option<f64>,
    limit_value: Option<f64>,
    quota_unit: String,
    reset_credits_available: Option<f64>,
    reset_credits_json: String,
    plan_type: String,
    relationship_kind: String,
    container_provider_window_id: String,
}

impl QuotaStore for SqliteStore {
    async fn write_observations(
        &self,
        observations: Vec<Observation>,
        now_ms: i64,
    ) -> Result<Vec<u64>, StoreError> {
        let map = |error| error::map(error, "store quota snapshots");
        let mut transaction = self.writer().begin().await.map_err(map)?;
        let mut ids = TextIds {
            known: Some(self.quota_text_ids()),
            fresh: FastMap::default(),
        };
        let mut inserted = Vec::with_capacity(observations.len());
        for observation in &observations {
            inserted.push(
                apply(&mut transaction, &mut ids, observation, now_ms)
                    .await
                    .map_err(map)?,
            );
        }
        transaction.commit().await.map_err(map)?;
        ids.commit();
        Ok(inserted)
    }

    async fn account_windows(
        &self,
        account_key: &str,
        provider: &str,
    ) -> Result<Vec<StoredWindow>, StoreError> {
        let map = |error| error::map(error, "read quota snapshots");
        let rows: Vec<WindowRow> = sqlx::query_as(concat!(
            "SELECT w.id AS window_id, w.provider, w.availability, w.generation, w.first_seen_at_ms, \
             w.last_seen_at_ms, w.missing_since_ms, w.deactivated_at_ms, h.provider_window_id, \
             h.provider_window_aliases_json, h.window_kind, h.window_mode, h.model_scope_kind, \
             h.model_scope_key, h.model_ids_json, r.source, o.source_observation_id, s.observed_at_ms, \
             h.boundary_accuracy, ",
            cycle_start!(),
            " AS cycle_start_ms, s.cycle_end_ms, s.duration_seconds, s.used_percent, \
             s.remaining_percent, s.used_value, s.limit_value, h.quota_unit, s.reset_credits_available, \
             h.reset_credits_json, h.plan_type, h.relationship_kind, h.container_provider_window_id \
             FROM account_quota_windows w JOIN account_quota_snapshots s \
             ON (s.window_id, s.observed_at_ms, s.observation_id) = ( \
                SELECT window_id, observed_at_ms, observation_id FROM account_quota_snapshots \
                WHERE window_id = w.id ORDER BY observed_at_ms DESC, observation_id DESC LIMIT 1) \
             JOIN account_quota_shapes h ON h.id = s.shape_id \
             JOIN account_quota_observations o ON o.id = s.observation_id \
             JOIN account_quota_observers r ON r.id = o.observer_id \
             WHERE w.account_key = ? AND w.provider = ? ORDER BY w.id",
        ))
        .bind(account_key)
        .bind(provider)
        .fetch_all(self.reader())
        .await
        .map_err(map)?;
        let mut windows = Vec::with_capacity(rows.len());
        for row in rows {
            // The newest report of an earlier cycle, for "previous window" figures.
            let previous: Option<(Option<i64>, i64, Option<f64>)> = match row.cycle_start_ms.or(row.cycle_end_ms) {
                Some(boundary) => sqlx::query_as(concat!(
                    "SELECT ",
                    cycle_start!(),
                    " AS cycle_start_ms, s.cycle_end_ms, s.used_percent \
                     FROM account_quota_snapshots s WHERE window_id = ? AND cycle_end_ms IS NOT NULL \
                     AND cycle_end_ms <= ? AND cycle_end_ms < ? \
                     ORDER BY observed_at_ms DESC, observation_id DESC LIMIT 1",
                ))
                .bind(row.window_id)
                .bind(boundary)
                .bind(row.cycle_end_ms.unwrap_or(i64::MAX))
                .fetch_optional(self.reader())
                .await
                .map_err(map)?,
                None => None,
            };
            windows.push(StoredWindow {
                logical_window_id: row.window_id,
                provider: row.provider,
                input: WindowInput {
                    provider_window_id: row.provider_window_id,
                    provider_window_aliases: decode_list(&row.provider_window_aliases_json),
                    window_kind: row.window_kind,
                    window_mode: row.window_mode,
                    model_scope_kind: row.model_scope_kind,
                    model_scope_key: row.model_scope_key,
                    model_ids: decode_list(&row.model_ids_json),
                    boundary_accuracy: row.boundary_accuracy,
                    cycle_start_ms: row.cycle_start_ms,
                    cycle_end_ms: row.cycle_end_ms,
                    duration_seconds: row.duration_seconds,
                    used_percent: row.used_percent,
                    remaining_percent: row.remaining_percent,
                    used_value: row.used_value,
                    limit_value: row.limit_value,
                    quota_unit: row.quota_unit,
                    reset_credits_available: row.reset_credits_available,
                    reset_credits_json: row.reset_credits_json,
                    plan_type: row.plan_type,
                    relationship_kind: row.relationship_kind,
                    container_provider_window_id: row.container_provider_window_id,
                },
                source: row.source,
                source_observation_id: row.source_observation_id,
                observed_at_ms: row.observed_at_ms,
                availability: row.availability,
                generation: row.generation,
                first_seen_at_ms: row.first_seen_at_ms,
                last_seen_at_ms: row.last_seen_at_ms,
                missing_since_ms: row.missing_since_ms,
                deactivated_at_ms: row.deactivated_at_ms,
                previous_cycle: previous,
            });
        }
        Ok(windows)
    }
}

/// The inventory scope an observation without one belongs to (automation spec §2.2).
fn default_inventory_scope(provider: &str) -> String {
    if provider == "codex" {
        "codex:rate-limits".to_string()
    } else {
        format!("{provider}:quota-windows")
    }
}

/// Reports kept per window and source when a Go database is adopted: the query reads
/// at most the 8 newest of each, so older ones would never be shown.
const ADOPTED_PER_WINDOW: i64 = 8;

/// Replays the quota snapshots of an adopted Go database (moved aside as
/// `legacy_go_account_quota_snapshots`) as observations, oldest first, so the
/// windows, their newest reports and the previous cycles show as they did; then
/// drops that table. Only the newest reports of each window and source are kept, and
/// every replayed observation is `partial`: absence is never inferred from them.
pub(crate) async fn adopt_go_snapshots(
    transaction: &mut Transaction<'_, Sqlite>,
    now_ms: i64,
) -> Result<u64, sqlx::Error> {
    let exists: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' \
         AND name = 'legacy_go_account_quota_snapshots'",
    )
    .fetch_one(&mut **transaction)
    .await?;
    if exists == 0 {
        return Ok(0);
    }
    let rows = sqlx::query(
        "SELECT account_key, provider, provider_window_id, window_kind, window_mode, model_scope_kind, \
         coalesce(model_scope_key, '') AS model_scope_key, coalesce(model_ids_json, '') AS model_ids_json, \
         source, coalesce(source_observation_id, '') AS source_observation_id, observed_at_ms, \
         boundary_accuracy, cycle_start_ms, cycle_end_ms, duration_seconds, used_percent, \
         remaining_percent, used_value, limit_value, coalesce(quota_unit, '') AS quota_unit, \
         CAST(reset_credits_available AS REAL) AS reset_credits_available, \
         coalesce(reset_credits_json, '') AS reset_credits_json, coalesce(plan_type, '') AS plan_type \
         FROM (SELECT *, row_number() OVER (PARTITION BY account_key, provider, provider_window_id, \
         model_scope_kind, coalesce(model_scope_key, ''), coalesce(model_ids_json, ''), source \
         ORDER BY observed_at_ms DESC, id DESC) AS newest FROM legacy_go_account_quota_snapshots \
         WHERE trim(account_key) <> '' AND trim(provider) <> '') \
         WHERE newest <= ? ORDER BY observed_at_ms, account_key, provider, source, source_observation_id, id",
    )
    .bind(ADOPTED_PER_WINDOW)
    .fetch_all(&mut **transaction)
    .await?;
    let mut observations: Vec<Observation> = Vec::new();
    for row in &rows {
        use sqlx::Row as _;
        let account_key: String = row.try_get("account_key")?;
        let provider: String = row.try_get("provider")?;
        let source: String = row.try_get("source")?;
        let source_observation_id: String = row.try_get("source_observation_id")?;
        let observed_at_ms: i64 = row.try_get("observed_at_ms")?;
        let window = WindowInput {
            provider_window_id: row.try_get("provider_window_id")?,
            window_kind: row.try_get("window_kind")?,
            window_mode: row.try_get("window_mode")?,
            model_scope_kind: row.try_get("model_scope_kind")?,
            model_scope_key: row.try_get("model_scope_key")?,
            model_ids: decode_list(&row.try_get::<String, _>("model_ids_json")?),
            boundary_accuracy: row.try_get("boundary_accuracy")?,
            cycle_start_ms: row.try_get("cycle_start_ms")?,
            cycle_end_ms: row.try_get("cycle_end_ms")?,
            duration_seconds: row.try_get("duration_seconds")?,
            used_percent: row.try_get("used_percent")?,
            remaining_percent: row.try_get("remaining_percent")?,
            used_value: row.try_get("used_value")?,
            limit_value: row.try_get("limit_value")?,
            quota_unit: row.try_get("quota_unit")?,
            reset_credits_available: row.try_get("reset_credits_available")?,
            reset_credits_json: row.try_get("reset_credits_json")?,
            plan_type: row.try_get("plan_type")?,
            ..WindowInput::default()
        };
        match observations.last_mut() {
            Some(last)
                if last.account_key == account_key
                    && last.provider == provider
                    && last.source == source
                    && last.source_observation_id == source_observation_id
                    && last.observed_at_ms == observed_at_ms =>
            {
                last.windows.push(window);
            }
            _ => observations.push(Observation {
                inventory_scope_key: default_inventory_scope(&provider),
                account_key,
                provider,
                source,
                source_observation_id,
                inventory_mode: "partial".into(),
                observed_at_ms,
                windows: vec![window],
                removals: Vec::new(),
            }),
        }
    }
    let mut ids = TextIds {
        known: None,
        fresh: FastMap::default(),
    };
    let mut inserted = 0;
    for observation in &observations {
        inserted += apply(transaction, &mut ids, observation, now_ms).await?;
    }
    sqlx::query("DROP TABLE legacy_go_account_quota_snapshots")
        .execute(&mut **transaction)
        .await?;
    Ok(inserted)
}
