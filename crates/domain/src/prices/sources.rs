//! The three price sources' JSON formats, turned into price entries (USD per 1M
//! tokens).
//!
//! - models.dev: `{providers:{pid:{models:{mid:{cost:{…}}}}}, models:{canonical ids}}`
//!   (or the older root `{pid:{models:{…}}}`); costs are already per 1M tokens; the
//!   entry key is `pid/mid`. `cost.tiers[]` of type `context` become context tiers
//!   (one invalid tier drops them all), `experimental.modes.fast.cost` becomes the
//!   service-tier rule `fast`/`priority`. Reasoning prices and unknown tiers or modes
//!   stay in `rawJson` only.
//! - LiteLLM: `{id:{input_cost_per_token, output_cost_per_token, cache_read_…, cache_creation_…}}`, per token.
//! - OpenRouter: `{data:[{id, pricing:{prompt, completion, input_cache_read, input_cache_write}}]}`,
//!   per token, numbers or numeric strings.
//!
//! An entry without any of the four rates is skipped and counted.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value};

use super::{ContextTier, ModelPrice, Rate, Rates, ServiceTierRule, source, validate};

/// One price a source offers, under the source's own key.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceEntry {
    /// The source's own key for the model.
    pub key: String,
    /// `source` and `source_model_id` are set.
    pub price: ModelPrice,
}

/// models.dev's canonical catalog: which provider entry is the model's official one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Canonical {
    /// Lowercased canonical id, or lowercased unique tail after `/` → canonical id.
    pub by_identity: HashMap<String, String>,
    /// Lowercased provider entries (`pid/mid`) that are a canonical model themselves.
    pub official: HashSet<String>,
}

impl Canonical {
    /// models.dev's canonical id of `model`, when it is known and unambiguous.
    pub fn canonical_id(&self, model: &str) -> Option<&str> {
        let model = model.trim();
        if model.is_empty() {
            return None;
        }
        self.by_identity
            .get(&model.to_lowercase())
            .map(String::as_str)
    }

    /// Whether `source_model_id` (`provider/model`) is a canonical model's official entry.
    pub fn is_official(&self, source_model_id: &str) -> bool {
        self.official
            .contains(&source_model_id.trim().to_lowercase())
    }

    /// Adds another catalog's identities; an identity two catalogs disagree on is dropped.
    pub fn merge(&mut self, other: &Canonical) {
        for (identity, canonical) in &other.by_identity {
            match self.by_identity.get(identity) {
                Some(existing) if !existing.eq_ignore_ascii_case(canonical) => {
                    self.by_identity.remove(identity);
                }
                _ => {
                    self.by_identity.insert(identity.clone(), canonical.clone());
                }
            }
        }
        self.official.extend(other.official.iter().cloned());
    }

    /// No identities are known.
    pub fn is_empty(&self) -> bool {
        self.by_identity.is_empty()
    }
}

/// What one source answered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedSource {
    /// Sorted by key.
    pub entries: Vec<SourceEntry>,
    /// Entries without a usable price.
    pub skipped: usize,
    /// Canonical identities the source carries (models.dev only).
    pub canonical: Canonical,
}

/// Why a source's answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// Parses the body of `source` (one of [`source::SYNC_ORDER`]).
pub fn parse(source_name: &str, body: &[u8], now_ms: i64) -> Result<ParsedSource, SourceError> {
    let root: Value = serde_json::from_slice(body)
        .map_err(|error| SourceError(format!("{source_name} answered invalid JSON: {error}")))?;
    let parsed = match source_name {
        source::MODELS_DEV => models_dev(&root, now_ms)?,
        source::LITELLM => litellm(&root, now_ms)?,
        source::OPENROUTER => openrouter(&root, now_ms)?,
        other => return Err(SourceError(format!("unknown price source {other:?}"))),
    };
    Ok(parsed)
}

fn number(entry: &Map<String, Value>, key: &str) -> Option<f64> {
    match entry.get(key)? {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|value| value.is_finite())
}

fn first_number(entry: &Map<String, Value>, keys: &[&str]) -> Option<f64> {
    keys.iter().find_map(|key| number(entry, key))
}

fn positive_integer(entry: &Map<String, Value>, key: &str) -> Option<i64> {
    match entry.get(key)? {
        Value::Number(number) => number.as_i64().or_else(|| {
            number
                .as_f64()
                .filter(|value| value.fract() == 0.0 && *value < i64::MAX as f64)
                .map(|value| value as i64)
        }),
        Value::String(text) => text.trim().parse::<i64>().ok(),
        _ => None,
    }
    .filter(|value| *value > 0)
}

/// The four source rates, scaled to per 1M tokens; `None` when none is present.
/// The cache-read rate also fills the legacy `cache` rate.
fn rates(
    prompt: Option<f64>,
    completion: Option<f64>,
    read: Option<f64>,
    write: Option<f64>,
    scale: f64,
) -> Option<Rates> {
    if prompt.is_none() && completion.is_none() && read.is_none() && write.is_none() {
        return None;
    }
    let rate = |value: Option<f64>| Rate {
        value: value.map_or(0.0, |value| value * scale),
        flag: value.is_some(),
    };
    Some(Rates {
        prompt: rate(prompt),
        completion: rate(completion),
        cache: rate(read),
        cache_read: rate(read),
        cache_creation: rate(write),
    })
}

fn cost_rates(cost: &Map<String, Value>) -> Option<Rates> {
    rates(
        number(cost, "input"),
        number(cost, "output"),
        number(cost, "cache_read"),
        number(cost, "cache_write"),
        1.0,
    )
}

fn entry(key: String, source_name: &str, rates: Rates, raw: &Value, now_ms: i64) -> SourceEntry {
    SourceEntry {
        price: ModelPrice {
            rates,
            source: source_name.to_string(),
            source_model_id: key.clone(),
            raw_json: raw.to_string(),
            updated_at_ms: now_ms,
            synced_at_ms: Some(now_ms),
            ..ModelPrice::default()
        },
        key,
    }
}

fn finish(mut entries: Vec<SourceEntry>, skipped: usize, canonical: Canonical) -> ParsedSource {
    entries.sort_by(|left, right| left.key.cmp(&right.key));
    ParsedSource {
        entries,
        skipped,
        canonical,
    }
}

fn models_dev(root: &Value, now_ms: i64) -> Result<ParsedSource, SourceError> {
    let root = root
        .as_object()
        .ok_or_else(|| SourceError("models.dev catalog is not a JSON object".into()))?;
    let (providers, canonical) = match root.get("providers") {
        Some(providers) => {
            let models = root
                .get("models")
                .and_then(Value::as_object)
                .filter(|models| !models.is_empty())
                .ok_or_else(|| {
                    SourceError("models.dev catalog contained no canonical models".into())
                })?;
            let providers = providers
                .as_object()
                .ok_or_else(|| SourceError("models.dev providers is not an object".into()))?;
            (providers, canonical_catalog(models.keys()))
        }
        None => (root, Canonical::default()),
    };
    let mut canonical = canonical;
    let mut entries = Vec::new();
    let mut skipped = 0;
    let providers: BTreeMap<&String, &Value> = providers.iter().collect();
    for (provider_id, provider) in providers {
        let Some(models) = provider.get("models").and_then(Value::as_object) else {
            return Err(SourceError(format!(
                "models.dev provider {provider_id:?} has no models object"
            )));
        };
        for (model_id, raw) in models {
            let (provider_id, model_id) = (provider_id.trim(), model_id.trim());
            let cost = raw.get("cost").and_then(Value::as_object);
            let (Some(cost), false, false) = (cost, provider_id.is_empty(), model_id.is_empty())
            else {
                skipped += 1;
                continue;
            };
            let Some(base) = cost_rates(cost) else {
                skipped += 1;
                continue;
            };
            let key = format!("{provider_id}/{model_id}");
            let mut item = entry(key.clone(), source::MODELS_DEV, base, raw, now_ms);
            item.price.context_tiers = context_tiers(cost);
            item.price.service_tiers = fast_mode(raw);
            if canonical
                .canonical_id(&key)
                .is_some_and(|id| id.eq_ignore_ascii_case(&key))
            {
                canonical.official.insert(key.to_lowercase());
            }
            entries.push(item);
        }
    }
    if entries.is_empty() {
        return Err(SourceError(
            "models.dev catalog contained no usable prices".into(),
        ));
    }
    Ok(finish(entries, skipped, canonical))
}

/// Canonical ids by themselves and by their unique tail.
fn canonical_catalog<'a>(ids: impl Iterator<Item = &'a String>) -> Canonical {
    let mut by_identity = HashMap::new();
    let mut tails: HashMap<String, Option<String>> = HashMap::new();
    for id in ids {
        let id = id.trim();
        if id.is_empty() {
            continue;
        }
        by_identity.insert(id.to_lowercase(), id.to_string());
        if let Some((_, tail)) = id.split_once('/')
            && !tail.trim().is_empty()
        {
            tails
                .entry(tail.trim().to_lowercase())
                .and_modify(|unique| {
                    if unique
                        .as_deref()
                        .is_some_and(|seen| !seen.eq_ignore_ascii_case(id))
                    {
                        *unique = None;
                    }
                })
                .or_insert_with(|| Some(id.to_string()));
        }
    }
    for (tail, id) in tails {
        if let Some(id) = id {
            by_identity.insert(tail, id);
        }
    }
    Canonical {
        by_identity,
        official: HashSet::new(),
    }
}

/// `cost.tiers[]` of type `context`; any invalid context tier drops them all.
fn context_tiers(cost: &Map<String, Value>) -> Vec<ContextTier> {
    let Some(raw) = cost.get("tiers").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut tiers = Vec::new();
    for tier in raw {
        let Some(tier) = tier.as_object() else {
            continue;
        };
        let Some(descriptor) = tier.get("tier").and_then(Value::as_object) else {
            continue;
        };
        let kind = descriptor.get("type").and_then(Value::as_str).unwrap_or("");
        if !kind.trim().eq_ignore_ascii_case("context") {
            continue;
        }
        let (Some(threshold), Some(mut rates)) =
            (positive_integer(descriptor, "size"), cost_rates(tier))
        else {
            return Vec::new();
        };
        rates.cache.flag = rates.cache_read.flag;
        tiers.push(ContextTier {
            threshold_tokens: threshold,
            rates,
        });
    }
    let check = ModelPrice {
        context_tiers: tiers,
        ..ModelPrice::default()
    };
    validate("tiers", check)
        .map(|(_, price)| price.context_tiers)
        .unwrap_or_default()
}

/// `experimental.modes.fast.cost` as the `fast`/`priority` rule.
fn fast_mode(raw: &Value) -> Vec<ServiceTierRule> {
    let Some(cost) = raw
        .pointer("/experimental/modes/fast/cost")
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    let Some(mut rates) = cost_rates(cost) else {
        return Vec::new();
    };
    rates.cache.flag = rates.cache_read.flag;
    vec![ServiceTierRule {
        mode: "fast".into(),
        service_tier: "priority".into(),
        rates,
    }]
}

fn litellm(root: &Value, now_ms: i64) -> Result<ParsedSource, SourceError> {
    let root = root
        .as_object()
        .ok_or_else(|| SourceError("LiteLLM prices are not a JSON object".into()))?;
    let mut entries = Vec::new();
    let mut skipped = 0;
    for (key, raw) in root {
        // The documentation entry describes the fields, it prices nothing.
        let Some(object) = raw.as_object().filter(|_| key != "sample_spec") else {
            skipped += 1;
            continue;
        };
        let found = rates(
            number(object, "input_cost_per_token"),
            number(object, "output_cost_per_token"),
            first_number(object, &["cache_read_input_token_cost", "input_cache_read"]),
            first_number(
                object,
                &[
                    "cache_creation_input_token_cost",
                    "cache_write_input_token_cost",
                    "input_cache_write",
                    "input_cache_creation",
                ],
            ),
            1e6,
        );
        match found {
            Some(found) => entries.push(entry(
                key.trim().to_string(),
                source::LITELLM,
                found,
                raw,
                now_ms,
            )),
            None => skipped += 1,
        }
    }
    Ok(finish(entries, skipped, Canonical::default()))
}

fn openrouter(root: &Value, now_ms: i64) -> Result<ParsedSource, SourceError> {
    let data = root
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| SourceError("OpenRouter answer has no data array".into()))?;
    let mut entries = Vec::new();
    let mut skipped = 0;
    for raw in data {
        let id = raw.get("id").and_then(Value::as_str).unwrap_or("").trim();
        let pricing = raw.get("pricing").and_then(Value::as_object);
        let found = pricing.and_then(|pricing| {
            rates(
                number(pricing, "prompt"),
                number(pricing, "completion"),
                first_number(
                    pricing,
                    &["input_cache_read", "cache_read_input_token_cost"],
                ),
                first_number(
                    pricing,
                    &[
                        "input_cache_write",
                        "input_cache_creation",
                        "cache_creation_input_token_cost",
                        "cache_write_input_token_cost",
                    ],
                ),
                1e6,
            )
        });
        match found {
            Some(found) if !id.is_empty() => {
                entries.push(entry(
                    id.to_string(),
                    source::OPENROUTER,
                    found,
                    raw,
                    now_ms,
                ));
            }
            _ => skipped += 1,
        }
    }
    Ok(finish(entries, skipped, Canonical::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_dev_catalog_with_tiers_fast_mode_and_canonical_ids() {
        let body = br#"{
            "providers": {
                "openai": {"models": {
                    "gpt-5": {"cost": {"input": 1.25, "output": 10, "cache_read": 0.125,
                        "tiers": [{"input": 2.5, "output": 15, "tier": {"type": "context", "size": 272000}},
                                  {"input": 9, "tier": {"type": "requests", "size": 1}}]},
                        "experimental": {"modes": {"fast": {"cost": {"input": 2.5, "output": 20, "cache_read": 0}}}}},
                    "no-cost": {"name": "x"}
                }},
                "azure": {"models": {
                    "gpt-5": {"cost": {"input": 1.3, "output": 11, "tiers": [{"input": 1, "tier": {"type": "context", "size": 0}}]}}
                }}
            },
            "models": {"openai/gpt-5": {}}
        }"#;
        let parsed = parse("models.dev", body, 7).expect("parsed");
        assert_eq!(parsed.skipped, 1);
        let keys: Vec<_> = parsed.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, vec!["azure/gpt-5", "openai/gpt-5"]);
        let openai = &parsed.entries[1].price;
        assert_eq!(openai.rates.prompt, Rate::set(1.25));
        assert_eq!(openai.rates.cache, Rate::set(0.125));
        assert_eq!(openai.rates.cache_read, Rate::set(0.125));
        assert!(!openai.rates.cache_creation.flag);
        assert_eq!(openai.source, "models.dev");
        assert_eq!(openai.source_model_id, "openai/gpt-5");
        assert_eq!(openai.synced_at_ms, Some(7));
        assert_eq!(openai.context_tiers.len(), 1);
        assert_eq!(openai.context_tiers[0].threshold_tokens, 272_000);
        assert_eq!(openai.service_tiers[0].mode, "fast");
        assert_eq!(openai.service_tiers[0].service_tier, "priority");
        assert_eq!(openai.service_tiers[0].rates.cache_read, Rate::set(0.0));
        assert!(openai.raw_json.contains("experimental"));
        // One invalid context tier drops them all.
        assert!(parsed.entries[0].price.context_tiers.is_empty());
        assert!(parsed.canonical.is_official("OpenAI/GPT-5"));
        assert!(!parsed.canonical.is_official("azure/gpt-5"));
        assert_eq!(parsed.canonical.canonical_id("gpt-5"), Some("openai/gpt-5"));

        let legacy = parse(
            "models.dev",
            br#"{"openai":{"models":{"gpt-4o":{"cost":{"input":2.5,"output":10}}}}}"#,
            1,
        )
        .expect("legacy root");
        assert_eq!(legacy.entries[0].key, "openai/gpt-4o");
        assert!(legacy.canonical.is_empty());
        assert!(parse("models.dev", br#"{"providers":{}}"#, 1).is_err());
        assert!(parse("models.dev", b"not json", 1).is_err());
    }

    #[test]
    fn litellm_and_openrouter_are_scaled_to_per_million() {
        let litellm = parse(
            "litellm",
            br#"{"sample_spec": {"input_cost_per_token": 0},
                 "gpt-4o": {"input_cost_per_token": 2.5e-6, "output_cost_per_token": 1e-5, "cache_read_input_token_cost": 1.25e-6},
                 "claude-sonnet-4-5": {"input_cost_per_token": 3e-6, "output_cost_per_token": 1.5e-5, "cache_creation_input_token_cost": 3.75e-6},
                 "embedding-only": {"mode": "embedding"}}"#,
            1,
        )
        .expect("litellm");
        assert_eq!(litellm.skipped, 2);
        let gpt = &litellm.entries[1].price;
        assert_eq!(litellm.entries[1].key, "gpt-4o");
        assert!((gpt.rates.prompt.value - 2.5).abs() < 1e-9);
        assert!((gpt.rates.cache_read.value - 1.25).abs() < 1e-9);
        assert!(gpt.rates.cache_read.flag && !gpt.rates.cache_creation.flag);
        let claude = &litellm.entries[0].price;
        assert!((claude.rates.cache_creation.value - 3.75).abs() < 1e-9);

        let openrouter = parse(
            "openrouter",
            br#"{"data": [{"id": "openai/gpt-5", "pricing": {"prompt": "0.00000125", "completion": "0.00001", "input_cache_read": "0.000000125"}},
                          {"id": "free/model", "pricing": {"prompt": "0", "completion": "0"}},
                          {"id": "", "pricing": {"prompt": "1"}},
                          {"id": "no-pricing"}]}"#,
            1,
        )
        .expect("openrouter");
        assert_eq!(openrouter.skipped, 2);
        let free = &openrouter.entries[0].price;
        assert_eq!(free.rates.prompt, Rate::set(0.0), "an explicit free price");
        let gpt = &openrouter.entries[1].price;
        assert!((gpt.rates.completion.value - 10.0).abs() < 1e-9);
        assert!(parse("openrouter", br#"{"models": []}"#, 1).is_err());
    }
}
