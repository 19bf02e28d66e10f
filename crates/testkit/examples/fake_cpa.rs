//! A fake CPA on a free loopback port, driven line by line on stdin; the panel's
//! end-to-end tests use it as the CPA a real cpamp server connects to.
//!
//! `cargo run -p cpamp-testkit --example fake_cpa -- [--key KEY]` prints one JSON line,
//! `{"url":"http://127.0.0.1:PORT","key":"KEY"}`, then answers each command with one
//! JSON line:
//!
//! - `emit N`: publishes N realistic usage events → `{"emitted":N,"failed":F}`.
//! - `fail-secret`: publishes one failed request whose failure body holds a bearer token,
//!   an API key and an e-mail address → `{"request_id":ID,"secrets":[…]}` (the secrets a
//!   stored summary must not contain).
//! - `quit`: stops.

#![allow(clippy::print_stdout, clippy::expect_used)]

use std::io::Write;

use cpamp_testkit::{FakeCpa, FakeCpaOptions};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let key = args
        .windows(2)
        .find(|pair| pair[0] == "--key")
        .map(|pair| pair[1].clone())
        .unwrap_or_else(|| "fake-cpa-management-key".to_string());
    let cpa = FakeCpa::start(FakeCpaOptions::new(key.clone()))
        .await
        .expect("start the fake CPA");
    reply(json!({ "url": cpa.base_url(), "key": key }));

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut secret_counter = 0u32;
    while let Ok(Some(line)) = lines.next_line().await {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("emit"), Some(count)) => {
                let count: usize = count.parse().unwrap_or(0);
                let emitted = cpa.emit(count).await;
                let failed = emitted.iter().filter(|event| event.failed).count();
                reply(json!({ "emitted": emitted.len(), "failed": failed }));
            }
            (Some("fail-secret"), _) => {
                secret_counter += 1;
                let request_id = format!("secret{secret_counter:02}");
                let secrets = [
                    "sk-proj-SECRETabcdef0123456789",
                    "Bearer tok_live_SECRET_987654321",
                    "dana.secret@example.com",
                ];
                let body = format!(
                    "{{\"error\":{{\"message\":\"upstream refused: Authorization: {} api_key={} contact {}\"}}}}",
                    secrets[1], secrets[0], secrets[2]
                );
                let payload = json!({
                    "timestamp": jiff::Timestamp::now().to_string(),
                    "latency_ms": 842,
                    "source": "carol@example.org",
                    "auth_index": "1c0ffee0badc0de1",
                    "tokens": { "input_tokens": 0, "output_tokens": 0, "total_tokens": 0 },
                    "failed": true,
                    "fail": { "status_code": 401, "body": body },
                    "provider": "claude",
                    "executor_type": "ClaudeExecutor",
                    "model": "claude-sonnet-4-6",
                    "endpoint": "POST /v1/messages",
                    "auth_type": "oauth",
                    "api_key": "sk-cpa-FAKE-ci",
                    "request_id": request_id,
                });
                cpa.push_raw(payload.to_string());
                reply(json!({ "request_id": request_id, "secrets": secrets }));
            }
            (Some("quit"), _) => break,
            _ => reply(json!({ "error": format!("unknown command {line:?}") })),
        }
    }
    cpa.stop();
}

fn reply(value: serde_json::Value) {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{value}").expect("write to stdout");
    stdout.flush().expect("flush stdout");
}
