//! `task_buckets`: approximate tasks, the calls of one credential in one
//! timestamp.
//!
//! Only the newest [`TASK_LIMIT`] tasks are ever answered (and counted by the
//! summary), so [`newest_task_buckets`] walks the scope's events newest first and
//! stops once no older event can belong to one of them: a task's key starts with
//! its events' timestamp text, and equal texts are equal instants (the decoder
//! derives both from one parsed time), so every event of a task has the same
//! `timestamp_ms`. The cost depends on the tasks answered, not on the range.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;

use crate::analytics::Metrics;
use crate::analytics::identity::{IdentityFields, TaskKeys};
use crate::analytics::query::{AnalyticsStore, Cursor, RawEvent, Scope};
use crate::analytics::totals::TokenSums;
use crate::ports::StoreError;

/// At most this many tasks are answered, the newest first.
const TASK_LIMIT: usize = 500;

/// Events read per page of the newest-first walk.
const PAGE: usize = 1000;

/// One `task_buckets[]` row: an approximate task, i.e. the calls (attempts) one
/// credential made with the same request timestamp, such as an agent's retries and
/// fallbacks. Rows are newest first, at most 500.
#[derive(Debug, Serialize)]
pub struct TaskBucket {
    /// `<timestamp text>|<source hash>|<auth index>`, the task's grouping key.
    pub bucket_key: String,
    /// Calls in the task.
    pub total: i64,
    /// Calls that succeeded.
    pub success: i64,
    /// Calls that failed.
    pub failure: i64,
    /// Time of the task's first call, Unix milliseconds.
    pub first_ms: i64,
    /// Time of the task's last call, Unix milliseconds.
    pub last_ms: i64,
    /// Source, source hash and auth index of the credential.
    #[serde(flatten)]
    pub identity: IdentityFields<TaskKeys>,
    /// Distinct non-empty analytics models of the calls, sorted.
    pub models: Vec<String>,
    /// Distinct non-empty CPA endpoints of the calls, sorted.
    pub endpoints: Vec<String>,
    /// Input, output and cache token sums.
    #[serde(flatten)]
    pub token_sums: TokenSums,
    /// Total tokens as reported.
    pub total_tokens: i64,
    /// Mean latency in milliseconds over calls that reported one; `null` when none.
    pub average_latency_ms: Option<f64>,
    /// Longest latency of the task's calls, ms; `null` when none reported one.
    pub max_latency_ms: Option<i64>,
}

/// The task buckets of every event of `scope` (the newest [`TASK_LIMIT`]), read
/// newest first only as far back as they reach.
pub(super) async fn newest_task_buckets<S: AnalyticsStore>(
    store: &S,
    scope: &Scope,
) -> Result<Vec<TaskBucket>, StoreError> {
    let mut events: Vec<RawEvent> = Vec::new();
    // The instant of each distinct task key seen so far.
    let mut keys: HashMap<String, i64> = HashMap::new();
    let mut cursor = Cursor::default();
    loop {
        let page = store.events_page(scope.clone(), cursor, PAGE).await?;
        for event in &page.items {
            let at = keys.entry(task_key(event)).or_insert(event.timestamp_ms);
            *at = (*at).max(event.timestamp_ms);
        }
        events.extend(page.items);
        let Some(last) = events.last() else { break };
        if !page.has_more {
            break;
        }
        if keys.len() >= TASK_LIMIT {
            // The newest TASK_LIMIT tasks are those at or after `boundary`; an
            // unread event is no newer than `last`, so once `last` is older than
            // the boundary no unread event belongs to them.
            let mut instants: Vec<i64> = keys.values().copied().collect();
            let (_, boundary, _) = instants.select_nth_unstable_by(TASK_LIMIT - 1, |a, b| b.cmp(a));
            if last.timestamp_ms < *boundary {
                break;
            }
        }
        if last.timestamp_ms <= 0 {
            // A cursor cannot point before the epoch: read the rest in one go.
            let rest = scope.with_range(scope.from_ms, last.timestamp_ms.saturating_add(1));
            let seen: HashSet<i64> = events.iter().map(|event| event.id).collect();
            let more = store.raw_events(rest, usize::MAX).await?;
            events.extend(more.into_iter().filter(|event| !seen.contains(&event.id)));
            events.sort_by_key(|event| std::cmp::Reverse((event.timestamp_ms, event.id)));
            break;
        }
        cursor = Cursor {
            before_ms: last.timestamp_ms,
            before_id: last.id,
        };
    }
    Ok(task_buckets(&events))
}

fn task_key(event: &RawEvent) -> String {
    let identity = &event.identity;
    format!(
        "{}|{}|{}",
        event.timestamp, identity.source_hash, identity.auth_index
    )
}

pub(super) fn task_buckets(events: &[RawEvent]) -> Vec<TaskBucket> {
    struct Task {
        key: String,
        first_ms: i64,
        last_ms: i64,
        identity: IdentityFields<TaskKeys>,
        metrics: Metrics,
        max_latency_ms: Option<i64>,
        models: BTreeSet<String>,
        endpoints: BTreeSet<String>,
    }
    let mut tasks: HashMap<String, Task> = HashMap::new();
    for event in events {
        let identity = &event.identity;
        let key = task_key(event);
        let task = tasks.entry(key.clone()).or_insert_with(|| Task {
            key,
            first_ms: event.timestamp_ms,
            last_ms: event.timestamp_ms,
            identity: IdentityFields::of(identity),
            metrics: Metrics::default(),
            max_latency_ms: None,
            models: BTreeSet::new(),
            endpoints: BTreeSet::new(),
        });
        task.metrics.add(&event.metrics());
        task.first_ms = task.first_ms.min(event.timestamp_ms);
        task.last_ms = task.last_ms.max(event.timestamp_ms);
        if let Some(latency) = event.latency_ms.filter(|latency| *latency > 0) {
            task.max_latency_ms = Some(task.max_latency_ms.unwrap_or(0).max(latency));
        }
        if !event.analytics_model.is_empty() {
            task.models.insert(event.analytics_model.to_string());
        }
        if !event.endpoint.is_empty() {
            task.endpoints.insert(event.endpoint.to_string());
        }
    }
    let mut out: Vec<TaskBucket> = tasks
        .into_values()
        .map(|task| TaskBucket {
            bucket_key: task.key,
            total: task.metrics.calls,
            success: task.metrics.success(),
            failure: task.metrics.failures,
            first_ms: task.first_ms,
            last_ms: task.last_ms,
            identity: task.identity,
            models: task.models.into_iter().collect(),
            endpoints: task.endpoints.into_iter().collect(),
            token_sums: TokenSums::of(&task.metrics),
            total_tokens: task.metrics.total,
            average_latency_ms: task.metrics.average_latency(),
            max_latency_ms: task.max_latency_ms,
        })
        .collect();
    out.sort_by(|a, b| {
        b.last_ms
            .cmp(&a.last_ms)
            .then_with(|| a.bucket_key.cmp(&b.bucket_key))
    });
    out.truncate(TASK_LIMIT);
    out
}
