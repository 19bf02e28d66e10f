//! What the collector holds between taking events from CPA and the store committing them:
//! a FIFO of batches, each synced to the durable inbox as it arrives (when there is one)
//! and kept in memory up to a limit, and the committer that stores them in order.
//!
//! Popping goes on while the store refuses writes, so CPA's retention does not expire
//! events during an outage: batches pile up here, every one in the inbox and the
//! first [`HoldLimits::memory_items`] also in memory. Popping pauses when the inbox
//! reaches [`HoldLimits::inbox_max_bytes`] (without a usable inbox, when memory
//! reaches its bounds).

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
    /// Bytes of received payloads kept in memory, the same way: whichever of the two
    /// bounds is reached first sends further batches to the inbox only. A held batch
    /// also keeps its decoded form for the first store attempt, so memory is about
    /// twice this while the store lags.
    pub memory_bytes: usize,
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
            memory_items: 5_000,
            memory_bytes: 4 * 1024 * 1024,
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
    /// The payload bytes of the items.
    bytes: usize,
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
    memory_bytes: usize,
    next_seq: u64,
    inbox_len: u64,
    /// The last inbox write failed (for example a full disk).
    inbox_error: Option<String>,
}

impl HeldState {
    /// True when a batch of `count` items and `bytes` bytes may be kept in memory.
    fn fits(&self, count: usize, bytes: usize, limits: &HoldLimits) -> bool {
        self.memory_items + count <= limits.memory_items
            && self.memory_bytes + bytes <= limits.memory_bytes
    }
}

/// The payload bytes of received items (what holding them in memory costs).
fn item_bytes(items: &[RawItem]) -> usize {
    items.iter().map(crate::inbox::item_len).sum()
}

/// Shared by the runs (which add batches) and the committer (which removes them).
pub(crate) struct Holding {
    state: Mutex<HeldState>,
    inbox: Option<Mutex<Inbox>>,
    changes: watch::Sender<()>,
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
            changes: watch::channel(()).0,
            limits,
        }
    }

    /// With a durable inbox; what the previous process left in it is held first. Its
    /// batches are read back into memory only as far as the memory bounds allow; the
    /// rest stay in the inbox until the committer reaches them.
    pub(crate) fn with_inbox(limits: HoldLimits, mut inbox: Inbox, recovery: Recovery) -> Holding {
        let mut holding = Holding::new(limits);
        {
            let state = holding
                .state
                .get_mut()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state.inbox_len = inbox.len();
            for batch in recovery.batches {
                let count = batch.count;
                let mut bytes = batch.bytes;
                let mut items = None;
                if state.fits(count, bytes, &limits) {
                    match inbox.read(batch.location) {
                        Ok(read) => {
                            let read_bytes = item_bytes(&read);
                            if state.fits(count, read_bytes, &limits) {
                                bytes = read_bytes;
                                items = Some(read);
                            }
                        }
                        Err(error) => {
                            tracing::debug!(%error, "could not read a held batch back at start");
                        }
                    }
                }
                state.next_seq = state.next_seq.max(batch.seq + 1);
                state.items += count;
                if items.is_some() {
                    state.memory_items += count;
                    state.memory_bytes += bytes;
                }
                state.entries.push_back(Entry {
                    seq: batch.seq,
                    origin: batch.origin,
                    count,
                    bytes,
                    items,
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
        // Wakes every waiter whether or not anyone is listening yet.
        self.changes.send_replace(());
    }

    pub(crate) fn held_items(&self) -> usize {
        self.state().items
    }

    /// Calls `report` with the number of held items while no batch can be added or
    /// removed, so reports reach the status in the order the count changed: a report
    /// made after a batch was held can never overwrite the one made after it was
    /// stored with an older, larger count.
    pub(crate) fn report_held(&self, report: impl FnOnce(usize)) {
        let state = self.state();
        report(state.items);
    }

    /// Writes a received batch to the inbox, queues it for the committer and syncs the
    /// inbox. Blocking (the sync); run it on a blocking thread. `messages`: the batch ends the first
    /// `messages` messages of the open subscription (see [`Inbox::covered`]).
    pub(crate) fn hold(&self, origin: &str, items: Vec<RawItem>, messages: Option<u64>) -> u64 {
        let count = items.len();
        let bytes = item_bytes(&items);
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
        let mut sync = None;
        if let Some(inbox) = inbox.as_mut() {
            match inbox
                .append_unsynced(seq, now_ms(), origin, &items)
                .and_then(|written| Ok((written, inbox.sync_handle()?)))
            {
                Ok((written, handle)) => {
                    location = Some(written);
                    sync = Some(handle);
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
        let in_memory = location.is_none() || state.fits(count, bytes, &self.limits);
        state.items += count;
        if in_memory {
            state.memory_items += count;
            state.memory_bytes += bytes;
        }
        state.entries.push_back(Entry {
            seq,
            origin: origin.to_string(),
            count,
            bytes,
            items: in_memory.then_some(items),
            decoded: None,
            location,
        });
        drop(state);
        drop(inbox);
        // Synced outside the inbox's lock: the bytes of reads in progress (a subscription
        // never pauses) keep reaching the file while the disk syncs.
        if let Some(file) = sync
            && let Err(error) = file.sync_data()
        {
            tracing::warn!(%error, items = count, "could not sync received events to the inbox");
            self.state().inbox_error = Some(error.to_string());
        }
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

    /// True while another batch may be taken from CPA. With a working inbox every
    /// batch is written to it (the memory bounds only decide which batches are also
    /// kept in memory), so the inbox's size is the bound: were memory room enough,
    /// the batches kept in memory as the committer frees it would let the inbox,
    /// and the queue of held batches, grow without end behind a lagging store.
    /// Without a usable inbox the memory bounds are the bound.
    pub(crate) fn has_room(&self) -> bool {
        let state = self.state();
        if self.inbox.is_some() && state.inbox_error.is_none() {
            return state.inbox_len < self.limits.inbox_max_bytes;
        }
        state.memory_items < self.limits.memory_items
            && state.memory_bytes < self.limits.memory_bytes
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
            state.memory_bytes -= entry.bytes;
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

/// What a committer that gave up at shutdown left unstored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unstored {
    /// Items synced to the inbox: stored at the next start.
    pub in_inbox: usize,
    /// Items held only in memory (the inbox could not take them): lost now.
    pub memory_only: usize,
}

impl Unstored {
    /// What to say about what stays behind: `(is an error, message)` per part.
    pub(crate) fn report(self) -> Vec<(bool, String)> {
        let mut lines = Vec::new();
        if self.in_inbox > 0 {
            lines.push((
                false,
                format!(
                    "the store still refuses writes at shutdown; {} received events stay in the inbox and are stored at the next start",
                    self.in_inbox
                ),
            ));
        }
        if self.memory_only > 0 {
            lines.push((
                true,
                format!(
                    "{} events received from CPA could not be stored or synced to the inbox before shutdown",
                    self.memory_only
                ),
            ));
        }
        lines
    }
}

impl<S: EventSink> Committer<S> {
    /// Stores held batches until finishing with nothing held (`None`), or until the
    /// store still refuses after the shutdown grace (what is left unstored).
    pub(crate) async fn run(mut self) -> Option<Unstored> {
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
                    return None;
                }
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = self.finish.changed() => {}
                }
                continue;
            };
            if !self.commit(next).await {
                let memory_only = self.holding.memory_only_items();
                return Some(Unstored {
                    in_inbox: self.holding.held_items() - memory_only,
                    memory_only,
                });
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
                    self.holding
                        .report_held(|held| self.status.stored(&outcome, held));
                    return true;
                }
                Err(error) => {
                    tracing::warn!(%error, held = self.holding.held_items(), "storing a batch failed; keeping it and retrying");
                    self.holding.report_held(|held| {
                        self.status.store_failed(StoreHealth {
                            error,
                            held_items: held,
                        });
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

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::time::Instant as StdInstant;

    use cpamp_domain::StoreError;
    use cpamp_domain::ports::{BatchOrigin, BatchOutcome};

    use super::*;

    /// Items that decode to dead letters carrying `tag-i`, so every batch is recognisable
    /// in the sink.
    fn items(tag: &str, count: usize) -> Vec<RawItem> {
        (0..count)
            .map(|index| RawItem::Invalid {
                raw: format!("{tag}-{index}"),
                reason: "test".into(),
            })
            .collect()
    }

    fn tags(batch: &IngestBatch) -> Vec<String> {
        batch
            .dead_letters
            .iter()
            .map(|dead| dead.payload.clone())
            .collect()
    }

    fn limits(memory_items: usize) -> HoldLimits {
        HoldLimits {
            memory_items,
            memory_bytes: usize::MAX,
            inbox_max_bytes: 1024 * 1024 * 1024,
            store_retry: BackoffPolicy {
                initial: Duration::from_millis(40),
                max: Duration::from_millis(100),
            },
            subscribe_buffer_items: crate::resp::DEFAULT_SUBSCRIBE_BUFFER,
        }
    }

    /// Which held batches keep their items in memory, in order.
    fn kept_in_memory(state: &HeldState) -> Vec<bool> {
        state
            .entries
            .iter()
            .map(|entry| entry.items.is_some())
            .collect()
    }

    fn with_inbox(path: &std::path::Path, limits: HoldLimits) -> Holding {
        let (inbox, recovery) = Inbox::open(path).unwrap();
        Holding::with_inbox(limits, inbox, recovery)
    }

    /// Records every attempt and what it stored; refuses the first `failures` attempts
    /// (all of them when `failures` is `usize::MAX`).
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<SinkState>>);

    #[derive(Default)]
    struct SinkState {
        failures: usize,
        attempts: Vec<StdInstant>,
        stored: Vec<Vec<String>>,
    }

    impl Sink {
        fn failing(failures: usize) -> Sink {
            let sink = Sink::default();
            sink.0.lock().unwrap().failures = failures;
            sink
        }

        fn stored(&self) -> Vec<Vec<String>> {
            self.0.lock().unwrap().stored.clone()
        }

        fn attempts(&self) -> Vec<StdInstant> {
            self.0.lock().unwrap().attempts.clone()
        }
    }

    impl EventSink for Sink {
        async fn store_batch(&self, batch: IngestBatch) -> Result<BatchOutcome, StoreError> {
            let mut state = self.0.lock().unwrap();
            state.attempts.push(StdInstant::now());
            if state.failures > 0 {
                // `usize::MAX` never counts down: a store that stays down.
                if state.failures != usize::MAX {
                    state.failures -= 1;
                }
                return Err(StoreError::unavailable(
                    "disk full",
                    std::io::Error::other("no space left on device"),
                ));
            }
            state.stored.push(tags(&batch));
            Ok(BatchOutcome {
                dead_lettered: batch.dead_letters.len() as u64,
                ..BatchOutcome::default()
            })
        }
    }

    fn committer(
        sink: &Sink,
        holding: &Arc<Holding>,
        status: &StatusHandle,
    ) -> (
        watch::Sender<Option<Duration>>,
        tokio::task::JoinHandle<Option<Unstored>>,
    ) {
        let (finish, finish_rx) = watch::channel(None);
        let task = tokio::spawn(
            Committer {
                sink: sink.clone(),
                holding: holding.clone(),
                status: status.clone(),
                finish: finish_rx,
            }
            .run(),
        );
        (finish, task)
    }

    /// `future`'s output, failing the test after 10 s instead of hanging.
    async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), future)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = StdInstant::now() + Duration::from_secs(10);
        while !done() {
            assert!(StdInstant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn store_retries_follow_a_twelfth_of_the_retention() {
        assert_eq!(
            HoldLimits::store_retry_for(Duration::from_secs(60)),
            Duration::from_secs(5)
        );
        assert_eq!(
            HoldLimits::store_retry_for(Duration::from_secs(6)),
            Duration::from_millis(500)
        );
        assert_eq!(
            HoldLimits::store_retry_for(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
    }

    #[test]
    fn without_an_inbox_everything_stays_in_memory_and_popping_pauses_at_the_bound() {
        let holding = Holding::new(limits(3));
        assert!(holding.has_room());
        assert_eq!(holding.hold("o", items("a", 2), None), 1);
        assert!(holding.has_room(), "2 of 3 items held");
        assert_eq!(holding.hold("o", items("b", 2), None), 2);
        assert_eq!(holding.hold("o", items("c", 1), None), 3);
        // Past the bound the batches are still kept (nothing popped is dropped), but
        // no more is taken.
        assert_eq!(holding.held_items(), 5);
        assert_eq!(holding.memory_only_items(), 5);
        assert!(!holding.has_room());
        let (seq, count, batch) = holding.front().unwrap().unwrap();
        assert_eq!(
            (seq, count, tags(&batch)),
            (1, 2, vec!["a-0".into(), "a-1".into()])
        );
        holding.committed(1);
        assert_eq!(holding.held_items(), 3);
        assert!(!holding.has_room(), "3 of 3 items held");
        holding.committed(2);
        assert_eq!(holding.held_items(), 1);
        assert_eq!(holding.memory_only_items(), 1);
        assert!(holding.has_room());
        let (seq, _, batch) = holding.front().unwrap().unwrap();
        assert_eq!((seq, tags(&batch)), (3, vec!["c-0".to_string()]));
        holding.committed(3);
        assert!(holding.front().is_none());
        assert_eq!(holding.held_items(), 0);
    }

    #[test]
    fn the_byte_bound_sends_large_batches_to_the_inbox_and_frees_with_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        // Each item of `items("x", n)` is "x-i" plus the reason "test": 7 bytes.
        let holding = with_inbox(
            &path,
            HoldLimits {
                memory_bytes: 7 * 4,
                ..limits(1_000)
            },
        );
        holding.hold("o", items("a", 3), None);
        holding.hold("o", items("b", 2), None);
        holding.hold("o", items("c", 1), None);
        {
            let state = holding.state();
            let in_memory = kept_in_memory(&state);
            // 21 bytes fit; 21 + 14 do not (far below the item bound); 21 + 7 fit.
            assert_eq!(in_memory, [true, false, true]);
            assert_eq!((state.memory_items, state.memory_bytes), (4, 28));
        }
        assert!(holding.has_room(), "the inbox has room");
        let mut stored = Vec::new();
        while let Some(next) = holding.front() {
            let (seq, _, batch) = next.unwrap();
            stored.extend(tags(&batch));
            holding.committed(seq);
        }
        assert_eq!(stored, ["a-0", "a-1", "a-2", "b-0", "b-1", "c-0"]);
        let state = holding.state();
        assert_eq!(
            (state.memory_items, state.memory_bytes, state.items),
            (0, 0, 0)
        );
    }

    #[test]
    fn without_an_inbox_popping_pauses_at_the_byte_bound() {
        let holding = Holding::new(HoldLimits {
            memory_bytes: 7 * 3,
            ..limits(1_000)
        });
        holding.hold("o", items("a", 2), None);
        assert!(holding.has_room(), "14 of 21 bytes held");
        holding.hold("o", items("b", 2), None);
        assert!(!holding.has_room(), "28 bytes held, past the bound");
        assert_eq!(holding.memory_only_items(), 4, "nothing popped is dropped");
        holding.committed(1);
        assert!(holding.has_room());
    }

    #[test]
    fn with_an_inbox_batches_past_the_memory_bound_live_only_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        let holding = with_inbox(&path, limits(3));
        holding.hold("o", items("a", 3), None);
        holding.hold("o", items("b", 2), None);
        holding.hold("o", items("c", 1), None);
        {
            let state = holding.state();
            let in_memory = kept_in_memory(&state);
            // Exactly at the bound is still in memory; past it, on disk only.
            assert_eq!(in_memory, [true, false, false]);
            assert_eq!(state.memory_items, 3);
            assert_eq!(state.items, 6);
            assert!(state.inbox_len > 0);
        }
        assert_eq!(holding.memory_only_items(), 0);
        // The memory is full, the inbox has room.
        assert!(holding.has_room());
        holding.state().inbox_error = Some("disk full".into());
        assert!(!holding.has_room(), "an inbox that fails has no room");
        holding.state().inbox_error = None;
        let mut expected = Vec::new();
        while let Some(next) = holding.front() {
            let (seq, count, batch) = next.unwrap();
            expected.push((seq, count, tags(&batch)));
            holding.committed(seq);
        }
        assert_eq!(
            expected,
            [
                (1, 3, vec!["a-0".into(), "a-1".into(), "a-2".into()]),
                (2, 2, vec!["b-0".into(), "b-1".into()]),
                (3, 1, vec!["c-0".into()]),
            ]
        );
        assert_eq!(holding.state().memory_items, 0);
        assert_eq!(holding.state().inbox_len, 0, "the inbox is emptied");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn popping_pauses_when_the_inbox_reaches_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        let (inbox, recovery) = Inbox::open(&path).unwrap();
        let mut holding = Holding::with_inbox(limits(1), inbox, recovery);
        holding.hold("o", items("a", 1), None);
        holding.hold("o", items("b", 1), None);
        let len = holding.state().inbox_len;
        holding.limits.inbox_max_bytes = len + 1;
        assert!(holding.has_room());
        holding.limits.inbox_max_bytes = len;
        assert!(!holding.has_room());
    }

    #[test]
    fn the_inbox_bound_holds_while_memory_has_room() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        let (inbox, recovery) = Inbox::open(&path).unwrap();
        let mut holding = Holding::with_inbox(limits(1_000), inbox, recovery);
        holding.hold("o", items("a", 3), None);
        let len = holding.state().inbox_len;
        assert_eq!(holding.memory_only_items(), 0);
        assert_eq!(holding.state().memory_items, 3, "kept in memory too");
        holding.limits.inbox_max_bytes = len;
        // Memory has room for 997 more items, but each would be written to a full inbox.
        assert!(!holding.has_room());
        holding.limits.inbox_max_bytes = len + 1;
        assert!(holding.has_room());
        // A committed batch empties the inbox, and popping goes on.
        holding.limits.inbox_max_bytes = len;
        holding.committed(1);
        assert_eq!(holding.state().inbox_len, 0);
        assert!(holding.has_room());
    }

    #[test]
    fn what_a_previous_process_left_is_held_first_and_new_batches_follow_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        {
            let (mut inbox, _) = Inbox::open(&path).unwrap();
            inbox.append(7, 0, "o", &items("a", 1)).unwrap();
            inbox.append(8, 0, "o", &items("b", 3)).unwrap();
            inbox.append(9, 0, "o", &items("c", 2)).unwrap();
        }
        let holding = with_inbox(&path, limits(3));
        {
            let state = holding.state();
            let in_memory = kept_in_memory(&state);
            // 1 fits, 1 + 3 does not, 1 + 2 reaches the bound exactly.
            assert_eq!(in_memory, [true, false, true]);
            assert_eq!(state.memory_items, 3);
            assert_eq!(state.items, 6);
        }
        assert_eq!(holding.hold("o", items("d", 1), None), 10);
        let mut order = Vec::new();
        while let Some(next) = holding.front() {
            let (seq, _, batch) = next.unwrap();
            order.push((seq, tags(&batch)[0].clone()));
            holding.committed(seq);
        }
        assert_eq!(
            order,
            [
                (7, "a-0".to_string()),
                (8, "b-0".to_string()),
                (9, "c-0".to_string()),
                (10, "d-0".to_string())
            ]
        );
    }

    #[test]
    fn a_large_inbox_left_behind_is_held_within_the_memory_bounds_and_stored_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        {
            let (mut inbox, _) = Inbox::open(&path).unwrap();
            for seq in 1..=300u64 {
                inbox
                    .append_unsynced(seq, 0, "o", &items(&format!("{seq}"), 100))
                    .unwrap();
            }
        }
        let holding = with_inbox(&path, limits(250));
        {
            let state = holding.state();
            assert_eq!(state.items, 300 * 100);
            assert_eq!(state.memory_items, 200, "two batches fit in memory");
            assert_eq!(kept_in_memory(&state)[..3], [true, true, false]);
        }
        let mut next = 1u64;
        while let Some(front) = holding.front() {
            let (seq, count, batch) = front.unwrap();
            assert_eq!((seq, count), (next, 100));
            let expected: Vec<String> = (0..100).map(|index| format!("{seq}-{index}")).collect();
            assert_eq!(tags(&batch), expected);
            holding.committed(seq);
            next += 1;
        }
        assert_eq!(next, 301);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn the_first_attempt_uses_the_decoding_done_on_arrival() {
        let holding = Holding::new(limits(10));
        let first = holding.hold("o", items("a", 1), None);
        let second = holding.hold("o", items("b", 1), None);
        let decoded = |origin: &str| IngestBatch {
            origin: BatchOrigin::Collector(origin.to_string()),
            events: Vec::new(),
            dead_letters: Vec::new(),
        };
        holding.attach_decoded(second, decoded("second"));
        holding.attach_decoded(99, decoded("nobody"));
        let (_, _, batch) = holding.front().unwrap().unwrap();
        assert_eq!(batch.origin, BatchOrigin::Collector("o".into()));
        holding.committed(first);
        let (_, _, batch) = holding.front().unwrap().unwrap();
        assert_eq!(batch.origin, BatchOrigin::Collector("second".into()));
        // Taken once: a retry decodes the held items again.
        let (_, _, batch) = holding.front().unwrap().unwrap();
        assert_eq!(tags(&batch), ["b-0"]);
        // A batch that lives only on disk keeps no decoding.
        let dir = tempfile::tempdir().unwrap();
        let holding = with_inbox(&dir.path().join("inbox"), limits(0));
        let seq = holding.hold("o", items("c", 1), None);
        holding.attach_decoded(seq, decoded("kept"));
        let (_, _, batch) = holding.front().unwrap().unwrap();
        assert_eq!(batch.origin, BatchOrigin::Collector("o".into()));
    }

    #[test]
    fn batches_on_disk_are_found_again_after_the_inbox_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let holding = with_inbox(&dir.path().join("inbox"), limits(0));
        let big = "x".repeat(1024 * 1024);
        for index in 0..20 {
            holding.hold(
                "o",
                vec![RawItem::Invalid {
                    raw: format!("{index}-{big}"),
                    reason: "test".into(),
                }],
                None,
            );
        }
        let mut seen = Vec::new();
        while let Some(next) = holding.front() {
            let (seq, _, batch) = next.unwrap();
            let tag = tags(&batch)[0].split('-').next().unwrap().to_string();
            seen.push(tag);
            holding.committed(seq);
        }
        let expected: Vec<String> = (0..20).map(|index| index.to_string()).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn response_bytes_and_read_marks_reach_the_inbox() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        let holding = Arc::new(with_inbox(&path, limits(10)));
        holding.read_began(ReadKind::Pop, "http://cpa");
        Tap::new(holding.clone()).received(ResponseFormat::HttpQueue, b"[7, 8,");
        assert!(holding.state().inbox_len > 0);
        holding.read_ended();
        assert_eq!(
            holding.state().inbox_len,
            0,
            "a read that held nothing is cut off"
        );
        holding.read_began(ReadKind::Pop, "http://cpa");
        Tap::new(holding.clone()).received(ResponseFormat::HttpQueue, b"[7, 8,");
        // The process stops here.
        drop(holding);
        let (_, recovery) = Inbox::open(&path).unwrap();
        assert_eq!(recovery.held_items(), 2);
        assert!(recovery.interrupted_read_at_ms.is_some());
        // Without an inbox a tap writes nowhere.
        Tap::default().received(ResponseFormat::HttpQueue, b"[");
    }

    #[tokio::test]
    async fn waiting_for_room_ends_when_a_batch_is_committed_or_at_stop() {
        let holding = Arc::new(Holding::new(limits(1)));
        holding.hold("o", items("a", 1), None);
        let (stop, stop_rx) = watch::channel(false);
        let waiter = {
            let holding = holding.clone();
            let mut stop_rx = stop_rx.clone();
            tokio::spawn(async move { holding.wait_for_room(&mut stop_rx).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "room while the bound is reached");
        holding.committed(1);
        assert!(within("room", waiter).await.unwrap());
        holding.hold("o", items("b", 1), None);
        let waiter = {
            let holding = holding.clone();
            let mut stop_rx = stop_rx.clone();
            tokio::spawn(async move { holding.wait_for_room(&mut stop_rx).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.send(true).unwrap();
        assert!(!within("the stop", waiter).await.unwrap());
    }

    #[tokio::test]
    async fn the_committer_stores_in_order_and_retries_with_a_doubling_wait() {
        let holding = Arc::new(Holding::new(limits(100)));
        let status = StatusHandle::new("http", "usage");
        let sink = Sink::failing(3);
        let (finish, task) = committer(&sink, &holding, &status);
        holding.hold("o", items("a", 2), None);
        until("a refusal", || !status.snapshot().store_error.is_empty()).await;
        assert_eq!(status.snapshot().held_items, 2);
        holding.hold("o", items("b", 1), None);
        until("both batches", || sink.stored().len() == 2).await;
        assert_eq!(
            sink.stored(),
            [
                vec!["a-0".to_string(), "a-1".into()],
                vec!["b-0".to_string()]
            ]
        );
        let attempts = sink.attempts();
        assert_eq!(
            attempts.len(),
            5,
            "three refusals, then one attempt per batch"
        );
        let waits: Vec<Duration> = attempts.windows(2).map(|pair| pair[1] - pair[0]).collect();
        // 40 ms, doubled to 80, then capped at 100.
        for (wait, least) in waits.iter().zip([40, 80, 100]) {
            assert!(
                *wait >= Duration::from_millis(least),
                "waits {waits:?}: less than {least} ms"
            );
        }
        let snapshot = status.snapshot();
        assert!(snapshot.store_error.is_empty());
        assert_eq!((snapshot.held_items, snapshot.total_dead_lettered), (0, 3));
        finish.send(Some(Duration::from_secs(1))).unwrap();
        assert_eq!(
            within("the committer", task).await.unwrap(),
            None,
            "nothing left at shutdown"
        );
    }

    #[tokio::test]
    async fn at_shutdown_the_committer_gives_up_after_the_grace_and_says_what_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let holding = Arc::new(with_inbox(&dir.path().join("inbox"), limits(100)));
        let status = StatusHandle::new("http", "usage");
        let sink = Sink::failing(usize::MAX);
        holding.hold("o", items("a", 2), None);
        // One batch the inbox could not take (it lives in memory only).
        {
            let mut state = holding.state();
            let seq = state.next_seq;
            state.next_seq += 1;
            state.items += 1;
            state.memory_items += 1;
            state.memory_bytes += 7;
            state.entries.push_back(Entry {
                seq,
                origin: "o".into(),
                count: 1,
                bytes: 7,
                items: Some(items("m", 1)),
                decoded: None,
                location: None,
            });
        }
        let (finish, task) = committer(&sink, &holding, &status);
        until("a refusal", || !sink.attempts().is_empty()).await;
        let grace = Duration::from_millis(300);
        let asked = StdInstant::now();
        finish.send(Some(grace)).unwrap();
        let left = within("the committer", task).await.unwrap();
        assert!(
            asked.elapsed() >= grace,
            "gave up after {:?}",
            asked.elapsed()
        );
        assert_eq!(
            left,
            Some(Unstored {
                in_inbox: 2,
                memory_only: 1
            })
        );
        assert_eq!(holding.held_items(), 3, "nothing is dropped");
        let report = left.unwrap().report();
        assert_eq!(report.len(), 2);
        assert!(!report[0].0 && report[0].1.contains("2 received events stay in the inbox"));
        assert!(report[1].0 && report[1].1.starts_with("1 events received from CPA"));
        let only_inbox = Unstored {
            in_inbox: 1,
            memory_only: 0,
        };
        assert_eq!(only_inbox.report().len(), 1);
        assert!(!only_inbox.report()[0].0);
        let nothing = Unstored {
            in_inbox: 0,
            memory_only: 0,
        };
        assert!(nothing.report().is_empty());
        assert!(sink.stored().is_empty());
    }

    #[tokio::test]
    async fn at_shutdown_a_store_that_recovers_within_the_grace_gets_everything() {
        let holding = Arc::new(Holding::new(limits(100)));
        let status = StatusHandle::new("http", "usage");
        let sink = Sink::failing(2);
        let (finish, task) = committer(&sink, &holding, &status);
        finish.send(Some(Duration::from_secs(5))).unwrap();
        holding.hold("o", items("a", 1), None);
        holding.hold("o", items("b", 1), None);
        assert_eq!(within("the committer", task).await.unwrap(), None);
        assert_eq!(
            sink.stored(),
            [vec!["a-0".to_string()], vec!["b-0".to_string()]]
        );
    }
}
