//! cpamp's collector: takes CPA's usage events off its short-lived in-memory queue and
//! hands them to an [`EventSink`](cpamp_domain::ports::EventSink) before CPA forgets them.
//!
//! Public API:
//! - [`Collector`]`<S: EventSink>`: `new(sink, status)`, `start(settings)`,
//!   `restart(settings)` (joins the old run first, so two runs never pop at once),
//!   `stop()` and `shutdown()` (stop taking events, commit what is held, return).
//! - [`CollectorSettings`] (`upstream`, [`ManagementKey`] with a redacting `Debug`, [`Mode`],
//!   `queue`, [`PopSide`], `batch_size`, `poll_interval`, `tls_skip_verify`, backoff and
//!   shutdown tuning).
//! - [`StatusHandle`] / [`CollectorStatus`]: the data behind `/status` `collector.*`,
//!   warnings included; `refresh_notifications()` changes on every `{"refresh":true}`.
//! - [`UsageSource`] and its three adapters: [`HttpQueue`], [`RespPop`], [`RespSubscription`].
//!
//! Guarantees:
//! - A batch received from CPA is stored in one transaction. Storing runs beside popping
//!   and decoding (one batch commits while the next is taken), so at most three batches
//!   are held. If the store fails, the same batch is retried with backoff (1 s doubling to
//!   30 s) and popping stops once the pipeline is full; state is `error` with `lastError`
//!   `consume: <store error>` meanwhile. `shutdown` commits what is held before returning.
//! - `AUTH` is the first RESP command; a rejected key pauses the run instead of
//!   retrying into CPA's 30-minute IP ban.
//! - After every (re)subscription the queue is drained with pops, because CPA queues
//!   events only while nobody is subscribed.
//! - A RESP URL without a port dials CPA's port 8317.
//!
//! Layout: `settings`, `status`, `source` (the trait), `http`, `resp`, `tls`, `run` (the loop).
//!
//! Architecture invariant: no SQL, no web framework; storage is reached only through the
//! domain's `EventSink` port.
//!
//! # Example: consume a CPA usage queue into an in-memory sink
//!
//! Any [`EventSink`](cpamp_domain::ports::EventSink) can take the events: here a vector
//! behind a mutex, fed from the fake CPA of `cpamp-testkit` (point
//! [`CollectorSettings::new`] at a real CPA's base URL and management key instead).
//! `cpamp-storage`'s `SqliteStore` is the sink cpamp-server uses; the example program
//! `examples/embed.rs` collects into it.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//!
//! use cpamp_collector::{Collector, CollectorSettings, ManagementKey, Mode, StatusHandle};
//! use cpamp_domain::{StoreError, UsageEvent};
//! use cpamp_domain::ports::{BatchOutcome, EventSink, IngestBatch};
//! use cpamp_testkit::{FakeCpa, FakeCpaOptions};
//!
//! /// Keeps events in memory. A sink must be idempotent on the event hash: the
//! /// collector retries a batch whose commit it could not confirm.
//! #[derive(Clone, Default)]
//! struct MemorySink(Arc<Mutex<Vec<UsageEvent>>>);
//!
//! impl EventSink for MemorySink {
//!     async fn store_batch(&self, batch: IngestBatch) -> Result<BatchOutcome, StoreError> {
//!         let mut events = self.0.lock().expect("not poisoned");
//!         let mut outcome = BatchOutcome::default();
//!         for (index, event) in batch.events.into_iter().enumerate() {
//!             if events.iter().any(|known| known.event_hash == event.event_hash) {
//!                 outcome.skipped += 1;
//!             } else {
//!                 events.push(event);
//!                 outcome.inserted += 1;
//!                 outcome.fresh.push(index);
//!             }
//!         }
//!         outcome.dead_lettered = batch.dead_letters.len() as u64;
//!         Ok(outcome)
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let cpa = FakeCpa::start(FakeCpaOptions::new("management-key")).await?;
//!     let sink = MemorySink::default();
//!     let collector = Collector::new(sink.clone(), StatusHandle::new("http", "usage"));
//!
//!     let key = ManagementKey::new("management-key");
//!     let mut settings = CollectorSettings::new(cpa.base_url(), key);
//!     settings.mode = Mode::Http; // CPA's `GET /v0/management/usage-queue`
//!     settings.poll_interval = Duration::from_millis(20);
//!     collector.start(settings).await;
//!
//!     let emitted = cpa.emit(50).await;
//!     while sink.0.lock().expect("not poisoned").len() < emitted.len() {
//!         tokio::time::sleep(Duration::from_millis(10)).await;
//!     }
//!     // Stop popping and commit whatever is still held.
//!     collector.shutdown().await;
//!     assert_eq!(cpa.queued_len(), 0, "every event was taken off CPA's queue");
//!     assert_eq!(sink.0.lock().expect("not poisoned").len(), emitted.len());
//!     Ok(())
//! }
//! ```

#![warn(missing_docs)]

mod holding;
mod http;
mod inbox;
mod resp;
mod run;
mod settings;
mod source;
mod status;
mod tls;

pub use holding::HoldLimits;
pub use http::HttpQueue;
pub use inbox::{Inbox, InboxError, Recovery};
pub use resp::{
    DEFAULT_SUBSCRIBE_BUFFER, ReplyMeaning, RespPop, RespSubscription, go_quote_byte, read_replies,
};
pub use run::Collector;
pub use settings::{
    BackoffPolicy, CPA_DEFAULT_PORT, CollectorSettings, ManagementKey, Mode, PopSide,
    normalize_upstream,
};
pub use source::{ErrorKind, RawBatch, RawItem, SourceError, Stage, Transport, UsageSource};
pub use status::{
    CollectorState, CollectorStatus, RESP_OVER_HTTP_HINT, SINGLE_CONSUMER_NOTE, StatusHandle,
};
