//! The sums the heatmap is built from ([`HeatParts`]): per local weekday hour, per
//! price band, client API-key hash and provider, across the dates of the range
//! (failed and successful calls share a part, whose sums count the failures).
//! Storage answers with them directly ([`HeatCollector`] keeps its texts by
//! index), so no row is made per stored entry; rows that storage reads as group
//! rows (raw edges, identity filters) are folded in with
//! [`HeatCollector::add_row`].

#![warn(missing_docs)]

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use super::Metrics;
use super::query::{GroupRow, Identity, Text};
use super::time::Zone;

/// Cells of a heatmap: seven weekdays of 24 hours, `weekday * 24 + hour`.
pub const CELLS: usize = 7 * 24;

/// What a heatmap cell's calls are summed by: the price band and the
/// contributors, each text an index into [`HeatParts::texts`]. Texts are
/// told apart by their stored identity (the dictionary entry), as rows tell them
/// apart by their shared pointers; equal texts of different entries are merged
/// only when a cell's contributors are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeatKey {
    /// Analytics model.
    pub model: u32,
    /// The model the cost is priced as.
    pub billing_model: u32,
    /// Effective service tier.
    pub service_tier: u32,
    /// Input-size band.
    pub context_band: u8,
    /// The client API-key hash; `None` for calls without one (a blank hash).
    pub api_key: Option<u32>,
    /// The provider (the auth-file provider, else the event's; `Unknown` when
    /// blank); `None` for rows read without an identity.
    pub provider: Option<u32>,
}

impl Hash for HeatKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Three words rather than a write per field: this is hashed once per
        // stored entry of the range.
        let option = |value: Option<u32>| value.map_or(0, |index| u64::from(index) + 1);
        state.write_u64(u64::from(self.model) << 32 | u64::from(self.billing_model));
        state.write_u64(u64::from(self.service_tier) << 32 | option(self.provider));
        state.write_u64(option(self.api_key) << 8 | u64::from(self.context_band));
    }
}

/// The sums of a heat part: the fields of [`Metrics`] the heatmap reads (calls,
/// failures, the token sums cost is priced from, and the total).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeatSums {
    /// Upstream attempts.
    pub calls: i64,
    /// Failed attempts.
    pub failures: i64,
    /// Normalized total input.
    pub input: i64,
    /// Output tokens.
    pub output: i64,
    /// Compat cached tokens.
    pub cached: i64,
    /// Input read from the cache.
    pub cache_read: i64,
    /// Input written to the cache.
    pub cache_creation: i64,
    /// Total tokens as reported.
    pub total: i64,
}

impl HeatSums {
    /// The heat sums of `metrics`.
    pub fn of(metrics: &Metrics) -> HeatSums {
        HeatSums {
            calls: metrics.calls,
            failures: metrics.failures,
            input: metrics.input,
            output: metrics.output,
            cached: metrics.cached,
            cache_read: metrics.cache_read,
            cache_creation: metrics.cache_creation,
            total: metrics.total,
        }
    }

    /// Adds `other`, saturating at the `i64` bounds like [`Metrics::add`].
    pub fn add(&mut self, other: &HeatSums) {
        let sum = |a: &mut i64, b: i64| *a = a.saturating_add(b);
        sum(&mut self.calls, other.calls);
        sum(&mut self.failures, other.failures);
        sum(&mut self.input, other.input);
        sum(&mut self.output, other.output);
        sum(&mut self.cached, other.cached);
        sum(&mut self.cache_read, other.cache_read);
        sum(&mut self.cache_creation, other.cache_creation);
        sum(&mut self.total, other.total);
    }

    /// These sums as metrics (the fields they do not hold are 0).
    pub fn metrics(&self) -> Metrics {
        Metrics {
            calls: self.calls,
            failures: self.failures,
            input: self.input,
            output: self.output,
            cached: self.cached,
            cache_read: self.cache_read,
            cache_creation: self.cache_creation,
            total: self.total,
            ..Metrics::default()
        }
    }
}

/// The heatmap's sums of a scope.
#[derive(Debug, Clone, Default)]
pub struct HeatParts {
    /// The texts the keys name, by index.
    pub texts: Vec<Text>,
    /// Per cell (`weekday * 24 + hour` in the request's zone, weekday 0 = Sunday),
    /// the summed metrics of each distinct key, in the order the keys were first
    /// added; [`CELLS`] long (or empty when nothing was counted).
    pub cells: Vec<Vec<(HeatKey, HeatSums)>>,
}

impl HeatParts {
    /// The text of an index (`""` for an index it does not hold).
    pub fn text(&self, index: u32) -> &Text {
        static EMPTY: std::sync::OnceLock<Text> = std::sync::OnceLock::new();
        self.texts
            .get(index as usize)
            .unwrap_or_else(|| EMPTY.get_or_init(|| Text::from("")))
    }
}

/// A map keyed by words (indexes, pointers, times) the analytics code builds
/// itself, hashed by multiply-rotate rather than SipHash: no key comes from a
/// client, so flooding resistance buys nothing here.
pub(crate) type WordMap<K, V> = HashMap<K, V, BuildHasherDefault<WordHasher>>;

/// The hasher of [`WordMap`].
#[derive(Default)]
pub(crate) struct WordHasher(u64);

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(u64::from(*byte));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.write_u64(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
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

/// One cell's parts, in the order their keys were first added, and the position
/// of each key among them (`None` until a single add needs it: [`HeatCollector::add_cell`]
/// looks keys up in a map it reuses from cell to cell).
type CellParts = (Vec<(HeatKey, HeatSums)>, Option<WordMap<HeatKey, u32>>);

/// Gathers [`HeatParts`]: texts are interned by their shared pointer (storage
/// hands out one pointer per dictionary entry), and equal keys of a cell are
/// summed.
pub struct HeatCollector {
    texts: Vec<Text>,
    by_pointer: WordMap<usize, u32>,
    unknown: u32,
    /// Per cell, its parts and where each key sits among them.
    cells: Vec<CellParts>,
    /// Cell of the last local hour looked up, and its (weekday, hour) index.
    last: Option<(i64, usize)>,
    local: WordMap<i64, usize>,
    /// The key positions [`HeatCollector::add_cell`] uses, one cell at a time.
    scratch: WordMap<HeatKey, u32>,
}

impl Default for HeatCollector {
    fn default() -> HeatCollector {
        HeatCollector::new()
    }
}

impl HeatCollector {
    /// An empty collector.
    pub fn new() -> HeatCollector {
        HeatCollector {
            // The blank provider's stand-in comes first.
            texts: vec![Text::from("Unknown")],
            by_pointer: WordMap::default(),
            unknown: 0,
            cells: (0..CELLS).map(|_| Default::default()).collect(),
            last: None,
            local: WordMap::default(),
            scratch: WordMap::default(),
        }
    }

    /// The index of a text, by its pointer.
    pub fn text(&mut self, text: &Text) -> u32 {
        let pointer = Arc::as_ptr(text).cast::<u8>() as usize;
        if let Some(known) = self.by_pointer.get(&pointer) {
            return *known;
        }
        let index = u32::try_from(self.texts.len()).unwrap_or(u32::MAX);
        self.texts.push(text.clone());
        self.by_pointer.insert(pointer, index);
        index
    }

    /// The API-key hash (`None` when blank) and the provider (the auth-file
    /// provider, else the event's; `Unknown` when blank) of an identity, as the
    /// heatmap lists them.
    pub fn contributors(&mut self, identity: &Identity) -> (Option<u32>, u32) {
        let key =
            (!identity.api_key_hash.trim().is_empty()).then(|| self.text(&identity.api_key_hash));
        let provider = if identity.auth_provider.is_empty() {
            &identity.provider
        } else {
            &identity.auth_provider
        };
        let provider = if provider.trim().is_empty() {
            self.unknown
        } else {
            self.text(provider)
        };
        (key, provider)
    }

    /// The cell (`weekday * 24 + hour`) of an instant in `zone`, remembered per
    /// instant (callers look up the starts of local hours, which repeat).
    pub fn cell(&mut self, zone: &Zone, ms: i64) -> usize {
        match self.last {
            Some((last_ms, cell)) if last_ms == ms => cell,
            _ => {
                let cell = *self.local.entry(ms).or_insert_with(|| {
                    let (weekday, hour) = zone.weekday_hour(ms);
                    usize::try_from(weekday * 24 + hour).unwrap_or(0) % CELLS
                });
                self.last = Some((ms, cell));
                cell
            }
        }
    }

    /// Adds `sums` to a key of a cell.
    pub fn add(&mut self, cell: usize, key: HeatKey, sums: &HeatSums) {
        let (parts, index) = &mut self.cells[cell % CELLS];
        let index = index.get_or_insert_with(|| positions(parts));
        add_part(parts, index, key, sums);
    }

    /// [`HeatCollector::add_cell`] for keys the caller knows to be distinct from
    /// one another: a cell without parts yet takes them as they come, without
    /// looking any up.
    pub fn add_distinct_cell(&mut self, cell: usize, added: &[(HeatKey, HeatSums)]) {
        let (parts, index) = &mut self.cells[cell % CELLS];
        if !parts.is_empty() {
            return self.add_cell(cell, added);
        }
        *index = None;
        parts.extend_from_slice(added);
    }

    /// Adds each of `added` to its key of a cell, as [`HeatCollector::add`] would
    /// one after the other, through a map of positions reused from cell to cell
    /// (so a source that fills cell after cell keeps one small map in cache).
    pub fn add_cell(&mut self, cell: usize, added: &[(HeatKey, HeatSums)]) {
        let (parts, index) = &mut self.cells[cell % CELLS];
        *index = None;
        let scratch = &mut self.scratch;
        scratch.clear();
        scratch.reserve(parts.len() + added.len());
        for (at, (key, _)) in parts.iter().enumerate() {
            scratch
                .entry(*key)
                .or_insert(u32::try_from(at).unwrap_or(u32::MAX));
        }
        parts.reserve(added.len());
        for (key, sums) in added {
            add_part(parts, scratch, *key, sums);
        }
    }

    /// Adds a group row of a `(zone, Hour)` timeline (its bucket is the start of a
    /// local hour).
    pub fn add_row(&mut self, zone: &Zone, row: &GroupRow) {
        let cell = self.cell(zone, row.bucket_ms);
        let (api_key, provider) = match &row.identity {
            Some(identity) => {
                let (key, provider) = self.contributors(identity);
                (key, Some(provider))
            }
            None => (None, None),
        };
        let key = HeatKey {
            model: self.text(&row.model),
            billing_model: self.text(&row.billing_model),
            service_tier: self.text(&row.service_tier),
            context_band: row.context_band,
            api_key,
            provider,
        };
        self.add(cell, key, &HeatSums::of(&row.metrics));
    }

    /// The collected parts.
    pub fn finish(self) -> HeatParts {
        HeatParts {
            texts: self.texts,
            cells: self.cells.into_iter().map(|(parts, _)| parts).collect(),
        }
    }
}

/// The positions of a cell's keys among its parts.
fn positions(parts: &[(HeatKey, HeatSums)]) -> WordMap<HeatKey, u32> {
    let mut index = WordMap::default();
    index.reserve(parts.len());
    for (at, (key, _)) in parts.iter().enumerate() {
        index
            .entry(*key)
            .or_insert(u32::try_from(at).unwrap_or(u32::MAX));
    }
    index
}

/// Adds `sums` to the part of `key` (a new part at the end when it has none).
fn add_part(
    parts: &mut Vec<(HeatKey, HeatSums)>,
    index: &mut WordMap<HeatKey, u32>,
    key: HeatKey,
    sums: &HeatSums,
) {
    match index.entry(key) {
        std::collections::hash_map::Entry::Occupied(at) => {
            parts[*at.get() as usize].1.add(sums);
        }
        std::collections::hash_map::Entry::Vacant(slot) => {
            slot.insert(u32::try_from(parts.len()).unwrap_or(u32::MAX));
            parts.push((key, *sums));
        }
    }
}

/// The parts of group rows of a `(zone, Hour)` timeline.
pub fn parts_of_rows(rows: &[GroupRow], zone: &Zone) -> HeatParts {
    let mut collector = HeatCollector::new();
    for row in rows {
        collector.add_row(zone, row);
    }
    collector.finish()
}
