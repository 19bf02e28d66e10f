//! The stored shape of one usage event (one upstream attempt reported by CPA).

#![warn(missing_docs)]

/// One row of `usage_events`, already normalised, masked and redacted.
///
/// Every text field that may be absent is an `Option`; the decoder maps empty
/// strings to `None` so storage writes SQL `NULL` for them.
/// Secrets never reach this type: `source` is masked, API keys only appear as
/// hashes, and the failure body only as its redacted, size-capped summary. The raw
/// payload and the raw failure body are deliberately not kept (the Go server stored
/// them as `raw_json`/`fail_body` but never showed them; they can hold secrets).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageEvent {
    /// Lowercase hex SHA-256 of the dedupe pre-hash string; unique per stored row.
    pub event_hash: String,
    /// CPA's request id; several attempts of one request share it.
    pub request_id: Option<String>,
    /// Request start, Unix milliseconds.
    pub timestamp_ms: i64,
    /// Request start as RFC 3339 UTC text (Go `RFC3339Nano` style).
    pub timestamp: String,
    /// The upstream provider (`codex`, `claude`, `gemini`, …).
    pub provider: Option<String>,
    /// CPA's executor that made the attempt (`CodexExecutor`, …).
    pub executor_type: Option<String>,
    /// Display model: requested model (alias) if known, else resolved model, else `-`.
    pub model: String,
    /// The model the client asked for (an alias, possibly with a reasoning suffix).
    pub requested_model: Option<String>,
    /// The model CPA sent upstream.
    pub resolved_model: Option<String>,
    /// CPA's endpoint, `METHOD /path` (for example `POST /v1/chat/completions`).
    pub endpoint: Option<String>,
    /// The client's HTTP method.
    pub method: Option<String>,
    /// The client's request path.
    pub path: Option<String>,
    /// The client's address as CPA saw it.
    pub client_ip: Option<String>,
    /// The client's `X-Forwarded-For`, sanitised and size-capped.
    pub x_forwarded_for: Option<String>,
    /// The client's `User-Agent`, sanitised and size-capped.
    pub user_agent: Option<String>,
    /// How the credential authenticates upstream (`oauth`, `apikey`).
    pub auth_type: Option<String>,
    /// CPA's stable index of the credential used.
    pub auth_index: Option<String>,
    /// Masked credential identity (never the raw key or full e-mail).
    pub source: Option<String>,
    /// Hex SHA-256 of the unmasked source, so masked sources stay distinct.
    pub source_hash: Option<String>,
    /// Hex SHA-256 of the client's API key (the key itself is never kept).
    pub api_key_hash: Option<String>,
    /// The credential's account at ingest time (from CPA's auth-file listing).
    pub account_snapshot: Option<String>,
    /// The credential's label at ingest time.
    pub auth_label_snapshot: Option<String>,
    /// The credential's auth file name at ingest time.
    pub auth_file_snapshot: Option<String>,
    /// The credential's provider at ingest time.
    pub auth_provider_snapshot: Option<String>,
    /// The credential's project id at ingest time (Gemini).
    pub auth_project_id_snapshot: Option<String>,
    /// Unix ms of the auth-file listing the snapshots come from.
    pub auth_snapshot_at_ms: Option<i64>,
    /// The reasoning effort the client asked for (`low`, `medium`, `high`, …).
    pub reasoning_effort: Option<String>,
    /// Effective service tier.
    pub service_tier: Option<String>,
    /// The service tier the client asked for.
    pub request_service_tier: Option<String>,
    /// The service tier the upstream reported.
    pub response_service_tier: Option<String>,
    /// How the provider counts cache tokens; decides `normalized`.
    pub cache_input_mode: Option<CacheInputMode>,
    /// Token counters as reported.
    pub tokens: TokenCounts,
    /// Input buckets after cache accounting (what cost is computed from).
    pub normalized: NormalizedTokens,
    /// Time to the complete answer, ms.
    pub latency_ms: Option<i64>,
    /// Time to the first token, ms (streaming).
    pub ttft_ms: Option<i64>,
    /// The attempt failed.
    pub failed: bool,
    /// The upstream HTTP status of a failed attempt.
    pub fail_status_code: Option<i64>,
    /// Redacted, size-capped failure text; safe to show.
    pub fail_summary: Option<String>,
    /// Facts parsed from allow-listed upstream response headers, as a compact JSON object
    /// (`quota`, `rate_limit`, `errors`, `trace`, `response`); never the raw headers.
    pub response_metadata_json: Option<String>,
    /// Unix ms when an exhausted quota resets, from the response headers.
    pub header_quota_recover_at_ms: Option<i64>,
    /// Quota used, percent, from the response headers.
    pub header_quota_used_percent: Option<f64>,
    /// The account's plan (`plus`, `pro`, …), from the response headers.
    pub header_quota_plan_type: Option<String>,
    /// The upstream's error kind header, if any.
    pub header_error_kind: Option<String>,
    /// The upstream's error code header, if any.
    pub header_error_code: Option<String>,
    /// The upstream's request or trace id, for support requests.
    pub header_trace_id: Option<String>,
    /// Wall-clock ms when the payload was normalised.
    pub created_at_ms: i64,
}

/// Raw token counters as CPA reported them (unclamped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// `input_tokens`.
    pub input: i64,
    /// `output_tokens` (reasoning included).
    pub output: i64,
    /// `reasoning_tokens` (part of `output`).
    pub reasoning: i64,
    /// `cached_tokens`.
    pub cached: i64,
    /// `cache_tokens` (older CPA releases).
    pub cache: i64,
    /// `cache_read_tokens`.
    pub cache_read: i64,
    /// `cache_creation_tokens`.
    pub cache_creation: i64,
    /// `total_tokens`.
    pub total: i64,
}

/// Token buckets after cache-accounting normalisation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NormalizedTokens {
    /// Input billed at the prompt rate (cache buckets taken out).
    pub uncached_input: i64,
    /// All input, cache buckets included.
    pub total_input: i64,
    /// Input read from the cache (legacy cached counts beyond the explicit buckets included).
    pub cache_read: i64,
    /// Input written to the cache.
    pub cache_creation: i64,
}

/// Whether the provider counts cache tokens inside `input_tokens` or beside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheInputMode {
    /// `input_tokens` already includes the cache buckets (OpenAI style).
    IncludedInInput,
    /// The cache buckets come on top of `input_tokens` (Anthropic style).
    SeparateFromInput,
}

impl CacheInputMode {
    /// The mode as stored (`included_in_input`, `separate_from_input`).
    pub fn as_str(self) -> &'static str {
        match self {
            CacheInputMode::IncludedInInput => "included_in_input",
            CacheInputMode::SeparateFromInput => "separate_from_input",
        }
    }

    /// The stored name back to a mode; `None` for anything else.
    pub fn parse(text: &str) -> Option<CacheInputMode> {
        match text {
            "included_in_input" => Some(CacheInputMode::IncludedInInput),
            "separate_from_input" => Some(CacheInputMode::SeparateFromInput),
            _ => None,
        }
    }
}

/// A queue item that could not be turned into an event, kept with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The original queue item, untrimmed (lossily decoded if it was not UTF-8).
    pub payload: String,
    /// Why it is not an event.
    pub reason: String,
    /// Unix ms when it was received.
    pub created_at_ms: i64,
}

/// What one queue item turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A usage event to store.
    Event(Box<UsageEvent>),
    /// `{"refresh":true}`: CPA's credential metadata changed; caches of auth files should be dropped.
    Refresh,
    /// `{"support_refresh":true}`: sent first on every subscription; nothing to do.
    SupportRefresh,
    /// Blank item: nothing to store.
    Blank,
    /// Not a usage payload; kept as a dead letter.
    Dead(DeadLetter),
}

/// Formats Unix milliseconds as the stored RFC 3339 UTC text: `Z` suffix, fractional
/// seconds only when non-zero and without trailing zeros (`2026-01-01T00:00:00.12Z`).
pub fn format_timestamp_ms(timestamp_ms: i64) -> String {
    let mut out = String::with_capacity(24);
    write_timestamp_ms(&mut out, timestamp_ms);
    out
}

/// 0001-01-01T00:00:00Z and 9999-12-29T00:00:00Z in Unix milliseconds: the range
/// [`write_timestamp_ms`] formats by hand (four-digit years, inside jiff's range).
const FAST_RANGE_MS: std::ops::Range<i64> = -62_135_596_800_000..253_402_128_000_000;

/// Appends the last `width` decimal digits of `value` (not negative), zero-padded.
fn push_digits(out: &mut String, value: i64, width: u32) {
    for position in (0..width).rev() {
        let digit = (value / 10_i64.pow(position)) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

/// Appends [`format_timestamp_ms`] of `timestamp_ms` to `out`.
pub fn write_timestamp_ms(out: &mut String, timestamp_ms: i64) {
    use std::fmt::Write as _;
    if FAST_RANGE_MS.contains(&timestamp_ms) {
        // Every export line and stored event prints one; the civil date comes
        // from the day number (Hinnant's `civil_from_days`), digits are pushed.
        let days = timestamp_ms.div_euclid(86_400_000);
        let in_day = timestamp_ms.rem_euclid(86_400_000);
        let shifted = days + 719_468;
        let era = shifted.div_euclid(146_097);
        let day_of_era = shifted.rem_euclid(146_097);
        let year_of_era =
            (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_index = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_index + 2) / 5 + 1;
        let month = if month_index < 10 {
            month_index + 3
        } else {
            month_index - 9
        };
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        push_digits(out, year, 4);
        out.push('-');
        push_digits(out, month, 2);
        out.push('-');
        push_digits(out, day, 2);
        out.push('T');
        push_digits(out, in_day / 3_600_000, 2);
        out.push(':');
        push_digits(out, in_day / 60_000 % 60, 2);
        out.push(':');
        push_digits(out, in_day / 1_000 % 60, 2);
        let millis = in_day % 1_000;
        if millis != 0 {
            out.push('.');
            let (value, width) = match millis {
                _ if millis % 100 == 0 => (millis / 100, 1),
                _ if millis % 10 == 0 => (millis / 10, 2),
                _ => (millis, 3),
            };
            push_digits(out, value, width);
        }
        out.push('Z');
        return;
    }
    match jiff::Timestamp::from_millisecond(timestamp_ms) {
        Ok(timestamp) => {
            let _ = write!(out, "{timestamp}");
        }
        Err(_) => out.push_str("1970-01-01T00:00:00Z"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_like_go_rfc3339nano() {
        assert_eq!(
            format_timestamp_ms(1_767_225_600_000),
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(
            format_timestamp_ms(1_767_225_600_120),
            "2026-01-01T00:00:00.12Z"
        );
        assert_eq!(
            format_timestamp_ms(1_767_225_600_007),
            "2026-01-01T00:00:00.007Z"
        );
        assert_eq!(format_timestamp_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    /// The hand-written formatter prints exactly what jiff prints, across its
    /// range and at both of its ends.
    #[test]
    fn the_fast_timestamp_path_matches_jiff() {
        let jiff_text = |ms: i64| match jiff::Timestamp::from_millisecond(ms) {
            Ok(timestamp) => timestamp.to_string(),
            Err(_) => "1970-01-01T00:00:00Z".to_string(),
        };
        let mut samples = vec![
            FAST_RANGE_MS.start,
            FAST_RANGE_MS.start - 1,
            FAST_RANGE_MS.end - 1,
            FAST_RANGE_MS.end,
            0,
            -1,
            951_782_400_000,    // 2000-02-29
            4_107_542_400_000,  // 2100-03-01
            -2_203_891_200_000, // 1900-02-28
        ];
        // A deterministic walk over the whole range with every kind of fraction.
        let mut value: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            value ^= value << 13;
            value ^= value >> 7;
            value ^= value << 17;
            let span = (FAST_RANGE_MS.end - FAST_RANGE_MS.start) as u64;
            let ms = FAST_RANGE_MS.start + (value % span) as i64;
            samples.push(ms);
            samples.push(ms - ms.rem_euclid(1_000) + [0, 100, 120, 7][(value % 4) as usize]);
        }
        for ms in samples {
            assert_eq!(format_timestamp_ms(ms), jiff_text(ms), "at {ms} ms");
        }
    }
}
