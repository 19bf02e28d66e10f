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
use super::query::{AnalyticsStore, Cursor, GroupRequest, Scope};
use super::time::{Granularity, Zone};
use super::totals::{Totals, unpriced_models};

/// Which sections to compute.
#[derive(Debug, Clone, Default)]
pub struct Include {
    pub summary: bool,
    pub compact: bool,
    pub percentiles: bool,
    pub summary_comparison: bool,
    pub timeline: bool,
    pub anomaly_points: bool,
    pub hourly_distribution: bool,
    pub heatmap: bool,
    pub model_share: bool,
    pub model_stats: bool,
    pub channel_share: bool,
    pub failure_sources: bool,
    pub account_stats: bool,
    pub credential_stats: bool,
    pub credential_timeline: bool,
    pub api_key_timeline: bool,
    pub api_key_stats: bool,
    pub filter_options: bool,
    pub filter_selectors: bool,
    pub task_buckets: bool,
    pub recent_failures: usize,
    pub events_page: Option<PageRequest>,
    pub drilldown_preview: Option<(i64, i64, usize)>,
}

#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: usize,
    pub cursor: Cursor,
}

/// A validated monitoring request.
#[derive(Debug, Clone)]
pub struct MonitoringRequest {
    pub scope: Scope,
    pub now_ms: i64,
    pub zone: Zone,
    pub granularity: Granularity,
    pub include: Include,
    pub generated_at_ms: i64,
}

#[derive(Debug, Serialize, Default)]
pub struct MonitoringResponse {
    pub generated_at_ms: i64,
    pub granularity: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary_comparison: Option<Comparison>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelinePoint>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hourly_distribution: Vec<HourPoint>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub heatmap: Vec<HeatCell>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub anomaly_points: Vec<Anomaly>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model_share: Vec<ModelShare>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model_stats: Vec<ModelStat>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channel_share: Vec<ChannelShare>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failure_sources: Vec<FailureSource>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub account_stats: Vec<GroupStat>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub credential_stats: Vec<GroupStat>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub credential_timeline: Vec<GroupTimelinePoint>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_key_timeline: Vec<GroupTimelinePoint>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_key_stats: Vec<GroupStat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_options: Option<FilterOptions>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub task_buckets: Vec<TaskBucket>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recent_failures: Vec<RecentFailure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<EventsSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drilldown_preview: Option<EventsSection>,
    /// Models without a price behind a `null` cost (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unpriced_models: Vec<String>,
}

/// Answers a monitoring request.
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
    let timeline = Some((zone.clone(), granularity));
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

    // One after the other: run at once, the three reads' transient buffers (blob
    // chunks, merge maps, page caches of three connections) peak together, and
    // memory is the scarcer resource on the small hosts this runs on.
    let main_rows = if need_main {
        store
            .groups(GroupRequest {
                scope: scope.clone(),
                identity: false,
                timeline: timeline.clone(),
            })
            .await?
    } else {
        Vec::new()
    };
    let identity_rows = if need_identity {
        store
            .groups(GroupRequest {
                scope: scope.clone(),
                identity: true,
                timeline: None,
            })
            .await?
    } else {
        Vec::new()
    };
    let samples = if need_percentiles {
        store
            .samples(GroupRequest {
                scope: scope.clone(),
                identity: false,
                timeline: if include.timeline || include.anomaly_points {
                    timeline.clone()
                } else {
                    None
                },
            })
            .await?
    } else {
        Vec::new()
    };

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
    if include.hourly_distribution || include.heatmap {
        let rows = if include.heatmap {
            store.heat_groups(scope.clone(), zone.clone()).await?
        } else {
            store
                .groups(GroupRequest {
                    scope: scope.clone(),
                    identity: false,
                    timeline: Some((zone.clone(), Granularity::Hour)),
                })
                .await?
        };
        if include.hourly_distribution {
            response.hourly_distribution = heatmap::hourly_distribution(&rows, &zone);
        }
        if include.heatmap {
            response.heatmap = heatmap::heatmap(&book, &rows, &zone);
        }
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
    let api_key_filter =
        !scope.filters.api_key_hashes.is_empty() || !scope.search_api_key_hash.is_empty();
    if include.credential_timeline || (include.api_key_timeline && api_key_filter) {
        let rows = store
            .groups(GroupRequest {
                scope: scope.clone(),
                identity: true,
                timeline: timeline.clone(),
            })
            .await?;
        if include.credential_timeline {
            response.credential_timeline = group_timeline::group_timeline(
                &book,
                &rows,
                &zone,
                granularity,
                |identity| Some(identity.credential_id().to_string()),
                false,
            );
        }
        if include.api_key_timeline && api_key_filter {
            response.api_key_timeline = group_timeline::group_timeline(
                &book,
                &rows,
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
    if let Some(page_request) = include.events_page {
        let page = store
            .events_page(scope.clone(), page_request.cursor, page_request.limit)
            .await?;
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
