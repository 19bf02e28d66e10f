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

#[derive(Debug, Serialize, Clone)]
pub struct GroupTimelinePoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_hash: Option<String>,
    #[serde(flatten)]
    pub identity: IdentityFields<GroupKeys>,
    pub bucket_ms: i64,
    pub bucket_label: String,
    pub calls: i64,
    pub tokens: i64,
    pub success: i64,
    pub failure: i64,
    #[serde(flatten)]
    pub token_sums: TokenSums,
    pub reasoning_tokens: i64,
    pub total_tokens: i64,
    pub cost: Option<f64>,
    pub average_latency_ms: Option<f64>,
    pub success_rate: f64,
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
