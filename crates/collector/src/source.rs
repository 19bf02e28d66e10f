//! The one abstraction every transport implements: [`UsageSource`] yields batches of raw
//! queue items; the run loop decodes and stores them.

use std::fmt;
use std::future::Future;

use bytes::Bytes;

/// The transport a source uses, as `/status` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// RESP `SUBSCRIBE` to the queue channel.
    Subscribe,
    /// The HTTP usage queue.
    Http,
    /// RESP pops of the queue list.
    Resp,
}

impl Transport {
    /// The transport's name as `/status` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Subscribe => "subscribe",
            Transport::Http => "http",
            Transport::Resp => "resp",
        }
    }
}

/// One item taken from CPA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawItem {
    /// A payload to decode (JSON text as CPA queued it).
    Payload(Bytes),
    /// Something that arrived but cannot be a payload (for example a number inside the HTTP
    /// array); it becomes a dead letter with this reason instead of being dropped.
    Invalid {
        /// What arrived, as text.
        raw: String,
        /// Why it cannot be a payload.
        reason: String,
    },
}

/// Items taken from CPA in one read. Once a source returned a batch, CPA no longer holds
/// those items: the caller must store them or keep them.
pub type RawBatch = Vec<RawItem>;

/// Where a failure happened; the prefix of `lastError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Opening the TCP (or TLS) connection.
    Connect,
    /// RESP `AUTH` with the management key.
    Auth,
    /// RESP `SUBSCRIBE` or reading the subscription.
    Subscribe,
    /// An HTTP request to the usage queue.
    Http,
    /// Decoding or storing a batch (the store failed).
    Consume,
}

impl Stage {
    /// The stage's name, the prefix of `lastError`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Auth => "auth",
            Stage::Subscribe => "subscribe",
            Stage::Http => "http",
            Stage::Consume => "consume",
        }
    }
}

/// What the run loop should do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Retry with backoff.
    Transient,
    /// The transport does not exist on this CPA (HTTP 404/405/501, no SUBSCRIBE):
    /// `auto` moves on to the next transport.
    Unsupported,
    /// CPA rejected the management key. Retrying would count more failed logins and end
    /// in a 30-minute IP ban, so the run pauses until it is restarted with new settings.
    AuthRejected,
}

/// A transport failure: `<stage>: <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError {
    /// Where the failure happened.
    pub stage: Stage,
    /// What the run loop should do about it.
    pub kind: ErrorKind,
    /// What went wrong, without secrets.
    pub message: String,
}

impl SourceError {
    /// A transient failure at `stage` (retried with backoff).
    pub fn new(stage: Stage, message: impl Into<String>) -> SourceError {
        SourceError {
            stage,
            kind: ErrorKind::Transient,
            message: message.into(),
        }
    }

    /// The same failure with another kind (unsupported transport, rejected key).
    pub fn with_kind(mut self, kind: ErrorKind) -> SourceError {
        self.kind = kind;
        self
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.stage.as_str(), self.message)
    }
}

impl std::error::Error for SourceError {}

/// A stream of raw usage items from CPA.
///
/// Pop sources (HTTP queue, RESP pop) return an empty batch when CPA's queue is empty;
/// the subscription waits until a message arrives. `next_batch` of a pop source must not
/// be cancelled once started (the pop may already have removed items from CPA); the
/// subscription's is cancel-safe.
pub trait UsageSource: Send {
    /// The transport this source uses.
    fn transport(&self) -> Transport;

    /// The next batch of at most `max_items` items (see the trait's cancellation rules).
    fn next_batch(
        &mut self,
        max_items: u32,
    ) -> impl Future<Output = Result<RawBatch, SourceError>> + Send;
}
