//! CPA queue payload → [`Decoded`]: a usage event row, a control message, a
//! blank item or a dead letter.
//!
//! The field rules follow the Go manager (server-core §4.7/§4.8) so that the
//! dedupe hash is bit-identical; where the Go behaviour is a wart the sensible
//! behaviour is chosen and marked in a comment. The decisions for malformed
//! input are listed in `docs/ingest.md`.
//!
//! Secrets never leave this module in clear text: `source` is masked, API keys
//! are hashed and `fail_summary` is redacted. The raw payload and raw failure
//! body are not kept at all.

#![warn(missing_docs)]

mod exported;
mod headers;
pub(crate) mod json;
pub(crate) mod redact;
mod time;

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::event::{
    CacheInputMode, DeadLetter, Decoded, NormalizedTokens, TokenCounts, UsageEvent,
};

use json::{Json, Number, member};
use time::EventTime;

/// An object's members, looked up with Go's last-duplicate-wins rule.
///
/// The top-level object is sorted once, so its hundred-odd lookups per payload
/// are binary searches; small nested objects are scanned.
#[derive(Clone, Copy)]
enum Members<'o, 'a> {
    Plain(&'o [(Cow<'a, str>, Json<'a>)]),
    Sorted(&'o SortedMembers<'o, 'a>),
}

impl<'o, 'a> Members<'o, 'a> {
    fn get(self, key: &str) -> Option<&'o Json<'a>> {
        match self {
            Members::Plain(members) => member(members, key),
            Members::Sorted(sorted) => sorted.get(key),
        }
    }
}

/// An object's members in Go map order ([`json::sorted_members`]) with each
/// key's [`json::key_prefix`], for the many lookups of one decode.
struct SortedMembers<'o, 'a> {
    entries: Vec<&'o (Cow<'a, str>, Json<'a>)>,
    prefixes: Vec<u64>,
}

impl<'o, 'a> SortedMembers<'o, 'a> {
    fn new(members: &'o [(Cow<'a, str>, Json<'a>)]) -> SortedMembers<'o, 'a> {
        let entries = json::sorted_members(members);
        let prefixes = entries
            .iter()
            .map(|(key, _)| json::key_prefix(key.as_bytes()))
            .collect();
        SortedMembers { entries, prefixes }
    }

    fn get(&self, key: &str) -> Option<&'o Json<'a>> {
        let wanted = json::key_prefix(key.as_bytes());
        let (mut low, mut high) = (0, self.entries.len());
        while low < high {
            let middle = low + (high - low) / 2;
            let order = self.prefixes[middle]
                .cmp(&wanted)
                .then_with(|| self.entries[middle].0.as_bytes().cmp(key.as_bytes()));
            match order {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return Some(&self.entries[middle].1),
            }
        }
        None
    }
}

/// Largest failure body considered for the summary (bytes, before `...`).
const FAIL_BODY_LIMIT: usize = 64 * 1024;
/// Byte caps of the client metadata columns (Go parity).
const CLIENT_IP_LIMIT: usize = 64;
const FORWARDED_FOR_LIMIT: usize = 2048;
const USER_AGENT_LIMIT: usize = 1024;

const TIMESTAMP_KEYS: &[&str] = &[
    "timestamp",
    "time",
    "created_at",
    "createdAt",
    "created",
    "request_time",
    "requestTime",
];
const REQUESTED_MODEL_KEYS: &[&str] = &["alias", "requested_model", "requestedModel"];
const RESOLVED_MODEL_KEYS: &[&str] = &[
    "resolved_model",
    "resolvedModel",
    "model",
    "model_name",
    "modelName",
];
const INPUT_KEYS: &[&str] = &[
    "input_tokens",
    "inputTokens",
    "prompt_tokens",
    "promptTokens",
];
const OUTPUT_KEYS: &[&str] = &[
    "output_tokens",
    "outputTokens",
    "completion_tokens",
    "completionTokens",
];
const REASONING_KEYS: &[&str] = &["reasoning_tokens", "reasoningTokens"];
const CACHED_KEYS: &[&str] = &["cached_tokens", "cachedTokens"];
const CACHE_KEYS: &[&str] = &["cache_tokens", "cacheTokens"];
const CACHE_READ_KEYS: &[&str] = &[
    "cache_read_tokens",
    "cacheReadTokens",
    "cache_read_input_tokens",
    "cacheReadInputTokens",
];
const CACHE_CREATION_KEYS: &[&str] = &[
    "cache_creation_tokens",
    "cacheCreationTokens",
    "cache_creation_input_tokens",
    "cacheCreationInputTokens",
    "cache_write_tokens",
    "cacheWriteTokens",
    "cache_write_input_tokens",
    "cacheWriteInputTokens",
];
const TOTAL_KEYS: &[&str] = &["total_tokens", "totalTokens", "total"];
const TOKEN_KEY_GROUPS: &[&[&str]] = &[
    INPUT_KEYS,
    OUTPUT_KEYS,
    REASONING_KEYS,
    CACHED_KEYS,
    CACHE_KEYS,
    CACHE_READ_KEYS,
    CACHE_CREATION_KEYS,
    TOTAL_KEYS,
];
const HEADER_KEYS: &[&str] = &["response_headers", "responseHeaders", "headers"];

/// The form of a dead-letter payload (or reason) that may be stored: credentials
/// redacted as in failure summaries, `source` values masked as in stored events,
/// capped at 64 KiB. Storage applies it to every dead letter it writes, whoever made
/// it, so a raw client API key never reaches the database.
pub fn redact_dead_letter_text(text: &str) -> String {
    redact::dead_letter_payload(text)
}

/// Decodes one queue item as received from CPA.
///
/// Never panics. Blank items are [`Decoded::Blank`]; `{"refresh":true}` and
/// `{"support_refresh":true}` (exactly one key, JSON `true`) are control
/// messages; anything that is not a usage payload is a dead letter whose
/// reason names the field or the fix.
pub fn decode(item: &[u8], now_ms: i64) -> Decoded {
    let dead = |reason: String| {
        Decoded::Dead(DeadLetter {
            payload: String::from_utf8_lossy(item).into_owned(),
            reason,
            created_at_ms: now_ms,
        })
    };
    // Trailing `\r` (CRLF line endings) and surrounding whitespace are noise.
    let trimmed = item.trim_ascii();
    if trimmed.is_empty() {
        return Decoded::Blank;
    }
    let text = match std::str::from_utf8(trimmed) {
        Ok(text) => text,
        Err(error) => {
            let leading = item.len() - item.trim_ascii_start().len();
            return dead(format!(
                "payload is not valid UTF-8 (invalid byte at offset {}); CPA emits UTF-8 JSON only",
                leading + error.valid_up_to()
            ));
        }
    };
    // A UTF-8 byte-order mark is not JSON, but it carries no meaning either.
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.trim_start(),
        None => text,
    };
    if text.is_empty() {
        return Decoded::Blank;
    }
    let document = match json::parse(text) {
        Ok(document) => document,
        Err(error) => return dead(error.to_string()),
    };
    let members = match &document {
        Json::Object(members) => members.as_slice(),
        Json::String(inner) if inner.trim_start().starts_with('{') => {
            return dead(
                "usage payload is not a JSON object (found a string holding encoded JSON; unwrap it once before decoding)"
                    .to_string(),
            );
        }
        other => {
            return dead(format!(
                "usage payload is not a JSON object (found {})",
                other.type_name()
            ));
        }
    };
    if let [(key, Json::Bool(true))] = members {
        match key.as_ref() {
            "refresh" => return Decoded::Refresh,
            "support_refresh" => return Decoded::SupportRefresh,
            _ => {}
        }
    }
    match decode_object(members, now_ms) {
        Ok(event) => Decoded::Event(Box::new(event)),
        Err(reason) => dead(reason),
    }
}

/// A usage event from the members of a CPA-style JSON object (queue payload or
/// an import record without an event hash); the error names the field or the fix.
pub(crate) fn decode_object(
    members: &[(Cow<'_, str>, Json<'_>)],
    now_ms: i64,
) -> Result<UsageEvent, String> {
    let sorted = SortedMembers::new(members);
    let members = Members::Sorted(&sorted);
    if !has_usage_fields(members) {
        return Err(
            "no usage fields: the object has no timestamp, model or token counts".to_string(),
        );
    }
    normalize(members, now_ms).and_then(plausible)
}

/// Largest token count one request may report in any field (raw or normalised): a
/// thousand times the largest context windows. Above it the number is a producer bug or
/// an attack, and summing a few such values would overflow 64 bits.
pub const MAX_TOKENS_PER_EVENT: i64 = 1_000_000_000_000;
/// Largest latency or time to first token, in ms (about 11.6 days).
pub const MAX_DURATION_MS: i64 = 1_000_000_000;
/// Largest quota-used percentage taken from response headers.
pub const MAX_QUOTA_USED_PERCENT: f64 = 1_000_000.0;

/// The event, or the reason it is absurd (dead-lettered, so nothing is lost and no sum
/// can be poisoned). Negative counts within the bounds stay allowed (Go parity: analytics
/// clamp them to 0).
pub(crate) fn plausible(event: UsageEvent) -> Result<UsageEvent, String> {
    let tokens = &event.tokens;
    let normalized = &event.normalized;
    let counts = [
        ("tokens.input_tokens", tokens.input),
        ("tokens.output_tokens", tokens.output),
        ("tokens.reasoning_tokens", tokens.reasoning),
        ("tokens.cached_tokens", tokens.cached),
        ("tokens.cache_tokens", tokens.cache),
        ("tokens.cache_read_tokens", tokens.cache_read),
        ("tokens.cache_creation_tokens", tokens.cache_creation),
        ("tokens.total_tokens", tokens.total),
        (
            "normalized uncached input tokens",
            normalized.uncached_input,
        ),
        ("normalized total input tokens", normalized.total_input),
        ("normalized cache read tokens", normalized.cache_read),
        (
            "normalized cache creation tokens",
            normalized.cache_creation,
        ),
    ];
    for (field, value) in counts {
        if value.unsigned_abs() > MAX_TOKENS_PER_EVENT.unsigned_abs() {
            return Err(format!(
                "{field} is {value}, beyond {MAX_TOKENS_PER_EVENT} tokens for one request: \
                 not stored so it cannot distort totals"
            ));
        }
    }
    for (field, value) in [("latency_ms", event.latency_ms), ("ttft_ms", event.ttft_ms)] {
        if let Some(value) = value
            && value.unsigned_abs() > MAX_DURATION_MS.unsigned_abs()
        {
            return Err(format!(
                "{field} is {value}, beyond {MAX_DURATION_MS} ms for one request: \
                 not stored so it cannot distort latency figures"
            ));
        }
    }
    if let Some(percent) = event.header_quota_used_percent
        && !(percent.is_finite() && percent.abs() <= MAX_QUOTA_USED_PERCENT)
    {
        return Err(format!(
            "the quota-used percentage header is {percent}, beyond {MAX_QUOTA_USED_PERCENT}"
        ));
    }
    Ok(event)
}

pub(crate) use exported::decode_exported;

/// An object is a usage payload only if it carries at least one non-null
/// timestamp, model or token field. `{}`, `{"refresh":true,"x":1}` and the
/// like would otherwise become rows made only of defaults (Go stores them).
fn has_usage_fields(members: Members<'_, '_>) -> bool {
    let present = |key: &&str| members.get(key).is_some_and(|value| *value != Json::Null);
    TIMESTAMP_KEYS.iter().any(present)
        || REQUESTED_MODEL_KEYS.iter().any(present)
        || RESOLVED_MODEL_KEYS.iter().any(present)
        || ["tokens", "usage"].iter().any(present)
        || TOKEN_KEY_GROUPS
            .iter()
            .any(|group| group.iter().any(present))
}

/// The first key of `keys` present in the object (a JSON `null` counts).
fn first_present<'o, 'a>(
    members: Members<'o, 'a>,
    keys: &[&'static str],
) -> Option<(&'static str, &'o Json<'a>)> {
    keys.iter()
        .find_map(|key| members.get(key).map(|value| (*key, value)))
}

/// Text coercion: strings trimmed, numbers in shortest form, booleans as
/// `true`/`false`, `null` empty, containers as compact JSON.
fn text_of<'o>(value: &'o Json<'_>) -> Cow<'o, str> {
    match value {
        Json::String(text) => Cow::Borrowed(text.trim()),
        Json::Bool(true) => Cow::Borrowed("true"),
        Json::Bool(false) => Cow::Borrowed("false"),
        Json::Null => Cow::Borrowed(""),
        Json::Number(number) => {
            let mut out = String::new();
            json::write_number(&mut out, *number);
            Cow::Owned(out)
        }
        Json::Array(_) | Json::Object(_) => {
            let mut out = String::new();
            json::write_compact(&mut out, value);
            Cow::Owned(out)
        }
    }
}

/// The text of the first present key; `None` if it is missing or empty.
fn text_field(members: Members<'_, '_>, keys: &[&'static str]) -> Option<String> {
    let (_, value) = first_present(members, keys)?;
    let text = text_of(value);
    if text.is_empty() {
        None
    } else {
        Some(text.into_owned())
    }
}

fn out_of_range(prefix: &str, key: &str) -> String {
    format!("{prefix}{key} is out of the 64-bit integer range")
}

/// Integer coercion: numbers truncated toward zero, base-10 integer strings
/// parsed, everything else 0. A value outside `i64` is an error naming the
/// field (Go silently turns it into `i64::MIN`; wrapping or saturating would
/// store a wrong count, so the payload is dead-lettered instead).
fn integer(value: &Json<'_>, prefix: &str, key: &str) -> Result<i64, String> {
    match value {
        Json::Number(Number::Unsigned(number)) => {
            i64::try_from(*number).map_err(|_| out_of_range(prefix, key))
        }
        Json::Number(Number::Signed(number)) => Ok(*number),
        Json::Number(Number::Float(number)) => {
            let truncated = number.trunc();
            // 2^63 is exactly representable; every double below it fits.
            if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&truncated) {
                Ok(truncated as i64)
            } else {
                Err(out_of_range(prefix, key))
            }
        }
        Json::String(text) => {
            parse_integer_text(text.trim()).map_err(|()| out_of_range(prefix, key))
        }
        Json::Null | Json::Bool(_) | Json::Array(_) | Json::Object(_) => Ok(0),
    }
}

/// Base-10 `i64` text: `Ok(0)` for anything that is not an integer,
/// `Err(())` for an integer beyond the range.
fn parse_integer_text(text: &str) -> Result<i64, ()> {
    match text.parse::<i64>() {
        Ok(number) => Ok(number),
        Err(error) => match error.kind() {
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => Err(()),
            _ => Ok(0),
        },
    }
}

/// `Some(n)` if a key is present with a non-null value, `None` otherwise
/// (`latency_ms`/`ttft_ms` semantics: a present `0` or `"abc"` is `Some(0)`).
fn optional_integer(
    members: Members<'_, '_>,
    keys: &[&'static str],
) -> Result<Option<i64>, String> {
    match first_present(members, keys) {
        None | Some((_, Json::Null)) => Ok(None),
        Some((key, value)) => integer(value, "", key).map(Some),
    }
}

fn event_time(members: Members<'_, '_>, now_ms: i64) -> Result<EventTime, String> {
    let parsed = match first_present(members, TIMESTAMP_KEYS) {
        Some((key, value @ Json::Number(_))) => time::from_epoch_number(integer(value, "", key)?),
        Some((key, Json::String(text))) => {
            let text = text.trim();
            match text.parse::<i64>() {
                Ok(number) => time::from_epoch_number(number),
                Err(error)
                    if matches!(
                        error.kind(),
                        std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow
                    ) =>
                {
                    return Err(out_of_range("", key));
                }
                Err(_) => time::parse_text(text),
            }
        }
        // Missing, null, boolean or container: Go falls back to "now".
        _ => None,
    };
    Ok(parsed.unwrap_or_else(|| now_time(now_ms)))
}

/// "Now" as an event time. The clock is passed in; a clock outside the years
/// 0000–9999 cannot happen, but it still yields a usable (if odd) text.
fn now_time(now_ms: i64) -> EventTime {
    time::from_millis(now_ms).unwrap_or_else(|| EventTime {
        ms: now_ms,
        text: now_ms.to_string(),
    })
}

/// Where token counters are looked up, in order: `tokens`, `usage`, top level.
struct TokenSources<'o, 'a> {
    sources: [(Option<Members<'o, 'a>>, &'static str); 3],
}

impl<'o, 'a> TokenSources<'o, 'a> {
    fn new(members: Members<'o, 'a>) -> Self {
        let nested = |key| {
            members
                .get(key)
                .and_then(Json::as_object)
                .map(Members::Plain)
        };
        TokenSources {
            sources: [
                (nested("tokens"), "tokens."),
                (nested("usage"), "usage."),
                (Some(members), ""),
            ],
        }
    }

    /// The first non-zero value of the keys, searched source by source.
    fn count(&self, keys: &[&'static str]) -> Result<i64, String> {
        for (source, prefix) in &self.sources {
            let Some(object) = source else { continue };
            for key in keys {
                if let Some(value) = object.get(key) {
                    let number = integer(value, prefix, key)?;
                    if number != 0 {
                        return Ok(number);
                    }
                }
            }
        }
        Ok(0)
    }

    fn explicit_mode(&self) -> Option<CacheInputMode> {
        self.sources.iter().find_map(|(source, _)| {
            let (_, value) = first_present((*source)?, &["cache_input_mode", "cacheInputMode"])?;
            CacheInputMode::parse(&text_of(value).to_ascii_lowercase())
        })
    }
}

/// Input buckets of a CPA accounting-v2 `token_breakdown` that passed every
/// invariant (cpa-peer §6.2) with quality `complete`.
struct Breakdown {
    input_total: i64,
    uncached: i64,
    cache_read: i64,
    cache_write: i64,
}

/// The breakdown, if it can be trusted: accounting and schema version 2,
/// quality `complete`, all counts non-negative integers and the sums adding
/// up. Anything else (unknown versions, `inconsistent`, broken sums) is
/// ignored and the buckets are derived from `tokens` instead.
fn trusted_breakdown(members: Members<'_, '_>) -> Option<Breakdown> {
    fn count(object: &[(Cow<'_, str>, Json<'_>)], key: &str) -> Option<i64> {
        match member(object, key)? {
            Json::Number(Number::Unsigned(value)) => i64::try_from(*value).ok(),
            _ => None,
        }
    }
    if !matches!(
        members.get("accounting_version"),
        Some(Json::Number(Number::Unsigned(2)))
    ) {
        return None;
    }
    let breakdown = members.get("token_breakdown")?.as_object()?;
    if count(breakdown, "schema_version")? != 2 {
        return None;
    }
    if !matches!(member(breakdown, "quality"), Some(Json::String(quality)) if quality == "complete")
    {
        return None;
    }
    let input = member(breakdown, "input")?.as_object()?;
    let output = member(breakdown, "output")?.as_object()?;
    let input_total = count(input, "total_tokens")?;
    let uncached = count(input, "uncached_tokens")?;
    let cache_read = count(input, "cache_read_tokens")?;
    let cache_write = count(input, "cache_write_tokens")?;
    let output_total = count(output, "total_tokens")?;
    let non_reasoning = count(output, "non_reasoning_tokens")?;
    let reasoning = count(output, "reasoning_tokens")?;
    let unclassified = count(breakdown, "unclassified_tokens")?;
    let total = count(breakdown, "total_tokens")?;
    let input_sum = uncached.checked_add(cache_read)?.checked_add(cache_write)?;
    let output_sum = non_reasoning.checked_add(reasoning)?;
    let total_sum = input_total
        .checked_add(output_total)?
        .checked_add(unclassified)?;
    if input_sum != input_total
        || output_sum != output_total
        || total_sum != total
        || unclassified != 0
    {
        return None;
    }
    Some(Breakdown {
        input_total,
        uncached,
        cache_read,
        cache_write,
    })
}

fn contains_any(haystack: &str, needles: &[&str]) -> bool {
    needles.iter().any(|needle| haystack.contains(needle))
}

/// Whether `input_tokens` already includes the cache buckets (server-core
/// §4.7 "Cache accounting"): executor, then provider, then model names.
fn infer_cache_mode(
    executor: &str,
    providers: &[&str],
    models: &[&str],
    cache_read: i64,
    cache_creation: i64,
) -> CacheInputMode {
    use CacheInputMode::{IncludedInInput, SeparateFromInput};
    let executor = executor.to_lowercase();
    if executor.contains("claude") {
        return SeparateFromInput;
    }
    if contains_any(
        &executor,
        &[
            "openaicompat",
            "openai_compat",
            "openai-compat",
            "openai",
            "codex",
            "gemini",
            "aistudio",
            "ai_studio",
            "ai-studio",
            "antigravity",
            "xai",
            "kimi",
        ],
    ) {
        return IncludedInInput;
    }
    let providers: Vec<String> = providers
        .iter()
        .map(|provider| provider.to_lowercase())
        .collect();
    if providers
        .iter()
        .any(|provider| contains_any(provider, &["anthropic", "claude"]))
    {
        return SeparateFromInput;
    }
    if providers.iter().any(|provider| {
        contains_any(
            provider,
            &[
                "openai",
                "codex",
                "gemini",
                "vertex",
                "aistudio",
                "ai_studio",
                "ai-studio",
                "interaction",
                "antigravity",
                "xai",
                "kimi",
                "moonshot",
            ],
        )
    }) {
        return IncludedInInput;
    }
    let models: Vec<String> = models.iter().map(|model| model.to_lowercase()).collect();
    if models
        .iter()
        .any(|model| contains_any(model, &["anthropic", "claude"]))
    {
        return SeparateFromInput;
    }
    if models.iter().any(|model| {
        contains_any(
            model,
            &[
                "gpt-",
                "openai",
                "codex",
                "gemini",
                "vertex",
                "aistudio",
                "antigravity",
                "grok",
                "xai",
                "kimi",
                "moonshot",
            ],
        )
    }) {
        return IncludedInInput;
    }
    if cache_read > 0 || cache_creation > 0 {
        SeparateFromInput
    } else {
        IncludedInInput
    }
}

/// The normalised input buckets from raw counters and a cache mode.
fn normalize_tokens(tokens: &TokenCounts, mode: CacheInputMode) -> NormalizedTokens {
    let read = tokens.cache_read.max(0);
    let creation = tokens.cache_creation.max(0);
    let input = tokens.input.max(0);
    let legacy_cached = tokens.cached.max(tokens.cache);
    let legacy_extra = legacy_cached
        .saturating_sub(read.saturating_add(creation))
        .max(0);
    let cache_read = legacy_extra.saturating_add(read);
    match mode {
        CacheInputMode::SeparateFromInput => NormalizedTokens {
            uncached_input: input,
            total_input: input.saturating_add(cache_read).saturating_add(creation),
            cache_read,
            cache_creation: creation,
        },
        CacheInputMode::IncludedInInput => NormalizedTokens {
            uncached_input: input
                .saturating_sub(cache_read)
                .saturating_sub(creation)
                .max(0),
            total_input: input,
            cache_read,
            cache_creation: creation,
        },
    }
}

/// The stepwise `failed` rule of server-core §4.7.
fn is_failed(members: Members<'_, '_>) -> Result<bool, String> {
    if let Some((_, Json::Bool(failed))) =
        first_present(members, &["failed", "is_failed", "isFailed"])
    {
        return Ok(*failed);
    }
    if let Some((_, Json::Bool(success))) = first_present(members, &["success", "ok"]) {
        return Ok(!success);
    }
    let status_keys = [
        "status",
        "status_code",
        "statusCode",
        "http_status",
        "httpStatus",
    ];
    if let Some((key, value)) = first_present(members, &status_keys)
        && integer(value, "", key)? >= 400
    {
        return Ok(true);
    }
    Ok(
        matches!(first_present(members, &["error", "error_message", "errorMessage"]), Some((_, value)) if *value != Json::Null),
    )
}

fn fail_status_code(members: Members<'_, '_>) -> Result<Option<i64>, String> {
    let mut status = 0;
    if let Some(fail) = members.get("fail").and_then(Json::as_object)
        && let Some((key, value)) =
            first_present(Members::Plain(fail), &["status_code", "statusCode"])
    {
        status = integer(value, "fail.", key)?;
    }
    if status == 0
        && let Some((key, value)) = first_present(members, &["fail_status_code", "failStatusCode"])
    {
        status = integer(value, "", key)?;
    }
    Ok((status > 0).then_some(status))
}

/// The failure text as sent: `fail.body`, a bare `fail` string (older or
/// foreign producers), else `fail_body`/`failBody`.
fn fail_body_text<'o>(members: Members<'o, '_>) -> Cow<'o, str> {
    let body = match members.get("fail") {
        Some(Json::Object(fail)) => member(fail, "body").map(text_of).unwrap_or_default(),
        Some(Json::String(text)) => Cow::Borrowed(text.trim()),
        _ => Cow::Borrowed(""),
    };
    if !body.is_empty() {
        return body;
    }
    first_present(members, &["fail_body", "failBody"])
        .map(|(_, value)| text_of(value))
        .unwrap_or_default()
}

/// Response headers as compact JSON (keys sorted, Go escaping) with
/// credential headers (`Set-Cookie`, `Authorization`, …) replaced.
fn headers_json(headers: &Json<'_>) -> Option<String> {
    match headers {
        Json::Null => None,
        Json::Object(members) if members.is_empty() => None,
        Json::Array(items) if items.is_empty() => None,
        Json::Object(members) => {
            let mut out = String::from("{");
            for (index, (key, value)) in json::sorted_members(members).into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                json::write_string(&mut out, key);
                out.push(':');
                if redact::is_secret_key(key) {
                    json::write_string(&mut out, redact::REDACTED);
                } else {
                    json::write_compact(&mut out, value);
                }
            }
            out.push('}');
            Some(out)
        }
        other => Some(text_of(other).into_owned()),
    }
}

/// The dedupe hash (server-core §4.8): SHA-256 of eleven `|`-joined fields,
/// plus the latency when one was reported.
#[allow(
    clippy::too_many_arguments,
    reason = "the hash recipe has this many named inputs"
)]
fn event_hash(
    request_id: &str,
    timestamp: &str,
    endpoint: &str,
    model: &str,
    auth_index: &str,
    source_hash: &str,
    tokens: &TokenCounts,
    failed: bool,
    latency_ms: Option<i64>,
) -> String {
    let mut pre_hash = String::with_capacity(256);
    let _ = write!(
        pre_hash,
        "{request_id}|{timestamp}|{endpoint}|{model}|{auth_index}|{source_hash}|{}|{}|{}|{}|{failed}",
        tokens.input,
        tokens.output,
        tokens.reasoning,
        tokens.cached.max(tokens.cache),
    );
    if let Some(latency) = latency_ms {
        let _ = write!(pre_hash, "|{latency}");
    }
    redact::sha256_hex(pre_hash.trim())
}

/// Matches `^(GET|POST|PUT|PATCH|DELETE|OPTIONS|HEAD)\s+(\S+)` (RE2 `\s`).
fn split_endpoint(endpoint: &str) -> Option<(&str, &str)> {
    let is_space = |byte: u8| matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c');
    let method_end = endpoint
        .bytes()
        .position(|byte| !byte.is_ascii_uppercase())
        .unwrap_or(endpoint.len());
    let method = &endpoint[..method_end];
    if !matches!(
        method,
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" | "HEAD"
    ) {
        return None;
    }
    let rest = &endpoint[method_end..];
    let path_start = rest.bytes().position(|byte| !is_space(byte))?;
    if path_start == 0 {
        return None;
    }
    let rest = &rest[path_start..];
    let path_end = rest.bytes().position(is_space).unwrap_or(rest.len());
    Some((method, &rest[..path_end]))
}

fn non_empty(text: Cow<'_, str>) -> Option<String> {
    if text.is_empty() {
        None
    } else {
        Some(text.into_owned())
    }
}

fn normalize(members: Members<'_, '_>, now_ms: i64) -> Result<UsageEvent, String> {
    let time = event_time(members, now_ms)?;

    let request_id = text_field(members, &["request_id", "requestId", "id"]);
    let requested_model = text_field(members, REQUESTED_MODEL_KEYS);
    let resolved_model = text_field(members, RESOLVED_MODEL_KEYS);
    let model = requested_model
        .clone()
        .or_else(|| resolved_model.clone())
        .unwrap_or_else(|| "-".to_string());

    // Method, path and endpoint fill each other in.
    let mut method = text_field(members, &["method", "http_method", "httpMethod"])
        .map(|method| method.to_uppercase());
    let mut path = text_field(members, &["path", "url_path", "urlPath", "route"]);
    let endpoint = match text_field(members, &["endpoint", "api", "request", "operation"]) {
        Some(endpoint) => {
            if let Some((endpoint_method, endpoint_path)) = split_endpoint(&endpoint) {
                method.get_or_insert_with(|| endpoint_method.to_string());
                path.get_or_insert_with(|| endpoint_path.to_string());
            }
            endpoint
        }
        None => match (&method, &path) {
            (Some(method), Some(path)) => format!("{method} {path}"),
            _ => "-".to_string(),
        },
    };

    let provider = text_field(members, &["provider", "type", "auth_type", "authType"]);
    let executor_type = text_field(members, &["executor_type", "executorType"]);
    let auth_type = text_field(members, &["auth_type", "authType"]);
    let auth_index = text_field(members, &["auth_index", "authIndex", "AuthIndex"]);

    let source_member = first_present(
        members,
        &["source", "api_key", "apiKey", "key", "account", "email"],
    );
    let raw_source = source_member
        .map(|(_, value)| text_of(value))
        .unwrap_or_default();
    // Without a `source`, the client API key stands in for it: always masked, whatever
    // its shape (a short key does not look like a secret to `mask_source`).
    let source = match source_member {
        Some(("api_key" | "apiKey" | "key", _)) => non_empty(redact::mask_secret(&raw_source)),
        _ => non_empty(redact::mask_source(&raw_source)),
    };
    let source_hash = (!raw_source.is_empty()).then(|| redact::sha256_hex(&raw_source));
    let api_key_hash = first_present(members, &["api_key", "apiKey", "key"])
        .map(|(_, value)| text_of(value))
        .filter(|key| !key.is_empty())
        .map(|key| redact::sha256_hex(&key));

    let account_snapshot = text_field(members, &["account_snapshot", "accountSnapshot"]);
    let auth_label_snapshot = text_field(members, &["auth_label_snapshot", "authLabelSnapshot"]);
    let auth_file_snapshot = text_field(members, &["auth_file_snapshot", "authFileSnapshot"]);
    let auth_provider_snapshot =
        text_field(members, &["auth_provider_snapshot", "authProviderSnapshot"]);
    let auth_project_id_snapshot = text_field(
        members,
        &[
            "auth_project_id_snapshot",
            "authProjectIdSnapshot",
            "project_id",
            "projectId",
        ],
    );
    let auth_snapshot_at_ms =
        match first_present(members, &["auth_snapshot_at_ms", "authSnapshotAtMs"]) {
            Some((key, value)) => Some(integer(value, "", key)?).filter(|ms| *ms > 0),
            None => None,
        };

    let client_text = |keys: &[&'static str], limit| {
        first_present(members, keys)
            .and_then(|(_, value)| redact::sanitize_client_text(&text_of(value), limit))
    };
    let client_ip = client_text(&["client_ip", "clientIp"], CLIENT_IP_LIMIT);
    let x_forwarded_for = client_text(&["x_forwarded_for", "xForwardedFor"], FORWARDED_FOR_LIMIT);
    let user_agent = client_text(&["user_agent", "userAgent"], USER_AGENT_LIMIT);

    let reasoning_effort = text_field(members, &["reasoning_effort", "reasoningEffort"]);
    let request_tier = text_field(
        members,
        &[
            "request_service_tier",
            "requestServiceTier",
            "service_tier",
            "serviceTier",
        ],
    );
    let response_tier = text_field(members, &["response_service_tier", "responseServiceTier"]);
    let codex_route = [
        &executor_type,
        &provider,
        &auth_provider_snapshot,
        &auth_type,
    ]
    .iter()
    .any(|text| {
        text.as_deref()
            .is_some_and(|text| text.to_lowercase().contains("codex"))
    });
    // Codex bills by the tier the client asked for; other upstreams report it.
    let service_tier = if codex_route {
        request_tier.clone().or_else(|| response_tier.clone())
    } else {
        response_tier.clone().or_else(|| request_tier.clone())
    };
    let request_service_tier = request_tier.or_else(|| service_tier.clone());

    let sources = TokenSources::new(members);
    let mut tokens = TokenCounts {
        input: sources.count(INPUT_KEYS)?,
        output: sources.count(OUTPUT_KEYS)?,
        reasoning: sources.count(REASONING_KEYS)?,
        cached: sources.count(CACHED_KEYS)?,
        cache: sources.count(CACHE_KEYS)?,
        cache_read: sources.count(CACHE_READ_KEYS)?,
        cache_creation: sources.count(CACHE_CREATION_KEYS)?,
        total: sources.count(TOTAL_KEYS)?,
    };
    // CPA's own accounting knows the provider family exactly: when its
    // breakdown is trustworthy and matches `input_tokens` one way or the
    // other, it decides the cache mode. The buckets always come from the
    // token counters, so an import of the same row re-derives equal values.
    let breakdown_mode = trusted_breakdown(members).and_then(|breakdown| {
        let input = tokens.input.max(0);
        if breakdown.cache_read + breakdown.cache_write == 0 {
            None
        } else if breakdown.input_total == input {
            Some(CacheInputMode::IncludedInInput)
        } else if breakdown.uncached == input {
            Some(CacheInputMode::SeparateFromInput)
        } else {
            None
        }
    });
    let cache_input_mode = sources
        .explicit_mode()
        .or(breakdown_mode)
        .unwrap_or_else(|| {
            infer_cache_mode(
                executor_type.as_deref().unwrap_or(""),
                &[
                    provider.as_deref().unwrap_or(""),
                    auth_provider_snapshot.as_deref().unwrap_or(""),
                ],
                &[
                    resolved_model.as_deref().unwrap_or(""),
                    requested_model.as_deref().unwrap_or(""),
                    &model,
                ],
                tokens.cache_read,
                tokens.cache_creation,
            )
        });
    let normalized = normalize_tokens(&tokens, cache_input_mode);
    let given_total = tokens.total;
    if given_total <= 0 {
        tokens.total = normalized
            .total_input
            .saturating_add(tokens.output.max(0))
            .saturating_add(tokens.reasoning.max(0));
    }

    let latency_ms = optional_integer(
        members,
        &[
            "latency_ms",
            "latencyMs",
            "duration_ms",
            "durationMs",
            "elapsed_ms",
            "elapsedMs",
        ],
    )?;
    let ttft_ms = optional_integer(
        members,
        &[
            "ttft_ms",
            "ttftMs",
            "time_to_first_token_ms",
            "timeToFirstTokenMs",
        ],
    )?;
    let failed = is_failed(members)?;
    let fail_status_code = fail_status_code(members)?;

    let headers_value = first_present(members, HEADER_KEYS).map(|(_, value)| value);
    let body = fail_body_text(members);
    // Deviation from Go: Go appends the response headers to the failure body
    // of every event, so successful rows get a non-empty `fail_summary`.
    // Headers now have their own columns; a success keeps no failure text.
    let fail_summary = if failed {
        let mut full = redact::truncate_with_marker(&body, FAIL_BODY_LIMIT).into_owned();
        if let Some(headers) = headers_value.and_then(headers_json) {
            if !full.is_empty() {
                full.push('\n');
            }
            full.push_str(&headers);
        }
        // Upstreams echo the key they refused: the request's own client API key and a
        // secret-looking source are removed wherever they appear, whatever their shape.
        let echoed = [
            first_present(members, &["api_key", "apiKey", "key"])
                .map(|(_, value)| text_of(value))
                .unwrap_or_default(),
            // (An e-mail is masked by the summary itself, keeping its domain.)
            match redact::mask_source(&raw_source) {
                Cow::Owned(_) if !raw_source.contains('@') => raw_source.clone(),
                _ => Cow::Borrowed(""),
            },
        ];
        redact::summarize(&redact::remove_literals(&full, &echoed))
    } else {
        None
    };

    // Headers were received at the first byte (or at the end when unknown).
    let received_after = match (ttft_ms, latency_ms) {
        (Some(ttft), _) if ttft > 0 => ttft,
        (_, Some(latency)) if latency > 0 => latency,
        _ => 0,
    };
    let facts = headers_value
        .map(|headers| headers::header_facts(headers, time.ms.saturating_add(received_after)))
        .unwrap_or_default();

    let event_hash = event_hash(
        request_id.as_deref().unwrap_or(""),
        &time.text,
        &endpoint,
        &model,
        auth_index.as_deref().unwrap_or(""),
        source_hash.as_deref().unwrap_or(""),
        &tokens,
        failed,
        latency_ms,
    );

    Ok(UsageEvent {
        event_hash,
        request_id,
        timestamp_ms: time.ms,
        timestamp: time.text,
        provider,
        executor_type,
        model,
        requested_model,
        resolved_model,
        endpoint: Some(endpoint),
        method,
        path,
        client_ip,
        x_forwarded_for,
        user_agent,
        auth_type,
        auth_index,
        source,
        source_hash,
        api_key_hash,
        account_snapshot,
        auth_label_snapshot,
        auth_file_snapshot,
        auth_provider_snapshot,
        auth_project_id_snapshot,
        auth_snapshot_at_ms,
        reasoning_effort,
        service_tier,
        request_service_tier,
        response_service_tier: response_tier,
        cache_input_mode: Some(cache_input_mode),
        tokens,
        normalized,
        latency_ms,
        ttft_ms,
        failed,
        fail_status_code,
        fail_summary,
        response_metadata_json: facts.metadata_json,
        header_quota_recover_at_ms: facts.recover_at_ms,
        header_quota_used_percent: facts.used_percent,
        header_quota_plan_type: facts.plan_type,
        header_error_kind: facts.error_kind,
        header_error_code: facts.error_code,
        header_trace_id: facts.trace_id,
        created_at_ms: now_ms,
    })
}

#[cfg(test)]
mod plausibility_tests {
    use super::*;

    fn payload(tokens: &str, latency: &str) -> String {
        format!(
            r#"{{"timestamp":"2026-08-22T14:00:11Z","model":"gpt-5","tokens":{tokens},"latency_ms":{latency}}}"#
        )
    }

    fn reason(item: &str) -> String {
        match decode(item.as_bytes(), 1) {
            Decoded::Dead(dead) => dead.reason,
            other => panic!("not dead: {other:?}"),
        }
    }

    #[test]
    fn absurd_numbers_are_dead_letters_naming_the_field_and_the_bound() {
        let max = i64::MAX;
        let cases = [
            (
                format!(r#"{{"input_tokens":{max}}}"#),
                "10",
                "tokens.input_tokens is 9223372036854775807, beyond 1000000000000",
            ),
            (
                r#"{"output_tokens":5000000000000000000}"#.to_string(),
                "10",
                "tokens.output_tokens is 5000000000000000000",
            ),
            (
                r#"{"input_tokens":-2000000000000}"#.to_string(),
                "10",
                "tokens.input_tokens is -2000000000000",
            ),
            (
                r#"{"input_tokens":5}"#.to_string(),
                "1000000000001",
                "latency_ms is 1000000000001, beyond 1000000000 ms",
            ),
        ];
        for (tokens, latency, expected) in cases {
            let text = reason(&payload(&tokens, latency));
            assert!(text.starts_with(expected), "{text}");
        }
        // At the bounds the event is stored.
        let item = payload(
            r#"{"input_tokens":1000000000000,"output_tokens":-3}"#,
            "1000000000",
        );
        assert!(matches!(decode(item.as_bytes(), 1), Decoded::Event(_)));
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    fn event(item: &str) -> UsageEvent {
        match decode(item.as_bytes(), 1) {
            Decoded::Event(event) => *event,
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn a_client_key_standing_in_for_the_source_is_masked_whatever_its_shape() {
        let short = event(
            r#"{"timestamp":"2026-08-22T14:00:11Z","model":"gpt-5","api_key":"team-key-7","tokens":{"input_tokens":1}}"#,
        );
        assert_eq!(short.source.as_deref(), Some("m:te..."));
        let tiny = event(
            r#"{"timestamp":"2026-08-22T14:00:11Z","model":"gpt-5","apiKey":"k-12","tokens":{"input_tokens":1}}"#,
        );
        assert_eq!(tiny.source.as_deref(), Some("m:****"));
        // A real source is masked only when it looks like a secret (an e-mail by rule).
        let named = event(
            r#"{"timestamp":"2026-08-22T14:00:11Z","model":"gpt-5","source":"my-project","api_key":"team-key-7","tokens":{"input_tokens":1}}"#,
        );
        assert_eq!(named.source.as_deref(), Some("my-project"));
    }

    #[test]
    fn a_failure_body_echoing_the_request_key_keeps_no_copy_of_it() {
        let failed = event(
            r#"{"timestamp":"2026-08-22T14:00:11Z","model":"gpt-5","api_key":"client-key-77a1","source":"0123456789abcdef0123456789abcdef","failed":true,
                "fail":{"status_code":401,"body":"Incorrect API key provided: client-key-77a1 (credential 0123456789abcdef0123456789abcdef)"},"tokens":{"input_tokens":1}}"#,
        );
        let summary = failed.fail_summary.expect("summary");
        assert_eq!(
            summary,
            "Incorrect API key provided: [redacted] (credential [redacted])"
        );
    }
}
