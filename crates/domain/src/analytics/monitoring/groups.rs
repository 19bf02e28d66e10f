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
    /// The group's key: for accounts the first non-blank of account, label, source
    /// and auth index (else `-`); for credentials the credential id; for API keys the
    /// lowercase key hash, else `unknown-client-api-key:<source hash>:<auth index>:
    /// <source>:<provider>`.
    pub id: String,
    /// The client key's hash (API-key rows only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_hash: Option<String>,
    /// Account, label and provider of the group's newest call (credential rows also
    /// carry its auth file, auth index, source, source hash and project).
    #[serde(flatten)]
    pub identity: IdentityFields<GroupKeys>,
    /// Every auth index the group's calls went through, sorted (not on credential
    /// rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_indices: Option<Vec<String>>,
    /// Every masked source the group's calls went through, sorted (not on credential
    /// rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
    /// Every source hash the group's calls went through, sorted (not on credential
    /// rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_hashes: Option<Vec<String>>,
    /// Calls, successes, failures and success rate.
    #[serde(flatten)]
    pub counts: CallCounts,
    /// Input, output and cache token sums.
    #[serde(flatten)]
    pub token_sums: TokenSums,
    /// Total tokens as reported.
    pub total_tokens: i64,
    /// Cost in US dollars; `null` when a model used has no price.
    pub cost: Option<f64>,
    /// Mean latency in milliseconds over calls that reported one; `null` when none.
    pub average_latency_ms: Option<f64>,
    /// Time of the group's newest call, Unix milliseconds.
    pub last_seen_ms: i64,
    /// The group's models, most expensive first.
    pub models: Vec<ModelStat>,
    /// The credentials the key was used through, most expensive first (API-key rows
    /// only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contexts: Option<Vec<ApiKeyContext>>,
}

/// One credential an API key was used through.
#[derive(Debug, Serialize, Clone)]
pub struct ApiKeyContext {
    /// `provider:account:label:auth_index:source_hash:source`, each part trimmed and
    /// `-` when blank.
    pub id: String,
    /// Account, label, provider, auth index, source and source hash of the
    /// credential's newest call.
    #[serde(flatten)]
    pub identity: IdentityFields<ContextKeys>,
    /// Calls, successes, failures and success rate of the key through it.
    #[serde(flatten)]
    pub counts: CallCounts,
    /// Failed calls over all calls, 0–1.
    pub failure_rate: f64,
    /// Total tokens of the key's calls through this credential.
    pub total_tokens: i64,
    /// Cost in US dollars; `null` when a model used has no price.
    pub cost: Option<f64>,
    /// Mean latency in milliseconds over calls that reported one; `null` when none.
    pub average_latency_ms: Option<f64>,
    /// Time of the newest call, Unix milliseconds.
    pub last_seen_ms: i64,
}

/// The value seen last; among values seen at the same instant, the smallest.
/// Rows reach a group in no particular order (storage merges them in hash maps),
/// so this is what makes a group's identity fields the same on every request.
#[derive(Debug, Clone)]
pub(super) struct Newest<T> {
    seen_ms: i64,
    value: Option<T>,
}

impl<T> Default for Newest<T> {
    fn default() -> Newest<T> {
        Newest {
            seen_ms: i64::MIN,
            value: None,
        }
    }
}

impl<T: Ord + Clone> Newest<T> {
    pub(super) fn offer(&mut self, seen_ms: i64, value: &T) {
        let better = match &self.value {
            None => true,
            Some(current) => seen_ms > self.seen_ms || (seen_ms == self.seen_ms && value < current),
        };
        if better {
            self.seen_ms = seen_ms;
            self.value = Some(value.clone());
        }
    }

    pub(super) fn get(&self) -> Option<&T> {
        self.value.as_ref()
    }
}

/// Accumulates one account/credential/API-key/channel group.
#[derive(Default)]
pub(super) struct GroupAcc {
    pub(super) totals: Totals,
    /// The identity of the group's most recent row.
    pub(super) newest: Newest<Arc<Identity>>,
    account: Newest<Text>,
    label: Newest<Text>,
    provider: Newest<Text>,
    auth_indices: BTreeSet<Text>,
    sources: BTreeSet<Text>,
    source_hashes: BTreeSet<Text>,
    models: BTreeMap<Text, Totals>,
    contexts: BTreeMap<String, (Totals, Newest<Arc<Identity>>)>,
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
        self.note(identity, row.last_seen_ms);
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
            let entry = self.contexts.entry(key).or_default();
            entry.0.add(row, cost);
            entry.1.offer(row.last_seen_ms, identity);
        }
    }

    /// Takes note of who a row last seen at `seen_ms` belongs to, without its
    /// counts: the most recent identity and non-empty account, label and
    /// provider (see [`Newest`]), and every auth index, source and source hash.
    pub(super) fn note(&mut self, identity: &Arc<Identity>, seen_ms: i64) {
        self.newest.offer(seen_ms, identity);
        let provider = if identity.auth_provider.is_empty() {
            &identity.provider
        } else {
            &identity.auth_provider
        };
        for (slot, value) in [
            (&mut self.account, &identity.account),
            (&mut self.label, &identity.auth_label),
            (&mut self.provider, provider),
        ] {
            if !value.is_empty() {
                slot.offer(seen_ms, value);
            }
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
        let text = |slot: &Newest<Text>| slot.get().cloned().unwrap_or_default();
        IdentityFields {
            account_snapshot: text(&self.account),
            auth_label_snapshot: text(&self.label),
            auth_provider_snapshot: text(&self.provider),
            ..IdentityFields::default()
        }
    }

    /// The identity of the group's most recent row (empty for an empty group).
    pub(super) fn newest_identity(&self) -> Arc<Identity> {
        self.newest.get().cloned().unwrap_or_default()
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
        let newest = group.newest_identity();
        let mut stat = group.stat(id);
        stat.identity = IdentityFields {
            auth_file_snapshot: newest.auth_file.clone(),
            auth_index: newest.auth_index.clone(),
            source: newest.source.clone(),
            source_hash: newest.source_hash.clone(),
            auth_project_id_snapshot: newest.auth_project.clone(),
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
            let newest = group.newest_identity();
            let mut contexts: Vec<ApiKeyContext> = group
                .contexts
                .iter()
                .map(|(key, (totals, identity))| ApiKeyContext {
                    id: key.clone(),
                    identity: IdentityFields::of(&identity.get().cloned().unwrap_or_default()),
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
            stat.api_key_hash = Some(newest.api_key_hash.to_string());
            stat.contexts = Some(contexts);
            stat
        })
        .collect();
    out.sort_by(by_recency);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_prefers_the_later_value_then_the_smaller_whatever_the_order() {
        let offers = [(5, "b"), (9, "z"), (9, "c"), (1, "a")];
        let mut orders = vec![offers.to_vec()];
        orders.push(offers.iter().rev().copied().collect());
        orders.push(vec![offers[2], offers[0], offers[3], offers[1]]);
        for order in orders {
            let mut newest = Newest::default();
            for (seen, value) in order {
                newest.offer(seen, &Text::from(value));
            }
            assert_eq!(newest.get().map(|text| &**text), Some("c"));
        }
        assert_eq!(Newest::<Text>::default().get(), None);
    }
}
