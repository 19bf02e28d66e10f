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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, RwLock};

use cpamp_domain::StoreError;
use cpamp_domain::analytics::Metrics;
use cpamp_domain::analytics::cost::PriceBook;
use cpamp_domain::analytics::query::{
    AnalyticsStore, Cursor, EventPage, FineBlock, GroupRequest, GroupRow, Identity, Level,
    RawEvent, SampleBlock, Scope, Text,
};
use cpamp_domain::analytics::time::{Bucketer, DAY_MS, Granularity, HOUR_MS, QUARTER_MS, Zone};
use cpamp_domain::event::{TokenCounts, format_timestamp_ms};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use crate::rollup::{FINE_MS, decode_varints};
use crate::{SqliteStore, error};

/// In-memory copies of the immutable lookup tables.
#[derive(Default)]
pub(crate) struct ReadCache {
    state: RwLock<CacheState>,
}

#[derive(Default)]
struct CacheState {
    texts: HashMap<i64, Text>,
    max_dim: i64,
    identities: HashMap<i64, Arc<Identity>>,
    identity_by_key: HashMap<[i64; 11], Arc<Identity>>,
    max_identity: i64,
    analytics: HashMap<i64, i64>,
    max_analytics_seq: i64,
    empty: Text,
}

impl CacheState {
    fn text(&self, id: Option<i64>) -> Text {
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

fn lock_read(cache: &ReadCache) -> std::sync::RwLockReadGuard<'_, CacheState> {
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

const EVENT_COLUMNS: &str = "id, event_hash, request_id, timestamp_ms, timestamp_text, provider_id, executor_type_id, \
    model_id, requested_model_id, resolved_model_id, endpoint_id, method_id, path_id, client_ip_id, \
    x_forwarded_for_id, user_agent_id, auth_type_id, auth_index_id, source_id, source_hash_id, api_key_hash_id, \
    account_snapshot_id, auth_label_snapshot_id, auth_file_snapshot_id, auth_provider_snapshot_id, \
    auth_project_id_snapshot_id, auth_snapshot_at_ms, reasoning_effort_id, service_tier_id, \
    request_service_tier_id, response_service_tier_id, cache_input_mode, input_tokens, output_tokens, \
    reasoning_tokens, cached_tokens, cache_tokens, cache_read_tokens, cache_creation_tokens, total_tokens, \
    normalized_total_input_tokens, latency_ms, ttft_ms, failed, fail_status_code, fail_summary, \
    response_metadata_json, header_quota_recover_at_ms, header_quota_used_percent, header_quota_plan_type_id, \
    header_error_kind_id, header_error_code_id, header_trace_id, created_at_ms";

const METRIC_COLUMNS: &str = "calls, input_tokens, output_tokens, reasoning_tokens, cached_tokens, cache_read_tokens, \
    cache_creation_tokens, total_tokens, latency_sum_ms, latency_samples, zero_token_calls, last_seen_ms";

const METRIC_SUMS: &str = "sum(calls), sum(input_tokens), sum(output_tokens), sum(reasoning_tokens), \
    sum(cached_tokens), sum(cache_read_tokens), sum(cache_creation_tokens), sum(total_tokens), \
    sum(latency_sum_ms), sum(latency_samples), sum(zero_token_calls), max(last_seen_ms)";

/// Where a segment of a range is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Raw,
    Quarter,
    Hour,
    Day,
}

impl Source {
    fn suffix(self) -> &'static str {
        match self {
            Source::Raw => "",
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

/// Splits `[from, to)` into segments, each read at the coarsest allowed resolution.
fn plan(
    from: i64,
    to: i64,
    quarter_ok: bool,
    hour_ok: bool,
    day_ok: bool,
) -> Vec<(Source, i64, i64)> {
    let mut out = Vec::new();
    let mut push = |source: Source, a: i64, b: i64| {
        if a < b {
            out.push((source, a, b));
        }
    };
    let (q0, q1) = (ceil_to(from, QUARTER_MS), floor_to(to, QUARTER_MS));
    if !quarter_ok || q0 >= q1 {
        push(Source::Raw, from, to);
        return out;
    }
    push(Source::Raw, from, q0);
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
    push(Source::Raw, q1, to);
    out
}

/// Resolution flags (quarter, hour, day) allowed for a timeline.
fn allowed(timeline: Option<&(Zone, Granularity)>, from: i64, to: i64) -> (bool, bool, bool) {
    match timeline {
        None => (true, true, true),
        Some((zone, granularity)) => {
            let quarter = zone.lossless(*granularity, QUARTER_MS, from, to);
            let hour = quarter && zone.lossless(*granularity, HOUR_MS, from, to);
            let day = hour && zone.lossless(*granularity, DAY_MS, from, to);
            (quarter, hour, day)
        }
    }
}

impl SqliteStore {
    /// Tops up the lookup caches with rows written since the last call.
    async fn refresh(&self, connection: &mut SqliteConnection) -> Result<(), StoreError> {
        let cache = self.read_cache();
        let (max_dim, max_identity, max_seq) = {
            let state = lock_read(cache);
            (state.max_dim, state.max_identity, state.max_analytics_seq)
        };
        let dims: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, value FROM dims WHERE id > ? ORDER BY id")
                .bind(max_dim)
                .fetch_all(&mut *connection)
                .await
                .map_err(db("read dims"))?;
        let identities: Vec<(i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT id, provider_id, executor_type_id, auth_index_id, source_id, source_hash_id, api_key_hash_id, \
             account_id, auth_label_id, auth_file_id, auth_provider_id, auth_project_id \
             FROM usage_identities WHERE id > ? ORDER BY id",
        )
        .bind(max_identity)
        .fetch_all(&mut *connection)
        .await
        .map_err(db("read identities"))?;
        let analytics: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT seq, model_dim_id, analytics_dim_id FROM usage_model_analytics WHERE seq > ? ORDER BY seq",
        )
        .bind(max_seq)
        .fetch_all(&mut *connection)
        .await
        .map_err(db("read model map"))?;
        if dims.is_empty() && identities.is_empty() && analytics.is_empty() {
            return Ok(());
        }
        let mut state = lock_write(cache);
        for (id, value) in dims {
            state.max_dim = state.max_dim.max(id);
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
            state.identity_by_key.insert(key, identity);
        }
        for (seq, model, analytics) in analytics {
            state.max_analytics_seq = state.max_analytics_seq.max(seq);
            state.analytics.insert(model, analytics);
        }
        Ok(())
    }

    /// Dictionary ids (kind Model) of the wanted analytics models.
    async fn model_ids(
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

    fn event_from_row(&self, state: &CacheState, row: &SqliteRow) -> RawEvent {
        let id = |index: usize| row.try_get::<Option<i64>, _>(index).ok().flatten();
        let int = |index: usize| id(index).unwrap_or(0);
        let text = |index: usize| state.text(id(index));
        let string = |index: usize| row.try_get::<Option<String>, _>(index).ok().flatten();
        let timestamp_ms = int(3);
        let key = [5, 6, 17, 18, 19, 20, 21, 22, 23, 24, 25].map(|index| int(index));
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
        let effective = requested_id.or(model_id).unwrap_or(0);
        let analytics = state.analytics.get(&effective).copied().or(Some(effective));
        let hash: Vec<u8> = row.try_get(1).unwrap_or_default();
        RawEvent {
            id: int(0),
            event_hash: hex::encode(hash),
            request_id: string(2),
            timestamp_ms,
            timestamp: string(4).unwrap_or_else(|| format_timestamp_ms(timestamp_ms)),
            model: state.text(model_id),
            requested_model: state.text(requested_id),
            resolved_model: text(9),
            analytics_model: state.text(analytics),
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
            response_metadata_json: string(46),
            header_quota_recover_at_ms: id(47),
            header_quota_used_percent: row.try_get::<Option<f64>, _>(48).ok().flatten(),
            header_quota_plan_type: text(49),
            header_error_kind: text(50),
            header_error_code: text(51),
            header_trace_id: string(52),
            created_at_ms: int(53),
        }
    }

    /// Raw events of `[from, to)` that match the scope, oldest first.
    async fn raw_range(
        &self,
        connection: &mut SqliteConnection,
        scope: &Scope,
        from: i64,
        to: i64,
    ) -> Result<Vec<RawEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM usage_events WHERE timestamp_ms >= ? AND timestamp_ms < ?{} ORDER BY timestamp_ms, id",
            if scope.filters.failed_only {
                " AND failed = 1"
            } else {
                ""
            }
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(from)
            .bind(to)
            .fetch_all(&mut *connection)
            .await
            .map_err(db("read events"))?;
        let state = lock_read(self.read_cache());
        Ok(rows
            .iter()
            .map(|row| self.event_from_row(&state, row))
            .filter(|event| scope.matches_event(event))
            .collect())
    }

    async fn rollup_rows(
        &self,
        connection: &mut SqliteConnection,
        request: &GroupRequest,
        identity: bool,
        model_ids: &[i64],
        source: Source,
        from: i64,
        to: i64,
        out: &mut Vec<GroupRow>,
    ) -> Result<(), StoreError> {
        let family = if identity { "ident" } else { "agg" };
        let identity_column = if identity { "identity_id" } else { "0" };
        let key = format!(
            "{identity_column}, model_id, billing_model_id, service_tier_id, context_band, failed"
        );
        let group_key = if identity {
            key.clone()
        } else {
            "model_id, billing_model_id, service_tier_id, context_band, failed".to_string()
        };
        let filters = &request.scope.filters;
        let mut conditions = String::new();
        if !model_ids.is_empty() {
            let list: Vec<String> = model_ids.iter().map(i64::to_string).collect();
            conditions.push_str(&format!(" AND model_id IN ({})", list.join(",")));
        }
        if filters.failed_only {
            conditions.push_str(" AND failed = 1");
        }
        if !filters.include_failed {
            conditions.push_str(" AND failed = 0");
        }
        let table = format!("usage_rollup_{family}_{}", source.suffix());
        let sql = if request.timeline.is_some() {
            format!(
                "SELECT bucket_ms, {key}, {METRIC_COLUMNS} FROM {table} WHERE bucket_ms >= ? AND bucket_ms < ?{conditions}"
            )
        } else {
            format!(
                "SELECT 0, {key}, {METRIC_SUMS} FROM {table} WHERE bucket_ms >= ? AND bucket_ms < ?{conditions} GROUP BY {group_key}"
            )
        };
        let rows: Vec<SqliteRow> = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(from)
            .bind(to)
            .fetch_all(&mut *connection)
            .await
            .map_err(db("read rollups"))?;
        let state = lock_read(self.read_cache());
        let mut bucketer = request
            .timeline
            .as_ref()
            .map(|(zone, granularity)| Bucketer::new(zone, *granularity));
        out.reserve(rows.len());
        for row in &rows {
            let int = |index: usize| row.try_get::<i64, _>(index).unwrap_or(0);
            let group_identity = if identity {
                match state.identities.get(&int(1)) {
                    Some(found) => Some(found.clone()),
                    None => Some(Arc::new(Identity::default())),
                }
            } else {
                None
            };
            if let Some(found) = &group_identity {
                if !request.scope.matches_identity(found) {
                    continue;
                }
            }
            let failed = int(6) != 0;
            let calls = int(7);
            let bucket_ms = match bucketer.as_mut() {
                Some(bucketer) => bucketer.bucket(int(0)),
                None => 0,
            };
            out.push(GroupRow {
                bucket_ms,
                identity: group_identity,
                model: state.text(Some(int(2))),
                billing_model: state.text(Some(int(3))),
                service_tier: state.text(Some(int(4))),
                context_band: u8::try_from(int(5)).unwrap_or(0),
                failed,
                metrics: Metrics {
                    calls,
                    failures: if failed { calls } else { 0 },
                    input: int(8),
                    output: int(9),
                    reasoning: int(10),
                    cached: int(11),
                    cache_read: int(12),
                    cache_creation: int(13),
                    total: int(14),
                    latency_sum: int(15),
                    latency_samples: int(16),
                    zero_token_calls: int(17),
                },
                last_seen_ms: int(18),
            });
        }
        Ok(())
    }

    async fn reader_connection(
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

    async fn groups_inner(&self, request: GroupRequest) -> Result<Vec<GroupRow>, StoreError> {
        let scope = &request.scope;
        let mut connection = self.reader_connection().await?;
        if scope.from_ms >= scope.to_ms {
            return Ok(Vec::new());
        }
        let level = scope.level();
        let mut out = Vec::new();
        if level == Level::Raw {
            let events = self
                .raw_range(&mut connection, scope, scope.from_ms, scope.to_ms)
                .await?;
            raw_groups(&events, &request, &mut out);
            return Ok(out);
        }
        let model_ids = self
            .model_ids(&mut connection, &scope.filters.models)
            .await?;
        if !scope.filters.models.is_empty() && model_ids.is_empty() {
            return Ok(out);
        }
        let identity = request.identity || level == Level::Identity;
        let (quarter_ok, hour_ok, day_ok) =
            allowed(request.timeline.as_ref(), scope.from_ms, scope.to_ms);
        for (source, from, to) in plan(scope.from_ms, scope.to_ms, quarter_ok, hour_ok, day_ok) {
            if source == Source::Raw {
                let events = self.raw_range(&mut connection, scope, from, to).await?;
                raw_groups(&events, &request, &mut out);
            } else {
                self.rollup_rows(
                    &mut connection,
                    &request,
                    identity,
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

    async fn samples_inner(&self, request: GroupRequest) -> Result<Vec<SampleBlock>, StoreError> {
        let scope = &request.scope;
        let mut connection = self.reader_connection().await?;
        let mut blocks: Vec<SampleBlock> = Vec::new();
        if scope.from_ms >= scope.to_ms {
            return Ok(blocks);
        }
        let mut bucketer = request
            .timeline
            .as_ref()
            .map(|(zone, granularity)| Bucketer::new(zone, *granularity));
        let push_event = |blocks: &mut Vec<SampleBlock>, event: &RawEvent, bucket: i64| {
            let latency = event
                .latency_ms
                .filter(|v| *v > 0)
                .map(|v| u32::try_from(v).unwrap_or(u32::MAX));
            let ttft = event
                .ttft_ms
                .filter(|v| *v > 0)
                .map(|v| u32::try_from(v).unwrap_or(u32::MAX));
            if latency.is_none() && ttft.is_none() {
                return;
            }
            blocks.push(SampleBlock {
                bucket_ms: bucket,
                latencies: latency.into_iter().collect(),
                ttfts: ttft.into_iter().collect(),
            });
        };
        let quarter_ok = match request.timeline.as_ref() {
            None => true,
            Some((zone, granularity)) => {
                zone.lossless(*granularity, QUARTER_MS, scope.from_ms, scope.to_ms)
            }
        };
        let (q0, q1) = (
            ceil_to(scope.from_ms, QUARTER_MS),
            floor_to(scope.to_ms, QUARTER_MS),
        );
        let use_rollup = scope.level() == Level::Aggregate && quarter_ok && q0 < q1;
        let raw_spans: Vec<(i64, i64)> = if use_rollup {
            vec![(scope.from_ms, q0), (q1, scope.to_ms)]
        } else {
            vec![(scope.from_ms, scope.to_ms)]
        };
        for (from, to) in raw_spans {
            if from >= to {
                continue;
            }
            for event in self.raw_range(&mut connection, scope, from, to).await? {
                let bucket = match bucketer.as_mut() {
                    Some(bucketer) => bucketer.bucket(event.timestamp_ms),
                    None => 0,
                };
                push_event(&mut blocks, &event, bucket);
            }
        }
        if use_rollup {
            let model_ids = self
                .model_ids(&mut connection, &scope.filters.models)
                .await?;
            if !scope.filters.models.is_empty() && model_ids.is_empty() {
                return Ok(blocks);
            }
            let mut sql = String::from(
                "SELECT bucket_ms, latencies, ttfts FROM usage_rollup_latency WHERE bucket_ms >= ? AND bucket_ms < ?",
            );
            if !model_ids.is_empty() {
                let list: Vec<String> = model_ids.iter().map(i64::to_string).collect();
                sql.push_str(&format!(" AND model_id IN ({})", list.join(",")));
            }
            if scope.filters.failed_only {
                sql.push_str(" AND failed = 1");
            }
            if !scope.filters.include_failed {
                sql.push_str(" AND failed = 0");
            }
            let rows: Vec<(i64, Vec<u8>, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(q0)
                .bind(q1)
                .fetch_all(&mut *connection)
                .await
                .map_err(db("read latency samples"))?;
            for (bucket, latencies, ttfts) in rows {
                let mut block = SampleBlock {
                    bucket_ms: match bucketer.as_mut() {
                        Some(bucketer) => bucketer.bucket(bucket),
                        None => 0,
                    },
                    ..SampleBlock::default()
                };
                decode_varints(&latencies, &mut block.latencies);
                decode_varints(&ttfts, &mut block.ttfts);
                blocks.push(block);
            }
        }
        Ok(merge_blocks(blocks))
    }

    async fn events_page_inner(
        &self,
        scope: Scope,
        cursor: Cursor,
        limit: usize,
    ) -> Result<EventPage, StoreError> {
        let mut connection = self.reader_connection().await?;
        let mut page = EventPage::default();
        if scope.from_ms >= scope.to_ms {
            return Ok(page);
        }
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
        let mut streams: Vec<Stream> = Vec::new();
        if !scope.filters.models.is_empty() {
            let wanted: HashSet<i64> = self
                .model_ids(&mut connection, &scope.filters.models)
                .await?
                .into_iter()
                .collect();
            let state = lock_read(self.read_cache());
            for (effective, analytics) in &state.analytics {
                if wanted.contains(analytics) {
                    streams.push(Stream::new(
                        Some(("coalesce(requested_model_id, model_id) = ?", *effective)),
                        upper,
                    ));
                }
            }
        } else if scope.filters.failed_only {
            streams.push(Stream::new(Some(("failed = ?", 1)), upper));
        } else {
            streams.push(Stream::new(None, upper));
        }
        let wanted = limit.saturating_add(1);
        let mut chunk = wanted.clamp(64, 2000);
        while page.items.len() < wanted {
            let mut best: Option<usize> = None;
            for index in 0..streams.len() {
                while streams[index].buffer.is_empty() && !streams[index].done {
                    streams[index]
                        .fill(self, &mut connection, &scope, chunk)
                        .await?;
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
            chunk = 2000;
        }
        page.has_more = page.items.len() > limit;
        page.items.truncate(limit);
        Ok(page)
    }
}

/// One newest-first walk over events matching an indexed condition.
struct Stream {
    condition: Option<(&'static str, i64)>,
    upper: (i64, i64),
    buffer: VecDeque<RawEvent>,
    done: bool,
}

impl Stream {
    fn new(condition: Option<(&'static str, i64)>, upper: (i64, i64)) -> Stream {
        Stream {
            condition,
            upper,
            buffer: VecDeque::new(),
            done: false,
        }
    }

    async fn fill(
        &mut self,
        store: &SqliteStore,
        connection: &mut SqliteConnection,
        scope: &Scope,
        chunk: usize,
    ) -> Result<(), StoreError> {
        let condition = self
            .condition
            .map(|(sql, _)| format!("{sql} AND "))
            .unwrap_or_default();
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM usage_events WHERE {condition}timestamp_ms >= ? \
             AND (timestamp_ms, id) < (?, ?) ORDER BY timestamp_ms DESC, id DESC LIMIT ?"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some((_, value)) = self.condition {
            query = query.bind(value);
        }
        let rows = query
            .bind(scope.from_ms)
            .bind(self.upper.0)
            .bind(self.upper.1)
            .bind(i64::try_from(chunk).unwrap_or(2000))
            .fetch_all(&mut *connection)
            .await
            .map_err(db("read event page"))?;
        if rows.len() < chunk {
            self.done = true;
        }
        let state = lock_read(store.read_cache());
        for row in &rows {
            let event = store.event_from_row(&state, row);
            self.upper = (event.timestamp_ms, event.id);
            if scope.matches_event(&event) {
                self.buffer.push_back(event);
            }
        }
        Ok(())
    }
}

/// Folds raw events into group rows (one per key and local bucket).
fn raw_groups(events: &[RawEvent], request: &GroupRequest, out: &mut Vec<GroupRow>) {
    let mut bucketer = request
        .timeline
        .as_ref()
        .map(|(zone, granularity)| Bucketer::new(zone, *granularity));
    let mut index: HashMap<(i64, usize, Text, Text, Text, u8, bool), usize> = HashMap::new();
    for event in events {
        let mut row = GroupRow::from_event(event, request.identity);
        row.bucket_ms = match bucketer.as_mut() {
            Some(bucketer) => bucketer.bucket(event.timestamp_ms),
            None => 0,
        };
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
        match index.get(&key) {
            Some(position) => {
                let existing = &mut out[*position];
                existing.metrics.add(&row.metrics);
                existing.last_seen_ms = existing.last_seen_ms.max(row.last_seen_ms);
            }
            None => {
                index.insert(key, out.len());
                out.push(row);
            }
        }
    }
}

/// Merges sample blocks with the same bucket.
fn merge_blocks(blocks: Vec<SampleBlock>) -> Vec<SampleBlock> {
    let mut merged: HashMap<i64, SampleBlock> = HashMap::new();
    for block in blocks {
        let entry = merged
            .entry(block.bucket_ms)
            .or_insert_with(|| SampleBlock {
                bucket_ms: block.bucket_ms,
                ..SampleBlock::default()
            });
        entry.latencies.extend(block.latencies);
        entry.ttfts.extend(block.ttfts);
    }
    let mut out: Vec<SampleBlock> = merged.into_values().collect();
    out.sort_by_key(|block| block.bucket_ms);
    out
}

impl AnalyticsStore for SqliteStore {
    async fn groups(&self, request: GroupRequest) -> Result<Vec<GroupRow>, StoreError> {
        self.groups_inner(request).await
    }

    async fn samples(&self, request: GroupRequest) -> Result<Vec<SampleBlock>, StoreError> {
        self.samples_inner(request).await
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

    async fn price_book(&self) -> Result<PriceBook, StoreError> {
        // No price table exists yet: every model is unpriced, so every cost is unknown.
        Ok(PriceBook::default())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_uses_days_hours_quarters_and_raw_edges() {
        let from = DAY_MS + 5 * 60_000; // 00:05 on day 1
        let to = 4 * DAY_MS + 2 * HOUR_MS + 20 * 60_000; // 02:20 on day 4
        let segments = plan(from, to, true, true, true);
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
        assert_eq!(
            plan(from, to, false, false, false),
            vec![(Source::Raw, from, to)]
        );
    }
}
