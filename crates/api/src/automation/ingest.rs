//! The ingest pipeline around the store: every batch the collector hands over is labelled
//! with CPA's auth files before it is stored ([`super::enrich`]).
//!
//! [`IngestSink`] wraps the store's [`EventSink`], so the collector stays unaware of
//! automation, and imports (which do not go through the collector) are never enriched.

use std::sync::Arc;

use cpamp_domain::StoreError;
use cpamp_domain::ports::{BatchOutcome, EventSink, IngestBatch};

use super::enrich::Enricher;

/// The collector's sink: enrichment, then the store.
pub struct IngestSink<S> {
    store: S,
    enricher: Arc<Enricher>,
}

impl<S: Clone> Clone for IngestSink<S> {
    fn clone(&self) -> IngestSink<S> {
        IngestSink {
            store: self.store.clone(),
            enricher: self.enricher.clone(),
        }
    }
}

impl<S: EventSink> IngestSink<S> {
    pub fn new(store: S, enricher: Arc<Enricher>) -> IngestSink<S> {
        IngestSink { store, enricher }
    }
}

impl<S: EventSink> EventSink for IngestSink<S> {
    async fn store_batch(&self, mut batch: IngestBatch) -> Result<BatchOutcome, StoreError> {
        self.enricher.enrich(&mut batch);
        self.store.store_batch(batch).await
    }
}
