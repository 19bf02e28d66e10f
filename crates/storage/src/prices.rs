//! Model prices, their tiers and API key aliases ([`PriceStore`]), and the cached
//! price book the analytics read side prices token sums with.
//!
//! Every write bumps a generation counter after it commits; the cached book is
//! rebuilt on the next read when its generation is older, so a saved price shows in
//! the very next answer and a slow reader can never put a stale book back.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use cpamp_domain::StoreError;
use cpamp_domain::analytics::cost::PriceBook;
use cpamp_domain::analytics::query::RawEvent;
use cpamp_domain::prices::aliases::{self, AliasError, AliasPut, ApiKeyAlias};
use cpamp_domain::prices::{ContextTier, ModelPrice, PriceStore, Rate, Rates, ServiceTierRule};
use sqlx::{Row, SqliteConnection};

use crate::{SqliteStore, error};

/// The cached book and the write generation it was built at.
#[derive(Default)]
pub(crate) struct PriceCache {
    generation: AtomicU64,
    book: RwLock<Option<(u64, PriceBook)>>,
}

impl PriceCache {
    fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

const RATE_COLUMNS: &str = "prompt_per_1m, completion_per_1m, cache_per_1m, cache_read_per_1m, \
     cache_creation_per_1m, prompt_configured, completion_configured, cache_read_configured, \
     cache_creation_configured";

impl SqliteStore {
    /// The current price book (cached until the next price write).
    pub(crate) async fn cached_price_book(&self) -> Result<PriceBook, StoreError> {
        let cache = &self.inner.prices;
        let generation = cache.generation.load(Ordering::SeqCst);
        if let Ok(guard) = cache.book.read()
            && let Some((built, book)) = guard.as_ref()
            && *built == generation
        {
            return Ok(book.clone());
        }
        let prices = self.prices().await?;
        let book = PriceBook::new(prices.into_iter().collect::<HashMap<_, _>>());
        if let Ok(mut guard) = cache.book.write()
            && cache.generation.load(Ordering::SeqCst) == generation
        {
            *guard = Some((generation, book.clone()));
        }
        Ok(book)
    }
}

impl PriceStore for SqliteStore {
    async fn prices(&self) -> Result<BTreeMap<String, ModelPrice>, StoreError> {
        let mut connection = self
            .reader()
            .acquire()
            .await
            .map_err(|error| error::map(error, "read prices"))?;
        read_prices(&mut connection).await
    }

    async fn replace_prices(&self, prices: Vec<(String, ModelPrice)>) -> Result<(), StoreError> {
        let mut transaction = self
            .writer()
            .begin()
            .await
            .map_err(|error| error::map(error, "begin price save"))?;
        sqlx::query("DELETE FROM model_prices")
            .execute(&mut *transaction)
            .await
            .map_err(|error| error::map(error, "clear prices"))?;
        for (model, price) in &prices {
            write_price(&mut transaction, model, price).await?;
        }
        transaction
            .commit()
            .await
            .map_err(|error| error::map(error, "commit prices"))?;
        self.inner.prices.invalidate();
        Ok(())
    }

    async fn upsert_prices(
        &self,
        prices: Vec<(String, ModelPrice)>,
    ) -> Result<Vec<String>, StoreError> {
        let mut transaction = self
            .writer()
            .begin()
            .await
            .map_err(|error| error::map(error, "begin price sync"))?;
        let mut kept = Vec::new();
        for (model, price) in &prices {
            let pinned: Option<i64> =
                sqlx::query_scalar("SELECT pinned FROM model_prices WHERE model = ?")
                    .bind(model)
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(|error| error::map(error, "read price"))?;
            if pinned.unwrap_or(0) != 0 {
                kept.push(model.clone());
                continue;
            }
            sqlx::query("DELETE FROM model_prices WHERE model = ?")
                .bind(model)
                .execute(&mut *transaction)
                .await
                .map_err(|error| error::map(error, "replace price"))?;
            write_price(&mut transaction, model, price).await?;
        }
        transaction
            .commit()
            .await
            .map_err(|error| error::map(error, "commit price sync"))?;
        self.inner.prices.invalidate();
        Ok(kept)
    }

    async fn api_key_aliases(&self) -> Result<Vec<ApiKeyAlias>, StoreError> {
        let mut connection = self
            .reader()
            .acquire()
            .await
            .map_err(|error| error::map(error, "read API key aliases"))?;
        read_aliases(&mut connection).await
    }

    async fn put_api_key_aliases(
        &self,
        request: AliasPut,
        now_ms: i64,
    ) -> Result<Result<(), AliasError>, StoreError> {
        let mut transaction = self
            .writer()
            .begin()
            .await
            .map_err(|error| error::map(error, "begin alias save"))?;
        let stored = read_aliases(&mut transaction).await?;
        let plan = match aliases::plan(&stored, &request, now_ms) {
            Ok(plan) => plan,
            Err(refused) => return Ok(Err(refused)),
        };
        for hash in &plan.delete {
            sqlx::query("DELETE FROM api_key_aliases WHERE api_key_hash = ?")
                .bind(hash)
                .execute(&mut *transaction)
                .await
                .map_err(|error| error::map(error, "delete orphan alias"))?;
        }
        for row in &plan.upsert {
            sqlx::query(
                "INSERT INTO api_key_aliases (api_key_hash, alias, alias_key, updated_at_ms) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (api_key_hash) DO UPDATE SET alias = excluded.alias, \
                 alias_key = excluded.alias_key, updated_at_ms = excluded.updated_at_ms",
            )
            .bind(&row.api_key_hash)
            .bind(&row.alias)
            .bind(aliases::alias_key(&row.alias))
            .bind(row.updated_at_ms)
            .execute(&mut *transaction)
            .await
            .map_err(|error| match error::map(error, "save alias") {
                // The plan rules out duplicates; the unique index is the last guard.
                StoreError::Conflict(_) => StoreError::Conflict(format!(
                    "api key alias already exists: {:?}",
                    row.alias
                )),
                other => other,
            })?;
        }
        transaction
            .commit()
            .await
            .map_err(|error| error::map(error, "commit aliases"))?;
        Ok(Ok(()))
    }

    async fn event_by_hash(&self, event_hash: &str) -> Result<Option<RawEvent>, StoreError> {
        match hex::decode(event_hash.trim()) {
            Ok(hash) if hash.len() == 32 => SqliteStore::event_by_hash(self, &hash).await,
            _ => Ok(None),
        }
    }

    async fn delete_api_key_alias(&self, api_key_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM api_key_aliases WHERE api_key_hash = ?")
            .bind(api_key_hash)
            .execute(self.writer())
            .await
            .map(|_| ())
            .map_err(|error| error::map(error, "delete alias"))
    }
}

async fn read_aliases(connection: &mut SqliteConnection) -> Result<Vec<ApiKeyAlias>, StoreError> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT api_key_hash, alias, updated_at_ms FROM api_key_aliases \
         ORDER BY alias COLLATE NOCASE, api_key_hash",
    )
    .fetch_all(connection)
    .await
    .map_err(|error| error::map(error, "read API key aliases"))?;
    Ok(rows
        .into_iter()
        .map(|(api_key_hash, alias, updated_at_ms)| ApiKeyAlias {
            api_key_hash,
            alias,
            updated_at_ms,
        })
        .collect())
}

fn rates_of(row: &sqlx::sqlite::SqliteRow, cache_flag: bool) -> Result<Rates, StoreError> {
    let value = |name: &str| -> Result<f64, StoreError> {
        row.try_get::<f64, _>(name)
            .map_err(|error| error::map(error, "read price rate"))
    };
    let flag = |name: &str| -> bool { row.try_get::<i64, _>(name).unwrap_or(0) != 0 };
    Ok(Rates {
        prompt: Rate {
            value: value("prompt_per_1m")?,
            flag: flag("prompt_configured"),
        },
        completion: Rate {
            value: value("completion_per_1m")?,
            flag: flag("completion_configured"),
        },
        cache: Rate {
            value: value("cache_per_1m")?,
            flag: cache_flag && flag("cache_configured"),
        },
        cache_read: Rate {
            value: value("cache_read_per_1m")?,
            flag: flag("cache_read_configured"),
        },
        cache_creation: Rate {
            value: value("cache_creation_per_1m")?,
            flag: flag("cache_creation_configured"),
        },
    })
}

pub(crate) async fn read_prices(
    connection: &mut SqliteConnection,
) -> Result<BTreeMap<String, ModelPrice>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT model, {RATE_COLUMNS}, source, source_model_id, raw_json, pinned, updated_at_ms, synced_at_ms \
         FROM model_prices"
    )))
    .fetch_all(&mut *connection)
    .await
    .map_err(|error| error::map(error, "read prices"))?;
    let mut prices = BTreeMap::new();
    for row in &rows {
        let text = |name: &str| row.try_get::<String, _>(name).unwrap_or_default();
        prices.insert(
            text("model"),
            ModelPrice {
                rates: rates_of(row, false)?,
                context_tiers: Vec::new(),
                service_tiers: Vec::new(),
                source: text("source"),
                source_model_id: text("source_model_id"),
                raw_json: text("raw_json"),
                pinned: row.try_get::<i64, _>("pinned").unwrap_or(0) != 0,
                updated_at_ms: row.try_get("updated_at_ms").unwrap_or(0),
                synced_at_ms: row.try_get("synced_at_ms").ok().flatten(),
            },
        );
    }
    let tiers = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT model, threshold_tokens, {RATE_COLUMNS}, cache_configured FROM model_price_context_tiers \
         ORDER BY model, threshold_tokens"
    )))
    .fetch_all(&mut *connection)
    .await
    .map_err(|error| error::map(error, "read context tiers"))?;
    for row in &tiers {
        let model: String = row.try_get("model").unwrap_or_default();
        if let Some(price) = prices.get_mut(&model) {
            price.context_tiers.push(ContextTier {
                threshold_tokens: row.try_get("threshold_tokens").unwrap_or(0),
                rates: rates_of(row, true)?,
            });
        }
    }
    let rules = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT model, mode, service_tier, {RATE_COLUMNS}, cache_configured FROM model_price_service_tiers \
         ORDER BY model, mode, service_tier"
    )))
    .fetch_all(&mut *connection)
    .await
    .map_err(|error| error::map(error, "read service tiers"))?;
    for row in &rules {
        let model: String = row.try_get("model").unwrap_or_default();
        if let Some(price) = prices.get_mut(&model) {
            price.service_tiers.push(ServiceTierRule {
                mode: row.try_get("mode").unwrap_or_default(),
                service_tier: row.try_get("service_tier").unwrap_or_default(),
                rates: rates_of(row, true)?,
            });
        }
    }
    Ok(prices)
}

fn flag(rate: Rate) -> i64 {
    i64::from(rate.flag)
}

async fn write_price(
    connection: &mut SqliteConnection,
    model: &str,
    price: &ModelPrice,
) -> Result<(), StoreError> {
    bind_rates(
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO model_prices (model, {RATE_COLUMNS}, source, source_model_id, raw_json, pinned, \
             updated_at_ms, synced_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )))
        .bind(model),
        &price.rates,
        false,
    )
    .bind(&price.source)
    .bind(&price.source_model_id)
    .bind(&price.raw_json)
    .bind(i64::from(price.pinned))
    .bind(price.updated_at_ms)
    .bind(price.synced_at_ms)
    .execute(&mut *connection)
    .await
    .map_err(|error| error::map(error, "save price"))?;
    for tier in &price.context_tiers {
        bind_rates(
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO model_price_context_tiers (model, threshold_tokens, {RATE_COLUMNS}, cache_configured) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            )))
            .bind(model)
            .bind(tier.threshold_tokens),
            &tier.rates,
            true,
        )
        .execute(&mut *connection)
        .await
        .map_err(|error| error::map(error, "save context tier"))?;
    }
    for rule in &price.service_tiers {
        bind_rates(
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO model_price_service_tiers (model, mode, service_tier, {RATE_COLUMNS}, cache_configured) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            )))
            .bind(model)
            .bind(&rule.mode)
            .bind(&rule.service_tier),
            &rule.rates,
            true,
        )
        .execute(&mut *connection)
        .await
        .map_err(|error| error::map(error, "save service tier"))?;
    }
    Ok(())
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// Binds the rates in [`RATE_COLUMNS`] order, then `cache_configured` for tiers and
/// rules (a base price has no such column).
fn bind_rates<'q>(query: Query<'q>, rates: &Rates, cache_flag: bool) -> Query<'q> {
    let query = query
        .bind(rates.prompt.value)
        .bind(rates.completion.value)
        .bind(rates.cache.value)
        .bind(rates.cache_read.value)
        .bind(rates.cache_creation.value)
        .bind(flag(rates.prompt))
        .bind(flag(rates.completion))
        .bind(flag(rates.cache_read))
        .bind(flag(rates.cache_creation));
    if cache_flag {
        query.bind(flag(rates.cache))
    } else {
        query
    }
}
