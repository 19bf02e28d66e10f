//! The RESP adapters against a real Redis server (`requirepass`, list pops with a count,
//! PUBLISH/SUBSCRIBE), started by the test.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod support;

use std::time::Duration;

use cpamp_collector::{CollectorState, Mode, PopSide};
use support::{Harness, RedisServer, settings, wait_until};

fn payload(id: usize) -> Vec<u8> {
    format!(
        r#"{{"timestamp":"2026-08-22T14:00:11.482913077Z","latency_ms":{id},"source":"a@example.com","auth_index":"79b22708a9bdbdca","tokens":{{"input_tokens":10,"output_tokens":5,"total_tokens":15}},"failed":false,"provider":"codex","model":"gpt-5.5","endpoint":"POST /v1/responses","request_id":"{id:08x}"}}"#
    )
    .into_bytes()
}

#[tokio::test]
async fn resp_pop_drains_a_redis_list() {
    let redis = RedisServer::start("redis-pass").await;
    let mut expected = Vec::new();
    for chunk in 0..5 {
        let payloads: Vec<Vec<u8>> = (chunk * 100..chunk * 100 + 100).map(payload).collect();
        let mut args: Vec<&[u8]> = vec![b"RPUSH", b"usage"];
        args.extend(payloads.iter().map(Vec::as_slice));
        let reply = redis.command(&args).await;
        assert!(
            reply.ends_with(format!(":{}\r\n", chunk * 100 + 100).as_bytes()),
            "{}",
            String::from_utf8_lossy(&reply)
        );
        expected.extend((chunk * 100..chunk * 100 + 100).map(|id| format!("{id:08x}")));
    }
    let harness = Harness::new();
    let mut settings = settings(&redis.url(), &redis.password, Mode::Resp);
    settings.pop_side = PopSide::Left;
    settings.batch_size = 64;
    harness.collector.start(settings).await;
    harness.wait_for_ids(&expected).await;
    let reply = redis.command(&[b"LLEN", b"usage"]).await;
    assert!(reply.ends_with(b":0\r\n"));
    assert_eq!(
        harness.collector.status().snapshot().state,
        CollectorState::Running
    );
    harness.collector.shutdown().await;
}

#[tokio::test]
async fn subscribe_receives_redis_publishes_and_drains_the_list() {
    let redis = RedisServer::start("redis-pass").await;
    let backlog = payload(9999);
    redis.command(&[b"RPUSH", b"usage", &backlog]).await;
    let harness = Harness::new();
    harness
        .collector
        .start(settings(&redis.url(), &redis.password, Mode::Subscribe))
        .await;
    let mut expected = vec![format!("{:08x}", 9999)];
    harness.wait_for_ids(&expected).await;
    wait_until("a Redis subscriber", || {
        harness.collector.status().snapshot().transport == "subscribe"
    })
    .await;
    for id in 0..300 {
        let reply = redis.command(&[b"PUBLISH", b"usage", &payload(id)]).await;
        assert!(
            reply.ends_with(b":1\r\n"),
            "one subscriber receives it: {}",
            String::from_utf8_lossy(&reply)
        );
        expected.push(format!("{id:08x}"));
    }
    harness.wait_for_ids(&expected).await;
    harness.collector.shutdown().await;
}

#[tokio::test]
async fn a_wrong_redis_password_is_reported_and_not_retried() {
    let redis = RedisServer::start("redis-pass").await;
    let harness = Harness::new();
    let mut settings = settings(&redis.url(), "wrong", Mode::Resp);
    settings.backoff.initial = Duration::from_millis(10);
    harness.collector.start(settings).await;
    wait_until("the auth error", || {
        harness.collector.status().snapshot().auth_rejected
    })
    .await;
    let status = harness.collector.status().snapshot();
    assert!(
        status.last_error.starts_with("auth: WRONGPASS"),
        "{status:?}"
    );
    harness.collector.shutdown().await;
}
