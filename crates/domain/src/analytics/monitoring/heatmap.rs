//! `heatmap` (local weekday × hour cells with their top contributors) and
//! `hourly_distribution` (local hour of day).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::analytics::cost::{Band, BandPrice, PriceBook, add_cost};
use crate::analytics::heat::{HeatParts, HeatSums, WordMap};
use crate::analytics::query::{GroupRow, Text};
use crate::analytics::ratio;
use crate::analytics::time::Zone;
use crate::analytics::totals::{Totals, cost_key};

/// One `hourly_distribution[]` point: every call of the range at this local hour of
/// day, whatever the date.
#[derive(Debug, Serialize)]
pub struct HourPoint {
    /// Hour of day in the request's zone, 0–23.
    pub hour: i64,
    /// Calls at that hour.
    pub calls: i64,
    /// Total tokens at that hour.
    pub tokens: i64,
}

/// One `heatmap[]` cell: the calls of one local weekday and hour across the range.
#[derive(Debug, Serialize)]
pub struct HeatCell {
    /// Day of week in the request's zone, 0 = Sunday … 6 = Saturday.
    pub weekday: i64,
    /// Hour of day in the request's zone, 0–23.
    pub hour: i64,
    /// Calls in the cell.
    pub calls: i64,
    /// Calls that succeeded.
    pub success: i64,
    /// Calls that failed.
    pub failure: i64,
    /// Total tokens in the cell.
    pub tokens: i64,
    /// Cost in US dollars; `null` when a model in the cell has no price.
    pub cost: Option<f64>,
    /// `failure / calls`, 0–1.
    pub failure_rate: f64,
    /// Top five analytics models of the cell (`Unknown` for a blank model).
    pub model_contributors: Vec<Contributor>,
    /// Top five client API-key hashes of the cell (calls without a key are left out).
    pub api_key_contributors: Vec<Contributor>,
    /// Top five providers of the cell (auth-file provider, else event provider;
    /// `Unknown` when blank).
    pub provider_contributors: Vec<Contributor>,
}

/// One contributor of a heatmap cell; lists are ordered by calls, then cost, then key.
#[derive(Debug, Serialize)]
pub struct Contributor {
    /// The model, API-key hash or provider.
    pub key: String,
    /// Its calls in the cell.
    pub calls: i64,
    /// Of those, calls that succeeded.
    pub success: i64,
    /// Of those, calls that failed.
    pub failure: i64,
    /// Its total tokens in the cell.
    pub tokens: i64,
    /// Its cost in US dollars; `null` when a model has no price.
    pub cost: Option<f64>,
    /// `failure / calls`, 0–1.
    pub failure_rate: f64,
    /// Its share of the cell's calls, 0–1.
    pub share: f64,
}

pub(super) fn heatmap(book: &PriceBook, heat: &HeatParts) -> Vec<HeatCell> {
    // The stand-in for a blank model, as a contributor.
    let unknown: Text = Text::from("Unknown");
    // Each distinct band is priced once: looking its price up costs far more
    // than the formula, and a range holds few bands in many cells.
    let mut prices: WordMap<(u32, u32, u32, u8), BandPrice> = WordMap::default();
    // A contributor per text index, reused cell after cell (the touched indexes
    // are listed, so clearing costs what the cell used).
    let mut models = Contributors::new(heat.texts.len());
    let mut keys = Contributors::new(heat.texts.len());
    let mut providers = Contributors::new(heat.texts.len());
    let mut out = Vec::new();
    for (index, parts) in heat.cells.iter().enumerate() {
        if parts.is_empty() {
            continue;
        }
        let mut acc = HeatTotals::default();
        for (key, sums) in parts {
            let metrics = &sums.metrics();
            let price = *prices
                .entry((
                    key.model,
                    key.billing_model,
                    key.service_tier,
                    key.context_band,
                ))
                .or_insert_with(|| {
                    book.band_price(Band {
                        model: heat.text(key.model),
                        billing_model: heat.text(key.billing_model),
                        service_tier: heat.text(key.service_tier),
                        context_band: key.context_band,
                    })
                });
            let cost = price.cost(metrics);
            acc.add(sums, cost);
            models.add(key.model, sums, cost);
            if let Some(api_key) = key.api_key {
                keys.add(api_key, sums, cost);
            }
            if let Some(provider) = key.provider {
                providers.add(provider, sums, cost);
            }
        }
        let m = acc.sums.metrics();
        out.push(HeatCell {
            weekday: (index / 24) as i64,
            hour: (index % 24) as i64,
            calls: m.calls,
            success: m.success(),
            failure: m.failures,
            tokens: m.total,
            cost: acc.cost,
            failure_rate: m.failure_rate(),
            model_contributors: models.top(heat, Some(&unknown), m.calls),
            api_key_contributors: keys.top(heat, None, m.calls),
            provider_contributors: providers.top(heat, None, m.calls),
        });
    }
    out
}

/// The sums and cost of a cell or contributor: the heat sums of its parts and
/// their summed cost (`None` when any part had no price; `Some(0.0)` without
/// parts, as [`Totals`]).
#[derive(Debug, Clone, Copy)]
struct HeatTotals {
    sums: HeatSums,
    cost: Option<f64>,
}

impl Default for HeatTotals {
    fn default() -> HeatTotals {
        HeatTotals {
            sums: HeatSums::default(),
            cost: Totals::default().cost,
        }
    }
}

impl HeatTotals {
    fn add(&mut self, sums: &HeatSums, cost: Option<f64>) {
        self.sums.add(sums);
        self.cost = add_cost(self.cost, cost);
    }
}

/// The contributors of one cell by text index.
struct Contributors {
    totals: Vec<HeatTotals>,
    seen: Vec<bool>,
    touched: Vec<u32>,
}

impl Contributors {
    fn new(texts: usize) -> Contributors {
        Contributors {
            totals: vec![HeatTotals::default(); texts],
            seen: vec![false; texts],
            touched: Vec::new(),
        }
    }

    fn add(&mut self, index: u32, sums: &HeatSums, cost: Option<f64>) {
        let Some(slot) = self.totals.get_mut(index as usize) else {
            return;
        };
        if !std::mem::replace(&mut self.seen[index as usize], true) {
            self.touched.push(index);
        }
        slot.add(sums, cost);
    }

    /// The top five contributors of the cell, by calls, then cost, then key, and
    /// the slots cleared for the next cell. With `blank`, a contributor whose text
    /// is blank is listed under that text.
    fn top(&mut self, heat: &HeatParts, blank: Option<&Text>, cell_calls: i64) -> Vec<Contributor> {
        // Equal texts behind different indexes are one contributor.
        let mut by_text: HashMap<&str, HeatTotals> = HashMap::with_capacity(self.touched.len());
        for index in self.touched.drain(..) {
            let totals = std::mem::take(&mut self.totals[index as usize]);
            self.seen[index as usize] = false;
            let mut text: &str = heat.text(index);
            if let Some(blank) = blank
                && text.trim().is_empty()
            {
                text = blank;
            }
            by_text
                .entry(text)
                .or_default()
                .add(&totals.sums, totals.cost);
        }
        // Keys are distinct, so the order below is total whatever the map's order.
        let mut list: Vec<Contributor> = by_text
            .into_iter()
            .map(|(key, acc)| {
                let m = acc.sums.metrics();
                Contributor {
                    key: key.to_string(),
                    calls: m.calls,
                    success: m.success(),
                    failure: m.failures,
                    tokens: m.total,
                    cost: acc.cost,
                    failure_rate: m.failure_rate(),
                    share: ratio(m.calls as f64, cell_calls as f64),
                }
            })
            .collect();
        list.sort_by(|a, b| {
            b.calls
                .cmp(&a.calls)
                .then_with(|| cost_key(b.cost).total_cmp(&cost_key(a.cost)))
                .then_with(|| a.key.cmp(&b.key))
        });
        list.truncate(5);
        list
    }
}

/// Calls and tokens per local hour of day, hours with calls only, ascending.
pub(super) fn hourly_distribution(rows: &[GroupRow], zone: &Zone) -> Vec<HourPoint> {
    let mut local: HashMap<i64, i64> = HashMap::new();
    let mut hours: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for row in rows {
        let hour = *local
            .entry(row.bucket_ms)
            .or_insert_with(|| zone.weekday_hour(row.bucket_ms).1);
        let entry = hours.entry(hour).or_default();
        entry.0 = entry.0.saturating_add(row.metrics.calls);
        entry.1 = entry.1.saturating_add(row.metrics.total);
    }
    hour_points(hours)
}

/// [`hourly_distribution`] of the heatmap's parts.
pub(super) fn hourly_distribution_of_parts(heat: &HeatParts) -> Vec<HourPoint> {
    let mut hours = [(0_i64, 0_i64); 24];
    for (index, parts) in heat.cells.iter().enumerate() {
        let entry = &mut hours[index % 24];
        for (_, metrics) in parts {
            entry.0 = entry.0.saturating_add(metrics.calls);
            entry.1 = entry.1.saturating_add(metrics.total);
        }
    }
    hour_points((0_i64..).zip(hours))
}

/// The hours with calls, in the order given, as points.
fn hour_points(hours: impl IntoIterator<Item = (i64, (i64, i64))>) -> Vec<HourPoint> {
    hours
        .into_iter()
        .filter(|(_, (calls, _))| *calls > 0)
        .map(|(hour, (calls, tokens))| HourPoint {
            hour,
            calls,
            tokens,
        })
        .collect()
}
