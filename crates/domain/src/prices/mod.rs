//! Model prices: the record behind every cost, its validation, and the ports that
//! keep prices and API key aliases.
//!
//! All rates are USD per one million tokens. A rate carries a `configured` flag so
//! an explicit `0` ("this is free") differs from a missing value ("inherit" or
//! "fall back"); a rate counts as configured when the flag is set **or** its value is
//! above zero, so clients that send only numbers keep working.
//!
//! Layout:
//! - this file: [`ModelPrice`] and its parts, [`validate`], [`PriceStore`];
//! - `sources`: the three sync sources' JSON formats (models.dev, LiteLLM,
//!   OpenRouter) turned into price entries;
//! - `matching`: which source entry a model id means (unique strong match only) and
//!   the scored candidates shown when none is certain;
//! - `sync`: what a sync writes (failure preservation, pinned prices, validation);
//! - `aliases`: API key aliases (hash normalisation, alias rules, the upsert plan).
//!
//! The cost formula itself lives with the analytics read model
//! (`analytics::cost`), which prices token sums with these records.

#![warn(missing_docs)]

pub mod aliases;
pub mod matching;
pub mod sources;
pub mod sync;

use std::collections::BTreeMap;
use std::future::Future;

use crate::ports::StoreError;

/// One per-1M-token rate.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rate {
    /// US dollars per million tokens.
    pub value: f64,
    /// Set when the value was given explicitly (so an explicit 0 stays 0).
    pub flag: bool,
}

impl Rate {
    /// An explicitly given rate.
    pub const fn set(value: f64) -> Rate {
        Rate { value, flag: true }
    }

    /// Configured: flagged or above zero.
    pub fn configured(&self) -> bool {
        self.flag || self.value > 0.0
    }
}

/// The five rates of a price, a context tier or a service-tier rule.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    /// Uncached input.
    pub prompt: Rate,
    /// Output (reasoning included, see `analytics::cost`).
    pub completion: Rate,
    /// The legacy cached-input rate, billed on compat cached tokens (C).
    pub cache: Rate,
    /// Cache read (R); when not configured: `cache` if above 0, else 10 % of prompt.
    pub cache_read: Rate,
    /// Cache write/creation (W); when not configured: the prompt rate.
    pub cache_creation: Rate,
}

impl Rates {
    /// These rates with every configured rate of `overlay` put over them; a rate
    /// the overlay leaves unconfigured is inherited, an explicit 0 stays 0.
    pub fn overlaid(&self, overlay: &Rates) -> Rates {
        let pick = |base: Rate, over: Rate| if over.configured() { over } else { base };
        Rates {
            prompt: pick(self.prompt, overlay.prompt),
            completion: pick(self.completion, overlay.completion),
            cache: pick(self.cache, overlay.cache),
            cache_read: pick(self.cache_read, overlay.cache_read),
            cache_creation: pick(self.cache_creation, overlay.cache_creation),
        }
    }

    fn any_configured(&self) -> bool {
        self.all().iter().any(|(_, rate)| rate.configured())
    }

    fn all(&self) -> [(&'static str, Rate); 5] {
        [
            ("prompt", self.prompt),
            ("completion", self.completion),
            ("cache", self.cache),
            ("cacheRead", self.cache_read),
            ("cacheCreation", self.cache_creation),
        ]
    }

    fn check(&self, what: &str) -> Result<(), PriceError> {
        for (name, rate) in self.all() {
            if !rate.value.is_finite() || rate.value < 0.0 {
                return Err(PriceError(format!(
                    "{what}: {name} must be a finite number >= 0 (USD per 1M tokens), got {}",
                    rate.value
                )));
            }
        }
        Ok(())
    }
}

/// Rates that apply above a context size: when a request's normalized input is
/// strictly greater than `threshold_tokens`, the highest such tier prices the whole
/// request.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextTier {
    /// The tier applies above this many input tokens.
    pub threshold_tokens: i64,
    /// Rates over the base rates (unconfigured ones are inherited).
    pub rates: Rates,
}

/// Rates for a service tier: a request whose tier equals `mode` or `service_tier`
/// (models.dev's `fast` mode is reported by the API as `priority`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceTierRule {
    /// A tier name the rule matches.
    pub mode: String,
    /// The other tier name the rule matches.
    pub service_tier: String,
    /// Rates over the base rates (unconfigured ones are inherited).
    pub rates: Rates,
}

/// Where a price came from.
pub mod source {
    /// models.dev's catalog.
    pub const MODELS_DEV: &str = "models.dev";
    /// LiteLLM's price table.
    pub const LITELLM: &str = "litellm";
    /// OpenRouter's model list.
    pub const OPENROUTER: &str = "openrouter";
    /// A synced price whose source was not recorded.
    pub const SYNC: &str = "sync";
    /// Entered by hand (the panel's manual editor).
    pub const MANUAL: &str = "manual";
    /// The sync sources in priority order.
    pub const SYNC_ORDER: [&str; 3] = [MODELS_DEV, LITELLM, OPENROUTER];
}

/// The price of one model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelPrice {
    /// The base rates.
    pub rates: Rates,
    /// Sorted by threshold, thresholds unique and positive.
    pub context_tiers: Vec<ContextTier>,
    /// Sorted by (mode, service tier); identifiers lowercase and unique across rules.
    pub service_tiers: Vec<ServiceTierRule>,
    /// `models.dev`, `litellm`, `openrouter`, `sync`, `manual` or empty.
    pub source: String,
    /// The model's id at the source (for a synced price).
    pub source_model_id: String,
    /// The source's record as fetched (for a synced price).
    pub raw_json: String,
    /// A pinned price is never changed by a sync (manual prices are pinned unless
    /// the client says otherwise).
    pub pinned: bool,
    /// Unix ms of the last change.
    pub updated_at_ms: i64,
    /// Unix ms of the last sync that set it.
    pub synced_at_ms: Option<i64>,
}

impl ModelPrice {
    /// A price for these base rates and nothing else.
    pub fn with_rates(rates: Rates) -> ModelPrice {
        ModelPrice {
            rates,
            ..ModelPrice::default()
        }
    }

    /// Whether a price from `source` counts as entered by hand.
    pub fn is_manual_source(source: &str) -> bool {
        let source = source.trim();
        source.is_empty() || source.eq_ignore_ascii_case(source::MANUAL)
    }
}

/// Why a price was refused. The message names the model and the field to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PriceError(pub String);

/// Checks one price and returns it normalised (model key trimmed, tiers sorted,
/// service-tier identifiers trimmed and lowercased).
pub fn validate(model: &str, price: ModelPrice) -> Result<(String, ModelPrice), PriceError> {
    let key = model.trim();
    if key.is_empty() {
        return Err(PriceError("model is required for every price".to_string()));
    }
    let mut price = price;
    price.rates.check(&format!("price of {key}"))?;
    price
        .context_tiers
        .sort_by_key(|tier| tier.threshold_tokens);
    for (index, tier) in price.context_tiers.iter().enumerate() {
        let what = format!("price of {key}, context tier {}", tier.threshold_tokens);
        if tier.threshold_tokens <= 0 {
            return Err(PriceError(format!(
                "{what}: thresholdTokens must be a positive token count"
            )));
        }
        if index > 0 && price.context_tiers[index - 1].threshold_tokens == tier.threshold_tokens {
            return Err(PriceError(format!(
                "{what}: two context tiers share this threshold"
            )));
        }
        tier.rates.check(&what)?;
        if !tier.rates.any_configured() {
            return Err(PriceError(format!("{what}: configure at least one rate")));
        }
    }
    let mut claimed: BTreeMap<String, usize> = BTreeMap::new();
    for (index, rule) in price.service_tiers.iter_mut().enumerate() {
        rule.mode = rule.mode.trim().to_ascii_lowercase();
        rule.service_tier = rule.service_tier.trim().to_ascii_lowercase();
        if rule.mode.is_empty() || rule.service_tier.is_empty() {
            return Err(PriceError(format!(
                "price of {key}: every service tier rule needs a mode and a serviceTier"
            )));
        }
        let what = format!(
            "price of {key}, service tier {}/{}",
            rule.mode, rule.service_tier
        );
        rule.rates.check(&what)?;
        if !rule.rates.any_configured() {
            return Err(PriceError(format!("{what}: configure at least one rate")));
        }
        for identifier in [rule.mode.clone(), rule.service_tier.clone()] {
            if let Some(owner) = claimed.insert(identifier.clone(), index)
                && owner != index
            {
                return Err(PriceError(format!(
                    "price of {key}: service tier `{identifier}` appears in two rules"
                )));
            }
        }
    }
    price.service_tiers.sort_by(|left, right| {
        (&left.mode, &left.service_tier).cmp(&(&right.mode, &right.service_tier))
    });
    price.source = price.source.trim().to_string();
    price.source_model_id = price.source_model_id.trim().to_string();
    Ok((key.to_string(), price))
}

/// The price table and the alias table.
pub trait PriceStore: Clone + Send + Sync + 'static {
    /// Every stored price, by model.
    fn prices(
        &self,
    ) -> impl Future<Output = Result<BTreeMap<String, ModelPrice>, StoreError>> + Send;

    /// Replaces the whole table with `prices` in one transaction.
    fn replace_prices(
        &self,
        prices: Vec<(String, ModelPrice)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Inserts or updates `prices` (their tiers replaced), leaving other models
    /// alone, in one transaction. Pinned stored prices are never changed: they are
    /// returned instead.
    fn upsert_prices(
        &self,
        prices: Vec<(String, ModelPrice)>,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Every API key alias, ordered by alias (ASCII case-insensitive), then hash.
    fn api_key_aliases(
        &self,
    ) -> impl Future<Output = Result<Vec<aliases::ApiKeyAlias>, StoreError>> + Send;

    /// Applies an alias plan in one transaction. The plan is computed from the rows
    /// read inside the same transaction, so concurrent writers cannot interleave.
    fn put_api_key_aliases(
        &self,
        request: aliases::AliasPut,
        now_ms: i64,
    ) -> impl Future<Output = Result<Result<(), aliases::AliasError>, StoreError>> + Send;

    /// The stored event with this hash (lowercase hex), for explaining its cost.
    fn event_by_hash(
        &self,
        event_hash: &str,
    ) -> impl Future<Output = Result<Option<crate::analytics::query::RawEvent>, StoreError>> + Send;

    /// Deletes the alias of a hash; deleting a missing alias succeeds.
    fn delete_api_key_alias(
        &self,
        api_key_hash: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(prompt: f64) -> Rates {
        Rates {
            prompt: Rate::set(prompt),
            ..Rates::default()
        }
    }

    #[test]
    fn validation_sorts_lowercases_and_names_the_bad_field() {
        let price = ModelPrice {
            rates: rates(1.0),
            context_tiers: vec![
                ContextTier {
                    threshold_tokens: 200_000,
                    rates: rates(2.0),
                },
                ContextTier {
                    threshold_tokens: 32_000,
                    rates: rates(1.5),
                },
            ],
            service_tiers: vec![ServiceTierRule {
                mode: " Fast ".into(),
                service_tier: "PRIORITY".into(),
                rates: rates(3.0),
            }],
            ..ModelPrice::default()
        };
        let (key, price) = validate(" gpt-5 ", price).expect("valid");
        assert_eq!(key, "gpt-5");
        assert_eq!(price.context_tiers[0].threshold_tokens, 32_000);
        assert_eq!(price.service_tiers[0].mode, "fast");
        assert_eq!(price.service_tiers[0].service_tier, "priority");

        let bad = ModelPrice::with_rates(rates(-1.0));
        let error = validate("m", bad).expect_err("negative");
        assert!(
            error.0.contains("prompt must be a finite number"),
            "{error}"
        );
        let nan = ModelPrice::with_rates(rates(f64::NAN));
        assert!(validate("m", nan).is_err());
        assert!(validate("  ", ModelPrice::default()).is_err());

        let empty_tier = ModelPrice {
            context_tiers: vec![ContextTier {
                threshold_tokens: 10,
                rates: Rates::default(),
            }],
            ..ModelPrice::default()
        };
        assert!(
            validate("m", empty_tier)
                .expect_err("empty")
                .0
                .contains("at least one rate")
        );
        // An explicit zero counts as configured.
        let zero_tier = ModelPrice {
            context_tiers: vec![ContextTier {
                threshold_tokens: 10,
                rates: Rates {
                    prompt: Rate::set(0.0),
                    ..Rates::default()
                },
            }],
            ..ModelPrice::default()
        };
        assert!(validate("m", zero_tier).is_ok());

        let shared = ModelPrice {
            service_tiers: vec![
                ServiceTierRule {
                    mode: "fast".into(),
                    service_tier: "priority".into(),
                    rates: rates(1.0),
                },
                ServiceTierRule {
                    mode: "priority".into(),
                    service_tier: "x".into(),
                    rates: rates(1.0),
                },
            ],
            ..ModelPrice::default()
        };
        assert!(
            validate("m", shared)
                .expect_err("shared")
                .0
                .contains("two rules")
        );
    }

    #[test]
    fn overlay_inherits_unconfigured_rates_and_keeps_explicit_zero() {
        let base = Rates {
            prompt: Rate::set(2.0),
            completion: Rate::set(8.0),
            cache_read: Rate::set(0.2),
            ..Rates::default()
        };
        let overlay = Rates {
            prompt: Rate::set(4.0),
            cache_read: Rate::set(0.0),
            completion: Rate {
                value: 0.0,
                flag: false,
            },
            ..Rates::default()
        };
        let merged = base.overlaid(&overlay);
        assert_eq!(merged.prompt.value, 4.0);
        assert_eq!(merged.completion.value, 8.0);
        assert_eq!(merged.cache_read, Rate::set(0.0));
    }
}
