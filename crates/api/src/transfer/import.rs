//! Running an import: the pure reader of `cpamp_domain::transfer::import` on a
//! blocking thread, its events stored in batches through the store, the outcome
//! as the wire's import result.
//!
//! Batches are committed one transaction each as they fill, so a long import
//! shows progress and a failure keeps what was stored before it (the identity
//! ledger makes running the same input again safe). Imported batches carry
//! [`BatchOrigin::Import`], so automation never reacts to them.

use std::io::BufRead;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cpamp_domain::event::UsageEvent;
use cpamp_domain::ports::{BatchOrigin, EventSink, IngestBatch};
use cpamp_domain::transfer::import::{
    ImportError, ImportIssue, ImportReport, Location, read_import,
};
use serde::{Deserialize, Serialize};

/// Events per stored batch (one transaction each). A transaction's fixed costs
/// (commit and its sync, the WAL checkpoint after it, rewriting the rollup blocks
/// and index pages it touches) are shared by this many events. The largest of
/// them is the identity ledger: its keys are hashes, so a batch lands all over
/// it and rewrites a page for most of its events however large it is; four
/// times the batch touches about half as many pages per event (on a ledger of a
/// million hashes). Two batches at most are in memory (see `run_import`).
pub const BATCH_EVENTS: usize = 20_000;

/// Batches of an import held at once: one being stored and one being read.
const BATCHES_IN_MEMORY: usize = 2;

/// Live counters of a running import, readable from other tasks (progress bars).
#[derive(Debug, Default)]
pub struct ImportProgress {
    /// Events stored for the first time so far.
    pub added: AtomicU64,
    /// Events already stored (same event hash) so far.
    pub skipped: AtomicU64,
    /// Set to stop the import at the next event (cancel).
    pub stop: AtomicBool,
}

/// Why an import ended early.
#[derive(Debug)]
pub enum ImportFailure {
    /// The input is unusable (empty, not the JSON it starts as, no details).
    Input(String),
    /// Reading the input failed (an upload broke off, a file became unreadable).
    Read(std::io::Error),
    /// Storing a batch failed; the input may be imported again later.
    Store(cpamp_domain::StoreError),
    /// Stopped on request.
    Cancelled,
}

impl std::fmt::Display for ImportFailure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportFailure::Input(message) => formatter.write_str(message),
            ImportFailure::Read(error) => write!(formatter, "read import: {error}"),
            ImportFailure::Store(error) => write!(formatter, "store imported events: {error}"),
            ImportFailure::Cancelled => formatter.write_str("import cancelled"),
        }
    }
}

/// What an import did.
#[derive(Debug)]
pub struct ImportOutcome {
    /// The counts, whether or not the import finished.
    pub result: ImportResult,
    /// Why the import ended early; `None` when it read the whole input.
    pub failure: Option<ImportFailure>,
}

/// The import result object of the wire (analytics §1.3) plus the listed problems.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportResult {
    /// `usage_service_jsonl`, `legacy_usage_export`, `legacy_usage_payload`, or `""`.
    pub format: String,
    /// Events stored for the first time.
    pub added: u64,
    /// Events already stored (same event hash).
    pub skipped: u64,
    /// Events read and handed to storage (`added + skipped` when all were stored).
    pub total: u64,
    /// Records (lines, elements, details) that could not be read.
    pub failed: u64,
    /// Legacy records without details, which hold nothing to import.
    pub unsupported: u64,
    /// Notes about the input (for example a legacy format's limits).
    pub warnings: Option<Vec<String>>,
    #[serde(default)]
    /// The first failed records with their location (`line`, `element` or the
    /// legacy `endpoint`/`model`/`detail`) and the reason.
    pub errors: Vec<ImportErrorItem>,
}

/// One failed record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportErrorItem {
    /// 1-based line of a JSONL input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// 1-based element of a JSON array.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub element: Option<u64>,
    /// Endpoint of a legacy snapshot record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Model of a legacy snapshot record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// 1-based detail of a legacy snapshot record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<u64>,
    /// Why the record could not be imported.
    pub error: String,
}

impl From<&ImportIssue> for ImportErrorItem {
    fn from(issue: &ImportIssue) -> ImportErrorItem {
        let mut item = ImportErrorItem {
            line: None,
            element: None,
            endpoint: None,
            model: None,
            detail: None,
            error: issue.message.clone(),
        };
        match &issue.location {
            Location::Line(line) => item.line = Some(*line),
            Location::Element(element) => item.element = Some(*element),
            Location::Legacy {
                endpoint,
                model,
                detail,
            } => {
                item.endpoint = Some(endpoint.clone());
                item.model.clone_from(model);
                item.detail = *detail;
            }
        }
        item
    }
}

fn result_of(report: &ImportReport, added: u64, skipped: u64) -> ImportResult {
    ImportResult {
        format: report
            .format
            .map(|format| format.as_str().to_string())
            .unwrap_or_default(),
        added,
        skipped,
        total: report.events,
        failed: report.failed,
        unsupported: report.unsupported,
        warnings: (!report.warnings.is_empty()).then(|| {
            report
                .warnings
                .iter()
                .map(|text| text.to_string())
                .collect()
        }),
        errors: report.issues.iter().map(ImportErrorItem::from).collect(),
    }
}

/// Imports everything `input` holds into `store`.
///
/// The reader runs on a blocking thread; its events come back in batches of
/// [`BATCH_EVENTS`] over a bounded channel, at most two batches exist at once,
/// so memory stays flat and a slow store slows the reader down. `progress` is updated after every batch and
/// stops the import when its `stop` flag is set.
pub async fn run_import<S, R>(
    store: &S,
    input: R,
    now_ms: i64,
    progress: Arc<ImportProgress>,
) -> ImportOutcome
where
    S: EventSink,
    R: BufRead + Send + 'static,
{
    // At most two batches in memory, whatever the input's size: the reader fills
    // one while the other is stored, and starts the next only once a stored
    // batch is gone (a slot comes back). A batch of 20,000 events is tens of MiB.
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<UsageEvent>>(1);
    let (slot_back, slots) = std::sync::mpsc::sync_channel::<()>(BATCHES_IN_MEMORY);
    for _ in 0..BATCHES_IN_MEMORY {
        let _ = slot_back.send(());
    }
    let reader_progress = Arc::clone(&progress);
    let batch_events = BATCH_EVENTS;
    let reader = tokio::task::spawn_blocking(move || {
        // `None` until a slot is taken; a slot is taken before the first event of
        // every batch.
        let mut batch: Option<Vec<UsageEvent>> = None;
        let mut report = read_import(input, now_ms, &mut |event| {
            if reader_progress.stop.load(Ordering::Relaxed) {
                return ControlFlow::Break(());
            }
            let filling = match batch.as_mut() {
                Some(filling) => filling,
                None => {
                    // The store side is gone when its slots are.
                    if slots.recv().is_err() {
                        return ControlFlow::Break(());
                    }
                    batch.insert(Vec::with_capacity(batch_events))
                }
            };
            filling.push(event);
            if filling.len() >= batch_events {
                let full = batch.take().unwrap_or_default();
                if sender.blocking_send(full).is_err() {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        if let Some(last) = batch.filter(|last| !last.is_empty())
            && sender.blocking_send(last).is_err()
            && report.error.is_none()
        {
            report.error = Some(ImportError::Stopped);
        }
        report
    });

    let mut store_error = None;
    while let Some(events) = receiver.recv().await {
        let outcome = store
            .store_batch(IngestBatch {
                origin: BatchOrigin::Import,
                events,
                dead_letters: Vec::new(),
            })
            .await;
        match outcome {
            Ok(outcome) => {
                // The batch is dropped by now: the reader may fill another.
                let _ = slot_back.try_send(());
                progress
                    .added
                    .fetch_add(outcome.inserted, Ordering::Relaxed);
                progress
                    .skipped
                    .fetch_add(outcome.skipped, Ordering::Relaxed);
            }
            Err(error) => {
                store_error = Some(error);
                // Dropping the receiver stops the reader at its next batch.
                break;
            }
        }
    }
    drop(receiver);
    drop(slot_back);
    let report = match reader.await {
        Ok(report) => report,
        Err(error) => ImportReport {
            error: Some(ImportError::Read(std::io::Error::other(format!(
                "import reader failed: {error}"
            )))),
            ..ImportReport::default()
        },
    };
    let added = progress.added.load(Ordering::Relaxed);
    let skipped = progress.skipped.load(Ordering::Relaxed);
    let mut result = result_of(&report, added, skipped);
    let failure = if let Some(error) = store_error {
        Some(ImportFailure::Store(error))
    } else {
        match report.error {
            None => None,
            Some(ImportError::Stopped) => Some(ImportFailure::Cancelled),
            Some(ImportError::Read(error)) => Some(ImportFailure::Read(error)),
            Some(other) => Some(ImportFailure::Input(other.to_string())),
        }
    };
    if failure.is_some() {
        // Events read but not stored are not part of the total.
        result.total = result.total.min(added + skipped);
    }
    ImportOutcome { result, failure }
}

/// A blocking `Read` over byte chunks sent from async code (an HTTP body).
/// A chunk of `Err` ends the input with that error.
pub struct ChannelReader {
    receiver: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
    current: bytes::Bytes,
}

impl ChannelReader {
    /// Reads the chunks `receiver` yields, in order, as one byte stream.
    pub fn new(
        receiver: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
    ) -> ChannelReader {
        ChannelReader {
            receiver,
            current: bytes::Bytes::new(),
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(error)) => return Err(error),
                None => return Ok(0),
            }
        }
        let count = out.len().min(self.current.len());
        out[..count].copy_from_slice(&self.current.split_to(count));
        Ok(count)
    }
}
