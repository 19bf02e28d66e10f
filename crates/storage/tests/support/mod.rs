//! Shared helpers for storage tests.

#![allow(dead_code)]

pub mod synth;

use cpamp_domain::event::UsageEvent;
use cpamp_domain::ports::{BatchOrigin, BatchOutcome, EventSink, IngestBatch};
use cpamp_storage::SqliteStore;

/// Stores `events` as one batch collected from CPA.
pub async fn store_collected(store: &SqliteStore, events: &[UsageEvent]) -> BatchOutcome {
    store
        .store_batch(IngestBatch {
            origin: BatchOrigin::Collector("http://cpa".into()),
            events: events.to_vec(),
            dead_letters: Vec::new(),
        })
        .await
        .expect("store batch")
}

/// Stores `events` as collected batches of `size`, in order (`newest_first`: the last
/// batch first, so rollup blocks are merged out of order); returns how many events
/// were inserted and skipped in all.
pub async fn store_in_batches(
    store: &SqliteStore,
    events: &[UsageEvent],
    size: usize,
    newest_first: bool,
) -> BatchOutcome {
    let mut total = BatchOutcome::default();
    let mut chunks: Vec<&[UsageEvent]> = events.chunks(size).collect();
    if newest_first {
        chunks.reverse();
    }
    for chunk in chunks {
        let outcome = store_collected(store, chunk).await;
        total.inserted += outcome.inserted;
        total.skipped += outcome.skipped;
        total.dead_lettered += outcome.dead_lettered;
    }
    total
}
