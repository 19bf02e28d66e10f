//! Per-credential monitoring views: the latest header snapshot per credential
//! (`GET /v0/management/monitoring/header-snapshots`, `snapshots`), all-time
//! account history (`POST .../account-history`, `history`) and usage inside
//! provider quota windows (`POST .../account-window-usage`, `windows`), all keyed
//! by the account key of `target`.
//!
//! Totals come from the identity rollups, which are written in the ingest
//! transaction: they are never behind the event table, so the Go server's
//! "pending" catch-up state cannot occur and `catch_up` has nothing to do.

mod history;
mod snapshots;
mod target;
mod windows;

pub use history::{
    AccountHistory, Checkpoint, HistoryItem, HistoryRequestItem, HistoryTarget,
    MAX_HISTORY_TARGETS, account_history,
};
pub use snapshots::{
    HeaderSnapshot, HeaderSnapshots, SNAPSHOT_DAYS, SNAPSHOT_LIMIT, credential_key,
    header_snapshots, snapshot_key,
};
pub use target::{AccountTarget, normalize_provider};
pub use windows::{
    MAX_WINDOWS, ModelScope, Period, ScopeKind, UsageWindow, WindowItem, WindowUsage,
    account_window_usage,
};

use std::collections::BTreeSet;

use super::cost::PriceBook;
use super::query::GroupRow;
use super::totals::{Totals, row_cost, unpriced_models};

/// Totals of one account (or window): the sums, whether any row matched, and the
/// block of its earliest row.
#[derive(Default)]
struct AccountTotals {
    totals: Totals,
    matched_rows: bool,
    first_block: Option<i64>,
    /// Models whose missing price makes the cost unknown.
    unpriced: BTreeSet<String>,
}

impl AccountTotals {
    fn add(&mut self, book: &PriceBook, row: &GroupRow) {
        let cost = row_cost(book, row);
        if cost.is_none() {
            self.unpriced
                .extend(unpriced_models(book, std::slice::from_ref(row)));
        }
        self.totals.add(row, cost);
        self.matched_rows = true;
        self.first_block = Some(
            self.first_block
                .map_or(row.bucket_ms, |block| block.min(row.bucket_ms)),
        );
    }

    fn calls(&self) -> i64 {
        self.totals.metrics.calls
    }

    fn failures(&self) -> i64 {
        self.totals.metrics.failures
    }

    fn tokens(&self) -> i64 {
        self.totals.metrics.total
    }

    /// `None` when a matching row's model has no price (unknown, never 0).
    fn cost(&self) -> Option<f64> {
        self.totals.cost
    }

    fn last_seen(&self) -> Option<i64> {
        self.matched_rows.then_some(self.totals.last_seen_ms)
    }
}

fn success_rate(calls: i64, failures: i64) -> Option<f64> {
    (calls > 0).then(|| (calls - failures) as f64 / calls as f64)
}
