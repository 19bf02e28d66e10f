//! Background adoption of a Go Manager Server database's events (see
//! `cpamp_storage`'s `legacy` module): a low-priority task that copies events in
//! batches while the server already serves and collects.

use std::time::Duration;

use cpamp_storage::{AdoptionStep, SqliteStore};

/// Events per adoption batch: large enough to be quick, small enough that the
/// collector's own batches never wait long for the writer.
const BATCH: u32 = 2_000;

/// Spawns the adoption task; it ends by itself when there is nothing (left) to adopt.
pub fn spawn(store: SqliteStore) {
    tokio::spawn(async move {
        let mut adopted = 0u64;
        loop {
            match store.adopt_legacy_events(BATCH).await {
                Ok(AdoptionStep::Nothing) => return,
                Ok(AdoptionStep::Finished) => {
                    tracing::info!(adopted, "Go database adoption completed");
                    return;
                }
                Ok(AdoptionStep::Copied { rows, .. }) => {
                    adopted += rows;
                    if adopted % 100_000 < u64::from(BATCH) {
                        tracing::info!(adopted, "adopting events of the Go database");
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "adopting the Go database paused; retrying in 10 s");
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            }
        }
    });
}
