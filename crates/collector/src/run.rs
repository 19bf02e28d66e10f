//! The collector: owns one run at a time, chooses transports by mode (server-core §4.2),
//! paces polls, backs off on errors and never lets go of a batch it received before the
//! store committed it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cpamp_domain::decode::decode;
use cpamp_domain::event::{DeadLetter, Decoded};
use cpamp_domain::ports::{BatchOrigin, EventSink, IngestBatch};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::holding::{Committer, HoldLimits, Holding, Tap};
use crate::http::{HttpQueue, ManagementClient};
use crate::inbox::{Inbox, ReadKind, Recovery};
use crate::resp::{RespPop, RespSubscription};
use crate::settings::{BackoffPolicy, CollectorSettings, Mode, normalize_upstream};
use crate::source::{ErrorKind, RawItem, SourceError, Transport, UsageSource};
use crate::status::{
    CollectorState, STORE_ERROR_PREFIX, StatusHandle, replace_warning, set_warning,
};

const AUTH_REJECTED_WARNING: &str = "CPA rejected the management key. Collection is paused so that retries do not get \
this server's IP banned by CPA (five failed logins ban an IP for 30 minutes); save the correct CPA Management Key to \
resume.";
const OTHER_CONSUMER_PREFIX: &str = "Another consumer is probably draining";
const HOLDING_FULL_WARNING: &str = "Received events fill the holding bound (USAGE_INBOX_MAX_BYTES of the inbox on \
disk, or USAGE_HOLD_MEMORY_ITEMS in memory while the inbox fails) while the store refuses writes or lags: taking \
events from CPA is paused and CPA keeps new ones in its queue, where its retention applies. Fix the store (see \
lastError) or raise the bounds.";
const PUBLISHING_OFF_WARNING: &str = "CPA's usage publishing is off (usage-statistics-enabled is false), so CPA \
produces no usage events; enable it in CPA or through setup.";

/// Runs collection against one CPA at a time. Cheap to clone; clones control the same run.
pub struct Collector<S: EventSink> {
    sink: S,
    status: StatusHandle,
    current: Arc<tokio::sync::Mutex<Option<Run>>>,
    holding: Arc<Holding>,
    committer: Arc<tokio::sync::Mutex<Option<CommitterTask>>>,
}

impl<S: EventSink> Clone for Collector<S> {
    fn clone(&self) -> Collector<S> {
        Collector {
            sink: self.sink.clone(),
            status: self.status.clone(),
            current: self.current.clone(),
            holding: self.holding.clone(),
            committer: self.committer.clone(),
        }
    }
}

/// The committer, which outlives runs: batches held by one run are stored while the next
/// one pops.
struct CommitterTask {
    finish: watch::Sender<Option<Duration>>,
    task: JoinHandle<Option<crate::holding::Unstored>>,
    grace: Duration,
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
    /// A stopped collector that will store into `sink` and report through `status`,
    /// holding received batches in memory only (default limits).
    pub fn new(sink: S, status: StatusHandle) -> Collector<S> {
        Collector::with_holding(sink, status, Holding::new(HoldLimits::default()))
    }

    /// A collector that holds received batches in memory only, within `limits`.
    pub fn with_limits(sink: S, status: StatusHandle, limits: HoldLimits) -> Collector<S> {
        Collector::with_holding(sink, status, Holding::new(limits))
    }

    /// A collector that syncs every received batch to `inbox` before anything else
    /// happens to it; the batches in `recovery` (left by the previous process) are stored
    /// first, once [`Collector::resume`] or the first start runs the committer.
    pub fn with_inbox(
        sink: S,
        status: StatusHandle,
        limits: HoldLimits,
        inbox: Inbox,
        recovery: Recovery,
    ) -> Collector<S> {
        let held = recovery.held_items();
        if held > 0 {
            tracing::info!(
                items = held,
                "storing events the previous process received but had not stored"
            );
        }
        let collector =
            Collector::with_holding(sink, status, Holding::with_inbox(limits, inbox, recovery));
        collector
            .status
            .update(|status| status.held_items = collector.holding.held_items());
        collector
    }

    fn with_holding(sink: S, status: StatusHandle, holding: Holding) -> Collector<S> {
        Collector {
            sink,
            status,
            current: Default::default(),
            holding: Arc::new(holding),
            committer: Default::default(),
        }
    }

    /// Starts storing what is held (what a previous process left in the inbox) even
    /// before, or without, a collector run. Idempotent.
    pub async fn resume(&self) {
        self.ensure_committer(None).await;
    }

    async fn ensure_committer(&self, grace: Option<Duration>) {
        let mut committer = self.committer.lock().await;
        if let Some(task) = committer.as_mut() {
            if let Some(grace) = grace {
                task.grace = grace;
            }
            return;
        }
        let (finish, finish_rx) = watch::channel(None);
        let task = tokio::spawn(
            Committer {
                sink: self.sink.clone(),
                holding: self.holding.clone(),
                status: self.status.clone(),
                finish: finish_rx,
            }
            .run(),
        );
        *committer = Some(CommitterTask {
            finish,
            task,
            grace: grace.unwrap_or(Duration::from_secs(15)),
        });
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
        self.ensure_committer(Some(settings.shutdown_grace)).await;
        self.status.update(|status| {
            status.state = CollectorState::Starting;
            status.upstream = settings.upstream.clone();
            status.mode = settings.mode.as_str().to_string();
            status.transport.clear();
            status.queue = settings.queue.clone();
            if status.store_error.is_empty() {
                status.last_error.clear();
            }
            status.fallback_reason.clear();
            status.auth_rejected = false;
            status.consecutive_empty_polls = 0;
            status.support_refresh = false;
            status.warnings.clear();
        });
        let (stop, stop_rx) = watch::channel(false);
        let context = RunContext {
            status: self.status.clone(),
            settings,
            stop: stop_rx,
            holding: self.holding.clone(),
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

    /// For process shutdown (SIGTERM): stops taking events, then commits what is held,
    /// giving up `shutdown_grace` after the store first refuses (what was synced to the
    /// inbox is stored at the next start).
    pub async fn shutdown(&self) {
        self.stop().await;
        let committer = self.committer.lock().await.take();
        if let Some(CommitterTask {
            finish,
            task,
            grace,
        }) = committer
        {
            let _ = finish.send(Some(grace));
            match task.await {
                Ok(Some(unstored)) => {
                    for (error, message) in unstored.report() {
                        if error {
                            tracing::error!("{message}");
                        } else {
                            tracing::warn!("{message}");
                        }
                    }
                }
                Ok(None) => {}
                Err(error) => tracing::error!(%error, "collector committer ended abnormally"),
            }
        }
    }
}

enum Outcome {
    Stopped,
    /// `auto` moves on to the next transport.
    Fallback(SourceError),
}

struct RunContext {
    status: StatusHandle,
    settings: CollectorSettings,
    stop: watch::Receiver<bool>,
    /// Where received batches go; the committer stores them beside popping.
    holding: Arc<Holding>,
}

impl RunContext {
    async fn run(mut self) {
        tracing::info!(upstream = %self.settings.upstream, mode = self.settings.mode.as_str(), "collector starting");
        self.transports().await;
        tracing::info!("collector run finished");
    }

    async fn transports(&mut self) {
        match self.settings.mode {
            Mode::Subscribe => {
                self.subscribe(false).await;
            }
            Mode::Http => {
                let mut source = HttpQueue::new(&self.settings).with_tap(self.tap());
                self.poll(&mut source, false).await;
            }
            Mode::Resp => {
                let mut source = RespPop::new(self.settings.clone()).with_tap(self.tap());
                self.poll(&mut source, false).await;
            }
            Mode::Auto => {
                if let Outcome::Fallback(error) = self.subscribe(true).await {
                    tracing::info!(%error, "SUBSCRIBE unavailable; falling back to the HTTP queue");
                    self.fall_back(Transport::Http, &error);
                    let mut source = HttpQueue::new(&self.settings).with_tap(self.tap());
                    if let Outcome::Fallback(error) = self.poll(&mut source, true).await {
                        tracing::info!(%error, "HTTP queue unavailable; falling back to RESP pop");
                        self.fall_back(Transport::Resp, &error);
                        let mut source = RespPop::new(self.settings.clone()).with_tap(self.tap());
                        self.poll(&mut source, false).await;
                    }
                }
            }
        }
    }

    /// Where pop sources write response bytes as they arrive.
    fn tap(&self) -> Tap {
        Tap::new(self.holding.clone())
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

    /// The transport works. A store that refuses writes keeps state `error` and its
    /// `lastError` until a batch commits.
    fn running(&self, transport: Transport) {
        self.status.update(|status| {
            status.transport = transport.as_str().to_string();
            if status.store_error.is_empty() {
                status.state = CollectorState::Running;
                status.last_error.clear();
            } else {
                status.state = CollectorState::Error;
                status.last_error = format!("{STORE_ERROR_PREFIX}{}", status.store_error);
            }
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
            // The inbox marks the read and takes the response's bytes as they arrive, so
            // a kill inside it loses only what was still on its way (and shows as a gap at
            // the next start); what the read brings is synced before the mark is cleared.
            self.holding
                .read_began(ReadKind::Pop, &self.settings.upstream);
            let popped = source.next_batch(self.settings.batch_size).await;
            let popped = popped.map(|items| (items.len(), items));
            let popped = match popped {
                Ok((count, items)) => {
                    self.hold(items).await;
                    Ok(count)
                }
                Err(error) => Err(error),
            };
            self.holding.read_ended();
            match popped {
                Ok(count) => {
                    // The Go manager never reset its HTTP backoff; recover at full speed instead.
                    backoff.reset();
                    self.running(transport);
                    let empty = count == 0;
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
                    watch.received(count);
                    if !self.wait_for_room().await {
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
            // While subscribed, CPA may push at any moment: the inbox marks the whole
            // subscription as one read and takes its bytes as they arrive.
            self.holding
                .read_began(ReadKind::Subscription, &self.settings.upstream);
            let buffer = self.holding.limits().subscribe_buffer_items;
            let opened =
                RespSubscription::open_tapped(&self.settings, Some(self.tap()), buffer).await;
            if opened.is_err() {
                self.holding.read_ended();
            }
            let subscription = match opened {
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
            let outcome = self.stream(subscription, &mut backoff).await;
            self.holding.read_ended();
            if let Some(outcome) = outcome {
                return outcome;
            }
        }
    }

    /// Drains CPA's queue, then holds every message of `subscription` until it fails
    /// (`None`: resubscribe) or the run stops.
    async fn stream(
        &mut self,
        mut subscription: RespSubscription,
        backoff: &mut Backoff,
    ) -> Option<Outcome> {
        // Subscribing first means new events now reach us; popping afterwards picks up
        // what CPA queued before, so a reconnect or a transport switch loses nothing
        // CPA still holds.
        // Messages of the subscription held so far (the inbox's count of them).
        let mut held = 0u64;
        if !self.drain_queue().await {
            let rest = subscription.close().await;
            self.hold_messages(rest, &mut held).await;
            return Some(Outcome::Stopped);
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
                    self.hold_messages(rest, &mut held).await;
                    return Some(Outcome::Stopped);
                }
                Some(Ok(items)) => {
                    self.hold_messages(items, &mut held).await;
                    if !self.holding.has_room() {
                        // Waiting here would stop reading the socket: CPA drops a
                        // subscriber 256 messages behind and loses the message that
                        // overflowed it. Unsubscribing instead makes CPA queue new events
                        // (its retention applies); they are popped after resubscribing.
                        tracing::warn!(
                            held = self.holding.held_items(),
                            "holding is full while the store refuses writes; unsubscribing until there is room"
                        );
                        let rest = subscription.close().await;
                        self.hold_messages(rest, &mut held).await;
                        if !self.wait_for_room().await {
                            return Some(Outcome::Stopped);
                        }
                        return None;
                    }
                }
                Some(Err(error)) => {
                    self.failed(Transport::Subscribe, &error);
                    drop(subscription);
                    if self.sleep(backoff.next()).await {
                        return Some(Outcome::Stopped);
                    }
                    return None;
                }
            }
        }
    }

    /// Pops until CPA's queue is empty. Returns false when stopping.
    async fn drain_queue(&mut self) -> bool {
        let mut pop = RespPop::new(self.settings.clone()).with_tap(self.tap());
        loop {
            if self.stopping() {
                return false;
            }
            match pop.next_batch(self.settings.batch_size).await {
                Ok(items) if items.is_empty() => return true,
                Ok(items) => {
                    self.hold(items).await;
                    if !self.wait_for_room().await {
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

    /// Waits until holding has room for another batch (saying so in the status while it
    /// waits); false when the run stops first.
    async fn wait_for_room(&self) -> bool {
        if self.holding.has_room() {
            return true;
        }
        self.status
            .update(|status| set_warning(&mut status.warnings, HOLDING_FULL_WARNING, true));
        let room = self.holding.wait_for_room(&mut self.stop.clone()).await;
        self.status
            .update(|status| set_warning(&mut status.warnings, HOLDING_FULL_WARNING, false));
        room
    }

    /// Holds messages of the subscription; `held` counts them since it began.
    async fn hold_messages(&self, items: Vec<RawItem>, held: &mut u64) {
        *held += items.len() as u64;
        self.hold_covering(items, Some(*held)).await;
    }

    /// Holds a batch of a pop.
    async fn hold(&self, items: Vec<RawItem>) {
        self.hold_covering(items, None).await;
    }

    /// Syncs one received batch to the inbox and queues it for the committer first (the
    /// kill window ends here), then decodes it: CPA's refresh announcements act at once
    /// and the committer's first attempt reuses the decoding. `messages` is the count of
    /// a subscription's messages held with this batch.
    async fn hold_covering(&self, items: Vec<RawItem>, messages: Option<u64>) {
        if items.is_empty() {
            return;
        }
        let count = items.len();
        let holding = self.holding.clone();
        let origin = self.settings.upstream.clone();
        let kept = items.clone();
        let held = tokio::task::spawn_blocking(move || holding.hold(&origin, kept, messages)).await;
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
        match held {
            Ok(seq) => {
                self.holding.attach_decoded(seq, decoded.batch);
                // The count is read now, not when the batch was held: the committer may
                // have stored it meanwhile (decoding takes a while), and a count from
                // before that would stay on the status until the next batch.
                self.holding.report_held(|held| {
                    self.status.update(|status| {
                        status.held_items = held;
                        if !status.store_error.is_empty() {
                            status.pending_items = held;
                        }
                    });
                });
            }
            Err(error) => tracing::error!(%error, "holding a received batch failed"),
        }
    }
}

pub(crate) struct DecodedItems {
    pub batch: IngestBatch,
    pub refreshes: u64,
    pub support_refresh: bool,
}

pub(crate) fn decode_items(items: &[RawItem], origin: &str) -> DecodedItems {
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
