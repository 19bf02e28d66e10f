//! The collector: owns one run at a time, chooses transports by mode (server-core §4.2),
//! paces polls, backs off on errors and never lets go of a batch it received before the
//! store committed it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cpamp_domain::decode::decode;
use cpamp_domain::event::{DeadLetter, Decoded};
use cpamp_domain::ports::{BatchOrigin, EventSink, IngestBatch};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::http::{HttpQueue, ManagementClient};
use crate::resp::{RespPop, RespSubscription};
use crate::settings::{BackoffPolicy, CollectorSettings, Mode, normalize_upstream};
use crate::source::{ErrorKind, RawItem, SourceError, Transport, UsageSource};
use crate::status::{CollectorState, StatusHandle, replace_warning, set_warning};

const AUTH_REJECTED_WARNING: &str = "CPA rejected the management key. Collection is paused so that retries do not get \
this server's IP banned by CPA (five failed logins ban an IP for 30 minutes); save the correct CPA Management Key to \
resume.";
const OTHER_CONSUMER_PREFIX: &str = "Another consumer is probably draining";
const PUBLISHING_OFF_WARNING: &str = "CPA's usage publishing is off (usage-statistics-enabled is false), so CPA \
produces no usage events; enable it in CPA or through setup.";

/// Runs collection against one CPA at a time. Cheap to clone; clones control the same run.
pub struct Collector<S: EventSink> {
    sink: S,
    status: StatusHandle,
    current: std::sync::Arc<tokio::sync::Mutex<Option<Run>>>,
}

impl<S: EventSink> Clone for Collector<S> {
    fn clone(&self) -> Collector<S> {
        Collector {
            sink: self.sink.clone(),
            status: self.status.clone(),
            current: self.current.clone(),
        }
    }
}

struct Run {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Run {
    /// Asks the run to stop taking events and waits until it committed what it holds.
    async fn finish(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "collector run ended abnormally");
        }
    }
}

impl<S: EventSink> Collector<S> {
    /// A stopped collector that will store into `sink` and report through `status`.
    pub fn new(sink: S, status: StatusHandle) -> Collector<S> {
        Collector {
            sink,
            status,
            current: Default::default(),
        }
    }

    /// The live status this collector reports to (`/status` `collector.*`).
    pub fn status(&self) -> &StatusHandle {
        &self.status
    }

    /// Starts collecting; an existing run is stopped and joined first.
    pub async fn start(&self, settings: CollectorSettings) {
        self.restart(settings).await;
    }

    /// Stops the current run (committing what it holds), then starts one with `settings`.
    /// Two runs never pop concurrently.
    pub async fn restart(&self, mut settings: CollectorSettings) {
        let mut current = self.current.lock().await;
        if let Some(run) = current.take() {
            run.finish().await;
        }
        settings.upstream = normalize_upstream(&settings.upstream);
        settings.batch_size = settings.batch_size.max(1);
        self.status.update(|status| {
            status.state = CollectorState::Starting;
            status.upstream = settings.upstream.clone();
            status.mode = settings.mode.as_str().to_string();
            status.transport.clear();
            status.queue = settings.queue.clone();
            status.last_error.clear();
            status.fallback_reason.clear();
            status.auth_rejected = false;
            status.pending_items = 0;
            status.consecutive_empty_polls = 0;
            status.support_refresh = false;
            status.warnings.clear();
        });
        let (stop, stop_rx) = watch::channel(false);
        let context = RunContext {
            sink: self.sink.clone(),
            status: self.status.clone(),
            settings,
            stop: stop_rx,
            commits: None,
        };
        let task = tokio::spawn(context.run());
        *current = Some(Run { stop, task });
    }

    /// Stops taking events, commits what was received, and returns; state `stopped`.
    pub async fn stop(&self) {
        let mut current = self.current.lock().await;
        if let Some(run) = current.take() {
            run.finish().await;
        }
        self.status
            .update(|status| status.state = CollectorState::Stopped);
    }

    /// For process shutdown (SIGTERM): the same as [`Collector::stop`].
    pub async fn shutdown(&self) {
        self.stop().await;
    }
}

enum Outcome {
    Stopped,
    /// `auto` moves on to the next transport.
    Fallback(SourceError),
}

struct RunContext<S> {
    sink: S,
    status: StatusHandle,
    settings: CollectorSettings,
    stop: watch::Receiver<bool>,
    /// Batches handed to the committer; `None` until the run starts.
    commits: Option<mpsc::Sender<Received>>,
}

/// A batch taken from CPA: the raw items (kept for retries) and their first decoding.
struct Received {
    items: Vec<RawItem>,
    decoded: DecodedItems,
}

impl<S: EventSink> RunContext<S> {
    async fn run(mut self) {
        tracing::info!(upstream = %self.settings.upstream, mode = self.settings.mode.as_str(), "collector starting");
        // Storing runs beside taking and decoding: while one batch commits, the next is
        // popped and decoded. The channel holds one batch, so at most three batches are
        // held in memory, and when storing fails popping stops after at most two more.
        let (commits, received) = mpsc::channel(1);
        self.commits = Some(commits);
        let committer = tokio::spawn(
            Committer {
                sink: self.sink.clone(),
                status: self.status.clone(),
                settings: self.settings.clone(),
                stop: self.stop.clone(),
            }
            .run(received),
        );
        self.transports().await;
        // Closing the channel lets the committer finish what it holds, then end.
        self.commits = None;
        if let Err(error) = committer.await {
            tracing::error!(%error, "collector committer ended abnormally");
        }
        tracing::info!("collector run finished");
    }

    async fn transports(&mut self) {
        match self.settings.mode {
            Mode::Subscribe => {
                self.subscribe(false).await;
            }
            Mode::Http => {
                let mut source = HttpQueue::new(&self.settings);
                self.poll(&mut source, false).await;
            }
            Mode::Resp => {
                let mut source = RespPop::new(self.settings.clone());
                self.poll(&mut source, false).await;
            }
            Mode::Auto => {
                if let Outcome::Fallback(error) = self.subscribe(true).await {
                    tracing::info!(%error, "SUBSCRIBE unavailable; falling back to the HTTP queue");
                    self.fall_back(Transport::Http, &error);
                    let mut source = HttpQueue::new(&self.settings);
                    if let Outcome::Fallback(error) = self.poll(&mut source, true).await {
                        tracing::info!(%error, "HTTP queue unavailable; falling back to RESP pop");
                        self.fall_back(Transport::Resp, &error);
                        let mut source = RespPop::new(self.settings.clone());
                        self.poll(&mut source, false).await;
                    }
                }
            }
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps unless asked to stop first; returns true when stopping.
    async fn sleep(&self, duration: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(duration) => self.stopping(),
            _ = stop.wait_for(|stopping| *stopping) => true,
        }
    }

    fn fall_back(&self, transport: Transport, error: &SourceError) {
        self.status.update(|status| {
            status.state = CollectorState::Starting;
            status.transport = transport.as_str().to_string();
            status.last_error.clear();
            status.fallback_reason = error.to_string();
        });
    }

    fn running(&self, transport: Transport) {
        self.status.update(|status| {
            status.state = CollectorState::Running;
            status.transport = transport.as_str().to_string();
            status.last_error.clear();
        });
    }

    fn failed(&self, transport: Transport, error: &SourceError) {
        tracing::warn!(transport = transport.as_str(), %error, "collector error");
        self.status.update(|status| {
            status.state = CollectorState::Error;
            status.transport = transport.as_str().to_string();
            status.last_error = error.to_string();
        });
    }

    /// A rejected key is not retried: every retry would be one more failed login.
    async fn park(&self, transport: Transport, error: SourceError) -> Outcome {
        tracing::error!(%error, "CPA rejected the management key; collection paused until the settings change");
        self.status.update(|status| {
            status.state = CollectorState::Error;
            status.transport = transport.as_str().to_string();
            status.last_error = error.to_string();
            status.auth_rejected = true;
            set_warning(&mut status.warnings, AUTH_REJECTED_WARNING, true);
        });
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|stopping| *stopping).await;
        Outcome::Stopped
    }

    /// HTTP queue or RESP pop: full speed while items come, `poll_interval` when empty.
    async fn poll<Src: UsageSource>(
        &mut self,
        source: &mut Src,
        fallback_on_unsupported: bool,
    ) -> Outcome {
        let transport = source.transport();
        let mut backoff = Backoff::new(self.settings.backoff);
        let mut watch = ConsumerWatch::new(&self.settings);
        loop {
            if self.stopping() {
                return Outcome::Stopped;
            }
            // A pop is never cancelled midway: CPA may already have removed the items.
            match source.next_batch(self.settings.batch_size).await {
                Ok(items) => {
                    // The Go manager never reset its HTTP backoff; recover at full speed instead.
                    backoff.reset();
                    self.running(transport);
                    let empty = items.is_empty();
                    self.status.update(|status| {
                        status.auth_rejected = false;
                        status.consecutive_empty_polls = if empty {
                            status.consecutive_empty_polls + 1
                        } else {
                            0
                        };
                    });
                    if empty {
                        watch.check(&self.status, &self.settings.queue).await;
                        if self.sleep(self.settings.poll_interval).await {
                            return Outcome::Stopped;
                        }
                        continue;
                    }
                    watch.received(items.len());
                    if !self.deliver(items).await {
                        return Outcome::Stopped;
                    }
                    watch.check(&self.status, &self.settings.queue).await;
                }
                Err(error) => match error.kind {
                    ErrorKind::AuthRejected => return self.park(transport, error).await,
                    ErrorKind::Unsupported if fallback_on_unsupported => {
                        return Outcome::Fallback(error);
                    }
                    _ => {
                        self.failed(transport, &error);
                        if self.sleep(backoff.next()).await {
                            return Outcome::Stopped;
                        }
                    }
                },
            }
        }
    }

    /// SUBSCRIBE, then drain what CPA queued while nobody was subscribed, then stream.
    async fn subscribe(&mut self, auto: bool) -> Outcome {
        let mut backoff = Backoff::new(self.settings.backoff);
        let mut subscribed_once = false;
        loop {
            if self.stopping() {
                return Outcome::Stopped;
            }
            let mut subscription = match RespSubscription::open(&self.settings).await {
                Ok(subscription) => subscription,
                Err(error) if error.kind == ErrorKind::AuthRejected => {
                    return self.park(Transport::Subscribe, error).await;
                }
                Err(error) if auto && !subscribed_once => return Outcome::Fallback(error),
                Err(error) => {
                    self.failed(Transport::Subscribe, &error);
                    if self.sleep(backoff.next()).await {
                        return Outcome::Stopped;
                    }
                    continue;
                }
            };
            subscribed_once = true;
            backoff.reset();
            self.running(Transport::Subscribe);
            // Subscribing first means new events now reach us; popping afterwards picks up
            // what CPA queued before, so a reconnect or a transport switch loses nothing
            // CPA still holds.
            if !self.drain_queue().await {
                let rest = subscription.close().await;
                self.deliver(rest).await;
                return Outcome::Stopped;
            }
            loop {
                let mut stop = self.stop.clone();
                let next = tokio::select! {
                    batch = subscription.next_batch(self.settings.batch_size) => Some(batch),
                    _ = stop.wait_for(|stopping| *stopping) => None,
                };
                match next {
                    None => {
                        let rest = subscription.close().await;
                        self.deliver(rest).await;
                        return Outcome::Stopped;
                    }
                    Some(Ok(items)) => {
                        if !self.deliver(items).await {
                            return Outcome::Stopped;
                        }
                    }
                    Some(Err(error)) => {
                        self.failed(Transport::Subscribe, &error);
                        drop(subscription);
                        if self.sleep(backoff.next()).await {
                            return Outcome::Stopped;
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Pops until CPA's queue is empty. Returns false when stopping.
    async fn drain_queue(&mut self) -> bool {
        let mut pop = RespPop::new(self.settings.clone());
        loop {
            if self.stopping() {
                return false;
            }
            match pop.next_batch(self.settings.batch_size).await {
                Ok(items) if items.is_empty() => return true,
                Ok(items) => {
                    if !self.deliver(items).await {
                        return false;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "could not drain CPA's queue after subscribing");
                    return true;
                }
            }
        }
    }

    /// Hands one received batch to the committer, decoding it on the way. Waits while the
    /// committer is busy, so nothing new is popped while a batch cannot be stored. Returns
    /// false when the committer has ended (it gave up during shutdown).
    async fn deliver(&self, items: Vec<RawItem>) -> bool {
        if items.is_empty() {
            return true;
        }
        let count = items.len();
        self.status.update(|status| {
            status.last_consumed_at_ms = now_ms();
            status.total_consumed += count as u64;
        });
        let decoded = decode_items(&items, &self.settings.upstream);
        for _ in 0..decoded.refreshes {
            self.status.refreshed();
        }
        if decoded.support_refresh {
            self.status.update(|status| status.support_refresh = true);
        }
        match &self.commits {
            Some(commits) => commits.send(Received { items, decoded }).await.is_ok(),
            None => false,
        }
    }
}

/// Stores received batches in order, each in one transaction, retrying a refused batch
/// until the store commits it.
struct Committer<S> {
    sink: S,
    status: StatusHandle,
    settings: CollectorSettings,
    stop: watch::Receiver<bool>,
}

impl<S: EventSink> Committer<S> {
    async fn run(self, mut received: mpsc::Receiver<Received>) {
        while let Some(batch) = received.recv().await {
            if !self.commit(batch).await {
                // Shutdown with a store that still refuses writes: the rest cannot be stored.
                let mut lost = 0;
                while let Ok(batch) = received.try_recv() {
                    lost += batch.items.len();
                }
                if lost > 0 {
                    tracing::error!(
                        items = lost,
                        "batches received from CPA could not be stored before shutdown"
                    );
                }
                return;
            }
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Returns false only if the run is stopping and the store still refused the batch
    /// after `shutdown_grace`.
    async fn commit(&self, received: Received) -> bool {
        let Received { items, decoded } = received;
        let count = items.len();
        let mut batch = Some(decoded.batch);
        let mut backoff = Backoff::new(self.settings.backoff);
        let mut give_up_at: Option<Instant> = None;
        loop {
            // The first attempt uses the decoding done while popping; retries decode the
            // kept raw items again (the store consumed the previous attempt's batch).
            let attempt = batch
                .take()
                .unwrap_or_else(|| decode_items(&items, &self.settings.upstream).batch);
            match self.sink.store_batch(attempt).await {
                Ok(outcome) => {
                    self.status.update(|status| {
                        status.total_inserted += outcome.inserted;
                        status.total_skipped += outcome.skipped;
                        status.total_dead_lettered += outcome.dead_lettered;
                        if outcome.inserted + outcome.skipped > 0 {
                            status.last_inserted_at_ms = now_ms();
                        }
                        status.pending_items = 0;
                        if status.last_error.starts_with("consume: ") {
                            status.last_error.clear();
                            status.state = CollectorState::Running;
                        }
                    });
                    return true;
                }
                Err(error) => {
                    tracing::warn!(%error, items = count, "storing a batch failed; keeping it and retrying");
                    self.status.update(|status| {
                        status.state = CollectorState::Error;
                        status.last_error = format!("consume: {error}");
                        status.pending_items = count;
                    });
                    let wait = backoff.next();
                    if self.stopping() {
                        let deadline = *give_up_at
                            .get_or_insert_with(|| Instant::now() + self.settings.shutdown_grace);
                        let now = Instant::now();
                        if now >= deadline {
                            tracing::error!(items = count, %error, "giving up on a batch the store refused during shutdown");
                            return false;
                        }
                        tokio::time::sleep(wait.min(deadline - now)).await;
                    } else {
                        // A stop request cuts the wait short; the batch is retried at once.
                        let mut stop = self.stop.clone();
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = stop.wait_for(|stopping| *stopping) => {}
                        }
                    }
                }
            }
        }
    }
}

struct DecodedItems {
    batch: IngestBatch,
    refreshes: u64,
    support_refresh: bool,
}

fn decode_items(items: &[RawItem], origin: &str) -> DecodedItems {
    let now = now_ms();
    let mut decoded = DecodedItems {
        batch: IngestBatch {
            origin: BatchOrigin::Collector(origin.to_string()),
            events: Vec::with_capacity(items.len()),
            dead_letters: Vec::new(),
        },
        refreshes: 0,
        support_refresh: false,
    };
    for item in items {
        match item {
            // CPA sends its two control messages as exactly these compact bytes; they belong
            // to the subscription protocol, so they are recognised here. Any other shape is
            // left to the domain decoder, which applies the general rule.
            RawItem::Payload(payload) if payload.as_ref() == br#"{"refresh":true}"# => {
                decoded.refreshes += 1
            }
            RawItem::Payload(payload) if payload.as_ref() == br#"{"support_refresh":true}"# => {
                decoded.support_refresh = true;
            }
            RawItem::Payload(payload) => match decode(payload, now) {
                Decoded::Event(event) => decoded.batch.events.push(*event),
                Decoded::Dead(dead) => decoded.batch.dead_letters.push(dead),
                Decoded::Refresh => decoded.refreshes += 1,
                Decoded::SupportRefresh => decoded.support_refresh = true,
                Decoded::Blank => {}
            },
            RawItem::Invalid { raw, reason } => decoded.batch.dead_letters.push(DeadLetter {
                payload: raw.clone(),
                reason: reason.clone(),
                created_at_ms: now,
            }),
        }
    }
    decoded
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

/// 1 s doubling to 30 s by default; `reset` after every success.
struct Backoff {
    policy: BackoffPolicy,
    next: Duration,
}

impl Backoff {
    fn new(policy: BackoffPolicy) -> Backoff {
        Backoff {
            policy,
            next: policy.initial,
        }
    }

    fn next(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.policy.max);
        wait
    }

    fn reset(&mut self) {
        self.next = self.policy.initial;
    }
}

/// Detects another consumer in pop modes: CPA's per-credential request counters
/// (`GET auth-files`) keep rising while few or no events reach this collector.
/// Credentials defined in CPA's config.yaml have no auth file, so their traffic is not
/// counted and the check can miss a second consumer; it never raises a false alarm
/// from them.
struct ConsumerWatch {
    client: ManagementClient,
    interval: Duration,
    last_check: Instant,
    baseline: Option<u64>,
    received: u64,
    enabled: bool,
}

impl ConsumerWatch {
    fn new(settings: &CollectorSettings) -> ConsumerWatch {
        ConsumerWatch {
            client: ManagementClient::new(settings),
            interval: settings.consumer_check_interval,
            last_check: Instant::now(),
            baseline: None,
            received: 0,
            enabled: !settings.consumer_check_interval.is_zero(),
        }
    }

    fn received(&mut self, count: usize) {
        self.received += count as u64;
    }

    /// Called only after CPA accepted the key in this run, so it cannot add failed logins.
    async fn check(&mut self, status: &StatusHandle, queue: &str) {
        if !self.enabled || self.last_check.elapsed() < self.interval {
            return;
        }
        self.last_check = Instant::now();
        if let Ok(reply) = self
            .client
            .get("/v0/management/usage-statistics-enabled")
            .await
            && reply.status.is_success()
            && let Ok(value) = serde_json::from_slice::<serde_json::Value>(&reply.body)
        {
            let off = value
                .get("usage-statistics-enabled")
                .and_then(serde_json::Value::as_bool)
                == Some(false);
            status.update(|status| set_warning(&mut status.warnings, PUBLISHING_OFF_WARNING, off));
        }
        let total = match self.client.get("/v0/management/auth-files").await {
            Ok(reply) if reply.status.is_success() => match request_total(&reply.body) {
                Some(total) => total,
                None => return,
            },
            Ok(reply) if reply.status.as_u16() == 401 => {
                self.enabled = false;
                return;
            }
            _ => return,
        };
        if let Some(baseline) = self.baseline {
            let counted = total.saturating_sub(baseline);
            let warning = (counted >= 5 && self.received.saturating_mul(2) < counted).then(|| {
                format!(
                    "{OTHER_CONSUMER_PREFIX} CPA's queue `{queue}`: CPA counted {counted} requests in the last {} s \
                     but only {} usage events reached this collector. Stop the other manager or Redis client popping \
                     this CPA (only one consumer per CPA), or check that usage publishing is on.",
                    self.interval.as_secs().max(1),
                    self.received
                )
            });
            status.update(|status| {
                replace_warning(&mut status.warnings, OTHER_CONSUMER_PREFIX, warning)
            });
        }
        self.baseline = Some(total);
        self.received = 0;
    }
}

/// Sum of `success + failed` over CPA's auth files.
fn request_total(body: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let files = value.get("files")?.as_array()?;
    Some(
        files
            .iter()
            .map(|file| {
                file.get("success")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0)
                    + file
                        .get("failed")
                        .and_then(serde_json::Value::as_u64)
                        .unwrap_or(0)
            })
            .sum(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut backoff = Backoff::new(BackoffPolicy::default());
        let waits: Vec<u64> = (0..7).map(|_| backoff.next().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        backoff.reset();
        assert_eq!(backoff.next().as_secs(), 1);
    }

    #[test]
    fn invalid_items_become_dead_letters() {
        let items = vec![RawItem::Invalid {
            raw: "7".into(),
            reason: "unexpected usage queue item 7".into(),
        }];
        let decoded = decode_items(&items, "http://cpa");
        assert_eq!(decoded.batch.dead_letters.len(), 1);
        assert_eq!(decoded.batch.dead_letters[0].payload, "7");
        assert_eq!(
            decoded.batch.origin,
            BatchOrigin::Collector("http://cpa".into())
        );
    }
}
