//! Cost at read time.
//!
//! Storage keeps token sums per band: (analytics model, billing model, service
//! tier, context band). A response's cost is the sum of its bands' costs under the
//! *current* price book, so a price change re-prices all history without
//! rebuilding anything. A band whose model has no price has an unknown cost
//! (`None`), and any sum that includes an unknown cost is unknown as well: an
//! unpriced model is never reported as free.

use std::collections::HashMap;

use super::Metrics;

/// Upper bounds (inclusive, in normalized input tokens) of the context bands an
/// event is filed under. Band `i` holds events with `BOUNDS[i-1] < I <= BOUNDS[i]`;
/// the last band is everything above the last bound. Price context tiers whose
/// threshold equals one of these bounds are applied exactly.
pub const CONTEXT_BAND_BOUNDS: [i64; 3] = [128_000, 200_000, 272_000];

/// The context band of an event with normalized input `input`.
pub fn context_band(input: i64) -> u8 {
    CONTEXT_BAND_BOUNDS
        .iter()
        .position(|bound| input <= *bound)
        .unwrap_or(CONTEXT_BAND_BOUNDS.len()) as u8
}

/// The smallest input of a band (exclusive lower bound), -1 for the first band.
pub fn band_floor(band: u8) -> i64 {
    match band {
        0 => -1,
        band => CONTEXT_BAND_BOUNDS[usize::from(band).min(CONTEXT_BAND_BOUNDS.len()) - 1],
    }
}

/// Per-1M-token rates. `None` means "not configured" (an explicit 0 is `Some(0.0)`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rates {
    pub prompt: f64,
    pub completion: f64,
    pub cache: f64,
    pub cache_read: Option<f64>,
    pub cache_creation: Option<f64>,
}

/// The price of one model: base rates and context tiers (threshold, rates).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelPrice {
    pub base: Rates,
    pub context_tiers: Vec<(i64, Rates)>,
}

/// The current prices, keyed by model name.
#[derive(Debug, Clone, Default)]
pub struct PriceBook {
    prices: HashMap<String, ModelPrice>,
}

/// The price-relevant key of a group of events.
#[derive(Debug, Clone, Copy)]
pub struct Band<'a> {
    pub model: &'a str,
    pub billing_model: &'a str,
    pub service_tier: &'a str,
    pub context_band: u8,
}

impl PriceBook {
    pub fn new(prices: HashMap<String, ModelPrice>) -> PriceBook {
        PriceBook { prices }
    }

    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    /// The cost of a band's token sums, or `None` when neither its billing model
    /// nor its analytics model has a price.
    pub fn band_cost(&self, band: Band<'_>, sums: &Metrics) -> Option<f64> {
        let price = self
            .prices
            .get(band.billing_model)
            .or_else(|| self.prices.get(band.model))?;
        let floor = band_floor(band.context_band);
        // The highest tier whose threshold the band lies above applies.
        let rates = price
            .context_tiers
            .iter()
            .filter(|(threshold, _)| *threshold <= floor && floor >= 0)
            .max_by_key(|(threshold, _)| *threshold)
            .map(|(_, rates)| rates)
            .unwrap_or(&price.base);
        Some(segment_cost(rates, sums) * tier_multiplier(band.service_tier))
    }
}

/// Flex and batch traffic is billed at half price; other tiers at list price.
fn tier_multiplier(tier: &str) -> f64 {
    match tier.trim().to_ascii_lowercase().as_str() {
        "flex" | "batch" => 0.5,
        _ => 1.0,
    }
}

/// The segment formula: prompt part = I − (C + R) − W billed at the prompt rate,
/// C at the legacy cache rate, R at the cache-read rate, W at the cache-creation
/// rate, output at the completion rate. Reasoning is never billed separately.
pub fn segment_cost(rates: &Rates, sums: &Metrics) -> f64 {
    let input = sums.input.max(0) as f64;
    let cached = sums.cached.max(0) as f64;
    let read = sums.cache_read.max(0) as f64;
    let creation = sums.cache_creation.max(0) as f64;
    let output = sums.output.max(0) as f64;
    let prompt_tokens = (input - cached - read - creation).max(0.0);
    let cache_read_rate = match rates.cache_read {
        Some(rate) => rate,
        None if rates.cache > 0.0 => rates.cache,
        None => 0.1 * rates.prompt,
    };
    let cache_creation_rate = rates.cache_creation.unwrap_or(rates.prompt);
    prompt_tokens * rates.prompt / 1e6
        + cached * rates.cache / 1e6
        + read * cache_read_rate / 1e6
        + creation * cache_creation_rate / 1e6
        + output * rates.completion / 1e6
}

/// Adds costs where unknown wins: known + unknown = unknown.
pub fn add_cost(total: Option<f64>, part: Option<f64>) -> Option<f64> {
    match (total, part) {
        (Some(total), Some(part)) => Some(total + part),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_example_costs_0_0028() {
        let mut prices = HashMap::new();
        prices.insert(
            "gpt-5".to_string(),
            ModelPrice {
                base: Rates {
                    prompt: 1.25,
                    completion: 10.0,
                    cache: 0.125,
                    cache_read: Some(0.125),
                    cache_creation: None,
                },
                context_tiers: Vec::new(),
            },
        );
        let book = PriceBook::new(prices);
        let sums = Metrics {
            input: 1000,
            output: 200,
            cached: 400,
            ..Metrics::default()
        };
        let band = Band {
            model: "gpt-5",
            billing_model: "gpt-5",
            service_tier: "",
            context_band: 0,
        };
        assert_eq!(book.band_cost(band, &sums), Some(0.0028));
        let unpriced = Band {
            model: "other",
            billing_model: "other",
            service_tier: "",
            context_band: 0,
        };
        assert_eq!(book.band_cost(unpriced, &sums), None);
        assert_eq!(add_cost(Some(1.0), None), None);
    }

    #[test]
    fn context_bands_split_at_the_bounds() {
        assert_eq!(context_band(0), 0);
        assert_eq!(context_band(128_000), 0);
        assert_eq!(context_band(128_001), 1);
        assert_eq!(context_band(272_000), 2);
        assert_eq!(context_band(272_001), 3);
        assert_eq!(band_floor(3), 272_000);
    }
}
