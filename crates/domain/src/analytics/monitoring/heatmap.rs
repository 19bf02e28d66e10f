//! `heatmap` (local weekday × hour cells with their top contributors) and
//! `hourly_distribution` (local hour of day).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use serde::Serialize;

use crate::analytics::cost::{Band, PriceBook, add_cost};
use crate::analytics::query::{GroupRow, Text};
use crate::analytics::time::Zone;
use crate::analytics::totals::{Totals, cost_key};
use crate::analytics::{Metrics, ratio};

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
    let unknown: Text = Text::from("Unknown");
    // Rows are first summed per cell and per everything the cell shows or prices
    // by, so each distinct band is priced once however many dates and credentials
    // the rows span. Texts come from shared caches, so their pointers stand for
    // them here; contributors with equal texts behind different pointers are
    // merged when the cell is finished.
    let mut local: WordMap<i64, usize> = WordMap::default();
    // One map per cell (`weekday * 24 + hour`): stores hand rows over a bucket at a
    // time, so consecutive rows land in one small map.
    let mut parts: Vec<WordMap<PartKey, Part<'_>>> =
        (0..7 * 24).map(|_| WordMap::default()).collect();
    // Rows of one bucket come together, so the cell of the last bucket is kept.
    let mut last: Option<(i64, usize)> = None;
    for row in rows {
        let cell = match last {
            Some((bucket_ms, cell)) if bucket_ms == row.bucket_ms => cell,
            _ => {
                let cell = *local.entry(row.bucket_ms).or_insert_with(|| {
                    let (weekday, hour) = zone.weekday_hour(row.bucket_ms);
                    usize::try_from(weekday * 24 + hour).unwrap_or(0)
                });
                last = Some((row.bucket_ms, cell));
                cell
            }
        };
        let model = if row.model.trim().is_empty() {
            &unknown
        } else {
            &row.model
        };
        let (key, provider) = match &row.identity {
            Some(identity) => {
                let key =
                    (!identity.api_key_hash.trim().is_empty()).then_some(&identity.api_key_hash);
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
                (key, Some(provider))
            }
            None => (None, None),
        };
        let part = PartKey {
            model: pointer(&row.model),
            billing: pointer(&row.billing_model),
            tier: pointer(&row.service_tier),
            band: row.context_band,
            failed: row.failed,
            key: key.map_or(0, pointer),
            provider: provider.map_or(0, pointer),
        };
        parts[cell]
            .entry(part)
            .or_insert_with(|| Part {
                band: Band {
                    model: &row.model,
                    billing_model: &row.billing_model,
                    service_tier: &row.service_tier,
                    context_band: row.context_band,
                },
                model: Named::of(model),
                key: key.map(Named::of),
                provider: provider.map(Named::of),
                metrics: Metrics::default(),
            })
            .metrics
            .add(&row.metrics);
    }
    #[derive(Default)]
    struct Cell<'r> {
        acc: Totals,
        models: WordMap<usize, (&'r Text, Totals)>,
        keys: WordMap<usize, (&'r Text, Totals)>,
        providers: WordMap<usize, (&'r Text, Totals)>,
    }
    let mut cells: BTreeMap<usize, Cell<'_>> = BTreeMap::new();
    for (index, part) in parts
        .iter()
        .enumerate()
        .flat_map(|(index, parts)| parts.values().map(move |part| (index, part)))
    {
        let cost = book.band_cost(part.band, &part.metrics);
        let cell = cells.entry(index).or_default();
        add_metrics(&mut cell.acc, &part.metrics, cost);
        add_to(&mut cell.models, part.model, &part.metrics, cost);
        if let Some(key) = part.key {
            add_to(&mut cell.keys, key, &part.metrics, cost);
        }
        if let Some(provider) = part.provider {
            add_to(&mut cell.providers, provider, &part.metrics, cost);
        }
    }
    cells
        .into_iter()
        .map(|(cell, parts)| {
            let m = parts.acc.metrics;
            HeatCell {
                weekday: (cell / 24) as i64,
                hour: (cell % 24) as i64,
                calls: m.calls,
                success: m.success(),
                failure: m.failures,
                tokens: m.total,
                cost: parts.acc.cost,
                failure_rate: m.failure_rate(),
                model_contributors: top(&parts.models, m.calls),
                api_key_contributors: top(&parts.keys, m.calls),
                provider_contributors: top(&parts.providers, m.calls),
            }
        })
        .collect()
}

/// What a heatmap cell is summed by: the price band's texts and the
/// contributors' texts, as pointers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PartKey {
    model: usize,
    billing: usize,
    tier: usize,
    band: u8,
    failed: bool,
    key: usize,
    provider: usize,
}

/// The summed metrics of one [`PartKey`], with its band (held here rather than
/// read through its first row when priced: the rows are many and far apart).
struct Part<'r> {
    band: Band<'r>,
    model: Named<'r>,
    key: Option<Named<'r>>,
    provider: Option<Named<'r>>,
    metrics: Metrics,
}

/// A map keyed by words (pointers, times, small integers) the heatmap builds
/// itself, hashed by multiply-rotate rather than SipHash: no key comes from a
/// client, so flooding resistance buys nothing here.
type WordMap<K, V> = HashMap<K, V, BuildHasherDefault<WordHasher>>;

#[derive(Default)]
struct WordHasher(u64);

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(u64::from(*byte));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.write_u64(u64::from(value));
    }

    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }

    fn write_i64(&mut self, value: i64) {
        self.write_u64(value as u64);
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        // The product's high bits are the well-mixed ones; the table indexes by the
        // low bits (and pointers' low bits are all zero).
        self.0.rotate_left(26)
    }
}

fn pointer(text: &Text) -> usize {
    Arc::as_ptr(text).cast::<u8>() as usize
}

fn add_metrics(totals: &mut Totals, metrics: &Metrics, cost: Option<f64>) {
    totals.metrics.add(metrics);
    totals.cost = add_cost(totals.cost, cost);
}

/// A contributor's text with its pointer, taken while its row is at hand: the
/// text is read again only when the contributor is first seen in a cell.
#[derive(Clone, Copy)]
struct Named<'r> {
    pointer: usize,
    text: &'r Text,
}

impl<'r> Named<'r> {
    fn of(text: &'r Text) -> Named<'r> {
        Named {
            pointer: pointer(text),
            text,
        }
    }
}

fn add_to<'r>(
    map: &mut WordMap<usize, (&'r Text, Totals)>,
    named: Named<'r>,
    metrics: &Metrics,
    cost: Option<f64>,
) {
    let entry = map
        .entry(named.pointer)
        .or_insert_with(|| (named.text, Totals::default()));
    add_metrics(&mut entry.1, metrics, cost);
}

/// The top five contributors of a cell, by calls, then cost, then key.
fn top(map: &WordMap<usize, (&Text, Totals)>, cell_calls: i64) -> Vec<Contributor> {
    // Equal texts behind different pointers are one contributor.
    let mut by_text: HashMap<&str, Totals> = HashMap::with_capacity(map.len());
    for (text, totals) in map.values() {
        let entry = by_text.entry(&***text).or_default();
        add_metrics(entry, &totals.metrics, totals.cost);
    }
    // Keys are distinct, so the order below is total whatever the map's order.
    let mut list: Vec<Contributor> = by_text
        .into_iter()
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
