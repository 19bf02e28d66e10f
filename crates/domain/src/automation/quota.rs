//! Quota snapshots (automation spec §2): observations of a credential's quota windows,
//! from the panel (provider quota APIs), response headers and inspection, kept as a
//! history per account key with the logical windows they describe.
//!
//! An observation is identified by a content hash, so posting it again inserts nothing.
//! Newer observations move the logical windows: a reported window is `active`; a
//! `complete` observation that omits an active window of its inventory scope makes it
//! `pending_absent`, and a second such observation `inactive`; `delta` removals make it
//! `inactive` at once. Older evidence is kept but does not move anything.

use std::future::Future;

use sha2::{Digest, Sha256};

use crate::ports::StoreError;

/// One reported window: a `windows[]` item of `POST /quota-snapshots`, or one built
/// from response headers or an inspection result. Times are Unix milliseconds (UTC);
/// `None` and empty text mean "not reported".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowInput {
    /// The provider's name for the window (`five-hour`, `weekly`, `monthly`,
    /// `included-free-rolling-24h`, …), canonicalised for Codex.
    pub provider_window_id: String,
    /// Other names the provider uses for the same window (at most 32).
    pub provider_window_aliases: Vec<String>,
    /// Coarse kind shown by the panel (`five_hour`, `weekly`, `monthly`, `rolling_24h`, …);
    /// empty when unknown.
    pub window_kind: String,
    /// `fixed`, `calendar`, `rolling`, `non_window` or `unknown`.
    pub window_mode: String,
    /// What the window's quota covers: `all`, `family`, `models`, `product` or `feature`.
    pub model_scope_kind: String,
    /// Name of the family, product or feature the scope covers; empty for `all`.
    pub model_scope_key: String,
    /// Models a `models` scope covers (at most 200).
    pub model_ids: Vec<String>,
    /// How reliable the cycle boundaries are: `exact`, `derived`, `estimated` or
    /// `unknown`.
    pub boundary_accuracy: String,
    /// Start of the current cycle.
    pub cycle_start_ms: Option<i64>,
    /// End of the current cycle, i.e. when the quota resets.
    pub cycle_end_ms: Option<i64>,
    /// Length of the window in seconds (18000 for five hours, 604800 for a week).
    pub duration_seconds: Option<i64>,
    /// Share of the quota used, 0–100.
    pub used_percent: Option<f64>,
    /// Share of the quota left, 0–100.
    pub remaining_percent: Option<f64>,
    /// Amount used, in [`quota_unit`](Self::quota_unit).
    pub used_value: Option<f64>,
    /// Amount allowed per cycle, in [`quota_unit`](Self::quota_unit).
    pub limit_value: Option<f64>,
    /// Unit of the used and limit values (`tokens`, `credits`, …); empty when none.
    pub quota_unit: String,
    /// Number of quota resets the account may still redeem (Codex reset credits).
    pub reset_credits_available: Option<f64>,
    /// JSON array of `{id, expires_at_ms}`, or empty.
    pub reset_credits_json: String,
    /// The account's plan as reported with the window (`plus`, `team`, …); empty when
    /// unknown.
    pub plan_type: String,
    /// `concurrent_subwindow` when this window runs inside another (Codex's five-hour
    /// window inside the weekly one); empty otherwise.
    pub relationship_kind: String,
    /// The window this one runs inside, when `relationship_kind` is set; else empty.
    pub container_provider_window_id: String,
}

impl WindowInput {
    /// The scope's identity: kind, key and the sorted, lower-cased, distinct model ids.
    pub fn scope_fingerprint(&self) -> String {
        let mut models: Vec<String> = self
            .model_ids
            .iter()
            .map(|model| model.trim().to_lowercase())
            .filter(|model| !model.is_empty())
            .collect();
        models.sort();
        models.dedup();
        let text = format!(
            "{}\0{}\0{}",
            self.model_scope_kind,
            self.model_scope_key,
            models.join("\0")
        );
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

/// A window an observation says is gone (a `removed_windows[]` item of a `delta`
/// observation); it becomes `inactive` at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowRemoval {
    /// The provider's name for the removed window.
    pub provider_window_id: String,
    /// Its scope, as [`WindowInput::scope_fingerprint`] computes it.
    pub scope_fingerprint: String,
}

/// One observation of an account's quota: every window one source reported at one
/// moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// The account-history key of the credential (see `analytics::accounts::target`).
    pub account_key: String,
    /// Normalised provider (`codex`, `claude`, `antigravity`, `kimi`, `xai`).
    pub provider: String,
    /// `api_query`, `response_header`, `response_body` or `inspection`.
    pub source: String,
    /// The source's own id for the observation (request id, trace id,
    /// `run:<run>:result:<result>`); empty when none, at most 256 bytes.
    pub source_observation_id: String,
    /// Which set of windows the observation speaks for (`codex:rate-limits`,
    /// `xai:included-free`, `<provider>:quota-windows`); a `complete` observation only
    /// retires windows of its own scope.
    pub inventory_scope_key: String,
    /// `complete`, `partial` or `delta`.
    pub inventory_mode: String,
    /// When the source saw these figures, Unix milliseconds (UTC).
    pub observed_at_ms: i64,
    /// The windows reported.
    pub windows: Vec<WindowInput>,
    /// The windows reported gone (only in `delta` observations).
    pub removals: Vec<WindowRemoval>,
}

impl Observation {
    /// The content hash that makes writes idempotent, as lowercase hex.
    pub fn hash(&self) -> String {
        hex::encode(self.digest())
    }

    /// The content hash that makes writes idempotent: SHA-256 over the account,
    /// provider, source, ids, scope, mode, time and the sorted window contents.
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for part in [
            self.account_key.as_str(),
            &self.provider,
            &self.source,
            &self.source_observation_id,
            &self.inventory_scope_key,
            &self.inventory_mode,
            &self.observed_at_ms.to_string(),
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        let mut windows: Vec<String> = self
            .windows
            .iter()
            .map(|window| format!("{window:?}"))
            .chain(self.removals.iter().map(|removal| format!("{removal:?}")))
            .collect();
        windows.sort();
        for window in windows {
            hasher.update(window.as_bytes());
            hasher.update([0]);
        }
        hasher.finalize().into()
    }

    /// How much an observation is trusted when two are equally new: (inventory mode,
    /// source), compared in order; higher wins. `complete` beats `delta` beats
    /// `partial`; `inspection` beats `api_query` beats `response_body` beats
    /// `response_header`.
    pub fn authority(&self) -> (u8, u8) {
        let mode = match self.inventory_mode.as_str() {
            "complete" => 3,
            "delta" => 2,
            _ => 1,
        };
        let source = match self.source.as_str() {
            "inspection" => 4,
            "api_query" => 3,
            "response_body" => 2,
            _ => 1,
        };
        (mode, source)
    }
}

/// A logical window with its newest reported values, as `POST /quota-snapshots/query`
/// lists it. Times are Unix milliseconds (UTC).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredWindow {
    /// Store id of the logical window (one per account, provider, window id and scope).
    pub logical_window_id: i64,
    /// Normalised provider.
    pub provider: String,
    /// The newest reported figures.
    pub input: WindowInput,
    /// Source of the newest report (`api_query`, `response_header`, …).
    pub source: String,
    /// The source's id for the newest report; empty when none.
    pub source_observation_id: String,
    /// When the newest report was observed.
    pub observed_at_ms: i64,
    /// `active`, `pending_absent` or `inactive`.
    pub availability: String,
    /// Activation count: 1 when first seen, one more each time an inactive window is
    /// reported again.
    pub generation: i64,
    /// When the window was first reported.
    pub first_seen_at_ms: i64,
    /// When the window was last reported.
    pub last_seen_at_ms: i64,
    /// When a complete observation first omitted it; `None` while reported.
    pub missing_since_ms: Option<i64>,
    /// When it became inactive; `None` while active or pending absent.
    pub deactivated_at_ms: Option<i64>,
    /// The newest earlier report whose cycle ended before this one's (for "previous
    /// window" figures): (cycle start, cycle end, used percent).
    pub previous_cycle: Option<(Option<i64>, i64, Option<f64>)>,
}

/// Quota snapshot storage.
pub trait QuotaStore: Clone + Send + Sync + 'static {
    /// Stores observations in one transaction; returns the windows inserted per
    /// observation (0 for one already stored).
    fn write_observations(
        &self,
        observations: Vec<Observation>,
        now_ms: i64,
    ) -> impl Future<Output = Result<Vec<u64>, StoreError>> + Send;

    /// The logical windows of an account and provider with their newest report.
    fn account_windows(
        &self,
        account_key: &str,
        provider: &str,
    ) -> impl Future<Output = Result<Vec<StoredWindow>, StoreError>> + Send;
}

/// A list of strings as stored: a JSON array, or empty text for none.
pub fn encode_list(items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        serde_json::to_string(items).unwrap_or_default()
    }
}

/// Reads [`encode_list`]'s text; anything unreadable is an empty list.
pub fn decode_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// Codex's own window names: `primary` is the five-hour window, `secondary` the weekly
/// (or monthly) one.
pub fn canonical_codex_window(id: &str, window_kind: &str) -> String {
    match id.trim().to_ascii_lowercase().as_str() {
        "primary" => "five-hour".to_string(),
        "secondary" if window_kind.eq_ignore_ascii_case("monthly") => "monthly".to_string(),
        "secondary" => "weekly".to_string(),
        other => other.to_string(),
    }
}

/// Whether a window's figures are out of date at `now_ms`.
pub fn is_stale(window: &StoredWindow, now_ms: i64) -> bool {
    let input = &window.input;
    let expired = match input.window_mode.as_str() {
        "fixed" | "calendar" => input.cycle_end_ms.is_some_and(|end| end <= now_ms),
        "rolling" => input
            .duration_seconds
            .is_some_and(|duration| window.observed_at_ms + duration * 1000 < now_ms),
        _ => false,
    };
    expired || matches!(window.availability.as_str(), "pending_absent" | "inactive")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_ignore_model_order_and_case() {
        let one = WindowInput {
            model_scope_kind: "models".into(),
            model_ids: vec!["GPT-5".into(), "gpt-5-mini".into()],
            ..WindowInput::default()
        };
        let two = WindowInput {
            model_ids: vec!["gpt-5-mini".into(), "gpt-5".into(), "gpt-5".into()],
            ..one.clone()
        };
        assert_eq!(one.scope_fingerprint(), two.scope_fingerprint());
        assert_eq!(one.scope_fingerprint().len(), 64);
    }

    #[test]
    fn lists_round_trip() {
        let items = vec!["gpt-5".to_string(), "say \"hi\"".to_string()];
        assert_eq!(decode_list(&encode_list(&items)), items);
        assert_eq!(encode_list(&[]), "");
        assert!(decode_list("").is_empty());
    }

    #[test]
    fn codex_windows_are_canonical() {
        assert_eq!(canonical_codex_window("primary", ""), "five-hour");
        assert_eq!(canonical_codex_window("secondary", "monthly"), "monthly");
        assert_eq!(canonical_codex_window("Secondary", ""), "weekly");
        assert_eq!(canonical_codex_window("code-review", ""), "code-review");
    }

    #[test]
    fn the_hash_ignores_window_order() {
        let window = |id: &str| WindowInput {
            provider_window_id: id.into(),
            ..WindowInput::default()
        };
        let one = Observation {
            account_key: "k".into(),
            windows: vec![window("a"), window("b")],
            ..Observation::default()
        };
        let two = Observation {
            windows: vec![window("b"), window("a")],
            ..one.clone()
        };
        assert_eq!(one.hash(), two.hash());
        assert_ne!(one.hash(), Observation::default().hash());
    }
}
