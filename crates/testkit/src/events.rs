//! Realistic usage payloads in the shape CPA v7.2.140 publishes (see the fixtures in
//! `tests/fixtures`): varied providers, models, credentials, client keys and failures.
//!
//! Request ids are 8 lowercase hex characters like CPA's, unique per generator except
//! for deliberate "additional model" records, which share the id of the record before
//! them exactly as CPA does for image-generation tool usage.

use bytes::Bytes;
use serde_json::json;

/// One credential CPA could route to.
#[derive(Debug, Clone, Copy)]
pub struct Account {
    /// The provider name payloads carry (`codex`, `claude`, …).
    pub provider: &'static str,
    /// CPA's executor type (`CodexExecutor`, …).
    pub executor: &'static str,
    /// The model requested through this credential.
    pub model: &'static str,
    /// The `source` field (an e-mail or a masked API key).
    pub source: &'static str,
    /// The `auth_index` payloads carry.
    pub auth_index: &'static str,
    /// `oauth` or `apikey`.
    pub auth_type: &'static str,
    /// The credential's auth file name in the fake's `auth-files` listing.
    pub file_name: &'static str,
}

/// The credentials the generator spreads its payloads over.
pub const ACCOUNTS: &[Account] = &[
    Account {
        provider: "codex",
        executor: "CodexExecutor",
        model: "gpt-5.5",
        source: "alice.dev@example.com",
        auth_index: "79b22708a9bdbdca",
        auth_type: "oauth",
        file_name: "codex-alice.dev@example.com.json",
    },
    Account {
        provider: "codex",
        executor: "CodexExecutor",
        model: "gpt-5.5-mini",
        source: "bob.ops@example.net",
        auth_index: "85ad019fd40e1278",
        auth_type: "oauth",
        file_name: "codex-bob.ops@example.net.json",
    },
    Account {
        provider: "claude",
        executor: "ClaudeExecutor",
        model: "claude-sonnet-4-6",
        source: "carol@example.org",
        auth_index: "1c0ffee0badc0de1",
        auth_type: "oauth",
        file_name: "claude-carol@example.org.json",
    },
    Account {
        provider: "gemini",
        executor: "GeminiExecutor",
        model: "gemini-2.5-pro",
        source: "AIzaSyFAKE-testkit-0000000000000000000",
        auth_index: "2b3c4d5e6f708192",
        auth_type: "apikey",
        file_name: "",
    },
    Account {
        provider: "openai-compatible-openrouter",
        executor: "OpenAICompatExecutor",
        model: "deepseek/deepseek-chat",
        source: "sk-or-v1-FAKE0000000000000000000000000000",
        auth_index: "a0a1a2a3a4a5a6a7",
        auth_type: "apikey",
        file_name: "",
    },
    Account {
        provider: "xai",
        executor: "XAIExecutor",
        model: "grok-4",
        source: "dave@example.com",
        auth_index: "d4e5f60718293a4b",
        auth_type: "oauth",
        file_name: "xai-dave@example.com.json",
    },
];

const CLIENT_KEYS: &[&str] = &[
    "sk-cpa-FAKE-team-alpha",
    "sk-cpa-FAKE-team-beta",
    "sk-cpa-FAKE-ci",
];
const USER_AGENTS: &[&str] = &[
    "codex_cli_rs/0.46.0",
    "claude-cli/2.1.3 (external, cli)",
    "OpenAI/Python 1.99.1",
];
const ENDPOINTS: &[&str] = &[
    "POST /v1/responses",
    "POST /v1/chat/completions",
    "POST /v1/messages",
];

/// One generated payload.
#[derive(Debug, Clone)]
pub struct EmittedEvent {
    /// The payload's `request_id`.
    pub request_id: String,
    /// The credential the attempt used.
    pub account: Account,
    /// Whether the attempt failed.
    pub failed: bool,
    /// The JSON payload exactly as queued.
    pub payload: Bytes,
}

/// Deterministic payload generator (splitmix64 over a counter, no global RNG).
#[derive(Debug)]
pub struct EventGenerator {
    counter: u64,
    seed: u64,
}

impl EventGenerator {
    /// A generator whose output depends only on `seed`.
    pub fn new(seed: u64) -> EventGenerator {
        EventGenerator { counter: 0, seed }
    }

    /// Builds the next `count` payloads. Every 25th record is an additional-model record
    /// sharing the previous record's request id.
    pub fn generate(&mut self, count: usize) -> Vec<EmittedEvent> {
        let mut events: Vec<EmittedEvent> = Vec::with_capacity(count);
        for _ in 0..count {
            self.counter += 1;
            let random = splitmix64(self.seed ^ self.counter);
            let shares_id = self.counter.is_multiple_of(25) && !events.is_empty();
            let request_id = match (shares_id, events.last()) {
                (true, Some(previous)) => previous.request_id.clone(),
                // The low 32 bits of a bijective mix of the counter are unique for the
                // first 2^32 events, which is more than any test emits.
                _ => format!("{:08x}", (mix32(self.seed as u32 ^ self.counter as u32))),
            };
            events.push(build(&request_id, random, shares_id));
        }
        events
    }
}

fn build(request_id: &str, random: u64, additional_model: bool) -> EmittedEvent {
    let account = ACCOUNTS[(random % ACCOUNTS.len() as u64) as usize];
    let failed = (random >> 8).is_multiple_of(10);
    let input = 500 + (random >> 16) % 60_000;
    let cached = if account.provider == "claude" {
        0
    } else {
        input * ((random >> 24) % 90) / 100
    };
    let output = if failed {
        0
    } else {
        50 + (random >> 32) % 4000
    };
    let reasoning = output * ((random >> 40) % 50) / 100;
    let input = if failed { 0 } else { input };
    let cached = if failed { 0 } else { cached };
    let latency = 200 + (random >> 44) % 60_000;
    let model = if additional_model {
        "gpt-image-2"
    } else {
        account.model
    };
    let timestamp = jiff::Timestamp::now().to_string();
    let (status_code, body) = if failed {
        (
            429,
            r#"{"error":{"type":"usage_limit_reached","message":"The usage limit has been reached","resets_in_seconds":5120}}"#,
        )
    } else {
        (200, "")
    };
    let payload = json!({
        "timestamp": timestamp,
        "latency_ms": latency,
        "ttft_ms": if failed { 0 } else { latency / 7 },
        "source": account.source,
        "auth_index": account.auth_index,
        "client_ip": "192.0.2.10",
        "x_forwarded_for": "",
        "user_agent": USER_AGENTS[((random >> 50) % USER_AGENTS.len() as u64) as usize],
        "tokens": {
            "input_tokens": input,
            "output_tokens": output,
            "reasoning_tokens": reasoning,
            "cached_tokens": cached,
            "cache_read_tokens": cached,
            "cache_read_tokens_present": true,
            "cache_creation_tokens": 0,
            "total_tokens": input + output,
        },
        "failed": failed,
        "generate": true,
        "fail": {"status_code": status_code, "body": body},
        "provider": account.provider,
        "executor_type": account.executor,
        "model": model,
        "alias": account.model,
        "endpoint": ENDPOINTS[((random >> 54) % ENDPOINTS.len() as u64) as usize],
        "auth_type": account.auth_type,
        "api_key": CLIENT_KEYS[((random >> 58) % CLIENT_KEYS.len() as u64) as usize],
        "request_id": request_id,
        "reasoning_effort": "medium",
        "service_tier": "auto",
    });
    EmittedEvent {
        request_id: request_id.to_string(),
        account,
        failed,
        payload: Bytes::from(payload.to_string()),
    }
}

/// One payload with a chosen outcome, for tests of what a particular success or failure
/// triggers (quota headers, usage-limit bodies, revoked tokens).
#[derive(Debug, Clone)]
pub struct PayloadSpec {
    /// The credential the attempt used.
    pub account: Account,
    /// The payload's `request_id`.
    pub request_id: String,
    /// The upstream status code (200 for a success).
    pub status_code: u16,
    /// The upstream failure body ("" for a success).
    pub body: String,
    /// Upstream response headers, as CPA forwards them.
    pub headers: Vec<(String, String)>,
    /// The attempt's time.
    pub timestamp: jiff::Timestamp,
}

impl PayloadSpec {
    /// A successful attempt on `account`.
    pub fn success(account: Account, request_id: &str) -> PayloadSpec {
        PayloadSpec {
            account,
            request_id: request_id.to_string(),
            status_code: 200,
            body: String::new(),
            headers: Vec::new(),
            timestamp: jiff::Timestamp::now(),
        }
    }

    /// A failed attempt answered with `status_code` and `body`.
    pub fn failure(
        account: Account,
        request_id: &str,
        status_code: u16,
        body: &str,
    ) -> PayloadSpec {
        PayloadSpec {
            status_code,
            body: body.to_string(),
            ..PayloadSpec::success(account, request_id)
        }
    }

    /// Adds an upstream response header.
    pub fn header(mut self, name: &str, value: &str) -> PayloadSpec {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The payload as CPA v7.2.140 publishes it.
    pub fn payload(&self) -> Bytes {
        let failed = self.status_code >= 400;
        let mut headers = serde_json::Map::new();
        for (name, value) in &self.headers {
            headers.insert(name.clone(), json!([value]));
        }
        let payload = json!({
            "timestamp": self.timestamp.to_string(),
            "latency_ms": 850,
            "ttft_ms": if failed { 0 } else { 120 },
            "source": self.account.source,
            "auth_index": self.account.auth_index,
            "tokens": {
                "input_tokens": if failed { 0 } else { 1200 },
                "output_tokens": if failed { 0 } else { 300 },
                "reasoning_tokens": 0,
                "cached_tokens": 0,
                "cache_read_tokens": 0,
                "cache_read_tokens_present": true,
                "cache_creation_tokens": 0,
                "total_tokens": if failed { 0 } else { 1500 },
            },
            "failed": failed,
            "generate": true,
            "fail": {"status_code": self.status_code, "body": self.body},
            "response_headers": headers,
            "provider": self.account.provider,
            "executor_type": self.account.executor,
            "model": self.account.model,
            "alias": self.account.model,
            "endpoint": "POST /v1/responses",
            "auth_type": self.account.auth_type,
            "api_key": CLIENT_KEYS[0],
            "request_id": self.request_id,
        });
        Bytes::from(payload.to_string())
    }
}

/// An `errors` channel event in CPA's shape (cpa-peer §7) for a failed attempt on
/// `account`, with the credential state CPA applied after it.
pub fn error_event(
    account: &Account,
    status_code: u16,
    body: &str,
    quota_exceeded: bool,
) -> serde_json::Value {
    let now = jiff::Timestamp::now();
    let retry = now
        .checked_add(jiff::SignedDuration::from_secs(300))
        .unwrap_or(now)
        .to_string();
    let mut auth_status = json!({
        "status": "error",
        "status_message": if quota_exceeded { "quota exhausted" } else { "request failed" },
        "disabled": false,
        "unavailable": true,
        "next_retry_after": retry,
    });
    if quota_exceeded && let Some(object) = auth_status.as_object_mut() {
        object.insert(
            "quota".to_string(),
            json!({"exceeded": true, "reason": "quota", "next_recover_at": retry, "backoff_level": 1}),
        );
    }
    json!({
        "timestamp": now.to_string(),
        "provider": account.provider,
        "model": account.model,
        "auth_id": account.file_name,
        "auth_index": account.auth_index,
        "status_code": status_code,
        "body": body,
        "code": if status_code == 429 { "rate_limit" } else { "request_failed" },
        "retryable": status_code == 429,
        "auth_status": auth_status,
    })
}

fn splitmix64(mut value: u64) -> u64 {
    value = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

/// A bijection on u32 (each step is invertible), so distinct counters give distinct ids.
fn mix32(mut value: u32) -> u32 {
    value ^= value >> 16;
    value = value.wrapping_mul(0x7feb_352d);
    value ^= value >> 15;
    value = value.wrapping_mul(0x846c_a68b);
    value ^ (value >> 16)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_unique_except_additional_model_records() {
        let mut generator = EventGenerator::new(7);
        let events = generator.generate(5000);
        let distinct: HashSet<&str> = events
            .iter()
            .map(|event| event.request_id.as_str())
            .collect();
        assert_eq!(distinct.len(), 5000 - 5000 / 25);
        let parsed: serde_json::Value = serde_json::from_slice(&events[0].payload).unwrap();
        assert_eq!(parsed["request_id"], events[0].request_id.as_str());
        assert!(events.iter().any(|event| event.failed));
    }
}
