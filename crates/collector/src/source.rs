//! The one abstraction every transport implements: [`UsageSource`] yields batches of raw
//! queue items; the run loop decodes and stores them.

use std::fmt;
use std::future::Future;

use bytes::Bytes;

/// The transport a source uses, as `/status` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Subscribe,
    Http,
    Resp,
}

impl Transport {
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
    Invalid { raw: String, reason: String },
}

/// Items taken from CPA in one read. Once a source returned a batch, CPA no longer holds
/// those items: the caller must store them or keep them.
pub type RawBatch = Vec<RawItem>;

/// Where a failure happened; the prefix of `lastError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Auth,
    Subscribe,
    Http,
    Consume,
}

impl Stage {
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
    pub stage: Stage,
    pub kind: ErrorKind,
    pub message: String,
}

impl SourceError {
    pub fn new(stage: Stage, message: impl Into<String>) -> SourceError {
        SourceError {
            stage,
            kind: ErrorKind::Transient,
            message: message.into(),
        }
    }

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
    fn transport(&self) -> Transport;

    fn next_batch(
        &mut self,
        max_items: u32,
    ) -> impl Future<Output = Result<RawBatch, SourceError>> + Send;
}
