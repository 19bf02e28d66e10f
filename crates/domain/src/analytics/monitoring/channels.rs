//! `channel_share` (per auth index) and `failure_sources` (per source hash and
//! auth index, groups with failures only).

use std::collections::BTreeMap;

use serde::Serialize;

use super::groups::{GroupAcc, grouped};
use crate::analytics::cost::PriceBook;
use crate::analytics::identity::{ChannelKeys, FailureSourceKeys, IdentityFields};
use crate::analytics::query::{GroupRow, Text};

#[derive(Debug, Serialize, Clone)]
pub struct ChannelShare {
    /// The auth index is `-` when empty.
    #[serde(flatten)]
    pub identity: IdentityFields<ChannelKeys>,
    pub calls: i64,
    pub success: i64,
    pub failure: i64,
    pub tokens: i64,
    pub cost: Option<f64>,
    pub average_latency_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct FailureSource {
    #[serde(flatten)]
    pub identity: IdentityFields<FailureSourceKeys>,
    pub calls: i64,
    pub failure: i64,
    pub last_seen_ms: i64,
    pub average_latency_ms: Option<f64>,
}

/// The group's account, label and provider plus the source of its most recent row.
fn group_identity<L>(group: &GroupAcc) -> IdentityFields<L> {
    IdentityFields {
        source: group.newest_identity().source.clone(),
        ..group.identity()
    }
}

pub(super) fn channel_share(book: &PriceBook, rows: &[GroupRow]) -> Vec<ChannelShare> {
    let groups = grouped(
        book,
        rows,
        |identity| {
            if identity.auth_index.is_empty() {
                Text::from("-")
            } else {
                identity.auth_index.clone()
            }
        },
        false,
    );
    let mut out: Vec<ChannelShare> = groups
        .into_iter()
        .map(|(auth_index, group)| {
            let m = &group.totals.metrics;
            ChannelShare {
                identity: IdentityFields {
                    auth_index,
                    ..group_identity(&group)
                },
                calls: m.calls,
                success: m.success(),
                failure: m.failures,
                tokens: m.total,
                cost: group.totals.cost,
                average_latency_ms: m.average_latency(),
            }
        })
        .collect();
    // Go returns map order here; a stable order is calls desc, then auth index.
    out.sort_by(|a, b| {
        b.calls
            .cmp(&a.calls)
            .then_with(|| a.identity.auth_index.cmp(&b.identity.auth_index))
    });
    out
}

pub(super) fn failure_sources(book: &PriceBook, rows: &[GroupRow]) -> Vec<FailureSource> {
    let groups: BTreeMap<(Text, Text), GroupAcc> = grouped(
        book,
        rows,
        |identity| (identity.source_hash.clone(), identity.auth_index.clone()),
        false,
    );
    let mut out: Vec<FailureSource> = groups
        .into_iter()
        .filter(|(_, group)| group.totals.metrics.failures > 0)
        .map(|((source_hash, auth_index), group)| FailureSource {
            identity: IdentityFields {
                source_hash,
                auth_index,
                ..group_identity(&group)
            },
            calls: group.totals.metrics.calls,
            failure: group.totals.metrics.failures,
            last_seen_ms: group.totals.last_seen_ms,
            average_latency_ms: group.totals.metrics.average_latency(),
        })
        .collect();
    out.sort_by(|a, b| {
        b.failure
            .cmp(&a.failure)
            .then_with(|| b.last_seen_ms.cmp(&a.last_seen_ms))
            .then_with(|| a.identity.source_hash.cmp(&b.identity.source_hash))
            .then_with(|| a.identity.auth_index.cmp(&b.identity.auth_index))
    });
    out
}
