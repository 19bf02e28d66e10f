//! Model prices: `GET|PUT /v0/management/model-prices`,
//! `GET /model-prices/usage-summary`, `POST /model-prices/sync` and
//! `GET /model-prices/explain?event_hash=` (shapes of analytics.md §5; the price
//! JSON gains `pinned`). Trailing slashes are trimmed; other methods and sub-paths
//! answer 405 through the route-ownership table.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use cpamp_domain::analytics::explain::explain;
use cpamp_domain::analytics::query::{GroupRequest, Scope};
use cpamp_domain::analytics::time::DAY_MS;
use cpamp_domain::prices::matching::Candidate;
use cpamp_domain::prices::sync::plan;
use cpamp_domain::prices::{ContextTier, ModelPrice, Rate, Rates, ServiceTierRule, validate};
use serde::{Deserialize, Serialize};

use super::analytics::{json, now_ms};
use crate::auth::AdminAuth;
use crate::error::{ApiError, ErrorCode};
use crate::price_sync::{PriceSync, Route};
use crate::state::{AppState, Store};

/// Largest accepted PUT body (a synced book with raw metadata runs to a few MiB).
const MAX_PRICES_BODY: usize = 32 * 1024 * 1024;

pub(crate) fn configure<S: Store>(config: &mut web::ServiceConfig) {
    config.service(
        super::resource("/v0/management/model-prices")
            .app_data(web::PayloadConfig::new(MAX_PRICES_BODY))
            .route(web::get().to(list::<S>))
            .route(web::put().to(replace::<S>)),
    );
    config.service(
        super::resource("/v0/management/model-prices/usage-summary")
            .route(web::get().to(usage_summary::<S>)),
    );
    config.service(
        super::resource("/v0/management/model-prices/sync").route(web::post().to(sync::<S>)),
    );
    config.service(
        super::resource("/v0/management/model-prices/explain")
            .route(web::get().to(explain_event::<S>)),
    );
}

// ---------------------------------------------------------------------------
// Wire shapes
// ---------------------------------------------------------------------------

fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// The rates of a context tier or service-tier rule on the wire.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RatesJson {
    /// `prompt`: uncached input, per million tokens.
    #[serde(default)]
    pub prompt: f64,
    /// `completion`: output (reasoning included), per million tokens.
    #[serde(default)]
    pub completion: f64,
    /// `cache`: the legacy cached-input rate, per million tokens.
    #[serde(default)]
    pub cache: f64,
    /// `cacheRead`: cache reads, per million tokens.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_read: f64,
    /// `cacheCreation`: cache writes, per million tokens.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_creation: f64,
    /// `promptConfigured`: `prompt` was given (so an explicit 0 stays 0).
    #[serde(default, skip_serializing_if = "is_false")]
    pub prompt_configured: bool,
    /// `completionConfigured`: `completion` was given.
    #[serde(default, skip_serializing_if = "is_false")]
    pub completion_configured: bool,
    /// `cacheConfigured`: `cache` was given.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cache_configured: bool,
    /// `cacheReadConfigured`: `cacheRead` was given (else it falls back, see the price docs).
    #[serde(default, skip_serializing_if = "is_false")]
    pub cache_read_configured: bool,
    /// `cacheCreationConfigured`: `cacheCreation` was given (else the prompt rate applies).
    #[serde(default, skip_serializing_if = "is_false")]
    pub cache_creation_configured: bool,
}

impl RatesJson {
    fn to_rates(&self) -> Rates {
        Rates {
            prompt: Rate {
                value: self.prompt,
                flag: self.prompt_configured,
            },
            completion: Rate {
                value: self.completion,
                flag: self.completion_configured,
            },
            cache: Rate {
                value: self.cache,
                flag: self.cache_configured,
            },
            cache_read: Rate {
                value: self.cache_read,
                flag: self.cache_read_configured,
            },
            cache_creation: Rate {
                value: self.cache_creation,
                flag: self.cache_creation_configured,
            },
        }
    }

    fn of(rates: &Rates) -> RatesJson {
        RatesJson {
            prompt: rates.prompt.value,
            completion: rates.completion.value,
            cache: rates.cache.value,
            cache_read: rates.cache_read.value,
            cache_creation: rates.cache_creation.value,
            prompt_configured: rates.prompt.flag,
            completion_configured: rates.completion.flag,
            cache_configured: rates.cache.flag,
            cache_read_configured: rates.cache_read.flag,
            cache_creation_configured: rates.cache_creation.flag,
        }
    }
}

/// A context tier on the wire: rates for bands above `thresholdTokens` of input.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextTierJson {
    /// `thresholdTokens`: the tier applies above this many input tokens.
    #[serde(default)]
    pub threshold_tokens: i64,
    /// The tier's rates, over the base rates.
    #[serde(flatten)]
    pub rates: RatesJson,
}

/// A service-tier rule on the wire: rates for requests whose service tier equals
/// `mode` or `serviceTier`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTierJson {
    /// `mode`: a tier name the rule matches (models.dev's `fast` also matches `priority`).
    #[serde(default)]
    pub mode: String,
    /// `serviceTier`: the other tier name the rule matches.
    #[serde(default)]
    pub service_tier: String,
    /// The rule's rates.
    #[serde(flatten)]
    pub rates: RatesJson,
}

/// One price on the wire (analytics.md §5.1 plus `pinned`). The base rates have no
/// `cacheConfigured` (the base `cache` rate counts as configured when above 0).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PriceJson {
    /// The base rates.
    #[serde(flatten)]
    pub rates: RatesJson,
    /// `source`: `models.dev`, `litellm`, `openrouter`, `sync` or `manual`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// `sourceModelId`: the model's id at the source.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_model_id: String,
    /// `rawJson`: the source's record, as fetched.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub raw_json: String,
    /// `contextTiers`, by threshold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_tiers: Vec<ContextTierJson>,
    /// `serviceTiers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_tiers: Vec<ServiceTierJson>,
    /// `updatedAtMs`: Unix ms of the last change.
    #[serde(default, skip_serializing_if = "is_zero_ms")]
    pub updated_at_ms: i64,
    /// `syncedAtMs`: Unix ms of the last sync that set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_at_ms: Option<i64>,
    /// Never changed by a sync. Absent on input: pinned when the source is manual.
    #[serde(default)]
    pub pinned: Option<bool>,
}

fn is_zero_ms(value: &i64) -> bool {
    *value == 0
}

impl PriceJson {
    /// The wire form of a stored price.
    pub fn of(price: &ModelPrice) -> PriceJson {
        PriceJson {
            rates: RatesJson::of(&base_rates(price.rates)),
            source: price.source.clone(),
            source_model_id: price.source_model_id.clone(),
            raw_json: price.raw_json.clone(),
            context_tiers: price
                .context_tiers
                .iter()
                .map(|tier| ContextTierJson {
                    threshold_tokens: tier.threshold_tokens,
                    rates: RatesJson::of(&tier.rates),
                })
                .collect(),
            service_tiers: price
                .service_tiers
                .iter()
                .map(|rule| ServiceTierJson {
                    mode: rule.mode.clone(),
                    service_tier: rule.service_tier.clone(),
                    rates: RatesJson::of(&rule.rates),
                })
                .collect(),
            updated_at_ms: price.updated_at_ms,
            synced_at_ms: price.synced_at_ms,
            pinned: Some(price.pinned),
        }
    }

    /// The domain price; `pinned` defaults to "the source is manual".
    pub fn to_price(&self) -> ModelPrice {
        ModelPrice {
            rates: base_rates(self.rates.to_rates()),
            context_tiers: self
                .context_tiers
                .iter()
                .map(|tier| ContextTier {
                    threshold_tokens: tier.threshold_tokens,
                    rates: tier.rates.to_rates(),
                })
                .collect(),
            service_tiers: self
                .service_tiers
                .iter()
                .map(|rule| ServiceTierRule {
                    mode: rule.mode.clone(),
                    service_tier: rule.service_tier.clone(),
                    rates: rule.rates.to_rates(),
                })
                .collect(),
            source: self.source.clone(),
            source_model_id: self.source_model_id.clone(),
            raw_json: self.raw_json.clone(),
            pinned: self
                .pinned
                .unwrap_or_else(|| ModelPrice::is_manual_source(&self.source)),
            updated_at_ms: self.updated_at_ms,
            synced_at_ms: self.synced_at_ms,
        }
    }
}

/// Base rates keep no flag for the legacy cache rate.
fn base_rates(rates: Rates) -> Rates {
    Rates {
        cache: Rate {
            flag: false,
            ..rates.cache
        },
        ..rates
    }
}

/// `{"prices": {...}}` with every price in wire form.
pub fn book_json(prices: &BTreeMap<String, ModelPrice>) -> BTreeMap<&str, PriceJson> {
    prices
        .iter()
        .map(|(model, price)| (model.as_str(), PriceJson::of(price)))
        .collect()
}

#[derive(Serialize)]
struct PricesResponse<'a> {
    prices: BTreeMap<&'a str, PriceJson>,
}

#[derive(Deserialize)]
struct PricesBody {
    #[serde(default)]
    prices: Option<BTreeMap<String, PriceJson>>,
}

// ---------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------

async fn list<S: Store>(
    _auth: AdminAuth,
    state: web::Data<AppState<S>>,
) -> Result<HttpResponse, ApiError> {
    let prices = state.store.prices().await?;
    json(&PricesResponse {
        prices: book_json(&prices),
    })
}

/// Parses and validates a whole book; the first bad price names itself.
pub fn parse_book(body: &[u8], now_ms: i64) -> Result<Vec<(String, ModelPrice)>, ApiError> {
    let body: PricesBody = super::setup::decode_body(body)?;
    let prices = body
        .prices
        .ok_or_else(|| ApiError::bad_request(ErrorCode::PricesRequired, "prices are required"))?;
    let mut book = Vec::with_capacity(prices.len());
    let mut seen = std::collections::BTreeSet::new();
    for (model, price) in prices {
        let price = ModelPrice {
            updated_at_ms: now_ms,
            ..price.to_price()
        };
        let (key, price) = validate(&model, price)
            .map_err(|error| ApiError::bad_request(ErrorCode::RequestFailed, error.to_string()))?;
        if !seen.insert(key.clone()) {
            return Err(ApiError::bad_request(
                ErrorCode::RequestFailed,
                format!("price of {key} is given twice (keys are trimmed)"),
            ));
        }
        book.push((key, price));
    }
    Ok(book)
}

async fn replace<S: Store>(
    _auth: AdminAuth,
    state: web::Data<AppState<S>>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let book = parse_book(&body, now_ms())?;
    state.store.replace_prices(book).await?;
    list(_auth, state).await
}

#[derive(Serialize)]
struct UsageModel {
    model: String,
    calls: i64,
    requested_calls: i64,
    resolved_calls: i64,
}

#[derive(Serialize)]
struct UsageSummary {
    sampled_events: i64,
    total_events: i64,
    truncated: bool,
    models: Vec<UsageModel>,
}

/// Calls per model over all stored events, from the rollups (no event is read):
/// each analytics model's calls, plus each resolved model that differs from it.
async fn usage_summary<S: Store>(
    _auth: AdminAuth,
    state: web::Data<AppState<S>>,
) -> Result<HttpResponse, ApiError> {
    let rows = state
        .store
        .groups(GroupRequest {
            scope: Scope::time_only(0, now_ms().saturating_add(DAY_MS)),
            identity: false,
            timeline: None,
        })
        .await?;
    let mut counts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut total = 0_i64;
    for row in &rows {
        let calls = row.metrics.calls;
        total = total.saturating_add(calls);
        if !row.model.is_empty() {
            let entry = counts.entry(row.model.to_string()).or_default();
            entry.0 = entry.0.saturating_add(calls);
        }
        if !row.billing_model.is_empty() && row.billing_model != row.model {
            let entry = counts.entry(row.billing_model.to_string()).or_default();
            entry.1 = entry.1.saturating_add(calls);
        }
    }
    let mut models: Vec<UsageModel> = counts
        .into_iter()
        .map(|(model, (requested, resolved))| UsageModel {
            model,
            calls: requested.saturating_add(resolved),
            requested_calls: requested,
            resolved_calls: resolved,
        })
        .collect();
    models.sort_by(|left, right| {
        right
            .calls
            .cmp(&left.calls)
            .then_with(|| left.model.cmp(&right.model))
    });
    json(&UsageSummary {
        sampled_events: total,
        total_events: total,
        truncated: false,
        models,
    })
}

#[derive(Deserialize, Default)]
struct SyncBody {
    #[serde(default)]
    models: Option<Vec<String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CandidateJson {
    source_model_id: String,
    score: f64,
    reason: &'static str,
    price: PriceJson,
}

#[derive(Serialize)]
struct CandidateSet {
    model: String,
    candidates: Vec<CandidateJson>,
}

#[derive(Serialize)]
struct SourceResult {
    source: String,
    models: usize,
    skipped: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SyncResult<'a> {
    source: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sources: Vec<String>,
    imported: usize,
    skipped: usize,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    matched: BTreeMap<String, PriceJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    candidates: Vec<CandidateSet>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unmatched: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    preserved: Vec<String>,
    /// Pinned prices a match would have replaced (kept as they are).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pinned: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    proxy_used: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    source_results: Vec<SourceResult>,
    prices: BTreeMap<&'a str, PriceJson>,
}

/// How long reading CPA's `proxy-url` may take before the sync goes direct.
const PROXY_LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The proxy CPA itself uses (`proxy-url` of its config), as the Go server did; direct
/// when there is no CPA connection or CPA does not answer in time. An invalid proxy URL
/// fails the sync (502) rather than silently going around the proxy.
async fn cpa_proxy<S: Store>(state: &AppState<S>) -> Result<Route, ApiError> {
    let Some(connection) = crate::connection::resolve(state).await? else {
        return Ok(Route::Direct);
    };
    let proxy_url = crate::cpa_client::proxy_url(&connection, PROXY_LOOKUP_TIMEOUT)
        .await
        .unwrap_or_default();
    Route::parse(&proxy_url).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::ModelPriceSyncFailed,
            format!("model price sync failed; existing prices were not changed: {error}"),
        )
    })
}

fn candidate_json(candidate: Candidate) -> CandidateJson {
    CandidateJson {
        source_model_id: candidate.source_model_id,
        score: candidate.score,
        reason: candidate.reason,
        price: PriceJson::of(&candidate.price),
    }
}

async fn sync<S: Store>(
    _auth: AdminAuth,
    state: web::Data<AppState<S>>,
    sources: web::Data<PriceSync>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: SyncBody = if body.iter().all(u8::is_ascii_whitespace) {
        SyncBody::default()
    } else {
        super::setup::decode_body(&body)?
    };
    let models = body.models.unwrap_or_default();
    let _running = sources.running.lock().await;
    let now = now_ms();
    let route = cpa_proxy(&state).await?;
    let fetched = sources.fetch(&models, now, &route).await;
    if fetched.succeeded.is_empty() {
        let failures: Vec<String> = fetched
            .outcomes
            .iter()
            .map(|outcome| {
                format!(
                    "{}: {}",
                    outcome.source,
                    outcome.error.as_deref().unwrap_or("failed")
                )
            })
            .collect();
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::ModelPriceSyncFailed,
            format!(
                "model price sync failed; existing prices were not changed: {}",
                failures.join("; ")
            ),
        ));
    }
    let stored = state.store.prices().await?;
    let plan = plan(&fetched.catalog, &models, &fetched.outcomes, &stored, now);
    let mut kept = state.store.upsert_prices(plan.upsert.clone()).await?;
    let imported = plan.upsert.len() - kept.len();
    let mut pinned = plan.pinned;
    pinned.append(&mut kept);
    pinned.sort();
    pinned.dedup();
    let prices = state.store.prices().await?;
    let source = match fetched.succeeded.as_slice() {
        [only] => only.clone(),
        [] => String::new(),
        _ => "multi".to_string(),
    };
    json(&SyncResult {
        source,
        sources: fetched.succeeded,
        imported,
        skipped: fetched.skipped + plan.invalid,
        matched: plan
            .matched
            .iter()
            .filter(|(model, _)| !pinned.contains(model))
            .map(|(model, price)| (model.clone(), PriceJson::of(price)))
            .collect(),
        candidates: plan
            .candidates
            .into_iter()
            .map(|(model, candidates)| CandidateSet {
                model,
                candidates: candidates.into_iter().map(candidate_json).collect(),
            })
            .collect(),
        unmatched: plan.unmatched,
        preserved: plan.preserved,
        pinned,
        proxy_used: !route.is_direct(),
        source_results: fetched
            .outcomes
            .into_iter()
            .map(|outcome| SourceResult {
                source: outcome.source,
                models: outcome.models,
                skipped: outcome.skipped,
                error: outcome.error,
            })
            .collect(),
        prices: book_json(&prices),
    })
}

#[derive(Deserialize)]
struct ExplainQuery {
    #[serde(default)]
    event_hash: String,
}

async fn explain_event<S: Store>(
    _auth: AdminAuth,
    state: web::Data<AppState<S>>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = web::Query::<ExplainQuery>::from_query(request.query_string())
        .map_err(|error| ApiError::bad_request(ErrorCode::RequestFailed, error.to_string()))?;
    let hash = query.event_hash.trim().to_ascii_lowercase();
    if hash.len() != 64 || !hash.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(
            ErrorCode::RequestFailed,
            "event_hash must be the 64 hexadecimal characters of an event's hash (events carry it as event_hash)",
        ));
    }
    let event = state.store.event_by_hash(&hash).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no stored event has the hash {hash}"),
        )
    })?;
    let book = state.store.price_book().await?;
    json(&explain(&book, &event))
}
