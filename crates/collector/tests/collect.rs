//! The collector against the fake CPA and a real Redis, storing into an in-memory
//! `EventSink` (a test double of the storage port; the SQLite store is exercised by the
//! server's black-box tests).

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod support;

use std::time::Duration;

use cpamp_collector::HoldLimits;
use cpamp_collector::{CollectorSettings, CollectorState, Mode, RESP_OVER_HTTP_HINT};
use cpamp_testkit::{FakeCpa, FakeCpaOptions};
use support::{Harness, MemorySink, emitted_ids, fast_limits, settings, wait_until};

async fn collects_every_event_exactly_once(mode: Mode) {
    let cpa = FakeCpa::start(FakeCpaOptions::new("secret")).await.unwrap();
    let harness = Harness::new();
    let mut settings = settings(&cpa.base_url(), "secret", mode);
    settings.batch_size = 250;
    settings.poll_interval = Duration::from_millis(20);
    // Some events are queued before the collector starts (drained after subscribing).
    let mut expected = emitted_ids(&cpa.emit(300).await);
    harness.collector.start(settings).await;
    for _ in 0..10 {
        expected.extend(emitted_ids(&cpa.emit(470).await));
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    harness.wait_for_ids(&expected).await;
    let status = harness.collector.status().snapshot();
    assert_eq!(status.state, CollectorState::Running, "{status:?}");
    assert_eq!(status.last_error, "");
    assert_eq!(cpa.failed_auth_count(), 0);
    harness.collector.shutdown().await;
    assert_eq!(
        harness.collector.status().snapshot().state,
        CollectorState::Stopped
    );
    assert_eq!(harness.sink.sorted_ids(), sorted(expected));
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn http_mode_collects_every_event_once() {
    collects_every_event_exactly_once(Mode::Http).await;
}

#[tokio::test]
async fn resp_mode_collects_every_event_once() {
    collects_every_event_exactly_once(Mode::Resp).await;
}

#[tokio::test]
async fn subscribe_mode_collects_every_event_once() {
    collects_every_event_exactly_once(Mode::Subscribe).await;
}

#[tokio::test]
async fn auto_mode_collects_every_event_once() {
    collects_every_event_exactly_once(Mode::Auto).await;
}

#[tokio::test]
async fn auto_prefers_subscribe_and_drains_the_backlog() {
    let cpa = FakeCpa::start(FakeCpaOptions::new("secret")).await.unwrap();
    let backlog = emitted_ids(&cpa.emit(120).await);
    let harness = Harness::new();
    harness
        .collector
        .start(settings(&cpa.base_url(), "secret", Mode::Auto))
        .await;
    harness.wait_for_ids(&backlog).await;
    wait_until("a subscriber", || cpa.subscriber_count() == 1).await;
    // The subscription's first message is read after the backlog was drained.
    wait_until("support_refresh", || {
        harness.collector.status().snapshot().support_refresh
    })
    .await;
    let status = harness.collector.status().snapshot();
    assert_eq!(status.transport, "subscribe");
    let mut notifications = harness.collector.status().refresh_notifications();
    cpa.broadcast_refresh();
    tokio::time::timeout(Duration::from_secs(5), notifications.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(harness.collector.status().snapshot().refresh_count, 1);
    harness.collector.shutdown().await;
}

#[tokio::test]
async fn resp_against_an_http_server_reports_the_prefix_and_auto_uses_http() {
    let mut options = FakeCpaOptions::new("secret");
    options.resp_enabled = false;
    let cpa = FakeCpa::start(options).await.unwrap();

    let harness = Harness::new();
    harness
        .collector
        .start(settings(&cpa.base_url(), "secret", Mode::Resp))
        .await;
    wait_until("the RESP error", || {
        harness.collector.status().snapshot().last_error == "auth: unsupported RESP prefix 'H'"
    })
    .await;
    let status = harness.collector.status().snapshot();
    assert_eq!(status.state, CollectorState::Error);
    assert!(
        status
            .warnings
            .iter()
            .any(|warning| warning == RESP_OVER_HTTP_HINT),
        "{status:?}"
    );

    let expected = emitted_ids(&cpa.emit(50).await);
    harness
        .collector
        .restart(settings(&cpa.base_url(), "secret", Mode::Auto))
        .await;
    harness.wait_for_ids(&expected).await;
    let status = harness.collector.status().snapshot();
    assert_eq!(status.transport, "http");
    assert_eq!(status.fallback_reason, "auth: unsupported RESP prefix 'H'");
    harness.collector.shutdown().await;
}

#[tokio::test]
async fn auto_falls_back_to_resp_pop_when_the_http_queue_is_missing() {
    let mut options = FakeCpaOptions::new("secret");
    options.http_queue_supported = false;
    options.subscribe_supported = false;
    let cpa = FakeCpa::start(options).await.unwrap();
    let harness = Harness::new();
    let settings = settings(&cpa.base_url(), "secret", Mode::Auto);
    let expected = emitted_ids(&cpa.emit(40).await);
    harness.collector.start(settings).await;
    wait_until("the fallback to RESP", || {
        harness.collector.status().snapshot().transport == "resp"
    })
    .await;
    harness.wait_for_ids(&expected).await;
    harness.collector.shutdown().await;
}

#[tokio::test]
async fn a_rejected_key_is_not_retried_into_a_ban() {
    for mode in [Mode::Http, Mode::Resp, Mode::Subscribe, Mode::Auto] {
        let cpa = FakeCpa::start(FakeCpaOptions::new("secret")).await.unwrap();
        let harness = Harness::new();
        let mut settings = settings(&cpa.base_url(), "wrong", mode);
        settings.backoff.initial = Duration::from_millis(10);
        harness.collector.start(settings).await;
        wait_until("the auth error", || {
            harness.collector.status().snapshot().auth_rejected
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = harness.collector.status().snapshot();
        assert!(
            status.last_error.starts_with("auth: "),
            "{mode:?}: {status:?}"
        );
        assert!(
            status.last_error.contains("invalid management key"),
            "{status:?}"
        );
        assert_eq!(cpa.failed_auth_count(), 1, "{mode:?} must try the key once");
        assert!(!cpa.is_banned([127, 0, 0, 1].into()));
        harness.collector.shutdown().await;
    }
}

/// Without an inbox, a store that refuses writes does not stop collecting at once: batches
/// are held in memory up to the limit, then popping pauses; nothing is lost either way.
#[tokio::test]
async fn a_failing_store_keeps_collecting_up_to_the_memory_limit() {
    let cpa = FakeCpa::start(FakeCpaOptions::new("secret")).await.unwrap();
    let harness = Harness::with_limits(HoldLimits {
        memory_items: 300,
        ..fast_limits()
    });
    harness.sink.set_failing(true);
    let mut settings = settings(&cpa.base_url(), "secret", Mode::Http);
    settings.batch_size = 100;
    let mut expected = emitted_ids(&cpa.emit(600).await);
    harness.collector.start(settings).await;
    wait_until("the store error", || {
        harness.collector.status().snapshot().pending_items == 300
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let status = harness.collector.status().snapshot();
    assert_eq!(status.state, CollectorState::Error);
    assert_eq!(
        status.last_error,
        "consume: database unavailable: database is locked"
    );
    assert_eq!(
        status.store_error,
        "database unavailable: database is locked"
    );
    assert_eq!(status.held_items, 300);
    assert!(status.last_consumed_at_ms > 0);
    assert_eq!(status.last_inserted_at_ms, 0);
    assert_eq!(
        cpa.queued_len(),
        300,
        "popping pauses once the memory limit is reached"
    );
    expected.extend(emitted_ids(&cpa.emit(30).await));
    harness.sink.set_failing(false);
    harness.wait_for_ids(&expected).await;
    // The status is updated after the store call returns, so it may trail the sink.
    wait_until("the status to show nothing held", || {
        let status = harness.collector.status().snapshot();
        status.pending_items == 0 && status.held_items == 0
    })
    .await;
    let status = harness.collector.status().snapshot();
    assert_eq!(status.pending_items, 0);
    assert_eq!(status.held_items, 0);
    assert_eq!(status.last_error, "");
    assert_eq!(status.store_error, "");
    assert_eq!(status.state, CollectorState::Running);
    assert_eq!(status.total_inserted + status.total_dead_lettered, 630);
    harness.collector.shutdown().await;
}

/// With an inbox, a refusing store does not stop collecting: everything CPA queues is
/// taken (beyond the memory limit it lives in the inbox only) and stored on recovery.
#[tokio::test]
async fn with_an_inbox_a_failing_store_empties_cpa_and_spills_to_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cpa = FakeCpa::start(FakeCpaOptions::new("secret")).await.unwrap();
    let harness = Harness::with_inbox(
        MemorySink::default(),
        &dir.path().join("inbox"),
        HoldLimits {
            memory_items: 100,
            ..fast_limits()
        },
    );
    harness.sink.set_failing(true);
    let mut settings = settings(&cpa.base_url(), "secret", Mode::Resp);
    settings.batch_size = 100;
    let expected = emitted_ids(&cpa.emit(1_000).await);
    harness.collector.start(settings).await;
    wait_until("everything taken from CPA", || {
        harness.collector.status().snapshot().held_items == 1_000
    })
    .await;
    assert_eq!(cpa.queued_len(), 0);
    assert!(std::fs::metadata(dir.path().join("inbox")).unwrap().len() > 0);
    harness.sink.set_failing(false);
    harness.wait_for_ids(&expected).await;
    wait_until("the inbox emptied", || {
        std::fs::metadata(dir.path().join("inbox")).unwrap().len() == 0
    })
    .await;
    harness.collector.shutdown().await;
}

/// Subscribe mode while the store refuses writes and holding (memory only here, so no
/// inbox to spill to) is full: the collector unsubscribes instead of letting its buffer
/// grow or CPA drop it as a slow subscriber, CPA queues the rest, and on recovery
/// everything is stored once, except what CPA had buffered for the connection but not
/// yet written when it took the `UNSUBSCRIBE` (the fake counts those as undelivered).
#[tokio::test]
async fn a_full_holding_unsubscribes_instead_of_buffering_without_bound() {
    let cpa = FakeCpa::start(FakeCpaOptions::new("secret")).await.unwrap();
    let harness = Harness::with_limits(HoldLimits {
        memory_items: 200,
        subscribe_buffer_items: 50,
        ..fast_limits()
    });
    harness.sink.set_failing(true);
    let mut settings = settings(&cpa.base_url(), "secret", Mode::Subscribe);
    settings.batch_size = 50;
    harness.collector.start(settings).await;
    wait_until("a subscriber", || cpa.subscriber_count() == 1).await;
    let mut expected = Vec::new();
    while cpa.subscriber_count() == 1 && expected.len() < 5_000 {
        expected.extend(emitted_ids(&cpa.emit(50).await));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(cpa.subscriber_count(), 0, "the collector unsubscribed");
    let status = harness.collector.status().snapshot();
    // The memory bound, plus what arrived before CPA confirmed the unsubscription.
    assert!(
        (200..=400).contains(&status.held_items),
        "held {} of {}: {status:?}",
        status.held_items,
        expected.len()
    );
    assert!(
        status
            .warnings
            .iter()
            .any(|warning| warning.contains("taking events from CPA is paused")),
        "{status:?}"
    );
    assert_eq!(
        cpa.dropped_subscribers(),
        0,
        "CPA never saw a slow subscriber"
    );
    assert_eq!(cpa.lost_events(), 0);
    // While paused, CPA keeps queueing.
    expected.extend(emitted_ids(&cpa.emit(100).await));
    assert!(cpa.queued_len() >= 100);
    harness.sink.set_failing(false);
    wait_until("the subscription again", || cpa.subscriber_count() == 1).await;
    expected.extend(emitted_ids(&cpa.emit(50).await));
    let undelivered = usize::try_from(cpa.undelivered_events()).unwrap();
    wait_until("everything delivered stored", || {
        harness.sink.id_count() + undelivered >= expected.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Records may share a request id (CPA's additional-model records): compare counts.
    let count = |ids: &[String]| {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for id in ids {
            *counts.entry(id.clone()).or_default() += 1;
        }
        counts
    };
    let reached = harness.sink.reached_ids();
    let (reached_counts, expected_counts) = (count(&reached), count(&expected));
    assert!(
        reached_counts
            .iter()
            .all(|(id, n)| expected_counts.get(id).is_some_and(|wanted| n <= wanted)),
        "no event reached the store twice"
    );
    assert_eq!(reached.len() + undelivered, expected.len());
    assert_eq!(cpa.dropped_subscribers(), 0);
    assert_eq!(cpa.lost_events(), 0);
    harness.collector.shutdown().await;
}

/// Subscribe mode with an inbox while the store refuses writes: beyond the memory bound
/// messages spill to the inbox and the subscription stays (nothing queues up in CPA).
#[tokio::test]
async fn with_an_inbox_a_subscription_spills_to_disk_and_stays_subscribed() {
    let dir = tempfile::tempdir().unwrap();
    let cpa = FakeCpa::start(FakeCpaOptions::new("secret")).await.unwrap();
    let harness = Harness::with_inbox(
        MemorySink::default(),
        &dir.path().join("inbox"),
        HoldLimits {
            memory_items: 100,
            subscribe_buffer_items: 50,
            ..fast_limits()
        },
    );
    harness.sink.set_failing(true);
    let mut settings = settings(&cpa.base_url(), "secret", Mode::Subscribe);
    settings.batch_size = 50;
    harness.collector.start(settings).await;
    wait_until("a subscriber", || cpa.subscriber_count() == 1).await;
    let expected = emitted_ids(&cpa.emit(1_000).await);
    // CPA's `{"support_refresh":true}` announcement is held with the events.
    wait_until("everything received", || {
        harness.collector.status().snapshot().held_items == 1_001
    })
    .await;
    assert_eq!(cpa.subscriber_count(), 1);
    assert_eq!(cpa.queued_len(), 0);
    assert_eq!(cpa.dropped_subscribers(), 0);
    assert!(std::fs::metadata(dir.path().join("inbox")).unwrap().len() > 0);
    harness.sink.set_failing(false);
    harness.wait_for_ids(&expected).await;
    harness.collector.shutdown().await;
}

/// Shutdown while the store refuses writes past the grace: the committer gives up, the
/// held batches stay in the inbox, and the next collector on that inbox stores them
/// (each once) before anything new.
#[tokio::test]
async fn shutdown_gives_up_after_the_grace_and_the_next_start_stores_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox");
    let cpa = FakeCpa::start(FakeCpaOptions::new("secret")).await.unwrap();
    let sink = MemorySink::default();
    let first = Harness::with_inbox(sink.clone(), &path, fast_limits());
    sink.set_failing(true);
    let mut run = settings(&cpa.base_url(), "secret", Mode::Http);
    run.shutdown_grace = Duration::from_millis(300);
    let mut expected = emitted_ids(&cpa.emit(250).await);
    first.collector.start(run.clone()).await;
    wait_until("all held", || {
        first.collector.status().snapshot().pending_items == 250
    })
    .await;
    let started = std::time::Instant::now();
    first.collector.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown waited {:?}",
        started.elapsed()
    );
    assert_eq!(sink.id_count(), 0);
    drop(first);

    sink.set_failing(false);
    let second = Harness::with_inbox(sink.clone(), &path, fast_limits());
    assert_eq!(second.collector.status().snapshot().held_items, 250);
    expected.extend(emitted_ids(&cpa.emit(50).await));
    second.collector.start(run).await;
    second.wait_for_ids(&expected).await;
    second.collector.shutdown().await;
}

#[tokio::test]
async fn shutdown_commits_a_held_batch_once_the_store_recovers() {
    let cpa = FakeCpa::start(FakeCpaOptions::new("secret")).await.unwrap();
    let harness = Harness::new();
    harness.sink.set_failing(true);
    let mut settings = settings(&cpa.base_url(), "secret", Mode::Subscribe);
    settings.backoff.initial = Duration::from_millis(50);
    harness.collector.start(settings).await;
    wait_until("a subscriber", || cpa.subscriber_count() == 1).await;
    let expected = emitted_ids(&cpa.emit(60).await);
    wait_until("a held batch", || {
        harness.collector.status().snapshot().pending_items > 0
    })
    .await;
    let sink = harness.sink.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sink.set_failing(false);
    });
    harness.collector.shutdown().await;
    assert_eq!(harness.sink.sorted_ids(), sorted(expected));
}

#[tokio::test]
async fn subscription_survives_a_cpa_restart() {
    let cpa = FakeCpa::start(FakeCpaOptions::new("secret")).await.unwrap();
    let harness = Harness::new();
    let mut settings = settings(&cpa.base_url(), "secret", Mode::Subscribe);
    settings.backoff.initial = Duration::from_millis(100);
    harness.collector.start(settings).await;
    wait_until("a subscriber", || cpa.subscriber_count() == 1).await;
    let mut expected = emitted_ids(&cpa.emit(200).await);
    harness.wait_for_ids(&expected).await;
    cpa.restart(Duration::from_millis(300)).await.unwrap();
    // Emitted while nobody is subscribed yet: queued, then drained after resubscribing.
    expected.extend(emitted_ids(&cpa.emit(80).await));
    wait_until("a new subscriber", || cpa.subscriber_count() == 1).await;
    expected.extend(emitted_ids(&cpa.emit(80).await));
    harness.wait_for_ids(&expected).await;
    assert_eq!(
        harness.collector.status().snapshot().state,
        CollectorState::Running
    );
    harness.collector.shutdown().await;
}

#[tokio::test]
async fn poller_survives_a_cpa_restart() {
    let cpa = FakeCpa::start(FakeCpaOptions::new("secret")).await.unwrap();
    let harness = Harness::new();
    let mut settings = settings(&cpa.base_url(), "secret", Mode::Http);
    settings.backoff.initial = Duration::from_millis(100);
    settings.poll_interval = Duration::from_millis(20);
    harness.collector.start(settings).await;
    let mut expected = emitted_ids(&cpa.emit(100).await);
    harness.wait_for_ids(&expected).await;
    cpa.restart(Duration::from_millis(400)).await.unwrap();
    expected.extend(emitted_ids(&cpa.emit(100).await));
    harness.wait_for_ids(&expected).await;
    harness.collector.shutdown().await;
}

#[tokio::test]
async fn warns_when_another_consumer_drains_the_queue() {
    let cpa = FakeCpa::start(FakeCpaOptions::new("secret")).await.unwrap();
    let harness = Harness::new();
    let mut settings = settings(&cpa.base_url(), "secret", Mode::Http);
    settings.poll_interval = Duration::from_millis(50);
    settings.consumer_check_interval = Duration::from_millis(300);
    harness.collector.start(settings).await;
    // A rogue consumer pops everything CPA queues before the collector can.
    let mut rogue = cpamp_collector::RespPop::new(CollectorSettings {
        consumer_check_interval: Duration::ZERO,
        ..support::settings(&cpa.base_url(), "secret", Mode::Resp)
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        cpa.emit(20).await;
        use cpamp_collector::UsageSource;
        let _ = rogue.next_batch(1000).await.unwrap();
        let warnings = harness.collector.status().snapshot().warnings;
        if warnings
            .iter()
            .any(|warning| warning.starts_with("Another consumer is probably draining"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no warning: {warnings:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cpa.set_publishing(false);
    wait_until("the publishing warning", || {
        harness
            .collector
            .status()
            .snapshot()
            .warnings
            .iter()
            .any(|warning| warning.contains("publishing is off"))
    })
    .await;
    harness.collector.shutdown().await;
}

/// The same malformed items get the same outcome in every transport: `null`, a number and
/// a non-object string become dead letters, a blank item is nothing, and the valid event
/// beside them is stored.
#[tokio::test]
async fn a_malformed_item_gets_the_same_outcome_in_every_transport() {
    let mut outcomes = Vec::new();
    for mode in [Mode::Http, Mode::Resp, Mode::Subscribe] {
        let cpa = FakeCpa::start(FakeCpaOptions::new("secret")).await.unwrap();
        let harness = Harness::new();
        harness
            .collector
            .start(settings(&cpa.base_url(), "secret", mode))
            .await;
        if mode == Mode::Subscribe {
            wait_until("a subscriber", || cpa.subscriber_count() == 1).await;
        }
        for raw in ["null", "7", "\"text\"", "   "] {
            cpa.push_raw(raw);
        }
        let expected = emitted_ids(&cpa.emit(1).await);
        harness.wait_for_ids(&expected).await;
        wait_until("the dead letters", || {
            harness.collector.status().snapshot().total_dead_lettered >= 3
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let status = harness.collector.status().snapshot();
        outcomes.push((
            mode,
            status.total_inserted,
            status.total_dead_lettered,
            status.total_consumed,
        ));
        harness.collector.shutdown().await;
    }
    for (mode, inserted, dead, _) in &outcomes {
        assert_eq!((*inserted, *dead), (1, 3), "{mode:?}: {outcomes:?}");
    }
}
