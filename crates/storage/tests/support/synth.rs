//! Deterministic synthetic usage events for tests and the analytics benchmark.
//!
//! Shaped like real traffic: 14 models (including reasoning-suffixed aliases) on
//! four providers, 12 credentials, 8 client API keys, about 5 % failures,
//! latencies from hundreds of ms to a minute, occasional long-context prompts and
//! cache reads. The same seed always yields the same events.

#![allow(dead_code)]

use cpamp_domain::event::{
    CacheInputMode, NormalizedTokens, TokenCounts, UsageEvent, format_timestamp_ms,
};

/// SplitMix64: tiny, fast, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// (provider, requested model, resolved model, weight)
pub const MODELS: [(&str, &str, &str, u64); 14] = [
    ("openai", "gpt-5", "gpt-5-2025-08-07", 18),
    ("openai", "gpt-5(high)", "gpt-5-2025-08-07", 8),
    ("openai", "gpt-5-mini", "gpt-5-mini", 10),
    ("openai", "gpt-5-codex", "gpt-5-codex", 9),
    ("openai", "o3", "o3", 3),
    (
        "anthropic",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        14,
    ),
    (
        "anthropic",
        "claude-opus-4-1",
        "claude-opus-4-1-20250805",
        4,
    ),
    ("anthropic", "claude-haiku-4-5", "claude-haiku-4-5", 6),
    ("gemini", "gemini-2.5-pro", "gemini-2.5-pro", 9),
    ("gemini", "gemini-2.5-flash", "gemini-2.5-flash", 7),
    (
        "gemini",
        "gemini-2.5-flash-lite",
        "gemini-2.5-flash-lite",
        2,
    ),
    ("xai", "grok-4", "grok-4-0709", 4),
    ("xai", "grok-code-fast-1", "grok-code-fast-1", 3),
    ("openai", "gpt-4.1", "gpt-4.1-2025-04-14", 1),
];

const PROVIDERS: [&str; 4] = ["openai", "anthropic", "gemini", "xai"];
const CREDENTIALS_PER_PROVIDER: usize = 3;
const API_KEYS: usize = 8;

fn hex64(rng: &mut Rng) -> String {
    format!(
        "{:016x}{:016x}{:016x}{:016x}",
        rng.next(),
        rng.next(),
        rng.next(),
        rng.next()
    )
}

fn pick_model(rng: &mut Rng) -> usize {
    let total: u64 = MODELS.iter().map(|model| model.3).sum();
    let mut roll = rng.below(total);
    for (index, model) in MODELS.iter().enumerate() {
        if roll < model.3 {
            return index;
        }
        roll -= model.3;
    }
    0
}

/// `count` events spread over the `days` days before `end_ms`, oldest first.
pub fn events(seed: u64, count: usize, end_ms: i64, days: i64) -> Vec<UsageEvent> {
    let mut generator = Generator::new(seed, count, end_ms, days);
    generator.take(count)
}

/// Streams the same events as [`events`] in chunks, so a million events never sit
/// in memory at once.
pub struct Generator {
    rng: Rng,
    api_keys: Vec<String>,
    count: usize,
    produced: usize,
    start_ms: i64,
    span_ms: i64,
}

impl Generator {
    pub fn new(seed: u64, count: usize, end_ms: i64, days: i64) -> Generator {
        let mut rng = Rng::new(seed);
        let api_keys: Vec<String> = (0..API_KEYS).map(|_| hex64(&mut rng)).collect();
        let span_ms = days * 86_400_000;
        Generator {
            rng,
            api_keys,
            count,
            produced: 0,
            start_ms: end_ms - span_ms,
            span_ms,
        }
    }

    /// The next `limit` events (fewer at the end).
    pub fn take(&mut self, limit: usize) -> Vec<UsageEvent> {
        let mut out = Vec::with_capacity(limit.min(self.count - self.produced));
        while out.len() < limit && self.produced < self.count {
            // Evenly spread with jitter inside each slot: sorted, and the slot
            // never spills into the next one.
            let slot = self.span_ms as f64 / self.count as f64;
            let jitter = (self.rng.below(1_000_000) as f64 / 1_000_000.0) * slot;
            let timestamp_ms = self.start_ms + (self.produced as f64 * slot + jitter) as i64;
            self.produced += 1;
            out.push(self.event(timestamp_ms));
        }
        out
    }

    fn event(&mut self, timestamp_ms: i64) -> UsageEvent {
        let rng = &mut self.rng;
        let api_keys = &self.api_keys;
        let model_index = pick_model(rng);
        let (provider, requested, resolved, _) = MODELS[model_index];
        let provider_index = PROVIDERS.iter().position(|p| *p == provider).unwrap_or(0);
        let credential =
            provider_index * CREDENTIALS_PER_PROVIDER + usize::try_from(rng.below(3)).unwrap_or(0);
        let api_key = usize::try_from(rng.below(u64::try_from(API_KEYS).unwrap_or(1))).unwrap_or(0);
        let failed = rng.chance(5);
        let long = rng.chance(1);
        let input = if long {
            272_001 + i64::try_from(rng.below(100_000)).unwrap_or(0)
        } else {
            200 + i64::try_from(rng.below(40_000)).unwrap_or(0)
        };
        let cached = if rng.chance(40) { input / 2 } else { 0 };
        let cache_read = if provider == "anthropic" && rng.chance(50) {
            input / 3
        } else {
            0
        };
        let cache_creation = if provider == "anthropic" && rng.chance(10) {
            500
        } else {
            0
        };
        let output = 20 + i64::try_from(rng.below(4_000)).unwrap_or(0);
        let reasoning = if requested.contains("high") || requested == "o3" {
            output / 2
        } else {
            0
        };
        let zero = !failed && rng.chance(1);
        let separate = provider == "anthropic";
        let mode = if separate {
            CacheInputMode::SeparateFromInput
        } else {
            CacheInputMode::IncludedInInput
        };
        let (input, output, reasoning, cached, cache_read, cache_creation) = if failed || zero {
            (0, 0, 0, 0, 0, 0)
        } else {
            (input, output, reasoning, cached, cache_read, cache_creation)
        };
        let read_total = (cached.max(0) - cache_read - cache_creation).max(0) + cache_read;
        let normalized = if separate {
            NormalizedTokens {
                uncached_input: input,
                total_input: input + read_total + cache_creation,
                cache_read: read_total,
                cache_creation,
            }
        } else {
            NormalizedTokens {
                uncached_input: (input - read_total - cache_creation).max(0),
                total_input: input,
                cache_read: read_total,
                cache_creation,
            }
        };
        let total = normalized.total_input + output + reasoning;
        let latency = if rng.chance(2) {
            None
        } else {
            Some(150 + i64::try_from(rng.below(if long { 60_000 } else { 12_000 })).unwrap_or(0))
        };
        let ttft = if rng.chance(20) {
            None
        } else {
            latency.map(|l| l / 4 + 1)
        };
        let status = [429, 500, 503, 529, 401][usize::try_from(rng.below(5)).unwrap_or(0)];
        let mut event = UsageEvent {
            event_hash: hex64(rng),
            request_id: Some(format!("req_{:016x}", rng.next())),
            timestamp_ms,
            timestamp: format_timestamp_ms(timestamp_ms),
            provider: Some(provider.to_string()),
            executor_type: Some(provider.to_string()),
            model: requested.to_string(),
            requested_model: Some(requested.to_string()),
            resolved_model: Some(resolved.to_string()),
            endpoint: Some(
                if provider == "anthropic" {
                    "POST /v1/messages"
                } else {
                    "POST /v1/chat/completions"
                }
                .to_string(),
            ),
            method: Some("POST".to_string()),
            path: Some(
                if provider == "anthropic" {
                    "/v1/messages"
                } else {
                    "/v1/chat/completions"
                }
                .to_string(),
            ),
            client_ip: Some(format!("10.0.0.{}", rng.below(20) + 1)),
            x_forwarded_for: None,
            user_agent: Some(
                [
                    "codex-cli/0.40",
                    "claude-cli/2.0",
                    "curl/8.5",
                    "python-httpx/0.27",
                    "cherry-studio/1.5",
                ][usize::try_from(rng.below(5)).unwrap_or(0)]
                .to_string(),
            ),
            auth_type: Some("oauth".to_string()),
            auth_index: Some(format!("idx-{credential}")),
            source: Some(format!("user{credential}***@example.com")),
            source_hash: Some(format!("{:064x}", credential + 1)),
            api_key_hash: Some(api_keys[api_key].clone()),
            account_snapshot: Some(format!("user{credential}@example.com")),
            auth_label_snapshot: Some(format!("Account {credential}")),
            auth_file_snapshot: Some(format!("{provider}-{credential}.json")),
            auth_provider_snapshot: Some(provider.to_string()),
            auth_project_id_snapshot: if provider == "gemini" {
                Some(format!("project-{credential}"))
            } else {
                None
            },
            auth_snapshot_at_ms: None,
            reasoning_effort: if requested.contains("high") {
                Some("high".to_string())
            } else {
                None
            },
            service_tier: if rng.chance(10) {
                Some("priority".to_string())
            } else {
                None
            },
            request_service_tier: None,
            response_service_tier: None,
            cache_input_mode: Some(mode),
            tokens: TokenCounts {
                input,
                output,
                reasoning,
                cached,
                cache: 0,
                cache_read,
                cache_creation,
                total,
            },
            normalized,
            latency_ms: latency,
            ttft_ms: if failed { None } else { ttft },
            failed,
            fail_status_code: failed.then_some(status),
            fail_summary: failed
                .then(|| format!("upstream returned {status}: rate limited, retry later")),
            response_metadata_json: None,
            header_quota_recover_at_ms: None,
            header_quota_used_percent: None,
            header_quota_plan_type: None,
            header_error_kind: failed.then(|| {
                if status == 429 {
                    "rate_limit"
                } else {
                    "upstream"
                }
                .to_string()
            }),
            header_error_code: None,
            header_trace_id: None,
            created_at_ms: timestamp_ms + 500,
        };
        // As the decoder does: the request's tier defaults to the effective one.
        event.request_service_tier = event.service_tier.clone();
        event
    }
}
