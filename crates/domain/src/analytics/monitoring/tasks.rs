//! `task_buckets`: approximate tasks, the calls of one credential in one
//! timestamp.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use crate::analytics::Metrics;
use crate::analytics::identity::{IdentityFields, TaskKeys};
use crate::analytics::query::RawEvent;
use crate::analytics::totals::TokenSums;

#[derive(Debug, Serialize)]
pub struct TaskBucket {
    pub bucket_key: String,
    pub total: i64,
    pub success: i64,
    pub failure: i64,
    pub first_ms: i64,
    pub last_ms: i64,
    #[serde(flatten)]
    pub identity: IdentityFields<TaskKeys>,
    pub models: Vec<String>,
    pub endpoints: Vec<String>,
    #[serde(flatten)]
    pub token_sums: TokenSums,
    pub total_tokens: i64,
    pub average_latency_ms: Option<f64>,
    pub max_latency_ms: Option<i64>,
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
        let key = format!(
            "{}|{}|{}",
            event.timestamp, identity.source_hash, identity.auth_index
        );
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
    out.truncate(500);
    out
}
