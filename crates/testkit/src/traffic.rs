//! Traffic at scale for benchmarks: payloads shaped exactly like what CPA 7.2 puts
//! on its usage queue (the fixture lines 1, 3, 5, 7, 9, 10, 13 and 16 of
//! `tests/fixtures/cpa/usage-events.jsonl`): nanosecond RFC 3339 timestamps, the
//! upstream `response_headers` of each provider (Codex quota windows, Anthropic
//! rate limits, request ids that differ per call), token breakdowns, and failure
//! bodies. Ten credentials, eight client keys, about 5 % failures.
//!
//! The caller picks each event's instant, so the same generator fills thirty days
//! of history or a steady stream into "now". Deterministic for a seed.

use bytes::Bytes;
use serde_json::{Value, json};

/// One upstream credential.
struct Credential {
    provider: &'static str,
    executor: &'static str,
    models: &'static [&'static str],
    source: &'static str,
    auth_index: &'static str,
    auth_type: &'static str,
    endpoint: &'static str,
}

const CREDENTIALS: [Credential; 10] = [
    Credential {
        provider: "codex",
        executor: "CodexExecutor",
        models: &["gpt-5.5", "gpt-5.5-mini", "gpt-5.3-codex"],
        source: "alice.dev@example.com",
        auth_index: "79b22708a9bdbdca",
        auth_type: "oauth",
        endpoint: "POST /v1/responses",
    },
    Credential {
        provider: "codex",
        executor: "CodexExecutor",
        models: &["gpt-5.5", "gpt-5.5-mini"],
        source: "bob.ops@example.net",
        auth_index: "85ad019fd40e1278",
        auth_type: "oauth",
        endpoint: "POST /backend-api/codex/responses",
    },
    Credential {
        provider: "codex",
        executor: "CodexExecutor",
        models: &["gpt-5.5", "gpt-5.3-codex"],
        source: "erin.ml@example.cn",
        auth_index: "3f9e0d1c2b3a4958",
        auth_type: "oauth",
        endpoint: "POST /v1/responses",
    },
    Credential {
        provider: "claude",
        executor: "ClaudeExecutor",
        models: &["claude-sonnet-4-6", "claude-opus-4-5", "claude-haiku-4-5"],
        source: "carol@example.org",
        auth_index: "2826f9ce6e0a27eb",
        auth_type: "oauth",
        endpoint: "POST /v1/messages",
    },
    Credential {
        provider: "claude",
        executor: "ClaudeExecutor",
        models: &["claude-sonnet-4-6", "claude-haiku-4-5"],
        source: "sk-ant-api03-FAKEFAKEFAKEFAKEFAKEFAKEFAKE0000",
        auth_index: "6a7b8c9d0e1f2031",
        auth_type: "apikey",
        endpoint: "POST /v1/chat/completions",
    },
    Credential {
        provider: "gemini",
        executor: "GeminiExecutor",
        models: &["gemini-2.5-pro", "gemini-2.5-flash"],
        source: "AIzaSyFAKE-testkit-0000000000000000000",
        auth_index: "2b3c4d5e6f708192",
        auth_type: "apikey",
        endpoint: "POST /v1beta/models/*action",
    },
    Credential {
        provider: "gemini-cli",
        executor: "GeminiCLIExecutor",
        models: &["gemini-2.5-pro", "gemini-3-pro-preview"],
        source: "gemini-frank@example.com-project-fake.json",
        auth_index: "c0d1e2f3a4b5c6d7",
        auth_type: "oauth",
        endpoint: "POST /v1/chat/completions",
    },
    Credential {
        provider: "openai-compatible-openrouter",
        executor: "OpenAICompatExecutor",
        models: &["deepseek/deepseek-chat", "qwen/qwen3-coder"],
        source: "sk-or-v1-FAKE0000000000000000000000000000",
        auth_index: "a0a1a2a3a4a5a6a7",
        auth_type: "apikey",
        endpoint: "POST /v1/chat/completions",
    },
    Credential {
        provider: "xai",
        executor: "XAIExecutor",
        models: &["grok-4", "grok-code-fast-1"],
        source: "dave@example.com",
        auth_index: "d4e5f60718293a4b",
        auth_type: "oauth",
        endpoint: "POST /v1/chat/completions",
    },
    Credential {
        provider: "kimi",
        executor: "KimiExecutor",
        models: &["kimi-k2"],
        source: "grace@example.com",
        auth_index: "0f1e2d3c4b5a6978",
        auth_type: "oauth",
        endpoint: "POST /v1/messages",
    },
];

const CLIENT_KEYS: [&str; 8] = [
    "sk-cpa-fake-client-0001-FAKEFAKEFAKE",
    "sk-cpa-fake-client-0002-FAKEFAKEFAKE",
    "sk-cpa-fake-client-0003-FAKEFAKEFAKE",
    "sk-cpa-fake-client-0004-FAKEFAKEFAKE",
    "sk-cpa-fake-ci-runner-FAKEFAKEFAKE",
    "sk-cpa-fake-batch-jobs-FAKEFAKEFAKE",
    "sk-cpa-fake-notebook-FAKEFAKEFAKE",
    "sk-cpa-fake-ide-plugin-FAKEFAKEFAKE",
];

const USER_AGENTS: [&str; 4] = [
    "codex_cli_rs/0.46.0 (Mac OS 15.6.1; arm64) iTerm.app/3.6.1",
    "claude-cli/2.1.3 (external, cli)",
    "OpenAI/Python 1.99.1",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0 Safari/537.36",
];

/// Deterministic generator of realistic payloads.
#[derive(Debug)]
pub struct Traffic {
    seed: u64,
    counter: u64,
    /// Percent of calls that fail (5 by default).
    pub failure_percent: u64,
}

impl Traffic {
    /// A generator whose output depends only on `seed`.
    pub fn new(seed: u64) -> Traffic {
        Traffic {
            seed,
            counter: 0,
            failure_percent: 5,
        }
    }

    /// The payload of the next upstream attempt, made at `unix_nanos`.
    pub fn payload(&mut self, unix_nanos: i128) -> Bytes {
        self.counter += 1;
        let mut random = Random(self.seed ^ self.counter.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let credential = &CREDENTIALS[random.below(CREDENTIALS.len() as u64) as usize];
        let model = credential.models[random.below(credential.models.len() as u64) as usize];
        let failed = random.below(100) < self.failure_percent;
        let timestamp = jiff::Timestamp::from_nanosecond(unix_nanos)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_string();
        let request_id = format!("{:08x}", random.next() as u32);
        let trace = format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            random.next() as u32,
            random.next() as u16,
            random.next() as u16 & 0xfff,
            random.next() as u16,
            random.next() & 0xffff_ffff_ffff
        );
        let subset_family = !matches!(credential.provider, "claude" | "kimi");
        let (input, output, reasoning, cache_read, cache_write) = if failed {
            (0, 0, 0, 0, 0)
        } else {
            let uncached = 200 + random.below(20_000);
            let cache_read = if random.below(3) == 0 {
                0
            } else {
                random.below(120_000)
            };
            let cache_write = if subset_family || random.below(4) != 0 {
                0
            } else {
                random.below(8_000)
            };
            let output = 20 + random.below(6_000);
            let reasoning = output * random.below(60) / 100;
            (uncached, output, reasoning, cache_read, cache_write)
        };
        // CPA's two token families: "subset" providers report input including the
        // cache buckets; Anthropic-style ones report only the uncached part.
        let input_tokens = if subset_family {
            input + cache_read
        } else {
            input
        };
        let total = input + cache_read + cache_write + output;
        let latency = 300 + random.below(if failed { 3_000 } else { 45_000 });
        let (status, body) = if failed {
            failure(credential.provider, &mut random)
        } else {
            (200, String::new())
        };
        let headers = response_headers(credential.provider, failed, &trace, &mut random);
        let effort = ["", "low", "medium", "high"][random.below(4) as usize];
        let payload = json!({
            "timestamp": timestamp,
            "latency_ms": latency,
            "ttft_ms": if failed { 0 } else { latency / (2 + random.below(8)) },
            "source": credential.source,
            "auth_index": credential.auth_index,
            "access_token_sha256": format!("{:016x}{:016x}{:016x}{:016x}", splitmix(credential.auth_index.len() as u64), splitmix(1), splitmix(2), splitmix(3)),
            "client_ip": "192.0.2.10",
            "x_forwarded_for": if random.below(4) == 0 { "203.0.113.5, 198.51.100.8" } else { "" },
            "user_agent": USER_AGENTS[random.below(USER_AGENTS.len() as u64) as usize],
            "tokens": {
                "input_tokens": input_tokens,
                "output_tokens": output,
                "reasoning_tokens": reasoning,
                "cached_tokens": cache_read,
                "cache_read_tokens": cache_read,
                "cache_read_tokens_present": true,
                "cache_creation_tokens": cache_write,
                "total_tokens": total,
            },
            "failed": failed,
            "generate": true,
            "fail": {"status_code": status, "body": body},
            "response_headers": headers,
            "accounting_version": 2,
            "token_breakdown": {
                "schema_version": 2,
                "quality": "complete",
                "total_tokens": total,
                "input": {
                    "total_tokens": input + cache_read + cache_write,
                    "uncached_tokens": input,
                    "cache_read_tokens": cache_read,
                    "cache_write_tokens": cache_write,
                },
                "output": {
                    "total_tokens": output,
                    "non_reasoning_tokens": output - reasoning,
                    "reasoning_tokens": reasoning,
                },
                "unclassified_tokens": 0,
            },
            "provider": credential.provider,
            "executor_type": credential.executor,
            "model": model,
            "alias": model,
            "endpoint": credential.endpoint,
            "auth_type": credential.auth_type,
            "api_key": CLIENT_KEYS[random.below(CLIENT_KEYS.len() as u64) as usize],
            "request_id": request_id,
            "reasoning_effort": effort,
            "service_tier": "auto",
            "response_service_tier": "default",
        });
        Bytes::from(payload.to_string())
    }
}

fn failure(provider: &str, random: &mut Random) -> (u64, String) {
    match (provider, random.below(3)) {
        ("codex", 0) => (
            401,
            r#"upstream rejected request (status 401): {"error":{"message":"Provided authentication token is expired. Please try signing in again.","type":null,"code":"token_expired","param":null},"status":401}"#.to_string(),
        ),
        ("codex", _) => (
            429,
            format!(
                r#"{{"error":{{"type":"usage_limit_reached","message":"The usage limit has been reached","plan_type":"pro","resets_in_seconds":{}}}}}"#,
                60 + random.below(18_000)
            ),
        ),
        ("claude" | "kimi", 0) => (
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CFAKE000529"}"#.to_string(),
        ),
        ("claude" | "kimi", _) => (
            429,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your account's rate limit. Please try again later."}}"#.to_string(),
        ),
        ("gemini" | "gemini-cli", _) => (
            429,
            r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#.to_string(),
        ),
        (_, 0) => (
            502,
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>".to_string(),
        ),
        _ => (499, "context canceled".to_string()),
    }
}

fn response_headers(provider: &str, failed: bool, trace: &str, random: &mut Random) -> Value {
    let list = |value: String| json!([value]);
    match provider {
        "codex" => {
            let primary = if failed { 100 } else { random.below(100) };
            let plan = ["pro", "plus", "team"][random.below(3) as usize];
            json!({
                "Cf-Ray": list(format!("{:016x}-SJC", random.next())),
                "Content-Type": list(if failed { "application/json" } else { "text/event-stream; charset=utf-8" }.to_string()),
                "X-Codex-Plan-Type": list(plan.to_string()),
                "X-Codex-Primary-Reset-After-Seconds": list(random.below(18_000).to_string()),
                "X-Codex-Primary-Used-Percent": list(primary.to_string()),
                "X-Codex-Primary-Window-Minutes": list("300".to_string()),
                "X-Codex-Secondary-Reset-After-Seconds": list(random.below(604_800).to_string()),
                "X-Codex-Secondary-Used-Percent": list(random.below(100).to_string()),
                "X-Codex-Secondary-Window-Minutes": list("10080".to_string()),
                "X-Request-Id": list(trace.to_string()),
            })
        }
        "claude" | "kimi" => json!({
            "Anthropic-Ratelimit-Unified-5h-Utilization": list(format!("0.{:02}", random.below(100))),
            "Anthropic-Ratelimit-Unified-Status": list(if failed { "rejected" } else { "allowed" }.to_string()),
            "Content-Type": list("application/json".to_string()),
            "Request-Id": list(format!("req_011C{}", &trace[..13])),
        }),
        "gemini" | "gemini-cli" => json!({
            "Content-Type": list("text/event-stream".to_string()),
            "Server": list("scaffolding on HTTPServer2".to_string()),
            "Server-Timing": list(format!("gfet4t7; dur={}", random.below(40_000))),
            "Vary": ["Origin", "X-Origin", "Referer"],
        }),
        "openai-compatible-openrouter" => json!({
            "Content-Type": list("application/json".to_string()),
            "Set-Cookie": list("__cf_bm=FAKEcookieFAKEcookie-1787407331-1.0.1.1-FAKEFAKE; path=/; HttpOnly; Secure; SameSite=None".to_string()),
            "X-Ratelimit-Remaining-Requests": list(random.below(500).to_string()),
            "X-Ratelimit-Remaining-Tokens": list(random.below(2_000_000).to_string()),
        }),
        _ => json!({
            "Content-Type": list("text/event-stream".to_string()),
            "X-Request-Id": list(trace.to_string()),
        }),
    }
}

/// SplitMix64 stream.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        splitmix(self.0)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

fn splitmix(mut value: u64) -> u64 {
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_cpa_shapes_headers_and_about_five_percent_failures() {
        let mut traffic = Traffic::new(11);
        let start: i128 = 1_787_407_211_482_913_077;
        let payloads: Vec<Value> = (0..2000)
            .map(|i| serde_json::from_slice(&traffic.payload(start + i * 1_000_003)).unwrap())
            .collect();
        let failed = payloads.iter().filter(|p| p["failed"] == true).count();
        assert!((60..=140).contains(&failed), "{failed}");
        assert!(
            payloads[0]["timestamp"]
                .as_str()
                .unwrap()
                .contains(".482913077")
        );
        assert!(payloads.iter().all(|p| p["response_headers"].is_object()));
        let credentials: std::collections::HashSet<&str> = payloads
            .iter()
            .map(|p| p["auth_index"].as_str().unwrap())
            .collect();
        let keys: std::collections::HashSet<&str> = payloads
            .iter()
            .map(|p| p["api_key"].as_str().unwrap())
            .collect();
        assert_eq!((credentials.len(), keys.len()), (10, 8));
        let again: Value = serde_json::from_slice(&Traffic::new(11).payload(start)).unwrap();
        assert_eq!(again, payloads[0]);
    }
}
