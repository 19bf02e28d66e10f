//! `channel_share` (per auth index) and `failure_sources` (per source hash and
//! auth index, groups with failures only).

use std::collections::BTreeMap;

use serde::Serialize;

use super::groups::{GroupAcc, grouped};
use crate::analytics::cost::PriceBook;
use crate::analytics::identity::{ChannelKeys, FailureSourceKeys, IdentityFields};
use crate::analytics::query::{GroupRow, Text};

/// One `channel_share[]` row: the calls through one channel (CPA auth index), most
/// calls first.
#[derive(Debug, Serialize, Clone)]
pub struct ChannelShare {
    /// The auth index is `-` when empty.
    #[serde(flatten)]
    pub identity: IdentityFields<ChannelKeys>,
    /// Calls through the channel.
    pub calls: i64,
    /// Calls that succeeded.
    pub success: i64,
    /// Calls that failed.
    pub failure: i64,
    /// Total tokens through the channel.
    pub tokens: i64,
    /// Cost in US dollars; `null` when a model has no price.
    pub cost: Option<f64>,
    /// Mean latency in milliseconds over calls that reported one; `null` when none.
    pub average_latency_ms: Option<f64>,
}

/// One `failure_sources[]` row: a credential source × auth index pair with at least
/// one failure, most failures first, then most recent.
#[derive(Debug, Serialize)]
pub struct FailureSource {
    /// Source, source hash and auth index (stored values, `""` when empty) and the
    /// account snapshots of the pair's newest call.
    #[serde(flatten)]
    pub identity: IdentityFields<FailureSourceKeys>,
    /// Calls of the pair.
    pub calls: i64,
    /// Calls that failed.
    pub failure: i64,
    /// Time of the pair's newest call, Unix milliseconds.
    pub last_seen_ms: i64,
    /// Mean latency in milliseconds over calls that reported one; `null` when none.
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
