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
pub use resp::{RespPop, RespSubscription, go_quote_byte};
pub use run::Collector;
pub use settings::{
    BackoffPolicy, CPA_DEFAULT_PORT, CollectorSettings, ManagementKey, Mode, PopSide,
    normalize_upstream,
};
pub use source::{ErrorKind, RawBatch, RawItem, SourceError, Stage, Transport, UsageSource};
pub use status::{
    CollectorState, CollectorStatus, RESP_OVER_HTTP_HINT, SINGLE_CONSUMER_NOTE, StatusHandle,
};
