//! The ingest pipeline around the store: every batch the collector hands over is labelled
//! with CPA's auth files before it is stored ([`super::enrich`]), and the failures stored
//! for the first time are handed to account automation afterwards.
//!
//! [`IngestSink`] wraps the store's [`EventSink`], so the collector stays unaware of
//! automation. Imports and adoption do not go through the collector, so they are never
//! enriched and never trigger automation.

use cpamp_domain::StoreError;
use cpamp_domain::ports::{BatchOutcome, EventSink, IngestBatch};

use super::Automation;

/// The collector's sink: enrichment, the store, then automation.
pub struct IngestSink<S> {
    store: S,
    automation: Automation,
}

impl<S: Clone> Clone for IngestSink<S> {
    fn clone(&self) -> IngestSink<S> {
        IngestSink {
            store: self.store.clone(),
            automation: self.automation.clone(),
        }
    }
}

impl<S: EventSink> IngestSink<S> {
    /// A sink that labels events, stores them in `store` and passes new failures to `automation`.
    pub fn new(store: S, automation: Automation) -> IngestSink<S> {
        IngestSink { store, automation }
    }
}

impl<S: EventSink> EventSink for IngestSink<S> {
    async fn store_batch(&self, mut batch: IngestBatch) -> Result<BatchOutcome, StoreError> {
        self.automation.enricher.enrich(&mut batch);
        // Only failures and Codex quota headers matter to automation; keep them to hand
        // over once stored.
        let failures: Vec<(usize, cpamp_domain::UsageEvent)> = batch
            .events
            .iter()
            .enumerate()
            .filter(|(_, event)| event.failed || super::quota_evidence::carries_evidence(event))
            .map(|(index, event)| (index, event.clone()))
            .collect();
        let outcome = self.store.store_batch(batch).await?;
        if !failures.is_empty() {
            let fresh: Vec<cpamp_domain::UsageEvent> = failures
                .into_iter()
                .filter(|(index, _)| outcome.fresh.binary_search(index).is_ok())
                .map(|(_, event)| event)
                .collect();
            self.automation.collected(fresh);
        }
        Ok(outcome)
    }
}
