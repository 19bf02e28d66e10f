//! `heatmap` (local weekday × hour cells with their top contributors) and
//! `hourly_distribution` (local hour of day).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::analytics::cost::PriceBook;
use crate::analytics::query::{GroupRow, Text};
use crate::analytics::ratio;
use crate::analytics::time::Zone;
use crate::analytics::totals::{Totals, cost_key, row_cost};

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

pub(super) fn heatmap(book: &PriceBook, rows: &[GroupRow], zone: &Zone) -> Vec<HeatCell> {
    // Contributors are keyed by the rows' shared texts (no copy per row) and each
    // distinct bucket is converted to local time once.
    #[derive(Default)]
    struct Cell {
        acc: Totals,
        models: HashMap<Text, Totals>,
        keys: HashMap<Text, Totals>,
        providers: HashMap<Text, Totals>,
    }
    let unknown: Text = Text::from("Unknown");
    let mut local: HashMap<i64, (i64, i64)> = HashMap::new();
    let mut cells: BTreeMap<(i64, i64), Cell> = BTreeMap::new();
    for row in rows {
        let cost = row_cost(book, row);
        let at = *local
            .entry(row.bucket_ms)
            .or_insert_with(|| zone.weekday_hour(row.bucket_ms));
        let cell = cells.entry(at).or_default();
        cell.acc.add(row, cost);
        let model = if row.model.trim().is_empty() {
            &unknown
        } else {
            &row.model
        };
        add_to(&mut cell.models, model, row, cost);
        if let Some(identity) = &row.identity {
            if !identity.api_key_hash.trim().is_empty() {
                add_to(&mut cell.keys, &identity.api_key_hash, row, cost);
            }
            let provider = if identity.auth_provider.is_empty() {
                &identity.provider
            } else {
                &identity.auth_provider
            };
            let provider = if provider.trim().is_empty() {
                &unknown
            } else {
                provider
            };
            add_to(&mut cell.providers, provider, row, cost);
        }
    }
    let top = |map: &HashMap<Text, Totals>, cell_calls: i64| -> Vec<Contributor> {
        // Keys are distinct, so the order below is total whatever the map's order.
        let mut list: Vec<Contributor> = map
            .iter()
            .map(|(key, acc)| Contributor {
                key: key.to_string(),
                calls: acc.metrics.calls,
                success: acc.metrics.success(),
                failure: acc.metrics.failures,
                tokens: acc.metrics.total,
                cost: acc.cost,
                failure_rate: acc.metrics.failure_rate(),
                share: ratio(acc.metrics.calls as f64, cell_calls as f64),
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
    };
    cells
        .into_iter()
        .map(|((weekday, hour), cell)| {
            let m = cell.acc.metrics;
            HeatCell {
                weekday,
                hour,
                calls: m.calls,
                success: m.success(),
                failure: m.failures,
                tokens: m.total,
                cost: cell.acc.cost,
                failure_rate: m.failure_rate(),
                model_contributors: top(&cell.models, m.calls),
                api_key_contributors: top(&cell.keys, m.calls),
                provider_contributors: top(&cell.providers, m.calls),
            }
        })
        .collect()
}

fn add_to(map: &mut HashMap<Text, Totals>, key: &Text, row: &GroupRow, cost: Option<f64>) {
    match map.get_mut(key) {
        Some(totals) => totals.add(row, cost),
        None => {
            let mut totals = Totals::default();
            totals.add(row, cost);
            map.insert(key.clone(), totals);
        }
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
