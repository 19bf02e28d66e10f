//! CPA's in-memory usage queue: FIFO with lazy retention pruning, the publishing switch,
//! and pub/sub subscribers that bypass the queue and are dropped when 256 messages behind.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

/// Messages a subscriber may have buffered before CPA drops it.
pub const SUBSCRIBER_BUFFER: usize = 256;

/// The first message of every `usage` subscription on CPA v7.1.39+.
pub const SUPPORT_REFRESH: &[u8] = br#"{"support_refresh":true}"#;

/// Broadcast to usage subscribers whenever CPA reloads credentials.
pub const REFRESH: &[u8] = br#"{"refresh":true}"#;

pub(crate) struct UsageQueue {
    inner: Mutex<QueueState>,
}

struct QueueState {
    items: VecDeque<(Instant, Bytes)>,
    retention: Duration,
    publishing: bool,
    subscribers: Vec<(u64, mpsc::Sender<Bytes>)>,
    next_subscriber_id: u64,
    dropped_subscribers: u64,
    lost_events: u64,
    undelivered: u64,
}

impl UsageQueue {
    pub(crate) fn new(retention: Duration, publishing: bool) -> UsageQueue {
        UsageQueue {
            inner: Mutex::new(QueueState {
                items: VecDeque::new(),
                retention,
                publishing,
                subscribers: Vec::new(),
                next_subscriber_id: 1,
                dropped_subscribers: 0,
                lost_events: 0,
                undelivered: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // A panic while holding this lock can only come from a bug in this file; keep serving.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands one finished attempt to the queue, as CPA's usage plugin does.
    /// Returns false when the event was not kept anywhere (publishing off, or lost to
    /// an overflowing sole subscriber).
    pub(crate) fn publish(&self, payload: Bytes) -> bool {
        let mut state = self.state();
        if !state.publishing || payload.is_empty() {
            return false;
        }
        if state.subscribers.is_empty() {
            let now = Instant::now();
            state.prune(now);
            state.items.push_back((now, payload));
            return true;
        }
        // While anyone is subscribed nothing is queued: every subscriber gets the message,
        // and a subscriber whose buffer is full is removed (its buffered messages are still
        // flushed by its writer, then the connection closes).
        let mut delivered = false;
        let mut dropped = 0;
        state
            .subscribers
            .retain(|(_, sender)| match sender.try_send(payload.clone()) {
                Ok(()) => {
                    delivered = true;
                    true
                }
                Err(_) => {
                    dropped += 1;
                    false
                }
            });
        state.dropped_subscribers += dropped;
        if !delivered {
            state.lost_events += 1;
        }
        delivered
    }

    pub(crate) fn pop(&self, count: usize) -> Vec<Bytes> {
        let mut state = self.state();
        state.prune(Instant::now());
        let take = count.min(state.items.len());
        state
            .items
            .drain(..take)
            .map(|(_, payload)| payload)
            .collect()
    }

    /// Registers a subscriber. `{"support_refresh":true}` is placed in its buffer first.
    pub(crate) fn subscribe(&self, support_refresh: bool) -> (u64, mpsc::Receiver<Bytes>) {
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
        if support_refresh {
            // The channel is new and empty, so this cannot fail.
            let _ = sender.try_send(Bytes::from_static(SUPPORT_REFRESH));
        }
        let mut state = self.state();
        let id = state.next_subscriber_id;
        state.next_subscriber_id += 1;
        state.subscribers.push((id, sender));
        (id, receiver)
    }

    pub(crate) fn unsubscribe(&self, id: u64) {
        self.state()
            .subscribers
            .retain(|(subscriber, _)| *subscriber != id);
    }

    pub(crate) fn broadcast_refresh(&self) {
        let mut state = self.state();
        let mut dropped = 0;
        state.subscribers.retain(|(_, sender)| {
            let kept = sender.try_send(Bytes::from_static(REFRESH)).is_ok();
            if !kept {
                dropped += 1;
            }
            kept
        });
        state.dropped_subscribers += dropped;
    }

    /// Clears everything, as a CPA restart or a disabled queue does.
    pub(crate) fn clear(&self) {
        let mut state = self.state();
        state.items.clear();
        state.subscribers.clear();
    }

    pub(crate) fn len(&self) -> usize {
        let mut state = self.state();
        state.prune(Instant::now());
        state.items.len()
    }

    pub(crate) fn subscriber_count(&self) -> usize {
        let mut state = self.state();
        state.subscribers.retain(|(_, sender)| !sender.is_closed());
        state.subscribers.len()
    }

    /// Messages waiting in the fullest subscriber buffer.
    pub(crate) fn fullest_subscriber(&self) -> usize {
        let state = self.state();
        state
            .subscribers
            .iter()
            .map(|(_, sender)| SUBSCRIBER_BUFFER - sender.capacity())
            .max()
            .unwrap_or(0)
    }

    pub(crate) fn dropped_subscribers(&self) -> u64 {
        self.state().dropped_subscribers
    }

    pub(crate) fn lost_events(&self) -> u64 {
        self.state().lost_events
    }

    /// Counts messages handed to a subscriber whose connection ended before they were
    /// written to it.
    pub(crate) fn count_undelivered(&self, count: u64) {
        self.state().undelivered += count;
    }

    pub(crate) fn undelivered(&self) -> u64 {
        self.state().undelivered
    }

    pub(crate) fn publishing(&self) -> bool {
        self.state().publishing
    }

    pub(crate) fn set_publishing(&self, enabled: bool) {
        self.state().publishing = enabled;
    }

    pub(crate) fn retention(&self) -> Duration {
        self.state().retention
    }

    pub(crate) fn set_retention(&self, retention: Duration) {
        self.state().retention = retention;
    }
}

/// CPA's `errors` channel (v7.1.44+): pub/sub only, never queued, no opening control
/// message, and the same 256-message drop rule as usage subscribers.
pub(crate) struct ErrorChannel {
    inner: Mutex<ErrorState>,
}

#[derive(Default)]
struct ErrorState {
    subscribers: Vec<(u64, mpsc::Sender<Bytes>)>,
    next_subscriber_id: u64,
    published: u64,
    discarded: u64,
}

impl ErrorChannel {
    pub(crate) fn new() -> ErrorChannel {
        ErrorChannel {
            inner: Mutex::new(ErrorState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ErrorState> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends one error event to every subscriber; with none it is discarded, as CPA does.
    pub(crate) fn publish(&self, payload: Bytes) -> bool {
        let mut state = self.state();
        state.published += 1;
        let mut delivered = false;
        state
            .subscribers
            .retain(|(_, sender)| match sender.try_send(payload.clone()) {
                Ok(()) => {
                    delivered = true;
                    true
                }
                Err(_) => false,
            });
        if !delivered {
            state.discarded += 1;
        }
        delivered
    }

    pub(crate) fn subscribe(&self) -> (u64, mpsc::Receiver<Bytes>) {
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
        let mut state = self.state();
        state.next_subscriber_id += 1;
        let id = state.next_subscriber_id;
        state.subscribers.push((id, sender));
        (id, receiver)
    }

    pub(crate) fn unsubscribe(&self, id: u64) {
        self.state()
            .subscribers
            .retain(|(subscriber, _)| *subscriber != id);
    }

    pub(crate) fn subscriber_count(&self) -> usize {
        let mut state = self.state();
        state.subscribers.retain(|(_, sender)| !sender.is_closed());
        state.subscribers.len()
    }

    /// Error events that reached no subscriber.
    pub(crate) fn discarded(&self) -> u64 {
        self.state().discarded
    }

    pub(crate) fn clear(&self) {
        self.state().subscribers.clear();
    }
}

impl QueueState {
    /// Lazy expiry: CPA drops old items from the head only when something is enqueued or popped.
    fn prune(&mut self, now: Instant) {
        while let Some((enqueued_at, _)) = self.items.front() {
            if now.duration_since(*enqueued_at) > self.retention {
                self.items.pop_front();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn pops_oldest_first_and_prunes_expired_items() {
        let queue = UsageQueue::new(Duration::from_millis(50), true);
        queue.publish(Bytes::from_static(b"a"));
        queue.publish(Bytes::from_static(b"b"));
        assert_eq!(queue.pop(1), vec![Bytes::from_static(b"a")]);
        std::thread::sleep(Duration::from_millis(80));
        queue.publish(Bytes::from_static(b"c"));
        assert_eq!(queue.pop(10), vec![Bytes::from_static(b"c")]);
    }

    #[test]
    fn subscribers_bypass_the_queue_and_are_dropped_when_full() {
        let queue = UsageQueue::new(Duration::from_secs(60), true);
        let (_id, mut receiver) = queue.subscribe(true);
        // One slot holds support_refresh, so 255 events fit and the 256th overflows.
        for index in 0..SUBSCRIBER_BUFFER {
            queue.publish(Bytes::from(format!("{index}")));
        }
        assert_eq!(queue.len(), 0, "nothing is queued while subscribed");
        assert_eq!(queue.dropped_subscribers(), 1);
        assert_eq!(queue.lost_events(), 1);
        let mut received = 0;
        while receiver.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, SUBSCRIBER_BUFFER);
        queue.publish(Bytes::from_static(b"after"));
        assert_eq!(queue.len(), 1, "with no subscriber left events queue again");
    }

    #[test]
    fn publishing_off_keeps_queued_items() {
        let queue = UsageQueue::new(Duration::from_secs(60), true);
        queue.publish(Bytes::from_static(b"a"));
        queue.set_publishing(false);
        assert!(!queue.publish(Bytes::from_static(b"b")));
        assert_eq!(queue.pop(10).len(), 1);
    }
}
