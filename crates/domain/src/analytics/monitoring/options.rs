//! `filter_options`: the selector payload (`filter_selectors`) or the full option
//! rows, both over the base scope.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use super::channels::{ChannelShare, channel_share};
use super::groups::{GroupAcc, GroupStat, account_id, account_stats, api_key_id, api_key_stats};
use super::models::{ModelStat, model_stats};
use crate::analytics::cost::PriceBook;
use crate::analytics::query::{AnalyticsStore, GroupRequest, GroupRow, Identity, Scope, Text};
use crate::ports::StoreError;

/// `filter_options` of the monitoring answer: what the filter bar can offer, over the
/// request's range and search with every other filter cleared. With
/// `filter_selectors` it holds the cheap selector lists (`models`, `api_key_hashes`,
/// `providers`, `auth_files`, `accounts`, identity-only `account_stats` and the two
/// counts); with `filter_options` the full option rows with counts and the header
/// values. String lists are distinct, non-empty and sorted; empty lists are left out.
#[derive(Debug, Serialize, Default)]
pub struct FilterOptions {
    /// Analytics models (selectors only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Lowercase client API-key hashes (selectors only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_hashes: Option<Vec<String>>,
    /// Accounts: with counts in the full options; identity only (zero counts, success
    /// rate 1, `null` cost) in the selectors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub account_stats: Vec<GroupStat>,
    /// Client API keys with counts (full options only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_key_stats: Vec<GroupStat>,
    /// Channels (auth indexes) with counts (full options only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channel_share: Vec<ChannelShare>,
    /// Models with counts (full options only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model_stats: Vec<ModelStat>,
    /// Providers (auth-file provider, else event provider).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<String>,
    /// CPA auth file names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub auth_files: Vec<String>,
    /// Account snapshots (selectors only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounts: Option<Vec<String>>,
    /// Credential project ids (full options only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub project_ids: Vec<String>,
    /// CPA executor types (full options only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request_types: Vec<String>,
    /// Upstream error kinds from response headers (full options only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub header_error_kinds: Vec<String>,
    /// Upstream error codes from response headers (full options only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub header_error_codes: Vec<String>,
    /// Account plans from response headers (full options only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub header_quota_plans: Vec<String>,
    /// Upstream trace ids from response headers (full options only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub header_trace_ids: Vec<String>,
    /// Number of accounts in `account_stats` (selectors only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_count: Option<i64>,
    /// Number of distinct client keys, keyless credentials counted one each
    /// (selectors only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_count: Option<i64>,
}

fn sorted_distinct<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    values
        .filter(|value| !value.is_empty())
        .map(str::to_string)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn selectors(pairs: &[(Arc<Identity>, Text)]) -> FilterOptions {
    let identities = || pairs.iter().map(|(identity, _)| &**identity);
    let models = sorted_distinct(pairs.iter().map(|(_, model)| &**model));
    let api_key_hashes: Vec<String> = identities()
        .map(|identity| identity.api_key_hash.to_lowercase())
        .filter(|hash| !hash.is_empty())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut accounts: BTreeMap<String, GroupAcc> = BTreeMap::new();
    let mut api_key_ids: BTreeSet<String> = BTreeSet::new();
    for (identity, _) in pairs {
        // Identity only: no counts and no time, so ties pick the smallest.
        accounts
            .entry(account_id(identity))
            .or_default()
            .note(identity, 0);
        api_key_ids.insert(api_key_id(identity));
    }
    let account_stats: Vec<GroupStat> = accounts
        .into_iter()
        .filter(|(id, group)| id != "-" || group.has_source_hashes())
        .map(|(id, group)| {
            let mut stat = group.stat(id);
            stat.counts.success_rate = 1.0;
            stat.cost = None;
            stat.models = Vec::new();
            stat
        })
        .collect();
    FilterOptions {
        models: Some(models),
        api_key_hashes: Some(api_key_hashes),
        providers: sorted_distinct(identities().map(Identity::effective_provider)),
        auth_files: sorted_distinct(identities().map(|identity| &*identity.auth_file)),
        accounts: Some(sorted_distinct(
            identities().map(|identity| &*identity.account),
        )),
        account_count: Some(account_stats.len() as i64),
        api_key_count: Some(api_key_ids.len() as i64),
        account_stats,
        ..FilterOptions::default()
    }
}

fn options(book: &PriceBook, rows: &[GroupRow]) -> FilterOptions {
    let identities = || rows.iter().filter_map(|row| row.identity.as_deref());
    FilterOptions {
        account_stats: account_stats(book, rows),
        api_key_stats: api_key_stats(book, rows),
        channel_share: channel_share(book, rows),
        model_stats: model_stats(book, rows),
        providers: sorted_distinct(identities().map(Identity::effective_provider)),
        auth_files: sorted_distinct(identities().map(|identity| &*identity.auth_file)),
        project_ids: sorted_distinct(identities().map(|identity| &*identity.auth_project)),
        request_types: sorted_distinct(identities().map(|identity| &*identity.executor_type)),
        ..FilterOptions::default()
    }
}

/// `filter_options` over the base scope (time and search only): the cheap
/// selector payload when `selectors_only`, else full option rows with counts and
/// the distinct header values.
pub(super) async fn filter_options<S: AnalyticsStore>(
    store: &S,
    book: &PriceBook,
    scope: &Scope,
    selectors_only: bool,
) -> Result<FilterOptions, StoreError> {
    if selectors_only {
        let pairs = store.identity_models(scope.base()).await?;
        return Ok(selectors(&pairs));
    }
    let rows = store
        .groups(GroupRequest {
            scope: scope.base(),
            identity: true,
            timeline: None,
        })
        .await?;
    let mut options = options(book, &rows);
    drop(rows);
    let headers = store.header_values(scope.base()).await?;
    options.header_error_kinds = headers.error_kinds;
    options.header_error_codes = headers.error_codes;
    options.header_quota_plans = headers.quota_plans;
    options.header_trace_ids = headers.trace_ids;
    Ok(options)
}
