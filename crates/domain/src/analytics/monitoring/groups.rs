//! `account_stats`, `credential_stats` and `api_key_stats`: rows grouped by who
//! made the calls, each with its nested per-model stats.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use super::models::{ModelStat, nested_models};
use crate::analytics::cost::PriceBook;
use crate::analytics::identity::{ContextKeys, GroupKeys, IdentityFields};
use crate::analytics::query::{GroupRow, Identity, Text};
use crate::analytics::totals::{CallCounts, TokenSums, Totals, cost_key, row_cost};

/// An account, credential or API-key row (the optional keys differ per kind and
/// are left out when empty).
#[derive(Debug, Serialize, Clone, Default)]
pub struct GroupStat {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_hash: Option<String>,
    #[serde(flatten)]
    pub identity: IdentityFields<GroupKeys>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_indices: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_hashes: Option<Vec<String>>,
    #[serde(flatten)]
    pub counts: CallCounts,
    #[serde(flatten)]
    pub token_sums: TokenSums,
    pub total_tokens: i64,
    pub cost: Option<f64>,
    pub average_latency_ms: Option<f64>,
    pub last_seen_ms: i64,
    pub models: Vec<ModelStat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contexts: Option<Vec<ApiKeyContext>>,
}

/// One credential an API key was used through.
#[derive(Debug, Serialize, Clone)]
pub struct ApiKeyContext {
    pub id: String,
    #[serde(flatten)]
    pub identity: IdentityFields<ContextKeys>,
    #[serde(flatten)]
    pub counts: CallCounts,
    pub failure_rate: f64,
    pub total_tokens: i64,
    pub cost: Option<f64>,
    pub average_latency_ms: Option<f64>,
    pub last_seen_ms: i64,
}

/// Accumulates one account/credential/API-key/channel group.
#[derive(Default)]
pub(super) struct GroupAcc {
    pub(super) totals: Totals,
    /// The identity of the group's first row.
    pub(super) first: Option<Arc<Identity>>,
    account: Text,
    label: Text,
    provider: Text,
    auth_indices: BTreeSet<Text>,
    sources: BTreeSet<Text>,
    source_hashes: BTreeSet<Text>,
    models: BTreeMap<Text, Totals>,
    contexts: BTreeMap<String, (Totals, Arc<Identity>)>,
}

impl GroupAcc {
    pub(super) fn add(
        &mut self,
        row: &GroupRow,
        identity: &Arc<Identity>,
        cost: Option<f64>,
        contexts: bool,
    ) {
        self.totals.add(row, cost);
        self.note(identity);
        self.models
            .entry(row.model.clone())
            .or_default()
            .add(row, cost);
        if contexts {
            let part = |value: &str| {
                if value.trim().is_empty() {
                    "-".to_string()
                } else {
                    value.trim().to_string()
                }
            };
            let key = [
                part(identity.effective_provider()),
                part(&identity.account),
                part(&identity.auth_label),
                part(&identity.auth_index),
                part(&identity.source_hash),
                part(&identity.source),
            ]
            .join(":");
            let entry = self
                .contexts
                .entry(key)
                .or_insert_with(|| (Totals::default(), identity.clone()));
            entry.0.add(row, cost);
        }
    }

    /// Takes note of who a row belongs to, without its counts: the first
    /// non-empty account, label and provider, and every auth index, source and
    /// source hash.
    pub(super) fn note(&mut self, identity: &Arc<Identity>) {
        if self.first.is_none() {
            self.first = Some(identity.clone());
        }
        fill(&mut self.account, &identity.account);
        fill(&mut self.label, &identity.auth_label);
        if self.provider.is_empty() {
            let provider = if identity.auth_provider.is_empty() {
                &identity.provider
            } else {
                &identity.auth_provider
            };
            fill(&mut self.provider, provider);
        }
        for (set, value) in [
            (&mut self.auth_indices, &identity.auth_index),
            (&mut self.sources, &identity.source),
            (&mut self.source_hashes, &identity.source_hash),
        ] {
            if !value.is_empty() {
                set.insert(value.clone());
            }
        }
    }

    pub(super) fn has_source_hashes(&self) -> bool {
        !self.source_hashes.is_empty()
    }

    /// The group's account, label and provider; the caller adds the rest.
    pub(super) fn identity<L>(&self) -> IdentityFields<L> {
        IdentityFields {
            account_snapshot: self.account.clone(),
            auth_label_snapshot: self.label.clone(),
            auth_provider_snapshot: self.provider.clone(),
            ..IdentityFields::default()
        }
    }

    pub(super) fn stat(&self, id: String) -> GroupStat {
        let m = &self.totals.metrics;
        let list = |set: &BTreeSet<Text>| Some(set.iter().map(|value| value.to_string()).collect());
        GroupStat {
            id,
            identity: self.identity(),
            auth_indices: list(&self.auth_indices),
            sources: list(&self.sources),
            source_hashes: list(&self.source_hashes),
            counts: CallCounts::of(m),
            token_sums: TokenSums::of(m),
            total_tokens: m.total,
            cost: self.totals.cost,
            average_latency_ms: m.average_latency(),
            last_seen_ms: self.totals.last_seen_ms,
            models: nested_models(&self.models),
            ..GroupStat::default()
        }
    }
}

fn fill(slot: &mut Text, value: &Text) {
    if slot.is_empty() && !value.is_empty() {
        *slot = value.clone();
    }
}

/// The first value that is not blank.
pub(super) fn first_non_blank<'a>(values: &[&'a str]) -> Option<&'a str> {
    values
        .iter()
        .copied()
        .find(|value| !value.trim().is_empty())
}

/// The account a row counts under: the first non-blank of account, label,
/// source and auth index, else `-`.
pub(super) fn account_id(identity: &Identity) -> String {
    first_non_blank(&[
        &identity.account,
        &identity.auth_label,
        &identity.source,
        &identity.auth_index,
    ])
    .unwrap_or("-")
    .to_string()
}

/// The client key a row counts under: its lowercase hash, else a stand-in made
/// of the credential it came through.
pub(super) fn api_key_id(identity: &Identity) -> String {
    if !identity.api_key_hash.trim().is_empty() {
        return identity.api_key_hash.to_lowercase();
    }
    let part = |value: &str| {
        if value.trim().is_empty() {
            "-".to_string()
        } else {
            value.to_string()
        }
    };
    format!(
        "unknown-client-api-key:{}:{}:{}:{}",
        part(&identity.source_hash),
        part(&identity.auth_index),
        part(&identity.source),
        part(&identity.provider)
    )
}

/// Identity rows grouped by `key`, in key order.
pub(super) fn grouped<K: Ord>(
    book: &PriceBook,
    rows: &[GroupRow],
    key: impl Fn(&Identity) -> K,
    contexts: bool,
) -> BTreeMap<K, GroupAcc> {
    let mut out: BTreeMap<K, GroupAcc> = BTreeMap::new();
    for row in rows {
        let Some(identity) = &row.identity else {
            continue;
        };
        out.entry(key(identity))
            .or_default()
            .add(row, identity, row_cost(book, row), contexts);
    }
    out
}

/// Newest first, then busiest, then costliest.
fn by_recency(a: &GroupStat, b: &GroupStat) -> std::cmp::Ordering {
    b.last_seen_ms
        .cmp(&a.last_seen_ms)
        .then_with(|| b.counts.calls.cmp(&a.counts.calls))
        .then_with(|| cost_key(b.cost).total_cmp(&cost_key(a.cost)))
        .then_with(|| a.id.cmp(&b.id))
}

pub(super) fn account_stats(book: &PriceBook, rows: &[GroupRow]) -> Vec<GroupStat> {
    let mut out: Vec<GroupStat> = grouped(book, rows, account_id, false)
        .into_iter()
        .map(|(id, group)| group.stat(id))
        .collect();
    out.sort_by(by_recency);
    out
}

pub(super) fn credential_stats(book: &PriceBook, rows: &[GroupRow]) -> Vec<GroupStat> {
    let mut out: Vec<GroupStat> = grouped(
        book,
        rows,
        |identity| identity.credential_id().to_string(),
        false,
    )
    .into_iter()
    .map(|(id, group)| {
        let first = group.first.clone().unwrap_or_default();
        let mut stat = group.stat(id);
        stat.identity = IdentityFields {
            auth_file_snapshot: first.auth_file.clone(),
            auth_index: first.auth_index.clone(),
            source: first.source.clone(),
            source_hash: first.source_hash.clone(),
            auth_project_id_snapshot: first.auth_project.clone(),
            ..group.identity()
        };
        stat.auth_indices = None;
        stat.sources = None;
        stat.source_hashes = None;
        stat
    })
    .collect();
    out.sort_by(|a, b| {
        cost_key(b.cost)
            .total_cmp(&cost_key(a.cost))
            .then_with(|| b.counts.calls.cmp(&a.counts.calls))
            .then_with(|| b.last_seen_ms.cmp(&a.last_seen_ms))
            .then_with(|| a.id.cmp(&b.id))
    });
    out
}

pub(super) fn api_key_stats(book: &PriceBook, rows: &[GroupRow]) -> Vec<GroupStat> {
    let mut out: Vec<GroupStat> = grouped(book, rows, api_key_id, true)
        .into_iter()
        .map(|(id, group)| {
            let first = group.first.clone().unwrap_or_default();
            let mut contexts: Vec<ApiKeyContext> = group
                .contexts
                .iter()
                .map(|(key, (totals, identity))| ApiKeyContext {
                    id: key.clone(),
                    identity: IdentityFields::of(identity),
                    counts: CallCounts::of(&totals.metrics),
                    failure_rate: totals.metrics.failure_rate(),
                    total_tokens: totals.metrics.total,
                    cost: totals.cost,
                    average_latency_ms: totals.metrics.average_latency(),
                    last_seen_ms: totals.last_seen_ms,
                })
                .collect();
            contexts.sort_by(|a, b| {
                cost_key(b.cost)
                    .total_cmp(&cost_key(a.cost))
                    .then_with(|| b.counts.calls.cmp(&a.counts.calls))
                    .then_with(|| b.last_seen_ms.cmp(&a.last_seen_ms))
                    .then_with(|| a.id.cmp(&b.id))
            });
            let mut stat = group.stat(id);
            stat.api_key_hash = Some(first.api_key_hash.to_string());
            stat.contexts = Some(contexts);
            stat
        })
        .collect();
    out.sort_by(by_recency);
    out
}
