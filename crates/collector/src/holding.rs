//! What the collector holds between taking events from CPA and the store committing them:
//! a FIFO of batches, each synced to the durable inbox as it arrives (when there is one)
//! and kept in memory up to a limit, and the committer that stores them in order.
//!
//! Popping goes on while the store refuses writes, so CPA's retention does not expire
//! events during an outage: batches pile up here, bounded by
//! [`HoldLimits::memory_items`] in memory and [`HoldLimits::inbox_max_bytes`] on disk.
//! Only when both are full does popping pause.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cpamp_domain::ports::{EventSink, IngestBatch};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::inbox::{Inbox, Location, ReadKind, Recovery, ResponseFormat};
use crate::run::{decode_items, now_ms};
use crate::settings::BackoffPolicy;
use crate::source::RawItem;
use crate::status::{StatusHandle, StoreHealth};

/// Bounds of what is held while the store cannot keep up or refuses writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldLimits {
    /// Items kept in memory; beyond this, batches live only in the inbox until the
    /// committer reaches them (without an inbox, popping pauses here).
    pub memory_items: usize,
    /// Size of the inbox file beyond which popping pauses.
    pub inbox_max_bytes: u64,
    /// Retries of a refused batch: `initial` doubling up to `max`. Keep `max` well below
    /// CPA's queue retention so a recovered store is used at once.
    pub store_retry: BackoffPolicy,
    /// Messages a subscription may have received but not yet handed over to be held.
    /// The subscription is read continuously (CPA drops a subscriber that falls 256
    /// messages behind, losing a message), so this bounds the one buffer that could
    /// otherwise grow while the store refuses writes; when holding is full the
    /// collector unsubscribes instead and CPA queues new events until there is room.
    pub subscribe_buffer_items: usize,
}

impl Default for HoldLimits {
    fn default() -> HoldLimits {
        HoldLimits {
            memory_items: 20_000,
            inbox_max_bytes: 1024 * 1024 * 1024,
            store_retry: BackoffPolicy {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(5),
            },
            subscribe_buffer_items: crate::resp::DEFAULT_SUBSCRIBE_BUFFER,
        }
    }
}

impl HoldLimits {
    /// The longest wait between store retries for a CPA that keeps events for
    /// `retention`: a twelfth of it (5 s for CPA's default minute), at least 250 ms.
    pub fn store_retry_for(retention: Duration) -> Duration {
        (retention / 12).max(Duration::from_millis(250))
    }
}

struct Entry {
    seq: u64,
    origin: String,
    count: usize,
    /// The raw items while kept in memory (always, when the inbox could not take them).
    items: Option<Vec<RawItem>>,
    /// The decoding done when the batch arrived, used by the first store attempt.
    decoded: Option<IngestBatch>,
    location: Option<Location>,
}

#[derive(Default)]
struct HeldState {
    entries: VecDeque<Entry>,
    items: usize,
    memory_items: usize,
    next_seq: u64,
    inbox_len: u64,
    /// The last inbox write failed (for example a full disk).
    inbox_error: Option<String>,
}

/// Shared by the runs (which add batches) and the committer (which removes them).
pub(crate) struct Holding {
    state: Mutex<HeldState>,
    inbox: Option<Mutex<Inbox>>,
    changes: watch::Sender<u64>,
    limits: HoldLimits,
}

impl Holding {
    pub(crate) fn new(limits: HoldLimits) -> Holding {
        Holding {
            state: Mutex::new(HeldState {
                next_seq: 1,
                ..HeldState::default()
            }),
            inbox: None,
            changes: watch::channel(0).0,
            limits,
        }
    }

    /// With a durable inbox; what the previous process left in it is held first.
    pub(crate) fn with_inbox(limits: HoldLimits, inbox: Inbox, recovery: Recovery) -> Holding {
        let mut holding = Holding::new(limits);
        {
            let state = holding
                .state
                .get_mut()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state.inbox_len = inbox.len();
            for batch in recovery.batches {
                let count = batch.items.len();
                let in_memory = state.memory_items + count <= limits.memory_items;
                state.next_seq = state.next_seq.max(batch.seq + 1);
                state.items += count;
                if in_memory {
                    state.memory_items += count;
                }
                state.entries.push_back(Entry {
                    seq: batch.seq,
                    origin: batch.origin,
                    count,
                    items: in_memory.then_some(batch.items),
                    decoded: None,
                    location: Some(batch.location),
                });
            }
        }
        holding.inbox = Some(Mutex::new(inbox));
        holding
    }

    fn state(&self) -> MutexGuard<'_, HeldState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn inbox(&self) -> Option<MutexGuard<'_, Inbox>> {
        self.inbox.as_ref().map(|inbox| {
            inbox
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        })
    }

    fn changed(&self) {
        self.changes.send_modify(|version| *version += 1);
    }

    pub(crate) fn held_items(&self) -> usize {
        self.state().items
    }

    /// Syncs a received batch to the inbox and queues it for the committer. Blocking (the
    /// inbox sync); run it on a blocking thread. `messages`: the batch ends the first
    /// `messages` messages of the open subscription (see [`Inbox::covered`]).
    pub(crate) fn hold(&self, origin: &str, items: Vec<RawItem>, messages: Option<u64>) -> u64 {
        let count = items.len();
        // The inbox lock is held until the batch is queued, so a compaction never misses a
        // batch that is written but not queued yet.
        let mut inbox = self.inbox();
        let seq = {
            let mut state = self.state();
            let seq = state.next_seq;
            state.next_seq += 1;
            seq
        };
        let mut location = None;
        let mut inbox_error = None;
        if let Some(inbox) = inbox.as_mut() {
            match inbox.append(seq, now_ms(), origin, &items) {
                Ok(written) => {
                    location = Some(written);
                    if let Some(messages) = messages
                        && let Err(error) = inbox.covered(messages)
                    {
                        tracing::debug!(%error, "could not mark subscription messages as held");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, path = %inbox.path().display(), items = count, "could not sync received events to the inbox; holding them in memory");
                    inbox_error = Some(error.to_string());
                }
            }
        }
        let mut state = self.state();
        if let Some(inbox) = inbox.as_ref() {
            state.inbox_len = inbox.len();
            state.inbox_error = inbox_error;
        }
        let in_memory =
            location.is_none() || state.memory_items + count <= self.limits.memory_items;
        state.items += count;
        if in_memory {
            state.memory_items += count;
        }
        state.entries.push_back(Entry {
            seq,
            origin: origin.to_string(),
            count,
            items: in_memory.then_some(items),
            decoded: None,
            location,
        });
        drop(state);
        drop(inbox);
        self.changed();
        seq
    }

    /// Keeps the decoding done after a batch was held for its first store attempt (unless
    /// the committer got to the batch first, or it lives only in the inbox).
    pub(crate) fn attach_decoded(&self, seq: u64, decoded: IngestBatch) {
        let mut state = self.state();
        if let Some(entry) = state.entries.iter_mut().find(|entry| entry.seq == seq)
            && entry.items.is_some()
        {
            entry.decoded = Some(decoded);
        }
    }

    /// The bounds this holding was made with.
    pub(crate) fn limits(&self) -> HoldLimits {
        self.limits
    }

    /// True while another batch may be taken from CPA.
    pub(crate) fn has_room(&self) -> bool {
        let state = self.state();
        let inbox_room = self.inbox.is_some()
            && state.inbox_error.is_none()
            && state.inbox_len < self.limits.inbox_max_bytes;
        state.memory_items < self.limits.memory_items || inbox_room
    }

    /// Waits until another batch may be taken, or `stop` turns true (returns false).
    pub(crate) async fn wait_for_room(&self, stop: &mut watch::Receiver<bool>) -> bool {
        let mut changes = self.changes.subscribe();
        loop {
            if *stop.borrow() {
                return false;
            }
            if self.has_room() {
                return true;
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = stop.wait_for(|stopping| *stopping) => return false,
            }
        }
    }

    /// Marks the start of a read from CPA in the inbox (see [`crate::inbox`]).
    pub(crate) fn read_began(&self, kind: ReadKind, origin: &str) {
        self.mark_read(|inbox, at| inbox.read_began(at, kind, origin));
    }

    /// Marks the end of a read from CPA in the inbox.
    pub(crate) fn read_ended(&self) {
        self.mark_read(|inbox, at| inbox.read_ended(at));
    }

    fn mark_read(&self, mark: impl FnOnce(&mut Inbox, i64) -> std::io::Result<()>) {
        if let Some(mut inbox) = self.inbox() {
            if let Err(error) = mark(&mut inbox, now_ms()) {
                tracing::debug!(%error, "could not mark a read in the inbox");
            }
            let len = inbox.len();
            drop(inbox);
            self.state().inbox_len = len;
        }
    }

    /// Appends bytes of the response being read to the inbox as they arrive.
    fn response_bytes(&self, format: ResponseFormat, bytes: &[u8]) {
        if let Some(mut inbox) = self.inbox() {
            if let Err(error) = inbox.response_bytes(format, bytes) {
                tracing::debug!(%error, "could not write response bytes to the inbox");
            }
            let len = inbox.len();
            drop(inbox);
            self.state().inbox_len = len;
        }
    }

    /// The front batch, decoded, for a store attempt (reading it back from the inbox if
    /// it is not in memory). `None` when nothing is held.
    fn front(&self) -> Option<Result<(u64, usize, IngestBatch), String>> {
        let mut state = self.state();
        let entry = state.entries.front_mut()?;
        let seq = entry.seq;
        let count = entry.count;
        if let Some(decoded) = entry.decoded.take() {
            return Some(Ok((seq, count, decoded)));
        }
        if let Some(items) = &entry.items {
            return Some(Ok((seq, count, decode_items(items, &entry.origin).batch)));
        }
        let location = entry.location?;
        let origin = entry.origin.clone();
        drop(state);
        let items = match self.inbox().map(|mut inbox| inbox.read(location)) {
            Some(Ok(items)) => items,
            Some(Err(error)) => return Some(Err(format!("read a held batch back: {error}"))),
            None => return Some(Err("no inbox".to_string())),
        };
        Some(Ok((seq, count, decode_items(&items, &origin).batch)))
    }

    /// Drops the front batch after the store committed it and trims the inbox.
    fn committed(&self, seq: u64) {
        let mut inbox = self.inbox();
        let mut state = self.state();
        let Some(entry) = state.entries.pop_front() else {
            return;
        };
        debug_assert_eq!(entry.seq, seq);
        state.items -= entry.count;
        if entry.items.is_some() {
            state.memory_items -= entry.count;
        }
        let held: Vec<(u64, Location)> = state
            .entries
            .iter()
            .filter_map(|entry| entry.location.map(|location| (entry.seq, location)))
            .collect();
        drop(state);
        if let Some(inbox) = inbox.as_mut() {
            match inbox.committed(seq, entry.location, &held) {
                Ok(relocated) => {
                    let mut state = self.state();
                    if relocated != held {
                        let mut moved = relocated.into_iter().peekable();
                        for entry in state.entries.iter_mut() {
                            if let Some((moved_seq, location)) = moved.peek()
                                && *moved_seq == entry.seq
                            {
                                entry.location = Some(*location);
                                moved.next();
                            }
                        }
                    }
                    state.inbox_len = inbox.len();
                }
                Err(error) => {
                    tracing::warn!(%error, "could not trim the collector inbox");
                }
            }
        }
        drop(inbox);
        self.changed();
    }

    /// Batches kept only in memory (lost if the process ends now).
    fn memory_only_items(&self) -> usize {
        self.state()
            .entries
            .iter()
            .filter(|entry| entry.location.is_none())
            .map(|entry| entry.count)
            .sum()
    }
}

/// Where a pop source writes the bytes of a response as they come off the socket, before
/// anything parses them: the inbox, when there is one (else nothing).
#[derive(Clone, Default)]
pub(crate) struct Tap(Option<Arc<Holding>>);

impl Tap {
    pub(crate) fn new(holding: Arc<Holding>) -> Tap {
        Tap(Some(holding))
    }

    pub(crate) fn received(&self, format: ResponseFormat, bytes: &[u8]) {
        if let Some(holding) = &self.0 {
            holding.response_bytes(format, bytes);
        }
    }
}

/// Stores held batches in order, each in one transaction, retrying a refused batch on the
/// store-retry cadence until the store commits it.
pub(crate) struct Committer<S> {
    pub sink: S,
    pub holding: Arc<Holding>,
    pub status: StatusHandle,
    /// Turns `Some(grace)` at shutdown: commit what is held, giving up on a store that
    /// still refuses `grace` after the first refusal since.
    pub finish: watch::Receiver<Option<Duration>>,
}

impl<S: EventSink> Committer<S> {
    pub(crate) async fn run(mut self) {
        let mut changes = self.holding.changes.subscribe();
        loop {
            let next = {
                let holding = self.holding.clone();
                tokio::task::spawn_blocking(move || holding.front())
                    .await
                    .ok()
                    .flatten()
            };
            let Some(next) = next else {
                if self.finish.borrow().is_some() {
                    return;
                }
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = self.finish.changed() => {}
                }
                continue;
            };
            if !self.commit(next).await {
                let memory_only = self.holding.memory_only_items();
                let held = self.holding.held_items();
                if held > memory_only {
                    tracing::warn!(
                        items = held - memory_only,
                        "the store still refuses writes at shutdown; received events stay in the inbox and are stored at the next start"
                    );
                }
                if memory_only > 0 {
                    tracing::error!(
                        items = memory_only,
                        "events received from CPA could not be stored or synced to the inbox before shutdown"
                    );
                }
                return;
            }
        }
    }

    /// Returns false only when finishing and the store still refused after the grace.
    async fn commit(&mut self, first: Result<(u64, usize, IngestBatch), String>) -> bool {
        let mut backoff_wait = self.holding.limits.store_retry.initial;
        let mut give_up_at: Option<Instant> = None;
        let mut attempt = Some(first);
        loop {
            let next = match attempt.take() {
                Some(next) => next,
                None => {
                    let holding = self.holding.clone();
                    match tokio::task::spawn_blocking(move || holding.front()).await {
                        Ok(Some(next)) => next,
                        _ => return true,
                    }
                }
            };
            let result = match next {
                Ok((seq, count, batch)) => self
                    .sink
                    .store_batch(batch)
                    .await
                    .map(|outcome| (seq, count, outcome))
                    .map_err(|error| error.to_string()),
                Err(error) => Err(error),
            };
            match result {
                Ok((seq, _count, outcome)) => {
                    let holding = self.holding.clone();
                    let _ = tokio::task::spawn_blocking(move || holding.committed(seq)).await;
                    self.status.stored(&outcome, self.holding.held_items());
                    return true;
                }
                Err(error) => {
                    let held = self.holding.held_items();
                    tracing::warn!(%error, held, "storing a batch failed; keeping it and retrying");
                    self.status.store_failed(StoreHealth {
                        error,
                        held_items: held,
                    });
                    let wait = backoff_wait;
                    backoff_wait = (backoff_wait * 2).min(self.holding.limits.store_retry.max);
                    if self.finish.borrow().is_some() {
                        let grace = (*self.finish.borrow()).unwrap_or_default();
                        let deadline = *give_up_at.get_or_insert_with(|| Instant::now() + grace);
                        let now = Instant::now();
                        if now >= deadline {
                            return false;
                        }
                        tokio::time::sleep(wait.min(deadline - now)).await;
                    } else {
                        // A shutdown request cuts the wait short; the batch is retried at once.
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = self.finish.changed() => {}
                        }
                    }
                }
            }
        }
    }
}
