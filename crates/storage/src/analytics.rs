//! The analytics query side: answers [`AnalyticsStore`] from rollups and events.
//!
//! `groups` splits a range into segments: raw events for the sub-quarter-hour
//! edges, then quarter-hour, hour and day rollups for the aligned middle (the
//! coarsest resolution whose blocks still fall into single local buckets when a
//! timeline is asked for). Aggregate rollups answer time/model/status scopes,
//! identity rollups answer identity filters and breakdowns, and anything else
//! (search, header, latency and cache filters) reads raw events.
//!
//! Dictionary texts, identities and the analytics-model map are immutable once
//! written, so they are cached in memory and topped up incrementally by id.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, RwLock};

use cpamp_domain::StoreError;
use cpamp_domain::analytics::Metrics;
use cpamp_domain::analytics::cost::PriceBook;
use cpamp_domain::analytics::cost::context_band;
use cpamp_domain::analytics::heat::{
    CELLS, HeatCollector, HeatKey, HeatParts, HeatSums, parts_of_rows,
};
use cpamp_domain::analytics::percentile::{
    BANDS, Banded, PerSeries, PercentileAsk, Percentiles, locate, select_in,
};
use cpamp_domain::analytics::query::metrics_of;
use cpamp_domain::analytics::query::{
    AnalyticsStore, Cursor, EventPage, Filters, FineBlock, GroupRequest, GroupRow, HeaderValues,
    Identity, Level, RawEvent, Scope, Text,
};
use cpamp_domain::analytics::time::{Bucketer, DAY_MS, Granularity, HOUR_MS, QUARTER_MS, Zone};
use cpamp_domain::event::TokenCounts;
use rusqlite::types::ValueRef;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use crate::fasthash::{FastMap, FastSet};
use crate::rollup::{
    EntryKey, FINE_MS, HeatBand, HeatDictionary, MINUTE_MS, MINUTE_READ_MS, Sums, count_banded,
    decode_band_counts, decode_banded, decode_entries_where, decode_keys, decode_pairs,
    heat_dictionary, heat_entries,
};
use crate::search::{Matched, SearchSql};
use crate::search_index::{self, Piece};
use crate::{SqliteStore, error};

/// In-memory copies of the immutable lookup tables.
#[derive(Default)]
pub(crate) struct ReadCache {
    state: RwLock<CacheState>,
}

#[derive(Default)]
pub(crate) struct CacheState {
    // Looked up for every text of every event an export or a raw read writes.
    texts: FastMap<i64, Text>,
    /// `dims.kind` of each id in `texts`.
    kinds: FastMap<i64, u8>,
    max_dim: i64,
    identities: FastMap<i64, Arc<Identity>>,
    identity_by_key: FastMap<[i64; 11], Arc<Identity>>,
    /// The ids of each identity, in `usage_identities` column order.
    identity_keys: FastMap<i64, [i64; 11]>,
    max_identity: i64,
    analytics: FastMap<i64, i64>,
    max_analytics_seq: i64,
    empty: Text,
}

impl CacheState {
    /// The effective model ids (`coalesce(requested_model_id, model_id)`) whose
    /// analytics model is one of `analytics_ids`.
    pub(crate) fn effective_models_of(&self, analytics_ids: &HashSet<i64>) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .analytics
            .iter()
            .filter(|(_, analytics)| analytics_ids.contains(analytics))
            .map(|(effective, _)| *effective)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The analytics model of an event with these model ids (`requested_model_id`
    /// wins over `model_id`); empty when it has neither.
    pub(crate) fn analytics_model(&self, model_id: Option<i64>, requested_id: Option<i64>) -> Text {
        let effective = requested_id.or(model_id).unwrap_or(0);
        let analytics = self.analytics.get(&effective).copied().unwrap_or(effective);
        self.text(Some(analytics))
    }

    /// [`CacheState::analytics_model`], borrowed.
    pub(crate) fn analytics_model_ref(
        &self,
        model_id: Option<i64>,
        requested_id: Option<i64>,
    ) -> &str {
        let effective = requested_id.or(model_id).unwrap_or(0);
        let analytics = self.analytics.get(&effective).copied().unwrap_or(effective);
        self.text_ref(Some(analytics))
    }

    /// [`CacheState::text`], borrowed.
    pub(crate) fn text_ref(&self, id: Option<i64>) -> &str {
        match id {
            Some(id) if id > 0 => self.texts.get(&id).map_or("", |text| text),
            _ => "",
        }
    }

    /// Every dictionary id and its text.
    pub(crate) fn texts(&self) -> impl Iterator<Item = (&i64, &Text)> {
        self.texts.iter()
    }

    /// The `dims.kind` of a dictionary id (0 when unknown).
    pub(crate) fn kind(&self, id: i64) -> u8 {
        self.kinds.get(&id).copied().unwrap_or(0)
    }

    /// (effective model id, analytics model id) pairs.
    pub(crate) fn analytics_pairs(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.analytics
            .iter()
            .map(|(model, analytics)| (*model, *analytics))
    }

    pub(crate) fn text(&self, id: Option<i64>) -> Text {
        match id {
            Some(id) if id > 0 => self
                .texts
                .get(&id)
                .cloned()
                .unwrap_or_else(|| self.empty.clone()),
            _ => self.empty.clone(),
        }
    }
}

pub(crate) fn lock_read(cache: &ReadCache) -> std::sync::RwLockReadGuard<'_, CacheState> {
    // A poisoned lock only means a panic during a plain map insert; the maps are
    // still consistent.
    cache
        .state
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lock_write(cache: &ReadCache) -> std::sync::RwLockWriteGuard<'_, CacheState> {
    cache
        .state
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn db(context: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |source| error::map(source, context)
}

/// Dictionary rows past an id ([`SqliteStore::refresh`]).
const NEW_DIMS: &str = "SELECT id, kind, value FROM dims WHERE id > ? ORDER BY id";

/// `usage_identities` rows past an id.
const NEW_IDENTITIES: &str = "SELECT id, provider_id, executor_type_id, auth_index_id, source_id, source_hash_id, \
    api_key_hash_id, account_id, auth_label_id, auth_file_id, auth_provider_id, auth_project_id \
    FROM usage_identities WHERE id > ? ORDER BY id";

/// Analytics-model map rows past a sequence number.
const NEW_ANALYTICS: &str = "SELECT seq, model_dim_id, analytics_dim_id FROM usage_model_analytics WHERE seq > ? ORDER BY seq";

/// `usage_identities` row: id and the eleven dimension ids.
type IdentityRow = (i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64);

/// Raw-fold key: (bucket, identity pointer, model, billing model, tier, band, failed).
type FoldKey = (i64, usize, Text, Text, Text, u8, bool);

/// Rollup blobs read per round trip.
const BLOB_CHUNK: i64 = 256;

pub(crate) const EVENT_COLUMNS: &str = "id, event_hash, request_id, timestamp_ms, timestamp_text, provider_id, executor_type_id, \
    model_id, requested_model_id, resolved_model_id, endpoint_id, method_id, path_id, client_ip_id, \
    x_forwarded_for_id, user_agent_id, auth_type_id, auth_index_id, source_id, source_hash_id, api_key_hash_id, \
    account_snapshot_id, auth_label_snapshot_id, auth_file_snapshot_id, auth_provider_snapshot_id, \
    auth_project_id_snapshot_id, auth_snapshot_at_ms, reasoning_effort_id, service_tier_id, \
    request_service_tier_id, response_service_tier_id, cache_input_mode, input_tokens, output_tokens, \
    reasoning_tokens, cached_tokens, cache_tokens, cache_read_tokens, cache_creation_tokens, total_tokens, \
    normalized_total_input_tokens, latency_ms, ttft_ms, failed, fail_status_code, fail_summary, \
    response_metadata_json, header_quota_recover_at_ms, header_quota_used_percent, header_quota_plan_type_id, \
    header_error_kind_id, header_error_code_id, header_trace_id, created_at_ms, timestamp_sub_ms, \
    metadata_template_id, metadata_values";

/// The values of one row of [`EVENT_COLUMNS`], whichever driver read it: a
/// missing value, or one of another type, reads as `None` (bytes also read a
/// text's bytes), as sqlx's checked reads answer.
pub(crate) trait EventRow {
    fn int(&self, index: usize) -> Option<i64>;
    fn real(&self, index: usize) -> Option<f64>;
    fn text(&self, index: usize) -> Option<&str>;
    fn bytes(&self, index: usize) -> Option<&[u8]>;
}

impl EventRow for SqliteRow {
    fn int(&self, index: usize) -> Option<i64> {
        self.try_get::<Option<i64>, _>(index).ok().flatten()
    }
    fn real(&self, index: usize) -> Option<f64> {
        self.try_get::<Option<f64>, _>(index).ok().flatten()
    }
    fn text(&self, index: usize) -> Option<&str> {
        self.try_get::<Option<&str>, _>(index).ok().flatten()
    }
    fn bytes(&self, index: usize) -> Option<&[u8]> {
        self.try_get::<Option<&[u8]>, _>(index).ok().flatten()
    }
}

impl EventRow for rusqlite::Row<'_> {
    fn int(&self, index: usize) -> Option<i64> {
        match self.get_ref(index) {
            Ok(ValueRef::Integer(value)) => Some(value),
            _ => None,
        }
    }
    fn real(&self, index: usize) -> Option<f64> {
        match self.get_ref(index) {
            Ok(ValueRef::Real(value)) => Some(value),
            _ => None,
        }
    }
    fn text(&self, index: usize) -> Option<&str> {
        match self.get_ref(index) {
            Ok(ValueRef::Text(bytes)) => std::str::from_utf8(bytes).ok(),
            _ => None,
        }
    }
    fn bytes(&self, index: usize) -> Option<&[u8]> {
        match self.get_ref(index) {
            Ok(ValueRef::Blob(bytes) | ValueRef::Text(bytes)) => Some(bytes),
            _ => None,
        }
    }
}

/// Which packed rollup a segment is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// `usage_rollup_agg_*`: no identity.
    Aggregate,
    /// `usage_rollup_ident_*`: full identities.
    Identity,
}

/// Where a segment of a range is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Raw,
    Minute,
    Quarter,
    Hour,
    Day,
}

impl Source {
    fn suffix(self) -> &'static str {
        match self {
            Source::Raw => "",
            Source::Minute => "m",
            Source::Quarter => "q",
            Source::Hour => "h",
            Source::Day => "d",
        }
    }
}

fn ceil_to(value: i64, step: i64) -> i64 {
    -((-value).div_euclid(step)) * step
}

fn floor_to(value: i64, step: i64) -> i64 {
    value.div_euclid(step) * step
}

/// The block widths a range may be read at: those whose blocks each fall into
/// one bucket of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resolutions {
    minute: bool,
    quarter: bool,
    hour: bool,
    day: bool,
}

impl Resolutions {
    const ALL: Resolutions = Resolutions {
        minute: true,
        quarter: true,
        hour: true,
        day: true,
    };
}

/// Splits `[from, to)` into segments, each read at the coarsest allowed resolution.
/// Edges finer than a quarter hour are read from minute rollups from `minutes_from`
/// (a minute boundary; `i64::MAX` for none) on, else from raw events.
fn plan(from: i64, to: i64, allowed: Resolutions, minutes_from: i64) -> Vec<(Source, i64, i64)> {
    let mut out = Vec::new();
    let mut push = |source: Source, a: i64, b: i64| {
        if a < b {
            out.push((source, a, b));
        }
    };
    let minutes_from = if allowed.minute {
        minutes_from
    } else {
        i64::MAX
    };
    let edge = |push: &mut dyn FnMut(Source, i64, i64), a: i64, b: i64| {
        if a >= b || b <= minutes_from {
            push(Source::Raw, a, b);
            return;
        }
        let (m0, m1) = (
            ceil_to(a.max(minutes_from), MINUTE_MS),
            floor_to(b, MINUTE_MS),
        );
        if m0 < m1 {
            push(Source::Raw, a, m0);
            push(Source::Minute, m0, m1);
            push(Source::Raw, m1, b);
        } else {
            push(Source::Raw, a, b);
        }
    };
    let (quarter_ok, hour_ok, day_ok) = (allowed.quarter, allowed.hour, allowed.day);
    let (q0, q1) = (ceil_to(from, QUARTER_MS), floor_to(to, QUARTER_MS));
    if !quarter_ok || q0 >= q1 {
        edge(&mut push, from, to);
        return out;
    }
    edge(&mut push, from, q0);
    let (h0, h1) = (ceil_to(q0, HOUR_MS), floor_to(q1, HOUR_MS));
    if hour_ok && h0 < h1 {
        push(Source::Quarter, q0, h0);
        let (d0, d1) = (ceil_to(h0, DAY_MS), floor_to(h1, DAY_MS));
        if day_ok && d0 < d1 {
            push(Source::Hour, h0, d0);
            push(Source::Day, d0, d1);
            push(Source::Hour, d1, h1);
        } else {
            push(Source::Hour, h0, h1);
        }
        push(Source::Quarter, h1, q1);
    } else {
        push(Source::Quarter, q0, q1);
    }
    edge(&mut push, q1, to);
    out
}

/// The resolutions allowed for a timeline.
fn allowed(timeline: Option<&(Zone, Granularity)>, from: i64, to: i64) -> Resolutions {
    match timeline {
        None => Resolutions::ALL,
        Some((zone, granularity)) => {
            let minute = zone.lossless(*granularity, MINUTE_MS, from, to);
            let quarter = minute && zone.lossless(*granularity, QUARTER_MS, from, to);
            let hour = quarter && zone.lossless(*granularity, HOUR_MS, from, to);
            let day = hour && zone.lossless(*granularity, DAY_MS, from, to);
            Resolutions {
                minute,
                quarter,
                hour,
                day,
            }
        }
    }
}

/// Where a snapshot may start reading minute rollups, in `minutes_from`.
const MINUTE_START_SQL: &str = "SELECT start_ms FROM usage_rollup_minute_start WHERE id = 1";

/// Whether `[?1, ?2)` holds no stored event (an index probe).
const NO_EVENTS_SQL: &str =
    "SELECT NOT EXISTS (SELECT 1 FROM usage_events WHERE timestamp_ms >= ?1 AND timestamp_ms < ?2)";

/// The first minute boundary from which this snapshot may read minute rollups
/// (`i64::MAX`: none), see `rollup::MINUTE_READ_MS`. Called after the snapshot's
/// first read, so every event it sees was stored before the clock is read here.
async fn minutes_from(connection: &mut SqliteConnection) -> Result<i64, StoreError> {
    let start: Option<i64> = sqlx::query_scalar(MINUTE_START_SQL)
        .fetch_optional(&mut *connection)
        .await
        .map_err(db("read the minute rollup start"))?;
    Ok(minute_boundary(start))
}

/// [`minutes_from`] through a rusqlite connection, inside its read transaction.
fn minutes_from_rows(reader: &rusqlite::Connection) -> rusqlite::Result<i64> {
    use rusqlite::OptionalExtension;
    let start: Option<i64> = reader
        .prepare_cached(MINUTE_START_SQL)?
        .query_row([], |row| row.get(0))
        .optional()?;
    Ok(minute_boundary(start))
}

/// The minute rollups' first readable boundary, given where they start.
fn minute_boundary(start: Option<i64>) -> i64 {
    let Some(start) = start else {
        return i64::MAX;
    };
    let recent = crate::settings::now_ms().saturating_sub(MINUTE_READ_MS);
    ceil_to(start.max(recent), MINUTE_MS)
}

/// Whether `[from, to)` holds no stored event (an index probe).
async fn no_events(
    connection: &mut SqliteConnection,
    from: i64,
    to: i64,
) -> Result<bool, StoreError> {
    if from >= to {
        return Ok(true);
    }
    sqlx::query_scalar::<_, bool>(NO_EVENTS_SQL)
        .bind(from)
        .bind(to)
        .fetch_one(&mut *connection)
        .await
        .map_err(db("probe events"))
}

/// The starts `snap` tries for a range from `from`: the quarter hour, then the
/// minute, that holds `from` (none where the multiple leaves the i64 range).
fn snap_heads(from: i64) -> impl Iterator<Item = i64> {
    [QUARTER_MS, MINUTE_MS]
        .into_iter()
        .filter_map(move |step| from.div_euclid(step).checked_mul(step))
}

/// The ends `snap` tries for a range until `to`: the end of the quarter hour,
/// then of the minute, that `to` falls in (`to` itself on a boundary).
fn snap_tails(to: i64) -> impl Iterator<Item = i64> {
    [QUARTER_MS, MINUTE_MS].into_iter().filter_map(move |step| {
        let floor = to.div_euclid(step).checked_mul(step)?;
        if floor == to {
            Some(floor)
        } else {
            floor.checked_add(step)
        }
    })
}

/// `[from, to)` widened to whole quarter hours at either end where the widening
/// holds no event (else to whole minutes, where that holds none), so those edges
/// are read from rollups instead of raw events: a range that ends after the newest
/// event (every "until now") reads no raw tail, however busy its last minutes. The
/// answer is the same because the widening adds no event; callers probe and read
/// in one read transaction, so an event committed meanwhile cannot slip in.
async fn snap(
    connection: &mut SqliteConnection,
    from: i64,
    to: i64,
) -> Result<(i64, i64), StoreError> {
    // Ranges reaching the ends of the i64 range (all time) keep those ends.
    let mut start = from;
    for head in snap_heads(from) {
        if no_events(connection, head, from).await? {
            start = head;
            break;
        }
    }
    let mut end = to;
    for tail in snap_tails(to) {
        if no_events(connection, to, tail).await? {
            end = tail;
            break;
        }
    }
    Ok((start, end))
}

/// [`snap`] through a rusqlite connection, inside its read transaction.
fn snap_rows(reader: &rusqlite::Connection, from: i64, to: i64) -> rusqlite::Result<(i64, i64)> {
    let no_events = |from: i64, to: i64| -> rusqlite::Result<bool> {
        if from >= to {
            return Ok(true);
        }
        reader
            .prepare_cached(NO_EVENTS_SQL)?
            .query_row((from, to), |row| row.get(0))
    };
    let mut start = from;
    for head in snap_heads(from) {
        if no_events(head, from)? {
            start = head;
            break;
        }
    }
    let mut end = to;
    for tail in snap_tails(to) {
        if no_events(to, tail)? {
            end = tail;
            break;
        }
    }
    Ok((start, end))
}

/// The heat rollup's entries of one cell at a time, summed by dense slot: every
/// distinct stored identity and band of a read gets a slot (through their dense
/// ids, in one table), so an entry is added without hashing its key. Failed and
/// successful entries share a slot: their sums count the failures, and the
/// heatmap tells calls apart by nothing else.
#[derive(Default)]
struct HeatSlots {
    identity_ids: FastMap<i64, u32>,
    identities: Vec<i64>,
    band_ids: FastMap<HeatBand, u32>,
    bands: Vec<HeatBand>,
    /// The slot of each `identity × stride + band` (`u32::MAX`: none yet); rows
    /// are `stride` long, widened as bands come.
    slots: Vec<u32>,
    stride: usize,
    keys: Vec<EntryKey>,
    /// Each slot's sums in the cell it was last added in, and that cell (0: none
    /// yet).
    sums: Vec<(HeatSums, u32)>,
    cell: u32,
    /// Each slot's key as the heatmap names it, once named (`None` inside when
    /// the scope refuses its identity).
    names: Vec<Option<Option<HeatKey>>>,
}

impl HeatSlots {
    /// Starts the next cell: every slot's sum starts again at its first entry.
    fn start_cell(&mut self) {
        self.cell += 1;
    }

    fn identity(&mut self, identity: i64) -> u32 {
        if let Some(known) = self.identity_ids.get(&identity) {
            return *known;
        }
        self.identities.push(identity);
        self.slots
            .resize(self.identities.len() * self.stride, u32::MAX);
        let id = u32::try_from(self.identities.len() - 1).unwrap_or(u32::MAX);
        self.identity_ids.insert(identity, id);
        id
    }

    fn band(&mut self, band: HeatBand) -> u32 {
        if let Some(known) = self.band_ids.get(&band) {
            return *known;
        }
        self.bands.push(band);
        if self.bands.len() > self.stride {
            // Widen every row, keeping its slots.
            let stride = (self.stride * 2).max(32);
            let mut slots = vec![u32::MAX; self.identities.len() * stride];
            if self.stride > 0 {
                for (row, old) in self.slots.chunks_exact(self.stride).enumerate() {
                    slots[row * stride..row * stride + self.stride].copy_from_slice(old);
                }
            }
            self.slots = slots;
            self.stride = stride;
        }
        let id = u32::try_from(self.bands.len() - 1).unwrap_or(u32::MAX);
        self.band_ids.insert(band, id);
        id
    }

    /// Adds an entry of dense identity and band to the current cell; returns its
    /// slot when it is the slot's first entry in the cell.
    #[inline]
    fn add(&mut self, identity: u32, band: u32, sums: &HeatSums) -> Option<u32> {
        let index = identity as usize * self.stride + band as usize;
        let mut slot = self.slots[index];
        if slot == u32::MAX {
            let stored = self.bands[band as usize];
            slot = u32::try_from(self.keys.len()).unwrap_or(u32::MAX);
            self.slots[index] = slot;
            self.keys.push(EntryKey {
                identity: self.identities[identity as usize],
                model: stored.model,
                billing: stored.billing,
                tier: stored.tier,
                band: stored.band,
                failed: false,
            });
            self.sums.push((HeatSums::default(), 0));
            self.names.push(None);
        }
        let (total, seen) = &mut self.sums[slot as usize];
        if *seen == self.cell {
            total.add(sums);
            return None;
        }
        *seen = self.cell;
        *total = *sums;
        Some(slot)
    }
}

impl SqliteStore {
    /// Tops up the lookup caches with rows written since the last call.
    pub(crate) async fn refresh(
        &self,
        connection: &mut SqliteConnection,
    ) -> Result<(), StoreError> {
        let (max_dim, max_identity, max_seq) = self.cache_marks();
        let dims: Vec<(i64, u8, String)> = sqlx::query_as(NEW_DIMS)
            .bind(max_dim)
            .fetch_all(&mut *connection)
            .await
            .map_err(db("read dims"))?;
        let identities: Vec<IdentityRow> = sqlx::query_as(NEW_IDENTITIES)
            .bind(max_identity)
            .fetch_all(&mut *connection)
            .await
            .map_err(db("read identities"))?;
        let analytics: Vec<(i64, i64, i64)> = sqlx::query_as(NEW_ANALYTICS)
            .bind(max_seq)
            .fetch_all(&mut *connection)
            .await
            .map_err(db("read model map"))?;
        self.top_up(dims, identities, analytics);
        Ok(())
    }

    /// [`Self::refresh`] through a rusqlite connection (inside the caller's read
    /// transaction, so the caches cover every row it reads afterwards).
    pub(crate) fn refresh_rows(&self, reader: &rusqlite::Connection) -> rusqlite::Result<()> {
        let (max_dim, max_identity, max_seq) = self.cache_marks();
        let dims = reader
            .prepare_cached(NEW_DIMS)?
            .query_map([max_dim], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
            .collect::<rusqlite::Result<Vec<(i64, u8, String)>>>()?;
        let identities = reader
            .prepare_cached(NEW_IDENTITIES)?
            .query_map([max_identity], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                    row.get(6)?,
                    row.get(7)?,
                    row.get(8)?,
                    row.get(9)?,
                    row.get(10)?,
                    row.get(11)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<IdentityRow>>>()?;
        let analytics = reader
            .prepare_cached(NEW_ANALYTICS)?
            .query_map([max_seq], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
            .collect::<rusqlite::Result<Vec<(i64, i64, i64)>>>()?;
        self.top_up(dims, identities, analytics);
        Ok(())
    }

    /// The largest dictionary id, identity id and model-map sequence cached.
    fn cache_marks(&self) -> (i64, i64, i64) {
        let state = lock_read(self.read_cache());
        (state.max_dim, state.max_identity, state.max_analytics_seq)
    }

    /// Adds rows read past [`Self::cache_marks`] to the caches.
    fn top_up(
        &self,
        dims: Vec<(i64, u8, String)>,
        identities: Vec<IdentityRow>,
        analytics: Vec<(i64, i64, i64)>,
    ) {
        if dims.is_empty() && identities.is_empty() && analytics.is_empty() {
            return;
        }
        let mut state = lock_write(self.read_cache());
        for (id, kind, value) in dims {
            state.max_dim = state.max_dim.max(id);
            state.kinds.insert(id, kind);
            state.texts.insert(id, Arc::from(value));
        }
        for row in identities {
            let key = [
                row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9, row.10, row.11,
            ];
            let text = |id: i64| state.text(Some(id));
            let identity = Arc::new(Identity {
                provider: text(key[0]),
                executor_type: text(key[1]),
                auth_index: text(key[2]),
                source: text(key[3]),
                source_hash: text(key[4]),
                api_key_hash: text(key[5]),
                account: text(key[6]),
                auth_label: text(key[7]),
                auth_file: text(key[8]),
                auth_provider: text(key[9]),
                auth_project: text(key[10]),
            });
            state.max_identity = state.max_identity.max(row.0);
            state.identities.insert(row.0, identity.clone());
            state.identity_keys.insert(row.0, key);
            state.identity_by_key.insert(key, identity);
        }
        for (seq, model, analytics) in analytics {
            state.max_analytics_seq = state.max_analytics_seq.max(seq);
            state.analytics.insert(model, analytics);
        }
    }

    /// Dictionary ids (kind Model) of the wanted analytics models.
    pub(crate) async fn model_ids(
        &self,
        connection: &mut SqliteConnection,
        models: &[String],
    ) -> Result<Vec<i64>, StoreError> {
        let mut ids = Vec::new();
        for model in models {
            let id: Option<i64> =
                sqlx::query_scalar("SELECT id FROM dims WHERE kind = 3 AND value = ?")
                    .bind(model)
                    .fetch_optional(&mut *connection)
                    .await
                    .map_err(db("read model ids"))?;
            ids.extend(id);
        }
        Ok(ids)
    }

    pub(crate) fn event_from_row(&self, state: &CacheState, row: &impl EventRow) -> RawEvent {
        let id = |index: usize| row.int(index);
        let int = |index: usize| id(index).unwrap_or(0);
        let text = |index: usize| state.text(id(index));
        let string = |index: usize| row.text(index).map(str::to_string);
        let timestamp_ms = int(3);
        let key = [5, 6, 17, 18, 19, 20, 21, 22, 23, 24, 25].map(&int);
        let identity = state.identity_by_key.get(&key).cloned().unwrap_or_else(|| {
            Arc::new(Identity {
                provider: text(5),
                executor_type: text(6),
                auth_index: text(17),
                source: text(18),
                source_hash: text(19),
                api_key_hash: text(20),
                account: text(21),
                auth_label: text(22),
                auth_file: text(23),
                auth_provider: text(24),
                auth_project: text(25),
            })
        });
        let model_id = id(7);
        let requested_id = id(8);
        let hash = row.bytes(1).unwrap_or_default();
        RawEvent {
            id: int(0),
            event_hash: hex::encode(hash),
            request_id: string(2),
            timestamp_ms,
            timestamp: match string(4) {
                Some(text) => text,
                None => crate::compact::stored_timestamp(None, id(54), timestamp_ms).into_owned(),
            },
            model: state.text(model_id),
            requested_model: state.text(requested_id),
            resolved_model: text(9),
            analytics_model: state.analytics_model(model_id, requested_id),
            endpoint: text(10),
            method: text(11),
            path: text(12),
            client_ip: text(13),
            x_forwarded_for: text(14),
            user_agent: text(15),
            auth_type: text(16),
            identity,
            auth_snapshot_at_ms: id(26),
            reasoning_effort: text(27),
            service_tier: text(28),
            request_service_tier: text(29),
            response_service_tier: text(30),
            cache_input_mode: match id(31) {
                Some(0) => Some("included_in_input"),
                Some(1) => Some("separate_from_input"),
                _ => None,
            },
            tokens: TokenCounts {
                input: int(32),
                output: int(33),
                reasoning: int(34),
                cached: int(35),
                cache: int(36),
                cache_read: int(37),
                cache_creation: int(38),
                total: int(39),
            },
            normalized_total_input: id(40),
            latency_ms: id(41),
            ttft_ms: id(42),
            failed: int(43) != 0,
            fail_status_code: id(44),
            fail_summary: string(45),
            response_metadata_json: match string(46) {
                Some(text) => Some(text),
                None => crate::compact::stored_metadata(
                    None,
                    Some(state.text_ref(id(55))),
                    row.bytes(56),
                    timestamp_ms,
                    row.text(52),
                )
                .map(std::borrow::Cow::into_owned),
            },
            header_quota_recover_at_ms: id(47),
            header_quota_used_percent: row.real(48),
            header_quota_plan_type: text(49),
            header_error_kind: text(50),
            header_error_code: text(51),
            header_trace_id: string(52),
            created_at_ms: int(53),
        }
    }

    /// Calls `each` for every raw event of `[from, to)` that matches the scope,
    /// oldest first. Reads in keyset chunks so memory stays flat at any range size.
    async fn raw_range(
        &self,
        connection: &mut SqliteConnection,
        scope: &Scope,
        from: i64,
        to: i64,
        mut each: impl FnMut(&RawEvent),
    ) -> Result<(), StoreError> {
        const CHUNK: i64 = 1024;
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM usage_events WHERE timestamp_ms >= ?1 AND (timestamp_ms > ?1 OR id > ?2) \
             AND timestamp_ms < ?3{} ORDER BY timestamp_ms, id LIMIT {CHUNK}",
            if scope.filters.failed_only {
                " AND failed = 1"
            } else {
                ""
            }
        );
        let mut after = (from, i64::MIN);
        loop {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(after.0)
                .bind(after.1)
                .bind(to)
                .fetch_all(&mut *connection)
                .await
                .map_err(db("read events"))?;
            let state = lock_read(self.read_cache());
            for row in &rows {
                let event = self.event_from_row(&state, row);
                after = (event.timestamp_ms, event.id);
                if scope.matches_event(&event) {
                    each(&event);
                }
            }
            if (rows.len() as i64) < CHUNK {
                return Ok(());
            }
        }
    }

    /// The events among `ids` that do not match every condition of `scope`,
    /// checked on the full events (one query for the whole list).
    async fn events_rejected(
        &self,
        connection: &mut SqliteConnection,
        ids: &[i64],
        scope: &Scope,
    ) -> Result<HashSet<i64>, StoreError> {
        let mut rejected: HashSet<i64> = ids.iter().copied().collect();
        if ids.is_empty() {
            return Ok(rejected);
        }
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        let sql = format!("SELECT {EVENT_COLUMNS} FROM usage_events WHERE id IN ({list})");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut *connection)
            .await
            .map_err(db("read events"))?;
        let state = lock_read(self.read_cache());
        for row in &rows {
            let event = self.event_from_row(&state, row);
            if scope.matches_event(&event) {
                rejected.remove(&event.id);
            }
        }
        Ok(rejected)
    }

    /// The search of `scope` in SQL when it is the only raw-level condition (so
    /// the lean path answers it); `None` otherwise.
    fn search_only(&self, scope: &Scope) -> Option<SearchSql> {
        let mut rest = scope.clone();
        rest.search_query.clear();
        if scope.search_query.is_empty() || rest.level() == Level::Raw {
            return None;
        }
        SearchSql::of(scope, &lock_read(self.read_cache()))
    }

    /// [`Self::sum_events`] of `[from, to)` on blocking threads: a range of at
    /// least [`SPLIT_SUM_MS`] is summed in two halves at once, each on a row reader
    /// and in a snapshot of its own (the halves are disjoint, so no event is counted
    /// twice), when the host has a second core. Groups of equal keys in both halves
    /// are merged; the order of the groups is left to the caller.
    async fn sum_events_split(
        &self,
        select: RawSelect,
        (from, to): (i64, i64),
        block: Option<i64>,
    ) -> Result<Vec<EventGroup>, StoreError> {
        let halves = if second_core() && to - from >= SPLIT_SUM_MS {
            let middle = from + (to - from) / 2;
            vec![(from, middle), (middle, to)]
        } else {
            vec![(from, to)]
        };
        let select = std::sync::Arc::new(select);
        let tasks: Vec<_> = halves
            .into_iter()
            .map(|part| {
                let (store, select) = (self.clone(), select.clone());
                tokio::task::spawn_blocking(move || store.sum_events(&select, part, block))
            })
            .collect();
        let mut out: Vec<EventGroup> = Vec::new();
        let mut index: FastMap<EventKey, usize> = FastMap::default();
        for task in tasks {
            let groups = task.await.map_err(|error| {
                StoreError::unavailable(format!("sum raw events: {error}"), error)
            })??;
            if out.is_empty() {
                out = groups;
                continue;
            }
            if index.is_empty() {
                index = out
                    .iter()
                    .enumerate()
                    .map(|(position, group)| (group.key.clone(), position))
                    .collect();
            }
            for group in groups {
                match index.get(&group.key) {
                    Some(position) => out[*position].merge(&group),
                    None => {
                        index.insert(group.key.clone(), out.len());
                        out.push(group);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The groups of the events `select` reads in `part`, each event's time cut
    /// into `block`s, read through the store's rusqlite row reader in one snapshot
    /// of its own.
    fn sum_events(
        &self,
        select: &RawSelect,
        (from, to): (i64, i64),
        block: Option<i64>,
    ) -> Result<Vec<EventGroup>, StoreError> {
        let mut sums = GroupSums::default();
        self.step_raw(select, (from, to), |row| {
            sums.add(EventGroup::of_row(row, block))
        })?;
        Ok(sums.out)
    }

    /// Steps the rows `select` reads in `[from, to)` through the store's rusqlite
    /// row reader, in one snapshot of its own whose first step tops up the lookup
    /// caches, so they name every dictionary id and identity of the rows `each` is
    /// given. A search reads only the candidates of the hours its index lists
    /// (`search_index::plan`), each piece in turn.
    fn step_raw(
        &self,
        select: &RawSelect,
        (from, to): (i64, i64),
        mut each: impl FnMut(&rusqlite::Row<'_>),
    ) -> Result<(), StoreError> {
        self.with_row_reader(|reader| {
            let sqlite = error::sqlite("read raw events");
            let transaction = reader.unchecked_transaction().map_err(&sqlite)?;
            self.refresh_rows(&transaction).map_err(&sqlite)?;
            step_pieces(&transaction, select, (from, to), &mut each).map_err(&sqlite)
        })
    }

    /// The latency and TTFT samples (time, latency, TTFT; 0 for none) of the raw
    /// events in `[from, to)` that the scope (and `search`) selects, read like
    /// [`Self::event_groups`]: ids only, each distinct model and identity checked
    /// against the scope once. `None` when the scope has raw-level filters other
    /// than the search (the caller then checks every event in full).
    async fn raw_samples(
        &self,
        connection: &mut SqliteConnection,
        request: &GroupRequest,
        (from, to): (i64, i64),
        search: Option<&SearchSql>,
    ) -> Result<Option<Vec<(i64, u32, u32)>>, StoreError> {
        let scope = request.scope.clone();
        let mut rest = scope.clone();
        rest.search_query.clear();
        if rest.level() == Level::Raw || from >= to {
            return Ok(None);
        }
        let select = raw_select(
            "provider_id, executor_type_id, auth_index_id, source_id, source_hash_id, api_key_hash_id, \
             account_snapshot_id, auth_label_snapshot_id, auth_file_snapshot_id, auth_provider_snapshot_id, \
             auth_project_id_snapshot_id, latency_ms, ttft_ms",
            &scope,
            search,
        );
        let store = self.clone();
        let filter = scope.clone();
        let read = tokio::task::spawn_blocking(move || {
            // Whether the scope takes events of a (model, failed, identity).
            let mut taken: FastMap<(i64, bool, [i64; 11]), bool> = FastMap::default();
            let mut out = Vec::new();
            let mut flagged = Vec::new();
            store
                .step_raw(&select, (from, to), |row| {
                    let int = |index: usize| match row.get_ref(index) {
                        Ok(ValueRef::Integer(value)) => value,
                        _ => 0,
                    };
                    let failed = int(3) != 0;
                    let key = (
                        int(4),
                        failed,
                        std::array::from_fn(|offset| int(5 + offset)),
                    );
                    let take = *taken.entry(key).or_insert_with(|| {
                        let (effective, failed, identity) = key;
                        let state = lock_read(store.read_cache());
                        let model = state
                            .analytics
                            .get(&effective)
                            .copied()
                            .unwrap_or(effective);
                        filter.matches_group(&state.text(Some(model)), failed)
                            && filter.matches_identity(
                                &state
                                    .identity_by_key
                                    .get(&identity)
                                    .cloned()
                                    .unwrap_or_default(),
                            )
                    });
                    if !take {
                        return;
                    }
                    let sample =
                        |index: usize| u32::try_from(int(index).max(0)).unwrap_or(u32::MAX);
                    let read = (int(1), sample(16), sample(17));
                    if int(2) != 0 {
                        flagged.push((int(0), read));
                    } else {
                        out.push(read);
                    }
                })
                .map(|()| (out, flagged))
        })
        .await
        .map_err(|error| StoreError::unavailable(format!("read raw samples: {error}"), error))?;
        let (mut samples, flagged) = read?;
        let ids: Vec<i64> = flagged.iter().map(|(id, _)| *id).collect();
        let rejected = self.events_rejected(connection, &ids, &scope).await?;
        samples.extend(
            flagged
                .into_iter()
                .filter(|(id, _)| !rejected.contains(id))
                .map(|(_, read)| read),
        );
        Ok(Some(samples))
    }

    /// Folds the raw events of `[from, to)` into `out` as group rows: summed per
    /// group where the timeline allows ([`Self::event_groups`]), else one by one.
    async fn raw_groups(
        &self,
        connection: &mut SqliteConnection,
        request: &GroupRequest,
        from: i64,
        to: i64,
        out: &mut Vec<GroupRow>,
    ) -> Result<(), StoreError> {
        let mut folder = RawFolder::new(request);
        match self
            .event_groups(connection, request, (from, to), None)
            .await?
        {
            Some(rows) => {
                for row in rows {
                    folder.push_row(row, out);
                }
            }
            None => {
                self.raw_lean(connection, request, from, to, None, |row, _, _| {
                    folder.push_row(row, out)
                })
                .await?;
            }
        }
        Ok(())
    }

    /// The group rows of the raw events in `[from, to)` (those `search` matches,
    /// when given), read on a blocking thread through rusqlite: the events are
    /// stepped without a value allocated per column and summed by everything a
    /// group row is keyed by, by ids (with the time cut into UTC blocks that each
    /// fall into one local bucket), so a row per group is built instead of one
    /// per event. Events whose free texts need the search's exact check form
    /// groups of their own and are checked in full.
    ///
    /// Rows come in the order of each group's first event (time, then id), as
    /// [`Self::raw_lean`] would give them, so equal keys fold in the same order.
    /// `None` for a zone whose buckets no minute block maps onto (the caller then
    /// folds the events one by one).
    ///
    /// The read is a snapshot of its own, like the hour and day rollup segments:
    /// `[from, to)` is disjoint from the caller's other segments, so no event is
    /// counted twice.
    async fn event_groups(
        &self,
        connection: &mut SqliteConnection,
        request: &GroupRequest,
        (from, to): (i64, i64),
        search: Option<&SearchSql>,
    ) -> Result<Option<Vec<GroupRow>>, StoreError> {
        let scope = &request.scope;
        if from < 0 || from >= to {
            return Ok(None);
        }
        let block = match request.timeline.as_ref() {
            None => None,
            Some((zone, granularity)) => {
                let Some(block) = [HOUR_MS, QUARTER_MS, MINUTE_MS]
                    .into_iter()
                    .find(|block| zone.lossless(*granularity, *block, from, to))
                else {
                    return Ok(None);
                };
                Some(block)
            }
        };
        let select = raw_select(GROUP_COLUMNS, scope, search);
        let groups = self.sum_events_split(select, (from, to), block).await?;
        Ok(Some(self.group_rows_of(connection, request, groups).await?))
    }

    /// The group rows of event groups of `request`'s scope: events flagged for
    /// the search's exact check are checked in full, and the scope's model and
    /// identity filters applied. Rows come in the order of each group's first
    /// event.
    async fn group_rows_of(
        &self,
        connection: &mut SqliteConnection,
        request: &GroupRequest,
        mut groups: Vec<EventGroup>,
    ) -> Result<Vec<GroupRow>, StoreError> {
        let scope = &request.scope;
        let flagged: Vec<i64> = groups.iter().filter_map(|group| group.key.single).collect();
        let rejected = self.events_rejected(connection, &flagged, scope).await?;
        groups.sort_unstable_by_key(|group| group.first);
        let state = lock_read(self.read_cache());
        let mut out = Vec::with_capacity(groups.len());
        for EventGroup {
            key,
            first,
            last_ms,
            metrics,
        } in groups
        {
            if key.single.is_some_and(|id| rejected.contains(&id)) {
                continue;
            }
            let model = state
                .analytics
                .get(&key.effective)
                .copied()
                .unwrap_or(key.effective);
            let model_text = state.text(Some(model));
            if !scope.matches_group(&model_text, key.failed) {
                continue;
            }
            let identity = state
                .identity_by_key
                .get(&key.identity)
                .cloned()
                .unwrap_or_default();
            if !scope.matches_identity(&identity) {
                continue;
            }
            out.push(GroupRow {
                bucket_ms: first.0,
                identity: request.identity.then_some(identity),
                billing_model: match key.resolved {
                    Some(resolved) => state.text(Some(resolved)),
                    None => model_text.clone(),
                },
                model: model_text,
                service_tier: state.text(key.tier),
                context_band: key.band,
                failed: key.failed,
                metrics,
                last_seen_ms: last_ms,
            });
        }
        Ok(out)
    }

    /// Like [`Self::raw_range`] for scopes without raw-level filters: reads only the
    /// columns rollups are made of and folds them straight into group rows (and
    /// latency samples), skipping texts, hashes and timestamp formatting.
    #[allow(clippy::too_many_arguments)]
    async fn raw_lean(
        &self,
        connection: &mut SqliteConnection,
        request: &GroupRequest,
        from: i64,
        to: i64,
        search: Option<&SearchSql>,
        mut each: impl FnMut(GroupRow, Option<i64>, Option<i64>),
    ) -> Result<(), StoreError> {
        const CHUNK: i64 = 1024;
        let scope = &request.scope;
        // With a search, SQLite selects the matching events (and flags those whose
        // free texts need the exact check, made here on the full event).
        let (unsure, condition) = match search {
            Some(search) => (
                format!(", {}", search.unsure),
                format!(" AND {}", search.numbered_condition(4)),
            ),
            None => (String::new(), String::new()),
        };
        let sql = format!(
            "SELECT id, timestamp_ms, failed, model_id, requested_model_id, resolved_model_id, service_tier_id, \
             provider_id, executor_type_id, auth_index_id, source_id, source_hash_id, api_key_hash_id, \
             account_snapshot_id, auth_label_snapshot_id, auth_file_snapshot_id, auth_provider_snapshot_id, \
             auth_project_id_snapshot_id, input_tokens, output_tokens, reasoning_tokens, cached_tokens, cache_tokens, \
             cache_read_tokens, cache_creation_tokens, total_tokens, normalized_total_input_tokens, latency_ms, ttft_ms\
             {unsure} FROM usage_events WHERE timestamp_ms >= ?1 AND (timestamp_ms > ?1 OR id > ?2) AND timestamp_ms < ?3{}\
             {condition} ORDER BY timestamp_ms, id LIMIT {CHUNK}",
            if scope.filters.failed_only {
                " AND failed = 1"
            } else {
                ""
            }
        );
        let mut after = (from, i64::MIN);
        loop {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(after.0)
                .bind(after.1)
                .bind(to);
            for value in search.map(|search| search.binds.as_slice()).unwrap_or(&[]) {
                query = query.bind(value.clone());
            }
            let rows = query
                .fetch_all(&mut *connection)
                .await
                .map_err(db("read events"))?;
            // The flagged events get the exact check, all of a chunk at once.
            let flagged: Vec<i64> = if search.is_some() {
                rows.iter()
                    .filter(|row| {
                        row.try_get::<Option<i64>, _>(29)
                            .ok()
                            .flatten()
                            .unwrap_or(0)
                            != 0
                    })
                    .map(|row| row.try_get(0).unwrap_or(0))
                    .collect()
            } else {
                Vec::new()
            };
            let rejected = self.events_rejected(connection, &flagged, scope).await?;
            let state = lock_read(self.read_cache());
            for row in &rows {
                let id = |index: usize| row.try_get::<Option<i64>, _>(index).ok().flatten();
                let int = |index: usize| id(index).unwrap_or(0);
                let timestamp_ms = int(1);
                after = (timestamp_ms, int(0));
                if rejected.contains(&int(0)) {
                    continue;
                }
                let failed = int(2) != 0;
                let effective = id(4).or(id(3)).unwrap_or(0);
                let model = state
                    .analytics
                    .get(&effective)
                    .copied()
                    .unwrap_or(effective);
                let model_text = state.text(Some(model));
                if !scope.matches_group(&model_text, failed) {
                    continue;
                }
                let key: [i64; 11] = std::array::from_fn(|offset| int(7 + offset));
                let identity = state.identity_by_key.get(&key).cloned().unwrap_or_default();
                if !scope.matches_identity(&identity) {
                    continue;
                }
                let (tokens, cached) = token_columns(int);
                let input = id(26).unwrap_or(tokens.input);
                let latency = id(27);
                let group = GroupRow {
                    bucket_ms: timestamp_ms,
                    identity: request.identity.then_some(identity),
                    billing_model: match id(5) {
                        Some(resolved) => state.text(Some(resolved)),
                        None => model_text.clone(),
                    },
                    model: model_text,
                    service_tier: state.text(id(6)),
                    context_band: context_band(input),
                    failed,
                    metrics: metrics_of(failed, input, &tokens, cached, latency),
                    last_seen_ms: timestamp_ms,
                };
                each(group, latency, id(28));
            }
            if (rows.len() as i64) < CHUNK {
                return Ok(());
            }
        }
    }

    /// Group rows of one rollup segment. Without a timeline, equal keys are merged
    /// across buckets.
    ///
    /// Minute and quarter segments are read in the caller's transaction: they are where
    /// `snap` widened the range on the strength of probes made in that snapshot.
    /// Hour and day segments are read on a blocking thread through an idle rusqlite
    /// connection in one read transaction that first tops up the lookup caches, so
    /// their blobs are decoded where SQLite holds them (none is copied, no row
    /// crosses the sqlx worker's channel). Segments are disjoint in time, so one
    /// read in a newer snapshot than the others counts no event twice.
    #[allow(clippy::too_many_arguments, reason = "one segment of one request")]
    async fn rollup_rows(
        &self,
        connection: &mut SqliteConnection,
        request: &GroupRequest,
        family: Family,
        model_ids: &[i64],
        source: Source,
        from: i64,
        to: i64,
        out: &mut Vec<GroupRow>,
    ) -> Result<(), StoreError> {
        let identity = family != Family::Aggregate;
        let family = match family {
            Family::Aggregate => "agg",
            Family::Identity => "ident",
        };
        if matches!(source, Source::Minute | Source::Quarter) {
            let sql = format!(
                "SELECT bucket_ms, entries FROM usage_rollup_{family}_{} \
                 WHERE bucket_ms >= ? AND bucket_ms < ? ORDER BY bucket_ms LIMIT {BLOB_CHUNK}",
                source.suffix()
            );
            let mut fold = RollupFold::new(request, identity, model_ids);
            // Blobs are read a bounded number at a time, so memory stays flat.
            let mut cursor = from;
            loop {
                let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(cursor)
                    .bind(to)
                    .fetch_all(&mut *connection)
                    .await
                    .map_err(db("read rollups"))?;
                let Some(last) = rows.last().map(|row| row.0) else {
                    break;
                };
                let full = rows.len() as i64 == BLOB_CHUNK;
                cursor = last + 1;
                for (bucket, blob) in &rows {
                    fold.add(self, *bucket, blob);
                }
                if !full {
                    break;
                }
            }
            out.extend(fold.finish(self));
            return Ok(());
        }
        let sql = format!(
            "SELECT bucket_ms, entries FROM usage_rollup_{family}_{} \
             WHERE bucket_ms >= ?1 AND bucket_ms < ?2 ORDER BY bucket_ms",
            source.suffix()
        );
        let store = self.clone();
        let request = request.clone();
        let model_ids = model_ids.to_vec();
        let rows = tokio::task::spawn_blocking(move || {
            store.with_row_reader(|reader| {
                let sqlite = error::sqlite("read rollups");
                let transaction = reader.unchecked_transaction().map_err(&sqlite)?;
                store.refresh_rows(&transaction).map_err(&sqlite)?;
                let mut fold = RollupFold::new(&request, identity, &model_ids);
                {
                    let mut statement = transaction.prepare_cached(&sql).map_err(&sqlite)?;
                    let mut rows = statement.query((from, to)).map_err(&sqlite)?;
                    while let Some(row) = rows.next().map_err(&sqlite)? {
                        let bucket: i64 = row.get(0).map_err(&sqlite)?;
                        if let ValueRef::Blob(blob) = row.get_ref(1).map_err(&sqlite)? {
                            fold.add(&store, bucket, blob);
                        }
                    }
                }
                transaction.commit().map_err(&sqlite)?;
                Ok(fold.finish(&store))
            })
        })
        .await
        .map_err(|error| StoreError::unavailable(format!("read rollups: {error}"), error))??;
        out.extend(rows);
        Ok(())
    }

    pub(crate) async fn reader_connection(
        &self,
    ) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>, StoreError> {
        let mut connection = self
            .reader()
            .acquire()
            .await
            .map_err(db("acquire reader"))?;
        self.refresh(&mut connection).await?;
        Ok(connection)
    }

    /// Group rows of a request.
    async fn groups_inner(&self, request: GroupRequest) -> Result<Vec<GroupRow>, StoreError> {
        let scope = &request.scope;
        let mut pooled = self.reader_connection().await?;
        if scope.from_ms >= scope.to_ms {
            return Ok(Vec::new());
        }
        // One snapshot for the probes of `snap` and every read below.
        let mut connection = sqlx::Connection::begin(&mut *pooled)
            .await
            .map_err(db("begin read"))?;
        let level = scope.level();
        let mut out = Vec::new();
        if level == Level::Raw {
            let mut folder = RawFolder::new(&request);
            if let Some(search) = self.search_only(scope) {
                // Whole hours take the matching identity rollup entries and read
                // only the other matches raw; the edges are read raw.
                let mut raw = vec![(scope.from_ms, scope.to_ms)];
                if let Some((rows, rest)) = self
                    .searched_hours(&mut connection, &request, &search)
                    .await?
                {
                    out.extend(rows.into_iter().map(|mut row| {
                        if !request.identity {
                            row.identity = None;
                        }
                        row
                    }));
                    raw = rest;
                }
                for (from, to) in raw {
                    if let Some(rows) = self
                        .event_groups(&mut connection, &request, (from, to), Some(&search))
                        .await?
                    {
                        for row in rows {
                            folder.push_row(row, &mut out);
                        }
                        continue;
                    }
                    self.raw_lean(
                        &mut connection,
                        &request,
                        from,
                        to,
                        Some(&search),
                        |row, _, _| folder.push_row(row, &mut out),
                    )
                    .await?;
                }
                return Ok(out);
            }
            self.raw_range(
                &mut connection,
                scope,
                scope.from_ms,
                scope.to_ms,
                |event| folder.push(event, &mut out),
            )
            .await?;
            return Ok(out);
        }
        let model_ids = self
            .model_ids(&mut connection, &scope.filters.models)
            .await?;
        if !scope.filters.models.is_empty() && model_ids.is_empty() {
            return Ok(out);
        }
        let identity = request.identity || level == Level::Identity;
        let (start, end) = snap(&mut connection, scope.from_ms, scope.to_ms).await?;
        let resolutions = allowed(request.timeline.as_ref(), start, end);
        let minutes = minutes_from(&mut connection).await?;
        for (source, from, to) in plan(start, end, resolutions, minutes) {
            if source == Source::Raw {
                self.raw_groups(&mut connection, &request, from, to, &mut out)
                    .await?;
            } else {
                let family = if identity {
                    Family::Identity
                } else {
                    Family::Aggregate
                };
                self.rollup_rows(
                    &mut connection,
                    &request,
                    family,
                    &model_ids,
                    source,
                    from,
                    to,
                    &mut out,
                )
                .await?;
            }
        }
        if !request.identity {
            for row in &mut out {
                row.identity = None;
            }
        }
        Ok(out)
    }

    /// The group rows of the searched scope of `request` in the whole UTC hours of
    /// its range, and the edges of the range left to read raw; `None` when the
    /// range has no whole hour, the timeline cuts hours, or the search has no
    /// index terms (a query of hex digits).
    ///
    /// Every event of an identity rollup entry whose identity or price band names
    /// a matching id matches (`search::Matched`), so those entries' sums are taken
    /// as they are, and only the other matches are read raw: the search condition
    /// with those entries' events left out (in SQL where a column names the id,
    /// else by the same rule on each event read). An hour is not read raw at all
    /// when its index row shows that no free text of the hour can hold the query
    /// and counts as many events holding a matching id as those entries hold: they
    /// then hold every match (`RollupFold::add_searched`). A search for a model, an
    /// account or an auth file reads a few kilobytes per hour instead of its
    /// matches; one that also matches other columns (a user agent) reads only the
    /// events those add. The hours are read in two parts at once, each on a row
    /// reader in one snapshot of its own that holds its index rows, rollups, raw
    /// events and the ids the search matches, so they agree.
    async fn searched_hours(
        &self,
        connection: &mut SqliteConnection,
        request: &GroupRequest,
        search: &SearchSql,
    ) -> Result<Option<(Vec<GroupRow>, Vec<(i64, i64)>)>, StoreError> {
        let scope = &request.scope;
        if search.terms.is_none() {
            return Ok(None);
        }
        let (from, to) = (scope.from_ms, scope.to_ms);
        if from < 0 {
            return Ok(None);
        }
        let (first, last) = (ceil_to(from, HOUR_MS), floor_to(to, HOUR_MS));
        if first >= last {
            return Ok(None);
        }
        if let Some((zone, granularity)) = request.timeline.as_ref()
            && !zone.lossless(*granularity, HOUR_MS, first, last)
        {
            return Ok(None);
        }
        let model_ids = self
            .model_ids(&mut *connection, &scope.filters.models)
            .await?;
        if !scope.filters.models.is_empty() && model_ids.is_empty() {
            return Ok(None);
        }
        let hours = (last - first) / HOUR_MS;
        let parts = if second_core() && hours >= 2 {
            let middle = first + hours / 2 * HOUR_MS;
            vec![(first, middle), (middle, last)]
        } else {
            vec![(first, last)]
        };
        let block = request.timeline.as_ref().map(|_| HOUR_MS);
        let shared = std::sync::Arc::new((request.clone(), model_ids));
        let tasks: Vec<_> = parts
            .into_iter()
            .map(|part| {
                let (store, shared) = (self.clone(), shared.clone());
                tokio::task::spawn_blocking(move || {
                    store.searched_part(&shared.0, &shared.1, part, block)
                })
            })
            .collect();
        let mut rows = Vec::new();
        let mut groups = Vec::new();
        for task in tasks {
            let part = task.await.map_err(|error| {
                StoreError::unavailable(format!("read searched rollups: {error}"), error)
            })??;
            let Some((part_rows, part_groups)) = part else {
                return Ok(None);
            };
            rows.extend(part_rows);
            groups.extend(part_groups);
        }
        // Raw groups of the two parts never share a key: their blocks differ.
        let mut folder = RawFolder::new(request);
        for row in self.group_rows_of(connection, request, groups).await? {
            folder.push_row(row, &mut rows);
        }
        let rest = [(from, first), (last, to)]
            .into_iter()
            .filter(|(start, end)| start < end)
            .collect();
        Ok(Some((rows, rest)))
    }

    /// One part of [`Self::searched_hours`] (`[from, to)`, whole hours): the rows
    /// of its matching rollup entries and the event groups of its other matches,
    /// read on a row reader in one snapshot. `None` for a search without index
    /// terms.
    fn searched_part(
        &self,
        request: &GroupRequest,
        model_ids: &[i64],
        (from, to): (i64, i64),
        block: Option<i64>,
    ) -> Result<Option<SearchedPart>, StoreError> {
        self.with_row_reader(|reader| {
            let sqlite = error::sqlite("read searched rollups");
            let transaction = reader.unchecked_transaction().map_err(&sqlite)?;
            self.refresh_rows(&transaction).map_err(&sqlite)?;
            // The ids the search matches, as this snapshot names them, and the
            // analytics model of each effective model.
            let (search, analytics) = {
                let state = lock_read(self.read_cache());
                (
                    SearchSql::of(&request.scope, &state),
                    state.analytics.clone(),
                )
            };
            let Some(search) = search else {
                return Ok(None);
            };
            let Some(ask) = search.terms.clone() else {
                return Ok(None);
            };
            let matched = search.matched.clone();
            let keyed = search_index::IndexAsk {
                terms: matched.keyed.clone(),
                needle: ask.needle.clone(),
            };
            let mut expected: BTreeMap<i64, u64> = BTreeMap::new();
            each_blob(
                &transaction,
                "SELECT bucket_ms, terms FROM usage_search_h WHERE bucket_ms >= ?1 AND bucket_ms < ?2",
                (from, to),
                |hour, blob| {
                    if let Some(count) = search_index::matched_count(blob, &ask, &keyed) {
                        expected.insert(hour, count);
                    }
                },
            )
            .map_err(&sqlite)?;
            let mut fold = RollupFold::new(request, true, model_ids);
            let mut verdicts = Verdicts::default();
            // Hours whose matches the rollup entries hold: an indexed hour without
            // a rollup row holds no event.
            let mut proven: BTreeSet<i64> = expected
                .iter()
                .filter(|(_, count)| **count == 0)
                .map(|(hour, _)| *hour)
                .collect();
            each_blob(
                &transaction,
                "SELECT bucket_ms, entries FROM usage_rollup_ident_h \
                 WHERE bucket_ms >= ?1 AND bucket_ms < ?2",
                (from, to),
                |hour, blob| {
                    let held = fold.add_searched(self, hour, blob, &matched, &mut verdicts);
                    if expected.get(&hour) == Some(&held) {
                        proven.insert(hour);
                    } else {
                        proven.remove(&hour);
                    }
                },
            )
            .map_err(&sqlite)?;
            // The other matches of the hours not proven, without the events of
            // the entries taken.
            let mut sums = GroupSums::default();
            let mut others = search;
            others.terms = Some(search_index::IndexAsk {
                terms: matched.uncertain.clone(),
                needle: ask.needle.clone(),
            });
            let select = RawSelect {
                columns: GROUP_COLUMNS.to_string(),
                failed_only: request.scope.filters.failed_only,
                exclude: matched.certain_sql(),
                search: Some(others),
            };
            let mut cursor = from;
            let mut ranges = Vec::new();
            for hour in proven.iter().copied().chain([to]) {
                if cursor < hour {
                    ranges.push((cursor, hour));
                }
                cursor = hour.saturating_add(HOUR_MS);
            }
            for range in ranges {
                step_pieces(&transaction, &select, range, |row| {
                    let group = EventGroup::of_row(row, block);
                    let key = &group.key;
                    let model = analytics
                        .get(&key.effective)
                        .copied()
                        .unwrap_or(key.effective);
                    let taken = matched.identity(&key.identity)
                        || matched.band(
                            model,
                            key.resolved.unwrap_or(model),
                            key.tier.unwrap_or(0),
                        );
                    if !taken {
                        sums.add(group);
                    }
                })
                .map_err(&sqlite)?;
            }
            transaction.commit().map_err(&sqlite)?;
            Ok(Some((fold.finish(self), sums.out)))
        })
    }

    /// The heatmap's sums of a scope. Scopes that filter by identity (or need raw
    /// events) are summed from their group rows; the others read whole UTC hours
    /// from the heat rollup, whose entries are summed per local weekday hour by
    /// stored ids and become parts only once per distinct key of a cell.
    async fn heat_parts_inner(&self, scope: Scope, zone: Zone) -> Result<HeatParts, StoreError> {
        let request = GroupRequest {
            scope,
            identity: true,
            timeline: Some((zone.clone(), Granularity::Hour)),
        };
        let scope = &request.scope;
        // Identity filters need full identities; the heat rollup has only two fields.
        if scope.level() != Level::Aggregate {
            let rows = self.groups_inner(request.clone()).await?;
            return Ok(parts_of_rows(&rows, &zone));
        }
        let mut collector = HeatCollector::new();
        let mut pooled = self.reader_connection().await?;
        if scope.from_ms >= scope.to_ms {
            return Ok(collector.finish());
        }
        // One snapshot for the probes of `snap` and every read below.
        let mut connection = sqlx::Connection::begin(&mut *pooled)
            .await
            .map_err(db("begin read"))?;
        let model_ids = self
            .model_ids(&mut connection, &scope.filters.models)
            .await?;
        if !scope.filters.models.is_empty() && model_ids.is_empty() {
            return Ok(collector.finish());
        }
        let (start, end) = snap(&mut connection, scope.from_ms, scope.to_ms).await?;
        let resolutions = allowed(request.timeline.as_ref(), start, end);
        let minutes = minutes_from(&mut connection).await?;
        let mut rows = Vec::new();
        for (source, from, to) in plan(start, end, resolutions, minutes) {
            match source {
                Source::Raw => {
                    self.raw_groups(&mut connection, &request, from, to, &mut rows)
                        .await?;
                }
                Source::Hour => {
                    collector = self
                        .heat_rollup(&request, &model_ids, from, to, collector)
                        .await?;
                }
                Source::Minute | Source::Quarter | Source::Day => {
                    self.rollup_rows(
                        &mut connection,
                        &request,
                        Family::Identity,
                        &model_ids,
                        source,
                        from,
                        to,
                        &mut rows,
                    )
                    .await?;
                }
            }
            for row in rows.drain(..) {
                collector.add_row(&zone, &row);
            }
        }
        Ok(collector.finish())
    }

    /// Adds the heat rollup's entries of the whole UTC hours `[from, to)` to
    /// `collector`, one cell (local weekday hour) at a time: the hours of a cell
    /// are read by key and their entries summed in dense slots ([`HeatSlots`]),
    /// which stay in cache, before each distinct key of the cell is named once. The
    /// blobs are read on a blocking thread through an idle read-only rusqlite
    /// connection of the store's own, so each is decoded where SQLite holds it,
    /// never copied. Like the search's group rows, these hours are read in one
    /// snapshot of their own: every hour is read whole, and none twice.
    async fn heat_rollup(
        &self,
        request: &GroupRequest,
        model_ids: &[i64],
        from: i64,
        to: i64,
        collector: HeatCollector,
    ) -> Result<HeatCollector, StoreError> {
        let Some((zone, _)) = request.timeline.as_ref() else {
            return Ok(collector);
        };
        let mut collector = collector;
        // The whole UTC hours of the range, per cell of the local hour they start.
        let mut hours: Vec<Vec<i64>> = vec![Vec::new(); CELLS];
        let mut bucketer = Bucketer::new(zone, Granularity::Hour);
        let mut hour = from;
        while hour < to {
            hours[collector.cell(zone, bucketer.bucket(hour))].push(hour);
            hour += HOUR_MS;
        }
        let wanted = [false, true].map(|failed| request.scope.filters.matches_failed(failed));
        let model_ids = model_ids.to_vec();
        let scope = request.scope.clone();
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            store.with_row_reader(|reader| {
                let sqlite = error::sqlite("read heat rollups");
                let mut statement = reader
                    .prepare_cached("SELECT entries FROM usage_rollup_heat_h WHERE bucket_ms = ?1")
                    .map_err(&sqlite)?;
                let mut texts: FastMap<i64, u32> = FastMap::default();
                // The contributors of each identity, `None` when the scope refuses it.
                let mut identities: FastMap<i64, Option<(Option<u32>, u32)>> = FastMap::default();
                let mut heat = HeatSlots::default();
                let mut dictionary = HeatDictionary::default();
                // Per blob: the dense id of each identity, and of each band
                // (`None` when the scope refuses its model).
                let mut blob_identities: Vec<u32> = Vec::new();
                let mut blob_bands: Vec<Option<u32>> = Vec::new();
                // Per cell, the slots it added to, in the order they first come
                // (hour after hour, entries in stored order).
                let mut order: Vec<u32> = Vec::new();
                let mut parts: Vec<(HeatKey, HeatSums)> = Vec::new();
                // The keys named so far, and whether they all differ (then a cell's
                // parts, one per slot, need no lookup to be told apart).
                let mut named_keys: FastMap<HeatKey, ()> = FastMap::default();
                let mut distinct = true;
                for (cell, hours) in hours.iter().enumerate() {
                    order.clear();
                    heat.start_cell();
                    for hour in hours {
                        let mut rows = statement.query([hour]).map_err(&sqlite)?;
                        let Some(row) = rows.next().map_err(&sqlite)? else {
                            continue;
                        };
                        let rusqlite::types::ValueRef::Blob(blob) =
                            row.get_ref(0).map_err(&sqlite)?
                        else {
                            continue;
                        };
                        let Some(at) = heat_dictionary(blob, &mut dictionary) else {
                            continue;
                        };
                        blob_identities.clear();
                        blob_identities.extend(
                            dictionary
                                .identities
                                .iter()
                                .map(|identity| heat.identity(*identity)),
                        );
                        blob_bands.clear();
                        blob_bands.extend(dictionary.bands.iter().map(|band| {
                            (model_ids.is_empty() || model_ids.contains(&band.model))
                                .then(|| heat.band(*band))
                        }));
                        heat_entries(blob, at, &dictionary, |identity, band, failed, sums| {
                            if !wanted[usize::from(failed)] {
                                return;
                            }
                            let Some(band) = blob_bands[band] else {
                                return;
                            };
                            if let Some(slot) = heat.add(blob_identities[identity], band, sums) {
                                order.push(slot);
                            }
                        });
                    }
                    if order.is_empty() {
                        continue;
                    }
                    let state = lock_read(store.read_cache());
                    parts.clear();
                    for slot in &order {
                        let slot = *slot as usize;
                        let key = heat.keys[slot];
                        // Stored keys repeat across cells, so each is named once.
                        let named = *heat.names[slot].get_or_insert_with(|| {
                            let contributors =
                                *identities.entry(key.identity).or_insert_with(|| {
                                    let identity = state
                                        .identities
                                        .get(&key.identity)
                                        .cloned()
                                        .unwrap_or_default();
                                    scope
                                        .matches_identity(&identity)
                                        .then(|| collector.contributors(&identity))
                                });
                            let (api_key, provider) = contributors?;
                            let mut text = |id: i64| {
                                *texts
                                    .entry(id)
                                    .or_insert_with(|| collector.text(&state.text(Some(id))))
                            };
                            let named = HeatKey {
                                model: text(key.model),
                                billing_model: text(key.billing),
                                service_tier: text(key.tier),
                                context_band: key.band,
                                api_key,
                                provider: Some(provider),
                            };
                            distinct &= named_keys.insert(named, ()).is_none();
                            Some(named)
                        });
                        if let Some(heat_key) = named {
                            parts.push((heat_key, heat.sums[slot].0));
                        }
                    }
                    drop(state);
                    if distinct {
                        collector.add_distinct_cell(cell, &parts);
                    } else {
                        collector.add_cell(cell, &parts);
                    }
                }
                Ok(collector)
            })
        })
        .await
        .map_err(|error| StoreError::unavailable(format!("sum heat rollups: {error}"), error))?
    }

    /// The (identity, model) pairs of a scope, for filter selectors. A scope of
    /// time alone reads whole UTC days and hours from their pair blobs (or, for
    /// blocks without one yet, their identity rollup's keys), quarter hours and
    /// minutes from their identity rollups' keys, and only its raw edges as group
    /// rows; scopes that filter come from group rows.
    async fn identity_models_inner(
        &self,
        scope: Scope,
    ) -> Result<Vec<(Arc<Identity>, Text)>, StoreError> {
        let mut out: Vec<(Arc<Identity>, Text)> = Vec::new();
        // Interned pointers identify equal identities and texts cheaply.
        let mut seen: HashSet<(usize, usize)> = HashSet::new();
        let mut push = |identity: Arc<Identity>, model: Text| {
            if seen.insert((
                Arc::as_ptr(&identity) as usize,
                Arc::as_ptr(&model).cast::<u8>() as usize,
            )) {
                out.push((identity, model));
            }
        };
        let time_only = scope.level() == Level::Aggregate && scope.filters == Filters::default();
        if !time_only {
            let rows = self
                .groups_inner(GroupRequest {
                    scope,
                    identity: true,
                    timeline: None,
                })
                .await?;
            for row in rows {
                if let Some(identity) = row.identity {
                    push(identity, row.model);
                }
            }
            return Ok(out);
        }
        if scope.from_ms >= scope.to_ms {
            return Ok(out);
        }
        // Only which (identity, model) pairs occur is wanted, not their sums: every
        // block the range covers is read as keys (days and hours from their pair
        // blobs), and the raw edges finer than a minute rollup as the distinct ids
        // of their events. One blocking task reads it all in one snapshot, so the
        // answer waits for one thread hop, not one per probe and segment.
        let store = self.clone();
        let (from, to) = (scope.from_ms, scope.to_ms);
        let (raw, pairs) = tokio::task::spawn_blocking(move || {
            store.with_row_reader(|reader| {
                let sqlite = error::sqlite("read identity model pairs");
                let transaction = reader.unchecked_transaction().map_err(&sqlite)?;
                store.refresh_rows(&transaction).map_err(&sqlite)?;
                let (start, end) = snap_rows(&transaction, from, to).map_err(&sqlite)?;
                let minutes = minutes_from_rows(&transaction).map_err(&sqlite)?;
                let mut raw: FastSet<RawPair> = FastSet::default();
                let mut pairs = FastSet::default();
                for (source, from, to) in plan(start, end, Resolutions::ALL, minutes) {
                    match source {
                        Source::Raw => raw_pairs(&transaction, from, to, &mut raw),
                        _ => read_pairs(&transaction, source, from, to, &mut pairs),
                    }
                    .map_err(&sqlite)?;
                }
                Ok((raw, pairs))
            })
        })
        .await
        .map_err(|error| {
            StoreError::unavailable(format!("read identity model pairs: {error}"), error)
        })??;
        let state = lock_read(self.read_cache());
        for key in raw {
            let identity = state
                .identity_by_key
                .get(&key.identity)
                .cloned()
                .unwrap_or_default();
            let model = state
                .analytics
                .get(&key.model)
                .copied()
                .unwrap_or(key.model);
            push(identity, state.text(Some(model)));
        }
        for (identity, model) in pairs {
            let identity = state.identities.get(&identity).cloned().unwrap_or_default();
            push(identity, state.text(Some(model)));
        }
        Ok(out)
    }

    /// Exact percentiles through value bands (`rollup::encode_banded`), in two
    /// passes over the same snapshot: every band's count (from the small `bands`
    /// column of each run, or, when the scope filters groups, from the group
    /// indexes of its `entries`; raw edge values are counted and kept), then the
    /// values of only the bands that hold a wanted rank.
    async fn percentiles_inner(
        &self,
        request: GroupRequest,
        ask: PercentileAsk,
    ) -> Result<Percentiles, StoreError> {
        let scope = &request.scope;
        if scope.from_ms >= scope.to_ms || ask.is_empty() {
            return Ok(Percentiles::default());
        }
        let mut pooled = self.reader_connection().await?;
        // One snapshot for the probes of `snap` and every read below.
        let mut connection = sqlx::Connection::begin(&mut *pooled)
            .await
            .map_err(db("begin read"))?;
        let mut bucketer = request
            .timeline
            .as_ref()
            .map(|(zone, granularity)| Bucketer::new(zone, *granularity));
        let segments = if scope.level() != Level::Raw {
            let (start, end) = snap(&mut connection, scope.from_ms, scope.to_ms).await?;
            let resolutions = allowed(request.timeline.as_ref(), start, end);
            let minutes = minutes_from(&mut connection).await?;
            plan(start, end, resolutions, minutes)
        } else {
            vec![(Source::Raw, scope.from_ms, scope.to_ms)]
        };
        let model_ids = self
            .model_ids(&mut connection, &scope.filters.models)
            .await?;
        if !scope.filters.models.is_empty() && model_ids.is_empty() {
            return Ok(Percentiles::default());
        }
        let search = if scope.level() == Level::Raw {
            self.search_only(scope)
        } else {
            None
        };
        let filters = &scope.filters;
        let filtered = scope.level() != Level::Aggregate
            || !model_ids.is_empty()
            || !filters.matches_failed(true)
            || !filters.matches_failed(false);
        let mut read = SampleRead {
            filter: filtered.then(|| GroupFilter {
                scope: scope.clone(),
                model_ids: model_ids.clone(),
                verdicts: Verdicts::default(),
            }),
            ..SampleRead::default()
        };
        let mut local = |at: i64| match bucketer.as_mut() {
            Some(bucketer) => bucketer.bucket(at),
            None => 0,
        };
        let positive = |value: Option<i64>| {
            value
                .filter(|v| *v > 0)
                .map_or(0, |v| u32::try_from(v).unwrap_or(u32::MAX))
        };
        // Quarter-hour blocks of hour and day segments, read on a blocking thread.
        let mut sealed: Vec<(i64, i64)> = Vec::new();
        // Minute and quarter segments, read in this transaction.
        let mut recent: Vec<(Source, i64, i64)> = Vec::new();
        for (source, from, to) in segments {
            match source {
                Source::Hour | Source::Day => sealed.push((from, to)),
                Source::Minute | Source::Quarter => recent.push((source, from, to)),
                Source::Raw if scope.level() != Level::Raw || search.is_some() => {
                    if let Some(values) = self
                        .raw_samples(&mut connection, &request, (from, to), search.as_ref())
                        .await?
                    {
                        for (at, latency, ttft) in values {
                            read.push_raw(local(at), latency, ttft);
                        }
                        continue;
                    }
                    self.raw_lean(
                        &mut connection,
                        &request,
                        from,
                        to,
                        search.as_ref(),
                        |row, latency, ttft| {
                            read.push_raw(local(row.bucket_ms), positive(latency), positive(ttft));
                        },
                    )
                    .await?;
                }
                Source::Raw => {
                    self.raw_range(&mut connection, scope, from, to, |event| {
                        read.push_raw(
                            local(event.timestamp_ms),
                            positive(event.latency_ms),
                            positive(event.ttft_ms),
                        );
                    })
                    .await?;
                }
            }
        }
        // First pass over the recent segments: every band's count.
        self.recent_samples(&mut connection, &recent, &mut read, 0, &mut local)
            .await?;
        // Both passes over the hour and day segments, in snapshots of their own.
        if !sealed.is_empty() {
            self.sealed_samples(sealed, &request, &ask, &mut read)
                .await?;
        } else {
            read.decide(&ask);
        }
        // Second pass over the recent segments: the needed bands' values.
        self.recent_samples(&mut connection, &recent, &mut read, 1, &mut local)
            .await?;
        Ok(read.finish(&ask))
    }

    /// Pass `pass` of a percentile read over its minute and quarter segments, in
    /// the read's own transaction.
    async fn recent_samples(
        &self,
        connection: &mut SqliteConnection,
        recent: &[(Source, i64, i64)],
        read: &mut SampleRead,
        pass: usize,
        local: &mut impl FnMut(i64) -> i64,
    ) -> Result<(), StoreError> {
        for (source, from, to) in recent {
            let column = read.column(pass);
            sample_rows(
                connection,
                source.suffix(),
                column,
                (*from, *to),
                |bucket, blob| read.add_run(self, pass, local(bucket), blob),
            )
            .await?;
        }
        Ok(())
    }

    /// Both passes of a percentile read over its hour and day segments, which hold
    /// quarter-hour sample runs: every band's count into `read`, then (once
    /// `read` has decided which bands it needs) those bands' values. A long range
    /// is cut in two parts read at once on two blocking threads, each part in a
    /// snapshot of its own over both passes, like the read's other segments: the
    /// parts are disjoint, so no run is counted twice, and each part's values are
    /// those of the runs it counted.
    async fn sealed_samples(
        &self,
        sealed: Vec<(i64, i64)>,
        request: &GroupRequest,
        ask: &PercentileAsk,
        read: &mut SampleRead,
    ) -> Result<(), StoreError> {
        let failed = |error: tokio::task::JoinError| {
            StoreError::unavailable(format!("read latency samples: {error}"), error)
        };
        let mut workers = Vec::new();
        let mut counted = Vec::new();
        let mut decisions = Vec::new();
        let split = if second_core() {
            SPLIT_SAMPLES_MS
        } else {
            i64::MAX
        };
        for part in split_span(sealed, split) {
            let (counts_tx, counts_rx) = tokio::sync::oneshot::channel();
            let (needed_tx, needed_rx) = std::sync::mpsc::channel::<Arc<Needed>>();
            let store = self.clone();
            let timeline = request.timeline.clone();
            let mut part_read = read.part();
            workers.push(tokio::task::spawn_blocking(move || {
                store.with_row_reader(|reader| {
                    let sqlite = error::sqlite("read latency samples");
                    let transaction = reader.unchecked_transaction().map_err(&sqlite)?;
                    store.refresh_rows(&transaction).map_err(&sqlite)?;
                    let mut bucketer = timeline
                        .as_ref()
                        .map(|(zone, granularity)| Bucketer::new(zone, *granularity));
                    let mut read_pass = |pass: usize, part_read: &mut SampleRead| {
                        let sql = format!(
                            "SELECT bucket_ms, {} FROM usage_rollup_samples_q \
                             WHERE bucket_ms >= ?1 AND bucket_ms < ?2 ORDER BY bucket_ms, run",
                            part_read.column(pass)
                        );
                        let mut statement = transaction.prepare_cached(&sql)?;
                        for (from, to) in &part {
                            let mut rows = statement.query((from, to))?;
                            while let Some(row) = rows.next()? {
                                let at: i64 = row.get(0)?;
                                let bucket = bucketer.as_mut().map_or(0, |b| b.bucket(at));
                                if let ValueRef::Blob(blob) = row.get_ref(1)? {
                                    part_read.add_run(&store, pass, bucket, blob);
                                }
                            }
                        }
                        Ok::<_, rusqlite::Error>(())
                    };
                    read_pass(0, &mut part_read).map_err(&sqlite)?;
                    // The counts go to the caller, which answers with the bands
                    // every bucket needs (no answer: the read is abandoned).
                    let _ = counts_tx.send(part_read.buckets.clone());
                    let Ok(needed) = needed_rx.recv() else {
                        return Ok(part_read);
                    };
                    part_read.needed = Arc::unwrap_or_clone(needed);
                    read_pass(1, &mut part_read).map_err(&sqlite)?;
                    drop(transaction);
                    Ok(part_read)
                })
            }));
            counted.push(counts_rx);
            decisions.push(needed_tx);
        }
        // Every part's counts, before any decision: a part that failed sends none
        // (the others are then dropped unanswered, and its error is returned).
        let mut complete = true;
        for counts in counted {
            match counts.await {
                Ok(buckets) => read.add_counts(&buckets),
                Err(_) => complete = false,
            }
        }
        if complete {
            read.decide(ask);
            let needed = Arc::new(read.needed.clone());
            for decision in &decisions {
                let _ = decision.send(needed.clone());
            }
        }
        drop(decisions);
        for worker in workers {
            let part = worker.await.map_err(failed)??;
            read.add_values(part);
        }
        Ok(())
    }

    /// One page of events, newest first, read on a blocking thread through an idle
    /// rusqlite connection in one read transaction (the caches are topped up in
    /// it first), so every row lends its values instead of copying them.
    async fn events_page_inner(
        &self,
        scope: Scope,
        cursor: Cursor,
        limit: usize,
    ) -> Result<EventPage, StoreError> {
        if scope.from_ms >= scope.to_ms {
            return Ok(EventPage::default());
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            store.with_row_reader(|reader| {
                let sqlite = error::sqlite("read event page");
                let transaction = reader.unchecked_transaction().map_err(&sqlite)?;
                store.refresh_rows(&transaction).map_err(&sqlite)?;
                let page = store
                    .page_rows(&transaction, &scope, cursor, limit)
                    .map_err(&sqlite)?;
                transaction.commit().map_err(&sqlite)?;
                Ok(page)
            })
        })
        .await
        .map_err(|error| StoreError::unavailable(format!("read event page: {error}"), error))?
    }

    /// The page of [`Self::events_page_inner`], on `reader`.
    fn page_rows(
        &self,
        reader: &rusqlite::Connection,
        scope: &Scope,
        cursor: Cursor,
        limit: usize,
    ) -> rusqlite::Result<EventPage> {
        let mut page = EventPage::default();
        // The exclusive upper keyset bound: the end of the range or the cursor.
        let mut upper = (scope.to_ms, i64::MIN);
        if cursor.before_ms > 0 {
            let at = (
                cursor.before_ms,
                if cursor.before_id > 0 {
                    cursor.before_id
                } else {
                    i64::MIN
                },
            );
            upper = upper.min(at);
        }
        // A search narrows each stream in SQL; every event is still checked in full.
        let search = SearchSql::of(scope, &lock_read(self.read_cache()));
        let mut streams: Vec<Stream> = Vec::new();
        if !scope.filters.models.is_empty() {
            let mut wanted: HashSet<i64> = HashSet::new();
            let mut statement =
                reader.prepare_cached("SELECT id FROM dims WHERE kind = 3 AND value = ?")?;
            for model in &scope.filters.models {
                let mut rows = statement.query([model])?;
                if let Some(row) = rows.next()? {
                    wanted.insert(row.get(0)?);
                }
            }
            let state = lock_read(self.read_cache());
            for (effective, analytics) in &state.analytics {
                if wanted.contains(analytics) {
                    streams.push(Stream::new(
                        Some((
                            "coalesce(requested_model_id, model_id) = ?",
                            Some(*effective),
                        )),
                        upper,
                    ));
                }
            }
        } else if scope.filters.failed_only {
            // The literal `failed = 1` lets SQLite use the partial index of failures.
            streams.push(Stream::new(Some(("failed = 1", None)), upper));
        } else {
            streams.push(Stream::new(None, upper));
        }
        let wanted = limit.saturating_add(1);
        // Each stream first fetches its share of the page (plus slack). A stream that
        // runs dry refills with what the page still needs, doubling each time so a
        // heavily filtered stream still reaches its matches in few round trips.
        let first = (wanted / streams.len().max(1))
            .saturating_add(16)
            .clamp(32, 2000);
        for stream in &mut streams {
            stream.next_chunk = first;
        }
        while page.items.len() < wanted {
            let mut best: Option<usize> = None;
            let remaining = (wanted - page.items.len()).saturating_add(16);
            for index in 0..streams.len() {
                while streams[index].buffer.is_empty() && !streams[index].done {
                    let stream = &mut streams[index];
                    let chunk = stream.next_chunk.min(remaining.max(32)).clamp(32, 1000);
                    stream.fill(self, reader, scope, search.as_ref(), chunk)?;
                    stream.next_chunk = stream.next_chunk.saturating_mul(2).min(1000);
                }
                if let Some(head) = streams[index].buffer.front() {
                    let better = match best {
                        None => true,
                        Some(current) => streams[current].buffer.front().is_some_and(|other| {
                            (head.timestamp_ms, head.id) > (other.timestamp_ms, other.id)
                        }),
                    };
                    if better {
                        best = Some(index);
                    }
                }
            }
            let Some(best) = best else { break };
            if let Some(event) = streams[best].buffer.pop_front() {
                page.items.push(event);
            }
        }
        page.has_more = page.items.len() > limit;
        page.items.truncate(limit);
        Ok(page)
    }
}

/// One newest-first walk over events matching an indexed condition.
struct Stream {
    condition: Option<(&'static str, Option<i64>)>,
    upper: (i64, i64),
    buffer: VecDeque<RawEvent>,
    done: bool,
    /// Rows the next refill asks for; doubles on every refill.
    next_chunk: usize,
    /// With an indexed search: the planned parts of the range still to read
    /// (oldest first; the walk takes them from the end). They are planned a
    /// window at a time, newest first, so a page near the newest events decodes
    /// only the index rows of the hours it reads.
    pieces: Option<Pieces>,
}

/// The planned parts of an indexed stream, and the part of its range not yet
/// planned: `[scope.from_ms, planned_from)`, planned next `window` at a time.
struct Pieces {
    planned: Vec<Piece>,
    planned_from: i64,
    window: i64,
}

impl Stream {
    fn new(condition: Option<(&'static str, Option<i64>)>, upper: (i64, i64)) -> Stream {
        Stream {
            condition,
            upper,
            buffer: VecDeque::new(),
            done: false,
            next_chunk: 0,
            pieces: None,
        }
    }

    fn fill(
        &mut self,
        store: &SqliteStore,
        reader: &rusqlite::Connection,
        scope: &Scope,
        search: Option<&SearchSql>,
        chunk: usize,
    ) -> rusqlite::Result<()> {
        let ask = search.and_then(|search| search.terms.as_ref());
        if self.pieces.is_none() && ask.is_some() {
            self.pieces = Some(Pieces {
                planned: Vec::new(),
                planned_from: self.upper.0.saturating_add(1),
                window: 2 * HOUR_MS,
            });
        }
        let mut read = 0;
        loop {
            if let (Some(pieces), Some(ask)) = (&mut self.pieces, ask)
                && pieces.planned.is_empty()
            {
                if pieces.planned_from <= scope.from_ms {
                    self.done = true;
                    return Ok(());
                }
                let start = pieces
                    .planned_from
                    .saturating_sub(pieces.window)
                    .div_euclid(HOUR_MS)
                    .saturating_mul(HOUR_MS)
                    .max(scope.from_ms);
                pieces.planned = search_index::plan(reader, (start, pieces.planned_from), ask)?;
                pieces.planned_from = start;
                pieces.window = pieces.window.saturating_mul(2);
                continue;
            }
            let piece = self
                .pieces
                .as_ref()
                .and_then(|pieces| pieces.planned.last());
            let (start, end, texts, listed) = piece.map_or(
                (scope.from_ms, i64::MAX, search_index::ALL_TEXTS, None),
                Piece::bounds,
            );
            let search = search.map(|search| search.narrowed(texts));
            let wanted = chunk - read;
            let got = self.fill_from(
                store,
                reader,
                scope,
                search.as_deref(),
                (start, end, listed),
                wanted,
            )?;
            read += got;
            match &mut self.pieces {
                None => {
                    self.done = got < wanted;
                    return Ok(());
                }
                Some(pieces) => {
                    if got < wanted {
                        pieces.planned.pop();
                    }
                    if read >= chunk {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Reads up to `limit` events of `[start, end)` below the stream's cursor (only
    /// those in `listed`, when given), newest first, into the buffer; returns how
    /// many rows were read.
    fn fill_from(
        &mut self,
        store: &SqliteStore,
        reader: &rusqlite::Connection,
        scope: &Scope,
        search: Option<&SearchSql>,
        (start, end, listed): (i64, i64, Option<rusqlite::vtab::array::Array>),
        limit: usize,
    ) -> rusqlite::Result<usize> {
        let condition = self
            .condition
            .map(|(sql, _)| format!("{sql} AND "))
            .unwrap_or_default();
        let search_condition = search
            .map(|search| format!("{} AND ", search.condition))
            .unwrap_or_default();
        // The listed ids lead the join, so SQLite reads those rows and no others.
        let from = if listed.is_some() {
            "rarray(?) AS listed CROSS JOIN usage_events ON usage_events.id = listed.value"
        } else {
            "usage_events"
        };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM {from} WHERE {condition}{search_condition}timestamp_ms >= ? \
             AND timestamp_ms < ? AND timestamp_ms <= ? AND (timestamp_ms < ? OR id < ?) \
             ORDER BY timestamp_ms DESC, id DESC LIMIT ?"
        );
        let mut statement = reader.prepare_cached(&sql)?;
        let mut params: Vec<&dyn rusqlite::ToSql> = Vec::new();
        if let Some(listed) = &listed {
            params.push(listed);
        }
        if let Some((_, Some(value))) = &self.condition {
            params.push(value);
        }
        for value in search.map(|search| search.binds.as_slice()).unwrap_or(&[]) {
            params.push(value);
        }
        let limit_bind = i64::try_from(limit).unwrap_or(2000);
        let (upper_ms, upper_id) = self.upper;
        params.extend([
            &start as &dyn rusqlite::ToSql,
            &end,
            &upper_ms,
            &upper_ms,
            &upper_id,
            &limit_bind,
        ]);
        let mut rows = statement.query(params.as_slice())?;
        let state = lock_read(store.read_cache());
        let mut read = 0;
        while let Some(row) = rows.next()? {
            read += 1;
            let event = store.event_from_row(&state, row);
            self.upper = (event.timestamp_ms, event.id);
            if scope.matches_event(&event) {
                self.buffer.push_back(event);
            }
        }
        Ok(read)
    }
}

/// Whether `request`'s scope takes the events of a rollup entry by its failed
/// flag and model (`model_ids`: the scope's models, empty for any).
fn entry_accepted(request: &GroupRequest, model_ids: &[i64], key: &EntryKey) -> bool {
    request.scope.filters.matches_failed(key.failed)
        && (model_ids.is_empty() || model_ids.contains(&key.model))
}

/// Whether `request`'s scope takes the events of identity `id`.
fn identity_accepted(request: &GroupRequest, state: &CacheState, id: i64) -> bool {
    state
        .identities
        .get(&id)
        .is_some_and(|found| request.scope.matches_identity(found))
}

/// The group rows of rollup blobs, summed per local bucket as they are read.
struct RollupFold<'r> {
    request: &'r GroupRequest,
    identity: bool,
    model_ids: &'r [i64],
    bucketer: Option<Bucketer<'r>>,
    /// One small map per local bucket: a blob's entries all land in one, which
    /// stays in cache, where one map of every (bucket, key) would not.
    merged: FastMap<i64, FastMap<EntryKey, Sums>>,
    identity_ok: Verdicts,
}

impl<'r> RollupFold<'r> {
    fn new(request: &'r GroupRequest, identity: bool, model_ids: &'r [i64]) -> RollupFold<'r> {
        RollupFold {
            request,
            identity,
            model_ids,
            bucketer: request
                .timeline
                .as_ref()
                .map(|(zone, granularity)| Bucketer::new(zone, *granularity)),
            merged: FastMap::default(),
            identity_ok: Verdicts::default(),
        }
    }

    /// Adds the entries of the blob of block `bucket` that the scope accepts.
    fn add(&mut self, store: &SqliteStore, bucket: i64, blob: &[u8]) {
        let local = match self.bucketer.as_mut() {
            Some(bucketer) => bucketer.bucket(bucket),
            None => 0,
        };
        let (request, identity, model_ids) = (self.request, self.identity, self.model_ids);
        let identity_ok = &mut self.identity_ok;
        let into = self.merged.entry(local).or_default();
        // Refused entries' sums are stepped over, not decoded.
        let keep = |key: &EntryKey| {
            entry_accepted(request, model_ids, key)
                && (!identity
                    || identity_ok.get(key.identity, |id| {
                        identity_accepted(request, &lock_read(store.read_cache()), id)
                    }))
        };
        decode_entries_where(bucket, identity, blob, keep, |key, sums| {
            into.entry(key).or_default().merge(&sums);
        });
    }

    /// Adds the entries of an identity blob of block `bucket` that hold only
    /// events the search matches (`search` tells which; `matched` keeps its
    /// verdict per identity) and that the rest of the scope accepts, and returns
    /// how many events the matching entries hold, accepted or not.
    fn add_searched(
        &mut self,
        store: &SqliteStore,
        bucket: i64,
        blob: &[u8],
        search: &Matched,
        matched: &mut Verdicts,
    ) -> u64 {
        let local = match self.bucketer.as_mut() {
            Some(bucketer) => bucketer.bucket(bucket),
            None => 0,
        };
        let (request, model_ids) = (self.request, self.model_ids);
        let identity_ok = &mut self.identity_ok;
        let into = self.merged.entry(local).or_default();
        let state = lock_read(store.read_cache());
        let keep = |key: &EntryKey| {
            search.band(key.model, key.billing, key.tier)
                || matched.get(key.identity, |id| {
                    state
                        .identity_keys
                        .get(&id)
                        .is_some_and(|ids| search.identity(ids))
                })
        };
        let mut events = 0_u64;
        decode_entries_where(bucket, true, blob, keep, |key, sums| {
            events = events.saturating_add(u64::try_from(sums.metrics.calls).unwrap_or(0));
            if entry_accepted(request, model_ids, &key)
                && identity_ok.get(key.identity, |id| identity_accepted(request, &state, id))
            {
                into.entry(key).or_default().merge(&sums);
            }
        });
        events
    }

    /// The summed entries as group rows.
    fn finish(self, store: &SqliteStore) -> Vec<GroupRow> {
        let state = lock_read(store.read_cache());
        let identity = self.identity;
        let mut out = Vec::with_capacity(self.merged.values().map(|entries| entries.len()).sum());
        for (bucket_ms, entries) in self.merged {
            for (key, sums) in entries {
                out.push(GroupRow {
                    bucket_ms,
                    identity: if identity {
                        Some(
                            state
                                .identities
                                .get(&key.identity)
                                .cloned()
                                .unwrap_or_default(),
                        )
                    } else {
                        None
                    },
                    model: state.text(Some(key.model)),
                    billing_model: state.text(Some(key.billing)),
                    service_tier: state.text(Some(key.tier)),
                    context_band: key.band,
                    failed: key.failed,
                    metrics: sums.metrics,
                    last_seen_ms: sums.last_seen_ms,
                });
            }
        }
        out
    }
}

/// Reads `column` (`bands` or `entries`) of the sample runs of the minute or
/// quarter table (`suffix`) in `[from, to)`, in chunks, in block and run order.
async fn sample_rows(
    connection: &mut SqliteConnection,
    suffix: &str,
    column: &str,
    (from, to): (i64, i64),
    mut each: impl FnMut(i64, &[u8]),
) -> Result<(), StoreError> {
    let sql = format!(
        "SELECT bucket_ms, run, {column} FROM usage_rollup_samples_{suffix} \
         WHERE (bucket_ms, run) > (?, ?) AND bucket_ms < ? \
         ORDER BY bucket_ms, run LIMIT {BLOB_CHUNK}"
    );
    let mut cursor = (from, -1_i64);
    loop {
        let rows: Vec<(i64, i64, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(cursor.0)
            .bind(cursor.1)
            .bind(to)
            .fetch_all(&mut *connection)
            .await
            .map_err(db("read latency samples"))?;
        let Some(last) = rows.last().map(|row| (row.0, row.1)) else {
            return Ok(());
        };
        let full = rows.len() as i64 == BLOB_CHUNK;
        cursor = last;
        for (bucket, _run, blob) in &rows {
            each(*bucket, blob);
        }
        if !full {
            return Ok(());
        }
    }
}

/// The sample groups a scope that filters them takes: (identity, analytics
/// model, failed), each identity looked up once.
struct GroupFilter {
    scope: Scope,
    model_ids: Vec<i64>,
    verdicts: Verdicts,
}

impl GroupFilter {
    fn accepts(&mut self, store: &SqliteStore, identity: i64, model: i64, failed: bool) -> bool {
        let GroupFilter {
            scope,
            model_ids,
            verdicts,
        } = self;
        let identity_ok = scope.level() == Level::Aggregate
            || verdicts.get(identity, |id| {
                lock_read(store.read_cache())
                    .identities
                    .get(&id)
                    .is_some_and(|found| scope.matches_identity(found))
            });
        identity_ok
            && scope.filters.matches_failed(failed)
            && (model_ids.is_empty() || model_ids.contains(&model))
    }
}

/// The samples of a percentile read, per local bucket and series (latency 0,
/// TTFT 1), in two passes over the runs: counts (pass 0), then the values of the
/// needed bands (pass 1).
#[derive(Default)]
struct SampleRead {
    /// The groups the scope takes, when it filters groups (identity, model or
    /// failed): the first pass then counts the accepted groups' values in the
    /// `entries` blobs (decoding group indexes only) instead of reading the
    /// `bands` column.
    filter: Option<GroupFilter>,
    buckets: FastMap<i64, PerSeries<Banded>>,
    /// Per local bucket and series, the bands whose values the answer needs.
    needed: Needed,
}

/// Per local bucket, the bands of each series whose values a percentile read needs.
type Needed = FastMap<i64, [Vec<u8>; 2]>;

/// The span from which a percentile read reads its hour and day segments in two
/// parts at once: shorter spans hold too few runs to gain from a second thread.
const SPLIT_SAMPLES_MS: i64 = 2 * DAY_MS;

/// Whether the host has a second core, for reads split in two parts at once.
fn second_core() -> bool {
    // Asked once: on Linux the answer reads the cgroup's files.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from)) >= 2
}

/// `segments` (ordered, disjoint, on hour boundaries) as one part, or, when they
/// span `split` or more, as two parts of about equal span cut on an hour boundary.
fn split_span(segments: Vec<(i64, i64)>, split: i64) -> Vec<Vec<(i64, i64)>> {
    let span: i64 = segments.iter().map(|(from, to)| to - from).sum();
    if span < split {
        return vec![segments];
    }
    let mut left = span / 2;
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for (from, to) in segments {
        if left <= 0 {
            second.push((from, to));
            continue;
        }
        let cut = floor_to(from + left, HOUR_MS).clamp(from, to);
        left -= to - from;
        first.push((from, cut));
        if cut < to {
            second.push((cut, to));
        }
    }
    first.retain(|(from, to)| from < to);
    vec![first, second]
}

impl SampleRead {
    /// A raw event's values (0: none), counted and kept.
    fn push_raw(&mut self, local: i64, latency: u32, ttft: u32) {
        let series = self.buckets.entry(local).or_default();
        series.latency.push(latency);
        series.ttft.push(ttft);
    }

    /// An empty read with the same group filter, for a part read elsewhere.
    fn part(&self) -> SampleRead {
        SampleRead {
            filter: self.filter.as_ref().map(|filter| GroupFilter {
                scope: filter.scope.clone(),
                model_ids: filter.model_ids.clone(),
                verdicts: Verdicts::default(),
            }),
            ..SampleRead::default()
        }
    }

    /// Adds the band counts of a part's first pass (which keeps no values).
    fn add_counts(&mut self, buckets: &FastMap<i64, PerSeries<Banded>>) {
        for (local, part) in buckets {
            let series = self.buckets.entry(*local).or_default();
            for index in 0..2 {
                series.get_mut(index).merge(part.get(index));
            }
        }
    }

    /// Adds the values a part kept in its second pass (its counts were added by
    /// [`Self::add_counts`]).
    fn add_values(&mut self, part: SampleRead) {
        for (local, part) in part.buckets {
            let series = self.buckets.entry(local).or_default();
            for index in 0..2 {
                series.get_mut(index).keep_all(part.get(index));
            }
        }
    }

    /// The column of the sample runs that pass `pass` reads.
    fn column(&self, pass: usize) -> &'static str {
        if pass == 0 && self.filter.is_none() {
            "bands"
        } else {
            "entries"
        }
    }

    /// Adds one run of local bucket `local`, read for pass `pass` ([`Self::column`]):
    /// its band counts, or the values of its needed bands.
    fn add_run(&mut self, store: &SqliteStore, pass: usize, local: i64, blob: &[u8]) {
        let SampleRead {
            filter,
            buckets,
            needed,
        } = self;
        let mut accepts = filter.as_mut().map(|filter| {
            move |identity, model, failed| filter.accepts(store, identity, model, failed)
        });
        let keep = accepts
            .as_mut()
            .map(|accepts| accepts as &mut dyn FnMut(i64, i64, bool) -> bool);
        if pass == 0 {
            let series = buckets.entry(local).or_default();
            let add = |index: usize, band: u8, count: u64| series.get_mut(index).count(band, count);
            match keep {
                None => decode_band_counts(blob, add),
                Some(keep) => count_banded(blob, keep, add),
            }
            return;
        }
        let (Some(needed), Some(series)) = (needed.get(&local), buckets.get_mut(&local)) else {
            return;
        };
        decode_banded(
            blob,
            keep,
            |index, band| needed[index.min(1)].contains(&band),
            |index, band, values| series.get_mut(index).keep(band, values),
        );
    }

    /// Every bucket's counts of series `index`, summed.
    fn overall_counts(&self, index: usize) -> Vec<u64> {
        let mut counts = vec![0_u64; BANDS];
        for series in self.buckets.values() {
            for (sum, count) in counts.iter_mut().zip(&series.get(index).counts) {
                *sum += count;
            }
        }
        counts
    }

    /// The bands each bucket's answers need: those of its own percentiles and
    /// those of the percentiles over every bucket.
    fn decide(&mut self, ask: &PercentileAsk) {
        let overall_bands: Vec<Vec<u8>> = (0..2)
            .map(|index| {
                let counts = self.overall_counts(index);
                ask.overall
                    .get(index)
                    .iter()
                    .filter_map(|p| locate(&counts, *p).map(|found| found.band))
                    .collect()
            })
            .collect();
        for (local, series) in &self.buckets {
            let bands = std::array::from_fn(|index| {
                let mut bands = series.get(index).needed(ask.per_bucket.get(index));
                bands.extend_from_slice(&overall_bands[index]);
                bands.sort_unstable();
                bands.dedup();
                bands
            });
            self.needed.insert(*local, bands);
        }
    }

    fn finish(self, ask: &PercentileAsk) -> Percentiles {
        let mut out = Percentiles::default();
        for index in 0..2 {
            let wanted = ask.overall.get(index);
            if wanted.is_empty() {
                continue;
            }
            let parts: Vec<&Banded> = self
                .buckets
                .values()
                .map(|series| series.get(index))
                .collect();
            *out.overall.get_mut(index) = select_in(&self.overall_counts(index), &parts, wanted);
        }
        if !ask.per_bucket.latency.is_empty() || !ask.per_bucket.ttft.is_empty() {
            for (local, series) in &self.buckets {
                out.buckets.insert(
                    *local,
                    PerSeries {
                        latency: series.latency.select(&ask.per_bucket.latency),
                        ttft: series.ttft.select(&ask.per_bucket.ttft),
                    },
                );
            }
        }
        out
    }
}

/// Whether the scope accepts each identity id, worked out once per id. Identity ids
/// count up from 1, so the usual ones index a small table instead of being hashed
/// for every rollup entry.
#[derive(Default)]
struct Verdicts {
    /// 0: not asked yet, 1: accepted, 2: refused.
    dense: Vec<u8>,
    sparse: FastMap<i64, bool>,
}

impl Verdicts {
    const DENSE: i64 = 1 << 16;

    fn get(&mut self, id: i64, decide: impl FnOnce(i64) -> bool) -> bool {
        let Some(index) = usize::try_from(id).ok().filter(|_| id < Self::DENSE) else {
            return *self.sparse.entry(id).or_insert_with(|| decide(id));
        };
        if index >= self.dense.len() {
            self.dense.resize(index + 1, 0);
        }
        match self.dense[index] {
            1 => true,
            2 => false,
            _ => {
                let verdict = decide(id);
                self.dense[index] = if verdict { 1 } else { 2 };
                verdict
            }
        }
    }
}

/// Folds raw events into group rows (one per key and local bucket).
struct RawFolder<'r> {
    bucketer: Option<Bucketer<'r>>,
    identity: bool,
    index: FastMap<FoldKey, usize>,
}

impl<'r> RawFolder<'r> {
    fn new(request: &'r GroupRequest) -> RawFolder<'r> {
        RawFolder {
            bucketer: request
                .timeline
                .as_ref()
                .map(|(zone, granularity)| Bucketer::new(zone, *granularity)),
            identity: request.identity,
            index: FastMap::default(),
        }
    }

    fn push(&mut self, event: &RawEvent, out: &mut Vec<GroupRow>) {
        self.push_row(GroupRow::from_event(event, self.identity), out);
    }

    /// Adds a row whose `bucket_ms` is still the event time.
    fn push_row(&mut self, mut row: GroupRow, out: &mut Vec<GroupRow>) {
        row.bucket_ms = match self.bucketer.as_mut() {
            Some(bucketer) => bucketer.bucket(row.bucket_ms),
            None => 0,
        };
        // Identities come from the shared cache, so equal identities share a pointer.
        let identity_key = row
            .identity
            .as_ref()
            .map_or(0, |identity| Arc::as_ptr(identity) as usize);
        let key = (
            row.bucket_ms,
            identity_key,
            row.model.clone(),
            row.billing_model.clone(),
            row.service_tier.clone(),
            row.context_band,
            row.failed,
        );
        match self.index.get(&key) {
            Some(position) => {
                let existing = &mut out[*position];
                existing.metrics.add(&row.metrics);
                existing.last_seen_ms = existing.last_seen_ms.max(row.last_seen_ms);
            }
            None => {
                self.index.insert(key, out.len());
                out.push(row);
            }
        }
    }
}

/// What raw events are grouped by ([`SqliteStore::event_groups`]).
#[derive(Clone, PartialEq, Eq, Hash)]
struct EventKey {
    /// The UTC block of the event's time (0 without a timeline).
    block: i64,
    /// The event id of an event that needs the exact check (a group of its own).
    single: Option<i64>,
    failed: bool,
    effective: i64,
    resolved: Option<i64>,
    tier: Option<i64>,
    identity: [i64; 11],
    band: u8,
}

/// Raw ranges at least this long are summed in two halves at once
/// ([`SqliteStore::sum_events_split`]): a day of searched events takes about half
/// the time, while a few minutes are not worth a second thread.
const SPLIT_SUM_MS: i64 = 10 * MINUTE_MS;

/// Steps the rows `select` reads in `[from, to)` in `transaction`'s snapshot (whose
/// lookup caches are topped up): a search reads only the candidates of the hours
/// its index lists (`search_index::plan`), each piece in turn.
fn step_pieces(
    transaction: &rusqlite::Connection,
    select: &RawSelect,
    (from, to): (i64, i64),
    mut each: impl FnMut(&rusqlite::Row<'_>),
) -> rusqlite::Result<()> {
    let pieces = match select.terms() {
        Some(terms) => search_index::plan(transaction, (from, to), terms)?,
        None => vec![Piece::Range(from, to, search_index::ALL_TEXTS)],
    };
    for piece in pieces {
        let (start, end, texts, listed) = piece.bounds();
        let (sql, binds) = select.statement(listed.is_some(), texts);
        let mut statement = transaction.prepare_cached(&sql)?;
        let mut params: Vec<&dyn rusqlite::ToSql> = vec![&start, &end];
        if let Some(listed) = &listed {
            params.push(listed);
        }
        for value in &binds {
            params.push(value);
        }
        let mut rows = statement.query(params.as_slice())?;
        while let Some(row) = rows.next()? {
            each(row);
        }
    }
    Ok(())
}

/// Calls `each` with the block and blob of every row `sql` (a block and a blob,
/// `?1` and `?2` the range) reads in `[from, to)`.
fn each_blob(
    transaction: &rusqlite::Connection,
    sql: &str,
    (from, to): (i64, i64),
    mut each: impl FnMut(i64, &[u8]),
) -> rusqlite::Result<()> {
    let mut statement = transaction.prepare_cached(sql)?;
    let mut rows = statement.query((from, to))?;
    while let Some(row) = rows.next()? {
        let block: i64 = row.get(0)?;
        if let ValueRef::Blob(blob) = row.get_ref(1)? {
            each(block, blob);
        }
    }
    Ok(())
}

/// The columns [`EventGroup::of_row`] reads after the first five of a
/// [`RawSelect`].
const GROUP_COLUMNS: &str = "resolved_model_id, service_tier_id, provider_id, executor_type_id, auth_index_id, source_id, \
     source_hash_id, api_key_hash_id, account_snapshot_id, auth_label_snapshot_id, \
     auth_file_snapshot_id, auth_provider_snapshot_id, auth_project_id_snapshot_id, \
     coalesce(normalized_total_input_tokens, input_tokens), output_tokens, reasoning_tokens, \
     cached_tokens, cache_tokens, cache_read_tokens, cache_creation_tokens, total_tokens, latency_ms";

/// The rows of a part's matching rollup entries and the event groups of its
/// other matches ([`SqliteStore::searched_part`]).
type SearchedPart = (Vec<GroupRow>, Vec<EventGroup>);

/// Event groups summed per key, in the order each key first came.
#[derive(Default)]
struct GroupSums {
    index: FastMap<EventKey, usize>,
    out: Vec<EventGroup>,
}

impl GroupSums {
    fn add(&mut self, group: EventGroup) {
        match self.index.get(&group.key) {
            Some(position) => self.out[*position].merge(&group),
            None => {
                self.index.insert(group.key.clone(), self.out.len());
                self.out.push(group);
            }
        }
    }
}

/// One group of matching events.
struct EventGroup {
    key: EventKey,
    /// Time and id of the group's first event.
    first: (i64, i64),
    last_ms: i64,
    metrics: Metrics,
}

impl EventGroup {
    /// The one-event group of a row read with [`GROUP_COLUMNS`], its time cut into
    /// `block`s.
    fn of_row(row: &rusqlite::Row<'_>, block: Option<i64>) -> EventGroup {
        // As `raw_lean` reads them: a missing or non-integer value is 0.
        let id = |index: usize| match row.get_ref(index) {
            Ok(ValueRef::Integer(value)) => Some(value),
            _ => None,
        };
        let int = |index: usize| id(index).unwrap_or(0);
        let event_id = int(0);
        let timestamp_ms = int(1);
        let failed = int(3) != 0;
        let (tokens, cached) = token_columns(int);
        let input = tokens.input;
        EventGroup {
            key: EventKey {
                block: block.map_or(0, |block| timestamp_ms.div_euclid(block)),
                single: (int(2) != 0).then_some(event_id),
                failed,
                effective: int(4),
                resolved: id(5),
                tier: id(6),
                identity: std::array::from_fn(|offset| int(7 + offset)),
                band: context_band(input),
            },
            first: (timestamp_ms, event_id),
            last_ms: timestamp_ms,
            metrics: metrics_of(failed, input, &tokens, cached, id(26)),
        }
    }

    /// Adds the events of `other`, a group of the same key.
    fn merge(&mut self, other: &EventGroup) {
        self.metrics.add(&other.metrics);
        self.last_ms = self.last_ms.max(other.last_ms);
        self.first = self.first.min(other.first);
    }
}

/// An (effective model, identity key) pair of raw events, ids as stored.
#[derive(PartialEq, Eq, Hash)]
struct RawPair {
    model: i64,
    identity: [i64; 11],
}

/// Adds the distinct (effective model, identity key) pairs of the raw events in
/// `[from, to)` to `pairs`, stepping ids only (a missing id is 0, as the group
/// reads key them).
fn raw_pairs(
    reader: &rusqlite::Connection,
    from: i64,
    to: i64,
    pairs: &mut FastSet<RawPair>,
) -> rusqlite::Result<()> {
    let mut statement = reader.prepare_cached(
        "SELECT coalesce(requested_model_id, model_id), provider_id, executor_type_id, \
         auth_index_id, source_id, source_hash_id, api_key_hash_id, account_snapshot_id, \
         auth_label_snapshot_id, auth_file_snapshot_id, auth_provider_snapshot_id, \
         auth_project_id_snapshot_id \
         FROM usage_events WHERE timestamp_ms >= ?1 AND timestamp_ms < ?2",
    )?;
    let mut rows = statement.query((from, to))?;
    while let Some(row) = rows.next()? {
        let int = |index: usize| match row.get_ref(index) {
            Ok(ValueRef::Integer(value)) => value,
            _ => 0,
        };
        pairs.insert(RawPair {
            model: int(0),
            identity: std::array::from_fn(|offset| int(1 + offset)),
        });
    }
    Ok(())
}

/// Adds the (identity, model) pairs of the `source` blocks in `[from, to)`, both
/// block boundaries, to `pairs`. Days and hours read their pair blobs
/// (`usage_rollup_pairs_*`, two varints per pair) and fall back to their identity
/// rollup where a block has none yet; quarters and minutes read the keys of theirs.
fn read_pairs(
    reader: &rusqlite::Connection,
    source: Source,
    from: i64,
    to: i64,
    pairs: &mut FastSet<(i64, i64)>,
) -> rusqlite::Result<()> {
    let suffix = source.suffix();
    // The names are built from the fixed suffixes of `Source`, never from input.
    let sql = match source {
        Source::Day | Source::Hour => format!(
            "SELECT p.entries, CASE WHEN p.entries IS NULL THEN r.entries END \
             FROM usage_rollup_ident_{suffix} r LEFT JOIN usage_rollup_pairs_{suffix} p \
             ON p.bucket_ms = r.bucket_ms \
             WHERE r.bucket_ms >= ?1 AND r.bucket_ms < ?2"
        ),
        Source::Quarter | Source::Minute => format!(
            "SELECT NULL, entries FROM usage_rollup_ident_{suffix} \
             WHERE bucket_ms >= ?1 AND bucket_ms < ?2"
        ),
        Source::Raw => return Ok(()),
    };
    let mut statement = reader.prepare_cached(&sql)?;
    let mut rows = statement.query((from, to))?;
    while let Some(row) = rows.next()? {
        if let ValueRef::Blob(blob) = row.get_ref(0)? {
            decode_pairs(blob, |identity, model| {
                pairs.insert((identity, model));
            });
        } else if let ValueRef::Blob(blob) = row.get_ref(1)? {
            decode_keys(true, blob, |key| {
                pairs.insert((key.identity, key.model));
            });
        }
    }
    Ok(())
}

/// Error kind, error code and plan type ids, and the trace id, of one event.
/// Error kind, error code and plan ids, then the trace id as stored: a text, or
/// the bytes of a hex one (`compact::trace_bytes`).
type HeaderRow = (
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<Vec<u8>>,
);

impl AnalyticsStore for SqliteStore {
    async fn groups(&self, request: GroupRequest) -> Result<Vec<GroupRow>, StoreError> {
        self.groups_inner(request).await
    }

    async fn heat_parts(&self, scope: Scope, zone: Zone) -> Result<HeatParts, StoreError> {
        self.heat_parts_inner(scope, zone).await
    }

    async fn identity_models(
        &self,
        scope: Scope,
    ) -> Result<Vec<(Arc<Identity>, Text)>, StoreError> {
        self.identity_models_inner(scope).await
    }

    async fn percentiles(
        &self,
        request: GroupRequest,
        ask: PercentileAsk,
    ) -> Result<Percentiles, StoreError> {
        self.percentiles_inner(request, ask).await
    }

    async fn events_page(
        &self,
        scope: Scope,
        cursor: Cursor,
        limit: usize,
    ) -> Result<EventPage, StoreError> {
        self.events_page_inner(scope, cursor, limit).await
    }

    async fn raw_events(&self, scope: Scope, cap: usize) -> Result<Vec<RawEvent>, StoreError> {
        Ok(self
            .events_page_inner(scope, Cursor::default(), cap)
            .await?
            .items)
    }

    async fn event_points(&self, from_ms: i64, to_ms: i64) -> Result<Vec<FineBlock>, StoreError> {
        if from_ms >= to_ms {
            return Ok(Vec::new());
        }
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT timestamp_ms, failed, total_tokens FROM usage_events \
             WHERE timestamp_ms >= ? AND timestamp_ms < ?",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(self.reader())
        .await
        .map_err(db("read event points"))?;
        Ok(rows
            .into_iter()
            .map(|(bucket_ms, failed, tokens)| FineBlock {
                bucket_ms,
                failed: failed != 0,
                calls: 1,
                tokens,
            })
            .collect())
    }

    async fn fine_blocks(&self, from_ms: i64, to_ms: i64) -> Result<Vec<FineBlock>, StoreError> {
        let rows: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT bucket_ms, failed, calls, total_tokens FROM usage_rollup_fine WHERE bucket_ms >= ? AND bucket_ms < ?",
        )
        .bind(floor_to(from_ms, FINE_MS))
        .bind(to_ms)
        .fetch_all(self.reader())
        .await
        .map_err(db("read fine blocks"))?;
        Ok(rows
            .into_iter()
            .map(|(bucket_ms, failed, calls, tokens)| FineBlock {
                bucket_ms,
                failed: failed != 0,
                calls,
                tokens,
            })
            .collect())
    }

    async fn fine_tail(
        &self,
        block_ms: i64,
        to_ms: i64,
    ) -> Result<Option<Vec<FineBlock>>, StoreError> {
        let mut pooled = self
            .reader()
            .acquire()
            .await
            .map_err(db("acquire reader"))?;
        // One snapshot for the probe and the read.
        let mut connection = sqlx::Connection::begin(&mut *pooled)
            .await
            .map_err(db("begin read"))?;
        if !no_events(&mut connection, to_ms, block_ms.saturating_add(FINE_MS)).await? {
            return Ok(None);
        }
        let rows: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT bucket_ms, failed, calls, total_tokens FROM usage_rollup_fine WHERE bucket_ms = ?",
        )
        .bind(block_ms)
        .fetch_all(&mut *connection)
        .await
        .map_err(db("read fine blocks"))?;
        Ok(Some(
            rows.into_iter()
                .map(|(bucket_ms, failed, calls, tokens)| FineBlock {
                    bucket_ms,
                    failed: failed != 0,
                    calls,
                    tokens,
                })
                .collect(),
        ))
    }

    async fn price_book(&self) -> Result<PriceBook, StoreError> {
        self.cached_price_book().await
    }

    async fn latest_header_events(
        &self,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<RawEvent>, StoreError> {
        self.latest_header_events_inner(from_ms, to_ms, limit).await
    }

    async fn header_values(&self, scope: Scope) -> Result<HeaderValues, StoreError> {
        let mut connection = self.reader_connection().await?;
        let mut sets: [BTreeSet<String>; 4] = Default::default();
        if scope.level() == Level::Aggregate && scope.filters == Filters::default() {
            // Time-only scope: one pass over the range, ids resolved from the cache.
            let rows: Vec<HeaderRow> = sqlx::query_as(
                "SELECT DISTINCT header_error_kind_id, header_error_code_id, header_quota_plan_type_id, \
                 CASE WHEN typeof(header_trace) = 'text' THEN header_trace END, \
                 CASE WHEN typeof(header_trace) = 'blob' THEN header_trace END \
                 FROM usage_events WHERE timestamp_ms >= ? AND timestamp_ms < ? \
                 AND (header_error_kind_id IS NOT NULL OR header_error_code_id IS NOT NULL \
                 OR header_quota_plan_type_id IS NOT NULL OR coalesce(header_trace, '') <> '')",
            )
            .bind(scope.from_ms)
            .bind(scope.to_ms)
            .fetch_all(&mut *connection)
            .await
            .map_err(db("read header values"))?;
            let state = lock_read(self.read_cache());
            let mut scratch = String::new();
            for (kind, code, plan, trace, trace_bytes) in rows {
                let trace = match (trace, trace_bytes) {
                    (Some(trace), _) => trace,
                    (None, Some(bytes)) => crate::compact::stored_key(
                        rusqlite::types::ValueRef::Blob(&bytes),
                        &mut scratch,
                    )
                    .unwrap_or_default()
                    .to_string(),
                    (None, None) => String::new(),
                };
                for (set, text) in sets.iter_mut().zip([
                    state.text(kind).to_string(),
                    state.text(code).to_string(),
                    state.text(plan).to_string(),
                    trace,
                ]) {
                    if !text.is_empty() {
                        set.insert(text);
                    }
                }
            }
        } else {
            self.raw_range(
                &mut connection,
                &scope,
                scope.from_ms,
                scope.to_ms,
                |event| {
                    for (set, text) in sets.iter_mut().zip([
                        &*event.header_error_kind,
                        &*event.header_error_code,
                        &*event.header_quota_plan_type,
                        event.header_trace_id.as_deref().unwrap_or(""),
                    ]) {
                        if !text.is_empty() && !set.contains(text) {
                            set.insert(text.to_string());
                        }
                    }
                },
            )
            .await?;
        }
        let [error_kinds, error_codes, quota_plans, trace_ids] =
            sets.map(|set| set.into_iter().collect::<Vec<_>>());
        Ok(HeaderValues {
            error_kinds,
            error_codes,
            quota_plans,
            trace_ids,
        })
    }

    async fn latest_event_id(&self) -> Result<i64, StoreError> {
        let id: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM usage_events")
            .fetch_one(self.reader())
            .await
            .map_err(db("read latest event id"))?;
        Ok(id.unwrap_or(0))
    }

    async fn newest_events(&self, limit: usize) -> Result<Vec<RawEvent>, StoreError> {
        let mut connection = self.reader_connection().await?;
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM usage_events ORDER BY timestamp_ms DESC, id DESC LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut *connection)
            .await
            .map_err(db("read newest events"))?;
        let state = lock_read(self.read_cache());
        Ok(rows
            .iter()
            .map(|row| self.event_from_row(&state, row))
            .collect())
    }
}

impl SqliteStore {
    /// The stored event with this hash (64 hex characters), through the identity
    /// ledger's key.
    pub(crate) async fn event_by_hash(&self, hash: &[u8]) -> Result<Option<RawEvent>, StoreError> {
        let mut connection = self.reader_connection().await?;
        let Ok(whole) = <[u8; 32]>::try_from(hash) else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM usage_events WHERE id = ({})",
            crate::ledger::EVENT_ID_BY_HASH
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(crate::ledger::prefix(&whole))
            .bind(hash)
            .fetch_optional(&mut *connection)
            .await
            .map_err(db("read event by hash"))?;
        let state = lock_read(self.read_cache());
        Ok(row.map(|row| self.event_from_row(&state, &row)))
    }
}

/// The row-reader queries of a scope's raw events (those `search` matches, when
/// given): the event id, time, whether the search's exact check is needed, the
/// failed flag and the effective model at positions 0 to 4, then `columns`.
struct RawSelect {
    columns: String,
    failed_only: bool,
    search: Option<SearchSql>,
    /// Events this condition holds for are left out (a NULL counts as false).
    exclude: Option<String>,
}

impl RawSelect {
    /// What the search asks the index (`SearchSql::terms`).
    fn terms(&self) -> Option<&search_index::IndexAsk> {
        self.search
            .as_ref()
            .and_then(|search| search.terms.as_ref())
    }

    /// The statement of one piece and its binds after the range (and the list):
    /// every event in `[?1, ?2)`, or those listed in `?3` (a `rarray`), the search
    /// condition keeping only the free-text terms of the kinds in `texts`.
    fn statement(&self, listed: bool, texts: u8) -> (String, Vec<String>) {
        let search = self.search.as_ref().map(|search| search.narrowed(texts));
        let first = if listed { 4 } else { 3 };
        // The listed ids lead the join, so SQLite reads those rows and no others.
        let from = if listed {
            "rarray(?3) AS listed CROSS JOIN usage_events ON usage_events.id = listed.value"
        } else {
            "usage_events"
        };
        let sql = format!(
            "SELECT id, timestamp_ms, {unsure}, failed, coalesce(requested_model_id, model_id), {columns} \
             FROM {from} WHERE timestamp_ms >= ?1 AND timestamp_ms < ?2{failed}{condition}{exclude}",
            unsure = search.as_ref().map_or("0", |search| search.unsure.as_str()),
            columns = self.columns,
            failed = if self.failed_only {
                " AND failed = 1"
            } else {
                ""
            },
            condition = search.as_ref().map_or(String::new(), |search| format!(
                " AND {}",
                search.numbered_condition(first)
            )),
            exclude = self
                .exclude
                .as_ref()
                .map_or(String::new(), |exclude| format!(
                    " AND NOT coalesce(({exclude}), 0)"
                )),
        );
        let binds = search.map_or_else(Vec::new, |search| search.binds.clone());
        (sql, binds)
    }
}

fn raw_select(columns: &str, scope: &Scope, search: Option<&SearchSql>) -> RawSelect {
    RawSelect {
        columns: columns.to_string(),
        failed_only: scope.filters.failed_only,
        search: search.cloned(),
        exclude: None,
    }
}

/// The token columns every lean event read selects at positions 18 (input) to 25
/// (total), and the cached tokens beyond the explicit read and creation buckets, as
/// `RawEvent::compat_cached` counts them.
fn token_columns(int: impl Fn(usize) -> i64) -> (TokenCounts, i64) {
    let tokens = TokenCounts {
        input: int(18),
        output: int(19),
        reasoning: int(20),
        cached: int(21),
        cache: int(22),
        cache_read: int(23),
        cache_creation: int(24),
        total: int(25),
    };
    let cached =
        (tokens.cached.max(tokens.cache) - tokens.cache_read.max(0) - tokens.cache_creation.max(0))
            .max(0);
    (tokens, cached)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_uses_days_hours_quarters_and_raw_edges() {
        let from = DAY_MS + 5 * 60_000; // 00:05 on day 1
        let to = 4 * DAY_MS + 2 * HOUR_MS + 20 * 60_000; // 02:20 on day 4
        let segments = plan(from, to, Resolutions::ALL, i64::MAX);
        assert_eq!(
            segments,
            vec![
                (Source::Raw, from, DAY_MS + QUARTER_MS),
                (Source::Quarter, DAY_MS + QUARTER_MS, DAY_MS + HOUR_MS),
                (Source::Hour, DAY_MS + HOUR_MS, 2 * DAY_MS),
                (Source::Day, 2 * DAY_MS, 4 * DAY_MS),
                (Source::Hour, 4 * DAY_MS, 4 * DAY_MS + 2 * HOUR_MS),
                (
                    Source::Quarter,
                    4 * DAY_MS + 2 * HOUR_MS,
                    4 * DAY_MS + 2 * HOUR_MS + QUARTER_MS
                ),
                (Source::Raw, 4 * DAY_MS + 2 * HOUR_MS + QUARTER_MS, to),
            ]
        );
        // Segments tile the range without gaps or overlaps.
        let mut at = from;
        for (_, a, b) in &segments {
            assert_eq!(*a, at);
            at = *b;
        }
        assert_eq!(at, to);
        let none = Resolutions {
            minute: false,
            quarter: false,
            hour: false,
            day: false,
        };
        assert_eq!(plan(from, to, none, 0), vec![(Source::Raw, from, to)]);
    }

    #[test]
    fn long_sample_spans_split_in_two_on_an_hour() {
        let short = vec![(HOUR_MS, DAY_MS), (DAY_MS, 2 * DAY_MS)];
        assert_eq!(split_span(short.clone(), 3 * DAY_MS), vec![short.clone()]);
        // Two segments of 23 and 24 hours: the half hour the first leaves before
        // the middle rounds down to the hour, so each part is one segment.
        let parts = split_span(short.clone(), 2 * DAY_MS - HOUR_MS);
        assert_eq!(
            parts,
            vec![vec![(HOUR_MS, DAY_MS)], vec![(DAY_MS, 2 * DAY_MS)],]
        );
        let unaligned = vec![(HOUR_MS, 3 * HOUR_MS), (5 * HOUR_MS, 10 * HOUR_MS)];
        let parts = split_span(unaligned.clone(), HOUR_MS);
        assert_eq!(
            parts,
            vec![
                vec![(HOUR_MS, 3 * HOUR_MS), (5 * HOUR_MS, 6 * HOUR_MS)],
                vec![(6 * HOUR_MS, 10 * HOUR_MS)],
            ]
        );
        // The parts tile the segments.
        let mut joined: Vec<(i64, i64)> = parts.concat();
        joined.sort_unstable();
        assert_eq!(joined.iter().map(|(a, b)| b - a).sum::<i64>(), 7 * HOUR_MS);
    }

    #[test]
    fn plan_reads_recent_edges_from_minutes() {
        const MINUTE: i64 = 60_000;
        let from = DAY_MS + 3 * MINUTE + 30_000; // 00:03:30
        let to = DAY_MS + HOUR_MS + 7 * MINUTE + 10_000; // 01:07:10
        assert_eq!(
            plan(from, to, Resolutions::ALL, DAY_MS),
            vec![
                (Source::Raw, from, DAY_MS + 4 * MINUTE),
                (Source::Minute, DAY_MS + 4 * MINUTE, DAY_MS + QUARTER_MS),
                (Source::Quarter, DAY_MS + QUARTER_MS, DAY_MS + HOUR_MS),
                (
                    Source::Minute,
                    DAY_MS + HOUR_MS,
                    DAY_MS + HOUR_MS + 7 * MINUTE
                ),
                (Source::Raw, DAY_MS + HOUR_MS + 7 * MINUTE, to),
            ]
        );
        // Minutes only from where they are kept; raw before.
        let kept = DAY_MS + 10 * MINUTE;
        assert_eq!(
            plan(from, to, Resolutions::ALL, kept)[..3],
            [
                (Source::Raw, from, kept),
                (Source::Minute, kept, DAY_MS + QUARTER_MS),
                (Source::Quarter, DAY_MS + QUARTER_MS, DAY_MS + HOUR_MS),
            ]
        );
        // A range inside one quarter hour.
        let (a, b) = (DAY_MS + 20 * MINUTE + 1, DAY_MS + 25 * MINUTE);
        assert_eq!(
            plan(a, b, Resolutions::ALL, 0),
            vec![
                (Source::Raw, a, DAY_MS + 21 * MINUTE),
                (Source::Minute, DAY_MS + 21 * MINUTE, b),
            ]
        );
        // A zone whose buckets cut minutes reads raw edges.
        let cut = Resolutions {
            minute: false,
            ..Resolutions::ALL
        };
        assert_eq!(plan(a, b, cut, 0), vec![(Source::Raw, a, b)]);
    }

    /// Searched sums over whole hours come from the identity rollups' matching
    /// entries plus the other matches read raw: an unkeyed column (a user agent),
    /// a free text (a failure summary), a model matched only as the upstream model
    /// of a requested alias. Hours the index proves are not read raw. Either way
    /// the sums equal a substring test of the events themselves, per hour, with and
    /// without a failed-only filter, and no event is counted twice.
    #[tokio::test]
    async fn searched_hours_come_from_rollups_only_where_exact() {
        use cpamp_domain::event::UsageEvent;
        use cpamp_domain::ports::{BatchOrigin, EventSink, IngestBatch};

        const HOUR: i64 = 1_767_222_000_000;
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(crate::Options::new(dir.path().join("usage.sqlite")))
            .await
            .expect("open store");
        let mut events = Vec::new();
        let mut times: Vec<i64> = (0..4_i64)
            .flat_map(|hour| (0..20_i64).map(move |i| HOUR + hour * HOUR_MS + i * 150_000 + 7))
            .collect();
        // The edges of the range, outside its whole hours.
        times.extend([HOUR - 10 * MINUTE_MS, HOUR + 4 * HOUR_MS + 5 * MINUTE_MS]);
        for (n, at) in times.into_iter().enumerate() {
            let claude = n % 2 == 0;
            let mut event = UsageEvent {
                event_hash: format!("{:064x}", n + 1),
                timestamp_ms: at,
                model: if claude {
                    "claude-sonnet-4-5"
                } else {
                    "gpt-5(high)"
                }
                .to_string(),
                auth_file_snapshot: Some(
                    if claude {
                        "claude-a.json"
                    } else {
                        "codex-b.json"
                    }
                    .to_string(),
                ),
                account_snapshot: Some(
                    if claude {
                        "a@example.com"
                    } else {
                        "b@example.com"
                    }
                    .to_string(),
                ),
                service_tier: (n % 4 == 1).then(|| "priority".to_string()),
                ..UsageEvent::default()
            };
            event.tokens.total = 10 + n as i64;
            event.failed = n % 7 == 0;
            // An unkeyed column that matches, in the second hour.
            if n == 23 {
                event.user_agent = Some("claude-cli/2.0".to_string());
            }
            // A failure summary that matches, in the third hour.
            if n == 45 {
                event.failed = true;
                event.fail_summary = Some("Claude overloaded".to_string());
            }
            // In the second hour, for "gpt-5": a matching resolved model (its entry
            // is taken, though no column the read can leave out in SQL names it),
            // and a matching user agent on an event no entry takes.
            if n == 24 {
                event.resolved_model = Some("gpt-5-mini".to_string());
            }
            if n == 26 {
                event.user_agent = Some("gpt-5-client/1.0".to_string());
            }
            // A matching upstream model behind a requested alias, in the fourth
            // hour: the alias is the event's model in the rollups.
            if n == 63 {
                event.model = "claude-haiku-4-5".to_string();
                event.requested_model = Some("cheap-alias".to_string());
            }
            events.push(event);
        }
        store
            .store_batch(IngestBatch {
                origin: BatchOrigin::Collector("http://cpa".into()),
                events: events.clone(),
                dead_letters: Vec::new(),
            })
            .await
            .expect("store");
        assert_eq!(
            store
                .seal_search_hours(HOUR + 6 * HOUR_MS)
                .await
                .expect("seal"),
            6
        );
        let (from, to) = (HOUR - 30 * MINUTE_MS, HOUR + 4 * HOUR_MS + 20 * MINUTE_MS);
        for (needle, failed_only) in [
            "claude",
            "gpt-5",
            "prio",
            "codex-b",
            "alias",
            "nothing-has-this",
        ]
        .into_iter()
        .flat_map(|needle| [(needle, false), (needle, true)])
        {
            let mut scope = Scope::time_only(from, to);
            scope.search_query = needle.to_string();
            scope.filters.failed_only = failed_only;
            let request = GroupRequest {
                scope,
                identity: true,
                timeline: Some((Zone::parse("UTC").expect("zone"), Granularity::Hour)),
            };
            let mut connection = store.reader_connection().await.expect("reader");
            let search = store.search_only(&request.scope).expect("a search");
            let (_, rest) = store
                .searched_hours(&mut connection, &request, &search)
                .await
                .expect("searched hours")
                .expect("whole hours");
            drop(connection);
            assert_eq!(
                rest,
                vec![(from, HOUR), (HOUR + 4 * HOUR_MS, to)],
                "{needle}: parts read raw"
            );
            let matching: Vec<&UsageEvent> = events
                .iter()
                .filter(|event| {
                    [
                        Some(event.model.clone()),
                        event.requested_model.clone(),
                        event.resolved_model.clone(),
                        event.auth_file_snapshot.clone(),
                        event.account_snapshot.clone(),
                        event.service_tier.clone(),
                        event.user_agent.clone(),
                        event.fail_summary.clone(),
                    ]
                    .into_iter()
                    .flatten()
                    .any(|text| text.to_lowercase().contains(needle))
                })
                .filter(|event| event.failed || !failed_only)
                .collect();
            let rows = store.groups(request).await.expect("groups");
            let calls: i64 = rows.iter().map(|row| row.metrics.calls).sum();
            let tokens: i64 = rows.iter().map(|row| row.metrics.total).sum();
            assert_eq!(
                calls,
                matching.len() as i64,
                "{needle} (failed only: {failed_only}): calls"
            );
            assert_eq!(
                tokens,
                matching.iter().map(|event| event.tokens.total).sum::<i64>(),
                "{needle}: tokens"
            );
            let mut per_hour: BTreeMap<i64, i64> = BTreeMap::new();
            for row in &rows {
                *per_hour.entry(row.bucket_ms).or_default() += row.metrics.calls;
            }
            per_hour.retain(|_, calls| *calls > 0);
            let mut expected_hours: BTreeMap<i64, i64> = BTreeMap::new();
            for event in &matching {
                *expected_hours
                    .entry(event.timestamp_ms.div_euclid(HOUR_MS) * HOUR_MS)
                    .or_default() += 1;
            }
            assert_eq!(
                per_hour, expected_hours,
                "{needle} (failed only: {failed_only}): calls per hour"
            );
            assert!(
                rows.iter().all(|row| row.identity.is_some()),
                "{needle}: rows carry identities"
            );
        }
    }
}
