//! `credential_timeline` and `api_key_timeline`: per group and local bucket.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use super::groups::{Newest, first_non_blank};
use crate::analytics::cost::PriceBook;
use crate::analytics::identity::{GroupKeys, IdentityFields};
use crate::analytics::query::{GroupRow, Identity};
use crate::analytics::time::{Granularity, Zone};
use crate::analytics::totals::{TokenSums, Totals, row_cost};

/// One `credential_timeline[]` or `api_key_timeline[]` point: one credential or
/// client key in one local bucket. Points come in bucket order, and within a bucket
/// in the order the groups first appeared.
#[derive(Debug, Serialize, Clone)]
pub struct GroupTimelinePoint {
    /// The credential id (credential timeline only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// What to call the credential: the first non-blank of label, account, auth file,
    /// source, auth index, id (credential timeline only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The client key's hash (API-key timeline only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_hash: Option<String>,
    /// Auth file, auth index, source, account, label, provider and project of the
    /// credential's newest call in the bucket (empty on API-key points).
    #[serde(flatten)]
    pub identity: IdentityFields<GroupKeys>,
    /// Start of the local bucket, Unix milliseconds.
    pub bucket_ms: i64,
    /// The bucket in the request's zone: `HH:MM` for hours, `MM/DD` for days.
    pub bucket_label: String,
    /// Calls in the bucket.
    pub calls: i64,
    /// Total tokens (same as `total_tokens`).
    pub tokens: i64,
    /// Calls that succeeded.
    pub success: i64,
    /// Calls that failed.
    pub failure: i64,
    /// Input, output and cache token sums.
    #[serde(flatten)]
    pub token_sums: TokenSums,
    /// Reasoning tokens (part of output).
    pub reasoning_tokens: i64,
    /// Total tokens as reported.
    pub total_tokens: i64,
    /// Cost in US dollars; `null` when a model has no price.
    pub cost: Option<f64>,
    /// Mean latency in milliseconds over calls that reported one; `null` when none.
    pub average_latency_ms: Option<f64>,
    /// `success / calls`, 0–1.
    pub success_rate: f64,
    /// `failure / calls`, 0–1.
    pub failure_rate: f64,
}

/// One group in one bucket: its totals and its most recent identity.
type Cell = (Totals, Newest<Arc<Identity>>);

pub(super) fn group_timeline(
    book: &PriceBook,
    rows: &[GroupRow],
    zone: &Zone,
    granularity: Granularity,
    key: impl Fn(&Identity) -> Option<String>,
    api_keys: bool,
) -> Vec<GroupTimelinePoint> {
    let mut cells: BTreeMap<(i64, String), Cell> = BTreeMap::new();
    let mut first_seen: HashMap<String, i64> = HashMap::new();
    for row in rows {
        let Some(identity) = &row.identity else {
            continue;
        };
        let Some(group) = key(identity) else { continue };
        let seen = first_seen.entry(group.clone()).or_insert(i64::MAX);
        *seen = (*seen).min(row.bucket_ms);
        let entry = cells.entry((row.bucket_ms, group)).or_default();
        entry.0.add(row, row_cost(book, row));
        entry.1.offer(row.last_seen_ms, identity);
    }
    let mut out: Vec<(i64, i64, String, GroupTimelinePoint)> = cells
        .into_iter()
        .map(|((bucket_ms, group), (acc, newest))| {
            let identity = newest.get().cloned().unwrap_or_default();
            let m = acc.metrics;
            let label = first_non_blank(&[
                &identity.auth_label,
                &identity.account,
                &identity.auth_file,
                &identity.source,
                &identity.auth_index,
                &group,
            ])
            .unwrap_or("")
            .to_string();
            let point = GroupTimelinePoint {
                id: (!api_keys).then(|| group.clone()),
                label: (!api_keys).then_some(label),
                api_key_hash: api_keys.then(|| group.clone()),
                // API-key timelines carry no credential details.
                identity: if api_keys {
                    IdentityFields::default()
                } else {
                    IdentityFields::of(&identity)
                },
                bucket_ms,
                bucket_label: zone.label(granularity, bucket_ms),
                calls: m.calls,
                tokens: m.total,
                success: m.success(),
                failure: m.failures,
                token_sums: TokenSums::of(&m),
                reasoning_tokens: m.reasoning,
                total_tokens: m.total,
                cost: acc.cost,
                average_latency_ms: m.average_latency(),
                success_rate: m.success_rate(),
                failure_rate: m.failure_rate(),
            };
            (
                bucket_ms,
                first_seen.get(&group).copied().unwrap_or(0),
                group,
                point,
            )
        })
        .collect();
    out.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| a.1.cmp(&b.1))
            .then_with(|| a.2.cmp(&b.2))
    });
    out.into_iter().map(|(_, _, _, point)| point).collect()
}
