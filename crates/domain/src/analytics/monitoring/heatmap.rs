//! `heatmap` (local weekday × hour cells with their top contributors) and
//! `hourly_distribution` (local hour of day).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::analytics::cost::PriceBook;
use crate::analytics::query::{GroupRow, Text};
use crate::analytics::ratio;
use crate::analytics::time::Zone;
use crate::analytics::totals::{Totals, cost_key, row_cost};

#[derive(Debug, Serialize)]
pub struct HourPoint {
    pub hour: i64,
    pub calls: i64,
    pub tokens: i64,
}

#[derive(Debug, Serialize)]
pub struct HeatCell {
    pub weekday: i64,
    pub hour: i64,
    pub calls: i64,
    pub success: i64,
    pub failure: i64,
    pub tokens: i64,
    pub cost: Option<f64>,
    pub failure_rate: f64,
    pub model_contributors: Vec<Contributor>,
    pub api_key_contributors: Vec<Contributor>,
    pub provider_contributors: Vec<Contributor>,
}

#[derive(Debug, Serialize)]
pub struct Contributor {
    pub key: String,
    pub calls: i64,
    pub success: i64,
    pub failure: i64,
    pub tokens: i64,
    pub cost: Option<f64>,
    pub failure_rate: f64,
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
