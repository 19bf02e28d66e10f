//! The cost explanation of one request: which price, which rule and tier, and what
//! each token class cost (`GET /v0/management/model-prices/explain`).
//!
//! The explanation prices the single event with exactly the engine every aggregate
//! uses (`cost::PriceBook::quote`), so its cost is the event's share of any total.

use serde::Serialize;

use super::cost::{PriceBook, PriceRule, Quote, band_range, context_band};
use super::query::{GroupRow, RawEvent};
use super::totals::band_of;
use crate::prices::Rates;

/// Why reasoning tokens never appear as a billed line.
pub const REASONING_NOTE: &str =
    "reasoning tokens are counted inside output tokens and are not billed separately";

/// The body of `GET /model-prices/explain`: how one stored event was priced. Text
/// fields are `""` when the event did not record them.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The event's dedupe hash (lowercase hex), the key the request named.
    pub event_hash: String,
    /// Request start, Unix milliseconds.
    pub timestamp_ms: i64,
    /// Display model of the event (requested, else resolved model).
    pub model: String,
    /// The model the client asked for, reasoning suffix included.
    pub requested_model: String,
    /// The model CPA sent upstream.
    pub resolved_model: String,
    /// Requested (else display) model without its reasoning suffix.
    pub analytics_model: String,
    /// Resolved model, else the analytics model: looked up first.
    pub billing_model: String,
    /// Effective service tier of the event (`priority`, `flex`, …); `""` for the
    /// default tier.
    pub service_tier: String,
    /// `included_in_input`, `separate_from_input` or empty (raw input used).
    pub cache_input_mode: String,
    /// The token classes the cost is computed from.
    pub tokens: ExplainedTokens,
    /// The input-size band the event falls in (which decides context tiers).
    pub context_band: ExplainedBand,
    /// The cost in USD; `null` when no price applies.
    pub cost: Option<f64>,
    /// Whether a price applied (`cost` is not `null`).
    pub priced: bool,
    /// Set when unpriced: what to add to price it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unpriced_reason: Option<String>,
    /// Which price and rule were used and each billed line; absent when unpriced or
    /// when the event has no billable tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<ExplainedPrice>,
    /// Always [`REASONING_NOTE`]: why reasoning tokens have no line of their own.
    pub reasoning: &'static str,
}

/// `tokens` of an explanation: the event's token classes after cache accounting.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainedTokens {
    /// I: normalized total input, cache buckets included.
    pub input: i64,
    /// Output tokens, reasoning included (billed at the completion rate).
    pub output: i64,
    /// Reasoning tokens, already part of `output`.
    pub reasoning: i64,
    /// C: cached tokens not split into read/write.
    pub cached: i64,
    /// R: input read from the cache (billed at the cache-read rate).
    pub cache_read: i64,
    /// W: input written to the cache (billed at the cache-creation rate).
    pub cache_creation: i64,
    /// I − (C + R) − W, never negative: billed at the prompt rate.
    pub prompt: i64,
}

/// `context_band` of an explanation: the fixed input-size band the event was priced in
/// (see `docs/prices.md`).
#[derive(Debug, Clone, Serialize)]
pub struct ExplainedBand {
    /// The band holds requests with `floor_tokens < input <= ceiling_tokens`.
    pub floor_tokens: i64,
    /// Upper bound of the band in input tokens; `null` for the open top band.
    pub ceiling_tokens: Option<i64>,
}

/// `price` of an explanation: the price entry and rule that priced the event.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainedPrice {
    /// The price-table key used (or the built-in family).
    pub key: String,
    /// `billing_model`, `analytics_model`, `case_insensitive`, `providerless_name`, `built_in`.
    pub matched_by: &'static str,
    /// The model whose name drives family rules (premium, multipliers).
    pub behaviour_model: String,
    /// `context_tier`, `long_context_premium`, `service_tier` or `base`.
    pub rule: &'static str,
    /// Input-token threshold of the context tier that applied; only with rule
    /// `context_tier`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_threshold_tokens: Option<i64>,
    /// The price's service-tier rule that applied; only with rule `service_tier`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_tier_rule: Option<ExplainedRule>,
    /// Multiplier of the event's service tier on top of the rates (0.5 for `flex` and
    /// `batch`, 2–2.5 for `priority` on some GPT-5 models, else 1).
    pub tier_multiplier: f64,
    /// A context-tier threshold cuts this request's band: priced at the lower rates.
    pub approximate: bool,
    /// The rates used, USD per 1M tokens.
    pub rates: ExplainedRates,
    /// One line per billed token class; their costs add up to `cost`.
    pub lines: Vec<ExplainedLine>,
}

/// A service-tier rule of a price, as the price JSON spells it.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainedRule {
    /// The rule's `mode` (a tier name such as `fast` as models.dev reports it).
    pub mode: String,
    /// The rule's `serviceTier` (the tier name the API reports, such as `priority`).
    #[serde(rename = "serviceTier")]
    pub service_tier: String,
}

/// The rates used, US dollars per million tokens, after tiers and rules.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainedRates {
    /// Uncached input.
    pub prompt: f64,
    /// Output (reasoning included).
    pub completion: f64,
    /// Cached input not split into read and write.
    pub cache: f64,
    /// Input read from the cache.
    pub cache_read: f64,
    /// Input written to the cache.
    pub cache_creation: f64,
}

/// One billed token class of an explanation.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainedLine {
    /// `prompt`, `cached`, `cache_read`, `cache_creation`, `output`.
    pub class: &'static str,
    /// Tokens billed in this class.
    pub tokens: i64,
    /// USD per 1M tokens.
    pub rate: f64,
    /// Everything the rate is multiplied by (long-context premium × tier multiplier).
    pub multiplier: f64,
    /// This class's cost, US dollars: `tokens × rate × multiplier / 1 000 000`.
    pub cost: f64,
}

fn rates(rates: &Rates) -> ExplainedRates {
    ExplainedRates {
        prompt: rates.prompt.value,
        completion: rates.completion.value,
        cache: rates.cache.value,
        cache_read: rates.cache_read.value,
        cache_creation: rates.cache_creation.value,
    }
}

fn price(quote: Quote) -> ExplainedPrice {
    let (context_threshold_tokens, service_tier_rule) = match &quote.rule {
        PriceRule::ContextTier { threshold_tokens } => (Some(*threshold_tokens), None),
        PriceRule::ServiceTier { mode, service_tier } => (
            None,
            Some(ExplainedRule {
                mode: mode.clone(),
                service_tier: service_tier.clone(),
            }),
        ),
        _ => (None, None),
    };
    ExplainedPrice {
        key: quote.price_key,
        matched_by: quote.matched_by.as_str(),
        behaviour_model: quote.behaviour_model,
        rule: quote.rule.as_str(),
        context_threshold_tokens,
        service_tier_rule,
        tier_multiplier: quote.tier_multiplier,
        approximate: quote.approximate,
        rates: rates(&quote.rates),
        lines: quote
            .lines
            .into_iter()
            .map(|line| ExplainedLine {
                class: line.class,
                tokens: line.tokens,
                rate: line.rate,
                multiplier: line.multiplier,
                cost: line.cost,
            })
            .collect(),
    }
}

/// Explains the cost of one stored event under `book`.
pub fn explain(book: &PriceBook, event: &RawEvent) -> Explanation {
    let row = GroupRow::from_event(event, false);
    let band = band_of(&row);
    let sums = &row.metrics;
    let range = band_range(context_band(sums.input));
    let quote = if sums.input <= 0
        && sums.output <= 0
        && sums.cached <= 0
        && sums.cache_read <= 0
        && sums.cache_creation <= 0
    {
        None
    } else {
        book.quote(band, sums)
    };
    let cost = book.band_cost(band, sums);
    let unpriced_reason = cost.is_none().then(|| {
        if row.billing_model == row.model {
            format!(
                "no price for {:?}: add a price under this name",
                &*row.model
            )
        } else {
            format!(
                "no price for {:?} or {:?}: add a price under either name",
                &*row.billing_model, &*row.model
            )
        }
    });
    Explanation {
        event_hash: event.event_hash.clone(),
        timestamp_ms: event.timestamp_ms,
        model: event.model.to_string(),
        requested_model: event.requested_model.to_string(),
        resolved_model: event.resolved_model.to_string(),
        analytics_model: row.model.to_string(),
        billing_model: row.billing_model.to_string(),
        service_tier: event.service_tier.to_string(),
        cache_input_mode: event.cache_input_mode.unwrap_or("").to_string(),
        tokens: ExplainedTokens {
            input: sums.input,
            output: sums.output,
            reasoning: sums.reasoning,
            cached: sums.cached,
            cache_read: sums.cache_read,
            cache_creation: sums.cache_creation,
            prompt: (sums.input.max(0)
                - sums.cached.max(0)
                - sums.cache_read.max(0)
                - sums.cache_creation.max(0))
            .max(0),
        },
        context_band: ExplainedBand {
            floor_tokens: range.floor,
            ceiling_tokens: range.ceiling,
        },
        priced: cost.is_some(),
        cost,
        unpriced_reason,
        price: quote.map(price),
        reasoning: REASONING_NOTE,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::*;
    use crate::event::TokenCounts;
    use crate::prices::{ModelPrice, Rate};

    #[test]
    fn an_event_is_explained_line_by_line() {
        let book = PriceBook::new(HashMap::from([(
            "gpt-5".to_string(),
            ModelPrice::with_rates(Rates {
                prompt: Rate::set(1.25),
                completion: Rate::set(10.0),
                cache: Rate::set(0.125),
                cache_read: Rate::set(0.125),
                cache_creation: Rate::default(),
            }),
        )]));
        let event = RawEvent {
            event_hash: "ab".repeat(32),
            model: Arc::from("gpt-5(high)"),
            requested_model: Arc::from("gpt-5(high)"),
            analytics_model: Arc::from("gpt-5"),
            service_tier: Arc::from("priority"),
            cache_input_mode: Some("included_in_input"),
            tokens: TokenCounts {
                input: 1000,
                output: 200,
                reasoning: 50,
                cached: 400,
                total: 1200,
                ..TokenCounts::default()
            },
            normalized_total_input: Some(1000),
            ..RawEvent::default()
        };
        let explained = explain(&book, &event);
        assert_eq!(explained.cost, Some(0.0028));
        let price = explained.price.expect("priced");
        assert_eq!(price.key, "gpt-5");
        assert_eq!(price.matched_by, "billing_model");
        assert_eq!(price.rule, "base");
        assert_eq!(price.tier_multiplier, 1.0);
        assert_eq!(explained.tokens.prompt, 600);
        assert_eq!(price.lines.len(), 5);
        let json = serde_json::to_value(&explained.tokens).expect("json");
        assert_eq!(json["reasoning"], 50);

        let unpriced = RawEvent {
            analytics_model: Arc::from("mystery"),
            resolved_model: Arc::from("mystery-2026"),
            ..event
        };
        let explained = explain(&book, &unpriced);
        assert_eq!(explained.cost, None);
        assert!(explained.price.is_none());
        assert!(explained.unpriced_reason.as_deref().is_some_and(|reason| {
            reason.contains("mystery-2026") && reason.contains("\"mystery\"")
        }));
    }
}
