//! `POST /v0/management/monitoring/analytics`: the include matrix, and the
//! orchestration that reads what the included sections need. Each section's
//! shape and rules live in its own file:
//!
//! - `summary`: summary and summary comparison.
//! - `timeline`, `anomalies`: the per-bucket timeline and its anomaly points.
//! - `heatmap`: heatmap and hourly distribution.
//! - `models`: model share and model stats.
//! - `groups`: account, credential and API-key stats.
//! - `channels`: channel share and failure sources.
//! - `group_timeline`: credential and API-key timelines.
//! - `options`: filter options and selectors.
//! - `tasks`: task buckets.
//! - `events`: event pages and the drill-down preview.

mod anomalies;
mod channels;
mod events;
mod group_timeline;
mod groups;
mod heatmap;
mod models;
mod options;
mod summary;
mod tasks;
mod timeline;

use serde::Serialize;

pub use anomalies::Anomaly;
pub use channels::{ChannelShare, FailureSource};
pub use events::{EventItem, EventsSection, event_item};
pub use group_timeline::GroupTimelinePoint;
pub use groups::{ApiKeyContext, GroupStat};
pub use heatmap::{Contributor, HeatCell, HourPoint};
pub use models::{ModelShare, ModelStat};
pub use options::FilterOptions;
pub use summary::{Comparison, Summary};
pub use tasks::TaskBucket;
pub use timeline::TimelinePoint;

use super::QueryError;
use super::failures::{RecentFailure, recent_failure_item};
use std::collections::HashMap;
use std::sync::Arc;

use super::percentile::{PercentileAsk, Percentiles};
use super::query::{AnalyticsStore, Cursor, GroupRequest, GroupRow, Level, Scope};
use super::time::{Granularity, Zone};
use super::totals::{Totals, unpriced_models};

/// Which sections to compute: the request's `include` object. Each flag is the
/// same-named include key and fills the same-named response section, unless noted.
#[derive(Debug, Clone, Default)]
pub struct Include {
    /// `summary`: totals, rates, cost, latency and throughput of the scope.
    pub summary: bool,
    /// `summary_profile: "compact"`: skip the summary's rolling-30-minute, per-day,
    /// zero-token-model and task figures (they read 0 or `null`).
    pub compact: bool,
    /// `summary_percentiles`: compute P95 latency and TTFT in a compact summary too
    /// (a full summary always has them).
    pub percentiles: bool,
    /// `summary_comparison`: the same totals over the equally long window just before
    /// the range (needs `summary`).
    pub summary_comparison: bool,
    /// `timeline`: one point per local bucket of the granularity that has events.
    pub timeline: bool,
    /// `anomaly_points`: buckets whose calls, cost, tokens per call, cache hit rate,
    /// failure rate or P95 latency jumped against the previous bucket.
    pub anomaly_points: bool,
    /// `hourly_distribution`: calls and tokens per local hour of day.
    pub hourly_distribution: bool,
    /// `heatmap`: weekday × hour cells with their top models, API keys and providers.
    pub heatmap: bool,
    /// `model_share`: calls, tokens and cost per model.
    pub model_share: bool,
    /// `model_stats`: full per-model statistics.
    pub model_stats: bool,
    /// `channel_share`: usage per auth index.
    pub channel_share: bool,
    /// `failure_sources`: source × auth index pairs with failures.
    pub failure_sources: bool,
    /// `account_stats`: usage per account.
    pub account_stats: bool,
    /// `credential_stats`: usage per credential id.
    pub credential_stats: bool,
    /// `credential_timeline`: per-bucket usage of each credential.
    pub credential_timeline: bool,
    /// `api_key_timeline`: per-bucket usage of each client API key; only answered
    /// when the request filters or searches by an API-key hash.
    pub api_key_timeline: bool,
    /// `api_key_stats`: usage per client API key.
    pub api_key_stats: bool,
    /// `filter_options`: option rows with counts for every filter, over the range and
    /// search only.
    pub filter_options: bool,
    /// `filter_selectors`: the cheap selector lists instead (answered as
    /// `filter_options`; wins over `filter_options`).
    pub filter_selectors: bool,
    /// `task_buckets`: approximate tasks (calls of one credential at one instant).
    pub task_buckets: bool,
    /// `recent_failures: N`: the newest N failed calls of the scope; 0 for none.
    pub recent_failures: usize,
    /// `events_page`: one page of matching events (`events` in the response).
    pub events_page: Option<PageRequest>,
    /// `drilldown_preview`: `(from_ms, to_ms, limit)` of a first page of events over
    /// another range with the same filters; skipped unless `0 < from_ms < to_ms`.
    pub drilldown_preview: Option<(i64, i64, usize)>,
}

/// `include.events_page`: which page of events to answer.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    /// Events per page (default 100, at most 50 000).
    pub limit: usize,
    /// Where the page starts (`before_ms`, `before_id`); the default is the newest.
    pub cursor: Cursor,
}

/// A validated monitoring request.
#[derive(Debug, Clone)]
pub struct MonitoringRequest {
    /// Range, filters and search of the events counted.
    pub scope: Scope,
    /// Anchor of the summary's rolling 30 minutes (`now_ms`), Unix milliseconds; the
    /// server clock when the caller sent none.
    pub now_ms: i64,
    /// Time zone of local buckets, labels, hours and weekdays (`time_zone`, default
    /// UTC).
    pub zone: Zone,
    /// Bucket size of the timelines (`granularity`: `hour` or `day`, else chosen from
    /// the range length).
    pub granularity: Granularity,
    /// The sections to compute.
    pub include: Include,
    /// The server clock when the request arrived, echoed as `generated_at_ms`.
    pub generated_at_ms: i64,
}

/// The body of `POST /monitoring/analytics`. `generated_at_ms` and `granularity` are
/// always present; every other section only when requested and non-empty (an empty
/// list section is absent, not `[]`). Costs are US dollars priced at read time.
#[derive(Debug, Serialize, Default)]
pub struct MonitoringResponse {
    /// The server clock when the request arrived, Unix milliseconds.
    pub generated_at_ms: i64,
    /// `hour` or `day`: the bucket size the timelines use.
    pub granularity: &'static str,
    /// Totals of the scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Totals of the previous, equally long window; absent when it would start at or
    /// before the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary_comparison: Option<Comparison>,
    /// One point per local bucket with events, ascending.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelinePoint>,
    /// Calls and tokens per local hour of day (only hours with events).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hourly_distribution: Vec<HourPoint>,
    /// Weekday × hour cells, sorted by weekday then hour.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub heatmap: Vec<HeatCell>,
    /// Up to 50 unusual timeline buckets, most unusual first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub anomaly_points: Vec<Anomaly>,
    /// Calls, tokens and cost per model, most calls first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model_share: Vec<ModelShare>,
    /// Full per-model statistics, most calls first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model_stats: Vec<ModelStat>,
    /// Usage per auth index.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channel_share: Vec<ChannelShare>,
    /// Source × auth index pairs with at least one failure, most failures first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failure_sources: Vec<FailureSource>,
    /// Usage per account.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub account_stats: Vec<GroupStat>,
    /// Usage per credential id, most expensive first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub credential_stats: Vec<GroupStat>,
    /// Per-bucket usage of each credential.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub credential_timeline: Vec<GroupTimelinePoint>,
    /// Per-bucket usage of each client API key.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_key_timeline: Vec<GroupTimelinePoint>,
    /// Usage per client API key.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_key_stats: Vec<GroupStat>,
    /// Filter options or selectors over the range and search only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_options: Option<FilterOptions>,
    /// Up to 500 approximate tasks, newest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub task_buckets: Vec<TaskBucket>,
    /// The newest failed calls of the scope, newest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recent_failures: Vec<RecentFailure>,
    /// The requested page of events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<EventsSection>,
    /// The first page of events of the drill-down range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drilldown_preview: Option<EventsSection>,
    /// Models without a price behind a `null` cost (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unpriced_models: Vec<String>,
}

/// Answers a monitoring request: reads only what the included sections need, one
/// store read after the other, and prices everything with one price book.
///
/// # Errors
///
/// [`QueryError`] when a store read fails.
pub async fn monitoring<S: AnalyticsStore>(
    store: &S,
    request: MonitoringRequest,
) -> Result<MonitoringResponse, QueryError> {
    let MonitoringRequest {
        scope,
        now_ms,
        zone,
        granularity,
        include,
        generated_at_ms,
    } = request;
    let book = store.price_book().await?;
    let mut response = MonitoringResponse {
        generated_at_ms,
        granularity: granularity.as_str(),
        ..MonitoringResponse::default()
    };
    let full = include.summary && !include.compact;
    let need_main = include.summary
        || include.timeline
        || include.anomaly_points
        || include.model_share
        || include.model_stats;
    let need_identity = include.channel_share
        || include.failure_sources
        || include.account_stats
        || include.credential_stats
        || include.api_key_stats;
    let need_percentiles = include.timeline
        || include.anomaly_points
        || (include.summary && (full || include.percentiles));

    // The row reads run one after the other: run at once, the three reads'
    // transient buffers (blob chunks, merge maps, page caches of three
    // connections) peak together, and memory is the scarcer resource on the small
    // hosts this runs on. The percentiles, the page and the heat sums are read
    // beside them: each keeps little (the values of a few bands, a page, a set of
    // sums per weekday hour), and the answer then takes two cores.
    let api_key_filter =
        !scope.filters.api_key_hashes.is_empty() || !scope.search_api_key_hash.is_empty();
    let need_group_timeline =
        include.credential_timeline || (include.api_key_timeline && api_key_filter);
    // Rows carry buckets only for the sections that show them (and the full
    // summary's active days): totals, costs, stats and the compact summary are the
    // same over one row per key, and a day of searched raw events then folds into a
    // few hundred groups instead of thousands.
    let bucketed = include.timeline
        || include.anomaly_points
        || need_group_timeline
        || (full && granularity == Granularity::Day);
    let timeline = bucketed.then(|| (zone.clone(), granularity));
    // Scopes read from identity rollups or raw events read them once when more
    // than one row set is needed: rows with identities and the timeline, from
    // which the others are summed (raw rows) or taken (identity rollup rows,
    // which the store keeps per identity anyway).
    let level = scope.level();
    let shared = match level {
        Level::Aggregate => false,
        Level::Identity => need_group_timeline && (need_main || need_identity),
        Level::Raw => {
            [need_main, need_identity, need_group_timeline]
                .iter()
                .filter(|needed| **needed)
                .count()
                > 1
        }
    };
    // The requested page and the heatmap's sums are read beside the rows: a page is
    // a few hundred events and the heat sums one small set per weekday hour, both
    // kept until the answer is built anyway, and the reads then take two cores
    // instead of one after the other.
    let heat_read = async {
        if include.heatmap {
            store
                .heat_parts(scope.clone(), zone.clone())
                .await
                .map(Some)
        } else {
            Ok(None)
        }
    };
    let page_read = async {
        match include.events_page {
            Some(page_request) => store
                .events_page(scope.clone(), page_request.cursor, page_request.limit)
                .await
                .map(Some),
            None => Ok(None),
        }
    };
    let row_reads = async {
        let timeline_rows = if shared || need_group_timeline {
            store
                .groups(GroupRequest {
                    scope: scope.clone(),
                    identity: true,
                    timeline: timeline.clone(),
                })
                .await?
        } else {
            Vec::new()
        };
        let main_rows = if !need_main {
            Vec::new()
        } else if shared && level == Level::Raw {
            fold_rows(&timeline_rows, false)
        } else if shared {
            timeline_rows
                .iter()
                .map(|row| GroupRow {
                    identity: None,
                    ..row.clone()
                })
                .collect()
        } else {
            store
                .groups(GroupRequest {
                    scope: scope.clone(),
                    identity: false,
                    timeline: timeline.clone(),
                })
                .await?
        };
        let identity_rows = if !need_identity {
            Vec::new()
        } else if shared {
            fold_rows(&timeline_rows, true)
        } else {
            store
                .groups(GroupRequest {
                    scope: scope.clone(),
                    identity: true,
                    timeline: None,
                })
                .await?
        };
        Ok::<_, QueryError>((timeline_rows, main_rows, identity_rows))
    };
    let sample_read = async {
        let by_bucket = include.timeline || include.anomaly_points;
        let summary_percentiles = include.summary && (full || include.percentiles);
        if need_percentiles {
            let mut ask = PercentileAsk::default();
            if summary_percentiles {
                ask.overall = summary::asked();
            }
            if by_bucket {
                ask.per_bucket = timeline::asked();
            }
            store
                .percentiles(
                    GroupRequest {
                        scope: scope.clone(),
                        identity: false,
                        timeline: if by_bucket { timeline.clone() } else { None },
                    },
                    ask,
                )
                .await
        } else {
            Ok(Percentiles::default())
        }
    };
    // The percentiles and the heat sums are read one after the other, beside the
    // rows: a computation then holds at most two of the store's read connections
    // (the page is read on a connection of its own).
    let side_reads = async {
        let samples = sample_read.await?;
        let heat = heat_read.await?;
        Ok::<_, QueryError>((samples, heat))
    };
    let (reads, side, page) = futures_util::future::join3(row_reads, side_reads, page_read).await;
    let (samples, heat) = side?;
    let (timeline_rows, main_rows, identity_rows) = reads?;
    let page = page?;

    let totals = Totals::of(&book, &main_rows);
    let mut unpriced = unpriced_models(&book, &main_rows);
    unpriced.extend(unpriced_models(&book, &identity_rows));
    unpriced.sort();
    unpriced.dedup();
    response.unpriced_models = unpriced;
    let points = if include.timeline || include.anomaly_points {
        timeline::timeline_points(&book, &main_rows, &samples, &zone, granularity)
    } else {
        Vec::new()
    };

    if include.summary {
        let (summary, tasks) = summary::summary(
            store,
            summary::SummaryInput {
                scope: &scope,
                zone: &zone,
                granularity,
                now_ms: if now_ms > 0 { now_ms } else { generated_at_ms },
                full,
                percentiles: include.percentiles,
                rows: &main_rows,
                totals: &totals,
                samples: &samples,
            },
        )
        .await?;
        response.summary = Some(summary);
        if include.task_buckets {
            response.task_buckets = tasks.unwrap_or_default();
        }
        if include.summary_comparison {
            response.summary_comparison = summary::comparison(store, &book, &scope).await?;
        }
    }
    if include.task_buckets && response.task_buckets.is_empty() {
        response.task_buckets = tasks::newest_task_buckets(store, &scope).await?;
    }
    if include.anomaly_points && points.len() >= 2 {
        response.anomaly_points = anomalies::anomalies(&points, granularity);
    }
    if include.timeline {
        response.timeline = points;
    }
    if let Some(heat) = heat {
        if include.hourly_distribution {
            response.hourly_distribution = heatmap::hourly_distribution_of_parts(&heat);
        }
        response.heatmap = heatmap::heatmap(&book, &heat);
    } else if include.hourly_distribution {
        let rows = store
            .groups(GroupRequest {
                scope: scope.clone(),
                identity: false,
                timeline: Some((zone.clone(), Granularity::Hour)),
            })
            .await?;
        response.hourly_distribution = heatmap::hourly_distribution(&rows, &zone);
    }
    if include.model_share || include.model_stats {
        let stats = models::model_stats(&book, &main_rows);
        if include.model_share {
            response.model_share = models::model_share(&stats);
        }
        if include.model_stats {
            response.model_stats = stats;
        }
    }
    if include.channel_share {
        response.channel_share = channels::channel_share(&book, &identity_rows);
    }
    if include.failure_sources {
        response.failure_sources = channels::failure_sources(&book, &identity_rows);
    }
    if include.account_stats {
        response.account_stats = groups::account_stats(&book, &identity_rows);
    }
    if include.credential_stats {
        response.credential_stats = groups::credential_stats(&book, &identity_rows);
    }
    if include.api_key_stats {
        response.api_key_stats = groups::api_key_stats(&book, &identity_rows);
    }
    if need_group_timeline {
        let rows = timeline_rows.as_slice();
        if include.credential_timeline {
            response.credential_timeline = group_timeline::group_timeline(
                &book,
                rows,
                &zone,
                granularity,
                |identity| Some(identity.credential_id().to_string()),
                false,
            );
        }
        if include.api_key_timeline && api_key_filter {
            response.api_key_timeline = group_timeline::group_timeline(
                &book,
                rows,
                &zone,
                granularity,
                |identity| {
                    let hash = identity.api_key_hash.trim();
                    (!hash.is_empty()).then(|| hash.to_string())
                },
                true,
            );
        }
    }
    if include.filter_selectors || include.filter_options {
        response.filter_options =
            Some(options::filter_options(store, &book, &scope, include.filter_selectors).await?);
    }
    if include.recent_failures > 0 {
        let mut failed_scope = scope.clone();
        failed_scope.filters.include_failed = true;
        failed_scope.filters.failed_only = true;
        let page = store
            .events_page(failed_scope, Cursor::default(), include.recent_failures)
            .await?;
        response.recent_failures = page
            .items
            .iter()
            .map(|event| recent_failure_item(event, true))
            .collect();
    }
    if let Some(page) = page {
        let total_count = if include.summary && need_main {
            totals.metrics.calls
        } else {
            let rows = store
                .groups(GroupRequest {
                    scope: scope.clone(),
                    identity: false,
                    timeline: None,
                })
                .await?;
            rows.iter()
                .fold(0_i64, |sum, row| sum.saturating_add(row.metrics.calls))
        };
        response.events = Some(events::events_section(page, total_count));
    }
    if let Some((from_ms, to_ms, limit)) = include.drilldown_preview
        && from_ms > 0
        && to_ms > from_ms
    {
        let page = store
            .events_page(scope.with_range(from_ms, to_ms), Cursor::default(), limit)
            .await?;
        let count = page.items.len() as i64;
        response.drilldown_preview = Some(events::events_section(page, count));
    }
    Ok(response)
}

/// Rows with identities and timeline buckets summed into the rows a store answers
/// without them: with `identity`, per identity across buckets (`bucket_ms` 0);
/// without, per bucket across identities. Equal keys are summed in the rows'
/// order and each key keeps the place of its first row, as a store folds events.
fn fold_rows(rows: &[GroupRow], identity: bool) -> Vec<GroupRow> {
    // Texts by value (borrowed from the rows), identities by pointer (they come
    // from the store's cache).
    type Key<'r> = (i64, usize, &'r str, &'r str, &'r str, u8, bool);
    let mut index: HashMap<Key<'_>, usize> = HashMap::with_capacity(rows.len());
    let mut out: Vec<GroupRow> = Vec::with_capacity(rows.len());
    for row in rows {
        let (bucket_ms, who) = match (&row.identity, identity) {
            (Some(found), true) => (0, Arc::as_ptr(found) as usize),
            (None, true) => (0, 0),
            (_, false) => (row.bucket_ms, 0),
        };
        let key = (
            bucket_ms,
            who,
            &*row.model,
            &*row.billing_model,
            &*row.service_tier,
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
                let mut folded = row.clone();
                folded.bucket_ms = bucket_ms;
                if !identity {
                    folded.identity = None;
                }
                out.push(folded);
            }
        }
    }
    out
}
