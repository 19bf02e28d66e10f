//! What a price sync writes, decided from what the sources answered and what is
//! stored (the fetching itself is the API crate's job).
//!
//! Rules, in order:
//! 1. Selection: every unique automatic match (no requested models), or for each
//!    requested id a match, else candidates, else unmatched ([`super::matching`]).
//! 2. Failure preservation: while a source is failing, a stored price from that
//!    source is not replaced by a lower-priority source; such models are listed as
//!    preserved (limited to the requested ids when some were given).
//! 3. Pinned stored prices (manual ones by default) are never replaced; they are
//!    listed as pinned.
//! 4. Entries that fail validation are skipped and counted.

use std::collections::{BTreeMap, BTreeSet};

use super::matching::{Candidate, Catalog, requested, source_priority};
use super::{ModelPrice, validate};

/// How one source did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceOutcome {
    /// The source's name.
    pub source: String,
    /// Priced entries it offered.
    pub models: usize,
    /// Entries without a usable price.
    pub skipped: usize,
    /// Why the source failed, if it did.
    pub error: Option<String>,
}

/// What a sync writes and reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncPlan {
    /// Prices to upsert (tiers replaced), keyed by the model id as requested.
    pub upsert: Vec<(String, ModelPrice)>,
    /// The matches that will be saved.
    pub matched: BTreeMap<String, ModelPrice>,
    /// Requested models without a match, with possible prices to confirm.
    pub candidates: Vec<(String, Vec<Candidate>)>,
    /// Requested models no source offers anything for.
    pub unmatched: Vec<String>,
    /// Stored prices kept because their source failed this time.
    pub preserved: Vec<String>,
    /// Stored pinned prices a match would have replaced.
    pub pinned: Vec<String>,
    /// Matches refused by validation.
    pub invalid: usize,
}

/// Plans a sync. `now_ms` becomes the saved prices' update and sync time.
pub fn plan(
    catalog: &Catalog,
    models: &[String],
    outcomes: &[SourceOutcome],
    stored: &BTreeMap<String, ModelPrice>,
    now_ms: i64,
) -> SyncPlan {
    let selection = if requested(models).is_empty() {
        catalog.select_all()
    } else {
        catalog.select(models)
    };
    let mut prices = selection.prices;
    let failed: BTreeSet<&str> = outcomes
        .iter()
        .filter(|outcome| outcome.error.is_some())
        .map(|outcome| outcome.source.as_str())
        .collect();
    let scope: Option<BTreeSet<String>> = {
        let requested = requested(models);
        (!requested.is_empty()).then(|| requested.into_iter().collect())
    };
    let mut preserved = Vec::new();
    if !failed.is_empty() {
        for (model, existing) in stored {
            if scope.as_ref().is_some_and(|scope| !scope.contains(model))
                || !failed.contains(existing.source.as_str())
            {
                continue;
            }
            if let Some(candidate) = prices.get(model)
                && source_priority(&existing.source) >= source_priority(&candidate.source)
            {
                continue;
            }
            prices.remove(model);
            preserved.push(model.clone());
        }
    }
    let mut plan = SyncPlan {
        candidates: selection.candidates,
        unmatched: selection.unmatched,
        preserved,
        ..SyncPlan::default()
    };
    for (model, price) in prices {
        if stored.get(&model).is_some_and(|existing| existing.pinned) {
            plan.pinned.push(model);
            continue;
        }
        let price = ModelPrice {
            pinned: false,
            updated_at_ms: now_ms,
            synced_at_ms: Some(now_ms),
            ..price
        };
        match validate(&model, price) {
            Ok((key, price)) => {
                plan.matched.insert(key.clone(), price.clone());
                plan.upsert.push((key, price));
            }
            Err(_) => plan.invalid += 1,
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prices::sources::parse;

    fn catalog(sources: &[(&str, &str)]) -> Catalog {
        let mut entries = Vec::new();
        let mut canonical = crate::prices::sources::Canonical::default();
        for (name, body) in sources {
            let parsed = parse(name, body.as_bytes(), 1).expect("source");
            canonical.merge(&parsed.canonical);
            entries.extend(parsed.entries);
        }
        Catalog::new(entries, canonical)
    }

    fn stored(source: &str, pinned: bool) -> ModelPrice {
        ModelPrice {
            source: source.into(),
            pinned,
            ..ModelPrice::default()
        }
    }

    const LITELLM: &str = r#"{"gpt-5":{"input_cost_per_token":2e-6,"output_cost_per_token":2e-5},
        "mine":{"input_cost_per_token":1e-6},"bad":{"input_cost_per_token":-1e-6}}"#;

    #[test]
    fn pinned_prices_are_kept_and_invalid_entries_skipped() {
        let catalog = catalog(&[("litellm", LITELLM)]);
        let stored = BTreeMap::from([("mine".to_string(), stored("manual", true))]);
        let outcomes = [SourceOutcome {
            source: "litellm".into(),
            models: 3,
            ..SourceOutcome::default()
        }];
        let plan = plan(&catalog, &[], &outcomes, &stored, 99);
        assert_eq!(plan.pinned, vec!["mine".to_string()]);
        assert_eq!(plan.invalid, 1);
        let keys: Vec<_> = plan.upsert.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, vec!["gpt-5"]);
        assert_eq!(plan.upsert[0].1.synced_at_ms, Some(99));
        assert!(!plan.upsert[0].1.pinned);
    }

    #[test]
    fn a_failed_preferred_source_keeps_its_stored_prices() {
        let catalog = catalog(&[("litellm", LITELLM)]);
        let stored = BTreeMap::from([
            ("gpt-5".to_string(), stored("models.dev", false)),
            ("other".to_string(), stored("models.dev", false)),
            ("mine".to_string(), stored("litellm", false)),
        ]);
        let outcomes = [
            SourceOutcome {
                source: "models.dev".into(),
                error: Some("timeout".into()),
                ..SourceOutcome::default()
            },
            SourceOutcome {
                source: "litellm".into(),
                models: 3,
                ..SourceOutcome::default()
            },
        ];
        let plan = plan(&catalog, &[], &outcomes, &stored, 1);
        assert_eq!(
            plan.preserved,
            vec!["gpt-5".to_string(), "other".to_string()]
        );
        assert!(plan.upsert.iter().all(|(key, _)| key != "gpt-5"));
        assert!(plan.upsert.iter().any(|(key, _)| key == "mine"));
        // With requested models, only those are reported.
        let plan = super::plan(&catalog, &["gpt-5".to_string()], &outcomes, &stored, 1);
        assert_eq!(plan.preserved, vec!["gpt-5".to_string()]);
        assert!(plan.upsert.is_empty());
    }
}
