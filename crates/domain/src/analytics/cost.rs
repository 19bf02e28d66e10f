//! Cost at read time: the price book and the cost of a band of token sums.
//!
//! Storage keeps token sums per band: (analytics model, billing model, service
//! tier, context band). A response's cost is the sum of its bands' costs under the
//! *current* price book, so a price change re-prices all history at once and no
//! stored cost can go stale. A band whose model has no price has an unknown cost
//! (`None`), and any sum that includes an unknown cost is unknown as well: an
//! unpriced model is never reported as free. A band without tokens costs 0 whatever
//! its model.
//!
//! # Which price
//! Candidates are the band's billing model (resolved model, else analytics model),
//! then its analytics model (the requested name without a reasoning suffix such as
//! `(high)`). The first with an exact price key wins; then, as cpamp's addition, a
//! unique case-insensitive key, then a unique key with the same provider-less name
//! (`openai/gpt-5` ↔ `gpt-5`); then the built-in GPT-5.6 family prices. The billing
//! model is the *behaviour model*: its name drives the GPT-family rules below.
//!
//! # The formula (per band; tokens clamped at 0; rates per 1M tokens)
//! ```text
//! prompt tokens = max(I − (C + R) − W, 0)
//! cost = prompt·prompt_rate·mi + C·cache_rate·mi + R·cache_read_rate·mi
//!      + W·cache_creation_rate·mi + O·completion_rate·mo          (all / 1e6)
//! cache_read_rate     = cacheRead if configured, else cache if > 0, else 0.1·prompt
//! cache_creation_rate = cacheCreation if configured, else prompt
//! ```
//! I is the normalized total input (cache buckets included whatever the provider's
//! cache accounting, "included" or "separate"), so cached tokens leave the prompt
//! part and are billed at cache rates: never twice. C (compat cached) is billed at
//! `cache` with no fallback.
//!
//! **Reasoning tokens are never billed on their own.** Providers report them inside
//! the output count (OpenAI's `completion_tokens` include reasoning), so adding them
//! would bill them twice; they only matter for the `total_tokens` fallback at ingest.
//!
//! # Rule order
//! 1. A context tier whose threshold the band lies above: base rates with the tier's
//!    configured rates over them, for all tokens, no service-tier pricing on top.
//! 2. The legacy long-context premium (price without context tiers, GPT-5.4/5.5/5.6
//!    family, input above 272k tokens): input ×2, output ×1.5; a service-tier rule's
//!    rates still apply for tiers other than priority/fast, else the multiplier; for
//!    priority/fast the long part is billed at base rates with the premium only.
//! 3. A service-tier rule whose mode or tier equals the band's tier.
//! 4. Base rates × the tier multiplier: flex/batch 0.5; priority/fast 2 for the
//!    gpt-5.6, gpt-5.4-mini, gpt-5.4 and gpt-5.3-codex families and 2.5 for gpt-5.5;
//!    1 otherwise.
//!
//! For the gpt-5.6-sol/-terra/-luna families the rates used are first completed
//! from the built-in list prices (unconfigured prompt/completion), then an
//! unconfigured cache read becomes 0.1·prompt and cache creation 1.25·prompt.
//!
//! # Context bands
//! Rollups cannot know future price tiers, so events are filed under fixed input
//! ranges. A tier whose threshold is one of the bounds ([`CONTEXT_BAND_BOUNDS`]:
//! 32k, 128k, 200k, 256k, 272k) applies exactly; a tier with another threshold is
//! applied from the first bound above it, and costs computed that way are flagged as
//! approximate (see [`Quote::approximate`]).

#![warn(missing_docs)]

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use super::Metrics;
use crate::prices::{ContextTier, ModelPrice, Rate, Rates, ServiceTierRule};

/// Upper bounds (inclusive, in normalized input tokens) of the context bands.
pub const CONTEXT_BAND_BOUNDS: [i64; 5] = [32_000, 128_000, 200_000, 256_000, 272_000];

/// Input above this is "long context" for the legacy GPT premium.
pub const LONG_CONTEXT_TOKENS: i64 = 272_000;

/// Band ids of the current scheme start here; ids 0..=3 are the first scheme
/// (bounds 128k, 200k, 272k), still read from older rollup rows.
const FIRST_BAND: u8 = 16;
const FIRST_SCHEME_BOUNDS: [i64; 3] = [128_000, 200_000, 272_000];

/// The context band of an event with normalized input `input`.
pub fn context_band(input: i64) -> u8 {
    let position = CONTEXT_BAND_BOUNDS
        .iter()
        .position(|bound| input <= *bound)
        .unwrap_or(CONTEXT_BAND_BOUNDS.len());
    FIRST_BAND + position as u8
}

/// The input range of a band: `floor < I <= ceiling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BandRange {
    /// Exclusive lower bound; -1 for the first band.
    pub floor: i64,
    /// Inclusive upper bound; `None` for the last band.
    pub ceiling: Option<i64>,
}

/// The input range of a stored band id (either scheme).
pub fn band_range(band: u8) -> BandRange {
    let (bounds, index): (&[i64], usize) = if band >= FIRST_BAND {
        (&CONTEXT_BAND_BOUNDS, usize::from(band - FIRST_BAND))
    } else {
        (&FIRST_SCHEME_BOUNDS, usize::from(band))
    };
    let index = index.min(bounds.len());
    BandRange {
        floor: if index == 0 { -1 } else { bounds[index - 1] },
        ceiling: bounds.get(index).copied(),
    }
}

/// The price-relevant key of a group of events.
#[derive(Debug, Clone, Copy)]
pub struct Band<'a> {
    /// Analytics model.
    pub model: &'a str,
    /// Resolved model, else the analytics model.
    pub billing_model: &'a str,
    /// The effective service tier ("" for none).
    pub service_tier: &'a str,
    /// The input-size band ([`context_band`] of the normalized input).
    pub context_band: u8,
}

/// How the price of a band was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceMatch {
    /// An exact price key equal to the billing model.
    BillingModel,
    /// An exact price key equal to the analytics model.
    AnalyticsModel,
    /// A unique key equal to a candidate ignoring ASCII case.
    CaseInsensitive,
    /// A unique key with the same name after the last `/`.
    ProviderlessName,
    /// The built-in GPT-5.6 family list price.
    BuiltIn,
}

impl PriceMatch {
    /// The match as price explanations name it.
    pub fn as_str(self) -> &'static str {
        match self {
            PriceMatch::BillingModel => "billing_model",
            PriceMatch::AnalyticsModel => "analytics_model",
            PriceMatch::CaseInsensitive => "case_insensitive",
            PriceMatch::ProviderlessName => "providerless_name",
            PriceMatch::BuiltIn => "built_in",
        }
    }
}

/// Which rule priced a band (see the module docs for the order).
#[derive(Debug, Clone, PartialEq)]
pub enum PriceRule {
    /// A configured context tier above `threshold_tokens` of input.
    ContextTier {
        /// The tier's threshold, input tokens.
        threshold_tokens: i64,
    },
    /// The GPT-5.4/5.5/5.6 long-context premium (input above 272k tokens).
    LongContextPremium,
    /// A service-tier rule for the request's tier.
    ServiceTier {
        /// The rule's `mode`.
        mode: String,
        /// The rule's `service_tier`.
        service_tier: String,
    },
    /// The base rates.
    Base,
}

impl PriceRule {
    /// The rule as price explanations name it.
    pub fn as_str(&self) -> &'static str {
        match self {
            PriceRule::ContextTier { .. } => "context_tier",
            PriceRule::LongContextPremium => "long_context_premium",
            PriceRule::ServiceTier { .. } => "service_tier",
            PriceRule::Base => "base",
        }
    }
}

/// One billed token class of a quote.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// `prompt`, `cached`, `cache_read`, `cache_creation` or `output`.
    pub class: &'static str,
    /// Tokens billed in this class.
    pub tokens: i64,
    /// USD per 1M tokens.
    pub rate: f64,
    /// Everything the rate is multiplied by (premium × tier multiplier).
    pub multiplier: f64,
    /// This class's cost, USD.
    pub cost: f64,
}

/// The full account of one band's cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Quote {
    /// The band's cost, USD.
    pub cost: f64,
    /// The price-table key used, or the built-in family name.
    pub price_key: String,
    /// How the price was found.
    pub matched_by: PriceMatch,
    /// The model whose name drives the GPT-family rules (the billing model).
    pub behaviour_model: String,
    /// Which rule priced the band.
    pub rule: PriceRule,
    /// The service-tier multiplier applied on top of the rates (1 when none).
    pub tier_multiplier: f64,
    /// The rates actually used (after tiers, overlays and GPT-5.6 completion).
    pub rates: Rates,
    /// The cost per token class.
    pub lines: Vec<Line>,
    /// A context tier threshold lies inside the band's input range, so events of
    /// this band may belong to different tiers (see the module docs).
    pub approximate: bool,
}

/// The current prices, keyed by model name. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct PriceBook {
    inner: std::sync::Arc<BookInner>,
}

#[derive(Debug, Default)]
struct BookInner {
    prices: HashMap<String, ModelPrice>,
    /// ASCII-lowercased key → the key, `None` when several keys fold together.
    folded: HashMap<String, Option<String>>,
    /// Lowercased name after the last `/` → the key, `None` when ambiguous.
    slugs: HashMap<String, Option<String>>,
    /// The rates and multipliers of the bands priced so far (see [`BandMemo`]).
    memo: std::sync::RwLock<BandMemo>,
}

/// What pricing a band takes besides its token sums: found once per band, since
/// finding it (price lookups, name folding, rule order) costs far more than the
/// formula, and answers price the same few bands over and over.
#[derive(Debug, Clone, Copy)]
struct Prepared {
    rates: Rates,
    input_mul: f64,
    output_mul: f64,
    tier_mul: f64,
}

impl Prepared {
    fn cost(&self, sums: &Metrics, lines: &mut Option<Vec<Line>>) -> f64 {
        segment(
            &self.rates,
            sums,
            self.input_mul,
            self.output_mul,
            self.tier_mul,
            lines,
        ) * self.tier_mul
    }
}

/// The bands a book has priced, by a hash of their texts (equal texts are checked
/// on every hit). Bands come from stored model names, so they are few; past
/// [`BandMemo::LIMIT`] bands are priced without being kept.
#[derive(Debug, Default)]
struct BandMemo {
    bands: HashMap<u64, Vec<MemoBand>, std::hash::BuildHasherDefault<WordHasher>>,
    len: usize,
}

#[derive(Debug)]
struct MemoBand {
    model: Box<str>,
    billing_model: Box<str>,
    service_tier: Box<str>,
    context_band: u8,
    prepared: Option<Prepared>,
}

impl MemoBand {
    fn is(&self, band: Band<'_>) -> bool {
        self.context_band == band.context_band
            && *self.model == *band.model
            && *self.billing_model == *band.billing_model
            && *self.service_tier == *band.service_tier
    }
}

impl BandMemo {
    const LIMIT: usize = 4096;

    fn get(&self, hash: u64, band: Band<'_>) -> Option<Option<Prepared>> {
        self.bands
            .get(&hash)?
            .iter()
            .find(|known| known.is(band))
            .map(|known| known.prepared)
    }

    fn insert(&mut self, hash: u64, band: Band<'_>, prepared: Option<Prepared>) {
        if self.len >= Self::LIMIT {
            return;
        }
        let slot = self.bands.entry(hash).or_default();
        if slot.iter().any(|known| known.is(band)) {
            return;
        }
        slot.push(MemoBand {
            model: band.model.into(),
            billing_model: band.billing_model.into(),
            service_tier: band.service_tier.into(),
            context_band: band.context_band,
            prepared,
        });
        self.len += 1;
    }
}

/// The memo's hash of a band: its texts eight bytes at a time, each followed by its
/// length, then the band id.
fn band_hash(band: Band<'_>) -> u64 {
    let mut hash = 0_u64;
    let mut mix = |word: u64| {
        hash = (hash.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    };
    for text in [band.model, band.billing_model, band.service_tier] {
        let mut chunks = text.as_bytes().chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0_u8; 8];
            word.copy_from_slice(chunk);
            mix(u64::from_le_bytes(word));
        }
        let mut rest = [0_u8; 8];
        rest[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        mix(u64::from_le_bytes(rest));
        mix(text.len() as u64);
    }
    mix(u64::from(band.context_band));
    hash
}

/// Hashes the memo's keys, which are already hashes, as they are.
#[derive(Default)]
struct WordHasher(u64);

impl std::hash::Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8)) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl PriceBook {
    /// A book of `prices`, keyed by model name.
    pub fn new(prices: HashMap<String, ModelPrice>) -> PriceBook {
        let mut folded: HashMap<String, Option<String>> = HashMap::new();
        let mut slugs: HashMap<String, Option<String>> = HashMap::new();
        for key in prices.keys() {
            for (index, name) in [
                (&mut folded, key.to_ascii_lowercase()),
                (&mut slugs, slug(key).into_owned()),
            ] {
                index
                    .entry(name)
                    .and_modify(|unique| *unique = None)
                    .or_insert_with(|| Some(key.clone()));
            }
        }
        PriceBook {
            inner: std::sync::Arc::new(BookInner {
                prices,
                folded,
                slugs,
                memo: Default::default(),
            }),
        }
    }

    /// No price is set.
    pub fn is_empty(&self) -> bool {
        self.inner.prices.is_empty()
    }

    /// The price stored under exactly `model`.
    pub fn get(&self, model: &str) -> Option<&ModelPrice> {
        self.inner.prices.get(model)
    }

    /// The cost of a band's token sums, or `None` when no price applies to it.
    pub fn band_cost(&self, band: Band<'_>, sums: &Metrics) -> Option<f64> {
        if no_tokens(sums) {
            return Some(0.0);
        }
        Some(self.prepared(band)?.cost(sums, &mut None))
    }

    /// The price of one band, looked up once, for pricing many sums of that band:
    /// [`BandPrice::cost`] answers exactly what [`PriceBook::band_cost`] would.
    pub fn band_price(&self, band: Band<'_>) -> BandPrice {
        BandPrice(self.prepared(band))
    }

    /// The band's rates and multipliers, from the memo when the band was priced
    /// before; `None` when no price applies to it.
    fn prepared(&self, band: Band<'_>) -> Option<Prepared> {
        let hash = band_hash(band);
        let memo = &self.inner.memo;
        // A poisoned lock only means a panic during a plain insert; the memo is
        // still consistent.
        if let Some(known) = memo
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(hash, band)
        {
            return known;
        }
        let prepared = self
            .resolve(band)
            .map(|(_, price, _)| prepare(&price, band).0);
        memo.write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(hash, band, prepared);
        prepared
    }

    /// The cost of a band with every step that led to it, or `None` when unpriced.
    pub fn quote(&self, band: Band<'_>, sums: &Metrics) -> Option<Quote> {
        let (key, price, matched_by) = self.resolve(band)?;
        let mut lines = Some(Vec::with_capacity(5));
        let priced = price_band(&price, band, sums, &mut lines);
        Some(Quote {
            cost: priced.cost,
            price_key: key.into_owned(),
            matched_by,
            behaviour_model: behaviour_model(band).to_string(),
            rule: priced.rule,
            tier_multiplier: priced.tier_multiplier,
            rates: priced.rates,
            lines: lines.unwrap_or_default(),
            approximate: priced.approximate,
        })
    }

    /// The billing models of the bands that carry tokens but have no price, sorted.
    pub fn unpriced<'a>(
        &self,
        bands: impl IntoIterator<Item = (Band<'a>, &'a Metrics)>,
    ) -> Vec<String> {
        let mut missing = BTreeSet::new();
        for (band, sums) in bands {
            if !no_tokens(sums) && self.resolve(band).is_none() {
                missing.insert(behaviour_model(band));
            }
        }
        missing.into_iter().map(str::to_string).collect()
    }

    /// The price for a band: (key, price, how it was found).
    fn resolve(&self, band: Band<'_>) -> Option<(Cow<'_, str>, Cow<'_, ModelPrice>, PriceMatch)> {
        let billing = band.billing_model.trim();
        let analytics = band.model.trim();
        let candidates = [
            (billing, PriceMatch::BillingModel),
            (analytics, PriceMatch::AnalyticsModel),
        ];
        let candidates = candidates
            .iter()
            .enumerate()
            // Skip blanks, and the analytics model when it equals the billing model.
            .filter(|(index, (name, _))| !(name.is_empty() || (*index == 1 && *name == billing)))
            .map(|(_, candidate)| *candidate);
        for (name, how) in candidates.clone() {
            if let Some((key, price)) = self.inner.prices.get_key_value(name) {
                return Some((Cow::Borrowed(key.as_str()), Cow::Borrowed(price), how));
            }
        }
        for (index, how) in [
            (&self.inner.folded, PriceMatch::CaseInsensitive),
            (&self.inner.slugs, PriceMatch::ProviderlessName),
        ] {
            for (name, _) in candidates.clone() {
                let folded = if how == PriceMatch::CaseInsensitive {
                    lower(name)
                } else {
                    slug(name)
                };
                if let Some(Some(key)) = index.get(folded.as_ref())
                    && let Some(price) = self.inner.prices.get(key)
                {
                    return Some((Cow::Borrowed(key.as_str()), Cow::Borrowed(price), how));
                }
            }
        }
        for (name, _) in candidates {
            if let Some((family, rates)) = built_in(name) {
                return Some((
                    Cow::Borrowed(family),
                    Cow::Owned(ModelPrice::with_rates(rates)),
                    PriceMatch::BuiltIn,
                ));
            }
        }
        None
    }
}

/// The price of one band, from [`PriceBook::band_price`].
#[derive(Debug, Clone, Copy)]
pub struct BandPrice(Option<Prepared>);

impl BandPrice {
    /// The cost of the band's token sums, as [`PriceBook::band_cost`] prices them:
    /// `Some(0.0)` without tokens, `None` when no price applies to the band.
    pub fn cost(&self, sums: &Metrics) -> Option<f64> {
        if no_tokens(sums) {
            return Some(0.0);
        }
        Some(self.0?.cost(sums, &mut None))
    }
}

/// Adds costs where unknown wins: known + unknown = unknown.
pub fn add_cost(total: Option<f64>, part: Option<f64>) -> Option<f64> {
    match (total, part) {
        (Some(total), Some(part)) => Some(total + part),
        _ => None,
    }
}

fn no_tokens(sums: &Metrics) -> bool {
    sums.input <= 0
        && sums.output <= 0
        && sums.cached <= 0
        && sums.cache_read <= 0
        && sums.cache_creation <= 0
}

fn behaviour_model<'a>(band: Band<'a>) -> &'a str {
    let billing = band.billing_model.trim();
    if billing.is_empty() {
        band.model.trim()
    } else {
        billing
    }
}

/// Lowercased name after the last `/` (borrowed when already lowercase: this runs
/// for every priced row).
fn slug(model: &str) -> Cow<'_, str> {
    let trimmed = model.trim();
    let tail = match trimmed.rfind('/') {
        Some(index) => &trimmed[index + 1..],
        None => trimmed,
    };
    lower(tail)
}

/// ASCII-lowercased, borrowed when already lowercase.
fn lower(text: &str) -> Cow<'_, str> {
    if text.bytes().any(|byte| byte.is_ascii_uppercase()) {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        Cow::Borrowed(text)
    }
}

/// `slug == family` or `slug` starts with `family-`.
fn in_family(slug: &str, family: &str) -> bool {
    slug.strip_prefix(family)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
}

/// The built-in list prices of the GPT-5.6 family: (family, rates).
fn built_in(model: &str) -> Option<(&'static str, Rates)> {
    let slug = slug(model);
    let (family, prompt, completion, cache, creation) = [
        ("gpt-5.6-sol", 5.0, 30.0, 0.5, 6.25),
        ("gpt-5.6-terra", 2.5, 15.0, 0.25, 3.125),
        ("gpt-5.6-luna", 1.0, 6.0, 0.1, 1.25),
    ]
    .into_iter()
    .find(|(family, ..)| in_family(&slug, family))?;
    Some((
        family,
        Rates {
            prompt: Rate::set(prompt),
            completion: Rate::set(completion),
            cache: Rate::set(cache),
            cache_read: Rate::set(cache),
            cache_creation: Rate::set(creation),
        },
    ))
}

/// Completes the rates of a GPT-5.6 family model from its built-in list price.
fn enrich(behaviour_slug: &str, rates: Rates) -> Rates {
    let Some((_, list)) = built_in(behaviour_slug) else {
        return rates;
    };
    let mut rates = rates;
    if !rates.prompt.configured() {
        rates.prompt.value = list.prompt.value;
    }
    if !rates.completion.configured() {
        rates.completion.value = list.completion.value;
    }
    if !rates.cache_read.configured() {
        rates.cache_read.value = rates.prompt.value * 0.1;
    }
    if !rates.cache_creation.configured() {
        rates.cache_creation.value = rates.prompt.value * 1.25;
    }
    rates
}

/// The premium-eligible models: gpt-5.6*, gpt-5.5, gpt-5.4 and gpt-5.4-pro (with
/// dated snapshots).
fn has_long_context_premium(slug: &str) -> bool {
    let dated = |base: &str| {
        slug == base
            || slug
                .strip_prefix(base)
                .is_some_and(|rest| rest.starts_with("-20"))
    };
    in_family(slug, "gpt-5.6") || dated("gpt-5.5") || dated("gpt-5.4") || dated("gpt-5.4-pro")
}

/// The multiplier of a service tier when no explicit rule prices it.
pub fn tier_multiplier(behaviour_model: &str, tier: &str) -> f64 {
    let tier = lower(tier.trim());
    match tier.as_ref() {
        "flex" | "batch" => 0.5,
        "priority" | "fast" => {
            let slug = slug(behaviour_model);
            match () {
                () if in_family(&slug, "gpt-5.6") => 2.0,
                () if in_family(&slug, "gpt-5.5") => 2.5,
                () if in_family(&slug, "gpt-5.4-mini") => 2.0,
                () if in_family(&slug, "gpt-5.4") => 2.0,
                () if in_family(&slug, "gpt-5.3-codex") => 2.0,
                () => 1.0,
            }
        }
        _ => 1.0,
    }
}

struct Priced {
    cost: f64,
    rule: PriceRule,
    tier_multiplier: f64,
    rates: Rates,
    approximate: bool,
}

/// The context tier a band lies above, and whether another threshold cuts the band.
fn context_tier(price: &ModelPrice, range: BandRange) -> (Option<&ContextTier>, bool) {
    let active = price
        .context_tiers
        .iter()
        .filter(|tier| range.floor >= 0 && tier.threshold_tokens <= range.floor)
        .max_by_key(|tier| tier.threshold_tokens);
    let inside = price.context_tiers.iter().any(|tier| {
        tier.threshold_tokens > range.floor
            && range
                .ceiling
                .is_none_or(|ceiling| tier.threshold_tokens < ceiling)
    });
    (active, inside)
}

fn service_rule<'a>(price: &'a ModelPrice, tier: &str) -> Option<&'a ServiceTierRule> {
    if tier.is_empty() {
        return None;
    }
    price
        .service_tiers
        .iter()
        .find(|rule| rule.mode == tier || rule.service_tier == tier)
}

fn price_band(
    price: &ModelPrice,
    band: Band<'_>,
    sums: &Metrics,
    lines: &mut Option<Vec<Line>>,
) -> Priced {
    let (prepared, rule, approximate) = prepare(price, band);
    Priced {
        cost: prepared.cost(sums, lines),
        rule,
        tier_multiplier: prepared.tier_mul,
        rates: prepared.rates,
        approximate,
    }
}

/// Which rule prices a band, with the rates and multipliers it applies, and
/// whether the band's cost is approximate.
fn prepare(price: &ModelPrice, band: Band<'_>) -> (Prepared, PriceRule, bool) {
    let behaviour = slug(behaviour_model(band));
    let tier = lower(band.service_tier.trim());
    let range = band_range(band.context_band);
    let (active, approximate) = context_tier(price, range);
    let long = range.floor >= LONG_CONTEXT_TOKENS;
    let base = &price.rates;
    let rule_rates = |rule: &ServiceTierRule| enrich(&behaviour, base.overlaid(&rule.rates));
    let rule_of = |rule: &ServiceTierRule| PriceRule::ServiceTier {
        mode: rule.mode.clone(),
        service_tier: rule.service_tier.clone(),
    };
    let (rates, rule, (input_mul, output_mul), tier_mul) = if let Some(active) = active {
        (
            enrich(&behaviour, *base).overlaid(&active.rates),
            PriceRule::ContextTier {
                threshold_tokens: active.threshold_tokens,
            },
            (1.0, 1.0),
            1.0,
        )
    } else if price.context_tiers.is_empty() && has_long_context_premium(&behaviour) && long {
        let premium = (2.0, 1.5);
        match service_rule(price, &tier) {
            Some(rule) if tier != "priority" && tier != "fast" => (
                rule_rates(rule),
                PriceRule::LongContextPremium,
                premium,
                1.0,
            ),
            // Priority/fast long-context traffic pays the premium on base rates only.
            _ if tier == "priority" || tier == "fast" => (
                enrich(&behaviour, *base),
                PriceRule::LongContextPremium,
                premium,
                1.0,
            ),
            _ => (
                enrich(&behaviour, *base),
                PriceRule::LongContextPremium,
                premium,
                tier_multiplier(&behaviour, &tier),
            ),
        }
    } else if let Some(rule) = service_rule(price, &tier) {
        (rule_rates(rule), rule_of(rule), (1.0, 1.0), 1.0)
    } else {
        (
            enrich(&behaviour, *base),
            PriceRule::Base,
            (1.0, 1.0),
            tier_multiplier(&behaviour, &tier),
        )
    };
    (
        Prepared {
            rates,
            input_mul,
            output_mul,
            tier_mul,
        },
        rule,
        approximate,
    )
}

/// The segment formula (module docs), evaluated term by term in the written order
/// so results equal the Go server's to the last bit.
fn segment(
    rates: &Rates,
    sums: &Metrics,
    input_mul: f64,
    output_mul: f64,
    tier_mul: f64,
    lines: &mut Option<Vec<Line>>,
) -> f64 {
    let input = sums.input.max(0);
    let cached = sums.cached.max(0);
    let read = sums.cache_read.max(0);
    let creation = sums.cache_creation.max(0);
    let output = sums.output.max(0);
    let prompt_tokens = (input - cached - read - creation).max(0);
    let cache_read_rate = if rates.cache_read.configured() {
        rates.cache_read.value
    } else if rates.cache.value > 0.0 {
        rates.cache.value
    } else {
        0.1 * rates.prompt.value
    };
    let cache_creation_rate = if rates.cache_creation.configured() {
        rates.cache_creation.value
    } else {
        rates.prompt.value
    };
    let terms = [
        ("prompt", prompt_tokens, rates.prompt.value, input_mul),
        ("cached", cached, rates.cache.value, input_mul),
        ("cache_read", read, cache_read_rate, input_mul),
        ("cache_creation", creation, cache_creation_rate, input_mul),
        ("output", output, rates.completion.value, output_mul),
    ];
    let mut cost = 0.0;
    for (class, tokens, rate, multiplier) in terms {
        let term = tokens as f64 * rate * multiplier / 1e6;
        cost += term;
        if let Some(lines) = lines.as_mut() {
            lines.push(Line {
                class,
                tokens,
                rate,
                multiplier: multiplier * tier_mul,
                cost: term * tier_mul,
            });
        }
    }
    cost
}

#[cfg(test)]
mod tests;
